"""The page_pool demo that ``make replay`` runs until ``netmem-replay`` lands.

A driver-shaped workload over real page pools: each RX queue's NAPI instance (on its own CPU,
softirq context) refills 64 buffers per poll from its pool, half of every batch is dropped at once
(XDP_DROP: ``recycle_direct`` into the alloc cache) and the rest is handed to an application on
the other CPU, which returns it later in bulk (``page_pool_put_netmem_bulk``: not NAPI-local, so
through the ptr_ring). Some buffers are split into frags. It prints the work done, the time per
buffer and every pool's counters, then destroys the pools and checks that nothing is lost.
"""
import argparse
import sys
import time

import numpy as np

import netmem
from netmem.netdev import Napi

BUDGET = 64  # NAPI budget: buffers per poll


def _make_pools(m, queues):
    pools = []
    for q in range(queues):
        napi = Napi(m, cpu=q % m.cpus)
        params = netmem.PagePoolParams(pool_size=1024, napi=napi)
        pools.append(netmem.page_pool_create(m, params))
    return pools


def _poll(m, pool, out, held):
    """One NAPI poll: refill a batch, drop half of it, keep the rest for the application."""
    with m.on_cpu(pool.napi.list_owner, softirq=True):
        refs = pool.alloc_netmems_bulk(BUDGET, out)
        for ref in refs[: len(refs) // 2]:
            pool.recycle_direct(int(ref))
        for _ in range(2):  # two small frags per poll, as a header split driver would
            ref, _off = pool.alloc_frag(256)
            if ref:
                held.append(ref)
    held.extend(int(r) for r in refs[len(refs) // 2:])


def _app_return(m, pools, held):
    """The application (not on a NAPI CPU) returns what it holds, in bulk."""
    with m.on_cpu(m.cpus - 1, softirq=False):
        netmem.page_pool_put_netmem_bulk(m, np.array(held, dtype=np.uint64))
    held.clear()


def run(polls, queues, memory):
    m = netmem.Machine(memory=memory, cpus=max(2, queues))
    pools = _make_pools(m, queues)
    out = np.empty(BUDGET, dtype=np.uint64)
    held = []
    t0 = time.perf_counter_ns()
    for i in range(polls):
        _poll(m, pools[i % queues], out, held)
        if len(held) >= 4 * BUDGET:
            _app_return(m, pools, held)
    _app_return(m, pools, held)
    elapsed = time.perf_counter_ns() - t0
    stats = [(p.id, p.stats, p.inflight) for p in pools]
    for p in pools:
        p.destroy()
    m.quiesce()
    return m, stats, elapsed


def main(argv=None):
    ap = argparse.ArgumentParser(prog="netmem-demo", description=__doc__.split("\n\n")[0])
    ap.add_argument("--polls", type=int, default=50_000)
    ap.add_argument("--queues", type=int, default=2)
    ap.add_argument("--memory", default="256MiB")
    args = ap.parse_args(argv)
    m, stats, elapsed = run(args.polls, args.queues, args.memory)
    buffers = args.polls * BUDGET
    print(f"page_pool demo: {args.queues} RX queues, {args.polls} NAPI polls of {BUDGET} "
          f"buffers, {buffers} buffers in {elapsed / 1e6:.1f} ms "
          f"({elapsed / buffers:.1f} ns per buffer, Python driver loop included)")
    keys = list(stats[0][1])
    print(f"{'counter':<26}" + "".join(f"{'pool ' + str(pid):>14}" for pid, _, _ in stats))
    for k in keys:
        print(f"{k:<26}" + "".join(f"{s[k]:>14}" for _, s, _ in stats))
    print(f"{'inflight before destroy':<26}" + "".join(f"{inf:>14}" for _, _, inf in stats))
    leaks = m.leak_report()
    print("after destroy: " + ("; ".join(leaks) if leaks else
                               f"all {m.managed_pages()} pages back in the buddy allocator"))
    return 1 if leaks else 0


if __name__ == "__main__":
    sys.exit(main())
