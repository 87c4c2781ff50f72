"""Every bad argument raises before the first optimizer step, naming the argument (issue #11, item 3).

The table enumerates distinct bad inputs. Each raises :class:`~lightning_ldam.errors.LDAMArgumentError` whose
``.argument`` is the argument to fix: at construction when the value alone is wrong, else at ``setup`` or in
the first training batch's dry run, before its training step (``module.seen`` stays empty).
"""
from __future__ import annotations

import pytest
import torch
from helpers.models import SIZE
from helpers.training import FAST, NEURONS, TinyModule, loader, make_trainer
from torch.utils.data import DataLoader, TensorDataset

from lightning_ldam.callback import LDAMCallback
from lightning_ldam.errors import LDAMArgumentError

pytestmark = pytest.mark.usefixtures("lightning_env")

no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device makes 'cuda' a valid device")

#: (id, LDAMCallback keyword overrides, the argument the error must name). Raised at construction.
AT_CONSTRUCTION = [
    ("spec-without-colon", dict(neurons="features.0"), "neurons"),
    ("empty-index-list", dict(neurons={"features.0": []}), "neurons"),
    ("negative-epochs", dict(every_n_epochs=-1), "every_n_epochs"),
    ("float-steps-schedule", dict(every_n_train_steps=1.5), "every_n_train_steps"),
    ("on-fit-end-not-bool", dict(on_fit_end="yes"), "on_fit_end"),
    ("zero-overhead", dict(max_overhead=0), "max_overhead"),
    ("zero-chains", dict(chains=0), "chains"),
    ("negative-steps", dict(steps=-3), "steps"),
    ("zero-size-shape", dict(input_shape=(0, SIZE, SIZE)), "input_shape"),
    ("reversed-range", dict(value_range=(1.0, 0.0)), "value_range"),
    ("normalize-channels", dict(input_shape=(1, SIZE, SIZE), normalize=((0.5, 0.5), (0.2, 0.2))), "normalize"),
    ("negative-std", dict(normalize=(0.5, -0.2)), "normalize"),
    ("negative-lambda", dict(disc_weight=-1.0), "disc_weight"),
    ("empty-reservoir", dict(reservoir_size=0), "reservoir_size"),
    ("float-input-key", dict(input_key=3.5), "input_key"),
    ("empty-module", dict(module=""), "module"),
    ("unknown-averaging", dict(averaging="swa"), "averaging"),
    ("decay-one", dict(ema_decay=1.0), "ema_decay"),
    ("zero-ema-every", dict(ema_every_n_steps=0), "ema_every_n_steps"),
    ("garbled-sample-device", dict(sample_device="gpu please"), "sample_device"),
    pytest.param("cuda-ema-device", dict(ema_device="cuda"), "ema_device", marks=no_cuda),
    pytest.param("cuda-sample-device", dict(sample_device="cuda:0"), "sample_device", marks=no_cuda),
    ("string-seed", dict(seed="0"), "seed"),
    ("zero-upscale", dict(upscale=0), "upscale"),
    ("unknown-sampler-key", dict(sampler_kwargs={"bogus": 1}), "sampler_kwargs"),
    ("negative-step-size", dict(sampler_kwargs={"step_size": -1}), "sampler_kwargs['step_size']"),
    ("bogus-precondition", dict(sampler_kwargs={"method": "ascent", "precondition": "bogus"}),
     "sampler_kwargs['precondition']"),
    ("langevin-with-noise", dict(sampler_kwargs={"noise": 0.1}), "sampler_kwargs['noise']"),
    ("burn-in-past-steps", dict(sampler_kwargs={"burn_in": 600}), "sampler_kwargs['burn_in']"),
    ("unknown-method", dict(sampler_kwargs={"method": "nuts"}), "sampler_kwargs['method']"),
    ("target-accept-with-langevin", dict(sampler_kwargs={"target_accept": 0.6}), "sampler_kwargs['target_accept']"),
    ("metric-word", dict(sampler_kwargs={"metric": "dense"}), "sampler_kwargs['metric']"),
    ("target-accept-one", dict(sampler_kwargs={"method": "mala", "target_accept": 1.0}),
     "sampler_kwargs['target_accept']"),
    ("target-accept-word", dict(sampler_kwargs={"method": "mala", "target_accept": "high"}),
     "sampler_kwargs['target_accept']"),
    ("search-past-burn-in", dict(sampler_kwargs={"burn_in": 1, "search": 2}), "sampler_kwargs['search']"),
    ("search-negative", dict(sampler_kwargs={"search": -1}), "sampler_kwargs['search']"),
    ("search-with-ascent", dict(sampler_kwargs={"method": "ascent", "search": 0}), "sampler_kwargs['search']"),
    ("unknown-spatial", dict(sampler_kwargs={"spatial": "max"}), "sampler_kwargs['spatial']"),
    ("autocast-not-a-dtype", dict(sampler_kwargs={"autocast_dtype": "bf16"}), "sampler_kwargs['autocast_dtype']"),
    pytest.param("cuda-graph-on-cpu", dict(sampler_kwargs={"cuda_graph": True}), "sampler_kwargs['cuda_graph']",
                 marks=no_cuda),
    # issue #19: values that passed the checks but were wrong, and more of each kind
    ("superscript-digit", dict(neurons="features.0:²"), "neurons"),
    ("arabic-indic-digit", dict(neurons="features.0:٣"), "neurons"),
    ("unicode-digit-range", dict(neurons="features.0:0-²"), "neurons"),
    ("unicode-digit-pick", dict(neurons="features.0:top²"), "neurons"),
    ("zero-pick", dict(neurons="features.0:top0"), "neurons"),
    ("empty-range", dict(neurons="features.0:3-1"), "neurons"),
    ("word-index", dict(neurons="features.0:first"), "neurons"),
    ("float-index-list", dict(neurons={"features.0": [0, 1.5]}), "neurons"),
    ("unknown-layer-setting", dict(neurons={"features.0": {"units": "0", "lambda": 1.0}}), "neurons"),
    ("settings-without-units", dict(neurons={"features.0": {"disc_weight": 0.0}}), "neurons"),
    ("neurons-not-a-spec", dict(neurons=3.5), "neurons"),
    ("seed-past-64-bits", dict(seed=2 ** 70), "seed"),
    ("negative-seed", dict(seed=-1), "seed"),
    ("bool-seed", dict(seed=True), "seed"),
    ("nan-mean", dict(normalize=(float("nan"), 0.2)), "normalize"),
    ("inf-mean", dict(normalize=(float("inf"), 0.2)), "normalize"),
    ("inf-std", dict(normalize=(0.5, float("inf"))), "normalize"),
    ("nan-std", dict(normalize=(0.5, float("nan"))), "normalize"),
    ("normalize-not-a-pair", dict(normalize=(0.5, 0.2, 0.1)), "normalize"),
    ("nan-range", dict(value_range=(float("nan"), 1.0)), "value_range"),
    ("one-value-range", dict(value_range=(0.5,)), "value_range"),
    ("nan-lambda", dict(disc_weight=float("nan")), "disc_weight"),
    ("inf-overhead", dict(max_overhead=float("inf")), "max_overhead"),
    ("string-chains", dict(chains="8"), "chains"),
    ("bool-chains", dict(chains=True), "chains"),
    ("float-reservoir", dict(reservoir_size=2.5), "reservoir_size"),
    ("nan-decay", dict(ema_decay=float("nan")), "ema_decay"),
    ("negative-decay", dict(ema_decay=-0.1), "ema_decay"),
    ("redraw-above-one", dict(redraw=1.5), "redraw"),
    ("redraw-word", dict(redraw="some"), "redraw"),
    ("persistent-word", dict(persistent="yes"), "persistent"),
    ("negative-shape", dict(input_shape=(1, -12, 12)), "input_shape"),
    ("every-schedule-off", dict(every_n_epochs=None, on_fit_end=False),
     "every_n_epochs/every_n_train_steps/on_fit_end/during_validation"),
    ("aliases-share-a-name", dict(layer_aliases={"features.0": "x", "classifier.2": "x"}), "layer_aliases"),
    ("alias-with-slash", dict(layer_aliases={"features.0": "a/b"}), "layer_aliases"),
    ("labels-not-a-list", dict(labels={"classifier.2": "abc"}), "labels"),
    ("sampler-kwargs-a-list", dict(sampler_kwargs=[("method", "mala")]), "sampler_kwargs"),
    ("negative-progress", dict(sampler_kwargs={"progress": -1}), "sampler_kwargs['progress']"),
    ("tensor-init", dict(sampler_kwargs={"init": torch.zeros(1, SIZE, SIZE)}), "sampler_kwargs['init']"),
    ("mala-with-schedule", dict(sampler_kwargs={"method": "mala", "schedule": "cosine"}),
     "sampler_kwargs['schedule']"),
]


