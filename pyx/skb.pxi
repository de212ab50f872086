# The socket buffer: skbs, their shared info and frags, and the kernel's operations over them.
#
# Models include/linux/skbuff.h, include/linux/skbuff_ref.h and net/core/skbuff.c for the receive
# side: skb_add_rx_frag_netmem(), skb_frags_readable(), skb_try_coalesce(), skb_copy_bits(),
# skb_clone(), skb_pp_frag_ref() and kfree_skb() with napi_pp_put_page(). skbs and shared infos
# live in two lazily committed tables of the machine's nm_net (indices, never pointers, cross
# calls); clones share a shared info, counted by dataref, as in the kernel.


cdef enum:
    MAX_SKB_FRAGS = 17              # CONFIG_MAX_SKB_FRAGS default
    NM_SKB_LINEAR = 256             # a kmalloc'ed head: napi_alloc_skb() of MLX5E_RX_MAX_HEAD
    NM_SKB_CAP = 1 << 22            # skbs (and shared infos) the tables can hold
    SKB_DATA_ALIGN_SK_BUFF = 256    # SKB_DATA_ALIGN(sizeof(struct sk_buff)) on x86-64
    SKB_DATA_ALIGN_SHINFO = 320     # SKB_DATA_ALIGN(sizeof(struct skb_shared_info))
    NET_SKB_PAD = 64                # max(32, L1_CACHE_BYTES)
    SKB_DATAREF_MASK = (1 << 16) - 1  # include/linux/skbuff.h: the low half counts all users
    GRO_LEGACY_MAX_SIZE = 65536     # include/linux/netdevice.h: the default gro_max_size
    NM_DEFER_MAX = 64               # net.core.skb_defer_max default
    NM_HDR_BUF_SIZE = 1024          # the model driver's header buffers (header split)
    NM_HDS_THRESH_MAX = 512         # ethtool hds-thresh maximum of the model driver
    NM_RX_BUF_SIZE = 2048           # payload buffers without header split: half pages
    NM_TCP_RMEM_MAX = 6291456       # net.ipv4.tcp_rmem[2] default
    # net.ipv4.tcp_rmem[1], a new socket's sk_rcvbuf: the kernel's default is 131072; the
    # model's is tcp_rmem[2], as its traffic is open loop (senders that never see the window).
    NM_TCP_RMEM_DEFAULT = NM_TCP_RMEM_MAX
    NM_ACK_RING = 4096              # ACK records a machine holds until m.tcp.acks() drains
    NM_TCP_INVALID_RATELIMIT = 500  # net.ipv4.tcp_invalid_ratelimit: HZ/2 jiffies, in ms
    NM_INT_MAX = 0x7fffffff         # tcp_challenge_ack_limit default since 6.0: no netns limit

    # The SKB_DROP_REASON_* values the model counts (include/net/dropreason-core.h names).
    NM_DROP_NOT_SPECIFIED = 0
    NM_DROP_NO_SOCKET = 1
    NM_DROP_PKT_TOO_SMALL = 2
    NM_DROP_TCP_OLD_DATA = 3
    NM_DROP_TCP_OFO_DROP = 4
    NM_DROP_TCP_OFOMERGE = 5
    NM_DROP_PROTO_MEM = 6
    NM_DROP_IP_INHDR = 7
    NM_DROP_UNHANDLED_PROTO = 8
    NM_DROP_TCP_RESET = 9
    NM_DROP_TCP_INVALID_SEQUENCE = 10
    NM_DROP_SOCKET_CLOSE = 11
    NM_DROP_IP_NOPROTO = 12
    NM_DROP_TCP_FLAGS = 13
    NM_DROP_FRAG_REASM = 14
    NM_DROP_TCP_CLOSE = 15
    NM_DROP_TCP_INVALID_SYN = 16
    NM_DROP_TCP_ABORT_ON_DATA = 17
    NM_DROP_PFMEMALLOC = 18
    NM_DROP_OTHERHOST = 19
    NM_DROP_TCP_OFO_QUEUE_PRUNE = 20
    NM_DROP_TCP_OLD_SEQUENCE = 21
    NM_DROP_TCP_INVALID_END_SEQUENCE = 22
    NM_DROP_TCP_ZEROWINDOW = 23
    NM_DROP_TCP_OVERWINDOW = 24
    NM_DROP_REASONS = 25


