"""A pure-Python reference model of the kernel's page_pool, the oracle of the differential tests.

Written from net/core/page_pool.c, include/net/page_pool/helpers.h and include/linux/ptr_ring.h
(Linux ~6.18), not from netmem's C core: the alloc cache (a LIFO of 128), the ptr_ring with its
batched consumer invalidation, the refill with the NUMA waive, the bulk slow path, recycling by
pp_ref_count and page refcount, napi-local direct recycling, the bulk put, the frag API, destroy
and the eleven stats. It does not reimplement the page allocator: pages come one at a time from a
second ``netmem.Machine`` of the same configuration through its public page API, so the handles
it returns equal the core's, and it keeps its own per-buffer state (``RefMachine.bufs``). It
departs from the kernel where netmem does on purpose: a put of a buffer that the named pool has
not handed out is refused and recorded as a warning, an allow_direct put after destroy goes to
the ring. Of DMA it models only what changes the buffers' fate: a mapping through netmem's
dma-direct fails when the buffer ends beyond the device's mask, and the page goes back. Host pages
only: no memory providers or net_iovs.
"""
import contextlib
import dataclasses

import netmem

PAGE_SHIFT = 12
PAGE_SIZE = 1 << PAGE_SHIFT
MAX_PAGE_ORDER = 10                 # include/linux/mmzone.h
NUMA_NO_NODE = -1
PP_FLAG_DMA_MAP = 1 << 0            # include/net/page_pool/types.h: the pool maps its pages
PP_ALLOC_CACHE_SIZE = 128           # include/net/page_pool/types.h: twice the NAPI budget
PP_ALLOC_CACHE_REFILL = 64          # the NAPI budget: refill and slow-path bulk size
XDP_BULK_QUEUE_SIZE = 16            # include/net/xdp.h: page_pool_put_netmem_bulk()'s array
PTR_RING_DEFAULT_SIZE = 1024        # page_pool_init(): the ring size when pool_size is 0
PTR_RING_MAX_SIZE = 16384           # page_pool_init(): min(pool_size, 16384)
PTR_RING_BATCH = 64 * 2 // 8        # __ptr_ring_set_size(): SMP_CACHE_BYTES * 2 / sizeof(void *)
BIAS_MAX = (2**63 - 1) >> 1         # page_pool.c: LONG_MAX >> 1
U32_MASK = 0xFFFFFFFF               # page_pool_alloc_netmem() shifts an unsigned int

STATS_KEYS = ("alloc_fast", "alloc_slow", "alloc_slow_high_order", "alloc_empty",
              "alloc_refill", "alloc_waive", "recycle_cached", "recycle_cache_full",
              "recycle_ring", "recycle_ring_full", "recycle_released_refcnt")

# Where a page_pool buffer is: handed out, in the alloc cache, in the ring, or unrefed inside a
# bulk put and not yet placed.
OWNED, CACHE, RING, PUTTING = "owned", "cache", "ring", "putting"


def observe(pool):
    """The counters a differential test compares; reads a core pool and a model pool alike."""
    return {"stats": dict(pool.stats), "hold_cnt": pool.hold_cnt,
            "release_cnt": pool.release_cnt, "inflight": pool.inflight,
            "alloc_count": pool.alloc_count, "ring_count": pool.ring_count}


class PtrRing:
    """``struct ptr_ring`` with one producer and one consumer. A zero slot is free; the consumer
    zeroes consumed slots a batch at a time (``__ptr_ring_discard_one()``), so a produce can find
    its slot still taken before the ring holds ``size`` entries."""

    def __init__(self, size):
        self.size = size
        self.batch = PTR_RING_BATCH if PTR_RING_BATCH <= size // 2 else 1
        self.queue = [0] * size
        self.producer = self.consumer_head = self.consumer_tail = 0
        self.count = 0              # produced and not yet consumed (no kernel field)

    def empty(self):
        return not self.queue[self.consumer_head]

    def produce(self, ref):
        """``__ptr_ring_produce()``: False (-ENOSPC) when the producer's slot is taken."""
        if self.queue[self.producer]:
            return False
        self.queue[self.producer] = ref
        self.producer = (self.producer + 1) % self.size
        self.count += 1
        return True

    def consume(self):
        """``__ptr_ring_consume()``: the oldest entry, or 0."""
        ref = self.queue[self.consumer_head]
        if ref:
            self._discard_one()
            self.count -= 1
        return ref

    def _discard_one(self):
        head = self.consumer_head + 1
        if head - self.consumer_tail >= self.batch or head >= self.size:
            for slot in range(self.consumer_tail, head):
                self.queue[slot] = 0
            self.consumer_tail = head
        if head >= self.size:
            head = self.consumer_tail = 0
        self.consumer_head = head


