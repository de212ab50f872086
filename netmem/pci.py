"""PCI: the machine's topology, its BARs, and the p2pdma core.

Models the parts of drivers/pci the receive path reads: host bridges, root ports, switches and
endpoints (``struct pci_dev`` with ``pci_name()`` and ``pci_upstream_bridge()``), memory BARs placed
in the machine's physical address map above RAM and backed by lazily committed memory, and
drivers/pci/p2pdma.c (Linux 6.18): ``pci_p2pdma_add_resource()`` over a genalloc pool of pages,
publishing and finding providers, ``calc_map_type_and_dist()`` with its distances, ACS redirect
and host-bridge whitelist, and the map types cached per client. Endpoints are the DMA devices
(``netmem.dma.Device``). Every machine has a topology, ``m.pci``, with one host bridge, a root port
and a NIC, ``eth0``.

Departures (also in the docstrings): bus numbers are handed out in creation order and devices are
listed (``for_each_pci_dev``) in that order; BARs are 64-bit memory BARs of a power-of-two size of
at least a page, placed at naturally aligned addresses from ``mmio_base`` upward, with bus
address == physical address (x86); the p2pmem virtual address is the x86-64 direct map,
``PAGE_OFFSET + phys``; there are no virtual functions, no driver binding and no hot removal;
``pci_p2pdma_map_type()`` takes the provider ``pci_dev`` where the kernel takes its pagemap; where
the kernel dereferences NULL or BUG()s, the model raises ``NetmemError``;
``pci_p2pdma_remove_resource()`` is not in the kernel (the p2pdma memory provider's prototype).
"""
import dataclasses
import errno
import warnings

from netmem import genalloc
from netmem.dma import Device
from netmem.errors import NetmemError, NetmemWarning

__all__ = [
    "IORESOURCE_MEM",
    "PAGE_OFFSET",
    "PCI_P2PDMA_MAP_BUS_ADDR",
    "PCI_P2PDMA_MAP_NONE",
    "PCI_P2PDMA_MAP_NOT_SUPPORTED",
    "PCI_P2PDMA_MAP_THRU_HOST_BRIDGE",
    "PCI_P2PDMA_MAP_UNKNOWN",
    "PCI_VENDOR_ID_AMD",
    "PCI_VENDOR_ID_INTEL",
    "X86_VENDOR_AMD",
    "X86_VENDOR_INTEL",
    "PciBridge",
    "PciDev",
    "PciEndpoint",
    "PciHostBridge",
    "PciSwitch",
    "PciTopology",
    "calc_map_type_and_dist",
    "pci_alloc_p2pmem",
    "pci_bus_address",
    "pci_free_p2pmem",
    "pci_has_p2pmem",
    "pci_p2pdma_add_resource",
    "pci_p2pdma_distance",
    "pci_p2pdma_distance_many",
    "pci_p2pdma_map_type",
    "pci_p2pdma_remove_resource",
    "pci_p2pmem_find",
    "pci_p2pmem_find_many",
    "pci_p2pmem_publish",
    "pci_p2pmem_virt_to_bus",
    "pci_resource_flags",
    "pci_resource_len",
    "pci_resource_start",
]

# include/linux/pci-p2pdma.h: enum pci_p2pdma_map_type
PCI_P2PDMA_MAP_UNKNOWN = 0          # not computed yet (never returned by the API)
PCI_P2PDMA_MAP_NONE = 1             # not a p2pdma transfer
PCI_P2PDMA_MAP_NOT_SUPPORTED = 2    # through a host bridge that does not allow it
PCI_P2PDMA_MAP_BUS_ADDR = 3         # through a switch: program PCI bus addresses
PCI_P2PDMA_MAP_THRU_HOST_BRIDGE = 4  # through the host bridge: map as usual
MAP_TYPE_NAMES = {0: "UNKNOWN", 1: "NONE", 2: "NOT_SUPPORTED", 3: "BUS_ADDR",
                  4: "THRU_HOST_BRIDGE"}

PCI_VENDOR_ID_INTEL = 0x8086        # include/linux/pci_ids.h
PCI_VENDOR_ID_AMD = 0x1022
X86_VENDOR_INTEL = 0                # arch/x86/include/asm/processor.h: cpuinfo_x86.x86_vendor
X86_VENDOR_AMD = 2

# include/uapi/linux/pci_regs.h: PCI Express device/port types
PCI_EXP_TYPE_ENDPOINT = 0x0
PCI_EXP_TYPE_ROOT_PORT = 0x4
PCI_EXP_TYPE_UPSTREAM = 0x5
PCI_EXP_TYPE_DOWNSTREAM = 0x6
PCI_EXP_TYPE_RC_END = 0x9           # root complex integrated endpoint

PCI_STD_NUM_BARS = 6
IORESOURCE_MEM = 0x00000200         # include/linux/ioport.h
PAGE_SHIFT = 12
PAGE_SIZE = 1 << PAGE_SHIFT
PAGE_OFFSET = 0xffff888000000000    # x86-64 direct map base (4-level paging, no KASLR)
SUBSECTION_SIZE = 2 << 20           # PAGES_PER_SUBSECTION << PAGE_SHIFT: memremap granularity