@pytest.mark.parametrize("case, overrides, argument", AT_CONSTRUCTION)
def test_bad_arguments_raise_at_construction_naming_the_argument(case, overrides, argument):
    kwargs = {"neurons": NEURONS, **FAST, **overrides}
    with pytest.raises(LDAMArgumentError) as info:
        LDAMCallback(**kwargs)
    assert info.value.argument == argument
    assert str(info.value).startswith(f"{argument}: ")


def _uint8_loader():
    x = (torch.rand(16, 1, SIZE, SIZE, generator=torch.Generator().manual_seed(0)) * 255).to(torch.uint8)
    return DataLoader(TensorDataset(x, torch.arange(16)), batch_size=4)


def _standardised_loader():
    x = torch.randn(16, 1, SIZE, SIZE, generator=torch.Generator().manual_seed(0))  # a normalising Dataset's output
    return DataLoader(TensorDataset(x, torch.arange(16)), batch_size=4)


#: (id, LDAMCallback keyword overrides, training data, the argument, a phrase of the message). Raised by
#: ``setup`` or the first batch's dry run: they need the model or the batches.
BEFORE_THE_FIRST_STEP = [
    ("unknown-layer", dict(neurons="features.9:0"), loader, "neurons", "not a module"),
    ("index-out-of-range", dict(neurons="classifier.2:7"), loader, "neurons", "out of range"),
    ("unknown-module", dict(module="backbone"), loader, "module", "no submodule"),
    ("shape-disagrees", dict(input_shape=(3, SIZE, SIZE)), loader, "input_shape", "does not match"),
    ("key-not-in-batch", dict(input_key="image"), loader, "input_key", "cannot read"),
    ("uint8-batches", dict(input_key=0), _uint8_loader, "input_key", "convert them to float"),
    ("normalize-vs-data", dict(normalize=((0.5, 0.5, 0.5), (0.2, 0.2, 0.2))), loader, "normalize", "channels"),
    ("box-misses-the-data", dict(value_range=(0.0, 0.5)), loader, "value_range", "outside value_range"),
    # issue #19
    ("reservoir-past-memory", dict(reservoir_size=10 ** 9), loader, "reservoir_size", "GiB of host memory"),
    ("labels-for-no-layer", dict(labels={"classifier.9": ["a"]}), loader, "labels", "not a module"),
    ("alias-for-no-layer", dict(layer_aliases={"featurs.0": "conv"}), loader, "layer_aliases", "Close matches"),
    ("alias-takes-a-sampled-name", dict(layer_aliases={"classifier.2": "features.0"}), loader, "layer_aliases",
     "would both write"),
    ("index-past-the-tuple", dict(input_key=5), loader, "input_key", "cannot read"),
    ("normalize-on-standardised-batches", dict(normalize=(0.5, 0.25)), _standardised_loader, "normalize",
     "normalised twice"),
    ("lambda-on-a-layer-past-range", dict(neurons={"classifier.2": {"units": [9], "disc_weight": 0.0}}), loader,
     "neurons", "out of range"),
]


