"""``LDAMCallback``: raw vs weight-averaged LDAM samples in TensorBoard while a model trains.

The callback only orchestrates: it snapshots the network (raw weights and averaged copies), keeps a
reservoir of real inputs, runs one round (:mod:`lightning_ldam.engine.rounds`, shared with the CLI) and logs what
comes back. It never changes the training it watches: snapshots are frozen copies, the reservoir and the
sampler draw from private generators, and nothing touches the optimizer, gradients or modes of the live
model, and its compiled code never sees a snapshot. Nothing it does can end the run: a failed round is a warning
counted in ``ldam/failed_rounds``, a batch it cannot keep is skipped and counted in ``ldam/skipped_batches``, and
the first-batch trial fails the run only for an argument the user set.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import time
from typing import TYPE_CHECKING, Any, Callable, Dict, Optional, Tuple

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero as _pl_rank_zero
from torch import nn

from lightning_ldam.callback.budget import OverheadBudget
from lightning_ldam.callback.interrupts import RoundInterrupted, sigterm_interrupts
from lightning_ldam.callback.messages import NOTES, RoundReporter
from lightning_ldam.callback.own_line import own_line
from lightning_ldam.callback.reservoir import Reservoir
from lightning_ldam.callback.round_size import EPOCHS_BOUND, RoundSize, fit_round
from lightning_ldam.callback.round_state import CallbackStats, FitState, RunState
from lightning_ldam.callback.settings import (
    AVERAGING,
    CallbackSettings,
    DataConfig,
    OutputConfig,
    RoundConfig,
    ScheduleConfig,
    WeightsConfig,
    argument_given,
    check_on_first_batch,
    check_on_setup,
)
from lightning_ldam.engine.persistent_chains import PersistentChains, continued_rows
from lightning_ldam.engine.rounds import (
    RoundPlan,
    WarmDiscriminators,
    fixed_spec,
    plan_round,
    prepare_network,
    resolve_targets,
    run_round,
    submodule,
    time_a_step,
)
from lightning_ldam.errors import LDAMArgumentError, TargetNotReached
from lightning_ldam.report.tags import RHAT_BOUND, summarize, unhealthy_units, unmixed_layers
from lightning_ldam.report.writers import is_tensorboard, settings_text, write_round, write_settings
from lightning_ldam.sampling.config import SamplerConfig
from lightning_ldam.sampling.inputs import extract_input
from lightning_ldam.sampling.progress import Progress, is_terminal
from lightning_ldam.sampling.result import SampleResult
from lightning_ldam.sampling.targets import NeuronSpec
from lightning_ldam.weights.checkpoint import STATE_FORMAT
from lightning_ldam.weights.ema import EMA
from lightning_ldam.weights.lightning_averagers import Source, find_variants, is_averager
from lightning_ldam.weights.snapshot import snapshot

__all__ = ["LDAMCallback", "AVERAGING"]

log = logging.getLogger(__name__)
#: Seconds a round runs before its progress (bar or log lines) appears: short rounds stay silent.
_PROGRESS_AFTER_S = 3.0


class LDAMCallbackLogic:
    """Everything the callback does, independent of which Lightning package provides ``Callback``.

    :class:`LDAMCallback` (``lightning.pytorch``) and :class:`lightning_ldam.callback.standalone.LDAMCallback`
    (``pytorch_lightning``) add only the base class and that package's rank-zero messages.
    """

    _rank_zero_info: Callable[[str], None] = staticmethod(log.info)
    _rank_zero_warn: Callable[[str], None] = staticmethod(log.warning)

    if TYPE_CHECKING:  # given by the Callback base each subclass adds
        def _generate_state_key(self, **kwargs: Any) -> str: ...

    def _info(self, message: str) -> None:
        """A rank-zero info line that starts on its own line, never at the end of a progress bar's."""
        with own_line():
            self._rank_zero_info(message)

    def _warn(self, message: str) -> None:
        """A rank-zero warning that starts on its own line."""
        with own_line():
            self._rank_zero_warn(message)

    def __init__(self, neurons: NeuronSpec, *, schedule: Optional[ScheduleConfig] = None,
                 data: Optional[DataConfig] = None, weights: Optional[WeightsConfig] = None,
                 rounds: Optional[RoundConfig] = None, output: Optional[OutputConfig] = None, **options: Any):
        sections = dict(schedule=schedule, data=data, weights=weights, rounds=rounds, output=output)
        self.settings = CallbackSettings.build(neurons, sections, options)
        # the options the user set: only these may be named by an error of the first-batch trial
        self._given = self.settings.given()
        s = self.settings
        self._reservoir = Reservoir(s.data.reservoir_size, seed=s.rounds.seed)
        self._budget = None if s.schedule.max_overhead is None else OverheadBudget(s.schedule.max_overhead)
        self._ema: Optional[EMA] = None
        self._pending_ema_state: Optional[Dict[str, Any]] = None
        self._discs = WarmDiscriminators()
        self._chains = PersistentChains(self.settings.rounds.redraw) if self.settings.rounds.persistent else None
        self._report = RoundReporter(self._info, self._warn)
        self._run, self._fit = RunState(), FitState()
        self._averagers: list = []  # Lightning's averaging callbacks, found in setup
        self._png_dir: Optional[str] = None  # where PNGs go without an image logger, found in setup

    @property
    def stats(self) -> CallbackStats:
        """What the callback has done so far: rounds, skips, failures, inputs kept (read-only)."""
        run, reservoir = self._run, self._reservoir
        return CallbackStats(rounds=run.rounds, skipped_rounds=run.skipped_rounds, failed_rounds=run.failed_rounds,
                             skipped_batches=run.skipped_batches, nonfinite_inputs=reservoir.nonfinite_skipped,
                             inputs_seen=reservoir.seen, inputs_kept=len(reservoir),
                             ema_updates=None if self._ema is None else int(self._ema.n_averaged),
                             last_sampled_step=run.last_sampled_step, neurons=tuple(run.neurons))

    # ---- identity and schedule ---------------------------------------------------------------------
    @property
    def state_key(self) -> str:
        s = self.settings  # an identity only: the settings themselves are in the state (state_dict()["settings"])
        # key(): the same text in every process (a set of neurons iterates in an order set by the hash seed)
        return self._generate_state_key(neurons=s.request.key(), module=s.data.module, seed=s.rounds.seed,
                                        every_n_epochs=s.schedule.every_n_epochs,
                                        every_n_train_steps=s.schedule.every_n_train_steps)

    def should_sample(self, global_step: Optional[int] = None, epoch: Optional[int] = None) -> bool:
        """Whether a round is due: after optimizer step ``global_step`` or at the end of epoch ``epoch``.

        Pure and overridable; the step hook passes ``global_step``, the epoch hook passes ``epoch``.
        """
        s = self.settings
        if global_step is not None and s.schedule.every_n_train_steps:
            return global_step > 0 and global_step % s.schedule.every_n_train_steps == 0
        if epoch is not None and s.schedule.every_n_epochs:
            return (epoch + 1) % s.schedule.every_n_epochs == 0
        return False

    # ---- setup ---------------------------------------------------------------------------------------
    def network(self, pl_module: nn.Module) -> nn.Module:
        """The module LDAM runs: ``pl_module`` or its ``module`` submodule."""
        if self.settings.data.module is None and _forward_is_lightnings(type(pl_module)):
            names = [n for n, _ in pl_module.named_children()]
            raise LDAMArgumentError("module", f"{type(pl_module).__name__} defines no forward(), so LDAM cannot run "
                                              f"it; pass module=<name of the network submodule> (children: {names})")
        return submodule(pl_module, self.settings.data.module)

    def setup(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule", stage: str) -> None:
        if stage != "fit" and not (stage == "validate" and self.settings.schedule.during_validation):
            return
        check_on_setup(type(trainer.strategy).__name__, self.network(pl_module), self.settings)
        # Trainer.callbacks is set by Lightning's callback connector: its class does not declare it
        self._averagers = ([cb for cb in trainer.callbacks if is_averager(cb)]  # type: ignore[attr-defined]
                           if self.settings.weights.averaging == "auto" else [])
        # trainer.log_dir broadcasts under DDP: read it here, where every rank runs, never in rank-0-only code.
        self._png_dir = os.path.join(trainer.log_dir or trainer.default_root_dir, "ldam")
        # Lightning's WeightAveraging copies the averaged weights into the model in its on_train_end: an
        # averager listed before this callback leaves no raw weights for the fit-end round.
        order = {id(cb): i for i, cb in enumerate(trainer.callbacks)}  # type: ignore[attr-defined]
        self._fit.raw_gone_at_end = any(order.get(id(cb), -1) < order.get(id(self), -1) for cb in self._averagers)
        # said here, where the order is known, not at fit end
        if self._fit.raw_gone_at_end and self.settings.schedule.on_fit_end:
            first = next(cb for cb in self._averagers if order.get(id(cb), -1) < order.get(id(self), -1))
            self._report.once("order", averager=type(first).__name__)

    def on_fit_start(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule") -> None:
        if self._budget is not None:
            self._budget.start()
        self._fit = FitState(raw_gone_at_end=self._fit.raw_gone_at_end)  # setup, which found it, runs first
        s = self.settings
        w = s.weights
        if (w.averaging == "ema" or (w.averaging == "auto" and not self._averagers)) and self._ema is None:
            self._ema = EMA(self.network(pl_module), decay=w.ema_decay, every_n_steps=w.ema_every_n_steps,
                            device=w.ema_device)
            if self._pending_ema_state is not None:
                self._ema.load_state_dict(self._pending_ema_state)
                self._pending_ema_state = None
        if trainer.is_global_zero and any(is_tensorboard(lg) for lg in trainer.loggers):
            self._info(NOTES["samples_per_plugin"][1])  # every fit (not once per run)

    # ---- hooks ---------------------------------------------------------------------------------------
    def on_train_batch_start(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule", batch: Any,
                             batch_idx: int) -> None:
        if not self._run.checked:  # the first batch, before its optimizer step: every argument is checked by now
            self._fit.collected_early = True
            if self._collect(batch, first=True):
                self._dry_run(pl_module)
        self._fit.batch_started = time.perf_counter()  # the training batch's own time: the first round's bound

    def on_train_batch_end(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule", outputs: Any,
                           batch: Any, batch_idx: int) -> None:
        started, fit = time.perf_counter(), self._fit
        if fit.batch_started is not None:
            fit.batch_seconds, fit.batches = fit.batch_seconds + started - fit.batch_started, fit.batches + 1
            fit.batch_started = None
        if not fit.collected_early:
            self._collect(batch)
        fit.collected_early = False  # the first batch went in at its start (the dry run needed it)
        step = trainer.global_step
        if self._ema is not None and step != self._run.last_ema_step:
            self._update_ema(pl_module, step)
        if self._budget is not None:  # the per-batch work (reservoir, own EMA) is overhead too
            self._budget.add_sampling(time.perf_counter() - started)
        if self.should_sample(global_step=step) and step != self._run.last_sampled_step:
            self._round(trainer, pl_module)

    def on_train_epoch_end(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule") -> None:
        if self.should_sample(epoch=trainer.current_epoch) and trainer.global_step != self._run.last_sampled_step:
            self._round(trainer, pl_module)

    def on_train_end(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule") -> None:
        # The fit-end round: on_train_end is the last hook where the module can still hold its raw weights.
        self._fit.at_train_end = True
        step = trainer.global_step
        if self.settings.schedule.on_fit_end and (step != self._run.last_sampled_step
                                                  or step == self._fit.last_skipped_step):
            self._round(trainer, pl_module, budgeted=False)

    def on_validation_batch_end(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule", outputs: Any,
                                batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        # Under trainer.validate() no training batch comes: the validation inputs feed the reservoir.
        if not self.settings.schedule.during_validation or trainer.sanity_checking or _fitting(trainer):
            return
        if self._collect(batch, first=not self._run.checked) and not self._run.checked:
            self._dry_run(pl_module)

    def on_validation_end(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule") -> None:
        # on_validation_end, not on_validation_epoch_end: by now every WeightAveraging callback has swapped
        # the raw weights back into the module, whatever the callback order. Runs under no_grad/inference_mode.
        if not self.settings.schedule.during_validation or trainer.sanity_checking:
            return
        if not _fitting(trainer) or trainer.global_step != self._run.last_sampled_step:
            self._round(trainer, pl_module)

    # ---- the first batch -------------------------------------------------------------------------------
    def _collect(self, batch: Any, first: bool = False) -> bool:
        """Offer a batch's inputs to the reservoir (rows with NaN/Inf are skipped and counted). A batch that cannot
        be read or stored is skipped and counted (``ldam/skipped_batches``), with one warning per cause; only on the
        first batch does an error about an argument the user set end the run (before any optimizer step)."""
        try:
            if self._reservoir.add(extract_input(batch, self.settings.data.input_key)):
                self._report.once("nonfinite_inputs")
            return True
        except LDAMArgumentError as err:
            if first and argument_given(err.argument, self._given, self.settings):
                raise
            self._skip_batch(err)
        except Exception as err:  # per-batch work never ends the run
            self._skip_batch(err)
        return False

    def _skip_batch(self, err: BaseException) -> None:
        self._run.skipped_batches += 1
        self._report.once("skipped_batch", cause=(type(err).__name__, getattr(err, "argument", None)),
                          error=f"{type(err).__name__}: {err}")

    def _update_ema(self, pl_module: nn.Module, step: int) -> None:
        try:
            assert self._ema is not None  # called with an own EMA only
            self._ema.update(self.network(pl_module), step)
            self._run.last_ema_step = step
        except Exception as err:  # the 'ema' variant keeps its last weights; training goes on
            self._report.once("ema_failed", cause=type(err).__name__, step=step, error=f"{type(err).__name__}: {err}")

    def _dry_run(self, pl_module: nn.Module) -> None:
        """Every argument checked on the first batch, before the first optimizer step (``callback/settings.py``).

        Only an argument the user set can fail the run here. A limit of the model instead gets its fallback and one
        warning: a target that noise-started chains never reach starts chains from data; anything else, a warning,
        and the rounds are tried (a failed round is a warning too)."""
        s = self.settings
        seen = self._reservoir.input_shape() if len(self._reservoir) else None
        if seen is None and (s.data.input_shape is None or s.data.value_range is None):
            return  # every input held NaN/Inf: the next batch tries again
        try:
            net = snapshot(self.network(pl_module), self._device(pl_module))
            try:
                check_on_first_batch(net, self._plan({"raw": net}), s, seen)
            except TargetNotReached as err:
                if "init" in s.rounds.sampler_kwargs or seen is None:
                    raise
                self._run.fallbacks["init"] = "data"
                check_on_first_batch(net, self._plan({"raw": net}), s, seen)
                self._report.once("init_data", layers=err.layers)
        except LDAMArgumentError as err:
            if argument_given(err.argument, self._given, s):
                raise
            self._run.fallbacks.pop("init", None)
            self._report.once("model_limit", error=str(err))
        except Exception as err:  # not a bad argument: let the rounds try, and say so
            self._report.once("dry_run", error=f"{type(err).__name__}: {err}")
        self._run.checked = True

    # ---- one round -----------------------------------------------------------------------------------
    def variants(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule") -> Dict[str, nn.Module]:
        """Frozen copies to sample: ``raw`` and whichever averaged copies have been updated."""
        device, real = self._device(pl_module), self._real()
        sources = self._variant_sources(trainer, pl_module)
        return {name: prepare_network(snapshot(module, device), refresh, real, self.settings.data.normalize)
                for name, (module, refresh, _) in sources.items()}

    def _variant_sources(self, trainer, pl_module) -> Dict[str, Source]:
        """``{name: (uncopied network, refresh BN, count averaged)}``, found once per round (its budget check, copies
        and counts share it)."""
        if self._fit.round_sources is not None:
            return self._fit.round_sources
        return find_variants(self.network, pl_module, self._averagers, self._ema, trainer,
                             self._fit.at_train_end and self._fit.raw_gone_at_end, self._report.info_once)

    def _plan(self, nets: Dict[str, nn.Module]) -> RoundPlan:
        """The round's settings for these networks, each with its warm discriminator if it has one."""
        s = self.settings
        variants = [self._discs.variant(n, net) for n, net in nets.items()]
        device = s.rounds.sample_device or (_model_device(variants[0].network) if variants else torch.device("cpu"))
        shape = s.data.input_shape or self._reservoir.input_shape()
        disc_weight = s.rounds.disc_weight
        if disc_weight is None and len(shape) != 3:  # D and the smoothness prior need images: λ = 0 on others
            disc_weight = 0.0
            self._report.once("not_images", shape=tuple(shape))
        settings = {**s.rounds.sampler_kwargs, **self._run.fallbacks}
        progress = settings.pop("progress", None)
        config = SamplerConfig().with_settings(**settings, chains=s.rounds.chains, seed=s.rounds.seed, device=device,
                                               value_range=s.data.value_range or self._reservoir.value_range(),
                                               normalize=s.data.normalize, disc_weight=disc_weight)
        return plan_round(variants, s.neurons, input_shape=shape, real=self._real(), config=config,
                          steps=s.rounds.steps, progress=progress)

    def _round(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule", budgeted: bool = True) -> None:
        """One round inside one failure boundary: planning, sampling, rendering, logging, writing files."""
        if trainer.sanity_checking:
            return
        run, s = self._run, self.settings
        run.last_sampled_step = step = trainer.global_step
        if len(self._reservoir) == 0 and (s.data.input_shape is None or s.data.value_range is None):
            self._report.once("empty")
            return
        started, plan, done = time.perf_counter(), None, False
        try:
            sources = self._fit.round_sources = self._variant_sources(trainer, pl_module)
            plan = self._plan({n: m for n, (m, _, _) in sources.items()})  # settled once, on the originals
            if budgeted and self._over_budget(trainer, plan):
                run.skipped_rounds, self._fit.last_skipped_step = run.skipped_rounds + 1, step
                return
            plan = self._round_plan(trainer, pl_module, plan, budgeted)
            with sigterm_interrupts():
                results = self._sample(trainer, plan)
            if trainer.is_global_zero and results:
                self._log(trainer, results, time.perf_counter() - started)
            done = True
        except RoundInterrupted:  # the trainer stops at its next batch (Lightning's handler ran): not a failure
            self._report.info(f"LDAMCallback: step {step}: SIGTERM received, the round was stopped")
        except Exception as err:  # a failed round must never end the user's training run
            run.failed_rounds += 1
            self._report.failure(step, err)
            self._write_counts(trainer, step)
        finally:
            self._fit.round_sources = None
            seconds = time.perf_counter() - started
            if self._budget is not None:
                self._budget.add_sampling(seconds)
                if done:
                    assert plan is not None  # planned before the round was done
                    self._budget.record_round(seconds, len(plan.variants), plan.steps)
        if done:
            run.rounds, self._fit.rounds = run.rounds + 1, self._fit.rounds + 1

    def _round_plan(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule", plan: RoundPlan,
                    budgeted: bool) -> RoundPlan:
        """The due round's plan: the variants' frozen copies, the fixed neurons, this fit's size and the kept
        chains; the round is announced."""
        copies = self.variants(trainer, pl_module).values()
        plan = dataclasses.replace(plan, variants=[dataclasses.replace(v, network=copy)
                                                   for v, copy in zip(plan.variants, copies)])
        plan = dataclasses.replace(plan, neurons=self._fix_neurons(trainer, plan))
        if budgeted and self._budget is not None and self._fit.rounds == 0 and _fitting(trainer):
            self._fit.size = self._fit_first_round(trainer, plan)
        plan, continuing = self._continue_chains(trainer, self._apply_size(plan))
        self._report.announce(trainer.global_step, plan.describe(len(self._run.neurons) or None) + continuing,
                              len(plan.variants), plan.steps)
        return plan

    def _fit_first_round(self, trainer: "pl.Trainer", plan: RoundPlan) -> Optional[RoundSize]:
        """Time one step of the fit's first round; cut the steps, then the chains, the user did not set when the round
        would take over :data:`~lightning_ldam.callback.round_size.EPOCHS_BOUND` epochs of training (one line says
        so)."""
        try:
            per_step = time_a_step(plan)
        except Exception as err:  # the round itself will say what is wrong, inside the failure boundary
            log.debug("LDAMCallback: timing a step failed: %s", err)
            return None
        self._report.timed(per_step)
        seconds, count = self._fit.batch_seconds, self._fit.batches
        batches = getattr(trainer, "num_training_batches", float("inf"))
        bound = EPOCHS_BOUND * seconds / count * batches if count and batches not in (None, float("inf")) else None
        size = fit_round(per_step, plan.steps, plan.chains, len(plan.variants), bound,
                         steps_given=self.settings.rounds.steps is not None, chains_given="chains" in self._given)
        if size.message is not None:
            self._report.info(f"LDAMCallback: step {trainer.global_step}: this round would take {size.message}")
        return size

    def _apply_size(self, plan: RoundPlan) -> RoundPlan:
        """This fit's fitted size on a round's plan (later rounds keep it: rounds stay comparable)."""
        size = self._fit.size
        if size is None:
            return plan
        steps = min(plan.steps, size.steps) if self.settings.rounds.steps is None else plan.steps
        chains = size.chains if "chains" not in self._given else plan.chains
        return plan.with_settings(steps=steps, chains=chains)

    def _continue_chains(self, trainer: "pl.Trainer", plan: RoundPlan) -> Tuple[RoundPlan, str]:
        """Start each variant from its kept chains (``redraw`` of them re-drawn, the same rows and states for every
        variant); a round that continues any draws its noise with ``seed + round`` (the same for every variant),
        so a continued chain never replays the noise of its previous rounds. Returns the plan and what the round's
        announcement says of it (``""``: every chain starts afresh)."""
        if self._chains is None or not plan.variants:
            return plan, ""
        rank, world, rounds = trainer.global_rank, trainer.world_size, self._run.rounds
        shape = (len(self._run.neurons[rank::world]), plan.chains, *plan.input_shape)
        held = continued_rows(plan.chains, self._chains.redraw, rounds)
        variants = []
        for variant in plan.variants:
            init = self._chains.starts(variant.name, shape, rounds, self.settings.rounds.seed,
                                       plan.config.inputs.value_range, plan.config.chains.init, plan.real,
                                       (rank, world))
            variants.append(variant if init is None else dataclasses.replace(variant, init=init, continued=held))
        if all(v.init is None for v in variants):
            return plan, ""
        plan = dataclasses.replace(plan, variants=variants).with_settings(seed=self.settings.rounds.seed + rounds)
        return plan, f", continuing the last round's chains ({int((~held).sum())} of {plan.chains} per neuron re-drawn)"

    def _fix_neurons(self, trainer: "pl.Trainer", plan: RoundPlan) -> NeuronSpec:
        """The neurons of every round: resolved at the first round on the raw weights and the reservoir (where
        ``"layer:top8"`` ranks units), then fixed, so variants and rounds compare; rank 0's under DDP. Returned as a
        spec that keeps the per-layer settings."""
        run = self._run
        if not run.neurons:
            fixed = resolve_targets(plan.variants[0].network, plan) if plan.variants else []
            run.neurons = list(trainer.strategy.broadcast(fixed, src=0) if trainer.world_size > 1 else fixed)
        return fixed_spec(plan.variants[0].network, self.settings.neurons, run.neurons) if plan.variants else []

    def _over_budget(self, trainer: "pl.Trainer", plan: RoundPlan) -> bool:
        """Whether the due round would take sampling above ``max_overhead``. The first round of a fit always runs
        (its cost is measured, not guessed); rank 0 decides and broadcasts, so every rank skips the same rounds."""
        if self._budget is None or self._fit.rounds == 0 or not _fitting(trainer):
            return False
        skip = trainer.is_global_zero and not self._budget.admits(len(plan.variants), plan.steps)
        if trainer.world_size > 1:
            skip = bool(trainer.strategy.broadcast(skip, src=0))
        if skip:
            self._report.once("budget", fraction=self._budget.fraction, step=trainer.global_step)
        return skip

    def _sample(self, trainer: "pl.Trainer", plan: RoundPlan) -> Dict[str, SampleResult]:
        """Every variant (under DDP each rank samples a shard of the neurons and rank 0 gathers); keeps the Ds."""
        show = trainer.is_global_zero and (getattr(trainer, "progress_bar_callback", None) is not None
                                           or not is_terminal())
        progress = Progress(delay=_PROGRESS_AFTER_S, write=self._info) if show else False
        if plan.progress is not None:  # the user's, through sampler_kwargs
            progress = plan.progress
        results, discs, states = run_round(plan, self._run.neurons, trainer.global_rank, trainer.world_size, progress,
                                           self._info, self._run.previous)
        self._discs.keep(discs)
        if self._chains is not None:
            for name, images in states.items():
                self._chains.keep(name, images, (trainer.global_rank, trainer.world_size))
        return results

    # ---- logging -------------------------------------------------------------------------------------
    def _log(self, trainer: "pl.Trainer", results: Dict[str, SampleResult], seconds: float) -> None:
        s = self.settings
        images, scalars = summarize(results, s.output.upscale, real=self._real(), previous=self._run.previous,
                                    labels=s.labeller(), aliases=s.output.layer_aliases)
        scalars.update(self._counts())
        # how many updates or snapshots each averaged variant holds (an average of 2 is not one of 200)
        scalars.update({f"ldam/{name}/averaged": float(count)
                        for name, (_, _, count) in (self._fit.round_sources or {}).items() if name != "raw"})
        self._write(trainer, images, scalars, trainer.global_step)
        if self._fit.rounds == 0:  # once per fit: what the rounds of this fit sample with
            try:
                first = next(iter(results.values()))
                write_settings(trainer.loggers, settings_text(first.config, list(results)), trainer.global_step)
            except Exception as err:  # the round's own images and scalars are written: no failed round for this
                log.debug("LDAMCallback: writing the settings text: %s", err)
        self._report.done(trainer.global_step, results, seconds)
        self._report.health(trainer.global_step, unhealthy_units(results))
        for layer, (bad, total, rhat, ess) in unmixed_layers(results).items():
            self._report.once("unmixed", cause=layer, step=trainer.global_step, layer=layer, bad=bad, total=total,
                              rhat=rhat, ess=ess, bound=RHAT_BOUND)
        self._run.previous = {name: res.images for name, res in results.items()}  # for the next round's drift
        self.on_round_end(trainer, results, scalars)

    def on_round_end(self, trainer: "pl.Trainer", results: Dict[str, SampleResult], scalars: Dict[str, float]) -> None:
        """Called on rank 0 after each logged round with every variant's result and the scalars logged; a no-op
        to override (e.g. to score the samples with your own classifier). Exceptions count as a failed round."""

    def _counts(self) -> Dict[str, float]:
        return self.stats.as_scalars(budgeted=self._budget is not None)

    def _write_counts(self, trainer: "pl.Trainer", step: int) -> None:
        """After a failed round: its counts alone, so ``ldam/failed_rounds`` reaches the loggers (best effort)."""
        if not trainer.is_global_zero:
            return
        try:
            write_round(trainer.loggers, {}, self._counts(), step, self._png_dir or trainer.default_root_dir)
        except Exception as err:  # the disk may still be full: the warning about the round has been said
            log.debug("LDAMCallback: writing the counts after a failed round: %s", err)

    def _write(self, trainer: "pl.Trainer", images: Dict[str, torch.Tensor], scalars: Dict[str, float],
               step: int) -> None:
        out = self._png_dir or os.path.join(trainer.default_root_dir, "ldam")
        if write_round(trainer.loggers, images, scalars, step, out):
            self._report.once("png", out=out)

    def _real(self) -> Optional[torch.Tensor]:
        return self._reservoir.images if len(self._reservoir) else None

    def _device(self, pl_module: nn.Module) -> torch.device:
        return self.settings.rounds.sample_device or _model_device(pl_module)

    # ---- state ---------------------------------------------------------------------------------------
    def state_dict(self) -> Dict[str, Any]:
        return {"format": STATE_FORMAT, **self._run.state_dict(),
                "ema": self._ema.state_dict() if self._ema is not None else self._pending_ema_state,
                "discriminators": self._discs.state_dict(), "reservoir": self._reservoir.state_dict(),
                "settings": self.settings.as_state(),
                "chains": self._chains.state_dict() if self._chains is not None else None}

    def on_load_checkpoint(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule",
                           checkpoint: Dict[str, Any]) -> None:
        """Before Lightning restores the callbacks' states: a checkpoint whose LDAM state sits under another key
        (other neurons, seed, module or schedule) resumes this callback fresh, and says so."""
        states = checkpoint.get("callbacks") or {}
        if self.state_key in states:
            return
        others = [k for k, v in states.items() if isinstance(v, dict) and v.get("format") == STATE_FORMAT]
        mine = {getattr(cb, "state_key", None) for cb in getattr(trainer, "callbacks", [])}
        others = [k for k in others if k not in mine]
        if others:
            self._report.once("foreign_state", keys=others, mine=self.state_key)

    def load_state_dict(self, state_dict: Dict[str, Any]) -> None:
        missing = [k for k in (*RunState.SAVED, "ema", "discriminators", "reservoir", "chains")
                   if k not in state_dict]
        if state_dict.get("format") != STATE_FORMAT or missing:
            raise ValueError(f"LDAMCallback: the checkpoint's LDAM state was not written by this version of "
                             f"lightning_ldam (format {state_dict.get('format')!r}, missing {missing}); resume "
                             f"without it (a fresh LDAMCallback state) or with the version that wrote it")
        self._run.load_state_dict(state_dict)
        self._reservoir.load_state_dict(state_dict["reservoir"])
        self._discs.load_state_dict(state_dict["discriminators"])
        if self._chains is not None:
            self._chains.load_state_dict(state_dict["chains"])
        if state_dict["ema"] is not None:
            if self._ema is not None:
                self._ema.load_state_dict(state_dict["ema"])
            else:
                self._pending_ema_state = state_dict["ema"]


class LDAMCallback(LDAMCallbackLogic, Callback):
    """Sample what chosen neurons respond to, for raw and averaged weights, and log it to TensorBoard.

    Args:
        neurons: which neurons (paths relative to the network that runs), e.g. ``"features.3:0-7"``,
            ``["conv1:0-3", "fc:all"]``, ``"fc:top8"`` or, with per-layer settings,
            ``{"conv1": {"units": "top4", "disc_weight": 0.0}}`` (see :mod:`lightning_ldam.sampling.targets`). Rules are
            resolved at the first round (on the raw weights and the reservoir) and fixed from then on.
        schedule: when rounds run (:class:`~lightning_ldam.callback.settings.ScheduleConfig`).
        data: the network's inputs and the real inputs kept (``DataConfig``).
        weights: the averaged variants (``WeightsConfig``).
        rounds: what a round samples (``RoundConfig``).
        output: how rounds are shown (``OutputConfig``). A section not given takes every default.
        **options: any option by name, over the sections:

            - when: ``every_n_epochs`` (1; ``None``/0: off), ``every_n_train_steps`` (off), ``on_fit_end`` (``True``:
              one round when fit ends, always run), ``during_validation`` (also at the end of every validation run),
              ``max_overhead`` (0.05: a due round that would take sampling above this share of the training time is
              skipped and counted in ``ldam/skipped_rounds``; the first round of a fit and the fit-end round always
              run; ``None``: every due round runs);
            - data: ``input_shape`` and ``value_range`` (default: from the training batches), ``normalize``
              (``(mean, std)`` when the network expects normalised inputs of pixel-space data), ``input_key`` (an int,
              a str or a callable that reads the inputs from a batch), ``reservoir_size`` (256 real inputs kept),
              ``module`` (the submodule to run, e.g. ``"net"``);
            - weights: ``averaging`` (``"auto"``: Lightning's ``WeightAveraging``/``EMAWeightAveraging``/
              ``StochasticWeightAveraging`` if the trainer has one, else an own EMA; ``"ema"``; ``None``: raw only),
              ``ema_decay`` (0.999), ``ema_every_n_steps`` (1), ``ema_device``;
            - rounds: ``chains`` (8), ``steps`` (the sampler's while a discriminator is fresh, 256 once every
              variant's is warm), ``disc_weight`` (λ), ``seed`` (every variant shares its starts and noise),
              ``sample_device``, ``persistent`` (chains continue from round to round), ``redraw`` (0.25 of them
              restarted every round), ``sampler_kwargs`` (any other :func:`lightning_ldam.sample` setting);
            - output: ``upscale`` (tiles at least 56 px high by default), ``labels`` (``{layer: [names]}`` or a
              callable ``(layer, index) -> str``), ``layer_aliases`` (``{layer: name}`` used in the tags).

    The checked options are ``cb.settings`` (a :class:`~lightning_ldam.callback.settings.CallbackSettings`); what the
    callback has done is ``cb.stats``; :meth:`on_round_end` is a hook for subclasses that want each round's results.

    Example::

        >>> cb = LDAMCallback("classifier.4:all", every_n_epochs=1, chains=8)
        >>> cb.should_sample(epoch=0), cb.should_sample(global_step=10)
        (True, False)
    """

    _rank_zero_info = staticmethod(_pl_rank_zero.rank_zero_info)
    _rank_zero_warn = staticmethod(_pl_rank_zero.rank_zero_warn)


def _forward_is_lightnings(cls: type) -> bool:
    """True when ``forward`` comes from (pytorch_)lightning's LightningModule, i.e. the user wrote none."""
    owner = next(c for c in cls.__mro__ if "forward" in vars(c))
    return owner.__module__.startswith(("lightning.pytorch", "pytorch_lightning")) or owner is nn.Module


def _fitting(trainer) -> bool:
    fn = getattr(getattr(trainer, "state", None), "fn", None)
    return getattr(fn, "value", fn) == "fit"


def _model_device(module: nn.Module) -> torch.device:
    for t in module.parameters():
        return t.device
    return torch.device("cpu")
