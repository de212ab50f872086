# Benchmark loops that run inside the extension (numpy.random's _benchmark shape): each returns
# the elapsed monotonic ns of ``loops`` iterations; the Python runner takes medians and ratios.


cdef struct _lifo:
    uint32_t count
    netmem_ref stack[128]


def bench_floor_lifo(uint64_t loops):
    """The floor: a plain C array push/pop pair, with a compiler barrier so nothing is elided."""
    cdef _lifo *s = <_lifo *>calloc(1, sizeof(_lifo))
    cdef uint64_t i, t0, t1
    cdef netmem_ref v
    if s == NULL:
        raise MemoryError()
    for i in range(64):
        s.stack[s.count] = (i + 256) << 1
        s.count += 1
    with nogil:
        t0 = nm_now_ns()
        for i in range(loops):
            s.count -= 1
            v = s.stack[s.count]
            barrier()
            s.stack[s.count] = v
            s.count += 1
            barrier()
        t1 = nm_now_ns()
    free(s)
    return t1 - t0


def bench_pool_fast(CorePagePool pp, uint64_t loops):
    """The kernel bench's test 01: alloc + page_pool_recycle_direct (the alloc cache)."""
    cdef nm_pool *pool = pp.pool
    cdef uint64_t i, t0, t1
    cdef netmem_ref netmem
    with nogil:
        t0 = nm_now_ns()
        for i in range(loops):
            netmem = page_pool_alloc_netmems(pool)
            if unlikely(not netmem):
                break
            page_pool_put_netmem(pool, netmem, <uint32_t>-1, True)
        t1 = nm_now_ns()
    return t1 - t0


def bench_pool_ring(CorePagePool pp, uint64_t loops):
    """Test 02: alloc + put without direct recycling (the ptr_ring, refilled 64 at a time)."""
    cdef nm_pool *pool = pp.pool
    cdef uint64_t i, t0, t1
    cdef netmem_ref netmem
    with nogil:
        t0 = nm_now_ns()
        for i in range(loops):
            netmem = page_pool_alloc_netmems(pool)
            if unlikely(not netmem):
                break
            page_pool_put_netmem(pool, netmem, <uint32_t>-1, False)
        t1 = nm_now_ns()
    return t1 - t0


def bench_pool_slow(CorePagePool pp, uint64_t loops):
    """Test 03: alloc + get_page + put + put_page, so every buffer goes back to the page
    allocator and every 64th alloc takes the slow path."""
    cdef nm_pool *pool = pp.pool
    cdef nm_machine *m = pool.m
    cdef uint64_t i, t0, t1
    cdef netmem_ref netmem
    with nogil:
        t0 = nm_now_ns()
        for i in range(loops):
            netmem = page_pool_alloc_netmems(pool)
            if unlikely(not netmem):
                break
            m.pages[netmem >> 1].refcount += 1
            page_pool_put_netmem(pool, netmem, <uint32_t>-1, False)
            nm_put_page(m, netmem)
        t1 = nm_now_ns()
    return t1 - t0


def bench_iova_fast(CoreIovaDomain dom, uint64_t loops):
    """One 1-page ``alloc_iova_fast()`` + ``free_iova_fast()`` pair below 4 GiB on CPU 0: with
    a warm rcache, a magazine pop and push."""
    cdef nm_iova_domain *iovad = &dom.iovad
    cdef unsigned long limit = iovad.dma_32bit_pfn - 1
    cdef unsigned long pfn
    cdef uint64_t i, t0, t1
    with nogil:
        t0 = nm_now_ns()
        for i in range(loops):
            pfn = alloc_iova_fast(iovad, 1, limit, True, 0)
            if unlikely(pfn == 0):
                break
            free_iova_fast(iovad, pfn, 1, 0)
        t1 = nm_now_ns()
    return t1 - t0


