"""The reservoir of real inputs and ``extract_input``, without a Trainer."""
import math
import pickle
import random

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

from lightning_ldam.callback.reservoir import Reservoir
from lightning_ldam.sampling.inputs import extract_input


def _stream(n: int, batch: int):
    """Items 0..n-1 as ``[B, 1]`` float batches: each row holds its own position in the stream."""
    idx = torch.arange(n, dtype=torch.float32).view(-1, 1)
    return list(idx.split(batch))


def _kept(res: Reservoir):
    return sorted(int(v) for v in res.images.view(-1))


def test_capacity_is_respected_and_fills_in_order():
    res = Reservoir(10, seed=0)
    assert len(res) == 0
    batches = _stream(50, 7)
    res.add(batches[0])
    assert _kept(res) == list(range(7))
    res.add(batches[1])
    assert len(res) == 10 and res.seen == 14
    kept = _kept(res)
    assert len(set(kept)) == 10 and max(kept) < 14  # filled with 0..9, then 10..13 may have evicted some
    for b in batches[2:]:
        res.add(b)
    assert len(res) == 10 and res.seen == 50
    kept = _kept(res)
    assert len(set(kept)) == 10 and all(0 <= k < 50 for k in kept)
    assert res.images.shape == (10, 1) and res.images.dtype == torch.float32


def test_small_stream_keeps_everything():
    res = Reservoir(32, seed=0)
    for b in _stream(20, 6):
        res.add(b)
    assert _kept(res) == list(range(20))
    assert res.input_shape() == (1,)


def test_selection_is_uniform_over_the_stream():
    size, n, trials = 8, 40, 400
    counts = torch.zeros(n)
    for seed in range(trials):
        res = Reservoir(size, seed=seed)
        for b in _stream(n, 5):
            res.add(b)
        counts[_kept(res)] += 1
    expected = trials * size / n  # 80 per item
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    assert chi2 < 72.0, f"chi-square {chi2:.1f} with 39 dof (p < 0.001): counts {counts.tolist()}"
    # no bias towards the start (filled first) or the end (seen last) of the stream
    assert abs(float(counts[:10].mean() - counts[-10:].mean())) < 0.15 * expected


@pytest.mark.parametrize("batches", [[1, 1, 1, 1], [4]], ids=["one-by-one", "one-batch"])
def test_exact_keep_probability_on_a_tiny_stream(batches):
    """Capacity 2, stream of 4: every item must survive with probability 1/2, however the stream is batched
    (two rows of one batch can draw the same slot; the later one must win, as in sequential algorithm R)."""
    trials = 2000
    counts = torch.zeros(4)
    for seed in range(trials):
        res = Reservoir(2, seed=seed)
        for b in torch.arange(4, dtype=torch.float32).view(-1, 1).split(batches):
            res.add(b)
        counts[_kept(res)] += 1
    torch.testing.assert_close(counts / trials, torch.full((4,), 0.5), atol=0.05, rtol=0)  # 4.5 sigma


# ---- a slot written twice by one batch --------------------------------------------------------------
def _constant_images(n: int, shape=(2, 32, 32)) -> torch.Tensor:
    """``n`` images, image i filled with the value i: a row spliced from two images is not constant."""
    return torch.arange(n, dtype=torch.float32).view(-1, 1, 1, 1).expand(n, *shape).contiguous()


def _kept_whole(res: Reservoir, strict: bool = True) -> list:
    """The stream positions of the whole images kept; ``strict``: assert that no stored row is spliced."""
    rows = res.images.flatten(1)
    whole = (rows == rows[:, :1]).all(1)
    spliced = [rows[i].unique().tolist() for i in (~whole).nonzero().flatten()]
    assert not (strict and spliced), f"rows spliced from several images: {spliced}"
    return sorted(int(v) for v in rows[whole, 0])


