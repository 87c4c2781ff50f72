"""LDAM's Langevin chains: their state and one step of each phase (burn-in search, Langevin, MALA, HMC, ascent).

The chains of all neurons live in one neuron-major batch (``chains`` consecutive rows per neuron) in the unit box
``u ∈ [0, 1]^d``. What each method samples is stated in :mod:`lightning_ldam.sampling.config`. Every step is written
graph-safe: no host sync, state updated in place, per-step scalars read through :meth:`LangevinChains.at` (a
Python float in an eager step, a device-table entry at a device counter in a CUDA-graph replay).
"""
from __future__ import annotations

import math
from typing import Callable, Dict, Mapping, NamedTuple, Optional, Sequence

import torch
import torch.nn.functional as F

from lightning_ldam.sampling.config import (EXACT_METHODS, HMC_JITTER, HMC_STEP_FRACTION, METRIC_FLOOR, METRIC_STABILITY, PIXEL_SCALE,
                                   LangevinConfig, PRIOR_WEIGHT_MAX)

__all__ = ["Terms", "Objective", "LangevinChains", "fold", "TARGET_LIFT", "RESTART_SEED_OFFSET"]

#: ``adapt_disc`` lowers a neuron's prior weight while its chains sit below this lift: (mean activation − real
#: mean) / (real max − real mean) over the real inputs given. Above 1 so that held-out real inputs, whose max
#: is a little off the given ones', are beaten too.
TARGET_LIFT = 1.25
#: The fresh starts of chains that turn NaN/Inf come from their own generator, seeded with the chains' seed plus
#: this offset: the noise of the chains that never turn non-finite is the same whether or not others do.
RESTART_SEED_OFFSET = 0x5EED0F5


#: Dual averaging of MALA's step in burn-in's adapting half (Hoffman & Gelman 2014, the constants Stan uses):
#: the shrinkage γ, the iteration offset t0 and the averaging exponent κ. The iterate starts from
#: μ = log(√10·σ0) (Stan's log(10·ε0) in the noise scale σ = √ε).
DUAL_AVERAGING = {"gamma": 0.05, "t0": 10.0, "kappa": 0.75}


class Terms(NamedTuple):
    """The objective at one batch of chain states (all detached)."""

    acts: torch.Tensor  # [B] each chain's own neuron
    g_act: torch.Tensor  # [B, *shape] ∂a/∂u
    log_d: Optional[torch.Tensor]  # [B] log D(u), or None without a discriminator in the drift
    g_disc: Optional[torch.Tensor]  # [B, *shape] ∂ log D/∂u


class Objective:
    """Each chain's activation and log D, with their input gradients in unit-box coordinates.

    Args:
        activations: ``u -> [B]`` activations (differentiable; pixel mapping, normalisation, autocast inside).
        discriminator: D taking unit-box images, or ``None`` (no log D term).
        exact: ``u -> [B]`` the same activations in float32 without autocast, for MALA's accept test (``None``:
            ``activations`` are already exact). Under bf16 autocast the rounding of ``a_k`` is as large as the
            log-density differences an accept test compares; a proposal's drift may be rounded (it is computed once
            per state and reused in both proposal densities, so the test stays exact), its log-density may not.
    """

    def __init__(self, activations: Callable[[torch.Tensor], torch.Tensor],
                 discriminator: Optional[torch.nn.Module] = None,
                 exact: Optional[Callable[[torch.Tensor], torch.Tensor]] = None):
        self.activations = activations
        self.discriminator = discriminator
        self.exact = exact

    def __call__(self, u: torch.Tensor, exact: bool = False) -> Terms:
        """The terms at ``u``; ``exact``: ``acts`` from the float32 forward (see ``exact`` above)."""
        x = u.detach().requires_grad_(True)
        acts = self.activations(x)
        (g_act,) = torch.autograd.grad(acts.sum(), x)
        if exact and self.exact is not None:
            with torch.no_grad():
                acts = self.exact(u.detach()).float()
        log_d = g_disc = None
        if self.discriminator is not None:
            self.discriminator.eval()  # no spectral-norm power iteration while reading D
            x_d = u.detach().requires_grad_(True)
            log_d = F.logsigmoid(self.discriminator(x_d)).float()
            (g_disc,) = torch.autograd.grad(log_d.sum(), x_d)
            log_d = log_d.detach()
        return Terms(acts.detach(), g_act, log_d, g_disc)


def fold(v: torch.Tensor) -> torch.Tensor:
    """Reflect ``v`` into [0, 1] (a step that leaves the box bounces back off its wall)."""
    return reflect(v)[0]