@dataclasses.dataclass
class Buf:
    """The fields of struct page a pool uses (``pp``, ``pp_ref_count``), and where it is."""
    pool: "RefPagePool"
    pp_ref_count: int = 1
    where: str = CACHE


class RefMachine:
    """The model's world: the execution context, the page source (a ``netmem.Machine`` used only
    through ``alloc_pages``/``get_page``/``put_page``/``set_pfmemalloc`` and descriptor reads),
    the buffer ledger and the warnings the core would raise."""

    def __init__(self, pages):
        self.pages = pages
        self.cpu, self.in_softirq = 0, False
        self.bufs = {}
        self.pools = []
        self.warnings = []
        self.overflow_warned = set()   # devices whose dev_WARN_ONCE already fired

    @classmethod
    def like(cls, machine):
        """A model over a fresh machine configured as ``machine``."""
        return cls(netmem.Machine(memory=machine.memory, numa_nodes=machine.numa_nodes,
                                  cpus=machine.cpus))

    @contextlib.contextmanager
    def on_cpu(self, cpu, softirq=True):
        old = self.cpu, self.in_softirq
        self.cpu, self.in_softirq = cpu, softirq
        try:
            yield self
        finally:
            self.cpu, self.in_softirq = old

    def page_pool_create(self, params):
        return self.page_pool_create_percpu(params, -1)

    def page_pool_create_percpu(self, params, cpuid):
        pool = RefPagePool(self, params, cpuid)
        self.pools.append(pool)
        return pool

    def warn(self, kind):
        """Record what the core reports as a NetmemWarning: a kernel WARN, or a refused put."""
        self.warnings.append(kind)

    def take_warnings(self):
        """The warning kinds recorded since the last call."""
        kinds, self.warnings = self.warnings, []
        return kinds

    # -- the page allocator side --------------------------------------------------------------

    def numa_mem_id(self):
        return self.pages.cpu_to_node(self.cpu)

    def alloc_pages_node(self, nid, order):
        """``alloc_pages_node(nid, gfp | __GFP_COMP, order)``: a ref, or 0."""
        return self.pages.alloc_pages(order, self.numa_mem_id() if nid == NUMA_NO_NODE else nid)

    def alloc_pages_bulk_node(self, nid, nr):
        """``alloc_pages_bulk_node()`` over netmem's allocator (no watermarks): order-0 pages
        from the preferred node while it has any; only the first may come from another node."""
        nid = self.numa_mem_id() if nid == NUMA_NO_NODE else nid
        out = []
        while len(out) < nr and (not out or self.pages.nr_free_pages(nid)):
            ref = self.pages.alloc_pages(0, nid)
            if not ref:
                break
            out.append(ref)
        return out

    def page_nid(self, ref):
        return self.pages.netmem(ref).nid

    def can_be_recycled(self, ref):
        """``__page_pool_page_can_be_recycled()`` for a page: refcount 1 and not pfmemalloc."""
        page = self.pages.netmem(ref)
        return page.refcount == 1 and not page.is_pfmemalloc

    def get_page(self, ref):
        self.pages.get_page(ref)

    def put_page(self, ref):
        self.pages.put_page(ref)

    def set_pfmemalloc(self, ref, flag=True):
        self.pages.set_pfmemalloc(ref, flag)

    def nr_free_pages(self):
        return self.pages.nr_free_pages()

    def compound_head(self, ref):
        """``netmem_compound_head()`` for the model's buffers: a tail page names its head."""
        pfn = ref >> 1
        for order in range(MAX_PAGE_ORDER + 1):
            head_pfn = pfn >> order << order
            buf = self.bufs.get(head_pfn << 1)
            if buf is not None and pfn - head_pfn < 1 << buf.pool.order:
                return head_pfn << 1
        return ref

    # -- puts that name no pool ---------------------------------------------------------------

    def page_pool_put_netmem_bulk(self, refs):
        """``page_pool_put_netmem_bulk()``; callers pass at most XDP_BULK_QUEUE_SIZE refs, so a
        longer list is put in calls of that many."""
        for start in range(0, len(refs), XDP_BULK_QUEUE_SIZE):
            self._put_netmem_bulk(refs[start:start + XDP_BULK_QUEUE_SIZE])

    def _put_netmem_bulk(self, refs):
        unrefed = []
        for ref in map(self.compound_head, refs):
            buf = self.bufs.get(ref)
            if buf is None or buf.where != OWNED:
                self.warn("not_pp" if buf is None else "double_put")
            elif buf.pool.unref(buf, 1) == 0:
                buf.where = PUTTING
                unrefed.append(ref)
        while unrefed:
            pool = self.bufs[unrefed[0]].pool
            mine = [ref for ref in unrefed if self.bufs[ref].pool is pool]
            unrefed = [ref for ref in unrefed if self.bufs[ref].pool is not pool]
            pool.put_unrefed_bulk(mine)

    def quiesce(self):
        """The deferred ``page_pool_release_retry()`` of every destroyed pool still waiting."""
        for pool in self.pools:
            if pool.destroy_cnt and not pool.freed:
                pool.release()


