"""The discriminator term: raises D's score, pulls samples toward the data, warm-starts."""
import copy
import re

import pytest
import torch
from torch import nn

import lightning_ldam as ldam
from lightning_ldam.sampling.config import DEFAULT_DISC_STEPS, DEFAULT_DISC_WEIGHT
from lightning_ldam.sampling.discriminator import (
    Discriminator,
    DiscriminatorTrainer,
    build_discriminator,
    restore_discriminator,
)

SHAPE = (1, 14, 14)


def _digit_net(seed=0):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return nn.Sequential(nn.Conv2d(1, 4, 3), nn.Tanh(), nn.Flatten(), nn.Linear(4 * 12 * 12, 10))


def _nearest_real_distance(images, real):
    """Mean over samples of the L2 distance to the nearest real image."""
    return torch.cdist(images.flatten(2).flatten(0, 1), real.flatten(1)).min(1).values.mean()


def _state(module):
    return {k: v.clone() for k, v in module.state_dict().items()}


@pytest.fixture(scope="module")
def trained(mnist_14):
    """A λ=2 run on real digits: its samples and its (co-trained) discriminator."""
    net = _digit_net()
    res = ldam.sample(net, "3:0-1", input_shape=SHAPE, chains=8, steps=20, real_data=mnist_14,
                      disc_weight=2.0, disc_warmup=20, seed=0)
    return net, res


def test_disc_weight_raises_the_score_of_a_fixed_discriminator(trained):
    net, res = trained
    judge = res.discriminator
    before = _state(judge)
    kwargs = dict(input_shape=SHAPE, chains=8, steps=20, discriminator=judge, seed=11)
    with_d = ldam.sample(net, "3:0-1", disc_weight=2.0, **kwargs)
    without_d = ldam.sample(net, "3:0-1", disc_weight=0.0, **kwargs)
    assert without_d.disc_scores is not None  # scored even with λ = 0
    assert with_d.disc_scores.shape == without_d.disc_scores.shape == (2, 8)
    assert with_d.disc_scores.mean() > without_d.disc_scores.mean() + 0.1
    # without real_data the given discriminator is only read, never trained
    assert all(torch.equal(v, judge.state_dict()[k]) for k, v in before.items())
    assert with_d.discriminator is judge


def test_disc_weight_pulls_samples_toward_the_real_images(trained, mnist_14):
    net, res = trained
    without_d = ldam.sample(net, "3:0-1", input_shape=SHAPE, chains=8, steps=20, real_data=mnist_14,
                            disc_weight=0.0, seed=0)
    assert without_d.discriminator is None and without_d.disc_scores is None  # λ = 0: no D is built
    near_with = _nearest_real_distance(res.images, mnist_14)
    assert near_with < 0.8 * _nearest_real_distance(without_d.images, mnist_14)


def test_warm_start_returns_the_same_discriminator_and_keeps_training_it(trained, mnist_14):
    net, res = trained
    disc = copy.deepcopy(res.discriminator)  # keep the module-scoped fixture's discriminator as it is
    before = _state(disc)
    again = ldam.sample(net, "3:2", input_shape=SHAPE, chains=4, steps=4, real_data=mnist_14,
                        discriminator=disc, seed=1)
    assert again.discriminator is disc
    assert again.config["disc_weight"] == DEFAULT_DISC_WEIGHT and again.config["disc_warmup"] == 0
    assert again.disc_scores.shape == (1, 4)
    with torch.no_grad():  # the warm D still tells real digits from the chains (≈0.9 vs ≈0.35), not just "in (0, 1)"
        real_scores = torch.sigmoid(disc.eval()(mnist_14[:256]))
    assert real_scores.mean() > again.disc_scores.max() + 0.3, (real_scores.mean(), again.disc_scores)
    assert any(not torch.equal(v, disc.state_dict()[k]) for k, v in before.items())  # trained further


def _squares(n, seed=0):
    """``n`` images of a bright 5x5 square at a random place on black: clearly not uniform noise."""
    g = torch.Generator().manual_seed(seed)
    real = torch.zeros(n, *SHAPE)
    for i in range(n):
        r, c = torch.randint(0, 9, (2,), generator=g).tolist()
        real[i, :, r:r + 5, c:c + 5] = 1.0
    return real


