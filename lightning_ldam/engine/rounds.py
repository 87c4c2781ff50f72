"""One LDAM round: sample named weight variants of one network with common random numbers (plain PyTorch).

A round is what the callback does at a due step and what ``lightning-ldam compare`` does for a checkpoint:
the same neurons, chains, steps, seed and real inputs for every variant (``raw``, ``ema``, ``swa``, or two
checkpoints), so that the variants' samples differ only through their weights. :class:`RoundPlan` holds
those settings, built once per round by :func:`plan_round`; :func:`sample_variants` runs it.

This module imports no Lightning.
"""
from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, cast

import torch
from torch import nn

from lightning_ldam.errors import LDAMArgumentError
from lightning_ldam.sampling.activations import Spatial, chain_activations, unit_activations
from lightning_ldam.sampling.api import WARM_DISC_STEPS, sample
from lightning_ldam.sampling.config import SamplerConfig, SpeedOptions
from lightning_ldam.sampling.discriminator import finite_weights, restore_discriminator
from lightning_ldam.sampling.progress import Progress
from lightning_ldam.sampling.result import SampleResult, merge_shards, reference
from lightning_ldam.sampling.targets import NeuronSpec, find_layer, layer_settings, spec_with_settings
from lightning_ldam.weights.ema import has_batchnorm, refresh_batchnorm

__all__ = ["time_a_step", "Variant", "RoundPlan", "plan_round", "sample_variants", "sample_sharded", "run_round",
           "resolve_targets",
           "fixed_spec", "submodule", "prepare_network", "WarmDiscriminators"]

log = logging.getLogger(__name__)
Note = Callable[[str], None]
#: Real inputs each variant's units are read on after sampling (lift, health): one batched forward.
REAL_FOR_METRICS = 256


@dataclass(frozen=True)
class Variant:
    """One set of weights to sample.

    Args:
        name: the tag name (``"raw"``, ``"ema"``, ``"swa"``, a checkpoint's name).
        network: the network to run; a copy the round may modify (its BatchNorm statistics are
            recomputed when ``refresh_bn``).
        refresh_bn: recompute BatchNorm statistics on the round's real inputs first (an average of parameters
            only carries the statistics of its creation).
        discriminator: a warm discriminator from an earlier round, or ``None``.
        disc_state: a saved discriminator ``state_dict`` to restore when ``discriminator`` is ``None``.
        init: ``[neurons, chains, *input]`` starting images (the variant's persistent chains), or ``None``: the
            plan's own starts (``sampler_kwargs["init"]``, else noise), the same for every variant.
        continued: with ``init``, the ``[chains]`` bool mask of the chains that continue (held through burn-in's
            search, which the re-drawn ones run; :func:`~lightning_ldam.sample`'s ``continued``).
    """

    name: str
    network: nn.Module
    refresh_bn: bool = False
    discriminator: Optional[nn.Module] = None
    disc_state: Optional[Dict[str, Any]] = None
    init: Optional[torch.Tensor] = None
    continued: Optional[torch.Tensor] = None

    @property
    def warm(self) -> bool:
        return self.discriminator is not None or self.disc_state is not None


@dataclass(frozen=True)
class RoundPlan:
    """Everything a round samples with, the same for every variant (common random numbers). Frozen: a step that
    changes the plan makes a new one (``dataclasses.replace``, :meth:`with_settings`).

    Attributes:
        variants: the weights to sample.
        neurons: the spec every variant samples.
        input_shape: one input's shape.
        real: real inputs in pixel space (D's data, lift's scale), or ``None``.
        config: the sampler settings (chains, steps, seed, λ, box, device, ...), every variant's.
        progress: a ``progress`` the user gave (through the callback's ``sampler_kwargs``), else ``None``: the
            caller's own.
    """

    variants: List[Variant]
    neurons: NeuronSpec
    input_shape: Tuple[int, ...]
    real: Optional[torch.Tensor]
    config: SamplerConfig
    progress: Any = None

    @property
    def names(self) -> List[str]:
        return [v.name for v in self.variants]

    @property
    def steps(self) -> int:
        return self.config.langevin.steps

    @property
    def chains(self) -> int:
        return self.config.chains.chains

    @property
    def normalize(self) -> Any:
        return self.config.inputs.normalize

    def with_settings(self, **settings) -> "RoundPlan":
        """A copy with sampler settings changed (by name)."""
        return dataclasses.replace(self, config=self.config.with_settings(**settings))

    def describe(self, neurons: Optional[int] = None) -> str:
        """``"8 neurons × 8 chains × 512 steps × 2 variants (raw, ema)"``."""
        count = f"{neurons} neurons" if neurons is not None else "the neurons"
        return (f"{count} × {self.chains} chains × {self.steps} steps × {len(self.variants)} variant"
                f"{'s' if len(self.variants) != 1 else ''} ({', '.join(self.names)})")


