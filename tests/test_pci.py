"""Tests of ``netmem.pci`` against drivers/pci/p2pdma.c (Linux 6.18): the topology (names, bus
numbers, upstream bridges, BARs in the physical address map), ``calc_map_type_and_dist()``'s
distances for the same function, sibling functions, one switch, nested switches and separate
root ports, ACS redirect on either path, the host-bridge whitelist and the AMD rule, the
verbose explanations in dmesg, the map-type cache, ``pci_p2pdma_distance_many()``, publish and
``pci_p2pmem_find_many()``, p2pmem alloc/free/virt_to_bus, and the errno of bad input.

Every machine starts with 0000:00:00.0 (an AMD host bridge), the root port 0000:00:01.0 and
eth0 at 0000:01:00.0; ``lab()`` adds a root port 0000:00:02.0 with a switch (upstream port
0000:02:00.0, downstream ports on bus 03) holding gpu0 (0000:04:00.0) and eth1 (0000:05:00.0).
"""
import errno

import pytest

from netmem import Machine, NetmemError, NetmemWarning, PagePoolParams, page_pool_create
from netmem.dma import Device
from netmem.page_pool import PP_FLAG_DMA_MAP
from netmem.pci import (
    PAGE_OFFSET,
    PCI_P2PDMA_MAP_BUS_ADDR,
    PCI_P2PDMA_MAP_NOT_SUPPORTED,
    PCI_P2PDMA_MAP_THRU_HOST_BRIDGE,
    PCI_P2PDMA_MAP_UNKNOWN,
    PCI_VENDOR_ID_AMD,
    PCI_VENDOR_ID_INTEL,
    X86_VENDOR_AMD,
    X86_VENDOR_INTEL,
    PciEndpoint,
    calc_map_type_and_dist,
    map_types_idx,
    pci_alloc_p2pmem,
    pci_free_p2pmem,
    pci_has_p2pmem,
    pci_p2pdma_add_resource,
    pci_p2pdma_distance,
    pci_p2pdma_distance_many,
    pci_p2pdma_map_type,
    pci_p2pdma_remove_resource,
    pci_p2pmem_find,
    pci_p2pmem_find_many,
    pci_p2pmem_publish,
    pci_p2pmem_virt_to_bus,
    pci_resource_len,
    pci_resource_start,
)

MiB = 1 << 20
BUS, THRU, NOT = (PCI_P2PDMA_MAP_BUS_ADDR, PCI_P2PDMA_MAP_THRU_HOST_BRIDGE,
                  PCI_P2PDMA_MAP_NOT_SUPPORTED)


@pytest.fixture
def m():
    return Machine(memory="64MiB")


def lab(m, acs_switch=False, acs_port=False):
    """A second root port holding a switch with gpu0 and eth1 below it."""
    rp = m.pci.add_root_port(m.pci.host_bridges[0], acs_redirect=acs_port)
    sw = m.pci.add_switch(rp, acs_redirect=acs_switch)
    gpu = m.pci.add_endpoint(sw, "gpu0", kind="gpu", bars={0: 64 * MiB, 2: 2 * MiB})
    nic = m.pci.add_endpoint(sw, "eth1", kind="nic")
    return rp, sw, gpu, nic


def intel(m, device):
    """Make the machine an Intel one whose first host bridge is ``device``."""
    m.pci.cpu_vendor, m.pci.cpu_family = X86_VENDOR_INTEL, 6
    m.pci.host_bridges[0].dev.vendor = PCI_VENDOR_ID_INTEL
    m.pci.host_bridges[0].dev.device = device


def second_host(m, vendor, device):
    """Another host bridge with a root port and nvme0 below it (buses 06 and 07 after lab)."""
    hb = m.pci.add_host_bridge(vendor, device)
    return m.pci.add_endpoint(m.pci.add_root_port(hb), "nvme0", kind="nvme",
                              bars={0: 4 * MiB})


# ---- topology ----------------------------------------------------------------------------------

def test_default_machine_has_a_host_bridge_a_root_port_and_eth0(m):
    assert m.pci.lspci() == ["0000:00:00.0 Host bridge [1022:1480]",
                             "0000:00:01.0 PCI bridge (root port) [1022:0000]",
                             "0000:01:00.0 nic eth0 [15b3:101d]"]
    eth0 = m.pci["eth0"]
    assert isinstance(eth0, PciEndpoint) and isinstance(eth0, Device)
    assert eth0.name == "eth0" and eth0.dma_mask == 2**64 - 1 and eth0.numa_node == 0
    assert eth0.upstream is m.pci["0000:00:01.0"] and eth0.upstream.upstream is None
    assert eth0.host_bridge is m.pci.host_bridges[0]
    assert (m.pci.cpu_vendor, m.pci.cpu_family) == (X86_VENDOR_AMD, 0x19)


