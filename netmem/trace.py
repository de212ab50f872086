"""Tracepoints: the page_pool events of include/trace/events/page_pool.h, recorded when enabled.

``m.trace.enable("page_pool:*")`` turns on a glob of ``system:event`` names; ``m.trace.events``
is the list recorded so far, one dict per event with the kernel's field names plus ``ts_ns`` (the
virtual clock).
"""
import fnmatch

from netmem import _core

__all__ = ["Trace"]

_SYSTEM = "page_pool"


def _decode(rec):
    ts, kind, pool, netmem, a, b, c = rec
    name = next(n for n, bit in _core.TRACEPOINTS.items() if bit == kind)
    ev = {"event": f"{_SYSTEM}:{name}", "ts_ns": ts, "pool": pool}
    if name == "page_pool_release":
        ev.update(inflight=a, hold=b, release=c, cnt=netmem)
    elif name == "page_pool_update_nid":
        ev.update(pool_nid=a, new_nid=b)
    else:
        key = "hold" if name == "page_pool_state_hold" else "release"
        ev.update({"netmem": netmem, key: a, "pfn": b, "is_net_iov": netmem & 1})
    return ev


class Trace:
    """The machine's trace buffer (a small ftrace)."""

    def __init__(self, machine):
        self._m = machine
        self._mask = 0
        self._events = []

    def _names(self, pattern):
        names = [n for n in _core.TRACEPOINTS if fnmatch.fnmatchcase(f"{_SYSTEM}:{n}", pattern)]
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
        return sorted(f"{_SYSTEM}:{n}" for n, bit in _core.TRACEPOINTS.items() if self._mask & bit)

    @property
    def events(self):
        self._events.extend(_decode(r) for r in self._m._trace_take())
        return self._events

    def clear(self):
        self._m._trace_take()
        self._events = []
