"""Neuron addressing: parse neuron specs, resolve dotted module paths, list valid targets.

A *neuron* is a ``(layer_path, index)`` pair: ``layer_path`` is a dotted name from
``model.named_modules()`` and ``index`` is an output channel (conv-like outputs ``[B, C, ...]``)
or unit (linear outputs ``[B, F]``) of that module.

Accepted specs (and lists of them)::

    "features.3:12"        # one channel
    "features.3:0-7"       # an inclusive range
    "features.3:1,5,9"     # a comma list
    "classifier.2:all"     # every unit of the layer
    "classifier.2:top3"    # the 3 units most active on the real inputs, most active first
    "features.0:random8"   # 8 distinct units drawn with the call's seed, in ascending order
    {"features.3": [0, 4], "classifier.2": "all", "fc": "top3"}
    {"fc": {"units": "top3", "disc_weight": 0.0}, "conv1": {"units": "0-3", "spatial": "center"}}
    ("features.3", 12)

The grammar, one layer at a time (``K`` is an integer >= 1)::

    spec    := item | [item, ...] | {layer: units | {"units": units, setting: value, ...}, ...}
    item    := "layer:units" | (layer, units)
    units   := N | "N" | "N-M" | "N,M,..." | [N, ...] | range(...) | "all" | "topK" | "randomK"

``topK`` ranks a layer's units by their mean activation over the real inputs (``real_data`` of
:func:`~lightning_ldam.sampling.api.sample`, at most 512 images), each read as the sampler reads it (a conv
channel's mean over positions, or its centre with ``spatial="center"``); ties go to the lower index. It
needs real inputs. ``randomK`` draws from a private generator seeded by the call's ``seed`` and the
layer's path (never the global RNG): the same seed gives the same units, whatever else the spec holds.
A ``K`` above the layer's size means all of its units. Both resolve to explicit ``(layer, index)``
pairs (``SampleResult.neurons``), which can be passed back as a spec to sample the same units again.
Every form can be mixed with the others, for the same layer too: the resolved list keeps the spec's
order and drops repeats (the first occurrence stays).

Per-layer settings (the dict form only) override the call's value of a sampler setting for that layer's
neurons: ``disc_weight`` (λ; 0 turns the discriminator and the smoothness prior off for the layer),
``temperature`` (T), ``smoothness`` (κ; default 1.5 where the layer's λ > 0, else 0) and ``spatial``
(``"mean"`` or ``"center"``). See :data:`LAYER_SETTINGS` and :func:`layer_settings`.

Paths written with the ``module.`` (DDP / DataParallel) or ``_orig_mod.`` (``torch.compile``)
prefixes are accepted and mean the same layer.
"""
from __future__ import annotations

import difflib
import re
import zlib
from dataclasses import dataclass
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union, cast

import torch
from torch import nn

from lightning_ldam import _validation as V
from lightning_ldam._modes import kept_modes
from lightning_ldam.errors import LDAMArgumentError

__all__ = ["Neuron", "LayerInfo", "NeuronSpec", "NeuronRequest", "LayerRequest", "UnitPick", "parse_neurons",
           "resolve_neurons", "top_units", "random_units", "find_module", "find_layer", "list_targets",
           "canonical_path", "layer_settings", "LAYER_SETTINGS", "spec_with_settings"]

Neuron = Tuple[str, int]
IndexSpec = Union[int, str, Sequence[int], range]
NeuronSpec = Union[str, Neuron, Mapping[str, Union[IndexSpec, Mapping[str, IndexSpec]]],
                   Sequence[Union[str, Neuron]]]

_WRAPPER_SEGMENTS = ("module", "_orig_mod")
_RANGE_RE = re.compile(r"^\s*(\d+)\s*-\s*(\d+)\s*$", re.ASCII)  # ASCII: int() refuses "²", \d would not
_PICK_RE = re.compile(r"^(top|random)(\d+)$", re.ASCII)
_SPEC_HINT = ("accepted: 'layer:12', 'layer:0-7', 'layer:1,5,9', 'layer:all', 'layer:top3', 'layer:random3', "
              "a (layer, index) tuple, a list of these, or a dict {layer: index | list | range | 'all' | 'top3' | "
              "'random3' | {'units': ...}}")
