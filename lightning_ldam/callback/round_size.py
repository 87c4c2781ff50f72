"""Fit the first round of a fit to the run: time one step, and shrink steps (then chains) the user did not set.

A default round (every neuron × 8 chains × 512 steps × each variant) can take minutes on a CPU next to a small
model's seconds-long epochs. Before the first round the callback times one step of it
(:func:`lightning_ldam.engine.rounds.time_a_step`) and, when the estimate is over :data:`EPOCHS_BOUND` epochs of
training (the measured mean batch time × the batches per epoch), runs fewer steps, then fewer chains, so that the
round fits; the later rounds of the fit keep the fitted size, so rounds stay comparable. An explicit ``steps=`` or
``chains=`` is never changed. Pure: no Lightning, no timing of its own.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

__all__ = ["RoundSize", "fit_round", "EPOCHS_BOUND", "MIN_STEPS", "MIN_CHAINS"]

#: A first round may take as long as this many training epochs.
EPOCHS_BOUND = 10.0
#: Fewest steps a fitted round runs (below this the chains have barely left their starts).
MIN_STEPS = 32
#: Fewest chains a fitted round runs (diversity needs two).
MIN_CHAINS = 2


@dataclass(frozen=True)
class RoundSize:
    """The size a round runs at and what was said about it."""

    steps: int
    chains: int
    estimate: float  # seconds, at this size
    message: Optional[str] = None  # one line when the size was cut (or could not be), else None


def fit_round(per_step: float, steps: int, chains: int, variants: int, bound: Optional[float], *,
              steps_given: bool, chains_given: bool) -> RoundSize:
    """The size of a round whose steps take ``per_step`` seconds per variant at ``chains`` chains.

    The estimate is ``per_step × steps × variants``; a chain-step's cost is taken as proportional to the chains.

    Example::

        >>> fit_round(0.5, 512, 8, 2, bound=100.0, steps_given=False, chains_given=False).steps
        100
        >>> fit_round(0.5, 512, 8, 2, bound=100.0, steps_given=True, chains_given=False).chains  # never under 2
        2
    """
    estimate = per_step * steps * variants
    if bound is None or estimate <= bound or (steps_given and chains_given):
        note = None if bound is None or estimate <= bound else (
            f"≈ {estimate:.0f} s, over {EPOCHS_BOUND:g} training epochs ({bound:.0f} s); steps= and chains= are "
            f"yours, so it runs as set")
        return RoundSize(steps, chains, estimate, note)
    new_steps, new_chains = steps, chains
    if not steps_given:
        new_steps = min(steps, max(MIN_STEPS, int(bound / (per_step * variants))))
    fitted = per_step * new_steps * variants
    if fitted > bound and not chains_given:
        new_chains = min(chains, max(MIN_CHAINS, int(chains * bound / fitted)))
        fitted *= new_chains / chains
    cut = [f"{a} -> {b} {what}" for what, a, b in (("steps", steps, new_steps), ("chains", chains, new_chains))
           if a != b]
    note = (f"≈ {estimate:.0f} s at {steps} steps × {chains} chains × {variants} variant(s), over "
            f"{EPOCHS_BOUND:g} training epochs ({bound:.0f} s): running {', '.join(cut) or 'as set'} "
            f"(≈ {fitted:.0f} s) this fit; pass steps= and chains= to choose")
    return RoundSize(new_steps, new_chains, fitted, note)
