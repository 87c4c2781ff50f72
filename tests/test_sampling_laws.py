"""The sampler against laws whose answer is known: p(x) ∝ exp(a(x)/(c·T)) for toy "networks" a(x).

Each toy is an ``nn.Sequential`` whose one module returns ``[B, 1]`` (one neuron, ``"0:0"``) from a 1- or 2-pixel
input in a box wide enough that the walls do not matter. 256-1024 chains, a few hundred to a few thousand steps:
each test runs in a few seconds on a CPU.
"""
import pytest
import torch
from torch import nn

import lightning_ldam as ldam
from lightning_ldam.sampling.law import fold, log_fold_density


class Quadratic(nn.Module):
    """a(x) = −|x|²/2: p ∝ exp(a/(c·T)) is N(0, c·T) per pixel."""

    def forward(self, x):
        return -(x.flatten(1) ** 2).sum(1, keepdim=True) / 2


class DoubleWell(nn.Module):
    """a(x) = −h·(x² − 1)²: two symmetric wells at ±1 with a barrier of height h/(c·T) in log p."""

    def __init__(self, height: float):
        super().__init__()
        self.height = height

    def forward(self, x):
        return -self.height * ((x.flatten(1) ** 2 - 1) ** 2).sum(1, keepdim=True)


BOX = (-6.0, 6.0)
QUAD = dict(input_shape=(1, 1, 2), value_range=BOX, chains=512)


def _variance(res) -> float:
    return res.images[0].flatten(1).var(0).mean().item()


@pytest.mark.parametrize("method", ["langevin", "mala", "hmc"])
@pytest.mark.parametrize("temperature", [1.0, 4.0])
def test_quadratic_variance_is_c_times_t_with_the_measured_scale(method, temperature):
    res = ldam.sample(nn.Sequential(Quadratic()), "0:0", method=method, temperature=temperature, steps=800, **QUAD)
    c = res.scales[0].item()
    assert c > 0
    assert _variance(res) == pytest.approx(c * temperature, rel=0.10)


@pytest.mark.parametrize("method", ["langevin", "mala"])
def test_quadratic_variance_with_a_given_scale_and_its_ratio_across_temperatures(method):
    kw = dict(QUAD, method=method, scale=1.0, step_size=0.02, steps=800, seed=3)
    cold = _variance(ldam.sample(nn.Sequential(Quadratic()), "0:0", temperature=1.0, **kw))
    hot = _variance(ldam.sample(nn.Sequential(Quadratic()), "0:0", temperature=4.0, **kw))
    assert cold == pytest.approx(1.0, rel=0.10)
    assert hot == pytest.approx(4.0, rel=0.10)
    assert hot / cold == pytest.approx(4.0, rel=0.15)


def test_the_measured_scale_does_not_depend_on_the_temperature():
    """c_k is fixed by the burn-in search, which ignores T: so T alone sets the spread (var ∝ T)."""
    kw = dict(QUAD, steps=800, seed=5)
    cold = ldam.sample(nn.Sequential(Quadratic()), "0:0", temperature=1.0, **kw)
    hot = ldam.sample(nn.Sequential(Quadratic()), "0:0", temperature=4.0, **kw)
    assert hot.scales[0].item() == pytest.approx(cold.scales[0].item(), rel=1e-6)
    assert _variance(hot) / _variance(cold) == pytest.approx(4.0, rel=0.15)


def test_mala_is_exact_where_an_unadjusted_step_is_biased():
    """σ_step = 1.2·σ_target: ULA's stationary variance is σ²/(1 − ε/(4σ²)) = 1.56·σ²; MALA's is σ²."""
    kw = dict(QUAD, scale=1.0, burn_in=0, step_size=1.2 / 12, steps=1500, chains=1024)
    ula = ldam.sample(nn.Sequential(Quadratic()), "0:0", method="langevin", **kw)
    mala = ldam.sample(nn.Sequential(Quadratic()), "0:0", method="mala", **kw)
    assert _variance(ula) == pytest.approx(1 / (1 - 1.44 / 4), rel=0.10)
    assert _variance(mala) == pytest.approx(1.0, rel=0.10)
    assert 0.3 < mala.acceptance_rate[0].item() < 0.95
    assert ula.acceptance_rate is None


