"""The receiver under memory pressure (pyx/tcp_rmem.pxi) in the shape of packetdrill scripts
(``Drill`` of rxutil): segments in, the ACKs' fields and the MIB counters out, each test naming
the function of net/ipv4/tcp_input.c (mainline 6.17 to 7.x) it follows. Every test checks the
accounting after each step: ``rmem_alloc`` is the truesize of the queued skbs, and the pool's
pages in flight are exactly those in its cache and ring, posted on the device's ring, or held
by the socket's queues."""
from devmemutil import read_devmem, setup, teardown
from rxutil import Drill, close_all, payload

from netmem import _core
from netmem.netmem import netmem_get_pp


def check_accounting(m, nic, sk):
    """``sk_rmem_alloc`` == the truesize of the skbs queued; every pool page in flight is in
    the pool, on the ring or held by the socket (deferred frees run first)."""
    info = sk.info()
    assert info["rmem_alloc"] == info["queued_truesize"]
    _core._defer_flush_all(m)
    pool = nic.rx_queues[0].page_pool
    held = {r for r in _core._sk_netmems(m, sk._slot) if netmem_get_pp(m, r) is not None}
    pages = set(nic._rxq_ring_netmems(0)) | held
    assert pool.inflight == pool.alloc_count + pool.ring_count + len(pages)
    return held


def test_prune_ofo_queue_drops_from_the_tail(nic, m):
    """``tcp_prune_ofo_queue()``: small segments (300 bytes, a 2 KiB buffer each) fill
    ``sk_rcvbuf`` (20000, locked) well inside the window. ``tcp_prune_queue()`` collapses the
    out-of-order queue first (``tcp_collapse_ofo_queue()``: TCPRcvCollapsed), but segments
    that would land last find nothing to prune (RcvPruned; ``tcp_data_queue_ofo()`` drops them:
    TCPOFODrop, PROTO_MEM). The segment filling the hole below them prunes from the tail
    (TCP_OFO_QUEUE_PRUNE, OfoPruned), resets the SACK blocks (``tcp_sack_reset()``) and is
    queued: the ACK carries only its block. The pruned buffers go back to the pool."""
    m.tcp.rcvbuf = 20000
    d = Drill(m, nic, size=300)
    sk = d.syn()
    d.seg(1, 0)
    for i in range(3, 29):
        d.seg(2, i)
    held = check_accounting(m, nic, sk)
    mib = m.tcp.mib
    assert (mib["TCPOFOQueue"], mib["TCPOFODrop"], mib["TCPRcvCollapsed"]) == (9, 16, 17)
    assert (mib["PruneCalled"], mib["RcvPruned"], mib["OfoPruned"]) == (17, 16, 0)
    assert (mib["BeyondWindow"], sk.info()["rmem_alloc"]) == (1, 20544)
    d.acks()
    d.seg(3, 2)
    assert d.acks() == [(3, 1, 8388, [(2, 3)])]
    mib = m.tcp.mib
    assert (mib["PruneCalled"], mib["RcvPruned"], mib["OfoPruned"]) == (18, 16, 1)
    assert m.tcp.drop_reasons == {"PROTO_MEM": 16, "TCP_OFO_QUEUE_PRUNE": 1,
                                  "TCP_INVALID_END_SEQUENCE": 1}
    assert sk.info()["sack_blocks"] == [(d.base + 2 * 300, d.base + 3 * 300)]
    assert sk.info()["rmem_alloc"] == 4160
    assert len(held - check_accounting(m, nic, sk)) >= 1
    assert d.read(10000) == 300
    close_all(m)


def test_collapse_ofo_queue(nic, m):
    """``tcp_collapse_ofo_queue()``: a run of out-of-order skbs bloated by their 2 KiB
    buffers (500 bytes each) is copied into one new skb when memory runs short
    (TCPRcvCollapsed), so the segments fit and nothing is dropped; the SACK block covers the
    run, and filling the hole delivers every byte."""
    m.tcp.rcvbuf = 20000
    d = Drill(m, nic, size=500)
    sk = d.syn()
    d.seg(1, 0)
    for i in range(2, 17):
        d.seg(2, i)
    check_accounting(m, nic, sk)
    mib = m.tcp.mib
    assert (mib["PruneCalled"], mib["TCPRcvCollapsed"], mib["TCPOFODrop"]) == (2, 5, 0)
    assert d.acks()[-1] == (2, 1, 8188, [(2, 17)])
    d.seg(3, 1)
    assert d.acks() == [(3, 17, 2144, [])]
    check_accounting(m, nic, sk)
    assert sk.recv(100000) == b"".join(payload(500, seed=i) for i in range(17))
    assert m.tcp.drop_reasons == {}
    close_all(m)