def test_bus_numbers_names_and_upstream_bridges(m):
    rp, sw, gpu, nic = lab(m)
    fn1 = m.pci.add_endpoint(gpu, "gpu0.1", kind="other")
    rcie = m.pci.add_endpoint(m.pci.host_bridges[0], "dsa0", kind="other")
    assert [d.pci_name for d in (rp, sw.upstream_port, *sw.downstream_ports, gpu, nic, fn1,
                                 rcie)] == [
        "0000:00:02.0", "0000:02:00.0", "0000:03:00.0", "0000:03:01.0", "0000:04:00.0",
        "0000:05:00.0", "0000:04:00.1", "0000:00:03.0"]
    assert gpu.upstream is sw.downstream_ports[0] and nic.upstream is sw.downstream_ports[1]
    assert sw.downstream_ports[0].upstream is sw.upstream_port
    assert sw.upstream_port.upstream is rp and rcie.upstream is None
    assert fn1.upstream is gpu.upstream
    assert m.pci.devices[-1] is rcie and len(m.pci.endpoints) == 5


def test_bars_sit_above_ram_naturally_aligned_and_hold_memory(m):
    _, _, gpu, _ = lab(m)
    big = m.pci.add_endpoint(m.pci.add_root_port(m.pci.host_bridges[0]), "gpu1", kind="gpu",
                             bars={0: 16 << 30})              # lazily committed: no RAM used
    eth0 = m.pci["eth0"]
    assert pci_resource_start(eth0, 0) == 1 << 32 == m.pci.mmio_base
    assert pci_resource_start(gpu, 0) == (1 << 32) + 64 * MiB   # 64 MiB aligned after eth0
    assert pci_resource_start(gpu, 2) == (1 << 32) + 128 * MiB
    assert pci_resource_start(big, 0) == 1 << 34 and pci_resource_len(big, 0) == 16 << 30
    assert pci_resource_len(gpu, 1) == 0
    view = m.pci.bar_memory(pci_resource_start(gpu, 2) + 100, 4)
    view[:] = b"p2p!"
    assert bytes(m.pci.bar_memory(pci_resource_start(gpu, 2) + 98, 8)) == b"\0\0p2p!\0\0"
    last = pci_resource_start(big, 0) + (16 << 30) - 8
    m.pci.bar_memory(last, 8)[:] = b"12345678"
    assert bytes(m.pci.bar_memory(last, 8)) == b"12345678"
    assert m.pci.bar_memory(4096, 8) is None                   # RAM, not a BAR
    assert m.pci.bar_memory(pci_resource_start(gpu, 2) + 2 * MiB, 1) is None   # a gap
    with pytest.raises(NetmemError) as e:
        m.pci.bar_memory(pci_resource_start(gpu, 2) + 2 * MiB - 4, 8)
    assert e.value.errno == errno.EINVAL


def test_topology_refusals(m):
    hb, rp0, eth0 = m.pci.host_bridges[0], m.pci["0000:00:01.0"], m.pci["eth0"]
    rp, sw, gpu, _ = lab(m)
    cases = [
        (lambda: m.pci.add_root_port(rp), errno.EINVAL),
        (lambda: m.pci.add_switch(rp0), errno.EBUSY),            # eth0 is on that link
        (lambda: m.pci.add_endpoint(rp, "x"), errno.EBUSY),      # the switch is
        (lambda: m.pci.add_switch(eth0), errno.EINVAL),
        (lambda: m.pci.add_endpoint(rp0, "eth0"), errno.EEXIST),
        (lambda: m.pci.add_endpoint(rp0, "x", kind="fpga"), errno.EINVAL),
        (lambda: m.pci.add_endpoint(rp0, "x", numa_node=1), errno.EINVAL),
        (lambda: m.pci.add_endpoint(rp0, "x", bars={6: 4096}), errno.EINVAL),
        (lambda: m.pci.add_endpoint(rp0, "x", bars={0: 3 * 4096}), errno.EINVAL),
        (lambda: m.pci.add_endpoint(rp0, "x", bars={0: 2048}), errno.EINVAL),
        (lambda: m.pci.add_endpoint(sw.upstream_port, "x"), errno.EINVAL),
    ]
    before = m.pci.lspci()
    for call, err in cases:
        with pytest.raises(NetmemError) as e:
            call()
        assert e.value.errno == err
    assert m.pci.lspci() == before
    for i in range(1, 8):
        assert m.pci.add_endpoint(gpu, f"gpu0.{i}", kind="other").devfn == i
    with pytest.raises(NetmemError) as e:
        m.pci.add_endpoint(gpu, "gpu0.8", kind="other")
    assert e.value.errno == errno.ENOSPC
    for _ in range(29):                                          # slots 3..31 of bus 00
        m.pci.add_root_port(hb)
    with pytest.raises(NetmemError) as e:
        m.pci.add_root_port(hb)
    assert e.value.errno == errno.ENOSPC


def test_an_endpoint_is_a_dma_device_for_page_pools(m):
    pool = page_pool_create(m, PagePoolParams(flags=PP_FLAG_DMA_MAP, dev=m.pci["eth0"],
                                              pool_size=64))
    ref = pool.alloc_netmem()
    assert m.pci["eth0"].nr_mapped == 64
    pool.put_netmem(ref)
    pool.destroy()
    m.quiesce()
    assert m.pci["eth0"].nr_mapped == 0


# ---- distances ---------------------------------------------------------------------------------

def test_same_function_is_distance_0(m):
    eth0 = m.pci["eth0"]
    assert calc_map_type_and_dist(eth0, eth0) == (BUS, 0)
    assert pci_p2pdma_distance(eth0, eth0) == 0


