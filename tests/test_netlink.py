"""Unit tests of ``netmem.netlink``, the page-pool part of the netdev netlink family
(Documentation/netlink/specs/netdev.yaml, net/core/page_pool_user.c): ``page_pool_get`` lists
only pools whose ``params.netdev`` is set, with the attributes ``id``, ``ifindex`` (left out for
the loopback device, ifindex 1), ``napi-id``, ``inflight``, ``inflight-mem``, ``detach-time`` and
what the memory provider adds; ``page_pool_stats_get`` gives ``info`` and the eleven counters
under their dashed names. A two-line stand-in plays the net_device.
"""
import errno

import pytest

from netmem import (
    PAGE_SIZE,
    PP_FLAG_ALLOW_UNREADABLE_NETMEM,
    PP_FLAG_DMA_MAP,
    PP_FLAG_DMA_SYNC_DEV,
    NetmemError,
)
from netmem.dma import Device
from netmem.netdev import Napi
from netmem.netlink import page_pool_get, page_pool_stats_get
from netmem.provider import MemoryProvider

MIN_NAPI_ID = 8193          # include/net/busy_poll.h: NR_CPUS + 1
STATS_ATTRS = ["alloc-fast", "alloc-slow", "alloc-slow-high-order", "alloc-empty", "alloc-refill",
               "alloc-waive", "recycle-cached", "recycle-cache-full", "recycle-ring",
               "recycle-ring-full", "recycle-released-refcnt"]


class NetdevStub:
    def __init__(self, ifindex):
        self.ifindex = ifindex


class DmabufTag(MemoryProvider):
    """A provider that only reports itself (``nl_fill``); the test never allocates from it."""

    def nl_fill(self, rxq):
        assert rxq is None              # page-pool-get passes no queue
        return {"dmabuf": 7}


@pytest.fixture
def nl_pool(make_pool):
    """``nl_pool(ifindex=None, provider=None, **params)``: a pool with a stand-in netdev."""
    def make(ifindex=None, provider=None, **params):
        netdev = NetdevStub(ifindex) if ifindex is not None else None
        return make_pool(provider=provider, netdev=netdev, **params)
    return make


def test_only_pools_with_a_netdev_are_listed(machine, nl_pool):
    nl_pool()
    assert page_pool_get(machine) == []
    assert page_pool_stats_get(machine) == []
    shown = nl_pool(ifindex=3)
    assert [p["id"] for p in page_pool_get(machine)] == [shown.id] == [2]
    with pytest.raises(NetmemError) as e:
        page_pool_get(machine, id=1)
    assert e.value.errno == errno.ENOENT


def test_page_pool_get_attributes(machine, nl_pool):
    napi = Napi(machine, cpu=1)
    eth = nl_pool(ifindex=3, napi=napi)
    lo = nl_pool(ifindex=1, order=2)
    assert page_pool_get(machine) == [
        {"id": 1, "ifindex": 3, "napi-id": MIN_NAPI_ID, "inflight": 0, "inflight-mem": 0},
        {"id": 2, "inflight": 0, "inflight-mem": 0}]
    a = eth.alloc_netmem()
    b = lo.alloc_netmem()
    assert page_pool_get(machine, id=1)["inflight"] == 64       # the cache counts too
    assert page_pool_get(machine, id=1)["inflight-mem"] == 64 * PAGE_SIZE
    assert page_pool_get(machine, id=2) == {"id": 2, "inflight": 1, "inflight-mem": 4 * PAGE_SIZE}
    eth.put_netmem(a)
    lo.put_netmem(b)


def test_detach_time_after_destroy(machine, nl_pool):
    pool = nl_pool(ifindex=4, napi=Napi(machine))
    ref = pool.alloc_netmem()
    machine.advance(7)
    pool.destroy()
    # Destroy dropped the NAPI (page_pool_disable_direct_recycling()) and the cache.
    assert page_pool_get(machine) == [{"id": 1, "ifindex": 4, "inflight": 1,
                                       "inflight-mem": PAGE_SIZE, "detach-time": 7}]
    pool.put_netmem(ref)
    machine.advance(1)
    assert page_pool_get(machine) == []


def test_provider_attributes(machine, nl_pool):
    flags = PP_FLAG_DMA_MAP | PP_FLAG_DMA_SYNC_DEV | PP_FLAG_ALLOW_UNREADABLE_NETMEM
    nl_pool(ifindex=5, provider=DmabufTag(), flags=flags, dev=Device(machine), max_len=PAGE_SIZE)
    assert page_pool_get(machine) == [{"id": 1, "ifindex": 5, "inflight": 0, "inflight-mem": 0,
                                       "dmabuf": 7}]


def test_page_pool_stats_get(machine, nl_pool):
    eth = nl_pool(ifindex=3)
    lo = nl_pool(ifindex=1)
    ref = eth.alloc_netmem()
    eth.recycle_direct(ref)
    assert eth.alloc_netmem() == ref
    eth.put_netmem(ref)
    stats = page_pool_stats_get(machine)
    assert [s["info"] for s in stats] == [{"id": 1, "ifindex": 3}, {"id": 2}]
    assert all(list(s) == ["info", *STATS_ATTRS] for s in stats)
    assert {k: v for k, v in stats[0].items() if k != "info" and v} == {
        "alloc-fast": 1, "alloc-slow": 1, "alloc-empty": 1, "recycle-cached": 1,
        "recycle-ring": 1}
    assert all(stats[1][k] == 0 for k in STATS_ATTRS)
    assert [stats[0][k] for k in STATS_ATTRS] == list(eth.stats.values())
    lo.destroy()
    assert [s["info"]["id"] for s in page_pool_stats_get(machine)] == [1]
