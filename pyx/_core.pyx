# cython: language_level=3
"""netmem._core: the data plane of netmem, in C.

One extension built from this file and the parts it includes (uvloop's shape): descriptors and
refs (netmem.pxi), the buddy allocator (buddy.pxi), the ptr_ring (ptr_ring.pxi), the DMA seam
(dma.pxi), genalloc (genalloc.pxi), page_pool (page_pool.pxi) and benchmark loops (bench.pxi).
The Python API lives in the ``netmem`` package; the classes here are the compiled halves it
subclasses.
"""

cimport cython
cimport numpy as cnp
import numpy as _np
from cpython.exc cimport PyErr_Clear
from cpython.long cimport PyLong_CheckExact
from cpython.ref cimport PyObject
from libc.errno cimport EBUSY, EEXIST, EINVAL, ENOMEM, ENOSPC, EOPNOTSUPP
from libc.stdint cimport int32_t, int64_t, uint8_t, uint32_t, uint64_t
from libc.stdlib cimport calloc, free, realloc
from libc.string cimport memset

from includes.sys cimport (MAP_ANONYMOUS, MAP_FAILED, MAP_NORESERVE, MAP_PRIVATE, PROT_READ,
                           PROT_WRITE, mmap, munmap, nm_now_ns)

cnp.import_array()

cdef extern from *:
    int __builtin_ctzll(unsigned long long) noexcept nogil

cdef extern from "Python.h":
    # Unchecked: _ref() tests the error itself and raises EINVAL instead of OverflowError.
    unsigned long long PyLong_AsUnsignedLongLong(object) noexcept
    PyObject *PyErr_Occurred() noexcept

include "includes/consts.pxi"
include "netmem.pxi"
include "buddy.pxi"
include "ptr_ring.pxi"
include "dma.pxi"
include "genalloc.pxi"
include "page_pool.pxi"
include "provider.pxi"
include "bench.pxi"

# Python-visible constants (the package re-exports them).
PAGE_SIZE_ = PAGE_SIZE
PAGE_SHIFT_ = PAGE_SHIFT
MAX_PAGE_ORDER_ = MAX_PAGE_ORDER
PP_FLAG_DMA_MAP_ = PP_FLAG_DMA_MAP
PP_FLAG_DMA_SYNC_DEV_ = PP_FLAG_DMA_SYNC_DEV
PP_FLAG_SYSTEM_POOL_ = PP_FLAG_SYSTEM_POOL
PP_FLAG_ALLOW_UNREADABLE_NETMEM_ = PP_FLAG_ALLOW_UNREADABLE_NETMEM
PP_FLAG_ALL_ = PP_FLAG_ALL
PP_ALLOC_CACHE_SIZE_ = PP_ALLOC_CACHE_SIZE
PP_ALLOC_CACHE_REFILL_ = PP_ALLOC_CACHE_REFILL
XDP_BULK_QUEUE_SIZE_ = XDP_BULK_QUEUE_SIZE
MIN_NAPI_ID_ = MIN_NAPI_ID
DMA_MAPPING_ERROR_ = DMA_MAPPING_ERROR
PP_SIGNATURE_ = PP_SIGNATURE
NETMEM_DEBUG_ = NETMEM_DEBUG
DESC_SIZE = sizeof(nm_desc)

STATE_NAMES = {NM_ST_NONE: "none", NM_ST_OWNED: "owned", NM_ST_CACHE: "cache",
               NM_ST_RING: "ring", NM_ST_PUTTING: "putting"}

TRACEPOINTS = {"page_pool_release": TP_PAGE_POOL_RELEASE,
               "page_pool_state_release": TP_PAGE_POOL_STATE_RELEASE,
               "page_pool_state_hold": TP_PAGE_POOL_STATE_HOLD,
               "page_pool_update_nid": TP_PAGE_POOL_UPDATE_NID}

