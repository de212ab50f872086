"""Flows: TCP traffic for the RX path, generated or read from a capture, held as a ``PacketTrace``
(``netmem.packet_trace``, whose public names are re-exported here).

``generate()`` builds N TCP connections with handshakes, data and FINs, optional VLAN tag, the
ncdevmem validation pattern, and seeded impairments (loss with retransmission, reordering,
duplication, overlapping retransmits, sequence wrap); it returns the trace and the byte streams
a correct receiver must reassemble. ``write_generated()`` writes the same capture a slice of
frames at a time, so it may be larger than memory, with its index as the trace cache
(``cached_trace()``). scapy is imported only inside the pcap writers.
"""
import dataclasses
import errno
import heapq
import os
import struct
from decimal import Decimal

import numpy as np

from netmem.capture import _MAX_SNAPLEN, STREAM_WINDOW, huge_zeros
from netmem.errors import NetmemError
from netmem.packet_trace import (
    DLT_EN10MB,
    DLT_LINUX_SLL,
    DLT_LINUX_SLL2,
    DLT_RAW,
    ETH_HLEN,
    ETH_P_8021Q,
    ETH_P_IP,
    ETH_P_IPV6,
    ETH_ZLEN,
    IPPROTO_TCP,
    SKIP_REASONS,
    TCPHDR_ACK,
    TCPHDR_FIN,
    TCPHDR_PSH,
    TCPHDR_RST,
    TCPHDR_SYN,
    VLAN_HLEN,
    PacketTrace,
    classify_frame,
)

__all__ = [
    "DLT_EN10MB", "DLT_LINUX_SLL", "DLT_LINUX_SLL2", "DLT_RAW", "SKIP_REASONS",
    "TCPHDR_ACK", "TCPHDR_FIN", "TCPHDR_PSH", "TCPHDR_RST", "TCPHDR_SYN",
    "Connection", "FlowParams", "Flows", "PacketTrace", "cached_trace", "classify_frame",
    "generate", "ncdevmem_pattern", "write_generated",
]


def _err(code, msg):
    return NetmemError(code, msg)


# --------------------------------------------------------------------------------------------
# The generator.

_SYN, _SYNACK, _ACK, _DATA, _FIN = range(5)
_TCP_WINDOW = 65535     # advertised on every segment; no window scaling option
_TCPOLEN_MSS = 4        # the MSS option, on SYN and SYN-ACK only
_IP_DF = 0x4000
_TTL = 64               # sysctl_ip_default_ttl / hop limit
_WIRE_OVERHEAD = 24     # preamble 8 + FCS 4 + inter-frame gap 12 bytes, for the virtual clock
_EPHEMERAL = 28232      # ip_local_port_range 32768..60999: client ports per client address
_SERVER_PORT = 5201     # ncdevmem's usual port
_MAC_SERVER = bytes.fromhex("020000000001")  # locally administered
_MAC_CLIENT = bytes.fromhex("020000000002")


