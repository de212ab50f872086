"""The DMA API: devices, their mappings and the IOMMU that checks them.

Models include/linux/dma-mapping.h over three platforms, chosen per machine
(``Machine(iommu=...)``): ``none`` (dma-direct: the DMA address is the physical address, swiotlb
bounces what a device's mask cannot reach), ``passthrough`` (identity domains, the same path) and
``dma-iommu`` (drivers/iommu/dma-iommu.c: an IOVA per mapping, a page table per device domain,
lazy unmapping through a flush queue). Devices reach memory only through ``dev.dma_write`` and
``dev.dma_read``; an access outside a live mapping is an IOMMU fault, recorded in
``m.iommu.faults`` and refused.

Without an IOMMU (``none``, ``passthrough``), and for a bus address a PCIe switch routes to a
peer's BAR (p2pdma, in every mode), no hardware checks a device's address: a write where no
mapping points lands and corrupts whatever lives there, and the kernel never knows. The model
knows (a departure: nothing like it exists in the kernel, not even with CONFIG_DMA_API_DEBUG): it
lets the access land, as the hardware would, and records it in ``m.iommu.unmapped_accesses``.

Checks the kernel makes only with CONFIG_DMA_API_DEBUG (unmapping what was never mapped, a double
unmap, syncing an unmapped range) are always on here for the Python API, with dma-debug's wording.
"""
from netmem import _core
from netmem.errors import NetmemError

__all__ = ["DMA_ATTR_MMIO", "DMA_ATTR_SKIP_CPU_SYNC", "DMA_ATTR_WEAK_ORDERING",
           "DMA_IOVA_USE_SWIOTLB", "DMA_MAPPING_ERROR", "Device", "DmaIovaState", "Iommu",
           "Scatterlist", "SgTable", "dma_iova_destroy", "dma_iova_free", "dma_iova_link",
           "dma_iova_sync", "dma_iova_try_alloc", "dma_iova_unlink", "dma_map_page",
           "dma_map_sgtable", "dma_mapping_error", "dma_need_sync", "dma_sync_single_for_cpu",
           "dma_sync_single_for_device", "dma_unmap_page", "dma_unmap_sgtable", "dma_use_iova",
           "for_each_sgtable_dma_sg", "iova_extents", "sg_dma_address", "sg_dma_len"]

DMA_MAPPING_ERROR = _core.DMA_MAPPING_ERROR_
DMA_ATTR_SKIP_CPU_SYNC = _core.DMA_ATTR_SKIP_CPU_SYNC_
DMA_ATTR_WEAK_ORDERING = _core.DMA_ATTR_WEAK_ORDERING_
DMA_ATTR_MMIO = _core.DMA_ATTR_MMIO_
_DIRS = {0: "DMA_BIDIRECTIONAL", 1: "DMA_TO_DEVICE", 2: "DMA_FROM_DEVICE"}
_EFAULT = 14


class Device(_core.CoreDevice):
    """A DMA-capable device (``struct device``) on a machine.

    ``Device(m, name="dev0", dma_mask_bits=64, coherent=True, is_pci=True)``: a coherent device
    needs no syncs until swiotlb bounces for it (x86). Under dma-iommu it gets its own domain.
    """

    def __new__(cls, machine, name="dev0", dma_mask_bits=64, coherent=True, is_pci=True,
                *args, **kwargs):
        return super().__new__(cls, machine, dma_mask_bits, coherent, is_pci)

    def __init__(self, machine, name="dev0", dma_mask_bits=64, coherent=True, is_pci=True):
        self.name = name
        self._live = {}   # dma address -> (size, dir) of the Python API's mappings

    def __repr__(self):
        return f"<Device {self.name} mask={self.dma_mask:#x} mapped={self.nr_mapped}>"

    def dma_write(self, addr, data):
        """The device writes ``data`` at DMA address ``addr``; a fault raises EFAULT and writes
        nothing. Without an IOMMU, a write no live mapping for the device covers lands and is
        recorded in ``m.iommu.unmapped_accesses`` (as is such a read)."""
        self._do_access(addr, data if isinstance(data, (bytes, bytearray)) else bytes(data),
                        True)

    def dma_read(self, addr, n):
        """The device reads ``n`` bytes at DMA address ``addr``."""
        buf = bytearray(n)
        self._do_access(addr, buf, False)
        return bytes(buf)

    def _do_access(self, addr, buf, write):
        """``nm_dev_write``/``nm_dev_read`` of the core: RAM or BAR memory, through the IOMMU
        or (a peer's BAR behind the same switch) by bus address, all decided in C."""
        if self._access(addr, buf, write) == -_EFAULT:
            what = "write" if write else "read"
            raise NetmemError(_EFAULT, f"{self.name}: IOMMU fault on DMA {what} of {len(buf)} "
                                       f"bytes at {addr:#x}")