#: Sampler settings a per-layer dict may hold besides ``"units"``; each overrides the call's value for that layer.
LAYER_SETTINGS = ("disc_weight", "temperature", "smoothness", "spatial")
#: Real images (at most) whose mean activations rank a layer's units for ``"layer:topK"``.
TOP_REAL_IMAGES = 512


@dataclass(frozen=True)
class UnitPick:
    """Units chosen by a rule rather than by index: ``"topK"`` or ``"randomK"`` (see the module docstring).

    Attributes:
        rule: ``"top"`` (most active on real inputs) or ``"random"`` (drawn with the call's seed).
        count: K, at least 1; more than the layer has means all of its units.
    """

    rule: str
    count: int

    def __str__(self) -> str:
        return f"{self.rule}{self.count}"


#: One layer's units in a parsed spec: explicit indices, ``"all"``, or a rule.
Units = Union[Tuple[int, ...], str, UnitPick]


@dataclass(frozen=True)
class LayerRequest:
    """One entry of a parsed spec: a layer path as written, which of its units, and its own sampler settings.

    Attributes:
        path: the layer path as the spec writes it (wrapper segments and all; resolved against a model later).
        units: explicit indices (in the spec's order), ``"all"``, or a :class:`UnitPick`.
        settings: the layer's own sampler settings (:data:`LAYER_SETTINGS`), checked; numbers as floats.
    """

    path: str
    units: Units
    settings: Tuple[Tuple[str, object], ...] = ()


@dataclass(frozen=True)
class NeuronRequest:
    """A neuron spec parsed once (:func:`parse_neurons`): its layers in the spec's order, nothing checked against a
    model yet (:func:`resolve_neurons` does that).

    Example::

        >>> request = parse_neurons({"fc": {"units": "top2", "temperature": 2}, "conv": "0-1"})
        >>> request.pairs()
        [('fc', UnitPick(rule='top', count=2)), ('conv', [0, 1])]
        >>> request.layer_settings()
        {'fc': {'temperature': 2.0}}
    """

    layers: Tuple[LayerRequest, ...]

    def __iter__(self):
        return iter(self.layers)

    def pairs(self) -> List[Tuple[str, Union[str, List[int], UnitPick]]]:
        """``[(layer_path, [indices] | "all" | UnitPick), ...]``."""
        return [(r.path, list(r.units) if isinstance(r.units, tuple) else r.units) for r in self.layers]

    def layer_settings(self) -> Dict[str, Dict[str, object]]:
        """``{layer: {setting: value}}`` of the layers that set any (a dict spec's per-layer settings)."""
        return {r.path: dict(r.settings) for r in self.layers if r.settings}

    def key(self) -> str:
        """A text that names the neurons and per-layer settings the same way in every process: layer paths without
        wrapper segments, indices and items sorted, so a set, a dict and a list of the same neurons agree.

        Example::

            >>> as_set = parse_neurons({"fc:2", "fc:0-1", "module.conv:top3"})
            >>> as_set.key() == parse_neurons(["conv:top3", "fc:0,1,2"]).key()
            True
            >>> parse_neurons({"fc": {"units": [1, 0], "disc_weight": 0.0}}).key()
            'fc:0,1;fc[disc_weight=0.0]'
        """
        units: Dict[str, set] = {}
        for r in self.layers:
            items = units.setdefault(canonical_path(r.path), set())
            if isinstance(r.units, tuple):
                items.update(r.units)
            else:
                items.add(str(r.units))
        text = [f"{layer}:{','.join(str(i) for i in sorted(units[layer], key=lambda i: (isinstance(i, str), i)))}"
                for layer in sorted(units)]
        settings = {canonical_path(layer): values for layer, values in self.layer_settings().items()}
        text += [f"{layer}[{key}={settings[layer][key]!r}]"
                 for layer in sorted(settings) for key in sorted(settings[layer])]
        return ";".join(text)


