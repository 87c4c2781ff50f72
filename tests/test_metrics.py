"""lightning_ldam.report.metrics on constructed cases whose answer is known in advance."""
from __future__ import annotations

import math

import pytest
import torch
from helpers.models import INPUT_SHAPE, make_tiny_net, neuron_activations
from torch import nn

from lightning_ldam.report.metrics import diversity, lift, nearest_real
from lightning_ldam.sampling.activations import unit_activations

# ---- lift ------------------------------------------------------------------------------------------


def test_lift_is_one_at_the_real_max_and_zero_at_the_real_mean():
    real = torch.tensor([[0.0, -1.0], [1.0, 3.0], [5.0, 1.0]])  # means (2, 1), maxima (5, 3)
    at_max = torch.tensor([[5.0, 5.0, 5.0], [3.0, 3.0, 3.0]])
    at_mean = torch.tensor([[1.0, 3.0], [1.0, 1.0]])  # neuron 0 averages to its real mean 2
    assert torch.equal(lift(at_max, real), torch.tensor([1.0, 1.0]))
    assert torch.equal(lift(at_mean, real), torch.tensor([0.0, 0.0]))


def test_lift_scales_linearly_and_goes_negative_below_the_mean():
    real = torch.tensor([[0.0], [2.0], [4.0]])  # mean 2, max 4: one unit of lift = 2
    assert lift(torch.tensor([[8.0, 4.0]]), real).item() == pytest.approx(2.0)  # mean 6
    assert lift(torch.tensor([[0.0]]), real).item() == pytest.approx(-1.0)


def test_lift_of_a_unit_constant_on_real_data_is_nan_and_leaves_the_others_alone():
    real = torch.tensor([[0.1, 0.0], [0.1, 2.0], [0.1, 4.0]])  # neuron 0 constant (0.1 is not exact in binary)
    out = lift(torch.tensor([[7.0], [4.0]]), real)
    assert math.isnan(out[0].item())
    assert out[1].item() == pytest.approx(1.0)


def test_lift_rejects_mismatched_neuron_counts():
    with pytest.raises(ValueError, match="lift"):
        lift(torch.zeros(3, 2), torch.zeros(5, 2))


# ---- nearest_real ---------------------------------------------------------------------------------------


def _lattice(n: int = 10, dim: int = 6, spacing: float = 1.0) -> torch.Tensor:
    """``n`` points on a line along axis 0, ``spacing`` apart: every nearest-other distance is ``spacing``."""
    pts = torch.zeros(n, dim)
    pts[:, 0] = torch.arange(n) * spacing
    return pts


@pytest.mark.parametrize("shift", [0.0, 0.25, 0.5])
def test_nearest_real_of_a_copy_shifted_off_the_real_set_is_the_shift_over_the_spacing(shift):
    real = _lattice(spacing=2.0)
    shifted = real.clone()
    shifted[:, 1] += shift  # orthogonal to the line: each point's nearest real image is its source
    assert nearest_real(shifted, real) == pytest.approx(shift / 2.0, abs=1e-6)


def test_nearest_real_of_an_iid_copy_is_about_one_and_of_far_samples_large():
    gen = torch.Generator().manual_seed(0)
    real, copy = torch.randn(400, 8, generator=gen), torch.randn(400, 8, generator=gen)
    assert nearest_real(copy, real) == pytest.approx(1.0, abs=0.1)
    assert nearest_real(real + 10.0, real) > 5


def test_nearest_real_flattens_images_and_needs_two_real_images():
    real = _lattice(4, 12).view(4, 3, 2, 2)
    assert nearest_real(real, real) == 0.0
    with pytest.raises(ValueError, match="at least 2"):
        nearest_real(real, real[:1])


# ---- diversity -------------------------------------------------------------------------------------


def test_diversity_of_identical_chains_is_zero():
    real = torch.rand(20, 1, 4, 4, generator=torch.Generator().manual_seed(1))
    chains = real[3:4].expand(8, -1, -1, -1)
    assert diversity(chains, real) == 0.0


