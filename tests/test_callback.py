"""LDAMCallback: its schedule and argument checks without a Trainer, then tiny real Trainer runs on CPU.

The recipes follow shared/TESTING.md: the training must be bitwise the same with and without the callback,
the global RNG, modes, flags and gradients untouched around every hook, the TensorBoard output exact,
snapshots isolated and collectable, the state round-tripping through checkpoints and a resume.
"""
from __future__ import annotations

import copy
import dataclasses
import gc
import logging
import os
import pickle
import re
import types
import warnings
import weakref
from typing import Any, Dict, List

import lightning.pytorch as pl
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers.models import SIZE
from helpers.training import (
    COMPARE_GAP,
    COMPARE_GROUP,
    COMPARE_HEADER,
    FAST,
    NEURONS,
    PAD,
    TILE,
    LiveAtBatchEnd,
    TinyModule,
    VariantLog,
    assert_same,
    clone_state,
    events,
    fit,
    ldam_tags,
    live_state,
    loader,
    make_trainer,
)
from lightning.pytorch.callbacks import EMAWeightAveraging, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import lightning_ldam.callback.ldam_callback as callback_module
from lightning_ldam.callback import LDAMCallback
from lightning_ldam.report.tags import known_tag


class StepLog(LDAMCallback):
    """Records the global step of every round that succeeded."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.round_steps: List[int] = []

    def _round(self, trainer, pl_module):
        before = self.stats.rounds
        super()._round(trainer, pl_module)
        if self.stats.rounds > before:
            self.round_steps.append(trainer.global_step)


pytestmark = pytest.mark.usefixtures("lightning_env")


# ---- schedule and arguments, without a Trainer -----------------------------------------------------------
def test_every_n_train_steps_schedule():
    cb = LDAMCallback(NEURONS, every_n_train_steps=3, every_n_epochs=None)
    assert [cb.should_sample(global_step=s) for s in range(10)] == [
        False, False, False, True, False, False, True, False, False, True]
    assert not any(cb.should_sample(epoch=e) for e in range(5))


def test_every_n_epochs_schedule():
    cb = LDAMCallback(NEURONS, every_n_epochs=2)
    assert [cb.should_sample(epoch=e) for e in range(6)] == [False, True, False, True, False, True]
    assert not any(cb.should_sample(global_step=s) for s in range(10))


def test_both_schedules_are_independent():
    cb = LDAMCallback(NEURONS, every_n_epochs=1, every_n_train_steps=2)
    assert [cb.should_sample(global_step=s) for s in range(5)] == [False, False, True, False, True]
    assert [cb.should_sample(epoch=e) for e in range(3)] == [True, True, True]


@pytest.mark.parametrize("n", [1, 2, 7])
def test_step_zero_never_samples(n):
    assert not LDAMCallback(NEURONS, every_n_train_steps=n).should_sample(global_step=0)


def test_on_fit_end_alone_is_a_schedule():
    cb = LDAMCallback(NEURONS, every_n_epochs=None, on_fit_end=True)
    assert not any(cb.should_sample(global_step=s) for s in range(5))
    assert not any(cb.should_sample(epoch=e) for e in range(5))


@pytest.mark.parametrize("epochs, steps", [(None, None), (0, 0), (0, None), (None, 0)])
def test_every_schedule_off_raises_naming_the_arguments(epochs, steps):
    match = (r"^every_n_epochs/every_n_train_steps/on_fit_end/during_validation: every schedule is off "
             rf"\(every_n_epochs={epochs}, every_n_train_steps={steps}, on_fit_end=False, "
             r"during_validation=False\); set at least one")
    with pytest.raises(ValueError, match=match):
        LDAMCallback(NEURONS, every_n_epochs=epochs, every_n_train_steps=steps, on_fit_end=False)


@pytest.mark.parametrize("name", ["every_n_epochs", "every_n_train_steps"])
@pytest.mark.parametrize("value", [-1, 1.5, 2.0, "2", True])
def test_bad_schedule_values_raise_naming_the_argument(name, value):
    with pytest.raises(ValueError, match=rf"^{name}: expected a finite int >= 0, got {value!r}$"):
        LDAMCallback(NEURONS, **{name: value})


@pytest.mark.parametrize("kwargs, error, match", [
    ({"averaging": "swa"}, ValueError, r"^averaging: expected one of \['auto', 'ema', None\], got 'swa'"),
    ({"averaging": "EMA"}, ValueError, r"^averaging: .*got 'EMA'"),
    ({"ema_decay": 1.0}, ValueError, r"^ema_decay: expected a float in \[0, 1\), got 1.0"),
    ({"ema_decay": -0.5}, ValueError, r"^ema_decay: .*got -0.5"),
    ({"ema_decay": True}, ValueError, r"^ema_decay: .*got True"),
    ({"ema_decay": "0.99"}, ValueError, r"^ema_decay: .*got '0.99'"),
    ({"chains": 0}, ValueError, r"^chains: expected a finite int > 0, got 0"),
    ({"chains": 2.5}, ValueError, r"^chains: .*got 2.5"),
    ({"chains": True}, ValueError, r"^chains: .*got True"),
    ({"reservoir_size": 0}, ValueError, r"^reservoir_size: expected a finite int > 0, got 0"),
    ({"reservoir_size": -4}, ValueError, r"^reservoir_size: .*got -4"),
    ({"reservoir_size": 8.0}, ValueError, r"^reservoir_size: .*got 8.0"),
    ({"module": ""}, ValueError, r"^module: expected a dotted attribute path such as 'net', got ''"),
    ({"module": 3}, ValueError, r"^module: .*got 3"),
    ({"input_key": 2.5}, TypeError, r"^input_key: expected None, an int, a str or a callable, got 2.5"),
    ({"input_key": ("x",)}, TypeError, r"^input_key: .*got \('x',\)"),
    ({"steps": 0}, ValueError, r"^steps: .*got 0"),
    ({"ema_every_n_steps": 0}, ValueError, r"^ema_every_n_steps: .*got 0"),
    ({"seed": "0"}, TypeError, r"^seed: expected an int, got '0'"),
    ({"value_range": (1.0, 0.0)}, ValueError, r"^value_range: expected \(lo, hi\) with lo < hi"),
    ({"input_shape": (0, 12, 12)}, ValueError, r"^input_shape: "),
])
def test_bad_arguments_raise_naming_the_argument(kwargs, error, match):
    with pytest.raises(error, match=match):
        LDAMCallback(NEURONS, **kwargs)


@pytest.mark.parametrize("neurons", ["features.0", ":0", "features.0:3-1", []])
def test_malformed_neuron_specs_fail_at_construction(neurons):
    with pytest.raises(ValueError, match=r"^neurons: "):
        LDAMCallback(neurons)


@pytest.mark.parametrize("kwargs, match", [
    ({"upscale": 0}, r"^upscale: expected a finite int > 0, got 0$"),
    ({"upscale": -2}, r"^upscale: .*got -2$"),
    ({"upscale": 2.5}, r"^upscale: .*got 2.5$"),
    ({"disc_weight": -1.0}, r"^disc_weight: expected a finite number >= 0, got -1.0$"),
    ({"disc_weight": float("nan")}, r"^disc_weight: .*got nan$"),
    ({"sampler_kwargs": {"stepz": 3}}, r"^sampler_kwargs: unknown keys \['stepz'\]; accepted: \["),
    ({"sampler_kwargs": {"chains": 4}}, r"^sampler_kwargs: unknown keys \['chains'\].*the callback's own"),
    ({"normalize": (0.5, 0.0)}, r"^normalize: std must be finite and > 0, got \[0.0\]"),
    ({"normalize": ((0.5, 0.5), (0.2, 0.2)), "input_shape": (3, 12, 12)},
     r"^normalize: mean must have 1 or 3 \(channels\) values"),
])
def test_sampler_arguments_are_validated_at_construction(kwargs, match):
    with pytest.raises(ValueError, match=match):
        LDAMCallback(NEURONS, **kwargs)


@pytest.mark.parametrize("normalize", [((0.5, 0.5, 0.5), 0.2), ([0.1, 0.2, 0.3], [0.2, 0.2, 0.2]),
                                       (0.5, 0.2)])
def test_valid_normalize_specs_are_accepted(normalize):
    assert LDAMCallback(NEURONS, normalize=normalize).settings.data.normalize == normalize


@pytest.mark.parametrize("normalize", [(0.5, (0.2, 0.2, 0.2)), ((0.5,), (0.2, 0.2, 0.2))],
                         ids=["scalar-mean-per-channel-std", "one-value-mean-per-channel-std"])
def test_mixed_scalar_and_per_channel_normalize_is_accepted(normalize):
    from lightning_ldam import _validation as V

    mean, std = V.check_normalize(normalize, 3)  # valid for the sampler on 3-channel inputs
    assert mean.tolist() == [0.5] and std.tolist() == pytest.approx([0.2, 0.2, 0.2])
    assert LDAMCallback(NEURONS, normalize=normalize).settings.data.normalize == normalize


def test_state_keys_are_distinct_per_configuration():
    a = LDAMCallback("features.0:0")
    assert a.state_key == LDAMCallback("features.0:0").state_key
    others = [LDAMCallback("classifier.2:0"), LDAMCallback("features.0:0", seed=1),
              LDAMCallback("features.0:0", every_n_train_steps=5), LDAMCallback("features.0:0", module="net")]
    keys = {a.state_key} | {cb.state_key for cb in others}
    assert len(keys) == 5
    assert all(k.startswith("LDAMCallback") for k in keys)


def test_callback_is_picklable_before_fit():
    cb = LDAMCallback(NEURONS, every_n_train_steps=2, input_key=1, **FAST)
    clone = pickle.loads(pickle.dumps(cb))
    assert clone.state_key == cb.state_key
    assert_same(clone.state_dict(), cb.state_dict())


def test_sharded_strategies_are_refused_at_setup():
    class FSDPStrategy:  # only the class name matters to the check
        pass

    cb = LDAMCallback(NEURONS)
    trainer = types.SimpleNamespace(strategy=FSDPStrategy(), callbacks=[cb])
    with pytest.raises(ValueError, match=r"^strategy: LDAMCallback needs full parameters on each rank; FSDP"):
        cb.setup(trainer, TinyModule(), "fit")


# ---- the training run is untouched ----------------------------------------------------------------------
def _parity_run(root, with_callback: bool, logger: bool):
    # A budget that always holds: the cost probe before the first round runs too, and every round after it.
    cb = LDAMCallback(NEURONS, every_n_train_steps=1, every_n_epochs=1, **{**FAST, "max_overhead": 1e9}) \
        if with_callback else None
    pl.seed_everything(0, verbose=False)
    module = TinyModule()
    initial = clone_state(module)
    trainer = make_trainer(root, [cb] if cb else [], deterministic=True, accumulate_grad_batches=2,
                           max_steps=-1, max_epochs=2, limit_val_batches=1,
                           logger=TensorBoardLogger(str(root), name="tb") if logger else False)
    trainer.fit(module, loader(shuffle=True), loader(shuffle=False))
    return trainer, module, cb, initial


@pytest.mark.parametrize("logger", [False, True], ids=["no-logger", "tensorboard"])
def test_training_is_bitwise_identical_with_and_without_the_callback(tmp_path, logger, no_failed_rounds):
    trainer, module, cb, initial = _parity_run(tmp_path / "with", True, logger)
    ref_trainer, ref_module, _, ref_initial = _parity_run(tmp_path / "without", False, logger)

    assert trainer.global_step == ref_trainer.global_step == 4  # 16 samples / 4 per batch / 2 accumulated x 2
    assert cb.stats.rounds == 4  # a round after every optimizer step (the epoch-end rounds fall on the same steps)
    assert cb._budget.has_estimate and cb.stats.skipped_rounds == 0
    assert int(cb.stats.ema_updates) == trainer.global_step  # the own EMA: one update per optimizer step
    assert_same(initial, ref_initial)
    assert_same(clone_state(module), clone_state(ref_module))  # incl. BN running stats, num_batches_tracked
    assert_same(trainer.optimizers[0].state_dict(), ref_trainer.optimizers[0].state_dict())
    assert module.seen == ref_module.seen and len(module.seen) == 8
    assert module.seen[:4] != module.seen[4:]  # shuffled: the order came from the global RNG
    moved = [k for k, v in clone_state(module).items() if not torch.equal(v, initial[k])]
    assert {"features.0.weight", "classifier.2.weight", "features.1.running_mean", "features.3.running_var",
            "features.3.num_batches_tracked"} <= set(moved)


class Recording(LDAMCallback):
    """Records the live state before and after every hook; forces extra rounds at given batch indices.

    Its schedule puts one round in each kind of hook: after optimizer step 3 (batch end), at the end of
    epoch 0 (epoch end) and when training ends at step 4 (the fit-end round runs in on_train_end).
    """

    def __init__(self, *args, extra_rounds_at=(), **kwargs):
        super().__init__(*args, **kwargs)
        self.records: List[tuple] = []
        self.extra_rounds_at = set(extra_rounds_at)

    def should_sample(self, global_step=None, epoch=None):
        return global_step == 3 if global_step is not None else epoch == 0

    def _record(self, hook, pl_module, call):
        before, rounds = live_state(pl_module), self.stats.rounds
        call()
        self.records.append((hook, before, live_state(pl_module), self.stats.rounds - rounds))

    def on_fit_start(self, trainer, pl_module):
        self._record("on_fit_start", pl_module,
                     lambda: super(Recording, self).on_fit_start(trainer, pl_module))

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        def call():
            super(Recording, self).on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
            if batch_idx in self.extra_rounds_at:
                self._round(trainer, pl_module)

        self._record(f"on_train_batch_end[{batch_idx}]", pl_module, call)

    def on_train_epoch_end(self, trainer, pl_module):
        self._record("on_train_epoch_end", pl_module,
                     lambda: super(Recording, self).on_train_epoch_end(trainer, pl_module))

    def on_train_end(self, trainer, pl_module):
        self._record("on_train_end", pl_module,
                     lambda: super(Recording, self).on_train_end(trainer, pl_module))

    def on_fit_end(self, trainer, pl_module):
        self._record("on_fit_end", pl_module, lambda: super(Recording, self).on_fit_end(trainer, pl_module))


def _recorded_fit(root, callbacks):
    """accumulate_grad_batches=3 over 6 batches of 2, two epochs (4 optimizer steps); a frozen BN."""
    return fit(root, callbacks, module=lambda: TinyModule(frozen_bn=True), train=loader(12, 2),
               accumulate_grad_batches=3, max_steps=-1, max_epochs=2)


@pytest.fixture
def recorded(tmp_path, no_failed_rounds):
    """Scheduled rounds in every kind of hook, plus forced rounds mid-accumulation (batches 1 and 4)."""
    cb = Recording(NEURONS, every_n_epochs=1, on_fit_end=True, extra_rounds_at=(1, 4), **FAST)
    trainer, module = _recorded_fit(tmp_path, [cb])
    assert trainer.global_step == 4
    rounds = {}
    for hook, _, _, n in cb.records:
        rounds[hook.split("[")[0]] = rounds.get(hook.split("[")[0], 0) + n
    # 4 forced mid-accumulation rounds + the step-3 round; the end of epoch 0; the end of training
    assert rounds == {"on_fit_start": 0, "on_train_batch_end": 5, "on_train_epoch_end": 1, "on_train_end": 1,
                      "on_fit_end": 0}
    return cb, module


def test_global_rng_untouched_by_every_hook(recorded):
    cb, _ = recorded
    for hook, before, after, _ in cb.records:
        assert torch.equal(before["torch_rng"], after["torch_rng"]), hook
        assert_same(before["numpy_rng"], after["numpy_rng"], f"{hook} numpy")
        assert before["python_rng"] == after["python_rng"], hook


def test_modes_requires_grad_and_bn_settings_untouched(recorded):
    cb, module = recorded
    for hook, before, after, _ in cb.records:
        if hook.startswith("on_train_batch_end"):
            assert before["modes"]["features.1"] is False and before["modes"]["features.3"] is True, hook
        assert after["modes"] == before["modes"], hook
        assert after["requires_grad"] == before["requires_grad"], hook
        assert after["bn"] == before["bn"], hook
        assert_same(before["state"], after["state"], f"{hook} state_dict")
    assert not module.features[1].weight.requires_grad and module.features[0].weight.requires_grad
    assert int(module.features[3].num_batches_tracked) == 12  # the train-mode BN saw the 12 training batches


def test_grads_untouched_mid_accumulation(recorded):
    cb, _ = recorded
    mid = [r for r in cb.records if r[0] in ("on_train_batch_end[1]", "on_train_batch_end[4]")]
    assert len(mid) == 4 and all(r[3] == 1 for r in mid)  # a round ran at each mid-accumulation batch
    for hook, before, after, _ in cb.records:
        grads = before["grads"]
        if hook in ("on_train_batch_end[1]", "on_train_batch_end[4]"):
            assert grads["features.0.weight"] is not None and grads["features.0.weight"].abs().sum() > 0
        for name, g in grads.items():
            got = after["grads"][name]
            assert (g is None) == (got is None), f"{hook}: {name}.grad"
            assert g is None or torch.equal(g, got), f"{hook}: {name}.grad changed"
        assert after["grad_ids"] == before["grad_ids"], hook


def test_mid_accumulation_rounds_leave_training_identical(tmp_path, recorded):
    _, module = recorded
    _, ref = _recorded_fit(tmp_path / "ref", [])
    assert_same(clone_state(module), clone_state(ref))
    assert module.seen == ref.seen


def test_grad_mode_flags_unchanged_by_the_hooks(recorded):
    cb, _ = recorded
    for hook, before, after, _ in cb.records:
        assert after["grad_enabled"] == before["grad_enabled"], hook
        assert after["inference_mode"] == before["inference_mode"], hook


@pytest.mark.parametrize("context", [torch.no_grad, torch.inference_mode], ids=["no_grad", "inference_mode"])
def test_a_round_runs_under_any_grad_context(tmp_path, context):
    cb = LDAMCallback(NEURONS, every_n_train_steps=2, every_n_epochs=None, **FAST)
    trainer, module = fit(tmp_path, [cb], max_steps=2, logger=TensorBoardLogger(str(tmp_path), name="tb"))
    written: List[Dict[str, torch.Tensor]] = []
    real_write = cb._write
    cb._write = lambda tr, images, *args: (written.append(images), real_write(tr, images, *args))
    rounds = cb.stats.rounds
    with warnings.catch_warnings(record=True) as caught, context():
        warnings.simplefilter("always")
        grad, inference = torch.is_grad_enabled(), torch.is_inference_mode_enabled()
        cb._round(trainer, module)
        assert (torch.is_grad_enabled(), torch.is_inference_mode_enabled()) == (grad, inference)
    assert [str(w.message) for w in caught if "sampling failed" in str(w.message)] == []
    assert cb.stats.rounds == rounds + 1
    assert len(written) == 1 and {"ldam/raw/features.0", "ldam/ema/classifier.2"} <= set(written[0])
    assert all(torch.isfinite(img).all() for img in written[0].values())


def _first_round_images(root, seed):
    cb = LDAMCallback(NEURONS, every_n_train_steps=2, every_n_epochs=None, seed=seed, **FAST)
    written: List[Dict[str, torch.Tensor]] = []
    cb._write = lambda trainer, images, scalars, step: written.append(images)
    fit(root, [cb], max_steps=2)
    assert len(written) == 1
    return written[0]


def test_same_callback_seed_same_images_other_seed_other_images(tmp_path):
    a, b, c = (_first_round_images(tmp_path / name, seed) for name, seed in (("a", 0), ("b", 0), ("c", 1)))
    assert_same(a, b)
    assert a.keys() == c.keys() and not any(torch.equal(a[k], c[k]) for k in a)


# ---- TensorBoard and other outputs ---------------------------------------------------------------------
def test_tensorboard_tags_counts_steps_and_sizes(tmp_path, no_failed_rounds):
    neurons = ["features.0:0-2", "classifier.2:1"]
    cb = StepLog(neurons, every_n_train_steps=3, every_n_epochs=1, **FAST)
    logger = TensorBoardLogger(str(tmp_path), name="tb")
    trainer, _ = fit(tmp_path, [cb], max_steps=8, logger=logger)
    # 4 optimizer steps per epoch: rounds after steps 3 and 6, and at the ends of epochs 0 and 1 (steps 4, 8)
    assert cb.round_steps == [3, 4, 6, 8]
    assert cb.stats.ema_updates is not None and cb._averagers == []  # averaging="auto" without Lightning's: the own EMA
    acc = events(logger.log_dir)
    layers = {"features.0": 3, "classifier.2": 1}
    expected_images = {f"ldam/{v}/{layer}" for v in ("raw", "ema", "compare") for layer in layers}
    assert ldam_tags(acc, "images") == expected_images
    logged = ldam_tags(acc, "images") | ldam_tags(acc, "scalars") | ldam_tags(acc, "tensors")
    assert logged and all(known_tag(t) for t in logged), sorted(t for t in logged if not known_tag(t))
    expected_scalars = {f"ldam/{v}/{layer}/{s}" for v in ("raw", "ema") for layer in layers
                        for s in ("activation", "diversity", "nearest_real", "lift", "disc_score")} | {
        # realism needs >= 4 samples of a layer: features.0 has 3 neurons x 2 chains, classifier.2 only 2 samples
        f"ldam/{v}/features.0/realism" for v in ("raw", "ema")} | {
        f"ldam/health/{layer}/{kind}" for layer in layers for kind in ("dead", "undriven", "saturated")} | {
        f"ldam/divergence/ema/{layer}" for layer in layers} | {
        "ldam/nonfinite_resets", "ldam/failed_rounds", "ldam/nonfinite_inputs", "ldam/skipped_batches",
        "ldam/ema/averaged"}
    drift = {f"ldam/drift/{v}/{layer}" for v in ("raw", "ema") for layer in layers}
    # transfer and retention need a driven unit (lift >= 0.5): 3 steps drive the conv channels, not logit 1
    across = {"ldam/transfer/ema/features.0", "ldam/retention/raw/features.0", "ldam/retention/ema/features.0"}
    assert ldam_tags(acc, "scalars") == expected_scalars | drift | across
    for layer, n in layers.items():
        for variant in ("raw", "ema"):
            imgs = acc.Images(f"ldam/{variant}/{layer}")
            assert [e.step for e in imgs] == cb.round_steps
            assert all(e.height == n * (TILE + PAD) + PAD for e in imgs), (variant, layer)
            assert all(e.width == 2 * (TILE + PAD) + PAD for e in imgs), (variant, layer)
        imgs = acc.Images(f"ldam/compare/{layer}")
        assert [e.step for e in imgs] == cb.round_steps
        assert all(e.height == COMPARE_HEADER + n * COMPARE_GROUP + (n - 1) * COMPARE_GAP for e in imgs), layer
        assert all(e.width <= 350 for e in imgs), layer
    for tag in expected_scalars | drift:
        values = acc.Scalars(tag)
        # drift compares a round with the one before: from the second round on
        assert [e.step for e in values] == cb.round_steps[1 if tag in drift else 0:], tag
        assert all(np.isfinite(e.value) for e in values), tag
    assert all(0.0 < e.value < 1.0 for e in acc.Scalars("ldam/raw/features.0/disc_score"))
    assert all(e.value > 0 for e in acc.Scalars("ldam/raw/features.0/realism"))
    assert all(e.value > 0 for e in acc.Scalars("ldam/ema/features.0/diversity"))
    for tag in ("ldam/nonfinite_resets", "ldam/failed_rounds", "ldam/nonfinite_inputs"):
        assert all(e.value == 0.0 for e in acc.Scalars(tag)), tag


def test_without_a_logger_pngs_go_under_default_root_dir_with_one_warning(tmp_path, no_failed_rounds):
    from PIL import Image

    cb = StepLog(NEURONS, every_n_train_steps=2, every_n_epochs=None, **FAST)
    trainer, _ = fit(tmp_path / "root", [cb], max_steps=4, logger=False)
    assert cb.round_steps == [2, 4]
    warned = [str(w.message) for w in no_failed_rounds if "no image-capable logger" in str(w.message)]
    assert len(warned) == 1 and str(tmp_path / "root" / "ldam") in warned[0]
    files = sorted(os.listdir(tmp_path / "root" / "ldam"))
    assert files == sorted(f"ldam_{v}_{layer}_step{s:07d}.png" for v in ("raw", "ema", "compare")
                           for layer in ("features-0", "classifier-2") for s in (2, 4))
    with Image.open(tmp_path / "root" / "ldam" / "ldam_raw_classifier-2_step0000004.png") as img:
        assert img.size == (2 * (TILE + PAD) + PAD, 3 * (TILE + PAD) + PAD)


def test_csv_logger_gets_the_scalars_and_pngs_go_to_its_log_dir(tmp_path, no_failed_rounds):
    logger = CSVLogger(str(tmp_path), name="csv")
    cb = StepLog(NEURONS, every_n_train_steps=2, every_n_epochs=None, disc_weight=0.0, **FAST)
    fit(tmp_path, [cb], max_steps=4, logger=logger)
    logger.save()
    with open(os.path.join(logger.log_dir, "metrics.csv")) as f:
        header = f.readline()
    assert "ldam/nonfinite_resets" in header and "ldam/raw/features.0/activation" in header
    assert len([p for p in os.listdir(os.path.join(logger.log_dir, "ldam")) if p.endswith(".png")]) == 12


def test_writing_pngs_issues_no_collective_from_rank_zero_only_code(tmp_path):
    """_log runs on global rank 0 only; a collective there (trainer.log_dir broadcasts) would leave the other
    DDP ranks behind and desynchronise every later collective (it did: gloo aborted with a size mismatch)."""
    calls = []

    class Spy(LDAMCallback):
        def on_fit_start(self, trainer, pl_module):
            super().on_fit_start(trainer, pl_module)
            real = trainer.strategy.broadcast
            trainer.strategy.broadcast = lambda obj, src=0: (calls.append(obj), real(obj, src))[1]

    cb = Spy(NEURONS, every_n_train_steps=2, every_n_epochs=None, disc_weight=0.0, **FAST)
    fit(tmp_path, [cb], max_steps=2, logger=False)
    assert cb.stats.rounds == 1
    assert calls == []


# ---- averaging ------------------------------------------------------------------------------------------
def test_averaging_none_logs_raw_weights_only(tmp_path, no_failed_rounds):
    logger = TensorBoardLogger(str(tmp_path), name="tb")
    cb = LDAMCallback(NEURONS, every_n_train_steps=2, every_n_epochs=None, averaging=None, disc_weight=0.0,
                      **FAST)
    fit(tmp_path, [cb], max_steps=4, logger=logger)
    assert cb.stats.ema_updates is None and cb.stats.rounds == 2
    assert ldam_tags(events(logger.log_dir), "images") == {"ldam/raw/features.0", "ldam/raw/classifier.2"}


def test_alongside_ema_weight_averaging(tmp_path, no_failed_rounds):
    averager = EMAWeightAveraging(decay=0.5)
    cb = VariantLog(NEURONS, every_n_train_steps=2, every_n_epochs=1, averager=averager, disc_weight=0.0,
                    **FAST)
    # validation after every epoch: EMAWeightAveraging swaps the averaged weights in and out around it
    trainer, module = fit(tmp_path / "with", [averager, cb], val=loader(8, shuffle=False), max_steps=8,
                          limit_val_batches=1, num_sanity_val_steps=0)
    assert cb.stats.ema_updates is None and cb._averagers == [averager]
    assert len(cb.seen_variants) == cb.stats.rounds == 4
    for r in cb.seen_variants:
        assert set(r["variants"]) == {"raw", "ema"}
        assert_same(r["variants"]["raw"], r["live"])  # the true raw weights, not the swapped-in average
        assert_same(r["variants"]["ema"], r["lightning_average"])
        raw, ema = r["variants"]["raw"]["features.0.weight"], r["variants"]["ema"]["features.0.weight"]
        assert not torch.equal(raw, ema)

    ref_averager = EMAWeightAveraging(decay=0.5)
    _, ref = fit(tmp_path / "without", [ref_averager], val=loader(8, shuffle=False), max_steps=8,
                 limit_val_batches=1, num_sanity_val_steps=0)
    assert_same(clone_state(module), clone_state(ref))  # the averaged weights Lightning copied in at the end
    assert_same(clone_state(averager._average_model), clone_state(ref_averager._average_model))


class AverageCount(LDAMCallback):
    def variants(self, trainer, pl_module):
        out = super().variants(trainer, pl_module)
        self.counts = getattr(self, "counts", [])
        count = int(self._averagers[0]._average_model.n_averaged)
        self.counts.append((trainer.global_step, count, sorted(out)))
        return out


def test_lightning_ema_variant_includes_the_current_step(tmp_path, no_failed_rounds):
    averager = EMAWeightAveraging(decay=0.5)
    cb = AverageCount(NEURONS, every_n_train_steps=1, every_n_epochs=None, disc_weight=0.0, **FAST)
    fit(tmp_path, [averager, cb], max_steps=3)
    # step 1: the average holds one update, no average yet: raw only
    assert cb.counts == [(1, 1, ["raw"])] + [(s, s, ["ema", "raw"]) for s in (2, 3)]


def test_on_fit_end_round_samples_the_raw_weights_alongside_ema_weight_averaging(tmp_path, no_failed_rounds):
    """WeightAveraging.on_train_end copies the average into the model: listed first, the fit-end round sees raw."""
    averager, live = EMAWeightAveraging(decay=0.5), LiveAtBatchEnd()
    cb = VariantLog(NEURONS, every_n_epochs=None, on_fit_end=True, averager=averager, disc_weight=0.0, **FAST)
    fit(tmp_path, [cb, averager, live], max_steps=4)
    assert len(cb.seen_variants) == 1 and set(cb.seen_variants[0]["variants"]) == {"raw", "ema"}
    assert_same(cb.seen_variants[0]["variants"]["raw"], live.state)


def test_fit_end_round_after_weight_averaging_skips_raw_instead_of_mislabelling(tmp_path, caplog):
    averager = EMAWeightAveraging(decay=0.5)
    cb = VariantLog(NEURONS, every_n_epochs=None, on_fit_end=True, averager=averager, disc_weight=0.0, **FAST)
    with caplog.at_level(logging.INFO):
        fit(tmp_path, [averager, cb], max_steps=4)
    assert len(cb.seen_variants) == 1 and set(cb.seen_variants[0]["variants"]) == {"ema"}
    assert "list LDAMCallback before it" in caplog.text


# ---- snapshots: isolated and collectable ----------------------------------------------------------------
def test_snapshots_are_isolated_and_freed(tmp_path, monkeypatch, no_failed_rounds):
    taken: List[Dict[str, Any]] = []
    lives: List[nn.Module] = []
    real_snapshot = callback_module.snapshot

    def spying_snapshot(model, device=None):
        snap = real_snapshot(model, device)
        live_ptrs = {t.data_ptr() for t in list(model.parameters()) + list(model.buffers())}
        snap_ptrs = {t.data_ptr() for t in list(snap.parameters()) + list(snap.buffers())}
        taken.append({
            "ref": weakref.ref(snap), "of_live": model is lives[0],
            "shares_storage": bool(live_ptrs & snap_ptrs),
            "requires_grad": any(p.requires_grad for p in snap.parameters()),
            "training": any(m.training for m in snap.modules()),
            "trainer": getattr(snap, "_trainer", "missing"),
            "dataset_same": snap.dataset is model.dataset,
            "hooks_shared": any(a._forward_hooks is b._forward_hooks
                                for a, b in zip(model.modules(), snap.modules())),
        })
        return snap

    monkeypatch.setattr(callback_module, "snapshot", spying_snapshot)

    def module():
        m = TinyModule()
        m.dataset = TensorDataset(torch.rand(4, 1, SIZE, SIZE))  # a user attribute: referenced, never copied
        m.classifier.register_forward_hook(lambda *args: None)
        lives.append(m)
        return m

    cb = LDAMCallback(NEURONS, every_n_train_steps=1, every_n_epochs=None, disc_weight=0.0, **FAST)
    trainer, live = fit(tmp_path, [cb], module=module, max_steps=4)
    assert cb.stats.rounds == 4 and live._trainer is trainer
    assert len(taken) == 1 + 1 + 3 * 2  # the first-batch target check, raw at step 1 (one EMA update), then both
    assert sum(t["of_live"] for t in taken) == 1 + 4
    for t in taken:
        assert not t["shares_storage"] and not t["requires_grad"] and not t["training"]
        assert not t["hooks_shared"] and t["trainer"] is None and t["dataset_same"]
    gc.collect()
    assert taken[1]["ref"]() is None  # a snapshot of round 1 is gone
    assert [t["ref"]() for t in taken] == [None] * len(taken)


def test_own_ema_does_not_copy_user_attributes():
    module = TinyModule()
    module.dataset = TensorDataset(torch.rand(64, 1, SIZE, SIZE))
    cb = LDAMCallback(NEURONS)
    cb.on_fit_start(types.SimpleNamespace(is_global_zero=True, loggers=[], global_step=0), module)
    assert cb._ema is not None
    assert cb._ema.module.dataset is module.dataset


class KeepsLoss(TinyModule):
    def training_step(self, batch, batch_idx):
        loss = super().training_step(batch, batch_idx)
        self.last_loss = loss  # a non-leaf tensor left on the module, as many users do
        return loss


def test_own_ema_survives_non_leaf_tensor_attributes(tmp_path):
    """A plain deepcopy of the module would raise on the non-leaf tensor (Lightning #17375/#20070)."""
    pl.seed_everything(0, verbose=False)
    module = KeepsLoss()
    make_trainer(tmp_path / "first", max_steps=1).fit(module, loader())  # e.g. a warm-up without the callback
    assert module.last_loss.grad_fn is not None
    cb = LDAMCallback(NEURONS, every_n_train_steps=1, every_n_epochs=None, disc_weight=0.0, **FAST)
    trainer = make_trainer(tmp_path / "second", [cb], max_steps=3)
    trainer.fit(module, loader())
    assert trainer.global_step == 3 and cb.stats.rounds == 3


# ---- state: state_dict, checkpoints, resume -------------------------------------------------------------
def test_state_dict_round_trip_and_checkpoint_contents(tmp_path, no_failed_rounds):
    cb = LDAMCallback(NEURONS, every_n_train_steps=2, every_n_epochs=1, **FAST)
    other = LDAMCallback("classifier.2:0", every_n_train_steps=4, every_n_epochs=None, max_overhead=None,
                         disc_weight=0.0, chains=2, steps=2, reservoir_size=4)
    checkpoint = ModelCheckpoint(dirpath=str(tmp_path / "ckpt"))
    trainer, module = fit(tmp_path, [cb, other, checkpoint], max_steps=-1, max_epochs=1,
                          enable_checkpointing=True)
    assert cb.stats.rounds == 2 and other.stats.rounds == 1

    state = cb.state_dict()
    assert state["rounds"] == 2 and state["last_sampled_step"] == 4 and state["last_ema_step"] == 4
    assert set(state["discriminators"]) == {"raw", "ema"} and state["reservoir"]["seen"] == 16
    assert int(state["ema"]["average.n_averaged"]) == 4

    ckpt = torch.load(checkpoint.best_model_path, weights_only=False)
    assert cb.state_key != other.state_key
    assert_same(ckpt["callbacks"][cb.state_key], state)
    assert_same(ckpt["callbacks"][other.state_key], other.state_dict())
    assert_same(ckpt["state_dict"], clone_state(module))  # the raw weights

    fresh = LDAMCallback(NEURONS, every_n_train_steps=2, every_n_epochs=1, **FAST)
    fresh.load_state_dict(copy.deepcopy(state))
    assert_same(fresh.state_dict(), state)
    assert (fresh.stats.rounds, fresh.stats.last_sampled_step, fresh._run.last_ema_step) == (2, 4, 4)
    assert torch.equal(fresh._reservoir.images, cb._reservoir.images)
    # everything the state holds comes back (the own EMA's state waits for the next fit to build the EMA)
    assert fresh.stats == dataclasses.replace(cb.stats, ema_updates=None)
    with pytest.raises(dataclasses.FrozenInstanceError):
        fresh.stats.rounds = 0  # type: ignore[misc]


@pytest.mark.parametrize("change, missing", [({"format": "other"}, "[]"), ({"rounds": None}, "['rounds']")])
def test_a_state_this_version_did_not_write_is_refused_clearly(change, missing):
    state = LDAMCallback(NEURONS, **FAST).state_dict()
    state.update(change)
    state = {k: v for k, v in state.items() if v is not None or k != "rounds"}
    with pytest.raises(ValueError, match=r"^LDAMCallback: the checkpoint's LDAM state was not written by this version "
                                         rf"of lightning_ldam \(format .*, missing {re.escape(missing)}\)"):
        LDAMCallback(NEURONS, **FAST).load_state_dict(state)


def test_stats_count_what_the_run_did(tmp_path, no_failed_rounds):
    cb = LDAMCallback(NEURONS, every_n_train_steps=2, every_n_epochs=None, **FAST)
    fit(tmp_path, [cb], max_steps=4)
    stats = cb.stats
    assert (stats.rounds, stats.failed_rounds, stats.skipped_rounds, stats.skipped_batches) == (2, 0, 0, 0)
    assert stats.inputs_seen == 16 and stats.inputs_kept == 16 and stats.ema_updates == 4
    assert stats.last_sampled_step == 4 and len(stats.neurons) == 5


def _resume_run(root, epochs, ckpt_path=None):
    cb = StepLog(NEURONS, every_n_train_steps=2, every_n_epochs=None, ema_decay=0.5, **FAST)
    checkpoint = ModelCheckpoint(dirpath=str(root / "ckpt"), save_last=True)
    logger = TensorBoardLogger(str(root), name="tb")
    # No Dropout and a fixed data order: Lightning does not checkpoint the global RNG, so only then can the
    # resumed *training* match the uninterrupted one; the callback's own randomness is all in its state.
    trainer, module = fit(root, [cb, checkpoint], module=lambda: TinyModule(dropout=0.0),
                          train=loader(shuffle=False), max_steps=-1, max_epochs=epochs,
                          enable_checkpointing=True, logger=logger, ckpt_path=ckpt_path)
    return trainer, module, cb, checkpoint, logger


def test_crash_and_resume_equals_an_uninterrupted_run(tmp_path, no_failed_rounds):
    # "crash" after epoch 0 (4 optimizer steps), resume for epoch 1; against both epochs in one go
    _, _, first_cb, checkpoint, first_logger = _resume_run(tmp_path / "a", 1)
    trainer, module, cb, _, logger = _resume_run(tmp_path / "b", 2, ckpt_path=checkpoint.last_model_path)
    ref_trainer, ref_module, ref_cb, _, _ = _resume_run(tmp_path / "c", 2)

    assert trainer.global_step == ref_trainer.global_step == 8
    assert first_cb.round_steps == [2, 4] and cb.round_steps == [6, 8] and ref_cb.round_steps == [2, 4, 6, 8]
    assert_same(clone_state(module), clone_state(ref_module))
    assert_same(cb._ema.state_dict(), ref_cb._ema.state_dict())
    assert int(cb.stats.ema_updates) == 8
    assert_same(cb._reservoir.state_dict(), ref_cb._reservoir.state_dict())
    assert_same(cb.state_dict(), ref_cb.state_dict())  # counters, discriminators, generator states
    before = [e.step for e in events(first_logger.log_dir).Images("ldam/raw/features.0")]
    after = [e.step for e in events(logger.log_dir).Images("ldam/raw/features.0")]
    assert before == [2, 4] and after == [6, 8]


# ---- faults ---------------------------------------------------------------------------------------------
class NaNInEval(nn.Module):
    """Identity while training; in eval mode (the callback's sampling) even batch rows turn NaN."""

    def forward(self, x):
        if self.training:
            return x
        rows = torch.arange(x.shape[0], device=x.device).view(-1, *([1] * (x.dim() - 1)))
        return torch.where(rows % 2 == 0, torch.full_like(x, float("nan")), x)


class NaNModule(TinyModule):
    def __init__(self):
        super().__init__()
        self.classifier.append(NaNInEval())


def test_nonfinite_chains_are_reset_reported_and_training_completes(tmp_path, no_failed_rounds):
    logger = TensorBoardLogger(str(tmp_path), name="tb")
    cb = LDAMCallback(["classifier.3:0-1"], every_n_train_steps=2, every_n_epochs=None, **FAST)
    trainer, module = fit(tmp_path, [cb], module=NaNModule, max_steps=4, logger=logger)
    assert trainer.global_step == 4 and cb.stats.rounds == 2
    assert all(torch.isfinite(p).all() for p in module.parameters())
    warned = [str(w.message) for w in no_failed_rounds if "turned NaN/Inf and were re-init" in str(w.message)]
    assert any("'raw' weights" in m for m in warned) and any("'ema' weights" in m for m in warned)
    resets = events(logger.log_dir).Scalars("ldam/nonfinite_resets")
    assert [e.step for e in resets] == [2, 4] and all(e.value > 0 for e in resets)


class NoForward(pl.LightningModule):
    """The network lives in ``self.net``; the LightningModule itself defines no forward()."""

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(2 * 10 * 10, 5))
        self.seen = []

    def training_step(self, batch, batch_idx):
        x, idx = batch
        self.seen.append(idx.tolist())
        return F.cross_entropy(self.net(x), idx % 5)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_module_without_forward_needs_the_module_argument(tmp_path):
    cb = LDAMCallback("net.3:0", every_n_train_steps=1, disc_weight=0.0, **FAST)
    module = NoForward()
    match = (r"^module: NoForward defines no forward\(\), so LDAM cannot run it; "
             r"pass module=<name of the network submodule> \(children: \['net'\]\)")
    with pytest.raises(ValueError, match=match):
        make_trainer(tmp_path, [cb]).fit(module, loader())
    assert module.seen == []  # refused at setup, before any training


