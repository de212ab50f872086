# page_pool: alloc cache, ptr_ring, slow path, memory providers, frag API, DMA, release.
#
# Models net/core/page_pool.c and include/net/page_pool/helpers.h (Linux ~6.18). Every function
# here runs without the interpreter and never fails loudly: it returns 0 (or a negative errno) and
# bumps a counter, as the kernel does. Departures, all of them checks the kernel cannot make:
# a put is refused (and reported) when the buffer is not handed out by that pool (double put,
# wrong pool, not a page_pool page); an allow_direct put on a destroyed pool goes to the ring
# instead of stranding the buffer in the alloc cache.


cdef inline nm_desc *__pp_desc(nm_pool *pool, netmem_ref netmem) noexcept nogil:
    """``__netmem_desc()`` through the pool's copy of the table pointers."""
    return (pool.niovs if netmem & NET_IOV else pool.pages) + (netmem >> 1)


cdef inline int64_t __trace_pfn(netmem_ref netmem) noexcept nogil:
    """``netmem_pfn_trace()``: the pfn of a page, 0 for a net_iov."""
    return 0 if netmem & NET_IOV else <int64_t>netmem_pfn(netmem)


# ---- pp info, DMA -----------------------------------------------------------------------------

cdef inline void page_pool_fragment_netmem(nm_desc *d, int64_t nr) noexcept nogil:
    d.pp_ref_count = nr


cdef inline void page_pool_set_pp_info(nm_pool *pool, nm_desc *d) noexcept nogil:
    """Models ``page_pool_set_pp_info()`` (the init_callback is for in-kernel tests only)."""
    d.pp = pool
    d.pp_magic |= PP_SIGNATURE
    page_pool_fragment_netmem(d, 1)


cdef inline void page_pool_clear_pp_info(nm_desc *d) noexcept nogil:
    d.pp_magic = 0
    d.pp = NULL


cdef inline bint netmem_is_pp(nm_desc *d) noexcept nogil:
    return (d.pp_magic & PP_MAGIC_MASK) == PP_SIGNATURE


cdef inline void __page_pool_dma_sync_for_device(nm_pool *pool, nm_desc *d,
                                                 uint32_t dma_sync_size) noexcept nogil:
    """Models ``__page_pool_dma_sync_for_device()``: ``dma_sync_single_for_device()`` of
    ``dma_addr + p.offset`` in ``p.dma_dir`` (a no-op for DMA_FROM_DEVICE; a bounced
    DMA_BIDIRECTIONAL buffer is copied out to its swiotlb slots)."""
    if dma_sync_size > pool.max_len:
        dma_sync_size = pool.max_len
    pool.nr_sync_for_device += 1
    pool.sync_for_device_bytes += dma_sync_size
    nm_dma_sync_for_device(pool.dev, d.dma_addr + pool.offset, dma_sync_size, pool.dma_dir)


cdef inline void page_pool_dma_sync_for_device(nm_pool *pool, nm_desc *d,
                                               uint32_t dma_sync_size) noexcept nogil:
    if pool.dma_sync and dma_dev_need_sync(pool.dev):
        __page_pool_dma_sync_for_device(pool, d, dma_sync_size)


cdef int page_pool_register_dma_index(nm_pool *pool, netmem_ref netmem, nm_desc *d) noexcept nogil:
    """Models ``page_pool_register_dma_index()``: track the mapping so scrub can unmap it.
    Departs: ids are reused last-freed-first, where xa_alloc() takes the lowest free id."""
    cdef uint32_t id
    cdef void *p
    if pool.dma_free_n:
        pool.dma_free_n -= 1
        id = pool.dma_free_ids[pool.dma_free_n]
    else:
        id = pool.dma_mapped_n + 1
        if id >= pool.dma_mapped_cap:
            p = realloc(pool.dma_mapped, (pool.dma_mapped_cap * 2 + 64) * sizeof(netmem_ref))
            if p == NULL:
                return -ENOMEM
            pool.dma_mapped = <netmem_ref *>p
            p = realloc(pool.dma_free_ids, (pool.dma_mapped_cap * 2 + 64) * sizeof(uint32_t))
            if p == NULL:
                return -ENOMEM
            pool.dma_free_ids = <uint32_t *>p
            pool.dma_mapped_cap = pool.dma_mapped_cap * 2 + 64
        pool.dma_mapped_n = id
    pool.dma_mapped[id] = netmem
    d.pp_magic = (d.pp_magic & ~PP_DMA_INDEX_MASK) | (<uint64_t>id << PP_DMA_INDEX_SHIFT)
    return 0


