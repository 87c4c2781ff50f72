"""Neuron addressing: parse neuron specs, resolve dotted module paths, list valid targets.

A *neuron* is a ``(layer_path, index)`` pair: ``layer_path`` is a dotted name from
``model.named_modules()`` and ``index`` is an output channel (conv-like outputs ``[B, C, ...]``)
or unit (linear outputs ``[B, F]``) of that module.

Accepted specs (and lists of them)::

    "features.3:12"        # one channel
    "features.3:0-7"       # an inclusive range
    "features.3:1,5,9"     # a comma list
    "classifier.2:all"     # every unit of the layer
    {"features.3": [0, 4], "classifier.2": "all"}
    ("features.3", 12)

Paths written with the ``module.`` (DDP / DataParallel) or ``_orig_mod.`` (``torch.compile``)
prefixes are accepted and mean the same layer.
"""
from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from typing import Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

import torch
from torch import nn

from lightning_ldam.errors import LDAMArgumentError

__all__ = ["Neuron", "LayerInfo", "NeuronSpec", "parse_neurons", "resolve_neurons", "find_module",
           "find_layer", "list_targets", "canonical_path"]

Neuron = Tuple[str, int]
IndexSpec = Union[int, str, Sequence[int], range]
NeuronSpec = Union[str, Neuron, Mapping[str, IndexSpec], Sequence[Union[str, Neuron]]]

_WRAPPER_SEGMENTS = ("module", "_orig_mod")
_RANGE_RE = re.compile(r"^\s*(\d+)\s*-\s*(\d+)\s*$")
_SPEC_HINT = ("accepted: 'layer:12', 'layer:0-7', 'layer:1,5,9', 'layer:all', a (layer, index) tuple, "
              "a list of these, or a dict {layer: index | list | range | 'all'}")


@dataclass(frozen=True)
class LayerInfo:
    """One module that can be targeted.

    Attributes:
        path: dotted name, usable in a neuron spec.
        units: number of channels (conv-like outputs) or units (linear outputs).
        output_shape: output shape for a batch of one, e.g. ``(1, 64, 14, 14)``.
        type_name: the module's class name.
    """

    path: str
    units: int
    output_shape: Tuple[int, ...]
    type_name: str

    def __str__(self) -> str:
        return f"{self.path:<32} {self.type_name:<20} units={self.units:<6} output={list(self.output_shape)}"


def canonical_path(path: str) -> str:
    """Drop wrapper segments (``module.``, ``_orig_mod.``) so wrapped and bare names agree.

    The last segment is always kept, so a real submodule named ``module`` keeps its name.
    """
    parts = path.split(".")
    kept = [p for p in parts[:-1] if p not in _WRAPPER_SEGMENTS] + parts[-1:]
    return ".".join(kept)


def _module_table(model: nn.Module) -> Dict[str, nn.Module]:
    """Display name -> module, with wrapper levels (DDP's ``module``, compile's ``_orig_mod``) left out.

    A child counts as a wrapper level when it is its parent's only child and is named like one, so a
    real submodule called ``module`` beside other children keeps its name.
    """
    display: Dict[int, str] = {id(model): ""}
    table: Dict[str, nn.Module] = {}
    for name, module in model.named_modules():
        if not name or id(module) in display:
            continue
        parent_name, _, leaf = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        parent_display = display.get(id(parent), parent_name)
        if leaf in _WRAPPER_SEGMENTS and len(parent._modules) == 1:
            display[id(module)] = parent_display
            continue
        shown = f"{parent_display}.{leaf}" if parent_display else leaf
        display[id(module)] = shown if shown not in table else name
        table[display[id(module)]] = module
    return table


def find_layer(model: nn.Module, path: str) -> Tuple[str, nn.Module]:
    """Return ``(display_name, module)`` for ``path``: an exact ``named_modules()`` name or a wrapper-free one.

    Raises:
        ValueError: the path names no module; the message lists close matches.
    """
    table = _module_table(model)
    display_of = {id(m): d for d, m in table.items()}
    exact = dict(model.named_modules())
    if path and path in exact and id(exact[path]) in display_of:
        return display_of[id(exact[path])], exact[path]
    key = canonical_path(path)
    if key in table:
        return key, table[key]
    close = difflib.get_close_matches(key, list(table), n=5, cutoff=0.5)
    hint = f" Close matches: {close}." if close else ""
    raise LDAMArgumentError(
        "neurons", f"layer path {path!r} is not a module of {type(model).__name__}.{hint} "
        f"Hint: use lightning_ldam.list_targets(model, input_shape) to list valid paths.")


