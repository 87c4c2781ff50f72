"""Langevin dynamics: the ascent climbs without noise, activation goes up, non-finite chains reset."""
import logging

import pytest
import torch
from helpers.models import INPUT_SHAPE
from helpers.nan_models import NaNChannel
from torch import nn

import lightning_ldam as ldam

TARGETS = {"linear": "classifier.2:0-1", "conv-channel": "features.3:2-3"}


@pytest.mark.parametrize("target", list(TARGETS), ids=list(TARGETS))
@pytest.mark.parametrize("precondition", ["rms", "none"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_noise_free_small_steps_never_decrease_the_activation(smooth_net, target, precondition, seed):
    res = ldam.sample(smooth_net, TARGETS[target], input_shape=INPUT_SHAPE, chains=4, steps=25, noise=0.0,
                      step_size=0.01, schedule="constant", precondition=precondition, seed=seed, method="ascent")
    path = torch.cat([res.trace, res.activations.unsqueeze(-1)], dim=-1)  # [n, c, steps + 1]
    diffs = path.diff(dim=-1)
    tol = 1e-5 * path[..., 1:].abs() + 1e-6
    assert (diffs >= -tol).all(), f"activation fell by {(-diffs).max().item():.3g}"
    assert (path[..., -1] > path[..., 0]).all()  # and it did climb


@pytest.mark.parametrize("method", ["langevin", "mala", "hmc", "ascent"])
def test_activation_goes_up_with_default_settings(tiny_net, method):
    res = ldam.sample(tiny_net, ["classifier.2:0-4", "features.3:0-1", "features.0:2"],
                      input_shape=INPUT_SHAPE, chains=4, steps=40, method=method)
    initial = res.trace[..., 0]
    assert (res.activations.mean(1) > initial.mean(1)).all()
    assert (res.activations > initial).float().mean() > 0.9


@pytest.mark.parametrize("precondition", ["rms", "psgld", "none"])
def test_every_preconditioner_climbs(tiny_net, precondition):
    res = ldam.sample(tiny_net, "classifier.2:0-1", input_shape=INPUT_SHAPE, chains=4, steps=30,
                      precondition=precondition, method="ascent")
    assert torch.isfinite(res.images).all()
    assert res.activations.mean() > res.trace[..., 0].mean()


class NaNAbove(nn.Module):
    """NaN for every image whose mean pixel exceeds ``threshold`` (a region chains can climb into)."""

    def __init__(self, threshold: float):
        super().__init__()
        self.threshold = threshold

    def forward(self, x):
        hot = x.flatten(1).mean(1) > self.threshold
        return torch.where(hot.view(-1, *([1] * (x.dim() - 1))), torch.full_like(x, float("nan")), x)


def test_always_nan_neuron_is_reset_every_step_others_untouched(caplog):
    net = nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.Tanh(), NaNChannel(bad=1))
    steps, chains = 6, 3
    with caplog.at_level(logging.WARNING, logger="lightning_ldam.sampling.api"):
        res = ldam.sample(net, "2:0-2", input_shape=INPUT_SHAPE, chains=chains, steps=steps)
    assert res.nonfinite_resets.tolist() == [0, steps * chains, 0]
    assert torch.isfinite(res.images).all()
    assert torch.isfinite(res.activations[[0, 2]]).all() and torch.isnan(res.activations[1]).all()
    assert res.activations[[0, 2]].mean() > res.trace[[0, 2], :, 0].mean()  # healthy neurons still climbed
    records = [r for r in caplog.records
               if r.name == "lightning_ldam.sampling.api" and r.levelno == logging.WARNING]
    assert len(records) == 1 and f"{steps * chains} chain states" in records[0].getMessage()


@pytest.mark.parametrize("method,step_size", [("langevin", 0.005), ("ascent", 0.1)])
def test_chains_climbing_into_a_nan_region_are_reset(caplog, method, step_size):
    # maximising channel 0 (positive weights) brightens the input into the NaN region;
    # channel 1 (negative weights) darkens it and never gets there.
    conv = nn.Conv2d(1, 2, 3, padding=1, bias=False)
    with torch.no_grad():
        conv.weight[0].fill_(0.1)
        conv.weight[1].fill_(-0.1)
    net = nn.Sequential(NaNAbove(0.6), conv)
    with caplog.at_level(logging.WARNING, logger="lightning_ldam.sampling.api"):
        res = ldam.sample(net, "1:0-1", input_shape=INPUT_SHAPE, chains=4, steps=30, step_size=step_size,
                          method=method)
    assert res.nonfinite_resets[0] > 0 and res.nonfinite_resets[1] == 0
    assert torch.isfinite(res.images).all()
    assert res.images.min() >= 0 and res.images.max() <= 1
    assert any("NaN/Inf" in r.getMessage() for r in caplog.records if r.name == "lightning_ldam.sampling.api")


def test_no_warning_without_nonfinite_values(tiny_net, caplog):
    with caplog.at_level(logging.WARNING, logger="lightning_ldam.sampling.api"):
        res = ldam.sample(tiny_net, "classifier.2:0", input_shape=INPUT_SHAPE, chains=2, steps=5)
    assert int(res.nonfinite_resets.sum()) == 0
    assert not [r for r in caplog.records if r.name == "lightning_ldam.sampling.api"]


def test_temperature_slows_the_climb_without_preconditioning(smooth_net):
    kwargs = dict(input_shape=INPUT_SHAPE, chains=4, steps=15, noise=0.0, precondition="none",
                  schedule="constant", step_size=0.05, method="ascent")
    hot = ldam.sample(smooth_net, "classifier.2:0", temperature=100.0, **kwargs)
    cold = ldam.sample(smooth_net, "classifier.2:0", temperature=1.0, **kwargs)
    gain = lambda r: (r.activations - r.trace[..., 0]).mean()  # noqa: E731
    assert gain(cold) > 5 * gain(hot) > 0


def test_config_schedule_factors():
    cfg = ldam.LangevinConfig(method="ascent", steps=11, step_size=0.1, noise=0.2, schedule="cosine",
                              burn_in=0).resolved(images=False, prior=False)
    assert cfg.factor(0) == 1.0 and abs(cfg.factor(10)) < 1e-12 and abs(cfg.factor(5) - 0.5) < 1e-12
    assert abs(cfg.eps(0) - 0.1) < 1e-12 and abs(cfg.eps(10) - 0.01) < 1e-12
    assert cfg.noise_std(0) == pytest.approx(0.2 * 0.1 ** 0.5) and abs(cfg.noise_std(10)) < 1e-12
    lin = ldam.LangevinConfig(method="ascent", steps=11, schedule="linear", burn_in=0).resolved(images=False,
                                                                                                 prior=False)
    assert abs(lin.factor(5) - 0.5) < 1e-12 and abs(lin.factor(10)) < 1e-12
    const = ldam.LangevinConfig(method="ascent", steps=11, step_size=0.1, schedule="constant",
                                burn_in=0).resolved(images=False, prior=False)
    assert all(const.eps(t) == 0.1 for t in range(11))


def test_langevin_steps_never_anneal_the_noise_to_zero():
    """Burn-in's drift step starts boost times larger in ε and decays to the sampling ε; the noise is the sampling
    noise at every step (burn-in runs colder, then warms to the law's temperature): it never reaches 0."""
    cfg = ldam.LangevinConfig(steps=20, burn_in=10, step_size=0.01, burn_in_boost=9.0).resolved(images=True,
                                                                                                prior=False)
    assert cfg.eps(0) == pytest.approx(9e-4) and cfg.eps(9) == pytest.approx(1e-4)
    assert [cfg.eps(t) for t in range(10, 20)] == pytest.approx([1e-4] * 10)
    assert all(cfg.eps(t) >= cfg.eps(t + 1) for t in range(19))
    assert [cfg.noise_std(t) for t in range(20)] == pytest.approx([0.01] * 20)


class NaNOnce(nn.Module):
    """The whole batch turns NaN on exactly one forward call (call number ``at``), finite otherwise."""

    def __init__(self, at: int):
        super().__init__()
        self.at = at
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        return x * float("nan") if self.calls == self.at else x


def test_a_transient_nan_costs_one_reset_per_chain():
    net = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.Tanh(), NaNOnce(at=5))  # call 1 is the dry forward
    res = ldam.sample(net, "2:0-1", input_shape=INPUT_SHAPE, chains=3, steps=20, precondition="rms",
                      method="ascent")
    assert res.nonfinite_resets.tolist() == [3, 3]
    assert torch.isfinite(res.trace[..., 4:]).all()


