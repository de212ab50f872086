"""The replay's application in C (``netmem.tcp.Receiver`` over ``CoreReceiver``,
pyx/receiver.pxi) and the ready list it reads (``ep_poll_callback()`` from ``tcp_data_queue()``
and ``tcp_reset()``): what it reads, checks, keeps and gives back, against the socket API's own
view of the same sockets, and the checks of its arguments.
"""
import errno

import numpy as np
import pytest
from devmemutil import MiB, setup, teardown
from rxutil import MSS, Flow, payload, receive

from netmem import NetmemError
from netmem.flows import ncdevmem_pattern
from netmem.tcp import MSG_SOCK_DEVMEM, SO_DEVMEM_DONTNEED, SOL_SOCKET, Receiver

BUF = 1 << 16


def devmem_receiver(d, keep=False):
    return Receiver(d.m, dmabuf=d.buf, dmabuf_id=d.id, bufsize=BUF, keep=keep)


def kept_by_slot(rx):
    data, slots, lengths = rx.kept()
    out, at = {}, 0
    for s, n in zip(slots.tolist(), lengths.tolist(), strict=True):
        out[s] = out.get(s, b"") + data[at:at + n].tobytes()
        at += n
    return out


def test_devmem_drain_reads_every_frag_and_gives_every_token_back():
    d = setup(ring=64)
    a, b = Flow(sport=40000), Flow(sport=40001)
    da, db = payload(7 * MSS + 100, seed=1), payload(3 * MSS, seed=2)
    receive(d.nic, [a.syn(), b.syn(), *a.segments(da), *b.segments(db), a.fin()])
    rx = devmem_receiver(d, keep=True)
    assert rx.drain() == 2
    slots = {sk.remote[1]: sk._slot for sk in d.m.tcp.sockets()}
    kept = kept_by_slot(rx)
    assert kept[slots[40000]] == da and kept[slots[40001]] == db
    c = rx.counters
    assert c["dmabuf-frags"] == c["tokens-returned"] == 8 + 3
    assert c["bytes"] == len(da) + len(db)
    assert c["dontneed-short"] == c["foreign-frags"] == c["read-faults"] == 0
    assert all(sk.info()["devmem_tokens"] == 0 for sk in d.m.tcp.sockets())
    assert rx.drain() == 0                              # nothing woke since
    cols = rx.close_all()
    by_port = dict(zip(cols["rport"].tolist(), range(len(cols["rport"])), strict=True))
    assert cols["pos"][by_port[40000]] == len(da) and cols["eof"][by_port[40000]]
    assert cols["pos"][by_port[40001]] == len(db) and not cols["eof"][by_port[40001]]
    assert (cols["bad"] == -1).all() and d.m.tcp.sockets() == []
    teardown(d)


def test_dontneed_batches_merge_runs_and_stay_within_the_kernels_limits():
    """Tokens 1 and 3 held by the test: the receiver's tokens are 2, 4, 5, ... (two runs), and
    1030 frags of one socket take two SO_DEVMEM_DONTNEED calls (MAX_DONTNEED_FRAGS 1024)."""
    d = setup(ring=2048, size=16 * MiB)
    f = Flow()
    receive(d.nic, [f.syn(), *f.segments(payload(3 * 100), mss=100)])
    (sk,) = d.m.tcp.sockets()
    _, anc, _, _ = sk.recvmsg(1 << 20, 4000, MSG_SOCK_DEVMEM)
    assert [c.frag_token for _, _, c in anc] == [1, 2, 3]
    assert sk.setsockopt(SOL_SOCKET, SO_DEVMEM_DONTNEED, [(2, 1)]) == 1
    receive(d.nic, f.segments(payload(1030 * 100, seed=3), mss=100))
    rx = devmem_receiver(d)
    rx.drain()
    c = rx.counters
    # A frag cut by the end of one recvmsg() is described again by the next (a second token).
    assert c["dmabuf-frags"] == c["tokens-returned"] >= 1030
    assert c["dontneed-calls"] == 2 and c["dontneed-short"] == 0
    assert sk.info()["devmem_tokens"] == 2
    rx.close_all()
    teardown(d)


def test_the_pattern_check_names_the_first_bad_byte(make_nic):
    nic = make_nic()
    period = 7
    data = bytearray(ncdevmem_pattern(period, 5 * MSS).tobytes())
    data[3000] ^= 0xff
    f = Flow()
    receive(nic, [f.syn(), *f.segments(bytes(data)), f.fin()])
    rx = Receiver(nic.machine, bufsize=BUF, validate=period)
    rx.drain()
    cols = rx.close_all()
    assert cols["bad"].tolist() == [3000] and cols["pos"].tolist() == [5 * MSS]
    assert cols["eof"].tolist() == [True]


def test_the_ready_list_wakes_on_in_order_data_and_on_reset_only(make_nic):
    nic = make_nic()
    f = Flow()
    first, second = payload(MSS), payload(MSS, seed=1)
    rx = Receiver(nic.machine, bufsize=BUF, keep=True)
    receive(nic, [f.syn()])
    assert rx.drain() == 0                              # a SYN queues nothing
    late = f.data(second, seq=f.seq + MSS)
    receive(nic, [late])
    assert rx.drain() == 0                              # out of order: no wake-up
    receive(nic, [f.data(first)])
    assert rx.drain() == 1                              # both segments now in order
    f.seq += MSS
    receive(nic, [f.rst()])
    assert rx.drain() == 1
    assert list(kept_by_slot(rx).values()) == [first + second]
    cols = rx.close_all()
    assert cols["eof"].tolist() == [True] and cols["err"].tolist() == [errno.ECONNRESET]


def test_a_frag_outside_the_map_is_a_read_fault_and_bad_bytes():
    d = setup(ring=16)
    f = Flow()
    receive(d.nic, [f.syn(), *f.segments(payload(2 * MSS))])
    starts, phys, lengths = d.buf.scatterlist
    rx = Receiver(d.m, dmabuf=(starts, phys, np.minimum(lengths, 1)), dmabuf_id=d.id,
                  bufsize=BUF)
    rx.drain()
    c = rx.counters
    assert c["read-faults"] == 2 and c["tokens-returned"] == 2
    assert rx.close_all()["bad"].tolist() == [1]        # its first byte is in the map
    teardown(d)


def test_the_receiver_checks_its_arguments(make_nic):
    m = make_nic().machine
    for kw in ({"bufsize": 0}, {"bufsize": 1 << 31}, {"cmsgs": 0}, {"cmsgs": -1},
               {"validate": 0}, {"validate": "7"}, {"dmabuf": (np.zeros(1, np.uint64),) * 3}):
        with pytest.raises(NetmemError) as e:
            Receiver(m, **kw)
        assert e.value.errno == errno.EINVAL, kw
    bad_map = (np.zeros(1, np.uint64), np.array([1 << 60], np.uint64), np.ones(1, np.uint64))
    with pytest.raises(NetmemError) as e:
        Receiver(m, dmabuf=bad_map, dmabuf_id=1)
    assert e.value.errno == errno.EINVAL and "not in RAM" in str(e.value)
