"""A model that is not an image network: an MLP on tabular features."""
from __future__ import annotations

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset


class Tabular(pl.LightningModule):
    """An MLP on 10 features: no image to render (rendering it once crashed the run)."""

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(10, 16), nn.ReLU(), nn.Linear(16, 3))

    def forward(self, x):
        return self.net(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        return F.cross_entropy(self(x), y)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def tabular_loader():
    g = torch.Generator().manual_seed(0)
    return DataLoader(TensorDataset(torch.rand(16, 10, generator=g), torch.randint(3, (16,), generator=g)),
                      batch_size=4)
