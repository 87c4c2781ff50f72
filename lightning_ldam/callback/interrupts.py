"""SIGTERM ends a running round at the next step, as Ctrl-C does (plain Python, no Lightning).

A round can run for minutes inside one training hook. Ctrl-C ends it at once (``KeyboardInterrupt``), but
SIGTERM, what a cluster scheduler or ``docker stop`` sends, only sets Lightning's flag, which the trainer reads
after the hook returns: the round would run to its end first. While a round runs, :func:`sigterm_interrupts`
puts a handler in front of the installed one: it calls that handler (Lightning's, which tells the trainer to stop)
and raises :class:`RoundInterrupted` in the sampling loop.
"""
from __future__ import annotations

import signal
import threading
from contextlib import contextmanager
from typing import Iterator

__all__ = ["RoundInterrupted", "sigterm_interrupts"]


class RoundInterrupted(Exception):
    """SIGTERM arrived while a round ran; the round was stopped at its next step."""


@contextmanager
def sigterm_interrupts() -> Iterator[None]:
    """Within this block SIGTERM raises :class:`RoundInterrupted` once the installed handler has run.

    Only where a Python handler is installed (Lightning installs one during ``fit``), and only in the main thread
    (where signal handlers run): under the default disposition SIGTERM ends the process anyway.
    """
    if threading.current_thread() is not threading.main_thread() or not hasattr(signal, "SIGTERM"):
        yield
        return
    previous = signal.getsignal(signal.SIGTERM)
    if not callable(previous):
        yield
        return

    def handler(signum, frame):
        signal.signal(signal.SIGTERM, previous)  # once: a second SIGTERM goes to the installed handler alone
        previous(signum, frame)
        raise RoundInterrupted("SIGTERM received")

    signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        if signal.getsignal(signal.SIGTERM) is handler:
            signal.signal(signal.SIGTERM, previous)