cdef inline uint32_t netmem_get_dma_index(nm_desc *d) noexcept nogil:
    return <uint32_t>((d.pp_magic & PP_DMA_INDEX_MASK) >> PP_DMA_INDEX_SHIFT)


cdef void __page_pool_unmap_netmem_dma(nm_pool *pool, netmem_ref netmem) noexcept nogil:
    """Models ``__page_pool_unmap_netmem_dma()``: xa_cmpxchg the index out, then unmap."""
    cdef nm_desc *d = __pp_desc(pool, netmem)
    cdef uint32_t id
    if not pool.dma_map:
        return
    id = netmem_get_dma_index(d)
    if not id or pool.dma_mapped[id] != netmem:
        return
    pool.dma_mapped[id] = 0
    pool.dma_free_ids[pool.dma_free_n] = id
    pool.dma_free_n += 1
    if not pp_iova_window_unlink(pool, d.dma_addr, PAGE_SIZE << pool.order):
        nm_dma_unmap_page(pool.dev, d.dma_addr, PAGE_SIZE << pool.order, pool.dma_dir)
    pool.nr_dma_unmap += 1


cdef inline void __page_pool_release_netmem_dma(nm_pool *pool, netmem_ref netmem,
                                                nm_desc *d) noexcept nogil:
    if not pool.dma_map:
        return
    __page_pool_unmap_netmem_dma(pool, netmem)
    d.dma_addr = 0
    d.pp_magic &= ~PP_DMA_INDEX_MASK


cdef bint page_pool_dma_map(nm_pool *pool, netmem_ref netmem, nm_desc *d) noexcept nogil:
    """Models ``page_pool_dma_map()``: map the whole page once in ``p.dma_dir``
    (DMA_FROM_DEVICE, or DMA_BIDIRECTIONAL for XDP_TX-style reuse: the device may then read the
    buffer too), track it, sync for the device."""
    cdef uint64_t size = PAGE_SIZE << pool.order
    cdef uint64_t phys = netmem_phys(pool.m, netmem)
    cdef uint64_t dma = DMA_MAPPING_ERROR
    if pool.win_slots:
        dma = pp_iova_window_link(pool, phys, size)
    if dma == DMA_MAPPING_ERROR:
        dma = nm_dma_map_page(pool.dev, phys, size, pool.dma_dir)
    if dma == DMA_MAPPING_ERROR:
        return False
    d.dma_addr = dma
    if page_pool_register_dma_index(pool, netmem, d):
        d.dma_addr = 0
        if not pp_iova_window_unlink(pool, dma, size):
            nm_dma_unmap_page(pool.dev, dma, size, pool.dma_dir)
        return False
    pool.nr_dma_map += 1
    page_pool_dma_sync_for_device(pool, d, pool.max_len)
    return True


# ---- release to the allocator or provider ------------------------------------------------------

cdef void page_pool_return_netmem(nm_pool *pool, netmem_ref netmem) noexcept nogil:
    """Models ``page_pool_return_netmem()``: provider release or DMA unmap, release count,
    trace, then clear pp info and put_page when the core owns the page."""
    cdef nm_desc *d = __pp_desc(pool, netmem)
    cdef bint put = True
    if pool.mp_ops != NULL:
        d.state = NM_ST_NONE
        put = pool.mp_ops.release_netmem(pool, netmem)
    else:
        __page_pool_release_netmem_dma(pool, netmem, d)
    pool.pages_state_release_cnt += 1
    nm_trace(pool.m, TP_PAGE_POOL_STATE_RELEASE, pool.id, netmem,
             pool.pages_state_release_cnt, __trace_pfn(netmem), 0)
    d.state = NM_ST_NONE
    if put:
        page_pool_clear_pp_info(d)
        if not netmem & NET_IOV:
            nm_put_page(pool.m, netmem)


# ---- alloc: fast path, refill, slow path --------------------------------------------------------

