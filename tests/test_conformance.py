"""The netmem plugin's fixtures for devices and pools (``make_nic``, ``nic``, ``page_pool``) and
its provider conformance suite (``ProviderConformance``) run on the repo's providers: the
host-pages provider, a Python net_iov provider (``FreelistProvider`` of test_provider, given
memory), devmem
TCP's dma-buf provider, the p2pdma provider and the README's example, run from the README itself
so that it cannot rot.
"""
import errno
import re
import types

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
    """``FreelistProvider`` with memory behind its net_iovs, as a provider that feeds a NIC
    needs: a host page each, mapped for the DMA device of the pools that take the provider
    while any does (one DMA address per net_iov: one device). Without it the NIC would DMA
    into address 0 (``m.iommu.unmapped_accesses``)."""

    def __init__(self, machine, **kw):
        super().__init__(machine, **kw)
        self.pages = [machine.alloc_pages() for _ in self.free]
        self.mapped = None                  # (device, [dma addresses])
        self.pools = set()

    def init(self, pool):
        err, dev = super().init(pool), pool.params.dev
        if err or dev is None:
            return err
        if self.mapped is None:
            addrs = [dma_map_page(dev, p, 0, PAGE_SIZE, DMA_FROM_DEVICE) for p in self.pages]
            for ref, addr in zip(self.area.niovs.tolist(), addrs, strict=True):
                net_mp_niov_set_dma_addr(self.machine, ref, addr)
            self.mapped = (dev, addrs)
        elif self.mapped[0] is not dev:
            return -errno.EOPNOTSUPP
        self.pools.add(pool)
        return 0

    def destroy(self, pool):
        super().destroy(pool)
        self.pools.discard(pool)
        if self.mapped is not None and not self.pools:
            dev, addrs = self.mapped
            for addr in addrs:
                dma_unmap_page(dev, addr, PAGE_SIZE, DMA_FROM_DEVICE)
            self.mapped = None

    def free_memory(self):
        self.area.free()
        for page in self.pages:
            self.machine.put_page(page)


class TestFreelistConformance(ProviderConformance):
    """A Python provider of net_iovs that places a batch in the alloc cache on each call."""

    refuses_high_order = False              # its init takes any pool

    def make_provider(self, machine, nic):
        return MappedFreelistProvider(machine, num_niovs=96, batch=7)

    def assert_provider_whole(self, provider):
        assert sorted(provider.free) == provider.area.niovs.tolist()

    def free_provider(self, provider):
        provider.free_memory()


def _readme_example():
    """The code of the README's "Prototyping a memory provider", run as a module."""
    section = README.read_text().split("\n## Prototyping a memory provider\n", 1)[1]
    module = types.ModuleType("readme_example")
    for block in re.findall(r"```python\n(.*?)```", section.split("\n## ", 1)[0], re.S):
        exec(compile(block, str(README), "exec"), module.__dict__)
    return module


def _dmas_into_address_0(machine, test, *args):
    """Run a conformance test of the README's provider that receives traffic: its net_iovs
    have no memory behind them (DMA address 0), so the NIC writes every payload to physical
    address 0, and the test's leak check fails on that and on nothing else."""
    with pytest.raises(AssertionError, match="to memory no live mapping covers"):
        test(machine, *args)
    (line,) = machine.leak_report()
    assert line.endswith("the first: eth0 write of 2 bytes at 0x0")
    assert {a["address"] for a in machine.iommu.unmapped_accesses} == {0}


class TestStackProviderConformance(_readme_example().TestStackProviderConformance):
    """The README's example. Until it gives its net_iovs memory (issue 13), the two tests that
    receive traffic on a queue bound to it see the NIC DMA into address 0."""

    @pytest.mark.netmem_leaks_ok
    def test_unbind_with_buffers_in_flight(self, machine, make_nic):
        _dmas_into_address_0(machine, super().test_unbind_with_buffers_in_flight, make_nic)

    @pytest.mark.netmem_leaks_ok
    def test_netdev_unregister_calls_uninstall(self, machine, make_nic, monkeypatch):
        _dmas_into_address_0(machine, super().test_netdev_unregister_calls_uninstall, make_nic,
                             monkeypatch)


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
