# The IOVA allocator (drivers/iommu/iova.c) and the flush queue of drivers/iommu/dma-iommu.c.
#
# Models Linux ~6.18: a tree of allocated ranges searched top-down from a cached node, the
# max32_alloc_size short-cut for full 32-bit space, size-aligned allocation, reserve_iova(); the
# per-CPU magazine cache (rcache) with its depot and the depot's delayed trim; the dma-iommu
# flush queue that keeps freed IOVAs out of the allocator until the IOTLB has been flushed.
# Every function runs without the interpreter and never raises: it returns 0, a pfn, or a
# negative errno, and bumps a counter. Departures from the kernel, each also stated where it
# happens:
# - the rbtree is a red-black tree over a node array (links are indices, not pointers); its
#   shape may differ from lib/rbtree.c's (pyx/rbtree.pxi is that one), its order and every
#   address it hands out do not; its functions carry an iova_ prefix;
# - the kernel's calls take the current CPU from the context; here the caller names it (`cpu`);
# - a CPU's two magazines per bin are allocated on its first use of the bin, not at init for
#   every possible CPU (same behaviour, less memory for 64 possible CPUs);
# - the six per-bin depot works run together when the caller runs iova_depot_trim();
# - checks the kernel does not make, with the errno they return: size 0, a pfn range with
#   pfn_lo > pfn_hi or reaching the anchor, freeing or finding the anchor;
# - the flush queue's timer is a deadline on the caller's virtual clock (ns, no jiffies
#   rounding), the IOTLB flush an optional callback, and a flush-queue entry has no page
#   freelist (no page tables in the model); iommu_dma_fq_destroy() frees what is still queued.


cdef enum:
    NM_IOVA_INIT_NODES = 64         # first node array: NIL, anchor and 62 ranges; doubles


cdef inline unsigned long iova_shift(nm_iova_domain *iovad) noexcept nogil:
    return <unsigned long>__builtin_ctzl(iovad.granule)


cdef unsigned long iova_rcache_range() noexcept nogil:
    """Models ``iova_rcache_range()``: the largest size the rcache holds, in bytes."""
    return PAGE_SIZE << (IOVA_RANGE_CACHE_MAX_SIZE - 1)


# ---- the range tree: a red-black tree over nm_iova nodes ---------------------------------------

cdef inline uint32_t iova_rb_next(nm_iova *t, uint32_t x) noexcept nogil:
    cdef uint32_t p
    if t[x].rb_right != NM_IOVA_NIL:
        x = t[x].rb_right
        while t[x].rb_left != NM_IOVA_NIL:
            x = t[x].rb_left
        return x
    p = t[x].rb_parent
    while p != NM_IOVA_NIL and x == t[p].rb_right:
        x = p
        p = t[p].rb_parent
    return p


cdef inline uint32_t iova_rb_prev(nm_iova *t, uint32_t x) noexcept nogil:
    cdef uint32_t p
    if t[x].rb_left != NM_IOVA_NIL:
        x = t[x].rb_left
        while t[x].rb_right != NM_IOVA_NIL:
            x = t[x].rb_right
        return x
    p = t[x].rb_parent
    while p != NM_IOVA_NIL and x == t[p].rb_left:
        x = p
        p = t[p].rb_parent
    return p


cdef inline void __rb_set_child(nm_iova_domain *iovad, uint32_t p, uint32_t old,
                                uint32_t new) noexcept nogil:
    cdef nm_iova *t = iovad.nodes
    if p == NM_IOVA_NIL:
        iovad.root = new
    elif t[p].rb_left == old:
        t[p].rb_left = new
    else:
        t[p].rb_right = new


cdef void __rb_rotate_left(nm_iova_domain *iovad, uint32_t x) noexcept nogil:
    cdef nm_iova *t = iovad.nodes
    cdef uint32_t y = t[x].rb_right
    t[x].rb_right = t[y].rb_left
    if t[y].rb_left != NM_IOVA_NIL:
        t[t[y].rb_left].rb_parent = x
    t[y].rb_parent = t[x].rb_parent
    __rb_set_child(iovad, t[x].rb_parent, x, y)
    t[y].rb_left = x
    t[x].rb_parent = y


cdef void __rb_rotate_right(nm_iova_domain *iovad, uint32_t x) noexcept nogil:
    cdef nm_iova *t = iovad.nodes
    cdef uint32_t y = t[x].rb_left
    t[x].rb_left = t[y].rb_right
    if t[y].rb_right != NM_IOVA_NIL:
        t[t[y].rb_right].rb_parent = x
    t[y].rb_parent = t[x].rb_parent
    __rb_set_child(iovad, t[x].rb_parent, x, y)
    t[y].rb_right = x
    t[x].rb_parent = y


cdef void __rb_insert_color(nm_iova_domain *iovad, uint32_t z) noexcept nogil:
    """Rebalance after linking red node ``z`` (``rb_insert_color()``)."""
    cdef nm_iova *t = iovad.nodes
    cdef uint32_t p, g, u
    while t[t[z].rb_parent].rb_color == NM_RB_RED:
        p = t[z].rb_parent
        g = t[p].rb_parent
        if p == t[g].rb_left:
            u = t[g].rb_right
            if t[u].rb_color == NM_RB_RED:
                t[p].rb_color = NM_RB_BLACK
                t[u].rb_color = NM_RB_BLACK
                t[g].rb_color = NM_RB_RED
                z = g
                continue
            if z == t[p].rb_right:
                z = p
                __rb_rotate_left(iovad, z)
                p = t[z].rb_parent
            t[p].rb_color = NM_RB_BLACK
            t[g].rb_color = NM_RB_RED
            __rb_rotate_right(iovad, g)
        else:
            u = t[g].rb_left
            if t[u].rb_color == NM_RB_RED:
                t[p].rb_color = NM_RB_BLACK
                t[u].rb_color = NM_RB_BLACK
                t[g].rb_color = NM_RB_RED
                z = g
                continue
            if z == t[p].rb_left:
                z = p
                __rb_rotate_right(iovad, z)
                p = t[z].rb_parent
            t[p].rb_color = NM_RB_BLACK
            t[g].rb_color = NM_RB_RED
            __rb_rotate_left(iovad, g)
    t[iovad.root].rb_color = NM_RB_BLACK


cdef inline void __rb_transplant(nm_iova_domain *iovad, uint32_t u, uint32_t v) noexcept nogil:
    """Put ``v`` where ``u`` was; ``v`` may be NIL, whose parent then records the spot."""
    cdef nm_iova *t = iovad.nodes
    __rb_set_child(iovad, t[u].rb_parent, u, v)
    t[v].rb_parent = t[u].rb_parent


cdef void __iova_rb_erase_color(nm_iova_domain *iovad, uint32_t x) noexcept nogil:
    cdef nm_iova *t = iovad.nodes
    cdef uint32_t p, w
    while x != iovad.root and t[x].rb_color == NM_RB_BLACK:
        p = t[x].rb_parent
        if x == t[p].rb_left:
            w = t[p].rb_right
            if t[w].rb_color == NM_RB_RED:
                t[w].rb_color = NM_RB_BLACK
                t[p].rb_color = NM_RB_RED
                __rb_rotate_left(iovad, p)
                w = t[p].rb_right
            if (t[t[w].rb_left].rb_color == NM_RB_BLACK
                    and t[t[w].rb_right].rb_color == NM_RB_BLACK):
                t[w].rb_color = NM_RB_RED
                x = p
                continue
            if t[t[w].rb_right].rb_color == NM_RB_BLACK:
                t[t[w].rb_left].rb_color = NM_RB_BLACK
                t[w].rb_color = NM_RB_RED
                __rb_rotate_right(iovad, w)
                w = t[p].rb_right
            t[w].rb_color = t[p].rb_color
            t[p].rb_color = NM_RB_BLACK
            t[t[w].rb_right].rb_color = NM_RB_BLACK
            __rb_rotate_left(iovad, p)
        else:
            w = t[p].rb_left
            if t[w].rb_color == NM_RB_RED:
                t[w].rb_color = NM_RB_BLACK
                t[p].rb_color = NM_RB_RED
                __rb_rotate_right(iovad, p)
                w = t[p].rb_left
            if (t[t[w].rb_right].rb_color == NM_RB_BLACK
                    and t[t[w].rb_left].rb_color == NM_RB_BLACK):
                t[w].rb_color = NM_RB_RED
                x = p
                continue
            if t[t[w].rb_left].rb_color == NM_RB_BLACK:
                t[t[w].rb_right].rb_color = NM_RB_BLACK
                t[w].rb_color = NM_RB_RED
                __rb_rotate_left(iovad, w)
                w = t[p].rb_left
            t[w].rb_color = t[p].rb_color
            t[p].rb_color = NM_RB_BLACK
            t[t[w].rb_left].rb_color = NM_RB_BLACK
            __rb_rotate_right(iovad, p)
        x = iovad.root
    t[x].rb_color = NM_RB_BLACK