def test_discriminator_shapes_and_the_sampler_trains_it_to_tell_real_from_chains():
    for size in [(12, 12), (14, 14), (28, 28), (130, 100)]:
        d = build_discriminator(2, size, seed=0)
        assert d(torch.rand(3, 2, *size)).shape == (3,)
    real = _squares(64)
    res = ldam.sample(_digit_net(), "3:0", input_shape=SHAPE, chains=3, steps=3, real_data=real, disc_warmup=10)
    assert isinstance(res.discriminator, Discriminator)
    assert res.disc_scores.shape == (1, 3)
    # 10 warm-up updates (+2 in burn-in) on squares vs noise starts: D must separate them (an untrained D, or one
    # trained the wrong way round, scores both about 0.5), not merely return numbers in (0, 1).
    with torch.no_grad():
        real_scores = torch.sigmoid(res.discriminator.eval()(real))
    assert real_scores.min() > res.disc_scores.max() + 0.25, (real_scores.min(), res.disc_scores)
    assert real_scores.mean() > 0.75 and res.disc_scores.mean() < 0.5


def test_build_discriminator_is_seeded_and_leaves_the_global_rng_alone():
    state = torch.get_rng_state()
    a, b, c = build_discriminator(1, (14, 14), seed=3), build_discriminator(1, (14, 14), seed=3), \
        build_discriminator(1, (14, 14), seed=4)
    assert torch.equal(torch.get_rng_state(), state)
    assert all(torch.equal(v, b.state_dict()[k]) for k, v in a.state_dict().items())
    assert any(not torch.equal(v, c.state_dict()[k]) for k, v in a.state_dict().items())


def test_trainer_learns_to_separate_real_from_fake():
    g = torch.Generator().manual_seed(0)
    real = torch.zeros(64, *SHAPE)
    real[:, :, 4:10, 4:10] = 1.0  # a bright square on black
    fake = torch.rand(64, *SHAPE, generator=g)
    d = build_discriminator(1, SHAPE[1:], seed=0)
    trainer = DiscriminatorTrainer(d, real, g, lr=2e-3, batch_size=32)
    losses = [float(trainer.step(fake)) for _ in range(30)]
    assert losses[-1] < 0.5 * losses[0]
    assert all(p.grad is None for p in d.parameters())  # grads cleared after each update
    d.eval()
    with torch.no_grad():
        assert (trainer.log_prob(real) > trainer.log_prob(fake).max()).all()
    x = fake[:4].clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(trainer.log_prob(x).sum(), x)
    assert grad.shape == x.shape and grad.abs().sum() > 0


def test_square_patterns_attract_lambda_samples():
    """Structured real images (bright squares): λ > 0 samples end nearer to them than λ = 0 samples."""
    g = torch.Generator().manual_seed(0)
    real = torch.zeros(128, *SHAPE)
    for i in range(128):
        r, c = torch.randint(0, 9, (2,), generator=g).tolist()
        real[i, :, r:r + 5, c:c + 5] = 1.0
    net = _digit_net(1)
    kwargs = dict(input_shape=SHAPE, chains=8, steps=20, real_data=real, seed=2)
    with_d = ldam.sample(net, "3:4", disc_weight=2.0, disc_warmup=20, **kwargs)
    without_d = ldam.sample(net, "3:4", disc_weight=0.0, **kwargs)
    assert _nearest_real_distance(with_d.images, real) < 0.85 * _nearest_real_distance(without_d.images, real)


@pytest.mark.parametrize("channels, side", [(1, 12), (3, 16), (3, 128)])
def test_restore_rebuilds_the_discriminator_and_its_weights(channels, side):
    saved = build_discriminator(channels, (side, side), seed=3)
    restored = restore_discriminator(saved.state_dict(), channels, (side, side), seed=0)
    x = torch.rand(4, channels, side, side)
    saved.eval(), restored.eval()
    with torch.no_grad():
        assert torch.equal(saved(x), restored(x))


@pytest.mark.parametrize("other, differs", [(dict(width=8), "size mismatch for features.0."),
                                           (dict(colour_stats=False), 'Missing key(s) in state_dict: "stats.'),
                                           (dict(max_size=16), 'Missing key(s) in state_dict: "features.')])
def test_a_state_of_another_discriminator_is_refused_with_what_differs(other, differs):
    saved = build_discriminator(3, (32, 32), seed=0, **other)
    with pytest.raises(ValueError, match=r"^expected the state of a discriminator for 3x32x32 images as this version "
                                         r"builds it: Error\(s\) in loading state_dict.*" + re.escape(differs)):
        restore_discriminator(saved.state_dict(), 3, (32, 32))


