"""devmem TX: bind-tx, sendmsg(SCM_DEVMEM_DMABUF), MSG_ZEROCOPY completions, the device's check
and reads, and the frames received again by a model NIC (tools/testing/selftests/drivers/net/hw/
devmem.py ``check_tx``/``check_tx_chunks`` with ncdevmem's client, ``do_client()``)."""
import errno
import struct

import numpy as np
import pytest
from devmemutil import MiB, lab, make_dmabuf, raises, rxq
from netmem.providers.dmabuf import net_devmem_lookup_dmabuf

from netmem import Machine
from netmem.dmabuf import dma_buf_unmap_attachment
from netmem.flows import PacketTrace
from netmem.netdev import NetDevice
from netmem.netlink import NetlinkSocket
from netmem.page_pool import DMA_TO_DEVICE
from netmem.tcp import SCM_DEVMEM_DMABUF, SOL_SOCKET
from netmem.tcp_tx import (
    MSG_MORE,
    MSG_ZEROCOPY,
    SO_EE_ORIGIN_ZEROCOPY,
    SO_ZEROCOPY,
    UIO_MAXIOV,
    TxSocket,
)

SRC, DST = "192.0.2.1", "192.0.2.2"


class Rig:
    """eth1 (the sender, under the GPU's switch) with a TX binding on a dma-buf, eth2 (the
    receiver, another machine's NIC in all but name) and a connected TxSocket with SO_ZEROCOPY."""

    def __init__(self, kind="udmabuf", iommu="none", size=MiB, layout="contiguous", wnd=65535):
        self.m = Machine(memory="256MiB", cpus=2, iommu=iommu)
        lab(self.m)
        self.tx = NetDevice(self.m, "eth1", num_rx_queues=1)
        self.rx = NetDevice(self.m, "eth2", num_rx_queues=1)
        self.buf = make_dmabuf(self.m, kind, size, layout, seed=3)
        self.nl = NetlinkSocket(self.m)
        self.id = self.nl.bind_tx(self.tx.ifindex, self.buf.fd)
        self.binding = net_devmem_lookup_dmabuf(self.m, self.id)
        self.sk = TxSocket(self.m, self.tx, SRC, DST, 40000, 5201, isn=1000, peer_isn=7,
                           wnd=wnd)
        self.sk.connect()
        self.sk.setsockopt(SOL_SOCKET, SO_ZEROCOPY, 1)

    def cmsg(self, id=None):
        return [(SOL_SOCKET, SCM_DEVMEM_DMABUF, struct.pack("=I", self.id if id is None else id))]

    def send(self, iov, flags=MSG_ZEROCOPY, id=None):
        return self.sk.sendmsg(iov, self.cmsg(id), flags)

    def deliver(self):
        """The frames on eth1's wire into eth2; what the receiving socket reads."""
        self.rx.receive(self.tx.txq.trace())
        socks = self.m.tcp.sockets()
        return b"".join(s.read_all() for s in socks)

    def ack_all(self):
        self.sk.ack(self.sk.info()["snd_nxt"])

    def teardown(self):
        self.sk.abort()
        for s in self.m.tcp.sockets():
            s.close()
        self.nl.close()
        for nic in list(self.m.netdevs.values()):
            if nic.registered:
                nic.unregister()
        self.buf.close()
        self.m.quiesce()
        assert self.binding.freed
        assert self.m.leak_report() == []


@pytest.fixture
def rig():
    r = Rig()
    yield r
    r.teardown()


def wait_compl(sk):
    """ncdevmem's ``wait_compl()``: one SO_EE_ORIGIN_ZEROCOPY notification, errno 0."""
    e = sk.recvmsg_errqueue()
    assert (e.ee_origin, e.ee_errno, e.ee_code) == (SO_EE_ORIGIN_ZEROCOPY, 0, 0)
    return e.ee_info, e.ee_data


def put(r, offset, data):
    """``provider->memcpy_to_device()``: a udmabuf through its mapping, else the device."""
    if r.buf.readable:
        with r.buf.mmap() as v:
            v[offset:offset + len(data)] = data
    else:
        r.buf.write_device(offset, data)