def test_mala_acceptance_falls_as_the_step_grows():
    kw = dict(QUAD, scale=1.0, method="mala", steps=300, chains=256, target_accept=None)  # the step as given
    rates = [ldam.sample(nn.Sequential(Quadratic()), "0:0", step_size=s / 12, **kw).acceptance_rate[0].item()
             for s in (0.2, 1.0, 3.0)]
    assert rates[0] > rates[1] > rates[2]
    assert rates[0] > 0.95 and rates[2] < 0.3


@pytest.mark.parametrize("start", [0.2, 3.0])
def test_mala_adapts_its_step_to_the_target_acceptance_from_a_step_far_off(start):
    """N(0, 1) per pixel (scale 1), 2 pixels: from a step 5x too small or 15x too large (as a share of σ), dual
    averaging over burn-in's adapting half lands near the same step, and the sampling phase accepts near 0.574."""
    kw = dict(QUAD, scale=1.0, method="mala", steps=600, chains=256, seed=2)
    res = ldam.sample(nn.Sequential(Quadratic()), "0:0", step_size=start / 12, **kw)
    assert 0.45 < res.acceptance_rate[0].item() < 0.70
    # in the box's units: σ_target = 1/12 per pixel; the optimal step for 2 dimensions is about 1.6·σ
    assert 0.6 / 12 < res.step_sizes[0].item() < 2.5 / 12
    assert _variance(res) == pytest.approx(1.0, rel=0.10)


def test_a_higher_target_acceptance_gives_a_smaller_step_and_is_met():
    kw = dict(QUAD, scale=1.0, method="mala", steps=600, chains=256, seed=4, step_size=1.0 / 12)
    low = ldam.sample(nn.Sequential(Quadratic()), "0:0", target_accept=0.3, **kw)
    high = ldam.sample(nn.Sequential(Quadratic()), "0:0", target_accept=0.9, **kw)
    assert low.step_sizes[0] > 1.5 * high.step_sizes[0]
    assert low.acceptance_rate[0].item() == pytest.approx(0.3, abs=0.1)
    assert high.acceptance_rate[0].item() == pytest.approx(0.9, abs=0.06)


def test_each_neuron_gets_its_own_step():
    """Two laws in one call: N(0, 1) and N(0, 1/16) per pixel (the second neuron's activation 16x steeper with a
    given scale): the second gets a step about 4x smaller."""
    model = nn.Sequential(_TwoQuadratics())
    res = ldam.sample(model, "0:0-1", method="mala", scale=1.0, steps=600, seed=5, step_size=1.0 / 12, **{
        k: v for k, v in QUAD.items() if k != "chains"}, chains=256)
    ratio = (res.step_sizes[0] / res.step_sizes[1]).item()
    assert 2.5 < ratio < 6.0
    assert ((res.acceptance_rate > 0.45) & (res.acceptance_rate < 0.70)).all()


class _TwoQuadratics(nn.Module):
    def forward(self, x):
        q = -(x.flatten(1) ** 2).sum(1, keepdim=True) / 2
        return torch.cat([q, 16 * q], dim=1)


@pytest.mark.parametrize("method", ["langevin", "mala"])
def test_chains_from_one_point_spread_as_far_as_chains_from_noise(method):
    kw = dict(QUAD, method=method, scale=1.0, step_size=0.02, steps=800, seed=1)
    one_point = torch.full((1, 1, 1, 2), 3.0)
    shared = ldam.sample(nn.Sequential(Quadratic()), "0:0", init="data", real_data=one_point, disc_weight=0.0, **kw)
    noise = ldam.sample(nn.Sequential(Quadratic()), "0:0", **kw)
    assert _variance(shared) == pytest.approx(_variance(noise), rel=0.15)
    assert _variance(shared) == pytest.approx(1.0, rel=0.10)


