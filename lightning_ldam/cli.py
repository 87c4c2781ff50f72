"""``lightning-ldam``: list targetable layers of a model, compare LDAM samples of checkpoint weights.

``lightning-ldam targets MODEL --input-shape C,H,W`` prints the layers a neuron spec can name.
``lightning-ldam compare CKPT [CKPT2] --model CLASS --neurons SPEC`` samples the raw and averaged weights of
one checkpoint (or the raw weights of two) with common random numbers and writes a TensorBoard run with the
callback's tag layout (:mod:`lightning_ldam.summaries`) plus one PNG contact sheet per layer.
"""
from __future__ import annotations

import argparse
import importlib
import inspect
import json
import os
import re
import sys
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
from torch import nn

from lightning_ldam import _validation as V

__all__ = ["main", "build_parser"]

PROG = "lightning-ldam"
_IMPORT_NOTE = ("The current working directory is put first on sys.path before importing, so "
                "'examples.mnist.MNISTClassifier' works from the repository root.")
#: Library argument names (the start of its error messages) -> the CLI option they come from.
_OPTION_OF = {"neurons": "--neurons", "input_shape": "--input-shape", "value_range": "--value-range",
              "normalize": "--mean/--std", "chains": "--chains", "steps": "--steps", "seed": "--seed",
              "disc_weight": "--disc-weight", "real_data": "--input-shape/--value-range (checkpoint reservoir)",
              "module": "--module"}


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
    c.add_argument("--chains", type=int, default=8, help="chains per neuron (default 8)")
    c.add_argument("--steps", type=int, help="Langevin steps (default: the sampler's 512; 256 when every variant "
                   "resumes a discriminator saved by LDAMCallback)")
    c.add_argument("--disc-weight", type=float, metavar="LAMBDA",
                   help="discriminator weight λ (default: the sampler's with the checkpoint's real inputs, "
                        "else 0)")
    c.add_argument("--method", choices=("langevin", "mala", "annealed"), default="langevin",
                   help="sampler method (default langevin; mala: Metropolis-adjusted; annealed: the earlier search)")
    c.add_argument("--seed", type=int, default=0, help="seed shared by every variant (default 0)")
    c.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="default: cuda if available")
    c.add_argument("--out", default=os.path.join("runs", "compare"), metavar="DIR",
                   help="output directory (TensorBoard run and PNGs; default runs/compare)")
    c.add_argument("--variants", type=_variants, metavar="NAMES",
                   help="comma-separated subset of the variants to sample, e.g. raw,ema (default: all found)")
    c.add_argument("--no-progress", action="store_true", help="no progress bar")
    c.add_argument("--bf16", action="store_true", help="run the network under bf16 autocast (GPU speed option)")
    c.add_argument("--channels-last", action="store_true", help="NHWC convolutions (GPU speed option)")
    c.add_argument("--cuda-graph", action="store_true",
                   help="replay each Langevin step as a CUDA graph (CUDA only; for small, launch-bound networks)")
    return parser


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
    if not name:
        return model
    try:
        return model.get_submodule(name)
    except AttributeError:
        children = [n for n, _ in model.named_children()]
        raise ValueError(f"--module: {type(model).__name__} has no submodule {name!r}; its children are "
                         f"{children}") from None


# ---- targets ----------------------------------------------------------------------------------------------
def _targets(args) -> int:
    from lightning_ldam.checkpoint import real_inputs
    from lightning_ldam.targets import list_targets

    ckpt = _load(args.ckpt, "--ckpt") if args.ckpt else None
    shape = args.input_shape
    if shape is None:
        real = real_inputs(ckpt) if ckpt is not None else None
        if real is None:
            raise ValueError("--input-shape: required (C,H,W such as 1,28,28); no --ckpt with an LDAMCallback "
                             "reservoir to read it from")
        shape = tuple(real.shape[1:])
    net = _submodule(build_model(args.model, args.init_args, ckpt), args.module)
    rows = [(t.path, t.type_name, "x".join(map(str, t.output_shape[1:])), str(t.units))
            for t in list_targets(net, shape)]
    head = ("path", "type", "output (per sample)", "units")
    widths = [max(len(r[i]) for r in rows + [head]) for i in range(4)]
    print(f"{type(net).__name__} on input {list(shape)}:")
    for row in [head] + rows:
        print("  ".join(cell.ljust(w) if i < 3 else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths))))
    return 0


