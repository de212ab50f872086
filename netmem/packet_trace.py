"""PacketTrace: the RX path's input, every frame in one numpy bytes arena with ``offsets``,
``lengths`` (captured length) and ``timestamps`` (ns) arrays, built once and replayed without a
Python object per packet; held in memory or streamed from its capture file, a window at a time.

Frames are Ethernet (raw IP and Linux cooked captures get a synthesised Ethernet header on load)
and, unless ``keep_all=True``, TCP over IPv4 or IPv6 only: the rest is counted in
``trace.skipped`` by reason (``classify_frame()`` is the reference classifier; a vectorised twin
runs on loads). What a receiver gets in order (``in_order_bytes()``) and tshark's stream numbers
(``tcp_streams()``) are worked out from the frames. scapy is imported only by
``from_packets``; reading pcap and pcapng is ``netmem.capture``. ``netmem.flows`` re-exports
the public names.
"""
import contextlib
import errno
import ipaddress
import json
import os
from decimal import Decimal

import numpy as np

from netmem.capture import STREAM_WINDOW, CaptureMap, _gather_u32, index_cache_path, read_capture
from netmem.errors import NetmemError

__all__ = [
    "DLT_EN10MB", "DLT_LINUX_SLL", "DLT_LINUX_SLL2", "DLT_RAW", "SKIP_REASONS",
    "TCPHDR_ACK", "TCPHDR_FIN", "TCPHDR_PSH", "TCPHDR_RST", "TCPHDR_SYN", "PacketTrace",
    "classify_frame",
]

# Link types (pcap LINKTYPE_* values, tcpdump.org/linktypes.html).
DLT_EN10MB = 1          # Ethernet
DLT_RAW = 101           # LINKTYPE_RAW: raw IPv4 or IPv6, version from the first nibble
_DLT_RAW_ALIASES = (12, 14, 228, 229)  # DLT_RAW on OpenBSD / BSD/OS, LINKTYPE_IPV4, _IPV6
DLT_LINUX_SLL = 113     # Linux cooked capture v1 (tcpdump -i any), 16-byte header
DLT_LINUX_SLL2 = 276    # Linux cooked capture v2, 20-byte header
_SLL_HLEN = {DLT_LINUX_SLL: 16, DLT_LINUX_SLL2: 20}

ETH_HLEN = 14           # include/uapi/linux/if_ether.h
ETH_ZLEN = 60           # minimum frame without FCS: shorter ones are padded
VLAN_HLEN = 4
ETH_P_IP = 0x0800
ETH_P_IPV6 = 0x86DD
ETH_P_8021Q = 0x8100
ETH_P_8021AD = 0x88A8
IPPROTO_TCP = 6
IP_MF = 0x2000          # include/net/ip.h: "more fragments" flag
IP_OFFSET = 0x1FFF      # fragment offset part
NEXTHDR_HOP = 0         # include/net/ipv6.h
NEXTHDR_ROUTING = 43
NEXTHDR_FRAGMENT = 44
NEXTHDR_DEST = 60
_IPV6_EXT = (NEXTHDR_HOP, NEXTHDR_ROUTING, NEXTHDR_DEST)

# Classifier outcomes: codes 0 and 1 are kept, the rest are the reasons of trace.skipped.
SKIP_REASONS = ("non_tcp", "malformed", "truncated", "ip_fragment")
_CLASSES = ("tcp4", "tcp6", *SKIP_REASONS)
_TCP4, _TCP6, _NON_TCP, _MALFORMED, _TRUNCATED, _IP_FRAGMENT = range(6)
_UNDECIDED = -1

# A loaded capture keeps the file's bytes as its arena (record headers between frames) unless
# the frames kept fill less than this share of it; then they are copied back to back.
_COMPACT_BELOW = 0.75
_TRACE_FORMAT = 1       # the .npz layout version written by PacketTrace.save()
# include/net/tcp.h
TCPHDR_FIN, TCPHDR_SYN, TCPHDR_RST, TCPHDR_PSH, TCPHDR_ACK = 0x01, 0x02, 0x04, 0x08, 0x10


def _err(code, msg):
    return NetmemError(code, msg)


# --------------------------------------------------------------------------------------------
# The classifier: the reference (one frame, plain Python) and its vectorised twin.


def _classify(buf):
    """(class code, TCP payload length) of one Ethernet frame; see ``classify_frame``."""
    n = len(buf)
    if n < ETH_HLEN:
        return _MALFORMED, 0
    proto = buf[12] << 8 | buf[13]
    off = ETH_HLEN
    for _ in range(2):  # up to two tags: 802.1Q, or 802.1ad outer + 802.1Q inner (QinQ)
        if proto not in (ETH_P_8021Q, ETH_P_8021AD):
            break
        if n < off + VLAN_HLEN:
            return _MALFORMED, 0
        proto = buf[off + 2] << 8 | buf[off + 3]
        off += VLAN_HLEN
    if proto == ETH_P_IP:
        return _classify_ipv4(buf, off, n - off)
    if proto == ETH_P_IPV6:
        return _classify_ipv6(buf, off, n - off)
    return _NON_TCP, 0


def _classify_ipv4(buf, p, avail):
    # The checks of ip_rcv_core(), then tcp_v4_rcv()'s header length checks.
    if avail < 20:
        return _MALFORMED, 0
    ihl = (buf[p] & 15) * 4
    if buf[p] >> 4 != 4 or ihl < 20:
        return _MALFORMED, 0
    tot = buf[p + 2] << 8 | buf[p + 3]
    if tot < ihl or avail < ihl:
        return _MALFORMED, 0
    if tot > avail:  # ip_rcv_core(): skb->len < len, IPSTATS_MIB_INTRUNCATEDPKTS
        return _TRUNCATED, 0
    if (buf[p + 6] << 8 | buf[p + 7]) & (IP_MF | IP_OFFSET):
        return _IP_FRAGMENT, 0
    if buf[p + 9] != IPPROTO_TCP:
        return _NON_TCP, 0
    if tot < ihl + 20:
        return _MALFORMED, 0
    doff = (buf[p + ihl + 12] >> 4) * 4
    if doff < 20 or doff > tot - ihl:
        return _MALFORMED, 0
    return _TCP4, tot - ihl - doff