def test_a_transient_nan_costs_one_reset_per_chain_with_psgld():
    net = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.Tanh(), NaNOnce(at=5))
    res = ldam.sample(net, "2:0-1", input_shape=INPUT_SHAPE, chains=3, steps=20, precondition="psgld",
                      method="ascent")
    assert res.nonfinite_resets.tolist() == [3, 3]
    assert not torch.equal(res.trace[..., -1], res.trace[..., -2])  # the chains still move after the reset


class Flat(nn.Module):
    """a(x) = 0 with a zero input gradient: the ascent's drift vanishes, only its noise moves a chain."""

    def forward(self, x):
        return x.flatten(1).sum(1, keepdim=True) * 0.0


@pytest.mark.parametrize("noise", [0.0, 0.02, 0.05])
def test_the_ascent_noise_sets_the_spread_from_a_shared_start(noise):
    """``noise`` is σ of the ascent: with no drift, chains from one start spread by exactly the summed
    per-step noise, √Σ_t (√ε_t·σ)² ∝ σ; σ = 0 keeps them on their start. (Reading ``config["noise"]`` back would
    only check the argument was stored, not that it reached the steps.)"""
    start = torch.full((1, 1, 8, 8), 0.5)
    steps = 20
    res = ldam.sample(nn.Sequential(Flat()), "0:0", input_shape=(1, 8, 8), chains=256, steps=steps, noise=noise,
                      schedule="constant", method="ascent", init="data", real_data=start, disc_weight=0.0)
    assert res.config["noise"] == noise
    expected = (steps * 0.1) ** 0.5 * noise  # ε = 0.1 (the default, constant): 1.41·σ, the box 3.5 std away
    spread = res.images[0].std(0)  # per pixel, across the 256 chains
    if noise == 0:
        assert torch.equal(res.images[0], start.expand_as(res.images[0]))  # no noise: nothing moves at all
    else:
        assert spread.mean().item() == pytest.approx(expected, rel=0.05)
        assert (res.images[0].mean(0) - 0.5).abs().max() < 4 * expected / 256 ** 0.5  # unbiased: no drift


