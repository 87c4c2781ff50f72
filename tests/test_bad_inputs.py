"""Every bad argument raises before the first optimizer step, naming the argument (issue #11, item 3).

The table enumerates distinct bad inputs. Each raises :class:`~lightning_ldam.errors.LDAMArgumentError` whose
``.argument`` is the argument to fix: at construction when the value alone is wrong, else at ``setup`` or in
the first training batch's dry run, before its training step (``module.seen`` stays empty).
"""
from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from lightning_ldam.callback import LDAMCallback
from lightning_ldam.errors import LDAMArgumentError
from test_callback import FAST, NEURONS, SIZE, TinyModule, loader, make_trainer

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
    ("bogus-precondition", dict(sampler_kwargs={"method": "annealed", "precondition": "bogus"}),
     "sampler_kwargs['precondition']"),
    ("langevin-with-noise", dict(sampler_kwargs={"noise": 0.1}), "sampler_kwargs['noise']"),
    ("burn-in-past-steps", dict(sampler_kwargs={"burn_in": 600}), "sampler_kwargs['burn_in']"),
    ("unknown-method", dict(sampler_kwargs={"method": "hmc"}), "sampler_kwargs['method']"),
    ("unknown-spatial", dict(sampler_kwargs={"spatial": "max"}), "sampler_kwargs['spatial']"),
    ("autocast-not-a-dtype", dict(sampler_kwargs={"autocast_dtype": "bf16"}), "sampler_kwargs['autocast_dtype']"),
    pytest.param("cuda-graph-on-cpu", dict(sampler_kwargs={"cuda_graph": True}), "sampler_kwargs['cuda_graph']",
                 marks=no_cuda),
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


def test_the_table_holds_at_least_25_distinct_bad_inputs():
    ids = [getattr(c, "values", c)[0] for c in AT_CONSTRUCTION + BEFORE_THE_FIRST_STEP]
    assert len(set(ids)) == len(ids) >= 25