@dataclass(frozen=True)
class LayerInfo:
    """One module that can be targeted.

    Attributes:
        path: dotted name, usable in a neuron spec.
        units: number of channels (conv-like outputs, and the last axis of channel-last outputs such as a
            transformer block's ``[B, tokens, channels]``) or units (linear outputs): what ``"layer:0-3"`` indexes.
        output_shape: output shape for a batch of one, e.g. ``(1, 64, 14, 14)``.
        type_name: the module's class name.
        tokens: for a ``[B, tokens, channels]`` output, the number of tokens (what ``"layer:0-3"`` indexes with
            ``spatial="tokens"``); else ``None``.
        channels_last: whether the channels were found on the last axis (see
            :func:`~lightning_ldam.sampling.unit_axes.find_layouts`).
    """

    path: str
    units: int
    output_shape: Tuple[int, ...]
    type_name: str
    tokens: Optional[int] = None
    channels_last: bool = False

    def __str__(self) -> str:
        tokens = f" tokens={self.tokens}" if self.tokens is not None else ""
        return (f"{self.path:<32} {self.type_name:<20} units={self.units:<6}{tokens} "
                f"output={list(self.output_shape)}")


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
        f"Hint: `lightning-ldam targets <model class> --input-shape C,H,W` (or "
        f"lightning_ldam.list_targets(model, input_shape)) lists the valid paths.")


def find_module(model: nn.Module, path: str) -> nn.Module:
    """Return the submodule at ``path`` (wrapper prefixes allowed); see :func:`find_layer`."""
    return find_layer(model, path)[1]


def _parse_pick(layer: str, text: str) -> UnitPick:
    """``"top3"`` / ``"random8"`` -> :class:`UnitPick`; any other word starting with top/random is an error."""
    match = _PICK_RE.match(text)
    if match is None:
        raise LDAMArgumentError("neurons", f"expected 'topK' or 'randomK' with an integer K >= 1 (e.g. 'top3', "
                                           f"'random8') for layer {layer!r}, got {text!r}")
    count = int(match.group(2))
    if count < 1:
        raise LDAMArgumentError("neurons", f"K in {text!r} for layer {layer!r} must be >= 1 (e.g. "
                                           f"'{match.group(1)}3'), got {count}")
    return UnitPick(match.group(1), count)


def _parse_layer_settings(layer: str, settings: Mapping) -> LayerRequest:
    """A dict value ``{"units": ..., setting: value}`` as a :class:`LayerRequest` (settings checked)."""
    others = sorted(str(k) for k in settings if k != "units" and k not in LAYER_SETTINGS)
    if others:
        raise LDAMArgumentError("neurons", f"expected per-layer settings among {['units', *LAYER_SETTINGS]}, got "
                                           f"{others} for layer {layer!r}")
    if "units" not in settings:
        raise LDAMArgumentError("neurons", f"per-layer settings for layer {layer!r} need 'units' (e.g. "
                                           f"{{'units': 'top3'}}), got {dict(settings)!r}")
    checked = tuple((key, _check_setting(layer, key, value)) for key, value in settings.items() if key != "units")
    return LayerRequest(layer.strip(), _parse_indices(layer, settings["units"]), checked)


def _check_setting(layer: str, key: str, value):
    """One per-layer setting, checked like the call's argument of that name; numbers come back as floats."""
    try:
        if key == "spatial":
            from lightning_ldam.sampling.unit_axes import (
                SPATIAL,  # here: unit_axes is imported by capture, which imports us
            )
            return V.check_choice(key, value, SPATIAL)
        return float(V.check_positive(key, value, allow_zero=key != "temperature"))
    except LDAMArgumentError as err:
        raise LDAMArgumentError("neurons", f"{key!r} of layer {layer!r}: {err.message}") from None


def layer_settings(spec: Union[NeuronSpec, NeuronRequest]) -> Dict[str, Dict[str, object]]:
    """The per-layer settings of a spec, ``{layer: {setting: value}}`` (layers without any left out).

    Example::

        >>> layer_settings({"conv1": {"units": "0-3", "spatial": "center"}, "fc": "all"})
        {'conv1': {'spatial': 'center'}}
        >>> layer_settings("fc:0-3")
        {}
    """
    return parse_neurons(spec).layer_settings()


def spec_with_settings(neurons: Sequence[Neuron], settings: Mapping[str, Mapping[str, object]]) -> NeuronSpec:
    """Resolved ``(layer, index)`` pairs as a spec that keeps per-layer settings: the pairs themselves when there
    are none, else the dict form (one entry per layer, in order of first appearance; a resolved dict spec lists
    each layer's units together, so its order is kept).

    Example::

        >>> spec_with_settings([("fc", 2), ("fc", 0)], {"fc": {"temperature": 2.0}})
        {'fc': {'units': [2, 0], 'temperature': 2.0}}
        >>> spec_with_settings([("fc", 2)], {})
        [('fc', 2)]
    """
    if not any(settings.get(layer) for layer, _ in neurons):
        return [(layer, int(index)) for layer, index in neurons]
    out: Dict[str, Dict[str, Any]] = {}
    for layer, index in neurons:
        out.setdefault(layer, {"units": []})["units"].append(int(index))
    for layer, entry in out.items():
        entry.update(settings.get(layer, {}))
    return out


