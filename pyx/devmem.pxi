# devmem TCP: the dma-buf binding's provider ops and the socket's token API, in C.
#
# Models net/core/devmem.c (net_devmem_alloc_dmabuf(), net_devmem_free_dmabuf() and the two
# buffer ops of dmabuf_devmem_ops), tcp_recvmsg_dmabuf() and the MSG_SOCK_DEVMEM half of
# tcp_recvmsg_locked() (net/ipv4/tcp.c), sock_devmem_dontneed() (net/core/sock.c) and
# tcp_release_user_frags() (net/ipv4/tcp_ipv4.c). The binding itself is built in Python
# (netmem.providers.dmabuf); CoreDmabufBinding is its compiled half.


# ---- the provider's buffer ops -----------------------------------------------------------------

cdef inline uint32_t __devmem_chunk(nm_devmem_binding *b, uint64_t addr) noexcept nogil:
    """The chunk holding DMA address ``addr`` (the chunk starts are sorted)."""
    cdef uint32_t lo = 0, hi = b.nchunks, mid
    while hi - lo > 1:
        mid = (lo + hi) >> 1
        if b.chunk_dma[mid] <= addr:
            lo = mid
        else:
            hi = mid
    return lo


cdef netmem_ref mp_dmabuf_devmem_alloc_netmems(nm_pool *pool) noexcept nogil:
    """Models ``mp_dmabuf_devmem_alloc_netmems()`` over ``net_devmem_alloc_dmabuf()`` (with
    the rx-buf-size series, likely 7.3): one net_iov of ``1 << niov_shift`` bytes from the chunk
    pool (first fit), its pp fields reset, then pp info and the hold count; 0 when the dma-buf
    is exhausted."""
    cdef nm_devmem_binding *b = <nm_devmem_binding *>pool.mp_priv
    cdef void *owner = NULL
    cdef unsigned long addr = nm_gen_pool_alloc_owner(b.chunk_pool, 1UL << b.niov_shift, &owner)
    cdef uint32_t c
    cdef uint64_t idx
    cdef nm_desc *d
    if addr == 0:
        return 0
    c = __devmem_chunk(b, addr)
    idx = b.chunk_niov[c] + ((addr - b.chunk_dma[c]) >> b.niov_shift)
    d = &pool.niovs[idx]
    d.pp_magic = 0
    d.pp = NULL
    d.pp_ref_count = 0
    net_mp_niov_set_page_pool(pool, (idx << 1) | NET_IOV)
    return (idx << 1) | NET_IOV


cdef void net_devmem_free_dmabuf(nm_pool *pool, nm_devmem_binding *b, netmem_ref netmem,
                                 nm_desc *d) noexcept nogil:
    """Models ``net_devmem_free_dmabuf()``: back to the chunk pool at its DMA address, the
    binding's net_iov size."""
    cdef void *owner = NULL
    cdef size_t niov_size = 1UL << b.niov_shift
    if not nm_gen_pool_has_addr(b.chunk_pool, d.dma_addr, niov_size):
        nm_warn(pool.m, NM_W_DEVMEM_FREE, pool.id, netmem, <int64_t>d.dma_addr)
        return
    nm_gen_pool_free_owner(b.chunk_pool, d.dma_addr, niov_size, &owner)


cdef bint mp_dmabuf_devmem_release_page(nm_pool *pool, netmem_ref netmem) noexcept nogil:
    """Models ``mp_dmabuf_devmem_release_page()``: the last pp reference only, pp info cleared,
    the net_iov back to the chunk pool; never put_page (returns false)."""
    cdef nm_desc *d = __netmem_desc(pool.m, netmem)
    if not netmem & NET_IOV:
        nm_warn(pool.m, NM_W_DEVMEM_NOT_NIOV, pool.id, netmem, 0)
        return False
    if d.pp_ref_count != 1:
        nm_warn(pool.m, NM_W_DEVMEM_REF, pool.id, netmem, d.pp_ref_count)
        return False
    page_pool_clear_pp_info(d)
    net_devmem_free_dmabuf(pool, <nm_devmem_binding *>pool.mp_priv, netmem, d)
    return False


