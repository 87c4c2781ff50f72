"""What the chains climb: each chain's activation and log D, with their input gradients in unit-box coordinates."""
from __future__ import annotations

from typing import Callable, NamedTuple, Optional

import torch
import torch.nn.functional as F

__all__ = ["Terms", "Objective"]


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
