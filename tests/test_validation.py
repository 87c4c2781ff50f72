"""Bad input: each a clear ValueError/TypeError naming the argument, raised before any sampling."""
import sys

import pytest
import torch
from helpers.models import INPUT_SHAPE, make_tiny_net
from torch import nn

import lightning_ldam as ldam


class Recording(nn.Module):
    """Records the batch size of every forward: sampling batches have ``neurons * chains`` rows."""

    def __init__(self):
        super().__init__()
        self.net = make_tiny_net()
        self.batches = []

    def forward(self, x):
        self.batches.append(x.shape[0])
        return self.net(x)


CHAINS = 3
GOOD = dict(input_shape=INPUT_SHAPE, chains=CHAINS, steps=3)


def _raises_before_sampling(exc, match, neurons="net.classifier.2:1", **overrides):
    model = overrides.pop("model", None) or Recording()
    kwargs = {**GOOD, **overrides}
    with pytest.raises(exc, match=match):
        ldam.sample(model, neurons, **kwargs)
    if isinstance(model, Recording):
        # at most the two-image probe forward that learns layer sizes; never a sampling batch
        assert all(b == 2 for b in model.batches) and CHAINS != 2, model.batches
        assert all(not m._forward_hooks for m in model.modules())
        assert model.training and all(p.requires_grad for p in model.parameters())


def test_the_valid_call_does_sample():
    model = Recording()
    ldam.sample(model, "net.classifier.2:1", **GOOD)
    assert CHAINS in model.batches  # so the checks below really distinguish "raised before sampling"


def test_unknown_layer_path_lists_close_matches_and_hint():
    with pytest.raises(ValueError, match=r"neurons: .*'net\.clasifier\.2'.*"
                                         r"Close matches: .*'net\.classifier\.2'.*list_targets") as info:
        ldam.sample(Recording(), "net.clasifier.2:1", **GOOD)
    assert "net.classifier.2" in str(info.value)


def test_unknown_layer_without_close_match_still_hints_list_targets():
    _raises_before_sampling(ValueError, r"neurons: layer path 'zzz'.*list_targets", neurons="zzz:0")


def test_index_out_of_range_names_the_layer_count():
    _raises_before_sampling(ValueError, r"neurons: index 7 is out of range .*'net\.classifier\.2'.* 5 units "
                                        r"\(valid: 0-4\)", neurons="net.classifier.2:7")
    _raises_before_sampling(ValueError, r"neurons: index 6 .* 6 units", neurons={"net.features.3": [0, 6]})


@pytest.mark.parametrize("neurons, match", [
    ([], r"neurons: got an empty list"),
    ({}, r"neurons: got an empty dict"),
    ({"net.classifier.2": []}, r"neurons: empty index list for layer 'net\.classifier\.2'"),
    ("conv1", r"neurons: spec 'conv1' has no ':'"),
    ("conv1:abc", r"neurons: cannot read index 'abc' for layer 'conv1'"),
    ("conv1:5-2", r"neurons: range '5-2' for layer 'conv1' is empty"),
    (":3", r"neurons: spec ':3' has an empty layer path"),
])
def test_malformed_neuron_specs(neurons, match):
    _raises_before_sampling(ValueError, match, neurons=neurons)


@pytest.mark.parametrize("neurons", [42, [{"a": 1}], ("conv1", True), ("conv1", [1, "2"])])
def test_wrong_spec_types_are_type_errors(neurons):
    _raises_before_sampling(TypeError, r"neurons: ", neurons=neurons)


def test_layer_that_never_runs_in_forward():
    model = Recording()
    model.unused = nn.Linear(3, 3)  # registered, never called by forward
    _raises_before_sampling(ValueError, r"neurons: layers \['unused'\] were not called", model=model,
                            neurons="unused:0")


def test_input_shape_the_model_rejects_names_the_shape_tried():
    _raises_before_sampling(ValueError, r"input_shape: the model rejected an input of shape \(2, 1, 10, 10\)",
                            input_shape=(1, 10, 10))


@pytest.mark.parametrize("input_shape", [(), (1, 0, 12), "1x12x12", (1, 12.0, 12), None])
def test_malformed_input_shape(input_shape):
    _raises_before_sampling(ValueError, r"input_shape: expected a per-sample shape", input_shape=input_shape)


@pytest.mark.parametrize("real_data", [torch.rand(4, 1, 10, 10), torch.rand(4, 12, 12),
                                       [torch.rand(2, 3, 12, 12)]])
def test_real_data_of_the_wrong_shape(real_data):
    _raises_before_sampling(ValueError, r"real_data: expected images of shape \[N, 1, 12, 12\]",
                            real_data=real_data)


