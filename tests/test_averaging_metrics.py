"""The averaging metrics on constructed cases whose answer is known (issue #12, item 1 and 2).

divergence (paired samples vs the chains' own spread), drift, health counts, and the callback's scalars:
``ema_decay=0`` makes the average the raw weights (divergence exactly 0); weights that stop moving make
consecutive rounds identical (drift exactly 0); training moves both.
"""
from __future__ import annotations

import copy

import pytest
import torch
from helpers.models import SIZE
from helpers.training import NEURONS, TinyModule, events, fit
from lightning.pytorch.loggers import TensorBoardLogger
from torch.utils.data import DataLoader, TensorDataset

from lightning_ldam.callback import LDAMCallback
from lightning_ldam.report.metrics import UNDRIVEN_LIFT, divergence, health
from lightning_ldam.report.tags import summarize
from lightning_ldam.sampling.result import SampleResult

pytestmark = pytest.mark.usefixtures("lightning_env")


def test_divergence_is_zero_for_the_same_samples_about_one_for_independent_chains_and_large_for_another_concept():
    g = torch.Generator().manual_seed(0)
    a = torch.rand(3, 64, 1, 8, 8, generator=g)
    assert torch.equal(divergence(a, a), torch.zeros(3))
    independent = torch.rand(3, 64, 1, 8, 8, generator=g)  # as different as two chains of one variant
    assert torch.allclose(divergence(a, independent), torch.ones(3), atol=0.05)
    shifted = a + 10.0  # the same spread, far away
    assert (divergence(a, shifted) > 10).all()
    assert torch.isnan(divergence(a[:, :1], a[:, :1])).all()  # one chain: no spread to measure on


def test_health_finds_the_dead_undriven_and_exploding_units_of_a_constructed_layer():
    real = torch.stack([torch.zeros(50),                    # 0: dead (constant)
                        torch.linspace(0, 1, 50),           # 1: undriven below
                        torch.linspace(0, 1, 50),           # 2: healthy
                        torch.linspace(0, 1, 50),           # 3: NaN in the samples
                        torch.linspace(0, 1, 50)], dim=1)   # 4: exploding
    mean, top = 0.5, 1.0
    samples = torch.tensor([[0.0, 0.0],
                            [mean + 0.2 * (top - mean)] * 2,  # lift 0.2 < 0.5
                            [mean + 1.5 * (top - mean)] * 2,  # lift 1.5
                            [float("nan"), 1.0],
                            [5000.0, 5000.0]])               # 5000 × the real range
    assert UNDRIVEN_LIFT == 0.5
    assert health(real, samples) == {"dead": [0], "undriven": [1], "saturated": [3, 4]}


def _result(images: torch.Tensor, acts: torch.Tensor, real_acts=None) -> SampleResult:
    n, c = acts.shape
    return SampleResult(neurons=[("fc", i) for i in range(n)], images=images, activations=acts,
                        trace=torch.zeros(n, c, 1), disc_scores=None, nonfinite_resets=torch.zeros(n),
                        value_range=(0.0, 1.0), real_activations=real_acts)


def test_summarize_scalars_on_known_samples():
    g = torch.Generator().manual_seed(1)
    real = torch.rand(40, 1, 4, 4, generator=g)
    copies = real[:6].view(2, 3, 1, 4, 4)  # samples that are real images: nearest_real 0
    real_acts = torch.linspace(0, 1, 40).unsqueeze(1).expand(40, 2).contiguous()
    acts = torch.full((2, 3), 1.0)  # the best real input's level: lift 1
    raw = _result(copies, acts, real_acts)
    ema = _result(copies.clone(), acts, real_acts)
    _, scalars = summarize({"raw": raw, "ema": ema}, real=real, previous={"raw": copies})
    assert scalars["ldam/raw/fc/nearest_real"] == pytest.approx(0.0, abs=1e-3)  # cdist's matmul form: not exactly 0
    # copies of the reference half (even rows 0, 2, 4) and of the held-out half: as real as real images are
    assert 0.3 < scalars["ldam/raw/fc/realism"] < 2.0
    assert scalars["ldam/raw/fc/lift"] == pytest.approx(1.0)
    assert scalars["ldam/divergence/ema/fc"] == 0.0 and scalars["ldam/drift/raw/fc"] == 0.0
    assert "ldam/drift/ema/fc" not in scalars  # no previous round of ema
    assert scalars["ldam/health/fc/dead"] == 0.0 and scalars["ldam/health/fc/undriven"] == 0.0
    assert "ldam/transfer/ema/fc" not in scalars and "ldam/retention/raw/fc" not in scalars  # not read across
    spread = torch.cdist(real.flatten(1), real.flatten(1)).sum() / (40 * 39)
    expected = float(raw.diversity.mean() / spread)
    assert scalars["ldam/raw/fc/diversity"] == pytest.approx(expected, rel=1e-5)


