"""Tests of devmem TCP's binding side against Linux 6.18: ``bind-rx`` (netdev_nl_bind_rx_doit()
in net/core/netdev-genl.c, with every errno of it and of __netif_mp_open_rxq() in
net/core/netdev_rx_queue.c), the binding net_devmem_bind_dmabuf() builds (a genalloc chunk per
mapped DMA segment, each chunk's net_iovs at ``base_dma_addr + idx * 4096``, ``base_virtual`` the
running offset in the dma-buf), its references (the user's, one per page pool), the provider's
ops (``dmabuf_devmem_ops``: init, first-fit alloc from the newest chunk, release to the genpool,
nl_fill, uninstall), what ethtool and XDP refuse while a queue is bound, and the teardown orders:
unbind with buffers in flight (the queue restarts on pages, the old pool and the binding wait
for the last net_iov, then the binding is freed with its genpool whole) and netdev unregister
under a binding.

The socket side (recvmsg(MSG_SOCK_DEVMEM), SO_DEVMEM_DONTNEED, the ncdevmem pattern) is in
tests/test_devmem_socket.py; the state machine in tests/test_devmem_statemachine.py.
"""
import errno

import pytest
from devmemutil import (
    PAGE,
    MiB,
    lab,
    make_dmabuf,
    raises,
    read_devmem,
    rxq,
    setup,
    stream_of,
    teardown,
)
from netmem.providers.dmabuf import (
    DmabufDevmemProvider,
    DmabufGenpoolChunkOwner,
    net_devmem_lookup_dmabuf,
)
from rxutil import MSS, Flow, payload, receive

from netmem import (
    DMA_FROM_DEVICE,
    PP_FLAG_ALLOW_UNREADABLE_NETMEM,
    PP_FLAG_DMA_MAP,
    PP_FLAG_DMA_SYNC_DEV,
    Machine,
    PagePoolParams,
    page_pool_create,
)
from netmem.dmabuf import sgt_dma_segments, udmabuf_create
from netmem.genalloc import gen_pool_avail, gen_pool_for_each_chunk, gen_pool_size
from netmem.netdev import NetDevice
from netmem.netlink import NetlinkSocket, page_pool_get, qstats_get, queue_get
from netmem.netmem import NET_IOV_DMABUF
from netmem.tcp import MSG_SOCK_DEVMEM

E2BIG = 7
PP_FLAGS = PP_FLAG_ALLOW_UNREADABLE_NETMEM | PP_FLAG_DMA_MAP | PP_FLAG_DMA_SYNC_DEV


def dmabuf_clean(buf):
    """The dma-buf holds only its fd's reference again: nothing attached, nothing mapped."""
    return (buf.file_count, buf.attachments) == (1, [])


def nothing_bound(nic):
    return all(q.mp is None and q.page_pool.provider is None for q in nic.rx_queues
               if q.mem is not None)


def manual_pool(d, order=0, flags=PP_FLAGS, binding=None):
    """A page pool a test makes itself over the binding's provider (the driver's params)."""
    return page_pool_create(d.m, PagePoolParams(
        order=order, pool_size=64, dev=d.nic.pcidev, dma_dir=DMA_FROM_DEVICE, max_len=PAGE,
        flags=flags), provider=(binding or d.binding).provider)


# ---- bind-rx: the binding ---------------------------------------------------------------------

