# io_uring zero-copy receive (zcrx): the provider's buffer ops, the refill ring, RECV_ZC's walk of
# the socket and teardown's scrub, in C.
#
# Models io_uring/zcrx.c and the zcrx half of io_uring/net.c (io_recvzc()) of Linux 7.2, one
# area per interface queue: io_pp_zc_alloc_netmems() (io_zcrx_ring_refill() under the refill
# ring's lock, then the freelist, then the ZCRX_EVENT_ALLOC_FAIL event),
# io_pp_zc_release_netmem(), io_zcrx_recv_skb() over tcp_read_sock() with its copy fallback,
# zcrx_flush_rq() (ZCRX_CTRL_FLUSH_RQ) and io_zcrx_scrub(). The ifq itself is built in Python
# (netmem.zcrx); CoreZcrxIfq is its compiled half, CoreIoUring the CQ ring RECV_ZC posts to.


# ---- net_iovs and user references ----------------------------------------------------------------

cdef inline netmem_ref __zcrx_netmem(nm_zcrx_ifq *ifq, uint32_t idx) noexcept nogil:
    return ((ifq.niov_base + idx) << 1) | NET_IOV


cdef inline bint io_zcrx_put_niov_uref(nm_zcrx_ifq *ifq, uint32_t idx) noexcept nogil:
    """Models ``io_zcrx_put_niov_uref()``: false when the user holds no reference."""
    if unlikely(ifq.user_refs[idx] == 0):
        return False
    ifq.user_refs[idx] -= 1
    return True


cdef inline bint __zcrx_unref_and_test(nm_zcrx_ifq *ifq, netmem_ref netmem, nm_desc *d,
                                       int64_t nr) noexcept nogil:
    """``page_pool_unref_netmem(netmem, nr) == 0``. A copy-fallback net_iov has no pool (its
    one pp reference is ``page_pool_fragment_netmem(niov, 1)``'s), so there is no pool to
    report a negative count to: it counts down alone."""
    if d.pp == NULL:
        d.pp_ref_count -= nr
        return d.pp_ref_count <= 0
    return page_pool_unref_netmem(<nm_pool *>d.pp, netmem, d, nr) == 0


cdef inline void io_zcrx_return_niov_freelist(nm_zcrx_ifq *ifq, uint32_t idx) noexcept nogil:
    """Models ``io_zcrx_return_niov_freelist()``."""
    ifq.freelist[ifq.free_count] = idx
    ifq.free_count += 1


cdef void io_zcrx_return_niov(nm_zcrx_ifq *ifq, uint32_t idx) noexcept nogil:
    """Models ``io_zcrx_return_niov()``: a copy-fallback net_iov (no pool) goes to the freelist,
    any other to its own pool (``page_pool_put_unrefed_netmem(niov->pp, netmem, -1, false)``)."""
    cdef netmem_ref netmem = __zcrx_netmem(ifq, idx)
    cdef nm_desc *d = &ifq.m.niovs[ifq.niov_base + idx]
    if d.pp == NULL:
        d.pp_ref_count = 0
        io_zcrx_return_niov_freelist(ifq, idx)
        return
    page_pool_put_unrefed_netmem(<nm_pool *>d.pp, netmem, d, <uint32_t>-1, False)


cdef inline void zcrx_send_event(nm_zcrx_ifq *ifq, uint32_t type) noexcept nogil:
    """Models ``zcrx_send_event()``: an allowed event that has not fired since it was armed
    fires once; its CQE is posted by task work (``CoreZcrxIfq._take_events()``)."""
    cdef uint32_t bit = 1U << type
    if not (ifq.allowed_events & bit) or ifq.fired_events & bit:
        return
    ifq.fired_events |= bit
    ifq.pending_events |= bit


cdef inline void io_zcrx_sync_for_device(nm_pool *pp, nm_zcrx_ifq *ifq, nm_desc *d) noexcept nogil:
    """Models ``io_zcrx_sync_for_device()``: one buffer (``1 << niov_shift`` bytes) for the
    device when it needs syncing. Departs: a dma-buf area is not synced (its addresses are the
    exporter's, not pages the CPU caches)."""
    if ifq.kern_readable and pp.dma_sync and dma_dev_need_sync(pp.dev):
        __page_pool_dma_sync_for_device(pp, d, 1U << ifq.niov_shift)


