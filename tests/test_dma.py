"""The DMA layer: dma-direct with swiotlb, dma-iommu with its flush queue, device access and
faults, scatterlist merging and the two-step API, with exact addresses from the kernel's rules."""
import errno

import pytest

import netmem
from netmem import NetmemError, NetmemWarning
from netmem.dma import (
    DMA_MAPPING_ERROR,
    Device,
    DmaIovaState,
    SgTable,
    dma_iova_destroy,
    dma_iova_free,
    dma_iova_link,
    dma_iova_sync,
    dma_iova_try_alloc,
    dma_iova_unlink,
    dma_map_page,
    dma_map_sgtable,
    dma_need_sync,
    dma_sync_single_for_cpu,
    dma_unmap_page,
    dma_unmap_sgtable,
    dma_use_iova,
    iova_extents,
)

TO, FROM, BIDI = netmem.DMA_TO_DEVICE, netmem.DMA_FROM_DEVICE, netmem.DMA_BIDIRECTIONAL
PAGE = 4096


@pytest.fixture
def big():
    """8 GiB over two nodes: node 1 starts at 4 GiB, so 32-bit devices need swiotlb."""
    return netmem.Machine(memory="8GiB", numa_nodes=2, cpus=2)


@pytest.fixture
def iommu():
    return netmem.Machine(memory="64MiB", iommu="dma-iommu")


def pages(m, n, nid=-1):
    return [m.alloc_pages(0, nid) for _ in range(n)]


def free(m, refs):
    for r in refs:
        m.put_page(r)


def test_bad_iommu_mode():
    with pytest.raises(NetmemError) as e:
        netmem.Machine(memory="16MiB", iommu="vfio")
    assert e.value.errno == errno.EINVAL


# ---- dma-direct -----------------------------------------------------------------------------

def test_direct_mapping_is_the_physical_address(machine):
    dev = Device(machine, "nic")
    ref = machine.alloc_pages()
    addr = dma_map_page(dev, ref, 100, 200, FROM)
    assert addr == machine.netmem(ref).phys + 100 and dev.nr_mapped == 1
    dev.dma_write(addr, b"hello")
    assert bytes(machine.netmem(ref).address()[100:105]) == b"hello"
    assert dev.dma_read(addr, 5) == b"hello"
    dma_unmap_page(dev, addr, 200, FROM)
    assert dev.nr_mapped == 0
    assert machine.iommu.stats["maps"] == 1 and machine.iommu.stats["unmaps"] == 1
    machine.put_page(ref)


def test_swiotlb_only_when_memory_reaches_past_4g(machine, big):
    assert machine._swiotlb()[1] == 0
    start, slots, used = big._swiotlb()           # memblock_alloc_low(): top-down below 4 GiB
    assert start == (4 << 30) - (64 << 20) and slots == (64 << 20) // 2048 and used == 0
    assert big.managed_pages() == 2 * (4 << 30) // PAGE - 256 - (64 << 20) // PAGE


def test_swiotlb_bounces_what_the_mask_cannot_reach(big):
    dev = Device(big, "nic32", dma_mask_bits=32)
    ref = big.alloc_pages(0, nid=1)
    phys = big.netmem(ref).phys
    assert phys >= 1 << 32 and not dev.dma_dev_need_sync()
    big.netmem(ref).address()[:4] = b"orig"
    addr = dma_map_page(dev, ref, 0, PAGE, FROM)
    assert (4 << 30) - (64 << 20) <= addr < 4 << 30 and big.iommu.stats["bounces"] == 1
    assert dev.dma_dev_need_sync() and dma_need_sync(dev, addr)
    assert dev.dma_read(addr, 4) == b"orig"            # the original is copied in at map time
    dev.dma_write(addr, b"data")
    assert bytes(big.netmem(ref).address()[:4]) == b"orig"
    dma_sync_single_for_cpu(dev, addr, PAGE, FROM)
    assert bytes(big.netmem(ref).address()[:4]) == b"data"
    dev.dma_write(addr, b"more")
    dma_unmap_page(dev, addr, PAGE, FROM)               # the unmap bounces back too
    assert bytes(big.netmem(ref).address()[:4]) == b"more"
    assert big._swiotlb()[2] == 0
    big.put_page(ref)


