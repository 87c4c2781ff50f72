"""Chain-steps per second of ``ldam.sample`` next to the bare Langevin floor.

The floor for one Langevin step is one forward plus one input-gradient backward through the frozen
network at the same batch: the "bare loop" below does exactly that (plus the step itself) and
nothing else. ``ldam.sample``'s per-step cost is measured by differencing two runs of different
lengths, so its one-off setup (layer probe, discriminator warm-up, final forward, copy to CPU)
does not count against it.

Run: ``python benchmarks/throughput.py`` (uses CUDA when present; ``--quick`` for a CPU smoke run).
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import torch
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import lightning_ldam as ldam  # noqa: E402
from mnist_models import TargetCNN  # noqa: E402


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bare_loop(model: nn.Module, unit: int, batch_shape, steps: int, device, dtype=None) -> float:
    """Seconds per step of: forward, read one output unit, input gradient, step, clamp."""
    model = model.eval().requires_grad_(False)
    x = torch.rand(batch_shape, device=device)

    def one():
        nonlocal x
        x = x.detach().requires_grad_(True)
        if dtype is None:
            out = model(x)
        else:
            with torch.autocast(device.type, dtype=dtype):
                out = model(x)
        (g,) = torch.autograd.grad(out[:, unit].float().sum(), x)
        x = (x.detach() + 0.01 * g).clamp_(0, 1)

    for _ in range(3):
        one()
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        one()
    _sync(device)
    return (time.perf_counter() - t0) / steps


def ldam_step_seconds(model, neurons, input_shape, chains, steps, device, **kw) -> float:
    """Per-step seconds of ldam.sample from two runs of ``steps`` and ``3 * steps`` steps."""
    def timed(n):
        _sync(device)
        t0 = time.perf_counter()
        ldam.sample(model, neurons, input_shape=input_shape, chains=chains, steps=n, device=device, **kw)
        _sync(device)
        return time.perf_counter() - t0

    timed(3)  # warm-up (cuDNN autotune, allocator)
    short, long = timed(steps), timed(3 * steps)
    return (long - short) / (2 * steps)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="small sizes for a CPU smoke run")
    p.add_argument("--steps", type=int, default=None)
    args = p.parse_args(argv)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.backends.cudnn.benchmark = True
    steps = args.steps or (5 if args.quick else 40)
    cases = [("MNIST CNN", TargetCNN(), "classifier.4:all", (1, 28, 28), 16)]
    if not args.quick:
        import torchvision
        cases.append(("ResNet-50 224px", torchvision.models.resnet50(), "fc:0-3", (3, 224, 224), 16))
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"device {name}; torch {torch.__version__}; float32; steps {steps} (x3 for differencing)")
    print("| model | batch | bare loop chain-steps/s | ldam λ=0 | ratio | ldam λ=default | ratio |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for label, model, spec, shape, chains in cases:
        model = model.to(device).eval()
        n = len(ldam.sample(model, spec, input_shape=shape, chains=1, steps=1).neurons)
        batch = n * chains
        bare = bare_loop(model, 0, (batch, *shape), steps, device)
        s0 = ldam_step_seconds(model, spec, shape, chains, steps, device, disc_weight=0.0)
        real = torch.rand(256, *shape)
        sd = ldam_step_seconds(model, spec, shape, chains, steps, device, real_data=real, disc_warmup=0)
        print(f"| {label} | {batch} | {batch / bare:,.0f} | {batch / s0:,.0f} | {bare / s0:.2f} | "
              f"{batch / sd:,.0f} | {bare / sd:.2f} |", flush=True)


if __name__ == "__main__":
    main()
