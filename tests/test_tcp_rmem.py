"""The receiver under memory pressure (pyx/tcp_rmem.pxi) in the shape of packetdrill scripts
(``Drill`` of rxutil): segments in, the ACKs' fields and the MIB counters out, each test naming
the function of net/ipv4/tcp_input.c (mainline 6.17 to 7.x) it follows. Every test checks the
accounting after each step: ``rmem_alloc`` is the truesize of the queued skbs, and the pool's
pages in flight are exactly those in its cache and ring, posted on the device's ring, or held
by the socket's queues."""
from rxutil import MSS, Drill, close_all, payload

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
    """``tcp_prune_ofo_queue()``: with the out-of-order queue over ``sk_rcvbuf``, a segment
    that would land last finds nothing to prune (``tcp_prune_queue()``: PruneCalled, then
    RcvPruned, and ``tcp_data_queue_ofo()`` drops it: TCPOFODrop, PROTO_MEM); one below the
    queue's tail drops skbs from the tail down (TCP_OFO_QUEUE_PRUNE, OfoPruned) until the
    socket can ingest, resets the SACK blocks (``tcp_sack_reset()``), and is queued: the ACK
    carries only its block. The pruned skb's buffers go back to the pool."""
    m.tcp.rcvbuf = 20000
    d = Drill(m, nic)
    sk = d.syn()
    d.seg(1, 0)
    for i in range(10, 36):
        d.seg(2, i)
    check_accounting(m, nic, sk)
    mib = m.tcp.mib
    # Segments 10..17 coalesce into one out-of-order skb of 20096 bytes of truesize in all
    # (the in-order skb's 2880 with it); the 18 after it find the socket full.
    assert (mib["TCPOFOQueue"], mib["TCPOFODrop"]) == (8, 18)
    assert (mib["PruneCalled"], mib["RcvPruned"], mib["OfoPruned"]) == (18, 18, 0)
    assert d.acks()[-1] == (2, 1, 498, [(10, 18)])
    held = check_accounting(m, nic, sk)
    d.seg(3, 5)
    assert d.acks() == [(3, 1, 498, [(5, 6)])]
    mib = m.tcp.mib
    assert (mib["PruneCalled"], mib["RcvPruned"], mib["OfoPruned"]) == (19, 18, 1)
    assert m.tcp.drop_reasons == {"PROTO_MEM": 18, "TCP_OFO_QUEUE_PRUNE": 1}
    assert sk.info()["sack_blocks"] == [(d.base + 5 * MSS, d.base + 6 * MSS)]
    # The eight pruned segments' buffers are home: the socket holds segment 0's and 5's.
    assert len(held - check_accounting(m, nic, sk)) == 4
    assert d.read(10 * MSS) == MSS
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