def test_sibling_functions_are_distance_2(m):
    eth0 = m.pci["eth0"]
    fn1 = m.pci.add_endpoint(eth0, "eth0f1", kind="nic")
    assert fn1.pci_name == "0000:01:00.1"
    assert calc_map_type_and_dist(eth0, fn1) == (BUS, 2)
    assert calc_map_type_and_dist(fn1, eth0) == (BUS, 2)


def test_same_switch_is_distance_4(m):
    _, _, gpu, nic = lab(m)
    assert calc_map_type_and_dist(gpu, nic) == (BUS, 4)
    assert pci_p2pdma_distance(nic, gpu) == 4


def test_nested_switches_add_two_per_level(m):
    _, sw, gpu, _ = lab(m)
    inner = m.pci.add_switch(sw)
    deep = m.pci.add_endpoint(inner, "nvme1", kind="nvme")
    # gpu: DSP, USP (2 up); nvme1: DSP', USP', DSP, USP (4 up).
    assert calc_map_type_and_dist(gpu, deep) == (BUS, 6)
    assert calc_map_type_and_dist(deep, gpu) == (BUS, 6)


def test_separate_root_ports_go_through_the_host_bridge(m):
    _, _, gpu, nic = lab(m)
    eth0 = m.pci["eth0"]
    # No common upstream bridge: the lengths of both paths to the root bus (eth0, RP = 2;
    # gpu, DSP, USP, RP = 4). AMD family 0x19 supports p2pdma through the host bridge.
    assert calc_map_type_and_dist(eth0, gpu) == (THRU, 6)
    assert calc_map_type_and_dist(eth0, m.pci.add_endpoint(m.pci.host_bridges[0], "dsa0",
                                                           kind="other")) == (THRU, 3)
    assert pci_p2pdma_distance_many(eth0, [gpu, nic]) == 12
    assert m.dmesg == []


# ---- ACS redirect ------------------------------------------------------------------------------

def test_acs_on_a_switch_sends_traffic_through_the_host_bridge(m):
    _, _, gpu, nic = lab(m, acs_switch=True)
    assert calc_map_type_and_dist(gpu, nic) == (THRU, 4)
    assert m.dmesg == []
    assert pci_p2pdma_distance(gpu, nic, verbose=True) == 4
    assert m.dmesg == [
        "pci 0000:05:00.0: ACS redirect is set between the client and provider (0000:04:00.0)",
        ("pci 0000:05:00.0: to disable ACS redirect for this path, add the kernel parameter: "
         "pci=disable_acs_redir=0000:03:00.0;0000:03:01.0")]


def test_acs_on_the_common_root_port_counts(m):
    rp0 = m.pci["0000:00:01.0"]
    rp0.acs_redirect = True
    fn1 = m.pci.add_endpoint(m.pci["eth0"], "eth0f1", kind="nic")
    assert calc_map_type_and_dist(m.pci["eth0"], fn1, verbose=True) == (THRU, 2)
    assert m.dmesg[-1].endswith("pci=disable_acs_redir=0000:00:01.0")


def test_acs_above_the_common_bridge_does_not_count(m):
    _, _, gpu, nic = lab(m, acs_port=True)                 # the root port above the switch
    assert calc_map_type_and_dist(gpu, nic) == (BUS, 4)


def test_acs_on_the_client_path_alone_counts(m):
    _, sw, gpu, nic = lab(m)
    sw.downstream_ports[1].acs_redirect = True             # eth1's port only
    assert calc_map_type_and_dist(gpu, nic, verbose=True) == (THRU, 4)
    assert m.dmesg[-1].endswith("pci=disable_acs_redir=0000:03:01.0")


def test_acs_on_an_intel_machine_needs_the_whitelist_and_says_so(m):
    _, _, gpu, nic = lab(m, acs_switch=True)
    intel(m, 0x1234)
    assert calc_map_type_and_dist(gpu, nic) == (NOT, 4)
    # The whitelist warns when ACS sent the traffic up, verbose or not.
    assert m.dmesg == ["pci 0000:00:00.0: Host bridge not in P2PDMA whitelist: 8086:1234"]
    m.dmesg.clear()
    assert pci_p2pdma_distance(gpu, nic, verbose=True) == -1
    assert m.dmesg == [
        "pci 0000:05:00.0: ACS redirect is set between the client and provider (0000:04:00.0)",
        ("pci 0000:05:00.0: to disable ACS redirect for this path, add the kernel parameter: "
         "pci=disable_acs_redir=0000:03:00.0;0000:03:01.0"),
        "pci 0000:00:00.0: Host bridge not in P2PDMA whitelist: 8086:1234",
        ("pci 0000:05:00.0: cannot be used for peer-to-peer DMA as the client and provider "
         "(0000:04:00.0) do not share an upstream bridge or whitelisted host bridge")]
    m.pci.host_bridges[0].dev.device = 0x2020
    assert calc_map_type_and_dist(gpu, nic) == (THRU, 4)


# ---- host bridge whitelist and the CPU ---------------------------------------------------------

