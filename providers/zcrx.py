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

import numpy as np

from netmem.errors import NetmemError
from netmem.page_pool import DMA_FROM_DEVICE
from netmem.provider import MemoryProvider, ReplayBinding

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

    @classmethod
    def replay_setup(cls, rig, zcrx_area="host", rx_buf_len=0):
        """``netmem-replay --provider zcrx``, as iou-zcrx.c sets up: a ring (DEFER_TASKRUN,
        SINGLE_ISSUER, CQE32; 4096 CQEs), an area of ``--dmabuf-size`` bytes of user memory
        (``zcrx_area=host``; hugetlb pages when ``rx_buf_len`` is above PAGE_SIZE) or of a
        udmabuf (``zcrx_area=dmabuf``), a refill ring with an entry per buffer (at most 32768),
        and one ifq on the first of ``rig.queues`` (zcrx binds one queue: the others are left
        out and RSS sends everything there). The application reads with RECV_ZC; teardown
        closes the ring (scrub, queue closed) and frees the memory. Provider args:
        ``--provider-arg zcrx_area=host|dmabuf``, ``--provider-arg rx_buf_len=16KiB``
        (``--rx-buf-len 16KiB`` also makes the NIC bnxt-like, so that the queue takes it; a
        4 KiB-only NIC refuses a larger ``rx_page_size`` with EOPNOTSUPP, as mlx5 does)."""
        from netmem import zcrx as z
        from netmem.dmabuf import UDMABUF_SIZE_LIMIT_MB, udmabuf_create

        if zcrx_area not in ("host", "dmabuf"):
            raise NetmemError(EINVAL, f"zcrx_area {zcrx_area!r}: host or dmabuf")
        m, size = rig.machine, rig.cfg.dmabuf_size
        rx_buf_len = rx_buf_len or rig.cfg.rx_buf_size or 0
        shift = max(int(rx_buf_len or 0).bit_length() - 1, PAGE_SHIFT)
        nniovs = size >> shift
        if not 0 < nniovs <= z.IO_RQ_MAX_ENTRIES:
            raise NetmemError(EINVAL, f"--dmabuf-size {size}: 1 to {z.IO_RQ_MAX_ENTRIES} "
                                      f"buffers of {1 << shift} bytes")
        del rig.queues[1:]
        if zcrx_area == "host":
            mem = z.mmap_anonymous(m, size, hugetlb=rx_buf_len > 1 << PAGE_SHIFT)
            rig.on_teardown(mem.munmap)
            area = z.IoUringZcrxAreaReg(addr=mem.addr, len=size)
            runs = z._runs(mem.pages)
            offs = np.cumsum([0] + [n for _, n in runs[:-1]]).astype(np.uint64)
            memory_map = (offs, np.array([p for p, _ in runs], np.uint64),
                          np.array([n for _, n in runs], np.uint64))
        else:
            # As if udmabuf were loaded with size_limit_mb large enough for --dmabuf-size.
            buf = udmabuf_create(m, size, seed=rig.seed,
                                 size_limit_mb=max(UDMABUF_SIZE_LIMIT_MB, -(-size >> 20)))
            rig.on_teardown(buf.close)
            area = z.IoUringZcrxAreaReg(len=size, flags=z.IORING_ZCRX_AREA_DMABUF,
                                        dmabuf_fd=buf.fd)
            memory_map = buf.scatterlist
        ring = z.IoUring(m, 64, z.IORING_SETUP_DEFER_TASKRUN | z.IORING_SETUP_SINGLE_ISSUER |
                         z.IORING_SETUP_CQE32, cq_entries=4096)
        rig.on_teardown(ring.close)
        rq = 1 << (nniovs - 1).bit_length()
        reg = z.IoUringZcrxIfqReg(if_idx=rig.nic.ifindex, if_rxq=rig.queues[0], rq_entries=rq,
                                  area=area, region=z.IoUringRegionDesc(size=128 + 16 * rq),
                                  rx_buf_len=rx_buf_len)
        zid = ring.register_zcrx_ifq(reg)
        rig.steer_to_bound()
        return ReplayBinding(memory_map, zcrx=(ring, ring.zcrx_ctxs[zid]))


#: The kernel's name for the ops (``static const struct memory_provider_ops io_uring_pp_zc_ops``).
io_uring_pp_zc_ops = IoUringPpZcProvider
