# CorePagePool: the compiled half of netmem.PagePool, the Python boundary of page_pool.pxi.
#
# Each method checks its arguments, runs one C function of page_pool.pxi and raises what the C
# side recorded (kernel WARNs as NetmemWarning, a Python provider's exception as itself).


#: The C integer types of the facade's arguments and of struct page_pool_params: their ranges.
_C_INT_RANGES = {"unsigned int": (0, 0xffffffff), "int": (-(1 << 31), (1 << 31) - 1),
                 "unsigned long": (0, (1 << 64) - 1)}


cpdef object _c_int(object o, str what, str ctype):
    """A Python (or numpy) integer that fits the C type ``ctype`` (a key of _C_INT_RANGES), as
    a Python int; anything else is EINVAL naming ``what`` (``"fn: argument"``) and the check,
    where Cython's own conversion would raise OverflowError or TypeError."""
    lo, hi = _C_INT_RANGES[ctype]
    try:
        v = o.__index__()
    except (AttributeError, TypeError):
        raise NetmemError(EINVAL, f"{what} {o!r} is not an integer") from None
    if v < lo:
        raise NetmemError(EINVAL, f"{what} {v} is negative" if lo == 0 else
                                  f"{what} {v} is below the {ctype} range")
    if v > hi:
        raise NetmemError(EINVAL, f"{what} {v} does not fit an {ctype}")
    return v


cdef unsigned long _ulong(object o, str what) except? 0:
    """An unsigned long argument; anything else is EINVAL (see _c_int)."""
    return <unsigned long>_c_int(o, what, "unsigned long")


cdef inline uint32_t _u32(object o, str what) except? 0:
    """An unsigned int argument, a Python int without a detour; anything else is EINVAL (see
    _c_int)."""
    cdef unsigned long long v
    if likely(PyLong_CheckExact(o)):
        v = PyLong_AsUnsignedLongLong(o)
        if likely(v <= 0xffffffff):
            return <uint32_t>v
        if PyErr_Occurred() != NULL:
            PyErr_Clear()
    return <uint32_t>_c_int(o, what, "unsigned int")


cdef inline uint32_t _sync_size(object o) except? 0:
    """``dma_sync_size``, an unsigned int where -1 (the default) means the whole buffer."""
    cdef long long v
    if likely(PyLong_CheckExact(o)):
        v = PyLong_AsLongLong(o)
        if likely(-1 <= v <= 0xffffffff) and (v != -1 or PyErr_Occurred() == NULL):
            return <uint32_t>v
        if PyErr_Occurred() != NULL:
            PyErr_Clear()
    if hasattr(type(o), "__index__") and o.__index__() == -1:     # a numpy -1
        return <uint32_t>-1
    return _u32(o, "page_pool_put_netmem: dma_sync_size")


cdef netmem_ref _ref_slow(object o) except? 0:
    try:
        return <netmem_ref>o
    except (OverflowError, TypeError):
        raise NetmemError(EINVAL, f"{o!r} is not a netmem_ref") from None


cdef inline netmem_ref _ref(object o) except? 0:
    """A netmem_ref from a Python int (or numpy integer); anything else is EINVAL."""
    cdef unsigned long long v
    if likely(PyLong_CheckExact(o)):
        v = PyLong_AsUnsignedLongLong(o)
        if likely(v != <unsigned long long>-1) or PyErr_Occurred() == NULL:
            return v
        PyErr_Clear()
        raise NetmemError(EINVAL, f"{o!r} is not a netmem_ref")
    return _ref_slow(o)


