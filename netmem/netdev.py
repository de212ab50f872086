"""Network devices: NetDevice, RX queues with NAPI, ethtool-like configuration, the queue
management ops and memory-provider binding.

Models the receive side of a netdev and its driver (shaped after the devmem-capable drivers:
bnxt, gve, mlx5), ethtool's ring/channel/ntuple/RSS settings (net/ethtool/rings.c,
channels.c, ioctl.c), the queue API (``struct netdev_queue_mgmt_ops``,
``netdev_rx_queue_restart()``) and ``__netif_mp_open_rxq()`` / ``__netif_mp_close_rxq()``
(net/core/netdev_rx_queue.c), and the per-queue configuration of Linux 7.0
(``struct netdev_queue_config``, ``__netdev_queue_config()`` in net/core/netdev_config.c). Frames
go through the device in C: ``nic.receive(trace)``.

Each RX queue has a NAPI instance on a CPU (queue i on CPU i % cpus, as irq affinity spreads
them), a payload page pool created with ``PP_FLAG_ALLOW_UNREADABLE_NETMEM`` (it takes the
queue's memory provider) and, with header split, a header page pool of host pages.
"""
import ipaddress

from netmem import _core
from netmem.errors import NetmemError
from netmem.page_pool import (
    DMA_FROM_DEVICE,
    MAX_PAGE_ORDER,
    PAGE_SIZE,
    PP_FLAG_ALLOW_UNREADABLE_NETMEM,
    PP_FLAG_DMA_MAP,
    PP_FLAG_DMA_SYNC_DEV,
    PagePoolParams,
    page_pool_create,
)
from netmem.provider import mp_uninstall
from netmem.tcp_tx import TxQueue

__all__ = [
    "BNXT_MAX_RX_PAGE_SIZE",
    "QCFG_RX_PAGE_SIZE",
    "Ethtool",
    "MpParams",
    "Napi",
    "NetDevice",
    "NetdevQueueConfig",
    "RxQueue",
    "net_mp_close_rxq",
    "net_mp_open_rxq",
    "netdev_queue_config",
    "netdev_queue_config_validate",
    "netdev_rx_queue_restart",
    "netif_mp_close_rxq",
    "netif_mp_open_rxq",
]

EINVAL, EEXIST, EBUSY, ERANGE, ENOENT, ENODATA, EOPNOTSUPP = 22, 17, 16, 34, 2, 61, 95
ENODEV, ENOSPC, ENETDOWN = 19, 28, 100
VLAN_N_VID = 4096                           # include/linux/if_vlan.h; id 4095 is reserved
ETH_MIN_MTU, ETH_MAX_MTU = 68, 9000         # the model driver's MTU range
RX_MAX_PENDING = 8192                       # ethtool -g: the model driver's rx maximum
DEFAULT_RING_SIZE = 1024
RECEIVE_CHUNK = 8192                        # frames per call into C (clock and errors between)
TCP_DATA_SPLIT = ("auto", "off", "on")      # ETHTOOL_TCP_DATA_SPLIT_{UNKNOWN,DISABLED,ENABLED}
QCFG_RX_PAGE_SIZE = 0x1                     # include/net/netdev_queues.h: the queue honours it
BNXT_MAX_RX_PAGE_SIZE = 1 << 15             # drivers/net/ethernet/broadcom/bnxt/bnxt.h: BIT(15)


class Napi(_core.CoreNapi):
    """Models the parts of ``struct napi_struct`` a page_pool reads: ``list_owner`` (the CPU
    running its poll) and ``napi_id`` (from MIN_NAPI_ID, as ``napi_hash_add()`` gives them).
    A standalone Napi reads as scheduled on its CPU; an RX queue's is scheduled (list_owner set)
    only while it polls, as ``____napi_schedule()`` / ``napi_complete_done()`` do."""

    def __new__(cls, machine, cpu=0):
        return super().__new__(cls, machine, cpu, machine._alloc_napi_id())

    def __init__(self, machine, cpu=0):
        self.cpu = cpu

    def __repr__(self):
        return f"<Napi {self.napi_id} on CPU {self.cpu}>"


class QueueMem:
    """What ``ndo_queue_mem_alloc()`` makes for a queue: its page pools."""

    def __init__(self, pool, hdr_pool):
        self.pool = pool
        self.hdr_pool = hdr_pool


class NetdevQueueConfig:
    """Models ``struct netdev_queue_config`` (Linux 7.0): ``rx_page_size``, the size in bytes of
    the queue's payload buffers (0: the driver's default, which is PAGE_SIZE here)."""

    __slots__ = ("rx_page_size",)

    def __init__(self, rx_page_size=0):
        self.rx_page_size = rx_page_size

    def __repr__(self):
        return f"NetdevQueueConfig(rx_page_size={self.rx_page_size})"

    def __eq__(self, other):
        return isinstance(other, NetdevQueueConfig) and other.rx_page_size == self.rx_page_size


