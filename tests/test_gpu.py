"""CUDA checks: skipped cleanly on machines without a GPU (CI has none)."""
import pytest
import torch
from helpers.models import make_tiny_net

import lightning_ldam as ldam

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]

INPUT_SHAPE = (1, 12, 12)


def test_samples_on_the_models_cuda_device_and_leaves_it_untouched():
    net = make_tiny_net().cuda().train()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    res = ldam.sample(net, ["features.3:0-2", "classifier.2:all"], input_shape=INPUT_SHAPE, chains=4, steps=20,
                      real_data=torch.rand(64, *INPUT_SHAPE), disc_warmup=2)
    assert res.config["device"].startswith("cuda")
    assert res.images.device.type == "cpu" and torch.isfinite(res.images).all()
    assert all(m.training for m in net.modules())
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    assert next(res.discriminator.parameters()).is_cuda


def test_cuda_sampling_is_deterministic_for_a_seed():
    net = make_tiny_net().cuda().eval()
    a = ldam.sample(net, "classifier.2:0-1", input_shape=INPUT_SHAPE, chains=4, steps=15, seed=3)
    b = ldam.sample(net, "classifier.2:0-1", input_shape=INPUT_SHAPE, chains=4, steps=15, seed=3)
    c = ldam.sample(net, "classifier.2:0-1", input_shape=INPUT_SHAPE, chains=4, steps=15, seed=4)
    torch.testing.assert_close(a.images, b.images)
    assert not torch.equal(a.images, c.images)


def test_device_argument_moves_a_copy_not_the_callers_model():
    net = make_tiny_net().eval()
    res = ldam.sample(net, "classifier.2:0", input_shape=INPUT_SHAPE, chains=2, steps=5, device="cuda")
    assert res.config["device"].startswith("cuda")
    assert all(p.device.type == "cpu" for p in net.parameters())


def test_bf16_autocast_gives_finite_samples():
    net = make_tiny_net().cuda().eval()
    seen = []  # (rows, output dtype) of the last linear layer: bf16 for the sampling batches under autocast
    net.classifier[2].register_forward_hook(lambda m, a, o: seen.append((a[0].shape[0], o.dtype)))
    res = ldam.sample(net, "classifier.2:all", input_shape=INPUT_SHAPE, chains=4, steps=20,
                      autocast_dtype=torch.bfloat16)
    sampling = [dtype for rows, dtype in seen if rows == 5 * 4]
    assert len(sampling) >= 20 and all(d == torch.bfloat16 for d in sampling), sampling  # autocast really applied
    assert torch.isfinite(res.activations).all() and res.activations.dtype == torch.float32
    assert (res.activations.mean(1) > res.trace[:, :, 0].mean(1)).all()


@pytest.mark.parametrize("with_d", [False, True])
def test_cuda_graph_steps_sample_like_eager_steps(with_d):
    net = make_tiny_net().cuda().eval()
    kwargs = dict(input_shape=INPUT_SHAPE, chains=8, steps=40, seed=5)
    if with_d:
        kwargs.update(real_data=torch.rand(64, *INPUT_SHAPE), disc_warmup=2)
    eager = ldam.sample(net, ["features.3:0-2", "classifier.2:all"], **kwargs)
    graphed = ldam.sample(net, ["features.3:0-2", "classifier.2:all"], cuda_graph=True, **kwargs)
    again = ldam.sample(net, ["features.3:0-2", "classifier.2:all"], cuda_graph=True, **kwargs)
    torch.testing.assert_close(graphed.images, again.images)  # replays are deterministic for a seed
    assert torch.isfinite(graphed.images).all() and int(graphed.nonfinite_resets.sum()) == 0
    # every step wrote its own trace row (a stale device counter would leave rows unwritten or overwritten)
    assert (graphed.trace[..., -1].mean(1) > graphed.trace[..., 0].mean(1)).all()
    assert torch.isfinite(graphed.trace).all()
    # same dynamics: the chains climb as far as the eager ones
    gain_eager = (eager.activations - eager.trace[..., 0]).mean()
    gain_graph = (graphed.activations - graphed.trace[..., 0]).mean()
    assert gain_graph > 0.8 * gain_eager
