"""Reporting a loop's progress: a tqdm bar on a terminal, a few plain lines in a log file.

A bar redraws itself many times a second, which a terminal overwrites in place but a log file keeps as one
line per refresh (or shows nothing until the end). Off a terminal, :class:`Progress` writes a line every
``every_fraction`` of the steps or every ``every_seconds``, whichever comes first, and only once ``delay``
seconds have passed, so short loops stay silent.

This module imports no Lightning: the callback passes ``write=rank_zero_info``.
"""
from __future__ import annotations

import math
import sys
import time
from numbers import Real
from typing import Callable, Optional

from lightning_ldam.errors import LDAMArgumentError

__all__ = ["Progress", "is_terminal"]


def is_terminal(stream=None) -> bool:
    """Whether ``stream`` (default: ``sys.stderr`` as it is now) is a terminal; ``False`` for a stream with no
    ``isatty`` or a closed one."""
    stream = sys.stderr if stream is None else stream
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError, OSError):
        return False


def _to_stderr(line: str) -> None:
    # sys.stderr looked up at each call: pytest's capture and redirect_stderr replace it
    print(line, file=sys.stderr, flush=True)


def _estimate(s: float) -> str:
    return f"{s:.1f}" if s < 10 else f"{s:.0f}"  # an estimate: tenths only while they matter


class Progress:
    """How to report the progress of a loop of known length; :meth:`start` makes the tracker of one loop.

    Args:
        delay: seconds before anything is shown (a bar, or the first line).
        write: where plain lines go (default: printed to ``sys.stderr``, flushed), e.g. a logger's ``info``.
        every_fraction: off a terminal, a line each time this share of the steps is done.
        every_seconds: off a terminal, a line at least this often while the loop runs.
        terminal: ``True``: a tqdm bar (none if tqdm is not installed); ``False``: plain lines. Default: whether
            ``sys.stderr`` is a terminal when :meth:`start` is called.
        clock: seconds, monotonic (tests pass a fake one).
        desc: what the bar and the lines are labelled (``"LDAM"``; a round labels each variant's call).

    Example::

        >>> lines = []
        >>> tracker = Progress(terminal=False, write=lines.append, clock=iter(range(100)).__next__).start(4)
        >>> for _ in range(4):
        ...     tracker.update()
        >>> tracker.close()
        >>> print("\\n".join(lines))
        LDAM: 1/4 steps (25%), 1.0 s elapsed, ~3.0 s left
        LDAM: 2/4 steps (50%), 2.0 s elapsed, ~2.0 s left
        LDAM: 3/4 steps (75%), 3.0 s elapsed, ~1.0 s left
        LDAM: 4/4 steps in 4.0 s
    """

    delay: float
    every_fraction: float
    every_seconds: float
    write: Callable[[str], None]
    terminal: Optional[bool]
    clock: Callable[[], float]
    desc: str

    def __init__(self, delay: float = 0.0, write: Optional[Callable[[str], None]] = None,
                 every_fraction: float = 0.1, every_seconds: float = 30.0, terminal: Optional[bool] = None,
                 clock: Callable[[], float] = time.perf_counter, desc: str = "LDAM"):
        for name, value in (("delay", delay), ("every_seconds", every_seconds)):
            if isinstance(value, bool) or not isinstance(value, Real) or not 0 <= value < math.inf:
                raise LDAMArgumentError(name, f"expected a finite number of seconds >= 0, got {value!r}")
        if isinstance(every_fraction, bool) or not isinstance(every_fraction, Real) or not 0 < every_fraction <= 1:
            raise LDAMArgumentError("every_fraction", f"expected a number in (0, 1], got {every_fraction!r}")
        if write is not None and not callable(write):
            raise LDAMArgumentError("write", f"expected a callable taking a str, or None, got {write!r}")
        if terminal is not None and not isinstance(terminal, bool):
            raise LDAMArgumentError("terminal", f"expected True, False or None, got {terminal!r}")
        self.delay, self.every_fraction, self.every_seconds = float(delay), float(every_fraction), float(every_seconds)
        self.write = _to_stderr if write is None else write
        self.terminal, self.clock, self.desc = terminal, clock, str(desc)

    def labelled(self, desc: str) -> "Progress":
        """The same settings under another label."""
        copy = object.__new__(Progress)
        copy.__dict__.update(self.__dict__, desc=desc)
        return copy

    def __repr__(self) -> str:
        return (f"Progress(delay={self.delay}, every_fraction={self.every_fraction}, "
                f"every_seconds={self.every_seconds}, terminal={self.terminal})")

    def start(self, total: int, desc: Optional[str] = None):
        """A tracker of a loop of ``total`` steps: call ``update(n=1)`` after steps and ``close()`` at the end."""
        desc = self.desc if desc is None else desc
        terminal = is_terminal() if self.terminal is None else self.terminal
        if not terminal:
            return _Lines(self, int(total), desc) if total > 0 else _Silent()
        try:
            from tqdm.auto import tqdm
        except ImportError:  # tqdm ships with Lightning; without it, no bar
            return _Silent()
        return tqdm(total=total, desc=desc, unit="step", leave=False, delay=self.delay)


class _Silent:
    """The tracker when nothing is shown."""

    def update(self, n: int = 1) -> None:
        pass

    def close(self) -> None:
        pass


class _Lines:
    """Plain progress lines: at each ``every_fraction`` of the steps or ``every_seconds``, after ``delay``."""

    def __init__(self, progress: Progress, total: int, desc: str):
        self.p, self.total, self.desc = progress, total, desc
        self.done = 0
        self.started = self.last = progress.clock()
        self.next_mark = self._mark_after(0)
        self.printed = False

    def _mark_after(self, done: int) -> int:
        """The first step count past ``done`` at a multiple of ``every_fraction`` of the steps."""
        share = self.p.every_fraction * self.total
        return max(done + 1, math.ceil((math.floor(done / share + 1e-9) + 1) * share - 1e-9))

    def update(self, n: int = 1) -> None:
        self.done += n
        if self.done >= self.total:  # the last step: close() writes the final line
            return
        now = self.p.clock()
        elapsed = now - self.started
        if elapsed < self.p.delay or (self.done < self.next_mark and now - self.last < self.p.every_seconds):
            return
        left = elapsed / max(self.done, 1) * (self.total - self.done)
        self.p.write(f"{self.desc}: {self.done}/{self.total} steps ({100 * self.done // self.total}%), "
                     f"{elapsed:.1f} s elapsed, ~{_estimate(left)} s left")
        self.printed, self.last, self.next_mark = True, now, self._mark_after(self.done)

    def close(self) -> None:
        if self.printed:
            self.p.write(f"{self.desc}: {self.done}/{self.total} steps in {self.p.clock() - self.started:.1f} s")
            self.printed = False  # a second close() writes nothing