@pytest.mark.parametrize(("vendor", "family", "map_type"), [
    (X86_VENDOR_AMD, 0x19, THRU), (X86_VENDOR_AMD, 0x17, THRU), (X86_VENDOR_AMD, 0x16, NOT),
    (X86_VENDOR_INTEL, 0x19, NOT)])
def test_cpu_rule_is_amd_family_0x17_and_later(m, vendor, family, map_type):
    _, _, gpu, _ = lab(m)
    m.pci.cpu_vendor, m.pci.cpu_family = vendor, family
    assert calc_map_type_and_dist(m.pci["eth0"], gpu) == (map_type, 6)
    assert m.dmesg == []                                   # no ACS: the whitelist is quiet


@pytest.mark.parametrize(("device", "map_type"), [
    (0x3c00, THRU), (0x3c01, THRU), (0x2f00, THRU), (0x2f01, THRU), (0x2030, THRU),
    (0x2031, THRU), (0x2032, THRU), (0x2033, THRU), (0x2020, THRU), (0x09a2, THRU),
    (0x2034, NOT), (0x1480, NOT)])
def test_whitelist_on_one_host_bridge(m, device, map_type):
    _, _, gpu, _ = lab(m)
    intel(m, device)
    assert calc_map_type_and_dist(m.pci["eth0"], gpu) == (map_type, 6)


def test_whitelisted_device_id_of_another_vendor_is_not(m):
    _, _, gpu, _ = lab(m)
    intel(m, 0x2020)
    m.pci.host_bridges[0].dev.vendor = PCI_VENDOR_ID_AMD
    assert calc_map_type_and_dist(m.pci["eth0"], gpu) == (NOT, 6)


@pytest.mark.parametrize(("first", "second", "map_type"), [
    (0x2f00, 0x2f00, NOT),          # REQ_SAME_HOST_BRIDGE: two of them are not the same one
    (0x3c00, 0x2020, NOT),
    (0x2020, 0x2030, THRU),         # Skylake-E parts need no same host bridge
    (0x09a2, 0x09a2, THRU),
    (0x2020, 0x1234, NOT),          # both must be listed
    (0x1234, 0x2020, NOT)])
def test_whitelist_across_two_host_bridges(m, first, second, map_type):
    intel(m, first)
    nvme = second_host(m, PCI_VENDOR_ID_INTEL, second)
    assert nvme.pci_name == "0000:03:00.0" and nvme.host_bridge is not m.pci["eth0"].host_bridge
    assert calc_map_type_and_dist(m.pci["eth0"], nvme) == (map_type, 4)
    assert calc_map_type_and_dist(nvme, m.pci["eth0"]) == (map_type, 4)


def test_two_amd_host_bridges_need_only_the_cpu(m):
    nvme = second_host(m, PCI_VENDOR_ID_AMD, 0x1480)
    assert calc_map_type_and_dist(nvme, m.pci["eth0"]) == (THRU, 4)


# ---- distance_many -----------------------------------------------------------------------------

def test_distance_many_sums_and_fails_on_any_client(m):
    _, _, gpu, nic = lab(m)
    eth0 = m.pci["eth0"]
    assert pci_p2pdma_distance_many(gpu, [gpu, nic, eth0]) == 0 + 4 + 6
    assert pci_p2pdma_distance_many(gpu, []) == -1
    intel(m, 0x1234)
    assert pci_p2pdma_distance_many(gpu, [nic, eth0]) == -1
    assert m.dmesg == []
    assert pci_p2pdma_distance_many(gpu, [eth0, eth0], verbose=True) == -1
    assert m.dmesg == 2 * [("pci 0000:01:00.0: cannot be used for peer-to-peer DMA as the client "
                            "and provider (0000:04:00.0) do not share an upstream bridge or "
                            "whitelisted host bridge")]


def test_a_client_that_is_not_a_pci_device(m):
    _, _, gpu, nic = lab(m)
    plain = Device(m, name="virt0")
    assert pci_p2pdma_distance_many(gpu, [nic, plain]) == -1
    assert m.dmesg == []
    assert pci_p2pdma_distance(gpu, plain, verbose=True) == -1
    assert m.dmesg == ["virt0: cannot be used for peer-to-peer DMA as it is not a PCI device"]
    assert pci_p2pdma_map_type(gpu, plain) == NOT          # no p2pmem on gpu0 either


# ---- the map type cache ------------------------------------------------------------------------

def test_map_type_is_computed_verbosely_once_then_cached(m):
    _, sw, gpu, nic = lab(m, acs_switch=True)
    assert pci_p2pdma_map_type(gpu, nic) == NOT            # gpu0 has no p2pmem yet
    pci_p2pdma_add_resource(gpu, 0, 0, 0)
    m.dmesg.clear()
    assert gpu.p2pdma.map_types == {}
    assert pci_p2pdma_map_type(gpu, nic) == THRU
    assert gpu.p2pdma.map_types == {map_types_idx(nic): THRU} and map_types_idx(nic) == 0x0500
    assert len(m.dmesg) == 2 and "ACS redirect is set" in m.dmesg[0]
    for dsp in sw.downstream_ports:                         # the cache is not invalidated,
        dsp.acs_redirect = False                            # as in the kernel
    assert pci_p2pdma_map_type(gpu, nic) == THRU and len(m.dmesg) == 2
    assert calc_map_type_and_dist(gpu, nic) == (BUS, 4)     # recomputing refreshes it
    assert pci_p2pdma_map_type(gpu, nic) == BUS
    assert pci_p2pdma_distance(gpu, m.pci["eth0"]) == 6     # distances fill it too
    assert gpu.p2pdma.map_types[map_types_idx(m.pci["eth0"])] == THRU
    assert PCI_P2PDMA_MAP_UNKNOWN not in gpu.p2pdma.map_types.values()


