"""DMA devices: what a page_pool maps its buffers through.

For now a device is dma-direct with an identity mapping (dma_addr == phys) and a DMA mask; a
mapping beyond the mask fails with ``DMA_MAPPING_ERROR``. The IOMMU, swiotlb, scatterlists and the
two-step ``dma_iova_*`` API extend this module.
"""
from netmem import _core

__all__ = ["DMA_MAPPING_ERROR", "Device"]

DMA_MAPPING_ERROR = _core.DMA_MAPPING_ERROR_


class Device(_core.CoreDevice):
    """A DMA-capable device (``struct device``) on a machine.

    ``Device(m, name="dev0", dma_mask_bits=64, coherent=True)``: a coherent device needs no
    syncs (``dma_dev_need_sync()`` is false), as on x86 without swiotlb.
    """

    def __new__(cls, machine, name="dev0", dma_mask_bits=64, coherent=True, *args, **kwargs):
        # The compiled half takes no name: pass it only what it knows (as Machine does).
        return super().__new__(cls, machine, dma_mask_bits, coherent)

    def __init__(self, machine, name="dev0", dma_mask_bits=64, coherent=True):
        self.name = name

    def __repr__(self):
        return f"<Device {self.name} mask={self.dma_mask:#x} mapped={self.nr_mapped}>"
