"""OverheadBudget: the wall-time accounting behind ``LDAMCallback(max_overhead=...)``, on a fake clock."""
from __future__ import annotations

import pytest

from lightning_ldam.callback.budget import OverheadBudget


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def started(fraction: float = 0.1):
    clock = Clock()
    budget = OverheadBudget(fraction, clock=clock)
    budget.start()
    return budget, clock


def test_allowance_is_the_share_of_training_time_minus_what_sampling_took():
    budget, clock = started(0.1)
    clock.now += 100.0  # 100 s of wall time, 10 s of it sampling: 90 s of training
    budget.add_sampling(10.0)
    assert budget.training_seconds() == pytest.approx(90.0)
    assert budget.allowance() == pytest.approx(0.1 * 90.0 - 10.0)
    budget.add_sampling(-5.0)  # a clock hiccup never gives time back
    assert budget.sampling == 10.0


def test_before_start_there_is_no_training_time():
    budget = OverheadBudget(0.05, clock=Clock())
    assert budget.training_seconds() == 0.0 and budget.allowance() == 0.0


def test_start_resets_the_account():
    budget, clock = started()
    clock.now += 50.0
    budget.add_sampling(3.0)
    budget.start()
    assert budget.sampling == 0.0 and budget.training_seconds() == 0.0


def test_a_round_measurement_scales_with_variants_and_steps():
    budget, _ = started()
    assert budget.estimate(2, 512) is None and not budget.has_estimate
    budget.record_round(8.0, variants=2, steps=512)
    assert budget.estimate(2, 512) == pytest.approx(8.0)
    assert budget.estimate(2, 256) == pytest.approx(4.0)
    assert budget.estimate(3, 512) == pytest.approx(12.0)
    budget.record_round(0.0, variants=0, steps=512)  # a round that failed before sampling: ignored
    assert budget.estimate(2, 512) == pytest.approx(8.0)