class Iommu:
    """The machine's IOMMU (``m.iommu``): its mode, the faults devices took and the counters."""

    def __init__(self, machine):
        self._m = machine
        self._faults = []
        self._unmapped = []

    @property
    def mode(self):
        return self._m.iommu_mode

    @property
    def strict(self):
        return self._m._iommu_strict

    @property
    def faults(self):
        """Faults so far: dicts with device, address, direction ("read"/"write"), time_ns."""
        for ts, dev_id, addr, write in self._m._take_faults():
            self._faults.append({"device": self._m._device_name(dev_id), "address": addr,
                                 "direction": "write" if write else "read", "time_ns": ts})
        return self._faults

    @property
    def unmapped_accesses(self):
        """Device accesses to memory that no live DMA mapping for the device covers, so far:
        dicts with device, address, length, direction ("read"/"write"), time_ns.

        Model-only (the kernel cannot see them; on a real machine they are silent memory
        corruption). Checked where no IOMMU translates: every access under ``none`` and
        ``passthrough``, and a bus-address access a switch routes to a peer's BAR in every mode
        (under dma-iommu an unmapped IOVA is a fault instead). Mapped means a live mapping whose
        DMA address is the physical or bus address: ``dma_map_page()``, page_pool's own
        mappings, ``dma_map_sgtable()`` (dma-buf attachments, p2pdma bus-address segments), a
        swiotlb slot (the slot is mapped, not the buffer it bounces). Checked per 4 KiB page and
        per device (a page mapped for device A only is unmapped for device B), except that a
        page several devices map counts as mapped for every device until all its mappings go.
        The access itself still happens, as on the hardware: the bytes land (a read returns
        what is there), so everything downstream runs as it would. The first 4096 are kept;
        ``stats["unmapped_accesses"]`` counts them all."""
        for ts, dev_id, addr, length, write in self._m._take_unmapped():
            self._unmapped.append({"device": self._m._device_name(dev_id), "address": addr,
                                   "length": length, "direction": "write" if write else "read",
                                   "time_ns": ts})
        return self._unmapped

    def _leaks(self):
        """``leak_report()``'s line for unmapped accesses: no buffer is lost, but a provider
        that makes the NIC DMA into nothing must fail the leak check."""
        n = self._m._dma_stats()["unmapped_accesses"]
        if not n:
            return []
        first = self.unmapped_accesses[:1]
        return [f"{n} DMA access{'es' * (n > 1)} to memory no live mapping covers (iommu "
                f"{self.mode})"
                + "".join(f", the first: {r['device']} {r['direction']} of {r['length']} bytes "
                          f"at {r['address']:#x}" for r in first)]

    @property
    def stats(self):
        """``maps``, ``unmaps``, ``iotlb_syncs``, ``fq_flushes``, ``rcache_hits``,
        ``rcache_misses``, ``bounces``, ``faults``, ``unmapped_accesses`` (model-only: see
        ``unmapped_accesses``): machine-wide."""
        s = self._m._dma_stats()
        for dev in self._m.devices:
            hits, misses, flushes, syncs, _ = dev._domain_stats()
            s["rcache_hits"] += hits
            s["rcache_misses"] += misses
            s["fq_flushes"] += flushes
            s["iotlb_syncs"] += syncs
        return s


