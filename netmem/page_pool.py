"""page_pool: the receive-buffer allocator of the kernel's network drivers.

Models net/core/page_pool.c. The data plane (alloc cache, ptr_ring, slow path, recycling, frags,
DMA, release) is C in ``netmem._core``; this module is the facade: ``PagePoolParams``,
``page_pool_create``, the deferred destroy on the machine's virtual clock, and the stats dicts.
"""
import dataclasses

from netmem import _core
from netmem.errors import NetmemError
from netmem.machine import NSEC_PER_SEC
from netmem.provider import mp_destroy, mp_init, resolve_provider

__all__ = [
    "DMA_BIDIRECTIONAL",
    "DMA_FROM_DEVICE",
    "DMA_NONE",
    "DMA_TO_DEVICE",
    "MAX_PAGE_ORDER",
    "PAGE_SHIFT",
    "PAGE_SIZE",
    "PP_ALLOC_CACHE_REFILL",
    "PP_ALLOC_CACHE_SIZE",
    "PP_FLAG_ALL",
    "PP_FLAG_ALLOW_UNREADABLE_NETMEM",
    "PP_FLAG_DMA_MAP",
    "PP_FLAG_DMA_SYNC_DEV",
    "PP_FLAG_SYSTEM_POOL",
    "STATS_KEYS",
    "PagePool",
    "PagePoolParams",
    "page_pool_create",
    "page_pool_create_percpu",
    "page_pool_put_netmem_bulk",
]

PAGE_SIZE = _core.PAGE_SIZE_
PAGE_SHIFT = _core.PAGE_SHIFT_
MAX_PAGE_ORDER = _core.MAX_PAGE_ORDER_
PP_FLAG_DMA_MAP = _core.PP_FLAG_DMA_MAP_
PP_FLAG_DMA_SYNC_DEV = _core.PP_FLAG_DMA_SYNC_DEV_
PP_FLAG_SYSTEM_POOL = _core.PP_FLAG_SYSTEM_POOL_
PP_FLAG_ALLOW_UNREADABLE_NETMEM = _core.PP_FLAG_ALLOW_UNREADABLE_NETMEM_
PP_FLAG_ALL = _core.PP_FLAG_ALL_
PP_ALLOC_CACHE_SIZE = _core.PP_ALLOC_CACHE_SIZE_
PP_ALLOC_CACHE_REFILL = _core.PP_ALLOC_CACHE_REFILL_
DMA_BIDIRECTIONAL, DMA_TO_DEVICE, DMA_FROM_DEVICE, DMA_NONE = 0, 1, 2, 3

DEFER_TIME = 1.0            # page_pool_release_retry() period, seconds
DEFER_WARN_INTERVAL = 60.0  # stalled-shutdown warning period, seconds

ALLOC_KEYS = ("alloc_fast", "alloc_slow", "alloc_slow_high_order", "alloc_empty",
              "alloc_refill", "alloc_waive")
RECYCLE_KEYS = ("recycle_cached", "recycle_cache_full", "recycle_ring", "recycle_ring_full",
                "recycle_released_refcnt")
STATS_KEYS = ALLOC_KEYS + RECYCLE_KEYS

#: Models ``page_pool_put_netmem_bulk()``; takes the machine first (a ref alone names none).
page_pool_put_netmem_bulk = _core.page_pool_put_netmem_bulk_core


@dataclasses.dataclass
class PagePoolParams:
    """Models ``struct page_pool_params`` (its fast and slow halves; ``init_callback`` is for
    in-kernel tests and is left out). ``page_pool_create`` refuses an integer field that does
    not fit its C type (``_PARAMS_C_TYPES``: a negative size, a value beyond 32 bits, a
    non-integer) with EINVAL naming the field."""
    order: int = 0
    pool_size: int = 0
    nid: int = -1
    dev: object = None
    napi: object = None
    dma_dir: int = DMA_FROM_DEVICE
    max_len: int = 0
    offset: int = 0
    flags: int = 0
    netdev: object = None
    queue_idx: int = 0


#: The integer fields of ``struct page_pool_params`` and their C types (dma_dir: an enum).
_PARAMS_C_TYPES = {"order": "unsigned int", "pool_size": "unsigned int", "nid": "int",
                   "dma_dir": "int", "max_len": "unsigned int", "offset": "unsigned int",
                   "flags": "unsigned int", "queue_idx": "unsigned int"}