cdef void iova_rb_erase(nm_iova_domain *iovad, uint32_t z) noexcept nogil:
    """Unlink node ``z`` (``rb_erase()``). Nodes keep their index: a successor that takes
    ``z``'s place is moved, not copied, so cached node indices stay valid."""
    cdef nm_iova *t = iovad.nodes
    cdef uint32_t x, y = z
    cdef uint32_t y_color = t[z].rb_color
    if t[z].rb_left == NM_IOVA_NIL:
        x = t[z].rb_right
        __rb_transplant(iovad, z, x)
    elif t[z].rb_right == NM_IOVA_NIL:
        x = t[z].rb_left
        __rb_transplant(iovad, z, x)
    else:
        y = t[z].rb_right
        while t[y].rb_left != NM_IOVA_NIL:
            y = t[y].rb_left
        y_color = t[y].rb_color
        x = t[y].rb_right
        if t[y].rb_parent == z:
            t[x].rb_parent = y
        else:
            __rb_transplant(iovad, y, x)
            t[y].rb_right = t[z].rb_right
            t[t[y].rb_right].rb_parent = y
        __rb_transplant(iovad, z, y)
        t[y].rb_left = t[z].rb_left
        t[t[y].rb_left].rb_parent = y
        t[y].rb_color = t[z].rb_color
    if y_color == NM_RB_BLACK:
        __iova_rb_erase_color(iovad, x)
    t[NM_IOVA_NIL].rb_parent = NM_IOVA_NIL
    t[NM_IOVA_NIL].rb_color = NM_RB_BLACK


# ---- struct iova slab ---------------------------------------------------------------------------

cdef uint32_t alloc_iova_mem(nm_iova_domain *iovad) noexcept nogil:
    """Models ``alloc_iova_mem()``: a free node index, or NIL. May move ``iovad.nodes``."""
    cdef uint32_t n = iovad.free_node
    cdef uint32_t cap
    cdef void *p
    if n != NM_IOVA_NIL:
        iovad.free_node = iovad.nodes[n].rb_right
        return n
    if unlikely(iovad.nr_nodes == iovad.cap_nodes):
        if iovad.cap_nodes >= 0x80000000u:
            return NM_IOVA_NIL
        cap = iovad.cap_nodes * 2
        p = realloc(iovad.nodes, cap * sizeof(nm_iova))
        if p == NULL:
            return NM_IOVA_NIL
        iovad.nodes = <nm_iova *>p
        iovad.cap_nodes = cap
    n = iovad.nr_nodes
    iovad.nr_nodes += 1
    return n


cdef inline void free_iova_mem(nm_iova_domain *iovad, uint32_t n) noexcept nogil:
    if n == NM_IOVA_ANCHOR_NODE:
        return
    iovad.nodes[n].rb_right = iovad.free_node
    iovad.free_node = n


# ---- the allocator ------------------------------------------------------------------------------

cdef int init_iova_domain(nm_iova_domain *iovad, unsigned long granule,
                          unsigned long start_pfn) noexcept nogil:
    """Models ``init_iova_domain()`` and ``iova_domain_init_rcaches()``: 0, -EINVAL for a granule
    that is not a power of two up to PAGE_SIZE (the kernel's BUG_ON), or -ENOMEM. ``iovad`` is
    overwritten: it must be new or put."""
    cdef nm_iova *t
    cdef int i
    memset(iovad, 0, sizeof(nm_iova_domain))
    if granule == 0 or granule > PAGE_SIZE or granule & (granule - 1):
        return -EINVAL
    t = <nm_iova *>malloc(NM_IOVA_INIT_NODES * sizeof(nm_iova))
    if t == NULL:
        return -ENOMEM
    memset(t, 0, 2 * sizeof(nm_iova))
    t[NM_IOVA_NIL].rb_color = NM_RB_BLACK
    t[NM_IOVA_ANCHOR_NODE].pfn_lo = IOVA_ANCHOR
    t[NM_IOVA_ANCHOR_NODE].pfn_hi = IOVA_ANCHOR
    t[NM_IOVA_ANCHOR_NODE].rb_color = NM_RB_BLACK
    iovad.nodes = t
    iovad.cap_nodes = NM_IOVA_INIT_NODES
    iovad.nr_nodes = 2
    iovad.root = NM_IOVA_ANCHOR_NODE
    iovad.cached_node = NM_IOVA_ANCHOR_NODE
    iovad.cached32_node = NM_IOVA_ANCHOR_NODE
    iovad.granule = granule
    iovad.start_pfn = start_pfn
    iovad.dma_32bit_pfn = 1UL << (32 - iova_shift(iovad))
    iovad.max32_alloc_size = iovad.dma_32bit_pfn
    for i in range(IOVA_RANGE_CACHE_MAX_SIZE):
        iovad.rcaches[i].cpu_rcaches = <nm_iova_cpu_rcache *>calloc(
            NM_MAX_CPUS, sizeof(nm_iova_cpu_rcache))
        if iovad.rcaches[i].cpu_rcaches == NULL:
            put_iova_domain(iovad)
            return -ENOMEM
    return 0


cdef inline uint32_t __get_cached_rbnode(nm_iova_domain *iovad,
                                         unsigned long limit_pfn) noexcept nogil:
    if limit_pfn <= iovad.dma_32bit_pfn:
        return iovad.cached32_node
    return iovad.cached_node


cdef inline void __cached_rbnode_insert_update(nm_iova_domain *iovad,
                                               uint32_t new) noexcept nogil:
    if iovad.nodes[new].pfn_hi < iovad.dma_32bit_pfn:
        iovad.cached32_node = new
    else:
        iovad.cached_node = new


cdef void __cached_rbnode_delete_update(nm_iova_domain *iovad, uint32_t free_) noexcept nogil:
    """Models ``__cached_rbnode_delete_update()``: a freed range at or above a cached node
    moves that cache up to the range's successor; any free below 4 GiB re-opens 32-bit space."""
    cdef nm_iova *t = iovad.nodes
    cdef nm_iova *cached_iova = &t[iovad.cached32_node]
    if free_ == iovad.cached32_node or (t[free_].pfn_hi < iovad.dma_32bit_pfn
                                        and t[free_].pfn_lo >= cached_iova.pfn_lo):
        iovad.cached32_node = iova_rb_next(t, free_)
    if t[free_].pfn_lo < iovad.dma_32bit_pfn:
        iovad.max32_alloc_size = iovad.dma_32bit_pfn
    cached_iova = &t[iovad.cached_node]
    if t[free_].pfn_lo >= cached_iova.pfn_lo:
        iovad.cached_node = iova_rb_next(t, free_)


cdef uint32_t iova_find_limit(nm_iova_domain *iovad, unsigned long limit_pfn) noexcept nogil:
    """Models ``iova_find_limit()``: where the second walk starts, the anchor above 4 GiB, else
    the lowest node at or straddling ``limit_pfn``, found by the kernel's own descent."""
    cdef nm_iova *t = iovad.nodes
    cdef uint32_t node, nxt
    cdef bint moved
    if limit_pfn > iovad.dma_32bit_pfn:
        return NM_IOVA_ANCHOR_NODE
    node = iovad.root
    while t[node].pfn_hi < limit_pfn:
        node = t[node].rb_right
    while True:     # search_left:
        while t[node].rb_left != NM_IOVA_NIL and t[t[node].rb_left].pfn_lo >= limit_pfn:
            node = t[node].rb_left
        if t[node].rb_left == NM_IOVA_NIL:
            return node
        nxt = t[node].rb_left
        moved = False
        while t[nxt].rb_right != NM_IOVA_NIL:
            nxt = t[nxt].rb_right
            if t[nxt].pfn_lo >= limit_pfn:
                node = nxt
                moved = True
                break
        if not moved:
            return node


