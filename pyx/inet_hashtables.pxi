# The TCP socket table: net/ipv4/inet_hashtables.c's established hash (inet_match(),
# __inet_lookup_established(), a socket hashed and unhashed) with the model's own hash of the
# 4-tuple and its resize, the batch prefetch of a NAPI poll's buckets and sockets (the model's
# speed, not a kernel mechanism), and a receiving socket's creation in ESTABLISHED.
# Split out of pyx/tcp_rx.pxi, unchanged.

# ---- the socket table ---------------------------------------------------------------------------

cdef inline uint32_t __sk_hashfn(uint8_t family, const uint8_t *laddr, const uint8_t *raddr,
                                 uint16_t lport, uint16_t rport) noexcept nogil:
    cdef uint64_t h = (<uint64_t>lport << 16 | rport) * 0x9E3779B97F4A7C15ULL
    cdef int i, alen = 4 if family == 4 else 16
    for i in range(0, alen, 4):
        h = (h ^ _be32(laddr + i)) * 0xff51afd7ed558ccdULL
        h = (h ^ _be32(raddr + i)) * 0xc4ceb9fe1a85ec53ULL
    return <uint32_t>(h >> 32)


cdef int __sk_hash_resize(nm_net *n, uint32_t nbuckets) noexcept nogil:
    cdef uint32_t *tbl = <uint32_t *>malloc(nbuckets * sizeof(uint32_t))
    cdef uint32_t i, b
    cdef nm_sock *sk
    if tbl == NULL:
        return -ENOMEM
    memset(tbl, 0xff, nbuckets * sizeof(uint32_t))
    for i in range(n.nr_socks):
        sk = &n.socks[i]
        if sk.used and sk.hnext != NM_NIL - 1:
            b = __sk_hashfn(sk.family, sk.laddr, sk.raddr, sk.lport, sk.rport) & (nbuckets - 1)
            sk.hnext = tbl[b]
            tbl[b] = i
    free(n.sk_hash)
    n.sk_hash = tbl
    n.sk_hash_mask = nbuckets - 1
    return 0


cdef inline bint __sk_match(const nm_sock *sk, uint8_t family, const uint8_t *laddr,
                            const uint8_t *raddr, uint16_t lport, uint16_t rport) noexcept nogil:
    """``inet_match()``: the socket has this 4-tuple."""
    cdef int alen = 4 if family == 4 else 16
    return (sk.lport == lport and sk.rport == rport and sk.family == family
            and memcmp(sk.laddr, laddr, alen) == 0 and memcmp(sk.raddr, raddr, alen) == 0)


cdef uint32_t __inet_lookup(nm_net *n, uint8_t family, const uint8_t *laddr,
                            const uint8_t *raddr, uint16_t lport, uint16_t rport) noexcept nogil:
    """Models ``__inet_lookup_established()``: the socket of this 4-tuple, or NM_NIL."""
    cdef uint32_t i
    if n.sk_hash == NULL:
        return NM_NIL
    i = n.sk_hash[__sk_hashfn(family, laddr, raddr, lport, rport) & n.sk_hash_mask]
    while i != NM_NIL:
        if __sk_match(&n.socks[i], family, laddr, raddr, lport, rport):
            return i
        i = n.socks[i].hnext
    return NM_NIL


cdef inline uint32_t *__sk_bucket_of(nm_net *n, const uint8_t *f, const nm_pkt *p) noexcept nogil:
    """The hash bucket ``__inet_lookup()`` will search for a TCP frame's socket, from the
    device's parse; NULL for a frame that is not TCP or has no ports."""
    cdef const uint8_t *ip = f + p.l3_off
    cdef const uint8_t *th = f + p.l4_off
    cdef uint32_t h
    if n.sk_hash == NULL or p.ip_proto != IPPROTO_TCP or p.l4_off + 4 > p.len:
        return NULL
    if p.family == 4:
        h = __sk_hashfn(4, ip + 16, ip + 12, _be16(th + 2), _be16(th))
    else:
        h = __sk_hashfn(6, ip + 24, ip + 8, _be16(th + 2), _be16(th))
    return &n.sk_hash[h & n.sk_hash_mask]


