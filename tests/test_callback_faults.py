"""Faults during training never end the run: each is injected for real (issue #11's list).

A logger whose ``log_image`` raises, a full disk (``OSError(ENOSPC)`` from the TensorBoard writer), a PNG
directory that cannot be created, a tabular (non-image) model, and NaN pixels in the training data. Each run
must finish its steps with the same weights as a run without the callback; the failure is one warning naming
the cause (once per cause) and a count in ``ldam/failed_rounds``; the next round tries again.
"""
from __future__ import annotations

import errno
import warnings
from typing import Dict, List

import pytest
import torch
import torch.nn.functional as F
from helpers.faults import Tabular, tabular_loader
from helpers.models import SIZE
from helpers.training import FAST, NEURONS, TinyModule, assert_same, clone_state, events, fit
from lightning.pytorch.loggers import Logger, TensorBoardLogger
from torch.utils.data import DataLoader, TensorDataset

from lightning_ldam.callback import LDAMCallback

pytestmark = pytest.mark.usefixtures("lightning_env")


class FlakyImageLogger(Logger):
    """Takes scalars; its ``log_image`` raises for the first ``failures`` calls."""

    def __init__(self, failures: int):
        super().__init__()
        self.failures = failures
        self.images: List[int] = []
        self.metrics: List[Dict[str, float]] = []

    @property
    def name(self):
        return "flaky"

    @property
    def version(self):
        return 0

    def log_hyperparams(self, params, *args, **kwargs):
        pass

    def log_metrics(self, metrics, step=None):
        self.metrics.append(dict(metrics))

    def log_image(self, key, images, step=None, **kwargs):
        if self.failures > 0:
            self.failures -= 1
            raise RuntimeError("log_image boom: the image service is down")
        self.images.append(step)


def _run(tmp_path, cb, **kwargs):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer, module = fit(tmp_path, [cb], max_steps=4, **kwargs)
    failures = [str(w.message) for w in caught if "sampling failed" in str(w.message)]
    return trainer, module, failures


def _reference(tmp_path, **kwargs):
    return clone_state(fit(tmp_path / "ref", [], max_steps=4, **kwargs)[1])


def test_a_logger_whose_log_image_raises_costs_one_round_not_the_run(tmp_path):
    logger = FlakyImageLogger(failures=1)
    cb = LDAMCallback(NEURONS, every_n_train_steps=2, every_n_epochs=None, **FAST)
    trainer, module, failures = _run(tmp_path, cb, logger=logger)
    assert trainer.global_step == 4
    assert_same(clone_state(module), _reference(tmp_path))
    assert len(failures) == 1 and "RuntimeError: log_image boom" in failures[0] and "step 2" in failures[0]
    assert cb.stats.failed_rounds == 1 and cb.stats.rounds == 1  # step 2 failed, step 4 went through
    assert logger.images and set(logger.images) == {4}
    assert [m["ldam/failed_rounds"] for m in logger.metrics if "ldam/failed_rounds" in m][-1] == 1.0


def test_a_failed_image_write_keeps_the_rounds_scalars_and_the_failure_count_reaches_the_logger(tmp_path):
    logger = FlakyImageLogger(failures=1)
    cb = LDAMCallback(NEURONS, every_n_train_steps=2, every_n_epochs=None, **FAST)
    _run(tmp_path, cb, logger=logger)
    rounds = [m for m in logger.metrics if "ldam/raw/features.0/activation" in m]
    assert len(rounds) == 2  # step 2's scalars went out before its images failed, then step 4's
    counts = [m["ldam/failed_rounds"] for m in logger.metrics]
    assert counts == [0.0, 1.0, 1.0]  # step 2's round, the count written after its failure, step 4's round


def test_one_chain_logs_no_diversity_rather_than_zero(tmp_path):
    logger = TensorBoardLogger(str(tmp_path), name="tb")
    cb = LDAMCallback(NEURONS, every_n_train_steps=2, every_n_epochs=None, **{**FAST, "chains": 1})
    trainer, _, failures = _run(tmp_path, cb, logger=logger)
    assert not failures and cb.stats.rounds == 2
    tags = set(events(logger.log_dir).Tags()["scalars"])
    assert "ldam/raw/features.0/activation" in tags and not any(t.endswith("/diversity") for t in tags)


