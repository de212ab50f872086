"""Helpers of the RX-path tests: a packet trace built from scapy packets (the attributes of
``netmem.flows.PacketTrace``: ``arena`` uint8, ``offsets`` uint64, ``lengths`` uint32,
``timestamps`` uint64 ns), flow builders that make segments as a Linux sender does (DF set, the
IP ID incrementing by one per segment, ACK on every segment after the SYN), ``Drill`` (a
packetdrill script over one flow: segments in at virtual times, ACKs out), ``close_all``
(``netmem.testing.close_sockets``) and ``capture_with_holes`` (a generated capture missing
frames). The fixtures (``m``, ``make_nic``, ``nic``) come from the
netmem plugin and conftest.py.
"""
import ipaddress

import numpy as np
from scapy.layers.inet import IP, TCP
from scapy.layers.inet6 import IPv6, IPv6ExtHdrDestOpt
from scapy.layers.l2 import Dot1AD, Dot1Q, Ether
from scapy.packet import Raw

from netmem.flows import Flows, PacketTrace
from netmem.tcp import KERNEL_TCP_RMEM
from netmem.testing import close_sockets as close_all

MAC_SRC, MAC_DST = "02:00:00:00:00:01", "02:00:00:00:00:02"
MSS = 1448                          # a 1500 MTU with timestamps, as Linux senders cut


class Trace:
    """A packet trace over ``frames`` (bytes or scapy packets), ``gap_ns`` apart."""

    def __init__(self, frames, gap_ns=1000):
        frames = [bytes(f) for f in frames]
        lens = [len(f) for f in frames]
        self.frames = frames
        self.arena = np.frombuffer(b"".join(frames) or b"\0", dtype=np.uint8)
        self.lengths = np.array(lens, dtype=np.uint32)
        self.offsets = np.concatenate([[0], np.cumsum(lens)[:-1]]).astype(np.uint64) \
            if lens else np.zeros(0, dtype=np.uint64)
        self.timestamps = np.arange(len(frames), dtype=np.uint64) * gap_ns

    def __len__(self):
        return len(self.frames)


def payload(n, seed=0):
    """``n`` bytes that differ from position to position (a misplaced byte shows)."""
    return bytes((i * 7 + seed + (i >> 8)) & 0xff for i in range(n))


class Flow:
    """One direction of a TCP connection, as its sender emits it: ``syn()``, ``data()``,
    ``segments()``, ``fin()``, ``rst()`` give frames (bytes) and advance the sequence number and
    the IP ID the way a Linux sender does (DF, ID + 1 per segment)."""

    def __init__(self, src="10.0.0.1", dst="10.0.0.2", sport=40000, dport=5201, isn=1000,
                 ip_id=0x100, vlan=None, tsopt=False, mac_src=MAC_SRC):
        self.src, self.dst, self.sport, self.dport = src, dst, sport, dport
        self.v6 = ipaddress.ip_address(src).version == 6
        self.isn = isn
        self.seq = isn
        self.ip_id = ip_id
        self.vlan = vlan
        self.tsval = 1 if tsopt else None
        self.mac_src = mac_src

    @property
    def local(self):
        return (self.dst, self.dport)

    @property
    def remote(self):
        return (self.src, self.sport)

    def frame(self, flags, seq, data=b"", options=(), ip_id=None, df=True, ttl=64, tos=0,
              ext=None, pad_to=0, tsval=None, ip_options=None, flowlabel=0, ack=1,
              mac_src=None, window=502, reserved=0):
        """One frame with the flow's addresses; ``ip_id`` None takes the next ID; ``tsval``
        overrides the flow's timestamp; ``ext`` is an IPv6 extension header; ``pad_to`` pads
        the frame with zeros (Ethernet padding); ``reserved`` sets the TCP header's reserved
        bits (AE is the flag "N")."""
        if ip_id is None:
            ip_id = self.ip_id & 0xffff
            self.ip_id += 1
        opts = list(options)
        ts = self.tsval if tsval is None else tsval
        if ts is not None and "S" not in flags:
            opts = [("NOP", None), ("NOP", None), ("Timestamp", (ts, 1)), *opts]
        tcp = TCP(sport=self.sport, dport=self.dport, flags=flags, seq=seq & 0xffffffff,
                  ack=ack if "A" in flags else 0, window=window, reserved=reserved,
                  options=opts)
        if self.v6:
            l3 = IPv6(src=self.src, dst=self.dst, hlim=ttl, tc=tos, fl=flowlabel)
            if ext is not None:
                l3 = l3 / ext
        else:
            l3 = IP(src=self.src, dst=self.dst, id=ip_id, flags="DF" if df else 0, ttl=ttl,
                    tos=tos, options=ip_options or [])
        eth = Ether(src=mac_src or self.mac_src, dst=MAC_DST)
        if isinstance(self.vlan, tuple):                  # QinQ: (outer, inner)
            eth = eth / Dot1AD(vlan=self.vlan[0]) / Dot1Q(vlan=self.vlan[1])
        elif self.vlan is not None:
            eth = eth / Dot1Q(vlan=self.vlan)
        pkt = eth / l3 / tcp
        if data:
            pkt = pkt / Raw(data)
        out = bytes(pkt)
        return out + b"\0" * max(0, pad_to - len(out))

    def syn(self, sack=False):
        opts = [("MSS", MSS)] + ([("SAckOK", b"")] if sack else [])
        f = self.frame("S", self.seq, options=opts)
        self.seq += 1
        return f

    def data(self, data, flags="A", seq=None, **kw):
        """One segment; without ``seq`` it is the next in order and the flow advances."""
        if seq is None:
            seq = self.seq
            self.seq += len(data) + ("F" in flags)
        return self.frame(flags, seq, data, **kw)

    def segments(self, data, mss=MSS, flags="A", last_flags=None, **kw):
        """``data`` cut in MSS-sized segments; ``last_flags`` for the last one (e.g. "PA")."""
        chunks = [data[i:i + mss] for i in range(0, len(data), mss)]
        return [self.data(c, flags=last_flags if last_flags and i == len(chunks) - 1 else flags,
                          **kw)
                for i, c in enumerate(chunks)]

    def fin(self, data=b""):
        return self.data(data, flags="FA")

    def rst(self, seq=None):
        return self.frame("R", self.seq if seq is None else seq)


