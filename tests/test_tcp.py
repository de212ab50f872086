"""Unit tests of the IP and TCP receive path (pyx/tcp_rx.pxi) and ``netmem.tcp`` against
net/ipv4/ip_input.c (ip_rcv_core(), ip_local_deliver()), net/ipv6/ip6_input.c,
net/ipv4/tcp_ipv4.c (tcp_v4_rcv()), net/ipv4/tcp_input.c (tcp_rcv_established(),
tcp_validate_incoming(), tcp_data_queue(), tcp_data_queue_ofo(), tcp_ofo_queue(),
tcp_try_coalesce(), tcp_fin(), tcp_reset()) and net/ipv4/tcp.c (tcp_recvmsg_locked()): the
in-order and out-of-order queues, duplicates, overlaps, sequence wrap-around, FIN and RST, SYNs on
a live socket, segments without a socket, the receive buffer limit, recv with small buffers, and
bad input, with the MIB counters and drop reasons the kernel would show.

Segments carry PSH unless a test says otherwise, so that GRO hands each one up on its own and
what TCP does with it is what the counters show.
"""
import errno
import random
import socket

import numpy as np
import pytest
from rxutil import MSS, Ether, Flow, IPv6ExtHdrDestOpt, Trace, payload, receive
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.inet6 import ICMPv6EchoRequest, IPv6, IPv6ExtHdrFragment, IPv6ExtHdrRouting
from scapy.packet import Raw

from netmem import NetmemError, _core, flows

ACK_SIDE = ("OutSegs", "DelayedACKs", "TCPWantZeroWindowAdv", "TCPToZeroWindowAdv",
            "TCPFromZeroWindowAdv")


def mib(m, **nonzero):
    """The TCP MIB with every other counter 0, but the ACK side's (test_tcp_ack.py checks
    those) as they are unless given."""
    now = m.tcp.mib
    return {**dict.fromkeys(now, 0), **{k: now[k] for k in ACK_SIDE}, **nonzero}


def ip_mib(m, **nonzero):
    return {**dict.fromkeys(m.tcp.ip_mib, 0), **nonzero}


def sock(m, f):
    sk = m.tcp.lookup(f.local, f.remote)
    assert sk is not None
    return sk


def seg(f, i, size=MSS, flags="PA", **kw):
    """Segment ``i`` of a flow of ``size``-byte segments (it does not advance the flow)."""
    return f.data(payload(size, seed=i), flags=flags, seq=f.isn + 1 + i * size, **kw)


def stream(n, size=MSS):
    return b"".join(payload(size, seed=i) for i in range(n))


def raises(code, fn, *args):
    with pytest.raises(NetmemError) as e:
        fn(*args)
    assert e.value.errno == code, e.value


# -- in order -------------------------------------------------------------------------------------

def test_in_order_stream(nic, m):
    f = Flow()
    frames = [f.syn(), *[seg(f, i) for i in range(5)]]
    receive(nic, frames)
    sk = sock(m, f)
    info = sk.info()
    assert (info["state"], info["rcv_nxt"], info["copied_seq"]) == ("ESTABLISHED",
                                                                     f.isn + 1 + 5 * MSS,
                                                                     f.isn + 1)
    assert (info["segs_in"], info["data_segs_in"], info["bytes_received"]) == (6, 5, 5 * MSS)
    # Each segment came up alone (PSH) and was coalesced into the first one's skb.
    assert info["rcv_queue_skbs"] == 1
    assert m.tcp.mib == mib(m, InSegs=6, PassiveOpens=1, TCPRcvCoalesce=4)
    assert m.tcp.ip_mib == ip_mib(m, InReceives=6, InDelivers=6)
    assert (sk.local, sk.remote) == (("10.0.0.2", 5201), ("10.0.0.1", 40000))
    assert sk.recv(1) == payload(MSS, seed=0)[:1]
    assert sk.read_all() == stream(5)[1:]
    assert sk.info()["copied_seq"] == info["rcv_nxt"]
    raises(errno.EAGAIN, sk.recv, 10)
    assert m.tcp.drop_reasons == {}


def test_recv_with_small_buffers(nic, m):
    f = Flow()
    syn = f.syn()
    f.seq = f.isn + 1 + 300
    receive(nic, [syn, *[seg(f, i, size=100) for i in range(3)], f.fin()])
    sk = sock(m, f)
    out = []
    while True:
        b = sk.recv(7)
        if not b:
            break
        assert len(b) <= 7
        out.append(b)
    assert b"".join(out) == stream(3, size=100)
    assert sk.recv(7) == b""                            # end of stream, again
    assert sk.recv(0) == b""
    data, anc, flags, addr = sk.recvmsg(10)
    assert (data, anc, flags, addr) == (b"", [], 0, None)


def test_recv_into_fills_the_callers_buffer(nic, m):
    f = Flow()
    syn = f.syn()
    f.seq = f.isn + 1 + 300
    receive(nic, [syn, *[seg(f, i, size=100) for i in range(3)], f.fin()])
    sk = sock(m, f)
    buf = np.zeros(250, np.uint8)
    assert sk.recv_into(buf, 30) == 30
    assert sk.recv_into(buf[30:]) == 220
    assert sk.recv_into(memoryview(buf)[250:]) == 0       # an empty buffer reads nothing
    tail = bytearray(100)
    assert sk.recv_into(tail) == 50
    assert buf.tobytes() + tail[:50] == stream(3, size=100)
    assert sk.recv_into(tail) == 0                       # end of stream
    raises(errno.EINVAL, sk.recv_into, tail, 101)
    raises(errno.EINVAL, sk.recv_into, tail, -1)


def test_recv_into_with_nothing_queued_is_eagain(nic, m):
    f = Flow()
    receive(nic, [f.syn()])
    raises(errno.EAGAIN, sock(m, f).recv_into, bytearray(10))


def test_readable_lists_sockets_with_something_to_read(nic, m):
    a, b = Flow(sport=40000), Flow(sport=40001)
    receive(nic, [a.syn(), b.syn(), seg(a, 0, size=100)])
    sa, sb = sock(m, a), sock(m, b)
    assert m.tcp.readable() == [sa]                      # b is idle
    sa.recv(50)
    assert m.tcp.readable() == [sa]                      # half read
    sa.recv(50)
    assert m.tcp.readable() == []
    a.seq = a.isn + 101
    receive(nic, [a.fin(), b.rst()])
    assert m.tcp.readable() == [sa, sb]                  # a FIN, an error not yet returned
    assert sa.recv(10) == b""
    raises(errno.ECONNRESET, sb.recv, 10)
    assert m.tcp.readable() == [] and m.tcp.sockets() == [sa, sb]


def test_close_frees_everything(nic, m):
    pool = nic.rx_queues[0].page_pool
    f = Flow()
    receive(nic, [f.syn(), *[seg(f, i) for i in range(3)], seg(f, 5)])
    sk = sock(m, f)
    assert (sk.info()["rcv_queue_skbs"], sk.info()["ofo_skbs"]) == (1, 1)
    assert m.tcp._leaks() != []
    held = pool.inflight
    sk.close()
    # Four frags on two pages held by the socket go home (the SYN's went in the poll).
    assert pool.inflight == held
    assert pool.stats["recycle_ring"] == 2
    # Unread data: tcp_close() aborts (TCPAbortOnClose, a RST); the ofo skb is a drop.
    assert (m.tcp.mib["TCPAbortOnClose"], m.tcp.mib["OutRsts"]) == (1, 1)
    assert m.tcp.drop_reasons == {"NOT_SPECIFIED": 1}
    assert m.tcp.sockets() == [] and m.tcp._leaks() == []
    raises(errno.EBADF, sk.info)
    raises(errno.EBADF, sk.recv, 1)
    sk.close()                                          # twice is nothing


