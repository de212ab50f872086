# The application's side of the receive queue: net/ipv4/tcp.c's tcp_recvmsg_locked() (the copy
# read; the devmem one is pyx/devmem.pxi's tcp_recvmsg_devmem()), tcp_eat_recv_skb() with
# net/core/skbuff.c's skb_attempt_defer_free() and its per-CPU flush, the FIN at the tail, and
# the receive half of tcp_close(). Split out of pyx/tcp_rx.pxi, unchanged.

# ---- freeing skbs the application consumed ------------------------------------------------------

cdef void __free_in_softirq(nm_net *n, uint32_t si, int cpu) noexcept nogil:
    """Free an skb in softirq context on ``cpu`` (``napi_consume_skb()``): the profile's
    PUTS."""
    cdef nm_machine *m = n.m
    cdef int c = m.cpu, s = m.in_softirq
    cdef uint32_t stage = prof_push(n, NM_PROF_PUTS)
    m.cpu = cpu
    m.in_softirq = 1
    __kfree_skb(n, si)
    m.cpu = c
    m.in_softirq = s
    prof_stage(n, stage)


cdef void skb_defer_free_flush(nm_net *n, int cpu) noexcept nogil:
    """Models ``skb_defer_free_flush()``: free the skbs other CPUs deferred to ``cpu``; the
    caller is in softirq on ``cpu``."""
    cdef uint32_t si, nxt
    si = n.defer_head[cpu]
    n.defer_head[cpu] = NM_NIL
    n.defer_count[cpu] = 0
    while si != NM_NIL:
        nxt = SKB(n, si).next
        __kfree_skb(n, si)
        si = nxt


cdef void skb_attempt_defer_free(nm_net *n, uint32_t si) noexcept nogil:
    """Models ``skb_attempt_defer_free()``: an skb consumed on another CPU than the one that
    built it is queued for that CPU, whose next ``net_rx_action()`` frees it; when the list
    already held half of skb_defer_max the CPU is kicked (the IPI runs its softirq at once
    here). On the same CPU (or with a full list) it is freed with BHs off
    (``kfree_skb_napi_cache()``). Either free is the profile's PUTS stage."""
    cdef nm_machine *m = n.m
    cdef nm_skb *skb = SKB(n, si)
    cdef int cpu = skb.alloc_cpu
    cdef bint kick
    if n.defer_max == 0 or cpu == m.cpu or cpu >= m.nr_cpus or n.defer_count[cpu] >= n.defer_max:
        __free_in_softirq(n, si, m.cpu)
        return
    kick = n.defer_count[cpu] == n.defer_max >> 1
    skb.next = n.defer_head[cpu]
    n.defer_head[cpu] = si
    n.defer_count[cpu] += 1
    if kick:
        n.defer_kicks += 1
        __free_softirq_flush(n, cpu)


cdef void __free_softirq_flush(nm_net *n, int cpu) noexcept nogil:
    """``skb_defer_free_flush()`` on ``cpu`` in its softirq (the kick's IPI): the profile's
    PUTS."""
    cdef nm_machine *m = n.m
    cdef int c = m.cpu, s = m.in_softirq
    cdef uint32_t stage = prof_push(n, NM_PROF_PUTS)
    m.cpu = cpu
    m.in_softirq = 1
    skb_defer_free_flush(n, cpu)
    m.cpu = c
    m.in_softirq = s
    prof_stage(n, stage)


cdef inline void tcp_eat_recv_skb(nm_net *n, nm_sock *sk, uint32_t si) noexcept nogil:
    """Models ``tcp_eat_recv_skb()``; while profiling, the skb's wait goes into the latency
    histogram (it has been read)."""
    if unlikely(n.prof.on):
        prof_rx_latency(n, si)
    __q_unlink(n, &sk.rq_head, &sk.rq_tail, si)
    sock_rfree(n, SKB(n, si))
    skb_attempt_defer_free(n, si)


