"""Frozen, isolated copies of a network taken mid-training (plain PyTorch).

A snapshot shares no storage with the live model, holds no references to the trainer, datamodule or
datasets that users hang on their modules, and has ``requires_grad=False`` and eval mode everywhere.
"""
from __future__ import annotations

import copy
import types
from typing import Dict, Optional, Union

import torch
from torch import nn

__all__ = ["snapshot"]

_REGISTERED = ("_parameters", "_buffers", "_modules")


def snapshot(model: nn.Module, device: Optional[Union[str, torch.device]] = None) -> nn.Module:
    """Deep-copy ``model``'s modules, parameters and buffers; everything else is shared, not copied.

    Plain attributes (a trainer, a dataset, a logger, a non-leaf tensor cached by the user) are put in
    the deepcopy memo so they are referenced instead of copied: copying them is slow, can fail, and
    is never needed to run ``forward`` on frozen weights.
    """
    memo: Dict[int, object] = {}
    for module in model.modules():
        for key, value in vars(module).items():
            # Containers (hook dicts and the like) are copied so the snapshot never shares them; bound methods
            # (e.g. a forward patched onto the instance by a strategy) are rebound to the copy by deepcopy.
            if key in _REGISTERED or isinstance(value, (nn.Module, bool, int, float, str, type(None), dict,
                                                        list, tuple, set, frozenset, types.MethodType)):
                continue
            memo[id(value)] = value
    # inference_mode(False): a copy made inside a caller's inference_mode would hold inference tensors,
    # which autograd (the sampler's input gradients) refuses.
    with torch.inference_mode(False), torch.no_grad():
        copied = copy.deepcopy(model, memo)
    copied.eval().requires_grad_(False)
    return copied.to(device) if device is not None else copied