def _parse_indices(layer: str, spec: IndexSpec) -> Units:
    """Turn one layer's index spec into a tuple of ints, the marker ``"all"`` or a :class:`UnitPick`."""
    if isinstance(spec, bool):
        raise LDAMArgumentError("neurons", f"index for layer {layer!r} must be an int, a range, a list, 'all', "
                                           f"'topK' or 'randomK'; got {spec!r}")
    if isinstance(spec, int):
        return (spec,)
    if isinstance(spec, range):
        return tuple(spec)
    if isinstance(spec, str):
        text = spec.strip()
        if text == "all":
            return "all"
        if text.startswith(("top", "random")):
            return _parse_pick(layer, text)
        match = _RANGE_RE.match(text)
        if match:
            lo, hi = int(match.group(1)), int(match.group(2))
            if hi < lo:
                raise LDAMArgumentError("neurons", f"range {text!r} for layer {layer!r} is empty (end < start); "
                                 f"{_SPEC_HINT}")
            return tuple(range(lo, hi + 1))
        parts = [p.strip() for p in text.split(",")]
        if parts and all(p.isascii() and p.isdigit() for p in parts):
            return tuple(int(p) for p in parts)
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
        return tuple(out)
    raise LDAMArgumentError("neurons",
        f"index for layer {layer!r} must be an int, a range, a list, 'all', 'topK' or 'randomK'; got {spec!r}")


def parse_neurons(spec: Union[NeuronSpec, NeuronRequest]) -> NeuronRequest:
    """Parse a neuron spec once into a :class:`NeuronRequest`, without a model (a request is returned as it is).

    Order is kept; nothing is checked against a model yet (see :func:`resolve_neurons`).

    Example::

        >>> parse_neurons(["conv1:0-2", "fc:all", "fc:top3"]).pairs()
        [('conv1', [0, 1, 2]), ('fc', 'all'), ('fc', UnitPick(rule='top', count=3))]
    """
    if isinstance(spec, NeuronRequest):
        return spec
    return NeuronRequest(tuple(_parse_items(spec)))


def _parse_items(spec: NeuronSpec) -> List[LayerRequest]:
    if isinstance(spec, Mapping):
        if not spec:
            raise LDAMArgumentError("neurons", f"got an empty dict; {_SPEC_HINT}")
        items = []
        for layer, idx in spec.items():
            if not isinstance(layer, str) or not layer.strip():
                raise LDAMArgumentError("neurons", f"dict keys must be layer paths (str); got {layer!r}")
            items.append(_parse_layer_settings(layer, idx) if isinstance(idx, Mapping)
                         else LayerRequest(layer.strip(), _parse_indices(layer, idx)))
        return items
    if isinstance(spec, str):
        text = spec.strip()
        if ":" not in text:
            raise LDAMArgumentError("neurons", f"spec {spec!r} has no ':' between layer path and index; {_SPEC_HINT}")
        layer, _, idx = text.rpartition(":")
        if not layer.strip():
            raise LDAMArgumentError("neurons", f"spec {spec!r} has an empty layer path; {_SPEC_HINT}")
        return [LayerRequest(layer.strip(), _parse_indices(layer, idx))]
    if (isinstance(spec, tuple) and len(spec) == 2 and isinstance(spec[0], str)
            and (not isinstance(spec[1], str) or ":" not in spec[0])):
        return [LayerRequest(spec[0].strip(), _parse_indices(spec[0], cast(IndexSpec, spec[1])))]  # checked there
    if isinstance(spec, Iterable) and not isinstance(spec, (bytes, bytearray)):
        # a set iterates in an order that changes with the process's hash seed: sorted, every process agrees
        spec_list = sorted(spec, key=repr) if isinstance(spec, (set, frozenset)) else list(spec)
        if not spec_list:
            raise LDAMArgumentError("neurons", f"got an empty list; {_SPEC_HINT}")
        items = []
        for item in spec_list:
            if isinstance(item, Mapping):
                raise LDAMArgumentError("neurons", f"a list may hold strings and (layer, index) tuples, not dicts; "
                                                   f"got {item!r}")
            items.extend(_parse_items(item))
        return items
    raise LDAMArgumentError("neurons", f"expected a str, a (layer, index) tuple, a list or a dict; got "
                                       f"{type(spec).__name__} {spec!r}")


