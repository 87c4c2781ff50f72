"""``lightning-ldam``: list targetable layers of a model, compare LDAM samples of checkpoint weights.

``lightning-ldam targets MODEL --input-shape C,H,W`` prints the layers a neuron spec can name.
``lightning-ldam compare CKPT [CKPT2] --model CLASS --neurons SPEC`` samples the raw and averaged weights of
one checkpoint (or the raw weights of two) with common random numbers and writes a TensorBoard run with the
callback's tag layout (:mod:`lightning_ldam.report.tags`) plus one PNG contact sheet per layer.
"""
from __future__ import annotations

import argparse
import importlib
import inspect
import json
import os
import sys
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple, cast

import torch
from torch import nn

from lightning_ldam import _validation as V

__all__ = ["main", "build_parser"]

PROG = "lightning-ldam"
_IMPORT_NOTE = ("The current working directory is put first on sys.path before importing, so "
                "'examples.mnist.MNISTClassifier' works from the repository root.")
#: Library argument names (the start of its error messages) -> the CLI option they come from.
#: (A sampler setting's option is derived from its name: ``_setting_option``.)
_OPTION_OF = {"neurons": "--neurons", "input_shape": "--input-shape", "normalize": "--mean/--std",
              "real_data": "--input-shape/--value-range (checkpoint reservoir)", "module": "--module",
              "model": "--model"}


# ---- argument types (argparse turns their ValueError/TypeError into a usage error naming the option) ---------
def _ints(text: str) -> Tuple[int, ...]:
    try:
        return V.check_input_shape(tuple(int(s) for s in text.split(",")))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected positive ints C,H,W such as 1,28,28, got {text!r}") from None


def _range(text: str) -> Tuple[float, float]:
    try:
        return V.check_value_range(tuple(float(s) for s in text.split(",")))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected LO,HI with LO < HI such as 0,1, got {text!r}") from None


def _floats(text: str) -> List[float]:
    try:
        return [float(s) for s in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a float or comma-separated floats such as 0.5,0.5,0.5, "
                                         f"got {text!r}") from None


def _json_object(text: str) -> Dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise argparse.ArgumentTypeError(f"expected a JSON object such as '{{\"width\": 64}}', got {text!r} "
                                         f"({err})") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"expected a JSON object such as '{{\"width\": 64}}', got {text!r}")
    return value


def _variants(text: str) -> List[str]:
    names = [s.strip() for s in text.split(",") if s.strip()]
    if not names:
        raise argparse.ArgumentTypeError(f"expected comma-separated variant names such as raw,ema, got {text!r}")
    return names


def build_parser() -> argparse.ArgumentParser:
    """The ``lightning-ldam`` argument parser (subcommands ``targets`` and ``compare``)."""
    parser = argparse.ArgumentParser(
        prog=PROG, description="LDAM (Langevin Dynamics Activation Maximization) on saved models and checkpoints.",
        epilog=_IMPORT_NOTE)
    sub = parser.add_subparsers(dest="command", required=True, metavar="{targets,compare}")

    model_help = ("class path 'pkg.mod.Class' (a LightningModule or nn.Module) or factory function such as "
                  "'torchvision.models.resnet18'; " + _IMPORT_NOTE)
    init_help = ("JSON object of constructor arguments; they update the checkpoint's hyper_parameters "
                 "(saved by save_hyperparameters())")
    module_help = "dotted path of the submodule to run, e.g. 'net'; neuron paths are relative to it"

    t = sub.add_parser("targets", help="list the layers a neuron spec can name",
                       description="Print every targetable layer: path, module type, output shape, units.",
                       epilog=_IMPORT_NOTE)
    t.add_argument("model", metavar="MODEL", help=model_help)
    t.add_argument("--input-shape", type=_ints, metavar="C,H,W",
                   help="per-sample input shape of the network that runs (the --module submodule if given; "
                        "default: from the LDAMCallback reservoir in --ckpt)")
    t.add_argument("--init-args", type=_json_object, default={}, metavar="JSON", help=init_help)
    t.add_argument("--ckpt", metavar="CKPT", help="checkpoint whose hyper_parameters build the model")
    t.add_argument("--module", metavar="NAME", help=module_help)

    _add_compare(sub, model_help, init_help, module_help)
    return parser