cdef int iova_insert_rbtree(nm_iova_domain *iovad, uint32_t new, uint32_t start) noexcept nogil:
    """Models ``iova_insert_rbtree()``: descend from ``start`` (the allocator's ``prev``, whose
    left subtree holds the spot) or from the root, link, rebalance. -EEXIST for a duplicate
    pfn_lo (the kernel's WARN_ON)."""
    cdef nm_iova *t = iovad.nodes
    cdef uint32_t x = start if start != NM_IOVA_NIL else iovad.root
    cdef uint32_t parent = NM_IOVA_NIL
    cdef unsigned long lo = t[new].pfn_lo
    cdef bint left = False
    while x != NM_IOVA_NIL:
        parent = x
        if lo < t[x].pfn_lo:
            x = t[x].rb_left
            left = True
        elif lo > t[x].pfn_lo:
            x = t[x].rb_right
            left = False
        else:
            return -EEXIST
    t[new].rb_parent = parent
    t[new].rb_left = NM_IOVA_NIL
    t[new].rb_right = NM_IOVA_NIL
    t[new].rb_color = NM_RB_RED
    if parent == NM_IOVA_NIL:
        iovad.root = new
    elif left:
        t[parent].rb_left = new
    else:
        t[parent].rb_right = new
    __rb_insert_color(iovad, new)
    iovad.nr_ranges += 1
    return 0


cdef int __alloc_and_insert_iova_range(nm_iova_domain *iovad, unsigned long size,
                                       unsigned long limit_pfn, uint32_t new,
                                       bint size_aligned) noexcept nogil:
    """Models ``__alloc_and_insert_iova_range()``; ``limit_pfn`` is exclusive here. Walk down
    from the cached node to the first gap that takes ``size`` (aligned down to
    roundup_pow_of_two(size) when ``size_aligned``); failing that, once, walk again from
    ``limit_pfn`` down to the range above the first walk's start. A failure records ``size`` in
    max32_alloc_size (for any limit, as the kernel does)."""
    cdef nm_iova *t = iovad.nodes
    cdef uint32_t curr, prev
    cdef unsigned long new_pfn, retry_pfn, shift
    cdef unsigned long align_mask = ~0UL
    cdef unsigned long high_pfn = limit_pfn
    cdef unsigned long low_pfn = iovad.start_pfn
    if size_aligned:
        shift = fls_long(size - 1)
        align_mask = align_mask << shift if shift < 64 else 0
    if limit_pfn <= iovad.dma_32bit_pfn and size >= iovad.max32_alloc_size:
        iovad.max32_shortcuts += 1
        return -ENOMEM
    curr = __get_cached_rbnode(iovad, limit_pfn)
    retry_pfn = t[curr].pfn_hi
    while True:     # retry:
        while True:
            high_pfn = min(high_pfn, t[curr].pfn_lo)
            new_pfn = (high_pfn - size) & align_mask
            prev = curr
            curr = iova_rb_prev(t, curr)
            if not (curr != NM_IOVA_NIL and new_pfn <= t[curr].pfn_hi and new_pfn >= low_pfn):
                break
        if high_pfn >= size and new_pfn >= low_pfn:
            break
        if low_pfn == iovad.start_pfn and retry_pfn < limit_pfn:
            high_pfn = limit_pfn
            low_pfn = retry_pfn + 1
            curr = iova_find_limit(iovad, limit_pfn)
            iovad.alloc_retries += 1
            continue
        iovad.max32_alloc_size = size
        return -ENOMEM
    t[new].pfn_lo = new_pfn
    t[new].pfn_hi = new_pfn + size - 1
    if iova_insert_rbtree(iovad, new, prev):
        return -EEXIST
    __cached_rbnode_insert_update(iovad, new)
    return 0


cdef int alloc_iova(nm_iova_domain *iovad, unsigned long size, unsigned long limit_pfn,
                    bint size_aligned, unsigned long *pfn_lo_out) noexcept nogil:
    """Models ``alloc_iova()``: a range of ``size`` pfns at or below ``limit_pfn`` (inclusive),
    searched top-down; ``pfn_lo_out`` gets its first pfn. 0, or -ENOMEM; -EINVAL for size 0
    (the kernel's callers never pass it)."""
    cdef uint32_t n
    cdef int ret
    if unlikely(size == 0):
        return -EINVAL
    n = alloc_iova_mem(iovad)
    if unlikely(n == NM_IOVA_NIL):
        iovad.alloc_failures += 1
        return -ENOMEM
    ret = __alloc_and_insert_iova_range(iovad, size, limit_pfn + 1, n, size_aligned)
    if unlikely(ret):
        free_iova_mem(iovad, n)
        iovad.alloc_failures += 1
        return -ENOMEM
    if pfn_lo_out != NULL:
        pfn_lo_out[0] = iovad.nodes[n].pfn_lo
    return 0


cdef inline uint32_t private_find_iova(nm_iova_domain *iovad, unsigned long pfn) noexcept nogil:
    """Models ``private_find_iova()``: the node whose range holds ``pfn``, or NIL. Departs:
    never the anchor (the kernel would hand it out for pfn ~0UL)."""
    cdef nm_iova *t = iovad.nodes
    cdef uint32_t node = iovad.root
    while node != NM_IOVA_NIL:
        if pfn < t[node].pfn_lo:
            node = t[node].rb_left
        elif pfn > t[node].pfn_hi:
            node = t[node].rb_right
        else:
            return node if node != NM_IOVA_ANCHOR_NODE else NM_IOVA_NIL
    return NM_IOVA_NIL


cdef inline void remove_iova(nm_iova_domain *iovad, uint32_t n) noexcept nogil:
    __cached_rbnode_delete_update(iovad, n)
    iova_rb_erase(iovad, n)
    iovad.nr_ranges -= 1


cdef int find_iova(nm_iova_domain *iovad, unsigned long pfn, unsigned long *lo,
                   unsigned long *hi) noexcept nogil:
    """Models ``find_iova()``: the range holding ``pfn`` into ``lo``/``hi`` (either may be NULL);
    0, or -ENOENT."""
    cdef uint32_t n = private_find_iova(iovad, pfn)
    if n == NM_IOVA_NIL:
        return -ENOENT
    if lo != NULL:
        lo[0] = iovad.nodes[n].pfn_lo
    if hi != NULL:
        hi[0] = iovad.nodes[n].pfn_hi
    return 0


cdef int free_iova(nm_iova_domain *iovad, unsigned long pfn) noexcept nogil:
    """Models ``free_iova()``: free the range holding ``pfn``; -ENOENT when none does (the
    kernel returns silently)."""
    cdef uint32_t n = private_find_iova(iovad, pfn)
    if n == NM_IOVA_NIL:
        return -ENOENT
    remove_iova(iovad, n)
    free_iova_mem(iovad, n)
    return 0


cdef int reserve_iova(nm_iova_domain *iovad, unsigned long pfn_lo,
                      unsigned long pfn_hi) noexcept nogil:
    """Models ``reserve_iova()``: keep [pfn_lo, pfn_hi] from the allocator. An existing range
    it overlaps is widened down to ``pfn_lo`` and the rest continues above it, as the kernel
    merges; only what no range covers becomes a new range (the cached nodes are not touched).
    0, -ENOMEM, or -EINVAL for pfns beyond the address space (the kernel's WARN_ON), and
    (departs) for pfn_lo > pfn_hi or a range reaching the anchor. Departs: the walk starts at
    the first range that can overlap instead of rb_first(), and stops past pfn_hi; the result is
    the same."""
    cdef nm_iova *t = iovad.nodes
    cdef uint32_t node, n
    cdef bint overlap = False
    if ((pfn_hi | pfn_lo) > (<unsigned long>-1 >> iova_shift(iovad)) or pfn_lo > pfn_hi
            or pfn_hi >= IOVA_ANCHOR):
        return -EINVAL
    # The lowest range with pfn_hi >= pfn_lo: every range below it ends below pfn_lo.
    node = iovad.root
    n = NM_IOVA_NIL
    while node != NM_IOVA_NIL:
        if t[node].pfn_hi >= pfn_lo:
            n = node
            node = t[node].rb_left
        else:
            node = t[node].rb_right
    node = n
    while node != NM_IOVA_NIL:
        if pfn_lo <= t[node].pfn_hi and pfn_hi >= t[node].pfn_lo:     # __is_range_overlap()
            if pfn_lo < t[node].pfn_lo:                                 # __adjust_overlap_range()
                t[node].pfn_lo = pfn_lo
            if pfn_hi > t[node].pfn_hi:
                pfn_lo = t[node].pfn_hi + 1
            if pfn_lo >= t[node].pfn_lo and pfn_hi <= t[node].pfn_hi:
                return 0
            overlap = True
        elif overlap or t[node].pfn_lo > pfn_hi:
            break
        node = iova_rb_next(t, node)
    n = alloc_iova_mem(iovad)                                           # __insert_new_range()
    if n == NM_IOVA_NIL:
        return -ENOMEM
    t = iovad.nodes
    t[n].pfn_lo = pfn_lo
    t[n].pfn_hi = pfn_hi
    if iova_insert_rbtree(iovad, n, NM_IOVA_NIL):
        free_iova_mem(iovad, n)
        return -EEXIST
    return 0


