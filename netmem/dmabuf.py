"""dma-buf: buffers shared between devices, and the exporters devmem TCP binds to.

Models drivers/dma-buf/dma-buf.c of Linux 6.18: a ``struct dma_buf`` is a file, counted by
``dma_buf_get()``/``dma_buf_put()`` (the fd holds one reference, dropped by ``close()``; a mapping
made by ``mmap()`` holds another); importers attach a device (``dma_buf_attach()``, a static
attachment) and map the buffer for it (``dma_buf_map_attachment()``), which runs the exporter's
``map_dma_buf``: ``dma_map_sgtable()`` of the exporter's scatterlist for the attached device, so the
IOMMU's merging, or ``pci_p2pdma_map_type()`` for p2pdma memory, decides the DMA segments. Since
Linux commit b72f66f22c0e ("dma-buf: drop caching of sg_tables") (in v6.15) every map makes a new
table, and nothing is unmapped for the importer. The exporters:

- ``udmabuf_create()``: drivers/dma-buf/udmabuf.c, over host pages of the machine's buddy
  allocator (the memfd's pages), readable through ``mmap()`` as ncdevmem reads payload.
- ``export_device_memory()``: a GPU-like endpoint's device memory, a large BAR-like region that is
  lazily committed (a 16 GiB dma-buf costs what is touched); the CPU cannot read it (EFAULT);
  ``read_device()`` stands in for a device-to-host copy.
- ``export_p2p()``: p2pdma memory of a BAR (``pci_p2pdma_add_resource()``, ``pci_alloc_p2pmem()``).

``layout`` shapes the exporter's scatterlist: ``"contiguous"`` (one entry where the memory is
contiguous), ``"pages"`` (one entry per page, no two entries physically adjacent, so only the
IOMMU's merging can join them into DMA segments), ``"random"`` (entries of 1 to 16 pages, sizes
drawn from ``seed``, not adjacent either). An entry is at most ``MAX_SG_ENT_SZ`` bytes
(``sg->length`` is an unsigned int), so even contiguous memory past 4 GiB takes several entries.

Departures (also in the docstrings): fds are numbered from 3 up and never reused; a dma-buf whose
last reference goes while devices are still attached keeps its memory (with the kernel's WARN)
until the last detach, where the kernel frees it under the importers; ``dma_buf_detach()`` of an
attachment that still has mappings is refused (EBUSY), where the kernel frees the attachment and
leaks the mappings; the CPU access the device-memory exporter refuses is EFAULT, the model's one
errno for unreadable memory (a real exporter without ``mmap`` gives EINVAL, NVIDIA's ENOTSUPP);
there are no fences, no dynamic (move_notify) importers, no ``vmap``.
"""
import bisect
import random
import warnings

import numpy as np

from netmem import _core, genalloc
from netmem.dma import SgTable, dma_map_sgtable, dma_unmap_sgtable, for_each_sgtable_dma_sg
from netmem.errors import NetmemError, NetmemWarning
from netmem.pci import (
    IORESOURCE_MEM,
    PAGE_OFFSET,
    PCI_STD_NUM_BARS,
    PciEndpoint,
    pci_alloc_p2pmem,
    pci_free_p2pmem,
    pci_p2pdma_add_resource,
    pci_p2pdma_distance,
    pci_resource_flags,
    pci_resource_len,
    pci_resource_start,
)

__all__ = [
    "DEVICE_MEMORY_SIZE",
    "LAYOUTS",
    "MAX_SG_ENT_SZ",
    "DeviceMemory",
    "DmaBuf",
    "DmaBufAttachment",
    "DmaBufMapping",
    "add_device_memory",
    "dma_buf_attach",
    "dma_buf_detach",
    "dma_buf_get",
    "dma_buf_map_attachment",
    "dma_buf_put",
    "dma_buf_unmap_attachment",
    "export_device_memory",
    "export_p2p",
    "sgt_dma_segments",
    "udmabuf_create",
]

