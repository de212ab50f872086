# devmem TX: TCP send from a dma-buf, MSG_ZEROCOPY completions, the device's transmit, in C.
#
# Models (Linux 6.16 and later, read in torvalds/linux): net_devmem_get_niov_at()
# (net/core/devmem.c), zerocopy_fill_skb_from_devmem() (net/core/datagram.c),
# skb_zerocopy_iter_stream(), msg_zerocopy_realloc(), msg_zerocopy_put_abort() and
# __msg_zerocopy_callback() with skb_zerocopy_notify_extend() (net/core/skbuff.c), the
# MSG_ZEROCOPY branch of tcp_sendmsg_locked() (net/ipv4/tcp.c), tcp_write_xmit(),
# tcp_clean_rtx_queue(), validate_xmit_unreadable_skb() (net/core/dev.c) and a TSO device that
# DMA-reads each frag's payload through the DMA/IOMMU layer and fills in the IPv4 and TCP
# checksums. The Python side (netmem.tcp_tx, netmem.devmem_tx) does the checks that raise.
#
# Departs (docs/design.md, devmem TX): IPv4 without TCP options on data segments (the SYN carries
# MSS); no Nagle, autocork or send buffer limit (the socket is TCP_NODELAY with room); an skb
# that does not fit the send window waits whole (no tso_fragment()); a partly acked skb stays
# whole until its end is acked (no tcp_trim_head()); TX completion is immediate after the
# device's reads.

DEF TX_HDR_LEN = 54                 # Ethernet 14 + IPv4 20 + TCP 20 (no options)
DEF TCPHDR_FIN = 0x01
DEF TCPHDR_SYN = 0x02
DEF TCPHDR_PSH = 0x08
DEF TCPHDR_ACK = 0x10
DEF MAX_SKB_FRAGS = 17              # CONFIG_MAX_SKB_FRAGS default
DEF MSG_ZC_BYTE_LIMIT = 1 << 19     # msg_zerocopy_realloc(): "limit to a few TSO"
DEF USHRT_MAX = 0xffff


# ---- growable arrays ---------------------------------------------------------------------------

cdef int __grow(void **p, uint64_t *cap, uint64_t need, size_t item) noexcept nogil:
    """Make ``*p`` hold ``need`` items (doubling): 0 or -ENOMEM (``*p`` unchanged)."""
    cdef uint64_t c = max(cap[0], <uint64_t>16)
    cdef void *q
    if need <= cap[0]:
        return 0
    while c < need:
        c *= 2
    q = realloc(p[0], c * item)
    if q == NULL:
        return -ENOMEM
    p[0] = q
    cap[0] = c
    return 0


# ---- checksums ---------------------------------------------------------------------------------

cdef uint64_t __csum_add(uint64_t sum, const uint8_t *p, uint64_t n) noexcept nogil:
    """Ones'-complement sum of ``p[:n]`` as big-endian 16-bit words (an odd last byte is the
    high one) added to ``sum``: native 32-bit words are summed (RFC 1071: the sum is the same
    in either byte order, swapped), folded and byte-swapped once."""
    cdef uint64_t acc = 0, i = 0
    cdef uint32_t w
    cdef uint16_t h
    while i + 4 <= n:
        memcpy(&w, p + i, 4)
        acc += w
        i += 4
    if i + 2 <= n:
        memcpy(&h, p + i, 2)
        acc += h
        i += 2
    while acc >> 16:
        acc = (acc & 0xffff) + (acc >> 16)
    acc = ((acc & 0xff) << 8) | (acc >> 8)          # little-endian host: to big-endian
    if i < n:
        acc += <uint64_t>p[i] << 8
    return sum + acc


cdef inline uint16_t __csum_fold(uint64_t sum) noexcept nogil:
    while sum >> 16:
        sum = (sum & 0xffff) + (sum >> 16)
    return <uint16_t>(~sum & 0xffff)


cdef inline void __put16(uint8_t *p, uint32_t v) noexcept nogil:
    p[0] = (v >> 8) & 0xff
    p[1] = v & 0xff


cdef inline void __put32(uint8_t *p, uint32_t v) noexcept nogil:
    p[0] = v >> 24
    p[1] = (v >> 16) & 0xff
    p[2] = (v >> 8) & 0xff
    p[3] = v & 0xff


# ---- the binding's tx_vec ------------------------------------------------------------------------

