# The DMA API under the data plane: dma-direct with swiotlb bouncing, device-side access with
# faults, and (under dma-iommu) the IOMMU path.
#
# Models kernel/dma/direct.{c,h}, kernel/dma/swiotlb.c and kernel/dma/mapping.c. A mapping is a
# DMA address the device may use; the device reaches memory only through nm_dev_write() and
# nm_dev_read() (the data plane's entry points; nm_dev_access() underneath), which check the
# address the way the platform would (the mask without an IOMMU, the IOMMU's page table with one)
# and record a fault instead of touching memory it may not. The target is RAM or PCI BAR memory:
# every memory BAR sits in the machine's BAR table (m.bars, sorted by address) with the base of
# its lazily committed mapping, so a BAR target is a memcpy as RAM is. A device that reaches a
# peer's BAR through a switch (no ACS redirect: pci_p2pdma_map_type() would say BUS_ADDR) sends
# the bus address itself, which the switch routes before any IOMMU sees it; the topology records
# those (device, BAR) pairs in the table. Departures: swiotlb has one area (the kernel keeps one
# per CPU) and no min_align_mask; its "buffer is full" message is counted (nr_map_errors), not
# logged; memory that is not RAM is never bounced (DMA_ATTR_MMIO's rule, whatever the attrs).
#
# DMA into memory nobody mapped (model-only: the kernel cannot see it). Without an IOMMU (none,
# passthrough), and for a bus address a switch routes to a peer's BAR in every mode, nothing stops
# a device that writes where no mapping points: on a real machine the bytes land and corrupt
# whatever lives there, silently. The model lets them land too (so everything else runs as on the
# hardware) but records the access (m.unmapped, dma_stats.unmapped_accesses). What counts as
# mapped is a count over RAM and over each BAR (nm_cover_table, lazily committed): every mapping
# whose DMA address is the physical or bus address itself (dma-direct's, a swiotlb slot's, a
# p2pdma bus-address segment's) adds one, while it lives, to each 2 MiB-aligned 2 MiB it spans
# whole and to each other 4 KiB page it touches, with the device that holds it. Coverage is at
# page granularity, and once two devices map a page (at one level) it counts as mapped for every
# device until all those mappings go (only a single holder is kept).

cdef enum:
    NM_IOMMU_NONE = 0
    NM_IOMMU_PASSTHROUGH = 1
    NM_IOMMU_DMA = 2
    IO_TLB_SHIFT = 11               # include/linux/swiotlb.h: 2 KiB slots
    IO_TLB_SIZE = 1 << 11
    IO_TLB_SEGSIZE = 128            # a mapping never crosses 128 slots (256 KiB)
    DMA_ATTR_WEAK_ORDERING = 1 << 1     # include/linux/dma-mapping.h
    DMA_ATTR_SKIP_CPU_SYNC = 1 << 5
    DMA_ATTR_MMIO = 1 << 10
    # Unmapped accesses kept for m.iommu.unmapped_accesses (the counter counts them all): a
    # provider that DMAs into nothing does it on every frame, and a replay of millions of frames
    # must not keep millions of records.
    NM_UNMAPPED_LOG_MAX = 4096
    NM_COVER_CHUNK_SHIFT = 21       # the coverage table's coarse level: 2 MiB, x86-64's PMD_SIZE
    NM_COVER_CHUNK_PAGES = 1 << (NM_COVER_CHUNK_SHIFT - PAGE_SHIFT)


# ---- swiotlb ------------------------------------------------------------------------------------

cdef int swiotlb_init(nm_machine *m, uint64_t start, uint64_t size) noexcept nogil:
    cdef nm_swiotlb *t = &m.swiotlb
    t.start = start
    t.nslots = <uint32_t>(size >> IO_TLB_SHIFT)
    t.used = 0
    t.busy = <uint8_t *>calloc(t.nslots + 1, 1)
    t.orig_addr = <uint64_t *>calloc(t.nslots + 1, sizeof(uint64_t))
    t.span = <uint32_t *>calloc(t.nslots + 1, sizeof(uint32_t))
    t.mapping_size = <uint64_t *>calloc(t.nslots + 1, sizeof(uint64_t))
    if t.busy == NULL or t.orig_addr == NULL or t.span == NULL or t.mapping_size == NULL:
        return -ENOMEM
    return 0


