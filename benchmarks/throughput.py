"""Chain-steps per second of ``ldam.sample`` next to the bare Langevin floor, and next to lucent.

The floor for one Langevin step is one forward plus one input-gradient backward through the frozen
network at the same batch: the "bare loop" does exactly that (plus the step itself) and nothing else.
``ldam.sample``'s per-step cost is measured by differencing two runs of different lengths, so its
one-off setup (layer probe, discriminator warm-up, final forward, copy to CPU) does not count.

Sections (``--only`` picks some):

* ``main``: the MNIST example CNN, a CIFAR ResNet-18 at 32 px, torchvision ResNet-50 at 224 px; ldam at
  λ = 0 and at the default λ (discriminator on) against the bare loop.
* ``early``: a ResNet-50 ``layer2``/``layer3`` target vs the logits; each against the bare loop through
  the network cut after that layer (the floor for that target) and through the whole network.
* ``batching``: 16 neurons in one call vs a loop of 16 one-neuron calls (same chain-steps).
* ``lucent``: torch-lucent's ``render_vis`` vs ``ldam.sample`` on ResNet-50 ``layer3``, 16 channels,
  128 px, the same step count, whole calls timed. lucent runs one channel at a time with a batch of 8
  and its standard transforms minus the rotation (its kornia call no longer exists): pad, jitter, scale.
* ``disc``: the discriminator's cost per step by width (32, 16 = the default, 8) and update cadence.
* ``methods``: per-step cost of ``method="langevin"`` (default), ``"mala"``, ``"hmc"`` and ``"ascent"`` at λ = 0
  and at the default λ, and the discriminator's share of the default-λ step (1 − λ=0 step / default step); and the
  activation's bulk ESS per second of one whole default-λ call (512 steps; 128 with ``--quick``), summed over
  the neurons (``SampleResult.ess_activation``): mixing per wall second. On these
  untrained networks it says how methods compare, not what a trained network's chains do (``mixing.py`` does).
* ``options``: fp32 vs bf16 autocast vs channels_last vs both (and, on CUDA, ``cuda_graph`` alone and with
  both), for each model of ``main``; λ = 0, plus the default λ for fp32 and ``cuda_graph``.

Run: ``python benchmarks/throughput.py`` (CUDA when present; about 5 minutes on an H100/H200);
``--quick`` shrinks sizes for a CPU run, whose figures are ratios only.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from typing import Callable, Iterator, Optional, Tuple

import torch
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples"))
from mnist_models import TargetCNN  # noqa: E402

import lightning_ldam as ldam  # noqa: E402
from lightning_ldam.sampling.config import METHODS  # noqa: E402

SECTIONS = ("main", "early", "batching", "lucent", "options", "disc", "methods")
IMAGENET_NORM = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn: Callable[[], object], device) -> float:
    _sync(device)
    t0 = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - t0


def bare_loop(model: nn.Module, batch_shape, steps: int, device, dtype=None, channels_last=False) -> float:
    """Seconds per step of: forward, read one output unit, input gradient, step, clamp."""
    model = model.eval().requires_grad_(False)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    x = torch.rand(batch_shape, device=device)

    def one():
        nonlocal x
        x = x.detach().requires_grad_(True)
        xin = x.contiguous(memory_format=torch.channels_last) if channels_last else x
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            out = model(xin)
        (g,) = torch.autograd.grad(out.flatten(1)[:, 0].float().sum(), x)
        x = (x.detach() + 0.01 * g).clamp_(0, 1)

    for _ in range(3):
        one()
    t = _timed(lambda: [one() for _ in range(steps)], device) / steps
    if channels_last:
        model.to(memory_format=torch.contiguous_format)
    return t


def ldam_step_seconds(model, neurons, input_shape, chains, steps, device, **kw) -> float:
    """Per-step seconds of ldam.sample from two runs of ``steps`` and ``3 * steps`` steps."""
    def run(n):
        return _timed(lambda: ldam.sample(model, neurons, input_shape=input_shape, chains=chains, steps=n,
                                          device=device, **kw), device)

    run(3)  # warm-up (cuDNN autotune, allocator)
    short, long = run(steps), run(3 * steps)
    return max(long - short, 1e-9) / (2 * steps)


def models(quick: bool, device) -> Iterator[Tuple[str, nn.Module, str, Tuple[int, ...], int, int, torch.Tensor]]:
    """The ``main`` section's models, built one at a time: (label, model on ``device`` in eval mode, neurons,
    input shape, chains per neuron, batch = neurons × chains, 256 random "real" images for the discriminator)."""
    import torchvision
    from cifar10 import cifar_resnet18

    r50_px = 96 if quick else 224
    for label, build, spec, shape, chains in (
            ("MNIST example CNN", TargetCNN, "classifier.4:all", (1, 28, 28), 16),
            ("CIFAR ResNet-18 32px", cifar_resnet18, "fc:all", (3, 32, 32), 4 if quick else 16),
            (f"ResNet-50 {r50_px}px", torchvision.models.resnet50, "fc:0-3", (3, r50_px, r50_px), 4 if quick else 16)):
        model = build().to(device).eval()
        yield label, model, spec, shape, chains, n_neurons(model, spec, shape) * chains, torch.rand(256, *shape)


def n_neurons(model, spec, shape) -> int:
    return len(ldam.sample(model, spec, input_shape=shape, chains=1, steps=1).neurons)


def section_main(args, device):
    print("\n## main: ldam vs the bare loop (fp32)\n")
    print("| model | batch | bare loop chain-steps/s | ldam λ=0 | ratio | ldam λ=default | ratio |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for label, model, spec, shape, chains, batch, real in models(args.quick, device):
        runs = []
        for _ in range(args.repeats):  # interleaved, so a slow spell of a shared machine hits all three alike
            runs.append((bare_loop(model, (batch, *shape), args.steps, device),
                         ldam_step_seconds(model, spec, shape, chains, args.steps, device, disc_weight=0.0),
                         ldam_step_seconds(model, spec, shape, chains, args.steps, device, real_data=real,
                                           disc_warmup=0)))
        bare, s0, sd = (statistics.median(r[i] for r in runs) for i in range(3))
        print(f"| {label} | {batch} | {batch / bare:,.0f} | {batch / s0:,.0f} | {bare / s0:.2f} | "
              f"{batch / sd:,.0f} | {bare / sd:.2f} |", flush=True)


def section_early(args, device):
    import torchvision

    px = 96 if args.quick else 224
    chains = 4
    model = torchvision.models.resnet50().to(device).eval()
    children = list(model.named_children())
    print(f"\n## early exit: ResNet-50 {px}px, 16 neurons x {chains} chains, λ=0\n")
    print("| target | ldam per step | floor: bare loop cut after the layer | ldam vs floor (throughput) | "
          "floor / whole-network bare step | ldam / whole-network bare step |")
    print("|---|---:|---:|---:|---:|---:|")
    shape = (3, px, px)
    batch = 16 * chains
    full = bare_loop(model, (batch, *shape), args.steps, device)
    for layer in ("layer2", "layer3", "fc"):
        cut = [i for i, (n, _) in enumerate(children) if n == layer][0]
        mods = [m for _, m in children[:cut + 1]]
        if layer == "fc":
            mods.insert(-1, nn.Flatten())
        truncated = nn.Sequential(*mods).eval()
        floor = bare_loop(truncated, (batch, *shape), args.steps, device)
        t = ldam_step_seconds(model, f"{layer}:0-15", shape, chains, args.steps, device, disc_weight=0.0)
        print(f"| {layer} | {t * 1e3:.1f} ms | {floor * 1e3:.1f} ms | {floor / t:.2f} | {floor / full:.2f} | "
              f"{t / full:.2f} |", flush=True)


def section_batching(args, device):
    import torchvision

    px = 64 if args.quick else 128
    chains = 4
    n = 4 if args.quick else 16
    model = torchvision.models.resnet50().to(device).eval()
    shape = (3, px, px)
    one = ldam_step_seconds(model, f"layer3:0-{n - 1}", shape, chains, args.steps, device, disc_weight=0.0)
    loop = sum(ldam_step_seconds(model, f"layer3:{k}", shape, chains, args.steps, device, disc_weight=0.0)
               for k in range(n))
    print(f"\n## batching: ResNet-50 layer3 at {px}px, {n} neurons x {chains} chains, λ=0\n")
    print("| how | chain-steps/s | |\n|---|---:|---:|")
    print(f"| one call, {n} neurons in one batch | {n * chains / one:,.0f} | {loop / one:.1f}x |")
    print(f"| {n} one-neuron calls | {n * chains / loop:,.0f} | 1.0x |", flush=True)


def section_lucent(args, device):
    try:
        from lucent.optvis import param, render, transform
    except ImportError as err:
        print(f"\n## lucent: skipped ({err}); pip install --no-deps torch-lucent kornia decorator ipython")
        return
    import torchvision

    px = 64 if args.quick else 128
    n = 4 if args.quick else 16
    steps = args.lucent_steps
    lucent_batch = 8
    model = torchvision.models.resnet50().to(device).eval()
    transforms = [transform.pad(12, mode="constant", constant_value=0.5), transform.jitter(8),
                  transform.random_scale([1 + (i - 5) / 50.0 for i in range(11)]), transform.jitter(4)]

    def lucent_all():
        for k in range(n):
            render.render_vis(model, f"layer3:{k}", param_f=lambda: param.image(px, batch=lucent_batch),
                              transforms=transforms, thresholds=(steps,), show_image=False, progress=False,
                              fixed_image_size=px)

    def ldam_all(**kw):
        ldam.sample(model, f"layer3:0-{n - 1}", input_shape=(3, px, px), chains=4, steps=steps,
                    normalize=IMAGENET_NORM, device=device, **kw)

    ldam.sample(model, "layer3:0", input_shape=(3, px, px), chains=2, steps=3, device=device)  # warm-up
    t_lucent = _timed(lucent_all, device)
    t_ldam0 = _timed(lambda: ldam_all(disc_weight=0.0), device)
    t_ldamd = _timed(lambda: ldam_all(real_data=torch.rand(256, 3, px, px)), device)
    rate = lambda chains, t: chains * steps / t  # noqa: E731
    lucent_rate = rate(n * lucent_batch, t_lucent)
    print(f"\n## lucent: ResNet-50 layer3, {n} channels, {px}px, {steps} steps, whole calls timed\n")
    print("| sampler | batch | chain-steps/s | vs lucent |\n|---|---:|---:|---:|")
    print(f"| lucent render_vis, one channel at a time | {lucent_batch} | {lucent_rate:,.0f} | 1.0x |")
    print(f"| ldam.sample λ=0, all channels in one batch | {n * 4} | {rate(n * 4, t_ldam0):,.0f} | "
          f"{rate(n * 4, t_ldam0) / lucent_rate:.1f}x |")
    print(f"| ldam.sample λ=default (D trained on 256 images) | {n * 4} | {rate(n * 4, t_ldamd):,.0f} | "
          f"{rate(n * 4, t_ldamd) / lucent_rate:.1f}x |", flush=True)


def section_options(args, device):
    bf16 = torch.bfloat16
    options = [("fp32", {}), ("bf16 autocast", {"autocast_dtype": bf16}), ("channels_last", {"channels_last": True}),
               ("bf16 + channels_last", {"autocast_dtype": bf16, "channels_last": True})]
    if device.type == "cuda":
        options += [("cuda_graph", {"cuda_graph": True}),
                    ("bf16 + channels_last + cuda_graph", {"autocast_dtype": bf16, "channels_last": True,
                                                           "cuda_graph": True})]
    print("\n## options: ldam chain-steps/s (the bare loop under the same dtype/layout, always eager)\n")
    print("| model | option | bare loop | ldam λ=0 | ldam λ=0 vs fp32 | ldam λ=default | λ=default vs fp32 |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for label, model, spec, shape, chains, batch, real in models(args.quick, device):
        base: Optional[float] = None
        base_d: Optional[float] = None
        for name, kw in options:
            bare = bare_loop(model, (batch, *shape), args.steps, device, dtype=kw.get("autocast_dtype"),
                             channels_last=kw.get("channels_last", False))
            t = ldam_step_seconds(model, spec, shape, chains, args.steps, device, disc_weight=0.0, **kw)
            base = base or t
            cells = "— | —"
            if name in ("fp32", "cuda_graph"):  # the discriminator's share: does graphing the step help there too?
                td = ldam_step_seconds(model, spec, shape, chains, args.steps, device, real_data=real, disc_warmup=0,
                                       **kw)
                base_d = base_d or td
                cells = f"{batch / td:,.0f} | {base_d / td:.2f}x"
            print(f"| {label} | {name} | {batch / bare:,.0f} | {batch / t:,.0f} | {base / t:.2f}x | {cells} |",
                  flush=True)


def section_disc(args, device):
    """What the discriminator costs per Langevin step, by its width and update cadence (MNIST CNN)."""
    from lightning_ldam.sampling.discriminator import build_discriminator

    _, model, spec, shape, chains, batch, real = next(models(args.quick, device))  # the MNIST example CNN
    bare = bare_loop(model, (batch, *shape), args.steps, device)
    print(f"\n## disc: the discriminator's cost per step, MNIST example CNN, batch {batch}\n")
    print(f"| setting | ms / step | vs bare loop ({1e3 * bare:.1f} ms) |\n|---|---:|---:|")
    rows = [("λ = 0 (no D)", {"disc_weight": 0.0})]
    for width in (32, 16, 8):
        rows.append((f"default λ, D width {width}, 2 updates/step", {"width": width}))
    rows += [("D width 16, 1 update/step", {"width": 16, "disc_steps": 1}),
             ("D width 16, 2 updates every 2nd step", {"width": 16, "disc_every": 2})]
    for label, kw in rows:
        kw = dict(kw)
        width = kw.pop("width", None)
        if width is not None:  # a fresh D of that width, seeded as the sampler seeds its own
            kw.update(real_data=real, disc_warmup=0,
                      discriminator=build_discriminator(1, shape[1:], seed=0, device=device, width=width))
        t = ldam_step_seconds(model, spec, shape, chains, args.steps, device, **kw)
        print(f"| {label} | {1e3 * t:.1f} | {bare / t:.2f} |", flush=True)


def section_methods(args, device):
    print("\n## methods: cost per step of each sampler method (fp32), and D's share of the default-λ step\n")
    print("| model | method | λ=0 vs bare loop | default λ vs bare loop | D's share of the default-λ step | "
          "bulk ESS/s (activation) |")
    print("|---|---|---:|---:|---:|---:|")
    for label, model, spec, shape, chains, batch, real in models(args.quick, device):
        if label.startswith("ResNet-50") and args.quick:
            continue
        for method in METHODS:
            runs = []
            for _ in range(args.repeats):
                runs.append((bare_loop(model, (batch, *shape), args.steps, device),
                             ldam_step_seconds(model, spec, shape, chains, args.steps, device, disc_weight=0.0,
                                               method=method),
                             ldam_step_seconds(model, spec, shape, chains, args.steps, device, real_data=real,
                                               disc_warmup=0, method=method)))
            bare, s0, sd = (statistics.median(r[i] for r in runs) for i in range(3))
            print(f"| {label} | {method} | {bare / s0:.2f} | {bare / sd:.2f} | {max(0.0, 1 - s0 / sd):.0%} | "
                  f"{ess_per_second(model, spec, shape, chains, device, real, method, args)} |", flush=True)


def ess_per_second(model, spec, shape, chains, device, real, method, args) -> str:
    """The activation's bulk ESS summed over neurons per wall second of one default-λ call (``—``: no ESS)."""
    steps = 128 if args.quick else 512
    t0 = time.perf_counter()
    res = ldam.sample(model, spec, input_shape=shape, chains=chains, steps=steps, device=device, real_data=real,
                      method=method)
    _sync(device)
    seconds = time.perf_counter() - t0
    if res.ess_activation is None or not bool(torch.isfinite(res.ess_activation).all()):
        return "—"
    return f"{float(res.ess_activation.sum()) / seconds:.1f}"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="small sizes for a CPU run (ratios only)")
    p.add_argument("--steps", type=int, default=None, help="steps per timing run (default 40; --quick 4)")
    p.add_argument("--lucent-steps", type=int, default=None, help="steps of the lucent comparison (default 64)")
    p.add_argument("--only", default=",".join(SECTIONS), help=f"comma-separated subset of {SECTIONS}")
    p.add_argument("--repeats", type=int, default=None,
                   help="interleaved repeats of the main table, medians reported (default: 1 on CUDA, 3 on CPU)")
    args = p.parse_args(argv)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.backends.cudnn.benchmark = True
    args.steps = args.steps or (4 if args.quick else 40)
    args.repeats = args.repeats or (1 if device.type == "cuda" else 3)
    args.lucent_steps = args.lucent_steps or (6 if args.quick else 64)
    only = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = sorted(set(only) - set(SECTIONS))
    if unknown:
        p.error(f"--only: unknown sections {unknown}; accepted: {list(SECTIONS)}")
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({torch.get_num_threads()} threads)"
    print(f"device {name}; torch {torch.__version__}; steps {args.steps} (x3 for differencing); "
          f"main table: median of {args.repeats} interleaved repeats")
    for section in only:
        globals()[f"section_{section}"](args, device)


if __name__ == "__main__":
    main()
