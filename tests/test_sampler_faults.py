"""``ldam.sample`` under faults: arguments it cannot use are named, NaN/Inf chains and discriminators recover."""
import copy
import logging

import pytest
import torch
from helpers.models import INPUT_SHAPE, make_tiny_net
from torch import nn

import lightning_ldam as ldam
import lightning_ldam.sampling.discriminator as disc_module
from lightning_ldam.errors import LDAMArgumentError
from lightning_ldam.sampling import loop
from lightning_ldam.sampling.discriminator import build_discriminator, check_discriminator, finite_weights

KW = dict(input_shape=INPUT_SHAPE, chains=2, steps=4)


class CountingNet(nn.Module):
    """The tiny net, counting its forwards (none may run before an argument error)."""

    def __init__(self):
        super().__init__()
        self.net = make_tiny_net()
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        return self.net(x)


def _raises(argument: str, match: str, model=None, **kwargs):
    with pytest.raises(LDAMArgumentError, match=match) as err:
        ldam.sample(make_tiny_net() if model is None else model, "classifier.2:0", **{**KW, **kwargs})
    assert err.value.argument == argument
    return err.value


def _real(n: int = 32, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, *INPUT_SHAPE, generator=torch.Generator().manual_seed(seed))


# ---- 1. non-finite real data ------------------------------------------------------------------------------
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_nonfinite_real_data_is_refused_before_any_forward(bad):
    real = _real()
    real[3, 0, 1, 1] = real[3, 0, 2, 2] = real[7, 0, 0, 0] = bad
    net = CountingNet()
    _raises("real_data", r"^real_data: expected finite pixel values, got 3 NaN/Inf values in 2 of 32 images "
            r"\(the first at index 3\)", model=net, real_data=real)
    assert net.calls == 0


def test_nonfinite_real_data_in_an_iterable_of_batches():
    real = _real()
    real[20].fill_(float("nan"))
    _raises("real_data", r"got 144 NaN/Inf values in 1 of 32 images \(the first at index 20\)",
            real_data=[(real[:16], 0), (real[16:], 1)])


# ---- 2. arguments that raise torch errors today ----------------------------------------------------------
def test_a_model_on_the_meta_device_names_the_model():
    with torch.device("meta"):
        net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 10 * 10, 3))
    with pytest.raises(LDAMArgumentError, match=r"^model: expected a model with weights, got one whose tensors "
                                                r"are on the meta device.*load_state_dict") as err:
        ldam.sample(net, "3:0", **KW)
    assert err.value.argument == "model"


@pytest.mark.parametrize("device", ["cuda", "cuda:1", torch.device("cuda", 0)])
def test_cuda_without_cuda_names_the_device(monkeypatch, device):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    _raises("device", rf"^device: CUDA is not available here .*got device='{torch.device(device)}'; pass "
            rf"device='cpu'", device=device)