cdef netmem_ref page_pool_refill_alloc_cache(nm_pool *pool) noexcept nogil:
    """Models ``page_pool_refill_alloc_cache()``."""
    cdef ptr_ring *r = &pool.ring
    cdef netmem_ref netmem
    cdef int pref_nid
    if __ptr_ring_empty(r):
        pool.alloc_stats.empty += 1
        return 0
    pref_nid = numa_mem_id(pool.m) if pool.nid == NUMA_NO_NODE else pool.nid
    while True:
        netmem = __ptr_ring_consume(r)
        if unlikely(not netmem):
            break
        if likely(netmem_is_pref_nid(pool.m, netmem, pref_nid)):
            __pp_desc(pool, netmem).state = NM_ST_CACHE
            pool.alloc_cache[pool.alloc_count] = netmem
            pool.alloc_count += 1
        else:
            # NUMA mismatch: release one page and fall through to the page allocator.
            page_pool_return_netmem(pool, netmem)
            pool.alloc_stats.waive += 1
            netmem = 0
            break
        if pool.alloc_count >= PP_ALLOC_CACHE_REFILL:
            break
    if likely(pool.alloc_count > 0):
        pool.alloc_count -= 1
        netmem = pool.alloc_cache[pool.alloc_count]
        pool.alloc_stats.refill += 1
    return netmem


cdef inline void __pp_account_hold(nm_pool *pool, netmem_ref netmem, nm_desc *d) noexcept nogil:
    page_pool_set_pp_info(pool, d)
    pool.pages_state_hold_cnt += 1
    nm_trace(pool.m, TP_PAGE_POOL_STATE_HOLD, pool.id, netmem, pool.pages_state_hold_cnt,
             __trace_pfn(netmem), 0)


cdef netmem_ref __page_pool_alloc_page_order(nm_pool *pool) noexcept nogil:
    """Models ``__page_pool_alloc_page_order()``: one compound page of ``pool.order``."""
    cdef uint64_t pfn = nm_alloc_pages_node(pool.m, pool.nid, pool.order)
    cdef netmem_ref netmem
    cdef nm_desc *d
    if unlikely(pfn == NM_NIL):
        return 0
    netmem = page_to_netmem(pfn)
    d = &pool.pages[pfn]
    if pool.dma_map and unlikely(not page_pool_dma_map(pool, netmem, d)):
        nm_put_page(pool.m, netmem)
        return 0
    pp_iova_window_sync(pool)
    pool.alloc_stats.slow_high_order += 1
    __pp_account_hold(pool, netmem, d)
    return netmem


cdef netmem_ref __page_pool_alloc_netmems_slow(nm_pool *pool) noexcept nogil:
    """Models ``__page_pool_alloc_netmems_slow()``: bulk 64 order-0 pages into the cache."""
    cdef int i, nr_pages
    cdef netmem_ref netmem
    cdef nm_desc *d
    if unlikely(pool.order):
        return __page_pool_alloc_page_order(pool)
    if unlikely(pool.alloc_count > 0):
        pool.alloc_count -= 1
        return pool.alloc_cache[pool.alloc_count]
    nr_pages = nm_alloc_pages_bulk_node(pool.m, pool.nid, PP_ALLOC_CACHE_REFILL, pool.alloc_cache)
    if unlikely(not nr_pages):
        return 0
    for i in range(nr_pages):
        netmem = pool.alloc_cache[i]
        d = &pool.pages[netmem >> 1]
        if pool.dma_map and unlikely(not page_pool_dma_map(pool, netmem, d)):
            nm_put_page(pool.m, netmem)
            continue
        __pp_account_hold(pool, netmem, d)
        d.state = NM_ST_CACHE
        pool.alloc_cache[pool.alloc_count] = netmem
        pool.alloc_count += 1
    pp_iova_window_sync(pool)
    if likely(pool.alloc_count > 0):
        pool.alloc_count -= 1
        netmem = pool.alloc_cache[pool.alloc_count]
        pool.alloc_stats.slow += 1
    else:
        netmem = 0
    return netmem


cdef netmem_ref __page_pool_alloc_netmems_refill(nm_pool *pool) noexcept nogil:
    """The part of ``page_pool_alloc_netmems()`` after an empty cache: ring refill, then the
    provider or the slow path."""
    cdef netmem_ref netmem = page_pool_refill_alloc_cache(pool)
    if not netmem:
        if pool.mp_ops != NULL:
            netmem = pool.mp_ops.alloc_netmems(pool)
        else:
            netmem = __page_pool_alloc_netmems_slow(pool)
        if not netmem:
            return 0
    __pp_desc(pool, netmem).state = NM_ST_OWNED
    return netmem


