"""Turn LDAM samples into image grids for TensorBoard (and PNG files).

One fixed value scaling (the sampler's ``value_range`` → [0, 1]) and no per-image normalisation, so
steps and variants are comparable; small images are upscaled with nearest-neighbour for legibility.
Inputs that are not images get a picture too: a vector of D features is drawn as a 1 × D grey strip,
a ``[H, W]`` input as a grey image.
"""
from __future__ import annotations

from typing import Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torchvision.utils import make_grid

__all__ = ["neuron_grid", "compare_grid", "upscale_factor"]


def upscale_factor(height: int, min_size: int = 56) -> int:
    """Integer nearest-neighbour factor that makes a tile at least ``min_size`` pixels high."""
    return max(1, -(-min_size // height))


def _as_images(samples: torch.Tensor) -> torch.Tensor:
    """``[n, chains, *sample]`` -> ``[n, chains, C, H, W]``: ``[H, W]`` is grey, anything else not ``[C, H, W]`` a
    1-pixel-high strip of its values."""
    extra = samples.dim() - 2
    if extra == 2:
        return samples[:, :, None]
    if extra == 3:
        return samples
    return samples.flatten(2)[:, :, None, None, :]  # a vector (or a volume, flattened): a strip


def _factor(images: torch.Tensor, upscale: Optional[int]) -> int:
    """``upscale``, else tiles at least 56 px high but never wider than 1024 px (long feature strips)."""
    return upscale or max(1, min(upscale_factor(images.shape[-2]), 1024 // images.shape[-1]))


def _to_unit(images: torch.Tensor, value_range: Tuple[float, float]) -> torch.Tensor:
    lo, hi = value_range
    return ((images.float() - lo) / (hi - lo)).clamp_(0, 1)


def _tiles(x: torch.Tensor, factor: int) -> torch.Tensor:
    """``[N, C, H, W]`` -> 3-channel, upscaled tiles."""
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    elif x.shape[1] != 3:
        x = x[:, :3] if x.shape[1] > 3 else torch.cat([x, x[:, -1:].expand(-1, 3 - x.shape[1], -1, -1)], 1)
    return F.interpolate(x, scale_factor=factor, mode="nearest") if factor > 1 else x


@torch.no_grad()
def neuron_grid(images: torch.Tensor, value_range: Tuple[float, float], upscale: Optional[int] = None) -> torch.Tensor:
    """``[n, chains, C, H, W]`` -> one ``[3, H', W']`` grid: a row per neuron, a column per chain."""
    images = _as_images(images)
    n, c = images.shape[:2]
    factor = _factor(images, upscale)
    tiles = _tiles(_to_unit(images.flatten(0, 1), value_range), factor)
    return make_grid(tiles, nrow=c, padding=2, pad_value=0.5)


@torch.no_grad()
def compare_grid(variants: Sequence[torch.Tensor], value_range: Tuple[float, float],
                 upscale: Optional[int] = None) -> torch.Tensor:
    """Side by side per neuron row: each variant's chains, then each variant's mean and std maps.

    Args:
        variants: ``[n, chains, C, H, W]`` per variant (e.g. raw, ema), same neurons.
        value_range: the samples' box.
        upscale: nearest-neighbour factor (default: tiles at least 56 px high).

    The std map is scaled by half the box (a std of half the range is white).
    """
    variants = [_as_images(v) for v in variants]
    n, c = variants[0].shape[:2]
    factor = _factor(variants[0], upscale)
    lo, hi = value_range
    blank = torch.full((1, 3, *_tiles(variants[0][0, :1].float(), factor).shape[-2:]), 0.5)
    rows = []
    for i in range(n):
        row = []
        for v in variants:
            row.append(_tiles(_to_unit(v[i], value_range), factor))
            row.append(blank)
        for v in variants:
            mean = _to_unit(v[i].mean(0, keepdim=True), value_range)
            std = (v[i].float().std(0, unbiased=False, keepdim=True) / (0.5 * (hi - lo))).clamp_(0, 1)
            row += [_tiles(mean, factor), _tiles(std, factor)]
        rows.append(torch.cat(row))
    per_row = rows[0].shape[0]
    return make_grid(torch.cat(rows), nrow=per_row, padding=2, pad_value=0.5)
