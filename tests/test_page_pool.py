"""Unit tests of ``netmem.page_pool`` against net/core/page_pool.c and
include/net/page_pool/helpers.h, with exact counters for scripted sequences on a fresh 64 MiB
machine (whose first slow-path bulk is pfns 256..319, so the first buffer handed out is pfn 319):
``page_pool_init()``'s checks and errno, the ring size, the alloc paths and their six counters,
the five recycle counters, NAPI-local direct recycling (``page_pool_napi_local()``), the bulk put
mixing pools, ``alloc_netmems_bulk``, the frag API and ``page_pool_alloc_netmem()``, the DMA
mapping, syncs and scrub, destroy with its deferred retries and stalled-shutdown warnings,
refusals of bad input that change nothing, the shared stats of system pools, ``update_nid`` and
the page_pool tracepoints.
"""
import contextlib
import errno
import re

import numpy as np
import pytest

from netmem import (
    DMA_BIDIRECTIONAL,
    DMA_NONE,
    DMA_TO_DEVICE,
    PAGE_SIZE,
    PP_FLAG_ALL,
    PP_FLAG_ALLOW_UNREADABLE_NETMEM,
    PP_FLAG_DMA_MAP,
    PP_FLAG_DMA_SYNC_DEV,
    PP_FLAG_SYSTEM_POOL,
    Machine,
    NetmemError,
    NetmemWarning,
    PagePoolParams,
    page_pool_create,
    page_pool_create_percpu,
    page_pool_put_netmem_bulk,
)
from netmem.dma import Device
from netmem.netdev import Napi
from netmem.page_pool import STATS_KEYS
from netmem.provider import MemoryProvider

BIAS_MAX = (2**63 - 1) >> 1         # net/core/page_pool.c: LONG_MAX >> 1
DMA_SYNC = PP_FLAG_DMA_MAP | PP_FLAG_DMA_SYNC_DEV
NSEC = 1_000_000_000


def ref_of(pfn):
    return pfn << 1


def refs_of(*pfns):
    return [ref_of(p) for p in pfns]


def assert_stats(pool, **nonzero):
    """The eleven counters: those named have the given values, every other one is 0."""
    assert pool.stats == {**dict.fromkeys(STATS_KEYS, 0), **nonzero}


def put_all(machine, refs):
    page_pool_put_netmem_bulk(machine, np.asarray(refs, dtype=np.uint64))


def einval(msg):
    """A ``pytest.raises`` match for exactly ``NetmemError(EINVAL, msg)``."""
    return r"^\[Errno 22\] " + re.escape(msg) + "$"


def state(machine, pools):
    """Everything a refused call must leave as it was."""
    return (machine.nr_free_pages(), machine.free_area(),
            [(p.stats, p.hold_cnt, p.release_cnt, p.alloc_count, p.ring_count, p.inflight)
             for p in pools])


class NetdevStub:
    """The one attribute of a net_device a page_pool reads here."""

    def __init__(self, ifindex):
        self.ifindex = ifindex


class NeverCalled(MemoryProvider):
    """A provider whose ops must not run (the pool is refused first)."""

    name = "never"

    def init(self, pool):
        raise AssertionError("init must not run")




@pytest.fixture
def pool(make_pool):
    return make_pool()


@pytest.fixture
def dev(machine):
    return Device(machine, coherent=False)


def numa_machine():
    return Machine(memory="16MiB", numa_nodes=2, cpus=2)


# -- page_pool_init() -----------------------------------------------------------------------------

@pytest.mark.parametrize(("params", "code"), [
    ({"flags": PP_FLAG_ALL + 1}, errno.EINVAL),
    ({"flags": 1 << 31}, errno.EINVAL),
    ({"flags": PP_FLAG_DMA_MAP, "dma_dir": DMA_TO_DEVICE}, errno.EINVAL),
    ({"flags": PP_FLAG_DMA_MAP, "dma_dir": DMA_NONE}, errno.EINVAL),
    ({"flags": PP_FLAG_DMA_SYNC_DEV, "max_len": PAGE_SIZE}, errno.EINVAL),
    ({"flags": DMA_SYNC, "max_len": 0}, errno.EINVAL),
    ({"order": 11}, errno.EINVAL),
    ({"nid": 1}, errno.EINVAL),
])
def test_create_refusals(machine, dev, params, code):
    with pytest.raises(NetmemError) as e:
        page_pool_create(machine, PagePoolParams(dev=dev, **params))
    assert e.value.errno == code
    assert machine.dmesg == [f"page_pool_create_percpu() gave up with errno -{code}"]
    assert machine.page_pools == []


@pytest.mark.parametrize(("field", "value", "check"), [
    ("order", -1, "params.order -1 is negative"),
    ("pool_size", -1, "params.pool_size -1 is negative"),
    ("pool_size", 1 << 32, "params.pool_size 4294967296 does not fit an unsigned int"),
    ("max_len", -4096, "params.max_len -4096 is negative"),
    ("offset", -64, "params.offset -64 is negative"),
    ("offset", 1 << 32, "params.offset 4294967296 does not fit an unsigned int"),
    ("flags", -1, "params.flags -1 is negative"),
    ("nid", 1 << 31, "params.nid 2147483648 does not fit an int"),
    ("nid", -(1 << 31) - 1, "params.nid -2147483649 is below the int range"),
    ("dma_dir", 1 << 40, "params.dma_dir 1099511627776 does not fit an int"),
    ("queue_idx", -1, "params.queue_idx -1 is negative"),
    ("pool_size", 256.0, "params.pool_size 256.0 is not an integer"),
    ("order", "0", "params.order '0' is not an integer"),
])
def test_create_refuses_params_outside_their_c_type(machine, field, value, check):
    """Each integer field of struct page_pool_params is checked against its C type: EINVAL
    naming the field, where Cython's conversion raised OverflowError or TypeError."""
    with pytest.raises(NetmemError, match=einval(f"page_pool_init: {check}")) as e:
        page_pool_create(machine, PagePoolParams(**{field: value}))
    assert e.value.errno == errno.EINVAL
    assert machine.dmesg == ["page_pool_create_percpu() gave up with errno -22"]
    assert machine.page_pools == []


