"""RoundReporter: warnings once per cause, the up-front estimate from the last round's pace."""
from __future__ import annotations

import errno

import torch

from lightning_ldam.callback.messages import RoundReporter
from lightning_ldam.sampling.result import SampleResult


def _reporter():
    info, warn = [], []
    return RoundReporter(info.append, warn.append), info, warn


def test_a_repeating_cause_warns_once():
    report, _, warn = _reporter()
    for step in (1, 2, 3):  # a full disk at every round: the path in the message may differ, the errno does not
        report.failure(step, OSError(errno.ENOSPC, "No space left on device", f"/logs/events.{step}"))
    report.failure(4, RuntimeError("log_image boom"))
    report.failure(5, RuntimeError("log_image boom"))
    report.failure(6, RuntimeError("another cause"))
    assert len(warn) == 3
    assert "step 1" in warn[0] and "No space left on device" in warn[0] and "ldam/failed_rounds" in warn[0]
    assert "step 4" in warn[1] and "RuntimeError: log_image boom" in warn[1]
    assert "another cause" in warn[2]


def _result(steps: int) -> SampleResult:
    n, c = 2, 3
    return SampleResult(neurons=[("fc", 0), ("fc", 1)], images=torch.zeros(n, c, 1, 4, 4),
                        activations=torch.zeros(n, c), trace=torch.zeros(n, c, steps), disc_scores=None,
                        nonfinite_resets=torch.zeros(n, dtype=torch.long), value_range=(0.0, 1.0),
                        discriminator=None, seconds=1.0, step_seconds=0.01, config={"steps": steps})


def test_the_estimate_comes_from_the_last_rounds_pace():
    report, info, _ = _reporter()
    report.announce(10, "2 neurons × 3 chains × 100 steps × 2 variants (raw, ema)", variants=2, steps=100)
    assert info[-1].endswith("(the first round: timing it)")
    report.done(10, {"raw": _result(100), "ema": _result(100)}, seconds=8.0)  # 0.04 s per variant and step
    report.announce(20, "...", variants=3, steps=50)
    assert info[-1].endswith("(≈ 6 s)")  # 3 × 50 × 0.04
