"""The netmem plugin's fixtures for devices and pools (``make_nic``, ``nic``, ``page_pool``) and
its provider conformance suite (``ProviderConformance``) run on the repo's providers: the
host-pages provider, a Python net_iov provider (``FreelistProvider`` of test_provider, given
memory), devmem TCP's dma-buf provider, the p2pdma provider and the README's example, run from
the README itself so that it cannot rot.
"""
import re
import types

import numpy as np
import pytest
from netmem.providers.dmabuf import net_devmem_bind_dmabuf, net_devmem_bind_dmabuf_to_queue
from netmem.providers.host import HostPagesProvider
from netmem.providers.p2pdma import P2PDMAProvider
from test_provider import FreelistProvider
from test_readme import README

from netmem.dma import dma_map_page, dma_unmap_page
from netmem.dmabuf import udmabuf_create
from netmem.flows import generate
from netmem.genalloc import gen_pool_avail, gen_pool_size
from netmem.netlink import NetlinkSocket
from netmem.netmem import netmem_get_dma_addr
from netmem.page_pool import DMA_FROM_DEVICE, PAGE_SIZE
from netmem.provider import net_mp_niov_set_dma_addr
from netmem.testing import ProviderConformance


def test_nic_is_the_device_as_it_comes_up(nic, machine):
    assert (nic.machine, nic.num_rx_queues) == (machine, 1)
    assert (nic.tcp_data_split, nic.rx_queues[0].header_pool) == ("auto", None)


def test_make_nic_turns_header_split_on(make_nic):
    nic = make_nic(hds=True, num_rx_queues=2)
    assert nic.ethtool.get_ringparam()["tcp_data_split"] == "on"
    assert all(q.header_pool is not None for q in nic.rx_queues)


def test_make_nic_closes_sockets_and_unregisters_at_teardown(make_nic, machine):
    """Left as they are, the device and its sockets would fail the leak check."""
    nic = make_nic()
    nic.receive(generate(payload=4 * PAGE_SIZE).trace)
    assert machine.tcp.sockets() and machine.leak_report()


def test_page_pool_maps_its_pages_for_a_device(page_pool, machine):
    ref = page_pool.alloc_netmem()
    assert (page_pool.machine, page_pool.ring_size) == (machine, 256)
    assert netmem_get_dma_addr(machine, ref) and page_pool.dma_stats["map"] == 64
    page_pool.put_netmem(ref)


# -- the provider conformance suite on the repo's own providers ------------------------------------

class TestHostPagesConformance(ProviderConformance):
    """The host-pages provider is no provider (its pools get no mp_ops): the balance test
    applies, the tests of the ops skip."""

    def make_provider(self, machine, nic):
        return HostPagesProvider()


class MappedFreelistProvider(FreelistProvider):
    """``FreelistProvider`` with memory a NIC can reach, as a provider bound to a queue needs:
    a host page per net_iov, each mapped for the NIC on its own (so ``memory_map()`` has an
    entry per net_iov, where the README's provider has one block)."""

    def __init__(self, machine, nic, **kw):
        super().__init__(machine, **kw)
        self.dev = nic.pcidev
        self.pages = [machine.alloc_pages() for _ in self.free]
        self.dma = [dma_map_page(self.dev, page, 0, PAGE_SIZE, DMA_FROM_DEVICE)
                    for page in self.pages]
        for niov, addr in zip(self.area.niovs.tolist(), self.dma, strict=True):
            net_mp_niov_set_dma_addr(machine, niov, addr)

    def memory_map(self):
        n = len(self.pages)
        return (np.arange(n, dtype=np.uint64) * PAGE_SIZE,
                np.array([self.machine.netmem(page).phys for page in self.pages], np.uint64),
                np.full(n, PAGE_SIZE, np.uint64))

    def close(self):
        self.area.free()
        for page, addr in zip(self.pages, self.dma, strict=True):
            dma_unmap_page(self.dev, addr, PAGE_SIZE, DMA_FROM_DEVICE)
            self.machine.put_page(page)


