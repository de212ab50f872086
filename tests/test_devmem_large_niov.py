"""Large net_iovs for devmem TCP: bind-rx's ``rx-buf-size`` (``NETDEV_A_DMABUF_RX_BUF_SIZE``) as
Bobby Eshleman's "net: devmem: allow rx-buf-size > PAGE_SIZE per dmabuf binding" (v5, July
2026, likely 7.3) has it in net/core/netdev-genl.c and net/core/devmem.c: the errno table (a
power of two of at least PAGE_SIZE, DMA segments aligned to it, the driver's
``QCFG_RX_PAGE_SIZE`` and ``bnxt_validate_qcfg()``, ``mp_dmabuf_devmem_init()``'s E2BIG), the
binding's ``niov_shift`` in every place (genpool, net_iov DMA and virtual addresses, cmsgs,
tokens), udmabuf's one scatterlist entry per hugetlb folio, and the kernel selftest
``devmem.py`` ``check_rx_large_niov``.
"""
import errno

import pytest
from devmemutil import PAGE, MiB, raises, read_devmem, rxq, setup, teardown
from rxutil import Flow, payload, receive

from netmem import (
    DMA_FROM_DEVICE,
    PP_FLAG_ALLOW_UNREADABLE_NETMEM,
    PP_FLAG_DMA_MAP,
    PP_FLAG_DMA_SYNC_DEV,
    PagePoolParams,
    page_pool_create,
)
from netmem.dmabuf import export_device_memory, udmabuf_create
from netmem.flows import ncdevmem_pattern
from netmem.genalloc import gen_pool_avail, gen_pool_size
from netmem.netdev import BNXT_MAX_RX_PAGE_SIZE
from netmem.netlink import queue_get

K16 = 16384
HUGE = 2 * MiB


def bnxt(**kw):
    """A bnxt-like NIC (buffers up to 32 KiB), MTU 9000, bound with 16 KiB net_iovs over a
    hugetlb udmabuf (as ncdevmem -b 16384 makes it)."""
    kw.setdefault("rx_buf_size", K16)
    return setup(max_rx_page_size=BNXT_MAX_RX_PAGE_SIZE, mtu=9000, size=HUGE, hugetlb=True,
                 **kw)


def unbound(d):
    """Nothing stays bound: no queue has a provider or mp_params, and once the deferred
    binding free has run no binding is left (the dma-buf only)."""
    assert all(q.mp is None and q.mp_params.rx_page_size == 0 for q in d.nic.rx_queues)
    d.m.quiesce()
    assert d.m._devmem_bindings == {} and "dmabuf" not in queue_get(d.m, d.nic.ifindex, 0)


# ---- the errno table ------------------------------------------------------------------------

@pytest.mark.parametrize("size", [0, 2048, 3 * PAGE, K16 + PAGE, 1 << 31 | 1])
def test_rx_buf_size_power_of_two_at_least_page(size):
    d = bnxt(queues=())
    e = raises(errno.EINVAL, d.nl.bind_rx, d.nic.ifindex, d.buf.fd, rxq(0), size)
    assert f"rx_buf_size {size} must be a power of 2 >= page size (4096)" in str(e)
    unbound(d)
    teardown(d)


@pytest.mark.parametrize("size", [-PAGE, 1 << 32, "16K", float(K16), True])
def test_rx_buf_size_is_a_u32(size):
    d = bnxt(queues=())
    raises(errno.EINVAL, d.nl.bind_rx, d.nic.ifindex, d.buf.fd, rxq(0), size)
    unbound(d)
    teardown(d)


def test_rx_buf_size_checked_before_the_device():
    """netdev_nl_bind_rx_doit() checks the attribute before it looks the device up."""
    d = bnxt(queues=())
    raises(errno.EINVAL, d.nl.bind_rx, 999, d.buf.fd, rxq(0), 3 * PAGE)
    raises(errno.ENODEV, d.nl.bind_rx, 999, d.buf.fd, rxq(0), K16)
    teardown(d)


def test_large_niov_needs_qcfg_rx_page_size():
    """A 4 KiB-only driver (mlx5/fbnic-like) refuses the binding's rx_page_size: EOPNOTSUPP
    from netif_mp_open_rxq(), the binding undone. 4096 asks for nothing and binds."""
    d = setup(queues=(), size=HUGE, hugetlb=True)
    raises(errno.EOPNOTSUPP, d.nl.bind_rx, d.nic.ifindex, d.buf.fd, rxq(0), K16)
    unbound(d)
    bid = d.nl.bind_rx(d.nic.ifindex, d.buf.fd, rxq(0), PAGE)
    assert d.nic.rx_queues[0].mp_params.rx_page_size == 0
    assert queue_get(d.m, d.nic.ifindex, 0)["dmabuf"] == bid
    teardown(d)


def test_large_niov_above_driver_maximum():
    """64 KiB on a driver whose maximum is 32 KiB: bnxt_validate_qcfg()'s ERANGE."""
    d = bnxt(queues=())
    raises(errno.ERANGE, d.nl.bind_rx, d.nic.ifindex, d.buf.fd, rxq(0), 4 * K16)
    unbound(d)
    teardown(d)


def test_segment_length_not_aligned():
    """Each DMA segment must be aligned to the net_iov size: 4 KiB entries that no IOMMU
    merges (the "pages" layout under dma-direct) are EINVAL."""
    d = setup(queues=(), max_rx_page_size=BNXT_MAX_RX_PAGE_SIZE, layout="pages")
    e = raises(errno.EINVAL, d.nl.bind_rx, d.nic.ifindex, d.buf.fd, rxq(0), K16)
    assert "len=4096) not aligned to niov size 16384" in str(e)
    unbound(d)
    teardown(d)


