"""Unit tests of ``netmem.machine``: building a Machine (sizes, NUMA nodes, CPUs, refusals with
EINVAL), its lazily committed memory, the buddy allocator with exact pfns worked out by hand from
mm/page_alloc.c (``__rmqueue_smallest()`` takes the head of the smallest non-empty list,
``expand()`` puts the upper halves back at the heads of their lists, ``__free_one_page()`` merges
with free buddies and lists the result at the tail when ``buddy_merge_likely()`` says the next
order's buddy is free; boot frees the largest aligned blocks to the tail), NUMA fallback, the
reserved first MiB, ``get_page``/``put_page``/``set_pfmemalloc``, the virtual clock and its timers,
the ``on_cpu`` execution context, the isolation of two Machines and the descriptor views of
``m.netmem(ref)``.
"""
import errno
import os

import pytest
from memutil import THP, vma_of

from netmem import (
    MAX_PAGE_ORDER,
    PAGE_SIZE,
    Machine,
    NetIovArea,
    NetmemError,
    PagePoolParams,
    page_pool_create,
)
from netmem.netdev import Napi

MIB = 1 << 20
MIN_NAPI_ID = 8193          # include/net/busy_poll.h: NR_CPUS + 1
NSEC = 1_000_000_000
# A 64 MiB node after boot: pfns 0..255 reserved, then 256 (order 8), 512 (order 9) and fifteen
# 4 MiB blocks from 1024, all freed to the tail in address order.
BOOT_64MIB = [0] * 8 + [1, 1, 15]
MANAGED_64MIB = 16384 - 256


def pfn_of(ref):
    return ref >> 1


def ref_of(pfn):
    return pfn << 1


class Pages:
    """Allocates by pfn and remembers what it still holds, so a test frees what it forgets."""

    def __init__(self, machine):
        self.m = machine
        self.held = {}

    def alloc(self, order=0, nid=-1):
        ref = self.m.alloc_pages(order, nid)
        assert ref, f"no order-{order} block on node {nid}"
        self.held[pfn_of(ref)] = order
        return pfn_of(ref)

    def free(self, pfn):
        del self.held[pfn]
        self.m.put_page(ref_of(pfn))

    def alloc_all(self, order=0):
        """Every block of ``order`` the machine has left, in allocation order."""
        got = []
        while ref := self.m.alloc_pages(order):
            self.held[pfn_of(ref)] = order
            got.append(pfn_of(ref))
        return got

    def free_all(self):
        for pfn in list(self.held):
            self.free(pfn)


def make_pages(request, machine):
    p = Pages(machine)
    request.addfinalizer(p.free_all)
    return p


@pytest.fixture
def pages(request, machine):
    return make_pages(request, machine)


def assert_boot_state(m, free_area=BOOT_64MIB, nid=0):
    assert m.free_area(nid) == free_area
    assert m.nr_free_pages() == m.managed_pages()


def statm_resident_bytes():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


# -- construction ---------------------------------------------------------------------------------

@pytest.mark.parametrize(("memory", "expected"), [
    ("64MiB", 64 * MIB),
    ("64M", 64 * MIB),
    ("64mib", 64 * MIB),
    (64 * MIB, 64 * MIB),
    ("1GiB", 1 << 30),
    ("6MiB", 4 * MIB),          # each node holds whole 4 MiB (MAX_PAGE_ORDER) blocks
])
def test_memory_sizes(memory, expected):
    m = Machine(memory=memory)
    assert m.memory == expected
    assert m.managed_pages() == (expected >> 12) - 256
    assert m.nr_free_pages() == m.managed_pages()


def test_defaults_and_topology():
    m = Machine()
    assert (m.memory, m.numa_nodes, m.cpus) == (1 << 30, 1, 2)
    m = Machine(memory="16MiB", numa_nodes=2, cpus=4)
    assert [m.cpu_to_node(c) for c in range(4)] == [0, 0, 1, 1]
    with pytest.raises(NetmemError) as e:
        m.cpu_to_node(4)
    assert e.value.errno == errno.EINVAL