# ---- the refill ring -----------------------------------------------------------------------------

cdef inline bint __zcrx_parse_rqe(nm_zcrx_ifq *ifq, uint32_t mask, uint32_t *idx) noexcept nogil:
    """``io_zcrx_get_rqe()`` and ``io_parse_rqe()``: the entry at the cached head (which moves
    on); false for an entry with ``__pad`` set, another area or an offset past the area (the
    kernel skips it silently). ``len`` is not looked at."""
    cdef uint64_t *rqe = &ifq.rqes[2 * (ifq.cached_rq_head & mask)]
    cdef uint64_t off = rqe[0], niov_idx
    ifq.cached_rq_head += 1
    if unlikely((rqe[1] >> 32) or (off >> IORING_ZCRX_AREA_SHIFT)):
        return False
    niov_idx = (off & ((1ULL << IORING_ZCRX_AREA_SHIFT) - 1)) >> ifq.niov_shift
    if unlikely(niov_idx >= ifq.num_niovs):
        return False
    idx[0] = <uint32_t>niov_idx
    return True


cdef inline uint32_t io_zcrx_rqring_entries(nm_zcrx_ifq *ifq) noexcept nogil:
    """Models ``io_zcrx_rqring_entries()``: the tail (``smp_load_acquire()``) less the cached
    head, at most the ring's size."""
    return min(ifq.rq_tail[0] - ifq.cached_rq_head, ifq.rq_entries)


cdef void io_zcrx_ring_refill(nm_pool *pp, nm_zcrx_ifq *ifq) noexcept nogil:
    """Models ``io_zcrx_ring_refill()``: at most ``PP_ALLOC_CACHE_REFILL - alloc.count`` entries;
    each valid one drops the user's reference, then a pp reference; a net_iov whose last
    reference that was goes to the cache, or to its own pool when another pool owns it; the
    head is stored (``smp_store_release()``)."""
    cdef uint32_t mask = ifq.rq_entries - 1, idx
    cdef int64_t entries = min(<int64_t>io_zcrx_rqring_entries(ifq),
                               <int64_t>PP_ALLOC_CACHE_REFILL - pp.alloc_count)
    cdef netmem_ref netmem
    cdef nm_desc *d
    if unlikely(entries <= 0):
        return
    while entries > 0:
        entries -= 1
        if not __zcrx_parse_rqe(ifq, mask, &idx) or not io_zcrx_put_niov_uref(ifq, idx):
            continue
        netmem = __zcrx_netmem(ifq, idx)
        d = &pp.niovs[netmem >> 1]
        if not __zcrx_unref_and_test(ifq, netmem, d, 1):
            continue
        if unlikely(d.pp != <void *>pp):
            io_zcrx_return_niov(ifq, idx)
            continue
        io_zcrx_sync_for_device(pp, ifq, d)
        net_mp_netmem_place_in_cache(pp, netmem)
    ifq.rq_head[0] = ifq.cached_rq_head


cdef void io_zcrx_refill_slow(nm_pool *pp, nm_zcrx_ifq *ifq) noexcept nogil:
    """Models ``io_zcrx_refill_slow()``: free net_iovs into the cache, up to the refill budget."""
    cdef uint32_t idx
    cdef netmem_ref netmem
    cdef nm_desc *d
    while ifq.free_count and pp.alloc_count < PP_ALLOC_CACHE_REFILL:
        ifq.free_count -= 1
        idx = ifq.freelist[ifq.free_count]
        netmem = __zcrx_netmem(ifq, idx)
        d = &pp.niovs[netmem >> 1]
        d.pp_magic = 0
        d.pp = NULL
        d.pp_ref_count = 0
        net_mp_niov_set_page_pool(pp, netmem)
        io_zcrx_sync_for_device(pp, ifq, d)
        net_mp_netmem_place_in_cache(pp, netmem)


