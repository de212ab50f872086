"""Differential tests of page_pool: netmem's C core against the pure-Python reference model.

Each run drives a core ``Machine`` and a ``RefMachine`` over an identical machine through the same
seeded random sequence of several hundred operations (allocs, bulk allocs, frags, sized allocs,
puts with and without allow_direct, direct recycling, bulk puts that mix pools and name tail
pages, extra pp and page references, pfmemalloc pages, CPU and softirq context changes, provoked
double and wrong-pool puts, destroy) and compares after every one: the handles returned, the
warnings raised, the eleven stats, hold/release/inflight, the alloc cache and ring occupancy and
the free pages of the buddy allocator; for a DMA-mapped pool, its device's live mappings must
equal inflight until destroy and 0 after. Scenarios cover one node, compound pages, two NUMA
nodes (where recycling across CPUs makes the refill waive), a machine small enough to run out of
memory and a device that cannot reach all of it; each checks at the end that the paths it is
meant to reach were reached. Every run ends by returning everything, destroying the pools and
quiescing both machines.
"""
import collections
import dataclasses
import random
import warnings

import pytest
from reference.page_pool_model import OWNED, PAGE_SIZE, RefMachine, observe

import netmem
from netmem.dma import Device
from netmem.netdev import Napi

NR_OPS = 500
SEEDS = range(32)
RING_SIZES = (4, 5, 8, 16, 31, 32, 64)      # batch 1 below 32 entries, 16 from 32 on
FRAG_SIZES = (0, 64, 256, 1024, 1536, 2048, 4096, 9000)
WARNING_KINDS = {"not a page_pool buffer": "not_pp", "belongs to another pool": "wrong_pool",
                 "double put": "double_put", "into destroyed page_pool": "direct_after_destroy",
                 "WARN_ON(size > max_size)": "frag_size", "WARN_ON(ret < 0)": "pp_ref_neg",
                 "overflow (dev_WARN_ONCE)": "dma_overflow"}
ALLOC_OPS = {"alloc": 10, "alloc_bulk": 2, "alloc_frag": 8, "alloc_sized": 6}
OTHER_OPS = {"put": 14, "recycle_direct": 5, "bulk_put": 4, "ref": 2, "get_page": 2,
             "put_page": 2, "pfmemalloc": 1, "context": 4, "double_put": 1, "wrong_pool": 1,
             "destroy": 0.25}


@dataclasses.dataclass(frozen=True)
class Scenario:
    memory: str
    numa_nodes: int
    orders: tuple
    nr_pools: int
    max_held: int               # no allocs while the test holds this many references
    alloc_weight: float = 1.0   # scales the alloc ops against the rest
    dma_mask_bits: int = 64     # of the devices of DMA-mapped pools (half of the pools)
    reaches: tuple = ()         # counters (stats, or Run.events) that must end up non-zero


SCENARIOS = {
    "uma": Scenario("32MiB", 1, (0,), 2, 400, alloc_weight=1.3,
                    reaches=("alloc_refill", "recycle_cached", "recycle_cache_full",
                             "recycle_ring_full", "recycle_released_refcnt", "double_put",
                             "wrong_pool", "direct_after_destroy")),
    "compound": Scenario("32MiB", 1, (0, 1, 2, 3), 2, 200,
                         reaches=("alloc_slow_high_order", "alloc_refill", "tail_ref")),
    "numa": Scenario("64MiB", 2, (0, 0, 1), 3, 300, reaches=("alloc_waive", "alloc_refill")),
    "tight": Scenario("8MiB", 2, (0, 1, 2), 2, 2000, alloc_weight=3.0,
                      reaches=("alloc_failed", "alloc_slow")),
    "dma": Scenario("32MiB", 2, (0, 0, 3), 3, 300, dma_mask_bits=24,    # node 1 is beyond 16 MiB
                    reaches=("dma_map_error", "alloc_failed", "alloc_slow")),
}