# ---- rcache: per-CPU magazines and the depot ---------------------------------------------------

cdef nm_iova_magazine *iova_magazine_alloc(nm_iova_domain *iovad) noexcept nogil:
    """Models ``iova_magazine_alloc()``: an empty magazine from the domain's free list (the
    kmem_cache), else malloc; NULL when memory runs out."""
    cdef nm_iova_magazine *mag = iovad.mag_free
    if mag != NULL:
        iovad.mag_free = mag.next
    else:
        mag = <nm_iova_magazine *>malloc(sizeof(nm_iova_magazine))
        if mag == NULL:
            return NULL
        iovad.nr_magazines += 1
    mag.size = 0
    mag.next = NULL
    return mag


cdef inline void iova_magazine_free(nm_iova_domain *iovad, nm_iova_magazine *mag) noexcept nogil:
    if mag != NULL:
        mag.next = iovad.mag_free
        iovad.mag_free = mag


cdef void iova_magazine_free_pfns(nm_iova_magazine *mag, nm_iova_domain *iovad) noexcept nogil:
    """Models ``iova_magazine_free_pfns()``: return every range of the magazine to the tree."""
    cdef unsigned long i
    cdef uint32_t n
    for i in range(mag.size):
        n = private_find_iova(iovad, mag.pfns[i])
        if n == NM_IOVA_NIL:
            iovad.warn_missing += 1     # WARN_ON(!iova)
            continue
        remove_iova(iovad, n)
        free_iova_mem(iovad, n)
    mag.size = 0


cdef inline bint iova_magazine_full(nm_iova_magazine *mag) noexcept nogil:
    return mag.size == IOVA_MAG_SIZE


cdef inline bint iova_magazine_empty(nm_iova_magazine *mag) noexcept nogil:
    return mag.size == 0


cdef inline unsigned long iova_magazine_pop(nm_iova_magazine *mag,
                                            unsigned long limit_pfn) noexcept nogil:
    """Models ``iova_magazine_pop()``: the topmost pfn at or below ``limit_pfn``, its slot
    filled by the last one; 0 when none fits (then the tree is asked)."""
    cdef long i = <long>mag.size - 1
    cdef unsigned long pfn
    while mag.pfns[i] > limit_pfn:
        if i == 0:
            return 0
        i -= 1
    pfn = mag.pfns[i]
    mag.size -= 1
    mag.pfns[i] = mag.pfns[mag.size]
    return pfn


cdef inline void iova_magazine_push(nm_iova_magazine *mag, unsigned long pfn) noexcept nogil:
    mag.pfns[mag.size] = pfn
    mag.size += 1


cdef inline nm_iova_magazine *iova_depot_pop(nm_iova_rcache *rcache) noexcept nogil:
    cdef nm_iova_magazine *mag = rcache.depot
    rcache.depot = mag.next
    mag.size = IOVA_MAG_SIZE
    rcache.depot_size -= 1
    return mag


cdef inline void iova_depot_push(nm_iova_rcache *rcache, nm_iova_magazine *mag) noexcept nogil:
    mag.next = rcache.depot
    rcache.depot = mag
    rcache.depot_size += 1


cdef nm_iova_cpu_rcache *__iova_cpu_rcache(nm_iova_domain *iovad, nm_iova_rcache *rcache,
                                           int cpu) noexcept nogil:
    """``per_cpu_ptr(rcache->cpu_rcaches, cpu)``, with its two magazines. Departs: they are
    allocated on the CPU's first use of the bin (the kernel does it at init for every possible
    CPU); NULL if that fails."""
    cdef nm_iova_cpu_rcache *cpu_rcache = &rcache.cpu_rcaches[cpu]
    if unlikely(cpu_rcache.loaded == NULL):
        cpu_rcache.loaded = iova_magazine_alloc(iovad)
        cpu_rcache.prev = iova_magazine_alloc(iovad)
        if cpu_rcache.loaded == NULL or cpu_rcache.prev == NULL:
            iova_magazine_free(iovad, cpu_rcache.loaded)
            iova_magazine_free(iovad, cpu_rcache.prev)
            cpu_rcache.loaded = NULL
            cpu_rcache.prev = NULL
            return NULL
    return cpu_rcache


cdef bint __iova_rcache_insert(nm_iova_domain *iovad, nm_iova_rcache *rcache,
                               unsigned long iova_pfn, int cpu) noexcept nogil:
    """Models ``__iova_rcache_insert()``: into the loaded magazine; if full, swap in prev; if
    both are full, the loaded one goes to the depot (scheduling the depot work) and a new one
    is loaded."""
    cdef nm_iova_cpu_rcache *cpu_rcache = __iova_cpu_rcache(iovad, rcache, cpu)
    cdef nm_iova_magazine *mag
    if unlikely(cpu_rcache == NULL):
        return False
    if not iova_magazine_full(cpu_rcache.loaded):
        pass
    elif not iova_magazine_full(cpu_rcache.prev):
        mag = cpu_rcache.prev
        cpu_rcache.prev = cpu_rcache.loaded
        cpu_rcache.loaded = mag
        iovad.mag_swaps += 1
    else:
        mag = iova_magazine_alloc(iovad)
        if mag == NULL:
            return False
        iova_depot_push(rcache, cpu_rcache.loaded)
        iovad.depot_pushes += 1
        rcache.work_pending = 1         # schedule_delayed_work(&rcache->work, IOVA_DEPOT_DELAY)
        cpu_rcache.loaded = mag
    iova_magazine_push(cpu_rcache.loaded, iova_pfn)
    return True


cdef inline bint iova_rcache_insert(nm_iova_domain *iovad, unsigned long pfn, unsigned long size,
                                    int cpu) noexcept nogil:
    cdef unsigned long log_size = order_base_2(size)
    if log_size >= IOVA_RANGE_CACHE_MAX_SIZE:
        return False
    return __iova_rcache_insert(iovad, &iovad.rcaches[log_size], pfn, cpu)


cdef unsigned long __iova_rcache_get(nm_iova_domain *iovad, nm_iova_rcache *rcache,
                                     unsigned long limit_pfn, int cpu) noexcept nogil:
    """Models ``__iova_rcache_get()``: from the loaded magazine; if empty, swap in prev; if both
    are empty, load a full one from the depot. Only the loaded magazine is searched."""
    cdef nm_iova_cpu_rcache *cpu_rcache = __iova_cpu_rcache(iovad, rcache, cpu)
    cdef nm_iova_magazine *mag
    if unlikely(cpu_rcache == NULL):
        return 0
    if not iova_magazine_empty(cpu_rcache.loaded):
        pass
    elif not iova_magazine_empty(cpu_rcache.prev):
        mag = cpu_rcache.prev
        cpu_rcache.prev = cpu_rcache.loaded
        cpu_rcache.loaded = mag
        iovad.mag_swaps += 1
    elif rcache.depot != NULL:
        iova_magazine_free(iovad, cpu_rcache.loaded)
        cpu_rcache.loaded = iova_depot_pop(rcache)
        iovad.depot_pops += 1
    else:
        return 0
    return iova_magazine_pop(cpu_rcache.loaded, limit_pfn)


cdef inline unsigned long iova_rcache_get(nm_iova_domain *iovad, unsigned long size,
                                          unsigned long limit_pfn, int cpu) noexcept nogil:
    """Models ``iova_rcache_get()``; ``limit_pfn`` is exclusive."""
    cdef unsigned long log_size = order_base_2(size)
    if log_size >= IOVA_RANGE_CACHE_MAX_SIZE:
        return 0
    return __iova_rcache_get(iovad, &iovad.rcaches[log_size], limit_pfn - size, cpu)


