"""Unit tests of ``netmem.netmem``, the handles of include/net/netmem.h: the ``netmem_ref``
encoding (a page is ``pfn << 1``, a net_iov ``(global index << 1) | NET_IOV``), the helpers that
take a ref (``netmem_is_net_iov``, ``netmem_to_page`` and ``netmem_to_net_iov``, which WARN and
give None for the wrong kind, and ``netmem_get_pp``/``netmem_get_dma_addr``, which read both
kinds), and ``NetIovArea`` (``struct net_iov_area``: its refs, ``net_iov_idx()`` and the owner a
net_iov's view names).
"""
import errno

import numpy as np
import pytest

from netmem import (
    NET_IOV,
    NET_IOV_DMABUF,
    NET_IOV_IOURING,
    Machine,
    NetIovArea,
    NetmemError,
    NetmemWarning,
    PagePoolParams,
    netmem_get_dma_addr,
    netmem_get_pp,
    netmem_is_net_iov,
    netmem_to_net_iov,
    netmem_to_page,
    page_pool_create,
)
from netmem.provider import net_mp_niov_set_dma_addr


@pytest.fixture
def page(machine):
    ref = machine.alloc_pages(0)
    yield ref
    machine.put_page(ref)


@pytest.fixture
def area(machine):
    return NetIovArea(machine, 4)


@pytest.fixture
def pool(machine):
    pool = page_pool_create(machine, PagePoolParams())
    yield pool
    pool.destroy()


# -- the encoding ---------------------------------------------------------------------------------

def test_page_ref_is_pfn_shifted(machine, page):
    assert NET_IOV == 1
    assert page == 256 << 1                     # the first pfn after the reserved 1 MiB
    assert not netmem_is_net_iov(page)
    assert machine.netmem(page).phys == (page >> 1) << 12


def test_net_iov_ref_is_index_shifted_with_bit0(machine):
    first = NetIovArea(machine, 3)
    second = NetIovArea(machine, 2)
    # Global index 0 stays unused (ref 1 would read as NULL | NET_IOV).
    assert [first.netmem(i) for i in range(3)] == [(1 << 1) | 1, (2 << 1) | 1, (3 << 1) | 1]
    assert [second.netmem(i) for i in range(2)] == [(4 << 1) | 1, (5 << 1) | 1]
    assert all(netmem_is_net_iov(r) for r in (3, 5, 7, 9, 11))


@pytest.mark.parametrize(("ref", "expected"), [(0, False), (2, False), (3, True), (1 << 41, False),
                                               ((1 << 41) | 1, True)])
def test_netmem_is_net_iov_reads_bit0(ref, expected):
    assert netmem_is_net_iov(ref) is expected


# -- helpers that take a ref ----------------------------------------------------------------------

def test_netmem_to_page(machine, page, area):
    view = netmem_to_page(machine, page)
    assert (view.ref, view.is_net_iov, view.refcount) == (page, False, 1)
    with pytest.warns(NetmemWarning, match=r"netmem_to_page\(\): WARN_ON_ONCE"):
        assert netmem_to_page(machine, area.netmem(0)) is None


def test_netmem_to_net_iov(machine, page, area):
    niov = area.netmem(2)
    view = netmem_to_net_iov(machine, niov)
    assert (view.ref, view.is_net_iov, view.refcount, view.owner) == (niov, True, 1, area)
    with pytest.warns(NetmemWarning, match=r"netmem_to_net_iov\(\).*is a page"):
        assert netmem_to_net_iov(machine, page) is None


def test_netmem_get_pp_reads_both_kinds(machine, page, pool, area):
    ref = pool.alloc_netmem()
    assert netmem_get_pp(machine, ref) is pool
    assert netmem_get_pp(machine, page) is None
    assert netmem_get_pp(machine, area.netmem(0)) is None
    pool.put_netmem(ref)