PAGE_SIZE = _core.PAGE_SIZE_
PAGE_SHIFT = _core.PAGE_SHIFT_
MAX_PAGE_ORDER = _core.MAX_PAGE_ORDER_
HPAGE_PMD_ORDER = 9                 # x86-64: a hugetlb memfd's 2 MiB folios
# drivers/dma-buf/dma-buf-mapping.c: ALIGN_DOWN(UINT_MAX, PAGE_SIZE), as sg->length is 32 bits.
MAX_SG_ENT_SZ = 0xffffffff & ~(PAGE_SIZE - 1)
# A GPU's device memory as one resizable BAR: 128 GiB shows all of an 80 or 96 GB part.
DEVICE_MEMORY_SIZE = 128 << 30
# drivers/dma-buf/udmabuf.c: module parameter size_limit_mb, "Default is 64".
UDMABUF_SIZE_LIMIT_MB = 64
LAYOUTS = ("contiguous", "pages", "random")
_RANDOM_MAX_PAGES = 16          # "random" entries: 1 to 16 pages (4 KiB to 64 KiB)
_EBADF, _EBUSY, _EFAULT, _EINVAL, _ENOMEM, _EOPNOTSUPP = 9, 16, 14, 22, 12, 95


# ---- the dma-buf ------------------------------------------------------------------------------