def test_a_slot_written_twice_in_one_batch_keeps_the_later_whole_image():
    """Capacity 16, one batch of 128 images: about 55 writes into 16 slots, so slots repeat within the batch.
    ``data[slots] = rows`` with repeated slots is undefined (a multi-threaded CPU copy spliced images); the
    result must be sequential algorithm R's: whole images, the later write winning, as if fed one by one."""
    images = _constant_images(128)
    for seed in range(30):
        batched, one_by_one = Reservoir(16, seed=seed), Reservoir(16, seed=seed)
        batched.add(images)
        for row in images.split(1):
            one_by_one.add(row)
        kept = _kept_whole(batched)
        assert len(set(kept)) == 16 and kept == _kept_whole(one_by_one), seed


def test_no_flush_writes_a_slot_twice(monkeypatch):
    """What makes the write defined: each ``data[slots] = rows`` of a flush gets distinct slots (checked
    directly, since whether repeated slots splice depends on the CPU threads' timing)."""
    written = []
    original = Reservoir._flush

    def recording_flush(self):
        written.extend(slots.tolist() for slots, _ in self._pending)
        original(self)

    monkeypatch.setattr(Reservoir, "_flush", recording_flush)
    for seed in range(10):
        res = Reservoir(16, seed=seed)
        for b in torch.arange(400, dtype=torch.float32).view(-1, 1).split(100):
            res.add(b)
        len(res)
    assert written and all(len(set(slots)) == len(slots) for slots in written), written


