"""DMA into memory nobody mapped (model-only; issue 13): without an IOMMU, and for bus addresses a
switch routes to a peer's BAR, a device access that no live mapping for the device covers lands,
as on the hardware, and is recorded in ``m.iommu.unmapped_accesses``, counted in
``m.iommu.stats["unmapped_accesses"]`` and shown by ``m.leak_report()``."""
import errno

import pytest
from test_provider import FreelistProvider

import netmem
from netmem import NetmemError
from netmem.dma import (
    Device,
    SgTable,
    dma_map_page,
    dma_map_sgtable,
    dma_unmap_page,
    dma_unmap_sgtable,
)
from netmem.dmabuf import (
    add_device_memory,
    dma_buf_attach,
    dma_buf_detach,
    dma_buf_map_attachment,
    dma_buf_unmap_attachment,
    export_device_memory,
    sgt_dma_segments,
    udmabuf_create,
)
from netmem.flows import generate
from netmem.netdev import NetDevice, netif_mp_close_rxq, netif_mp_open_rxq
from netmem.pci import (
    pci_alloc_p2pmem,
    pci_free_p2pmem,
    pci_p2pdma_add_resource,
    pci_p2pmem_virt_to_bus,
)

FROM, BIDI = netmem.DMA_FROM_DEVICE, netmem.DMA_BIDIRECTIONAL
PAGE = 4096
MiB = 1 << 20
DIRECT = ["none", "passthrough"]


def unmapped(m):
    return [(a["device"], a["address"], a["length"], a["direction"])
            for a in m.iommu.unmapped_accesses]


def lab(m):
    """gpu0 (64 MiB BAR 0) and eth1 behind one switch: the NIC reaches the GPU's BAR by bus
    address."""
    sw = m.pci.add_switch(m.pci.add_root_port(m.pci.host_bridges[0]))
    gpu = m.pci.add_endpoint(sw, "gpu0", kind="gpu", bars={0: 64 * MiB})
    return gpu, m.pci.add_endpoint(sw, "eth1", kind="nic")


def clean(m, n):
    """The test's ``n`` unmapped accesses are all the leak report holds; nothing else leaked."""
    (line,) = m.leak_report()
    assert line.startswith(f"{n} DMA access") and "no live mapping covers" in line
    assert m.iommu.stats["unmapped_accesses"] == n


# ---- the record --------------------------------------------------------------------------------

@pytest.mark.netmem_leaks_ok
@pytest.mark.parametrize("mode", DIRECT)
def test_write_and_read_of_unmapped_ram_are_recorded_and_land(mode):
    m = netmem.Machine(memory="64MiB", iommu=mode)
    dev = Device(m, "nic")
    ref = m.alloc_pages()
    phys = m.netmem(ref).phys
    m.advance(0.000002)
    dev.dma_write(phys + 8, b"stray")                    # lands, as on the hardware
    assert bytes(m.netmem(ref).address()[8:13]) == b"stray"
    assert dev.dma_read(phys + 8, 5) == b"stray"
    assert m.iommu.unmapped_accesses == [
        {"device": "nic", "address": phys + 8, "length": 5, "direction": "write",
         "time_ns": 2000},
        {"device": "nic", "address": phys + 8, "length": 5, "direction": "read", "time_ns": 2000}]
    assert m.iommu.stats["unmapped_accesses"] == 2 and m.iommu.faults == []
    m.put_page(ref)
    line = (f"2 DMA accesses to memory no live mapping covers (iommu {mode}), the first: nic "
            f"write of 5 bytes at {phys + 8:#x}")
    assert m.leak_report() == [line]


@pytest.mark.netmem_leaks_ok
@pytest.mark.parametrize("mode", DIRECT)
def test_dma_map_page_covers_its_pages_while_it_lives(mode):
    m = netmem.Machine(memory="64MiB", iommu=mode)
    dev = Device(m, "nic")
    ref = m.alloc_pages(1)
    addr = dma_map_page(dev, ref, 100, 200, FROM)
    dev.dma_write(addr, b"in")
    dev.dma_write(addr + PAGE - 100 - 4, b"page")        # the mapping's page, at page granularity
    assert dev.dma_read(addr, 2) == b"in" and unmapped(m) == []
    dev.dma_write(addr + PAGE - 100, b"next")            # the next page: not mapped
    dma_unmap_page(dev, addr, 200, FROM)
    dev.dma_write(addr, b"after")
    assert unmapped(m) == [("nic", addr + PAGE - 100, 4, "write"), ("nic", addr, 5, "write")]
    m.put_page(ref)
    clean(m, 2)


