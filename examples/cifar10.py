"""CIFAR-10 case study: a ResNet-18 for 32 px images, raw weights vs Lightning's EMAWeightAveraging.

The paper's CIFAR study compares what units respond to under raw SGD weights and under averaged
weights. Here Lightning's own ``EMAWeightAveraging`` keeps the average (``LDAMCallback`` picks it up with
``averaging="auto"``) and LDAM samples, every epoch, channels of ``layer2``/``layer3`` and the ten class
logits for both::

    python examples/cifar10.py                  # downloads CIFAR-10 to ./data; a GPU is advised
    tensorboard --logdir runs/cifar10 --samples_per_plugin images=1000

Offline (no download): ``--fake-data`` trains on random images (torchvision ``FakeData``) so the whole
pipeline runs anywhere; ``--smoke`` is a seconds-long run used by the tests.
"""
from __future__ import annotations

import argparse

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import EMAWeightAveraging, ModelCheckpoint
from lightning.pytorch.loggers import TensorBoardLogger
from torch import nn
from torch.utils.data import DataLoader

from lightning_ldam import LDAMCallback

MEAN, STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
NEURONS = ["net.layer2:0-7", "net.layer3:0-7", "net.fc:all"]


def cifar_resnet18(num_classes: int = 10) -> nn.Module:
    """torchvision's ResNet-18 with the usual CIFAR stem: a 3x3 stride-1 first conv and no max-pool."""
    from torchvision.models import resnet18

    net = resnet18(num_classes=num_classes)
    net.conv1 = nn.Conv2d(3, 64, 3, stride=1, padding=1, bias=False)
    net.maxpool = nn.Identity()
    return net


class CIFARClassifier(pl.LightningModule):
    """Pixels in [0, 1] come in; the module normalises them itself, so LDAM chains live in pixel space."""

    def __init__(self, lr: float = 0.1, weight_decay: float = 5e-4, epochs: int = 30):
        super().__init__()
        self.save_hyperparameters()
        self.net = cifar_resnet18()
        self.register_buffer("mean", torch.tensor(MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(STD).view(1, 3, 1, 1), persistent=False)

    def forward(self, x):
        return self.net((x - self.mean) / self.std)

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = F.cross_entropy(self(x), y)
        self.log("train_loss", loss, prog_bar=True)
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("val_acc", (self(x).argmax(1) == y).float().mean(), prog_bar=True)

    def configure_optimizers(self):
        opt = torch.optim.SGD(self.parameters(), lr=self.hparams.lr, momentum=0.9, nesterov=True,
                              weight_decay=self.hparams.weight_decay)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=self.hparams.epochs)
        return [opt], [sched]


def datasets(fake: bool, data_dir: str, fake_size: int):
    from torchvision import datasets as tvd
    from torchvision import transforms as T

    train_tf = T.Compose([T.RandomCrop(32, padding=4), T.RandomHorizontalFlip(), T.ToTensor()])
    if fake:
        return (tvd.FakeData(fake_size, (3, 32, 32), 10, transform=T.ToTensor()),
                tvd.FakeData(max(fake_size // 8, 8), (3, 32, 32), 10, transform=T.ToTensor(), random_offset=1))
    return (tvd.CIFAR10(data_dir, train=True, download=True, transform=train_tf),
            tvd.CIFAR10(data_dir, train=False, download=True, transform=T.ToTensor()))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--chains", type=int, default=8)
    parser.add_argument("--steps", type=int, default=256)
    parser.add_argument("--ema-decay", type=float, default=0.999)
    parser.add_argument("--max-overhead", type=lambda v: None if v.lower() == "none" else float(v), default=0.05,
                        help="share of training time LDAM may take (default 0.05); 'none': a round every epoch")
    parser.add_argument("--data-dir", default="data")
    parser.add_argument("--logdir", default="runs/cifar10")
    parser.add_argument("--fake-data", action="store_true", help="random images instead of CIFAR-10 (offline)")
    parser.add_argument("--smoke", action="store_true", help="a seconds-long offline run (implies --fake-data)")
    parser.add_argument("--accelerator", default="auto")
    args = parser.parse_args(argv)
    if args.smoke:
        args.fake_data, args.epochs, args.batch_size, args.chains, args.steps = True, 2, 8, 2, 3

    pl.seed_everything(0, verbose=False)
    train, val = datasets(args.fake_data, args.data_dir, fake_size=32 if args.smoke else 2048)
    workers = 0 if args.smoke else 4
    neurons = ["net.layer3:0-1", "net.fc:0-2"] if args.smoke else NEURONS
    callbacks = [
        # listed first: at the end of fit WeightAveraging copies the average into the model (see README)
        LDAMCallback(neurons, every_n_epochs=1, chains=args.chains, steps=args.steps,
                     max_overhead=None if args.smoke else args.max_overhead,  # smoke: rounds however short the run
                     sampler_kwargs={"disc_warmup": 2} if args.smoke else None),
        EMAWeightAveraging(decay=0.5 if args.smoke else args.ema_decay),
        ModelCheckpoint(save_last=True),
    ]
    logger = TensorBoardLogger(args.logdir, name="resnet18")
    trainer = pl.Trainer(max_epochs=args.epochs, accelerator=args.accelerator, devices=1, logger=logger,
                         callbacks=callbacks, num_sanity_val_steps=0, enable_model_summary=not args.smoke,
                         limit_train_batches=2 if args.smoke else None, limit_val_batches=1 if args.smoke else None)
    trainer.fit(CIFARClassifier(epochs=args.epochs),
                DataLoader(train, batch_size=args.batch_size, shuffle=True, num_workers=workers),
                DataLoader(val, batch_size=256, num_workers=workers))
    print(f"\nLDAM images (raw and EMA weights) in {logger.log_dir}:\n\n"
          f"    tensorboard --logdir {args.logdir} --samples_per_plugin images=1000\n")


if __name__ == "__main__":
    main()