def bench_iova_tree(CoreIovaDomain dom, uint64_t loops):
    """One 1-page ``alloc_iova()`` + ``free_iova()`` pair below 4 GiB: the tree walk from the
    cached node, insert and rebalance, lookup, erase."""
    cdef nm_iova_domain *iovad = &dom.iovad
    cdef unsigned long limit = iovad.dma_32bit_pfn - 1
    cdef unsigned long pfn = 0
    cdef uint64_t i, t0, t1
    with nogil:
        t0 = nm_now_ns()
        for i in range(loops):
            if unlikely(alloc_iova(iovad, 1, limit, True, &pfn)):
                break
            free_iova(iovad, pfn)
        t1 = nm_now_ns()
    return t1 - t0


def bench_dma_map_unmap(CoreDevice dev, uint64_t phys, uint64_t loops):
    """dma_map_page + dma_unmap_page of one page through the device's path (under dma-iommu:
    IOVA from the rcache, PTE, IOTLB sync; the unmap through the flush queue)."""
    cdef uint64_t i, t0, t1, dma
    with nogil:
        t0 = nm_now_ns()
        for i in range(loops):
            dma = nm_dma_map_phys(&dev.dev, phys, PAGE_SIZE, DMA_FROM_DEVICE, 0)
            if unlikely(dma == DMA_MAPPING_ERROR):
                break
            nm_dma_unmap_phys(&dev.dev, dma, PAGE_SIZE, DMA_FROM_DEVICE, 0)
        t1 = nm_now_ns()
    return t1 - t0


def bench_dma_iova_link(CoreDevice dev, uint64_t iova, uint64_t phys, uint64_t loops):
    """Link 64 pages into a reserved IOVA window with one IOTLB sync, then unlink them (one
    unmap, one sync); ``loops`` rounds of 64 pages."""
    cdef nm_domain *d = <nm_domain *>dev.dev.domain
    cdef uint64_t i, j, t0, t1
    with nogil:
        t0 = nm_now_ns()
        for i in range(loops):
            for j in range(64):
                iommu_map(&dev.dev, d, iova + j * PAGE_SIZE, phys + j * PAGE_SIZE, PAGE_SIZE,
                          IOMMU_WRITE, False)
            dev.dev.m.dma_stats.iotlb_syncs += 1
            iommu_unmap(d, iova, 64 * PAGE_SIZE)
            dev.dev.m.dma_stats.iotlb_syncs += 1
        t1 = nm_now_ns()
    return t1 - t0


def bench_dev_write(CoreDevice dev, uint64_t addr, uint32_t n, uint64_t loops):
    """``nm_dev_write()`` of an ``n``-byte frame at DMA address ``addr``, ``loops`` times: the
    device side of RX (RAM or BAR memory, through the IOMMU or by bus address)."""
    cdef char *frame = <char *>calloc(n, 1)
    cdef uint64_t i, t0, t1
    if frame == NULL:
        raise MemoryError()
    with nogil:
        t0 = nm_now_ns()
        for i in range(loops):
            if unlikely(nm_dev_write(&dev.dev, addr, frame, n)):
                break
        t1 = nm_now_ns()
    free(frame)
    return t1 - t0


def bench_genalloc_fill(CoreGenPool gp, uint64_t units):
    """Allocate ``units`` single units with the pool's algorithm (with first fit, a prefix of
    the newest chunk); returns how many it got."""
    cdef nm_gen_pool *pool = gp.pool
    cdef size_t unit
    cdef uint64_t i, n = 0
    gp._check_alive()
    unit = 1UL << pool.min_alloc_order
    with nogil:
        for i in range(units):
            if nm_gen_pool_alloc_owner(pool, unit, NULL) == 0:
                break
            n += 1
    return n


def bench_genalloc_first_fit(CoreGenPool gp, uint64_t loops):
    """``nm_gen_pool_alloc_owner()`` of one unit + ``nm_gen_pool_free_owner()`` of it."""
    cdef nm_gen_pool *pool = gp.pool
    cdef size_t unit
    cdef unsigned long addr
    cdef void *owner
    cdef uint64_t i, t0, t1
    gp._check_alive()
    unit = 1UL << pool.min_alloc_order
    with nogil:
        t0 = nm_now_ns()
        for i in range(loops):
            addr = nm_gen_pool_alloc_owner(pool, unit, &owner)
            if unlikely(addr == 0):
                break
            nm_gen_pool_free_owner(pool, addr, unit, &owner)
        t1 = nm_now_ns()
    return t1 - t0