@pytest.mark.parametrize("method", ["langevin", "mala"])
def test_a_symmetric_double_well_splits_the_chains_evenly_and_they_cross(method):
    """All chains start in the right-hand well; with a barrier of 1 nat (h = 1, T = 1) they cross, and each well
    ends with 50 ± 10% of them. With a barrier of 16 nats none crosses: the crossing is the barrier's doing."""
    right = torch.full((1, 1, 1, 1), 1.0)
    kw = dict(input_shape=(1, 1, 1), value_range=(-3.0, 3.0), chains=512, method=method, scale=1.0, burn_in=0,
              step_size=0.01, init="data", real_data=right, disc_weight=0.0)
    low = ldam.sample(nn.Sequential(DoubleWell(1.0)), "0:0", steps=3000, **kw)
    share_left = (low.images.flatten() < 0).float().mean().item()
    assert share_left == pytest.approx(0.5, abs=0.10)
    high = ldam.sample(nn.Sequential(DoubleWell(16.0)), "0:0", steps=600, **kw)
    assert (high.images.flatten() > 0).float().mean().item() > 0.99


def test_the_noise_moves_the_chains():
    """From one shared start, the chains must part: a sampler without noise would keep them identical."""
    start = torch.full((1, 1, 1, 2), 1.0)
    res = ldam.sample(nn.Sequential(Quadratic()), "0:0", init="data", real_data=start, disc_weight=0.0,
                      input_shape=(1, 1, 2), value_range=BOX, chains=8, steps=20, scale=1.0, step_size=0.01)
    assert res.images[0].flatten(1).std(0).min().item() > 0.05


def test_fold_reflects_into_the_box_and_its_density_is_a_density():
    v = torch.tensor([-0.25, 0.25, 1.25, 2.5, -1.75])
    torch.testing.assert_close(fold(v), torch.tensor([0.25, 0.25, 0.75, 0.5, 0.25]))
    # the reflected Gaussian's density integrates to 1 over the box, even for a mean outside it
    y = torch.linspace(0, 1, 20001).view(-1, 1)
    for mean, std in ((0.02, 0.05), (1.1, 0.2), (-0.4, 0.3)):
        log_q = log_fold_density(y, torch.full_like(y, mean), std)  # up to the Gaussian's constant
        dens = torch.exp(log_q) / (std * (2 * torch.pi) ** 0.5)
        assert torch.trapezoid(dens, y.flatten()).item() == pytest.approx(1.0, rel=1e-3)


def test_reported_law_constants():
    res = ldam.sample(nn.Sequential(Quadratic()), "0:0", steps=20, **QUAD)
    assert res.scales.shape == (1,) and res.disc_weights is None and res.acceptance_rate is None
    assert res.config["method"] == "langevin" and res.config["burn_in"] == 10
    ascent = ldam.sample(nn.Sequential(Quadratic()), "0:0", steps=20, method="ascent", **QUAD)
    assert ascent.scales is None and ascent.config["burn_in"] == 0


# ---- a law with its mass at a wall, and the state a call returns (issue #21: each caught a mutant no test did) ---
class Wall(nn.Module):
    """a(x) = −x/θ per pixel: with ``scale=1`` and T = 1, p ∝ exp(−x/θ) on [0, 1], an exponential law against the
    wall at 0 (mean distance θ(1 − (1/θ)·e^{−1/θ}/(1 − e^{−1/θ})) ≈ θ for θ ≪ 1)."""

    def __init__(self, theta: float):
        super().__init__()
        self.theta = theta

    def forward(self, x):
        return -(x.flatten(1) / self.theta).sum(1, keepdim=True)


@pytest.mark.parametrize("method, tolerance, metric", [("mala", 0.05, "identity"), ("langevin", 0.12, "identity"),
                                                      ("mala", 0.05, "diagonal"), ("langevin", 0.12, "diagonal"),
                                                      ("hmc", 0.05, "identity"), ("hmc", 0.05, "diagonal")])
