# The receiver under memory pressure (issue 18 part 1), following net/ipv4/tcp_input.c of
# mainline 6.17 to 7.x: tcp_try_rmem_schedule() -> tcp_prune_queue() (tcp_clamp_window(),
# tcp_collapse_ofo_queue(), tcp_collapse() of the receive queue, tcp_prune_ofo_queue()), with
# the devmem tests of 6.12 (tcp_collapse() never copies an unreadable skb) and the empty-queue
# test and tcp_can_ingest() of "tcp: stronger sk_rcvbuf checks" (6.17; its
# rmem_alloc + truesize form was taken back, so mainline compares rmem_alloc <= sk_rcvbuf).
#
# What is modelled of the global side: sk_rmem_schedule() always succeeds and
# tcp_under_memory_pressure() is false. tcp_mem is sized from the machine's RAM
# (tcp_init_mem(): a sixteenth of the free pages and more), far above what one machine's
# sockets queue here; per-socket forward allocation (sk_forward_alloc) is not kept.
#
# Pruned and collapsed skbs are freed at once, so their buffers go home (page_pool pages to
# their pool, devmem net_iovs to their binding): a receiver whose out-of-order queue holds every
# buffer recovers when memory pressure prunes it.

cdef enum:
    # SKB_MAX_ORDER(0, 0) = SKB_WITH_OVERHEAD(PAGE_SIZE): the most one collapsed skb copies.
    SKB_WITH_OVERHEAD_PAGE = 4096 - SKB_DATA_ALIGN_SHINFO


cdef inline bint tcp_can_ingest(nm_sock *sk, nm_skb *skb) noexcept nogil:
    """Models ``tcp_can_ingest()`` (mainline 2026): ``sk_rmem_alloc <= sk_rcvbuf``."""
    return sk.rmem_alloc <= sk.rcvbuf


cdef inline bint tcp_try_rmem_schedule(nm_net *n, nm_sock *sk, nm_skb *skb) noexcept nogil:
    """Models ``tcp_try_rmem_schedule()`` (true when the kernel's returns 0): an skb the socket
    cannot ingest makes ``tcp_prune_queue()`` collapse and prune the queues; the skb may be
    charged when that brings ``sk_rmem_alloc`` back under ``sk_rcvbuf``. Departs:
    ``sk_rmem_schedule()`` always succeeds (see the file's header), so its loop of
    ``tcp_prune_ofo_queue()`` calls never runs."""
    if likely(tcp_can_ingest(sk, skb)):
        return True
    return tcp_prune_queue(n, <uint32_t>(sk - n.socks), skb) >= 0


cdef void tcp_clamp_window(nm_net *n, nm_sock *sk) noexcept nogil:
    """Models ``tcp_clamp_window()``: leave quick-ack mode; an unlocked ``sk_rcvbuf`` below
    tcp_rmem[2] grows to what is allocated; when the queues still hold more than
    ``sk_rcvbuf``, ``rcv_ssthresh`` falls to two segments."""
    sk.ack_quick = 0
    if sk.rcvbuf < n.tcp_rmem[2] and not sk.rcvbuf_lock:
        sk.rcvbuf = min(sk.rmem_alloc, <uint64_t>n.tcp_rmem[2])
    if sk.rmem_alloc > sk.rcvbuf:
        sk.rcv_ssthresh = min(sk.window_clamp, 2 * sk.advmss)


