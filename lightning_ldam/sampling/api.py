"""Langevin Dynamics Activation Maximization (LDAM, arXiv 1812.04604): the sampler.

For neuron k of a frozen network, the default method samples inputs from

    p_k(x) ∝ exp( a_k(x) / (c_k·T) + λ_k · log D(x) − γ_k · ½Σ(neighbour differences)² ),   x inside the box,

by Langevin dynamics after a burn-in that fixes ``c_k`` (the neuron's scale, so that T means the same on
every layer and model), ``λ_k``, the smoothness weight ``γ_k`` and the discriminator D; ``method="mala"`` adds
a Metropolis test that makes the sampling phase exact. :mod:`lightning_ldam.sampling.config` states each method's law
and constants.

Every chain of every neuron lives in one batch: one forward evaluates all of them and each chain's
energy reads its own neuron. Chains are kept in the *unit box* ``u ∈ [0, 1]`` (``x = lo + (hi-lo)·u``),
so step sizes and noise mean the same for any ``value_range``. The images returned are the chains' states
after the last step: no denoising step, no averaging over the chain.

This module imports no Lightning.
"""
from __future__ import annotations

import copy
import itertools
import logging
import time
from contextlib import contextmanager
from dataclasses import replace
from typing import Any, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple, Union, cast

import torch
from torch import nn

from lightning_ldam import _validation as V
from lightning_ldam._modes import kept_modes
from lightning_ldam.errors import LDAMArgumentError, TargetNotReached
from lightning_ldam.sampling import loop
from lightning_ldam.sampling.activations import ActivationReader, probe_outputs, unit_activations
from lightning_ldam.sampling.chains import LangevinChains
from lightning_ldam.sampling.config import (
    ChainsConfig,
    SamplerConfig,
    default_smoothness,
)
from lightning_ldam.sampling.diagnostics import MIN_DRAWS, ess_bulk, split_rhat
from lightning_ldam.sampling.discriminator import DiscriminatorKeeper
from lightning_ldam.sampling.inputs import extract_input
from lightning_ldam.sampling.objective import Objective
from lightning_ldam.sampling.progress import Progress
from lightning_ldam.sampling.result import SampleResult
from lightning_ldam.sampling.state import ChainState
from lightning_ldam.sampling.targets import (
    TOP_REAL_IMAGES,
    NeuronRequest,
    NeuronSpec,
    UnitPick,
    find_layer,
    parse_neurons,
    resolve_neurons,
)
from lightning_ldam.sampling.unit_axes import resolve_reading, unit_count

__all__ = ["sample", "WARM_DISC_STEPS"]

log = logging.getLogger(__name__)

#: Steps enough with a warm discriminator (one trained by earlier calls), for the callback's later rounds.
WARM_DISC_STEPS = 256
#: Real images kept (at most) from ``real_data`` for the discriminator and data initialisation.
MAX_REAL_IMAGES = 4096
#: Inputs in the probe forward that reads layer sizes (two: a model that needs batch statistics refuses one).
PROBE_BATCH = 2
#: Real images whose activations set each neuron's target in ``adapt_disc`` (the strongest of them).
TARGET_REAL_IMAGES = 512


def _collect_real(real_data, input_shape: Tuple[int, ...], box: Tuple[float, float]) -> torch.Tensor:
    """Up to :data:`MAX_REAL_IMAGES` real images from a tensor or an iterable of batches, checked (finite, inside
    the pixel box)."""
    limit = MAX_REAL_IMAGES
    def first_tensor(batch):
        try:
            return extract_input(batch)
        except ValueError as err:  # same reading rules as the callback's reservoir; name this argument
            raise LDAMArgumentError("real_data",
                f"expected a tensor [N, {', '.join(map(str, input_shape))}] or an iterable "
                            f"of such batches (tensors, (x, y) tuples or dicts with 'image'/'input'/'x'); got an "
                            f"item of type {type(batch).__name__}") from err

    if isinstance(real_data, torch.Tensor):
        chunks = [real_data]
    elif isinstance(real_data, Iterable):
        chunks, count = [], 0
        for batch in real_data:
            t = first_tensor(batch)
            if t.dim() == len(input_shape):
                t = t.unsqueeze(0)
            chunks.append(t)
            count += t.shape[0]
            if count >= limit:
                break
        if not chunks:
            raise LDAMArgumentError("real_data", "the iterable yielded no batches")
    else:
        raise LDAMArgumentError("real_data",
            f"expected a tensor or an iterable of batches, got {type(real_data).__name__}")
    for t in chunks:
        if not isinstance(t, torch.Tensor) or tuple(t.shape[1:]) != tuple(input_shape):
            shape = tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
            raise LDAMArgumentError("real_data", f"expected images of shape [N, {', '.join(map(str, input_shape))}] "
                             f"(input_shape={tuple(input_shape)}), got {shape}")
    real = torch.cat([t.detach().to("cpu", torch.float32) for t in chunks])[:limit]
    if real.shape[0] == 0:
        raise LDAMArgumentError("real_data", "got zero images")
    _check_real_finite(real)
    _check_real_box(real, *box)
    return real