# ---- compare ----------------------------------------------------------------------------------------------
def _load(path: str, option: str) -> Dict[str, Any]:
    from lightning_ldam.checkpoint import load_checkpoint

    try:
        return load_checkpoint(path)
    except (FileNotFoundError, ValueError) as err:
        raise type(err)(f"{option}: {err}") from None


def _file_safe(text: str) -> str:
    """``text`` with every run of characters other than letters, digits and ``_.=+-`` turned into ``_``."""
    return re.sub(r"[^A-Za-z0-9_.=+-]+", "_", text)


def _tag_name(text: str) -> str:
    return _file_safe(text).strip("_") or "ckpt"


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
    """The library's ``"name: ..."`` messages, with ``name`` replaced by the CLI option it comes from."""
    text = str(err)
    name, sep, rest = text.partition(": ")
    if sep and name in _OPTION_OF:
        return f"{_OPTION_OF[name]}: {rest}"
    return text


def _compare(args) -> int:
    """``lightning-ldam compare``: check the options, then variants, inputs, sampling and output in turn."""
    from lightning_ldam.checkpoint import ldam_settings
    from lightning_ldam.targets import parse_neurons

    if len(args.ckpts) > 2:
        raise ValueError(f"CKPT: expected one or two checkpoints, got {len(args.ckpts)}: {args.ckpts}")
    if (args.mean is None) != (args.std is None):
        raise ValueError(f"--mean/--std: pass both or neither, got --mean {args.mean} --std {args.std}")
    for name in ("chains", "steps"):
        if getattr(args, name) is not None:
            V.check_positive(name, getattr(args, name), integer=True)
    if args.cuda_graph and (args.device == "cpu" or not torch.cuda.is_available()):
        raise ValueError(f"--cuda-graph: CUDA graphs need a CUDA device (--device {args.device}, "
                         f"torch.cuda.is_available() is {torch.cuda.is_available()}); drop --cuda-graph")
    ckpts = [_load(p, "CKPT") for p in args.ckpts]
    settings = ldam_settings(ckpts[0])
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

    variants, params_only = _compare_variants(args, ckpts, settings, module)
    inputs = _compare_inputs(args, ckpts)
    results = _sample_variants(args, ckpts, variants, params_only, neurons, module, inputs)
    return _write_comparison(args, ckpts, results)


def _compare_variants(args, ckpts, settings, module):
    """``([(name, state dict, discriminator state, checkpoint index)], parameter-only variant names)``."""
    from lightning_ldam.checkpoint import ldam_state, params_only_variants, weight_variants

    variants: List[Tuple[str, Dict[str, torch.Tensor], Optional[dict], int]] = []
    params_only: List[str] = []
    if len(ckpts) == 1:
        try:
            found = weight_variants(ckpts[0])
        except ValueError as err:
            raise ValueError(f"CKPT: {args.ckpts[0]}: {err}") from None
        if len(found) == 1:
            raise ValueError(f"CKPT: {args.ckpts[0]} holds no averaged weights (looked for LDAMCallback's EMA, "
                             f"Lightning's WeightAveraging/EMAWeightAveraging layout and StochasticWeightAveraging); "
                             f"pass a second checkpoint to compare two checkpoints")
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


def _compare_inputs(args, ckpts) -> _Inputs:
    """Real inputs from the first checkpoint with a reservoir, then shape, value range, λ, normalisation."""
    from lightning_ldam.checkpoint import ldam_state, real_inputs
    from lightning_ldam.inputs import value_box
    from lightning_ldam.sampler import DEFAULT_DISC_WEIGHT

    real, real_from = None, None
    for path, ckpt in zip(args.ckpts, ckpts):
        real = real_inputs(ckpt)
        if real is not None:
            real_from = path
            break
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
    saved_box = (ldam_state(ckpts[0]) or {}).get("value_range")
    if box is None and saved_box is not None:
        box = tuple(saved_box)
        print(f"value range: {box} (the callback's value_range)")
    if box is None:
        box = value_box(real) if real is not None else (0.0, 1.0)  # the callback's rule
        print(f"value range: {box} ({'from the reservoir' if real is not None else 'default; set --value-range'})")
    weight = args.disc_weight
    if real is None and weight is None:
        weight = 0.0
        print("no real inputs in the checkpoint (no LDAMCallback reservoir): sampling without a discriminator "
              "(λ = 0)")
    elif real is not None:
        print(f"real inputs: {real.shape[0]} from {real_from}'s reservoir; λ = "
              f"{DEFAULT_DISC_WEIGHT if weight is None else weight:g}")
    normalize = None
    saved_normalize = (ldam_state(ckpts[0]) or {}).get("normalize")
    if args.mean is not None:
        normalize = V.check_normalize((args.mean, args.std), shape[0])
    elif saved_normalize is not None:
        normalize = V.check_normalize(tuple(saved_normalize), shape[0])
        print(f"normalisation from the checkpoint: mean {saved_normalize[0]}, std {saved_normalize[1]} "
              f"(--mean/--std override)")
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if args.device == "auto" else args.device))
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device: 'cuda' requested but torch.cuda.is_available() is False; use cpu or auto")
    return _Inputs(real, tuple(shape), tuple(box), weight, normalize, device)


