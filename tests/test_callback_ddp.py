"""LDAMCallback under DDP on CPU (2 spawned processes, gloo): one writer, every rank samples its shard.

The only DDP test of the suite (two spawn runs, about 15 s on 2 cores). Assertions that need the workers'
state run inside the workers' hooks: spawn returns only rank 0's weights to the test process.
"""
from __future__ import annotations

import glob
import os
import pickle
from datetime import timedelta

import lightning.pytorch as pl
import pytest
import torch
from helpers.training import (
    COMPARE_GAP,
    COMPARE_GROUP,
    COMPARE_HEADER,
    FAST,
    NEURONS,
    PAD,
    TILE,
    TinyModule,
    assert_same,
    clone_state,
    events,
    ldam_tags,
    loader,
)
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.strategies import DDPStrategy

from lightning_ldam.callback import LDAMCallback

pytestmark = pytest.mark.slow  # a benchmark's or a multi-process test: out of the fast subset

ROUND_STEPS = [2, 4]  # 16 samples, 2 ranks x 2 batches of 4 per epoch: steps 2 and 4 end epochs 0 and 1


@pytest.fixture(autouse=True)
def ddp_env():
    """Restore the environment (MASTER_PORT, PL_GLOBAL_SEED, ...) before the hygiene fixture checks it."""
    env = dict(os.environ)
    yield
    for key in set(os.environ) - set(env):
        del os.environ[key]
    os.environ.update(env)


class CheckedLDAM(LDAMCallback):
    """Asserts inside the workers that only rank 0 logs, with every rank's shard merged in spec order."""

    def _log(self, trainer, results, seconds):
        assert trainer.is_global_zero
        for res in results.values():
            assert res.neurons == list(self.stats.neurons) and len(res.neurons) == 5
        # each rank read its shard's chains across variants; the previous round's samples only rank 0 holds, so
        # the merged result has none of those
        assert set(results["raw"].cross_activations) == {"ema"} and set(results["ema"].cross_activations) == {"raw"}
        assert results["raw"].cross_activations["ema"].shape == results["raw"].activations.shape
        super()._log(trainer, results, seconds)


class RankChecks(Callback):
    def on_train_end(self, trainer, pl_module):
        ldam = next(cb for cb in trainer.callbacks if isinstance(cb, LDAMCallback))
        assert trainer.world_size == 2
        assert ldam.stats.rounds == len(ROUND_STEPS), (trainer.global_rank, ldam.stats.rounds)  # every rank sampled
        assert ldam.stats.skipped_rounds == 0 and ldam._budget.has_estimate  # every rank ran every broadcast decision
        assert int(ldam.stats.ema_updates) == trainer.global_step == 4
        assert len(ldam._reservoir) == 16 and ldam.stats.inputs_seen == 16  # each rank: its 8 inputs, 2 epochs


class DestroyGroupAtExit(Callback):
    """Each worker destroys its gloo process group at exit, as Lightning does for NCCL only.

    Otherwise the group's C++ threads are torn down during interpreter shutdown and a worker could abort with
    "terminate called without an active exception" after a successful fit (1 run in 6, with or without
    LDAMCallback: the abort was seen in the reference run too).
    """

    def setup(self, trainer, pl_module, stage):
        import atexit

        from lightning.fabric.utilities.distributed import _destroy_dist_connection

        atexit.register(_destroy_dist_connection)


def _ddp_fit(root, with_callback: bool):
    # A budget that always holds: rank 0 decides from the measured rounds and broadcasts (no deadlock, no skip).
    cb = CheckedLDAM(NEURONS, every_n_train_steps=2, every_n_epochs=1, **{**FAST, "max_overhead": 1e9}) \
        if with_callback else None
    if cb is not None:
        assert pickle.loads(pickle.dumps(cb)).state_key == cb.state_key  # spawn pickles the callbacks
    pl.seed_everything(0, verbose=False)
    module = TinyModule()
    trainer = pl.Trainer(
        strategy=DDPStrategy(start_method="spawn", timeout=timedelta(seconds=60)), accelerator="cpu",
        devices=2, max_steps=4, default_root_dir=str(root), enable_progress_bar=False,
        enable_model_summary=False, enable_checkpointing=False,
        logger=TensorBoardLogger(str(root), name="tb"),
        callbacks=[cb, RankChecks(), DestroyGroupAtExit()] if cb else [DestroyGroupAtExit()])
    trainer.fit(module, loader())
    return module


@pytest.mark.timeout(240)
def test_ddp_spawn_one_writer_all_neurons_and_training_untouched(tmp_path):
    module = _ddp_fit(tmp_path / "with", with_callback=True)

    files = glob.glob(os.path.join(str(tmp_path / "with"), "**", "events.out.tfevents.*"), recursive=True)
    assert len(files) == 1, files  # rank 0 writes, once
    acc = events(os.path.dirname(files[0]))
    layers = {"features.0": 2, "classifier.2": 3}
    assert ldam_tags(acc, "images") == {f"ldam/{v}/{layer}" for v in ("raw", "ema", "compare")
                                        for layer in layers}
    for tag in ldam_tags(acc, "images"):
        images = acc.Images(tag)
        assert [e.step for e in images] == ROUND_STEPS, tag  # one image per round, not one per rank
        n = layers[tag.rsplit("/", 1)[1]]
        height = (COMPARE_HEADER + n * COMPARE_GROUP + (n - 1) * COMPARE_GAP if "/compare/" in tag
                  else n * (TILE + PAD) + PAD)
        assert all(e.height == height for e in images), tag  # every neuron of every shard
    assert [e.step for e in acc.Scalars("ldam/nonfinite_resets")] == ROUND_STEPS

    ref = _ddp_fit(tmp_path / "without", with_callback=False)
    assert_same(clone_state(module), clone_state(ref))  # rank 0's weights, as the launcher returns them
    pl.seed_everything(0, verbose=False)
    assert not torch.equal(module.features[0].weight, TinyModule().features[0].weight)  # it trained
