"""The callback's own EMA (``lightning_ldam.weights.ema.EMA``), without a Trainer."""
import copy
import pickle

import pytest
import torch
from torch import nn

from lightning_ldam.weights.ema import EMA


def _linear(seed: int = 0) -> nn.Linear:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return nn.Linear(3, 2)


def _weights(n: int):
    """``n`` known weight sets ``(weight, bias)``: w_1 .. w_n."""
    g = torch.Generator().manual_seed(1)
    return [(torch.randn(2, 3, generator=g), torch.randn(2, generator=g)) for _ in range(n)]


def _set(model: nn.Linear, w) -> None:
    with torch.no_grad():
        model.weight.copy_(w[0])
        model.bias.copy_(w[1])


@pytest.mark.parametrize("decay", [0.5, 0.9])
def test_weights_equal_the_closed_form_after_n_updates(decay):
    net = _linear()
    ema = EMA(net, decay=decay)
    ws = _weights(6)
    for t, w in enumerate(ws, start=1):
        _set(net, w)
        assert ema.update(net, step=t) is True
    # AveragedModel's first update copies w_1; every later one is avg <- d * avg + (1 - d) * w_t.
    n = len(ws)
    for i, name in enumerate(("weight", "bias")):
        expected = decay ** (n - 1) * ws[0][i]
        for t in range(2, n + 1):
            expected = expected + (1 - decay) * decay ** (n - t) * ws[t - 1][i]
        got = getattr(ema.module, name)
        torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-7)
        assert not torch.allclose(got, ws[-1][i])  # really an average, not the last weights
    assert int(ema.n_averaged) == n


def test_decay_zero_equals_the_current_weights():
    net = _linear()
    ema = EMA(net, decay=0.0)
    for t, w in enumerate(_weights(3), start=1):
        _set(net, w)
        ema.update(net, step=t)
        assert torch.equal(ema.module.weight, net.weight)
        assert torch.equal(ema.module.bias, net.bias)


def test_updates_only_on_due_steps_and_never_at_step_zero():
    net = _linear()
    ema = EMA(net, decay=0.5, every_n_steps=3)
    assert [ema.should_update(s) for s in range(8)] == [False, False, False, True, False, False, True, False]
    done = [ema.update(net, s) for s in range(8)]
    assert done == [False, False, False, True, False, False, True, False]
    assert int(ema.n_averaged) == 2


def test_average_is_a_frozen_independent_copy_and_leaves_the_model_alone():
    net = _linear().train()
    ema = EMA(net, decay=0.5)
    _set(net, _weights(1)[0])
    before = {k: v.clone() for k, v in net.state_dict().items()}
    ema.update(net, step=1)
    live = {p.data_ptr() for p in net.parameters()}
    assert not live & {t.data_ptr() for t in ema.module.state_dict().values()}
    assert all(not p.requires_grad for p in ema.module.parameters())
    assert not ema.module.training
    assert net.training and all(p.requires_grad for p in net.parameters())
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    assert all(p.grad is None for p in net.parameters())


def test_float_buffers_are_averaged():
    bn = nn.BatchNorm1d(2)
    ema = EMA(bn, decay=0.5)
    with torch.no_grad():
        bn.running_mean.fill_(2.0)
    ema.update(bn, step=1)  # first update copies
    with torch.no_grad():
        bn.running_mean.fill_(4.0)
    ema.update(bn, step=2)
    assert torch.equal(ema.module.running_mean, torch.full((2,), 3.0))


def test_integer_buffers_are_copied():
    bn = nn.BatchNorm1d(2).train()
    ema = EMA(bn, decay=0.5)
    g = torch.Generator().manual_seed(0)
    for step in range(1, 6):
        bn(torch.randn(4, 2, generator=g))
        ema.update(bn, step=step)
    assert int(bn.num_batches_tracked) == 5
    assert ema.module.num_batches_tracked.dtype == torch.long
    assert torch.equal(ema.module.num_batches_tracked, bn.num_batches_tracked)


def test_state_dict_round_trip():
    net = _linear()
    ema = EMA(net, decay=0.7)
    for t, w in enumerate(_weights(4), start=1):
        _set(net, w)
        ema.update(net, step=t)
    state = ema.state_dict()
    other = EMA(_linear(seed=5), decay=0.7)
    assert not torch.equal(other.module.weight, ema.module.weight)
    other.load_state_dict(state)
    assert int(other.n_averaged) == 4
    for k, v in ema.state_dict().items():
        assert torch.equal(other.state_dict()[k], v), k
    # and both keep averaging identically
    _set(net, _weights(5)[-1])
    ema.update(net, step=5)
    other.update(net, step=5)
    assert torch.equal(other.module.weight, ema.module.weight)


