"""io_uring zero-copy receive (zcrx): the uapi, an io_uring instance, interface queues.

Models ``include/uapi/linux/io_uring/zcrx.h`` and io_uring/zcrx.c, io_uring/net.c
(``io_recvzc``) of Linux 7.2: ``IoUring`` (an instance with the setup flags zcrx checks and a CQ
ring of 32-byte CQEs the application reads, a numpy array), ``IoUring.register_zcrx_ifq()``
(``io_register_zcrx()``: every check and errno of the registration path), the area from pinned
user memory (``mmap_anonymous()``) or a dma-buf, the refill ring the application writes (numpy
views of the ifq's region: ``struct io_uring_zcrx_rqe`` entries, head and tail), RECV_ZC
(``IoUring.prep_recv_zc()``; its completions carry ``struct io_uring_zcrx_cqe``), the control
ops (``ZCRX_CTRL_FLUSH_RQ``, ``ZCRX_CTRL_EXPORT`` with ``ZCRX_REG_IMPORT`` on a second ring,
``ZCRX_CTRL_ARM_EVENT``), events and ``zcrx_stats``. The provider is
``netmem.providers.zcrx``; the data path (refill, RECV_ZC's walk, copy fallback, scrub) is C
(pyx/zcrx.pxi).

Departs: one process, so a user address is an address of this module's mappings
(``UserMapping``); the refill region is always the kernel's (the application reads it as
``ifq.region``; the kernel also takes user memory); CAP_NET_ADMIN is ``IoUring.cap_net_admin``;
an SQE is a call (``prep_recv_zc``), and armed multishot requests are issued again by
``IoUring.submit_and_wait()`` (the model has no poll wakeups); events are posted by the task
work that ``submit_and_wait()`` runs.
"""
import dataclasses
from errno import (
    EBADF,
    EFAULT,
    EINVAL,
    ENODEV,
    ENOTSOCK,
    ENXIO,
    EOPNOTSUPP,
    EOVERFLOW,
    EPERM,
    ERANGE,
)

import numpy as np

from netmem import _core
from netmem.dma import SgTable, dma_map_sgtable, dma_unmap_sgtable
from netmem.dmabuf import (
    dma_buf_attach,
    dma_buf_detach,
    dma_buf_get,
    dma_buf_map_attachment,
    dma_buf_put,
    dma_buf_unmap_attachment,
)
from netmem.errors import NetmemError
from netmem.netmem import NET_IOV_IOURING, NetIovArea
from netmem.page_pool import DMA_FROM_DEVICE
from netmem.providers.zcrx import IoUringPpZcProvider

__all__ = [
    "IORING_CQE_F_32",
    "IORING_CQE_F_MORE",
    "IORING_RECV_MULTISHOT",
    "IORING_SETUP_CLAMP",
    "IORING_SETUP_CQE32",
    "IORING_SETUP_CQE_MIXED",
    "IORING_SETUP_DEFER_TASKRUN",
    "IORING_SETUP_SINGLE_ISSUER",
    "IORING_ZCRX_AREA_DMABUF",
    "IORING_ZCRX_AREA_MASK",
    "IORING_ZCRX_AREA_SHIFT",
    "IO_URING_CQE32_DTYPE",
    "IO_URING_ZCRX_RQE_DTYPE",
    "PROT_READ",
    "PROT_WRITE",
    "ZCRX_CTRL_ARM_EVENT",
    "ZCRX_CTRL_EXPORT",
    "ZCRX_CTRL_FLUSH_RQ",
    "ZCRX_EVENT_ALLOC_FAIL",
    "ZCRX_EVENT_COPY",
    "ZCRX_EVENT_DESC_FLAG_STATS",
    "ZCRX_FEATURES",
    "ZCRX_FEATURE_EVENT",
    "ZCRX_FEATURE_RX_PAGE_SIZE",
    "ZCRX_REG_IMPORT",
    "ZCRX_REG_NODEV",
    "IoUring",
    "IoUringRegionDesc",
    "IoUringZcrxAreaReg",
    "IoUringZcrxIfqReg",
    "IoZcrxIfq",
    "UserMapping",
    "ZcrxCtrl",
    "ZcrxEventDesc",
    "mmap_anonymous",
]

PAGE_SHIFT = 12
PAGE_SIZE = 1 << PAGE_SHIFT
HPAGE_ORDER = 9                         # a 2 MiB hugetlb page (x86)

# include/uapi/linux/io_uring.h: io_uring_setup() flags.
IORING_SETUP_CLAMP = 1 << 4
IORING_SETUP_CQE32 = 1 << 11
IORING_SETUP_SINGLE_ISSUER = 1 << 12
IORING_SETUP_DEFER_TASKRUN = 1 << 13
IORING_SETUP_CQE_MIXED = 1 << 18
IORING_CQE_F_MORE = _core.IORING_CQE_F_MORE_
IORING_CQE_F_32 = _core.IORING_CQE_F_32_
IORING_RECVSEND_POLL_FIRST = 1 << 0
IORING_RECV_MULTISHOT = 1 << 1
IORING_MAX_ENTRIES = 32768              # io_uring_setup(): SQ entries