class TestFreelistConformance(ProviderConformance):
    """A Python provider of net_iovs that places a batch in the alloc cache on each call."""

    refuses_high_order = False              # its init takes any pool

    def make_provider(self, machine, nic):
        return MappedFreelistProvider(machine, nic, num_niovs=96, batch=7)

    def assert_provider_whole(self, provider):
        assert sorted(provider.free) == provider.area.niovs.tolist()

    def free_provider(self, provider):
        provider.close()


def _readme_example():
    """The code of the README's "Prototyping a memory provider", run as a module."""
    section = README.read_text().split("\n## Prototyping a memory provider\n", 1)[1]
    module = types.ModuleType("readme_example")
    for block in re.findall(r"```python\n(.*?)```", section.split("\n## ", 1)[0], re.S):
        exec(compile(block, str(README), "exec"), module.__dict__)
    return module


TestStackProviderConformance = _readme_example().TestStackProviderConformance


class TestDmabufDevmemConformance(ProviderConformance):
    """devmem TCP's provider over a udmabuf, bound the way bind-rx binds it (the binding is made
    first, the queue joins it on ``install``)."""

    def make_provider(self, machine, nic):
        self._nl = NetlinkSocket(machine)
        self._buf = udmabuf_create(machine, 8 << 20)
        binding = net_devmem_bind_dmabuf(nic, nic.pcidev, DMA_FROM_DEVICE, self._buf.fd,
                                         self._nl)
        return binding.provider

    def install(self, nic, queue, provider):
        net_devmem_bind_dmabuf_to_queue(nic, queue, provider.binding)

    def uninstall(self, nic, queue, provider):
        self._nl.close()                        # net_devmem_unbind_dmabuf()

    def assert_provider_whole(self, provider):
        """The chunk pool is whole (once unbound, the binding's free destroyed it only so)."""
        pool = provider.binding.chunk_pool
        assert pool.destroyed or gen_pool_avail(pool) == gen_pool_size(pool) == 8 << 20

    def free_provider(self, provider):
        self._nl.close()
        self._buf.close()


class TestP2pdmaConformance(ProviderConformance):
    """The p2pdma provider (ours) over 8 MiB of a GPU's BAR, reached through the host bridge."""

    def make_provider(self, machine, nic):
        gpu = machine.pci.add_endpoint(machine.pci.add_root_port(machine.pci.host_bridges[0]),
                                       "gpu0", kind="gpu", bars={0: 64 << 20})
        return P2PDMAProvider(gpu, size=8 << 20)

    def free_provider(self, provider):
        provider.remove()


class TestZcrxConformance(ProviderConformance):
    """io_uring zcrx's provider (``io_uring_pp_zc_ops``) over an ifq with 8 MiB of user memory,
    registered by ``io_register_zcrx()`` on the device but for its last step, the queue open:
    the suite binds the provider with ``netif_mp_open_rxq()`` as it binds any provider."""

    def make_provider(self, machine, nic):
        import netmem.netdev
        from netmem import zcrx as z

        self._mem = z.mmap_anonymous(machine, 8 << 20)
        self._ring = z.IoUring(machine, 64, z.IORING_SETUP_DEFER_TASKRUN |
                               z.IORING_SETUP_SINGLE_ISSUER | z.IORING_SETUP_CQE32)
        reg = z.IoUringZcrxIfqReg(
            if_idx=nic.ifindex, if_rxq=self.rx_queue, rq_entries=2048,
            area=z.IoUringZcrxAreaReg(addr=self._mem.addr, len=self._mem.length),
            region=z.IoUringRegionDesc(size=128 + 16 * 2048))
        with pytest.MonkeyPatch.context() as mp:     # the suite's install() opens the queue
            mp.setattr(netmem.netdev, "netif_mp_open_rxq", lambda *args: None)
            zid = self._ring.register_zcrx_ifq(reg)
        ifq = self._ring.zcrx_ctxs[zid]
        ifq.netdev, ifq.if_rxq = None, -1
        return ifq.provider

    def assert_provider_whole(self, provider):
        ifq = provider.ifq
        assert ifq.free_count == ifq.area.num_niovs and ifq.user_refs.sum() == 0

    def free_provider(self, provider):
        self._ring.close()
        self._mem.munmap()
