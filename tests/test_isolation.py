"""sample() leaves the model, the global RNG and the grad mode exactly as found; it is deterministic."""
import random

import numpy as np
import pytest
import torch
from helpers.models import INPUT_SHAPE, make_tiny_net

import lightning_ldam as ldam

SPEC = ["classifier.2:0", "features.3:1", "features.0:2"]


def _snapshot(model):
    return {
        "modes": {name: m.training for name, m in model.named_modules()},
        "requires_grad": {name: p.requires_grad for name, p in model.named_parameters()},
        "grads": {name: None if p.grad is None else p.grad.clone() for name, p in model.named_parameters()},
        "grad_objects": {name: p.grad for name, p in model.named_parameters()},
        "state": {k: v.clone() for k, v in model.state_dict().items()},
        "bn": [(m.momentum, m.eps, m.track_running_stats) for m in model.modules()
               if isinstance(m, torch.nn.BatchNorm2d)],
    }


def _assert_same(before, model):
    after = _snapshot(model)
    assert after["modes"] == before["modes"]
    assert after["requires_grad"] == before["requires_grad"]
    assert after["bn"] == before["bn"]
    for name, g in before["grads"].items():
        got = after["grads"][name]
        if g is None:
            assert got is None, f"{name}.grad was None, now set"
        else:
            assert got is not None and torch.equal(got, g), f"{name}.grad changed"
            assert after["grad_objects"][name] is before["grad_objects"][name]
    assert after["state"].keys() == before["state"].keys()
    for k, v in before["state"].items():
        assert torch.equal(after["state"][k], v), f"state_dict[{k!r}] changed"
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())


@pytest.fixture
def prepared_net():
    """Train mode; BN ``features.1`` frozen in eval mode; one frozen parameter; known grads (as if
    mid-accumulation), one left None."""
    net = make_tiny_net()
    net.features[1].eval()
    net.features[0].bias.requires_grad_(False)
    g = torch.Generator().manual_seed(7)
    for name, p in net.named_parameters():
        if name != "classifier.2.bias" and p.requires_grad:  # classifier.2.bias keeps grad None
            p.grad = torch.randn(p.shape, generator=g)
    return net


@pytest.mark.parametrize("extra", [
    {},
    {"real_data": "real", "disc_weight": 1.0, "disc_warmup": 2},
    {"real_data": "real", "init": "data", "disc_weight": 0.0, "normalize": (0.5, 0.5), "method": "mala"},
    {"method": "ascent", "precondition": "psgld"},
    {"real_data": "real", "disc_weight": 1.0, "disc_warmup": 2, "method": "hmc", "leapfrog_steps": 3},
], ids=["plain", "discriminator", "init-data-mala", "ascent", "hmc"])
def test_model_is_left_exactly_as_found(prepared_net, extra):
    extra = {k: (torch.rand(16, *INPUT_SHAPE) if v == "real" else v) for k, v in extra.items()}
    before = _snapshot(prepared_net)
    assert before["modes"][""] is True and before["modes"]["features.1"] is False
    assert before["requires_grad"]["features.0.bias"] is False
    assert before["grads"]["classifier.2.bias"] is None and before["grads"]["classifier.2.weight"] is not None
    assert int(before["state"]["features.1.num_batches_tracked"]) > 0
    ldam.sample(prepared_net, SPEC, input_shape=INPUT_SHAPE, chains=3, steps=6, **extra)
    _assert_same(before, prepared_net)


def test_model_is_left_as_found_when_its_forward_raises_mid_sampling(prepared_net):
    class FailsOnBigBatches(torch.nn.Module):
        def forward(self, x):
            if x.shape[0] > 2:  # the two-image probe forward passes; sampling batches (3 chains) fail
                raise RuntimeError("boom")
            return x

    prepared_net.features.insert(0, FailsOnBigBatches())
    before = _snapshot(prepared_net)
    with pytest.raises(RuntimeError, match="boom"):
        ldam.sample(prepared_net, "features.4:1", input_shape=INPUT_SHAPE, chains=3, steps=4)
    _assert_same(before, prepared_net)


def _rng_states():
    return torch.get_rng_state(), np.random.get_state(), random.getstate()


