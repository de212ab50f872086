"""What the report reads from a run's machine, outside the clocks: ``_snapshot()`` of every
counter (page-pool-stats-get, qstats, device stats, TCP MIB, skb drop reasons, IOMMU, the
receiver's counters, resets) and of the pools' gauges (``GAUGES``), differences and sums of
snapshots (the timed loops' own counts), the recycle split, and the machine's layout. A new
counter is read in ``_snapshot()`` here and put into the document by ``report._document()``.
"""
import functools

from netmem import netlink

#: The receiver's counters the report shows (``devmem``, and ``bytes`` for the validation).
_RECEIVER_COUNTERS = ("recvmsg-calls", "dmabuf-frags", "linear-frags", "tokens-returned",
                      "dontneed-calls", "zcrx-cqes", "refill-entries")
#: What the report shows that is state at the end of the last counted timed loop, not a count.
GAUGES = ("queues[].page-pool.inflight", "queues[].page-pool.inflight-mem",
          "queues[].header-page-pool.inflight", "queues[].header-page-pool.inflight-mem")


def _snapshot(rig, app):
    """What the report counts, as it stands: ``(counters, pools)``. ``counters`` nests dicts
    of ints, each a count since the machine started, so two snapshots subtract into what
    happened between them (``_delta``); ``pools`` is page-pool-get of each pool of the NIC:
    identity and the gauges ``inflight``, ``inflight-mem``."""
    m, nic = rig.machine, rig.nic
    pools = [p for q in nic.rx_queues[:nic.real_num_rx_queues]
             for p in (q.page_pool, q.header_pool) if p is not None]
    rx = app.rx.counters
    counters = {
        "page-pool": {p.id: p.stats for p in pools},
        "qstats": {r["queue-id"]: {k: r[k] for k, _ in netlink.QSTATS}
                   for r in netlink.qstats_get(m, nic.ifindex, scope="queue")},
        "qstats-device": {k: v for k, v in netlink.qstats_get(m, nic.ifindex)[0].items()
                          if k != "ifindex"},
        "device": nic.stats(),
        "skb-drop-reasons": m.tcp.drop_reasons,
        "tcp-mib": m.tcp.mib,
        "iommu": m.iommu.stats,
        "iommu-faults": len(m.iommu.faults),
        "receiver": {k: rx[k] for k in ("bytes", *_RECEIVER_COUNTERS)},
        "resets": app.resets(),
    }
    ids = {p.id for p in pools}
    return counters, {p["id"]: p for p in netlink.page_pool_get(m) if p["id"] in ids}


def _counted(runs):
    """The timed loops' counters: each run's after its last completed timed loop minus those
    when its first started, summed over the runs that completed one or more."""
    return functools.reduce(_combine, (_delta(r.end, r.start) for r in runs if r.loop_seconds))


def _delta(now, then):
    """``now - then`` over nested dicts of counters (a key ``then`` lacks counts 0)."""
    return _combine(now, then, -1)


def _combine(a, b, sign=1):
    """``a + sign * b`` over nested dicts of counters, over the keys of both."""
    if isinstance(a, dict) or isinstance(b, dict):
        a, b = a or {}, b or {}
        return {k: _combine(a.get(k), b.get(k), sign) for k in {**a, **b}}
    return (a or 0) + sign * (b or 0)


def _layout(rig):
    """What the report says of the machine: the NIC's ifindex, the bound queues, header split,
    the chunk; each queue's id, NAPI id, whether it is bound, and its pools' ids by role."""
    nic = rig.nic
    queues = [{"id": q.idx, "napi-id": q.napi.napi_id, "bound": q.idx in rig.queues,
               "pools": {role: pool.id for role, pool in (("page-pool", q.page_pool),
                                                          ("header-page-pool", q.header_pool))
                         if pool is not None}}
              for q in nic.rx_queues[:nic.real_num_rx_queues]]
    return {"ifindex": nic.ifindex, "bind": rig.queues, "header-split": rig.header_split,
            "chunk": rig.chunk, "binds": rig.binds, "memory": rig.binding.size or None,
            "queues": queues}


def _recycle_split(stats):
    """(cache, ring, released) of page_pool's recycle counters: ``recycle_cached``,
    ``recycle_ring``, and what left the pool (``recycle_ring_full`` + ``recycle_released_refcnt``;
    a ``recycle_cache_full`` buffer went on to the ring and counts there)."""
    return (stats["recycle_cached"], stats["recycle_ring"],
            stats["recycle_ring_full"] + stats["recycle_released_refcnt"])