# include/uapi/linux/io_uring/zcrx.h
IORING_ZCRX_AREA_SHIFT = _core.IORING_ZCRX_AREA_SHIFT_
IORING_ZCRX_AREA_MASK = ~((1 << IORING_ZCRX_AREA_SHIFT) - 1) & (2**64 - 1)
IORING_ZCRX_AREA_DMABUF = 1
ZCRX_REG_IMPORT = 1
ZCRX_REG_NODEV = 2
ZCRX_FEATURE_RX_PAGE_SIZE = 1 << 0
ZCRX_FEATURE_EVENT = 1 << 1
ZCRX_EVENT_ALLOC_FAIL = 0
ZCRX_EVENT_COPY = 1
_ZCRX_EVENT_TYPE_LAST = 2
ZCRX_EVENT_DESC_FLAG_STATS = 1 << 0
ZCRX_CTRL_FLUSH_RQ = 0
ZCRX_CTRL_EXPORT = 1
ZCRX_CTRL_ARM_EVENT = 2

# io_uring/zcrx.h and zcrx.c
ZCRX_SUPPORTED_REG_FLAGS = ZCRX_REG_IMPORT | ZCRX_REG_NODEV
ZCRX_FEATURES = ZCRX_FEATURE_RX_PAGE_SIZE | ZCRX_FEATURE_EVENT
ZCRX_EVENT_TYPE_MASK = (1 << ZCRX_EVENT_ALLOC_FAIL) | (1 << ZCRX_EVENT_COPY)
IO_RQ_MAX_ENTRIES = 32768
IO_ZCRX_AREA_SUPPORTED_FLAGS = IORING_ZCRX_AREA_DMABUF
SZ_1G = 1 << 30                         # io_validate_user_buf_range(): "arbitrary limit"
L1_CACHE_BYTES = 64
RQ_HEAD_OFF, RQ_TAIL_OFF = 0, 64        # struct io_uring {head, tail}, each cache-line aligned
RQES_OFF = 128                          # ALIGN(sizeof(struct io_uring), L1_CACHE_BYTES)
ZCRX_STATS_SIZE = 16                    # struct zcrx_stats {copy_count, copy_bytes}

PROT_READ, PROT_WRITE = 1, 2

#: struct io_uring_zcrx_rqe, as the refill ring holds it.
IO_URING_ZCRX_RQE_DTYPE = np.dtype([("off", "<u8"), ("len", "<u4"), ("__pad", "<u4")])
#: A 32-byte CQE: struct io_uring_cqe, then struct io_uring_zcrx_cqe (``off``, ``__pad``).
IO_URING_CQE32_DTYPE = _core.IO_URING_CQE32_DTYPE


# ---- user memory ---------------------------------------------------------------------------------

class UserMapping:
    """An anonymous mapping of the application (``mmap(MAP_ANONYMOUS)``, or MAP_HUGETLB with
    2 MiB pages): ``addr`` (a user address, page aligned), ``length``, ``prot``, and the pages
    behind it (from the machine's buddy allocator, held by the mapping). ``read``/``write``
    take user addresses. Made by ``mmap_anonymous()``; ``munmap()`` drops the mapping's pages
    (a pinned page stays until it is unpinned)."""

    def __init__(self, machine, addr, length, prot, order):
        self.machine, self.addr, self.length, self.prot = machine, addr, length, prot
        self.blocks = []
        try:
            for _ in range(length >> (PAGE_SHIFT + order)):
                ref = machine.alloc_pages(order)
                if not ref:
                    raise NetmemError(12, f"mmap: out of memory for {length} bytes")
                self.blocks.append(ref)
        except NetmemError:
            self._put()
            raise
        self.order = order
        self.pages = np.array([machine.netmem(r).phys + (i << PAGE_SHIFT) for r in self.blocks
                               for i in range(1 << order)], dtype=np.uint64)
        for phys, n in _runs(self.pages):
            machine._phys_buffer(phys, n)[:] = bytes(n)

    def __repr__(self):
        return f"<UserMapping {self.addr:#x}+{self.length:#x} prot {self.prot}>"

    def _put(self):
        for ref in self.blocks:
            self.machine.put_page(ref)
        self.blocks = []

    def munmap(self):
        """``munmap()``: the mapping goes; pages still pinned live until unpinned."""
        self._put()
        self.machine._user_mappings.pop(self.addr, None)

    def _phys(self, addr):
        off = addr - self.addr
        return int(self.pages[off >> PAGE_SHIFT]) + (off & (PAGE_SIZE - 1))

    def read(self, addr, n):
        """``n`` bytes from user address ``addr`` (within the mapping)."""
        if not (self.addr <= addr and addr + n <= self.addr + self.length):
            raise NetmemError(EFAULT, f"read of {n} bytes at {addr:#x}: outside {self!r}")
        out = bytearray()
        while n:
            k = min(n, PAGE_SIZE - (addr & (PAGE_SIZE - 1)))
            out += self.machine._phys_buffer(self._phys(addr), k)
            addr, n = addr + k, n - k
        return bytes(out)


def mmap_anonymous(machine, length, prot=PROT_READ | PROT_WRITE, hugetlb=False):
    """``mmap(NULL, length, prot, MAP_PRIVATE | MAP_ANONYMOUS [| MAP_HUGETLB], -1, 0)``: a
    ``UserMapping`` at the next free user address (aligned to its page size), its pages
    cleared. EINVAL for a length that is not a positive multiple of the page size."""
    order = HPAGE_ORDER if hugetlb else 0
    psize = PAGE_SIZE << order
    if not isinstance(length, int) or length <= 0 or length % psize:
        raise NetmemError(EINVAL, f"mmap: length {length!r} is not a positive multiple of "
                                  f"{psize}")
    maps = machine._user_mappings
    addr = max((a + mp.length for a, mp in maps.items()), default=0x7f0000000000)
    addr = (addr + psize - 1) & ~(psize - 1)
    mp = UserMapping(machine, addr, length, prot, order)
    maps[addr] = mp
    return mp