def test_real_data_outside_value_range():
    _raises_before_sampling(ValueError, r"real_data: values span .* outside value_range",
                            real_data=torch.rand(4, 1, 12, 12) * 255)


@pytest.mark.parametrize("name", ["chains", "steps", "step_size", "temperature"])
@pytest.mark.parametrize("value", [0, -1])
def test_non_positive_numbers(name, value):
    _raises_before_sampling(ValueError, rf"{name}: expected a finite .* > 0, got {value}", **{name: value})


@pytest.mark.parametrize("name, value", [("chains", 2.5), ("steps", 3.0), ("chains", True),
                                         ("step_size", float("nan")), ("burn_in", -1), ("disc_warmup", -1),
                                         ("temperature", 0.0), ("scale", -1.0), ("burn_in_boost", float("inf"))])
def test_wrong_numbers(name, value):
    _raises_before_sampling(ValueError, rf"{name}: expected", **{name: value})


@pytest.mark.parametrize("value_range", [(1.0, 1.0), (1.0, 0.0), (0.0, float("inf")), (0.0,), "ab"])
def test_value_range_needs_lo_below_hi(value_range):
    _raises_before_sampling(ValueError, r"value_range: expected \(lo, hi\) with lo < hi",
                            value_range=value_range)


@pytest.mark.parametrize("model", [None, "resnet18", lambda x: x, torch.zeros(3)])
def test_non_module_model_is_a_type_error(model):
    with pytest.raises(TypeError, match=r"model: expected a torch\.nn\.Module, got "):
        ldam.sample(model, "0:0", **GOOD)
    with pytest.raises(TypeError, match=r"model: expected a torch\.nn\.Module"):
        ldam.list_targets(model, INPUT_SHAPE)


def test_init_data_needs_real_data():
    _raises_before_sampling(ValueError, r"init: 'data' .* real_data", init="data")


@pytest.mark.parametrize("disc_weight", [0.5, 2])
def test_disc_weight_needs_real_data_or_a_discriminator(disc_weight):
    _raises_before_sampling(ValueError, rf"disc_weight: {disc_weight} > 0 needs real_data",
                            disc_weight=disc_weight)


def test_discriminator_needs_image_inputs():
    mlp = nn.Sequential(nn.Linear(6, 4))
    with pytest.raises(ValueError, match=r"disc_weight: the discriminator needs image inputs"):
        ldam.sample(mlp, "0:0", input_shape=(6,), chains=2, steps=2, real_data=torch.rand(8, 6))


@pytest.mark.parametrize("name, value", [
    ("spatial", "max"), ("init", "zeros"), ("init", None), ("method", "nuts"), ("scale", "std"), ("metric", "dense"),
])
def test_bad_choices_list_the_accepted_values(name, value):
    _raises_before_sampling(ValueError, rf"{name}: expected one of \[.*\], got {value!r}", **{name: value})


def test_a_diagonal_metric_needs_a_langevin_method_and_an_adapting_part_to_measure_it_in():
    _raises_before_sampling(ValueError, r"^metric: method='ascent' has no metric \(got metric='diagonal'\)",
                            method="ascent", metric="diagonal")
    _raises_before_sampling(ValueError, r"^metric: .* at least 4 steps; got burn_in=6, search=4 \(2 adapting",
                            steps=10, burn_in=6, search=4, metric="diagonal")


@pytest.mark.parametrize("name, value", [("precondition", "adam"), ("schedule", "exp"), ("noise", -0.1)])
def test_the_annealed_search_checks_its_own_knobs(name, value):
    match = rf"{name}: expected one of \[.*\], got {value!r}" if name != "noise" else r"noise: expected a finite"
    _raises_before_sampling(ValueError, match, method="ascent", **{name: value})


@pytest.mark.parametrize("name, value", [("precondition", "rms"), ("schedule", "cosine"), ("noise", 0.1)])
def test_ascent_only_knobs_are_refused_by_the_langevin_methods(name, value):
    _raises_before_sampling(ValueError, rf"^{name}: only method='ascent' takes it \(got {name}={value!r} with "
                            rf"method='langevin'\)", **{name: value})


@pytest.mark.parametrize("kw, match", [
    ({"burn_in": 8, "steps": 8}, r"^burn_in: expected fewer than steps=8 burn-in steps, got 8$"),
    ({"burn_in": 2, "method": "ascent"}, r"^burn_in: method='ascent' has no burn-in \(got burn_in=2\)$"),
    ({"burn_in_boost": 0.5}, r"^burn_in_boost: expected a number >= 1"),
    ({"adapt_disc": "yes"}, r"^adapt_disc: expected True or False, got 'yes'$"),
])
def test_burn_in_settings(kw, match):
    _raises_before_sampling((ValueError, TypeError), match, **kw)