def test_a_bounce_slot_beyond_the_mask_is_a_mapping_error():
    m = netmem.Machine(memory="64MiB", swiotlb="4MiB")   # forced: the top 4 MiB of memory
    assert m._swiotlb()[0] == (60 << 20)
    dev = Device(m, "isa", dma_mask_bits=24)
    far = [m.alloc_pages(10) for _ in range(5)]           # the fifth block starts at 16 MiB
    with pytest.warns(NetmemWarning, match="overflow"):   # the slot at 60 MiB is out of reach
        assert dma_map_page(dev, far[4], 0, PAGE, FROM) == DMA_MAPPING_ERROR
    assert m._swiotlb()[2] == 0 and m.iommu.stats["bounces"] == 0
    nic = Device(m, "nic32", dma_mask_bits=32)
    near = dma_map_page(nic, far[4], 0, PAGE, FROM)
    assert near == m.netmem(far[4]).phys                  # reachable: no bounce
    dma_unmap_page(nic, near, PAGE, FROM)
    free(m, far)


def test_bar_memory_is_never_bounced():
    m = netmem.Machine(memory="64MiB", swiotlb="4MiB")
    dev = Device(m, "nic32", dma_mask_bits=32)
    bar = m.pci.bar_memory(m.pci.mmio_base, 4)            # eth0's BAR 0, at 4 GiB: MMIO
    bar[:] = b"mmio"
    with pytest.warns(NetmemWarning, match="overflow"):   # DMA_ATTR_MMIO's rule: no swiotlb
        assert dev._map(m.pci.mmio_base, PAGE, FROM, 0) == DMA_MAPPING_ERROR
    assert m.iommu.stats["bounces"] == 0 and m._swiotlb()[2] == 0
    assert dev.nr_map_errors == 1 and bytes(bar) == b"mmio"


def test_no_swiotlb_means_mapping_error_with_one_warning(machine):
    dev = Device(machine, "nic24", dma_mask_bits=24)
    far = [machine.alloc_pages(10) for _ in range(5)]  # the fifth block starts at 16 MiB
    with pytest.warns(NetmemWarning, match="overflow"):
        assert dma_map_page(dev, far[4], 0, PAGE, FROM) == DMA_MAPPING_ERROR
    assert dma_map_page(dev, far[4], 0, PAGE, FROM) == DMA_MAPPING_ERROR  # WARN_ONCE
    assert dev.nr_map_errors == 2 and dev.nr_mapped == 0
    free(machine, far)


def test_direct_access_beyond_the_mask_faults(machine):
    dev = Device(machine, "nic24", dma_mask_bits=24)
    with pytest.raises(NetmemError) as e:
        dev.dma_write(1 << 24, b"x")
    assert e.value.errno == errno.EFAULT
    (fault,) = machine.iommu.faults
    assert fault == {"device": "nic24", "address": 1 << 24, "direction": "write", "time_ns": 0}
    assert machine.iommu.stats["faults"] == 1


def test_dma_api_debug_checks(machine):
    dev = Device(machine, "nic")
    ref = machine.alloc_pages()
    addr = dma_map_page(dev, ref, 0, 64, TO)
    for call in (lambda: dma_unmap_page(dev, addr + PAGE, 64, TO),   # never mapped
                 lambda: dma_unmap_page(dev, addr, 32, TO),          # wrong size
                 lambda: dma_unmap_page(dev, addr, 64, FROM),        # wrong direction
                 lambda: dma_sync_single_for_cpu(dev, addr + 4096, 8, TO)):
        with pytest.raises(NetmemError, match="DMA-API") as e:
            call()
        assert e.value.errno == errno.EINVAL
    dma_unmap_page(dev, addr, 64, TO)
    with pytest.raises(NetmemError, match="has not allocated"):
        dma_unmap_page(dev, addr, 64, TO)                         # double unmap
    assert dev.nr_mapped == 0
    machine.put_page(ref)


