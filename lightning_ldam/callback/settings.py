"""``LDAMCallback``'s arguments: checked at construction, kept as one record, saved in its checkpoint state.

Everything that can be checked without the model or a batch is checked here, so a bad argument fails
when the callback is built, before ``fit``. The rest (neuron indices, ``input_shape`` and ``input_key`` against
the batches, the sampler settings against the network) is checked by a two-step dry run on the first training
batch, before its optimizer step (:meth:`LDAMCallback.on_train_batch_start`). An error there ends the run only
when it names an argument the user set (:func:`argument_given`); the callback meets the others with a fallback.
"""
from __future__ import annotations

import dataclasses
import difflib
import functools
from dataclasses import dataclass
from typing import Any, Callable, Dict, Optional, Tuple, cast

import torch

from lightning_ldam import _validation as V
from lightning_ldam.engine.rounds import RoundPlan, resolve_targets
from lightning_ldam.errors import LDAMArgumentError
from lightning_ldam.report.labels import check_labels, labeller_of
from lightning_ldam.sampling.config import INITS, ChainsConfig, SamplerConfig
from lightning_ldam.sampling.progress import Progress
from lightning_ldam.sampling.targets import NeuronRequest, NeuronSpec, canonical_path, find_layer, parse_neurons

__all__ = ["CallbackSettings", "ScheduleConfig", "DataConfig", "WeightsConfig", "RoundConfig", "OutputConfig",
           "CALLBACK_SECTIONS", "OPTION_SECTIONS", "SAMPLER_EXTRA_KWARGS", "AVERAGING", "check_on_setup",
           "check_on_first_batch", "argument_given", "check_pixel_space"]

#: Sampler settings the callback sets itself: its own arguments of those names (``sample_device`` is ``device``),
#: and the chains it continues from round to round.
CALLBACK_OWN_SETTINGS = frozenset({"steps", "disc_weight", "chains", "seed", "value_range", "normalize", "device",
                                   "continued"})
#: ``lightning_ldam.sample``'s own arguments (not settings of its config) that ``sampler_kwargs`` may give.
_CALL_KWARGS = frozenset({"progress"})
#: ``lightning_ldam.sample`` keywords that may go through ``sampler_kwargs``: every sampler setting
#: (:class:`~lightning_ldam.sampling.config.SamplerConfig`) but the callback's own, and a few of the call's.
SAMPLER_EXTRA_KWARGS = frozenset(SamplerConfig.setting_names()) - CALLBACK_OWN_SETTINGS | _CALL_KWARGS
AVERAGING = ("auto", "ema", None)


def _option(default, help: str):
    """A callback option: its default (written here once) and the help the docs show."""
    return dataclasses.field(default=default, metadata={"help": help})


@dataclass(frozen=True)
class ScheduleConfig:
    """When rounds run."""

    every_n_epochs: Optional[int] = _option(1, "sample at the end of every n-th training epoch (None/0: off)")
    every_n_train_steps: Optional[int] = _option(None, "sample every n optimizer steps (None/0: off)")
    on_fit_end: bool = _option(True, "also sample once when fit ends (this round always runs)")
    during_validation: bool = _option(False, "also sample at the end of every validation run (trainer.validate's "
                                             "batches then feed the reservoir)")
    max_overhead: Optional[float] = _option(0.05, "keep sampling under this share of the training wall time "
                                                  "(None: every due round runs)")


@dataclass(frozen=True)
class DataConfig:
    """What the network is and what it takes, and the real inputs kept."""

    input_shape: Optional[Tuple[int, ...]] = _option(None, "per-sample input shape (default: from the batches)")
    value_range: Optional[Tuple[float, float]] = _option(None, "the input box (default: from the batches)")
    normalize: Any = _option(None, "(mean, std) if the network expects normalised inputs of pixel-space data")
    input_key: Any = _option(None, "how to read inputs from a batch: an int index, a str key or a callable")
    reservoir_size: int = _option(256, "real training inputs kept for the discriminator")
    module: Optional[str] = _option(None, "attribute path of the submodule to run (default: the LightningModule)")


