"""Write a round into a shared ``SummaryWriter`` so that a failed write leaves the writer as it was found.

The callback writes into the writer of Lightning's ``TensorBoardLogger``. TensorBoard's event writer is
asynchronous: a write that fails (``ENOSPC`` on a full disk) is kept by its worker thread and raised again at the
writer's *next* call, which is Lightning's own ``finalize`` at the end of ``fit``. So a round is written as a small
transaction:

1. flush what is pending (Lightning's scalars) and note each event file's length;
2. write the scalars and flush, then the images and flush: each group lands or fails on its own, and the
   scalars never depend on the images;
3. after a failure, close the broken file writer quietly, cut its file back to the last length that was
   flushed whole (the round's partial records go, and the space they took comes back), and let the writer
   open a fresh event file in the same directory at its next call, named to sort after the abandoned one.

Lightning's next write then goes to a working file. Duck-typed over ``torch.utils.tensorboard.SummaryWriter``
(and tensorboardX's, which has the same attributes); no Lightning import.
"""
from __future__ import annotations

import logging
import os
import re
import time
from typing import Dict, Iterable, Mapping

import torch

__all__ = ["write_round_to", "WriteFailed"]

log = logging.getLogger(__name__)
#: ``events.out.tfevents.<whole seconds>.<host>.<pid>.<writer counter>``: the seconds, as the name has them.
_EVENT_FILE_SECONDS = re.compile(r"tfevents\.(\d+)\.")


class WriteFailed(OSError):
    """A round's write failed; the writer was reopened. ``written`` says which groups had landed."""

    def __init__(self, cause: BaseException, written: str):
        super().__init__(getattr(cause, "errno", None), f"{type(cause).__name__}: {cause} ({written})")
        self.cause = cause


def write_round_to(writer, images: Mapping[str, torch.Tensor], scalars: Mapping[str, float], step: int) -> None:
    """Write ``scalars`` then ``images`` at ``step``; on failure reopen ``writer`` and raise :class:`WriteFailed`.

    Raises:
        WriteFailed: a group did not land (what was flushed before it stays); the writer works again.
    """
    try:
        writer.flush()  # Lightning's pending events: on disk before anything of ours is
    except Exception as err:  # broken before we came: not ours to repair, and nothing of ours goes in
        raise WriteFailed(err, "the writer was already failing; nothing written") from err
    committed = _event_file_lengths(writer)
    written = "nothing written"
    try:
        for tag, value in scalars.items():
            writer.add_scalar(tag, value, global_step=step)
        writer.flush()
        committed, written = _event_file_lengths(writer), "the scalars were written, the images were not"
        for tag, img in images.items():
            writer.add_image(tag, img, global_step=step)
        writer.flush()
    except Exception as err:
        reopen(writer, committed)
        raise WriteFailed(err, written) from err


def _event_file_lengths(writer) -> Dict[str, int]:
    """``{event file path: length on disk}`` of the writer's open event files (empty where it cannot tell)."""
    lengths = {}
    for file_writer in list((getattr(writer, "all_writers", None) or {}).values()):
        path = getattr(getattr(file_writer, "event_writer", None), "_file_name", None)
        if isinstance(path, (str, bytes)) and os.path.isfile(path):
            lengths[os.fsdecode(path)] = os.path.getsize(path)
    return lengths


def reopen(writer, committed: Mapping[str, int]) -> None:
    """Close ``writer``'s file writers without raising, cut their files to ``committed`` lengths, and make the
    writer open a new event file at its next call (``SummaryWriter._get_file_writer`` does when it has none)."""
    for file_writer in list((getattr(writer, "all_writers", None) or {}).values()):
        try:
            file_writer.close()  # FileWriter.close skips the worker check that SummaryWriter.close trips on
        except Exception as err:  # the file is abandoned either way
            log.debug("closing a failed event file writer: %s", err)
    for path, length in committed.items():
        try:
            if os.path.getsize(path) > length:
                os.truncate(path, length)
        except OSError as err:
            log.debug("cutting %s back to %d bytes: %s", path, length, err)
    if hasattr(writer, "all_writers"):
        writer.file_writer = writer.all_writers = None
    _wait_past(committed)


def _wait_past(paths: Iterable[str]) -> None:
    """Wait until the clock's whole second is past the seconds in the names of ``paths`` (at most about one).

    TensorBoard reads a run's event files in name order, and a name is the creation second then the process's writer
    counter as a plain number: a file opened in the same second as the one it replaces can sort before it (writer 10
    before writer 9), and TensorBoard would read the steps out of order. A later second sorts after."""
    seconds = [int(m.group(1)) for m in (_EVENT_FILE_SECONDS.search(os.path.basename(p)) for p in paths) if m]
    if not seconds:
        return
    remaining = max(seconds) + 1 - time.time()
    if 0 < remaining <= 1.0:  # a name from a clock far ahead is not waited for
        time.sleep(remaining + 0.01)