def _runs(phys):
    """Physically contiguous runs ``(phys, length)`` of a page list, in its order."""
    runs = []
    for p in phys.tolist():
        if runs and runs[-1][0] + runs[-1][1] == p:
            runs[-1][1] += PAGE_SIZE
        else:
            runs.append([p, PAGE_SIZE])
    return [tuple(r) for r in runs]


def _pin_user_pages(machine, addr, length):
    """``io_pin_pages()`` (``pin_user_pages_fast(FOLL_WRITE | FOLL_LONGTERM)``): the physical
    page of each user page of ``[addr, addr + length)``, each pinned (a page reference).
    EFAULT where no mapping covers a page or the mapping is not readable and writable."""
    maps = machine._user_mappings
    pages = []
    a = addr
    while a < addr + length:
        mp = next((m for m in maps.values() if m.addr <= a < m.addr + m.length), None)
        if mp is None or mp.prot & (PROT_READ | PROT_WRITE) != PROT_READ | PROT_WRITE:
            raise NetmemError(EFAULT, f"zcrx area: user page {a:#x} cannot be pinned for "
                                      "writing (unmapped, or not PROT_READ | PROT_WRITE)")
        pages.append(mp._phys(a))
        a += PAGE_SIZE
    for p in pages:
        machine.get_page((p >> PAGE_SHIFT) << 1)
    return np.array(pages, dtype=np.uint64)


# ---- the uapi structs ----------------------------------------------------------------------------

@dataclasses.dataclass
class IoUringZcrxAreaReg:
    """``struct io_uring_zcrx_area_reg``: ``addr`` (a user address; 0 with a dma-buf), ``len``,
    ``rq_area_token`` (out), ``flags`` (``IORING_ZCRX_AREA_DMABUF``), ``dmabuf_fd``,
    ``__resv2``."""

    addr: int = 0
    len: int = 0
    rq_area_token: int = 0
    flags: int = 0
    dmabuf_fd: int = 0
    resv2: tuple = (0, 0)


@dataclasses.dataclass
class IoUringRegionDesc:
    """``struct io_uring_region_desc`` of the refill ring: ``size`` bytes (the rest of its
    fields are for user-memory regions, which the model does not take)."""

    size: int = 0
    flags: int = 0


@dataclasses.dataclass
class ZcrxEventDesc:
    """``struct zcrx_event_desc``: ``user_data`` of the event CQEs, ``type_mask`` (bits of
    ``enum zcrx_event_type``), ``flags`` (``ZCRX_EVENT_DESC_FLAG_STATS``), ``stats_offset``
    (where ``struct zcrx_stats`` goes in the refill region), ``__resv2``."""

    user_data: int = 0
    type_mask: int = 0
    flags: int = 0
    stats_offset: int = 0
    resv2: tuple = (0,) * 9


@dataclasses.dataclass
class IoUringZcrxIfqReg:
    """``struct io_uring_zcrx_ifq_reg``. Pointers are objects here: ``area`` (``area_ptr``,
    an ``IoUringZcrxAreaReg``), ``region`` (``region_ptr``, an ``IoUringRegionDesc``),
    ``event_desc`` (a ``ZcrxEventDesc``); None is a NULL pointer. The kernel writes back
    ``rq_entries``, ``offsets`` (``{"head", "tail", "rqes"}``), ``zcrx_id`` and
    ``rx_buf_len``."""

    if_idx: int = 0
    if_rxq: int = 0
    rq_entries: int = 0
    flags: int = 0
    area: IoUringZcrxAreaReg | None = None
    region: IoUringRegionDesc | None = None
    offsets: dict = dataclasses.field(default_factory=dict)
    zcrx_id: int = 0
    rx_buf_len: int = 0
    event_desc: ZcrxEventDesc | None = None
    resv: tuple = (0, 0)


@dataclasses.dataclass
class ZcrxCtrl:
    """``struct zcrx_ctrl`` for ``IORING_REGISTER_ZCRX_CTRL``: ``zcrx_id``, ``op``, ``__resv``,
    and the op's union member as a dict: ``zcrx_fd`` (out) for EXPORT, ``event_type`` for
    ARM_EVENT, and each member's ``__resv`` words (``resv``), which must be 0."""

    zcrx_id: int = 0
    op: int = 0
    resv: tuple = (0, 0)
    zcrx_fd: int = 0
    event_type: int = 0
    op_resv: tuple = ()


def _bad(code, msg):
    raise NetmemError(code, f"io_register_zcrx: {msg}")


# ---- the interface queue -------------------------------------------------------------------------

