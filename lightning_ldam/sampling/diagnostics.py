"""Mixing diagnostics as MCMC libraries report them: rank-normalised split R-hat and bulk ESS.

Both follow Vehtari, Gelman, Simpson, Carpenter and Bürkner (2021), "Rank-normalization, folding, and localization:
an improved R-hat for assessing convergence of MCMC", as Stan and ArviZ compute them:

* **split R-hat**: each chain is cut into halves (so a chain that drifts disagrees with itself), every draw is
  replaced by the normal quantile of its rank among all draws (so heavy tails and a bounded range do not matter),
  and ``sqrt(var⁺ / W)`` compares the spread of all draws with the mean within-chain spread. R-hat is the larger of
  that (*bulk*) and the same on the folded draws ``|x − median|`` (*tail*, which sees chains of one centre but other
  spreads). ≈ 1 when the chains sample one law; above 1.01 (Stan's threshold) to 1.1 (this project's warning) the
  chains have not mixed.
* **bulk ESS**: the number of independent draws the rank-normalised split chains are worth, from their
  autocorrelations (FFT), summed over Geyer's initial positive and monotone sequence.

Each function takes ``[..., chains, draws]`` and returns ``[...]``: one value per neuron for a ``[n, c, draws]``
trace.
"""
from __future__ import annotations

import math

import torch

from lightning_ldam.errors import LDAMArgumentError

__all__ = ["split_rhat", "ess_bulk", "MIN_DRAWS"]

#: Fewest draws per chain the diagnostics are given for (each split half needs two).
MIN_DRAWS = 4


def _checked(x: torch.Tensor, name: str) -> torch.Tensor:
    x = torch.as_tensor(x).detach().to(torch.float64)
    if x.dim() < 2 or x.shape[-1] < MIN_DRAWS:
        raise LDAMArgumentError(name, f"expected [..., chains, draws] with at least {MIN_DRAWS} draws, got shape "
                                      f"{tuple(x.shape)}")
    return x


def _split(x: torch.Tensor) -> torch.Tensor:
    """``[..., m, n]`` -> ``[..., 2m, n // 2]``: the first and the last half of each chain (the middle draw of an
    odd ``n`` dropped, as ArviZ does)."""
    half = x.shape[-1] // 2
    return torch.cat([x[..., :half], x[..., -half:]], dim=-2)


def _z_scale(x: torch.Tensor) -> torch.Tensor:
    """Normal quantiles of the draws' ranks over all chains of each ``[..., m, n]`` set (ties share their mean
    rank): ``Φ⁻¹((r − 3/8) / (S + 1/4))``, Blom's offset, as in the paper."""
    flat = x.flatten(-2)
    size = flat.shape[-1]
    ordered, order = flat.sort(dim=-1)
    position = torch.arange(size, dtype=flat.dtype, device=flat.device).expand_as(flat)
    starts = torch.ones_like(ordered, dtype=torch.bool)
    starts[..., 1:] = ordered[..., 1:] != ordered[..., :-1]
    ends = torch.ones_like(starts)
    ends[..., :-1] = starts[..., 1:]
    # each draw's tie group runs from the last start at or before it to the first end at or after it
    first = torch.cummax(torch.where(starts, position, torch.zeros_like(position)), dim=-1).values
    last = torch.where(ends, position, torch.full_like(position, size - 1)).flip(-1).cummin(dim=-1).values.flip(-1)
    ranks = torch.empty_like(flat).scatter_(-1, order, (first + last) / 2 + 1)
    return torch.special.ndtri((ranks - 0.375) / (size + 0.25)).view_as(x)


def _rhat(x: torch.Tensor) -> torch.Tensor:
    """Classic potential scale reduction of ``[..., m, n]``: ``sqrt(((n−1)/n·W + B/n) / W)``."""
    n = x.shape[-1]
    chain_var = x.var(dim=-1, unbiased=True)
    within = chain_var.mean(-1)
    between = n * x.mean(-1).var(dim=-1, unbiased=True)
    var_plus = (n - 1) / n * within + between / n
    out = (var_plus / within).sqrt()
    # chains that do not move at all: one value everywhere is mixed (1), values that differ between chains are not
    constant = within == 0
    return torch.where(constant, torch.where(between == 0, torch.ones_like(out), torch.full_like(out, math.inf)), out)


