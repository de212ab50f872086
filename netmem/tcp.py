"""TCP receive: the machine's stack, its sockets, recv and recvmsg.

Models the receive half of net/ipv4/tcp_input.c, tcp_ipv4.c and tcp.c; the data plane (IP and TCP
checks, the in-order and out-of-order queues, coalescing, FIN and RST) runs in C as frames come
up from GRO (``netmem._core``, pyx/tcp_rx.pxi). This module is the application's side.

Sockets are keyed by 4-tuple, IPv4 and IPv6. Every segment is received by the socket whose local
end is the segment's destination: a capture holding both directions of a connection gives two
receive streams, one per socket (``local``/``remote`` tell them apart), just as the two hosts of
the connection each receive one direction. A socket opens on the SYN (or SYN-ACK) of its
direction; with ``m.tcp.open_on_data = True`` it also opens on the first segment of a flow the
capture caught mid-way (its stream then starts at that segment).

Departures from Linux are listed in ``docs/design.md`` (no checksums, no TIME_WAIT, no IP
reassembly).
"""
import ipaddress
import socket as _socket
from typing import NamedTuple

import numpy as np

from netmem import _core
from netmem.errors import NetmemError

__all__ = ["DMABUF_CMSG_DTYPE", "MSG_SOCK_DEVMEM", "SCM_DEVMEM_DMABUF", "SCM_DEVMEM_LINEAR",
           "SOL_SOCKET", "SO_DEVMEM_DMABUF", "SO_DEVMEM_DONTNEED", "SO_DEVMEM_LINEAR",
           "DmabufCmsg", "DmabufToken", "Receiver", "Socket", "TcpStack"]

# include/uapi/asm-generic/socket.h and include/linux/socket.h
SOL_SOCKET = 1
SO_DEVMEM_LINEAR = SCM_DEVMEM_LINEAR = 78
SO_DEVMEM_DMABUF = SCM_DEVMEM_DMABUF = 79
SO_DEVMEM_DONTNEED = 80
MSG_SOCK_DEVMEM = 0x2000000
ETOOSMALL = 525             # include/linux/errno.h (kernel-internal: Python has no name for it)
#: ``recvmsg_devmem``'s cmsgs: ``struct dmabuf_cmsg`` with the cmsg type in front.
DMABUF_CMSG_DTYPE = _core.DMABUF_CMSG_DTYPE
_EAGAIN = 11
#: net.ipv4.tcp_rmem as the kernel sets it (min, default, max); the model's default starts
#: sockets at the max instead (open-loop traffic never sees the window: ``TcpStack.rmem``).
KERNEL_TCP_RMEM = (4096, 131072, 6291456)


class DmabufCmsg(NamedTuple):
    """``struct dmabuf_cmsg`` (include/uapi/linux/uio.h): an SCM_DEVMEM_LINEAR one has only
    ``frag_size`` set."""

    frag_offset: int = 0
    frag_size: int = 0
    frag_token: int = 0
    dmabuf_id: int = 0
    flags: int = 0


class DmabufToken(NamedTuple):
    """``struct dmabuf_token``: tokens ``token_start .. token_start + token_count - 1``."""

    token_start: int
    token_count: int