class IoZcrxIfq(_core.CoreZcrxIfq):
    """Models ``struct io_zcrx_ifq`` with its one ``struct io_zcrx_area``: ``ctx`` (the ring
    that registered it, where its events go), ``netdev``/``if_rxq`` (None/-1 with
    ZCRX_REG_NODEV), ``dev`` (the DMA device), ``rq_entries``, ``niov_shift``, ``area`` (a
    ``NetIovArea`` of ``NET_IOV_IOURING``), ``region`` (the refill ring's memory, a uint8
    array: ``rq_head``, ``rq_tail`` and ``rqes`` are views of it), ``provider`` (the queue's
    ``IoUringPpZcProvider``). ``refs`` counts the rings and exported files that use it
    (``users``) and its page pools; the last user scrubs it and closes its queue, the last
    reference frees it."""

    def __init__(self, ctx, reg, region_size):
        self.machine = ctx.machine
        self.ctx = ctx
        self.netdev = None
        self.if_rxq = -1
        self.dev = None
        self.rq_entries = reg.rq_entries
        self.niov_shift = PAGE_SHIFT
        self.rx_buf_len_requested = False
        self.area = None
        self.kern_readable = False
        self.users = 1
        self.refs = 1
        self.zcrx_id = 0
        self.event_user_data = 0
        self.region = np.zeros(region_size, dtype=np.uint8)
        self.rq_head = self.region[RQ_HEAD_OFF:RQ_HEAD_OFF + 4].view(np.uint32)
        self.rq_tail = self.region[RQ_TAIL_OFF:RQ_TAIL_OFF + 4].view(np.uint32)
        self.rqes = self.region[RQES_OFF:RQES_OFF + 16 * reg.rq_entries].view(
            IO_URING_ZCRX_RQE_DTYPE)
        self._pages = self._sgt = self._dmabuf = self._attach = None
        self.provider = None
        self.freed = False

    def __repr__(self):
        return (f"<IoZcrxIfq {self.zcrx_id} rxq {self.if_rxq} niovs "
                f"{self.area.num_niovs if self.area else 0} refs {self.refs}>")

    @property
    def stats(self):
        """``struct zcrx_stats`` in the region, if the event descriptor asked for it:
        ``{"copy_count", "copy_bytes"}``."""
        off = getattr(self, "_stats_off", -1)
        if off < 0:
            return None
        v = self.region[off:off + ZCRX_STATS_SIZE].view(np.uint64)
        return {"copy_count": int(v[0]), "copy_bytes": int(v[1])}

    def get(self):
        self.refs += 1

    def put(self):
        """Drop a reference; the last frees the area (``io_zcrx_ifq_free()``)."""
        self.refs -= 1
        if self.refs == 0:
            self._free()

    def _free(self):
        """Models ``io_zcrx_ifq_free()``: unmap and release the area's memory, retire its
        net_iovs."""
        self._unmap_area()
        if self._pages is not None:
            for p in self._pages.tolist():
                self.machine.put_page((p >> PAGE_SHIFT) << 1)      # unpin_user_pages()
            self._pages = None
        self._release_dmabuf()
        if self.area is not None:
            self.area.free()
        self.freed = True
        self.machine._zcrx_ifqs.pop(self, None)

    def _unmap_area(self):
        """Models ``io_zcrx_unmap_area()``: net_iov DMA addresses cleared, the memory unmapped."""
        if self._sgt is None:
            return
        if self.area is not None:
            self.machine._niov_area_set_dma_addrs(self.area._base, self.area.num_niovs, 0)
        if self._dmabuf is not None:
            dma_buf_unmap_attachment(self._attach, self._sgt, DMA_FROM_DEVICE)
        else:
            dma_unmap_sgtable(self.dev, self._sgt, DMA_FROM_DEVICE)
        self._sgt = None

    def _release_dmabuf(self):
        if self._dmabuf is None:
            return
        if self._sgt is not None:
            dma_buf_unmap_attachment(self._attach, self._sgt, DMA_FROM_DEVICE)
            self._sgt = None
        if self._attach is not None:
            dma_buf_detach(self._dmabuf, self._attach)
        dma_buf_put(self._dmabuf)
        self._dmabuf = self._attach = None

    def drop_netdev(self):
        """``io_pp_uninstall()``: the netdev is gone; the area is unmapped."""
        self.netdev = None
        self._unmap_area()

    def close_queue(self):
        """Models ``io_close_queue()``: the queue restarts without the provider."""
        from netmem.netdev import netif_mp_close_rxq

        if self.if_rxq == -1:
            return
        if self.netdev is not None:
            netif_mp_close_rxq(self.netdev, self.if_rxq, self.provider)
        self.netdev = None
        self.if_rxq = -1

    def put_user(self):
        """A ring or exported file lets go: the last user scrubs (``io_zcrx_scrub()``) and
        closes the queue, then the reference goes."""
        self.users -= 1
        if self.users == 0:
            self._scrub()
            self.close_queue()
        self.put()

    def flush_rq(self):
        """``zcrx_flush_rq()``: the refill ring's entries taken now (ZCRX_CTRL_FLUSH_RQ)."""
        return self._flush_rq()

    def leak(self):
        """A line for ``Machine.leak_report()``."""
        return (f"zcrx ifq {self.zcrx_id} not freed: refs {self.refs} ({self.users} user(s)), "
                f"{self.area.num_niovs - self.free_count if self.area else 0} net_iov(s) out")


# ---- registration --------------------------------------------------------------------------------

