"""benchmarks/mutants.py stays runnable: every mutant's text is found exactly once where it says."""
from __future__ import annotations

import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import mutants  # noqa: E402


def test_every_mutant_applies_to_exactly_one_place():
    stale = []
    for m in mutants.MUTANTS:
        for module, old, _ in ((m.module, m.old, m.new),) + m.also:
            count = (ROOT / "lightning_ldam" / module).read_text().count(old)
            if count != 1:
                stale.append(f"{m.name}: {module} holds its text {count} times")
    assert not stale, "\n".join(stale)
    assert len({m.name for m in mutants.MUTANTS}) == len(mutants.MUTANTS)