class DmaBuf:
    """Models ``struct dma_buf`` and its file: ``fd``, ``size``, ``exp_name``, ``file_count``
    (references: the fd's, ``dma_buf_get()``'s, each ``mmap()``'s), ``attachments`` (newest
    first), ``exporter`` (the PCI device whose memory it is; None for udmabuf), ``readable``
    (whether the CPU may access it). Made by an exporter; ``phys_ranges`` are its scatterlist
    entries ``(phys, length)`` in dma-buf offset order."""

    def __init__(self, machine, exp_name, entries, *, readable, release, attach=None,
                 exporter=None):
        self.machine = machine
        self.exporter = exporter
        self.fd = machine._next_dmabuf_fd
        machine._next_dmabuf_fd += 1
        self.exp_name = exp_name
        self.size = sum(length for _, length in entries)
        self.attachments = []
        self.file_count = 1                 # the fd's reference (dma_buf_fd())
        self.readable = readable
        self._entries = list(entries)
        self._starts = []
        off = 0
        for _, length in self._entries:
            self._starts.append(off)
            off += length
        self._entry_arrays = None          # (starts, phys, lengths) as numpy, when needed
        self._release_fn = release         # dma_buf_ops.release
        self._attach_fn = attach           # dma_buf_ops.attach, or None
        self._fd_open = True
        self._released = False
        machine._dmabufs[self.fd] = self

    def __repr__(self):
        state = "released" if self._released else f"file_count={self.file_count}"
        return (f"<DmaBuf fd={self.fd} {self.exp_name} {self.size} bytes, "
                f"{len(self._entries)} entries, {state}, {len(self.attachments)} attached>")

    @property
    def phys_ranges(self):
        """The exporter's scatterlist entries, ``[(phys, length), ...]`` in dma-buf order."""
        return list(self._entries)

    def close(self):
        """``close(fd)``: drop the fd's reference; the fd is gone (EBADF a second time)."""
        if not self._fd_open:
            raise NetmemError(_EBADF, f"close: dma-buf fd {self.fd} is not open")
        self._fd_open = False
        self._put()

    def _put(self):
        self.file_count -= 1
        if self.file_count == 0:
            self._release()

    def _release(self):
        """``dma_buf_release()``: the exporter's ``release`` frees the memory. Departs: with
        devices still attached (the kernel WARNs, then frees under them) the memory stays until
        the last detach."""
        if self.attachments:
            warnings.warn(NetmemWarning(
                f"dma_buf_release(): WARN_ON(!list_empty(&dmabuf->attachments)): dma-buf fd "
                f"{self.fd} has {len(self.attachments)} attachment(s); its memory stays until "
                "they are detached"), stacklevel=4)
            return
        self._released = True
        self.machine._dmabufs.pop(self.fd, None)
        self._release_fn()

    def _check_range(self, fn, offset, n):
        if self.file_count <= 0:
            raise NetmemError(_EINVAL, f"{fn}: no reference on dma-buf fd {self.fd} is left")
        if offset < 0 or n < 0 or offset + n > self.size:
            raise NetmemError(_EINVAL, f"{fn}: [{offset}, +{n}) is outside the {self.size}-byte "
                                       f"dma-buf fd {self.fd}")

    def _chunks(self, offset, n):
        """``(physical address, length)`` pieces of ``[offset, offset + n)``, in order."""
        i = bisect.bisect_right(self._starts, offset) - 1
        while n:
            phys, length = self._entries[i]
            skip = offset - self._starts[i]
            chunk = min(n, length - skip)
            yield phys + skip, chunk
            offset += chunk
            n -= chunk
            i += 1

    def _copy_out(self, offset, n):
        out = bytearray(n)
        done = 0
        for phys, chunk in self._chunks(offset, n):
            out[done:done + chunk] = self.machine._phys_buffer(phys, chunk)
            done += chunk
        return bytes(out)

    def _copy_in(self, offset, data):
        done = 0
        for phys, chunk in self._chunks(offset, len(data)):
            self.machine._phys_buffer(phys, chunk)[:] = data[done:done + chunk]
            done += chunk

    def _check_cpu(self, fn):
        if not self.readable:
            raise NetmemError(_EFAULT, f"{fn}: dma-buf fd {self.fd} ({self.exp_name}) is device "
                                       "memory the CPU cannot access")

    def mmap(self):
        """``mmap()`` of the whole dma-buf (MAP_SHARED): a ``DmaBufMapping`` over its memory in
        dma-buf offset order, holding a file reference until ``munmap()``. EFAULT for device
        memory (see the module's departures)."""
        self._check_cpu("mmap")
        self._check_range("mmap", 0, 0)
        return DmaBufMapping(self)

    def read(self, offset, n):
        """The CPU reads ``n`` bytes at ``offset`` (what a reader of ``mmap()`` sees); EFAULT
        for device memory."""
        self._check_cpu("read")
        self._check_range("read", offset, n)
        return self._copy_out(offset, n)

    def read_device(self, offset, n):
        """The exporting device copies ``n`` bytes at ``offset`` to the host (``cudaMemcpy``
        device to host): the test's view of what the NIC wrote, for any exporter."""
        self._check_range("read_device", offset, n)
        return self._copy_out(offset, n)

    def read_device_gather(self, offsets, sizes):
        """``read_device`` of many ranges at once: the bytes of ``[offsets[i], offsets[i] +
        sizes[i])`` for every i, back to back, as one ``np.uint8`` array. The ranges are turned
        into physical pieces with numpy and copied by one C loop, so reading every frag of a
        batch of devmem cmsgs costs no Python per frag. EINVAL (nothing read) for a range
        outside the dma-buf."""
        offsets = np.ascontiguousarray(offsets, np.uint64).reshape(-1)
        sizes = np.ascontiguousarray(sizes, np.uint64).reshape(-1)
        if len(offsets) != len(sizes):
            raise NetmemError(_EINVAL, "read_device_gather: offsets and sizes differ in length")
        self._check_range("read_device_gather", 0, 0)
        ends = offsets + sizes
        bad = np.flatnonzero((ends > self.size) | (ends < offsets))
        if len(bad):
            i = int(bad[0])
            raise NetmemError(_EINVAL, f"read_device_gather: range {i}, [{int(offsets[i])}, "
                                       f"+{int(sizes[i])}), is outside the {self.size}-byte "
                                       f"dma-buf fd {self.fd}")
        keep = sizes > 0
        phys, lengths = self._phys_pieces(offsets[keep], sizes[keep])
        out = np.empty(int(sizes.sum()), np.uint8)
        self.machine._phys_gather(phys, lengths, out)
        return out

    @property
    def scatterlist(self):
        """``phys_ranges`` as ``np.uint64`` arrays: (dma-buf offset, physical address,
        length) of each entry, in offset order (made once, read-only)."""
        if self._entry_arrays is None:
            phys, length = (np.array(c, np.uint64).reshape(-1) for c in zip(*self._entries,
                                                                             strict=True))
            self._entry_arrays = (np.array(self._starts, np.uint64), phys, length)
            for a in self._entry_arrays:
                a.flags.writeable = False
        return self._entry_arrays

    def _phys_pieces(self, offsets, sizes):
        """(physical address, length) arrays of the pieces of nonempty ranges, in order: a
        range within one scatterlist entry is one piece, one across entries is cut at their
        borders."""
        starts, ephys, elen = self.scatterlist
        first = np.searchsorted(starts, offsets, "right") - 1
        last = np.searchsorted(starts, offsets + sizes - np.uint64(1), "right") - 1
        if (first == last).all():
            return ephys[first] + (offsets - starts[first]), sizes
        count = last - first + 1
        rng = np.repeat(np.arange(len(offsets)), count)
        entry = first[rng] + np.arange(len(rng)) - np.repeat(np.cumsum(count) - count, count)
        lo = np.maximum(offsets[rng], starts[entry])
        hi = np.minimum(offsets[rng] + sizes[rng], starts[entry] + elen[entry])
        return ephys[entry] + (lo - starts[entry]), hi - lo

    def write_device(self, offset, data):
        """The exporting device writes ``data`` at ``offset`` (host to device): what a GPU
        produces before devmem TX sends it, for any exporter."""
        data = bytes(data)
        self._check_range("write_device", offset, len(data))
        self._copy_in(offset, data)

    def _leak_report(self):
        mappings = sum(len(a._sgts) for a in self.attachments)
        held = "fd open" if self._fd_open else "fd closed"
        return (f"dma-buf fd {self.fd} ({self.exp_name}, {self.size} bytes) not released: "
                f"{self.file_count} reference(s) ({held}), {len(self.attachments)} "
                f"attachment(s), {mappings} mapping(s)")