class PagePool(_core.CorePagePool):
    """A page pool (``struct page_pool``); make one with ``page_pool_create``.

    Buffer calls (``alloc_netmem``, ``put_netmem``, ``recycle_direct``, ``alloc_frag``,
    ``alloc``, ``alloc_netmems_bulk`` ...) run in C; see ``netmem._core.CorePagePool``.
    """

    def __repr__(self):
        return (f"<PagePool {self.id} order={self.order} inflight={self.inflight} "
                f"cache={self.alloc_count} ring={self.ring_count}"
                f"{' destroyed' if self.destroy_cnt else ''}>")

    @property
    def params(self):
        return self._params

    @property
    def provider(self):
        """The memory provider (``pool->mp_ops``), or None for host pages."""
        return self._mp

    @property
    def netdev(self):
        return self._params.netdev

    @property
    def stats(self):
        """The eleven counters of ``page_pool_get_stats()``, with the kernel's names."""
        return dict(zip(STATS_KEYS, self._alloc_stats() + self._recycle_stats(), strict=True))

    @property
    def dma_stats(self):
        """Model counters of the pool's DMA work (not kernel counters)."""
        keys = ("map", "unmap", "sync_for_device", "sync_for_device_bytes", "sync_for_cpu")
        return dict(zip(keys, self._dma_stats(), strict=True))

    @property
    def detach_time(self):
        """Seconds of virtual boot time at which destroy found buffers in flight, or None."""
        return self._detach_ns // NSEC_PER_SEC if self._detach_ns is not None else None

    @property
    def freed(self):
        """True once the pool is gone (``__page_pool_destroy()`` ran)."""
        return self._freed

    # -- destroy ---------------------------------------------------------------------------------

    def destroy(self):
        """Models ``page_pool_destroy()``: drop the user reference, disable direct recycling,
        drain the frag page, release; with buffers in flight, detach and retry every second of
        virtual time until the last one is back (``page_pool_release_retry()``)."""
        if not self._page_pool_put():
            return
        self.disable_direct_recycling()
        self._free_frag()
        try:
            if self._page_pool_release():
                m = self.machine
                self._detach_ns = m.clock_ns                   # page_pool_detached()
                self._defer_start = m.clock_ns
                self._defer_warn = m.clock_ns + int(DEFER_WARN_INTERVAL * NSEC_PER_SEC)
                m.add_timer(DEFER_TIME, self._release_retry, self._retry_what())
        finally:
            self._raise_pending()   # a Python provider's error, once the release is done

    def _page_pool_release(self):
        inflight, bad = self._release()
        for refcnt in bad:
            self.machine.pr_crit(f"page_pool_empty_ring() page_pool refcnt {refcnt} violation")
        if inflight == 0:
            self.__destroy()
        return inflight

    def __destroy(self):
        """Models ``__page_pool_destroy()``: ``page_pool_unlist()`` first, then
        ``page_pool_uninit()`` (whose last step is the provider's ``destroy``), then free. So a
        provider's ``destroy()`` no longer finds the pool in ``machine.page_pools``,
        ``page_pool_by_id()`` or netlink's page-pool-get, as in the kernel."""
        self.machine._page_pool_unlist(self)
        try:
            if self._mp is not None:
                mp_destroy(self._mp, self)
        finally:                # the pool is freed whatever the provider's destroy did
            self._freed = True

    def _release_retry(self):
        try:
            inflight = self._page_pool_release()
            if inflight > 0:
                self._reschedule(inflight)
        finally:
            self._raise_pending()

    def _reschedule(self, inflight):
        m = self.machine
        # Like the kernel, warn only for pools users cannot see through netlink.
        if m.clock_ns >= self._defer_warn and self.netdev is None:
            sec = (m.clock_ns - self._defer_start) // NSEC_PER_SEC
            m.pr_warn(f"page_pool_release_retry() stalled pool shutdown: id {self.id}, "
                      f"{inflight} inflight {sec} sec")
            self._defer_warn = m.clock_ns + int(DEFER_WARN_INTERVAL * NSEC_PER_SEC)
        m.add_timer(DEFER_TIME, self._release_retry, self._retry_what())

    def _retry_what(self):
        return f"page_pool_release_retry() of page_pool {self.id}"


def page_pool_create_percpu(machine, params, cpuid, provider=None):
    """Models ``page_pool_create_percpu()``: validate as ``page_pool_init()``, run the
    provider's init, list the pool. Raises ``NetmemError`` with the kernel's errno, and logs
    the kernel's ``gave up with errno`` line, on failure."""
    pool = PagePool.__new__(PagePool)
    pool._params = params
    pool._mp = None
    pool._detach_ns = None
    pool._freed = False
    try:
        for field, ctype in _PARAMS_C_TYPES.items():
            _core._c_int(getattr(params, field), f"page_pool_init: params.{field}", ctype)
        _core._c_int(cpuid, "page_pool_create_percpu: cpuid", "int")
        mp = resolve_provider(params, provider)
        pool._init(machine, params.order, params.pool_size, params.nid,
                   _core_of(params.dev), _core_of(params.napi), params.dma_dir, params.max_len,
                   params.offset, params.flags, cpuid, mp)
        if mp is None and getattr(provider, "is_host", False):
            provider.setup_pool(pool)
        if mp is not None:
            err = mp_init(mp, pool)
            if err:
                machine.pr_warn(f"page_pool_init() mem-provider init failed {err}")
                raise NetmemError(-err, f"page_pool_init: memory provider {mp.name} init failed")
            pool._mp = mp
    except NetmemError as e:
        machine.pr_warn(f"page_pool_create_percpu() gave up with errno {-e.errno}")
        raise
    machine._page_pool_list(pool)
    return pool


def page_pool_create(machine, params, provider=None):
    """Models ``page_pool_create()`` (``page_pool_create_percpu(params, -1)``). ``provider``
    stands for the RX queue's memory provider until pools are made by RX queues."""
    return page_pool_create_percpu(machine, params, -1, provider)


def _core_of(obj):
    return obj if obj is None or isinstance(obj, (_core.CoreDevice, _core.CoreNapi)) else \
        _bad_param(obj)


def _bad_param(obj):
    raise NetmemError(22, f"page_pool_init: {obj!r} is not a netmem Device or Napi")
