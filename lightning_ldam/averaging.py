"""The callback's own exponential moving average of a network's weights (plain PyTorch).

Used when the trainer has no Lightning weight-averaging callback. It is an
:class:`torch.optim.swa_utils.AveragedModel` with ``get_ema_multi_avg_fn`` (floats averaged with
foreach lerp, integer buffers copied), so ``state_dict`` and ``.to()`` come for free.
"""
from __future__ import annotations

import copy
from typing import Optional, Union

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

__all__ = ["EMA"]


class EMA(nn.Module):
    """EMA of ``model``'s parameters and buffers, updated every ``every_n_steps`` optimizer steps.

    Args:
        model: the network to follow (deep-copied once; the copy never trains).
        decay: weight of the old average, in [0, 1).
        every_n_steps: update on optimizer steps that are multiples of this.
        device: keep the average here (e.g. ``"cpu"`` to save GPU memory); default: the model's device.

    Example::

        >>> net = nn.Linear(2, 1)
        >>> ema = EMA(net, decay=0.5)
        >>> with torch.no_grad():
        ...     _ = net.weight.add_(1.0)
        >>> ema.update(net, step=1)
        True
        >>> int(ema.n_averaged)
        1
    """

    def __init__(self, model: nn.Module, decay: float = 0.999, every_n_steps: int = 1,
                 device: Optional[Union[str, torch.device]] = None):
        super().__init__()
        if isinstance(decay, bool) or not isinstance(decay, (int, float)) or not 0.0 <= decay < 1.0:
            raise ValueError(f"ema_decay: expected a float in [0, 1), got {decay!r}")
        if isinstance(every_n_steps, bool) or not isinstance(every_n_steps, int) or every_n_steps < 1:
            raise ValueError(f"ema_every_n_steps: expected an int >= 1, got {every_n_steps!r}")
        self.decay = float(decay)
        self.every_n_steps = every_n_steps
        frozen = copy.deepcopy(model).eval().requires_grad_(False)
        self.average = AveragedModel(frozen, device=device, multi_avg_fn=get_ema_multi_avg_fn(self.decay),
                                     use_buffers=True)

    @property
    def n_averaged(self) -> torch.Tensor:
        """How many updates went into the average (0: none yet, the average is the initial copy)."""
        return self.average.n_averaged

    @property
    def module(self) -> nn.Module:
        """The averaged network."""
        return self.average.module

    def should_update(self, step: int) -> bool:
        return step > 0 and step % self.every_n_steps == 0

    @torch.no_grad()
    def update(self, model: nn.Module, step: int) -> bool:
        """Fold ``model``'s current weights in if ``step`` is due; returns whether it updated."""
        if not self.should_update(step):
            return False
        self.average.update_parameters(model)
        return True