def test_a_cuda_index_past_the_devices_names_the_device(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    _raises("device", r"^device: expected one of cuda:0 to cuda:1 \(this machine's CUDA devices\), got 'cuda:5'",
            device="cuda:5")


@pytest.mark.parametrize("device, match", [
    ("gpu", r"^device: expected a torch\.device or a string such as 'cpu', 'cuda' or 'cuda:1', got 'gpu'$"),
    (1.5, r"^device: expected a torch\.device .*, got 1\.5$"),
    ("meta", r"^device: expected a device that holds values \('cpu', 'cuda', \.\.\.\), got 'meta'$"),
])
def test_unusable_device_strings_name_the_device(device, match):
    _raises("device", match, device=device)


class Raises(nn.Module):
    def forward(self, x):
        return nn.functional.linear(x.flatten(1), torch.zeros(1, 3)).squeeze(1)


class Shaped(nn.Module):
    def __init__(self, keep_dim: bool):
        super().__init__()
        self.keep_dim = keep_dim
        self.lin = nn.Linear(144, 1)

    def forward(self, x):
        out = self.lin(x.flatten(1))
        return out if self.keep_dim else (out.squeeze(1), "extra")


@pytest.mark.parametrize("disc, match", [
    (Raises(), r"its forward raised on a batch of shape \(2, 1, 12, 12\): RuntimeError"),
    (Shaped(keep_dim=True), r"got shape \(2, 1\) for a batch of shape \(2, 1, 12, 12\)"),
    (Shaped(keep_dim=False), r"got tuple for a batch of shape \(2, 1, 12, 12\)"),
])
@pytest.mark.parametrize("with_real", [True, False])
def test_a_discriminator_that_does_not_fit_the_input_is_named(disc, match, with_real):
    kwargs = {"real_data": _real()} if with_real else {"disc_weight": 0.0}
    _raises("discriminator", r"^discriminator: expected a module taking unit-box images \[B, 1, 12, 12\] and "
            r"returning logits \[B\]; " + match, discriminator=disc, **kwargs)


def test_checking_a_discriminator_leaves_it_as_it_was():
    disc = build_discriminator(1, INPUT_SHAPE[1:], seed=0)
    before = {k: v.clone() for k, v in disc.state_dict().items()}  # spectral-norm vectors included
    check_discriminator(disc, INPUT_SHAPE, torch.device("cpu"))
    assert disc.training and all(torch.equal(v, disc.state_dict()[k]) for k, v in before.items())


@pytest.mark.parametrize("model", [make_tiny_net, lambda: nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU())],
                         ids=["conv-bn-linear", "conv-only"])
def test_an_input_shape_without_channels_names_input_shape(model):
    # conv-only: Conv2d runs [1, 12, 12] as one unbatched image, so no error came before the first step
    neuron = "classifier.2:0" if model is make_tiny_net else "1:0"
    with pytest.raises(LDAMArgumentError, match=r"^input_shape: .*input_shape is one sample's shape, \(C, H, W\) "
                       r"for images, without the batch dimension; \(12, 12\) has no channel dimension: did you "
                       r"mean \(1, 12, 12\)\?") as err:
        ldam.sample(model(), neuron, **{**KW, "input_shape": (12, 12)})
    assert err.value.argument == "input_shape"


# ---- 3. chains that turn non-finite restart from fresh uniform states -------------------------------------
class NaNBelow(nn.Module):
    """NaN for every image whose mean pixel is below ``threshold`` (dark images)."""

    def __init__(self, threshold: float):
        super().__init__()
        self.threshold = threshold

    def forward(self, x):
        dark = x.flatten(1).mean(1) < self.threshold
        return torch.where(dark.view(-1, *([1] * (x.dim() - 1))), torch.full_like(x, float("nan")), x)


def _brightness_net() -> nn.Sequential:
    conv = nn.Conv2d(1, 1, 3, padding=1, bias=False)
    with torch.no_grad():
        conv.weight.fill_(0.1)  # maximising it brightens the image, away from the NaN region
    return nn.Sequential(NaNBelow(0.42), conv)


def test_chains_starting_in_a_nan_region_restart_from_fresh_states_not_their_start():
    dark = _real(16) * 0.4  # mean pixel 0.2: every real image, hence every data start, is in the NaN region
    steps, chains = 30, 6
    res = ldam.sample(_brightness_net(), "1:0", input_shape=INPUT_SHAPE, chains=chains, steps=steps,
                      real_data=dark, init="data", disc_weight=0.0)
    assert torch.isfinite(res.images).all() and torch.isfinite(res.activations).all()
    # the first step resets every chain; a fresh uniform start (mean pixel ~0.5 ± 0.024) is almost never dark again
    resets = int(res.nonfinite_resets.sum())
    assert chains <= resets <= 2 * chains < steps * chains
    assert torch.isfinite(res.trace[..., 1:]).float().mean() > 0.9