# ---- publish and find --------------------------------------------------------------------------

def test_find_many_picks_a_published_provider_at_the_least_distance(m):
    _, _, gpu, nic = lab(m)
    far = second_host(m, PCI_VENDOR_ID_AMD, 0x1480)
    assert pci_p2pmem_find(nic) is None
    for pdev in (gpu, far):
        pci_p2pdma_add_resource(pdev, 0, 0, 0)
    assert pci_p2pmem_find(nic) is None                    # added, not published
    assert not pci_has_p2pmem(gpu)
    pci_p2pmem_publish(far, True)
    assert pci_p2pmem_find_many([nic, gpu]) is far         # the only one
    pci_p2pmem_publish(gpu, True)
    assert pci_has_p2pmem(gpu) and gpu.p2pdma.published
    assert pci_p2pmem_find_many([nic, gpu]) is gpu         # 4 + 0 against 6 + 6
    assert pci_p2pmem_find(far) is far                     # a provider that is the client
    pci_p2pmem_publish(gpu, False)
    assert pci_p2pmem_find(nic) is far
    pci_p2pmem_publish(m.pci["eth0"], True)                # no p2pmem: nothing to publish
    assert not pci_has_p2pmem(m.pci["eth0"])
    assert pci_p2pmem_find_many([Device(m, name="virt0")]) is None
    intel(m, 0x1234)
    assert pci_p2pmem_find(nic) is None                    # far is unreachable now


def test_find_many_breaks_ties_with_the_machines_seeded_random():
    def picks(seed):
        m = Machine(memory="64MiB", seed=seed)
        _, sw, gpu, nic = lab(m)
        other = m.pci.add_endpoint(sw, "gpu1", kind="gpu", bars={0: 2 * MiB})
        for pdev in (gpu, other):
            pci_p2pdma_add_resource(pdev, 0, 0, 0)
            pci_p2pmem_publish(pdev, True)
        return [pci_p2pmem_find(nic).name for _ in range(12)]

    assert picks(1) == picks(1)
    assert {name for seed in range(4) for name in picks(seed)} == {"gpu0", "gpu1"}


# ---- p2pmem ------------------------------------------------------------------------------------

def test_add_resource_alloc_virt_to_bus_and_free(m):
    _, _, gpu, _ = lab(m)
    bar0, bar2 = pci_resource_start(gpu, 0), pci_resource_start(gpu, 2)
    assert pci_p2pdma_add_resource(gpu, 0, 0, 0) == 0
    assert pci_p2pdma_add_resource(gpu, 2, 0, 0) == 0
    assert m.dmesg == [(f"pci 0000:04:00.0: added peer-to-peer DMA memory {bar0:#x}-"
                        f"{bar0 + 64 * MiB - 1:#x}"),
                       (f"pci 0000:04:00.0: added peer-to-peer DMA memory {bar2:#x}-"
                        f"{bar2 + 2 * MiB - 1:#x}")]
    p2p = gpu.p2pdma
    assert (p2p.size, p2p.available, p2p.published) == (66 * MiB, 66 * MiB, False)
    a = pci_alloc_p2pmem(gpu, 100)                         # a page, from the newest chunk
    assert a == PAGE_OFFSET + bar2
    b = pci_alloc_p2pmem(gpu, 2 * MiB - 4096)              # the rest of BAR 2
    assert b == PAGE_OFFSET + bar2 + 4096
    c = pci_alloc_p2pmem(gpu, 5000)                        # BAR 2 is full: BAR 0
    assert c == PAGE_OFFSET + bar0
    assert pci_p2pmem_virt_to_bus(gpu, c + 10) == bar0 + 10
    assert pci_p2pmem_virt_to_bus(gpu, b) == bar2 + 4096
    assert pci_p2pmem_virt_to_bus(gpu, 0) == 0
    assert pci_p2pmem_virt_to_bus(gpu, PAGE_OFFSET) == -1
    assert p2p.available == 64 * MiB - 8192
    assert [pg.refs for pg in p2p.pgmaps] == [1, 2]
    m.pci.bar_memory(pci_p2pmem_virt_to_bus(gpu, c), 5)[:] = b"hello"
    assert bytes(m.pci.bar_memory(bar0, 5)) == b"hello"
    assert m.leak_report() == [(f"pci 0000:04:00.0 (gpu0): {2 * MiB + 8192} bytes of p2pmem "
                                "still allocated")]
    assert pci_alloc_p2pmem(gpu, 64 * MiB) == 0            # does not fit
    before = (p2p.available, [pg.refs for pg in p2p.pgmaps])
    for addr, size in ((c, 3 * 4096), (c + 2 * 4096, 4096), (PAGE_OFFSET, 4096)):
        with pytest.raises(NetmemError) as e:
            pci_free_p2pmem(gpu, addr, size)
        assert e.value.errno == errno.EINVAL
    assert (p2p.available, [pg.refs for pg in p2p.pgmaps]) == before
    for addr, size in ((a, 100), (b, 2 * MiB - 4096), (c, 5000)):
        pci_free_p2pmem(gpu, addr, size)
    assert p2p.available == p2p.size and [pg.refs for pg in p2p.pgmaps] == [0, 0]
    assert m.leak_report() == []