# drivers/pci/p2pdma.c: pci_p2pdma_whitelist[] of Linux 6.18.
REQ_SAME_HOST_BRIDGE = 1 << 0
PCI_P2PDMA_WHITELIST = (
    (PCI_VENDOR_ID_INTEL, 0x3c00, REQ_SAME_HOST_BRIDGE),    # Xeon E5 / Core i7
    (PCI_VENDOR_ID_INTEL, 0x3c01, REQ_SAME_HOST_BRIDGE),
    (PCI_VENDOR_ID_INTEL, 0x2f00, REQ_SAME_HOST_BRIDGE),    # Xeon E7 v3 / E5 v3 / Core i7
    (PCI_VENDOR_ID_INTEL, 0x2f01, REQ_SAME_HOST_BRIDGE),
    (PCI_VENDOR_ID_INTEL, 0x2030, 0),                       # Skylake-E
    (PCI_VENDOR_ID_INTEL, 0x2031, 0),
    (PCI_VENDOR_ID_INTEL, 0x2032, 0),
    (PCI_VENDOR_ID_INTEL, 0x2033, 0),
    (PCI_VENDOR_ID_INTEL, 0x2020, 0),
    (PCI_VENDOR_ID_INTEL, 0x09a2, 0),
)

# Vendor and device ids an endpoint gets by kind unless told (real parts, for lspci).
KIND_IDS = {"nic": (0x15b3, 0x101d),      # Mellanox ConnectX-6 Dx
            "gpu": (0x10de, 0x2330),      # NVIDIA H100 SXM5
            "nvme": (0x144d, 0xa80a),     # Samsung PM9A3
            "other": (0x1af4, 0x1041)}    # virtio-net
SWITCH_IDS = (0x1000, 0xc030)             # Broadcom PEX890xx


def _align_up(x, a):
    return (x + a - 1) // a * a


def _is_pow2(x):
    return x > 0 and not x & (x - 1)


@dataclasses.dataclass
class PciResource:
    """One memory BAR (``struct resource``): ``end`` inclusive, ``flags`` IORESOURCE_*. Its
    memory is the machine's (the BAR table of the core, ``m.pci.bar_memory()``)."""
    start: int
    end: int
    flags: int

    @property
    def size(self):
        return self.end - self.start + 1


class PciBus:
    """``struct pci_bus``: its number, the bridge above it (``self``, None for a root bus), the
    host bridge it hangs from, and its devices in the order they were added."""

    def __init__(self, number, host, bridge):
        self.number = number
        self.host = host
        self.self = bridge
        self.devices = []

    def _free_slot(self, first=0):
        used = {d.devfn >> 3 for d in self.devices}
        slot = next((s for s in range(first, 32) if s not in used), None)
        if slot is None:
            raise NetmemError(errno.ENOSPC, f"pci bus {self.number:02x}: all 32 slots are used")
        return slot


class PciDev:
    """``struct pci_dev``, the parts the p2pdma core reads. Made by ``PciTopology``."""

    def _pci_init(self, topo, bus, devfn, vendor, device, pcie_type, acs_redirect=False):
        self.topo = topo
        self.bus = bus
        self.devfn = devfn
        self.vendor = vendor
        self.device = device
        self.pcie_type = pcie_type
        self._acs_redirect = acs_redirect
        self.resources = {}
        self.p2pdma = None
        bus.devices.append(self)
        topo._devices.append(self)

    @property
    def acs_redirect(self):
        """ACS Ctrl has RR, CR or EC set: peer-to-peer requests go up to the root complex.
        Setting it re-routes the devices' accesses to BARs (the core's BAR table)."""
        return self._acs_redirect

    @acs_redirect.setter
    def acs_redirect(self, value):
        self._acs_redirect = value
        self.topo._update_bar_routes()

    @property
    def domain(self):
        return 0

    @property
    def pci_name(self):
        """``pci_name()``: domain:bus:slot.function."""
        return f"{self.domain:04x}:{self.bus.number:02x}:{self.devfn >> 3:02x}.{self.devfn & 7}"

    @property
    def upstream(self):
        """``pci_upstream_bridge()``: the bridge above this device's bus, None on a root bus."""
        return self.bus.self

    @property
    def host_bridge(self):
        """``pci_find_host_bridge(dev->bus)``."""
        return self.bus.host

    def __repr__(self):
        return f"<{type(self).__name__} {self.pci_name} [{self.vendor:04x}:{self.device:04x}]>"


class PciBridge(PciDev):
    """A PCI-to-PCI bridge: a root port or a switch port, with its secondary bus."""

    def __init__(self, topo, bus, devfn, vendor, device, pcie_type, acs_redirect):
        self._pci_init(topo, bus, devfn, vendor, device, pcie_type, acs_redirect)
        self.subordinate = topo._new_bus(bus.host, self)


class PciHostBridge:
    """``struct pci_host_bridge``: a root bus, with the host bridge device at 00.0 that
    ``pci_host_bridge_dev()`` returns and the whitelist reads."""

    def __init__(self, topo, vendor, device):
        self.bus = topo._new_bus(self, None)
        self.dev = PciDev()
        self.dev._pci_init(topo, self.bus, 0, vendor, device, None)

    def __repr__(self):
        return f"<PciHostBridge {self.dev.pci_name} [{self.dev.vendor:04x}:{self.dev.device:04x}]>"