cdef int tcp_prune_queue(nm_net *n, uint32_t ski, nm_skb *in_skb) noexcept nogil:
    """Models ``tcp_prune_queue()`` (mainline 6.17 to 7.x): nothing to do with empty queues
    (-1); ``PruneCalled``; clamp the window; collapse the out-of-order queue and the receive
    queue (copied_seq .. rcv_nxt); then drop from the out-of-order queue's tail; -1 and
    ``RcvPruned`` when the socket still cannot ingest ``in_skb``."""
    cdef nm_sock *sk = &n.socks[ski]
    if sk.rmem_alloc == 0:
        return -1
    n.tcp.PruneCalled += 1
    if not tcp_can_ingest(sk, in_skb):
        tcp_clamp_window(n, sk)
    if tcp_can_ingest(sk, in_skb):
        return 0
    tcp_collapse_ofo_queue(n, ski)
    if sk.rq_head != NM_NIL:
        tcp_collapse(n, ski, False, sk.rq_head, NM_NIL, sk.copied_seq, sk.rcv_nxt)
    if tcp_can_ingest(sk, in_skb):
        return 0
    tcp_prune_ofo_queue(n, ski, in_skb)
    if tcp_can_ingest(sk, in_skb):
        return 0
    n.tcp.RcvPruned += 1
    return -1


cdef bint tcp_prune_ofo_queue(nm_net *n, uint32_t ski, nm_skb *in_skb) noexcept nogil:
    """Models ``tcp_prune_ofo_queue()``: drop from the highest sequence down
    (``SKB_DROP_REASON_TCP_OFO_QUEUE_PRUNE``), never a segment below the incoming one, at
    least an eighth of ``sk_rcvbuf`` at a time, until the socket can ingest; ``OfoPruned`` and
    ``tcp_sack_reset()`` when anything went."""
    cdef nm_sock *sk = &n.socks[ski]
    cdef int64_t goal = <int64_t>(sk.rcvbuf >> 3)
    cdef uint32_t si = sk.ofo_tail, prev
    cdef nm_skb *skb
    cdef bint pruned = False
    while si != NM_NIL:
        skb = SKB(n, si)
        if after(in_skb.seq, skb.seq):
            break                               # it would land last: stop pruning
        pruned = True
        prev = skb.prev
        __ofo_unlink(n, sk, si)
        goal -= skb.truesize
        sock_rfree(n, skb)
        __drop(n, si, NM_DROP_TCP_OFO_QUEUE_PRUNE)
        if prev == NM_NIL or goal <= 0:
            if tcp_can_ingest(sk, in_skb):
                break
            goal = <int64_t>(sk.rcvbuf >> 3)
        si = prev
    if pruned:
        n.tcp.OfoPruned += 1
        if sk.sack_ok:
            sk.dsack = sk.num_sacks = 0         # tcp_sack_reset()
    return pruned


cdef void tcp_collapse_ofo_queue(nm_net *n, uint32_t ski) noexcept nogil:
    """Models ``tcp_collapse_ofo_queue()``: each run of touching or overlapping skbs is
    collapsed, unless it is one skb smaller than a page's worth; once such tiny runs add up to
    an eighth of ``sk_rcvbuf`` the walk stops."""
    cdef nm_sock *sk = &n.socks[ski]
    cdef uint32_t si = sk.ofo_head, head, start, end
    cdef uint64_t range_truesize, sum_tiny = 0
    cdef nm_skb *skb
    while si != NM_NIL:
        head = si
        start = SKB(n, si).seq
        end = SKB(n, si).end_seq
        range_truesize = SKB(n, si).truesize
        while True:
            si = SKB(n, si).next
            skb = SKB(n, si) if si != NM_NIL else NULL
            if skb == NULL or after(skb.seq, end) or before(skb.end_seq, start):
                if range_truesize != SKB(n, head).truesize or end - start >= SKB_WITH_OVERHEAD_PAGE:
                    tcp_collapse(n, ski, True, head, si, start, end)
                else:
                    sum_tiny += range_truesize
                    if sum_tiny > sk.rcvbuf >> 3:
                        return
                break
            range_truesize += skb.truesize
            if before(skb.seq, start):
                start = skb.seq
            if after(skb.end_seq, end):
                end = skb.end_seq


cdef inline bint __tcp_no_collapse(nm_skb *skb) noexcept nogil:
    """A SYN or FIN, or unreadable frags (devmem, 6.12): ``tcp_collapse()`` stops there."""
    return (skb.tcp_flags & (TCPHDR_SYN | TCPHDR_FIN)) != 0 or not skb_frags_readable(skb)


