"""devmem TCP: the dma-buf binding and its memory provider, ``dmabuf_devmem_ops``.

Models net/core/devmem.c with Bobby Eshleman's "net: devmem: allow rx-buf-size > PAGE_SIZE per
dmabuf binding" (v5, July 2026; likely in 7.3). ``net_devmem_bind_dmabuf()`` maps a dma-buf for
the NIC and makes a genalloc pool (one bit per net_iov of ``1 << niov_shift`` bytes: 4 KiB, or
bind-rx's ``rx-buf-size``) with one chunk per DMA segment of the mapping (after IOMMU merging;
each must be aligned to the net_iov size in address and length), each chunk's owner a
``DmabufGenpoolChunkOwner``: a net_iov area at the segment's offset in the dma-buf
(``base_virtual``), its DMA address (``base_dma_addr``) and one ``NET_IOV_DMABUF`` net_iov per
net_iov size, whose DMA address is ``base_dma_addr + (idx << niov_shift)``. The genpool's
addresses are DMA addresses. A binding with large net_iovs asks its queues for
``rx_page_size = 1 << niov_shift`` (so the driver must have ``QCFG_RX_PAGE_SIZE``). A
``DmabufDevmemProvider`` is the binding as a queue's ``mp_params`` (``mp_ops`` + ``mp_priv``): its
two buffer ops run in C
(``mp_dmabuf_devmem_alloc_netmems()``: first fit, one net_iov; ``mp_dmabuf_devmem_release_page()``:
back to the genpool, never put_page), the other four here.

The binding's ``refcount`` is held by its user (the netlink socket, until unbind) and by each
page pool using it (taken in ``init``, dropped in ``destroy``); the pools in turn live until
their last net_iov comes home (from sockets, skbs and tokens), so an unbind with buffers in
flight frees nothing early. The last reference frees the binding as
``__net_devmem_dmabuf_binding_free()`` does (deferred work: it runs on the machine's timer at
the next ``advance()``/``quiesce()``): chunk owners, the genpool (with the kernel's WARN, and
no destroy, when it is not whole), unmap, detach, ``dma_buf_put()``.

A TX binding (``bind-tx``, ``netmem.devmem_tx``) is mapped ``DMA_TO_DEVICE`` and has a
``tx_vec``: the net_iov at each 4 KiB of the dma-buf, which ``sendmsg()`` turns iovec offsets
into; each frag of a TX skb holds a binding reference until the skb is freed.

Departs: bind-rx is not permission-checked (the kernel wants CAP_NET_ADMIN); the refcount is a
plain count in C (``refcount_t``, a ``percpu_ref`` from 6.18.19), shared with the TX frags.
"""
from errno import E2BIG, EBADF, EINVAL, ENODEV, EOPNOTSUPP

import numpy as np

from netmem import _core
from netmem.dmabuf import (
    DmaBuf,
    dma_buf_attach,
    dma_buf_detach,
    dma_buf_get,
    dma_buf_map_attachment,
    dma_buf_put,
    dma_buf_unmap_attachment,
    sgt_dma_segments,
)
from netmem.errors import NetmemError
from netmem.genalloc import (
    gen_pool_add_owner,
    gen_pool_avail,
    gen_pool_create,
    gen_pool_destroy,
    gen_pool_size,
)
from netmem.netdev import netif_mp_close_rxq, netif_mp_open_rxq
from netmem.netmem import NET_IOV_DMABUF, NetIovArea
from netmem.page_pool import DMA_FROM_DEVICE, DMA_TO_DEVICE
from netmem.provider import MemoryProvider, ReplayBinding, net_devmem_id_alloc

__all__ = ["DmabufDevmemProvider", "DmabufGenpoolChunkOwner", "NetDevmemDmabufBinding",
           "dmabuf_devmem_ops",
           "net_devmem_bind_dmabuf", "net_devmem_bind_dmabuf_to_queue",
           "net_devmem_lookup_dmabuf", "net_devmem_unbind_dmabuf"]

PAGE_SHIFT = 12
PAGE_SIZE = 1 << PAGE_SHIFT


