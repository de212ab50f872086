# The closed loop's TCP senders, output side: the segments, their retransmit queue, what goes
# out and when the retransmit timer is armed, in C (Linux 6.12 to 7.x at HZ 1000, read in
# torvalds/linux). Models tcp_connect() and the SYN-ACK's tcp_finish_connect(),
# tcp_write_xmit() with tcp_snd_wnd_test() and tcp_cwnd_validate(), tcp_retransmit_skb(),
# tcp_xmit_retransmit_queue(), tcp_schedule_loss_probe() and tcp_send_loss_probe()
# (net/ipv4/tcp_output.c), inet_csk_reset_xmit_timer() and tcp_rearm_rto(). The rest of the
# sender: tcp_recovery.pxi (RACK, PRR), tcp_timer.pxi (the timers' handlers), tcp_sender.pxi
# (ACK processing, the Python boundary).
#
# Every transmission is a record in the context's ``out`` array (the closed loop makes a frame
# of each); the retransmit timer is an event on the context's heap. Departs: no Nagle, TSO or
# pacing: one MSS per segment, cwnd-limited; TSval in ms.

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

cdef void tcp_write_xmit_one(nm_tcp_sender *s, nm_snd_ctx *ctx, uint32_t conn) noexcept nogil:
    """``tcp_write_xmit(push_one = 2)``: one new segment whatever cwnd says ("force out a
    loss probe pkt") if the window takes it; no loss probe scheduled."""
    if before(s.tp.snd_nxt, tcp_send_end(s)):
        __snd_new_seg(s, ctx, conn)

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
