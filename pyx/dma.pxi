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
    dev.nr_mapped += 1
    dev.m.dma_stats.maps += 1
    return dma


cdef void nm_dma_unmap_phys(nm_device *dev, uint64_t addr, uint64_t size, int dir,
                            unsigned long attrs) noexcept nogil:
    """Models ``dma_unmap_phys()``/``dma_unmap_page_attrs()``; the caller checked the mapping."""
    if dev.m.iommu_mode == NM_IOMMU_DMA:
        iommu_dma_unmap_phys(dev, addr, size, dir, attrs)
    elif is_swiotlb_buffer(dev.m, addr):
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


cdef inline uint64_t nm_dma_map_page(nm_device *dev, uint64_t phys, uint64_t size) noexcept nogil:
    """The page_pool's mapping: whole buffer, FROM_DEVICE, no CPU sync, weak ordering."""
    return nm_dma_map_phys(dev, phys, size, DMA_FROM_DEVICE,
                           DMA_ATTR_SKIP_CPU_SYNC | DMA_ATTR_WEAK_ORDERING)


cdef inline void nm_dma_unmap_page(nm_device *dev, uint64_t addr, uint64_t size) noexcept nogil:
    nm_dma_unmap_phys(dev, addr, size, DMA_FROM_DEVICE,
                      DMA_ATTR_SKIP_CPU_SYNC | DMA_ATTR_WEAK_ORDERING)


# ---- device-side access -------------------------------------------------------------------------

cdef void nm_record_fault(nm_device *dev, uint64_t addr, bint write) noexcept nogil:
    cdef nm_machine *m = dev.m
    cdef void *buf
    m.dma_stats.faults += 1
    if m.fault_n == m.fault_cap:
        buf = realloc(m.fault_buf, (m.fault_cap * 2 + 64) * sizeof(nm_fault))
        if buf == NULL:
            return
        m.fault_buf = <nm_fault *>buf
        m.fault_cap = m.fault_cap * 2 + 64
    m.fault_buf[m.fault_n].ts_ns = m.clock_ns
    m.fault_buf[m.fault_n].addr = addr
    m.fault_buf[m.fault_n].dev_id = dev.id
    m.fault_buf[m.fault_n].write = write
    m.fault_n += 1


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
    past the end of the BAR is a fault at its end, and nothing moves."""
    if n > b.end - addr:
        nm_record_fault(dev, b.end, write)
        return -EFAULT
    __dev_copy(b.mem + (addr - b.start), buf, n, write)
    return 0


cdef int nm_dev_access(nm_device *dev, uint64_t addr, char *buf, uint64_t n,
                       bint write) noexcept nogil:
    """A device's read or write of ``n`` bytes at DMA address ``addr`` into RAM or BAR memory:
    0, or -EFAULT after recording a fault at the first address it may not reach (nothing is
    touched then). Under dma-iommu a bus address of a peer's BAR behind the same switch goes
    to the BAR untranslated; everything else goes through the IOMMU. Without one, the address
    is the physical address and must fit the device's mask."""
    cdef nm_machine *m = dev.m
    cdef nm_bar *b
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
    p = nm_phys_to_ptr(m, addr, n)
    if p == NULL:
        nm_record_fault(dev, __phys_end(m, addr), write)
        return -EFAULT
    __dev_copy(p, buf, n, write)
    return 0


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


cdef inline char *nm_phys_to_ptr(nm_machine *m, uint64_t phys, uint64_t n) noexcept nogil:
    """Where the CPU finds ``[phys, phys + n)``: in RAM or inside one BAR; NULL otherwise."""
    cdef nm_bar *b
    if __is_ram(m, phys, n):
        return m.mem + phys
    b = nm_bar_find(m, phys)
    if b != NULL and n <= b.end - phys:
        return b.mem + (phys - b.start)
    return NULL


cdef uint64_t __phys_end(nm_machine *m, uint64_t phys) noexcept nogil:
    """The first address past the region (RAM or a BAR) that holds ``phys``: where an access
    from ``phys`` that does not fit its region faults. ``phys`` itself when no region holds it."""
    cdef nm_bar *b
    if phys < m.mem_bytes:
        return m.mem_bytes
    b = nm_bar_find(m, phys)
    return b.end if b != NULL else phys


cdef int nm_bar_add(nm_machine *m, uint64_t start, uint64_t size, char *mem, uint32_t dev_id,
                    int bar) noexcept nogil:
    """Enter a BAR in the table, kept sorted: 0, -EINVAL (empty, wrapping, overlapping RAM or
    another BAR) or -ENOMEM."""
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
        free(m.bars[i].bus_route)
    free(m.bars)
    m.bars = NULL
    m.nr_bars = 0
    m.bars_cap = 0