def warning_kind(message):
    text = str(message)
    return next((kind for key, kind in WARNING_KINDS.items() if key in text), text)


class Run:
    """One seeded run: the core and the model side by side, and what the test holds."""

    def __init__(self, scenario, seed):
        self.rng = random.Random(seed)
        self.scenario = scenario
        self.m = netmem.Machine(memory=scenario.memory, numa_nodes=scenario.numa_nodes, cpus=2)
        self.rm = RefMachine.like(self.m)
        self.ctx = (0, False)
        self.log = [f"{scenario} seed {seed}"]
        self.events = collections.Counter()
        self.pools = []
        for _ in range(scenario.nr_pools):
            self.pools.append(self.create_pool())
        self.held = []          # (pool index, ref): one per pp reference the test holds
        self.page_refs = []     # refs on which the test holds an extra page reference
        self.gone = []          # refs whose last pp reference the test gave back

    def create_pool(self):
        rng = self.rng
        cpu = rng.randrange(self.m.cpus)
        mode = rng.choice(("plain", "napi", "percpu"))
        order = rng.choice(self.scenario.orders)
        params = netmem.PagePoolParams(
            order=order, pool_size=rng.choice(RING_SIZES),
            nid=rng.choice((-1, -1, *range(self.m.numa_nodes))),
            napi=Napi(self.m, cpu) if mode == "napi" else None)
        if rng.random() < 0.5:
            params.dev = Device(self.m, dma_mask_bits=self.scenario.dma_mask_bits,
                                coherent=rng.random() < 0.5)
            params.flags = netmem.PP_FLAG_DMA_MAP | netmem.PP_FLAG_DMA_SYNC_DEV
            params.max_len = PAGE_SIZE << order
        cpuid = cpu if mode == "percpu" else -1
        self.log.append(f"pool {len(self.pools)}: {params}, cpuid {cpuid}")
        return (netmem.page_pool_create_percpu(self.m, params, cpuid),
                self.rm.page_pool_create_percpu(params, cpuid))

    # -- running ops on both sides ------------------------------------------------------------

    def trail(self):
        return "\n".join(self.log[:1] + self.log[-12:])

    def call(self, what, core_call, model_call):
        """Run one op on both sides in the current context; their warnings must agree."""
        self.log.append(f"{self.ctx} {what}")
        with warnings.catch_warnings(record=True) as caught, self.m.on_cpu(*self.ctx), \
                self.rm.on_cpu(*self.ctx):
            warnings.simplefilter("always")
            got = core_call()
            want = model_call()
        kinds = self.rm.take_warnings()
        assert [warning_kind(w.message) for w in caught] == kinds, self.trail()
        self.events.update(kinds)
        return got, want

    def same(self, what, core_call, model_call):
        """``call`` for ops that return handles: the core's must equal the model's."""
        got, want = self.call(what, core_call, model_call)
        assert got == want, self.trail()
        return want

    def check(self):
        for i, (core, model) in enumerate(self.pools):
            assert observe(core) == observe(model), f"pool {i}\n{self.trail()}"
            assert core._cache_contents() == model.cache, f"pool {i}\n{self.trail()}"
            if core.dma_map:    # scrub unmaps every page, in flight or not
                mapped = 0 if core.destroy_cnt else core.inflight
                assert core.params.dev.nr_mapped == mapped, f"pool {i}\n{self.trail()}"
        assert self.m.nr_free_pages() == self.rm.nr_free_pages(), self.trail()

    def check_buffers(self, refs):
        """The buffers an op touched: where each ledger has them, their pp_ref_count while a
        pool owns them, the page refcount and pfmemalloc flag."""
        for ref in refs:
            page, buf, twin = self.m.netmem(ref), self.rm.bufs.get(ref), self.rm.pages.netmem(ref)
            want = (buf.where, buf.pp_ref_count) if buf else ("none", None)
            assert (page.state, page.pp_ref_count if buf else None) == want, self.trail()
            assert (page.refcount, page.is_pfmemalloc) == (twin.refcount, twin.is_pfmemalloc), \
                self.trail()

    # -- choosing -----------------------------------------------------------------------------

    def live(self):
        return [i for i, (core, _) in enumerate(self.pools) if not core.destroy_cnt]

    def live_pool(self):
        """A pool not yet destroyed (one always is, until the end): index, core, model."""
        i = self.rng.choice(self.live())
        return i, *self.pools[i]

    def take(self, i, refs):
        got = [ref for ref in refs if ref]
        self.held += [(i, ref) for ref in got]
        self.events["alloc_failed"] += len(got) < len(refs)
        self.check_buffers(got)

    def pop_held(self):
        k = self.rng.randrange(len(self.held))
        self.held[k], self.held[-1] = self.held[-1], self.held[k]
        return self.held.pop()

    def gave_back(self, ref):
        if all(ref != r for _, r in self.held):
            self.gone = [*self.gone[-63:], ref]
        self.check_buffers([ref])

    def held_once(self):
        """A held entry whose buffer has no other pp reference (not a frag page)."""
        counts = collections.Counter(ref for _, ref in self.held)
        return [(i, ref) for i, ref in self.held
                if counts[ref] == 1 and self.rm.bufs[ref].pp_ref_count == 1]

    # -- ops ----------------------------------------------------------------------------------

    def op_alloc(self):
        i, core, model = self.live_pool()
        self.take(i, [self.same(f"alloc_netmem {i}", core.alloc_netmem, model.alloc_netmem)])

    def op_alloc_bulk(self):
        (i, core, model), n = self.live_pool(), self.rng.randint(1, 80)
        self.take(i, self.same(f"alloc_netmems_bulk {i} {n}",
                               lambda: [int(ref) for ref in core.alloc_netmems_bulk(n)],
                               lambda: model.alloc_netmems_bulk(n)))

    def op_alloc_frag(self):
        (i, core, model), size = self.live_pool(), self.rng.choice(FRAG_SIZES)
        ref, _ = self.same(f"alloc_frag {i} {size}", lambda: core.alloc_frag(size),
                           lambda: model.alloc_frag(size))
        if size <= model.max_size:
            self.take(i, [ref])

    def op_alloc_sized(self):
        i, core, model = self.live_pool()
        size = self.rng.randint(0, model.max_size)
        ref, _, _ = self.same(f"alloc {i} {size}", lambda: core.alloc(size),
                              lambda: model.alloc(size))
        self.take(i, [ref])

    def op_put(self):
        if self.held:
            i, ref = self.pop_held()
            core, model = self.pools[i]
            direct = self.rng.random() < 0.3
            self.call(f"put_netmem {i} {ref:#x} direct={direct}",
                      lambda: core.put_netmem(ref, allow_direct=direct),
                      lambda: model.put_netmem(ref, direct))
            self.gave_back(ref)

    def op_recycle_direct(self):
        if self.held:
            i, ref = self.pop_held()
            core, model = self.pools[i]
            self.call(f"recycle_direct {i} {ref:#x}", lambda: core.recycle_direct(ref),
                      lambda: model.recycle_direct(ref))
            self.gave_back(ref)

    def op_bulk_put(self):
        if not self.held:
            return
        picked = [self.pop_held() for _ in range(self.rng.randint(1, min(40, len(self.held))))]
        refs = [self.maybe_tail(i, ref) for i, ref in picked]
        self.call(f"bulk put {[hex(ref) for ref in refs]}",
                  lambda: netmem.page_pool_put_netmem_bulk(self.m, refs),
                  lambda: self.rm.page_pool_put_netmem_bulk(refs))
        for _, ref in picked:
            self.gave_back(ref)

    def maybe_tail(self, i, ref):
        """Sometimes a tail page of a compound buffer: the bulk put finds its head."""
        order = self.pools[i][1].order
        if not order or self.rng.random() < 0.6:
            return ref
        self.events["tail_ref"] += 1
        return ref + (self.rng.randrange(1, 1 << order) << 1)

    def op_ref(self):
        if self.held:
            i, ref = self.rng.choice(self.held)
            core, model = self.pools[i]
            self.call(f"ref_netmem {i} {ref:#x}", lambda: core.ref_netmem(ref),
                      lambda: model.ref_netmem(ref))
            self.held.append((i, ref))
            self.check_buffers([ref])

    def op_get_page(self):
        if self.held:
            _, ref = self.rng.choice(self.held)
            self.call(f"get_page {ref:#x}", lambda: self.m.get_page(ref),
                      lambda: self.rm.get_page(ref))
            self.page_refs.append(ref)
            self.check_buffers([ref])

    def op_put_page(self):
        if self.page_refs:
            ref = self.page_refs.pop(self.rng.randrange(len(self.page_refs)))
            self.call(f"put_page {ref:#x}", lambda: self.m.put_page(ref),
                      lambda: self.rm.put_page(ref))
            self.check_buffers([ref])

    def op_pfmemalloc(self):
        if self.held:
            _, ref = self.rng.choice(self.held)
            flag = self.rng.random() < 0.7
            self.call(f"set_pfmemalloc {ref:#x} {flag}", lambda: self.m.set_pfmemalloc(ref, flag),
                      lambda: self.rm.set_pfmemalloc(ref, flag))
            self.check_buffers([ref])

    def op_context(self):
        self.ctx = (self.rng.randrange(self.m.cpus), self.rng.random() < 0.75)

    def op_double_put(self):
        """A put of a buffer the test gave back (in a cache, a ring or the allocator), or a
        bulk put naming one buffer twice: refused with a warning."""
        once = self.held_once()
        if once and self.rng.random() < 0.3:
            i, ref = self.rng.choice(once)
            self.held.remove((i, ref))
            self.call(f"bulk put twice {ref:#x}",
                      lambda: netmem.page_pool_put_netmem_bulk(self.m, [ref, ref]),
                      lambda: self.rm.page_pool_put_netmem_bulk([ref, ref]))
            self.gave_back(ref)
            return
        bufs = self.rm.bufs
        free = [ref for ref in self.gone if ref not in bufs or bufs[ref].where != OWNED]
        if free:
            ref = self.rng.choice(free)
            buf = self.rm.bufs.get(ref)
            i = self.rm.pools.index(buf.pool) if buf else self.rng.randrange(len(self.pools))
            core, model = self.pools[i]
            self.call(f"double put {i} {ref:#x}", lambda: core.put_netmem(ref),
                      lambda: model.put_netmem(ref))
            self.check_buffers([ref])

    def op_wrong_pool(self):
        if self.held and len(self.pools) > 1:
            i, ref = self.rng.choice(self.held)
            j = self.rng.choice([j for j in range(len(self.pools)) if j != i])
            core, model = self.pools[j]
            self.call(f"put {ref:#x} of pool {i} to pool {j}", lambda: core.put_netmem(ref),
                      lambda: model.put_netmem(ref))
            self.check_buffers([ref])

    def op_destroy(self):
        """Destroy a pool while its buffers are out; the last live pool waits for the end."""
        if len(self.live()) > 1:
            i, core, model = self.live_pool()
            self.call(f"destroy {i}", core.destroy, model.destroy)

    # -- the run ------------------------------------------------------------------------------

    def weights(self):
        scale = self.scenario.alloc_weight if len(self.held) < self.scenario.max_held else 0
        ops = {name: weight * scale for name, weight in ALLOC_OPS.items()} | OTHER_OPS
        return [getattr(self, f"op_{name}") for name in ops], list(ops.values())

    def run(self, nr_ops):
        for _ in range(nr_ops):
            ops, weights = self.weights()
            self.rng.choices(ops, weights)[0]()
            self.check()
        self.finish()

    def finish(self):
        """Give everything back, destroy the pools, quiesce: nothing may be left anywhere."""
        while self.held:
            self.rng.choice((self.op_put, self.op_recycle_direct, self.op_bulk_put))()
            self.check()
        while self.page_refs:
            self.op_put_page()
        for i, (core, model) in enumerate(self.pools):
            if not core.destroy_cnt:
                self.call(f"destroy {i}", core.destroy, model.destroy)
        self.m.quiesce()
        self.rm.quiesce()
        self.check()
        assert all(core.freed and model.freed for core, model in self.pools), self.trail()
        assert self.m.nr_free_pages() == self.m.managed_pages(), self.trail()

    def totals(self):
        """The stats summed over the pools, with the run's own events."""
        out = collections.Counter(self.events)
        for core, model in self.pools:
            out.update({key: value for key, value in model.stats.items() if value})
            if core.dma_map:
                out["dma_map_error"] += core.params.dev.nr_map_errors
        return out