@pytest.mark.parametrize("channels", [3, 1])
def test_the_prior_weight_follows_each_units_lift_within_its_bounds(channels):
    # Three units, two chains each, with constant activations 5, -1 and 1.25 against real inputs of mean 0 and max 1
    # (lifts 5, -1 and exactly the target 1.25): over burn-in's adapting half w_k rises to its cap (2, whatever the
    # channels), falls to 0, and stays at 1.
    from lightning_ldam.sampling.burn_in import TARGET_LIFT
    from lightning_ldam.sampling.chains import LangevinChains
    from lightning_ldam.sampling.config import PRIOR_WEIGHT_MAX, LangevinConfig
    from lightning_ldam.sampling.objective import Objective
    from lightning_ldam.sampling.state import ChainState

    cap = PRIOR_WEIGHT_MAX
    assert cap == 2.0

    levels = torch.tensor([5.0, -1.0, TARGET_LIFT]).repeat_interleave(2)
    objective = Objective(lambda u: u.flatten(1).sum(1) * 0 + levels)
    cfg = LangevinConfig(steps=64, burn_in=32, smoothness=1.5).resolved(images=True, prior=True)
    state = ChainState(torch.full((6, channels, 4, 4), 0.5), cfg, neurons=3, generator=torch.Generator().manual_seed(0))
    chains = LangevinChains(state, objective, real_acts=(torch.zeros(3), torch.ones(3)))
    chains.freeze_scales()
    for t in range(cfg.burn_in // 2, cfg.burn_in):
        chains.burn_in.adapt_step(t)
    assert chains.burn_in.weight.tolist() == [cap, 0.0, 1.0]
    chains.freeze()
    assert torch.equal(chains.law.smoothness, chains.law.kappa_unit * torch.tensor([cap, 0.0, 1.0]))