def test_module_argument_selects_the_network(tmp_path, no_failed_rounds):
    cb = LDAMCallback("3:0-1", module="net", every_n_train_steps=1, every_n_epochs=None, disc_weight=0.0,
                      **FAST)
    trainer, _ = fit(tmp_path, [cb], module=NoForward, max_steps=2)
    assert cb.stats.rounds == 2 and int(cb.stats.ema_updates) == 2


def test_unknown_module_argument_fails_at_setup(tmp_path):
    cb = LDAMCallback("3:0", module="nope", disc_weight=0.0, **FAST)
    module = NoForward()
    match = r"^module: NoForward has no submodule 'nope'; its children are \['net'\]"
    with pytest.raises(ValueError, match=match):
        make_trainer(tmp_path, [cb]).fit(module, loader())
    assert module.seen == []


def test_unknown_layer_fails_at_setup(tmp_path):
    cb = LDAMCallback("features.9:0", disc_weight=0.0, **FAST)
    module = TinyModule()
    with pytest.raises(ValueError, match=r"^neurons: layer path 'features.9' is not a module of TinyModule"):
        make_trainer(tmp_path, [cb]).fit(module, loader())
    assert module.seen == []


def test_index_out_of_range_fails_at_the_first_batch(tmp_path):
    cb = LDAMCallback("classifier.2:7", disc_weight=0.0, **FAST)
    module = TinyModule()
    match = r"^neurons: index 7 is out of range for layer 'classifier.2', which has 5 units \(valid: 0-4\)"
    with pytest.raises(ValueError, match=match):
        make_trainer(tmp_path, [cb]).fit(module, loader())
    assert module.seen == []  # raised at the first batch's start: no training step ran