def test_a_law_at_the_wall_is_sampled_with_reflection_not_clamping(method, tolerance, metric):
    theta = 0.02
    exact = theta * (1 - (1 / theta) * torch.exp(torch.tensor(-1 / theta)).item()
                     / (1 - torch.exp(torch.tensor(-1 / theta)).item()))
    res = ldam.sample(nn.Sequential(Wall(theta)), "0:0", input_shape=(1, 1, 4), value_range=(0.0, 1.0),
                      chains=1024, steps=600, method=method, scale=1.0, disc_weight=0.0, seed=0, metric=metric)
    x = res.images[0].flatten()
    # ULA's bias at a wall is O(step): at the default step 0.005 its mean reads +3.0% at θ = 0.02 and +8.8% at
    # θ = 0.01 (1024 chains x 600 steps); MALA's −1.2% and −1.0%
    assert x.mean().item() == pytest.approx(exact, rel=tolerance)
    assert (x == 0).float().mean().item() < 0.001  # a clamp would pile mass exactly on the wall
    # the law's shape, not only its mean: P(x > θ) = e^{-1}, P(x > 3θ) = e^{-3}
    assert (x > theta).float().mean().item() == pytest.approx(torch.exp(torch.tensor(-1.0)).item(), abs=0.03)
    assert (x > 3 * theta).float().mean().item() == pytest.approx(torch.exp(torch.tensor(-3.0)).item(), abs=0.015)


def test_hmc_itself_brings_a_biased_start_to_the_wall_law():
    """Burn-in at a fixed step is unadjusted Langevin, biased at this step (the mean ~1.3x off): the sampling
    phase's Hamiltonian transitions must carry the chains to the law. A leapfrog that reflects without flipping the
    momentum is not reversible: measured, it accepts 1-6% and leaves the mean 0.85-1.8x off."""
    theta = 0.02
    exact = theta * (1 - (1 / theta) * torch.exp(torch.tensor(-1 / theta)).item()
                     / (1 - torch.exp(torch.tensor(-1 / theta)).item()))
    kw = dict(input_shape=(1, 1, 4), value_range=(0.0, 1.0), chains=1024, steps=1600, burn_in=256, scale=1.0,
              disc_weight=0.0, seed=0, target_accept=None, step_size=0.03)
    ula = ldam.sample(nn.Sequential(Wall(theta)), "0:0", method="langevin", **kw)
    assert ula.images[0].mean().item() > 1.2 * exact  # the start HMC inherits is off
    res = ldam.sample(nn.Sequential(Wall(theta)), "0:0", method="hmc", leapfrog_steps=4, **kw)
    x = res.images[0].flatten()
    assert x.mean().item() == pytest.approx(exact, rel=0.05)
    assert (x > theta).float().mean().item() == pytest.approx(torch.exp(torch.tensor(-1.0)).item(), abs=0.03)
    assert 0.3 < res.acceptance_rate.item() < 0.95


def test_a_call_returns_the_state_after_its_last_step_not_after_burn_in():
    res = ldam.sample(nn.Sequential(Quadratic()), "0:0", method="langevin", scale=1.0, step_size=0.02, steps=400,
                      disc_weight=0.0, seed=2, **QUAD)
    trace, burn = res.trace[0], res.config["burn_in"]  # trace: the activation before each step
    final = Quadratic()(res.images[0]).flatten()  # the returned images' own activation, read afresh
    torch.testing.assert_close(final, res.activations[0], rtol=1e-4, atol=1e-4)

    def corr(a, b):
        a, b = a - a.mean(), b - b.mean()
        return float((a * b).sum() / (a.norm() * b.norm()))

    # one step before the end the chains were where they end up; 200 steps before, anywhere in the law
    assert corr(final, trace[:, -1]) > 0.8
    assert abs(corr(final, trace[:, burn])) < 0.2


class GaussianD(nn.Module):
    """An analytic discriminator: ``log D(u) = −½|u − m|² − δ`` exactly (its logit is ``−log(expm1(q))``), so with a
    quadratic activation and the smoothness prior the whole law is Gaussian, with a covariance in closed form."""

    def __init__(self, centre: torch.Tensor, offset: float = 0.1):
        super().__init__()
        self.register_buffer("centre", centre)
        self.offset = offset

    def forward(self, u):
        q = 0.5 * (u.flatten(1) - self.centre.flatten()).square().sum(1) + self.offset
        return -torch.log(torch.expm1(q))