class DmaBufMapping:
    """A CPU mapping of a readable dma-buf (``mmap()``): ``len()``, slices and ``read``/
    ``write`` by dma-buf offset. Holds a reference on the dma-buf (``vma->vm_file``) until
    ``munmap()``; usable as a context manager."""

    def __init__(self, dmabuf):
        self.dmabuf = dmabuf
        dmabuf.file_count += 1
        self._live = True

    def __repr__(self):
        return f"<DmaBufMapping of fd {self.dmabuf.fd}, {len(self)} bytes>"

    def __len__(self):
        return self.dmabuf.size

    def _check(self):
        if not self._live:
            raise NetmemError(_EFAULT, f"dma-buf fd {self.dmabuf.fd}: the mapping is unmapped")

    def read(self, offset, n):
        self._check()
        self.dmabuf._check_range("read", offset, n)
        return self.dmabuf._copy_out(offset, n)

    def write(self, offset, data):
        self._check()
        data = bytes(data)
        self.dmabuf._check_range("write", offset, len(data))
        self.dmabuf._copy_in(offset, data)

    def _span(self, key):
        if isinstance(key, slice):
            start, stop, step = key.indices(len(self))
            if step != 1:
                raise NetmemError(_EINVAL, "dma-buf mapping: slices take no step")
            return start, max(0, stop - start)
        i = key.__index__()
        i += len(self) if i < 0 else 0
        if not 0 <= i < len(self):
            raise IndexError(f"offset {key} outside the {len(self)}-byte mapping")
        return i, 1

    def __getitem__(self, key):
        start, n = self._span(key)
        data = self.read(start, n)
        return data if isinstance(key, slice) else data[0]

    def __setitem__(self, key, value):
        start, n = self._span(key)
        data = bytes(value) if isinstance(key, slice) else bytes([value])
        if len(data) != n:
            raise NetmemError(_EINVAL, f"dma-buf mapping: {len(data)} bytes into a {n}-byte "
                                       "slice")
        self.write(start, data)

    def munmap(self):
        """``munmap()``: drop the mapping's reference (the last one releases the dma-buf)."""
        self._check()
        self._live = False
        self.dmabuf._put()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self._live:
            self.munmap()


def dma_buf_get(machine, fd):
    """Models ``dma_buf_get()``: one more reference on the dma-buf behind ``fd``; EBADF when
    no open fd of the machine is a dma-buf's."""
    dmabuf = machine._dmabufs.get(fd)
    if dmabuf is None or not dmabuf._fd_open:
        raise NetmemError(_EBADF, f"dma_buf_get: fd {fd} is not an open dma-buf")
    dmabuf.file_count += 1
    return dmabuf


def dma_buf_put(dmabuf):
    """Models ``dma_buf_put()``: drop a reference; the last one releases the dma-buf (the
    exporter frees its memory). Departs: a put with no reference left is EINVAL (the kernel's
    fput() would underflow the file count)."""
    if not isinstance(dmabuf, DmaBuf) or dmabuf.file_count <= 0:
        raise NetmemError(_EINVAL, f"dma_buf_put: {dmabuf!r} holds no reference")
    dmabuf._put()


# ---- attachments and mappings -------------------------------------------------------------------

