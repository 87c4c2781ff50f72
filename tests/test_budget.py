"""OverheadBudget: the wall-time accounting behind ``LDAMCallback(max_overhead=...)``, on a fake clock."""
from __future__ import annotations

import pytest

from lightning_ldam.budget import MIN_STEP_SHARE, OverheadBudget


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


def test_a_probe_measurement_adds_a_fixed_cost_per_variant():
    budget, _ = started()
    budget.record_probe(seconds=0.5 + 4 * 0.01, step_seconds=0.01, steps=4)  # 0.5 s of setup around 4 steps
    assert budget.estimate(2, 100) == pytest.approx(2 * (0.5 + 100 * 0.01))
    budget.record_round(3.0, variants=2, steps=100)  # a real round replaces the probe's figures
    assert budget.estimate(2, 100) == pytest.approx(3.0)


def test_a_probe_adds_a_fresh_discriminators_warm_up():
    budget, _ = started()
    budget.record_probe(seconds=0.04, step_seconds=0.01, steps=4, warmup_updates=30, updates_per_step=2)
    # 30 updates, each under a third of a step (a step: 2 updates + D's input gradient + the network)
    assert budget.estimate(1, 100) == pytest.approx(30 * 0.01 / 3 + 100 * 0.01)


def test_worth_probing_uses_the_lower_bound_on_a_round():
    assert MIN_STEP_SHARE == 0.25  # the bounds below are worked out with it
    budget, clock = started(0.05)
    clock.now += 200.0  # allowance 10 s
    # 2 variants x 100 steps x share x 0.1 s per training step (2,000 steps in 200 s) = 5 s
    assert budget.worth_probing(2, 100, train_steps=2000)
    assert not budget.worth_probing(2, 100, train_steps=990)  # 0.202 s per step: a bound of 10.1 s
    assert not budget.worth_probing(2, 100, train_steps=0)  # no training step yet: nothing to scale by
    # a round batch a tenth of the training batch lowers the bound tenfold; a larger one does not raise it
    assert budget.worth_probing(2, 100, train_steps=200, round_batch=10, train_batch=100)
    assert not budget.worth_probing(2, 100, train_steps=200, round_batch=1000, train_batch=100)
