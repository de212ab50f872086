"""The IOVA allocator: models drivers/iommu/iova.c, with the flush queue of dma-iommu.c.

An ``IovaDomain`` hands out ranges of I/O virtual page frames (pfns of ``granule`` bytes) top-down
below a limit, size-aligned on request, exactly where the kernel's allocator puts them: a tree of
allocated ranges walked down from a cached node, the 32-bit short-cut ``max32_alloc_size``, and in
front of it the rcache, per-CPU magazines of 127 pfns for sizes of 1 to 32 pages with a depot of
full magazines trimmed every 100 ms. A ``FlushQueue`` defers the free of unmapped IOVAs until an
IOTLB flush (a full ring of 256 entries, or 10 ms after the first queued one), so a device can
never reach memory through a stale translation to a reused address. Both run in C
(``netmem._core``); the DMA layer calls that C API directly. Departures from the kernel are listed
in ``pyx/iova.pxi`` and ``docs/design.md``.
"""
from netmem import _core

__all__ = [
    "FQ_STATS_KEYS",
    "IOVA_ANCHOR",
    "IOVA_DEFAULT_FQ_SIZE",
    "IOVA_DEFAULT_FQ_TIMEOUT",
    "IOVA_DEPOT_DELAY_MS",
    "IOVA_MAG_SIZE",
    "IOVA_RANGE_CACHE_MAX_SIZE",
    "IOVA_RCACHE_RANGE",
    "IOVA_SINGLE_FQ_SIZE",
    "IOVA_SINGLE_FQ_TIMEOUT",
    "IOVA_STATS_KEYS",
    "FlushQueue",
    "IovaDomain",
]

IOVA_RANGE_CACHE_MAX_SIZE = _core.IOVA_RANGE_CACHE_MAX_SIZE_    # rcache bins: 1..32 pages
IOVA_MAG_SIZE = _core.IOVA_MAG_SIZE_                            # pfns per magazine
IOVA_DEPOT_DELAY_MS = _core.IOVA_DEPOT_DELAY_MS_                # depot trim period
IOVA_RCACHE_RANGE = _core.IOVA_RCACHE_RANGE_                    # iova_rcache_range(), bytes
IOVA_DEFAULT_FQ_SIZE = _core.IOVA_DEFAULT_FQ_SIZE_              # per-CPU flush queue ring
IOVA_DEFAULT_FQ_TIMEOUT = _core.IOVA_DEFAULT_FQ_TIMEOUT_        # ms
IOVA_SINGLE_FQ_SIZE = _core.IOVA_SINGLE_FQ_SIZE_                # the single queue's ring
IOVA_SINGLE_FQ_TIMEOUT = _core.IOVA_SINGLE_FQ_TIMEOUT_          # ms
IOVA_ANCHOR = _core.IOVA_ANCHOR_                                # the anchor node's pfn (~0UL)
IOVA_STATS_KEYS = _core.IOVA_STATS_KEYS
FQ_STATS_KEYS = _core.FQ_STATS_KEYS


class IovaDomain(_core.CoreIovaDomain):
    """An IOVA domain (``struct iova_domain`` with its rcache).

    ``IovaDomain(granule=4096, start_pfn=1)``: pfns are ``granule`` bytes (a power of two up to
    PAGE_SIZE) and allocation never goes below ``start_pfn``; 32-bit space ends at
    ``dma_32bit_pfn`` (``1 << (32 - log2(granule))``). ``limit_pfn`` arguments are inclusive, as
    the kernel's. ``alloc_iova``/``free_iova``/``find_iova``/``reserve_iova`` work on the tree;
    ``alloc_iova_fast``/``free_iova_fast`` go through the rcache of the named CPU.
    """

    def __repr__(self):
        s = self.stats
        return (f"<IovaDomain granule={self.granule} start_pfn={self.start_pfn:#x} "
                f"ranges={s['nr_ranges']} cached={s['nr_cached']}>")


class FlushQueue(_core.CoreFlushQueue):
    """The dma-iommu flush queue over a domain (the flush-queue half of
    ``struct iommu_dma_cookie``).

    ``FlushQueue(domain, ncpus=1, single=False)``: ``ncpus`` rings of IOVA_DEFAULT_FQ_SIZE with a
    10 ms timer, or one ring of IOVA_SINGLE_FQ_SIZE with 1000 ms (``single``, for IOMMUs whose
    page tables are shadowed on flush). Time is the caller's: ``queue_iova(..., now_ns=)`` arms
    the timer, ``timeout(now_ns)`` runs it once ``now_ns >= timer_expires_ns``.
    """

    def __repr__(self):
        kind = "single" if self.single else f"{self.ncpus} CPUs"
        return (f"<FlushQueue {kind} queued={self.stats['fq_pending']}"
                f"{' destroyed' if self.destroyed else ''}>")
