# The receiver talks back (issue 18 part 1): ACK output and the advertised window, following
# net/ipv4/tcp_input.c, tcp_output.c and tcp_timer.c of 6.6 to 6.12 at HZ 1000.
# __tcp_ack_snd_check(), tcp_send_delayed_ack(), the delayed-ACK timer, tcp_event_data_recv()'s
# ato, quick-ack mode; tcp_select_window() / __tcp_select_window() with window scaling. Each ACK
# is a record in n.acks (nm_ack_rec), drained by m.tcp.acks().
#
# The delayed-ACK timer runs on the stack's clock (tcp_jiffies32()): before each frame a NAPI
# poll takes, at the end of every receive(), and when m.tcp.acks() drains, the sockets whose
# timer is due (time_after_eq(jiffies, icsk_ack.timeout)) send their ACK, in list order.

cdef enum:
    ICSK_ACK_SCHED = 1
    ICSK_ACK_TIMER = 2
    ICSK_ACK_NOW = 16
    TCP_ATO_MIN = 40                # HZ / 25
    TCP_DELACK_MIN = 40             # HZ / 25
    TCP_DELACK_MAX = 200            # HZ / 5
    TCP_TIMEOUT_INIT = 1000         # icsk_rto: no RTT is measured, so it stays at 1 s
    TCP_MAX_QUICKACKS = 16
    TCP_MSS_DEFAULT = 536
    TCP_MIN_MSS = 88
    TCP_MAX_WSCALE = 14
    TCP_SCALING_RATIO = 128         # TCP_DEFAULT_SCALING_RATIO of 6.6: half of the space
    TCP_RMEM_TO_WIN_SCALE = 8


cdef inline uint32_t tcp_win_from_space(uint64_t space) noexcept nogil:
    """Models ``tcp_win_from_space()`` (6.6+, ``scaling_ratio``). Departs: the ratio stays at
    ``TCP_DEFAULT_SCALING_RATIO`` (``tcp_measure_rcv_mss()`` does not update it yet)."""
    return <uint32_t>min((space * TCP_SCALING_RATIO) >> TCP_RMEM_TO_WIN_SCALE, 0x7fffffff)


cdef inline uint32_t tcp_receive_window(nm_sock *sk) noexcept nogil:
    """Models ``tcp_receive_window()``: what is left of the last advertised window."""
    cdef int32_t win = <int32_t>(sk.rcv_wup + sk.rcv_wnd - sk.rcv_nxt)
    return <uint32_t>win if win > 0 else 0