def _classify_ipv6(buf, p, avail):
    if avail < 40:
        return _MALFORMED, 0
    if buf[p] >> 4 != 6:
        return _MALFORMED, 0
    end = 40 + (buf[p + 4] << 8 | buf[p + 5])
    if end > avail:
        return _TRUNCATED, 0
    nh = buf[p + 6]
    pos = 40
    while nh in _IPV6_EXT:  # hop-by-hop, routing, destination options: (hdrlen + 1) * 8 bytes
        if pos + 8 > end:
            return _MALFORMED, 0
        nh, pos = buf[p + pos], pos + (buf[p + pos + 1] + 1) * 8
        if pos > end:
            return _MALFORMED, 0
    if nh == NEXTHDR_FRAGMENT:
        return _IP_FRAGMENT, 0
    if nh != IPPROTO_TCP:
        return _NON_TCP, 0
    if end - pos < 20:
        return _MALFORMED, 0
    doff = (buf[p + pos + 12] >> 4) * 4
    if doff < 20 or doff > end - pos:
        return _MALFORMED, 0
    return _TCP6, end - pos - doff


def classify_frame(buf):
    """What an Ethernet frame is: ``"tcp4"``, ``"tcp6"``, or the reason it is skipped.

    The reference classifier (one frame, plain Python); loads run a vectorised twin, and the
    tests hold both it and the RX path in C to this one. Checks, in order:

    - Ethernet II, then up to two tags (0x8100, 0x88a8), each within the frame;
    - IPv4: the 20-byte header within the frame, version 4, IHL >= 5, total length >= IHL * 4,
      the whole header within the frame (``malformed``); total length within the frame
      (``truncated``, as ``ip_rcv_core()`` counts IPSTATS_MIB_INTRUNCATEDPKTS; Ethernet padding
      after it is fine); not a fragment, MF or offset (``ip_fragment``, whatever the protocol);
      protocol 6 (``non_tcp``); room for a TCP header, data offset >= 5 and the TCP header within
      the IP payload (``malformed``);
    - IPv6: the fixed header within the frame, version 6 (``malformed``); payload length within
      the frame (``truncated``); hop-by-hop, routing and destination-options headers walked
      (each within the payload, else ``malformed``); a fragment header is ``ip_fragment``; next
      header 6 (``non_tcp``); the TCP header as for IPv4;
    - any other EtherType (ARP, an 802.3 length, a third tag) is ``non_tcp``.

    Checksums are not verified. Jumbograms (payload length 0 with a hop-by-hop jumbo option)
    are ``malformed``.

    :param buf: the frame (bytes-like), from its Ethernet header to its captured end
    :returns: one of ``"tcp4"``, ``"tcp6"``, ``"non_tcp"``, ``"malformed"``, ``"truncated"``,
        ``"ip_fragment"``
    """
    return _CLASSES[_classify(memoryview(buf).cast("B"))[0]]


class _Rows:
    """The frames of a vectorised classification still undecided, with their parallel arrays.

    ``decide(mask, code)`` gives the rows where ``mask`` holds their class and drops them."""

    def __init__(self, arena, base, n, code, rows, **cols):
        self.arena, self.base, self.n, self.code = arena, base, n, code
        self.rows = rows
        self.cols = cols

    def __getattr__(self, name):
        try:
            return self.__dict__["cols"][name]
        except KeyError:
            raise AttributeError(name) from None

    def set(self, **cols):
        self.cols.update(cols)

    def decide(self, mask, code):
        if mask.any():
            self.code[self.rows[mask]] = code
            keep = ~mask
            self.rows = self.rows[keep]
            self.cols = {k: v[keep] for k, v in self.cols.items()}

    def u8(self, rel):
        return self.arena[self.base[self.rows] + rel].astype(np.int64)

    def u16(self, rel):
        idx = self.base[self.rows] + rel
        return self.arena[idx].astype(np.int64) << 8 | self.arena[idx + 1]

    def avail(self):
        return self.n[self.rows]


def _classify_arena(arena, offsets, lengths, l3=None, l4=None):
    """The vectorised ``_classify``: (codes int8, TCP payload lengths uint32) for every frame.

    Every read is guarded by a length check first, as in ``_classify``, so nothing outside a
    frame is read. ``l3``/``l4``, int64 arrays of one entry per frame if given, receive each
    TCP frame's IP and TCP header offsets from the frame's start (other entries untouched)."""
    count = len(offsets)
    code = np.full(count, _UNDECIDED, np.int8)
    payload = np.zeros(count, np.uint32)
    if count == 0:
        return code, payload
    base = offsets.astype(np.int64)
    n = lengths.astype(np.int64)
    l3_out = l3
    r = _Rows(arena, base, n, code, np.arange(count))
    r.decide(n < ETH_HLEN, _MALFORMED)
    r.set(proto=r.u16(12), l3=np.full(len(r.rows), ETH_HLEN, np.int64))
    for _ in range(2):
        tag = (r.proto == ETH_P_8021Q) | (r.proto == ETH_P_8021AD)
        if not tag.any():
            break
        r.decide(tag & (r.avail() < r.l3 + VLAN_HLEN), _MALFORMED)
        tag = (r.proto == ETH_P_8021Q) | (r.proto == ETH_P_8021AD)
        proto, l3 = r.proto.copy(), r.l3.copy()
        tagged = r.rows[tag]
        idx = base[tagged] + l3[tag] + 2
        proto[tag] = arena[idx].astype(np.int64) << 8 | arena[idx + 1]
        l3[tag] += VLAN_HLEN
        r.set(proto=proto, l3=l3)
    is4 = r.proto == ETH_P_IP
    is6 = r.proto == ETH_P_IPV6
    r.decide(~(is4 | is6), _NON_TCP)
    is4 = r.proto == ETH_P_IP
    rows, l3 = r.rows, r.l3
    _classify_ipv4_rows(_Rows(arena, base, n, code, rows[is4], p=l3[is4]), payload, l3_out, l4)
    _classify_ipv6_rows(_Rows(arena, base, n, code, rows[~is4], p=l3[~is4]), payload, l3_out,
                        l4)
    return code, payload


def _classify_ipv4_rows(r, payload, l3=None, l4=None):
    r.decide(r.avail() - r.p < 20, _MALFORMED)
    b0 = r.u8(r.p)
    r.set(ihl=(b0 & 15) * 4)
    r.decide((b0 >> 4 != 4) | (r.ihl < 20), _MALFORMED)
    r.set(tot=r.u16(r.p + 2))
    r.decide((r.tot < r.ihl) | (r.avail() - r.p < r.ihl), _MALFORMED)
    r.decide(r.tot > r.avail() - r.p, _TRUNCATED)
    r.decide((r.u16(r.p + 6) & (IP_MF | IP_OFFSET)) != 0, _IP_FRAGMENT)
    r.decide(r.u8(r.p + 9) != IPPROTO_TCP, _NON_TCP)
    r.decide(r.tot < r.ihl + 20, _MALFORMED)
    _classify_tcp_rows(r, payload, l3, l4, _TCP4, lambda: r.ihl, lambda: r.tot - r.ihl)