# ---- dma-iommu ------------------------------------------------------------------------------

def test_iommu_maps_top_down_in_the_32bit_space_first(iommu):
    dev = Device(iommu, "nic")
    refs = pages(iommu, 3)
    addrs = [dma_map_page(dev, r, 8, 100, FROM) for r in refs]
    assert addrs == [0xFFFFF008, 0xFFFFE008, 0xFFFFD008]
    assert iova_extents(dev, [a & ~4095 for a in addrs], PAGE) == 1
    dev.dma_write(addrs[1], b"via iommu")
    assert bytes(iommu.netmem(refs[1]).address()[8:17]) == b"via iommu"
    for a in addrs:
        dma_unmap_page(dev, a, 100, FROM)
    free(iommu, refs)


def test_iommu_faults_on_unmapped_and_on_direction(iommu):
    dev = Device(iommu, "nic")
    ref = iommu.alloc_pages()
    addr = dma_map_page(dev, ref, 0, PAGE, TO)
    assert dev.dma_read(addr, 4) == bytes(4)
    with pytest.raises(NetmemError):
        dev.dma_write(addr, b"no")                   # a TO_DEVICE mapping is read-only
    dma_unmap_page(dev, addr, PAGE, TO)
    with pytest.raises(NetmemError):
        dev.dma_read(addr, 4)                        # the PTE is gone at once (lazy or not)
    assert [f["direction"] for f in iommu.iommu.faults] == ["write", "read"]
    assert iommu.iommu.stats["faults"] == 2
    iommu.put_page(ref)


def test_lazy_unmap_defers_reuse_until_the_flush_queue_runs(iommu):
    dev = Device(iommu, "nic")
    ref = iommu.alloc_pages()
    a = dma_map_page(dev, ref, 0, PAGE, FROM)
    dma_unmap_page(dev, a, PAGE, FROM)
    b = dma_map_page(dev, ref, 0, PAGE, FROM)
    assert b != a                                     # still queued: not reusable
    dma_unmap_page(dev, b, PAGE, FROM)
    s = iommu.iommu.stats
    assert s["fq_flushes"] == 0
    iommu.advance(0.010)                              # IOVA_DEFAULT_FQ_TIMEOUT
    s = iommu.iommu.stats
    assert s["fq_flushes"] == 1 and s["iotlb_syncs"] == 2 + 1   # two maps, one flush
    c = dma_map_page(dev, ref, 0, PAGE, FROM)
    assert c in (a, b) and iommu.iommu.stats["rcache_hits"] >= 1   # back through the rcache
    dma_unmap_page(dev, c, PAGE, FROM)
    iommu.put_page(ref)


def test_strict_mode_reuses_at_once():
    m = netmem.Machine(memory="64MiB", iommu="dma-iommu", iommu_strict=True)
    dev = Device(m, "nic")
    ref = m.alloc_pages()
    a = dma_map_page(dev, ref, 0, PAGE, FROM)
    dma_unmap_page(dev, a, PAGE, FROM)
    assert dma_map_page(dev, ref, 0, PAGE, FROM) == a
    dma_unmap_page(dev, a, PAGE, FROM)
    s = m.iommu.stats
    assert s["iotlb_syncs"] == 4 and s["fq_flushes"] == 0
    m.put_page(ref)


# ---- scatterlists ---------------------------------------------------------------------------

def test_direct_sg_never_merges(machine):
    dev = Device(machine, "nic")
    refs = pages(machine, 4)
    sgt = SgTable.from_pages(machine, [(r, 0, PAGE) for r in refs])
    dma_map_sgtable(dev, sgt, FROM)
    assert sgt.nents == 4 and [s.dma_length for s in sgt.sgl] == [PAGE] * 4
    dma_unmap_sgtable(dev, sgt, FROM)
    assert dev.nr_mapped == 0
    free(machine, refs)


