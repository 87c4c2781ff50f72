"""Burn-in: the steps that set the law's constants, then stop adapting.

Its first part is a search (:meth:`BurnIn.search_step`): per-chain RMS-normalised drifts with a boosted ε, while
each neuron's input-gradient scale is measured; ``c_k`` is fixed at its end (:meth:`BurnIn.freeze_scales`). The
adapting part runs the law's own steps while the prior weight ``w_k`` (hence ``λ_k`` and ``γ_k``) follows each
unit's lift, MALA's step σ_k adapts by dual averaging (:class:`StepSize`) and a diagonal metric is measured
(:class:`MetricWindow`). :meth:`BurnIn.freeze` fixes everything: from then on the law is stated and fixed.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence, Union, cast

import torch

from lightning_ldam.sampling.config import (
    EXACT_METHODS,
    METRIC_FLOOR,
    METRIC_STABILITY,
    PIXEL_SCALE,
    PRIOR_WEIGHT_MAX,
    LangevinConfig,
)
from lightning_ldam.sampling.law import Law, roughness_grad, row_rms
from lightning_ldam.sampling.objective import Objective, Terms
from lightning_ldam.sampling.state import ChainState
from lightning_ldam.sampling.steppers import LangevinStepper, MalaStepper, langevin_move

__all__ = ["BurnIn", "StepSize", "MetricWindow", "TARGET_LIFT"]

#: ``adapt_disc`` lowers a neuron's prior weight while its chains sit below this lift: (mean activation − real
#: mean) / (real max − real mean) over the real inputs given. Above 1 so that held-out real inputs, whose max
#: is a little off the given ones', are beaten too.
TARGET_LIFT = 1.25


class StepSize:
    """σ_k = √ε_k, the noise std of the exact methods' proposals: ``step_size``, or per row adapted by dual
    averaging toward ``target_accept`` in burn-in's adapting part and fixed at its averaged iterate."""

    def __init__(self, cfg: LangevinConfig, state: ChainState):
        self.cfg, self.state = cfg, state
        assert cfg.burn_in is not None and cfg.step_size is not None, "StepSize takes a resolved config"
        self.adapts = cfg.method in EXACT_METHODS and cfg.target_accept is not None and cfg.burn_in > cfg.search_steps
        self.sigma: Union[float, torch.Tensor] = cfg.step_size
        if self.adapts:
            n, dev = state.n, state.u.device
            self.log_sigma = torch.full((n,), math.log(cfg.step_size), device=dev)
            self.log_sigma_bar = self.log_sigma.clone()
            self.h_bar = torch.zeros(n, device=dev)
            mu = math.log(math.sqrt(10.0) * cfg.step_size)
            # restarted per neuron where a diagonal metric is fixed
            self.mu = torch.full((n,), mu, device=dev) if state.diag else mu
            self.sigma = state.per_row(self.log_sigma.exp())

    def per_neuron(self):
        """σ_k per neuron (a number while it does not adapt)."""
        return self.sigma if isinstance(self.sigma, float) else self.sigma.view(self.state.n, self.state.chains)[:, 0]

    def dual_average(self, log_alpha: torch.Tensor, t: Optional[int]) -> None:
        """``h̄ ← (1 − r)·h̄ + r·(δ − ᾱ_k)``, ``log σ = μ − (√m/γ)·h̄``, ``log σ̄ ← (1 − m^−κ)·log σ̄ + m^−κ·log σ``."""
        state = self.state
        prob = log_alpha.clamp(max=0.0).exp()
        self.h_bar.lerp_(cast(float, self.cfg.target_accept) - state.per_neuron(prob), state.at("da_rate", t))
        torch.mul(self.h_bar, -state.at("da_shrink", t), out=self.log_sigma).add_(self.mu)
        self.log_sigma.clamp_(max=math.log(0.5))  # a step that crosses the box in one move says nothing
        self.log_sigma_bar.lerp_(self.log_sigma, state.at("da_average", t))
        assert isinstance(self.sigma, torch.Tensor)  # per row while it adapts
        self.sigma.copy_(state.per_row(self.log_sigma.exp()))

    def restart(self) -> None:
        """Dual averaging starts anew from the current step (Stan's last warm-up window)."""
        if self.adapts:
            self.h_bar.zero_()
            self.log_sigma_bar.copy_(self.log_sigma)
            assert isinstance(self.mu, torch.Tensor)  # per neuron under a diagonal metric, the only one restarted
            torch.add(self.log_sigma, 0.5 * math.log(10.0), out=self.mu)

    def settle(self) -> None:
        """The averaged iterate, as Stan ends its warm-up."""
        if self.adapts:
            self.log_sigma.copy_(self.log_sigma_bar)
            assert isinstance(self.sigma, torch.Tensor)  # per row while it adapts
            self.sigma.copy_(self.state.per_row(self.log_sigma.exp()))