def _add_compare(sub, model_help: str, init_help: str, module_help: str) -> None:
    """The ``compare`` subcommand's options."""
    from lightning_ldam.sampling.config import ChainsConfig

    c = sub.add_parser(
        "compare", help="LDAM samples of a checkpoint's raw vs averaged weights, or of two checkpoints",
        description="One checkpoint: sample its raw and averaged weights (LDAMCallback's EMA, Lightning's "
                    "WeightAveraging/EMAWeightAveraging or StochasticWeightAveraging). Two checkpoints: sample the "
                    "raw weights of each. Every variant uses the same seed (common random numbers). Writes a "
                    "TensorBoard run (the callback's tags) and a PNG per layer to --out.",
        epilog=_IMPORT_NOTE)
    c.add_argument("ckpts", nargs="+", metavar="CKPT", help="one checkpoint, or two to compare")
    c.add_argument("--model", required=True, metavar="CLASS_PATH", help=model_help)
    c.add_argument("--neurons", nargs="+", metavar="SPEC",
                   help="neuron specs such as 'features.3:0-7' 'fc:all' (default: the LDAMCallback's neurons "
                        "recorded in the checkpoint)")
    c.add_argument("--module", metavar="NAME",
                   help=module_help + " (default: the LDAMCallback's module= recorded in the checkpoint)")
    c.add_argument("--init-args", type=_json_object, default={}, metavar="JSON", help=init_help)
    c.add_argument("--input-shape", type=_ints, metavar="C,H,W",
                   help="per-sample input shape (default: from the checkpoint's LDAMCallback reservoir)")
    c.add_argument("--value-range", type=_range, metavar="LO,HI",
                   help="pixel box of the inputs (default: from the reservoir: (0,1), (-1,1), (0,255) or min,max)")
    c.add_argument("--mean", type=_floats, metavar="M[,M..]", help="normalisation mean (with --std)")
    c.add_argument("--std", type=_floats, metavar="S[,S..]", help="normalisation std (with --mean)")
    c.add_argument("--chains", type=int, default=ChainsConfig.chains, help=f"chains per neuron (default "
                                                                           f"{ChainsConfig.chains})")
    c.add_argument("--steps", type=int, help="Langevin steps (default: the sampler's 512; 256 when every variant "
                   "resumes a discriminator saved by LDAMCallback)")
    c.add_argument("--disc-weight", type=float, metavar="LAMBDA",
                   help="discriminator weight λ (default: the sampler's with the checkpoint's real inputs, "
                        "else 0)")
    c.add_argument("--seed", type=int, default=ChainsConfig.seed, help=f"seed shared by every variant (default "
                                                                       f"{ChainsConfig.seed})")
    c.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="default: cuda if available")
    c.add_argument("--out", default=os.path.join("runs", "compare"), metavar="DIR",
                   help="output directory (TensorBoard run and PNGs; default runs/compare)")
    c.add_argument("--variants", type=_variants, metavar="NAMES",
                   help="comma-separated subset of the variants to sample, e.g. raw,ema (default: all found)")
    c.add_argument("--labels", type=_json_object, metavar="JSON",
                   help="row labels, e.g. '{\"fc\": [\"zero\", \"one\"]}' (default: the LDAMCallback's labels= dict "
                        "recorded in the checkpoint)")
    c.add_argument("--threads", type=int, metavar="N",
                   help="CPU threads for torch (default: torch's own choice; 1-2 keeps a loaded machine responsive)")
    c.add_argument("--no-progress", action="store_true",
                   help="no progress (default: a bar on a terminal, a line every 10%% or 30 s in a log file)")
    _add_sampler_settings(c)


