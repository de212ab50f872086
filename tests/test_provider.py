"""Unit tests of ``netmem.provider`` against include/net/page_pool/memory_provider.h and the
provider paths of net/core/page_pool.c: a small Python provider over a ``NetIovArea`` (a freelist
of net_iovs; ``alloc_netmems`` attaches one with ``net_mp_niov_set_page_pool`` and may place more
in the alloc cache, ``release_netmem`` detaches it and takes it back) drives a pool made with
``PP_FLAG_DMA_MAP | PP_FLAG_DMA_SYNC_DEV | PP_FLAG_ALLOW_UNREADABLE_NETMEM``: its init/destroy
calls, a failing init, exceptions from its ops, the recyclability of net_iovs, misbehaving
providers, the helpers' refusals and the provider registry.
"""
import errno
import re

import numpy as np
import pytest
from netmem.providers.host import HostPagesProvider

from netmem import (
    PP_FLAG_ALLOW_UNREADABLE_NETMEM,
    PP_FLAG_DMA_MAP,
    PP_FLAG_DMA_SYNC_DEV,
    Machine,
    NetIovArea,
    NetmemError,
    NetmemWarning,
    netmem_is_net_iov,
)
from netmem.dma import Device
from netmem.netdev import netif_mp_open_rxq
from netmem.netlink import page_pool_get, queue_get
from netmem.page_pool import STATS_KEYS
from netmem.provider import (
    MemoryProvider,
    available_providers,
    get_provider,
    net_mp_netmem_place_in_cache,
    net_mp_niov_clear_page_pool,
    net_mp_niov_set_page_pool,
)

MP_FLAGS = PP_FLAG_DMA_MAP | PP_FLAG_DMA_SYNC_DEV | PP_FLAG_ALLOW_UNREADABLE_NETMEM


class FreelistProvider(MemoryProvider):
    """net_iovs from a freelist: one per ``alloc_netmems`` call, plus up to ``batch`` placed in
    the alloc cache; released ones go back on the list. ``fail`` is raised by the next alloc."""

    name = "freelist"

    def __init__(self, machine, num_niovs=8, batch=0, init_err=0):
        self.machine = machine
        self.area = NetIovArea(machine, num_niovs)
        self.free = self.area.niovs.tolist()[::-1]       # net_iov 0 is handed out first
        self.batch = batch
        self.init_err = init_err
        self.fail = None
        self.calls = []

    def init(self, pool):
        self.calls.append("init")
        return self.init_err

    def destroy(self, pool):
        self.calls.append("destroy")

    def take(self, pool):
        ref = self.free.pop()
        net_mp_niov_set_page_pool(pool, ref)
        return ref

    def alloc_netmems(self, pool):
        if self.fail is not None:
            err, self.fail = self.fail, None
            raise err
        if not self.free:
            return 0
        ref = self.take(pool)
        for _ in range(min(self.batch, len(self.free))):
            net_mp_netmem_place_in_cache(pool, self.take(pool))
        return ref

    def release_netmem(self, pool, netmem):
        net_mp_niov_clear_page_pool(self.machine, netmem)
        self.free.append(netmem)
        return False

    def idx(self, refs):
        return [self.area.net_iov_idx(r) for r in refs]


class CacheAndReturn(FreelistProvider):
    """Misbehaves: returns the net_iov it has just placed in the alloc cache."""

    def alloc_netmems(self, pool):
        ref = self.take(pool)
        net_mp_netmem_place_in_cache(pool, ref)
        return ref


class StaleOwner(FreelistProvider):
    """Misbehaves: never clears the pp info on release, and hands a released net_iov out again
    without ``net_mp_niov_set_page_pool`` (so the hold count misses it)."""

    def alloc_netmems(self, pool):
        ref = self.free.pop()
        if self.machine.netmem(ref).pp is None:
            net_mp_niov_set_page_pool(pool, ref)
        return ref

    def release_netmem(self, pool, netmem):
        self.free.append(netmem)
        return False


class RaisesOnRelease(FreelistProvider):
    def release_netmem(self, pool, netmem):
        super().release_netmem(pool, netmem)
        raise RuntimeError("release failed")


def assert_stats(pool, **nonzero):
    assert pool.stats == {**dict.fromkeys(STATS_KEYS, 0), **nonzero}


@pytest.fixture
def dev(machine):
    return Device(machine, coherent=False)