class MetricWindow:
    """``metric="diagonal"``: the chains' spread per pixel over a window of burn-in's adapting part, then M fixed."""

    def __init__(self, state: ChainState, law: Law, step: StepSize):
        self.state, self.law, self.step = state, law, step
        self.moments = torch.zeros((2, *state.u.shape), device=state.u.device)

    def accumulate(self, t: Optional[int]) -> None:
        """Add the states to the window's sums (inside the window; weight 0 outside it)."""
        w = self.state.at("metric_window", t)
        if t is not None and not w:
            return
        u = self.state.u
        self.moments[0].add_(u * w)
        self.moments[1].addcmul_(u, u * w)

    def fix(self) -> None:
        """M's diagonal from the window's spread, per neuron: each pixel's variance over the neuron's chains and the
        window's steps, over the smallest pixel's (that at least ``METRIC_FLOOR`` × the mean), at least 1 and at most
        :meth:`cap`. MALA's dual averaging starts anew from the current step."""
        state, cfg = self.state, self.state.cfg
        assert cfg.metric_end is not None, "a metric window is kept under metric='diagonal' only"
        count = state.chains * (cfg.metric_end - cfg.search_steps)
        first, second = (m.view(state.n, state.chains, -1).sum(1) / count for m in self.moments)
        var = (second - first.square()).clamp_min_(0.0).nan_to_num_(0.0)
        # the stiffest pixel keeps its step (m = 1), the others' grow with their spread: an unadjusted step's
        # error relative to each pixel's spread is then no worse than the stiffest pixel's was
        ref = torch.maximum(var.min(1, keepdim=True).values, METRIC_FLOOR * var.mean(1, keepdim=True))
        m = torch.where(ref > 0, var / ref.clamp_min(1e-30), torch.ones_like(var))
        m = torch.minimum(m.clamp_min_(1.0), self.cap().view(-1, 1))
        assert state.mass is not None and state.mass_sqrt is not None  # kept under a diagonal metric
        state.mass.copy_(m.repeat_interleave(state.chains, 0).view_as(state.mass))
        torch.sqrt(state.mass, out=state.mass_sqrt)
        self.step.restart()

    def cap(self) -> torch.Tensor:
        """``[neurons]`` the largest entry of M that keeps a step stable on the smoothness prior: its curvature is at
        most ``8·γ_k`` (the grid Laplacian's largest eigenvalue, a checkerboard), so ``ε·m·8·γ_k`` stays below
        ``METRIC_STABILITY`` at the largest ``γ_k`` ``adapt_disc`` may reach (no cap but the floor's without it)."""
        sigma = self.step.per_neuron()
        top = torch.full((self.state.n,), 1.0 / METRIC_FLOOR, device=self.state.u.device)
        if not self.law.has_smoothness:
            return top
        assert self.law.kappa_unit is not None  # kept with the smoothness prior
        curvature = 8.0 * self.law.kappa_unit * PRIOR_WEIGHT_MAX * sigma * sigma
        capped = torch.where(curvature > 0, METRIC_STABILITY / curvature.clamp_min(1e-30), top)
        # a 0-d tensor bound beside a number: torch takes it, its stubs' overloads do not
        return capped.clamp(1.0, top[0])  # type: ignore[call-overload]