#: Sampler settings ``compare`` takes as options of its own: their defaults depend on the checkpoint, or the round
#: needs them (chains, seed) before the sampler does.
_COMPARE_OWN = ("steps", "disc_weight", "chains", "seed")


def _setting_option(name: str) -> str:
    return "--" + name.replace("_", "-")


def _auto_or_float(text: str):
    if text == "auto":
        return text
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected 'auto' or a number, got {text!r}") from None


def _auto_float_or_none(text: str):
    return None if text == "none" else _auto_or_float(text)


#: How the CLI reads each kind of sampler setting (:func:`lightning_ldam.sampling.config._setting`).
_READERS = {"int": int, "float": float, "str": str, "auto-or-float": _auto_or_float,
            "auto-float-or-none": _auto_float_or_none, "dtype": lambda text: getattr(torch, text)}


def _add_sampler_settings(c) -> None:
    """One option per field of :class:`~lightning_ldam.sampling.config.SamplerConfig` (but ``compare``'s own):
    the options follow the settings, with their help; an option not given leaves the sampler's default."""
    group = c.add_argument_group("sampler settings", "the fields of lightning_ldam.SamplerConfig; each defaults "
                                                     "to the sampler's own")
    for f in _setting_fields():
        meta = f.metadata
        kw = dict(dest=f.name, default=argparse.SUPPRESS, help=meta["help"])
        if meta["kind"] == "bool":
            group.add_argument(_setting_option(f.name), action=argparse.BooleanOptionalAction, **kw)
            continue
        choices = meta["choices"]
        if meta["kind"] == "dtype":
            kw["metavar"] = "{" + ",".join(choices) + "}"
            choices = [getattr(torch, c) for c in choices]
        group.add_argument(_setting_option(f.name), type=_READERS[meta["kind"]], choices=choices, **kw)


def _setting_fields():
    """The sampler settings that are options of their own (every field but ``compare``'s own and the objects)."""
    from dataclasses import fields

    from lightning_ldam.sampling.config import SECTIONS

    return [f for section in SECTIONS.values() for f in fields(section)
            if f.name not in _COMPARE_OWN and f.metadata["kind"] != "object"]


def _sampler_settings(args) -> Dict[str, Any]:
    """The sampler settings given as options (the others stay the sampler's defaults)."""
    return {f.name: getattr(args, f.name) for f in _setting_fields() if hasattr(args, f.name)}


# ---- model ------------------------------------------------------------------------------------------------
def import_object(path: str):
    """Import ``pkg.mod.Attr[.Inner]`` (the cwd first on ``sys.path``); ImportError names ``--model``."""
    cwd = os.getcwd()
    if not sys.path or sys.path[0] != cwd:
        sys.path.insert(0, cwd)
    parts = path.split(".")
    if len(parts) < 2 or not all(p.isidentifier() for p in parts):
        raise ImportError(f"--model: cannot import {path!r}: expected a dotted path such as 'pkg.module.Class'")
    error: Optional[BaseException] = None
    for i in range(len(parts) - 1, 0, -1):
        name = ".".join(parts[:i])
        try:
            obj = importlib.import_module(name)
        except ModuleNotFoundError as err:
            missing = err.name or ""
            error = error or err
            if name == missing or name.startswith(missing + "."):
                continue  # no such module: maybe a shorter path plus attributes (pkg.mod.Class.Inner)
            error = err  # the module exists but something it imports does not
            break
        except Exception as err:  # the module itself fails to import
            error = err
            break
        try:
            for attr in parts[i:]:
                obj = getattr(obj, attr)
            return obj
        except AttributeError as err:
            error = err
            break
    raise ImportError(f"--model: cannot import {path!r}: {type(error).__name__}: {error}")


def _accepted(fn, kwargs: Dict[str, Any]) -> Dict[str, Any]:
    """The subset of ``kwargs`` that ``fn`` accepts (all of them if it takes ``**kwargs``)."""
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return dict(kwargs)
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return dict(kwargs)
    return {k: v for k, v in kwargs.items() if k in params}


