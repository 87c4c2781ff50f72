"""LDAM next to lucent's feature visualisation, on the same class logits, scored by the same metrics.

lucent (``pip install -e .[lucent]`` for its dependencies, then ``pip install --no-deps torch-lucent``; an optional
benchmark extra, not a dependency of the package) runs with its usual setup: ``render_vis`` on ``param.image``
(Fourier parametrisation, decorrelated colour), its ``standard_transforms`` (pad 12, jitter 8, random scale ±10%,
random rotation ±10°, jitter 4), Adam at 0.05 for 512 steps, one batch of ``--chains`` images per logit. Two things
differ from a 224-px ImageNet call, because the targets are not ImageNet networks: ``fixed_image_size`` is the
target's own input size (lucent would upsample to 224, which a fully connected head cannot take), and the target's
own normalisation replaces lucent's ImageNet one (``preprocess=False`` plus a normalising transform).

LDAM runs ``ldam.sample`` at the library's defaults (real data: the target's training images). Both are scored
as in benchmarks/quality.py, against the held-out images: activation ratio, judge agreement (next to the judge's
own accuracy), realism, diversity, median lift, and wall seconds per neuron (LDAM samples every logit in one
call: the call's time over the number of logits).

Run: ``python benchmarks/lucent_compare.py --case photo32 [--write] [--save-grid PREFIX]``. ``--write`` puts
the table under the marker LUCENT_<CASE> of benchmarks/README.md; ``--save-grid`` writes one PNG per case:
per logit, real held-out images on the left, then LDAM's chains, then lucent's batch.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Dict

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import quality  # noqa: E402
from readme_tables import command_line, write_section  # noqa: E402

from lightning_ldam.report.metrics import diversity, lift, realism  # noqa: E402
from lightning_ldam.sampling.activations import unit_activations  # noqa: E402
from lightning_ldam.sampling.config import DEFAULT_DISC_WEIGHT  # noqa: E402

#: lucent's defaults for ``render_vis``: 512 Adam steps at 0.05.
LUCENT_STEPS = 512
LUCENT_LR = 0.05
#: real held-out images per logit on the left of the grid.
REAL_PER_ROW = 4


def _kornia_names() -> None:
    """lucent 0.1.8 calls ``kornia.get_rotation_matrix2d`` and ``kornia.warp_affine``, which kornia >= 0.6 keeps
    under ``kornia.geometry.transform`` only: point the old names at them (the same functions)."""
    import kornia
    from kornia.geometry import transform as geometry

    for name in ("get_rotation_matrix2d", "warp_affine"):
        if not hasattr(kornia, name):
            setattr(kornia, name, getattr(geometry, name))


def lucent_samples(bench: "quality.Bench", classes, chains: int, seed: int):
    """lucent's images for each class logit: ``([n, chains, C, H, W] in [0, 1], seconds per logit)``."""
    import numpy as np
    from lucent.optvis import objectives, param, render, transform

    _kornia_names()

    mean, std = bench.normalize
    from rgb_models import Normalize

    normalise = Normalize(mean, std)
    layer = bench.logits.replace(".", "_")
    side = bench.input_shape[-1]
    out, seconds = [], []
    for k in classes:
        torch.manual_seed(seed + k)  # lucent draws its initial image and transforms from the global RNGs
        np.random.seed(seed + k)
        t0 = time.perf_counter()
        imgs = render.render_vis(
            bench.target, objectives.channel(layer, k),
            param_f=lambda: param.image(side, batch=chains, fft=True, decorrelate=True),
            optimizer=lambda p: torch.optim.Adam(p, lr=LUCENT_LR),
            transforms=transform.standard_transforms + [normalise], thresholds=(LUCENT_STEPS,),
            preprocess=False, progress=False, show_image=False, fixed_image_size=side)
        seconds.append(time.perf_counter() - t0)
        out.append(torch.as_tensor(imgs[-1]).permute(0, 3, 1, 2).float())
    return torch.stack(out), sum(seconds) / len(seconds)


def score(bench: "quality.Bench", images: torch.Tensor, classes) -> Dict[str, float]:
    """The benchmark's metrics for ``[n, chains, C, H, W]`` images of the class logits ``classes``."""
    d = bench.data
    n, c = images.shape[:2]
    neurons = [(bench.logits, k) for k in classes]
    flat = images.flatten(0, 1)
    acts = unit_activations(bench.target, neurons, flat, normalize=bench.normalize).view(n, c, n)
    acts = torch.stack([acts[i, :, i] for i in range(n)])  # [n, chains]: each logit on its own images
    real = unit_activations(bench.target, neurons, d["held_x"], normalize=bench.normalize)
    with torch.no_grad():
        pred = bench.judge(flat).argmax(1).view(n, c)
    return {"activation_ratio": (acts.mean(1) / real.max(0).values).mean().item(),
            "judge_agreement": (pred == torch.tensor(classes)[:, None]).float().mean().item(),
            "realism": realism(flat, d["held_x"]),
            "diversity": sum(diversity(images[i], d["held_x"][d["held_y"] == k]) for i, k in enumerate(classes)) / n,
            "median_lift": torch.nanmedian(lift(acts, real)).item()}