cdef uint32_t tcp_collapse_one(nm_net *n, uint32_t ski, bint ofo, uint32_t si) noexcept nogil:
    """Models ``tcp_collapse_one()``: unlink ``si``, free it (``TCPRcvCollapsed``) and return
    the next skb of its queue."""
    cdef nm_sock *sk = &n.socks[ski]
    cdef uint32_t nxt = SKB(n, si).next
    if ofo:
        __ofo_unlink(n, sk, si)
    else:
        __q_unlink(n, &sk.rq_head, &sk.rq_tail, si)
    sock_rfree(n, SKB(n, si))
    __kfree_skb(n, si)
    n.tcp.TCPRcvCollapsed += 1
    return nxt


cdef uint32_t __tcp_collapse_find(nm_net *n, uint32_t si, uint32_t tail,
                                  uint32_t *start, uint32_t ski, bint ofo) noexcept nogil:
    """The first loop of ``tcp_collapse()``: drop skbs with nothing new, skip unreadable ones
    and those worth keeping; the first skb to collapse (bloated, starting before ``start``, or
    overlapping the next), or NM_NIL when there is none."""
    cdef nm_skb *skb
    cdef uint32_t nxt
    while si != NM_NIL and si != tail:
        skb = SKB(n, si)
        nxt = skb.next
        if skb_frags_readable(skb):
            if not before(start[0], skb.end_seq):         # no new bits
                si = tcp_collapse_one(n, ski, ofo, si)
                continue
            if not (skb.tcp_flags & (TCPHDR_SYN | TCPHDR_FIN)) and (
                    tcp_win_from_space(skb.truesize) > skb.len or before(skb.seq, start[0])):
                return si
            if (nxt != NM_NIL and nxt != tail and skb_frags_readable(SKB(n, nxt))
                    and skb.end_seq != SKB(n, nxt).seq):
                return si
        start[0] = skb.end_seq                  # skip_this
        si = nxt
    return NM_NIL


cdef uint32_t __alloc_skb_linear(nm_net *n, uint32_t size) noexcept nogil:
    """``alloc_skb(size, GFP_ATOMIC)`` for ``tcp_collapse()``: truesize is the kernel's
    (``SKB_TRUESIZE()`` of the kmalloc bucket the head and shared info round up to). Departs:
    the bytes live in an order-0 host page (a frag, headlen 0) instead of a kmalloc'ed head,
    as the model's heads hold 256 bytes; the page goes back to the buddy allocator with the
    skb. NM_NIL when the skb table or memory is exhausted."""
    cdef uint32_t si = napi_alloc_skb(n, n.m.cpu)
    cdef uint64_t pfn
    # kmalloc_size_roundup() of SKB_DATA_ALIGN(size) + the aligned shared info: at least 384
    # bytes, so a power-of-two kmalloc cache (the 96 and 192 ones are below).
    cdef uint32_t bucket = <uint32_t>roundup_pow_of_two(((size + 63) & ~63) + SKB_DATA_ALIGN_SHINFO)
    if si == NM_NIL:
        return NM_NIL
    pfn = nm_alloc_pages_node(n.m, NUMA_NO_NODE, 0)
    if pfn == NM_NIL:
        __kfree_skb(n, si)
        return NM_NIL
    __skb_fill_netmem_desc(SKB(n, si), skb_shinfo(n, SKB(n, si)), 0, page_to_netmem(pfn), 0, 0)
    skb_shinfo(n, SKB(n, si)).nr_frags = 1
    SKB(n, si).truesize = SKB_TRUESIZE(bucket - SKB_DATA_ALIGN_SHINFO)
    return si


cdef inline void __collapse_copy(nm_net *n, nm_skb *nskb, nm_skb *skb, uint32_t offset,
                                 uint32_t size) noexcept nogil:
    """``skb_copy_bits(skb, offset, skb_put(nskb, size), size)``: readable and within the skb,
    so it cannot fail (the kernel BUG()s if it does)."""
    cdef nm_frag *f = &skb_shinfo(n, nskb).frags[0]
    skb_copy_bits(n, skb, offset, <uint8_t *>nm_phys_to_virt(n.m, netmem_phys(n.m, f.netmem))
                  + f.len, size)
    f.len += size
    nskb.len += size
    nskb.data_len += size
    nskb.end_seq += size