@pytest.mark.parametrize("kind,iommu", [("udmabuf", "none"), ("udmabuf", "dma-iommu"),
                                        ("gpu", "dma-iommu")])
@pytest.mark.parametrize("chunk", [0, 3])
def test_check_tx_and_chunks(kind, iommu, chunk):
    """devmem.py ``check_tx`` (``chunk`` 0) and ``check_tx_chunks`` (``ncdevmem -z 3``): each
    line of ``hello\\nworld`` goes to offset 0 of the dma-buf, is sent with MSG_ZEROCOPY
    (iovecs of ``chunk`` bytes at offsets 0, 3, ...), and completes before the next is
    written; the receiver reads what was sent."""
    r = Rig(kind, iommu)
    for i, line in enumerate([b"hello\n", b"world\n"]):
        put(r, 0, line)
        if chunk:
            iov = [(o, min(chunk, len(line) - o)) for o in range(0, len(line), chunk)]
        else:
            iov = [(0, len(line))]
        assert r.send(iov) == len(line)
        assert r.sk.info()["frags"] == len(iov)             # frags stop at each iovec's end
        r.ack_all()
        assert wait_compl(r.sk) == (i, i)
    assert r.deliver() == b"hello\nworld\n"
    assert r.m.iommu.faults == [] and r.m.iommu.unmapped_accesses == []
    r.teardown()


def _csum(data):
    if len(data) % 2:
        data += b"\0"
    s = int(np.frombuffer(data, ">u2").astype(np.uint64).sum())
    while s >> 16:
        s = (s & 0xffff) + (s >> 16)
    return s