def receive(nic, frames, **kw):
    """Run ``frames`` through ``nic``; returns the trace."""
    tr = Trace(frames)
    nic.receive(tr, **kw)
    return tr


__all__ = ["MSS", "Dot1Q", "Drill", "Ether", "Flow", "IPv6ExtHdrDestOpt", "Trace", "close_all",
           "payload", "receive"]


class Drill:
    """A packetdrill script over one flow: ``syn()`` opens it, ``seg(t_ms, i)`` is segment i
    (``size`` bytes, ``MSS`` unless told) arriving at ``t_ms`` after the start (the virtual
    clock moves there first), ``acks()`` the ACKs sent since the last call as
    ``(t_ms, ack, win, sack)`` with sequence numbers as segment counts (of ``size``) from the
    first data byte, ``read(n)`` the application's ``read(4, ..., n)``. The machine takes the
    kernel's ``tcp_rmem`` (the model's default starts sockets at tcp_rmem[2])."""

    def __init__(self, m, nic, wscale=True, ts=True, sack=True, size=MSS,
                 rmem=KERNEL_TCP_RMEM):
        self.m, self.nic, self.f, self.size = m, nic, Flow(tsopt=ts), size
        m.tcp.rmem = rmem               # the kernel's net.ipv4.tcp_rmem, as packetdrill runs
        self.base = self.f.isn + 1
        self.opts = [("MSS", MSS)] + ([("SAckOK", b"")] if sack else []) + (
            [("Timestamp", (1, 0))] if ts else []) + ([("WScale", 7)] if wscale else [])
        m.advance(1 - (m.clock_ns % 10**9) / 1e9)       # start on a whole second
        self.t0 = m.clock_ns

    def at(self, t_ms, frames):
        target = self.t0 + round(t_ms * 1e6)
        if target > self.m.clock_ns:
            self.m.advance((target - self.m.clock_ns) / 1e9)
        self.nic.receive(Trace(frames, gap_ns=0))

    def syn(self, t_ms=0):
        self.at(t_ms, [self.f.frame("S", self.f.isn, options=self.opts)])
        self.f.seq += 1
        self.sk = self.m.tcp.lookup(self.f.local, self.f.remote)
        return self.sk

    def seg(self, t_ms, i, flags="PA", size=None, n=1):
        """Segment ``i`` (``n`` segments' worth of bytes in one, as a GRO packet would be)."""
        size = (self.size if size is None else size) * n
        self.at(t_ms, [self.f.data(payload(size, seed=i), flags=flags,
                                   seq=self.base + i * self.size)])

    def burst(self, t_ms, i, count, flags="A"):
        """Segments ``i`` .. ``i + count - 1`` in one poll, which GRO merges into one skb (a
        packetdrill packet longer than the MTU)."""
        self.at(t_ms, [self.f.data(payload(self.size, seed=k), flags=flags,
                                   seq=self.base + k * self.size) for k in range(i, i + count)])

    def ack(self, t_ms, i=0):
        """A pure ACK whose seq is segment ``i``'s."""
        self.at(t_ms, [self.f.frame("A", self.base + i * self.size)])

    def read(self, nbytes):
        return len(self.sk.recv(nbytes))

    def acks(self, until_ms=None):
        if until_ms is not None:
            self.at(until_ms, [])
        out = []
        for a in self.m.tcp.acks():
            sack = [((int(x) - self.base) / self.size, (int(y) - self.base) / self.size)
                    for x, y in a["sack"][:a["nr_sack"]]]
            out.append(((int(a["t_ns"]) - self.t0) / 1e6,
                        (int(a["ack"]) - self.base) / self.size,
                        int(a["win"]), sack))
        return out


def capture_with_holes(f, path, every=23):
    """Write the generated flows ``f`` (``netmem.flows.Flows``) as a capture at ``path``
    without every ``every``-th data frame: holes that no frame fills, as in a capture that
    missed frames the receiver got (the peer's ACKs cover them, so tshark prints its
    ``[N bytes missing in capture file]`` marker). Returns the trace written."""
    t = f.trace
    data = np.flatnonzero(t.lengths > 100)          # handshakes and FINs are 60 to 94 bytes
    keep = np.ones(len(t), bool)
    keep[data[every // 2::every]] = False
    trace = PacketTrace.from_frames([t.frame(i) for i in np.flatnonzero(keep)],
                                    t.timestamps[keep])
    Flows(f.params, trace, f.connections).write_pcap(path)
    return trace
