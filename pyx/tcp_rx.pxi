# The receive half of the IP and TCP stack, and the socket's receive queue.
#
# Models net/core/dev.c (__netif_receive_skb_core()'s protocol dispatch), net/ipv4/ip_input.c
# (ip_rcv_core(), ip_local_deliver()), net/ipv6/ip6_input.c (ip6_rcv_core()), net/ipv4/tcp_ipv4.c
# (tcp_v4_rcv()), net/ipv4/tcp_input.c (tcp_validate_incoming(), tcp_data_queue(),
# tcp_data_queue_ofo() over an rbtree (pyx/rbtree.pxi), tcp_ofo_queue(), tcp_try_coalesce(), the
# SACK and D-SACK blocks (tcp_sack_new_ofo_skb(), tcp_sack_remove(), tcp_dsack_set()), tcp_fin(),
# tcp_reset()). The socket table is pyx/inet_hashtables.pxi, the application's reads
# pyx/tcp_recvmsg.pxi.
#
# Departs (each documented in docs/design.md): no checksums (the device reports
# CHECKSUM_UNNECESSARY); every address is local; memory pressure is pyx/tcp_rmem.pxi and the
# ACKs and the window pyx/tcp_ack.pxi; a socket opens on a SYN
# (or SYN-ACK) of its direction, or, when asked, on the first segment of a flow seen mid-way;
# no TIME_WAIT: a new SYN on a finished connection opens a new socket; no IP reassembly.


cdef enum:
    NM_TCP_ESTABLISHED = 1
    NM_TCP_CLOSE_WAIT = 2
    NM_TCP_CLOSE = 3
    RCV_SHUTDOWN = 1
    NM_SK_HASH_MIN = 1 << 12
    NM_SK_PREFETCH_MIN = 1 << 10    # sockets (170 KiB of them) before NAPI prefetches their lines
    NM_SK_CREATE_SYN = 1            # why a socket opened (for the Python side)
    NM_SK_CREATE_MIDFLOW = 2


cdef inline bint before(uint32_t a, uint32_t b) noexcept nogil:
    return <int32_t>(a - b) < 0


cdef inline bint after(uint32_t a, uint32_t b) noexcept nogil:
    return before(b, a)


cdef inline void __drop(nm_net *n, uint32_t si, int reason) noexcept nogil:
    """``kfree_skb_reason()``: counted by reason; ``trace_kfree_skb()``."""
    n.drop_reasons[reason] += 1
    nm_trace(n.m, TP_KFREE_SKB, 0, si, reason, SKB(n, si).protocol, 0)
    __kfree_skb(n, si)


# ---- the socket's queues ------------------------------------------------------------------------
cdef inline void ep_poll_callback(nm_net *n, uint32_t ski) noexcept nogil:
    """What ``sk_data_ready()`` / ``sk_error_report()`` end in for a socket an epoll instance
    watches with EPOLLIN | EPOLLET: ``ep_poll_callback()`` puts it on the ready list unless it
    is there. Departs: one epoll instance watches every socket (the receiver's,
    pyx/receiver.pxi)."""
    if not n.socks[ski].on_rdllist:
        n.socks[ski].on_rdllist = 1
        n.rdllist[n.rdl_len] = ski
        n.rdl_len += 1


cdef inline void skb_set_owner_r(nm_net *n, nm_skb *skb, uint32_t ski) noexcept nogil:
    skb.sk = ski
    n.socks[ski].rmem_alloc += skb.truesize


cdef inline void sock_rfree(nm_net *n, nm_skb *skb) noexcept nogil:
    if skb.sk != NM_NIL:
        n.socks[skb.sk].rmem_alloc -= skb.truesize
        skb.sk = NM_NIL


cdef inline void __q_unlink(nm_net *n, uint32_t *head, uint32_t *tail, uint32_t si) noexcept nogil:
    cdef nm_skb *skb = SKB(n, si)
    if skb.prev != NM_NIL:
        SKB(n, skb.prev).next = skb.next
    else:
        head[0] = skb.next
    if skb.next != NM_NIL:
        SKB(n, skb.next).prev = skb.prev
    else:
        tail[0] = skb.prev
    skb.next = skb.prev = NM_NIL


cdef inline void __q_insert_after(nm_net *n, uint32_t *head, uint32_t *tail, uint32_t at,
                                  uint32_t si) noexcept nogil:
    """Insert ``si`` after ``at`` (NM_NIL: at the front)."""
    cdef nm_skb *skb = SKB(n, si)
    skb.prev = at
    if at == NM_NIL:
        skb.next = head[0]
        head[0] = si
    else:
        skb.next = SKB(n, at).next
        SKB(n, at).next = si
    if skb.next != NM_NIL:
        SKB(n, skb.next).prev = si
    else:
        tail[0] = si


cdef inline void __sk_purge(nm_net *n, uint32_t *head, uint32_t *tail,
                            int reason) noexcept nogil:
    """Empty a socket queue: ``__kfree_skb()`` each skb (``reason`` -1, as ``tcp_close()``
    does with the receive queue) or ``kfree_skb()`` it (``skb_rbtree_purge()`` of the
    out-of-order queue: a drop, NOT_SPECIFIED)."""
    cdef uint32_t si
    while head[0] != NM_NIL:
        si = head[0]
        __q_unlink(n, head, tail, si)
        sock_rfree(n, SKB(n, si))
        if reason < 0:
            __kfree_skb(n, si)
        else:
            __drop(n, si, reason)


cdef bint tcp_try_coalesce(nm_net *n, nm_skb *to, nm_skb *frm, bint *fragstolen) noexcept nogil:
    """Models ``tcp_try_coalesce()``: ``to`` takes ``frm``'s timestamp when it has one
    (``has_rxtstamp``: the later arrival)."""
    cdef int delta
    if frm.seq != to.end_seq:
        return False
    if not skb_try_coalesce(n, to, frm, fragstolen, &delta):
        return False
    if to.sk != NM_NIL:
        n.socks[to.sk].rmem_alloc += delta
    n.tcp.TCPRcvCoalesce += 1
    to.end_seq = frm.end_seq
    to.ack_seq = frm.ack_seq
    to.tcp_flags |= frm.tcp_flags
    if unlikely(n.prof.on) and n.skb_tstamp[frm - n.skbs]:
        n.skb_tstamp[to - n.skbs] = n.skb_tstamp[frm - n.skbs]
    return True