WARNINGS = {
    NM_W_NOT_PP: "put of netmem {netmem:#x}: not a page_pool buffer (napi_pp_put_page() would "
                 "refuse it; page_pool_put_netmem() would corrupt the page)",
    NM_W_WRONG_POOL: "put of netmem {netmem:#x} to page_pool {pool}: the buffer belongs to "
                     "another pool",
    NM_W_DOUBLE_PUT: "double put of netmem {netmem:#x} (page_pool {pool}, buffer state {state}): "
                     "refused, the kernel would hand it out twice",
    NM_W_PP_REF_NEG: "page_pool_unref_netmem(): WARN_ON(ret < 0): pp_ref_count of {netmem:#x} "
                     "is {val}",
    NM_W_FRAG_SIZE: "page_pool_alloc_frag_netmem(): WARN_ON(size > max_size): size {val}",
    NM_W_CACHE_FULL: "net_mp_netmem_place_in_cache(): WARN_ON_ONCE(pool->alloc.count >= "
                     "PP_ALLOC_CACHE_SIZE)",
    NM_W_INFLIGHT_NEG: "page_pool_inflight(): Negative({val}) inflight packet-pages",
    NM_W_DIRECT_AFTER_DESTROY: "direct recycle of netmem {netmem:#x} into destroyed page_pool "
                               "{pool}: put through the ring instead (the kernel would strand "
                               "it in the alloc cache)",
    NM_W_PROVIDER_BAD: "memory provider of page_pool {pool} returned netmem {netmem:#x} without "
                       "net_mp_niov_set_page_pool(): refused",
}


class NetmemError(OSError):
    """A refused operation: ``errno`` is the kernel's, the message names the failed check."""


class NetmemWarning(UserWarning):
    """A kernel ``WARN_ON`` (or a misuse the kernel cannot detect) seen by the model."""


@cython.final
cdef class _PageBuffer:
    """Buffer exporter over a page's bytes that keeps its machine alive."""
    cdef CoreMachine machine
    cdef char *ptr
    cdef Py_ssize_t size
    cdef Py_ssize_t shape[1]
    cdef Py_ssize_t strides[1]

    def __getbuffer__(self, Py_buffer *buf, int flags):
        self.shape[0] = self.size
        self.strides[0] = 1
        buf.buf = self.ptr
        buf.obj = self
        buf.len = self.size
        buf.readonly = 0
        buf.itemsize = 1
        buf.format = "B"
        buf.ndim = 1
        buf.shape = self.shape
        buf.strides = self.strides
        buf.suboffsets = NULL
        buf.internal = NULL

    def __releasebuffer__(self, Py_buffer *buf):
        pass