@dataclasses.dataclass(frozen=True)
class FlowParams:
    """What ``generate()`` builds; every field is part of the cache key of ``write_pcap``.

    :ivar connections: number of TCP connections
    :ivar family: ``"ipv4"``, ``"ipv6"`` or ``"both"`` (even connections IPv4, odd IPv6)
    :ivar vlan: 802.1Q VLAN id (1..4094) on every frame, or None
    :ivar mtu: the L3 MTU (the VLAN tag does not count against it)
    :ivar mss: segment payload size; default ``mtu - 40`` (IPv4) or ``mtu - 60`` (IPv6), and
        advertised in the SYN and SYN-ACK MSS option
    :ivar payload: payload bytes per connection and direction
    :ivar bidirectional: the server sends ``payload`` bytes too (otherwise only the client)
    :ivar validate: the ncdevmem ``-v N`` validation pattern instead of random bytes: bytes
        1..N-1 then ``'\\n'``, repeating, continuous over each direction's stream (ncdevmem's
        seed is an ``unsigned char``, so an N above 255 repeats with period 256)
    :ivar interleave: ``"round-robin"`` (one packet per connection in turn) or ``"random"``
        (from the seed); also how the two directions of a bidirectional connection mix
    :ivar seed: the seed of everything random: payload, ISNs, IP ids, impairments, interleaving
    :ivar loss: rate of data segments lost and retransmitted 1 to 7 segments later
    :ivar reorder: rate of data segments delayed past the next 1 to 3
    :ivar duplicate: rate of data segments sent twice (the copy up to 3 segments later)
    :ivar overlap: rate of overlapping retransmits: after segment i, a segment from the second
        half of segment i-1 into the first half of segment i
    :ivar isn: every side's initial sequence number (e.g. ``2**32 - 1000`` wraps each stream
        after its first 999 bytes); None: random per side from the seed
    :ivar link_gbps: wire speed of the virtual clock: frame i+1 arrives when frame i has been
        serialised (with preamble, FCS and inter-frame gap)
    """

    connections: int = 1
    family: str = "ipv4"
    vlan: int | None = None
    mtu: int = 1500
    mss: int | None = None
    payload: int = 65536
    bidirectional: bool = False
    validate: int | None = None
    interleave: str = "round-robin"
    seed: int = 0
    loss: float = 0.0
    reorder: float = 0.0
    duplicate: float = 0.0
    overlap: float = 0.0
    isn: int | None = None
    link_gbps: float = 100.0

    def __post_init__(self):
        def bad(msg):
            raise _err(errno.EINVAL, f"generate: {msg}")

        def is_int(v):
            return isinstance(v, int | np.integer) and not isinstance(v, bool)

        if not is_int(self.connections) or not 1 <= self.connections <= 252 * _EPHEMERAL:
            bad(f"connections {self.connections!r} not in 1..{252 * _EPHEMERAL}")
        if self.family not in ("ipv4", "ipv6", "both"):
            bad(f"family {self.family!r} is not 'ipv4', 'ipv6' or 'both'")
        if self.vlan is not None and (not is_int(self.vlan) or not 1 <= self.vlan <= 4094):
            bad(f"vlan {self.vlan!r} not in 1..4094")
        min_mtu = 68 if self.family == "ipv4" else 1280  # IPV4_MIN_MTU, IPV6_MIN_MTU
        if not is_int(self.mtu) or not min_mtu <= self.mtu <= 65535:
            bad(f"mtu {self.mtu!r} not in {min_mtu}..65535")
        if self.mss is not None:
            top = self.mtu - (40 if self.family == "ipv4" else 60)
            if not is_int(self.mss) or not 1 <= self.mss <= top:
                bad(f"mss {self.mss!r} not in 1..{top} (mtu {self.mtu} less the IP and TCP "
                    f"headers)")
        if not is_int(self.payload) or self.payload < 0:
            bad(f"payload {self.payload!r} must be an int >= 0")
        if self.validate is not None and (not is_int(self.validate) or self.validate < 2):
            bad(f"validate {self.validate!r} must be an int >= 2 (ncdevmem -v N)")
        if self.interleave not in ("round-robin", "random"):
            bad(f"interleave {self.interleave!r} is not 'round-robin' or 'random'")
        if not is_int(self.seed) or self.seed < 0:
            bad(f"seed {self.seed!r} must be an int >= 0")
        for name in ("loss", "reorder", "duplicate", "overlap"):
            rate = getattr(self, name)
            if not isinstance(rate, float | int) or not 0.0 <= rate < 1.0:
                bad(f"{name} rate {rate!r} not in [0, 1)")
        if self.isn is not None and (not is_int(self.isn) or not 0 <= self.isn < 1 << 32):
            bad(f"isn {self.isn!r} not in 0..2**32-1")
        if not isinstance(self.link_gbps, float | int) or not self.link_gbps > 0:
            bad(f"link_gbps {self.link_gbps!r} must be > 0")

    def mss_for(self, family):
        """The MSS of a connection of ``family`` (4 or 6)."""
        if self.mss is not None:
            return self.mss
        return self.mtu - (40 if family == 4 else 60)

    def key(self):
        """The parameters as a plain dict (the cache key)."""
        return {k: (v.item() if isinstance(v, np.generic) else v)
                for k, v in dataclasses.asdict(self).items()}


@dataclasses.dataclass
class Connection:
    """One generated TCP connection: its 4-tuple and the bytes each side sent.

    ``client`` and ``server`` are (address, port); the client sends the SYN. ``to_server`` is
    the byte stream a correct receiver on the server reassembles; ``to_client`` the server's
    (empty unless ``bidirectional``)."""

    index: int
    family: int
    client: tuple
    server: tuple
    vlan: int | None
    client_isn: int
    server_isn: int
    to_server: bytes
    to_client: bytes


@dataclasses.dataclass
class Flows:
    """What ``generate()`` returns: the parameters, the trace and its connections."""

    params: FlowParams
    trace: PacketTrace
    connections: list

    def write_pcap(self, path, pcapng=False):
        """Write the trace as a pcap (ns timestamps) or pcapng (``if_tsresol`` 9) file with
        scapy, and the trace cache ``path + ".npz"`` keyed by the parameters (see
        ``cached_trace``): the capture's index, not a second copy of its frames."""
        path = os.fspath(path)
        _write_capture(self.trace, path, pcapng)
        indexed = PacketTrace.from_pcap(path, stream=True)
        indexed._save(path + ".npz", _cache_key(self.params, pcapng))