class DmaBufAttachment:
    """Models ``struct dma_buf_attachment``: the dma-buf, the importing device, ``peer2peer``
    (False: a static importer, as ``dma_buf_attach()`` makes) and its live mappings."""

    def __init__(self, dmabuf, dev):
        self.dmabuf = dmabuf
        self.dev = dev
        self.peer2peer = False
        self._sgts = []             # (SgTable, dir) of each live map
        self._attached = True

    def __repr__(self):
        return (f"<DmaBufAttachment fd={self.dmabuf.fd} dev={getattr(self.dev, 'name', '?')} "
                f"mappings={len(self._sgts)}>")


def dma_buf_attach(dmabuf, dev):
    """Models ``dma_buf_attach()`` (a static attachment: no importer ops, ``peer2peer``
    false). The exporter's ``attach`` may refuse: device memory needs a PCI path between the
    GPU and ``dev`` (``pci_p2pdma_distance() >= 0``), else EOPNOTSUPP. Takes no reference on
    the dma-buf: the importer keeps the one of its ``dma_buf_get()``."""
    if dmabuf is None or dev is None:
        warnings.warn(NetmemWarning("dma_buf_dynamic_attach(): WARN_ON(!dmabuf || !dev)"),
                      stacklevel=2)
        raise NetmemError(_EINVAL, "dma_buf_attach: no dma-buf or no device")
    if not isinstance(dmabuf, DmaBuf) or dmabuf._released:
        raise NetmemError(_EINVAL, f"dma_buf_attach: {dmabuf!r} is not a live dma-buf")
    if dmabuf._attach_fn is not None:
        dmabuf._attach_fn(dev)
    attach = DmaBufAttachment(dmabuf, dev)
    dmabuf.attachments.insert(0, attach)        # list_add(): the newest first
    return attach


def dma_buf_detach(dmabuf, attach):
    """Models ``dma_buf_detach()``: a ``WARN_ON`` (and nothing else) when ``attach`` is not
    ``dmabuf``'s. Departs: an attachment with live mappings is refused (EBUSY; the kernel frees
    it and leaks the mappings), one already detached is EINVAL; the last detach of a dma-buf
    whose references are gone releases it."""
    if not isinstance(attach, DmaBufAttachment) or attach.dmabuf is not dmabuf:
        warnings.warn(NetmemWarning("dma_buf_detach(): WARN_ON(!dmabuf || !attach || dmabuf != "
                                    "attach->dmabuf)"), stacklevel=2)
        return
    if not attach._attached:
        raise NetmemError(_EINVAL, f"dma_buf_detach: {attach!r} is already detached")
    if attach._sgts:
        raise NetmemError(_EBUSY, f"dma_buf_detach: {attach!r} still has {len(attach._sgts)} "
                                  "mapping(s): unmap them first (the kernel would leak them)")
    attach._attached = False
    dmabuf.attachments.remove(attach)
    if dmabuf.file_count == 0 and not dmabuf.attachments:
        dmabuf._release()


def _check_attach(fn, attach):
    if not isinstance(attach, DmaBufAttachment) or not attach._attached:
        raise NetmemError(_EINVAL, f"{fn}: WARN_ON(!attach || !attach->dmabuf): {attach!r} is "
                                   "not attached")


def dma_buf_map_attachment(attach, dir):
    """Models ``dma_buf_map_attachment()``: the exporter's ``map_dma_buf``, i.e. a new
    ``SgTable`` of its entries mapped with ``dma_map_sgtable(attach.dev, ..., dir)``. Its DMA
    segments (``for_each_sgtable_dma_sg()``) are what the importer may use: merged by the IOMMU
    under dma-iommu, one per entry under dma-direct, bus addresses for p2pdma memory a switch
    connects. Raises what ``dma_map_sgtable()`` raises (EREMOTEIO for p2pdma memory the host
    bridge refuses, ENOMEM, EINVAL for a bad direction). Each call maps again."""
    _check_attach("dma_buf_map_attachment", attach)
    dmabuf = attach.dmabuf
    sgt = SgTable.from_phys(dmabuf._entries)
    dma_map_sgtable(attach.dev, sgt, dir)
    attach._sgts.append((sgt, dir))
    return sgt


