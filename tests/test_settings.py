"""One typed settings surface: SamplerConfig's sections are what sample(), the callback and the CLI take."""
from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn

import lightning_ldam as ldam
from lightning_ldam.callback.settings import CALLBACK_OWN_SETTINGS, SAMPLER_EXTRA_KWARGS
from lightning_ldam.cli import _COMPARE_OWN, build_parser
from lightning_ldam.errors import LDAMArgumentError
from lightning_ldam.sampling.config import SECTIONS, DiscriminatorConfig, LangevinConfig, SamplerConfig, SpeedOptions

NET_SEED = 0


def _net() -> nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(NET_SEED)
        return nn.Sequential(nn.Conv2d(1, 3, 3), nn.ReLU(), nn.Flatten(), nn.Linear(3 * 6 * 6, 4))


def _real() -> torch.Tensor:
    return torch.rand(32, 1, 8, 8, generator=torch.Generator().manual_seed(1))


def test_every_setting_name_belongs_to_one_section_and_round_trips():
    names = SamplerConfig.setting_names()
    assert len(names) == sum(len(dataclasses.fields(kind)) for kind in SECTIONS.values())
    cfg = SamplerConfig().with_settings(method="mala", steps=64, disc_weight=2.0, channels_last=True)
    assert (cfg.langevin.method, cfg.langevin.steps, cfg.discriminator.disc_weight, cfg.speed.channels_last) == \
        ("mala", 64, 2.0, True)
    assert SamplerConfig().with_settings(**cfg.settings()) == cfg
    assert SamplerConfig(langevin=LangevinConfig(method="mala", steps=64),
                         discriminator=DiscriminatorConfig(disc_weight=2.0),
                         speed=SpeedOptions(channels_last=True)) == cfg


def test_settings_are_frozen():
    cfg = SamplerConfig()
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.langevin.steps = 3  # type: ignore[misc]


@pytest.mark.parametrize("build, match", [
    (lambda: LangevinConfig(steps=0), r"^steps: expected a finite int > 0, got 0$"),
    (lambda: LangevinConfig(method="annealed"), r"^method: expected one of \['langevin', 'mala', 'hmc', 'ascent'\]"),
    (lambda: DiscriminatorConfig(disc_steps=1.5), r"^disc_steps: expected a finite int > 0, got 1.5$"),
    (lambda: SpeedOptions(autocast_dtype="bf16"), r"^autocast_dtype: expected a torch.dtype"),
    (lambda: SamplerConfig(langevin=LangevinConfig(method="hmc"), speed=SpeedOptions(cuda_graph=True)),
     r"^cuda_graph: method='hmc' runs its transitions eagerly"),
    (lambda: SamplerConfig().with_settings(stepsize=0.01),
     r"^stepsize: not a sampler setting; did you mean step_size\?"),
    (lambda: SamplerConfig(langevin={"steps": 3}), r"^langevin: expected a LangevinConfig, got \{'steps': 3\}$"),
])
def test_a_bad_setting_is_refused_when_the_record_is_built(build, match):
    with pytest.raises(LDAMArgumentError, match=match):
        build()


def test_sample_takes_the_config_or_its_fields_by_name_alike():
    kw = dict(input_shape=(1, 8, 8), chains=2, seed=3, real_data=_real())
    flat = ldam.sample(_net(), "3:0-1", steps=12, method="mala", disc_steps=1, **kw)
    config = SamplerConfig(langevin=LangevinConfig(steps=12, method="mala"), discriminator=DiscriminatorConfig(
        disc_steps=1))
    typed = ldam.sample(_net(), "3:0-1", config=config, **kw)
    mixed = ldam.sample(_net(), "3:0-1", config=config.with_settings(steps=20), steps=12, **kw)
    for other in (typed, mixed):
        assert torch.equal(flat.images, other.images) and torch.equal(flat.activations, other.activations)
    with pytest.raises(LDAMArgumentError, match=r"^config: expected a SamplerConfig or None"):
        ldam.sample(_net(), "3:0", config={"steps": 3}, **kw)


