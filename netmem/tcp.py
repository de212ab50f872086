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

Departures from Linux are listed in ``docs/design.md`` (no checksums, no receive window or
buffer autotuning, no TIME_WAIT, no IP reassembly).
"""
import ipaddress
import socket as _socket

from netmem import _core
from netmem.errors import NetmemError

__all__ = ["Socket", "TcpStack"]


class TcpStack:
    """``m.tcp``: the sockets, the MIB counters (``/proc/net/snmp`` and ``netstat`` names),
    drop reasons and the stack's settings."""

    def __init__(self, machine):
        self.machine = machine
        self._socks = {}            # slot -> Socket

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
        """The socket with ``local`` and ``remote`` ``(ip, port)`` ends, or None."""
        for sk in self.sockets():
            if sk.local == _norm(local) and sk.remote == _norm(remote):
                return sk
        return None

    @property
    def mib(self):
        """TCP counters: ``Tcp:`` (InSegs, InErrs, OutRsts, PassiveOpens) and ``TcpExt:``
        (TCPOFOQueue, TCPOFOMerge, TCPOFODrop, TCPRcvCoalesce, ...) by their kernel names."""
        return _core._tcp_mib(self.machine)

    @property
    def ip_mib(self):
        """``Ip:`` counters of IPv4 receive (InReceives, InHdrErrors, InTruncatedPkts, ...)."""
        return _core._ip_mib(self.machine, False)

    @property
    def ip6_mib(self):
        """``Ip6`` counters of IPv6 receive, with the Ip6 prefix dropped."""
        return _core._ip_mib(self.machine, True)

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
        """sk_rcvbuf of new sockets (default tcp_rmem[2], 6 MiB; fixed, no autotuning)."""
        return _core._net_config(self.machine)["rcvbuf"]

    @rcvbuf.setter
    def rcvbuf(self, value):
        if not 0 < value < 1 << 40:
            raise NetmemError(22, f"rcvbuf: {value} out of range")
        _core._net_config(self.machine, rcvbuf=int(value))

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
            if info["rcv_queue_skbs"] or info["ofo_skbs"]:
                out.append(f"socket {sk} holds {info['rcv_queue_skbs']} queued and "
                           f"{info['ofo_skbs']} out-of-order skbs (close it)")
        live = _core._net_config(self.machine)["skbs_live"]
        if live and not out:
            out.append(f"{live} skbs alive outside any socket")
        return out


def _norm(end):
    ip, port = end
    return str(ipaddress.ip_address(ip)), int(port)


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
        """tcp_info-like state: ``state``, ``rcv_nxt``, ``copied_seq``, ``rmem_alloc``,
        ``bytes_received``, ``segs_in``, queue lengths, ..."""
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
        None: a TCP socket does not fill msg_name)."""
        self._check()
        if flags:
            raise NetmemError(95, f"recvmsg: flags {flags:#x} not supported")
        return self.recv(bufsize), [], 0, None

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
