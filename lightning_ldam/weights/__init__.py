"""The weights a round samples: frozen snapshots, the callback's own EMA, Lightning's averagers, checkpoints.

- :mod:`~lightning_ldam.weights.snapshot`: frozen, isolated copies of a network taken mid-training;
- :mod:`~lightning_ldam.weights.ema`: the callback's own exponential moving average, and BatchNorm statistics;
- :mod:`~lightning_ldam.weights.lightning_averagers`: which of Lightning's averaging callbacks a run has, and
  their averaged copies;
- :mod:`~lightning_ldam.weights.checkpoint`: weights and LDAM state out of checkpoint files.
"""
