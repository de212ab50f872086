"""A pure-Python reference model of the tree allocator of drivers/iommu/iova.c, the oracle of the
differential tests.

Written from iova.c (Linux ~6.18), not from netmem's C core: ``__alloc_and_insert_iova_range``
with its two walks, ``iova_find_limit``, the cached nodes ``cached_node``/``cached32_node`` and
``max32_alloc_size`` (``__cached_rbnode_insert_update``, ``__cached_rbnode_delete_update``),
``free_iova``, ``find_iova`` and ``reserve_iova``. The rbtree is a sorted list of ``Iova`` objects
with the anchor at its end; ``rb_prev``/``rb_next`` are list neighbours and a cached node is an
object, so identity is what the kernel's pointer is. Arithmetic is on 64-bit unsigned longs.
No rcache (the C core's rcache is tested with scripted sequences).
"""
import bisect

ULONG_MASK = (1 << 64) - 1
IOVA_ANCHOR = ULONG_MASK            # iova.c: the anchor node sits above the address space


class Iova:
    __slots__ = ("pfn_hi", "pfn_lo")

    def __init__(self, pfn_lo, pfn_hi):
        self.pfn_lo = pfn_lo
        self.pfn_hi = pfn_hi

    def __repr__(self):
        return f"Iova({self.pfn_lo:#x}, {self.pfn_hi:#x})"


def fls_long(x):
    return x.bit_length()