class TcpStack:
    """``m.tcp``: the sockets, the MIB counters (``/proc/net/snmp`` and ``netstat`` names),
    drop reasons and the stack's settings."""

    def __init__(self, machine):
        self.machine = machine
        self._socks = {}            # slot -> Socket
        self.acks_dropped = 0       # ACK records the full ring dropped (as of the last acks())

    def __repr__(self):
        return f"<TcpStack {len(self.sockets())} socket(s)>"

    def sockets(self):
        """Every open socket, in slot order."""
        live = {row[0]: self._socket(row) for row in _core._sockets(self.machine)}
        self._socks = live
        return list(live.values())

    def readable(self):
        """The open sockets holding something ``recv`` has not returned yet (queued data, a
        FIN, an error), in slot order: what an application's poll loop reads, found in C
        without a Python step per idle socket. Departs from ``tcp_poll()``: a socket whose end
        of stream or error was read is not listed again (poll keeps reporting ``POLLIN``)."""
        return [self._socket(row) for row in _core._sockets(self.machine, True)]

    def _socket(self, row):
        """The Socket of a ``_sockets`` row, the one made before while its slot holds the
        same 4-tuple."""
        i, *key = row
        sk = self._socks.get(i)
        if sk is None or sk._key != tuple(key):
            sk = self._socks[i] = Socket(self, *row)
        return sk

    def lookup(self, local, remote):
        """The socket with ``local`` and ``remote`` ``(ip, port)`` ends, or None: one hash
        lookup in C (``__inet_lookup_established()``), not a walk of every socket."""
        lip, lport = local
        rip, rport = remote
        la, ra = ipaddress.ip_address(lip), ipaddress.ip_address(rip)
        if la.version != ra.version or not (0 <= int(lport) < 1 << 16 and
                                            0 <= int(rport) < 1 << 16):
            return None                 # no socket has such ends
        key = (la.version, la.packed, ra.packed, int(lport), int(rport))
        slot = _core._sk_lookup(self.machine, *key)
        return None if slot < 0 else self._socket((slot, *key))

    @property
    def mib(self):
        """TCP counters: ``Tcp:`` (InSegs, InErrs, OutRsts, PassiveOpens) and ``TcpExt:``
        (TCPOFOQueue, TCPOFOMerge, TCPOFODrop, TCPRcvCoalesce, ...) by their kernel names."""
        return _core._tcp_mib(self.machine)

    def acks(self, max_records=None):
        """Drain the ACKs the receiver sent (``tcp_send_ack()``, pyx/tcp_ack.pxi), oldest first,
        as a numpy array of ``ACK_DTYPE``: ``t_ns`` (the stack's virtual clock), ``slot`` (the
        socket), ``seq``, ``ack``, ``win`` (the window field as sent, scaled), ``flags``,
        ``tsval``/``tsecr`` (0 without timestamps), ``nr_sack`` and ``sack`` (up to 4
        (start, end) blocks, a D-SACK first). Delayed-ACK timers due by the machine's clock
        fire first. The ring holds 4096 records; what did not fit is counted in
        ``acks_dropped``."""
        out, self.acks_dropped = _core._tcp_acks(self.machine, (1 << 64) - 1
                                                 if max_records is None else max_records)
        return out

    @property
    def ip_mib(self):
        """``Ip:`` counters of IPv4 receive (InReceives, InHdrErrors, InTruncatedPkts, ...)."""
        return _core._ip_mib(self.machine, False)

    @property
    def ip6_mib(self):
        """``Ip6`` counters of IPv6 receive, with the Ip6 prefix dropped."""
        return _core._ip_mib(self.machine, True)

    @property
    def udp_mib(self):
        """``Udp:`` counters (InDatagrams, NoPorts, InErrors): no UDP socket exists, so every
        datagram that reaches ``udp_rcv()`` whole is NoPorts."""
        return _core._udp_mib(self.machine, False)

    @property
    def udp6_mib(self):
        """``Udp6`` counters, with the Udp6 prefix dropped."""
        return _core._udp_mib(self.machine, True)

    @property
    def icmp_mib(self):
        """``Icmp:`` InMsgs and InErrors, and ``IcmpMsg:``'s InType<N> for each type seen."""
        return _core._icmp_mib(self.machine, False)

    @property
    def icmp6_mib(self):
        """``Icmp6`` InMsgs, InErrors and InType<N>, with the Icmp6 prefix dropped."""
        return _core._icmp_mib(self.machine, True)

    @property
    def invalid_ratelimit(self):
        """net.ipv4.tcp_invalid_ratelimit in ms (500): one challenge ACK per socket per this
        long (``__tcp_oow_rate_limited()``)."""
        return _core._net_config(self.machine)["invalid_ratelimit"]

    @invalid_ratelimit.setter
    def invalid_ratelimit(self, value):
        if not 0 <= value < 1 << 31:
            raise NetmemError(22, f"tcp_invalid_ratelimit: {value} out of range")
        _core._net_config(self.machine, invalid_ratelimit=int(value))

    @property
    def challenge_ack_limit(self):
        """net.ipv4.tcp_challenge_ack_limit: challenge ACKs per second in the netns (default
        INT_MAX, 2147483647, which turns the limit off, as since 6.0)."""
        return _core._net_config(self.machine)["challenge_ack_limit"]

    @challenge_ack_limit.setter
    def challenge_ack_limit(self, value):
        if not 0 <= value < 1 << 31:
            raise NetmemError(22, f"tcp_challenge_ack_limit: {value} out of range")
        _core._net_config(self.machine, challenge_ack_limit=int(value))

    @property
    def drop_reasons(self):
        """skbs freed by ``kfree_skb_reason()``, by SKB_DROP_REASON_* name (the nonzero ones)."""
        return _core._drop_reasons(self.machine)

    @property
    def open_on_data(self):
        """Open a socket on the first segment of a flow seen mid-way (default False: such
        segments meet no socket, are counted in OutRsts and dropped as NO_SOCKET)."""
        return _core._net_config(self.machine)["open_on_data"]

    @open_on_data.setter
    def open_on_data(self, value):
        _core._net_config(self.machine, open_on_data=bool(value))

    @property
    def rcvbuf(self):
        """``setsockopt(SO_RCVBUF)`` as applied to each new socket (the value sk_rcvbuf takes,
        already doubled), or None (the default): new sockets start at tcp_rmem[1] and
        autotune. A set value locks the buffer (``SOCK_RCVBUF_LOCK``: no autotuning, and
        ``tcp_clamp_window()`` leaves it) and clamps the window the socket offers."""
        cfg = _core._net_config(self.machine)
        return cfg["rcvbuf"] if cfg["rcvbuf_lock"] else None

    @rcvbuf.setter
    def rcvbuf(self, value):
        if not 0 < value < 1 << 31:
            raise NetmemError(22, f"rcvbuf: {value} out of range")
        _core._net_config(self.machine, rcvbuf=int(value))

    @property
    def rmem(self):
        """net.ipv4.tcp_rmem: (min, default, max). A new socket's sk_rcvbuf starts at the
        default, autotuning grows it up to the max. The model's default is (4096, 6291456,
        6291456): its traffic is open loop (traces that never see the receiver's window), which
        a socket starting at the kernel's 131072 would refuse past its first window; set
        (4096, 131072, 6291456), the kernel's, for a closed loop and autotuning."""
        return _core._net_config(self.machine)["rmem"]

    @rmem.setter
    def rmem(self, value):
        value = tuple(int(v) for v in value)
        if len(value) != 3 or not all(0 < v < 1 << 31 for v in value):
            raise NetmemError(22, f"tcp_rmem: {value} must be three values in [1, INT_MAX]")
        _core._net_config(self.machine, rmem=value)

    @property
    def moderate_rcvbuf(self):
        """net.ipv4.tcp_moderate_rcvbuf (on): ``tcp_rcv_space_adjust()`` autotunes sk_rcvbuf."""
        return _core._net_config(self.machine)["moderate_rcvbuf"]

    @moderate_rcvbuf.setter
    def moderate_rcvbuf(self, value):
        _core._net_config(self.machine, moderate_rcvbuf=bool(value))

    @property
    def skb_defer_max(self):
        """net.core.skb_defer_max (64); 0 frees every skb where the application reads it."""
        return _core._net_config(self.machine)["defer_max"]

    @skb_defer_max.setter
    def skb_defer_max(self, value):
        if not 0 <= value <= 1 << 20:
            raise NetmemError(22, f"skb_defer_max: {value} out of range")
        _core._net_config(self.machine, defer_max=int(value))

    def _leaks(self):
        out = []
        for sk in self.sockets():
            info = sk.info()
            if info["rcv_queue_skbs"] or info["ofo_skbs"] or info["devmem_tokens"]:
                out.append(f"socket {sk} holds {info['rcv_queue_skbs']} queued and "
                           f"{info['ofo_skbs']} out-of-order skbs and "
                           f"{info['devmem_tokens']} devmem tokens (close it)")
        live = _core._net_config(self.machine)["skbs_live"]
        if live and not out:
            out.append(f"{live} skbs alive outside any socket")
        return out


