"""hugechunk: an example netmem memory provider, in a package of its own.

RX payload lands in 4 KiB net_iovs carved out of a few huge chunks of host memory (buddy blocks
of ``chunk`` bytes), DMA-mapped once for the NIC when the provider is made, the way devmem maps
a dma-buf at bind time (net/core/devmem.c) instead of page by page as page_pool does. Not a
kernel provider: it shows the contract. Its net_iovs are NET_IOV_DMABUF ones, so
``recvmsg(MSG_SOCK_DEVMEM)`` describes them in SCM_DEVMEM_DMABUF cmsgs naming the areas'
``owner_id``; ``memory_map()`` says where those cmsgs' offsets are in physical memory, so the
application (``netmem-replay``) reads the payload there.

    netmem-replay --provider hugechunk --provider-arg size=64MiB --provider-arg chunk=2MiB
"""
import errno

import numpy as np

from netmem import NetIovArea
from netmem.dma import SgTable, dma_map_sgtable, dma_unmap_sgtable, for_each_sgtable_dma_sg
from netmem.errors import NetmemError
from netmem.page_pool import DMA_FROM_DEVICE, MAX_PAGE_ORDER, PAGE_SHIFT, PAGE_SIZE
from netmem.provider import (
    MemoryProvider,
    net_devmem_id_alloc,
    net_mp_niov_clear_page_pool,
    net_mp_niov_set_dma_addr,
    net_mp_niov_set_page_pool,
)

__all__ = ["HugeChunkProvider"]


class HugeChunkProvider(MemoryProvider):
    """4 KiB net_iovs over huge chunks of host memory, DMA-mapped once for the NIC.

    ``HugeChunkProvider(machine, nic, size=64 MiB, chunk=2 MiB)``: ``size / chunk`` buddy
    blocks of ``chunk`` bytes (a power of two, 4 KiB to ``PAGE_SIZE << MAX_PAGE_ORDER``),
    mapped with ``dma_map_sgtable()`` for the device that does the NIC's DMA. ``id`` (from the
    devmem binding ids) is the net_iovs' ``owner_id``, the ``dmabuf_id`` of their cmsgs.
    EINVAL for a bad size or chunk, ENOMEM without the memory; ``close()`` gives it all back
    once no page pool holds it."""

    name = "hugechunk"

    def __init__(self, machine, nic, size=64 << 20, chunk=2 << 20):
        _check_sizes(size, chunk)
        self.machine = machine
        self.dev = nic.pcidev
        self.chunk = chunk
        self.blocks = _alloc_blocks(machine, size // chunk, (chunk >> PAGE_SHIFT).bit_length() - 1)
        self.phys = np.array([machine.netmem(b).phys for b in self.blocks], np.uint64)
        self.sgt = SgTable.from_phys([(int(p), chunk) for p in self.phys])
        try:
            dma_map_sgtable(self.dev, self.sgt, DMA_FROM_DEVICE)
        except NetmemError:
            _put_blocks(machine, self.blocks)
            raise
        self.dma_addrs = np.concatenate([
            np.uint64(s.dma_address) + (np.arange(s.dma_length >> PAGE_SHIFT, dtype=np.uint64)
                                        << np.uint64(PAGE_SHIFT))
            for s in for_each_sgtable_dma_sg(self.sgt)])
        self.id = net_devmem_id_alloc(machine)
        self.area = NetIovArea(machine, size >> PAGE_SHIFT, base_virtual=0, owner_id=self.id)
        self.free = self.area.niovs.tolist()[::-1]       # net_iov 0 is handed out first

    # -- memory_provider_ops ---------------------------------------------------------------------

    def init(self, pool):
        """As ``mp_dmabuf_devmem_init()``: DMA sync off (the chunks were mapped once, and the
        machine's devices are coherent), 4 KiB buffers only (-E2BIG), one DMA device
        (-EOPNOTSUPP for a pool of another: the addresses are this device's)."""
        if pool.order:
            return -errno.E2BIG
        if pool.params.dev is not self.dev:
            return -errno.EOPNOTSUPP
        pool.dma_sync = False
        pool.dma_sync_for_cpu_enabled = False
        return 0

    def alloc_netmems(self, pool):
        """One net_iov, attached to ``pool`` with its DMA address; 0 when all are out."""
        if not self.free:
            return 0
        ref = self.free.pop()
        net_mp_niov_set_page_pool(pool, ref)
        net_mp_niov_set_dma_addr(self.machine, ref,
                                 int(self.dma_addrs[self.area.net_iov_idx(ref)]))
        return ref

    def release_netmem(self, pool, netmem):
        """Back home; a net_iov is never put_page'd."""
        net_mp_niov_clear_page_pool(self.machine, netmem)
        self.free.append(netmem)
        return False

    # -- for netmem-replay -------------------------------------------------------------------------

    def memory_map(self):
        """``(offsets, phys, lengths)``: chunk ``i`` at offset ``i * chunk`` of the cmsgs'
        ``frag_offset`` space (net_iov ``k`` is at ``k * 4096``)."""
        n = len(self.blocks)
        return (np.arange(n, dtype=np.uint64) * np.uint64(self.chunk), self.phys,
                np.full(n, self.chunk, np.uint64))

    def close(self):
        """Give everything back: the net_iovs (EBUSY while a pool holds one), the mapping, the
        chunks."""
        self.area.free()
        dma_unmap_sgtable(self.dev, self.sgt, DMA_FROM_DEVICE)
        _put_blocks(self.machine, self.blocks)


def _check_sizes(size, chunk):
    if not (isinstance(chunk, int) and PAGE_SIZE <= chunk <= PAGE_SIZE << MAX_PAGE_ORDER
            and chunk & (chunk - 1) == 0):
        raise NetmemError(errno.EINVAL, f"hugechunk: chunk {chunk!r} is not a power of two from "
                                        f"{PAGE_SIZE} to {PAGE_SIZE << MAX_PAGE_ORDER}")
    if not (isinstance(size, int) and size > 0 and size % chunk == 0):
        raise NetmemError(errno.EINVAL, f"hugechunk: size {size!r} is not a nonzero multiple of "
                                        f"the chunk, {chunk}")


def _alloc_blocks(machine, n, order):
    """``n`` buddy blocks of ``order`` (``alloc_pages()``); ENOMEM, nothing kept, when short."""
    blocks = []
    for _ in range(n):
        ref = machine.alloc_pages(order)
        if not ref:
            _put_blocks(machine, blocks)
            raise NetmemError(errno.ENOMEM, f"hugechunk: no free block of order {order} after "
                                            f"{len(blocks)} of {n}")
        blocks.append(ref)
    return blocks


def _put_blocks(machine, blocks):
    for ref in blocks:
        machine.put_page(ref)