@dataclass(frozen=True)
class WeightsConfig:
    """Which weight variants are sampled besides the raw ones."""

    averaging: Optional[str] = _option("auto", "auto: Lightning's averagers if the trainer has one, else an own EMA; "
                                                "ema: always the own EMA; None: raw weights only")
    ema_decay: float = _option(0.999, "decay of the own EMA")
    ema_every_n_steps: int = _option(1, "update the own EMA every n optimizer steps")
    ema_device: Optional[torch.device] = _option(None, "keep the own EMA here (default: the model's device)")


@dataclass(frozen=True)
class RoundConfig:
    """What one round samples."""

    chains: int = _option(ChainsConfig.chains, "chains per neuron")
    steps: Optional[int] = _option(None, "steps per round (default: the sampler's while a discriminator is fresh, "
                                         "fewer once every variant's is warm)")
    disc_weight: Optional[float] = _option(None, "lambda (default: the sampler's with real data)")
    seed: int = _option(ChainsConfig.seed, "seed of every round (all variants share their starts and noise)")
    sample_device: Optional[torch.device] = _option(None, "where to sample (default: the module's device)")
    persistent: bool = _option(True, "each variant's chains continue from round to round")
    redraw: float = _option(0.25, "share of each variant's chains restarted every round")
    sampler_kwargs: Dict[str, Any] = _option(None, "any other lightning_ldam.sample setting, by name")


@dataclass(frozen=True)
class OutputConfig:
    """How rounds are shown."""

    upscale: Optional[int] = _option(None, "nearest-neighbour factor for logged images (default: tiles >= 56 px)")
    labels: Any = _option(None, "row labels: {layer path: [name of unit 0, ...]} or a callable (layer, index) -> str")
    layer_aliases: Optional[Dict[str, str]] = _option(None, "{layer path: name} used in the tags instead of the path")


#: The sections of :class:`CallbackSettings`, by attribute.
CALLBACK_SECTIONS = {"schedule": ScheduleConfig, "data": DataConfig, "weights": WeightsConfig, "rounds": RoundConfig,
                     "output": OutputConfig}
#: Every option name and its section.
OPTION_SECTIONS = {f.name: name for name, kind in CALLBACK_SECTIONS.items() for f in dataclasses.fields(kind)}