class PciSwitch:
    """A PCIe switch: an upstream port and the downstream ports made as devices are attached
    below it (each carries the switch's ``acs_redirect``)."""

    def __init__(self, topo, bus, acs_redirect):
        self.topo = topo
        self.acs_redirect = acs_redirect
        self.upstream_port = PciBridge(topo, bus, 0, *SWITCH_IDS, PCI_EXP_TYPE_UPSTREAM, False)
        self.downstream_ports = []

    def _add_downstream_port(self):
        bus = self.upstream_port.subordinate
        port = PciBridge(self.topo, bus, bus._free_slot() << 3, *SWITCH_IDS,
                         PCI_EXP_TYPE_DOWNSTREAM, self.acs_redirect)
        self.downstream_ports.append(port)
        return port

    def __repr__(self):
        return (f"<PciSwitch {self.upstream_port.pci_name}, {len(self.downstream_ports)} "
                f"downstream port(s){', ACS redirect' if self.acs_redirect else ''}>")


class PciEndpoint(Device, PciDev):
    """A PCI function that does DMA: a ``netmem.dma.Device`` in the topology, with memory BARs.
    Made by ``PciTopology.add_endpoint()``."""

    def __repr__(self):
        return (f"<PciEndpoint {self.name} {self.pci_name} [{self.vendor:04x}:{self.device:04x}] "
                f"{self.kind}>")


@dataclasses.dataclass(eq=False)
class P2pdmaPagemap:
    """``struct pci_p2pdma_pagemap``: the ZONE_DEVICE range of one ``pci_p2pdma_add_resource()``
    and its ``percpu_ref`` (``refs``: p2pmem allocations out of it)."""
    provider: PciEndpoint
    start: int
    end: int
    bus_offset: int
    refs: int = 0
    live: bool = True

    def tryget_live(self):
        """``percpu_ref_tryget_live_rcu()``."""
        if not self.live:
            return False
        self.refs += 1
        return True

    def put(self):
        """``percpu_ref_put()``: the last put of a killed ref releases the range."""
        self.refs -= 1
        if not self.refs and not self.live:
            self._release()

    def kill(self):
        """``percpu_ref_kill()``: no new reference; released now if none is held, else at the
        last put (what ``memunmap_pages()`` waits for)."""
        self.live = False
        if not self.refs:
            self._release()

    def _release(self):
        """``memunmap_pages()`` of one range, and (not in the kernel, whose gen_pool keeps its
        chunks until the device goes) its chunk out of the device's gen_pool."""
        p2pdma = self.provider.p2pdma
        genalloc.gen_pool_remove_chunk(p2pdma.pool, PAGE_OFFSET + self.start)
        p2pdma.pgmaps.remove(self)
        self.provider.topo.machine.pr_info(f"pci {self.provider.pci_name}: removed peer-to-peer "
                                           f"DMA memory {self.start:#x}-{self.end:#x}")


class PciP2pdma:
    """``struct pci_p2pdma``: the genalloc pool of p2pmem (one unit per page), whether it is
    published, and the map type per client (``map_types``, keyed by ``map_types_idx()``)."""

    def __init__(self, pdev):
        self.pool = genalloc.gen_pool_create(PAGE_SHIFT, pdev.numa_node)
        self.p2pmem_published = False
        self.map_types = {}
        self.pgmaps = []

    @property
    def size(self):
        """sysfs ``p2pmem/size``."""
        return genalloc.gen_pool_size(self.pool)

    @property
    def available(self):
        """sysfs ``p2pmem/available``."""
        return genalloc.gen_pool_avail(self.pool)

    @property
    def published(self):
        """sysfs ``p2pmem/published``."""
        return self.p2pmem_published