def bench_genalloc_first_fit_hole(CoreGenPool gp, uint64_t loops):
    """With unit 0 free in front of a full prefix: alloc (unit 0, which leaves the hint at 1),
    alloc (the search climbs the summary levels over the prefix), free both. The elapsed ns of
    ``loops`` iterations, each two alloc + free pairs."""
    cdef nm_gen_pool *pool = gp.pool
    cdef size_t unit
    cdef unsigned long a, b
    cdef void *owner
    cdef uint64_t i, t0, t1
    gp._check_alive()
    unit = 1UL << pool.min_alloc_order
    with nogil:
        t0 = nm_now_ns()
        for i in range(loops):
            a = nm_gen_pool_alloc_owner(pool, unit, &owner)
            b = nm_gen_pool_alloc_owner(pool, unit, &owner)
            if unlikely(a == 0 or b == 0):
                break
            nm_gen_pool_free_owner(pool, a, unit, &owner)
            nm_gen_pool_free_owner(pool, b, unit, &owner)
        t1 = nm_now_ns()
    return t1 - t0


def bench_genalloc_linear_scan(CoreGenPool gp, uint64_t loops):
    """For contrast, the kernel's cost: ``find_next_zero_bit()`` scanning the newest chunk's
    bitmap word by word from bit 0, then set and clear the bit found (one unit alloc + free,
    the summary levels left alone: the bit is back before anyone looks)."""
    cdef nm_gen_pool_chunk *chunk
    cdef unsigned long *map
    cdef unsigned long nwords, w, bit
    cdef uint64_t i, t0, t1
    gp._check_alive()
    chunk = gp.pool.chunks
    if chunk == NULL:
        raise NetmemError(EINVAL, "bench_genalloc_linear_scan: the pool has no chunk")
    map = chunk.level[0]
    nwords = chunk.nwords[0]
    with nogil:
        t0 = nm_now_ns()
        for i in range(loops):
            w = 0
            while w < nwords and map[w] == ~0UL:
                w += 1
            if unlikely(w == nwords):
                break
            bit = __ffz(map[w])
            map[w] |= 1UL << bit
            chunk.avail -= 1
            barrier()
            map[w] &= ~(1UL << bit)
            chunk.avail += 1
            barrier()
        t1 = nm_now_ns()
    return t1 - t0


def bench_memcpy(uint32_t size, uint64_t loops):
    """``loops`` copies of ``size`` hot bytes (the floor of a per-frame copy)."""
    cdef char *a = <char *>malloc(size)
    cdef char *b = <char *>malloc(size)
    cdef uint64_t i, t0, t1
    if a == NULL or b == NULL:
        free(a)
        free(b)
        raise MemoryError()
    memset(a, 1, size)
    with nogil:
        t0 = nm_now_ns()
        for i in range(loops):
            memcpy(b, a, size)
            barrier()
        t1 = nm_now_ns()
    free(a)
    free(b)
    return t1 - t0


cdef inline void __put_be32(uint8_t *p, uint32_t v) noexcept nogil:
    p[0] = <uint8_t>(v >> 24)
    p[1] = <uint8_t>(v >> 16)
    p[2] = <uint8_t>(v >> 8)
    p[3] = <uint8_t>v


