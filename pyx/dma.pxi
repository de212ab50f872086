# The DMA mapping calls the page_pool makes, over dma-direct with an identity mapping.
#
# Models kernel/dma/direct.h for a coherent device without swiotlb: dma_addr == phys, a mapping
# fails (DMA_MAPPING_ERROR) when the buffer lies beyond the device's mask, and
# dma_dev_need_sync() is false unless the device is non-coherent. The IOMMU, swiotlb and the
# two-step API arrive with the DMA layer; these four calls are the seam they replace.


cdef inline uint64_t nm_dma_map_page(nm_device *dev, uint64_t phys, uint64_t size) noexcept nogil:
    if phys + size - 1 > dev.dma_mask:
        dev.nr_map_errors += 1
        return DMA_MAPPING_ERROR
    dev.nr_mapped += 1
    return phys


cdef inline void nm_dma_unmap_page(nm_device *dev, uint64_t addr, uint64_t size) noexcept nogil:
    dev.nr_mapped -= 1


cdef inline bint dma_dev_need_sync(nm_device *dev) noexcept nogil:
    return dev != NULL and dev.need_sync
