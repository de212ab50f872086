"""genalloc: the kernel's allocator of special memory (device memory, SRAM, PCI BARs).

Models lib/genalloc.c and include/linux/genalloc.h: a pool of chunks, searched newest first, each
with one bit per ``1 << min_alloc_order`` bytes; five allocation algorithms; address 0 means
failure. The bitmaps and algorithms are C in ``netmem._core`` (``pyx/genalloc.pxi``), which also
gives the data plane ``nm_gen_pool_alloc_owner()`` and ``nm_gen_pool_free_owner()`` without the
interpreter. These are the kernel's functions, each taking the pool first. Chunk owners may be any
Python objects.

Departures (also in each docstring): a free the kernel would ``BUG()`` on raises
``NetmemError(EINVAL)`` and changes nothing, as does ``gen_pool_destroy()`` with allocations out
(``EBUSY``); chunks that are empty, at address 0, wrap the address space or overlap another are
refused (``EINVAL``); algorithms are the kernel's five (no Python-written ones); alignments must be
powers of two; first fit runs in time independent of occupancy (summary levels over the bitmap),
with the same result as the kernel's scan; ``gen_pool_remove_chunk()`` is not a kernel call (the
p2pdma provider gives a BAR range back with it).
"""
import dataclasses
import warnings

import numpy as np

from netmem import _core
from netmem.errors import NetmemError, NetmemWarning

__all__ = [
    "GenPool",
    "GenPoolChunk",
    "gen_pool_add",
    "gen_pool_add_owner",
    "gen_pool_add_virt",
    "gen_pool_alloc",
    "gen_pool_alloc_algo",
    "gen_pool_alloc_algo_owner",
    "gen_pool_alloc_owner",
    "gen_pool_avail",
    "gen_pool_best_fit",
    "gen_pool_create",
    "gen_pool_destroy",
    "gen_pool_first_fit",
    "gen_pool_first_fit_align",
    "gen_pool_first_fit_order_align",
    "gen_pool_fixed_alloc",
    "gen_pool_for_each_chunk",
    "gen_pool_free",
    "gen_pool_free_owner",
    "gen_pool_has_addr",
    "gen_pool_remove_chunk",
    "gen_pool_set_algo",
    "gen_pool_size",
    "gen_pool_virt_to_phys",
    "genpool_data_align",
    "genpool_data_fixed",
]

PHYS_ADDR_NONE = (1 << 64) - 1     # (phys_addr_t)-1: gen_pool_add()'s phys, virt_to_phys()'s miss

#: The allocation algorithms (``genpool_algo_t``), handles for gen_pool_set_algo/alloc_algo.
gen_pool_first_fit = _core.GENPOOL_ALGOS["gen_pool_first_fit"]
gen_pool_first_fit_align = _core.GENPOOL_ALGOS["gen_pool_first_fit_align"]
gen_pool_first_fit_order_align = _core.GENPOOL_ALGOS["gen_pool_first_fit_order_align"]
gen_pool_best_fit = _core.GENPOOL_ALGOS["gen_pool_best_fit"]
gen_pool_fixed_alloc = _core.GENPOOL_ALGOS["gen_pool_fixed_alloc"]

#: ``struct genpool_data_align {int align;}``: data of gen_pool_first_fit_align.
genpool_data_align = _core.GenPoolDataAlign
#: ``struct genpool_data_fixed {unsigned long offset;}``: data of gen_pool_fixed_alloc.
genpool_data_fixed = _core.GenPoolDataFixed


@dataclasses.dataclass(frozen=True)
class GenPoolChunk:
    """A snapshot of ``struct gen_pool_chunk``: ``end_addr`` is inclusive, ``avail`` in bytes,
    ``nbits`` the allocatable units, ``bits`` the bitmap as uint64 words."""
    start_addr: int
    end_addr: int
    phys_addr: int
    owner: object
    avail: int
    nbits: int
    bits: np.ndarray = dataclasses.field(repr=False, compare=False)

    @property
    def size(self):
        """``chunk_size()``: bytes, a partial last unit included."""
        return self.end_addr - self.start_addr + 1


class GenPool(_core.CoreGenPool):
    """``struct gen_pool``. Make one with ``gen_pool_create()``."""

    def __repr__(self):
        if self.destroyed:
            return "<GenPool destroyed>"
        return (f"<GenPool order {self.min_alloc_order}, {self.nr_chunks} chunk(s), "
                f"{gen_pool_avail(self)}/{gen_pool_size(self)} bytes free, {self.algo.name}>")


def gen_pool_create(min_alloc_order, nid=-1):
    """Models ``gen_pool_create()``: an empty pool whose units are ``1 << min_alloc_order``
    bytes, with first fit. Raises EINVAL for an order outside 0..62."""
    return GenPool(min_alloc_order, nid)


def gen_pool_add_owner(pool, virt, phys, size, nid, owner):
    """Models ``gen_pool_add_owner()``: add ``size`` bytes at ``virt`` (physical ``phys``) as a
    chunk searched before the older ones; ``owner`` comes back from the ``_owner`` calls.
    Returns 0. A partial last unit counts in size and avail but is never handed out. Departs:
    raises EINVAL for an empty chunk, one at address 0, one that wraps or overlaps another
    chunk (the kernel takes them all)."""
    if isinstance(phys, int) and phys == -1:
        phys = PHYS_ADDR_NONE
    return pool._add_owner(virt, phys, size, nid, owner)