cdef inline netmem_ref page_pool_alloc_netmems(nm_pool *pool) noexcept nogil:
    """Models ``page_pool_alloc_netmems()``: the alloc cache (``__page_pool_get_cached()``),
    else ring refill, then provider or slow path."""
    cdef netmem_ref netmem
    if unlikely(pool.m.fei.enabled) and should_fail(&pool.m.fei):
        return 0                        # ALLOW_ERROR_INJECTION(page_pool_alloc_netmems, NULL)
    if likely(pool.alloc_count):
        pool.alloc_count -= 1
        netmem = pool.alloc_cache[pool.alloc_count]
        pool.alloc_stats.fast += 1
        __pp_desc(pool, netmem).state = NM_ST_OWNED
        return netmem
    return __page_pool_alloc_netmems_refill(pool)


# ---- recycle ------------------------------------------------------------------------------------

cdef inline int64_t page_pool_unref_netmem(nm_pool *pool, netmem_ref netmem, nm_desc *d,
                                           int64_t nr) noexcept nogil:
    """Models ``page_pool_unref_netmem()``."""
    cdef int64_t ret
    if likely(d.pp_ref_count == nr):
        if nr != 1:
            d.pp_ref_count = 1
        return 0
    ret = d.pp_ref_count - nr
    d.pp_ref_count = ret
    if unlikely(ret < 0):
        nm_warn(pool.m, NM_W_PP_REF_NEG, pool.id, netmem, ret)
    if unlikely(ret == 0):
        d.pp_ref_count = 1
    return ret


cdef inline bint __page_pool_page_can_be_recycled(nm_machine *m, netmem_ref netmem,
                                                  nm_desc *d) noexcept nogil:
    return (netmem & NET_IOV) or (d.refcount == 1 and not (d.flags & NM_PG_PFMEMALLOC))


cdef inline bint page_pool_recycle_in_cache(netmem_ref netmem, nm_pool *pool,
                                            nm_desc *d) noexcept nogil:
    if unlikely(pool.alloc_count >= pool.alloc_cache_limit):
        if pool.destroy_cnt:
            # Departs: the kernel would cache it and never look at the cache again.
            nm_warn(pool.m, NM_W_DIRECT_AFTER_DESTROY, pool.id, netmem, 0)
        else:
            pool.recycle_stats.cache_full += 1
        return False
    d.state = NM_ST_CACHE
    pool.alloc_cache[pool.alloc_count] = netmem
    pool.alloc_count += 1
    pool.recycle_stats.cached += 1
    return True


cdef inline bint page_pool_recycle_in_ring(nm_pool *pool, netmem_ref netmem,
                                           nm_desc *d) noexcept nogil:
    if __ptr_ring_produce(&pool.ring, netmem) == 0:
        d.state = NM_ST_RING
        pool.recycle_stats.ring += 1
        return True
    return False


cdef inline netmem_ref __page_pool_put_page(nm_pool *pool, netmem_ref netmem, nm_desc *d,
                                            uint32_t dma_sync_size,
                                            bint allow_direct) noexcept nogil:
    """Models ``__page_pool_put_page()``: recyclable buffers go to the cache (direct) or are
    returned to the caller for the ring; the rest are released."""
    if likely(__page_pool_page_can_be_recycled(pool.m, netmem, d)):
        page_pool_dma_sync_for_device(pool, d, dma_sync_size)
        if allow_direct and page_pool_recycle_in_cache(netmem, pool, d):
            return 0
        return netmem
    pool.recycle_stats.released_refcnt += 1
    page_pool_return_netmem(pool, netmem)
    return 0


cdef inline bint page_pool_napi_local(nm_pool *pool) noexcept nogil:
    """Models ``page_pool_napi_local()`` (a !PREEMPT_RT kernel)."""
    cdef nm_machine *m = pool.m
    if unlikely(not m.in_softirq):
        return False
    if pool.cpuid == m.cpu:
        return True
    return pool.napi != NULL and pool.napi.list_owner == m.cpu


