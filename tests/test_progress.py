"""``Progress``: a bar on a terminal, plain lines for log files (every 10 % or 30 s, after a delay)."""
import doctest
import sys

import pytest
from helpers.models import INPUT_SHAPE, make_tiny_net

import lightning_ldam as ldam
import lightning_ldam.sampling.progress as progress_module
from lightning_ldam.errors import LDAMArgumentError
from lightning_ldam.sampling.progress import Progress


class FakeClock:
    """Seconds that move only when the test says so."""

    def __init__(self):
        self.now = 100.0  # not 0: the tracker must measure from its start, not from the clock's origin

    def __call__(self) -> float:
        return self.now


def run_loop(total: int, seconds_per_step: float, **kwargs):
    """Lines written while a loop of ``total`` steps runs at ``seconds_per_step`` on a fake clock."""
    lines, clock = [], FakeClock()
    tracker = Progress(terminal=False, write=lines.append, clock=clock, **kwargs).start(total)
    for _ in range(total):
        clock.now += seconds_per_step
        tracker.update()
    tracker.close()
    return lines


def test_a_line_at_every_tenth_of_the_steps_then_a_final_line():
    lines = run_loop(100, 0.1)
    assert lines[0] == "LDAM: 10/100 steps (10%), 1.0 s elapsed, ~9.0 s left"
    assert [line.split()[1] for line in lines[:-1]] == [f"{k}/100" for k in range(10, 100, 10)]
    assert lines[-1] == "LDAM: 100/100 steps in 10.0 s"


def test_marks_fall_on_whole_steps_for_any_total():
    lines = run_loop(512, 0.01)
    assert [line.split()[1] for line in lines[:-1]] == [f"{k}/512" for k in (52, 103, 154, 205, 256, 308, 359, 410,
                                                                            461)]
    assert lines[0] == "LDAM: 52/512 steps (10%), 0.5 s elapsed, ~4.6 s left"


def test_a_slow_loop_writes_a_line_every_30_seconds_before_the_first_tenth():
    lines = run_loop(1000, 1.0)  # 10 % = 100 s
    assert lines[0] == "LDAM: 30/1000 steps (3%), 30.0 s elapsed, ~970 s left"
    assert [line.split()[1] for line in lines[:4]] == ["30/1000", "60/1000", "90/1000", "100/1000"]
    assert lines[-1] == "LDAM: 1000/1000 steps in 1000.0 s"


def test_a_loop_that_ends_before_the_delay_writes_nothing():
    assert run_loop(50, 0.05, delay=3.0) == []  # 2.5 s in all: not even the final line


def test_lines_start_once_the_delay_has_passed():
    lines = run_loop(100, 0.1, delay=3.45)
    assert lines[0] == "LDAM: 35/100 steps (35%), 3.5 s elapsed, ~6.5 s left"  # the 10-30 % marks passed silently
    assert [line.split()[1] for line in lines[1:-1]] == [f"{k}/100" for k in range(40, 100, 10)]
    assert lines[-1] == "LDAM: 100/100 steps in 10.0 s"


def test_every_fraction_and_every_seconds_are_settings():
    assert len(run_loop(100, 0.1, every_fraction=0.25)) == 3 + 1  # 25, 50, 75, then the final line
    assert [line.split()[1] for line in run_loop(100, 0.1, every_seconds=0.25)[:5]] == [
        "3/100", "6/100", "9/100", "10/100", "13/100"]  # whichever comes first: 0.25 s or the next tenth


def test_closing_early_reports_the_steps_done():
    lines, clock = [], FakeClock()
    tracker = Progress(terminal=False, write=lines.append, clock=clock).start(10)
    for _ in range(3):
        clock.now += 1.0
        tracker.update()
    tracker.close()
    tracker.close()  # a second close adds nothing
    assert lines[-1] == "LDAM: 3/10 steps in 3.0 s" and len(lines) == 4


def test_default_write_prints_flushed_lines_to_stderr(capsys):
    clock = FakeClock()
    tracker = Progress(terminal=False, clock=clock).start(2, desc="probe")
    clock.now += 1.0
    tracker.update()
    tracker.update()
    tracker.close()
    assert capsys.readouterr().err.splitlines() == ["probe: 1/2 steps (50%), 1.0 s elapsed, ~1.0 s left",
                                                    "probe: 2/2 steps in 1.0 s"]


def test_terminal_default_follows_stderr(monkeypatch):
    monkeypatch.setattr(sys.stderr, "isatty", lambda: False)
    assert isinstance(Progress().start(5), progress_module._Lines)
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    bar = Progress(delay=3600.0).start(5)  # a tqdm bar (hidden for an hour)
    assert type(bar).__module__.startswith("tqdm")
    bar.close()


def test_terminal_without_tqdm_shows_nothing(monkeypatch):
    monkeypatch.setitem(sys.modules, "tqdm.auto", None)  # import fails
    lines = []
    tracker = Progress(terminal=True, write=lines.append).start(3)
    tracker.update(3)
    tracker.close()
    assert lines == []


@pytest.mark.parametrize("kwargs, argument", [
    ({"delay": -1.0}, "delay"), ({"delay": float("inf")}, "delay"), ({"every_seconds": "30"}, "every_seconds"),
    ({"every_fraction": 0.0}, "every_fraction"), ({"every_fraction": 1.5}, "every_fraction"),
    ({"write": "log.txt"}, "write"), ({"terminal": 1}, "terminal"),
])
def test_bad_settings_name_the_argument(kwargs, argument):
    with pytest.raises(LDAMArgumentError, match=rf"^{argument}: expected .*, got ") as err:
        Progress(**kwargs)
    assert err.value.argument == argument


def test_docstring_example_runs():
    results = doctest.testmod(progress_module, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert results.attempted > 0 and results.failed == 0


# ---- through sample() -------------------------------------------------------------------------------------
def test_sample_writes_lines_through_a_progress_off_a_terminal():
    lines = []
    ldam.sample(make_tiny_net(), "classifier.2:0", input_shape=INPUT_SHAPE, chains=2, steps=10,
                progress=Progress(terminal=False, write=lines.append))
    assert [line.split()[1] for line in lines[:-1]] == [f"{k}/10" for k in range(1, 10)]
    assert lines[-1].startswith("LDAM: 10/10 steps in ")


def test_sample_with_a_long_delay_writes_nothing():
    lines = []
    ldam.sample(make_tiny_net(), "classifier.2:0", input_shape=INPUT_SHAPE, chains=2, steps=4,
                progress=Progress(delay=3600.0, terminal=False, write=lines.append))
    assert lines == []


def test_the_final_line_is_written_even_when_sampling_fails():
    lines = []

    net = make_tiny_net()
    calls = {"n": 0}

    def explode(module, args, output):
        calls["n"] += 1
        if calls["n"] > 4:  # the probe, then three steps
            raise RuntimeError("boom")

    net.classifier[2].register_forward_hook(explode)
    with pytest.raises(RuntimeError, match="boom"):
        ldam.sample(net, "classifier.2:0", input_shape=INPUT_SHAPE, chains=2, steps=10,
                    progress=Progress(terminal=False, write=lines.append))
    assert lines[-1].startswith("LDAM: 3/10 steps in ")