cdef nm_mp_ops dmabuf_devmem_c_ops
dmabuf_devmem_c_ops.alloc_netmems = mp_dmabuf_devmem_alloc_netmems
dmabuf_devmem_c_ops.release_netmem = mp_dmabuf_devmem_release_page


cdef class CoreDmabufBinding:
    """The compiled half of ``netmem.providers.dmabuf.NetDevmemDmabufBinding``."""

    def __dealloc__(self):
        free(self.b.chunk_dma)
        free(self.b.chunk_niov)
        free(self.b.tx_vec)

    @property
    def refcount(self):
        """``binding->ref``: the user's, each page pool's and each TX skb frag's."""
        return self.b.ref

    @refcount.setter
    def refcount(self, int64_t value):
        self.b.ref = value

    def _set_dev_ifindex(self, uint32_t ifindex):
        self.b.dev_ifindex = ifindex

    def _set_tx_vec(self, object refs, uint64_t dmabuf_size):
        """``binding->tx_vec``: the net_iov at each 4 KiB of the dma-buf, in order."""
        cdef cnp.ndarray[cnp.uint64_t, ndim=1] a = _np.ascontiguousarray(refs, _np.uint64)
        cdef uint64_t n = a.shape[0]
        free(self.b.tx_vec)
        self.b.tx_vec = <netmem_ref *>malloc(max(n, 1) * sizeof(netmem_ref))
        if self.b.tx_vec == NULL:
            raise MemoryError()
        if n:
            memcpy(self.b.tx_vec, &a[0], n * sizeof(netmem_ref))
        self.b.tx_vec_len = n
        self.b.dmabuf_size = dmabuf_size

    def _set_chunks(self, CoreGenPool chunk_pool, uint32_t binding_id, object dma_addrs,
                    object niov_bases, uint32_t niov_shift):
        """The chunk pool, the id, the net_iov size (``niov_shift``), and each chunk's DMA
        address and first net_iov index."""
        cdef cnp.ndarray[cnp.uint64_t, ndim=1] a = _np.ascontiguousarray(dma_addrs, _np.uint64)
        cdef cnp.ndarray[cnp.uint64_t, ndim=1] nb = _np.ascontiguousarray(niov_bases, _np.uint64)
        cdef cnp.ndarray order = _np.argsort(a, kind="stable")
        cdef uint32_t n = len(a), i
        free(self.b.chunk_dma)
        free(self.b.chunk_niov)
        self.b.chunk_dma = <uint64_t *>malloc(max(n, 1) * sizeof(uint64_t))
        self.b.chunk_niov = <uint64_t *>malloc(max(n, 1) * sizeof(uint64_t))
        if self.b.chunk_dma == NULL or self.b.chunk_niov == NULL:
            raise MemoryError()
        for i in range(n):
            self.b.chunk_dma[i] = a[order[i]]
            self.b.chunk_niov[i] = nb[order[i]]
        self.b.nchunks = n
        self.b.id = binding_id
        self.b.niov_shift = niov_shift
        self.b.chunk_pool = chunk_pool.pool
        self._chunk_pool = chunk_pool

    def _install_c_ops(self, CoreMemoryProvider provider):
        """Point ``provider`` at the C buffer ops over this binding."""
        provider.c_ops = &dmabuf_devmem_c_ops
        provider.c_priv = &self.b


# ---- the socket's tokens (sk->sk_user_frags) ----------------------------------------------------

cdef int __uf_grow(nm_sock *sk) noexcept nogil:
    """Room for twice the tokens, XA_CHUNK_SIZE (64, one xarray node) to begin with: a socket
    that holds a few frags at a time costs a few hundred bytes, as in the kernel."""
    cdef uint64_t cap = max(<uint64_t>sk.uf_cap * 2, XA_CHUNK_SIZE)
    cdef void *f
    cdef void *u
    if cap > (1ULL << 31):
        return -EBUSY                   # xa_limit_31b is used up
    f = realloc(sk.user_frags, cap * sizeof(netmem_ref))
    if f == NULL:
        return -ENOMEM
    sk.user_frags = <netmem_ref *>f
    u = realloc(sk.uf_used, (cap >> 6) * sizeof(uint64_t))
    if u == NULL:
        return -ENOMEM
    sk.uf_used = <uint64_t *>u
    memset(sk.uf_used + (sk.uf_cap >> 6), 0, ((cap - sk.uf_cap) >> 6) * sizeof(uint64_t))
    if sk.uf_cap == 0:
        sk.uf_used[0] = 1               # XA_FLAGS_ALLOC1: token 0 is never handed out
    sk.uf_cap = <uint32_t>cap
    return 0


