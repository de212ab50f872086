# dma-iommu: a device's DMA addresses are IOVAs translated by its IOMMU domain.
#
# Models drivers/iommu/dma-iommu.c (iommu_dma_alloc_iova, iommu_dma_map_phys, __iommu_dma_unmap,
# the flush queue in lazy mode) over the IOVA allocator of iova.pxi, with the domain's page table
# as a hash of IOVA pfn -> (phys pfn, prot). One domain per device (its default domain). Every
# iommu_map() ends in one IOTLB sync; a lazy unmap defers the sync and the IOVA's reuse to the
# flush queue, a strict one syncs at once. Departures: 4 KiB IOMMU pages only (no superpages), a
# 48-bit aperture, no untrusted-device bouncing.

cdef enum:
    IOMMU_READ = 1 << 0
    IOMMU_WRITE = 1 << 1
    NM_IOMMU_APERTURE_BITS = 48
    NM_PTE_EMPTY = 0

cdef extern from *:
    """
    #define NM_PTE_TOMB (~0ULL)
    """
    const uint64_t NM_PTE_TOMB


cdef struct nm_domain:
    nm_iova_domain iovad
    nm_fq fq
    bint lazy                       # flush queue in use (iommu.strict=0)
    bint pci_32bit_workaround
    uint64_t depot_deadline_ns      # the rcache depot work (100 ms), 0 when not scheduled
    uint64_t *keys                  # page table: iova pfn + 1, NM_PTE_EMPTY or NM_PTE_TOMB
    uint64_t *vals                  # phys pfn << 2 | prot
    uint64_t cap
    uint64_t used                   # live + tombstones
    uint64_t live


cdef inline uint64_t __pte_hash(uint64_t k) noexcept nogil:
    k ^= k >> 33
    k *= 0xff51afd7ed558ccdULL
    k ^= k >> 33
    return k


cdef int __pt_grow(nm_domain *d) noexcept nogil:
    cdef uint64_t *ok = d.keys
    cdef uint64_t *ov = d.vals
    cdef uint64_t ocap = d.cap, i, j, ncap = d.cap * 2 if d.cap else 1024
    d.keys = <uint64_t *>calloc(ncap, sizeof(uint64_t))
    d.vals = <uint64_t *>calloc(ncap, sizeof(uint64_t))
    if d.keys == NULL or d.vals == NULL:
        free(d.keys)
        free(d.vals)
        d.keys, d.vals = ok, ov
        return -ENOMEM
    d.cap = ncap
    d.used = 0
    for i in range(ocap):
        if ok[i] != NM_PTE_EMPTY and ok[i] != NM_PTE_TOMB:
            j = __pte_hash(ok[i]) & (ncap - 1)
            while d.keys[j] != NM_PTE_EMPTY:
                j = (j + 1) & (ncap - 1)
            d.keys[j] = ok[i]
            d.vals[j] = ov[i]
            d.used += 1
    free(ok)
    free(ov)
    return 0


cdef inline int64_t __pt_find(nm_domain *d, uint64_t iova_pfn) noexcept nogil:
    cdef uint64_t key = iova_pfn + 1, j
    if d.cap == 0:
        return -1
    j = __pte_hash(key) & (d.cap - 1)
    while d.keys[j] != NM_PTE_EMPTY:
        if d.keys[j] == key:
            return <int64_t>j
        j = (j + 1) & (d.cap - 1)
    return -1


cdef int __pt_set(nm_domain *d, uint64_t iova_pfn, uint64_t val) noexcept nogil:
    cdef uint64_t key = iova_pfn + 1, j
    if (d.used + 1) * 4 > d.cap * 3 and __pt_grow(d):
        return -ENOMEM
    j = __pte_hash(key) & (d.cap - 1)
    while d.keys[j] != NM_PTE_EMPTY and d.keys[j] != NM_PTE_TOMB:
        if d.keys[j] == key:
            return -EEXIST
        j = (j + 1) & (d.cap - 1)
    if d.keys[j] == NM_PTE_EMPTY:
        d.used += 1
    d.keys[j] = key
    d.vals[j] = val
    d.live += 1
    return 0


