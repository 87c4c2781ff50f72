"""Limits of valid models the callback meets with a fallback."""
from __future__ import annotations

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from helpers.faults import Tabular as FaultsTabular
from helpers.faults import tabular_loader
from helpers.models import SIZE
from helpers.training import TinyModule


# ---- limits of a valid model: a fallback and one warning -------------------------------------------------------------
class Tabular(FaultsTabular):
    """The MLP on 10 features; ``norm=True`` puts a BatchNorm without running statistics in it (batch statistics even
    in eval mode: it refuses a batch of one)."""

    def __init__(self, norm: bool = False):
        super().__init__()
        if norm:
            self.net = nn.Sequential(nn.Linear(10, 16), nn.BatchNorm1d(16, track_running_stats=False), nn.ReLU(),
                                     nn.Linear(16, 3))


class Brightness(TinyModule):
    """Bright inputs (mean > 0.4) take another head: uniform-noise chains (mean 0.5) never reach ``head``."""

    def __init__(self):
        super().__init__(dropout=0.0)
        self.head = nn.Linear(4 * SIZE * SIZE, 5)
        self.bright = nn.Linear(4 * SIZE * SIZE, 5)

    def forward(self, x):
        h = self.features(x).flatten(1)
        return self.bright(h) if x.mean() > 0.4 else self.head(h)


def dark_images():
    g = torch.Generator().manual_seed(0)
    return DataLoader(TensorDataset(0.3 * torch.rand(16, 1, SIZE, SIZE, generator=g), torch.arange(16)),
                      batch_size=4)


class RefusesProbes(TinyModule):
    """Refuses any batch of another size than its training batches' 4."""

    def forward(self, x):
        if x.shape[0] != 4:
            raise RuntimeError(f"this model takes batches of 4, got {x.shape[0]}")
        return super().forward(x)


#: (id, module factory, loader factory, LDAMCallback overrides, the one warning's phrase). Every argument the user
#: set is fine: each limit is the model's. The run completes, bitwise as without the callback, with one warning.
MODEL_LIMITS = [
    ("tabular-at-default-lambda", Tabular, tabular_loader, dict(neurons="net.2:0-1"), "not images"),
    ("batch-statistics-refuse-one", lambda: Tabular(norm=True), tabular_loader,
     dict(neurons="net.3:0", chains=1, disc_weight=0.0), None),
    ("branch-noise-never-reaches", Brightness, dark_images, dict(neurons="head:0-1"), "never reach ['head']"),
    ("model-refuses-the-probe-batch", RefusesProbes, None, dict(), "limit of the model"),
]