def test_iommu_sg_merges_into_max_seg_size(iommu):
    dev = Device(iommu, "nic")
    refs = pages(iommu, 20)
    sgt = SgTable.from_pages(iommu, [(r, 0, PAGE) for r in refs])
    dma_map_sgtable(dev, sgt, FROM)
    assert sgt.nents == 2                              # 64 KiB default max_seg_size
    assert [s.dma_length for s in sgt.sgl[:2]] == [16 * PAGE, 4 * PAGE]
    assert sgt.sgl[1].dma_address == sgt.sgl[0].dma_address + 16 * PAGE
    dev.dma_write(sgt.sgl[0].dma_address + 5 * PAGE, b"page five")
    assert bytes(iommu.netmem(refs[5]).address()[:9]) == b"page five"
    dma_unmap_sgtable(dev, sgt, FROM)
    with pytest.raises(NetmemError, match="invalid DMA memory"):
        dma_unmap_sgtable(dev, sgt, FROM)
    free(iommu, refs)


def test_iommu_sg_partial_segment_stops_merging(iommu):
    dev = Device(iommu, "nic")
    refs = pages(iommu, 3)
    sgt = SgTable.from_pages(iommu, [(refs[0], 0, PAGE), (refs[1], 0, 2048), (refs[2], 0, PAGE)])
    dma_map_sgtable(dev, sgt, FROM)
    assert sgt.nents == 2
    assert [s.dma_length for s in sgt.sgl[:2]] == [PAGE + 2048, PAGE]
    dma_unmap_sgtable(dev, sgt, FROM)
    free(iommu, refs)


# ---- the two-step API -----------------------------------------------------------------------

def test_two_step_api_needs_dma_iommu(machine):
    state = DmaIovaState()
    assert not dma_iova_try_alloc(Device(machine), state, 0, 64 * PAGE)
    assert not dma_use_iova(state)


def test_two_step_link_sync_destroy(iommu):
    dev = Device(iommu, "nic")
    refs = pages(iommu, 64)
    state = DmaIovaState()
    assert dma_iova_try_alloc(dev, state, 0, 64 * PAGE) and dma_use_iova(state)
    syncs = iommu.iommu.stats["iotlb_syncs"]
    for i, r in enumerate(refs):
        assert dma_iova_link(dev, state, iommu.netmem(r).phys, i * PAGE, PAGE, FROM) == 0
    assert iommu.iommu.stats["iotlb_syncs"] == syncs          # links do not sync
    dma_iova_sync(dev, state, 0, 64 * PAGE)
    assert iommu.iommu.stats["iotlb_syncs"] == syncs + 1      # one sync for the batch
    dev.dma_write(state.addr + 63 * PAGE, b"last")
    assert bytes(iommu.netmem(refs[63]).address()[:4]) == b"last"
    dma_iova_unlink(dev, state, 63 * PAGE, PAGE, FROM)
    assert iommu.iommu.stats["iotlb_syncs"] == syncs + 2      # unlink syncs at once
    with pytest.raises(NetmemError):
        dev.dma_read(state.addr + 63 * PAGE, 1)
    dma_iova_destroy(dev, state, 63 * PAGE, FROM)
    assert not dma_use_iova(state)
    free(iommu, refs)


def test_two_step_rules(iommu):
    dev = Device(iommu, "nic")
    ref = iommu.alloc_pages()
    state = DmaIovaState()
    with pytest.warns(NetmemWarning, match="WARN_ON_ONCE"):
        assert not dma_iova_try_alloc(dev, state, 0, 0)
    assert dma_iova_try_alloc(dev, state, 0, 4 * PAGE)
    phys = iommu.netmem(ref).phys
    with pytest.warns(NetmemWarning, match="iova_start_pad"):
        assert dma_iova_link(dev, state, phys + 16, PAGE, 64, FROM) == -errno.EIO
    with pytest.raises(NetmemError, match="beyond the IOVA window"):
        dma_iova_link(dev, state, phys, 4 * PAGE, PAGE, FROM)
    dma_iova_destroy(dev, state, 0, FROM)
    with pytest.raises(NetmemError):
        dma_iova_destroy(dev, state, 0, FROM)
    iommu.put_page(ref)


# ---- page_pool over the DMA layer -------------------------------------------------------------