def find_module(model: nn.Module, path: str) -> nn.Module:
    """Return the submodule at ``path`` (wrapper prefixes allowed); see :func:`find_layer`."""
    return find_layer(model, path)[1]


def _parse_indices(layer: str, spec: IndexSpec) -> Union[str, List[int]]:
    """Turn one layer's index spec into a list of ints or the marker ``"all"``."""
    if isinstance(spec, bool):
        raise LDAMArgumentError("neurons", f"index for layer {layer!r} must be an int, a range, a list or 'all'; "
                        f"got {spec!r}")
    if isinstance(spec, int):
        return [spec]
    if isinstance(spec, range):
        return list(spec)
    if isinstance(spec, str):
        text = spec.strip()
        if text == "all":
            return "all"
        match = _RANGE_RE.match(text)
        if match:
            lo, hi = int(match.group(1)), int(match.group(2))
            if hi < lo:
                raise LDAMArgumentError("neurons", f"range {text!r} for layer {layer!r} is empty (end < start); "
                                 f"{_SPEC_HINT}")
            return list(range(lo, hi + 1))
        parts = [p.strip() for p in text.split(",")]
        if parts and all(p.isdigit() for p in parts):
            return [int(p) for p in parts]
        raise LDAMArgumentError("neurons", f"cannot read index {spec!r} for layer {layer!r}; {_SPEC_HINT}")
    if isinstance(spec, Sequence) and not isinstance(spec, (bytes, bytearray)):
        out = []
        for item in spec:
            if isinstance(item, bool) or not isinstance(item, int):
                raise LDAMArgumentError("neurons",
                    f"indices for layer {layer!r} must be ints; got {item!r} in {spec!r}")
            out.append(int(item))
        if not out:
            raise LDAMArgumentError("neurons", f"empty index list for layer {layer!r}; {_SPEC_HINT}")
        return out
    raise LDAMArgumentError("neurons",
        f"index for layer {layer!r} must be an int, a range, a list or 'all'; got {spec!r}")


def parse_neurons(spec: NeuronSpec) -> List[Tuple[str, Union[str, List[int]]]]:
    """Parse a neuron spec into ``[(layer_path, [indices] | "all"), ...]`` without a model.

    Order is kept; nothing is checked against a model yet (see :func:`resolve_neurons`).

    Example::

        >>> parse_neurons(["conv1:0-2", "fc:all"])
        [('conv1', [0, 1, 2]), ('fc', 'all')]
    """
    items: List[Tuple[str, Union[str, List[int]]]] = []
    if isinstance(spec, Mapping):
        if not spec:
            raise LDAMArgumentError("neurons", f"got an empty dict; {_SPEC_HINT}")
        for layer, idx in spec.items():
            if not isinstance(layer, str) or not layer.strip():
                raise LDAMArgumentError("neurons", f"dict keys must be layer paths (str); got {layer!r}")
            items.append((layer.strip(), _parse_indices(layer, idx)))
        return items
    if isinstance(spec, str):
        text = spec.strip()
        if ":" not in text:
            raise LDAMArgumentError("neurons", f"spec {spec!r} has no ':' between layer path and index; {_SPEC_HINT}")
        layer, _, idx = text.rpartition(":")
        if not layer.strip():
            raise LDAMArgumentError("neurons", f"spec {spec!r} has an empty layer path; {_SPEC_HINT}")
        return [(layer.strip(), _parse_indices(layer, idx))]
    if (isinstance(spec, tuple) and len(spec) == 2 and isinstance(spec[0], str)
            and (not isinstance(spec[1], str) or ":" not in spec[0])):
        return [(spec[0].strip(), _parse_indices(spec[0], spec[1]))]
    if isinstance(spec, Iterable) and not isinstance(spec, (bytes, bytearray)):
        spec_list = list(spec)
        if not spec_list:
            raise LDAMArgumentError("neurons", f"got an empty list; {_SPEC_HINT}")
        for item in spec_list:
            if isinstance(item, Mapping):
                raise LDAMArgumentError("neurons", f"a list may hold strings and (layer, index) tuples, not dicts; "
                                f"got {item!r}")
            items.extend(parse_neurons(item))
        return items
    raise LDAMArgumentError("neurons", f"expected a str, a (layer, index) tuple, a list or a dict; got "
                    f"{type(spec).__name__} {spec!r}")


