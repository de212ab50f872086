"""The netdev netlink family, as dicts.

Models Documentation/netlink/specs/netdev.yaml with net/core/page_pool_user.c and
net/core/netdev-genl.c: ``page_pool_get`` (``page-pool-get``), ``page_pool_stats_get``
(``page-pool-stats-get``), ``queue_get`` (``queue-get``) and ``qstats_get`` (``qstats-get``).
Attribute names are the family's; like the kernel, only pools with a netdev are listed.
``NetlinkSocket`` carries ``bind-rx`` and ``bind-tx`` (devmem TCP): its bindings live as long
as it does.
Departs: ``detach-time`` is shown whenever a pool is detached, also at virtual second 0 (the
kernel omits a 0, which its boot clock never reads).
"""
from netmem import _core
from netmem.provider import mp_nl_fill

__all__ = ["LOOPBACK_IFINDEX", "NetlinkSocket", "page_pool_get", "page_pool_stats_get",
           "qstats_get", "queue_get"]

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
        rsp.update(mp_nl_fill(pool.provider, None))
    return rsp


def page_pool_get(machine, id=None):
    """``page-pool-get``: a dump (list of dicts), or one pool's dict with ``id``."""
    return _dump_or_one([_nl_fill(p) for p in _visible(machine)], id, 2,
                        f"page-pool-get: no page pool {id} visible")


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


def _queue_fill(nic, q):
    """Models ``netdev_nl_queue_fill_one()`` for an RX queue."""
    rsp = {"id": q.idx, "type": "rx", "ifindex": nic.ifindex, "napi-id": q.napi.napi_id}
    if q.mp is not None:
        rsp.update(mp_nl_fill(q.mp, q))
    if q.af_xdp:
        rsp["xsk"] = {}
    return rsp


def queue_get(machine, ifindex=None, id=None):
    """``queue-get``: a dump of the RX queues of every device (or of ``ifindex``), or one
    queue's dict with ``ifindex`` and ``id``. Only queues below real_num_rx_queues exist."""
    out = []
    for idx, nic in sorted(machine.netdevs.items()):
        if ifindex is not None and idx != ifindex:
            continue
        out += [_queue_fill(nic, q) for q in nic.rx_queues[:nic.real_num_rx_queues]]
    return _dump_or_one(out, id, 22, f"queue-get: no rx queue {id} on ifindex {ifindex}")


def _dump_or_one(objs, id, err, msg):
    """A get's answer: the dump without ``id``, else the object with that id (``err`` and
    ``msg`` when there is none)."""
    if id is None:
        return objs
    for o in objs:
        if o["id"] == id:
            return o
    raise _core.NetmemError(err, msg)


QSTATS = (("rx-packets", "packets"), ("rx-bytes", "bytes"), ("rx-alloc-fail", "alloc_fail"),
          ("rx-hw-drops", "hw_drops"), ("rx-hw-drop-overruns", "hw_drop_overruns"))


def qstats_get(machine, ifindex=None, scope="device"):
    """``qstats-get``: per device (``scope="device"``: the sum over every queue it has had,
    as the kernel adds the base stats of disabled queues) or per live queue
    (``scope="queue"``, with queue-type and queue-id), the counters the model keeps."""
    if scope not in ("device", "queue"):
        raise _core.NetmemError(22, f"qstats-get: scope {scope!r} is not device or queue")
    out = []
    for idx, nic in sorted(machine.netdevs.items()):
        if ifindex is not None and idx != ifindex:
            continue
        rows = []
        for q in nic.rx_queues:
            if scope == "queue" and q.idx >= nic.real_num_rx_queues:
                continue
            s = q.stats()
            row = {"ifindex": idx, "queue-type": "rx", "queue-id": q.idx}
            row.update({name: s[key] for name, key in QSTATS})
            rows.append(row)
        if scope == "queue":
            out += rows
        else:
            out.append({"ifindex": idx, **{name: sum(r[name] for r in rows)
                                           for name, _ in QSTATS}})
    return out


class NetlinkSocket:
    """A generic netlink socket of the netdev family (``struct netdev_nl_sock``): the
    bindings made through it, unbound when it closes (``netdev_nl_sock_priv_destroy()``)."""

    def __init__(self, machine):
        self.machine = machine
        self.bindings = []
        self.closed = False

    def __repr__(self):
        return f"<NetlinkSocket netdev bindings {[b.id for b in self.bindings]}>"

    def bind_rx(self, ifindex, fd, queues, rx_buf_size=None):
        """``bind-rx``: bind the dma-buf ``fd`` to ``queues`` (``[{"id": q, "type": "rx"}]``)
        of device ``ifindex``, with net_iovs of ``rx_buf_size`` bytes (``rx-buf-size``,
        likely 7.3; None: the attribute absent, PAGE_SIZE); returns the binding id. Errors as
        ``netmem.providers.dmabuf.netdev_nl_bind_rx``."""
        from netmem.providers.dmabuf import netdev_nl_bind_rx
        if self.closed:
            raise _core.NetmemError(9, "bind-rx: the netlink socket is closed")
        return netdev_nl_bind_rx(self, ifindex, fd, queues, rx_buf_size)

    def bind_tx(self, ifindex, fd):
        """``bind-tx``: bind the dma-buf ``fd`` for transmit on device ``ifindex``; returns the
        binding id. Errors as ``netmem.devmem_tx.netdev_nl_bind_tx``."""
        from netmem.devmem_tx import netdev_nl_bind_tx
        if self.closed:
            raise _core.NetmemError(9, "bind-tx: the netlink socket is closed")
        return netdev_nl_bind_tx(self, ifindex, fd)

    def close(self):
        """Unbind every binding made through this socket."""
        from netmem.providers.dmabuf import net_devmem_unbind_dmabuf
        if self.closed:
            return
        self.closed = True
        while self.bindings:
            net_devmem_unbind_dmabuf(self.bindings.pop())

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
