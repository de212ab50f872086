"""Tests of ``netmem.pci``: the topology (names, bus numbers, upstream bridges, BARs in the
physical address map) and the errno of bad input.

Every machine starts with 0000:00:00.0 (an AMD host bridge), the root port 0000:00:01.0 and
eth0 at 0000:01:00.0; ``lab()`` adds a root port 0000:00:02.0 with a switch (upstream port
0000:02:00.0, downstream ports on bus 03) holding gpu0 (0000:04:00.0) and eth1 (0000:05:00.0).
"""
import errno

import pytest

from netmem import Machine, NetmemError, PagePoolParams, page_pool_create
from netmem.dma import Device
from netmem.page_pool import PP_FLAG_DMA_MAP
from netmem.pci import PciEndpoint, pci_resource_len, pci_resource_start

MiB = 1 << 20


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