def _check_dir(fn, dir):
    if dir not in _DIRS:
        raise NetmemError(22, f"{fn}: invalid DMA direction {dir}")


def dma_map_page(dev, ref, offset, size, dir, attrs=0):
    """Models ``dma_map_page_attrs()``: the DMA address, or ``DMA_MAPPING_ERROR``."""
    _check_dir("dma_map_page", dir)
    view = dev.machine.netmem(ref)
    if view.is_net_iov:
        raise NetmemError(22, "dma_map_page: a net_iov has no struct page")
    span = len(view.address())
    if offset + size > span or size == 0:
        raise NetmemError(22, f"dma_map_page: {offset}+{size} beyond the {span}-byte page")
    addr = dev._map(view.phys + offset, size, dir, attrs)
    if addr != DMA_MAPPING_ERROR:
        dev._live[addr] = (size, dir)
    return addr


def _live_mapping(dev, fn, addr, size, dir):
    m = dev._live.get(addr)
    if m is None:
        raise NetmemError(22, f"{fn}: DMA-API: {dev.name}: device driver tries to free DMA "
                              f"memory it has not allocated [device address={addr:#x}] "
                              f"[size={size} bytes]")
    if m != (size, dir):
        raise NetmemError(22, f"{fn}: DMA-API: {dev.name}: device driver frees DMA memory with "
                              f"different size or direction [device address={addr:#x}] "
                              f"[map size={m[0]} bytes] [unmap size={size} bytes] "
                              f"[map direction={_DIRS[m[1]]}] [unmap direction={_DIRS[dir]}]")


def dma_unmap_page(dev, addr, size, dir, attrs=0):
    """Models ``dma_unmap_page_attrs()``; a mapping must be undone with its size and direction."""
    _check_dir("dma_unmap_page", dir)
    _live_mapping(dev, "dma_unmap_page", addr, size, dir)
    del dev._live[addr]
    dev._unmap(addr, size, dir, attrs)


def _sync(fn, dev, addr, size, dir, for_cpu):
    _check_dir(fn, dir)
    for base, (msize, mdir) in dev._live.items():
        if base <= addr and addr + size <= base + msize:
            if mdir != dir:
                raise NetmemError(22, f"{fn}: DMA-API: {dev.name}: device driver syncs DMA "
                                      f"memory with different direction [device address="
                                      f"{addr:#x}]")
            dev._sync(addr, size, dir, for_cpu)
            return
    raise NetmemError(22, f"{fn}: DMA-API: {dev.name}: device driver tries to sync DMA memory it "
                          f"has not allocated [device address={addr:#x}] [size={size} bytes]")


def dma_sync_single_for_cpu(dev, addr, size, dir):
    """Models ``dma_sync_single_for_cpu()``: a bounced buffer is copied back."""
    _sync("dma_sync_single_for_cpu", dev, addr, size, dir, True)


def dma_sync_single_for_device(dev, addr, size, dir):
    """Models ``dma_sync_single_for_device()``: a bounced buffer is copied to its slots."""
    _sync("dma_sync_single_for_device", dev, addr, size, dir, False)


def dma_need_sync(dev, addr):
    """Models ``dma_need_sync()``: for dma-direct, true if the device is not coherent or the
    address is a swiotlb slot; under dma-iommu, if the device is not coherent."""
    return not dev.coherent or bool(dev._is_swiotlb(addr))


def dma_mapping_error(dev, addr):
    """Models ``dma_mapping_error()``: -ENOMEM for ``DMA_MAPPING_ERROR``, else 0."""
    return -12 if addr == DMA_MAPPING_ERROR else 0


def iova_extents(dev, addrs, size):
    """How many maximal contiguous DMA ranges cover buffers of ``size`` bytes mapped at
    ``addrs``: the device-side translation footprint."""
    extents, end = 0, None
    for a in sorted(int(x) for x in addrs):
        if end is None or a > end:
            extents += 1
        end = a + size if end is None else max(end, a + size)
    return extents


