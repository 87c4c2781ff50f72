"""``LDAMCallback``: raw vs weight-averaged LDAM samples in TensorBoard while a model trains.

The callback only orchestrates: it snapshots the network (raw weights and averaged copies), keeps a
reservoir of real inputs, calls :func:`lightning_ldam.sample` and logs what comes back. It never
changes the training it watches: snapshots are frozen copies, the reservoir and the sampler draw from
private generators, and nothing touches the optimizer, gradients or modes of the live model.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import torch
from torch import nn

import lightning.pytorch as pl
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero as _pl_rank_zero

from lightning_ldam.errors import LDAMArgumentError
from lightning_ldam import _validation as V
from lightning_ldam.averaging import EMA, has_batchnorm, refresh_batchnorm
from lightning_ldam.budget import OverheadBudget
from lightning_ldam.discriminator import restore_discriminator
from lightning_ldam.inputs import InputKey, extract_input
from lightning_ldam.reservoir import Reservoir
from lightning_ldam.result import SampleResult, merge_shards
from lightning_ldam.sampler import WARM_DISC_STEPS, LangevinConfig, sample
from lightning_ldam.snapshot import snapshot
from lightning_ldam.summaries import summarize, write_tensorboard
from lightning_ldam.targets import NeuronSpec, find_layer, parse_neurons

__all__ = ["LDAMCallback"]

#: ``lightning_ldam.sample`` keywords that may go through ``sampler_kwargs`` (the rest are callback arguments).
_SAMPLER_EXTRA_KWARGS = frozenset({
    "method", "burn_in", "step_size", "burn_in_boost", "temperature", "scale", "adapt_disc", "smoothness", "noise",
    "precondition", "schedule", "spatial", "init", "disc_lr", "disc_every", "disc_steps", "disc_warmup",
    "autocast_dtype", "channels_last", "cuda_graph", "progress"})

log = logging.getLogger(__name__)
AVERAGING = ("auto", "ema", None)
#: Seconds a round runs before its progress bar appears (short rounds stay silent).
_PROGRESS_AFTER_S = 3.0
#: Default steps of a round whose variants all have a warm (earlier rounds') discriminator.
_WARM_D_STEPS = WARM_DISC_STEPS
#: Langevin steps of the cost probe that precedes the first budgeted round (step 0 is not timed).
_PROBE_STEPS = 4


class LDAMCallbackLogic:
    """Everything the callback does, independent of which Lightning package provides ``Callback``.

    :class:`LDAMCallback` (``lightning.pytorch``) and :class:`lightning_ldam.standalone.LDAMCallback`
    (``pytorch_lightning``) add only the base class and that package's rank-zero messages.
    """

    _rank_zero_info: Callable[[str], None] = staticmethod(log.info)
    _rank_zero_warn: Callable[[str], None] = staticmethod(log.warning)

    def __init__(self, neurons: NeuronSpec, *, every_n_epochs: Optional[int] = 1,
                 every_n_train_steps: Optional[int] = None, on_fit_end: bool = False,
                 during_validation: bool = False, max_overhead: Optional[float] = 0.05, chains: int = 8,
                 steps: Optional[int] = None, input_shape: Optional[Sequence[int]] = None,
                 value_range: Optional[Tuple[float, float]] = None, normalize=None,
                 disc_weight: Optional[float] = None, reservoir_size: int = 256, input_key: InputKey = None,
                 module: Optional[str] = None, averaging: Optional[str] = "auto", ema_decay: float = 0.999,
                 ema_every_n_steps: int = 1, ema_device: Optional[Union[str, torch.device]] = None,
                 sample_device: Optional[Union[str, torch.device]] = None, seed: int = 0,
                 upscale: Optional[int] = None, sampler_kwargs: Optional[Dict[str, Any]] = None):
        parse_neurons(neurons)  # malformed specs fail here, before any training
        for name, value in (("every_n_epochs", every_n_epochs), ("every_n_train_steps", every_n_train_steps)):
            if value is not None:
                V.check_positive(name, value, integer=True, allow_zero=True)
        if not (every_n_epochs or every_n_train_steps or on_fit_end or during_validation):
            raise LDAMArgumentError("every_n_epochs/every_n_train_steps/on_fit_end/during_validation",
                f"every schedule is "
                             f"off (every_n_epochs={every_n_epochs!r}, every_n_train_steps={every_n_train_steps!r}, "
                             f"on_fit_end={on_fit_end!r}, during_validation={during_validation!r}); set at least one")
        for name, value in (("on_fit_end", on_fit_end), ("during_validation", during_validation)):
            if not isinstance(value, bool):
                raise LDAMArgumentError(name, f"expected True or False, got {value!r}")
        if max_overhead is not None:
            V.check_positive("max_overhead", max_overhead)
        V.check_positive("chains", chains, integer=True)
        if steps is not None:
            V.check_positive("steps", steps, integer=True)
        if input_shape is not None:
            input_shape = V.check_input_shape(input_shape)
        if value_range is not None:
            value_range = V.check_value_range(value_range)
        V.check_positive("reservoir_size", reservoir_size, integer=True)
        V.check_choice("averaging", averaging, AVERAGING)
        V.check_decay("ema_decay", ema_decay)
        V.check_positive("ema_every_n_steps", ema_every_n_steps, integer=True)
        if module is not None and (not isinstance(module, str) or not module):
            raise LDAMArgumentError("module", f"expected a dotted attribute path such as 'net', got {module!r}")
        if input_key is not None and not (callable(input_key) or isinstance(input_key, (int, str))):
            raise LDAMArgumentError("input_key", f"expected None, an int, a str or a callable, got {input_key!r}")
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise LDAMArgumentError("seed", f"expected an int, got {seed!r}")
        if upscale is not None:
            V.check_positive("upscale", upscale, integer=True)
        if disc_weight is not None:
            V.check_positive("disc_weight", disc_weight, allow_zero=True)
        if normalize is not None:
            V.check_normalize(normalize, input_shape[0] if input_shape else V.normalize_channels(normalize))
        unknown = sorted(set(sampler_kwargs or {}) - _SAMPLER_EXTRA_KWARGS)
        if unknown:
            raise LDAMArgumentError("sampler_kwargs",
                f"unknown keys {unknown}; accepted: {sorted(_SAMPLER_EXTRA_KWARGS)} "
                             f"(the other lightning_ldam.sample arguments are the callback's own)")
        self.neurons = neurons
        self.every_n_epochs = every_n_epochs or 0
        self.every_n_train_steps = every_n_train_steps or 0
        self.on_fit_end_enabled = on_fit_end
        self.during_validation = during_validation
        self.max_overhead = None if max_overhead is None else float(max_overhead)
        self.chains = chains
        self.steps = steps
        self.input_shape = input_shape
        self.value_range = value_range
        self.normalize = normalize
        self.disc_weight = disc_weight
        self.input_key = input_key
        self.module = module
        self.averaging = averaging
        self.ema_decay = float(ema_decay)
        self.ema_every_n_steps = ema_every_n_steps
        self.ema_device = ema_device
        self.sample_device = sample_device
        self.seed = seed
        self.upscale = upscale
        self.sampler_kwargs = dict(sampler_kwargs or {})
        self._reservoir = Reservoir(reservoir_size, seed=seed)
        self._ema: Optional[EMA] = None
        self._pending_ema_state: Optional[Dict[str, Any]] = None
        self._discriminators: Dict[str, nn.Module] = {}
        self._pending_disc_state: Dict[str, Dict[str, Any]] = {}
        self._rounds = 0
        self._last_sampled_step = -1
        self._last_ema_step = -1
        self._averagers: List[Callback] = []
        self._warned: set = set()
        self._checked = False
        self._resolved: List[Tuple[str, int]] = []
        self._png_dir: Optional[str] = None
        self._raw_gone_at_end: List[str] = []
        self._at_train_end = False
        self._budget = None if max_overhead is None else OverheadBudget(max_overhead)
        self._fit_start_step = 0
        self._fit_start_counts = (0, 0)  # (rounds, skipped rounds) when this fit started: a resume keeps counting
        self._train_batch = 0  # inputs per training batch (the budget scales its lower bound with it)
        self._skipped = 0
        self._last_skipped_step = -1  # a step whose due round the budget skipped (the fit-end round still runs)

    # ---- identity and schedule ---------------------------------------------------------------------
    @property
    def state_key(self) -> str:
        return self._generate_state_key(neurons=repr(self.neurons), module=self.module, seed=self.seed,
                                        every_n_epochs=self.every_n_epochs,
                                        every_n_train_steps=self.every_n_train_steps)

    def should_sample(self, global_step: Optional[int] = None, epoch: Optional[int] = None) -> bool:
        """Whether a round is due: after optimizer step ``global_step`` or at the end of epoch ``epoch``.

        Pure and overridable; the step hook passes ``global_step``, the epoch hook passes ``epoch``.
        """
        if global_step is not None and self.every_n_train_steps:
            return global_step > 0 and global_step % self.every_n_train_steps == 0
        if epoch is not None and self.every_n_epochs:
            return (epoch + 1) % self.every_n_epochs == 0
        return False

    # ---- setup ---------------------------------------------------------------------------------------
    def network(self, pl_module: nn.Module) -> nn.Module:
        """The module LDAM runs: ``pl_module`` or its ``module`` submodule."""
        if self.module is not None:
            try:
                return pl_module.get_submodule(self.module)
            except AttributeError:
                names = [n for n, _ in pl_module.named_children()]
                raise LDAMArgumentError("module", f"{type(pl_module).__name__} has no submodule {self.module!r}; "
                                 f"its children are {names}") from None
        if _forward_is_lightnings(type(pl_module)):
            names = [n for n, _ in pl_module.named_children()]
            raise LDAMArgumentError("module",
                f"{type(pl_module).__name__} defines no forward(), so LDAM cannot run it; "
                             f"pass module=<name of the network submodule> (children: {names})")
        return pl_module

    def setup(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule", stage: str) -> None:
        if stage != "fit" and not (stage == "validate" and self.during_validation):
            return
        strategy = type(trainer.strategy).__name__
        if "FSDP" in strategy or "DeepSpeed" in strategy:
            raise LDAMArgumentError("strategy",
                f"LDAMCallback needs full parameters on each rank; {strategy} shards them. "
                             f"Use DDP or a single device, or run lightning-ldam on the saved checkpoint")
        net = self.network(pl_module)
        for layer, _ in parse_neurons(self.neurons):
            find_layer(net, layer)
        self._averagers = [cb for cb in trainer.callbacks if _is_lightning_averager(cb)] \
            if self.averaging == "auto" else []
        # trainer.log_dir broadcasts under DDP: read it here, where every rank runs, never in rank-0-only code.
        if not any(_is_tensorboard(lg) or hasattr(lg, "log_image") for lg in trainer.loggers):
            self._png_dir = os.path.join(trainer.log_dir or trainer.default_root_dir, "ldam")
        # Lightning's WeightAveraging copies the averaged weights into the model in its on_train_end: an
        # averager listed before this callback leaves no raw weights for the fit-end round.
        order = {id(cb): i for i, cb in enumerate(trainer.callbacks)}
        mine = order.get(id(self), -1)
        self._raw_gone_at_end = [type(cb).__name__ for cb in self._averagers if order.get(id(cb), -1) < mine]

    def on_fit_start(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule") -> None:
        if self._budget is not None:
            self._budget.start()
        self._fit_start_step, self._fit_start_counts = trainer.global_step, (self._rounds, self._skipped)
        own = self.averaging == "ema" or (self.averaging == "auto" and not self._averagers)
        if own and self._ema is None:
            self._ema = EMA(self.network(pl_module), decay=self.ema_decay, every_n_steps=self.ema_every_n_steps,
                            device=self.ema_device)
            if self._pending_ema_state is not None:
                self._ema.load_state_dict(self._pending_ema_state)
                self._pending_ema_state = None
        if trainer.is_global_zero and any(_is_tensorboard(lg) for lg in trainer.loggers):
            self._rank_zero_info("LDAMCallback: TensorBoard keeps 10 images per tag by default; to see every round "
                                 "run `tensorboard --logdir <dir> --samples_per_plugin images=1000`")

    def _check_targets(self, pl_module: nn.Module) -> None:
        """First batch: resolve the neurons against the real input shape (bad indices raise here)."""
        shape = self.input_shape or self._reservoir.input_shape()
        box = self.value_range or self._reservoir.value_range()
        probe = sample(snapshot(self.network(pl_module)), self.neurons, input_shape=shape, chains=1, steps=1,
                       disc_weight=0.0, value_range=box, normalize=self.normalize, seed=self.seed)
        self._resolved = probe.neurons
        self._checked = True

    # ---- hooks ---------------------------------------------------------------------------------------
    def _collect(self, batch: Any, pl_module: nn.Module) -> None:
        """Offer a batch's inputs to the reservoir; the first batch also checks the neurons (a bad
        ``input_key`` or neuron index fails here)."""
        inputs = extract_input(batch, self.input_key)
        self._train_batch = int(inputs.shape[0]) if inputs.dim() > 0 else 1
        self._reservoir.add(inputs)
        if not self._checked:
            self._check_targets(pl_module)

    def on_train_batch_end(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule", outputs: Any,
                           batch: Any, batch_idx: int) -> None:
        started = time.perf_counter()
        self._collect(batch, pl_module)
        step = trainer.global_step
        if self._ema is not None and step != self._last_ema_step:
            self._ema.update(self.network(pl_module), step)
            self._last_ema_step = step
        if self._budget is not None:  # the per-batch work (reservoir, own EMA) is overhead too
            self._budget.add_sampling(time.perf_counter() - started)
        if self.should_sample(global_step=step) and step != self._last_sampled_step:
            self._round(trainer, pl_module)

    def on_train_epoch_end(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule") -> None:
        if self.should_sample(epoch=trainer.current_epoch) and trainer.global_step != self._last_sampled_step:
            self._round(trainer, pl_module)

    def on_train_end(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule") -> None:
        # The "fit end" round: on_train_end is the last hook where the module can still hold its raw weights.
        self._at_train_end = True
        step = trainer.global_step
        if self.on_fit_end_enabled and (step != self._last_sampled_step or step == self._last_skipped_step):
            self._round(trainer, pl_module, budgeted=False)
        if self._budget is not None and self._rounds == self._fit_start_counts[0] \
                and self._skipped > self._fit_start_counts[1]:  # this fit skipped rounds and ran none
            sources = self._variant_sources(trainer, pl_module)
            estimate = self._budget.estimate(len(sources), self._planned_steps(sources))
            cost = f"a round would take about {estimate:.1f}s" if estimate is not None else "too short to time a round"
            self._warn_once("no_round", f"LDAMCallback: no round fit in max_overhead={self._budget.fraction:g} of this "
                                        f"run's {self._budget.training_seconds():.1f}s of training ({cost}); pass "
                                        f"max_overhead=None to run every due round, a larger max_overhead, or "
                                        f"on_fit_end=True for one round at the end")

    def on_validation_batch_end(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule", outputs: Any,
                                batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        # Under trainer.validate() no training batch comes: the validation inputs feed the reservoir.
        if not self.during_validation or trainer.sanity_checking or _fitting(trainer):
            return
        self._collect(batch, pl_module)

    def on_validation_end(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule") -> None:
        # on_validation_end, not on_validation_epoch_end: by now every WeightAveraging callback has swapped
        # the raw weights back into the module, whatever the callback order. Runs under no_grad/inference_mode.
        if not self.during_validation or trainer.sanity_checking:
            return
        if not _fitting(trainer) or trainer.global_step != self._last_sampled_step:
            self._round(trainer, pl_module)

    # ---- one round -----------------------------------------------------------------------------------
    def _variant_sources(self, trainer: "pl.Trainer",
                         pl_module: "pl.LightningModule") -> Dict[str, Tuple[nn.Module, bool]]:
        """What a round would sample, uncopied: ``{name: (module, refresh_bn)}`` (cheap; no snapshot yet)."""
        if any(_in_swa_bn_epoch(cb, trainer) for cb in self._averagers):
            # StochasticWeightAveraging copied its average into the module for its extra batch-norm epoch:
            # the module now holds the final SWA model (average + fresh BN statistics), and no raw weights.
            self._info_once("swa_bn", "LDAMCallback: StochasticWeightAveraging's batch-norm epoch runs on the "
                                      "averaged weights: this round logs them as 'swa' and has no 'raw'")
            return {"swa": (self.network(pl_module), False)}
        out = {}
        if self._at_train_end and self._raw_gone_at_end:
            self._info_once("raw_gone", f"LDAMCallback: {', '.join(self._raw_gone_at_end)} already copied the averaged "
                                        f"weights into the model, so the fit-end round has no raw weights; list "
                                        f"LDAMCallback before it in callbacks=[...] to log both")
        else:
            out["raw"] = (self.network(pl_module), False)
        if self._ema is not None:
            if int(self._ema.n_averaged) > 0:
                out["ema"] = (self._ema.module, False)
            else:
                self._info_once("ema", "LDAMCallback: the EMA has no update yet; sampling raw weights only")
        for cb in self._averagers:
            name, avg_module, count = _lightning_average(cb)
            if avg_module is None or count == 0:
                self._info_once(name, f"LDAMCallback: {type(cb).__name__} has no averaged weights yet; skipped")
                continue
            avg_net = avg_module.get_submodule(self.module) if self.module else avg_module
            # Only parameters averaged: BN statistics of the copy's creation would not match them.
            out[name] = (avg_net, not _averages_buffers(cb))
        return out

    def variants(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule") -> Dict[str, nn.Module]:
        """Frozen copies to sample: ``raw`` and whichever averaged copies have been updated."""
        device = self._device(pl_module)
        out = {}
        for name, (module, refresh_bn) in self._variant_sources(trainer, pl_module).items():
            copy = snapshot(module, device)
            if refresh_bn and has_batchnorm(copy) and len(self._reservoir):
                refresh_batchnorm(copy, self._reservoir.images)
            out[name] = copy
        return out

    def _over_budget(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule") -> bool:
        """Whether the due round would take sampling above ``max_overhead`` of the training time so far.

        Rank 0 decides from its clock and broadcasts, so every rank skips the same rounds (a round holds a
        collective under DDP). Before the first round the cost comes from a short probe, which itself
        waits until the budget could hold a round at all (:meth:`OverheadBudget.worth_probing`).
        """
        skip = False
        if trainer.is_global_zero:
            sources = self._variant_sources(trainer, pl_module)
            steps = self._planned_steps(sources)
            budget = self._budget
            if not budget.has_estimate:
                round_batch = self.chains * len(self._resolved[::trainer.world_size])
                if budget.worth_probing(len(sources), steps, trainer.global_step - self._fit_start_step,
                                        round_batch, self._train_batch):
                    self._probe(trainer, pl_module, sources)
                else:
                    skip = True
            estimate = budget.estimate(len(sources), steps)
            skip = skip or (estimate is not None and estimate > budget.allowance())
        if trainer.world_size > 1:
            skip = bool(trainer.strategy.broadcast(skip, src=0))
        return skip

    def _probe(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule", sources: Dict[str, Any]) -> None:
        """Time a few Langevin steps of the raw weights (rank 0's share of the neurons) for the budget.

        A fresh discriminator is trained and thrown away, so the variants' own ones stay as they were.
        """
        started = time.perf_counter()
        try:
            shard = self._resolved[::trainer.world_size] or self.neurons
            kwargs = {**self.sampler_kwargs, "steps": _PROBE_STEPS, "progress": False, "disc_warmup": 0}
            net = snapshot(next(iter(sources.values()))[0], self._device(pl_module))
            res = sample(net, shard, **self._sample_settings(None), **kwargs)
        except Exception as err:  # the round itself will report it; no estimate, so the round runs
            log.debug("LDAMCallback: cost probe failed: %s", err)
            return
        finally:
            self._budget.add_sampling(time.perf_counter() - started)
        cfg = res.config  # D trains in burn-in only (every step of the annealed search): its mean updates per step
        trained = cfg["steps"] if cfg["method"] == "annealed" else cfg["burn_in"]
        uses_d = res.discriminator is not None  # a round with a fresh D warms it up first
        self._budget.record_probe(res.seconds, res.step_seconds, _PROBE_STEPS,
                                  warmup_updates=self.sampler_kwargs.get("disc_warmup", 50) if uses_d else 0,
                                  updates_per_step=(cfg["disc_steps"] * trained / cfg["steps"] / cfg["disc_every"]
                                                    if uses_d else 0))

    def _round(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule", budgeted: bool = True) -> None:
        if trainer.sanity_checking:
            return
        self._last_sampled_step = trainer.global_step
        if len(self._reservoir) == 0 and (self.input_shape is None or self.value_range is None):
            self._warn_once("empty", "LDAMCallback: no training batch seen yet, so the input shape/range are "
                                     "unknown; skipping this round (pass input_shape and value_range to sample "
                                     "before training)")
            return
        if budgeted and self._budget is not None and _fitting(trainer) and self._over_budget(trainer, pl_module):
            self._skipped += 1
            self._last_skipped_step = trainer.global_step
            self._info_once("budget", f"LDAMCallback: skipping rounds that would take sampling above "
                                      f"max_overhead={self._budget.fraction:g} of the training time (first skip at "
                                      f"step {trainer.global_step}); the count goes to ldam/skipped_rounds")
            return
        started = time.perf_counter()
        snaps: Dict[str, nn.Module] = {}
        try:
            snaps = self.variants(trainer, pl_module)
            results = self._sample_all(trainer, snaps)
        except Exception as err:  # a failed round must never crash the user's training run
            self._rank_zero_warn(f"LDAMCallback: sampling failed at step {trainer.global_step} and was skipped: "
                                 f"{type(err).__name__}: {err}")
            return
        finally:
            if self._budget is not None:
                seconds = time.perf_counter() - started
                self._budget.add_sampling(seconds)
                self._budget.record_round(seconds, len(snaps), self._planned_steps(snaps))
            snaps.clear()
        self._rounds += 1
        if trainer.is_global_zero and results:
            self._log(trainer, results)
            first = next(iter(results.values()))
            n, c = first.activations.shape
            self._rank_zero_info(f"LDAMCallback: step {trainer.global_step}: {n} neurons x {c} chains x "
                                 f"{first.config['steps']} steps for {', '.join(results)} in "
                                 f"{time.perf_counter() - started:.1f}s")

    def _sample_all(self, trainer: "pl.Trainer", snaps: Dict[str, nn.Module]) -> Dict[str, SampleResult]:
        """Sample every variant; under DDP each rank samples a shard of the neurons and rank 0 gathers.

        Every rank makes the same single collective call, also when its own sampling failed (the error
        travels with the gather), so a fault on one rank can never leave the others waiting.
        """
        world = trainer.world_size
        # A bar only for rounds that turn out slow, only where Lightning shows its own bar, rank 0 only.
        show_bar = trainer.is_global_zero and getattr(trainer, "progress_bar_callback", None) is not None
        kwargs = {"steps": self._round_steps(snaps), "progress": _PROGRESS_AFTER_S if show_bar else False,
                  **self.sampler_kwargs}
        if world == 1 or not torch.distributed.is_available() or not torch.distributed.is_initialized():
            return {name: self._sample(name, net, self.neurons, kwargs) for name, net in snaps.items()}
        shard = self._resolved[trainer.global_rank::world]
        local: Dict[str, SampleResult] = {}
        error = None
        try:
            for name, net in snaps.items():
                if shard:
                    local[name] = dataclasses.replace(self._sample(name, net, shard, kwargs), discriminator=None)
        except Exception as err:  # reported after the gather, on every rank
            error = f"rank {trainer.global_rank}: {type(err).__name__}: {err}"
        gathered: List[Any] = [None] * world
        torch.distributed.all_gather_object(gathered, (local, error))
        errors = [e for _, e in gathered if e]
        if errors:
            raise RuntimeError("; ".join(errors))
        if not trainer.is_global_zero:
            return {}
        return {name: merge_shards([g[0].get(name) for g in gathered]) for name in snaps}

    def _device(self, pl_module: nn.Module) -> torch.device:
        return torch.device(self.sample_device) if self.sample_device is not None else V.model_device(pl_module)

    def _round_steps(self, snaps: Dict[str, nn.Module]) -> Optional[int]:
        """``steps``, else half the sampler's default when every variant's discriminator is warm (the same
        for all variants, so they stay comparable), else the sampler's default (``None``)."""
        if self.steps is not None:
            return self.steps
        warm = all(name in self._discriminators or name in self._pending_disc_state for name in snaps)
        return _WARM_D_STEPS if warm and snaps else None

    def _sample_settings(self, variant: Optional[str]) -> Dict[str, Any]:
        """The :func:`sample` arguments the callback owns, for ``variant``'s discriminator (``None``: a fresh one)."""
        shape = self.input_shape or self._reservoir.input_shape()
        real = self._reservoir.images if len(self._reservoir) else None
        disc = self._discriminators.get(variant) if variant is not None else None
        weight = self.disc_weight
        if disc is None and variant in self._pending_disc_state:
            disc = restore_discriminator(self._pending_disc_state.pop(variant), shape[0], shape[1:], self.seed)
        if real is None and disc is None and weight is None:
            weight = 0.0
        return dict(input_shape=shape, chains=self.chains, real_data=real, disc_weight=weight,
                    value_range=self.value_range or self._reservoir.value_range(), normalize=self.normalize,
                    seed=self.seed, discriminator=disc)

    def _planned_steps(self, variants: Dict[str, Any]) -> int:
        """The steps a round of these variants runs (``_round_steps``, with the sampler's default filled in)."""
        return self._round_steps(variants) or LangevinConfig().steps

    def _sample(self, variant: str, net: nn.Module, neurons: NeuronSpec, kwargs: Dict[str, Any]) -> SampleResult:
        """One variant: ``kwargs`` are the round's sampler settings (steps, progress, ``sampler_kwargs``)."""
        res = sample(net, neurons, device=self._device(net), **self._sample_settings(variant), **kwargs)
        if res.discriminator is not None:
            # Each variant keeps its own D so the variants stay symmetric: a shared D would have just been
            # trained against the previous variant's chains.
            self._discriminators[variant] = res.discriminator
        if int(res.nonfinite_resets.sum()):
            self._rank_zero_warn(f"LDAMCallback: {int(res.nonfinite_resets.sum())} chain states of the "
                                 f"{variant!r} weights turned NaN/Inf and were re-initialised")
        return res

    # ---- logging -------------------------------------------------------------------------------------
    def _log(self, trainer: "pl.Trainer", results: Dict[str, SampleResult]) -> None:
        images, scalars = summarize(results, self.upscale)
        if self.max_overhead is not None:
            scalars["ldam/skipped_rounds"] = float(self._skipped)
        self._write(trainer, images, scalars, trainer.global_step)

    def _write(self, trainer: "pl.Trainer", images: Dict[str, torch.Tensor], scalars: Dict[str, float],
               step: int) -> None:
        wrote_images = False
        for logger in trainer.loggers:
            if _is_tensorboard(logger):
                write_tensorboard(logger.experiment, images, scalars, step)
                wrote_images = True
            else:
                logger.log_metrics(scalars, step=step)
                if hasattr(logger, "log_image"):
                    for tag, img in images.items():
                        logger.log_image(key=tag, images=[img], step=step)
                    wrote_images = True
        if not wrote_images:
            out = self._png_dir or os.path.join(trainer.default_root_dir, "ldam")
            self._warn_once("png", f"LDAMCallback: no image-capable logger; writing PNGs under {out}")
            from torchvision.utils import save_image
            for tag, img in images.items():
                path = os.path.join(out, tag.replace("/", "_").replace(".", "-") + f"_step{step:07d}.png")
                os.makedirs(os.path.dirname(path), exist_ok=True)
                save_image(img, path)

    def _warn_once(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            self._rank_zero_warn(message)

    def _info_once(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            self._rank_zero_info(message)

    # ---- state ---------------------------------------------------------------------------------------
    def state_dict(self) -> Dict[str, Any]:
        discs = {k: d.state_dict() for k, d in self._discriminators.items()}
        discs.update({k: v for k, v in self._pending_disc_state.items() if k not in discs})
        return {"rounds": self._rounds, "skipped_rounds": self._skipped, "last_sampled_step": self._last_sampled_step,
                "last_ema_step": self._last_ema_step,
                "ema": self._ema.state_dict() if self._ema is not None else self._pending_ema_state,
                "discriminators": discs, "reservoir": self._reservoir.state_dict(),
                # what the CLI needs to sample the checkpoint as the callback did (plain lists: no tensors)
                "normalize": None if self.normalize is None else
                [torch.as_tensor(t, dtype=torch.float32).flatten().tolist() for t in self.normalize],
                "value_range": None if self.value_range is None else list(self.value_range)}

    def load_state_dict(self, state_dict: Dict[str, Any]) -> None:
        self._rounds = state_dict["rounds"]
        self._skipped = state_dict.get("skipped_rounds", 0)
        self._last_sampled_step = state_dict["last_sampled_step"]
        self._last_ema_step = state_dict["last_ema_step"]
        self._reservoir.load_state_dict(state_dict["reservoir"])
        self._discriminators = {}
        self._pending_disc_state = dict(state_dict["discriminators"])
        if state_dict["ema"] is not None:
            if self._ema is not None:
                self._ema.load_state_dict(state_dict["ema"])
            else:
                self._pending_ema_state = state_dict["ema"]


class LDAMCallback(LDAMCallbackLogic, Callback):
    """Sample what chosen neurons respond to, for raw and averaged weights, and log it to TensorBoard.

    Args:
        neurons: which neurons (paths relative to the network that runs), e.g. ``"features.3:0-7"`` or
            ``["conv1:0-3", "fc:all"]`` (see :mod:`lightning_ldam.targets`).
        every_n_epochs: sample at the end of every n-th training epoch (``None``/0: off).
        every_n_train_steps: sample every n optimizer steps (``None``/0: off).
        on_fit_end: also sample once when ``fit`` ends.
        during_validation: also sample at the end of every validation run (the validation inside ``fit``,
            and ``trainer.validate``, whose batches then feed the reservoir); runs under Lightning's
            no_grad/inference_mode, nothing to configure.
        max_overhead: keep sampling under this share of the training wall time (default ``0.05``): a due
            round whose estimated cost would take sampling above it is skipped (counted in
            ``ldam/skipped_rounds``). The first round's cost comes from a 4-step probe, made once the budget
            could plausibly hold a round; a run too short for any round says so at the end. ``on_fit_end``'s
            round always runs. ``None``: every due round runs, whatever it costs.
        chains: chains per neuron.
        steps: Langevin steps per round (default: the sampler's 512 while a discriminator is fresh, 256 once
            every variant's discriminator is warm from earlier rounds: the same quality, half the cost).
        input_shape: per-sample input shape; default: inferred from the training batches.
        value_range: the input box; default: inferred from the training batches.
        normalize: ``(mean, std)`` if the network expects normalised inputs of pixel-space data.
        disc_weight: λ; default: the sampler's default with real data.
        reservoir_size: real training inputs kept for the discriminator.
        input_key: how to read inputs from a batch (int index, str key, callable); default understands
            tensors, tuples/lists (first element) and dicts with "image"/"input"/"x".
        module: attribute path of the submodule to run (e.g. ``"net"``); default: the LightningModule.
        averaging: ``"auto"``: Lightning's ``WeightAveraging``/``EMAWeightAveraging``/
            ``StochasticWeightAveraging`` if the trainer has one, else an own EMA; ``"ema"``: always the own
            EMA; ``None``: raw weights only.
        ema_decay: decay of the own EMA.
        ema_every_n_steps: update the own EMA every n optimizer steps.
        ema_device: keep the own EMA here (e.g. ``"cpu"``); default: the model's device.
        sample_device: where to sample; default: the module's device.
        seed: seed of every round (all variants start from the same chains and draw the same noise).
        upscale: nearest-neighbour factor for logged images (default: tiles at least 56 px high).
        sampler_kwargs: any other :func:`lightning_ldam.sample` keyword.

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


def _is_tensorboard(logger) -> bool:
    return type(logger).__name__ == "TensorBoardLogger"


def _class_names(cb) -> set:
    # By name, not isinstance: the standalone pytorch_lightning package has its own class hierarchy.
    return {c.__name__ for c in type(cb).__mro__}


def _is_swa(cb) -> bool:
    return "StochasticWeightAveraging" in _class_names(cb)


def _is_lightning_averager(cb) -> bool:
    return bool(_class_names(cb) & {"WeightAveraging", "StochasticWeightAveraging"})


def _in_swa_bn_epoch(cb, trainer) -> bool:
    """Whether Lightning's StochasticWeightAveraging is in its extra epoch that recomputes BN statistics."""
    if not _is_swa(cb):
        return False
    max_epochs = getattr(cb, "_max_epochs", -1)
    return bool(getattr(cb, "_model_contains_batch_norm", False)) and max_epochs not in (-1, None) \
        and trainer.current_epoch == max_epochs


def _averages_buffers(cb) -> bool:
    """StochasticWeightAveraging averages parameters only; WeightAveraging does buffers if ``use_buffers``."""
    if _is_swa(cb):
        return False
    return bool(getattr(getattr(cb, "_average_model", None), "use_buffers", True))


def _lightning_average(cb) -> Tuple[str, Optional[nn.Module], int]:
    """(variant name, averaged LightningModule copy, update count) of a Lightning averaging callback.

    Lightning keeps the averaged copy in ``_average_model`` (an ``AveragedModel`` for WeightAveraging,
    a plain copy with ``n_averaged`` on the callback for StochasticWeightAveraging); no public accessor exists.
    """
    avg = getattr(cb, "_average_model", None)
    if _is_swa(cb):
        count = getattr(cb, "n_averaged", None)
        return "swa", avg, 0 if count is None else int(count)
    name = "ema" if "EMA" in type(cb).__name__ else "swa"
    if avg is None:
        return name, None, 0
    return name, avg.module, int(avg.n_averaged)
