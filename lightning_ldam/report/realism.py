"""Realism in a feature space that sees texture: a Fréchet distance to real images, on the scale of real images.

The pixel measure (:func:`lightning_ldam.report.metrics.nearest_real`, L2 to the nearest real image) rewards flat
averages: a class-mean image lies closer to many digits than any digit does, and blurred noise of the right mean comes
close
too. Here images are described by their texture and structure, and compared as distributions:

1. **Features.** Each image is standardised per channel by its own mean and standard deviation (so brightness,
   contrast and flat colours, which the pixel measure and the discriminator see, do not swamp the texture), resized
   to at most 64 px, and passed through a fixed, seeded random conv net (:class:`TextureFeatures`; its weights
   depend on the channel count and ``seed`` only, so every variant, round and run is measured with the same ruler)
   at three scales. An image becomes the per-channel mean and standard deviation of each scale's ReLU maps: the
   statistics that texture synthesis with random shallow CNNs matches (Ustyuzhaninov et al. 2017).
2. **Distance.** The Fréchet distance between Gaussians fitted to the two feature sets (as FID does):
   ``FD = |μ₁ − μ₂|² + tr(Σ₁ + Σ₂ − 2 (Σ₁^½ Σ₂ Σ₁^½)^½)``.
3. **Scale.** The real images are split in two halves, a reference and a held-out half. ``realism`` is
   ``sqrt(FD(m samples, reference) / mean FD(m held-out images, reference))`` over :data:`BASELINE_DRAWS` draws:
   the same ``m`` on both sides, so the estimator's small-sample bias cancels, and a square root, so it reads as a
   ratio of distances. Real held-out images read ≈ 1; higher is less real.

Measured on constructed cases (``tests/test_realism.py``, 80 images against 256 real ones): real held-out digits
read ≈ 1, Gaussian-blurred digits and class-mean images well above, noise of the right per-pixel mean and std
higher still, on MNIST and on coloured digits.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from lightning_ldam.errors import LDAMArgumentError

__all__ = ["TextureFeatures", "frechet_distance", "realism", "measurable", "MAX_SIDE", "BASELINE_DRAWS", "MIN_IMAGES"]

#: Images are resized (area) to at most this side before the features: cost stays bounded at 224 px.
MAX_SIDE = 64
#: Held-out draws whose mean distance is the scale.
BASELINE_DRAWS = 8
#: Fewest samples, and fewest real images per half, the measure is given for (the callback leaves it out below).
MIN_IMAGES = 4
_WIDTHS = (16, 32, 32)


class TextureFeatures(nn.Module):
    """Fixed random conv features: three 3×3 conv + ReLU scales (16, 32, 32 maps; average-pooled by 2 between
    them), each summarised by its maps' per-channel mean and standard deviation: 160 numbers per image.

    The weights are Kaiming-normal buffers (no bias) from a private generator seeded by ``seed``, never trained;
    building them leaves the global RNG untouched.

    Args:
        channels: image channels.
        seed: the weights' seed.
    """

    def __init__(self, channels: int, seed: int = 0):
        super().__init__()
        # buffers drawn from a private generator: building nn.Conv2d layers would draw from the global RNG, and so
        # change the training run that the callback measures
        generator = torch.Generator().manual_seed(int(seed))
        width = channels
        for i, out in enumerate(_WIDTHS):
            weight = torch.randn((out, width, 3, 3), generator=generator) * (2.0 / (width * 9)) ** 0.5
            self.register_buffer(f"weight{i}", weight)
            width = out

    @property
    def dim(self) -> int:
        return 2 * sum(_WIDTHS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[N, C, H, W]`` (already standardised) -> ``[N, 160]``."""
        stats = []
        for i in range(len(_WIDTHS)):
            if i:
                x = F.avg_pool2d(x, 2) if min(x.shape[-2:]) >= 4 else x
            x = F.relu(F.conv2d(x, getattr(self, f"weight{i}"), padding=1))
            flat = x.flatten(2)
            stats += [flat.mean(2), flat.std(2, unbiased=False)]
        return torch.cat(stats, 1)


def _features(images: torch.Tensor, net: TextureFeatures, floor: torch.Tensor, batch: int = 256) -> torch.Tensor:
    """Each image standardised per channel by its own mean and std (``floor`` bounds the std from below), resized
    to at most :data:`MAX_SIDE`, then :class:`TextureFeatures` in float64."""
    x = images.detach().float()
    side = max(x.shape[-2:])
    out = []
    with torch.no_grad():
        for start in range(0, x.shape[0], batch):
            xb = x[start:start + batch]
            xb = (xb - xb.mean((2, 3), keepdim=True)) / torch.maximum(xb.std((2, 3), keepdim=True), floor)
            if side > MAX_SIDE:
                xb = F.interpolate(xb, scale_factor=MAX_SIDE / side, mode="area")
            out.append(net(xb).double())
    return torch.cat(out)