def build_model(path: str, init_args: Dict[str, Any], ckpt: Optional[Dict[str, Any]] = None) -> nn.Module:
    """Instantiate ``path`` with the checkpoint's ``hyper_parameters`` (those it accepts) updated by ``init_args``."""
    factory = import_object(path)
    if not callable(factory):
        raise TypeError(f"--model: {path!r} is a {type(factory).__name__}, not a class or function")
    kwargs = _accepted(factory, dict((ckpt or {}).get("hyper_parameters") or {}))
    kwargs.update(init_args)
    try:
        model = factory(**kwargs)
    except TypeError as err:
        raise TypeError(f"--model/--init-args: {path}(**{kwargs}) failed: {err}") from None
    if not isinstance(model, nn.Module):
        raise TypeError(f"--model: {path}(...) returned a {type(model).__name__}, expected a torch.nn.Module")
    return model


def _submodule(model: nn.Module, name: Optional[str]) -> nn.Module:
    from lightning_ldam.engine.rounds import submodule

    return submodule(model, name, "--module")


# ---- targets ----------------------------------------------------------------------------------------------
def _targets(args) -> int:
    from lightning_ldam.sampling.targets import list_targets
    from lightning_ldam.weights.checkpoint import real_inputs

    ckpt = _load(args.ckpt, "--ckpt") if args.ckpt else None
    shape = args.input_shape
    if shape is None:
        real = real_inputs(ckpt) if ckpt is not None else None
        if real is None:
            raise ValueError("--input-shape: required (C,H,W such as 1,28,28); no --ckpt with an LDAMCallback "
                             "reservoir to read it from")
        shape = tuple(real.shape[1:])
    net = _submodule(build_model(args.model, args.init_args, ckpt), args.module)
    rows: List[Tuple[str, ...]] = [(t.path, t.type_name, "x".join(map(str, t.output_shape[1:])), str(t.units),
                                    "" if t.tokens is None else str(t.tokens)) for t in list_targets(net, shape)]
    head: Tuple[str, ...] = ("path", "type", "output (per sample)", "units", "tokens")
    if not any(r[4] for r in rows):
        rows, head = [r[:4] for r in rows], head[:4]
    widths = [max(len(r[i]) for r in rows + [head]) for i in range(len(head))]
    print(f"{type(net).__name__} on input {list(shape)}:")
    for row in [head] + rows:
        print("  ".join(cell.ljust(w) if i < 3 else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths))))
    if len(head) == 5:
        print("units: channels (reduced over tokens, spatial='mean'); tokens: what 'layer:N' indexes with "
              "spatial='tokens' (see the README's Transformers section)")
    return 0


# ---- compare ----------------------------------------------------------------------------------------------
def _load(path: str, option: str) -> Dict[str, Any]:
    from lightning_ldam.weights.checkpoint import load_checkpoint

    try:
        return load_checkpoint(path)
    except (FileNotFoundError, ValueError) as err:
        raise type(err)(f"{option}: {err}") from None


def _tag_name(text: str) -> str:
    from lightning_ldam.report.writers import file_safe

    return file_safe(text).strip("_") or "ckpt"


def _unique(names: Sequence[str]) -> List[str]:
    out: List[str] = []
    for name in names:
        candidate, i = name, 2
        while candidate in out:
            candidate, i = f"{name}-{i}", i + 1
        out.append(candidate)
    return out


def _load_weights(model: nn.Module, state: Dict[str, torch.Tensor], what: str, model_path: str) -> None:
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:
        first = str(err).strip().splitlines()
        detail = " ".join(line.strip() for line in first[:3])
        raise ValueError(f"--model: the {what} weights do not fit {model_path}: {detail}") from None


