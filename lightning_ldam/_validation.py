"""Argument checks shared by the sampler, the callback and the CLI.

Every message names the argument, what is accepted and the value received, so a user can fix the
call without reading the source.
"""
from __future__ import annotations

import math
from numbers import Real
from typing import Optional, Sequence, Tuple, cast

import torch
from torch import nn

from lightning_ldam.errors import LDAMArgumentError

#: Seeds go to ``torch.Generator.manual_seed`` (64 bits); kept to a signed 64-bit int with room for offsets.
SEED_MAX = 2 ** 63 - 1
#: Characters of a value's repr that a message shows at most.
SHOWN_CHARACTERS = 120


def shown(value) -> str:
    """``value`` as an error message shows it: a tensor or an array by its shape and dtype (never its values),
    anything else by its ``repr``, cut to :data:`SHOWN_CHARACTERS` characters.

    Example::

        >>> shown(torch.zeros(3, 28, 28))
        'a tensor of shape (3, 28, 28) and dtype torch.float32'
        >>> shown("noise")
        "'noise'"
    """
    if isinstance(value, torch.Tensor):
        return f"a tensor of shape {tuple(value.shape)} and dtype {value.dtype}"
    if type(value).__module__ == "numpy" and hasattr(value, "shape") and hasattr(value, "dtype"):
        return f"an array of shape {tuple(value.shape)} and dtype {value.dtype}"
    try:
        text = repr(value)
    except Exception:  # a repr that raises still gets a message
        text = f"<{type(value).__name__}>"
    return text if len(text) <= SHOWN_CHARACTERS else f"{text[:SHOWN_CHARACTERS]}... ({len(text)} characters)"


def check_seed(name: str, value) -> int:
    """An int in ``[0, SEED_MAX]``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise LDAMArgumentError(name, f"expected an int, got {shown(value)}")
    if not 0 <= value <= SEED_MAX:
        raise LDAMArgumentError(name, f"expected an int in [0, 2**63 - 1], got {value}")
    return value


def check_model(model) -> nn.Module:
    if not isinstance(model, nn.Module):
        raise LDAMArgumentError("model", f"expected a torch.nn.Module, got {type(model).__name__}")
    return model


def check_input_shape(input_shape) -> Tuple[int, ...]:
    if isinstance(input_shape, torch.Size):
        input_shape = tuple(input_shape)
    if (not isinstance(input_shape, Sequence) or isinstance(input_shape, str) or not input_shape
            or not all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in input_shape)):
        raise LDAMArgumentError("input_shape", f"expected a per-sample shape of positive ints such as (3, 32, 32), "
                         f"got {shown(input_shape)}")
    return tuple(int(s) for s in input_shape)


def check_positive(name: str, value, *, integer: bool = False, allow_zero: bool = False):
    kind = "int" if integer else "number"
    ok_type = isinstance(value, int) if integer else isinstance(value, Real)
    bound = ">= 0" if allow_zero else "> 0"
    if (isinstance(value, bool) or not ok_type or not math.isfinite(value) or value < 0
            or (value == 0 and not allow_zero)):
        raise LDAMArgumentError(name, f"expected a finite {kind} {bound}, got {shown(value)}")
    return value


def check_value_range(value_range) -> Tuple[float, float]:
    try:
        lo, hi = (float(v) for v in value_range)
    except (TypeError, ValueError):
        raise LDAMArgumentError("value_range", f"expected (lo, hi) with lo < hi, got {shown(value_range)}") from None
    if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
        raise LDAMArgumentError("value_range", f"expected (lo, hi) with lo < hi, got {shown(value_range)}")
    return lo, hi


def check_choice(name: str, value, choices: Sequence):
    # compared by type first: a tensor's == would compare elementwise (or raise), not say "no"
    if not any(value is c or (type(value) is type(c) and value == c) for c in choices):
        raise LDAMArgumentError(name, f"expected one of {list(choices)}, got {shown(value)}")
    return value


def normalize_channels(normalize) -> int:
    """Channels implied by a ``(mean, std)`` pair: the longer of the two (1 for scalars)."""
    try:
        return max(torch.as_tensor(v, dtype=torch.float32).numel() for v in normalize)
    except (TypeError, ValueError):
        raise LDAMArgumentError("normalize", f"expected (mean, std), each a float or one value per channel, "
                         f"got {shown(normalize)}") from None


def check_normalize(normalize, channels: int) -> Optional[Tuple[torch.Tensor, torch.Tensor]]:
    """Return ``(mean, std)`` as ``[1, C, 1, ...]``-broadcastable float tensors, or ``None``."""
    if normalize is None:
        return None
    try:
        mean, std = normalize
        mean = torch.as_tensor(mean, dtype=torch.float32).flatten()
        std = torch.as_tensor(std, dtype=torch.float32).flatten()
    except (TypeError, ValueError):
        raise LDAMArgumentError("normalize", f"expected (mean, std), each a float or one value per channel, "
                         f"got {shown(normalize)}") from None
    for name, t in (("mean", mean), ("std", std)):
        if t.numel() not in (1, channels):
            raise LDAMArgumentError("normalize",
                f"{name} must have 1 or {channels} (channels) values, got {t.tolist()}")
    if not bool(torch.isfinite(mean).all()):
        raise LDAMArgumentError("normalize", f"mean must be finite, got {mean.tolist()}")
    if not bool((std > 0).all() & torch.isfinite(std).all()):
        raise LDAMArgumentError("normalize", f"std must be finite and > 0, got {std.tolist()}")
    return mean, std


def model_device(model: nn.Module) -> torch.device:
    """The device of the model's first parameter or buffer (CPU for a stateless model)."""
    t: torch.Tensor
    for t in model.parameters():
        return t.device
    for t in model.buffers():
        return t.device
    return torch.device("cpu")