def test_segmentation_headers_and_checksums():
    """A 300 KB send from unaligned iovecs: skbs of at most size_goal, frames of at most the
    MSS, sequence numbers contiguous, the IPv4 and TCP checksums right (checked here against a
    Python ones'-complement sum), PSH where an skb ends early, and the bytes arrive."""
    rig = Rig(wnd=1 << 20)
    rng = np.random.default_rng(5)
    data = rng.integers(0, 256, 300_000, np.uint8).tobytes()
    put(rig, 0, data)
    iov = [(0, 100_001), (100_001, 99_999), (200_000, 100_000)]
    assert rig.send(iov) == len(data)
    tr = rig.tx.txq.trace()
    info = rig.sk.info()
    assert info["segs_out"] == len(tr) == 1 + -(-len(data) // 1460)
    assert rig.tx.txq.stats() == {"tx_packets": len(tr), "tx_bytes": int(tr.lengths.sum()),
                                  "tx_dropped": 0}
    seq, psh = 1001, []
    for i in range(1, len(tr)):
        f = tr.frame(i)
        ip, th = f[14:34], f[34:54]
        assert _csum(ip) == 0xffff
        pseudo = ip[12:20] + struct.pack("!HH", 6, len(f) - 34)
        assert _csum(pseudo + f[34:]) == 0xffff
        assert struct.unpack("!I", th[4:8])[0] == seq and len(f) - 54 <= 1460
        seq += len(f) - 54
        psh.append(bool(th[13] & 0x08))
    # PSH ends each sendmsg (tcp_push()) and each skb that MAX_SKB_FRAGS cut short (the
    # unaligned iovecs need an extra frag): those end in a part-MSS frame.
    short = [bool(n < 1514) for n in tr.lengths[1:]]
    assert psh == short and psh[-1] and 1 < sum(psh) < 5
    rig.rx.receive(tr)
    assert b"".join(s.read_all() for s in rig.m.tcp.sockets()) == data
    assert info["queued_skbs"] == 1 + -(-len(data) // 64240)
    rig.ack_all()
    assert wait_compl(rig.sk) == (0, 0)
    rig.teardown()


def test_pcap_round_trip(rig, tmp_path):
    """The wire written as pcap and read back is the same trace; received, the same bytes."""
    put(rig, 0, b"x" * 5000)
    rig.send([(0, 5000)])
    tr = rig.tx.txq.trace()
    tr.write_pcap(str(tmp_path / "tx.pcap"))
    back = PacketTrace.from_pcap(str(tmp_path / "tx.pcap"))
    assert [back.frame(i) for i in range(len(back))] == [tr.frame(i) for i in range(len(tr))]
    rig.rx.receive(back)
    assert b"".join(s.read_all() for s in rig.m.tcp.sockets()) == b"x" * 5000
    rig.ack_all()


def test_max_skb_frags_starts_a_new_skb(rig):
    """Forty 10-byte iovecs at scattered offsets: one frag each, MAX_SKB_FRAGS (17) per skb,
    so three skbs; the bytes arrive in iovec order."""
    iov, want = [], b""
    for i in range(40):
        data = bytes([65 + i % 26]) * 10
        put(rig, i * 8192 + 7, data)
        iov.append((i * 8192 + 7, 10))
        want += data
    assert rig.send(iov) == 400
    assert rig.sk.info()["queued_skbs"] == 1 + 3 and rig.sk.info()["frags"] == 40
    assert rig.deliver() == want
    rig.ack_all()


def test_frag_stops_at_the_niov_boundary(rig):
    """An iovec across a 4 KiB boundary makes two frags (``net_devmem_get_niov_at()``)."""
    put(rig, 4000, b"a" * 200)
    rig.send([(4000, 200)])
    assert rig.sk.info()["frags"] == 2
    assert rig.deliver() == b"a" * 200
    rig.ack_all()


# ---- the errno table ---------------------------------------------------------------------------

def test_bind_tx_errors():
    """``netdev_nl_bind_tx_doit()``: EINVAL without ifindex or fd, ENODEV for no device,
    EOPNOTSUPP without netmem TX, EBADF for a bad fd; nothing is left bound."""
    m = Machine(memory="64MiB")
    nic = NetDevice(m, "eth0", num_rx_queues=1)
    plain = NetDevice(m, "eth9", num_rx_queues=1, netmem_tx=False)
    buf = make_dmabuf(m, "udmabuf", MiB)
    with NetlinkSocket(m) as nl:
        raises(errno.EINVAL, nl.bind_tx, None, buf.fd)
        raises(errno.EINVAL, nl.bind_tx, nic.ifindex, None)
        raises(errno.ENODEV, nl.bind_tx, 99, buf.fd)
        raises(errno.EOPNOTSUPP, nl.bind_tx, plain.ifindex, buf.fd)
        raises(errno.EBADF, nl.bind_tx, nic.ifindex, 12345)
        assert nl.bindings == [] and m._devmem_bindings == {}
    nic.unregister()
    plain.unregister()
    buf.close()
    m.quiesce()
    assert m.leak_report() == []


@pytest.mark.parametrize("case,err", [
    ("no SO_ZEROCOPY", errno.EINVAL),
    ("no MSG_ZEROCOPY", errno.EINVAL),
    ("unknown id", errno.EINVAL),
    ("rx binding", errno.EINVAL),
    ("cmsg_len", errno.EINVAL),
    ("other cmsg", errno.EINVAL),
    ("route elsewhere", errno.ENODEV),
    ("offset past the end", errno.EFAULT),
    ("too many iovecs", errno.EMSGSIZE),
    ("negative length", errno.EINVAL),
    ("not connected", errno.EPIPE),
    ("after close", errno.EPIPE),
    ("no dmabuf id", errno.EOPNOTSUPP),
])
def test_sendmsg_errors(rig, case, err):
    """The kernel's checks on a devmem send, each with its errno; a refused send queues
    nothing, takes no binding reference and gives its notification id back."""
    sk, flags, anc, iov = rig.sk, MSG_ZEROCOPY, rig.cmsg(), [(0, 100)]
    other = NetDevice(rig.m, "eth3", num_rx_queues=1)
    if case == "no SO_ZEROCOPY":
        sk.setsockopt(SOL_SOCKET, SO_ZEROCOPY, 0)
    elif case == "no MSG_ZEROCOPY":
        flags = 0
    elif case == "unknown id":
        anc = rig.cmsg(77)
    elif case == "rx binding":
        rx_buf = make_dmabuf(rig.m, "udmabuf", MiB)
        rig.rx.ethtool.set_ringparam(tcp_data_split="on")
        anc = rig.cmsg(rig.nl.bind_rx(rig.rx.ifindex, rx_buf.fd, rxq(0)))
        rx_buf.close()
    elif case == "cmsg_len":
        anc = [(SOL_SOCKET, SCM_DEVMEM_DMABUF, struct.pack("=Q", rig.id))]
    elif case == "other cmsg":
        anc = [*rig.cmsg(), (SOL_SOCKET, 37, b"\0" * 4)]
    elif case == "route elsewhere":
        sk.dst = other
    elif case == "offset past the end":
        iov = [(MiB, 1)]
    elif case == "too many iovecs":
        iov = [(0, 1)] * (UIO_MAXIOV + 1)
    elif case == "negative length":
        iov = [(0, -1)]
    elif case == "not connected":
        sk = TxSocket(rig.m, rig.tx, SRC, DST, 40001, 5201)
        sk.setsockopt(SOL_SOCKET, SO_ZEROCOPY, 1)
    elif case == "after close":
        sk.close()
    elif case == "no dmabuf id":
        anc = []
    before = sk.info()
    raises(err, sk.sendmsg, iov, anc, flags)
    after = sk.info()
    assert after == before and rig.binding.refcount == 1
    if case != "after close" and case != "not connected":
        sk.dst = rig.tx
        sk.setsockopt(SOL_SOCKET, SO_ZEROCOPY, 1)
        assert rig.send([(0, 10)]) == 10
        rig.ack_all()
        assert wait_compl(rig.sk) == (0, 0)          # the refused send's id was given back


def test_fault_part_way_returns_the_bytes_queued(rig):
    """An iovec past the dma-buf undoes the append to the skb it was filling
    (``skb_zerocopy_iter_stream()``): with a full skb queued before it, sendmsg returns that
    skb's bytes; with nothing queued, EFAULT."""
    put(rig, 0, b"abc" * 30000)
    raises(errno.EFAULT, rig.send, [(0, 3), (MiB, 5)])
    assert rig.send([(0, 70000), (MiB, 1)]) == 64240
    assert rig.deliver() == (b"abc" * 30000)[:64240]
    rig.ack_all()
    assert wait_compl(rig.sk) == (0, 0)


def test_zero_length_send_looks_nothing_up(rig):
    """``(flags & MSG_ZEROCOPY) && size`` is false: no binding lookup, no notification."""
    assert rig.send([], id=77) == 0
    assert rig.sk.info()["zckey"] == 0


# ---- notifications ----------------------------------------------------------------------------

def test_completions_coalesce_in_the_error_queue(rig):
    """Sends 0, 1, 2 acked together give one notification [0, 2]
    (``skb_zerocopy_notify_extend()``); 3 and 4 acked one by one but read after both, one
    [3, 4]; 5 read before 6 completes, two."""
    put(rig, 0, b"z" * 100)
    for _ in range(3):
        rig.send([(0, 10)])
    assert rig.sk.info()["zckey"] == 3
    rig.ack_all()
    assert wait_compl(rig.sk) == (0, 2)
    raises(errno.EAGAIN, rig.sk.recvmsg_errqueue)
    for _ in range(2):
        rig.send([(0, 10)])
        rig.ack_all()
    assert wait_compl(rig.sk) == (3, 4)
    rig.send([(0, 10)])
    rig.ack_all()
    assert wait_compl(rig.sk) == (5, 5)
    rig.send([(0, 10)])
    rig.ack_all()
    assert wait_compl(rig.sk) == (6, 6)


def test_unsent_tail_extends_its_notification():
    """With the window shut, sends append to the unsent tail skb and its notification takes
    each send's id (``msg_zerocopy_realloc()``): one skb, one notification [0, 3] once the
    window opens and the data is acked; partial acks free nothing."""
    r = Rig(wnd=0)
    put(r, 0, b"q" * 40)
    for i in range(4):
        r.send([(i * 10, 10)], flags=MSG_ZEROCOPY | MSG_MORE)
    info = r.sk.info()
    assert (info["queued_skbs"], info["unsent_skbs"], info["zckey"]) == (2, 1, 4)
    r.sk.ack(1001, wnd=65535)                       # the SYN's ACK opens the window
    assert r.sk.info()["unsent_skbs"] == 0
    r.sk.ack(1021)
    raises(errno.EAGAIN, r.sk.recvmsg_errqueue)     # the skb is acked only in part
    r.ack_all()
    assert wait_compl(r.sk) == (0, 3)
    assert r.deliver() == b"q" * 40
    r.teardown()


def test_closed_socket_queues_no_completion(rig):
    """After close() (SOCK_DEAD) an acked send completes silently."""
    rig.send([(0, 10)])
    rig.sk.close()
    rig.ack_all()
    raises(errno.EAGAIN, rig.sk.recvmsg_errqueue)
    assert rig.binding.refcount == 1


# ---- validate_xmit_unreadable_skb() --------------------------------------------------------------

@pytest.mark.parametrize("netmem_tx", [True, False])
def test_route_change_drops_at_the_device(netmem_tx):
    """Queued while the window is shut, then routed out another device: its driver never sees
    the skb (``validate_xmit_unreadable_skb()``: the binding's device is not this one, or the
    device has no netmem TX), tx_dropped counts it, nothing goes on the wire or is read."""
    r = Rig(wnd=0)
    other = NetDevice(r.m, "eth3", num_rx_queues=1, netmem_tx=netmem_tx)
    r.send([(0, 100)])
    r.sk.dst = other
    r.sk.ack(1001, wnd=65535)
    assert other.txq.stats() == {"tx_packets": 0, "tx_bytes": 0, "tx_dropped": 1}
    assert len(other.txq.trace()) == 0 and r.sk.info()["segs_out"] == 2
    r.ack_all()
    assert wait_compl(r.sk) == (0, 0)
    r.teardown()


# ---- unbind with sends in flight ---------------------------------------------------------------

def test_unbind_with_sends_in_flight():
    """Closing the netlink socket unbinds, but each frag of an unacked skb holds a binding
    reference: the mapping stays, a new send with the id is EINVAL, the queued data still
    goes out by DMA (window opened after the unbind), and the binding is freed (unmapped,
    detached, put) only after the last skb is acked."""
    r = Rig(iommu="dma-iommu", wnd=0)
    put(r, 0, b"inflight" * 1000)
    r.send([(0, 8000)])
    assert r.binding.refcount == 1 + 2
    r.nl.close()
    r.m.quiesce()
    assert not r.binding.freed and r.binding.refcount == 2
    raises(errno.EINVAL, r.send, [(0, 8)])
    r.sk.ack(1001, wnd=65535)
    assert r.deliver() == b"inflight" * 1000 and r.m.iommu.faults == []
    r.sk.ack(1001 + 4000)
    r.m.quiesce()
    assert not r.binding.freed
    r.ack_all()
    assert r.binding.refcount == 0 and not r.binding.freed     # deferred work
    r.m.quiesce()
    assert r.binding.freed
    assert wait_compl(r.sk) == (0, 0)
    r.teardown()


def test_abort_releases_everything():
    """``tcp_abort()`` frees every queued skb: the binding goes once unbound."""
    r = Rig(wnd=0)
    r.send([(0, 100)])
    r.sk.abort()
    assert r.binding.refcount == 1
    r.teardown()


def test_unmapped_payload_read_is_an_iommu_fault():
    """The device reads the payload by DMA at the net_iovs' addresses: with the mapping torn
    down behind the binding's back (a bug a test can stage), the read is an IOMMU fault on
    eth1, recorded, and the frame does not go out."""
    r = Rig(iommu="dma-iommu")
    b = r.binding
    dma_buf_unmap_attachment(b.attachment, b.sgt, DMA_TO_DEVICE)
    b.sgt = None                                    # the binding's free must not unmap it again
    put(r, 0, b"x" * 100)
    assert r.send([(0, 100)]) == 100
    assert r.tx.txq.stats()["tx_packets"] == 1     # the SYN only
    (fault,) = r.m.iommu.faults
    assert (fault["device"], fault["direction"]) == ("eth1", "read")
    r.ack_all()
    r.teardown()