class RefIovaDomain:
    """``struct iova_domain`` without its rcache."""

    def __init__(self, granule=4096, start_pfn=1):
        assert granule & (granule - 1) == 0 and 0 < granule <= 4096
        self.granule = granule
        self.start_pfn = start_pfn
        self.shift = granule.bit_length() - 1
        self.dma_32bit_pfn = 1 << (32 - self.shift)
        self.max32_alloc_size = self.dma_32bit_pfn
        self.anchor = Iova(IOVA_ANCHOR, IOVA_ANCHOR)
        self.nodes = [self.anchor]          # the rbtree, in order
        self.keys = [IOVA_ANCHOR]           # pfn_lo of each node, for bisect
        self.cached_node = self.anchor
        self.cached32_node = self.anchor

    # -- the rbtree as a sorted list -------------------------------------------------------------

    def _index(self, node):
        i = bisect.bisect_left(self.keys, node.pfn_lo)
        assert self.nodes[i] is node
        return i

    def rb_prev(self, node):
        i = self._index(node)
        return self.nodes[i - 1] if i > 0 else None

    def rb_next(self, node):
        i = self._index(node)
        return self.nodes[i + 1] if i + 1 < len(self.nodes) else None

    def _insert(self, new):
        i = bisect.bisect_left(self.keys, new.pfn_lo)
        assert i == len(self.keys) or self.keys[i] != new.pfn_lo
        self.keys.insert(i, new.pfn_lo)
        self.nodes.insert(i, new)

    def _erase(self, node):
        i = self._index(node)
        del self.keys[i]
        del self.nodes[i]

    # -- iova.c ----------------------------------------------------------------------------------

    def _get_cached_rbnode(self, limit_pfn):
        if limit_pfn <= self.dma_32bit_pfn:
            return self.cached32_node
        return self.cached_node

    def _cached_rbnode_insert_update(self, new):
        if new.pfn_hi < self.dma_32bit_pfn:
            self.cached32_node = new
        else:
            self.cached_node = new

    def _cached_rbnode_delete_update(self, free):
        cached_iova = self.cached32_node
        if free is cached_iova or (free.pfn_hi < self.dma_32bit_pfn
                                   and free.pfn_lo >= cached_iova.pfn_lo):
            self.cached32_node = self.rb_next(free)
        if free.pfn_lo < self.dma_32bit_pfn:
            self.max32_alloc_size = self.dma_32bit_pfn
        cached_iova = self.cached_node
        if free.pfn_lo >= cached_iova.pfn_lo:
            self.cached_node = self.rb_next(free)

    def _find_limit(self, limit_pfn):
        """``iova_find_limit()``: the anchor above 4 GiB; else the node the kernel's descent
        stops at, which is the lowest node ending at or above ``limit_pfn`` (one straddling the
        limit, or the first above it)."""
        if limit_pfn > self.dma_32bit_pfn:
            return self.anchor
        for node in self.nodes:
            if node.pfn_hi >= limit_pfn:
                return node
        raise AssertionError("the anchor ends above every limit")

    def _alloc_and_insert_iova_range(self, size, limit_pfn, size_aligned):
        align_mask = ULONG_MASK
        if size_aligned:
            align_mask = (align_mask << fls_long(size - 1)) & ULONG_MASK
        high_pfn, low_pfn = limit_pfn, self.start_pfn
        if limit_pfn <= self.dma_32bit_pfn and size >= self.max32_alloc_size:
            return None
        curr = self._get_cached_rbnode(limit_pfn)
        retry_pfn = curr.pfn_hi
        while True:
            while True:
                high_pfn = min(high_pfn, curr.pfn_lo)
                new_pfn = ((high_pfn - size) & ULONG_MASK) & align_mask
                prev = curr
                curr = self.rb_prev(curr)
                if not (curr is not None and new_pfn <= curr.pfn_hi and new_pfn >= low_pfn):
                    break
            if high_pfn < size or new_pfn < low_pfn:
                if low_pfn == self.start_pfn and retry_pfn < limit_pfn:
                    high_pfn = limit_pfn
                    low_pfn = retry_pfn + 1
                    curr = self._find_limit(limit_pfn)
                    continue
                self.max32_alloc_size = size
                return None
            break
        new = Iova(new_pfn, new_pfn + size - 1)
        assert new.pfn_hi < prev.pfn_lo
        self._insert(new)
        self._cached_rbnode_insert_update(new)
        return new

    def alloc_iova(self, size, limit_pfn, size_aligned=True):
        """``alloc_iova()``: the first pfn, or None."""
        new = self._alloc_and_insert_iova_range(size, (limit_pfn + 1) & ULONG_MASK, size_aligned)
        return None if new is None else new.pfn_lo

    def _find(self, pfn):
        i = bisect.bisect_right(self.keys, pfn) - 1
        if i >= 0 and self.nodes[i].pfn_lo <= pfn <= self.nodes[i].pfn_hi:
            node = self.nodes[i]
            return None if node is self.anchor else node
        return None

    def find_iova(self, pfn):
        node = self._find(pfn)
        return None if node is None else (node.pfn_lo, node.pfn_hi)

    def free_iova(self, pfn):
        """``free_iova()``: True if a range held ``pfn``."""
        node = self._find(pfn)
        if node is None:
            return False
        self._cached_rbnode_delete_update(node)
        self._erase(node)
        return True

    def reserve_iova(self, pfn_lo, pfn_hi):
        """``reserve_iova()``: overlapped ranges are widened down, the uncovered rest above the
        last one becomes a new range; the cached nodes are not touched."""
        assert pfn_lo <= pfn_hi < IOVA_ANCHOR
        overlap = False
        for node in list(self.nodes):
            if pfn_lo <= node.pfn_hi and pfn_hi >= node.pfn_lo:
                if pfn_lo < node.pfn_lo:
                    node.pfn_lo = pfn_lo
                    self.keys[self._index_by_identity(node)] = pfn_lo
                if pfn_hi > node.pfn_hi:
                    pfn_lo = node.pfn_hi + 1
                if pfn_lo >= node.pfn_lo and pfn_hi <= node.pfn_hi:
                    return
                overlap = True
            elif overlap:
                break
        self._insert(Iova(pfn_lo, pfn_hi))

    def _index_by_identity(self, node):
        return next(i for i, n in enumerate(self.nodes) if n is node)

    # -- observation -----------------------------------------------------------------------------

    def ranges(self):
        return [(n.pfn_lo, n.pfn_hi) for n in self.nodes if n is not self.anchor]

    @property
    def cached(self):
        return ((self.cached_node.pfn_lo, self.cached_node.pfn_hi),
                (self.cached32_node.pfn_lo, self.cached32_node.pfn_hi))