@pytest.mark.parametrize("normalize, match", [
    ((0.5,), r"normalize: expected \(mean, std\)"),
    (([0.5, 0.5], 0.2), r"normalize: mean must have 1 or 1 \(channels\) values"),
    ((0.5, 0.0), r"normalize: std must be finite and > 0"),
])
def test_bad_normalize(normalize, match):
    _raises_before_sampling(ValueError, match, normalize=normalize)


@pytest.mark.parametrize("name, value, match", [
    ("seed", 1.5, r"seed: expected an int"),
    ("discriminator", "D", r"discriminator: expected a torch\.nn\.Module or None"),
])
def test_other_type_errors(name, value, match):
    _raises_before_sampling(TypeError, match, **{name: value})


def test_float64_model_is_sampled_in_its_own_dtype():
    net = make_tiny_net().double().eval()
    res = ldam.sample(net, "classifier.2:0", input_shape=INPUT_SHAPE, chains=2, steps=3)
    assert torch.isfinite(res.activations).all()
    with torch.no_grad():
        expected = net(res.images[0].double())[:, 0].float()
    torch.testing.assert_close(res.activations[0], expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("progress", [-1.0, float("inf"), "soon"])
def test_bad_progress_raises_naming_the_argument(progress):
    _raises_before_sampling(ValueError, rf"^progress: expected a finite number >= 0, got {progress!r}$",
                            progress=progress)


@pytest.mark.parametrize("progress, shown", [(True, True), (0.0, True), (3600.0, False), (False, False)])
def test_progress_bar_appears_only_after_its_delay(capsys, monkeypatch, progress, shown):
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)  # a terminal: the bar is off on pipes and files
    ldam.sample(make_tiny_net(), "classifier.2:0", input_shape=INPUT_SHAPE, chains=2, steps=3, progress=progress)
    assert ("LDAM" in capsys.readouterr().err) is shown


@pytest.mark.parametrize("normalize, mean, std", [
    ((0.5, 0.25), [0.5], [0.25]),
    (((0.5, 0.5, 0.5), 0.2), [0.5, 0.5, 0.5], [0.2]),
    ((0.5, (0.2, 0.3, 0.4)), [0.5], [0.2, 0.3, 0.4]),  # mixed scalar and per-channel: each broadcasts on its own
    (((0.5,), [0.2, 0.3, 0.4]), [0.5], [0.2, 0.3, 0.4]),
    ((torch.tensor([[0.1], [0.2], [0.3]]), [0.2, 0.2, 0.2]), [0.1, 0.2, 0.3], [0.2, 0.2, 0.2]),
], ids=["scalar", "per-channel-mean", "scalar-mean-per-channel-std", "one-value-mean", "nested-tensor"])
def test_check_normalize_returns_flat_mean_and_std(normalize, mean, std):
    """What the sampler normalises with: ``(mean, std)`` in that order, flat float tensors of 1 or C values."""
    from lightning_ldam import _validation as V

    got = V.check_normalize(normalize, 3)
    assert isinstance(got, tuple) and len(got) == 2
    for t, expected in zip(got, (mean, std)):
        assert isinstance(t, torch.Tensor) and t.is_floating_point() and t.shape == (len(expected),)
        torch.testing.assert_close(t, torch.tensor(expected))
    assert V.check_normalize(None, 3) is None
    # and the sampler feeds the model (x − mean) / std with them: a constant image maps to the expected input
    x = torch.full((1, 3, 2, 2), 0.7)
    m, s = (t.view(1, -1, 1, 1) for t in got)
    torch.testing.assert_close(((x - m) / s)[0, :, 0, 0],
                               ((0.7 - torch.tensor(mean)) / torch.tensor(std)).expand(3))


def test_leapfrog_steps_belong_to_hmc_and_are_a_positive_count():
    _raises_before_sampling(ValueError, r"^leapfrog_steps: only method='hmc' takes it \(got leapfrog_steps=8 with "
                                        r"method='mala'\)", method="mala", leapfrog_steps=8)
    _raises_before_sampling(ValueError, r"^leapfrog_steps: expected a finite int > 0, got 0", method="hmc",
                            leapfrog_steps=0)


def test_hmc_refuses_cuda_graphs_before_sampling():
    _raises_before_sampling(ValueError, r"^cuda_graph: method='hmc' runs its transitions eagerly", method="hmc",
                            cuda_graph=True)
