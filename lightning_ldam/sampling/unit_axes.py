"""Which axis of a layer's output holds its units, and how the other axes reduce to one number per unit.

Conv-like outputs ``[B, C, *positions]`` keep their channels on axis 1. Transformer blocks give ``[B, N, D]``:
``N`` tokens, ``D`` channels, channels last (as do channel-last maps such as Swin's ``[B, H, W, C]``). Which of the
two a layer's output is gets found from the module that made its values (:func:`find_layouts`), not from the shape
alone, since 64 tokens of 64 channels and a 64-channel 1-D conv look the same.

A *reading* says how a unit's activation is taken from one output:

=========================  ==========================================================================
``"mean"``                 channel ``c`` (axis 1), mean over the positions (conv default)
``"center"``               channel ``c`` (axis 1) at the centre position
``"channels_last_mean"``   channel ``c`` (last axis), mean over the tokens/positions (transformer default)
``"channels_last_center"`` channel ``c`` (last axis) at the centre token/position
``"tokens"``               token ``n`` of a ``[B, N, D]`` output, mean over its ``D`` channels
=========================  ==========================================================================

Users write ``spatial="mean"`` / ``"center"`` (the layout is then found per layer) or ``"tokens"``; the resolved
reading of each layer is what ``SampleResult.config["spatial"]`` reports. The ``channels_last_*`` names may be
given too, to force that layout where the finding is wrong.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import torch
from torch import nn

from lightning_ldam.errors import LDAMArgumentError

__all__ = ["SPATIAL", "READINGS", "find_layouts", "resolve_reading", "units_first", "unit_count", "reduce_units",
           "channel_count"]

#: What a user may pass as ``spatial`` (the call's or a layer's).
SPATIAL = ("mean", "center", "tokens", "channels_last_mean", "channels_last_center")
#: Readings that take the channels from the last axis.
CHANNELS_LAST = ("channels_last_mean", "channels_last_center")
#: Readings that take the centre position instead of the mean.
CENTRE = ("center", "channels_last_center")
READINGS = SPATIAL

# Modules whose output keeps channels on axis 1 (PyTorch's conv, norm and pool layers for [B, C, ...] inputs).
_CHANNELS_FIRST = (nn.modules.conv._ConvNd, nn.modules.batchnorm._BatchNorm, nn.modules.instancenorm._InstanceNorm,
                   nn.GroupNorm, nn.LocalResponseNorm, nn.modules.pooling._MaxPoolNd, nn.modules.pooling._AvgPoolNd,
                   nn.modules.pooling._AdaptiveAvgPoolNd, nn.modules.pooling._AdaptiveMaxPoolNd,
                   nn.modules.pooling._LPPoolNd)


def _decisive(module: nn.Module) -> bool:
    """Whether ``module`` made the values of its output (own parameters, or a conv-family layer): an activation,
    a dropout, a flatten or a container does not tell where the channels are."""
    return isinstance(module, _CHANNELS_FIRST) or next(module.parameters(recurse=False), None) is not None


def channel_count(module: nn.Module, out: torch.Tensor) -> Tuple[int, bool]:
    """``(channels, channels_first)`` of a decisive module's output: axis 1 for conv-family layers, else the last
    axis (Linear, LayerNorm, attention, Embedding, a custom layer with parameters)."""
    first = isinstance(module, _CHANNELS_FIRST) and out.dim() >= 3
    return int(out.shape[1] if first else out.shape[-1]), first


@contextmanager
def find_layouts(model: nn.Module, paths: Sequence[str], modules: Dict[str, nn.Module]
                 ) -> Iterator[Dict[str, bool]]:
    """Context that hooks every module of ``model``; after a forward inside it, the yielded dict maps each of
    ``paths`` whose output has >= 3 dims to whether its channels are on the last axis.

    The evidence is the last decisive module (see :func:`channel_count`) to finish at or before the target's own
    output, inside it or before it: its channel count is matched against the output's axis 1 and last axis, and
    where both match (``[B, 64, 64]``) its own layout decides. No evidence keeps axis 1.

    Args:
        model: the network.
        paths: the targets' canonical paths.
        modules: ``{path: module}`` for ``paths``.
    """
    layouts: Dict[str, bool] = {}
    finished: List[Tuple[int, bool]] = []  # (channels, channels_first) of decisive modules, in finishing order
    wanted = set(paths)
    targets = {id(m): p for p, m in modules.items() if p in wanted}
    handles = []

    def hook(module, args, output):
        out = output if isinstance(output, torch.Tensor) else (
            output[0] if isinstance(output, (tuple, list)) and output and isinstance(output[0], torch.Tensor)
            else None)
        if out is None:
            return
        if _decisive(module) and out.dim() >= 2:
            finished.append(channel_count(module, out))
        path = targets.get(id(module))
        if path is not None and path not in layouts and out.dim() >= 3:
            layouts[path] = _channels_last(out.shape, finished[-1] if finished else None)

    try:
        for module in model.modules():
            handles.append(module.register_forward_hook(hook))
        yield layouts
    finally:
        for h in handles:
            h.remove()


def _channels_last(shape: torch.Size, evidence: Optional[Tuple[int, bool]]) -> bool:
    if evidence is None:
        return False
    channels, first = evidence
    on_first, on_last = shape[1] == channels, shape[-1] == channels
    if on_first != on_last:
        return on_last
    return not first if on_first else False


def resolve_reading(mode: str, channels_last: bool, shape: Sequence[int], layer: str) -> str:
    """The reading of ``layer`` (output ``shape``, batch included) for the user's ``mode``.

    ``"mean"``/``"center"`` follow the found layout; ``"tokens"`` needs a ``[B, N, D]`` output with channels last;
    an explicit ``channels_last_*`` needs >= 3 dims.

    Example::

        >>> resolve_reading("mean", True, (2, 65, 64), "blocks.1")
        'channels_last_mean'
        >>> resolve_reading("center", False, (2, 8, 14, 14), "conv1")
        'center'
    """
    if mode == "tokens":
        if len(shape) != 3 or not channels_last:
            raise LDAMArgumentError("neurons", f"spatial='tokens' reads the token positions of a [batch, tokens, "
                                    f"channels] output; layer {layer!r} outputs {tuple(shape)}"
                                    f"{' with its channels on axis 1' if len(shape) == 3 else ''}: use 'mean' "
                                    f"or 'center'")
        return mode
    if mode in CHANNELS_LAST:
        if len(shape) < 3:
            raise LDAMArgumentError("neurons", f"spatial={mode!r} reads channels on the last axis of an output with "
                                    f"positions; layer {layer!r} outputs {tuple(shape)}: use 'mean'")
        return mode
    if channels_last and len(shape) >= 3:
        return f"channels_last_{mode}"
    return mode


def units_first(out: torch.Tensor, reading: str) -> torch.Tensor:
    """``out`` with the reading's unit axis moved to axis 1 (a view)."""
    return out.movedim(-1, 1) if reading in CHANNELS_LAST else out


def unit_count(shape: Sequence[int], reading: str) -> int:
    """Units a layer of output ``shape`` (batch included) has under ``reading``."""
    return int(shape[-1] if reading in CHANNELS_LAST else shape[1])


def reduce_units(picked: torch.Tensor, reading: str, start: int = 1) -> torch.Tensor:
    """Reduce every axis from ``start`` on (the positions of the picked units) to one value: the centre position
    for the ``center`` readings, else the mean."""
    if picked.dim() <= start:
        return picked
    if reading in CENTRE:
        while picked.dim() > start:
            picked = picked.select(start, picked.shape[start] // 2)
        return picked
    return picked.flatten(start).mean(start)