def test_bind_rx_returns_ids_from_1_and_builds_the_binding():
    d = setup(num_rx_queues=2, queues=(1,))
    b = d.binding
    assert d.id == 1 and b.id == 1
    assert (b.dev, b.dmabuf, b.direction) == (d.nic, d.buf, DMA_FROM_DEVICE)
    assert b.bound_rxqs == [d.nic.rx_queues[1]]
    assert d.nl.bindings == [b]
    assert isinstance(b.provider, DmabufDevmemProvider) and d.nic.rx_queues[1].mp is b.provider
    # References: the user's (netlink) and the one page pool the bound queue made.
    pool = d.nic.rx_queues[1].page_pool
    assert pool.provider is b.provider and b.refcount == 2
    assert d.nic.rx_queues[0].page_pool.provider is None
    assert d.nic.rx_queues[1].header_pool.provider is None
    # dma_buf_get(), dma_buf_attach() to the NIC, one mapping.
    assert d.buf.file_count == 2
    assert [a.dev for a in d.buf.attachments] == [d.nic.pcidev]
    # A second binding of the same dma-buf to the other queue: the next id.
    nl2 = NetlinkSocket(d.m)
    assert nl2.bind_rx(d.nic.ifindex, d.buf.fd, rxq(0)) == 2
    assert d.buf.file_count == 3 and len(d.buf.attachments) == 2
    nl2.close()
    # Ids are cyclic: a freed id is not handed out again at once.
    nl3 = NetlinkSocket(d.m)
    assert nl3.bind_rx(d.nic.ifindex, d.buf.fd, rxq(0)) == 3
    assert net_devmem_lookup_dmabuf(d.m, 2) is None
    assert net_devmem_lookup_dmabuf(d.m, 3).bound_rxqs == [d.nic.rx_queues[0]]
    nl3.close()
    teardown(d)


