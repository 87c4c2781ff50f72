"""``LDAMCallback`` for the standalone ``pytorch_lightning`` package.

``pytorch_lightning.Trainer`` only accepts callbacks derived from ``pytorch_lightning.Callback`` (a class
hierarchy distinct from ``lightning.pytorch``'s). This module gives the same callback on that base: the
logic is :class:`lightning_ldam.callback.ldam_callback.LDAMCallbackLogic`, shared, not copied.

Example::

    from lightning_ldam.callback.standalone import LDAMCallback   # needs `pip install pytorch-lightning`
    trainer = pytorch_lightning.Trainer(callbacks=[LDAMCallback("fc:all")])
"""
from __future__ import annotations

try:
    from pytorch_lightning import Callback
    from pytorch_lightning.utilities import rank_zero as _rank_zero
except ImportError as err:  # pragma: no cover - depends on the environment
    raise ImportError("lightning_ldam.callback.standalone needs the `pytorch_lightning` package "
                      "(pip install pytorch-lightning); with `lightning` use lightning_ldam.LDAMCallback") from err

from lightning_ldam.callback.ldam_callback import LDAMCallback as _LightningLDAMCallback
from lightning_ldam.callback.ldam_callback import LDAMCallbackLogic

__all__ = ["LDAMCallback"]


# The shared hooks are annotated with lightning.pytorch's Trainer and LightningModule; pytorch_lightning's Callback
# declares its own (a distinct class hierarchy with the same interface), which mypy reads as incompatible.
class LDAMCallback(LDAMCallbackLogic, Callback):  # type: ignore[misc]
    __doc__ = _LightningLDAMCallback.__doc__

    _rank_zero_info = staticmethod(_rank_zero.rank_zero_info)
    _rank_zero_warn = staticmethod(_rank_zero.rank_zero_warn)