def _import_area(ifq, area_reg, nodev):
    """Models ``io_import_area()`` (and ``io_import_umem()``/``io_import_dmabuf()``): the
    checks, then the pinned pages' or the dma-buf's sg table. Returns the byte length."""
    if area_reg.flags & ~IO_ZCRX_AREA_SUPPORTED_FLAGS:
        _bad(EINVAL, f"area flags {area_reg.flags:#x} not supported")
    if area_reg.rq_area_token:
        _bad(EINVAL, "area rq_area_token must be 0 (it is an output)")
    if any(area_reg.resv2):
        _bad(EINVAL, "area __resv2 must be 0")
    if not 0 < area_reg.len <= SZ_1G:
        _bad(EFAULT, f"io_validate_user_buf_range: len {area_reg.len} is 0 or above 1 GiB")
    if area_reg.addr + ((area_reg.len + PAGE_SIZE - 1) & ~(PAGE_SIZE - 1)) >= 1 << 64:
        _bad(EOVERFLOW, "io_validate_user_buf_range: addr + len overflows")
    if area_reg.addr & (PAGE_SIZE - 1) or area_reg.len & (PAGE_SIZE - 1):
        _bad(EINVAL, f"area addr {area_reg.addr:#x} or len {area_reg.len:#x} not page aligned")
    m = ifq.machine
    if area_reg.flags & IORING_ZCRX_AREA_DMABUF:
        if area_reg.addr:
            _bad(EINVAL, "a dma-buf area's addr (its offset) must be 0")
        if ifq.dev is None:
            _bad(EINVAL if nodev else EFAULT, "a dma-buf area needs a device")
        ifq._dmabuf = dma_buf_get(m, area_reg.dmabuf_fd)
        try:
            ifq._attach = dma_buf_attach(ifq._dmabuf, ifq.dev)
            ifq._sgt = dma_buf_map_attachment(ifq._attach, DMA_FROM_DEVICE)
            total = sum(s.dma_length for s in ifq._sgt.sgl[:ifq._sgt.nents])
            if total != area_reg.len:
                _bad(EINVAL, f"dma-buf mapping is {total} bytes, area len {area_reg.len}")
        except NetmemError:
            ifq._release_dmabuf()
            raise
        return [s.dma_length for s in ifq._sgt.sgl[:ifq._sgt.nents]]
    if area_reg.dmabuf_fd:
        _bad(EINVAL, "a user-memory area's dmabuf_fd must be 0")
    if not area_reg.addr:
        _bad(EFAULT, "area addr is NULL")
    ifq._pages = _pin_user_pages(m, area_reg.addr, area_reg.len)
    ifq.kern_readable = True
    return [n for _, n in _runs(ifq._pages)]


def _max_shift(lengths):
    """``io_area_max_shift()``: the largest buffer every segment is a multiple of."""
    return min((n & -n).bit_length() - 1 for n in lengths)


def _map_area(ifq):
    """Models ``io_zcrx_map_area()`` (7.1: mapped at registration): user pages through
    ``dma_map_sgtable()`` (the pages merged into contiguous entries, as
    ``sg_alloc_table_from_pages()``); each net_iov's DMA address ``1 << niov_shift`` apart
    along the DMA segments (``io_populate_area_dma()``)."""
    m, area, step = ifq.machine, ifq.area, 1 << ifq.niov_shift
    if ifq._dmabuf is None:
        ifq._sgt = SgTable.from_phys(_runs(ifq._pages))
        dma_map_sgtable(ifq.dev, ifq._sgt, DMA_FROM_DEVICE)
    idx = 0
    for s in ifq._sgt.sgl[:ifq._sgt.nents]:
        n = min(s.dma_length >> ifq.niov_shift, area.num_niovs - idx)
        if step == PAGE_SIZE:
            m._niov_area_set_dma_addrs(area._base + idx, n, s.dma_address)
        else:
            for k in range(n):
                m._niov_set_dma_addr(area.netmem(idx + k), s.dma_address + k * step)
        idx += n


def _create_area(ifq, reg, nodev):
    """Models ``io_zcrx_create_area()`` with 7.0's ``rx_buf_len``: import, the buffer size
    (a power of two >= PAGE_SIZE, else EINVAL; above what the memory's contiguity allows,
    ERANGE; with NODEV, PAGE_SIZE only), the net_iov area, the token."""
    shift = PAGE_SHIFT
    if reg.rx_buf_len:
        if reg.rx_buf_len & (reg.rx_buf_len - 1) or reg.rx_buf_len < PAGE_SIZE:
            _bad(EINVAL, f"rx_buf_len {reg.rx_buf_len} is not a power of 2 >= PAGE_SIZE")
        if nodev and reg.rx_buf_len != PAGE_SIZE:
            _bad(EINVAL, "ZCRX_REG_NODEV takes no rx_buf_len but PAGE_SIZE")
        shift = reg.rx_buf_len.bit_length() - 1
        ifq.rx_buf_len_requested = True
    lengths = _import_area(ifq, reg.area, nodev)
    contig = _max_shift(lengths)
    if shift > contig:
        _bad(ERANGE, f"rx_buf_len {1 << shift}: the area is contiguous in {1 << contig}-byte "
                     "pieces only")
    ifq.niov_shift = shift
    ifq.area = NetIovArea(ifq.machine, reg.area.len >> shift, NET_IOV_IOURING, 0, 0)
    reg.area.rq_area_token = 0 << IORING_ZCRX_AREA_SHIFT       # one area, id 0
    reg.rx_buf_len = 1 << shift