def test_alloc_without_p2pmem(m):
    eth0 = m.pci["eth0"]
    assert pci_alloc_p2pmem(eth0, 4096) == 0
    assert pci_p2pmem_virt_to_bus(eth0, PAGE_OFFSET + (1 << 32)) == 0
    with pytest.raises(NetmemError) as e:
        pci_free_p2pmem(eth0, PAGE_OFFSET + (1 << 32), 4096)
    assert e.value.errno == errno.EINVAL


def test_a_dead_pagemap_refuses_allocations(m):
    eth0 = m.pci["eth0"]
    pci_p2pdma_add_resource(eth0, 0, 0, 0)
    eth0.p2pdma.pgmaps[0].live = False                     # percpu_ref killed (device going)
    assert pci_alloc_p2pmem(eth0, 4096) == 0
    assert eth0.p2pdma.available == 32 * MiB


def test_remove_resource_waits_for_the_last_free(m):
    """Not a kernel call (the p2pdma provider's): the range goes with its last allocation."""
    eth0 = m.pci["eth0"]
    bar = pci_resource_start(eth0, 0)
    pci_p2pdma_add_resource(eth0, 0, 2 * MiB, 0)
    pci_p2pdma_add_resource(eth0, 0, 2 * MiB, 2 * MiB)
    a = pci_alloc_p2pmem(eth0, 4096)                       # the newest chunk: at 2 MiB
    with pytest.raises(NetmemError) as e:
        pci_p2pdma_remove_resource(eth0, 0, 4 * MiB, 0)    # not a range that was added
    assert e.value.errno == errno.EINVAL
    assert pci_p2pdma_remove_resource(eth0, 0, 2 * MiB, 2 * MiB) == 0
    pg = m.pci.p2pdma_pagemap(bar + 2 * MiB)
    assert (pg.live, pg.refs, eth0.p2pdma.size) == (False, 1, 4 * MiB)   # still mapped
    assert pci_alloc_p2pmem(eth0, 4096) == 0               # the dead chunk is searched first
    with pytest.raises(NetmemError) as e:
        pci_p2pdma_remove_resource(eth0, 0, 2 * MiB, 2 * MiB)             # already killed
    assert e.value.errno == errno.EINVAL
    pci_free_p2pmem(eth0, a, 4096)
    assert m.dmesg[-1] == (f"pci {eth0.pci_name}: removed peer-to-peer DMA memory "
                           f"{bar + 2 * MiB:#x}-{bar + 4 * MiB - 1:#x}")
    assert (m.pci.p2pdma_pagemap(bar + 2 * MiB), eth0.p2pdma.size) == (None, 2 * MiB)
    assert pci_alloc_p2pmem(eth0, 4096) == PAGE_OFFSET + bar
    pci_free_p2pmem(eth0, PAGE_OFFSET + bar, 4096)
    pci_p2pdma_remove_resource(eth0, 0, 2 * MiB, 0)        # nothing out: gone at once
    pci_p2pdma_add_resource(eth0, 0, 0, 0)                 # the whole BAR can be added again
    assert eth0.p2pdma.size == 32 * MiB


def test_add_resource_partial_ranges(m):
    eth0 = m.pci["eth0"]
    bar = pci_resource_start(eth0, 0)
    assert pci_p2pdma_add_resource(eth0, 0, 4 * MiB, 2 * MiB) == 0
    assert pci_p2pdma_add_resource(eth0, 0, 0, 30 * MiB) == 0     # size 0: the rest
    assert eth0.p2pdma.size == 6 * MiB
    assert pci_alloc_p2pmem(eth0, 4096) == PAGE_OFFSET + bar + 30 * MiB
    assert pci_alloc_p2pmem(eth0, 2 * MiB) == PAGE_OFFSET + bar + 2 * MiB
    assert pci_p2pmem_virt_to_bus(eth0, PAGE_OFFSET + bar + 2 * MiB) == bar + 2 * MiB
    pci_free_p2pmem(eth0, PAGE_OFFSET + bar + 30 * MiB, 4096)
    pci_free_p2pmem(eth0, PAGE_OFFSET + bar + 2 * MiB, 2 * MiB)


@pytest.mark.parametrize(("bar", "size", "offset", "err"), [
    (1, 0, 0, errno.EINVAL),                   # no such BAR: not IORESOURCE_MEM
    (6, 0, 0, errno.EINVAL),
    (0, 0, 32 * MiB, errno.EINVAL),            # offset past the end
    (0, 4 * MiB, 30 * MiB, errno.EINVAL),      # size + offset past the end
    (0, 0, 4096, errno.EINVAL),                # not on a 2 MiB subsection
    (0, 3 * MiB, 0, errno.EINVAL),
])
def test_add_resource_errno(m, bar, size, offset, err):
    eth0 = m.pci["eth0"]
    with pytest.raises(NetmemError) as e:
        pci_p2pdma_add_resource(eth0, bar, size, offset)
    assert e.value.errno == err
    assert eth0.p2pdma is None or eth0.p2pdma.size == 0
    assert pci_alloc_p2pmem(eth0, 4096) == 0


