"""The receive window enforced (``tcp_validate_incoming()``'s ``tcp_sequence()``, the zero
window of ``tcp_data_queue()``), in the shape of packetdrill scripts (``Drill`` of rxutil):
segments in, the ACKs' fields and the MIB counters out. ``m.tcp.rcvbuf`` plays
``setsockopt(SO_RCVBUF)`` on the listener, already doubled: 20000 is packetdrill's
``SO_RCVBUF [10000]``, so ``tcp_select_initial_window()`` offers 8760 without window scaling
(``rcv_wscale`` 0: the locked buffer clamps the window). Segments are 1000 bytes
(``--mss=1000``); ACK and SACK fields are in segments."""
from rxutil import Drill, close_all


def drill(m, nic, **kw):
    m.tcp.rcvbuf = 20000
    d = Drill(m, nic, size=1000, ts=False, **kw)
    d.syn()
    return d


def test_rcv_big_endseq(nic, m):
    """Ports tools/testing/selftests/net/packetdrill/tcp_rcv_big_endseq.pkt (6.17, "tcp: do
    not accept packets beyond window"), with GRO packets of 6 and 10 segments where the script
    injects 50 (the model's frames stop at the MTU): ``tcp_sequence()`` refuses a packet in
    sequence whose end is past ``rcv_nxt + tcp_receive_window()`` while the receive queue holds
    data (TCP_INVALID_END_SEQUENCE), the same out of order, and one that starts past the window
    (TCP_INVALID_SEQUENCE); each counts BeyondWindow and draws ``tcp_send_dupack()``'s ACK at
    once (ack 4, win 5000: ``__tcp_select_window()``'s free space rounded to the MSS). Once
    the application has read the queue, the big packet is taken whole."""
    d = drill(m, nic)
    d.burst(100, 0, 4)
    assert d.acks() == [(100, 4, 5000, [])]
    d.burst(100, 4, 6)                          # in sequence
    assert d.acks() == [(100, 4, 5000, [])]
    d.burst(1100, 5, 6)                         # out of order
    assert d.acks() == [(1100, 4, 5000, [])]
    d.burst(1100, 70, 10)
    assert d.acks() == [(1100, 4, 5000, [])]
    assert m.tcp.mib["BeyondWindow"] == 3
    assert m.tcp.drop_reasons == {"TCP_INVALID_END_SEQUENCE": 2, "TCP_INVALID_SEQUENCE": 1}
    assert d.read(100000) == 4000
    d.burst(1100, 4, 6)
    assert d.acks(2000) == [(1140, 10, 3000, [])]
    assert m.tcp.mib["BeyondWindow"] == 3
    close_all(m)


def test_zero_window_drop(nic, m):
    """``tcp_data_queue()``: with the advertised window at zero (``tcp_select_window()``:
    TCPWantZeroWindowAdv, TCPToZeroWindowAdv), data at ``rcv_nxt`` is refused by
    ``tcp_sequence()`` while the queue holds data (BeyondWindow); once the queue is read (the
    model sends no window update on read yet) it passes ``tcp_sequence()`` and
    ``tcp_data_queue()`` drops it (TCPZeroWindowDrop, TCP_ZEROWINDOW), entering quick-ack
    mode: the ACK goes at once and opens the window."""
    d = drill(m, nic)
    for k in range(0, 9, 3):
        d.burst(100 + k, k, 3)
    assert d.acks(500) == [(100, 3, 6000, []), (143, 9, 0, [])]
    assert m.tcp.mib["TCPToZeroWindowAdv"] == 1
    d.seg(600, 9)
    assert d.acks() == [(600, 9, 0, [])]
    assert d.read(100000) == 9000
    d.seg(700, 9)
    assert d.acks() == [(700, 9, 8000, [])]
    assert (m.tcp.mib["TCPZeroWindowDrop"], m.tcp.mib["TCPFromZeroWindowAdv"]) == (1, 1)
    assert m.tcp.drop_reasons == {"TCP_INVALID_END_SEQUENCE": 1, "TCP_ZEROWINDOW": 1}
    close_all(m)


def test_bare_fin_into_a_zero_window(nic, m):
    """A bare FIN at ``rcv_nxt`` is taken into a zero window: ``tcp_sequence()`` does not
    count the FIN's sequence number against the window (the 2026 fix of "tcp: do not accept
    packets beyond window", Linux commit 1e3bb184e941) and ``tcp_data_queue()`` queues a bare
    FIN whatever the window ("tcp: accept bare FIN packets under memory pressure")."""
    d = drill(m, nic)
    for k in range(0, 9, 3):
        d.burst(100 + k, k, 3)
    d.acks(500)
    d.seg(600, 9, flags="FA", size=0)
    assert d.sk.info()["state"] == "CLOSE_WAIT"
    assert (m.tcp.mib["BeyondWindow"], m.tcp.mib["TCPZeroWindowDrop"]) == (0, 0)
    assert d.read(100000) == 9000 and d.sk.recv(10) == b""
    close_all(m)


def test_old_segments_draw_a_dupack(nic, m):
    """``tcp_sequence()``: a segment ending before ``rcv_wup`` is old (TCP_OLD_SEQUENCE);
    ``tcp_send_dupack()`` answers old data at once with a D-SACK (DelayedACKLost, quick-ack
    mode), and a pure ACK too, but at most one per ``tcp_invalid_ratelimit`` (500 ms) per
    socket (``tcp_oow_rate_limited()``: TCPACKSkippedSeq); data is never rate limited."""
    d = drill(m, nic, sack=True)
    d.burst(100, 0, 3)
    d.acks()
    d.seg(200, 1)
    d.seg(201, 1)
    assert d.acks() == [(200, 3, 6000, [(1, 2)]), (201, 3, 6000, [(1, 2)])]
    d.ack(300, 1)
    d.ack(301, 1)
    d.ack(900, 1)
    assert d.acks() == [(300, 3, 6000, []), (900, 3, 6000, [])]
    mib = m.tcp.mib
    assert (mib["DelayedACKLost"], mib["TCPDSACKOldSent"], mib["TCPACKSkippedSeq"]) == (2, 2, 1)
    assert m.tcp.drop_reasons == {"TCP_OLD_SEQUENCE": 5}
    close_all(m)
