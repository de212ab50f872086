# Memory providers: the seam between page_pool and whatever backs its buffers.
#
# Models include/net/page_pool/memory_provider.h. The pool calls a provider only on its slow path
# (cache and ring empty) and on release, as the kernel does. A built-in provider hands the core a
# C nm_mp_ops (no interpreter on the data path); a provider written in Python is reached through
# the two trampolines below, which take the GIL, call its ops and turn an exception into a failed
# allocation (re-raised at the Python boundary).


cdef class CoreMemoryProvider:
    """The compiled half of ``netmem.provider.MemoryProvider``."""

    def __cinit__(self, *args, **kwargs):
        self.c_ops = NULL
        self.c_priv = NULL


cdef netmem_ref __mp_py_alloc_gil(nm_pool *pool) noexcept with gil:
    cdef CorePagePool pp = <CorePagePool>pool.pyobj
    cdef netmem_ref netmem
    cdef nm_desc *d
    try:
        netmem = <netmem_ref>(<object>pool.mp_py).alloc_netmems(pp)
    except BaseException as e:
        if pp._mp_error is None:
            pp._mp_error = e
        return 0
    if netmem == 0:
        return 0
    if not netmem_valid(pool.m, netmem):
        pp._mp_error = NetmemError(EINVAL, f"alloc_netmems returned {netmem:#x}, not a buffer "
                                           "of this machine")
        return 0
    d = __pp_desc(pool, netmem)
    if d.pp != <void *>pool or d.state != NM_ST_NONE:
        nm_warn(pool.m, NM_W_PROVIDER_BAD, pool.id, netmem, d.state)
        return 0
    return netmem


cdef netmem_ref __mp_py_alloc(nm_pool *pool) noexcept nogil:
    return __mp_py_alloc_gil(pool)


cdef bint __mp_py_release_gil(nm_pool *pool, netmem_ref netmem) noexcept with gil:
    cdef CorePagePool pp = <CorePagePool>pool.pyobj
    try:
        return bool((<object>pool.mp_py).release_netmem(pp, netmem))
    except BaseException as e:
        if pp._mp_error is None:
            pp._mp_error = e
        return False


cdef bint __mp_py_release(nm_pool *pool, netmem_ref netmem) noexcept nogil:
    return __mp_py_release_gil(pool, netmem)


cdef nm_mp_ops mp_py_ops
mp_py_ops.alloc_netmems = __mp_py_alloc
mp_py_ops.release_netmem = __mp_py_release
