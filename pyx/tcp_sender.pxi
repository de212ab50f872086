# The closed loop's TCP senders: output, ACK processing, SACK, RACK-TLP, PRR and the RTO, in C.
#
# Models, as of Linux 6.12 to 7.x at HZ 1000 (read in torvalds/linux): tcp_write_xmit() and
# tcp_snd_wnd_test() (net/ipv4/tcp_output.c), tcp_xmit_retransmit_queue(), tcp_send_loss_probe()
# and tcp_schedule_loss_probe(); tcp_ack(), tcp_ack_update_window(), tcp_clean_rtx_queue(),
# tcp_sacktag_write_queue() (tcp_sacktag_one(), D-SACK detection, tcp_check_sack_reordering()),
# tcp_process_tlp_ack(), tcp_fastretrans_alert() (the RACK path: tcp_identify_packet_loss(),
# tcp_time_to_recover()'s "the loss is proven", tcp_try_to_open()), tcp_cwnd_reduction() (PRR,
# RFC 6937) and tcp_cong_control() (net/ipv4/tcp_input.c); tcp_rack_advance(),
# tcp_rack_reo_wnd(), tcp_rack_detect_loss(), tcp_rack_mark_lost(), tcp_rack_reo_timeout()
# (net/ipv4/tcp_recovery.c, RFC 8985: no reordering window before reordering is seen once the
# SACKed segments reach tp->reordering or in recovery, else min_rtt / 4 up to srtt; a 4.x-era
# copy in the search store has the older 1 ms floor, not followed); tcp_rearm_rto(),
# tcp_retransmit_timer()
# and tcp_enter_loss()'s marking, tcp_probe_timer() (net/ipv4/tcp_timer.c). Loss detection is
# RACK-TLP (net.ipv4.tcp_recovery = 1, tcp_early_retrans = 3, Linux's defaults), not RFC 6675.
#
# Every transmission is a record in the context's ``out`` array (the closed loop makes a frame of
# each); timers are events on the context's heap. Departs: no F-RTO (tcp_frto), no undo (neither
# D-SACK nor timestamp undo: a D-SACK is counted, TCPDSACKRecv), so no reo_wnd_steps growth on
# D-SACKs (tcp_rack_update_reo_wnd(): the steps stay 1); min_rtt is the minimum over the
# connection (the kernel's windowed filter keeps 300 s, longer than any closed-loop run); no
# Nagle, TSO or pacing: one MSS per segment, cwnd-limited; no SACK renege; TSval in ms; RTT
# samples from cumulative ACKs only (none from SACKed segments: first_sackt).

cdef extern from *:
    """#define NM_NO_RTT UINT32_MAX"""
    const uint32_t NM_NO_RTT                # min_rtt_us before the first sample (~0U)

DEF TCPCB_SACKED_ACKED = 0x01
DEF TCPCB_SACKED_RETRANS = 0x02
DEF TCPCB_LOST = 0x04
DEF TCPCB_EVER_RETRANS = 0x80
DEF ICSK_TIME_RETRANS = 1
DEF ICSK_TIME_PROBE0 = 3
DEF ICSK_TIME_REO_TIMEOUT = 4
DEF ICSK_TIME_LOSS_PROBE = 5
DEF TCP_TIMEOUT_MIN_US = 2000      # TCP_TIMEOUT_MIN, 2 jiffies
DEF TCP_REORDERING = 3             # net.ipv4.tcp_reordering: the initial tp->reordering
DEF TCP_MAX_REORDERING = 300       # net.ipv4.tcp_max_reordering
DEF FLAG_DATA_SACKED = 0x20
DEF FLAG_SND_UNA_ADVANCED = 0x400
DEF FLAG_SET_XMIT_TIMER = 0x1000
DEF FLAG_DSACKING_ACK = 0x800
DEF FLAG_DSACK_TLP = 0x20000
DEF NM_EV_SND_TIMER = 1            # the heap event of a sender's retransmit timer (arg: conn)

cdef enum:
    NM_SND_CLOSED = 0
    NM_SND_SYN_SENT = 1
    NM_SND_ESTABLISHED = 2
    NM_SND_DONE = 3                 # the FIN is acknowledged


cdef struct nm_snd_xmit:           # one segment handed to the device
    uint32_t conn
    uint32_t seq
    uint32_t len                    # payload bytes
    uint8_t flags                   # TCPHDR_*
    uint8_t retrans


cdef struct nm_snd_ctx:            # what the senders share: the clock, the MIB, output, timers
    uint64_t now_ns
    nm_tcp_snd_mib *mib
    nm_snd_xmit *out
    uint64_t nout
    uint64_t out_cap
    nm_event_heap *timers
    int err                         # -ENOMEM once an array could not grow


# ---- the retransmit queue ----------------------------------------------------------------------

cdef inline nm_tcp_seg *__seg(nm_tcp_sender *s, uint32_t i) noexcept nogil:
    return &s.q[(s.q_head + i) & (s.q_cap - 1)]


cdef nm_tcp_seg *__seg_append(nm_tcp_sender *s) noexcept nogil:
    """Room for one more segment at the tail (the ring doubles, unwrapped), or NULL."""
    cdef uint32_t cap = s.q_cap * 2 if s.q_cap else 64, i
    cdef nm_tcp_seg *q
    if s.q_count == s.q_cap:
        q = <nm_tcp_seg *>malloc(cap * sizeof(nm_tcp_seg))
        if q == NULL:
            return NULL
        for i in range(s.q_count):
            q[i] = __seg(s, i)[0]
        free(s.q)
        s.q, s.q_cap, s.q_head = q, cap, 0
    s.q_count += 1
    return __seg(s, s.q_count - 1)