def test_segment_address_not_aligned():
    """A 16 KiB segment at an address 4 KiB past a 16 KiB boundary is EINVAL too."""
    d = setup(queues=(), max_rx_page_size=BNXT_MAX_RX_PAGE_SIZE, kind="gpu", size=PAGE)
    buf = export_device_memory(d.gpu, K16)          # first fit: right after the first page
    (phys, length), = buf.phys_ranges
    assert phys % K16 == PAGE and length == K16
    e = raises(errno.EINVAL, d.nl.bind_rx, d.nic.ifindex, buf.fd, rxq(0), K16)
    assert "not aligned to niov size 16384" in str(e)
    unbound(d)
    buf.close()
    teardown(d)


def test_devmem_init_refuses_order_mismatch():
    """mp_dmabuf_devmem_init(): a pool whose order is not niov_shift - PAGE_SHIFT is E2BIG."""
    d = bnxt()
    flags = PP_FLAG_DMA_MAP | PP_FLAG_DMA_SYNC_DEV | PP_FLAG_ALLOW_UNREADABLE_NETMEM
    for order in (0, 1, 3):
        raises(errno.E2BIG, page_pool_create, d.m, PagePoolParams(
            order=order, dev=d.nic.pcidev, dma_dir=DMA_FROM_DEVICE, flags=flags,
            max_len=PAGE << order),
            provider=d.binding.provider)
    assert d.nic.rx_queues[0].page_pool.order == 2
    teardown(d)


# ---- niov_shift everywhere ------------------------------------------------------------------

def test_udmabuf_hugetlb_one_entry_per_folio(m):
    buf = udmabuf_create(m, 3 * HUGE, hugetlb=True)
    ranges = buf.phys_ranges
    assert [n for _, n in ranges] == [HUGE] * 3 and all(p % HUGE == 0 for p, _ in ranges)
    raises(errno.EINVAL, udmabuf_create, m, HUGE + PAGE, hugetlb=True)
    raises(errno.EINVAL, udmabuf_create, m, HUGE, "pages", hugetlb=True)
    buf.close()


def test_binding_uses_niov_shift():
    """Genpool granule, net_iov count, DMA addresses and virtual addresses step by 16 KiB;
    the queue is asked for 16 KiB (mp_params) and its payload pool is order 2."""
    d = bnxt()
    b = d.binding
    assert b.niov_shift == 14 and b.provider.rx_page_size == K16
    q = d.nic.rx_queues[0]
    assert q.mp_params.rx_page_size == K16 and q.page_pool.order == 2
    assert q.header_pool.order == 0
    assert gen_pool_size(b.chunk_pool) == HUGE and b.chunk_pool.min_alloc_order == 14
    assert sum(o.num_niovs for o in b.owners) == HUGE // K16
    for o in b.owners:
        last = o.netmem(o.num_niovs - 1)
        assert o.net_devmem_get_dma_addr(last) == o.base_dma_addr + (o.num_niovs - 1) * K16
        assert d.m.netmem(last).dma_addr == o.net_devmem_get_dma_addr(last)
        assert o.net_iov_virtual_addr(last) == o.base_virtual + (o.num_niovs - 1) * K16
    teardown(d)


@pytest.mark.parametrize("iommu", ["none", "dma-iommu"])
def test_jumbo_frames_one_niov_each(iommu):
    """8900-byte payloads: each lands in one 16 KiB net_iov, described by one cmsg at a 16 KiB
    boundary of the dma-buf; its token holds that net_iov until SO_DEVMEM_DONTNEED, then the
    genpool is whole again."""
    d = bnxt(iommu=iommu)
    f = Flow()
    data = [payload(8900, seed=i) for i in range(6)]
    receive(d.nic, [f.syn()] + [f.data(x) for x in data])
    sk = d.m.tcp.sockets()[0]
    got, held, seen = read_devmem(sk, d.buf, dontneed=False)
    assert got == b"".join(data)
    assert [c.frag_size for c in seen] == [8900] * 6
    assert all(c.frag_offset % K16 == 0 for c in seen)
    b = d.binding
    out = gen_pool_size(b.chunk_pool) - gen_pool_avail(b.chunk_pool)
    assert len(held) == 6 and out >= 6 * K16
    sk.close()
    teardown(d)


# ---- tools/testing/selftests/drivers/net/hw/devmem.py --------------------------------------

def test_check_rx_large_niov():
    """Port of the kernel selftest devmem.py ``check_rx_large_niov`` (devmem_lib.py
    ``run_rx_large_niov``): ncdevmem -l -v 7 -b 16384 on a NIC with QCFG_RX_PAGE_SIZE (a
    hugetlb udmabuf, 2 MiB entries), payloads of 1 KiB, 4, 8, 16, 32 and 64 KiB from socat
    (``yes`` of \\x01..\\x06 and a newline: ncdevmem's -v 7 pattern), each on its own
    connection; every byte read through the dma-buf must match (ncdevmem's exit 0), each
    token given back at once. No hugepage sysctl or flow rule is needed: one queue."""
    d = bnxt()
    for i, size in enumerate([1024, 4096, 8192, 16384, 32768, 65536]):
        f = Flow(sport=40000 + i)
        data = ncdevmem_pattern(7, size).tobytes()
        frames = [f.syn()] + [f.data(data[o:o + 8948]) for o in range(0, size, 8948)]
        receive(d.nic, [*frames, f.fin()])
        sk, = d.m.tcp.sockets()
        got, held, _ = read_devmem(sk, d.buf)
        assert got == data and held == []
        sk.close()
    teardown(d)