def cached_trace(path, pcapng=False, params=None, **kwargs):
    """The trace of ``path`` as ``Flows.write_pcap(path, pcapng)`` cached it (``path +
    ".npz"``, the capture's index: the trace is streamed from ``path``), for these parameters
    (``params``, or a ``FlowParams(**kwargs)``); None otherwise. So a second run with the same
    parameters reuses the capture instead of generating it again (``netmem-flows`` does); a
    capture changed since it was indexed (size, modification time, its first or last MiB), a
    cache of other parameters or written with another numpy is not reused."""
    path = os.fspath(path)
    params = params if params is not None else FlowParams(**kwargs)
    if not (os.path.isfile(path) and os.path.isfile(path + ".npz")):
        return None
    try:
        trace, meta = PacketTrace._load(path + ".npz")
    except NetmemError:
        return None
    if not trace.streamed or trace._map.path != os.path.abspath(path):
        return None
    return trace if meta == _cache_key(params, pcapng) else None


def _cache_key(params, pcapng):
    # numpy's version: a release may change what Generator methods draw from the same seed.
    return {"params": params.key(), "pcapng": bool(pcapng), "numpy": np.__version__}


def _write_capture(trace, path, pcapng):
    """The frames of ``trace`` to ``path`` through scapy's raw writers (bytes, not packets)."""
    with _CaptureWriter(path, pcapng) as w:
        w.write(trace)


class _HugeChunkFile:
    """A file written in whole, aligned 2 MiB pieces (the rest at ``close()``), so that the
    page cache holds it in 2 MiB folios (ext4 and XFS with large folios, Linux 6.x): a
    streamed replay maps each with one fault and one TLB entry (0.8x its time,
    docs/benchmarks.md). Written a few KiB at a time (scapy's buffer), a capture sits in small
    folios that the replay faults back in a page at a time on every loop. ``flush()`` keeps
    what is short of a piece: nothing reads the file before ``close()``."""

    PIECE = 2 << 20

    def __init__(self, path):
        self.f = open(path, "wb", buffering=0)
        self.buf = bytearray()

    def write(self, b):
        self.buf += b
        if len(self.buf) >= 2 * self.PIECE:
            n = len(self.buf) - len(self.buf) % self.PIECE
            self._write(memoryview(bytes(self.buf[:n])))
            del self.buf[:n]
        return len(b)

    def _write(self, view):
        while view:
            view = view[self.f.write(view):]

    def flush(self):
        pass

    def fileno(self):
        return self.f.fileno()

    def close(self):
        if not self.f.closed:
            self._write(memoryview(bytes(self.buf)))
            self.buf = bytearray()
            self.f.close()