cdef void tcp_collapse(nm_net *n, uint32_t ski, bint ofo, uint32_t head, uint32_t tail,
                       uint32_t start, uint32_t end) noexcept nogil:
    """Models ``tcp_collapse()`` of ``head`` .. ``tail`` (NM_NIL: the queue's end), sequence
    ``start`` .. ``end``, in the receive queue or (``ofo``) the out-of-order rbtree: from the
    first skb worth collapsing, the payload is copied into new skbs of at most
    ``SKB_MAX_ORDER(0, 0)`` bytes each (``__alloc_skb_linear()``), charged to the socket, and
    the copied skbs are freed; a SYN, a FIN or unreadable frags end the run (6.12's devmem
    checks), as does a failed allocation. New out-of-order skbs enter the rbtree at the end
    (``tcp_rbtree_insert()``)."""
    cdef nm_sock *sk = &n.socks[ski]
    cdef uint32_t si = __tcp_collapse_find(n, head, tail, &start, ski, ofo), nsi
    cdef uint32_t tmp_head = NM_NIL, tmp_tail = NM_NIL, copy, size
    cdef nm_skb *skb
    cdef nm_skb *nskb
    if si == NM_NIL or __tcp_no_collapse(SKB(n, si)):
        return
    skb = SKB(n, si)
    while before(start, end):
        copy = min(<uint32_t>SKB_WITH_OVERHEAD_PAGE, end - start)
        nsi = __alloc_skb_linear(n, copy)
        if nsi == NM_NIL:
            break
        nskb = SKB(n, nsi)
        nskb.seq = nskb.end_seq = start         # memcpy(nskb->cb, skb->cb)
        nskb.ack_seq = skb.ack_seq
        nskb.tcp_flags = skb.tcp_flags
        if ofo:
            __q_insert_after(n, &tmp_head, &tmp_tail, tmp_tail, nsi)    # defer rbtree insertion
        else:
            __q_insert_after(n, &sk.rq_head, &sk.rq_tail, skb.prev, nsi)
        skb_set_owner_r(n, nskb, ski)
        while copy > 0:
            if after(skb.end_seq, start):
                size = min(copy, skb.end_seq - start)
                __collapse_copy(n, nskb, skb, start - skb.seq, size)
                copy -= size
                start += size
            if not before(start, skb.end_seq):
                si = tcp_collapse_one(n, ski, ofo, si)
                if si == NM_NIL or si == tail or __tcp_no_collapse(SKB(n, si)):
                    __tcp_rbtree_insert_all(n, sk, tmp_head)
                    return
                skb = SKB(n, si)
    __tcp_rbtree_insert_all(n, sk, tmp_head)


cdef void __tcp_rbtree_insert_all(nm_net *n, nm_sock *sk, uint32_t si) noexcept nogil:
    """``tcp_rbtree_insert()`` of each skb of a detached list, in order: descend by seq (an
    equal one goes right) and link."""
    cdef uint32_t nxt, parent
    cdef uint32_t *p
    while si != NM_NIL:
        nxt = SKB(n, si).next
        SKB(n, si).next = SKB(n, si).prev = NM_NIL
        parent = NM_NIL
        p = &sk.ofo_root
        while p[0] != NM_NIL:
            parent = p[0]
            p = (&n.skb_rb[parent].rb_left if before(SKB(n, si).seq, SKB(n, parent).seq)
                 else &n.skb_rb[parent].rb_right)
        __ofo_insert(n, sk, si, parent, p)
        si = nxt


# ---- the window grows (tcp_input.c's buffer and window tuning, 6.12 to 7.x) -------------------