def test_collapse_receive_queue(nic, m):
    """``tcp_collapse()`` of the receive queue: small segments coalesced into one skb cost
    2048 bytes of truesize each for 500 of payload (``tcp_win_from_space(truesize) > len``:
    bloated); when the socket is full, ``tcp_prune_queue()`` copies copied_seq .. rcv_nxt into
    one new skb (3000 bytes: ``alloc_skb()``'s truesize, 4352, from the 4 KiB kmalloc bucket),
    frees the old one (TCPRcvCollapsed) and its page_pool buffers, and the segment is taken
    without any drop. The data reads back whole."""
    m.tcp.rcvbuf = 12000
    d = Drill(m, nic, size=500)
    sk = d.syn()
    for i in range(6):
        d.seg(1 + i, i)
    held = check_accounting(m, nic, sk)
    assert sk.info()["rmem_alloc"] == 2880 + 5 * 2048
    d.seg(10, 6)
    mib = m.tcp.mib
    assert (mib["PruneCalled"], mib["TCPRcvCollapsed"], mib["RcvPruned"]) == (1, 1, 0)
    assert m.tcp.drop_reasons == {}
    assert sk.info()["rmem_alloc"] == 4352 + 2880
    assert (len(held), len(check_accounting(m, nic, sk))) == (4, 1)
    data = sk.recv(10000)
    assert data == b"".join(payload(500, seed=i) for i in range(7))
    check_accounting(m, nic, sk)
    close_all(m)


def test_prune_gives_devmem_net_iovs_back():
    """devmem TCP (header split, payload in 4 KiB net_iovs of a bound dma-buf): 100-byte
    segments out of order coalesce into an skb that grows by a net_iov's truesize each, so
    ``sk_rcvbuf`` (40000, locked) fills after nine. ``tcp_collapse()`` never copies unreadable
    skbs (6.12's ``skb_frags_readable()`` checks: no TCPRcvCollapsed), so the later segments
    are dropped (RcvPruned, TCPOFODrop); the segment filling the hole prunes the out-of-order
    skb (OfoPruned), whose eight net_iovs go back to the page pool's cache at once; the
    delayed ACK (``tcp_clamp_window()`` left quick-ack mode) acknowledges the two in order.
    Every net_iov the pool has out is in its cache, on the ring or in the socket's queues."""
    d = setup(ring=64)
    d.m.tcp.rcvbuf = 40000
    dr = Drill(d.m, d.nic, size=100)
    sk = dr.syn()
    pool = d.nic.rx_queues[0].page_pool

    def held():
        _core._defer_flush_all(d.m)
        niovs = {r for r in _core._sk_netmems(d.m, sk._slot) if r & 1}
        ring = {r for r in d.nic._rxq_ring_netmems(0) if r & 1}
        assert pool.inflight == pool.alloc_count + pool.ring_count + len(ring | niovs)
        assert sk.info()["rmem_alloc"] == sk.info()["queued_truesize"]
        return len(niovs), pool.alloc_count

    dr.seg(1, 0)
    for k in range(2, 30):
        dr.seg(2, k)
    assert held() == (10, 0)
    mib = d.m.tcp.mib
    assert (mib["TCPOFOQueue"], mib["TCPOFODrop"], mib["RcvPruned"]) == (9, 19, 19)
    assert dr.acks()[-1] == (2, 1, 18724, [(2, 11)])
    dr.seg(3, 1)
    assert held() == (2, 8)
    assert dr.acks(50) == [(43, 2, 18624, [])]
    mib = d.m.tcp.mib
    assert (mib["OfoPruned"], mib["TCPRcvCollapsed"]) == (1, 0)
    assert d.m.tcp.drop_reasons == {"PROTO_MEM": 19, "TCP_OFO_QUEUE_PRUNE": 1}
    got, tokens, _ = read_devmem(sk, d.buf)
    assert got == payload(100, seed=0) + payload(100, seed=1) and tokens == []
    teardown(d)
