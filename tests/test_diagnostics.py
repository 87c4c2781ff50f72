"""Split R-hat and bulk ESS on traces whose answer is known."""
from __future__ import annotations

import pytest
import torch

from lightning_ldam.errors import LDAMArgumentError
from lightning_ldam.sampling.diagnostics import ess_bulk, split_rhat


def _ar1(rho: float, chains: int, draws: int, seed: int = 0) -> torch.Tensor:
    """Stationary AR(1) chains ``x_t = ρ x_{t−1} + ε_t`` (started from the stationary law)."""
    g = torch.Generator().manual_seed(seed)
    eps = torch.randn(chains, draws, generator=g, dtype=torch.float64)
    x = torch.empty_like(eps)
    x[:, 0] = eps[:, 0] / (1 - rho ** 2) ** 0.5
    for t in range(1, draws):
        x[:, t] = rho * x[:, t - 1] + eps[:, t]
    return x


def test_independent_draws_give_rhat_one():
    g = torch.Generator().manual_seed(0)
    r = split_rhat(torch.randn(200, 4, 500, generator=g))  # 200 "neurons" at once
    assert r.shape == (200,)
    assert float((r - 1).abs().max()) < 0.02 and abs(float(r.mean()) - 1) < 0.005


def test_chains_stuck_at_different_points_give_rhat_far_above_one():
    g = torch.Generator().manual_seed(1)
    stuck = torch.randn(4, 500, generator=g) * 0.1 + torch.tensor([0.0, 1.0, 2.0, 3.0]).unsqueeze(1)
    # rank normalisation bounds it: four chains that share no value read about 2.8, whatever the distance
    assert float(split_rhat(stuck)) > 2.5
    # one chain that drifts disagrees with itself: the split halves see it
    drift = torch.randn(4, 500, generator=g) + torch.linspace(0, 4, 500)
    assert float(split_rhat(drift)) > 1.2  # every chain drifts the same way: only the split can see it
    # same centre, other spreads: the folded (tail) R-hat sees it where the bulk one does not
    spread = torch.randn(4, 500, generator=g) * torch.tensor([1.0, 1.0, 1.0, 6.0]).unsqueeze(1)
    assert float(split_rhat(spread)) > 1.1


@pytest.mark.parametrize("rho", [0.0, 0.5, 0.9])
def test_ess_of_an_ar1_trace_is_within_20_percent_of_the_exact_value(rho):
    chains, draws = 4, 20000
    exact = chains * draws * (1 - rho) / (1 + rho)
    values = [float(ess_bulk(_ar1(rho, chains, draws, seed=s))) for s in range(3)]
    for v in values:
        assert abs(v / exact - 1) < 0.2, (values, exact)


def test_both_agree_with_arviz_on_a_fixed_trace():
    # reference: arviz_stats 0.8.0, array_stats.rhat(method="rank") and array_stats.ess(method="bulk") on this trace
    g = torch.Generator().manual_seed(7)
    x = torch.randn(4, 301, generator=g, dtype=torch.float64)  # odd draws: the middle one is dropped by the split
    x[2] += 0.4
    x[:, 150:] *= 1.3
    assert float(split_rhat(x)) == pytest.approx(1.0228954836510258, rel=1e-4)
    assert float(ess_bulk(x)) == pytest.approx(618.9641181497892, rel=1e-4)


def test_monotone_transforms_and_ties_do_not_change_them():
    g = torch.Generator().manual_seed(3)
    x = _ar1(0.7, 4, 400, seed=3)
    torch.testing.assert_close(split_rhat(x.exp()), split_rhat(x))  # rank-normalised: only the order matters
    torch.testing.assert_close(ess_bulk(x.exp()), ess_bulk(x))
    flat = torch.zeros(4, 50)
    assert float(split_rhat(flat)) == 1.0  # chains that never move, all at one value: nothing disagrees
    del g


def test_too_short_traces_are_refused():
    with pytest.raises(LDAMArgumentError, match=r"^split_rhat: .*at least 4 draws.*\(2, 3\)"):
        split_rhat(torch.zeros(2, 3))
    with pytest.raises(LDAMArgumentError, match=r"^ess_bulk: "):
        ess_bulk(torch.zeros(5))


# ---- in the sampler and the callback ----------------------------------------------------------------------------
def _net():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.Tanh(), torch.nn.Flatten(),
                               torch.nn.Linear(4 * 8 * 8, 3)).eval()


def test_sample_reports_rhat_and_ess_of_the_sampling_phase():
    import lightning_ldam as ldam

    res = ldam.sample(_net(), "3:all", input_shape=(1, 8, 8), chains=4, steps=40, disc_weight=0.0, seed=0)
    burn = res.config["burn_in"]
    sampling = res.trace[:, :, burn:]  # the activation before each sampling step
    torch.testing.assert_close(res.rhat_activation, split_rhat(sampling))
    torch.testing.assert_close(res.ess_activation, ess_bulk(sampling))
    # the reported figures are the worst of the activation and the image projections
    assert (res.rhat >= res.rhat_activation).all() and (res.ess <= res.ess_activation).all()
    assert res.rhat.shape == res.ess.shape == (3,)
    short = ldam.sample(_net(), "3:0", input_shape=(1, 8, 8), chains=2, steps=6, disc_weight=0.0)  # 3 draws
    assert short.rhat is None and short.ess is None
    ascent = ldam.sample(_net(), "3:0", input_shape=(1, 8, 8), chains=2, steps=20, disc_weight=0.0,
                           method="ascent")
    assert ascent.rhat is None  # a search, not a law: nothing to mix


@pytest.mark.usefixtures("lightning_env")
def test_the_callback_logs_rhat_and_ess_and_warns_once_per_unmixed_layer(tmp_path, recwarn):
    from helpers.training import events, fit
    from lightning.pytorch.loggers import TensorBoardLogger

    from lightning_ldam import LDAMCallback

    cb = LDAMCallback(["features.0:0-1", "classifier.2:0-1"], every_n_train_steps=2, chains=2, steps=16,
                      reservoir_size=16, max_overhead=None, sampler_kwargs={"disc_warmup": 1})
    logger = TensorBoardLogger(str(tmp_path), name="tb")
    fit(tmp_path, [cb], max_steps=4, logger=logger)
    acc = events(logger.log_dir)
    for layer in ("features.0", "classifier.2"):
        for name in ("rhat", "ess"):
            values = acc.Scalars(f"ldam/raw/{layer}/{name}")
            assert [e.step for e in values] == [2, 4] and all(e.value > 0 for e in values)
    said = [str(w.message) for w in recwarn if "have not mixed" in str(w.message)]
    layers = [m.split("the chains of ")[1].split(" have")[0] for m in said]
    assert len(layers) == len(set(layers)) >= 1, said  # 8 sampling steps do not mix: said, and once per layer
    assert all("split R-hat > 1.1" in m for m in said)

