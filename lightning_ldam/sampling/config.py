"""The sampler's settings: what each method samples, the defaults, and the one function that checks them.

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
  :data:`~lightning_ldam.sampling.chains.DUAL_AVERAGING`) and fixed at its averaged value for the sampling phase. The
  acceptance rate and the steps used are reported.
- ``"hmc"``: Hamiltonian Monte Carlo with reflection at the walls, exact like MALA. Burn-in runs as MALA's (its
  step σ_k adapted by dual averaging toward ``target_accept``); the sampling phase runs transitions of
  ``leapfrog_steps`` leapfrogs (16 unless given) at ε = :data:`HMC_STEP_FRACTION` · σ_k (jittered ±50% per chain
  and transition), each started with fresh momenta and ended by a Metropolis test on the float32 Hamiltonian. A
  coordinate that leaves the box is reflected and its momentum flipped, which keeps the leapfrog reversible and
  volume-preserving. One sampling step is one leapfrog (one gradient), so ``steps`` costs the same under every
  method; the trace holds the accepted state at each step. On the MNIST CNN at 2048 sampling gradients it reads
  R-hat 2.78 against MALA's 3.48 and 1.16x MALA's ESS per second (benchmarks/README.md "HMC"). Eager only (no
  ``cuda_graph``).
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
- ``"annealed"``: the search of earlier releases, opt-in: each drift term divided by its per-chain RMS at every
  step, ε and the noise annealed (the noise to exactly 0), the discriminator trained at every step. A multi-start
  optimiser with noise, not a sampler of any fixed law.

Burn-in (``"langevin"``, ``"mala"`` and ``"hmc"``) adapts, then stops adapting. Its first half is a search: per-chain
RMS-normalised drifts (so it climbs at the same pace on any layer), a drift step ε that starts
``burn_in_boost`` times larger and decays to the sampling ε while the noise is the sampling noise throughout
(the search starts colder and warms to the law's temperature); it measures each neuron's input-gradient scale,
which fixes ``c_k`` at its end. The second half runs the law's own steps (under ``"mala"`` Metropolis-adjusted ones,
each neuron's step adapting toward ``target_accept``) while, with ``adapt_disc``, a
per-neuron weight w_k on the priors (log D and the smoothness prior), starting at 1, falls while the unit sits below
a lift of :data:`~lightning_ldam.sampling.chains.TARGET_LIFT` over the real inputs and rises while it sits above, up to
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
  to pixel, and a cold law pins each pixel to the wall its gradient points at): realism 1.59 on MNIST against
  1.32 with κ = 1.5 (benchmarks/README.md).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Optional, Union

from lightning_ldam.errors import LDAMArgumentError
from lightning_ldam import _validation as V
from lightning_ldam.sampling.unit_axes import SPATIAL as UNIT_READINGS

__all__ = ["LangevinConfig", "resolve_config", "METHODS", "PIXEL_SCALE", "DEFAULT_DISC_WEIGHT",
           "PRIOR_WEIGHT_MAX", "DEFAULT_DISC_STEPS",
           "DEFAULT_SMOOTHNESS", "DEFAULT_TARGET_ACCEPT", "METRICS"]

METHODS = ("langevin", "mala", "hmc", "annealed")
#: The Langevin methods' metric (mass matrix M): the identity, or a diagonal one estimated in burn-in.
METRICS = ("identity", "diagonal")
#: ``metric="diagonal"``: the share of burn-in's adapting part over which the chains' spread is measured; the rest
#: runs with the metric fixed (MALA re-adapts its step there, as Stan's last warm-up window does).
METRIC_WINDOW = 0.6
#: ``metric="diagonal"``: no pixel's metric entry falls below this fraction of the neuron's mean (a pixel whose
#: chains did not move in the window still moves afterwards).
METRIC_FLOOR = 0.01
#: ``metric="diagonal"``: the largest ``ε·m_i·8·γ_k`` allowed, the step times the smoothness prior's largest
#: curvature (a checkerboard's): above ~2 an unadjusted step diverges along it. Uncapped, ULA's chains on the MNIST
#: CNN reached R-hat 1.25 but as speckle (realism 9.6; MALA shrank its step to 0.0001, 10-20x, to move there at all).
METRIC_STABILITY = 0.5
PRECONDITIONERS = ("rms", "psgld", "none")
SCHEDULES = ("cosine", "linear", "constant")
INITS = ("noise", "data")
#: How a unit is read from its layer's output (see :mod:`lightning_ldam.sampling.unit_axes`).
SPATIAL = UNIT_READINGS
#: Per-pixel length (fraction of the box) that one unit of ``log p`` buys at T = 1: sets ``c_k`` (see above).
PIXEL_SCALE = 0.01
#: λ used when ``real_data`` is given and ``disc_weight`` is not, whatever the image's channels. Measured with each
#: value swapped on two one-channel and two colour cases of benchmarks/quality.py (benchmarks/README.md, "One set of
#: defaults"): 2.25, once MNIST's, read the colour cases' judge agreement lower (photo patches 0.59 / 0.70 against
#: 0.77 / 0.84) and 1.0 was no worse on the one-channel ones.
DEFAULT_DISC_WEIGHT = 1.0
#: How far ``adapt_disc`` may raise a neuron's prior weight w_k above 1 while its chains sit above
#: :data:`~lightning_ldam.sampling.chains.TARGET_LIFT`: a unit that beats its best real input easily gets more of D and the
#: smoothness prior, not a stronger super-stimulus. A cap of 1 read realism worse on both colour cases and changed
#: nothing on MNIST (benchmarks/README.md, "One set of defaults").
PRIOR_WEIGHT_MAX = 2.0
#: D updates per burn-in step. 8 improve realism on every case measured but more than double D's share of a call
#: (MNIST 20% → 49%, coloured digits 30% → 61%), against a 25% target (benchmarks/README.md, "One set of defaults").
DEFAULT_DISC_STEPS = 2
#: MALA's target acceptance when ``target_accept`` is not given: the optimal rate of a Langevin proposal in high
#: dimension is 0.574 (Roberts & Rosenthal 1998); Stan's default for its own sampler is close (0.8 for NUTS).
DEFAULT_TARGET_ACCEPT = 0.574
#: The methods with a Metropolis test (exact), whose burn-in adapts MALA's step toward ``target_accept``.
EXACT_METHODS = ("mala", "hmc")
#: ``"hmc"``: the leapfrog step as a fraction of the MALA step burn-in adapted (measured on the MNIST CNN: 16
#: leapfrogs at 0.4 accept 0.45, at 0.55 0.27; 8 at 0.3 accept 0.73; benchmarks/README.md "HMC"). Burn-in's
#: adapting half is too short for dual averaging over whole trajectories (128 steps: 8 transitions of 16).
HMC_STEP_FRACTION = 0.4
#: ``"hmc"``: each chain's leapfrog step is drawn per transition uniformly within ±this fraction of its value.
HMC_JITTER = 0.5
#: ``"hmc"``: leapfrog steps (gradient evaluations) per transition when ``leapfrog_steps`` is not given.
DEFAULT_LEAPFROG_STEPS = 16
#: κ of the smoothness prior on image inputs when ``smoothness`` is not given.
DEFAULT_SMOOTHNESS = 1.5


@dataclass(frozen=True)
class LangevinConfig:
    """Resolved sampler settings (unit-box coordinates). See the module docstring for what each method samples.

    Attributes:
        method: ``"langevin"``, ``"mala"``, ``"hmc"`` or ``"annealed"``.
        steps: Langevin steps in all (burn-in included).
        burn_in: steps before the law is fixed (``"langevin"``/``"mala"``); the samples are the states after
            ``steps``. 0 for ``"annealed"``.
        step_size: ``"langevin"``/``"mala"``: √ε, the noise standard deviation per pixel and step in the sampling
            phase (unit box). ``"annealed"``: ε at the first step.
        burn_in_boost: the drift's ε at the first burn-in step as a multiple of the sampling ε (cosine decay to 1;
            the noise stays at ``step_size``).
        temperature: T.
        scale: ``None``: ``c_k`` measured in burn-in (see the module docstring); a number: ``c_k`` for every neuron.
        disc_weight: λ.
        adapt_disc: adapt a neuron's prior weight during burn-in: lower while the neuron is below its target
            lift over the real inputs, higher while above, up to :data:`PRIOR_WEIGHT_MAX` (needs real data).
        smoothness: κ, weight of the smoothness prior ``−(κ/PIXEL_SCALE)·E_s(u)`` in log p (image inputs).
        precondition, noise, schedule, final_step_fraction: ``"annealed"`` only (the earlier search's knobs).
        disc_every: train D every this many steps (burn-in only, except ``"annealed"``: every step).
        disc_steps: D updates each time it is trained (:data:`DEFAULT_DISC_STEPS`).
        disc_warmup: D updates on real vs initial chains before the first step.
        disc_lr: D's learning rate (Adam).
        target_accept: ``"mala"``/``"hmc"``: the mean acceptance probability each neuron's MALA step is adapted
            toward in burn-in's adapting half (dual averaging; ``step_size`` is where it starts), then fixed;
            ``None``: the step stays ``step_size``. :func:`resolve_config` gives both
            :data:`DEFAULT_TARGET_ACCEPT`.
        search: burn-in steps that search before ``c_k`` is fixed (``None``: half of burn-in; 0: ``c_k`` is measured
            at the starting chains, as for chains continued from an earlier call).
        metric: the Langevin methods' mass matrix M (drift ``(ε/2)·M·∇log p``, noise ``√ε·M^½·ξ``): ``"identity"``,
            or ``"diagonal"``: per neuron and pixel, the variance of the neuron's chains over the first
            :data:`METRIC_WINDOW` of burn-in's adapting part, over the smallest (see the module docstring), fixed
            from then on. Diagonal, so reflecting at each wall stays exact.
        leapfrog_steps: ``"hmc"``: leapfrogs (gradient evaluations) per transition.
    """

    method: str = "langevin"
    steps: int = 512
    burn_in: int = 256
    step_size: float = 0.005
    burn_in_boost: float = 40.0
    temperature: float = 1.0
    scale: Optional[float] = None
    disc_weight: float = 0.0
    adapt_disc: bool = True
    smoothness: float = 0.0
    precondition: str = "rms"
    noise: float = 0.1
    schedule: str = "cosine"
    final_step_fraction: float = 0.1
    disc_every: int = 1
    disc_steps: int = DEFAULT_DISC_STEPS
    disc_warmup: int = 50
    disc_lr: float = 1e-3
    target_accept: Optional[float] = None
    search: Optional[int] = None
    metric: str = "identity"
    leapfrog_steps: int = DEFAULT_LEAPFROG_STEPS

    @property
    def search_steps(self) -> int:
        """Burn-in's search steps: ``search``, by default half of burn-in (the rest of burn-in adapts)."""
        return self.burn_in // 2 if self.search is None else self.search

    @property
    def metric_end(self) -> Optional[int]:
        """``metric="diagonal"``: the step at which the metric is fixed (``None`` for the identity)."""
        if self.metric == "identity":
            return None
        return self.search_steps + round(METRIC_WINDOW * (self.burn_in - self.search_steps))

    @property
    def sampling_steps(self) -> int:
        """Steps after burn-in (the ones whose law is fixed)."""
        return self.steps - self.burn_in

    def factor(self, t: int) -> float:
        """``"annealed"``: annealing factor in [0, 1] at step ``t`` (1 at the start)."""
        if self.schedule == "constant" or self.steps <= 1:
            return 1.0
        frac = t / (self.steps - 1)
        return 0.5 * (1 + math.cos(math.pi * frac)) if self.schedule == "cosine" else 1 - frac

    def eps(self, t: int) -> float:
        """ε at step ``t``."""
        if self.method == "annealed":
            f = self.factor(t)
            return self.step_size * (self.final_step_fraction + (1 - self.final_step_fraction) * f)
        base = self.step_size ** 2
        search = self.search_steps  # the boost decays over burn-in's search; the adapting part runs the law
        if t >= search or search <= 1:
            return base
        f = 0.5 * (1 + math.cos(math.pi * t / (search - 1)))
        return base * (1 + (self.burn_in_boost - 1) * f)

    def noise_std(self, t: int) -> float:
        """Standard deviation of the noise added at step ``t`` (per pixel, unit box)."""
        if self.method == "annealed":
            return math.sqrt(self.eps(t)) * self.noise * self.factor(t)
        return self.step_size


def resolve_config(*, method: str = "langevin", steps: Optional[int] = None, burn_in: Optional[int] = None,
                   step_size: Optional[float] = None, burn_in_boost: Optional[float] = None,
                   temperature: float = 1.0, scale: Union[str, float, None] = "auto", disc_weight: float = 0.0,
                   adapt_disc: bool = True, smoothness: float = 0.0, precondition: Optional[str] = None,
                   noise: Optional[float] = None,
                   schedule: Optional[str] = None, disc_every: int = 1, disc_steps: Optional[int] = None,
                   disc_warmup: int = 50, disc_lr: float = 1e-3,
                   target_accept: Union[str, float, None] = "auto", search: Optional[int] = None,
                   metric: str = "identity", leapfrog_steps: Optional[int] = None) -> LangevinConfig:
    """Check every sampler setting and return the resolved :class:`LangevinConfig`.

    Raises ``ValueError``/``TypeError`` naming the argument, the accepted values and the value given.
    ``None`` means "the method's default".
    """
    V.check_choice("method", method, METHODS)
    annealed = method == "annealed"
    if not annealed:
        for name, value in (("precondition", precondition), ("noise", noise), ("schedule", schedule)):
            if value is not None:
                raise LDAMArgumentError(name, f"only method='annealed' takes it (got {name}={V.shown(value)} with "
                                 f"method={method!r}); the Langevin methods' noise is √ε = step_size and their "
                                 f"drift is the gradient of the stated log-density")
    cfg = LangevinConfig(method=method, step_size=0.1 if annealed else LangevinConfig.step_size)
    steps = cfg.steps if steps is None else steps
    V.check_positive("steps", steps, integer=True)
    if burn_in is None:
        burn_in = 0 if annealed else steps // 2
    V.check_positive("burn_in", burn_in, integer=True, allow_zero=True)
    if annealed and burn_in:
        raise LDAMArgumentError("burn_in", f"method='annealed' has no burn-in (got burn_in={burn_in})")
    if burn_in >= steps:
        raise LDAMArgumentError("burn_in", f"expected fewer than steps={steps} burn-in steps, got {burn_in}")
    if search is not None:
        V.check_positive("search", search, integer=True, allow_zero=True)
        if annealed or search > burn_in:
            raise LDAMArgumentError("search", f"expected at most burn_in={burn_in} search steps of a Langevin "
                                              f"method's burn-in, got {V.shown(search)} (method={method!r})")
    _check_metric(metric, method, burn_in, search)
    if isinstance(scale, str):
        V.check_choice("scale", scale, ("auto",))
        scale = None
    elif scale is not None:
        V.check_positive("scale", scale)
        scale = float(scale)
    if not isinstance(adapt_disc, bool):
        raise LDAMArgumentError("adapt_disc", f"expected True or False, got {V.shown(adapt_disc)}")
    values = dict(step_size=step_size, burn_in_boost=burn_in_boost, noise=noise, disc_steps=disc_steps)
    for name, value in values.items():
        if value is not None:
            V.check_positive(name, value, allow_zero=name == "noise", integer=name == "disc_steps")
    V.check_positive("temperature", temperature)
    V.check_positive("smoothness", smoothness, allow_zero=True)
    if annealed and smoothness:
        raise LDAMArgumentError("smoothness",
            f"method='annealed' has no smoothness prior (got smoothness={smoothness})")
    V.check_positive("disc_weight", disc_weight, allow_zero=True)
    V.check_positive("disc_every", disc_every, integer=True)
    V.check_positive("disc_warmup", disc_warmup, integer=True, allow_zero=True)
    V.check_positive("disc_lr", disc_lr)
    if burn_in_boost is not None and burn_in_boost < 1:
        raise LDAMArgumentError("burn_in_boost", f"expected a number >= 1 (ε at the first burn-in step over the "
                         f"sampling ε), got {V.shown(burn_in_boost)}")
    if precondition is not None:
        V.check_choice("precondition", precondition, PRECONDITIONERS)
    if schedule is not None:
        V.check_choice("schedule", schedule, SCHEDULES)
    target_accept = _check_target_accept(target_accept, method)
    if leapfrog_steps is not None:
        V.check_positive("leapfrog_steps", leapfrog_steps, integer=True)
        if method != "hmc":
            raise LDAMArgumentError("leapfrog_steps", f"only method='hmc' takes it (got leapfrog_steps="
                                                      f"{V.shown(leapfrog_steps)} with method={method!r})")
    leapfrog_steps = DEFAULT_LEAPFROG_STEPS if leapfrog_steps is None else leapfrog_steps
    given = {k: v for k, v in dict(values, precondition=precondition, schedule=schedule).items() if v is not None}
    return replace(cfg, steps=steps, burn_in=burn_in, temperature=float(temperature), scale=scale,
                   disc_weight=float(disc_weight), adapt_disc=adapt_disc, smoothness=float(smoothness),
                   disc_every=disc_every,
                   disc_warmup=disc_warmup, disc_lr=float(disc_lr), target_accept=target_accept, search=search,
                   metric=metric, leapfrog_steps=leapfrog_steps,
                   **{k: (float(v) if isinstance(v, float) else v) for k, v in given.items()})


def _check_metric(metric, method: str, burn_in: int, search: Optional[int]) -> None:
    """A diagonal metric is measured in burn-in's adapting part: a Langevin method with at least 4 steps there."""
    V.check_choice("metric", metric, METRICS)
    if metric == "identity":
        return
    if method == "annealed":
        raise LDAMArgumentError("metric", f"method='annealed' has no metric (got metric={metric!r}); it is a "
                                          f"Langevin method's (langevin, mala, hmc)")
    adapting = burn_in - LangevinConfig(burn_in=burn_in, search=search).search_steps
    if adapting < 4:
        raise LDAMArgumentError("metric", f"metric='diagonal' is measured over burn-in's adapting part, which needs "
                                          f"at least 4 steps; got burn_in={burn_in}, search={search} "
                                          f"({adapting} adapting steps)")


def _check_target_accept(target_accept, method: str) -> Optional[float]:
    """``"auto"``: :data:`DEFAULT_TARGET_ACCEPT` for ``"mala"`` and ``"hmc"`` (whose burn-in adapts MALA's step),
    else ``None``; a number: those two only."""
    if isinstance(target_accept, str):
        V.check_choice("target_accept", target_accept, ("auto",))
        return DEFAULT_TARGET_ACCEPT if method in EXACT_METHODS else None
    if target_accept is None:
        return None
    if method not in EXACT_METHODS:
        raise LDAMArgumentError("target_accept", f"only method='mala' or 'hmc' adapts its step to an acceptance "
                                f"rate (got target_accept={V.shown(target_accept)} with method={method!r})")
    V.check_positive("target_accept", target_accept)
    if not 0.0 < target_accept < 1.0:
        raise LDAMArgumentError("target_accept", f"expected a probability in (0, 1), got {V.shown(target_accept)}")
    return float(target_accept)