@pytest.mark.parametrize("layout", ["contiguous", "pages", "random"])
@pytest.mark.parametrize("iommu", ["none", "dma-iommu"])
@pytest.mark.parametrize("kind", ["udmabuf", "gpu"])
def test_one_chunk_per_mapped_dma_segment(kind, iommu, layout):
    """net_devmem_bind_dmabuf(): for_each_sgtable_dma_sg() after the IOMMU's merging; each
    owner's base_virtual is the sum of the earlier sg_dma_len(); the genpool's addresses are
    DMA addresses; net_iov idx of a chunk has DMA address base_dma_addr + idx * 4096."""
    d = setup(size=MiB, kind=kind, layout=layout, seed=11, iommu=iommu, ring=16)
    b, m = d.binding, d.m
    segs = sgt_dma_segments(b.sgt)
    if iommu == "none":
        assert len(segs) == len(d.buf.phys_ranges)     # dma-direct never merges
    elif layout == "pages":
        assert len(segs) == MiB // (64 << 10)           # merged up to the 64 KiB max segment
    else:
        assert len(segs) <= len(d.buf.phys_ranges)
    assert [(o.base_virtual, o.base_dma_addr, o.num_niovs) for o in b.owners] == \
        [(off, dma, n // PAGE) for off, dma, n in segs]
    running = 0
    for o in b.owners:
        assert isinstance(o, DmabufGenpoolChunkOwner) and o.binding is b
        assert (o.type, o.owner_id, o.base_virtual) == (NET_IOV_DMABUF, b.id, running)
        running += o.num_niovs * PAGE
        for idx in (0, o.num_niovs - 1):
            ref = o.netmem(idx)
            assert m.netmem(ref).dma_addr == o.base_dma_addr + idx * PAGE
            assert o.net_devmem_get_dma_addr(ref) == o.base_dma_addr + idx * PAGE
            assert o.net_iov_virtual_addr(ref) == o.base_virtual + idx * PAGE
    assert running == d.buf.size == gen_pool_size(b.chunk_pool)
    chunks = []
    gen_pool_for_each_chunk(b.chunk_pool, lambda pool, c, data: chunks.append(c))
    # gen_pool_add_owner() puts each chunk at the head: the newest is searched first.
    assert [c.owner for c in chunks] == b.owners[::-1]
    assert all((c.start_addr, c.phys_addr) == (c.owner.base_dma_addr,) * 2 for c in chunks)
    # The bound queue's ring took 16 net_iovs from the genpool.
    assert d.nic.rx_queues[0].posted == (16, 16)
    assert gen_pool_avail(b.chunk_pool) == d.buf.size - 16 * PAGE
    teardown(d)


def test_queue_get_and_page_pool_get_show_the_binding():
    d = setup(num_rx_queues=2, queues=(1,))
    m, nic = d.m, d.nic
    assert queue_get(m, nic.ifindex, 1)["dmabuf"] == d.id
    assert "dmabuf" not in queue_get(m, nic.ifindex, 0)
    q = nic.rx_queues[1]
    assert page_pool_get(m, q.page_pool.id)["dmabuf"] == d.id
    assert "dmabuf" not in page_pool_get(m, q.header_pool.id)
    assert "dmabuf" not in page_pool_get(m, nic.rx_queues[0].page_pool.id)
    teardown(d)


# ---- bind-rx: every refusal -------------------------------------------------------------------

@pytest.fixture
def two_queues():
    d = setup(num_rx_queues=2, queues=())
    yield d
    assert nothing_bound(d.nic) and d.nl.bindings == []
    teardown(d)


def refused(d, code, ifindex=None, fd=None, queues=None, nl=None):
    """bind-rx fails with ``code`` and leaves nothing behind: no provider on any queue, no
    binding listed, the dma-buf back to its fd's reference once deferred work has run."""
    nl = nl or d.nl
    raises(code, nl.bind_rx, d.nic.ifindex if ifindex is None else ifindex,
           d.buf.fd if fd is None else fd, rxq(0) if queues is None else queues)
    d.m.quiesce()
    assert nothing_bound(d.nic) and nl.bindings == []
    assert dmabuf_clean(d.buf)
    assert d.m._devmem_bindings == {}


def test_bind_rx_needs_its_attributes(two_queues):
    d = two_queues
    raises(errno.EINVAL, d.nl.bind_rx, None, d.buf.fd, rxq(0))
    raises(errno.EINVAL, d.nl.bind_rx, d.nic.ifindex, None, rxq(0))
    refused(d, errno.EINVAL, queues=[])                     # ncdevmem: an empty queue list
    refused(d, errno.EINVAL, queues=[{"id": 0}])
    refused(d, errno.EINVAL, queues=[{"type": "rx"}])


def test_bind_rx_queue_type_and_id(two_queues):
    d = two_queues
    refused(d, errno.EINVAL, queues=[{"id": 0, "type": "tx"}])
    refused(d, errno.EINVAL, queues=[{"id": 0, "type": 1}])     # NETDEV_QUEUE_TYPE_TX
    refused(d, errno.EINVAL, queues=[*rxq(0), {"id": 1, "type": "tx"}])
    # An id at real_num_rx_queues: netdev_nl_read_rxq_bitmap() says EINVAL before
    # __netif_mp_open_rxq() could say ERANGE.
    refused(d, errno.EINVAL, queues=rxq(2))
    d.nic.ethtool.set_channels(1)
    refused(d, errno.EINVAL, queues=rxq(1))
    d.nic.ethtool.set_channels(2)
    assert d.nl.bind_rx(d.nic.ifindex, d.buf.fd, [{"id": 1, "type": 0}]) == 1
    d.nl.close()


def test_bind_rx_device_and_fd(two_queues):
    d = two_queues
    refused(d, errno.ENODEV, ifindex=99)
    refused(d, errno.ENODEV, ifindex=1)                     # lo: no NetDevice in the model
    refused(d, errno.EBADF, fd=99)
    other = udmabuf_create(d.m, 16 * PAGE)
    fd = other.fd
    other.close()
    refused(d, errno.EBADF, fd=fd)                          # closed: no longer a dma-buf fd
    d.nl.close()
    raises(errno.EBADF, d.nl.bind_rx, d.nic.ifindex, d.buf.fd, rxq(0))
    gone = NetDevice(d.m, "eth9")
    ifindex = gone.ifindex
    gone.unregister()
    refused(d, errno.ENODEV, ifindex=ifindex, nl=NetlinkSocket(d.m))


def test_bind_rx_header_split_and_hds_thresh(two_queues):
    d = two_queues
    et = d.nic.ethtool
    for split in ("auto", "off"):
        et.set_ringparam(tcp_data_split=split)
        refused(d, errno.EINVAL)
    et.set_ringparam(tcp_data_split="on", hds_thresh=64)
    refused(d, errno.EINVAL)
    et.set_ringparam(hds_thresh=0)


def test_bind_rx_xdp_and_af_xdp(two_queues):
    d = two_queues
    nic = d.nic
    # A single-buffer program and tcp-data-split exclude each other (dev_xdp_install()); a
    # multi-buffer one stays, and then a provider may not come (__netif_mp_open_rxq()).
    raises(errno.EBUSY, nic.attach_xdp)
    nic.attach_xdp(frags=True)
    refused(d, errno.EEXIST)
    nic.detach_xdp()
    nic.rx_queues[0].attach_af_xdp()
    refused(d, errno.EBUSY)
    # Only the AF_XDP queue is refused. Both refusals came from __netif_mp_open_rxq(), after
    # net_devmem_bind_dmabuf() had taken ids 1 and 2.
    assert d.nl.bind_rx(nic.ifindex, d.buf.fd, rxq(1)) == 3
    nic.rx_queues[0].detach_af_xdp()
    d.nl.close()


def test_bind_rx_queue_already_bound(two_queues):
    d = two_queues
    assert d.nl.bind_rx(d.nic.ifindex, d.buf.fd, rxq(0)) == 1
    b = net_devmem_lookup_dmabuf(d.m, 1)
    other = make_dmabuf(d.m, "udmabuf", 64 * PAGE)
    nl2 = NetlinkSocket(d.m)
    raises(errno.EEXIST, nl2.bind_rx, d.nic.ifindex, other.fd, rxq(0))
    d.m.quiesce()
    assert nl2.bindings == [] and dmabuf_clean(other)
    assert d.nic.rx_queues[0].mp is b.provider and b.refcount == 2
    # The failed binding used up id 2 (xa_alloc_cyclic()).
    assert nl2.bind_rx(d.nic.ifindex, other.fd, rxq(1)) == 3
    nl2.close()
    d.nl.close()
    other.close()


def test_bind_rx_queues_on_different_dma_devices(two_queues):
    """netdev_nl_get_dma_dev(): a multi-PF device's queues may sit on different PCI functions;
    a binding maps the dma-buf for one device only."""
    d = two_queues
    d.nic.rx_queues[1].dma_dev = d.m.pci["eth0"]
    refused(d, errno.EOPNOTSUPP, queues=rxq(0, 1))
    # One queue alone is fine: the dma-buf is mapped for that queue's function. The refusal
    # came before net_devmem_bind_dmabuf(): no id was used.
    assert d.nl.bind_rx(d.nic.ifindex, d.buf.fd, rxq(1)) == 1
    assert [a.dev for a in d.buf.attachments] == [d.m.pci["eth0"]]
    d.nl.close()


def test_bind_rx_driver_without_queue_api_or_provider_support():
    m = Machine(memory="256MiB", cpus=2)
    lab(m)
    buf = udmabuf_create(m, 64 * PAGE)
    nl = NetlinkSocket(m)
    nic = NetDevice(m, "eth1", num_rx_queues=1, mp_aware=False)
    nic.ethtool.set_ringparam(tcp_data_split="on")
    old = nic.rx_queues[0].page_pool
    # page_pool_check_memory_provider(): no pool of the queue took the binding.
    raises(errno.ENODATA, nl.bind_rx, nic.ifindex, buf.fd, rxq(0))
    assert nic.rx_queues[0].page_pool is old and nic.rx_queues[0].mp is None
    nic.unregister()
    nic = NetDevice(m, "eth2", num_rx_queues=1)
    nic.ethtool.set_ringparam(tcp_data_split="on")
    nic.queue_mgmt_ops = False
    raises(errno.EOPNOTSUPP, nl.bind_rx, nic.ifindex, buf.fd, rxq(0))
    nic.unregister()
    m.quiesce()
    assert nl.bindings == [] and dmabuf_clean(buf)
    buf.close()
    m.quiesce()
    assert m.leak_report() == []


def test_a_failure_on_the_second_queue_unbinds_the_first(two_queues):
    d = two_queues
    q0, q1 = d.nic.rx_queues
    old0 = q0.page_pool
    q1.attach_af_xdp()
    raises(errno.EBUSY, d.nl.bind_rx, d.nic.ifindex, d.buf.fd, rxq(0, 1))
    # Queue 0 was bound, then restarted again on pages by the unbind.
    assert q0.mp is None and q0.page_pool is not old0 and q0.page_pool.provider is None
    assert q0.posted == (64, 64)
    assert d.nl.bindings == [] and net_devmem_lookup_dmabuf(d.m, 1) is None
    d.m.quiesce()                                   # the binding's free is deferred work
    assert d.m._devmem_bindings == {} and dmabuf_clean(d.buf)
    q1.detach_af_xdp()


# ---- while bound ------------------------------------------------------------------------------

def test_ethtool_and_xdp_refusals_while_bound():
    d = setup(num_rx_queues=2, queues=(1,))
    nic, et = d.nic, d.nic.ethtool
    for split in ("off", "auto"):
        raises(errno.EINVAL, et.set_ringparam, tcp_data_split=split)
    raises(errno.EINVAL, et.set_ringparam, hds_thresh=64)
    raises(errno.EINVAL, et.set_channels, 1)
    raises(errno.EBUSY, nic.attach_xdp)
    raises(errno.EBUSY, nic.attach_xdp, frags=True)
    raises(errno.EBUSY, nic.rx_queues[1].attach_af_xdp)
    assert et.get_ringparam()["tcp_data_split"] == "on" and et.get_channels()["rx"] == 2
    assert not nic.xdp_prog
    # A ring resize restarts the queue: its new pool takes the binding too, the old one
    # gives its reference back once its buffers are home.
    old = nic.rx_queues[1].page_pool
    et.set_ringparam(rx_ring_size=32)
    new = nic.rx_queues[1].page_pool
    assert new is not old and new.provider is d.binding.provider and old.freed
    assert d.binding.refcount == 2
    assert gen_pool_avail(d.binding.chunk_pool) == d.buf.size - 32 * PAGE
    teardown(d)


# ---- the provider's ops ------------------------------------------------------------------------

def test_init_turns_dma_sync_off_and_takes_a_reference():
    """mp_dmabuf_devmem_init(): dma-buf addresses are not for dma_sync_*(); E2BIG unless
    order 0; a binding reference per pool."""
    d = setup(ring=16)
    q = d.nic.rx_queues[0]
    assert (q.page_pool.dma_sync, q.page_pool.dma_sync_for_cpu_enabled) == (False, False)
    assert (q.header_pool.dma_sync, q.header_pool.dma_sync_for_cpu_enabled) == (True, True)
    raises(E2BIG, manual_pool, d, order=1)
    assert "page_pool_init() mem-provider init failed -7" in d.m.dmesg
    assert d.binding.refcount == 2
    # page_pool_init(): a provider needs DMA_MAP and DMA_SYNC_DEV, before init is called.
    raises(errno.EOPNOTSUPP, manual_pool, d, flags=PP_FLAGS & ~PP_FLAG_DMA_SYNC_DEV)
    pool = manual_pool(d)
    assert d.binding.refcount == 3 and (pool.dma_sync, pool.dma_sync_for_cpu_enabled) == (
        False, False)
    pool.destroy()
    assert pool.freed and d.binding.refcount == 2
    teardown(d)


def test_alloc_is_first_fit_in_the_newest_chunk():
    """net_devmem_alloc_dmabuf(): gen_pool_alloc_owner() first fit; genalloc searches the newest
    chunk (the last DMA segment) first; one net_iov per call, its pp fields reset."""
    d = setup(size=64 * PAGE, layout="pages", ring=4)
    b, m = d.binding, d.m
    owners = b.owners                                   # 64 one-page chunks (dma-direct)
    assert len(owners) == 64
    # The ring took the four newest chunks, the newest first.
    pool = manual_pool(d)
    ref = pool.alloc_netmem()
    assert ref == owners[-5].netmem(0)
    v = m.netmem(ref)
    assert (v.pp_ref_count, v.dma_addr) == (1, owners[-5].base_dma_addr)
    pool.put_netmem(ref)                                # into the pool's cache, not the genpool
    assert gen_pool_avail(b.chunk_pool) == 59 * PAGE
    pool.destroy()                                      # release_netmem: back to the genpool
    assert gen_pool_avail(b.chunk_pool) == 60 * PAGE
    # Traffic lands in the ring's buffers in the order they were posted.
    f = Flow()
    receive(d.nic, [f.syn(), *f.segments(payload(3 * MSS), flags="PA")])
    sk = d.m.tcp.sockets()[0]
    _, _, seen = read_devmem(sk, d.buf)
    assert [c.frag_offset for c in seen] == [o.base_virtual for o in owners[-1:-4:-1]]
    teardown(d)


@pytest.mark.parametrize("iommu", ["none", "dma-iommu"])
def test_alloc_within_a_chunk_goes_up_from_its_lowest_dma_address(iommu):
    d = setup(size=32 * PAGE, layout="pages", ring=8, iommu=iommu)
    b = d.binding
    pool = manual_pool(d)
    refs = [pool.alloc_netmem() for _ in range(4)]
    addrs = [d.m.netmem(r).dma_addr for r in refs]
    if iommu == "dma-iommu":                            # two 16-page chunks
        newest = b.owners[-1]
        assert [o.num_niovs for o in b.owners] == [16, 16]
        assert addrs == [newest.base_dma_addr + (8 + i) * PAGE for i in range(4)]
    else:                                               # 32 one-page chunks
        assert addrs == [o.base_dma_addr for o in b.owners[-9:-13:-1]]
    for r in refs:
        pool.put_netmem(r)
    pool.destroy()
    teardown(d)


def test_exhaustion_counts_rx_alloc_fail_and_the_ring_refills_later():
    d = setup(size=4 * PAGE, ring=16)
    nic, m = d.nic, d.m
    q = nic.rx_queues[0]
    # mp_dmabuf_devmem_alloc_netmems() returns 0 once the genpool is empty.
    assert q.posted == (4, 16) and q.page_pool.inflight == 4
    assert gen_pool_avail(d.binding.chunk_pool) == 0
    assert qstats_get(m, nic.ifindex)[0]["rx-alloc-fail"] == 1
    pool = manual_pool(d)
    assert pool.alloc_netmem() == 0
    pool.destroy()
    f = Flow()
    data = payload(6 * MSS)
    receive(nic, [f.syn(), *f.segments(data)])
    s = q.stats()
    # Four segments find a buffer; two meet an empty ring.
    assert (s["packets"], s["hw_drop_overruns"]) == (5, 2)
    assert s["alloc_fail"] > 1 and q.posted == (0, 16)
    sk = m.tcp.sockets()[0]
    got, _, _ = read_devmem(sk, d.buf)
    assert got == data[:4 * MSS]
    # The tokens sent the net_iovs to the pool's ring. The device finds nothing posted until
    # the next poll's refill, which posts all four again.
    seq5 = f.isn + 1 + 4 * MSS
    receive(nic, [f.data(data[4 * MSS:5 * MSS], seq=seq5)])
    assert q.stats()["hw_drop_overruns"] == 3 and q.posted == (4, 16)
    receive(nic, [f.data(data[4 * MSS:5 * MSS], seq=seq5)])
    assert q.posted == (3, 16)
    got, _, _ = read_devmem(sk, d.buf)
    assert got == data[4 * MSS:5 * MSS]
    teardown(d)


# ---- unbind and unregister with buffers in flight ---------------------------------------------

def test_unbind_with_tokens_and_skbs_outstanding():
    """net_devmem_unbind_dmabuf(): the id goes, __netif_mp_close_rxq() restarts the queue on
    pages, the user's reference is dropped; the old pool lives on (and with it the binding)
    until every net_iov is home, then __net_devmem_dmabuf_binding_free() finds the genpool
    whole and gives the dma-buf back."""
    d = setup(ring=16)
    m, nic, b = d.m, d.nic, d.binding
    q = nic.rx_queues[0]
    old = q.page_pool
    f = Flow()
    data = payload(8 * MSS)
    receive(nic, [f.syn(), *f.segments(data[:6 * MSS], flags="PA")])
    sk = m.tcp.sockets()[0]
    # Four of the six frags are read (and their tokens kept); the skb holds all six.
    got, anc, _, _ = sk.recvmsg(4 * MSS, 4000, MSG_SOCK_DEVMEM)
    assert stream_of(d.buf, got, anc) == data[:4 * MSS]
    assert old.inflight == 6 + 16
    d.nl.close()
    assert net_devmem_lookup_dmabuf(m, d.id) is None and d.nl.bindings == []
    assert q.mp is None and q.page_pool is not old and q.page_pool.provider is None
    assert "dmabuf" not in queue_get(m, nic.ifindex, 0)
    # The posted buffers came home at the stop; the six in the socket keep the pool.
    assert old.destroy_cnt and not old.freed and old.inflight == 6
    assert page_pool_get(m, old.id)["dmabuf"] == d.id          # still says whose it was
    assert b.refcount == 1 and not b.freed                     # the old pool's reference
    # After the unbind, frames land in host pages: readable, never in the same call as the
    # unreadable data still queued.
    receive(nic, f.segments(data[6 * MSS:], flags="PA"))
    got, anc, _, _ = sk.recvmsg(1 << 20, 4000, MSG_SOCK_DEVMEM)
    assert got == b"" and stream_of(d.buf, got, anc) == data[4 * MSS:6 * MSS]
    assert sk.recvmsg(1 << 20, 4000, MSG_SOCK_DEVMEM)[:2] == (data[6 * MSS:], [])
    m.quiesce()
    assert sk.info()["devmem_tokens"] == 6 and old.inflight == 6 and not b.freed
    sk.close()                                      # tcp_release_user_frags()
    m.quiesce()
    assert old.freed and b.freed and b.refcount == 0
    assert dmabuf_clean(d.buf)
    teardown(d)


def test_netdev_unregister_under_a_binding():
    """dev_memory_provider_uninstall() -> mp_dmabuf_devmem_uninstall(): the queues leave
    bound_rxqs and, with none left, binding->dev is cleared; the binding stays listed (and
    bound to its netlink socket) until that socket closes."""
    d = setup(num_rx_queues=2, queues=(0, 1), ring=16)
    m, nic, b = d.m, d.nic, d.binding
    assert b.refcount == 3
    f = Flow()
    receive(nic, [f.syn(), *f.segments(payload(3 * MSS), flags="PA")])
    sk = m.tcp.sockets()[0]
    _, held, _ = read_devmem(sk, d.buf, dontneed=False)
    assert held
    pools = [q.page_pool for q in nic.rx_queues]
    nic.unregister()
    assert b.bound_rxqs == [] and b.dev is None
    assert net_devmem_lookup_dmabuf(m, d.id) is b
    # page_pool_unreg_netdev(): the pool still waiting for its net_iovs moves to lo, where
    # page-pool-get shows it without an ifindex.
    waiting = [p for p in pools if not p.freed]
    assert len(waiting) == 1 and b.refcount == 2
    row = page_pool_get(m, waiting[0].id)
    assert "ifindex" not in row and row["dmabuf"] == d.id
    d.nl.close()                                    # nothing to restart: the device is gone
    assert net_devmem_lookup_dmabuf(m, d.id) is None and b.refcount == 1
    sk.close()
    m.quiesce()
    assert b.freed
    d.buf.close()
    m.quiesce()
    assert m.leak_report() == []


def test_genpool_is_whole_when_the_last_reference_goes():
    d = setup(ring=16)
    b = d.binding
    f = Flow()
    receive(d.nic, [f.syn(), *f.segments(payload(2 * MSS), flags="PA")])
    sk = d.m.tcp.sockets()[0]
    read_devmem(sk, d.buf)
    sk.close()
    d.nl.close()
    # Every pool is gone and the free is queued work: the genpool is whole at that point.
    assert b.refcount == 0 and not b.freed
    assert gen_pool_avail(b.chunk_pool) == gen_pool_size(b.chunk_pool) == d.buf.size
    d.m.quiesce()
    assert b.freed and dmabuf_clean(d.buf)
    teardown(d)
