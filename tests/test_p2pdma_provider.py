"""Tests of ``netmem.providers.p2pdma``, the p2pdma page_pool memory provider (a prototype, not in
mainline): generated TCP flows through a NIC with header split whose payload queue takes BAR
memory of a GPU-like endpoint, for each ``pci_p2pdma_map_type()`` (BUS_ADDR through a switch,
THRU_HOST_BRIDGE on the AMD CPU, NOT_SUPPORTED on an Intel CPU whose root complex is not
whitelisted: EREMOTEIO) under dma-direct and dma-iommu; several providers on one device, with
their own resources or sharing one; ``remove()`` waiting for the net_iovs sockets hold; the
errors of init (E2BIG, a failed mapping, a second DMA device, a removed provider); ``uninstall``
at unregister; ``netif_mp_close_rxq()`` with buffers in flight.

``lab()`` adds a root port with a switch holding gpu0 (BAR 0: 64 MiB) and eth1; eth0 sits on the
machine's first root port, so it reaches gpu0 through the host bridge.
"""
import errno

import pytest
from netmem.providers.p2pdma import P2PDMAProvider
from rxutil import MSS, Flow, payload, receive

from netmem import (
    PP_FLAG_ALLOW_UNREADABLE_NETMEM,
    PP_FLAG_DMA_MAP,
    PP_FLAG_DMA_SYNC_DEV,
    Machine,
    NetmemError,
    NetmemWarning,
)
from netmem.dmabuf import add_device_memory
from netmem.netdev import netif_mp_close_rxq, netif_mp_open_rxq
from netmem.netlink import page_pool_get, queue_get
from netmem.netmem import NET_IOV_P2PDMA
from netmem.pci import (
    PCI_P2PDMA_MAP_BUS_ADDR,
    PCI_P2PDMA_MAP_THRU_HOST_BRIDGE,
    X86_VENDOR_INTEL,
    pci_alloc_p2pmem,
    pci_p2pdma_add_resource,
    pci_p2pdma_map_type,
    pci_resource_len,
    pci_resource_start,
)
from netmem.provider import get_provider

PAGE = 4096
MiB = 1 << 20
RING = 256                          # the NICs' rx ring here: half of a 2 MiB provider
NIOVS = 2 * MiB // PAGE


def lab(m):
    rp = m.pci.add_root_port(m.pci.host_bridges[0])
    sw = m.pci.add_switch(rp)
    gpu = m.pci.add_endpoint(sw, "gpu0", kind="gpu", bars={0: 64 * MiB})
    m.pci.add_endpoint(sw, "eth1", kind="nic")
    return gpu


def raises(code, fn, *args, **kw):
    with pytest.raises(NetmemError) as e:
        fn(*args, **kw)
    assert e.value.errno == code, e.value
    return e.value


@pytest.fixture
def split_nic(make_nic):
    """``split_nic(m, name="eth0", queues=1)``: a NIC with header split and a 256-buffer ring."""
    def make(m, name="eth0", queues=1):
        nic = make_nic(machine=m, name=name, num_rx_queues=queues)
        nic.ethtool.set_ringparam(tcp_data_split="on", rx_ring_size=RING)
        return nic
    return make


@pytest.fixture
def make_provider():
    """``make_provider(pdev, **kw)``; each is removed at teardown (done once the NICs' sockets
    are closed and the leak check quiesces the machine)."""
    made = []

    def make(pdev, **kw):
        made.append(P2PDMAProvider(pdev, **kw))
        return made[-1]

    yield make
    for p in made:
        p.remove()


def send(nic, segs, sport=40000, dport=5201):
    """A connection with ``segs`` full segments; returns its socket and the payload."""
    f = Flow(sport=sport, dport=dport)
    data = payload(segs * MSS, seed=sport)
    receive(nic, [f.syn(), *f.segments(data, flags="PA")])
    return nic.machine.tcp.lookup(f.local, f.remote), data