cdef inline uint32_t SKB_TRUESIZE(uint32_t x) noexcept nogil:
    """``SKB_TRUESIZE()``: the data plus the aligned sk_buff and skb_shared_info."""
    return x + SKB_DATA_ALIGN_SK_BUFF + SKB_DATA_ALIGN_SHINFO


cdef inline nm_skb *SKB(nm_net *n, uint32_t i) noexcept nogil:
    return &n.skbs[i]


cdef inline nm_shinfo *skb_shinfo(nm_net *n, nm_skb *skb) noexcept nogil:
    return &n.shinfos[skb.shinfo]


cdef inline uint32_t skb_headlen(nm_skb *skb) noexcept nogil:
    return skb.len - skb.data_len


cdef inline bint skb_frags_readable(nm_skb *skb) noexcept nogil:
    """Models ``skb_frags_readable()``: ``!skb->unreadable``."""
    return not skb.unreadable


cdef inline uint32_t skb_end_offset(nm_shinfo *sh) noexcept nogil:
    """Room of the head: a kmalloc'ed head has NM_SKB_LINEAR bytes; a page-frag head (a header
    buffer) ends where its skb_shared_info would start."""
    return NM_HDR_BUF_SIZE - SKB_DATA_ALIGN_SHINFO if sh.head_frag else NM_SKB_LINEAR


cdef inline uint8_t *skb_head(nm_machine *m, nm_shinfo *sh) noexcept nogil:
    if sh.head_frag:
        return <uint8_t *>nm_phys_to_virt(m, netmem_phys(m, sh.head_netmem) + sh.head_off)
    return sh.linear


# ---- the tables ---------------------------------------------------------------------------------

cdef int nm_net_init(nm_machine *m) except -1:
    """The machine's RX stack: skb tables (lazily committed), socket table, MIBs."""
    cdef nm_net *n = <nm_net *>calloc(1, sizeof(nm_net))
    cdef int i
    if n == NULL:
        raise MemoryError("nm_net")
    m.net = n
    n.m = m
    n.skb_cap = NM_SKB_CAP
    n.skbs = <nm_skb *>_map_lazy(<uint64_t>NM_SKB_CAP * sizeof(nm_skb), True)
    n.shinfos = <nm_shinfo *>_map_lazy(<uint64_t>NM_SKB_CAP * sizeof(nm_shinfo), True)
    n.skb_tstamp = <uint64_t *>_map_lazy(<uint64_t>NM_SKB_CAP * sizeof(uint64_t), True)
    n.skb_rb = <nm_rb_node *>_map_lazy(<uint64_t>NM_SKB_CAP * sizeof(nm_rb_node), True)
    n.skb_free = NM_NIL
    n.shinfo_free = NM_NIL
    n.sk_free = NM_NIL
    n.defer_max = NM_DEFER_MAX
    n.rcvbuf = NM_TCP_RMEM_MAX
    n.tcp_rmem[0] = 4096
    n.tcp_rmem[1] = NM_TCP_RMEM_DEFAULT
    n.tcp_rmem[2] = NM_TCP_RMEM_MAX
    n.moderate_rcvbuf = 1
    n.rcvbuf_low_rtt = 1000             # USEC_PER_MSEC
    n.invalid_ratelimit = NM_TCP_INVALID_RATELIMIT
    n.challenge_ack_limit = NM_INT_MAX
    n.challenge_rng = 0x9e3779b9        # reseeded from the machine's seed (_net_config)
    n.acks = <nm_ack_rec *>calloc(NM_ACK_RING, sizeof(nm_ack_rec))
    n.ack_cap = NM_ACK_RING if n.acks != NULL else 0       # without a ring every ACK drops
    for i in range(NM_MAX_CPUS):
        n.defer_head[i] = NM_NIL
    return 0


cdef void nm_net_free(nm_net *n) noexcept nogil:
    cdef uint32_t i
    if n == NULL:
        return
    if n.skbs != NULL:
        munmap(n.skbs, <uint64_t>NM_SKB_CAP * sizeof(nm_skb))
    if n.shinfos != NULL:
        munmap(n.shinfos, <uint64_t>NM_SKB_CAP * sizeof(nm_shinfo))
    if n.skb_tstamp != NULL:
        munmap(n.skb_tstamp, <uint64_t>NM_SKB_CAP * sizeof(uint64_t))
    if n.skb_rb != NULL:
        munmap(n.skb_rb, <uint64_t>NM_SKB_CAP * sizeof(nm_rb_node))
    for i in range(n.nr_socks):       # a closed slot's arrays are already NULL
        free(n.socks[i].user_frags)
        free(n.socks[i].uf_used)
    free(n.socks)
    free(n.cm_scratch)
    free(n.acks)
    free(n.delack_list)
    free(n.rdllist)
    free(n.sk_hash)
    free(n)