def _cli_message(err: BaseException) -> str:
    """One line for a user error; a library argument error names the CLI option it comes from."""
    from lightning_ldam.errors import LDAMArgumentError
    from lightning_ldam.sampling.config import SamplerConfig

    if isinstance(err, LDAMArgumentError):
        option = _OPTION_OF.get(err.argument) or (_setting_option(err.argument)
                                                  if err.argument in SamplerConfig.setting_names() else err.argument)
        return f"{option}: {err.message}"
    text = " ".join(str(err).split())  # one line, whatever the error's own layout
    return text if isinstance(err, (ValueError, TypeError, FileNotFoundError, ImportError)) \
        else f"{type(err).__name__}: {text}"


def _compare(args) -> int:
    """``lightning-ldam compare``: check the options, then variants, inputs, sampling and output in turn."""
    from lightning_ldam.engine.rounds import resolve_targets, sample_variants
    from lightning_ldam.sampling.progress import Progress
    from lightning_ldam.weights.checkpoint import ldam_settings

    _check_compare_options(args)
    if args.threads is not None:
        if args.threads < 1:
            raise ValueError(f"--threads: expected an int >= 1, got {args.threads}")
        torch.set_num_threads(args.threads)
    import_object(args.model)  # a misspelt --model fails before any checkpoint is read (they can take a minute)
    if args.labels is not None:
        _labeller(args.labels, {})  # its shape now; its layers once the model is built
    ckpts = [_load(p, "CKPT") for p in args.ckpts]
    settings = ldam_settings(ckpts[0])
    neurons, module = _neurons_and_module(args, settings)
    variants, params_only = _compare_variants(args, ckpts, settings, module)
    inputs = _compare_inputs(args, ckpts, settings)
    plan = _compare_plan(args, ckpts, variants, params_only, neurons, module, inputs)
    resolve_targets(plan.variants[0].network, plan)  # neuron paths and indices, before any real work
    labeller = _labeller(args.labels, settings, plan.variants[0].network)  # checked before sampling, too
    # a bar on a terminal, plain progress lines in a log file
    results = sample_variants(plan, progress=False if args.no_progress else Progress(), note=_note)
    return _write_comparison(args, ckpts, results, inputs.real, labeller)


def _note(text: str) -> None:
    print(text, file=sys.stderr)


def _check_compare_options(args) -> None:
    """Everything checkable before loading anything, ``--out`` included (a conflict found after sampling would
    throw the work away)."""
    if len(args.ckpts) > 2:
        raise ValueError(f"CKPT: expected one or two checkpoints, got {len(args.ckpts)}: {args.ckpts}")
    if (args.mean is None) != (args.std is None):
        raise ValueError(f"--mean/--std: pass both or neither, got --mean {args.mean} --std {args.std}")
    for name in ("chains", "steps"):
        if getattr(args, name) is not None:
            V.check_positive(name, getattr(args, name), integer=True)
    if getattr(args, "cuda_graph", False) and (args.device == "cpu" or not torch.cuda.is_available()):
        raise ValueError(f"--cuda-graph: CUDA graphs need a CUDA device (--device {args.device}, "
                         f"torch.cuda.is_available() is {torch.cuda.is_available()}); drop --cuda-graph")
    if args.device == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device: 'cuda' requested but torch.cuda.is_available() is False; use cpu or auto")
    from lightning_ldam.sampling.config import SamplerConfig

    SamplerConfig().with_settings(**_sampler_settings(args))  # the settings' own checks, before any model is built
    _check_out(args.out)


def _check_out(out: str) -> None:
    if os.path.exists(out) and not os.path.isdir(out):
        raise ValueError(f"--out: {out!r} exists and is not a directory; pass a directory (it is created if missing)")
    try:
        os.makedirs(out, exist_ok=True)
        probe = os.path.join(out, f".lightning-ldam-write-test-{os.getpid()}")
        with open(probe, "wb"):
            pass
        os.remove(probe)
    except OSError as err:
        raise ValueError(f"--out: cannot write to {out!r} ({err.strerror or err}); pass a writable directory") \
            from None