@pytest.mark.parametrize("mode", ["none", "passthrough", "dma-iommu"])
def test_page_pool_maps_through_the_layer(mode):
    m = netmem.Machine(memory="64MiB", iommu=mode)
    dev = Device(m, "nic")
    params = netmem.PagePoolParams(flags=netmem.PP_FLAG_DMA_MAP, dev=dev)
    pool = netmem.page_pool_create(m, params)
    ref = pool.alloc_netmem()
    addr = m.netmem(ref).dma_addr
    assert (addr == m.netmem(ref).phys) == (mode != "dma-iommu")
    dev.dma_write(addr + 10, b"rx")
    assert bytes(m.netmem(ref).address()[10:12]) == b"rx"
    assert dev.nr_mapped == 64                        # the whole bulk was mapped
    pool.put_netmem(ref)
    pool.destroy()
    m.quiesce()
    assert dev.nr_mapped == 0 and m.leak_report() == []


@pytest.mark.parametrize("window", [False, True], ids=["dma_map_page", "iova_window"])
def test_page_pool_maps_in_its_dma_dir(iommu, window):
    """``page_pool_dma_map()`` maps with ``pool->p.dma_dir``: a DMA_BIDIRECTIONAL pool (XDP_TX)
    gets read and write PTEs, so the device can read back what it wrote; a DMA_FROM_DEVICE
    pool's PTEs are IOMMU_WRITE only and the read faults. The same holds for a buffer linked
    into the host provider's IOVA window."""
    from netmem.providers.host import HostPagesProvider
    dev = Device(iommu, "nic")
    got = {}
    for dma_dir in (FROM, BIDI):
        params = netmem.PagePoolParams(flags=netmem.PP_FLAG_DMA_MAP, dev=dev, dma_dir=dma_dir)
        pool = netmem.page_pool_create(
            iommu, params, provider=HostPagesProvider(iova_window=True) if window else None)
        assert (pool.iova_window is not None) == window
        ref = pool.alloc_netmem()
        addr = iommu.netmem(ref).dma_addr
        dev.dma_write(addr + 8, b"xdp!")                 # both directions let the device write
        try:
            got[dma_dir] = dev.dma_read(addr + 8, 4)
        except NetmemError as e:
            got[dma_dir] = errno.errorcode[e.errno]
        pool.put_netmem(ref)
        pool.destroy()
    assert got == {FROM: "EFAULT", BIDI: b"xdp!"}
    assert [f["direction"] for f in iommu.iommu.faults] == ["read"]
    iommu.quiesce()
    assert dev.nr_mapped == 0 and iommu.leak_report() == []


@pytest.mark.parametrize("dma_dir, seen", [(FROM, bytes(4)), (BIDI, b"xmit")],
                         ids=["FROM_DEVICE", "BIDIRECTIONAL"])
def test_page_pool_syncs_for_device_in_its_dma_dir(big, dma_dir, seen):
    """``__page_pool_dma_sync_for_device()`` syncs in ``p.dma_dir``: on a bounced buffer,
    ``swiotlb_sync_single_for_device()`` copies the CPU's bytes out to the slots for
    DMA_BIDIRECTIONAL only, so a recycled XDP_TX buffer reaches the device; a DMA_FROM_DEVICE
    pool's slots keep what they held."""
    dev = Device(big, "nic32", dma_mask_bits=32)
    params = netmem.PagePoolParams(flags=netmem.PP_FLAG_DMA_MAP | netmem.PP_FLAG_DMA_SYNC_DEV,
                                   dev=dev, dma_dir=dma_dir, max_len=PAGE, nid=1)
    pool = netmem.page_pool_create(big, params)
    ref = pool.alloc_netmem()
    addr = big.netmem(ref).dma_addr
    assert big.netmem(ref).phys >= 1 << 32 and addr < 1 << 32          # bounced
    big.netmem(ref).address()[:4] = b"xmit"              # the CPU rewrites the frame
    pool.recycle_direct(ref)                             # page_pool_dma_sync_for_device()
    assert pool.alloc_netmem() == ref
    assert dev.dma_read(addr, 4) == seen
    pool.put_netmem(ref)
    pool.destroy()
    big.quiesce()
    assert dev.nr_mapped == 0 and big.leak_report() == []


