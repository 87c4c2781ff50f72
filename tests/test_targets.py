"""Neuron addressing: spec parsing, wrapper prefixes, list_targets."""
import pytest
import torch
from helpers.models import INPUT_SHAPE, CompiledLike, Wrapper, make_tiny_net
from torch import nn

import lightning_ldam as ldam
from lightning_ldam.sampling.targets import canonical_path, find_module, parse_neurons, resolve_neurons


@pytest.mark.parametrize("spec, expected", [
    ("a.b:12", [("a.b", [12])]),
    ("a:0-7", [("a", list(range(8)))]),
    ("a: 2 - 4", [("a", [2, 3, 4])]),
    ("a:1,5,9", [("a", [1, 5, 9])]),
    ("a:all", [("a", "all")]),
    ("a.b.c:3", [("a.b.c", [3])]),
    (("a.b", 3), [("a.b", [3])]),
    (("a", [4, 1]), [("a", [4, 1])]),
    (("a", range(2, 4)), [("a", [2, 3])]),
    (["a:1", ("b", 2), "c:0-1"], [("a", [1]), ("b", [2]), ("c", [0, 1])]),
    ({"a": 3, "b": [1, 2], "c": range(2, 5), "d": "all", "e": "0-1"},
     [("a", [3]), ("b", [1, 2]), ("c", [2, 3, 4]), ("d", "all"), ("e", [0, 1])]),
])
def test_parse_neurons_accepted_forms(spec, expected):
    assert parse_neurons(spec).pairs() == expected


def test_resolve_neurons_expands_all_in_ascending_order_and_keeps_spec_order():
    units = {"a": 3, "b.c": 4}
    got = resolve_neurons(["b.c:2", "a:all", ("b.c", 0)], units)
    assert got == [("b.c", 2), ("a", 0), ("a", 1), ("a", 2), ("b.c", 0)]


@pytest.mark.parametrize("path", ["module.a.b", "_orig_mod.a.b", "module._orig_mod.a.b", "a.module.b"])
def test_canonical_path_drops_wrapper_segments(path):
    assert canonical_path(path) == "a.b"


@pytest.mark.parametrize("container", [Wrapper, CompiledLike], ids=["module", "_orig_mod"])
def test_wrapper_prefixes_resolve_to_the_same_layer(container):
    net = make_tiny_net()
    wrapped = container(net)
    prefix = "module." if container is Wrapper else "_orig_mod."
    assert find_module(wrapped, prefix + "features.3") is net.features[3]
    assert find_module(wrapped, "features.3") is net.features[3]

    kwargs = dict(input_shape=INPUT_SHAPE, chains=2, steps=5, seed=3)
    bare = ldam.sample(net, "features.3:1", **kwargs)
    with_prefix = ldam.sample(wrapped, prefix + "features.3:1", **kwargs)
    without_prefix = ldam.sample(wrapped, "features.3:1", **kwargs)
    assert bare.neurons == with_prefix.neurons == without_prefix.neurons == [("features.3", 1)]
    assert torch.equal(bare.images, with_prefix.images)
    assert torch.equal(bare.images, without_prefix.images)


def test_wrapper_prefix_also_works_in_list_targets():
    net = make_tiny_net()
    assert ([(t.path, t.units) for t in ldam.list_targets(Wrapper(net), INPUT_SHAPE)]
            == [(t.path, t.units) for t in ldam.list_targets(net, INPUT_SHAPE)])


def test_list_targets_lists_paths_with_counts_in_call_order(tiny_net):
    targets = ldam.list_targets(tiny_net, INPUT_SHAPE)
    got = [(t.path, t.units, t.type_name) for t in targets]
    assert got == [
        ("features.0", 4, "Conv2d"), ("features.1", 4, "BatchNorm2d"), ("features.2", 4, "ReLU"),
        ("features.3", 6, "Conv2d"), ("features.4", 6, "ReLU"), ("features", 6, "Sequential"),
        ("classifier.0", 216, "Flatten"), ("classifier.1", 216, "Dropout"), ("classifier.2", 5, "Linear"),
        ("classifier", 5, "Sequential"),
    ]
    by_path = {t.path: t for t in targets}
    assert by_path["features.3"].output_shape == (1, 6, 6, 6)
    assert by_path["classifier.2"].output_shape == (1, 5)
    assert "features.3" in str(by_path["features.3"]) and "units=6" in str(by_path["features.3"])


def test_list_targets_restores_train_modes_and_leaves_no_hooks(tiny_net):
    tiny_net.features[1].eval()  # a frozen BN inside a model in train mode
    modes = {name: m.training for name, m in tiny_net.named_modules()}
    state = {k: v.clone() for k, v in tiny_net.state_dict().items()}
    ldam.list_targets(tiny_net, INPUT_SHAPE)
    assert {name: m.training for name, m in tiny_net.named_modules()} == modes
    assert modes["features.1"] is False and modes["features.0"] is True
    assert all(torch.equal(v, tiny_net.state_dict()[k]) for k, v in state.items())  # BN stats untouched
    assert all(not m._forward_hooks for m in tiny_net.modules())


def test_list_targets_rejects_an_input_shape_the_model_refuses(tiny_net):
    modes = {name: m.training for name, m in tiny_net.named_modules()}
    with pytest.raises(ValueError, match=r"input_shape: .*\(1, 1, 10, 10\)"):
        ldam.list_targets(tiny_net, (1, 10, 10))
    assert {name: m.training for name, m in tiny_net.named_modules()} == modes
    assert all(not m._forward_hooks for m in tiny_net.modules())


class _HasModuleNamedModule(nn.Module):
    """Not a wrapper: its first conv is just *called* ``module`` (as in many user codebases)."""

    def __init__(self):
        super().__init__()
        self.module = nn.Conv2d(1, 3, 3)
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(3 * 10 * 10, 7))

    def forward(self, x):
        return self.head(self.module(x))


def test_layer_literally_named_module_is_not_silently_retargeted():
    model = _HasModuleNamedModule()
    # 'module' is a real 3-channel conv here, not a wrapper prefix: index 5 is out of its range.
    with pytest.raises(ValueError, match="neurons: index 5 is out of range for layer 'module', which has 3"):
        ldam.sample(model, "module:5", input_shape=(1, 12, 12), chains=2, steps=2)
    res = ldam.sample(model, "module:2", input_shape=(1, 12, 12), chains=2, steps=2)
    assert res.neurons == [("module", 2)]
    assert ("module", 3) in [(t.path, t.units) for t in ldam.list_targets(model, (1, 12, 12))]
