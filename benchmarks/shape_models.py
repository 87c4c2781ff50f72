"""Textured shapes on textured backgrounds (3×32×32, procedural, offline): a sample's class is its shape's.

Each image is one of :data:`SHAPES` (position, size and rotation random), filled with a striped texture of two
random colours (random orientation, frequency and phase) on a background of smooth random blobs of two other
colours. The two textures' mean colours are at least :data:`MIN_COLOR_DISTANCE` apart, so the outline stays
readable; nothing but the outline tells the classes apart (colours and textures are drawn alike for every
class). Target, judge and held-out images come from independent random streams.
"""
from __future__ import annotations

import math
from typing import Dict

import torch
import torch.nn.functional as F

#: the classes, in label order.
SHAPES = ("disk", "ring", "square", "triangle", "cross", "star")
IMAGE_SIZE = 32
#: smallest L2 distance in [0, 1]^3 between the shape's and the background's mean colour.
MIN_COLOR_DISTANCE = 0.35
#: the shape's radius (centre to farthest point) as a fraction of the side: uniform in this range.
RADIUS = (0.26, 0.38)
#: the shape's centre moves by up to this fraction of the side from the image centre, per axis.
MAX_SHIFT = 0.12


def _mask(kind: str, yy: torch.Tensor, xx: torch.Tensor, r: float, angle: float) -> torch.Tensor:
    """Anti-aliased coverage in [0, 1] of shape ``kind`` of radius ``r`` (pixels) rotated by ``angle``, on the
    pixel offsets ``(yy, xx)`` from its centre: 1 inside, 0 outside, a 1-pixel ramp across the edge."""
    c, s = math.cos(angle), math.sin(angle)
    u, v = c * xx + s * yy, -s * xx + c * yy  # coordinates in the shape's own frame
    rho, theta = torch.sqrt(u * u + v * v), torch.atan2(v, u)
    if kind == "disk":
        sd = r - rho  # signed distance to the edge, positive inside
    elif kind == "ring":
        sd = torch.minimum(r - rho, rho - 0.55 * r)
    elif kind == "square":
        half = r / math.sqrt(2)
        sd = half - torch.maximum(u.abs(), v.abs())
    elif kind == "triangle":  # equilateral, circumradius r: three half-planes at distance r/2 from the centre
        sd = torch.stack([r / 2 - (u * math.cos(a) + v * math.sin(a))
                          for a in (0.0, 2 * math.pi / 3, 4 * math.pi / 3)]).min(0).values
    elif kind == "cross":
        arm = 0.3 * r
        sd = torch.maximum(torch.minimum(arm - u.abs(), r - v.abs()), torch.minimum(arm - v.abs(), r - u.abs()))
    elif kind == "star":  # five points: the radius swings between 0.45 r and r with the angle
        edge = r * (0.725 + 0.275 * torch.cos(5 * theta))
        sd = (edge - rho) * 0.8
    else:
        raise ValueError(f"_mask: kind must be one of {SHAPES}, got {kind!r}")
    return (sd + 0.5).clamp(0.0, 1.0)


def _colour_pair(gen: torch.Generator) -> torch.Tensor:
    """Two colours of one texture, ``[2, 3]``: a random mean colour and a random contrast around it."""
    mean = torch.rand(3, generator=gen) * 0.7 + 0.15
    delta = (torch.rand(3, generator=gen) - 0.5) * 0.5
    return torch.stack([mean - delta, mean + delta]).clamp(0.0, 1.0)


def _stripes(size: int, gen: torch.Generator) -> torch.Tensor:
    """``[1, size, size]`` in [0, 1]: a sinusoidal grating, random orientation, 3-8 px period, random phase."""
    angle = float(torch.rand((), generator=gen)) * math.pi
    period = 3.0 + 5.0 * float(torch.rand((), generator=gen))
    phase = float(torch.rand((), generator=gen)) * 2 * math.pi
    yy, xx = torch.meshgrid(torch.arange(size, dtype=torch.float32), torch.arange(size, dtype=torch.float32),
                            indexing="ij")
    return (0.5 + 0.5 * torch.sin(2 * math.pi * (xx * math.cos(angle) + yy * math.sin(angle)) / period + phase))[None]


def _blobs(size: int, gen: torch.Generator) -> torch.Tensor:
    """``[1, size, size]`` in [0, 1]: smooth random blobs (4×4 noise upsampled bicubically, then stretched)."""
    coarse = torch.rand(1, 1, 5, 5, generator=gen)
    x = F.interpolate(coarse, size=(size, size), mode="bicubic", align_corners=True)[0]
    return ((x - x.min()) / (x.max() - x.min() + 1e-6))


def render(kind: str, gen: torch.Generator, size: int = IMAGE_SIZE) -> torch.Tensor:
    """One ``[3, size, size]`` image in [0, 1] of shape ``kind`` (every random choice drawn from ``gen``)."""
    while True:
        fg, bg = _colour_pair(gen), _colour_pair(gen)
        if (fg.mean(0) - bg.mean(0)).norm() >= MIN_COLOR_DISTANCE:
            break
    r = size * (RADIUS[0] + (RADIUS[1] - RADIUS[0]) * float(torch.rand((), generator=gen)))
    cy, cx = (size - 1) / 2 + size * MAX_SHIFT * (2 * torch.rand(2, generator=gen) - 1)
    angle = float(torch.rand((), generator=gen)) * 2 * math.pi
    yy, xx = torch.meshgrid(torch.arange(size, dtype=torch.float32) - cy, torch.arange(size, dtype=torch.float32) - cx,
                            indexing="ij")
    m = _mask(kind, yy, xx, r, angle)[None]
    s, b = _stripes(size, gen), _blobs(size, gen)
    front = fg[0, :, None, None] * (1 - s) + fg[1, :, None, None] * s
    back = bg[0, :, None, None] * (1 - b) + bg[1, :, None, None] * b
    return back * (1 - m) + front * m


def load_shape_splits(seed: int = 0, size: int = IMAGE_SIZE, per_class: Dict[str, int] = None
                      ) -> Dict[str, torch.Tensor]:
    """``target_x``/``judge_x``/``held_x`` (``[N, 3, size, size]`` in [0, 1]) with labels, and the target's
    per-channel ``mean``/``std``; each part drawn from its own random stream (seeded from ``seed``)."""
    per_class = per_class or {"target": 300, "judge": 300, "held": 60}
    out = {}
    for i, part in enumerate(per_class):
        gen = torch.Generator().manual_seed(seed * 7919 + 104729 * (i + 1))
        xs, ys = [], []
        for label, kind in enumerate(SHAPES):
            xs += [render(kind, gen, size) for _ in range(per_class[part])]
            ys += [label] * per_class[part]
        out[f"{part}_x"], out[f"{part}_y"] = torch.stack(xs), torch.tensor(ys)
    out["mean"] = out["target_x"].mean(dim=(0, 2, 3))
    out["std"] = out["target_x"].std(dim=(0, 2, 3))
    return out