cdef nm_domain *iommu_domain_alloc(nm_machine *m, bint lazy, bint is_pci) noexcept nogil:
    """The device's default DMA domain: an IOVA domain from pfn 1 and, in lazy mode, a flush
    queue (``iommu_dma_init_domain()``)."""
    cdef nm_domain *d = <nm_domain *>calloc(1, sizeof(nm_domain))
    if d == NULL:
        return NULL
    if init_iova_domain(&d.iovad, PAGE_SIZE, 1) < 0:
        free(d)
        return NULL
    d.lazy = lazy
    d.pci_32bit_workaround = is_pci
    if lazy and iommu_dma_fq_init(&d.fq, m.nr_cpus, False) < 0:
        put_iova_domain(&d.iovad)
        free(d)
        return NULL
    return d


cdef void iommu_domain_free(nm_domain *d) noexcept nogil:
    if d.lazy:
        iommu_dma_fq_destroy(&d.fq, &d.iovad)
    put_iova_domain(&d.iovad)
    free(d.keys)
    free(d.vals)
    free(d)


cdef void __domain_fold_stats(nm_machine *m, nm_domain *d) noexcept nogil:
    """Add the domain's allocator and queue counters to the machine's (before a reset)."""
    m.dma_stats.rcache_hits += d.iovad.rcache_hits
    m.dma_stats.rcache_misses += d.iovad.rcache_misses
    d.iovad.rcache_hits = 0
    d.iovad.rcache_misses = 0
    if d.lazy:
        m.dma_stats.fq_flushes += d.fq.fq_flushes
        m.dma_stats.iotlb_syncs += d.fq.iotlb_syncs
        d.fq.fq_flushes = 0
        d.fq.iotlb_syncs = 0


cdef uint64_t iommu_dma_alloc_iova(nm_device *dev, nm_domain *d, uint64_t size,
                                   uint64_t dma_limit) noexcept nogil:
    """Models ``iommu_dma_alloc_iova()``: PCI devices try the 32-bit space first and, once that
    fails, use their full mask from then on (with the kernel's notice)."""
    cdef uint64_t iova_len = size >> PAGE_SHIFT
    cdef uint64_t iova
    cdef uint64_t aperture = (1ULL << NM_IOMMU_APERTURE_BITS) - 1
    if dma_limit > aperture:
        dma_limit = aperture
    if dma_limit > 0xffffffffULL and d.pci_32bit_workaround:
        iova = alloc_iova_fast(&d.iovad, iova_len, 0xffffffffULL >> PAGE_SHIFT, False,
                               dev.m.cpu)
        if iova:
            return iova << PAGE_SHIFT
        d.pci_32bit_workaround = False
        nm_warn(dev.m, NM_P_DAC_NOTICE, dev.id, 0, 64 - __builtin_clzll(dma_limit))
    iova = alloc_iova_fast(&d.iovad, iova_len, dma_limit >> PAGE_SHIFT, True, dev.m.cpu)
    return iova << PAGE_SHIFT


cdef void iommu_dma_free_iova(nm_device *dev, nm_domain *d, uint64_t iova,
                              uint64_t size, bint queued) noexcept nogil:
    """Models ``iommu_dma_free_iova()``: ``queued`` is ``gather && gather->queued``, which only
    ``__iommu_dma_unmap()`` and ``dma_iova_destroy()`` with a mapped length set (in lazy mode);
    the callers that pass a NULL gather (``dma_iova_free()``, the map-failure paths) free at
    once through ``free_iova_fast()``. No MSI cookies in the model."""
    if queued:
        queue_iova(&d.fq, &d.iovad, iova >> PAGE_SHIFT, size >> PAGE_SHIFT, dev.m.cpu,
                   dev.m.clock_ns)
    else:
        free_iova_fast(&d.iovad, iova >> PAGE_SHIFT, size >> PAGE_SHIFT, dev.m.cpu)


cdef inline int dma_info_to_prot(int dir) noexcept nogil:
    if dir == DMA_BIDIRECTIONAL:
        return IOMMU_READ | IOMMU_WRITE
    if dir == DMA_TO_DEVICE:
        return IOMMU_READ
    if dir == DMA_FROM_DEVICE:
        return IOMMU_WRITE
    return 0


cdef int iommu_map(nm_device *dev, nm_domain *d, uint64_t iova, uint64_t phys, uint64_t size,
                   int prot, bint sync) noexcept nogil:
    """Models ``iommu_map()`` (``iommu_map_nosync()`` when not ``sync``): one PTE per page;
    on failure the pages mapped so far are unmapped again."""
    cdef uint64_t off = 0
    cdef int64_t slot
    while off < size:
        if __pt_set(d, (iova + off) >> PAGE_SHIFT, ((phys + off) >> PAGE_SHIFT) << 2 | prot):
            while off:
                off -= PAGE_SIZE
                slot = __pt_find(d, (iova + off) >> PAGE_SHIFT)
                d.keys[slot] = NM_PTE_TOMB
                d.live -= 1
            return -ENOMEM
        off += PAGE_SIZE
    if sync:
        dev.m.dma_stats.iotlb_syncs += 1
    return 0