class MpParams:
    """Models ``struct pp_memory_provider_params`` as ``rxq->mp_params`` keeps it: ``mp`` (the
    provider, standing for ``mp_ops`` + ``mp_priv``; None when unbound) and ``rx_page_size``
    (copied from the provider when it is installed, so it survives queue restarts; 0 means not
    requested). ``netif_mp_close_rxq()`` zeroes both, as Linux commit 7073bb4b696f ("net:
    memzero mp params when closing a queue") (in v7.0) does."""

    __slots__ = ("mp", "rx_page_size")

    def __init__(self, mp=None, rx_page_size=0):
        self.mp = mp
        self.rx_page_size = rx_page_size

    def __repr__(self):
        return f"MpParams(mp={self.mp!r}, rx_page_size={self.rx_page_size})"


class RxQueue:
    """``struct netdev_rx_queue`` with its driver ring: ``idx``, ``napi``, ``cpu``,
    ``mp_params`` (``MpParams``), ``mp`` (its provider, or None), ``page_pool`` and
    ``header_pool``."""

    def __init__(self, nic, idx):
        self.nic = nic
        self.idx = idx
        self.cpu = idx % nic.machine.cpus
        self.napi = Napi(nic.machine, self.cpu)
        self.napi.list_owner = -1           # idle until it polls
        self.mp_params = MpParams()
        self.mem = None
        self.af_xdp = False                 # rxq->pool (an AF_XDP socket's)
        self._dma_dev = None

    @property
    def mp(self):
        """The installed memory provider (``mp_params.mp_ops`` and ``mp_priv``), or None."""
        return self.mp_params.mp

    @property
    def qcfg(self):
        """The queue's configuration as the driver renders it now (``netdev_queue_config()``)."""
        return netdev_queue_config(self.nic, self.idx)

    @property
    def dma_dev(self):
        """``netdev_queue_get_dma_dev()``: the device that does the queue's DMA (the netdev's
        PCI function unless set, as for a multi-PF device)."""
        return self._dma_dev or self.nic.pcidev

    @dma_dev.setter
    def dma_dev(self, dev):
        self._dma_dev = dev

    def __repr__(self):
        return f"<RxQueue {self.nic.name}:{self.idx} cpu {self.cpu}>"

    @property
    def page_pool(self):
        return self.mem.pool if self.mem else None

    @property
    def header_pool(self):
        return self.mem.hdr_pool if self.mem else None

    @property
    def posted(self):
        """Buffers posted to the device: (payload, header)."""
        return self.nic._rxq_posted(self.idx)

    def attach_af_xdp(self):
        """Bind an AF_XDP socket to the queue (refused while a memory provider is bound)."""
        if self.mp is not None:
            raise NetmemError(EBUSY, "xsk_bind: queue has a memory provider")
        self.af_xdp = True

    def detach_af_xdp(self):
        self.af_xdp = False

    def stats(self):
        """Per-queue counters: the netdev qstats (packets, bytes, alloc_fail, hw_drops, ...),
        the model's drop breakdown and GRO's."""
        s = self.nic._rxq_stats(self.idx)
        s["gro"] = self.nic._gro_stats(self.idx)
        return s


