"""Per-layer settings in the neuron spec: ``{layer: {"units": ..., "disc_weight" | "temperature" | "smoothness" |
"spatial": value}}`` override the call's value for that layer's neurons, in one batched call.

Known answers: two quadratic "layers" at T = 4 and T = 1 in one call have variances 4 and 1; a layer whose λ is 0
moves exactly as it does in a call without a discriminator (same starts, same noise); a layer read at its centre
reports the centre unit.
"""
from __future__ import annotations

from typing import Dict, List

import pytest
import torch
from helpers.models import INPUT_SHAPE, make_tiny_net
from helpers.training import FAST, fit, loader
from torch import nn

import lightning_ldam as ldam
from lightning_ldam.callback import LDAMCallback
from lightning_ldam.engine.rounds import fixed_spec
from lightning_ldam.sampling.activations import unit_activations
from lightning_ldam.sampling.config import DEFAULT_DISC_WEIGHT
from lightning_ldam.sampling.targets import layer_settings, parse_neurons, spec_with_settings


class Quadratic(nn.Module):
    """a(x) = −|x|²/2 as one neuron ``[B, 1]``: p ∝ exp(a/(c·T)) is N(0, c·T) per pixel."""

    def forward(self, x):
        return -(x.flatten(1) ** 2).sum(1, keepdim=True) / 2


class TwoHeads(nn.Module):
    """Two layers reading the same input in parallel, each one quadratic neuron."""

    def __init__(self):
        super().__init__()
        self.a, self.b = Quadratic(), Quadratic()

    def forward(self, x):
        return torch.cat([self.a(x), self.b(x)], 1)


def _variance(images: torch.Tensor) -> float:
    return images.flatten(1).var(0).mean().item()


@pytest.mark.parametrize("method", ["langevin", "mala"])
def test_per_layer_temperature_sets_each_layers_variance_in_one_call(method):
    res = ldam.sample(TwoHeads(), {"a": {"units": 0, "temperature": 4.0}, "b": {"units": 0}}, method=method,
                      input_shape=(1, 1, 2), value_range=(-6.0, 6.0), chains=512, scale=1.0, step_size=0.02,
                      steps=800, seed=3)
    assert res.neurons == [("a", 0), ("b", 0)]
    assert _variance(res.images[0]) == pytest.approx(4.0, rel=0.10)
    assert _variance(res.images[1]) == pytest.approx(1.0, rel=0.10)
    assert res.config["layer_settings"] == {"a": {"temperature": 4.0}}
    assert res.config["temperature"] == 1.0  # the call's value, for every other layer


def _real(n: int = 48) -> torch.Tensor:
    return torch.rand((n, *INPUT_SHAPE), generator=torch.Generator().manual_seed(7))


def test_a_layer_at_zero_lambda_moves_exactly_as_without_a_discriminator():
    net, real = make_tiny_net(), _real()
    kw = dict(input_shape=INPUT_SHAPE, chains=3, steps=24, real_data=real, seed=4)
    mixed = ldam.sample(net, {"features.0": {"units": [0, 1], "disc_weight": 0.0},
                              "classifier.2": {"units": [0, 1]}}, **kw)
    plain = ldam.sample(net, {"features.0": [0, 1], "classifier.2": [0, 1]}, disc_weight=0.0, **kw)
    assert mixed.discriminator is not None and plain.discriminator is None
    assert torch.equal(mixed.images[:2], plain.images[:2])  # λ 0 and κ 0 there: the same drift, starts and noise
    assert not torch.equal(mixed.images[2:], plain.images[2:])  # the call's λ (1.0) and κ (1.5) shape these
    assert torch.equal(mixed.disc_weights[:2], torch.zeros(2))
    assert (mixed.disc_weights[2:] > 0).all()


def test_a_layer_can_use_the_discriminator_when_the_call_does_not():
    res = ldam.sample(make_tiny_net(), {"classifier.2": {"units": [0, 1], "disc_weight": 2.0}, "features.0": [0]},
                      input_shape=INPUT_SHAPE, chains=2, steps=24, real_data=_real(), disc_weight=0.0,
                      adapt_disc=False)
    assert res.config["disc_weight"] == 0.0
    assert (res.disc_weights[:2] > 0).all() and res.disc_weights[2] == 0
    assert res.discriminator is not None


def test_a_layers_own_lambda_needs_real_data_or_a_discriminator():
    with pytest.raises(ldam.LDAMArgumentError, match=r"^neurons: layer 'classifier.2' sets disc_weight=1.0 > 0, "
                                                      r"which needs real_data"):
        ldam.sample(make_tiny_net(), {"classifier.2": {"units": 0, "disc_weight": 1.0}}, input_shape=INPUT_SHAPE,
                    chains=1, steps=2)


