"""SIGTERM ends a running round at its next step, as Ctrl-C does; the trainer then stops as Lightning says."""
from __future__ import annotations

import os
import signal

import pytest
from helpers.training import FAST, NEURONS, TinyModule, fit
from torch import nn

import lightning_ldam as ldam
from lightning_ldam.callback.interrupts import RoundInterrupted, sigterm_interrupts

pytestmark = pytest.mark.usefixtures("lightning_env")


class TermsAtCall(nn.Module):
    """Identity that sends this process SIGTERM at its ``at``-th call in eval mode (the sampler's copies)."""

    def __init__(self, at: int):
        super().__init__()
        self.at, self.calls = at, 0

    def forward(self, x):
        if not self.training:
            self.calls += 1
            if self.calls == self.at:
                os.kill(os.getpid(), signal.SIGTERM)
        return x


@pytest.fixture
def recorded_sigterm():
    """A Python SIGTERM handler that records (as Lightning's sets its flag), restored afterwards."""
    seen = []
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: seen.append(signum))
    try:
        yield seen
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_sigterm_stops_sampling_at_the_next_step_and_the_installed_handler_still_runs(recorded_sigterm):
    net = nn.Sequential(nn.Conv2d(1, 3, 3), TermsAtCall(at=5), nn.Flatten(), nn.Linear(3 * 10 * 10, 2)).eval()
    installed = signal.getsignal(signal.SIGTERM)
    with pytest.raises(RoundInterrupted), sigterm_interrupts():
        ldam.sample(net, "3:0", input_shape=(1, 12, 12), chains=2, steps=400)
    assert recorded_sigterm == [signal.SIGTERM] and net[1].calls == 5  # stopped at once, not 400 steps later
    assert signal.getsignal(signal.SIGTERM) is installed
    assert all(not m._forward_hooks for m in net.modules()) and all(p.requires_grad for p in net.parameters())


def test_without_a_signal_the_block_changes_nothing(recorded_sigterm):
    installed = signal.getsignal(signal.SIGTERM)
    with sigterm_interrupts():
        assert signal.getsignal(signal.SIGTERM) is not installed
    assert signal.getsignal(signal.SIGTERM) is installed and recorded_sigterm == []


class Terminated(TinyModule):
    def __init__(self):
        super().__init__()
        self.features.append(TermsAtCall(at=40))  # past the first-batch trial: inside the first round


def test_sigterm_during_a_round_stops_it_and_the_fit_ends_as_lightning_ends_it(tmp_path, caplog):
    cb = ldam.LDAMCallback(NEURONS, every_n_train_steps=2, every_n_epochs=None, **{**FAST, "steps": 400})
    with caplog.at_level("INFO"), pytest.raises(SystemExit):  # Lightning's SIGTERMException, at the next batch
        fit(tmp_path, [cb], module=Terminated, max_steps=6)
    said = [r.getMessage() for r in caplog.records if "SIGTERM received, the round was stopped" in r.getMessage()]
    assert len(said) == 1 and "step 2" in said[0]
    assert cb.stats.rounds == 0 and cb.stats.failed_rounds == 0
