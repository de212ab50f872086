"""The host-pages provider: page_pool's own path over the buddy allocator.

Models the kernel's default, which is no provider at all: ``pool->mp_ops`` stays NULL and the slow
path is ``__page_pool_alloc_netmems_slow()`` (bulk 64 order-0 pages, or one high-order page), with
buffers returned through ``put_page()``. Installing it on a pool is the same as installing nothing;
it exists so that ``--provider host`` and the registry name the default like any other provider.
"""
from netmem.page_pool import PP_ALLOC_CACHE_SIZE
from netmem.provider import MemoryProvider, ReplayBinding

__all__ = ["HostPagesProvider"]


class HostPagesProvider(MemoryProvider):
    """Host pages: page_pool's own path, no provider at all (``pool->mp_ops`` NULL).

    ``HostPagesProvider(iova_window=False)``. With ``iova_window=True`` (the seed proposal,
    not in the kernel) a DMA-mapping pool under dma-iommu reserves one IOVA range for all the
    buffers it can hold (ring + alloc cache) with ``dma_iova_try_alloc()`` and links each page as
    it enters the pool, one IOTLB sync per slow-path batch; where the two-step API is not
    available it maps pages one by one as usual."""

    name = "host"
    is_host = True

    def __init__(self, iova_window=False):
        self.iova_window = iova_window

    def setup_pool(self, pool):
        """Called by page_pool_create for a pool on the host-pages path."""
        if self.iova_window:
            pool._iova_window_init(pool.ring_size + PP_ALLOC_CACHE_SIZE)

    def alloc_netmems(self, pool):   # never called: the core's slow path runs instead
        raise AssertionError("the host-pages path runs in the core")

    def release_netmem(self, pool, netmem):
        raise AssertionError("the host-pages path runs in the core")

    @classmethod
    def replay_setup(cls, rig):
        """``netmem-replay --provider host``: nothing to install (``pool->mp_ops`` stays NULL),
        RSS over every queue; the application copies with ``recvmsg``."""
        return ReplayBinding()