def test_transfer_and_retention_on_known_activations():
    """Real inputs' mean 0.5, max 1; every unit at 1.0 on its own samples (lift 1). The averaged unit reads raw's
    samples at 0.75 (lift 0.5), raw's unit reads the averaged samples at 1.0 (lift 1): transfer (0.5 + 1)/2. Raw's
    unit reads its previous samples at 0.5, the level of an average real input: retention 0."""
    images = torch.rand(2, 3, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    real_acts = torch.linspace(0, 1, 41).unsqueeze(1).expand(41, 2).contiguous()
    acts = torch.full((2, 3), 1.0)
    raw, ema = _result(images, acts, real_acts), _result(images.clone(), acts, real_acts)
    ema.cross_activations["raw"] = torch.full((2, 3), 0.75)
    raw.cross_activations["ema"] = torch.full((2, 3), 1.0)
    raw.cross_activations["previous"] = torch.full((2, 3), 0.5)
    _, scalars = summarize({"raw": raw, "ema": ema})
    assert scalars["ldam/transfer/ema/fc"] == pytest.approx(0.75)
    assert scalars["ldam/retention/raw/fc"] == pytest.approx(0.0, abs=1e-6)
    assert "ldam/retention/ema/fc" not in scalars
    undriven = _result(images, torch.full((2, 3), 0.6), real_acts)  # lift 0.2 < 0.5: no scale to compare on
    undriven.cross_activations["previous"] = torch.full((2, 3), 1.0)
    assert "ldam/retention/raw/fc" not in summarize({"raw": undriven})[1]


def _loader(n=16):
    g = torch.Generator().manual_seed(123)
    return DataLoader(TensorDataset(torch.rand(n, 1, SIZE, SIZE, generator=g), torch.arange(n)), batch_size=4,
                      shuffle=False)


class FrozenAfterStep(TinyModule):
    """Trains with SGD; ``lr=0`` keeps the weights where they started (and the rounds identical): BatchNorm
    momentum 0 keeps its running statistics too."""

    def __init__(self, lr=0.5):
        super().__init__(dropout=0.0)
        self.lr = lr
        for m in self.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.momentum = 0.0

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.lr)


def _run(tmp_path, ema_decay, lr, **kwargs):
    logger = TensorBoardLogger(str(tmp_path), name="tb")
    cb = LDAMCallback(NEURONS, every_n_train_steps=2, every_n_epochs=None, disc_weight=0.0, chains=3, steps=16,
                      reservoir_size=16, max_overhead=None, ema_decay=ema_decay, **kwargs)
    fit(tmp_path, [cb], module=lambda: FrozenAfterStep(lr), train=_loader(), max_steps=4, logger=logger)
    return events(logger.log_dir)


def test_ema_decay_zero_gives_zero_divergence_and_a_far_average_a_larger_one(tmp_path):
    same = _run(tmp_path / "same", ema_decay=0.0, lr=0.5)
    far = _run(tmp_path / "far", ema_decay=0.9, lr=0.5)
    for layer in ("features.0", "classifier.2"):
        assert [e.value for e in same.Scalars(f"ldam/divergence/ema/{layer}")] == [0.0, 0.0]
        assert all(e.value > 1e-3 for e in far.Scalars(f"ldam/divergence/ema/{layer}")), layer
        # the same weights read the same samples: each unit responds to the other's exactly as to its own
        assert [e.value for e in same.Scalars(f"ldam/transfer/ema/{layer}")] == [1.0, 1.0]
        assert all(abs(e.value - 1.0) > 1e-3 for e in far.Scalars(f"ldam/transfer/ema/{layer}")), layer