cdef class CorePagePool:

    def __cinit__(self, *args, **kwargs):
        self.pool = NULL
        self._mp_error = None

    def __dealloc__(self):
        cdef nm_pool *pool = self.pool
        if pool == NULL:
            return
        ptr_ring_cleanup(&pool.ring)
        free(pool.dma_mapped)
        free(pool.dma_free_ids)
        free(pool)
        self.pool = NULL

    def _init(self, CoreMachine machine, uint32_t order, uint32_t pool_size, int nid,
              CoreDevice dev, CoreNapi napi, int dma_dir, uint32_t max_len, uint32_t offset,
              uint32_t flags, int cpuid, CoreMemoryProvider provider):
        """Models ``page_pool_init()`` up to the provider's init op, which the facade calls."""
        cdef nm_pool *pool
        cdef int ring_qsize = PP_RING_DEFAULT
        if flags & ~PP_FLAG_ALL:
            raise NetmemError(EINVAL, f"page_pool_init: flags {flags:#x} outside PP_FLAG_ALL")
        if pool_size:
            ring_qsize = min(pool_size, PP_RING_MAX)
        if nid < NUMA_NO_NODE or nid >= machine.m.nr_nodes:
            raise NetmemError(EINVAL, f"page_pool_init: no NUMA node {nid}")
        if cpuid < -1 or cpuid >= machine.m.nr_cpus:
            raise NetmemError(EINVAL, f"page_pool_create_percpu: no CPU {cpuid}")
        if flags & PP_FLAG_DMA_MAP:
            if dma_dir != DMA_FROM_DEVICE and dma_dir != DMA_BIDIRECTIONAL:
                raise NetmemError(EINVAL, "page_pool_init: PP_FLAG_DMA_MAP needs dma_dir "
                                          "DMA_FROM_DEVICE or DMA_BIDIRECTIONAL")
            if dev is None:
                raise NetmemError(EINVAL, "page_pool_init: PP_FLAG_DMA_MAP needs params.dev")
        if flags & PP_FLAG_DMA_SYNC_DEV:
            if not flags & PP_FLAG_DMA_MAP:
                raise NetmemError(EINVAL, "page_pool_init: PP_FLAG_DMA_SYNC_DEV needs "
                                          "PP_FLAG_DMA_MAP")
            if max_len == 0:
                raise NetmemError(EINVAL, "page_pool_init: PP_FLAG_DMA_SYNC_DEV needs max_len")
        if provider is None and order > MAX_PAGE_ORDER:
            raise NetmemError(EINVAL, f"page_pool_init: order {order} > MAX_PAGE_ORDER")
        pool = <nm_pool *>calloc(1, sizeof(nm_pool))
        if pool == NULL:
            raise NetmemError(ENOMEM, "page_pool_create: out of memory")
        if ptr_ring_init(&pool.ring, ring_qsize) < 0:
            free(pool)
            raise NetmemError(ENOMEM, "page_pool_init: ptr_ring_init failed")
        pool.m = machine.m
        pool.pages = machine.m.pages
        pool.niovs = machine.m.niovs
        pool.order = order
        pool.pool_size = pool_size
        pool.nid = nid
        pool.dev = &dev.dev if dev is not None else NULL
        pool.napi = &napi.napi if napi is not None else NULL
        pool.dma_dir = dma_dir
        pool.max_len = max_len
        pool.offset = offset
        pool.flags = flags
        pool.cpuid = cpuid
        pool.dma_sync_for_cpu = True
        pool.alloc_cache_limit = PP_ALLOC_CACHE_SIZE
        pool.dma_map = (flags & PP_FLAG_DMA_MAP) != 0
        pool.dma_sync = (flags & PP_FLAG_DMA_SYNC_DEV) != 0
        pool.system = (flags & PP_FLAG_SYSTEM_POOL) != 0
        pool.recycle_stats = &machine.m.system_recycle_stats if pool.system \
            else &pool.own_recycle_stats
        pool.user_cnt = 1
        pool.pyobj = <PyObject *>self
        self.pool = pool
        self.machine = machine
        self._dev = dev
        self._napi = napi
        if provider is not None:
            if not pool.dma_map or not pool.dma_sync:
                raise NetmemError(EOPNOTSUPP, "page_pool_init: a memory provider needs "
                                              "PP_FLAG_DMA_MAP and PP_FLAG_DMA_SYNC_DEV")
            self._provider = provider
            pool.mp_py = <PyObject *>provider
            if provider.c_ops != NULL:
                pool.mp_ops = provider.c_ops
                pool.mp_priv = provider.c_priv
            else:
                pool.mp_ops = &mp_py_ops

    def _iova_window_init(self, uint32_t slots):
        """Reserve the pool's IOVA window; False where the two-step API is not available."""
        cdef int err = pp_iova_window_init(self.pool, slots)
        if err == -ENOMEM:
            raise NetmemError(ENOMEM, f"page_pool: no IOVA range for a window of {slots} pages")
        return err == 0

    @property
    def iova_window(self):
        """(DMA address, slots, free slots) of the pool's IOVA window, or None."""
        if not self.pool.win_slots:
            return None
        return self.pool.win_addr, self.pool.win_slots, self.pool.win_free_n

    def _list(self, uint32_t pool_id):
        self.pool.id = pool_id
        self.machine._pool_ids[<size_t>self.pool] = pool_id

    # -- the boundary ----------------------------------------------------------------------------

    cdef int _check_alive(self) except -1:
        if self.pool == NULL:
            raise NetmemError(EINVAL, "page_pool: not created")
        return 0

    cdef int _check_ref(self, netmem_ref netmem) except -1:
        self._check_alive()
        if not netmem_valid(self.pool.m, netmem):
            raise NetmemError(EINVAL, f"page_pool {self.pool.id}: {netmem:#x} is not a buffer "
                                      "of this machine")
        return 0

    def _raise_pending(self):
        """Raise what the C side recorded: a provider's exception, then kernel WARNs. In a
        debug build (``make debug``), check the pool's invariants first."""
        if NETMEM_DEBUG:
            self._check_invariants()
        err = self._mp_error
        self._mp_error = None
        if self.pool.m.nr_warn:
            self.machine._flush_warnings()
        if err is not None:
            raise err

    def alloc_netmem(self):
        """Models ``page_pool_alloc_netmems()``: one buffer, or 0 when none can be had."""
        cdef nm_pool *pool = self.pool
        cdef netmem_ref netmem
        if unlikely(pool == NULL or pool.user_cnt == 0):
            return self._alloc_dead()
        netmem = page_pool_alloc_netmems(pool)
        if unlikely(NETMEM_DEBUG or pool.m.nr_warn != 0 or self._mp_error is not None):
            self._raise_pending()
        return netmem

    def _alloc_dead(self):
        self._check_alive()
        self.machine._warn(f"page_pool_alloc_netmems: page_pool {self.pool.id} is destroyed "
                           "(use after page_pool_destroy())")
        return 0

    def alloc_netmems_bulk(self, object n, cnp.ndarray out=None):
        """``n`` calls of ``page_pool_alloc_netmems()`` into a uint64 array (``out`` reuses
        the caller's). Stops at the first failure: the result is ``out[:k]`` for k buffers
        (``out`` itself when all ``n`` came)."""
        cdef nm_pool *pool = self.pool
        cdef netmem_ref *buf
        cdef netmem_ref netmem
        cdef Py_ssize_t k = 0
        cdef Py_ssize_t count = <Py_ssize_t>_c_int(n, "alloc_netmems_bulk: n", "int")
        if count < 0:
            raise NetmemError(EINVAL, "alloc_netmems_bulk: n < 0")
        if out is None:
            out = cnp.PyArray_EMPTY(1, [count], cnp.NPY_UINT64, 0)
        elif (cnp.PyArray_TYPE(out) != cnp.NPY_UINT64 or cnp.PyArray_NDIM(out) != 1
              or not cnp.PyArray_IS_C_CONTIGUOUS(out) or cnp.PyArray_DIMS(out)[0] < count
              or not cnp.PyArray_ISWRITEABLE(out)):
            raise NetmemError(EINVAL, "alloc_netmems_bulk: out must be a writable, contiguous "
                                      "uint64 array of at least n entries")
        if unlikely(pool == NULL or pool.user_cnt == 0):
            self._alloc_dead()
            return out[:0]
        buf = <netmem_ref *>cnp.PyArray_DATA(out)
        while k < count:
            netmem = page_pool_alloc_netmems(pool)
            if unlikely(not netmem):
                break
            buf[k] = netmem
            k += 1
        if unlikely(self._mp_error is not None):
            # Departs (the kernel has no bulk netmem alloc): the buffers this call got before the
            # provider failed go back to the pool, so raising loses none of them.
            while k:
                k -= 1
                page_pool_put_netmem(pool, buf[k], <uint32_t>-1, True)
        if unlikely(NETMEM_DEBUG or pool.m.nr_warn != 0 or self._mp_error is not None):
            self._raise_pending()
        if k == cnp.PyArray_DIMS(out)[0]:
            return out
        return out[:k]

    def put_netmem(self, object ref, object dma_sync_size=-1, bint allow_direct=False):
        """Models ``page_pool_put_netmem()``: drop one pp reference; the last one recycles
        (alloc cache when ``allow_direct`` or NAPI-local, else the ptr_ring) or releases."""
        cdef netmem_ref netmem = _ref(ref)
        cdef nm_pool *pool = self.pool
        if unlikely(pool == NULL or not netmem_valid(pool.m, netmem)):
            self._check_ref(netmem)
        page_pool_put_netmem(pool, netmem, _sync_size(dma_sync_size), allow_direct)
        if unlikely(NETMEM_DEBUG or pool.m.nr_warn != 0 or self._mp_error is not None):
            self._raise_pending()

    def put_full_netmem(self, object ref, bint allow_direct=False):
        """Models ``page_pool_put_full_netmem()`` (dma_sync_size -1)."""
        cdef netmem_ref netmem = _ref(ref)
        cdef nm_pool *pool = self.pool
        if unlikely(pool == NULL or not netmem_valid(pool.m, netmem)):
            self._check_ref(netmem)
        page_pool_put_netmem(pool, netmem, <uint32_t>-1, allow_direct)
        if unlikely(NETMEM_DEBUG or pool.m.nr_warn != 0 or self._mp_error is not None):
            self._raise_pending()

    def recycle_direct(self, object ref):
        """Models ``page_pool_recycle_direct_netmem()``: a full put with allow_direct."""
        cdef netmem_ref netmem = _ref(ref)
        cdef nm_pool *pool = self.pool
        if unlikely(pool == NULL or not netmem_valid(pool.m, netmem)):
            self._check_ref(netmem)
        page_pool_put_netmem(pool, netmem, <uint32_t>-1, True)
        if unlikely(NETMEM_DEBUG or pool.m.nr_warn != 0 or self._mp_error is not None):
            self._raise_pending()

    def alloc_frag(self, object size):
        """Models ``page_pool_alloc_frag_netmem()``: ``(ref, offset)``, ``(0, 0)`` on failure."""
        cdef uint32_t offset = 0
        cdef uint32_t sz = _u32(size, "page_pool_alloc_frag: size")
        cdef netmem_ref netmem
        self._check_alive()
        if self.pool.user_cnt == 0:
            return self._alloc_dead(), 0
        netmem = page_pool_alloc_frag_netmem(self.pool, &offset, sz)
        self._raise_pending()
        if not netmem:
            return 0, 0
        return netmem, offset

    def alloc(self, object size):
        """Models ``page_pool_alloc_netmem()``: ``(ref, offset, size)`` with the size the
        buffer really got (a whole page, or a frag stretched to the page end)."""
        cdef uint32_t offset = 0
        cdef uint32_t sz = _u32(size, "page_pool_alloc_netmem: size")
        cdef netmem_ref netmem
        self._check_alive()
        if self.pool.user_cnt == 0:
            return self._alloc_dead(), 0, 0
        netmem = page_pool_alloc_netmem(self.pool, &offset, &sz)
        self._raise_pending()
        if not netmem:
            return 0, 0, 0
        return netmem, offset, sz

    def ref_netmem(self, object ref):
        """Models ``page_pool_ref_netmem()``: one more pp reference (a frag shared by a clone)."""
        cdef netmem_ref netmem = _ref(ref)
        cdef nm_desc *d
        self._check_ref(netmem)
        netmem = netmem_compound_head(self.pool.m, netmem)
        d = __pp_desc(self.pool, netmem)
        if d.pp != <void *>self.pool or d.state != NM_ST_OWNED:
            raise NetmemError(EINVAL, f"page_pool_ref_netmem: {netmem:#x} is not handed out by "
                                      f"page_pool {self.pool.id}")
        d.pp_ref_count += 1

    def dma_sync_for_cpu(self, object ref, object offset, object size):
        """Models ``page_pool_dma_sync_netmem_for_cpu()``: a no-op when the pool does not sync
        for the CPU (a devmem provider turns it off); else ``dma_sync_single_range_for_cpu()``
        of ``size`` bytes at ``dma_addr + offset + p.offset`` in ``page_pool_get_dma_dir()`` (a
        bounced buffer is copied back for the CPU). Returns that DMA address (0 when nothing
        was synced). Departs: a range that does not fit in the buffer (``p.offset`` included) is
        refused with EINVAL, where the kernel would sync past it."""
        cdef netmem_ref netmem = _ref(ref)
        cdef uint32_t off = _u32(offset, "dma_sync_for_cpu: offset")
        cdef uint32_t sz = _u32(size, "dma_sync_for_cpu: size")
        cdef nm_desc *d
        cdef uint64_t addr
        self._check_ref(netmem)
        if not self.pool.dma_sync_for_cpu or not self.pool.dma_map:
            return 0
        d = __pp_desc(self.pool, netmem)
        if <uint64_t>off + self.pool.offset + sz > (<uint64_t>PAGE_SIZE << self.pool.order):
            raise NetmemError(EINVAL, "dma_sync_for_cpu: range beyond the buffer")
        self.pool.nr_sync_for_cpu += 1
        addr = d.dma_addr + off + self.pool.offset
        nm_dma_sync_for_cpu(self.pool.dev, addr, sz, self.pool.dma_dir)
        return addr

    def update_nid(self, object new_nid):
        """Models ``page_pool_update_nid()``."""
        cdef int nid = <int>_c_int(new_nid, "page_pool_update_nid: new_nid", "int")
        self._check_alive()
        if nid < NUMA_NO_NODE or nid >= self.pool.m.nr_nodes:
            raise NetmemError(EINVAL, f"page_pool_update_nid: no NUMA node {nid}")
        page_pool_update_nid(self.pool, nid)
        self._raise_pending()

    def enable_direct_recycling(self, CoreNapi napi):
        """Models ``page_pool_enable_direct_recycling()``."""
        self._check_alive()
        if self.pool.napi == &napi.napi:
            return
        if self.pool.napi != NULL:
            self.machine._warn("page_pool_enable_direct_recycling(): WARN_ON(!napi || "
                               "pool->p.napi)")
        self.pool.napi = &napi.napi
        self._napi = napi

    def disable_direct_recycling(self):
        """Models ``page_pool_disable_direct_recycling()``: cpuid -1, napi NULL."""
        self._check_alive()
        self.pool.cpuid = -1
        self.pool.napi = NULL
        self._napi = None

    # -- destroy steps (orchestrated by PagePool.destroy) ----------------------------------------

    def _page_pool_put(self):
        """``page_pool_put()``: drop the user reference; True when it was the last."""
        if self.pool.user_cnt == 0:
            self.machine._warn("refcount_t: underflow; use-after-free. (page_pool_destroy "
                               f"of page_pool {self.pool.id} twice)")
            return False
        self.pool.user_cnt -= 1
        return self.pool.user_cnt == 0

    def _free_frag(self):
        page_pool_free_frag(self.pool)

    def _release(self):
        """``page_pool_release()`` minus the unlist: scrub, strict inflight, and on 0 free the
        ring. Raises nothing: the caller finishes the release, then raises what was recorded.
        Returns (inflight, the bad refcounts met in the ring)."""
        cdef int32_t bad[16]
        cdef int nbad = page_pool_scrub(self.pool, bad, 16)
        cdef int32_t inflight = page_pool_inflight(self.pool, True)
        if inflight == 0:
            ptr_ring_cleanup(&self.pool.ring)
            pp_iova_window_free(self.pool)
        return inflight, [bad[i] for i in range(min(nbad, 16))]

    # -- provider helpers ------------------------------------------------------------------------

    def _niov_set_page_pool(self, object ref):
        cdef netmem_ref netmem = _ref(ref)
        self._check_ref(netmem)
        if not netmem & NET_IOV:
            raise NetmemError(EINVAL, f"net_mp_niov_set_page_pool: {netmem:#x} is not a net_iov")
        if __pp_desc(self.pool, netmem).pp != NULL:
            raise NetmemError(EEXIST, f"net_mp_niov_set_page_pool: {netmem:#x} already belongs "
                                      "to a page_pool")
        net_mp_niov_set_page_pool(self.pool, netmem)

    def _place_in_cache(self, object ref):
        cdef netmem_ref netmem = _ref(ref)
        cdef nm_desc *d
        self._check_ref(netmem)
        d = __pp_desc(self.pool, netmem)
        if d.pp != <void *>self.pool or d.state != NM_ST_NONE:
            raise NetmemError(EINVAL, f"net_mp_netmem_place_in_cache: {netmem:#x} is not a free "
                                      f"buffer of page_pool {self.pool.id}")
        net_mp_netmem_place_in_cache(self.pool, netmem)
        self._raise_pending()

    # -- read-only state -------------------------------------------------------------------------

    @property
    def id(self):
        return self.pool.id

    @property
    def hold_cnt(self):
        """``pages_state_hold_cnt``: buffers that ever entered the pool."""
        return self.pool.pages_state_hold_cnt

    @property
    def release_cnt(self):
        """``pages_state_release_cnt``: buffers that left it."""
        return self.pool.pages_state_release_cnt

    @property
    def inflight(self):
        """``page_pool_inflight(pool, false)``: hold - release, clamped at 0, as netlink shows
        it (buffers resting in the cache and the ring count)."""
        return page_pool_inflight(self.pool, False)

    @property
    def alloc_count(self):
        """Buffers in the alloc cache."""
        return self.pool.alloc_count

    @property
    def ring_count(self):
        """Buffers waiting in the ptr_ring."""
        return ptr_ring_count(&self.pool.ring) if self.pool.ring.queue != NULL else 0

    @property
    def ring_size(self):
        return self.pool.ring.size

    @property
    def cpuid(self):
        return self.pool.cpuid

    @property
    def nid(self):
        return self.pool.nid

    @property
    def order(self):
        return self.pool.order

    @property
    def dma_map(self):
        return bool(self.pool.dma_map)

    @property
    def dma_sync(self):
        return bool(self.pool.dma_sync)

    @dma_sync.setter
    def dma_sync(self, bint v):
        # A provider's init may turn syncing off (devmem does: its buffers are not the CPU's).
        self.pool.dma_sync = v

    @property
    def dma_sync_for_cpu_enabled(self):
        return bool(self.pool.dma_sync_for_cpu)

    @dma_sync_for_cpu_enabled.setter
    def dma_sync_for_cpu_enabled(self, bint v):
        self.pool.dma_sync_for_cpu = v

    @property
    def destroy_cnt(self):
        return self.pool.destroy_cnt

    @property
    def user_cnt(self):
        return self.pool.user_cnt

    @property
    def napi(self):
        return self._napi

    @property
    def frag_page(self):
        return self.pool.frag_page

    @property
    def frag_offset(self):
        return self.pool.frag_offset

    @property
    def frag_users(self):
        return self.pool.frag_users

    def _alloc_stats(self):
        cdef pp_alloc_stats *a = &self.pool.alloc_stats
        return (a.fast, a.slow, a.slow_high_order, a.empty, a.refill, a.waive)

    def _recycle_stats(self):
        return _recycle_stats_tuple(self.pool.recycle_stats)

    def _dma_stats(self):
        return (self.pool.nr_dma_map, self.pool.nr_dma_unmap, self.pool.nr_sync_for_device,
                self.pool.sync_for_device_bytes, self.pool.nr_sync_for_cpu)

    def _cache_contents(self):
        return [self.pool.alloc_cache[i] for i in range(self.pool.alloc_count)]

    def _check_invariants(self):
        """The pool's ledger is consistent: every cached buffer is in state cache and owned by
        the pool, every ring entry in state ring. Raises AssertionError naming the first breach."""
        cdef uint32_t i
        cdef int j
        cdef nm_desc *d
        cdef ptr_ring *r = &self.pool.ring
        for i in range(self.pool.alloc_count):
            d = __pp_desc(self.pool, self.pool.alloc_cache[i])
            if d.state != NM_ST_CACHE or d.pp != <void *>self.pool:
                raise AssertionError(f"alloc cache slot {i}: {self.pool.alloc_cache[i]:#x} "
                                     f"state {d.state}")
        if r.queue == NULL:
            return
        for j in range(r.size):
            if r.queue[j] and not (r.consumer_tail <= j < r.consumer_head):
                d = __pp_desc(self.pool, r.queue[j])
                if d.state != NM_ST_RING or d.pp != <void *>self.pool:
                    raise AssertionError(f"ring slot {j}: {r.queue[j]:#x} state {d.state}")


