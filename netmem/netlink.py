"""The netdev netlink family, as dicts.

Models the page-pool part of Documentation/netlink/specs/netdev.yaml and net/core/page_pool_user.c:
``page_pool_get`` (``page-pool-get`` dump) and ``page_pool_stats_get`` (``page-pool-stats-get``
dump). Attribute names are the family's; like the kernel, only pools with a netdev are listed.
Departs: ``detach-time`` is shown whenever a pool is detached, also at virtual second 0 (the
kernel omits a 0, which its boot clock never reads).
"""
from netmem import _core

__all__ = ["LOOPBACK_IFINDEX", "page_pool_get", "page_pool_stats_get"]

LOOPBACK_IFINDEX = 1


def _visible(machine):
    return [p for p in machine.page_pools if p.netdev is not None]


def _ifindex(pool):
    return getattr(pool.netdev, "ifindex", 0)


def _nl_fill(pool):
    """Models ``page_pool_nl_fill()``."""
    rsp = {"id": pool.id}
    if _ifindex(pool) != LOOPBACK_IFINDEX:
        rsp["ifindex"] = _ifindex(pool)
    napi_id = pool.napi.napi_id if pool.napi is not None else 0
    if napi_id >= _core.MIN_NAPI_ID_:
        rsp["napi-id"] = napi_id
    inflight = pool.inflight
    rsp["inflight"] = inflight
    rsp["inflight-mem"] = inflight * (_core.PAGE_SIZE_ << pool.order)
    if pool.detach_time is not None:
        rsp["detach-time"] = pool.detach_time
    if pool.provider is not None:
        rsp.update(pool.provider.nl_fill(None))
    return rsp


def page_pool_get(machine, id=None):
    """``page-pool-get``: a dump (list of dicts), or one pool's dict with ``id``."""
    pools = [_nl_fill(p) for p in _visible(machine)]
    if id is None:
        return pools
    for p in pools:
        if p["id"] == id:
            return p
    raise _core.NetmemError(2, f"page-pool-get: no page pool {id} visible")


def page_pool_stats_get(machine):
    """``page-pool-stats-get``: per pool, ``info`` (id, ifindex) and the eleven counters."""
    out = []
    for p in _visible(machine):
        info = {"id": p.id}
        if _ifindex(p) != LOOPBACK_IFINDEX:
            info["ifindex"] = _ifindex(p)
        rsp = {"info": info}
        rsp.update({k.replace("_", "-"): v for k, v in p.stats.items()})
        out.append(rsp)
    return out
