"""The Lightning side: :class:`LDAMCallback` and what it needs around training (settings, budget, reservoir).

- :mod:`~lightning_ldam.callback.ldam_callback`: the callback;
- :mod:`~lightning_ldam.callback.settings`: its arguments, checked once;
- :mod:`~lightning_ldam.callback.budget` and :mod:`~lightning_ldam.callback.round_size`: how often and how large
  rounds are;
- :mod:`~lightning_ldam.callback.reservoir`: real inputs kept from training batches;
- :mod:`~lightning_ldam.callback.messages`, :mod:`~lightning_ldam.callback.own_line`: what the user is told;
- :mod:`~lightning_ldam.callback.interrupts`: SIGTERM ends a round;
- :mod:`~lightning_ldam.callback.standalone`: the callback for the ``pytorch_lightning`` package.
"""
from lightning_ldam.callback.ldam_callback import LDAMCallback

__all__ = ["LDAMCallback"]