cdef void swiotlb_exit(nm_machine *m) noexcept nogil:
    free(m.swiotlb.busy)
    free(m.swiotlb.orig_addr)
    free(m.swiotlb.span)
    free(m.swiotlb.mapping_size)
    m.swiotlb.nslots = 0


cdef inline bint is_swiotlb_buffer(nm_machine *m, uint64_t phys) noexcept nogil:
    return m.swiotlb.nslots and m.swiotlb.start <= phys < \
        m.swiotlb.start + (<uint64_t>m.swiotlb.nslots << IO_TLB_SHIFT)


cdef inline char *nm_phys_to_virt(nm_machine *m, uint64_t phys) noexcept nogil:
    return m.mem + phys


cdef void swiotlb_bounce(nm_machine *m, uint64_t tlb_addr, uint64_t size, int dir) noexcept nogil:
    """Models ``swiotlb_bounce()``: copy between the original buffer and its bounce slots."""
    cdef uint32_t index = <uint32_t>((tlb_addr - m.swiotlb.start) >> IO_TLB_SHIFT)
    cdef uint32_t head = index
    cdef uint64_t orig
    while head and not m.swiotlb.span[head]:
        head -= 1           # the slot that starts the mapping holds its original address
    orig = m.swiotlb.orig_addr[head] + (tlb_addr - (m.swiotlb.start +
                                                    (<uint64_t>head << IO_TLB_SHIFT)))
    if dir == DMA_TO_DEVICE:
        memcpy(nm_phys_to_virt(m, tlb_addr), nm_phys_to_virt(m, orig), size)
    else:
        memcpy(nm_phys_to_virt(m, orig), nm_phys_to_virt(m, tlb_addr), size)


cdef uint64_t swiotlb_tbl_map_single(nm_device *dev, uint64_t orig, uint64_t size,
                                     int dir, unsigned long attrs) noexcept nogil:
    """Models ``swiotlb_tbl_map_single()``: next-fit over 2 KiB slots, page-aligned for a
    mapping of a page or more, never across a 128-slot segment; the original is copied to the
    slots at once (so a partial device write cannot expose stale bounce data)."""
    cdef nm_machine *m = dev.m
    cdef nm_swiotlb *t = &m.swiotlb
    cdef uint32_t nslots = <uint32_t>((size + IO_TLB_SIZE - 1) >> IO_TLB_SHIFT)
    cdef uint32_t stride = (PAGE_SIZE >> IO_TLB_SHIFT) if size >= PAGE_SIZE else 1
    cdef uint32_t i, j, tries
    cdef uint64_t tlb
    if nslots == 0 or nslots > IO_TLB_SEGSIZE or t.nslots == 0:
        return DMA_MAPPING_ERROR
    i = 0
    tries = 0
    while tries < t.nslots:
        if i % stride == 0 and i // IO_TLB_SEGSIZE == (i + nslots - 1) // IO_TLB_SEGSIZE \
                and i + nslots <= t.nslots:
            j = 0
            while j < nslots and not t.busy[i + j]:
                j += 1
            if j == nslots:
                for j in range(nslots):
                    t.busy[i + j] = 1
                t.span[i] = nslots
                t.orig_addr[i] = orig
                t.mapping_size[i] = size
                t.used += nslots
                tlb = t.start + (<uint64_t>i << IO_TLB_SHIFT)
                swiotlb_bounce(m, tlb, size, DMA_TO_DEVICE)
                return tlb
        i += 1
        tries += 1
    return DMA_MAPPING_ERROR


cdef void swiotlb_tbl_unmap_single(nm_device *dev, uint64_t tlb, uint64_t size, int dir,
                                   unsigned long attrs) noexcept nogil:
    """Models ``swiotlb_tbl_unmap_single()``: bounce back for the CPU, then free the slots."""
    cdef nm_machine *m = dev.m
    cdef uint32_t i = <uint32_t>((tlb - m.swiotlb.start) >> IO_TLB_SHIFT)
    cdef uint32_t j, n = m.swiotlb.span[i]
    if not (attrs & DMA_ATTR_SKIP_CPU_SYNC) and (dir == DMA_FROM_DEVICE or
                                                 dir == DMA_BIDIRECTIONAL):
        swiotlb_bounce(m, tlb, size, DMA_FROM_DEVICE)
    for j in range(n):
        m.swiotlb.busy[i + j] = 0
    m.swiotlb.span[i] = 0
    m.swiotlb.used -= n


