"""The machine of one run: one NIC and one GPU behind a PCIe switch, as devmem TCP setups put
them (``Rig``, which a provider's ``replay_setup()`` binds to), its host memory, and the chunk
sized for the provider's memory.
"""
import errno

from netmem.errors import NetmemError
from netmem.machine import Machine
from netmem.netdev import BNXT_MAX_RX_PAGE_SIZE, NetDevice
from netmem.page_pool import PAGE_SIZE, PP_ALLOC_CACHE_SIZE
from netmem.provider import ReplayBinding
from netmem.replay.config import NAPI_POLL_WEIGHT, BadInput


class Rig:
    """The simulated system of one run, which the provider's ``replay_setup(rig,
    **provider_args)`` binds to. Public, for providers:

    - ``machine``: the ``Machine``; ``nic``: its ``NetDevice`` ``eth1`` (``cfg.queues`` RX
      queues, header split on for a binding provider; bnxt-like, buffers up to
      ``BNXT_MAX_RX_PAGE_SIZE``, with ``--rx-buf-size``); ``gpu``: the ``PciEndpoint`` ``gpu0``
      behind the same PCIe switch (no BAR until a provider gives it one).
    - ``queues``: the indices of the RX queues the provider binds, in the order given
      (``--bind-queues``; every queue by default; none for host pages).
    - ``cfg``: the run's ``Config``; ``seed``: ``cfg.seed``, for the provider's randomness.
    - ``on_teardown(fn)``: ``fn()`` runs at teardown, after every socket is closed and before
      the NIC unregisters; the steps run in reverse order of registration, also when setup
      failed half way.
    - ``steer_to_bound()``: RSS over ``queues`` only.

    The replay's own: ``binds``, ``header_split``, ``app_cpu``, ``chunk``, ``binding`` (what
    ``replay_setup`` returned), and ``bind(cls)`` and ``teardown()``, which ``run()`` calls."""

    def __init__(self, cfg, binds):
        self.cfg = cfg
        self.seed = cfg.seed
        self.binds = binds
        split = cfg.header_split == "on" or (cfg.header_split is None and binds)
        self.header_split = split
        self.queues = (list(cfg.bind_queues) if cfg.bind_queues is not None else
                       list(range(cfg.queues))) if binds else []
        cpus = 1 if cfg.app_cpu == "same" else cfg.queues + 1
        self.app_cpu = 0 if cfg.app_cpu == "same" else cfg.queues
        self.machine = Machine(memory=_memory_for(cfg, split), cpus=cpus, iommu=cfg.iommu,
                               seed=cfg.seed)
        self.machine.tcp.open_on_data = True    # a capture may start in the middle of a flow
        pci = self.machine.pci
        sw = pci.add_switch(pci.add_root_port(pci.host_bridges[0]))
        self.gpu = pci.add_endpoint(sw, "gpu0", kind="gpu")
        nic_ep = pci.add_endpoint(sw, "eth1", kind="nic")
        self.nic = NetDevice(self.machine, "eth1", num_rx_queues=cfg.queues, pcidev=nic_ep,
                             mtu=cfg.mtu, max_rx_page_size=BNXT_MAX_RX_PAGE_SIZE
                             if cfg.rx_buf_size else PAGE_SIZE)
        try:
            self.nic.ethtool.set_ringparam(tcp_data_split="on" if split else "off",
                                           rx_ring_size=cfg.pool_size)
        except NetmemError:
            self.nic.unregister()
            raise
        self.chunk = cfg.chunk
        self.binding = ReplayBinding()
        self._undo = []

    def add_vlan_devices(self, ids):
        """``add_vlan_devices(self.nic, ids)``."""
        add_vlan_devices(self.nic, ids)

    def on_teardown(self, fn):
        """Run ``fn()`` at teardown (the last registered first)."""
        self._undo.append(fn)

    def steer_to_bound(self):
        """RSS over the bound queues only: the indirection table lists them in turn."""
        size = len(self.nic.ethtool.get_rxfh()["indir"])
        self.nic.ethtool.set_rxfh(indir=[self.queues[i % len(self.queues)]
                                         for i in range(size)])

    def bind(self, cls):
        """Bind the provider with ``cls.replay_setup(self, **cfg.provider_args)``, keep its
        ``ReplayBinding`` and size the chunk for its memory. BadInput for what setup refuses
        (what it did is undone at teardown)."""
        cfg = self.cfg
        try:
            binding = cls.replay_setup(self, **cfg.provider_args)
            if not isinstance(binding, ReplayBinding):
                raise NetmemError(errno.EINVAL, f"replay_setup() returned {binding!r}, not a "
                                                "netmem.provider.ReplayBinding")
        except NetmemError as e:
            raise BadInput(f"--provider {cfg.provider_name}: {e.strerror}", e.errno) from None
        self.binding = binding
        if binding.memory_map is not None and not cfg.closed_loop:
            # the closed loop takes a dma-buf smaller than the traffic: that is its point
            self.chunk = _provider_chunk(cfg, len(self.queues), binding.size)

    def teardown(self):
        """Close every socket, run the ``on_teardown`` steps, unregister the NIC, let deferred
        work run."""
        with self.machine.on_cpu(self.app_cpu, softirq=False):
            for sk in self.machine.tcp.sockets():
                sk.close()
        while self._undo:
            self._undo.pop()()
        self.nic.unregister()
        self.machine.quiesce()