def test_drift_is_zero_for_weights_that_do_not_move_and_positive_for_training(tmp_path):
    """Rounds that start afresh (``persistent=False``): the same seed on the same weights gives the same samples."""
    still = _run(tmp_path / "still", ema_decay=0.5, lr=0.0, persistent=False)
    moving = _run(tmp_path / "moving", ema_decay=0.5, lr=0.5, persistent=False)
    for variant in ("raw", "ema"):
        assert [e.value for e in still.Scalars(f"ldam/drift/{variant}/classifier.2")] == [0.0]
        assert all(e.value > 0.0 for e in moving.Scalars(f"ldam/drift/{variant}/classifier.2"))
        assert [e.value for e in still.Scalars(f"ldam/retention/{variant}/classifier.2")] == [1.0]
        assert all(e.value != 1.0 for e in moving.Scalars(f"ldam/retention/{variant}/classifier.2"))
def test_with_persistent_chains_drift_reads_how_far_chains_move_in_a_round(tmp_path):
    """On weights that do not move, a continued chain moves less in a round than a restarted one is from its
    predecessor: drift with nothing re-drawn is positive and below drift with every chain re-drawn."""
    kept = _run(tmp_path / "kept", ema_decay=0.5, lr=0.0, redraw=0.0)
    fresh = _run(tmp_path / "fresh", ema_decay=0.5, lr=0.0, redraw=1.0)
    for variant in ("raw", "ema"):
        (moved,) = [e.value for e in kept.Scalars(f"ldam/drift/{variant}/classifier.2")]
        (restarted,) = [e.value for e in fresh.Scalars(f"ldam/drift/{variant}/classifier.2")]
        assert 0.0 < moved < restarted, (variant, moved, restarted)


def test_labels_and_aliases_name_the_tags_and_rows(tmp_path):
    acc = _run(tmp_path, ema_decay=0.5, lr=0.5, layer_aliases={"classifier.2": "logits"},
               labels={"classifier.2": ["zero", "one", "two", "three", "four"]})
    tags = set(acc.Tags()["images"]) | set(acc.Tags()["scalars"])
    assert {"ldam/raw/logits", "ldam/compare/logits", "ldam/divergence/ema/logits",
            "ldam/health/logits/dead"} <= tags
    assert not any("classifier.2" in t for t in tags)


def test_transfer_reads_each_variants_unit_on_the_other_variants_samples():
    """A constructed pair: the 'ema' network's logit 0 is raw's negated. Raw's samples push raw's unit up, so the
    negated unit reads them far below its real-input mean (and the other way round): transfer < 0 both ways. Read on
    its own samples a unit always transfers 1; read across, this pair cannot."""
    from lightning_ldam.engine.rounds import Variant, plan_round, sample_variants
    from lightning_ldam.sampling.config import SamplerConfig

    torch.manual_seed(0)
    raw = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 2))
    neg = copy.deepcopy(raw)
    with torch.no_grad():
        neg[1].weight.neg_()
        neg[1].bias.neg_()
    real = torch.rand(64, 1, 4, 4, generator=torch.Generator().manual_seed(1))
    plan = plan_round([Variant("raw", raw), Variant("ema", neg)], "1:0", input_shape=(1, 4, 4), real=real,
                      config=SamplerConfig().with_settings(chains=4, disc_weight=0.0, device="cpu"), steps=40)
    results = sample_variants(plan)
    assert torch.equal(results["ema"].cross_activations["raw"],
                       -results["raw"].activations)  # raw's samples, read by the negated unit
    _, scalars = summarize(results, real=real)
    assert scalars["ldam/transfer/ema/1"] < -0.5, scalars["ldam/transfer/ema/1"]