cdef void tcp_ack_init(nm_net *n, nm_sock *sk, uint8_t wscale_ok) noexcept nogil:
    """The window and ACK state of a passive open: ``tcp_openreq_init_rwin()`` ->
    ``tcp_select_initial_window()`` over the listener's ``tcp_full_space()`` (its sk_rcvbuf:
    tcp_rmem[1], or the ``SO_RCVBUF`` of ``m.tcp.rcvbuf``, which also clamps the window:
    SOCK_RCVBUF_LOCK), ``tcp_init_buffer_space()`` and ``tcp_initialize_rcv_mss()``. The MSS
    is the local one (1460 IPv4, 1440 IPv6, less the timestamps); ``rcv_wscale`` is
    ilog2(min(max(tcp_rmem[2], rmem_max), window_clamp)) - 15 when the SYN offered window
    scaling. Departs: no ISN is drawn (ISS 0)."""
    cdef uint32_t mss, space, wscale = 0, clamp = 0xffff << TCP_MAX_WSCALE
    cdef uint32_t full = tcp_win_from_space(sk.rcvbuf if sk.rcvbuf_lock else n.tcp_rmem[1])
    if sk.rcvbuf_lock:
        clamp = full
    sk.advmss = 1460 if sk.family == 4 else 1440
    mss = sk.advmss - (TCPOLEN_TSTAMP_ALIGNED if sk.tstamp_ok else 0)
    space = min(full, clamp)
    if space > mss:
        space -= space % mss
    sk.rcv_wnd = min(space, <uint32_t>0xffff)
    if wscale_ok:
        space = min(max(space, n.tcp_rmem[2]), clamp)
        wscale = min(max(<int>fls_long(space) - 1 - 15, 0), TCP_MAX_WSCALE)   # ilog2
    sk.rcv_wscale = <uint8_t>wscale
    sk.window_clamp = min(<uint32_t>0xffff << wscale, clamp)
    sk.rcv_ssthresh = sk.rcv_wnd
    sk.rcv_wup = sk.rcv_nxt
    sk.rcv_mss = max(min(sk.advmss, sk.rcv_wnd // 2, <uint32_t>TCP_MSS_DEFAULT),
                     <uint32_t>TCP_MIN_MSS)
    sk.snd_nxt = 1
    tcp_init_buffer_space(n, sk)


cdef uint32_t __tcp_select_window(nm_sock *sk) noexcept nogil:
    """Models ``__tcp_select_window()`` (``net.ipv4.tcp_shrink_window`` off, its default):
    free space from ``tcp_space()``, no shrinking, zero when below 1/16 of the full space or one
    MSS, capped at ``rcv_ssthresh``, aligned to the scale (or a multiple of the MSS without).
    Departs: ``tcp_under_memory_pressure()`` is false, so ``tcp_adjust_rcv_ssthresh()``
    never runs."""
    cdef int64_t mss = sk.rcv_mss, window
    cdef int64_t allowed = tcp_win_from_space(sk.rcvbuf)
    cdef int64_t full = min(<int64_t>sk.window_clamp, allowed)
    cdef int64_t free_space = tcp_win_from_space(sk.rcvbuf - min(sk.rmem_alloc, sk.rcvbuf))
    if mss > full:
        mss = full
        if mss <= 0:
            return 0
    if free_space < (full >> 1):
        sk.ack_quick = 0
        free_space &= ~((<int64_t>1 << sk.rcv_wscale) - 1)
        if free_space < (allowed >> 4) or free_space < mss:
            return 0
    free_space = min(free_space, <int64_t>sk.rcv_ssthresh)
    if sk.rcv_wscale:
        window = (free_space + (1 << sk.rcv_wscale) - 1) & ~((<int64_t>1 << sk.rcv_wscale) - 1)
    else:
        window = sk.rcv_wnd
        if window <= free_space - mss or window > free_space:
            window = free_space - free_space % mss
        elif mss == full and free_space > window + (full >> 1):
            window = free_space
    return <uint32_t>window


cdef uint16_t tcp_select_window(nm_net *n, nm_sock *sk) noexcept nogil:
    """Models ``tcp_select_window()``: never shrink what was offered (``TCPWantZeroWindowAdv``
    when zero was wanted), move ``rcv_wup``, scale; ``TCPToZeroWindowAdv`` and
    ``TCPFromZeroWindowAdv`` on the edges."""
    cdef uint32_t old_win = sk.rcv_wnd, cur_win = tcp_receive_window(sk)
    cdef uint32_t new_win = __tcp_select_window(sk), unit = <uint32_t>1 << sk.rcv_wscale
    if new_win < cur_win:
        if new_win == 0:
            n.tcp.TCPWantZeroWindowAdv += 1
        new_win = (cur_win + unit - 1) & ~(unit - 1)
    sk.rcv_wnd = new_win
    sk.rcv_wup = sk.rcv_nxt
    new_win = min(new_win, <uint32_t>0xffff << sk.rcv_wscale)  # tcp_workaround_signed_windows off
    new_win >>= sk.rcv_wscale
    if new_win == 0:
        if old_win:
            n.tcp.TCPToZeroWindowAdv += 1
    elif old_win == 0:
        n.tcp.TCPFromZeroWindowAdv += 1
    return <uint16_t>new_win


# ---- ACK output ---------------------------------------------------------------------------------

cdef inline void inet_csk_schedule_ack(nm_sock *sk) noexcept nogil:
    sk.ack_pending |= ICSK_ACK_SCHED


cdef inline bint tcp_in_quickack_mode(nm_sock *sk) noexcept nogil:
    """Models ``tcp_in_quickack_mode()`` (no route sets RTAX_QUICKACK)."""
    return sk.ack_quick and not sk.pingpong


cdef void tcp_incr_quickack(nm_sock *sk, uint32_t max_quickacks) noexcept nogil:
    """Models ``tcp_incr_quickack()``: half the window's worth of full frames, at least 2."""
    cdef uint32_t quickacks = sk.rcv_wnd // (2 * sk.rcv_mss)
    if quickacks == 0:
        quickacks = 2
    quickacks = min(quickacks, max_quickacks)
    if quickacks > sk.ack_quick:
        sk.ack_quick = <uint8_t>quickacks


cdef void tcp_enter_quickack_mode(nm_sock *sk, uint32_t max_quickacks) noexcept nogil:
    """Models ``tcp_enter_quickack_mode()``."""
    tcp_incr_quickack(sk, max_quickacks)
    sk.pingpong = 0
    sk.ato = TCP_ATO_MIN


cdef void tcp_event_data_recv(nm_net *n, nm_sock *sk, nm_skb *skb) noexcept nogil:
    """Models ``tcp_event_data_recv()`` for in-order data: schedule an ACK, measure
    ``rcv_mss`` and update ``ato`` from the gap since the last arrival. Departs: the
    ``tcp_measure_rcv_mss()`` part keeps only its first branch (a segment at least
    ``rcv_mss`` long sets it, up to ``advmss``; no ``ICSK_ACK_PUSHED`` for short ones), and
    the RTT is measured without timestamps only (``tcp_rcv_rtt_measure()``)."""
    cdef uint32_t now = tcp_jiffies32(n), m, ln
    inet_csk_schedule_ack(sk)
    ln = skb.gso_size if skb.gso_size else skb.len
    if ln >= sk.rcv_mss:
        sk.rcv_mss = min(ln, sk.advmss)
    tcp_rcv_rtt_measure(n, sk)
    if not sk.ato:
        tcp_incr_quickack(sk, TCP_MAX_QUICKACKS)
        sk.ato = TCP_ATO_MIN
    else:
        m = now - sk.lrcvtime
        if m <= TCP_ATO_MIN // 2:
            sk.ato = (sk.ato >> 1) + TCP_ATO_MIN // 2
        elif m < sk.ato:
            sk.ato = min((sk.ato >> 1) + m, <uint32_t>TCP_TIMEOUT_INIT)
        elif m > TCP_TIMEOUT_INIT:
            tcp_incr_quickack(sk, TCP_MAX_QUICKACKS)
    sk.lrcvtime = now
    if skb.len >= 128:
        tcp_grow_window(n, sk, skb, True)


cdef void tcp_send_ack(nm_net *n, uint32_t ski) noexcept nogil:
    """Models ``tcp_send_ack()`` -> ``__tcp_transmit_skb()``: the ACK (window from
    ``tcp_select_window()``, the SACK blocks of ``tcp_established_options()``, TSval/TSecr)
    goes into the ring; ``tcp_options_write()`` clears the D-SACK and ``tcp_event_ack_sent()``
    leaves quick-ack mode by one and clears the pending ACK and its timer. TSval is the
    stack's clock in ms (no per-connection ``tsoffset``)."""
    cdef nm_sock *sk = &n.socks[ski]
    cdef nm_ack_rec *r
    cdef uint16_t win = tcp_select_window(n, sk)
    n.tcp.OutSegs += 1
    if n.ack_head - n.ack_tail >= n.ack_cap:
        n.ack_dropped += 1
    else:
        r = &n.acks[n.ack_head & (n.ack_cap - 1)]
        n.ack_head += 1
        r.t_ns = n.now_ns if n.now_ns else n.m.clock_ns
        r.slot = ski
        r.seq = sk.snd_nxt
        r.ack = sk.rcv_nxt
        r.win = win
        r.flags = TCPHDR_ACK
        r.tsval = <uint32_t>(r.t_ns // 1000000) if sk.tstamp_ok else 0     # tcp_clock_ms()
        r.tsecr = sk.ts_recent if sk.tstamp_ok else 0
        r.nr_sack = <uint8_t>tcp_ack_sack_blocks(sk, r.sack) if sk.sack_ok else 0
    sk.dsack = 0
    if sk.ack_quick:                            # tcp_dec_quickack_mode()
        if sk.ack_pending & ICSK_ACK_SCHED and sk.ack_quick <= 1:
            sk.ack_quick = 0
            sk.ato = TCP_ATO_MIN
        elif sk.ack_pending & ICSK_ACK_SCHED:
            sk.ack_quick -= 1
    sk.ack_pending = 0                          # inet_csk_clear_xmit_timer(ICSK_TIME_DACK)


cdef inline uint64_t __jiffy_ns(uint32_t j) noexcept nogil:
    """The stack-clock ns at which tcp_jiffies32() reaches ``j`` (INITIAL_JIFFIES undone)."""
    return <uint64_t>(j - <uint32_t>(-300 * 1000)) * 1000000


cdef void tcp_send_delayed_ack(nm_net *n, uint32_t ski) noexcept nogil:
    """Models ``tcp_send_delayed_ack()``: the timer at ``ato`` (bounded by HZ/2, or by
    TCP_DELACK_MAX in ping-pong mode, then by ``icsk_delack_max``), or the ACK now if an armed
    timer is due within ato/4; an armed timer is never pushed later."""
    cdef nm_sock *sk = &n.socks[ski]
    cdef uint32_t ato = sk.ato, now = tcp_jiffies32(n), timeout
    if ato > TCP_DELACK_MIN:
        ato = min(ato, <uint32_t>(TCP_DELACK_MAX if sk.pingpong else 500))
    ato = min(ato, <uint32_t>TCP_DELACK_MAX)
    timeout = now + ato
    if sk.ack_pending & ICSK_ACK_TIMER:
        if <int32_t>(sk.ack_timeout - (now + (ato >> 2))) <= 0:
            tcp_send_ack(n, ski)
            return
        if <int32_t>(timeout - sk.ack_timeout) >= 0:
            timeout = sk.ack_timeout
    sk.ack_pending |= ICSK_ACK_SCHED | ICSK_ACK_TIMER
    sk.ack_timeout = timeout
    if not sk.on_delack:
        sk.on_delack = 1
        n.delack_list[n.delack_len] = ski
        n.delack_len += 1
    if n.delack_next == 0 or __jiffy_ns(timeout) < n.delack_next:
        n.delack_next = __jiffy_ns(timeout)


cdef void tcp_delack_timer_handler(nm_net *n, uint32_t ski) noexcept nogil:
    """Models ``tcp_delack_timer_handler()`` once the timer is due: a missed delayed ACK
    inflates ``ato`` (doubles it, up to ``icsk_rto``), or leaves ping-pong mode; the ACK goes,
    ``DelayedACKs``."""
    cdef nm_sock *sk = &n.socks[ski]
    sk.ack_pending &= ~ICSK_ACK_TIMER
    if sk.ack_pending & ICSK_ACK_SCHED:
        if not sk.pingpong:
            sk.ato = min(sk.ato << 1, <uint32_t>TCP_TIMEOUT_INIT)
        else:
            sk.pingpong = 0
            sk.ato = TCP_ATO_MIN
        tcp_send_ack(n, ski)
        n.tcp.DelayedACKs += 1


cdef void tcp_delack_run(nm_net *n) noexcept nogil:
    """Fire the delayed-ACK timers due on the stack's clock, each at its own expiry (its ACK's
    time), in list order; keep the rest, and their earliest deadline. A timer an ACK already
    cleared (no ICSK_ACK_TIMER) leaves the list."""
    cdef uint64_t now = n.now_ns if n.now_ns else n.m.clock_ns, nxt = 0, d, saved = n.now_ns
    cdef uint32_t i, j = 0, ski
    cdef nm_sock *sk
    if n.delack_next == 0 or now < n.delack_next:
        return
    for i in range(n.delack_len):
        ski = n.delack_list[i]
        sk = &n.socks[ski]
        if sk.used and sk.ack_pending & ICSK_ACK_TIMER:
            d = __jiffy_ns(sk.ack_timeout)
            if d <= now:
                n.now_ns = d                    # the handler runs at its expiry
                tcp_delack_timer_handler(n, ski)
                n.now_ns = saved
            else:
                n.delack_list[j] = ski
                j += 1
                nxt = d if nxt == 0 else min(nxt, d)
                continue
        sk.on_delack = 0
    n.delack_len = j
    n.delack_next = nxt


cdef void tcp_ack_snd_check(nm_net *n, uint32_t ski) noexcept nogil:
    """Models ``tcp_ack_snd_check()`` -> ``__tcp_ack_snd_check(sk, 1)`` (6.x): at once when
    more than one full frame is unacknowledged and the reader has caught up or the window's
    right edge would not move back, in quick-ack mode, on ICSK_ACK_NOW, or with data out of
    order; else delayed. Departs: SACK compression (``tcp_comp_sack_*``) is not modelled, so
    every ACK for out-of-order data goes at once."""
    cdef nm_sock *sk = &n.socks[ski]
    if not (sk.ack_pending & ICSK_ACK_SCHED):
        return
    if ((sk.rcv_nxt - sk.rcv_wup > sk.rcv_mss and (sk.rcv_nxt - sk.copied_seq < 1
                                                   or __tcp_select_window(sk) >= sk.rcv_wnd))
            or tcp_in_quickack_mode(sk) or sk.ack_pending & ICSK_ACK_NOW
            or sk.ofo_root != NM_NIL):
        tcp_send_ack(n, ski)
    else:
        tcp_send_delayed_ack(n, ski)


# ---- segments out of the window (tcp_validate_incoming(), step 1) ------------------------------

cdef int tcp_sequence(nm_sock *sk, nm_skb *skb) noexcept nogil:
    """Models ``tcp_sequence()`` of 7.x (``tcp: do not accept packets beyond window``, 6.17,
    with the 2026 fix that lets a FIN reach past the window): an skb ending before ``rcv_wup``
    is old; one past ``rcv_nxt + tcp_receive_window()`` is refused when it starts past it, or
    when the receive queue is not empty (an skb the reader has made room for is taken whole).
    The SKB_DROP_REASON (NM_DROP_*), or -1 to go on."""
    cdef uint32_t seq_limit
    if before(skb.end_seq, sk.rcv_wup):
        return NM_DROP_TCP_OLD_SEQUENCE
    seq_limit = sk.rcv_nxt + tcp_receive_window(sk)
    if unlikely(after(skb.end_seq, seq_limit)):
        if not after(skb.end_seq - ((skb.tcp_flags & TCPHDR_FIN) != 0), seq_limit):
            return -1
        if after(skb.seq, seq_limit):
            return NM_DROP_TCP_INVALID_SEQUENCE
        if sk.rq_head != NM_NIL:
            return NM_DROP_TCP_INVALID_END_SEQUENCE
    return -1


cdef bint __tcp_oow_rate_limited(nm_net *n, nm_sock *sk) noexcept nogil:
    """Models ``__tcp_oow_rate_limited()``: an out-of-window answer at most once per
    ``net.ipv4.tcp_invalid_ratelimit`` (500 ms) per socket; the caller counts the skip."""
    cdef uint32_t now = tcp_jiffies32(n)
    if sk.last_oow_ack_time:
        if 0 <= <int32_t>(now - sk.last_oow_ack_time) < <int32_t>n.invalid_ratelimit:
            return True
    sk.last_oow_ack_time = now
    return False


cdef void tcp_send_dupack(nm_net *n, uint32_t ski, nm_skb *skb) noexcept nogil:
    """Models ``tcp_send_dupack()``: data that starts below ``rcv_nxt`` is a lost delayed ACK
    (``DelayedACKLost``, quick-ack mode) and, with SACK, a D-SACK of its part below
    ``rcv_nxt``; an ACK goes at once."""
    cdef nm_sock *sk = &n.socks[ski]
    if skb.end_seq != skb.seq and before(skb.seq, sk.rcv_nxt):
        n.tcp.DelayedACKLost += 1
        tcp_enter_quickack_mode(sk, TCP_MAX_QUICKACKS)
        if sk.sack_ok:
            tcp_dsack_set(n, sk, skb.seq, sk.rcv_nxt if after(skb.end_seq, sk.rcv_nxt)
                          else skb.end_seq)
    tcp_send_ack(n, ski)


cdef void tcp_cleanup_rbuf(nm_net *n, uint32_t ski, uint64_t copied) noexcept nogil:
    """Models ``__tcp_cleanup_rbuf()`` after a read of ``copied`` bytes: an ACK when one is
    scheduled and more than a full frame is unacknowledged, or when the read lets the window
    open to at least twice what is left of it (and at least half the clamp is free), as long
    as more data can come. Departs: no ``ICSK_ACK_PUSHED`` (see ``tcp_event_data_recv()``)."""
    cdef nm_sock *sk = &n.socks[ski]
    cdef uint32_t rcv_window_now, new_window
    cdef bint time_to_ack = (sk.ack_pending & ICSK_ACK_SCHED
                             and sk.rcv_nxt - sk.rcv_wup > sk.rcv_mss)
    if copied and not time_to_ack and sk.state == NM_TCP_ESTABLISHED:
        rcv_window_now = tcp_receive_window(sk)
        if 2 * rcv_window_now <= sk.window_clamp:
            new_window = __tcp_select_window(sk)
            time_to_ack = new_window != 0 and new_window >= 2 * rcv_window_now
    if time_to_ack:
        tcp_send_ack(n, ski)