cdef uint32_t __shinfo_alloc(nm_net *n) noexcept nogil:
    cdef uint32_t i = n.shinfo_free
    if i != NM_NIL:
        n.shinfo_free = n.shinfos[i].next_free
    elif n.shinfo_next < n.skb_cap:
        i = n.shinfo_next
        n.shinfo_next += 1
    else:
        return NM_NIL
    n.shinfos[i].nr_frags = 0
    n.shinfos[i].head_frag = 0
    n.shinfos[i].dataref = 1
    n.shinfos[i].head_netmem = 0
    return i


cdef inline void __shinfo_free(nm_net *n, uint32_t i) noexcept nogil:
    n.shinfos[i].next_free = n.shinfo_free
    n.shinfo_free = i


cdef uint32_t __skb_struct_alloc(nm_net *n) noexcept nogil:
    cdef uint32_t i = n.skb_free
    if i != NM_NIL:
        n.skb_free = n.skbs[i].next
    elif n.skb_next < n.skb_cap:
        i = n.skb_next
        n.skb_next += 1
    else:
        return NM_NIL
    memset(&n.skbs[i], 0, sizeof(nm_skb))
    if unlikely(n.prof.on):
        n.skb_tstamp[i] = 0
    n.skbs[i].next = NM_NIL
    n.skbs[i].prev = NM_NIL
    n.skbs[i].sk = NM_NIL
    n.skbs_live += 1
    return i


cdef inline void __skb_struct_free(nm_net *n, uint32_t i) noexcept nogil:
    n.skbs[i].next = n.skb_free
    n.skb_free = i
    n.skbs_live -= 1


cdef uint32_t napi_alloc_skb(nm_net *n, uint32_t cpu) noexcept nogil:
    """Models ``napi_alloc_skb()``: an skb with a kmalloc'ed head of NM_SKB_LINEAR bytes
    (``skb->data`` at NET_SKB_PAD is left out: data starts at the head). NM_NIL when the tables
    are full."""
    cdef uint32_t i = __skb_struct_alloc(n)
    cdef uint32_t s
    if i == NM_NIL:
        return NM_NIL
    s = __shinfo_alloc(n)
    if s == NM_NIL:
        __skb_struct_free(n, i)
        return NM_NIL
    n.skbs[i].shinfo = s
    n.skbs[i].truesize = SKB_TRUESIZE(NM_SKB_LINEAR)
    n.skbs[i].alloc_cpu = cpu
    return i


cdef uint32_t napi_build_skb(nm_net *n, netmem_ref netmem, uint32_t off, uint32_t frag_size,
                             uint32_t cpu) noexcept nogil:
    """Models ``napi_build_skb()`` over a page frag: the frag becomes the head (head_frag) and
    ``skb_propagate_pfmemalloc()`` marks the skb when the head's page is pfmemalloc."""
    cdef uint32_t i = napi_alloc_skb(n, cpu)
    cdef nm_shinfo *sh
    if i == NM_NIL:
        return NM_NIL
    sh = &n.shinfos[n.skbs[i].shinfo]
    sh.head_frag = 1
    sh.head_netmem = netmem
    sh.head_off = off
    skb_propagate_pfmemalloc(n.m, netmem, &n.skbs[i])
    n.skbs[i].truesize = SKB_TRUESIZE(frag_size - SKB_DATA_ALIGN_SHINFO)
    return i


# ---- frags --------------------------------------------------------------------------------------

cdef inline void skb_propagate_pfmemalloc(nm_machine *m, netmem_ref netmem,
                                          nm_skb *skb) noexcept nogil:
    """Models ``skb_propagate_pfmemalloc()`` on ``compound_head()`` of a page, as
    ``napi_build_skb()`` does for a page-frag head and ``__skb_fill_netmem_desc()`` for a page
    frag: a pfmemalloc page marks the skb. A net_iov is never pfmemalloc (the kernel returns
    before the test)."""
    cdef netmem_ref head
    if netmem & NET_IOV:
        return
    head = netmem_compound_head(m, netmem)
    if netmem_is_pfmemalloc(__netmem_desc(m, head), head):
        skb.pfmemalloc = 1