class RefPagePool:
    """One ``struct page_pool`` of host pages, created by ``RefMachine.page_pool_create``."""

    def __init__(self, rm, params, cpuid):
        self.rm = rm
        self.order = params.order
        self.max_size = PAGE_SIZE << params.order
        self.nid = params.nid
        self.napi = params.napi
        self.cpuid = cpuid
        self.dma_mask = params.dev.dma_mask if params.flags & PP_FLAG_DMA_MAP else None
        self.dev = id(params.dev)
        pool_size = params.pool_size
        self.ring = PtrRing(min(pool_size, PTR_RING_MAX_SIZE) if pool_size else
                            PTR_RING_DEFAULT_SIZE)
        self.cache = []
        self.stats = dict.fromkeys(STATS_KEYS, 0)
        self.hold_cnt = self.release_cnt = 0
        self.frag_page = self.frag_offset = self.frag_users = 0
        self.destroy_cnt = 0
        self.freed = False

    @property
    def inflight(self):
        """``page_pool_inflight(pool, false)``: hold - release, clamped at 0."""
        return max(0, self.hold_cnt - self.release_cnt)

    @property
    def alloc_count(self):
        return len(self.cache)

    @property
    def ring_count(self):
        return self.ring.count

    # -- alloc --------------------------------------------------------------------------------

    def alloc_netmem(self):
        """``page_pool_alloc_netmems()``: alloc cache, then ring refill, then the slow path."""
        ref = self._get_cached() or self._alloc_slow()
        if ref:
            self.rm.bufs[ref].where = OWNED
        return ref

    def alloc_netmems_bulk(self, n):
        """``n`` allocations, stopping at the first failure."""
        out = []
        while len(out) < n:
            ref = self.alloc_netmem()
            if not ref:
                break
            out.append(ref)
        return out

    def _get_cached(self):
        if self.cache:
            self.stats["alloc_fast"] += 1
            return self.cache.pop()
        return self._refill_alloc_cache()

    def _refill_alloc_cache(self):
        """``page_pool_refill_alloc_cache()``."""
        if self.ring.empty():
            self.stats["alloc_empty"] += 1
            return 0
        pref_nid = self.rm.numa_mem_id() if self.nid == NUMA_NO_NODE else self.nid
        while len(self.cache) < PP_ALLOC_CACHE_REFILL:
            ref = self.ring.consume()
            if not ref:
                break
            if self.rm.page_nid(ref) != pref_nid:
                self._return_netmem(ref)
                self.stats["alloc_waive"] += 1
                break
            self._to_cache(ref)
        if not self.cache:
            return 0
        self.stats["alloc_refill"] += 1
        return self.cache.pop()

    def _alloc_slow(self):
        """``__page_pool_alloc_netmems_slow()``: one compound page for order > 0, else a bulk
        of order-0 pages into the cache, handing out the last."""
        if self.order:
            ref = self.rm.alloc_pages_node(self.nid, self.order)
            if not ref or not self._dma_map(ref):
                return 0
            self.stats["alloc_slow_high_order"] += 1
            self._hold(ref)
            return ref
        for ref in self.rm.alloc_pages_bulk_node(self.nid, PP_ALLOC_CACHE_REFILL):
            if self._dma_map(ref):
                self._hold(ref)
                self.cache.append(ref)
        if not self.cache:
            return 0
        self.stats["alloc_slow"] += 1
        return self.cache.pop()

    def _dma_map(self, ref):
        """``page_pool_dma_map()`` over dma-direct without swiotlb: the mapping fails when the
        buffer ends beyond the device's mask (``dma_direct_map_phys()`` WARNs once per device),
        and the page is put back."""
        last_byte = ((ref >> 1) << PAGE_SHIFT) + self.max_size - 1
        if self.dma_mask is None or last_byte <= self.dma_mask:
            return True
        if self.dev not in self.rm.overflow_warned:
            self.rm.overflow_warned.add(self.dev)
            self.rm.warn("dma_overflow")
        self.rm.put_page(ref)
        return False

    def _hold(self, ref):
        """``page_pool_set_pp_info()`` and the hold count."""
        self.rm.bufs[ref] = Buf(self)
        self.hold_cnt += 1

    def _to_cache(self, ref):
        self.rm.bufs[ref].where = CACHE
        self.cache.append(ref)

    # -- put ----------------------------------------------------------------------------------

    def put_netmem(self, ref, allow_direct=False):
        """``page_pool_put_netmem()``: drop one pp reference; the last one recycles. False when
        refused (not handed out by this pool)."""
        buf = self._handed_out(ref)
        if buf is None:
            return False
        if self.unref(buf, 1) == 0:
            self._put_unrefed(ref, allow_direct)
        return True

    def recycle_direct(self, ref):
        return self.put_netmem(ref, allow_direct=True)

    def ref_netmem(self, ref):
        """``page_pool_ref_netmem()`` on a buffer this pool handed out."""
        buf = self.rm.bufs[ref]
        if buf.pool is not self or buf.where != OWNED:
            raise LookupError(f"{ref:#x} is not handed out by this pool")
        buf.pp_ref_count += 1

    def _handed_out(self, ref):
        buf = self.rm.bufs.get(ref)
        if buf is None:
            self.rm.warn("not_pp")
        elif buf.pool is not self:
            self.rm.warn("wrong_pool")
        elif buf.where != OWNED:
            self.rm.warn("double_put")
        else:
            return buf
        return None

    def unref(self, buf, nr):
        """``page_pool_unref_netmem()``: the references left; 0 leaves pp_ref_count at 1."""
        if buf.pp_ref_count == nr:
            buf.pp_ref_count = 1
            return 0
        buf.pp_ref_count -= nr
        ret = buf.pp_ref_count
        if ret < 0:
            self.rm.warn("pp_ref_neg")
        if ret == 0:
            buf.pp_ref_count = 1
        return ret

    def _napi_local(self):
        """``page_pool_napi_local()`` on a !PREEMPT_RT kernel."""
        rm = self.rm
        if not rm.in_softirq:
            return False
        if self.cpuid == rm.cpu:
            return True
        return self.napi is not None and self.napi.list_owner == rm.cpu

    def _put_unrefed(self, ref, allow_direct):
        """``page_pool_put_unrefed_netmem()``."""
        if not allow_direct:
            allow_direct = self._napi_local()
        ref = self._put_page(ref, allow_direct)
        if ref and not self._recycle_in_ring(ref):
            self.stats["recycle_ring_full"] += 1
            self._return_netmem(ref)

    def _put_page(self, ref, allow_direct):
        """``__page_pool_put_page()``: 0 when the buffer was cached or released, else the ref,
        for the ring."""
        if not self.rm.can_be_recycled(ref):
            self.stats["recycle_released_refcnt"] += 1
            self._return_netmem(ref)
            return 0
        if allow_direct and self._recycle_in_cache(ref):
            return 0
        return ref

    def _recycle_in_cache(self, ref):
        """``page_pool_recycle_in_cache()``. Departs after destroy, which emptied the cache for
        the last time: the kernel would strand the buffer there; refused with a warning, so
        it goes to the ring."""
        if self.destroy_cnt:
            self.rm.warn("direct_after_destroy")
            return False
        if len(self.cache) == PP_ALLOC_CACHE_SIZE:
            self.stats["recycle_cache_full"] += 1
            return False
        self._to_cache(ref)
        self.stats["recycle_cached"] += 1
        return True

    def _recycle_in_ring(self, ref):
        if not self.ring.produce(ref):
            return False
        self.rm.bufs[ref].where = RING
        self.stats["recycle_ring"] += 1
        return True

    def put_unrefed_bulk(self, refs):
        """One pool's group of ``page_pool_put_netmem_bulk()``: one napi-local check, then
        ``page_pool_recycle_ring_bulk()`` (ring_full counts once, the rest are returned)."""
        allow_direct = self._napi_local()
        bulk = [ref for ref in refs if self._put_page(ref, allow_direct)]  # approved for the ring
        done = 0
        for ref in bulk:
            if not self.ring.produce(ref):
                self.stats["recycle_ring_full"] += 1
                break
            self.rm.bufs[ref].where = RING
            done += 1
        self.stats["recycle_ring"] += done
        for ref in bulk[done:]:
            self._return_netmem(ref)

    def _return_netmem(self, ref):
        """``page_pool_return_netmem()``: release count, clear pp info, put_page."""
        self.release_cnt += 1
        del self.rm.bufs[ref]
        self.rm.put_page(ref)

    # -- frag API -----------------------------------------------------------------------------

    def alloc_frag(self, size):
        """``page_pool_alloc_frag_netmem()``: ``(ref, offset)``, ``(0, 0)`` on failure
        (dma_get_cache_alignment() is 1 on x86-64)."""
        if size > self.max_size:
            self.rm.warn("frag_size")
            return 0, 0
        offset, ref = self.frag_offset, self.frag_page
        if ref and offset + size > self.max_size:
            ref = self._drain_frag(ref)
            if ref:
                self.stats["recycle_cached"] += 1
                self.stats["alloc_fast"] += 1
                return self._frag_reset(ref, size)
        if not ref:
            ref = self.alloc_netmem()
            self.frag_page = ref
            return self._frag_reset(ref, size) if ref else (0, 0)
        self.frag_users += 1
        self.frag_offset = offset + size
        return ref, offset

    def _frag_reset(self, ref, size):
        self.frag_users = 1
        self.frag_offset = size
        self.rm.bufs[ref].pp_ref_count = BIAS_MAX
        return ref, 0

    def _drain_frag(self, ref):
        """``page_pool_drain_frag()``: the page, when every frag came back and it can be
        reused; else 0 (returned to the allocator when it cannot)."""
        if self.unref(self.rm.bufs[ref], BIAS_MAX - self.frag_users):
            return 0
        if self.rm.can_be_recycled(ref):
            return ref
        self._return_netmem(ref)
        return 0

    def alloc(self, size):
        """``page_pool_alloc_netmem()``: ``(ref, offset, size)``; a whole buffer when
        ``size << 1`` (an unsigned int) exceeds it, else a frag stretched to the end of the
        page when another of the same size would not fit."""
        if (size << 1) & U32_MASK > self.max_size:
            ref = self.alloc_netmem()
            return (ref, 0, self.max_size) if ref else (0, 0, 0)
        ref, offset = self.alloc_frag(size)
        if not ref:
            return 0, 0, 0
        if self.frag_offset + size > self.max_size:
            size = self.max_size - offset
            self.frag_offset = self.max_size
        return ref, offset, size

    # -- destroy ------------------------------------------------------------------------------

    def destroy(self):
        """``page_pool_destroy()`` for the only user: disable direct recycling, drain the frag
        page, release; ``RefMachine.quiesce`` retries a release that found buffers in flight."""
        self.cpuid, self.napi = -1, None
        self._free_frag()
        self.release()

    def _free_frag(self):
        ref, self.frag_page = self.frag_page, 0
        if ref and not self.unref(self.rm.bufs[ref], BIAS_MAX - self.frag_users):
            self._return_netmem(ref)

    def release(self):
        """``page_pool_release()``: scrub, then free the pool when nothing is in flight."""
        self._scrub()
        inflight = self.hold_cnt - self.release_cnt
        self.freed = inflight == 0
        return inflight

    def _scrub(self):
        """``page_pool_scrub()``: empty the alloc cache on the first pass only, then the ring."""
        if not self.destroy_cnt:
            while self.cache:
                self._return_netmem(self.cache.pop())
        self.destroy_cnt += 1
        while ref := self.ring.consume():
            self._return_netmem(ref)