def _sample_variants(args, ckpts, variants, params_only, neurons, module, inputs: _Inputs) -> Dict[str, Any]:
    """Build, load and sample each variant (same chains and noise for all); results by variant name."""
    from lightning_ldam.averaging import has_batchnorm, refresh_batchnorm
    from lightning_ldam.discriminator import restore_discriminator
    from lightning_ldam.sampler import WARM_DISC_STEPS, sample

    real, shape, box, weight, normalize, device = (inputs.real, inputs.shape, inputs.box, inputs.weight,
                                                   inputs.normalize, inputs.device)
    results = {}
    checked = False
    steps = args.steps
    if steps is None and variants and all(d is not None for _, _, d, _ in variants) and real is not None:
        steps = WARM_DISC_STEPS  # every variant resumes a trained discriminator, as the callback's later rounds
        print(f"steps: {steps} (every variant has a warm discriminator from the checkpoint; --steps overrides)")
    for name, state, disc_state, idx in variants:
        model = build_model(args.model, args.init_args, ckpts[idx])
        _load_weights(model, state, f"{name!r}", args.model)
        net = _submodule(model, module).to(device).eval()
        if name in params_only and has_batchnorm(net):
            # As the callback does: an average of parameters only carries the BN statistics of its creation.
            if real is not None:
                refresh_batchnorm(net, real)
                print(f"{name!r}: BatchNorm statistics recomputed on the {real.shape[0]} saved real inputs")
            else:
                print(f"note: {name!r} averages parameters only and the checkpoint holds no real inputs to "
                      f"recompute its BatchNorm statistics; they are those of the averaged copy's creation",
                      file=sys.stderr)
        if not checked:  # neuron paths and indices, before any real work (one 1-step chain)
            sample(net, neurons, input_shape=shape, chains=1, steps=1, disc_weight=0.0, value_range=box,
                   normalize=normalize, seed=args.seed, device=device)
            checked = True
        disc = None
        if disc_state is not None and (real is not None or (weight or 0) > 0):
            try:
                disc = restore_discriminator(disc_state, shape[0], shape[1:], args.seed)
            except (RuntimeError, ValueError, IndexError, KeyError) as err:
                print(f"note: the checkpoint's {name!r} discriminator does not fit input {shape} ({err}); "
                      f"training a fresh one", file=sys.stderr)
                disc = None
        print(f"sampling {name!r} ...")
        results[name] = sample(net, neurons, input_shape=shape, chains=args.chains, steps=steps,
                               real_data=real, disc_weight=weight, value_range=box, normalize=normalize,
                               seed=args.seed, device=device, discriminator=disc,
                               progress=not args.no_progress, channels_last=args.channels_last,
                               autocast_dtype=torch.bfloat16 if args.bf16 else None,
                               cuda_graph=args.cuda_graph, method=args.method)
    return results


def _write_comparison(args, ckpts, results) -> int:
    """The TensorBoard run (the callback's tag layout) and one PNG contact sheet per layer under ``--out``."""
    from lightning_ldam.summaries import summarize, write_tensorboard
    from torch.utils.tensorboard import SummaryWriter
    from torchvision.utils import save_image

    step = int(ckpts[0].get("global_step", 0) or 0)
    images, scalars = summarize(results)
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
        path = os.path.join(args.out, f"compare_{_file_safe(layer)}.png")
        save_image(images[tag], path)
        pngs.append(path)
    print(f"wrote {len(images)} images and {len(scalars)} scalars for {', '.join(results)} at step {step} "
          f"to {args.out}")
    for path in pngs:
        print(f"wrote {path}")
    print(f"view with: tensorboard --logdir {args.out}")
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run ``lightning-ldam``; returns the exit code (2 for usage errors and bad inputs)."""
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