def _grid_laplacian(h: int, w: int) -> torch.Tensor:
    """``L`` with ``½·Σ (u_i − u_j)²`` over adjacent pixels ``= ½ uᵀ L u`` (row-major pixels)."""
    n = h * w
    lap = torch.zeros(n, n, dtype=torch.float64)
    for i in range(h):
        for j in range(w):
            for di, dj in ((0, 1), (1, 0)):
                if i + di < h and j + dj < w:
                    a, b = i * w + j, (i + di) * w + j + dj
                    lap[a, a] += 1
                    lap[b, b] += 1
                    lap[a, b] -= 1
                    lap[b, a] -= 1
    return lap


@pytest.mark.parametrize("method, metric", [("mala", "identity"), ("mala", "diagonal"), ("hmc", "identity")])
def test_the_law_with_a_fixed_analytic_d_and_the_smoothness_prior_is_the_stated_gaussian(method, metric):
    # log p(u) = a(x(u))/(c·T) + λ_k·log D(u) − γ_k·E_s(u), a = −½|x|², x = −6 + 12u, c = 1 (scale=1), T = 1:
    # precision P = 144·I + λ_k·I + γ_k·L, mean P⁻¹(144·½·1 + λ_k·m), γ_k = κ / PIXEL_SCALE
    from lightning_ldam.sampling.config import PIXEL_SCALE

    centre = torch.tensor([0.2, 0.7, 0.4, 0.9]).view(1, 2, 2)
    kappa = 3.0
    res = ldam.sample(nn.Sequential(Quadratic()), "0:0", input_shape=(1, 2, 2), value_range=BOX, chains=2048,
                      steps=800, method=method, scale=1.0, step_size=0.01, disc_weight=1.0, smoothness=kappa,
                      discriminator=GaussianD(centre), seed=4, metric=metric)
    lam = float(res.disc_weights[0])
    assert lam > 0
    gamma = kappa / PIXEL_SCALE
    eye = torch.eye(4, dtype=torch.float64)
    precision = 144.0 * eye + lam * eye + gamma * _grid_laplacian(2, 2)
    cov = torch.linalg.inv(precision)
    mean = cov @ (72.0 * torch.ones(4, dtype=torch.float64) + lam * centre.flatten().double())
    u = ((res.images[0].flatten(1).double() - BOX[0]) / (BOX[1] - BOX[0]))  # back to the unit box
    assert (u.mean(0) - mean).abs().max().item() < 0.1 * cov.diagonal().sqrt().min().item() + 1e-3
    emp = torch.cov(u.T)
    # variances within 10%, and the prior's correlations (neighbours more alike than the diagonal pair) within 0.1
    assert torch.allclose(emp.diagonal(), cov.diagonal(), rtol=0.10)
    corr = lambda c: c / torch.outer(c.diagonal().sqrt(), c.diagonal().sqrt())  # noqa: E731
    assert (corr(emp) - corr(cov)).abs().max().item() < 0.1
    assert corr(cov)[0, 1].item() > 0.2  # the prior's correlation is there to be matched, not ≈ 0
    assert res.acceptance_rate[0].item() > 0.5


# ---- a diagonal metric (issue #21 item 2) ---------------------------------------------------------------------
class Anisotropic(nn.Module):
    """a(x) = −½·Σ (x_i/s_i)²: with ``scale=1``, p is N(0, s_i²) per pixel, pixels whose spreads differ 10x."""

    def __init__(self, spreads):
        super().__init__()
        self.register_buffer("spreads", torch.tensor(spreads))

    def forward(self, x):
        return -((x.flatten(1) / self.spreads) ** 2).sum(1, keepdim=True) / 2


ANISO = dict(input_shape=(1, 1, 2), value_range=BOX, chains=512, scale=1.0, step_size=0.004, steps=1200, seed=1)


