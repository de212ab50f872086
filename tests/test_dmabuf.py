"""Tests of ``netmem.dmabuf`` against drivers/dma-buf/dma-buf.c and udmabuf.c (Linux 6.18): the
three exporters and their layouts, DMA segments with and without IOMMU merging, device writes
through mapped segments landing where ``mmap()``/``read_device()`` see them (the C route, RAM and
BAR memory, bus addresses through a switch), refcounting and fds, the checks of attach, map,
unmap and detach, a 16 GiB device-memory export that costs what is touched, and the leak report.

``lab()`` adds a root port with a switch holding gpu0 and eth1 (as tests/test_pci.py does); eth0
sits on the machine's first root port.
"""
import errno
import itertools

import numpy as np
import pytest

from netmem import (
    DMA_BIDIRECTIONAL,
    DMA_FROM_DEVICE,
    DMA_TO_DEVICE,
    MAX_PAGE_ORDER,
    Machine,
    NetmemError,
    NetmemWarning,
)
from netmem.dma import Device, for_each_sgtable_dma_sg, sg_dma_address, sg_dma_len
from netmem.dmabuf import (
    MAX_SG_ENT_SZ,
    add_device_memory,
    dma_buf_attach,
    dma_buf_detach,
    dma_buf_get,
    dma_buf_map_attachment,
    dma_buf_put,
    dma_buf_unmap_attachment,
    export_device_memory,
    export_p2p,
    sgt_dma_segments,
    udmabuf_create,
)
from netmem.pci import (
    PCI_VENDOR_ID_INTEL,
    X86_VENDOR_INTEL,
    pci_p2pdma_add_resource,
    pci_resource_start,
)

PAGE = 4096
MiB = 1 << 20
FROM = DMA_FROM_DEVICE


def lab(m):
    rp = m.pci.add_root_port(m.pci.host_bridges[0])
    sw = m.pci.add_switch(rp)
    gpu = m.pci.add_endpoint(sw, "gpu0", kind="gpu", bars={0: 64 * MiB})
    nic = m.pci.add_endpoint(sw, "eth1", kind="nic")
    return sw, gpu, nic


def adjacent(ranges):
    """Pairs of consecutive entries where one ends where the next begins."""
    return sum(a[0] + a[1] == b[0] for a, b in itertools.pairwise(ranges))


def dmabuf_leaks(m):
    return [line for line in m.leak_report() if line.startswith("dma-buf")]


def bind(dmabuf, dev, dir=FROM):
    attach = dma_buf_attach(dmabuf, dev)
    return attach, dma_buf_map_attachment(attach, dir)


def unbind(dmabuf, attach, sgt, dir=FROM):
    dma_buf_unmap_attachment(attach, sgt, dir)
    dma_buf_detach(dmabuf, attach)


def exporters(m, size, layout="contiguous", seed=0):
    """One dma-buf of each exporter (the GPU gets a 64 MiB device memory), and the GPU."""
    _, gpu, _ = lab(m)
    add_device_memory(gpu, 64 * MiB)
    return [udmabuf_create(m, size, layout, seed), export_device_memory(gpu, size, layout, seed),
            export_p2p(gpu, 0, size, layout, seed)]


# ---- exporters and layouts ---------------------------------------------------------------------

@pytest.mark.parametrize("layout", ["contiguous", "pages", "random"])
def test_every_exporter_lays_out_its_entries(layout):
    m = Machine(memory="64MiB")
    for b in exporters(m, 32 * PAGE, layout, seed=7):
        ranges = b.phys_ranges
        assert b.size == 32 * PAGE == sum(n for _, n in ranges)
        assert all(p % PAGE == 0 and n % PAGE == 0 and n for p, n in ranges)
        assert len({p for p, _ in ranges}) == len(ranges)
        if layout == "contiguous":
            assert len(ranges) == 1
        else:
            assert adjacent(ranges) == 0            # only the IOMMU can join them
            if layout == "pages":
                assert len(ranges) == 32 and {n for _, n in ranges} == {PAGE}
            else:
                assert 2 < len(ranges) < 32 and max(n for _, n in ranges) <= 16 * PAGE
        b.close()


