"""benchmarks/averaging_study.py in its --quick mode: raw, EMA and SWA rounds recorded, the table and finding built."""
from __future__ import annotations

import math
import os
import sys

import pytest

BENCHMARKS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks")

pytestmark = [pytest.mark.usefixtures("lightning_env"), pytest.mark.slow]


@pytest.fixture(scope="module")
def study_module():
    pytest.importorskip("mlxtend")
    if BENCHMARKS not in sys.path:
        sys.path.insert(0, BENCHMARKS)
    import averaging_study

    return averaging_study


def _mtime(path):
    return os.path.getmtime(path) if os.path.exists(path) else None


def test_quick_study_records_raw_ema_swa_and_writes_nothing(study_module, capsys):
    readme, figure = _mtime(study_module.README), _mtime(study_module.FIGURE)
    study = study_module.main(["--quick", "--cases", "mnist", "--seeds", "0", "--threads", "1"])
    assert (_mtime(study_module.README), _mtime(study_module.FIGURE)) == (readme, figure)  # no --write

    logits = [r for r in study.records if r["layer"] == "logits"]
    # two rounds (one per epoch); SWA starts with the second epoch, EMA with the first step
    assert sorted({r["epoch"] for r in logits}) == [0, 1]
    assert {r["variant"] for r in logits if r["epoch"] == 0} == {"raw", "ema"}
    assert {r["variant"] for r in logits if r["epoch"] == 1} == {"raw", "ema", "swa"}
    for r in logits:
        for metric in ("accuracy", "lift", "realism", "diversity", "judge", "activation"):
            assert math.isfinite(r[metric]), (r["variant"], metric, r[metric])
        assert 0.0 <= r["judge"] <= 1.0 and 0.0 <= r["accuracy"] <= 1.0
        assert r["realism"] > 0 and r["diversity"] > 0
    ema = [r for r in logits if r["variant"] == "ema"]
    assert ema and all(math.isfinite(r["divergence"]) and r["divergence"] >= 0 for r in ema)
    assert all(math.isnan(r["divergence"]) for r in logits if r["variant"] == "raw")  # raw has no divergence
    assert math.isfinite(next(r for r in logits if r["variant"] == "raw" and r["epoch"] == 1)["drift"])

    rows = [line for line in study_module.table(study).splitlines() if line.startswith("| mnist |")]
    assert [row.split(" | ")[2] for row in rows] == ["raw", "ema", "raw", "ema", "swa"]
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split("|")][3:]
        numbers = [c for c in cells if c != "–"]
        assert all(math.isfinite(float(c.split(" ± ")[0])) for c in numbers), row
    ema_row = rows[1].strip("|").split("|")
    assert ema_row[8].strip() != "–"  # divergence from raw reported for ema

    out = capsys.readouterr().out
    assert "Class logits:" in out and "divergence from raw by epoch 1" in out


def test_summaries_and_directions_are_plain_functions(study_module):
    assert study_module.stats([1.0, float("nan"), 3.0]) == (2.0, pytest.approx(2 ** 0.5), 1.0, 3.0)
    assert study_module.stats([float("nan")]) is None
    direction = lambda diffs: study_module.Comparison(0.0, 0.0, diffs).direction()  # noqa: E731
    assert direction([-0.1, -0.2]) == -1 and direction([0.1, 0.3]) == 1
    assert direction([0.1, -0.2]) == 0  # the seeds disagree
    assert direction([-0.001, -0.2]) == 0  # 0.00 at the table's precision is no direction
    assert direction([]) == 0


def test_comparisons_pair_variant_and_raw_by_seed_and_round(study_module):
    def rec(seed, step, variant, realism):
        return {"case": "mnist", "layer": "logits", "seed": seed, "step": step, "variant": variant,
                "realism": realism}

    records = [rec(0, 1, "raw", 2.0), rec(0, 2, "raw", 1.0), rec(0, 2, "swa", 0.5),  # swa only in round 2
               rec(1, 1, "raw", 3.0), rec(1, 2, "raw", float("nan")), rec(1, 2, "swa", 9.0)]  # no pair for seed 1
    c = study_module.compare(records, "mnist", "swa", "realism")
    assert (c.variant, c.raw, c.diffs) == (0.5, 1.0, [-0.5])
    assert study_module.compare(records, "mnist", "ema", "realism") is None


def test_bad_options_are_refused_with_the_option_named(study_module, capsys):
    for argv, said in ((["--cases", "mnist,cifar"], "cifar"), (["--chains", "1"], "--chains"),
                       (["--seeds", "0,x"], "comma-separated integers")):
        with pytest.raises(SystemExit):
            study_module.parse(argv)
        assert said in capsys.readouterr().err