@pytest.mark.parametrize("extra", [
    {},
    {"real_data": True, "disc_weight": 1.0, "disc_warmup": 3},
    {"real_data": True, "init": "data", "disc_weight": 0.0},
    {"real_data": True, "init": "data", "disc_warmup": 2},
], ids=["plain", "discriminator", "init-data", "init-data-discriminator"])
def test_global_rng_untouched(tiny_net, extra):
    if extra.get("real_data"):
        extra = {**extra, "real_data": torch.rand(16, *INPUT_SHAPE)}
    torch.manual_seed(1234)
    np.random.seed(1234)
    random.seed(1234)
    torch_state, np_state, py_state = _rng_states()
    ldam.sample(tiny_net, SPEC, input_shape=INPUT_SHAPE, chains=3, steps=5, **extra)
    torch_after, np_after, py_after = _rng_states()
    assert torch.equal(torch_after, torch_state)
    assert np_after[0] == np_state[0] and np.array_equal(np_after[1], np_state[1])
    assert np_after[2:] == np_state[2:]
    assert py_after == py_state
    # and the global stream continues exactly as it would have without the call
    torch.manual_seed(1234)
    expected_next = torch.rand(3)
    torch.set_rng_state(torch_after)
    assert torch.equal(torch.rand(3), expected_next)


def test_global_rng_untouched_with_a_given_discriminator(tiny_net):
    real = torch.rand(16, *INPUT_SHAPE)
    first = ldam.sample(tiny_net, SPEC, input_shape=INPUT_SHAPE, chains=2, steps=3, real_data=real,
                        disc_warmup=2)
    state = torch.get_rng_state()
    ldam.sample(tiny_net, SPEC, input_shape=INPUT_SHAPE, chains=2, steps=3, real_data=real,
                discriminator=first.discriminator)
    assert torch.equal(torch.get_rng_state(), state)


def _run(net, seed, **extra):
    return ldam.sample(net, SPEC, input_shape=INPUT_SHAPE, chains=3, steps=6, seed=seed, **extra)


@pytest.mark.parametrize("with_disc", [False, True], ids=["plain", "discriminator"])
def test_same_seed_same_images_other_seed_other_images(tiny_net, with_disc):
    extra = {"real_data": torch.rand(16, *INPUT_SHAPE), "disc_warmup": 3} if with_disc else {}
    a, b = _run(tiny_net, 5, **extra), _run(tiny_net, 5, **extra)
    c = _run(tiny_net, 6, **extra)
    assert torch.equal(a.images, b.images)
    assert torch.equal(a.activations, b.activations) and torch.equal(a.trace, b.trace)
    assert not torch.equal(a.images, c.images)
    assert (a.images - c.images).abs().mean() > 0.05
    if with_disc:
        assert torch.equal(a.disc_scores, b.disc_scores)
        assert a.discriminator is not b.discriminator
        for (k, va), vb in zip(a.discriminator.state_dict().items(), b.discriminator.state_dict().values()):
            assert torch.equal(va, vb), k
        assert not torch.equal(a.disc_scores, c.disc_scores)


def test_determinism_does_not_depend_on_the_global_seed(tiny_net):
    torch.manual_seed(0)
    a = _run(tiny_net, 3)
    torch.manual_seed(99)
    torch.rand(10)
    b = _run(tiny_net, 3)
    assert torch.equal(a.images, b.images)


def test_deterministic_algorithms_mode(tiny_net):
    torch.use_deterministic_algorithms(True)  # the hygiene fixture switches it back off
    a, b = _run(tiny_net, 2), _run(tiny_net, 2)
    assert torch.equal(a.images, b.images)


@pytest.mark.parametrize("context", ["no_grad", "inference_mode", "enable_grad"])
@pytest.mark.parametrize("with_disc", [False, True], ids=["plain", "discriminator"])
def test_works_in_every_grad_context(tiny_net, context, with_disc):
    extra = {"real_data": torch.rand(16, *INPUT_SHAPE), "disc_warmup": 2} if with_disc else {}
    reference = _run(tiny_net, 1, **extra)
    ctx = getattr(torch, context)
    with ctx():
        grad_mode, inference = torch.is_grad_enabled(), torch.is_inference_mode_enabled()
        res = _run(tiny_net, 1, **extra)
        assert torch.is_grad_enabled() == grad_mode
        assert torch.is_inference_mode_enabled() == inference
    assert torch.is_grad_enabled() and not torch.is_inference_mode_enabled()
    assert torch.isfinite(res.images).all()
    assert torch.equal(res.images, reference.images)  # the context changes nothing about the result
    assert res.activations.mean() > res.trace[..., 0].mean()
    assert not res.images.is_inference()


def test_normalize_works_under_inference_mode(tiny_net):
    reference = _run(tiny_net, 1, normalize=(0.5, 0.25))
    with torch.inference_mode():
        res = _run(tiny_net, 1, normalize=(0.5, 0.25))
    assert torch.equal(res.images, reference.images)
