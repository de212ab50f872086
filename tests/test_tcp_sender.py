"""The closed loop's TCP sender (pyx/tcp_output.pxi, tcp_recovery.pxi, tcp_timer.pxi,
tcp_sender.pxi) driven by hand-built ACKs: window and
cwnd limits, slow start, a SACK hole found by RACK's reorder timer then fast retransmit with
PRR, the tail loss probe, the RTO with exponential backoff and its MIB names, the
zero-window probe, D-SACK.
"""
import pytest

from netmem import NetmemError
from netmem._core import CoreTcpSender

US, MS = 1000, 1000000
MSS = 1448                       # 1460 less the timestamp option
K = 1000                         # the packetdrill PRR scripts' segment size
TCP_CA_Open, TCP_CA_Disorder, TCP_CA_CWR, TCP_CA_Recovery, TCP_CA_Loss = range(5)
FIN, SYN, ACK = 0x01, 0x02, 0x10


def sender(payload=100 * MSS, win=65535, cc="reno"):
    """Connected at 100 us (an RTT of 100 us from the SYN): the first flight is out."""
    s = CoreTcpSender(cc, payload=payload)
    s.connect(0)
    assert s.out() == [(0, 0, SYN, False)]
    s.established(100 * US, mss=1460, wscale=7, win=win)
    return s


def prr_sender(payload, wscale=7, t_syn=0, t_est=10 * MS):
    """The packetdrill PRR scripts' connection (CUBIC, no FIN): the SYN at ``t_syn``, the
    SYN-ACK at ``t_est`` with MSS 1012 (the scripts' senders add timestamps: 1000 a segment)
    and window 32792 << ``wscale``; returns it and the initial window's segments."""
    s = CoreTcpSender("cubic", payload=payload, fin=False)
    s.connect(t_syn)
    s.out()
    s.established(t_est, mss=K + 12, wscale=wscale, win=32792)
    return s, s.out()


def seg(i):
    return 1 + i * MSS


def test_first_flight_is_cwnd_10_of_one_mss_each():
    s = sender()
    out = s.out()
    assert [o[0] for o in out] == [seg(i) for i in range(10)]
    assert all(o[1] == MSS and o[2] == ACK and not o[3] for o in out)
    st = s.state
    assert st["mss_cache"] == MSS and st["srtt_us"] == 100 and st["packets_out"] == 10


def test_the_peers_window_limits_what_is_sent():
    """tcp_snd_wnd_test(): a SYN-ACK window of 4 segments lets 4 out; an ACK's window is
    scaled by the peer's wscale (7); cwnd does not grow while the window, not cwnd, is the
    limit (tcp_is_cwnd_limited())."""
    s = sender(win=4 * MSS + 10)
    assert len(s.out()) == 4
    s.ack(200 * US, seg(4), win=(6 * MSS + 100) >> 7)
    assert s.state["snd_wnd"] == ((6 * MSS + 100) >> 7) << 7
    assert len(s.out()) == 6
    assert s.state["snd_cwnd"] == 10


def test_slow_start_grows_cwnd_by_the_segments_acked():
    s = sender()
    s.out()
    s.ack(200 * US, seg(2))
    assert s.state["snd_cwnd"] == 12
    assert len(s.out()) == 4                      # 2 acked + 2 of growth


def test_three_sacked_segments_start_recovery_at_once_with_prr():
    """RFC 8985 / tcp_rack_reo_wnd(): before any reordering is seen, no reordering window once
    the SACKed segments reach tp->reordering (3): segment 0 is lost on the ACK that SACKs 1..9
    (Recovery, TCPSackRecovery), retransmitted first (TCPFastRetrans, RetransSegs), ssthresh
    halved by Reno; SACKs alone do not grow cwnd; PRR sends while delivered."""
    s = sender()
    s.out()
    s.ack(200 * US, seg(0), sacks=[(seg(1), seg(10))])
    st, mib = s.state, s.mib
    assert st["icsk_ca_state"] == TCP_CA_Recovery and st["snd_ssthresh"] == 5
    assert st["lost_out"] == 1 and st["sacked_out"] == 9
    assert mib["TCPSackRecovery"] == 1 and mib["TCPFastRetrans"] == mib["RetransSegs"] == 1
    out = s.out()
    assert out[0] == (seg(0), MSS, ACK, True)
    # PRR: in flight 0 + 1 retransmission, ssthresh 5: cwnd = in flight + min(ssthresh -
    # in flight, delivered - prr_out) -> one retransmission and new data up to 5 in flight
    assert len(out) == 5 and st["snd_cwnd"] == 5
    s.ack(400 * US, seg(14))                      # everything out so far
    st = s.state
    # recovery ends at ssthresh (5), then the same ACK's segments grow it in congestion
    # avoidance (tcp_cong_control() after tcp_fastretrans_alert()): 5 + 5 // 5
    assert st["icsk_ca_state"] == TCP_CA_Open and st["snd_ssthresh"] == 5
    assert st["snd_cwnd"] == 6


