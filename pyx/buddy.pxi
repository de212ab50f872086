# The buddy page allocator: one zone per NUMA node, orders 0 to MAX_PAGE_ORDER.
#
# Models mm/page_alloc.c: __rmqueue_smallest() with expand() (the upper halves go back to the head
# of their free lists), __free_one_page() with buddy merging and the buddy_merge_likely() tail
# placement, boot-time freeing to the tail (FPI_TO_TAIL) in the largest aligned blocks
# (__free_pages_memory()), compound pages for order > 0 (__GFP_COMP), page _refcount.
# Departs: no per-CPU page lists (pcp), no migratetypes or watermarks, one zone per node; a
# preferred node that is empty falls back to the other nodes in id order.


cdef inline bint page_is_buddy(nm_machine *m, nm_node *n, uint64_t pfn, int order) noexcept nogil:
    if pfn < n.start_pfn or pfn >= n.end_pfn:
        return False
    cdef nm_desc *d = &m.pages[pfn]
    return (d.flags & NM_PG_BUDDY) and d.order == order


cdef inline void __del_page_from_free_list(nm_machine *m, nm_node *n, uint64_t pfn,
                                           int order) noexcept nogil:
    cdef nm_desc *d = &m.pages[pfn]
    if d.prev != NM_NIL:
        m.pages[d.prev].next = d.next
    else:
        n.free_head[order] = d.next
    if d.next != NM_NIL:
        m.pages[d.next].prev = d.prev
    else:
        n.free_tail[order] = d.prev
    d.flags &= ~NM_PG_BUDDY
    n.nr_free[order] -= 1


cdef inline void __add_to_free_list(nm_machine *m, nm_node *n, uint64_t pfn, int order,
                                    bint tail) noexcept nogil:
    cdef nm_desc *d = &m.pages[pfn]
    d.flags = NM_PG_BUDDY
    d.nid = <uint8_t>(n - m.nodes)
    d.order = order
    d.refcount = 0
    if tail:
        d.next = NM_NIL
        d.prev = n.free_tail[order]
        if d.prev != NM_NIL:
            m.pages[d.prev].next = <uint32_t>pfn
        else:
            n.free_head[order] = <uint32_t>pfn
        n.free_tail[order] = <uint32_t>pfn
    else:
        d.prev = NM_NIL
        d.next = n.free_head[order]
        if d.next != NM_NIL:
            m.pages[d.next].prev = <uint32_t>pfn
        else:
            n.free_tail[order] = <uint32_t>pfn
        n.free_head[order] = <uint32_t>pfn
    n.nr_free[order] += 1


cdef inline bint buddy_merge_likely(nm_machine *m, nm_node *n, uint64_t pfn, uint64_t buddy_pfn,
                                    int order) noexcept nogil:
    """Models ``buddy_merge_likely()``: free to the tail when the next-order buddy is free."""
    if order >= MAX_PAGE_ORDER - 1:
        return False
    cdef uint64_t higher = buddy_pfn & pfn
    return page_is_buddy(m, n, higher ^ (1ULL << (order + 1)), order + 1)


cdef void __free_one_page(nm_machine *m, uint64_t pfn, int order, bint fpi_to_tail) noexcept nogil:
    """Models ``__free_one_page()``: merge with free buddies, then list the block."""
    cdef nm_node *n = &m.nodes[m.pages[pfn].nid]
    cdef uint64_t buddy_pfn = pfn ^ (1ULL << order)
    cdef bint to_tail
    while order < MAX_PAGE_ORDER:
        buddy_pfn = pfn ^ (1ULL << order)
        if not page_is_buddy(m, n, buddy_pfn, order):
            break
        __del_page_from_free_list(m, n, buddy_pfn, order)
        pfn = pfn & buddy_pfn
        order += 1
    if fpi_to_tail:
        to_tail = True
    else:
        to_tail = buddy_merge_likely(m, n, pfn, buddy_pfn, order)
    __add_to_free_list(m, n, pfn, order, to_tail)


cdef uint64_t __rmqueue_smallest(nm_machine *m, nm_node *n, int order) noexcept nogil:
    """Models ``__rmqueue_smallest()`` + ``expand()``; returns a pfn or NM_NIL."""
    cdef int cur, high
    cdef uint64_t pfn
    for cur in range(order, NR_PAGE_ORDERS):
        pfn = n.free_head[cur]
        if pfn == NM_NIL:
            continue
        __del_page_from_free_list(m, n, pfn, cur)
        high = cur
        while high > order:
            high -= 1
            __add_to_free_list(m, n, pfn + (1ULL << high), high, False)
        return pfn
    return NM_NIL