# ---- the two-step API (drivers/iommu/dma-iommu.c, v6.16) --------------------------------------

DMA_IOVA_USE_SWIOTLB = 1 << 63
_GRANULE = 4096


def _iova_align(size):
    return (size + _GRANULE - 1) & ~(_GRANULE - 1)


class DmaIovaState:
    """Models ``struct dma_iova_state``: the window's DMA address and its size (``__size``)."""

    __slots__ = ("_dev", "addr", "size")

    def __init__(self):
        self.addr, self.size, self._dev = 0, 0, None

    def __repr__(self):
        return f"<DmaIovaState addr={self.addr:#x} size={self.size}>"


def dma_use_iova(state):
    """Models ``dma_use_iova()``: the two-step API is in use for this state."""
    return state.size != 0


def dma_iova_try_alloc(dev, state, phys, size):
    """Models ``dma_iova_try_alloc()``: reserve an IOVA window of ``size`` bytes (``phys`` only
    sets the sub-granule offset). False, with the state zeroed, whenever the caller must fall
    back to ``dma_map_*``: no dma-iommu, size 0 or with bit 63 set (WARN_ON_ONCE), no IOVA."""
    state.addr, state.size, state._dev = 0, 0, None
    if dev.machine.iommu_mode != "dma-iommu":
        return False
    if not size or size & DMA_IOVA_USE_SWIOTLB:
        dev.machine._warn(f"dma_iova_try_alloc(): WARN_ON_ONCE: size {size:#x}")
        return False
    off = phys & (_GRANULE - 1)
    addr = dev._iova_alloc(_iova_align(size + off))
    if not addr:
        return False
    state.addr, state.size, state._dev = addr + off, size, dev
    return True


def _window(fn, dev, state, offset, size):
    if state._dev is not dev or not state.size:
        raise NetmemError(22, f"{fn}: the state holds no IOVA window of {dev.name}")
    if offset + size > state.size:
        raise NetmemError(22, f"{fn}: [{offset}, {offset + size}) is beyond the IOVA window of "
                              f"{state.size} bytes")


def dma_iova_link(dev, state, phys, offset, size, dir, attrs=0):
    """Models ``dma_iova_link()``: map ``size`` bytes at ``phys`` into the window at
    ``offset``, without an IOTLB sync. 0 or a negative errno (-EIO for an unaligned ``phys``
    past the window's start, with the kernel's WARN_ON_ONCE)."""
    _check_dir("dma_iova_link", dir)
    _window("dma_iova_link", dev, state, offset, size)
    start_pad = phys & (_GRANULE - 1)
    if start_pad and offset > 0:
        dev.machine._warn("dma_iova_link(): WARN_ON_ONCE(iova_start_pad && offset > 0)")
        return -5
    rc = dev._iommu_map(state.addr + offset - start_pad, phys - start_pad,
                        _iova_align(size + start_pad), dir, False)
    if rc == 0:
        dev._count_map(1, 0, 0)
    return rc


def dma_iova_sync(dev, state, offset, size):
    """Models ``dma_iova_sync()``: one IOTLB sync for everything linked in the range."""
    _window("dma_iova_sync", dev, state, offset, size)
    dev._iotlb_sync()
    return 0


def _unlink(fn, dev, state, offset, size, free_iova):
    addr = state.addr + offset
    pad = addr & (_GRANULE - 1)
    length = _iova_align(size + pad)
    lazy = free_iova and not dev.machine.iommu.strict
    unmapped = dev._iommu_unmap(addr - pad, length, not lazy)
    if unmapped != length:
        dev.machine._warn(f"{fn}(): WARN_ON(unmapped != size): {unmapped} of {length} bytes")
    dev._count_map(0, 1, 0)