class DmabufGenpoolChunkOwner(NetIovArea):
    """Models ``struct dmabuf_genpool_chunk_owner``: the area (``base_virtual``, the
    net_iovs, ``1 << binding.niov_shift`` bytes each), ``base_dma_addr`` and the binding."""

    def __init__(self, binding, base_virtual, base_dma_addr, length):
        shift = binding.niov_shift
        super().__init__(binding.machine, length >> shift, NET_IOV_DMABUF, base_virtual,
                         binding.id, shift)
        self.binding = binding
        self.base_dma_addr = base_dma_addr
        binding.machine._niov_area_set_dma_addrs(self._base, self.num_niovs, base_dma_addr)

    def net_iov_virtual_addr(self, ref):
        """Models ``net_iov_virtual_addr()``: the net_iov's byte offset in the dma-buf."""
        return self.base_virtual + (self.net_iov_idx(ref) << self.niov_shift)

    def net_devmem_get_dma_addr(self, ref):
        """Models ``net_devmem_get_dma_addr()``."""
        return self.base_dma_addr + (self.net_iov_idx(ref) << self.niov_shift)


class NetDevmemDmabufBinding(_core.CoreDmabufBinding):
    """Models ``struct net_devmem_dmabuf_binding``: ``dmabuf``, ``attachment``, ``sgt``,
    ``dev`` (the netdev, None once every bound queue's netdev is gone), ``chunk_pool``,
    ``refcount``, ``bound_rxqs``, ``id``, ``direction``, ``niov_shift`` (log2 of the net_iov
    size) and ``owners`` (the chunks)."""

    def __init__(self, dev, dmabuf, direction, niov_shift=PAGE_SHIFT):
        self.machine = dev.machine
        self.dev = dev
        self.dmabuf = dmabuf
        self.direction = direction
        self.niov_shift = niov_shift
        self.refcount = 1
        self._free_scheduled = False
        self.bound_rxqs = []
        self.id = 0
        self.attachment = self.sgt = self.chunk_pool = None
        self.owners = []
        self.provider = DmabufDevmemProvider(self)
        self.freed = False

    @property
    def dev(self):
        """``binding->dev``: the netdev (None once cleared)."""
        return self._dev

    @dev.setter
    def dev(self, dev):
        self._dev = dev
        self._set_dev_ifindex(dev.ifindex if dev is not None else 0)

    def __repr__(self):
        return (f"<NetDevmemDmabufBinding id {self.id} dmabuf fd {self.dmabuf.fd} "
                f"chunks {len(self.owners)} refcount {self.refcount}>")

    def get(self):
        """Models ``net_devmem_dmabuf_binding_get()``."""
        self.refcount += 1

    def put(self):
        """Models ``net_devmem_dmabuf_binding_put()``: the last reference schedules the free."""
        self.refcount -= 1
        self._reap()

    def _reap(self):
        """Schedule the free once the last reference is gone (the C side drops TX frags'
        references; this runs after each call that may)."""
        if self.refcount == 0 and not self._free_scheduled:
            self._free_scheduled = True
            self.machine.add_timer(0, self._free,
                                   f"__net_devmem_dmabuf_binding_free() of binding {self.id}")

    def _free(self):
        """Models ``__net_devmem_dmabuf_binding_free()`` (net/core/devmem.c, read in
        torvalds/linux at 03e96b8c11d1; later versions run it as a work item and free
        ``tx_vec`` too, with the same genpool logic).

        Departure: the kernel frees the chunk owners unconditionally,
        ``gen_pool_for_each_chunk(binding->chunk_pool, net_devmem_dmabuf_free_chunk_owner,
        NULL)`` (``kvfree(owner->area.niovs); kfree(owner);``), and then destroys the genpool
        only ``if (!WARN(size != avail, "can't destroy genpool. size=%zu, avail=%zu", ...))``.
        With net_iovs still out that frees their arrays under them (a use-after-free for the
        stragglers). The model WARNs the same way but keeps the owners and the genpool when
        they are not all back, so the area table stays valid and ``leak_report()`` can name
        them. The dma-buf is released either way, as in the kernel."""
        size, avail = gen_pool_size(self.chunk_pool), gen_pool_avail(self.chunk_pool)
        if size != avail:
            self.machine._warn(f"__net_devmem_dmabuf_binding_free(): can't destroy genpool. "
                               f"size={size}, avail={avail}")
        else:
            for owner in self.owners:
                owner.free()
            gen_pool_destroy(self.chunk_pool)
        self._release_dmabuf()
        self.freed = True
        self.machine._devmem_bindings.pop(self, None)

    def _release_dmabuf(self):
        if self.sgt is not None:
            dma_buf_unmap_attachment(self.attachment, self.sgt, self.direction)
        if self.attachment is not None:
            dma_buf_detach(self.dmabuf, self.attachment)
        dma_buf_put(self.dmabuf)

    def _build(self):
        """The chunk pool over the mapped DMA segments (``net_devmem_bind_dmabuf()``): EINVAL,
        before any chunk is made, for a segment whose DMA address or length is not aligned to
        the net_iov size."""
        nid = max(getattr(self.dev.pcidev, "numa_node", -1), -1)
        niov_size = 1 << self.niov_shift
        segments = sgt_dma_segments(self.sgt)
        for _, dma_addr, length in segments:
            if dma_addr % niov_size or length % niov_size:
                raise NetmemError(EINVAL, f"bind-rx: dmabuf sg entry (addr={dma_addr:#x}, "
                                          f"len={length}) not aligned to niov size {niov_size}")
        self.chunk_pool = gen_pool_create(self.niov_shift, nid)
        for base_virtual, dma_addr, length in segments:
            owner = DmabufGenpoolChunkOwner(self, base_virtual, dma_addr, length)
            self.owners.append(owner)
            gen_pool_add_owner(self.chunk_pool, dma_addr, dma_addr, length, nid, owner)
        self._set_chunks(self.chunk_pool, self.id, [o.base_dma_addr for o in self.owners],
                         [o._base for o in self.owners], self.niov_shift)
        if self.direction == DMA_TO_DEVICE:
            self._set_tx_vec(np.concatenate([o.niovs for o in self.owners]
                                            or [np.zeros(0, np.uint64)]), self.dmabuf.size)
        self._install_c_ops(self.provider)

    def leak(self):
        """A line for ``Machine.leak_report()``."""
        return (f"devmem binding {self.id} (dma-buf fd {self.dmabuf.fd}) not freed: refcount "
                f"{self.refcount}, {len(self.bound_rxqs)} bound queue(s), genpool "
                f"{gen_pool_size(self.chunk_pool) - gen_pool_avail(self.chunk_pool)} bytes out")


