"""What the callback has done: one record for the run (saved in its checkpoint state), one for the current fit.

Every flag and counter the callback's hooks read lives here, with the reason it starts as it does; the hooks keep
no other state. :class:`CallbackStats` is the public, read-only view (``LDAMCallback.stats``).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple, cast

from lightning_ldam.callback.round_size import RoundSize

__all__ = ["RunState", "FitState", "CallbackStats"]


@dataclass
class RunState:
    """The run's record; the fields in :attr:`SAVED` are saved in the checkpoint and restored on resume.

    Attributes:
        rounds: rounds logged (a resumed run continues the count: persistent chains and redraws follow it).
        skipped_rounds: due rounds skipped by the overhead budget.
        failed_rounds: rounds that raised (each a warning; training went on).
        skipped_batches: training batches the reservoir could not keep.
        last_sampled_step: the global step of the last round tried (-1: none yet), so a step and an epoch end
            that fall together sample once.
        last_ema_step: the global step of the own EMA's last update (-1: none yet).
        fallbacks: sampler settings the first batch found the model needs (``{"init": "data"}``).
        neurons: the ``(layer, index)`` pairs every round samples, fixed at the first round (empty before it).
        checked: whether the first batch's dry run has been done (once per callback, not per fit).
        previous: the last round's images per variant (what the next round's drift is measured against).
    """

    rounds: int = 0
    skipped_rounds: int = 0
    failed_rounds: int = 0
    skipped_batches: int = 0
    last_sampled_step: int = -1
    last_ema_step: int = -1
    fallbacks: Dict[str, Any] = field(default_factory=dict)
    neurons: List[Tuple[str, int]] = field(default_factory=list)
    checked: bool = False
    previous: Dict[str, Any] = field(default_factory=dict)

    #: the fields a checkpoint holds (not ``checked``: a resumed run tries its first batch again; not ``previous``:
    #: the last round's images stay out of the checkpoint)
    SAVED = ("rounds", "skipped_rounds", "failed_rounds", "skipped_batches", "last_sampled_step", "last_ema_step",
             "fallbacks", "neurons")

    def state_dict(self) -> Dict[str, Any]:
        out = {name: getattr(self, name) for name in self.SAVED}
        out["fallbacks"], out["neurons"] = dict(self.fallbacks), [list(n) for n in self.neurons]
        return out

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        for name in self.SAVED:
            setattr(self, name, state[name])
        self.fallbacks = dict(self.fallbacks)
        self.neurons = [cast(Tuple[str, int], tuple(n)) for n in self.neurons]  # saved as lists


@dataclass
class FitState:
    """The current fit's record, started afresh by every ``fit`` (a resumed run measures its first round again).

    Attributes:
        rounds: rounds logged in this fit (its first always runs and is timed).
        size: this fit's round size, fitted at its first round (``None``: not fitted).
        batch_seconds, batches: the training batches' own time and count (the first round's bound).
        batch_started: when the current training batch started (``None`` between batches).
        collected_early: the current batch went into the reservoir at its start (the first batch's dry run
            needed it), so its end does not add it again.
        last_skipped_step: the global step of the last round the budget skipped (the fit-end round runs there).
        at_train_end: ``on_train_end`` has begun (the raw weights may be gone: see ``raw_gone_at_end``).
        raw_gone_at_end: an averager listed before this callback copies its average into the model at the end of
            fit, so the fit-end round has no raw weights (found in ``setup``).
        round_sources: the running round's variants as found once at its start (its budget check, copies and
            counts share them); ``None`` between rounds.
    """

    rounds: int = 0
    size: Optional[RoundSize] = None
    batch_seconds: float = 0.0
    batches: int = 0
    batch_started: Optional[float] = None
    collected_early: bool = False
    last_skipped_step: int = -1
    at_train_end: bool = False
    raw_gone_at_end: bool = False
    round_sources: Optional[Dict[str, Any]] = None


@dataclass(frozen=True)
class CallbackStats:
    """What the callback has done so far (``LDAMCallback.stats``; the counts its ``ldam/...`` scalars log).

    Attributes:
        rounds: rounds logged in this run.
        skipped_rounds: due rounds skipped by the overhead budget (``ldam/skipped_rounds``).
        failed_rounds: rounds that failed (``ldam/failed_rounds``).
        skipped_batches: training batches not kept for LDAM (``ldam/skipped_batches``).
        nonfinite_inputs: input rows with NaN/Inf not kept (``ldam/nonfinite_inputs``).
        inputs_seen: training inputs offered to the reservoir.
        inputs_kept: real inputs it holds.
        ema_updates: updates of the callback's own EMA (``None`` without one).
        last_sampled_step: the global step of the last round tried (-1: none).
        neurons: the ``(layer, index)`` pairs every round samples (empty before the first round).
    """

    rounds: int
    skipped_rounds: int
    failed_rounds: int
    skipped_batches: int
    nonfinite_inputs: int
    inputs_seen: int
    inputs_kept: int
    ema_updates: Optional[int]
    last_sampled_step: int
    neurons: Tuple[Tuple[str, int], ...]

    def as_scalars(self, budgeted: bool) -> Dict[str, float]:
        """The counts the callback logs as ``ldam/...`` scalars (``skipped_rounds`` only with a budget)."""
        counts = {"ldam/failed_rounds": float(self.failed_rounds),
                  "ldam/nonfinite_inputs": float(self.nonfinite_inputs),
                  "ldam/skipped_batches": float(self.skipped_batches)}
        if budgeted:
            counts["ldam/skipped_rounds"] = float(self.skipped_rounds)
        return counts