def reflect(v: torch.Tensor):
    """``(fold(v), odd)``: ``odd`` marks the coordinates reflected an odd number of times (whose direction of motion
    the reflection reverses: HMC flips their momenta)."""
    v = v.remainder(2.0)
    odd = v > 1.0
    return torch.where(odd, 2.0 - v, v), odd


def _log_fold_density(y: torch.Tensor, mean: torch.Tensor, std) -> torch.Tensor:
    """Per row, ``log`` of the density of ``fold(mean + std·ξ)`` at ``y`` (up to a constant shared by every call
    with the same ``std``, a number, one per row or one per element): the Gaussian summed over the preimages of
    ``y`` nearest ``mean`` (±3 box widths)."""
    base = 2.0 * torch.round(mean / 2.0)
    pre = torch.stack([base + y, base - y, base + y - 2, base - y + 2, base + y + 2, base - y - 2])
    log_k = -0.5 * ((pre - mean) / std).square()
    return torch.logsumexp(log_k, dim=0).flatten(1).sum(1)


def roughness(u: torch.Tensor) -> torch.Tensor:
    """Per image, ``E_s(u) = ½·Σ (u_i − u_j)²`` over horizontally and vertically adjacent pixels (per channel)."""
    dh = (u[..., :, 1:] - u[..., :, :-1]).square().flatten(1).sum(1)
    dv = (u[..., 1:, :] - u[..., :-1, :]).square().flatten(1).sum(1)
    return 0.5 * (dh + dv)


def roughness_grad(u: torch.Tensor) -> torch.Tensor:
    """``∂E_s/∂u``: each pixel minus its neighbours, summed (the graph Laplacian; no neighbour past the border)."""
    padded = F.pad(u, (1, 1, 1, 1), mode="replicate")  # a missing neighbour counts as the pixel itself: adds 0
    return (4 * u - padded[..., :-2, 1:-1] - padded[..., 2:, 1:-1]
            - padded[..., 1:-1, :-2] - padded[..., 1:-1, 2:])


def _over(numerator: torch.Tensor, denominator: torch.Tensor) -> torch.Tensor:
    """``numerator / denominator`` as ``reciprocal(denominator) · numerator``: the rounding of the scalar division
    (``λ / x``) the recorded benchmarks ran with, so per-neuron λ leaves their figures bitwise as they were."""
    return denominator.reciprocal() * numerator


def _row_rms(g: torch.Tensor) -> torch.Tensor:
    """Per-row RMS over pixels, ``[B]``."""
    return g.flatten(1).square().mean(1).sqrt()


#: Fixed random projections of the state traced for the mixing diagnostics (besides the activation).
PROJECTIONS = 4
_PROJECTION_SEED = 0x1DA4


def _projections(dim: int, device) -> torch.Tensor:
    """``[dim, PROJECTIONS]`` unit-norm Gaussian directions, the same for every call (seeded privately)."""
    g = torch.Generator().manual_seed(_PROJECTION_SEED)
    p = torch.randn(dim, PROJECTIONS, generator=g)
    return (p / p.norm(dim=0, keepdim=True)).to(device)


