"""TCP send from device memory (devmem TX): the sending socket, MSG_ZEROCOPY completions and
the device's TX queue, whose frames come out as a ``PacketTrace``.

Models the devmem half of ``tcp_sendmsg_locked()`` (net/ipv4/tcp.c, Linux 6.16 and later) with
``sock_cmsg_send()``, the MSG_ZEROCOPY notifications of net/core/skbuff.c read back with
``recvmsg(MSG_ERRQUEUE)`` (``sock_recv_errqueue()``), ``tcp_ack()``'s freeing of acked skbs and
a TSO device that DMA-reads the payload through the IOMMU; the per-skb and per-frame work runs
in C (pyx/devmem_tx.pxi). The send is what ``ncdevmem -c`` does: bind-tx, ``SO_ZEROCOPY``,
``sendmsg(MSG_ZEROCOPY)`` with iovecs whose bases are offsets into the dma-buf and a
``SCM_DEVMEM_DMABUF`` cmsg naming the binding, then a wait for the completion.

Departs (docs/design.md, devmem TX): IPv4 only, no TCP options but the SYN's MSS; ``connect()``
sends the SYN and the socket is established at once (no SYN-ACK is awaited: the model's receive
side opens on the SYN); no Nagle or autocork, no send buffer limit; only devmem sends (a send
without the dmabuf cmsg is EOPNOTSUPP); ACKs are handed in with ``ack()``; no retransmission.
"""
import ipaddress
import struct
from typing import NamedTuple

import numpy as np

from netmem import _core
from netmem.errors import NetmemError
from netmem.tcp import SCM_DEVMEM_DMABUF, SOL_SOCKET

__all__ = ["MSG_MORE", "MSG_ZEROCOPY", "SO_EE_CODE_ZEROCOPY_COPIED", "SO_EE_ORIGIN_ZEROCOPY",
           "SO_ZEROCOPY", "UIO_MAXIOV", "SockExtendedErr", "TxQueue", "TxSocket"]

EINVAL, EAGAIN, EPIPE, EMSGSIZE, EOPNOTSUPP = 22, 11, 32, 90, 95
SO_ZEROCOPY = 60                    # include/uapi/asm-generic/socket.h
MSG_MORE = 0x8000                   # include/linux/socket.h
MSG_ZEROCOPY = 0x4000000
SO_EE_ORIGIN_ZEROCOPY = 5           # include/uapi/linux/errqueue.h
SO_EE_CODE_ZEROCOPY_COPIED = 1
UIO_MAXIOV = 1024                   # include/uapi/linux/uio.h: import_iovec()'s limit
_TCPHDR_FIN, _TCPHDR_SYN = 0x01, 0x02


class SockExtendedErr(NamedTuple):
    """``struct sock_extended_err`` (include/uapi/linux/errqueue.h): a MSG_ZEROCOPY completion
    has ``ee_origin`` SO_EE_ORIGIN_ZEROCOPY and covers sends ``ee_info`` .. ``ee_data``."""

    ee_errno: int
    ee_origin: int
    ee_type: int
    ee_code: int
    ee_pad: int
    ee_info: int
    ee_data: int


class TxQueue(_core.CoreTxQueue):
    """A device's TX queue (``nic.txq``): ``dma_dev`` (the device its DMA reads go through,
    ``netdev_queue_get_dma_dev(netdev, 0, NETDEV_QUEUE_TYPE_TX)``), ``netmem_tx``
    (``netdev->netmem_tx``), the counters and the frames on the wire."""

    def __new__(cls, nic, netmem_tx=True):
        return super().__new__(cls, nic.pcidev, nic.ifindex, netmem_tx)

    def __init__(self, nic, netmem_tx=True):
        self.nic = nic
        self.dma_dev = nic.pcidev

    def __repr__(self):
        return f"<TxQueue {self.nic.name}:0 netmem_tx {self.netmem_tx}>"

    def stats(self):
        """``tx_packets``, ``tx_bytes`` (rtnl_link_stats64, qstats ``tx-packets``/``tx-bytes``)
        and ``tx_dropped`` (the core stats ``validate_xmit_skb()`` counts)."""
        return self._stats()

    def trace(self):
        """The frames sent since the last call, as a ``PacketTrace`` (timestamps on the virtual
        clock), ready for ``NetDevice.receive()`` or ``PacketTrace.write_pcap()``."""
        from netmem.flows import PacketTrace
        arena, offsets, lengths, ts, payload = self._take()
        return PacketTrace(arena, offsets, lengths, ts, payload_bytes=payload)


