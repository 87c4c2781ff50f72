"""One call's chains: their state, their law, burn-in and the method's stepper, behind the loop's interface.

Where each part lives:

- :mod:`~lightning_ldam.sampling.law`: the stated law (its constants, drift and log-density) and the box;
- :mod:`~lightning_ldam.sampling.steppers`: the update rule of each method;
- :mod:`~lightning_ldam.sampling.burn_in`: the steps that set ``c_k``, ``λ_k``, ``γ_k``, the step size and the
  metric, then stop adapting;
- :mod:`~lightning_ldam.sampling.state`: the states, their per-step scalars, and what is recorded.

What each method samples is stated in :mod:`lightning_ldam.sampling.config`.
"""
from __future__ import annotations

from typing import Callable, Dict, Mapping, Optional, Sequence, cast

import torch

from lightning_ldam.sampling.burn_in import BurnIn, MetricWindow, StepSize
from lightning_ldam.sampling.config import EXACT_METHODS
from lightning_ldam.sampling.law import Law
from lightning_ldam.sampling.objective import Objective
from lightning_ldam.sampling.state import ChainState
from lightning_ldam.sampling.steppers import STEPPERS

__all__ = ["LangevinChains"]


class LangevinChains:
    """The chains of one call, from their starts to their last step.

    Args:
        state: the chains' states (:class:`~lightning_ldam.sampling.state.ChainState`: starts, settings, RNG).
        objective: what the chains climb.
        law: per-neuron ``"disc_weight"`` (λ), ``"temperature"`` (T) and ``"smoothness"`` (κ), each a sequence of
            ``neurons`` values (per-layer settings of the neuron spec); ``None``: no D (λ = 0) and the settings'
            T and κ for every neuron.
        real_acts: ``(mean, max)`` per neuron over real inputs, for ``adapt_disc`` (``None``: no adaptation).

    Attributes:
        state: :class:`~lightning_ldam.sampling.state.ChainState`.
        law: :class:`~lightning_ldam.sampling.law.Law`.
        burn_in: :class:`~lightning_ldam.sampling.burn_in.BurnIn`.
        stepper: the method's stepper (:data:`~lightning_ldam.sampling.steppers.STEPPERS`).
    """

    def __init__(self, state: ChainState, objective: Objective, law: Optional[Mapping[str, Sequence[float]]] = None,
                 real_acts: Optional[Sequence[torch.Tensor]] = None):
        cfg, neurons, u0 = state.cfg, state.n, state.u
        self.cfg, self.objective, self.state = cfg, objective, state
        law = law or {"disc_weight": [0.0] * neurons, "temperature": [cfg.temperature] * neurons,
                      "smoothness": [cast(float, cfg.smoothness)] * neurons}
        images = u0.dim() == 4 and cfg.method != "ascent"
        self.law = Law(law, self.state.chains, self.state.view, images, u0.device)
        self.step_size = StepSize(cfg, self.state)
        self.window = MetricWindow(self.state, self.law, self.step_size) if self.state.diag else None
        self.stepper = STEPPERS[cfg.method](self.state, self.law, objective, self.step_size)
        self.burn_in = BurnIn(self.state, self.law, objective, real_acts, self.step_size, self.window, self.stepper)

    # ---- the loop's interface -----------------------------------------------------------------------------
    def phases(self) -> Dict[str, Callable[[Optional[int]], None]]:
        """The step function of each phase: burn-in's search, burn-in's adapting part, then the method's step."""
        return {"search": self.burn_in.search_step, "adapt": self.burn_in.adapt, "sample": self.stepper.step}

    def freeze_scales(self) -> None:
        """Fix ``c_k`` at the end of burn-in's search."""
        self.burn_in.freeze_scales()

    def fix_metric(self) -> None:
        """``metric="diagonal"``: fix M at the end of its window (a no-op for the identity)."""
        if self.window is not None:
            self.window.fix()

    def freeze(self) -> None:
        """Fix ``λ_k``, ``γ_k`` and the step at the end of burn-in: from here on the law is fixed."""
        self.burn_in.freeze()
        self.stepper.start()

    def replace_discriminator(self, discriminator: torch.nn.Module) -> None:
        """Read ``discriminator`` from here on (it replaces one whose weights turned NaN/Inf), with D's gradient scale
        measured anew at the current states: the broken D's tracked scale must not set ``λ_k``. Call before
        :meth:`freeze`; a no-op when the objective has no D in its drift."""
        if self.objective.discriminator is None:
            return
        self.objective.discriminator = discriminator
        if self.cfg.method != "ascent":
            self.burn_in.track_scales(self.objective(self.state.u), 1.0, act=False)

    # ---- what a call reports ------------------------------------------------------------------------------
    @property
    def u(self) -> torch.Tensor:
        """``[B, *shape]`` the chains' states."""
        return self.state.u

    def step_sizes(self) -> Optional[torch.Tensor]:
        """``[neurons]`` σ_k = √ε_k of the sampling phase (``None`` for ``"ascent"``)."""
        if self.cfg.method == "ascent":
            return None
        sigma = self.step_size.per_neuron()
        if isinstance(sigma, torch.Tensor):
            return sigma.clone()
        return torch.full((self.state.n,), float(sigma), device=self.state.u.device)

    def acceptance_rate(self) -> Optional[torch.Tensor]:
        """``[neurons]`` share of MALA's proposals (HMC's transitions) accepted after burn-in (``None`` for the other
        methods)."""
        cfg = self.cfg
        if cfg.method not in EXACT_METHODS:
            return None
        # HMC: a transition every leapfrog_steps steps, the last one cut short at the end
        proposals = (-(-cfg.sampling_steps // cast(int, cfg.leapfrog_steps)) if cfg.method == "hmc"
                     else cfg.sampling_steps)
        return self.state.per_neuron(self.state.accepted) / max(proposals, 1)

    def metric_diagonal(self) -> Optional[torch.Tensor]:
        """``[neurons, *shape]`` M's diagonal of the sampling phase (``None``: the identity)."""
        state = self.state
        if not state.diag:
            return None
        assert state.mass is not None  # kept under a diagonal metric
        return state.mass.view(state.n, state.chains, *state.mass.shape[1:])[:, 0].clone()