cdef class CoreMachine:
    """The compiled half of ``netmem.Machine``: physical memory, descriptor tables, buddy
    allocator, execution context, tracepoint and warning buffers."""

    def __cinit__(self, uint64_t memory, int numa_nodes=1, int cpus=2, *args, **kwargs):
        cdef uint64_t node_pages, npages, i
        cdef nm_machine *m
        if numa_nodes < 1 or numa_nodes > NM_MAX_NODES:
            raise NetmemError(EINVAL, f"Machine: numa_nodes must be 1..{NM_MAX_NODES}")
        if cpus < 1 or cpus > NM_MAX_CPUS:
            raise NetmemError(EINVAL, f"Machine: cpus must be 1..{NM_MAX_CPUS}")
        # Every node holds whole MAX_PAGE_ORDER blocks (4 MiB), as zones are aligned to them.
        node_pages = (memory >> PAGE_SHIFT) // numa_nodes
        node_pages &= ~<uint64_t>((1 << MAX_PAGE_ORDER) - 1)
        if node_pages == 0:
            raise NetmemError(EINVAL, "Machine: memory must give every NUMA node at least 4 MiB")
        npages = node_pages * numa_nodes
        if npages >= NM_NIL:
            raise NetmemError(EINVAL, "Machine: memory must be below 16 TiB")
        m = <nm_machine *>calloc(1, sizeof(nm_machine))
        if m == NULL:
            raise MemoryError()
        self.m = m
        m.npages = npages
        m.mem_bytes = npages << PAGE_SHIFT
        m.mem = <char *>_map_lazy(m.mem_bytes)
        m.pages = <nm_desc *>_map_lazy(npages * sizeof(nm_desc))
        m.max_niovs = 1 << 24           # 64 GiB of 4 KiB net_iovs, reserved, committed on use
        m.niovs = <nm_desc *>_map_lazy(m.max_niovs * sizeof(nm_desc))
        m.nr_niovs = 1                  # index 0 stays unused: ref 1 would look like NULL | NET_IOV
        m.nr_nodes = numa_nodes
        m.nr_cpus = cpus
        for i in range(cpus):
            m.cpu_nid[i] = <int>(i * numa_nodes // cpus)
        for i in range(numa_nodes):
            _node_init(m, <int>i, i * node_pages, (i + 1) * node_pages)
        # The first 1 MiB stays reserved, as x86 does (and pfn 0 can never be a netmem_ref).
        for i in range(256):
            m.pages[i].flags = NM_PG_RESERVED
            m.pages[i].refcount = 1
        for i in range(numa_nodes):
            nm_free_range_boot(m, <int>i, max(256, m.nodes[i].start_pfn), m.nodes[i].end_pfn)
            m.nodes[i].managed_pages = m.nodes[i].end_pfn - max(256, m.nodes[i].start_pfn)

    def __dealloc__(self):
        cdef nm_machine *m = self.m
        if m == NULL:
            return
        if m.mem != NULL:
            munmap(m.mem, m.mem_bytes)
        if m.pages != NULL:
            munmap(m.pages, m.npages * sizeof(nm_desc))
        if m.niovs != NULL:
            munmap(m.niovs, m.max_niovs * sizeof(nm_desc))
        free(m.trace_buf)
        free(m)
        self.m = NULL

    # -- page allocator --------------------------------------------------------------------------

    def alloc_pages(self, int order=0, int nid=-1):
        """Models ``alloc_pages_node(nid, GFP_KERNEL | __GFP_COMP, order)``: a page ref with
        refcount 1, or 0 when no block of that order is free."""
        cdef uint64_t pfn
        if order < 0 or order > MAX_PAGE_ORDER:
            raise NetmemError(EINVAL, f"alloc_pages: order {order} > MAX_PAGE_ORDER")
        if nid < NUMA_NO_NODE or nid >= self.m.nr_nodes:
            raise NetmemError(EINVAL, f"alloc_pages: no NUMA node {nid}")
        pfn = nm_alloc_pages_node(self.m, nid, order)
        return 0 if pfn == NM_NIL else page_to_netmem(pfn)

    cdef int _check_page(self, netmem_ref netmem, str fn) except -1:
        if not netmem_valid(self.m, netmem) or netmem & NET_IOV:
            raise NetmemError(EINVAL, f"{fn}: {netmem:#x} is not a page of this machine")
        cdef nm_desc *head = &self.m.pages[netmem_compound_head(self.m, netmem) >> 1]
        if head.flags & (NM_PG_BUDDY | NM_PG_RESERVED) or head.refcount <= 0:
            raise NetmemError(EINVAL, f"{fn}: page {netmem:#x} is free or reserved "
                                      "(BUG: Bad page state)")
        return 0

    def get_page(self, object ref):
        """Models ``get_page()``: one more reference on the (head) page."""
        cdef netmem_ref netmem = _ref(ref)
        self._check_page(netmem, "get_page")
        self.m.pages[netmem_pfn(netmem_compound_head(self.m, netmem))].refcount += 1

    def put_page(self, object ref):
        """Models ``put_page()``: drop a reference; the last one frees the page to the buddy
        allocator. Refuses the put that would free a page a page_pool still holds."""
        cdef netmem_ref head
        cdef nm_desc *d
        cdef netmem_ref netmem = _ref(ref)
        self._check_page(netmem, "put_page")
        head = netmem_compound_head(self.m, netmem)
        d = &self.m.pages[head >> 1]
        if d.pp != NULL and d.refcount == 1:
            raise NetmemError(EINVAL, f"put_page: page {netmem:#x} holds only its page_pool's "
                                      "reference (return it with page_pool_put_netmem)")
        if nm_put_page(self.m, head) < 0:
            raise NetmemError(EINVAL, f"put_page: page {netmem:#x} has refcount 0")

    def set_pfmemalloc(self, object ref, bint flag=True):
        """Models ``set_page_pfmemalloc()``/``clear_page_pfmemalloc()``: mark a page as taken
        from the emergency reserves (a page_pool will not recycle it)."""
        cdef netmem_ref netmem = _ref(ref)
        self._check_page(netmem, "set_pfmemalloc")
        d = &self.m.pages[netmem_pfn(netmem_compound_head(self.m, netmem))]
        if flag:
            d.flags |= NM_PG_PFMEMALLOC
        else:
            d.flags &= ~NM_PG_PFMEMALLOC

    def nr_free_pages(self, nid=None):
        """Free pages in the buddy allocator (all nodes, or node ``nid``)."""
        cdef int n = -1 if nid is None else nid
        if n >= self.m.nr_nodes:
            raise NetmemError(EINVAL, f"nr_free_pages: no NUMA node {nid}")
        return nm_nr_free_pages(self.m, n)

    def free_area(self, int nid=0):
        """Free blocks per order on node ``nid`` (one row of /proc/buddyinfo)."""
        if nid < 0 or nid >= self.m.nr_nodes:
            raise NetmemError(EINVAL, f"free_area: no NUMA node {nid}")
        return [self.m.nodes[nid].nr_free[o] for o in range(NR_PAGE_ORDERS)]

    def managed_pages(self, nid=None):
        """Pages handed to the buddy allocator at boot (all nodes, or node ``nid``)."""
        if nid is None:
            return sum(self.m.nodes[i].managed_pages for i in range(self.m.nr_nodes))
        return self.m.nodes[<int>nid].managed_pages

    @property
    def numa_nodes(self):
        return self.m.nr_nodes

    @property
    def cpus(self):
        return self.m.nr_cpus

    @property
    def memory(self):
        """Bytes of physical memory."""
        return self.m.mem_bytes

    def cpu_to_node(self, int cpu):
        if cpu < 0 or cpu >= self.m.nr_cpus:
            raise NetmemError(EINVAL, f"cpu_to_node: no CPU {cpu}")
        return self.m.cpu_nid[cpu]

    # -- descriptors -----------------------------------------------------------------------------

    def _desc(self, object ref):
        """(pp id, pp_ref_count, refcount, dma_addr, phys, order, nid, flags, state, pp_magic,
        owner) of a descriptor, for the Python views."""
        cdef nm_desc *d
        cdef netmem_ref netmem = _ref(ref)
        if not netmem_valid(self.m, netmem):
            raise NetmemError(EINVAL, f"netmem {netmem:#x} is not a buffer of this machine")
        d = __netmem_desc(self.m, netmem)
        return ((<nm_pool *>d.pp).id if d.pp != NULL else 0, d.pp_ref_count,
                netmem_ref_count(self.m, netmem), d.dma_addr, netmem_phys(self.m, netmem),
                d.order, d.nid, d.flags, d.state, d.pp_magic, d.owner)

    def _page_buffer(self, object ref):
        cdef _PageBuffer b
        cdef nm_desc *d
        cdef netmem_ref head
        cdef netmem_ref netmem = _ref(ref)
        if not netmem_valid(self.m, netmem) or netmem & NET_IOV:
            return None
        head = netmem_compound_head(self.m, netmem)
        d = &self.m.pages[head >> 1]
        b = _PageBuffer.__new__(_PageBuffer)
        b.machine = self
        b.ptr = self.m.mem + ((netmem >> 1) << PAGE_SHIFT)
        b.size = (PAGE_SIZE << (d.order if d.flags & NM_PG_HEAD else 0)) \
            - <Py_ssize_t>(((netmem - head) >> 1) << PAGE_SHIFT)
        return memoryview(b)

    def _niov_area_alloc(self, uint64_t n, uint32_t owner, int niov_type):
        """Reserve ``n`` net_iov descriptors for an area; returns the first global index."""
        cdef uint64_t base = self.m.nr_niovs, i
        cdef nm_desc *d
        if n == 0 or base + n > self.m.max_niovs:
            raise NetmemError(ENOMEM, f"net_iov area of {n}: the machine's {self.m.max_niovs} "
                                      "net_iov descriptors are used up")
        for i in range(base, base + n):
            d = &self.m.niovs[i]
            memset(d, 0, sizeof(nm_desc))
            d.refcount = 1
            d.owner = owner
            d.order = niov_type
        self.m.nr_niovs = base + n
        return base

    def _niov_set_dma_addr(self, object ref, uint64_t addr):
        """Models ``net_mp_niov_set_dma_addr()``."""
        cdef netmem_ref netmem = _ref(ref)
        if not netmem_valid(self.m, netmem) or not netmem & NET_IOV:
            raise NetmemError(EINVAL, f"net_mp_niov_set_dma_addr: {netmem:#x} is not a net_iov")
        self.m.niovs[netmem >> 1].dma_addr = addr

    def _niov_clear_page_pool(self, object ref):
        """Models ``net_mp_niov_clear_page_pool()``."""
        cdef netmem_ref netmem = _ref(ref)
        if not netmem_valid(self.m, netmem) or not netmem & NET_IOV:
            raise NetmemError(EINVAL, f"net_mp_niov_clear_page_pool: {netmem:#x} is not a net_iov")
        net_mp_niov_clear_page_pool(self.m, netmem)

    def _ledger(self):
        """Counts of page descriptors by model state, and of net_iovs by state: a check that
        every buffer is somewhere (allocator, a pool's cache or ring, or a holder)."""
        cdef uint64_t i
        pages = [0, 0, 0, 0, 0]
        niovs = [0, 0, 0, 0, 0]
        for i in range(self.m.npages):
            if self.m.pages[i].state:
                pages[self.m.pages[i].state] += 1
        for i in range(1, self.m.nr_niovs):
            niovs[self.m.niovs[i].state] += 1
        return pages, niovs

    # -- execution context, clock, tracepoints, warnings -----------------------------------------

    def _set_context(self, int cpu, bint softirq):
        if cpu < 0 or cpu >= self.m.nr_cpus:
            raise NetmemError(EINVAL, f"on_cpu: no CPU {cpu} (the machine has {self.m.nr_cpus})")
        old = (self.m.cpu, bool(self.m.in_softirq))
        self.m.cpu = cpu
        self.m.in_softirq = softirq
        return old

    @property
    def current_cpu(self):
        return self.m.cpu

    @property
    def in_softirq(self):
        return bool(self.m.in_softirq)

    @property
    def clock_ns(self):
        """The virtual clock (CLOCK_BOOTTIME of the model), in ns."""
        return self.m.clock_ns

    def _set_clock(self, uint64_t ns):
        self.m.clock_ns = ns

    def _trace_set_mask(self, uint32_t mask):
        self.m.trace_mask = mask

    def _trace_take(self):
        cdef uint64_t i
        cdef nm_trace_rec *t
        out = []
        for i in range(self.m.trace_n):
            t = &self.m.trace_buf[i]
            out.append((t.ts_ns, t.type, t.pool_id, t.netmem, t.a, t.b, t.c))
        self.m.trace_n = 0
        return out

    def _take_warnings(self):
        cdef uint32_t i
        out = [(self.m.warn[i].code, self.m.warn[i].pool_id, self.m.warn[i].netmem,
                self.m.warn[i].val) for i in range(self.m.nr_warn)]
        lost = self.m.nr_warn_lost
        self.m.nr_warn = 0
        self.m.nr_warn_lost = 0
        return out, lost

    def _system_recycle_stats(self):
        return _recycle_stats_tuple(&self.m.system_recycle_stats)


cdef void *_map_lazy(uint64_t size) except NULL:
    """Anonymous, lazily committed memory: untouched pages cost nothing."""
    cdef void *p = mmap(NULL, size, PROT_READ | PROT_WRITE,
                        MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0)
    if p == MAP_FAILED:
        raise MemoryError(f"mmap of {size} bytes failed")
    return p


cdef void _node_init(nm_machine *m, int nid, uint64_t start, uint64_t end) noexcept nogil:
    cdef nm_node *n = &m.nodes[nid]
    cdef int o
    n.start_pfn = start
    n.end_pfn = end
    for o in range(NR_PAGE_ORDERS):
        n.free_head[o] = NM_NIL
        n.free_tail[o] = NM_NIL
        n.nr_free[o] = 0


cdef tuple _recycle_stats_tuple(pp_recycle_stats *s):
    return (s.cached, s.cache_full, s.ring, s.ring_full, s.released_refcnt)


cdef class CoreDevice:
    """The compiled half of a DMA device (dma-direct, identity mapping for now)."""

    def __cinit__(self, CoreMachine machine, int dma_mask_bits=64, bint coherent=True):
        if dma_mask_bits < 12 or dma_mask_bits > 64:
            raise NetmemError(EINVAL, f"dma_set_mask: {dma_mask_bits} bits is not a DMA mask")
        self.machine = machine
        self.dev.dma_mask = 0xffffffffffffffff if dma_mask_bits == 64 \
            else ((<uint64_t>1 << dma_mask_bits) - 1)
        self.dev.need_sync = not coherent

    @property
    def dma_mask(self):
        return self.dev.dma_mask

    @property
    def nr_mapped(self):
        """Live streaming mappings of this device (0 when every pool has unmapped)."""
        return self.dev.nr_mapped

    @property
    def nr_map_errors(self):
        return self.dev.nr_map_errors

    def dma_need_sync(self):
        """Models ``dma_dev_need_sync()``: false for a coherent device."""
        return bool(self.dev.need_sync)


cdef class CoreNapi:
    """The compiled half of a NAPI instance: the CPU that owns its poll list and its id."""

    def __cinit__(self, CoreMachine machine, int cpu, uint32_t napi_id):
        if cpu < 0 or cpu >= machine.m.nr_cpus:
            raise NetmemError(EINVAL, f"napi: no CPU {cpu}")
        self.machine = machine
        self.napi.list_owner = cpu
        self.napi.napi_id = napi_id

    @property
    def list_owner(self):
        return self.napi.list_owner

    @list_owner.setter
    def list_owner(self, int cpu):
        self.napi.list_owner = cpu

    @property
    def napi_id(self):
        return self.napi.napi_id


include "pool_facade.pxi"
