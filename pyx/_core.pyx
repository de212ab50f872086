# cython: language_level=3
"""netmem._core: the data plane of netmem, in C.

One extension built from this file and the parts it includes (uvloop's shape): descriptors and
refs (netmem.pxi), the buddy allocator (buddy.pxi), the ptr_ring (ptr_ring.pxi), the DMA seam
(dma.pxi), the IOVA allocator and flush queue (iova.pxi), the IOMMU path (iommu.pxi), genalloc
(genalloc.pxi), page_pool (page_pool.pxi) and benchmark loops (bench.pxi). The Python API lives in
the ``netmem`` package; the classes here are the compiled halves it subclasses.
"""

cimport cython
cimport numpy as cnp
import numpy as _np
import weakref
from cpython.exc cimport PyErr_Clear
from cpython.long cimport PyLong_CheckExact
from cpython.ref cimport PyObject
from libc.errno cimport (E2BIG, EAGAIN, EBADF, EBUSY, ECONNRESET, EEXIST, EFAULT, EINVAL, EIO,
                         EMSGSIZE, ENOBUFS, ENODEV, ENOENT, ENOMEM, ENOSPC, ENOTCONN, EOPNOTSUPP,
                         EPIPE, ETOOMANYREFS)
from libc.stdint cimport int32_t, int64_t, uint8_t, uint16_t, uint32_t, uint64_t
from libc.stdlib cimport calloc, free, malloc, qsort, realloc
from libc.string cimport memcmp, memcpy, memmove, memset, strcmp

from includes.sys cimport (MADV_HUGEPAGE, MAP_ANONYMOUS, MAP_FAILED, MAP_NORESERVE, MAP_PRIVATE,
                           PROT_READ, PROT_WRITE, madvise, mmap, munmap, nm_now_ns, nm_tsc)

cnp.import_array()

cdef extern from *:
    int __builtin_ctzll(unsigned long long) noexcept nogil
    int __builtin_clzll(unsigned long long) noexcept nogil
    int __builtin_clzl(unsigned long) noexcept nogil
    int __builtin_ctzl(unsigned long) noexcept nogil

cdef extern from "Python.h":
    # Unchecked: _ref(), _u32() and _sync_size() test the error themselves and raise EINVAL
    # instead of OverflowError.
    unsigned long long PyLong_AsUnsignedLongLong(object) noexcept
    long long PyLong_AsLongLong(object) noexcept
    PyObject *PyErr_Occurred() noexcept

include "includes/consts.pxi"
include "netmem.pxi"
include "rbtree.pxi"
include "buddy.pxi"
include "ptr_ring.pxi"
include "dma.pxi"
include "iova.pxi"
include "iommu.pxi"
include "genalloc.pxi"
include "page_pool.pxi"
include "provider.pxi"
include "skb.pxi"
include "profile.pxi"
include "napi.pxi"
include "gro.pxi"
include "tcp_rx.pxi"
include "inet_hashtables.pxi"
include "tcp_recvmsg.pxi"
include "tcp_ack.pxi"
include "tcp_rmem.pxi"
include "udp_icmp.pxi"
include "devmem.pxi"
include "devmem_tx.pxi"
include "zcrx.pxi"
include "tcp_rtt.pxi"
include "tcp_cong.pxi"
include "link.pxi"
include "event_heap.pxi"
include "tcp_output.pxi"
include "tcp_recovery.pxi"
include "tcp_timer.pxi"
include "tcp_sender.pxi"
include "bench.pxi"
include "capture.pxi"

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
DMA_ATTR_SKIP_CPU_SYNC_ = DMA_ATTR_SKIP_CPU_SYNC
DMA_ATTR_WEAK_ORDERING_ = DMA_ATTR_WEAK_ORDERING
DMA_ATTR_MMIO_ = DMA_ATTR_MMIO
IORING_CQE_F_MORE_ = IORING_CQE_F_MORE
IORING_CQE_F_32_ = IORING_CQE_F_32
IORING_ZCRX_AREA_SHIFT_ = IORING_ZCRX_AREA_SHIFT
IOMMU_MODES = {"none": NM_IOMMU_NONE, "passthrough": NM_IOMMU_PASSTHROUGH,
               "dma-iommu": NM_IOMMU_DMA}