class BurnIn:
    """The adapting steps and the constants they fix.

    Args:
        state: the chains.
        law: their law.
        objective: what they climb.
        real_acts: ``(mean, max)`` per neuron over real inputs, for ``adapt_disc`` (``None``: ``w_k`` stays 1).
        step: the exact methods' step size.
        window: the diagonal metric's window, or ``None``.
        stepper: the method's stepper (MALA's move serves the exact methods' adapting steps).

    Attributes:
        weight: ``[n]`` w_k, the adapted multiple of λ and κ (in ``[0, PRIOR_WEIGHT_MAX]``).
        adapt: the adapting part's step: MALA's (its step size adapting) where the step adapts
            (:attr:`StepSize.adapts`: an exact method with ``target_accept``), else the law's unadjusted step.
    """

    def __init__(self, state: ChainState, law: Law, objective: Objective,
                 real_acts: Optional[Sequence[torch.Tensor]], step: StepSize, window: Optional[MetricWindow],
                 stepper: LangevinStepper):
        self.state, self.law, self.objective, self.real_acts = state, law, objective, real_acts
        self.step, self.window, self.stepper = step, window, stepper
        n, dev = state.n, state.u.device
        self.ms_act = torch.zeros(n, device=dev)  # mean-square input gradients over burn-in
        self.ms_disc = torch.zeros(n, device=dev)
        self.weight = torch.ones(n, device=dev)
        self.adapt = self.exact_adapt_step if step.adapts else self.adapt_step

    def search_step(self, t: Optional[int]) -> None:
        """A step of burn-in's search: per-chain RMS-normalised drifts, gradient scales tracked."""
        state, law = self.state, self.law
        terms = self.objective(state.u)
        state.record(t, terms.acts)
        rms, rms_d = self.track_scales(terms, state.at("track", t))
        drift = terms.g_act / rms.clamp_min(1e-12).view(state.view)
        if terms.g_disc is not None:
            share = law.lambda_ratio_row / rms_d.clamp_min(1e-12)
            drift.addcmul_(terms.g_disc, share.view(state.view))
        drift.div_(PIXEL_SCALE)
        if law.has_smoothness:
            assert law.search_smoothness is not None  # kept with the smoothness prior
            if isinstance(law.search_smoothness, float):
                drift.sub_(roughness_grad(state.u), alpha=law.search_smoothness)
            else:
                drift.sub_(roughness_grad(state.u) * law.search_smoothness)
        before = None if state.held is None else state.u.clone()
        langevin_move(state, drift, t, terms.acts)
        if before is not None:  # continued chains keep their states; their gradients still count in c_k
            assert state.held is not None
            torch.where(state.held, before, state.u, out=state.u)
        state.tick(t)

    def adapt_step(self, t: Optional[int]) -> None:
        """A step of the law with the current ``w_k`` and D's current gradient scale, then ``w_k`` adapted."""
        state = self.state
        terms = self.objective(state.u)
        state.record(t, terms.acts)
        self.track_scales(terms, state.at("track", t), act=False)  # D still trains: follow its gradient scale
        self.law.set_priors(self.ms_disc, self.weight)
        langevin_move(state, self.law.drift(terms, state.u), t, terms.acts, metric=True)
        self._accumulate(t)
        if terms.g_disc is not None or self.law.has_smoothness:
            self.adapt_weight(terms.acts)
        state.tick(t)

    def exact_adapt_step(self, t: Optional[int]) -> None:
        """The adapting part under MALA (and HMC): a Metropolis-adjusted step of the current law (the terms anew: D
        and ``w_k`` changed since the last step), then each neuron's step moved by dual averaging toward
        ``target_accept`` (its mean acceptance probability over its chains), then ``w_k`` adapted."""
        state = self.state
        cur = self.objective(state.u, exact=True)
        state.record(t, cur.acts)
        self.track_scales(cur, state.at("track", t), act=False)  # D still trains: follow its gradient scale
        self.law.set_priors(self.ms_disc, self.weight)
        acts = cur.acts.clone()  # the move overwrites cur with the accepted proposals
        assert isinstance(self.stepper, MalaStepper)  # the exact methods' steppers
        log_alpha = self.stepper.move(cur, self.step.sigma)
        self._accumulate(t)
        self.step.dual_average(log_alpha, t)
        if cur.g_disc is not None or self.law.has_smoothness:
            self.adapt_weight(acts)
        state.tick(t)

    def _accumulate(self, t: Optional[int]) -> None:
        if self.window is not None:
            self.window.accumulate(t)

    def track_scales(self, terms: Terms, rate, act: bool = True):
        """Move the per-neuron mean-square input gradients toward this step's (``rate`` 1: replace them).
        Returns the per-row RMS of the activation's and D's gradients (``None`` where not computed)."""
        rms = rms_d = None
        if act:
            rms = row_rms(terms.g_act)
            self.ms_act.lerp_(self.state.per_neuron(rms.square()).nan_to_num_(0.0), rate)
        if terms.g_disc is not None:
            rms_d = row_rms(terms.g_disc)
            self.ms_disc.lerp_(self.state.per_neuron(rms_d.square()).nan_to_num_(0.0), rate)
        return rms, rms_d

    def adapt_weight(self, acts: torch.Tensor) -> None:
        """Dual ascent on "lift ≥ TARGET_LIFT": w_k falls while the neuron is below it and rises above it, within
        [0, :data:`~lightning_ldam.sampling.config.PRIOR_WEIGHT_MAX`]."""
        if self.real_acts is None:
            return
        mean, top = self.real_acts
        spread = (top - mean).clamp_min(1e-12)
        progress = (self.state.per_neuron(acts) - (mean + TARGET_LIFT * spread)) / spread
        assert self.state.cfg.burn_in is not None, "ChainState takes a resolved config"
        rate = 8.0 / max(self.state.cfg.burn_in, 1)  # w can cross [0, 4] within the adapting half of burn-in
        self.weight.add_(progress.nan_to_num(0.0).clamp(-1.0, 1.0), alpha=rate).clamp_(0.0, PRIOR_WEIGHT_MAX)

    def freeze_scales(self) -> None:
        """Fix ``c_k`` and D's gradient scale at the search's end, from the search's states (which do not depend on
        T, so neither does ``c_k``); the adapting part samples the law while ``w_k`` adapts."""
        state, cfg = self.state, self.state.cfg
        if cfg.search_steps == 0:  # no search step tracked anything: measure at the initial chains
            self.track_scales(self.objective(state.u), 1.0)
        if not isinstance(cfg.scale, str):  # one c_k for every neuron, given
            scale = torch.full_like(self.ms_act, cfg.scale)
        else:  # a unit with no gradient anywhere in burn-in: its law is flat whatever c_k is
            scale = torch.where(self.ms_act > 0, PIXEL_SCALE * self.ms_act.sqrt(), torch.ones_like(self.ms_act))
        self.law.set_scale(scale)
        self.law.set_priors(self.ms_disc, self.weight)

    def freeze(self) -> None:
        """Fix ``λ_k``, ``γ_k`` and the step at the end of burn-in: from here on the law is fixed."""
        self.law.set_priors(self.ms_disc, self.weight)
        self.step.settle()