cdef inline int64_t tcp_space(nm_sock *sk) noexcept nogil:
    """Models ``tcp_space()``: the window the free part of ``sk_rcvbuf`` is worth (negative
    when it is overdrawn; no backlog)."""
    cdef int64_t space = <int64_t>sk.rcvbuf - <int64_t>sk.rmem_alloc
    return tcp_win_from_space(space) if space > 0 else -tcp_win_from_space(-space)


cdef inline uint64_t tcp_space_from_win(uint64_t win) noexcept nogil:
    """Models ``tcp_space_from_win()`` at the default ``scaling_ratio``."""
    return (win << TCP_RMEM_TO_WIN_SCALE) // TCP_SCALING_RATIO


cdef void tcp_init_buffer_space(nm_net *n, nm_sock *sk) noexcept nogil:
    """Models ``tcp_init_buffer_space()`` (6.12 to 7.x, ``tcp_app_win`` 31): the window clamp
    falls to ``tcp_full_space()`` less one segment kept for the application; ``rcv_ssthresh``
    below it; ``rcvq_space`` starts at min(rcv_ssthresh, rcv_wnd, TCP_INIT_CWND * advmss)."""
    cdef uint32_t maxwin = tcp_win_from_space(sk.rcvbuf)
    if sk.window_clamp >= maxwin:
        sk.window_clamp = maxwin                # maxwin - (maxwin >> 31): maxwin
    if sk.window_clamp > 2 * sk.advmss and sk.window_clamp + sk.advmss > maxwin:
        sk.window_clamp = max(2 * sk.advmss, maxwin - sk.advmss)   # force one segment's room
    sk.rcv_ssthresh = min(sk.rcv_ssthresh, sk.window_clamp)
    sk.rcvq_time = tcp_mstamp(n)
    sk.rcvq_seq = sk.copied_seq
    sk.rcvq_space = min(sk.rcv_ssthresh, sk.rcv_wnd, 10 * sk.advmss)      # TCP_INIT_CWND


cdef inline uint64_t tcp_mstamp(nm_net *n) noexcept nogil:
    """``tp->tcp_mstamp``: the stack's clock in us."""
    return (n.now_ns if n.now_ns else n.m.clock_ns) // 1000


cdef uint32_t __tcp_grow_window(nm_net *n, nm_sock *sk, nm_skb *skb,
                                uint32_t skbtruesize) noexcept nogil:
    """Models ``__tcp_grow_window()``: two segments when the skb's payload would fit the
    window its truesize is worth at a smaller ``rcv_ssthresh``, else nothing."""
    cdef int64_t truesize = tcp_win_from_space(skbtruesize) >> 1
    cdef int64_t window = tcp_win_from_space(n.tcp_rmem[2]) >> 1
    while sk.rcv_ssthresh <= window:
        if truesize <= skb.len:
            return 2 * sk.rcv_mss
        truesize >>= 1
        window >>= 1
    return 0


cdef void tcp_grow_window(nm_net *n, nm_sock *sk, nm_skb *skb, bint adjust) noexcept nogil:
    """Models ``tcp_grow_window()`` with ``truesize_adjust()``: while ``rcv_ssthresh`` is
    below the clamp and the free space, an skb whose truesize leaves its payload room (the
    page frags only when ``adjust`` and the head holds no payload) raises it by
    max(2 * advmss or ``__tcp_grow_window()``, 2 * len), and asks for a quick ACK. Departs:
    never under memory pressure (``tcp_adjust_rcv_ssthresh()``)."""
    cdef int64_t room = min(<int64_t>sk.window_clamp, tcp_space(sk)) - sk.rcv_ssthresh
    cdef uint32_t truesize = skb.truesize, incr
    if room <= 0:
        return
    if adjust and skb_headlen(skb) == 0:
        truesize -= SKB_TRUESIZE(skb_end_offset(skb_shinfo(n, skb)))
        if <int32_t>truesize < <int32_t>skb.len:
            truesize = skb.truesize
    if tcp_win_from_space(truesize) <= skb.len:
        incr = 2 * sk.advmss
    else:
        incr = __tcp_grow_window(n, sk, skb, truesize)
    if incr:
        incr = max(incr, 2 * skb.len)
        sk.rcv_ssthresh += <uint32_t>min(<int64_t>incr, room)
        sk.ack_quick |= 1