def test_page_pool_dma_sync_for_cpu_bounces_back(big):
    """``page_pool_dma_sync_netmem_for_cpu()`` is ``dma_sync_single_range_for_cpu()`` in
    ``page_pool_get_dma_dir()``: on a bounced buffer the device's bytes reach the CPU, from
    ``dma_addr + offset + p.offset`` on."""
    dev = Device(big, "nic32", dma_mask_bits=32)
    params = netmem.PagePoolParams(flags=netmem.PP_FLAG_DMA_MAP, dev=dev, offset=64, nid=1)
    pool = netmem.page_pool_create(big, params)
    ref = pool.alloc_netmem()
    addr = big.netmem(ref).dma_addr
    dev.dma_write(addr + 64 + 8, b"from the wire")
    assert bytes(big.netmem(ref).address()[72:85]) == bytes(13)     # still in the slots
    assert pool.dma_sync_for_cpu(ref, 8, 13) == addr + 64 + 8
    assert bytes(big.netmem(ref).address()[72:85]) == b"from the wire"
    pool.put_netmem(ref)
    pool.destroy()
    big.quiesce()
    assert dev.nr_mapped == 0 and big.leak_report() == []


def test_host_provider_iova_window_makes_one_extent(iommu):
    from netmem.providers.host import HostPagesProvider
    dev = Device(iommu, "nic")
    params = netmem.PagePoolParams(flags=netmem.PP_FLAG_DMA_MAP, dev=dev, pool_size=256)
    classic = netmem.page_pool_create(iommu, params)
    window = netmem.page_pool_create(iommu, params, provider=HostPagesProvider(iova_window=True))
    assert window.iova_window[1] == 256 + netmem.PP_ALLOC_CACHE_SIZE
    syncs = iommu.iommu.stats["iotlb_syncs"]
    got = {}
    for name, pool in (("classic", classic), ("window", window)):
        refs = [pool.alloc_netmem() for _ in range(64)]
        got[name] = iova_extents(dev, [iommu.netmem(r).dma_addr for r in refs], PAGE)
        for r in refs:
            pool.put_netmem(r)
    # the classic pool mapped 64 pages with 64 syncs, the window linked them with one
    assert iommu.iommu.stats["iotlb_syncs"] - syncs == 64 + 1
    assert got["window"] == 1
    for pool in (classic, window):
        pool.destroy()
    iommu.quiesce()
    assert dev.nr_mapped == 0


def test_iova_window_falls_back_without_dma_iommu(machine):
    from netmem.providers.host import HostPagesProvider
    dev = Device(machine, "nic")
    params = netmem.PagePoolParams(flags=netmem.PP_FLAG_DMA_MAP, dev=dev)
    pool = netmem.page_pool_create(machine, params, provider=HostPagesProvider(iova_window=True))
    assert pool.iova_window is None
    ref = pool.alloc_netmem()
    assert machine.netmem(ref).dma_addr == machine.netmem(ref).phys
    pool.put_netmem(ref)
    pool.destroy()


# ---- the device itself --------------------------------------------------------------------------

def test_device_takes_a_name_by_keyword_or_position(machine):
    d = Device(machine, name="nvme0", dma_mask_bits=32, coherent=False)
    assert d.name == "nvme0" and d.dma_mask == 0xffffffff and d.dma_dev_need_sync()
    d = Device(machine, "gpu0", 48)
    assert d.name == "gpu0" and d.dma_mask == (1 << 48) - 1 and not d.dma_dev_need_sync()
    assert repr(Device(machine)) == "<Device dev0 mask=0xffffffffffffffff mapped=0>"


@pytest.mark.parametrize("bits", [11, 65])
def test_device_refuses_a_mask_that_is_not_one(machine, bits):
    with pytest.raises(NetmemError) as e:      # dma_set_mask(): -EIO when not supported
        Device(machine, name="x", dma_mask_bits=bits)
    assert e.value.errno == errno.EIO