def test_random_layout_follows_the_seed():
    m = Machine(memory="64MiB")
    sizes = []
    for seed in (1, 1, 2):
        b = udmabuf_create(m, 64 * PAGE, "random", seed)
        sizes.append([n for _, n in b.phys_ranges])
        b.close()
    assert sizes[0] == sizes[1] != sizes[2]


def test_exporters_name_themselves_and_number_fds_from_3():
    m = Machine(memory="64MiB")
    bufs = exporters(m, 4 * PAGE)
    assert [(b.fd, b.exp_name, b.readable) for b in bufs] == [
        (3, "udmabuf", True), (4, "gpu", False), (5, "p2pdma", True)]
    gpu = m.pci["gpu0"]
    assert bufs[0].exporter is None and bufs[1].exporter is gpu and bufs[2].exporter is gpu
    bufs[0].close()
    again = udmabuf_create(m, PAGE)
    assert again.fd == 6                            # fds are never reused
    for b in [*bufs[1:], again]:
        b.close()


@pytest.mark.parametrize("size", [0, 100, PAGE + 1, -PAGE, 1.5])
def test_size_must_be_a_nonzero_multiple_of_the_page_size(size):
    m = Machine(memory="64MiB")
    _, gpu, _ = lab(m)
    for call in (lambda: udmabuf_create(m, size), lambda: export_device_memory(gpu, size),
                 lambda: export_p2p(gpu, 0, size)):
        with pytest.raises(NetmemError) as e:
            call()
        assert e.value.errno == errno.EINVAL


def test_bad_layout_bar_or_device_is_einval():
    m = Machine(memory="64MiB")
    _, gpu, nic = lab(m)
    for call in (lambda: udmabuf_create(m, PAGE, "striped"),
                 lambda: export_device_memory(nic, PAGE),        # a NIC has no device memory
                 lambda: export_device_memory(Device(m, "x"), PAGE),
                 lambda: export_p2p(gpu, 1, PAGE),                # no BAR 1
                 lambda: add_device_memory(nic)):
        with pytest.raises(NetmemError) as e:
            call()
        assert e.value.errno == errno.EINVAL
    assert m.dmesg == [] and gpu.p2pdma is None and gpu.device_memory is None


def test_udmabuf_takes_buddy_pages_and_gives_them_back():
    m = Machine(memory="64MiB")
    free = m.nr_free_pages()
    b = udmabuf_create(m, 300 * PAGE)
    assert m.nr_free_pages() == free - 300
    assert len(b.phys_ranges) == 1                  # a fresh machine: the blocks are adjacent
    assert m.leak_report() == [
        "300 pages missing from the buddy allocator",
        ("dma-buf fd 3 (udmabuf, 1228800 bytes) not released: 1 reference(s) (fd open), "
         "0 attachment(s), 0 mapping(s)")]
    b.close()
    assert m.nr_free_pages() == free and m.leak_report() == []


def test_udmabuf_pages_start_cleared():
    m = Machine(memory="64MiB")
    ref = m.alloc_pages(MAX_PAGE_ORDER)
    m.netmem(ref).address()[:] = b"\xee" * (PAGE << MAX_PAGE_ORDER)
    m.put_page(ref)                                  # dirty, and first in line again
    b = udmabuf_create(m, PAGE << MAX_PAGE_ORDER)
    assert b.phys_ranges == [(m.netmem(ref).phys, PAGE << MAX_PAGE_ORDER)]
    assert b.read(0, b.size) == bytes(b.size)
    b.close()