def _classify_tcp_rows(r, payload, l3, l4, code, l4_rel, seg_len):
    """The TCP header of the rows ``r`` (IPv4 or IPv6, ``code``): its data offset checked
    against the segment, then the rows' class, payload length and header offsets.
    ``l4_rel()`` and ``seg_len()`` read, for the rows still left, where the TCP header starts
    past the IP header's and how long the segment is."""
    doff = (r.u8(r.p + l4_rel() + 12) >> 4) * 4
    r.set(doff=doff)
    r.decide((doff < 20) | (doff > seg_len()), _MALFORMED)
    r.code[r.rows] = code
    payload[r.rows] = seg_len() - r.doff
    if l3 is not None:
        l3[r.rows] = r.p
    if l4 is not None:
        l4[r.rows] = r.p + l4_rel()


def _classify_ipv6_rows(r, payload, l3=None, l4=None):
    r.decide(r.avail() - r.p < 40, _MALFORMED)
    r.decide(r.u8(r.p) >> 4 != 6, _MALFORMED)
    r.set(end=40 + r.u16(r.p + 4))
    r.decide(r.end > r.avail() - r.p, _TRUNCATED)
    r.set(nh=r.u8(r.p + 6), pos=np.full(len(r.rows), 40, np.int64))
    while True:
        ext = np.isin(r.nh, _IPV6_EXT)
        if not ext.any():
            break
        r.decide(ext & (r.pos + 8 > r.end), _MALFORMED)
        ext = np.isin(r.nh, _IPV6_EXT)
        nh, pos = r.nh.copy(), r.pos.copy()
        at = r.base[r.rows[ext]] + r.p[ext] + pos[ext]
        nh[ext] = r.arena[at]
        pos[ext] += (r.arena[at + 1].astype(np.int64) + 1) * 8
        r.set(nh=nh, pos=pos)
        r.decide(r.pos > r.end, _MALFORMED)
    r.decide(r.nh == NEXTHDR_FRAGMENT, _IP_FRAGMENT)
    r.decide(r.nh != IPPROTO_TCP, _NON_TCP)
    r.decide(r.end - r.pos < 20, _MALFORMED)
    _classify_tcp_rows(r, payload, l3, l4, _TCP6, lambda: r.pos, lambda: r.end - r.pos)


# --------------------------------------------------------------------------------------------
# Arena helpers.


def _compact(arena, offsets, lengths):
    """The frames ``arena[offsets[i]:offsets[i] + lengths[i]]`` back to back in a new arena.

    The ranges must be in order and must not overlap (true of every arena built here). One mask
    over the arena from the run lengths of gaps and frames, then one compress: no per-frame
    Python (about 1 ns per byte)."""
    lengths = lengths.astype(np.uint32)
    new_off = np.zeros(len(lengths), np.uint64)
    if len(lengths) == 0:
        return np.zeros(0, np.uint8), new_off
    np.cumsum(lengths[:-1], dtype=np.uint64, out=new_off[1:])
    total = int(new_off[-1]) + int(lengths[-1])
    if total == len(arena) and (offsets.astype(np.uint64) == new_off).all():
        return arena, new_off  # already back to back
    start = offsets.astype(np.int64)
    ln = lengths.astype(np.int64)
    runs = np.empty(2 * len(start) + 1, np.int64)  # gap, frame, gap, frame, ..., tail
    runs[0] = start[0]
    runs[2:-1:2] = start[1:] - (start[:-1] + ln[:-1])
    runs[1::2] = ln
    runs[-1] = len(arena) - (start[-1] + ln[-1])
    mask = np.repeat(np.arange(len(runs)) & 1 == 1, runs)
    return arena[mask], new_off


def _to_ethernet(arena, offsets, lengths, linktypes):
    """Frames of any supported link type as Ethernet frames in a new compact arena.

    Raw IP gets a 14-byte header (zero MACs, EtherType from the IP version nibble: 6 is IPv6,
    anything else IPv4, which the classifier then judges); Linux cooked v1/v2 loses its 16/20-byte
    header for one with the cooked header's protocol as EtherType and its link-layer address as
    source MAC when it is 6 bytes long (destination zero). A cooked frame shorter than its header
    is returned flagged ``bad`` (it becomes a bare 14-byte header and counts as malformed).

    :returns: (arena, offsets, lengths, bad mask)
    """
    count = len(offsets)
    off = offsets.astype(np.int64)
    ln = lengths.astype(np.int64)
    strip = np.zeros(count, np.int64)
    add = np.zeros(count, np.bool_)
    etype = np.zeros(count, np.int64)
    src = np.zeros((count, 6), np.uint8)
    has_src = np.zeros(count, np.bool_)
    bad = np.zeros(count, np.bool_)
    for lt in np.unique(linktypes):
        sel = np.flatnonzero(linktypes == lt)
        if lt == DLT_EN10MB:
            continue
        add[sel] = True
        if lt == DLT_RAW or lt in _DLT_RAW_ALIASES:
            ok = sel[ln[sel] > 0]
            etype[sel] = ETH_P_IP
            etype[ok[arena[off[ok]] >> 4 == 6]] = ETH_P_IPV6
            continue
        hlen = _SLL_HLEN[int(lt)]
        short = ln[sel] < hlen
        bad[sel[short]] = True
        ok = sel[~short]
        strip[sel] = np.minimum(ln[sel], hlen)
        o = off[ok]
        if lt == DLT_LINUX_SLL:
            pe, halen = o + 14, arena[o + 4].astype(np.int64) << 8 | arena[o + 5]
            pa = o + 6
        else:
            pe, halen = o, arena[o + 11].astype(np.int64)
            pa = o + 12
        etype[ok] = arena[pe].astype(np.int64) << 8 | arena[pe + 1]
        six = halen == 6
        has_src[ok[six]] = True
        src[ok[six]] = arena[pa[six][:, None] + np.arange(6)]
    body, body_off = _compact(arena, off + strip, ln - strip)
    new_len = ln - strip + np.where(add, ETH_HLEN, 0)
    if add.any():
        ins = body_off[add].astype(np.int64)
        body = np.insert(body, np.repeat(ins, ETH_HLEN), 0)
        new_off = np.zeros(count, np.uint64)
        np.cumsum(new_len[:-1], dtype=np.uint64, out=new_off[1:])
        h = new_off[add].astype(np.int64)
        hs = h[has_src[add]]
        body[hs[:, None] + 6 + np.arange(6)] = src[add & has_src]
        body[h + 12] = etype[add] >> 8
        body[h + 13] = etype[add] & 0xFF
    else:
        new_off = body_off
    return body, new_off, new_len.astype(np.uint32), bad