# -- out of order ---------------------------------------------------------------------------------

def test_out_of_order_queue_and_coalescing(nic, m):
    f = Flow()
    receive(nic, [f.syn(), seg(f, 0), seg(f, 2), seg(f, 3)])
    sk = sock(m, f)
    # Segment 2 starts the ofo queue; 3 coalesces into it (tcp_ooo_try_coalesce()).
    assert (sk.info()["ofo_skbs"], sk.info()["rcv_nxt"]) == (1, f.isn + 1 + MSS)
    assert m.tcp.mib == mib(m, InSegs=4, PassiveOpens=1, TCPOFOQueue=2, TCPRcvCoalesce=1)
    assert sk.read_all() == payload(MSS, seed=0)
    receive(nic, [seg(f, 1)])
    # 1 fills the hole; tcp_ofo_queue() moves 2+3 over, coalescing into the tail.
    assert (sk.info()["ofo_skbs"], sk.info()["rcv_queue_skbs"]) == (0, 1)
    assert m.tcp.mib == mib(m, InSegs=5, PassiveOpens=1, TCPOFOQueue=2, TCPRcvCoalesce=2)
    assert sk.read_all() == stream(4)[MSS:]


def test_ofo_duplicates_and_covering_segments(nic, m):
    f = Flow()
    U = 400
    data = payload(6 * U)

    def at(lo, hi):
        return f.data(data[lo:hi], seq=f.isn + 1 + lo, flags="PA")

    receive(nic, [f.syn(sack=True), at(0, U), at(2 * U, 3 * U), at(2 * U, 3 * U),
                  at(4 * U, 5 * U)])
    sk = sock(m, f)
    assert sk.info()["sack_ok"] and sk.info()["ofo_skbs"] == 2
    # The second copy is covered: TCPOFOMerge, a D-SACK above rcv_nxt.
    assert m.tcp.mib == mib(m, InSegs=5, PassiveOpens=1, TCPOFOQueue=3, TCPOFOMerge=1,
                            TCPDSACKOfoSent=1)
    # From the same start and longer: it replaces [2U, 3U) (rb_replace_node()) and covers
    # [4U, 5U) (merge_right); one D-SACK for the segment (tcp_dsack_extend()).
    receive(nic, [at(2 * U, 5 * U)])
    assert sk.info()["ofo_skbs"] == 1
    assert m.tcp.mib == mib(m, InSegs=6, PassiveOpens=1, TCPOFOQueue=4, TCPOFOMerge=3,
                            TCPDSACKOfoSent=2)
    # A partial overlap on both sides is kept (a D-SACK for the part it shares).
    receive(nic, [at(5 * U + 100, 6 * U), at(4 * U + 200, 5 * U + 300)])
    assert sk.info()["ofo_skbs"] == 3
    assert m.tcp.mib["TCPDSACKOfoSent"] == 3
    # The hole is filled by a segment that runs 100 bytes into the ofo queue: tcp_ofo_queue()
    # D-SACKs the overlap below the new rcv_nxt.
    receive(nic, [at(U, 2 * U + 100)])
    assert sk.info()["rcv_nxt"] == f.isn + 1 + 6 * U
    assert sk.info()["ofo_skbs"] == 0
    assert m.tcp.mib == mib(m, InSegs=9, PassiveOpens=1, TCPOFOQueue=6, TCPOFOMerge=3,
                            TCPDSACKOfoSent=3, TCPDSACKOldSent=1, TCPRcvCoalesce=1)
    assert m.tcp.drop_reasons == {"TCP_OFOMERGE": 3}
    assert sk.read_all() == data


def test_ofo_partial_overlap_is_kept_and_read_once(nic, m):
    f = Flow()
    data = stream(4)
    base = f.isn + 1
    receive(nic, [f.syn(sack=True), seg(f, 0),
                  f.data(data[2 * MSS:3 * MSS], seq=base + 2 * MSS, flags="PA"),
                  f.data(data[2 * MSS + 100:3 * MSS + 100], seq=base + 2 * MSS + 100,
                         flags="PA")])
    sk = sock(m, f)
    assert sk.info()["ofo_skbs"] == 2
    assert m.tcp.mib["TCPDSACKOfoSent"] == 1            # the partial overlap
    receive(nic, [f.data(data[MSS:2 * MSS], seq=base + MSS, flags="PA")])
    # tcp_ofo_queue() moves both (no D-SACK: neither starts below the rcv_nxt it began with);
    # the second is queued as it is and recvmsg() skips its first 1348 bytes.
    assert sk.info()["rcv_nxt"] == base + 3 * MSS + 100
    assert (sk.info()["rcv_queue_skbs"], m.tcp.mib["TCPDSACKOldSent"]) == (2, 0)
    assert sk.read_all() == data[:3 * MSS + 100]


@pytest.mark.parametrize("hds", [False, True])
def test_ofo_skb_is_condensed(make_nic, m, hds):
    """``tcp_data_queue_ofo()`` ends in ``skb_condense()``: a readable out-of-order skb whose
    payload fits the head's tailroom (a 256-byte kmalloc head, or a 1 KiB header buffer with
    header split) has it copied into the head, its page_pool frag is put at once, and its
    truesize becomes ``SKB_TRUESIZE(skb_end_offset())``. When the hole fills,
    ``tcp_ofo_queue()`` cannot coalesce it (``skb_try_coalesce()``: a kmalloc head with data
    is locked; a header-buffer head is stolen)."""
    nic = make_nic(hds=hds)
    f = Flow()
    data = payload(MSS + 300)
    base = f.isn + 1
    receive(nic, [f.syn(sack=True), f.data(data[:MSS], seq=base, flags="PA")])
    sk = sock(m, f)
    rmem = sk.info()["rmem_alloc"]
    receive(nic, [f.data(data[MSS + 100:], seq=base + MSS + 100, flags="PA")])
    assert sk.info()["ofo_skbs"] == 1
    # SKB_TRUESIZE(256), or SKB_TRUESIZE(1024 - 320) for the header buffer.
    assert sk.info()["rmem_alloc"] - rmem == (1280 if hds else 832)
    receive(nic, [f.data(data[MSS:MSS + 100], seq=base + MSS, flags="PA")])
    assert sk.info()["rcv_nxt"] == base + MSS + 300
    # The filler coalesces into the tail; the condensed skb only when its head is a page frag.
    assert m.tcp.mib["TCPRcvCoalesce"] == (2 if hds else 1)
    assert sk.info()["rcv_queue_skbs"] == (1 if hds else 2)
    assert sk.read_all() == data


def ofo_tree(sk):
    """The out-of-order rbtree, checked: the red-black rules of lib/rbtree.c (black root, no
    red node with a red child, one black height), parent links that match, an in-order walk
    that is the seq-ordered list. Returns ``(root, nodes)``."""
    root, nodes, order = _core._sk_ofo_tree(sk._stack.machine, sk._slot)
    assert (root is None) == (not nodes)

    def walk(i, parent):
        if i is None:
            return [], 1
        *_, par, left, right, color = nodes[i]
        assert par == parent
        if color == 0:
            assert all(c is None or nodes[c][5] == 1 for c in (left, right)), "red-red"
        lo, hl = walk(left, i)
        ro, hr = walk(right, i)
        assert hl == hr, "black heights differ"
        return [*lo, i, *ro], hl + color

    if root is not None:
        assert nodes[root][5] == 1
        inorder, _ = walk(root, None)
        assert inorder == order
    return root, nodes


