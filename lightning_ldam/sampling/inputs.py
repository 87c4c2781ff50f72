"""Read model inputs from batches and find their value box."""
from __future__ import annotations

from typing import Any, Callable, Tuple, Union

import torch

from lightning_ldam.errors import LDAMArgumentError

__all__ = ["InputKey", "extract_input", "value_box"]

InputKey = Union[None, int, str, Callable[[Any], torch.Tensor]]
_DICT_KEYS = ("image", "input", "x")


def extract_input(batch: Any, input_key: InputKey = None) -> torch.Tensor:
    """Pull the input images out of a batch.

    ``input_key=None`` understands a tensor, a tuple/list (first element) and a dict with
    ``"image"``, ``"input"`` or ``"x"``. An int indexes a sequence, a str keys a dict, a callable gets the batch.

    Raises:
        ValueError: the batch cannot be read with ``input_key``.
    """
    out: Any  # whatever the key reads: checked below
    try:
        if callable(input_key):
            out = input_key(batch)
        elif input_key is not None:
            out = batch[input_key]
        elif isinstance(batch, torch.Tensor):
            out = batch
        elif isinstance(batch, (tuple, list)) and batch:
            out = batch[0]
        elif isinstance(batch, dict):
            out = next((batch[k] for k in _DICT_KEYS if k in batch), None)
        else:
            out = None
    except (KeyError, IndexError, TypeError) as err:
        raise LDAMArgumentError("input_key", f"cannot read the inputs of a {type(batch).__name__} batch with "
                         f"input_key={input_key!r} ({type(err).__name__}: {err}); pass an int index, a dict key "
                         f"or a callable batch -> tensor") from err
    if isinstance(out, torch.Tensor) and out.dim() >= 2 and not out.is_floating_point():
        # The key found the images; their dtype is the problem (8-bit pixels, as torchvision's PILToTensor gives).
        box = "[0, 255]" if out.dtype == torch.uint8 else "their range"
        raise LDAMArgumentError("input_key", f"the batch's inputs are {out.dtype} {list(out.shape)}: LDAM samples "
                                             f"floating-point images, so convert them to float in [lo, hi] (e.g. "
                                             f"x.float() / 255 for [0, 1], or x.float() with value_range=(0, 255) for "
                                             f"{box}) in the dataset, or pass input_key=<callable returning floats>")
    if not isinstance(out, torch.Tensor) or out.dim() < 2:
        keys = list(batch) if isinstance(batch, dict) else None
        raise LDAMArgumentError("input_key", f"input_key={input_key!r} does not give a floating-point image tensor "
                         f"[B, C, H, W] from a {type(batch).__name__} batch"
                         f"{f' with keys {keys}' if keys else ''} (got {type(out).__name__}); the default reads "
                         f"a tensor, the first element of a tuple/list, or a dict's {list(_DICT_KEYS)}: pass "
                         f"input_key=<int | str | callable>")
    return out


def value_box(images: torch.Tensor) -> Tuple[float, float]:
    """The pixel box of ``images``: (0, 1) or (-1, 1) when the data fits; (0, 255) for data that fits it
    and exceeds 2 (8-bit pixels); else the data's min and max."""
    lo, hi = float(images.min()), float(images.max())
    for box in ((0.0, 1.0), (-1.0, 1.0)):
        if lo >= box[0] and hi <= box[1]:
            return box
    if lo >= 0.0 and 2.0 < hi <= 255.0:
        return (0.0, 255.0)
    return (lo, hi) if hi > lo else (lo, lo + 1.0)