cdef netmem_ref io_pp_zc_alloc_netmems(nm_pool *pp) noexcept nogil:
    """Models ``io_pp_zc_alloc_netmems()``: the refill ring, then the freelist; with neither,
    the ``ZCRX_EVENT_ALLOC_FAIL`` event and 0. Returns one net_iov off the cache."""
    cdef nm_zcrx_ifq *ifq = <nm_zcrx_ifq *>pp.mp_priv
    if likely(pp.alloc_count == 0):
        io_zcrx_ring_refill(pp, ifq)
        if pp.alloc_count == 0:
            io_zcrx_refill_slow(pp, ifq)
            if pp.alloc_count == 0:
                zcrx_send_event(ifq, ZCRX_EVENT_ALLOC_FAIL)
                return 0
    pp.alloc_count -= 1
    return pp.alloc_cache[pp.alloc_count]


cdef bint io_pp_zc_release_netmem(nm_pool *pp, netmem_ref netmem) noexcept nogil:
    """Models ``io_pp_zc_release_netmem()``: pp info cleared, back to the freelist; never
    put_page (returns false)."""
    cdef nm_zcrx_ifq *ifq = <nm_zcrx_ifq *>pp.mp_priv
    if unlikely(not netmem & NET_IOV):
        nm_warn(pp.m, NM_W_ZCRX_NOT_NIOV, pp.id, netmem, 0)
        return False
    page_pool_clear_pp_info(&pp.niovs[netmem >> 1])
    io_zcrx_return_niov_freelist(ifq, <uint32_t>((netmem >> 1) - ifq.niov_base))
    return False


cdef nm_mp_ops io_uring_pp_zc_c_ops
io_uring_pp_zc_c_ops.alloc_netmems = io_pp_zc_alloc_netmems
io_uring_pp_zc_c_ops.release_netmem = io_pp_zc_release_netmem


cdef uint32_t zcrx_flush_rq(nm_zcrx_ifq *ifq) noexcept nogil:
    """Models ``zcrx_flush_rq()`` (ZCRX_CTRL_FLUSH_RQ): every queued entry is taken, each
    valid one's net_iov returned (``io_zcrx_return_niov()``) once its last reference goes.
    What a ring without a page pool (ZCRX_REG_NODEV) needs. Returns the entries taken."""
    cdef uint32_t mask = ifq.rq_entries - 1, idx, n = io_zcrx_rqring_entries(ifq), k
    cdef netmem_ref netmem
    for k in range(n):
        if not __zcrx_parse_rqe(ifq, mask, &idx) or not io_zcrx_put_niov_uref(ifq, idx):
            continue
        netmem = __zcrx_netmem(ifq, idx)
        if __zcrx_unref_and_test(ifq, netmem, &ifq.m.niovs[netmem >> 1], 1):
            io_zcrx_return_niov(ifq, idx)
    ifq.rq_head[0] = ifq.cached_rq_head
    return n


cdef void io_zcrx_scrub(nm_zcrx_ifq *ifq) noexcept nogil:
    """Models ``io_zcrx_scrub()``: every user reference is taken back (``atomic_xchg()`` to 0)
    and the net_iovs whose last reference that was go home."""
    cdef uint32_t i
    cdef int32_t nr
    cdef netmem_ref netmem
    for i in range(ifq.num_niovs):
        nr = ifq.user_refs[i]
        if not nr:
            continue
        ifq.user_refs[i] = 0
        netmem = __zcrx_netmem(ifq, i)
        if __zcrx_unref_and_test(ifq, netmem, &ifq.m.niovs[netmem >> 1], nr):
            io_zcrx_return_niov(ifq, i)


# ---- RECV_ZC -------------------------------------------------------------------------------------

cdef struct nm_zcrx_args:       # struct io_zcrx_args with the read descriptor's count
    nm_zcrx_ifq *ifq
    nm_io_cq *cq
    uint64_t user_data
    uint64_t count              # desc->count: bytes still wanted
    uint32_t nr_skbs