cdef inline void __skb_fill_netmem_desc(nm_skb *skb, nm_shinfo *sh, int i, netmem_ref netmem,
                                        uint32_t off, uint32_t size) noexcept nogil:
    """Models ``__skb_fill_netmem_desc()``: a net_iov makes the skb unreadable. Departs: its
    pfmemalloc half is ``skb_propagate_pfmemalloc()``, called by the callers that fill a frag
    through the kernel's ``__skb_fill_netmem_desc()`` (the driver, ``skb_add_rx_frag_netmem()``,
    the head ``skb_try_coalesce()`` steals); ``skb_gro_receive()`` and ``skb_try_coalesce()``
    copy frag descriptors (``*--frag = *--frag2``, ``memcpy()``) and propagate nothing, so they
    call this alone."""
    sh.frags[i].netmem = netmem
    sh.frags[i].offset = off
    sh.frags[i].len = size
    if netmem & NET_IOV:
        skb.unreadable = 1


cdef inline void skb_add_rx_frag_netmem(nm_net *n, nm_skb *skb, int i, netmem_ref netmem,
                                        uint32_t off, uint32_t size,
                                        uint32_t truesize) noexcept nogil:
    """Models ``skb_add_rx_frag_netmem()``."""
    cdef nm_shinfo *sh = skb_shinfo(n, skb)
    __skb_fill_netmem_desc(skb, sh, i, netmem, off, size)
    skb_propagate_pfmemalloc(n.m, netmem, skb)
    sh.nr_frags = i + 1
    skb.len += size
    skb.data_len += size
    skb.truesize += truesize


cdef inline void page_pool_ref_netmem(nm_desc *d) noexcept nogil:
    """Models ``page_pool_ref_netmem()``."""
    d.pp_ref_count += 1


cdef int skb_pp_frag_ref(nm_net *n, nm_skb *skb) noexcept nogil:
    """Models ``skb_pp_frag_ref()``: a pp reference (or a page reference, for a frag that is not
    a page_pool buffer) on every frag; -EINVAL without pp_recycle."""
    cdef nm_shinfo *sh = skb_shinfo(n, skb)
    cdef nm_machine *m = n.m
    cdef netmem_ref head
    cdef nm_desc *d
    cdef int i
    if not skb.pp_recycle:
        return -EINVAL
    for i in range(sh.nr_frags):
        head = netmem_compound_head(m, sh.frags[i].netmem)
        d = __netmem_desc(m, head)
        if netmem_is_pp(d):
            page_pool_ref_netmem(d)
        else:
            d.refcount += 1
    return 0


cdef inline void __skb_frag_ref(nm_machine *m, nm_frag *f) noexcept nogil:
    """Models ``__skb_frag_ref()`` (``get_netmem()``) for a page."""
    if not (f.netmem & NET_IOV):
        __netmem_desc(m, netmem_compound_head(m, f.netmem)).refcount += 1


cdef bint napi_pp_put_page(nm_machine *m, netmem_ref netmem) noexcept nogil:
    """Models ``napi_pp_put_page()``: false when the buffer is not a page_pool buffer; else
    ``page_pool_put_full_netmem(pp, netmem, false)`` (the pool decides NAPI locality)."""
    cdef nm_desc *d
    netmem = netmem_compound_head(m, netmem)
    d = __netmem_desc(m, netmem)
    if not netmem_is_pp(d) or d.pp == NULL:
        return False
    page_pool_put_netmem(<nm_pool *>d.pp, netmem, <uint32_t>-1, False)
    return True


cdef inline void skb_page_unref(nm_machine *m, netmem_ref netmem, bint recycle) noexcept nogil:
    """Models ``skb_page_unref()``: page_pool buffers go home, other pages drop a reference."""
    if recycle and napi_pp_put_page(m, netmem):
        return
    if not (netmem & NET_IOV):
        nm_put_page(m, netmem_compound_head(m, netmem))


