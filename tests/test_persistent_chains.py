"""Persistent chains (issue #21 item 3): each variant's chains continue from round to round, a stated share is
re-drawn in turn, the same for every variant, and the states travel in the checkpoint."""
from __future__ import annotations

import math
from typing import Any, Dict, List

import pytest
import torch
from helpers.sampling import sample_settings
from helpers.training import FAST, NEURONS, fit

import lightning_ldam.engine.rounds as rounds_module
from lightning_ldam.callback import LDAMCallback
from lightning_ldam.engine.persistent_chains import PersistentChains, continued_rows, redrawn_rows

SHAPE = (3, 4, 1, 5, 5)  # neurons, chains, C, H, W
pytestmark = pytest.mark.usefixtures("lightning_env")


# ---- the store, without a Trainer ----------------------------------------------------------------------
@pytest.mark.parametrize("chains, redraw, round_index, expected", [
    (8, 0.25, 0, [0, 1]), (8, 0.25, 1, [2, 3]), (8, 0.25, 3, [6, 7]), (8, 0.25, 4, [0, 1]),
    (8, 0.0, 5, []), (8, 1.0, 2, list(range(8))), (2, 0.25, 3, [1]), (3, 0.5, 1, [2, 0]),
])
def test_redrawn_rows_take_turns(chains, redraw, round_index, expected):
    assert redrawn_rows(chains, redraw, round_index).tolist() == expected


def test_every_chain_is_redrawn_within_ceil_chains_over_k_rounds():
    seen = set()
    for r in range(math.ceil(8 / 2)):
        seen |= set(redrawn_rows(8, 0.25, r).tolist())
    assert seen == set(range(8))


def _kept(seed=0, box=(0.0, 1.0)) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return box[0] + (box[1] - box[0]) * torch.rand(SHAPE, generator=g)


def test_starts_continue_the_kept_rows_and_redraw_the_stated_ones_in_the_box():
    store = PersistentChains(redraw=0.5)
    kept = _kept()
    store.keep("raw", kept)
    starts = store.starts("raw", SHAPE, round_index=1, seed=0, value_range=(0.0, 1.0))
    rows = redrawn_rows(4, 0.5, 1).tolist()
    assert rows == [2, 3]
    assert torch.equal(starts[:, [0, 1]], kept[:, [0, 1]])  # continued bitwise
    assert not torch.equal(starts[:, rows], kept[:, rows])
    assert float(starts.min()) >= 0.0 and float(starts.max()) <= 1.0


def test_variants_of_a_round_get_the_same_redrawn_states_and_other_rounds_other_ones():
    store = PersistentChains(redraw=0.5)
    store.keep("raw", _kept(1))
    store.keep("ema", _kept(2))
    a = store.starts("raw", SHAPE, 3, seed=7, value_range=(0.0, 1.0))
    b = store.starts("ema", SHAPE, 3, seed=7, value_range=(0.0, 1.0))
    rows = redrawn_rows(4, 0.5, 3)
    assert torch.equal(a[:, rows], b[:, rows])  # common random numbers across variants
    assert not torch.equal(a, b)  # the continued rows are each variant's own
    c = store.starts("raw", SHAPE, 5, seed=7, value_range=(0.0, 1.0))
    assert not torch.equal(a[:, rows], c[:, rows])


def test_redrawn_rows_start_as_the_sampler_would_start_them():
    store = PersistentChains(redraw=0.25)
    store.keep("raw", _kept(box=(-1.0, 1.0)))
    real = torch.full((6, 1, 5, 5), 0.25)
    data = store.starts("raw", SHAPE, 0, 0, (-1.0, 1.0), init="data", real=real)
    assert torch.equal(data[:, 0], torch.full((3, 1, 5, 5), 0.25))  # real images
    given = torch.full((4, 1, 5, 5), -0.5)  # [chains, ...]: every neuron's given starts
    images = store.starts("raw", SHAPE, 0, 0, (-1.0, 1.0), init=given)
    assert torch.equal(images[:, 0], torch.full((3, 1, 5, 5), -0.5))
    noise = store.starts("raw", SHAPE, 0, 0, (-1.0, 1.0))[:, 0]
    assert float(noise.min()) < 0 < float(noise.max())  # uniform over the whole box, not [0, 1]


def test_continued_rows_are_the_complement_of_the_redrawn_ones():
    assert continued_rows(8, 0.25, 1).tolist() == [True, True, False, False, True, True, True, True]
    assert continued_rows(4, 0.0, 3).all() and not continued_rows(4, 1.0, 3).any()


def test_no_starts_without_states_or_when_they_do_not_fit():
    store = PersistentChains()
    assert store.starts("raw", SHAPE, 1, 0, (0.0, 1.0)) is None
    store.keep("raw", _kept(), shard=(0, 2))
    assert store.starts("raw", SHAPE, 1, 0, (0.0, 1.0), shard=(0, 2)) is not None
    assert store.starts("raw", SHAPE, 1, 0, (0.0, 1.0), shard=(1, 2)) is None  # another rank's neurons
    assert store.starts("raw", (3, 8, 1, 5, 5), 1, 0, (0.0, 1.0), shard=(0, 2)) is None  # other chains
    assert store.starts("ema", SHAPE, 1, 0, (0.0, 1.0), shard=(0, 2)) is None


