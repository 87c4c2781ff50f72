"""The sampler's settings as typed, frozen records: what each method samples, and every default, written once.

:class:`SamplerConfig` nests :class:`LangevinConfig` (how the chains move), :class:`DiscriminatorConfig` (the realism
prior D) and :class:`SpeedOptions`. ``sample()`` takes one (``config=``) and its fields by name as keywords, checks
them when they are built, and returns the resolved one in ``SampleResult.sampler_config``: every ``None`` ("the
default for this call") replaced by the value used.

Four methods (``method=``):

- ``"langevin"`` (default): unadjusted Langevin dynamics. After ``burn_in`` steps the chains follow

      u ← fold(u + (ε/2)·∇ᵤ log p(u) + √ε·ξ),   ξ ~ N(0, I),   √ε = ``step_size``,

  with ``log p(u) = a_k(x(u)) / (c_k·T) + λ_k·log D(u) − γ_k·½Σ(neighbour differences of u)²`` in the unit box
  ``u ∈ [0, 1]^d`` (pixels ``x = lo + (hi − lo)·u``; ``fold`` reflects a step that leaves the box back into it;
  ``γ_k = 0`` without D unless ``smoothness`` is given). ``c_k`` is fixed halfway through burn-in, ``λ_k``,
  ``γ_k`` and D at its end, so the sampling phase has one stationary law up to the O(ε) bias of an unadjusted
  step, largest where the law's mass sits within a few steps of a wall: on p ∝ e^{−x/θ} on [0, 1] at the default
  step the mean wall distance is +3.0% off at θ = 0.02 and +8.8% at θ = 0.01 (``tests/test_sampling_laws.py``).
- ``"mala"``: the same proposal, accepted or rejected with the exact (reflected) proposal densities
  (Metropolis-adjusted Langevin): the sampling phase leaves p exactly invariant. Each neuron's step √ε_k is
  adapted in burn-in's second half by dual averaging toward ``target_accept`` (0.574 unless given; Stan's scheme,
  :data:`~lightning_ldam.sampling.state.DUAL_AVERAGING`) and fixed at its averaged value for the sampling phase. The
  acceptance rate and the steps used are reported.
- ``"hmc"``: Hamiltonian Monte Carlo with reflection at the walls, exact like MALA. Burn-in runs as MALA's (its
  step σ_k adapted by dual averaging toward ``target_accept``); the sampling phase runs transitions of
  ``leapfrog_steps`` leapfrogs (16 unless given) at ε = :data:`HMC_STEP_FRACTION` · σ_k (jittered ±50% per chain
  and transition), each started with fresh momenta and ended by a Metropolis test on the float32 Hamiltonian. A
  coordinate that leaves the box is reflected and its momentum flipped, which keeps the leapfrog reversible and
  volume-preserving. One sampling step is one leapfrog (one gradient), so ``steps`` costs the same under every
  method; the trace holds the accepted state at each step. Per gradient it mixes better than MALA, not better than
  ULA (docs/decisions/0015-hmc.md). Eager only (no ``cuda_graph``).
- ``metric="diagonal"`` (any Langevin method; default ``"identity"``; under ``"hmc"`` the momenta's covariance
  is M⁻¹): a diagonal mass matrix M, so the step is
  ``u ← fold(u + (ε/2)·M·∇ᵤ log p(u) + √ε·M^½·ξ)`` (MALA: the same proposal, its densities with per-pixel std
  ``σ_k·√m_i``), which leaves the same law invariant. M is measured over the first :data:`METRIC_WINDOW` of
  burn-in's adapting part: per neuron and pixel, the variance of the neuron's chains there over the smallest
  (floored at :data:`METRIC_FLOOR` × the mean), so the stiffest pixel keeps its step and the others' grow with
  their spread, capped where a step would outrun the smoothness prior's largest curvature
  (:data:`METRIC_STABILITY`); then fixed (MALA re-adapts its step over the rest of the adapting part). The box
  stays exact under it because M is diagonal: each coordinate's proposal is its own Gaussian, reflected at its own
  walls, as under the identity. A non-diagonal metric (e.g. a Fourier one) would need a reparametrisation of the
  box instead and is not offered.
- ``"ascent"``: noisy gradient ascent, opt-in: each drift term divided by its per-chain RMS at every step, ε and
  the noise annealed (the noise to exactly 0), the discriminator trained at every step. A multi-start optimiser
  with noise, not a sampler of any fixed law.

Burn-in (``"langevin"``, ``"mala"`` and ``"hmc"``) adapts, then stops adapting. Its first half is a search: per-chain
RMS-normalised drifts (so it climbs at the same pace on any layer), a drift step ε that starts
``burn_in_boost`` times larger and decays to the sampling ε while the noise is the sampling noise throughout
(the search starts colder and warms to the law's temperature); it measures each neuron's input-gradient scale,
which fixes ``c_k`` at its end. The second half runs the law's own steps (under ``"mala"`` Metropolis-adjusted ones,
each neuron's step adapting toward ``target_accept``) while, with ``adapt_disc``, a
per-neuron weight w_k on the priors (log D and the smoothness prior), starting at 1, falls while the unit sits below
a lift of :data:`~lightning_ldam.sampling.burn_in.TARGET_LIFT` over the real inputs and rises while it sits above, up to
:data:`PRIOR_WEIGHT_MAX` (2). D trains on the chains throughout burn-in (:data:`DEFAULT_DISC_STEPS`, 2 updates a
step), looking at the images at full resolution (up to :data:`~lightning_ldam.sampling.discriminator.MAX_SIDE` px). Over
burn-in it measures
each neuron's input-gradient scale; at its end the law's constants are fixed:

- ``c_k = PIXEL_SCALE · RMS(∂a_k/∂u)`` (per pixel, over the neuron's chains, averaged over the search). A rise of
  ``a_k`` that a typical pixel's gradient gives over 1% of the box (``PIXEL_SCALE``) is worth one unit of
  ``log p`` at T = 1, whatever the layer or model: a pixel held by a typical gradient spreads over ≈ ``T·1%``
  of the box. Without a search (``burn_in`` < 2) the RMS is taken at the initial chains.
- ``λ_k = λ · w_k / (PIXEL_SCALE · RMS(∂ log D/∂u))``: λ is the ratio of log D's drift to the unit's drift (at
  T = 1, at the burn-in states), ``w_k`` in [0, 2] the adapted per-neuron weight (1
  without ``adapt_disc``).
- On images, a smoothness prior ``−γ_k·E_s(u)``, ``E_s = ½·Σ (u_i − u_j)²`` over adjacent pixels,
  ``γ_k = κ · w_k / PIXEL_SCALE`` (``smoothness`` = κ; by default on with the discriminator, off at λ = 0). Without
  it the law at λ > 0 still favours single-pixel speckle (a ReLU network's input gradient changes sign from pixel
  to pixel, and a cold law pins each pixel to the wall its gradient points at; docs/decisions/0008-langevin-sampler.md).
"""
from __future__ import annotations