def _resolve(model: nn.Module, request: NeuronRequest, to_model: "_ModelInput", real: Optional[torch.Tensor],
             chains: ChainsConfig) -> Tuple[list, dict]:
    """Check layer paths, then one dry forward (batch of one) to learn layer sizes and resolve indices.

    ``"layer:topK"`` ranks the layer's units by their mean activation over the first :data:`TOP_REAL_IMAGES` of
    ``real`` (pixel space), each read as the chains' energy reads it (``chains.spatial``); ``"layer:randomK"`` draws
    with ``chains.seed``. The result names explicit ``(layer, index)`` pairs (``SampleResult.neurons``): a caller that
    wants the same units later passes it back instead of the rule (the callback resolves once, at its first round, so
    that every variant and round samples the same units). Returns the pairs and the spec's per-layer settings
    keyed by the resolved layer path.
    """
    spatial = chains.spatial
    aliases = {r.path: find_layer(model, r.path)[0] for r in request}
    settings = {aliases[layer]: dict(values) for layer, values in request.layer_settings().items()}
    shapes, layouts = _layer_shapes(model, list(dict.fromkeys(aliases.values())), to_model, real)
    units = {}
    for path, shape in shapes.items():
        mode = cast(str, settings.get(path, {}).get("spatial", spatial))  # checked when the spec was parsed
        reading = resolve_reading(mode, layouts.get(path, False), shape, path)
        if reading != mode:  # the layer's layout, found here, is part of how every later read takes its units
            settings.setdefault(path, {})["spatial"] = reading
        units[path] = unit_count(shape, reading)
    ranked = list(dict.fromkeys(aliases[r.path] for r in request
                                if isinstance(r.units, UnitPick) and r.units.rule == "top"))
    means = None
    if ranked and real is not None:  # without real data resolve_neurons says that "topK" needs it
        modes = {path: cast(str, settings.get(path, {}).get("spatial", spatial)) for path in ranked}
        means = _unit_means(model, {path: units[path] for path in ranked}, real[:TOP_REAL_IMAGES], modes,
                            to_model.norm)
    return resolve_neurons(request, units, aliases, means=means, seed=chains.seed), settings


def _layer_shapes(model: nn.Module, paths: list, to_model: "_ModelInput",
                  real: Optional[torch.Tensor] = None) -> Tuple[dict, dict]:
    """Layer path -> output shape (for a batch of :data:`PROBE_BATCH`), and path -> whether its channels are on the
    last axis (outputs with >= 3 dims, :func:`~lightning_ldam.sampling.unit_axes.find_layouts`), from one whole forward
    of two zero inputs (two: a model that needs batch statistics refuses one), or of two real ones where zeros take a
    path that skips a target. Targets that run more than once per forward are refused here
    (:func:`~lightning_ldam.sampling.activations.probe_outputs`)."""
    input_shape = to_model.shape
    zeros = torch.zeros((PROBE_BATCH, *input_shape), device=to_model.device)
    try:
        captured, calls, layouts = _probe(model, paths, zeros, to_model)
    except TargetNotReached:
        if real is None or real.shape[0] < 1:
            raise
        captured, calls, layouts = _probe(model, paths, real[:PROBE_BATCH].to(to_model.device), to_model)
    repeated = {p: n for p, n in calls.items() if n > 1}
    if repeated:
        raise LDAMArgumentError("neurons", f"layers run more than once in one forward: "
                                f"{', '.join(f'{p!r} {n} times' for p, n in repeated.items())} (a module used in "
                                f"several places, as torchvision's ResNet blocks use one ReLU twice); LDAM would "
                                f"read the first call only. Choose a module that runs once (e.g. the block itself "
                                f"or its last BatchNorm), or give the place you want its own module (an nn.Identity)")
    shapes = {}
    for p, out in captured.items():
        if out.dim() >= 1 and out.shape[0] != PROBE_BATCH and len(input_shape) == 2:
            # e.g. (28, 28) for a conv net: Conv2d takes [2, 28, 28] as one unbatched image and runs
            raise LDAMArgumentError("input_shape", f"layer {p!r} returned shape {tuple(out.shape)} for a batch "
                                    f"of {PROBE_BATCH} inputs (input_shape={tuple(input_shape)}); "
                                    f"{_input_shape_hint(input_shape)}")
        if out.dim() < 2 or out.shape[0] != PROBE_BATCH:
            raise LDAMArgumentError("neurons", f"layer {p!r} outputs shape {tuple(out.shape)} for a batch of "
                                    f"{PROBE_BATCH}; a target needs [batch, channels, ...]")
        shapes[p] = tuple(out.shape)
    return shapes, layouts