class DmabufDevmemProvider(MemoryProvider):
    """``dmabuf_devmem_ops`` over one binding (the queue's ``mp_priv``). ``alloc_netmems`` and
    ``release_netmem`` run in C; a pool calls them only on its slow path and on release."""

    name = "dmabuf"

    def __init__(self, binding):
        self.binding = binding
        # net_devmem_bind_dmabuf_to_queue(): mp_params.rx_page_size, only for large net_iovs
        if binding.niov_shift != PAGE_SHIFT:
            self.rx_page_size = 1 << binding.niov_shift

    def __repr__(self):
        return f"<DmabufDevmemProvider binding {self.binding.id}>"

    def alloc_netmems(self, pool):
        raise AssertionError("the pool calls mp_dmabuf_devmem_alloc_netmems() in C")

    def release_netmem(self, pool, netmem):
        raise AssertionError("the pool calls mp_dmabuf_devmem_release_page() in C")

    def init(self, pool):
        """Models ``mp_dmabuf_devmem_init()``: DMA sync off (dma-buf addresses are not the
        CPU's to sync), E2BIG unless the pool's order is the binding's ``niov_shift -
        PAGE_SHIFT``, a binding reference."""
        pool.dma_sync = False
        pool.dma_sync_for_cpu_enabled = False
        if pool.order != self.binding.niov_shift - PAGE_SHIFT:
            return -E2BIG
        self.binding.get()
        return 0

    def destroy(self, pool):
        """Models ``mp_dmabuf_devmem_destroy()``: drop the pool's binding reference."""
        self.binding.put()

    def nl_fill(self, rxq):
        """Models ``mp_dmabuf_devmem_nl_fill()``: ``dmabuf`` (the binding id) in both
        ``queue-get`` and ``page-pool-get``."""
        return {"dmabuf": self.binding.id}

    def uninstall(self, rxq):
        """Models ``mp_dmabuf_devmem_uninstall()``: forget the queue; with none left the
        binding's ``dev`` is cleared."""
        b = self.binding
        if rxq in b.bound_rxqs:
            b.bound_rxqs.remove(rxq)
            if not b.bound_rxqs:
                b.dev = None

    @classmethod
    def replay_setup(cls, rig):
        """``netmem-replay --provider dmabuf``, as ncdevmem sets up: ``--dmabuf-size`` bytes of
        the GPU's device memory exported as a dma-buf (``--dmabuf-layout``) and bound to
        ``rig.queues`` with netlink ``bind-rx`` (``--rx-buf-size`` as its rx-buf-size), RSS
        over them; closing the netlink socket
        unbinds at teardown. The application reads through the dma-buf's scatterlist; the cmsgs
        name the binding id."""
        from netmem.dmabuf import export_device_memory
        from netmem.netlink import NetlinkSocket

        cfg = rig.cfg
        buf = export_device_memory(rig.gpu, cfg.dmabuf_size, layout=cfg.dmabuf_layout,
                                   seed=rig.seed)
        rig.on_teardown(buf.close)
        nl = NetlinkSocket(rig.machine)
        rig.on_teardown(nl.close)                       # unbinds
        binding_id = nl.bind_rx(rig.nic.ifindex, buf.fd,
                                queues=[{"id": q, "type": "rx"} for q in rig.queues],
                                rx_buf_size=cfg.rx_buf_size)
        rig.steer_to_bound()
        return ReplayBinding(buf.scatterlist, binding_id)


