"""The provider conformance suite fails buggy providers, naming the rule each breaks: every
provider here is ``MappedFreelistProvider`` of test_conformance (which passes) with one bug, or
the README's first provider as it was before it had memory (``FreelistProvider`` of
test_provider). Each runs the whole suite in a pytester run of its own (in process: the netmem
plugin loads itself there too), which must fail with the rule's text in its output.
"""
import errno

import numpy as np
import pytest
from test_conformance import MappedFreelistProvider
from test_provider import FreelistProvider

pytest_plugins = ["pytester"]


class ForgetsClear(MappedFreelistProvider):
    """(a) release_netmem takes the net_iov back without net_mp_niov_clear_page_pool()."""

    def release_netmem(self, pool, netmem):
        self.free.append(netmem)
        return False


class ListsTwice(MappedFreelistProvider):
    """(b) a released net_iov goes on the free list twice."""

    def release_netmem(self, pool, netmem):
        super().release_netmem(pool, netmem)
        self.free.append(netmem)
        return False

    def close(self):
        self.free = sorted(set(self.free))
        super().close()


class MemorylessStack(FreelistProvider):
    """(c) the README's StackProvider as it was, a freelist of net_iovs without memory: their
    DMA address is 0, and it refuses order > 0 (E2BIG)."""

    def __init__(self, machine, nic, num_niovs=64):
        super().__init__(machine, num_niovs)

    def init(self, pool):
        return -errno.E2BIG if pool.order else 0

    def close(self):
        self.area.free()


class MapsOffByOne(MappedFreelistProvider):
    """memory_map() says net_iov i's memory is net_iov i + 1's page: the payload read back at
    each cmsg's frag_offset is not what the NIC wrote there."""

    def memory_map(self):
        offsets, phys, lengths = super().memory_map()
        return offsets, np.roll(phys, -1), lengths


class GarbageRef(MappedFreelistProvider):
    """(d) alloc_netmems returns a ref that names no buffer of the machine."""

    def alloc_netmems(self, pool):
        return 0xdead0001


class Raises(MappedFreelistProvider):
    """(e) release_netmem raises: its bookkeeping looks up an owner it never recorded."""

    def __init__(self, machine, nic, **kw):
        super().__init__(machine, nic, **kw)
        self.owners = {}

    def release_netmem(self, pool, netmem):
        super().release_netmem(pool, netmem)
        return self.owners[netmem]


class TakesHighOrder(MappedFreelistProvider):
    """(f) init takes a pool of order 1, whose buffers its 4 KiB net_iovs cannot be."""

    def init(self, pool):
        return 0


class PutsNetIov(MappedFreelistProvider):
    """(g) release_netmem returns True for a net_iov: the core would put_page it."""

    def release_netmem(self, pool, netmem):
        super().release_netmem(pool, netmem)
        return True


class AllocStr(MappedFreelistProvider):
    """(h) alloc_netmems returns the ref as a str."""

    def alloc_netmems(self, pool):
        ref = super().alloc_netmems(pool)
        return hex(ref) if ref else 0


class AllocFloat(MappedFreelistProvider):
    """(h) alloc_netmems returns the ref as a float."""

    def alloc_netmems(self, pool):
        return float(super().alloc_netmems(pool))


class NlFillList(MappedFreelistProvider):
    """(h) nl_fill returns a list of attributes, not a dict."""

    def nl_fill(self, rxq):
        return [("io-uring", {})]


_RULE_OPS = "rule: a memory_provider_ops op returns what the contract says and never raises"
_RULE_CLEAR = "rule: release_netmem must clear the net_iov's pp info (net_mp_niov_clear_page_pool()"
_RULE_ONCE = "rule: alloc_netmems hands out a net_iov only while no pool holds it"
_RULE_DMA_ADDR = "rule: every net_iov a NIC's pool hands out carries the DMA address"
_RULE_FAULTS = "rule: the device's writes land in memory mapped for it: no IOMMU fault"
_RULE_UNMAPPED = "rule: the device writes only where a mapping is: no DMA to an address nothing"
_RULE_PAYLOAD = "rule: the payload is in the provider's memory where its cmsgs say"
_DMA_TEST = "test_suite.py::TestConformance::test_device_writes_land_in_provider_memory"
_RULE_HIGH_ORDER = "rule: init must refuse a pool of order > 0 with a negative errno"
_RULE_NO_PUT = "rule: release_netmem returns false for a net_iov"
_RULE_NL = "rule: nl_fill gives a dict of netlink attributes"

_SUITE = """
from netmem.testing import ProviderConformance
from test_conformance_negative import {name}


class TestConformance(ProviderConformance):
    refuses_high_order = {refuses_high_order}

    def make_provider(self, machine, nic):
        return {name}(machine, nic, num_niovs=96)

    def free_provider(self, provider):
        provider.close()
"""


def _run_suite(pytester, provider):
    """The conformance suite on ``provider`` in a pytester run; returns its outcome counts and
    its output."""
    pytester.makepyfile(test_suite=_SUITE.format(
        name=provider.__name__, refuses_high_order=provider in (TakesHighOrder, MemorylessStack)))
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider", "-p", "no:hypothesispytest",
                                         "-p", "no:benchmark", "--tb=short")
    return result.parseoutcomes(), result.stdout.str()


# The inner run's machines are its own, leak-checked there (many of the buggy providers leak).
@pytest.mark.netmem_leaks_ok
@pytest.mark.parametrize(("provider", "rules"), [
    (ForgetsClear, [_RULE_CLEAR]),
    (ListsTwice, [_RULE_ONCE]),
    (MemorylessStack, [_RULE_DMA_ADDR, _RULE_FAULTS, _RULE_UNMAPPED, "'address': 0",
                       f"FAILED {_DMA_TEST}[none]", f"FAILED {_DMA_TEST}[dma-iommu]"]),
    (MapsOffByOne, [_RULE_PAYLOAD]),
    (GarbageRef, [_RULE_OPS, "0xdead0001"]),
    (Raises, [_RULE_OPS, "KeyError"]),
    (TakesHighOrder, [_RULE_HIGH_ORDER]),
    (PutsNetIov, [_RULE_NO_PUT]),
    (AllocStr, [_RULE_OPS, "(AllocStr): alloc_netmems returned '0x"]),
    (AllocFloat, [_RULE_OPS, "(AllocFloat): alloc_netmems returned 3.0 (float)"]),
    (NlFillList, [_RULE_NL, "nl_fill(None) returned [('io-uring', {})]"]),
], ids=lambda v: v.__name__ if isinstance(v, type) else "")
def test_conformance_fails_a_buggy_provider(pytester, provider, rules):
    outcomes, out = _run_suite(pytester, provider)
    assert outcomes.get("failed", 0) + outcomes.get("errors", 0) > 0, out
    assert all(rule in out for rule in rules), out
