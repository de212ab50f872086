"""The closed loop (pyx/closed_loop.pxi, netmem.closed_loop): senders in C over a lossy
two-way link into the NIC, the receive path and the application: every transfer completes,
every byte checked against the pattern, deterministic under a seed; over a small dma-buf the
provider's exhaustion costs retransmits and goodput, and holding tokens longer costs more.
"""
import numpy as np
import pytest
from devmemutil import MiB, setup, teardown

from netmem import NetmemError
from netmem.closed_loop import ClosedLoop
from netmem.machine import Machine
from netmem.netdev import NetDevice
from netmem.tcp import KERNEL_TCP_RMEM, Receiver


def host_run(seed=3, loss=0.01, connections=4, payload=256 << 10, cc="cubic"):
    m = Machine(memory=1 << 30, cpus=1, seed=1)
    nic = NetDevice(m, "eth1", num_rx_queues=1)
    rx = Receiver(m, validate=7)
    cl = ClosedLoop(m, nic, rx, connections=connections, payload=payload, loss=loss,
                    seed=seed, cc=cc)
    assert cl.run()
    cols = rx.close_all()
    nic.unregister()
    m.quiesce()
    assert m.leak_report() == []
    return cl, cols


def check_complete(cl, cols, payload):
    assert len(cols["pos"]) == cl.connections
    assert (cols["pos"] == payload).all() and cols["eof"].all() and (cols["bad"] == -1).all()
    assert (cl.senders()["state"] == 3).all()            # every FIN acknowledged


@pytest.mark.parametrize("cc", ["reno", "cubic"])
def test_lossy_link_every_transfer_completes_and_validates(cc):
    cl, cols = host_run(cc=cc)
    check_complete(cl, cols, 256 << 10)
    mib = cl.mib
    assert cl.links["forward"]["dropped_loss"] > 0 and cl.links["reverse"]["dropped_loss"] > 0
    assert mib["RetransSegs"] >= cl.links["forward"]["dropped_loss"] - mib["TCPSynRetrans"]
    assert mib["TCPFastRetrans"] > 0 and mib["TCPSackRecovery"] > 0
    f = cl.frames
    assert f["received"] == cl.links["forward"]["delivered"]
    assert f["acks-received"] == cl.links["reverse"]["delivered"] - cl.connections
    assert cl.goodput > 0


def test_same_seed_same_run_other_seed_other_run():
    a, _ = host_run(seed=5)
    b, _ = host_run(seed=5)
    c, _ = host_run(seed=6)
    assert a.mib == b.mib and a.elapsed == b.elapsed and a.links == b.links
    assert a.links != c.links


def devmem_loop(size, hold, connections=16, payload=4 * MiB, seed=1, limit=120):
    """The loop of ``devmem_run()``, not yet run: the kernel's tcp_rmem, as
    ``netmem-replay --closed-loop`` sets it."""
    d = setup(ring=256, size=size, m=Machine(memory="1GiB", cpus=2))
    d.m.tcp.rmem = KERNEL_TCP_RMEM
    rx = Receiver(d.m, dmabuf=d.buf, dmabuf_id=d.id, validate=7)
    return ClosedLoop(d.m, d.nic, rx, connections=connections, payload=payload, seed=seed,
                      hold=hold, limit=limit), d, rx


def devmem_run(size, hold=0.001, connections=16, payload=4 * MiB, seed=1):
    """``connections`` x ``payload`` into a dma-buf of ``size`` (4 KiB net_iovs, a ring of
    256), the application holding its tokens ``hold`` seconds: the run, its streams, and the
    NIC's overrun drops (the pool could not refill the ring)."""
    cl, d, rx = devmem_loop(size, hold, connections, payload, seed)
    assert cl.run()
    cols = rx.close_all()
    overruns = d.nic._rxq_stats(0)["hw_drop_overruns"]
    assert rx.counters["tokens-returned"] == rx.counters["dmabuf-frags"] > 0
    teardown(d)                     # asserts nothing is left: inflight 0, no leak
    return cl, cols, overruns


def test_issue18_part4_goodput_grows_with_the_dmabuf_and_falls_with_held_tokens():
    """Issue 18 part 4 (fixed seed): 16 connections of 4 MiB over a dma-buf of 1, 4 and
    64 MiB, the application holding tokens 1 ms: every transfer completes and validates,
    nothing is in flight after teardown, the small ones drop at the NIC and retransmit, and
    goodput grows with the dma-buf; holding tokens 4 ms instead costs goodput."""
    runs = {size: devmem_run(size * MiB) for size in (1, 4, 64)}
    for size, (cl, cols, overruns) in runs.items():
        check_complete(cl, cols, 4 * MiB)
        if size < 64:
            assert overruns > 0 and cl.mib["RetransSegs"] > 0
    g = {size: run[0].goodput for size, run in runs.items()}
    assert g[1] < g[4] < g[64]
    longer, cols, _ = devmem_run(4 * MiB, hold=0.004)
    check_complete(longer, cols, 4 * MiB)
    assert longer.goodput < g[4]


def test_bad_arguments_are_refused():
    m = Machine(memory=1 << 30, cpus=1)
    nic = NetDevice(m, "eth1", num_rx_queues=1)
    rx = Receiver(m, validate=7)
    with pytest.raises(NetmemError, match="cc="):
        ClosedLoop(m, nic, rx, connections=1, payload=1, cc="bbr")
    with pytest.raises(NetmemError, match="connections="):
        ClosedLoop(m, nic, rx, connections=0, payload=1)
    with pytest.raises(NetmemError, match="loss"):
        ClosedLoop(m, nic, rx, connections=1, payload=1, loss=1.0)
    nic.unregister()
    np.testing.assert_equal(m.leak_report(), [])


def test_ofo_queues_holding_the_whole_binding_stall_as_the_kernel_does():
    """Tokens returned at once over a 1 MiB binding: a few sockets' out-of-order queues come
    to hold every net_iov, the NIC has no buffer for the holes they wait for, and nothing in
    the kernel prunes an out-of-order queue because a page_pool is empty
    (``tcp_prune_ofo_queue()`` runs only when a segment arrives over sk_rcvbuf): the senders
    back off and the run ends incomplete, every buffer still accounted for."""
    cl, d, rx = devmem_loop(1 * MiB, 0.0, limit=30)
    assert not cl.run()
    payload_pool = max(d.m.page_pools, key=lambda p: p.inflight)
    assert payload_pool.inflight == 256                  # the binding, all of it out
    ofo = sum(sk.info()["ofo_skbs"] for sk in d.m.tcp.sockets())
    assert ofo > 0 and d.nic._rxq_stats(0)["hw_drop_overruns"] > 0
    assert cl.mib["TCPTimeouts"] > cl.connections       # backed-off RTOs, nothing recovers
    rx.close_all()
    teardown(d)                     # closing the sockets gives every net_iov back
