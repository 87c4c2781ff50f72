"""A tiny LightningModule, its data and trainer, and readers of what a fit logged."""
from __future__ import annotations

import random
from typing import Any, Dict, List

import lightning.pytorch as pl
import numpy as np
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import Callback
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from helpers.models import SIZE
from lightning_ldam.callback import LDAMCallback

NEURONS = ["features.0:0-1", "classifier.2:0-2"]


#: The cheapest round that still exercises everything: 2 chains, 3 Langevin steps, one D warm-up update; every
#: due round runs (the default wall-time budget would make which rounds run depend on the machine's speed).
FAST: Dict[str, Any] = dict(chains=2, steps=3, sampler_kwargs={"disc_warmup": 1}, reservoir_size=16,
                            max_overhead=None)


TILE = SIZE * 5  # render.upscale_factor(12) == 5


PAD = 2


# ldam/compare: a 2-line header band (names), then per neuron a group of 2 lines (raw, ema) of 36-px tiles (12 px
# x 3: compare sheets upscale to >= 28 px), 6 px between groups
COMPARE_HEADER, COMPARE_GROUP, COMPARE_GAP = 32, 2 * (SIZE * 3 + PAD) + PAD, 6


# ---- a tiny LightningModule and Trainer helpers -------------------------------------------------------
class TinyModule(pl.LightningModule):
    """conv(1->4) + BN + ReLU + BN | flatten + Dropout + linear(5) on 1x12x12; records its batches.

    ``frozen_bn=True`` freezes the first BN (eval mode, no grad) the usual way; the second keeps training.
    """

    def __init__(self, dropout: float = 0.25, frozen_bn: bool = False):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                                      nn.BatchNorm2d(4))
        self.classifier = nn.Sequential(nn.Flatten(), nn.Dropout(dropout), nn.Linear(4 * SIZE * SIZE, 5))
        self.frozen_bn = frozen_bn
        if frozen_bn:
            self.features[1].requires_grad_(False)
        self.seen: List[List[int]] = []

    def forward(self, x):
        return self.classifier(self.features(x))

    def on_train_epoch_start(self):
        if self.frozen_bn:  # the usual way to freeze BN: eval mode for the whole run
            self.features[1].eval()

    def training_step(self, batch, batch_idx):
        x, idx = batch
        self.seen.append(idx.tolist())
        return F.cross_entropy(self(x), idx % 5)

    def validation_step(self, batch, batch_idx):
        x, idx = batch
        self.log("val_loss", F.cross_entropy(self(x), idx % 5))

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=0.01)


def loader(n: int = 16, batch_size: int = 4, shuffle: bool = True) -> DataLoader:
    """``(x, index)`` batches in [0, 1]; ``shuffle`` draws its order from the global torch RNG."""
    g = torch.Generator().manual_seed(123)
    x = torch.rand(n, 1, SIZE, SIZE, generator=g)
    return DataLoader(TensorDataset(x, torch.arange(n)), batch_size=batch_size, shuffle=shuffle)


def make_trainer(root, callbacks=(), **kwargs) -> pl.Trainer:
    base = dict(max_steps=4, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                enable_model_summary=False, accelerator="cpu", devices=1, default_root_dir=str(root),
                callbacks=list(callbacks))
    base.update(kwargs)
    return pl.Trainer(**base)


def fit(root, callbacks=(), module=None, train=None, val=None, ckpt_path=None, seed=0, **trainer_kwargs):
    """Seed, build the module (after seeding) and fit; returns ``(trainer, module)``."""
    pl.seed_everything(seed, verbose=False)
    module = TinyModule() if module is None else module()
    trainer = make_trainer(root, callbacks, **trainer_kwargs)
    trainer.fit(module, train if train is not None else loader(), val, ckpt_path=ckpt_path)
    return trainer, module


def clone_state(module: nn.Module) -> Dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def assert_same(a: Any, b: Any, path: str = "") -> None:
    """Recursive bitwise equality of nested dicts/lists/tuples of tensors and plain values."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b), f"{path} differs"
    elif isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), f"{path}: keys {sorted(a)} vs {sorted(b)}"
        for k in a:
            assert_same(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, (list, tuple)):
        assert isinstance(b, (list, tuple)) and len(a) == len(b), f"{path}: lengths differ"
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f"{path}[{i}]")
    elif isinstance(a, np.ndarray):
        assert np.array_equal(a, b), f"{path} differs"
    else:
        assert a == b, f"{path}: {a!r} != {b!r}"


def params_only(state: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """A state without BatchNorm's statistics and counters: what an average of parameters holds."""
    return {k: v for k, v in state.items() if "running" not in k and "num_batches" not in k}


def events(log_dir) -> EventAccumulator:
    acc = EventAccumulator(str(log_dir), size_guidance={"images": 0, "scalars": 0})
    acc.Reload()
    return acc


def ldam_tags(acc: EventAccumulator, kind: str) -> set:
    return {t for t in acc.Tags()[kind] if t.startswith("ldam/")}


# ---- global RNG, modes, flags and gradients around every hook -------------------------------------------
def live_state(pl_module: nn.Module) -> Dict[str, Any]:
    return {
        "torch_rng": torch.get_rng_state(), "numpy_rng": np.random.get_state(),
        "python_rng": random.getstate(),
        "modes": {n: m.training for n, m in pl_module.named_modules()},
        "requires_grad": {n: p.requires_grad for n, p in pl_module.named_parameters()},
        "grads": {n: None if p.grad is None else p.grad.clone() for n, p in pl_module.named_parameters()},
        "grad_ids": {n: id(p.grad) for n, p in pl_module.named_parameters()},
        "state": clone_state(pl_module),
        "bn": [(m.momentum, m.eps, m.track_running_stats) for m in pl_module.modules()
               if isinstance(m, nn.BatchNorm2d)],
        "grad_enabled": torch.is_grad_enabled(), "inference_mode": torch.is_inference_mode_enabled(),
    }


class VariantLog(LDAMCallback):
    """Keeps, for every round, the state of each variant next to the live and Lightning-averaged states."""

    def __init__(self, *args, averager=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.averager = averager
        self.seen_variants: List[Dict[str, Any]] = []

    def variants(self, trainer, pl_module):
        out = super().variants(trainer, pl_module)
        self.seen_variants.append({
            "variants": {k: clone_state(v) for k, v in out.items()},
            "live": clone_state(pl_module),
            "lightning_average": clone_state(self.averager._average_model.module) if self.averager else None,
        })
        return out


class LiveAtBatchEnd(Callback):
    def on_train_batch_end(self, trainer, pl_module, *args):
        self.state = clone_state(pl_module)