#: The kernel's name for the ops (``struct memory_provider_ops dmabuf_devmem_ops``).
dmabuf_devmem_ops = DmabufDevmemProvider


def net_devmem_bind_dmabuf(dev, dma_dev, direction, fd, priv=None, niov_shift=PAGE_SHIFT):
    """Models ``net_devmem_bind_dmabuf()``: get, attach and map the dma-buf behind ``fd`` for
    ``dma_dev`` in ``direction``, build the chunk pool and its net_iovs of ``1 << niov_shift``
    bytes (and, for DMA_TO_DEVICE, the ``tx_vec``: 4 KiB net_iovs, bind-tx takes no
    rx-buf-size), allocate the id (from 1) and list the binding on ``priv`` (a
    ``NetlinkSocket``). Raises the errno of the failing step (EOPNOTSUPP without a DMA device,
    EBADF for a bad fd, the exporter's and dma_map_sgtable()'s errors, EINVAL for a DMA segment
    not aligned to the net_iov size); a failure undoes what was done."""
    m = dev.machine
    if dma_dev is None:
        raise NetmemError(EOPNOTSUPP, "net_devmem_bind_dmabuf: Device doesn't support DMA")
    dmabuf = dma_buf_get(m, fd)
    binding = NetDevmemDmabufBinding(dev, dmabuf, direction, niov_shift)
    try:
        binding.attachment = dma_buf_attach(dmabuf, dma_dev)
        binding.sgt = dma_buf_map_attachment(binding.attachment, direction)
        binding.id = net_devmem_id_alloc(m)
        binding._build()
    except BaseException:
        for owner in binding.owners:
            owner.free()
        binding._release_dmabuf()
        raise
    m._devmem_bindings[binding] = None
    m._devmem_by_id[binding.id] = binding
    if priv is not None:
        priv.bindings.append(binding)
    return binding


def net_devmem_bind_dmabuf_to_queue(dev, rxq_idx, binding):
    """Models ``net_devmem_bind_dmabuf_to_queue()``: ``netif_mp_open_rxq()`` with the binding's
    provider, whose ``rx_page_size`` is the net_iov size when that is not PAGE_SIZE (every check
    and errno there: EOPNOTSUPP on a driver without ``QCFG_RX_PAGE_SIZE``, the driver's
    ERANGE), then the queue joins ``bound_rxqs``."""
    netif_mp_open_rxq(dev, rxq_idx, binding.provider)
    binding.bound_rxqs.append(dev.rx_queues[rxq_idx])


def net_devmem_unbind_dmabuf(binding):
    """Models ``net_devmem_unbind_dmabuf()``: the id goes, each bound queue restarts without
    the provider (``__netif_mp_close_rxq()``: its old pools live while their buffers are out),
    the user's reference is dropped."""
    m = binding.machine
    m._devmem_by_id.pop(binding.id, None)
    for rxq in list(binding.bound_rxqs):
        netif_mp_close_rxq(rxq.nic, rxq.idx, binding.provider)
    binding.bound_rxqs.clear()
    binding.put()


def net_devmem_lookup_dmabuf(machine, id):
    """Models ``net_devmem_lookup_dmabuf()``: the bound binding with ``id`` (a reference is
    not taken: the model has no concurrent unbind), or None."""
    return machine._devmem_by_id.get(id)


