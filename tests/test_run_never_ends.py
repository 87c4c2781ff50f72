"""Nothing the callback does can end or silently degrade the run it watches (issue #19), each fault for real.

Per-batch work (the reservoir, the own EMA, the first-batch trial) sits inside a failure boundary; a TensorBoard
write that fails leaves Lightning's writer working; the first-batch trial fails the run only for an argument the
user set, and meets each limit of a valid model with a fallback and one warning; the state key is the same in every
process; ``torch.compile`` sees exactly the graphs it sees without the callback.
"""
from __future__ import annotations

import errno
import os
import subprocess
import sys
import warnings
from pathlib import Path
from typing import List

import lightning.pytorch as pl
import pytest
import torch
import torch.nn.functional as F
from helpers.limits import MODEL_LIMITS, Brightness, dark_images
from helpers.models import SIZE
from helpers.training import FAST, NEURONS, TinyModule, assert_same, clone_state, events, fit
from lightning.pytorch.loggers import TensorBoardLogger
from torch import nn
from torch.utils.data import DataLoader

from lightning_ldam.callback import LDAMCallback

pytestmark = pytest.mark.usefixtures("lightning_env")
EVERY_2 = dict(every_n_train_steps=2, every_n_epochs=None)


def _fit_both(tmp_path, cb, **kwargs):
    """The run with ``cb`` (warnings recorded) and without it; returns ``(trainer, weights, reference, warnings)``."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer, module = fit(tmp_path / "with", [cb], **kwargs)
    kwargs.pop("logger", None)  # the reference writes nowhere: the logger's events are the watched run's alone
    reference = clone_state(fit(tmp_path / "without", [], **kwargs)[1])
    return trainer, clone_state(module), reference, [str(w.message) for w in caught]


def _said(messages: List[str], phrase: str) -> List[str]:
    return [m for m in messages if phrase in m]


# ---- per-batch work --------------------------------------------------------------------------------------------
class PooledNet(TinyModule):
    """conv + adaptive pooling: trains on any image size (here 16 px, then 20 px from batch 4 on)."""

    def __init__(self):
        super().__init__(dropout=0.0)
        self.features = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(3))
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(36, 5))


def _growing_images():
    g = torch.Generator().manual_seed(0)
    batches = [(torch.rand(4, 1, 16 if i < 4 else 20, 16 if i < 4 else 20, generator=g), torch.arange(4) + 4 * i)
               for i in range(8)]
    return DataLoader(batches, batch_size=None)


def test_a_change_of_image_size_skips_those_batches_and_keeps_the_first_shape(tmp_path):
    cb = LDAMCallback(["features.0:0-1", "classifier.1:0"], **EVERY_2, **FAST)
    trainer, weights, reference, said = _fit_both(tmp_path, cb, module=PooledNet, train=_growing_images(),
                                                  max_steps=8)
    assert trainer.global_step == 8
    assert_same(weights, reference)
    skipped = _said(said, "not kept for LDAM")
    assert len(skipped) == 1 and "(1, 20, 20)" in skipped[0] and "(1, 16, 16)" in skipped[0]
    assert cb.stats.skipped_batches == 4 and cb._reservoir.input_shape() == (1, 16, 16)
    # steps 2, 4, 6 and 8 (the fit end adds none), all at 16 px
    assert cb.stats.failed_rounds == 0 and cb.stats.rounds == 4


class DictBatches(TinyModule):
    def training_step(self, batch, batch_idx):
        x = batch["image"] if "image" in batch else batch["img"]
        return F.cross_entropy(self(x), batch["label"] % 5)


def _renamed_key_batches(renamed_at: int = 5):
    g = torch.Generator().manual_seed(0)
    return DataLoader([{"image" if i != renamed_at else "img": torch.rand(4, 1, SIZE, SIZE, generator=g),
                        "label": torch.arange(4)} for i in range(8)], batch_size=None)


def test_a_late_batch_the_input_key_cannot_read_is_skipped_and_counted(tmp_path):
    logger = TensorBoardLogger(str(tmp_path), name="tb")
    cb = LDAMCallback(NEURONS, input_key="image", **EVERY_2, **FAST)
    trainer, weights, reference, said = _fit_both(tmp_path, cb, module=DictBatches, train=_renamed_key_batches(),
                                                  max_steps=8, logger=logger)
    assert trainer.global_step == 8
    assert_same(weights, reference)
    skipped = _said(said, "not kept for LDAM")
    assert len(skipped) == 1 and "input_key='image'" in skipped[0]
    assert cb.stats.skipped_batches == 1 and cb.stats.failed_rounds == 0
    counts = [e.value for e in events(logger.log_dir).Scalars("ldam/skipped_batches")]
    assert counts == [0.0, 0.0, 1.0, 1.0]  # rounds at steps 2, 4, 6, 8; batch 5 is step 6's


def test_an_ema_update_that_fails_warns_once_and_training_goes_on(tmp_path, monkeypatch):
    import lightning_ldam.weights.ema as averaging

    def broken(self, model, step):
        raise RuntimeError("EMA boom")

    monkeypatch.setattr(averaging.EMA, "update", broken)
    cb = LDAMCallback(NEURONS, **EVERY_2, **FAST)
    trainer, weights, reference, said = _fit_both(tmp_path, cb, max_steps=4)
    assert trainer.global_step == 4
    assert_same(weights, reference)
    assert len(_said(said, "EMA could not be updated")) == 1 and cb.stats.failed_rounds == 0


# ---- writes that fail --------------------------------------------------------------------------------------------
class LoggingModule(TinyModule):
    """Logs its loss every step: Lightning's own writes to the writer the callback shares."""

    def training_step(self, batch, batch_idx):
        loss = super().training_step(batch, batch_idx)
        self.log("train_loss", loss)
        return loss