@pytest.mark.parametrize(("cpuid", "check"), [(1 << 31, "cpuid 2147483648 does not fit an int"),
                                              (-5, "no CPU -5")])
def test_create_percpu_refuses_a_cpuid_outside_int(machine, cpuid, check):
    with pytest.raises(NetmemError, match=einval(f"page_pool_create_percpu: {check}")) as e:
        page_pool_create_percpu(machine, PagePoolParams(), cpuid)
    assert e.value.errno == errno.EINVAL
    assert machine.page_pools == []


@pytest.mark.parametrize("flags", [PP_FLAG_ALLOW_UNREADABLE_NETMEM,
                                   PP_FLAG_ALLOW_UNREADABLE_NETMEM | PP_FLAG_DMA_MAP])
def test_provider_needs_dma_map_and_sync(machine, dev, flags):
    with pytest.raises(NetmemError) as e:
        page_pool_create(machine, PagePoolParams(flags=flags, dev=dev), provider=NeverCalled())
    assert e.value.errno == errno.EOPNOTSUPP
    assert machine.dmesg == ["page_pool_create_percpu() gave up with errno -95"]
    assert machine.page_pools == []


def test_create_percpu_cpuid(machine, make_pool):
    assert make_pool().cpuid == -1
    assert make_pool(cpuid=1).cpuid == 1
    with pytest.raises(NetmemError) as e:
        make_pool(cpuid=2)
    assert e.value.errno == errno.EINVAL
    assert [p.id for p in machine.page_pools] == [1, 2]


def test_pool_ids_are_cyclic(machine, make_pool):
    first, second, _ = make_pool(), make_pool(), make_pool()
    second.destroy()
    assert make_pool().id == 4                  # xa_alloc_cyclic(): 2 is not taken again yet
    assert [p.id for p in machine.page_pools] == [1, 3, 4]
    assert machine.page_pool_by_id(first.id) is first and machine.page_pool_by_id(2) is None


def test_accepted_params(make_pool, dev):
    bidi = make_pool(flags=DMA_SYNC, dev=dev, dma_dir=DMA_BIDIRECTIONAL, max_len=1)
    assert (bidi.dma_map, bidi.dma_sync, bidi.user_cnt, bidi.destroy_cnt) == (True, True, 1, 0)
    big = make_pool(order=10)
    ref = big.alloc_netmem()
    assert ref == ref_of(1024)
    assert_stats(big, alloc_slow_high_order=1, alloc_empty=1)
    big.put_netmem(ref)


@pytest.mark.parametrize(("pool_size", "ring_size"), [(0, 1024), (1, 1), (10, 10),
                                                      (16384, 16384), (20000, 16384)])
def test_ring_size(make_pool, pool_size, ring_size):
    assert make_pool(pool_size=pool_size).ring_size == ring_size


@pytest.mark.parametrize(("pool_size", "n", "slow"), [(0, 1025, 17), (4, 5, 1)])
def test_ring_fills_to_its_size(machine, make_pool, pool_size, n, slow):
    pool = make_pool(pool_size=pool_size)
    refs = pool.alloc_netmems_bulk(n)
    for ref in refs.tolist():
        pool.put_netmem(ref)                    # process context: the ring
    ring = pool.ring_size
    assert_stats(pool, alloc_slow=slow, alloc_empty=slow, alloc_fast=n - slow,
                 recycle_ring=ring, recycle_ring_full=n - ring)
    assert (pool.ring_count, pool.release_cnt) == (ring, n - ring)
    assert machine.netmem(int(refs[-1])).state == "none"     # the one that did not fit


def test_ring_reuses_consumed_slots_in_batches(machine, make_pool):
    # __ptr_ring_discard_one() NULLs consumed slots 16 at a time: after 20 are consumed, slots
    # 16..19 still hold their old pointers, so a ring of 40 takes 36 of the next 64, not 40.
    pool = make_pool(pool_size=40)
    refs = pool.alloc_netmems_bulk(64).tolist()
    for ref in refs[:20]:
        pool.put_netmem(ref)
    again = pool.alloc_netmems_bulk(20).tolist()         # one refill consumes all 20
    assert again == refs[19::-1]
    for ref in refs[20:] + again:
        pool.put_netmem(ref)
    assert_stats(pool, alloc_fast=82, alloc_slow=1, alloc_empty=1, alloc_refill=1,
                 recycle_ring=56, recycle_ring_full=28)
    assert (pool.ring_count, pool.release_cnt) == (36, 28)


# -- allocation -----------------------------------------------------------------------------------

def test_alloc_fast_slow_refill_empty(machine, pool):
    a = pool.alloc_netmem()
    assert a == ref_of(319)                     # the last of the bulk 256..319
    assert_stats(pool, alloc_slow=1, alloc_empty=1)
    assert (pool.alloc_count, pool.hold_cnt, pool.inflight) == (63, 64, 64)
    b = pool.alloc_netmem()
    assert b == ref_of(318)
    pool.put_netmem(a)
    pool.put_netmem(b)
    rest = pool.alloc_netmems_bulk(62)
    assert rest.tolist() == refs_of(*range(317, 255, -1))
    assert_stats(pool, alloc_fast=63, alloc_slow=1, alloc_empty=1, recycle_ring=2)
    assert pool.alloc_netmem() == b             # refill takes a, b in ring order, pops b
    assert pool.alloc_count == 1
    assert pool.alloc_netmem() == a
    assert pool.alloc_netmem() == ref_of(383)   # ring empty again: the next bulk, 320..383
    assert_stats(pool, alloc_fast=64, alloc_slow=2, alloc_empty=2, alloc_refill=1,
                 recycle_ring=2)
    put_all(machine, [a, b, ref_of(383), *rest.tolist()])