@pytest.mark.parametrize("kwargs", [
    {"memory": "64 furlongs"},
    {"memory": ""},
    {"memory": "-64MiB"},
    {"memory": "1MiB"},                     # less than one 4 MiB block per node
    {"memory": "4MiB", "numa_nodes": 2},
    {"memory": "16TiB"},                    # pfns must fit the model's 32-bit links
    {"memory": -64 * MIB},
    {"memory": 0},
    {"memory": 1 << 70},                    # beyond uint64_t
    {"numa_nodes": 0},
    {"numa_nodes": 9},
    {"cpus": 0},
    {"cpus": 65},
])
def test_bad_construction_is_einval(kwargs):
    with pytest.raises(NetmemError) as e:
        Machine(**{"memory": "64MiB", **kwargs})
    assert e.value.errno == errno.EINVAL
    assert isinstance(e.value, OSError)


@pytest.mark.parametrize("memory", [str(1 << 70), "99999999TiB"])
def test_out_of_range_size_string_is_einval(memory):
    with pytest.raises(NetmemError) as e:
        Machine(memory=memory)
    assert e.value.errno == errno.EINVAL


def test_lazily_committed_memory():
    before = statm_resident_bytes()
    m = Machine(memory="64GiB", swiotlb=0)   # no bounce area: the boot layout stays plain
    assert m.memory == 64 << 30
    assert m.free_area() == [0] * 8 + [1, 1, 16383]
    assert m.nr_free_pages() == (64 << 30 >> 12) - 256
    ref = m.alloc_pages(MAX_PAGE_ORDER)
    assert pfn_of(ref) == 1024
    buf = m.netmem(ref).address()
    buf[-1] = 0x5A
    assert m.netmem(ref).address()[-1] == 0x5A
    m.put_page(ref)
    # The descriptors of 16 Mi pages and the 64 GiB behind them are mapped, not committed:
    # only the free-block heads boot touched (and the one page written) cost memory.
    assert statm_resident_bytes() - before < 256 * MIB


# -- the buddy allocator --------------------------------------------------------------------------

def test_boot_free_area(machine):
    assert_boot_state(machine)
    assert machine.managed_pages() == MANAGED_64MIB


def test_alloc_every_order_from_boot(machine, pages):
    # Orders 0..7 all split the order-8 block at 256 (each takes the head of the list expand()
    # left), order 8 splits 512, order 9 splits 1024 and order 10 takes the next 4 MiB block.
    expected = [256, 258, 260, 264, 272, 288, 320, 384, 512, 1024, 2048]
    got = [pages.alloc(order) for order in range(MAX_PAGE_ORDER + 1)]
    assert got == expected
    for order, pfn in enumerate(got):
        view = machine.netmem(ref_of(pfn))
        assert (view.order, view.refcount, view.nid) == (order, 1, 0)
        assert len(view.address()) == PAGE_SIZE << order
    assert machine.free_area() == [1, 0, 0, 0, 0, 0, 0, 0, 1, 1, 13]
    assert machine.nr_free_pages() == MANAGED_64MIB - sum(1 << o for o in range(11))
    pages.free_all()
    assert_boot_state(machine)