@pytest.mark.parametrize("case, overrides, data, argument, phrase", BEFORE_THE_FIRST_STEP)
def test_bad_arguments_raise_before_the_first_optimizer_step(tmp_path, case, overrides, data, argument, phrase):
    cb = LDAMCallback(**{"neurons": NEURONS, **FAST, **overrides})
    module = TinyModule()
    before = {k: v.clone() for k, v in module.state_dict().items()}
    with pytest.raises(LDAMArgumentError) as info:
        make_trainer(tmp_path, [cb]).fit(module, data())
    assert info.value.argument == argument and phrase in str(info.value), str(info.value)
    assert module.seen == []  # no training step ran
    assert all(torch.equal(before[k], v) for k, v in module.state_dict().items())


def test_a_message_never_prints_a_whole_tensor():
    big = torch.rand(3, 224, 224)
    with pytest.raises(LDAMArgumentError) as info:
        LDAMCallback(NEURONS, **{**FAST, "sampler_kwargs": {"init": big}})
    assert "a tensor of shape (3, 224, 224) and dtype torch.float32" in str(info.value) and len(str(info.value)) < 200


class SharedReLU(TinyModule):
    """One ReLU module used twice in forward, as torchvision's ResNet blocks use theirs."""

    def __init__(self):
        super().__init__(dropout=0.0)
        self.act = torch.nn.ReLU()

    def forward(self, x):
        h = self.act(self.features[0](x))
        return self.classifier(self.act(self.features[1](h)))


def test_a_module_called_twice_per_forward_is_refused_naming_its_calls(tmp_path):
    cb = LDAMCallback("act:0", **FAST)
    module = SharedReLU()
    with pytest.raises(LDAMArgumentError) as info:
        make_trainer(tmp_path, [cb]).fit(module, loader())
    assert info.value.argument == "neurons" and "'act' 2 times" in str(info.value)
    assert module.seen == []


def test_the_table_holds_at_least_60_distinct_bad_inputs():
    from helpers.limits import MODEL_LIMITS

    ids = [getattr(c, "values", c)[0] for c in AT_CONSTRUCTION + BEFORE_THE_FIRST_STEP + MODEL_LIMITS]
    assert len(set(ids)) == len(ids) >= 60


def test_normalize_on_pixel_space_batches_samples_through_it(tmp_path):
    """The other side of the rule: pixel-space batches with normalize= train and sample, rounds and all."""
    cb = LDAMCallback(NEURONS, every_n_train_steps=2, every_n_epochs=None, normalize=(0.5, 0.25), **FAST)
    make_trainer(tmp_path, [cb]).fit(TinyModule(), loader())
    assert cb.stats.rounds == 2 and cb.stats.failed_rounds == 0


def test_an_averager_listed_before_the_callback_is_reported_at_setup(tmp_path):
    import warnings

    from lightning.pytorch.callbacks import EMAWeightAveraging, LambdaCallback

    said_by_start = []
    spy = LambdaCallback(on_train_start=lambda trainer, module: said_by_start.append(
        [str(w.message) for w in caught if "comes before LDAMCallback" in str(w.message)]))
    cb = LDAMCallback(NEURONS, **FAST)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        make_trainer(tmp_path, [EMAWeightAveraging(decay=0.9), cb, spy], max_steps=1).fit(TinyModule(), loader())
    assert len(said_by_start[0]) == 1 and "EMAWeightAveraging" in said_by_start[0][0]