def test_add_resource_twice_over_the_same_range(m):
    eth0 = m.pci["eth0"]
    pci_p2pdma_add_resource(eth0, 0, 4 * MiB, 4 * MiB)
    with pytest.warns(NetmemWarning, match="Conflicting mapping in same section"), \
            pytest.raises(NetmemError) as e:
        pci_p2pdma_add_resource(eth0, 0, 4 * MiB, 6 * MiB)
    assert e.value.errno == errno.ENOMEM
    with pytest.raises(NetmemError) as e:
        pci_p2pdma_add_resource(eth0, 0, 8 * MiB, 2 * MiB)   # contains it
    assert e.value.errno == errno.EEXIST
    assert eth0.p2pdma.size == 4 * MiB


def test_p2pdma_calls_on_a_bridge_are_einval(m):
    rp0 = m.pci["0000:00:01.0"]
    for call in (lambda: pci_p2pdma_add_resource(rp0, 0, 0, 0),
                 lambda: pci_alloc_p2pmem(rp0, 4096),
                 lambda: pci_p2pdma_distance(rp0, m.pci["eth0"])):
        with pytest.raises(NetmemError) as e:
            call()
        assert e.value.errno == errno.EINVAL


# ---- p2pdma through the DMA layer --------------------------------------------------------------

def p2p_buffer(m, gpu, size):
    """``size`` bytes of gpu0's published p2pmem: (virt, bus address)."""
    pci_p2pdma_add_resource(gpu, 0, 0, 0)
    virt = pci_alloc_p2pmem(gpu, size)
    return virt, pci_p2pmem_virt_to_bus(gpu, virt)


@pytest.mark.parametrize("iommu", ["none", "dma-iommu"])
def test_sg_to_a_peer_behind_the_same_switch_uses_bus_addresses(iommu):
    from netmem.dma import SgTable, dma_map_sgtable, dma_unmap_sgtable
    m = Machine(memory="64MiB", iommu=iommu)
    _, _, gpu, nic = lab(m)
    virt, bus = p2p_buffer(m, gpu, 2 * 4096)
    sgt = SgTable.from_phys([(bus, 4096), (bus + 4096, 4096)])
    dma_map_sgtable(nic, sgt, 2)
    # PCI_P2PDMA_MAP_BUS_ADDR: the bus addresses themselves, never merged, no IOMMU
    assert sgt.nents == 2 and [s.dma_address for s in sgt.sgl] == [bus, bus + 4096]
    nic.dma_write(bus + 4096, b"peer")
    assert bytes(m.pci.bar_memory(bus + 4096, 4)) == b"peer"
    assert m.iommu.faults == []
    dma_unmap_sgtable(nic, sgt, 2)
    pci_free_p2pmem(gpu, virt, 2 * 4096)


def test_sg_to_a_peer_through_the_host_bridge_maps_an_iova():
    from netmem.dma import SgTable, dma_map_sgtable, dma_unmap_sgtable
    m = Machine(memory="64MiB", iommu="dma-iommu")
    _, _, gpu, _ = lab(m)
    eth0 = m.pci["eth0"]                                  # on another root port: AMD allows it
    virt, bus = p2p_buffer(m, gpu, 4096)
    sgt = SgTable.from_phys([(bus, 4096)])
    dma_map_sgtable(eth0, sgt, 2)
    addr = sgt.sgl[0].dma_address
    assert addr != bus and addr >> 32 == 0                 # an IOVA below 4 GiB
    eth0.dma_write(addr, b"via RC")
    assert bytes(m.pci.bar_memory(bus, 6)) == b"via RC"
    dma_unmap_sgtable(eth0, sgt, 2)
    with pytest.raises(NetmemError):
        eth0.dma_write(addr, b"x")                          # unmapped: an IOMMU fault
    assert len(m.iommu.faults) == 1
    pci_free_p2pmem(gpu, virt, 4096)


def test_sg_to_a_peer_the_host_bridge_refuses_is_eremoteio():
    from netmem.dma import SgTable, dma_map_sgtable
    m = Machine(memory="64MiB")
    _, _, gpu, _ = lab(m)
    intel(m, 0x1234)                                      # not whitelisted, not AMD
    virt, bus = p2p_buffer(m, gpu, 4096)
    with pytest.raises(NetmemError) as e:
        dma_map_sgtable(m.pci["eth0"], SgTable.from_phys([(bus, 4096)]), 2)
    assert e.value.errno == errno.EREMOTEIO
    pci_free_p2pmem(gpu, virt, 4096)


# ---- BAR memory in the core: the table device accesses search, and its routes ------------------