# ---- dma-direct ---------------------------------------------------------------------------------

cdef inline bint dma_capable(nm_device *dev, uint64_t addr, uint64_t size) noexcept nogil:
    return size == 0 or addr + size - 1 <= dev.dma_mask


cdef uint64_t dma_direct_map_phys(nm_device *dev, uint64_t phys, uint64_t size, int dir,
                                  unsigned long attrs) noexcept nogil:
    """Models ``dma_direct_map_phys()``: the physical address itself when the device can reach
    it, else a swiotlb bounce slot (never for MMIO: DMA_ATTR_MMIO, or any target that is not
    RAM), else DMA_MAPPING_ERROR with the kernel's WARN_ONCE."""
    cdef uint64_t tlb
    if likely(dma_capable(dev, phys, size)):
        return phys
    if dev.m.swiotlb.nslots and not (attrs & DMA_ATTR_MMIO) and __is_ram(dev.m, phys, size):
        tlb = swiotlb_tbl_map_single(dev, phys, size, dir, attrs)
        if tlb == DMA_MAPPING_ERROR:
            return DMA_MAPPING_ERROR
        if unlikely(not dma_capable(dev, tlb, size)):
            # swiotlb_map(): the bounce slot itself is out of reach (a mask below 32 bits).
            swiotlb_tbl_unmap_single(dev, tlb, size, dir, attrs | DMA_ATTR_SKIP_CPU_SYNC)
            __dma_overflow_warn(dev, tlb, size)
            return DMA_MAPPING_ERROR
        dev.m.dma_stats.bounces += 1
        dev.dma_skip_sync = 0          # the first swiotlb mapping turns syncs on
        return tlb
    __dma_overflow_warn(dev, phys, size)
    return DMA_MAPPING_ERROR


cdef void __dma_overflow_warn(nm_device *dev, uint64_t addr, uint64_t size) noexcept nogil:
    """The dev_WARN_ONCE of an address the device's mask cannot reach."""
    if not dev.overflow_warned:
        dev.overflow_warned = 1
        nm_warn(dev.m, NM_W_DMA_OVERFLOW, dev.id, addr, <int64_t>size)


cdef inline bint dma_dev_need_sync(nm_device *dev) noexcept nogil:
    """Models ``dma_dev_need_sync()``: ``!dev->dma_skip_sync``."""
    return dev != NULL and not dev.dma_skip_sync


# ---- the mapping API the core uses --------------------------------------------------------------

cdef uint64_t nm_dma_map_phys(nm_device *dev, uint64_t phys, uint64_t size, int dir,
                              unsigned long attrs) noexcept nogil:
    """Models ``dma_map_phys()``/``dma_map_page_attrs()``: DMA_MAPPING_ERROR on failure."""
    cdef uint64_t dma
    if dev.m.iommu_mode == NM_IOMMU_DMA:
        dma = iommu_dma_map_phys(dev, phys, size, dir, attrs)
    else:
        dma = dma_direct_map_phys(dev, phys, size, dir, attrs)
    if dma == DMA_MAPPING_ERROR:
        dev.nr_map_errors += 1
        return dma
    if dev.m.iommu_mode != NM_IOMMU_DMA:
        nm_dma_cover_range(dev, dma, size, True)
    dev.nr_mapped += 1
    dev.m.dma_stats.maps += 1
    return dma


cdef void nm_dma_unmap_phys(nm_device *dev, uint64_t addr, uint64_t size, int dir,
                            unsigned long attrs) noexcept nogil:
    """Models ``dma_unmap_phys()``/``dma_unmap_page_attrs()``; the caller checked the mapping."""
    if dev.m.iommu_mode == NM_IOMMU_DMA:
        iommu_dma_unmap_phys(dev, addr, size, dir, attrs)
    else:
        nm_dma_cover_range(dev, addr, size, False)
        if is_swiotlb_buffer(dev.m, addr):
            swiotlb_tbl_unmap_single(dev, addr, size, dir, attrs)
    dev.nr_mapped -= 1
    dev.m.dma_stats.unmaps += 1