def _memory_for(cfg, split):
    """Host memory for the pools of every queue (ring, ptr_ring, alloc cache; header pools
    too with header split) and the frames of a few chunks held by sockets, at least 1 GiB
    (lazily committed: only touched pages cost)."""
    per_pool = 2 * cfg.pool_size + PP_ALLOC_CACHE_SIZE
    pages = cfg.queues * per_pool * (2 if split else 1) + 4 * cfg.chunk
    return max(1 << 30, -(-pages * PAGE_SIZE * 2 // (1 << 30)) << 30)


def _provider_chunk(cfg, nbind, size):
    """The chunk for ``size`` bytes of provider memory: small enough that the payload buffers
    (``--rx-buf-size`` bytes each, else 4 KiB) of a chunk (twice over, for the out-of-order
    queues) fit beside everything the pools of ``nbind`` bound queues may hold (ring, ptr_ring
    and alloc cache each). BadInput when not even one NAPI budget of frames fits: the memory is
    too small for the traffic."""
    buf = cfg.rx_buf_size or PAGE_SIZE
    per_frame = -(-max(cfg.mtu - 40, 1) // buf)
    pools = nbind * (2 * cfg.pool_size + PP_ALLOC_CACHE_SIZE)
    frames = (size // buf - pools) // (2 * per_frame)
    if frames < NAPI_POLL_WEIGHT:
        need = (pools + 2 * per_frame * NAPI_POLL_WEIGHT) * buf
        raise BadInput(f"--provider {cfg.provider_name}: its memory, {size} bytes (--dmabuf-size "
                       f"for dmabuf and p2pdma), is too small for the traffic: the page pools of "
                       f"{nbind} bound queue(s) may hold {pools} buffers of {buf} bytes "
                       f"(twice --pool-size {cfg.pool_size} plus {PP_ALLOC_CACHE_SIZE} cached, "
                       f"each) besides the frames in flight; use at least {need} bytes",
                       errno.ENOSPC)
    return min(cfg.chunk, frames)


def add_vlan_devices(nic, ids):
    """VLAN devices on ``nic`` for a trace's tagged frames (``register_vlan_device()``), as the
    host the traffic went to has them (else the stack drops the frames as PACKET_OTHERHOST):
    one per outer id, one stacked per (outer, inner) pair; behind a priority tag (id 0) the
    inner id's. ``ids`` as ``PacketTrace.vlan_ids()`` gives them. Raises ``NetmemError``
    (ENOSPC) past 64 stacked pairs."""
    for key in ids:
        outer, inner = key[0], key[1] if len(key) == 2 else 0
        for want in ((outer,) if outer else (), (inner,) if inner and not outer else (),
                     (outer, inner) if outer and inner else ()):
            if want and want not in nic.vlan_devices:
                nic.register_vlan_device(*want)
