"""One stepper per method: how the chains move once the law is fixed (and, for MALA, in burn-in's adapting part).

- :class:`LangevinStepper` (``"langevin"``): ``u ← fold(u + (ε/2)·M·∇log p(u) + √ε·M^½·ξ)``, unadjusted;
- :class:`MalaStepper` (``"mala"``): the same proposal, accepted with the exact reflected proposal densities;
- :class:`HmcStepper` (``"hmc"``): Hamiltonian transitions of ``leapfrog_steps`` leapfrogs, reflected at the walls,
  each ended by a Metropolis test;
- :class:`AscentStepper` (``"ascent"``): noisy gradient ascent, not a sampler of a fixed law.

:func:`langevin_move` is the move the first, the last and burn-in's steps make. The law
(:class:`~lightning_ldam.sampling.law.Law`) gives the drift and log-density; the state
(:class:`~lightning_ldam.sampling.state.ChainState`) the states, the RNG and the per-step ε. Every step but HMC's is
graph-safe (HMC's runs eagerly).
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Optional

import torch

from lightning_ldam.sampling.config import HMC_JITTER, HMC_STEP_FRACTION
from lightning_ldam.sampling.law import Law, fold, log_fold_density, reflect, row_rms
from lightning_ldam.sampling.objective import Objective, Terms
from lightning_ldam.sampling.state import ChainState

if TYPE_CHECKING:
    from lightning_ldam.sampling.burn_in import StepSize

__all__ = ["langevin_move", "LangevinStepper", "MalaStepper", "HmcStepper", "AscentStepper", "STEPPERS"]


def langevin_move(state: ChainState, drift: torch.Tensor, t: Optional[int], acts: torch.Tensor,
                  reflect: bool = True, metric: bool = False) -> torch.Tensor:
    """The move: ``u ← boundary(u + (ε/2)·drift + noise·ξ)`` (``metric``: ``u + (ε/2)·M·drift + noise·M^½·ξ``), with
    ``ε`` and the noise's std at step ``t`` (:meth:`ChainState.at`) and the boundary the reflecting fold (``reflect``)
    or a clamp. A chain that turns non-finite restarts from a fresh uniform state (not its own start, which may lie
    where the model itself is NaN: it would reset every step). Returns the rows that restarted."""
    noise = torch.randn(state.u.shape, generator=state.gen, device=state.u.device)
    if metric and state.diag:
        assert state.mass is not None and state.mass_sqrt is not None  # kept under a diagonal metric
        drift = drift * state.mass
        noise = noise * state.mass_sqrt
    y = state.u.add(drift * state.at("half_eps", t))
    y.add_(noise * state.at("noise", t))
    # Before the boundary (which would map +-Inf into the box): a row sum is non-finite iff the row is.
    bad = ~torch.isfinite(y.flatten(1).sum(1) + acts)
    y = fold(y) if reflect else y.clamp_(0.0, 1.0)
    # Drawn for every row at every step: choosing the rows would need a host sync (and break CUDA graphs).
    fresh = torch.rand(y.shape, generator=state.restart_gen, device=y.device)
    torch.where(bad.view(state.view), fresh, y, out=state.u)
    state.resets.add_(bad)
    return bad


class LangevinStepper:
    """Unadjusted Langevin steps of the fixed law (ULA).

    Args:
        state: the chains.
        law: their law.
        objective: what they climb.
        step: the step size (:class:`~lightning_ldam.sampling.burn_in.StepSize`: ``sigma``, a number or per row).
    """

    def __init__(self, state: ChainState, law: Law, objective: Objective, step: "StepSize"):
        self.state, self.law, self.objective, self.step_size = state, law, objective, step

    def start(self) -> None:
        """The law is fixed from here on (burn-in's end)."""

    def step(self, t: Optional[int]) -> None:
        """An unadjusted Langevin step of the fixed law."""
        state = self.state
        terms = self.objective(state.u)
        state.record(t, terms.acts)
        langevin_move(state, self.law.drift(terms, state.u), t, terms.acts, metric=True)
        state.tick(t)


class MalaStepper(LangevinStepper):
    """Metropolis-adjusted Langevin steps (exact: the fixed law is invariant)."""

    current: Optional[Terms] = None  # the objective at the current states (float32 activations)

    def start(self) -> None:
        self.current = self.objective(self.state.u, exact=True)

    def move(self, cur: Terms, sigma) -> torch.Tensor:
        """One Metropolis-adjusted move from the states where ``cur`` was evaluated, with noise std ``sigma`` (a
        number or per row): the reflected proposal, accepted with the exact density ratio (a non-finite proposal is
        rejected); ``cur`` follows the accepted states. Returns each chain's ``log α``; ``last_accept`` the
        decisions."""
        state, law = self.state, self.law
        u = state.u
        half_eps = 0.5 * sigma * sigma
        if state.diag:  # M diagonal: per pixel the drift's step is (ε/2)·m_i and the noise's std σ·√m_i
            half_eps = half_eps * state.mass
            sigma = sigma * state.mass_sqrt
        mean = u + law.drift(cur, u) * half_eps
        y = fold(mean + torch.randn(u.shape, generator=state.gen, device=u.device) * sigma)
        prop = self.objective(y, exact=True)
        back = y + law.drift(prop, y) * half_eps
        log_alpha = (law.log_p(prop, y) - law.log_p(cur, u)
                     + log_fold_density(u, back, sigma) - log_fold_density(y, mean, sigma))
        log_alpha = torch.nan_to_num(log_alpha, nan=-math.inf, posinf=-math.inf)
        self.last_accept = self._accept(log_alpha, y, cur, prop)
        return log_alpha

    def _accept(self, log_alpha: torch.Tensor, proposed: torch.Tensor, cur: Terms, prop: Terms) -> torch.Tensor:
        """The Metropolis test: each chain moves to ``proposed`` with probability ``min(1, α)`` (a NaN ``log α`` must
        already read ``-inf``), and ``cur`` takes ``prop``'s terms where it does. Returns the decisions."""
        state = self.state
        accept = torch.rand(log_alpha.shape, generator=state.gen, device=proposed.device).log_() < log_alpha
        torch.where(accept.view(state.view), proposed, state.u, out=state.u)
        for old, new in zip(cur, prop):
            if old is not None:
                assert new is not None  # both evaluated by one objective: the same terms are None
                torch.where(accept.view((-1,) + (1,) * (old.dim() - 1)), new, old, out=old)
        return accept

    def step(self, t: Optional[int]) -> None:
        """A Metropolis-adjusted Langevin step of the fixed law, at the step fixed by burn-in."""
        state = self.state
        assert self.current is not None, "start() evaluates the objective first"
        state.record(t, self.current.acts)
        self.move(self.current, self.step_size.sigma)
        state.accepted.add_(self.last_accept)
        state.tick(t)


class HmcStepper(MalaStepper):
    """Hamiltonian transitions of the fixed law, reflected at the walls (exact; eager only). Where the step adapts
    (:attr:`~lightning_ldam.sampling.burn_in.StepSize.adapts`), burn-in's adapting steps are MALA's
    (:meth:`MalaStepper.move`)."""

    # the transition under way (set at its first leapfrog)
    leap: torch.Tensor
    momentum: torch.Tensor
    h_start: torch.Tensor
    position: torch.Tensor
    grad: torch.Tensor

    def step(self, t: Optional[int]) -> None:
        """One leapfrog of a Hamiltonian transition of the fixed law: a transition starts every ``leapfrog_steps``
        steps of the sampling phase with fresh momenta ``p ~ N(0, M⁻¹)`` and ends with the Metropolis test on
        ``H = −log p(u) + ½·pᵀMp`` (the log-densities in float32). Each leapfrog is
        ``p += (ε/2)·∇log p; u += ε·M·p; p += (ε/2)·∇log p`` with ``ε = HMC_STEP_FRACTION · σ_k``; a coordinate
        that leaves the box is reflected at its wall and its momentum flipped (volume-preserving and reversible,
        so the test is exact). The trace records the current (accepted) state at every step, so the diagnostics
        count gradient evaluations, as MALA's do."""
        state, law, cfg = self.state, self.law, self.state.cfg
        assert t is not None, "HMC runs eagerly (no graph form)"
        assert cfg.burn_in is not None and cfg.leapfrog_steps is not None, "ChainState takes a resolved config"
        assert self.current is not None, "start() evaluates the objective first"
        k = (t - cfg.burn_in) % cfg.leapfrog_steps
        end = k == cfg.leapfrog_steps - 1 or t == cfg.steps - 1
        state.record(t, self.current.acts)
        if k == 0:
            self._begin_transition()
        p, scale = self.momentum, self.leap
        p.add_(self.grad * (0.5 * scale))
        x, flip = reflect(self.position.add_(p * scale))
        self.position = x
        torch.where(flip, -p, p, out=p)
        terms = self.objective(x, exact=end)
        self.grad = law.drift(terms, x)
        p.add_(self.grad * (0.5 * scale))
        if end:
            log_alpha = self.h_start - self._kinetic(p) + law.log_p(terms, x)
            log_alpha = torch.nan_to_num(log_alpha, nan=-math.inf, posinf=-math.inf)
            state.accepted.add_(self._accept(log_alpha, x, self.current, terms))

    def _begin_transition(self) -> None:
        state = self.state
        # each chain's ε jittered by ±HMC_JITTER per transition: a fixed trajectory length that matches a period of
        # the law returns a chain near its start (Neal 2011, §5.4.2.2)
        jitter = torch.rand(state.u.shape[:1], generator=state.gen, device=state.u.device).view(state.view)
        self.leap = self.step_size.sigma * HMC_STEP_FRACTION * (1.0 + HMC_JITTER * (2.0 * jitter - 1.0))
        if state.diag:  # in p' = M^½·p ~ N(0, I) a leapfrog moves u by ε·M^½·p'
            assert state.mass_sqrt is not None  # kept under a diagonal metric
            self.leap = self.leap * state.mass_sqrt
        self.momentum = torch.randn(state.u.shape, generator=state.gen, device=state.u.device)
        assert self.current is not None, "start() evaluates the objective first"
        self.h_start = self._kinetic(self.momentum) - self.law.log_p(self.current, state.u)
        self.position = state.u.clone()
        self.grad = self.law.drift(self.current, state.u)

    @staticmethod
    def _kinetic(p: torch.Tensor) -> torch.Tensor:
        """The kinetic energy ``½·|p'|² = ½·pᵀMp`` per row, in the standardised momenta ``p' = M^½·p``."""
        return 0.5 * p.flatten(1).square().sum(1)


class AscentStepper(LangevinStepper):
    """Noisy gradient ascent (``method="ascent"``): each drift term RMS-normalised per chain (``precondition="rms"``),
    optionally pSGLD-preconditioned, ε and the noise annealed; the box clamps. An optimiser, not a sampler."""

    def __init__(self, state: ChainState, law: Law, objective: Objective, step: "StepSize"):
        super().__init__(state, law, objective, step)
        self.second_moment = torch.zeros_like(state.u) if state.cfg.precondition == "psgld" else None

    def step(self, t: Optional[int]) -> None:
        state, cfg = self.state, self.state.cfg
        terms = self.objective(state.u)
        state.record(t, terms.acts)
        g = terms.g_act
        temperature = self.law.temperature_row
        if cfg.precondition == "rms":
            drift = g.mul_((1.0 / (temperature.view(-1) * row_rms(g).clamp_min(1e-12))).view(state.view))
        else:
            drift = g.div_(temperature)
        if terms.g_disc is not None:
            rms_d = row_rms(terms.g_disc).clamp_min(1e-12)
            lam = self.law.lambda_ratio_row / rms_d if cfg.precondition == "rms" else self.law.lambda_ratio_row
            drift.add_(terms.g_disc * lam.view(state.view))
        if self.second_moment is not None:
            self.second_moment.mul_(0.99).addcmul_(drift, drift, value=0.01)
            drift = drift / (self.second_moment * state.at("psgld", t)).sqrt().add_(1e-8)
        bad = langevin_move(state, drift, t, terms.acts, reflect=False)
        if self.second_moment is not None:  # a reset chain must not keep a NaN preconditioner
            self.second_moment.masked_fill_(bad.view(state.view), 0.0)
        state.tick(t)


#: The stepper of each method.
STEPPERS = {"langevin": LangevinStepper, "mala": MalaStepper, "hmc": HmcStepper, "ascent": AscentStepper}