def bench_rx(CoreNetDevice nic, uint8_t[::1] arena, const uint64_t[::1] offs,
             const uint32_t[::1] lens, const uint32_t[::1] seq_base,
             uint32_t per_flow, uint64_t first, uint64_t rounds, uint32_t payload,
             uint32_t bufsize, bint devmem=False):
    """End-to-end receive: each round rewrites the sequence numbers and IP IDs of a small hot
    set of IPv4 frames (flow-major, ``per_flow`` segments of ``payload`` bytes per flow) to
    continue every stream, runs them through the device, NAPI, GRO and TCP, then reads every
    socket to empty (the application, process context) with ``recvmsg`` copies of ``bufsize``,
    or with ``devmem``, ``recvmsg(MSG_SOCK_DEVMEM)`` of ``bufsize`` (room for 1024 cmsgs) and
    ``SO_DEVMEM_DONTNEED`` of every token. Rounds ``first`` .. ``first + rounds - 1``; the
    caller ran the earlier ones. Returns the elapsed ns."""
    cdef nm_net *n = nic.machine.m.net
    cdef uint32_t nflows = seq_base.shape[0], k, f, j, s
    cdef uint64_t r, t0, t1, seg
    cdef uint8_t *p
    cdef uint8_t *scratch = <uint8_t *>malloc(bufsize)
    cdef uint32_t *tokens = <uint32_t *>malloc(2 * MAX_DONTNEED_TOKENS * sizeof(uint32_t))
    if scratch == NULL or tokens == NULL:
        free(scratch)
        free(tokens)
        raise MemoryError()
    _nd_reserve(nic.nd, nflows * per_flow)
    _cm_reserve(n, 1024)
    with nogil:
        t0 = nm_now_ns()
        for r in range(first, first + rounds):
            for f in range(nflows):
                for j in range(per_flow):
                    k = f * per_flow + j
                    seg = r * per_flow + j
                    p = &arena[offs[k]]
                    __put_be32(p + 38, <uint32_t>(seq_base[f] + seg * payload))
                    p[18] = <uint8_t>((seg + 1) >> 8)
                    p[19] = <uint8_t>(seg + 1)
            nm_netdev_receive(n, nic.nd, &arena[0], &offs[0], &lens[0], 0, nflows * per_flow)
            for s in range(n.nr_socks):
                if n.socks[s].used:
                    if devmem:
                        __bench_devmem_drain(n, s, scratch, bufsize, tokens)
                    else:
                        while tcp_recvmsg_copy(n, s, scratch, bufsize) > 0:
                            pass
        t1 = nm_now_ns()
    free(scratch)
    free(tokens)
    return t1 - t0


cdef void __bench_devmem_drain(nm_net *n, uint32_t s, uint8_t *scratch, uint32_t bufsize,
                               uint32_t *tokens) noexcept nogil:
    """What ncdevmem does per socket: recvmsg(MSG_SOCK_DEVMEM) until empty, each call's tokens
    returned with SO_DEVMEM_DONTNEED (runs of consecutive tokens as one entry)."""
    cdef nm_devmem_rx rx
    cdef uint32_t i, nt
    while True:
        rx.buf = scratch
        rx.buf_used = 0
        rx.cm = n.cm_scratch
        rx.cm_max = 1024
        rx.ncm = 0
        if tcp_recvmsg_devmem(n, s, &rx, bufsize) <= 0:
            return
        nt = 0
        for i in range(rx.ncm):
            if rx.cm[i].cmsg_type != SCM_DEVMEM_DMABUF:
                continue
            if nt and tokens[2 * nt - 2] + tokens[2 * nt - 1] == rx.cm[i].frag_token:
                tokens[2 * nt - 1] += 1
                continue
            if nt == MAX_DONTNEED_TOKENS:
                sock_devmem_dontneed(n, &n.socks[s], tokens, nt)
                nt = 0
            tokens[2 * nt] = rx.cm[i].frag_token
            tokens[2 * nt + 1] = 1
            nt += 1
        sock_devmem_dontneed(n, &n.socks[s], tokens, nt)


# ---- the floor of the replay's data movement ----------------------------------------------------