def _neurons_and_module(args, settings: Dict[str, Any]) -> Tuple[Any, Optional[str]]:
    """``--neurons`` and ``--module``, else what the checkpoint's LDAMCallback ran with."""
    from lightning_ldam.sampling.targets import parse_neurons

    neurons: Any = args.neurons
    if neurons is None:
        if "neurons" not in settings:
            raise ValueError("--neurons: required (e.g. 'features.3:0-7'); the checkpoint records no "
                             "LDAMCallback neurons to default to")
        neurons = settings["neurons"]
        print(f"neurons: {neurons!r} (from the checkpoint's LDAMCallback)")
    elif len(neurons) == 1:
        neurons = neurons[0]
    parse_neurons(neurons)
    module = args.module
    if module is None and settings.get("module"):
        module = settings["module"]
        print(f"module: {module!r} (from the checkpoint's LDAMCallback)")
    return neurons, module


def _compare_variants(args, ckpts, settings, module):
    """``([(name, state dict, discriminator state, checkpoint index)], parameter-only variant names)``."""
    from lightning_ldam.weights.checkpoint import ldam_state, params_only_variants, weight_variants

    variants: List[Tuple[str, Dict[str, torch.Tensor], Optional[dict], int]] = []
    params_only: List[str] = []
    if len(ckpts) == 1:
        try:
            found = weight_variants(ckpts[0])
        except ValueError as err:
            raise ValueError(f"CKPT: {args.ckpts[0]}: {err}") from None
        if len(found) == 1:
            print(f"note: {args.ckpts[0]} holds no averaged weights (looked for LDAMCallback's EMA, Lightning's "
                  f"WeightAveraging/EMAWeightAveraging layout and StochasticWeightAveraging): sampling its raw "
                  f"weights alone; pass a second checkpoint to compare two", file=sys.stderr)
        discs = (ldam_state(ckpts[0]) or {}).get("discriminators") or {}
        variants = [(name, sd, discs.get(name), 0) for name, sd in found.items()]
        params_only = params_only_variants(ckpts[0])
        own = settings.get("module")
        if "ema" in found and own and module != own and not (module or "").startswith(own + "."):
            print(f"note: LDAMCallback averaged only {own!r}; outside it the 'ema' weights are the raw ones",
                  file=sys.stderr)
        for name, sd in found.items():
            if name != "raw" and all(torch.equal(sd[k], found["raw"][k]) for k in sd):
                print(f"note: the {name!r} weights equal the raw ones (Lightning's averagers copy the average into "
                      f"the model when fit ends; use a checkpoint saved during training)", file=sys.stderr)
    else:
        names = _unique([_tag_name(os.path.splitext(os.path.basename(p))[0]) for p in args.ckpts])
        for i, (name, ckpt) in enumerate(zip(names, ckpts)):
            discs = (ldam_state(ckpt) or {}).get("discriminators") or {}
            raw = ckpt["current_model_state"] if "current_model_state" in ckpt else ckpt["state_dict"]
            variants.append((name, dict(raw), discs.get("raw"), i))
    if args.variants:
        known = [v[0] for v in variants]
        unknown = [v for v in args.variants if v not in known]
        if unknown:
            raise ValueError(f"--variants: expected a comma list of {known}, got {','.join(args.variants)!r}")
        variants = [v for v in variants if v[0] in args.variants]
    return variants, params_only


@dataclass
class _Inputs:
    """What every variant is sampled with: real inputs (or None), shape, box, λ, normalisation, device."""

    real: Optional[torch.Tensor]
    shape: Tuple[int, ...]
    box: Tuple[float, float]
    weight: Optional[float]
    normalize: Any
    device: torch.device