import difflib
import math
from dataclasses import dataclass, field, fields, replace
from typing import Any, Dict, Optional, Tuple, Union, cast

import torch

from lightning_ldam import _validation as V
from lightning_ldam.errors import LDAMArgumentError
from lightning_ldam.sampling.unit_axes import SPATIAL as UNIT_READINGS

__all__ = ["SamplerConfig", "LangevinConfig", "DiscriminatorConfig", "ChainsConfig", "InputConfig", "SpeedOptions",
           "METHODS", "METRICS",
           "PIXEL_SCALE", "DEFAULT_DISC_WEIGHT", "PRIOR_WEIGHT_MAX", "DEFAULT_DISC_STEPS", "DEFAULT_SMOOTHNESS",
           "DEFAULT_TARGET_ACCEPT", "FRESH_DISC_WARMUP"]

METHODS = ("langevin", "mala", "hmc", "ascent")
#: The Langevin methods' metric (mass matrix M): the identity, or a diagonal one estimated in burn-in.
METRICS = ("identity", "diagonal")
#: ``metric="diagonal"``: the share of burn-in's adapting part over which the chains' spread is measured; the rest
#: runs with the metric fixed (MALA re-adapts its step there, as Stan's last warm-up window does).
METRIC_WINDOW = 0.6
#: ``metric="diagonal"``: no pixel's metric entry falls below this fraction of the neuron's mean (a pixel whose
#: chains did not move in the window still moves afterwards).
METRIC_FLOOR = 0.01
#: ``metric="diagonal"``: the largest ``ε·m_i·8·γ_k`` allowed, the step times the smoothness prior's largest
#: curvature (a checkerboard's): above ~2 an unadjusted step diverges along it; uncapped, chains mix as speckle
#: (docs/decisions/0014-mixing-and-persistent-chains.md).
METRIC_STABILITY = 0.5
PRECONDITIONERS = ("rms", "psgld", "none")
SCHEDULES = ("cosine", "linear", "constant")
INITS = ("noise", "data")
#: How a unit is read from its layer's output (see :mod:`lightning_ldam.sampling.unit_axes`).
SPATIAL = UNIT_READINGS
#: Per-pixel length (fraction of the box) that one unit of ``log p`` buys at T = 1: sets ``c_k`` (see above).
PIXEL_SCALE = 0.01
#: λ used when ``real_data`` is given and ``disc_weight`` is not, whatever the image's channels
#: (docs/decisions/0017-one-set-of-defaults.md).
DEFAULT_DISC_WEIGHT = 1.0
#: How far ``adapt_disc`` may raise a neuron's prior weight w_k above 1 while its chains sit above
#: :data:`~lightning_ldam.sampling.burn_in.TARGET_LIFT`: a unit that beats its best real input easily gets more of D and
#: the smoothness prior, not a stronger super-stimulus (docs/decisions/0010-prior-weight-cap.md,
#: docs/decisions/0017-one-set-of-defaults.md).
PRIOR_WEIGHT_MAX = 2.0
#: D updates per burn-in step: more improve realism but multiply D's share of a call
#: (docs/decisions/0017-one-set-of-defaults.md).
DEFAULT_DISC_STEPS = 2
#: MALA's target acceptance when ``target_accept`` is not given: the optimal rate of a Langevin proposal in high
#: dimension is 0.574 (Roberts & Rosenthal 1998); Stan's default for its own sampler is close (0.8 for NUTS).
DEFAULT_TARGET_ACCEPT = 0.574
#: The methods with a Metropolis test (exact), whose burn-in adapts MALA's step toward ``target_accept``.
EXACT_METHODS = ("mala", "hmc")
#: ``"hmc"``: the leapfrog step as a fraction of the MALA step burn-in adapted (docs/decisions/0015-hmc.md). Burn-in's
#: adapting half is too short for dual averaging over whole trajectories (128 steps: 8 transitions of 16).
HMC_STEP_FRACTION = 0.4
#: ``"hmc"``: each chain's leapfrog step is drawn per transition uniformly within ±this fraction of its value.
HMC_JITTER = 0.5
#: ``"hmc"``: leapfrog steps (gradient evaluations) per transition when ``leapfrog_steps`` is not given.
DEFAULT_LEAPFROG_STEPS = 16
#: κ of the smoothness prior on image inputs when ``smoothness`` is not given.
DEFAULT_SMOOTHNESS = 1.5
#: √ε of the Langevin methods' sampling phase when ``step_size`` is not given (unit box).
DEFAULT_STEP_SIZE = 0.005
#: ε of ``"ascent"``'s first step when ``step_size`` is not given.
ASCENT_STEP_SIZE = 0.1
#: ``"ascent"``: the noise's σ when ``noise`` is not given.
DEFAULT_ASCENT_NOISE = 0.1
#: ``"ascent"``: ε at the last step, as a fraction of the first.
ASCENT_FINAL_STEP_FRACTION = 0.1
#: The drift's ε at burn-in's first step over the sampling ε when ``burn_in_boost`` is not given.
DEFAULT_BURN_IN_BOOST = 40.0
#: D updates on real images against the starting chains before the first step, for a D built by the call.
FRESH_DISC_WARMUP = 50