def _event_scalars(log_dir, tag):
    acc = events(log_dir)
    return [e.step for e in acc.Scalars(tag)] if tag in acc.Tags()["scalars"] else []


def test_an_image_write_that_fails_in_the_writer_thread_leaves_lightnings_writes_working(tmp_path, monkeypatch):
    """The asynchronous event writer fails on the images (as on a full disk) and keeps the error for the writer's next
    call, which would be Lightning's finalize: the writer is reopened, so the fit ends normally, Lightning's later
    scalars land, and the round's own scalars (ldam/failed_rounds among them) were written before its images."""
    from tensorboard.summary.writer import record_writer

    real_write, failures = record_writer.RecordWriter.write, []

    def write(self, data):
        if len(data) > 2000 and not failures:  # the first image record: scalars are a few dozen bytes
            failures.append(len(data))
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(self, data)

    monkeypatch.setattr(record_writer.RecordWriter, "write", write)
    logger = TensorBoardLogger(str(tmp_path), name="tb")
    cb = LDAMCallback(NEURONS, **EVERY_2, **FAST)
    trainer, weights, reference, said = _fit_both(tmp_path, cb, module=LoggingModule, max_steps=6, logger=logger,
                                                  log_every_n_steps=1)
    assert trainer.global_step == 6 and failures
    assert_same(weights, reference)
    assert len(_said(said, "No space left on device")) == 1 and cb.stats.failed_rounds == 1
    assert _event_scalars(logger.log_dir, "train_loss") == [0, 1, 2, 3, 4, 5]  # Lightning's, before and after
    assert _event_scalars(logger.log_dir, "ldam/raw/features.0/activation") == [2, 4, 6]  # step 2's scalars too
    assert [e.step for e in events(logger.log_dir).Images("ldam/raw/features.0")] == [4, 6]
    failed = events(logger.log_dir).Scalars("ldam/failed_rounds")
    assert [(e.step, e.value) for e in failed][-1] == (6, 1.0)


@pytest.fixture
def full_disk(tmp_path):
    """A 200-KiB tmpfs, mounted for real (root only; skipped where it cannot be mounted)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=200k", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def _fit_on(disk, tmp_path, module, **kwargs):
    logger = TensorBoardLogger(str(disk), name="tb")
    cb = LDAMCallback(NEURONS, every_n_train_steps=1, every_n_epochs=None, **FAST)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer, watched = fit(disk, [cb], module=module, max_steps=16, logger=logger, **kwargs)
    reference = fit(tmp_path / "ref", [], module=module, max_steps=16, **kwargs)[1]
    assert trainer.global_step == 16  # Lightning's own writes, its finalize among them, all went through
    assert_same(clone_state(watched), clone_state(reference))
    said = [str(w.message) for w in caught if "sampling failed" in str(w.message)]
    assert len(said) == 1 and ("No space left on device" in said[0] or "MiB free" in said[0]), said
    return cb, logger


def test_on_a_really_full_disk_the_callback_leaves_the_last_bytes_to_lightning(full_disk, tmp_path):
    """Lightning logs every step on a 200-KiB disk: the callback writes nothing that would leave it under its reserve,
    so the run's own logs never meet a disk the callback filled."""
    cb, logger = _fit_on(full_disk, tmp_path, LoggingModule, log_every_n_steps=1)
    assert cb.stats.failed_rounds == 16 and cb.stats.rounds == 0  # steps 1-16 (the fit end adds none)
    assert _event_scalars(logger.log_dir, "train_loss") == list(range(16))