def split_rhat(x: torch.Tensor) -> torch.Tensor:
    """Rank-normalised split R-hat (the larger of the bulk and the tail value) of ``[..., chains, draws]``.

    Example::

        >>> g = torch.Generator().manual_seed(0)
        >>> iid = torch.randn(4, 500, generator=g)
        >>> round(float(split_rhat(iid)), 2)
        1.0
        >>> stuck = iid + torch.arange(4.0).unsqueeze(1) * 3  # four chains around four different points
        >>> float(split_rhat(stuck)) > 2
        True
    """
    x = _split(_checked(x, "split_rhat"))
    bulk = _rhat(_z_scale(x))
    folded = (x - x.flatten(-2).median(-1).values[..., None, None]).abs()
    tail = _rhat(_z_scale(folded))
    return torch.maximum(bulk, tail).float()


def _autocov(x: torch.Tensor) -> torch.Tensor:
    """Per-chain autocovariance at lags ``0..n−1`` (biased, ``/n``), by FFT: ``[..., m, n]``."""
    n = x.shape[-1]
    centred = x - x.mean(-1, keepdim=True)
    size = 1 << (2 * n - 1).bit_length()
    spectrum = torch.fft.rfft(centred, n=size, dim=-1)
    return torch.fft.irfft(spectrum * spectrum.conj(), n=size, dim=-1)[..., :n] / n


def _ess(x: torch.Tensor) -> torch.Tensor:
    """ESS of each ``[m, n]`` set of ``[..., m, n]`` (Geyer's initial monotone sequence, as ArviZ's ``_ess``)."""
    lead = x.shape[:-2]
    m, n = x.shape[-2:]
    acov = _autocov(x).reshape(-1, m, n)
    acovs = acov.mean(1)  # the chains' mean autocovariance, per set
    chain_var = acov[:, :, 0].mean(1) * n / (n - 1)
    between = x.mean(-1).reshape(-1, m).var(dim=1, unbiased=True) if m > 1 else torch.zeros(acovs.shape[0])
    out = [_ess_of(a, mean_var, b, m, n) for a, mean_var, b in zip(acovs.tolist(), chain_var.tolist(),
                                                                  between.tolist())]
    return torch.tensor(out, dtype=torch.float64).view(lead)


def _ess_of(mean_acov: list, mean_var: float, between: float, m: int, n: int) -> float:
    """One set's ESS from its mean autocovariance (plain floats: the loop runs once per neuron and quantity)."""
    var_plus = mean_var * (n - 1) / n + between
    if not var_plus > 0:
        return float(m * n)  # constant draws: nothing to correlate
    rho = [0.0] * n
    rho[0] = 1.0
    rho_even, rho_odd = 1.0, 1.0 - (mean_var - mean_acov[1]) / var_plus
    rho[1] = rho_odd
    t = 1
    while t < n - 3 and rho_even + rho_odd > 0:
        rho_even = 1.0 - (mean_var - mean_acov[t + 1]) / var_plus
        rho_odd = 1.0 - (mean_var - mean_acov[t + 2]) / var_plus
        if rho_even + rho_odd >= 0:
            rho[t + 1], rho[t + 2] = rho_even, rho_odd
        t += 2
    max_t = t - 2
    if rho_even > 0:
        rho[max_t + 1] = rho_even
    t = 1  # the initial monotone sequence: pair sums never increase
    while t <= max_t - 2:
        if rho[t + 1] + rho[t + 2] > rho[t - 1] + rho[t]:
            rho[t + 1] = rho[t + 2] = (rho[t - 1] + rho[t]) / 2
        t += 2
    tau = -1.0 + 2.0 * sum(rho[:max_t + 1]) + rho[max_t + 1]
    return m * n / max(tau, 1.0 / math.log10(m * n))


def ess_bulk(x: torch.Tensor) -> torch.Tensor:
    """Bulk effective sample size of ``[..., chains, draws]``: the ESS of the rank-normalised split chains.

    Example::

        >>> g = torch.Generator().manual_seed(0)
        >>> 1800 < float(ess_bulk(torch.randn(4, 500, generator=g))) < 2200  # 2000 independent draws
        True
    """
    return _ess(_z_scale(_split(_checked(x, "ess_bulk")))).float()