def _probe(model: nn.Module, paths: list, x: torch.Tensor, to_model: "_ModelInput"):
    """:func:`probe_outputs` of pixel-space ``x``; the model's own errors name the shape tried."""
    input_shape = to_model.shape
    if to_model.norm is not None:
        x = (x - to_model.norm[0]) / to_model.norm[1]
    x = x.to(to_model.dtype)
    with torch.no_grad():
        try:
            return probe_outputs(model, paths, x)
        except LDAMArgumentError:  # ours: a target that is not usable or not reached
            raise
        except Exception as err:  # the model's own error, re-raised with the shape we tried
            raise LDAMArgumentError("input_shape", f"the model rejected an input of shape {tuple(x.shape)} "
                                    f"(input_shape={tuple(input_shape)}): {type(err).__name__}: {err}; "
                                    f"{_input_shape_hint(input_shape)}") from err


def _unit_means(model: nn.Module, units: dict, real: torch.Tensor, spatial: Dict[str, str], normalize) -> dict:
    """Layer path -> ``[units]`` mean activation of each of its units over ``real`` (pixel space), read as the
    sampler reads a unit: one batched pass over every unit of every ranked layer."""
    every = [(path, i) for path, count in units.items() for i in range(count)]
    acts = unit_activations(model, every, real, spatial=spatial, normalize=normalize)
    return dict(zip(units, torch.split(acts.mean(0), list(units.values()))))


def _input_shape_hint(input_shape) -> str:
    hint = "input_shape is one sample's shape, (C, H, W) for images, without the batch dimension"
    if len(input_shape) == 2:
        hint += f"; {tuple(input_shape)} has no channel dimension: did you mean {(1, *input_shape)}?"
    return hint


