"""Lightning's averaging callbacks as lightning_ldam finds and samples them: every kind, on a real fit.

The matrix runs on the installed Lightning and, in ``make test``, on the lowest version pyproject.toml allows
(``make test-lowest-lightning``), where the averagers that version lacks are skipped with the version that brought
them. :mod:`lightning_ldam.weights.lightning_averagers` reads the averagers' private attributes: these tests are
what would notice a Lightning release that moves them.
"""
from __future__ import annotations

import lightning.pytorch as pl
import pytest
import torch
from helpers.training import FAST, NEURONS, clone_state, fit, params_only
from lightning.pytorch import callbacks as lightning_callbacks
from torch.optim.swa_utils import get_ema_avg_fn

from lightning_ldam.callback import LDAMCallback
from lightning_ldam.weights.lightning_averagers import averager_kind, is_averager

pytestmark = pytest.mark.usefixtures("lightning_env")

#: ``WeightAveraging`` and ``EMAWeightAveraging`` came with Lightning 2.6.
HAS_WEIGHT_AVERAGING = hasattr(lightning_callbacks, "WeightAveraging")
needs_weight_averaging = pytest.mark.skipif(
    not HAS_WEIGHT_AVERAGING, reason=f"WeightAveraging came with lightning 2.6; this is {pl.__version__}")


def _halfway(averaged: torch.Tensor, current: torch.Tensor, num_averaged) -> torch.Tensor:
    """A custom average: halfway to the current weights."""
    return averaged + 0.5 * (current - averaged)


#: (the averager, the variant name it is sampled as, whether its parameters are an average of every step)
MATRIX = [
    pytest.param(lambda: lightning_callbacks.EMAWeightAveraging(decay=0.5), "ema",
                 id="EMAWeightAveraging", marks=needs_weight_averaging),
    pytest.param(lambda: lightning_callbacks.WeightAveraging(avg_fn=get_ema_avg_fn(0.5)), "ema",
                 id="WeightAveraging-get_ema_avg_fn", marks=needs_weight_averaging),
    pytest.param(lambda: lightning_callbacks.WeightAveraging(avg_fn=_halfway), "avg",
                 id="WeightAveraging-custom-avg_fn", marks=needs_weight_averaging),
    pytest.param(lambda: lightning_callbacks.WeightAveraging(), "swa",
                 id="WeightAveraging-equal-weights", marks=needs_weight_averaging),
    pytest.param(lambda: lightning_callbacks.StochasticWeightAveraging(swa_lrs=0.01, swa_epoch_start=1), "swa",
                 id="StochasticWeightAveraging"),
]


class AverageLog(LDAMCallback):
    """Every round's sampled variants, next to the live weights and the averager's own average."""

    def __init__(self, *args, averager, **kwargs):
        super().__init__(*args, **kwargs)
        self.averager, self.seen = averager, []

    def variants(self, trainer, pl_module):
        out = super().variants(trainer, pl_module)
        average = self.averager._average_model  # an AveragedModel (WeightAveraging) or a copy of the module (SWA)
        self.seen.append({"variants": {k: clone_state(v) for k, v in out.items()}, "live": clone_state(pl_module),
                          "average": None if average is None else clone_state(getattr(average, "module", average))})
        return out


@pytest.mark.parametrize("make, kind", MATRIX)
def test_each_averager_is_named_for_what_it_averages(make, kind):
    averager = make()
    assert is_averager(averager) and averager_kind(averager) == kind


@pytest.mark.parametrize("make, kind", MATRIX)
def test_each_averager_is_sampled_from_its_own_average(tmp_path, no_failed_rounds, make, kind):
    """A round that samples the averaged variant beside raw samples the averager's own average: its parameters
    exactly, not the raw weights; no round samples anything but raw and that variant."""
    averager = make()
    cb = AverageLog(NEURONS, every_n_epochs=1, averager=averager, disc_weight=0.0, **FAST)
    fit(tmp_path, [cb, averager], max_epochs=3, max_steps=-1)
    assert cb.stats.ema_updates is None and cb._averagers == [averager]
    averaged = [r for r in cb.seen if kind in r["variants"] and "raw" in r["variants"]]
    assert averaged, [set(r["variants"]) for r in cb.seen]
    for r in averaged:
        sampled, expected = params_only(r["variants"][kind]), params_only(r["average"])
        assert sampled.keys() == expected.keys()
        assert all(torch.equal(sampled[k], expected[k]) for k in sampled), kind
        assert not torch.equal(sampled["features.0.weight"], r["live"]["features.0.weight"])  # not the raw weights
    assert all(set(r["variants"]) <= {"raw", kind} for r in cb.seen)


def test_swas_batchnorm_epoch_is_sampled_as_swa_alone(tmp_path, no_failed_rounds):
    """SWA's extra epoch runs on its average (BatchNorm statistics recomputed by training): the module holds the
    average then, so that round logs it as ``swa`` and has no ``raw``."""
    averager = lightning_callbacks.StochasticWeightAveraging(swa_lrs=0.01, swa_epoch_start=1)
    cb = AverageLog(NEURONS, every_n_epochs=1, averager=averager, disc_weight=0.0, **FAST)
    trainer, module = fit(tmp_path, [cb, averager], max_epochs=3, max_steps=-1)
    last = cb.seen[-1]
    assert set(last["variants"]) == {"swa"} and trainer.current_epoch == 4
    assert all(torch.equal(v, last["live"][k]) for k, v in params_only(last["variants"]["swa"]).items())