@pytest.mark.parametrize("name", SCENARIOS)
def test_core_matches_reference_model(name):
    scenario = SCENARIOS[name]
    totals = collections.Counter()
    for seed in SEEDS:
        run = Run(scenario, seed)
        run.run(NR_OPS)
        totals += run.totals()
    assert [key for key in scenario.reaches if not totals[key]] == [], totals


def _pair(m, rm, params):
    return netmem.page_pool_create(m, params), rm.page_pool_create(params)


def test_alloc_size_shift_is_unsigned_int():
    """helpers.h: ``(*size << 1) > max_size`` on an unsigned int: 2**31 wraps to 0, so the
    request takes the frag path, which WARNs (size > max_size) and returns nothing."""
    m = netmem.Machine(memory="32MiB", numa_nodes=1, cpus=2)
    rm = RefMachine.like(m)
    core, model = _pair(m, rm, netmem.PagePoolParams())
    with pytest.warns(netmem.NetmemWarning, match=r"WARN_ON\(size > max_size\)"):
        assert core.alloc(2**31) == (0, 0, 0)
    assert model.alloc(2**31) == (0, 0, 0)
    assert rm.take_warnings() == ["frag_size"]
    for pool in (core, model):
        pool.destroy()


def test_ring_refuses_while_consumed_slots_await_invalidation():
    """ptr_ring.h: a 64-entry ring invalidates consumed slots 16 at a time. A refill that
    consumes 10 entries leaves their slots taken, so after 54 more produces the producer meets
    slot 0 again: the 55th put is ring_full with 54 entries in the ring."""
    m = netmem.Machine(memory="32MiB", numa_nodes=1, cpus=2)
    rm = RefMachine.like(m)
    pools = _pair(m, rm, netmem.PagePoolParams(pool_size=64))
    refs = [int(ref) for ref in pools[0].alloc_netmems_bulk(128)]  # two slow bulks, cache empty
    assert refs == pools[1].alloc_netmems_bulk(128)
    for ref in refs[:10]:
        for pool in pools:
            pool.put_netmem(ref)
    assert pools[0].alloc_netmem() == pools[1].alloc_netmem() == refs[9]   # refill of 10
    for ref in refs[10:65]:
        for pool in pools:
            pool.put_netmem(ref)
    for pool in pools:
        assert (pool.stats["recycle_ring"], pool.stats["recycle_ring_full"]) == (64, 1)
        assert (pool.ring_count, pool.alloc_count, pool.release_cnt) == (54, 9, 1)
    for ref in [refs[9], *refs[65:]]:
        for pool in pools:
            pool.put_netmem(ref)
    for pool in pools:
        pool.destroy()
    m.quiesce()
    rm.quiesce()
    assert observe(pools[0]) == observe(pools[1])