# --------------------------------------------------------------------------------------------
# PacketTrace.


def _frame_windows(offsets, lengths, cmap, window):
    """Frame ranges ``[a, b)`` that cover the frames in order: one for a trace in memory
    (``cmap`` None); over a ``CaptureMap``, as many frames as fit in ``window`` bytes (one at
    least), each range's pages given back once the caller is done with it. The frames must be
    in file order (a capture's are)."""
    n = len(offsets)
    if cmap is None:
        if n:
            yield 0, n
        return
    ends = offsets.astype(np.uint64) + lengths
    a = 0
    while a < n:
        lo = int(offsets[a])
        b = max(a + 1, int(np.searchsorted(ends, np.uint64(lo + window), "right")))
        yield a, b
        cmap.release(lo, int(ends[b - 1]))
        a = b


def _check_linktypes(linktypes, who):
    for lt in np.unique(linktypes):
        lt = int(lt)
        if lt not in (DLT_EN10MB, DLT_RAW, *_DLT_RAW_ALIASES, *_SLL_HLEN):
            raise _err(errno.EINVAL, f"{who}: unknown link type {lt}")


class PacketTrace:
    """Frames in one bytes arena, built once and replayed without a Python object per packet.

    :ivar arena: ``np.uint8`` 1-D; frame ``i`` is ``arena[offsets[i]:offsets[i] + lengths[i]]``.
        Frames are in order, with bytes between them at times: a pcap file loads without a copy
        of its frames (the arena is the file's bytes) unless frames were dropped. Every array
        of a trace is read-only.
    :ivar offsets: ``np.uint64``
    :ivar lengths: ``np.uint32``, the captured length (a frame cut by the snapshot length is
        shorter than on the wire, and is skipped as ``truncated`` unless ``keep_all``)
    :ivar timestamps: ``np.uint64``, ns (a capture's own clock; the generator's starts at 0)
    :ivar linktype: the DLT of the frames in the arena: ``DLT_EN10MB``, always, since raw IP
        and Linux cooked frames are given an Ethernet header when loaded
    :ivar skipped: reason -> count for every reason of ``SKIP_REASONS``: the frames the
        classifier rejected (dropped, or kept with ``keep_all=True``), plus a capture's last
        record cut short (``truncated``, never kept)
    :ivar payload_bytes: total TCP payload bytes of the TCP frames kept
    :ivar cut_short: the capture file ended in the middle of a record (the last record is
        counted as ``truncated``; the records before it are kept)

    Build one with ``from_frames``, ``from_packets``, ``from_pcap`` or ``load``; the constructor
    takes the arrays as they are (checked, not classified).
    """

    def __init__(self, arena, offsets, lengths, timestamps, linktype=DLT_EN10MB, skipped=None,
                 payload_bytes=None):
        try:
            arena = np.ascontiguousarray(arena, np.uint8).reshape(-1).view()
            offsets = np.ascontiguousarray(offsets, np.uint64).reshape(-1).view()
            lengths = np.ascontiguousarray(lengths, np.uint32).reshape(-1).view()
            timestamps = np.ascontiguousarray(timestamps, np.uint64).reshape(-1).view()
        except (TypeError, ValueError, OverflowError) as e:
            raise _err(errno.EINVAL, f"PacketTrace: arrays of unsigned ints needed ({e})") \
                from None
        if not len(offsets) == len(lengths) == len(timestamps):
            raise _err(errno.EINVAL, "PacketTrace: offsets, lengths and timestamps must have "
                                     "the same length")
        if len(offsets) and int((offsets + lengths).max()) > len(arena):
            raise _err(errno.EINVAL, "PacketTrace: a frame reaches past the end of the arena")
        if linktype != DLT_EN10MB:
            raise _err(errno.EINVAL, f"PacketTrace: link type {linktype}: frames must be "
                                     f"Ethernet (DLT_EN10MB)")
        for a in (arena, offsets, lengths, timestamps):  # a trace is input: read-only views
            a.flags.writeable = False
        self.arena, self.offsets, self.lengths, self.timestamps = arena, offsets, lengths, \
            timestamps
        self.linktype = int(linktype)
        self.skipped = dict.fromkeys(SKIP_REASONS, 0)
        for k, v in (skipped or {}).items():
            if k not in self.skipped:
                raise _err(errno.EINVAL, f"PacketTrace: unknown skip reason {k!r}")
            self.skipped[k] = int(v)
        if payload_bytes is None:
            _, pay = _classify_arena(arena, offsets, lengths)
            payload_bytes = int(pay.sum(dtype=np.uint64))
        self.payload_bytes = int(payload_bytes)
        self.cut_short = False
        self._map = None        # the CaptureMap of a streamed trace
        self.window = None      # a streamed trace's bytes resident at once

    def __len__(self):
        return len(self.offsets)

    def frame(self, i):
        """Frame ``i`` as bytes (a copy); negative ``i`` counts from the end (IndexError past
        either end)."""
        count = len(self.offsets)
        if not -count <= i < count:
            raise IndexError(f"PacketTrace.frame: index {i} out of range ({count} frames)")
        o = int(self.offsets[i])
        return self.arena[o:o + int(self.lengths[i])].tobytes()

    @property
    def streamed(self):
        """The trace reads its frames from its capture file as it goes (``from_pcap(path,
        stream=True)``): the arena maps the file, and no more than about ``window`` bytes of
        it are resident at once, besides the first ``keep`` bytes, which stay."""
        return self._map is not None

    @property
    def keep(self):
        """The bytes at the head of a streamed trace's capture that stay resident once read
        (None for a trace in memory)."""
        return self._map.keep if self._map is not None else None

    def release(self, start, end):
        """Frames ``[start, end)`` are done with: a streamed trace gives their pages back to
        the page cache (a later read faults them in again); an in-memory trace keeps them."""
        if self._map is not None and end > start:
            self._map.release(int(self.offsets[start]),
                              int(self.offsets[end - 1]) + int(self.lengths[end - 1]))

    def _windows(self):
        return _frame_windows(self.offsets, self.lengths, self._map, self.window)

    def tcp_streams(self):
        """The trace's TCP conversations numbered as tshark numbers ``tcp.stream``: in the
        order of their first frame. A list indexed by stream number of ``(node0, node1)``, each
        an ``(address string, port)`` pair, ``node0`` the side that sent the stream's first
        frame (the client when the SYN is in the trace), as ``tshark -z follow,tcp`` names them.

        Only the frames the classifier keeps are numbered: tshark also numbers TCP it finds in
        frames skipped here (IP fragments, frames cut by the snapshot length), which shifts its
        later indices. A 4-tuple that a later connection reuses stays one stream here, where
        tshark starts a new one on its SYN (port reuse)."""
        seen = {}
        for h in self._tcp_header_windows():
            if not len(h.rows):
                continue
            ends = [np.column_stack([a.view(">u8").astype(np.uint64), p])
                    for a, p in zip(h.addrs, h.ports, strict=True)]   # (hi, lo, port) per side
            src, dst = ends
            hi_lt = src[:, 0] < dst[:, 0]
            hi_eq = src[:, 0] == dst[:, 0]
            lo_lt = src[:, 1] < dst[:, 1]
            lo_eq = src[:, 1] == dst[:, 1]
            src_low = hi_lt | (hi_eq & (lo_lt | (lo_eq & (src[:, 2] <= dst[:, 2]))))
            low = np.where(src_low[:, None], src, dst)
            high = np.where(src_low[:, None], dst, src)
            key = np.column_stack([h.six.astype(np.uint64), low, high])
            first, _ = _unique_rows(key)
            for j in np.argsort(first, kind="stable").tolist():
                k = key[first[j]].tobytes()
                if k not in seen:
                    i = int(first[j])
                    seen[k] = (h.end(0, i), h.end(1, i))
        return list(seen.values())

    def _tcp_header_windows(self):
        """``_tcp_headers()`` of each window of the trace, in order."""
        for a, b in self._windows():
            yield self._tcp_headers(a, b)

    def _tcp_headers(self, a=0, b=None):
        """The TCP frames' headers among frames ``[a, b)``, vectorised: ``rows`` (their frame
        indices), ``six``, ``addrs`` (source and destination, 16 bytes each, IPv4 in the last
        4), ``ports`` (source, destination), ``seq``, ``flags``, ``payload`` (TCP payload
        lengths)."""
        b = len(self) if b is None else b
        l3, l4 = np.zeros(b - a, np.int64), np.zeros(b - a, np.int64)
        code, payload = _classify_arena(self.arena, self.offsets[a:b], self.lengths[a:b], l3, l4)
        rows = np.flatnonzero(code <= _TCP6)
        arena = self.arena
        base = self.offsets[a:b][rows].astype(np.int64)
        six = code[rows] == _TCP6
        ip = base + l3[rows]
        tcp = base + l4[rows]
        addrs = []                                  # source, destination: 16 bytes each
        for v4_at, v6_at in ((12, 8), (16, 24)):
            ad = np.zeros((len(rows), 16), np.uint8)
            ad[~six, 12:] = arena[ip[~six, None] + v4_at + np.arange(4)]
            ad[six] = arena[ip[six, None] + v6_at + np.arange(16)]
            addrs.append(ad)
        ports = [arena[tcp + k].astype(np.uint64) << np.uint64(8) | arena[tcp + k + 1]
                 for k in (0, 2)]
        return _TcpHeaders(rows + a, six, addrs, ports, _gather_u32(arena, tcp + 4, False),
                           arena[tcp + 13], payload[rows].astype(np.int64))

    def in_order_bytes(self, deliver=None):
        """The bytes a Linux receiver of each direction delivers in order from this trace,
        computed from the frames (numpy over their TCP headers): ``{(source, destination):
        bytes}``, each end an ``(address string, port)`` pair.

        A direction's stream starts after the ISN of its SYN (or SYN-ACK), or, when the trace
        starts in the middle of a flow, at the sequence number of its first segment (other than
        a RST), where ``m.tcp.open_on_data`` opens the socket. It then covers, as
        ``tcp_data_queue()`` and ``tcp_ofo_queue()`` do, every byte of payload its frames carry
        from there up to the first hole that no frame fills, and stops at a FIN within that.
        Payload counts when its frame has ACK set (``tcp_rcv_established()`` discards a segment
        without it), no SYN (no data is taken from a SYN without a Fast Open cookie) and no RST.
        Sequence numbers are unwrapped along each stream, so a stream may pass 4 GiB. A SYN with
        another ISN starts a new stream on the same 4-tuple (port reuse); the streams of a
        direction add up. The headers are read window by window (a streamed trace keeps a
        window resident), and what is kept per TCP frame is its direction, sequence number,
        flags and payload length.

        Departs from the receiver: the order of frames decides nothing but the start, so a
        hole filled after the stream's FIN, a RST (which ends the socket; a later segment opens
        another mid-flow) and a receive queue over ``sk_rcvbuf`` are not modelled here, and a
        new SYN counts as a new stream even before the old connection ended.

        :param deliver: bool per frame, the frames the receiver gets (default: all); a frame
            the NIC drops (longer than its MTU) is not delivered
        """
        deliver = None if deliver is None else np.asarray(deliver, bool)
        ids, names, cols = {}, [], []       # direction key -> id; id -> ends; per window
        for h in self._tcp_header_windows():
            keep = (h.flags & TCPHDR_RST) == 0  # a RST opens no socket and carries no data
            if deliver is not None:
                keep &= deliver[h.rows]
            at = np.flatnonzero(keep)
            if not len(at):
                continue
            key = np.column_stack([h.six[at], *(a[at].view(">u8") for a in h.addrs),
                                   *(p[at] for p in h.ports)]).astype(np.uint64)
            first, inverse = _unique_rows(key)
            local = np.empty(len(first), np.int64)
            for j in range(len(first)):
                k = key[first[j]].tobytes()
                if k not in ids:
                    ids[k] = len(names)
                    i = int(at[first[j]])
                    names.append((h.end(0, i), h.end(1, i)))
                local[j] = ids[k]
            cols.append((local[inverse].astype(np.int32),
                         h.seq[at].astype(np.uint32), h.flags[at],
                         h.payload[at].astype(np.uint32)))
        if not cols:
            return {}
        direction, seq, flags, payload = (np.concatenate(c) for c in zip(*cols, strict=True))
        del cols
        order = np.argsort(direction, kind="stable")    # capture order in each
        ordered = direction[order]
        out = {}
        for a, b in _direction_blocks(ordered):
            sel = order[a:b]
            inc, got = _stream_bytes(ordered[a:b].astype(np.int64), seq[sel].astype(np.int64),
                                     flags[sel].astype(np.int64), payload[sel].astype(np.int64))
            for d, n in zip(ordered[a:b][inc].tolist(), got.tolist(), strict=True):
                out[names[d]] = out.get(names[d], 0) + n
        return out

    def l3_lengths(self):
        """Each frame's length as the NIC holds it against its MTU: the frame less its Ethernet
        header and the VLAN tags the device strips (up to two, 0x8100 or 0x88a8, as the model
        driver's parser counts them: ``nm_rx_frame()`` drops a frame longer than ``mtu +
        ETH_HLEN + tags * VLAN_HLEN`` as ``rx_length_errors``). Padding and the bytes past the
        IP header's total length count, as they do on the wire. A frame shorter than an
        Ethernet header gives 0 (the device drops it as a runt whatever the MTU). ``np.int64``,
        one per frame."""
        out = np.zeros(len(self), np.int64)
        for a, b in self._windows():
            n = self.lengths[a:b].astype(np.int64)
            base = self.offsets[a:b].astype(np.int64)
            off = np.full(len(n), 12, np.int64)             # the EtherType after the MACs
            for _ in range(2):
                rows = np.flatnonzero(off + 6 <= n)         # room for a tag and what follows
                at = base[rows] + off[rows]
                et = self.arena[at].astype(np.int64) << 8 | self.arena[at + 1]
                off[rows[(et == ETH_P_8021Q) | (et == ETH_P_8021AD)]] += VLAN_HLEN
            out[a:b] = np.where(n < ETH_HLEN, 0, n - off - 2)
        return out

    def vlan_ids(self):
        """The VLAN ids on the frames, each path once, sorted: ``(id,)`` for a frame with one
        tag, ``(outer, inner)`` for two (0x8100 or 0x88a8, as ``l3_lengths()`` counts them).
        Window by window, as ``l3_lengths()``."""
        out = set()
        for a, b in self._windows():
            n = self.lengths[a:b].astype(np.int64)
            base = self.offsets[a:b].astype(np.int64)
            off = np.full(len(n), 12, np.int64)
            tags = np.full((len(n), 2), -1, np.int64)
            for k in range(2):
                rows = np.flatnonzero(off + 6 <= n)
                at = base[rows] + off[rows]
                et = self.arena[at].astype(np.int64) << 8 | self.arena[at + 1]
                hit = rows[(et == ETH_P_8021Q) | (et == ETH_P_8021AD)]
                tci = base[hit] + off[hit] + 2
                tags[hit, k] = (self.arena[tci].astype(np.int64) << 8
                                | self.arena[tci + 1]) & 0xfff
                off[hit] += VLAN_HLEN
            out |= {(int(x),) if y < 0 else (int(x), int(y))
                    for x, y in np.unique(tags[tags[:, 0] >= 0], axis=0)}
        return sorted(out)

    def __repr__(self):
        skipped = ", ".join(f"{k}={v}" for k, v in self.skipped.items() if v)
        return (f"<PacketTrace {len(self)} frames, {int(self.lengths.sum(dtype=np.uint64))} "
                f"bytes, TCP payload {self.payload_bytes} bytes, linktype {self.linktype}"
                f"{', skipped ' + skipped if skipped else ''}>")

    # -- building ------------------------------------------------------------------------------

    @classmethod
    def _build(cls, arena, offsets, lengths, timestamps, linktypes, keep_all, truncated=0,
               bad=None, cmap=None, window=STREAM_WINDOW):
        """Classify, count, drop (unless keep_all) and compact. ``linktypes`` per frame;
        non-Ethernet frames are converted first. Over a ``CaptureMap`` (``cmap``) the trace is
        streamed: classified ``window`` by window, never compacted nor converted."""
        if len(linktypes) and (linktypes != DLT_EN10MB).any():
            arena, offsets, lengths, bad = _to_ethernet(arena, offsets, lengths, linktypes)
        code = np.empty(len(offsets), np.int8)
        payload = np.empty(len(offsets), np.uint32)
        for a, b in _frame_windows(offsets, lengths, cmap, window):
            code[a:b], payload[a:b] = _classify_arena(arena, offsets[a:b], lengths[a:b])
        if bad is not None:
            code[bad] = _MALFORMED
        counts = np.bincount(code.astype(np.int64), minlength=len(_CLASSES))
        skipped = {r: int(counts[i + 2]) for i, r in enumerate(SKIP_REASONS)}
        skipped["truncated"] += truncated
        keep = slice(None) if keep_all else code <= _TCP6
        offsets, lengths = offsets[keep], lengths[keep]
        if cmap is None and int(lengths.sum(dtype=np.uint64)) < _COMPACT_BELOW * len(arena):
            arena, offsets = _compact(arena, offsets, lengths)
        trace = cls(arena, offsets, lengths, timestamps[keep], DLT_EN10MB, skipped,
                    int(payload[keep].sum(dtype=np.uint64)))
        trace.cut_short = bool(truncated)
        if cmap is not None:
            trace._map, trace.window = cmap, window
        return trace

    @classmethod
    def from_frames(cls, frames, timestamps=None, keep_all=False):
        """A trace of Ethernet frames.

        :param frames: iterable of bytes-like, each a whole Ethernet frame
        :param timestamps: ns, one per frame (default: all 0)
        :param keep_all: keep the frames that are not TCP (still counted in ``skipped``)
        """
        try:
            frames = [memoryview(f).cast("B") for f in frames]
        except TypeError as e:
            raise _err(errno.EINVAL, f"from_frames: frames must be bytes-like ({e})") from None
        lengths = np.fromiter((len(f) for f in frames), np.uint32, len(frames))
        arena = np.frombuffer(b"".join(frames), np.uint8)
        offsets = np.zeros(len(frames), np.uint64)
        if len(frames):
            np.cumsum(lengths[:-1], dtype=np.uint64, out=offsets[1:])
        if timestamps is None:
            ts = np.zeros(len(frames), np.uint64)
        else:
            ts = np.asarray(timestamps)
            if ts.shape != (len(frames),) or ts.dtype.kind not in "iu" or (ts < 0).any():
                raise _err(errno.EINVAL, f"from_frames: need {len(frames)} integer timestamps "
                                         f">= 0 (ns), got {ts.dtype} of shape {ts.shape}")
            ts = ts.astype(np.uint64)
        return cls._build(arena, offsets, lengths, ts, np.full(len(frames), DLT_EN10MB),
                          keep_all)

    @classmethod
    def from_packets(cls, pkts, keep_all=False):
        """A trace of scapy packets: ``bytes(p)`` and ``p.time`` of each. An ``Ether`` packet is
        a frame as it is; an ``IP``/``IPv6`` packet or a Linux cooked one (``CookedLinux``,
        ``CookedLinuxV2``) gets an Ethernet header as ``from_pcap`` gives one."""
        from scapy.config import conf

        pkts = list(pkts)
        l2 = conf.l2types.layer2num
        raws, lts, ts = [], [], []
        for p in pkts:
            lt = l2.get(type(p))
            if lt is None:
                raise _err(errno.EINVAL, f"from_packets: no link type for a "
                                         f"{type(p).__name__} packet")
            raws.append(bytes(p))
            lts.append(lt)
            ts.append(int((Decimal(p.time) * 1_000_000_000).to_integral_value()))
        lts = np.array(lts, np.int64)
        _check_linktypes(lts, "from_packets")
        lengths = np.fromiter((len(r) for r in raws), np.uint32, len(raws))
        offsets = np.zeros(len(raws), np.uint64)
        if len(raws):
            np.cumsum(lengths[:-1], dtype=np.uint64, out=offsets[1:])
        arena = np.frombuffer(b"".join(raws), np.uint8)
        return cls._build(arena, offsets, lengths, np.array(ts, np.uint64), lts, keep_all)

    @classmethod
    def from_pcap(cls, path, keep_all=False, stream=False, window=STREAM_WINDOW, keep=0):
        """A trace of a pcap or pcapng capture (either byte order; pcap in µs or ns).

        Link types: Ethernet; raw IP (101, and 12, 14, 228, 229) and Linux cooked v1 (113) and
        v2 (276) converted to Ethernet; pcapng interfaces may mix them. Any other link type is
        ``EINVAL``. A capture cut short in its last record keeps the records before it and
        counts the cut one as ``truncated``. Timestamps are ns on the capture's clock
        (pcapng ``if_tsresol`` and ``if_tsoffset`` applied).

        With ``stream``, the trace is backed by the file itself, mapped read-only: loading
        indexes it (offsets, lengths, timestamps) and every later pass over its frames
        (classifying, ``in_order_bytes()``, ``NetDevice.receive()``) keeps about ``window``
        bytes of it resident, giving the pages back behind it, so a capture of any size loads
        and replays in bounded memory. A later pass reads the file again (from the page cache
        while the kernel keeps it), but for its first ``keep`` bytes, which stay resident once
        read: a capture that fits in ``keep`` is read once however often it is replayed. A
        streamed capture must be Ethernet throughout (``EOPNOTSUPP`` otherwise: converting raw
        IP and cooked frames needs a copy, which a trace read whole makes). The file must not
        change while the trace is in use.

        Models what a capture replay needs, not libpcap: pcapng options other than the two above,
        and blocks other than interface and packet blocks, are skipped.
        """
        path = os.fspath(path)
        for name, value, least in (("window", window, 1), ("keep", keep, 0)):
            if not isinstance(value, int) or isinstance(value, bool) or value < least:
                raise _err(errno.EINVAL, f"from_pcap: {name} {value!r} must be an int >= "
                                         f"{least} (bytes)")
        arena, offsets, lengths, ts, lts, truncated, cmap = read_capture(path, "from_pcap",
                                                                         stream, window, keep)
        _check_linktypes(lts, "from_pcap")
        if cmap is not None and len(lts) and (lts != DLT_EN10MB).any():
            lt = int(lts[np.flatnonzero(lts != DLT_EN10MB)[0]])
            raise _err(errno.EOPNOTSUPP, f"from_pcap: {path}: link type {lt}: a streamed trace "
                                         f"needs Ethernet frames (stream=False converts them)")
        return cls._build(arena, offsets, lengths, ts, lts, keep_all, truncated, cmap=cmap,
                          window=window)

    # -- files ---------------------------------------------------------------------------------

    def write_pcap(self, path, pcapng=False):
        """The frames to a pcap (or pcapng) file at ``path``, ns timestamps (needs scapy)."""
        from netmem.flows import _write_capture
        _write_capture(self, path, pcapng)

    def save(self, path):
        """Write the trace to ``path`` (exactly that name) as an ``.npz`` (``np.savez``, no
        pickle). A streamed trace saves its index only (offsets, lengths, timestamps, counts)
        with its capture's path, relative to ``path``'s directory, and the capture's identity
        (size, modification time, a digest of its first and last MiB): ``load()`` streams the
        capture again, and refuses it (``ESTALE``) if it changed since."""
        self._save(path, None)

    def _save(self, path, meta):
        path = os.fspath(path)
        if self._map is None:
            where = {"arena": self.arena}
        else:
            rel = os.path.relpath(self._map.path, os.path.dirname(os.path.abspath(path)))
            where = {"capture": np.str_(rel), "capture_key": np.str_(json.dumps(self._map.key)),
                     "window": np.int64(self.window), "keep": np.int64(self._map.keep)}
        with open(path, "wb") as f:
            np.savez(f, format=np.int64(_TRACE_FORMAT), offsets=self.offsets,
                     lengths=self.lengths, timestamps=self.timestamps,
                     linktype=np.int64(self.linktype),
                     skipped_reasons=np.array(list(self.skipped), dtype=np.str_),
                     skipped_counts=np.array(list(self.skipped.values()), np.int64),
                     payload_bytes=np.int64(self.payload_bytes),
                     cut_short=np.bool_(self.cut_short),
                     meta=np.str_(json.dumps(meta, sort_keys=True)), **where)

    @classmethod
    def load(cls, path, keep=None):
        """The trace ``save()`` wrote at ``path``; a streamed one keeps the first ``keep`` bytes
        of its capture resident (None: as it was saved)."""
        return cls._load(path, keep)[0]

    @classmethod
    def from_index_cache(cls, path, keep=0):
        """``from_pcap(path, stream=True, keep=keep)``, its index loaded from the cache
        (``index_cache_path(path)``) when the cache is that of the capture as it is now (size,
        modification time, first and last MiB), else indexed (``cache_index()`` then writes
        the cache)."""
        try:
            trace = cls.load(index_cache_path(path), keep)
            if trace.streamed and trace._map.path == os.path.abspath(path):
                trace._map.cached = True
                return trace
        except NetmemError:     # none, another capture's, stale or unreadable: index again
            pass
        return cls.from_pcap(path, stream=True, keep=keep)

    def cache_index(self):
        """Write a streamed trace's index to its capture's cache (``index_cache_path()``),
        unless it was loaded from there; a cache that cannot be written is not."""
        if self._map is None or self._map.cached:
            return
        cache = index_cache_path(self._map.path)
        tmp = f"{cache}.{os.getpid()}.tmp"
        try:
            os.makedirs(os.path.dirname(cache), exist_ok=True)
            self._save(tmp, None)
            os.replace(tmp, cache)      # a concurrent reader sees the old file or the new one
        except OSError:
            with contextlib.suppress(OSError):
                os.unlink(tmp)

    @classmethod
    def _load(cls, path, keep=None):
        path = os.fspath(path)
        try:
            with np.load(path, allow_pickle=False) as z:
                if int(z["format"]) != _TRACE_FORMAT:
                    raise _err(errno.EINVAL, f"PacketTrace.load: {path}: format "
                                             f"{int(z['format'])}, expected {_TRACE_FORMAT}")
                skipped = dict(zip(z["skipped_reasons"].tolist(),
                                   z["skipped_counts"].tolist(), strict=True))
                cmap = _open_indexed(path, z, keep) if "capture" in z.files else None
                trace = cls(z["arena"] if cmap is None else cmap.arena, z["offsets"],
                            z["lengths"], z["timestamps"], int(z["linktype"]), skipped,
                            int(z["payload_bytes"]))
                trace.cut_short = "cut_short" in z.files and bool(z["cut_short"])
                if cmap is not None:
                    trace._map, trace.window = cmap, int(z["window"])
                meta = json.loads(str(z["meta"]))
        except FileNotFoundError:
            raise _err(errno.ENOENT, f"PacketTrace.load: {path}: no such file") from None
        except NetmemError:
            raise
        except (OSError, ValueError, KeyError, EOFError) as e:
            raise _err(errno.EINVAL, f"PacketTrace.load: {path}: not a saved PacketTrace "
                                     f"({e})") from None
        return trace, meta