@dataclass(frozen=True)
class CallbackSettings:
    """The callback's arguments, checked when built (see :class:`~lightning_ldam.callback.LDAMCallback`): the
    neurons and five sections of options. Every error names the option
    (:class:`~lightning_ldam.errors.LDAMArgumentError`).

    Example::

        >>> s = CallbackSettings.build("fc:all", {}, {"chains": 4, "every_n_epochs": 2})
        >>> s.rounds.chains, s.schedule.every_n_epochs, s.schedule.every_n_train_steps
        (4, 2, 0)
    """

    neurons: NeuronSpec
    schedule: ScheduleConfig = dataclasses.field(default_factory=ScheduleConfig)
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    weights: WeightsConfig = dataclasses.field(default_factory=WeightsConfig)
    rounds: RoundConfig = dataclasses.field(default_factory=RoundConfig)
    output: OutputConfig = dataclasses.field(default_factory=OutputConfig)

    def __post_init__(self) -> None:
        for name, kind in CALLBACK_SECTIONS.items():
            if not isinstance(getattr(self, name), kind):
                raise LDAMArgumentError(name, f"expected a {kind.__name__}, got {V.shown(getattr(self, name))}")
        _ = self.request  # parsed here, once: a bad spec fails at construction
        checked = _checked(self.options())
        for name, kind in CALLBACK_SECTIONS.items():
            object.__setattr__(self, name, kind(**{f.name: checked[f.name] for f in dataclasses.fields(kind)}))

    @classmethod
    def build(cls, neurons: NeuronSpec, sections: Dict[str, Any], options: Dict[str, Any]) -> "CallbackSettings":
        """The settings from ``sections`` (``{"rounds": RoundConfig(...)}``, absent ones default) with ``options``
        (flat option names) over them; an unknown name is refused with a close match."""
        for name in options:
            if name not in OPTION_SECTIONS:
                close = difflib.get_close_matches(name, OPTION_SECTIONS, n=1)
                hint = f"did you mean {close[0]}? " if close else ""
                raise LDAMArgumentError(name, f"not an LDAMCallback option; {hint}accepted: {sorted(OPTION_SECTIONS)} "
                                              f"(sampler settings go in sampler_kwargs)")
        parts: Dict[str, Any] = {}
        for name, kind in CALLBACK_SECTIONS.items():
            base = sections.get(name) or kind()
            own = {k: v for k, v in options.items() if OPTION_SECTIONS[k] == name}
            # a base of another type goes through as it is: __post_init__ refuses it, naming the section
            parts[name] = dataclasses.replace(cast(Any, base), **own) if own and isinstance(base, kind) else base
        return cls(neurons, **parts)

    def options(self) -> Dict[str, Any]:
        """Every option by its flat name (as the checkpoint state and the messages name them)."""
        return {f.name: getattr(getattr(self, name), f.name)
                for name, kind in CALLBACK_SECTIONS.items() for f in dataclasses.fields(kind)}

    def given(self) -> frozenset:
        """The options that differ from their defaults (what the user set, whichever way), and ``neurons``."""
        defaults = CallbackSettings(self.neurons).options()
        out = {"neurons"}
        for name, value in self.options().items():
            default = defaults[name]
            try:
                same = value is default or (type(value) is type(default) and bool(value == default))
            except Exception:  # a tensor or an object without a plain ==: set by the user
                same = False
            if not same:
                out.add(name)
        return frozenset(out)

    @functools.cached_property
    def request(self) -> NeuronRequest:
        """``neurons`` parsed (once, when the settings are built)."""
        return parse_neurons(self.neurons)

    def labeller(self) -> Optional[Callable[[str, int], Optional[str]]]:
        """``labels`` as a function ``(layer, index) -> label or None``."""
        return labeller_of(self.output.labels)

    def as_state(self) -> Dict[str, Any]:
        """Plain values for the checkpoint (what ``lightning-ldam compare`` reads back): no tensors, no callables."""
        def plain(value):
            if isinstance(value, (str, int, float, bool, type(None))):
                return value
            if isinstance(value, torch.device):
                return str(value)
            if isinstance(value, (list, tuple)):
                return [plain(v) for v in value]
            if isinstance(value, dict):
                return {str(k): plain(v) for k, v in value.items()}
            if isinstance(value, range):
                return list(value)
            return repr(value)

        options = self.options()
        out = {"neurons": plain(self.neurons), **{k: plain(v) for k, v in options.items()}}
        normalize = options["normalize"]
        out["normalize"] = None if normalize is None else \
            [torch.as_tensor(t, dtype=torch.float32).flatten().tolist() for t in normalize]
        return out


def _checked(options: Dict[str, Any]) -> Dict[str, Any]:
    """Every option checked (errors name it), normalised: devices, labels' layer paths, schedules' 0 for off."""
    s = dict(options)
    _check_schedule(s)
    for name in ("chains", "reservoir_size", "ema_every_n_steps"):
        V.check_positive(name, s[name], integer=True)
    for name in ("steps", "upscale"):
        if s[name] is not None:
            V.check_positive(name, s[name], integer=True)
    for name in ("max_overhead", "disc_weight"):
        if s[name] is not None:
            V.check_positive(name, s[name], allow_zero=name == "disc_weight")
    if s["input_shape"] is not None:
        s["input_shape"] = V.check_input_shape(s["input_shape"])
    if s["value_range"] is not None:
        s["value_range"] = V.check_value_range(s["value_range"])
    V.check_choice("averaging", s["averaging"], AVERAGING)
    s["ema_decay"] = V.check_decay("ema_decay", s["ema_decay"])
    _check_plain(s)
    if s["normalize"] is not None:
        shape = s["input_shape"]
        V.check_normalize(s["normalize"], shape[0] if shape else V.normalize_channels(s["normalize"]))
    for name in ("ema_device", "sample_device"):
        s[name] = V.check_device(name, s[name], resolve_index=False)
    s["sampler_kwargs"] = check_sampler_kwargs(s["sampler_kwargs"], s["steps"], s["disc_weight"])
    check_labels(s["labels"], s["layer_aliases"])
    for name in ("labels", "layer_aliases"):  # keys as the results name layers (no module./_orig_mod.)
        if isinstance(s[name], dict):
            s[name] = {canonical_path(k): v for k, v in s[name].items()}
    s["every_n_epochs"], s["every_n_train_steps"] = s["every_n_epochs"] or 0, s["every_n_train_steps"] or 0
    s["max_overhead"] = None if s["max_overhead"] is None else float(s["max_overhead"])
    s["redraw"] = V.check_fraction("redraw", s["redraw"])
    return s