def test_scripted_split_and_merge(machine, pages):
    fa = machine.free_area
    p0 = pages.alloc(0)     # splits 256/8: 384/7 320/6 288/5 272/4 264/3 260/2 258/1 257/0
    p1 = pages.alloc(0)     # the head of order 0
    p2 = pages.alloc(0)     # splits 258/1: 259/0
    p3 = pages.alloc(2)
    p4 = pages.alloc(1)     # orders 1 and 2 are empty: splits 264/3: 268/2 266/1
    assert (p0, p1, p2, p3, p4) == (256, 257, 258, 260, 264)
    assert fa() == [1, 1, 1, 0, 1, 1, 1, 1, 0, 1, 15]

    # 258 merges with 259 into 258/1; the buddy 256/1 is in use. The next order's buddy (260/2)
    # is in use too, so the block goes to the head of order 1: it is the next one handed out.
    pages.free(p2)
    assert fa() == [0, 2, 1, 0, 1, 1, 1, 1, 0, 1, 15]
    p5 = pages.alloc(1)
    assert p5 == 258

    pages.free(p3)          # 260/2 cannot merge (256/2 is in use): head of order 2
    assert fa() == [0, 1, 2, 0, 1, 1, 1, 1, 0, 1, 15]
    # 258/1 cannot merge, but 260/2 (the buddy of 256/2) is free: buddy_merge_likely() puts it
    # at the tail, behind 266/1, which is handed out first.
    pages.free(p5)
    assert fa() == [0, 2, 2, 0, 1, 1, 1, 1, 0, 1, 15]
    p6 = pages.alloc(1)
    assert p6 == 266

    pages.free(p0)          # 257 is in use: 256/0
    pages.free(p1)          # 256 257 -> 256/1, + 258/1 -> 256/2, + 260/2 -> 256/3; 264/3 in use
    assert fa() == [0, 0, 1, 1, 1, 1, 1, 1, 0, 1, 15]
    pages.free(p4)          # 264/1; its buddy 266/1 is in use
    assert fa() == [0, 1, 1, 1, 1, 1, 1, 1, 0, 1, 15]
    pages.free(p6)          # 264..266 -> 264/3 -> 256/4 ... 256/8: the boot state again
    assert_boot_state(machine)


def test_free_area_and_free_pages_per_node():
    m = Machine(memory="16MiB", numa_nodes=2)
    assert m.free_area(0) == [0] * 8 + [1, 1, 1]       # 256/8 512/9 1024/10
    assert m.free_area(1) == [0] * 10 + [2]            # 2048/10 3072/10
    assert (m.nr_free_pages(), m.nr_free_pages(0), m.nr_free_pages(1)) == (3840, 1792, 2048)
    assert (m.managed_pages(0), m.managed_pages(1)) == (1792, 2048)
    for call in (m.nr_free_pages, m.free_area):
        with pytest.raises(NetmemError) as e:
            call(2)
        assert e.value.errno == errno.EINVAL


def test_numa_fallback_when_a_node_is_empty(request):
    m = Machine(memory="16MiB", numa_nodes=2, cpus=2)
    pages = make_pages(request, m)
    assert [pages.alloc(10, nid=1), pages.alloc(10, nid=1)] == [2048, 3072]
    assert m.nr_free_pages(1) == 0
    fallback = pages.alloc(0, nid=1)            # node 1 is empty: node 0 serves it
    assert fallback == 256
    assert m.netmem(ref_of(fallback)).nid == 0
    assert pages.alloc(10, nid=1) == 1024
    assert m.alloc_pages(10) == 0               # no 4 MiB block left anywhere
    pages.free(3072)
    with m.on_cpu(1):                           # nid -1 is the running CPU's node
        local = pages.alloc(0)
    assert (local, m.netmem(ref_of(local)).nid) == (3072, 1)


@pytest.mark.parametrize(("order", "nid"), [(-1, -1), (MAX_PAGE_ORDER + 1, -1), (0, 1), (0, -2)])
def test_alloc_pages_bad_arguments(machine, order, nid):
    with pytest.raises(NetmemError) as e:
        machine.alloc_pages(order, nid)
    assert e.value.errno == errno.EINVAL
    assert_boot_state(machine)


def test_first_mib_is_reserved(request):
    m = Machine(memory="8MiB")
    pages = make_pages(request, m)
    got = pages.alloc_all(0)
    assert len(got) == len(set(got)) == m.managed_pages() == 1792
    assert (min(got), max(got)) == (256, 2047)
    assert m.nr_free_pages() == 0 and m.alloc_pages(0) == 0