def _open_indexed(path, z, keep=None):
    """The ``CaptureMap`` of the capture a saved index names, if it is still the capture that
    was indexed (``ESTALE`` if not)."""
    capture = os.path.join(os.path.dirname(os.path.abspath(path)), str(z["capture"]))
    cmap = CaptureMap(capture, "PacketTrace.load", int(z["keep"]) if keep is None else keep,
                      int(z["window"]))
    if cmap.key != json.loads(str(z["capture_key"])):
        raise _err(errno.ESTALE, f"PacketTrace.load: {path}: the capture {capture} changed "
                                 f"since it was indexed (size, modification time or contents)")
    return cmap


class _TcpHeaders:
    """What ``PacketTrace._tcp_headers()`` reads, one entry per TCP frame."""

    def __init__(self, rows, six, addrs, ports, seq, flags, payload):
        self.rows, self.six, self.addrs, self.ports = rows, six, addrs, ports
        self.seq, self.flags, self.payload = seq, flags, payload

    def end(self, side, i):
        """(address string, port) of the source (side 0) or destination (1) of entry ``i``."""
        a = self.addrs[side][i]
        raw = a.tobytes() if self.six[i] else a[12:].tobytes()
        return str(ipaddress.ip_address(raw)), int(self.ports[side][i])