cdef uint32_t __seg_find(nm_tcp_sender *s, uint32_t seq) noexcept nogil:
    """The index of the first segment that does not end at or before ``seq``."""
    cdef uint32_t lo = 0, hi = s.q_count, mid
    while lo < hi:
        mid = (lo + hi) >> 1
        if after(__seg(s, mid).end_seq, seq):
            hi = mid
        else:
            lo = mid + 1
    return lo


cdef inline uint32_t tcp_packets_in_flight(nm_tcp_sender *s) noexcept nogil:
    """``tcp_packets_in_flight()``: packets_out - left_out + retrans_out."""
    return s.tp.packets_out - (s.sacked_out + s.lost_out) + s.retrans_out


cdef inline uint32_t tcp_wnd_end(nm_tcp_sender *s) noexcept nogil:
    return s.tp.snd_una + s.snd_wnd


cdef void tcp_sender_init(nm_tcp_sender *s, const nm_tcp_congestion_ops *ops, uint32_t iss,
                          uint64_t payload, uint16_t sport, bint fin) noexcept nogil:
    """A socket that will send ``payload`` bytes, then a FIN with ``fin`` (the application
    wrote them and closed; ``tcp_init_sock()``: cwnd 10, RTO 1 s), closed until
    ``tcp_connect()``."""
    free(s.q)
    memset(s, 0, sizeof(nm_tcp_sender))
    tcp_cong_init(&s.tp, ops)
    s.tp.prr = 1
    s.iss = iss
    s.write_seq = iss + 1 + <uint32_t>payload
    s.fin = fin
    s.tp.snd_una = s.tp.snd_nxt = iss
    s.sport = sport
    s.slot = NM_NIL
    s.min_rtt_us = NM_NO_RTT
    s.reordering = TCP_REORDERING


# ---- output --------------------------------------------------------------------------------------

cdef void __snd_emit(nm_snd_ctx *ctx, uint32_t conn, nm_tcp_seg *seg, bint retrans) noexcept nogil:
    cdef nm_snd_xmit *x
    if __grow(<void **>&ctx.out, &ctx.out_cap, ctx.nout + 1, sizeof(nm_snd_xmit)) < 0:
        ctx.err = -ENOMEM
        return
    x = &ctx.out[ctx.nout]
    ctx.nout += 1
    x.conn = conn
    x.seq = seg.seq
    x.len = seg.end_seq - seg.seq - ((seg.tcp_flags & (TCPHDR_SYN | TCPHDR_FIN)) != 0)
    x.flags = seg.tcp_flags | (0 if seg.tcp_flags & TCPHDR_SYN else TCPHDR_ACK)
    x.retrans = retrans
    seg.xmit_ns = ctx.now_ns
    ctx.mib.OutSegs += 1


cdef void inet_csk_reset_xmit_timer(nm_tcp_sender *s, nm_snd_ctx *ctx, uint32_t conn,
                                    uint8_t what, uint64_t when_us) noexcept nogil:
    """``inet_csk_reset_xmit_timer()``: one timer, ``what`` due ``when_us`` from now (at most
    TCP_RTO_MAX). The heap holds at most one event per sender that is not later than the
    timer; an event that finds the timer moved later is pushed again (``tcp_write_timer()``)."""
    s.icsk_pending = what
    s.icsk_timeout = ctx.now_ns + min(when_us, <uint64_t>TCP_RTO_MAX * 1000) * 1000
    if s.timer_ev == 0 or s.icsk_timeout < s.timer_ev:
        if nm_event_push(ctx.timers, s.icsk_timeout, NM_EV_SND_TIMER, conn) < 0:
            ctx.err = -ENOMEM
            return
        s.timer_ev = s.icsk_timeout


