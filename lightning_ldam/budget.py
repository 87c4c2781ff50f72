"""Keep LDAM rounds under a share of the training wall time (``LDAMCallback(max_overhead=...)``).

A due round runs when the sampling seconds so far plus the round's estimated cost stay within
``fraction`` of the training seconds so far (wall time since fit start, minus the sampling itself). The
cost model is ``variants × (fixed + steps × per_step)``:

* after a round: that round's seconds per variant and step (its fixed costs folded into the steps, which
  overestimates a later round with fewer steps: the safe side);
* before any round: a short probe run measured by the caller (:meth:`OverheadBudget.record_probe`).

The probe is itself a cost, so it waits until the budget could plausibly hold a round at all: a
Langevin step is assumed to cost at least :data:`MIN_STEP_SHARE` of a training step (scaled down when the
round's batch is smaller than the training batch). A short run never pays for a probe it cannot use.

This module imports no Lightning; the clock is injectable for tests.
"""
from __future__ import annotations

import time
from typing import Callable, Optional

__all__ = ["OverheadBudget", "MIN_STEP_SHARE"]

#: Lower bound on one Langevin step's cost as a share of one training step at the same batch: a Langevin
#: step is a forward plus an input-gradient backward (no weight gradients, no optimizer) of a frozen copy,
#: about 2/3 of a training step when compute-bound, more when launch-bound. 1/4 leaves room for data-loading
#: and logging time that the measured training step includes.
MIN_STEP_SHARE = 0.25


class OverheadBudget:
    """Wall-time accounting for rounds against training.

    Args:
        fraction: the share of training wall time sampling may take (e.g. ``0.05``).
        clock: seconds, monotonic (default ``time.perf_counter``).

    Example::

        >>> t = [0.0]
        >>> b = OverheadBudget(0.05, clock=lambda: t[0])
        >>> b.start(); t[0] = 100.0
        >>> b.allowance()  # 5% of 100 s of training, nothing sampled yet
        5.0
        >>> b.record_round(4.0, variants=2, steps=512); b.estimate(variants=2, steps=256)
        2.0
    """

    def __init__(self, fraction: float, clock: Callable[[], float] = time.perf_counter):
        self.fraction = float(fraction)
        self.clock = clock
        self.started: Optional[float] = None
        self.sampling = 0.0
        self._fixed: Optional[float] = None
        self._per_step: Optional[float] = None

    def start(self) -> None:
        """Fit start: the clock starts, sampling seconds reset (a resumed run starts a new account)."""
        self.started, self.sampling = self.clock(), 0.0

    def add_sampling(self, seconds: float) -> None:
        """Seconds the callback spent (rounds, probes, per-batch work): they do not count as training time."""
        self.sampling += max(0.0, float(seconds))

    def training_seconds(self) -> float:
        """Wall time since :meth:`start` that was not spent sampling."""
        if self.started is None:
            return 0.0
        return max(0.0, self.clock() - self.started - self.sampling)

    def allowance(self) -> float:
        """Seconds the next round may take now without going over ``fraction`` (negative: already over)."""
        return self.fraction * self.training_seconds() - self.sampling

    @property
    def has_estimate(self) -> bool:
        return self._per_step is not None

    def estimate(self, variants: int, steps: int) -> Optional[float]:
        """Estimated seconds of a round of ``variants`` × ``steps``; ``None`` before any measurement."""
        if self._per_step is None:
            return None
        return variants * (self._fixed + steps * self._per_step)

    def record_round(self, seconds: float, variants: int, steps: int) -> None:
        """A finished round's wall time: the estimate for the next ones."""
        if variants > 0 and steps > 0 and seconds > 0:
            self._fixed, self._per_step = 0.0, seconds / (variants * steps)

    def record_probe(self, seconds: float, step_seconds: float, steps: int, warmup_updates: int = 0,
                     updates_per_step: int = 0) -> None:
        """A probe run, before any round: the estimate's per-step time and per-variant fixed cost.

        Args:
            seconds: the probe call's wall time.
            step_seconds: its time per Langevin step (setup excluded).
            steps: its Langevin steps (what ``seconds`` holds beyond them is the fixed cost: setup).
            warmup_updates: discriminator updates a round makes before its first step (a fresh D's warm-up);
                the probe made none.
            updates_per_step: discriminator updates per Langevin step. A step also reads D's input gradient,
                so one update costs under ``step_seconds / (updates_per_step + 1)``.
        """
        fixed = max(0.0, seconds - steps * step_seconds)
        fixed += warmup_updates * step_seconds / (updates_per_step + 1)
        self._per_step, self._fixed = max(0.0, float(step_seconds)), fixed

    def worth_probing(self, variants: int, steps: int, train_steps: int, round_batch: int = 0,
                      train_batch: int = 0) -> bool:
        """Whether the allowance could hold a round under the :data:`MIN_STEP_SHARE` lower bound.

        Args:
            variants: weight variants the round would sample.
            steps: Langevin steps per variant.
            train_steps: training steps so far (their mean wall time scales the bound; none: not yet).
            round_batch: chains in one Langevin step (0: unknown).
            train_batch: inputs in one training batch (0: unknown). A round batch smaller than the training
                batch lowers the bound in proportion; a larger one does not raise it (the bound stays a
                lower bound).
        """
        if train_steps <= 0:
            return False
        share = min(1.0, round_batch / train_batch) if round_batch and train_batch else 1.0
        bound = variants * steps * MIN_STEP_SHARE * self.training_seconds() / train_steps * share
        return self.allowance() >= bound