cdef int64_t __uf_alloc(nm_sock *sk, netmem_ref netmem) noexcept nogil:
    """``xa_alloc(&sk->sk_user_frags, &token, netmem, xa_limit_31b)``: the lowest free token."""
    cdef uint32_t w = sk.uf_hint >> 6
    cdef uint64_t t
    cdef int err
    while True:
        while w < (sk.uf_cap >> 6) and sk.uf_used[w] == ~0ULL:
            w += 1
        if w < (sk.uf_cap >> 6):
            break
        err = __uf_grow(sk)
        if err:
            return err
    t = (<uint64_t>w << 6) + <uint64_t>__builtin_ctzl(~sk.uf_used[w])
    sk.uf_used[w] |= 1ULL << (t & 63)
    sk.user_frags[t] = netmem
    sk.uf_hint = <uint32_t>t
    sk.uf_count += 1
    return <int64_t>t


cdef netmem_ref __uf_erase(nm_sock *sk, uint32_t t) noexcept nogil:
    """``__xa_erase(&sk->sk_user_frags, t)``: the net_iov the token held, or 0."""
    cdef netmem_ref netmem
    if t == 0 or t >= sk.uf_cap or not (sk.uf_used[t >> 6] >> (t & 63)) & 1:
        return 0
    sk.uf_used[t >> 6] &= ~(1ULL << (t & 63))
    netmem = sk.user_frags[t]
    sk.user_frags[t] = 0
    sk.uf_count -= 1
    if t < sk.uf_hint:
        sk.uf_hint = t
    return netmem


cdef void tcp_release_user_frags(nm_net *n, nm_sock *sk) noexcept nogil:
    """Models ``tcp_release_user_frags()`` and ``xa_destroy()``: every outstanding token's
    net_iov goes home through ``napi_pp_put_page()``. The used-token bitmap is walked a word
    at a time, and not at all when no token is out."""
    cdef uint64_t t, w, bits
    if sk.uf_count:
        for w in range(sk.uf_cap >> 6):
            bits = sk.uf_used[w] & (~1ULL if w == 0 else ~0ULL)    # token 0 is never used
            while bits:
                t = (w << 6) + <uint64_t>__builtin_ctzll(bits)
                bits &= bits - 1
                if not napi_pp_put_page(n.m, sk.user_frags[t]):
                    nm_warn(n.m, NM_W_DEVMEM_NOT_NIOV, 0, sk.user_frags[t], 0)
    free(sk.user_frags)
    free(sk.uf_used)
    sk.user_frags = NULL
    sk.uf_used = NULL
    sk.uf_cap = sk.uf_hint = 0
    sk.uf_count = 0


cdef void __dontneed_put(nm_net *n, const netmem_ref *netmems, uint32_t nr) noexcept nogil:
    """The puts of one batch of ``sock_devmem_dontneed()``, out of the xarray lock: each net_iov
    goes home through ``napi_pp_put_page()`` in the caller's context (the profile's PUTS)."""
    cdef uint32_t k, stage
    if nr == 0:
        return
    stage = prof_push(n, NM_PROF_PUTS)
    for k in range(nr):
        if not napi_pp_put_page(n.m, netmems[k]):
            nm_warn(n.m, NM_W_DEVMEM_NOT_NIOV, 0, netmems[k], 0)
    prof_stage(n, stage)


