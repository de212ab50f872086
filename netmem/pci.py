"""PCI: the machine's topology and its BARs.

Models the parts of drivers/pci the receive path reads: host bridges, root ports, switches and
endpoints (``struct pci_dev`` with ``pci_name()`` and ``pci_upstream_bridge()``), and memory BARs
placed in the machine's physical address map above RAM and backed by lazily committed memory.
Endpoints are the DMA devices (``netmem.dma.Device``). Every machine has a topology, ``m.pci``,
with one host bridge, a root port and a NIC, ``eth0``.

Departures (also in the docstrings): bus numbers are handed out in creation order and devices are
listed (``for_each_pci_dev``) in that order; BARs are 64-bit memory BARs of a power-of-two size of
at least a page, placed at naturally aligned addresses from ``mmio_base`` upward, with bus
address == physical address (x86); there are no virtual functions, no driver binding and no hot
removal.
"""
import bisect
import dataclasses
import errno
import mmap

from netmem.dma import Device
from netmem.errors import NetmemError

__all__ = [
    "IORESOURCE_MEM",
    "PCI_VENDOR_ID_AMD",
    "PCI_VENDOR_ID_INTEL",
    "PciBridge",
    "PciDev",
    "PciEndpoint",
    "PciHostBridge",
    "PciSwitch",
    "PciTopology",
    "pci_bus_address",
    "pci_resource_flags",
    "pci_resource_len",
    "pci_resource_start",
]

PCI_VENDOR_ID_INTEL = 0x8086        # include/linux/pci_ids.h
PCI_VENDOR_ID_AMD = 0x1022

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
MAP_NORESERVE = 0x4000              # <sys/mman.h> on Linux (Python's mmap module lacks it)

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
    """One memory BAR (``struct resource``): ``end`` inclusive, ``flags`` IORESOURCE_*."""
    start: int
    end: int
    flags: int
    mem: mmap.mmap = dataclasses.field(repr=False)

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
        self.acs_redirect = acs_redirect  # ACS Ctrl has RR, CR or EC set
        self.resources = {}
        bus.devices.append(self)
        topo._devices.append(self)

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


class PciTopology:
    """The machine's PCI hierarchy (``m.pci``) and its BARs in the physical address map.

    Build it with ``add_host_bridge``, ``add_root_port``, ``add_switch`` and ``add_endpoint``.
    Bus numbers are handed out in creation order and ``devices`` lists every ``pci_dev`` in
    creation order (``for_each_pci_dev``).
    """

    def __init__(self, machine):
        self.machine = machine
        self.host_bridges = []
        self._devices = []
        self._nr_buses = 0
        # 64-bit BARs above RAM and above the 32-bit MMIO hole.
        self.mmio_base = max(1 << 32, _align_up(machine.memory, 1 << 30))
        self._mmio_next = self.mmio_base
        self._bars = []             # (start, end, PciResource), sorted by start

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
        for bar, size in sorted(bars.items()):
            ep.resources[bar] = self._place_bar(size)
        return ep

    def _place_bar(self, size):
        start = _align_up(self._mmio_next, size)
        mem = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | MAP_NORESERVE)
        res = PciResource(start, start + size - 1, IORESOURCE_MEM, mem)
        self._mmio_next = start + size
        bisect.insort(self._bars, (start, res.end, res), key=lambda t: t[0])
        return res

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
        """The ``n`` bytes at physical address ``phys`` inside a BAR, as a writable memoryview;
        None when ``phys`` is in no BAR. A range running past the end of its BAR is EINVAL."""
        i = bisect.bisect_right(self._bars, phys, key=lambda t: t[0]) - 1
        if i < 0 or phys > self._bars[i][1]:
            return None
        start, end, res = self._bars[i]
        if n < 0 or phys + n - 1 > end:
            raise NetmemError(errno.EINVAL, f"bar_memory: [{phys:#x}, +{n:#x}) runs past the "
                                            f"end of its BAR at {end:#x}")
        off = phys - start
        return memoryview(res.mem)[off:off + n]

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