@pytest.mark.parametrize("input_key, match", [
    ("image", r"^input_key: cannot read the inputs of a list batch with input_key='image'"),
    (1, r"^input_key: input_key=1 does not give a floating-point image tensor"),
])
def test_unreadable_batch_fails_at_the_first_batch_naming_input_key(tmp_path, input_key, match):
    cb = LDAMCallback(NEURONS, input_key=input_key, disc_weight=0.0, **FAST)
    module = TinyModule()
    with pytest.raises(ValueError, match=match):
        make_trainer(tmp_path, [cb]).fit(module, loader())
    assert module.seen == []  # raised at the first batch's start: no training step ran


def test_batches_the_default_input_key_cannot_read_are_skipped_with_one_warning(tmp_path):
    """The user set no input_key: an unreadable batch is the callback's limit, never an error of the run."""
    cb = LDAMCallback(NEURONS, disc_weight=0.0, **FAST)
    module = TinyModule()
    module.training_step = lambda batch, batch_idx: module(torch.zeros(4, 1, SIZE, SIZE)).sum()
    data = DataLoader([{"label": torch.tensor(i)} for i in range(8)], batch_size=4)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer = make_trainer(tmp_path, [cb], max_steps=4)
        trainer.fit(module, data)
    assert trainer.global_step == 4
    said = [str(w.message) for w in caught if "not kept for LDAM" in str(w.message)]
    assert len(said) == 1 and "input_key=None does not give" in said[0] and "['label']" in said[0]
    assert cb.stats.skipped_batches == 4 and cb.stats.rounds == 0


