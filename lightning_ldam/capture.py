"""Read neuron activations with hooks on the target modules only, stopping the forward early.

Modelled on captum.optim's output hook: hooks are attached to the target modules alone, the
forward is aborted as soon as every target has produced its output (layers after the deepest
target never run), and hooks are always removed in ``finally``.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Dict, Iterator, List, Mapping, Sequence, Tuple, Union

import torch
from torch import nn

from lightning_ldam.errors import LDAMArgumentError, TargetNotReached
from lightning_ldam.targets import Neuron, find_module, first_tensor
from lightning_ldam.unit_axes import find_layouts, reduce_units, units_first

__all__ = ["ActivationReader", "capture_outputs", "probe_outputs", "spatial_mode", "Spatial"]

#: How conv channels reduce to one number: ``"mean"``/``"center"`` for every layer, or ``{layer: mode}`` (a layer
#: not in the dict reads ``"mean"``).
Spatial = Union[str, Mapping[str, str]]


def spatial_mode(spatial: Spatial, layer: str) -> str:
    """The reduction of ``layer``'s channels under ``spatial``.

    Example::

        >>> spatial_mode("center", "conv1"), spatial_mode({"conv1": "center"}, "conv2")
        ('center', 'mean')
    """
    return spatial if isinstance(spatial, str) else spatial.get(layer, "mean")


class _TargetsCaptured(Exception):
    """Raised inside a hook to stop the forward pass once every target is captured."""


def _as_tensor(path: str, output) -> torch.Tensor:
    out = first_tensor(output)
    if out is not None:
        return out
    raise LDAMArgumentError("neurons", f"layer {path!r} returns {type(output).__name__}, not a tensor; "
                    f"choose a layer whose output is a tensor of shape [batch, channels, ...]")


@contextmanager
def capture_outputs(model: nn.Module, paths: Sequence[str]) -> Iterator[Dict[str, torch.Tensor]]:
    """Context that hooks ``paths``; inside it, ``run(x)`` style calls fill the yielded dict.

    Use :func:`run_to_targets` to run a forward that stops at the deepest target.
    """
    outputs: Dict[str, torch.Tensor] = {}
    wanted = set(paths)
    handles = []

    def make_hook(path: str):
        def hook(module, args, output):
            if path not in outputs:
                out = _as_tensor(path, output)
                done = wanted.issubset({*outputs, path})
                # A later in-place op (ResNets' ReLU(inplace=True)) would overwrite a kept output before the
                # deepest target fires, so keep a (differentiable) copy; the last target needs none, as the
                # forward stops right here.
                outputs[path] = out if done else out.clone()
                if done:
                    raise _TargetsCaptured
        return hook

    try:
        for path in paths:
            handles.append(find_module(model, path).register_forward_hook(make_hook(path)))
        yield outputs
    finally:
        for h in handles:
            h.remove()


def run_to_targets(model: nn.Module, x: torch.Tensor, outputs: Dict[str, torch.Tensor],
                   paths: Sequence[str]) -> Dict[str, torch.Tensor]:
    """Run ``model(x)`` inside :func:`capture_outputs` and return the captured outputs.

    A batch of one runs as two rows (the second a detached copy) and the outputs keep the first: a model that needs
    batch statistics (BatchNorm without running statistics) refuses a batch of one.
    """
    outputs.clear()
    single = x.shape[0] == 1
    try:
        model(torch.cat([x, x.detach()]) if single else x)
    except _TargetsCaptured:
        pass
    missing = [p for p in paths if p not in outputs]
    if missing:
        raise TargetNotReached(missing)
    return {p: out[:1] for p, out in outputs.items()} if single else dict(outputs)


def probe_outputs(model: nn.Module, paths: Sequence[str], x: torch.Tensor
                  ) -> Tuple[Dict[str, torch.Tensor], Dict[str, int], Dict[str, bool]]:
    """One whole forward of ``x`` (no early stop): each target's first output, how often each target ran, and for
    targets with >= 3-dim outputs whether their channels are last (:func:`~lightning_ldam.unit_axes.find_layouts`).

    A module that runs more than once per forward (one ReLU shared by two places) cannot be read by the early-stop
    forward, which sees its first call only: this is where such targets are found. An error of the model raised
    after every target has run is ignored, since the sampler's forwards stop before it.
    """
    outputs: Dict[str, torch.Tensor] = {}
    calls = {path: 0 for path in paths}
    handles = []
    modules = {path: find_module(model, path) for path in paths}

    def make_hook(path: str):
        def hook(module, args, output):
            calls[path] += 1
            if path not in outputs:
                outputs[path] = _as_tensor(path, output)
        return hook

    try:
        for path in paths:
            handles.append(modules[path].register_forward_hook(make_hook(path)))
        with find_layouts(model, paths, modules) as layouts:
            try:
                model(x)
            except Exception:
                if any(p not in outputs for p in paths) or not outputs:
                    raise
    finally:
        for h in handles:
            h.remove()
    missing = [p for p in paths if p not in outputs]
    if missing:
        raise TargetNotReached(missing)
    return outputs, calls, dict(layouts)


class ActivationReader:
    """Per-chain activation of each chain's own neuron, for a neuron-major batch.

    The batch holds ``chains`` consecutive rows per neuron, neurons in ``neurons`` order; one forward
    evaluates every chain and each row reads its own neuron (layers may be mixed).

    Args:
        model: the frozen network (eval mode).
        neurons: resolved ``(layer_path, index)`` pairs.
        chains: chains per neuron.
        spatial: a reading of :mod:`~lightning_ldam.unit_axes` (``"mean"``: a conv channel's mean over its
            positions; ``"center"``: its centre unit; ``"channels_last_mean"``, ...), or ``{layer: reading}`` (see
            :data:`Spatial`). ``"mean"``/``"center"`` read axis 1 here: the sampler resolves each layer's layout.
        device: where index tensors live.
    """

    def __init__(self, model: nn.Module, neurons: Sequence[Neuron], chains: int, spatial: Spatial = "mean",
                 device=None):
        self.model = model
        self.spatial = spatial
        self.layers: List[str] = list(dict.fromkeys(layer for layer, _ in neurons))
        rows_per_layer: Dict[str, List[int]] = {layer: [] for layer in self.layers}
        chans_per_layer: Dict[str, List[int]] = {layer: [] for layer in self.layers}
        for n, (layer, index) in enumerate(neurons):
            for c in range(chains):
                rows_per_layer[layer].append(n * chains + c)
                chans_per_layer[layer].append(index)
        self.rows = {k: torch.tensor(v, device=device) for k, v in rows_per_layer.items()}
        self.channels = {k: torch.tensor(v, device=device) for k, v in chans_per_layer.items()}
        order = torch.cat([self.rows[k] for k in self.layers])
        self.inverse = torch.argsort(order)
        self._outputs: Dict[str, torch.Tensor] = {}

    @contextmanager
    def attached(self):
        """Keep the hooks on for a whole sampling run (removed on exit, even on error)."""
        with capture_outputs(self.model, self.layers) as outputs:
            self._outputs = outputs
            try:
                yield self
            finally:
                self._outputs = {}

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """Return activations ``[B]`` (float32) for model input ``x`` (call inside :meth:`attached`)."""
        outputs = run_to_targets(self.model, x, self._outputs, self.layers)
        values = []
        for layer in self.layers:
            reading = spatial_mode(self.spatial, layer)
            picked = units_first(outputs[layer], reading)[self.rows[layer], self.channels[layer]]  # [n, *positions]
            values.append(reduce_units(picked, reading).float())
        return torch.cat(values)[self.inverse]