cdef void skb_release_data(nm_net *n, nm_skb *skb) noexcept nogil:
    """Models ``skb_release_data()``: the last reference to the shared info puts the frags and
    the head (``skb_free_head()``)."""
    cdef nm_shinfo *sh = skb_shinfo(n, skb)
    cdef int i
    sh.dataref -= 1
    if sh.dataref > 0:
        return
    for i in range(sh.nr_frags):
        skb_page_unref(n.m, sh.frags[i].netmem, skb.pp_recycle)
    if sh.head_frag:
        skb_page_unref(n.m, sh.head_netmem, skb.pp_recycle)
    __shinfo_free(n, skb.shinfo)


cdef void __kfree_skb(nm_net *n, uint32_t i) noexcept nogil:
    """Models ``__kfree_skb()`` / ``kfree_skb()`` (one user)."""
    skb_release_data(n, &n.skbs[i])
    __skb_struct_free(n, i)


cdef void kfree_skb_partial(nm_net *n, uint32_t i, bint head_stolen) noexcept nogil:
    """Models ``kfree_skb_partial()``: with the head stolen only the sk_buff goes."""
    cdef nm_skb *skb = &n.skbs[i]
    if head_stolen:
        # The head became a frag of another skb; the shared info under it is gone with it.
        __shinfo_free(n, skb.shinfo)
        __skb_struct_free(n, i)
    else:
        __kfree_skb(n, i)


cdef uint32_t skb_clone(nm_net *n, uint32_t i) noexcept nogil:
    """Models ``skb_clone()``: a second sk_buff over the same data (dataref + 1)."""
    cdef uint32_t c = __skb_struct_alloc(n)
    cdef uint32_t nxt, prv
    if c == NM_NIL:
        return NM_NIL
    memcpy(&n.skbs[c], &n.skbs[i], sizeof(nm_skb))
    if unlikely(n.prof.on):
        n.skb_tstamp[c] = n.skb_tstamp[i]
    n.skbs[c].next = NM_NIL
    n.skbs[c].prev = NM_NIL
    n.skbs[c].sk = NM_NIL
    n.skbs[c].cloned = 1
    n.skbs[i].cloned = 1
    n.shinfos[n.skbs[i].shinfo].dataref += 1
    return c


cdef inline bint skb_cloned(nm_net *n, nm_skb *skb) noexcept nogil:
    """Models ``skb_cloned()``: ``skb->cloned && (dataref & SKB_DATAREF_MASK) != 1``. The
    ``cloned`` bit is sticky (skb_clone() sets it on both skbs, nothing clears it); once the
    other skbs over the shared info are freed, the survivor is no longer cloned."""
    return skb.cloned and (skb_shinfo(n, skb).dataref & SKB_DATAREF_MASK) != 1


cdef inline bint skb_head_is_locked(nm_net *n, nm_skb *skb) noexcept nogil:
    """Models ``skb_head_is_locked()``: a kmalloc'ed head, or a clone's shared head."""
    return not skb_shinfo(n, skb).head_frag or skb_cloned(n, skb)


# ---- copying and coalescing ---------------------------------------------------------------------

cdef int skb_copy_bits(nm_net *n, nm_skb *skb, uint32_t offset, uint8_t *to,
                       uint32_t len) noexcept nogil:
    """Models ``skb_copy_bits()``: from ``skb->data + offset``; -EFAULT past the end, or past the
    head when the frags are unreadable."""
    cdef nm_machine *m = n.m
    cdef nm_shinfo *sh = skb_shinfo(n, skb)
    cdef uint32_t start = skb_headlen(skb), copy, end
    cdef uint64_t fo
    cdef int i
    if offset > skb.len or skb.len - offset < len:
        return -EFAULT
    if start > offset:
        copy = min(start - offset, len)
        memcpy(to, skb_head(m, sh) + skb.data + offset, copy)
        len -= copy
        if len == 0:
            return 0
        offset += copy
        to += copy
    if not skb_frags_readable(skb):
        return -EFAULT
    for i in range(sh.nr_frags):
        end = start + sh.frags[i].len
        if end > offset:
            fo = offset - start
            copy = min(end - offset, len)
            fo += netmem_phys(m, sh.frags[i].netmem) + sh.frags[i].offset
            memcpy(to, nm_phys_to_virt(m, fo), copy)
            len -= copy
            if len == 0:
                return 0
            offset += copy
            to += copy
        start = end
    return -EFAULT


