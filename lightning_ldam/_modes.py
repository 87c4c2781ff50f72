"""Leave a model's modes as found: every submodule's ``training`` flag, restored whatever a block sets."""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

from torch import nn

__all__ = ["kept_modes"]


@contextmanager
def kept_modes(model: nn.Module) -> Iterator[nn.Module]:
    """Inside the block, set any mode (``model.eval()``, ``model.train()``); on exit, each submodule's ``training``
    flag is back as it was (per submodule: a model in train mode with a frozen, eval-mode part keeps both).

    Example::

        >>> net = nn.Sequential(nn.Linear(2, 2), nn.Dropout())
        >>> net[1].eval()  # doctest: +ELLIPSIS
        Dropout(...)
        >>> with kept_modes(net):
        ...     _ = net.eval()
        >>> net.training, net[1].training
        (True, False)
    """
    modes = [(m, m.training) for m in model.modules()]
    try:
        yield model
    finally:
        for m, mode in modes:
            m.training = mode