def resolve_neurons(spec: Union[NeuronSpec, NeuronRequest], units: Mapping[str, int],
                    aliases: Optional[Mapping[str, str]] = None, *,
                    means: Optional[Mapping[str, torch.Tensor]] = None, seed: int = 0) -> List[Neuron]:
    """Expand a spec against known layer sizes into ``[(canonical_path, index), ...]``.

    The result keeps the spec's order and drops repeats (the first occurrence stays), so ``["fc:0-3",
    "fc:top2"]`` samples each unit once. Every rule is resolved to explicit indices: the result is itself a
    spec that names the same units.

    Args:
        spec: a neuron spec (see module docstring).
        units: layer path (canonical) -> number of channels/units, e.g. from :func:`list_targets`.
        aliases: spec path -> key of ``units`` (as :func:`find_layer` resolves it); default
            :func:`canonical_path`.
        means: key of ``units`` -> ``[units]`` mean activation of each unit on real inputs, which ranks the
            units of ``"layer:topK"`` (:func:`top_units`); the sampler computes it from ``real_data``.
        seed: seeds the draw of ``"layer:randomK"`` (:func:`random_units`).

    Raises:
        LDAMArgumentError: an index is out of range, a layer is unknown, or ``"topK"`` has no ``means``.

    Example::

        >>> resolve_neurons(["fc:2", "fc:top2"], {"fc": 4}, means={"fc": torch.tensor([0.1, 0.9, 0.5, 0.9])})
        [('fc', 2), ('fc', 1), ('fc', 3)]
    """
    resolved: Dict[Neuron, None] = {}  # an ordered set: the spec's order, repeats dropped
    for request in parse_neurons(spec):
        layer, idx = request.path, request.units
        key = aliases[layer] if aliases and layer in aliases else canonical_path(layer)
        if key not in units:
            close = difflib.get_close_matches(key, list(units), n=5, cutoff=0.5)
            hint = f" Close matches: {close}." if close else ""
            raise LDAMArgumentError("neurons", f"layer path {layer!r} is not a targetable module.{hint} "
                                    f"Hint: `lightning-ldam targets <model class> --input-shape C,H,W` (or "
                                    f"lightning_ldam.list_targets(model, input_shape)) lists the valid paths.")
        for i in _layer_indices(layer, key, idx, units[key], means, seed):
            resolved.setdefault((key, i))
    return list(resolved)


def _layer_indices(layer: str, key: str, idx: Units, count: int,
                   means: Optional[Mapping[str, torch.Tensor]], seed: int) -> List[int]:
    """One parsed layer entry as explicit indices into a layer of ``count`` units (checked against ``count``)."""
    if isinstance(idx, UnitPick) and idx.rule == "random":
        return random_units(count, idx.count, seed=seed, layer=key)
    if isinstance(idx, UnitPick):
        if means is None or key not in means:
            raise LDAMArgumentError("neurons", f"'{idx}' needs real_data (the units are ranked on real inputs) "
                                               f"for layer {layer!r}, got none; pass real images, or choose units "
                                               f"without data, e.g. '{layer}:random{idx.count}' or "
                                               f"'{layer}:0-{idx.count - 1}'")
        if means[key].numel() != count:
            raise LDAMArgumentError("means", f"expected {count} mean activations for layer {layer!r} (one per "
                                             f"unit), got {means[key].numel()}")
        return top_units(means[key], idx.count)
    if isinstance(idx, str):  # "all"
        return list(range(count))
    for i in idx:
        if not 0 <= i < count:
            raise LDAMArgumentError("neurons", f"index {i} is out of range for layer {layer!r}, which has {count} "
                                               f"units (valid: 0-{count - 1})")
    return list(idx)


def top_units(means: torch.Tensor, k: int) -> List[int]:
    """The ``k`` units with the highest mean activation, most active first; ties go to the lower index.

    A ``k`` above the number of units gives all of them. NaN means rank last (a unit that is NaN on real
    inputs is not "most active").

    Args:
        means: ``[units]`` mean activation of each unit (e.g. over real inputs).
        k: how many, at least 1.

    Example::

        >>> top_units(torch.tensor([0.2, 0.7, 0.2, 0.9]), 3)
        [3, 1, 0]
    """
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise LDAMArgumentError("k", f"expected an int >= 1, got {k!r}")
    means = torch.as_tensor(means).detach().flatten().float().cpu()
    means = torch.where(torch.isnan(means), torch.full_like(means, float("-inf")), means)
    # stable: among equal means the lower index comes first
    order = torch.sort(means, descending=True, stable=True).indices
    return order[:k].tolist()