def _unique_rows(key):
    """The distinct rows of ``key`` (2-D, unsigned) in sorted order, as ``np.unique(key,
    axis=0, return_index=True, return_inverse=True)`` gives them: (the first index of each,
    the inverse), without its sort of whole rows (slow: a comparison of bytes per pair). The
    columns are factorised one at a time into codes that keep their order, folded into one
    code per row that sorts as the rows do."""
    code = np.zeros(len(key), np.int64)
    for col in key.T:
        values, c = np.unique(col, return_inverse=True)
        code = code * len(values) + c.reshape(-1)   # below len(key) ** 2: no overflow
        code = np.unique(code, return_inverse=True)[1].reshape(-1)
    _, first, inverse = np.unique(code, return_index=True, return_inverse=True)
    return first, inverse.reshape(-1)


_INT32 = 1 << 32
_BIG = 1 << 40          # stream positions above this (1 TiB) are clipped in _prefix()


def _serial(x):
    """``x`` as a signed 32-bit difference of sequence numbers (RFC 1982 arithmetic)."""
    return (x + (1 << 31)) % _INT32 - (1 << 31)


_BLOCK = 1 << 20        # TCP frames per _stream_bytes() call: about 130 MiB of temporaries


def _direction_blocks(ordered):
    """Ranges ``[a, b)`` of ``ordered`` (direction ids, sorted) of about ``_BLOCK`` entries
    that never split a direction (a direction with more is one block), so the streams of a
    long capture are worked out a block at a time."""
    n = len(ordered)
    edges = np.flatnonzero(ordered[1:] != ordered[:-1]) + 1
    a = 0
    while a < n:
        i = int(np.searchsorted(edges, a + _BLOCK))
        b = int(edges[i]) if i < len(edges) else n
        yield a, b
        a = b