def test_inclusion_is_uniform_over_each_half_of_the_batches():
    """Every stream position is kept with probability size / n, whatever its place in its batch (the undefined
    write favoured a batch's first half: 1.2x vs 0.7x of size / n)."""
    size, n, batch, trials = 16, 128, 64, 100
    counts = torch.zeros(n)
    images = _constant_images(n, shape=(1, 32, 32))
    for seed in range(trials):
        res = Reservoir(size, seed=seed)
        for b in images.split(batch):
            res.add(b)
        counts[_kept_whole(res, strict=False)] += 1  # a spliced row counts for no position
    expected = trials * size / n  # 12.5 per position
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    assert chi2 < 181.0, f"chi-square {chi2:.1f} with 127 dof (p < 0.001): counts {counts.tolist()}"
    offset = torch.arange(n) % batch
    for half in (offset < batch // 2, offset >= batch // 2):  # each mean has a standard error of 3.5%
        assert abs(float(counts[half].mean()) / expected - 1.0) < 0.15, (float(counts[half].mean()), expected)


def test_selection_does_not_depend_on_how_the_stream_is_batched():
    """The random draws depend on the stream positions only, so any batching keeps what one-by-one feeding
    keeps (which is sequential reservoir sampling)."""
    stream = torch.arange(300, dtype=torch.float32).view(-1, 1)
    for seed in range(10):
        reference = Reservoir(8, seed=seed)
        for row in stream.split(1):
            reference.add(row)
        for sizes in ([300], [5, 3, 150, 142], [7] * 42 + [6]):
            res = Reservoir(8, seed=seed)
            for b in stream.split(sizes):
                res.add(b)
            assert _kept(res) == _kept(reference), (seed, sizes)


def test_private_rng_leaves_the_global_rng_alone():
    torch.manual_seed(3)
    np.random.seed(3)
    random.seed(3)
    states = torch.get_rng_state(), np.random.get_state()[1].copy(), random.getstate()
    res = Reservoir(4, seed=0)
    for b in _stream(40, 3):
        res.add(b)
    res.value_range()
    res.load_state_dict(res.state_dict())
    assert torch.equal(torch.get_rng_state(), states[0])
    assert np.array_equal(np.random.get_state()[1], states[1])
    assert random.getstate() == states[2]


def test_same_seed_same_selection_other_seed_other_selection():
    def run(seed):
        res = Reservoir(5, seed=seed)
        for b in _stream(60, 4):
            res.add(b)
        return _kept(res)

    assert run(1) == run(1)
    assert run(1) != run(2)


def test_state_round_trip_continues_identically():
    a = Reservoir(10, seed=0)
    batches = _stream(80, 6)
    for b in batches[:5]:
        a.add(b)
    state = a.state_dict()
    assert state["seen"] == 30 and state["data"].shape == (10, 1)
    b_ = Reservoir(10, seed=99)
    b_.load_state_dict(state)
    assert b_.seen == a.seen and torch.equal(b_.images, a.images)
    state["data"].fill_(-1.0)  # the saved data is a copy, not a view of the live store
    assert (a.images >= 0).all()
    for b in batches[5:]:
        a.add(b)
        b_.add(b)
    assert torch.equal(a.images, b_.images) and a.seen == b_.seen == 80


def test_state_round_trip_before_any_data():
    a = Reservoir(4, seed=0)
    b = Reservoir(4, seed=1)
    b.load_state_dict(a.state_dict())
    assert len(b) == 0 and b.seen == 0
    x = torch.rand(9, 2)
    a.add(x)
    b.add(x)
    assert torch.equal(a.images, b.images)


def test_rows_are_copied_to_cpu_float32_and_detached():
    res = Reservoir(4, seed=0)
    x = torch.rand(3, 1, 2, 2, dtype=torch.float64, requires_grad=True)
    res.add(x * 1.0)
    assert res.images.dtype == torch.float32 and not res.images.requires_grad
    assert res.images.data_ptr() != x.data_ptr()
    torch.testing.assert_close(res.images, x.detach().float())


def test_kept_rows_wait_on_their_device_until_read_and_are_copies():
    """The training hook never copies to the host: rows are flushed when the store is read (or once a
    reservoir's worth is pending); they are copies, so a batch changed in place later changes nothing."""
    res = Reservoir(8, seed=0)
    x = torch.rand(3, 1, 2, 2)
    res.add(x)
    assert res.data is None and sum(r.shape[0] for _, r in res._pending) == 3  # nothing written yet
    expected = x.clone()
    x.zero_()
    torch.testing.assert_close(res.images, expected)  # reading flushes
    assert res._pending == []
    full = Reservoir(8, seed=0)
    full.add(torch.rand(8, 1, 2, 2))  # 8 pending rows >= size: flushed by add itself
    assert full._pending == [] and len(full) == 8


def test_pending_rows_reach_the_state_dict_and_pickles():
    res = Reservoir(4, seed=0)
    res.add(torch.rand(3, 1, 2, 2))
    state = res.state_dict()
    assert state["data"] is not None and state["data"].shape[0] == 3
    clone = pickle.loads(pickle.dumps(res))
    torch.testing.assert_close(clone.images, res.images)


def _receive(rank, reservoir):
    assert reservoir.seen == 9 and len(reservoir) == 4


def test_reservoir_crosses_a_spawn_boundary():
    """torch.multiprocessing shares a Generator's on-the-fly state tensor through a file descriptor that is
    gone when a spawned child unpickles it; a Reservoir (so any LDAMCallback under ddp_spawn) must survive."""
    res = Reservoir(4, seed=0)
    res.add(torch.rand(9, 1, 2, 2))
    mp.spawn(_receive, args=(res,), nprocs=1)


@pytest.mark.parametrize("lo, hi, expected", [
    (0.0, 1.0, (0.0, 1.0)),
    (0.2, 0.7, (0.0, 1.0)),
    (-0.5, 0.5, (-1.0, 1.0)),
    (-1.0, 1.0, (-1.0, 1.0)),
    (0.0, 255.0, (0.0, 255.0)),
    (-3.0, 5.0, (-3.0, 5.0)),
    (300.0, 400.0, (300.0, 400.0)),
    (0.0, 2.0, (0.0, 2.0)),  # slightly above 1: its own min/max, not an 8-bit box 127x too wide
    (0.5, 1.5, (0.5, 1.5)),
    (0.0, 3.0, (0.0, 255.0)),  # above 2: 8-bit pixels
    (0.0, 300.0, (0.0, 300.0)),
])
def test_value_range_inference(lo, hi, expected):
    res = Reservoir(16, seed=0)
    x = torch.linspace(lo, hi, 16).view(16, 1, 1, 1)
    res.add(x)
    assert res.value_range() == expected


def test_value_range_of_constant_data_is_non_empty():
    res = Reservoir(4, seed=0)
    res.add(torch.full((4, 1, 2, 2), -7.0))
    lo, hi = res.value_range()
    assert lo == -7.0 and hi > lo


def test_empty_reservoir_says_so():
    res = Reservoir(4)
    with pytest.raises(ValueError, match="reservoir is empty"):
        _ = res.images
    with pytest.raises(ValueError, match="reservoir is empty"):
        res.value_range()


@pytest.mark.parametrize("size", [0, -1, 2.5, True, "8"])
def test_bad_size_names_reservoir_size(size):
    with pytest.raises(ValueError, match=r"^reservoir_size: expected an int >= 1, got"):
        Reservoir(size)


# ---- extract_input ----------------------------------------------------------------------------------
X = torch.rand(4, 1, 3, 3)
Y = torch.arange(4)


@pytest.mark.parametrize("batch", [X, (X, Y), [X, Y], {"image": X, "label": Y}, {"input": X},
                                   {"x": X, "y": Y}, {"label": Y, "x": X, "input": X}],
                         ids=["tensor", "tuple", "list", "dict-image", "dict-input", "dict-x", "dict-order"])
def test_default_reads_common_batch_layouts(batch):
    assert extract_input(batch) is X


def test_dict_key_preference_is_image_input_x():
    other = torch.rand(4, 1, 3, 3)
    assert extract_input({"x": other, "image": X}) is X
    assert extract_input({"x": other, "input": X}) is X


def test_explicit_keys():
    assert extract_input((Y, X), 1) is X
    assert extract_input({"pixels": X}, "pixels") is X
    assert extract_input({"a": {"b": X}}, lambda b: b["a"]["b"]) is X


@pytest.mark.parametrize("batch, key, match", [
    ((X, Y), "image", r"^input_key: cannot read the inputs of a tuple batch with input_key='image' "
                      r"\(TypeError"),
    ((X, Y), 5, r"^input_key: cannot read the inputs of a tuple batch with input_key=5 \(IndexError"),
    ({"x": X}, "image", r"^input_key: cannot read the inputs of a dict batch with input_key='image' "
                        r"\(KeyError"),
    ({"pixels": X, "label": Y}, None,
     r"^input_key: input_key=None does not give .* with keys \['pixels', 'label'\]"),
    ((Y, X), None, r"^input_key: input_key=None does not give a floating-point image tensor"),
    (torch.rand(4), None, r"^input_key: .*\(got Tensor\)"),
    ((), None, r"^input_key: .*\(got NoneType\)"),
    ("abc", None, r"^input_key: .*from a str batch"),
    ((X, Y), lambda b: b[1], r"^input_key: input_key=<function"),
])
def test_unreadable_batches_raise_naming_input_key(batch, key, match):
    with pytest.raises(ValueError, match=match):
        extract_input(batch, key)


def test_selection_stays_uniform_over_a_long_stream_of_skips():
    """Algorithm L's skips: positions kept from a 2,000-input stream spread evenly over it."""
    size, n, trials, bins = 16, 2000, 300, 10
    counts = torch.zeros(bins)
    for seed in range(trials):
        res = Reservoir(size, seed=seed)
        for b in _stream(n, 50):
            res.add(b)
        counts += torch.bincount(torch.tensor(_kept(res)) * bins // n, minlength=bins)
    expected = trials * size / bins  # 480 per bin
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    assert chi2 < 27.9, f"chi-square {chi2:.1f} with 9 dof (p < 0.001): counts {counts.tolist()}"


def test_a_batch_with_nothing_to_keep_costs_only_the_finiteness_check():
    """A floating batch pays the NaN/inf check (no indexing, no copy); an integer batch pays no tensor op."""
    from torch.profiler import ProfilerActivity, profile

    res = Reservoir(8, seed=0)
    for b in _stream(400, 4):
        res.add(b)
    while res._next < res.seen + 8:  # move on to two batches that the next kept position lies beyond
        res.add(torch.zeros(4, 1))
    floats, integers = torch.zeros(4, 1), torch.zeros(4, 1, dtype=torch.uint8)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        assert res.add(floats) == 0
    top = {e.name for e in prof.events() if e.name.startswith("aten::")
           and (e.cpu_parent is None or not e.cpu_parent.name.startswith("aten::"))}
    assert top <= {"aten::detach", "aten::isfinite", "aten::reshape", "aten::all", "aten::nonzero",
                   "aten::squeeze"}, top
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        assert res.add(integers) == 0
    assert [e.name for e in prof.events() if e.name.startswith("aten::")] == []


# ---- non-finite inputs -----------------------------------------------------------------------------
def _poisoned_stream():
    """Rows 0..59 with value = position; rows 3, 10, 11, 40 hold a NaN, +inf or -inf (one pixel or all)."""
    x = torch.arange(60, dtype=torch.float32).view(-1, 1, 1, 1).expand(60, 1, 2, 2).contiguous()
    x[3, 0, 0, 0] = float("nan")
    x[10] = float("inf")
    x[11, 0, 1, 1] = float("-inf")
    x[40] = float("nan")
    return x, [3, 10, 11, 40]


def test_nonfinite_rows_are_skipped_and_counted():
    x, bad = _poisoned_stream()
    res = Reservoir(64, seed=0)  # room for everything: exactly the finite rows are kept
    returned = [res.add(b) for b in x.split(8)]
    assert returned == [1, 2, 0, 0, 0, 1, 0, 0]  # per call: rows 3 | 10, 11 | 40
    assert res.nonfinite_skipped == 4 and res.seen == 56
    assert sorted(int(v) for v in res.images[:, 0, 0, 0]) == [i for i in range(60) if i not in bad]
    assert torch.isfinite(res.images).all()
    assert res.value_range() == (0.0, 255.0) and res.input_shape() == (1, 2, 2)


def test_nonfinite_rows_are_as_if_absent_from_the_stream():
    x, bad = _poisoned_stream()
    clean = x[[i for i in range(60) if i not in bad]]
    for seed in range(5):
        res, ref = Reservoir(6, seed=seed), Reservoir(6, seed=seed)
        for b in x.split(9):
            res.add(b)
        for b in clean.split(9):
            ref.add(b)
        assert torch.equal(res.images, ref.images) and torch.isfinite(res.images).all()
        lo, hi = res.value_range()
        assert math.isfinite(lo) and math.isfinite(hi)


def test_an_all_nonfinite_first_batch_leaves_the_reservoir_empty():
    res = Reservoir(4, seed=0)
    assert res.add(torch.full((3, 1, 2, 2), float("nan"))) == 3
    assert len(res) == 0 and res.seen == 0 and res.nonfinite_skipped == 3
    assert res.add(torch.ones(2, 1, 2, 2)) == 0
    assert len(res) == 2 and res.value_range() == (0.0, 1.0)


def test_the_nonfinite_count_round_trips():
    res = Reservoir(4, seed=0)
    res.add(torch.tensor([[1.0], [float("nan")], [2.0]]))
    state = res.state_dict()
    assert state["nonfinite_skipped"] == 1
    other = Reservoir(4, seed=1)
    other.load_state_dict(state)
    assert other.nonfinite_skipped == 1
    assert pickle.loads(pickle.dumps(res)).nonfinite_skipped == 1