class IoUring(_core.CoreIoUring):
    """An io_uring instance (``struct io_ring_ctx``) as zcrx needs it: ``flags`` (setup flags),
    the CQ ring ``cq`` (``cq_entries`` 32-byte CQEs, a numpy array of
    ``IO_URING_CQE32_DTYPE``) with ``cq_head``/``cq_tail`` (uint32 views: the application
    advances the head), its zcrx ifqs by id (``zcrx_ctxs``) and armed RECV_ZC requests. Models
    ``io_uring_setup()``'s checks that concern zcrx: EINVAL for DEFER_TASKRUN without
    SINGLE_ISSUER, for 0 or too many entries (unless CLAMP), and for CQE32 with CQE_MIXED."""

    def __init__(self, machine, entries=64, flags=0, cq_entries=None, cap_net_admin=True):
        if flags & IORING_SETUP_DEFER_TASKRUN and not flags & IORING_SETUP_SINGLE_ISSUER:
            raise NetmemError(EINVAL, "io_uring_setup: DEFER_TASKRUN needs SINGLE_ISSUER")
        if flags & IORING_SETUP_CQE32 and flags & IORING_SETUP_CQE_MIXED:
            raise NetmemError(EINVAL, "io_uring_setup: CQE32 and CQE_MIXED together")
        if not entries or (entries > IORING_MAX_ENTRIES and not flags & IORING_SETUP_CLAMP):
            raise NetmemError(EINVAL, f"io_uring_setup: {entries} entries")
        entries = 1 << (min(entries, IORING_MAX_ENTRIES) - 1).bit_length()
        self.machine = machine
        self.flags = flags
        self.cap_net_admin = cap_net_admin
        self.cq_entries = cq_entries or 2 * entries
        self.cq = np.zeros(self.cq_entries, dtype=IO_URING_CQE32_DTYPE)
        self._cq_ring = np.zeros(17, dtype=np.uint32)
        self.cq_head = self._cq_ring[0:1]
        self.cq_tail = self._cq_ring[16:17]
        self._setup_cq(self.cq, self._cq_ring, bool(flags & IORING_SETUP_CQE_MIXED))
        self.zcrx_ctxs = {}
        self._armed = []
        self.closed = False

    def __repr__(self):
        return f"<IoUring flags {self.flags:#x} zcrx {sorted(self.zcrx_ctxs)}>"

    # -- completions -------------------------------------------------------------------------

    def completions(self):
        """Reap every posted CQE: a copy of them (``IO_URING_CQE32_DTYPE``), the head moved to
        the tail (``io_uring_cq_advance()``)."""
        head, tail = int(self.cq_head[0]), int(self.cq_tail[0])
        idx = np.arange(head, tail, dtype=np.uint64) & np.uint64(self.cq_entries - 1)
        out = self.cq[idx].copy()
        self.cq_head[0] = tail
        return out

    # -- registration ------------------------------------------------------------------------

    def register_zcrx_ifq(self, reg):
        """Models ``io_register_zcrx()`` (IORING_REGISTER_ZCRX_IFQ): every check and errno of
        Linux 7.2 in its order, then the ifq: its refill ring in a region of
        ``reg.region.size`` bytes, the area, the event descriptor, and (without
        ZCRX_REG_NODEV) ``netif_mp_open_rxq()`` of queue ``if_rxq`` of device ``if_idx``
        with the provider. Writes back what the kernel does and returns ``reg.zcrx_id``; a
        failure undoes everything."""
        if not self.cap_net_admin:
            _bad(EPERM, "CAP_NET_ADMIN required")
        if not self.flags & IORING_SETUP_DEFER_TASKRUN:
            _bad(EINVAL, "the ring needs IORING_SETUP_DEFER_TASKRUN")
        if not self.flags & (IORING_SETUP_CQE32 | IORING_SETUP_CQE_MIXED):
            _bad(EINVAL, "the ring needs IORING_SETUP_CQE32 or IORING_SETUP_CQE_MIXED")
        if reg.flags & ZCRX_REG_IMPORT:
            return self._import_zcrx(reg)
        if reg.region is None:
            _bad(EFAULT, "region_ptr is NULL")
        if any(reg.resv) or reg.zcrx_id:
            _bad(EINVAL, "__resv and zcrx_id must be 0")
        if reg.flags & ~ZCRX_SUPPORTED_REG_FLAGS:
            _bad(EINVAL, f"flags {reg.flags:#x} not supported")
        nodev = bool(reg.flags & ZCRX_REG_NODEV)
        if (not nodev and reg.if_rxq in (-1, 0xffffffff)) or not reg.rq_entries:
            _bad(EINVAL, f"if_rxq {reg.if_rxq} or rq_entries {reg.rq_entries}")
        if reg.rq_entries > IO_RQ_MAX_ENTRIES:
            if not self.flags & IORING_SETUP_CLAMP:
                _bad(EINVAL, f"rq_entries {reg.rq_entries} > {IO_RQ_MAX_ENTRIES}")
            reg.rq_entries = IO_RQ_MAX_ENTRIES
        reg.rq_entries = 1 << (reg.rq_entries - 1).bit_length()
        if reg.area is None:
            _bad(EFAULT, "area_ptr is NULL")
        ev = reg.event_desc or ZcrxEventDesc()
        if ev.type_mask & ~ZCRX_EVENT_TYPE_MASK:
            _bad(EINVAL, f"event type_mask {ev.type_mask:#x} has unknown types")
        if ev.flags & ~ZCRX_EVENT_DESC_FLAG_STATS:
            _bad(EINVAL, f"event flags {ev.flags:#x} not supported")
        if not ev.flags & ZCRX_EVENT_DESC_FLAG_STATS and ev.stats_offset:
            _bad(EINVAL, "event stats_offset without ZCRX_EVENT_DESC_FLAG_STATS")
        if any(ev.resv2):
            _bad(EINVAL, "event __resv2 must be 0")
        if RQES_OFF + 16 * reg.rq_entries > reg.region.size:
            _bad(EINVAL, f"region of {reg.region.size} bytes cannot hold {reg.rq_entries} rqes")
        ifq = IoZcrxIfq(self, reg, reg.region.size)
        try:
            stats_off = _stats_offset(reg, ev) if ev.flags & ZCRX_EVENT_DESC_FLAG_STATS else -1
            if not nodev:
                self._register_netdev(ifq, reg)
            else:
                _create_area(ifq, reg, True)
            ifq._stats_off = stats_off
            ifq._setup(self.machine, ifq.region, reg.rq_entries, RQES_OFF, ifq.area._base,
                       ifq.area.num_niovs, ifq.niov_shift,
                       _niov_phys(ifq) if ifq.kern_readable else None, ev.type_mask,
                       stats_off)
            ifq.event_user_data = ev.user_data
            if not nodev:
                self._open_queue(ifq, reg)
        except BaseException:
            ifq.users = 0
            ifq.put()
            raise
        ifq.zcrx_id = self._alloc_id(ifq)
        reg.zcrx_id = ifq.zcrx_id
        reg.offsets = {"head": RQ_HEAD_OFF, "tail": RQ_TAIL_OFF, "rqes": RQES_OFF}
        self.machine._zcrx_ifqs[ifq] = None
        return reg.zcrx_id

    def _alloc_id(self, ifq):
        """``xa_alloc(&ctx->zcrx_ctxs, ...)``: the lowest free id from 0."""
        zid = 0
        while zid in self.zcrx_ctxs:
            zid += 1
        self.zcrx_ctxs[zid] = ifq
        return zid

    def _register_netdev(self, ifq, reg):
        """Models ``zcrx_register_netdev()`` up to the queue: the netdev (ENODEV), its DMA
        device for the queue (EOPNOTSUPP without one), the area over it."""
        nic = self.machine.netdevs.get(reg.if_idx)
        if nic is None or not nic.registered:
            _bad(ENODEV, f"no netdev with ifindex {reg.if_idx}")
        if not 0 <= reg.if_rxq < nic.real_num_rx_queues:
            _bad(EINVAL, f"rx queue {reg.if_rxq} out of range")
        ifq.netdev = nic
        ifq.dev = nic.rx_queues[reg.if_rxq].dma_dev
        if ifq.dev is None:
            _bad(EOPNOTSUPP, "netdev_queue_get_dma_dev(): no DMA device")
        _create_area(ifq, reg, False)
        _map_area(ifq)

    def _open_queue(self, ifq, reg):
        """``netif_mp_open_rxq()`` with the provider; ``mp_params.rx_page_size`` set only when
        userspace asked for a buffer size."""
        from netmem.netdev import netif_mp_open_rxq

        ifq.provider = IoUringPpZcProvider(ifq)
        ifq._install_c_ops(ifq.provider)
        netif_mp_open_rxq(ifq.netdev, reg.if_rxq, ifq.provider)
        ifq.if_rxq = reg.if_rxq

    def _import_zcrx(self, reg):
        """Models ``import_zcrx()``: ``if_idx`` is an exported zcrx fd; ``if_rxq``,
        ``rq_entries``, ``area_ptr`` and ``region_ptr`` must be 0 (EINVAL); EBADF for an fd
        that is not open, EOPNOTSUPP for one that is not a zcrx file."""
        if reg.if_rxq or reg.rq_entries or reg.area is not None or reg.region is not None:
            _bad(EINVAL, "ZCRX_REG_IMPORT: if_rxq, rq_entries, area_ptr and region_ptr must "
                         "be 0")
        files = self.machine._zcrx_files
        if reg.if_idx not in files and reg.if_idx not in self.machine._dmabufs:
            _bad(EBADF, f"ZCRX_REG_IMPORT: fd {reg.if_idx} is not open")
        ifq = files.get(reg.if_idx)
        if ifq is None:
            _bad(EOPNOTSUPP, f"ZCRX_REG_IMPORT: fd {reg.if_idx} is not a zcrx file")
        ifq.users += 1
        ifq.get()
        reg.zcrx_id = self._alloc_id(ifq)
        reg.rq_entries = ifq.rq_entries
        reg.rx_buf_len = 1 << ifq.niov_shift
        reg.offsets = {"head": RQ_HEAD_OFF, "tail": RQ_TAIL_OFF, "rqes": RQES_OFF}
        return reg.zcrx_id

    # -- control ops -------------------------------------------------------------------------

    def register_zcrx_ctrl(self, ctrl):
        """Models ``io_register_zcrx_ctrl()`` (IORING_REGISTER_ZCRX_CTRL): EINVAL for reserved
        words set, ENXIO for an unknown ``zcrx_id``, EOPNOTSUPP for an unknown op. FLUSH_RQ
        returns the entries taken; EXPORT a new fd (also in ``ctrl.zcrx_fd``) that holds the
        ifq until ``close_fd()``; ARM_EVENT re-arms an event that has fired (else EINVAL)."""
        if any(ctrl.resv) or any(ctrl.op_resv):
            raise NetmemError(EINVAL, "zcrx ctrl: reserved fields must be 0")
        ifq = self.zcrx_ctxs.get(ctrl.zcrx_id)
        if ifq is None:
            raise NetmemError(ENXIO, f"zcrx ctrl: no zcrx id {ctrl.zcrx_id}")
        if ctrl.op == ZCRX_CTRL_FLUSH_RQ:
            return ifq.flush_rq()
        if ctrl.op == ZCRX_CTRL_EXPORT:
            if ctrl.zcrx_fd:
                raise NetmemError(EINVAL, "zcrx ctrl EXPORT: zcrx_fd must be 0")
            return self._export(ifq, ctrl)
        if ctrl.op == ZCRX_CTRL_ARM_EVENT:
            t = ctrl.event_type
            if not 0 <= t < _ZCRX_EVENT_TYPE_LAST:
                raise NetmemError(EINVAL, f"zcrx ctrl ARM_EVENT: event type {t}")
            if not ifq._arm_event(t):
                raise NetmemError(EINVAL, f"zcrx ctrl ARM_EVENT: event {t} has not fired")
            return 0
        raise NetmemError(EOPNOTSUPP, f"zcrx ctrl: unknown op {ctrl.op}")

    def _export(self, ifq, ctrl):
        """``zcrx_export()``: an fd (from the machine's fd space) holding a user reference."""
        m = self.machine
        files = m._zcrx_files
        fd = m._next_dmabuf_fd
        m._next_dmabuf_fd += 1
        files[fd] = ifq
        ifq.users += 1
        ifq.get()
        ctrl.zcrx_fd = fd
        return fd

    def close_fd(self, fd):
        """``close()`` of an exported zcrx fd: its user reference goes."""
        ifq = self.machine._zcrx_files.pop(fd, None)
        if ifq is None:
            raise NetmemError(EBADF, f"close: fd {fd} is not an exported zcrx file")
        ifq.put_user()

    # -- RECV_ZC -----------------------------------------------------------------------------

    def prep_recv_zc(self, sock, zcrx_ifq_idx, len=0, user_data=0, ioprio=IORING_RECV_MULTISHOT,
                     msg_flags=0, addr=0):
        """Submit ``IORING_OP_RECV_ZC`` on ``sock`` (``io_recvzc_prep()`` then the first
        issue): a request failing its prep or issue completes at once with ``-errno`` and no
        ``F_MORE`` (EINVAL: ``addr`` set, an unknown ifq, ``msg_flags``, flags other than
        POLL_FIRST | MULTISHOT, no MULTISHOT; ENOTSOCK: not a socket). ``len`` > 0 stops the
        request once that many bytes are received (a CQE with ``res`` 0, no ``F_MORE``).
        Returns True while the request stays armed."""
        from netmem.tcp import Socket

        ifq = self.zcrx_ctxs.get(zcrx_ifq_idx)
        if addr or ifq is None or msg_flags or ioprio & ~(
                IORING_RECVSEND_POLL_FIRST | IORING_RECV_MULTISHOT) or \
                not ioprio & IORING_RECV_MULTISHOT:
            self._post_cqe(user_data, -EINVAL, 0)
            return False
        if not isinstance(sock, Socket):
            self._post_cqe(user_data, -ENOTSOCK, 0)
            return False
        req = [sock, ifq, user_data, len, bool(len)]
        self._armed.append(req)
        if not ioprio & IORING_RECVSEND_POLL_FIRST:
            self._issue(req)
        return req in self._armed

    def _issue(self, req):
        """Models ``io_recvzc()``: one issue; a terminal result completes the request."""
        sock, ifq, user_data, length, limited = req
        if sock._closed:                        # the model's socket is gone with its fd
            ret, left = -EBADF, length
        else:
            ret, left = self._recvzc(self.machine, ifq, sock._slot, user_data, length)
        req[3] = left
        if limited and left == 0:
            self._complete(req, 0)
        elif ret <= 0 and ret != -11:          # -EAGAIN keeps it armed
            self._complete(req, ret)

    def _complete(self, req, res):
        self._armed.remove(req)
        self._post_cqe(req[2], res, 0)

    def submit_and_wait(self):
        """``io_uring_enter()``: run task work (post the ifqs' fired events) and issue every
        armed RECV_ZC again (the model's stand-in for their poll wakeups). Returns the CQEs
        waiting."""
        self._run_task_work()
        for req in list(self._armed):
            self._issue(req)
        self._run_task_work()
        return int(self.cq_tail[0] - self.cq_head[0])

    def _run_task_work(self):
        """``zcrx_event_tw()``: an aux CQE per fired event of this ring's ifqs, ``user_data``
        the descriptor's, ``res`` the event type."""
        for ifq in set(self.zcrx_ctxs.values()):
            if ifq.ctx is not self:
                continue
            ev = ifq._take_events()
            for t in range(_ZCRX_EVENT_TYPE_LAST):
                if ev & (1 << t):
                    self._post_cqe(ifq.event_user_data, t, 0)

    def close(self):
        """``io_ring_exit_work()``: armed requests are cancelled, each zcrx ifq's user reference
        goes (the last user scrubs it and closes its queue)."""
        if self.closed:
            return
        self.closed = True
        self._armed.clear()
        for ifq in list(self.zcrx_ctxs.values()):
            ifq.put_user()
        self.zcrx_ctxs.clear()


def _stats_offset(reg, ev):
    """Models ``zcrx_validate_event_stats()``: aligned (EINVAL), past the rqes and inside the
    region (ERANGE)."""
    off = ev.stats_offset
    if off % 8:
        _bad(EINVAL, f"stats_offset {off} is not 8-byte aligned")
    if off < RQES_OFF + 16 * reg.rq_entries:
        _bad(ERANGE, f"stats_offset {off} overlaps the refill ring")
    if off + ZCRX_STATS_SIZE > reg.region.size:
        _bad(ERANGE, f"stats_offset {off} is past the region")
    return off


def _niov_phys(ifq):
    """Where each net_iov's memory starts (the copy fallback writes there)."""
    per = 1 << (ifq.niov_shift - PAGE_SHIFT)
    return ifq._pages[::per][:ifq.area.num_niovs].astype(np.uint64)