def _stream_bytes(direction, seq, flags, payload):
    """``PacketTrace.in_order_bytes()`` over the frames of each direction, in capture order
    (``direction`` sorted): (the first entry of each stream, its bytes delivered in order)."""
    syn = (flags & TCPHDR_SYN) != 0
    new = np.r_[True, direction[1:] != direction[:-1]]
    at = np.flatnonzero(syn)                # a SYN with another ISN: the 4-tuple reused
    new[at[1:][(direction[at[1:]] == direction[at[:-1]]) & (seq[at[1:]] != seq[at[:-1]])]] = True
    starts = np.flatnonzero(new)
    stream = np.cumsum(new) - 1
    step = _serial(np.diff(seq, prepend=0))
    step[starts] = -syn[starts].astype(np.int64)    # a SYN is one before its first byte
    pos = np.cumsum(step)
    pos -= np.repeat(pos[starts] - step[starts], np.diff(np.r_[starts, len(seq)]))
    ack = (flags & TCPHDR_ACK) != 0
    data = ack & ~syn & (payload > 0)
    got = _prefix(stream[data], pos[data], pos[data] + payload[data], len(starts))
    fin = np.flatnonzero(ack & ~syn & ((flags & TCPHDR_FIN) != 0))
    fin = fin[pos[fin] <= got[stream[fin]]]         # a FIN the stream reaches ends it
    cap = np.full(len(starts), _BIG, np.int64)
    np.minimum.at(cap, stream[fin], pos[fin] + payload[fin])
    return starts, np.maximum(np.minimum(got, cap), 0)


def _prefix(stream, start, end, count):
    """Per stream, how far from 0 the intervals [start, end) reach without a hole."""
    order = np.lexsort((start, stream))
    stream, start, end = stream[order], start[order], end[order]
    reach = np.maximum.accumulate(np.clip(end, 0, _BIG - 1) + stream * _BIG) - stream * _BIG
    before = np.r_[0, reach[:-1]]
    first = np.r_[True, stream[1:] != stream[:-1]] if len(stream) else np.zeros(0, bool)
    before[first] = 0
    out = np.zeros(count, np.int64)
    last = np.r_[stream[1:] != stream[:-1], True] if len(stream) else np.zeros(0, bool)
    out[stream[last]] = reach[last]
    hole = np.flatnonzero(start > before)
    holed, at = np.unique(stream[hole], return_index=True)
    out[holed] = before[hole[at]]
    return out