cdef inline void tcp_rcv_nxt_update(nm_sock *sk, uint32_t seq) noexcept nogil:
    sk.bytes_received += seq - sk.rcv_nxt
    sk.rcv_nxt = seq


cdef inline bint tcp_sack_extend(uint32_t *sp, uint32_t seq, uint32_t end_seq) noexcept nogil:
    """Models ``tcp_sack_extend()``: widen block ``sp`` (start, end) by a range that touches
    or overlaps it; false when they are apart."""
    if not after(seq, sp[1]) and not after(sp[0], end_seq):
        if before(seq, sp[0]):
            sp[0] = seq
        if after(end_seq, sp[1]):
            sp[1] = end_seq
        return True
    return False


cdef void tcp_dsack_set(nm_net *n, nm_sock *sk, uint32_t seq, uint32_t end_seq) noexcept nogil:
    """Models ``tcp_dsack_set()`` (``net.ipv4.tcp_dsack`` on, its default): with SACK, count
    the D-SACK (old or out-of-order) and make [seq, end_seq) the duplicate block."""
    if not sk.sack_ok:
        return
    if before(seq, sk.rcv_nxt):
        n.tcp.TCPDSACKOldSent += 1
    else:
        n.tcp.TCPDSACKOfoSent += 1
    sk.dsack = 1
    sk.duplicate_sack[0] = seq
    sk.duplicate_sack[1] = end_seq


cdef inline void tcp_dsack_extend(nm_net *n, nm_sock *sk, uint32_t seq,
                                  uint32_t end_seq) noexcept nogil:
    """Models ``tcp_dsack_extend()``: the first D-SACK of a segment is set (and counted),
    later ones only widen it."""
    if not sk.dsack:
        tcp_dsack_set(n, sk, seq, end_seq)
    else:
        tcp_sack_extend(sk.duplicate_sack, seq, end_seq)


cdef inline void __sack_move(nm_sock *sk, int to, int frm) noexcept nogil:
    sk.selective_acks[2 * to] = sk.selective_acks[2 * frm]
    sk.selective_acks[2 * to + 1] = sk.selective_acks[2 * frm + 1]


cdef void tcp_sack_maybe_coalesce(nm_sock *sk) noexcept nogil:
    """Models ``tcp_sack_maybe_coalesce()``: the first block eats the others it reaches."""
    cdef int this_sack = 1, i
    while this_sack < sk.num_sacks:
        if tcp_sack_extend(sk.selective_acks, sk.selective_acks[2 * this_sack],
                           sk.selective_acks[2 * this_sack + 1]):
            sk.num_sacks -= 1
            for i in range(this_sack, sk.num_sacks):
                __sack_move(sk, i, i + 1)
            continue
        this_sack += 1


cdef void tcp_sack_new_ofo_skb(nm_sock *sk, uint32_t seq, uint32_t end_seq) noexcept nogil:
    """Models ``tcp_sack_new_ofo_skb()``: the block the range extends moves to the front (and
    may eat others); else a new block goes in front, the oldest falling off past
    TCP_NUM_SACKS (4). Departs: ``tcp_sack_compress_send_ack()`` (an ACK sent when the block
    is third or later) is not modelled, as nothing is sent."""
    cdef int cur_sacks = sk.num_sacks, this_sack
    cdef uint32_t a, b
    for this_sack in range(cur_sacks):
        if tcp_sack_extend(&sk.selective_acks[2 * this_sack], seq, end_seq):
            a = sk.selective_acks[2 * this_sack]
            b = sk.selective_acks[2 * this_sack + 1]
            while this_sack > 0:                # rotate it to the first slot
                __sack_move(sk, this_sack, this_sack - 1)
                this_sack -= 1
            sk.selective_acks[0] = a
            sk.selective_acks[1] = b
            if cur_sacks > 1:
                tcp_sack_maybe_coalesce(sk)
            return
    this_sack = cur_sacks
    if this_sack >= 4:                          # TCP_NUM_SACKS: forget the last one
        this_sack -= 1
        sk.num_sacks -= 1
    while this_sack > 0:
        __sack_move(sk, this_sack, this_sack - 1)
        this_sack -= 1
    sk.selective_acks[0] = seq
    sk.selective_acks[1] = end_seq
    sk.num_sacks += 1


cdef void tcp_sack_remove(nm_sock *sk) noexcept nogil:
    """Models ``tcp_sack_remove()``: rcv_nxt advanced; blocks it reached are eaten (all of them
    when the out-of-order queue is empty)."""
    cdef int num_sacks = sk.num_sacks, this_sack = 0, i
    if sk.ofo_root == NM_NIL:
        sk.num_sacks = 0
        return
    while this_sack < num_sacks:
        if not before(sk.rcv_nxt, sk.selective_acks[2 * this_sack]):
            for i in range(this_sack + 1, num_sacks):
                __sack_move(sk, i - 1, i)
            num_sacks -= 1
            continue
        this_sack += 1
    sk.num_sacks = num_sacks


cdef enum:
    MAX_TCP_OPTION_SPACE = 40
    TCPOLEN_TSTAMP_ALIGNED = 12
    TCPOLEN_SACK_BASE_ALIGNED = 4
    TCPOLEN_SACK_PERBLOCK = 8


