"""Read neuron activations with hooks on the target modules only, stopping the forward early.

Modelled on captum.optim's output hook: hooks are attached to the target modules alone, the
forward is aborted as soon as every target has produced its output (layers after the deepest
target never run), and hooks are always removed in ``finally``.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Dict, Iterator, List, Mapping, Optional, Sequence, Tuple, Union, cast

import torch
from torch import nn

from lightning_ldam import _validation as V
from lightning_ldam._modes import kept_modes
from lightning_ldam.errors import LDAMArgumentError, TargetNotReached
from lightning_ldam.sampling.targets import Neuron, find_module, first_tensor
from lightning_ldam.sampling.unit_axes import READINGS, find_layouts, reduce_units, units_first

__all__ = ["ActivationReader", "capture_outputs", "probe_outputs", "spatial_mode", "Spatial", "unit_activations",
           "chain_activations"]

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
    targets with >= 3-dim outputs whether their channels are last
    (:func:`~lightning_ldam.sampling.unit_axes.find_layouts`).

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
        spatial: a reading of :mod:`~lightning_ldam.sampling.unit_axes` (``"mean"``: a conv channel's mean over its
            positions; ``"center"``: its centre unit; ``"channels_last_mean"``, ...), or ``{layer: reading}`` (see
            :data:`Spatial`). ``"mean"``/``"center"`` read axis 1 here: the sampler resolves each layer's layout.
        device: where index tensors live.
    """

    def __init__(self, model: nn.Module, neurons: Sequence[Neuron], chains: int, spatial: Spatial = "mean",
                 device: Optional[torch.device] = None):
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


def chain_activations(model: nn.Module, neurons: Sequence[Neuron], images: torch.Tensor, spatial: Spatial = "mean",
                      normalize: Optional[Tuple] = None) -> torch.Tensor:
    """``[n, chains]``: each chain of ``images`` (``[n, chains, *input_shape]``, pixel space) read on its own neuron,
    as the sampler reads it (:func:`unit_activations`)."""
    n, c = images.shape[:2]
    acts = unit_activations(model, neurons, images.flatten(0, 1), spatial=spatial, normalize=normalize)
    return acts.view(n, c, n).diagonal(dim1=0, dim2=2).t().contiguous()


@torch.no_grad()
def unit_activations(model: nn.Module, layer_neurons: Sequence[Neuron], x: torch.Tensor, spatial: Spatial = "mean",
                     normalize: Optional[Tuple] = None, batch_size: int = 256) -> torch.Tensor:
    """Activations of resolved neurons on real images, read as the sampler reads them.

    Conv channels reduce to the mean over positions (``spatial="mean"``) or the centre unit
    (``spatial="center"``), linear units are read as they are; the other readings of
    :mod:`~lightning_ldam.sampling.unit_axes` (channels last, tokens) as they say. ``"mean"``/``"center"`` read axis 1:
    pass ``SampleResult.config["spatial"]``, which holds each layer's resolved reading. The model runs in eval mode
    (as it does while sampling: BN uses running statistics, Dropout is off) and is left in the mode it was found in;
    the forward stops at the deepest target layer.

    Args:
        model: the network.
        layer_neurons: resolved ``(layer_path, index)`` pairs, e.g. ``SampleResult.neurons``.
        x: ``[N, *input_shape]`` real images in pixel space.
        spatial: a reading, or ``{layer: reading}`` (e.g. ``SampleResult.config["spatial"]`` when
            layers set their own).
        normalize: ``(mean, std)`` (per channel or scalar) applied to ``x`` before the model.
        batch_size: images per forward.

    Returns:
        ``[N, n]`` float32 activations on the CPU, column ``j`` for ``layer_neurons[j]``.

    Raises:
        ValueError: an unknown ``spatial``, an empty neuron list, or a layer the forward never calls.
    """
    for mode in ([spatial] if isinstance(spatial, str) else list(spatial.values())):
        V.check_choice("spatial", mode, READINGS)
    V.check_positive("batch_size", batch_size, integer=True)
    neurons = [(str(layer), int(index)) for layer, index in layer_neurons]
    if not neurons:
        raise LDAMArgumentError("layer_neurons", "expected at least one (layer_path, index) pair")
    layers: List[str] = list(dict.fromkeys(layer for layer, _ in neurons))
    columns: Dict[str, List[int]] = {layer: [j for j, (path, _) in enumerate(neurons) if path == layer]
                                     for layer in layers}
    device, dtype = V.model_device(model), V.model_dtype(model)
    index = {layer: torch.tensor([neurons[j][1] for j in columns[layer]], device=device) for layer in layers}
    norm = None
    if normalize is not None:
        mean, std = cast(Tuple[torch.Tensor, torch.Tensor], V.check_normalize(normalize, x.shape[1]))  # not None
        view = (1, -1) + (1,) * (x.dim() - 2)
        norm = (mean.to(device).view(view), std.to(device).view(view))
    result = torch.empty((x.shape[0], len(neurons)))
    with kept_modes(model), capture_outputs(model, layers) as outputs:
        model.eval()
        for start in range(0, x.shape[0], batch_size):
            xb = x[start:start + batch_size].to(device, torch.float32)
            if norm is not None:
                xb = (xb - norm[0]) / norm[1]
            captured = run_to_targets(model, xb.to(dtype), outputs, layers)
            for layer in layers:
                reading = spatial_mode(spatial, layer)
                picked = reduce_units(units_first(captured[layer], reading).index_select(1, index[layer]),
                                      reading, start=2)
                result[start:start + xb.shape[0], columns[layer]] = picked.float().cpu()
    return result