def save_grid(bench, ldam_images, lucent_images, classes, path: str) -> None:
    """Per logit: real held-out images | LDAM's chains | lucent's batch, columns separated by a blank cell."""
    import torchvision

    d = bench.data
    blank = torch.ones(1, *bench.input_shape)
    rows = []
    for i, k in enumerate(classes):
        real = d["held_x"][d["held_y"] == k][:REAL_PER_ROW]
        rows.append(torch.cat([real, blank, ldam_images[i], blank, lucent_images[i]]))
    torchvision.utils.save_image(torch.cat(rows), path, nrow=rows[0].shape[0], padding=1, pad_value=1.0)
    print(f"  grid (real | LDAM | lucent, one row per logit): {path}")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--case", choices=("photo32", "shapes", "resnet128"), default="photo32")
    p.add_argument("--chains", type=int, default=16)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--classes", type=int, default=None, help="sample only the first N class logits")
    p.add_argument("--set", action="append", help="extra ldam.sample keyword for LDAM, e.g. --set steps=128")
    p.add_argument("--save-grid", default=None, help="write the side-by-side grid to PREFIX_<case>.png")
    p.add_argument("--write", action="store_true", help="write the table into benchmarks/README.md")
    p.add_argument("--cache", default=None, help="a folder of networks trained before (quality.py --cache)")
    args = p.parse_args(argv)
    argv = sys.argv[1:] if argv is None else list(argv)
    try:  # before minutes of training: lucent is an optional extra
        import lucent.optvis.render  # noqa: F401
    except ImportError as err:
        p.error(f"lucent is not importable ({err}): pip install -e .[lucent] && pip install --no-deps torch-lucent")
    bench = quality.build_case(args.case, args.seed, args.epochs, args.cache)
    print(", ".join(f"{role} held-out accuracy {bench.accuracy[role]:.3f} (trained in {bench.seconds[role]:.1f} s)"
                    for role in bench.accuracy), flush=True)
    n_classes = bench.target_classes
    classes = list(range(n_classes if args.classes is None else min(args.classes, n_classes)))
    extra = {kv.partition("=")[0]: quality.type_guess(kv.partition("=")[2]) for kv in args.set or []}
    lam = DEFAULT_DISC_WEIGHT
    ns = argparse.Namespace(chains=args.chains, warm_d=False)
    res, secs = quality.sample(bench, {bench.logits: classes}, lam, ns, extra)
    ldam_images = res.images
    rows = [("LDAM (defaults)", score(bench, ldam_images, classes), secs / len(classes))]
    print(f"LDAM: {rows[-1][1]}, {rows[-1][2]:.1f} s/neuron", flush=True)
    lucent_images, lucent_secs = lucent_samples(bench, classes, args.chains, args.seed)
    rows.append(("lucent render_vis (usual setup)", score(bench, lucent_images, classes), lucent_secs))
    print(f"lucent: {rows[-1][1]}, {rows[-1][2]:.1f} s/neuron", flush=True)
    if args.save_grid:
        save_grid(bench, ldam_images, lucent_images, classes, f"{args.save_grid}_{args.case}.png")
    head = ("| method | activation ratio | judge agreement | realism | diversity | median lift | s / neuron |\n"
            "|---|---:|---:|---:|---:|---:|---:|\n")
    body = "".join(f"| {name} | {s['activation_ratio']:.2f} | {s['judge_agreement']:.3f} | {s['realism']:.2f} | "
                   f"{s['diversity']:.2f} | {s['median_lift']:.2f} | {t:.1f} |\n" for name, s, t in rows)
    command = command_line("lucent_compare.py", argv)
    text = (head + body + f"\n{len(classes)} class logits × {args.chains} images, case `{args.case}`; target held-out "
            f"accuracy {bench.accuracy['target']:.3f}, judge's own {bench.accuracy['judge']:.3f}; torch "
            f"{torch.__version__}, {torch.get_num_threads()} CPU threads. Command: `{command}`\n")
    print(text)
    if args.write:
        write_section(text, f"LUCENT_{args.case.upper()}", f"LDAM and lucent side by side ({args.case})")


if __name__ == "__main__":
    main()