# -- page references ------------------------------------------------------------------------------

def test_get_and_put_page_refcounts(machine, pages):
    pfn = pages.alloc(0)
    ref = ref_of(pfn)
    machine.get_page(ref)
    assert machine.netmem(ref).refcount == 2
    machine.put_page(ref)
    assert machine.netmem(ref).refcount == 1
    assert machine.nr_free_pages() == MANAGED_64MIB - 1
    pages.free(pfn)                             # the last reference frees it
    assert_boot_state(machine)
    with pytest.raises(NetmemError) as e:
        machine.put_page(ref)                   # now a free block's head
    assert e.value.errno == errno.EINVAL


def test_compound_tail_refs_go_to_the_head(machine, pages):
    head = ref_of(pages.alloc(2))
    tail = head + ref_of(3)
    machine.get_page(tail)
    assert (machine.netmem(head).refcount, machine.netmem(tail).refcount) == (2, 0)
    machine.put_page(tail)
    assert machine.netmem(head).refcount == 1
    assert len(machine.netmem(tail).address()) == PAGE_SIZE     # the tail's bytes to the end


@pytest.mark.parametrize("bad", [
    0,                                  # NULL
    ref_of(16384),                      # beyond the machine
    3,                                  # a net_iov ref
    ref_of(1),                          # reserved (the first 1 MiB)
    ref_of(255),
    ref_of(256),                        # the head of a free block
    ref_of(257),                        # inside a free block: folio_get() would VM_BUG_ON
])
def test_page_calls_refuse_bad_refs(machine, bad):
    for call in (machine.get_page, machine.put_page, machine.set_pfmemalloc):
        with pytest.raises(NetmemError) as e:
            call(bad)
        assert e.value.errno == errno.EINVAL
    assert_boot_state(machine)
    assert machine.netmem(ref_of(257)).refcount == 0


def test_set_pfmemalloc(machine, pages):
    head = ref_of(pages.alloc(1))
    machine.set_pfmemalloc(head + 2)            # a tail marks the head
    assert machine.netmem(head).is_pfmemalloc
    machine.set_pfmemalloc(head, False)
    assert not machine.netmem(head).is_pfmemalloc
    machine.set_pfmemalloc(head)
    pages.free(pfn_of(head))
    assert not machine.netmem(ref_of(pages.alloc(1))).is_pfmemalloc    # freeing clears it
    with pytest.raises(NetmemError) as e:
        machine.set_pfmemalloc(ref_of(288))     # the head of the free block 288/5
    assert e.value.errno == errno.EINVAL


# -- the virtual clock ----------------------------------------------------------------------------

def test_advance_moves_the_clock(machine):
    assert machine.clock_ns == 0
    machine.advance(1.5)
    machine.advance(0)
    assert machine.clock_ns == 3 * NSEC // 2
    with pytest.raises(NetmemError) as e:
        machine.advance(-1)
    assert e.value.errno == errno.EINVAL
    assert machine.clock_ns == 3 * NSEC // 2