def dma_iova_unlink(dev, state, offset, size, dir, attrs=0):
    """Models ``dma_iova_unlink()``: unmap a range now, with an immediate IOTLB sync (no flush
    queue); the window stays reserved."""
    _check_dir("dma_iova_unlink", dir)
    _window("dma_iova_unlink", dev, state, offset, size)
    _unlink("dma_iova_unlink", dev, state, offset, size, False)


def dma_iova_free(dev, state):
    """Models ``dma_iova_free()``: release the window (after every range is unlinked). It
    passes a NULL gather to ``iommu_dma_free_iova()``, so the window goes straight back
    (``free_iova_fast()``) even in lazy mode: nothing was unmapped, nothing waits for a flush."""
    _free_window("dma_iova_free", dev, state, False)


def _free_window(fn, dev, state, queued):
    _window(fn, dev, state, 0, 0)
    pad = state.addr & (_GRANULE - 1)
    dev._iova_free(state.addr - pad, _iova_align(state.size + pad), queued)
    state.addr, state.size, state._dev = 0, 0, None


def dma_iova_destroy(dev, state, mapped_len, dir, attrs=0):
    """Models ``dma_iova_destroy()``: unlink ``[0, mapped_len)`` and free the window in one go.
    With a mapped length this is ``__iommu_dma_iova_unlink(..., free_iova=true)``, whose gather
    is ``queued`` in lazy mode, so the IOVA goes through the flush queue; without one it is
    ``dma_iova_free()`` (a NULL gather: freed at once).

    Departure: the kernel hands ``iommu_dma_free_iova()`` the aligned ``mapped_len``, not the
    window's size (``free_iova_fast()`` then files the pfn in the rcache bin of that size, or
    ``free_iova()`` drops the whole node); the model frees the whole window."""
    _check_dir("dma_iova_destroy", dir)
    _window("dma_iova_destroy", dev, state, 0, mapped_len)
    if not mapped_len:
        dma_iova_free(dev, state)
        return
    _unlink("dma_iova_destroy", dev, state, 0, mapped_len, True)
    _free_window("dma_iova_destroy", dev, state, True)


# ---- scatterlists (include/linux/scatterlist.h, kernel/dma/mapping.c) -------------------------

class Scatterlist:
    """One ``struct scatterlist`` entry: a physical range (``page``/``offset`` when it lies in
    a page of RAM) and, once mapped, ``dma_address``/``dma_length``."""

    __slots__ = ("_bus", "dma_address", "dma_length", "length", "offset", "page", "phys")

    def __init__(self, phys, length, page=None, offset=0):
        self.phys, self.length, self.page, self.offset = phys, length, page, offset
        self.dma_address, self.dma_length, self._bus = DMA_MAPPING_ERROR, 0, False

    def __repr__(self):
        return (f"<sg phys={self.phys:#x} len={self.length} dma={self.dma_address:#x} "
                f"dma_len={self.dma_length}>")


class SgTable:
    """Models ``struct sg_table``: ``sgl`` (the entries), ``orig_nents`` and, once mapped,
    ``nents`` (the DMA segments, at the front of ``sgl``)."""

    def __init__(self, entries):
        self.sgl = list(entries)
        self.orig_nents = len(self.sgl)
        self.nents = 0

    @classmethod
    def from_pages(cls, machine, pages):
        """From ``[(page_ref, offset, length), ...]`` (``sg_alloc_table_from_pages`` without
        its merging: one entry per tuple)."""
        out = []
        for ref, offset, length in pages:
            view = machine.netmem(ref)
            if view.is_net_iov or offset + length > len(view.address()) or not length:
                raise NetmemError(22, f"SgTable: ({ref:#x}, {offset}, {length}) is not a range "
                                      "of a page")
            out.append(Scatterlist(view.phys + offset, length, ref, offset))
        return cls(out)

    @classmethod
    def from_phys(cls, ranges):
        """From physical ranges ``[(phys, length), ...]`` (RAM or PCI BAR memory)."""
        return cls(Scatterlist(phys, length, None, phys & (_GRANULE - 1))
                   for phys, length in ranges)