def test_restarts_leave_the_healthy_chains_bitwise_unchanged():
    from helpers.nan_models import NaNChannel

    conv = nn.Conv2d(1, 3, 3, padding=1)
    sick = ldam.sample(nn.Sequential(conv, nn.Tanh(), NaNChannel(bad=1)), "2:0-2", input_shape=INPUT_SHAPE,
                       chains=3, steps=8)
    healthy = ldam.sample(nn.Sequential(conv, nn.Tanh(), nn.Identity()), "2:0-2", input_shape=INPUT_SHAPE,
                          chains=3, steps=8)
    assert sick.nonfinite_resets.tolist() == [0, 24, 0] and int(healthy.nonfinite_resets.sum()) == 0
    # the fresh starts come from their own generator: the other chains' noise does not move
    assert torch.equal(sick.images[[0, 2]], healthy.images[[0, 2]])
    assert not torch.equal(sick.images[1], healthy.images[1])


@pytest.mark.parametrize("method", ["mala", "hmc"])
def test_exact_methods_reject_nonfinite_proposals_and_leave_the_healthy_neurons_alone(method):
    from helpers.nan_models import NaNChannel

    conv = nn.Conv2d(1, 3, 3, padding=1)
    kw = dict(input_shape=INPUT_SHAPE, chains=3, steps=40, method=method)
    if method == "hmc":
        kw["leapfrog_steps"] = 4  # 5 transitions in the 20 sampling steps
    sick = ldam.sample(nn.Sequential(conv, nn.Tanh(), NaNChannel(bad=1)), "2:0-2", **kw)
    healthy = ldam.sample(nn.Sequential(conv, nn.Tanh(), nn.Identity()), "2:0-2", **kw)
    assert torch.isfinite(sick.images).all()
    assert sick.acceptance_rate[1].item() == 0.0 and (sick.acceptance_rate[[0, 2]] > 0).all()
    assert torch.equal(sick.images[[0, 2]], healthy.images[[0, 2]])


def test_the_graph_form_registers_the_restart_generator(monkeypatch):
    registered = []

    class EagerGraphForm:
        def __init__(self, step, generators, device):
            registered.append(tuple(generators))
            self.step = step

        def __call__(self):
            self.step(None)

    monkeypatch.setattr(loop, "graphs_supported", lambda device: True)
    monkeypatch.setattr(loop, "GraphedStep", EagerGraphForm)
    dark = _real(16) * 0.4
    res = ldam.sample(_brightness_net(), "1:0", input_shape=INPUT_SHAPE, chains=4, steps=12, real_data=dark,
                      init="data", disc_weight=0.0, cuda_graph=True)
    assert registered and all(len(gens) == 2 and gens[0] is not gens[1] for gens in registered)
    assert torch.isfinite(res.images).all() and 4 <= int(res.nonfinite_resets.sum()) <= 8


# ---- 4. a discriminator with NaN/Inf weights is rebuilt, never returned ---------------------------------
def _poisoned_disc() -> nn.Module:
    disc = build_discriminator(1, INPUT_SHAPE[1:], seed=0)
    with torch.no_grad():
        disc.head.parametrizations.weight.original[0, 0] = float("nan")
    return disc


def _assert_healthy(res):
    assert finite_weights(res.discriminator)
    assert torch.isfinite(res.images).all() and torch.isfinite(res.activations).all()
    assert torch.isfinite(res.disc_scores).all()
    assert res.config["disc_rebuilt"] is True


def test_an_ordinary_run_records_no_rebuild():
    res = ldam.sample(make_tiny_net(), "classifier.2:0", real_data=_real(), **KW)
    assert res.config["disc_rebuilt"] is False
    assert ldam.sample(make_tiny_net(), "classifier.2:0", **KW).config["disc_rebuilt"] is False