def test_udmabuf_size_limit_and_enomem():
    m = Machine(memory="64MiB")
    with pytest.raises(NetmemError) as e:           # the module's size_limit_mb, 64
        udmabuf_create(m, 64 * MiB + PAGE)
    assert e.value.errno == errno.EINVAL
    free = m.nr_free_pages()
    with pytest.raises(NetmemError) as e:
        udmabuf_create(m, 64 * MiB, size_limit_mb=128)     # more than the machine has free
    assert e.value.errno == errno.ENOMEM
    held = [m.alloc_pages(0) for _ in range(free - 10)]     # 10 pages left, scattered orders
    with pytest.raises(NetmemError) as e:
        udmabuf_create(m, 11 * PAGE)
    assert e.value.errno == errno.ENOMEM and m.nr_free_pages() == 10
    b = udmabuf_create(m, 10 * PAGE)
    assert m.nr_free_pages() == 0
    b.close()
    for ref in held:
        m.put_page(ref)
    assert m.nr_free_pages() == free


def test_device_memory_is_one_lazily_committed_bar_per_gpu():
    m = Machine(memory="64MiB")
    _, gpu, nic = lab(m)
    b = export_device_memory(gpu, 8 * PAGE)         # the first export adds it
    dm = gpu.device_memory
    assert dm.bar == 1 and dm.size == 128 << 30 and dm.start == pci_resource_start(gpu, 1)
    assert b.phys_ranges == [(dm.start, 8 * PAGE)] and dm.available == dm.size - 8 * PAGE
    assert m._bar_table()[-1] == (dm.start, dm.size, gpu.id, 1, [gpu.id, nic.id])
    with pytest.raises(NetmemError) as e:
        add_device_memory(gpu)
    assert e.value.errno == errno.EBUSY
    with pytest.raises(NetmemError) as e:
        export_device_memory(gpu, 128 << 30)        # the rest is not enough
    assert e.value.errno == errno.ENOMEM
    b.close()
    assert dm.available == dm.size


def test_p2p_export_adds_the_bar_once_and_frees_its_p2pmem():
    m = Machine(memory="64MiB")
    _, gpu, _ = lab(m)
    a, b = export_p2p(gpu, 0, 4 * PAGE), export_p2p(gpu, 0, 2 * PAGE, "pages")
    bar0 = pci_resource_start(gpu, 0)
    assert len(gpu.p2pdma.pgmaps) == 1 and gpu.p2pdma.available == 64 * MiB - 6 * PAGE
    assert a.phys_ranges == [(bar0, 4 * PAGE)]
    assert b.phys_ranges == [(bar0 + 5 * PAGE, PAGE), (bar0 + 4 * PAGE, PAGE)]
    with pytest.raises(NetmemError) as e:
        export_p2p(gpu, 0, 64 * MiB)
    assert e.value.errno == errno.ENOMEM
    a.close()
    b.close()
    assert gpu.p2pdma.available == 64 * MiB and gpu.p2pdma.pgmaps[0].refs == 0


def test_p2p_export_uses_p2pmem_offered_already():
    m = Machine(memory="64MiB")
    _, gpu, _ = lab(m)
    pci_p2pdma_add_resource(gpu, 0, 4 * MiB, 8 * MiB)   # a part of BAR 0, by its driver
    b = export_p2p(gpu, 0, 2 * PAGE)
    assert len(gpu.p2pdma.pgmaps) == 1
    assert b.phys_ranges == [(pci_resource_start(gpu, 0) + 8 * MiB, 2 * PAGE)]
    b.close()


# ---- DMA segments -------------------------------------------------------------------------------

