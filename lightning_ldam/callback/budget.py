"""Keep LDAM rounds under a share of the training wall time (``LDAMCallback(max_overhead=...)``).

A due round runs when the sampling seconds so far plus the round's estimated cost stay within
``fraction`` of the training seconds so far (wall time since fit start, minus the sampling itself). The
estimate is the last round's seconds per variant and step (its fixed costs folded into the steps, which
overestimates a later round with fewer steps: the safe side). The callback runs the first due round of a
fit unconditionally, so the cost is always measured, never guessed.

This module imports no Lightning; the clock is injectable for tests.
"""
from __future__ import annotations

import time
from typing import Callable, Optional

__all__ = ["OverheadBudget"]

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
        >>> b.admits(variants=2, steps=256), b.admits(variants=6, steps=512)  # 2 s fits in 5 s, 12 s does not
        (True, False)
    """

    def __init__(self, fraction: float, clock: Callable[[], float] = time.perf_counter):
        self.fraction = float(fraction)
        self.clock = clock
        self.started: Optional[float] = None
        self.sampling = 0.0
        self._per_step: Optional[float] = None

    def start(self) -> None:
        """Fit start: the clock starts, sampling seconds reset (a resumed run starts a new account)."""
        self.started, self.sampling = self.clock(), 0.0

    def add_sampling(self, seconds: float) -> None:
        """Seconds the callback spent (rounds, the dry run, per-batch work): they do not count as training time."""
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
        return variants * steps * self._per_step

    def admits(self, variants: int, steps: int) -> bool:
        """The decision: whether a round of ``variants`` × ``steps`` fits now (its estimate within :meth:`allowance`).
        Before any measurement there is no estimate, and the round runs: its cost is measured, not guessed."""
        estimate = self.estimate(variants, steps)
        return estimate is None or estimate <= self.allowance()

    def record_round(self, seconds: float, variants: int, steps: int) -> None:
        """A finished round's wall time: the estimate for the next ones."""
        if variants > 0 and steps > 0 and seconds > 0:
            self._per_step = seconds / (variants * steps)