def test_deepcopy_keeps_the_average():
    net = _linear()
    ema = EMA(net, decay=0.5)
    ema.update(net, step=1)
    clone = copy.deepcopy(ema)
    assert torch.equal(clone.module.weight, ema.module.weight)
    assert clone.module.weight.data_ptr() != ema.module.weight.data_ptr()


def test_ema_is_picklable():
    net = _linear()
    ema = EMA(net, decay=0.5)
    ema.update(net, step=1)
    clone = pickle.loads(pickle.dumps(ema))
    assert torch.equal(clone.module.weight, ema.module.weight)
    assert int(clone.n_averaged) == 1


@pytest.mark.parametrize("kwargs, match", [
    ({"decay": 1.0}, r"^ema_decay: expected a float in \[0, 1\), got 1.0"),
    ({"decay": -0.1}, r"^ema_decay: .*got -0.1"),
    ({"decay": True}, r"^ema_decay: .*got True"),
    ({"decay": "0.9"}, r"^ema_decay: .*got '0.9'"),
    ({"every_n_steps": 0}, r"^ema_every_n_steps: .*got 0$"),
    ({"every_n_steps": 1.5}, r"^ema_every_n_steps: .*got 1.5$"),
    ({"decay": float("nan")}, r"^ema_decay: .*got nan"),
])
def test_bad_arguments_raise_naming_the_argument(kwargs, match):
    with pytest.raises(ValueError, match=match):
        EMA(_linear(), **kwargs)


def _bn_net(seed: int = 0) -> nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return nn.Sequential(nn.Conv2d(1, 3, 3), nn.BatchNorm2d(3), nn.ReLU(), nn.Flatten(), nn.Linear(48, 2))


def test_the_fast_update_matches_averaged_models_own_update():
    """Two foreach kernels on the model's device give what AveragedModel.update_parameters gives."""
    from torch.optim.swa_utils import AveragedModel

    from lightning_ldam.weights.ema import _EMAUpdate

    net = _bn_net()
    ema = EMA(net, decay=0.8)
    ref = AveragedModel(copy.deepcopy(net), multi_avg_fn=_EMAUpdate(0.8), use_buffers=True)
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    for step in range(1, 6):
        net.train()
        loss = net(torch.rand(4, 1, 6, 6)).square().mean()  # also moves BN's running stats and counter
        opt.zero_grad()
        loss.backward()
        opt.step()
        ema.update(net, step)
        ref.update_parameters(net)
    assert int(ema.n_averaged) == int(ref.n_averaged) == 5
    for (k, a), b in zip(ema.module.state_dict().items(), ref.module.state_dict().values()):
        assert torch.allclose(a, b, rtol=0, atol=1e-7), k
    assert int(ema.module[1].num_batches_tracked) == 5  # integers copied, not averaged


def test_the_update_issues_a_few_kernels_whatever_the_number_of_tensors():
    """Per-tensor work after every optimizer step is dispatcher (and, on a GPU, launch) overhead."""
    from torch.profiler import ProfilerActivity, profile

    net = nn.Sequential(*[nn.Sequential(nn.Conv2d(2, 2, 1), nn.BatchNorm2d(2)) for _ in range(20)])  # 140 tensors
    ema = EMA(net, decay=0.9)
    ema.update(net, 1)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        ema.update(net, 2)
    # top-level ops only: on a CPU the foreach ops loop over tensors inside (a GPU runs them as a few kernels)
    ops = [e.name for e in prof.events() if e.name.startswith("aten::")
           and (e.cpu_parent is None or not e.cpu_parent.name.startswith("aten::"))]
    assert ops.count("aten::_foreach_lerp_") == 1 and ops.count("aten::_foreach_copy_") == 1
    assert len(ops) < 10, ops


def test_the_update_follows_tensors_the_model_replaces():
    """The tensor lists are cached; a buffer swapped for a new object, or parameters recast, must be seen."""
    from torch.optim.swa_utils import AveragedModel

    from lightning_ldam.weights.ema import _EMAUpdate

    net = _bn_net()
    ema = EMA(net, decay=0.5)
    ref = AveragedModel(copy.deepcopy(net), multi_avg_fn=_EMAUpdate(0.5), use_buffers=True)
    for step in (1, 2):
        ema.update(net, step)
        ref.update_parameters(net)
    net[1].running_mean = torch.full((3,), 2.0)  # a new buffer object, as Module.to() makes
    with torch.no_grad():
        net[0].weight.data = net[0].weight.data + 1.0  # new storage under the same Parameter
    ema.update(net, 3)
    ref.update_parameters(net)
    for (k, a), b in zip(ema.module.state_dict().items(), ref.module.state_dict().values()):
        assert torch.allclose(a, b, rtol=0, atol=1e-7), k
    assert float(ema.module[1].running_mean[0]) > 0.5  # the new buffer's 2.0 came in