@pytest.mark.parametrize(("iommu", "max_seg", "layout", "nents"), [
    ("dma-iommu", 1 << 31, "pages", 1),         # the IOMMU joins the pages (mlx5: 2 GiB)
    ("dma-iommu", 1 << 31, "random", 1),
    ("dma-iommu", 64 << 10, "pages", 4),        # the PCI default: 64 KiB segments
    ("dma-iommu", 1 << 31, "contiguous", 1),
    ("none", 1 << 31, "pages", 64),             # dma-direct never merges
    ("none", 1 << 31, "contiguous", 1),
    ("passthrough", 1 << 31, "pages", 64),
])
def test_segments_with_and_without_iommu_merging(iommu, max_seg, layout, nents):
    m = Machine(memory="64MiB", iommu=iommu)
    eth0 = m.pci["eth0"]
    eth0.dma_set_max_seg_size(max_seg)
    b = udmabuf_create(m, 64 * PAGE, layout)
    attach, sgt = bind(b, eth0)
    segs = sgt_dma_segments(sgt)
    assert sgt.nents == len(segs) == nents and sgt.orig_nents == len(b.phys_ranges)
    assert [off for off, _, _ in segs] == [i * 64 * PAGE // nents for i in range(nents)]
    assert sum(n for _, _, n in segs) == b.size
    assert [(sg_dma_address(sg), sg_dma_len(sg)) for sg in for_each_sgtable_dma_sg(sgt)] == \
        [(a, n) for _, a, n in segs]
    if iommu != "dma-iommu":                      # dma-direct: the physical addresses
        assert [(a, n) for _, a, n in segs] == b.phys_ranges
    unbind(b, attach, sgt)
    b.close()
    assert eth0.nr_mapped == 0


def test_contiguous_entries_stop_at_max_sg_ent_sz():
    m = Machine(memory="64MiB")
    _, gpu, nic = lab(m)
    b = export_device_memory(gpu, 3 * MAX_SG_ENT_SZ + 5 * PAGE)
    assert [n for _, n in b.phys_ranges] == [MAX_SG_ENT_SZ] * 3 + [5 * PAGE]
    assert adjacent(b.phys_ranges) == 3
    attach, sgt = bind(b, nic)
    assert sgt.nents == 4
    unbind(b, attach, sgt)
    b.close()


# ---- device writes through the mapping ---------------------------------------------------------

@pytest.mark.parametrize("iommu", ["none", "dma-iommu"])
@pytest.mark.parametrize("layout", ["contiguous", "pages", "random"])
def test_a_device_write_lands_where_the_cpu_and_the_exporter_see_it(iommu, layout):
    m = Machine(memory="64MiB", iommu=iommu)
    eth0 = m.pci["eth0"]                              # another root port: through the host bridge
    eth0.dma_set_max_seg_size(1 << 31)
    for b in exporters(m, 48 * PAGE, layout, seed=3):
        attach, sgt = bind(b, eth0, DMA_BIDIRECTIONAL)
        segs = sgt_dma_segments(sgt)
        for off, addr, n in segs:                     # the last bytes of every segment
            eth0.dma_write(addr + n - 6, b"E%05d" % (off // PAGE))
            assert b.read_device(off + n - 6, 6) == b"E%05d" % (off // PAGE)
        payload = bytes(range(256)) * 40              # 10 KiB across entries, in one segment
        off, addr, n = max(segs, key=lambda seg: seg[2])
        if n >= len(payload) + 100:
            eth0.dma_write(addr + 100, payload)
            assert b.read_device(off + 100, len(payload)) == payload
        if b.readable:
            with b.mmap() as view:
                assert view[off + 100:off + 100 + len(payload)] == b.read_device(
                    off + 100, len(payload))
                assert view.read(segs[0][2] - 6, 6) == b.read(segs[0][2] - 6, 6) == b"E00000"
        else:
            with pytest.raises(NetmemError) as e:
                b.mmap()
            assert e.value.errno == errno.EFAULT
            with pytest.raises(NetmemError) as e:
                b.read(0, 1)
            assert e.value.errno == errno.EFAULT
        off, addr, _ = segs[-1]
        b.write_device(off + 2, b"gpu!")              # the exporter's own copy, read by DMA
        assert eth0.dma_read(addr + 2, 4) == b"gpu!"
        unbind(b, attach, sgt, DMA_BIDIRECTIONAL)
        b.close()
    assert m.iommu.faults == [] and eth0.nr_mapped == 0


def test_mmap_writes_reach_the_device_and_need_a_munmap():
    m = Machine(memory="64MiB")
    eth0 = m.pci["eth0"]
    b = udmabuf_create(m, 4 * PAGE, "pages")
    attach, sgt = bind(b, eth0, DMA_BIDIRECTIONAL)
    view = b.mmap()
    assert len(view) == 4 * PAGE and b.file_count == 2
    view[PAGE - 2:PAGE + 2] = b"span"
    view[0] = 0x41
    seg_of = {o: a for o, a, _ in sgt_dma_segments(sgt)}
    assert len(seg_of) == 4                          # dma-direct: one segment per page
    assert eth0.dma_read(seg_of[0], 1) == b"A"
    assert eth0.dma_read(seg_of[0] + PAGE - 2, 2) + eth0.dma_read(seg_of[PAGE], 2) == b"span"
    for bad in (lambda: view.__setitem__(slice(0, 2), b"x"), lambda: view.read(4 * PAGE - 1, 2),
                lambda: view[::2]):
        with pytest.raises(NetmemError) as e:
            bad()
        assert e.value.errno == errno.EINVAL
    with pytest.raises(IndexError):
        view[4 * PAGE]
    unbind(b, attach, sgt, DMA_BIDIRECTIONAL)
    b.close()
    assert b.file_count == 1 and dmabuf_leaks(m)[0].startswith("dma-buf fd 3")
    view.munmap()                                    # the last reference: released
    assert m.leak_report() == []
    with pytest.raises(NetmemError) as e:
        view[0]
    assert e.value.errno == errno.EFAULT


def test_p2p_behind_the_same_switch_maps_bus_addresses_the_device_writes_untranslated():
    m = Machine(memory="64MiB", iommu="dma-iommu")
    sw, gpu, nic = lab(m)
    nic.dma_set_max_seg_size(1 << 31)
    b = export_p2p(gpu, 0, 8 * PAGE, "pages")
    attach, sgt = bind(b, nic)
    # PCI_P2PDMA_MAP_BUS_ADDR: one segment per entry, the bus addresses themselves, no IOMMU
    assert [(a, n) for _, a, n in sgt_dma_segments(sgt)] == b.phys_ranges
    assert nic._domain_stats()[4] == 0               # not one IOMMU PTE
    for off, addr, _ in sgt_dma_segments(sgt):
        nic.dma_write(addr + 10, b"bus%d" % (off // PAGE))   # nm_dev_write: the switch route
    assert b.read(3 * PAGE + 10, 4) == b"bus3" and b.read_device(10, 4) == b"bus0"
    assert m.iommu.faults == []
    sw.downstream_ports[1].acs_redirect = True          # now the requests go up to the IOMMU
    with pytest.raises(NetmemError) as e:
        nic.dma_write(sgt.sgl[0].dma_address, b"lost")
    assert e.value.errno == errno.EFAULT and len(m.iommu.faults) == 1
    sw.downstream_ports[1].acs_redirect = False
    unbind(b, attach, sgt)
    b.close()


def test_p2p_through_the_host_bridge_is_merged_by_the_iommu():
    m = Machine(memory="64MiB", iommu="dma-iommu")
    _, gpu, _ = lab(m)
    eth0 = m.pci["eth0"]
    eth0.dma_set_max_seg_size(1 << 31)
    b = export_p2p(gpu, 0, 8 * PAGE, "pages")
    attach, sgt = bind(b, eth0)
    ((off, addr, n),) = sgt_dma_segments(sgt)
    assert (off, n) == (0, 8 * PAGE) and addr >> 32 == 0        # an IOVA
    eth0.dma_write(addr + 2 * PAGE - 1, b"xy")                 # across two reversed entries
    assert b.read(2 * PAGE - 1, 2) == b"xy"
    unbind(b, attach, sgt)
    b.close()


def test_p2p_the_host_bridge_refuses_is_eremoteio():
    m = Machine(memory="64MiB")
    _, gpu, _ = lab(m)
    m.pci.cpu_vendor, m.pci.cpu_family = X86_VENDOR_INTEL, 6
    m.pci.host_bridges[0].dev.vendor, m.pci.host_bridges[0].dev.device = PCI_VENDOR_ID_INTEL, 1
    b = export_p2p(gpu, 0, PAGE)
    attach = dma_buf_attach(b, m.pci["eth0"])
    with pytest.raises(NetmemError) as e:
        dma_buf_map_attachment(attach, FROM)
    assert e.value.errno == errno.EREMOTEIO and attach.dmabuf is b
    dma_buf_detach(b, attach)                        # nothing was mapped
    b.close()


def test_device_memory_needs_a_pci_path_to_the_importer():
    m = Machine(memory="64MiB")
    _, gpu, _ = lab(m)
    b = export_device_memory(gpu, PAGE)
    with pytest.raises(NetmemError) as e:
        dma_buf_attach(b, Device(m, "platform0", is_pci=False))
    assert e.value.errno == errno.EOPNOTSUPP and b.attachments == []
    m.pci.cpu_vendor, m.pci.cpu_family = X86_VENDOR_INTEL, 6   # not whitelisted either
    with pytest.raises(NetmemError) as e:
        dma_buf_attach(b, m.pci["eth0"])
    assert e.value.errno == errno.EOPNOTSUPP
    attach = dma_buf_attach(b, gpu)                  # the GPU itself, and its switch peers, can
    assert attach.peer2peer is False                 # a static importer
    dma_buf_detach(b, attach)
    b.close()


def test_a_16gib_device_memory_dmabuf_costs_what_is_touched():
    def rss():
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * PAGE

    m = Machine(memory="64MiB")
    _, gpu, nic = lab(m)
    before = rss()
    b = export_device_memory(gpu, 16 << 30)
    attach, sgt = bind(b, nic)
    segs = sgt_dma_segments(sgt)
    assert len(segs) == 5 and segs[-1][0] == 4 * MAX_SG_ENT_SZ
    for off in (0, 5 << 30, (16 << 30) - PAGE):
        seg = max(s for s in segs if s[0] <= off)
        nic.dma_write(seg[1] + off - seg[0], b"touch")
        assert b.read_device(off, 5) == b"touch"
    assert rss() - before < 32 * MiB                 # bitmaps and a few pages, not 16 GiB
    unbind(b, attach, sgt)
    b.close()


@pytest.mark.parametrize("layout", ["contiguous", "pages", "random"])
@pytest.mark.parametrize("exporter", ["udmabuf", "gpu"])
def test_read_device_gather_is_read_device_of_each_range_back_to_back(exporter, layout):
    m = Machine(memory="64MiB")
    _, gpu, _ = lab(m)
    size = 64 * PAGE
    b = udmabuf_create(m, size, layout, seed=3) if exporter == "udmabuf" else \
        export_device_memory(gpu, size, layout, seed=3)
    b.write_device(0, bytes(i * 7 % 251 for i in range(size)))
    rng = np.random.default_rng(5)
    offsets = rng.integers(0, size - 3 * PAGE, 200)
    sizes = rng.integers(0, 3 * PAGE, 200)          # many cross entries; some are empty
    got = b.read_device_gather(offsets, sizes)
    assert got.dtype == np.uint8
    assert got.tobytes() == b"".join(b.read_device(int(o), int(n))
                                     for o, n in zip(offsets, sizes, strict=True))
    assert b.read_device_gather([], []).size == 0
    b.close()


def test_read_device_gather_refuses_a_range_outside_the_dmabuf():
    m = Machine(memory="64MiB")
    b = udmabuf_create(m, 4 * PAGE)
    for offsets, sizes in (([0, 3 * PAGE], [10, PAGE + 1]), ([2**64 - 1], [2]), ([0], [1, 2])):
        with pytest.raises(NetmemError) as e:
            b.read_device_gather(offsets, sizes)
        assert e.value.errno == errno.EINVAL
    b.close()
    with pytest.raises(NetmemError):
        b.read_device_gather([0], [1])             # no reference left


# ---- references, fds, attachments ---------------------------------------------------------------

def test_get_put_and_close_count_references():
    m = Machine(memory="64MiB")
    free = m.nr_free_pages()
    b = udmabuf_create(m, 2 * PAGE)
    assert dma_buf_get(m, b.fd) is b and b.file_count == 2
    b.close()                                        # the fd's reference; the fd is gone
    assert b.file_count == 1 and m.nr_free_pages() == free - 2
    for call in (lambda: dma_buf_get(m, b.fd), lambda: dma_buf_get(m, 99), b.close):
        with pytest.raises(NetmemError) as e:
            call()
        assert e.value.errno == errno.EBADF
    assert b.read(0, 2) == bytes(2)                  # still alive: the get's reference
    dma_buf_put(b)                                   # the last one frees the pages
    assert m.nr_free_pages() == free and b.file_count == 0
    with pytest.raises(NetmemError) as e:
        dma_buf_put(b)
    assert e.value.errno == errno.EINVAL
    with pytest.raises(NetmemError) as e:
        b.read(0, 1)
    assert e.value.errno == errno.EINVAL


def test_map_twice_gives_two_tables_and_unmap_checks_them():
    m = Machine(memory="64MiB", iommu="dma-iommu")
    eth0 = m.pci["eth0"]
    b = udmabuf_create(m, 2 * PAGE)
    attach = dma_buf_attach(b, eth0)
    one = dma_buf_map_attachment(attach, FROM)
    two = dma_buf_map_attachment(attach, DMA_TO_DEVICE)    # no caching since v6.15
    assert one is not two and one.sgl[0].dma_address != two.sgl[0].dma_address
    other = dma_buf_attach(b, Device(m, "nic2"))
    for call, err in ((lambda: dma_buf_unmap_attachment(attach, one, DMA_TO_DEVICE), "direction"),
                      (lambda: dma_buf_unmap_attachment(other, one, FROM), "not a mapping"),
                      (lambda: dma_buf_map_attachment(attach, 7), "direction")):
        with pytest.raises(NetmemError, match=err) as e:
            call()
        assert e.value.errno == errno.EINVAL
    with pytest.raises(NetmemError) as e:            # the kernel would leak the mappings
        dma_buf_detach(b, attach)
    assert e.value.errno == errno.EBUSY and b.attachments == [other, attach]
    assert "2 attachment(s), 2 mapping(s)" in dmabuf_leaks(m)[0]
    dma_buf_unmap_attachment(attach, one, FROM)
    dma_buf_unmap_attachment(attach, two, DMA_TO_DEVICE)
    assert eth0.nr_mapped == 0
    with pytest.raises(NetmemError) as e:
        dma_buf_unmap_attachment(attach, one, FROM)
    assert e.value.errno == errno.EINVAL
    dma_buf_detach(b, attach)
    with pytest.raises(NetmemError) as e:
        dma_buf_detach(b, attach)
    assert e.value.errno == errno.EINVAL
    with pytest.raises(NetmemError) as e:
        dma_buf_map_attachment(attach, FROM)
    assert e.value.errno == errno.EINVAL
    c = udmabuf_create(m, PAGE)
    with pytest.warns(NetmemWarning, match="dmabuf != attach->dmabuf"):
        dma_buf_detach(c, other)                     # the kernel's WARN_ON, nothing done
    assert b.attachments == [other]
    dma_buf_detach(b, other)
    with pytest.warns(NetmemWarning, match="!dmabuf \\|\\| !dev"), pytest.raises(NetmemError):
        dma_buf_attach(b, None)
    b.close()
    c.close()


def test_the_last_put_with_devices_attached_warns_and_keeps_the_memory():
    m = Machine(memory="64MiB")
    free = m.nr_free_pages()
    b = udmabuf_create(m, PAGE)
    attach = dma_buf_attach(b, m.pci["eth0"])        # takes no reference
    assert b.file_count == 1
    with pytest.warns(NetmemWarning, match="list_empty\\(&dmabuf->attachments\\)"):
        b.close()
    assert m.nr_free_pages() == free - 1
    assert dmabuf_leaks(m) == [("dma-buf fd 3 (udmabuf, 4096 bytes) not released: "
                                  "0 reference(s) (fd closed), 1 attachment(s), 0 mapping(s)")]
    dma_buf_detach(b, attach)                        # the last detach releases it
    assert m.nr_free_pages() == free and m.leak_report() == []
    with pytest.raises(NetmemError) as e:
        dma_buf_attach(b, m.pci["eth0"])
    assert e.value.errno == errno.EINVAL