cdef void free_cpu_cached_iovas(int cpu, nm_iova_domain *iovad) noexcept nogil:
    """Models ``free_cpu_cached_iovas()``: a CPU's magazines back to the tree."""
    cdef nm_iova_cpu_rcache *cpu_rcache
    cdef int i
    for i in range(IOVA_RANGE_CACHE_MAX_SIZE):
        cpu_rcache = &iovad.rcaches[i].cpu_rcaches[cpu]
        if cpu_rcache.loaded != NULL:
            iova_magazine_free_pfns(cpu_rcache.loaded, iovad)
            iova_magazine_free_pfns(cpu_rcache.prev, iovad)


cdef void free_global_cached_iovas(nm_iova_domain *iovad) noexcept nogil:
    """Models ``free_global_cached_iovas()``: every depot back to the tree."""
    cdef nm_iova_rcache *rcache
    cdef nm_iova_magazine *mag
    cdef int i
    for i in range(IOVA_RANGE_CACHE_MAX_SIZE):
        rcache = &iovad.rcaches[i]
        while rcache.depot != NULL:
            mag = iova_depot_pop(rcache)
            iova_magazine_free_pfns(mag, iovad)
            iova_magazine_free(iovad, mag)


cdef unsigned long alloc_iova_fast(nm_iova_domain *iovad, unsigned long size,
                                   unsigned long limit_pfn, bint flush_rcache,
                                   int cpu) noexcept nogil:
    """Models ``alloc_iova_fast()`` on ``cpu``: sizes below 32 pages round up to a power of two;
    the rcache first, then a size-aligned ``alloc_iova()``; when that fails and ``flush_rcache``
    is set, every CPU's magazines and the depots go back to the tree and the tree is asked once
    more. The first pfn, or 0. Departs: size 0 gives 0 (the kernel's roundup is undefined), and
    a ``cpu`` outside 0..NM_MAX_CPUS-1 skips the rcache."""
    cdef unsigned long iova_pfn = 0
    cdef int c
    if unlikely(size == 0):
        return 0
    if size < (1 << (IOVA_RANGE_CACHE_MAX_SIZE - 1)):
        size = roundup_pow_of_two(size)
    if likely(<unsigned int>cpu < <unsigned int>NM_MAX_CPUS):
        iova_pfn = iova_rcache_get(iovad, size, limit_pfn + 1, cpu)
        if likely(iova_pfn != 0):
            iovad.rcache_hits += 1
            return iova_pfn
    iovad.rcache_misses += 1
    while alloc_iova(iovad, size, limit_pfn, True, &iova_pfn):
        if not flush_rcache:
            return 0
        flush_rcache = False
        iovad.rcache_flushes += 1
        for c in range(NM_MAX_CPUS):    # for_each_online_cpu(): unused CPUs hold nothing
            free_cpu_cached_iovas(c, iovad)
        free_global_cached_iovas(iovad)
    return iova_pfn


cdef void free_iova_fast(nm_iova_domain *iovad, unsigned long pfn, unsigned long size,
                         int cpu) noexcept nogil:
    """Models ``free_iova_fast()`` on ``cpu``: into the rcache bin of order_base_2(size), else
    ``free_iova()``. Trusts its caller as the kernel does: ``pfn`` must start a range of the
    size ``alloc_iova_fast(size)`` gave (the facade checks it)."""
    if (likely(<unsigned int>cpu < <unsigned int>NM_MAX_CPUS)
            and iova_rcache_insert(iovad, pfn, size, cpu)):
        iovad.rcache_inserts += 1
        return
    iovad.rcache_fallbacks += 1
    free_iova(iovad, pfn)


cdef void iova_depot_trim(nm_iova_domain *iovad, int num_online_cpus) noexcept nogil:
    """Models one run of ``iova_depot_work_func()`` for each bin whose work is scheduled: a
    depot holding more than ``num_online_cpus`` magazines gives one back to the tree and the
    work runs again 100 ms later; otherwise the work stops. Departs: the kernel's six works run
    on their own timers; the caller runs them together every IOVA_DEPOT_DELAY_MS while
    ``iova_depot_work_pending()``."""
    cdef nm_iova_rcache *rcache
    cdef nm_iova_magazine *mag
    cdef int i
    for i in range(IOVA_RANGE_CACHE_MAX_SIZE):
        rcache = &iovad.rcaches[i]
        if not rcache.work_pending:
            continue
        if num_online_cpus >= 0 and rcache.depot_size > <uint32_t>num_online_cpus:
            mag = iova_depot_pop(rcache)
            iova_magazine_free_pfns(mag, iovad)
            iova_magazine_free(iovad, mag)
            iovad.depot_trimmed += 1
        else:
            rcache.work_pending = 0


cdef bint iova_depot_work_pending(nm_iova_domain *iovad) noexcept nogil:
    cdef int i
    for i in range(IOVA_RANGE_CACHE_MAX_SIZE):
        if iovad.rcaches[i].work_pending:
            return True
    return False


cdef void put_iova_domain(nm_iova_domain *iovad) noexcept nogil:
    """Models ``put_iova_domain()``: free the rcaches (their ranges with the tree) and every
    range. The domain is left zeroed; a second put does nothing."""
    cdef nm_iova_rcache *rcache
    cdef nm_iova_magazine *mag
    cdef int i, c
    for i in range(IOVA_RANGE_CACHE_MAX_SIZE):
        rcache = &iovad.rcaches[i]
        if rcache.cpu_rcaches != NULL:
            for c in range(NM_MAX_CPUS):
                free(rcache.cpu_rcaches[c].loaded)
                free(rcache.cpu_rcaches[c].prev)
            free(rcache.cpu_rcaches)
        while rcache.depot != NULL:
            mag = rcache.depot
            rcache.depot = mag.next
            free(mag)
    while iovad.mag_free != NULL:
        mag = iovad.mag_free
        iovad.mag_free = mag.next
        free(mag)
    free(iovad.nodes)
    memset(iovad, 0, sizeof(nm_iova_domain))


cdef bint __iova_mag_holds(nm_iova_magazine *mag, unsigned long pfn) noexcept nogil:
    cdef unsigned long i
    if mag == NULL:
        return False
    for i in range(mag.size):
        if mag.pfns[i] == pfn:
            return True
    return False


cdef bint iova_rcache_contains(nm_iova_domain *iovad, unsigned long pfn) noexcept nogil:
    """Whether a magazine (any CPU's, or a depot's) holds ``pfn``: a scan, for the facade's
    checks, not for the data path."""
    cdef nm_iova_rcache *rcache
    cdef nm_iova_magazine *mag
    cdef int i, c
    for i in range(IOVA_RANGE_CACHE_MAX_SIZE):
        rcache = &iovad.rcaches[i]
        for c in range(NM_MAX_CPUS):
            if (__iova_mag_holds(rcache.cpu_rcaches[c].loaded, pfn)
                    or __iova_mag_holds(rcache.cpu_rcaches[c].prev, pfn)):
                return True
        mag = rcache.depot
        while mag != NULL:
            if __iova_mag_holds(mag, pfn):
                return True
            mag = mag.next
    return False


# ---- the dma-iommu flush queue ------------------------------------------------------------------

cdef int iommu_dma_fq_init(nm_fq *fq, int ncpus, bint single) noexcept nogil:
    """Models ``iommu_dma_init_fq()``: ``ncpus`` rings of IOVA_DEFAULT_FQ_SIZE with a 10 ms
    timeout, or (``single``) one ring of IOVA_SINGLE_FQ_SIZE with 1000 ms. 0, -EINVAL for
    ``ncpus`` outside 1..NM_MAX_CPUS, or -ENOMEM. ``fq`` is overwritten."""
    cdef int i, nq
    memset(fq, 0, sizeof(nm_fq))
    if ncpus < 1 or ncpus > NM_MAX_CPUS:
        return -EINVAL
    fq.ncpus = ncpus
    fq.single = single
    fq.fq_size = IOVA_SINGLE_FQ_SIZE if single else IOVA_DEFAULT_FQ_SIZE
    fq.fq_timeout_ns = (IOVA_SINGLE_FQ_TIMEOUT if single else IOVA_DEFAULT_FQ_TIMEOUT) \
        * <uint64_t>1000000
    nq = 1 if single else ncpus
    fq.queues = <nm_iova_fq *>calloc(nq, sizeof(nm_iova_fq))
    if fq.queues == NULL:
        return -ENOMEM
    for i in range(nq):
        fq.queues[i].mod_mask = fq.fq_size - 1
        fq.queues[i].entries = <nm_fq_entry *>malloc(fq.fq_size * sizeof(nm_fq_entry))
        if fq.queues[i].entries == NULL:
            iommu_dma_fq_destroy(fq, NULL)
            return -ENOMEM
    return 0


