"""A Hypothesis state machine over page_pool, with the reference model running alongside.

Rules allocate (whole buffers, bulks, frags, sized buffers), put with and without allow_direct,
recycle directly, bulk put, take extra page references and drop them later, provoke double
puts, switch CPU and softirq context and destroy pools, on a two-node machine with up to three
pools of order 0 to 2, small rings, NAPI-owned and per-CPU. After every step the invariants check
the core's own accounting: inflight is hold - release and never negative; every buffer is in
exactly one place (held by the test, in an alloc cache, in a ring, or back in the allocator) and
the pools' caches and the per-descriptor ledger say the same; each pool's internal invariants
hold; free pages plus the pages held add up to the managed pages; and every counter equals the
model's. Teardown gives everything back, destroys the pools and quiesces, leaving nothing for
the leak check.
"""
import contextlib
import functools

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from reference.page_pool_model import RefMachine, observe

import netmem
from netmem._core import STATE_NAMES
from netmem.netdev import Napi

POOL_SPEC = st.tuples(st.sampled_from((0, 0, 1, 2)),                 # order
                      st.sampled_from((4, 8, 16, 64)),               # pool_size (ring)
                      st.sampled_from(("plain", "napi", "percpu")),  # direct-recycling owner
                      st.integers(0, 1),                             # its CPU
                      st.sampled_from((-1, 0, 1)))                   # nid
INDEX = st.integers(0, 2**16)
SIZES = st.sampled_from((64, 1024, 1536, 2048, 4096, 6000))
SETTINGS = settings(derandomize=True, database=None, max_examples=250, stateful_step_count=50,
                    deadline=None, suppress_health_check=[HealthCheck.too_slow])