@pytest.mark.parametrize("method", ["langevin", "mala"])
def test_a_diagonal_metric_keeps_the_law_and_mixes_the_wide_pixel_faster(method):
    model = nn.Sequential(Anisotropic([1.0, 0.1]))
    plain = ldam.sample(model, "0:0", method=method, **ANISO)
    diag = ldam.sample(model, "0:0", method=method, metric="diagonal", **ANISO)
    assert plain.metric is None
    m = diag.metric[0].flatten()
    # the narrow pixel keeps its step (m = 1); the wide one's grows with its measured spread (100x the narrow's
    # variance in the law; less within the window, which its chains have not yet crossed)
    assert m[1].item() == pytest.approx(1.0) and m[0].item() > 10
    var = diag.images[0].flatten(1).var(0)
    assert var[0].item() == pytest.approx(1.0, rel=0.15)
    assert var[1].item() == pytest.approx(0.01, rel=0.15)
    assert diag.ess_activation[0] > 3 * plain.ess_activation[0]
    assert diag.rhat_activation[0] < plain.rhat_activation[0]
    if method == "mala":
        assert 0.4 < diag.acceptance_rate[0].item() < 0.8


def test_the_metric_is_capped_where_the_smoothness_prior_would_make_a_step_diverge():
    from lightning_ldam.sampling.config import METRIC_STABILITY, PIXEL_SCALE, PRIOR_WEIGHT_MAX

    model = nn.Sequential(Anisotropic([1.0, 0.1]))
    free = ldam.sample(model, "0:0", metric="diagonal", **ANISO)
    kappa = 8.0  # cap ≈ 2.4: the metric is sized for the largest prior weight w_k may reach (2)
    capped = ldam.sample(model, "0:0", metric="diagonal", smoothness=kappa, **ANISO)
    cap = METRIC_STABILITY / (ANISO["step_size"] ** 2 * 8 * kappa * PRIOR_WEIGHT_MAX / PIXEL_SCALE)
    assert free.metric.max().item() > 1.5 * cap  # without the prior nothing caps it
    assert capped.metric.max().item() == pytest.approx(cap, rel=1e-4)


# ---- MALA's accept test under bf16 autocast (issue #21 item 6) ------------------------------------------------
def _wall_linear(theta: float, offset: float, pixels: int) -> nn.Module:
    """The wall law through an ``nn.Linear`` (which autocast runs in bf16): a(x) = offset − Σx/θ. At an offset of
    10⁴, bf16's spacing is 64, i.e. up to ±32 nats of rounding against log-density steps of about 0.5: an accept
    test on bf16 activations is noise. The law itself (scale=1) does not depend on the offset."""
    lin = nn.Linear(pixels, 1)
    with torch.no_grad():
        lin.weight.fill_(-1.0 / theta)
        lin.bias.fill_(offset)
    return nn.Sequential(nn.Flatten(), lin)


def test_mala_under_bf16_autocast_accepts_with_float32_log_densities():
    theta, pixels = 0.02, 4
    exact = theta * (1 - (1 / theta) * torch.exp(torch.tensor(-1 / theta)).item()
                     / (1 - torch.exp(torch.tensor(-1 / theta)).item()))
    # at a fixed step (no adaptation), so that both calls below make their decisions at the same step
    kw = dict(input_shape=(1, 1, pixels), value_range=(0.0, 1.0), chains=1024, steps=600, method="mala",
              scale=1.0, disc_weight=0.0, seed=0, target_accept=None)
    model = _wall_linear(theta, 1e4, pixels)
    bf16 = ldam.sample(model, "1:0", autocast_dtype=torch.bfloat16, **kw)
    x = bf16.images[0].flatten()
    assert x.mean().item() == pytest.approx(exact, rel=0.05)
    # float32 resolves the offset to 0.001 nats: the decisions are those of the same law without an offset
    plain = ldam.sample(_wall_linear(theta, 0.0, pixels), "1:0", autocast_dtype=torch.bfloat16, **kw)
    assert bf16.acceptance_rate.item() == pytest.approx(plain.acceptance_rate.item(), abs=0.005)
    assert (x > theta).float().mean().item() == pytest.approx(torch.exp(torch.tensor(-1.0)).item(), abs=0.03)
    # the returned activations are the model's own (float32) readings of the returned images
    assert bf16.activations[0].dtype == torch.float32
    # what the test guards against: the same call deciding on bf16 activations is visibly wrong
    from lightning_ldam.sampling import objective as chains_module
    original = chains_module.Objective.__call__
    try:
        chains_module.Objective.__call__ = lambda self, u, exact=False: original(self, u, exact=False)
        rounded = ldam.sample(model, "1:0", autocast_dtype=torch.bfloat16, **kw)
    finally:
        chains_module.Objective.__call__ = original
    # (measured: mean 0.061 against 0.020, P(x > 3θ) 0.44 against 0.05)
    assert rounded.images[0].mean().item() > 2 * exact