class LangevinChains:
    """Chain state, the per-neuron constants of the law, and the steps that move the chains.

    Args:
        u0: ``[B, *shape]`` initial states in the unit box (``B = neurons·chains``, neuron-major).
        objective: what the chains climb.
        cfg: resolved settings.
        neurons: number of neurons.
        generator: the chains' private RNG (noise and MALA's uniforms; nothing else draws from it, so variants
            sampled with the same seed share their noise whatever their discriminators do). The fresh starts of
            chains that turn non-finite come from :attr:`restart_gen`, seeded from it (see
            :data:`RESTART_SEED_OFFSET`).
        real_acts: ``(mean, max)`` per neuron over real inputs, for ``adapt_disc`` (``None``: no adaptation).
        graph: also keep the per-step scalars in device tables, for the CUDA-graph form of the steps.
        law: per-neuron ``"disc_weight"`` (λ), ``"temperature"`` (T) and ``"smoothness"`` (κ), each a sequence of
            ``neurons`` values (per-layer settings of the neuron spec); ``None``: no D (λ = 0) and ``cfg``'s T and κ
            for every neuron.
    """

    def __init__(self, u0: torch.Tensor, objective: Objective, cfg: LangevinConfig, neurons: int,
                 generator: torch.Generator, real_acts: Optional[Sequence[torch.Tensor]] = None,
                 graph: bool = False, law: Optional[Mapping[str, Sequence[float]]] = None,
                 held: Optional[torch.Tensor] = None):
        self.u = u0.clone()
        self.held = None if held is None else held.view((-1,) + (1,) * (u0.dim() - 1))  # rows the search skips
        self.objective, self.cfg, self.n, self.gen = objective, cfg, neurons, generator
        self.restart_gen = torch.Generator(device=generator.device).manual_seed(
            (generator.initial_seed() + RESTART_SEED_OFFSET) % 2 ** 63)
        batch, dev = u0.shape[0], u0.device
        self.chains = batch // neurons
        self.view = (-1,) + (1,) * (u0.dim() - 1)
        self.trace = torch.empty((cfg.steps, batch), device=dev)
        # the mixing diagnostics' second view: a few fixed random projections of each state over the sampling phase
        # (a private generator: the chains' own streams stay as they were)
        self.draws = max(cfg.steps - cfg.burn_in, 0) if cfg.method != "ascent" else 0
        self.projection = _projections(u0[0].numel(), dev) if self.draws else None
        self.proj_trace = torch.empty((self.draws, batch, PROJECTIONS), device=dev) if self.draws else None
        self.resets = torch.zeros(batch, dtype=torch.long, device=dev)
        self.accepted = torch.zeros(batch, device=dev)
        self.ms_act = torch.zeros(neurons, device=dev)  # mean-square input gradients over burn-in
        self.ms_disc = torch.zeros(neurons, device=dev)
        self.weight = torch.ones(neurons, device=dev)  # w_k, the adapted multiple of λ (and κ)
        self.real_acts = real_acts
        # The law's constants: c_k (``scale``) from freeze_scales(); λ_k and γ_k per neuron and per row, set by
        # _set_weights() while w_k adapts and fixed by freeze().
        self.scale = self.inv_scale = None
        self.disc_weights = self.disc_weight = self.smoothness = self.smooth_row = None
        self.current: Optional[Terms] = None  # MALA: the objective at the current states
        self.second_moment = torch.zeros_like(u0) if cfg.precondition == "psgld" else None
        # MALA's noise std σ_k = √ε_k per neuron: the sampling phase's, a number (``step_size``) unless it adapts
        # by dual averaging in burn-in's adapting half, then a per-row tensor updated in place (graph-safe)
        self.adapts_step = (cfg.method in EXACT_METHODS and cfg.target_accept is not None
                            and cfg.burn_in > cfg.search_steps)
        self.sigma: object = cfg.step_size
        if self.adapts_step:
            self.log_sigma = torch.full((neurons,), math.log(cfg.step_size), device=dev)
            self.log_sigma_bar = self.log_sigma.clone()
            self.h_bar = torch.zeros(neurons, device=dev)
            self.mu = math.log(math.sqrt(10.0) * cfg.step_size)
            self.sigma = self._per_row(self.log_sigma.exp())
        # metric="diagonal": M's diagonal per row (ones until fixed), its square root, and the window's running sums
        # of the states and their squares (the chains' spread per pixel)
        self.diag = cfg.metric == "diagonal"
        if self.diag:
            self.metric = torch.ones_like(u0)
            self.metric_sqrt = torch.ones_like(u0)
            self.moments = torch.zeros((2, *u0.shape), device=dev)
            self.mu = torch.full((neurons,), self.mu, device=dev) if self.adapts_step else None
        law = law or {"disc_weight": [0.0] * neurons, "temperature": [cfg.temperature] * neurons,
                      "smoothness": [cfg.smoothness] * neurons}
        per = {k: [float(v) for v in law[k]] for k in ("disc_weight", "temperature", "smoothness")}
        self.lam = torch.tensor(per["disc_weight"], device=dev)  # λ per neuron (before D's gradient scale)
        self.lam_row = self._per_row(self.lam).view(-1)
        self.temp = torch.tensor(per["temperature"], device=dev)
        self.temp_row = self._per_row(self.temp)
        # κ/PIXEL_SCALE per neuron: the smoothness prior's weight before w_k (images only; the ascent has
        # none). ``smooth`` says (host-side, no sync) whether any neuron has the prior at all.
        images = u0.dim() == 4 and cfg.method != "ascent"
        self.smooth = images and any(k > 0 for k in per["smoothness"])
        self.smooth_unit = torch.tensor(per["smoothness"], device=dev) / PIXEL_SCALE if self.smooth else None
        # burn-in's search (w_k = 1): a number when every neuron has the same κ (a scalar ``alpha``, one fused pass),
        # else per row
        same = len(set(per["smoothness"])) == 1
        self.search_smooth = None if not self.smooth else (
            per["smoothness"][0] / PIXEL_SCALE if same else self._per_row(self.smooth_unit))
        self.scalars = self._scalars()
        self.tables = {k: torch.tensor(v, device=dev) for k, v in self.scalars.items()} if graph else None
        self.counter = torch.zeros(1, dtype=torch.long, device=dev) if graph else None

    # ---- per-step scalars ---------------------------------------------------------------------------------
    def _scalars(self) -> Dict[str, list]:
        cfg = self.cfg
        track = [max(1.0 / (t + 1), 8.0 / max(cfg.burn_in, 1)) for t in range(cfg.steps)]
        da = DUAL_AVERAGING
        # dual averaging's m-th iteration (m = 1 at the adapting half's first step; 0 outside it), started anew where a
        # diagonal metric is fixed
        start = cfg.search_steps if cfg.metric_end is None else cfg.metric_end
        m = [t - (start if t >= start else cfg.search_steps) + 1 if cfg.search_steps <= t < cfg.burn_in else 0
             for t in range(cfg.steps)]
        end = cfg.metric_end or 0
        return {"half_eps": [0.5 * cfg.eps(t) for t in range(cfg.steps)],
                "noise": [cfg.noise_std(t) for t in range(cfg.steps)],
                "track": track,  # running mean over the first steps, then an EMA over ~⅛ of burn-in
                "psgld": [1.0 / (1 - 0.99 ** (t + 1)) for t in range(cfg.steps)],
                "da_rate": [1.0 / (k + da["t0"]) if k else 0.0 for k in m],
                "da_shrink": [math.sqrt(k) / da["gamma"] for k in m],
                "da_average": [k ** -da["kappa"] if k else 0.0 for k in m],
                "metric_window": [1.0 if cfg.search_steps <= t < end else 0.0 for t in range(cfg.steps)]}

    def at(self, name: str, t: Optional[int]):
        """Per-step scalar ``name`` at step ``t`` (``None``: the graph form, read at the device counter)."""
        if t is None:
            return self.tables[name].index_select(0, self.counter)
        return self.scalars[name][t]

    def _per_row(self, v: torch.Tensor) -> torch.Tensor:
        return v.repeat_interleave(self.chains).view(self.view)

    def _record(self, t: Optional[int], acts: torch.Tensor) -> None:
        if t is not None:
            self.trace[t] = acts
            if self.draws and t >= self.cfg.burn_in:
                torch.mm(self.u.flatten(1), self.projection, out=self.proj_trace[t - self.cfg.burn_in])
        else:
            self.trace.index_copy_(0, self.counter, acts.unsqueeze(0))
            if self.draws:  # burn-in's steps all write slot 0, which the first sampling step then overwrites
                slot = (self.counter - self.cfg.burn_in).clamp_min_(0)
                self.proj_trace.index_copy_(0, slot, (self.u.flatten(1) @ self.projection).unsqueeze(0))

    def _tick(self, t: Optional[int]) -> None:
        """End of a step in the graph form: the device counter moves on (eager steps know their ``t``)."""
        if t is None:
            self.counter.add_(1)

    # ---- moving -------------------------------------------------------------------------------------------
    def _move(self, drift: torch.Tensor, t: Optional[int], acts: torch.Tensor, reflect: bool = True,
              metric: bool = False) -> None:
        """``u ← boundary(u + (ε/2)·drift + noise·ξ)`` (``metric``: ``u + (ε/2)·M·drift + noise·M^½·ξ``); a chain
        that turns non-finite restarts from a fresh uniform state (not its own start, which may lie where the model
        itself is NaN: it would reset every step)."""
        noise = torch.randn(self.u.shape, generator=self.gen, device=self.u.device)
        if metric and self.diag:
            drift = drift * self.metric
            noise = noise * self.metric_sqrt
        y = self.u.add(drift * self.at("half_eps", t))
        y.add_(noise * self.at("noise", t))
        # Before the boundary (which would map +-Inf into the box): a row sum is non-finite iff the row is.
        bad = ~torch.isfinite(y.flatten(1).sum(1) + acts)
        y = fold(y) if reflect else y.clamp_(0.0, 1.0)
        # Drawn for every row at every step: choosing the rows would need a host sync (and break CUDA graphs).
        fresh = torch.rand(y.shape, generator=self.restart_gen, device=y.device)
        torch.where(bad.view(self.view), fresh, y, out=self.u)
        self.resets.add_(bad)
        if self.second_moment is not None:  # a reset chain must not keep a NaN preconditioner
            self.second_moment.masked_fill_(bad.view(self.view), 0.0)

    def _per_neuron(self, v: torch.Tensor) -> torch.Tensor:
        return v.view(self.n, self.chains).mean(1)

    def search_step(self, t: Optional[int]) -> None:
        """A step of burn-in's first half: per-chain RMS-normalised drifts, gradient scales tracked."""
        terms = self.objective(self.u)
        self._record(t, terms.acts)
        rms, rms_d = self._track_scales(terms, self.at("track", t))
        drift = terms.g_act / rms.clamp_min(1e-12).view(self.view)
        if terms.g_disc is not None:
            share = _over(self.lam_row, rms_d.clamp_min(1e-12))
            drift.addcmul_(terms.g_disc, share.view(self.view))
        drift.div_(PIXEL_SCALE)
        if self.smooth:
            if isinstance(self.search_smooth, float):
                drift.sub_(roughness_grad(self.u), alpha=self.search_smooth)
            else:
                drift.sub_(roughness_grad(self.u) * self.search_smooth)
        before = None if self.held is None else self.u.clone()
        self._move(drift, t, terms.acts)
        if before is not None:  # continued chains keep their states; their gradients still count in c_k
            torch.where(self.held, before, self.u, out=self.u)
        self._tick(t)

    def _track_scales(self, terms: Terms, rate, act: bool = True):
        """Move the per-neuron mean-square input gradients toward this step's (``rate`` 1: replace them).
        Returns the per-row RMS of the activation's and D's gradients (``None`` where not computed)."""
        rms = rms_d = None
        if act:
            rms = _row_rms(terms.g_act)
            self.ms_act.lerp_(self._per_neuron(rms.square()).nan_to_num_(0.0), rate)
        if terms.g_disc is not None:
            rms_d = _row_rms(terms.g_disc)
            self.ms_disc.lerp_(self._per_neuron(rms_d.square()).nan_to_num_(0.0), rate)
        return rms, rms_d

    def _adapt_weight(self, acts: torch.Tensor) -> None:
        """Dual ascent on "lift ≥ TARGET_LIFT": w_k falls while the neuron is below it and rises above it, within
        [0, :data:`~lightning_ldam.sampling.config.PRIOR_WEIGHT_MAX`]."""
        if self.real_acts is None:
            return
        mean, top = self.real_acts
        spread = (top - mean).clamp_min(1e-12)
        progress = (self._per_neuron(acts) - (mean + TARGET_LIFT * spread)) / spread
        rate = 8.0 / max(self.cfg.burn_in, 1)  # w can cross [0, 4] within the adapting half of burn-in
        self.weight.add_(progress.nan_to_num(0.0).clamp(-1.0, 1.0), alpha=rate).clamp_(0.0, PRIOR_WEIGHT_MAX)

    def freeze_scales(self) -> None:
        """Fix ``c_k`` and D's gradient scale halfway through burn-in, from the search's states (which do not
        depend on T, so neither does ``c_k``); the second half of burn-in samples the law while ``w_k`` adapts."""
        cfg = self.cfg
        if cfg.search_steps == 0:  # no search step tracked anything: measure at the initial chains
            self._track_scales(self.objective(self.u), 1.0)
        if not isinstance(cfg.scale, str):  # one c_k for every neuron, given
            scale = torch.full_like(self.ms_act, cfg.scale)
        else:  # a unit with no gradient anywhere in burn-in: its law is flat whatever c_k is
            scale = torch.where(self.ms_act > 0, PIXEL_SCALE * self.ms_act.sqrt(), torch.ones_like(self.ms_act))
        self.scale = scale
        self.inv_scale = self._per_row(1.0 / (scale * self.temp))
        self._set_weights()

    def _set_weights(self) -> None:
        """``λ_k`` and ``γ_k`` from the current ``w_k`` and D's gradient scale (the priors go together: both
        scaled by w_k)."""
        disc_unit = torch.where(self.ms_disc > 0, _over(self.lam, PIXEL_SCALE * self.ms_disc.sqrt()),
                                torch.zeros_like(self.ms_disc))
        self.disc_weights = disc_unit * self.weight
        self.disc_weight = self._per_row(self.disc_weights)
        if self.smooth:
            self.smoothness = self.smooth_unit * self.weight
            self.smooth_row = self._per_row(self.smoothness)

    def adapt_step(self, t: Optional[int]) -> None:
        """A step of the law with the current ``w_k`` and D's current gradient scale, then ``w_k`` adapted (second half
        of burn-in)."""
        terms = self.objective(self.u)
        self._record(t, terms.acts)
        self._track_scales(terms, self.at("track", t), act=False)  # D still trains: follow its gradient scale
        self._set_weights()
        self._move(self._drift(terms, self.u), t, terms.acts, metric=True)
        self._accumulate(t)
        if terms.g_disc is not None or self.smooth:
            self._adapt_weight(terms.acts)
        self._tick(t)

    def _accumulate(self, t: Optional[int]) -> None:
        """``metric="diagonal"``: add the states to the window's sums (inside the window; weight 0 outside it)."""
        if not self.diag:
            return
        w = self.at("metric_window", t)
        if t is not None and not w:
            return
        self.moments[0].add_(self.u * w)
        self.moments[1].addcmul_(self.u, self.u * w)

    def fix_metric(self) -> None:
        """``metric="diagonal"``: M's diagonal from the window's spread, per neuron: each pixel's variance over the
        neuron's chains and the window's steps, over the smallest pixel's (that at least ``METRIC_FLOOR`` × the
        mean), at least 1 and at most :meth:`_metric_cap`. MALA's dual averaging starts anew from the current step
        (Stan's last warm-up window)."""
        if not self.diag:
            return
        count = self.chains * (self.cfg.metric_end - self.cfg.search_steps)
        first, second = (m.view(self.n, self.chains, -1).sum(1) / count for m in self.moments)
        var = (second - first.square()).clamp_min_(0.0).nan_to_num_(0.0)
        # the stiffest pixel keeps its step (m = 1), the others' grow with their spread: an unadjusted step's
        # error relative to each pixel's spread is then no worse than the stiffest pixel's was
        ref = torch.maximum(var.min(1, keepdim=True).values, METRIC_FLOOR * var.mean(1, keepdim=True))
        m = torch.where(ref > 0, var / ref.clamp_min(1e-30), torch.ones_like(var))
        m = torch.minimum(m.clamp_min_(1.0), self._metric_cap().view(-1, 1))
        self.metric.copy_(m.repeat_interleave(self.chains, 0).view_as(self.metric))
        torch.sqrt(self.metric, out=self.metric_sqrt)
        if self.adapts_step:
            self.h_bar.zero_()
            self.log_sigma_bar.copy_(self.log_sigma)
            torch.add(self.log_sigma, 0.5 * math.log(10.0), out=self.mu)

    def _metric_cap(self) -> torch.Tensor:
        """``[neurons]`` the largest entry of M that keeps a step stable on the smoothness prior: its curvature is at
        most ``8·γ_k`` (the grid Laplacian's largest eigenvalue, a checkerboard), so ``ε·m·8·γ_k`` stays below
        ``METRIC_STABILITY`` at the largest ``γ_k`` ``adapt_disc`` may reach (no cap but the floor's without it)."""
        sigma = self.sigma if isinstance(self.sigma, float) else self.sigma.view(self.n, self.chains)[:, 0]
        top = torch.full((self.n,), 1.0 / METRIC_FLOOR, device=self.u.device)
        if not self.smooth:
            return top
        curvature = 8.0 * self.smooth_unit * PRIOR_WEIGHT_MAX * sigma * sigma
        return torch.where(curvature > 0, METRIC_STABILITY / curvature.clamp_min(1e-30), top).clamp(1.0, top[0])

    def metric_diagonal(self) -> Optional[torch.Tensor]:
        """``[neurons, *shape]`` M's diagonal of the sampling phase (``None``: the identity)."""
        if not self.diag:
            return None
        return self.metric.view(self.n, self.chains, *self.metric.shape[1:])[:, 0].clone()

    def freeze(self) -> None:
        """Fix ``λ_k`` and ``γ_k`` at the end of burn-in: from here on the law is fixed."""
        self._set_weights()
        if self.adapts_step:  # the averaged iterate, as Stan ends its warm-up
            self.log_sigma.copy_(self.log_sigma_bar)
            self.sigma.copy_(self._per_row(self.log_sigma.exp()))
        if self.cfg.method in EXACT_METHODS:
            self.current = self.objective(self.u, exact=True)

    def replace_discriminator(self, discriminator: torch.nn.Module) -> None:
        """Read ``discriminator`` from here on (it replaces one whose weights turned NaN/Inf), with D's gradient scale
        measured anew at the current states: the broken D's tracked scale must not set ``λ_k``. Call before
        :meth:`freeze`; a no-op when the objective has no D in its drift."""
        if self.objective.discriminator is None:
            return
        self.objective.discriminator = discriminator
        if self.cfg.method != "ascent":
            self._track_scales(self.objective(self.u), 1.0, act=False)

    def _drift(self, terms: Terms, u: torch.Tensor) -> torch.Tensor:
        """``∇ᵤ log p`` of the fixed law at ``u`` (``terms`` evaluated there)."""
        drift = terms.g_act * self.inv_scale
        if terms.g_disc is not None:
            drift.addcmul_(terms.g_disc, self.disc_weight)
        if self.smooth:
            drift.sub_(roughness_grad(u) * self.smooth_row)
        return drift

    def _log_p(self, terms: Terms, u: torch.Tensor) -> torch.Tensor:
        """``log p`` of the fixed law at ``u``, per chain, up to the normalising constant."""
        log_p = terms.acts * self.inv_scale.view(-1)
        if terms.log_d is not None:
            log_p = log_p + terms.log_d * self.disc_weight.view(-1)
        if self.smooth:
            log_p = log_p - self.smooth_row.view(-1) * roughness(u)
        return log_p

    def langevin_step(self, t: Optional[int]) -> None:
        """An unadjusted Langevin step of the fixed law (after :meth:`freeze`)."""
        terms = self.objective(self.u)
        self._record(t, terms.acts)
        self._move(self._drift(terms, self.u), t, terms.acts, metric=True)
        self._tick(t)

    def _mala_move(self, cur: Terms, sigma) -> torch.Tensor:
        """One Metropolis-adjusted move from the states where ``cur`` was evaluated, with noise std ``sigma`` (a
        number or per row): the reflected proposal, accepted with the exact density ratio (a non-finite proposal is
        rejected); ``cur`` follows the accepted states. Returns each chain's ``log α``."""
        u = self.u
        half_eps = 0.5 * sigma * sigma
        if self.diag:  # M diagonal: per pixel the drift's step is (ε/2)·m_i and the noise's std σ·√m_i
            half_eps = half_eps * self.metric
            sigma = sigma * self.metric_sqrt
        mean = u + self._drift(cur, u) * half_eps
        y = fold(mean + torch.randn(u.shape, generator=self.gen, device=u.device) * sigma)
        prop = self.objective(y, exact=True)
        back = y + self._drift(prop, y) * half_eps
        log_alpha = (self._log_p(prop, y) - self._log_p(cur, u)
                     + _log_fold_density(u, back, sigma) - _log_fold_density(y, mean, sigma))
        log_alpha = torch.nan_to_num(log_alpha, nan=-math.inf, posinf=-math.inf)
        accept = torch.rand(log_alpha.shape, generator=self.gen, device=u.device).log_() < log_alpha
        torch.where(accept.view(self.view), y, u, out=self.u)
        for old, new in zip(cur, prop):
            if old is not None:
                torch.where(accept.view((-1,) + (1,) * (old.dim() - 1)), new, old, out=old)
        self.last_accept = accept
        return log_alpha

    def mala_step(self, t: Optional[int]) -> None:
        """A Metropolis-adjusted Langevin step of the fixed law, at the step fixed by burn-in."""
        self._record(t, self.current.acts)
        self._mala_move(self.current, self.sigma)
        self.accepted.add_(self.last_accept)
        self._tick(t)

    def mala_adapt_step(self, t: Optional[int]) -> None:
        """Burn-in's adapting half under MALA: a Metropolis-adjusted step of the current law (the terms anew: D and
        ``w_k`` changed since the last step), then each neuron's step moved by dual averaging toward
        ``target_accept`` (its mean acceptance probability over its chains), then ``w_k`` adapted."""
        cur = self.objective(self.u, exact=True)
        self._record(t, cur.acts)
        self._track_scales(cur, self.at("track", t), act=False)  # D still trains: follow its gradient scale
        self._set_weights()
        acts = cur.acts.clone()  # the move overwrites cur with the accepted proposals
        log_alpha = self._mala_move(cur, self.sigma)
        self._accumulate(t)
        self._dual_average(log_alpha, t)
        if cur.g_disc is not None or self.smooth:
            self._adapt_weight(acts)
        self._tick(t)

    def hmc_step(self, t: int) -> None:
        """One leapfrog of a Hamiltonian transition of the fixed law (eager only): a transition starts every
        ``leapfrog_steps`` steps of the sampling phase with fresh momenta ``p ~ N(0, M⁻¹)`` and ends with the
        Metropolis test on ``H = −log p(u) + ½·pᵀMp`` (the log-densities in float32). Each leapfrog is
        ``p += (ε/2)·∇log p; u += ε·M·p; p += (ε/2)·∇log p`` with ``ε = HMC_STEP_FRACTION · σ_k``; a coordinate
        that leaves the box is reflected at its wall and its momentum flipped (volume-preserving and reversible,
        so the test is exact). The trace records the current (accepted) state at every step, so the diagnostics
        count gradient evaluations, as MALA's do."""
        cfg = self.cfg
        k = (t - cfg.burn_in) % cfg.leapfrog_steps
        end = k == cfg.leapfrog_steps - 1 or t == cfg.steps - 1
        self._record(t, self.current.acts)
        if k == 0:
            # each chain's ε jittered by ±HMC_JITTER per transition: a fixed trajectory length that matches a
            # period of the law returns a chain near its start (Neal 2011, §5.4.2.2)
            jitter = torch.rand(self.u.shape[:1], generator=self.gen, device=self.u.device).view(self.view)
            self.leap = self.sigma * HMC_STEP_FRACTION * (1.0 + HMC_JITTER * (2.0 * jitter - 1.0))
            if self.diag:  # in p' = M^½·p ~ N(0, I) a leapfrog moves u by ε·M^½·p'
                self.leap = self.leap * self.metric_sqrt
            self.momentum = torch.randn(self.u.shape, generator=self.gen, device=self.u.device)
            self.h_start = self._kinetic(self.momentum) - self._log_p(self.current, self.u)
            self.position = self.u.clone()
            self.grad = self._drift(self.current, self.u)
        p, scale = self.momentum, self.leap
        p.add_(self.grad * (0.5 * scale))
        x, flip = reflect(self.position.add_(p * scale))
        self.position = x
        torch.where(flip, -p, p, out=p)
        terms = self.objective(x, exact=end)
        self.grad = self._drift(terms, x)
        p.add_(self.grad * (0.5 * scale))
        if end:
            log_alpha = self.h_start - self._kinetic(p) + self._log_p(terms, x)
            log_alpha = torch.nan_to_num(log_alpha, nan=-math.inf, posinf=-math.inf)
            accept = torch.rand(log_alpha.shape, generator=self.gen, device=x.device).log_() < log_alpha
            torch.where(accept.view(self.view), x, self.u, out=self.u)
            for old, new in zip(self.current, terms):
                if old is not None:
                    torch.where(accept.view((-1,) + (1,) * (old.dim() - 1)), new, old, out=old)
            self.accepted.add_(accept)

    @staticmethod
    def _kinetic(p: torch.Tensor) -> torch.Tensor:
        """The kinetic energy ``½·|p'|² = ½·pᵀMp`` per row, in the standardised momenta ``p' = M^½·p``."""
        return 0.5 * p.flatten(1).square().sum(1)

    def _dual_average(self, log_alpha: torch.Tensor, t: Optional[int]) -> None:
        """``h̄ ← (1 − r)·h̄ + r·(δ − ᾱ_k)``, ``log σ = μ − (√m/γ)·h̄``, ``log σ̄ ← (1 − m^−κ)·log σ̄ + m^−κ·log σ``."""
        prob = log_alpha.clamp(max=0.0).exp()
        self.h_bar.lerp_(self.cfg.target_accept - self._per_neuron(prob), self.at("da_rate", t))
        torch.mul(self.h_bar, -self.at("da_shrink", t), out=self.log_sigma).add_(self.mu)
        self.log_sigma.clamp_(max=math.log(0.5))  # a step that crosses the box in one move says nothing
        self.log_sigma_bar.lerp_(self.log_sigma, self.at("da_average", t))
        self.sigma.copy_(self._per_row(self.log_sigma.exp()))

    def step_sizes(self) -> Optional[torch.Tensor]:
        """``[neurons]`` σ_k = √ε_k of the sampling phase (``None`` for ``"ascent"``)."""
        if self.cfg.method == "ascent":
            return None
        if isinstance(self.sigma, torch.Tensor):
            return self.sigma.view(self.n, self.chains)[:, 0].clone()
        return torch.full((self.n,), float(self.sigma), device=self.u.device)

    def ascent_step(self, t: Optional[int]) -> None:
        """A step of the opt-in ascent (noisy gradient ascent, the step and noise annealed: not a sampler of a fixed law)."""
        cfg = self.cfg
        terms = self.objective(self.u)
        self._record(t, terms.acts)
        g = terms.g_act
        if cfg.precondition == "rms":
            drift = g.mul_((1.0 / (self.temp_row.view(-1) * _row_rms(g).clamp_min(1e-12))).view(self.view))
        else:
            drift = g.div_(self.temp_row)
        if terms.g_disc is not None:
            rms_d = _row_rms(terms.g_disc).clamp_min(1e-12)
            lam = _over(self.lam_row, rms_d) if cfg.precondition == "rms" else self.lam_row
            drift.add_(terms.g_disc * lam.view(self.view))
        if self.second_moment is not None:
            self.second_moment.mul_(0.99).addcmul_(drift, drift, value=0.01)
            drift = drift / (self.second_moment * self.at("psgld", t)).sqrt().add_(1e-8)
        self._move(drift, t, terms.acts, reflect=False)
        self._tick(t)

    def acceptance_rate(self) -> Optional[torch.Tensor]:
        """``[neurons]`` share of MALA's proposals (HMC's transitions) accepted after burn-in (``None`` for the other
        methods)."""
        cfg = self.cfg
        if cfg.method not in EXACT_METHODS:
            return None
        # HMC: a transition every leapfrog_steps steps, the last one cut short at the end
        proposals = -(-cfg.sampling_steps // cfg.leapfrog_steps) if cfg.method == "hmc" else cfg.sampling_steps
        return self._per_neuron(self.accepted) / max(proposals, 1)