def test_an_access_beyond_the_mask_is_a_fault_not_an_unmapped_access():
    m = netmem.Machine(memory="64MiB")
    dev = Device(m, "nic24", dma_mask_bits=24)
    with pytest.raises(NetmemError) as e:
        dev.dma_write(1 << 24, b"x")
    assert e.value.errno == errno.EFAULT and unmapped(m) == []


def test_an_unmapped_iova_stays_a_fault():
    m = netmem.Machine(memory="64MiB", iommu="dma-iommu")
    dev = Device(m, "nic")
    with pytest.raises(NetmemError):
        dev.dma_write(1 << 20, b"x")
    assert len(m.iommu.faults) == 1 and unmapped(m) == []


@pytest.mark.netmem_leaks_ok
def test_the_log_keeps_the_first_4096_and_the_counter_counts_all():
    m = netmem.Machine(memory="64MiB")
    dev = Device(m, "nic")
    for i in range(4100):
        dev.dma_write(2 * MiB + i, b"x")
    recs = m.iommu.unmapped_accesses
    assert len(recs) == 4096 and recs[-1]["address"] == 2 * MiB + 4095
    clean(m, 4100)


# ---- what counts as mapped ---------------------------------------------------------------------

@pytest.mark.netmem_leaks_ok
@pytest.mark.parametrize("mode", DIRECT)
def test_page_pool_mappings_cover_their_pages_until_released(mode):
    m = netmem.Machine(memory="64MiB", iommu=mode)
    dev = Device(m, "nic")
    pool = netmem.page_pool_create(m, netmem.PagePoolParams(flags=netmem.PP_FLAG_DMA_MAP,
                                                            dev=dev))
    ref = pool.alloc_netmem()
    addr = m.netmem(ref).dma_addr
    dev.dma_write(addr + 10, b"rx")
    assert unmapped(m) == []
    pool.put_netmem(ref)
    pool.destroy()
    m.quiesce()
    dev.dma_write(addr + 10, b"late")                    # the pool unmapped it on release
    assert unmapped(m) == [("nic", addr + 10, 4, "write")]
    clean(m, 1)


@pytest.mark.netmem_leaks_ok
def test_a_swiotlb_slot_is_covered_not_the_page_it_bounces():
    m = netmem.Machine(memory="8GiB", numa_nodes=2, cpus=2)
    dev = Device(m, "nic32", dma_mask_bits=32)
    ref = m.alloc_pages(0, nid=1)
    slot = dma_map_page(dev, ref, 0, PAGE, FROM)
    assert m.iommu.stats["bounces"] == 1 and slot != m.netmem(ref).phys
    dev.dma_write(slot, b"data")
    assert unmapped(m) == []
    dma_unmap_page(dev, slot, PAGE, FROM)
    dev.dma_write(slot, b"gone")
    assert unmapped(m) == [("nic32", slot, 4, "write")]
    m.put_page(ref)
    clean(m, 1)


@pytest.mark.netmem_leaks_ok
@pytest.mark.parametrize("mode", DIRECT)
@pytest.mark.parametrize("exporter", ["udmabuf", "device memory"])
def test_a_dmabuf_attachment_covers_its_segments_while_mapped(mode, exporter):
    m = netmem.Machine(memory="64MiB", iommu=mode)
    gpu, nic = lab(m)
    if exporter == "udmabuf":
        b = udmabuf_create(m, 8 * PAGE, "pages", 3)
    else:
        add_device_memory(gpu, 4 * MiB)
        b = export_device_memory(gpu, 8 * PAGE, "pages", 3)
    attach = dma_buf_attach(b, nic)
    sgt = dma_buf_map_attachment(attach, FROM)
    segs = sgt_dma_segments(sgt)
    for _, addr, length in segs:
        nic.dma_write(addr + length - 3, b"end")
    assert unmapped(m) == []
    dma_buf_unmap_attachment(attach, sgt, FROM)
    dma_buf_detach(b, attach)
    _, addr, _ = segs[0]
    nic.dma_write(addr, b"late")
    assert unmapped(m) == [("eth1", addr, 4, "write")]
    b.close()
    clean(m, 1)