def test_timers_fire_in_order_at_their_time(machine):
    fired = []

    def timer(name):
        return lambda: fired.append((name, machine.clock_ns))

    machine.add_timer(2, timer("b"))
    machine.add_timer(1, timer("a"))
    machine.add_timer(2, timer("c"))            # same time: in the order they were added
    machine.add_timer(0.5, lambda: machine.add_timer(1, timer("chained")))
    machine.add_timer(9, timer("late"))
    assert machine.pending_timers == 5
    machine.advance(5)
    assert fired == [("a", NSEC), ("chained", 3 * NSEC // 2), ("b", 2 * NSEC), ("c", 2 * NSEC)]
    assert (machine.clock_ns, machine.pending_timers) == (5 * NSEC, 1)
    assert machine.quiesce() == 4.0
    assert fired[-1] == ("late", 9 * NSEC)
    assert (machine.pending_timers, machine.quiesce()) == (0, 0.0)


def test_timers_never_move_the_clock_back(machine):
    machine.advance(5)
    seen = []
    with pytest.raises(NetmemError) as e:
        machine.add_timer(-1, lambda: seen.append(machine.clock_ns))
    assert e.value.errno == errno.EINVAL
    machine.advance(0)
    assert seen == []


def test_quiesce_stops_after_max_seconds(machine):
    ticks = []
    running = [True]

    def tick():
        ticks.append(machine.clock_ns // NSEC)
        if running[0]:
            machine.add_timer(1, tick)

    machine.add_timer(1, tick)
    assert machine.quiesce(max_seconds=10) == 10.0
    assert ticks == list(range(1, 11))
    assert machine.pending_timers == 1
    running[0] = False
    assert machine.quiesce() == 1.0
    assert machine.pending_timers == 0


# -- leak_report(): pending deferred work is no leak ---------------------------------------------

def test_leak_report_tells_a_pending_release_retry_from_a_leak(machine, make_pool):
    """A destroyed pool whose last buffer came back (to its ring) waits for its release retry:
    the report says deferred work is pending and which lines may clear; quiesce() clears them."""
    pool = make_pool()
    ref = pool.alloc_netmem()
    pool.destroy()
    machine.advance(0.25)
    pool.put_netmem(ref)                    # into the ring, which the retry scrubs
    may_clear = " (may clear on m.quiesce())"
    assert machine.leak_report() == [
        ("pending deferred work: 1 timer(s) (next at +750 ms: page_pool_release_retry() of "
         "page_pool 1): call m.quiesce() before judging leaks"),
        "page_pool 1 destroyed, waiting: inflight 1 (cache 0, ring 1)" + may_clear,
        "1 pages missing from the buddy allocator (page_pool buffers: 1 ring)" + may_clear]
    machine.quiesce()
    assert machine.leak_report() == []


def test_leak_report_of_a_held_buffer_is_a_leak_whatever_is_pending(machine, make_pool):
    """A buffer still held keeps its destroyed pool waiting however long the retries run: the
    lines are leaks, with no call for quiesce()."""
    pool = make_pool()
    ref = pool.alloc_netmem()
    pool.destroy()
    machine.add_timer(5, lambda: None, "an unrelated timer")
    report = ["page_pool 1 destroyed, waiting: inflight 1 (cache 0, ring 0)",
              "1 pages missing from the buddy allocator (page_pool buffers: 1 owned)"]
    assert machine.leak_report() == report
    machine.quiesce()
    assert (machine.leak_report(), machine.pending_timers) == (report, 1)
    pool.put_netmem(ref)


# -- execution context ----------------------------------------------------------------------------

def test_on_cpu_context(machine):
    assert (machine.current_cpu, machine.in_softirq) == (0, False)
    with machine.on_cpu(1) as m:
        assert m is machine
        assert (machine.current_cpu, machine.in_softirq) == (1, True)
        with machine.on_cpu(0, softirq=False):
            assert (machine.current_cpu, machine.in_softirq) == (0, False)
        assert (machine.current_cpu, machine.in_softirq) == (1, True)
    assert (machine.current_cpu, machine.in_softirq) == (0, False)
    with pytest.raises(RuntimeError), machine.on_cpu(1):
        raise RuntimeError("leaves the block")
    assert (machine.current_cpu, machine.in_softirq) == (0, False)
    for cpu in (-1, 2):
        with pytest.raises(NetmemError) as e, machine.on_cpu(cpu):
            pass
        assert e.value.errno == errno.EINVAL


# -- isolation ------------------------------------------------------------------------------------

def test_two_machines_share_nothing():
    a, b = Machine(memory="64MiB"), Machine(memory="64MiB")
    ref = a.alloc_pages(3)
    assert b.free_area() == BOOT_64MIB and a.free_area() != BOOT_64MIB
    assert b.netmem(ref).refcount == 0 and b.netmem(ref).order == 0
    a.advance(7)
    a.add_timer(1, lambda: None)
    assert (b.clock_ns, b.pending_timers) == (0, 0)
    a.trace.enable("page_pool:*")
    pa = page_pool_create(a, PagePoolParams())
    pb = page_pool_create(b, PagePoolParams())
    assert (pa.id, pb.id) == (1, 1)
    pa.put_netmem(pa.alloc_netmem())
    assert (pb.stats, b.nr_free_pages()) == (dict.fromkeys(pb.stats, 0), MANAGED_64MIB)
    assert b.trace.enabled == [] and b.trace.events == []
    assert (Napi(a).napi_id, Napi(b).napi_id) == (MIN_NAPI_ID, MIN_NAPI_ID)
    assert (NetIovArea(a, 4).netmem(0), NetIovArea(b, 4).netmem(0)) == (3, 3)
    pa.destroy()
    assert b.page_pools == [pb] and a.page_pools == []
    pb.destroy()
    a.put_page(ref)
    assert a.free_area() == BOOT_64MIB
    names = [ev["event"].split(":")[1] for ev in a.trace.events]
    assert (names.count("page_pool_state_hold"), names.count("page_pool_state_release")) == (64, 64)
    assert names[-1] == "page_pool_release" and b.trace.events == []


# -- descriptor views -----------------------------------------------------------------------------

def test_netmem_view_of_a_plain_page(machine, pages):
    pfn = pages.alloc(2)
    view = machine.netmem(ref_of(pfn))
    assert view.ref == ref_of(pfn) and not view.is_net_iov
    assert (view.pp, view.pp_ref_count, view.refcount, view.dma_addr) == (None, 0, 1, 0)
    assert (view.phys, view.order, view.nid, view.is_pfmemalloc) == (pfn << 12, 2, 0, False)
    buf = view.address()
    assert isinstance(buf, memoryview) and not buf.readonly
    assert len(buf) == PAGE_SIZE << 2
    buf[:4] = b"data"
    buf[-1] = 0xFF
    again = machine.netmem(ref_of(pfn)).address()
    assert bytes(again[:4]) == b"data" and again[-1] == 0xFF
    assert bytes(machine.netmem(ref_of(pfn + 3)).address()[-1:]) == b"\xff"


def test_netmem_view_of_pool_page_and_net_iov(machine):
    pool = page_pool_create(machine, PagePoolParams())
    ref = pool.alloc_netmem()
    view = machine.netmem(ref)
    assert (view.pp, view.pp_ref_count, view.refcount) == (pool, 1, 1)
    assert view.state == "owned"
    pool.put_netmem(ref)
    assert view.state == "ring"                 # a view reads the descriptor when asked
    pool.destroy()
    assert (view.pp, view.state, view.refcount) == (None, "none", 0)     # back in the buddy
    niov = NetIovArea(machine, 2).netmem(1)
    nv = machine.netmem(niov)
    assert nv.is_net_iov and nv.address() is None and nv.phys is None
    assert (nv.refcount, nv.pp, nv.order, nv.is_pfmemalloc) == (1, None, 0, False)


@pytest.mark.parametrize("bad", [0, ref_of(16384), (1 << 40) | 1])
def test_netmem_view_refuses_bad_refs(machine, bad):
    with pytest.raises(NetmemError) as e:
        machine.netmem(bad)
    assert e.value.errno == errno.EINVAL


@pytest.mark.skipif(not THP, reason="the kernel has no transparent huge pages")
def test_memory_asks_for_huge_pages(machine):
    # The model's memory is touched densely: it is advised MADV_HUGEPAGE (a frame's accesses
    # miss the TLB with 4 KiB pages). The page descriptors are not (a 64 GiB machine would
    # commit them whole: test_lazily_committed_memory).
    ref = machine.alloc_pages(0)
    try:
        perms, flags = vma_of(machine.netmem(ref).address())
        assert perms == "rw-p" and "hg" in flags
    finally:
        machine.put_page(ref)