cdef int tcp_ack_sack_blocks(nm_sock *sk, uint32_t *out) noexcept nogil:
    """The SACK blocks of the next ACK, as ``tcp_established_options()`` counts them (the
    blocks that fit beside the timestamps: 3 with them, 4 without) and ``tcp_options_write()``
    writes them (the D-SACK block first, then ``selective_acks``): (start, end) pairs into
    ``out`` (room for 4), their number returned. Departs: no MD5, MPTCP or AccECN options
    compete for the room."""
    cdef int size = TCPOLEN_TSTAMP_ALIGNED if sk.tstamp_ok else 0
    cdef int eff_sacks = sk.num_sacks + sk.dsack, nr, i, j = 0
    if eff_sacks == 0:
        return 0
    nr = min(eff_sacks, (MAX_TCP_OPTION_SPACE - size - TCPOLEN_SACK_BASE_ALIGNED)
             // TCPOLEN_SACK_PERBLOCK)
    if sk.dsack:
        out[0] = sk.duplicate_sack[0]
        out[1] = sk.duplicate_sack[1]
        j = 1
    for i in range(nr - j):
        out[2 * (i + j)] = sk.selective_acks[2 * i]
        out[2 * (i + j) + 1] = sk.selective_acks[2 * i + 1]
    return nr


cdef void tcp_fin(nm_net *n, nm_sock *sk) noexcept nogil:
    """Models ``tcp_fin()`` for ESTABLISHED: CLOSE_WAIT, and what sits after the FIN in the
    out-of-order queue is dropped."""
    inet_csk_schedule_ack(sk)
    if sk.state == NM_TCP_ESTABLISHED:
        sk.state = NM_TCP_CLOSE_WAIT
        sk.pingpong = 1                 # inet_csk_enter_pingpong_mode()
    __sk_purge(n, &sk.ofo_head, &sk.ofo_tail, NM_DROP_NOT_SPECIFIED)
    sk.ofo_root = NM_NIL
    sk.ofo_len = 0
    sk.dsack = sk.num_sacks = 0         # tcp_sack_reset()


cdef void tcp_reset(nm_net *n, uint32_t ski) noexcept nogil:
    """Models ``tcp_reset()``: sk_err is EPIPE in CLOSE_WAIT, ECONNRESET otherwise; then
    ``tcp_done()``: CLOSE and unhashed (the queued data stays for recvmsg())."""
    cdef nm_sock *sk = &n.socks[ski]
    if sk.state == NM_TCP_CLOSE:
        return
    sk.err = EPIPE if sk.state == NM_TCP_CLOSE_WAIT else ECONNRESET
    sk.state = NM_TCP_CLOSE
    inet_unhash(n, ski)
    ep_poll_callback(n, ski)            # sk_error_report()


cdef void __tcp_queue_tail(nm_net *n, uint32_t ski, uint32_t si) noexcept nogil:
    cdef nm_sock *sk = &n.socks[ski]
    skb_set_owner_r(n, SKB(n, si), ski)
    __q_insert_after(n, &sk.rq_head, &sk.rq_tail, sk.rq_tail, si)


cdef void tcp_ofo_queue(nm_net *n, uint32_t ski) noexcept nogil:
    """Models ``tcp_ofo_queue()``: move what became in order to the receive queue."""
    cdef nm_sock *sk = &n.socks[ski]
    cdef uint32_t si, dsack_high = sk.rcv_nxt, dsack
    cdef nm_skb *skb
    cdef bint fragstolen, eaten, fin
    while sk.ofo_head != NM_NIL:
        si = sk.ofo_head
        skb = SKB(n, si)
        if after(skb.seq, sk.rcv_nxt):
            break
        if before(skb.seq, dsack_high):
            dsack = dsack_high
            if before(skb.end_seq, dsack_high):
                dsack_high = skb.end_seq
            tcp_dsack_extend(n, sk, skb.seq, dsack)
        __ofo_unlink(n, sk, si)
        if not after(skb.end_seq, sk.rcv_nxt):
            sock_rfree(n, skb)
            __drop(n, si, NM_DROP_TCP_OFO_DROP)
            continue
        eaten = (sk.rq_tail != NM_NIL
                 and tcp_try_coalesce(n, SKB(n, sk.rq_tail), skb, &fragstolen))
        tcp_rcv_nxt_update(sk, skb.end_seq)
        fin = skb.tcp_flags & TCPHDR_FIN
        if not eaten:
            __q_insert_after(n, &sk.rq_head, &sk.rq_tail, sk.rq_tail, si)
        else:
            sock_rfree(n, skb)
            kfree_skb_partial(n, si, fragstolen)
        if fin:
            tcp_fin(n, sk)
            break


cdef inline void __ofo_unlink(nm_net *n, nm_sock *sk, uint32_t si) noexcept nogil:
    """``rb_erase()`` from the out-of-order queue (and from its seq-ordered list)."""
    rb_erase(n.skb_rb, si, &sk.ofo_root)
    __q_unlink(n, &sk.ofo_head, &sk.ofo_tail, si)
    sk.ofo_len -= 1


cdef void __ofo_insert(nm_net *n, nm_sock *sk, uint32_t si, uint32_t parent,
                       uint32_t *p) noexcept nogil:
    """``rb_link_node()`` at ``*p`` under ``parent`` and ``rb_insert_color()``; in the list,
    after its in-order predecessor (``parent`` when linked on its right)."""
    cdef nm_rb_node *t = n.skb_rb
    cdef uint32_t at
    if parent == NM_NIL:
        at = NM_NIL
    elif p == &t[parent].rb_right:
        at = parent
    else:
        at = SKB(n, parent).prev
    rb_link_node(t, si, parent, p)
    rb_insert_color(t, si, &sk.ofo_root)
    __q_insert_after(n, &sk.ofo_head, &sk.ofo_tail, at, si)
    sk.ofo_len += 1


cdef bint tcp_ooo_try_coalesce(nm_net *n, uint32_t to, uint32_t si) noexcept nogil:
    """Models ``tcp_ooo_try_coalesce()`` of ``si`` into ``to`` and, when it was eaten,
    coalesce_done: ``tcp_grow_window()`` with SACK (without, the window stays put to force
    duplicate ACKs), ``kfree_skb_partial()``. Departs: ``to``'s gso_segs is not summed."""
    cdef bint fragstolen
    cdef nm_sock *sk = &n.socks[SKB(n, to).sk]
    if tcp_try_coalesce(n, SKB(n, to), SKB(n, si), &fragstolen):
        if sk.sack_ok:
            tcp_grow_window(n, sk, SKB(n, si), True)
        kfree_skb_partial(n, si, fragstolen)
        return True
    return False


cdef void tcp_data_queue_ofo(nm_net *n, uint32_t ski, uint32_t si) noexcept nogil:
    """Models ``tcp_data_queue_ofo()`` over the out-of-order rbtree (pyx/rbtree.pxi, the
    kernel's shape): coalesce after ``ooo_last_skb`` (the list's tail) or link right of it;
    else descend from the root, and at every node on the way that starts at or before the
    segment drop it if covered (``TCPOFOMerge``), note a partial overlap, replace a node with
    the same start that it covers (``rb_replace_node()``), or coalesce into a node ending at its
    start; then merge_right removes the nodes it covers. A queued skb goes through
    ``skb_condense()`` before ``skb_set_owner_r()`` charges it. The list (``ofo_head`` ..
    ``ofo_tail``) holds the same skbs in order, for ``rb_first()``/``rb_next()``."""
    cdef nm_sock *sk = &n.socks[ski]
    cdef nm_skb *skb = SKB(n, si)
    cdef nm_rb_node *t = n.skb_rb
    cdef nm_skb *s1
    cdef uint32_t seq = skb.seq, end_seq = skb.end_seq, parent = NM_NIL, nxt
    cdef uint32_t *p = &sk.ofo_root
    cdef bint replaced = False, first
    if not tcp_try_rmem_schedule(n, sk, skb):
        n.tcp.TCPOFODrop += 1
        ep_poll_callback(n, ski)                # sk->sk_data_ready()
        __drop(n, si, NM_DROP_PROTO_MEM)
        return
    first = sk.ofo_root == NM_NIL               # after pruning, which may have emptied it
    inet_csk_schedule_ack(sk)
    n.tcp.TCPOFOQueue += 1
    if first and sk.sack_ok:
        sk.num_sacks = 1                        # initial out-of-order segment: one block
        sk.selective_acks[0] = seq
        sk.selective_acks[1] = end_seq
    elif not first:
        if tcp_ooo_try_coalesce(n, sk.ofo_tail, si):
            if sk.sack_ok:                      # coalesce_done, add_sack
                tcp_sack_new_ofo_skb(sk, seq, end_seq)
            return
        if not before(seq, SKB(n, sk.ofo_tail).end_seq):
            parent = sk.ofo_tail
            p = &t[parent].rb_right
        while p[0] != NM_NIL:
            parent = p[0]
            s1 = SKB(n, parent)
            if before(seq, s1.seq):
                p = &t[parent].rb_left
                continue
            if before(seq, s1.end_seq):
                if not after(end_seq, s1.end_seq):
                    n.tcp.TCPOFOMerge += 1      # all the bits are present
                    __drop(n, si, NM_DROP_TCP_OFOMERGE)
                    tcp_dsack_set(n, sk, seq, end_seq)
                    if sk.sack_ok:              # add_sack
                        tcp_sack_new_ofo_skb(sk, seq, end_seq)
                    return
                if after(seq, s1.seq):
                    tcp_dsack_set(n, sk, seq, s1.end_seq)       # partial overlap
                else:
                    # Same start and it covers s1: s1 goes, skb takes its place.
                    rb_replace_node(t, parent, si, &sk.ofo_root)
                    __q_insert_after(n, &sk.ofo_head, &sk.ofo_tail, parent, si)
                    __q_unlink(n, &sk.ofo_head, &sk.ofo_tail, parent)
                    sock_rfree(n, s1)
                    tcp_dsack_extend(n, sk, s1.seq, s1.end_seq)
                    n.tcp.TCPOFOMerge += 1
                    __drop(n, parent, NM_DROP_TCP_OFOMERGE)
                    replaced = True
                    break
            elif tcp_ooo_try_coalesce(n, parent, si):
                if sk.sack_ok:
                    tcp_sack_new_ofo_skb(sk, seq, end_seq)
                return
            p = &t[parent].rb_right
    if not replaced:
        __ofo_insert(n, sk, si, parent, p)
    # merge_right: remove the segments the new one covers.
    while skb.next != NM_NIL:
        nxt = skb.next
        s1 = SKB(n, nxt)
        if not after(end_seq, s1.seq):
            break
        if before(end_seq, s1.end_seq):
            tcp_dsack_extend(n, sk, s1.seq, end_seq)
            break
        __ofo_unlink(n, sk, nxt)
        sock_rfree(n, s1)
        tcp_dsack_extend(n, sk, s1.seq, s1.end_seq)
        n.tcp.TCPOFOMerge += 1
        __drop(n, nxt, NM_DROP_TCP_OFOMERGE)
    if sk.sack_ok and not first:                # add_sack (the first skb built its block)
        tcp_sack_new_ofo_skb(sk, seq, end_seq)
    if sk.sack_ok:
        tcp_grow_window(n, sk, skb, False)
    skb_condense(n, skb)
    skb_set_owner_r(n, skb, ski)


cdef void tcp_data_queue(nm_net *n, uint32_t ski, uint32_t si) noexcept nogil:
    """Models ``tcp_data_queue()`` (7.x): in order (into a zero window only a bare FIN:
    ``TCPZeroWindowDrop``), old data, past the window (``TCP_OVERWINDOW``: a zero-window
    probe), partial overlap, or out of order. Each drop but memory's enters quick-ack mode
    (``out_of_window``)."""
    cdef nm_sock *sk = &n.socks[ski]
    cdef nm_skb *skb = SKB(n, si)
    if skb.seq == skb.end_seq:
        __kfree_skb(n, si)              # a pure ACK: consumed
        return
    sk.dsack = 0                        # tp->rx_opt.dsack = 0
    if skb.seq == sk.rcv_nxt:
        if tcp_receive_window(sk) == 0 and (skb.len or not (skb.tcp_flags & TCPHDR_FIN)):
            n.tcp.TCPZeroWindowDrop += 1
            __tcp_out_of_window(n, sk, si, NM_DROP_TCP_ZEROWINDOW)
            return
        __tcp_queue_and_out(n, ski, si)
        return
    if not after(skb.end_seq, sk.rcv_nxt):
        n.tcp.DelayedACKLost += 1       # a retransmit: force an immediate ACK
        tcp_dsack_set(n, sk, skb.seq, skb.end_seq)
        __tcp_out_of_window(n, sk, si, NM_DROP_TCP_OLD_DATA)
        return
    if not before(skb.seq, sk.rcv_nxt + tcp_receive_window(sk)):
        __tcp_out_of_window(n, sk, si, NM_DROP_TCP_OVERWINDOW)
        return
    if before(skb.seq, sk.rcv_nxt):
        tcp_dsack_set(n, sk, skb.seq, sk.rcv_nxt)   # partial packet, seq < rcv_nxt < end_seq
        if tcp_receive_window(sk) == 0:
            n.tcp.TCPZeroWindowDrop += 1
            __tcp_out_of_window(n, sk, si, NM_DROP_TCP_ZEROWINDOW)
            return
        __tcp_queue_and_out(n, ski, si)
        return
    tcp_data_queue_ofo(n, ski, si)


cdef inline void __tcp_out_of_window(nm_net *n, nm_sock *sk, uint32_t si,
                                     int reason) noexcept nogil:
    """``tcp_data_queue()``'s out_of_window: quick-ack mode, an ACK scheduled, the drop."""
    tcp_enter_quickack_mode(sk, TCP_MAX_QUICKACKS)
    inet_csk_schedule_ack(sk)
    __drop(n, si, reason)


cdef void __tcp_queue_and_out(nm_net *n, uint32_t ski, uint32_t si) noexcept nogil:
    """``tcp_data_queue()``'s queue_and_out: charge the skb (or drop it, ``TCPRcvQDrop``,
    when memory is short and the queue holds data), coalesce it into the tail or queue it,
    then move what became in order from the out-of-order queue."""
    cdef nm_sock *sk = &n.socks[ski]
    cdef nm_skb *skb = SKB(n, si)
    cdef bint fragstolen = False, eaten
    if not tcp_try_rmem_schedule(n, sk, skb):
        sk.ack_pending |= ICSK_ACK_NOW | ICSK_ACK_SCHED     # ICSK_ACK_NOMEM is not kept
        ep_poll_callback(n, ski)            # sk->sk_data_ready()
        if sk.rq_head != NM_NIL and skb.len:
            n.tcp.TCPRcvQDrop += 1
            __drop(n, si, NM_DROP_PROTO_MEM)
            return
    # Else sk_forced_mem_schedule(): an empty queue (or a bare FIN) always takes it.
    eaten = (sk.rq_tail != NM_NIL
             and tcp_try_coalesce(n, SKB(n, sk.rq_tail), skb, &fragstolen))
    tcp_rcv_nxt_update(sk, skb.end_seq)
    if not eaten:
        __tcp_queue_tail(n, ski, si)            # tcp_queue_rcv(): charged before the window grows
    if skb.len:
        tcp_event_data_recv(n, sk, skb)
    if skb.tcp_flags & TCPHDR_FIN:
        tcp_fin(n, sk)
    if sk.ofo_head != NM_NIL:
        tcp_ofo_queue(n, ski)
        if sk.ofo_root == NM_NIL:
            sk.ack_pending |= ICSK_ACK_NOW     # the hole is filled: ACK it at once
    if sk.num_sacks:
        tcp_sack_remove(sk)
    if eaten:
        kfree_skb_partial(n, si, fragstolen)
    ep_poll_callback(n, ski)        # tcp_data_ready()


# ---- the protocol layers ------------------------------------------------------------------------

cdef inline bint pskb_may_pull(nm_skb *skb, uint32_t len) noexcept nogil:
    """Whether ``len`` bytes from skb->data are in the head. Departs: the kernel would pull
    readable frag bytes into the head; the model's drivers put every header in the head, so
    only a frame whose headers are not there (unreadable, or cut short) fails."""
    return skb_headlen(skb) >= len


cdef void pskb_trim_rcsum(nm_net *n, nm_skb *skb, uint32_t len) noexcept nogil:
    """Trim Ethernet padding: the skb ends ``len`` bytes after skb->data (frags that fall
    beyond go home)."""
    cdef nm_shinfo *sh = skb_shinfo(n, skb)
    cdef uint32_t hl = skb_headlen(skb), off, i, keep = 0
    if len >= skb.len:
        return
    if len <= hl:
        for i in range(sh.nr_frags):
            skb_page_unref(n.m, sh.frags[i].netmem, skb.pp_recycle)
        sh.nr_frags = 0
        skb.data_len = 0
        skb.len = len
        return
    off = hl
    for i in range(sh.nr_frags):
        if off >= len:
            skb_page_unref(n.m, sh.frags[i].netmem, skb.pp_recycle)
            continue
        if off + sh.frags[i].len > len:
            sh.frags[i].len = len - off
        off += sh.frags[i].len
        keep = i + 1
    sh.nr_frags = <uint8_t>keep
    skb.data_len = len - hl
    skb.len = len


cdef inline uint32_t tcp_jiffies32(nm_net *n) noexcept nogil:
    """``tcp_jiffies32`` at HZ 1000 (a jiffy is 1 ms of the stack's clock: the NAPI poll's
    latest frame while one runs, else the machine's), from INITIAL_JIFFIES (-300 s)."""
    cdef uint64_t ns = n.now_ns if n.now_ns else n.m.clock_ns
    return <uint32_t>(ns // 1000000) + <uint32_t>(-300 * 1000)


cdef void tcp_send_challenge_ack(nm_net *n, nm_sock *sk) noexcept nogil:
    """Models ``tcp_send_challenge_ack()`` (the per-netns limit since 6.0; 6.12 to 7.x): first
    ``__tcp_oow_rate_limited()``, at most one per ``net.ipv4.tcp_invalid_ratelimit`` (500 ms)
    per socket (else TCPACKSkippedChallenge), then the RFC 5961 limit of
    ``net.ipv4.tcp_challenge_ack_limit`` per second (INT_MAX, the default, turns it off), each
    second's budget drawn from [limit/2, limit*3/2) (``get_random_u32_inclusive()``; here a
    xorshift32 seeded from the machine's seed). A challenge that passes is TCPChallengeACK;
    nothing is sent."""
    cdef uint32_t now = tcp_jiffies32(n), half, span
    if __tcp_oow_rate_limited(n, sk):
        n.tcp.TCPACKSkippedChallenge += 1
        return
    if n.challenge_ack_limit != NM_INT_MAX:
        if now // 1000 != n.challenge_timestamp:                # jiffies / HZ
            half = (n.challenge_ack_limit + 1) >> 1
            span = n.challenge_ack_limit                        # 0: the whole u32 range
            n.challenge_timestamp = now // 1000
            n.challenge_count = half + (nm_xorshift32(&n.challenge_rng) % span if span
                                        else nm_xorshift32(&n.challenge_rng))
        if n.challenge_count == 0:
            return
        n.challenge_count -= 1
    n.tcp.TCPChallengeACK += 1


cdef void tcp_rcv(nm_net *n, uint32_t si, uint8_t family, const uint8_t *saddr,
                  const uint8_t *daddr) noexcept nogil:
    """Models ``tcp_v4_rcv()`` / ``tcp_v6_rcv()`` and ``tcp_rcv_established()`` for the receive
    side: header checks, socket lookup (opening one on a SYN, or mid-flow when asked),
    ``tcp_filter()``'s pfmemalloc test, RST, SYN, then ``tcp_data_queue()``."""
    cdef nm_skb *skb = SKB(n, si)
    cdef uint8_t *th
    cdef uint32_t doff, ski, seq
    cdef uint16_t sport, dport
    cdef uint8_t flags
    cdef nm_sock *sk
    n.tcp.InSegs += 1
    if not pskb_may_pull(skb, 20):
        __drop(n, si, NM_DROP_NOT_SPECIFIED)    # discard_it
        return
    th = skb_transport_hdr(n, skb)
    doff = (th[12] >> 4) * 4
    if doff < 20:
        n.tcp.InErrs += 1                       # bad_packet
        __drop(n, si, NM_DROP_PKT_TOO_SMALL)
        return
    if not pskb_may_pull(skb, doff):
        __drop(n, si, NM_DROP_NOT_SPECIFIED)    # discard_it
        return
    sport = _be16(th)
    dport = _be16(th + 2)
    seq = _be32(th + 4)
    flags = th[13]
    # TCP_SKB_CB(): the payload starts after the header (__skb_pull() of doff bytes).
    skb.data += doff
    skb.len -= doff
    skb.seq = seq
    skb.end_seq = seq + skb.len + ((flags & TCPHDR_SYN) != 0) + ((flags & TCPHDR_FIN) != 0)
    skb.ack_seq = _be32(th + 8)
    skb.tcp_flags = flags
    ski = __inet_lookup(n, family, daddr, saddr, dport, sport)
    if ski != NM_NIL and flags & TCPHDR_SYN and not (flags & TCPHDR_RST):
        sk = &n.socks[ski]
        if sk.state != NM_TCP_ESTABLISHED and skb.seq + 1 != sk.rcv_nxt:
            inet_unhash(n, ski)                 # a new connection on a finished tuple
            ski = NM_NIL
    # tcp_filter() -> sk_filter_trim_cap(), after the lookup and before tcp_segs_in(): an skb
    # from the memalloc reserves reaches only a SOCK_MEMALLOC socket (the model has none: no
    # swap over the network), so on any socket found (a listener, for a SYN) it is dropped, -ENOMEM,
    # counted in PFMemallocDrop with SKB_DROP_REASON_PFMEMALLOC. Without a socket the frame goes
    # to no_tcp_socket as before.
    if unlikely(skb.pfmemalloc) and (ski != NM_NIL or (not (flags & TCPHDR_RST) and (
            flags & TCPHDR_SYN or n.open_on_data))):
        n.tcp.PFMemallocDrop += 1
        __drop(n, si, NM_DROP_PFMEMALLOC)
        return
    if ski == NM_NIL:
        if flags & TCPHDR_SYN and not (flags & TCPHDR_RST):
            ski = __sk_create(n, family, daddr, saddr, dport, sport, seq + 1)
            if ski == NM_NIL:
                __drop(n, si, NM_DROP_PROTO_MEM)
                return
            if not (flags & TCPHDR_ACK):
                n.tcp.PassiveOpens += 1         # a SYN-ACK opens the active side
            n.socks[ski].sack_ok = tcp_parse_options_has(th, doff, 4)
            # tp->rx_opt.tstamp_ok: the local side answers a SYN's timestamps with its own
            # (net.ipv4.tcp_timestamps is on by default).
            n.socks[ski].tstamp_ok = tcp_parse_options_has(th, doff, 8)
            tcp_ack_init(n, &n.socks[ski], tcp_parse_options_has(th, doff, 3))
            n.socks[ski].segs_in += 1
            # tcp_conn_request() takes no data from a SYN without a Fast Open cookie (the
            # server side of net.ipv4.tcp_fastopen is off by default): the sender sends it
            # again after the handshake. The SYN is consumed.
            __kfree_skb(n, si)
            return
        if n.open_on_data and not (flags & TCPHDR_RST):
            ski = __sk_create(n, family, daddr, saddr, dport, sport, seq)
            if ski == NM_NIL:
                __drop(n, si, NM_DROP_PROTO_MEM)
                return
            tcp_ack_init(n, &n.socks[ski], True)   # mid-flow: assume the SYN offered scaling
        else:
            if not (flags & TCPHDR_RST):
                n.tcp.OutRsts += 1              # tcp_v4_send_reset()
            __drop(n, si, NM_DROP_NO_SOCKET)
            return
    sk = &n.socks[ski]
    # tcp_segs_in(): a GRO packet counts its segments.
    sk.segs_in += max(<uint16_t>1, skb.gso_segs)
    if skb.len:
        sk.data_segs_in += max(<uint16_t>1, skb.gso_segs)
    # tcp_rcv_established() drops a segment without ACK, RST or SYN (TCP_FLAGS, below) before
    # tcp_validate_incoming() looks at its sequence.
    if (flags & (TCPHDR_ACK | TCPHDR_RST) and not (flags & TCPHDR_SYN)
            and not tcp_validate_sequence(n, ski, si)):
        return
    if flags & TCPHDR_RST:
        # tcp_validate_incoming(), RFC 5961: rcv_nxt resets, and so does rcv_nxt - 1 after a
        # FIN (tcp_reset_check()) and, with SACK, the right-most SACK block's end; any other
        # sequence in the window draws a challenge ACK.
        if (seq == sk.rcv_nxt or tcp_reset_check(sk, seq)
                or tcp_rst_seq_is_max_sack(n, sk, seq)):
            tcp_reset(n, ski)
            __kfree_skb(n, si)
        else:
            tcp_send_challenge_ack(n, sk)
            __drop(n, si, NM_DROP_TCP_RESET)
        return
    if flags & TCPHDR_SYN:
        # tcp_validate_incoming(): a SYN, out of the window (step 1's syn_challenge) or in it
        # (step 4), is answered with a challenge ACK; tcp_rcv_established() passes syn_inerr, so in
        # ESTABLISHED it also counts in InErrs.
        if sk.state == NM_TCP_ESTABLISHED:
            n.tcp.InErrs += 1
        n.tcp.TCPSYNChallenge += 1
        tcp_send_challenge_ack(n, sk)
        __drop(n, si, NM_DROP_TCP_INVALID_SYN)
        return
    if not (flags & TCPHDR_ACK):
        __drop(n, si, NM_DROP_TCP_FLAGS)        # tcp_rcv_established(): no ACK, discard
        return
    if sk.state == NM_TCP_CLOSE:
        __drop(n, si, NM_DROP_TCP_CLOSE)
        return
    if sk.state == NM_TCP_CLOSE_WAIT:
        # tcp_rcv_state_process(), step 7: after the FIN nothing at or past rcv_nxt is queued
        # (not even a pure ACK: it is discarded as NOT_SPECIFIED); a segment that starts
        # before rcv_nxt but brings data past it aborts the connection.
        if not before(skb.seq, sk.rcv_nxt):
            __drop(n, si, NM_DROP_NOT_SPECIFIED)
            return
        if skb.end_seq != skb.seq and after(skb.end_seq - ((flags & TCPHDR_FIN) != 0),
                                            sk.rcv_nxt):
            n.tcp.TCPAbortOnData += 1
            tcp_reset(n, ski)
            __drop(n, si, NM_DROP_TCP_ABORT_ON_DATA)
            return
    if sk.tstamp_ok:
        tcp_replace_ts_recent(sk, th, doff, seq)
    tcp_data_queue(n, ski, si)
    tcp_ack_snd_check(n, ski)


cdef inline bint tcp_reset_check(nm_sock *sk, uint32_t seq) noexcept nogil:
    """Models ``tcp_reset_check()``: after the FIN (CLOSE_WAIT here), rcv_nxt - 1."""
    return seq == sk.rcv_nxt - 1 and sk.state == NM_TCP_CLOSE_WAIT


cdef bint tcp_validate_sequence(nm_net *n, uint32_t ski, uint32_t si) noexcept nogil:
    """Step 1 of ``tcp_validate_incoming()`` (7.x) for a segment without SYN (a SYN draws the
    challenge ACK of step 4 either way): a segment ``tcp_sequence()`` refuses is dropped with
    its reason; a RST silently (unless ``tcp_reset_check()``: it resets), anything else after
    ``BeyondWindow`` (past the window) and ``tcp_send_dupack()``, which
    ``tcp_oow_rate_limited()`` holds back for a pure ACK (``TCPACKSkippedSeq``). False when
    the skb is gone."""
    cdef nm_sock *sk = &n.socks[ski]
    cdef nm_skb *skb = SKB(n, si)
    cdef int reason = tcp_sequence(sk, skb)
    if likely(reason < 0):
        return True
    if skb.tcp_flags & TCPHDR_RST:
        if tcp_reset_check(sk, skb.seq):
            tcp_reset(n, ski)
            __kfree_skb(n, si)
            return False
    else:
        if reason != NM_DROP_TCP_OLD_SEQUENCE:
            n.tcp.BeyondWindow += 1
        if skb.seq == skb.end_seq and __tcp_oow_rate_limited(n, sk):
            n.tcp.TCPACKSkippedSeq += 1
        else:
            tcp_send_dupack(n, ski, skb)
    __drop(n, si, reason)
    return False


cdef inline bint tcp_rst_seq_is_max_sack(nm_net *n, nm_sock *sk, uint32_t seq) noexcept nogil:
    """Step 2 of ``tcp_validate_incoming()``: ``tcp_is_sack(tp) && tp->rx_opt.num_sacks > 0``
    and the RST's seq equals ``max_sack``, the highest ``end_seq`` of ``tp->selective_acks``."""
    cdef uint32_t max_sack
    cdef int i
    if not sk.sack_ok or sk.num_sacks == 0:
        return False
    max_sack = sk.selective_acks[1]
    for i in range(1, sk.num_sacks):
        if after(sk.selective_acks[2 * i + 1], max_sack):
            max_sack = sk.selective_acks[2 * i + 1]
    return seq == max_sack


cdef inline bint tcp_parse_options_has(const uint8_t *th, uint32_t doff,
                                       uint8_t kind) noexcept nogil:
    """The part of ``tcp_parse_options()`` the receiver needs from a SYN: whether its options
    carry ``kind`` (TCPOPT_WINDOW 3, TCPOPT_SACK_PERM 4, TCPOPT_TIMESTAMP 8)."""
    return tcp_option_at(th, doff, kind) != 0


cdef void tcp_replace_ts_recent(nm_sock *sk, const uint8_t *th, uint32_t doff,
                                uint32_t seq) noexcept nogil:
    """Models ``tcp_replace_ts_recent()``: a segment's TSval that is not older than
    ``ts_recent`` becomes the next ACK's TSecr when the segment starts at or before
    ``rcv_wup``. Departs: ``tcp_paws_check()``'s 24-day staleness rule is left out."""
    cdef uint32_t i, tsval
    if after(seq, sk.rcv_wup):
        return
    i = tcp_option_at(th, doff, 8)
    if i == 0 or i + 10 > doff or th[i + 1] != 10:
        return
    tsval = _be32(th + i + 2)
    if sk.ts_recent == 0 or <int32_t>(tsval - sk.ts_recent) >= 0:
        sk.ts_recent = tsval


cdef uint32_t tcp_option_at(const uint8_t *th, uint32_t doff, uint8_t kind) noexcept nogil:
    """``tcp_parse_options()``'s walk: the offset of the first option ``kind`` (0: none)."""
    cdef uint32_t i = 20, optlen
    while i < doff:
        if th[i] == 0:
            break
        if th[i] == 1:
            i += 1
            continue
        if i + 1 >= doff:
            break
        if th[i] == kind:
            return i
        optlen = th[i + 1]
        if optlen < 2:
            break
        i += optlen
    return 0


cdef void ip_rcv(nm_net *n, uint32_t si) noexcept nogil:
    """Models ``ip_rcv_core()`` and ``ip_local_deliver()``: header checks with the kernel's
    MIB counters, padding trimmed, fragments refused (no reassembly), TCP, UDP and ICMP
    delivered (``ip_protocol_deliver_rcu()``)."""
    cdef nm_skb *skb = SKB(n, si)
    cdef uint8_t *iph
    cdef uint32_t ihl, tot
    n.ip.InReceives += 1
    if not pskb_may_pull(skb, 20):
        n.ip.InHdrErrors += 1
        __drop(n, si, NM_DROP_IP_INHDR)
        return
    iph = skb_network_header(n, skb)
    ihl = (iph[0] & 0xf) * 4
    if ihl < 20 or iph[0] >> 4 != 4 or not pskb_may_pull(skb, ihl):
        n.ip.InHdrErrors += 1
        __drop(n, si, NM_DROP_IP_INHDR)
        return
    tot = _be16(iph + 2)
    if skb.len < tot:
        n.ip.InTruncatedPkts += 1
        __drop(n, si, NM_DROP_PKT_TOO_SMALL)
        return
    if tot < ihl:
        n.ip.InHdrErrors += 1
        __drop(n, si, NM_DROP_IP_INHDR)
        return
    pskb_trim_rcsum(n, skb, tot)
    skb.transport_header = <uint16_t>(skb.network_header + ihl)
    skb.data += ihl
    skb.len -= ihl
    if _be16(iph + 6) & 0x3fff:
        n.ip.ReasmReqds += 1
        n.ip.ReasmFails += 1
        __drop(n, si, NM_DROP_FRAG_REASM)
        return
    if iph[9] != IPPROTO_TCP and iph[9] != IPPROTO_UDP and iph[9] != IPPROTO_ICMP:
        n.ip.InUnknownProtos += 1
        __drop(n, si, NM_DROP_IP_NOPROTO)
        return
    # The kernel counts InDelivers once the handler returns (none resubmits here).
    n.ip.InDelivers += 1
    if iph[9] == IPPROTO_UDP:
        udp_rcv(n, si, &n.udp, False)
    elif iph[9] == IPPROTO_ICMP:
        icmp_rcv(n, si, &n.icmp, False)
    else:
        tcp_rcv(n, si, 4, iph + 12, iph + 16)


cdef void ipv6_rcv(nm_net *n, uint32_t si) noexcept nogil:
    """Models ``ip6_rcv_core()`` and ``ip6_input_finish()``: header checks, padding trimmed,
    extension headers 0/43/60 walked, fragments refused, TCP, UDP and ICMPv6 delivered."""
    cdef nm_skb *skb = SKB(n, si)
    cdef uint8_t *iph
    cdef uint8_t *h
    cdef uint32_t plen, off
    cdef uint8_t nh
    n.ip6.InReceives += 1
    if not pskb_may_pull(skb, 40):
        n.ip6.InHdrErrors += 1
        __drop(n, si, NM_DROP_IP_INHDR)
        return
    iph = skb_network_header(n, skb)
    if iph[0] >> 4 != 6:
        n.ip6.InHdrErrors += 1
        __drop(n, si, NM_DROP_UNHANDLED_PROTO)  # ip6_rcv_core() sets this reason first
        return
    plen = _be16(iph + 4)
    if plen + 40 > skb.len:
        n.ip6.InTruncatedPkts += 1
        __drop(n, si, NM_DROP_PKT_TOO_SMALL)
        return
    pskb_trim_rcsum(n, skb, plen + 40)
    nh = iph[6]
    off = 40
    while ipv6_ext_hdr(nh):
        if not pskb_may_pull(skb, off + 8):
            n.ip6.InHdrErrors += 1
            __drop(n, si, NM_DROP_IP_INHDR)
            return
        h = iph + off
        nh = h[0]
        off += (h[1] + 1) * 8
    if off > skb.len or not pskb_may_pull(skb, off):
        n.ip6.InHdrErrors += 1
        __drop(n, si, NM_DROP_IP_INHDR)
        return
    skb.transport_header = <uint16_t>(skb.network_header + off)
    skb.data += off
    skb.len -= off
    if nh == 44:
        n.ip6.ReasmReqds += 1
        n.ip6.ReasmFails += 1
        __drop(n, si, NM_DROP_FRAG_REASM)
        return
    if nh != IPPROTO_TCP and nh != IPPROTO_UDP and nh != IPPROTO_ICMPV6:
        n.ip6.InUnknownProtos += 1
        __drop(n, si, NM_DROP_IP_NOPROTO)
        return
    n.ip6.InDelivers += 1
    if nh == IPPROTO_UDP:
        udp_rcv(n, si, &n.udp6, True)
    elif nh == IPPROTO_ICMPV6:
        icmp_rcv(n, si, &n.icmp6, True)
    else:
        tcp_rcv(n, si, 6, iph + 8, iph + 24)


cdef void netif_receive_skb(nm_net *n, nm_netdev *nd, uint32_t si) noexcept nogil:
    """Models ``__netif_receive_skb_core()``'s dispatch by protocol: a frame that ends inside
    a VLAN tag is freed by ``skb_vlan_untag()``; a frame no handler takes counts in rx_dropped
    (rx_nohandler is only for exact delivery, which an rx_handler such as bonding asks for; the
    model has none)."""
    cdef nm_skb *skb = SKB(n, si)
    nm_trace(n.m, TP_NETIF_RECEIVE_SKB, 0, si, skb.len, nd.ifindex, 0)
    if skb.pkt_type == PACKET_OTHERHOST and (skb.protocol == 4 or skb.protocol == 6):
        # ip_rcv_core() / ip6_rcv_core(): dropped before anything is counted in Ip/Ip6.
        nd.rx_otherhost_dropped += 1
        __drop(n, si, NM_DROP_OTHERHOST)
    elif skb.protocol == 4:
        ip_rcv(n, si)
    elif skb.protocol == 6:
        ipv6_rcv(n, si)
    elif skb.protocol == NM_SKB_PROTO_VLAN_CUT:
        # skb_vlan_untag(): pskb_may_pull() of the tag and the next EtherType fails; err_free.
        __drop(n, si, NM_DROP_NOT_SPECIFIED)
    else:
        nd.rx_dropped += 1
        __drop(n, si, NM_DROP_UNHANDLED_PROTO)
