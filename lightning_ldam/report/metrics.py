"""Sample-quality measures for LDAM samples (lift, realism, diversity) and the real-data activations they need."""
from __future__ import annotations

from typing import Dict, List

import torch

from lightning_ldam.errors import LDAMArgumentError
from lightning_ldam.report.realism import realism
from lightning_ldam.sampling.result import mean_pairwise_distance

__all__ = ["lift", "realism", "nearest_real", "diversity", "divergence", "transfer", "health", "UNDRIVEN_LIFT",
           "EXPLODING_FACTOR"]

#: A unit whose samples reach less than this lift is "undriven": the sampler cannot push it even halfway from an
#: average real input to its best one.
UNDRIVEN_LIFT = 0.5
#: A unit is "saturated or exploding" when an activation is NaN/Inf, or its samples exceed the real inputs'
#: range by this factor (a unit that grows without bound as the input moves: its images say nothing).
EXPLODING_FACTOR = 1000.0


def lift(sample_acts: torch.Tensor, real_acts: torch.Tensor) -> torch.Tensor:
    """How far the samples push each neuron beyond real data, on the scale of real data.

    Per neuron ``(mean sample activation - mean real activation) / (max real activation - mean real
    activation)``: 1.0 means the samples excite the neuron as much as its best real input does, 0 as much
    as an average real input, above 1 more than any real input.

    Args:
        sample_acts: ``[n, chains]`` activation of each neuron's own chains (``SampleResult.activations``).
        real_acts: ``[N_real, n]`` activations of the same neurons on real images
            (:func:`~lightning_ldam.sampling.activations.unit_activations`).

    Returns:
        ``[n]`` float32 lifts. A neuron that is constant over the real images (zero denominator, e.g. a dead
        ReLU) gets NaN: no scale exists to measure it on, and a NaN cannot pass for a good or bad figure
        (use ``torch.nanmedian`` to summarise).

    Raises:
        ValueError: the two tensors disagree on ``n``, or ``real_acts`` holds no image.
    """
    sample_acts = torch.as_tensor(sample_acts).float()
    real_acts = torch.as_tensor(real_acts).float()
    if sample_acts.dim() != 2 or real_acts.dim() != 2 or sample_acts.shape[0] != real_acts.shape[1]:
        raise LDAMArgumentError("lift", f"expected sample_acts [n, chains] and real_acts [N_real, n], got "
                         f"{tuple(sample_acts.shape)} and {tuple(real_acts.shape)}")
    if real_acts.shape[0] == 0:
        raise LDAMArgumentError("lift", "real_acts holds no image")
    real_mean = real_acts.mean(0)
    real_max = real_acts.max(0).values
    # max == min, not max - mean == 0: the mean of N equal floats can be off by a rounding error
    constant = real_max == real_acts.min(0).values
    out = (sample_acts.mean(1) - real_mean) / (real_max - real_mean)
    return torch.where(constant, torch.full_like(out, float("nan")), out)


def _flat(x: torch.Tensor, name: str) -> torch.Tensor:
    x = torch.as_tensor(x)
    if x.dim() < 2:
        raise LDAMArgumentError(name, f"expected a batch [M, D] (or [M, C, H, W]), got shape {tuple(x.shape)}")
    return x.detach().float().flatten(1)


def _checked_pair(metric: str, samples: torch.Tensor, name: str, real: torch.Tensor, why: str):
    """Flattened ``samples`` and ``real``, after checking there are two real images and the sizes agree."""
    s, r = _flat(samples, name), _flat(real, "real")
    if r.shape[0] < 2:
        raise LDAMArgumentError(metric, f"needs at least 2 real images ({why}), got {r.shape[0]}")
    if s.shape[1] != r.shape[1]:
        raise LDAMArgumentError(metric, f"samples have {s.shape[1]} values each, real images {r.shape[1]}")
    return s, r


def nearest_real(samples: torch.Tensor, real: torch.Tensor) -> float:
    """How close samples lie to real images in pixel space, relative to how close real images lie to each other.

    Mean L2 distance from each sample to its nearest real image, divided by the mean distance from each
    real image to its nearest *other* real image. About 1 for samples as close to the real set as real
    images are; 0 for copies of real images; large for images far from every real one. It rewards flat
    averages (MNIST's class-mean images read 0.82, below real digits): :func:`realism` is the measure that blur
    and noise cannot fool; this one says how far samples are from the real images' pixels.

    Args:
        samples: ``[M, D]`` samples (any ``[M, ...]`` is flattened).
        real: ``[N, D]`` real images, ``N >= 2``, same pixel space as ``samples``.

    Returns:
        The ratio, a Python float.

    Raises:
        ValueError: fewer than two real images, or mismatched sizes.
    """
    s, r = _checked_pair("nearest_real", samples, "samples", real, "a nearest *other* one")
    nearest = torch.cdist(s, r).min(1).values.mean()
    real_dist = torch.cdist(r, r)
    real_dist.fill_diagonal_(float("inf"))
    return (nearest / real_dist.min(1).values.mean()).item()