cdef void tcp_rcv_rtt_measure(nm_net *n, nm_sock *sk) noexcept nogil:
    """Models ``tcp_rcv_rtt_measure()`` and ``tcp_rcv_rtt_update(win_dep=1)``: the time a
    window's worth of data takes to arrive, the minimum kept (<< 3). Departs:
    ``tcp_rcv_rtt_measure_ts()`` (timestamps) is not modelled."""
    cdef uint64_t now = tcp_mstamp(n)
    cdef uint64_t m
    if sk.rcv_rtt_time:
        if before(sk.rcv_nxt, sk.rcv_rtt_seq):
            return
        m = max(now - sk.rcv_rtt_time, <uint64_t>1) << 3
        if sk.rcv_rtt_us == 0 or m < sk.rcv_rtt_us:
            sk.rcv_rtt_us = <uint32_t>min(m, <uint64_t>0xffffffff)
    sk.rcv_rtt_seq = sk.rcv_nxt + sk.rcv_wnd
    sk.rcv_rtt_time = now


cdef void tcp_rcvbuf_grow(nm_net *n, nm_sock *sk, uint32_t newval) noexcept nogil:
    """Models ``tcp_rcvbuf_grow()`` (6.19 to 7.x): ``rcvq_space`` becomes what the reader
    took; with ``tcp_moderate_rcvbuf`` and no SO_RCVBUF, ``sk_rcvbuf`` grows to the space of
    twice that (DRS is one RTT late), plus the sender's slow-start growth (scaled down below
    ``tcp_rcvbuf_low_rtt``), plus what the out-of-order queue spans, up to tcp_rmem[2]; the
    window clamp follows."""
    cdef uint32_t oldval = sk.rcvq_space, rtt_us = sk.rcv_rtt_us >> 3
    cdef uint64_t rcvwin, grow, rcvbuf
    sk.rcvq_space = newval
    if not n.moderate_rcvbuf or sk.rcvbuf_lock:
        return
    rcvwin = <uint64_t>newval << 1
    if rtt_us < n.rcvbuf_low_rtt:
        grow = rcvwin * rtt_us // n.rcvbuf_low_rtt
    elif oldval:
        grow = (rcvwin << 1) * (newval - oldval) // oldval
    else:
        # rcvq_space starts at 0 only when tcp_rmem[1] is worth less than one byte of window
        # (m.tcp.rmem takes any value from 1, as the sysctl does); the kernel would divide by
        # zero here.
        grow = 0
    rcvwin += grow
    if sk.ofo_root != NM_NIL:
        rcvwin += SKB(n, sk.ofo_tail).end_seq - sk.rcv_nxt
    rcvbuf = min(tcp_space_from_win(rcvwin), <uint64_t>n.tcp_rmem[2])
    if rcvbuf > sk.rcvbuf:
        sk.rcvbuf = rcvbuf
        sk.window_clamp = tcp_win_from_space(rcvbuf)


cdef void tcp_rcv_space_adjust(nm_net *n, nm_sock *sk) noexcept nogil:
    """Models ``tcp_rcv_space_adjust()`` (6.15 to 7.x), called for each skb a read copies:
    once per measured RTT, the bytes the reader took (less those still queued) that beat
    ``rcvq_space`` grow the buffer (``tcp_rcvbuf_grow()``). No RTT measured, no tuning."""
    cdef uint64_t now = tcp_mstamp(n)
    cdef int64_t copied
    if sk.rcv_rtt_us == 0 or now - sk.rcvq_time < sk.rcv_rtt_us >> 3:
        return
    copied = <int32_t>(sk.copied_seq - sk.rcvq_seq) - <int32_t>(sk.rcv_nxt - sk.copied_seq)
    if copied > <int64_t>sk.rcvq_space:
        tcp_rcvbuf_grow(n, sk, <uint32_t>copied)
    sk.rcvq_seq = sk.copied_seq
    sk.rcvq_time = now