def test_non_finite_states_are_dropped_and_the_state_round_trips():
    store = PersistentChains(redraw=0.5)
    bad = _kept()
    bad[0, 0, 0, 0, 0] = float("nan")
    store.keep("raw", bad)
    assert len(store) == 0
    store.keep("raw", _kept(3), shard=(1, 2))
    other = PersistentChains(redraw=0.5)
    other.load_state_dict(store.state_dict())
    assert torch.equal(other.states["raw"], store.states["raw"]) and other.shards["raw"] == (1, 2)
    other.load_state_dict(None)  # a checkpoint from before chains persisted
    assert len(other) == 0


# ---- in a Trainer --------------------------------------------------------------------------------------
class Spy:
    """Records the ``init`` and ``seed`` of each of the round's ``sample`` calls (steps == FAST's)."""

    def __init__(self, monkeypatch):
        self.calls: List[Dict[str, Any]] = []
        real = rounds_module.sample

        def spy(*args, **kwargs):
            res = real(*args, **kwargs)
            settings = sample_settings(kwargs)
            if settings.get("steps") == FAST["steps"]:
                init = settings.get("init")
                self.calls.append({"init": init.clone() if isinstance(init, torch.Tensor) else init,
                                   "continued": settings.get("continued"),
                                   "seed": settings["seed"], "images": res.images.clone()})
            return res

        monkeypatch.setattr(rounds_module, "sample", spy)


class Kept(LDAMCallback):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.results: List[Dict[str, Any]] = []

    def on_round_end(self, trainer, results, scalars):
        self.results.append({name: res.images.clone() for name, res in results.items()})


def _run(tmp_path, monkeypatch, **kwargs):
    spy = Spy(monkeypatch)
    cb = Kept(NEURONS, every_n_train_steps=2, every_n_epochs=None, on_fit_end=False, ema_decay=0.5,
              **{**FAST, "chains": 4, **kwargs})
    fit(tmp_path, [cb], max_steps=6)
    return cb, spy.calls


def test_a_round_continues_each_variants_chains_and_redraws_the_same_rows(tmp_path, monkeypatch, no_failed_rounds,
                                                                          caplog):
    with caplog.at_level("INFO"):
        cb, calls = _run(tmp_path, monkeypatch, redraw=0.25)
    said = [r.getMessage() for r in caplog.records if ": sampling " in r.getMessage()]
    assert len(said) == 3 and "continuing" not in said[0]
    assert all("continuing the last round's chains (1 of 4 per neuron re-drawn)" in m for m in said[1:]), said
    assert len(cb.results) == 3 and len(calls) == 6  # 3 rounds x (raw, ema)
    first = calls[:2]
    assert all(not isinstance(c["init"], torch.Tensor) for c in first)  # the sampler's own starts, seed 0
    assert [c["seed"] for c in calls] == [0, 0, 1, 1, 2, 2]
    for r in (1, 2):
        raw, ema = calls[2 * r], calls[2 * r + 1]
        rows = redrawn_rows(4, 0.25, r).tolist()
        keep = [i for i in range(4) if i not in rows]
        for name, call in (("raw", raw), ("ema", ema)):
            before = cb.results[r - 1][name]
            assert torch.equal(call["init"][:, keep], before[:, keep])  # continued from the last round
            assert not torch.equal(call["init"][:, rows], before[:, rows])
        assert torch.equal(raw["init"][:, rows], ema["init"][:, rows])  # the same re-drawn starts
        for call in (raw, ema):  # the continued chains are held through the search the re-drawn ones run
            assert call["continued"].tolist() == [i not in rows for i in range(4)]
    assert torch.equal(cb.state_dict()["chains"]["states"]["raw"], cb.results[-1]["raw"])


def test_persistent_false_starts_every_round_afresh(tmp_path, monkeypatch, no_failed_rounds):
    cb, calls = _run(tmp_path, monkeypatch, persistent=False)
    assert len(calls) == 6
    assert all(not isinstance(c["init"], torch.Tensor) and c["seed"] == 0 for c in calls)
    assert cb.state_dict()["chains"] is None


def test_a_resumed_run_continues_the_chains_saved_in_its_checkpoint(tmp_path, monkeypatch, no_failed_rounds):
    cb = Kept(NEURONS, every_n_train_steps=2, every_n_epochs=None, on_fit_end=False, ema_decay=0.5,
              **{**FAST, "chains": 4})
    trainer, _ = fit(tmp_path / "a", [cb], max_steps=2)
    ckpt = tmp_path / "a.ckpt"
    trainer.save_checkpoint(str(ckpt))
    saved = cb.results[-1]
    spy = Spy(monkeypatch)
    resumed = Kept(NEURONS, every_n_train_steps=2, every_n_epochs=None, on_fit_end=False, ema_decay=0.5,
                   **{**FAST, "chains": 4})
    fit(tmp_path / "b", [resumed], max_steps=4, ckpt_path=str(ckpt))
    assert len(spy.calls) == 2
    rows = redrawn_rows(4, 0.25, 1).tolist()
    keep = [i for i in range(4) if i not in rows]
    for call, name in zip(spy.calls, ("raw", "ema")):
        assert isinstance(call["init"], torch.Tensor)
        assert torch.equal(call["init"][:, keep], saved[name][:, keep])