cdef netmem_ref net_devmem_get_niov_at(nm_devmem_binding *b, uint64_t virt_addr, uint64_t *off,
                                       uint64_t *size) noexcept nogil:
    """Models ``net_devmem_get_niov_at()``: the net_iov at byte ``virt_addr`` of the dma-buf,
    the offset in it and the bytes to its end; 0 past the dma-buf's size."""
    if virt_addr >= b.dmabuf_size:
        return 0
    off[0] = virt_addr % PAGE_SIZE
    size[0] = PAGE_SIZE - off[0]
    return b.tx_vec[virt_addr // PAGE_SIZE]


# ---- MSG_ZEROCOPY: ubuf_info_msgzc and the error queue -------------------------------------------

cdef int32_t msg_zerocopy_alloc(nm_tx_sock *sk, uint64_t size) noexcept nogil:
    """Models ``msg_zerocopy_alloc()``: a new notification with the next ``sk_zckey`` as its
    id, one reference (the sender's); -ENOMEM."""
    cdef uint32_t i
    cdef uint64_t cap = sk.uarg_cap
    for i in range(sk.uarg_cap):
        if not sk.uargs[i].live:
            break
    else:
        if __grow(<void **>&sk.uargs, &cap, <uint64_t>sk.uarg_cap + 1, sizeof(nm_uarg)) < 0:
            return -ENOMEM
        memset(&sk.uargs[sk.uarg_cap], 0, (cap - sk.uarg_cap) * sizeof(nm_uarg))
        i = sk.uarg_cap
        sk.uarg_cap = <uint32_t>cap
    sk.uargs[i].id = sk.zckey
    sk.zckey += 1
    sk.uargs[i].len = 1
    sk.uargs[i].bytelen = <uint32_t>size
    sk.uargs[i].refcnt = 1
    sk.uargs[i].zerocopy = 1
    sk.uargs[i].live = 1
    return <int32_t>i


cdef int32_t msg_zerocopy_realloc(nm_tx_sock *sk, uint64_t size, int32_t tail) noexcept nogil:
    """Models ``msg_zerocopy_realloc(sk, size, skb_zcopy(tail skb), devmem=true)``: extend the
    write queue tail's notification by one id when it is the latest (``id + len == sk_zckey``)
    and stays under 512 KiB and USHRT_MAX - 1 sends, taking a reference for this send (no
    pinned-page accounting for devmem); else a new one."""
    cdef nm_uarg *u
    cdef uint64_t bytelen
    if tail >= 0:
        u = &sk.uargs[tail]
        bytelen = u.bytelen + size
        if u.len != USHRT_MAX - 1 and bytelen <= MSG_ZC_BYTE_LIMIT and \
                <uint32_t>(u.id + u.len) == sk.zckey:
            u.len += 1
            u.bytelen = <uint32_t>bytelen
            sk.zckey += 1
            u.refcnt += 1
            return tail
    return msg_zerocopy_alloc(sk, size)


cdef bint skb_zerocopy_notify_extend(nm_zc_notif *tail, uint32_t lo, uint32_t len) noexcept nogil:
    """Models ``skb_zerocopy_notify_extend()``: merge ``[lo, lo + len)`` into the queued
    notification when it follows it and the sum stays below 2^32."""
    cdef uint64_t sum_len = <uint64_t>(<uint32_t>(tail.hi - tail.lo)) + 1 + len
    if sum_len >= (<uint64_t>1 << 32):
        return False
    if lo != <uint32_t>(tail.hi + 1):
        return False
    tail.hi += len
    return True


cdef void __msg_zerocopy_callback(nm_tx_sock *sk, nm_uarg *u) noexcept nogil:
    """Models ``__msg_zerocopy_callback()``: nothing for a send that was aborted whole (len 0)
    or a dead socket; else ``[id, id + len - 1]`` with ``SO_EE_CODE_ZEROCOPY_COPIED`` when the
    data was copied (never for devmem), merged into the error queue's tail when it extends it."""
    cdef nm_zc_notif *tail
    cdef uint64_t cap = sk.errq_cap
    cdef uint8_t code = 0 if u.zerocopy else 1
    u.live = 0
    if u.len == 0 or sk.dead:
        return
    if sk.errq_tail > sk.errq_head:
        tail = &sk.errq[sk.errq_tail - 1]
        if tail.code == code and skb_zerocopy_notify_extend(tail, u.id, u.len):
            return
    if __grow(<void **>&sk.errq, &cap, sk.errq_tail + 1, sizeof(nm_zc_notif)) < 0:
        return                      # the kernel drops the notification when the skb is gone
    sk.errq_cap = cap
    sk.errq[sk.errq_tail].lo = u.id
    sk.errq[sk.errq_tail].hi = u.id + u.len - 1
    sk.errq[sk.errq_tail].code = code
    sk.errq_tail += 1


cdef inline void net_zcopy_put(nm_tx_sock *sk, int32_t i) noexcept nogil:
    """Models ``net_zcopy_put()``: the last reference runs the callback."""
    sk.uargs[i].refcnt -= 1
    if sk.uargs[i].refcnt == 0:
        __msg_zerocopy_callback(sk, &sk.uargs[i])


cdef void msg_zerocopy_put_abort(nm_tx_sock *sk, int32_t i) noexcept nogil:
    """Models ``msg_zerocopy_put_abort(uarg, have_uref=true)``: the send's id is given back."""
    sk.zckey -= 1
    sk.uargs[i].len -= 1
    net_zcopy_put(sk, i)


# ---- the send queue ------------------------------------------------------------------------------

cdef inline nm_tx_skb *tcp_write_queue_tail(nm_tx_sock *sk) noexcept nogil:
    if sk.skb_tail == sk.send_head:
        return NULL
    return &sk.skbs[sk.skb_tail - 1]


cdef nm_tx_skb *tcp_entail(nm_tx_sock *sk) noexcept nogil:
    """A new empty skb at the tail of the write queue (``tcp_stream_alloc_skb()`` +
    ``tcp_skb_entail()``): flags ACK only, or NULL."""
    cdef nm_tx_skb *skb
    if __grow(<void **>&sk.skbs, &sk.skb_cap, sk.skb_tail + 1, sizeof(nm_tx_skb)) < 0:
        return NULL
    skb = &sk.skbs[sk.skb_tail]
    sk.skb_tail += 1
    skb.seq = skb.end_seq = sk.write_seq
    skb.frag0 = sk.frag_tail
    skb.nr_frags = 0
    skb.uarg = -1
    skb.tcp_flags = TCPHDR_ACK
    skb.sent = 0
    return skb


cdef void __tx_frags_put(nm_tx_sock *sk, nm_tx_skb *skb) noexcept nogil:
    """The skb's frags go (``skb_release_data()`` -> ``put_netmem()`` ->
    ``net_devmem_put_net_iov()``): one binding reference each."""
    cdef uint64_t i
    for i in range(skb.frag0, skb.frag0 + skb.nr_frags):
        sk.frags[i].b.ref -= 1
    skb.nr_frags = 0


cdef void __tx_skb_free(nm_tx_sock *sk, nm_tx_skb *skb) noexcept nogil:
    """``tcp_wmem_free_skb()``: the frags, then the skb's notification reference
    (``skb_zcopy_clear()``)."""
    __tx_frags_put(sk, skb)
    if skb.uarg >= 0:
        net_zcopy_put(sk, skb.uarg)
        skb.uarg = -1


cdef void __tx_compact(nm_tx_sock *sk) noexcept nogil:
    """Drop freed skbs and frags from the front of the arrays (amortized)."""
    cdef uint64_t d, i
    if sk.skb_head > 64 and sk.skb_head * 2 > sk.skb_tail:
        d = sk.skb_head
        memmove(sk.skbs, &sk.skbs[d], (sk.skb_tail - d) * sizeof(nm_tx_skb))
        sk.skb_head = 0
        sk.skb_tail -= d
        sk.send_head -= d
    if sk.skb_head == sk.skb_tail:
        sk.frag_head = sk.frag_tail = 0
        return
    d = sk.skbs[sk.skb_head].frag0
    if d > 256 and d * 2 > sk.frag_tail:
        memmove(sk.frags, &sk.frags[d], (sk.frag_tail - d) * sizeof(nm_tx_frag))
        sk.frag_tail -= d
        for i in range(sk.skb_head, sk.skb_tail):
            sk.skbs[i].frag0 -= d
    sk.frag_head = sk.skbs[sk.skb_head].frag0


# ---- sendmsg ----------------------------------------------------------------------------------

cdef int64_t zerocopy_fill_skb_from_devmem(nm_tx_sock *sk, nm_tx_skb *skb, nm_devmem_binding *b,
                                           const uint64_t *iov_base, const uint64_t *iov_len,
                                           uint64_t nr_segs, uint64_t *seg, uint64_t *seg_off,
                                           uint64_t length) noexcept nogil:
    """Models ``zerocopy_fill_skb_from_devmem()``: frags from the iovecs (base = offset into
    the dma-buf), each up to the next 4 KiB net_iov boundary, the length left and the iovec's
    end (``iter_iov_len()``), each taking a binding reference; the bytes added, or -EMSGSIZE at
    MAX_SKB_FRAGS and -EFAULT past the dma-buf (the frags added stay, for the caller)."""
    cdef uint64_t added = 0, off, size, virt
    cdef netmem_ref niov
    cdef nm_tx_frag *f
    cdef int err = 0
    while length and seg[0] < nr_segs:
        if iov_len[seg[0]] == seg_off[0]:           # an empty iovec, or this one is done
            seg[0] += 1
            seg_off[0] = 0
            continue
        if skb.nr_frags == MAX_SKB_FRAGS:
            err = -EMSGSIZE
            break
        virt = iov_base[seg[0]] + seg_off[0]
        niov = net_devmem_get_niov_at(b, virt, &off, &size)
        if niov == 0:
            err = -EFAULT
            break
        size = min(size, length, iov_len[seg[0]] - seg_off[0])
        if __grow(<void **>&sk.frags, &sk.frag_cap, sk.frag_tail + 1, sizeof(nm_tx_frag)) < 0:
            err = -ENOMEM
            break
        b.ref += 1                                  # get_netmem() -> net_devmem_get_net_iov()
        f = &sk.frags[sk.frag_tail]
        sk.frag_tail += 1
        f.netmem = niov
        f.b = b
        f.off = <uint32_t>off
        f.len = <uint32_t>size
        skb.nr_frags += 1
        seg_off[0] += size
        length -= size
        added += size
    return err if err < 0 else <int64_t>added


cdef void __tx_trim_frags(nm_tx_sock *sk, nm_tx_skb *skb, uint32_t nr_frags) noexcept nogil:
    """``___pskb_trim()`` back to ``nr_frags`` frags (a failed append is undone whole)."""
    cdef uint64_t i
    for i in range(skb.frag0 + nr_frags, skb.frag0 + skb.nr_frags):
        sk.frags[i].b.ref -= 1
    sk.frag_tail = skb.frag0 + nr_frags
    skb.nr_frags = nr_frags


cdef int64_t skb_zerocopy_iter_stream(nm_tx_sock *sk, nm_tx_skb *skb, int32_t uarg,
                                      nm_devmem_binding *b, const uint64_t *iov_base,
                                      const uint64_t *iov_len, uint64_t nr_segs, uint64_t *seg,
                                      uint64_t *seg_off, uint64_t length) noexcept nogil:
    """Models ``skb_zerocopy_iter_stream()``: -EEXIST for an skb with another notification;
    on -EFAULT, or -EMSGSIZE with nothing added, the skb and the iterator go back to where
    they were; else the skb takes a notification reference (``skb_zcopy_set()``) and the bytes
    added are returned."""
    cdef uint32_t orig_frags = skb.nr_frags
    cdef uint64_t s0 = seg[0], o0 = seg_off[0], i
    cdef int64_t r
    if skb.uarg >= 0 and skb.uarg != uarg:
        return -EEXIST
    r = zerocopy_fill_skb_from_devmem(sk, skb, b, iov_base, iov_len, nr_segs, seg, seg_off,
                                      length)
    if r == -EFAULT or r == -ENOMEM or (r == -EMSGSIZE and skb.nr_frags == orig_frags):
        __tx_trim_frags(sk, skb, orig_frags)
        seg[0] = s0
        seg_off[0] = o0
        return r
    if skb.uarg < 0:
        sk.uargs[uarg].refcnt += 1
        skb.uarg = uarg
    r = 0
    for i in range(skb.frag0 + orig_frags, skb.frag0 + skb.nr_frags):
        r += sk.frags[i].len
    return r


cdef inline uint32_t tcp_size_goal(nm_tx_sock *sk) noexcept nogil:
    """Models ``tcp_xmit_size_goal()``: whole MSS segments up to the GSO limit (65536 - 1 -
    MAX_TCP_HEADER 320), bounded to half the largest window the peer offered."""
    cdef uint32_t goal = 65536 - 1 - 320
    cdef uint32_t cutoff
    if sk.max_window > 1220:                        # tcp_bound_to_half_wnd(): TCP_MSS_DESIRED
        cutoff = sk.max_window >> 1
    else:
        cutoff = sk.max_window
    if cutoff and goal > cutoff:
        goal = max(cutoff, <uint32_t>(68 - 20))
    return max(goal // sk.mss, <uint32_t>1) * sk.mss


cdef int64_t tcp_sendmsg_devmem(nm_tx_sock *sk, nm_devmem_binding *b, const uint64_t *iov_base,
                                const uint64_t *iov_len, uint64_t nr_segs, uint64_t size,
                                bint more) noexcept nogil:
    """Models the MSG_ZEROCOPY + dmabuf branch of ``tcp_sendmsg_locked()``: a notification
    (``msg_zerocopy_realloc()``), then skbs of up to ``size_goal`` bytes filled from the
    iovecs; an skb that cannot take more (another notification, MAX_SKB_FRAGS) ends and a new
    one starts; a fault with nothing queued gives the id back (``net_zcopy_put_abort()``) and
    returns -errno, else the bytes queued. The tail is marked PSH unless ``more``
    (``tcp_push()``); the caller then runs ``tcp_write_xmit()``."""
    cdef nm_tx_skb *skb = tcp_write_queue_tail(sk)
    cdef int32_t uarg = msg_zerocopy_realloc(sk, size, skb.uarg if skb != NULL else -1)
    cdef uint32_t size_goal = tcp_size_goal(sk)
    cdef uint64_t copied = 0, seg = 0, seg_off = 0, left = size
    cdef int64_t copy = 0
    if uarg < 0:
        return -ENOBUFS
    while left:
        skb = tcp_write_queue_tail(sk)
        copy = 0
        if skb != NULL and not (skb.tcp_flags & TCPHDR_FIN):
            copy = <int64_t>size_goal - <int64_t>(skb.end_seq - skb.seq)
        if copy <= 0:
            skb = tcp_entail(sk)
            if skb == NULL:
                copy = -ENOMEM
                break
            copy = size_goal
        copy = min(<uint64_t>copy, left)
        copy = skb_zerocopy_iter_stream(sk, skb, uarg, b, iov_base, iov_len, nr_segs, &seg,
                                        &seg_off, <uint64_t>copy)
        if copy == -EMSGSIZE or copy == -EEXIST:
            skb.tcp_flags |= TCPHDR_PSH              # tcp_mark_push(); goto new_segment
            tcp_entail(sk)
            continue
        if copy < 0:
            break
        if copied == 0:
            skb.tcp_flags &= ~TCPHDR_PSH
        sk.write_seq += <uint32_t>copy
        skb.end_seq += <uint32_t>copy
        copied += copy
        left -= copy
    __tx_remove_empty_skb(sk)
    if copied:
        if not more:
            tcp_write_queue_tail(sk).tcp_flags |= TCPHDR_PSH
        net_zcopy_put(sk, uarg)
        return <int64_t>copied
    msg_zerocopy_put_abort(sk, uarg)
    return copy


cdef void __tx_remove_empty_skb(nm_tx_sock *sk) noexcept nogil:
    """Models ``tcp_remove_empty_skb()``: an empty, unsent tail skb goes."""
    cdef nm_tx_skb *skb = tcp_write_queue_tail(sk)
    if skb != NULL and skb.end_seq == skb.seq and \
            not (skb.tcp_flags & (TCPHDR_SYN | TCPHDR_FIN)):
        __tx_skb_free(sk, skb)
        sk.frag_tail = skb.frag0
        sk.skb_tail -= 1


# ---- transmit ----------------------------------------------------------------------------------

cdef bint validate_xmit_unreadable_skb(nm_tx_sock *sk, nm_tx_skb *skb, nm_txq *q) noexcept nogil:
    """Models ``validate_xmit_unreadable_skb()``: an skb with net_iov frags is dropped by a
    device without netmem TX, or when its first frag's binding is not bound to this device."""
    if skb.nr_frags == 0:
        return True
    if not q.netmem_tx:
        return False
    return sk.frags[skb.frag0].b.dev_ifindex == q.ifindex


cdef uint8_t *__txq_frame(nm_txq *q, uint32_t len, uint64_t now) noexcept nogil:
    """Room for one frame on the wire, or NULL."""
    if __grow(<void **>&q.arena, &q.arena_cap, q.arena_len + len, 1) < 0:
        return NULL
    cdef uint64_t cap = q.frames_cap
    if q.nframes + 1 > cap:
        if __grow(<void **>&q.offs, &cap, q.nframes + 1, sizeof(uint64_t)) < 0:
            return NULL
        cap = q.frames_cap
        if __grow(<void **>&q.lens, &cap, q.nframes + 1, sizeof(uint32_t)) < 0:
            return NULL
        cap = q.frames_cap
        if __grow(<void **>&q.ts, &cap, q.nframes + 1, sizeof(uint64_t)) < 0:
            return NULL
        q.frames_cap = cap
    q.offs[q.nframes] = q.arena_len
    q.lens[q.nframes] = len
    q.ts[q.nframes] = now
    return q.arena + q.arena_len


cdef int __tx_frame(nm_tx_sock *sk, nm_txq *q, nm_machine *m, uint32_t seq, uint8_t flags,
                    uint32_t hdrlen, const uint8_t *opts, nm_tx_skb *skb, uint64_t *fi,
                    uint32_t *foff, uint32_t paylen, uint64_t now) noexcept nogil:
    """One frame of a TSO skb: the headers from the template, the payload DMA-read from the
    frags at ``*fi``/``*foff`` (advanced), the IPv4 and TCP checksums (checksum offload). A
    read that faults drops the frame (the IOMMU recorded the fault): -EFAULT."""
    cdef uint32_t len = hdrlen + paylen, n
    cdef uint8_t *f = __txq_frame(q, len, now)
    cdef uint8_t *ip
    cdef uint8_t *th
    cdef uint8_t *p
    cdef nm_tx_frag *fr
    cdef uint64_t sum
    if f == NULL:
        return -ENOMEM
    memcpy(f, sk.hdr, TX_HDR_LEN)
    ip = f + 14
    th = f + 34
    if hdrlen > TX_HDR_LEN:
        memcpy(f + TX_HDR_LEN, opts, hdrlen - TX_HDR_LEN)
    __put16(ip + 2, len - 14)
    __put16(ip + 4, sk.ip_id)
    sk.ip_id += 1
    __put32(th + 4, seq)
    __put32(th + 8, sk.rcv_nxt if flags & TCPHDR_ACK else 0)
    th[12] = ((hdrlen - 34) // 4) << 4
    th[13] = flags
    p = f + hdrlen
    while paylen:
        fr = &sk.frags[fi[0]]
        n = min(paylen, fr.len - foff[0])
        if nm_dev_read(q.dev, __netmem_desc(m, fr.netmem).dma_addr + fr.off + foff[0],
                       <char *>p, n) < 0:
            return -EFAULT
        p += n
        paylen -= n
        foff[0] += n
        if foff[0] == fr.len:
            fi[0] += 1
            foff[0] = 0
    sum = __csum_add(0, ip, 20)
    __put16(ip + 10, __csum_fold(sum))
    sum = __csum_add(0, ip + 12, 8) + 6 + (len - 34)          # pseudo header
    __put16(th + 16, __csum_fold(__csum_add(sum, th, len - 34)))
    q.arena_len += len
    q.nframes += 1
    q.tx_packets += 1
    q.tx_bytes += len
    q.payload_bytes += len - hdrlen
    return 0


cdef void __tx_skb_xmit(nm_tx_sock *sk, nm_tx_skb *skb, nm_machine *m, uint64_t now) noexcept nogil:
    """``tcp_transmit_skb()`` -> ``validate_xmit_skb()`` -> the driver and a TSO device:
    MSS-sized frames, FIN and PSH on the last only, each counted in tcpi_segs_out."""
    cdef nm_txq *q = sk.dst
    cdef uint32_t len = skb.end_seq - skb.seq, seq = skb.seq, pay, hdrlen = TX_HDR_LEN
    cdef uint32_t nseg = 1, i
    cdef uint64_t fi = skb.frag0
    cdef uint32_t foff = 0
    cdef uint8_t flags
    cdef uint8_t opts[4]
    if skb.tcp_flags & (TCPHDR_SYN | TCPHDR_FIN):
        len -= 1
    if len > sk.mss:
        nseg = (len + sk.mss - 1) // sk.mss
    sk.segs_out += nseg                     # TCP_MIB_OUTSEGS and tcpi_segs_out count skb pcount
    if len:
        sk.data_segs_out += nseg
    if not validate_xmit_unreadable_skb(sk, skb, q):
        q.tx_dropped += 1
        return
    if skb.tcp_flags & TCPHDR_SYN:          # the SYN's MSS option
        opts[0] = 2
        opts[1] = 4
        __put16(&opts[2], sk.mss)
        hdrlen += 4
    for i in range(nseg):
        pay = min(len, sk.mss)
        len -= pay
        flags = skb.tcp_flags
        if len:
            flags &= ~(TCPHDR_FIN | TCPHDR_PSH)
        if __tx_frame(sk, q, m, seq, flags, hdrlen, opts, skb, &fi, &foff, pay, now) < 0:
            return
        seq += pay


cdef void tcp_write_xmit(nm_tx_sock *sk, nm_machine *m, uint64_t now) noexcept nogil:
    """Models ``tcp_write_xmit()``: unsent skbs go out in order while they fit the send window
    (``tcp_snd_wnd_test()``, for the whole skb here)."""
    cdef nm_tx_skb *skb
    while sk.send_head < sk.skb_tail:
        skb = &sk.skbs[sk.send_head]
        if <int32_t>(skb.end_seq - (sk.snd_una + sk.snd_wnd)) > 0 and \
                skb.end_seq - skb.seq > 1:
            break
        __tx_skb_xmit(sk, skb, m, now)
        skb.sent = 1
        sk.send_head += 1
        sk.bytes_sent += skb.end_seq - skb.seq
        if <int32_t>(skb.end_seq - sk.snd_nxt) > 0:
            sk.snd_nxt = skb.end_seq


cdef void tcp_clean_rtx_queue(nm_tx_sock *sk, uint32_t ack) noexcept nogil:
    """Models ``tcp_clean_rtx_queue()``: every sent skb the ACK covers whole is freed."""
    cdef nm_tx_skb *skb
    while sk.skb_head < sk.send_head:
        skb = &sk.skbs[sk.skb_head]
        if <int32_t>(skb.end_seq - ack) > 0:
            break
        __tx_skb_free(sk, skb)
        sk.skb_head += 1
    if <int32_t>(ack - sk.snd_una) > 0:
        sk.bytes_acked += ack - sk.snd_una
        sk.snd_una = ack
    __tx_compact(sk)


cdef void __tx_sock_purge(nm_tx_sock *sk) noexcept nogil:
    """Every queued skb freed (``tcp_write_queue_purge()``)."""
    while sk.skb_head < sk.skb_tail:
        __tx_skb_free(sk, &sk.skbs[sk.skb_head])
        sk.skb_head += 1
    sk.send_head = sk.skb_head
    __tx_compact(sk)


cdef int tcp_queue_ctl(nm_tx_sock *sk, uint8_t flag) noexcept nogil:
    """The SYN (``tcp_connect()``) or the FIN (``tcp_send_fin()``: on the unsent tail skb when
    there is one, else on a new one), one sequence number: 0 or -ENOMEM."""
    cdef nm_tx_skb *skb = tcp_write_queue_tail(sk) if flag == TCPHDR_FIN else NULL
    if skb == NULL:
        skb = tcp_entail(sk)
        if skb == NULL:
            return -ENOMEM
    if flag == TCPHDR_SYN:
        skb.tcp_flags = TCPHDR_SYN
    else:
        skb.tcp_flags |= TCPHDR_FIN
    skb.end_seq += 1
    sk.write_seq += 1
    return 0


# ---- the Python boundary ------------------------------------------------------------------------

cdef object __take_array(void *p, uint64_t n, object dtype):
    """A numpy copy of ``n`` items at ``p``."""
    cdef object a = _np.empty(n, dtype)
    cdef cnp.ndarray arr = a
    if n:
        memcpy(cnp.PyArray_DATA(arr), p, n * arr.itemsize)
    return a


cdef class CoreTxQueue:
    """The compiled half of a device's TX queue (``netmem.tcp_tx.TxQueue``): the DMA device
    its reads go through, netmem TX support, the counters and the wire."""

    def __cinit__(self, CoreDevice dev, uint32_t ifindex, bint netmem_tx):
        memset(&self.q, 0, sizeof(nm_txq))
        self.q.dev = &dev.dev
        self.q.ifindex = ifindex
        self.q.netmem_tx = netmem_tx
        self._dev = dev

    def __dealloc__(self):
        free(self.q.arena)
        free(self.q.offs)
        free(self.q.lens)
        free(self.q.ts)

    @property
    def netmem_tx(self):
        return bool(self.q.netmem_tx)

    @netmem_tx.setter
    def netmem_tx(self, value):
        self.q.netmem_tx = bool(value)

    def _stats(self):
        return {"tx_packets": self.q.tx_packets, "tx_bytes": self.q.tx_bytes,
                "tx_dropped": self.q.tx_dropped}

    def _take(self):
        """The frames on the wire since the last take: (arena, offsets, lengths, timestamps,
        TCP payload bytes)."""
        out = (__take_array(self.q.arena, self.q.arena_len, _np.uint8),
               __take_array(self.q.offs, self.q.nframes, _np.uint64),
               __take_array(self.q.lens, self.q.nframes, _np.uint32),
               __take_array(self.q.ts, self.q.nframes, _np.uint64))
        out += (self.q.payload_bytes,)
        self.q.arena_len = self.q.nframes = self.q.payload_bytes = 0
        return out


cdef class CoreTxSock:
    """The compiled half of ``netmem.tcp_tx.TxSocket``: the send queue, the notifications
    and the error queue."""

    def __cinit__(self):
        memset(&self.sk, 0, sizeof(nm_tx_sock))
        self._bindings = {}

    def __dealloc__(self):
        free(self.sk.skbs)
        free(self.sk.frags)
        free(self.sk.uargs)
        free(self.sk.errq)

    def _setup(self, bytes hdr, uint32_t isn, uint32_t rcv_nxt, uint32_t mss, uint32_t wnd):
        memcpy(self.sk.hdr, <const char *>hdr, TX_HDR_LEN)
        self.sk.isn = self.sk.snd_una = self.sk.snd_nxt = self.sk.write_seq = isn
        self.sk.rcv_nxt = rcv_nxt
        self.sk.mss = mss
        self.sk.snd_wnd = self.sk.max_window = wnd

    def _set_dst(self, CoreTxQueue q):
        self.sk.dst = &q.q
        self._dst = q

    def _set_flag(self, str name, bint value):
        if name == "zerocopy":
            self.sk.zerocopy = value
        else:
            self.sk.dead = value

    @property
    def _zerocopy(self):
        return bool(self.sk.zerocopy)

    def _ctl(self, uint8_t flag, CoreMachine m):
        if tcp_queue_ctl(&self.sk, flag) < 0:
            raise MemoryError()
        tcp_write_xmit(&self.sk, m.m, m.m.clock_ns)

    def _sendmsg(self, CoreMachine m, CoreDmabufBinding b, object bases, object lens,
                 uint64_t size, bint more):
        """``tcp_sendmsg_devmem()`` then ``tcp_write_xmit()``: the bytes queued or -errno."""
        cdef cnp.ndarray[cnp.uint64_t, ndim=1] ba = bases
        cdef cnp.ndarray[cnp.uint64_t, ndim=1] la = lens
        cdef int64_t r
        self._bindings[b.b.id] = b
        with nogil:
            r = tcp_sendmsg_devmem(&self.sk, &b.b, &ba[0], &la[0], ba.shape[0], size, more)
            if r > 0:
                tcp_write_xmit(&self.sk, m.m, m.m.clock_ns)
        return r

    def _ack(self, CoreMachine m, uint32_t ack, uint32_t wnd):
        """An ACK arrives (``tcp_ack()``): the acked skbs go, the window opens, unsent skbs
        that now fit go out."""
        with nogil:
            tcp_clean_rtx_queue(&self.sk, ack)
            self.sk.snd_wnd = wnd
            self.sk.max_window = max(self.sk.max_window, wnd)
            tcp_write_xmit(&self.sk, m.m, m.m.clock_ns)

    def _purge(self):
        __tx_sock_purge(&self.sk)

    def _errq_pop(self):
        cdef nm_zc_notif *e
        if self.sk.errq_head == self.sk.errq_tail:
            return None
        e = &self.sk.errq[self.sk.errq_head]
        self.sk.errq_head += 1
        if self.sk.errq_head == self.sk.errq_tail:
            self.sk.errq_head = self.sk.errq_tail = 0
        return (e.lo, e.hi, e.code)

    def _info(self):
        cdef nm_tx_sock *sk = &self.sk
        cdef uint64_t i, frags = 0
        for i in range(sk.skb_head, sk.skb_tail):
            frags += sk.skbs[i].nr_frags
        return {"snd_una": sk.snd_una, "snd_nxt": sk.snd_nxt, "write_seq": sk.write_seq,
                "snd_wnd": sk.snd_wnd, "mss": sk.mss, "segs_out": sk.segs_out,
                "data_segs_out": sk.data_segs_out, "bytes_sent": sk.bytes_sent,
                "bytes_acked": sk.bytes_acked, "queued_skbs": sk.skb_tail - sk.skb_head,
                "unsent_skbs": sk.skb_tail - sk.send_head, "frags": frags,
                "zckey": sk.zckey}