def test_alloc_slow_high_order(machine, make_pool):
    pool = make_pool(order=2)
    refs = [pool.alloc_netmem() for _ in range(3)]
    assert refs == refs_of(256, 260, 264)       # one compound page per slow call, no bulk
    assert [machine.netmem(r).order for r in refs] == [2, 2, 2]
    assert (pool.alloc_count, pool.hold_cnt) == (0, 3)
    pool.put_netmem(refs[1])
    assert pool.alloc_netmem() == refs[1]
    assert_stats(pool, alloc_slow_high_order=3, alloc_empty=3, alloc_refill=1, recycle_ring=1)
    put_all(machine, refs)


def test_alloc_waive_on_numa_mismatch(make_pool):
    m = numa_machine()
    pool = make_pool(m=m)
    refs = pool.alloc_netmems_bulk(64).tolist()      # CPU 0: node 0, 256..319
    pool.put_netmem(refs[0])
    with m.on_cpu(1, softirq=False):                 # numa_mem_id() is 1 now
        far = pool.alloc_netmem()
    assert far == ref_of(2111)                       # the refill waived 319: node 1's bulk
    assert m.netmem(far).nid == 1
    assert m.netmem(refs[0]).state == "none"
    assert_stats(pool, alloc_fast=63, alloc_slow=2, alloc_empty=1, alloc_waive=1,
                 recycle_ring=1)
    assert (pool.hold_cnt, pool.release_cnt) == (128, 1)
    assert m.nr_free_pages(0) == 1792 - 63
    put_all(m, [far, *refs[1:]])


def test_alloc_fails_when_memory_runs_out(make_pool):
    m = Machine(memory="8MiB")                  # one 4 MiB block: 1024..2047
    pool = make_pool(m=m, order=10)
    ref = pool.alloc_netmem()
    assert ref == ref_of(1024)
    assert pool.alloc_netmem() == 0
    assert_stats(pool, alloc_slow_high_order=1, alloc_empty=2)
    assert (pool.hold_cnt, pool.inflight) == (1, 1)
    pool.put_netmem(ref)


def test_slow_path_falls_back_one_page_at_a_time(make_pool):
    # alloc_pages_bulk_node() finds node 1 empty; the fallback gives one page from node 0.
    m = numa_machine()
    hog = [m.alloc_pages(10, 1), m.alloc_pages(10, 1)]
    pool = make_pool(m=m, nid=1)
    refs = [pool.alloc_netmem() for _ in range(3)]
    assert refs == refs_of(256, 257, 258)
    assert [m.netmem(r).nid for r in refs] == [0, 0, 0]
    assert_stats(pool, alloc_slow=3, alloc_empty=3)
    assert (pool.hold_cnt, pool.alloc_count) == (3, 0)
    put_all(m, refs)
    for ref in hog:
        m.put_page(ref)


# -- recycling ------------------------------------------------------------------------------------

def test_recycle_cached_cache_full_ring(machine, pool):
    refs = pool.alloc_netmems_bulk(129)
    assert pool.alloc_count == 63               # what the third bulk left
    for ref in refs.tolist():
        pool.recycle_direct(ref)
    assert_stats(pool, alloc_fast=126, alloc_slow=3, alloc_empty=3, recycle_cached=65,
                 recycle_cache_full=64, recycle_ring=64)
    assert (pool.alloc_count, pool.ring_count, pool.inflight) == (128, 64, 192)


def test_recycle_ring_full(machine, make_pool):
    pool = make_pool(pool_size=4)
    refs = pool.alloc_netmems_bulk(5).tolist()
    for ref in refs:
        pool.put_netmem(ref, allow_direct=False)
    assert_stats(pool, alloc_fast=4, alloc_slow=1, alloc_empty=1, recycle_ring=4,
                 recycle_ring_full=1)
    assert (pool.ring_count, pool.release_cnt) == (4, 1)
    view = machine.netmem(refs[4])
    assert (view.pp, view.state, view.refcount) == (None, "none", 0)


@pytest.mark.parametrize("allow_direct", [False, True])
def test_released_refcnt_for_an_extra_page_ref(machine, pool, allow_direct):
    ref = pool.alloc_netmem()
    machine.get_page(ref)
    pool.put_netmem(ref, allow_direct=allow_direct)
    assert_stats(pool, alloc_slow=1, alloc_empty=1, recycle_released_refcnt=1)
    view = machine.netmem(ref)
    assert (view.pp, view.state, view.refcount, pool.release_cnt) == (None, "none", 1, 1)
    machine.put_page(ref)                       # the other holder's reference frees it
    assert view.refcount == 0


@pytest.mark.parametrize("allow_direct", [False, True])
def test_released_refcnt_for_pfmemalloc(machine, pool, allow_direct):
    ref = pool.alloc_netmem()
    machine.set_pfmemalloc(ref)
    free = machine.nr_free_pages()
    pool.put_netmem(ref, allow_direct=allow_direct)
    assert_stats(pool, alloc_slow=1, alloc_empty=1, recycle_released_refcnt=1)
    assert machine.nr_free_pages() == free + 1


def test_ref_netmem(machine, pool):
    ref = pool.alloc_netmem()
    pool.ref_netmem(ref)
    assert machine.netmem(ref).pp_ref_count == 2
    pool.put_netmem(ref)
    assert (machine.netmem(ref).pp_ref_count, machine.netmem(ref).state) == (1, "owned")
    assert_stats(pool, alloc_slow=1, alloc_empty=1)
    pool.put_netmem(ref)
    assert_stats(pool, alloc_slow=1, alloc_empty=1, recycle_ring=1)
    with pytest.raises(NetmemError) as e:
        pool.ref_netmem(ref)                    # in the ring, not handed out
    assert e.value.errno == errno.EINVAL


# -- NAPI-local direct recycling ------------------------------------------------------------------

