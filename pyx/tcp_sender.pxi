# The closed loop's senders, input side: what an ACK does, and the Python boundary for tests.
#
# Models tcp_ack() (net/ipv4/tcp_input.c, Linux 6.12 to 7.x) with tcp_ack_update_window(),
# tcp_snd_una_update(), tcp_sacktag_write_queue() (tcp_sacktag_one(), tcp_check_dsack(),
# tcp_check_sack_reordering()), tcp_clean_rtx_queue(), tcp_ack_update_rtt(),
# tcp_process_tlp_ack(), tcp_fastretrans_alert() on the RACK path (tcp_identify_packet_loss(),
# tcp_time_to_recover(): lost_out, tcp_try_to_open()), tcp_set_xmit_timer() and
# tcp_cong_control(). The senders' other parts: tcp_output.pxi, tcp_recovery.pxi,
# tcp_timer.pxi. Departs: no undo (neither D-SACK nor timestamp undo: a D-SACK is counted,
# TCPDSACKRecv); RTT samples from cumulative ACKs only (none from SACKed segments:
# first_sackt); no SACK renege.

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
        s.icsk_retransmits = 0
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