# ---- refresh_batchnorm ------------------------------------------------------------------------------
def _bn_first_net(dtype=torch.float32) -> nn.Module:
    """BatchNorm on the inputs themselves, so its running statistics are those of what the network sees."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        net = nn.Sequential(nn.BatchNorm2d(3), nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(),
                            nn.Linear(64, 2))
    return net.to(dtype).eval()


def _pixels(n: int = 24) -> torch.Tensor:
    """Pixel images in [0, 1] whose channels differ (means about 0.25, 0.5, 0.75)."""
    g = torch.Generator().manual_seed(0)
    return (torch.rand(n, 3, 6, 6, generator=g) * 0.5 + torch.tensor([0.0, 0.25, 0.5]).view(1, 3, 1, 1))


@pytest.mark.parametrize("normalize", [(0.5, 0.25), ((0.4, 0.5, 0.6), (0.2, 0.25, 0.5))],
                         ids=["scalar", "per-channel"])
def test_refresh_batchnorm_recomputes_statistics_of_the_normalised_inputs(normalize):
    from lightning_ldam.weights.ema import refresh_batchnorm

    net, x = _bn_first_net(), _pixels()
    net[0].momentum = 0.3
    refresh_batchnorm(net, x, batch_size=8, normalize=normalize)
    mean, std = (torch.as_tensor(v, dtype=torch.float32).view(-1, 1, 1) for v in normalize)
    seen = (x - mean) / std
    # momentum=None: the cumulative average of three equal batches' statistics (unbiased variances)
    expected_var = torch.stack([b.var(dim=(0, 2, 3)) for b in seen.split(8)]).mean(0)
    torch.testing.assert_close(net[0].running_mean, seen.mean(dim=(0, 2, 3)), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(net[0].running_var, expected_var, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(net[0].running_mean, x.mean(dim=(0, 2, 3)), atol=0.1)  # not the raw pixels'
    assert not net.training and net[0].momentum == 0.3 and net[2].momentum == 0.1


@pytest.mark.parametrize("normalize", [None, (0.5, 0.25)], ids=["raw", "normalized"])
@pytest.mark.parametrize("model_dtype, input_dtype", [(torch.bfloat16, torch.float32),
                                                      (torch.float32, torch.float64)], ids=["bf16", "f64-inputs"])
def test_refresh_batchnorm_casts_the_inputs_to_the_models_dtype(model_dtype, input_dtype, normalize):
    """A bf16 model (or float64 inputs) must not fail on a dtype mismatch, and must get float32's statistics
    up to its precision."""
    from lightning_ldam.weights.ema import refresh_batchnorm

    x = _pixels()
    reference, net = _bn_first_net(), _bn_first_net(model_dtype)
    kwargs = {} if normalize is None else {"normalize": normalize}
    refresh_batchnorm(reference, x, batch_size=8, **kwargs)
    refresh_batchnorm(net, x.to(input_dtype), batch_size=8, **kwargs)
    tol = 2e-2 if model_dtype == torch.bfloat16 else 1e-5
    for i in (0, 2):  # on the inputs, and after a bf16 convolution
        for name in ("running_mean", "running_var"):
            got = getattr(net[i], name)
            assert got.dtype == model_dtype
            torch.testing.assert_close(got.float(), getattr(reference[i], name), rtol=tol, atol=tol)
    assert int(net[0].num_batches_tracked) == 3 and not net.training


@pytest.mark.parametrize("kwargs, match", [
    ({"normalize": (0.5, (0.2, 0.3))}, r"^normalize: std must have 1 or 3 \(channels\) values"),
    ({"normalize": (0.5, 0.0)}, r"^normalize: std must be finite and > 0"),
    ({"normalize": 0.5}, r"^normalize: expected \(mean, std\)"),
    ({"batch_size": 0}, r"^batch_size: expected a finite int > 0, got 0$"),
])
def test_refresh_batchnorm_bad_arguments_name_the_argument(kwargs, match):
    from lightning_ldam.errors import LDAMArgumentError
    from lightning_ldam.weights.ema import refresh_batchnorm

    net = _bn_first_net()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    with pytest.raises(LDAMArgumentError, match=match):
        refresh_batchnorm(net, _pixels(), **kwargs)
    assert all(torch.equal(v, before[k]) for k, v in net.state_dict().items())  # checked before any change


def test_averaging_docstring_examples_run():
    import doctest

    from lightning_ldam.weights import ema as averaging

    results = doctest.testmod(averaging, optionflags=doctest.NORMALIZE_WHITESPACE, verbose=False)
    assert results.attempted > 0 and results.failed == 0