@pytest.fixture
def mp_pool(make_pool, dev):
    """``mp_pool(provider, **params)``: a DMA-mapped pool over ``provider``."""
    def make(provider, m=None, **params):
        return make_pool(provider=provider, m=m,
                         **{"flags": MP_FLAGS, "dev": dev, "max_len": 4096, **params})
    return make


@pytest.fixture
def prov(machine):
    return FreelistProvider(machine)


def assert_no_leaks(machine):
    """The plugin's check, for tests that must skip it while a core bug is present."""
    machine.quiesce()
    assert machine.leak_report() == []


# -- the life of a provider pool ------------------------------------------------------------------

def test_pool_over_a_provider(machine, mp_pool, prov, dev):
    pool = mp_pool(prov)
    assert (prov.calls, pool.provider) == (["init"], prov)
    ref = pool.alloc_netmem()
    assert ref == prov.area.netmem(0) == 3
    assert_stats(pool, alloc_empty=1)                   # the provider path counts nothing else
    assert (pool.hold_cnt, pool.inflight, dev.nr_mapped) == (1, 1, 0)
    view = machine.netmem(ref)
    assert (view.pp, view.owner, view.pp_ref_count, view.state) == (pool, prov.area, 1, "owned")
    pool.put_netmem(ref)
    assert pool.alloc_netmem() == ref                   # back through the ring
    assert_stats(pool, alloc_empty=1, alloc_refill=1, recycle_ring=1)
    pool.put_netmem(ref)
    pool.destroy()
    assert (prov.calls, pool.freed, pool.release_cnt) == (["init", "destroy"], True, 1)
    assert (len(prov.free), view.pp, view.state) == (8, None, "none")


def test_provider_places_buffers_in_the_cache(mp_pool, machine):
    prov = FreelistProvider(machine, num_niovs=5, batch=3)
    pool = mp_pool(prov)
    refs = [pool.alloc_netmem() for _ in range(5)]
    # The first call hands out net_iov 0 and caches 1..3 (popped last in, first out); the
    # fifth alloc finds the cache empty and gets 4, the last one.
    assert prov.idx(refs) == [0, 3, 2, 1, 4]
    assert pool.hold_cnt == 5
    assert pool.alloc_netmem() == 0                     # the area is used up
    assert pool.alloc_netmems_bulk(2).tolist() == []
    assert_stats(pool, alloc_fast=3, alloc_empty=4)
    for ref in refs:
        pool.put_netmem(ref)
    pool.destroy()
    assert (pool.freed, sorted(prov.idx(prov.free))) == (True, [0, 1, 2, 3, 4])


def test_destroy_waits_for_net_iovs(machine, mp_pool, prov):
    pool = mp_pool(prov)
    ref = pool.alloc_netmem()
    pool.destroy()
    assert (pool.freed, pool.inflight, prov.calls) == (False, 1, ["init"])
    pool.put_netmem(ref)
    machine.advance(1)
    assert (pool.freed, prov.calls, len(prov.free)) == (True, ["init", "destroy"], 8)


def test_net_iovs_are_always_recyclable(mp_pool, prov):
    pool = mp_pool(prov)
    ref = pool.alloc_netmem()
    assert pool.machine.netmem(ref).refcount == 1       # netmem_ref_count(): 1 for a net_iov
    pool.recycle_direct(ref)
    frag, offset = pool.alloc_frag(1024)                # the frag API works on net_iovs too
    assert (frag, offset) == (ref, 0)
    pool.put_netmem(frag)
    pool.destroy()
    assert_stats(pool, alloc_empty=1, alloc_fast=1, recycle_cached=1)
    assert pool.freed


def test_net_iovs_match_every_numa_node(mp_pool):
    m = Machine(memory="16MiB", numa_nodes=2, cpus=2)
    prov = FreelistProvider(m)
    pool = mp_pool(prov, m=m, dev=Device(m), nid=1)
    ref = pool.alloc_netmem()
    pool.put_netmem(ref)
    assert pool.alloc_netmem() == ref                   # netmem_is_pref_nid(): no waive
    assert_stats(pool, alloc_empty=1, alloc_refill=1, recycle_ring=1)
    pool.put_netmem(ref)