cdef inline int __fq_nr_queues(nm_fq *fq) noexcept nogil:
    return 1 if fq.single else fq.ncpus


cdef inline bint fq_full(nm_iova_fq *q) noexcept nogil:
    return ((q.tail + 1) & q.mod_mask) == q.head


cdef void fq_ring_free(nm_fq *fq, nm_iova_domain *iovad, nm_iova_fq *q, int cpu) noexcept nogil:
    """Models ``fq_ring_free_locked()``: free, oldest first, the entries queued before the last
    finished IOTLB flush, through ``free_iova_fast()`` on ``cpu``."""
    cdef uint64_t counter = fq.fq_flush_finish_cnt
    cdef nm_fq_entry *e
    while q.head != q.tail:
        e = &q.entries[q.head]
        if e.counter >= counter:
            break
        if iovad != NULL:
            free_iova_fast(iovad, e.iova_pfn, e.pages, cpu)
        fq.fq_freed += 1
        q.head = (q.head + 1) & q.mod_mask


cdef void fq_flush_iotlb(nm_fq *fq) noexcept nogil:
    """Models ``fq_flush_iotlb()``: one IOTLB flush between the start and finish counts."""
    fq.fq_flush_start_cnt += 1
    fq.fq_flushes += 1
    fq.iotlb_syncs += 1
    if fq.flush_iotlb_all != NULL:
        fq.flush_iotlb_all(fq.flush_cookie)
    fq.fq_flush_finish_cnt += 1


cdef void queue_iova(nm_fq *fq, nm_iova_domain *iovad, unsigned long pfn, unsigned long pages,
                     int cpu, uint64_t now_ns) noexcept nogil:
    """Models ``queue_iova()`` on ``cpu`` at ``now_ns``: free what earlier flushes covered; if
    the ring is full, flush the IOTLB and free it; queue the range (it stays allocated, so it
    cannot be handed out again before a flush); arm the timer if it is off. Departs: a ``cpu``
    outside the queue's CPUs uses CPU 0 (the facade refuses it)."""
    cdef nm_iova_fq *q
    cdef nm_fq_entry *e
    cdef uint32_t idx
    if unlikely(<unsigned int>cpu >= <unsigned int>(NM_MAX_CPUS if fq.single else fq.ncpus)):
        cpu = 0
    q = &fq.queues[0 if fq.single else cpu]
    fq_ring_free(fq, iovad, q, cpu)
    if fq_full(q):
        fq.fq_full_flushes += 1
        fq_flush_iotlb(fq)
        fq_ring_free(fq, iovad, q, cpu)
    idx = q.tail                        # fq_ring_add()
    q.tail = (idx + 1) & q.mod_mask
    e = &q.entries[idx]
    e.iova_pfn = pfn
    e.pages = pages
    e.counter = fq.fq_flush_start_cnt
    fq.fq_queued += 1
    if not fq.fq_timer_on:
        fq.fq_timer_on = True           # mod_timer(&cookie->fq_timer, jiffies + timeout)
        fq.fq_timer_cpu = cpu
        fq.fq_timer_expires_ns = now_ns + fq.fq_timeout_ns


cdef void iommu_dma_fq_timeout(nm_fq *fq, nm_iova_domain *iovad, uint64_t now_ns) noexcept nogil:
    """Models ``fq_flush_timeout()``, run when the caller's clock reaches the timer armed by the
    first ``queue_iova()`` after the last run (``fq_timer_expires_ns``): one IOTLB flush, then
    every queue's entries are freed, on the CPU that armed the timer. Before the deadline, or
    with the timer off, it does nothing."""
    cdef int i
    if not fq.fq_timer_on or now_ns < fq.fq_timer_expires_ns:
        return
    fq.fq_timer_on = False
    fq.fq_timeouts += 1
    fq_flush_iotlb(fq)
    for i in range(__fq_nr_queues(fq)):
        fq_ring_free(fq, iovad, &fq.queues[i], fq.fq_timer_cpu)


cdef bint fq_pending(nm_fq *fq) noexcept nogil:
    """Whether any queue holds an entry."""
    cdef int i
    if fq.queues == NULL:
        return False
    for i in range(__fq_nr_queues(fq)):
        if fq.queues[i].head != fq.queues[i].tail:
            return True
    return False


cdef void iommu_dma_fq_destroy(nm_fq *fq, nm_iova_domain *iovad) noexcept nogil:
    """Models ``iommu_dma_free_fq()``: stop the timer and free the rings. Departs: with entries
    pending, one IOTLB flush and the entries go back to ``iovad`` (when not NULL) through
    ``free_iova_fast()``; the kernel leaves them to ``put_iova_domain()``."""
    cdef int i
    if fq.queues == NULL:
        return
    fq.fq_timer_on = False
    if fq_pending(fq):
        fq_flush_iotlb(fq)
        for i in range(__fq_nr_queues(fq)):
            fq_ring_free(fq, iovad, &fq.queues[i], i)
    for i in range(__fq_nr_queues(fq)):
        free(fq.queues[i].entries)
    free(fq.queues)
    fq.queues = NULL


cdef bint fq_contains(nm_fq *fq, unsigned long pfn) noexcept nogil:
    """Whether a queue holds ``pfn``: a scan, for the facade's checks."""
    cdef nm_iova_fq *q
    cdef uint32_t idx
    cdef int i
    if fq.queues == NULL:
        return False
    for i in range(__fq_nr_queues(fq)):
        q = &fq.queues[i]
        idx = q.head
        while idx != q.tail:
            if q.entries[idx].iova_pfn == pfn:
                return True
            idx = (idx + 1) & q.mod_mask
    return False


# ---- the Python boundary ------------------------------------------------------------------------

IOVA_STATS_KEYS = ("rcache_hits", "rcache_misses", "rcache_inserts", "rcache_fallbacks",
                   "rcache_flushes", "mag_swaps", "depot_pushes", "depot_pops", "depot_trimmed",
                   "alloc_failures", "max32_shortcuts", "alloc_retries", "warn_missing",
                   "nr_ranges", "nr_cached", "nr_magazines")
FQ_STATS_KEYS = ("fq_flushes", "iotlb_syncs", "fq_full_flushes", "fq_timeouts", "fq_queued",
                 "fq_freed", "fq_pending", "fq_flush_start_cnt", "fq_flush_finish_cnt")


cdef inline unsigned long _fast_size(unsigned long size) noexcept nogil:
    """The range size ``alloc_iova_fast(size)`` allocates."""
    if size < (1 << (IOVA_RANGE_CACHE_MAX_SIZE - 1)):
        return roundup_pow_of_two(size)
    return size


cdef list _mag_list(nm_iova_magazine *mag):
    return [] if mag == NULL else [mag.pfns[i] for i in range(mag.size)]