@pytest.mark.parametrize("bits", [12, 24, 31, 32, 39, 48, 63, 64])
def test_dma_mask_has_the_low_bits_set(machine, bits):
    assert Device(machine, dma_mask_bits=bits).dma_mask == (1 << bits) - 1


@pytest.mark.parametrize("boundary, nents", [(None, 1), (0xFFFF, 2)])
def test_iommu_sg_segment_boundary_pads_and_splits(iommu, boundary, nents):
    dev = Device(iommu, "nic")
    dev.dma_set_max_seg_size(1 << 20)
    if boundary is not None:
        dev.dma_set_seg_boundary(boundary)
    small, block = iommu.alloc_pages(0), iommu.alloc_pages(4)       # 4 KiB, then 64 KiB
    sgt = SgTable.from_pages(iommu, [(small, 0, PAGE), (block, 0, 16 * PAGE)])
    dma_map_sgtable(dev, sgt, FROM)
    assert sgt.nents == nents
    if nents == 1:
        assert sgt.sgl[0].dma_length == 17 * PAGE
    else:           # the first segment is padded to the 64 KiB boundary the second may not cross
        assert sgt.sgl[1].dma_address == sgt.sgl[0].dma_address + 16 * PAGE
        assert [s.dma_length for s in sgt.sgl[:2]] == [PAGE, 16 * PAGE]
    dev.dma_write(sgt.sgl[nents - 1].dma_address + (PAGE if nents == 1 else 0), b"blk")
    assert bytes(iommu.netmem(block).address()[:3]) == b"blk"
    dma_unmap_sgtable(dev, sgt, FROM)
    free(iommu, [small, block])


def test_seg_boundary_must_be_a_power_of_two_minus_one(machine):
    with pytest.raises(NetmemError) as e:
        Device(machine).dma_set_seg_boundary(0x1000)
    assert e.value.errno == errno.EINVAL


def test_lazy_dma_iova_free_skips_the_flush_queue(iommu):
    """dma_iova_free() passes a NULL gather to iommu_dma_free_iova(), so even with
    iommu.strict=0 the window goes straight back (free_iova_fast()), not through queue_iova();
    dma_iova_destroy() with a mapped length frees through a queued gather, as unmap does."""
    dev = Device(iommu, "nic")
    state = DmaIovaState()
    assert dma_iova_try_alloc(dev, state, 0, 16 * PAGE)
    a = state.addr
    dma_iova_free(dev, state)
    assert dev._fq_deadline() == 0                    # nothing queued: no flush-queue timer
    assert iommu.iommu.stats["fq_flushes"] == 0
    assert dma_iova_try_alloc(dev, state, 0, 16 * PAGE) and state.addr == a   # back at once
    ref = iommu.alloc_pages()
    assert dma_iova_link(dev, state, iommu.netmem(ref).phys, 0, PAGE, FROM) == 0
    dma_iova_destroy(dev, state, PAGE, FROM)
    assert dev._fq_deadline() != 0                    # queued behind the next IOTLB flush
    assert dma_iova_try_alloc(dev, state, 0, 16 * PAGE) and state.addr != a
    dma_iova_free(dev, state)
    iommu.put_page(ref)


def test_lazy_pool_iova_window_free_skips_the_flush_queue(iommu):
    """The pool's window goes back through dma_iova_free(): a NULL gather, so not queued."""
    from netmem.providers.host import HostPagesProvider
    dev = Device(iommu, "nic")
    params = netmem.PagePoolParams(flags=netmem.PP_FLAG_DMA_MAP, dev=dev, pool_size=256)
    pool = netmem.page_pool_create(iommu, params, provider=HostPagesProvider(iova_window=True))
    addr, slots, _ = pool.iova_window
    refs = [pool.alloc_netmem() for _ in range(8)]
    for r in refs:
        pool.put_netmem(r)
    pool.destroy()                                    # every buffer is back: freed now
    assert dev.nr_mapped == 0 and pool.iova_window is None
    assert dev._fq_deadline() == 0                    # nothing queued (no quiesce())
    state = DmaIovaState()
    assert dma_iova_try_alloc(dev, state, 0, slots * PAGE) and state.addr == addr
    dma_iova_free(dev, state)