def _check_fd(machine, fd):
    if not isinstance(machine._dmabufs.get(fd), DmaBuf):
        raise NetmemError(EBADF, f"bind-rx: fd {fd} is not an open dma-buf")


def netdev_nl_bind_rx(priv, ifindex, fd, queues, rx_buf_size=None):
    """Models ``netdev_nl_bind_rx_doit()``: EINVAL for missing attributes, an ``rx_buf_size``
    (``NETDEV_A_DMABUF_RX_BUF_SIZE``, None when absent) that is not a power of two of at least
    PAGE_SIZE, a queue type that is not rx or an id past ``real_num_rx_queues``; ENODEV without
    the device; EOPNOTSUPP for a driver without the queue API or queues on different DMA
    devices; then the binding (net_iovs of ``rx_buf_size`` bytes) and each queue's
    ``netif_mp_open_rxq()`` (a failure unbinds all). Returns the binding id."""
    m = priv.machine
    if ifindex is None or fd is None or not queues:
        raise NetmemError(EINVAL, "bind-rx: ifindex, fd and queues are required")
    niov_shift = _niov_shift(rx_buf_size)
    dev = m.netdevs.get(ifindex)
    if dev is None or not dev.registered:
        raise NetmemError(ENODEV, f"bind-rx: no device with ifindex {ifindex}")
    if not dev.queue_mgmt_ops:
        raise NetmemError(EOPNOTSUPP, f"bind-rx: {dev.name} has no queue management ops")
    idxs = _rxq_bitmap(dev, queues)
    binding = net_devmem_bind_dmabuf(dev, _get_dma_dev(dev, idxs), DMA_FROM_DEVICE, fd, priv,
                                     niov_shift)
    try:
        for idx in idxs:
            net_devmem_bind_dmabuf_to_queue(dev, idx, binding)
    except NetmemError:
        priv.bindings.remove(binding)
        net_devmem_unbind_dmabuf(binding)
        raise
    return binding.id


def _niov_shift(rx_buf_size):
    """bind-rx's ``NETDEV_A_DMABUF_RX_BUF_SIZE`` (a u32) as ``niov_shift``: PAGE_SHIFT when
    absent, else EINVAL unless it is a power of two of at least PAGE_SIZE."""
    if rx_buf_size is None:
        return PAGE_SHIFT
    if isinstance(rx_buf_size, bool) or not isinstance(rx_buf_size, int) or \
            not 0 <= rx_buf_size < 1 << 32:
        raise NetmemError(EINVAL, f"bind-rx: rx-buf-size {rx_buf_size!r} is not a u32")
    if not rx_buf_size or rx_buf_size & (rx_buf_size - 1) or rx_buf_size < PAGE_SIZE:
        raise NetmemError(EINVAL, f"bind-rx: rx_buf_size {rx_buf_size} must be a power of 2 >= "
                                  f"page size ({PAGE_SIZE})")
    return rx_buf_size.bit_length() - 1


def _rxq_bitmap(dev, queues):
    """Models ``netdev_nl_read_rxq_bitmap()``: the queue ids, ascending."""
    idxs = set()
    for q in queues:
        if not isinstance(q, dict) or "id" not in q or "type" not in q:
            raise NetmemError(EINVAL, f"bind-rx: queue {q!r} needs id and type")
        if q["type"] not in ("rx", 0):
            raise NetmemError(EINVAL, f"bind-rx: queue {q['id']} has type {q['type']!r}, not rx")
        if not isinstance(q["id"], int) or not 0 <= q["id"] < dev.real_num_rx_queues:
            raise NetmemError(EINVAL, f"bind-rx: rxq {q['id']} out of range (the device has "
                                      f"{dev.real_num_rx_queues} rx queues)")
        idxs.add(q["id"])
    return sorted(idxs)


def _get_dma_dev(dev, idxs):
    """Models ``netdev_nl_get_dma_dev()``: every queue's DMA device must be the same."""
    dma_dev, prev = None, None
    for idx in idxs:
        q_dev = dev.rx_queues[idx].dma_dev
        if dma_dev is not None and q_dev is not dma_dev:
            raise NetmemError(EOPNOTSUPP, f"bind-rx: DMA device mismatch between queue {idx} "
                                          f"and {prev} (multi-PF device?)")
        dma_dev, prev = q_dev, idx
    return dma_dev