cdef uint64_t iommu_unmap(nm_domain *d, uint64_t iova, uint64_t size) noexcept nogil:
    """Models ``iommu_unmap_fast()``: clear the PTEs; returns the bytes unmapped."""
    cdef uint64_t off = 0, done = 0
    cdef int64_t slot
    while off < size:
        slot = __pt_find(d, (iova + off) >> PAGE_SHIFT)
        if slot >= 0:
            d.keys[slot] = NM_PTE_TOMB
            d.live -= 1
            done += PAGE_SIZE
        off += PAGE_SIZE
    return done


cdef uint64_t iommu_dma_map_phys(nm_device *dev, uint64_t phys, uint64_t size, int dir,
                                 unsigned long attrs) noexcept nogil:
    """Models ``iommu_dma_map_phys()``: a granule-aligned IOVA range, mapped and synced."""
    cdef nm_domain *d = <nm_domain *>dev.domain
    cdef uint64_t iova_off = phys & (PAGE_SIZE - 1)
    cdef uint64_t len = (size + iova_off + PAGE_SIZE - 1) & ~<uint64_t>(PAGE_SIZE - 1)
    cdef uint64_t iova = iommu_dma_alloc_iova(dev, d, len, dev.dma_mask)
    if not iova:
        return DMA_MAPPING_ERROR
    if iommu_map(dev, d, iova, phys - iova_off, len, dma_info_to_prot(dir), True):
        iommu_dma_free_iova(dev, d, iova, len, False)
        return DMA_MAPPING_ERROR
    return iova + iova_off


cdef void iommu_dma_unmap_phys(nm_device *dev, uint64_t addr, uint64_t size, int dir,
                               unsigned long attrs) noexcept nogil:
    """Models ``__iommu_dma_unmap()``: lazy mode leaves the IOTLB sync to the flush queue."""
    cdef nm_domain *d = <nm_domain *>dev.domain
    cdef uint64_t iova_off = addr & (PAGE_SIZE - 1)
    cdef uint64_t len = (size + iova_off + PAGE_SIZE - 1) & ~<uint64_t>(PAGE_SIZE - 1)
    addr -= iova_off
    iommu_unmap(d, addr, len)
    if not d.lazy:
        dev.m.dma_stats.iotlb_syncs += 1
    iommu_dma_free_iova(dev, d, addr, len, d.lazy)


cdef int iommu_iova_to_phys(nm_device *dev, uint64_t addr, bint write,
                            uint64_t *phys) noexcept nogil:
    """Models ``iommu_iova_to_phys()`` plus the permission check of a device access: 0, or
    -EFAULT when the page is not mapped or not mapped for that direction."""
    cdef nm_domain *d = <nm_domain *>dev.domain
    cdef int64_t slot = __pt_find(d, addr >> PAGE_SHIFT)
    cdef uint64_t v
    if slot < 0:
        return -EFAULT
    v = d.vals[slot]
    if not (v & (IOMMU_WRITE if write else IOMMU_READ)):
        return -EFAULT
    phys[0] = ((v >> 2) << PAGE_SHIFT) | (addr & (PAGE_SIZE - 1))
    return 0


cdef int iommu_dev_access(nm_device *dev, uint64_t addr, char *buf, uint64_t n,
                          bint write) noexcept nogil:
    """A device access through its IOMMU: every page is translated, checked and resolved (RAM
    or a BAR) before any byte moves; the first bad page is the fault."""
    cdef uint64_t off = 0, chunk, phys
    cdef uint64_t page = addr & ~<uint64_t>(PAGE_SIZE - 1)
    while page < addr + n:
        if iommu_iova_to_phys(dev, page, write, &phys) or \
                nm_phys_to_ptr(dev.m, phys, PAGE_SIZE) == NULL:
            nm_record_fault(dev, max(page, addr), write)
            return -EFAULT
        page += PAGE_SIZE
    while off < n:
        iommu_iova_to_phys(dev, addr + off, write, &phys)
        chunk = min(n - off, PAGE_SIZE - ((addr + off) & (PAGE_SIZE - 1)))
        __dev_copy(nm_phys_to_ptr(dev.m, phys, chunk), buf + off, chunk, write)
        off += chunk
    return 0