def test_net_iov_trace_has_no_pfn(machine, mp_pool, prov):
    pool = mp_pool(prov)
    machine.trace.enable("page_pool:page_pool_state_*")
    pool.put_netmem(pool.alloc_netmem())
    pool.destroy()
    assert [(e["event"], e["netmem"], e["pfn"], e["is_net_iov"]) for e in machine.trace.events] == [
        ("page_pool:page_pool_state_hold", 3, 0, 1),
        ("page_pool:page_pool_state_release", 3, 0, 1)]


# -- init and errors ------------------------------------------------------------------------------

def test_init_failure_fails_creation(machine, mp_pool):
    prov = FreelistProvider(machine, init_err=-errno.E2BIG)
    with pytest.raises(NetmemError) as e:
        mp_pool(prov)
    assert e.value.errno == errno.E2BIG
    assert machine.dmesg == ["page_pool_init() mem-provider init failed -7",
                             "page_pool_create_percpu() gave up with errno -7"]
    assert (prov.calls, machine.page_pools) == (["init"], [])


def test_alloc_exception_propagates_and_leaves_the_pool_consistent(machine, mp_pool, prov):
    pool = mp_pool(prov)
    prov.fail = RuntimeError("dma-buf gone")
    with pytest.raises(RuntimeError, match="dma-buf gone"):
        pool.alloc_netmem()
    assert_stats(pool, alloc_empty=1)
    assert (pool.hold_cnt, pool.inflight, pool.alloc_count) == (0, 0, 0)
    pool._check_invariants()
    ref = pool.alloc_netmem()                           # the next call works
    assert prov.idx([ref]) == [0]
    pool.put_netmem(ref)


def test_alloc_exception_in_bulk_strands_no_buffer(machine, mp_pool):
    prov = FreelistProvider(machine, batch=1)
    pool = mp_pool(prov)
    pool.put_netmem(pool.alloc_netmem())                # one in the ring: the third alloc fails
    assert pool.alloc_count == 1
    prov.fail = RuntimeError("dma-buf gone")
    with pytest.raises(RuntimeError, match="dma-buf gone"):
        pool.alloc_netmems_bulk(4)
    pool.destroy()
    assert_no_leaks(machine)
    assert pool.freed


def test_release_exception_still_frees_the_pool(machine, mp_pool):
    prov = RaisesOnRelease(machine)
    pool = mp_pool(prov)
    pool.put_netmem(pool.alloc_netmem())
    with pytest.raises(RuntimeError, match="release failed"):
        pool.destroy()
    assert_no_leaks(machine)
    assert (pool.freed, prov.calls) == (True, ["init", "destroy"])


# -- misbehaving providers ------------------------------------------------------------------------

def test_provider_returning_a_cached_buffer_is_refused(machine, mp_pool):
    prov = CacheAndReturn(machine)
    pool = mp_pool(prov)
    with pytest.warns(NetmemWarning, match="memory provider of page_pool 1 returned netmem 0x3"):
        assert pool.alloc_netmem() == 0
    assert pool.alloc_count == 1
    ref = pool.alloc_netmem()                           # from the cache, once
    assert ref == 3 and pool.alloc_count == 0
    pool.recycle_direct(ref)
    pool.destroy()
    assert_no_leaks(machine)


@pytest.mark.netmem_leaks_ok(reason="deliberate: a provider that skips the pp-info calls drives "
                             "inflight negative, and the kernel never frees such a pool "
                             "(page_pool_release_retry() stops at inflight <= 0)")
def test_negative_inflight_from_a_provider_bug(machine, mp_pool):
    prov = StaleOwner(machine)
    pool = mp_pool(prov)
    ref = pool.alloc_netmem()                           # hold 1
    pool.recycle_direct(ref)
    pool.update_nid(0)                                  # released: release 1
    assert pool.alloc_netmem() == ref                   # handed out again, not held
    pool.recycle_direct(ref)
    machine.trace.enable("page_pool:page_pool_release")
    with pytest.warns(NetmemWarning, match=r"Negative\(-1\) inflight packet-pages"):
        pool.destroy()
    with pytest.warns(NetmemWarning, match=r"Negative\(-1\) inflight packet-pages"):
        machine.advance(1)                              # one retry, and no more
    assert (pool.hold_cnt, pool.release_cnt, pool.inflight) == (1, 2, 0)
    assert [(e["inflight"], e["hold"], e["release"], e["cnt"]) for e in machine.trace.events] == [
        (-1, 1, 2, 1), (-1, 1, 2, 2)]
    assert (pool.freed, machine.page_pools, machine.pending_timers) == (False, [pool], 0)