cdef class CoreIovaDomain:
    """The compiled half of ``netmem.iova.IovaDomain``: one ``struct iova_domain`` with its
    rcache. Each method checks its arguments, then runs one C function of pyx/iova.pxi."""

    def __cinit__(self, granule=PAGE_SIZE, start_pfn=1, *args, **kwargs):
        cdef unsigned long g = _ulong(granule, "init_iova_domain: granule")
        cdef unsigned long s = _ulong(start_pfn, "init_iova_domain: start_pfn")
        cdef int ret
        if s == 0:
            raise NetmemError(EINVAL, "init_iova_domain: start_pfn 0 would let alloc_iova_fast() "
                                      "hand out pfn 0, its failure value (dma-iommu starts at 1)")
        ret = init_iova_domain(&self.iovad, g, s)
        if ret == -EINVAL:
            raise NetmemError(EINVAL, f"init_iova_domain: granule {g} is not a power of two up to "
                                      f"PAGE_SIZE (BUG_ON)")
        if ret:
            raise NetmemError(-ret, "init_iova_domain: out of memory")
        self._fqs = weakref.WeakSet()

    def __dealloc__(self):
        put_iova_domain(&self.iovad)

    cdef int _check_not_held(self, unsigned long pfn, str fn) except -1:
        """Refuse a range that waits in the rcache or a flush queue (a double free)."""
        cdef CoreFlushQueue fq
        if iova_rcache_contains(&self.iovad, pfn):
            raise NetmemError(EINVAL, f"{fn}: the IOVA at pfn {pfn:#x} is already free (in the "
                                      "rcache)")
        for fq in self._fqs:
            if fq_contains(&fq.fq, pfn):
                raise NetmemError(EINVAL, f"{fn}: the IOVA at pfn {pfn:#x} is already free (in a "
                                          "flush queue)")
        return 0

    cdef int _check_fast_free(self, unsigned long pfn, unsigned long size, str fn) except -1:
        """``pfn`` must start a range of the size ``alloc_iova_fast(size)`` gives, not yet
        freed: else the rcache would hand out a range the tree does not hold."""
        cdef unsigned long lo = 0, hi = 0
        if size == 0:
            raise NetmemError(EINVAL, f"{fn}: size 0")
        if find_iova(&self.iovad, pfn, &lo, &hi):
            raise NetmemError(ENOENT, f"{fn}: no IOVA holds pfn {pfn:#x}")
        if lo != pfn or hi - lo + 1 != _fast_size(size):
            raise NetmemError(EINVAL, f"{fn}: pfn {pfn:#x} size {size} is not the IOVA "
                                      f"[{lo:#x}, {hi:#x}] that alloc_iova_fast({size}) gives")
        return self._check_not_held(pfn, fn)

    def alloc_iova(self, size, limit_pfn, bint size_aligned=True):
        """Models ``alloc_iova()``: the first pfn of ``size`` pfns at or below ``limit_pfn``,
        or None."""
        cdef unsigned long s = _ulong(size, "alloc_iova: size")
        cdef unsigned long limit = _ulong(limit_pfn, "alloc_iova: limit_pfn")
        cdef unsigned long pfn = 0
        if s == 0:
            raise NetmemError(EINVAL, "alloc_iova: size 0")
        return pfn if alloc_iova(&self.iovad, s, limit, size_aligned, &pfn) == 0 else None

    def free_iova(self, pfn):
        """Models ``free_iova()``: free the range holding ``pfn``."""
        cdef unsigned long p = _ulong(pfn, "free_iova: pfn")
        cdef unsigned long lo = 0
        if find_iova(&self.iovad, p, &lo, NULL):
            raise NetmemError(ENOENT, f"free_iova: no IOVA holds pfn {p:#x}")
        self._check_not_held(lo, "free_iova")
        free_iova(&self.iovad, p)

    def find_iova(self, pfn):
        """Models ``find_iova()``: (pfn_lo, pfn_hi) of the range holding ``pfn``, or None."""
        cdef unsigned long p = _ulong(pfn, "find_iova: pfn")
        cdef unsigned long lo = 0, hi = 0
        return (lo, hi) if find_iova(&self.iovad, p, &lo, &hi) == 0 else None

    def reserve_iova(self, pfn_lo, pfn_hi):
        """Models ``reserve_iova()``: keep [pfn_lo, pfn_hi] from the allocator."""
        cdef unsigned long lo = _ulong(pfn_lo, "reserve_iova: pfn_lo")
        cdef unsigned long hi = _ulong(pfn_hi, "reserve_iova: pfn_hi")
        cdef int ret = reserve_iova(&self.iovad, lo, hi)
        if ret == -EINVAL:
            raise NetmemError(EINVAL, f"reserve_iova: [{lo:#x}, {hi:#x}] is not a range of the "
                                      "address space")
        if ret:
            raise NetmemError(-ret, "reserve_iova: out of memory")

    def alloc_iova_fast(self, size, limit_pfn, bint flush_rcache=True, int cpu=0):
        """Models ``alloc_iova_fast()`` on ``cpu``: a pfn, or 0."""
        cdef unsigned long s = _ulong(size, "alloc_iova_fast: size")
        cdef unsigned long limit = _ulong(limit_pfn, "alloc_iova_fast: limit_pfn")
        if s == 0:
            raise NetmemError(EINVAL, "alloc_iova_fast: size 0")
        _check_cpu(cpu, NM_MAX_CPUS, "alloc_iova_fast")
        return alloc_iova_fast(&self.iovad, s, limit, flush_rcache, cpu)

    def free_iova_fast(self, pfn, size, int cpu=0):
        """Models ``free_iova_fast()`` on ``cpu``. Refuses (EINVAL, ENOENT) what
        ``alloc_iova_fast(size)`` did not hand out, or what is already free."""
        cdef unsigned long p = _ulong(pfn, "free_iova_fast: pfn")
        cdef unsigned long s = _ulong(size, "free_iova_fast: size")
        _check_cpu(cpu, NM_MAX_CPUS, "free_iova_fast")
        self._check_fast_free(p, s, "free_iova_fast")
        free_iova_fast(&self.iovad, p, s, cpu)

    def depot_trim(self, int ncpus):
        """Models one run of the depot works (``iova_depot_work_func()``) with ``ncpus`` CPUs
        online."""
        if ncpus < 1 or ncpus > NM_MAX_CPUS:
            raise NetmemError(EINVAL, f"iova_depot_trim: ncpus {ncpus} is not in 1..{NM_MAX_CPUS}")
        iova_depot_trim(&self.iovad, ncpus)

    def free_cpu_cached_iovas(self, int cpu):
        """Models ``free_cpu_cached_iovas()`` (CPU hot-unplug): its magazines back to the tree."""
        _check_cpu(cpu, NM_MAX_CPUS, "free_cpu_cached_iovas")
        free_cpu_cached_iovas(cpu, &self.iovad)

    @property
    def depot_work_pending(self):
        """Whether a depot work is scheduled (run ``depot_trim`` every 100 ms while it is)."""
        return iova_depot_work_pending(&self.iovad)

    @property
    def stats(self):
        """The allocator's counters (model counters; the kernel keeps none) and occupancy."""
        cdef nm_iova_domain *d = &self.iovad
        vals = (d.rcache_hits, d.rcache_misses, d.rcache_inserts, d.rcache_fallbacks,
                d.rcache_flushes, d.mag_swaps, d.depot_pushes, d.depot_pops, d.depot_trimmed,
                d.alloc_failures, d.max32_shortcuts, d.alloc_retries, d.warn_missing,
                d.nr_ranges, self._nr_cached(), d.nr_magazines)
        return dict(zip(IOVA_STATS_KEYS, vals, strict=True))

    def _nr_cached(self):
        cdef nm_iova_rcache *rcache
        cdef nm_iova_magazine *mag
        cdef uint64_t n = 0
        cdef int i, c
        for i in range(IOVA_RANGE_CACHE_MAX_SIZE):
            rcache = &self.iovad.rcaches[i]
            for c in range(NM_MAX_CPUS):
                if rcache.cpu_rcaches[c].loaded != NULL:
                    n += rcache.cpu_rcaches[c].loaded.size + rcache.cpu_rcaches[c].prev.size
            mag = rcache.depot
            while mag != NULL:
                n += mag.size
                mag = mag.next
        return n

    @property
    def granule(self):
        return self.iovad.granule

    @property
    def start_pfn(self):
        return self.iovad.start_pfn

    @property
    def dma_32bit_pfn(self):
        return self.iovad.dma_32bit_pfn

    @property
    def max32_alloc_size(self):
        return self.iovad.max32_alloc_size

    @property
    def cached_node(self):
        """(pfn_lo, pfn_hi) of ``iovad->cached_node`` (the anchor is (IOVA_ANCHOR,) * 2)."""
        cdef nm_iova *n = &self.iovad.nodes[self.iovad.cached_node]
        return (n.pfn_lo, n.pfn_hi)

    @property
    def cached32_node(self):
        cdef nm_iova *n = &self.iovad.nodes[self.iovad.cached32_node]
        return (n.pfn_lo, n.pfn_hi)

    def ranges(self):
        """Every range in the tree, lowest first, as (pfn_lo, pfn_hi); not the anchor."""
        cdef nm_iova *t = self.iovad.nodes
        cdef uint32_t node = self.iovad.root
        out = []
        while t[node].rb_left != NM_IOVA_NIL:
            node = t[node].rb_left
        while node != NM_IOVA_ANCHOR_NODE:
            out.append((t[node].pfn_lo, t[node].pfn_hi))
            node = iova_rb_next(t, node)
        return out

    def magazines(self, int order, int cpu):
        """(loaded, prev) pfns of ``cpu``'s magazines in the rcache bin of 2**order pages."""
        cdef nm_iova_cpu_rcache *c
        _check_cpu(order, IOVA_RANGE_CACHE_MAX_SIZE, "magazines", "order")
        _check_cpu(cpu, NM_MAX_CPUS, "magazines")
        c = &self.iovad.rcaches[order].cpu_rcaches[cpu]
        return (_mag_list(c.loaded), _mag_list(c.prev))

    def depot(self, int order):
        """The depot of the rcache bin of 2**order pages, newest magazine first, each a list of
        pfns."""
        cdef nm_iova_magazine *mag
        _check_cpu(order, IOVA_RANGE_CACHE_MAX_SIZE, "depot", "order")
        mag = self.iovad.rcaches[order].depot
        out = []
        while mag != NULL:
            out.append(_mag_list(mag))
            mag = mag.next
        return out

    def _verify(self):
        """Check the tree: order, no overlap, red-black rules, parent links, the counts and
        the cached nodes. Returns the problems found (empty when sound)."""
        cdef nm_iova *t = self.iovad.nodes
        problems = []
        seen = set()
        if t[self.iovad.root].rb_color != NM_RB_BLACK or t[NM_IOVA_NIL].rb_color != NM_RB_BLACK:
            problems.append("root or NIL not black")
        _rb_verify(t, self.iovad.root, NM_IOVA_NIL, problems, seen)
        ranges = self.ranges()
        if len(ranges) != self.iovad.nr_ranges or len(seen) != self.iovad.nr_ranges + 1:
            problems.append(f"{len(ranges)} ranges, {len(seen)} nodes, nr_ranges "
                            f"{self.iovad.nr_ranges}")
        for (lo, hi), (lo2, hi2) in zip(ranges, ranges[1:] + [(IOVA_ANCHOR, IOVA_ANCHOR)]):
            if lo > hi or hi >= lo2:
                problems.append(f"ranges [{lo:#x}, {hi:#x}] and [{lo2:#x}, {hi2:#x}] overlap or "
                                "are out of order")
        for name, node in (("cached_node", self.iovad.cached_node),
                           ("cached32_node", self.iovad.cached32_node)):
            if node not in seen:
                problems.append(f"{name} {node} is not in the tree")
        return problems