cdef bint io_zcrx_queue_cqe(nm_zcrx_args *a, uint32_t idx, uint32_t off,
                            uint32_t len) noexcept nogil:
    """Models ``io_zcrx_queue_cqe()``: ``res`` the length, ``IORING_CQE_F_MORE`` (and
    ``IORING_CQE_F_32`` on a CQE_MIXED ring), the zcrx CQE's ``off`` the area token (area 0)
    and the byte offset in the area. False when the CQ ring is full. Departs: a full ring is
    not an overflow list; the CQE is refused and counted."""
    cdef nm_io_cq *cq = a.cq
    cdef uint32_t tail = cq.ktail[0]
    cdef nm_io_cqe *c
    if tail - cq.khead[0] > cq.mask:
        cq.overflow += 1
        return False
    c = &cq.cqes[tail & cq.mask]
    c.user_data = a.user_data
    c.res = <int32_t>len
    c.flags = IORING_CQE_F_MORE | cq.cqe_flags
    c.zcrx_off = off + (<uint64_t>idx << a.ifq.niov_shift)
    c.zcrx_pad = 0
    cq.ktail[0] = tail + 1
    return True


cdef inline bint __zcrx_alloc_fallback_niov(nm_zcrx_ifq *ifq, uint32_t *idx) noexcept nogil:
    """Models ``io_alloc_fallback_niov()``: none from an area the kernel cannot read (a
    dma-buf), else a free net_iov with one pp reference and no pool."""
    if not ifq.kern_readable or ifq.free_count == 0:
        return False
    ifq.free_count -= 1
    idx[0] = ifq.freelist[ifq.free_count]
    page_pool_fragment_netmem(&ifq.m.niovs[ifq.niov_base + idx[0]], 1)
    return True


cdef int64_t io_zcrx_copy_chunk(nm_zcrx_args *a, const uint8_t *src, uint64_t len) noexcept nogil:
    """Models ``io_zcrx_copy_chunk()``: ``len`` bytes into fallback net_iovs (their first
    PAGE_SIZE bytes each), a CQE and a user reference per net_iov. Returns the bytes copied,
    else -ENOMEM (no net_iov: none free, or an area the kernel cannot read) or -ENOSPC."""
    cdef nm_zcrx_ifq *ifq = a.ifq
    cdef uint64_t copied = 0, n
    cdef uint32_t idx
    cdef int64_t ret = 0
    while len:
        if not __zcrx_alloc_fallback_niov(ifq, &idx):
            ret = -ENOMEM
            break
        n = min(len, <uint64_t>PAGE_SIZE)
        memcpy(nm_phys_to_virt(ifq.m, ifq.niov_phys[idx]), src, n)
        if not io_zcrx_queue_cqe(a, idx, 0, <uint32_t>n):
            io_zcrx_return_niov(ifq, idx)
            ret = -ENOSPC
            break
        ifq.user_refs[idx] += 1
        src += n
        len -= n
        copied += n
    return <int64_t>copied if copied else ret


cdef int64_t io_zcrx_copy_frag(nm_zcrx_args *a, nm_frag *frag, uint32_t off,
                               uint32_t len) noexcept nogil:
    """Models ``io_zcrx_copy_frag()``: a page frag through the copy fallback; what it copied
    counts in ``zcrx_stats`` and fires ``ZCRX_EVENT_COPY``."""
    cdef nm_zcrx_ifq *ifq = a.ifq
    cdef int64_t ret = io_zcrx_copy_chunk(a, <const uint8_t *>nm_phys_to_virt(
        ifq.m, netmem_phys(ifq.m, frag.netmem) + frag.offset + off), len)
    if ret > 0:
        if ifq.stats != NULL:
            ifq.stats[0] += 1
            ifq.stats[1] += <uint64_t>ret
        zcrx_send_event(ifq, ZCRX_EVENT_COPY)
    return ret


cdef int64_t io_zcrx_recv_frag(nm_zcrx_args *a, nm_frag *frag, uint32_t off,
                               uint32_t len) noexcept nogil:
    """Models ``io_zcrx_recv_frag()``: a page frag is copied; a net_iov of this ifq's pool gets
    a CQE, a pp reference and a user reference; any other net_iov is -EFAULT."""
    cdef nm_zcrx_ifq *ifq = a.ifq
    cdef nm_desc *d
    cdef nm_pool *pp
    if unlikely(not frag.netmem & NET_IOV):
        return io_zcrx_copy_frag(a, frag, off, len)
    d = &ifq.m.niovs[frag.netmem >> 1]
    pp = <nm_pool *>d.pp
    if pp == NULL or pp.mp_ops != &io_uring_pp_zc_c_ops or pp.mp_priv != <void *>ifq:
        return -EFAULT
    if not io_zcrx_queue_cqe(a, <uint32_t>((frag.netmem >> 1) - ifq.niov_base),
                             off + frag.offset, len):
        return -ENOSPC
    page_pool_ref_netmem(d)
    ifq.user_refs[(frag.netmem >> 1) - ifq.niov_base] += 1
    return len