cdef inline void page_pool_put_unrefed_netmem(nm_pool *pool, netmem_ref netmem, nm_desc *d,
                                              uint32_t dma_sync_size,
                                              bint allow_direct) noexcept nogil:
    """Models ``page_pool_put_unrefed_netmem()``."""
    if not allow_direct:
        allow_direct = page_pool_napi_local(pool)
    netmem = __page_pool_put_page(pool, netmem, d, dma_sync_size, allow_direct)
    if netmem and not page_pool_recycle_in_ring(pool, netmem, d):
        pool.recycle_stats.ring_full += 1
        page_pool_return_netmem(pool, netmem)


cdef int __pp_bad_put(nm_machine *m, nm_pool *pool, netmem_ref netmem, nm_desc *d) noexcept nogil:
    """A put the kernel could not detect: report it, change nothing. ``pool`` is the pool the
    caller named, or NULL when the buffer names its own (napi_pp_put_page, the bulk put)."""
    cdef int code
    cdef nm_pool *owner = <nm_pool *>d.pp
    if owner == NULL or not netmem_is_pp(d):
        code = NM_W_NOT_PP
    elif pool != NULL and owner != pool:
        code = NM_W_WRONG_POOL
    else:
        code = NM_W_DOUBLE_PUT
    nm_warn(m, code, owner.id if owner != NULL else 0, netmem, d.state)
    return -EINVAL


cdef inline int page_pool_put_netmem(nm_pool *pool, netmem_ref netmem, uint32_t dma_sync_size,
                                     bint allow_direct) noexcept nogil:
    """Models ``page_pool_put_netmem()``: drop one pp reference; the last one recycles."""
    cdef nm_desc *d = __pp_desc(pool, netmem)
    if unlikely(d.pp != <void *>pool or d.state != NM_ST_OWNED):
        return __pp_bad_put(pool.m, pool, netmem, d)
    if page_pool_unref_netmem(pool, netmem, d, 1) != 0:
        return 0
    page_pool_put_unrefed_netmem(pool, netmem, d, dma_sync_size, allow_direct)
    return 0


cdef void page_pool_recycle_ring_bulk(nm_pool *pool, netmem_ref *bulk,
                                      uint32_t bulk_len) noexcept nogil:
    """Models ``page_pool_recycle_ring_bulk()``."""
    cdef uint32_t i = 0
    while i < bulk_len:
        if __ptr_ring_produce(&pool.ring, bulk[i]):
            pool.recycle_stats.ring_full += 1
            break
        __pp_desc(pool, bulk[i]).state = NM_ST_RING
        i += 1
    pool.recycle_stats.ring += i
    while i < bulk_len:
        page_pool_return_netmem(pool, bulk[i])
        i += 1


cdef void __page_pool_put_netmem_bulk(nm_machine *m, netmem_ref *data,
                                      uint32_t count) noexcept nogil:
    """Models ``page_pool_put_netmem_bulk()`` for at most XDP_BULK_QUEUE_SIZE netmems."""
    cdef netmem_ref bulk[XDP_BULK_QUEUE_SIZE]
    cdef uint32_t i, bulk_len = 0, foreign
    cdef netmem_ref netmem
    cdef nm_desc *d
    cdef nm_pool *pool
    cdef nm_pool *owner
    cdef bint allow_direct = False
    for i in range(count):
        netmem = netmem_compound_head(m, data[i])
        d = __netmem_desc(m, netmem)
        if unlikely(d.pp == NULL or d.state != NM_ST_OWNED):
            __pp_bad_put(m, NULL, netmem, d)
            continue
        if page_pool_unref_netmem(<nm_pool *>d.pp, netmem, d, 1) == 0:
            d.state = NM_ST_PUTTING
            data[bulk_len] = netmem
            bulk_len += 1
    count = bulk_len
    while count:
        pool = NULL
        bulk_len = 0
        foreign = 0
        for i in range(count):
            netmem = data[i]
            d = __netmem_desc(m, netmem)
            owner = <nm_pool *>d.pp
            if unlikely(pool == NULL):
                pool = owner
                allow_direct = page_pool_napi_local(pool)
            elif owner != pool:
                data[foreign] = netmem
                foreign += 1
                continue
            netmem = __page_pool_put_page(pool, netmem, d, <uint32_t>-1, allow_direct)
            if netmem:
                bulk[bulk_len] = netmem
                bulk_len += 1
        if bulk_len:
            page_pool_recycle_ring_bulk(pool, bulk, bulk_len)
        count = foreign