STATE_NAMES = {NM_ST_NONE: "none", NM_ST_OWNED: "owned", NM_ST_CACHE: "cache",
               NM_ST_RING: "ring", NM_ST_PUTTING: "putting"}

TRACEPOINTS = {"page_pool:page_pool_release": TP_PAGE_POOL_RELEASE,
               "page_pool:page_pool_state_release": TP_PAGE_POOL_STATE_RELEASE,
               "page_pool:page_pool_state_hold": TP_PAGE_POOL_STATE_HOLD,
               "page_pool:page_pool_update_nid": TP_PAGE_POOL_UPDATE_NID,
               "napi:napi_poll": TP_NAPI_POLL,
               "skb:kfree_skb": TP_KFREE_SKB,
               "net:netif_receive_skb": TP_NETIF_RECEIVE_SKB,
               "netmem:sock_devmem_dontneed": TP_SOCK_DEVMEM_DONTNEED,
               "netmem:netdev_rx_queue_restart": TP_NETDEV_RX_QUEUE_RESTART}
TRACE_RING = NM_TRACE_RING
#: nm_trace_rec, field for field (netmem/_core.pxd).
TRACE_DTYPE = _np.dtype([("ts_ns", "<u8"), ("type", "<u4"), ("pool_id", "<u4"),
                         ("cpu", "<i4"), ("queue", "<i4"), ("netmem", "<u8"), ("a", "<i8"),
                         ("b", "<i8"), ("c", "<i8")])
assert TRACE_DTYPE.itemsize == sizeof(nm_trace_rec)

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
    NM_W_DMA_OVERFLOW: "dma_direct_map_phys(): device {pool}: DMA addr {netmem:#x}+{val} overflow "
                       "(dev_WARN_ONCE)",
    NM_W_DEVMEM_REF: "mp_dmabuf_devmem_release_page(): WARN_ON_ONCE(refcount != 1): net_iov "
                     "{netmem:#x} of page_pool {pool} has pp_ref_count {val}",
    NM_W_DEVMEM_FREE: "net_devmem_free_dmabuf(): WARN_ON(!gen_pool_has_addr()): net_iov "
                      "{netmem:#x}, DMA address {val:#x}",
    NM_W_DEVMEM_NOT_NIOV: "devmem: WARN_ON_ONCE: {netmem:#x} is not a page_pool net_iov "
                          "(a token or frag the pool does not own)",
    NM_W_ZCRX_NOT_NIOV: "io_pp_zc_release_netmem(): WARN_ON_ONCE(!netmem_is_net_iov()): "
                        "{netmem:#x} released to page_pool {pool}",
}