class PciTopology:
    """The machine's PCI hierarchy (``m.pci``), its BARs in the physical address map, and the
    CPU the p2pdma core asks about (``cpu_vendor``, ``cpu_family``: AMD family 0x19 by default,
    as this machine; settable).

    Build it with ``add_host_bridge``, ``add_root_port``, ``add_switch`` and ``add_endpoint``.
    Bus numbers are handed out in creation order and ``devices`` lists every ``pci_dev`` in
    creation order, which is the order ``pci_p2pmem_find_many()`` walks (``for_each_pci_dev``).
    """

    def __init__(self, machine, cpu_vendor=X86_VENDOR_AMD, cpu_family=0x19):
        self.machine = machine
        self.cpu_vendor = cpu_vendor
        self.cpu_family = cpu_family
        self.host_bridges = []
        self._devices = []
        self._nr_buses = 0
        # 64-bit BARs above RAM and above the 32-bit MMIO hole.
        self.mmio_base = max(1 << 32, _align_up(machine.memory, 1 << 30))
        self._mmio_next = self.mmio_base
        self._bars = []             # (endpoint, bar, PciResource) of every BAR placed

    def __repr__(self):
        return (f"<PciTopology {len(self.host_bridges)} host bridge(s), {len(self._devices)} "
                f"device(s), {len(self.endpoints)} endpoint(s)>")

    def _new_bus(self, host, bridge):
        if self._nr_buses > 0xff:
            raise NetmemError(errno.ENOSPC, "pci: all 256 bus numbers are used")
        bus = PciBus(self._nr_buses, host, bridge)
        self._nr_buses += 1
        return bus

    # -- building ------------------------------------------------------------------------------

    def add_host_bridge(self, vendor, device):
        """A host bridge (with a root bus, and the device at 00.0 of ``vendor``:``device`` that
        the p2pdma whitelist reads)."""
        hb = PciHostBridge(self, vendor, device)
        self.host_bridges.append(hb)
        return hb

    def add_root_port(self, parent, acs_redirect=False):
        """A root port on ``parent``'s (a host bridge's) root bus, with its own secondary bus.
        ``acs_redirect``: its ACS Ctrl redirects peer-to-peer requests upstream."""
        if not isinstance(parent, PciHostBridge):
            raise NetmemError(errno.EINVAL, f"add_root_port: {parent!r} is not a host bridge")
        bus = parent.bus
        return PciBridge(self, bus, bus._free_slot(1) << 3, parent.dev.vendor, 0,
                         PCI_EXP_TYPE_ROOT_PORT, acs_redirect)

    def _link_bus(self, parent, what):
        """The empty secondary bus a switch or the first function of a device attaches to."""
        if isinstance(parent, PciSwitch):
            return parent._add_downstream_port().subordinate
        if isinstance(parent, PciBridge) and parent.pcie_type in (PCI_EXP_TYPE_ROOT_PORT,
                                                                  PCI_EXP_TYPE_DOWNSTREAM):
            if parent.subordinate.devices:
                raise NetmemError(errno.EBUSY, f"{what}: the link below {parent.pci_name} is "
                                               "taken (attach below the device already there)")
            return parent.subordinate
        raise NetmemError(errno.EINVAL, f"{what}: {parent!r} cannot have a device below it")

    def add_switch(self, parent, acs_redirect=False):
        """A switch below a root port, or below another switch (through a new downstream port).
        Devices attached below the switch each get a downstream port of their own, carrying
        ``acs_redirect``. Returns the switch."""
        return PciSwitch(self, self._link_bus(parent, "add_switch"), acs_redirect)

    def add_endpoint(self, parent, name, kind="nic", dma_mask_bits=64, bars=None, numa_node=0,
                     vendor=None, device=None):
        """A DMA-capable function: below a root port or a switch's new downstream port (function
        0 of a new device), next to an existing endpoint (another function of its device, as
        sibling functions are), or on a host bridge's root bus (an integrated endpoint).

        ``bars``: ``{bar: size}``, each a 64-bit memory BAR of a power-of-two size of at least a
        page, placed naturally aligned in the physical address map above RAM and backed by
        lazily committed memory. Departs: BAR register pairs and I/O BARs are not modeled."""
        if kind not in KIND_IDS:
            raise NetmemError(errno.EINVAL, f"add_endpoint: kind {kind!r} is not one of "
                                            f"{', '.join(KIND_IDS)}")
        if any(ep.name == name for ep in self.endpoints):
            raise NetmemError(errno.EEXIST, f"add_endpoint: an endpoint is already named {name!r}")
        if not (numa_node == -1 or 0 <= numa_node < self.machine.numa_nodes):
            raise NetmemError(errno.EINVAL, f"add_endpoint: no NUMA node {numa_node}")
        bars = dict(bars or {})
        for bar, size in bars.items():
            if not isinstance(bar, int) or not 0 <= bar < PCI_STD_NUM_BARS:
                raise NetmemError(errno.EINVAL, f"add_endpoint: BAR {bar!r} is not 0..5")
            if not isinstance(size, int) or not _is_pow2(size) or size < PAGE_SIZE:
                raise NetmemError(errno.EINVAL, f"add_endpoint: BAR {bar} size {size!r} is not "
                                                "a power of two of at least 4 KiB")
        if isinstance(parent, PciEndpoint):
            bus, slot = parent.bus, parent.devfn >> 3
            fns = {d.devfn & 7 for d in bus.devices if d.devfn >> 3 == slot}
            fn = next((f for f in range(8) if f not in fns), None)
            if fn is None:
                raise NetmemError(errno.ENOSPC, f"add_endpoint: device {parent.pci_name} has "
                                                "8 functions already")
            devfn, pcie_type = slot << 3 | fn, parent.pcie_type
        elif isinstance(parent, PciHostBridge):
            bus = parent.bus
            devfn, pcie_type = bus._free_slot(1) << 3, PCI_EXP_TYPE_RC_END
        else:
            bus = self._link_bus(parent, "add_endpoint")
            devfn, pcie_type = 0, PCI_EXP_TYPE_ENDPOINT
        ids = KIND_IDS[kind]
        ep = PciEndpoint(self.machine, name, dma_mask_bits)
        ep._pci_init(self, bus, devfn, ids[0] if vendor is None else vendor,
                     ids[1] if device is None else device, pcie_type)
        ep.kind = kind
        ep.numa_node = numa_node
        ep.device_memory = None
        for bar, size in sorted(bars.items()):
            self._place_bar(ep, bar, size)
        self._update_bar_routes()
        return ep

    def add_bar(self, ep, bar, size):
        """Give endpoint ``ep`` a new memory BAR ``bar`` of ``size`` bytes (a power of two of
        at least a page), placed and backed as ``add_endpoint()``'s are (what the PCI core's
        resource assignment does for a BAR resized at run time). Returns its resource. EINVAL for
        a bad BAR number or size, EBUSY when ``ep`` already has that BAR."""
        if not isinstance(ep, PciEndpoint):
            raise NetmemError(errno.EINVAL, f"add_bar: {ep!r} is not a PCI endpoint")
        if not isinstance(bar, int) or not 0 <= bar < PCI_STD_NUM_BARS:
            raise NetmemError(errno.EINVAL, f"add_bar: BAR {bar!r} is not 0..5")
        if not isinstance(size, int) or not _is_pow2(size) or size < PAGE_SIZE:
            raise NetmemError(errno.EINVAL, f"add_bar: BAR {bar} size {size!r} is not a power "
                                            "of two of at least 4 KiB")
        if bar in ep.resources:
            raise NetmemError(errno.EBUSY, f"add_bar: {ep.pci_name} already has BAR {bar}")
        res = self._place_bar(ep, bar, size)
        self._update_bar_routes()
        return res

    def _place_bar(self, ep, bar, size):
        """Naturally aligned from ``mmio_base`` up; its memory lives in the core's BAR table."""
        start = _align_up(self._mmio_next, size)
        self.machine._bar_add(start, size, ep.id, bar)
        res = PciResource(start, start + size - 1, IORESOURCE_MEM)
        self._mmio_next = start + size
        ep.resources[bar] = res
        self._bars.append((ep, bar, res))
        return res

    def _update_bar_routes(self):
        """Tell the core, for every BAR, which endpoints reach it by bus address: those that
        share an upstream bridge with its owner and see no ACS redirect on the way (where
        ``calc_map_type_and_dist()`` answers BUS_ADDR), as a switch routes their requests to
        the peer before any IOMMU sees them. Run whenever the topology or an ACS flag changes."""
        eps = self.endpoints
        for owner, _, res in self._bars:
            routed = []
            for client in eps:
                common, _, acs = _upstream_walk(owner, client)
                if common is not None and not acs:
                    routed.append(client.id)
            self.machine._bar_set_routes(res.start, routed)

    # -- queries -------------------------------------------------------------------------------

    @property
    def devices(self):
        """Every ``pci_dev`` (host bridge devices, ports, endpoints) in creation order."""
        return list(self._devices)

    @property
    def endpoints(self):
        return [d for d in self._devices if isinstance(d, PciEndpoint)]

    def __getitem__(self, name):
        """An endpoint by its name (``m.pci["eth0"]``) or a device by ``pci_name``."""
        for d in self._devices:
            if getattr(d, "name", None) == name or d.pci_name == name:
                return d
        raise KeyError(name)

    def bar_memory(self, phys, n):
        """The ``n`` bytes at physical address ``phys`` inside a BAR, as a writable memoryview
        (the memory device accesses reach, in the core's BAR table); None when ``phys`` is in no
        BAR. A range running past the end of its BAR is EINVAL."""
        if phys < self.mmio_base:
            return None
        if n < 0:
            raise NetmemError(errno.EINVAL, f"bar_memory: negative length {n}")
        try:
            return self.machine._phys_buffer(phys, n)
        except NetmemError as e:
            raise NetmemError(errno.EINVAL, f"bar_memory: {e.strerror}") from None

    def p2pdma_pagemap(self, phys):
        """The p2pdma pagemap (``is_pci_p2pdma_page()``) holding ``phys``, or None. A range being
    removed is still mapped until its last allocation is freed."""
        for ep in self.endpoints:
            for pg in (ep.p2pdma.pgmaps if ep.p2pdma is not None else ()):
                if pg.start <= phys <= pg.end:
                    return pg
        return None

    def p2pdma_state(self, client, phys):
        """Models ``pci_p2pdma_state()`` for a scatterlist entry at ``phys`` mapped by
        ``client``: ``(map type, bus address)``; MAP_NONE for memory that is not p2pdma's."""
        pg = self.p2pdma_pagemap(phys)
        if pg is None:
            return PCI_P2PDMA_MAP_NONE, None
        return pci_p2pdma_map_type(pg.provider, client), phys + pg.bus_offset

    def lspci(self):
        """One line per device, as ``lspci -nn`` would list them (in creation order)."""
        names = {PCI_EXP_TYPE_ROOT_PORT: "PCI bridge (root port)",
                 PCI_EXP_TYPE_UPSTREAM: "PCI bridge (switch upstream port)",
                 PCI_EXP_TYPE_DOWNSTREAM: "PCI bridge (switch downstream port)"}
        out = []
        for d in self._devices:
            if isinstance(d, PciEndpoint):
                what = f"{d.kind} {d.name}"
            else:
                what = names.get(d.pcie_type, "Host bridge")
            acs = " [ACS redirect]" if d.acs_redirect else ""
            out.append(f"{d.pci_name} {what} [{d.vendor:04x}:{d.device:04x}]{acs}")
        return out

    def cpu_supports_p2pdma(self):
        """Models ``cpu_supports_p2pdma()``: any AMD CPU of family 0x17 (Zen) or later."""
        return self.cpu_vendor == X86_VENDOR_AMD and self.cpu_family >= 0x17

    def _p2pmem_leaks(self):
        out = []
        for ep in self.endpoints:
            p = ep.p2pdma
            if p is not None and p.available < p.size:
                out.append(f"pci {ep.pci_name} ({ep.name}): {p.size - p.available} bytes of "
                           "p2pmem still allocated")
        return out


