"""The receiver's ACKs (pyx/tcp_ack.pxi), in the shape of packetdrill scripts: segments go in
at given virtual times (``+t <``), the ACKs come out as ``m.tcp.acks()`` records (``> .``: time,
ack, window field, SACK blocks), each test naming the kernel functions it follows (6.6 to
6.12, HZ 1000)."""
import pytest
from rxutil import MSS, Drill, close_all, payload


def test_quickack_then_delayed_ack(nic, m):
    """``tcp_event_data_recv()`` starts in quick-ack mode (``tcp_incr_quickack()``: min(rcv_wnd
    / (2 * rcv_mss), TCP_MAX_QUICKACKS) = 16 ACKs), so the first 16 segments are ACKed at
    once; then one segment waits for the delayed-ACK timer (``tcp_send_delayed_ack()``: ato =
    TCP_ATO_MIN, 40 ms; ``tcp_delack_timer_handler()``, DelayedACKs), and once the reader has
    caught up a second full frame is ACKed at once (``__tcp_ack_snd_check()``: rcv_nxt -
    rcv_wup > rcv_mss and the window's right edge moves on). The window field starts at
    ``rcv_ssthresh``, 64076 (``tcp_init_buffer_space()``: tcp_full_space() of tcp_rmem[1],
    65536, less one advmss), aligned up to 128 and shifted by 7: 501 (``tcp_select_window()``);
    unread, each 2 KiB buffer takes 1 KiB of free space (8 units) off it."""
    d = Drill(m, nic)
    d.syn()
    for i in range(16):
        d.seg(1 + i, i)
    assert d.acks() == [(1 + i, i + 1, 501 - 8 * i, []) for i in range(16)]
    d.seg(20, 16)
    assert d.acks(59.9) == []
    assert d.acks(70) == [(60, 17, 373, [])]
    assert m.tcp.mib["DelayedACKs"] == 1
    assert d.read(100 * MSS) == 17 * MSS
    d.seg(100, 17)
    d.seg(101, 18)
    assert d.acks() == [(101, 19, 493, [])]
    assert m.tcp.mib["OutSegs"] == 18
    close_all(m)


def test_out_of_order_and_duplicates_ack_at_once(nic, m):
    """Out of quick-ack mode, data out of order is ACKed at once with its SACK blocks
    (``__tcp_ack_snd_check()``'s ofo test, ``tcp_sack_new_ofo_skb()``); an old duplicate
    enters quick-ack mode and is ACKed at once with its D-SACK first (``tcp_data_queue()``'s
    out_of_window: ``tcp_enter_quickack_mode()``, ``tcp_dsack_set()``); the segment that
    fills the hole is ACKed at once (ICSK_ACK_NOW) and the blocks it covers go
    (``tcp_sack_remove()``). Three blocks fit beside the timestamps."""
    d = Drill(m, nic)
    d.syn()
    for i in range(16):
        d.seg(1 + i, i)
    d.acks()
    d.seg(20, 17)
    d.seg(21, 19)
    assert d.acks() == [(20, 16, 381, [(17, 18)]), (21, 16, 381, [(19, 20), (17, 18)])]
    d.seg(22, 3)
    assert d.acks() == [(22, 16, 381, [(3, 4), (19, 20), (17, 18)])]
    d.seg(23, 16)
    assert d.acks() == [(23, 18, 359, [(19, 20)])]
    close_all(m)


@pytest.mark.parametrize("wscale,ts,win", [(True, True, 501), (False, True, 63712),
                                           (True, False, 501), (False, False, 63712)])
def test_window_field_follows_tcp_select_window(nic, m, wscale, ts, win):
    """The first ACK's window field: ``tcp_select_initial_window()`` offers tcp_rmem[1] at the
    6.6 scaling ratio (64 KiB) rounded down to the MSS (1448 with timestamps, 1460 without),
    capped at 65535; ``tcp_init_buffer_space()`` keeps one advmss of it for the application
    (``rcv_ssthresh`` 64076). With the SYN's window scale, ``rcv_wscale`` 7 (ilog2(tcp_rmem[2])
    - 15) and ``__tcp_select_window()`` aligns up to 128 before the shift; without, it keeps
    the multiple of ``rcv_mss`` (the segments' 1448) below 64076."""
    d = Drill(m, nic, wscale=wscale, ts=ts)
    d.syn()
    d.seg(1, 0)
    assert d.acks() == [(1, 1, win, [])]
    close_all(m)


def test_fin_ack_is_delayed_in_pingpong_mode(nic, m):
    """``tcp_fin()`` schedules an ACK and enters ping-pong mode, which ends quick-ack mode
    (``tcp_in_quickack_mode()``): the FIN is ACKed by the delayed-ACK timer, 40 ms later,
    which leaves ping-pong mode (``tcp_delack_timer_handler()``)."""
    d = Drill(m, nic)
    sk = d.syn()
    d.seg(1, 0, flags="FPA", size=100)
    assert d.acks() == []
    assert d.acks(50) == [(41, (100 + 1) / MSS, 509, [])]
    assert sk.info()["state"] == "CLOSE_WAIT" and m.tcp.mib["DelayedACKs"] == 1
    close_all(m)


def test_ack_ring_drops_when_full(nic, m):
    """The ring holds 4096 ACK records until ``m.tcp.acks()`` drains it; what does not fit is
    counted (``acks_dropped``) and still counted in OutSegs, as it left the socket. Each old
    duplicate is ACKed at once (``tcp_data_queue()``: DelayedACKLost, quick-ack mode)."""
    d = Drill(m, nic)
    d.syn()
    d.seg(1, 0)
    dup = d.f.data(payload(MSS, seed=0), flags="PA", seq=d.base)
    d.at(2, [dup] * 4200)
    acks = m.tcp.acks()
    assert len(acks) == 4096 and m.tcp.acks_dropped == 4201 - 4096
    assert m.tcp.mib["OutSegs"] == 4201 and m.tcp.mib["DelayedACKLost"] == 4200
    assert (acks["ack"][1:] == d.base + MSS).all() and (acks["nr_sack"][1:] == 1).all()
    close_all(m)


def test_ack_timestamps_echo_ts_recent(nic, m):
    """With timestamps, an ACK echoes the TSval ``tcp_replace_ts_recent()`` kept (the segment
    started at or before ``rcv_wup``) and carries the clock in ms (``tcp_clock_ms()``, no
    ``tsoffset``); without, both are 0."""
    d = Drill(m, nic)
    d.syn()
    d.at(1, [d.f.data(payload(MSS), flags="PA", seq=d.base, tsval=777)])
    a = m.tcp.acks()[-1]
    assert (int(a["tsecr"]), int(a["tsval"])) == (777, int(a["t_ns"]) // 10**6)
    close_all(m)