def _check_schedule(s: Dict[str, Any]) -> None:
    for name in ("every_n_epochs", "every_n_train_steps"):
        if s[name] is not None:
            V.check_positive(name, s[name], integer=True, allow_zero=True)
    for name in ("on_fit_end", "during_validation", "persistent"):
        if not isinstance(s[name], bool):
            raise LDAMArgumentError(name, f"expected True or False, got {V.shown(s[name])}")
    if not (s["every_n_epochs"] or s["every_n_train_steps"] or s["on_fit_end"] or s["during_validation"]):
        raise LDAMArgumentError(
            "every_n_epochs/every_n_train_steps/on_fit_end/during_validation",
            f"every schedule is off (every_n_epochs={s['every_n_epochs']!r}, every_n_train_steps="
            f"{s['every_n_train_steps']!r}, on_fit_end={s['on_fit_end']!r}, during_validation="
            f"{s['during_validation']!r}); set at least one")


def _check_plain(s: Dict[str, Any]) -> None:
    """``module``, ``input_key``, ``seed``: type checks only."""
    module = s["module"]
    if module is not None and (not isinstance(module, str) or not module):
        raise LDAMArgumentError("module", f"expected a dotted attribute path such as 'net', got {V.shown(module)}")
    key = s["input_key"]
    if key is not None and not (callable(key) or isinstance(key, (int, str))):
        raise LDAMArgumentError("input_key", f"expected None, an int, a str or a callable, got {V.shown(key)}")
    V.check_seed("seed", s["seed"])


def check_sampler_kwargs(kwargs: Optional[Dict[str, Any]], steps: Optional[int],
                         disc_weight: Optional[float]) -> Dict[str, Any]:
    """Check ``sampler_kwargs`` as far as possible without a model (errors name ``sampler_kwargs['key']``)."""
    if kwargs is not None and not isinstance(kwargs, dict):
        raise LDAMArgumentError("sampler_kwargs", f"expected a dict of lightning_ldam.sample keywords, "
                                                  f"got {type(kwargs).__name__}")
    kwargs = dict(kwargs or {})
    unknown = sorted(set(kwargs) - SAMPLER_EXTRA_KWARGS)
    if unknown:
        raise LDAMArgumentError("sampler_kwargs", f"unknown keys {unknown}; accepted: {sorted(SAMPLER_EXTRA_KWARGS)} "
                                                  f"(the other lightning_ldam.sample arguments are the callback's own)")
    settings = {k: v for k, v in kwargs.items() if k not in _CALL_KWARGS}
    try:
        own = {"steps": steps} if steps is not None else {}
        SamplerConfig().with_settings(**settings, **own, disc_weight=disc_weight)
        if "init" in kwargs:  # a tensor of starting images is the callback's to give (its persistent chains)
            V.check_choice("init", kwargs["init"], INITS)
        if kwargs.get("cuda_graph") and not torch.cuda.is_available():
            raise LDAMArgumentError("cuda_graph", "CUDA graphs need a CUDA device and torch.cuda.is_available() is "
                                                  "False; drop it")
        progress = kwargs.get("progress")
        if progress is not None and not isinstance(progress, (bool, Progress)):
            V.check_positive("progress", progress, allow_zero=True)
    except LDAMArgumentError as err:
        where = err.argument if err.argument == "steps" else f"sampler_kwargs[{err.argument!r}]"
        raise LDAMArgumentError(where, err.message) from None
    return kwargs