def test_ofo_overlap_checks_follow_the_rbtree_path(nic, m):
    """``tcp_data_queue_ofo()`` tests every node on its way down from the root, not only the
    segment's start-predecessor (audit finding 7): after A = [U, 2U) (the root) and a partial
    overlap B = [1.5U, 2.1U) (its right child), C = [2U, 3U) coalesces into A, the first node
    on its path that ends at its start, although its predecessor B overlaps it; A now covers
    N = [2.05U, 2.9U), which is dropped (``TCPOFOMerge``), though B alone would keep it."""
    f = Flow()
    U = 400
    data = payload(3 * U)
    base = f.isn + 1

    def at(lo, hi):
        return f.data(data[lo:hi], seq=base + lo, flags="PA")

    receive(nic, [f.syn(sack=True), at(U, 2 * U), at(3 * U // 2, 21 * U // 10)])
    sk = sock(m, f)
    root, nodes = ofo_tree(sk)
    assert nodes[root][:2] == (base + U, base + 2 * U)
    receive(nic, [at(2 * U, 3 * U)])
    root, nodes = ofo_tree(sk)
    assert nodes[root][:2] == (base + U, base + 3 * U) and len(nodes) == 2
    assert m.tcp.mib == mib(m, InSegs=4, PassiveOpens=1, TCPOFOQueue=3, TCPRcvCoalesce=1,
                            TCPDSACKOfoSent=1)
    receive(nic, [at(41 * U // 20, 29 * U // 10)])
    assert sk.info()["ofo_skbs"] == 2
    assert m.tcp.mib == mib(m, InSegs=5, PassiveOpens=1, TCPOFOQueue=4, TCPRcvCoalesce=1,
                            TCPOFOMerge=1, TCPDSACKOfoSent=2)
    assert m.tcp.drop_reasons == {"TCP_OFOMERGE": 1}
    receive(nic, [at(0, U)])
    assert sk.read_all() == data


def test_ofo_rbtree_keeps_its_shape_rules(nic, m):
    """Many out-of-order segments, with duplicates and overlaps, in a seeded random order:
    after each the out-of-order queue is a red-black tree by lib/rbtree.c's rules whose
    in-order walk is the queue (rb_insert_color(), rb_erase() by merge_right and
    tcp_ofo_queue(), rb_replace_node()), and the stream reads back whole."""
    rng = random.Random(7)
    f = Flow()
    U, N = 300, 120
    data = payload(N * U)
    base = f.isn + 1
    segs = []
    for _ in range(3 * N):
        lo = rng.randrange(1, N) * U + rng.choice((0, 0, 0, U // 3))
        hi = min(N * U, lo + rng.choice((1, 1, 2, 3)) * U + rng.choice((0, U // 2)))
        segs.append((lo, hi))
    receive(nic, [f.syn(sack=True)])
    sk = sock(m, f)
    for k in range(0, len(segs), 12):
        receive(nic, [f.data(data[lo:hi], seq=base + lo, flags="PA") for lo, hi in segs[k:k + 12]])
        ofo_tree(sk)
    assert sk.info()["ofo_skbs"] > 10
    receive(nic, [f.data(data[:U], seq=base, flags="PA")])
    receive(nic, [f.data(data[lo:lo + U], seq=base + lo, flags="PA") for lo in range(0, N * U, U)])
    assert sk.info()["ofo_skbs"] == 0 and sk.info()["rcv_nxt"] == base + N * U
    assert sk.read_all() == data


def test_sack_blocks_follow_tcp_sack_new_ofo_skb(nic, m):
    """The receiver's SACK blocks, packetdrill-style (segments in, the blocks an ACK would
    carry out), as ``tcp_data_queue_ofo()`` builds them: the first out-of-order segment makes
    one block; ``tcp_sack_new_ofo_skb()`` puts a new block in front and forgets the oldest past
    four, moves the block a segment extends to the front and lets it eat those it reaches
    (``tcp_sack_maybe_coalesce()``); ``tcp_sack_remove()`` drops what rcv_nxt covers; an RST
    at the highest block's end resets (``max_sack``)."""
    f = Flow()
    base = f.isn + 1

    def blocks(sk):
        return [((a - base) // MSS, (b - base) // MSS) for a, b in sk.info()["sack_blocks"]]

    receive(nic, [f.syn(sack=True), seg(f, 0), seg(f, 2)])
    sk = sock(m, f)
    assert blocks(sk) == [(2, 3)]
    receive(nic, [seg(f, 4), seg(f, 6), seg(f, 8)])
    assert blocks(sk) == [(8, 9), (6, 7), (4, 5), (2, 3)]
    receive(nic, [seg(f, 10)])                          # TCP_NUM_SACKS: (2, 3) is forgotten
    assert blocks(sk) == [(10, 11), (8, 9), (6, 7), (4, 5)]
    receive(nic, [seg(f, 3)])                           # extends (4, 5) down, to the front
    assert blocks(sk) == [(3, 5), (10, 11), (8, 9), (6, 7)]
    receive(nic, [seg(f, 5)])                           # reaches (6, 7): eaten
    assert blocks(sk) == [(3, 7), (10, 11), (8, 9)]
    receive(nic, [seg(f, 1)])                           # rcv_nxt 7: (3, 7) is covered
    assert sk.info()["rcv_nxt"] == base + 7 * MSS
    assert blocks(sk) == [(10, 11), (8, 9)]
    assert sk.info()["dsack_block"] is None
    receive(nic, [f.rst(seq=base + 9 * MSS)])           # not max_sack: a challenge ACK
    assert sk.info()["state"] == "ESTABLISHED"
    receive(nic, [f.rst(seq=base + 11 * MSS)])
    assert sk.info()["state"] == "CLOSE"


@pytest.mark.parametrize("ts", [False, True])
def test_ack_sack_option_fits_beside_the_timestamps(nic, m, ts):
    """The SACK blocks the next ACK carries: as many as fit in the 40 option bytes
    (``tcp_established_options()``: 4, or 3 beside the 12 bytes of timestamps when the SYN
    offered them), the D-SACK block first (``tcp_options_write()``)."""
    f = Flow(tsopt=ts)
    base = f.isn + 1
    opts = [("MSS", MSS), ("SAckOK", b"")] + ([("Timestamp", (1, 0))] if ts else [])
    syn = f.frame("S", f.isn, options=opts)
    f.seq += 1
    receive(nic, [syn, seg(f, 0), *[seg(f, i) for i in (2, 4, 6, 8)]])
    sk = sock(m, f)

    def ack(sk):
        return [((a - base) // MSS, (b - base) // MSS) for a, b in sk.info()["ack_sack_blocks"]]

    def sent():                                         # the blocks of the last ACK sent
        a = m.tcp.acks()[-1]
        return [((x - base) // MSS, (y - base) // MSS) for x, y in a["sack"][:a["nr_sack"]]]

    assert ack(sk) == sent() == [(8, 9), (6, 7), (4, 5), (2, 3)][:3 if ts else 4]
    receive(nic, [seg(f, 6)])                           # a duplicate: D-SACK first
    assert sent() == [(6, 7), (6, 7), (8, 9), (4, 5)][:3 if ts else 4]
    assert ack(sk) == [(6, 7), (8, 9), (4, 5), (2, 3)][:3 if ts else 4]    # D-SACK sent once
    receive(nic, [seg(f, 0)])
    assert sent()[0] == (0, 1)


def test_dsack_blocks_follow_tcp_dsack_set(nic, m):
    """The D-SACK block of the segment at hand (``tcp_dsack_set()``, ``tcp_dsack_extend()``):
    an old duplicate reports itself (``TCPDSACKOldSent``); a partial out-of-order overlap
    reports the part it shares; a segment that replaces a queued one and covers others
    widens one block over those that touch it (``TCPDSACKOfoSent`` once); the next segment
    clears it."""
    f = Flow()
    base = f.isn + 1
    U = 400
    data = payload(6 * U)

    def at(lo, hi):
        return f.data(data[lo:hi], seq=base + lo, flags="PA")

    def dsack(sk):
        """The D-SACK of the last ACK sent (RFC 2883: below its ack, or inside the next
        block); tcp_options_write() cleared the socket's once it went."""
        assert sk.info()["dsack_block"] is None
        a = m.tcp.acks()[-1]
        b = [(int(x) - base, int(y) - base) for x, y in a["sack"][:a["nr_sack"]]]
        if b and (b[0][0] < int(a["ack"]) - base or (
                len(b) > 1 and b[1][0] <= b[0][0] and b[0][1] <= b[1][1])):
            return b[0]
        return None

    receive(nic, [f.syn(sack=True), at(0, U), at(0, U)])
    sk = sock(m, f)
    assert dsack(sk) == (0, U) and m.tcp.mib["TCPDSACKOldSent"] == 1
    receive(nic, [at(2 * U, 3 * U), at(2 * U + 100, 3 * U + 100)])
    assert dsack(sk) == (2 * U + 100, 3 * U)
    receive(nic, [at(4 * U, 5 * U), at(2 * U, 5 * U + 50)])
    # Replaces [2U, 3U) and drops [2U + 100, 3U + 100) and [4U, 5U): the block widens over
    # what touches it (tcp_sack_extend()); [4U, 5U) does not, and is not reported.
    assert dsack(sk) == (2 * U, 3 * U + 100)
    assert m.tcp.mib["TCPDSACKOfoSent"] == 2
    receive(nic, [at(U, 2 * U)])
    assert dsack(sk) is None and sk.info()["sack_blocks"] == []
    assert sk.read_all() == data[:5 * U + 50]


# -- duplicates, overlaps, wrap-around ------------------------------------------------------------

@pytest.mark.parametrize("sack", [False, True])
def test_duplicate_segments(nic, m, sack):
    f = Flow()
    receive(nic, [f.syn(sack=sack), seg(f, 0), seg(f, 1), seg(f, 0), seg(f, 1)])
    sk = sock(m, f)
    assert sk.info()["rcv_nxt"] == f.isn + 1 + 2 * MSS
    dsack = {"TCPDSACKOldSent": 2} if sack else {}
    assert m.tcp.mib == mib(m, InSegs=5, PassiveOpens=1, TCPRcvCoalesce=1, DelayedACKLost=2,
                            **dsack)
    # tcp_sequence(): the first duplicate ends before rcv_wup (segment 1 was ACKed at once, in
    # quick-ack mode), so tcp_validate_incoming() drops it (TCP_OLD_SEQUENCE) after
    # tcp_send_dupack(); the second ends at rcv_wup and reaches tcp_data_queue() (TCP_OLD_DATA).
    assert m.tcp.drop_reasons == {"TCP_OLD_SEQUENCE": 1, "TCP_OLD_DATA": 1}
    assert sk.read_all() == stream(2)


def test_partial_overlap_in_order(nic, m):
    f = Flow()
    data = stream(3)
    base = f.isn + 1
    receive(nic, [f.syn(sack=True), seg(f, 0),
                  f.data(data[700:700 + MSS], seq=base + 700, flags="PA"),
                  f.data(data[700 + MSS:700 + 2 * MSS], seq=base + 700 + MSS, flags="PA")])
    sk = sock(m, f)
    # seq < rcv_nxt < end_seq: queued as it is (no coalescing: its seq is not the tail's
    # end_seq), a D-SACK for the old part; recvmsg() skips what was read already.
    assert sk.info()["rcv_queue_skbs"] == 2
    assert m.tcp.mib == mib(m, InSegs=4, PassiveOpens=1, TCPDSACKOldSent=1, TCPRcvCoalesce=1)
    assert sk.read_all() == data[:700 + 2 * MSS]


def test_sequence_numbers_wrap(nic, m):
    f = Flow(isn=(1 << 32) - 3 * MSS // 2)
    receive(nic, [f.syn(), seg(f, 0), seg(f, 2), seg(f, 1), seg(f, 3), seg(f, 0)])
    sk = sock(m, f)
    assert sk.info()["rcv_nxt"] == (f.isn + 1 + 4 * MSS) & 0xffffffff
    assert m.tcp.mib["DelayedACKLost"] == 1             # the old copy of 0, across the wrap
    assert sk.read_all() == stream(4)


# -- FIN and RST ----------------------------------------------------------------------------------

def test_fin_ends_the_stream_after_the_data(nic, m):
    f = Flow()
    receive(nic, [f.syn(), seg(f, 0), seg(f, 1)])
    f.seq = f.isn + 1 + 2 * MSS
    receive(nic, [f.fin()])
    sk = sock(m, f)
    assert sk.info()["state"] == "CLOSE_WAIT"
    assert sk.recv(10 * MSS) == stream(2)
    assert sk.recv(10) == b""
    assert sk.recv(10) == b""
    assert sk.info()["copied_seq"] == sk.info()["rcv_nxt"]


def test_close_after_reading_everything_sends_no_rst(nic, m):
    f = Flow()
    receive(nic, [f.syn(), seg(f, 0)])
    sk = sock(m, f)
    sk.read_all()
    sk.close()
    assert (m.tcp.mib["TCPAbortOnClose"], m.tcp.mib["OutRsts"]) == (0, 0)


def test_fin_drops_what_the_ofo_queue_holds_past_it(nic, m):
    f = Flow()
    receive(nic, [f.syn(), seg(f, 0), seg(f, 2), f.frame("FA", f.isn + 1 + MSS)])
    sk = sock(m, f)
    # tcp_fin(): skb_rbtree_purge() of the out-of-order queue (a kfree_skb() each).
    assert (sk.info()["state"], sk.info()["ofo_skbs"]) == ("CLOSE_WAIT", 0)
    assert m.tcp.drop_reasons == {"NOT_SPECIFIED": 1}
    assert sk.read_all() == payload(MSS, seed=0)


def test_fin_out_of_order_waits_for_the_data(nic, m):
    f = Flow()
    fin_seq = f.isn + 1 + 2 * MSS
    receive(nic, [f.syn(), f.frame("FA", fin_seq), seg(f, 0)])
    sk = sock(m, f)
    assert sk.info()["state"] == "ESTABLISHED" and sk.info()["ofo_skbs"] == 1
    receive(nic, [seg(f, 1)])
    assert sk.info()["state"] == "CLOSE_WAIT"
    assert sk.read_all() == stream(2)
    assert sk.recv(1) == b""


def test_data_after_the_fin_is_dropped(nic, m):
    """In CLOSE_WAIT, tcp_rcv_state_process() queues nothing at or after rcv_nxt."""
    f = Flow()
    receive(nic, [f.syn(), seg(f, 0), f.frame("FA", f.isn + 1 + MSS)])
    sk = sock(m, f)
    receive(nic, [f.data(b"late", seq=f.isn + 2 + MSS, flags="PA")])
    assert sk.info()["ofo_skbs"] == 0
    assert m.tcp.drop_reasons == {"NOT_SPECIFIED": 1}
    assert sk.read_all() == payload(MSS, seed=0)


def test_data_past_the_fin_in_a_retransmission_aborts(nic, m):
    f = Flow()
    fin_seq = f.isn + 1 + MSS
    receive(nic, [f.syn(), seg(f, 0), f.frame("FA", fin_seq)])
    receive(nic, [f.data(payload(300), seq=fin_seq - 100, flags="PA")])
    sk = sock(m, f)
    info = sk.info()
    assert (info["state"], info["err"], info["hashed"]) == ("CLOSE", errno.EPIPE, False)
    assert m.tcp.mib["TCPAbortOnData"] == 1
    assert m.tcp.drop_reasons == {"TCP_ABORT_ON_DATA": 1}
    assert sk.recv(10 * MSS) == payload(MSS, seed=0)
    assert sk.recv(10) == b""                           # the FIN came first (SOCK_DONE)


def test_rst_after_queued_data(nic, m):
    f = Flow()
    receive(nic, [f.syn(), seg(f, 0), seg(f, 1)])
    receive(nic, [f.rst(seq=f.isn + 1 + 2 * MSS)])
    sk = sock(m, f)
    info = sk.info()
    assert (info["state"], info["hashed"], info["err"]) == ("CLOSE", False, errno.ECONNRESET)
    assert m.tcp.drop_reasons == {}                     # tcp_reset() consumes the RST
    assert sk.recv(10 * MSS) == stream(2)
    raises(errno.ECONNRESET, sk.recv, 10)
    assert sk.recv(10) == b""
    # The tuple is free: a segment now meets no socket (and gets a RST back).
    receive(nic, [seg(f, 2)])
    assert m.tcp.mib["OutRsts"] == 1
    assert m.tcp.drop_reasons == {"NO_SOCKET": 1}


def test_rst_must_match_rcv_nxt(nic, m):
    f = Flow()
    receive(nic, [f.syn(), seg(f, 0)])
    nxt = f.isn + 1 + MSS
    receive(nic, [f.rst(seq=nxt + 10)])
    m.advance(1)                                        # past the challenge ACK rate limit
    receive(nic, [f.rst(seq=nxt - 10)])
    # RFC 5961: anything in the window but rcv_nxt draws a challenge ACK; a RST before
    # rcv_wup (the segment was ACKed at once) fails tcp_sequence() and is dropped silently.
    sk = sock(m, f)
    assert sk.info()["state"] == "ESTABLISHED"
    assert m.tcp.mib == mib(m, InSegs=4, PassiveOpens=1, TCPChallengeACK=1)
    assert m.tcp.drop_reasons == {"TCP_RESET": 1, "TCP_OLD_SEQUENCE": 1}


@pytest.mark.parametrize("sack", [True, False])
def test_rst_at_the_right_most_sack_block_resets(nic, m, sack):
    """tcp_validate_incoming(), step 2: with SACK on and blocks to advertise (out-of-order data
    queued), a RST whose seq is the right-most block's end (max_sack) resets. Without SACK the
    same RST draws a challenge ACK."""
    f = Flow()
    # Two runs above the hole at segment 1: [2, 3) and [4, 6); max_sack is segment 6's start.
    receive(nic, [f.syn(sack=sack), seg(f, 0), seg(f, 2), seg(f, 4), seg(f, 5)])
    sk = sock(m, f)
    assert (sk.info()["sack_ok"], sk.info()["ofo_skbs"]) == (sack, 2)
    receive(nic, [f.rst(seq=f.isn + 1 + 6 * MSS)])
    info = sk.info()
    if sack:
        assert (info["state"], info["hashed"], info["err"]) == ("CLOSE", False,
                                                                errno.ECONNRESET)
        assert m.tcp.mib["TCPChallengeACK"] == 0
        assert m.tcp.drop_reasons == {}                 # tcp_reset() consumes the RST
    else:
        assert (info["state"], info["hashed"]) == ("ESTABLISHED", True)
        assert m.tcp.mib["TCPChallengeACK"] == 1
        assert m.tcp.drop_reasons == {"TCP_RESET": 1}


def test_rst_inside_the_sack_blocks_draws_a_challenge_ack(nic, m):
    """Only rcv_nxt and max_sack reset: a RST at another block edge, inside a block or in the
    hole draws a challenge ACK (counted, dropped as TCP_RESET) and the socket stays."""
    f = Flow()
    receive(nic, [f.syn(sack=True), seg(f, 0), seg(f, 2), seg(f, 4), seg(f, 5)])
    # Ends of [2, 3) and [4, 5) (before segment 5 coalesced into it), a start, the hole.
    rsts = [f.rst(seq=f.isn + 1 + k) for k in (3 * MSS, 5 * MSS, 2 * MSS, MSS + 100)]
    for r in rsts:
        m.advance(1)                                    # past the challenge ACK rate limit
        receive(nic, [r])
    sk = sock(m, f)
    assert (sk.info()["state"], sk.info()["ofo_skbs"]) == ("ESTABLISHED", 2)
    assert m.tcp.mib["TCPChallengeACK"] == 4
    assert m.tcp.drop_reasons == {"TCP_RESET": 4}


def test_challenge_acks_are_rate_limited(nic, m):
    """tcp_send_challenge_ack(): __tcp_oow_rate_limited() lets one challenge ACK through per
    socket per net.ipv4.tcp_invalid_ratelimit (500 ms) and counts the others in
    TCPACKSkippedChallenge; the window is measured from the last one sent, on the stack's
    clock (the arrival of the frames the NAPI poll takes)."""
    f = Flow()
    receive(nic, [f.syn(), seg(f, 0)])
    nxt = f.isn + 1 + MSS
    receive(nic, [f.rst(seq=nxt + 10), f.rst(seq=nxt + 20)])
    assert (m.tcp.mib["TCPChallengeACK"], m.tcp.mib["TCPACKSkippedChallenge"]) == (1, 1)
    m.advance(0.499)
    receive(nic, [f.rst(seq=nxt + 30)])                 # 499 ms after the first: skipped
    m.advance(0.001)
    receive(nic, [f.frame("SA", f.isn)])                # 500 ms: a SYN's challenge goes out
    assert (m.tcp.mib["TCPChallengeACK"], m.tcp.mib["TCPACKSkippedChallenge"]) == (2, 2)
    assert m.tcp.drop_reasons == {"TCP_RESET": 3, "TCP_INVALID_SYN": 1}
    g = Flow(sport=40001)                               # another socket has its own window
    receive(nic, [g.syn(), g.rst(seq=g.isn + 100)])
    assert m.tcp.mib["TCPChallengeACK"] == 3


def test_challenge_acks_within_one_trace_follow_its_timestamps(nic, m):
    """Inside one receive() call the stack's clock is each frame's arrival: RSTs 300 ms
    apart are limited by the socket's 500 ms window as they would be on the wire."""
    f = Flow()
    nxt = f.isn + 1
    frames = [f.syn(), *[f.rst(seq=nxt + 10 + i) for i in range(5)]]
    nic.receive(Trace(frames, gap_ns=300_000_000))
    # At 300, 600, 900, 1200, 1500 ms: sent at 300, 900 and 1500.
    assert (m.tcp.mib["TCPChallengeACK"], m.tcp.mib["TCPACKSkippedChallenge"]) == (3, 2)


def test_the_netns_challenge_ack_limit(make_nic):
    """With net.ipv4.tcp_challenge_ack_limit set (INT_MAX, off, by default since 6.0), each
    second allows a budget drawn from [limit/2, limit*3/2) across the netns; challenges past
    it are neither sent nor counted. The draw comes from the machine's seed."""
    from netmem import Machine

    def run(seed):
        m = Machine(seed=seed)
        nic = make_nic(machine=m)
        m.tcp.challenge_ack_limit = 4
        flows = [Flow(sport=41000 + i) for i in range(16)]
        receive(nic, [x.syn() for x in flows])
        receive(nic, [x.rst(seq=x.isn + 100) for x in flows])
        first = m.tcp.mib["TCPChallengeACK"]
        m.advance(1)
        receive(nic, [x.rst(seq=x.isn + 200) for x in flows])
        got = (first, m.tcp.mib["TCPChallengeACK"] - first,
               m.tcp.mib["TCPACKSkippedChallenge"])
        for sk in m.tcp.sockets():
            sk.close()
        nic.unregister()
        m.quiesce()
        return got

    a, b = run(1), run(1)
    assert a == b                                       # deterministic
    assert 2 <= a[0] <= 5 and 2 <= a[1] <= 5 and a[2] == 0
    assert run(2) != a or run(3) != a                   # the draw depends on the seed
    m = Machine()
    assert m.tcp.challenge_ack_limit == 2147483647 and m.tcp.invalid_ratelimit == 500
    raises(errno.EINVAL, setattr, m.tcp, "challenge_ack_limit", -1)


def test_rst_after_fin_at_rcv_nxt_minus_one(nic, m):
    """tcp_reset_check(): after a FIN, a RST for rcv_nxt - 1 (the FIN's sequence) resets; in
    CLOSE_WAIT tcp_reset() sets EPIPE, and recv() still ends with b"" (SOCK_DONE)."""
    f = Flow()
    fin_seq = f.isn + 1 + MSS
    receive(nic, [f.syn(), seg(f, 0), f.frame("FA", fin_seq), f.rst(seq=fin_seq)])
    sk = sock(m, f)
    info = sk.info()
    assert (info["state"], info["err"]) == ("CLOSE", errno.EPIPE)
    assert m.tcp.mib["TCPChallengeACK"] == 0
    assert sk.recv(10 * MSS) == payload(MSS, seed=0)
    assert sk.recv(10) == b""


def test_syn_on_an_established_socket(nic, m):
    f = Flow()
    syn = f.syn()
    receive(nic, [syn, seg(f, 0), syn])
    m.advance(1)                                        # past the challenge ACK rate limit
    receive(nic, [Flow(isn=7777).syn()])
    # tcp_validate_incoming(): a SYN in ESTABLISHED, old or new, is a challenge
    # (TCPSYNChallenge, InErrs from tcp_rcv_established()'s syn_inerr, a challenge ACK).
    assert m.tcp.mib == mib(m, InSegs=4, PassiveOpens=1, InErrs=2, TCPSYNChallenge=2,
                            TCPChallengeACK=2)
    assert m.tcp.drop_reasons == {"TCP_INVALID_SYN": 2}
    assert len(m.tcp.sockets()) == 1
    assert sock(m, f).read_all() == payload(MSS, seed=0)


def test_data_on_a_syn_is_not_taken(nic, m):
    f = Flow()
    data = payload(200)
    receive(nic, [f.frame("S", f.isn, data, options=[("MSS", MSS)])])
    sk = sock(m, f)
    # No Fast Open: tcp_conn_request() keeps nothing of the SYN but its sequence number.
    assert sk.info()["rcv_nxt"] == f.isn + 1
    raises(errno.EAGAIN, sk.recv, 10)
    receive(nic, [f.data(data, seq=f.isn + 1, flags="PA")])        # the retransmission
    assert sk.read_all() == data
    assert m.tcp.mib["DelayedACKLost"] == 0


def test_a_syn_ack_opens_the_active_side(nic, m):
    f = Flow()
    receive(nic, [f.frame("SA", f.isn), seg(f, 0)])
    assert m.tcp.mib["PassiveOpens"] == 0
    assert sock(m, f).read_all() == payload(MSS, seed=0)


def test_segment_without_ack_is_dropped(nic, m):
    f = Flow()
    receive(nic, [f.syn(), f.data(b"noack", flags="P")])
    assert m.tcp.drop_reasons == {"TCP_FLAGS": 1}
    assert sock(m, f).info()["rcv_nxt"] == f.isn + 1


# -- no socket ------------------------------------------------------------------------------------

def test_segments_without_a_socket(nic, m):
    f = Flow()
    f.seq += 1
    receive(nic, [seg(f, 0), f.rst(seq=f.isn + 1)])
    # tcp_v4_rcv(): no socket -> tcp_v4_send_reset() (not for a RST) and NO_SOCKET.
    assert m.tcp.mib == mib(m, InSegs=2, OutRsts=1)
    assert m.tcp.drop_reasons == {"NO_SOCKET": 2}
    assert m.tcp.sockets() == []


def test_open_on_data_starts_the_stream_mid_way(nic, m):
    m.tcp.open_on_data = True
    assert m.tcp.open_on_data
    f = Flow()
    receive(nic, [seg(f, 3), seg(f, 4), seg(f, 6)])
    sk = sock(m, f)
    assert sk.info()["rcv_nxt"] == f.isn + 1 + 5 * MSS
    assert sk.info()["ofo_skbs"] == 1
    assert m.tcp.mib["PassiveOpens"] == 0
    assert sk.read_all() == payload(MSS, seed=3) + payload(MSS, seed=4)


# -- IPv6 -----------------------------------------------------------------------------------------

def test_ipv6_with_extension_headers(nic, m):
    f = Flow(src="fd00::1", dst="fd00::2")
    size = 1500 - 40 - 20 - 16
    ext = IPv6ExtHdrDestOpt() / IPv6ExtHdrRouting(segleft=0)
    frames = [f.syn()] + [seg(f, i, size=size, ext=ext) for i in range(3)]
    receive(nic, frames)
    sk = sock(m, f)
    assert sk.family == socket.AF_INET6 and sk.local == ("fd00::2", 5201)
    assert sk.read_all() == stream(3, size=size)
    assert m.tcp.ip6_mib == ip_mib(m, InReceives=4, InDelivers=4)
    assert m.tcp.ip_mib == ip_mib(m)


# -- receive buffer -------------------------------------------------------------------------------

def test_rcvbuf_limits_the_window(nic, m):
    """A locked sk_rcvbuf (m.tcp.rcvbuf: SO_RCVBUF on the listener) bounds the window
    tcp_select_initial_window() offers (tcp_full_space(): 5000, rounded down to the MSS:
    4380), so tcp_sequence() refuses what a sender sends past it (BeyondWindow:
    TCP_INVALID_END_SEQUENCE while the queue holds data, TCP_INVALID_SEQUENCE past the right
    edge). Memory pressure within the window is tests/test_tcp_rmem.py's."""
    m.tcp.rcvbuf = 10000
    f = Flow()
    receive(nic, [f.syn(), *[seg(f, i) for i in range(7)]])
    sk = sock(m, f)
    assert (sk.info()["rmem_alloc"], sk.info()["rcvbuf"]) == (6976, 10000)
    assert sk.info()["rcv_nxt"] == f.isn + 1 + 3 * MSS
    assert m.tcp.mib["BeyondWindow"] == 4
    assert m.tcp.drop_reasons == {"TCP_INVALID_END_SEQUENCE": 2, "TCP_INVALID_SEQUENCE": 2}
    assert sk.recv(10 * MSS) == stream(3)
    # With the queue empty, a segment past the window is taken whole, and charged whatever
    # the memory (tcp_prune_queue() returns at once with empty queues:
    # sk_forced_mem_schedule()).
    m.tcp.rcvbuf = 100
    f2 = Flow(sport=40001)
    receive(nic, [f2.syn(), seg(f2, 0), seg(f2, 1)])
    sk2 = sock(m, f2)
    assert sk2.info()["rcv_nxt"] == f2.isn + 1 + MSS
    assert (m.tcp.mib["PruneCalled"], m.tcp.mib["BeyondWindow"]) == (0, 5)


def test_rcvbuf_limits_the_ofo_queue(nic, m):
    """Out of order too: in a 2920-byte window (tcp_full_space() 3000 rounded down to the
    MSS) only the first segment fits."""
    m.tcp.rcvbuf = 6000
    f = Flow()
    receive(nic, [f.syn(), *[seg(f, i) for i in (1, 3, 5, 7)]])
    sk = sock(m, f)
    assert sk.info()["ofo_skbs"] == 1
    assert m.tcp.mib["BeyondWindow"] == 3
    assert m.tcp.drop_reasons == {"TCP_INVALID_SEQUENCE": 3}


def test_rcvbuf_setting_is_checked(m):
    raises(errno.EINVAL, setattr, m.tcp, "rcvbuf", 0)
    raises(errno.EINVAL, setattr, m.tcp, "skb_defer_max", -1)


# -- pfmemalloc -----------------------------------------------------------------------------------

def _pool_pages(m, pool):
    """The pages ``pool`` has handed out (the RX ring's buffers), above the reserved first MiB."""
    return [pfn << 1 for pfn in range(256, m.memory >> 12) if m.netmem(pfn << 1).pp is pool]


def _set_pfmemalloc(m, pool, flag=True):
    """``set_page_pfmemalloc()`` on every page of the ring, as if the page allocator had filled
    it from the memalloc reserves."""
    refs = _pool_pages(m, pool)
    for ref in refs:
        m.set_pfmemalloc(ref, flag)
    return refs


def test_pfmemalloc_frags_are_dropped_by_tcp_filter(nic, m):
    """``__skb_fill_netmem_desc()`` carries a pfmemalloc page to ``skb->pfmemalloc``;
    ``tcp_filter()`` -> ``sk_filter_trim_cap()`` drops it on a socket without SOCK_MEMALLOC
    (PFMemallocDrop, SKB_DROP_REASON_PFMEMALLOC), before ``tcp_segs_in()``."""
    f = Flow()
    receive(nic, [f.syn()])
    sk = sock(m, f)
    pool = nic.rx_queues[0].page_pool
    assert _set_pfmemalloc(m, pool)
    receive(nic, [seg(f, 0)])
    assert m.tcp.mib == mib(m, InSegs=2, PassiveOpens=1, PFMemallocDrop=1)
    assert m.tcp.drop_reasons == {"PFMEMALLOC": 1}
    info = sk.info()
    assert (info["rcv_nxt"], info["segs_in"], info["data_segs_in"]) == (f.isn + 1, 1, 0)
    raises(errno.EAGAIN, sk.recv, 10)
    # The same segment on pages that are not pfmemalloc is delivered as before.
    _set_pfmemalloc(m, pool, False)
    receive(nic, [seg(f, 0)])
    assert m.tcp.mib == mib(m, InSegs=3, PassiveOpens=1, PFMemallocDrop=1)
    assert m.tcp.drop_reasons == {"PFMEMALLOC": 1}
    assert sk.read_all() == payload(MSS, seed=0)


def test_pfmemalloc_header_buffer_drops_the_syn_at_the_listener(make_nic, m):
    """With header split the header buffer is the head (``napi_build_skb()``:
    ``skb_propagate_pfmemalloc()``); a SYN on a pfmemalloc page is dropped by ``tcp_filter()``
    on the listener and opens nothing."""
    nic = make_nic()
    nic.ethtool.set_ringparam(tcp_data_split="on")
    q = nic.rx_queues[0]
    assert _set_pfmemalloc(m, q.header_pool)
    f = Flow()
    syn = f.syn()
    receive(nic, [syn])
    assert m.tcp.lookup(f.local, f.remote) is None
    assert m.tcp.mib == mib(m, InSegs=1, PFMemallocDrop=1)
    assert m.tcp.drop_reasons == {"PFMEMALLOC": 1}
    _set_pfmemalloc(m, q.header_pool, False)
    receive(nic, [syn, seg(f, 0)])                     # the SYN again, on a clean page
    assert sock(m, f).read_all() == payload(MSS, seed=0)
    assert m.tcp.mib == mib(m, InSegs=3, PassiveOpens=1, PFMemallocDrop=1)


# -- bad input ------------------------------------------------------------------------------------

ETH = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")


def ip4(**kw):
    return IP(src="10.0.0.1", dst="10.0.0.2", **kw)


def test_truncated_ip_datagram(nic, m):
    good = bytes(ETH / ip4() / TCP(flags="S"))
    cut = bytes(ETH / ip4() / TCP(flags="PA") / Raw(b"x" * 100))[:-30]
    receive(nic, [good, cut])
    assert m.tcp.ip_mib == ip_mib(m, InReceives=2, InTruncatedPkts=1, InDelivers=1)
    assert m.tcp.drop_reasons == {"PKT_TOO_SMALL": 1}


def test_bad_ip_headers(nic, m):
    tcp = TCP(flags="S") / Raw(b"x" * 40)
    ihl4 = bytearray(bytes(ETH / ip4() / tcp))
    ihl4[14] = 0x44                                     # IHL 4: 16 bytes
    v5 = bytearray(bytes(ETH / ip4() / tcp))
    v5[14] = 0x55
    ihl15 = bytearray(bytes(ETH / ip4() / TCP(flags="S")))
    ihl15[14] = 0x4f                                    # 60-byte header in a 40-byte packet
    short = bytes(ETH / ip4(len=16) / tcp)              # tot_len below the header
    v4in6 = bytes(Ether(type=0x86dd) / ip4() / tcp / Raw(b"x" * 40))
    receive(nic, [bytes(ihl4), bytes(v5), bytes(ihl15), short, v4in6])
    assert m.tcp.ip_mib == ip_mib(m, InReceives=4, InHdrErrors=4)
    # ip6_rcv_core(): a version other than 6 is an InHdrErrors dropped as UNHANDLED_PROTO.
    assert m.tcp.ip6_mib == ip_mib(m, InReceives=1, InHdrErrors=1)
    assert m.tcp.drop_reasons == {"IP_INHDR": 4, "UNHANDLED_PROTO": 1}
    assert m.tcp.mib["InSegs"] == 0


def test_bad_tcp_data_offset(nic, m):
    small = bytearray(bytes(ETH / ip4() / TCP(flags="PA") / Raw(b"x" * 40)))
    small[14 + 20 + 12] = 0x40                          # doff 4
    past = bytearray(bytes(ETH / ip4() / TCP(flags="PA") / Raw(b"x" * 20)))
    past[14 + 20 + 12] = 0xf0                           # 60 bytes in a 40-byte segment
    receive(nic, [bytes(small), bytes(past)])
    # tcp_v4_rcv(): doff < 5 is a bad packet (InErrs, PKT_TOO_SMALL); a header past the end
    # fails pskb_may_pull() (discard_it: NOT_SPECIFIED).
    assert m.tcp.mib == mib(m, InSegs=2, InErrs=1)
    assert m.tcp.drop_reasons == {"PKT_TOO_SMALL": 1, "NOT_SPECIFIED": 1}


def test_zero_length_segments(nic, m):
    f = Flow()
    receive(nic, [f.syn(), f.data(b""), seg(f, 0), f.data(b"", seq=f.isn + 1 + MSS)])
    sk = sock(m, f)
    info = sk.info()
    assert (info["segs_in"], info["data_segs_in"]) == (4, 1)
    assert m.tcp.drop_reasons == {}                     # pure ACKs are consumed, not dropped
    assert sk.read_all() == payload(MSS, seed=0)


def test_unknown_ethertype_and_runts(nic, m):
    arp = bytes(Ether(dst="ff:ff:ff:ff:ff:ff", type=0x0806) / Raw(b"\0" * 46))
    lldp = bytes(Ether(dst="01:80:c2:00:00:0e", type=0x88cc) / Raw(b"\0" * 46))
    receive(nic, [arp, lldp, b"\x02" * 13, b""])
    # __netif_receive_skb_core(): no handler and no exact delivery -> rx_dropped.
    assert nic.stats() == {"rx_nohandler": 0, "rx_dropped": 2, "rx_length_errors": 2,
                           "rx_otherhost_dropped": 0}
    assert m.tcp.drop_reasons == {"UNHANDLED_PROTO": 2}
    assert nic.rx_queues[0].stats()["length_errors"] == 2


def test_a_frame_that_ends_inside_a_vlan_tag(nic, m):
    tagged = bytes(Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02", type=0x8100))
    receive(nic, [tagged + b"\x00\x05", tagged + b"\x00\x05\x08"])
    # skb_vlan_untag() cannot pull the tag and the EtherType after it: freed, not rx_dropped.
    assert nic.stats() == {"rx_nohandler": 0, "rx_dropped": 0, "rx_length_errors": 0,
                           "rx_otherhost_dropped": 0}
    assert m.tcp.drop_reasons == {"NOT_SPECIFIED": 2}


def test_ip_fragments_are_not_reassembled(nic, m):
    """Two datagrams whose other fragments never come. The kernel counts ReasmFails when
    ip_expire() gives the queue up (30 s later); the model, which does not reassemble, counts
    it with the fragment, under the same drop reason."""
    first = bytes(ETH / ip4(flags="MF", id=9) / TCP(flags="PA") / Raw(b"x" * 64))
    later = bytes(ETH / ip4(frag=20, id=10, proto=6) / Raw(b"y" * 64))
    v6 = bytes(ETH / IPv6(src="fd00::1", dst="fd00::2") / IPv6ExtHdrFragment(m=1, id=3)
               / TCP() / Raw(b"z" * 64))
    receive(nic, [first, later, v6])
    assert m.tcp.ip_mib == ip_mib(m, InReceives=2, ReasmReqds=2, ReasmFails=2)
    assert m.tcp.ip6_mib == ip_mib(m, InReceives=1, ReasmReqds=1, ReasmFails=1)
    assert m.tcp.drop_reasons == {"FRAG_REASM_TIMEOUT": 3}


def test_protocols_without_a_handler(nic, m):
    odd = bytes(ETH / ip4(proto=253) / Raw(b"x" * 30))
    odd6 = bytes(ETH / IPv6(src="fd00::1", dst="fd00::2", nh=253) / Raw(b"x" * 30))
    receive(nic, [odd, odd6])
    assert m.tcp.ip_mib == ip_mib(m, InReceives=1, InUnknownProtos=1)
    assert m.tcp.ip6_mib == ip_mib(m, InReceives=1, InUnknownProtos=1)
    assert m.tcp.drop_reasons == {"IP_NOPROTO": 2}


def test_udp_and_icmp_are_delivered(nic, m):
    """ip_protocol_deliver_rcu() hands UDP and ICMP to their handlers (InDelivers): with no
    UDP socket __udp4_lib_rcv() counts NoPorts (NO_SOCKET); icmp_rcv() counts InMsgs and the
    type (IcmpMsg InType8) and consumes the echo request. IPv6 the same way (Udp6, Icmp6)."""
    udp = bytes(ETH / ip4() / UDP(sport=5, dport=53) / Raw(b"q" * 20))
    icmp = bytes(ETH / ip4() / ICMP() / Raw(b"p" * 20))
    v6 = IPv6(src="fd00::1", dst="fd00::2")
    udp6 = bytes(ETH / v6 / UDP(sport=5, dport=53) / Raw(b"q" * 20))
    echo6 = bytes(ETH / v6 / ICMPv6EchoRequest(data=b"p" * 20))
    receive(nic, [udp, icmp, udp6, echo6])
    assert m.tcp.ip_mib == ip_mib(m, InReceives=2, InDelivers=2)
    assert m.tcp.ip6_mib == ip_mib(m, InReceives=2, InDelivers=2)
    assert m.tcp.udp_mib == m.tcp.udp6_mib == {"InDatagrams": 0, "NoPorts": 1, "InErrors": 0}
    assert m.tcp.icmp_mib == {"InMsgs": 1, "InErrors": 0, "InType8": 1}
    assert m.tcp.icmp6_mib == {"InMsgs": 1, "InErrors": 0, "InType128": 1}
    assert m.tcp.drop_reasons == {"NO_SOCKET": 2}       # the echo requests are consumed
    assert m.tcp.mib["InSegs"] == 0


def test_udp_and_icmp_errors(nic, m):
    """The handlers' own checks: a UDP length past the datagram or below 8 is InErrors
    (PKT_TOO_SMALL); an ICMP message shorter than its header is InErrors (NOT_SPECIFIED); an
    ICMPv4 type past NR_ICMP_TYPES (18) counts its type, then InErrors (UNHANDLED_PROTO). A
    UDP length shorter than the datagram trims it, and the datagram still meets no socket."""
    frames = [bytes(ETH / ip4() / UDP(len=60) / Raw(b"q" * 20)),       # past the datagram
              bytes(ETH / ip4() / UDP(len=7) / Raw(b"q" * 20)),        # below the header
              bytes(ETH / ip4() / UDP(len=10) / Raw(b"q" * 20)),       # trimmed: NoPorts
              bytes(ETH / ip4(proto=17) / Raw(b"q" * 4)),              # no UDP header
              bytes(ETH / ip4(proto=1) / Raw(b"\x08\x00\x00")),       # 3 bytes of ICMP
              bytes(ETH / ip4() / ICMP(type=40))]
    receive(nic, frames)
    assert m.tcp.ip_mib == ip_mib(m, InReceives=6, InDelivers=6)
    assert m.tcp.udp_mib == {"InDatagrams": 0, "NoPorts": 1, "InErrors": 3}
    assert m.tcp.icmp_mib == {"InMsgs": 2, "InErrors": 2, "InType40": 1}
    assert m.tcp.drop_reasons == {"PKT_TOO_SMALL": 2, "NOT_SPECIFIED": 2, "NO_SOCKET": 1,
                                  "UNHANDLED_PROTO": 1}


def test_bad_input_leaves_every_buffer_accounted(nic, m):
    junk = [bytes(range(i % 256)) * (i % 5 + 1) for i in range(64)]
    f = Flow()
    receive(nic, [*junk, f.syn(), seg(f, 0)])
    assert nic.rx_queues[0].posted == (1024, 0)
    sk = sock(m, f)
    assert sk.read_all() == payload(MSS, seed=0)
    assert m.tcp.mib["PassiveOpens"] == 1
    sk.close()
    assert m.tcp._leaks() == []                         # no skb is left anywhere


def test_receive_checks_the_trace(nic):
    tr = Trace([Flow().syn()])
    tr.lengths[0] += 10
    raises(errno.EINVAL, nic.receive, tr)
    raises(errno.EINVAL, nic.receive, Trace([Flow().syn()]), 2)



def test_the_socket_hash_stays_sound_across_resizes(nic, m):
    """8,400 sockets (both ends of 4,200 connections) grow the hash past NM_SK_HASH_MIN (4,096
    buckets) twice. The socket table's new slots hold POISON_FREE until __sk_create clears
    them: a resize that hashed a slot before it was cleared would put it on a garbage
    bucket's chain and splice its own chain onto that one (seen once as a second socket opened
    on a 4-tuple at 10,000 connections)."""
    f = flows.generate(connections=4200, payload=100, seed=1)
    nic.receive(f.trace)
    assert _core._sk_hash_check(m) == []
    socks = m.tcp.sockets()
    assert len(socks) == len({(sk.local, sk.remote) for sk in socks}) == 8400
    assert all(m.tcp.lookup(sk.local, sk.remote) is sk for sk in socks)
    assert m.tcp.lookup(("192.0.2.1", 5201), ("2001:db8::2", 32768)) is None
    assert m.tcp.lookup(("192.0.2.1", 5201), ("192.0.2.2", 1 << 16)) is None
    assert m.tcp.mib["PassiveOpens"] == 4200