def gen_pool_add_virt(pool, virt, phys, size, nid=-1):
    """Models ``gen_pool_add_virt()``: ``gen_pool_add_owner()`` without an owner."""
    return gen_pool_add_owner(pool, virt, phys, size, nid, None)


def gen_pool_add(pool, addr, size, nid=-1):
    """Models ``gen_pool_add()``: a chunk with no physical address (``(phys_addr_t)-1``)."""
    return gen_pool_add_virt(pool, addr, -1, size, nid)


def _alloc(pool, size, algo, data):
    addr, owner, warned = pool._alloc(size, algo, data)
    if warned:
        d = pool.data if algo is None else data
        warnings.warn(NetmemWarning(
            f"gen_pool_fixed_alloc(): WARN_ON(fixed_data->offset & ((1UL << order) - 1)): offset "
            f"{d.offset:#x} is not a multiple of the pool's {1 << pool.min_alloc_order}-byte "
            "unit"), stacklevel=3)
    return addr, owner


def gen_pool_alloc_algo_owner(pool, size, algo, data=None):
    """Models ``gen_pool_alloc_algo_owner()``: ``(address, owner)`` of ``size`` bytes (rounded
    up to whole units) found by ``algo`` with ``data`` in the first chunk, newest first, that
    has ``size`` bytes available; ``(0, None)`` when none has."""
    return _alloc(pool, size, algo, data)


def gen_pool_alloc_owner(pool, size):
    """Models ``gen_pool_alloc_owner()``: with the pool's algorithm; ``(address, owner)``."""
    return _alloc(pool, size, None, None)


def gen_pool_alloc_algo(pool, size, algo, data=None):
    """Models ``gen_pool_alloc_algo()``: the address, or 0."""
    return _alloc(pool, size, algo, data)[0]


def gen_pool_alloc(pool, size):
    """Models ``gen_pool_alloc()``: the address of ``size`` bytes from the pool's algorithm
    (first fit unless set), or 0."""
    return _alloc(pool, size, None, None)[0]


def gen_pool_set_algo(pool, algo, data=None):
    """Models ``gen_pool_set_algo()``: ``None`` means gen_pool_first_fit. Departs: ``algo`` is one
    of the five handles of this module, and an algorithm that reads ``data`` must get the right
    kind (EINVAL otherwise; the kernel would dereference anything)."""
    pool._set_algo(algo, data)


def gen_pool_free_owner(pool, addr, size):
    """Models ``gen_pool_free_owner()``: give back the units of ``[addr, addr + size)`` and
    return the owner of their chunk. Departs: raises EINVAL and changes nothing where the kernel
    would ``BUG()`` (no chunk holds ``addr``, the range overruns it, a unit is not allocated)."""
    return pool._free(addr, size)


def gen_pool_free(pool, addr, size):
    """Models ``gen_pool_free()``; see ``gen_pool_free_owner()``."""
    pool._free(addr, size)


def gen_pool_virt_to_phys(pool, addr):
    """Models ``gen_pool_virt_to_phys()``: the physical address of ``addr``, or -1 when no chunk
    holds it."""
    phys = pool._virt_to_phys(addr)
    return -1 if phys == PHYS_ADDR_NONE else phys


def gen_pool_avail(pool):
    """Models ``gen_pool_avail()``: free bytes over all chunks."""
    return pool._avail()


def gen_pool_size(pool):
    """Models ``gen_pool_size()``: bytes over all chunks."""
    return pool._size()


def gen_pool_has_addr(pool, start, size):
    """Models ``gen_pool_has_addr()``: whether ``[start, start + size)`` lies in one chunk."""
    return pool._has_addr(start, size)


def gen_pool_for_each_chunk(pool, func, data=None):
    """Models ``gen_pool_for_each_chunk()``: ``func(pool, chunk, data)`` for each chunk, newest
    first, ``chunk`` a ``GenPoolChunk`` snapshot taken before the first call."""
    for c in [GenPoolChunk(*t) for t in pool._chunks()]:
        func(pool, c, data)


def gen_pool_remove_chunk(pool, virt):
    """Not in the kernel, whose gen_pool keeps every chunk until ``gen_pool_destroy()``: take
    the chunk that starts at ``virt`` out of the pool and return its owner. The p2pdma memory
    provider needs it to give a BAR range back (``pci_p2pdma_remove_resource()``, not in the
    kernel either). ENOENT when no chunk starts at ``virt``, EBUSY (nothing changed) while any
    of its units is allocated."""
    return pool._remove_chunk(virt)


def gen_pool_destroy(pool):
    """Models ``gen_pool_destroy()``: free the chunks and the pool. Departs: raises
    ``NetmemError(EBUSY)`` and changes nothing while allocations are outstanding (the kernel
    BUG_ONs); any later use of the pool raises EINVAL."""
    if not isinstance(pool, _core.CoreGenPool):
        raise NetmemError(22, f"gen_pool_destroy: {pool!r} is not a gen_pool")
    pool._destroy()