def dma_buf_unmap_attachment(attach, sgt, dir):
    """Models ``dma_buf_unmap_attachment()``: the exporter's ``unmap_dma_buf``,
    ``dma_unmap_sgtable()`` with the direction of the map. EINVAL (nothing changed) for a table
    this attachment did not map or a different direction (dma-debug's complaint)."""
    _check_attach("dma_buf_unmap_attachment", attach)
    for i, (mapped, mdir) in enumerate(attach._sgts):
        if mapped is sgt:
            if mdir != dir:
                raise NetmemError(_EINVAL, f"dma_buf_unmap_attachment: DMA-API: mapped with "
                                           f"direction {mdir}, unmapped with {dir}")
            dma_unmap_sgtable(attach.dev, sgt, dir)
            del attach._sgts[i]
            return
    raise NetmemError(_EINVAL, f"dma_buf_unmap_attachment: the table is not a mapping of "
                               f"{attach!r}")


def sgt_dma_segments(sgt):
    """For each DMA segment of a mapped table (``for_each_sgtable_dma_sg()``), ``(offset,
    dma_address, dma_length)``, ``offset`` being its byte offset in the dma-buf: the running
    sum of the earlier ``sg_dma_len()``, as ``net_devmem_bind_dmabuf()`` computes each chunk's
    ``base_virtual``."""
    out, offset = [], 0
    for sg in for_each_sgtable_dma_sg(sgt):
        out.append((offset, sg.dma_address, sg.dma_length))
        offset += sg.dma_length
    return out


# ---- layouts ------------------------------------------------------------------------------------

def _check_size(fn, size, layout):
    if not isinstance(size, int) or size <= 0 or size % PAGE_SIZE:
        raise NetmemError(_EINVAL, f"{fn}: size {size!r} is not a nonzero multiple of "
                                   f"{PAGE_SIZE}")
    if layout not in LAYOUTS:
        raise NetmemError(_EINVAL, f"{fn}: layout {layout!r} is not one of {', '.join(LAYOUTS)}")


def _layout(runs, layout, seed):
    """The scatterlist entries, in dma-buf order, over ``runs`` (physically contiguous ranges,
    ascending): as they are for ``contiguous``; pages or random pieces in descending physical
    order otherwise, so that no entry ends where the next begins. Entries never exceed
    ``MAX_SG_ENT_SZ``."""
    pieces = []
    rng = random.Random(seed)
    for phys, length in runs:
        off = 0
        while off < length:
            if layout == "contiguous":
                n = min(length - off, MAX_SG_ENT_SZ)
            elif layout == "pages":
                n = PAGE_SIZE
            else:
                n = rng.randint(1, min(_RANDOM_MAX_PAGES, (length - off) >> PAGE_SHIFT)) \
                    << PAGE_SHIFT
            pieces.append((phys + off, n))
            off += n
    return pieces if layout == "contiguous" else pieces[::-1]


def _coalesce(ranges):
    """Sorted ranges with the adjacent ones joined."""
    runs = []
    for phys, length in sorted(ranges):
        if runs and runs[-1][0] + runs[-1][1] == phys:
            runs[-1] = (runs[-1][0], runs[-1][1] + length)
        else:
            runs.append((phys, length))
    return runs


# ---- udmabuf -----------------------------------------------------------------------------------