def _sqrt_psd(a: torch.Tensor) -> torch.Tensor:
    vals, vecs = torch.linalg.eigh(a)
    return (vecs * vals.clamp(min=0).sqrt()) @ vecs.T


def frechet_distance(a: torch.Tensor, b: torch.Tensor) -> float:
    """Fréchet distance between Gaussians fitted to feature sets ``a`` ``[M, D]`` and ``b`` ``[N, D]`` (M, N >= 2).

    Example::

        >>> x = torch.randn(500, 3, generator=torch.Generator().manual_seed(0))
        >>> round(frechet_distance(x, x), 6), round(frechet_distance(x, x + 2.0), 3)  # a shift of 2 on 3 axes: 12
        (0.0, 12.0)
    """
    a, b = a.double(), b.double()
    if a.shape[0] < 2 or b.shape[0] < 2:
        raise LDAMArgumentError("frechet_distance", f"needs at least 2 rows per set, got {a.shape[0]} and {b.shape[0]}")
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = torch.cov(a.T).reshape(a.shape[1], -1), torch.cov(b.T).reshape(b.shape[1], -1)
    root_a = _sqrt_psd(cov_a)
    cross = torch.linalg.eigvalsh(root_a @ cov_b @ root_a).clamp(min=0).sqrt().sum()
    return float(((mu_a - mu_b) ** 2).sum() + cov_a.trace() + cov_b.trace() - 2 * cross)


def realism(samples: torch.Tensor, real: torch.Tensor, *, seed: int = 0) -> float:
    """``sqrt(FD(samples, reference) / FD(held-out draws, reference))`` in :class:`TextureFeatures` (the module
    docstring has the construction): ≈ 1 as real as real images, higher is less real, on the scale of a distance.

    Args:
        samples: ``[M, C, H, W]`` images (``M >= 4``) in the same pixel space as ``real``.
        real: ``[N, C, H, W]`` real images (``N >= 8``); even rows are the reference, odd rows the held-out half.
        seed: the features' weights and the held-out draws.

    Returns:
        The ratio, a Python float; NaN where the held-out draws sit at distance 0 from the reference (identical real
        images: there is no scale).

    Raises:
        ValueError: the two sets are not images of one shape, or too few of either (:data:`MIN_IMAGES`).

    Example::

        >>> g = torch.Generator().manual_seed(0)
        >>> real = torch.rand(64, 1, 16, 16, generator=g)
        >>> round(realism(torch.rand(32, 1, 16, 16, generator=g), real), 1)  # more of the same: about 1
        1.0
    """
    samples, real = torch.as_tensor(samples), torch.as_tensor(real)
    if samples.dim() != 4 or real.dim() != 4 or samples.shape[1:] != real.shape[1:]:
        raise LDAMArgumentError("realism", f"expected samples [M, C, H, W] and real images [N, C, H, W] of one shape, "
                                f"got {tuple(samples.shape)} and {tuple(real.shape)}")
    if samples.shape[0] < MIN_IMAGES or real.shape[0] < 2 * MIN_IMAGES:
        raise LDAMArgumentError("realism", f"needs at least {MIN_IMAGES} samples and {2 * MIN_IMAGES} real images "
                                f"(two halves), got {samples.shape[0]} and {real.shape[0]}")
    reference, held = real[0::2].float(), real[1::2].float()
    m = min(samples.shape[0], held.shape[0])
    # a flat image's own std is ~0: bound it by 1% of the real images' spread, so it reads as flat, not as noise
    floor = (0.01 * reference.std((0, 2, 3))).clamp(min=1e-6).view(1, -1, 1, 1)
    net = TextureFeatures(real.shape[1], seed)
    ref_f = _features(reference, net, floor)
    held_f = _features(held, net, floor)
    keep = torch.linspace(0, samples.shape[0] - 1, m).round().long()  # evenly spaced: every neuron stays in
    sample_f = _features(samples.float()[keep], net, floor)
    generator = torch.Generator().manual_seed(int(seed) + 1)
    scale = sum(frechet_distance(held_f[torch.randperm(held_f.shape[0], generator=generator)[:m]], ref_f)
                for _ in range(BASELINE_DRAWS)) / BASELINE_DRAWS
    if not scale > 0:
        return float("nan")
    return (max(frechet_distance(sample_f, ref_f), 0.0) / scale) ** 0.5


def measurable(samples: torch.Tensor, real: Optional[torch.Tensor]) -> bool:
    """Whether :func:`realism` can measure ``samples`` against ``real``: images of one shape, enough of each."""
    return (real is not None and samples.dim() == 4 and real.dim() == 4 and samples.shape[1:] == real.shape[1:]
            and samples.shape[0] >= MIN_IMAGES and real.shape[0] >= 2 * MIN_IMAGES)