def for_each_sgtable_dma_sg(sgt):
    """Models ``for_each_sgtable_dma_sg()``: the DMA segments of a mapped table, the first
    ``sgt.nents`` entries of ``sgl`` (none before ``dma_map_sgtable()``)."""
    yield from sgt.sgl[:sgt.nents]


def sg_dma_address(sg):
    """Models ``sg_dma_address()``."""
    return sg.dma_address


def sg_dma_len(sg):
    """Models ``sg_dma_len()``."""
    return sg.dma_length


_P2P_KIND = {1: "none", 2: "not_supported", 3: "bus_addr", 4: "thru_host_bridge"}


def _p2p_state(dev, phys):
    """``pci_p2pdma_state()``: ``(kind, bus address)`` of a segment for ``dev``; ``"none"``
    for memory that is not p2pdma's (RAM)."""
    map_type, bus = dev.machine.pci.p2pdma_state(dev, phys)
    return _P2P_KIND[map_type], bus


def _unmap_direct(dev, sgl, dir, attrs):
    for s in sgl:
        if not s._bus and s.dma_address != DMA_MAPPING_ERROR:
            dev._unmap(s.dma_address, s.length, dir, attrs)
        s.dma_address, s.dma_length, s._bus = DMA_MAPPING_ERROR, 0, False


def _map_sg_direct(dev, sgt, dir, attrs):
    """Models ``dma_direct_map_sg()``: segment by segment, never merged."""
    for s in sgt.sgl:
        kind, bus = _p2p_state(dev, s.phys)
        if kind == "bus_addr":
            s.dma_address, s.dma_length, s._bus = bus, s.length, True
            continue
        if kind == "not_supported":
            _unmap_direct(dev, sgt.sgl, dir, attrs)
            return -121   # EREMOTEIO
        s.dma_address = dev._map(s.phys, s.length, dir, attrs)
        if s.dma_address == DMA_MAPPING_ERROR:
            _unmap_direct(dev, sgt.sgl, dir, attrs)
            return -5     # EIO
        s.dma_length = s.length
    return len(sgt.sgl)


def _map_sg_iommu(dev, sgt, dir, attrs):
    """Models ``iommu_dma_map_sg()``: granule-align every segment (pad before a segment that
    would cross the segment boundary), one IOVA for the list, map, then ``__finalise_sg()``."""
    mask = dev.seg_boundary_mask
    iova_len, prev, layout = 0, None, []
    for s in sgt.sgl:
        kind, bus = _p2p_state(dev, s.phys)
        if kind == "bus_addr":
            s.dma_address, s.dma_length, s._bus = bus, s.length, True
            layout.append(None)
            continue
        if kind == "not_supported":
            return -121   # EREMOTEIO
        off = s.phys & (_GRANULE - 1)
        s_len = _iova_align(s.length + off)
        pad = (mask - iova_len + 1) & mask
        if pad and pad < s_len - 1:
            layout[prev][1] += pad
            iova_len += pad
        layout.append([off, s_len])
        prev = len(layout) - 1
        iova_len += s_len
    if not iova_len:
        return _finalise_sg(dev, sgt, layout, 0)
    iova = dev._iova_alloc(iova_len)
    if not iova:
        return -12        # ENOMEM
    addr = iova
    for s, lay in zip(sgt.sgl, layout, strict=True):
        if lay is None:
            continue
        if dev._iommu_map(addr, s.phys - lay[0], lay[1], dir, False):
            dev._iommu_unmap(iova, addr - iova, True)
            dev._iova_free(iova, iova_len, False)     # out_free_iova: a NULL gather
            return -12
        addr += lay[1]
    dev._iotlb_sync()
    return _finalise_sg(dev, sgt, layout, iova)