def test_per_layer_spatial_reads_the_centre_unit_of_that_layer_only():
    net = make_tiny_net()
    res = ldam.sample(net, {"features.0": {"units": [0, 1], "spatial": "center"}, "features.3": [0, 1]},
                      input_shape=INPUT_SHAPE, chains=2, steps=6, disc_weight=0.0)
    assert res.config["spatial"] == {"features.0": "center", "features.3": "mean"}
    images = res.images.flatten(0, 1)
    read = unit_activations(net, res.neurons, images, spatial=res.config["spatial"])  # [N·chains, neurons]
    own = read.view(4, 2, 4).diagonal(dim1=0, dim2=2).t()  # each chain's own neuron
    assert torch.allclose(own, res.activations, atol=1e-5)
    centre = unit_activations(net, res.neurons[:2], images[:4], spatial="center")
    mean = unit_activations(net, res.neurons[:2], images[:4], spatial="mean")
    assert torch.allclose(res.activations[:2].flatten(), centre.view(2, 2, 2).diagonal(dim1=0, dim2=2).t().flatten(),
                          atol=1e-5)
    assert not torch.allclose(centre, mean)


def test_per_layer_smoothness_defaults_follow_the_layers_own_lambda():
    """A layer at λ 0 gets no smoothness prior unless it asks for one; an explicit κ wins."""
    net, real = make_tiny_net(), _real()
    kw = dict(input_shape=INPUT_SHAPE, chains=2, steps=16, real_data=real, seed=1)
    zero = ldam.sample(net, {"features.0": {"units": [0], "disc_weight": 0.0}}, **kw)
    none = ldam.sample(net, "features.0:0", disc_weight=0.0, **kw)
    assert torch.equal(zero.images, none.images)
    smooth = ldam.sample(net, {"features.0": {"units": [0], "disc_weight": 0.0, "smoothness": 3.0}}, **kw)
    assert not torch.equal(smooth.images, none.images)
    rough = lambda im: (im[..., 1:, :] - im[..., :-1, :]).abs().mean().item()  # noqa: E731
    assert rough(smooth.images) < rough(none.images)


def test_layer_settings_and_spec_with_settings_round_trip():
    spec = {"features.0": {"units": "0-1", "spatial": "center"}, "classifier.2": "top2"}
    assert layer_settings(spec) == {"features.0": {"spatial": "center"}}
    assert layer_settings(["features.0:0"]) == {}
    resolved = [("features.0", 0), ("features.0", 1), ("classifier.2", 3), ("classifier.2", 1)]
    again = spec_with_settings(resolved, layer_settings(spec))
    assert again == {"features.0": {"units": [0, 1], "spatial": "center"}, "classifier.2": {"units": [3, 1]}}
    assert parse_neurons(again).pairs() == [("features.0", [0, 1]), ("classifier.2", [3, 1])]
    net = make_tiny_net()
    assert fixed_spec(net, {"module.features.0": {"units": 0, "temperature": 2.0}}, [("features.0", 0)]) == {
        "features.0": {"units": [0], "temperature": 2.0}}


class ResultLog(LDAMCallback):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.rounds: List[Dict[str, ldam.SampleResult]] = []

    def on_round_end(self, trainer, results, scalars):
        self.rounds.append(results)


def test_the_callback_keeps_the_layer_settings_in_every_round(tmp_path, lightning_env, no_failed_rounds):
    spec = {"features.0": {"units": "top2", "spatial": "center", "disc_weight": 0.0},
            "classifier.2": {"units": [0, 1], "temperature": 2.0}}
    cb = ResultLog(spec, every_n_train_steps=2, ema_decay=0.5, **FAST)
    fit(tmp_path, [cb], max_steps=4, train=loader(16))
    assert len(cb.rounds) >= 2
    first = cb.rounds[0]["raw"].neurons
    for results in cb.rounds:
        for res in results.values():
            assert res.neurons == first  # fixed at the first round
            assert res.config["layer_settings"] == {"features.0": {"spatial": "center", "disc_weight": 0.0},
                                                    "classifier.2": {"temperature": 2.0}}
            assert res.config["spatial"] == {"features.0": "center", "classifier.2": "mean"}
            assert torch.equal(res.disc_weights[:2], torch.zeros(2))


@pytest.mark.parametrize("method", ["langevin", "mala", "ascent"])
def test_layer_settings_equal_to_the_calls_change_nothing_bitwise(method):
    """The per-neuron form of λ, T and κ does the scalar form's arithmetic: same values, same samples."""
    net, real = make_tiny_net(), _real()
    kw = dict(input_shape=INPUT_SHAPE, chains=3, steps=24, real_data=real, seed=2, method=method)
    plain = ldam.sample(net, {"features.0": [0], "classifier.2": [0, 1]}, **kw)
    same = ldam.sample(net, {"features.0": {"units": [0], "disc_weight": DEFAULT_DISC_WEIGHT, "temperature": 1.0,
                                            "smoothness": 1.5}, "classifier.2": [0, 1]}, **kw)
    assert torch.equal(plain.images, same.images)