class _CaptureWriter:
    """A pcap (ns timestamps) or pcapng (``if_tsresol`` 9) file written through scapy's raw
    writers, a trace at a time (bytes, not packets)."""

    def __init__(self, path, pcapng):
        from scapy.utils import RawPcapNgWriter, RawPcapWriter

        class _NsPcapNgWriter(RawPcapNgWriter):
            """scapy's pcapng writer with ns timestamps: its one IDB carries ``if_tsresol`` =
            9 (scapy writes none, so µs)."""

            def __init__(self, filename):
                super().__init__(filename)
                self.tsresol = 1_000_000_000

            def _write_block_idb(self, linktype, ifname=None):
                opts = struct.pack("<HHB3x", 9, 1, 9) + struct.pack("<HH", 0, 0)
                body = struct.pack("<HHI", linktype, 0, _MAX_SNAPLEN)
                self.f.write(self.build_block(struct.pack("<I", 1), body, options=opts))

        self.pcapng = pcapng
        self.w = _NsPcapNgWriter(path) if pcapng else RawPcapWriter(
            path, linktype=DLT_EN10MB, nano=True, snaplen=_MAX_SNAPLEN)
        self.w.f.close()                    # scapy's file, 4 KiB buffered: written again
        self.w.f = _HugeChunkFile(path)
        self.w.linktype = DLT_EN10MB
        self.w.write_header(None)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.w.close()

    def write(self, trace):
        w, arena = self.w, trace.arena
        for o, n, t in zip(trace.offsets.tolist(), trace.lengths.tolist(),
                           trace.timestamps.tolist(), strict=True):
            raw = arena[o:o + n].tobytes()
            if self.pcapng:  # seconds as a Decimal: exact in ns
                w.write_packet(raw, sec=Decimal(t) / 1_000_000_000)
            else:
                w.write_packet(raw, sec=t // 1_000_000_000, usec=t % 1_000_000_000)


def ncdevmem_pattern(n, length, start=0):
    """ncdevmem's ``validate_buffer()`` expectation for ``-v n``, ``length`` bytes from stream
    byte ``start`` (``np.uint8``): its seed runs 1, 2, ..., N-1, 0 (an ``unsigned char``, so at
    most 256 values), and a seed of 0 is expected as ``'\\n'``. One period is computed and
    repeated, so a long pattern costs its length in bytes, no more."""
    period = n if n <= 256 else 256
    seeds = (np.arange(start, start + min(length, period), dtype=np.int64) + 1) % period
    return np.resize(np.where(seeds == 0, 10, seeds).astype(np.uint8), length)


def _segments(length, mss):
    starts = np.arange(0, length, mss, dtype=np.int64)
    return starts, np.minimum(starts + mss, length)


def _impair(starts, ends, p, rng):
    """The order a sender emits its segments in, with the impairments of ``p``: (starts, ends)
    of each emission (retransmits and duplicates included)."""
    k = len(starts)
    if not (p.loss or p.reorder or p.duplicate or p.overlap) or k == 0:
        return starts, ends
    u = rng.random((k, 4)).tolist()
    delay = rng.integers(1, 8, size=(k, 2)).tolist()
    cut = rng.random((k, 2)).tolist()
    st, en = starts.tolist(), ends.tolist()
    out_s, out_e, pending = [], [], []  # pending: (due index, order, start, end)
    for i in range(k):
        s, e = st[i], en[i]
        if u[i][0] < p.loss:  # lost: retransmitted after 1..7 more segments
            pending.append((i + delay[i][0], len(pending), s, e))
        else:
            out_s.append(s)
            out_e.append(e)
            if u[i][1] < p.duplicate:  # a copy, now or up to 3 segments later
                pending.append((i + delay[i][1] // 2, len(pending), s, e))
        if u[i][2] < p.overlap and i > 0:
            la, lb = en[i - 1] - st[i - 1], e - s
            if la >= 2 and lb >= 2:  # second half of segment i-1 into the first half of i
                a = st[i - 1] + (la + 1) // 2 + int(cut[i][0] * (la // 2))
                b = s + 1 + int(cut[i][1] * (lb // 2))
                out_s.append(min(a, en[i - 1] - 1))
                out_e.append(min(b, s + lb // 2))
        if pending:
            due = sorted(x for x in pending if x[0] <= i)
            if due:
                pending = [x for x in pending if x[0] > i]
                out_s += [x[2] for x in due]
                out_e += [x[3] for x in due]
    for x in sorted(pending):
        out_s.append(x[2])
        out_e.append(x[3])
    out_s = np.array(out_s, np.int64)
    out_e = np.array(out_e, np.int64)
    if p.reorder:  # delay a segment past the next 1..3 emissions
        m = len(out_s)
        late = rng.random(m) < p.reorder
        key = np.arange(m) + np.where(late, rng.integers(1, 4, size=m) + 0.5, 0.0)
        order = np.argsort(key, kind="stable")
        out_s, out_e = out_s[order], out_e[order]
    return out_s, out_e


def _interleave(counts, mode, rng):
    """Indices into the concatenation of sequences of these lengths, in the order they are
    sent: round robin (one of each in turn) or a random interleaving; each sequence keeps its
    own order."""
    counts = np.asarray(counts, np.int64)
    labels = np.repeat(np.arange(len(counts)), counts)
    if mode == "random":
        at = np.argsort(rng.permutation(labels), kind="stable")
        out = np.empty(len(labels), np.int64)
        out[at] = np.arange(len(labels))
        return out
    rank = np.arange(len(labels)) - np.repeat(np.cumsum(counts) - counts, counts)
    return np.lexsort((labels, rank))


def _address(family, host):
    """Documentation addresses: 192.0.2.host (RFC 5737), 2001:db8::host (RFC 3849)."""
    if family == 4:
        return f"192.0.2.{host}", bytes((192, 0, 2, host))
    return f"2001:db8::{host:x}", bytes.fromhex("20010db8" + "00" * 10) + host.to_bytes(2, "big")


def _pseudo_sum(src, dst):
    words = np.frombuffer(src + dst, ">u2")
    return int(words.sum(dtype=np.uint64)) + IPPROTO_TCP


def generate(params=None, **kwargs):
    """N TCP connections as a ``Flows``: its ``PacketTrace`` and each connection's streams.

    ``generate(connections=4, family="both", payload=1 << 20, loss=0.01, seed=7)``, or
    ``generate(FlowParams(...))``; the fields of ``FlowParams`` say what each does. Each
    connection: SYN (MSS option), SYN-ACK (MSS option), ACK, data segments of at most the MSS
    (ACK set, PSH on the one ending the stream only, so GRO can merge the rest), a FIN from
    each side that sent data. Clients are 192.0.2.2.. / 2001:db8::2.. from port 32768 up (the
    ephemeral range), the server 192.0.2.1 / 2001:db8::1 port 5201. Frames are built with
    ``struct`` and numpy (the tests check them against scapy's), padded to 60 bytes, IPv4 with
    DF and an incrementing id, checksums correct. Timestamps are virtual: 0 for the first
    frame, then each frame's wire time at ``link_gbps``. The same parameters give the same
    bytes with the same numpy.
    """
    if params is None:
        params = FlowParams(**kwargs)
    elif kwargs:
        raise _err(errno.EINVAL, "generate: give a FlowParams or keyword arguments, not both")
    plan = _Plan(params, materialize=True)
    trace = _FrameBuilder(plan).build(0, plan.count)
    return Flows(params, trace, plan.conns)


def write_generated(path, params=None, pcapng=False, slice_frames=1 << 16,
                    window=STREAM_WINDOW, **kwargs):
    """What ``generate(params).write_pcap(path, pcapng)`` writes, the same bytes, without the
    trace in memory: the packets are planned (about 50 bytes each: connection, direction,
    kind, stream range), then built, written and dropped ``slice_frames`` at a time, the
    payload computed for each slice where it is needed (the seed's raw words are found with
    ``PCG64.advance()``, the pattern is one stream long). So a capture of any size is
    written in memory bounded by its packet count and one slice. Returns the trace, streamed
    from the capture written with ``window`` (its index is the cache ``path + ".npz"``)."""
    if params is None:
        params = FlowParams(**kwargs)
    elif kwargs:
        raise _err(errno.EINVAL, "write_generated: give a FlowParams or keyword arguments, "
                                 "not both")
    if not isinstance(slice_frames, int) or slice_frames < 1:
        raise _err(errno.EINVAL, f"write_generated: slice_frames {slice_frames!r} must be an "
                                 f"int >= 1")
    path = os.fspath(path)
    plan = _Plan(params, materialize=False)
    builder = _FrameBuilder(plan)
    with _CaptureWriter(path, pcapng) as w:
        for a in range(0, plan.count, slice_frames):
            w.write(builder.build(a, min(a + slice_frames, plan.count)))
    trace = PacketTrace.from_pcap(path, stream=True, window=window)
    trace._save(path + ".npz", _cache_key(params, pcapng))
    return trace


class _Payload:
    """The payload of stream ``i`` (connection ``i // ndir``, direction ``i % ndir``): with
    ``validate``, ncdevmem's pattern (the same for every stream); else stream ``i`` is bytes
    ``[i * payload, (i + 1) * payload)`` of the seed's raw 64-bit words drawn after the ISNs
    and IP ids (the bit generator's raw words: stable across numpy versions, and 17 times
    faster than ``Generator.bytes()``). The words are not drawn here: the generator is
    advanced past them (its buffered 32-bit half kept, which ``advance()`` resets), and
    ``read()`` draws the ones a range needs from a copy of the state before them."""

    def __init__(self, p, rng, count):
        self.length = p.payload
        self.pattern = None if p.validate is None else \
            ncdevmem_pattern(p.validate, p.payload).tobytes()
        if self.pattern is None:
            bg = rng.bit_generator
            self.state = bg.state
            bg.advance((self.length * count + 7) // 8)
            st = bg.state
            st["has_uint32"], st["uinteger"] = self.state["has_uint32"], self.state["uinteger"]
            bg.state = st

    def read(self, i, lo, hi):
        """Bytes ``[lo, hi)`` of stream ``i``."""
        if self.pattern is not None:
            return self.pattern[lo:hi]
        a, b = i * self.length + lo, i * self.length + hi
        bg = np.random.PCG64()
        bg.state = self.state
        bg.advance(a // 8)
        words = bg.random_raw((b - a // 8 * 8 + 7) // 8).astype("<u8", copy=False)
        return words.view(np.uint8)[a % 8:a % 8 + hi - lo].tobytes()


class _Plan:
    """What ``generate()`` draws from the seed, in its order: ISNs, IP ids, the payload, each
    connection's impairments and the interleaving; the packets as arrays (``conn_of``,
    ``dirs``, ``kinds``, ``starts``, ``ends``) in the order they are sent. With
    ``materialize``, each ``Connection`` carries its streams' bytes (``generate()``); else
    they are empty and ``payload`` reads them where needed (``write_generated()``)."""

    def __init__(self, p, materialize):
        rng = np.random.default_rng(p.seed)
        nconn = p.connections
        fams = np.full(nconn, 6 if p.family == "ipv6" else 4, np.int64)
        if p.family == "both":
            fams[1::2] = 6
        isns = (rng.integers(0, 1 << 32, size=(nconn, 2), dtype=np.uint64) if p.isn is None
                else np.full((nconn, 2), p.isn, np.uint64))
        self.ipids = rng.integers(0, 1 << 16, size=(nconn, 2)).tolist()
        length = p.payload
        self.ndir = ndir = 2 if p.bidirectional else 1
        self.payload = _Payload(p, rng, nconn * ndir)

        def stream(i):
            return self.payload.read(i, 0, length) if materialize else b""

        conns, raw_addrs, pk = [], [], []  # pk: per connection (dirs, kinds, starts, ends)
        for c in range(nconn):
            fam = int(fams[c])
            mss = p.mss_for(fam)
            host, port = 2 + c // _EPHEMERAL, 32768 + c % _EPHEMERAL
            caddr, craw = _address(fam, host)
            saddr, sraw = _address(fam, 1)
            raw_addrs.append((craw, sraw))
            to_client = stream(c * ndir + 1) if ndir == 2 else b""
            conns.append(Connection(c, fam, (caddr, port), (saddr, _SERVER_PORT), p.vlan,
                                    int(isns[c, 0]), int(isns[c, 1]), stream(c * ndir),
                                    to_client))
            per_dir = [_impair(*_segments(length, mss), p, rng) for _ in range(ndir)]
            order = _interleave([len(s) for s, _ in per_dir], p.interleave, rng)
            d_dirs = np.concatenate([np.full(len(s), d, np.int64) for d, (s, _) in
                                     enumerate(per_dir)])[order]
            d_st = np.concatenate([s for s, _ in per_dir])[order]
            d_en = np.concatenate([e for _, e in per_dir])[order]
            fin_dirs = np.arange(ndir)
            pk.append((np.concatenate([[0, 1, 0], d_dirs, fin_dirs]),
                       np.concatenate([[_SYN, _SYNACK, _ACK], np.full(len(d_st), _DATA),
                                       np.full(ndir, _FIN)]),
                       np.concatenate([[0, 0, 0], d_st, np.full(ndir, length)]),
                       np.concatenate([[0, 0, 0], d_en, np.full(ndir, length)])))
        order = _interleave([len(x[0]) for x in pk], p.interleave, rng)
        self.conn_of = np.repeat(np.arange(nconn), [len(x[0]) for x in pk])[order]
        self.dirs, self.kinds, self.starts, self.ends = (
            np.concatenate([x[i] for x in pk])[order] for i in range(4))
        self.params, self.conns, self.raw_addrs = p, conns, raw_addrs
        self.materialized = materialize
        self.count = len(self.conn_of)


class _FrameBuilder:
    """The frames of a ``_Plan``'s packets, a slice at a time, in order: headers and payload
    written per packet with ``struct`` into one arena (frames at even offsets), then every IPv4
    and TCP checksum computed at once with numpy. What carries from one slice to the next (the
    receivers' ``rcv_nxt`` and out-of-order segments, the IP ids, the clock) lives here, so
    the slices add up to the frames of one build of the whole plan."""

    def __init__(self, plan):
        p = self.p = plan.params
        self.plan = plan
        # Per (connection, direction): the header bytes that never change, the pseudo-header.
        self.tmpl, self.pseudo, self.isn = {}, {}, {}
        for c, (caddr, saddr) in zip(plan.conns, plan.raw_addrs, strict=True):
            for d, (src, dst, smac, dmac, sport, dport) in enumerate((
                    (caddr, saddr, _MAC_CLIENT, _MAC_SERVER, c.client[1], c.server[1]),
                    (saddr, caddr, _MAC_SERVER, _MAC_CLIENT, c.server[1], c.client[1]))):
                eth = dmac + smac
                if p.vlan is not None:
                    eth += struct.pack("!HH", ETH_P_8021Q, p.vlan)
                if c.family == 4:
                    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 0, 0, _IP_DF, _TTL,
                                     IPPROTO_TCP, 0, src, dst)
                    eth += struct.pack("!H", ETH_P_IP)
                else:
                    ip = struct.pack("!IHBB16s16s", 6 << 28, 0, IPPROTO_TCP, _TTL, src, dst)
                    eth += struct.pack("!H", ETH_P_IPV6)
                self.tmpl[c.index, d] = eth + ip + struct.pack("!HH", sport, dport)
                self.pseudo[c.index, d] = _pseudo_sum(src, dst)
            self.isn[c.index, 0], self.isn[c.index, 1] = c.client_isn, c.server_isn
        self.fam6 = np.array([c.family == 6 for c in plan.conns])
        self.mss_opt = {c.index: struct.pack("!BBH", 2, 4, p.mss_for(c.family))
                        for c in plan.conns}
        # (conn, dir) -> the peer's rcv_nxt for that direction, as a stream offset (+1 once the
        # FIN is in): the ACK number the peer sends. Out-of-order segments wait in a heap until
        # the hole before them fills, so nothing unseen is acknowledged.
        self.rcv_nxt, self.ooo = {}, {}
        self.clock = 0          # the next frame's timestamp, ns

    def _streams(self, conn_of, dirs, kinds, starts, ends):
        """(conn, dir) -> (first byte, memoryview) covering the payload of these packets."""
        plan, out = self.plan, {}
        data = kinds == _DATA
        if not data.any():
            return out
        key = conn_of[data] * plan.ndir + dirs[data]
        for k in np.unique(key).tolist():
            sel = key == k
            lo, hi = int(starts[data][sel].min()), int(ends[data][sel].max())
            c = plan.conns[k // plan.ndir]
            whole = c.to_client if k % plan.ndir else c.to_server
            out[k // plan.ndir, k % plan.ndir] = (lo, memoryview(whole)[lo:hi] if
                                                  plan.materialized else
                                                  memoryview(plan.payload.read(k, lo, hi)))
        return out

    def build(self, first, stop):
        """Packets ``[first, stop)`` of the plan as a PacketTrace, timed after the previous
        slice."""
        p, plan = self.p, self.plan
        conn_of, dirs, kinds, starts, ends = (a[first:stop] for a in (
            plan.conn_of, plan.dirs, plan.kinds, plan.starts, plan.ends))
        vlan_len = VLAN_HLEN if p.vlan is not None else 0
        fam6 = self.fam6[conn_of]
        l3 = ETH_HLEN + vlan_len
        iphl = np.where(fam6, 40, 20)
        opt = np.where(kinds <= _SYNACK, _TCPOLEN_MSS, 0)
        tcp_len = 20 + opt + (ends - starts) * (kinds == _DATA)
        flen = np.maximum(l3 + iphl + tcp_len, ETH_ZLEN)
        stride = flen + (flen & 1)  # even offsets: 16-bit words line up for the checksums
        offsets = np.zeros(len(flen), np.int64)
        np.cumsum(stride[:-1], out=offsets[1:])
        arena = huge_zeros(int(stride.sum()) + 2)  # + 2: see _ones_sum
        self._write_packets(arena, offsets, l3, conn_of, dirs, kinds, starts, ends, fam6)
        ip_off = offsets + l3
        tcp_off = ip_off + iphl
        psum = np.array([self.pseudo[k] for k in zip(conn_of.tolist(), dirs.tolist(),
                                                      strict=True)],
                        np.uint64) + tcp_len.astype(np.uint64)
        _put_csum(arena, tcp_off + 16, _ones_sum(arena, tcp_off, tcp_len) + psum)
        v4 = ~fam6
        _put_csum(arena, ip_off[v4] + 10, _ones_sum(arena, ip_off[v4], np.full(v4.sum(), 20)))
        wire = np.ceil((flen + _WIRE_OVERHEAD) * 8 / p.link_gbps).astype(np.uint64)
        ts = np.full(len(flen), self.clock, np.uint64)
        np.cumsum(wire[:-1], out=ts[1:])
        ts[1:] += np.uint64(self.clock)
        self.clock += int(wire.sum(dtype=np.uint64))
        pay = int(((ends - starts) * (kinds == _DATA)).sum())
        return PacketTrace(arena[:-2], offsets, flen, ts, DLT_EN10MB, None, pay)

    def _write_packets(self, arena, offsets, l3, conn_of, dirs, kinds, starts, ends, fam6):
        """Each packet's headers (checksums 0) and payload into the arena."""
        tmpl, isn, ipids, rcv_nxt, ooo = self.tmpl, self.isn, self.plan.ipids, self.rcv_nxt, \
            self.ooo
        streams = self._streams(conn_of, dirs, kinds, starts, ends)
        mv = memoryview(arena)
        length = self.p.payload
        pack_v4 = struct.Struct("!HH").pack_into
        pack_v6 = struct.Struct("!H").pack_into
        pack_tcp = struct.Struct("!IIBBH").pack_into
        mask = 0xFFFFFFFF
        for o, c, d, kind, s, e, is6 in zip(offsets.tolist(), conn_of.tolist(), dirs.tolist(),
                                           kinds.tolist(), starts.tolist(), ends.tolist(),
                                           fam6.tolist(), strict=True):
            t = tmpl[c, d]
            mv[o:o + len(t)] = t
            ip = o + l3
            tcp = ip + (40 if is6 else 20)
            if kind == _DATA:
                plen, optlen = e - s, 0
                _rcv_advance(rcv_nxt, ooo, (c, d), s, e)
                seq = isn[c, d] + 1 + s
                flags = TCPHDR_ACK | (TCPHDR_PSH if e == length else 0)
            elif kind == _FIN:  # after every data segment of its direction: in order
                plen, optlen = 0, 0
                rcv_nxt[c, d] = length + 1
                seq = isn[c, d] + 1 + length
                flags = TCPHDR_FIN | TCPHDR_ACK
            else:
                plen, optlen = 0, (_TCPOLEN_MSS if kind != _ACK else 0)
                seq = isn[c, d] + (1 if kind == _ACK else 0)
                flags = {_SYN: TCPHDR_SYN, _SYNACK: TCPHDR_SYN | TCPHDR_ACK,
                         _ACK: TCPHDR_ACK}[kind]
            ack = 0 if kind == _SYN else (isn[c, 1 - d] + 1 + rcv_nxt.get((c, 1 - d), 0)) & mask
            if is6:
                pack_v6(arena, ip + 4, 20 + optlen + plen)
            else:
                pack_v4(arena, ip + 2, 40 + optlen + plen, ipids[c][d] & 0xFFFF)
                ipids[c][d] += 1
            pack_tcp(arena, tcp + 4, seq & mask, ack, (5 + optlen // 4) << 4, flags,
                     _TCP_WINDOW)
            if optlen:
                mv[tcp + 20:tcp + 24] = self.mss_opt[c]
            if plen:
                lo, view = streams[c, d]
                mv[tcp + 20:tcp + 20 + plen] = view[s - lo:e - lo]


def _rcv_advance(rcv_nxt, ooo, flow, s, e):
    """The receiver of ``flow`` got stream bytes [s, e): advance its rcv_nxt over every
    contiguous byte (as ``tcp_data_queue()`` and ``tcp_ofo_queue()`` do)."""
    nxt = rcv_nxt.get(flow, 0)
    if s > nxt:
        heapq.heappush(ooo.setdefault(flow, []), (s, e))
        return
    nxt = max(nxt, e)
    heap = ooo.get(flow)
    while heap and heap[0][0] <= nxt:
        nxt = max(nxt, heapq.heappop(heap)[1])
    rcv_nxt[flow] = nxt


def _ones_sum(arena, start, length, chunk=8192):
    """The 32-bit sum of the big-endian 16-bit words of ``arena[start:start + length]`` for
    each (even) start, an odd last byte padded with zero, as RFC 1071 sums; not yet folded."""
    out = np.zeros(len(start), np.uint64)
    start = start.astype(np.int64)
    length = length.astype(np.int64)
    for a in range(0, len(start), chunk):
        st, ln = start[a:a + chunk], length[a:a + chunk]
        lo = int(st[0])  # even; the arena has two spare bytes at its end for the last index
        hi = int((st + ln).max()) + 3 & ~1
        words = arena[lo:hi].view(">u2")
        w0 = (st - lo) // 2
        idx = np.empty(2 * len(st), np.int64)
        idx[0::2], idx[1::2] = w0, w0 + ln // 2
        sums = np.add.reduceat(words, idx, dtype=np.uint64)[0::2]
        odd = (ln & 1).astype(bool)
        sums[odd] += arena[st[odd] + ln[odd] - 1].astype(np.uint64) << np.uint64(8)
        out[a:a + chunk] = sums
    return out


def _put_csum(arena, at, total):
    """Fold 32-bit sums to 16 bits, complement, store big-endian at ``at``."""
    for _ in range(3):
        total = (total & np.uint64(0xFFFF)) + (total >> np.uint64(16))
    csum = ~total & np.uint64(0xFFFF)
    arena[at] = (csum >> np.uint64(8)).astype(np.uint8)
    arena[at + 1] = (csum & np.uint64(0xFF)).astype(np.uint8)