class WarmDiscriminators:
    """Each variant's own discriminator, kept from round to round (warm starts), and the states restored from a
    checkpoint until the variant's next round takes them up.

    Each variant keeps its own D so the variants stay symmetric: a shared D would have just been trained against
    the previous variant's chains.
    """

    def __init__(self) -> None:
        self.live: Dict[str, nn.Module] = {}
        self.pending: Dict[str, Dict[str, Any]] = {}

    def variant(self, name: str, network: nn.Module) -> "Variant":
        """``network`` as a round's variant, with its warm discriminator or its restored state if it has one."""
        return Variant(name, network, discriminator=self.live.get(name), disc_state=self.pending.get(name))

    def keep(self, discs: Mapping[str, Optional[nn.Module]]) -> None:
        """Keep the discriminators a round returned (``None``: that variant ran without one)."""
        for name, disc in discs.items():
            if disc is not None:
                self.live[name] = disc
                self.pending.pop(name, None)

    def state_dict(self) -> Dict[str, Dict[str, Any]]:
        """The finite discriminators' states (a non-finite one is never saved) and the restored ones not used yet."""
        states = {name: d.state_dict() for name, d in self.live.items() if finite_weights(d)}
        states.update({name: s for name, s in self.pending.items() if name not in states})
        return states

    def load_state_dict(self, states: Mapping[str, Dict[str, Any]]) -> None:
        self.live, self.pending = {}, dict(states)


def plan_round(variants: Sequence[Variant], neurons: NeuronSpec, *, input_shape: Sequence[int],
               real: Optional[torch.Tensor] = None, config: Optional[SamplerConfig] = None,
               steps: Optional[int] = None, progress: Any = None) -> RoundPlan:
    """Settle a round's settings once.

    Steps: ``steps`` if given; else :data:`~lightning_ldam.sampling.api.WARM_DISC_STEPS` when every variant resumes a
    trained discriminator and real inputs keep training it (the same for all, so they stay comparable); else
    ``config``'s. Without real inputs, a discriminator or a given λ, λ is 0 (nothing to train D on).
    """
    variants, config = list(variants), config or SamplerConfig()
    if steps is None:
        warm = bool(variants) and real is not None and all(v.warm for v in variants)
        steps = WARM_DISC_STEPS if warm else config.langevin.steps
    disc_weight = config.discriminator.disc_weight
    if disc_weight is None and real is None and not any(v.warm for v in variants):
        disc_weight = 0.0
    return RoundPlan(variants, neurons, tuple(input_shape), real,
                     config.with_settings(steps=int(steps), disc_weight=disc_weight), progress)


def submodule(model: nn.Module, path: Optional[str], argument: str = "module") -> nn.Module:
    """``model.get_submodule(path)`` (``model`` itself for ``None``), with an error naming ``argument``."""
    if not path:
        return model
    try:
        return model.get_submodule(path)
    except AttributeError:
        children = [n for n, _ in model.named_children()]
        raise LDAMArgumentError(argument, f"{type(model).__name__} has no submodule {path!r}; its children are "
                                          f"{children}") from None


def prepare_network(network: nn.Module, refresh_bn: bool, real: Optional[torch.Tensor], normalize=None,
                    note: Optional[Note] = None, name: str = "") -> nn.Module:
    """Recompute ``network``'s BatchNorm statistics on ``real`` when ``refresh_bn`` (in place); returns it."""
    if refresh_bn and has_batchnorm(network):
        if real is not None:
            refresh_batchnorm(network, real, normalize=normalize)
        elif note is not None:
            note(f"note: {name!r} averages parameters only and there are no real inputs to recompute its "
                 f"BatchNorm statistics; they are those of the averaged copy's creation")
    return network


def resolve_targets(network: nn.Module, plan: RoundPlan, dry_run: bool = False) -> List[Tuple[str, int]]:
    """The ``(layer, index)`` pairs of ``plan.neurons`` on ``network``: two chains, one step (bad paths and indices
    raise here, before any real work; ``"layer:top8"`` is ranked on the plan's real inputs). ``dry_run`` also
    passes the plan's sampler settings, so that they are checked against this network and input too (two
    steps, one of burn-in for the Langevin methods)."""
    cfg = plan.config
    if dry_run:  # the plan's settings, as short as a Langevin method allows
        cfg = _two_steps(cfg, chains=2)
    else:  # no discriminator is built: the real inputs only rank units; spatial ranks "topK" units, and init: a
        # target that only real inputs reach needs chains started from them
        cfg = SamplerConfig(chains=dataclasses.replace(cfg.chains, chains=2), inputs=cfg.inputs,
                            speed=SpeedOptions(device=cfg.speed.device)).with_settings(steps=1, disc_weight=0.0)
    neurons = plan.neurons if dry_run else _without_disc(plan.neurons)
    # two chains: a model that needs batch statistics (BatchNorm without running statistics) refuses a batch of one
    res = sample(network, neurons, input_shape=plan.input_shape, real_data=plan.real, config=cfg)
    return res.neurons


