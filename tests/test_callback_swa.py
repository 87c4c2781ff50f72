"""StochasticWeightAveraging: the ``swa`` variant gets BN statistics that match its averaged parameters,
and the extra batch-norm epoch (which runs on the averaged weights) is never labelled ``raw``."""
from __future__ import annotations

import copy

import pytest
import torch
from helpers.models import make_tiny_net
from helpers.training import FAST, NEURONS, VariantLog, clone_state, fit, params_only
from lightning.pytorch.callbacks import StochasticWeightAveraging
from torch import nn

from lightning_ldam.weights.ema import refresh_batchnorm

pytestmark = pytest.mark.usefixtures("lightning_env")


class SWALog(VariantLog):
    """Also records the step/epoch, SWA's own averaged copy, and whether the global RNG moved."""

    def __init__(self, *args, swa, **kwargs):
        super().__init__(*args, **kwargs)
        self.swa = swa

    def variants(self, trainer, pl_module):
        rng = torch.get_rng_state()
        out = super().variants(trainer, pl_module)
        record = self.seen_variants[-1]
        record.update(step=trainer.global_step, epoch=trainer.current_epoch, rng_kept=torch.equal(
            rng, torch.get_rng_state()), swa_copy=copy.deepcopy(self.swa._average_model),
            reservoir=self._reservoir.images.clone())
        return out


@pytest.fixture
def swa_run(tmp_path, no_failed_rounds):
    swa = StochasticWeightAveraging(swa_lrs=0.01, swa_epoch_start=1)
    cb = SWALog(NEURONS, every_n_epochs=1, swa=swa, disc_weight=0.0, **FAST)
    trainer, module = fit(tmp_path, [cb, swa], max_epochs=3, max_steps=-1)
    return cb, trainer, module


def test_swa_variant_has_averaged_params_and_refreshed_bn_statistics(swa_run):
    cb, _, _ = swa_run
    during = [r for r in cb.seen_variants if r["epoch"] < 3]
    assert [r["step"] for r in during] == [4, 8, 12]
    assert [set(r["variants"]) for r in during] == [{"raw"}, {"raw", "swa"}, {"raw", "swa"}]
    for r in during[1:]:
        swa_state, stale = r["variants"]["swa"], clone_state(r["swa_copy"])
        for k, v in params_only(swa_state).items():
            assert torch.equal(v, stale[k]), k  # parameters: exactly SWA's average
        expected = copy.deepcopy(r["swa_copy"])
        refresh_batchnorm(expected, r["reservoir"])
        for k in ("features.1.running_mean", "features.1.running_var", "features.3.running_var"):
            assert torch.equal(swa_state[k], expected.state_dict()[k]), k  # recomputed on the reservoir
            assert not torch.equal(swa_state[k], stale[k]), k  # not the statistics of the copy's creation
        assert all(torch.equal(v, r["live"][k]) for k, v in r["variants"]["raw"].items())
        assert r["rng_kept"]


def test_swa_batchnorm_epoch_logs_the_final_swa_model_and_no_raw(swa_run, caplog):
    cb, trainer, module = swa_run
    last = cb.seen_variants[-1]
    assert last["epoch"] == 3 and set(last["variants"]) == {"swa"}  # SWA's extra epoch (max_epochs 3 -> 4)
    for k, v in last["variants"]["swa"].items():
        assert torch.equal(v, last["live"][k]), k
    for k, v in clone_state(module).items():  # what fit leaves in the module: the model that round showed
        assert torch.equal(v, last["variants"]["swa"][k]), k


def test_refresh_batchnorm_matches_update_bn_and_keeps_rng_modes_momenta():
    net = make_tiny_net()
    net.classifier[1].p = 0.0  # update_bn's Dropout would draw from the global RNG; ours must not matter
    net.eval()
    net.features[1].momentum = 0.3
    x = torch.rand(20, 1, 12, 12)
    ref = copy.deepcopy(net)
    torch.optim.swa_utils.update_bn([x[:8], x[8:16], x[16:]], ref)
    rng = torch.get_rng_state()
    with torch.inference_mode():
        refresh_batchnorm(net, x, batch_size=8)
    assert torch.equal(torch.get_rng_state(), rng)
    assert not net.training and net.features[1].momentum == 0.3
    for k, v in ref.state_dict().items():
        assert torch.allclose(v.float(), net.state_dict()[k].float(), atol=1e-6), k


def test_refresh_batchnorm_without_batchnorm_is_a_no_op():
    net = nn.Sequential(nn.Flatten(), nn.Linear(144, 3))
    before = clone_state(net)
    refresh_batchnorm(net, torch.rand(4, 1, 12, 12))
    assert all(torch.equal(v, before[k]) for k, v in net.state_dict().items())


def test_the_fit_end_round_after_swas_batchnorm_epoch_logs_no_raw(tmp_path, no_failed_rounds):
    """SWA copies its average into the module when its batch-norm epoch starts, and the module keeps it: the fit-end
    round (after that epoch, when the trainer already counts it) must log it as 'swa', never as 'raw'."""
    swa = StochasticWeightAveraging(swa_lrs=0.01, swa_epoch_start=1)
    cb = SWALog(NEURONS, every_n_epochs=None, every_n_train_steps=5, swa=swa, disc_weight=0.0, **FAST)
    trainer, module = fit(tmp_path, [cb, swa], max_epochs=3, max_steps=-1)
    assert [r["step"] for r in cb.seen_variants] == [5, 10, 13]  # the batch-norm epoch counts one step
    assert set(cb.seen_variants[1]["variants"]) == {"raw", "swa"}
    last = cb.seen_variants[-1]
    assert set(last["variants"]) == {"swa"}  # the fit-end round, at step 13
    for k, v in clone_state(module).items():
        assert torch.equal(v, last["variants"]["swa"][k]), k


def test_each_average_reports_what_it_holds_and_one_update_is_no_average(tmp_path, no_failed_rounds, caplog):
    from helpers.training import events
    from lightning.pytorch.loggers import TensorBoardLogger

    logger = TensorBoardLogger(str(tmp_path), name="tb")
    cb = VariantLog(NEURONS, every_n_train_steps=1, every_n_epochs=None, disc_weight=0.0,
                    **{**FAST, "ema_every_n_steps": 2})
    with caplog.at_level("INFO"):
        fit(tmp_path, [cb], max_steps=6, logger=logger)
    # the own EMA updates at steps 2, 4, 6: one update at steps 2-3 (no average: raw only), two at 4-5, three at 6
    assert [sorted(r["variants"]) for r in cb.seen_variants] == [["raw"]] * 3 + [["ema", "raw"]] * 3
    assert [(e.step, e.value) for e in events(logger.log_dir).Scalars("ldam/ema/averaged")] == [
        (4, 2.0), (5, 2.0), (6, 3.0)]
    assert sum("the EMA holds" in r.getMessage() for r in caplog.records) == 1