# -- what the ops return: each must return what its C type allows ---------------------------------

class Returns(FreelistProvider):
    """Does each op's work, then returns ``ret[op]`` where the test set one (``alloc_netmems``
    then takes nothing: the wrong value is all it gives)."""

    def __init__(self, machine, num_niovs=8, **ret):
        super().__init__(machine, num_niovs)
        self.ret = ret

    def alloc_netmems(self, pool):
        return self.ret["alloc_netmems"] if "alloc_netmems" in self.ret else \
            super().alloc_netmems(pool)

    def release_netmem(self, pool, netmem):
        put = super().release_netmem(pool, netmem)
        return self.ret.get("release_netmem", put)

    def init(self, pool):
        return self.ret.get("init", super().init(pool))

    def destroy(self, pool):
        super().destroy(pool)
        return self.ret.get("destroy")

    def nl_fill(self, rxq):
        return self.ret.get("nl_fill", {})

    def uninstall(self, rxq):
        return self.ret.get("uninstall")


def must(op, ret, due):
    """The error's message, as a regex."""
    return re.escape(f"memory provider 'freelist' (Returns): {op} returned {ret}: it must return "
                     f"{due}")


ALLOC_DUE = "a netmem_ref (int) of this machine, or 0"


@pytest.mark.parametrize("ret, shown", [
    ("x", "'x' (str)"), (2.0, "2.0 (float)"), (None, "None (NoneType)"), (True, "True (bool)"),
    (-3, "-3 (int)"), (1 << 64, "0x10000000000000000 (int)"),
    ((1 << 40) | 1, "0x10000000001 (int)"),             # a net_iov index the machine has not
    (1 << 40, "0x10000000000 (int)"),                   # a pfn beyond its memory
])
def test_alloc_netmems_wrong_return_is_einval(machine, mp_pool, ret, shown):
    prov = Returns(machine, alloc_netmems=ret)
    pool = mp_pool(prov)
    with pytest.raises(NetmemError, match=must("alloc_netmems", shown, ALLOC_DUE)) as e:
        pool.alloc_netmem()
    assert e.value.errno == errno.EINVAL
    assert_stats(pool, alloc_empty=1)                   # a failed allocation, nothing held
    assert (pool.hold_cnt, pool.inflight, pool.alloc_count) == (0, 0, 0)
    with pytest.raises(NetmemError, match=must("alloc_netmems", shown, ALLOC_DUE)):
        pool.alloc_netmems_bulk(2)
    del prov.ret["alloc_netmems"]
    pool.put_netmem(pool.alloc_netmem())                # the pool works on


def test_alloc_netmems_may_return_a_numpy_ref(machine, mp_pool):
    prov = Returns(machine)
    pool = mp_pool(prov)
    prov.ret["alloc_netmems"] = np.uint64(prov.take(pool))
    ref = pool.alloc_netmem()
    assert ref == prov.area.netmem(0) and type(ref) is int
    pool.put_netmem(ref)


@pytest.mark.parametrize("ret, shown", [
    (None, "None (NoneType)"), (2, "0x2 (int)"), (-1, "-1 (int)"), ("False", "'False' (str)"),
    (1.0, "1.0 (float)"), (np.int64(2), "np.int64(2) (int64)"),
])
def test_release_netmem_wrong_return_is_einval(machine, mp_pool, ret, shown):
    prov = Returns(machine, release_netmem=ret)
    pool = mp_pool(prov)
    pool.put_netmem(pool.alloc_netmem())
    with pytest.raises(NetmemError, match=must("release_netmem", shown, "a bool (True: the core "
                                               "put_page()s the buffer)")) as e:
        pool.destroy()                                  # the release happens here
    assert e.value.errno == errno.EINVAL
    assert (pool.freed, prov.calls, len(prov.free)) == (True, ["init", "destroy"], 8)


@pytest.mark.parametrize("ret", [False, 0, 1 - 1, np.False_, np.uint8(0)])
def test_release_netmem_returns_a_bool(machine, mp_pool, ret):
    pool = mp_pool(Returns(machine, release_netmem=ret))
    pool.put_netmem(pool.alloc_netmem())
    pool.destroy()
    assert pool.freed