def test_two_sacked_segments_wait_for_rack_reorder_timer():
    """Below the DUPACK threshold RACK waits the reordering window, min_rtt / 4 (25 us here),
    plus TCP_TIMEOUT_MIN (2 ms) in jiffies (tcp_rack_mark_lost() arms ICSK_TIME_REO_TIMEOUT),
    then tcp_rack_reo_timeout() marks segment 0 lost and enters Recovery."""
    s = sender()
    s.out()
    s.ack(200 * US, seg(0), sacks=[(seg(1), seg(3))])
    st = s.state
    assert st["sacked_out"] == 2 and st["icsk_ca_state"] == TCP_CA_Disorder
    assert st["lost_out"] == 0 and st["icsk_pending"] == 4     # ICSK_TIME_REO_TIMEOUT
    assert st["icsk_timeout"] == 200 * US + 3 * MS
    assert st["snd_cwnd"] == 10                   # SACKs alone do not grow cwnd
    assert len(s.out()) == 2                      # the SACKed ones left room in flight
    s.advance(3 * MS)
    assert s.out() == []
    s.advance(3200 * US)
    assert s.out()[0] == (seg(0), MSS, ACK, True)
    assert s.state["icsk_ca_state"] == TCP_CA_Recovery and s.mib["TCPSackRecovery"] == 1


def test_reordering_seen_grows_tp_reordering_and_keeps_a_window():
    """Segment 5 SACKed, then 1..4 SACKed without a retransmission: reordering
    (tcp_check_sack_reordering(): TCPSACKReorder, tp->reordering to the distance, 5); from
    then on RACK keeps its window even with three or more SACKed."""
    s = sender()
    s.out()
    s.ack(200 * US, seg(0), sacks=[(seg(5), seg(6))])
    s.ack(210 * US, seg(0), sacks=[(seg(1), seg(6))])
    st, mib = s.state, s.mib
    assert mib["TCPSACKReorder"] == 1 and st["reordering"] == 5
    assert st["sacked_out"] == 5 and st["lost_out"] == 0 and st["icsk_pending"] == 4


def test_tail_loss_probe_then_rto_with_exponential_backoff():
    """Nothing is acknowledged: the loss probe goes at 2 srtt + 2 ms (new data: TCPLossProbes),
    then the RTO (200 ms floor on rttvar) marks everything lost, cwnd 1, the head again
    (TCPTimeouts, TCPSlowStartRetrans), icsk_rto doubles each time (icsk_backoff)."""
    s = sender()
    s.out()
    s.advance(4 * MS)
    assert s.out() == [(seg(10), MSS, ACK, False)]
    assert s.mib["TCPLossProbes"] == 1 and s.state["tlp_high_seq"] == seg(11)
    rto0 = s.state["icsk_rto"]
    assert rto0 == 201                            # srtt + rttvar (200 ms floor), in jiffies
    # "Reset s.t. tcp_rearm_rto will restart timer from now": the probe (at 3.1 ms) + rto
    assert s.state["icsk_timeout"] == 3100 * US + rto0 * MS
    s.advance(3100 * US + rto0 * MS)
    assert s.out() == [(seg(0), MSS, ACK, True)]
    st, mib = s.state, s.mib
    assert st["icsk_ca_state"] == TCP_CA_Loss and st["snd_cwnd"] == 1
    assert st["lost_out"] == 11 and st["icsk_backoff"] == 1 and st["icsk_rto"] == 2 * rto0
    assert mib["TCPTimeouts"] == 1 and mib["TCPSlowStartRetrans"] == 1
    t = st["icsk_timeout"]
    s.advance(t - 1)
    assert s.out() == []
    s.advance(t)
    assert s.out() == [(seg(0), MSS, ACK, True)]
    assert s.state["icsk_backoff"] == 2 and s.state["icsk_rto"] == 4 * rto0
    # 7.x counts every RTO as TCPTimeouts; the state's failure only for the first of a run
    assert s.mib["TCPTimeouts"] == 2 and s.mib["TCPLossFailures"] == 0
    # the head's ACK: a retransmission acked gives no RTT sample (Karn); slow start from 1
    s.ack(t + 100 * US, seg(1))
    assert s.state["snd_cwnd"] == 2 and s.state["icsk_rto"] == 4 * rto0
    assert [o[0] for o in s.out()] == [seg(1), seg(2)]
    # snd_una advanced (icsk_retransmits 0): the next RTO, still in Loss, is a TCPLossFailures
    s.advance(s.state["icsk_timeout"])
    assert s.out()[0][0] == seg(1)
    assert s.mib["TCPTimeouts"] == 3 and s.mib["TCPLossFailures"] == 1


