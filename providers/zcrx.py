"""io_uring zero-copy receive: the interface queue's memory provider, ``io_uring_pp_zc_ops``.

Models the provider half of io_uring/zcrx.c (Linux 7.2). An ``IoUringPpZcProvider`` is a zcrx
interface queue (``netmem.zcrx.IoZcrxIfq``) as a queue's ``mp_params`` (``mp_ops`` +
``mp_priv``): its two buffer ops run in C (``io_pp_zc_alloc_netmems()``: the refill ring the
application writes, then the area's freelist, else the ``ZCRX_EVENT_ALLOC_FAIL`` event;
``io_pp_zc_release_netmem()``: back to the freelist, never put_page), the other four here. The
uapi, the registration and RECV_ZC are in ``netmem.zcrx``.

``rx_page_size`` is the buffer size the queue is asked for (``mp_params.rx_page_size``, which
``netif_mp_open_rxq()`` copies into the queue's configuration): the ifq's ``rx_buf_len`` when
userspace asked for one above PAGE_SIZE, else 0 (not requested), as Linux commit
"io_uring/zcrx: don't set rx_page_size when not requested" has it.
"""
from errno import EINVAL, EOPNOTSUPP

from netmem.page_pool import DMA_FROM_DEVICE
from netmem.provider import MemoryProvider

__all__ = ["IoUringPpZcProvider", "io_uring_pp_zc_ops"]

PAGE_SHIFT = 12


class IoUringPpZcProvider(MemoryProvider):
    """``io_uring_pp_zc_ops`` over one zcrx ifq (the queue's ``mp_priv``). ``alloc_netmems``
    and ``release_netmem`` run in C; a pool calls them only on its slow path and on release."""

    name = "zcrx"

    def __init__(self, ifq):
        self.ifq = ifq
        size = 1 << ifq.niov_shift
        self.rx_page_size = size if ifq.rx_buf_len_requested and size > 1 << PAGE_SHIFT else 0

    def __repr__(self):
        return f"<IoUringPpZcProvider zcrx ifq {self.ifq.zcrx_id}>"

    def alloc_netmems(self, pool):
        raise AssertionError("the pool calls io_pp_zc_alloc_netmems() in C")

    def release_netmem(self, pool, netmem):
        raise AssertionError("the pool calls io_pp_zc_release_netmem() in C")

    def init(self, pool):
        """Models ``io_pp_zc_init()``: the pool must map DMA for the ifq's device, from the
        device, with buffers of ``1 << niov_shift`` bytes (``order + PAGE_SHIFT``); then a
        reference on the ifq. -EINVAL (a kernel WARN for the device) or -EOPNOTSUPP."""
        ifq = self.ifq
        if pool.params.dev is not ifq.dev:
            ifq.machine._warn(f"io_pp_zc_init(): WARN_ON_ONCE(ifq->dev != pp->p.dev): page_pool "
                              f"{pool.id}")
            return -EINVAL
        if not pool.dma_map:
            ifq.machine._warn(f"io_pp_zc_init(): WARN_ON_ONCE(!pp->dma_map): page_pool "
                              f"{pool.id}")
            return -EOPNOTSUPP
        if pool.order + PAGE_SHIFT != ifq.niov_shift:
            return -EINVAL
        if pool.params.dma_dir != DMA_FROM_DEVICE:
            return -EOPNOTSUPP
        ifq.get()
        return 0

    def destroy(self, pool):
        """Models ``io_pp_zc_destroy()``: drop the pool's ifq reference."""
        self.ifq.put()

    def nl_fill(self, rxq):
        """Models ``io_pp_nl_fill()``: an empty ``io-uring`` nest, in ``queue-get``
        (NETDEV_A_QUEUE_IO_URING) and ``page-pool-get`` (NETDEV_A_PAGE_POOL_IO_URING)."""
        return {"io-uring": {}}

    def uninstall(self, rxq):
        """Models ``io_pp_uninstall()``: the netdev under the queue went; the ifq drops it and
        unmaps its area."""
        self.ifq.drop_netdev()


#: The kernel's name for the ops (``static const struct memory_provider_ops io_uring_pp_zc_ops``).
io_uring_pp_zc_ops = IoUringPpZcProvider