class NetDevice(_core.CoreNetDevice):
    """A network device: ``NetDevice(m, name="eth0", num_rx_queues=4, pcidev=None, mtu=1500)``.

    ``pcidev`` is the PCI function that does its DMA (default: the machine's endpoint of that
    name, or a new NIC endpoint). ``ethtool`` configures it; ``receive(trace)`` runs frames
    through it; ``unregister()`` tears it down. ``mp_aware=False`` makes a driver that ignores
    memory providers (its pools never take one), for the ENODATA check; ``netmem_tx=False``
    one without netmem TX (``netdev->netmem_tx``: bind-tx is EOPNOTSUPP, unreadable skbs are
    dropped). ``txq`` is its TX queue (devmem TX, ``netmem.tcp_tx``).

    ``max_rx_page_size`` is the largest payload buffer the driver takes (a power of two from
    PAGE_SIZE): PAGE_SIZE, the default, is a driver that only supports 4 KiB buffers, as mlx5
    and fbnic in Linux 7.0 (no ``QCFG_RX_PAGE_SIZE`` in its queue ops' ``supported_params``, no
    ``ndo_default_qcfg``, no ``ndo_validate_qcfg``); anything larger is a bnxt-like driver
    (``supported_params = QCFG_RX_PAGE_SIZE``, ``bnxt_queue_default_qcfg()``: PAGE_SIZE,
    ``bnxt_validate_qcfg()``; bnxt's own maximum is ``BNXT_MAX_RX_PAGE_SIZE``, 32 KiB).
    """

    def __new__(cls, machine, name="eth0", num_rx_queues=4, pcidev=None, mtu=1500,
                mp_aware=True, max_rx_page_size=PAGE_SIZE, netmem_tx=True):
        if not 1 <= num_rx_queues <= 64:
            raise NetmemError(EINVAL, f"NetDevice: num_rx_queues {num_rx_queues} not in 1..64")
        _check_mtu(mtu)
        _check_max_rx_page_size(max_rx_page_size)
        pcidev = _pcidev(machine, name, pcidev)
        self = super().__new__(cls, machine, pcidev, 0, mtu, num_rx_queues)
        self.pcidev = pcidev
        return self

    def __init__(self, machine, name="eth0", num_rx_queues=4, pcidev=None, mtu=1500,
                 mp_aware=True, max_rx_page_size=PAGE_SIZE, netmem_tx=True):
        self.name = name
        self.mtu = mtu
        self.num_rx_queues = num_rx_queues
        self.real_num_rx_queues = num_rx_queues
        self.mp_aware = mp_aware
        self.queue_mgmt_ops = True          # drivers without the queue API: set False
        self.max_rx_page_size = max_rx_page_size
        # queue_mgmt_ops->supported_params
        self.supported_params = QCFG_RX_PAGE_SIZE if max_rx_page_size > PAGE_SIZE else 0
        self.xdp_prog = False
        self.xdp_frags = False              # the program is a multi-buffer one
        self.registered = True
        self.running = True                 # netif_running(): IFF_UP (dev_open()/dev_close())
        self.tcp_data_split = "auto"
        self.vlan_devices = set()           # (vid,) and (vid, inner): register_vlan_device()
        self.hds_thresh = 0
        self.rx_ring_size = DEFAULT_RING_SIZE
        self.ifindex = machine._register_netdev(self)
        self.rx_queues = [RxQueue(self, i) for i in range(num_rx_queues)]
        self.ethtool = Ethtool(self)
        self.txq = TxQueue(self, netmem_tx)
        self._indir = [i % num_rx_queues for i in range(_core.INDIR_SIZE)]
        self._rxfh_configured = False       # IFF_RXFH_CONFIGURED: the user set the table
        self._key = _core.RSS_DEFAULT_KEY
        self._rules = {}
        for q in self.rx_queues:
            self._start(q.idx, self.ndo_queue_mem_alloc(q.idx, netdev_queue_config(self, q.idx)))

    def __repr__(self):
        return f"<NetDevice {self.name} ifindex {self.ifindex} rxq {self.real_num_rx_queues}>"

    @property
    def netmem_tx(self):
        """``netdev->netmem_tx``: the driver can transmit net_iov frags."""
        return self.txq.netmem_tx

    @property
    def hds_enabled(self):
        """Header split as the driver runs it: only when set "on" (auto means off here)."""
        return self.tcp_data_split == "on"

    # -- queue management ops ------------------------------------------------------------------

    def ndo_default_qcfg(self, qcfg):
        """Models ``bnxt_queue_default_qcfg()`` (Linux 7.0): PAGE_SIZE buffers. Only a driver
        with ``QCFG_RX_PAGE_SIZE`` has the op: the others leave ``rx_page_size`` 0."""
        if self.supported_params:
            qcfg.rx_page_size = PAGE_SIZE

    def ndo_validate_qcfg(self, qcfg):
        """Models ``bnxt_validate_qcfg()`` as plugged into the queue ops (Linux 7.0; a driver
        without ``QCFG_RX_PAGE_SIZE`` has no op, ``netdev_nop_validate_qcfg()``): ERANGE for an
        ``rx_page_size`` that is not a power of two or not in PAGE_SIZE..``max_rx_page_size``.
        Departs: no pre-P5 chips, whose EINVAL for anything but PAGE_SIZE is not modelled."""
        if not self.supported_params:
            return
        size = qcfg.rx_page_size
        if size & (size - 1) or not PAGE_SIZE <= size <= self.max_rx_page_size:
            raise NetmemError(ERANGE, f"ndo_validate_qcfg: {self.name} rx_page_size {size} is "
                                      f"not a power of 2 in {PAGE_SIZE}..{self.max_rx_page_size}")

    def ndo_queue_mem_alloc(self, idx, qcfg):
        """Models ``ndo_queue_mem_alloc(dev, qcfg, ...)``: the queue's new page pools (a payload
        pool that takes the queue's memory provider, of the order ``qcfg.rx_page_size`` gives
        with header split, and a header pool of 4 KiB pages)."""
        q = self.rx_queues[idx]
        m = self.machine
        nid = max(getattr(self.pcidev, "numa_node", -1), -1)
        hds = self.hds_enabled
        flags = PP_FLAG_DMA_MAP | PP_FLAG_DMA_SYNC_DEV
        order = (max(qcfg.rx_page_size, PAGE_SIZE) // PAGE_SIZE).bit_length() - 1 if hds else 0
        buf = PAGE_SIZE << order if hds else _core.RX_BUF_SIZE
        mp = q.mp if self.mp_aware else None
        pool = page_pool_create(m, PagePoolParams(
            order=order, pool_size=self.rx_ring_size, nid=nid, dev=self.pcidev, napi=q.napi,
            dma_dir=DMA_FROM_DEVICE, max_len=buf, flags=flags | (
                PP_FLAG_ALLOW_UNREADABLE_NETMEM if self.mp_aware else 0),
            netdev=self, queue_idx=idx), provider=mp)
        hdr_pool = None
        if hds:
            try:
                hdr_pool = page_pool_create(m, PagePoolParams(
                    order=0, pool_size=self.rx_ring_size, nid=nid, dev=self.pcidev, napi=q.napi,
                    dma_dir=DMA_FROM_DEVICE, max_len=_core.HDR_BUF_SIZE, flags=flags,
                    netdev=self, queue_idx=idx))
            except NetmemError:
                pool.destroy()
                raise
        return QueueMem(pool, hdr_pool)

    def ndo_queue_mem_free(self, mem):
        """Models ``ndo_queue_mem_free()``: destroy the pools (deferred while buffers are out)."""
        for pool in (mem.pool, mem.hdr_pool):
            if pool is not None:
                pool.destroy()

    def ndo_queue_start(self, idx, mem):
        """Models ``ndo_queue_start()``: post the rings from ``mem``'s pools."""
        self._start(idx, mem)

    def ndo_queue_stop(self, idx):
        """Models ``ndo_queue_stop()``: take every posted buffer back; returns the old mem."""
        q = self.rx_queues[idx]
        self._rxq_stop(idx)
        mem, q.mem = q.mem, None
        return mem

    def _start(self, idx, mem):
        q = self.rx_queues[idx]
        q.mem = mem
        self._rxq_start(idx, q.cpu, q.napi, mem.hdr_pool, mem.pool, self.rx_ring_size,
                        mem.hdr_pool is not None, self.hds_thresh)
        for pool in (mem.pool, mem.hdr_pool):
            if pool is not None:
                pool._raise_pending()

    def _restart_all(self):
        if not self.running:                # a down device takes the settings at open
            return
        for q in self.rx_queues[:self.real_num_rx_queues]:
            netdev_rx_queue_restart(self, q.idx)

    # -- up and down ---------------------------------------------------------------------------

    def dev_open(self):
        """Models ``dev_open()`` (``ip link set dev eth0 up``): ``ndo_open`` makes each queue's
        memory (new page pools, over the queue's provider if one is bound) and starts it. A
        device that is up: nothing. A failure stops the queues already started (the device
        stays down) and raises."""
        self._check_registered("dev_open")
        if self.running:
            return
        started = []
        try:
            for q in self.rx_queues[:self.real_num_rx_queues]:
                qcfg = netdev_queue_config(self, q.idx)
                self._start(q.idx, self.ndo_queue_mem_alloc(q.idx, qcfg))
                started.append(q.idx)
        except NetmemError:
            for idx in started:
                self.ndo_queue_mem_free(self.ndo_queue_stop(idx))
            raise
        self.running = True

    def dev_close(self):
        """Models ``dev_close()`` (``ip link set dev eth0 down``): ``ndo_stop`` stops every
        queue and frees its memory; a page pool with buffers still out (in sockets, or held)
        stays listed by ``page-pool-get`` with its ``detach-time`` until they come home
        (``page_pool_release_retry()``, once a second). A device that is down: nothing."""
        self._check_registered("dev_close")
        if not self.running:
            return
        self.running = False
        for q in self.rx_queues[:self.real_num_rx_queues]:
            if q.mem is not None:
                self.ndo_queue_mem_free(self.ndo_queue_stop(q.idx))

    # -- receive ---------------------------------------------------------------------------------

    def receive(self, trace, start=0, count=None, clock=True):
        """Frames ``[start, start + count)`` of a ``PacketTrace`` arrive: steering (ntuple,
        then RSS), NAPI polls of 64 on each queue's CPU, the device's DMA writes, skbs, GRO and
        TCP all run in C. With ``clock``, the virtual clock follows the trace's timestamps
        (from where it stands at the call), so timers (page-pool release, IOMMU flush queues)
        fire as the replay goes, and frame i arrives (its DMA write, for a profile's skb
        timestamps) at its timestamp on that clock. After each call into C (``RECEIVE_CHUNK``
        frames) the trace is told those frames are done with (``PacketTrace.release()``, where
        the trace has it), so a streamed trace keeps the frames of one call resident. Returns
        the frames given to the device."""
        self._check_registered("receive")
        if not self.running:
            raise NetmemError(ENETDOWN, f"receive: {self.name} is down (netif_running())")
        n = len(trace.offsets)
        end = n if count is None else min(n, start + count)
        if not 0 <= start <= end:
            raise NetmemError(EINVAL, f"receive: frames [{start}, {end}) outside the trace")
        ts = trace.timestamps
        release = getattr(trace, "release", None)     # a duck-typed trace may not have it
        t0, base = self.machine.clock_ns, (int(ts[start]) if end > start else 0)
        pos = start
        while pos < end:
            nxt = min(end, pos + RECEIVE_CHUNK)
            self._receive(trace.arena, trace.offsets, trace.lengths, pos, nxt,
                          ts if clock else None, t0 - base)
            if release is not None:
                release(pos, nxt)
            self._raise_pending()
            if clock:
                due = t0 + int(ts[nxt - 1]) - base
                if due > self.machine.clock_ns:
                    self.machine.advance((due - self.machine.clock_ns) / 1e9)
            pos = nxt
        return end - start

    def _raise_pending(self):
        for q in self.rx_queues:
            if q.mem is not None:
                for pool in (q.mem.pool, q.mem.hdr_pool):
                    if pool is not None:
                        pool._raise_pending()
        self.machine._flush_warnings()

    def stats(self):
        """Device counters (rx_nohandler, rx_dropped, rx_length_errors and
        rx_otherhost_dropped: frames with a VLAN id no VLAN device takes, which
        ``ip_rcv_core()`` drops)."""
        return self._dev_stats()

    # -- VLAN devices --------------------------------------------------------------------------

    def register_vlan_device(self, vid, inner=None):
        """Models ``register_vlan_device()`` (``ip link add link eth0 type vlan id VID``): a
        VLAN device with id ``vid`` on this device or, with ``inner``, one with id ``inner``
        over that VLAN device (QinQ). Tagged frames reach IP only through a VLAN device of
        their id (or behind a priority tag, id 0); others are PACKET_OTHERHOST. EINVAL for an
        id outside 0..4094, ENODEV for ``inner`` without the outer device, EEXIST for a device
        that exists, ENOSPC past 64 stacked devices (the model's table). Departs: a VLAN
        device has no ifindex or counters of its own, and 802.1Q and 802.1AD are not told
        apart."""
        self._check_registered("register_vlan_device")
        key = _vlan_key(vid, inner)
        if key in self.vlan_devices:
            raise NetmemError(EEXIST, f"register_vlan_device: VLAN device {key} exists")
        if inner is not None and (vid,) not in self.vlan_devices:
            raise NetmemError(ENODEV, f"register_vlan_device: no VLAN device {vid} under "
                                      f"{inner}")
        if not self._vlan_set(vid, -1 if inner is None else inner, True):
            raise NetmemError(ENOSPC, "register_vlan_device: 64 stacked VLAN devices")
        self.vlan_devices.add(key)

    def unregister_vlan_device(self, vid, inner=None):
        """Models ``unregister_vlan_dev()``: the VLAN device goes, and the ones over it; ENODEV
        when there is none."""
        key = _vlan_key(vid, inner)
        if key not in self.vlan_devices:
            raise NetmemError(ENODEV, f"unregister_vlan_dev: no VLAN device {key}")
        for k in sorted(self.vlan_devices):
            if k[0] == vid and (inner is None or k == key):
                self._vlan_set(k[0], k[1] if len(k) == 2 else -1, False)
                self.vlan_devices.discard(k)

    # -- XDP -------------------------------------------------------------------------------------

    def attach_xdp(self, frags=False):
        """Attach an XDP program, a multi-buffer one (``xdp_has_frags``) with ``frags``.
        Models the checks of ``dev_xdp_install()``: EBUSY for a single-buffer program while
        tcp-data-split is on, and for any program while a memory provider is bound."""
        if self.hds_enabled and not frags:
            raise NetmemError(EBUSY, "dev_xdp_install: unable to install XDP to device using "
                                     "tcp-data-split")
        if any(q.mp is not None for q in self.rx_queues[:self.real_num_rx_queues]):
            raise NetmemError(EBUSY, "dev_xdp_install: unable to install XDP to device using "
                                     "memory provider")
        self.xdp_prog = True
        self.xdp_frags = bool(frags)

    def detach_xdp(self):
        self.xdp_prog = self.xdp_frags = False

    # -- teardown ------------------------------------------------------------------------------

    def unregister(self):
        """Models ``unregister_netdevice()``: providers' ``uninstall`` (dev_memory_provider_
        uninstall()), every queue stopped and its pools destroyed, pools still waiting for
        buffers handed to the loopback device (``page_pool_unreg_netdev()``), the ifindex
        released."""
        if not self.registered:
            return
        err = None
        for q in self.rx_queues:
            if q.mp is not None:
                try:
                    mp_uninstall(q.mp, q)
                except Exception as e:      # the provider's: raised once the device is gone
                    err = err or e
        self.registered = False
        for q in self.rx_queues:
            if q.mem is not None:
                self.ndo_queue_mem_free(self.ndo_queue_stop(q.idx))
        page_pool_unreg_netdev(self)
        del self.machine.netdevs[self.ifindex]
        self.machine._flush_warnings()
        if err is not None:
            raise err

    def _check_registered(self, fn):
        if not self.registered:
            raise NetmemError(19, f"{fn}: {self.name} is unregistered")


class _Loopback:
    """The namespace's loopback device (``lo``, ifindex 1) as page pools see it: where
    ``page_pool_unreg_netdev()`` moves the pools of a device that goes away."""

    ifindex = 1
    name = "lo"

    def __repr__(self):
        return "<lo ifindex 1>"


LOOPBACK = _Loopback()


def page_pool_unreg_netdev(dev):
    """Models ``page_pool_unreg_netdev()`` (the NETDEV_UNREGISTER notifier of
    net/core/page_pool_user.c): every pool of ``dev`` still listed, i.e. destroyed but waiting
    for buffers in flight, gets the loopback device as its netdev, so ``page-pool-get`` keeps
    showing it, without an ifindex."""
    for pool in dev.machine.page_pools:
        if pool.netdev is dev:
            pool.params.netdev = LOOPBACK


def _check_max_rx_page_size(size):
    if not isinstance(size, int) or size & (size - 1) or \
            not PAGE_SIZE <= size <= PAGE_SIZE << MAX_PAGE_ORDER:
        raise NetmemError(EINVAL, f"NetDevice: max_rx_page_size {size!r} is not a power of 2 in "
                                  f"{PAGE_SIZE}..{PAGE_SIZE << MAX_PAGE_ORDER}")


def _vlan_key(vid, inner):
    for v in (vid, inner):
        if v is not None and (not isinstance(v, int) or not 0 <= v < VLAN_N_VID - 1):
            raise NetmemError(EINVAL, f"register_vlan_device: VLAN id {v!r} not in 0..4094")
    return (vid,) if inner is None else (vid, inner)


def _check_mtu(mtu):
    if not ETH_MIN_MTU <= mtu <= ETH_MAX_MTU:
        raise NetmemError(EINVAL, f"dev_set_mtu: mtu {mtu} not in {ETH_MIN_MTU}..{ETH_MAX_MTU}")


def _pcidev(machine, name, pcidev):
    if pcidev is not None:
        return pcidev
    try:
        return machine.pci[name]
    except KeyError:
        pass
    pci = machine.pci
    return pci.add_endpoint(pci.add_root_port(pci.host_bridges[0]), name, kind="nic")


# ---- the queue API ------------------------------------------------------------------------------

def __netdev_queue_config(dev, idx, validate):
    """Models ``__netdev_queue_config()`` (net/core/netdev_config.c, Linux 7.0): zeroed, the
    driver's defaults (``ndo_default_qcfg``), validated, the provider's ``rx_page_size`` from
    ``rxq->mp_params`` when set, validated again (``ndo_validate_qcfg`` only with
    ``validate``). Returns a new ``NetdevQueueConfig``."""
    qcfg = NetdevQueueConfig()
    dev.ndo_default_qcfg(qcfg)
    if validate:
        dev.ndo_validate_qcfg(qcfg)
    mpp = dev.rx_queues[idx].mp_params
    if mpp.rx_page_size:
        qcfg.rx_page_size = mpp.rx_page_size
    if validate:
        dev.ndo_validate_qcfg(qcfg)
    return qcfg


def netdev_queue_config(dev, idx):
    """Models ``netdev_queue_config()``: queue ``idx``'s configuration as its driver reads it,
    not validated."""
    return __netdev_queue_config(dev, idx, False)


def netdev_queue_config_validate(dev, idx):
    """Models ``netdev_queue_config_validate()``: the same, validated by the driver; raises its
    ``NetmemError`` (ERANGE from the bnxt-like driver)."""
    return __netdev_queue_config(dev, idx, True)


def netdev_rx_queue_restart(dev, idx):
    """Models ``netdev_rx_queue_restart()``: ``netdev_queue_config()``, then
    ``netdev_rx_queue_reconfig()`` with it."""
    return netdev_rx_queue_reconfig(dev, idx, netdev_queue_config(dev, idx))


def netdev_rx_queue_reconfig(dev, idx, qcfg_new):
    """Models ``netdev_rx_queue_reconfig()`` (Linux 7.0): new memory for ``qcfg_new`` (checked
    by ``page_pool_check_memory_provider()``: ENODATA when the driver ignored the provider),
    stop, start on the new memory, free the old (its pools live while their buffers are in
    flight).
    On a device that is down the new memory is made, checked and freed (``swap(new_mem,
    old_mem)``): the queue starts at ``dev_open()``."""
    dev._check_registered("netdev_rx_queue_restart")
    if not dev.queue_mgmt_ops:
        raise NetmemError(EOPNOTSUPP, "netdev_rx_queue_restart: no queue_mgmt_ops")
    q = dev.rx_queues[idx]
    new_mem = dev.ndo_queue_mem_alloc(idx, qcfg_new)
    if q.mp is not None and (new_mem.pool.provider is not q.mp):
        dev.ndo_queue_mem_free(new_mem)
        raise NetmemError(ENODATA, "page_pool_check_memory_provider: no page pool of queue "
                                   f"{idx} took the memory provider")
    if not dev.running:                 # swap(new_mem, old_mem): the new memory is freed
        dev.ndo_queue_mem_free(new_mem)
        return
    old_mem = dev.ndo_queue_stop(idx)
    dev.ndo_queue_start(idx, new_mem)
    if old_mem is not None:
        dev.ndo_queue_mem_free(old_mem)
    dev.machine._trace_record(_core.TRACEPOINTS["netmem:netdev_rx_queue_restart"], 0, dev.ifindex,
                              idx, 0, 0)


def netif_mp_open_rxq(dev, idx, provider):
    """Models ``__netif_mp_open_rxq()`` (``__net_mp_open_rxq()`` until mainline renamed it,
    7.1 or later; ``net_mp_open_rxq`` stays as an alias), as of Linux 7.0: every check and
    errno (EOPNOTSUPP for a provider's ``rx_page_size`` on a driver without
    ``QCFG_RX_PAGE_SIZE``), then ``rxq->mp_params`` takes the provider and its
    ``rx_page_size``, the queue config is validated (the driver's errno) and the queue restarts
    on it; a failure zeroes ``mp_params`` again."""
    if not dev.queue_mgmt_ops:
        raise NetmemError(EOPNOTSUPP, "netif_mp_open_rxq: driver has no queue_mgmt_ops")
    if not 0 <= idx < dev.real_num_rx_queues:
        raise NetmemError(ERANGE, "netif_mp_open_rxq: rx queue index out of range")
    if dev.tcp_data_split != "on":
        raise NetmemError(EINVAL, "netif_mp_open_rxq: tcp-data-split is disabled")
    if dev.hds_thresh:
        raise NetmemError(EINVAL, "netif_mp_open_rxq: hds-thresh is not zero")
    if dev.xdp_prog:
        raise NetmemError(EEXIST, "netif_mp_open_rxq: unable to custom memory provider to device "
                                  "with XDP program attached")
    rx_page_size = _provider_rx_page_size(provider)
    if rx_page_size and not dev.supported_params & QCFG_RX_PAGE_SIZE:
        raise NetmemError(EOPNOTSUPP, "netif_mp_open_rxq: device does not support: rx_page_size")
    q = dev.rx_queues[idx]
    if q.mp is not None:
        raise NetmemError(EEXIST, "netif_mp_open_rxq: designated queue already memory provider "
                                  "bound")
    if q.af_xdp:
        raise NetmemError(EBUSY, "netif_mp_open_rxq: designated queue already in use by AF_XDP")
    q.mp_params = MpParams(provider, rx_page_size)
    try:
        netdev_rx_queue_reconfig(dev, idx, netdev_queue_config_validate(dev, idx))
    except NetmemError:
        q.mp_params = MpParams()
        raise


def _provider_rx_page_size(provider):
    """The provider's ``rx_page_size`` (``pp_memory_provider_params.rx_page_size``, a u32):
    EINVAL for anything else."""
    size = getattr(provider, "rx_page_size", 0)
    if isinstance(size, bool) or not isinstance(size, int) or not 0 <= size < 1 << 32:
        raise NetmemError(EINVAL, f"netif_mp_open_rxq: the provider's rx_page_size {size!r} is "
                                  "not a u32 (bytes; 0: not requested)")
    return int(size)


def netif_mp_close_rxq(dev, idx, provider):
    """Models ``__netif_mp_close_rxq()`` (``__net_mp_close_rxq()`` before the rename;
    ``net_mp_close_rxq`` stays as an alias): clear the provider and restart the queue on pages.
    Quietly nothing after unregister; a provider that is not the installed one is a WARN."""
    if not 0 <= idx < dev.real_num_rx_queues:
        dev.machine._warn(f"netif_mp_close_rxq: queue {idx} out of range (WARN_ON_ONCE)")
        return
    q = dev.rx_queues[idx]
    if not dev.registered and q.mp is None:
        return
    if q.mp is not provider:
        dev.machine._warn(f"netif_mp_close_rxq: queue {idx} has another provider (WARN_ON_ONCE)")
        return
    q.mp_params = MpParams()
    if dev.registered:
        netdev_rx_queue_restart(dev, idx)


#: The names before mainline's rename (``net_mp_open_rxq()``/``net_mp_close_rxq()``, 6.12 to
#: 7.0), kept so that code written against them runs unchanged.
net_mp_open_rxq = netif_mp_open_rxq
net_mp_close_rxq = netif_mp_close_rxq


# ---- ethtool ------------------------------------------------------------------------------------

class Ethtool:
    """ethtool-like configuration of a NetDevice (``nic.ethtool``)."""

    def __init__(self, nic):
        self.nic = nic

    def get_ringparam(self):
        n = self.nic
        return {"rx_pending": n.rx_ring_size, "rx_max_pending": RX_MAX_PENDING,
                "tcp_data_split": n.tcp_data_split, "hds_thresh": n.hds_thresh,
                "hds_thresh_max": _core.HDS_THRESH_MAX}

    def set_ringparam(self, tcp_data_split=None, hds_thresh=None, rx_ring_size=None):
        """Models ``ethnl_set_rings()``: checks, then every queue restarts on the new rings."""
        n = self.nic
        n._check_registered("set_ringparam")
        split = n.tcp_data_split if tcp_data_split is None else tcp_data_split
        thresh = n.hds_thresh if hds_thresh is None else hds_thresh
        size = n.rx_ring_size if rx_ring_size is None else rx_ring_size
        if split not in TCP_DATA_SPLIT:
            raise NetmemError(EINVAL, f"set_ringparam: tcp_data_split {split!r} is not one of "
                                      f"{', '.join(TCP_DATA_SPLIT)}")
        if not isinstance(thresh, int) or not 0 <= thresh <= _core.HDS_THRESH_MAX:
            raise NetmemError(EINVAL, f"set_ringparam: hds_thresh {thresh!r} exceeds the "
                                      f"maximum {_core.HDS_THRESH_MAX}")
        if not isinstance(size, int) or not 1 <= size <= RX_MAX_PENDING:
            raise NetmemError(EINVAL, f"set_ringparam: requested ring size {size!r} exceeds "
                                      f"maximum {RX_MAX_PENDING}")
        bound = any(q.mp is not None for q in n.rx_queues)
        if bound and split != "on":
            raise NetmemError(EINVAL, "set_ringparam: can't disable tcp-data-split while "
                                      "device has memory provider enabled")
        if bound and thresh:
            raise NetmemError(EINVAL, "set_ringparam: can't set non-zero hds_thresh while "
                                      "device is memory provider enabled")
        if split == "on" and n.xdp_prog and not n.xdp_frags:     # dev_xdp_sb_prog_count()
            raise NetmemError(EINVAL, "set_ringparam: tcp-data-split can not be enabled with "
                                      "single buffer XDP")
        if (split, thresh, size) == (n.tcp_data_split, n.hds_thresh, n.rx_ring_size):
            return
        n.tcp_data_split, n.hds_thresh, n.rx_ring_size = split, thresh, size
        n._restart_all()

    def get_channels(self):
        return {"rx": self.nic.real_num_rx_queues, "max_rx": self.nic.num_rx_queues}

    def set_channels(self, rx):
        """Models ``ethnl_set_channels()``: refuses counts that would drop a queue a memory
        provider, a user-set indirection table (``ethtool_get_max_rxfh_channel()`` looks only
        at a table with IFF_RXFH_CONFIGURED) or an ntuple rule uses; stops or starts queues. A
        default table is spread again over the new count, as drivers do with
        ``ethtool_rxfh_indir_default()``."""
        n = self.nic
        n._check_registered("set_channels")
        if not isinstance(rx, int) or not 1 <= rx <= n.num_rx_queues:
            raise NetmemError(EINVAL, f"set_channels: requested channel count {rx!r} exceeds "
                                      f"maximum {n.num_rx_queues}")
        if any(q.mp is not None for q in n.rx_queues[rx:]):
            raise NetmemError(EINVAL, "set_channels: requested channel counts are too low for "
                                      "existing memory provider setting")
        if n._rxfh_configured and max(n._indir) >= rx:
            raise NetmemError(EINVAL, "set_channels: requested channel counts are too low for "
                                      "existing indirection table settings")
        if any(r[-1] >= rx for r in n._rules.values()):
            raise NetmemError(EINVAL, "set_channels: requested channel counts are too low for "
                                      "existing ntuple filter settings")
        old = n.real_num_rx_queues
        for q in n.rx_queues[rx:old]:
            if q.mem is not None:
                n.ndo_queue_mem_free(n.ndo_queue_stop(q.idx))
        n.real_num_rx_queues = rx
        if not n._rxfh_configured:
            n._indir = [i % rx for i in range(_core.INDIR_SIZE)]
            n._set_rss(n._indir, n._key)
        n._set_num_rxq(rx)
        for q in n.rx_queues[old:rx] if n.running else ():
            n._start(q.idx, n.ndo_queue_mem_alloc(q.idx, netdev_queue_config(n, q.idx)))

    def add_ntuple(self, flow_type, src_ip=None, dst_ip=None, src_port=None, dst_port=None,
                   queue=0):
        """``ethtool -N ... action queue``: a steering rule; returns its id (location, the
        lowest free). Rules match in id order, before RSS."""
        n = self.nic
        if flow_type not in ("tcp4", "tcp6"):
            raise NetmemError(EINVAL, f"add_ntuple: flow_type {flow_type!r} is not tcp4 or tcp6")
        family = 4 if flow_type == "tcp4" else 6
        src, dst = _addr(src_ip, family), _addr(dst_ip, family)
        for port in (src_port, dst_port):
            if port is not None and not (isinstance(port, int) and 0 <= port <= 0xffff):
                raise NetmemError(EINVAL, f"add_ntuple: port {port!r} out of range")
        if not isinstance(queue, int) or not 0 <= queue < n.real_num_rx_queues:
            raise NetmemError(EINVAL, f"add_ntuple: queue {queue!r} out of range")
        loc = next(i for i in range(len(n._rules) + 1) if i not in n._rules)
        n._rules[loc] = (loc, family, src, dst, src_port, dst_port, queue)
        n._set_rules([n._rules[k] for k in sorted(n._rules)])
        return loc

    def del_ntuple(self, rule_id):
        n = self.nic
        if rule_id not in n._rules:
            raise NetmemError(ENOENT, f"del_ntuple: no rule {rule_id}")
        del n._rules[rule_id]
        n._set_rules([n._rules[k] for k in sorted(n._rules)])

    def get_ntuple(self):
        return {loc: {"flow_type": f"tcp{r[1]}", "queue": r[6]} for loc, r in
                self.nic._rules.items()}

    def set_rxfh(self, equal=None, indir=None, key=None):
        """``ethtool -X``: ``equal=N`` spreads the table over queues 0..N-1; ``indir`` gives
        all its entries (either marks the table as the user's: IFF_RXFH_CONFIGURED); ``key``
        the 40-byte Toeplitz key."""
        n = self.nic
        size = _core.INDIR_SIZE
        if equal is not None and indir is not None:
            raise NetmemError(EINVAL, "set_rxfh: equal and indir exclude each other")
        table = list(n._indir)
        if equal is not None:
            if not isinstance(equal, int) or not 1 <= equal <= n.real_num_rx_queues:
                raise NetmemError(EINVAL, f"set_rxfh: equal {equal!r} out of range")
            table = [i % equal for i in range(size)]
        if indir is not None:
            table = list(indir)
            if len(table) != size or not all(isinstance(x, int) and
                                              0 <= x < n.real_num_rx_queues for x in table):
                raise NetmemError(EINVAL, f"set_rxfh: indir must be {size} queue numbers below "
                                          f"{n.real_num_rx_queues}")
        k = n._key if key is None else bytes(key)
        if len(k) != 40:
            raise NetmemError(EINVAL, "set_rxfh: the key must be 40 bytes")
        n._indir, n._key = table, k
        n._set_rss(table, k)
        if equal is not None or indir is not None:
            n._rxfh_configured = True

    def get_rxfh(self):
        return {"indir": list(self.nic._indir), "key": self.nic._key}

    def stats(self):
        """Per-queue counters (``ethtool -S``-like): packets, bytes, alloc failures, drops,
        faults, and GRO's."""
        return [q.stats() for q in self.nic.rx_queues[:self.nic.real_num_rx_queues]]


def _addr(ip, family):
    if ip is None:
        return None
    try:
        a = ipaddress.ip_address(ip)
    except ValueError:
        raise NetmemError(EINVAL, f"add_ntuple: {ip!r} is not an IP address") from None
    if a.version != family:
        raise NetmemError(EINVAL, f"add_ntuple: {ip} is not an IPv{family} address")
    return a.packed