def udmabuf_create(machine, size, layout="contiguous", seed=0,
                   size_limit_mb=UDMABUF_SIZE_LIMIT_MB, hugetlb=False):
    """Models ``udmabuf_create()`` over a memfd of ``size`` bytes: the memfd's pages come from
    the machine's buddy allocator (largest blocks first; ``contiguous`` gives one entry where
    they are physically contiguous), cleared as shmem clears them, each block held until the
    dma-buf is released (``release_udmabuf()``: ``put_page()``). With ``hugetlb`` the memfd is
    a ``MFD_HUGETLB`` one of 2 MiB folios and, as udmabuf exports one scatterlist entry per
    folio since the devmem rx-buf-size series (2026, likely 7.3), each folio is one 2 MiB entry
    (``layout`` must be ``contiguous``). EINVAL for a size that is not a nonzero multiple of the
    page size (of 2 MiB with ``hugetlb``) or exceeds ``size_limit_mb`` (the module parameter,
    64 by default), ENOMEM when the machine has not the pages. The CPU reads and writes it
    through ``mmap()``."""
    _check_size("udmabuf_create", size, layout)
    if size > size_limit_mb << 20:
        raise NetmemError(_EINVAL, f"udmabuf_create: {size} bytes exceed size_limit_mb "
                                   f"{size_limit_mb}")
    folio = PAGE_SIZE << HPAGE_PMD_ORDER
    if hugetlb and (size % folio or layout != "contiguous"):
        raise NetmemError(_EINVAL, f"udmabuf_create: a hugetlb memfd of {size} bytes, layout "
                                   f"{layout!r}: its size must be a multiple of {folio} and its "
                                   "scatterlist one entry per folio (contiguous)")
    blocks = _udmabuf_blocks(machine, size >> PAGE_SHIFT, HPAGE_PMD_ORDER if hugetlb else 0)

    def release():
        for ref, _ in blocks:
            machine.put_page(ref)

    runs = _coalesce((machine.netmem(ref).phys, PAGE_SIZE << o) for ref, o in blocks)
    zero = bytes(PAGE_SIZE << MAX_PAGE_ORDER)
    for phys, length in runs:                   # shmem hands out cleared pages
        for off in range(0, length, len(zero)):
            n = min(len(zero), length - off)
            machine._phys_buffer(phys + off, n)[:] = zero[:n]
    entries = [(machine.netmem(ref).phys, folio) for ref, _ in blocks] if hugetlb else \
        _layout(runs, layout, seed)
    return DmaBuf(machine, "udmabuf", entries, readable=True, release=release)


def _udmabuf_blocks(machine, npages, min_order):
    """The memfd's memory: buddy blocks of ``min_order`` or more, largest first (hugetlb
    folios are exactly ``min_order``), as ``(ref, order)``; ENOMEM (and nothing kept) when the
    machine has not the pages."""
    if npages > machine.nr_free_pages():
        raise NetmemError(_ENOMEM, f"udmabuf_create: {npages} pages, {machine.nr_free_pages()} "
                                   "free")
    blocks, remaining = [], npages
    order = min_order if min_order else MAX_PAGE_ORDER
    while remaining:
        order = min(order, remaining.bit_length() - 1)
        ref = machine.alloc_pages(order)
        if ref:
            blocks.append((ref, order))
            remaining -= 1 << order
        elif order > min_order:
            order -= 1
        else:
            for ref, _ in blocks:
                machine.put_page(ref)
            raise NetmemError(_ENOMEM, f"udmabuf_create: out of pages after "
                                       f"{npages - remaining} of {npages}")
    return blocks


# ---- device memory ------------------------------------------------------------------------------

class DeviceMemory:
    """A GPU's device memory as its driver manages it: one memory BAR that shows all of it
    (resizable BAR) and the driver's allocator over it, a gen_pool of pages. Made by
    ``add_device_memory()``; ``pdev.device_memory``."""

    def __init__(self, pdev, bar, res):
        self.pdev = pdev
        self.bar = bar
        self.start = res.start
        self.size = res.size
        self.pool = genalloc.gen_pool_create(PAGE_SHIFT, pdev.numa_node)
        genalloc.gen_pool_add(self.pool, res.start, res.size, pdev.numa_node)

    def __repr__(self):
        return (f"<DeviceMemory of {self.pdev.name}: BAR {self.bar} at {self.start:#x}, "
                f"{self.available} of {self.size} bytes free>")

    @property
    def available(self):
        return genalloc.gen_pool_avail(self.pool)


def add_device_memory(pdev, size=DEVICE_MEMORY_SIZE, bar=None):
    """Give GPU-like endpoint ``pdev`` its device memory: a new memory BAR of ``size`` bytes (a
    power of two; the first free BAR number unless ``bar``), lazily committed, as the GPU
    driver's probe finds its memory aperture. ``export_device_memory()`` calls it with the
    defaults on first use. EINVAL if ``pdev`` is not a GPU endpoint, EBUSY if it has device
    memory already, ENOMEM if no BAR number is free."""
    if not isinstance(pdev, PciEndpoint) or pdev.kind != "gpu":
        raise NetmemError(_EINVAL, f"add_device_memory: {pdev!r} is not a GPU endpoint")
    if pdev.device_memory is not None:
        raise NetmemError(_EBUSY, f"add_device_memory: {pdev.name} has device memory already")
    if bar is None:
        bar = next((b for b in range(PCI_STD_NUM_BARS) if b not in pdev.resources), None)
        if bar is None:
            raise NetmemError(_ENOMEM, f"add_device_memory: {pdev.name} has no free BAR")
    res = pdev.topo.add_bar(pdev, bar, size)
    pdev.device_memory = DeviceMemory(pdev, bar, res)
    return pdev.device_memory


