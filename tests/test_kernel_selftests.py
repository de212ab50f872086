"""The kernel's own selftests that need no hardware, ported scenario by scenario.

Each test names the selftest (tools/testing/selftests/...) it ports; where the selftest needs a
knob the model had to grow (a fail_function, an ethtool setting), the test drives the model's
version of it, named as in the kernel.
"""
import errno

import pytest
from devmemutil import setup, stream_of, teardown
from rxutil import Flow, receive

from netmem import NetmemError, flows
from netmem.netlink import qstats_get
from netmem.tcp import MSG_SOCK_DEVMEM, SCM_DEVMEM_DMABUF, SCM_DEVMEM_LINEAR

# ethtool netlink's names for tcp-data-split (ETHTOOL_TCP_DATA_SPLIT_*) and the model's.
HDS = {"unknown": "auto", "disabled": "off", "enabled": "on"}


def rings_get(nic):
    """``ethtool --json -g``: ring-get in the netlink family's names."""
    r = nic.ethtool.get_ringparam()
    return {"rx": r["rx_pending"], "rx-max": r["rx_max_pending"],
            "tcp-data-split": {v: k for k, v in HDS.items()}[r["tcp_data_split"]],
            "hds-thresh": r["hds_thresh"], "hds-thresh-max": r["hds_thresh_max"]}


def rings_set(nic, **attrs):
    """ring-set with the netlink attributes ``tcp-data-split``, ``hds-thresh``, ``rx``."""
    kw = {}
    if "tcp-data-split" in attrs:
        kw["tcp_data_split"] = HDS[attrs["tcp-data-split"]]
    if "hds-thresh" in attrs:
        kw["hds_thresh"] = attrs["hds-thresh"]
    if "rx" in attrs:
        kw["rx_ring_size"] = attrs["rx"]
    nic.ethtool.set_ringparam(**kw)


# ---- tools/testing/selftests/drivers/net/hds.py -------------------------------------------------

def test_hds_py_settings_read_back(make_nic):
    """hds.py get_hds, get_hds_thresh, set_hds_disable, set_hds_enable, set_hds_thresh_zero,
    set_hds_thresh_max, set_hds_thresh_random: ring-get reports tcp-data-split and
    hds-thresh, and what ring-set writes reads back."""
    nic = make_nic()
    rings = rings_get(nic)
    assert "tcp-data-split" in rings and "hds-thresh" in rings
    for mode in ("disabled", "enabled"):
        rings_set(nic, **{"tcp-data-split": mode})
        assert rings_get(nic)["tcp-data-split"] == mode
    rings_set(nic, **{"hds-thresh": 0})
    assert rings_get(nic)["hds-thresh"] == 0
    rings_set(nic, **{"hds-thresh": rings["hds-thresh-max"]})
    rings = rings_get(nic)
    assert rings["hds-thresh"] == rings["hds-thresh-max"]
    for thresh in (1, 100, rings["hds-thresh-max"] - 1):     # set_hds_thresh_random
        rings_set(nic, **{"hds-thresh": thresh})
        assert rings_get(nic)["hds-thresh"] == thresh


def test_hds_py_thresh_above_max_is_einval(make_nic):
    """hds.py set_hds_thresh_gt: hds-thresh-max + 1 is -EINVAL, and nothing changes."""
    nic = make_nic()
    before = rings_get(nic)
    with pytest.raises(NetmemError) as e:
        rings_set(nic, **{"hds-thresh": before["hds-thresh-max"] + 1})
    assert e.value.errno == errno.EINVAL
    assert rings_get(nic) == before