cdef inline int64_t tcp_rto_delta_us(nm_tcp_sender *s, nm_snd_ctx *ctx) noexcept nogil:
    """``tcp_rto_delta_us()``: how far the RTO of the head segment is in the future."""
    return (<int64_t>(__seg(s, 0).xmit_ns // 1000) + <int64_t>s.tp.icsk_rto * 1000
            - <int64_t>(ctx.now_ns // 1000))


cdef void tcp_rearm_rto(nm_tcp_sender *s, nm_snd_ctx *ctx, uint32_t conn) noexcept nogil:
    """``tcp_rearm_rto()``: off with nothing out; after a loss probe or reorder timer, the RTO
    of the head segment as it stands (at least a microsecond away); else icsk_rto from now."""
    cdef uint64_t rto_us = <uint64_t>s.tp.icsk_rto * 1000
    cdef int64_t delta
    if s.tp.packets_out == 0:
        s.icsk_pending = 0
        return
    if s.icsk_pending == ICSK_TIME_REO_TIMEOUT or s.icsk_pending == ICSK_TIME_LOSS_PROBE:
        delta = tcp_rto_delta_us(s, ctx)
        rto_us = <uint64_t>usecs_to_jiffies(<uint64_t>max(delta, <int64_t>1)) * 1000
    inet_csk_reset_xmit_timer(s, ctx, conn, ICSK_TIME_RETRANS, rto_us)


cdef bint tcp_schedule_loss_probe(nm_tcp_sender *s, nm_snd_ctx *ctx, uint32_t conn,
                                  bint advancing_rto) noexcept nogil:
    """``tcp_schedule_loss_probe()``: in Open or CWR with packets out, a probe in 2 srtt (plus
    the minimum RTO with one packet out, for a delayed ACK; TCP_TIMEOUT_INIT without an RTT),
    unless the RTO comes first."""
    cdef uint64_t timeout
    cdef int64_t rto_delta
    if (s.tp.packets_out == 0 or (s.tp.icsk_ca_state != TCP_CA_Open
                                  and s.tp.icsk_ca_state != TCP_CA_CWR)):
        return False
    if s.tp.srtt_us:
        timeout = (s.tp.srtt_us >> 2) + (TCP_RTO_MIN_US if s.tp.packets_out == 1
                                         else TCP_TIMEOUT_MIN_US)
        timeout = <uint64_t>usecs_to_jiffies(timeout) * 1000
    else:
        timeout = TCP_TIMEOUT_INIT * 1000
    rto_delta = (<int64_t>s.tp.icsk_rto * 1000 if advancing_rto
                 else tcp_rto_delta_us(s, ctx))
    if rto_delta > 0:
        timeout = min(timeout, <uint64_t>usecs_to_jiffies(<uint64_t>rto_delta) * 1000)
    inet_csk_reset_xmit_timer(s, ctx, conn, ICSK_TIME_LOSS_PROBE, timeout)
    return True


cdef void tcp_connect(nm_tcp_sender *s, nm_snd_ctx *ctx, uint32_t conn) noexcept nogil:
    """``tcp_connect()``: the SYN (MSS, SACK-permitted, timestamps, window scale: the frame's
    options) goes out, the RTO at TCP_TIMEOUT_INIT."""
    cdef nm_tcp_seg *seg = __seg_append(s)
    if seg == NULL:
        ctx.err = -ENOMEM
        return
    seg.seq, seg.end_seq, seg.sacked, seg.tcp_flags = s.iss, s.iss + 1, 0, TCPHDR_SYN
    s.state = NM_SND_SYN_SENT
    s.tp.snd_nxt = s.iss + 1
    s.tp.packets_out = 1
    s.tp.tcp_mstamp = ctx.now_ns // 1000
    ctx.mib.ActiveOpens += 1
    __snd_emit(ctx, conn, seg, False)
    inet_csk_reset_xmit_timer(s, ctx, conn, ICSK_TIME_RETRANS, <uint64_t>s.tp.icsk_rto * 1000)


cdef void tcp_finish_connect(nm_tcp_sender *s, nm_snd_ctx *ctx, uint32_t conn, uint32_t mss,
                             uint8_t wscale, uint32_t win, uint32_t tsval) noexcept nogil:
    """``tcp_rcv_synsent_state_process()`` for the SYN-ACK: the SYN is acknowledged (an RTT
    sample unless it was retransmitted), the peer's MSS (less the timestamp option), window
    scale and window taken, ESTABLISHED, and the data goes (``tcp_finish_connect()``, then
    ``tcp_data_snd_check()``)."""
    cdef nm_tcp_seg *seg = __seg(s, 0)
    s.tp.tcp_mstamp = ctx.now_ns // 1000
    if not (seg.sacked & TCPCB_EVER_RETRANS):
        tcp_ack_update_rtt(&s.tp, <int64_t>((ctx.now_ns - seg.xmit_ns) // 1000))
        s.min_rtt_us = min(s.min_rtt_us, <uint32_t>((ctx.now_ns - seg.xmit_ns) // 1000))
    s.q_head = (s.q_head + 1) & (s.q_cap - 1)
    s.q_count -= 1
    s.tp.packets_out = 0
    s.tp.snd_una = s.iss + 1
    s.rtx_hint = s.iss + 1
    s.mss_cache = mss - TCPOLEN_TSTAMP_ALIGNED
    s.snd_wscale = wscale
    s.snd_wnd = win                     # a SYN-ACK's window is never scaled
    s.snd_wl1 = 0
    s.ts_recent = tsval
    s.state = NM_SND_ESTABLISHED
    s.icsk_pending = 0
    tcp_snd_write_xmit(s, ctx, conn)


cdef inline uint32_t tcp_send_end(nm_tcp_sender *s) noexcept nogil:
    """Where the application's data ends in sequence space, with its FIN once it closed."""
    return s.write_seq + s.fin


cdef bint __snd_new_seg(nm_tcp_sender *s, nm_snd_ctx *ctx, uint32_t conn) noexcept nogil:
    """The next new segment out (``tcp_transmit_skb()`` of one MSS, or what is left, with the
    FIN when the application closed and PSH on the last), if the peer's window takes it
    (``tcp_snd_wnd_test()``: its end_seq, the FIN's included); whether it went."""
    cdef uint32_t end = s.tp.snd_nxt + s.mss_cache
    cdef uint8_t flags = 0
    cdef nm_tcp_seg *seg
    if not before(end, s.write_seq):
        end = s.write_seq
        flags = TCPHDR_PSH | (TCPHDR_FIN if s.fin else 0)
    if after(end + ((flags & TCPHDR_FIN) != 0), tcp_wnd_end(s)):
        return False
    seg = __seg_append(s)
    if seg == NULL:
        ctx.err = -ENOMEM
        return False
    seg.seq, seg.end_seq, seg.sacked = s.tp.snd_nxt, end + ((flags & TCPHDR_FIN) != 0), 0
    seg.tcp_flags = flags
    s.tp.snd_nxt = seg.end_seq
    s.tp.packets_out += 1
    __snd_emit(ctx, conn, seg, False)
    return True


cdef void tcp_snd_write_xmit(nm_tcp_sender *s, nm_snd_ctx *ctx, uint32_t conn) noexcept nogil:
    """``tcp_write_xmit()``: new segments of one MSS (the last one shorter, with the FIN) while
    cwnd has room (``tcp_cwnd_test()``) and each fits the peer's window
    (``tcp_snd_wnd_test()``); ``tcp_event_new_data_sent()`` arms the RTO when nothing was out,
    ``tcp_cwnd_validate()`` records whether cwnd was the limit, then one loss probe per tail
    loss episode is scheduled. With nothing out and the window too small, the persist timer
    (``tcp_check_probe_timer()``)."""
    cdef uint32_t sent = 0
    cdef bint cwnd_limited = False
    if s.state != NM_SND_ESTABLISHED:
        return
    while before(s.tp.snd_nxt, tcp_send_end(s)):
        if tcp_packets_in_flight(s) >= s.tp.snd_cwnd:
            cwnd_limited = True
            break
        if not __snd_new_seg(s, ctx, conn):
            break
        sent += 1
        if s.tp.packets_out == 1 or s.icsk_pending == ICSK_TIME_LOSS_PROBE:
            tcp_rearm_rto(s, ctx, conn)         # tcp_event_new_data_sent()
    if tcp_packets_in_flight(s) >= s.tp.snd_cwnd:
        cwnd_limited = True
    if sent or cwnd_limited:            # tcp_cwnd_validate()
        if not before(s.tp.snd_una, s.tp.high_seq) or cwnd_limited or \
                s.tp.packets_out > s.tp.max_packets_out:
            s.tp.is_cwnd_limited = cwnd_limited
            s.tp.max_packets_out = s.tp.packets_out
    if sent:
        s.tp.lsndtime = tcp_sk_jiffies32(&s.tp)
        if tcp_in_cwnd_reduction(&s.tp):
            s.tp.prr_out += sent
        tcp_schedule_loss_probe(s, ctx, conn, False)
    elif s.tp.packets_out == 0 and before(s.tp.snd_nxt, tcp_send_end(s)) and \
            s.icsk_pending == 0:
        inet_csk_reset_xmit_timer(s, ctx, conn, ICSK_TIME_PROBE0,
                                  inet_csk_rto_backoff(&s.tp, TCP_RTO_MAX) * 1000)


cdef void tcp_retransmit_seg(nm_tcp_sender *s, nm_snd_ctx *ctx, uint32_t conn,
                             nm_tcp_seg *seg) noexcept nogil:
    """``tcp_retransmit_skb()``: RetransSegs, and the segment is SACKED_RETRANS (retrans_out)
    until it is acknowledged or marked lost again."""
    ctx.mib.RetransSegs += 1
    s.retrans += 1
    if s.tp.icsk_ca_state == TCP_CA_Loss:
        ctx.mib.TCPSlowStartRetrans += 1
    else:
        ctx.mib.TCPFastRetrans += 1
    if not (seg.sacked & TCPCB_SACKED_RETRANS):
        s.retrans_out += 1
    seg.sacked |= TCPCB_SACKED_RETRANS | TCPCB_EVER_RETRANS
    __snd_emit(ctx, conn, seg, True)


cdef void tcp_xmit_retransmit_queue(nm_tcp_sender *s, nm_snd_ctx *ctx,
                                    uint32_t conn) noexcept nogil:
    """``tcp_xmit_retransmit_queue()``: the segments marked lost and not retransmitted yet, in
    sequence order from the hint, while cwnd has room; PRR counts them (prr_out); a
    retransmitted head rearms the RTO."""
    cdef uint32_t i
    cdef nm_tcp_seg *seg
    cdef bint rearm = False
    if s.lost_out == 0 or s.tp.packets_out == 0:
        return
    i = __seg_find(s, s.rtx_hint)
    while i < s.q_count:
        if tcp_packets_in_flight(s) >= s.tp.snd_cwnd:
            break
        seg = __seg(s, i)
        if (seg.sacked & TCPCB_LOST) and not (seg.sacked & (TCPCB_SACKED_ACKED
                                                            | TCPCB_SACKED_RETRANS)):
            if after(seg.end_seq, tcp_wnd_end(s)) and seg.seq != s.tp.snd_una:
                break
            tcp_retransmit_seg(s, ctx, conn, seg)
            if tcp_in_cwnd_reduction(&s.tp):
                s.tp.prr_out += 1
            if i == 0 and s.icsk_pending != ICSK_TIME_REO_TIMEOUT:
                rearm = True
        s.rtx_hint = seg.end_seq
        i += 1
    if rearm:
        inet_csk_reset_xmit_timer(s, ctx, conn, ICSK_TIME_RETRANS, <uint64_t>s.tp.icsk_rto * 1000)


# ---- RACK (net/ipv4/tcp_recovery.c) ----------------------------------------------------------

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


# ---- ACK processing (net/ipv4/tcp_input.c) -------------------------------------------------------

cdef void tcp_ack_update_window(nm_tcp_sender *s, uint32_t ack, uint32_t ack_seq,
                                uint32_t win) noexcept nogil:
    """``tcp_ack_update_window()`` / ``tcp_may_update_window()``: the window field scaled by
    the peer's wscale, taken from a newer ACK, a newer segment, or a larger window."""
    cdef uint32_t nwin = win << s.snd_wscale
    if (after(ack, s.tp.snd_una) or after(ack_seq, s.snd_wl1)
            or (ack_seq == s.snd_wl1 and nwin > s.snd_wnd)):
        s.snd_wl1 = ack_seq
        s.snd_wnd = nwin


cdef int tcp_sacktag_write_queue(nm_tcp_sender *s, nm_snd_ctx *ctx, uint32_t ack,
                                 uint32_t prior_snd_una, const uint32_t *sack, uint32_t nsack,
                                 uint32_t *newly_sacked) noexcept nogil:
    """``tcp_sacktag_write_queue()``: a first block below the ACK's cumulative ``ack``, or
    inside the second block, is a D-SACK (``tcp_check_dsack()``: TCPDSACKRecv; FLAG_DSACK_TLP
    when it covers the loss probe's retransmission); blocks at or below ``prior_snd_una`` are
    old; every other block tags the segments it covers whole (``tcp_sacktag_one()``:
    SACKED_ACKED, out of lost_out and retrans_out, RACK advanced); a never-retransmitted
    segment newly SACKed below the highest SACK before this ACK is reordering
    (``tcp_check_sack_reordering()``)."""
    cdef uint32_t b, i, start, end, reord = s.tp.snd_nxt, fack = tcp_highest_sack_seq(s)
    cdef int flag = 0
    cdef nm_tcp_seg *seg
    for b in range(nsack):
        start, end = sack[2 * b], sack[2 * b + 1]
        if not after(end, start):
            continue
        if b == 0 and (before(start, ack) or (
                nsack > 1 and not before(start, sack[2]) and not after(end, sack[3]))):
            ctx.mib.TCPDSACKRecv += 1
            flag |= FLAG_DSACKING_ACK
            if s.tlp_retrans and s.tlp_high_seq and not before(end, s.tlp_high_seq) and \
                    before(start, s.tlp_high_seq):
                flag |= FLAG_DSACK_TLP
            continue
        if after(end, s.tp.snd_nxt) or not after(end, prior_snd_una):   # old or bogus
            continue
        i = __seg_find(s, start)
        while i < s.q_count:
            seg = __seg(s, i)
            if after(seg.end_seq, end):
                break
            i += 1
            if before(seg.seq, start) or seg.sacked & TCPCB_SACKED_ACKED:
                continue
            if seg.sacked & TCPCB_SACKED_RETRANS:
                seg.sacked &= ~TCPCB_SACKED_RETRANS
                s.retrans_out -= 1
            if seg.sacked & TCPCB_LOST:
                seg.sacked &= ~TCPCB_LOST
                s.lost_out -= 1
            seg.sacked |= TCPCB_SACKED_ACKED
            s.sacked_out += 1
            newly_sacked[0] += 1
            flag |= FLAG_DATA_SACKED
            tcp_rack_advance(s, ctx, seg)
            if not (seg.sacked & TCPCB_EVER_RETRANS) and before(seg.seq, fack) and \
                    before(seg.seq, reord):
                reord = seg.seq                 # a hole filled without a retransmission
            if s.sacked_out == 1 or after(seg.end_seq, s.highest_sack):
                s.highest_sack = seg.end_seq
    if reord != s.tp.snd_nxt:
        tcp_check_sack_reordering(s, ctx, reord)
    return flag


cdef inline uint32_t tcp_highest_sack_seq(nm_tcp_sender *s) noexcept nogil:
    """``tcp_highest_sack_seq()``: the end of the highest SACKed segment (snd_una with none)."""
    return s.highest_sack if s.sacked_out and after(s.highest_sack, s.tp.snd_una) \
        else s.tp.snd_una


cdef void tcp_check_sack_reordering(nm_tcp_sender *s, nm_snd_ctx *ctx,
                                    uint32_t low_seq) noexcept nogil:
    """``tcp_check_sack_reordering()``: a segment below the highest SACK delivered without a
    retransmission: tp->reordering grows to the distance in segments (at most
    tcp_max_reordering), reord_seen counts it (RACK's reo_wnd applies from now),
    TCPSACKReorder."""
    cdef uint32_t fack = tcp_highest_sack_seq(s), metric
    if not before(low_seq, fack):
        return
    metric = fack - low_seq
    if metric > s.reordering * s.mss_cache and s.mss_cache:
        s.reordering = min((metric + s.mss_cache - 1) // s.mss_cache,
                           <uint32_t>TCP_MAX_REORDERING)
    s.reord_seen += 1
    ctx.mib.TCPSACKReorder += 1


cdef uint32_t tcp_snd_clean_rtx_queue(nm_tcp_sender *s, nm_snd_ctx *ctx, uint32_t ack,
                                      uint32_t *acked_sacked, int64_t *seq_rtt,
                                      int64_t *ca_rtt) noexcept nogil:
    """``tcp_clean_rtx_queue()``: the segments the ACK covers leave the queue (and the sacked,
    lost and retransmitted counts); RTT samples from the oldest and newest of them neither
    retransmitted nor SACKed before, none if a retransmission is acked (Karn); RACK advanced by
    those not SACKed before; a hole below the highest SACK filled without a retransmission is
    reordering (``tcp_check_sack_reordering()``). Returns the segments acked; ``acked_sacked``
    gets those not SACKed before. snd_una has moved already, as in ``tcp_ack()``."""
    cdef uint32_t n = 0, prior_fack = tcp_highest_sack_seq(s), reord = s.tp.snd_nxt
    cdef nm_tcp_seg *seg
    cdef uint64_t first = 0, last = 0
    cdef bint retrans_acked = False
    while s.q_count:
        seg = __seg(s, 0)
        if after(seg.end_seq, ack):
            break
        if seg.sacked & TCPCB_LOST:
            s.lost_out -= 1
        if seg.sacked & TCPCB_SACKED_RETRANS:
            s.retrans_out -= 1
        if seg.sacked & TCPCB_EVER_RETRANS:
            retrans_acked = True            # FLAG_RETRANS_DATA_ACKED: no sequence sample
        elif not (seg.sacked & TCPCB_SACKED_ACKED):
            if first == 0:
                first = seg.xmit_ns
            last = seg.xmit_ns
            if before(seg.seq, reord):
                reord = seg.seq
        if seg.sacked & TCPCB_SACKED_ACKED:
            s.sacked_out -= 1
        else:
            acked_sacked[0] += 1
            tcp_rack_advance(s, ctx, seg)
        s.tp.packets_out -= 1
        s.q_head = (s.q_head + 1) & (s.q_cap - 1)
        s.q_count -= 1
        n += 1
    if first and not retrans_acked:
        seq_rtt[0] = <int64_t>((ctx.now_ns - first) // 1000)
        ca_rtt[0] = <int64_t>((ctx.now_ns - last) // 1000)
    if n and before(reord, prior_fack):     # a hole filled without a retransmission
        tcp_check_sack_reordering(s, ctx, reord)
    return n


cdef void tcp_process_tlp_ack(nm_tcp_sender *s, uint32_t ack, int flag,
                              nm_snd_ctx *ctx) noexcept nogil:
    """``tcp_process_tlp_ack()``: a probe of new data, or one whose original arrived too
    (D-SACK, or a pure duplicate), ends the episode; an ACK past a retransmitted probe proves
    a loss the probe repaired: one cwnd reduction (CWR), TCPLossProbeRecovery."""
    if before(ack, s.tlp_high_seq):
        return
    if not s.tlp_retrans or flag & FLAG_DSACK_TLP:
        s.tlp_high_seq = 0
    elif after(ack, s.tlp_high_seq):
        tcp_init_cwnd_reduction(&s.tp)
        s.tlp_high_seq = 0
        tcp_set_ca_state(&s.tp, TCP_CA_CWR)
        tcp_end_cwnd_reduction(&s.tp)
        tcp_try_to_open(s)
        ctx.mib.TCPLossProbeRecovery += 1
    elif not (flag & (FLAG_SND_UNA_ADVANCED | FLAG_DATA_SACKED)):
        s.tlp_high_seq = 0


cdef inline void tcp_try_to_open(nm_tcp_sender *s) noexcept nogil:
    """``tcp_try_to_open()`` / ``tcp_try_keep_open()``: Disorder while SACKed or retransmitted
    segments are out, else Open (a CWR stays until its reduction ends)."""
    cdef uint8_t state = TCP_CA_Disorder if (s.sacked_out or s.retrans_out) else TCP_CA_Open
    if s.tp.icsk_ca_state != TCP_CA_CWR and s.tp.icsk_ca_state != state:
        tcp_set_ca_state(&s.tp, state)


cdef int tcp_fastretrans_alert(nm_tcp_sender *s, nm_snd_ctx *ctx, uint32_t conn,
                               int flag) noexcept nogil:
    """``tcp_fastretrans_alert()`` with RACK: a reduction ends once snd_una passes high_seq
    (CWR and Recovery: ``tcp_end_cwnd_reduction()``; Loss: Open, cwnd kept); then RACK marks
    losses (``tcp_identify_packet_loss()``: a reorder timer it arms keeps the xmit timer
    from being reset), and a proven loss outside Recovery and Loss enters Recovery
    (TCPSackRecovery; PRR from here), else ``tcp_try_to_open()``. Returns the flag."""
    cdef nm_tcp_cc_sock *tp = &s.tp
    if tp.icsk_ca_state >= TCP_CA_CWR and not before(tp.snd_una, tp.high_seq):
        if tp.icsk_ca_state == TCP_CA_Loss:
            tcp_set_ca_state(tp, TCP_CA_Open)
        else:
            tcp_end_cwnd_reduction(tp)
        tcp_try_to_open(s)
    if tcp_rack_mark_lost(s, ctx, conn):
        flag &= ~FLAG_SET_XMIT_TIMER
    if tp.icsk_ca_state == TCP_CA_Recovery or tp.icsk_ca_state == TCP_CA_Loss:
        return flag
    if s.lost_out:
        ctx.mib.TCPSackRecovery += 1
        tcp_enter_recovery(tp)
    else:
        tcp_try_to_open(s)
    return flag


cdef void tcp_ack(nm_tcp_sender *s, nm_snd_ctx *ctx, uint32_t conn, uint32_t ack,
                  uint32_t ack_seq, uint32_t win, const uint32_t *sack, uint32_t nsack,
                  uint32_t tsval) noexcept nogil:
    """``tcp_ack()`` for an established sender: an ACK below snd_una only has its SACK blocks
    read (then ``tcp_fastretrans_alert()``, ``tcp_xmit_recovery()`` and, as after every
    segment, ``tcp_data_snd_check()``), one past snd_nxt is ignored; else the window,
    ``tcp_snd_una_update()``, SACK tags, the cumulative ACK, the RTT (``tcp_ack_update_rtt()``:
    the sequence sample, else none: TSecr is in ms), the loss probe, ``tcp_fastretrans_alert()``
    when the ACK is dubious, the timers (``tcp_set_xmit_timer()``: a loss probe or the RTO,
    unless RACK armed its reorder timer), ``tcp_cong_control()`` (PRR in a reduction, else
    cong_avoid when snd_una advanced and cwnd was the limit), then ``tcp_xmit_recovery()`` and
    ``tcp_data_snd_check()``. The FIN's ACK ends the connection."""
    cdef nm_tcp_cc_sock *tp = &s.tp
    cdef uint32_t prior_snd_una = tp.snd_una, acked, acked_sacked = 0, newly_sacked = 0
    cdef uint32_t prior_lost
    cdef int64_t seq_rtt = -1, ca_rtt = -1
    cdef int flag = 0
    tp.tcp_mstamp = ctx.now_ns // 1000
    ctx.mib.InSegs += 1
    if s.state != NM_SND_ESTABLISHED:
        return
    if after(tsval, s.ts_recent) or s.ts_recent == 0:
        s.ts_recent = tsval
    if before(ack, prior_snd_una):      # an old ACK: its SACK blocks may still tell
        if nsack:
            flag = tcp_sacktag_write_queue(s, ctx, ack, prior_snd_una, sack, nsack,
                                           &newly_sacked)
            tcp_fastretrans_alert(s, ctx, conn, flag)
            tcp_xmit_retransmit_queue(s, ctx, conn)
            tcp_snd_write_xmit(s, ctx, conn)        # tcp_data_snd_check()
        return
    if after(ack, tp.snd_nxt):
        return
    tcp_ack_update_window(s, ack, ack_seq, win)
    if after(ack, prior_snd_una):           # tcp_snd_una_update()
        flag |= FLAG_SND_UNA_ADVANCED
        tp.snd_una = ack
        if before(s.rtx_hint, ack):
            s.rtx_hint = ack
    if nsack:
        flag |= tcp_sacktag_write_queue(s, ctx, ack, prior_snd_una, sack, nsack, &newly_sacked)
    acked = tcp_snd_clean_rtx_queue(s, ctx, ack, &acked_sacked, &seq_rtt, &ca_rtt)
    if seq_rtt >= 0:
        s.min_rtt_us = min(s.min_rtt_us, <uint32_t>ca_rtt)
        tcp_ack_update_rtt(tp, seq_rtt)
    if acked:
        flag |= FLAG_SET_XMIT_TIMER
        if tp.icsk_ca_ops.pkts_acked != NULL:
            tp.icsk_ca_ops.pkts_acked(tp, acked, ca_rtt)
    if s.tlp_high_seq:
        tcp_process_tlp_ack(s, ack, flag, ctx)
    prior_lost = s.lost_out
    if (not (flag & FLAG_SND_UNA_ADVANCED) or flag & (FLAG_DATA_SACKED | FLAG_DSACKING_ACK)
            or tp.icsk_ca_state != TCP_CA_Open):       # tcp_ack_is_dubious()
        flag = tcp_fastretrans_alert(s, ctx, conn, flag)
    if tp.packets_out == 0 and s.fin and not before(tp.snd_una, s.write_seq + 1):
        s.state = NM_SND_DONE
        s.icsk_pending = 0
        return
    if flag & FLAG_SET_XMIT_TIMER:      # tcp_set_xmit_timer()
        if not tcp_schedule_loss_probe(s, ctx, conn, True):
            tcp_rearm_rto(s, ctx, conn)
    acked_sacked += newly_sacked
    if tcp_in_cwnd_reduction(tp):
        tcp_cwnd_reduction(s, <int32_t>acked_sacked,
                           <int32_t>(s.lost_out - prior_lost) if s.lost_out > prior_lost else 0,
                           flag)
    elif flag & FLAG_SND_UNA_ADVANCED and tcp_is_cwnd_limited(tp):     # tcp_may_raise_cwnd()
        tp.icsk_ca_ops.cong_avoid(tp, ack, acked_sacked)
    tcp_xmit_retransmit_queue(s, ctx, conn)
    tcp_snd_write_xmit(s, ctx, conn)


# ---- timers (net/ipv4/tcp_timer.c) ---------------------------------------------------------------

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
    """``tcp_retransmit_timer()``: counted by the state it ends (TCPTimeouts from Open,
    TCPSackRecoveryFail, TCPLossFailures, TCPSackFailures), ``tcp_enter_loss()`` (cwnd 1,
    everything out lost), the head retransmitted, the RTO doubled (``icsk_backoff``) and
    rearmed. A SYN is sent again (TCPSynRetrans) with the same backoff."""
    cdef nm_tcp_cc_sock *tp = &s.tp
    if tp.packets_out == 0:
        return
    if s.state == NM_SND_SYN_SENT:
        ctx.mib.TCPSynRetrans += 1
        ctx.mib.RetransSegs += 1
        __seg(s, 0).sacked |= TCPCB_EVER_RETRANS
        __snd_emit(ctx, conn, __seg(s, 0), True)
    else:
        if tp.icsk_ca_state == TCP_CA_Recovery:
            ctx.mib.TCPSackRecoveryFail += 1
        elif tp.icsk_ca_state == TCP_CA_Loss:
            ctx.mib.TCPLossFailures += 1
        elif tp.icsk_ca_state == TCP_CA_Disorder or s.sacked_out:
            ctx.mib.TCPSackFailures += 1
        else:
            ctx.mib.TCPTimeouts += 1
        tcp_enter_loss(tp)
        tcp_enter_loss_mark(s)
        tcp_xmit_retransmit_queue(s, ctx, conn)
    tcp_retransmit_timer_backoff(tp)
    inet_csk_reset_xmit_timer(s, ctx, conn, ICSK_TIME_RETRANS, <uint64_t>tp.icsk_rto * 1000)


cdef void tcp_send_loss_probe(nm_tcp_sender *s, nm_snd_ctx *ctx, uint32_t conn) noexcept nogil:
    """``tcp_send_loss_probe()``: one probe per episode: new data when the window allows it,
    else the last segment again (``__tcp_retransmit_skb()``: RetransSegs, not retrans_out);
    TCPLossProbes; then the RTO."""
    cdef uint64_t before_out = ctx.nout
    cdef nm_tcp_seg *seg
    if s.tlp_high_seq == 0 and s.tp.packets_out:
        s.tlp_retrans = 0
        tcp_write_xmit_one(s, ctx, conn)
        if ctx.nout == before_out:
            seg = __seg(s, s.q_count - 1)
            ctx.mib.RetransSegs += 1
            s.retrans += 1
            seg.sacked |= TCPCB_EVER_RETRANS
            __snd_emit(ctx, conn, seg, True)
            s.tlp_retrans = 1
        ctx.mib.TCPLossProbes += 1
        s.tlp_high_seq = s.tp.snd_nxt
    s.icsk_pending = 0
    tcp_rearm_rto(s, ctx, conn)


cdef void tcp_write_xmit_one(nm_tcp_sender *s, nm_snd_ctx *ctx, uint32_t conn) noexcept nogil:
    """``tcp_write_xmit(push_one = 2)``: one new segment whatever cwnd says ("force out a
    loss probe pkt") if the window takes it; no loss probe scheduled."""
    if before(s.tp.snd_nxt, tcp_send_end(s)):
        __snd_new_seg(s, ctx, conn)


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


# ---- the Python boundary (tests) -----------------------------------------------------------------

cdef class CoreTcpSender:
    """One sender driven by hand (tests): ``connect()``, ``established()``, ``ack()``,
    ``write()`` (without ``fin``: the application has not closed) and ``advance()`` (its timers
    due by then) at given virtual times; ``out()`` the segments it
    sent since the last call as (seq, len, flags, retrans) tuples relative to the ISS."""

    cdef nm_tcp_sender s
    cdef nm_snd_ctx ctx
    cdef nm_tcp_snd_mib _mib
    cdef nm_event_heap heap

    def __cinit__(self, str cc="reno", uint64_t payload=1 << 20, uint32_t iss=1000,
                  bint fin=True):
        cdef const nm_tcp_congestion_ops *ops = tcp_ca_find(cc.encode())
        if ops == NULL:
            raise NetmemError(EINVAL, f"sender: unknown congestion control {cc!r}")
        tcp_sender_init(&self.s, ops, iss, payload, 40000, fin)
        self.ctx.mib = &self._mib
        self.ctx.timers = &self.heap

    def __dealloc__(self):
        free(self.s.q)
        free(self.ctx.out)
        free(self.heap.ev)

    cdef int _at(self, uint64_t now_ns) except -1:
        if now_ns < self.ctx.now_ns:
            raise NetmemError(EINVAL, "sender: time only moves forward")
        self.ctx.now_ns = now_ns
        return 0

    def connect(self, uint64_t now_ns=0):
        self._at(now_ns)
        tcp_connect(&self.s, &self.ctx, 0)

    def established(self, uint64_t now_ns, uint32_t mss=1460, uint8_t wscale=7,
                    uint32_t win=65535):
        self._at(now_ns)
        if self.s.state != NM_SND_SYN_SENT:
            raise NetmemError(EINVAL, "sender: established() without a SYN out")
        tcp_finish_connect(&self.s, &self.ctx, 0, mss, wscale, win, 0)

    def ack(self, uint64_t now_ns, uint32_t ack, uint32_t win=512, sacks=()):
        """An ACK of ``ack`` (relative to the ISS) with the window field ``win`` and SACK
        blocks ``sacks`` ((start, end) pairs, relative)."""
        cdef uint32_t sk[8]
        cdef uint32_t i = 0
        self._at(now_ns)
        if len(sacks) > 4:
            raise NetmemError(EINVAL, "sender: at most 4 SACK blocks")
        for a, b in sacks:
            sk[2 * i], sk[2 * i + 1] = self.s.iss + <uint32_t>a, self.s.iss + <uint32_t>b
            i += 1
        tcp_ack(&self.s, &self.ctx, 0, self.s.iss + ack, 1, win, sk, i, 0)

    def write(self, uint64_t now_ns, uint32_t nbytes):
        """The application writes ``nbytes`` more (``tcp_sendmsg()`` then
        ``tcp_push()``): EPIPE once it closed."""
        self._at(now_ns)
        if self.s.fin:
            raise NetmemError(EPIPE, "sender: write() after the FIN")
        self.s.write_seq += nbytes
        tcp_snd_write_xmit(&self.s, &self.ctx, 0)

    def advance(self, uint64_t now_ns):
        """Fire the timers due by ``now_ns``, each at its own time."""
        cdef nm_event ev
        while self.heap.n and self.heap.ev[0].time <= now_ns:
            nm_event_pop(&self.heap, &ev)
            self._at(max(ev.time, self.ctx.now_ns))
            tcp_write_timer(&self.s, &self.ctx, 0)
        self._at(now_ns)

    def out(self):
        cdef uint64_t i
        res = [(<uint32_t>(self.ctx.out[i].seq - self.s.iss), self.ctx.out[i].len,
                self.ctx.out[i].flags, bool(self.ctx.out[i].retrans))
               for i in range(self.ctx.nout)]
        self.ctx.nout = 0
        return res

    def scoreboard(self):
        """The retransmit queue: (seq, end_seq) relative to the ISS and the TCPCB_* bits of
        each segment, as three arrays."""
        cdef uint32_t i
        seq = _np.empty(self.s.q_count, _np.uint32)
        end = _np.empty(self.s.q_count, _np.uint32)
        sacked = _np.empty(self.s.q_count, _np.uint8)
        for i in range(self.s.q_count):
            seq[i] = <uint32_t>(__seg(&self.s, i).seq - self.s.iss)
            end[i] = <uint32_t>(__seg(&self.s, i).end_seq - self.s.iss)
            sacked[i] = __seg(&self.s, i).sacked
        return seq, end, sacked

    @property
    def mib(self):
        return dict(self._mib)

    @property
    def state(self):
        """The sender's fields by kernel name (sequence numbers relative to the ISS)."""
        cdef nm_tcp_sender *s = &self.s
        return {"snd_una": <uint32_t>(s.tp.snd_una - s.iss),
                "snd_nxt": <uint32_t>(s.tp.snd_nxt - s.iss), "snd_wnd": s.snd_wnd,
                "snd_cwnd": s.tp.snd_cwnd, "snd_ssthresh": s.tp.snd_ssthresh,
                "packets_out": s.tp.packets_out, "sacked_out": s.sacked_out,
                "lost_out": s.lost_out, "retrans_out": s.retrans_out,
                "icsk_ca_state": s.tp.icsk_ca_state, "icsk_pending": s.icsk_pending,
                "icsk_timeout": s.icsk_timeout, "icsk_rto": s.tp.icsk_rto,
                "icsk_backoff": s.tp.icsk_backoff, "srtt_us": s.tp.srtt_us >> 3,
                "mss_cache": s.mss_cache, "reordering": s.reordering,
                "tlp_high_seq": s.tlp_high_seq and <uint32_t>(s.tlp_high_seq - s.iss),
                "done": s.state == NM_SND_DONE}
