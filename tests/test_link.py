"""The closed loop's link and event queue (groundwork): pyx/link.pxi and pyx/event_heap.pxi.

Scripted cases check serialisation, delay and the drop-tail limit by hand; the differential
tests run Hypothesis sequences of frames (sizes, gaps, rates, limits, loss, seeds) through
``_core.CoreLink`` and ``tests/reference/link_model.py`` and compare every delivery time and
the counters, and push/pop batches through ``_core.CoreEventHeap`` and ``heapq``.
"""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from reference.link_model import DROP, RefEventHeap, RefLink

from netmem import _core

GBIT = 1_000_000_000


def test_serialisation_delay_and_fifo():
    link = _core.CoreLink(GBIT, 50_000, 10_000)
    # 1500 B at 1 Gbit/s: 12 us on the wire, then 50 us of propagation; back to back.
    out = link.enqueue([1500, 1500, 1000], [0, 0, 0])
    assert list(out) == [62_000, 74_000, 82_000]
    assert link.stats["backlog"] == 4000


def test_drop_tail_byte_limit():
    link = _core.CoreLink(GBIT, 0, 3000)
    out = link.enqueue([1500, 1500, 1, 1500], [0, 0, 0, 12_000])
    # The third frame would exceed 3000 queued bytes; at 12 us the first has left the wire.
    assert list(out) == [12_000, 24_000, DROP, 36_000]
    s = link.stats
    assert (s["enqueued"], s["dropped_queue"], s["delivered"], s["bytes"]) == (3, 1, 3, 4500)


def test_rounding_up_and_idle_wire():
    link = _core.CoreLink(3, 7, 1 << 30)                 # 3 bit/s: 8 bits take 2.67 s
    assert list(link.enqueue([1, 1], [0, 10 * GBIT])) == [2_666_666_667 + 7,
                                                         10 * GBIT + 2_666_666_667 + 7]


def test_loss_is_seeded():
    a, b, c = (_core.CoreLink(GBIT, 0, 1 << 30, 0.3, seed) for seed in (5, 5, 6))
    lens, now = np.full(2000, 100), np.arange(2000) * 1000
    da, db, dc = a.enqueue(lens, now), b.enqueue(lens, now), c.enqueue(lens, now)
    assert (da == db).all() and not (da == dc).all()
    assert 500 < a.stats["dropped_loss"] < 700 and a.stats["dropped_queue"] == 0


def test_bad_arguments():
    with pytest.raises(ValueError):
        _core.CoreLink(0, 0, 0)
    with pytest.raises(ValueError):
        _core.CoreLink(GBIT, 0, 0, 1.5)


@settings(max_examples=150, deadline=None, derandomize=True, database=None)
@given(rate=st.integers(1000, 100 * GBIT), delay=st.integers(0, 10**9),
       limit=st.one_of(st.sampled_from([0, 1500, 3000, 4500, 15_000]), st.integers(0, 200_000)),
       loss=st.sampled_from([0.0, 0.01, 0.5, 1.0]), seed=st.integers(0, 2**32 - 1),
       frames=st.lists(st.tuples(st.one_of(st.just(1500), st.integers(1, 65_535)),
                                 st.integers(0, 2_000_000)), max_size=400))
def test_link_differential(rate, delay, limit, loss, seed, frames):
    now, lens, times = 0, [], []
    for length, gap in frames:
        now += gap
        lens.append(length)
        times.append(now)
    link, ref = _core.CoreLink(rate, delay, limit, loss, seed), RefLink(rate, delay, limit,
                                                                        loss, seed)
    out = link.enqueue(np.array(lens, dtype=np.uint32), np.array(times, dtype=np.uint64))
    assert [int(x) for x in out] == [ref.enqueue(n, t) for n, t in zip(lens, times, strict=True)]
    stats = link.stats
    assert {k: stats[k] for k in ref.stats} == ref.stats


def test_event_heap_ties_pop_in_push_order():
    h = _core.CoreEventHeap()
    h.push([5, 1, 5, 1], [0, 1, 2, 3], [10, 11, 12, 13])
    t, s, k, _a = h.pop(10)
    assert list(t) == [1, 1, 5, 5] and list(k) == [1, 3, 0, 2] and list(s) == [1, 3, 0, 2]
    assert len(h) == 0 and len(h.pop(3)[0]) == 0


@settings(max_examples=150, deadline=None, derandomize=True, database=None)
@given(ops=st.lists(st.one_of(
    st.lists(st.tuples(st.integers(0, 50), st.integers(0, 7), st.integers(0, 2**64 - 1)),
             min_size=1, max_size=300),
    st.integers(0, 300)), max_size=30))
def test_event_heap_differential(ops):
    h, ref = _core.CoreEventHeap(), RefEventHeap()
    for op in ops:
        if isinstance(op, list):
            t, k, a = zip(*op, strict=True)
            h.push(np.array(t, dtype=np.uint64), np.array(k, dtype=np.uint32),
                   np.array(a, dtype=np.uint64))
            for e in op:
                ref.push(*e)
        else:
            got = list(zip(*(c.tolist() for c in h.pop(op)), strict=True))
            assert got == [ref.pop() for _ in range(min(op, len(ref.h)))]
        assert len(h) == len(ref.h)