def sample(model: nn.Module, neurons: NeuronSpec, *, input_shape: Sequence[int],
           real_data: Union[torch.Tensor, Iterable, None] = None,
           discriminator: Optional[nn.Module] = None, progress: Union[bool, float, Progress] = False,
           config: Optional[SamplerConfig] = None, **settings: Any) -> SampleResult:
    """Sample maximally activating inputs for ``neurons`` with Langevin dynamics (LDAM).

    With the defaults (``method="langevin"``) the returned images are the states, after ``steps`` steps, of
    Langevin chains whose law from step ``burn_in`` on is
    ``p_k(x) ∝ exp(a_k(x)/(c_k·T) + λ_k·log D(x) − γ_k·½Σ(neighbour differences)²)`` in the box (``γ_k = 0``
    without D unless ``smoothness`` is given); ``result.scales`` and ``result.disc_weights`` hold ``c_k`` and
    ``λ_k``. :mod:`lightning_ldam.sampling.config` says how they are set and what the other methods do.

    Args:
        model: the network; left exactly as found (modes, ``requires_grad``, ``.grad``, buffers).
        neurons: which neurons, e.g. ``"features.3:0-7"``, ``["conv1:0", "fc:all"]``,
            ``{"fc": [1, 2]}``, ``"fc:top3"`` (the 3 units most active on ``real_data``), ``"fc:random3"`` (drawn
            with ``seed``) (see :mod:`lightning_ldam.sampling.targets`). ``result.neurons`` names the units chosen.
        input_shape: per-sample input shape, e.g. ``(1, 28, 28)``.
        real_data: real images in pixel space (a tensor ``[N, *input_shape]`` or an iterable of batches)
            to train the discriminator on, to set each neuron's target for ``adapt_disc``, to start
            ``init="data"`` chains from and to rank units for ``"layer:topK"``.
        discriminator: a discriminator to use (and to train further in burn-in if ``real_data`` is given), e.g.
            the ``result.discriminator`` of an earlier call (warm start). Takes unit-box images ``[B, C, H, W]``
            and returns logits ``[B]``. One with NaN/Inf weights is left alone and a fresh one used (with a
            warning); one whose weights turn NaN/Inf while training is rebuilt at the end of burn-in (and of an
            ``"ascent"`` call): ``result.discriminator`` is never non-finite, ``result.config["disc_rebuilt"]``
            says whether it was replaced.
        progress: ``True``: a progress bar on a terminal (nothing when stderr is not one); a number of seconds:
            the same bar, appearing only once sampling has taken that long (for callers that do not know in
            advance whether a call is slow); a :class:`~lightning_ldam.sampling.progress.Progress`: its bar on a
            terminal, else plain lines for log files (e.g. ``Progress(delay=3.0, write=log.info)``).
        config: the sampler's settings (:class:`~lightning_ldam.sampling.config.SamplerConfig`; default: every
            default).
        **settings: any field of ``config``'s sections by name, applied over ``config``: ``chains``, ``steps``,
            ``method``, ``seed``, ``init``, ``value_range``, ``normalize``, ``disc_weight``, ``device``, ... (see
            :class:`~lightning_ldam.sampling.config.ChainsConfig`, :class:`~lightning_ldam.sampling.config.InputConfig`,
            :class:`~lightning_ldam.sampling.config.LangevinConfig`,
            :class:`~lightning_ldam.sampling.config.DiscriminatorConfig`,
            :class:`~lightning_ldam.sampling.config.SpeedOptions`). ``init`` starts chains from ``"noise"``
            (uniform in the box), ``"data"`` (real images) or given images in pixel space (``[chains, *input_shape]``,
            every neuron's chains from them, or ``[neurons, chains, *input_shape]``); ``continued`` marks which of
            those chains continue an earlier call's (held through burn-in's search, which the others run).

    Returns:
        :class:`~lightning_ldam.sampling.result.SampleResult`; ``result.sampler_config`` holds the settings used,
        every default filled in.

    Example::

        >>> net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 26 * 26, 10))
        >>> res = sample(net, "3:0-1", input_shape=(1, 28, 28), chains=2, steps=5)
        >>> res.images.shape, res.activations.shape, res.neurons
        (torch.Size([2, 2, 1, 28, 28]), torch.Size([2, 2]), [('3', 0), ('3', 1)])
        >>> res.sampler_config.langevin.burn_in
        2
    """
    started = time.perf_counter()
    if config is not None and not isinstance(config, SamplerConfig):
        raise LDAMArgumentError("config", f"expected a SamplerConfig or None, got {V.shown(config)}")
    requested = (config or SamplerConfig()).with_settings(**settings)
    shape = _check_call(model, input_shape, requested, discriminator, progress)
    request = parse_neurons(neurons)  # parsed once; resolved against the model below
    cfg = _resolved_config(requested, shape, request, real_data is not None, discriminator)
    real_cpu = _collect_real(real_data, shape, cfg.inputs.value_range) if real_data is not None else None
    model_dev = V.model_device(model)
    device = V.check_device("device", cfg.speed.device) or model_dev
    if cfg.speed.cuda_graph and not loop.graphs_supported(device):
        raise LDAMArgumentError("cuda_graph", f"CUDA graphs need a CUDA device; sampling runs on {device}. "
                                              f"Pass cuda_graph=False (or device='cuda')")
    cfg = replace(cfg, speed=replace(cfg.speed, device=device))
    with torch.inference_mode(False), torch.enable_grad():
        net = model if device == model_dev else copy.deepcopy(model).to(device)
        with _frozen(net, channels_last=cfg.speed.channels_last and len(shape) == 3):
            to_model = _ModelInput(cfg, shape, V.model_dtype(net))
            resolved, layer_own = _resolve(net, request, to_model, real_cpu, cfg.chains)
            law = _LayerLaw(resolved, layer_own, cfg, requested.langevin.smoothness, shape)
            return _Run(net, resolved, cfg, real_cpu, to_model, law)(discriminator, progress, started)


def _resolved_config(requested: SamplerConfig, shape: Tuple[int, ...], request: NeuronRequest, has_data: bool,
                     discriminator: Optional[nn.Module]) -> SamplerConfig:
    """Every setting of the call filled in, checked against the input's shape, the spec and the data at hand."""
    own = request.layer_settings()  # the spec's per-layer settings, by the layer paths it writes
    has_source = has_data or discriminator is not None
    disc_cfg = requested.discriminator.resolved(has_source=has_source, given=discriminator is not None)
    assert disc_cfg.disc_weight is not None  # resolved() fills it in
    given_weight = requested.discriminator.disc_weight  # as given: the message quotes it
    _check_disc_source(disc_cfg.disc_weight if given_weight is None else given_weight, own, has_source)
    if requested.langevin.smoothness and len(shape) != 3:
        raise LDAMArgumentError("smoothness", f"the smoothness prior needs image inputs (C, H, W); "
                                              f"input_shape={shape}")
    if isinstance(requested.chains.init, str) and requested.chains.init == "data" and not has_data:
        raise LDAMArgumentError("init", "'data' starts chains from real images; pass real_data=..., or use "
                                        "init='noise'")
    if len(shape) != 3 and (_uses_disc(disc_cfg.disc_weight, own) or discriminator is not None):
        raise LDAMArgumentError("disc_weight", f"the discriminator needs image inputs (C, H, W); input_shape={shape}")
    V.check_normalize(requested.inputs.normalize, shape[0])
    return replace(requested, langevin=requested.langevin.resolved(images=len(shape) == 3,
                                                                   prior=disc_cfg.disc_weight > 0),
                   discriminator=disc_cfg)


