"""Hypothesis over the DMA layer under dma-iommu: random map / unmap / sg / two-step sequences,
with time passing, never hand out overlapping live IOVA ranges, every live mapping translates
to its page, and every unmapped IOVA faults."""
import hypothesis.strategies as st
import pytest
from hypothesis import settings
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

import netmem
from netmem import NetmemError
from netmem.dma import (
    Device,
    DmaIovaState,
    SgTable,
    dma_iova_destroy,
    dma_iova_link,
    dma_iova_sync,
    dma_iova_try_alloc,
    dma_map_page,
    dma_map_sgtable,
    dma_unmap_page,
    dma_unmap_sgtable,
)

PAGE = 4096
FROM = netmem.DMA_FROM_DEVICE


class DmaMachine(RuleBasedStateMachine):
    def __init__(self):
        super().__init__()
        self.m = netmem.Machine(memory="32MiB", iommu="dma-iommu", cpus=2)
        self.dev = Device(self.m, "nic")
        self.pages = [self.m.alloc_pages() for _ in range(48)]
        self.live = {}      # first IOVA page -> (pages, [(iova, phys)], kind, handle)
        self.dead = []      # IOVA pages unmapped since the last check

    def _add(self, kind, handle, pairs):
        first = min(i for i, _ in pairs)
        self.live[first] = (kind, handle, pairs)

    @rule(i=st.integers(0, 47), off=st.integers(0, 4095), size=st.integers(1, 4096))
    def map_page(self, i, off, size):
        size = min(size, PAGE - off)
        addr = dma_map_page(self.dev, self.pages[i], off, size, FROM)
        phys = self.m.netmem(self.pages[i]).phys
        self._add("page", (addr, size), [(addr & ~(PAGE - 1), phys)])

    @rule(idx=st.lists(st.integers(0, 47), min_size=1, max_size=8))
    def map_sg(self, idx):
        sgt = SgTable.from_pages(self.m, [(self.pages[i], 0, PAGE) for i in idx])
        dma_map_sgtable(self.dev, sgt, FROM)
        base = sgt.sgl[0].dma_address
        pairs = [(base + k * PAGE, self.m.netmem(self.pages[i]).phys) for k, i in enumerate(idx)]
        self._add("sg", sgt, pairs)

    @rule(idx=st.lists(st.integers(0, 47), min_size=1, max_size=8))
    def two_step(self, idx):
        state = DmaIovaState()
        assert dma_iova_try_alloc(self.dev, state, 0, len(idx) * PAGE)
        for k, i in enumerate(idx):
            assert dma_iova_link(self.dev, state, self.m.netmem(self.pages[i]).phys, k * PAGE,
                                 PAGE, FROM) == 0
        dma_iova_sync(self.dev, state, 0, len(idx) * PAGE)
        pairs = [(state.addr + k * PAGE, self.m.netmem(self.pages[i]).phys)
                 for k, i in enumerate(idx)]
        self._add("iova", (state, len(idx) * PAGE), pairs)

    @precondition(lambda self: self.live)
    @rule(data=st.data())
    def unmap(self, data):
        key = data.draw(st.sampled_from(sorted(self.live)))
        self.dead += [iova for iova, _ in self.unmap_one(key)]

    @rule(ms=st.sampled_from([0, 1, 5, 10, 150]))
    def time_passes(self, ms):
        self.m.advance(ms / 1000)

    @rule(cpu=st.integers(0, 1))
    def move(self, cpu):
        self.m._set_context(cpu, False)

    @invariant()
    def no_overlap_and_translations_hold(self):
        seen = {}
        for kind, _, pairs in self.live.values():
            for iova, phys in pairs:
                assert iova not in seen, f"IOVA {iova:#x} live twice ({kind}, {seen[iova]})"
                seen[iova] = kind
                assert self.dev._translate(iova, True) == phys
        for iova in self.dead:
            if iova not in seen:
                with pytest.raises(NetmemError):
                    self.dev.dma_read(iova, 1)
        self.dead = []

    def teardown(self):
        for key in sorted(self.live):
            self.unmap_one(key)
        self.m.quiesce()
        assert self.dev.nr_mapped == 0
        for ref in self.pages:
            self.m.put_page(ref)
        self.m.iommu.faults.clear()

    def unmap_one(self, key):
        kind, handle, pairs = self.live.pop(key)
        if kind == "page":
            dma_unmap_page(self.dev, handle[0], handle[1], FROM)
        elif kind == "sg":
            dma_unmap_sgtable(self.dev, handle, FROM)
        else:
            dma_iova_destroy(self.dev, handle[0], handle[1], FROM)
        return pairs


DmaMachine.TestCase.settings = settings(derandomize=True, database=None, max_examples=120,
                                        stateful_step_count=40, deadline=None)
TestDma = DmaMachine.TestCase