def diversity(samples_per_neuron: torch.Tensor, real: torch.Tensor) -> float:
    """Spread of one neuron's chains relative to the spread of real images.

    Mean pairwise L2 distance between the chains, divided by the mean pairwise L2 distance among ``real``.
    The caller picks ``real``: e.g. the held-out images of the class a logit stands for. 0 when every
    chain ended in the same image; about 1 when the chains are as varied as those real images.

    Args:
        samples_per_neuron: ``[chains, D]`` one neuron's samples (any ``[chains, ...]`` is flattened).
        real: ``[N, D]`` real images, ``N >= 2``.

    Returns:
        The ratio, a Python float (0.0 with a single chain: there is no pair).

    Raises:
        ValueError: fewer than two real images, or mismatched sizes.
    """
    s, r = _checked_pair("diversity", samples_per_neuron, "samples_per_neuron", real, "a pair")
    if s.shape[0] < 2:
        return 0.0
    return (mean_pairwise_distance(s) / mean_pairwise_distance(r)).item()


def divergence(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """How different two sets of chains of the same neurons are, on the scale of the chains' own spread.

    Per neuron: the mean L2 distance between chain ``j`` of ``a`` and chain ``j`` of ``b`` (paired: same start,
    same noise, as the callback's variants and rounds are), divided by the mean pairwise distance between
    distinct chains within ``a`` and within ``b`` (averaged). 0: the same samples; about 1: as different as two
    chains of one variant; above 1: a different concept.

    Args:
        a: ``[n, chains, ...]`` samples (e.g. the raw weights' ``SampleResult.images``).
        b: ``[n, chains, ...]`` the paired samples (the averaged weights', or the previous round's).

    Returns:
        ``[n]`` float32 ratios; NaN for a neuron with fewer than 2 chains or chains that all coincide (no scale).
    """
    a, b = torch.as_tensor(a).float().flatten(2), torch.as_tensor(b).float().flatten(2)
    if a.shape != b.shape:
        raise LDAMArgumentError("divergence", f"expected paired samples of one shape, got {tuple(a.shape)} and "
                                              f"{tuple(b.shape)}")
    paired = (a - b).norm(dim=2).mean(1)
    c = a.shape[1]
    if c < 2:
        return torch.full_like(paired, float("nan"))
    within = [mean_pairwise_distance(x) for x in (a, b)]
    spread = (within[0] + within[1]) / 2
    return torch.where(spread > 0, paired / spread, torch.full_like(paired, float("nan")))


def transfer(own_acts: torch.Tensor, cross_acts: torch.Tensor, real_acts: torch.Tensor) -> torch.Tensor:
    """How strongly units respond to another set of samples of the same neurons, relative to their own samples.

    Per neuron ``lift(cross) / lift(own)`` (:func:`lift`, on the unit's own real-input scale): 1 when the unit is
    driven as strongly by the other samples as by its own (e.g. raw's samples read by the averaged weights' unit:
    the same concept), 0 when the other samples excite it no more than an average real input, negative below
    that. Unlike :func:`divergence` it does not need the two sets of chains to stay paired: two chains that end in
    different images of one concept still transfer.

    Args:
        own_acts: ``[n, chains]`` the units on their own samples (``SampleResult.activations``).
        cross_acts: ``[n, chains']`` the same units on the other samples (``SampleResult.cross_activations[...]``).
        real_acts: ``[N_real, n]`` the units on real inputs (``SampleResult.real_activations``).

    Returns:
        ``[n]`` float32 ratios; NaN where the unit is constant on the real inputs or its own samples' lift is below
        :data:`UNDRIVEN_LIFT` (undriven: no scale to compare against).

    Example::

        >>> real = torch.tensor([[0.0], [1.0], [2.0]])  # mean 1, max 2
        >>> transfer(torch.tensor([[3.0, 3.0]]), torch.tensor([[2.0, 2.0]]), real)  # lifts 2 and 1
        tensor([0.5000])
    """
    own, cross = lift(own_acts, real_acts), lift(cross_acts, real_acts)
    return torch.where(own >= UNDRIVEN_LIFT, cross / own, torch.full_like(own, float("nan")))


def health(real_acts: torch.Tensor, sample_acts: torch.Tensor) -> Dict[str, List[int]]:
    """Which neurons are dead, undriven or saturated/exploding (positions into the neuron axis).

    * ``dead``: constant over the real inputs (e.g. a ReLU that never fires): nothing to visualise.
    * ``undriven``: not dead, and the samples' lift (:func:`lift`) is below :data:`UNDRIVEN_LIFT`.
    * ``saturated``: an activation on the real inputs or the samples is NaN/Inf, or the samples exceed the real
      range by :data:`EXPLODING_FACTOR` (samples' mean minus the real mean over the real max minus min).

    Args:
        real_acts: ``[N_real, n]`` activations on real inputs
            (:func:`~lightning_ldam.sampling.activations.unit_activations`).
        sample_acts: ``[n, chains]`` the samples' activations (``SampleResult.activations``).
    """
    real_acts, sample_acts = torch.as_tensor(real_acts).float(), torch.as_tensor(sample_acts).float()
    finite = torch.isfinite(real_acts).all(0) & torch.isfinite(sample_acts).all(1)
    lo, hi = real_acts.min(0).values, real_acts.max(0).values
    dead = finite & (hi == lo)
    lifts = lift(sample_acts, real_acts)
    undriven = finite & ~dead & (lifts < UNDRIVEN_LIFT)
    reach = (sample_acts.mean(1) - real_acts.mean(0)).abs() / (hi - lo)
    saturated = ~finite | (~dead & (reach > EXPLODING_FACTOR))
    return {name: torch.nonzero(mask).flatten().tolist()
            for name, mask in (("dead", dead), ("undriven", undriven), ("saturated", saturated))}
