# RACK-TLP's loss detection and PRR (the closed loop's senders, see tcp_output.pxi).
#
# Models tcp_rack_advance(), tcp_rack_reo_wnd(), tcp_rack_detect_loss(), tcp_rack_mark_lost()
# and tcp_rack_reo_timeout() (net/ipv4/tcp_recovery.c, RFC 8985: no reordering window before
# reordering is seen once the SACKed segments reach tp->reordering or in recovery, else
# min_rtt / 4 up to srtt; a 4.x-era copy in the search store has the older 1 ms floor, not
# followed), tcp_mark_skb_lost() and tcp_cwnd_reduction() (PRR, RFC 6937, net/ipv4/
# tcp_input.c), as of Linux 6.12 to 7.x. Loss detection is RACK-TLP (net.ipv4.tcp_recovery 1,
# tcp_early_retrans 3: Linux's defaults), not RFC 6675. Departs: no D-SACK growth of the
# reordering window (tcp_rack_update_reo_wnd(): reo_wnd_steps stays 1); min_rtt is the minimum
# over the connection (the kernel's windowed filter keeps 300 s, longer than any run).

cdef inline bint tcp_rack_sent_after(uint64_t t1, uint64_t t2, uint32_t seq1,
                                     uint32_t seq2) noexcept nogil:
    return t1 > t2 or (t1 == t2 and after(seq1, seq2))

