"""Langevin Dynamics Activation Maximization (LDAM, arXiv 1812.04604): the sampler.

For neuron k of a frozen network, LDAM samples inputs from

    p(x) ∝ exp( a_k(x) / T + λ · log D(x) ),   x inside the input box,

by (projected) Langevin dynamics ``x ← clip(x + (ε/2)·∇ₓ log p(x) + √ε·σ·ξ)``, ξ ~ N(0, I).

Every chain of every neuron lives in one batch: one forward evaluates all of them and each chain's
energy reads its own neuron. Chains are kept in the *unit box* ``u ∈ [0, 1]`` (``x = lo + (hi-lo)·u``),
so step sizes and noise mean the same for any ``value_range`` and any image size.

This module imports no Lightning.
"""
from __future__ import annotations

import copy
import logging
import math
import time
from dataclasses import dataclass
from typing import Iterable, Optional, Sequence, Tuple, Union

import torch
from torch import nn

from lightning_ldam import _validation as V
from lightning_ldam.capture import ActivationReader, capture_outputs, run_to_targets
from lightning_ldam.discriminator import DiscriminatorTrainer, build_discriminator
from lightning_ldam.reservoir import extract_input
from lightning_ldam.result import SampleResult
from lightning_ldam.targets import NeuronSpec, find_layer, parse_neurons, resolve_neurons

__all__ = ["sample", "LangevinConfig", "DEFAULT_DISC_WEIGHT", "WARM_DISC_STEPS"]

log = logging.getLogger(__name__)

#: λ used when ``real_data`` is given and ``disc_weight`` is not: chosen on benchmarks/quality.py.
DEFAULT_DISC_WEIGHT = 1.75
#: Steps enough with a warm discriminator (one trained by earlier calls): on benchmarks/quality.py with
#: ``--warm-d`` they meet every MNIST quality target that a fresh discriminator needs the default 512 for.
WARM_DISC_STEPS = 256
#: Real images kept (at most) from ``real_data`` for the discriminator and data initialisation.
MAX_REAL_IMAGES = 4096

PRECONDITIONERS = ("rms", "psgld", "none")
SCHEDULES = ("cosine", "linear", "constant")
INITS = ("noise", "data")
SPATIAL = ("mean", "center")


@dataclass(frozen=True)
class LangevinConfig:
    """Resolved sampler settings (all in unit-box coordinates).

    Attributes:
        steps: Langevin steps.
        step_size: ε at the first step (annealed by ``schedule`` down to ``final_step_fraction·ε``).
        noise: σ at the first step (annealed to 0 by ``schedule``): the per-step noise is ``√ε·σ``.
        temperature: T; the activation drift is divided by it.
        disc_weight: λ, weight of the ``log D`` drift.
        precondition: ``"rms"`` (default): each drift term is divided by its per-chain RMS, so ε is a
            step in pixels whatever the network's activation scale (the figures in benchmarks/README.md
            support it: with raw gradients no single ε works across layers and models); ``"psgld"``:
            RMSprop-preconditioned drift (pSGLD-style); ``"none"``: raw gradients (plain SGLD).
        schedule: ``"cosine"``, ``"linear"`` or ``"constant"`` annealing of ε and σ.
        final_step_fraction: ε at the last step as a fraction of the first.
        disc_every: train D every this many Langevin steps.
        disc_steps: D updates each time it is trained.
        disc_warmup: D updates on real vs initial chains before the first Langevin step.
    """

    steps: int = 512
    step_size: float = 0.1
    noise: float = 0.1
    temperature: float = 1.0
    disc_weight: float = 0.0
    precondition: str = "rms"
    schedule: str = "cosine"
    final_step_fraction: float = 0.1
    disc_every: int = 1
    disc_steps: int = 2
    disc_warmup: int = 50

    def factor(self, t: int) -> float:
        """Annealing factor in [0, 1] at step ``t`` (1 at the start)."""
        if self.schedule == "constant" or self.steps <= 1:
            return 1.0
        frac = t / (self.steps - 1)
        return 0.5 * (1 + math.cos(math.pi * frac)) if self.schedule == "cosine" else 1 - frac

    def eps(self, t: int) -> float:
        f = self.factor(t)
        return self.step_size * (self.final_step_fraction + (1 - self.final_step_fraction) * f)

    def sigma(self, t: int) -> float:
        return self.noise * self.factor(t)