def test_callback_is_picklable_after_fit(tmp_path):
    cb = LDAMCallback(NEURONS, every_n_train_steps=2, every_n_epochs=None, disc_weight=0.0, **FAST)
    fit(tmp_path, [cb], max_steps=2)
    assert cb.stats.ema_updates is not None
    clone = pickle.loads(pickle.dumps(cb))
    assert_same(clone.state_dict(), cb.state_dict())


class LoggedResults(LDAMCallback):
    """Keeps what each round hands to the loggers, and the own EMA's weights at that moment."""

    def _log(self, trainer, results, seconds):
        self.logged = (dict(results), clone_state(self._ema.module), trainer.global_step)
        super()._log(trainer, results, seconds)


def test_what_is_logged_as_ema_is_sampled_from_the_emas_weights(tmp_path, no_failed_rounds):
    import copy

    import lightning_ldam as ldam

    cb = LoggedResults(NEURONS, every_n_train_steps=4, every_n_epochs=None, disc_weight=0.0, ema_decay=0.5,
                       value_range=(0.0, 1.0), **FAST)
    _, module = fit(tmp_path, [cb], max_steps=4)
    results, ema_state, step = cb.logged
    assert step == 4
    net = copy.deepcopy(module)
    net.load_state_dict(ema_state)
    settings = dict(input_shape=(1, SIZE, SIZE), chains=2, steps=3, disc_weight=0.0, value_range=(0.0, 1.0),
                    seed=0, disc_warmup=1)
    again = ldam.sample(net, NEURONS, **settings)
    assert torch.equal(again.images, results["ema"].images)
    raw = ldam.sample(module, NEURONS, **settings)  # the live weights after the last step: the raw variant
    assert torch.equal(raw.images, results["raw"].images)
    assert not torch.equal(results["raw"].images, results["ema"].images)  # decay 0.5 after 4 steps: not raw


def test_the_resolved_sampler_settings_are_logged_once_per_fit_as_text(tmp_path):
    from lightning.pytorch.loggers import TensorBoardLogger
    from tensorboard.plugins.text.metadata import PLUGIN_NAME

    logger = TensorBoardLogger(str(tmp_path), name="tb")
    cb = LDAMCallback(NEURONS, every_n_train_steps=2, every_n_epochs=None, **FAST)
    fit(tmp_path, [cb], max_steps=4, logger=logger)
    acc = EventAccumulator(logger.log_dir, size_guidance={"tensors": 0})
    acc.Reload()
    assert "ldam/settings/text_summary" in acc.PluginTagToContent(PLUGIN_NAME)
    texts = acc.Tensors("ldam/settings/text_summary")
    assert [t.step for t in texts] == [2]  # once, at the fit's first round
    text = texts[0].tensor_proto.string_val[0].decode()
    assert "variants: raw, ema" in text and "| steps | 3 |" in text and "| method | langevin |" in text