def test_the_returned_config_is_resolved_and_samples_the_same_again():
    kw = dict(input_shape=(1, 8, 8), chains=2, seed=5, real_data=_real())
    first = ldam.sample(_net(), "3:0-1", steps=10, **kw)
    used = first.sampler_config
    assert (used.langevin.burn_in, used.langevin.step_size, used.langevin.smoothness) == (5, 0.005, 1.5)
    assert (used.discriminator.disc_weight, used.discriminator.disc_warmup) == (1.0, 50)
    assert first.config["burn_in"] == 5 and first.config["chains"] == 2  # the same, by name, for logs
    again = ldam.sample(_net(), "3:0-1", config=used, **kw)
    assert torch.equal(first.images, again.images)
    plain = ldam.sample(_net(), "3:0", input_shape=(1, 8, 8), chains=2, steps=10).sampler_config
    assert (plain.discriminator.disc_weight, plain.langevin.smoothness) == (0.0, 0.0)  # no data: no D, no prior


@pytest.mark.parametrize("method, extra", [("langevin", {}), ("mala", {"target_accept": None}),
                                           ("ascent", {"noise": 0})])
def test_whole_number_step_settings_sample_as_their_floats(method, extra):
    kw = dict(input_shape=(1, 8, 8), chains=2, seed=2, steps=6, method=method, real_data=_real(), disc_warmup=1)
    as_int = ldam.sample(_net(), "3:0", step_size=1, burn_in_boost=2, **kw, **extra)
    as_float = ldam.sample(_net(), "3:0", step_size=1.0, burn_in_boost=2.0, **kw,
                           **{k: (float(v) if isinstance(v, int) else v) for k, v in extra.items()})
    assert isinstance(as_int.sampler_config.langevin.step_size, float)
    assert torch.equal(as_int.images, as_float.images)


def test_the_callback_takes_every_sampler_setting_but_its_own_arguments():
    assert {"method", "step_size", "disc_steps", "leapfrog_steps", "init", "progress"} <= SAMPLER_EXTRA_KWARGS
    assert {"chains", "seed", "value_range", "normalize"} <= CALLBACK_OWN_SETTINGS  # the callback's own arguments
    assert not SAMPLER_EXTRA_KWARGS & CALLBACK_OWN_SETTINGS
    with pytest.raises(LDAMArgumentError, match=r"unknown keys \['chains'\]"):  # its own argument, not a sampler's
        ldam.LDAMCallback("fc:0", sampler_kwargs={"chains": 4})
    with pytest.raises(LDAMArgumentError, match=r"^sampler_kwargs\['leapfrog_steps'\]: only method='hmc'"):
        ldam.LDAMCallback("fc:0", sampler_kwargs={"leapfrog_steps": 4})


def test_the_cli_has_an_option_for_every_sampler_setting():
    compare = build_parser()._subparsers._group_actions[0].choices["compare"]
    dests = {a.dest for a in compare._actions}
    spelled = {f.name for kind in SECTIONS.values() for f in dataclasses.fields(kind) if f.metadata["kind"] != "object"}
    assert spelled <= dests and {"chains", "seed", "value_range", "device"} <= dests
    assert set(_COMPARE_OWN) <= set(SamplerConfig.setting_names())


def test_the_callback_takes_its_options_as_sections_or_by_name_alike():
    from lightning_ldam.callback.settings import RoundConfig, ScheduleConfig

    flat = ldam.LDAMCallback("fc:0", chains=4, every_n_train_steps=5, every_n_epochs=None)
    typed = ldam.LDAMCallback("fc:0", rounds=RoundConfig(chains=4),
                              schedule=ScheduleConfig(every_n_train_steps=5, every_n_epochs=None))
    assert flat.settings == typed.settings and flat.state_key == typed.state_key
    assert flat.settings.schedule.every_n_epochs == 0  # None means off: normalised once
    assert flat._given == typed._given == {"neurons", "chains", "every_n_train_steps", "every_n_epochs"}
    assert ldam.LDAMCallback("fc:0", chains=8)._given == {"neurons"}  # the default, given: nothing set


@pytest.mark.parametrize("kwargs, match", [
    (dict(chain=4), r"^chain: not an LDAMCallback option; did you mean chains\?"),
    (dict(method="mala"), r"^method: not an LDAMCallback option;.*\(sampler settings go in sampler_kwargs\)$"),
    (dict(rounds={"chains": 4}), r"^rounds: expected a RoundConfig, got \{'chains': 4\}$"),
])
def test_an_unknown_callback_option_is_refused_with_a_close_match(kwargs, match):
    with pytest.raises(LDAMArgumentError, match=match):
        ldam.LDAMCallback("fc:0", **kwargs)