cdef int64_t io_zcrx_recv_skb(nm_net *n, nm_zcrx_args *a, nm_skb *skb, uint32_t offset,
                              uint64_t len) noexcept nogil:
    """Models ``io_zcrx_recv_skb()``, the actor of ``tcp_read_sock()``: the linear bytes through
    the copy fallback, then each frag. Returns the bytes taken, else the first error; -EAGAIN
    past IO_SKBS_PER_CALL_LIMIT skbs in one call. The model's skbs have no frag_list."""
    cdef nm_shinfo *sh = skb_shinfo(n, skb)
    cdef uint32_t start_off = offset, start = skb_headlen(skb), end, copy
    cdef int64_t ret = 0
    cdef int i
    len = min(len, a.count)
    if not len:
        return 0
    a.nr_skbs += 1
    if unlikely(a.nr_skbs > IO_SKBS_PER_CALL_LIMIT + 1):
        return -EAGAIN
    if unlikely(offset < start):
        ret = io_zcrx_copy_chunk(a, skb_head(n.m, sh) + skb.data + offset,
                                 min(<uint64_t>(start - offset), len))
        if ret < 0:
            return __zcrx_recv_skb_out(a, offset, start_off, ret)
        offset += <uint32_t>ret
        len -= <uint64_t>ret
        if not len or offset != start:
            return __zcrx_recv_skb_out(a, offset, start_off, ret)
    for i in range(sh.nr_frags):
        end = start + sh.frags[i].len
        if offset < end:
            copy = <uint32_t>min(<uint64_t>(end - offset), len)
            ret = io_zcrx_recv_frag(a, &sh.frags[i], offset - start, copy)
            if ret < 0:
                break
            offset += <uint32_t>ret
            len -= <uint64_t>ret
            if len == 0 or ret != copy:
                break
        start = end
    return __zcrx_recv_skb_out(a, offset, start_off, ret)


cdef inline int64_t __zcrx_recv_skb_out(nm_zcrx_args *a, uint32_t offset, uint32_t start_off,
                                        int64_t ret) noexcept nogil:
    """``io_zcrx_recv_skb()``'s ``out:`` label: the error when nothing was taken, else the bytes
    taken (off the descriptor's count)."""
    if offset == start_off:
        return ret
    a.count -= offset - start_off
    return offset - start_off


cdef int64_t io_zcrx_tcp_read_sock(nm_net *n, nm_sock *sk, nm_zcrx_args *a) noexcept nogil:
    """Models ``__tcp_read_sock()`` with ``io_zcrx_recv_skb()`` as its actor: skbs in order, each
    eaten once taken whole, the FIN read (and the loop left) after the data before it."""
    cdef int64_t copied = 0, used
    cdef uint32_t si, offset
    cdef nm_skb *skb
    while True:
        si = sk.rq_head
        if si == NM_NIL:
            break
        skb = SKB(n, si)
        offset = sk.copied_seq - skb.seq
        if offset < skb.len:
            used = io_zcrx_recv_skb(n, a, skb, offset, skb.len - offset)
            if used <= 0:
                if not copied:
                    copied = used
                break
            sk.copied_seq += <uint32_t>used
            copied += used
            if offset + used != skb.len:
                continue
        if skb.tcp_flags & TCPHDR_FIN:
            __rx_fin(n, sk, si)
            break
        tcp_eat_recv_skb(n, sk, si)
        if not a.count:
            break
    return copied


