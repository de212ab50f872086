"""netmem: a user-space model of the Linux receive-memory path.

page_pool with pluggable memory providers, netmem/net_iov handles, the buddy page allocator and a
virtual machine to hold them; RX queues, TCP receive, devmem and the DMA layer build on these.
"""
try:
    from netmem import _core  # noqa: F401
except ImportError as e:  # no silent pure-Python fallback
    raise ImportError(f"netmem's compiled core (netmem._core) is not built: run `make compile` "
                      f"in the source tree ({e})") from e

from netmem.errors import NetmemError, NetmemWarning
from netmem.machine import Machine
from netmem.netdev import (
    NetDevice,
    net_mp_close_rxq,
    net_mp_open_rxq,
    netdev_rx_queue_restart,
    netif_mp_close_rxq,
    netif_mp_open_rxq,
)
from netmem.netmem import (
    NET_IOV,
    NET_IOV_DMABUF,
    NET_IOV_IOURING,
    NetIovArea,
    netmem_get_dma_addr,
    netmem_get_pp,
    netmem_is_net_iov,
    netmem_to_net_iov,
    netmem_to_page,
)
from netmem.page_pool import (
    DMA_BIDIRECTIONAL,
    DMA_FROM_DEVICE,
    DMA_NONE,
    DMA_TO_DEVICE,
    MAX_PAGE_ORDER,
    PAGE_SHIFT,
    PAGE_SIZE,
    PP_ALLOC_CACHE_REFILL,
    PP_ALLOC_CACHE_SIZE,
    PP_FLAG_ALL,
    PP_FLAG_ALLOW_UNREADABLE_NETMEM,
    PP_FLAG_DMA_MAP,
    PP_FLAG_DMA_SYNC_DEV,
    PP_FLAG_SYSTEM_POOL,
    PagePool,
    PagePoolParams,
    page_pool_create,
    page_pool_create_percpu,
    page_pool_put_netmem_bulk,
)

__all__ = [
    "DMA_BIDIRECTIONAL",
    "DMA_FROM_DEVICE",
    "DMA_NONE",
    "DMA_TO_DEVICE",
    "MAX_PAGE_ORDER",
    "NET_IOV",
    "NET_IOV_DMABUF",
    "NET_IOV_IOURING",
    "PAGE_SHIFT",
    "PAGE_SIZE",
    "PP_ALLOC_CACHE_REFILL",
    "PP_ALLOC_CACHE_SIZE",
    "PP_FLAG_ALL",
    "PP_FLAG_ALLOW_UNREADABLE_NETMEM",
    "PP_FLAG_DMA_MAP",
    "PP_FLAG_DMA_SYNC_DEV",
    "PP_FLAG_SYSTEM_POOL",
    "Machine",
    "NetDevice",
    "NetIovArea",
    "NetmemError",
    "NetmemWarning",
    "PagePool",
    "PagePoolParams",
    "net_mp_close_rxq",
    "net_mp_open_rxq",
    "netdev_rx_queue_restart",
    "netif_mp_close_rxq",
    "netif_mp_open_rxq",
    "netmem_get_dma_addr",
    "netmem_get_pp",
    "netmem_is_net_iov",
    "netmem_to_net_iov",
    "netmem_to_page",
    "page_pool_create",
    "page_pool_create_percpu",
    "page_pool_put_netmem_bulk",
]