def export_device_memory(pdev, size, layout="contiguous", seed=0):
    """A dma-buf of ``size`` bytes of GPU ``pdev``'s device memory (first fit in its
    ``DeviceMemory``, made on first use with ``DEVICE_MEMORY_SIZE``): untouched pages cost no
    host memory. Importers reach it through the GPU's BAR: the exporter's ``attach`` refuses a
    device with no PCI path to the GPU (``pci_p2pdma_distance() < 0``: EOPNOTSUPP), and its
    ``map_dma_buf`` maps the BAR ranges through the importer's DMA path (an IOVA under
    dma-iommu, as ``dma_map_resource()`` does). The CPU cannot access it (``mmap()``, ``read()``:
    EFAULT); ``read_device()`` copies from it. EINVAL for a bad size or layout, or a ``pdev``
    that is not a GPU endpoint; ENOMEM when the device memory has no run of ``size`` bytes."""
    _check_size("export_device_memory", size, layout)
    if not isinstance(pdev, PciEndpoint) or pdev.kind != "gpu":
        raise NetmemError(_EINVAL, f"export_device_memory: {pdev!r} is not a GPU endpoint")
    dm = pdev.device_memory or add_device_memory(pdev)
    addr = genalloc.gen_pool_alloc(dm.pool, size)
    if not addr:
        raise NetmemError(_ENOMEM, f"export_device_memory: no {size} bytes free in the device "
                                   f"memory of {pdev.name} ({dm.available} available)")
    def attach(dev):
        if pci_p2pdma_distance(pdev, dev) < 0:
            raise NetmemError(_EOPNOTSUPP, f"dma_buf_attach: {getattr(dev, 'name', dev)} has no "
                                           f"PCI peer-to-peer path to {pdev.name}")

    return DmaBuf(pdev.topo.machine, "gpu", _layout([(addr, size)], layout, seed),
                  readable=False, release=lambda: genalloc.gen_pool_free(dm.pool, addr, size),
                  attach=attach, exporter=pdev)


# ---- p2pdma -------------------------------------------------------------------------------------

def export_p2p(pdev, bar, size, layout="contiguous", seed=0):
    """A dma-buf of ``size`` bytes of p2pdma memory of ``pdev``: BAR ``bar`` is offered whole
    (``pci_p2pdma_add_resource(pdev, bar, 0, 0)``) unless some of it is p2pdma memory already;
    ``pci_alloc_p2pmem()`` takes the bytes (from the device's p2pmem, newest chunk first, as
    the kernel does: ``bar`` only says which BAR to offer) and the release gives them back
    (``pci_free_p2pmem()``). Mapping follows ``pci_p2pdma_map_type()`` between ``pdev`` and the
    importer: bus addresses through a switch (never merged, no IOMMU), an ordinary mapping
    through the host bridge, EREMOTEIO where that is not supported. The CPU can map it (BAR
    memory). EINVAL for a bad size, layout or BAR, ENOMEM when the p2pmem has no run of
    ``size`` bytes."""
    _check_size("export_p2p", size, layout)
    if not isinstance(pdev, PciEndpoint) or not pci_resource_flags(pdev, bar) & IORESOURCE_MEM:
        raise NetmemError(_EINVAL, f"export_p2p: BAR {bar!r} of {pdev!r} is not a memory BAR")
    start = pci_resource_start(pdev, bar)
    end = start + pci_resource_len(pdev, bar) - 1
    pgmaps = pdev.p2pdma.pgmaps if pdev.p2pdma is not None else []
    if not any(start <= pg.start and pg.end <= end for pg in pgmaps):
        pci_p2pdma_add_resource(pdev, bar, 0, 0)
    virt = pci_alloc_p2pmem(pdev, size)
    if not virt:
        raise NetmemError(_ENOMEM, f"export_p2p: no {size} bytes of p2pmem free on {pdev.name}")
    return DmaBuf(pdev.topo.machine, "p2pdma", _layout([(virt - PAGE_OFFSET, size)], layout, seed),
                  readable=True, release=lambda: pci_free_p2pmem(pdev, virt, size),
                  exporter=pdev)

