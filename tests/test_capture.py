"""Early exit: layers after the deepest target never run; hooks only while sampling, always removed."""
import pytest
import torch
from helpers.models import INPUT_SHAPE
from torch import nn

import lightning_ldam as ldam
from lightning_ldam.sampling.activations import ActivationReader, capture_outputs, run_to_targets


class Explode(nn.Module):
    def forward(self, x):
        raise AssertionError("a layer after the deepest target was called")


class Counter(nn.Module):
    def __init__(self):
        super().__init__()
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        return x


def _net():
    """conv(0) - tanh(1) - counter(2) - conv(3) - tanh(4) - counter(5) - explode(6) - flatten - linear."""
    return nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.Tanh(), Counter(), nn.Conv2d(3, 4, 3, padding=1),
                         nn.Tanh(), Counter(), Explode(), nn.Flatten(), nn.Linear(4 * 144, 2))


def _no_hooks(model):
    return all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())


def test_targeting_an_early_layer_never_calls_later_layers_in_a_step():
    net = _net()
    res = ldam.sample(net, "0:0-1", input_shape=INPUT_SHAPE, chains=2, steps=5)
    # once: the one whole forward that counts how often each target runs (Explode, past it, is ignored there)
    assert net[2].calls == 1 and net[5].calls == 1
    assert res.images.shape == (2, 2, *INPUT_SHAPE)
    assert _no_hooks(net)


def test_mixed_targets_stop_at_the_deepest_one():
    net = _net()
    steps = 5
    ldam.sample(net, ["3:1", "0:2"], input_shape=INPUT_SHAPE, chains=2, steps=steps)
    # the probe forward + one forward per step + the final read; the layer after the deepest target: only in the
    # probe, a whole forward that counts how often each target runs
    assert net[2].calls == 1 + steps + 1
    assert net[5].calls == 1
    assert _no_hooks(net)


def test_list_targets_runs_the_whole_model_once():
    net = _net()
    net[6] = nn.Identity()
    targets = ldam.list_targets(net, INPUT_SHAPE)
    assert net[2].calls == 1 and net[5].calls == 1
    assert [t.path for t in targets][-1] == "8"
    assert _no_hooks(net)


def test_hooks_removed_when_the_model_raises_mid_forward():
    net = _net()
    # the deepest target lies after Explode, so the dry forward itself raises inside the hooked model
    with pytest.raises(ValueError, match=r"input_shape: the model rejected .*AssertionError"):
        ldam.sample(net, ["0:0", "8:1"], input_shape=INPUT_SHAPE, chains=2, steps=3)
    assert _no_hooks(net)
    assert net.training and all(p.requires_grad for p in net.parameters())


def test_hooks_removed_when_sampling_raises():
    class FailsOnBigBatches(nn.Module):
        def forward(self, x):
            if x.shape[0] > 2:  # the probe forward has 2 rows, a step's batch 2 neurons x 2 chains
                raise RuntimeError("boom in step")
            return x

    net = nn.Sequential(nn.Conv2d(1, 3, 3), FailsOnBigBatches(), nn.Conv2d(3, 2, 3))
    with pytest.raises(RuntimeError, match="boom in step"):
        ldam.sample(net, ["0:0", "2:1"], input_shape=INPUT_SHAPE, chains=2, steps=3)
    assert _no_hooks(net)


def test_user_hooks_are_kept_and_only_targets_are_hooked():
    net = _net()
    seen = []
    handle = net[0].register_forward_hook(lambda m, a, o: seen.append(o.shape[0]))
    try:
        ldam.sample(net, "3:0", input_shape=INPUT_SHAPE, chains=2, steps=2)
        assert list(net[0]._forward_hooks) == [handle.id]
        assert seen and all(not m._forward_hooks for i, m in enumerate(net) if i != 0)
    finally:
        handle.remove()


def test_activation_reader_reads_each_rows_own_neuron():
    net = nn.Sequential(nn.Conv2d(1, 3, 1, bias=False), nn.Flatten(), nn.Linear(3 * 4, 2, bias=False))
    with torch.no_grad():
        net[0].weight.copy_(torch.tensor([1.0, 2.0, 3.0]).view(3, 1, 1, 1))
    neurons = [("0", 2), ("2", 1), ("0", 0)]
    reader = ActivationReader(net, neurons, chains=2, spatial="mean")
    x = torch.arange(6, dtype=torch.float32).view(6, 1, 1, 1).expand(6, 1, 2, 2).contiguous()
    with reader.attached():
        got = reader(x)
    assert _no_hooks(net)
    lin = net(x)[:, 1]
    expected = torch.tensor([3 * 0.0, 3 * 1.0, lin[2].item(), lin[3].item(), 1 * 4.0, 1 * 5.0])
    torch.testing.assert_close(got, expected)


def _conv_relu_inplace_conv():
    """conv(0) - ReLU(inplace=True)(1) - conv(2), fixed weights: conv 0's channel 0 is negative everywhere."""
    net = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.ReLU(inplace=True), nn.Conv2d(2, 2, 3, padding=1))
    with torch.no_grad():
        net[0].weight.copy_(torch.tensor([1.0, -1.0]).view(2, 1, 1, 1).expand(2, 1, 3, 3) / 9)
        net[0].bias.copy_(torch.tensor([-2.0, 0.5]))
        net[2].weight.fill_(0.1)
        net[2].bias.zero_()
    return net.eval()


def _inputs():
    return torch.linspace(0.0, 1.0, 2 * 36).view(2, 1, 6, 6)


def test_a_target_keeps_its_output_when_a_later_in_place_op_runs_before_a_deeper_target():
    # torchvision ResNets' ReLU(inplace=True) overwrites the conv output that the shallower target captured
    net, x = _conv_relu_inplace_conv(), _inputs()
    with torch.no_grad():
        alone, whole = net[0](x), net(x)
    assert (alone < 0).any()
    with torch.no_grad(), capture_outputs(net, ["0", "2"]) as outputs:
        got = run_to_targets(net, x, outputs, ["0", "2"])
    torch.testing.assert_close(got["0"], alone)
    torch.testing.assert_close(got["2"], whole)


def test_the_gradient_through_a_shallower_target_ignores_a_later_in_place_op():
    net, x = _conv_relu_inplace_conv(), _inputs().requires_grad_(True)
    reader = ActivationReader(net, [("0", 0), ("2", 0)], chains=1)  # row 0 reads conv 0, row 1 conv 2
    with reader.attached():
        acts = reader(x)
    (grad,) = torch.autograd.grad(acts[0], x)
    alone = net[0](x)[0, 0].mean()
    (expected,) = torch.autograd.grad(alone, x)
    assert expected.abs().sum() > 0
    torch.testing.assert_close(grad, expected)
    torch.testing.assert_close(acts[0], alone.detach())