def _without_disc(spec: NeuronSpec) -> NeuronSpec:
    """``spec`` with the layers' own ``disc_weight`` dropped: resolving units needs no discriminator."""
    if not isinstance(spec, Mapping):
        return spec
    return {layer: ({k: v for k, v in value.items() if k != "disc_weight"} if isinstance(value, Mapping) else value)
            for layer, value in spec.items()}


def fixed_spec(network: nn.Module, spec: NeuronSpec, resolved: Sequence[Tuple[str, int]]) -> NeuronSpec:
    """The resolved ``(layer, index)`` pairs of ``spec`` as a spec that keeps its per-layer settings (the pairs
    themselves when it has none): what every round samples once the units are fixed."""
    settings = {find_layer(network, layer)[0]: values for layer, values in layer_settings(spec).items()}
    return spec_with_settings(resolved, settings)


def _discriminator(variant: Variant, plan: RoundPlan, note: Optional[Note]) -> Optional[nn.Module]:
    """The variant's warm discriminator, restored from its saved state if need be (a fresh one if it does not fit)."""
    if variant.discriminator is not None or variant.disc_state is None:
        return variant.discriminator
    if plan.real is None and not plan.config.discriminator.disc_weight:
        return None
    shape = plan.input_shape
    try:
        return restore_discriminator(variant.disc_state, shape[0], shape[1:], plan.config.chains.seed)
    except (RuntimeError, ValueError, IndexError, KeyError) as err:
        if note is not None:
            note(f"note: the saved {variant.name!r} discriminator does not fit input {shape} ({err}); training a "
                 f"fresh one")
        return None


def _two_steps(cfg: SamplerConfig, **settings: Any) -> SamplerConfig:
    """``cfg`` cut to two steps, one of them burn-in for the Langevin methods, with one warm-up update of a fresh D."""
    burn_in = {} if cfg.langevin.method == "ascent" else {"burn_in": 1}
    return cfg.with_settings(steps=2, disc_warmup=1, **burn_in, **settings)


def time_a_step(plan: RoundPlan) -> float:
    """Seconds one step of ``plan`` takes for one variant: a two-step call on the first variant with the plan's
    neurons, chains, real inputs and λ; the second step is timed (a burn-in step: D's updates are in it, so the
    estimate errs long). A fresh discriminator is used: the variant's warm one is left as it is."""
    variant = plan.variants[0]
    cfg = _two_steps(plan.config)
    res = sample(variant.network, plan.neurons, input_shape=plan.input_shape, real_data=plan.real, config=cfg)
    return float(res.step_seconds)


def sample_variants(plan: RoundPlan, neurons: Optional[NeuronSpec] = None, *, progress: Any = False,
                    note: Optional[Note] = None, previous: Optional[Mapping[str, torch.Tensor]] = None
                    ) -> Dict[str, SampleResult]:
    """Sample every variant of ``plan`` with the same chains, noise and settings.

    Args:
        plan: the round.
        neurons: a subset of the plan's neurons to sample (a DDP rank's shard); default all.
        progress: :func:`~lightning_ldam.sample`'s ``progress``.
        note: where one-line notes go (a BatchNorm statistic that cannot be recomputed, a saved discriminator
            that does not fit); default: the module logger.
        previous: ``{variant: images}`` of the same neurons from the previous round, read on this round's weights
            (``cross_activations["previous"]``).

    Returns:
        ``{variant name: result}``, in the plan's order. Each result's ``discriminator`` is the variant's D,
        trained further: pass it back as ``Variant.discriminator`` next round. With real inputs, each result also
        holds its units' activations on the real inputs and its ``cross_activations`` (``raw``'s chains read on
        each averaged variant's units and the other way round; the previous round's).
    """
    note = note or log.info
    out: Dict[str, SampleResult] = {}
    nets: Dict[str, nn.Module] = {}
    for variant in plan.variants:
        starts = {} if variant.init is None else {"init": variant.init, "continued": variant.continued}
        net = prepare_network(variant.network, variant.refresh_bn, plan.real, plan.normalize, note, variant.name)
        res = sample(
            net, plan.neurons if neurons is None else neurons, input_shape=plan.input_shape, real_data=plan.real,
            discriminator=_discriminator(variant, plan, note), config=plan.config, **starts,
            progress=progress.labelled(f"LDAM {variant.name}") if isinstance(progress, Progress) else progress)
        if plan.real is not None:  # the scale of lift and of the health counts: this variant's units on real inputs
            res.real_activations = unit_activations(net, res.neurons, plan.real[:REAL_FOR_METRICS],
                                                    spatial=cast(Spatial, res.config["spatial"]),
                                                    normalize=plan.normalize)
            nets[variant.name] = net
        out[variant.name] = res
    _read_across(out, nets, plan.normalize, previous)
    return out