def _compare_inputs(args, ckpts, settings: Dict[str, Any]) -> _Inputs:
    """Real inputs from the first checkpoint with a reservoir, then shape, value range, λ, normalisation."""
    from lightning_ldam.sampling.config import DEFAULT_DISC_WEIGHT
    from lightning_ldam.sampling.inputs import value_box
    from lightning_ldam.weights.checkpoint import real_inputs

    real, real_from = next(((r, p) for r, p in ((real_inputs(c), p) for c, p in zip(ckpts, args.ckpts))
                            if r is not None), (None, None))
    shape = args.input_shape
    if shape is None:
        if real is None:
            raise ValueError("--input-shape: required (C,H,W such as 1,28,28); the checkpoint has no LDAMCallback "
                             "reservoir to read it from")
        shape = tuple(real.shape[1:])
    elif real is not None and tuple(real.shape[1:]) != tuple(shape):
        raise ValueError(f"--input-shape: {','.join(map(str, shape))} does not match the inputs saved in "
                         f"{real_from} ({','.join(map(str, real.shape[1:]))})")
    box = args.value_range
    if box is None and settings.get("value_range") is not None:
        box = tuple(settings["value_range"])
        print(f"value range: {box} (the callback's value_range)")
    if box is None:
        box = value_box(real) if real is not None else (0.0, 1.0)  # the callback's rule
        print(f"value range: {box} ({'from the reservoir' if real is not None else 'default; set --value-range'})")
    weight = args.disc_weight
    if real is None and weight is None:
        print("no real inputs in the checkpoint (no LDAMCallback reservoir): sampling without a discriminator "
              "(λ = 0)")
    elif real is not None:
        print(f"real inputs: {real.shape[0]} from {real_from}'s reservoir; λ = "
              f"{DEFAULT_DISC_WEIGHT if weight is None else weight:g}")
    normalize = None
    if args.mean is not None:
        normalize = V.check_normalize((args.mean, args.std), shape[0])
    elif settings.get("normalize") is not None:
        normalize = V.check_normalize(tuple(settings["normalize"]), shape[0])
        print(f"normalisation from the checkpoint: mean {settings['normalize'][0]}, std {settings['normalize'][1]} "
              f"(--mean/--std override)")
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if args.device == "auto" else args.device))
    return _Inputs(real, tuple(shape), tuple(box), weight, normalize, device)


def _compare_plan(args, ckpts, variants, params_only, neurons, module, inputs: _Inputs):
    """Build and load each variant's network; one :class:`~lightning_ldam.engine.rounds.RoundPlan` for all of them."""
    from lightning_ldam.engine.rounds import Variant, plan_round
    from lightning_ldam.sampling.config import SamplerConfig

    built = []
    for name, state, disc_state, idx in variants:
        model = build_model(args.model, args.init_args, ckpts[idx])
        _load_weights(model, state, f"{name!r}", args.model)
        net = _submodule(model, module).to(inputs.device).eval()
        built.append(Variant(name, net, refresh_bn=name in params_only, disc_state=disc_state))
    config = SamplerConfig().with_settings(**_sampler_settings(args), chains=args.chains, value_range=inputs.box,
                                           normalize=inputs.normalize, disc_weight=inputs.weight,
                                           seed=args.seed, device=inputs.device)
    plan = plan_round(built, neurons, input_shape=inputs.shape, real=inputs.real, config=config, steps=args.steps)
    if args.steps is None and plan.real is not None and all(v.warm for v in built):
        print(f"steps: {plan.steps} (every variant has a warm discriminator from the checkpoint; --steps overrides)")
    for v in built:
        if v.refresh_bn and plan.real is not None:
            print(f"{v.name!r}: BatchNorm statistics recomputed on the {plan.real.shape[0]} saved real inputs")
    return plan


def _labeller(given: Optional[Dict[str, Any]], settings: Dict[str, Any], network: Optional[nn.Module] = None):
    """``--labels``, else a ``labels=`` dict the callback recorded (a callable is not saved), as a labeller; with
    ``network``, each key of ``--labels`` must name one of its layers."""
    from lightning_ldam.report.labels import check_labels, labeller_of
    from lightning_ldam.sampling.targets import canonical_path, find_layer

    labels = given if given is not None else (settings.get("labels") if isinstance(settings.get("labels"), dict)
                                              else None)
    if labels is None:
        return None
    try:
        check_labels(labels, None)
        if network is not None and given is not None:  # the recorded ones were checked by the callback
            labels = {find_layer(network, layer)[0]: names for layer, names in labels.items()}
    except ValueError as err:
        raise ValueError(f"--labels: {getattr(err, 'message', err)}") from None
    return labeller_of({canonical_path(k): v for k, v in labels.items()})