def _collect_real(real_data, input_shape: Tuple[int, ...], limit: int) -> torch.Tensor:
    """Materialise up to ``limit`` real images from a tensor or an iterable of batches."""
    def first_tensor(batch):
        try:
            return extract_input(batch)
        except ValueError as err:  # same reading rules as the callback's reservoir; name this argument
            raise TypeError(f"real_data: expected a tensor [N, {', '.join(map(str, input_shape))}] or an iterable "
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
            raise ValueError("real_data: the iterable yielded no batches")
    else:
        raise TypeError(f"real_data: expected a tensor or an iterable of batches, got {type(real_data).__name__}")
    for t in chunks:
        if not isinstance(t, torch.Tensor) or tuple(t.shape[1:]) != tuple(input_shape):
            shape = tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
            raise ValueError(f"real_data: expected images of shape [N, {', '.join(map(str, input_shape))}] "
                             f"(input_shape={tuple(input_shape)}), got {shape}")
    real = torch.cat([t.detach().to("cpu", torch.float32) for t in chunks])[:limit]
    if real.shape[0] == 0:
        raise ValueError("real_data: got zero images")
    return real


def _resolve(model: nn.Module, neurons: NeuronSpec, input_shape, device, normalize, dtype) -> list:
    """Check layer paths, then one dry forward (batch of one) to learn layer sizes and resolve indices."""
    aliases = {layer: find_layer(model, layer)[0] for layer, _ in parse_neurons(neurons)}
    paths = list(dict.fromkeys(aliases.values()))
    probe = torch.zeros((1, *input_shape), device=device)
    if normalize is not None:
        probe = (probe - normalize[0]) / normalize[1]
    probe = probe.to(dtype)
    with torch.no_grad(), capture_outputs(model, paths) as outputs:
        try:
            captured = run_to_targets(model, probe, outputs, paths)
        except Exception as err:  # the model's own error, re-raised with the shape we tried
            if str(err).startswith("neurons:"):  # ours: a target layer that is not usable
                raise
            raise ValueError(f"input_shape: the model rejected an input of shape {tuple(probe.shape)} "
                             f"(input_shape={tuple(input_shape)}): {type(err).__name__}: {err}") from err
    units = {}
    for p, out in captured.items():
        if out.dim() < 2:
            raise ValueError(f"neurons: layer {p!r} outputs shape {tuple(out.shape)}; a target needs "
                             f"[batch, channels, ...]")
        units[p] = int(out.shape[1])
    return resolve_neurons(neurons, units, aliases)


def _inv_rms(g: torch.Tensor, weight: float) -> torch.Tensor:
    """``weight / RMS(g)`` per chain, shaped to broadcast over ``g`` (the RMS preconditioner)."""
    norm = torch.linalg.vector_norm(g.flatten(1), dim=1).clamp_min_(1e-12)
    return (weight * math.sqrt(g[0].numel()) / norm).view(-1, *([1] * (g.dim() - 1)))


def sample(model: nn.Module, neurons: NeuronSpec, *, input_shape: Sequence[int], chains: int = 8,
           steps: Optional[int] = None, real_data=None, disc_weight: Optional[float] = None,
           value_range: Tuple[float, float] = (0.0, 1.0), normalize=None, init: str = "noise",
           seed: int = 0, device: Union[str, torch.device, None] = None, step_size: Optional[float] = None,
           noise: Optional[float] = None, temperature: float = 1.0, precondition: str = "rms",
           schedule: str = "cosine", spatial: str = "mean", discriminator: Optional[nn.Module] = None,
           disc_lr: float = 1e-3, disc_every: int = 1, disc_steps: int = 2, disc_warmup: Optional[int] = None,
           autocast_dtype: Optional[torch.dtype] = None, channels_last: bool = False, cuda_graph: bool = False,
           progress: Union[bool, float] = False) -> SampleResult:
    """Sample maximally activating inputs for ``neurons`` with Langevin dynamics (LDAM).

    Args:
        model: the network; left exactly as found (modes, ``requires_grad``, ``.grad``, buffers).
        neurons: which neurons, e.g. ``"features.3:0-7"``, ``["conv1:0", "fc:all"]``,
            ``{"fc": [1, 2]}`` (see :mod:`lightning_ldam.targets`).
        input_shape: per-sample input shape, e.g. ``(1, 28, 28)``.
        chains: chains per neuron.
        steps: Langevin steps (default 512).
        real_data: real images in pixel space (a tensor ``[N, *input_shape]`` or an iterable of batches)
            to train the discriminator on and to start ``init="data"`` chains from.
        disc_weight: λ. Default :data:`DEFAULT_DISC_WEIGHT` when ``real_data`` or ``discriminator`` is
            given, else 0 (no discriminator is built: it costs nothing).
        value_range: the pixel box ``(lo, hi)`` samples stay in.
        normalize: ``(mean, std)`` applied to pixel-space chains before the model (per channel or scalar).
        init: ``"noise"`` (uniform in the box) or ``"data"`` (real images).
        seed: seed of the private generator; the global RNG is never used.
        device: where to sample; default the model's device (a copy of the model is moved otherwise).
        step_size: ε at the first step, in unit-box pixels (default 0.1).
        noise: σ at the first step (default 0.1); per-step noise is ``√ε·σ``, annealed to 0.
        temperature: T, divides the activation drift.
        precondition: ``"rms"`` (default), ``"psgld"`` or ``"none"`` (see :class:`LangevinConfig`).
        schedule: annealing of ε and σ: ``"cosine"`` (default), ``"linear"``, ``"constant"``.
        spatial: conv channels reduce by ``"mean"`` over positions (default) or take the ``"center"`` unit.
        discriminator: a discriminator to use (and keep training if ``real_data`` is given), e.g. the
            ``result.discriminator`` of an earlier call (warm start). Takes unit-box images ``[B, C, H, W]``
            and returns logits ``[B]``.
        disc_lr: discriminator learning rate (Adam).
        disc_every: train D every this many Langevin steps.
        disc_steps: D updates each time it is trained (default 2: on MNIST a D that keeps up with the
            chains lowered the realism ratio from 1.32 to 1.16 at equal λ; benchmarks/README.md).
        disc_warmup: D updates before the first step (default 50 for a fresh D, 0 for a given one).
        autocast_dtype: e.g. ``torch.bfloat16`` to run the model under autocast (GPU speed option).
        channels_last: run convolutions in NHWC memory layout (a GPU speed option with autocast; the
            model's tensors get their layout back afterwards, values are never touched).
        cuda_graph: replay each Langevin step as one CUDA graph (CUDA only): for small networks, whose steps
            are bound by kernel launches, not arithmetic. The discriminator's updates stay eager between
            replays. Same dynamics; the noise stream differs from the eager one.
        progress: ``True``: a progress bar; a number of seconds: a bar that appears only once sampling
            has taken that long (for callers that do not know in advance whether a call is slow).

    Returns:
        :class:`~lightning_ldam.result.SampleResult`.

    Example::

        >>> net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 26 * 26, 10))
        >>> res = sample(net, "3:0-1", input_shape=(1, 28, 28), chains=2, steps=5)
        >>> res.images.shape, res.activations.shape, res.neurons
        (torch.Size([2, 2, 1, 28, 28]), torch.Size([2, 2]), [('3', 0), ('3', 1)])
    """
    started = time.perf_counter()
    # ---- validate everything before any work -------------------------------------------------------
    V.check_model(model)
    shape = V.check_input_shape(input_shape)
    V.check_positive("chains", chains, integer=True)
    defaults = LangevinConfig()
    steps = defaults.steps if steps is None else steps
    V.check_positive("steps", steps, integer=True)
    step_size = defaults.step_size if step_size is None else step_size
    V.check_positive("step_size", step_size)
    noise = defaults.noise if noise is None else noise
    V.check_positive("noise", noise, allow_zero=True)
    V.check_positive("temperature", temperature)
    V.check_positive("disc_lr", disc_lr)
    V.check_positive("disc_every", disc_every, integer=True)
    V.check_positive("disc_steps", disc_steps, integer=True)
    lo, hi = V.check_value_range(value_range)
    V.check_choice("init", init, INITS)
    V.check_choice("precondition", precondition, PRECONDITIONERS)
    V.check_choice("schedule", schedule, SCHEDULES)
    V.check_choice("spatial", spatial, SPATIAL)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed: expected an int, got {seed!r}")
    if discriminator is not None and not isinstance(discriminator, nn.Module):
        raise TypeError(f"discriminator: expected a torch.nn.Module or None, got {type(discriminator).__name__}")
    if disc_weight is None:
        disc_weight = DEFAULT_DISC_WEIGHT if (real_data is not None or discriminator is not None) else 0.0
    V.check_positive("disc_weight", disc_weight, allow_zero=True)
    if disc_weight > 0 and real_data is None and discriminator is None:
        raise ValueError(f"disc_weight: {disc_weight} > 0 needs real_data (to train a discriminator) or a "
                         f"trained discriminator; pass one of them, or disc_weight=0.0")
    if init == "data" and real_data is None:
        raise ValueError("init: 'data' starts chains from real images; pass real_data=..., or use init='noise'")
    for name, flag in (("channels_last", channels_last), ("cuda_graph", cuda_graph)):
        if not isinstance(flag, bool):
            raise TypeError(f"{name}: expected True or False, got {flag!r}")
    if not isinstance(progress, bool):
        V.check_positive("progress", progress, allow_zero=True)
    if disc_warmup is not None:
        V.check_positive("disc_warmup", disc_warmup, integer=True, allow_zero=True)
    if len(shape) != 3 and (disc_weight > 0 or discriminator is not None):
        raise ValueError(f"disc_weight: the discriminator needs image inputs (C, H, W); input_shape={shape}")
    norm = V.check_normalize(normalize, shape[0])
    real_cpu = _collect_real(real_data, shape, MAX_REAL_IMAGES) if real_data is not None else None
    if real_cpu is not None:
        span_tol = 1e-3 * (hi - lo)
        rmin, rmax = float(real_cpu.min()), float(real_cpu.max())
        if rmin < lo - span_tol or rmax > hi + span_tol:
            raise ValueError(f"real_data: values span [{rmin:.4g}, {rmax:.4g}], outside value_range=({lo}, {hi}); "
                             f"pass pixel-space images (before normalisation) and set value_range to their box")

    model_dev = V.model_device(model)
    device = model_dev if device is None else torch.device(device)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    if cuda_graph and not _graphs_supported(device):
        raise ValueError(f"cuda_graph: CUDA graphs need a CUDA device; sampling runs on {device}. "
                         f"Pass cuda_graph=False (or device='cuda')")
    cfg = LangevinConfig(steps=steps, step_size=float(step_size), noise=float(noise),
                         temperature=float(temperature), disc_weight=float(disc_weight),
                         precondition=precondition, schedule=schedule, disc_every=disc_every, disc_steps=disc_steps,
                         disc_warmup=(disc_warmup if disc_warmup is not None
                                      else (50 if discriminator is None else 0)))

    with torch.inference_mode(False), torch.enable_grad():
        net = model if device == model_dev else copy.deepcopy(model).to(device)
        if norm is not None:
            # clone(): tensors made under a caller's inference_mode cannot be saved for backward
            norm = tuple(t.to(device).view(1, -1, *([1] * (len(shape) - 1))).clone() for t in norm)
        nhwc = channels_last and len(shape) == 3  # a layout of 4-D (image) batches only
        with _frozen(net, channels_last=nhwc):
            dtype = V.model_dtype(net)
            resolved = _resolve(net, neurons, shape, device, norm, dtype)
            return _run(net, resolved, shape, chains, cfg, lo, hi, norm, real_cpu, init, seed, device,
                        spatial, discriminator, disc_lr, autocast_dtype, nhwc, progress, started, dtype, cuda_graph)


class _frozen:
    """Eval mode and ``requires_grad=False`` (and optionally NHWC layout) for the duration; all restored."""

    def __init__(self, model: nn.Module, channels_last: bool = False):
        self.model = model
        self.channels_last = channels_last
        self.layouts = []

    def __enter__(self):
        self.modes = [(m, m.training) for m in self.model.modules()]
        self.flags = [(p, p.requires_grad) for p in self.model.parameters()]
        self.model.eval()
        for p, _ in self.flags:
            p.requires_grad_(False)
        if self.channels_last:
            for t in list(self.model.parameters()) + list(self.model.buffers()):
                if t.dim() == 4 and not t.is_contiguous(memory_format=torch.channels_last):
                    self.layouts.append((t, t.data))  # the original storage comes back on exit
                    t.data = t.data.contiguous(memory_format=torch.channels_last)
        return self.model

    def __exit__(self, *exc):
        for t, data in self.layouts:
            t.data = data
        for m, mode in self.modes:
            m.training = mode
        for p, flag in self.flags:
            p.requires_grad_(flag)
        return False


def _run(net, neurons, shape, chains, cfg: LangevinConfig, lo, hi, norm, real_cpu, init, seed, device,
         spatial, discriminator, disc_lr, autocast_dtype, channels_last, progress, started, dtype,
         cuda_graph: bool) -> SampleResult:
    span = hi - lo
    n = len(neurons)
    batch = n * chains
    gen = torch.Generator(device=device).manual_seed(seed)
    real = None if real_cpu is None else ((real_cpu - lo) / span).clamp_(0, 1).to(device)

    if init == "data":
        idx = torch.randint(real.shape[0], (batch,), generator=gen, device=device)
        u = real[idx.to(real.device)].clone()
    else:
        u = torch.rand((batch, *shape), generator=gen, device=device)
    u0 = u.clone()  # non-finite chains restart here (no extra RNG, no host sync)

    trainer = None
    disc = None
    if cfg.disc_weight > 0 or discriminator is not None:
        disc = discriminator if discriminator is not None else build_discriminator(shape[0], shape[1:], seed, device)
        disc = disc.to(device)
        disc_flags = [(p, p.requires_grad) for p in disc.parameters()]
        disc_mode = disc.training
        disc.requires_grad_(True)
        if real is not None:
            trainer = DiscriminatorTrainer(disc, real, gen, lr=disc_lr)
            for _ in range(cfg.disc_warmup):
                trainer.step(u)

    reader = ActivationReader(net, neurons, chains, spatial=spatial, device=device)
    trace = torch.empty((cfg.steps, batch), device=device)
    resets = torch.zeros(batch, dtype=torch.long, device=device)
    second_moment = torch.zeros_like(u) if cfg.precondition == "psgld" else None
    view = (-1,) + (1,) * len(shape)

    def to_model(x_unit):
        x = lo + span * x_unit
        x = x if norm is None else (x - norm[0]) / norm[1]
        x = x.to(dtype)  # chains stay float32; a float64/half model gets its own dtype
        return x.contiguous(memory_format=torch.channels_last) if channels_last else x

    def activations(x_unit):
        if autocast_dtype is None:
            return reader(to_model(x_unit))
        # a CUDA graph must not keep autocast's cache of cast weights across replays
        with torch.autocast(device.type, dtype=autocast_dtype, cache_enabled=not cuda_graph):
            return reader(to_model(x_unit))

    # Per-step scalars. Eager steps read them as Python floats; a graphed step reads them from device tables
    # at a device-side step counter, because a CUDA graph replays fixed kernels with fixed arguments.
    half_eps = [0.5 * cfg.eps(t) for t in range(cfg.steps)]
    noise_scale = [math.sqrt(cfg.eps(t)) * cfg.sigma(t) for t in range(cfg.steps)]
    psgld_scale = [1.0 / (1 - 0.99 ** (t + 1)) for t in range(cfg.steps)]
    tables = counter = None
    if cuda_graph:
        tables = {k: torch.tensor(v, device=device) for k, v in
                  (("half_eps", half_eps), ("noise_scale", noise_scale), ("psgld_scale", psgld_scale))}
        counter = torch.zeros(1, dtype=torch.long, device=device)

    def langevin_step(t: Optional[int]) -> None:
        """One step, in place on ``u`` (and ``trace``, ``resets``, ``second_moment``). ``t=None``: the
        graph form (scalars and the trace row at the device counter, noise drawn at every step)."""
        def at(name, values):
            return values[t] if t is not None else tables[name].index_select(0, counter)

        x = u.detach().requires_grad_(True)
        acts = activations(x)
        if t is not None:
            trace[t] = acts.detach()
        else:
            trace.index_copy_(0, counter, acts.detach().unsqueeze(0))
        (g_act,) = torch.autograd.grad(acts.sum(), x)
        # Few, fused in-place kernels: on small GPU models the step is launch-bound.
        if cfg.precondition == "rms":
            drift = g_act.mul_(_inv_rms(g_act, 1.0 / cfg.temperature))
        else:
            drift = g_act if cfg.temperature == 1.0 else g_act.div_(cfg.temperature)
        if disc is not None and cfg.disc_weight > 0:
            disc.eval()  # no spectral-norm power iteration while reading D
            x_d = u.detach().requires_grad_(True)
            (g_d,) = torch.autograd.grad(torch.nn.functional.logsigmoid(disc(x_d)).sum(), x_d)
            if cfg.precondition == "rms":
                drift.addcmul_(g_d, _inv_rms(g_d, cfg.disc_weight))
            else:
                drift.add_(g_d, alpha=cfg.disc_weight)
        if cfg.precondition == "psgld":
            second_moment.mul_(0.99).addcmul_(drift, drift, value=0.01)
            drift = drift / (second_moment * at("psgld_scale", psgld_scale)).sqrt().add_(1e-8)
        _axpy(u, drift, at("half_eps", half_eps))
        scale = at("noise_scale", noise_scale)
        if t is None or scale > 0:
            _axpy(u, torch.randn(u.shape, generator=gen, device=device), scale)
        # Before the clamp (which would turn +-Inf into the box edge): a row sum is non-finite iff the
        # row holds a NaN/Inf.
        bad = ~torch.isfinite(u.flatten(1).sum(1) + acts.detach())
        torch.where(bad.view(view), u0, u.clamp_(0.0, 1.0), out=u)
        resets.add_(bad)
        if second_moment is not None:  # a reset chain must not keep a NaN preconditioner
            second_moment.masked_fill_(bad.view(view), 0.0)
        if t is None:
            counter.add_(1)

    graphed = _GraphedStep(langevin_step, gen, device) if cuda_graph else None
    bar = _progress_bar(cfg.steps, progress)
    timed_from = 1 if cfg.steps > 1 else 0  # step 0 pays one-off costs (allocator, cuDNN algorithm choice)
    timer = 0.0
    with reader.attached():
        for t in range(cfg.steps):
            if t == timed_from:
                timer = _synchronized_clock(device)
            if graphed is not None:
                graphed()
            else:
                langevin_step(t)
            if trainer is not None and (t + 1) % cfg.disc_every == 0:
                for _ in range(cfg.disc_steps):
                    trainer.step(u)
            if bar is not None:
                bar.update(1)
        step_seconds = (_synchronized_clock(device) - timer) / (cfg.steps - timed_from)
        if bar is not None:
            bar.close()
        with torch.no_grad():
            final = activations(u)
            scores = None
            if disc is not None:
                disc.eval()
                scores = torch.sigmoid(disc(u)).float()

    total_resets = int(resets.sum())
    if total_resets:
        log.warning("LDAM: %d chain states turned NaN/Inf and were re-initialised", total_resets)
    images = (lo + span * u).clamp_(lo, hi).detach().cpu().view(n, chains, *shape)
    if disc is not None:
        for p, flag in disc_flags:
            p.requires_grad_(flag)
        disc.train(disc_mode)
    return SampleResult(
        neurons=list(neurons),
        images=images,
        activations=final.detach().float().cpu().view(n, chains),
        trace=trace.detach().cpu().t().reshape(n, chains, cfg.steps),
        disc_scores=None if scores is None else scores.cpu().view(n, chains),
        nonfinite_resets=resets.view(n, chains).sum(1).cpu(),
        value_range=(lo, hi),
        discriminator=disc,
        seconds=time.perf_counter() - started,
        step_seconds=step_seconds,
        config={**cfg.__dict__, "chains": chains, "init": init, "seed": seed, "spatial": spatial,
                "device": str(device)},
    )


def _graphs_supported(device: torch.device) -> bool:
    # One place for the check, so the CPU tests can run the graph form of the step without a GPU.
    return device.type == "cuda"


def _axpy(u: torch.Tensor, v: torch.Tensor, a) -> None:
    """``u += a·v`` in one kernel, for a Python float ``a`` or a one-element tensor (the graphed step)."""
    if isinstance(a, torch.Tensor):
        u.addcmul_(v, a)
    else:
        u.add_(v, alpha=a)


class _GraphedStep:
    """Replays one Langevin step as a CUDA graph: the first steps run eagerly on a side stream (CUDA
    libraries and the allocator settle), the next one is captured, then every call is one graph launch.

    The step must be graph-safe: fixed shapes, no host sync, state updated in place, per-step scalars read
    on the device. ``generator`` is registered with the graph, so replays draw fresh noise from it.
    """

    WARMUP = 3

    def __init__(self, step, generator: torch.Generator, device: torch.device):
        self.step, self.generator, self.device = step, generator, device
        self.calls = 0
        self.graph = None
        self.stream = torch.cuda.Stream(device)

    def __call__(self) -> None:
        self.calls += 1
        if self.graph is not None:
            self.graph.replay()
            return
        self.stream.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(self.stream):
            if self.calls <= self.WARMUP:
                self.step(None)
            else:
                graph = torch.cuda.CUDAGraph()
                graph.register_generator_state(self.generator)
                try:
                    with torch.cuda.graph(graph, stream=self.stream):
                        self.step(None)
                except Exception as err:
                    raise RuntimeError(f"cuda_graph: capturing the Langevin step failed ({type(err).__name__}: "
                                       f"{err}); sample with cuda_graph=False") from err
                self.graph = graph
        torch.cuda.current_stream(self.device).wait_stream(self.stream)
        if self.graph is not None:
            self.graph.replay()


def _synchronized_clock(device: torch.device) -> float:
    """``time.perf_counter()`` once the device's queued work is done (GPU kernels run asynchronously)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


def _progress_bar(total: int, progress: Union[bool, float]):
    if progress is False:
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:  # tqdm ships with Lightning; without it, no bar
        return None
    delay = 0.0 if progress is True else float(progress)
    # disable=None: no bar when stderr is not a terminal (CI logs, files), where every refresh is a new line
    return tqdm(total=total, desc="LDAM", unit="step", leave=False, delay=delay, disable=None)