@pytest.mark.parametrize("ret, shown", [
    (1, "0x1 (int)"), (None, "None (NoneType)"), ("0", "'0' (str)"), (-22.0, "-22.0 (float)"),
    (False, "False (bool)"),
])
def test_init_wrong_return_is_einval(machine, mp_pool, ret, shown):
    prov = Returns(machine, init=ret)
    with pytest.raises(NetmemError, match=must("init", shown, "0 or a negative errno (int)")) as e:
        mp_pool(prov)
    assert e.value.errno == errno.EINVAL
    assert (prov.calls, machine.page_pools) == (["init"], [])
    assert machine.dmesg == ["page_pool_create_percpu() gave up with errno -22"]


def test_init_may_return_a_numpy_errno(machine, mp_pool):
    with pytest.raises(NetmemError) as e:
        mp_pool(Returns(machine, init=np.int32(-errno.E2BIG)))
    assert e.value.errno == errno.E2BIG


def test_destroy_returning_a_value_is_einval_once_the_pool_is_freed(machine, mp_pool):
    prov = Returns(machine, destroy=-errno.EBUSY)
    pool = mp_pool(prov)
    with pytest.raises(NetmemError, match=must("destroy", "-16 (int)", "nothing (None): the op is "
                                               "void")) as e:
        pool.destroy()
    assert e.value.errno == errno.EINVAL
    assert (pool.freed, machine.page_pools, prov.calls) == (True, [], ["init", "destroy"])


def test_destroy_exception_still_frees_the_pool(machine, mp_pool):
    class RaisesOnDestroy(FreelistProvider):
        def destroy(self, pool):
            raise RuntimeError("binding gone")

    pool = mp_pool(RaisesOnDestroy(machine))
    with pytest.raises(RuntimeError, match="binding gone"):
        pool.destroy()
    assert (pool.freed, machine.page_pools) == (True, [])


class NetdevStub:
    ifindex = 3


def test_destroy_runs_after_the_pool_is_unlisted(machine, mp_pool):
    """``__page_pool_destroy()`` calls ``page_pool_unlist()`` before ``page_pool_uninit()``,
    whose last step is ``mp_ops->destroy``: the provider's destroy sees the pool gone from the
    machine's list, from ``page_pool_by_id()`` and from page-pool-get."""
    class Records(FreelistProvider):
        def destroy(self, pool):
            super().destroy(pool)
            self.seen = (pool in machine.page_pools, machine.page_pool_by_id(pool.id),
                         [r["id"] for r in page_pool_get(machine)])

    prov = Records(machine)
    pool = mp_pool(prov, netdev=NetdevStub())
    assert [r["id"] for r in page_pool_get(machine)] == [pool.id]
    ref = pool.alloc_netmem()
    pool.destroy()                                      # one net_iov out: the pool waits
    assert (pool.freed, machine.page_pool_by_id(pool.id)) == (False, pool)
    assert page_pool_get(machine, pool.id)["inflight"] == 1
    assert any(f"page_pool {pool.id} destroyed, waiting" in line
               for line in machine.leak_report())
    pool.put_netmem(ref)
    machine.advance(1)                                  # page_pool_release_retry()
    assert (pool.freed, prov.calls) == (True, ["init", "destroy"])
    assert prov.seen == (False, None, [])
    assert (page_pool_get(machine), machine.leak_report()) == ([], [])


@pytest.mark.parametrize("ret, shown", [
    (None, "None (NoneType)"), ([("dmabuf", 7)], "[('dmabuf', 7)] (list)"),
    ({7: 1}, "{7: 1} (dict)"),
])
def test_nl_fill_wrong_return_is_einval(machine, mp_pool, ret, shown):
    mp_pool(Returns(machine, nl_fill=ret), netdev=NetdevStub())
    with pytest.raises(NetmemError, match=must("nl_fill", shown, "a dict of netlink attribute "
                                               "name (str) to value")) as e:
        page_pool_get(machine)
    assert e.value.errno == errno.EINVAL


def test_queue_get_checks_nl_fill_and_unregister_uninstall(machine, make_nic):
    nic = make_nic(hds=True)
    prov = Returns(machine, 2048, nl_fill="dmabuf 7", uninstall=True)  # a whole RX ring's worth
    netif_mp_open_rxq(nic, 0, prov)
    with pytest.raises(NetmemError, match=must("nl_fill", "'dmabuf 7' (str)", "a dict")):
        queue_get(machine, nic.ifindex)
    with pytest.raises(NetmemError, match=must("uninstall", "True (bool)", "nothing")) as e:
        nic.unregister()
    assert e.value.errno == errno.EINVAL
    assert (nic.registered, machine.netdevs) == (False, {})     # unregistered all the same


