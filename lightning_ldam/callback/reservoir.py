"""A bounded, uniformly sampled store of real training inputs (reservoir sampling, private RNG).

It feeds the discriminator, tells the callback the input shape and value range, and seeds
data-initialised chains. Collecting runs in a training hook, so it never waits for the device: the
chosen rows stay where the batch is (a copy) and move to the CPU in one go when the stored inputs are
read, or once ``size`` rows are pending. The randomness comes from a private generator: the training
run's RNG is never touched.
"""
from __future__ import annotations

import math
import os
from typing import Any, Dict, List, Optional, Tuple

import torch

from lightning_ldam.errors import LDAMArgumentError
from lightning_ldam.sampling.inputs import value_box

__all__ = ["Reservoir", "ShapeChanged", "available_memory"]

#: The share of the host's available memory the store may take (it is allocated whole at the first batch).
MEMORY_SHARE = 0.5


class ShapeChanged(ValueError):
    """A batch whose per-sample shape differs from the stored inputs' (the store keeps its first shape)."""


def available_memory() -> Optional[int]:
    """Bytes of host memory available now (``MemAvailable``), or ``None`` where the system does not say."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return None


def check_memory(size: int, row_shape: Tuple[int, ...], available: Optional[int] = None) -> None:
    """Refuse a store of ``size`` float32 rows of ``row_shape`` that would take over :data:`MEMORY_SHARE` of the
    available host memory (``available`` bytes; default: :func:`available_memory`)."""
    available = available_memory() if available is None else available
    row = 4 * math.prod(row_shape)
    if available is None or size * row <= MEMORY_SHARE * available:
        return
    most = max(int(MEMORY_SHARE * available // row), 1)
    raise LDAMArgumentError("reservoir_size", f"{size} inputs of shape {tuple(row_shape)} take "
                                              f"{size * row / 2 ** 30:.1f} GiB of host memory as float32, over half "
                                              f"of the {available / 2 ** 30:.1f} GiB available; expected at most "
                                              f"{most}, got {size}")


class Reservoir:
    """Keeps a uniform random sample of at most ``size`` inputs seen so far (Li's algorithm L).

    Once full, it draws how many inputs to skip before the next one it keeps, so a batch with nothing to
    keep (most of them, late in training) costs an integer comparison: this runs after every training
    batch, and on a GPU its cost is host time next to a few-millisecond step.

    Rows with a NaN or an infinity never enter: they are skipped as if absent from the stream.

    Args:
        size: capacity.
        seed: seed of the private generator.

    Attributes:
        seen: finite inputs offered so far (the stream's length).
        nonfinite_skipped: inputs skipped so far because they held a NaN or an infinity.
    """

    def __init__(self, size: int = 256, seed: int = 0):
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise LDAMArgumentError("reservoir_size", f"expected an int >= 1, got {size!r}")
        self.size = size
        self.seen = 0
        self.nonfinite_skipped = 0
        self.data: Optional[torch.Tensor] = None
        self.generator = torch.Generator().manual_seed(seed)
        self._pending: List[Tuple[torch.Tensor, torch.Tensor]] = []  # (slots on CPU, rows on the batch's device)
        self._w: Optional[float] = None  # algorithm L's running maximum of the kept items' random keys
        self._next = 0  # stream position of the next input to keep once full

    def __getstate__(self) -> Dict[str, Any]:
        # torch.multiprocessing would share the generator's state tensor through a file descriptor that is
        # gone when a spawned child unpickles it: travel as plain bytes instead.
        self._flush()
        state = dict(self.__dict__)
        state["generator"] = bytes(self.generator.get_state().numpy())
        return state

    def __setstate__(self, state: Dict[str, Any]) -> None:
        generator = torch.Generator()
        generator.set_state(torch.frombuffer(bytearray(state["generator"]), dtype=torch.uint8))
        self.nonfinite_skipped = 0  # pickled before the count existed
        self.__dict__.update(state, generator=generator)

    def __len__(self) -> int:
        self._flush()
        return 0 if self.data is None else min(self.seen, self.size)  # the store is allocated whole

    @torch.no_grad()
    def add(self, inputs: torch.Tensor) -> int:
        """Offer a batch ``[B, ...]``; rows are kept with the reservoir's probabilities.

        Rows holding a NaN or an infinity are skipped as if they were not in the stream, and counted in
        ``nonfinite_skipped``: one of them would make :meth:`value_range` NaN and reach the discriminator.

        Args:
            inputs: the batch's inputs, on any device.

        Returns:
            How many rows of this batch were skipped as non-finite (0 for a clean batch), for the caller to
            warn about.
        """
        shape = self.shape
        if shape is None:
            check_memory(self.size, tuple(inputs.shape[1:]))
        elif tuple(inputs.shape[1:]) != shape:
            raise ShapeChanged(f"a batch of per-sample shape {tuple(inputs.shape[1:])}; the stored inputs have shape "
                               f"{shape}, which every round samples: the reservoir keeps its first shape and skips "
                               f"batches of another")
        finite = _finite_rows(inputs)
        skipped = 0 if finite is None else inputs.shape[0] - finite.numel()
        self.nonfinite_skipped += skipped
        start, end = self.seen, self.seen + inputs.shape[0] - skipped
        self.seen = end
        if start >= self.size and end <= self._next:
            return skipped  # the common case once full: nothing in this batch is kept
        positions, slots = _last_writes(*self._choose(start, end))
        if not positions:
            return skipped
        index = (torch.tensor(positions) - start).to(inputs.device, non_blocking=True)
        if finite is not None:
            index = finite[index]  # stream positions count the finite rows only
        # Advanced indexing copies the rows on the batch's device; no host sync here.
        self._pending.append((torch.tensor(slots), inputs.detach()[index]))
        if sum(r.shape[0] for _, r in self._pending) >= self.size:
            self._flush()  # bounds what waits on the device to about one reservoir
        return skipped

    @property
    def shape(self) -> Optional[Tuple[int, ...]]:
        """The per-sample shape of the stored (or pending) inputs; ``None`` before the first batch."""
        if self.data is not None:
            return tuple(self.data.shape[1:])
        return tuple(self._pending[0][1].shape[1:]) if self._pending else None

    def _choose(self, start: int, end: int) -> Tuple[List[int], List[int]]:
        """The stream positions in ``[start, end)`` that are kept and the slot each one takes, in order."""
        positions, slots = [], []
        for pos in range(start, min(end, self.size)):  # filling: input n goes to slot n
            positions.append(pos)
            slots.append(pos)
        if end > self.size:
            if self._w is None:  # just filled: start algorithm L's skips
                # (a state saved before algorithm L resumes at the acceptance rate size/seen, which is E[W])
                self._w = math.exp(math.log(self._uniform()) / self.size) if start <= self.size \
                    else self.size / start
                self._next = max(self.size, start) - 1 + self._skip()
            while self._next < end:
                positions.append(self._next)
                slots.append(min(int(self._uniform() * self.size), self.size - 1))
                self._w *= math.exp(math.log(self._uniform()) / self.size)
                self._next += self._skip()
        return positions, slots

    def _uniform(self) -> float:
        """A draw in (0, 1) from the private generator."""
        return max(float(torch.rand((), generator=self.generator)), 1e-12)

    def _skip(self) -> int:
        """Positions to the next kept input (1 = the very next one), given the current ``_w``."""
        assert self._w is not None  # set once the reservoir is full, before the first skip
        if self._w >= 1.0:
            return 1
        return int(math.floor(math.log(self._uniform()) / math.log1p(-self._w))) + 1

    def _flush(self) -> None:
        """Write the pending rows into the CPU store, in arrival order (a later batch's row wins its slot;
        within a batch, slots are distinct: see :func:`_last_writes`)."""
        if not self._pending:
            return
        rows = torch.cat([r for _, r in self._pending]).to("cpu", torch.float32)  # one device->host copy
        if self.data is None:
            self.data = torch.empty((self.size, *rows.shape[1:]))
        start = 0
        for slots, chunk in self._pending:
            self.data[slots] = rows[start:start + chunk.shape[0]]
            start += chunk.shape[0]
        self._pending.clear()

    @property
    def images(self) -> torch.Tensor:
        """The stored inputs ``[n, ...]`` (n <= size)."""
        self._flush()
        if self.data is None:
            raise ValueError("reservoir is empty: no training batch has been seen yet")
        return self.data[: min(self.seen, self.size)]  # slots fill in order: the first min(seen, size)

    def input_shape(self) -> Tuple[int, ...]:
        return tuple(self.images.shape[1:])

    def value_range(self) -> Tuple[float, float]:
        """:func:`value_box` of the stored inputs."""
        return value_box(self.images)

    def state_dict(self) -> Dict[str, Any]:
        self._flush()
        return {"seen": self.seen, "data": None if self.data is None else self.images.clone(),
                "generator": self.generator.get_state(), "w": self._w, "next": self._next,
                "nonfinite_skipped": self.nonfinite_skipped}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        self._pending.clear()
        self.seen = state["seen"]
        self.nonfinite_skipped = state["nonfinite_skipped"]
        self.generator.set_state(state["generator"])
        self._w, self._next = state["w"], state["next"]
        data = state["data"]
        self.data = None
        if data is not None:
            self.data = torch.empty((self.size, *data.shape[1:]))
            self.data[: data.shape[0]] = data


def _finite_rows(inputs: torch.Tensor) -> Optional[torch.Tensor]:
    """Indices of the rows of ``inputs`` without NaN or infinity, or ``None`` when all rows are finite.

    A floating batch costs one reduction and one host sync here (the stream positions depend on how
    many rows are finite); an integer batch (``uint8`` pixels) costs nothing.
    """
    if not (inputs.is_floating_point() or inputs.is_complex()) or inputs.numel() == 0:
        return None
    rows = torch.isfinite(inputs.detach()).reshape(inputs.shape[0], -1).all(1).nonzero().squeeze(1)
    return None if rows.numel() == inputs.shape[0] else rows


def _last_writes(positions: List[int], slots: List[int]) -> Tuple[List[int], List[int]]:
    """Drop the writes that a later input of the same batch overwrites (the later one wins, as in sequential
    algorithm R): ``data[slots] = rows`` with a repeated slot is undefined and can splice two rows."""
    last = {slot: i for i, slot in enumerate(slots)}  # dict assignment: the last occurrence stays
    if len(last) == len(slots):
        return positions, slots  # the usual case: every slot once
    keep = sorted(last.values())
    return [positions[i] for i in keep], [slots[i] for i in keep]