def _read_across(results: Dict[str, SampleResult], nets: Dict[str, nn.Module], normalize,
                 previous: Optional[Mapping[str, torch.Tensor]]) -> None:
    """Fill ``cross_activations``: the reference's (raw's; else the first variant's) chains on every other variant's
    units and theirs on the reference's, and each
    variant's previous chains on its current units (only variants measured on real inputs, i.e. in ``nets``)."""
    def read(target: str, images: torch.Tensor) -> torch.Tensor:
        res = results[target]
        return chain_activations(nets[target], res.neurons, images, spatial=cast(Spatial, res.config["spatial"]),
                                 normalize=normalize)

    ref = reference(nets)  # raw; between two checkpoints, the first
    if ref is not None:
        for name in nets:
            if name != ref:
                results[name].cross_activations[ref] = read(name, results[ref].images)
                results[ref].cross_activations[name] = read(ref, results[name].images)
    for name, before in (previous or {}).items():
        if name in nets and tuple(before.shape) == tuple(results[name].images.shape):
            results[name].cross_activations["previous"] = read(name, before)


def sample_sharded(plan: RoundPlan, resolved: List[Tuple[str, int]], rank: int, world: int, progress: Any = False,
                   previous: Optional[Mapping[str, torch.Tensor]] = None
                   ) -> Tuple[Dict[str, SampleResult], Dict[str, Optional[nn.Module]], Dict[str, torch.Tensor]]:
    """Under ``torch.distributed``: each rank samples every ``world``-th neuron and rank 0 gathers the shards.

    Every rank makes the same single collective call, also when its own sampling failed (the error travels
    with the gather), so a fault on one rank can never leave the others waiting. ``previous`` (all neurons, as
    rank 0 logged them) is read only where a rank has it: the merged results carry ``cross_activations["previous"]``
    only if every rank's shard does.

    Returns:
        ``(merged results on rank 0 and {} elsewhere, this rank's discriminators by variant, this rank's final
        chain states by variant)``. Raises on every rank if any rank failed.
    """
    # a strided shard of layer-grouped pairs is still grouped: the plan's per-layer settings apply to it as they are
    shard = spec_with_settings(resolved[rank::world], layer_settings(plan.neurons))
    local: Dict[str, SampleResult] = {}
    error = None
    try:
        if shard:
            mine = {name: images[rank::world] for name, images in (previous or {}).items()}
            local = sample_variants(plan, shard, progress=progress, previous=mine)
    except Exception as err:  # reported after the gather, on every rank
        error = f"rank {rank}: {type(err).__name__}: {err}"
    discs = {name: res.discriminator for name, res in local.items()}
    states = {name: res.images for name, res in local.items()}
    shipped = {name: dataclasses.replace(res, discriminator=None) for name, res in local.items()}
    gathered: List[Any] = [None] * world
    torch.distributed.all_gather_object(gathered, (shipped, error))
    errors = [e for _, e in gathered if e]
    if errors:
        raise RuntimeError("; ".join(errors))
    if rank != 0:
        return {}, discs, states
    return {name: merge_shards([g[0].get(name) for g in gathered]) for name in plan.names}, discs, states


def run_round(plan: RoundPlan, resolved: List[Tuple[str, int]], rank: int = 0, world: int = 1, progress: Any = False,
              note: Optional[Note] = None, previous: Optional[Mapping[str, torch.Tensor]] = None
              ) -> Tuple[Dict[str, SampleResult], Dict[str, Optional[nn.Module]], Dict[str, torch.Tensor]]:
    """:func:`sample_variants`, or :func:`sample_sharded` when ``world > 1`` under an initialised process group.

    Returns:
        ``(results, discriminators, states)``: the results (``{}`` on ranks other than 0 under DDP), this
        process's discriminators by variant (each rank trains its own on its shard's chains) and its chains'
        final states by variant (its shard's under DDP: each rank continues its own chains).
    """
    if world > 1 and torch.distributed.is_available() and torch.distributed.is_initialized():
        return sample_sharded(plan, resolved, rank, world, progress, previous)
    results = sample_variants(plan, progress=progress, note=note, previous=previous)
    return (results, {name: res.discriminator for name, res in results.items()},
            {name: res.images for name, res in results.items()})