cdef void tcp_rack_advance(nm_tcp_sender *s, nm_snd_ctx *ctx, nm_tcp_seg *seg) noexcept nogil:
    """``tcp_rack_advance()``: a delivered segment's RTT becomes RACK's (a retransmitted one's
    only when not below min_rtt: it may be the original's), and RACK's reference moves to it
    when it was sent after the one before."""
    cdef uint32_t rtt_us = <uint32_t>((ctx.now_ns - seg.xmit_ns) // 1000)
    if rtt_us < s.min_rtt_us and seg.sacked & TCPCB_EVER_RETRANS:
        return
    s.rack_advanced = 1
    s.rack_rtt_us = rtt_us
    if tcp_rack_sent_after(seg.xmit_ns, s.rack_mstamp, seg.end_seq, s.rack_end_seq):
        s.rack_mstamp = seg.xmit_ns
        s.rack_end_seq = seg.end_seq

cdef void tcp_mark_seg_lost(nm_tcp_sender *s, nm_snd_ctx *ctx, nm_tcp_seg *seg) noexcept nogil:
    """``tcp_mark_skb_lost()`` (and RACK's TCPLostRetransmit): lost, and a retransmission of
    it is no longer in flight."""
    if seg.sacked & TCPCB_SACKED_ACKED:
        return
    if seg.sacked & TCPCB_SACKED_RETRANS:
        seg.sacked &= ~TCPCB_SACKED_RETRANS
        s.retrans_out -= 1
        ctx.mib.TCPLostRetransmit += 1
    if not (seg.sacked & TCPCB_LOST):
        seg.sacked |= TCPCB_LOST
        s.lost_out += 1
    if before(seg.seq, s.rtx_hint):
        s.rtx_hint = seg.seq

cdef uint32_t tcp_rack_reo_wnd(nm_tcp_sender *s) noexcept nogil:
    """``tcp_rack_reo_wnd()``: before any reordering was seen, none in Recovery or Loss, nor
    once the SACKed segments reach tp->reordering (the DUPACK threshold, as RFC 8985 lets a
    sender start recovery); else min_rtt / 4 (reo_wnd_steps 1), at most srtt."""
    if not s.reord_seen:
        if s.tp.icsk_ca_state >= TCP_CA_Recovery or s.sacked_out >= s.reordering:
            return 0
    if s.min_rtt_us == NM_NO_RTT:
        return s.tp.srtt_us >> 3
    return min(s.min_rtt_us >> 2, s.tp.srtt_us >> 3)

cdef uint32_t tcp_rack_detect_loss(nm_tcp_sender *s, nm_snd_ctx *ctx) noexcept nogil:
    """``tcp_rack_detect_loss()`` (RFC 8985): a segment sent before the most recently
    delivered one is lost once RACK's RTT plus the reordering window has passed since it was
    sent (``tcp_rack_skb_timeout()`` <= 0); returns the longest wait still to go (us, 0:
    none). The kernel walks the segments in send order and stops at the first sent after
    RACK's; here every unSACKed segment is tested (the same outcome)."""
    cdef uint32_t reo_wnd = tcp_rack_reo_wnd(s), i, timeout = 0
    cdef int64_t remaining
    cdef nm_tcp_seg *seg
    for i in range(s.q_count):
        seg = __seg(s, i)
        if seg.sacked & TCPCB_SACKED_ACKED:
            continue
        if seg.sacked & TCPCB_LOST and not (seg.sacked & TCPCB_SACKED_RETRANS):
            continue
        if not tcp_rack_sent_after(s.rack_mstamp, seg.xmit_ns, s.rack_end_seq, seg.end_seq):
            continue
        remaining = (<int64_t>s.rack_rtt_us + reo_wnd
                     - <int64_t>((ctx.now_ns - seg.xmit_ns) // 1000))
        if remaining <= 0:
            tcp_mark_seg_lost(s, ctx, seg)
        else:
            timeout = max(timeout, <uint32_t>remaining)
    return timeout

cdef bint tcp_rack_mark_lost(nm_tcp_sender *s, nm_snd_ctx *ctx, uint32_t conn) noexcept nogil:
    """``tcp_rack_mark_lost()``: detect once RACK advanced; a pending wait is the reorder
    timer (plus TCP_TIMEOUT_MIN_US). Returns whether it armed that timer."""
    cdef uint32_t timeout
    if not s.rack_advanced:
        return False
    s.rack_advanced = 0
    timeout = tcp_rack_detect_loss(s, ctx)
    if timeout:
        inet_csk_reset_xmit_timer(s, ctx, conn, ICSK_TIME_REO_TIMEOUT,
                                  <uint64_t>usecs_to_jiffies(timeout + TCP_TIMEOUT_MIN_US) * 1000)
    return timeout != 0

cdef void tcp_rack_reo_timeout(nm_tcp_sender *s, nm_snd_ctx *ctx, uint32_t conn) noexcept nogil:
    """``tcp_rack_reo_timeout()``: the reordering window has passed: mark what is lost, enter
    Recovery if not in it (PRR's first step), retransmit; the RTO again."""
    cdef uint32_t prior_inflight = tcp_packets_in_flight(s)
    tcp_rack_detect_loss(s, ctx)
    if prior_inflight != tcp_packets_in_flight(s):
        if s.tp.icsk_ca_state != TCP_CA_Recovery:
            ctx.mib.TCPSackRecovery += 1
            tcp_enter_recovery(&s.tp)
            tcp_cwnd_reduction(s, 1, 0, 0)
        tcp_xmit_retransmit_queue(s, ctx, conn)
    if s.icsk_pending != ICSK_TIME_RETRANS:
        tcp_rearm_rto(s, ctx, conn)

cdef void tcp_cwnd_reduction(nm_tcp_sender *s, int32_t newly_acked_sacked, int32_t newly_lost,
                             int flag) noexcept nogil:
    """``tcp_cwnd_reduction()``: Proportional Rate Reduction (RFC 6937): while more than
    ssthresh is in flight, send ssthresh/prior_cwnd of what is delivered; below it, grow
    back toward ssthresh (slow-start reduction bound); one segment at least when the
    reduction starts, so the fast retransmit goes."""
    cdef nm_tcp_cc_sock *tp = &s.tp
    cdef int64_t sndcnt, delta = <int64_t>tp.snd_ssthresh - tcp_packets_in_flight(s)
    if newly_acked_sacked <= 0 or tp.prior_cwnd == 0:
        return
    tp.prr_delivered += newly_acked_sacked
    if delta < 0:
        sndcnt = (<int64_t>((<uint64_t>tp.snd_ssthresh * tp.prr_delivered + tp.prior_cwnd - 1)
                            // tp.prior_cwnd) - tp.prr_out)
    else:
        sndcnt = max(<int64_t>tp.prr_delivered - tp.prr_out, <int64_t>newly_acked_sacked)
        if flag & FLAG_SND_UNA_ADVANCED and not newly_lost:
            sndcnt += 1
        sndcnt = min(delta, sndcnt)
    sndcnt = max(sndcnt, <int64_t>(0 if tp.prr_out else 1))
    tp.snd_cwnd = <uint32_t>max(<int64_t>tcp_packets_in_flight(s) + sndcnt, 1)