# ---- a page pool's IOVA window (the host provider's iova_window=True) ----------------------------
# The seed proposal: reserve one IOVA range for the whole pool with dma_iova_try_alloc() and link
# each page as it enters the pool (dma_iova_link(), one dma_iova_sync() per slow-path batch), so
# the device sees the pool as one contiguous range. A page that finds no free slot falls back to
# dma_map_page(); leaving the pool unlinks it (dma_iova_unlink(): an immediate IOTLB sync).

cdef int pp_iova_window_init(nm_pool *pool, uint32_t slots) noexcept nogil:
    """``dma_iova_try_alloc()`` of ``slots`` buffers; -EOPNOTSUPP where the two-step API is not
    available (no dma-iommu, no DMA mapping), -ENOMEM when no IOVA range is free."""
    cdef uint64_t size = <uint64_t>slots * (PAGE_SIZE << pool.order)
    cdef uint32_t i
    if pool.dev == NULL or pool.dev.domain == NULL or not pool.dma_map or slots == 0:
        return -EOPNOTSUPP
    pool.win_free = <uint32_t *>malloc(slots * sizeof(uint32_t))
    if pool.win_free == NULL:
        return -ENOMEM
    pool.win_addr = iommu_dma_alloc_iova(pool.dev, <nm_domain *>pool.dev.domain, size,
                                         pool.dev.dma_mask)
    if not pool.win_addr:
        free(pool.win_free)
        pool.win_free = NULL
        return -ENOMEM
    for i in range(slots):
        pool.win_free[i] = slots - 1 - i      # slot 0 first: the window fills from its start
    pool.win_slots = slots
    pool.win_free_n = slots
    return 0


cdef uint64_t pp_iova_window_link(nm_pool *pool, uint64_t phys, uint64_t size) noexcept nogil:
    """``dma_iova_link()`` of one buffer into a free slot, with the pool's ``p.dma_dir`` as its
    direction (IOMMU_WRITE for DMA_FROM_DEVICE, read and write for DMA_BIDIRECTIONAL);
    DMA_MAPPING_ERROR when no slot is free."""
    cdef uint32_t slot
    cdef uint64_t iova
    if pool.win_free_n == 0:
        return DMA_MAPPING_ERROR
    pool.win_free_n -= 1
    slot = pool.win_free[pool.win_free_n]
    iova = pool.win_addr + slot * size
    if iommu_map(pool.dev, <nm_domain *>pool.dev.domain, iova, phys, size,
                 dma_info_to_prot(pool.dma_dir), False):
        pool.win_free_n += 1
        return DMA_MAPPING_ERROR
    pool.win_unsynced += 1
    pool.dev.nr_mapped += 1
    pool.dev.m.dma_stats.maps += 1
    return iova


cdef void pp_iova_window_sync(nm_pool *pool) noexcept nogil:
    """``dma_iova_sync()``: one IOTLB sync for everything linked since the last one."""
    if pool.win_unsynced:
        pool.win_unsynced = 0
        pool.dev.m.dma_stats.iotlb_syncs += 1


cdef bint pp_iova_window_unlink(nm_pool *pool, uint64_t dma, uint64_t size) noexcept nogil:
    """``dma_iova_unlink()`` of a buffer in the window; False when ``dma`` is not in it."""
    if not pool.win_slots or dma < pool.win_addr or dma >= pool.win_addr + pool.win_slots * size:
        return False
    iommu_unmap(<nm_domain *>pool.dev.domain, dma, size)
    pool.dev.m.dma_stats.iotlb_syncs += 1
    pool.dev.nr_mapped -= 1
    pool.dev.m.dma_stats.unmaps += 1
    pool.win_free[pool.win_free_n] = <uint32_t>((dma - pool.win_addr) // size)
    pool.win_free_n += 1
    return True


cdef void pp_iova_window_free(nm_pool *pool) noexcept nogil:
    """``dma_iova_free()`` once every buffer has left the pool: a NULL gather, so the window
    goes straight back to the rcache or tree even in lazy mode."""
    if not pool.win_slots:
        return
    iommu_dma_free_iova(pool.dev, <nm_domain *>pool.dev.domain, pool.win_addr,
                        <uint64_t>pool.win_slots * (PAGE_SIZE << pool.order), False)
    free(pool.win_free)
    pool.win_free = NULL
    pool.win_slots = 0