def test_a_write_that_fills_the_disk_leaves_lightnings_writer_working(full_disk, tmp_path, monkeypatch):
    """Without the reserve the rounds fill the 200-KiB disk for real: the asynchronous event writer keeps the ENOSPC
    for its next call, Lightning's finalize. The writer is reopened and the round's partial records cut off, so the
    fit ends normally, and the events of the rounds that landed read back."""
    import lightning_ldam.report.writers as outputs

    monkeypatch.setattr(outputs, "check_room", lambda *args: None)
    cb, logger = _fit_on(full_disk, tmp_path, TinyModule)
    assert cb.stats.failed_rounds >= 1 and cb.stats.rounds >= 1
    steps = _event_scalars(logger.log_dir, "ldam/raw/features.0/activation")
    assert steps and steps == sorted(steps) and len(steps) >= cb.stats.rounds


def test_the_event_file_opened_after_a_failure_sorts_after_the_one_it_replaces(tmp_path, monkeypatch):
    """TensorBoard reads a run's event files in name order (creation second, then the process's writer counter as a
    plain number). With the counter at 9, a replacement opened in the same second would be writer 10 and sort first:
    the steps would read back out of order. Two failures in a row, all three files read back in step order."""
    from tensorboard.summary.writer import event_file_writer
    from torch.utils.tensorboard import SummaryWriter

    from lightning_ldam.report.tensorboard_writer import WriteFailed, write_round_to

    monkeypatch.setattr(event_file_writer, "_global_uid", event_file_writer.AtomicCounter(9))
    writer = SummaryWriter(str(tmp_path))
    writer.add_scalar("loss", 0.0, global_step=1)
    for step in (2, 3):
        with pytest.raises(WriteFailed):  # a 1-D "image" cannot be encoded: the round's write fails, the writer reopens
            write_round_to(writer, {"img": torch.zeros(4)}, {"loss": float(step)}, step)
    writer.add_scalar("loss", 4.0, global_step=4)
    writer.close()
    names = sorted(p.name for p in tmp_path.glob("events.out.tfevents.*"))
    assert [n.rsplit(".", 1)[-1] for n in names] == ["9", "10", "11"]
    assert _event_scalars(tmp_path, "loss") == [1, 2, 3, 4]


@pytest.mark.parametrize("case, module, data, overrides, phrase", MODEL_LIMITS)
def test_a_limit_of_the_model_is_a_fallback_with_one_warning_never_an_error(tmp_path, case, module, data, overrides,
                                                                             phrase):
    kwargs = {"neurons": NEURONS, **EVERY_2, **FAST, **overrides}
    cb = LDAMCallback(**kwargs)
    trainer, weights, reference, said = _fit_both(tmp_path, cb, module=module, max_steps=4,
                                                  train=data() if data else None)
    assert trainer.global_step == 4
    assert_same(weights, reference)
    ours = [m for m in said if m.startswith("LDAMCallback") and not any(
        note in m for note in ("newly found unhealthy", "writing PNGs"))]  # no logger here: PNGs, as designed
    if phrase is None:  # handled silently: a two-row probe, a padded batch of one
        assert not ours and cb.stats.failed_rounds == 0 and cb.stats.rounds == 2
    elif case == "model-refuses-the-probe-batch":  # nothing to fall back on: rounds are tried, and fail
        assert len(_said(ours, phrase)) == 1 and cb.stats.rounds == 0 and cb.stats.failed_rounds == 2
    else:
        assert len(_said(ours, phrase)) == 1 and len(ours) == 1, ours
        assert cb.stats.failed_rounds == 0 and cb.stats.rounds == 2