def test_search_zero_measures_c_k_at_the_starting_chains():
    """a = −|x|²/2 in the box ±6: at x = 2 the pixel gradient is −2, −24 per unit-box pixel, so with no search
    ``c_k`` = 0.01 × 24 = 0.24; the default search climbs toward 0 first and measures a smaller gradient."""
    start = torch.full((8, 1, 1, 2), 2.0)
    kw = dict(input_shape=(1, 1, 2), value_range=BOX, chains=8, steps=40, init=start)
    assert BOX == (-6.0, 6.0)
    now = ldam.sample(nn.Sequential(Quadratic()), "0:0", search=0, **kw)
    assert now.scales[0].item() == pytest.approx(0.24, rel=1e-5)
    searched = ldam.sample(nn.Sequential(Quadratic()), "0:0", **kw)
    assert searched.scales[0].item() < 0.2


def test_continued_chains_are_held_through_the_search_and_step_the_law_after_it():
    """``continued=``: the marked chains keep their starts through burn-in's search (their activation before every
    search step is their start's), then move; the others search from the first step. ``c_k`` reads all of them."""
    g = torch.Generator().manual_seed(0)
    start = torch.rand(6, 1, 1, 2, generator=g) * 4 - 2
    held = torch.tensor([True, True, True, False, False, False])
    res = ldam.sample(nn.Sequential(Quadratic()), "0:0", input_shape=(1, 1, 2), value_range=BOX, chains=6,
                      steps=40, burn_in=20, search=10, init=start, continued=held)
    trace = res.trace[0]  # [chains, steps]: the activation before each step
    first = -(start.flatten(1) ** 2).sum(1) / 2
    assert torch.allclose(trace[:3, :11], first[:3, None].expand(3, 11), atol=1e-6)
    assert not torch.allclose(trace[:3, 11:], first[:3, None].expand(3, 29), atol=1e-6)  # moving after the search
    assert (trace[3:, 1] != first[3:]).all()  # the others searched from step 0
    # every chain held at x = 2: the search tracks the gradient at the starts only, so c_k = 0.01 × 24 (as search=0)
    still = ldam.sample(nn.Sequential(Quadratic()), "0:0", input_shape=(1, 1, 2), value_range=BOX, chains=6,
                        steps=40, burn_in=20, search=10, init=torch.full((6, 1, 1, 2), 2.0),
                        continued=torch.ones(6, dtype=torch.bool))
    assert still.scales[0].item() == pytest.approx(0.24, rel=1e-5)
    with pytest.raises(ldam.LDAMArgumentError, match="continued"):
        ldam.sample(nn.Sequential(Quadratic()), "0:0", input_shape=(1, 1, 2), value_range=BOX, chains=6, steps=4,
                    continued=held)  # no starting images to continue
    with pytest.raises(ldam.LDAMArgumentError, match=r"continued: expected a bool tensor of shape \[6\]"):
        ldam.sample(nn.Sequential(Quadratic()), "0:0", input_shape=(1, 1, 2), value_range=BOX, chains=6, steps=4,
                    init=start, continued=held[:4])
