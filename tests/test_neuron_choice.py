"""Choosing neurons by rule: ``"layer:topK"`` (most active on real inputs) and ``"layer:randomK"`` (seeded draw).

The models are built so that each unit's mean activation on the real images is known in advance: a linear layer
whose unit ``j`` is ``scale[j]`` times the mean pixel, and a 1x1 conv whose two channels rank one way by their mean
over positions and the other way by their centre.
"""
from collections import OrderedDict

import pytest
import torch
from helpers.models import INPUT_SHAPE, make_tiny_net
from torch import nn

import lightning_ldam as ldam
from lightning_ldam.errors import LDAMArgumentError
from lightning_ldam.sampling.activations import unit_activations
from lightning_ldam.sampling.targets import (
    TOP_REAL_IMAGES,
    UnitPick,
    parse_neurons,
    random_units,
    resolve_neurons,
    top_units,
)

SHAPE = (1, 4, 4)
#: Unit j of ``fc`` is SCALES[j] x (mean pixel): on positive images the ranking is 1, 3 (a tie: lower index
#: first), 5, 4, 0, 2.
SCALES = [0.3, 2.0, -1.0, 2.0, 0.5, 1.0]
RANKED = [1, 3, 5, 4, 0, 2]
CHEAP = dict(chains=1, steps=2, disc_weight=0.0)


def scaled_units_net(scales=SCALES, wide: int = 0) -> nn.Sequential:
    """``flatten -> fc`` (unit j = scales[j] · mean pixel) and, beside it, ``wide`` units in ``big`` for draws."""
    pixels = SHAPE[0] * SHAPE[1] * SHAPE[2]
    with torch.random.fork_rng(devices=[]):  # layer initialisation must not move the global RNG the tests check
        torch.manual_seed(0)
        fc = nn.Linear(pixels, len(scales))
        layers = OrderedDict(flat=nn.Flatten(), fc=fc)
        if wide:
            layers["big"] = nn.Linear(len(scales), wide)
    with torch.no_grad():
        fc.weight.copy_(torch.tensor(scales).unsqueeze(1).expand(-1, pixels) / pixels)
        fc.bias.zero_()
    return nn.Sequential(layers)


def positive_real(n: int = 32) -> torch.Tensor:
    """Images with pixels in [0.2, 1]: every mean pixel is positive, so unit j's mean has the sign of SCALES[j]."""
    g = torch.Generator().manual_seed(7)
    return 0.2 + 0.8 * torch.rand((n, *SHAPE), generator=g)


def dot_net() -> nn.Sequential:
    """A 1x1 conv with two channels: channel 0 = the pixel, channel 1 = 0.5 everywhere (weight 0, bias 0.5)."""
    conv = nn.Conv2d(1, 2, 1)
    with torch.no_grad():
        conv.weight.copy_(torch.tensor([1.0, 0.0]).view(2, 1, 1, 1))
        conv.bias.copy_(torch.tensor([0.0, 0.5]))
    return nn.Sequential(OrderedDict(conv=conv))


def dot_images(n: int = 8) -> torch.Tensor:
    """A bright centre pixel on black: channel 0's centre is 1 but its mean 1/25; channel 1 is 0.5 in both."""
    x = torch.zeros((n, 1, 5, 5))
    x[:, :, 2, 2] = 1.0
    return x


# ---- top-K ---------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("k", [1, 2, 3, 5])
def test_top_k_picks_the_most_active_units_most_active_first(k):
    res = ldam.sample(scaled_units_net(), f"fc:top{k}", input_shape=SHAPE, real_data=positive_real(), **CHEAP)
    assert res.neurons == [("fc", j) for j in RANKED[:k]]


def test_top_k_larger_than_the_layer_gives_every_unit_ranked():
    res = ldam.sample(scaled_units_net(), "fc:top100", input_shape=SHAPE, real_data=positive_real(), **CHEAP)
    assert res.neurons == [("fc", j) for j in RANKED]


def test_top_k_ranks_as_the_sampler_reads_units_normalize_included():
    """With normalize=(0.5, 1) the images below 0.5 read negative: the ranking turns over (ties still go low)."""
    real = torch.full((4, *SHAPE), 0.25)
    res = ldam.sample(scaled_units_net(), "fc:top6", input_shape=SHAPE, real_data=real, normalize=(0.5, 1.0),
                      **CHEAP)
    assert res.neurons == [("fc", j) for j in [2, 0, 4, 5, 1, 3]]


@pytest.mark.parametrize("spatial, expected", [("mean", [1, 0]), ("center", [0, 1])])
def test_spatial_reading_changes_the_ranking_of_conv_channels(spatial, expected):
    res = ldam.sample(dot_net(), "conv:top2", input_shape=(1, 5, 5), real_data=dot_images(), spatial=spatial,
                      **CHEAP)
    assert res.neurons == [("conv", c) for c in expected]


