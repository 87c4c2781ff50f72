"""The stated law and the box it lives in.

Each neuron k's chains sample, in the unit box ``u ∈ [0, 1]^d``,

    log p_k(u) = a_k(u) / (c_k·T_k) + λ_k·log D(u) − γ_k·E_s(u) + const,   E_s(u) = ½·Σ (u_i − u_j)² (neighbours),

:class:`Law` holds its constants per neuron (and per chain row) and evaluates ``∇ log p`` (the drift) and
``log p``. ``T_k`` is given; ``c_k``, ``λ_k`` and ``γ_k`` are set by burn-in (:mod:`lightning_ldam.sampling.burn_in`)
and fixed at its end (:mod:`lightning_ldam.sampling.config` says how). A step that leaves the box is folded back
into it (:func:`fold`), which keeps the law on the box.
"""
from __future__ import annotations

from typing import Mapping, Optional, Sequence, Tuple, cast

import torch
import torch.nn.functional as F

from lightning_ldam.sampling.config import PIXEL_SCALE
from lightning_ldam.sampling.objective import Terms

__all__ = ["Law", "fold", "reflect", "log_fold_density", "roughness", "roughness_grad", "row_rms"]


def fold(v: torch.Tensor) -> torch.Tensor:
    """Reflect ``v`` into [0, 1] (a step that leaves the box bounces back off its wall)."""
    return reflect(v)[0]


def reflect(v: torch.Tensor):
    """``(fold(v), odd)``: ``odd`` marks the coordinates reflected an odd number of times (whose direction of motion
    the reflection reverses: HMC flips their momenta)."""
    v = v.remainder(2.0)
    odd = v > 1.0
    return torch.where(odd, 2.0 - v, v), odd


def log_fold_density(y: torch.Tensor, mean: torch.Tensor, std) -> torch.Tensor:
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


def row_rms(g: torch.Tensor) -> torch.Tensor:
    """Per-row RMS over pixels, ``[B]``."""
    return g.flatten(1).square().mean(1).sqrt()


class Law:
    """The law's constants for ``n`` neurons of ``chains`` consecutive rows each, and its drift and log-density.

    Args:
        per_neuron: ``"temperature"`` (T_k), ``"disc_weight"`` (λ as asked: log D's drift over the unit's) and
            ``"smoothness"`` (κ_k), ``n`` values each.
        chains: rows per neuron.
        view: the shape that broadcasts a per-row value over a row's pixels.
        images: whether the inputs are images (the smoothness prior is on images only).
        device: where the constants live.

    Attributes:
        temperature: ``[n]`` T_k.
        scale: ``[n]`` c_k, once burn-in has measured it (``None`` before).
        disc_weights: ``[n]`` λ_k, the weight of log D (``None`` before burn-in sets it).
        smoothness: ``[n]`` γ_k, the weight of E_s (``None`` without the prior).
    """

    def __init__(self, per_neuron: Mapping[str, Sequence[float]], chains: int, view: Tuple[int, ...], images: bool,
                 device: torch.device):
        self.chains, self.view = chains, view
        self.temperature = torch.tensor([float(v) for v in per_neuron["temperature"]], device=device)
        self.temperature_row = self.per_row(self.temperature)
        self.lambda_ratio = torch.tensor([float(v) for v in per_neuron["disc_weight"]], device=device)
        self.lambda_ratio_row = self.per_row(self.lambda_ratio).view(-1)
        kappa = [float(v) for v in per_neuron["smoothness"]]
        #: whether any neuron has the smoothness prior (host-side, no sync)
        self.has_smoothness = images and any(k > 0 for k in kappa)
        #: κ_k/PIXEL_SCALE: γ_k before the prior weight w_k
        self.kappa_unit = torch.tensor(kappa, device=device) / PIXEL_SCALE if self.has_smoothness else None
        # burn-in's search runs with w_k = 1: a number when every neuron has the same κ (one fused pass), else per row
        self.search_smoothness = None if not self.has_smoothness else (
            kappa[0] / PIXEL_SCALE if len(set(kappa)) == 1 else self.per_row(cast(torch.Tensor, self.kappa_unit)))
        self.scale: Optional[torch.Tensor] = None
        self.inv_scale_row: Optional[torch.Tensor] = None
        self.disc_weights: Optional[torch.Tensor] = None
        self.disc_weight_row: Optional[torch.Tensor] = None
        self.smoothness: Optional[torch.Tensor] = None
        self.smoothness_row: Optional[torch.Tensor] = None

    def per_row(self, v: torch.Tensor) -> torch.Tensor:
        """A per-neuron value repeated over its rows, shaped to broadcast over a row's pixels."""
        return v.repeat_interleave(self.chains).view(self.view)

    def set_scale(self, scale: torch.Tensor) -> None:
        """Fix ``c_k``."""
        self.scale = scale
        self.inv_scale_row = self.per_row(1.0 / (scale * self.temperature))

    def set_priors(self, ms_disc: torch.Tensor, weight: torch.Tensor) -> None:
        """``λ_k = λ·w_k / (PIXEL_SCALE·RMS(∂ log D/∂u))`` from D's mean-square input gradient ``ms_disc`` and
        ``γ_k = κ_k·w_k / PIXEL_SCALE``: both priors scaled by the prior weight ``w_k``."""
        disc_unit = torch.where(ms_disc > 0, self.lambda_ratio / (PIXEL_SCALE * ms_disc.sqrt()),
                                torch.zeros_like(ms_disc))
        self.disc_weights = disc_unit * weight
        self.disc_weight_row = self.per_row(self.disc_weights)
        if self.has_smoothness:
            assert self.kappa_unit is not None  # kept with the smoothness prior
            self.smoothness = self.kappa_unit * weight
            self.smoothness_row = self.per_row(self.smoothness)

    def drift(self, terms: Terms, u: torch.Tensor) -> torch.Tensor:
        """``∇ᵤ log p`` at ``u`` (``terms`` evaluated there)."""
        assert self.inv_scale_row is not None, "set_scale() fixes c_k first"
        drift = terms.g_act * self.inv_scale_row
        if terms.g_disc is not None:
            assert self.disc_weight_row is not None, "set_priors() sets λ_k first"
            drift.addcmul_(terms.g_disc, self.disc_weight_row)
        if self.has_smoothness:
            assert self.smoothness_row is not None, "set_priors() sets γ_k first"
            drift.sub_(roughness_grad(u) * self.smoothness_row)
        return drift

    def log_p(self, terms: Terms, u: torch.Tensor) -> torch.Tensor:
        """``log p`` at ``u``, per chain, up to the normalising constant."""
        assert self.inv_scale_row is not None, "set_scale() fixes c_k first"
        log_p = terms.acts * self.inv_scale_row.view(-1)
        if terms.log_d is not None:
            assert self.disc_weight_row is not None, "set_priors() sets λ_k first"
            log_p = log_p + terms.log_d * self.disc_weight_row.view(-1)
        if self.has_smoothness:
            assert self.smoothness_row is not None, "set_priors() sets γ_k first"
            log_p = log_p - self.smoothness_row.view(-1) * roughness(u)
        return log_p
