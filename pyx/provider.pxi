# Memory providers: the seam between page_pool and whatever backs its buffers.
#
# Models include/net/page_pool/memory_provider.h. The pool calls a provider only on its slow path
# (cache and ring empty) and on release, as the kernel does. A built-in provider hands the core a
# C nm_mp_ops (no interpreter on the data path); a provider written in Python is reached through
# the two trampolines below, which take the GIL, call its ops and turn an exception, or a return
# value the op's C type forbids (NetmemError EINVAL naming the provider and the op), into a failed
# allocation or a release without put_page (raised at the Python boundary). Those checks run only
# here: a built-in provider's C ops are not checked.


cdef class CoreMemoryProvider:
    """The compiled half of ``netmem.provider.MemoryProvider``."""

    def __cinit__(self, *args, **kwargs):
        self.c_ops = NULL
        self.c_priv = NULL


def _mp_bad_return(object mp, str op, object ret, str must):
    """The ``NetmemError(EINVAL)`` for a provider op that returned what its C type forbids:
    names the provider (its ``name`` and class), the op, what came back and what is due."""
    shown = f"{ret:#x}" if type(ret) is int and ret > 0 else repr(ret)
    return NetmemError(EINVAL, f"memory provider {getattr(mp, 'name', None)!r} "
                               f"({type(mp).__name__}): {op} returned {shown} "
                               f"({type(ret).__name__}): it must return {must}")


cpdef bint _mp_is_int(object o):
    """Whether a provider op's return is an int as a C int type takes one: a Python or numpy
    integer, not a bool (nor a float, None, a str...)."""
    return hasattr(type(o), "__index__") and not isinstance(o, (bool, _np.bool_))


cdef netmem_ref __mp_py_alloc_gil(nm_pool *pool) noexcept with gil:
    cdef CorePagePool pp = <CorePagePool>pool.pyobj
    cdef object mp = <object>pool.mp_py
    cdef netmem_ref netmem
    cdef nm_desc *d
    try:
        ret = mp.alloc_netmems(pp)
    except BaseException as e:
        if pp._mp_error is None:
            pp._mp_error = e
        return 0
    v = ret.__index__() if _mp_is_int(ret) else -1
    if not (v == 0 or 0 < v < 1 << 64 and netmem_valid(pool.m, <netmem_ref>v)):
        if pp._mp_error is None:
            pp._mp_error = _mp_bad_return(mp, "alloc_netmems", ret,
                                          "a netmem_ref (int) of this machine, or 0")
        return 0
    netmem = <netmem_ref>v
    if netmem == 0:
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
    cdef object mp = <object>pool.mp_py
    try:
        ret = mp.release_netmem(pp, netmem)
    except BaseException as e:
        if pp._mp_error is None:
            pp._mp_error = e
        return False
    if isinstance(ret, (bool, _np.bool_)) or (_mp_is_int(ret) and (ret == 0 or ret == 1)):
        return bool(ret)
    if pp._mp_error is None:
        pp._mp_error = _mp_bad_return(mp, "release_netmem", ret,
                                      "a bool (True: the core put_page()s the buffer)")
    return False


cdef bint __mp_py_release(nm_pool *pool, netmem_ref netmem) noexcept nogil:
    return __mp_py_release_gil(pool, netmem)


cdef nm_mp_ops mp_py_ops
mp_py_ops.alloc_netmems = __mp_py_alloc
mp_py_ops.release_netmem = __mp_py_release