def test_top_k_agrees_with_unit_activations_on_a_real_conv_net():
    net = make_tiny_net()
    real = torch.rand((40, *INPUT_SHAPE), generator=torch.Generator().manual_seed(3))
    for spatial in ("mean", "center"):
        res = ldam.sample(net, "features.3:top4", input_shape=INPUT_SHAPE, real_data=real, spatial=spatial, **CHEAP)
        means = unit_activations(net, [("features.3", c) for c in range(6)], real, spatial=spatial).mean(0)
        assert res.neurons == [("features.3", c) for c in top_units(means, 4)]


def test_top_k_ranks_on_the_first_real_images_only():
    """Unit 0 reads pixel 0, unit 1 pixel 1: the first TOP_REAL_IMAGES favour unit 0, the images after them would
    make unit 1 the most active on average."""
    fc = nn.Linear(16, 2, bias=False)
    with torch.no_grad():
        fc.weight.zero_()
        fc.weight[0, 0] = fc.weight[1, 1] = 1.0
    net = nn.Sequential(OrderedDict(flat=nn.Flatten(), fc=fc))
    real = torch.zeros((TOP_REAL_IMAGES + 88, *SHAPE))
    real[:TOP_REAL_IMAGES].view(TOP_REAL_IMAGES, -1)[:, 0] = 1.0
    real[TOP_REAL_IMAGES:].view(88, -1)[:, 1] = 100.0
    assert real[:, 0, 0, 1].mean() > real[:, 0, 0, 0].mean()  # over all images unit 1 would win
    res = ldam.sample(net, "fc:top1", input_shape=SHAPE, real_data=real, value_range=(0.0, 100.0), **CHEAP)
    assert res.neurons == [("fc", 0)]


def test_top_units_breaks_ties_low_and_ranks_nan_last():
    assert top_units(torch.tensor([1.0, 3.0, 3.0, float("nan"), 2.0]), 5) == [1, 2, 4, 0, 3]
    assert top_units(torch.tensor([0.5, 0.5, 0.5]), 2) == [0, 1]
    assert top_units(torch.tensor([0.5, 0.1]), 9) == [0, 1]


# ---- random-K ------------------------------------------------------------------------------------------------------

def _random_units(seed: int, spec="big:random5"):
    return ldam.sample(scaled_units_net(wide=64), spec, input_shape=SHAPE, seed=seed, **CHEAP).neurons


def test_random_k_is_fixed_by_the_seed_distinct_in_range_and_ascending():
    first = _random_units(0)
    assert first == _random_units(0)
    indices = [i for _, i in first]
    assert len(indices) == 5 and len(set(indices)) == 5
    assert indices == sorted(indices) and all(0 <= i < 64 for i in indices)
    assert all(layer == "big" for layer, _ in first)


def test_random_k_differs_across_seeds():
    draws = {tuple(_random_units(seed)) for seed in range(4)}
    assert len(draws) == 4


def test_random_k_ignores_the_global_rng_and_leaves_it_alone():
    torch.manual_seed(1)
    state = torch.get_rng_state()
    a = _random_units(3)
    assert torch.equal(torch.get_rng_state(), state)
    torch.manual_seed(99)
    assert _random_units(3) == a


def test_random_k_of_a_layer_does_not_depend_on_the_rest_of_the_spec():
    alone = _random_units(5, "big:random4")
    with_others = _random_units(5, ["fc:0", "fc:random2", "big:random4"])
    assert with_others[-4:] == alone


def test_random_k_larger_than_the_layer_gives_every_unit():
    assert _random_units(0, "fc:random10") == [("fc", j) for j in range(6)]
    assert random_units(6, 10, seed=4, layer="fc") == list(range(6))


def test_random_units_larger_k_keeps_the_smaller_draw():
    small = random_units(50, 3, seed=2, layer="x")
    assert set(small) <= set(random_units(50, 7, seed=2, layer="x"))


# ---- lists, dicts, mixes, reuse ------------------------------------------------------------------------------------

def test_rules_in_lists_and_dicts():
    net, real = scaled_units_net(wide=64), positive_real()
    kwargs = dict(input_shape=SHAPE, real_data=real, seed=2, **CHEAP)
    listed = ldam.sample(net, ["fc:top2", "big:random3"], **kwargs).neurons
    assert listed[:2] == [("fc", 1), ("fc", 3)]
    assert listed[2:] == [("big", i) for i in random_units(64, 3, seed=2, layer="big")]
    assert ldam.sample(net, {"fc": "top2", "big": "random3"}, **kwargs).neurons == listed
    assert ldam.sample(net, {"fc": {"units": "top2"}, "big": {"units": "random3"}}, **kwargs).neurons == listed
    assert ldam.sample(net, [("fc", "top2"), ("big", "random3")], **kwargs).neurons == listed


def test_rules_mix_with_explicit_indices_keeping_order_and_dropping_repeats():
    res = ldam.sample(scaled_units_net(), ["fc:5", "fc:top3", "fc:0-1"], input_shape=SHAPE,
                      real_data=positive_real(), **CHEAP)
    assert res.neurons == [("fc", 5), ("fc", 1), ("fc", 3), ("fc", 0)]