# ---- resources -----------------------------------------------------------------------------------

def _res(pdev, bar):
    return pdev.resources.get(bar) if isinstance(pdev, PciDev) else None


def pci_resource_start(pdev, bar):
    res = _res(pdev, bar)
    return res.start if res else 0


def pci_resource_len(pdev, bar):
    res = _res(pdev, bar)
    return res.size if res else 0


def pci_resource_flags(pdev, bar):
    res = _res(pdev, bar)
    return res.flags if res else 0


def pci_bus_address(pdev, bar):
    """``pci_bus_address()``: the BAR's address on the bus. Departs: equal to its physical
    address (x86, no bus offset)."""
    return pci_resource_start(pdev, bar)


# ---- the p2pdma core -----------------------------------------------------------------------------

def _pci_warn(pdev, msg):
    """``pci_warn()``: ``dev_warn()`` with the bus name, no driver being bound."""
    pdev.topo.machine.pr_warn(f"pci {pdev.pci_name}: {msg}")


def _check_endpoint(pdev, fn):
    if not isinstance(pdev, PciEndpoint):
        raise NetmemError(errno.EINVAL, f"{fn}: {pdev!r} is not a PCI endpoint")


def pci_p2pdma_add_resource(pdev, bar, size, offset):
    """Models ``pci_p2pdma_add_resource()``: offer ``size`` bytes of BAR ``bar`` from ``offset``
    (``size`` 0: the rest of the BAR) as p2pmem, a chunk of the device's genalloc pool (one unit
    per page) whose virtual address is the direct map of the BAR range and whose "physical"
    address is its bus address. Returns 0. Raises EINVAL as the kernel returns it: not a memory
    BAR, ``offset`` past its end, ``size + offset`` past its end, and (``devm_memremap_pages()``)
    a range not aligned to 2 MiB subsections; ENOMEM (with the kernel's WARN) when the range
    starts or ends in one added before, EEXIST when it contains one."""
    _check_endpoint(pdev, "pci_p2pdma_add_resource")
    if not pci_resource_flags(pdev, bar) & IORESOURCE_MEM:
        raise NetmemError(errno.EINVAL, f"pci_p2pdma_add_resource: BAR {bar} of "
                                        f"{pdev.pci_name} is not a memory BAR")
    length = pci_resource_len(pdev, bar)
    if offset < 0 or offset >= length:
        raise NetmemError(errno.EINVAL, f"pci_p2pdma_add_resource: offset {offset:#x} is past "
                                        f"BAR {bar} ({length:#x} bytes)")
    if not size:
        size = length - offset
    if size < 0 or size + offset > length:
        raise NetmemError(errno.EINVAL, f"pci_p2pdma_add_resource: {size:#x} bytes at "
                                        f"{offset:#x} run past BAR {bar} ({length:#x} bytes)")
    if pdev.p2pdma is None:                     # pcim_p2pdma_init() + pci_p2pdma_setup_pool()
        pdev.p2pdma = PciP2pdma(pdev)
    p2pdma = pdev.p2pdma
    start = pci_resource_start(pdev, bar) + offset
    end = start + size - 1
    for pg in p2pdma.pgmaps:                    # memremap_pages(): get_dev_pagemap() conflicts
        if pg.start <= start <= pg.end or pg.start <= end <= pg.end:
            warnings.warn(NetmemWarning("memremap_pages(): WARN(1, \"Conflicting mapping in "
                                        f"same section\"): {start:#x}-{end:#x}"), stacklevel=2)
            raise NetmemError(errno.ENOMEM, "pci_p2pdma_add_resource: range already mapped")
        if start < pg.start and pg.end < end:   # sparse_add_section(): subsection present
            raise NetmemError(errno.EEXIST, "pci_p2pdma_add_resource: range contains a mapped "
                                            "one")
    if (start | size) % SUBSECTION_SIZE:        # __add_pages(): check_pfn_span()
        raise NetmemError(errno.EINVAL, f"pci_p2pdma_add_resource: {start:#x}+{size:#x} is not "
                                        "aligned to 2 MiB subsections (devm_memremap_pages)")
    pgmap = P2pdmaPagemap(pdev, start, end, pci_bus_address(pdev, bar) - pci_resource_start(
        pdev, bar))
    genalloc.gen_pool_add_owner(p2pdma.pool, PAGE_OFFSET + start,
                                pci_bus_address(pdev, bar) + offset, size, pdev.numa_node, pgmap)
    p2pdma.pgmaps.append(pgmap)
    pdev.topo.machine.pr_info(f"pci {pdev.pci_name}: added peer-to-peer DMA memory "
                              f"{start:#x}-{end:#x}")
    return 0