cdef void page_pool_put_netmem_bulk(nm_machine *m, const netmem_ref *data,
                                    uint64_t count) noexcept nogil:
    """The kernel's callers pass at most XDP_BULK_QUEUE_SIZE netmems (xdp_flush_frame_bulk());
    a longer array is put in calls of 16, each counted as the kernel counts one call. Departs:
    works on a copy of each chunk, so the caller's array stays intact."""
    cdef netmem_ref chunk[XDP_BULK_QUEUE_SIZE]
    cdef uint64_t done = 0
    cdef uint32_t n, i
    while done < count:
        n = <uint32_t>min(count - done, <uint64_t>XDP_BULK_QUEUE_SIZE)
        for i in range(n):
            chunk[i] = data[done + i]
        __page_pool_put_netmem_bulk(m, chunk, n)
        done += n


# ---- frag API -----------------------------------------------------------------------------------

cdef netmem_ref page_pool_drain_frag(nm_pool *pool, netmem_ref netmem) noexcept nogil:
    cdef int64_t drain_count = BIAS_MAX - pool.frag_users
    cdef nm_desc *d = __pp_desc(pool, netmem)
    if likely(page_pool_unref_netmem(pool, netmem, d, drain_count)):
        return 0
    if __page_pool_page_can_be_recycled(pool.m, netmem, d):
        page_pool_dma_sync_for_device(pool, d, <uint32_t>-1)
        return netmem
    page_pool_return_netmem(pool, netmem)
    return 0


cdef void page_pool_free_frag(nm_pool *pool) noexcept nogil:
    cdef int64_t drain_count = BIAS_MAX - pool.frag_users
    cdef netmem_ref netmem = pool.frag_page
    pool.frag_page = 0
    if not netmem:
        return
    if page_pool_unref_netmem(pool, netmem, __pp_desc(pool, netmem), drain_count):
        return
    page_pool_return_netmem(pool, netmem)


cdef netmem_ref page_pool_alloc_frag_netmem(nm_pool *pool, uint32_t *offset,
                                            uint32_t size) noexcept nogil:
    """Models ``page_pool_alloc_frag_netmem()``; dma_get_cache_alignment() is 1 on x86-64."""
    cdef uint32_t max_size = PAGE_SIZE << pool.order
    cdef netmem_ref netmem = pool.frag_page
    if unlikely(size > max_size):
        nm_warn(pool.m, NM_W_FRAG_SIZE, pool.id, 0, size)
        return 0
    offset[0] = pool.frag_offset
    if netmem and offset[0] + size > max_size:
        netmem = page_pool_drain_frag(pool, netmem)
        if netmem:
            pool.recycle_stats.cached += 1
            pool.alloc_stats.fast += 1
            pool.frag_users = 1
            offset[0] = 0
            pool.frag_offset = size
            page_pool_fragment_netmem(__pp_desc(pool, netmem), BIAS_MAX)
            return netmem
    if not netmem:
        netmem = page_pool_alloc_netmems(pool)
        if unlikely(not netmem):
            pool.frag_page = 0
            return 0
        pool.frag_page = netmem
        pool.frag_users = 1
        offset[0] = 0
        pool.frag_offset = size
        page_pool_fragment_netmem(__pp_desc(pool, netmem), BIAS_MAX)
        return netmem
    pool.frag_users += 1
    pool.frag_offset = offset[0] + size
    return netmem


cdef netmem_ref page_pool_alloc_netmem(nm_pool *pool, uint32_t *offset,
                                       uint32_t *size) noexcept nogil:
    """Models ``page_pool_alloc_netmem()``: a whole buffer when ``size * 2 > max``, else a frag,
    stretched to the end of the page when no other frag would fit (truesize stays honest)."""
    cdef uint32_t max_size = PAGE_SIZE << pool.order
    cdef netmem_ref netmem
    if <uint32_t>(size[0] << 1) > max_size:   # unsigned int arithmetic, as the kernel's
        size[0] = max_size
        offset[0] = 0
        return page_pool_alloc_netmems(pool)
    netmem = page_pool_alloc_frag_netmem(pool, offset, size[0])
    if unlikely(not netmem):
        return 0
    if pool.frag_offset + size[0] > max_size:
        size[0] = max_size - offset[0]
        pool.frag_offset = max_size
    return netmem


