"""Speed options of ``ldam.sample`` (bf16 autocast, channels_last): same answers, model left as found."""
import pytest
import torch
from helpers.models import INPUT_SHAPE, make_tiny_net

import lightning_ldam as ldam

KW = dict(input_shape=INPUT_SHAPE, chains=3, steps=4, seed=1)


def test_channels_last_gives_the_same_samples_and_restores_the_model_layout():
    net = make_tiny_net()
    before = {n: (t.data_ptr(), t.stride(), t.clone()) for n, t in net.state_dict(keep_vars=True).items()}
    ref = ldam.sample(net, ["features.0:0-1", "classifier.2:all"], **KW)
    res = ldam.sample(net, ["features.0:0-1", "classifier.2:all"], channels_last=True, **KW)
    assert torch.allclose(res.images, ref.images, atol=1e-5)
    assert torch.allclose(res.activations, ref.activations, rtol=1e-4, atol=1e-5)
    for n, t in net.state_dict(keep_vars=True).items():
        ptr, stride, value = before[n]
        assert (t.data_ptr(), t.stride()) == (ptr, stride), n  # the original storage is back
        assert torch.equal(t, value), n
    assert net.training  # modes restored too


def test_channels_last_converts_the_conv_weights_during_sampling():
    net = make_tiny_net()
    seen = []
    conv = net.features[3]  # 4 -> 6 channels: NCHW and NHWC strides differ (a 1-channel kernel has both)
    conv.register_forward_hook(lambda m, a, o: seen.append(m.weight.is_contiguous(memory_format=torch.channels_last)))
    ldam.sample(net, "classifier.2:0", channels_last=True, **KW)
    assert seen and all(seen[1:])  # the first call is the layer probe, before sampling
    assert not conv.weight.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("autocast_dtype, compute_dtype", [(torch.bfloat16, torch.bfloat16), (None, torch.float32)],
                         ids=["bf16", "off"])
def test_autocast_runs_the_models_layers_in_the_compute_dtype_on_cpu(autocast_dtype, compute_dtype):
    """The conv and linear layers see (and return) bf16 under autocast, float32 without: a sampler that ignored
    ``autocast_dtype`` would still give finite float32 samples, so finiteness alone cannot tell."""
    net = make_tiny_net()
    seen = []
    for path in ("features.0", "classifier.2"):
        module = net.get_submodule(path)
        module.register_forward_hook(lambda m, a, o, path=path: seen.append((path, a[0].shape[0], o.dtype)))
    res = ldam.sample(net, "classifier.2:all", autocast_dtype=autocast_dtype, **KW)
    batch = 5 * KW["chains"]  # every chain of the 5 neurons in one forward (the 1-image layer probe aside)
    sampling = [(path, dtype) for path, rows, dtype in seen if rows == batch]
    assert len(sampling) >= 2 * KW["steps"]  # both layers, at every step (and the final read-out)
    assert all(dtype == compute_dtype for _, dtype in sampling), sampling
    assert torch.isfinite(res.images).all() and torch.isfinite(res.activations).all()
    assert res.images.dtype == res.activations.dtype == torch.float32  # chains stay float32 whatever the compute


@pytest.mark.parametrize("value", ["yes", 1, None])
def test_bad_channels_last_raises_naming_the_argument(value):
    with pytest.raises(TypeError, match=rf"^channels_last: expected True or False, got {value!r}$"):
        ldam.sample(make_tiny_net(), "classifier.2:0", channels_last=value, **KW)


# ---- cuda_graph: the graph form of the step runs eagerly here; the capture itself is tested in test_gpu.py -----
class _EagerGraphForm:
    """Stands in for the CUDA graph: runs the graph form of the step (device counter, tables) eagerly."""

    def __init__(self, step, generator, device):
        self.step = step

    def __call__(self):
        self.step(None)


@pytest.fixture
def graph_form_on_cpu(monkeypatch):
    from lightning_ldam.sampling import loop

    monkeypatch.setattr(loop, "graphs_supported", lambda device: True)
    monkeypatch.setattr(loop, "GraphedStep", _EagerGraphForm)


@pytest.mark.parametrize("kw", [{"method": "langevin"}, {"method": "mala"},
                                {"method": "ascent", "precondition": "rms"},
                                {"method": "ascent", "precondition": "psgld"},
                                {"method": "ascent", "precondition": "none"}], ids=lambda kw: "-".join(kw.values()))
def test_the_graph_form_of_the_step_gives_the_eager_samples(graph_form_on_cpu, kw):
    spec = ["features.0:0-1", "classifier.2:all"]
    kwargs = dict(KW, steps=12, **kw)
    ref = ldam.sample(make_tiny_net(), spec, **kwargs)
    res = ldam.sample(make_tiny_net(), spec, cuda_graph=True, **kwargs)
    torch.testing.assert_close(res.images, ref.images, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(res.trace, ref.trace, atol=1e-5, rtol=1e-4)  # every row written at its step
    assert not torch.equal(res.trace[..., 0], res.trace[..., -1])


def test_the_graph_form_resets_nonfinite_chains(graph_form_on_cpu):
    from helpers.nan_models import NaNChannel
    from torch import nn

    net = nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.Tanh(), NaNChannel(bad=1))
    res = ldam.sample(net, "2:0-2", input_shape=INPUT_SHAPE, chains=3, steps=6, cuda_graph=True)
    assert res.nonfinite_resets.tolist() == [0, 18, 0]
    assert torch.isfinite(res.images).all()


def test_cuda_graph_needs_a_cuda_device():
    with pytest.raises(ValueError, match=r"^cuda_graph: CUDA graphs need a CUDA device; sampling runs on cpu"):
        ldam.sample(make_tiny_net(), "classifier.2:0", cuda_graph=True, **KW)


@pytest.mark.parametrize("value", ["yes", 1, None])
def test_bad_cuda_graph_raises_naming_the_argument(value):
    with pytest.raises(TypeError, match=rf"^cuda_graph: expected True or False, got {value!r}$"):
        ldam.sample(make_tiny_net(), "classifier.2:0", cuda_graph=value, **KW)