def test_the_data_start_fallback_is_kept_in_the_state(tmp_path):
    cb = LDAMCallback("head:0", **EVERY_2, **FAST)
    fit(tmp_path, [cb], module=Brightness, train=dark_images(), max_steps=2)
    assert cb.state_dict()["fallbacks"] == {"init": "data"}
    fresh = LDAMCallback("head:0", **EVERY_2, **FAST)
    fresh.load_state_dict(cb.state_dict())
    assert fresh._run.fallbacks == {"init": "data"}


# ---- state keys ---------------------------------------------------------------------------------------------------
_KEY_SCRIPT = ("from lightning_ldam.callback import LDAMCallback;"
               "print(LDAMCallback({'features.0:0-1', 'classifier.2:0', 'classifier.2:3', 'features.0:3'}).state_key)")


def test_a_set_of_neurons_gives_the_same_state_key_in_every_process():
    keys = set()
    for hash_seed in ("1", "2", "3"):
        env = {**os.environ, "PYTHONHASHSEED": hash_seed}
        done = subprocess.run([sys.executable, "-c", _KEY_SCRIPT], capture_output=True, text=True, env=env,
                              timeout=120, cwd=str(Path(__file__).resolve().parents[1]))
        assert done.returncode == 0, done.stderr
        keys.add(done.stdout.strip())
    assert len(keys) == 1
    listed = LDAMCallback(["classifier.2:0,3", "features.0:0,1,3"]).state_key
    assert keys == {listed}  # the same neurons as a list, in another order: the same key


def test_resuming_from_a_checkpoint_with_ldam_state_under_another_key_warns(tmp_path):
    first = LDAMCallback(NEURONS, **EVERY_2, **FAST)
    trainer, _ = fit(tmp_path / "a", [first], max_steps=2)
    ckpt = tmp_path / "a.ckpt"
    trainer.save_checkpoint(str(ckpt))
    for cb, expected in ((LDAMCallback(NEURONS, **{**EVERY_2, **FAST, "seed": 1}), 1),
                         (LDAMCallback(NEURONS, **EVERY_2, **FAST), 0)):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            fit(tmp_path / "b", [cb], max_steps=4, ckpt_path=str(ckpt))
        said = [str(w.message) for w in caught if "starts fresh" in str(w.message)]
        assert len(said) == expected, said
        assert cb.stats.rounds == (1 if expected else 2)  # step 4's round, after the first's count of 1 when restored
        if expected:
            assert first.state_key in said[0] and cb.state_key in said[0]


# ---- torch.compile ----------------------------------------------------------------------------------------------
def _recording_backend(graphs: list):
    def backend(gm, example_inputs):
        graphs.append([tuple(t.shape) if isinstance(t, torch.Tensor) else str(t) for t in example_inputs])
        return gm.forward
    return backend


class CompiledFeatures(TinyModule):
    backend = None

    def __init__(self):
        super().__init__(dropout=0.0)
        self.features = torch.compile(self.features, backend=self.backend)


@pytest.mark.parametrize("how", ["submodule", "lightning"])
def test_a_compiled_model_compiles_the_same_graphs_and_trains_bitwise_the_same(tmp_path, monkeypatch, how):
    """The snapshots run eagerly: compiled code is shared with the live model, so a compiled copy run on the
    sampler's batches would make training recompile with dynamic shapes (and Lightning's compiled forward is bound to
    the live module)."""
    runs = []
    for callbacks in ([], [LDAMCallback(NEURONS, **EVERY_2, **FAST)]):
        torch._dynamo.reset()
        graphs: list = []
        backend = _recording_backend(graphs)
        if how == "submodule":
            monkeypatch.setattr(CompiledFeatures, "backend", staticmethod(backend))
            trainer, module = fit(tmp_path / str(len(runs)), callbacks, module=CompiledFeatures, max_steps=4)
        else:
            pl.seed_everything(0, verbose=False)
            module = TinyModule(dropout=0.0)
            from helpers.training import loader, make_trainer
            trainer = make_trainer(tmp_path / str(len(runs)), callbacks)
            trainer.fit(torch.compile(module, backend=backend), loader())
        assert trainer.global_step == 4
        runs.append((clone_state(module), graphs))
    torch._dynamo.reset()
    (plain, plain_graphs), (watched, watched_graphs) = runs
    assert plain_graphs and watched_graphs == plain_graphs
    assert_same(watched, plain)
