"""The host-pages provider: page_pool's own path over the buddy allocator.

Models the kernel's default, which is no provider at all: ``pool->mp_ops`` stays NULL and the slow
path is ``__page_pool_alloc_netmems_slow()`` (bulk 64 order-0 pages, or one high-order page), with
buffers returned through ``put_page()``. Installing it on a pool is the same as installing nothing;
it exists so that ``--provider host`` and the registry name the default like any other provider.
"""
from netmem.provider import MemoryProvider

__all__ = ["HostPagesProvider"]


class HostPagesProvider(MemoryProvider):
    name = "host"
    is_host = True

    def alloc_netmems(self, pool):   # never called: the core's slow path runs instead
        raise AssertionError("the host-pages path runs in the core")

    def release_netmem(self, pool, netmem):
        raise AssertionError("the host-pages path runs in the core")