@pytest.mark.netmem_leaks_ok
@pytest.mark.parametrize("mode", ["none", "passthrough", "dma-iommu"])
def test_a_p2pdma_bus_address_segment_covers_the_peer_bar_while_mapped(mode):
    m = netmem.Machine(memory="64MiB", iommu=mode)
    gpu, nic = lab(m)
    pci_p2pdma_add_resource(gpu, 0, 0, 0)
    virt = pci_alloc_p2pmem(gpu, 2 * PAGE)
    bus = pci_p2pmem_virt_to_bus(gpu, virt)
    sgt = SgTable.from_phys([(bus, 2 * PAGE)])
    dma_map_sgtable(nic, sgt, BIDI)
    assert sgt.sgl[0].dma_address == bus                 # PCI_P2PDMA_MAP_BUS_ADDR: no IOMMU
    nic.dma_write(bus + PAGE, b"peer")
    assert nic.dma_read(bus, 4) == bytes(4) and unmapped(m) == []
    dma_unmap_sgtable(nic, sgt, BIDI)
    nic.dma_write(bus + PAGE, b"late")                   # routed by the switch into nothing
    assert unmapped(m) == [("eth1", bus + PAGE, 4, "write")]
    pci_free_p2pmem(gpu, virt, 2 * PAGE)
    clean(m, 1)


@pytest.mark.netmem_leaks_ok
@pytest.mark.parametrize("mode", DIRECT)
def test_a_page_mapped_for_one_device_is_unmapped_for_another(mode):
    m = netmem.Machine(memory="64MiB", iommu=mode)
    a, b = Device(m, "nic-a"), Device(m, "nic-b")
    ref = m.alloc_pages()
    addr = dma_map_page(a, ref, 0, PAGE, FROM)
    a.dma_write(addr, b"a")
    b.dma_write(addr, b"b")
    assert unmapped(m) == [("nic-b", addr, 1, "write")]
    addr_b = dma_map_page(b, ref, 0, PAGE, FROM)         # both map it: both may write
    a.dma_write(addr, b"a")
    b.dma_write(addr_b, b"b")
    dma_unmap_page(a, addr, PAGE, FROM)
    dma_unmap_page(b, addr_b, PAGE, FROM)
    a.dma_write(addr, b"a")
    assert unmapped(m)[1:] == [("nic-a", addr, 1, "write")]
    m.put_page(ref)
    clean(m, 2)


@pytest.mark.netmem_leaks_ok
def test_a_2mib_mapping_counts_at_the_coarse_level_and_its_edges_per_page():
    m = netmem.Machine(memory="64MiB")
    dev = Device(m, "nic")
    ref = m.alloc_pages(10)                              # 4 MiB, 4 MiB aligned
    phys = m.netmem(ref).phys
    sgt = SgTable.from_phys([(phys + 2 * MiB - PAGE, 2 * MiB + 2 * PAGE)])
    dma_map_sgtable(dev, sgt, FROM)
    for off in (2 * MiB - PAGE, 2 * MiB, 4 * MiB - 1, 4 * MiB + PAGE - 1):
        dev.dma_write(phys + off, b"x")
    assert unmapped(m) == []
    dev.dma_write(phys + 4 * MiB + PAGE, b"y")
    dev.dma_write(phys + 2 * MiB - PAGE - 1, b"y")
    dma_unmap_sgtable(dev, sgt, FROM)
    dev.dma_write(phys + 3 * MiB, b"z")
    assert [a[1] - phys for a in unmapped(m)] == [4 * MiB + PAGE, 2 * MiB - PAGE - 1, 3 * MiB]
    m.put_page(ref)
    clean(m, 3)


# ---- a provider whose net_iovs have no memory behind them --------------------------------------

@pytest.mark.netmem_leaks_ok
@pytest.mark.parametrize("mode", DIRECT)
def test_a_nic_bound_to_net_iovs_at_address_0_writes_to_address_0(mode):
    m = netmem.Machine(memory="64MiB", iommu=mode)
    nic = NetDevice(m, num_rx_queues=1)
    nic.ethtool.set_ringparam(tcp_data_split="on")
    provider = FreelistProvider(m, num_niovs=64)     # net_iovs with DMA address 0
    netif_mp_open_rxq(nic, 0, provider)
    nic.receive(generate(connections=2, payload=16384, seed=1).trace)
    writes = m.iommu.unmapped_accesses
    assert writes and {(a["device"], a["address"], a["direction"]) for a in writes} == \
        {(nic.pcidev.name, 0, "write")}
    assert m.iommu.faults == []
    for sk in m.tcp.sockets():
        sk.close()
    netif_mp_close_rxq(nic, 0, provider)
    nic.unregister()
    m.quiesce()
    provider.area.free()
    n = len(writes)
    line = (f"{n} DMA accesses to memory no live mapping covers (iommu {mode}), the first: "
            f"{nic.pcidev.name} write of {writes[0]['length']} bytes at 0x0")
    assert m.leak_report() == [line]