cdef void nm_dma_sync_for_cpu(nm_device *dev, uint64_t addr, uint64_t size,
                              int dir) noexcept nogil:
    """Models ``dma_sync_single_for_cpu()``: a bounced buffer is copied back for the CPU."""
    cdef uint64_t phys = addr
    if dev.m.iommu_mode == NM_IOMMU_DMA:
        return
    if is_swiotlb_buffer(dev.m, phys) and dir != DMA_TO_DEVICE:
        swiotlb_bounce(dev.m, phys, size, DMA_FROM_DEVICE)


cdef void nm_dma_sync_for_device(nm_device *dev, uint64_t addr, uint64_t size,
                                 int dir) noexcept nogil:
    """Models ``dma_sync_single_for_device()``: a bounced buffer is copied out to its slots."""
    if dev.m.iommu_mode == NM_IOMMU_DMA:
        return
    if is_swiotlb_buffer(dev.m, addr) and dir != DMA_FROM_DEVICE:
        swiotlb_bounce(dev.m, addr, size, DMA_TO_DEVICE)


cdef inline uint64_t nm_dma_map_page(nm_device *dev, uint64_t phys, uint64_t size,
                                     int dir) noexcept nogil:
    """The page_pool's mapping, as ``page_pool_dma_map()`` makes it: ``dma_map_page_attrs()``
    of the whole buffer in the pool's ``p.dma_dir``, no CPU sync, weak ordering."""
    return nm_dma_map_phys(dev, phys, size, dir,
                           DMA_ATTR_SKIP_CPU_SYNC | DMA_ATTR_WEAK_ORDERING)


cdef inline void nm_dma_unmap_page(nm_device *dev, uint64_t addr, uint64_t size,
                                   int dir) noexcept nogil:
    """The page_pool's unmap (``__page_pool_unmap_netmem_dma()``): the same direction and
    attrs as the map."""
    nm_dma_unmap_phys(dev, addr, size, dir,
                      DMA_ATTR_SKIP_CPU_SYNC | DMA_ATTR_WEAK_ORDERING)


# ---- device-side access -------------------------------------------------------------------------

cdef void __dma_log_add(nm_dma_log *log, nm_device *dev, uint64_t addr, uint64_t n,
                        bint write) noexcept nogil:
    """Keep one device access in ``log`` (while it has room) for the Python side."""
    cdef void *buf
    if log.room == 0:
        return
    if log.n == log.cap:
        buf = realloc(log.buf, (log.cap * 2 + 64) * sizeof(nm_fault))
        if buf == NULL:
            return
        log.buf = <nm_fault *>buf
        log.cap = log.cap * 2 + 64
    log.buf[log.n].ts_ns = dev.m.clock_ns
    log.buf[log.n].addr = addr
    log.buf[log.n].len = n
    log.buf[log.n].dev_id = dev.id
    log.buf[log.n].write = write
    log.n += 1
    log.room -= 1


cdef void nm_record_fault(nm_device *dev, uint64_t addr, bint write) noexcept nogil:
    dev.m.dma_stats.faults += 1
    __dma_log_add(&dev.m.faults, dev, addr, 0, write)


cdef void nm_record_unmapped(nm_device *dev, uint64_t addr, uint64_t n,
                             bint write) noexcept nogil:
    """A device access of ``n`` bytes at ``addr`` (physical or bus) that no live mapping for
    the device covers (model-only: see the file's header)."""
    dev.m.dma_stats.unmapped_accesses += 1
    __dma_log_add(&dev.m.unmapped, dev, addr, n, write)


# ---- which pages a device may reach by physical or bus address ---------------------------------

cdef inline uint64_t nm_cover_bytes(uint64_t size) noexcept nogil:
    """Bytes of the coverage table of a region of ``size`` bytes: an entry per 2 MiB, then one
    per 4 KiB."""
    return (((size + (1ULL << NM_COVER_CHUNK_SHIFT) - 1) >> NM_COVER_CHUNK_SHIFT)
            + ((size + PAGE_SIZE - 1) >> PAGE_SHIFT)) * sizeof(nm_dma_cover)


