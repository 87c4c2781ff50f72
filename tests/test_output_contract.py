"""What sample() returns: shapes, order, box, and activations that match an independent evaluation."""
import pytest
import torch
from helpers.models import INPUT_SHAPE, make_tiny_net, neuron_activations

import lightning_ldam as ldam

CHAINS, STEPS = 3, 8


@pytest.mark.parametrize("value_range", [(0.0, 1.0), (-1.0, 1.0), (0.0, 255.0)])
def test_shapes_box_and_order(tiny_net, value_range):
    spec = ["classifier.2:3", "features.0:all", ("features.3", 5), "classifier.2:0"]
    res = ldam.sample(tiny_net, spec, input_shape=INPUT_SHAPE, chains=CHAINS, steps=STEPS,
                      value_range=value_range)
    expected = [("classifier.2", 3), ("features.0", 0), ("features.0", 1), ("features.0", 2),
                ("features.0", 3), ("features.3", 5), ("classifier.2", 0)]
    n = len(expected)
    assert res.neurons == expected
    assert res.images.shape == (n, CHAINS, *INPUT_SHAPE)
    assert res.activations.shape == (n, CHAINS)
    assert res.trace.shape == (n, CHAINS, STEPS)
    assert res.nonfinite_resets.shape == (n,) and int(res.nonfinite_resets.sum()) == 0
    assert res.disc_scores is None and res.discriminator is None
    assert res.mean_images.shape == res.std_images.shape == (n, *INPUT_SHAPE)
    assert res.diversity.shape == (n,)
    assert res.value_range == value_range
    assert all(t.device.type == "cpu" for t in (res.images, res.activations, res.trace))

    lo, hi = value_range
    assert res.images.min() >= lo and res.images.max() <= hi
    # The box is kept by reflecting a step that leaves it back off the wall, so a chain is (almost) never exactly
    # on a wall; a clamp (or no box and the final clamp of the result) piles every overshooting pixel onto one.
    # (The min/max check above cannot tell them apart: the returned images are clamped whatever the chains did.)
    at_wall = ((res.images == lo) | (res.images == hi)).float().mean().item()
    assert at_wall < 0.002, f"{at_wall:.2%} of the pixels sit exactly on a wall: clamped, not reflected"
    # the images fill the box (not stuck near one value): uniform init spans it
    assert res.images.min() < lo + 0.2 * (hi - lo) and res.images.max() > hi - 0.2 * (hi - lo)
    assert torch.isfinite(res.trace).all() and torch.isfinite(res.activations).all()

    torch.testing.assert_close(res.mean_images, res.images.mean(1))
    torch.testing.assert_close(res.std_images, res.images.std(1, unbiased=False))
    flat = res.images.flatten(2)
    pairwise = torch.stack([torch.cdist(f, f).sum() / (CHAINS * (CHAINS - 1)) for f in flat])
    torch.testing.assert_close(res.diversity, pairwise)
    # Known case: independent uniform starts in a d-pixel box lie (hi − lo)·√(d/6) apart on average, and 8 short
    # steps do not pull them together. Chains that shared a start (or moved as one) would be ~100x closer.
    d = flat.shape[-1]
    uniform_pairs = (hi - lo) * (d / 6) ** 0.5
    assert ((res.diversity > 0.85 * uniform_pairs) & (res.diversity < 1.15 * uniform_pairs)).all(), \
        (res.diversity / uniform_pairs).tolist()


@pytest.mark.parametrize("value_range", [(0.0, 1.0), (-1.0, 1.0), (0.0, 255.0)])
@pytest.mark.parametrize("spatial", ["mean", "center"])
def test_each_chain_activation_matches_an_independent_evaluation(tiny_net, value_range, spatial):
    # layers interleaved in the spec, so each layer's chains are not one contiguous block of the batch
    spec = ["features.3:1", "classifier.2:2", "features.0:0", ("features.3", 4), "classifier.2:0", "features.0:1"]
    res = ldam.sample(tiny_net, spec, input_shape=INPUT_SHAPE, chains=CHAINS, steps=STEPS,
                      value_range=value_range, spatial=spatial)
    assert res.neurons == [("features.3", 1), ("classifier.2", 2), ("features.0", 0), ("features.3", 4),
                           ("classifier.2", 0), ("features.0", 1)]
    if spatial == "mean":
        expected = neuron_activations(tiny_net, res.images, res.neurons)
    else:  # the centre unit of each conv channel
        expected = _center_activations(tiny_net, res.images, res.neurons)
    torch.testing.assert_close(res.activations, expected, rtol=1e-4, atol=1e-4)
    # neurons of one layer really differ (each chain read its own neuron, not a shared one)
    other_neuron = neuron_activations(tiny_net, res.images[:1], [("features.3", 4)])[0]
    assert not torch.allclose(res.activations[0], other_neuron)