def page_pool_put_netmem_bulk_core(CoreMachine machine, refs):
    """Models ``page_pool_put_netmem_bulk()``: ``refs`` (a uint64 array, or any sequence of
    ints) may mix pools. Takes the machine first, as a ref alone does not name one."""
    cdef cnp.ndarray arr
    cdef netmem_ref *buf
    cdef Py_ssize_t i, n
    if (type(refs) is cnp.ndarray and cnp.PyArray_TYPE(refs) == cnp.NPY_UINT64
            and cnp.PyArray_NDIM(refs) == 1 and cnp.PyArray_IS_C_CONTIGUOUS(refs)):
        arr = refs
    else:
        try:
            arr = _np.ascontiguousarray(refs, dtype=_np.uint64).reshape(-1)
        except (OverflowError, TypeError, ValueError) as e:
            raise NetmemError(EINVAL, f"page_pool_put_netmem_bulk: refs are not netmem_refs ({e})")
    n = cnp.PyArray_DIMS(arr)[0]
    buf = <netmem_ref *>cnp.PyArray_DATA(arr)
    for i in range(n):
        if unlikely(not netmem_valid(machine.m, buf[i])):
            raise NetmemError(EINVAL, f"page_pool_put_netmem_bulk: refs[{i}] = {buf[i]:#x} is "
                                      "not a buffer of this machine")
    page_pool_put_netmem_bulk(machine.m, buf, n)
    if NETMEM_DEBUG:
        for pool in machine.page_pools:
            pool._check_invariants()
    if machine.m.nr_warn:
        machine._flush_warnings()


def _fei_config(CoreMachine machine, enabled=None, interval=None, probability=None, times=None,
                verbose=None, seed=None):
    """Set, then read, the fail_function attributes of ``page_pool_alloc_netmems()``
    (``netmem.fault_inject``); ``count`` and ``failures`` read only."""
    cdef nm_fault_attr *a = &machine.m.fei
    if enabled is not None:
        a.enabled = bool(enabled)
    if interval is not None:
        a.interval = interval
    if probability is not None:
        a.probability = probability
    if times is not None:
        a.times = times
    if verbose is not None:
        a.verbose = verbose
    if seed is not None:
        a.rng = seed or 1               # xorshift32 never leaves 0
    return {"enabled": bool(a.enabled), "interval": a.interval, "probability": a.probability,
            "times": a.times, "verbose": a.verbose, "count": a.count, "failures": a.failures}