cdef void nm_cover_table_init(nm_cover_table *t, void *mem, uint64_t size) noexcept nogil:
    """Lay the two levels of a region's table over ``mem`` (``nm_cover_bytes(size)``, zeroed)."""
    t.chunk = <nm_dma_cover *>mem
    t.page = t.chunk + ((size + (1ULL << NM_COVER_CHUNK_SHIFT) - 1) >> NM_COVER_CHUNK_SHIFT)


cdef inline void __cover_one(nm_dma_cover *c, uint32_t dev_id, bint map) noexcept nogil:
    if not map:
        c.count -= 1
        return
    if c.count == 0:
        c.dev_id = dev_id
    elif c.dev_id != dev_id:
        c.dev_id = 0                    # several devices: no single holder (ids start at 1)
    c.count += 1


cdef void nm_dma_cover_range(nm_device *dev, uint64_t addr, uint64_t size,
                             bint map) noexcept nogil:
    """Count a mapping by ``dev`` whose DMA address is the physical or bus address ``addr``
    itself (``map``), or its undoing (the same range), in the table of its region. A range
    that is not RAM or inside one BAR (nothing a device reaches) is not counted."""
    cdef nm_cover_table *t
    cdef uint64_t off, i, end
    if size == 0 or __phys_target(dev.m, addr, size, &t, &off) == NULL:
        return
    i = off >> PAGE_SHIFT
    end = ((off + size - 1) >> PAGE_SHIFT) + 1
    while i < end:
        if i % NM_COVER_CHUNK_PAGES == 0 and end - i >= NM_COVER_CHUNK_PAGES:
            __cover_one(&t.chunk[i // NM_COVER_CHUNK_PAGES], dev.id, map)
            i += NM_COVER_CHUNK_PAGES
        else:
            __cover_one(&t.page[i], dev.id, map)
            i += 1


cdef inline bint __cover_lets(nm_dma_cover *c, uint32_t dev_id) noexcept nogil:
    return c.count != 0 and (c.dev_id == dev_id or c.dev_id == 0)


cdef inline bint __dma_covered(nm_cover_table *t, uint64_t off, uint64_t n,
                               uint32_t dev_id) noexcept nogil:
    """Whether every page of ``[off, off + n)`` (``n`` > 0, offsets in the region of ``t``)
    has a live mapping device ``dev_id`` may use: at the page level (page_pool's pages: one
    load), else at the 2 MiB level (a page entry never written reads the shared zero page)."""
    cdef uint64_t i = off >> PAGE_SHIFT, last = (off + n - 1) >> PAGE_SHIFT
    while True:
        if not __cover_lets(&t.page[i], dev_id) and \
                not __cover_lets(&t.chunk[i // NM_COVER_CHUNK_PAGES], dev_id):
            return False
        if i == last:
            return True
        i += 1


cdef inline bint __is_ram(nm_machine *m, uint64_t phys, uint64_t n) noexcept nogil:
    return n <= m.mem_bytes and phys <= m.mem_bytes - n


cdef inline void __dev_copy(char *target, char *buf, uint64_t n, bint write) noexcept nogil:
    if write:
        memcpy(target, buf, n)
    else:
        memcpy(buf, target, n)


cdef int __dev_access_bus(nm_device *dev, nm_bar *b, uint64_t addr, char *buf, uint64_t n,
                          bint write) noexcept nogil:
    """An access a switch routes to a peer's BAR by bus address: no IOMMU, no mask. Running
    past the end of the BAR is a fault at its end, and nothing moves; an access no bus-address
    mapping for the device covers is recorded, and lands."""
    if n > b.end - addr:
        nm_record_fault(dev, b.end, write)
        return -EFAULT
    if unlikely(not __dma_covered(&b.cover, addr - b.start, n, dev.id)):
        nm_record_unmapped(dev, addr, n, write)
    __dev_copy(b.mem + (addr - b.start), buf, n, write)
    return 0


cdef int nm_dev_access(nm_device *dev, uint64_t addr, char *buf, uint64_t n,
                       bint write) noexcept nogil:
    """A device's read or write of ``n`` bytes at DMA address ``addr`` into RAM or BAR memory:
    0, or -EFAULT after recording a fault at the first address it may not reach (nothing is
    touched then). Under dma-iommu a bus address of a peer's BAR behind the same switch goes
    to the BAR untranslated; everything else goes through the IOMMU. Without one, the address
    is the physical address and must fit the device's mask; an access to memory no live
    mapping for the device covers is recorded (nm_record_unmapped) and still lands, as on the
    hardware."""
    cdef nm_machine *m = dev.m
    cdef nm_bar *b
    cdef nm_cover_table *t
    cdef uint64_t off
    cdef char *p
    if n == 0:
        return 0
    if m.iommu_mode == NM_IOMMU_DMA:
        if m.nr_bars and addr >= m.bars[0].start:      # BARs sit above RAM: IOVAs skip this
            b = nm_bar_find(m, addr)
            if b != NULL and nm_bar_bus_route(b, dev.id):
                return __dev_access_bus(dev, b, addr, buf, n, write)
        return iommu_dev_access(dev, addr, buf, n, write)
    if not dma_capable(dev, addr, n):
        nm_record_fault(dev, addr, write)
        return -EFAULT
    p = __phys_target(m, addr, n, &t, &off)
    if p == NULL:
        nm_record_fault(dev, __phys_end(m, addr), write)
        return -EFAULT
    if unlikely(not __dma_covered(t, off, n, dev.id)):
        nm_record_unmapped(dev, addr, n, write)
    __dev_copy(p, buf, n, write)
    return 0


cdef char *nm_dev_prefetchw(nm_device *dev, uint64_t addr, uint64_t n,
                            uint64_t first) noexcept nogil:
    """Warm for writing the first ``first`` bytes of the lines a device write of ``n`` bytes at
    ``addr`` lands in, where ``nm_dev_access()`` would copy them without an IOMMU (nothing
    under dma-iommu, nothing for an access it would refuse); returns where the write lands, for
    the caller to warm the rest later, or NULL when it warmed nothing. Not a kernel mechanism,
    and it changes no state: the model's own speed (the device's writes go to recycled buffers
    whose lines went cold)."""
    cdef nm_cover_table *t
    cdef uint64_t off
    cdef char *p = NULL
    if dev.m.iommu_mode != NM_IOMMU_DMA and dma_capable(dev, addr, n):
        p = __phys_target(dev.m, addr, n, &t, &off)
        if p != NULL:
            prefetch_range(p, min(first, n), True)
    barrier()       # prefetches are no side effect to GCC: without it, the call goes
    return p


cdef int nm_dev_write(nm_device *dev, uint64_t dma_addr, const char *buf,
                      uint64_t n) noexcept nogil:
    """The device DMA-writes ``n`` bytes of ``buf`` at ``dma_addr`` (an RX frame): 0, or
    -EFAULT after recording the fault (nothing written)."""
    return nm_dev_access(dev, dma_addr, <char *>buf, n, True)


cdef int nm_dev_read(nm_device *dev, uint64_t dma_addr, char *buf, uint64_t n) noexcept nogil:
    """The device DMA-reads ``n`` bytes at ``dma_addr`` into ``buf``: 0, or -EFAULT after
    recording the fault (``buf`` untouched)."""
    return nm_dev_access(dev, dma_addr, buf, n, False)


# ---- the BAR table ------------------------------------------------------------------------------

cdef nm_bar *nm_bar_find(nm_machine *m, uint64_t phys) noexcept nogil:
    """The BAR holding ``phys``, or NULL: a binary search (BARs never overlap)."""
    cdef uint32_t lo = 0, hi = m.nr_bars, mid
    while lo < hi:
        mid = (lo + hi) >> 1
        if m.bars[mid].end <= phys:
            lo = mid + 1
        elif m.bars[mid].start > phys:
            hi = mid
        else:
            return &m.bars[mid]
    return NULL


cdef inline bint nm_bar_bus_route(nm_bar *b, uint32_t dev_id) noexcept nogil:
    """Whether device ``dev_id`` reaches BAR ``b`` by bus address (bypassing its IOMMU)."""
    return (dev_id >> 6) < b.bus_route_words and (b.bus_route[dev_id >> 6] >> (dev_id & 63)) & 1


cdef inline char *__phys_target(nm_machine *m, uint64_t phys, uint64_t n, nm_cover_table **cover,
                                uint64_t *off) noexcept nogil:
    """Where the CPU finds ``[phys, phys + n)``, in RAM or inside one BAR, with the region's
    coverage table and ``phys``'s offset in the region; NULL (outputs untouched) otherwise."""
    cdef nm_bar *b
    if __is_ram(m, phys, n):
        cover[0] = &m.ram_cover
        off[0] = phys
        return m.mem + phys
    b = nm_bar_find(m, phys)
    if b != NULL and n <= b.end - phys:
        cover[0] = &b.cover
        off[0] = phys - b.start
        return b.mem + (phys - b.start)
    return NULL


cdef inline char *nm_phys_to_ptr(nm_machine *m, uint64_t phys, uint64_t n) noexcept nogil:
    """Where the CPU finds ``[phys, phys + n)``: in RAM or inside one BAR; NULL otherwise."""
    cdef nm_cover_table *t
    cdef uint64_t off
    return __phys_target(m, phys, n, &t, &off)


cdef uint64_t __phys_end(nm_machine *m, uint64_t phys) noexcept nogil:
    """The first address past the region (RAM or a BAR) that holds ``phys``: where an access
    from ``phys`` that does not fit its region faults. ``phys`` itself when no region holds it."""
    cdef nm_bar *b
    if phys < m.mem_bytes:
        return m.mem_bytes
    b = nm_bar_find(m, phys)
    return b.end if b != NULL else phys


cdef int nm_bar_add(nm_machine *m, uint64_t start, uint64_t size, char *mem, void *cover,
                    uint32_t dev_id, int bar) noexcept nogil:
    """Enter a BAR in the table, kept sorted: 0, -EINVAL (empty, wrapping, overlapping RAM or
    another BAR) or -ENOMEM. ``mem`` and ``cover`` (``nm_cover_bytes(size)``) are lazily
    committed mappings the table owns from then on."""
    cdef uint32_t i
    cdef void *p
    if size == 0 or start + size < start or start < m.mem_bytes:
        return -EINVAL
    i = 0
    while i < m.nr_bars and m.bars[i].start < start:
        i += 1
    if (i and m.bars[i - 1].end > start) or (i < m.nr_bars and m.bars[i].start < start + size):
        return -EINVAL
    if m.nr_bars == m.bars_cap:
        p = realloc(m.bars, (m.bars_cap * 2 + 8) * sizeof(nm_bar))
        if p == NULL:
            return -ENOMEM
        m.bars = <nm_bar *>p
        m.bars_cap = m.bars_cap * 2 + 8
    memmove(&m.bars[i + 1], &m.bars[i], (m.nr_bars - i) * sizeof(nm_bar))
    memset(&m.bars[i], 0, sizeof(nm_bar))
    m.bars[i].start = start
    m.bars[i].end = start + size
    m.bars[i].mem = mem
    nm_cover_table_init(&m.bars[i].cover, cover, size)
    m.bars[i].dev_id = dev_id
    m.bars[i].bar = bar
    m.nr_bars += 1
    return 0


cdef int nm_bar_set_route(nm_bar *b, uint32_t dev_id, bint bus) noexcept nogil:
    """Record whether device ``dev_id`` reaches ``b`` by bus address: 0 or -ENOMEM."""
    cdef uint32_t w = dev_id >> 6, n
    cdef void *p
    if w >= b.bus_route_words:
        if not bus:
            return 0
        n = w + 1
        p = realloc(b.bus_route, n * sizeof(uint64_t))
        if p == NULL:
            return -ENOMEM
        b.bus_route = <uint64_t *>p
        memset(&b.bus_route[b.bus_route_words], 0, (n - b.bus_route_words) * sizeof(uint64_t))
        b.bus_route_words = n
    if bus:
        b.bus_route[w] |= 1ULL << (dev_id & 63)
    else:
        b.bus_route[w] &= ~(1ULL << (dev_id & 63))
    return 0


cdef void nm_bar_table_free(nm_machine *m) noexcept nogil:
    """Unmap every BAR's memory and free the table (the machine is going)."""
    cdef uint32_t i
    for i in range(m.nr_bars):
        munmap(m.bars[i].mem, m.bars[i].end - m.bars[i].start)
        munmap(m.bars[i].cover.chunk, nm_cover_bytes(m.bars[i].end - m.bars[i].start))
        free(m.bars[i].bus_route)
    free(m.bars)
    m.bars = NULL
    m.nr_bars = 0
    m.bars_cap = 0