def _check_call(model, input_shape, requested: SamplerConfig, discriminator, progress) -> Tuple[int, ...]:
    """The checks of ``sample``'s arguments that the settings' own checks cannot make; returns the input shape."""
    V.check_model(model)
    if any(t.is_meta for t in itertools.chain(model.parameters(), model.buffers())):
        raise LDAMArgumentError("model", "expected a model with weights, got one whose tensors are on the meta "
                                "device (shapes without values); load its weights first, e.g. "
                                "model.to_empty(device='cpu') then model.load_state_dict(...)")
    shape = V.check_input_shape(input_shape)
    if isinstance(requested.chains.init, torch.Tensor):
        _check_init_images(requested.chains.init, shape, requested.inputs.value_range)
    if discriminator is not None and not isinstance(discriminator, nn.Module):
        raise LDAMArgumentError("discriminator",
            f"expected a torch.nn.Module or None, got {type(discriminator).__name__}")
    if discriminator is not None and any(p.is_meta for p in discriminator.parameters()):
        raise LDAMArgumentError("discriminator", "expected a discriminator with weights, got one whose "
                                "parameters are on the meta device")
    if not isinstance(progress, (bool, Progress)):
        V.check_positive("progress", progress, allow_zero=True)
    return shape


def _uses_disc(disc_weight: float, settings: Dict[str, dict]) -> bool:
    """Whether any neuron's λ is > 0 (the call's, or a layer's own)."""
    return disc_weight > 0 or any(s.get("disc_weight", 0.0) > 0 for s in settings.values())


def _check_disc_source(disc_weight: float, settings: Dict[str, dict], has_source: bool) -> None:
    """λ > 0 anywhere needs real data or a trained discriminator."""
    if has_source or not _uses_disc(disc_weight, settings):
        return
    if disc_weight > 0:
        raise LDAMArgumentError("disc_weight", f"{disc_weight} > 0 needs real_data (to train a discriminator) or a "
                                f"trained discriminator; pass one of them, or disc_weight=0.0")
    layer = next(layer for layer, s in settings.items() if s.get("disc_weight", 0.0) > 0)
    raise LDAMArgumentError("neurons", f"layer {layer!r} sets disc_weight={settings[layer]['disc_weight']} > 0, which "
                            f"needs real_data (to train a discriminator) or a trained discriminator; pass one of "
                            f"them, or drop the layer's disc_weight")


class _LayerLaw:
    """The law's per-neuron knobs where the spec's per-layer settings override the call's (see
    :data:`~lightning_ldam.sampling.targets.LAYER_SETTINGS`).

    A layer that sets ``disc_weight`` but not ``smoothness`` gets the smoothness default of its own λ (κ 1.5 where
    λ > 0, 0 at λ = 0), unless the call gave ``smoothness``.

    Attributes:
        per_neuron: ``{"disc_weight" | "temperature" | "smoothness": [value per neuron]}`` (a layer's own setting,
            else the call's).
        spatial: the call's ``spatial``, or ``{layer: mode}`` for every layer when a layer sets its own.
        settings: the per-layer settings, keyed by resolved layer path (reported in ``result.config``).
        uses_disc: whether any neuron's λ is > 0.
    """

    def __init__(self, neurons, settings: Dict[str, dict], cfg: SamplerConfig, smoothness: Optional[float],
                 shape):
        spatial = cfg.chains.spatial
        self.settings = settings
        disc_weight, law = cfg.discriminator.disc_weight, cfg.langevin
        assert disc_weight is not None, "_LayerLaw takes a resolved config"
        self.uses_disc = _uses_disc(disc_weight, settings)
        layers = list(dict.fromkeys(layer for layer, _ in neurons))
        modes = {layer: settings.get(layer, {}).get("spatial", spatial) for layer in layers}
        self.spatial = spatial if all(m == spatial for m in modes.values()) else modes
        knobs = ("disc_weight", "temperature", "smoothness")
        self.per_neuron: Dict[str, List[float]] = {k: [] for k in knobs}
        for layer, _ in neurons:
            own = settings.get(layer, {})
            lam = own.get("disc_weight", disc_weight)
            kappa = own.get("smoothness", law.smoothness if (smoothness is not None or "disc_weight" not in own)
                            else default_smoothness(law.method, len(shape) == 3, lam > 0))
            if kappa and len(shape) != 3:
                raise LDAMArgumentError("neurons", f"layer {layer!r}: the smoothness prior needs image inputs "
                                        f"(C, H, W); input_shape={shape}")
            for k, v in zip(knobs, (lam, own.get("temperature", law.temperature), kappa)):
                self.per_neuron[k].append(float(v))