def model_dtype(model: nn.Module) -> torch.dtype:
    """The dtype of the model's first floating-point parameter or buffer (float32 otherwise)."""
    for t in list(model.parameters()) + list(model.buffers()):
        if t.is_floating_point():
            return t.dtype
    return torch.float32


def check_fraction(name: str, value, *, one: bool = True) -> float:
    """A number in [0, 1] (``one=False``: in [0, 1))."""
    if isinstance(value, bool) or not isinstance(value, Real) or not (
            0.0 <= cast(float, value) <= 1.0 if one else 0.0 <= cast(float, value) < 1.0):  # a Real compares
        raise LDAMArgumentError(name, f"expected a {'number' if one else 'float'} in [0, 1{']' if one else ')'}, "
                                      f"got {shown(value)}")
    return float(value)


def check_decay(name: str, value) -> float:
    """A decay in [0, 1) (EMA weights)."""
    return check_fraction(name, value, one=False)


def check_device(name: str, device, *, resolve_index: bool = True) -> Optional[torch.device]:
    """``device`` as a ``torch.device`` usable on this machine (``None`` stays ``None``: the model's device).

    ``resolve_index``: a CUDA device without an index becomes the current one (the sampler, at call time); ``False``
    keeps ``"cuda"`` as it is (the callback's arguments, checked before a strategy picks each rank's device).
    """
    if device is None:
        return None
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError) as err:
        raise LDAMArgumentError(name, f"expected a torch.device or a string such as 'cpu', 'cuda' or 'cuda:1', "
                                      f"got {shown(device)}") from err
    if dev.type == "meta":
        raise LDAMArgumentError(name, "expected a device that holds values ('cpu', 'cuda', ...), got 'meta'")
    if dev.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise LDAMArgumentError(name, f"CUDA is not available here (torch.cuda.is_available() is False), got "
                                          f"{name}={str(dev)!r}; pass {name}='cpu', or None for the model's device")
        if dev.index is None and resolve_index:
            dev = torch.device("cuda", torch.cuda.current_device())
        if dev.index is not None and dev.index >= count:
            raise LDAMArgumentError(name, f"expected one of cuda:0 to cuda:{count - 1} (this machine's CUDA devices), "
                                          f"got {str(dev)!r}")
    elif dev.type != "cpu":
        try:
            torch.empty(0, device=dev)
        except Exception as err:  # the backend's own message says why (not built, no driver, ...)
            raise LDAMArgumentError(name, f"expected a device usable here, got {str(dev)!r} "
                                          f"({type(err).__name__}: {err})") from err
    return dev

