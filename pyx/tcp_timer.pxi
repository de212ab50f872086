# The closed loop's senders, timers: what the retransmit timer does when it fires.
#
# Models tcp_write_timer_handler(), tcp_retransmit_timer() with tcp_enter_loss()'s marking
# (tcp_timeout_mark_lost()), and tcp_probe_timer() -> tcp_send_probe0() (net/ipv4/tcp_timer.c,
# tcp_output.c), Linux 6.12 to 7.x at HZ 1000. Departs: no F-RTO (tcp_frto), no
# icsk_retransmits limit (tcp_write_timeout(): a closed-loop connection never gives up).

cdef void tcp_enter_loss_mark(nm_tcp_sender *s) noexcept nogil:
    """``tcp_enter_loss()``'s marking (``tcp_timeout_mark_lost()``): every segment not SACKed
    is lost, none is in flight as a retransmission; the loss probe is forgotten."""
    cdef uint32_t i
    cdef nm_tcp_seg *seg
    for i in range(s.q_count):
        seg = __seg(s, i)
        seg.sacked &= ~TCPCB_SACKED_RETRANS
        if not (seg.sacked & (TCPCB_SACKED_ACKED | TCPCB_LOST)):
            seg.sacked |= TCPCB_LOST
            s.lost_out += 1
    s.retrans_out = 0
    s.tlp_high_seq = 0
    s.rtx_hint = s.tp.snd_una
    s.rack_advanced = 0

cdef void tcp_retransmit_timer(nm_tcp_sender *s, nm_snd_ctx *ctx, uint32_t conn) noexcept nogil:
    """``tcp_retransmit_timer()`` (7.x): every RTO counts TCPTimeouts (a SYN's too); the
    first of a run (icsk_retransmits 0: snd_una has advanced since the last) also counts the
    state it ends (TCPSackRecoveryFail, TCPLossFailures, TCPSackFailures);
    ``tcp_enter_loss()`` (cwnd 1, everything out lost), the head retransmitted,
    icsk_retransmits counted, the RTO doubled (``icsk_backoff``) and rearmed. A SYN is sent
    again (TCPSynRetrans) with the same backoff."""
    cdef nm_tcp_cc_sock *tp = &s.tp
    if tp.packets_out == 0:
        return
    ctx.mib.TCPTimeouts += 1
    if s.state == NM_SND_SYN_SENT:
        ctx.mib.TCPSynRetrans += 1
        ctx.mib.RetransSegs += 1
        __seg(s, 0).sacked |= TCPCB_EVER_RETRANS
        __snd_emit(ctx, conn, __seg(s, 0), True)
    else:
        if s.icsk_retransmits == 0:
            if tp.icsk_ca_state == TCP_CA_Recovery:
                ctx.mib.TCPSackRecoveryFail += 1
            elif tp.icsk_ca_state == TCP_CA_Loss:
                ctx.mib.TCPLossFailures += 1
            elif tp.icsk_ca_state == TCP_CA_Disorder or s.sacked_out:
                ctx.mib.TCPSackFailures += 1
        tcp_enter_loss(tp)
        tcp_enter_loss_mark(s)
        if s.icsk_retransmits < 255:
            s.icsk_retransmits += 1
        tcp_xmit_retransmit_queue(s, ctx, conn)
    tcp_retransmit_timer_backoff(tp)
    inet_csk_reset_xmit_timer(s, ctx, conn, ICSK_TIME_RETRANS, <uint64_t>tp.icsk_rto * 1000)

cdef void tcp_probe_timer(nm_tcp_sender *s, nm_snd_ctx *ctx, uint32_t conn) noexcept nogil:
    """``tcp_probe_timer()`` -> ``tcp_send_probe0()``: with nothing out and the window shut,
    ``tcp_write_wakeup()`` sends what the window now takes, or ``tcp_xmit_probe_skb()`` a
    segment at snd_una - 1 without data, which draws an ACK (TCPWinProbe); the probe backs
    off as the RTO does."""
    cdef nm_tcp_seg probe
    cdef uint64_t n0 = ctx.nout
    s.icsk_pending = 0
    if s.tp.packets_out or not before(s.tp.snd_nxt, tcp_send_end(s)):
        return
    tcp_snd_write_xmit(s, ctx, conn)
    if ctx.nout != n0:
        s.tp.icsk_backoff = 0
        return
    probe.seq = probe.end_seq = s.tp.snd_una - 1
    probe.tcp_flags = 0
    __snd_emit(ctx, conn, &probe, False)
    ctx.mib.TCPWinProbe += 1
    if s.tp.icsk_backoff < 15:
        s.tp.icsk_backoff += 1
    inet_csk_reset_xmit_timer(s, ctx, conn, ICSK_TIME_PROBE0,
                              inet_csk_rto_backoff(&s.tp, TCP_RTO_MAX) * 1000)

cdef void tcp_write_timer(nm_tcp_sender *s, nm_snd_ctx *ctx, uint32_t conn) noexcept nogil:
    """``tcp_write_timer_handler()`` for the heap event of ``s``: nothing when the timer was
    cancelled; the event pushed again when the timer moved later; else the handler of the
    pending timer (reorder, loss probe, RTO, zero-window probe)."""
    cdef uint8_t what = s.icsk_pending
    s.timer_ev = 0
    if what == 0 or s.state == NM_SND_DONE:
        return
    if s.icsk_timeout > ctx.now_ns:
        if nm_event_push(ctx.timers, s.icsk_timeout, NM_EV_SND_TIMER, conn) < 0:
            ctx.err = -ENOMEM
        s.timer_ev = s.icsk_timeout
        return
    s.tp.tcp_mstamp = ctx.now_ns // 1000
    if what == ICSK_TIME_REO_TIMEOUT:             # pending stays: tcp_rearm_rto() reads it
        tcp_rack_reo_timeout(s, ctx, conn)
    elif what == ICSK_TIME_LOSS_PROBE:
        tcp_send_loss_probe(s, ctx, conn)
    elif what == ICSK_TIME_RETRANS:
        s.icsk_pending = 0
        tcp_retransmit_timer(s, ctx, conn)
    else:
        tcp_probe_timer(s, ctx, conn)