def _held_rows(continued, init, n: int, chains: int, device) -> Optional[torch.Tensor]:
    """``continued`` as one bool per batch row (neuron-major), or ``None``; checked against ``init`` and the counts."""
    if continued is None:
        return None
    if not isinstance(init, torch.Tensor):
        raise LDAMArgumentError("continued", "marks chains that continue given starting images; pass init= a "
                                             "tensor of them, or drop continued=")
    if not isinstance(continued, torch.Tensor) or continued.dtype != torch.bool \
            or tuple(continued.shape) not in ((chains,), (n, chains)):
        raise LDAMArgumentError("continued", f"expected a bool tensor of shape [{chains}] or [{n}, {chains}], got "
                                             f"{V.shown(continued)}")
    return continued.to(device).expand(n, chains).reshape(-1).clone()


def _check_init_images(init: torch.Tensor, shape, box) -> None:
    """Starting images: ``[chains, *input_shape]`` (every neuron's chains start from them) or ``[neurons, chains,
    *input_shape]``, finite, in pixel space inside ``value_range`` (the neuron count is checked once resolved)."""
    accepted = (f"[chains, {', '.join(map(str, shape))}] or [neurons, chains, {', '.join(map(str, shape))}] "
                f"images in value_range={box}")
    if not init.is_floating_point() or init.dim() not in (len(shape) + 1, len(shape) + 2) \
            or tuple(init.shape[-len(shape):]) != tuple(shape):
        raise LDAMArgumentError("init", f"expected 'noise', 'data' or a float tensor of {accepted}; "
                                f"got {V.shown(init)}")
    lo, hi = box
    tol = 1e-6 * (hi - lo)
    finite = torch.isfinite(init)
    if not bool(finite.all()):
        raise LDAMArgumentError("init", f"expected finite starting images, got {int((~finite).sum())} NaN/Inf values")
    low, high = float(init.min()), float(init.max())
    if low < lo - tol or high > hi + tol:
        raise LDAMArgumentError("init", f"expected starting images inside value_range={box} (pixel space, as "
                                f"real_data), got values in [{low:.4g}, {high:.4g}]")


def _check_real_finite(real_cpu: torch.Tensor) -> None:
    """NaN/Inf real images would make D (and every chain started from them) non-finite: refuse them up front."""
    bad = ~torch.isfinite(real_cpu)
    if bad.any():
        images = bad.flatten(1).any(1)
        raise LDAMArgumentError("real_data", f"expected finite pixel values, got {int(bad.sum())} NaN/Inf values in "
                                f"{int(images.sum())} of {real_cpu.shape[0]} images (the first at index "
                                f"{int(images.nonzero()[0])}); drop or repair those images")


def _check_real_box(real_cpu: torch.Tensor, lo: float, hi: float) -> None:
    span_tol = 1e-3 * (hi - lo)
    rmin, rmax = float(real_cpu.min()), float(real_cpu.max())
    if rmin < lo - span_tol or rmax > hi + span_tol:
        raise LDAMArgumentError("real_data", f"values span [{rmin:.4g}, {rmax:.4g}], outside value_range=({lo}, {hi}); "
                         f"pass pixel-space images (before normalisation) and set value_range to their box")


class _ModelInput:
    """Unit-box chains -> what the model takes (pixels, normalised, its dtype and layout), run under autocast."""

    def __init__(self, cfg: SamplerConfig, shape: Tuple[int, ...], dtype: torch.dtype):
        (lo, hi), speed = cfg.inputs.value_range, cfg.speed
        assert speed.device is not None, "sample() sets the device"
        self.lo, self.span, self.shape, self.dtype, self.device = lo, hi - lo, shape, dtype, speed.device
        self.channels_last = speed.channels_last and len(shape) == 3  # a layout of 4-D (image) batches only
        self.autocast_dtype, self.cuda_graph = speed.autocast_dtype, speed.cuda_graph
        norm = V.check_normalize(cfg.inputs.normalize, shape[0])
        # clone(): tensors made under a caller's inference_mode cannot be saved for backward
        self.norm = None if norm is None else tuple(
            t.to(self.device).view(1, -1, *([1] * (len(shape) - 1))).clone() for t in norm)

    def __call__(self, u: torch.Tensor) -> torch.Tensor:
        x = self.lo + self.span * u
        x = x if self.norm is None else (x - self.norm[0]) / self.norm[1]
        x = x.to(self.dtype)  # chains stay float32; a float64/half model gets its own dtype
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def run_exact(self, reader: ActivationReader, u: torch.Tensor) -> torch.Tensor:
        """The activations in the model's own dtype with autocast off (even inside a caller's autocast)."""
        with torch.autocast(self.device.type, enabled=False):
            return reader(self(u))

    def run(self, reader: ActivationReader, u: torch.Tensor) -> torch.Tensor:
        if self.autocast_dtype is None:
            return reader(self(u))
        # a CUDA graph must not keep autocast's cache of cast weights across replays
        with torch.autocast(self.device.type, dtype=self.autocast_dtype, cache_enabled=not self.cuda_graph):
            return reader(self(u))