def single_put(machine, pool, ref):
    pool.put_netmem(ref, allow_direct=False)


def bulk_put(machine, pool, ref):
    page_pool_put_netmem_bulk(machine, [ref])


def owned_pool(machine, make_pool, owner):
    """A pool whose consumer runs on CPU 1: by ``cpuid``, by its NAPI, or none at all."""
    if owner == "cpuid":
        return make_pool(cpuid=1)
    if owner == "napi":
        return make_pool(napi=Napi(machine, cpu=1))
    return make_pool()


@pytest.mark.parametrize("put", [single_put, bulk_put])
@pytest.mark.parametrize(("owner", "context", "where"), [
    ("cpuid", None, "recycle_ring"),
    ("cpuid", (1, True), "recycle_cached"),
    ("cpuid", (0, True), "recycle_ring"),
    ("cpuid", (1, False), "recycle_ring"),
    ("napi", None, "recycle_ring"),
    ("napi", (1, True), "recycle_cached"),
    ("napi", (0, True), "recycle_ring"),
    ("napi", (1, False), "recycle_ring"),
    ("none", (0, True), "recycle_ring"),
    ("none", (1, True), "recycle_ring"),
])
def test_napi_local_put(machine, make_pool, put, owner, context, where):
    pool = owned_pool(machine, make_pool, owner)
    ref = pool.alloc_netmem()
    with machine.on_cpu(*context) if context else contextlib.nullcontext():
        put(machine, pool, ref)
    assert_stats(pool, alloc_slow=1, alloc_empty=1, **{where: 1})


def test_napi_follows_its_list_owner(machine, make_pool):
    napi = Napi(machine, cpu=1)
    pool = make_pool(napi=napi)
    assert pool.napi is napi
    napi.list_owner = 0
    ref = pool.alloc_netmem()
    with machine.on_cpu(0):
        pool.put_netmem(ref)
    assert_stats(pool, alloc_slow=1, alloc_empty=1, recycle_cached=1)


def test_enable_and_disable_direct_recycling(machine, make_pool):
    pool = make_pool(cpuid=1)
    napi = Napi(machine, cpu=0)
    pool.enable_direct_recycling(napi)
    pool.enable_direct_recycling(napi)          # idempotent
    ref = pool.alloc_netmem()
    with machine.on_cpu(0):
        pool.put_netmem(ref)
        ref = pool.alloc_netmem()
        pool.disable_direct_recycling()
        pool.put_netmem(ref)
    assert (pool.cpuid, pool.napi) == (-1, None)
    assert_stats(pool, alloc_slow=1, alloc_empty=1, alloc_fast=1, recycle_cached=1,
                 recycle_ring=1)
    with pytest.warns(NetmemWarning, match=r"WARN_ON\(!napi \|\| pool->p.napi\)"):
        pool.enable_direct_recycling(napi)
        pool.enable_direct_recycling(Napi(machine, cpu=1))


# -- bulk put and bulk alloc ----------------------------------------------------------------------

def test_bulk_put_mixes_pools_in_chunks_of_16(machine, make_pool):
    small, big = make_pool(pool_size=4), make_pool()
    a = small.alloc_netmems_bulk(10).tolist()
    b = big.alloc_netmems_bulk(10).tolist()
    mixed = [r for pair in zip(a, b, strict=True) for r in pair]
    page_pool_put_netmem_bulk(machine, mixed)
    # Chunk 1 (8 + 8): small takes 4 and fails once, big takes 8. Chunk 2 (2 + 2): small fails
    # at once, big takes 2. ring_full counts failed chunks, not buffers.
    assert_stats(small, alloc_fast=9, alloc_slow=1, alloc_empty=1, recycle_ring=4,
                 recycle_ring_full=2)
    assert_stats(big, alloc_fast=9, alloc_slow=1, alloc_empty=1, recycle_ring=10)
    assert (small.release_cnt, small.ring_count, big.ring_count) == (6, 4, 10)
    assert [machine.netmem(r).state for r in a] == ["ring"] * 4 + ["none"] * 6


def test_bulk_put_drops_only_the_last_pp_ref(machine, pool):
    ref = pool.alloc_netmem()
    pool.ref_netmem(ref)
    page_pool_put_netmem_bulk(machine, np.array([ref, ref], dtype=np.uint64))
    assert_stats(pool, alloc_slow=1, alloc_empty=1, recycle_ring=1)


def test_bulk_put_resolves_compound_tails(machine, make_pool):
    pool = make_pool(order=1)
    head = pool.alloc_netmem()
    page_pool_put_netmem_bulk(machine, [head + ref_of(1)])     # netmem_compound_head()
    assert_stats(pool, alloc_slow_high_order=1, alloc_empty=1, recycle_ring=1)
    assert machine.netmem(head).state == "ring"


def test_alloc_netmems_bulk_without_out(pool):
    got = pool.alloc_netmems_bulk(3)
    assert got.dtype == np.uint64 and got.tolist() == refs_of(319, 318, 317)
    assert pool.alloc_netmems_bulk(0).tolist() == []
    pool.alloc_netmems_bulk(0)
    put_all(pool.machine, got)


def test_alloc_netmems_bulk_into_out(pool):
    out = np.zeros(3, dtype=np.uint64)
    assert pool.alloc_netmems_bulk(3, out) is out
    bigger = np.zeros(5, dtype=np.uint64)
    got = pool.alloc_netmems_bulk(3, bigger)
    assert np.shares_memory(got, bigger) and len(got) == 3
    assert bigger.tolist() == [*refs_of(316, 315, 314), 0, 0]
    assert_stats(pool, alloc_slow=1, alloc_empty=1, alloc_fast=5)
    put_all(pool.machine, np.concatenate([out, got]))


