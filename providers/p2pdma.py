"""The p2pdma memory provider: RX payload written straight into a PCI device's BAR memory.

Not in mainline, and not a kernel proposal that was posted: it builds what the seed threads
sketched before dma-buf fds won (Jason Gunthorpe, ZLbUpdNYvyvkD27P@ziepe.ca). A device offers BAR
memory with ``pci_p2pdma_add_resource()``, ``pci_alloc_p2pmem()`` takes pieces of it from the
device's genalloc pool (drivers/pci/p2pdma.c), and a page_pool memory provider
(``struct memory_provider_ops``, include/net/page_pool/memory_provider.h) hands it out in 4 KiB
net_iovs of type ``NET_IOV_P2PDMA`` (the model's own type) to the payload pool of an RX queue, the
way devmem's ``dmabuf_devmem_ops`` (net/core/devmem.c) hands out a dma-buf.

The DMA address of a net_iov follows ``pci_p2pdma_map_type()`` between the BAR's device and the
pool's DMA device (the NIC), as ``dma_map_sg()`` treats p2pdma pages: ``PCI_P2PDMA_MAP_BUS_ADDR``
(a switch joins them) is the PCI bus address (a bus-address segment of ``dma_map_sgtable()``),
which the NIC's writes reach without its IOMMU;
``PCI_P2PDMA_MAP_THRU_HOST_BRIDGE`` maps the range through the DMA layer for the NIC
(``dma_map_sgtable()``: an IOVA under dma-iommu), unmapped when the provider's last pool goes;
``PCI_P2PDMA_MAP_NOT_SUPPORTED`` fails the pool's creation with EREMOTEIO, so
``netif_mp_open_rxq()`` raises it.

Several resources per device: each provider offers its own range, ``size`` bytes of BAR ``bar``
from ``offset``, and takes all of it (the newest chunk is searched first). Providers on one
device take ranges that do not overlap (2 MiB aligned, as ``devm_memremap_pages()`` requires),
in one BAR or in several. A provider whose range is p2pmem already (its driver offered the BAR)
shares the device's p2pmem instead: ``pci_alloc_p2pmem()`` finds its bytes, and removing it leaves
the resource in place.

Handing the memory back (``remove()``, as devmem's unbind): the provider's resource stops giving
out p2pmem at once (``pci_p2pdma_remove_resource()``, not in the kernel either), every RX queue it
is bound to goes back to host pages (``netif_mp_close_rxq()``), and the old page pools live on while
sockets and skbs hold their net_iovs (``page_pool_release_retry()`` on the virtual clock). When
the last pool goes, the net_iov area is retired, the p2pmem freed and the range unmapped.
"""
from errno import E2BIG, EINVAL, ENODEV, ENOMEM, EOPNOTSUPP, EREMOTEIO

import numpy as np

from netmem.dma import SgTable, dma_map_sgtable, dma_unmap_sgtable, sg_dma_address
from netmem.errors import NetmemError
from netmem.netdev import netif_mp_close_rxq, netif_mp_open_rxq
from netmem.netmem import NET_IOV_P2PDMA, NetIovArea
from netmem.page_pool import DMA_FROM_DEVICE, PAGE_SHIFT, PAGE_SIZE
from netmem.pci import (
    IORESOURCE_MEM,
    PAGE_OFFSET,
    PCI_P2PDMA_MAP_NOT_SUPPORTED,
    PCI_STD_NUM_BARS,
    SUBSECTION_SIZE,
    PciEndpoint,
    pci_alloc_p2pmem,
    pci_free_p2pmem,
    pci_p2pdma_add_resource,
    pci_p2pdma_map_type,
    pci_p2pdma_remove_resource,
    pci_p2pmem_virt_to_bus,
    pci_resource_flags,
    pci_resource_len,
    pci_resource_start,
)
from netmem.provider import (
    MemoryProvider,
    ReplayBinding,
    net_devmem_id_alloc,
    net_mp_niov_clear_page_pool,
    net_mp_niov_set_dma_addr,
    net_mp_niov_set_page_pool,
)

__all__ = ["P2PDMAProvider"]