def pci_p2pdma_remove_resource(pdev, bar, size, offset):
    """Not in the kernel, where p2pmem lives as long as its device (devm releases it at
    unbind): take back the range ``pci_p2pdma_add_resource(pdev, bar, size, offset)`` offered.
    Its pagemap's ref is killed at once (``pci_alloc_p2pmem()`` takes nothing more from it); the
    range stays mapped while allocations from it are out and goes with the last
    ``pci_free_p2pmem()`` (``memunmap_pages()``): out of the device's gen_pool and pagemaps,
    free to be added again. Returns 0. EINVAL when no live resource has that range."""
    _check_endpoint(pdev, "pci_p2pdma_remove_resource")
    start = pci_resource_start(pdev, bar) + offset
    end = start + (size or pci_resource_len(pdev, bar) - offset) - 1
    pgmaps = pdev.p2pdma.pgmaps if pdev.p2pdma is not None else []
    pgmap = next((pg for pg in pgmaps if pg.live and (pg.start, pg.end) == (start, end)), None)
    if pgmap is None:
        raise NetmemError(errno.EINVAL, f"pci_p2pdma_remove_resource: {pdev.pci_name} has no "
                                        f"p2pdma resource {start:#x}-{end:#x}")
    pgmap.kill()
    return 0


def pci_p2pmem_publish(pdev, publish):
    """Models ``pci_p2pmem_publish()``: let ``pci_p2pmem_find_many()`` offer this device's
    p2pmem to other drivers (nothing happens before ``pci_p2pdma_add_resource()``)."""
    if isinstance(pdev, PciDev) and pdev.p2pdma is not None:
        pdev.p2pdma.p2pmem_published = bool(publish)