# ---- release and destroy ------------------------------------------------------------------------

cdef int32_t page_pool_inflight(nm_pool *pool, bint strict) noexcept nogil:
    cdef int32_t inflight = <int32_t>(pool.pages_state_hold_cnt - pool.pages_state_release_cnt)
    if strict:
        nm_trace(pool.m, TP_PAGE_POOL_RELEASE, pool.id, pool.destroy_cnt, inflight,
                 pool.pages_state_hold_cnt,
                 pool.pages_state_release_cnt)
        if inflight < 0:
            nm_warn(pool.m, NM_W_INFLIGHT_NEG, pool.id, 0, inflight)
    elif inflight < 0:
        inflight = 0
    return inflight


cdef void page_pool_empty_alloc_cache_once(nm_pool *pool) noexcept nogil:
    cdef netmem_ref netmem
    if pool.destroy_cnt:
        return
    while pool.alloc_count:
        pool.alloc_count -= 1
        netmem = pool.alloc_cache[pool.alloc_count]
        page_pool_return_netmem(pool, netmem)


cdef int page_pool_empty_ring(nm_pool *pool, int32_t *bad, int nbad) noexcept nogil:
    """Models ``page_pool_empty_ring()``; the refcounts that broke the invariant (up to
    ``nbad`` of them) land in ``bad`` for the caller's pr_crit. Returns how many broke it."""
    cdef netmem_ref netmem
    cdef int n = 0
    cdef int refcnt
    while True:
        netmem = __ptr_ring_consume(&pool.ring)
        if not netmem:
            break
        refcnt = netmem_ref_count(pool.m, netmem)
        if refcnt != 1:
            if n < nbad:
                bad[n] = refcnt
            n += 1
        page_pool_return_netmem(pool, netmem)
    return n


cdef int page_pool_scrub(nm_pool *pool, int32_t *bad, int nbad) noexcept nogil:
    """Models ``page_pool_scrub()``: empty the cache once; on the first pass unmap every mapped
    page, in flight or not; then empty the ring."""
    cdef uint32_t id
    page_pool_empty_alloc_cache_once(pool)
    pool.alloc_cache_limit = 0
    if pool.destroy_cnt == 0 and pool.dma_map:
        pool.destroy_cnt += 1
        pool.dma_sync = False
        for id in range(1, pool.dma_mapped_n + 1):
            if pool.dma_mapped[id]:
                __page_pool_unmap_netmem_dma(pool, pool.dma_mapped[id])
    else:
        pool.destroy_cnt += 1
    return page_pool_empty_ring(pool, bad, nbad)


cdef void page_pool_update_nid(nm_pool *pool, int new_nid) noexcept nogil:
    """Models ``page_pool_update_nid()``: set the node and flush the alloc cache."""
    cdef netmem_ref netmem
    nm_trace(pool.m, TP_PAGE_POOL_UPDATE_NID, pool.id, 0, pool.nid, new_nid, 0)
    pool.nid = new_nid
    while pool.alloc_count:
        pool.alloc_count -= 1
        netmem = pool.alloc_cache[pool.alloc_count]
        page_pool_return_netmem(pool, netmem)


# ---- memory-provider helpers --------------------------------------------------------------------

cdef void net_mp_niov_set_page_pool(nm_pool *pool, netmem_ref netmem) noexcept nogil:
    """Models ``net_mp_niov_set_page_pool()``: pp info, hold count, trace."""
    __pp_account_hold(pool, netmem, __pp_desc(pool, netmem))


cdef void net_mp_niov_clear_page_pool(nm_machine *m, netmem_ref netmem) noexcept nogil:
    page_pool_clear_pp_info(__netmem_desc(m, netmem))


cdef int net_mp_netmem_place_in_cache(nm_pool *pool, netmem_ref netmem) noexcept nogil:
    """Models ``net_mp_netmem_place_in_cache()``."""
    if unlikely(pool.alloc_count >= PP_ALLOC_CACHE_SIZE):
        nm_warn(pool.m, NM_W_CACHE_FULL, pool.id, netmem, pool.alloc_count)
        return -ENOSPC
    __pp_desc(pool, netmem).state = NM_ST_CACHE
    pool.alloc_cache[pool.alloc_count] = netmem
    pool.alloc_count += 1
    return 0
