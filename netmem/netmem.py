"""netmem handles: ``netmem_ref`` for pages and net_iovs, descriptor views, net_iov areas.

Models include/net/netmem.h. A ``netmem_ref`` is a plain int: a page is ``pfn << 1``, a net_iov
is ``(global niov index << 1) | NET_IOV``. The helpers take the machine first (a ref alone does
not say which machine it belongs to; the kernel has one) and keep the kernel's behaviour for the
wrong kind: a ``NetmemWarning`` and ``None`` where the kernel WARNs and returns NULL.
"""
import warnings

import numpy as np

from netmem import _core
from netmem.errors import NetmemError, NetmemWarning

__all__ = ["NET_IOV", "NET_IOV_DMABUF", "NET_IOV_IOURING", "NET_IOV_P2PDMA", "NetIovArea",
           "NetmemView", "netmem_get_dma_addr", "netmem_get_pp", "netmem_is_net_iov",
           "netmem_to_net_iov", "netmem_to_page"]

NET_IOV = 0x1
NET_IOV_DMABUF = 0
NET_IOV_IOURING = 1
#: Ours, not in mainline: net_iovs over PCI BAR memory of the p2pdma provider.
NET_IOV_P2PDMA = 2
_PG_HEAD, _PG_TAIL, _PG_PFMEMALLOC = 1 << 1, 1 << 2, 1 << 4


def netmem_is_net_iov(ref):
    """Models ``netmem_is_net_iov()``."""
    return bool(ref & NET_IOV)


class NetmemView:
    """A read view of one descriptor (struct page or struct net_iov), taken when read."""

    __slots__ = ("machine", "ref")

    def __init__(self, machine, ref):
        machine._desc(ref)          # validates
        self.machine = machine
        self.ref = ref

    def _d(self):
        return self.machine._desc(self.ref)

    def __repr__(self):
        kind = "net_iov" if self.is_net_iov else "page"
        return (f"<{kind} {self.ref:#x} pp={self._d()[0] or None} pp_ref_count="
                f"{self.pp_ref_count} refcount={self.refcount} state={self.state}>")

    @property
    def is_net_iov(self):
        return netmem_is_net_iov(self.ref)

    @property
    def pp(self):
        """The owning PagePool, or None: ``pp_id`` looked up among the listed pools, so a
        freed pool reads as None here."""
        return self.machine.page_pool_by_id(self._d()[0]) if self._d()[0] else None

    @property
    def pp_id(self):
        """The id of the pool the descriptor's ``pp`` field names, as the core stores it, 0
        when clear (``page_pool_clear_pp_info()``, ``net_mp_niov_clear_page_pool()``); unlike
        ``pp``, it stays set when that pool is gone, as a stale ``pp`` pointer stays in the
        kernel. The core reads it through the machine's table of pool addresses, never through
        the pointer, so it stays readable after the pool object is collected (an address a
        newer pool reuses reads as the newer pool's id)."""
        return self._d()[0]

    @property
    def pp_ref_count(self):
        return self._d()[1]

    @property
    def refcount(self):
        """Page ``_refcount`` (``netmem_ref_count()``: 1 for a net_iov)."""
        return self._d()[2]

    @property
    def dma_addr(self):
        return self._d()[3]

    @property
    def phys(self):
        """Physical address (None for a net_iov: its memory is the provider's)."""
        return None if self.is_net_iov else self._d()[4]

    @property
    def order(self):
        d = self._d()
        return 0 if self.is_net_iov or not d[7] & _PG_HEAD else d[5]

    @property
    def nid(self):
        return self._d()[6]

    @property
    def is_pfmemalloc(self):
        return bool(not self.is_net_iov and self._d()[7] & _PG_PFMEMALLOC)

    @property
    def pp_magic(self):
        """``pp_magic`` as the core stores it: ``PP_SIGNATURE`` (and the DMA index) while a
        pool owns the buffer, 0 once its pp info is cleared."""
        return self._d()[9]

    @property
    def state(self):
        """Where the model's ledger has the buffer: none, owned, cache, ring."""
        return _core.STATE_NAMES[self._d()[8]]

    @property
    def owner(self):
        """The NetIovArea of a net_iov (``net_iov_owner()``); None for a page."""
        return self.machine._niov_areas.get(self._d()[10]) if self.is_net_iov else None

    def address(self):
        """A writable memoryview of the page's bytes (``netmem_address()``); None for a
        net_iov, whose memory the CPU cannot address."""
        return self.machine._page_buffer(self.ref)