def test_zero_window_probe():
    """A shut window with nothing out: the persist timer sends a probe at snd_una - 1 with no
    data (TCPWinProbe) and backs off; an ACK that opens the window lets data go."""
    s = sender(win=0)
    assert s.out() == []
    assert s.state["icsk_pending"] == 3           # ICSK_TIME_PROBE0
    s.advance(100 * US + 201 * MS)
    assert s.out() == [(0, 0, ACK, False)]
    assert s.mib["TCPWinProbe"] == 1 and s.state["icsk_backoff"] == 1
    s.ack(202 * MS, seg(0), win=512)
    assert len(s.out()) == 10


def test_dsack_is_counted_and_a_duplicate_ack_below_snd_una_only_reads_sacks():
    s = sender()
    s.out()
    s.ack(200 * US, seg(10))
    s.ack(300 * US, seg(10), sacks=[(seg(3), seg(4))])     # below the cumulative ACK: D-SACK
    assert s.mib["TCPDSACKRecv"] == 1
    s.ack(400 * US, seg(5))                                 # old: ignored
    assert s.state["snd_una"] == seg(10)


def test_fin_acked_ends_the_connection():
    s = sender(payload=3 * MSS + 5)
    out = s.out()
    assert out[-1] == (seg(3), 5, ACK | FIN | 0x08, False)
    s.ack(200 * US, seg(3) + 5 + 1)
    assert s.state["done"] and s.state["packets_out"] == 0


def test_time_does_not_go_back():
    s = sender()
    with pytest.raises(NetmemError):
        s.ack(10 * US, seg(1))


def test_selftest_tcp_fast_recovery_prr_ss_10pkt_lost_1():
    """Port of tools/testing/selftests/net/packetdrill/tcp_fast_recovery_prr-ss-10pkt-lost-1.pkt
    (PRR slow start, CUBIC; defaults.sh: tcp_recovery 1, SACK): the peer's MSS 1000 (our
    senders always add timestamps, so its SYN-ACK says 1012), window scale 7, RTT 100 ms; 10
    segments, the first lost, SACKs of 1, 2, 3 segments: the third starts recovery at once
    (cwnd 7, ssthresh 7); 7000 bytes more written then go one segment per segment SACKed,
    in-flight == ssthresh throughout; the ACK of 10001 ends recovery with cwnd 7."""
    s, out = prr_sender(10 * K, t_syn=100 * MS, t_est=200 * MS)
    assert [(o[0], o[1]) for o in out] == [(1 + i * K, K) for i in range(10)]
    s.ack(310 * MS, 1, win=320, sacks=[(1001, 2001)])
    s.ack(320 * MS, 1, win=320, sacks=[(1001, 3001)])
    assert s.out() == []
    s.ack(330 * MS, 1, win=320, sacks=[(1001, 4001)])
    assert s.out() == [(1, K, ACK, True)]                 # enter fast recovery
    st = s.state
    assert st["icsk_ca_state"] == TCP_CA_Recovery
    assert st["snd_cwnd"] == 7 and st["snd_ssthresh"] == 7
    s.write(350 * MS, 7 * K)
    assert s.out() == []
    for i, t in enumerate(range(360, 420, 10)):
        s.advance(t * MS)
        s.ack(t * MS, 1, win=320, sacks=[(1001, 5001 + i * K)])
        assert s.out() == [(10001 + i * K, K, ACK, False)]
    s.ack(430 * MS, 10001, win=320)
    assert s.out() == [(16001, K, ACK | 0x08, False)]      # P.
    st = s.state                                           # leave fast recovery
    assert st["icsk_ca_state"] == TCP_CA_Open
    assert st["snd_cwnd"] == 7 and st["snd_ssthresh"] == 7
    for t, ack in ((460, 12001), (480, 14001), (500, 16001), (520, 17001)):
        s.ack(t * MS, ack, win=320)
    assert s.state["packets_out"] == 0 and not s.state["done"]     # no FIN: not closed