cdef int64_t io_zcrx_recv(nm_net *n, nm_zcrx_ifq *ifq, nm_io_cq *cq, uint32_t ski,
                          uint64_t user_data, uint32_t *len) noexcept nogil:
    """Models ``io_zcrx_recv()``/``io_zcrx_tcp_recvmsg()``: read the socket's queue into CQEs,
    at most ``*len`` bytes (0: no limit; what is left is written back). Returns the bytes
    taken, 0 at the end of the stream, the socket's error, -ENOTCONN on a closed socket with
    nothing queued, or -EAGAIN. Departs: the model's socket has no SOCK_DONE; the end of the
    stream is RCV_SHUTDOWN, seen on the call after the FIN is read."""
    cdef nm_sock *sk = &n.socks[ski]
    cdef nm_zcrx_args a
    cdef int64_t ret
    cdef int err
    a.ifq = ifq
    a.cq = cq
    a.user_data = user_data
    a.count = len[0] if len[0] else 0xffffffffU
    a.nr_skbs = 0
    ret = io_zcrx_tcp_read_sock(n, sk, &a)
    if len[0] and ret > 0:
        len[0] -= <uint32_t>ret
    if ret != 0:
        return ret
    if sk.err:
        err = sk.err
        sk.err = 0
        return -err
    if sk.shutdown & RCV_SHUTDOWN:
        return 0
    if sk.state == NM_TCP_CLOSE:
        return -ENOTCONN
    return -EAGAIN


# ---- the Python boundary -------------------------------------------------------------------------

#: A 32-byte CQE (struct io_uring_cqe, then struct io_uring_zcrx_cqe), as the CQ ring holds it.
IO_URING_CQE32_DTYPE = _np.dtype([("user_data", "<u8"), ("res", "<i4"), ("flags", "<u4"),
                                  ("off", "<u8"), ("__pad", "<u8")])


cdef class CoreIoUring:
    """The compiled half of ``netmem.zcrx.IoUring``: its CQ ring (``_cq``, 32-byte CQEs) and
    the ring's head and tail (``_cq_ring``: head at index 0, tail at 16, a cache line apart)."""

    cdef nm_io_cq cq
    cdef object _cqes, _ctrl

    def _setup_cq(self, object cqes, object ctrl, bint mixed):
        cdef cnp.ndarray c = cqes
        cdef cnp.ndarray k = ctrl
        if c.dtype != IO_URING_CQE32_DTYPE or not c.flags.c_contiguous or len(c) & (len(c) - 1):
            raise NetmemError(EINVAL, "io_uring: the CQ ring is not a power-of-two array of CQEs")
        if k.dtype != _np.uint32 or len(k) < 17 or not k.flags.c_contiguous:
            raise NetmemError(EINVAL, "io_uring: the CQ ring's head and tail are not uint32[17]")
        self._cqes, self._ctrl = c, k
        self.cq.cqes = <nm_io_cqe *>cnp.PyArray_DATA(c)
        self.cq.khead = <uint32_t *>cnp.PyArray_DATA(k)
        self.cq.ktail = self.cq.khead + 16
        self.cq.mask = <uint32_t>len(c) - 1
        self.cq.cqe_flags = IORING_CQE_F_32 if mixed else 0
        self.cq.overflow = 0

    def _post_cqe(self, uint64_t user_data, int32_t res, uint32_t flags):
        """Post one CQE (a request's completion, an event): False when the ring is full."""
        cdef uint32_t tail = self.cq.ktail[0]
        cdef nm_io_cqe *c
        if tail - self.cq.khead[0] > self.cq.mask:
            self.cq.overflow += 1
            return False
        c = &self.cq.cqes[tail & self.cq.mask]
        c.user_data = user_data
        c.res = res
        c.flags = flags
        c.zcrx_off = c.zcrx_pad = 0
        self.cq.ktail[0] = tail + 1
        return True

    @property
    def cq_overflow(self):
        """CQEs refused because the CQ ring was full."""
        return self.cq.overflow

    def _recvzc(self, CoreMachine machine, CoreZcrxIfq ifq, uint32_t ski, uint64_t user_data,
                uint32_t length):
        """One issue of RECV_ZC on socket ``ski``: ``(ret, length left)`` (``io_zcrx_recv()``)."""
        cdef nm_sock *sk = _sock(machine, ski)
        cdef int64_t ret
        with nogil:
            ret = io_zcrx_recv(machine.m.net, &ifq.ifq, &self.cq, ski, user_data, &length)
        if machine.m.nr_warn:
            machine._flush_warnings()
        return ret, length