def check_on_first_batch(network, plan: RoundPlan, settings: CallbackSettings, seen_shape) -> None:
    """The checks that need the model and a batch: ``input_shape`` against the batch, then a two-chain, two-step
    dry run of the round's sampler settings on this network and these real inputs (neuron paths and indices,
    ``normalize``'s channels, the value box, the sampler keywords); raises where one fails.
    """
    given = settings.data.input_shape
    if given is not None and seen_shape is not None and tuple(seen_shape) != tuple(given):
        raise LDAMArgumentError("input_shape", f"{tuple(given)} does not match the training batches' per-sample "
                                               f"shape {tuple(seen_shape)} (read with input_key="
                                               f"{V.shown(settings.data.input_key)}); drop input_shape to infer it")
    if settings.data.normalize is not None and plan.real is not None:
        check_pixel_space(plan.real, settings.data.normalize)
    try:
        resolve_targets(network, plan, dry_run=True)
    except LDAMArgumentError as err:
        if err.argument == "real_data":  # the reservoir's inputs are the callback's; the box is the user's
            raise LDAMArgumentError("value_range", f"the training inputs do not fit it: {err.message}") from None
        if err.argument in SAMPLER_EXTRA_KWARGS:  # sample()'s keyword, which the callback takes in sampler_kwargs
            raise LDAMArgumentError(f"sampler_kwargs[{err.argument!r}]", err.message) from None
        if err.argument == "device":
            raise LDAMArgumentError("sample_device", err.message) from None
        raise


def check_pixel_space(real: torch.Tensor, normalize) -> None:
    """With ``normalize=``, the batches must be pixel-space images: the callback applies ``(x - mean) / std`` to
    every chain and real input. Batches that already look standardised (values below -0.5, each channel's mean
    within 0.25 of 0 and its std between 0.75 and 1.5) would be normalised twice: refused."""
    if real.dim() < 3 or real.shape[0] < 2:
        return
    x = real.transpose(0, 1).flatten(1).float()  # [C, N * positions]
    mean, std = x.mean(1), x.std(1)
    if float(x.min()) < -0.5 and bool((mean.abs() < 0.25).all()) and bool(((std > 0.75) & (std < 1.5)).all()):
        raise LDAMArgumentError("normalize", f"the training batches already look standardised (per-channel means "
                                             f"{[round(v, 2) for v in mean.tolist()]}, stds "
                                             f"{[round(v, 2) for v in std.tolist()]}): normalize=(mean, std) is "
                                             f"applied to pixel-space batches, so they would be normalised twice. "
                                             f"Either feed pixel-space batches (move the normalisation into the "
                                             f"model), or drop normalize= and let LDAM sample in the batches' own "
                                             f"space")


def argument_given(argument: str, given: frozenset, settings: "CallbackSettings") -> bool:
    """Whether an error naming ``argument`` (``"sampler_kwargs['init']"``, ``"input_shape"``) is about a value the
    user set: only such an error may end the run. The others name what the callback inferred or defaulted."""
    root = argument.split("[", 1)[0]
    if root == "sampler_kwargs" and "[" in argument:
        key = argument[len("sampler_kwargs["):].rstrip("]").strip("'\"")
        return key in settings.rounds.sampler_kwargs
    return root in given


def check_on_setup(strategy: str, network, settings: "CallbackSettings") -> None:
    """At ``setup``: a strategy that keeps full parameters on each rank, layer paths that exist (in ``neurons``,
    ``labels`` and ``layer_aliases``), and tag names that no two sampled layers share."""
    if "FSDP" in strategy or "DeepSpeed" in strategy:
        raise LDAMArgumentError("strategy", f"LDAMCallback needs full parameters on each rank; {strategy} shards "
                                            f"them. Use DDP or a single device, or run lightning-ldam on the saved "
                                            f"checkpoint")
    sampled = list(dict.fromkeys(find_layer(network, layer)[0] for layer, _ in settings.request.pairs()))
    aliases = {}
    for argument, mapping in (("labels", settings.output.labels), ("layer_aliases", settings.output.layer_aliases)):
        if not isinstance(mapping, dict):
            continue  # a callable labeller, or none
        for layer, value in mapping.items():
            try:
                path = find_layer(network, layer)[0]
            except LDAMArgumentError as err:
                raise LDAMArgumentError(argument, f"key {layer!r}: {err.message}") from None
            if argument == "layer_aliases":
                aliases[path] = value
    names: Dict[str, str] = {}
    for path in sampled:
        name = aliases.get(path, path)
        if name in names:
            raise LDAMArgumentError("layer_aliases", f"layers {names[name]!r} and {path!r} would both write the tags "
                                                     f"ldam/<variant>/{name}; expected a tag name that no other "
                                                     f"sampled layer has, got {settings.output.layer_aliases!r}")
        names[name] = path