def random_units(units: int, k: int, *, seed: int = 0, layer: str = "") -> List[int]:
    """``k`` distinct unit indices out of ``units``, drawn without the global RNG, in ascending order.

    The draw depends on ``seed`` and ``layer`` only (a private generator seeded by both), so the same seed picks
    the same units of a layer whatever else a spec holds, and two layers of one size get different units. The
    ``k`` units are the first ``k`` of one permutation: a larger ``k`` keeps the smaller one's units. A ``k``
    above ``units`` gives all of them.

    Example::

        >>> random_units(10, 3, seed=1, layer="fc") == random_units(10, 3, seed=1, layer="fc")
        True
        >>> random_units(4, 9)
        [0, 1, 2, 3]
    """
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise LDAMArgumentError("k", f"expected an int >= 1, got {k!r}")
    # crc32, not hash(): Python salts str hashes per process, and the units must not change between runs
    mixed = (int(seed) * 0x9E3779B1 + zlib.crc32(layer.encode())) % 2 ** 63
    generator = torch.Generator(device="cpu").manual_seed(mixed)
    return sorted(torch.randperm(units, generator=generator)[:k].tolist())


def first_tensor(output) -> Optional[torch.Tensor]:
    """A module's output tensor: the output itself, or the first element of a tuple/list; else ``None``."""
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], torch.Tensor):
        return output[0]
    return None


@torch.no_grad()
def list_targets(model: nn.Module, input_shape: Sequence[int],
                 device: Union[str, torch.device, None] = None) -> List[LayerInfo]:
    """List every module whose output can be targeted, with its channel/unit count.

    Runs one dry forward on zeros of shape ``(1, *input_shape)`` in eval mode; the model's
    train/eval modes are restored afterwards.

    Args:
        model: the network.
        input_shape: ``(C, H, W)`` (or any per-sample shape the model accepts).
        device: where to run; default the model's device.

    Returns:
        One :class:`LayerInfo` per module with a tensor output of at least 2 dims, in call order. A transformer
        block's ``[1, tokens, channels]`` output lists its channels as ``units`` and its ``tokens`` beside them.

    Example::

        >>> net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 26 * 26, 10))
        >>> [(t.path, t.units) for t in list_targets(net, (1, 28, 28))]
        [('0', 4), ('1', 4), ('2', 2704), ('3', 10)]
    """
    from lightning_ldam._validation import check_input_shape, check_model, model_device  # avoid cycle
    from lightning_ldam.sampling.unit_axes import find_layouts

    check_model(model)
    shape = check_input_shape(input_shape)
    device = model_device(model) if device is None else torch.device(device)
    table = _module_table(model)
    seen: Dict[str, Tuple[Tuple[int, ...], str]] = {}  # path -> output shape, module type
    handles = []

    def make_hook(path: str):
        def hook(module, args, output):
            out = first_tensor(output)
            if path in seen or out is None or out.dim() < 2:
                return
            seen[path] = tuple(out.shape), type(module).__name__
        return hook

    paths = [path for path in table if path]
    try:
        for path in paths:
            handles.append(table[path].register_forward_hook(make_hook(path)))
        with kept_modes(model), torch.inference_mode(False), find_layouts(model, paths, table) as layouts:
            model.eval()
            try:
                model(torch.zeros((1, *shape), device=device))
            except Exception as err:  # the model's own error, re-raised with the shape we tried
                raise LDAMArgumentError("input_shape", f"the model rejected an input of shape {(1, *shape)} "
                                 f"(input_shape={tuple(shape)}): {type(err).__name__}: {err}") from err
    finally:
        for h in handles:
            h.remove()
    infos = []
    for path, (out_shape, type_name) in seen.items():
        last = layouts.get(path, False)
        infos.append(LayerInfo(path, int(out_shape[-1] if last else out_shape[1]), out_shape, type_name,
                               tokens=int(out_shape[1]) if last and len(out_shape) == 3 else None, channels_last=last))
    return infos