cdef class CoreZcrxIfq:
    """The compiled half of ``netmem.zcrx.IoZcrxIfq``: the refill ring in the ifq's region
    (``_region``, a uint8 array), the area's freelist and user references (``user_refs``, an
    int32 array), and where a kernel-readable area's net_iovs are (``niov_phys``)."""

    cdef nm_zcrx_ifq ifq
    cdef CoreMachine _machine
    cdef object _region, _freelist, _user_refs, _niov_phys

    def _setup(self, CoreMachine machine, object region, uint32_t rq_entries, uint32_t rqes_off,
               uint64_t niov_base, uint32_t num_niovs, uint32_t niov_shift, object niov_phys,
               uint32_t allowed_events, int64_t stats_off):
        cdef cnp.ndarray r = region
        if (r.dtype != _np.uint8 or not r.flags.c_contiguous
                or <uint64_t>len(r) < rqes_off + 16ULL * rq_entries):
            raise NetmemError(EINVAL, "zcrx: the region cannot hold the refill ring")
        self._region = r
        self._machine = machine
        self._freelist = _np.arange(num_niovs, dtype=_np.uint32)
        self._user_refs = _np.zeros(num_niovs, dtype=_np.int32)
        self.ifq.m = machine.m
        self.ifq.rq_head = <uint32_t *>cnp.PyArray_DATA(r)
        self.ifq.rq_tail = self.ifq.rq_head + 16
        self.ifq.rqes = <uint64_t *>(<char *>cnp.PyArray_DATA(r) + rqes_off)
        self.ifq.rq_entries = rq_entries
        self.ifq.cached_rq_head = 0
        self.ifq.niov_base = niov_base
        self.ifq.num_niovs = num_niovs
        self.ifq.niov_shift = niov_shift
        self.ifq.freelist = <uint32_t *>cnp.PyArray_DATA(self._freelist)
        self.ifq.free_count = num_niovs
        self.ifq.user_refs = <int32_t *>cnp.PyArray_DATA(self._user_refs)
        self.ifq.kern_readable = niov_phys is not None
        if niov_phys is not None:
            self._niov_phys = _np.ascontiguousarray(niov_phys, _np.uint64)
            self.ifq.niov_phys = <uint64_t *>cnp.PyArray_DATA(self._niov_phys)
        self.ifq.allowed_events = allowed_events
        self.ifq.fired_events = self.ifq.pending_events = 0
        self.ifq.stats = NULL if stats_off < 0 else \
            <uint64_t *>(<char *>cnp.PyArray_DATA(r) + stats_off)

    def _install_c_ops(self, CoreMemoryProvider provider):
        """Point ``provider`` at ``io_uring_pp_zc_ops``' C buffer ops over this ifq."""
        provider.c_ops = &io_uring_pp_zc_c_ops
        provider.c_priv = &self.ifq

    def _scrub(self):
        """``io_zcrx_scrub()``."""
        io_zcrx_scrub(&self.ifq)
        if self.ifq.m.nr_warn:
            self._machine._flush_warnings()

    def _flush_rq(self):
        """``zcrx_flush_rq()``: the entries taken."""
        cdef uint32_t n = zcrx_flush_rq(&self.ifq)
        if self.ifq.m.nr_warn:
            self._machine._flush_warnings()
        return n

    def _take_events(self):
        """The events fired and not yet posted (a bit per ``enum zcrx_event_type``), cleared."""
        cdef uint32_t ev = self.ifq.pending_events
        self.ifq.pending_events = 0
        return ev

    def _arm_event(self, uint32_t type):
        """``zcrx_arm_event()``: False when the event has not fired (the caller's EINVAL)."""
        if not self.ifq.fired_events & (1U << type):
            return False
        self.ifq.fired_events &= ~(1U << type)
        return True

    @property
    def free_count(self):
        """Net_iovs on the area's freelist."""
        return self.ifq.free_count

    @property
    def user_refs(self):
        """``area->user_refs`` (a read-only view)."""
        v = self._user_refs.view()
        v.flags.writeable = False
        return v

    @property
    def cached_rq_head(self):
        return self.ifq.cached_rq_head