class Socket:
    """A receiving TCP socket. ``local`` and ``remote`` are ``(ip string, port)``."""

    def __init__(self, stack, slot, family, laddr, raddr, lport, rport):
        self._stack = stack
        self._slot = slot
        self._key = (family, laddr, raddr, lport, rport)
        self._closed = False
        self.family = _socket.AF_INET if family == 4 else _socket.AF_INET6
        self.local = (str(ipaddress.ip_address(laddr)), lport)
        self.remote = (str(ipaddress.ip_address(raddr)), rport)

    def __repr__(self):
        return f"<Socket {self.local[0]}:{self.local[1]} <- {self.remote[0]}:{self.remote[1]}>"

    def _check(self):
        if self._closed:
            raise NetmemError(9, "socket is closed")

    def info(self):
        """tcp_info-like state: ``state``, ``rcv_nxt``, ``copied_seq``, ``rmem_alloc`` (and
        ``queued_truesize``, the truesize of the skbs queued, which it must equal), ``rcvbuf``,
        the window (``rcv_wnd``, ``rcv_wup``, ``rcv_ssthresh``, ``window_clamp``), autotuning
        (``rcv_rtt_us``, ``rcvq_space``), ``bytes_received``, ``segs_in``, queue lengths, ...;
        ``sack_blocks``, the receiver's ``tp->selective_acks`` (most recently touched first, at
        most 4), and ``dsack_block``, ``tp->duplicate_sack[0]`` while the last data segment set
        one (else None); and
        ``ack_sack_blocks``, the SACK option the next ACK would carry (D-SACK first, at most 4,
        3 beside timestamps)."""
        self._check()
        return _core._sk_info(self._stack.machine, self._slot)

    def recv(self, bufsize):
        """Models ``tcp_recvmsg()`` without flags on a non-blocking socket: up to ``bufsize``
        bytes in order; b"" at the end of the stream; ``NetmemError(EAGAIN)`` when nothing is
        queued yet; the socket's error (ECONNRESET after a RST) once the queued data is read."""
        self._check()
        if bufsize < 0:
            raise NetmemError(22, "recv: negative buffersize")
        return _core._sk_recv(self._stack.machine, self._slot, bufsize)

    def recv_into(self, buffer, nbytes=0):
        """``recv`` into ``buffer`` (writable and contiguous: a bytearray, a numpy ``uint8``
        array), as Python's ``socket.recv_into``: up to ``nbytes`` bytes (0: the buffer's
        length) at its start; returns the count, 0 at the end of the stream; raises as
        ``recv``. An application reading many sockets copies each byte once this way."""
        self._check()
        view = memoryview(buffer).cast("B")
        if not 0 <= nbytes <= len(view):
            raise NetmemError(22, f"recv_into: nbytes {nbytes} outside the {len(view)}-byte "
                                  "buffer")
        return _core._sk_recv_into(self._stack.machine, self._slot, view[:nbytes or len(view)])

    def recvmsg(self, bufsize, ancbufsize=0, flags=0):
        """``(data, ancdata, msg_flags, address)`` as Python's ``socket.recvmsg`` (address is
        None: a TCP socket does not fill msg_name). With ``MSG_SOCK_DEVMEM`` unreadable data
        comes as ``(SOL_SOCKET, SCM_DEVMEM_DMABUF, DmabufCmsg(...))`` items, each taking a
        token, and linear bytes of such skbs with an ``SCM_DEVMEM_LINEAR`` item; each item
        takes ``CMSG_SPACE(sizeof(struct dmabuf_cmsg))`` = 40 bytes of ``ancbufsize``
        (``recvmsg_devmem`` is the batch form). Without the flag, unreadable data is EFAULT.
        Other flags: EOPNOTSUPP (not modelled)."""
        self._check()
        if flags & ~MSG_SOCK_DEVMEM:
            raise NetmemError(95, f"recvmsg: flags {flags:#x} not supported by the model")
        if ancbufsize < 0:
            raise NetmemError(22, "recvmsg: negative ancbufsize")
        if not flags:
            return self.recv(bufsize), [], 0, None
        data, cmsgs = self.recvmsg_devmem(bufsize, ancbufsize)
        anc = [(SOL_SOCKET, int(c["cmsg_type"]),
                DmabufCmsg(frag_size=int(c["frag_size"])) if c["cmsg_type"] == SCM_DEVMEM_LINEAR
                else DmabufCmsg(int(c["frag_offset"]), int(c["frag_size"]),
                                int(c["frag_token"]), int(c["dmabuf_id"])))
               for c in cmsgs]
        return data, anc, 0, None

    def recvmsg_devmem(self, bufsize, ancbufsize):
        """Models ``tcp_recvmsg()`` with ``MSG_SOCK_DEVMEM`` (non-blocking), as a batch: returns
        ``(data, cmsgs)``, ``data`` the bytes copied (readable skbs, linear parts) and
        ``cmsgs`` a ``DMABUF_CMSG_DTYPE`` array. Up to ``bufsize`` bytes are copied or
        described (frag bytes count but take no room), up to ``ancbufsize // 40`` cmsgs; one
        call never mixes readable and unreadable skbs. ``(b"", empty)`` at the end of the
        stream; raises EAGAIN with nothing queued, ETOOSMALL (525) when not even the first cmsg
        fits, ENODEV for a net_iov that is not a dma-buf's. A ``bufsize`` of 0 still visits
        the first skb, as the kernel's do-while loop does: an unreadable one gets a cmsg for 0
        bytes, with a token."""
        self._check()
        if bufsize < 0 or ancbufsize < 0:
            raise NetmemError(22, "recvmsg: negative buffer size")
        data, cmsgs, _ = _core._sk_recvmsg_devmem(self._stack.machine, self._slot, bufsize,
                                                  ancbufsize)
        return data, cmsgs

    def setsockopt(self, level, optname, value):
        """``SO_DEVMEM_DONTNEED`` (the only option modelled): ``value`` is a list of
        ``DmabufToken`` (or an (n, 2) array of token_start, token_count), or the option's bytes
        (``struct dmabuf_token`` array, little-endian); returns the frags freed. An optlen that
        is not a multiple of 8, or more than 128 entries: EINVAL; at most 1024 tokens are
        looked at per call; unknown tokens are skipped. Each net_iov goes home with
        ``napi_pp_put_page()`` in the caller's context (process context unless in
        ``m.on_cpu(..., softirq=True)``: the kernel recycles directly only in softirq on the
        pool's NAPI CPU)."""
        self._check()
        if level != SOL_SOCKET or optname != SO_DEVMEM_DONTNEED:
            raise NetmemError(92, f"setsockopt: level {level}, option {optname} not modelled")
        if isinstance(value, bytes | bytearray | memoryview):
            value = bytes(value)
            if len(value) % 8:              # sock_devmem_dontneed(): optlen % sizeof(*tokens)
                raise NetmemError(22, f"SO_DEVMEM_DONTNEED: optlen {len(value)} is not a "
                                      "multiple of sizeof(struct dmabuf_token)")
            value = np.frombuffer(value, "<u4").astype(np.int64)
        tokens = np.asarray(value, dtype=np.int64) if len(value) else np.zeros(0, np.int64)
        if tokens.size % 2:
            raise NetmemError(22, "SO_DEVMEM_DONTNEED: optlen is not a multiple of "
                                  "sizeof(struct dmabuf_token)")
        tokens = tokens.reshape(-1, 2)
        if ((tokens < 0) | (tokens >= 1 << 32)).any():
            raise NetmemError(22, "SO_DEVMEM_DONTNEED: a token field is not a __u32")
        return _core._sk_dontneed(self._stack.machine, self._slot, tokens.astype(np.uint32))

    def read_all(self, bufsize=1 << 20):
        """Read to the end of the stream (or until nothing more is queued): the bytes."""
        out = []
        while True:
            try:
                data = self.recv(bufsize)
            except NetmemError as e:
                if e.errno == 11:
                    break
                raise
            if not data:
                break
            out.append(data)
        return b"".join(out)

    def close(self):
        """Models ``tcp_close()`` for the receive side: queued skbs are freed (their buffers go
        home), the socket leaves the table."""
        if self._closed:
            return
        _core._sk_close(self._stack.machine, self._slot)
        self._closed = True
        self._stack._socks.pop(self._slot, None)