def _finalise_sg(dev, sgt, layout, dma_addr):
    """Models ``__finalise_sg()``: join a segment to the current DMA segment when it starts on
    a granule, the join does not cross the segment boundary and stays within max_seg_size."""
    seg_mask, max_len = dev.seg_boundary_mask, dev.max_seg_size
    outs, cur_len = [], 0
    for s, lay in zip(sgt.sgl, layout, strict=True):
        if lay is None:
            outs.append([s.dma_address, s.dma_length, True])
            cur_len = 0
            continue
        s_iova_off, s_iova_len = lay
        if cur_len and not s_iova_off and (dma_addr & seg_mask) and max_len - cur_len >= s.length:
            cur_len += s.length
        else:
            cur_len = s.length
            outs.append([dma_addr + s_iova_off, 0, False])
        outs[-1][1] = cur_len
        dma_addr += s_iova_len
        if s.length + s_iova_off < s_iova_len:
            cur_len = 0
    for i, s in enumerate(sgt.sgl):
        s.dma_address, s.dma_length, s._bus = outs[i] if i < len(outs) else \
            (DMA_MAPPING_ERROR, 0, False)
    return len(outs)


def dma_map_sgtable(dev, sgt, dir, attrs=0):
    """Models ``dma_map_sgtable()``: sets ``sgt.nents`` to the DMA segments; raises
    ``NetmemError`` with the kernel's errno (EIO, ENOMEM, EREMOTEIO, EINVAL) on failure."""
    _check_dir("dma_map_sgtable", dir)
    if sgt.nents:
        raise NetmemError(22, "dma_map_sgtable: the table is already mapped")
    if dev.machine.iommu_mode == "dma-iommu":
        n = _map_sg_iommu(dev, sgt, dir, attrs)
        if n > 0:
            dev._count_map(1, 0, 1)
    else:
        n = _map_sg_direct(dev, sgt, dir, attrs)
    if n < 0:
        for s in sgt.sgl:
            s.dma_address, s.dma_length, s._bus = DMA_MAPPING_ERROR, 0, False
        raise NetmemError(-n, f"dma_map_sgtable: {dev.name}: mapping {sgt.orig_nents} entries "
                              f"failed ({n})")
    sgt.nents = n
    sgt._mapped = (dev, dir)
    _cover_bus_segments(dev, sgt, True)
    return 0


def _cover_bus_segments(dev, sgt, map):
    """A bus-address segment has no mapping anywhere (``pci_p2pdma_bus_addr_map()`` only
    computes the address and ``sg_dma_mark_bus_address()`` flags it), so count it as one for
    the unmapped-access check while the table is mapped."""
    for s in sgt.sgl[:sgt.nents]:
        if s._bus:
            dev._cover_bus(s.dma_address, s.dma_length, map)


def dma_unmap_sgtable(dev, sgt, dir, attrs=0):
    """Models ``dma_unmap_sgtable()``; the table must have been mapped for ``dev`` with ``dir``."""
    _check_dir("dma_unmap_sgtable", dir)
    if not sgt.nents or getattr(sgt, "_mapped", None) != (dev, dir):
        raise NetmemError(22, f"dma_unmap_sgtable: DMA-API: {dev.name}: device driver tries to "
                              "free an invalid DMA memory address (the table is not mapped with "
                              "this device and direction)")
    _cover_bus_segments(dev, sgt, False)
    if dev.machine.iommu_mode == "dma-iommu":
        segs = [s for s in sgt.sgl[:sgt.nents] if not s._bus and s.dma_length]
        if segs:
            start = segs[0].dma_address & ~(_GRANULE - 1)
            end = segs[-1].dma_address + segs[-1].dma_length
            dev._iommu_unmap(start, _iova_align(end - start), dev.machine.iommu.strict)
            dev._iova_free(start, _iova_align(end - start), True)   # __iommu_dma_unmap()
        dev._count_map(0, 1, -1)
        for s in sgt.sgl:
            s.dma_address, s.dma_length, s._bus = DMA_MAPPING_ERROR, 0, False
    else:
        _unmap_direct(dev, sgt.sgl, dir, attrs)
    sgt.nents = 0
    sgt._mapped = None