def landed(p, first, data):
    """Each segment's payload at the start of its own net_iov, from net_iov ``first`` on."""
    n = -(-len(data) // MSS)
    return b"".join(p.read((first + i) * PAGE, MSS) for i in range(n))[:len(data)] == data


# -- the payload in BAR memory, for each map type -------------------------------------------------

@pytest.mark.parametrize("iommu", ["none", "dma-iommu"])
@pytest.mark.parametrize(("nic_name", "map_type"), [("eth1", PCI_P2PDMA_MAP_BUS_ADDR),
                                                    ("eth0", PCI_P2PDMA_MAP_THRU_HOST_BRIDGE)])
def test_payload_lands_in_the_bar(split_nic, make_provider, iommu, nic_name, map_type):
    m = Machine(memory="256MiB", cpus=2, iommu=iommu)
    gpu = lab(m)
    nic = split_nic(m, nic_name)
    p = make_provider(gpu)
    netif_mp_open_rxq(nic, 0, p)
    q = nic.rx_queues[0]
    pool = q.page_pool
    assert pci_p2pdma_map_type(gpu, nic.pcidev) == map_type
    assert (pool.provider, pool.dma_sync, pool.dma_sync_for_cpu_enabled) == (p, False, False)
    assert (q.posted, p.nr_free, q.stats()["alloc_fail"]) == ((RING, RING), NIOVS - RING, 0)
    sk, data = send(nic, 8)
    assert landed(p, 0, data) and m.iommu.faults == []
    assert sk.info()["bytes_received"] == len(data)
    # The provider path counts one alloc_empty per net_iov: the ring, then 8 refills.
    assert pool.stats["alloc_empty"] == RING + 8 and pool.inflight == RING + 8
    view = m.netmem(p.area.netmem(3))
    assert (view.pp, view.owner, view.state) == (pool, p.area, "owned")
    assert (p.area.type, p.area.owner_id, p.area.base_virtual) == (NET_IOV_P2PDMA, p.id, 0)
    if map_type == PCI_P2PDMA_MAP_BUS_ADDR or iommu == "none":
        assert view.dma_addr == p.bus_addr + 3 * PAGE      # the switch, or dma-direct of MMIO
    else:
        assert view.dma_addr >> 32 == 0                     # an IOVA below 4 GiB


@pytest.mark.parametrize("iommu", ["none", "dma-iommu"])
def test_a_host_bridge_that_refuses_p2p_is_eremoteio(split_nic, make_provider, iommu):
    m = Machine(memory="256MiB", cpus=2, iommu=iommu)
    gpu = lab(m)
    # An Intel CPU, so only the whitelist could allow p2p, and the AMD root complex is not on it.
    m.pci.cpu_vendor, m.pci.cpu_family = X86_VENDOR_INTEL, 6
    nic, nic1 = split_nic(m), split_nic(m, "eth1")
    p = make_provider(gpu)
    old = nic.rx_queues[0].page_pool
    raises(errno.EREMOTEIO, netif_mp_open_rxq, nic, 0, p)
    assert (nic.rx_queues[0].mp, nic.rx_queues[0].page_pool) == (None, old)
    assert m.dmesg[-3:] == [
        (f"pci {nic.pcidev.pci_name}: cannot be used for peer-to-peer DMA as the client and "
         f"provider ({gpu.pci_name}) do not share an upstream bridge or whitelisted host bridge"),
        "page_pool_init() mem-provider init failed -121",
        "page_pool_create_percpu() gave up with errno -121"]
    netif_mp_open_rxq(nic1, 0, p)                         # the switch needs no host bridge
    _, data = send(nic1, 2)
    assert landed(p, 0, data)


# -- several providers on one device --------------------------------------------------------------

def test_providers_with_their_own_resources(split_nic, make_provider, m):
    gpu = lab(m)
    bar0 = pci_resource_start(gpu, 0)
    nic = split_nic(m, "eth1", queues=2)
    a, b = make_provider(gpu), make_provider(gpu, size=4 * MiB, offset=2 * MiB)
    assert (a.id, b.id, a.owns_resource, b.owns_resource) == (1, 2, True, True)
    assert [(pg.start, pg.end) for pg in gpu.p2pdma.pgmaps] == [
        (bar0, bar0 + 2 * MiB - 1), (bar0 + 2 * MiB, bar0 + 6 * MiB - 1)]
    assert (a.bus_addr, b.bus_addr, b.area.num_niovs) == (bar0, bar0 + 2 * MiB, 2 * NIOVS)
    for i, p in enumerate((a, b)):
        nic.ethtool.add_ntuple("tcp4", dst_port=5201 + i, queue=i)
        netif_mp_open_rxq(nic, i, p)
    sk_a, data_a = send(nic, 3, sport=1000, dport=5201)
    sk_b, data_b = send(nic, 5, sport=1001, dport=5202)
    assert landed(a, 0, data_a) and landed(b, 0, data_b)
    assert [q.get("p2pdma") for q in queue_get(m, nic.ifindex)] == [1, 2]
    assert sorted(pp.get("p2pdma", 0) for pp in page_pool_get(m)) == [0, 0, 1, 2]
    sk_a.close()
    a.remove()
    m.quiesce()
    assert a.removed and [pg.start for pg in gpu.p2pdma.pgmaps] == [bar0 + 2 * MiB]
    _, data_c = send(nic, 2, sport=1002, dport=5202)        # b goes on
    assert landed(b, 5, data_c) and sk_b.info()["bytes_received"] == len(data_b)
    c = make_provider(gpu)                              # a's range, free again
    assert (c.id, c.bus_addr, c.owns_resource) == (3, bar0, True)   # ids are cyclic


def test_providers_share_p2pmem_the_driver_offered(make_provider, m):
    gpu = lab(m)
    bar0 = pci_resource_start(gpu, 0)
    pci_p2pdma_add_resource(gpu, 0, 8 * MiB, 0)         # the GPU driver offers 8 MiB
    a, b = make_provider(gpu), make_provider(gpu, size=6 * MiB)
    assert (a.owns_resource, b.owns_resource) == (False, False)
    assert (a.bus_addr, b.bus_addr, gpu.p2pdma.available) == (bar0, bar0 + 2 * MiB, 0)
    raises(errno.ENOMEM, P2PDMAProvider, gpu)
    a.remove()
    b.remove()
    assert (a.removed, b.removed, len(gpu.p2pdma.pgmaps)) == (True, True, 1)
    assert gpu.p2pdma.available == 8 * MiB              # the driver's resource stays


def test_bar_choice_and_construction_errors(make_provider, m):
    gpu = lab(m)
    assert make_provider(gpu).bar == 0
    acc = m.pci.add_endpoint(m.pci.add_root_port(m.pci.host_bridges[0]), "acc0", kind="gpu")
    add_device_memory(acc, 64 * MiB)                    # BAR 0, never picked: the driver's
    p = make_provider(acc, size=2 * MiB, offset=2 * MiB)
    assert (p.bar, pci_resource_len(acc, 1)) == (1, 4 * MiB)   # a new BAR for 4 MiB
    raises(errno.EINVAL, P2PDMAProvider, acc, size=1000)
    raises(errno.EINVAL, P2PDMAProvider, acc, size=PAGE)      # an added range is 2 MiB-aligned
    raises(errno.EINVAL, P2PDMAProvider, m.pci.host_bridges[0].dev)
    raises(errno.EINVAL, P2PDMAProvider, acc, bar=5)
    assert get_provider("p2pdma") is P2PDMAProvider


# -- handing the memory back ----------------------------------------------------------------------

@pytest.mark.parametrize("iommu", ["none", "dma-iommu"])
def test_remove_waits_for_net_iovs_in_sockets(split_nic, make_provider, iommu):
    m = Machine(memory="256MiB", cpus=2, iommu=iommu)
    gpu = lab(m)
    nic = split_nic(m)                                  # through the host bridge: a mapping
    p = make_provider(gpu)
    netif_mp_open_rxq(nic, 0, p)
    q, old = nic.rx_queues[0], nic.rx_queues[0].page_pool
    sk, data = send(nic, 8)
    ref = p.area.netmem(0)
    dma = m.netmem(ref).dma_addr
    p.remove()
    assert (q.mp, q.page_pool.provider, p.bound_rxqs) == (None, None, [])
    assert (p.removing, p.removed, old.freed, old.inflight) == (True, False, False, 8)
    m.quiesce()                                         # the pool retries; the socket holds on
    pg = m.pci.p2pdma_pagemap(p.bus_addr)
    assert (p.removed, pg.live, pg.refs, m.netmem(ref).owner) == (False, False, 1, p.area)
    assert pci_alloc_p2pmem(gpu, PAGE) == 0             # the resource gives nothing out
    assert landed(p, 0, data)
    sk.close()
    m.quiesce()
    assert (p.removed, old.freed, m.netmem(ref).owner) == (True, True, None)
    assert (m.pci.p2pdma_pagemap(p.bus_addr), gpu.p2pdma.size) == (None, 0)
    if iommu == "dma-iommu":
        raises(errno.EFAULT, nic.pcidev.dma_write, dma, b"late")   # unmapped with the pool
    p.remove()                                          # a second call does nothing
    raises(errno.ENODEV, netif_mp_open_rxq, nic, 0, p)


def test_netif_mp_close_rxq_with_buffers_in_flight(split_nic, make_provider, m):
    gpu = lab(m)
    nic = split_nic(m, "eth1")
    p = make_provider(gpu)
    netif_mp_open_rxq(nic, 0, p)
    q, old = nic.rx_queues[0], nic.rx_queues[0].page_pool
    sk, _ = send(nic, 8)
    netif_mp_close_rxq(nic, 0, p)
    assert (q.mp, q.page_pool.provider, old.inflight, p.nr_free) == (None, None, 8, NIOVS - 8)
    m.quiesce()
    assert not old.freed
    sk.close()
    m.quiesce()
    assert (old.freed, p.nr_free, p.removed) == (True, NIOVS, False)
    netif_mp_open_rxq(nic, 0, p)                          # unbound, not gone: it binds again
    assert (q.page_pool.provider, q.posted) == (p, (RING, RING))


def test_unregister_calls_uninstall(split_nic, make_provider):
    m = Machine(memory="256MiB", cpus=2, iommu="dma-iommu")
    gpu = lab(m)
    nic = split_nic(m, queues=2)
    p = make_provider(gpu)
    for i in (0, 1):
        netif_mp_open_rxq(nic, i, p)
    assert p.bound_rxqs == nic.rx_queues
    pools = [q.page_pool for q in nic.rx_queues]
    dma = m.netmem(p.area.netmem(0)).dma_addr
    nic.unregister()
    assert p.bound_rxqs == [] and all(q.mp is p for q in nic.rx_queues)
    assert all(pool.freed for pool in pools) and p.nr_free == NIOVS
    raises(errno.EFAULT, nic.pcidev.dma_write, dma, b"gone")    # the last pool unmapped it
    p.remove()
    assert p.removed                                    # nothing held it: at once


# -- init -----------------------------------------------------------------------------------------

def test_init_refusals(split_nic, make_provider, make_pool, m):
    """E2BIG for order > 0, what the mapping fails with, EOPNOTSUPP for a second DMA device."""
    gpu = lab(m)
    p = make_provider(gpu)
    raises(errno.E2BIG, make_pool, provider=p, m=m, order=1, dev=m.pci["eth1"], max_len=8192,
           flags=PP_FLAG_DMA_MAP | PP_FLAG_DMA_SYNC_DEV | PP_FLAG_ALLOW_UNREADABLE_NETMEM)
    assert m.dmesg[-2:] == ["page_pool_init() mem-provider init failed -7",
                            "page_pool_create_percpu() gave up with errno -7"]
    rp = m.pci.add_root_port(m.pci.host_bridges[0])
    m.pci.add_endpoint(rp, "eth2", dma_mask_bits=32)
    nic, nic1, nic2 = split_nic(m), split_nic(m, "eth1"), split_nic(m, "eth2")
    with pytest.warns(NetmemWarning, match="overflow"):    # dma-direct: the BAR is above 4 GiB
        raises(errno.EIO, netif_mp_open_rxq, nic2, 0, p)
    netif_mp_open_rxq(nic1, 0, p)
    raises(errno.EOPNOTSUPP, netif_mp_open_rxq, nic, 0, p)    # one DMA address per net_iov
    assert p.bound_rxqs == [nic1.rx_queues[0]]