class _Run:
    """One sampling call: the chains, the discriminator and the loop over steps."""

    def __init__(self, net, neurons, config: SamplerConfig, real_cpu, to_model: _ModelInput, law: _LayerLaw):
        self.net, self.neurons, self.shape, self.to_model, self.law = net, neurons, to_model.shape, to_model, law
        self.config, self.cfg, self.disc_cfg = config, config.langevin, config.discriminator
        self.chains, self.seed, self.device = config.chains.chains, config.chains.seed, to_model.device
        self.box = config.inputs.value_range
        self.spatial, self.uses_disc = law.spatial, law.uses_disc
        lo, hi = self.box
        self.real = None if real_cpu is None else ((real_cpu - lo) / (hi - lo)).clamp_(0, 1).to(self.device)
        # Separate streams: the chains' starts and noise never depend on how much D was trained.
        self.chain_gen = torch.Generator(device=self.device).manual_seed(self.seed)
        self.disc_gen = torch.Generator(device=self.device).manual_seed(
            (self.seed * 0x9E3779B1 + 0x7F4A7C15) % 2 ** 62)

    def _initial(self, init) -> torch.Tensor:
        n, batch = len(self.neurons), len(self.neurons) * self.chains
        if isinstance(init, torch.Tensor):
            lo, hi = self.box
            images = init.detach().to(self.device, torch.float32)
            if images.dim() == len(self.shape) + 1:  # [chains, ...]: the same starts for every neuron
                images = images.unsqueeze(0).expand(n, *images.shape)
            if tuple(images.shape[:2]) != (n, self.chains):
                raise LDAMArgumentError("init", f"expected starting images for {n} neurons x {self.chains} chains "
                                        f"([{self.chains}, ...] or [{n}, {self.chains}, ...]), got shape "
                                        f"{tuple(init.shape)}")
            return ((images.reshape(batch, *self.shape) - lo) / (hi - lo)).clamp_(0.0, 1.0).contiguous()
        if init == "data":
            assert self.real is not None  # init="data" is refused without real data
            idx = torch.randint(self.real.shape[0], (batch,), generator=self.chain_gen, device=self.device)
            return self.real[idx.to(self.real.device)].clone()
        return torch.rand((batch, *self.shape), generator=self.chain_gen, device=self.device)

    def _real_targets(self):
        """``(mean, max)`` activation per neuron over up to TARGET_REAL_IMAGES real inputs (for ``adapt_disc``)."""
        if self.real is None or not self.disc_cfg.adapt_disc or self.cfg.method == "ascent" or not self.uses_disc:
            return None
        lo, hi = self.box
        real = lo + (hi - lo) * self.real[:TARGET_REAL_IMAGES]  # back to pixel space
        acts = unit_activations(self.net, self.neurons, real, spatial=self.spatial, normalize=self.to_model.norm)
        return acts.mean(0).to(self.device), acts.max(0).values.to(self.device)

    def __call__(self, given_disc, progress, started) -> SampleResult:
        cfg, neurons, init, cuda_graph = self.cfg, self.neurons, self.config.chains.init, self.config.speed.cuda_graph
        held = _held_rows(self.config.chains.continued, init, len(neurons), self.chains, self.device)
        u0 = self._initial(init)
        disc = DiscriminatorKeeper(self.disc_cfg, given_disc, u0, self.real, self.seed, self.disc_gen, self.uses_disc)
        reader = ActivationReader(self.net, neurons, self.chains, spatial=self.spatial, device=self.device)
        exact = None if self.to_model.autocast_dtype is None else (lambda u: self.to_model.run_exact(reader, u))
        objective = Objective(lambda u: self.to_model.run(reader, u), disc.module if self.uses_disc else None,
                              exact=exact)
        targets = self._real_targets()
        try:
            with reader.attached():
                state = ChainState(u0, cfg, len(neurons), self.chain_gen, graph=cuda_graph, held=held)
                chains = LangevinChains(state, objective, self.law.per_neuron, targets)
                step_seconds = loop.run_steps(chains, disc, cfg, cuda_graph, self.device, progress)
                disc.ensure_finite(chains.u)  # "ascent" trains D to the end: never return a broken one
                with torch.no_grad():
                    final = self.to_model.run(reader, chains.u)
                    scores = disc.scores(chains.u)
        finally:
            disc.restore()
        return self._result(chains, final, scores, disc, step_seconds, started)

    def _result(self, chains: LangevinChains, final, scores, keeper: DiscriminatorKeeper, step_seconds,
                started) -> SampleResult:
        n, c, cfg, disc = len(self.neurons), self.chains, self.cfg, keeper.module
        lo, hi = self.box
        total_resets = int(chains.state.resets.sum())
        if total_resets:
            log.warning("LDAM: %d chain states turned NaN/Inf and were re-initialised", total_resets)
        fixed = cfg.method != "ascent"
        return SampleResult(
            neurons=list(self.neurons),
            images=(lo + (hi - lo) * chains.u).clamp_(lo, hi).detach().cpu().view(n, c, *self.shape),
            activations=final.detach().float().cpu().view(n, c),
            trace=chains.state.trace.detach().cpu().t().reshape(n, c, cfg.steps),
            disc_scores=None if scores is None else scores.cpu().view(n, c),
            nonfinite_resets=chains.state.resets.view(n, c).sum(1).cpu(),
            value_range=(lo, hi), discriminator=disc, seconds=time.perf_counter() - started,
            step_seconds=step_seconds,
            acceptance_rate=_cpu(chains.acceptance_rate()),
            step_sizes=_cpu(chains.step_sizes()),
            metric=_cpu(chains.metric_diagonal()),
            **cast(Dict[str, Any], _mixing(chains, n, c)),
            scales=cast(torch.Tensor, chains.law.scale).cpu() if fixed else None,  # fixed at burn-in's search end
            disc_weights=(cast(torch.Tensor, chains.law.disc_weights).cpu()
                          if fixed and disc is not None and self.uses_disc else None),
            sampler_config=self.config, config=self._config_record(keeper))

    def _config_record(self, keeper: DiscriminatorKeeper) -> Dict[str, object]:
        """The settings by name for logs: plain values (tensors by their shape), the call's own facts added."""
        record = self.config.settings()
        init, continued, normalize = record["init"], record["continued"], record["normalize"]
        record.update(spatial=self.spatial, device=str(self.device), disc_rebuilt=keeper.rebuilt,
                      init=f"images {list(init.shape)}" if isinstance(init, torch.Tensor) else init,
                      continued=None if continued is None else f"{int(continued.sum())} of {continued.numel()}",
                      normalize=None if normalize is None else [torch.as_tensor(t).flatten().tolist()
                                                                for t in normalize],
                      layer_settings={k: dict(v) for k, v in self.law.settings.items()})
        return record


