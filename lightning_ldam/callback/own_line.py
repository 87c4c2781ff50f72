"""Messages that start on their own line while a tqdm progress bar (Lightning's) is drawn.

A tqdm bar redraws its line with ``\\r`` and writes no newline until it closes, so a log line written meanwhile lands
at the end of the bar's text: ``Epoch 0: 100%|██| 71/71 [...]LDAMCallback: step 71: sampling ...``. On a terminal,
:func:`own_line` clears the bars, lets the message print, and redraws them below it (tqdm's ``external_write_mode``,
what ``tqdm.write`` does). Where a bar's stream is not a terminal (a log file, CI), clearing only writes ``\\r``, so
the bar's line is ended with a newline first: every message then starts a line of the file, and the bar's next
redraw starts another.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Dict, Iterator, Optional

from lightning_ldam.sampling.progress import is_terminal

__all__ = ["own_line", "on_own_line"]


def _active_bars() -> list:
    try:
        from tqdm import tqdm
    except ImportError:  # no tqdm, no bar to collide with
        return []
    return [bar for bar in list(getattr(tqdm, "_instances", ())) if not getattr(bar, "disable", True)]


#: ``id(bar) -> bar.last_print_t`` when a newline last ended that bar's line: a bar that has not redrawn since needs
#: no second newline (a round's messages follow each other while training, and so the bar, waits).
_ENDED: Dict[int, Optional[float]] = {}


@contextmanager
def own_line() -> Iterator[None]:
    """Context inside which a message written to stdout or stderr starts on its own line (see the module docs)."""
    bars = _active_bars()
    for bar in bars:
        if is_terminal(bar.fp):
            continue
        drawn = getattr(bar, "last_print_t", None)
        if _ENDED.get(id(bar)) == drawn:
            continue
        try:
            bar.fp.write("\n")
            bar.fp.flush()
        except (ValueError, OSError):  # a closed stream: nothing to end
            pass
        _ENDED[id(bar)] = drawn
    if not any(is_terminal(bar.fp) for bar in bars):
        yield
        return
    from tqdm import tqdm

    with tqdm.external_write_mode():
        yield


def on_own_line(write: Callable[[str], None]) -> Callable[[str], None]:
    """``write`` (e.g. Lightning's ``rank_zero_info``) wrapped so that each message starts on its own line."""
    def wrapped(message: str) -> None:
        with own_line():
            write(message)
    return wrapped