def test_diversity_of_an_iid_copy_of_the_real_set_is_about_one():
    gen = torch.Generator().manual_seed(2)
    real, copy = torch.rand(300, 16, generator=gen), torch.rand(300, 16, generator=gen)
    assert diversity(copy, real) == pytest.approx(1.0, abs=0.03)
    assert diversity(0.5 * copy, real) == pytest.approx(0.5, abs=0.02)  # distances scale with the images


def test_diversity_of_two_chains_is_their_distance_over_the_real_mean_pairwise_distance():
    real = torch.tensor([[0.0, 0.0], [3.0, 4.0], [6.0, 8.0]])  # pair distances 5, 5, 10: mean 20/3
    chains = torch.tensor([[0.0, 0.0], [0.0, 2.0]])  # distance 2
    assert diversity(chains, real) == pytest.approx(0.3)
    assert diversity(chains[:1], real) == 0.0  # one chain: no pair


# ---- unit_activations ------------------------------------------------------------------------------


def test_unit_activations_matches_a_manual_forward_for_conv_means_and_linear_units():
    net = make_tiny_net()  # train mode with active Dropout: must be read in eval mode, then restored
    x = torch.rand(37, *INPUT_SHAPE, generator=torch.Generator().manual_seed(3))
    neurons = [("features.3", 5), ("classifier.2", 1), ("features.3", 0), ("classifier.2", 4)]
    got = unit_activations(net, neurons, x, batch_size=10)  # 37 = 3 full batches and a partial one
    net.eval()
    with torch.no_grad():
        conv = net.features(x)  # features.3 is followed by an activation: read it before that
        conv_out = net.features[3](net.features[2](net.features[1](net.features[0](x))))
        logits = net(x)
    assert torch.allclose(conv, net.features[4](conv_out))
    expected = torch.stack([conv_out[:, 5].mean((1, 2)), logits[:, 1], conv_out[:, 0].mean((1, 2)), logits[:, 4]], 1)
    assert got.shape == (37, 4)
    assert torch.allclose(got, expected, atol=1e-5)


def test_unit_activations_leaves_the_mode_and_agrees_with_the_test_suite_reader():
    net = make_tiny_net()
    net.features[1].eval()  # a mixed-mode model: each module's own mode must come back, not the root's
    modes = {name: m.training for name, m in net.named_modules()}
    x = torch.rand(6, *INPUT_SHAPE, generator=torch.Generator().manual_seed(4))
    neurons = [("features.0", 2), ("classifier.2", 0)]
    got = unit_activations(net, neurons, x)
    assert {name: m.training for name, m in net.named_modules()} == modes
    assert all(not m._forward_hooks for m in net.modules())
    expected = neuron_activations(net, x.unsqueeze(0).expand(2, -1, -1, -1, -1), neurons).t()
    assert torch.allclose(got, expected, atol=1e-5)


def test_unit_activations_reads_the_centre_unit():
    net = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1))
    x = torch.rand(3, 1, 5, 7, generator=torch.Generator().manual_seed(5))
    got = unit_activations(net, [("0", 1)], x, spatial="center")
    with torch.no_grad():
        expected = net(x)[:, 1, 2, 3]
    assert torch.allclose(got[:, 0], expected, atol=1e-6)


def test_unit_activations_normalises_pixels_per_channel_first():
    net = nn.Sequential(nn.Flatten(), nn.Linear(2 * 3 * 3, 3))
    x = torch.rand(4, 2, 3, 3, generator=torch.Generator().manual_seed(6))
    mean, std = torch.tensor([0.2, 0.7]), torch.tensor([0.5, 2.0])
    got = unit_activations(net, [("1", 2)], x, normalize=(mean, std))
    with torch.no_grad():
        expected = net((x - mean.view(1, 2, 1, 1)) / std.view(1, 2, 1, 1))[:, 2]
    assert torch.allclose(got[:, 0], expected, atol=1e-6)
    assert not torch.allclose(got[:, 0], net(x)[:, 2].detach(), atol=1e-3)  # normalisation had an effect


def test_unit_activations_rejects_an_unknown_spatial_reduction():
    with pytest.raises(ValueError, match="spatial"):
        unit_activations(nn.Sequential(nn.Linear(2, 2)), [("0", 0)], torch.zeros(1, 2), spatial="max")
