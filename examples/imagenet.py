"""ImageNet case study: LDAM on a torchvision ResNet-50, offline from a checkpoint or with pretrained weights.

No training here: the sampler runs on fixed weights and writes the same TensorBoard tags as the callback
(``ldam/{variant}/{layer}``, ``ldam/compare/{layer}``) plus a PNG per layer::

    python examples/imagenet.py                                  # pretrained IMAGENET1K_V2 (downloads once)
    python examples/imagenet.py --weights IMAGENET1K_V1,IMAGENET1K_V2   # two weight sets side by side
    python examples/imagenet.py --weights my_resnet50.pth        # a local state dict or Lightning checkpoint
    python examples/imagenet.py --real-dir ~/imagenet/val/n01443537  # real images switch the discriminator on
    tensorboard --logdir runs/imagenet --samples_per_plugin images=1000

torchvision's V2 weights were trained with an EMA of the weights (and a different recipe), V1 without: a
rough, confounded view of the paper's averaging question. Offline with nothing cached, ``--weights none``
samples a randomly initialised network; ``--smoke`` does that at 64 px in seconds (used by the tests).
"""
from __future__ import annotations

import argparse
import os
import re
from typing import Dict, Optional

import torch
from torch import nn

import lightning_ldam as ldam
from lightning_ldam.report.tags import summarize, write_tensorboard

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
#: layer3 channels and four classes: goldfish, golden retriever, bee, bubble
NEURONS = ["layer3:0-7", "fc:1,207,309,971"]


def load_resnet50(weights: str) -> nn.Module:
    """``"none"``: random init; a torchvision weight name (``IMAGENET1K_V1``, ``IMAGENET1K_V2``,
    ``DEFAULT``); or a path to a state dict / Lightning checkpoint (its ``state_dict``, any common prefix
    such as ``model.`` or ``net.`` stripped)."""
    from torchvision.models import ResNet50_Weights, resnet50

    if weights == "none":
        return resnet50()
    if os.path.exists(weights):
        state = torch.load(weights, map_location="cpu", weights_only=False)
        state = state.get("state_dict", state)
        net = resnet50()
        expected = set(net.state_dict())
        prefixes = {k.split(".", 1)[0] + "." for k in state if k not in expected}
        for prefix in prefixes:
            if all(k.startswith(prefix) for k in state):
                state = {k[len(prefix):]: v for k, v in state.items()}
        net.load_state_dict(state)
        return net
    try:
        return resnet50(weights=ResNet50_Weights[weights])
    except KeyError:
        raise SystemExit(f"--weights: expected 'none', a file path or one of "
                         f"{['DEFAULT'] + [w.name for w in ResNet50_Weights]}, got {weights!r}") from None


def real_images(folder: Optional[str], size: int, limit: int = 256) -> Optional[torch.Tensor]:
    """Up to ``limit`` images of ``folder`` (any depth), resized and centre-cropped, pixels in [0, 1]."""
    if folder is None:
        return None
    from PIL import Image
    from torchvision.transforms.v2 import functional as TF

    paths = sorted(os.path.join(r, f) for r, _, fs in os.walk(folder) for f in fs
                   if f.lower().endswith((".jpg", ".jpeg", ".png")))[:limit]
    if not paths:
        raise SystemExit(f"--real-dir: no .jpg/.jpeg/.png images under {folder!r}")
    out = []
    for p in paths:
        with Image.open(p) as f:
            img = TF.pil_to_tensor(f.convert("RGB"))
        img = TF.center_crop(TF.resize(img, size, antialias=True), [size, size])
        out.append(img.float() / 255.0)
    return torch.stack(out)


def main(argv=None) -> Dict[str, ldam.SampleResult]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--weights", default="DEFAULT",
                        help="comma-separated variants: 'none', torchvision weight names or checkpoint paths")
    parser.add_argument("--neurons", nargs="+", default=NEURONS)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--chains", type=int, default=8)
    parser.add_argument("--steps", type=int, default=256)
    parser.add_argument("--real-dir", default=None, help="a folder of real images for the discriminator")
    parser.add_argument("--logdir", default="runs/imagenet")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--smoke", action="store_true", help="random weights, 64 px, a few steps (offline, seconds)")
    args = parser.parse_args(argv)
    if args.smoke:
        args.weights, args.image_size, args.chains, args.steps = "none", 64, 2, 3
        args.neurons = ["layer3:0-1", "fc:1,207"]

    specs = [w.strip() for w in args.weights.split(",") if w.strip()]
    real = real_images(args.real_dir, args.image_size)
    results: Dict[str, ldam.SampleResult] = {}
    for spec in specs:
        name = "random" if spec == "none" else re.sub(r"[^A-Za-z0-9_.=-]+", "_",
                                                      os.path.splitext(os.path.basename(spec))[0])
        name = next(n for n in (name, *(f"{name}_{i}" for i in range(2, 99))) if n not in results)
        net = load_resnet50(spec).to(args.device).eval()
        # The same seed for every variant: identical starting chains and noise, so differences are the weights'.
        results[name] = ldam.sample(
            net, args.neurons, input_shape=(3, args.image_size, args.image_size), chains=args.chains,
            steps=args.steps, normalize=(MEAN, STD), real_data=real, seed=0, progress=not args.smoke,
            **({"disc_warmup": 2} if args.smoke and real is not None else {}))
        print(f"{name}: {results[name]}")

    from torch.utils.tensorboard import SummaryWriter
    from torchvision.utils import save_image

    images, scalars = summarize(results, real=real)  # realism and diversity against the real images, if any
    os.makedirs(args.logdir, exist_ok=True)
    with SummaryWriter(args.logdir) as writer:
        write_tensorboard(writer, images, scalars, step=0)
    for tag, img in images.items():
        if tag.startswith("ldam/compare/") or len(results) == 1:
            save_image(img, os.path.join(args.logdir, tag.replace("/", "_") + ".png"))
    print(f"\nWrote {len(images)} image grids to {args.logdir}:\n\n"
          f"    tensorboard --logdir {args.logdir} --samples_per_plugin images=1000\n")
    return results


if __name__ == "__main__":
    main()