cdef int64_t tcp_recvmsg_copy(nm_net *n, uint32_t ski, uint8_t *buf, uint64_t len) noexcept nogil:
    """Models ``tcp_recvmsg_locked()`` without MSG_PEEK/MSG_WAITALL, non-blocking: copy up to
    ``len`` bytes in order, eating consumed skbs. Returns the bytes copied, 0 at end of stream,
    -EAGAIN with nothing to read, -EFAULT on unreadable data with nothing copied, or the
    socket's error (once) after the queued data."""
    cdef nm_sock *sk = &n.socks[ski]
    cdef uint64_t copied = 0
    cdef uint32_t si, offset, used
    cdef nm_skb *skb
    cdef int rc
    while copied < len:
        si = sk.rq_head
        if si == NM_NIL:
            break
        skb = SKB(n, si)
        offset = sk.copied_seq - skb.seq
        if offset < skb.len:
            if not skb_frags_readable(skb):
                # Unreadable data needs MSG_SOCK_DEVMEM, its linear part too.
                if copied == 0:
                    return -EFAULT
                break
            used = <uint32_t>min(<uint64_t>(skb.len - offset), len - copied)
            rc = skb_copy_bits(n, skb, offset, buf + copied, used)
            if rc < 0:
                if copied == 0:
                    return rc
                break
            sk.copied_seq += used
            copied += used
            tcp_rcv_space_adjust(n, sk)
            if used + offset < skb.len:
                break
            if skb.tcp_flags & TCPHDR_FIN:
                __rx_fin(n, sk, si)
                break
            tcp_eat_recv_skb(n, sk, si)
            continue
        if skb.tcp_flags & TCPHDR_FIN:
            __rx_fin(n, sk, si)
            break
        tcp_eat_recv_skb(n, sk, si)     # fully read already (an overlap)
    if copied:
        tcp_cleanup_rbuf(n, ski, copied)
        return <int64_t>copied
    return tcp_recvmsg_tail(sk)


cdef inline void __rx_fin(nm_net *n, nm_sock *sk, uint32_t si) noexcept nogil:
    """``found_fin_ok``: the FIN is read (one sequence number), the skb eaten."""
    sk.copied_seq += 1
    sk.shutdown |= RCV_SHUTDOWN
    tcp_eat_recv_skb(n, sk, si)


cdef int64_t tcp_recvmsg_tail(nm_sock *sk) noexcept nogil:
    """What a recvmsg that found no data returns: 0 at the end of the stream, the socket's
    error (once), or -EAGAIN."""
    cdef int rc
    if sk.shutdown & RCV_SHUTDOWN:
        return 0
    if sk.err:
        rc = sk.err
        sk.err = 0
        sk.shutdown |= RCV_SHUTDOWN
        return -rc
    if sk.state == NM_TCP_CLOSE:
        return 0
    return -EAGAIN


cdef void tcp_close_rx(nm_net *n, uint32_t ski) noexcept nogil:
    """The receive half of ``tcp_close()`` (in process context): free the receive queue;
    if it held data and the connection was not reset, abort it (TCPAbortOnClose, and the RST
    ``tcp_send_active_reset()`` counts in OutRsts); then, in ``tcp_v4_destroy_sock()``'s
    order, release the frags the user still holds (``tcp_release_user_frags()``) and drop the
    out-of-order queue (``skb_rbtree_purge()``); unhash, free the slot."""
    cdef nm_sock *sk = &n.socks[ski]
    cdef uint64_t unread = 0
    cdef uint32_t si = sk.rq_head
    cdef nm_skb *skb
    while si != NM_NIL:
        skb = SKB(n, si)
        unread += skb.end_seq - skb.seq - ((skb.tcp_flags & TCPHDR_FIN) != 0)
        si = skb.next
    __sk_purge(n, &sk.rq_head, &sk.rq_tail, -1)
    if unread and sk.state != NM_TCP_CLOSE:
        n.tcp.TCPAbortOnClose += 1
        n.tcp.OutRsts += 1
    # tcp_v4_destroy_sock(): tcp_release_user_frags() first, skb_rbtree_purge() of the
    # out-of-order queue after, so the user's frags reach the pool's ring first.
    tcp_release_user_frags(n, sk)
    __sk_purge(n, &sk.ofo_head, &sk.ofo_tail, NM_DROP_NOT_SPECIFIED)
    sk.ofo_root = NM_NIL
    sk.ofo_len = 0
    inet_unhash(n, ski)
    sk.used = 0
    sk.hnext = n.sk_free
    n.sk_free = ski
