# netmem_ref encoding, the descriptor tables of pages and net_iovs, warnings and tracepoints.
#
# Models include/net/netmem.h: a netmem_ref is a page (pfn << 1) or, with bit 0 (NET_IOV) set, a
# net_iov ((global niov index << 1) | 1). Descriptors are C structs in two tables owned by the
# machine; both are anonymous mappings, so only touched descriptors cost memory.


# ---- bit helpers (include/linux/bitops.h, log2.h) ------------------------------------------------

cdef inline unsigned long fls_long(unsigned long x) noexcept nogil:
    return 0 if x == 0 else <unsigned long>(64 - __builtin_clzl(x))


cdef inline unsigned long order_base_2(unsigned long n) noexcept nogil:
    """``order_base_2()``: ceil(log2(n)); 0 for n <= 1, as the kernel's."""
    return fls_long(n - 1) if n > 1 else 0


cdef inline unsigned long roundup_pow_of_two(unsigned long n) noexcept nogil:
    """``roundup_pow_of_two()``: 1 for n <= 1."""
    return 1UL << fls_long(n - 1) if n > 1 else 1


cdef inline void prefetch_range(const char *addr, uint64_t len, bint write) noexcept nogil:
    """``prefetch_range()`` (include/linux/prefetch.h), with ``prefetchw`` when ``write``: each
    cache line of ``[addr, addr + len)`` (the kernel strides 4 lines on x86 and leaves the
    rest to the hardware). The caller's barrier keeps it (see ``__sk_prefetch_batch()``)."""
    cdef const char *end = addr + len
    while addr < end:
        if write:
            prefetchw(addr)
        else:
            prefetch(addr)
        addr += SMP_CACHE_BYTES


cdef inline bint netmem_is_net_iov(netmem_ref netmem) noexcept nogil:
    return netmem & NET_IOV


cdef inline nm_desc *__netmem_desc(nm_machine *m, netmem_ref netmem) noexcept nogil:
    """The shared descriptor of a page or net_iov (``__netmem_clear_lsb()``)."""
    return (m.niovs if netmem & NET_IOV else m.pages) + (netmem >> 1)


cdef inline netmem_ref page_to_netmem(uint64_t pfn) noexcept nogil:
    return pfn << 1


cdef inline uint64_t netmem_pfn(netmem_ref netmem) noexcept nogil:
    return netmem >> 1


cdef inline netmem_ref netmem_compound_head(nm_machine *m, netmem_ref netmem) noexcept nogil:
    """Models ``netmem_compound_head()``: a tail page resolves to its head, a net_iov to itself."""
    if netmem & NET_IOV:
        return netmem
    cdef nm_desc *d = &m.pages[netmem >> 1]
    if d.flags & NM_PG_TAIL:
        return page_to_netmem(d.owner)
    return netmem


cdef inline int netmem_ref_count(nm_machine *m, netmem_ref netmem) noexcept nogil:
    """Models ``netmem_ref_count()``: a net_iov always reads 1."""
    if netmem & NET_IOV:
        return 1
    return m.pages[netmem >> 1].refcount


cdef inline bint netmem_is_pfmemalloc(nm_desc *d, netmem_ref netmem) noexcept nogil:
    if netmem & NET_IOV:
        return False
    return d.flags & NM_PG_PFMEMALLOC


cdef inline int numa_mem_id(nm_machine *m) noexcept nogil:
    return m.cpu_nid[m.cpu]


cdef inline bint netmem_is_pref_nid(nm_machine *m, netmem_ref netmem, int pref_nid) noexcept nogil:
    """Models ``netmem_is_pref_nid()``: a net_iov always matches."""
    if netmem & NET_IOV:
        return True
    return m.pages[netmem >> 1].nid == pref_nid


cdef inline uint64_t netmem_phys(nm_machine *m, netmem_ref netmem) noexcept nogil:
    """Physical address of a page (pfn << PAGE_SHIFT); net_iovs have none here (0)."""
    if netmem & NET_IOV:
        return 0
    return (netmem >> 1) << PAGE_SHIFT


cdef inline uint64_t __netmem_buf_size(nm_machine *m, netmem_ref netmem) noexcept nogil:
    """Bytes behind a netmem: a net_iov's size (its area's ``niov_shift``), a page's
    ``PAGE_SIZE << order`` (a compound head's order)."""
    cdef nm_desc *d = __netmem_desc(m, netmem)
    if netmem & NET_IOV:
        return 1ULL << m.areas[d.owner].niov_shift
    return PAGE_SIZE << d.order


cdef inline bint netmem_valid(nm_machine *m, netmem_ref netmem) noexcept nogil:
    """Whether a ref names an existing descriptor (the facade refuses anything else)."""
    if netmem == 0:
        return False
    if netmem & NET_IOV:    # index 0 is never handed out: ref 1 is NULL | NET_IOV
        return 0 < (netmem >> 1) < m.nr_niovs
    return (netmem >> 1) < m.npages


cdef inline void nm_warn(nm_machine *m, int code, uint32_t pool_id, netmem_ref netmem,
                         int64_t val) noexcept nogil:
    """Record a kernel WARN for the Python boundary to raise as a NetmemWarning."""
    cdef nm_warn_rec *w
    if m.nr_warn >= 64:
        m.nr_warn_lost += 1
        return
    w = &m.warn[m.nr_warn]
    w.code = code
    w.pool_id = pool_id
    w.netmem = netmem
    w.val = val
    m.nr_warn += 1


cdef void __nm_trace(nm_machine *m, uint32_t type, uint32_t pool_id, netmem_ref netmem,
                     int64_t a, int64_t b, int64_t c) noexcept nogil:
    """Record one event in the trace ring, at the poll's frame time (``trace_ts``) or the clock;
    a full ring drops it and counts it."""
    cdef nm_trace_rec *t
    if m.trace_n == m.trace_cap:
        m.trace_dropped += 1
        return
    t = &m.trace_buf[m.trace_n]
    t.ts_ns = m.trace_ts if m.trace_ts else m.clock_ns
    t.type = type
    t.pool_id = pool_id
    t.cpu = m.cpu
    t.queue = m.trace_queue
    t.netmem = netmem
    t.a = a
    t.b = b
    t.c = c
    m.trace_n += 1


cdef inline void nm_trace(nm_machine *m, uint32_t type, uint32_t pool_id, netmem_ref netmem,
                          int64_t a, int64_t b, int64_t c) noexcept nogil:
    if unlikely(m.trace_mask & type):
        __nm_trace(m, type, pool_id, netmem, a, b, c)


cdef inline uint32_t nm_xorshift32(uint32_t *state) noexcept nogil:
    """The next value of a xorshift32 generator (Marsaglia); ``*state`` must not be 0."""
    cdef uint32_t x = state[0]
    x ^= x << 13
    x ^= x >> 17
    x ^= x << 5
    state[0] = x
    return x


cdef inline bint should_fail(nm_fault_attr *attr) noexcept nogil:
    """Models ``should_fail_ex()`` of lib/fault-inject.c for the attributes the model keeps
    (no task filter, stack trace, space or fail-nth): probability 0 or no times left never
    fails; with an interval above 1 only every interval-th call may; then it fails with the
    given probability in percent (``get_random_u32_below(100)``), and a finite ``times``
    counts down."""
    if attr.probability == 0 or attr.times == 0:
        return False
    if attr.interval > 1:
        attr.count += 1
        if attr.count % attr.interval:
            return False
    if attr.probability <= nm_xorshift32(&attr.rng) % 100:
        return False
    if attr.times != -1:
        attr.times -= 1
    attr.failures += 1
    return True