def test_hds_py_xdp_and_ioctl_ring_changes(make_nic):
    """hds.py's XDP and legacy-ioctl checks (the 2025 versions of the file; their names vary
    between versions): with tcp-data-split enabled a single-buffer XDP program is refused
    (dev_xdp_install(): EBUSY) and a multi-buffer one is taken; with it unknown a single-buffer
    one attaches, and then enabling it is EINVAL; a ring-size change (the legacy
    ETHTOOL_SRINGPARAM path) leaves the split mode as it was."""
    nic = make_nic()
    rings_set(nic, **{"tcp-data-split": "enabled"})
    with pytest.raises(NetmemError) as e:
        nic.attach_xdp()
    assert e.value.errno == errno.EBUSY
    nic.attach_xdp(frags=True)
    nic.detach_xdp()
    rings_set(nic, **{"tcp-data-split": "unknown"})
    nic.attach_xdp()
    with pytest.raises(NetmemError) as e:
        rings_set(nic, **{"tcp-data-split": "enabled"})
    assert e.value.errno == errno.EINVAL
    nic.detach_xdp()
    for mode in ("enabled", "disabled", "unknown"):
        rings_set(nic, **{"tcp-data-split": mode})
        rings_set(nic, rx=rings_get(nic)["rx"] // 2)
        assert rings_get(nic)["tcp-data-split"] == mode
        rings_set(nic, rx=rings_get(nic)["rx"] * 2)


# ---- tools/testing/selftests/drivers/net/hw/devmem.py ------------------------------------------

def test_devmem_py_check_rx_hds():
    """devmem.py check_rx_hds: with header split on and hds-thresh 0, payloads of 1 to 8192
    bytes, each on its own connection, always land in net_iovs: ncdevmem -L fails on any
    SCM_DEVMEM_LINEAR cmsg, and none comes. The bytes read through the dma-buf are the ones
    sent."""
    d = setup(size=4 << 20, ring=256)
    assert rings_get(d.nic)["hds-thresh"] == 0
    for i, size in enumerate((1, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192)):
        f = Flow(sport=42000 + i)
        data = bytes((7 * k + i) & 0xff for k in range(size))
        receive(d.nic, [f.syn(), *f.segments(data), f.fin()])
        sk = d.m.tcp.lookup(f.local, f.remote)
        got, kinds = b"", set()
        while True:
            out, anc, _, _ = sk.recvmsg(1 << 16, 40 * 64, MSG_SOCK_DEVMEM)
            if not out and not anc:
                break
            kinds |= {c[1] for c in anc}
            got += stream_of(d.buf, out, anc)
        assert SCM_DEVMEM_LINEAR not in kinds, size
        assert kinds == {SCM_DEVMEM_DMABUF} and got == data, size
        sk.close()
    teardown(d)


# ---- tools/testing/selftests/drivers/net/hw/pp_alloc_fail.py -----------------------------------

def _alloc_fail(m, nic):
    return qstats_get(m, ifindex=nic.ifindex)[0]["rx-alloc-fail"]


def _rx_packets(m, nic):
    return qstats_get(m, ifindex=nic.ifindex)[0]["rx-packets"]


def test_pp_alloc_fail_py(make_nic, m):
    """pp_alloc_fail.py test_pp_alloc: traffic flows; with fail_function injecting into the
    page pool's allocator (interval 511, probability 100, times -1) rx-alloc-fail grows while
    frames keep arriving, also across an ``ethtool -G`` ring resize; with injection off it
    stops. The selftest wants 100 failures in 3 s at line rate; the model's traffic here is
    smaller, and the failure count is exactly one per 511 allocations."""
    nic = make_nic(num_rx_queues=2)
    trace = flows.generate(connections=8, payload=2 << 20, seed=3).trace

    def traffic():
        before = _rx_packets(m, nic)
        nic.receive(trace)
        for sk in m.tcp.sockets():
            sk.read_all()
            sk.close()
        return _rx_packets(m, nic) - before

    assert traffic() == len(trace) and _alloc_fail(m, nic) == 0     # check_traffic_flowing
    ff = m.fail_function
    ff.inject = "page_pool_alloc_netmems"
    ff.verbose, ff.interval, ff.probability, ff.times = 0, 511, 100, -1
    s1 = _alloc_fail(m, nic)
    assert traffic() > 0
    s2 = _alloc_fail(m, nic)
    assert s2 - s1 >= 2 and s2 - s1 == ff.failures
    rx = rings_get(nic)["rx"]
    rings_set(nic, rx=rx * 2 if rx * 2 <= rings_get(nic)["rx-max"] else rx // 2)
    assert traffic() > 0 and _alloc_fail(m, nic) > s2
    ff.inject = ""                                      # _disable_pp_allocation_fail()
    ff.probability, ff.times = 0, 0
    s3 = _alloc_fail(m, nic)
    assert traffic() == len(trace) and _alloc_fail(m, nic) == s3
    rings_set(nic, rx=rx)


def test_fail_function_knobs(m, make_pool):
    """The fail_function files: only page_pool_alloc_netmems takes injection (page_pool_alloc_
    pages, the selftest's older target, lost its ALLOW_ERROR_INJECTION: EINVAL); the
    defaults are FAULT_ATTR_INITIALIZER's (probability 0: nothing fails); times counts down;
    interval picks every n-th call."""
    ff = m.fail_function
    assert (ff.inject, ff.interval, ff.probability, ff.times, ff.verbose) == ("", 1, 0, 1, 2)
    with pytest.raises(NetmemError) as e:
        ff.inject = "page_pool_alloc_pages"
    assert e.value.errno == errno.EINVAL
    with pytest.raises(NetmemError) as e:
        ff.probability = 101
    assert e.value.errno == errno.EINVAL
    pool = make_pool()
    ff.inject = "page_pool_alloc_netmems\n"
    got = [pool.alloc_netmem() for _ in range(3)]       # probability 0
    ff.probability, ff.times = 100, 2
    got += [pool.alloc_netmem() for _ in range(3)]
    assert [bool(r) for r in got] == [True, True, True, False, False, True]
    ff.times, ff.interval = -1, 3
    more = [pool.alloc_netmem() for _ in range(6)]
    assert [bool(r) for r in more] == [True, True, False, True, True, False]
    assert ff.failures == 4
    for r in got + more:
        if r:
            pool.put_netmem(r)


# ---- tools/testing/selftests/net/nl_netdev.py --------------------------------------------------

def test_nl_netdev_py_page_pool_check(make_nic, m):
    """nl_netdev.py page_pool_check, step by step: no pools while down; pools while up; none
    again when down; a page held (netdevsim's pp_hold: a page of queue 0's pool) keeps its
    pool listed while down, inflight 1 with a detach-time; up again gives one attached and one
    detached pool; the page released, the orphan is gone within 2 s (the release retry runs
    once a second); down gives none; then a held page across unregister (the orphaning path:
    the pool moves to the loopback device). Departs: the model driver posts its ring from the
    pool, so an attached pool's inflight is the ring, where netdevsim's is 0."""
    from netmem.netlink import page_pool_get
    nic = make_nic()

    def pools():
        return [p for p in page_pool_get(m) if p.get("ifindex") == nic.ifindex]

    def attached():
        return [p for p in pools() if "detach-time" not in p]

    def detached():
        return [p for p in pools() if "detach-time" in p]

    ring = rings_get(nic)["rx"] // 2                    # 2 KiB frags: two to a page
    nic.dev_close()
    assert pools() == []
    nic.dev_open()
    assert len(attached()) == 1 and attached()[0]["inflight"] == ring
    nic.dev_close()
    assert pools() == []
    nic.dev_open()
    pool = nic.rx_queues[0].page_pool
    held = pool.alloc_netmem()                          # pp_hold=y
    assert attached()[0]["inflight"] > ring             # the slow path's bulk (64) counts
    nic.dev_close()
    assert [(p["inflight"], "detach-time" in p) for p in pools()] == [(1, True)]
    nic.dev_open()
    assert (len(attached()), len(detached())) == (1, 1)
    pool.put_netmem(held)                               # pp_hold=n
    m.advance(2)
    assert (len(attached()), len(detached())) == (1, 0)
    nic.dev_close()
    assert pools() == []
    nic.dev_open()                                      # up, pp_hold=y, then teardown
    pool = nic.rx_queues[0].page_pool
    held = pool.alloc_netmem()
    ifindex = nic.ifindex
    nic.unregister()
    orphan = [p for p in page_pool_get(m) if p["id"] == pool.id]
    assert orphan and "ifindex" not in orphan[0] and orphan[0]["inflight"] == 1
    assert all(p.get("ifindex") != ifindex for p in page_pool_get(m))
    pool.put_netmem(held)
    m.advance(2)
    assert page_pool_get(m) == []


def test_nl_netdev_py_queue_reset_while_down(make_nic, m):
    """nl_netdev.py nsim_rxq_reset_down: a queue reset on a device that is down works (the
    new memory is made and freed) and leaves no pool; the device comes up on the settings
    changed while down, and a down device takes no frames (ENETDOWN)."""
    from netmem.netdev import netdev_rx_queue_restart
    from netmem.netlink import page_pool_get
    nic = make_nic()
    nic.dev_close()
    netdev_rx_queue_restart(nic, 0)
    rings_set(nic, rx=256, **{"tcp-data-split": "enabled"})
    assert page_pool_get(m) == []
    with pytest.raises(NetmemError) as e:
        receive(nic, [Flow().syn()])
    assert e.value.errno == errno.ENETDOWN
    nic.dev_open()
    assert nic.rx_queues[0].posted == (256, 256)
    f = Flow()
    receive(nic, [f.syn(), *f.segments(b"x" * 3000)])
    assert m.tcp.lookup(f.local, f.remote).read_all() == b"x" * 3000