def pci_has_p2pmem(pdev):
    """Models ``pci_has_p2pmem()``: p2pmem added and published."""
    return isinstance(pdev, PciDev) and pdev.p2pdma is not None and pdev.p2pdma.p2pmem_published


def pci_alloc_p2pmem(pdev, size):
    """Models ``pci_alloc_p2pmem()``: ``size`` bytes (whole pages) of the device's p2pmem, by
    first fit over its chunks, newest first, with a reference on the chunk's pagemap. Returns
    the virtual address, or 0."""
    _check_endpoint(pdev, "pci_alloc_p2pmem")
    p2pdma = pdev.p2pdma
    if p2pdma is None:
        return 0
    addr, ref = genalloc.gen_pool_alloc_owner(p2pdma.pool, size)
    if not addr:
        return 0
    if not ref.tryget_live():
        genalloc.gen_pool_free(p2pdma.pool, addr, size)
        return 0
    return addr


def pci_free_p2pmem(pdev, addr, size):
    """Models ``pci_free_p2pmem()``: give the pages back and drop the pagemap reference.
    Departs: raises EINVAL (nothing changed) where the kernel would dereference NULL (no
    p2pmem) or BUG() (a bad free)."""
    _check_endpoint(pdev, "pci_free_p2pmem")
    if pdev.p2pdma is None:
        raise NetmemError(errno.EINVAL, f"pci_free_p2pmem: {pdev.pci_name} has no p2pmem")
    ref = genalloc.gen_pool_free_owner(pdev.p2pdma.pool, addr, size)
    ref.put()


def pci_p2pmem_virt_to_bus(pdev, addr):
    """Models ``pci_p2pmem_virt_to_bus()``: the PCI bus address of p2pmem at ``addr`` (the pool
    holds bus addresses as its "physical" ones); 0 for address 0 or a device without p2pmem,
    -1 for an address outside it."""
    _check_endpoint(pdev, "pci_p2pmem_virt_to_bus")
    if not addr or pdev.p2pdma is None:
        return 0
    return genalloc.gen_pool_virt_to_phys(pdev.p2pdma.pool, addr)


def map_types_idx(client):
    """``map_types_idx()``: ``(domain << 16) | pci_dev_id(client)``."""
    return client.domain << 16 | client.bus.number << 8 | client.devfn


def _host_bridge_dev(host):
    """``pci_host_bridge_dev()``: the first device on the root bus if it is 00.0 or a root
    port."""
    root = host.bus.devices[0] if host.bus.devices else None
    if root is not None and (root.devfn == 0 or root.pcie_type == PCI_EXP_TYPE_ROOT_PORT):
        return root
    return None


def __host_bridge_whitelist(host, same_host_bridge, warn):
    root = _host_bridge_dev(host)
    if root is None:
        return False
    for vendor, device, flags in PCI_P2PDMA_WHITELIST:
        if root.vendor != vendor or root.device != device:
            continue
        return not (flags & REQ_SAME_HOST_BRIDGE and not same_host_bridge)
    if warn:
        _pci_warn(root, f"Host bridge not in P2PDMA whitelist: {root.vendor:04x}:"
                        f"{root.device:04x}")
    return False


def host_bridge_whitelist(a, b, warn):
    """Models ``host_bridge_whitelist()``: both host bridges allow p2p (one whitelisted host
    bridge, or two that do not need to be the same)."""
    host_a, host_b = a.host_bridge, b.host_bridge
    if host_a is host_b:
        return __host_bridge_whitelist(host_a, True, warn)
    return (__host_bridge_whitelist(host_a, False, warn)
            and __host_bridge_whitelist(host_b, False, warn))


def _upstream_walk(provider, client):
    """The walk of ``calc_map_type_and_dist()``: ``(common upstream bridge or None, distance,
    names of the bridges with ACS redirect on the way)``; the names count only with a common
    bridge (the provider's side up to and with it, then the client's side below it)."""
    a, b = provider, client
    acs_list = []
    dist_a = dist_b = 0
    common = None
    while a is not None:
        dist_b = 0
        if a.acs_redirect:
            acs_list.append(a.pci_name)
        bb = b
        while bb is not None:
            if a is bb:
                common = a
                break
            bb = bb.upstream
            dist_b += 1
        if common is not None:
            break
        a = a.upstream
        dist_a += 1
    if common is not None:
        bb = b
        while bb is not None and bb is not common:
            if bb.acs_redirect:
                acs_list.append(bb.pci_name)
            bb = bb.upstream
    return common, dist_a + dist_b, acs_list