@pytest.mark.parametrize(("n", "out"), [
    (-1, None),
    (3, np.zeros(3, dtype=np.int64)),
    (3, np.zeros(2, dtype=np.uint64)),
    (3, np.zeros(6, dtype=np.uint64)[::2]),
    (3, np.zeros((3, 1), dtype=np.uint64)),
])
def test_alloc_netmems_bulk_refuses_bad_out(machine, pool, n, out):
    before = state(machine, [pool])
    with pytest.raises(NetmemError) as e:
        pool.alloc_netmems_bulk(n, out)
    assert e.value.errno == errno.EINVAL
    assert state(machine, [pool]) == before


def test_alloc_netmems_bulk_refuses_read_only_out(machine, pool):
    out = np.zeros(3, dtype=np.uint64)
    out.flags.writeable = False
    with pytest.raises(NetmemError) as e:
        pool.alloc_netmems_bulk(3, out)
    assert e.value.errno == errno.EINVAL
    assert_stats(pool)


# -- the frag API ---------------------------------------------------------------------------------

def test_frag_offsets_bias_and_reuse(machine, pool):
    frags = [pool.alloc_frag(1024) for _ in range(4)]
    page = ref_of(319)
    assert frags == [(page, 0), (page, 1024), (page, 2048), (page, 3072)]
    assert (pool.frag_page, pool.frag_users, pool.frag_offset) == (page, 4, 4096)
    assert machine.netmem(page).pp_ref_count == BIAS_MAX
    for i, (ref, _) in enumerate(frags, 1):
        pool.put_netmem(ref)
        assert machine.netmem(ref).pp_ref_count == BIAS_MAX - i
    assert_stats(pool, alloc_slow=1, alloc_empty=1)
    # No room for a fifth: the drain finds every frag freed and reuses the page at once.
    assert pool.alloc_frag(1024) == (page, 0)
    assert_stats(pool, alloc_slow=1, alloc_empty=1, alloc_fast=1, recycle_cached=1)
    assert (machine.netmem(page).pp_ref_count, pool.frag_users) == (BIAS_MAX, 1)
    pool.put_netmem(page)
    pool.destroy()                              # page_pool_free_frag() drains the last one
    assert (pool.freed, pool.inflight, pool.release_cnt) == (True, 0, 64)


def test_frag_drain_with_users_left(machine, pool):
    frags = [pool.alloc_frag(1000)[0] for _ in range(4)]
    for ref in frags[:3]:
        pool.put_netmem(ref)
    nxt = pool.alloc_frag(1000)                 # 4000 + 1000 > 4096: drain, one user left
    assert nxt == (ref_of(318), 0)
    assert machine.netmem(frags[3]).pp_ref_count == 1
    pool.put_netmem(frags[3])                   # the last user recycles the page
    assert_stats(pool, alloc_slow=1, alloc_empty=1, alloc_fast=1, recycle_ring=1)
    pool.put_netmem(nxt[0])


def test_frag_drain_returns_a_page_it_cannot_recycle(machine, pool):
    ref, _ = pool.alloc_frag(2048)
    pool.alloc_frag(2048)
    machine.set_pfmemalloc(ref)
    pool.put_netmem(ref)
    pool.put_netmem(ref)
    assert pool.alloc_frag(2048) == (ref_of(318), 0)    # the drained page left the pool
    assert_stats(pool, alloc_slow=1, alloc_empty=1, alloc_fast=1)
    assert (pool.release_cnt, machine.netmem(ref).state) == (1, "none")
    pool.put_netmem(ref_of(318))


def test_frag_reuse_syncs_for_the_device(machine, make_pool, dev):
    pool = make_pool(flags=DMA_SYNC, dev=dev, max_len=3000)
    ref, _ = pool.alloc_frag(4096)
    pool.put_netmem(ref)
    assert pool.alloc_frag(4096) == (ref, 0)            # drained and reused: sync(-1)
    assert pool.dma_stats["sync_for_device"] == 65
    assert pool.dma_stats["sync_for_device_bytes"] == 65 * 3000
    pool.put_netmem(ref)


@pytest.mark.parametrize(("order", "size"), [(0, PAGE_SIZE + 1), (1, 2 * PAGE_SIZE + 1)])
def test_frag_bigger_than_the_page(machine, make_pool, order, size):
    pool = make_pool(order=order)
    with pytest.warns(NetmemWarning, match=rf"WARN_ON\(size > max_size\): size {size}"):
        assert pool.alloc_frag(size) == (0, 0)
    assert_stats(pool)
    assert pool.hold_cnt == 0


@pytest.mark.parametrize("size", [1 << 31, (1 << 31) + 1])
def test_alloc_size_doubling_wraps_as_unsigned_int(pool, size):
    # page_pool_alloc_netmem(): *size << 1 wraps in an unsigned int, so the frag path WARNs.
    with pytest.warns(NetmemWarning, match=rf"WARN_ON\(size > max_size\): size {size}"):
        assert pool.alloc(size) == (0, 0, 0)
    assert_stats(pool)


def test_alloc_whole_page_or_stretched_frag(machine, pool):
    whole = pool.alloc(2049)                    # 2049 * 2 > 4096: a whole page
    assert whole == (ref_of(319), 0, PAGE_SIZE)
    assert machine.netmem(whole[0]).pp_ref_count == 1 and pool.frag_page == 0
    first = pool.alloc(1500)
    second = pool.alloc(1500)                   # 3000 + 1500 > 4096: stretched to the end
    assert (first, second) == ((ref_of(318), 0, 1500), (ref_of(318), 1500, 2596))
    assert pool.frag_offset == PAGE_SIZE
    third = pool.alloc(2048)                    # 2048 * 2 == 4096: still a frag
    assert third == (ref_of(317), 0, 2048)
    assert machine.netmem(ref_of(318)).pp_ref_count == 2
    for ref, _, _ in (whole, first, second, third):
        pool.put_netmem(ref)
    assert_stats(pool, alloc_slow=1, alloc_empty=1, alloc_fast=2, recycle_ring=2)


# -- DMA ------------------------------------------------------------------------------------------