def test_bar_table_lists_every_bar_in_address_order_with_its_bus_routes(m):
    _, sw, gpu, nic = lab(m)
    eth0 = m.pci["eth0"]
    table = m._bar_table()
    assert [(start, size, dev, bar) for start, size, dev, bar, _ in table] == [
        (pci_resource_start(eth0, 0), 32 * MiB, eth0.id, 0),
        (pci_resource_start(gpu, 0), 64 * MiB, gpu.id, 0),
        (pci_resource_start(gpu, 2), 2 * MiB, gpu.id, 2)]
    # eth0 reaches its own BAR by bus address; gpu0 and eth1 share a switch
    assert [routes for *_, routes in table] == [[eth0.id], [gpu.id, nic.id], [gpu.id, nic.id]]
    sw.downstream_ports[1].acs_redirect = True            # eth1's port redirects upstream
    assert [routes for *_, routes in m._bar_table()][1:] == [[gpu.id], [gpu.id]]
    sw.downstream_ports[1].acs_redirect = False
    assert [routes for *_, routes in m._bar_table()][1] == [gpu.id, nic.id]


def test_add_bar_places_a_bar_and_routes_to_it(m):
    _, _, gpu, nic = lab(m)
    res = m.pci.add_bar(gpu, 4, 1 << 30)
    assert res.start == 5 << 30 and res.size == 1 << 30    # after gpu0's BARs, aligned
    assert pci_resource_start(gpu, 4) == res.start
    assert m._bar_table()[-1] == (res.start, 1 << 30, gpu.id, 4, [gpu.id, nic.id])
    m.pci.bar_memory(res.end - 3, 4)[:] = b"last"
    assert bytes(m._phys_buffer(res.end - 3, 4)) == b"last"
    for bar, size, err in ((4, 1 << 20, errno.EBUSY), (6, 1 << 20, errno.EINVAL),
                           (5, 3 << 20, errno.EINVAL), (5, 1024, errno.EINVAL)):
        with pytest.raises(NetmemError) as e:
            m.pci.add_bar(gpu, bar, size)
        assert e.value.errno == err
    with pytest.raises(NetmemError) as e:
        m.pci.add_bar(m.pci["0000:00:01.0"], 0, 1 << 20)
    assert e.value.errno == errno.EINVAL


@pytest.mark.parametrize("iommu", ["none", "dma-iommu"])
def test_device_access_to_bar_memory_is_checked_before_a_byte_moves(iommu):
    from netmem.dma import SgTable, dma_map_sgtable, dma_unmap_sgtable
    m = Machine(memory="64MiB", iommu=iommu)
    _, _, gpu, nic = lab(m)
    bar2 = pci_resource_start(gpu, 2)
    end = bar2 + 2 * MiB
    pci_p2pdma_add_resource(gpu, 2, 0, 0)
    sgt = SgTable.from_phys([(end - 4096, 4096)])
    dma_map_sgtable(nic, sgt, 0)                          # a bus-address segment
    nic.dma_write(end - 4, b"tail")                       # bus route (a peer behind the switch)
    assert bytes(m.pci.bar_memory(end - 4, 4)) == b"tail"
    assert nic.dma_read(end - 4, 4) == b"tail"
    with pytest.raises(NetmemError) as e:                 # runs past the BAR: nothing written
        nic.dma_write(end - 2, b"over")
    assert e.value.errno == errno.EFAULT
    assert bytes(m.pci.bar_memory(end - 4, 4)) == b"tail"
    with pytest.raises(NetmemError):                      # between BARs: nothing there
        nic.dma_write(end, b"gap")
    assert [f["address"] for f in m.iommu.faults] == [end, end]
    dma_unmap_sgtable(nic, sgt, 0)


@pytest.mark.netmem_leaks_ok                              # the unmapped access: asserted below
def test_a_device_with_acs_redirect_on_its_path_goes_through_its_iommu():
    from netmem.dma import SgTable, dma_map_sgtable, dma_unmap_sgtable
    m = Machine(memory="64MiB", iommu="dma-iommu")
    _, sw, gpu, nic = lab(m)
    virt, bus = p2p_buffer(m, gpu, 4096)
    nic.dma_write(bus, b"switch")                         # routed by the switch, no IOMMU,
    assert [(a["address"], a["length"]) for a in m.iommu.unmapped_accesses] == [(bus, 6)]
    sw.downstream_ports[1].acs_redirect = True            # ... and mapped by nobody
    with pytest.raises(NetmemError) as e:                 # now an IOVA nobody mapped
        nic.dma_write(bus, b"iommu")
    assert e.value.errno == errno.EFAULT and len(m.iommu.faults) == 1
    sgt = SgTable.from_phys([(bus, 4096)])
    dma_map_sgtable(nic, sgt, 2)                          # THRU_HOST_BRIDGE now (AMD): an IOVA
    nic.dma_write(sgt.sgl[0].dma_address + 6, b"iommu")
    assert bytes(m.pci.bar_memory(bus, 11)) == b"switchiommu"
    dma_unmap_sgtable(nic, sgt, 2)
    pci_free_p2pmem(gpu, virt, 4096)
    line = (f"1 DMA access to memory no live mapping covers (iommu dma-iommu), the first: eth1 "
            f"write of 6 bytes at {bus:#x}")
    assert m.leak_report() == [line]