def _setting(default, help: str, kind: Optional[str] = None, choices: Optional[tuple] = None):
    """A settings field: its default (written here once), the help the CLI and the docs show, and what kind of
    value it takes (``kind``: int, float, str, bool, auto-or-float, auto-float-or-none, dtype, or object for a value
    no command line spells; default: the type of ``default``) from the ``choices`` if any: the CLI builds its options
    from these. An ``object`` (a tensor, a callable) is left out of comparisons."""
    kind = kind or type(default).__name__
    return field(default=default, compare=kind != "object",
                 metadata={"help": help, "kind": kind, "choices": choices})


@dataclass(frozen=True)
class LangevinConfig:
    """How the chains move: the method, its steps and the law's temperature and priors (unit-box coordinates).

    ``None`` means the method's default for the call; :meth:`resolved` fills every one in. Checked when built
    (:class:`~lightning_ldam.errors.LDAMArgumentError` names the field). See the module docstring for what each
    method samples.

    Example::

        >>> LangevinConfig(method="mala", steps=256).resolved(images=True, prior=True).burn_in
        128
    """

    method: str = _setting("langevin", "langevin (default), mala (Metropolis-adjusted), hmc (Hamiltonian "
                                       "transitions, reflected at the walls) or ascent (noisy gradient ascent: an "
                                       "optimiser, not a sampler)", choices=METHODS)
    steps: int = _setting(512, "steps in all, burn-in included")
    burn_in: Optional[int] = _setting(None, "steps before the law is fixed (default: half of steps; ascent: 0)",
                                      "int")
    step_size: Optional[float] = _setting(None, "sqrt(eps): the noise std per pixel and step of the sampling phase, "
                                                "unit box (default 0.005; ascent: eps at the first step, 0.1)", "float")
    burn_in_boost: Optional[float] = _setting(None, "the drift's eps at the first burn-in step over the sampling "
                                                    f"eps (default {DEFAULT_BURN_IN_BOOST:g}, cosine decay to 1 "
                                                    f"over burn-in's search)", "float")
    temperature: float = _setting(1.0, "T of the law exp(a_k / (c_k T) + ...)")
    scale: Union[str, float] = _setting("auto", "c_k: 'auto' (each unit's input-gradient scale, measured in "
                                                "burn-in) or one number for every unit", "auto-or-float")
    smoothness: Optional[float] = _setting(None, "kappa of the smoothness prior on images (default "
                                                 f"{DEFAULT_SMOOTHNESS:g} with the discriminator, else 0)", "float")
    target_accept: Union[str, float, None] = _setting(
        "auto", "mala/hmc: the acceptance rate each unit's step adapts toward in burn-in ('auto': "
                f"{DEFAULT_TARGET_ACCEPT:g}); none keeps step_size", "auto-float-or-none")
    search: Optional[int] = _setting(None, "burn-in steps that search before c_k is fixed (default: half of "
                                           "burn-in; 0: c_k at the starting chains)", "int")
    metric: str = _setting("identity", "the mass matrix: identity, or diagonal (each pixel's spread, measured in "
                                       "burn-in)", choices=METRICS)
    leapfrog_steps: Optional[int] = _setting(None, f"hmc: leapfrogs per transition (default "
                                                   f"{DEFAULT_LEAPFROG_STEPS})", "int")
    noise: Optional[float] = _setting(None, f"ascent: the noise's sigma (default {DEFAULT_ASCENT_NOISE:g})",
                                      "float")
    precondition: Optional[str] = _setting(None, "ascent: rms (default), psgld or none", "str", PRECONDITIONERS)
    schedule: Optional[str] = _setting(None, "ascent: how eps and the noise anneal: cosine (default), linear or "
                                             "constant", "str", SCHEDULES)

    def __post_init__(self) -> None:
        _check_langevin(self)

    def resolved(self, *, images: bool, prior: bool) -> "LangevinConfig":
        """Every ``None`` filled in: ``images`` (the inputs are ``C, H, W``) and ``prior`` (λ > 0) decide the
        smoothness prior's default (a smoothness given for inputs that are not images is the caller's to refuse)."""
        ascent = self.method == "ascent"
        smoothness = default_smoothness(self.method, images, prior) if self.smoothness is None else self.smoothness
        target = self.target_accept
        if isinstance(target, str):
            target = DEFAULT_TARGET_ACCEPT if self.method in EXACT_METHODS else None
        burn_in = (0 if ascent else self.steps // 2) if self.burn_in is None else self.burn_in
        # float(): an int step (step_size=1) would reach tensor code that expects a Python float
        default_step = ASCENT_STEP_SIZE if ascent else DEFAULT_STEP_SIZE
        step_size = default_step if self.step_size is None else float(self.step_size)
        return replace(
            self, temperature=float(self.temperature),
            scale=self.scale if isinstance(self.scale, str) else float(self.scale), burn_in=burn_in,
            step_size=step_size,
            burn_in_boost=DEFAULT_BURN_IN_BOOST if self.burn_in_boost is None else float(self.burn_in_boost),
            smoothness=float(smoothness), target_accept=target,
            leapfrog_steps=(self.leapfrog_steps or DEFAULT_LEAPFROG_STEPS) if self.method == "hmc" else None,
            noise=(DEFAULT_ASCENT_NOISE if self.noise is None else float(self.noise)) if ascent else None,
            precondition=(self.precondition or "rms") if ascent else None,
            schedule=(self.schedule or "cosine") if ascent else None)

    # ---- the schedule of a resolved config --------------------------------------------------------------
    @property
    def search_steps(self) -> int:
        """Burn-in's search steps: ``search``, by default half of burn-in (the rest of burn-in adapts)."""
        return cast(int, self.burn_in) // 2 if self.search is None else self.search

    @property
    def metric_end(self) -> Optional[int]:
        """``metric="diagonal"``: the step at which the metric is fixed (``None`` for the identity)."""
        if self.metric == "identity":
            return None
        assert self.burn_in is not None, "metric_end is read from a resolved config"
        return self.search_steps + round(METRIC_WINDOW * (self.burn_in - self.search_steps))

    @property
    def sampling_steps(self) -> int:
        """Steps after burn-in (the ones whose law is fixed)."""
        assert self.burn_in is not None, "sampling_steps is read from a resolved config"
        return self.steps - self.burn_in

    def factor(self, t: int) -> float:
        """``"ascent"``: annealing factor in [0, 1] at step ``t`` (1 at the start)."""
        if self.schedule == "constant" or self.steps <= 1:
            return 1.0
        frac = t / (self.steps - 1)
        return 0.5 * (1 + math.cos(math.pi * frac)) if self.schedule == "cosine" else 1 - frac

    def eps(self, t: int) -> float:
        """ε at step ``t``."""
        assert self.step_size is not None, "eps is read from a resolved config"
        if self.method == "ascent":
            f = self.factor(t)
            return self.step_size * (ASCENT_FINAL_STEP_FRACTION + (1 - ASCENT_FINAL_STEP_FRACTION) * f)
        base = self.step_size ** 2
        search = self.search_steps  # the boost decays over burn-in's search; the adapting part runs the law
        if t >= search or search <= 1:
            return base
        f = 0.5 * (1 + math.cos(math.pi * t / (search - 1)))
        assert self.burn_in_boost is not None, "eps is read from a resolved config"
        return base * (1 + (self.burn_in_boost - 1) * f)

    def noise_std(self, t: int) -> float:
        """Standard deviation of the noise added at step ``t`` (per pixel, unit box)."""
        if self.method == "ascent":
            assert self.noise is not None, "noise_std is read from a resolved config"
            return math.sqrt(self.eps(t)) * self.noise * self.factor(t)
        return cast(float, self.step_size)


@dataclass(frozen=True)
class DiscriminatorConfig:
    """The realism prior: λ, the weight of log D in the law, and how D trains against real data during burn-in.

    Example::

        >>> DiscriminatorConfig().resolved(has_source=True, given=False)
        DiscriminatorConfig(disc_weight=1.0, adapt_disc=True, disc_lr=0.001, disc_every=1, disc_steps=2, disc_warmup=50)
    """

    disc_weight: Optional[float] = _setting(None, "lambda: log D's drift against the unit's (default "
                                                  f"{DEFAULT_DISC_WEIGHT:g} with real data or a given "
                                                  "discriminator, else 0: no discriminator)", "float")
    adapt_disc: bool = _setting(True, "adapt each unit's prior weight in burn-in: lower while it sits below its "
                                      f"target lift over the real inputs, higher above (up to {PRIOR_WEIGHT_MAX:g})")
    disc_lr: float = _setting(1e-3, "D's learning rate (Adam)")
    disc_every: int = _setting(1, "train D every this many burn-in steps (ascent: steps of the whole run)")
    disc_steps: int = _setting(DEFAULT_DISC_STEPS, "D updates each time it is trained")
    disc_warmup: Optional[int] = _setting(None, f"D updates before the first step (default {FRESH_DISC_WARMUP} for "
                                                "a fresh D, 0 for a given one)", "int")

    def __post_init__(self) -> None:
        if self.disc_weight is not None:
            V.check_positive("disc_weight", self.disc_weight, allow_zero=True)
        if not isinstance(self.adapt_disc, bool):
            raise LDAMArgumentError("adapt_disc", f"expected True or False, got {V.shown(self.adapt_disc)}")
        V.check_positive("disc_lr", self.disc_lr)
        V.check_positive("disc_every", self.disc_every, integer=True)
        V.check_positive("disc_steps", self.disc_steps, integer=True)
        if self.disc_warmup is not None:
            V.check_positive("disc_warmup", self.disc_warmup, integer=True, allow_zero=True)

    def resolved(self, *, has_source: bool, given: bool) -> "DiscriminatorConfig":
        """``has_source``: real data or a trained D is at hand (λ's default is > 0); ``given``: a D was passed in
        (it needs no warm-up)."""
        weight = self.disc_weight
        if weight is None:
            weight = DEFAULT_DISC_WEIGHT if has_source else 0.0
        warmup = (0 if given else FRESH_DISC_WARMUP) if self.disc_warmup is None else self.disc_warmup
        return replace(self, disc_weight=float(weight), disc_lr=float(self.disc_lr), disc_warmup=warmup)


@dataclass(frozen=True)
class SpeedOptions:
    """Speed options that leave the law as it is (GPU ones: autocast, NHWC layout, CUDA graphs)."""

    autocast_dtype: Optional[torch.dtype] = _setting(None, "run the model under autocast in this dtype, e.g. "
                                                           "bfloat16 (the accept tests of mala/hmc stay float32)",
                                                     "dtype", ("bfloat16", "float16"))
    channels_last: bool = _setting(False, "NHWC convolutions")
    cuda_graph: bool = _setting(False, "replay each step as a CUDA graph (CUDA only; for small, launch-bound "
                                       "networks)")
    device: Optional[torch.device] = _setting(None, "where to sample (default: the model's device; a copy of the "
                                                    "model is moved otherwise)", "object")

    def __post_init__(self) -> None:
        object.__setattr__(self, "device", V.check_device("device", self.device, resolve_index=False))
        if self.autocast_dtype is not None and not isinstance(self.autocast_dtype, torch.dtype):
            raise LDAMArgumentError("autocast_dtype", f"expected a torch.dtype such as torch.bfloat16, "
                                                      f"got {V.shown(self.autocast_dtype)}")
        for name in ("channels_last", "cuda_graph"):
            if not isinstance(getattr(self, name), bool):
                raise LDAMArgumentError(name, f"expected True or False, got {V.shown(getattr(self, name))}")


@dataclass(frozen=True)
class ChainsConfig:
    """How many chains each neuron gets, where they start, their seed, and how a unit is read.

    Example::

        >>> ChainsConfig(chains=4, init="data").chains
        4
    """

    chains: int = _setting(8, "chains per neuron")
    seed: int = _setting(0, "seed of the call's private generators (starts, noise, D's batches): variants sampled "
                            "with one seed share their starts and noise")
    init: Union[str, torch.Tensor] = _setting(
        "noise", "where chains start: noise (uniform in the box), data (real images), or a float tensor of starting "
                 "images in pixel space, [chains, *input_shape] or [neurons, chains, *input_shape]", "object")
    continued: Optional[torch.Tensor] = _setting(
        None, "with a tensor init: a bool mask [chains] or [neurons, chains] of the chains that continue an earlier "
              "call's (held through burn-in's search)", "object")
    spatial: str = _setting("mean", "how a conv channel is read: mean over positions, center, tokens, ...",
                            choices=SPATIAL)

    def __post_init__(self) -> None:
        V.check_positive("chains", self.chains, integer=True)
        V.check_seed("seed", self.seed)
        if not isinstance(self.init, torch.Tensor):
            V.check_choice("init", self.init, INITS)
        V.check_choice("spatial", self.spatial, SPATIAL)


@dataclass(frozen=True)
class InputConfig:
    """The pixel box the chains live in and the normalisation between pixels and the model.

    Example::

        >>> InputConfig(value_range=(0, 255)).value_range
        (0.0, 255.0)
    """

    value_range: Tuple[float, float] = _setting((0.0, 1.0), "the pixel box (lo, hi) samples stay in", "object")
    normalize: Any = _setting(None, "(mean, std) applied to pixel-space chains before the model (per channel or "
                                    "scalar)", "object")

    def __post_init__(self) -> None:
        object.__setattr__(self, "value_range", V.check_value_range(self.value_range))


#: The sections of :class:`SamplerConfig`, by attribute.
SECTIONS = {"langevin": LangevinConfig, "discriminator": DiscriminatorConfig, "chains": ChainsConfig,
            "inputs": InputConfig, "speed": SpeedOptions}


@dataclass(frozen=True)
class SamplerConfig:
    """Every sampler setting: :class:`LangevinConfig`, :class:`DiscriminatorConfig`, :class:`ChainsConfig`,
    :class:`InputConfig` and :class:`SpeedOptions`.

    Each field of a section is also a setting name: :meth:`with_settings` takes them flat, as ``sample()``,
    ``LDAMCallback(sampler_kwargs=...)`` and the CLI's options do.

    Example::

        >>> cfg = SamplerConfig().with_settings(method="mala", disc_weight=2.0)
        >>> cfg.langevin.method, cfg.discriminator.disc_weight
        ('mala', 2.0)
        >>> SamplerConfig().with_settings(stepsize=0.01)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        lightning_ldam.errors.LDAMArgumentError: stepsize: not a sampler setting; did you mean step_size? ...
    """

    langevin: LangevinConfig = field(default_factory=LangevinConfig)
    discriminator: DiscriminatorConfig = field(default_factory=DiscriminatorConfig)
    chains: ChainsConfig = field(default_factory=ChainsConfig)
    inputs: InputConfig = field(default_factory=InputConfig)
    speed: SpeedOptions = field(default_factory=SpeedOptions)

    def __post_init__(self) -> None:
        for name, kind in SECTIONS.items():
            if not isinstance(getattr(self, name), kind):
                raise LDAMArgumentError(name, f"expected a {kind.__name__}, got {V.shown(getattr(self, name))}")
        if self.speed.cuda_graph and self.langevin.method == "hmc":
            raise LDAMArgumentError("cuda_graph", "method='hmc' runs its transitions eagerly (a transition's first "
                                    "and last leapfrogs differ from the rest); pass cuda_graph=False")

    @staticmethod
    def setting_names() -> Dict[str, str]:
        """Every setting name and the section that holds it."""
        return {f.name: section for section, kind in SECTIONS.items() for f in fields(kind)}

    def with_settings(self, **settings) -> "SamplerConfig":
        """A copy with ``settings`` (flat field names) changed, checked as if built so."""
        names = self.setting_names()
        for name in settings:
            if name not in names:
                close = difflib.get_close_matches(name, names, n=1)
                hint = f"did you mean {close[0]}? " if close else ""
                raise LDAMArgumentError(name, f"not a sampler setting; {hint}accepted: {sorted(names)}")
        changes = {section: replace(getattr(self, section),
                                    **{k: v for k, v in settings.items() if names[k] == section})
                   for section in SECTIONS if any(names[k] == section for k in settings)}
        return replace(self, **changes)

    def settings(self) -> Dict[str, Any]:
        """Every setting by its flat name (the inverse of :meth:`with_settings`)."""
        return {f.name: getattr(getattr(self, section), f.name)
                for section, kind in SECTIONS.items() for f in fields(kind)}


def default_smoothness(method: str, images: bool, prior: bool) -> float:
    """κ when ``smoothness`` is not given: the prior comes with the discriminator (``prior``: λ > 0) on images, for
    the Langevin methods; λ = 0 is the paper's pixel-level end of the trade-off, with no prior at all."""
    return DEFAULT_SMOOTHNESS if (method != "ascent" and images and prior) else 0.0


def _check_langevin(cfg: LangevinConfig) -> None:
    """Every check of a :class:`LangevinConfig` that needs no model (errors name the field)."""
    method = cfg.method
    V.check_choice("method", method, METHODS)
    ascent = method == "ascent"
    if not ascent:
        for name in ("precondition", "noise", "schedule"):
            value = getattr(cfg, name)
            if value is not None:
                raise LDAMArgumentError(name, f"only method='ascent' takes it (got {name}={V.shown(value)} with "
                                        f"method={method!r}); the Langevin methods' noise is √ε = step_size and their "
                                        f"drift is the gradient of the stated log-density")
    V.check_positive("steps", cfg.steps, integer=True)
    _check_burn_in(cfg, ascent)
    _check_metric(cfg.metric, method, cfg.burn_in if cfg.burn_in is not None else
                  (0 if ascent else cfg.steps // 2), cfg.search)
    if isinstance(cfg.scale, str):
        V.check_choice("scale", cfg.scale, ("auto",))
    else:
        V.check_positive("scale", cfg.scale)
    for name in ("step_size", "burn_in_boost", "noise"):
        value = getattr(cfg, name)
        if value is not None:
            V.check_positive(name, value, allow_zero=name == "noise")
    V.check_positive("temperature", cfg.temperature)
    if cfg.smoothness is not None:
        V.check_positive("smoothness", cfg.smoothness, allow_zero=True)
        if ascent and cfg.smoothness:
            raise LDAMArgumentError("smoothness", f"method='ascent' has no smoothness prior (got smoothness="
                                                  f"{cfg.smoothness})")
    if cfg.burn_in_boost is not None and cfg.burn_in_boost < 1:
        raise LDAMArgumentError("burn_in_boost", f"expected a number >= 1 (ε at the first burn-in step over the "
                                f"sampling ε), got {V.shown(cfg.burn_in_boost)}")
    if cfg.precondition is not None:
        V.check_choice("precondition", cfg.precondition, PRECONDITIONERS)
    if cfg.schedule is not None:
        V.check_choice("schedule", cfg.schedule, SCHEDULES)
    _check_target_accept(cfg.target_accept, method)
    if cfg.leapfrog_steps is not None:
        V.check_positive("leapfrog_steps", cfg.leapfrog_steps, integer=True)
        if method != "hmc":
            raise LDAMArgumentError("leapfrog_steps", f"only method='hmc' takes it (got leapfrog_steps="
                                                      f"{V.shown(cfg.leapfrog_steps)} with method={method!r})")


def _check_burn_in(cfg: LangevinConfig, ascent: bool) -> None:
    burn_in, steps, search = cfg.burn_in, cfg.steps, cfg.search
    if burn_in is None:
        burn_in = 0 if ascent else steps // 2
    V.check_positive("burn_in", burn_in, integer=True, allow_zero=True)
    if ascent and burn_in:
        raise LDAMArgumentError("burn_in", f"method='ascent' has no burn-in (got burn_in={burn_in})")
    if burn_in >= steps:
        raise LDAMArgumentError("burn_in", f"expected fewer than steps={steps} burn-in steps, got {burn_in}")
    if search is not None:
        V.check_positive("search", search, integer=True, allow_zero=True)
        if ascent or search > burn_in:
            raise LDAMArgumentError("search", f"expected at most burn_in={burn_in} search steps of a Langevin "
                                              f"method's burn-in, got {V.shown(search)} (method={cfg.method!r})")


def _check_metric(metric, method: str, burn_in: int, search: Optional[int]) -> None:
    """A diagonal metric is measured in burn-in's adapting part: a Langevin method with at least 4 steps there."""
    V.check_choice("metric", metric, METRICS)
    if metric == "identity":
        return
    if method == "ascent":
        raise LDAMArgumentError("metric", f"method='ascent' has no metric (got metric={metric!r}); it is a "
                                          f"Langevin method's (langevin, mala, hmc)")
    adapting = burn_in - (burn_in // 2 if search is None else search)
    if adapting < 4:
        raise LDAMArgumentError("metric", f"metric='diagonal' is measured over burn-in's adapting part, which needs "
                                          f"at least 4 steps; got burn_in={burn_in}, search={search} "
                                          f"({adapting} adapting steps)")


def _check_target_accept(target_accept, method: str) -> None:
    """``"auto"``: :data:`DEFAULT_TARGET_ACCEPT` for ``"mala"`` and ``"hmc"`` (whose burn-in adapts MALA's step),
    else ``None``; a number: those two only."""
    if isinstance(target_accept, str):
        V.check_choice("target_accept", target_accept, ("auto",))
        return
    if target_accept is None:
        return
    if method not in EXACT_METHODS:
        raise LDAMArgumentError("target_accept", f"only method='mala' or 'hmc' adapts its step to an acceptance "
                                f"rate (got target_accept={V.shown(target_accept)} with method={method!r})")
    V.check_positive("target_accept", target_accept)
    if not 0.0 < target_accept < 1.0:
        raise LDAMArgumentError("target_accept", f"expected a probability in (0, 1), got {V.shown(target_accept)}")