def test_the_chains_noise_does_not_depend_on_the_discriminators_training():
    """Common random numbers: D's batch picks have their own generator, so a variant whose D gets 50 warm-up
    updates and one whose (given) D gets none draw the same starts and noise. At λ = 0 D never enters the drift,
    so their samples are identical; at λ > 0 their starting chains still are."""
    from helpers.models import INPUT_SHAPE, make_tiny_net

    real = torch.rand(32, *INPUT_SHAPE, generator=torch.Generator().manual_seed(0))
    kw = dict(input_shape=INPUT_SHAPE, chains=3, steps=12, real_data=real, seed=4)
    fresh = ldam.sample(make_tiny_net(), "classifier.2:0-1", disc_weight=0.0, disc_warmup=50,
                        discriminator=build_discriminator(1, (12, 12), seed=0), **kw)
    warm = ldam.sample(make_tiny_net(), "classifier.2:0-1", disc_weight=0.0, disc_warmup=0,
                       discriminator=build_discriminator(1, (12, 12), seed=0), **kw)
    torch.testing.assert_close(fresh.images, warm.images)
    with_d = [ldam.sample(make_tiny_net(), "classifier.2:0-1", disc_warmup=w, **kw) for w in (0, 50)]
    torch.testing.assert_close(with_d[0].trace[..., 0], with_d[1].trace[..., 0])
    assert not torch.equal(with_d[0].images, with_d[1].images)  # D (and so the drift) did differ


def test_colour_images_get_a_discriminator_that_reads_colour_statistics_and_grayscale_ones_do_not():
    grey, colour = build_discriminator(1, (14, 14), seed=0), build_discriminator(3, (14, 14), seed=0)
    assert grey.stats is None and grey.head.in_features == grey.features[-2].out_channels
    assert colour.stats is not None and colour.stats[0].in_features == 3 + 6  # mean colour + covariance triangle
    # the statistics pathway is live: the score depends on its weights
    x = torch.rand(2, 3, 14, 14, generator=torch.Generator().manual_seed(0))
    weight = colour.stats[0].parametrizations.weight.original
    (grad,) = torch.autograd.grad(colour.eval()(x).sum(), weight)
    assert grad.abs().sum() > 0


@pytest.mark.parametrize("channels", [1, 3, 4])
def test_the_default_lambda_and_d_updates_do_not_depend_on_the_channels(monkeypatch, channels):
    calls = []
    step = DiscriminatorTrainer.step
    monkeypatch.setattr(DiscriminatorTrainer, "step", lambda self, fake: calls.append(1) or step(self, fake))
    real = torch.rand(16, channels, 8, 8, generator=torch.Generator().manual_seed(0))
    net = nn.Sequential(nn.Conv2d(channels, 2, 3), nn.Flatten(), nn.Linear(2 * 36, 3))
    res = ldam.sample(net, "2:0", input_shape=(channels, 8, 8), chains=1, steps=6, real_data=real, disc_warmup=1)
    assert res.config["disc_weight"] == DEFAULT_DISC_WEIGHT == 1.0
    assert res.config["disc_steps"] == DEFAULT_DISC_STEPS == 2
    assert len(calls) == 1 + res.config["burn_in"] * DEFAULT_DISC_STEPS  # warm-up, then 2 per burn-in step


@pytest.mark.parametrize("method", ["langevin", "mala", "ascent"])
def test_d_updates_follow_disc_steps(monkeypatch, method):
    calls = []
    step = DiscriminatorTrainer.step
    monkeypatch.setattr(DiscriminatorTrainer, "step", lambda self, fake: calls.append(1) or step(self, fake))
    real = torch.rand(16, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    net = nn.Sequential(nn.Conv2d(3, 2, 3), nn.Flatten(), nn.Linear(2 * 36, 3))
    res = ldam.sample(net, "2:0", input_shape=(3, 8, 8), chains=1, steps=6, real_data=real, disc_warmup=1,
                      method=method, disc_steps=3)
    trained = res.config["steps"] if method == "ascent" else res.config["burn_in"]
    assert res.config["disc_steps"] == 3 and len(calls) == 1 + trained * 3


@pytest.mark.parametrize("channels", [1, 3, 4])
def test_d_looks_at_full_resolution_up_to_64_px_whatever_the_channels(channels):
    for side, factor in ((14, 1), (28, 1), (32, 1), (64, 1), (128, 2), (224, 4)):
        assert build_discriminator(channels, (side, side), seed=0).pool_factor == factor, side
    real = torch.rand(16, channels, 28, 28, generator=torch.Generator().manual_seed(0))
    net = nn.Sequential(nn.Conv2d(channels, 2, 3), nn.Flatten(), nn.Linear(2 * 26 * 26, 3))
    res = ldam.sample(net, "2:0", input_shape=(channels, 28, 28), chains=1, steps=2, real_data=real, disc_warmup=1)
    assert res.discriminator.pool_factor == 1  # what the sampler builds: the same rule