def netmem_to_page(machine, ref):
    """Models ``netmem_to_page()``: WARN_ON_ONCE and None for a net_iov."""
    if netmem_is_net_iov(ref):
        warnings.warn(NetmemWarning(f"netmem_to_page(): WARN_ON_ONCE(netmem_is_net_iov): "
                                    f"{ref:#x}"), stacklevel=2)
        return None
    return NetmemView(machine, ref)


def netmem_to_net_iov(machine, ref):
    """Models ``netmem_to_net_iov()``: DEBUG_NET_WARN_ON_ONCE and None for a page."""
    if not netmem_is_net_iov(ref):
        warnings.warn(NetmemWarning(f"netmem_to_net_iov(): DEBUG_NET_WARN_ON_ONCE: {ref:#x} is "
                                    "a page"), stacklevel=2)
        return None
    return NetmemView(machine, ref)


def netmem_get_pp(machine, ref):
    """Models ``netmem_get_pp()``: the owning pool of a page or net_iov, or None."""
    return NetmemView(machine, ref).pp


def netmem_get_dma_addr(machine, ref):
    """Models ``netmem_get_dma_addr()``: works for both kinds."""
    return NetmemView(machine, ref).dma_addr


class NetIovArea:
    """Models ``struct net_iov_area``: ``num_niovs`` net_iovs of one type, owned by a provider
    (a dma-buf binding chunk, an io_uring zcrx area, a p2pdma resource, or a user's own).
    ``base_virtual`` is the area's byte offset in its dma-buf (or resource) and ``owner_id`` the
    id a devmem cmsg reports as ``dmabuf_id`` (the binding's). Each net_iov is ``1 <<
    niov_shift`` bytes (PAGE_SHIFT, or a devmem binding's ``niov_shift`` with rx-buf-size): a
    cmsg's ``frag_offset`` is ``base_virtual + (idx << niov_shift) + offset``. ``free()``
    retires the area."""

    def __init__(self, machine, num_niovs, type=NET_IOV_DMABUF, base_virtual=0, owner_id=0,
                 niov_shift=12):
        if type not in (NET_IOV_DMABUF, NET_IOV_IOURING, NET_IOV_P2PDMA):
            raise NetmemError(22, f"net_iov area: unknown net_iov type {type}")
        if not isinstance(niov_shift, int) or not 12 <= niov_shift < 32:
            raise NetmemError(22, f"net_iov area: niov_shift {niov_shift!r} not in 12..31 (a "
                                  "net_iov is at least a page, its size a u32)")
        self.machine = machine
        self.id = machine._next_area_id
        self.type = type
        self.num_niovs = int(num_niovs)
        self.base_virtual = base_virtual
        self.owner_id = owner_id
        self.niov_shift = niov_shift
        self._base = machine._niov_area_alloc(self.num_niovs, self.id, type, base_virtual,
                                              owner_id, niov_shift)
        machine._next_area_id += 1
        machine._niov_areas[self.id] = self

    def free(self):
        """Retire the area (``kvfree(owner->area.niovs)``): every net_iov must be home (no pool
        holds one), else EBUSY and nothing changes."""
        busy = self.machine._niov_area_busy(self._base, self.num_niovs)
        if busy:
            raise NetmemError(16, f"net_iov area {self.id}: {busy} net_iov(s) still held by a "
                                  "page pool")
        self.machine._niov_areas.pop(self.id, None)

    @property
    def niovs(self):
        """The refs of the area's net_iovs, in index order (a uint64 array)."""
        return (np.arange(self._base, self._base + self.num_niovs, dtype=np.uint64) << 1) | 1

    def netmem(self, idx):
        """The ref of net_iov ``idx``."""
        if not 0 <= idx < self.num_niovs:
            raise NetmemError(34, f"net_iov area {self.id}: index {idx} out of range")
        return ((self._base + idx) << 1) | NET_IOV

    def net_iov_idx(self, ref):
        """Models ``net_iov_idx()``."""
        idx = (ref >> 1) - self._base
        if not ref & NET_IOV or not 0 <= idx < self.num_niovs:
            raise NetmemError(22, f"net_iov_idx: {ref:#x} is not in area {self.id}")
        return idx