def test_resolved_neurons_are_an_explicit_spec_for_later_calls():
    net, real = scaled_units_net(wide=64), positive_real()
    first = ldam.sample(net, ["fc:top3", "big:random2"], input_shape=SHAPE, real_data=real, seed=1, **CHEAP)
    again = ldam.sample(net, first.neurons, input_shape=SHAPE, seed=1, **CHEAP)  # no real data needed now
    assert again.neurons == first.neurons
    assert torch.equal(again.images, first.images)
    assert parse_neurons(first.neurons).pairs() == [(layer, [i]) for layer, i in first.neurons]


def test_parse_neurons_keeps_rules_unresolved():
    assert parse_neurons(["fc:top3", ("conv", "random8"), "a:2"]).pairs() == [
        ("fc", UnitPick("top", 3)), ("conv", UnitPick("random", 8)), ("a", [2])]
    assert parse_neurons({"fc": {"units": "top1"}}).pairs() == parse_neurons("fc:top1").pairs()
    assert parse_neurons({"fc": {"units": [0, 2]}}).pairs() == [("fc", [0, 2])]
    assert str(UnitPick("random", 8)) == "random8"


# ---- errors --------------------------------------------------------------------------------------------------------

def test_top_k_without_real_data_says_it_needs_it():
    with pytest.raises(LDAMArgumentError, match=r"^neurons: 'top3' needs real_data \(the units are ranked on real "
                                                r"inputs\) for layer 'fc'.*'fc:random3'") as info:
        ldam.sample(scaled_units_net(), "fc:top3", input_shape=SHAPE, **CHEAP)
    assert info.value.argument == "neurons"


def test_resolve_neurons_without_means_refuses_top_k():
    with pytest.raises(LDAMArgumentError, match=r"neurons: 'top2' needs real_data"):
        resolve_neurons("fc:top2", {"fc": 4})
    with pytest.raises(LDAMArgumentError, match=r"means: expected 4 mean activations for layer 'fc'.*got 3"):
        resolve_neurons("fc:top2", {"fc": 4}, means={"fc": torch.zeros(3)})


@pytest.mark.parametrize("spec, match", [
    ("fc:top0", r"K in 'top0' for layer 'fc' must be >= 1.*got 0"),
    ("fc:random0", r"K in 'random0' for layer 'fc' must be >= 1.*got 0"),
    ("fc:top", r"expected 'topK' or 'randomK' with an integer K >= 1.*got 'top'"),
    ("fc:topx", r"expected 'topK' or 'randomK'.*got 'topx'"),
    ("fc:random-1", r"expected 'topK' or 'randomK'.*got 'random-1'"),
    ("fc:top 3", r"expected 'topK' or 'randomK'.*got 'top 3'"),
    ({"fc": "random2.5"}, r"expected 'topK' or 'randomK'.*got 'random2\.5'"),
    ({"fc": {"units": "top3", "chains": 4}},
     r"expected per-layer settings among \['units', 'disc_weight', 'temperature', 'smoothness', 'spatial'\], "
     r"got \['chains'\] for layer 'fc'"),
    ({"fc": {"disc_weight": 0.5}}, r"per-layer settings for layer 'fc' need 'units'"),
    ({"fc": {"units": "top3", "temperature": 0}}, r"'temperature' of layer 'fc': expected a finite number > 0, got 0"),
    ({"fc": {"units": "top3", "disc_weight": -1}}, r"'disc_weight' of layer 'fc': expected a finite number >= 0"),
    ({"fc": {"units": "top3", "spatial": "max"}},
     r"'spatial' of layer 'fc': expected one of \['mean', 'center', 'tokens', .*\], got 'max'"),
    ({"fc": {}}, r"per-layer settings for layer 'fc' need 'units'.*got \{\}"),
    ({"fc": {"units": "top0"}}, r"K in 'top0' for layer 'fc' must be >= 1"),
])
def test_bad_rule_specs_name_neurons_the_accepted_forms_and_the_value(spec, match):
    with pytest.raises(LDAMArgumentError, match=r"^neurons: " + match) as info:
        parse_neurons(spec)
    assert info.value.argument == "neurons"
    with pytest.raises(LDAMArgumentError, match=r"^neurons: " + match):  # before any forward or sampling
        ldam.sample(scaled_units_net(), spec, input_shape=SHAPE, real_data=positive_real(), **CHEAP)


@pytest.mark.parametrize("k", [0, -1, True, 2.0])
def test_pick_functions_refuse_a_bad_k(k):
    with pytest.raises(LDAMArgumentError, match=r"^k: expected an int >= 1"):
        top_units(torch.zeros(3), k)
    with pytest.raises(LDAMArgumentError, match=r"^k: expected an int >= 1"):
        random_units(3, k)