def _write_comparison(args, ckpts, results, real, labeller=None) -> int:
    """The TensorBoard run (the callback's tag layout) and one PNG contact sheet per layer under ``--out``."""
    from torch.utils.tensorboard import SummaryWriter

    from lightning_ldam.report.tags import summarize, write_tensorboard
    from lightning_ldam.report.writers import png_path, save_png
    from lightning_ldam.sampling.result import reference

    step = int(ckpts[0].get("global_step", 0) or 0)
    images, scalars = summarize(results, real=real, labels=labeller)
    os.makedirs(args.out, exist_ok=True)
    writer = SummaryWriter(log_dir=args.out)
    try:
        write_tensorboard(writer, images, scalars, step)
    finally:
        writer.close()
    first = next(iter(results.values()))
    layers = list(dict.fromkeys(layer for layer, _ in first.neurons))
    pngs = []
    for layer in layers:
        tag = f"ldam/compare/{layer}" if len(results) > 1 else f"ldam/{next(iter(results))}/{layer}"
        path = png_path(args.out, f"compare/{layer}")
        save_png(images[tag], path)
        pngs.append(path)
    print(f"wrote {len(images)} images and {len(scalars)} scalars for {', '.join(results)} at step {step} "
          f"to {args.out}")
    for path in pngs + _write_metrics(args.out, scalars, cast(str, reference(results))):  # results is not empty
        print(f"wrote {path}")
    print(f"view with: tensorboard --logdir {args.out}")
    return 0


def _write_metrics(out: str, scalars: Dict[str, float], ref: str = "raw") -> List[str]:
    """Print the per-layer, per-variant metrics and write them as ``metrics.csv`` (every column, a fixed schema) and
    ``metrics.md`` in ``out``; the printed and Markdown tables leave out columns empty on every row (``drift`` and
    ``retention`` need a previous round, which one compare does not have)."""
    import csv

    from lightning_ldam.report.tags import TABLE_COLUMNS, metrics_table

    rows = metrics_table(scalars, ref)
    head = ["layer", "variant", *TABLE_COLUMNS]
    cells = [[cast(str, r["layer"]), cast(str, r["variant"])]
             + ["" if r[c] is None else f"{r[c]:.4g}" for c in TABLE_COLUMNS] for r in rows]
    shown = [0, 1] + [i + 2 for i, c in enumerate(TABLE_COLUMNS) if any(r[c] is not None for r in rows)]
    md = ["| " + " | ".join(head[i] for i in shown) + " |", "|" + "---|" * 2 + "---:|" * (len(shown) - 2)]
    md += ["| " + " | ".join(line[i] or "—" for i in shown) + " |" for line in cells]
    print("\n".join(md))
    csv_path, md_path = os.path.join(out, "metrics.csv"), os.path.join(out, "metrics.md")
    with open(csv_path, "w", newline="") as f:
        csv.writer(f).writerows([head] + cells)
    with open(md_path, "w") as f:
        f.write("\n".join(md) + "\n")
    return [csv_path, md_path]


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run ``lightning-ldam``; returns the exit code: 2 for usage errors and bad inputs, 1 for any other failure
    (one line on stderr either way, never a traceback)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # --help (0) and argparse usage errors (2)
        return exit_.code if isinstance(exit_.code, int) else 2
    try:
        return _targets(args) if args.command == "targets" else _compare(args)
    except (ValueError, TypeError, FileNotFoundError, ImportError) as err:
        print(f"{PROG}: error: {_cli_message(err)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except Exception as err:  # the model's own failure, out of memory, ...: still one line
        print(f"{PROG}: error: {_cli_message(err)}", file=sys.stderr)
        return 1