def _mixing(chains: LangevinChains, n: int, c: int) -> Dict[str, Optional[torch.Tensor]]:
    """Split R-hat and bulk ESS per neuron over the sampling phase, of the activation and of the fixed random
    projections of the state (:mod:`lightning_ldam.sampling.diagnostics`); ``None`` without a sampling phase of at least
    :data:`~lightning_ldam.sampling.diagnostics.MIN_DRAWS` steps (``"ascent"``, or burn-in to the end)."""
    none = dict.fromkeys(("rhat", "ess", "rhat_activation", "ess_activation"))
    state = chains.state
    draws = state.draws
    if draws < MIN_DRAWS:
        return none
    acts = state.trace[-draws:].detach().float().cpu().t().reshape(n, c, draws)
    assert state.proj_trace is not None  # kept while there are draws
    proj = state.proj_trace.detach().float().cpu().permute(1, 2, 0).reshape(n, c, -1, draws).transpose(1, 2)
    finite = torch.isfinite(acts).all() and torch.isfinite(proj).all()
    if not finite:
        return none
    rhat_act, ess_act = split_rhat(acts), ess_bulk(acts)
    rhat_proj, ess_proj = split_rhat(proj), ess_bulk(proj)  # [n, k]
    return {"rhat": torch.maximum(rhat_act, rhat_proj.max(1).values),
            "ess": torch.minimum(ess_act, ess_proj.min(1).values),
            "rhat_activation": rhat_act, "ess_activation": ess_act}


def _cpu(t: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
    return None if t is None else t.cpu()


@contextmanager
def _frozen(model: nn.Module, channels_last: bool = False) -> Iterator[nn.Module]:
    """Eval mode and ``requires_grad=False`` (and optionally NHWC layout) for the duration; all restored."""
    flags = [(p, p.requires_grad) for p in model.parameters()]
    layouts = []
    with kept_modes(model):
        model.eval()
        try:
            for p, _ in flags:
                p.requires_grad_(False)
            if channels_last:
                for t in list(model.parameters()) + list(model.buffers()):
                    if t.dim() == 4 and not t.is_contiguous(memory_format=torch.channels_last):
                        layouts.append((t, t.data))  # the original storage comes back on exit
                        t.data = t.data.contiguous(memory_format=torch.channels_last)
            yield model
        finally:
            for t, data in layouts:
                t.data = data
            for p, flag in flags:
                p.requires_grad_(flag)
