"""Tracepoints: the kernel's page_pool (include/trace/events/page_pool.h), ``napi:napi_poll``
(napi.h), ``skb:kfree_skb`` (skb.h) and ``net:netif_receive_skb`` (net.h), with the model's own
``netmem:sock_devmem_dontneed`` and ``netmem:netdev_rx_queue_restart`` (the kernel has no
tracepoint there), recorded when enabled; and ``chrome_trace()``, the events as Chrome
trace-event JSON, which the Perfetto UI opens.

``m.trace.enable("page_pool:*")`` turns on a glob of ``system:event`` names; ``m.trace.events``
is the list recorded so far, one dict per event with the kernel's field names plus ``ts_ns``
(virtual time), ``cpu`` and ``queue`` (the RX queue whose NAPI poll it ran in, else None).
Records go to a ring in C of ``TRACE_RING`` records (56 bytes each; ``resize()`` for another
size), allocated when a tracepoint is first enabled; when every tracepoint is off a hit costs
one inline test of the mask. A full ring drops the newest records and counts them
(``dropped``) until ``events`` or ``clear()`` empties it, as perf counts lost records. Inside
``NetDevice.receive()`` the clock stands still, so an event of a NAPI poll is stamped with the
arrival time of the frame it handles (never before the queue's previous event), and
``napi_poll`` carries its poll's start (``start_ns``).

Departs: ``kfree_skb``'s ``skbaddr`` and ``netif_receive_skb``'s are the skb's index in the
model's table, ``napi_poll``'s ``napi`` the NAPI id; ``kfree_skb`` has no ``location`` (no
return address) and no ``rx_sk`` (v6.11).
"""
import fnmatch

from netmem import _core

__all__ = ["TRACE_RING", "Trace", "chrome_trace"]

TRACE_RING = _core.TRACE_RING
_BY_BIT = {bit: name for name, bit in _core.TRACEPOINTS.items()}
#: skb->protocol (host order) of the model's skb.protocol: ETH_P_IP, ETH_P_IPV6, ETH_P_8021Q.
_ETH_P = {4: 0x0800, 6: 0x86DD, 0x81: 0x8100}


def _fields(name, r, devname):
    """The kernel's fields of record ``r`` of tracepoint ``name``."""
    pool, netmem, a, b, c = int(r["pool_id"]), int(r["netmem"]), int(r["a"]), int(r["b"]), \
        int(r["c"])
    short = name.split(":")[1]
    if short == "page_pool_release":
        return {"pool": pool, "inflight": a, "hold": b, "release": c, "cnt": netmem}
    if short == "page_pool_update_nid":
        return {"pool": pool, "pool_nid": a, "new_nid": b}
    if short in ("page_pool_state_hold", "page_pool_state_release"):
        key = "hold" if short == "page_pool_state_hold" else "release"
        return {"pool": pool, "netmem": netmem, key: a, "pfn": b, "is_net_iov": netmem & 1}
    if short == "napi_poll":
        return {"napi": pool, "dev_name": devname(netmem), "work": a, "budget": b,
                "start_ns": c}
    if short == "kfree_skb":
        return {"skbaddr": netmem, "protocol": _ETH_P.get(b, 0),
                "reason": f"SKB_DROP_REASON_{_core.DROP_REASONS[a]}"}
    if short == "netif_receive_skb":
        return {"skbaddr": netmem, "len": a, "name": devname(b)}
    if short == "sock_devmem_dontneed":
        return {"sk": netmem, "tokens": a, "freed": b}
    return {"ifindex": netmem, "name": devname(netmem), "queue_id": a}   # queue restart