# -- the helpers and the registry -----------------------------------------------------------------

def test_helpers_refuse_misuse(machine, mp_pool, prov):
    pool = mp_pool(prov)
    page = machine.alloc_pages(0)
    niov = prov.area.netmem(7)
    checks = [
        (lambda: net_mp_niov_set_page_pool(pool, page), errno.EINVAL),
        (lambda: net_mp_netmem_place_in_cache(pool, niov), errno.EINVAL),    # not attached
        (lambda: net_mp_niov_clear_page_pool(machine, page), errno.EINVAL),
        (lambda: net_mp_niov_set_page_pool(pool, 0), errno.EINVAL),
    ]
    for call, code in checks:
        with pytest.raises(NetmemError) as e:
            call()
        assert e.value.errno == code
    net_mp_niov_set_page_pool(pool, niov)
    with pytest.raises(NetmemError) as e:
        net_mp_niov_set_page_pool(pool, niov)
    assert e.value.errno == errno.EEXIST
    net_mp_netmem_place_in_cache(pool, niov)
    assert (pool.hold_cnt, pool.alloc_count) == (1, 1)
    machine.put_page(page)


def test_a_pool_without_allow_unreadable_ignores_the_provider(machine, mp_pool, prov):
    """page_pool_init() reads the queue's mp_params only under PP_FLAG_ALLOW_UNREADABLE_NETMEM:
    any other pool is made, on host pages, and the provider is never called (audit finding 9:
    the model used to refuse it with EINVAL)."""
    pool = mp_pool(prov, flags=PP_FLAG_DMA_MAP | PP_FLAG_DMA_SYNC_DEV)
    assert pool.provider is None and machine.page_pools == [pool]
    ref = pool.alloc_netmem()
    assert not netmem_is_net_iov(ref)
    pool.put_netmem(ref)
    assert (prov.calls, machine.dmesg) == ([], [])


def test_provider_must_be_a_memory_provider(machine, mp_pool):
    with pytest.raises(NetmemError) as e:
        mp_pool(object())
    assert e.value.errno == errno.EINVAL


def test_registry():
    assert "host" in available_providers()
    assert get_provider("host") is HostPagesProvider
    with pytest.raises(NetmemError) as e:
        get_provider("no-such-provider")
    assert e.value.errno == errno.EOPNOTSUPP


@pytest.mark.parametrize("flags", [0, PP_FLAG_ALLOW_UNREADABLE_NETMEM])
def test_host_provider_is_no_provider(machine, mp_pool, flags):
    host = mp_pool(HostPagesProvider(), flags=flags, dev=None)
    plain = mp_pool(None, flags=flags, dev=None)
    assert (host.provider, plain.provider) == (None, None)
    got = [host.alloc_netmem(), plain.alloc_netmem()]
    assert got == [319 << 1, 383 << 1]                  # both from the buddy allocator
    assert host.stats == plain.stats
    host.put_netmem(got[0])
    plain.put_netmem(got[1])


class ForgetsClearProvider(FreelistProvider):
    """Takes net_iovs back without net_mp_niov_clear_page_pool(): they keep a stale pp."""

    def release_netmem(self, pool, netmem):
        self.free.append(netmem)
        return False


def test_a_stale_pp_reads_its_old_pool_after_the_pool_object_is_gone(machine, dev):
    """A net_iov whose provider never cleared its pp info points at a pool whose memory is
    freed once the pool object is collected: the view reads the old pool's id through the
    machine's table, never through the freed pointer, and ``pp`` is None."""
    import gc

    from netmem.page_pool import PagePoolParams, page_pool_create
    prov = ForgetsClearProvider(machine)
    pool = page_pool_create(machine, PagePoolParams(flags=MP_FLAGS, dev=dev, max_len=4096),
                            prov)
    ref, pid = pool.alloc_netmem(), pool.id
    pool.put_netmem(ref)
    pool.destroy()
    machine.quiesce()
    del pool
    gc.collect()
    view = machine.netmem(ref)
    assert (view.pp_id, view.pp) == (pid, None)