cdef inline uint64_t __xor_words(const uint8_t *p, uint32_t n) noexcept nogil:
    """The XOR of the 8-byte words of ``n`` bytes at ``p`` (the last one zero-padded): a read of
    every byte as fast as ``memcmp()``, whose result a test can check."""
    cdef uint64_t x = 0, w
    cdef uint32_t j
    for j in range(n // 8):
        memcpy(&w, p + 8 * j, 8)
        x ^= w
    w = 0
    memcpy(&w, p + n // 8 * 8, n % 8)
    return x ^ w


cdef uint64_t __bytes_floor_pass(const uint8_t *arena, const uint64_t *offs,
                                 const uint32_t *lens, uint32_t n, uint32_t chunk,
                                 uint8_t *bufs, uint32_t nbufs, uint32_t buf_size,
                                 uint32_t *next) noexcept nogil:
    """One pass of ``bench_bytes_floor()`` over ``n`` frames; returns the sum of the pieces'
    ``__xor_words()`` as read back."""
    cdef uint32_t s = 0, e, f, b, c, done
    cdef uint64_t check = 0
    while s < n:
        e = min(s + chunk, n)
        b = next[0]
        for f in range(s, e):           # the device's writes, a buffer per buf_size bytes
            done = 0
            while done < lens[f]:
                c = min(lens[f] - done, buf_size)
                memcpy(bufs + <uint64_t>b * buf_size, arena + offs[f] + done, c)
                done += c
                b = b + 1 if b + 1 < nbufs else 0
        b = next[0]
        for f in range(s, e):           # the application's reads of what they wrote
            done = 0
            while done < lens[f]:
                c = min(lens[f] - done, buf_size)
                check += __xor_words(bufs + <uint64_t>b * buf_size, c)
                done += c
                b = b + 1 if b + 1 < nbufs else 0
        next[0] = b
        s = e
    return check


def bench_bytes_floor(const uint8_t[::1] arena, const uint64_t[::1] offs,
                      const uint32_t[::1] lens, uint32_t chunk, uint32_t nbufs,
                      uint32_t buf_size, uint64_t loops):
    """The floor of a replay's data movement, with no stack: ``loops`` passes over the frames
    of a trace as the replay moves their bytes. Each frame is copied (``memcpy()``: the
    device's DMA write) into the next buffers of a ring of ``nbufs`` of ``buf_size`` bytes (the
    posted buffers, taken in turn as a page_pool's ptr_ring hands them back), ``chunk`` frames
    at a time, and each chunk's buffers are read back whole (``__xor_words()``: the
    application's read and check) before the next. Returns the monotonic ns of the loops;
    raises ``RuntimeError`` when what was read back is not what the trace holds (the sum of
    each piece's ``__xor_words()``, taken from the trace beforehand, untimed)."""
    cdef uint32_t n = offs.shape[0], f, done, c, next = 0
    cdef uint64_t i, t0, t1, want = 0, got = 0, used = 0, size = <uint64_t>nbufs * buf_size
    cdef uint8_t *bufs
    if lens.shape[0] != n or chunk == 0 or nbufs == 0 or buf_size == 0:
        raise ValueError("bench_bytes_floor: lens must match offs; chunk, nbufs, buf_size > 0")
    for f in range(n):
        if offs[f] + lens[f] > <uint64_t>arena.shape[0]:
            raise ValueError(f"bench_bytes_floor: frame {f} runs past the arena")
        used = (used if f % chunk else 0) + (lens[f] + buf_size - 1) // buf_size
        if used > nbufs:
            raise ValueError(f"bench_bytes_floor: the chunk of frame {f} needs more than the "
                             f"{nbufs} buffers of the ring")
        done = 0
        while done < lens[f]:
            c = min(lens[f] - done, buf_size)
            want += __xor_words(&arena[offs[f] + done], c)
            done += c
    bufs = <uint8_t *>_map_lazy(size, True)
    memset(bufs, 0, size)
    if n:
        with nogil:
            t0 = nm_now_ns()
            for i in range(loops):
                got += __bytes_floor_pass(&arena[0], &offs[0], &lens[0], n, chunk, bufs,
                                          nbufs, buf_size, &next)
            t1 = nm_now_ns()
    else:
        t0 = t1 = 0
    munmap(bufs, size)
    if got != want * loops:
        raise RuntimeError("bench_bytes_floor: the bytes read back are not the trace's")
    return t1 - t0
