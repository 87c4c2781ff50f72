"""Frozen, isolated copies of a network taken mid-training (plain PyTorch).

A snapshot shares no storage with the live model, holds no references to the trainer, datamodule or
datasets that users hang on their modules, and has ``requires_grad=False`` and eval mode everywhere.

It runs eagerly: ``torch.compile`` wrappers are taken off the copy. Compiled code is shared with the live model
(dynamo caches by code object), so running a compiled copy on the sampler's batch sizes would make training
recompile with dynamic shapes and change its numerics; and the ``forward`` that Lightning compiles onto a
``LightningModule`` instance is bound to the live module, so a copy that kept it would run the live weights.
"""
from __future__ import annotations

import copy
import types
from typing import Dict, Optional, Union

import torch
from torch import nn

__all__ = ["snapshot", "eager"]

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
    copied = eager(copied)
    copied.eval().requires_grad_(False)
    return copied.to(device) if device is not None else copied


def eager(model: nn.Module) -> nn.Module:
    """``model`` (in place) without ``torch.compile``'s wrappers: each ``OptimizedModule`` replaced by the module
    it wraps, and each compiled ``forward`` set on an instance removed (its class's ``forward`` runs again).

    Layer paths keep their meaning: ``_orig_mod.`` segments are wrapper segments to
    :func:`~lightning_ldam.sampling.targets.find_layer`.
    """
    model = _unwrapped(model)
    for module in model.modules():
        for name, child in list(module._modules.items()):
            if child is not None and _unwrapped(child) is not child:
                module._modules[name] = _unwrapped(child)
        forward = module.__dict__.get("forward")
        if forward is not None and hasattr(forward, "_torchdynamo_orig_callable"):
            del module.__dict__["forward"]
            ctx = module.__dict__.get("_compiler_ctx")  # Lightning's record of the compile: the copy has none
            if isinstance(ctx, dict):
                module.__dict__["_compiler_ctx"] = None
    return model


def _unwrapped(module: nn.Module) -> nn.Module:
    while hasattr(module, "_orig_mod") and isinstance(module._orig_mod, nn.Module) \
            and type(module).__name__ == "OptimizedModule":
        module = module._orig_mod
    return module