cdef int64_t sock_devmem_dontneed(nm_net *n, nm_sock *sk, const uint32_t *tokens,
                                  uint32_t num_tokens) noexcept nogil:
    """``__sock_devmem_dontneed()`` and the model's tracepoint ``netmem:sock_devmem_dontneed``
    (the kernel has none): the socket, the token ranges given, the frags freed."""
    cdef int64_t ret = __sock_devmem_dontneed(n, sk, tokens, num_tokens)
    nm_trace(n.m, TP_SOCK_DEVMEM_DONTNEED, 0, <netmem_ref>(sk - n.socks), num_tokens, ret, 0)
    return ret


cdef int64_t __sock_devmem_dontneed(nm_net *n, nm_sock *sk, const uint32_t *tokens,
                                    uint32_t num_tokens) noexcept nogil:
    """Models ``sock_devmem_dontneed()`` after its checks: erase ``token_start ..
    token_start + token_count - 1`` of each entry, at most MAX_DONTNEED_FRAGS tokens looked at,
    unknown ones skipped; the net_iovs are put in batches of 16 (its ``netmems[16]``, put with
    the xarray unlocked). Returns the frags freed: every net_iov erased counts, as in the
    kernel, even one whose put WARNs."""
    cdef netmem_ref netmems[16]
    cdef uint32_t i, j, num_frags = 0, netmem_num = 0
    cdef int64_t ret = 0
    cdef netmem_ref netmem
    for i in range(num_tokens):
        for j in range(tokens[2 * i + 1]):
            num_frags += 1
            if num_frags > MAX_DONTNEED_FRAGS:
                __dontneed_put(n, netmems, netmem_num)      # frag_limit_reached
                return ret
            netmem = __uf_erase(sk, tokens[2 * i] + j)
            if not netmem:
                continue
            if not netmem & NET_IOV:
                nm_warn(n.m, NM_W_DEVMEM_NOT_NIOV, 0, netmem, 0)
                continue
            netmems[netmem_num] = netmem
            netmem_num += 1
            if netmem_num == 16:
                __dontneed_put(n, netmems, netmem_num)
                netmem_num = 0
            ret += 1
    __dontneed_put(n, netmems, netmem_num)
    return ret


# ---- recvmsg(MSG_SOCK_DEVMEM) ------------------------------------------------------------------

cdef struct nm_devmem_rx:
    uint8_t *buf                # the iov
    uint64_t buf_used
    nm_dmabuf_cmsg *cm
    uint32_t cm_max             # the cmsgs the control buffer holds (ancbufsize / CMSG_SPACE)
    uint32_t ncm


cdef inline int __put_cmsg(nm_devmem_rx *rx, uint32_t type, uint32_t size, uint64_t off,
                           uint32_t token, uint32_t id) noexcept nogil:
    """``put_cmsg_notrunc()``: -ETOOSMALL when the control buffer cannot hold it whole."""
    cdef nm_dmabuf_cmsg *c
    if rx.ncm >= rx.cm_max:
        return -ETOOSMALL
    c = &rx.cm[rx.ncm]
    c.cmsg_type = type
    c.frag_size = size
    c.frag_offset = off
    c.frag_token = token
    c.dmabuf_id = id
    rx.ncm += 1
    return 0


