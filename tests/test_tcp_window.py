"""The receive window enforced (``tcp_validate_incoming()``'s ``tcp_sequence()``, the zero
window of ``tcp_data_queue()``), in the shape of packetdrill scripts (``Drill`` of rxutil):
segments in, the ACKs' fields and the MIB counters out. ``m.tcp.rcvbuf`` plays
``setsockopt(SO_RCVBUF)`` on the listener, already doubled: 20000 is packetdrill's
``SO_RCVBUF [10000]``, so ``tcp_select_initial_window()`` offers 8760 without window scaling
(``rcv_wscale`` 0: the locked buffer clamps the window). Segments are 1000 bytes
(``--mss=1000``); ACK and SACK fields are in segments."""
import pytest
from rxutil import MSS, Drill, close_all


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


def test_zero_window_and_the_update_on_read(nic, m):
    """``tcp_select_window()`` goes to zero as the unread queue fills ``sk_rcvbuf``
    (TCPWantZeroWindowAdv, TCPToZeroWindowAdv); data at ``rcv_nxt`` is then refused by
    ``tcp_sequence()`` while the queue holds data (BeyondWindow, TCP_INVALID_END_SEQUENCE).
    The read that empties the queue sends the window update at once (``tcp_cleanup_rbuf()``:
    the new window is at least twice what was left, TCPFromZeroWindowAdv), and the segment
    sent again is taken. (``tcp_data_queue()``'s TCPZeroWindowDrop needs a zero window with an
    empty receive queue, which this update prevents.)"""
    d = drill(m, nic)
    for k in range(0, 9, 3):
        d.burst(100 + k, k, 3)
    assert d.acks(500) == [(100, 3, 6000, []), (143, 9, 0, [])]
    assert m.tcp.mib["TCPToZeroWindowAdv"] == 1
    d.seg(600, 9)
    assert d.acks() == [(600, 9, 0, [])]
    assert d.read(100000) == 9000
    assert d.acks() == [(600, 9, 8000, [])]
    assert m.tcp.mib["TCPFromZeroWindowAdv"] == 1
    d.seg(700, 9)
    assert d.sk.info()["rcv_nxt"] == d.base + 10 * 1000
    assert (m.tcp.mib["TCPZeroWindowDrop"], m.tcp.mib["BeyondWindow"]) == (0, 1)
    assert m.tcp.drop_reasons == {"TCP_INVALID_END_SEQUENCE": 1}
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


@pytest.mark.parametrize("moderate", [True, False])
def test_rcvbuf_autotuning_and_window_growth(nic, m, moderate):
    """A sender that fills the advertised window each 10 ms round trip, a reader that drains
    the queue each round: ``tcp_rcv_rtt_measure()`` finds the 10 ms RTT once a window's worth
    has arrived; at the next read ``tcp_rcv_space_adjust()`` (per skb copied) sees 46336
    bytes taken (less those still queued) beat ``rcvq_space`` (14600, ``tcp_init_buffer_space()``:
    10 segments) and ``tcp_rcvbuf_grow()`` raises ``sk_rcvbuf`` from tcp_rmem[1] (131072) to
    the space of 2 * 46336 plus the slow-start growth (991106), the clamp following (495553);
    ``tcp_grow_window()`` then lets ``rcv_ssthresh`` and the advertised window climb towards
    it. With ``net.ipv4.tcp_moderate_rcvbuf`` off nothing grows past tcp_rmem[1]'s window."""
    m.tcp.moderate_rcvbuf = moderate
    d = Drill(m, nic)
    d.syn()
    i, win, hist = 0, 501, []
    for rtt in range(5):
        n = (win << 7) // MSS
        for k in range(0, n, 16):
            d.burst(10 * rtt + 1, i, min(16, n - k))
            i += min(16, n - k)
        d.read(10 ** 8)
        win = d.acks()[-1][2]
        info = d.sk.info()
        hist.append((n, info["rcvbuf"], info["window_clamp"], info["rcv_ssthresh"], win))
    assert d.sk.info()["rcv_rtt_us"] == 10000
    if moderate:
        assert hist == [(44, 131072, 64076, 64076, 501), (44, 991106, 495553, 64076, 501),
                        (44, 991106, 495553, 191500, 1497), (132, 991106, 495553, 411553, 3216),
                        (284, 991106, 495553, 461953, 3610)]
    else:
        assert hist == [(44, 131072, 64076, 64076, 501)] * 5
    assert (m.tcp.mib["BeyondWindow"], m.tcp.mib["PruneCalled"]) == (0, 0)
    close_all(m)