class P2PDMAProvider(MemoryProvider):
    """``P2PDMAProvider(pdev, size=2 MiB, bar=None, offset=0)``: ``size`` bytes of p2pmem of PCI
    endpoint ``pdev`` as ``size / 4096`` net_iovs. ``bar`` None takes the first memory BAR that
    holds ``offset + size`` bytes (not a GPU's device-memory BAR), or gives ``pdev`` a new one
    of the first free number (a power of two, as resizable-BAR assignment would). ``id`` is a
    small int unique per machine, from 1 (the net_iovs' ``owner_id``); ``area`` the net_iovs,
    ``base_virtual`` 0: a net_iov's virtual address is its offset in the provider's memory.
    EINVAL for a bad size or BAR, ENOMEM when the p2pmem has no run of ``size`` bytes."""

    name = "p2pdma"

    def __init__(self, pdev, size=SUBSECTION_SIZE, bar=None, offset=0):
        _check_args(pdev, size)
        self.pdev, self.size, self.offset = pdev, size, offset
        self.machine = pdev.topo.machine
        self.bar = _pick_bar(pdev, offset + size) if bar is None else bar
        self.owns_resource = _offer(pdev, self.bar, size, offset)
        self.virt = pci_alloc_p2pmem(pdev, size)
        if not self.virt:                   # only when sharing: an added range is all free
            raise NetmemError(ENOMEM, f"p2pdma provider: no {size} bytes of p2pmem free on "
                                      f"{pdev.name}")
        self.bus_addr = pci_p2pmem_virt_to_bus(pdev, self.virt)
        self.id = _alloc_id(self.machine, self)
        self.area = NetIovArea(self.machine, size >> PAGE_SHIFT, type=NET_IOV_P2PDMA,
                               base_virtual=0, owner_id=self.id)
        self._free = self.area.niovs.tolist()[::-1]      # net_iov 0 is handed out first
        self._pools = []            # pools whose init succeeded and that are not destroyed
        self._rxqs = {}             # RX queues of those pools, in binding order (as a set)
        self._dma = None            # (DMA device, DMA address of byte 0, mapped SgTable)
        self.removing = False
        self.removed = False

    def __repr__(self):
        state = " removed" if self.removed else " removing" if self.removing else ""
        return (f"<P2PDMAProvider {self.id} {self.pdev.name} BAR {self.bar} "
                f"{self.bus_addr:#x}+{self.size:#x}{state}>")

    @property
    def bound_rxqs(self):
        """The RX queues whose payload pool takes this provider now."""
        return [q for q in self._rxqs if q.mp is self]

    @property
    def nr_free(self):
        """net_iovs at home (in no page pool)."""
        return len(self._free)

    def read(self, offset, n):
        """The CPU reads ``n`` bytes at ``offset`` of the provider's memory (BAR memory,
        ``m.pci.bar_memory()``): what the NIC wrote into the net_iov at ``offset // 4096``."""
        if offset < 0 or n < 0 or offset + n > self.size:
            raise NetmemError(EINVAL, f"p2pdma provider: [{offset}, +{n}) is beyond its "
                                      f"{self.size} bytes")
        return bytes(self.machine.pci.bar_memory(self.virt - PAGE_OFFSET + offset, n))

    def memory_map(self):
        """The provider's memory as ``(offsets, phys, lengths)`` uint64 arrays: one physically
        contiguous range, offset 0 at ``virt`` (the ``frag_offset`` of its cmsgs is a
        net_iov's offset in it)."""
        return tuple(np.array([v], np.uint64) for v in (0, self.virt - PAGE_OFFSET, self.size))

    @classmethod
    def replay_setup(cls, rig):
        """``netmem-replay --provider p2pdma``: ``--dmabuf-size`` bytes of the GPU's BAR memory
        (a BAR made for it) on each of ``rig.queues`` (``netif_mp_open_rxq()``), RSS over them;
        ``remove()`` hands it back at teardown. Its cmsgs name the provider's ``id``."""
        prov = cls(rig.gpu, size=rig.cfg.dmabuf_size)
        rig.on_teardown(prov.remove)                    # closes the queues it is bound to
        for q in rig.queues:
            netif_mp_open_rxq(rig.nic, q, prov)
        rig.steer_to_bound()
        return ReplayBinding(prov.memory_map(), prov.id)

    # -- memory_provider_ops ---------------------------------------------------------------------

    def init(self, pool):
        """As ``mp_dmabuf_devmem_init()``: DMA sync off (``pool->dma_sync``,
        ``dma_sync_for_cpu``: syncs serve host memory, BAR memory needs none), then the memory
        mapped for the pool's device on first use (see the module's docstring). -E2BIG for
        an order above 0, -EREMOTEIO when the host bridge refuses p2p, -EOPNOTSUPP for a second
        DMA device (one address per net_iov), -ENODEV once ``remove()`` was called, and what
        ``dma_map_sgtable()`` fails with (-EIO: a device whose DMA mask cannot reach the BAR)."""
        if self.removing:
            return -ENODEV
        pool.dma_sync = False
        pool.dma_sync_for_cpu_enabled = False
        if pool.order:
            return -E2BIG
        dev = pool.params.dev
        if self._dma is not None and self._dma[0] is not dev:
            return -EOPNOTSUPP
        map_type = pci_p2pdma_map_type(self.pdev, dev)
        if map_type == PCI_P2PDMA_MAP_NOT_SUPPORTED:
            return -EREMOTEIO
        err = 0 if self._dma is not None else self._map(dev)
        if not err:
            self._pools.append(pool)
            if pool.netdev is not None:
                self._rxqs[pool.netdev.rx_queues[pool.params.queue_idx]] = None
        return err

    def destroy(self, pool):
        """As ``mp_dmabuf_devmem_destroy()``, which drops the pool's binding ref: the last
        pool unmaps the memory and, during ``remove()``, finishes it."""
        self._pools.remove(pool)
        if self._pools:
            return
        self._unmap()
        if self.removing:
            self._release()

    def alloc_netmems(self, pool):
        """As ``mp_dmabuf_devmem_alloc_netmems()``: one net_iov, attached to ``pool`` with its
        DMA address; 0 when all are out."""
        if not self._free:
            return 0
        ref = self._free.pop()
        net_mp_niov_set_page_pool(pool, ref)
        net_mp_niov_set_dma_addr(self.machine, ref,
                                 self._dma[1] + (self.area.net_iov_idx(ref) << PAGE_SHIFT))
        return ref

    def release_netmem(self, pool, netmem):
        """As ``mp_dmabuf_devmem_release_page()``: back home; never put_page'd."""
        net_mp_niov_clear_page_pool(self.machine, netmem)
        self._free.append(netmem)
        return False

    def nl_fill(self, rxq):
        """As ``mp_dmabuf_devmem_nl_fill()`` (``dmabuf``: the binding id): ``p2pdma``, the
        provider's id."""
        return {"p2pdma": self.id}

    def uninstall(self, rxq):
        """As ``mp_dmabuf_devmem_uninstall()``: the queue's netdev unregisters; forget the
        queue (its pools go by themselves)."""
        self._rxqs.pop(rxq, None)

    # -- handing the memory back -------------------------------------------------------------------

    def remove(self):
        """Give the memory back, as ``net_devmem_unbind_dmabuf()`` unbinds (see the module's
        docstring). Done at once when no page pool holds the provider; otherwise ``removed``
        turns True when the last one goes (after the sockets and skbs holding its net_iovs let
        them go). A second call does nothing."""
        if self.removing:
            return
        self.removing = True
        if self.owns_resource:
            pci_p2pdma_remove_resource(self.pdev, self.bar, self.size, self.offset)
        if not self._pools:
            self._release()
            return
        for rxq in self.bound_rxqs:
            netif_mp_close_rxq(rxq.nic, rxq.idx, self)

    def _map(self, dev):
        """``dma_map_sgtable()`` of the range for ``dev``, whatever the map type: a bus address
        is a marked segment of the table (so the model counts it as mapped while it lives)."""
        sgt = SgTable.from_phys([(self.virt - PAGE_OFFSET, self.size)])
        try:
            dma_map_sgtable(dev, sgt, DMA_FROM_DEVICE)
        except NetmemError as e:
            return -e.errno
        self._dma = (dev, sg_dma_address(sgt.sgl[0]), sgt)
        return 0

    def _unmap(self):
        dev, _, sgt = self._dma
        dma_unmap_sgtable(dev, sgt, DMA_FROM_DEVICE)
        self._dma = None

    def _release(self):
        self.area.free()
        pci_free_p2pmem(self.pdev, self.virt, self.size)
        del self.machine._p2pdma_providers[self.id]
        self.removed = True