class Trace:
    """The machine's trace buffer (a small ftrace)."""

    def __init__(self, machine):
        self._m = machine
        self._mask = 0
        self._events = []
        self._dropped = 0
        self._devnames = {}

    def _name_dev(self, ifindex, name):
        """``register_netdevice()`` tells the names, so events outlive their device's."""
        self._devnames[ifindex] = name

    def _names(self, pattern):
        names = [n for n in _core.TRACEPOINTS if fnmatch.fnmatchcase(n, pattern)]
        if not names:
            raise ValueError(f"trace: no tracepoint matches {pattern!r}")
        return names

    def enable(self, pattern="page_pool:*"):
        for n in self._names(pattern):
            self._mask |= _core.TRACEPOINTS[n]
        self._m._trace_set_mask(self._mask)

    def disable(self, pattern="page_pool:*"):
        for n in self._names(pattern):
            self._mask &= ~_core.TRACEPOINTS[n]
        self._m._trace_set_mask(self._mask)

    @property
    def enabled(self):
        return sorted(n for n, bit in _core.TRACEPOINTS.items() if self._mask & bit)

    def _take(self):
        recs, dropped = self._m._trace_take()
        self._dropped += dropped
        devname = lambda i: self._devnames.get(i, f"if{i}")     # noqa: E731
        for r in recs:
            name = _BY_BIT[int(r["type"])]
            q = int(r["queue"])
            self._events.append({"event": name, "ts_ns": int(r["ts_ns"]), "cpu": int(r["cpu"]),
                                 "queue": q if q >= 0 else None,
                                 **_fields(name, r, devname)})

    @property
    def events(self):
        self._take()
        return self._events

    @property
    def dropped(self):
        """Records a full ring dropped since the last ``clear()``."""
        self._take()
        return self._dropped

    def clear(self):
        self._m._trace_take()
        self._events = []
        self._dropped = 0

    def resize(self, records):
        """A ring of ``records`` records (``TRACE_RING`` unless resized), empty: the events
        recorded and not yet taken are lost (``dropped`` starts again)."""
        self._m._trace_ring(records)
        self.clear()


def chrome_trace(events, dropped=0, queues=None, other=None):
    """``events`` (``Trace.events``) as a Chrome trace-event JSON document (the JSON Object
    Format: ``traceEvents`` and ``otherData``), which the Perfetto UI and chrome://tracing
    open: ``ts`` and ``dur`` in microseconds of virtual time; one process per CPU (``pid``), in
    it one thread per RX queue whose NAPI polls ran there (``tid`` queue + 1, named by the
    device, queue and NAPI id from ``queues``: ``{queue: (dev_name, napi_id)}``) and thread 0
    for everything outside a poll; ``napi_poll`` a complete event (``ph`` X) spanning its poll,
    every other event an instant (``ph`` i) on its thread, its fields in ``args``. ``otherData``
    says the clock, the ring's size and the records ``dropped``, with ``other`` added."""
    out, threads = [], {}
    for ev in events:
        cpu, q = ev["cpu"], ev["queue"]
        tid = 0 if q is None else q + 1
        threads[(cpu, tid)] = q
        system, name = ev["event"].split(":")
        args = {k: v for k, v in ev.items() if k not in ("event", "ts_ns", "cpu", "queue")}
        if name == "napi_poll":
            start = args.pop("start_ns")
            out.append({"name": name, "cat": system, "ph": "X", "ts": start / 1000,
                        "dur": (ev["ts_ns"] - start) / 1000, "pid": cpu, "tid": tid,
                        "args": args})
        else:
            out.append({"name": name, "cat": system, "ph": "i", "s": "t",
                        "ts": ev["ts_ns"] / 1000, "pid": cpu, "tid": tid, "args": args})
    meta = []
    for cpu in sorted({c for c, _ in threads}):
        meta += [{"name": "process_name", "ph": "M", "pid": cpu, "tid": 0,
                  "args": {"name": f"CPU {cpu}"}},
                 {"name": "process_sort_index", "ph": "M", "pid": cpu, "tid": 0,
                  "args": {"sort_index": cpu}}]
    for (cpu, tid), q in sorted(threads.items()):
        if q is None:
            label = "outside NAPI polls"
        else:
            dev, napi_id = (queues or {}).get(q, ("?", "?"))
            label = f"{dev} rx-{q} NAPI {napi_id}"
        meta.append({"name": "thread_name", "ph": "M", "pid": cpu, "tid": tid,
                     "args": {"name": label}})
    return {"traceEvents": meta + out, "displayTimeUnit": "ns",
            "otherData": {"clock": "virtual (the model's), microseconds",
                          "ring-records": TRACE_RING, "dropped-records": dropped,
                          **(other or {})}}