def test_dma_map_and_sync_for_device(machine, make_pool, dev):
    pool = make_pool(flags=DMA_SYNC, dev=dev, max_len=1500, offset=64)
    ref = pool.alloc_netmem()
    view = machine.netmem(ref)
    assert view.dma_addr == view.phys == 319 << 12
    assert dev.nr_mapped == 64
    assert pool.dma_stats == {"map": 64, "unmap": 0, "sync_for_device": 64,
                              "sync_for_device_bytes": 64 * 1500, "sync_for_cpu": 0}
    pool.put_netmem(ref, dma_sync_size=100)
    pool.put_netmem(pool.alloc_netmem(), dma_sync_size=9000)   # clamped to max_len
    pool.recycle_direct(pool.alloc_netmem())                   # -1: max_len
    pool.put_full_netmem(pool.alloc_netmem())                  # -1: max_len
    assert pool.dma_stats["sync_for_device"] == 68
    assert pool.dma_stats["sync_for_device_bytes"] == 64 * 1500 + 100 + 3 * 1500
    ref = pool.alloc_netmem()
    assert pool.dma_sync_for_cpu(ref, 10, 100) == machine.netmem(ref).dma_addr + 10 + 64
    assert pool.dma_stats["sync_for_cpu"] == 1
    with pytest.raises(NetmemError) as e:
        pool.dma_sync_for_cpu(ref, 4000, 100)
    assert e.value.errno == errno.EINVAL
    pool.put_netmem(ref)


def test_dma_sync_for_cpu_refuses_a_wrapping_range(machine, make_pool, dev):
    pool = make_pool(flags=PP_FLAG_DMA_MAP, dev=dev)
    ref = pool.alloc_netmem()
    try:
        with pytest.raises(NetmemError) as e:
            pool.dma_sync_for_cpu(ref, 0xFFFF_FFF0, 0x20)
        assert e.value.errno == errno.EINVAL
        assert pool.dma_stats["sync_for_cpu"] == 0
    finally:
        pool.put_netmem(ref)


def test_coherent_device_needs_no_sync(machine, make_pool):
    coherent = Device(machine)
    pool = make_pool(flags=DMA_SYNC, dev=coherent, max_len=PAGE_SIZE)
    pool.put_netmem(pool.alloc_netmem())
    assert not coherent.dma_dev_need_sync()
    assert pool.dma_stats == {"map": 64, "unmap": 0, "sync_for_device": 0,
                              "sync_for_device_bytes": 0, "sync_for_cpu": 0}


def test_no_dma_map_no_dma(machine, pool):
    ref = pool.alloc_netmem()
    assert machine.netmem(ref).dma_addr == 0
    assert pool.dma_sync_for_cpu(ref, 0, 100) == 0
    assert pool.dma_stats["sync_for_cpu"] == 0
    pool.put_netmem(ref)


def test_dma_mask_failures_go_back_to_the_allocator(machine, make_pool):
    narrow = Device(machine, dma_mask_bits=21)              # 2 MiB: pfns below 512 only
    pool = make_pool(flags=PP_FLAG_DMA_MAP, dev=narrow)
    out = np.zeros(300, dtype=np.uint64)
    with pytest.warns(NetmemWarning, match=r"overflow \(dev_WARN_ONCE\)"):   # once per device
        got = pool.alloc_netmems_bulk(300, out)
    assert len(got) == 256 and np.shares_memory(got, out)   # 256..511; the bulk at 512 failed
    assert sorted(got.tolist()) == refs_of(*range(256, 512))
    assert (narrow.nr_mapped, narrow.nr_map_errors) == (256, 64)
    assert_stats(pool, alloc_fast=252, alloc_slow=4, alloc_empty=5)
    assert machine.nr_free_pages() == machine.managed_pages() - 256
    assert pool.hold_cnt == 256
    put_all(machine, got)
    pool.destroy()
    assert (narrow.nr_mapped, pool.dma_stats["unmap"], pool.freed) == (0, 256, True)


# -- destroy --------------------------------------------------------------------------------------

def test_destroy_with_nothing_in_flight(machine, pool):
    pool.put_netmem(pool.alloc_netmem())
    pool.destroy()
    assert (pool.freed, pool.inflight, pool.detach_time) == (True, 0, None)
    assert (pool.hold_cnt, pool.release_cnt) == (64, 64)
    assert (machine.page_pools, machine.pending_timers) == ([], 0)
    assert machine.nr_free_pages() == machine.managed_pages()


@pytest.mark.parametrize(("netdev", "warnings"), [
    (None, ["page_pool_release_retry() stalled pool shutdown: id 1, 1 inflight 60 sec",
            "page_pool_release_retry() stalled pool shutdown: id 1, 1 inflight 120 sec"]),
    (NetdevStub(ifindex=2), []),                # users can see it: no warning
])
def test_destroy_with_a_buffer_in_flight(machine, make_pool, netdev, warnings):
    pool = make_pool(netdev=netdev)
    machine.advance(5)
    ref = pool.alloc_netmem()
    pool.destroy()
    assert (pool.freed, pool.detach_time, pool.inflight, pool.destroy_cnt) == (False, 5, 1, 1)
    assert machine.page_pools == [pool] and machine.pending_timers == 1
    machine.advance(125)                        # retried every second
    assert pool.destroy_cnt == 126
    assert machine.dmesg == warnings
    pool.put_netmem(ref)                        # comes home through the ring ...
    assert (pool.freed, pool.ring_count) == (False, 1)
    machine.advance(1)                          # ... and the next retry frees the pool
    assert (pool.freed, machine.page_pools, machine.pending_timers) == (True, [], 0)
    assert machine.nr_free_pages() == machine.managed_pages()