class Receiver:
    """An application in C that reads every socket the stack woke: ncdevmem's ``do_server()``
    loop over one epoll instance that watches every socket (``ep_poll_callback()`` from
    ``tcp_data_queue()`` and ``tcp_reset()``), without a Python step per socket or per frag.
    It is the application of ``netmem-replay``.

    ``drain()`` reads each ready socket until EAGAIN with ``recvmsg`` of ``bufsize`` bytes. With
    ``dmabuf`` (a ``netmem.dmabuf.DmaBuf``, or its memory as ``(offsets, phys, lengths)``
    arrays in offset order) it reads with ``MSG_SOCK_DEVMEM`` and ``cmsgs`` cmsgs of control
    buffer, reads each SCM_DEVMEM_DMABUF frag through that memory, as a device-to-host copy
    would, and, once a socket is drained, gives its tokens back with ``SO_DEVMEM_DONTNEED``
    (sorted, consecutive ones merged, within MAX_DONTNEED_TOKENS and MAX_DONTNEED_FRAGS).
    ``dmabuf_id`` is the binding id its cmsgs must name. With ``validate=N`` every byte read is
    checked against ncdevmem's ``-v N`` pattern; with ``keep``, every byte is kept for
    ``kept()``. Call it in the application's context (``with m.on_cpu(cpu, softirq=False)``).

    With ``zcrx`` (``(IoUring, IoZcrxIfq)`` of ``netmem.zcrx``) it is iou-zcrx.c instead:
    RECV_ZC on each ready socket, each completion's bytes read through ``dmabuf`` (the area's
    memory, by area offset) and every buffer handed back through the ifq's refill ring.

    Departs from ncdevmem: tokens go back per socket per drain, not per recvmsg call; the
    streams' state lasts until ``close_all()``, which closes every socket (the process's exit).
    """

    def __init__(self, machine, *, dmabuf=None, dmabuf_id=0, bufsize=1 << 20, cmsgs=4000,
                 validate=None, keep=False, zcrx=None):
        from netmem.flows import ncdevmem_pattern
        if validate is not None and not (isinstance(validate, int) and validate >= 1):
            raise NetmemError(22, f"Receiver: validate={validate!r} is not a positive integer")
        if not (isinstance(bufsize, int) and 1 <= bufsize <= 1 << 30):
            raise NetmemError(22, f"Receiver: bufsize={bufsize!r} is not in 1 .. 1 GiB")
        if not (isinstance(cmsgs, int) and 1 <= cmsgs <= 1 << 20):
            raise NetmemError(22, f"Receiver: cmsgs={cmsgs!r} is not in 1 .. 1M")
        if zcrx is None and dmabuf is not None and not (isinstance(dmabuf_id, int)
                                                        and dmabuf_id >= 1):
            raise NetmemError(22, f"Receiver: dmabuf_id={dmabuf_id!r} is not a binding id")
        period = min(validate, 256) if validate else 0
        ring = ncdevmem_pattern(validate, bufsize + period) if validate else None
        mem = getattr(dmabuf, "scatterlist", dmabuf)
        self._rx = _core.CoreReceiver(machine, dmabuf is not None and zcrx is None, bufsize,
                                      cmsgs, mem, dmabuf_id, ring, period, keep)
        if zcrx is not None:
            self._rx._set_zcrx(*zcrx)

    @property
    def keep(self):
        """Whether the bytes read are kept (it can be turned off between drains)."""
        return self._rx.keep

    @keep.setter
    def keep(self, value):
        self._rx.keep = bool(value)

    def drain(self):
        """``epoll_wait()``, then every ready socket read, in the order they woke. Returns the
        sockets read."""
        return self._rx.drain()

    @property
    def counters(self):
        """``recvmsg-calls``, ``bytes``, ``dmabuf-frags``, ``linear-frags``,
        ``tokens-returned``, ``dontneed-calls``, ``dontneed-short`` (calls that freed fewer
        tokens than given), ``foreign-frags`` / ``foreign-id`` (cmsgs naming another dma-buf,
        the first id they named), ``read-faults`` (frags outside the memory),
        ``linear-mismatch`` (calls whose SCM_DEVMEM_LINEAR cmsgs do not add up to the bytes
        copied)."""
        return self._rx.counters()

    def close_all(self):
        """Every open socket's stream as numpy columns in slot order (``slot``, ``family``,
        ``laddr``/``raddr``, 16 bytes each, an IPv4 address in the first 4, ``lport``,
        ``rport``, ``pos`` bytes read, ``bad`` the first byte off the pattern or -1, ``eof``,
        ``err``); then every socket closed (``tcp_close()``) and the streams forgotten."""
        return self._rx.end_pass()

    def kept(self):
        """The bytes kept since the last call, as ``(data, slots, lengths)``: ``np.uint8`` in
        the order read, and the (socket slot, length) of each run of it."""
        return self._rx.take_kept()