class PagePoolStateMachine(RuleBasedStateMachine):

    def __init__(self):
        super().__init__()
        self.m = netmem.Machine(memory="32MiB", numa_nodes=2, cpus=2)
        self.rm = RefMachine.like(self.m)
        self.ctx = (0, False)
        self.pools = []         # (core, model)
        self.held = []          # (pool index, ref): one per pp reference the test holds
        self.page_refs = []     # (ref, order): extra page references the test holds
        self.gone = []          # refs whose last pp reference the test gave back

    @initialize(specs=st.lists(POOL_SPEC, min_size=1, max_size=3))
    def create_pools(self, specs):
        for order, pool_size, owner, cpu, nid in specs:
            params = netmem.PagePoolParams(order=order, pool_size=pool_size, nid=nid,
                                           napi=Napi(self.m, cpu) if owner == "napi" else None)
            cpuid = cpu if owner == "percpu" else -1
            self.pools.append((netmem.page_pool_create_percpu(self.m, params, cpuid),
                               self.rm.page_pool_create_percpu(params, cpuid)))

    # -- helpers ------------------------------------------------------------------------------

    @contextlib.contextmanager
    def context(self):
        with self.m.on_cpu(*self.ctx), self.rm.on_cpu(*self.ctx):
            yield

    def both(self, core_call, model_call):
        """Run one op on the model, then on the core, which must warn as often as the model
        did (never, but for a frag larger than the buffer or a direct put after destroy)."""
        with self.context():
            want = model_call()
        kinds = self.rm.take_warnings()
        expect = pytest.warns(netmem.NetmemWarning) if kinds else contextlib.nullcontext([])
        with self.context(), expect as caught:
            got = core_call()
        assert len(caught) == len(kinds), kinds
        return got, want

    def live(self):
        return [i for i, (core, _) in enumerate(self.pools) if not core.destroy_cnt]

    def live_pool(self, k):
        live = self.live()
        i = live[k % len(live)]
        return i, *self.pools[i]

    def take(self, i, refs):
        self.held += [(i, ref) for ref in refs if ref]

    def gave_back(self, ref):
        if all(ref != r for _, r in self.held):
            self.gone.append(ref)

    def returned(self):
        """Refs the test gave back that no one holds now: in a cache, a ring, the allocator,
        or plain pages kept by an extra page reference."""
        held = {ref for _, ref in self.held}
        return [ref for ref in self.gone
                if ref not in held and self.m.netmem(ref).state != "owned"]

    def owned(self, i):
        """The buffers pool ``i`` has handed out: the test's and the pool's own frag page."""
        core = self.pools[i][0]
        refs = {ref for j, ref in self.held if j == i}
        return refs | {core.frag_page} if core.frag_page else refs

    # -- rules --------------------------------------------------------------------------------

    @rule(pool=INDEX, n=st.integers(1, 70))
    def alloc(self, pool, n):
        i, core, model = self.live_pool(pool)
        if n == 1:
            got, want = self.both(core.alloc_netmem, model.alloc_netmem)
            got, want = [got], [want]
        else:
            got, want = self.both(lambda: [int(ref) for ref in core.alloc_netmems_bulk(n)],
                                  lambda: model.alloc_netmems_bulk(n))
        assert got == want
        self.take(i, want)

    @rule(pool=INDEX, size=SIZES, sized=st.booleans())
    def alloc_frag(self, pool, size, sized):
        i, core, model = self.live_pool(pool)
        if sized:
            got, want = self.both(lambda: core.alloc(size), lambda: model.alloc(size))
        else:
            got, want = self.both(lambda: core.alloc_frag(size), lambda: model.alloc_frag(size))
        assert got == want
        self.take(i, want[:1])

    @precondition(lambda self: self.held)
    @rule(k=INDEX, direct=st.booleans())
    def put(self, k, direct):
        i, ref = self.held.pop(k % len(self.held))
        core, model = self.pools[i]
        self.both(lambda: core.put_netmem(ref, allow_direct=direct),
                  lambda: model.put_netmem(ref, direct))
        self.gave_back(ref)

    @precondition(lambda self: self.held)
    @rule(k=INDEX)
    def recycle_direct(self, k):
        i, ref = self.held.pop(k % len(self.held))
        core, model = self.pools[i]
        self.both(lambda: core.recycle_direct(ref), lambda: model.recycle_direct(ref))
        self.gave_back(ref)

    @precondition(lambda self: self.held)
    @rule(ks=st.lists(INDEX, min_size=1, max_size=40))
    def bulk_put(self, ks):
        positions = sorted({k % len(self.held) for k in ks}, reverse=True)
        refs = [self.held.pop(p)[1] for p in positions]
        self.both(lambda: netmem.page_pool_put_netmem_bulk(self.m, refs),
                  lambda: self.rm.page_pool_put_netmem_bulk(refs))
        for ref in refs:
            self.gave_back(ref)

    @precondition(lambda self: self.held)
    @rule(k=INDEX)
    def get_page(self, k):
        i, ref = self.held[k % len(self.held)]
        self.m.get_page(ref)
        self.rm.get_page(ref)
        self.page_refs.append((ref, self.pools[i][1].order))

    @precondition(lambda self: self.page_refs)
    @rule(k=INDEX)
    def put_page(self, k):
        ref, _ = self.page_refs.pop(k % len(self.page_refs))
        self.m.put_page(ref)
        self.rm.put_page(ref)

    @precondition(lambda self: self.returned())
    @rule(k=INDEX)
    def double_put(self, k):
        returned = self.returned()
        ref = returned[k % len(returned)]
        owner = self.m.netmem(ref).pp
        core, model = next(((c, mo) for c, mo in self.pools if c is owner), self.pools[0])
        with pytest.warns(netmem.NetmemWarning, match="double put|not a page_pool buffer"):
            core.put_netmem(ref)
        assert not model.put_netmem(ref)
        assert self.rm.take_warnings() == ["double_put" if owner else "not_pp"]

    @rule(cpu=st.integers(0, 1), softirq=st.booleans())
    def switch_context(self, cpu, softirq):
        self.ctx = (cpu, softirq)

    @precondition(lambda self: len(self.live()) > 1)
    @rule(pool=INDEX)
    def destroy(self, pool):
        """Destroy a pool, usually with buffers out; the last one waits for teardown."""
        _, core, model = self.live_pool(pool)
        self.both(core.destroy, model.destroy)

    # -- invariants ---------------------------------------------------------------------------

    @invariant()
    def inflight_is_hold_minus_release(self):
        for core, _ in self.pools:
            assert core.inflight == core.hold_cnt - core.release_cnt >= 0

    @invariant()
    def pool_ledgers_hold(self):
        for core, _ in self.pools:
            core._check_invariants()

    @invariant()
    def every_buffer_is_in_one_place(self):
        for i, ref in self.held:
            view = self.m.netmem(ref)
            assert (view.state, view.pp) == ("owned", self.pools[i][0])
        owned = set().union(*(self.owned(i) for i in range(len(self.pools))))
        cached = [ref for core, _ in self.pools for ref in core._cache_contents()]
        assert len(set(cached)) == len(cached)
        assert not owned & set(cached)
        assert {self.m.netmem(ref).state for ref in cached} <= {"cache"}
        pages, _ = self.m._ledger()
        assert {name: pages[state] for state, name in STATE_NAMES.items() if name != "none"} == {
            "owned": len(owned), "cache": len(cached),
            "ring": sum(core.ring_count for core, _ in self.pools), "putting": 0}

    @invariant()
    def pages_add_up(self):
        held = sum((len(self.owned(i)) + core.alloc_count + core.ring_count) << model.order
                   for i, (core, model) in enumerate(self.pools))
        plain = {(ref, order) for ref, order in self.page_refs if self.m.netmem(ref).pp is None}
        held += sum(1 << order for _, order in plain)
        assert self.m.nr_free_pages() + held == self.m.managed_pages()

    @invariant()
    def agrees_with_the_model(self):
        for core, model in self.pools:
            assert observe(core) == observe(model)
            assert core._cache_contents() == model.cache
        assert self.m.nr_free_pages() == self.rm.nr_free_pages()

    def teardown(self):
        while self.held:
            i, ref = self.held.pop()
            core, model = self.pools[i]
            self.both(functools.partial(core.put_netmem, ref),
                      functools.partial(model.put_netmem, ref))
        for ref, _ in self.page_refs:
            self.m.put_page(ref)
            self.rm.put_page(ref)
        for core, model in self.pools:
            if not core.destroy_cnt:
                self.both(core.destroy, model.destroy)
        self.m.quiesce()
        self.rm.quiesce()
        self.agrees_with_the_model()
        assert all(core.freed and model.freed for core, model in self.pools)
        assert self.m.nr_free_pages() == self.m.managed_pages()


def test_page_pool_state_machine():
    run_state_machine_as_test(PagePoolStateMachine, settings=SETTINGS)