def test_destroy_scrub_unmaps_in_flight_pages(machine, make_pool, dev):
    pool = make_pool(flags=DMA_SYNC, dev=dev, max_len=PAGE_SIZE)
    ref = pool.alloc_netmem()
    syncs = pool.dma_stats["sync_for_device"]
    pool.destroy()
    assert (dev.nr_mapped, pool.dma_stats["unmap"], pool.inflight) == (0, 64, 1)
    with machine.on_cpu(0):
        pool.put_netmem(ref)                    # no sync after the scrub turned it off
    machine.advance(1)
    assert pool.freed
    assert (dev.nr_mapped, pool.dma_stats["unmap"]) == (0, 64)
    assert pool.dma_stats["sync_for_device"] == syncs


def test_destroy_reports_a_ring_page_with_an_extra_ref(machine, pool):
    ref = pool.alloc_netmem()
    pool.put_netmem(ref)
    machine.get_page(ref)                       # a misuse: a reference to a recycled page
    pool.destroy()
    assert machine.dmesg == ["page_pool_empty_ring() page_pool refcnt 2 violation"]
    assert pool.freed
    view = machine.netmem(ref)
    assert (view.pp, view.refcount) == (None, 1)
    machine.put_page(ref)


def test_direct_recycle_after_destroy_goes_to_the_ring(machine, make_pool):
    pool = make_pool(cpuid=0)
    refs = pool.alloc_netmems_bulk(2).tolist()
    pool.destroy()
    with pytest.warns(NetmemWarning, match="direct recycle of netmem .* into destroyed"):
        pool.recycle_direct(refs[0])
    with machine.on_cpu(0):                     # destroy turned NAPI-local recycling off
        pool.put_netmem(refs[1])
    assert (pool.ring_count, pool.alloc_count) == (2, 0)
    machine.advance(1)
    assert pool.freed


def test_destroy_twice_warns(pool):
    pool.destroy()
    with pytest.warns(NetmemWarning, match="page_pool_destroy of page_pool 1 twice"):
        pool.destroy()
    assert pool.freed


def test_alloc_after_destroy_warns(machine, pool):
    ref = pool.alloc_netmem()
    pool.destroy()
    calls = [(pool.alloc_netmem, (), 0), (pool.alloc_frag, (64,), (0, 0)),
             (pool.alloc, (64,), (0, 0, 0))]
    for call, args, failed in calls:
        with pytest.warns(NetmemWarning, match="use after page_pool_destroy"):
            assert call(*args) == failed
    with pytest.warns(NetmemWarning, match="use after page_pool_destroy"):
        assert pool.alloc_netmems_bulk(4).tolist() == []
    assert (pool.hold_cnt, pool.inflight) == (64, 1)
    pool.put_netmem(ref)


# -- bad input ------------------------------------------------------------------------------------

BAD_REFS = [0, ref_of(16384), ref_of(1 << 40), (1 << 20) | 1]


def foreign_put(machine, pool, other, owned):
    with pytest.warns(NetmemWarning, match="belongs to another pool"):
        pool.put_netmem(other)


def double_put(machine, pool, other, owned):
    with pytest.warns(NetmemWarning, match=r"double put .*buffer state ring"):
        pool.put_netmem(owned[1])


def double_recycle_direct(machine, pool, other, owned):
    with pytest.warns(NetmemWarning, match=r"double put .*buffer state ring"):
        pool.recycle_direct(owned[1])


def double_bulk_put(machine, pool, other, owned):
    with pytest.warns(NetmemWarning, match="double put"):
        page_pool_put_netmem_bulk(machine, [owned[1]])


def plain_page_put(machine, pool, other, owned):
    with pytest.warns(NetmemWarning, match="not a page_pool buffer"):
        pool.put_netmem(owned[0])


def plain_page_bulk_put(machine, pool, other, owned):
    with pytest.warns(NetmemWarning, match="not a page_pool buffer"):
        page_pool_put_netmem_bulk(machine, [owned[0]])


def put_page_of_a_pool_page(machine, pool, other, owned):
    with pytest.raises(NetmemError, match="holds only its page_pool's reference") as e:
        machine.put_page(other)
    assert e.value.errno == errno.EINVAL


def ref_calls(machine, pool):
    """Every call that takes a ref, as a function of that ref."""
    return [pool.put_netmem, pool.put_full_netmem, pool.recycle_direct, pool.ref_netmem,
            lambda r: pool.dma_sync_for_cpu(r, 0, 1),
            lambda r: page_pool_put_netmem_bulk(machine, [r]), machine.netmem]


def assert_all_refuse(machine, pool, bad_refs):
    for call in ref_calls(machine, pool):
        for bad in bad_refs:
            with pytest.raises(NetmemError) as e:
                call(bad)
            assert e.value.errno == errno.EINVAL


def garbage_refs(machine, pool, other, owned):
    assert_all_refuse(machine, pool, BAD_REFS)
    with pytest.raises(NetmemError) as e:       # the array is checked before any put
        page_pool_put_netmem_bulk(machine, [other, BAD_REFS[1]])
    assert e.value.errno == errno.EINVAL


@pytest.mark.parametrize("bad", [foreign_put, double_put, double_recycle_direct, double_bulk_put,
                                 plain_page_put, plain_page_bulk_put, put_page_of_a_pool_page,
                                 garbage_refs])
def test_bad_input_changes_nothing(machine, make_pool, bad):
    pool, other_pool = make_pool(), make_pool()
    other = other_pool.alloc_netmem()
    plain = machine.alloc_pages(0)
    mine = pool.alloc_netmem()
    pool.put_netmem(mine)                       # now in the ring: a second put is a double put
    before = state(machine, [pool, other_pool])
    bad(machine, pool, other, [plain, mine])
    assert state(machine, [pool, other_pool]) == before
    assert machine.netmem(other).pp is other_pool and machine.netmem(other).state == "owned"
    other_pool.put_netmem(other)
    machine.put_page(plain)


def test_null_net_iov_ref_is_garbage(machine, pool):
    before = state(machine, [pool])
    assert_all_refuse(machine, pool, [1])
    assert state(machine, [pool]) == before