def resolve_neurons(spec: NeuronSpec, units: Mapping[str, int],
                    aliases: Optional[Mapping[str, str]] = None) -> List[Neuron]:
    """Expand a spec against known layer sizes into ``[(canonical_path, index), ...]``.

    Args:
        spec: a neuron spec (see module docstring).
        units: layer path (canonical) -> number of channels/units, e.g. from :func:`list_targets`.
        aliases: spec path -> key of ``units`` (as :func:`find_layer` resolves it); default
            :func:`canonical_path`.

    Raises:
        ValueError: an index is out of range, or a layer is unknown.
    """
    resolved: List[Neuron] = []
    for layer, idx in parse_neurons(spec):
        key = aliases[layer] if aliases and layer in aliases else canonical_path(layer)
        if key not in units:
            close = difflib.get_close_matches(key, list(units), n=5, cutoff=0.5)
            hint = f" Close matches: {close}." if close else ""
            raise LDAMArgumentError("neurons", f"layer path {layer!r} is not a targetable module.{hint} "
                             f"Hint: use lightning_ldam.list_targets(model, input_shape) to list valid paths.")
        count = units[key]
        indices = list(range(count)) if idx == "all" else idx
        for i in indices:
            if not 0 <= i < count:
                raise LDAMArgumentError("neurons", f"index {i} is out of range for layer {layer!r}, which has {count} "
                                 f"units (valid: 0-{count - 1})")
            resolved.append((key, i))
    return resolved


def first_tensor(output) -> Optional[torch.Tensor]:
    """A module's output tensor: the output itself, or the first element of a tuple/list; else ``None``."""
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], torch.Tensor):
        return output[0]
    return None


@torch.no_grad()
def list_targets(model: nn.Module, input_shape: Sequence[int], device=None) -> List[LayerInfo]:
    """List every module whose output can be targeted, with its channel/unit count.

    Runs one dry forward on zeros of shape ``(1, *input_shape)`` in eval mode; the model's
    train/eval modes are restored afterwards.

    Args:
        model: the network.
        input_shape: ``(C, H, W)`` (or any per-sample shape the model accepts).
        device: where to run; default the model's device.

    Returns:
        One :class:`LayerInfo` per module with a tensor output of at least 2 dims, in call order.

    Example::

        >>> net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 26 * 26, 10))
        >>> [(t.path, t.units) for t in list_targets(net, (1, 28, 28))]
        [('0', 4), ('1', 4), ('2', 2704), ('3', 10)]
    """
    from lightning_ldam._validation import check_input_shape, check_model, model_device  # avoid cycle

    check_model(model)
    shape = check_input_shape(input_shape)
    device = model_device(model) if device is None else torch.device(device)
    table = _module_table(model)
    seen: Dict[str, LayerInfo] = {}
    handles = []

    def make_hook(path: str):
        def hook(module, args, output):
            out = first_tensor(output)
            if path in seen or out is None or out.dim() < 2:
                return
            seen[path] = LayerInfo(path, int(out.shape[1]), tuple(out.shape), type(module).__name__)
        return hook

    modes = {m: m.training for m in model.modules()}
    try:
        for path, module in table.items():
            if path:
                handles.append(module.register_forward_hook(make_hook(path)))
        model.eval()
        with torch.inference_mode(False):
            try:
                model(torch.zeros((1, *shape), device=device))
            except Exception as err:  # the model's own error, re-raised with the shape we tried
                raise LDAMArgumentError("input_shape", f"the model rejected an input of shape {(1, *shape)} "
                                 f"(input_shape={tuple(shape)}): {type(err).__name__}: {err}") from err
    finally:
        for h in handles:
            h.remove()
        for m, mode in modes.items():
            m.training = mode
    return list(seen.values())