def _check_args(pdev, size):
    if not isinstance(pdev, PciEndpoint):
        raise NetmemError(EINVAL, f"p2pdma provider: {pdev!r} is not a PCI endpoint")
    if not isinstance(size, int) or size <= 0 or size % PAGE_SIZE:
        raise NetmemError(EINVAL, f"p2pdma provider: size {size!r} is not a nonzero multiple "
                                  f"of {PAGE_SIZE}")


def _pick_bar(pdev, end):
    """The first memory BAR of at least ``end`` bytes that is not the device memory of a GPU,
    else a new BAR of the first free number."""
    dm_bar = pdev.device_memory.bar if pdev.device_memory is not None else None
    for bar in sorted(pdev.resources):
        if bar != dm_bar and pci_resource_flags(pdev, bar) & IORESOURCE_MEM and \
                pci_resource_len(pdev, bar) >= end:
            return bar
    bar = next((b for b in range(PCI_STD_NUM_BARS) if b not in pdev.resources), None)
    if bar is None:
        raise NetmemError(EINVAL, f"p2pdma provider: {pdev.name} has no BAR of {end} bytes and "
                                  "no free BAR number")
    pdev.topo.add_bar(pdev, bar, 1 << (end - 1).bit_length())
    return bar


def _offer(pdev, bar, size, offset):
    """``pci_p2pdma_add_resource()`` of the range unless live p2pmem holds it already; whether
    it was added."""
    start = pci_resource_start(pdev, bar) + offset
    pgmaps = pdev.p2pdma.pgmaps if pdev.p2pdma is not None else []
    if any(pg.live and pg.start <= start and start + size - 1 <= pg.end for pg in pgmaps):
        return False
    pci_p2pdma_add_resource(pdev, bar, size, offset)
    return True


def _alloc_id(machine, provider):
    """An id from the devmem bindings' space (``xa_alloc_cyclic()`` from 1), so that the
    ``dmabuf_id`` of a devmem cmsg names one binding or provider, never two."""
    id = net_devmem_id_alloc(machine)
    machine._p2pdma_providers[id] = provider
    return id