cdef void __sk_prefetch_batch(nm_net *n, const uint8_t *arena, const uint64_t *offs,
                              const nm_pkt *pkts, const uint32_t *fis, uint32_t nr,
                              uint32_t start) noexcept nogil:
    """Warm the cache for the sockets a NAPI poll's frames will be looked up in: every hash
    bucket first, then each chain head's lines, so the misses overlap instead of stalling
    one by one in ``__inet_lookup()`` (at 10,000 connections each frame's socket is cold).
    Not a kernel mechanism, and it changes no state: the model's own speed."""
    cdef uint32_t *bk[NAPI_POLL_WEIGHT]
    cdef uint32_t i, si
    cdef const char *sk
    for i in range(nr):
        bk[i] = __sk_bucket_of(n, arena + offs[fis[i]], &pkts[fis[i] - start])
        if bk[i] != NULL:
            prefetch(bk[i])
    for i in range(nr):
        if bk[i] != NULL:
            si = bk[i][0]
            if si != NM_NIL:
                sk = <const char *>&n.socks[si]
                prefetch(sk)
                prefetch(sk + 64)
                prefetch(sk + sizeof(nm_sock) - 1)
    # Without it GCC finds the function free of side effects (prefetches do not count) and
    # drops the call.
    barrier()


cdef void inet_unhash(nm_net *n, uint32_t si) noexcept nogil:
    """Take a socket out of the lookup table (it stays readable until closed)."""
    cdef nm_sock *sk = &n.socks[si]
    cdef uint32_t *pp
    if sk.hnext == NM_NIL - 1:
        return
    pp = &n.sk_hash[__sk_hashfn(sk.family, sk.laddr, sk.raddr, sk.lport, sk.rport)
                    & n.sk_hash_mask]
    while pp[0] != NM_NIL:
        if pp[0] == si:
            pp[0] = sk.hnext
            break
        pp = &n.socks[pp[0]].hnext
    sk.hnext = NM_NIL - 1               # unhashed


cdef uint32_t __sk_create(nm_net *n, uint8_t family, const uint8_t *laddr, const uint8_t *raddr,
                          uint16_t lport, uint16_t rport, uint32_t rcv_nxt) noexcept nogil:
    """A receiving socket in ESTABLISHED, hashed. NM_NIL when out of memory."""
    cdef uint32_t i, b, cap
    cdef nm_sock *sk
    cdef void *p
    cdef uint8_t on_rdllist = 0, on_delack = 0
    if n.sk_free != NM_NIL:
        i = n.sk_free
        n.sk_free = n.socks[i].hnext
        on_rdllist = n.socks[i].on_rdllist
        on_delack = n.socks[i].on_delack
    else:
        if n.nr_socks == n.cap_socks:
            cap = n.cap_socks * 2 + 64
            p = realloc(n.rdllist, cap * sizeof(uint32_t))
            if p == NULL:
                return NM_NIL
            n.rdllist = <uint32_t *>p
            p = realloc(n.delack_list, cap * sizeof(uint32_t))
            if p == NULL:
                return NM_NIL
            n.delack_list = <uint32_t *>p
            p = realloc(n.socks, cap * sizeof(nm_sock))
            if p == NULL:
                return NM_NIL
            n.socks = <nm_sock *>p
            # New slots read as freed slab memory (POISON_FREE) until __sk_create clears them.
            memset(&n.socks[n.cap_socks], POISON_FREE, (cap - n.cap_socks) * sizeof(nm_sock))
            n.cap_socks = cap
        i = n.nr_socks
        n.nr_socks += 1
    sk = &n.socks[i]
    # Cleared before a resize walks the table: a new slot's memory is realloc()'s garbage,
    # which the walk would otherwise hash (and cut a chain short).
    memset(sk, 0, sizeof(nm_sock))
    sk.on_rdllist = on_rdllist
    sk.on_delack = on_delack            # the delayed-ACK list keeps its entry too
    if n.sk_hash == NULL or n.nr_socks > n.sk_hash_mask + 1:       # at most one a bucket
        if __sk_hash_resize(n, max(<uint32_t>NM_SK_HASH_MIN,
                                   <uint32_t>roundup_pow_of_two(n.nr_socks))) < 0:
            sk.hnext = n.sk_free            # the slot stays free, on the free list
            n.sk_free = i
            return NM_NIL
    sk.used = 1
    sk.family = family
    memcpy(sk.laddr, laddr, 4 if family == 4 else 16)
    memcpy(sk.raddr, raddr, 4 if family == 4 else 16)
    sk.lport = lport
    sk.rport = rport
    sk.state = NM_TCP_ESTABLISHED
    sk.rcv_nxt = rcv_nxt
    sk.copied_seq = rcv_nxt
    sk.rq_head = sk.rq_tail = NM_NIL
    sk.ofo_head = sk.ofo_tail = sk.ofo_root = NM_NIL
    sk.rcvbuf = n.rcvbuf if n.rcvbuf_lock else n.tcp_rmem[1]
    sk.rcvbuf_lock = n.rcvbuf_lock
    b = __sk_hashfn(family, laddr, raddr, lport, rport) & n.sk_hash_mask
    sk.hnext = n.sk_hash[b]
    n.sk_hash[b] = i
    return i