def test_a_full_disk_warns_once_and_training_finishes(tmp_path, monkeypatch):
    logger = TensorBoardLogger(str(tmp_path), name="tb")
    cb = LDAMCallback(NEURONS, every_n_train_steps=1, every_n_epochs=None, **FAST)

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "events"))

    monkeypatch.setattr(type(logger.experiment), "add_image", full)
    trainer, module, failures = _run(tmp_path, cb, logger=logger)
    assert trainer.global_step == 4
    assert_same(clone_state(module), _reference(tmp_path))
    assert cb.stats.failed_rounds == 4 and cb.stats.rounds == 0
    assert len(failures) == 1 and "No space left on device" in failures[0]  # one cause: one warning


class UnwritablePNGs(LDAMCallback):
    """Points the PNG fallback (no logger) at a directory under a regular file: it cannot be created."""

    def setup(self, trainer, pl_module, stage):
        super().setup(trainer, pl_module, stage)
        blocker = self.blocker
        blocker.write_text("a file, not a directory")
        self._png_dir = str(blocker / "ldam")


def test_a_png_directory_that_cannot_be_created_costs_the_rounds_not_the_run(tmp_path):
    cb = UnwritablePNGs(NEURONS, every_n_train_steps=2, every_n_epochs=None, **FAST)
    cb.blocker = tmp_path / "blocker"
    trainer, module, failures = _run(tmp_path, cb)
    assert trainer.global_step == 4 and cb.stats.failed_rounds == 2
    assert len(failures) == 1 and ("NotADirectoryError" in failures[0] or "FileExistsError" in failures[0])
    assert_same(clone_state(module), _reference(tmp_path))


def test_a_tabular_model_trains_to_the_end_with_the_callback(tmp_path):
    cb = LDAMCallback("net.2:0-1", every_n_train_steps=2, every_n_epochs=None, disc_weight=0.0, chains=2, steps=3,
                      reservoir_size=16, max_overhead=None)
    logger = TensorBoardLogger(str(tmp_path), name="tb")
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        trainer, module = fit(tmp_path, [cb], module=Tabular, train=tabular_loader(), max_steps=4, logger=logger)
    assert trainer.global_step == 4
    ref = fit(tmp_path / "ref", [], module=Tabular, train=tabular_loader(), max_steps=4)[1]
    assert_same(clone_state(module), clone_state(ref))
    # 10 features are drawn as a 1 x 10 strip per chain: both rounds log their images
    assert cb.stats.rounds == 2 and cb.stats.failed_rounds == 0
    images = events(logger.log_dir).Images("ldam/raw/net.2")
    assert [e.step for e in images] == [2, 4] and images[0].height == 2 * (31 + 2) + 2


def _nan_loader(value_rows=(1, 6)):
    g = torch.Generator().manual_seed(123)
    x = torch.rand(16, 1, SIZE, SIZE, generator=g)
    for i in value_rows:
        x[i, 0, 3, 4] = float("nan")
    x[9, 0, 0, 0] = float("inf")
    return DataLoader(TensorDataset(x, torch.arange(16)), batch_size=4, shuffle=False)


class NaNSafe(TinyModule):
    """The tiny conv net, its loss over finite rows only (the user's run copes with the bad pixels; LDAM must too)."""

    def training_step(self, batch, batch_idx):
        x, idx = batch
        ok = torch.isfinite(x).flatten(1).all(1)
        return F.cross_entropy(self(x[ok]), idx[ok] % 5)


@pytest.mark.parametrize("value_range", [None, (0.0, 1.0)])
def test_nan_pixels_in_the_data_never_reach_the_reservoir_or_the_discriminators(tmp_path, value_range):
    logger = TensorBoardLogger(str(tmp_path), name="tb")
    cb = LDAMCallback(NEURONS, every_n_train_steps=2, every_n_epochs=None, value_range=value_range,
                      **{**FAST, "sampler_kwargs": {"disc_warmup": 2}})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer, _ = fit(tmp_path, [cb], module=NaNSafe, train=_nan_loader(), max_steps=4, logger=logger)
    assert trainer.global_step == 4 and cb.stats.failed_rounds == 0 and cb.stats.rounds == 2
    assert torch.isfinite(cb._reservoir.images).all() and cb.stats.nonfinite_inputs == 3
    nan_warnings = [str(w.message) for w in caught if "with NaN/Inf are not kept" in str(w.message)]
    assert len(nan_warnings) == 1
    for disc in cb._discs.live.values():
        assert all(torch.isfinite(p).all() for p in disc.parameters())
    acc = events(logger.log_dir)
    assert [e.value for e in acc.Scalars("ldam/nonfinite_inputs")] == [2.0, 3.0]  # rows 1, 6 by step 2; 9 by 4
    realism = acc.Scalars("ldam/raw/features.0/realism")
    assert realism and all(torch.isfinite(torch.tensor(e.value)) for e in realism)
