"""LDAMCallback rounds fired from validation, the overhead budget and the progress bar.

Validation runs under ``no_grad`` (inside ``fit``) or ``inference_mode`` (``trainer.validate``): rounds
there must work without asking the user for anything, leave the training bitwise unchanged and read the
true raw weights even while ``EMAWeightAveraging`` has swapped its average in for validation.
"""
from __future__ import annotations

from collections import Counter
from typing import Any, Dict, List

import lightning.pytorch as pl
import pytest
import torch
from helpers.sampling import sample_settings
from helpers.training import (
    FAST,
    NEURONS,
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
from lightning.pytorch.callbacks import EMAWeightAveraging
from lightning.pytorch.loggers import TensorBoardLogger

import lightning_ldam.callback.ldam_callback as callback_module
import lightning_ldam.engine.rounds as rounds_module
from lightning_ldam.callback import LDAMCallback
from lightning_ldam.sampling.api import WARM_DISC_STEPS
from lightning_ldam.sampling.config import LangevinConfig
from lightning_ldam.sampling.progress import Progress

DEFAULT = LangevinConfig().steps

pytestmark = pytest.mark.usefixtures("lightning_env")


class HookRounds(LDAMCallback):
    """Counts the rounds each hook ran and records the live state around ``on_validation_end``."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.by_hook: Counter = Counter()
        self.around_validation: List[tuple] = []

    def _count(self, hook, call):
        before = self.stats.rounds
        call()
        self.by_hook[hook] += self.stats.rounds - before

    def on_train_batch_end(self, trainer, pl_module, *args):
        self._count("batch_end", lambda: super(HookRounds, self).on_train_batch_end(trainer, pl_module, *args))

    def on_train_epoch_end(self, trainer, pl_module):
        self._count("epoch_end", lambda: super(HookRounds, self).on_train_epoch_end(trainer, pl_module))

    def on_validation_end(self, trainer, pl_module):
        before = live_state(pl_module)
        self._count("validation_end", lambda: super(HookRounds, self).on_validation_end(trainer, pl_module))
        self.around_validation.append((before, live_state(pl_module)))


def _parity_run(root, with_callback: bool):
    """2 epochs x 4 batches, accumulate 2 (4 optimizer steps), validation every 2 batches (steps 1..4)."""
    cb = HookRounds(NEURONS, every_n_train_steps=2, every_n_epochs=1, during_validation=True, **FAST) \
        if with_callback else None
    pl.seed_everything(0, verbose=False)
    module = TinyModule()
    trainer = make_trainer(root, [cb] if cb else [], deterministic=True, accumulate_grad_batches=2, max_steps=-1,
                           max_epochs=2, val_check_interval=2, limit_val_batches=1, num_sanity_val_steps=1,
                           logger=TensorBoardLogger(str(root), name="tb"))
    trainer.fit(module, loader(shuffle=True), loader(shuffle=False))
    return trainer, module, cb


def test_validation_rounds_leave_training_bitwise_identical(tmp_path, no_failed_rounds):
    trainer, module, cb = _parity_run(tmp_path / "with", True)
    ref_trainer, ref_module, _ = _parity_run(tmp_path / "without", False)
    assert trainer.global_step == ref_trainer.global_step == 4
    # validation at steps 1 and 3 samples; at steps 2 and 4 the batch-end round already ran at that step
    assert cb.by_hook == {"batch_end": 2, "validation_end": 2, "epoch_end": 0}
    assert_same(clone_state(module), clone_state(ref_module))
    assert_same(trainer.optimizers[0].state_dict(), ref_trainer.optimizers[0].state_dict())
    assert module.seen == ref_module.seen
    for before, after in cb.around_validation:
        assert not before["grad_enabled"]  # Lightning's validation context was active during the round
        for key in ("torch_rng", "grad_enabled", "inference_mode", "modes", "requires_grad", "state"):
            assert_same(before[key], after[key], key)
    images = events(trainer.logger.log_dir).Images("ldam/raw/features.0")
    assert [e.step for e in images] == [1, 2, 3, 4]


def test_trainer_validate_samples_raw_weights_under_inference_mode(tmp_path, no_failed_rounds):
    logger = TensorBoardLogger(str(tmp_path), name="tb")
    cb = HookRounds(NEURONS, every_n_epochs=None, during_validation=True, **FAST)
    pl.seed_everything(0, verbose=False)
    module = TinyModule()
    trainer = make_trainer(tmp_path, [cb], logger=logger, inference_mode=True)
    trainer.validate(module, loader(8, shuffle=False))
    assert cb.by_hook == {"validation_end": 1}
    (before, after), = cb.around_validation
    assert before["inference_mode"] and after["inference_mode"]
    assert cb.stats.inputs_seen == 8  # the validation batches fed the reservoir: no training batch came
    acc = events(logger.log_dir)
    assert ldam_tags(acc, "images") == {"ldam/raw/features.0", "ldam/raw/classifier.2"}
    assert [e.step for e in acc.Images("ldam/raw/classifier.2")] == [0]


def test_validate_without_during_validation_does_nothing(tmp_path):
    cb = HookRounds(NEURONS, **FAST)
    make_trainer(tmp_path, [cb]).validate(TinyModule(), loader(8, shuffle=False))
    assert cb.stats.rounds == 0 and cb.stats.inputs_seen == 0 and not cb._run.checked


class RawAtRound(VariantLog):
    """Also keeps the weights the module had after the last training batch: the true raw weights."""

    def __init__(self, *args, live, **kwargs):
        super().__init__(*args, **kwargs)
        self.live = live
        self.true_raw: List[Dict[str, torch.Tensor]] = []

    def variants(self, trainer, pl_module):
        self.true_raw.append(self.live.state)
        return super().variants(trainer, pl_module)


@pytest.mark.parametrize("averager_first", [False, True], ids=["averager-after", "averager-before"])
def test_validation_round_sees_raw_weights_while_ema_weight_averaging_swapped_them(
        tmp_path, no_failed_rounds, averager_first):
    """EMAWeightAveraging swaps its average in for validation and back in its on_validation_epoch_end:
    whatever the callback order, the round (on_validation_end) must see the raw weights as raw."""
    averager, live = EMAWeightAveraging(decay=0.5), LiveAtBatchEnd()
    cb = RawAtRound(NEURONS, every_n_epochs=None, during_validation=True, averager=averager, disc_weight=0.0,
                    live=live, **FAST)
    fit(tmp_path, [live, averager, cb] if averager_first else [live, cb, averager], val=loader(8, shuffle=False),
        max_steps=4, val_check_interval=2, limit_val_batches=1, num_sanity_val_steps=0)
    assert len(cb.seen_variants) == 2
    for r, true_raw in zip(cb.seen_variants, cb.true_raw):
        assert set(r["variants"]) == {"raw", "ema"}
        assert_same(r["variants"]["raw"], true_raw)
        assert_same(r["variants"]["ema"], r["lightning_average"])
        assert not torch.equal(r["variants"]["raw"]["features.0.weight"], r["variants"]["ema"]["features.0.weight"])


# ---- max_overhead ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("value", [0, -0.1, float("nan"), "5%"])
def test_bad_max_overhead_raises_naming_the_argument(value):
    with pytest.raises(ValueError, match=rf"^max_overhead: expected a finite number > 0, got {value!r}$"):
        LDAMCallback(NEURONS, max_overhead=value)


def test_during_validation_must_be_a_bool():
    with pytest.raises(TypeError, match=r"^during_validation: expected True or False, got 'yes'$"):
        LDAMCallback(NEURONS, during_validation="yes")


def test_max_overhead_defaults_to_five_percent():
    assert LDAMCallback(NEURONS)._budget.fraction == 0.05
    assert LDAMCallback(NEURONS, max_overhead=None)._budget is None


def test_a_vanishing_budget_runs_the_first_round_then_skips_until_the_fit_end_round(
        tmp_path, no_failed_rounds, caplog):
    logger = TensorBoardLogger(str(tmp_path), name="tb")
    cb = HookRounds(NEURONS, every_n_train_steps=1, every_n_epochs=None, on_fit_end=True,
                    **{**FAST, "max_overhead": 1e-9})
    trainer, _ = fit(tmp_path, [cb], max_steps=4, logger=logger)
    # the first due round always runs (its cost is measured); then no round fits in 1e-9 of the training time
    # until the fit-end round, which always runs
    assert cb.by_hook["batch_end"] == 1 and cb.stats.skipped_rounds == 3 and cb.stats.rounds == 2
    acc = events(logger.log_dir)
    assert [e.step for e in acc.Images("ldam/raw/features.0")] == [1, 4]
    assert [e.value for e in acc.Scalars("ldam/skipped_rounds")] == [0.0, 3.0]
    assert cb.state_dict()["skipped_rounds"] == 3
    assert "max_overhead=1e-09" in caplog.text or any("max_overhead" in str(w.message) for w in no_failed_rounds)


def test_a_short_run_under_the_default_budget_shows_images_in_its_first_epoch(tmp_path, no_failed_rounds):
    """A newcomer's 2-epoch run with every_n_epochs=1: the first due round runs whatever the budget says."""
    logger = TensorBoardLogger(str(tmp_path), name="tb")
    cb = LDAMCallback(NEURONS, every_n_epochs=1, chains=2, steps=3, reservoir_size=16)
    trainer, _ = fit(tmp_path, [cb], max_epochs=2, max_steps=-1, logger=logger)
    steps = [e.step for e in events(logger.log_dir).Images("ldam/raw/features.0")]
    assert steps and steps[0] == trainer.global_step // 2  # the end of epoch 0
    assert steps[-1] == trainer.global_step  # the fit-end round (or the last epoch's, at the same step)


def test_a_generous_budget_runs_every_round_and_measures_them(tmp_path, no_failed_rounds):
    cb = HookRounds(NEURONS, every_n_train_steps=1, every_n_epochs=None, **{**FAST, "max_overhead": 1e9})
    fit(tmp_path, [cb], max_steps=3)
    assert cb.stats.rounds == 3 and cb.stats.skipped_rounds == 0
    assert set(cb._discs.live) == {"raw", "ema"}
    assert cb._budget.sampling > 0 and cb._budget.has_estimate


def test_the_measured_cost_of_a_round_decides_whether_later_rounds_run(tmp_path, no_failed_rounds, monkeypatch):
    """A first round measured as expensive makes the callback skip the next; a cheap one lets it run."""
    from lightning_ldam.callback.budget import OverheadBudget

    real = OverheadBudget.record_round
    for seconds, rounds in ((1e12, 1), (0.0, 2)):
        def fake(self, _seconds, variants, steps, seconds=seconds):
            real(self, seconds or 1e-12, variants, steps)
        monkeypatch.setattr(OverheadBudget, "record_round", fake)
        cb = LDAMCallback(NEURONS, every_n_train_steps=1, every_n_epochs=None, on_fit_end=False,
                          **{**FAST, "max_overhead": 1e6})
        fit(tmp_path / str(rounds), [cb], max_steps=2)
        assert cb.stats.rounds == rounds and cb.stats.skipped_rounds == 2 - rounds


# ---- progress bar ---------------------------------------------------------------------------------------
def _progress_seen(monkeypatch) -> List[Any]:
    seen: List[Any] = []
    real = rounds_module.sample

    def spy(*args, **kwargs):
        settings = sample_settings(kwargs)
        if settings.get("steps") not in (1, 2):  # not the 2-step dry run or the first round's 1-step neuron resolution
            seen.append(settings.get("progress"))
        return real(*args, **kwargs)

    monkeypatch.setattr(rounds_module, "sample", spy)
    return seen


@pytest.mark.parametrize("bar", [True, False])
@pytest.mark.parametrize("terminal", [True, False])
def test_rounds_report_progress_as_a_bar_or_as_log_lines(tmp_path, monkeypatch, bar, terminal):
    """A delayed bar where Lightning shows its own; plain log lines whenever stderr is not a terminal."""
    seen = _progress_seen(monkeypatch)
    monkeypatch.setattr(callback_module, "is_terminal", lambda: terminal)
    cb = LDAMCallback(NEURONS, every_n_train_steps=2, every_n_epochs=None, **FAST)
    fit(tmp_path, [cb], max_steps=2, enable_progress_bar=bar)
    rounds = seen
    assert rounds
    if bar or not terminal:
        assert all(isinstance(p, Progress) and p.delay == callback_module._PROGRESS_AFTER_S for p in rounds)
    else:
        assert all(p is False for p in rounds)


def test_sampler_kwargs_progress_overrides_the_callbacks_choice(tmp_path, monkeypatch):
    seen = _progress_seen(monkeypatch)
    cb = LDAMCallback(NEURONS, every_n_train_steps=2, every_n_epochs=None, max_overhead=None,
                      chains=2, steps=3, reservoir_size=16,
                      sampler_kwargs={"disc_warmup": 1, "progress": True})
    fit(tmp_path, [cb], max_steps=2, enable_progress_bar=False)
    assert seen and all(p is True for p in seen)


# ---- steps per round: half the default once every discriminator is warm ---------------------------------
def _requested_steps(monkeypatch) -> List[Any]:
    """Records the ``steps`` each sampling call asked for, and runs it with 3 steps (fast)."""
    asked: List[Any] = []
    real = rounds_module.sample

    def spy(*args, **kwargs):
        settings = sample_settings(kwargs)
        if settings.get("steps") not in (1, 2):  # not the first batch's 2-step target check
            asked.append((settings.get("steps"), settings.get("discriminator") is not None))
        return real(*args, **{**kwargs, "steps": 3, "disc_warmup": 1})

    monkeypatch.setattr(rounds_module, "sample", spy)
    return asked


def test_rounds_with_warm_discriminators_take_half_the_default_steps(tmp_path, monkeypatch, no_failed_rounds):
    asked = _requested_steps(monkeypatch)
    cb = LDAMCallback(NEURONS, every_n_train_steps=2, every_n_epochs=None, max_overhead=None,
                      chains=2, reservoir_size=16)
    fit(tmp_path, [cb], max_steps=6)
    # step 2: raw and ema with fresh discriminators -> the sampler's default; steps 4, 6: warm -> 256
    assert asked == [(DEFAULT, False), (DEFAULT, False)] + [(WARM_DISC_STEPS, True)] * 4


def test_explicit_steps_are_kept_in_every_round(tmp_path, monkeypatch, no_failed_rounds):
    asked = _requested_steps(monkeypatch)
    cb = LDAMCallback(NEURONS, every_n_train_steps=2, every_n_epochs=None, max_overhead=None,
                      chains=2, steps=7, reservoir_size=16)
    fit(tmp_path, [cb], max_steps=4)
    assert [s for s, _ in asked] == [7, 7, 7, 7]


def test_a_variant_with_a_fresh_discriminator_keeps_the_round_at_the_default(
        tmp_path, monkeypatch, no_failed_rounds):
    """With ema_every_n_steps=2 the EMA joins at step 2 with a fresh D while raw's is warm: both take the
    default that round, so the variants stay step for step comparable."""
    asked = _requested_steps(monkeypatch)
    cb = LDAMCallback(NEURONS, every_n_train_steps=1, every_n_epochs=None, max_overhead=None,
                      chains=2, reservoir_size=16,
                      ema_every_n_steps=2)
    fit(tmp_path, [cb], max_steps=5)
    # steps 1-3: raw only (the EMA holds under 2 updates: steps 2, 4), fresh then warm; step 4: raw warm + ema fresh
    # -> default for both; step 5: both warm -> 256
    assert asked == [(DEFAULT, False), (WARM_DISC_STEPS, True), (WARM_DISC_STEPS, True), (DEFAULT, True),
                     (DEFAULT, False)] + [(WARM_DISC_STEPS, True)] * 2


def test_a_budgeted_round_finds_its_variants_once_and_settles_its_plan_once(tmp_path, no_failed_rounds, monkeypatch):
    found, planned = [], []
    real_find, real_plan = callback_module.find_variants, callback_module.plan_round

    def find(*args, **kwargs):
        found.append(1)
        return real_find(*args, **kwargs)

    def plan(*args, **kwargs):
        planned.append(1)
        return real_plan(*args, **kwargs)

    monkeypatch.setattr(callback_module, "find_variants", find)
    monkeypatch.setattr(callback_module, "plan_round", plan)
    cb = LDAMCallback(NEURONS, every_n_train_steps=1, every_n_epochs=None, **{**FAST, "max_overhead": 1e9})
    fit(tmp_path, [cb], max_steps=3)
    assert cb.stats.rounds == 3 and cb.stats.skipped_rounds == 0
    assert len(found) == 3  # one per round: the budget check, the copies and the plan share it
    assert len(planned) == 1 + 3  # the first batch's dry run, then one plan per round


def _sizes(monkeypatch, per_step: float) -> List[Any]:
    """Records (steps, chains) of each round's sampling calls (3 steps run); one step is 'timed' at ``per_step``."""
    asked: List[Any] = []
    real = rounds_module.sample

    def spy(*args, **kwargs):
        settings = sample_settings(kwargs)
        if settings.get("steps") not in (1, 2):
            asked.append((settings.get("steps"), settings.get("chains")))
        return real(*args, **{**kwargs, "steps": 3, "disc_warmup": 1})

    monkeypatch.setattr(rounds_module, "sample", spy)
    monkeypatch.setattr(callback_module, "time_a_step", lambda plan: per_step)
    return asked


def test_a_first_round_over_ten_epochs_runs_fewer_steps_then_chains_and_says_so(tmp_path, monkeypatch, caplog):
    asked = _sizes(monkeypatch, per_step=1.0)  # 512 steps x 2 variants: ~1024 s against epochs of milliseconds
    cb = LDAMCallback(NEURONS, every_n_train_steps=2, every_n_epochs=None, reservoir_size=16)
    with caplog.at_level("INFO"):
        fit(tmp_path, [cb], max_steps=4)
    assert asked[:2] == [(32, 2), (32, 2)]  # raw and ema: MIN_STEPS, then MIN_CHAINS
    assert all(size == (32, 2) for size in asked)  # the later rounds of the fit keep the fitted size
    said = [r.getMessage() for r in caplog.records if "this round would take" in r.getMessage()]
    assert len(said) == 1 and "≈ 1024 s at 512 steps × 8 chains × 2 variant(s)" in said[0]
    assert "512 -> 32 steps, 8 -> 2 chains" in said[0]
    announced = [r.getMessage() for r in caplog.records if "step 2: sampling" in r.getMessage()]
    assert announced and "≈ 64 s" in announced[0] and "timing it" not in announced[0]


def test_explicit_steps_and_chains_are_never_cut(tmp_path, monkeypatch, caplog):
    asked = _sizes(monkeypatch, per_step=1.0)
    cb = LDAMCallback(NEURONS, every_n_train_steps=2, every_n_epochs=None, reservoir_size=16, steps=40, chains=3)
    with caplog.at_level("INFO"):
        fit(tmp_path, [cb], max_steps=2)
    assert asked == [(40, 3), (40, 3)]
    said = [r.getMessage() for r in caplog.records if "this round would take" in r.getMessage()]
    assert len(said) == 1 and "steps= and chains= are yours" in said[0]


def test_a_cheap_first_round_is_left_as_it_is(tmp_path, monkeypatch, caplog):
    asked = _sizes(monkeypatch, per_step=1e-9)
    cb = LDAMCallback(NEURONS, every_n_train_steps=2, every_n_epochs=None, reservoir_size=16)
    with caplog.at_level("INFO"):
        fit(tmp_path, [cb], max_steps=2)
    assert asked == [(512, 8), (512, 8)]
    assert not [r for r in caplog.records if "this round would take" in r.getMessage()]