def _ipv4(addr, what):
    try:
        a = ipaddress.ip_address(addr)
    except ValueError:
        a = None
    if not isinstance(a, ipaddress.IPv4Address):
        raise NetmemError(EINVAL, f"TxSocket: {what} {addr!r} is not an IPv4 address")
    return a


def _header(src_mac, dst_mac, laddr, raddr, lport, rport):
    """The Ethernet + IPv4 + TCP header template (lengths, ids, sequence numbers, flags and
    checksums are filled per frame): DF, TTL 64, window 65535 (scale 0)."""
    eth = dst_mac + src_mac + b"\x08\x00"
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 0, 0, 0x4000, 64, 6, 0, laddr.packed,
                     raddr.packed)
    tcp = struct.pack("!HHIIBBHHH", lport, rport, 0, 0, 0x50, 0, 65535, 0, 0)
    return eth + ip + tcp


class TxSocket(_core.CoreTxSock):
    """A connected TCP socket that sends from device memory:
    ``TxSocket(m, dev, laddr, raddr, lport, rport, isn=0, peer_isn=0, wnd=65535)``.

    ``dev`` is the route's device (``dst``; set it to model a route change). ``connect()``,
    ``setsockopt(SOL_SOCKET, SO_ZEROCOPY, 1)``, ``sendmsg()``, ``recvmsg_errqueue()``,
    ``ack()``, ``close()`` (FIN) and ``abort()`` (every queued skb freed) follow the kernel's.
    """

    def __init__(self, machine, dev, laddr, raddr, lport, rport, *, isn=0, peer_isn=0,
                 wnd=65535, src_mac=b"\x02\x00\x00\x00\x00\x01",
                 dst_mac=b"\x02\x00\x00\x00\x00\x02"):
        la, ra = _ipv4(laddr, "laddr"), _ipv4(raddr, "raddr")
        for p in (lport, rport):
            if not isinstance(p, int) or not 0 < p < 1 << 16:
                raise NetmemError(EINVAL, f"TxSocket: port {p!r} not in 1..65535")
        if len(src_mac) != 6 or len(dst_mac) != 6:
            raise NetmemError(EINVAL, "TxSocket: MAC addresses are 6 bytes")
        self.machine = machine
        self.local, self.remote = (str(la), lport), (str(ra), rport)
        self._setup(_header(bytes(src_mac), bytes(dst_mac), la, ra, lport, rport),
                    isn & 0xffffffff, (peer_isn + 1) & 0xffffffff, dev.mtu - 40,
                    min(int(wnd), 0xffffffff))
        self.dst = dev
        self.state = "CLOSE"
        self.shutdown = False

    def __repr__(self):
        return f"<TxSocket {self.local} -> {self.remote} {self.state}>"

    @property
    def dst(self):
        """The route's device (``__sk_dst_get(sk)->dev``)."""
        return self._dst_dev

    @dst.setter
    def dst(self, dev):
        self._dst_dev = dev
        self._set_dst(dev.txq)

    def info(self):
        """``tcp_info``-like: snd_una, snd_nxt, write_seq, snd_wnd, mss, segs_out,
        data_segs_out, bytes_sent, bytes_acked; and the queue: skbs, unsent skbs, frags."""
        return self._info()

    def connect(self):
        """``tcp_connect()``: the SYN (with the MSS option) goes out; ESTABLISHED."""
        if self.state != "CLOSE":
            raise NetmemError(106, f"connect: socket is {self.state}")   # EISCONN
        self._ctl(_TCPHDR_SYN, self.machine)
        self.state = "ESTABLISHED"

    def setsockopt(self, level, optname, value):
        """``SO_ZEROCOPY`` (``sock_setsockopt()``: SOCK_ZEROCOPY on a TCP socket, 0 or 1)."""
        if level != SOL_SOCKET or optname != SO_ZEROCOPY:
            raise NetmemError(92, f"setsockopt: level {level} option {optname} is not "
                                  f"modelled")                           # ENOPROTOOPT
        if value not in (0, 1):
            raise NetmemError(EINVAL, f"setsockopt: SO_ZEROCOPY takes 0 or 1, not {value!r}")
        self._set_flag("zerocopy", bool(value))

    def sendmsg(self, iov, ancdata=(), flags=0):
        """``sendmsg(fd, msg, flags)`` of ``iov`` (``(offset, length)`` pairs: the offsets are
        into the dma-buf the ``(SOL_SOCKET, SCM_DEVMEM_DMABUF, u32 id)`` cmsg names). Returns
        the bytes queued (fewer when a fault or MAX_SKB_FRAGS stopped the copy part-way);
        raises EMSGSIZE for more than UIO_MAXIOV iovecs, EINVAL for a bad iovec or cmsg, a
        dmabuf id without MSG_ZEROCOPY and SO_ZEROCOPY or one that names no TX binding, ENODEV
        when the binding's device is not the route's, EPIPE when not connected or shut down,
        EFAULT when the first byte is outside the dma-buf, EOPNOTSUPP without a dmabuf id."""
        bases, lens = self._iovec(iov)
        size = int(lens.sum())
        dmabuf_id, sockc_err = self._cmsgs(ancdata)
        binding = None
        if flags & MSG_ZEROCOPY and size and self._zerocopy and not sockc_err and dmabuf_id:
            from netmem.devmem_tx import net_devmem_get_binding
            binding = net_devmem_get_binding(self, dmabuf_id)
        if not sockc_err and dmabuf_id and not (flags & MSG_ZEROCOPY and self._zerocopy):
            raise NetmemError(EINVAL, "sendmsg: a dmabuf id needs MSG_ZEROCOPY and SO_ZEROCOPY")
        if self.state != "ESTABLISHED" or self.shutdown:      # sk_stream_wait_connect()
            raise NetmemError(EPIPE, f"sendmsg: socket is {self.state}"
                                     f"{' and shut down' if self.shutdown else ''}")
        if sockc_err:
            raise sockc_err
        if not size:
            return 0
        if binding is None:
            raise NetmemError(EOPNOTSUPP, "sendmsg: only devmem sends (MSG_ZEROCOPY with an "
                                          "SCM_DEVMEM_DMABUF cmsg) are modelled")
        r = self._sendmsg(self.machine, binding, bases, lens, size, bool(flags & MSG_MORE))
        if r < 0:
            raise NetmemError(-r, f"sendmsg: {_SEND_ERRORS.get(-r, 'error')}")
        return r

    @staticmethod
    def _iovec(iov):
        """``import_iovec()``: at most UIO_MAXIOV entries, lengths that fit an ssize_t."""
        pairs = list(iov)
        if len(pairs) > UIO_MAXIOV:
            raise NetmemError(EMSGSIZE, f"sendmsg: {len(pairs)} iovecs, UIO_MAXIOV is "
                                        f"{UIO_MAXIOV}")
        try:
            a = np.array(pairs, dtype=np.int64).reshape(-1, 2)
        except (TypeError, ValueError, OverflowError):
            raise NetmemError(EINVAL, "sendmsg: iovecs are (offset, length) int pairs") \
                from None
        if (a < 0).any():
            raise NetmemError(EINVAL, "sendmsg: a negative iovec offset or length")
        bases = np.ascontiguousarray(a[:, 0], np.uint64)
        lens = np.ascontiguousarray(a[:, 1], np.uint64)
        if not len(bases):          # the C side takes a pointer to element 0
            bases, lens = np.zeros(1, np.uint64), np.zeros(1, np.uint64)
        return bases, lens

    @staticmethod
    def _cmsgs(ancdata):
        """``sock_cmsg_send()``: the SCM_DEVMEM_DMABUF id (its data must be 4 bytes); another
        SOL_SOCKET cmsg is EINVAL (the model knows no other); other levels are skipped. The
        error is returned, not raised: the kernel reports it after the zerocopy checks."""
        dmabuf_id = 0
        for level, ctype, data in ancdata:
            if level != SOL_SOCKET:
                continue
            if ctype != SCM_DEVMEM_DMABUF:
                return 0, NetmemError(EINVAL, f"sendmsg: SOL_SOCKET cmsg type {ctype} is not "
                                              f"modelled")
            if len(data) != 4:
                return 0, NetmemError(EINVAL, f"sendmsg: SCM_DEVMEM_DMABUF cmsg_len is "
                                              f"CMSG_LEN({len(data)}), not CMSG_LEN(4)")
            dmabuf_id = struct.unpack("=I", bytes(data))[0]
        return dmabuf_id, None

    def recvmsg_errqueue(self):
        """``recvmsg(MSG_ERRQUEUE)``: the oldest queued completion as a ``SockExtendedErr``;
        EAGAIN when none is queued."""
        e = self._errq_pop()
        if e is None:
            raise NetmemError(EAGAIN, "recvmsg(MSG_ERRQUEUE): the error queue is empty")
        lo, hi, code = e
        return SockExtendedErr(0, SO_EE_ORIGIN_ZEROCOPY, 0, code, 0, lo, hi)

    def ack(self, ack_seq, wnd=None):
        """An ACK for ``ack_seq`` arrives (``tcp_ack()``): every skb it covers whole is freed
        (its frags' binding references, its completion reference), the window becomes ``wnd``
        (unchanged when None) and the unsent skbs that now fit go out. EINVAL for an ACK of
        data not sent yet (the kernel drops it: SKB_DROP_REASON_TCP_ACK_UNSENT_DATA)."""
        info = self._info()
        ack_seq &= 0xffffffff
        if _after(ack_seq, info["snd_nxt"]):
            raise NetmemError(EINVAL, f"ack: {ack_seq} is past snd_nxt {info['snd_nxt']}")
        if _after(info["snd_una"], ack_seq):    # an old ACK: only its window counts
            ack_seq = info["snd_una"]
        self._ack(self.machine, ack_seq, info["snd_wnd"] if wnd is None else int(wnd))
        _reap(self.machine)

    def close(self):
        """``tcp_close()`` with data queued: the FIN follows it; the socket is orphaned
        (SOCK_DEAD), so later completions are not queued; its skbs live until acked."""
        if self.state == "ESTABLISHED" and not self.shutdown:
            self._ctl(_TCPHDR_FIN, self.machine)
        self.shutdown = True
        self.state = "CLOSED" if self.state == "CLOSE" else "FIN_WAIT1"
        self._set_flag("dead", True)

    def abort(self):
        """``tcp_abort()``: every queued skb is freed at once (``tcp_write_queue_purge()``)."""
        self._set_flag("dead", True)
        self._purge()
        self.state = "CLOSED"
        self.shutdown = True
        _reap(self.machine)


_SEND_ERRORS = {14: "an iovec offset is past the end of the dma-buf "
                    "(net_devmem_get_niov_at())",
                12: "out of memory", 105: "no notification (msg_zerocopy_realloc())"}


def _after(a, b):
    """``after(a, b)``: ``a`` is later than ``b`` in sequence space."""
    return 0 < (a - b) & 0xffffffff < 1 << 31


def _reap(machine):
    """Schedule the free of every binding whose last reference a freed TX skb dropped."""
    for b in list(machine._devmem_bindings):
        b._reap()