cdef inline void prep_new_page(nm_machine *m, uint64_t pfn, int order) noexcept nogil:
    """Models ``post_alloc_hook()`` + ``prep_compound_page()``: refcount 1, compound tails."""
    cdef nm_desc *d = &m.pages[pfn]
    cdef uint64_t i
    d.flags = NM_PG_HEAD if order else 0
    d.order = order
    d.refcount = 1
    d.pp = NULL
    d.pp_magic = 0
    d.pp_ref_count = 0
    d.dma_addr = 0
    d.state = NM_ST_NONE
    for i in range(1, 1ULL << order):
        m.pages[pfn + i].flags = NM_PG_TAIL
        m.pages[pfn + i].owner = <uint32_t>pfn
        m.pages[pfn + i].refcount = 0


cdef uint64_t nm_alloc_pages_node(nm_machine *m, int nid, int order) noexcept nogil:
    """Models ``alloc_pages_node(nid, gfp | __GFP_COMP, order)``: a pfn, or NM_NIL."""
    cdef uint64_t pfn
    cdef int i
    if nid == NUMA_NO_NODE:
        nid = numa_mem_id(m)
    pfn = __rmqueue_smallest(m, &m.nodes[nid], order)
    i = 0
    while pfn == NM_NIL and i < m.nr_nodes:
        if i != nid:
            pfn = __rmqueue_smallest(m, &m.nodes[i], order)
        i += 1
    if pfn != NM_NIL:
        prep_new_page(m, pfn, order)
    return pfn


cdef int nm_alloc_pages_bulk_node(nm_machine *m, int nid, int nr, netmem_ref *out) noexcept nogil:
    """Models ``alloc_pages_bulk_node()``: order-0 pages from the preferred node; when not even
    the first can be had there, one page through the fallback path. Returns the count."""
    cdef int k = 0
    cdef uint64_t pfn
    if nid == NUMA_NO_NODE:
        nid = numa_mem_id(m)
    while k < nr:
        pfn = __rmqueue_smallest(m, &m.nodes[nid], 0)
        if pfn == NM_NIL:
            break
        prep_new_page(m, pfn, 0)
        out[k] = page_to_netmem(pfn)
        k += 1
    if k == 0:
        pfn = nm_alloc_pages_node(m, nid, 0)
        if pfn != NM_NIL:
            out[0] = page_to_netmem(pfn)
            k = 1
    return k


cdef inline void __free_pages(nm_machine *m, uint64_t pfn) noexcept nogil:
    cdef nm_desc *d = &m.pages[pfn]
    cdef int order = d.order if d.flags & NM_PG_HEAD else 0
    cdef uint64_t i
    for i in range(1, 1ULL << order):
        m.pages[pfn + i].flags = 0
    d.pp = NULL
    d.pp_magic = 0
    d.state = NM_ST_NONE
    __free_one_page(m, pfn, order, False)


cdef inline int nm_put_page(nm_machine *m, netmem_ref netmem) noexcept nogil:
    """Models ``put_page()`` on a head page: drop a reference, free at zero. Returns the new
    refcount, or -1 for a page whose refcount was already 0 (the caller reports it)."""
    cdef uint64_t pfn = netmem_pfn(netmem_compound_head(m, netmem))
    cdef nm_desc *d = &m.pages[pfn]
    if unlikely(d.refcount <= 0):
        return -1
    d.refcount -= 1
    if d.refcount == 0:
        __free_pages(m, pfn)
        return 0
    return d.refcount


cdef void nm_free_range_boot(nm_machine *m, int nid, uint64_t start, uint64_t end) noexcept nogil:
    """Models ``__free_pages_memory()``: largest naturally aligned blocks, FPI_TO_TAIL."""
    cdef int order
    while start < end:
        order = MAX_PAGE_ORDER
        if start:
            order = min(MAX_PAGE_ORDER, __builtin_ctzll(start))
        while start + (1ULL << order) > end:
            order -= 1
        m.pages[start].nid = nid
        __free_one_page(m, start, order, True)
        start += 1ULL << order


cdef uint64_t nm_nr_free_pages(nm_machine *m, int nid) noexcept nogil:
    cdef uint64_t total = 0
    cdef int i, o
    for i in range(m.nr_nodes):
        if nid >= 0 and i != nid:
            continue
        for o in range(NR_PAGE_ORDERS):
            total += m.nodes[i].nr_free[o] << o
    return total