cdef int64_t tcp_recvmsg_dmabuf(nm_net *n, nm_sock *sk, nm_skb *skb, uint32_t offset,
                                nm_devmem_rx *rx, uint32_t remaining_len) noexcept nogil:
    """Models ``tcp_recvmsg_dmabuf()``: the linear bytes are copied (one SCM_DEVMEM_LINEAR
    cmsg), each frag slice becomes an SCM_DEVMEM_DMABUF cmsg with a new token and a pp
    reference. Returns the bytes described, or the error when there are none. Linear bytes
    whose cmsg does not fit are not returned: the kernel has copied them into the iov, but
    counts them nowhere (the next call copies them again). Departs: a p2pdma net_iov (ours) is
    described like a dma-buf one (its provider id as ``dmabuf_id``)."""
    cdef nm_machine *m = n.m
    cdef nm_shinfo *sh = skb_shinfo(n, skb)
    cdef uint32_t start = skb_headlen(skb), end, copy
    cdef int64_t sent = 0, err = 0, token
    cdef nm_desc *d
    cdef nm_area *a
    cdef uint64_t frag_offset
    cdef int i
    if skb_frags_readable(skb):
        return -ENODEV
    if start > offset:
        copy = min(start - offset, remaining_len)
        memcpy(rx.buf + rx.buf_used, skb_head(m, sh) + skb.data + offset, copy)
        rx.buf_used += copy
        offset += copy
        remaining_len -= copy
        err = __put_cmsg(rx, SCM_DEVMEM_LINEAR, copy, 0, 0, 0)
        if err:
            rx.buf_used -= copy
            return sent if sent else err
        sent += copy
        if remaining_len == 0:
            return sent
    for i in range(sh.nr_frags):
        if not sh.frags[i].netmem & NET_IOV:
            return sent if sent else -ENODEV
        d = __netmem_desc(m, sh.frags[i].netmem)
        a = &m.areas[d.owner]
        if a.type != NET_IOV_DMABUF and a.type != NET_IOV_P2PDMA:
            return sent if sent else -ENODEV
        end = start + sh.frags[i].len
        if end > offset:
            copy = min(end - offset, remaining_len)
            frag_offset = a.base_virtual + (((sh.frags[i].netmem >> 1) - a.niov_base)
                                            << a.niov_shift) + sh.frags[i].offset + offset - start
            offset += copy
            remaining_len -= copy
            if rx.ncm >= rx.cm_max:
                return sent if sent else -ETOOSMALL
            token = __uf_alloc(sk, sh.frags[i].netmem)
            if token < 0:
                return sent if sent else token
            __put_cmsg(rx, SCM_DEVMEM_DMABUF, copy, frag_offset, <uint32_t>token, a.owner_id)
            page_pool_ref_netmem(d)
            sent += copy
            if remaining_len == 0:
                return sent
        start = end
    return sent if sent else -EFAULT


cdef int64_t tcp_recvmsg_devmem(nm_net *n, uint32_t ski, nm_devmem_rx *rx,
                                uint64_t len) noexcept nogil:
    """Models ``tcp_recvmsg_locked()`` with MSG_SOCK_DEVMEM, non-blocking: readable skbs are
    copied, unreadable ones described by ``tcp_recvmsg_dmabuf()``; one call never mixes the
    two. Returns the bytes copied or described, 0 at the end of the stream, or -errno. Its loop
    is a do-while: with ``len`` 0 the first skb is still visited, and an unreadable one gets a
    cmsg (and a token) for 0 bytes."""
    cdef nm_sock *sk = &n.socks[ski]
    cdef int64_t copied = 0, rc
    cdef uint32_t si, offset, used
    cdef int last = -1, unreadable
    cdef bint found = False
    cdef nm_skb *skb
    while <uint64_t>copied < len or not found:
        si = sk.rq_head
        if si == NM_NIL:
            break
        skb = SKB(n, si)
        offset = sk.copied_seq - skb.seq
        if offset >= skb.len:
            if skb.tcp_flags & TCPHDR_FIN:
                __rx_fin(n, sk, si)
                break
            tcp_eat_recv_skb(n, sk, si)     # fully read already (an overlap)
            continue
        found = True
        used = <uint32_t>min(<uint64_t>(skb.len - offset), len - <uint64_t>copied)
        unreadable = not skb_frags_readable(skb)
        if last != -1 and last != unreadable:
            break
        if unreadable:
            rc = tcp_recvmsg_dmabuf(n, sk, skb, offset, rx, used)
        else:
            rc = skb_copy_bits(n, skb, offset, rx.buf + rx.buf_used, used)
            if rc == 0:
                rx.buf_used += used
                rc = used
        if rc < 0:
            if copied == 0:
                copied = rc
            break
        used = <uint32_t>rc
        last = unreadable
        sk.copied_seq += used
        copied += used
        tcp_rcv_space_adjust(n, sk)
        if used + offset < skb.len:
            continue
        if skb.tcp_flags & TCPHDR_FIN:
            __rx_fin(n, sk, si)
            break
        tcp_eat_recv_skb(n, sk, si)
    if copied > 0:
        tcp_cleanup_rbuf(n, ski, <uint64_t>copied)
    if copied or found:
        return copied
    return tcp_recvmsg_tail(sk)