def test_netmem_get_dma_addr_reads_both_kinds(machine, page, area):
    niov = area.netmem(1)
    assert netmem_get_dma_addr(machine, niov) == 0
    net_mp_niov_set_dma_addr(machine, niov, 0x7000_0000)
    assert netmem_get_dma_addr(machine, niov) == 0x7000_0000
    assert netmem_get_dma_addr(machine, page) == 0
    with pytest.raises(NetmemError) as e:
        net_mp_niov_set_dma_addr(machine, page, 0x1000)
    assert e.value.errno == errno.EINVAL


NO_PAGE = [0, (1 << 30) << 1]              # NULL, and a pfn beyond the machine
NO_NET_IOV = [((1 << 20) << 1) | 1]         # a net_iov index no area reserved


@pytest.mark.parametrize(("helper", "bad"), [
    *((netmem_to_page, bad) for bad in NO_PAGE),
    *((netmem_to_net_iov, bad) for bad in NO_NET_IOV),
    *((helper, bad) for helper in (netmem_get_pp, netmem_get_dma_addr)
      for bad in NO_PAGE + NO_NET_IOV),
])
def test_helpers_refuse_refs_of_nothing(machine, helper, bad):
    with pytest.raises(NetmemError) as e:
        helper(machine, bad)
    assert e.value.errno == errno.EINVAL


# -- net_iov areas --------------------------------------------------------------------------------

def test_area_refs_and_indices(machine, area):
    niovs = area.niovs
    assert niovs.dtype == np.uint64
    assert niovs.tolist() == [area.netmem(i) for i in range(4)] == [3, 5, 7, 9]
    assert (area.num_niovs, area.type, area.base_virtual) == (4, NET_IOV_DMABUF, 0)
    for i, ref in enumerate(niovs.tolist()):
        assert area.net_iov_idx(ref) == i
        assert machine.netmem(ref).owner is area


def test_net_iov_view(machine, area):
    view = machine.netmem(area.netmem(3))
    assert view.is_net_iov and view.state == "none"
    assert (view.pp, view.pp_ref_count, view.refcount, view.dma_addr) == (None, 0, 1, 0)
    assert (view.phys, view.address(), view.is_pfmemalloc, view.order) == (None, None, False, 0)


def test_areas_have_their_own_owner_and_type(machine, area):
    io = NetIovArea(machine, 2, type=NET_IOV_IOURING, base_virtual=0x10000)
    assert (io.type, io.base_virtual, io.netmem(0)) == (NET_IOV_IOURING, 0x10000, 11)
    assert io.id != area.id
    assert machine.netmem(io.netmem(1)).owner is io
    with pytest.raises(NetmemError) as e:
        io.net_iov_idx(area.netmem(0))
    assert e.value.errno == errno.EINVAL


def test_areas_are_per_machine(machine, area):
    other = Machine(memory="64MiB")
    assert NetIovArea(other, 1).netmem(0) == area.netmem(0)
    assert other.netmem(area.netmem(0)).owner is not area


@pytest.mark.parametrize("idx", [-1, 4])
def test_area_netmem_out_of_range(area, idx):
    with pytest.raises(NetmemError) as e:
        area.netmem(idx)
    assert e.value.errno == errno.ERANGE


def test_net_iov_idx_refuses_a_page(area, page):
    with pytest.raises(NetmemError) as e:
        area.net_iov_idx(page)
    assert e.value.errno == errno.EINVAL


@pytest.mark.parametrize(("kwargs", "code"), [({"num_niovs": 0}, errno.ENOMEM),
                                             ({"num_niovs": 1 << 25}, errno.ENOMEM),
                                             ({"num_niovs": 1, "type": 7}, errno.EINVAL)])
def test_bad_areas(machine, kwargs, code):
    with pytest.raises(NetmemError) as e:
        NetIovArea(machine, **kwargs)
    assert e.value.errno == code
    assert NetIovArea(machine, 1).netmem(0) == 3     # a refused area reserves nothing