def test_selftest_tcp_fast_recovery_prr_ss_30pkt_lost1_4():
    """Port of packetdrill's tcp_fast_recovery_prr-ss-30pkt-lost1_4.pkt: segments 1 to 4 of
    10 lost, SACKs of 5.., the third SACK starts recovery and each later one lets one lost
    segment out again; after everything is acknowledged, 10 more segments written go out
    ssthresh (7, CUBIC) at once."""
    s, out = prr_sender(10 * K)
    assert len(out) == 10
    s.ack(20 * MS, 1, win=320, sacks=[(4001, 5001)])
    s.ack(22 * MS, 1, win=320, sacks=[(4001, 6001)])
    assert s.out() == []
    for i, t in enumerate((22, 22, 22, 22)):
        s.ack(t * MS, 1, win=320, sacks=[(4001, 7001 + i * K)])
        assert s.out() == [(1 + i * K, K, ACK, True)]
    for ack in (1001, 2001, 3001):
        s.ack(32 * MS, ack, win=320, sacks=[(4001, 10001)])
    s.ack(32 * MS, 10001, win=320)
    assert s.out() == []
    s.write(42 * MS, 10 * K)
    assert [(o[0], o[1]) for o in s.out()] == [(10001 + i * K, K) for i in range(7)]


def test_selftest_tcp_fast_recovery_prr_ss_ack_below_snd_una_cubic():
    """Port of packetdrill's tcp_fast_recovery_prr-ss-ack-below-snd_una-cubic.pkt: an ACK
    reordered below snd_una still has its SACK blocks read, and the 2 MSS they newly SACK let
    2 more out: the lost 7001:8001 again and new data."""
    s, out = prr_sender(10 * K, wscale=8)
    assert len(out) == 10
    s.ack(20 * MS, 1, win=320, sacks=[(1001, 2001)])
    s.ack(20 * MS, 1, win=320, sacks=[(1001, 3001)])
    s.ack(20 * MS, 1, win=320, sacks=[(1001, 3001), (8001, 9001)])
    assert s.out() == [(1, K, ACK, True)]
    s.ack(32 * MS, 4001, win=320, sacks=[(8001, 9001)])
    assert [(o[0], o[1], o[3]) for o in s.out()] == [(4001 + i * K, K, True) for i in range(3)]
    s.write(32 * MS, 10 * K)
    assert s.out() == []
    s.ack(34 * MS, 3001, win=320, sacks=[(5001, 7001)])
    assert s.out() == [(7001, K, ACK, True), (10001, K, ACK, False)]


def test_selftest_tcp_fast_recovery_prr_ss_30pkt_lost_1_4_11_16():
    """Port of packetdrill's tcp_fast_recovery_prr-ss-30pkt-lost-1_4-11_16.pkt: segments 1-4
    and 11-16 of 20 lost; PRR through its conservative, reduction-bound and slow-start parts,
    and a retransmission lost again (RACK: TCPLostRetransmit) sent once more."""
    s, out = prr_sender(20 * K)
    assert len(out) == 10
    t = 20 * MS

    def step(dt, ack, sacks, want):
        nonlocal t
        t += dt
        s.ack(t, ack, win=320, sacks=sacks)
        assert [(o[0], o[1]) for o in s.out()] == want

    step(0, 1, [(4001, 5001)], [(10001, K)])
    step(2 * MS, 1, [(4001, 6001)], [(11001, K)])
    for i in range(4):                              # segments 1-4 again
        step(2 * MS, 1, [(4001, 7001 + i * K)], [(1 + i * K, K)])
    step(2 * MS, 1, [(4001, 11001)], [(12001, K)])   # PRR's reduction bound
    step(2 * MS, 1, [(4001, 12001)], [(13001, K)])
    step(10 * MS, 1001, [(4001, 12001)], [(14001, K), (15001, K)])   # PRR slow start
    step(2 * MS, 1001, [(2001, 12001)], [(1001, K), (16001, K)])
    assert s.mib["TCPLostRetransmit"] == 1
    step(2 * MS, 1001, [(2001, 13001)], [(17001, K)])     # in flight at ssthresh
    step(2 * MS, 1001, [(2001, 14001)], [(18001, K)])