@pytest.mark.parametrize("bad", [-2, 1 << 64])
def test_refs_outside_uint64_are_einval(machine, pool, bad):
    assert_all_refuse(machine, pool, [bad])


def size_calls(pool, ref):
    """Every call of the pool's facade that takes a size, count or NUMA node, as a function of
    that value, with the name its error gives the argument."""
    return [(pool.alloc_frag, "page_pool_alloc_frag: size", "unsigned int"),
            (pool.alloc, "page_pool_alloc_netmem: size", "unsigned int"),
            (pool.alloc_netmems_bulk, "alloc_netmems_bulk: n", "int"),
            (lambda v: pool.put_netmem(ref, dma_sync_size=v),
             "page_pool_put_netmem: dma_sync_size", "unsigned int"),
            (lambda v: pool.dma_sync_for_cpu(ref, v, 1), "dma_sync_for_cpu: offset",
             "unsigned int"),
            (lambda v: pool.dma_sync_for_cpu(ref, 0, v), "dma_sync_for_cpu: size", "unsigned int"),
            (pool.update_nid, "page_pool_update_nid: new_nid", "int")]


@pytest.mark.parametrize(("kind", "value", "check"), [
    ("unsigned int", -2, "-2 is negative"),
    ("unsigned int", 1 << 32, "4294967296 does not fit an unsigned int"),
    ("int", 1 << 31, "2147483648 does not fit an int"),
    ("int", -(1 << 31) - 1, "-2147483649 is below the int range"),
    (None, 64.0, "64.0 is not an integer"),
    (None, None, "None is not an integer"),
])
def test_sizes_outside_their_c_type_are_einval(machine, make_pool, dev, kind, value, check):
    """A size the C type cannot hold is EINVAL naming the argument and the check, not
    OverflowError, and changes nothing."""
    pool = make_pool(dev=dev, flags=DMA_SYNC, max_len=PAGE_SIZE)
    ref = pool.alloc_netmem()
    before = state(machine, [pool])
    for call, what, ctype in size_calls(pool, ref):
        if kind not in (None, ctype):
            continue
        with pytest.raises(NetmemError, match=einval(f"{what} {check}")) as e:
            call(value)
        assert e.value.errno == errno.EINVAL
    assert state(machine, [pool]) == before
    pool.put_netmem(ref, dma_sync_size=np.int64(-1))    # -1, the whole buffer, as numpy says it


def test_alloc_netmems_bulk_refuses_a_negative_count(pool):
    with pytest.raises(NetmemError, match=einval("alloc_netmems_bulk: n < 0")) as e:
        pool.alloc_netmems_bulk(-1)
    assert e.value.errno == errno.EINVAL


# -- system pools, NUMA node, tracepoints ---------------------------------------------------------

def test_system_pools_share_recycle_stats(machine, make_pool):
    sys_a = make_pool(flags=PP_FLAG_SYSTEM_POOL, cpuid=0)
    sys_b = make_pool(flags=PP_FLAG_SYSTEM_POOL, cpuid=1)
    plain = make_pool()
    sys_a.put_netmem(sys_a.alloc_netmem())
    sys_b.recycle_direct(sys_b.alloc_netmem())
    shared = {"recycle_cached": 1, "recycle_ring": 1}
    assert_stats(sys_a, alloc_slow=1, alloc_empty=1, **shared)
    assert_stats(sys_b, alloc_slow=1, alloc_empty=1, **shared)
    assert_stats(plain)
    elsewhere = make_pool(m=Machine(memory="16MiB"), flags=PP_FLAG_SYSTEM_POOL)
    assert_stats(elsewhere)                     # per machine: no global state


def test_update_nid_flushes_the_cache(machine, pool):
    ref = pool.alloc_netmem()
    machine.trace.enable("page_pool:page_pool_update_nid")
    machine.advance(2)
    pool.update_nid(0)
    assert (pool.nid, pool.alloc_count, pool.release_cnt, pool.inflight) == (0, 0, 63, 1)
    assert machine.trace.events == [{"event": "page_pool:page_pool_update_nid", "ts_ns": 2 * NSEC,
                                     "cpu": 0, "queue": None, "pool": pool.id, "pool_nid": -1,
                                     "new_nid": 0}]
    with pytest.raises(NetmemError) as e:
        pool.update_nid(1)
    assert e.value.errno == errno.EINVAL
    pool.put_netmem(ref)
    assert pool.alloc_netmem() == ref           # a refill from the ring
    assert_stats(pool, alloc_slow=1, alloc_empty=1, alloc_refill=1, recycle_ring=1)
    pool.put_netmem(ref)


def test_tracepoints(machine, pool):
    machine.trace.enable("page_pool:*")
    ref = pool.alloc_netmem()
    holds = machine.trace.events
    assert [(e["event"], e["hold"], e["pfn"], e["netmem"], e["is_net_iov"]) for e in holds] == [
        ("page_pool:page_pool_state_hold", i + 1, pfn, ref_of(pfn), 0)
        for i, pfn in enumerate(range(256, 320))]
    machine.trace.clear()
    pool.put_netmem(ref)
    machine.advance(3)
    pool.destroy()                              # the cache (318 down to 256), then the ring (319)
    *releases, last = machine.trace.events
    assert [(e["release"], e["pfn"]) for e in releases] == list(
        zip(range(1, 65), [*range(318, 255, -1), 319], strict=True))
    assert {e["event"] for e in releases} == {"page_pool:page_pool_state_release"}
    assert last == {"event": "page_pool:page_pool_release", "ts_ns": 3 * NSEC, "cpu": 0,
                    "queue": None, "pool": pool.id, "inflight": 0, "hold": 64, "release": 64,
                    "cnt": 1}
    machine.trace.disable()
    assert machine.trace.enabled == []
    with pytest.raises(ValueError, match="no tracepoint"):
        machine.trace.enable("page_pool:nothing")
