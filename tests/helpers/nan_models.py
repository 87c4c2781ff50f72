"""Models that turn NaN where chains go."""
from __future__ import annotations

import torch
from torch import nn


class NaNChannel(nn.Module):
    """Channel ``bad`` of the output is always NaN; the other channels are finite."""

    def __init__(self, bad: int):
        super().__init__()
        self.bad = bad

    def forward(self, x):
        mask = torch.zeros(x.shape[1], dtype=torch.bool)
        mask[self.bad] = True
        return torch.where(mask.view(1, -1, *([1] * (x.dim() - 2))), torch.full_like(x, float("nan")), x)
