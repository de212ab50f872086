"""The Machine: physical memory, the page allocator, execution context, a virtual clock.

One Machine is one simulated computer. It owns everything the other modules build on (the buddy
allocator and struct page table, net_iov descriptors, page pools, NAPI and DMA devices, the PCI
topology, the virtual clock and its timers, seeded randomness, tracepoints and the kernel log);
there is no module-level state, so two Machines never see each other.
"""
import contextlib
import heapq
import itertools
import logging
import random
import re
import warnings

from netmem import _core
from netmem.errors import NetmemError, NetmemWarning
from netmem.pci import PCI_VENDOR_ID_AMD, PciTopology
from netmem.trace import Trace

__all__ = ["Machine", "parse_size"]

_UNITS = {"": 1, "B": 1, "KIB": 1 << 10, "MIB": 1 << 20, "GIB": 1 << 30, "TIB": 1 << 40,
          "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
_log = logging.getLogger("netmem.kernel")

NSEC_PER_SEC = 1_000_000_000


IO_TLB_DEFAULT_SIZE = 64 << 20   # kernel/dma/swiotlb.c: the default bounce area


def _swiotlb_size(swiotlb, memory, iommu):
    """The bounce area: x86 sets one up only when memory reaches beyond 4 GiB and no IOMMU
    translates (pci_swiotlb_detect()); ``swiotlb=`` forces a size (0 for none). It is placed
    top-down below 4 GiB, as memblock_alloc_low() places it."""
    if swiotlb is not None:
        return parse_size(swiotlb) if swiotlb else 0
    if memory > 1 << 32 and iommu != "dma-iommu":
        return IO_TLB_DEFAULT_SIZE
    return 0


def parse_size(size):
    """``"1GiB"``, ``"512M"``, ``4096`` -> bytes."""
    if isinstance(size, int):
        if not 0 < size < 1 << 64:
            raise NetmemError(22, f"Machine: memory size {size} out of range")
        return size
    m = re.fullmatch(r"\s*(\d+)\s*([A-Za-z]*)\s*", str(size))
    if not m or m.group(2).upper() not in _UNITS:
        raise NetmemError(22, f"Machine: cannot read size {size!r} (use e.g. '1GiB')")
    return parse_size(int(m.group(1)) * _UNITS[m.group(2).upper()])


class Machine(_core.CoreMachine):
    """A simulated computer.

    ``Machine(memory="1GiB", numa_nodes=1, cpus=2, iommu="none", iommu_strict=False,
    swiotlb=None, seed=0)``: memory is split evenly over the nodes in 4 MiB blocks and lazily
    committed (a machine may declare more than this computer has); the first 1 MiB is reserved,
    as on x86. CPUs are spread over the nodes in order. ``iommu`` is ``none`` (dma-direct, swiotlb
    bouncing when a device cannot reach memory), ``passthrough`` (identity domains: dma-direct
    too) or ``dma-iommu`` (every device translates through its own domain; lazy flush queue
    unless ``iommu_strict``). ``random`` is the machine's ``random.Random(seed)``, for whatever
    the kernel picks at random. ``pci`` is its PCI topology: one host bridge (an AMD root
    complex, the CPU being AMD family 0x19), a root port and a NIC endpoint named ``eth0`` with a
    32 MiB BAR 0.
    """

    def __new__(cls, memory="1GiB", numa_nodes=1, cpus=2, iommu="none", iommu_strict=False,
                swiotlb=None, seed=0):
        if iommu not in _core.IOMMU_MODES:
            raise NetmemError(22, f"Machine: iommu must be one of {', '.join(_core.IOMMU_MODES)}")
        size = parse_size(memory)
        self = super().__new__(cls, size, numa_nodes, cpus, _core.IOMMU_MODES[iommu],
                               _swiotlb_size(swiotlb, size, iommu))
        self._iommu_strict = bool(iommu_strict)
        self._devices = {}
        return self

    def __init__(self, memory="1GiB", numa_nodes=1, cpus=2, iommu="none", iommu_strict=False,
                 swiotlb=None, seed=0):
        from netmem.dma import Iommu
        self.iommu = Iommu(self)
        self.seed = seed
        self.random = random.Random(seed)
        # tcp_send_challenge_ack()'s random draw: its own stream from the seed, so that
        # self.random's sequence does not depend on the traffic.
        _core._net_config(self, seed=random.Random(seed).getrandbits(32))
        from netmem.fault_inject import FailFunction
        self.fail_function = FailFunction(self)
        self.dmesg = []
        self.trace = Trace(self)
        self._timers = []
        self._timer_seq = itertools.count()
        self._pools = {}
        self._next_pool_id = 1
        self._next_napi_id = _core.MIN_NAPI_ID_
        self._niov_areas = {}
        self._next_area_id = 1
        self.netdevs = {}               # ifindex -> NetDevice; 1 is the loopback's
        self._next_ifindex = 2
        self._tcp = None
        self._dmabufs = {}          # fd -> netmem.dmabuf.DmaBuf, until the dma-buf is released
        self._next_dmabuf_fd = 3    # fds 0-2 are the standard streams'
        self._devmem_bindings = {}  # devmem bindings not yet freed (an ordered set)
        self._devmem_by_id = {}     # net_devmem_dmabuf_bindings: id -> bound binding
        self._devmem_next_id = 0    # xa_alloc_cyclic(), from 1
        self._p2pdma_providers = {}  # p2pdma providers not yet removed: id -> provider
        self._zcrx_ifqs = {}        # io_uring zcrx ifqs not yet freed (an ordered set)
        self._zcrx_files = {}       # exported zcrx fds (ZCRX_CTRL_EXPORT): fd -> ifq
        self._user_mappings = {}    # netmem.zcrx.mmap_anonymous(): user address -> mapping
        self.pci = PciTopology(self)
        host = self.pci.add_host_bridge(PCI_VENDOR_ID_AMD, 0x1480)   # Starship/Matisse RC
        self.pci.add_endpoint(self.pci.add_root_port(host), "eth0", kind="nic",
                              bars={0: 32 << 20})

    @property
    def tcp(self):
        """The machine's TCP receive stack (``netmem.tcp.TcpStack``)."""
        if self._tcp is None:
            from netmem.tcp import TcpStack
            self._tcp = TcpStack(self)
        return self._tcp

    def _register_netdev(self, nic):
        """Models ``register_netdevice()``'s ifindex (``dev_index_reserve()``: the lowest free
        from 2 upward; 1 is lo)."""
        if any(d.name == nic.name for d in self.netdevs.values()):
            raise NetmemError(17, f"register_netdevice: a device is already named {nic.name!r}")
        ifindex = self._next_ifindex
        while ifindex in self.netdevs:
            ifindex += 1
        self.netdevs[ifindex] = nic
        self._next_ifindex = ifindex + 1
        self.trace._name_dev(ifindex, nic.name)
        return ifindex

    def __repr__(self):
        return (f"<Machine {self.memory >> 20} MiB, {self.numa_nodes} node(s), {self.cpus} CPUs,"
                f" {len(self._pools)} page pool(s)>")

    # -- descriptors -----------------------------------------------------------------------------

    def netmem(self, ref):
        """A view of the descriptor behind a netmem_ref (page or net_iov)."""
        from netmem.netmem import NetmemView
        return NetmemView(self, ref)

    # -- execution context -----------------------------------------------------------------------

    @contextlib.contextmanager
    def on_cpu(self, cpu, softirq=True):
        """Run the block on ``cpu``, in softirq (NAPI) context unless ``softirq=False``.
        Outside any such block the caller is process context on CPU 0."""
        old = self._set_context(cpu, softirq)
        try:
            yield self
        finally:
            self._set_context(*old)

    # -- virtual clock and timers ----------------------------------------------------------------

    def advance(self, seconds):
        """Move the virtual clock forward, firing due timers in order (each sees its own time):
        the machine's timers and the IOMMU flush-queue timers of its devices."""
        if seconds < 0:
            raise NetmemError(22, "advance: time only moves forward")
        target = self.clock_ns + round(seconds * NSEC_PER_SEC)
        while True:
            when, fire = self._next_event()
            if when is None or when > target:
                break
            self._set_clock(max(when, self.clock_ns))
            fire()
        self._set_clock(target)

    def _next_event(self):
        best, fire = None, None
        if self._timers:
            best = self._timers[0][0]
            fire = self._fire_timer
        for dev in self._devices.values():
            when = dev._fq_deadline()
            if when and (best is None or when < best):
                best, fire = when, dev._fq_timeout
        return best, fire

    def _fire_timer(self):
        _, _, fn, _ = heapq.heappop(self._timers)
        fn()

    def add_timer(self, seconds, fn, what=None):
        """Call ``fn()`` once the clock has moved ``seconds`` ahead (schedule_delayed_work).
        ``what`` names the work in the kernel's words for ``leak_report()`` (default: the
        function's name)."""
        if seconds < 0:
            raise NetmemError(22, "add_timer: the delay is unsigned (jiffies never go back)")
        when = self.clock_ns + round(seconds * NSEC_PER_SEC)
        what = what or getattr(fn, "__qualname__", repr(fn))
        heapq.heappush(self._timers, (when, next(self._timer_seq), fn, what))

    @property
    def pending_timers(self):
        return len(self._timers)

    def quiesce(self, max_seconds=120):
        """Let deferred work run: advance the clock until no timer is pending, at most
        ``max_seconds`` of virtual time. Returns the seconds advanced."""
        _core._defer_flush_all(self)    # the CPUs' softirqs run their deferred skb frees
        start = self.clock_ns
        while self.clock_ns - start < max_seconds * NSEC_PER_SEC:
            when, _ = self._next_event()
            if when is None:
                break
            self.advance(max(0, when - self.clock_ns) / NSEC_PER_SEC)
        return (self.clock_ns - start) / NSEC_PER_SEC

    # -- kernel log and warnings -----------------------------------------------------------------

    def pr_info(self, msg):
        self.dmesg.append(msg)
        _log.info(msg)

    def pr_warn(self, msg):
        self.dmesg.append(msg)
        _log.warning(msg)

    def pr_crit(self, msg):
        self.dmesg.append(msg)
        _log.critical(msg)

    def _warn(self, msg):
        warnings.warn(NetmemWarning(msg), stacklevel=3)

    def _flush_warnings(self):
        recs, lost = self._take_warnings()
        for code, pool_id, netmem, val in recs:
            if code in _core.PRINTK:
                self.pr_info(_core.PRINTK[code].format(pool=self._device_name(pool_id), val=val))
                continue
            state = _core.STATE_NAMES.get(val, val)
            self._warn(_core.WARNINGS[code].format(pool=pool_id, netmem=netmem, val=val,
                                                   state=state))
        if lost:
            self._warn(f"{lost} more kernel warnings were lost (64 per call are kept)")

    # -- registries ------------------------------------------------------------------------------

    def _page_pool_list(self, pool):
        """Models ``page_pool_list()``: a cyclic id from 1 (xa_alloc_cyclic)."""
        pool_id = self._next_pool_id
        while pool_id in self._pools:
            pool_id = pool_id % 0xffffffff + 1
        self._next_pool_id = pool_id % 0xffffffff + 1
        pool._list(pool_id)
        self._pools[pool_id] = pool
        return pool_id

    def _page_pool_unlist(self, pool):
        self._pools.pop(pool.id, None)

    @property
    def page_pools(self):
        """Pools listed on the machine (created and not yet freed), in id order."""
        return [self._pools[k] for k in sorted(self._pools)]

    def page_pool_by_id(self, pool_id):
        return self._pools.get(pool_id)

    def _register_device(self, dev):
        dev_id = len(self._devices) + 1
        self._devices[dev_id] = dev
        return dev_id

    def _device_name(self, dev_id):
        dev = self._devices.get(dev_id)
        return getattr(dev, "name", dev_id)

    @property
    def devices(self):
        """The DMA devices of the machine, in creation order."""
        return list(self._devices.values())

    def _alloc_napi_id(self):
        napi_id = self._next_napi_id
        self._next_napi_id += 1
        return napi_id

    # -- accounting ------------------------------------------------------------------------------

    def leak_report(self):
        """What is not back where it started: netdevs still registered, sockets holding
        skbs, pools not freed (with their inflight), pages missing from the buddy allocator,
        net_iovs still attached to a pool, devmem bindings not freed, dma-bufs not released,
        p2pmem still allocated; and DMA into memory no live mapping covered
        (``iommu.unmapped_accesses``: no buffer is lost, but it must fail the leak check).
        Empty when clean.

        Deferred work the machine has not run yet (timers such as a page_pool's release
        retry, IOMMU flush queues, deferred skb frees) is no leak, but it holds things: when
        some line could go once it runs, the report opens with a line counting the pending
        work and asking for ``m.quiesce()``, and each such line ends in ``(may clear on
        m.quiesce())``; the lines without it are leaks whatever runs."""
        pending = self._pending_work()
        items = self._leaks(pending)
        if not any(may for _, may in items):
            return [line for line, _ in items]
        return [pending.summary(self.clock_ns)] + \
            [line + (" (may clear on m.quiesce())" if may else "") for line, may in items]

    def _pending_work(self):
        timers = [(when, what, fn) for when, _, fn, what in self._timers]
        timers += [(dev._fq_deadline(), f"fq_flush_timeout() of device {dev.name}",
                    dev._fq_timeout) for dev in self._devices.values() if dev._fq_deadline()]
        return _PendingWork(sorted(timers, key=lambda t: t[0]),
                            _core._net_config(self)["skbs_deferred"])

    def _leaks(self, pending):
        """The report's items, each with whether pending deferred work may clear it."""
        skbs = pending.skbs > 0
        out = [(f"netdev {d.name} (ifindex {i}) still registered", False)
               for i, d in self.netdevs.items()]
        if self._tcp is not None:
            out += [(line, skbs and "outside any socket" in line) for line in self._tcp._leaks()]
        retrying = False
        for pool in self.page_pools:
            state = "destroyed, waiting" if pool.destroy_cnt else "not destroyed"
            # The retry scrubs what rests in the cache and the ring; the rest is held.
            resting = pool.inflight <= pool.alloc_count + pool.ring_count
            retry = pending.owned_by(pool) and (resting or skbs)
            retrying |= retry
            line = (f"page_pool {pool.id} {state}: inflight {pool.inflight} "
                    f"(cache {pool.alloc_count}, ring {pool.ring_count})")
            out.append((line, retry))
        # Freed buffers go back to the buddy allocator or their provider; IOMMU flush queues
        # hold IOVAs only (the model has no page tables).
        memory = skbs or retrying
        missing = self.managed_pages() - self.nr_free_pages()
        if missing:
            pages, _ = self._ledger()
            held = ", ".join(f"{n} {_core.STATE_NAMES[s]}" for s, n in enumerate(pages) if n)
            out.append((f"{missing} pages missing from the buddy allocator"
                        + (f" (page_pool buffers: {held})" if held else ""), memory))
        _, niovs = self._ledger()
        attached = sum(niovs[1:])
        if attached:
            out.append((f"{attached} net_iovs still attached to a page_pool", memory))
        freeing = [b for b in self._devmem_bindings if pending.owned_by(b)]
        out += [(b.leak(), b in freeing) for b in self._devmem_bindings]
        out += [(d._leak_report(), any(b.dmabuf is d for b in freeing))
                for d in self._dmabufs.values()]
        out += [(ifq.leak(), memory) for ifq in self._zcrx_ifqs]
        out += [(f"user mapping at {a:#x} ({mp.length} bytes) not unmapped", False)
                for a, mp in self._user_mappings.items()]
        out += [(line, False) for line in self.pci._p2pmem_leaks()]
        out += [(line, False) for line in self.iommu._leaks()]
        return out


class _PendingWork:
    """The deferred work a machine has not run: ``timers`` as (when ns, what, fn) in firing
    order, and ``skbs`` deferred skb frees (``skb_attempt_defer_free()``)."""

    def __init__(self, timers, skbs):
        self.timers = timers
        self.skbs = skbs

    def owned_by(self, obj):
        """Whether a pending timer runs a method of ``obj``."""
        return any(getattr(fn, "__self__", None) is obj for _, _, fn in self.timers)

    def summary(self, now_ns):
        parts = []
        if self.timers:
            when, what, _ = self.timers[0]
            parts.append(f"{len(self.timers)} timer(s) (next at "
                         f"+{max(0, when - now_ns) / 1e6:g} ms: {what})")
        if self.skbs:
            parts.append(f"{self.skbs} deferred skb free(s)")
        return (f"pending deferred work: {', '.join(parts)}: call m.quiesce() before judging "
                "leaks")