def calc_map_type_and_dist(provider, client, verbose=False):
    """Models ``calc_map_type_and_dist()``: ``(map type, distance)`` between two PCI functions.

    The distance counts the hops to their nearest common upstream bridge and back: 0 for the
    same function, 2 for two functions of one device (up to the port and down), 4 across a
    switch; without a common bridge, the lengths of both paths to their root buses. With a
    common bridge and no ACS redirect on either path (the common bridge included), the map type
    is BUS_ADDR; otherwise the traffic goes through the host bridge, which is allowed
    (THRU_HOST_BRIDGE) on an AMD CPU of family 0x17 or later or by the whitelist, and is
    NOT_SUPPORTED elsewhere. ``verbose`` logs the kernel's explanation to the machine's dmesg (the
    whitelist's own warning is logged when ACS redirect sent the traffic up, verbose or not).
    The result is cached in the provider's ``map_types`` when it has p2pmem."""
    topo = provider.topo
    map_type = PCI_P2PDMA_MAP_THRU_HOST_BRIDGE
    common, dist, acs_list = _upstream_walk(provider, client)
    acs_redirects = False
    if common is not None:
        if not acs_list:
            map_type = PCI_P2PDMA_MAP_BUS_ADDR
        else:
            if verbose:
                _pci_warn(client, "ACS redirect is set between the client and provider "
                                  f"({provider.pci_name})")
                _pci_warn(client, "to disable ACS redirect for this path, add the kernel "
                                  f"parameter: pci=disable_acs_redir={';'.join(acs_list)}")
            acs_redirects = True
    if map_type != PCI_P2PDMA_MAP_BUS_ADDR and not topo.cpu_supports_p2pdma() and \
            not host_bridge_whitelist(provider, client, acs_redirects):
        if verbose:
            _pci_warn(client, "cannot be used for peer-to-peer DMA as the client and provider "
                              f"({provider.pci_name}) do not share an upstream bridge or "
                              "whitelisted host bridge")
        map_type = PCI_P2PDMA_MAP_NOT_SUPPORTED
    if provider.p2pdma is not None:
        provider.p2pdma.map_types[map_types_idx(client)] = map_type
    return map_type, dist


def _find_parent_pci_dev(dev):
    """``find_parent_pci_dev()``: a PCI function is its own; other devices have none here."""
    return dev if isinstance(dev, PciDev) else None


def pci_p2pdma_distance_many(provider, clients, verbose=False):
    """Models ``pci_p2pdma_distance_many()``: the sum of the distances from ``provider`` to each
    client, or -1 when there is no client, one is not a PCI device, or one cannot reach the
    provider (``verbose`` goes on through the clients to log every reason)."""
    _check_endpoint(provider, "pci_p2pdma_distance_many")
    clients = list(clients)
    if not clients:
        return -1
    not_supported = False
    total = 0
    for c in clients:
        pci_client = _find_parent_pci_dev(c)
        if pci_client is None:
            if verbose:
                provider.topo.machine.pr_warn(f"{getattr(c, 'name', c)}: cannot be used for "
                                              "peer-to-peer DMA as it is not a PCI device")
            return -1
        map_type, distance = calc_map_type_and_dist(provider, pci_client, verbose)
        if map_type == PCI_P2PDMA_MAP_NOT_SUPPORTED:
            not_supported = True
        if not_supported and not verbose:
            break
        total += distance
    return -1 if not_supported else total


def pci_p2pdma_distance(provider, client, verbose=False):
    """Models ``pci_p2pdma_distance()``: ``pci_p2pdma_distance_many()`` of one client."""
    return pci_p2pdma_distance_many(provider, [client], verbose)


def pci_p2pmem_find_many(clients):
    """Models ``pci_p2pmem_find_many()``: among devices with published p2pmem (in
    ``for_each_pci_dev`` order), those at the least total distance from the clients; one of them
    at random (``get_random_u32_below()``, from the machine's seeded ``random``), or None."""
    clients = list(clients)
    topo = next((c.topo for c in clients if isinstance(c, PciDev)), None)
    if topo is None:
        return None
    closest, closest_distance = [], None
    for pdev in topo.devices:
        if not pci_has_p2pmem(pdev):
            continue
        distance = pci_p2pdma_distance_many(pdev, clients, False)
        if distance < 0 or (closest_distance is not None and distance > closest_distance):
            continue
        if closest_distance is None or distance < closest_distance:
            closest, closest_distance = [], distance
        closest.append(pdev)
    if not closest:
        return None
    return closest[topo.machine.random.randrange(len(closest))]


def pci_p2pmem_find(client):
    """Models ``pci_p2pmem_find()``: ``pci_p2pmem_find_many()`` of one client."""
    return pci_p2pmem_find_many([client])


def pci_p2pdma_map_type(provider, client):
    """Models ``pci_p2pdma_map_type()``: the cached map type of ``client`` for ``provider``'s
    p2pmem, computed (verbosely) on a miss; NOT_SUPPORTED when the provider has no p2pmem or
    the client is not a PCI device. Departs: takes the provider ``pci_dev`` where the kernel
    takes its ``dev_pagemap``."""
    if not isinstance(provider, PciDev) or provider.p2pdma is None:
        return PCI_P2PDMA_MAP_NOT_SUPPORTED
    if not isinstance(client, PciDev):
        return PCI_P2PDMA_MAP_NOT_SUPPORTED
    map_type = provider.p2pdma.map_types.get(map_types_idx(client), PCI_P2PDMA_MAP_UNKNOWN)
    if map_type == PCI_P2PDMA_MAP_UNKNOWN:
        return calc_map_type_and_dist(provider, client, True)[0]
    return map_type