def test_a_given_nonfinite_discriminator_is_replaced_with_a_warning():
    given = _poisoned_disc()
    before = copy.deepcopy(given.state_dict())
    with pytest.warns(RuntimeWarning, match=r"The discriminator given to sample\(\) has NaN/Inf weights; it is "
                                            r"left as it is and a fresh one \(seed 0, 50 warm-up updates\)"):
        res = ldam.sample(make_tiny_net(), "classifier.2:0", real_data=_real(), discriminator=given,
                          input_shape=INPUT_SHAPE, chains=2, steps=6)
    _assert_healthy(res)
    assert res.discriminator is not given
    assert res.config["disc_warmup"] == 0  # the setting as given; the fresh D was warmed up all the same
    assert given.training and all(torch.equal(v.nan_to_num(), given.state_dict()[k].nan_to_num())
                                  for k, v in before.items())  # the given D is left as it was
    assert res.disc_weights is not None and torch.isfinite(res.disc_weights).all()


def test_a_given_nonfinite_discriminator_without_real_data_is_refused():
    _raises("discriminator", r"^discriminator: expected finite weights, got a discriminator with NaN/Inf weights and "
            r"no real_data to train a fresh one", discriminator=_poisoned_disc())


@pytest.fixture
def poison_mid_run(monkeypatch):
    """From the trainer's ``at``-th update on, the first discriminator trained in the call turns NaN."""
    real_step = disc_module.DiscriminatorTrainer.step
    seen = {"first": None, "updates": 0}

    def step(self, fake):
        loss = real_step(self, fake)
        if seen["first"] is None:
            seen["first"] = self.discriminator
        if self.discriminator is seen["first"]:
            seen["updates"] += 1
            if seen["updates"] == seen["at"]:
                with torch.no_grad():
                    next(self.discriminator.parameters()).view(-1)[0] = float("nan")
        return loss

    monkeypatch.setattr(disc_module.DiscriminatorTrainer, "step", step)
    return seen


@pytest.mark.parametrize("method", ["langevin", "mala", "hmc"])
def test_a_discriminator_broken_in_burn_in_is_rebuilt_before_the_law_is_fixed(poison_mid_run, caplog, method):
    poison_mid_run["at"] = 4 + 2 * 3  # warm-up (4), then 3 burn-in steps of 2 updates each
    with caplog.at_level(logging.WARNING, logger="lightning_ldam.sampling.discriminator"):
        res = ldam.sample(make_tiny_net(), "classifier.2:0-1", input_shape=INPUT_SHAPE, chains=3, steps=16,
                          real_data=_real(), disc_warmup=4, method=method, adapt_disc=False)
    _assert_healthy(res)
    assert res.discriminator is not poison_mid_run["first"] and not finite_weights(poison_mid_run["first"])
    # λ_k from the rebuilt D's gradient scale (the broken D's tracked scale had fallen to 0)
    assert torch.isfinite(res.disc_weights).all() and (res.disc_weights > 0).all()
    warned = [r.getMessage() for r in caplog.records if r.name == "lightning_ldam.sampling.discriminator"]
    assert any("discriminator's weights turned NaN/Inf while training; rebuilt it (seed 0)" in m and "(4 updates)" in m
               for m in warned)
    assert res.discriminator.training and all(p.requires_grad for p in res.discriminator.parameters())


def test_an_ascent_run_whose_discriminator_breaks_returns_a_rebuilt_one(poison_mid_run):
    poison_mid_run["at"] = 10
    res = ldam.sample(make_tiny_net(), "classifier.2:0", input_shape=INPUT_SHAPE, chains=3, steps=12,
                      real_data=_real(), method="ascent", disc_warmup=4)
    _assert_healthy(res)
    assert res.discriminator is not poison_mid_run["first"]


def test_a_rebuilt_discriminator_is_a_usable_warm_start(poison_mid_run):
    poison_mid_run["at"] = 6
    first = ldam.sample(make_tiny_net(), "classifier.2:0", input_shape=INPUT_SHAPE, chains=3, steps=10,
                        real_data=_real(), disc_warmup=4)
    again = ldam.sample(make_tiny_net(), "classifier.2:1", input_shape=INPUT_SHAPE, chains=3, steps=6,
                        real_data=_real(), discriminator=first.discriminator)
    assert again.discriminator is first.discriminator and again.config["disc_rebuilt"] is False
    assert torch.isfinite(again.images).all() and torch.isfinite(again.disc_scores).all()