cdef void skb_condense(nm_net *n, nm_skb *skb) noexcept nogil:
    """Models ``skb_condense()`` (net/core/skbuff.c, Linux 6.12 on, with the
    ``skb_frags_readable()`` test of devmem TCP): when the frag bytes fit the head's tailroom
    and the skb is neither cloned nor unreadable, ``__pskb_pull_tail(skb, skb->data_len)``
    copies them into the head and the frags go home at once; in every case but those refusals,
    truesize becomes ``SKB_TRUESIZE(skb_end_offset(skb))`` (the frags' truesize is not known).
    ``tcp_data_queue_ofo()`` calls it on every skb it queues."""
    cdef nm_shinfo *sh = skb_shinfo(n, skb)
    cdef uint32_t tail
    cdef int i
    if skb.data_len:
        tail = skb.data + skb_headlen(skb)
        if (skb.data_len > skb_end_offset(sh) - tail or skb_cloned(n, skb)
                or not skb_frags_readable(skb)):
            return
        # Readable and within skb->len: the copy cannot fail (the kernel BUG()s if it does).
        skb_copy_bits(n, skb, skb_headlen(skb), skb_head(n.m, sh) + tail, skb.data_len)
        for i in range(sh.nr_frags):
            skb_page_unref(n.m, sh.frags[i].netmem, skb.pp_recycle)
        sh.nr_frags = 0
        skb.data_len = 0
    skb.truesize = SKB_TRUESIZE(skb_end_offset(sh))


cdef bint skb_try_coalesce(nm_net *n, nm_skb *to, nm_skb *frm, bint *fragstolen,
                           int *delta_truesize) noexcept nogil:
    """Models ``skb_try_coalesce()``: append ``frm``'s data to ``to``. Refuses a cloned ``to``
    (``skb_cloned()``: sharing its data with a live clone), a pp_recycle mismatch, a
    readability mismatch, too many frags and a locked head (``skb_head_is_locked()``); copies
    into the tailroom when ``frm`` is small and readable; steals ``frm``'s page-frag head."""
    cdef nm_shinfo *tsh = skb_shinfo(n, to)
    cdef nm_shinfo *fsh = skb_shinfo(n, frm)
    cdef uint32_t len = frm.len, tail
    cdef int delta, i
    fragstolen[0] = False
    if skb_cloned(n, to):
        return False
    if to.pp_recycle != frm.pp_recycle:
        return False
    if skb_frags_readable(frm) != skb_frags_readable(to):
        return False
    tail = to.data + skb_headlen(to)
    # skb_tailroom(): 0 for a nonlinear skb.
    if len <= (0 if to.data_len else skb_end_offset(tsh) - tail) and skb_frags_readable(frm):
        if len and skb_copy_bits(n, frm, 0, skb_head(n.m, tsh) + tail, len) == 0:
            to.len += len
        delta_truesize[0] = 0
        return True
    if skb_headlen(frm) != 0:
        if tsh.nr_frags + fsh.nr_frags >= MAX_SKB_FRAGS:
            return False
        if skb_head_is_locked(n, frm):
            return False
        delta = <int>frm.truesize - SKB_DATA_ALIGN_SK_BUFF
        __skb_fill_netmem_desc(to, tsh, tsh.nr_frags, fsh.head_netmem,
                               fsh.head_off + frm.data, skb_headlen(frm))
        skb_propagate_pfmemalloc(n.m, fsh.head_netmem, to)     # skb_fill_page_desc()
        tsh.nr_frags += 1
        fragstolen[0] = True
    else:
        if tsh.nr_frags + fsh.nr_frags > MAX_SKB_FRAGS:
            return False
        delta = <int>frm.truesize - <int>SKB_TRUESIZE(skb_end_offset(fsh))
    for i in range(fsh.nr_frags):
        __skb_fill_netmem_desc(to, tsh, tsh.nr_frags + i, fsh.frags[i].netmem,
                               fsh.frags[i].offset, fsh.frags[i].len)
    tsh.nr_frags += fsh.nr_frags
    if not skb_cloned(n, frm):
        fsh.nr_frags = 0
    elif skb_pp_frag_ref(n, frm) != 0:
        for i in range(fsh.nr_frags):
            __skb_frag_ref(n.m, &fsh.frags[i])
    to.truesize += delta
    to.len += len
    to.data_len += len
    delta_truesize[0] = delta
    return True