#: Records that are kernel log lines (printk), not WARNs: code -> format.
PRINTK = {NM_P_DAC_NOTICE: "device {pool}: Using {val}-bit DMA addresses"}


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

    def __cinit__(self, uint64_t memory, int numa_nodes=1, int cpus=2, int iommu_mode=0,
                  uint64_t swiotlb=0, *args, **kwargs):
        cdef uint64_t node_pages, npages, i, sw_pages, sw_start, sw_end
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
        m.trace_queue = -1
        self._pool_ids = {}
        m.npages = npages
        m.mem_bytes = npages << PAGE_SHIFT
        m.mem = <char *>_map_lazy(m.mem_bytes, True)
        m.pages = <nm_desc *>_map_lazy(npages * sizeof(nm_desc))
        nm_cover_table_init(&m.ram_cover, _map_lazy(nm_cover_bytes(m.mem_bytes), True),
                            m.mem_bytes)
        m.faults.room = <uint64_t>-1            # every fault is kept
        m.unmapped.room = NM_UNMAPPED_LOG_MAX
        m.max_niovs = 1 << 24           # 64 GiB of 4 KiB net_iovs, reserved, committed on use
        m.niovs = <nm_desc *>_map_lazy(m.max_niovs * sizeof(nm_desc), True)
        m.nr_niovs = 1                  # index 0 stays unused: ref 1 would look like NULL | NET_IOV
        m.max_areas = 1 << 22
        m.areas = <nm_area *>_map_lazy(m.max_areas * sizeof(nm_area), True)
        m.nr_nodes = numa_nodes
        m.nr_cpus = cpus
        for i in range(cpus):
            m.cpu_nid[i] = <int>(i * numa_nodes // cpus)
        for i in range(numa_nodes):
            _node_init(m, <int>i, i * node_pages, (i + 1) * node_pages)
        m.iommu_mode = iommu_mode
        # The first 1 MiB stays reserved, as x86 does (and pfn 0 can never be a netmem_ref).
        # The swiotlb bounce area, when there is one, is memblock_alloc_low()'s: top-down, so
        # right below 4 GiB (or the end of memory), within one node.
        sw_pages = swiotlb >> PAGE_SHIFT
        sw_end = min(npages, 1ULL << (32 - PAGE_SHIFT))
        sw_start = sw_end - sw_pages
        if swiotlb and (sw_pages > sw_end or sw_start < 256
                        or (sw_start // node_pages) != ((sw_end - 1) // node_pages)):
            raise NetmemError(EINVAL, "Machine: the swiotlb area must fit in one node, below "
                                      "4 GiB and above the first 1 MiB")
        for i in range(256):
            _reserve_page(m, i)
        for i in range(sw_start, sw_end if swiotlb else sw_start):
            _reserve_page(m, i)
        if swiotlb and swiotlb_init(m, sw_start << PAGE_SHIFT, swiotlb) < 0:
            raise MemoryError()
        for i in range(numa_nodes):
            _node_boot_free(m, <int>i, 256, sw_start if swiotlb else 0, sw_end if swiotlb else 0)
        nm_net_init(m)

    def __dealloc__(self):
        cdef nm_machine *m = self.m
        if m == NULL:
            return
        if m.mem != NULL:
            munmap(m.mem, m.mem_bytes)
        if m.pages != NULL:
            munmap(m.pages, m.npages * sizeof(nm_desc))
        if m.ram_cover.chunk != NULL:
            munmap(m.ram_cover.chunk, nm_cover_bytes(m.mem_bytes))
        if m.niovs != NULL:
            munmap(m.niovs, m.max_niovs * sizeof(nm_desc))
        if m.areas != NULL:
            munmap(m.areas, m.max_areas * sizeof(nm_area))
        free(m.trace_buf)
        free(m.faults.buf)
        free(m.unmapped.buf)
        nm_net_free(m.net)
        nm_bar_table_free(m)
        swiotlb_exit(m)
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
        return (self._pool_ids.get(<size_t>d.pp, 0) if d.pp != NULL else 0, d.pp_ref_count,
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

    def _niov_area_alloc(self, uint64_t n, uint32_t area_id, int niov_type,
                         uint64_t base_virtual=0, uint32_t owner_id=0,
                         uint32_t niov_shift=PAGE_SHIFT):
        """Reserve ``n`` net_iov descriptors of ``1 << niov_shift`` bytes for area
        ``area_id``; returns the first global index. Departs: the index space is not reused
        when an area goes (the kernel kvfree()s its niov array), so a machine has 2^24 net_iovs
        (64 GiB of 4 KiB) over its life."""
        cdef uint64_t base = self.m.nr_niovs, i
        cdef nm_desc *d
        cdef nm_area *a
        if n == 0 or base + n > self.m.max_niovs:
            raise NetmemError(ENOMEM, f"net_iov area of {n}: the machine's {self.m.max_niovs} "
                                      "net_iov descriptors are used up")
        if area_id == 0 or area_id >= self.m.max_areas:
            raise NetmemError(ENOMEM, f"net_iov area id {area_id}: the machine's "
                                      f"{self.m.max_areas} areas are used up")
        for i in range(base, base + n):
            d = &self.m.niovs[i]
            memset(d, 0, sizeof(nm_desc))
            d.refcount = 1
            d.owner = area_id
            d.order = niov_type
        a = &self.m.areas[area_id]
        a.niov_base = base
        a.num_niovs = n
        a.base_virtual = base_virtual
        a.type = niov_type
        a.owner_id = owner_id
        a.niov_shift = niov_shift
        self.m.nr_niovs = base + n
        return base

    def _niov_area_set_dma_addrs(self, uint64_t base, uint64_t n, uint64_t dma_addr):
        """``net_mp_niov_set_dma_addr()`` for net_iovs ``[base, base + n)``: a net_iov's size
        apart from ``dma_addr`` (a devmem chunk's ``base_dma_addr + (idx << niov_shift)``)."""
        cdef uint64_t i
        cdef uint32_t shift
        if base == 0 or base + n > self.m.nr_niovs:
            raise NetmemError(EINVAL, f"net_mp_niov_set_dma_addr: net_iovs [{base}, {base + n}) "
                                      "are not an area's")
        shift = self.m.areas[self.m.niovs[base].owner].niov_shift
        for i in range(n):
            self.m.niovs[base + i].dma_addr = dma_addr + (i << shift)

    def _niov_area_busy(self, uint64_t base, uint64_t n):
        """How many of the net_iovs ``[base, base + n)`` a page pool holds."""
        cdef uint64_t i, busy = 0
        for i in range(base, base + n):
            busy += self.m.niovs[i].pp != NULL
        return busy

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
        """Record the tracepoints of ``mask``; the ring is allocated when one is first on."""
        if mask and self.m.trace_buf == NULL:
            self._trace_ring(NM_TRACE_RING)
        self.m.trace_mask = mask

    def _trace_ring(self, uint64_t records):
        """A new, empty ring of ``records`` records (what the old one held is dropped)."""
        cdef void *buf
        if records == 0:
            raise NetmemError(EINVAL, "trace ring: at least one record")
        buf = malloc(records * sizeof(nm_trace_rec))
        if buf == NULL:
            raise MemoryError()
        free(self.m.trace_buf)
        self.m.trace_buf = <nm_trace_rec *>buf
        self.m.trace_cap = records
        self.m.trace_n = 0
        self.m.trace_dropped = 0

    def _trace_take(self):
        """The records so far (a ``TRACE_DTYPE`` array, oldest first) and how many a full ring
        dropped since the last take; the ring is emptied."""
        cdef uint64_t n = self.m.trace_n
        cdef cnp.ndarray out = _np.empty(n, TRACE_DTYPE)
        if n:
            memcpy(cnp.PyArray_DATA(out), self.m.trace_buf, n * sizeof(nm_trace_rec))
        dropped = self.m.trace_dropped
        self.m.trace_n = 0
        self.m.trace_dropped = 0
        return out, dropped

    def _trace_record(self, uint32_t tp, uint32_t pool_id, uint64_t netmem, int64_t a,
                      int64_t b, int64_t c):
        """A tracepoint hit in Python (``netdev_rx_queue_restart()``), recorded as in C."""
        nm_trace(self.m, tp, pool_id, netmem, a, b, c)

    def _take_warnings(self):
        cdef uint32_t i
        out = [(self.m.warn[i].code, self.m.warn[i].pool_id, self.m.warn[i].netmem,
                self.m.warn[i].val) for i in range(self.m.nr_warn)]
        lost = self.m.nr_warn_lost
        self.m.nr_warn = 0
        self.m.nr_warn_lost = 0
        return out, lost

    def _take_faults(self):
        """The IOMMU faults recorded since the last call: ``(time_ns, device id, address,
        write)``."""
        return [r[:3] + r[4:] for r in _take_dma_log(&self.m.faults)]

    def _take_unmapped(self):
        """The unmapped accesses recorded since the last call: ``(time_ns, device id, address,
        length, write)``."""
        return _take_dma_log(&self.m.unmapped)

    def _dma_stats(self):
        cdef nm_dma_stats *s = &self.m.dma_stats
        return {"maps": s.maps, "unmaps": s.unmaps, "iotlb_syncs": s.iotlb_syncs,
                "fq_flushes": s.fq_flushes, "rcache_hits": s.rcache_hits,
                "rcache_misses": s.rcache_misses, "bounces": s.bounces, "faults": s.faults,
                "unmapped_accesses": s.unmapped_accesses}

    def _swiotlb(self):
        """(start, slots, used slots) of the bounce area; slots 0 when there is none."""
        return self.m.swiotlb.start, self.m.swiotlb.nslots, self.m.swiotlb.used

    # -- PCI BAR memory (the BAR table of dma.pxi) -----------------------------------------------

    def _bar_add(self, uint64_t start, uint64_t size, uint32_t dev_id, int bar):
        """Give the BAR ``bar`` of device ``dev_id`` at ``[start, start + size)`` its memory (a
        lazily committed mapping) and enter it in the table device accesses search."""
        cdef char *mem
        cdef void *cover
        cdef int err
        if size == 0 or start + size < start or start < self.m.mem_bytes:
            raise NetmemError(EINVAL, f"pci: BAR at {start:#x}+{size:#x} overlaps RAM or wraps")
        mem = <char *>_map_lazy(size, True)
        cover = _map_lazy(nm_cover_bytes(size), True)
        err = nm_bar_add(self.m, start, size, mem, cover, dev_id, bar)
        if err:
            munmap(mem, size)
            munmap(cover, nm_cover_bytes(size))
            raise NetmemError(-err, f"pci: BAR at {start:#x}+{size:#x} overlaps another")

    def _bar_set_routes(self, uint64_t start, object dev_ids):
        """The devices (ids) that reach the BAR at ``start`` by bus address, untranslated: those
        a switch connects to its owner with no ACS redirect on the way. Others use their IOMMU."""
        cdef nm_bar *b = nm_bar_find(self.m, start)
        cdef uint32_t w
        if b == NULL or b.start != start:
            raise NetmemError(EINVAL, f"pci: no BAR at {start:#x}")
        for w in range(b.bus_route_words):
            b.bus_route[w] = 0
        for dev_id in dev_ids:
            if nm_bar_set_route(b, <uint32_t>dev_id, True):
                raise NetmemError(ENOMEM, "pci: out of memory for the BAR's routes")

    def _bar_table(self):
        """The BAR table, in address order: ``(start, size, owner device id, bar, [device ids
        routed by bus address])``."""
        cdef uint32_t i, d
        cdef nm_bar *b
        out = []
        for i in range(self.m.nr_bars):
            b = &self.m.bars[i]
            out.append((b.start, b.end - b.start, b.dev_id, b.bar,
                        [d for d in range(b.bus_route_words * 64) if nm_bar_bus_route(b, d)]))
        return out

    def _phys_buffer(self, uint64_t phys, uint64_t n):
        """The CPU's view of ``[phys, phys + n)`` in RAM or in one BAR, as a writable
        memoryview; None when ``phys`` is in neither. A range that runs past the end of its
        region is EINVAL."""
        cdef _PageBuffer buf
        cdef char *p = nm_phys_to_ptr(self.m, phys, n)
        if p == NULL:
            if nm_phys_to_ptr(self.m, phys, 1) == NULL:
                return None
            raise NetmemError(EINVAL, f"[{phys:#x}, +{n:#x}) runs past the end of its region at "
                                      f"{__phys_end(self.m, phys):#x}")
        buf = _PageBuffer.__new__(_PageBuffer)
        buf.machine = self
        buf.ptr = p
        buf.size = <Py_ssize_t>n
        return memoryview(buf)

    def _phys_gather(self, const uint64_t[::1] phys, const uint64_t[::1] sizes, uint8_t[::1] out):
        """Copy ``[phys[i], phys[i] + sizes[i])`` for every i, back to back, into ``out`` (the
        CPU's view: RAM or BAR memory alike). Every range is checked before a byte moves:
        EINVAL for one outside RAM and the BARs or running past its region, or for an ``out``
        too small. Returns the bytes copied."""
        cdef Py_ssize_t i, n = phys.shape[0]
        cdef uint64_t pos = 0, total = 0
        if sizes.shape[0] != n:
            raise NetmemError(EINVAL, "phys_gather: phys and sizes differ in length")
        for i in range(n):
            if sizes[i] and nm_phys_to_ptr(self.m, phys[i], sizes[i]) == NULL:
                raise NetmemError(EINVAL, f"phys_gather: [{phys[i]:#x}, +{sizes[i]:#x}) is not "
                                          f"in RAM or one BAR")
            total += sizes[i]
        if total > <uint64_t>out.shape[0]:
            raise NetmemError(EINVAL, f"phys_gather: {total} bytes do not fit in {out.shape[0]}")
        with nogil:
            for i in range(n):
                if sizes[i]:
                    memcpy(&out[pos], nm_phys_to_ptr(self.m, phys[i], sizes[i]), sizes[i])
                    pos += sizes[i]
        return pos

    @property
    def iommu_mode(self):
        return ("none", "passthrough", "dma-iommu")[self.m.iommu_mode]

    def _system_recycle_stats(self):
        return _recycle_stats_tuple(&self.m.system_recycle_stats)


cdef list _take_dma_log(nm_dma_log *log):
    """Empty a log of device accesses into ``(time_ns, device id, address, length, write)``."""
    cdef uint64_t i
    out = [(log.buf[i].ts_ns, log.buf[i].dev_id, log.buf[i].addr, log.buf[i].len,
            bool(log.buf[i].write)) for i in range(log.n)]
    log.n = 0
    return out


cdef void *_map_lazy(uint64_t size, bint huge=False) except NULL:
    """Anonymous, lazily committed memory: untouched pages cost nothing.

    ``huge``: the arena is touched densely, from its start (memory the buddy allocator hands
    out low blocks first, tables filled in index order), so it asks for transparent huge pages
    (``MADV_HUGEPAGE``; THP is often enabled for ``madvise`` only): a frame's accesses spread
    over the buffers, descriptors, skbs and coverage entries of tens of MiB, which with 4 KiB
    pages miss the TLB on every frame (0.84x the replay's time with, docs/benchmarks.md). Not
    for a table touched sparsely, where each touch would commit 2 MiB (the page descriptors:
    boot writes a free-block head every 64 KiB of them). The advice is a hint: a kernel
    without THP answers EINVAL and the memory stays in 4 KiB pages, which is only slower."""
    cdef void *p = mmap(NULL, size, PROT_READ | PROT_WRITE,
                        MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0)
    if p == MAP_FAILED:
        raise MemoryError(f"mmap of {size} bytes failed")
    if huge:
        madvise(p, size, MADV_HUGEPAGE)
    return p


cdef inline void _reserve_page(nm_machine *m, uint64_t pfn) noexcept nogil:
    m.pages[pfn].flags = NM_PG_RESERVED
    m.pages[pfn].refcount = 1


cdef void _node_boot_free(nm_machine *m, int nid, uint64_t low, uint64_t hole_start,
                          uint64_t hole_end) noexcept nogil:
    """Hand a node's memory to its buddy allocator, less the first ``low`` pfns of the machine
    and the hole [hole_start, hole_end) (memblock reservations)."""
    cdef nm_node *n = &m.nodes[nid]
    cdef uint64_t start = max(low, n.start_pfn), end = n.end_pfn
    cdef uint64_t hs = max(start, min(hole_start, end)), he = max(start, min(hole_end, end))
    if hole_end <= hole_start or he <= hs:
        hs = he = end
    nm_free_range_boot(m, nid, start, hs)
    nm_free_range_boot(m, nid, he, end)
    n.managed_pages = (hs - start) + (end - he)


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
    """The compiled half of a DMA device (``struct device``): mask, coherence, segment limits,
    and under dma-iommu its own IOMMU domain."""

    def __cinit__(self, CoreMachine machine, int dma_mask_bits=64, bint coherent=True,
                  bint is_pci=True, *args, **kwargs):
        if dma_mask_bits < 12 or dma_mask_bits > 64:
            raise NetmemError(EIO, f"dma_set_mask: {dma_mask_bits} bits is not a DMA mask")
        self.machine = machine
        self.dev.m = machine.m
        self.dev.dma_mask = _mask_of(dma_mask_bits)
        self.dev.coherent = coherent
        self.dev.dma_skip_sync = coherent
        self.dev.is_pci = is_pci
        self.dev.max_seg_size = 65536           # no dma_parms: 64 KiB
        self.dev.seg_boundary_mask = 0xffffffffffffffff
        self.dev.id = machine._register_device(self)
        if machine.m.iommu_mode == NM_IOMMU_DMA:
            self.dev.domain = iommu_domain_alloc(machine.m, not machine._iommu_strict, is_pci)
            if self.dev.domain == NULL:
                raise NetmemError(ENOMEM, "iommu_dma_init_domain: out of memory")

    def __dealloc__(self):
        if self.dev.domain != NULL:
            iommu_domain_free(<nm_domain *>self.dev.domain)
            self.dev.domain = NULL

    @property
    def id(self):
        return self.dev.id

    @property
    def dma_mask(self):
        return self.dev.dma_mask

    @property
    def coherent(self):
        return bool(self.dev.coherent)

    @property
    def nr_mapped(self):
        """Live streaming mappings of this device (0 when every mapping is undone)."""
        return self.dev.nr_mapped

    @property
    def nr_map_errors(self):
        return self.dev.nr_map_errors

    @property
    def max_seg_size(self):
        return self.dev.max_seg_size

    @property
    def seg_boundary_mask(self):
        return self.dev.seg_boundary_mask

    def dma_set_mask(self, int bits):
        """Models ``dma_set_mask()``: -EIO for a mask the platform cannot honour."""
        if bits < 12 or bits > 64:
            raise NetmemError(EIO, f"dma_set_mask: {bits} bits is not a DMA mask")
        self.dev.dma_mask = _mask_of(bits)

    def dma_set_max_seg_size(self, uint64_t size):
        """Models ``dma_set_max_seg_size()``."""
        if size == 0:
            raise NetmemError(EINVAL, "dma_set_max_seg_size: size 0")
        self.dev.max_seg_size = size

    def dma_set_seg_boundary(self, uint64_t mask):
        """Models ``dma_set_seg_boundary()``: a mask of the form 2^n - 1."""
        if mask & (mask + 1):
            raise NetmemError(EINVAL, f"dma_set_seg_boundary: {mask:#x} is not 2^n - 1")
        self.dev.seg_boundary_mask = mask

    def dma_dev_need_sync(self):
        """Models ``dma_dev_need_sync()``: false for a coherent device until swiotlb is used."""
        return not self.dev.dma_skip_sync

    def _map(self, uint64_t phys, uint64_t size, int dir, unsigned long attrs):
        cdef uint64_t dma = nm_dma_map_phys(&self.dev, phys, size, dir, attrs)
        if self.dev.m.nr_warn:
            self.machine._flush_warnings()
        return dma

    def _unmap(self, uint64_t addr, uint64_t size, int dir, unsigned long attrs):
        nm_dma_unmap_phys(&self.dev, addr, size, dir, attrs)

    def _cover_bus(self, uint64_t addr, uint64_t size, bint map):
        """Count a p2pdma bus-address segment (no IOMMU mapping, so nothing else counts it) as
        a mapping of the device while it lives (``map``), or its undoing."""
        nm_dma_cover_range(&self.dev, addr, size, map)

    def _sync(self, uint64_t addr, uint64_t size, int dir, bint for_cpu):
        if for_cpu:
            nm_dma_sync_for_cpu(&self.dev, addr, size, dir)
        else:
            nm_dma_sync_for_device(&self.dev, addr, size, dir)

    def _is_swiotlb(self, uint64_t addr):
        return is_swiotlb_buffer(self.dev.m, addr)

    def _access(self, uint64_t addr, buf, bint write):
        """Device access of ``len(buf)`` bytes (``nm_dev_write``/``nm_dev_read``): 0, or -EFAULT
        with the fault recorded."""
        cdef const unsigned char[::1] src
        cdef unsigned char[::1] dst
        if write:
            src = buf
            return nm_dev_write(&self.dev, addr, <const char *>&src[0] if len(src) else NULL,
                                len(src))
        dst = buf
        return nm_dev_read(&self.dev, addr, <char *>&dst[0] if len(dst) else NULL, len(dst))

    def _translate(self, uint64_t addr, bint write):
        """The physical address a device access at ``addr`` reaches, or None (a fault)."""
        cdef uint64_t phys
        if self.dev.domain == NULL:
            return addr if dma_capable(&self.dev, addr, 1) else None
        if iommu_iova_to_phys(&self.dev, addr, write, &phys):
            return None
        return phys

    def _fq_deadline(self):
        """When the domain's next deferred work runs (flush-queue timer, rcache depot work), in
        virtual ns; 0 when none is pending."""
        cdef nm_domain *d = <nm_domain *>self.dev.domain
        cdef uint64_t when = 0
        cdef int i
        if d == NULL:
            return 0
        if d.lazy and d.fq.fq_timer_on:
            when = d.fq.fq_timer_expires_ns
        if d.depot_deadline_ns == 0:
            for i in range(6):
                if d.iovad.rcaches[i].work_pending:
                    d.depot_deadline_ns = self.dev.m.clock_ns + 100 * 1000000  # IOVA_DEPOT_DELAY
                    break
        if d.depot_deadline_ns and (not when or d.depot_deadline_ns < when):
            when = d.depot_deadline_ns
        return when

    def _fq_timeout(self):
        """Run the domain's due deferred work: ``fq_flush_timeout()`` (flush the IOTLB, free
        every queued IOVA) and ``iova_depot_work_func()``."""
        cdef nm_domain *d = <nm_domain *>self.dev.domain
        cdef uint64_t now = self.dev.m.clock_ns
        if d.lazy and d.fq.fq_timer_on and d.fq.fq_timer_expires_ns <= now:
            iommu_dma_fq_timeout(&d.fq, &d.iovad, now)
        if d.depot_deadline_ns and d.depot_deadline_ns <= now:
            d.depot_deadline_ns = 0
            iova_depot_trim(&d.iovad, self.dev.m.nr_cpus)

    # -- IOMMU primitives for the Python-level API (scatterlists, the two-step API) -----------

    def _iova_alloc(self, uint64_t size):
        """``iommu_dma_alloc_iova()`` of a granule-aligned size: the IOVA or 0."""
        cdef uint64_t iova = iommu_dma_alloc_iova(&self.dev, _dev_domain(self), size,
                                                  self.dev.dma_mask)
        if self.dev.m.nr_warn:
            self.machine._flush_warnings()
        return iova

    def _iova_free(self, uint64_t iova, uint64_t size, bint queued=False):
        """``iommu_dma_free_iova()``: ``queued`` is ``gather && gather->queued`` (the flush
        queue, lazy mode only); False is a NULL gather (``free_iova_fast()`` at once)."""
        cdef nm_domain *d = _dev_domain(self)
        iommu_dma_free_iova(&self.dev, d, iova, size, queued and d.lazy)

    def _iommu_map(self, uint64_t iova, uint64_t phys, uint64_t size, int dir, bint sync):
        """``iommu_map()`` (``iommu_map_nosync()`` without ``sync``): 0 or -ENOMEM/-EEXIST."""
        return iommu_map(&self.dev, _dev_domain(self), iova, phys, size, dma_info_to_prot(dir),
                         sync)

    def _iommu_unmap(self, uint64_t iova, uint64_t size, bint sync):
        """``iommu_unmap_fast()`` plus, with ``sync``, ``iommu_iotlb_sync()``: bytes unmapped."""
        cdef uint64_t done = iommu_unmap(_dev_domain(self), iova, size)
        if sync:
            self.dev.m.dma_stats.iotlb_syncs += 1
        return done

    def _iotlb_sync(self):
        """``iommu_sync_map()``: one IOTLB sync."""
        _dev_domain(self)
        self.dev.m.dma_stats.iotlb_syncs += 1

    def _count_map(self, int maps, int unmaps, int live):
        """Count mappings made or undone by the Python-level API (scatterlists, the two-step
        API); ``live`` moves ``nr_mapped`` (streaming mappings only)."""
        self.dev.m.dma_stats.maps += maps
        self.dev.m.dma_stats.unmaps += unmaps
        self.dev.nr_mapped += live

    def _domain_stats(self):
        """(rcache_hits, rcache_misses, fq_flushes, iotlb_syncs, live PTEs) of the domain."""
        cdef nm_domain *d = <nm_domain *>self.dev.domain
        if d == NULL:
            return (0, 0, 0, 0, 0)
        return (d.iovad.rcache_hits, d.iovad.rcache_misses,
                d.fq.fq_flushes if d.lazy else 0, d.fq.iotlb_syncs if d.lazy else 0, d.live)


cdef nm_domain *_dev_domain(CoreDevice dev) except NULL:
    if dev.dev.domain == NULL:
        raise NetmemError(EOPNOTSUPP, "not a dma-iommu device")
    return <nm_domain *>dev.dev.domain


cdef uint64_t _mask_of(int bits):
    return 0xffffffffffffffff if bits == 64 else ((<uint64_t>1 << bits) - 1)


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
include "rx_facade.pxi"
include "receiver.pxi"
include "closed_loop.pxi"