def _center_activations(model, images, neurons):
    out = torch.empty(images.shape[:2])
    modules = dict(model.named_modules())
    model.eval()
    for k, (path, index) in enumerate(neurons):
        captured = {}
        h = modules[path].register_forward_hook(lambda m, a, o, c=captured: c.setdefault("o", o))
        with torch.no_grad():
            model(images[k])
        h.remove()
        act = captured["o"][:, index]
        while act.dim() > 1:
            act = act.select(1, act.shape[1] // 2)
        out[k] = act
    model.train()
    return out


def test_single_chain_has_zero_diversity(tiny_net):
    res = ldam.sample(tiny_net, "classifier.2:0", input_shape=INPUT_SHAPE, chains=1, steps=3)
    assert res.images.shape == (1, 1, *INPUT_SHAPE)
    assert torch.equal(res.diversity, torch.zeros(1))
    assert torch.equal(res.std_images, torch.zeros(1, *INPUT_SHAPE))


def test_layer_slice_and_repr(tiny_net):
    res = ldam.sample(tiny_net, ["classifier.2:0", "features.0:1", "classifier.2:4"], input_shape=INPUT_SHAPE,
                      chains=2, steps=3)
    assert res.layer_slice("classifier.2") == [0, 2]
    assert res.layer_slice("features.0") == [1]
    assert "neurons=3, chains=2" in repr(res)
    assert res.config["steps"] == 3 and res.config["chains"] == 2 and res.config["seed"] == 0


@pytest.mark.parametrize("normalize", [(0.5, 0.25), ([0.2, 0.5, 0.8], [0.3, 0.2, 0.1])],
                         ids=["scalar", "per-channel"])
def test_normalize_samples_in_pixel_space_and_feeds_normalised_inputs(normalize):
    net = make_tiny_net(act=torch.nn.Tanh, in_channels=3)
    shape = (3, 12, 12)
    lo, hi = 0.0, 1.0
    res = ldam.sample(net, ["features.3:2", "classifier.2:1"], input_shape=shape, chains=CHAINS, steps=STEPS,
                      normalize=normalize, value_range=(lo, hi))
    assert res.images.shape == (2, CHAINS, *shape)
    assert res.images.min() >= lo and res.images.max() <= hi
    # pixel space: normalised chains would reach well below 0 and above 1
    assert res.images.min() < 0.1 and res.images.max() > 0.9
    mean = torch.as_tensor(normalize[0], dtype=torch.float32).view(-1, 1, 1)
    std = torch.as_tensor(normalize[1], dtype=torch.float32).view(-1, 1, 1)
    expected = neuron_activations(net, res.images, res.neurons, normalize=(mean, std))
    torch.testing.assert_close(res.activations, expected, rtol=1e-4, atol=1e-4)
    unnormalised = neuron_activations(net, res.images, res.neurons)
    assert not torch.allclose(res.activations, unnormalised, rtol=1e-2, atol=1e-2)


@pytest.mark.parametrize("value_range", [(0.0, 1.0), (0.0, 255.0)])
def test_init_data_starts_from_real_images(tiny_net, value_range):
    lo, hi = value_range
    g = torch.Generator().manual_seed(0)
    real = lo + (hi - lo) * torch.rand(6, *INPUT_SHAPE, generator=g)
    res = ldam.sample(tiny_net, ["classifier.2:1", "features.3:0"], input_shape=INPUT_SHAPE, chains=4,
                      steps=1, step_size=1e-6, init="data", real_data=real, disc_weight=0.0,
                      value_range=value_range)
    dist = torch.cdist(res.images.flatten(2).flatten(0, 1), real.flatten(1))  # [8 chains, 6 real]
    nearest = dist.min(1).values
    assert nearest.max() < 1e-3 * (hi - lo) * 12  # every chain is (almost) exactly a real image
    # and the real image nearest to a chain is far from the others: they really are copies, not blurs
    assert (dist.sort(1).values[:, 1] > 1.0 * (hi - lo)).all()


def test_init_data_accepts_an_iterable_of_batches(tiny_net):
    real = torch.rand(6, *INPUT_SHAPE)
    batches = [(real[:3], torch.zeros(3)), {"image": real[3:5]}, real[5]]  # (x, y), dict and a single image
    res = ldam.sample(tiny_net, "classifier.2:1", input_shape=INPUT_SHAPE, chains=5, steps=1, step_size=1e-6,
                      init="data", real_data=batches, disc_weight=0.0)
    nearest = torch.cdist(res.images.flatten(2)[0], real.flatten(1)).min(1).values
    assert nearest.max() < 1e-3


@pytest.mark.parametrize("steps", [1, 6])
def test_step_seconds_times_the_steps_inside_the_call(tiny_net, monkeypatch, steps):
    """step_seconds covers the steps after the first (or the only one), none of the setup around them."""
    from lightning_ldam.sampling import loop

    ticks = []
    real = loop.synchronized_clock

    def clock(device):
        ticks.append(real(device))
        return ticks[-1]

    monkeypatch.setattr(loop, "synchronized_clock", clock)
    res = ldam.sample(tiny_net, "classifier.2:0-1", input_shape=INPUT_SHAPE, chains=2, steps=steps)
    assert len(ticks) == 2  # once before the first timed step, once after the last
    timed = steps - 1 if steps > 1 else 1
    assert res.step_seconds == pytest.approx((ticks[1] - ticks[0]) / timed)
    assert 0 < res.step_seconds * timed < res.seconds


def test_progress_bar_stays_silent_when_stderr_is_not_a_terminal(tiny_net, capsys):
    """Under pytest stderr is captured (not a TTY): a progress=True call must not print bar refreshes."""
    ldam.sample(tiny_net, "classifier.2:0", input_shape=INPUT_SHAPE, chains=2, steps=5, progress=True)
    assert "LDAM" not in capsys.readouterr().err