cdef int _rb_verify(nm_iova *t, uint32_t node, uint32_t parent, list problems, set seen):
    """The black height of the subtree at ``node``; what breaks the rules goes to ``problems``."""
    cdef int lh, rh
    if node == NM_IOVA_NIL:
        return 1
    if node in seen:
        problems.append(f"node {node} reached twice")
        return 0
    seen.add(node)
    if t[node].rb_parent != parent:
        problems.append(f"node {node}: parent {t[node].rb_parent}, expected {parent}")
    if t[node].rb_color == NM_RB_RED and (t[t[node].rb_left].rb_color == NM_RB_RED
                                          or t[t[node].rb_right].rb_color == NM_RB_RED):
        problems.append(f"node {node}: red with a red child")
    lh = _rb_verify(t, t[node].rb_left, node, problems, seen)
    rh = _rb_verify(t, t[node].rb_right, node, problems, seen)
    if lh != rh:
        problems.append(f"node {node}: black heights {lh} and {rh}")
    return lh + (t[node].rb_color == NM_RB_BLACK)


cdef int _check_cpu(int cpu, int n, str fn, str what="cpu") except -1:
    if cpu < 0 or cpu >= n:
        raise NetmemError(EINVAL, f"{fn}: {what} {cpu} is not in 0..{n - 1}")
    return 0


cdef class CoreFlushQueue:
    """The compiled half of ``netmem.iova.FlushQueue``: the dma-iommu flush queue over one
    IOVA domain, with its timer on the caller's clock (``now_ns`` arguments)."""

    def __cinit__(self, CoreIovaDomain domain not None, int ncpus=1, bint single=False, *args,
                  **kwargs):
        cdef int ret = iommu_dma_fq_init(&self.fq, ncpus, single)
        if ret == -EINVAL:
            raise NetmemError(EINVAL, f"iommu_dma_init_fq: ncpus {ncpus} is not in "
                                      f"1..{NM_MAX_CPUS}")
        if ret:
            raise NetmemError(-ret, "iommu_dma_init_fq: out of memory")
        self.domain = domain
        domain._fqs.add(self)

    def __dealloc__(self):
        iommu_dma_fq_destroy(&self.fq, &self.domain.iovad if self.domain is not None else NULL)

    def _check_alive(self, str fn):
        if self.fq.queues == NULL:
            raise NetmemError(EINVAL, f"{fn}: the flush queue is destroyed")

    def queue_iova(self, pfn, pages, int cpu=0, now_ns=0):
        """Models ``queue_iova()`` on ``cpu`` at ``now_ns``: defer the free of the IOVA of
        ``pages`` pfns at ``pfn`` (as ``alloc_iova_fast(pages)`` gave it) until an IOTLB
        flush."""
        cdef unsigned long p = _ulong(pfn, "queue_iova: pfn")
        cdef unsigned long n = _ulong(pages, "queue_iova: pages")
        cdef uint64_t now = _ulong(now_ns, "queue_iova: now_ns")
        self._check_alive("queue_iova")
        _check_cpu(cpu, NM_MAX_CPUS if self.fq.single else self.fq.ncpus, "queue_iova")
        self.domain._check_fast_free(p, n, "queue_iova")
        queue_iova(&self.fq, &self.domain.iovad, p, n, cpu, now)

    def timeout(self, now_ns):
        """Models the timer (``fq_flush_timeout()``) at ``now_ns``: does nothing before
        ``timer_expires_ns`` or with the timer off."""
        cdef uint64_t now = _ulong(now_ns, "fq_flush_timeout: now_ns")
        self._check_alive("fq_flush_timeout")
        iommu_dma_fq_timeout(&self.fq, &self.domain.iovad, now)

    def destroy(self):
        """Models ``iommu_dma_free_fq()``; what is still queued is flushed and freed."""
        iommu_dma_fq_destroy(&self.fq, &self.domain.iovad)
        self.domain._fqs.discard(self)

    @property
    def destroyed(self):
        return self.fq.queues == NULL

    @property
    def pending(self):
        return fq_pending(&self.fq)

    @property
    def ncpus(self):
        return self.fq.ncpus

    @property
    def single(self):
        return bool(self.fq.single)

    @property
    def fq_size(self):
        return self.fq.fq_size

    @property
    def timeout_ns(self):
        return self.fq.fq_timeout_ns

    @property
    def timer_on(self):
        return bool(self.fq.fq_timer_on)

    @property
    def timer_expires_ns(self):
        """When the armed timer fires, in ns of the caller's clock (None when off)."""
        return self.fq.fq_timer_expires_ns if self.fq.fq_timer_on else None

    def entries(self, int cpu=0):
        """The queued entries of ``cpu``'s ring (the single ring: any cpu), oldest first, as
        (iova_pfn, pages, counter)."""
        cdef nm_iova_fq *q
        cdef uint32_t idx
        self._check_alive("entries")
        _check_cpu(cpu, NM_MAX_CPUS if self.fq.single else self.fq.ncpus, "entries")
        q = &self.fq.queues[0 if self.fq.single else cpu]
        out = []
        idx = q.head
        while idx != q.tail:
            out.append((q.entries[idx].iova_pfn, q.entries[idx].pages, q.entries[idx].counter))
            idx = (idx + 1) & q.mod_mask
        return out

    @property
    def stats(self):
        cdef nm_fq *f = &self.fq
        vals = (f.fq_flushes, f.iotlb_syncs, f.fq_full_flushes, f.fq_timeouts, f.fq_queued,
                f.fq_freed, f.fq_queued - f.fq_freed, f.fq_flush_start_cnt,
                f.fq_flush_finish_cnt)
        return dict(zip(FQ_STATS_KEYS, vals, strict=True))


# Python-visible constants (netmem.iova re-exports them).
IOVA_RANGE_CACHE_MAX_SIZE_ = IOVA_RANGE_CACHE_MAX_SIZE
IOVA_MAG_SIZE_ = IOVA_MAG_SIZE
IOVA_DEPOT_DELAY_MS_ = IOVA_DEPOT_DELAY_MS
IOVA_DEFAULT_FQ_SIZE_ = IOVA_DEFAULT_FQ_SIZE
IOVA_SINGLE_FQ_SIZE_ = IOVA_SINGLE_FQ_SIZE
IOVA_DEFAULT_FQ_TIMEOUT_ = IOVA_DEFAULT_FQ_TIMEOUT
IOVA_SINGLE_FQ_TIMEOUT_ = IOVA_SINGLE_FQ_TIMEOUT
IOVA_ANCHOR_ = IOVA_ANCHOR
NM_MAX_CPUS_ = NM_MAX_CPUS
IOVA_RCACHE_RANGE_ = iova_rcache_range()
