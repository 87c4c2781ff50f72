"""Persistent chains: each weight variant's chains carried from one round to the next (plain PyTorch).

A round of the callback samples the same neurons with the same chains for every variant. Started afresh each
round, a chain shows where one burn-in from noise ended; carried over, it keeps sampling, and its effective
length grows over training (the weights move under it, so each round re-measures ``c_k`` and re-adapts in its
burn-in). A stated fraction of the chains is re-drawn every round so new modes keep being found: with
``redraw = r`` and ``chains = c``, ``max(1, round(r·c))`` chains (none at ``r = 0``) restart, in turn (round
``n`` restarts chains ``n·k, n·k + 1, …`` mod ``c``), so no chain is older than ``ceil(c / k)`` rounds.

Common random numbers across variants hold: a variant's first round starts from the sampler's own starts for the
round's seed (the same for every variant that starts then), and the re-drawn chains, their rows and their new
states, are the same for every variant of a round. This module imports no Lightning.
"""
from __future__ import annotations

import logging
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple, Union, cast

import torch

__all__ = ["PersistentChains", "redrawn_rows", "continued_rows"]

log = logging.getLogger(__name__)


def redrawn_rows(chains: int, redraw: float, round_index: int) -> torch.Tensor:
    """The chain indices re-drawn at ``round_index`` (round-robin; see the module docstring)."""
    if redraw <= 0:
        return torch.zeros(0, dtype=torch.long)
    k = min(chains, max(1, round(redraw * chains)))
    return (torch.arange(k) + round_index * k) % chains


def continued_rows(chains: int, redraw: float, round_index: int) -> torch.Tensor:
    """``[chains]`` bool: the chains a continued round carries on (the others are re-drawn and search)."""
    mask = torch.ones(chains, dtype=torch.bool)
    mask[redrawn_rows(chains, redraw, round_index)] = False
    return mask


class PersistentChains:
    """The last states of each variant's chains (on the CPU, float32) and the starts of its next round.

    Args:
        redraw: share of the chains restarted each round, in ``[0, 1]``.
    """

    def __init__(self, redraw: float = 0.25) -> None:
        self.redraw = float(redraw)
        self.states: Dict[str, torch.Tensor] = {}
        self.shards: Dict[str, Tuple[int, int]] = {}

    def __len__(self) -> int:
        return len(self.states)

    def starts(self, name: str, shape: Sequence[int], round_index: int, seed: int,
               value_range: Tuple[float, float], init: Union[str, torch.Tensor] = "noise",
               real: Optional[torch.Tensor] = None, shard: Tuple[int, int] = (0, 1)) -> Optional[torch.Tensor]:
        """``[neurons, chains, *input]`` starts for variant ``name``'s round, or ``None`` (the sampler's own starts).

        ``None`` when the variant has no kept states or they do not fit ``shape`` (other neurons, chains or input
        shape) or ``shard`` (``(rank, world)`` under DDP: a rank continues only its own neurons' chains). Re-drawn
        rows restart as the sampler would start them: uniform noise in ``value_range`` (``init="noise"``), real
        images (``init="data"``, drawn from ``real``), or the given starting images' rows (a tensor ``init``). Their
        draws depend only on ``seed`` and ``round_index``.
        """
        kept = self.states.get(name)
        if kept is None or tuple(kept.shape) != tuple(shape) or self.shards.get(name) != tuple(shard):
            return None
        n, lo, hi = shape[0], *value_range
        out = kept.clamp(lo, hi)  # a box inferred from more batches may have moved
        rows = redrawn_rows(shape[1], self.redraw, round_index)
        if len(rows) == 0:
            return out
        gen = torch.Generator().manual_seed((int(seed) * 1_000_003 + int(round_index) * 7_919) % 2 ** 62)
        given = init.detach().to("cpu", torch.float32) if isinstance(init, torch.Tensor) else None
        if given is not None and given.dim() == len(shape) - 1:  # [chains, ...]: every neuron's starts
            given = given.unsqueeze(0).expand(n, *given.shape)
        if given is not None and tuple(given.shape) == tuple(shape):
            out[:, rows] = given[:, rows]
        elif init == "data" and real is not None and len(real):
            idx = torch.randint(len(real), (n * len(rows),), generator=gen)
            out[:, rows] = real[idx].detach().to("cpu", torch.float32).clamp(lo, hi).view(n, len(rows), *shape[2:])
        else:
            out[:, rows] = lo + (hi - lo) * torch.rand((n, len(rows), *shape[2:]), generator=gen)
        return out

    def keep(self, name: str, images: torch.Tensor, shard: Tuple[int, int] = (0, 1)) -> None:
        """Keep a round's final states of variant ``name`` sampled by ``shard`` (``(rank, world)``); non-finite
        states are dropped (the variant restarts afresh)."""
        images = images.detach().to("cpu", torch.float32)
        if not bool(torch.isfinite(images).all()):
            log.info("LDAM: variant %r ended with non-finite chains; its next round starts afresh", name)
            self.states.pop(name, None)
            return
        self.states[name], self.shards[name] = images.clone(), cast(Tuple[int, int], tuple(shard))

    def state_dict(self) -> Dict[str, Any]:
        return {"redraw": self.redraw, "states": dict(self.states),
                "shards": {k: list(v) for k, v in self.shards.items()}}

    def load_state_dict(self, state: Optional[Mapping[str, Any]]) -> None:
        """Restore kept states (a checkpoint without them starts afresh)."""
        state = state or {}
        states, shards = state.get("states") or {}, state.get("shards") or {}
        self.states = {str(k): v.detach().to("cpu", torch.float32) for k, v in states.items()
                       if isinstance(v, torch.Tensor) and v.is_floating_point() and v.dim() >= 3}
        self.shards = {k: tuple(shards.get(k, (0, 1))) for k in self.states}

