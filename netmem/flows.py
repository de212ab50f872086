"""Flows: TCP traffic for the RX path, generated or read from a capture, held as a ``PacketTrace``.

A ``PacketTrace`` is every frame of a capture in one numpy bytes arena with ``offsets``,
``lengths`` (captured length) and ``timestamps`` (ns) arrays: built once, then replayed without a
Python object per packet. Frames are Ethernet (raw IP and Linux cooked captures get a synthesised
Ethernet header on load) and, unless ``keep_all=True``, TCP over IPv4 or IPv6 only: the rest is
counted in ``trace.skipped`` by reason (``classify_frame()`` is the reference classifier; a
vectorised twin runs on loads). ``generate()`` builds N TCP connections with handshakes, data and
FINs, optional VLAN tag, the ncdevmem validation pattern, and seeded impairments (loss with
retransmission, reordering, duplication, overlapping retransmits, sequence wrap); it returns the
trace and the byte streams a correct receiver must reassemble. scapy is imported only inside the
functions that need it (``from_packets`` and the pcap writers); reading pcap and pcapng is our own
small reader over the file's bytes.
"""
import dataclasses
import errno
import heapq
import ipaddress
import json
import os
import struct
from decimal import Decimal

import numpy as np

from netmem.errors import NetmemError

__all__ = [
    "DLT_EN10MB", "DLT_LINUX_SLL", "DLT_LINUX_SLL2", "DLT_RAW", "SKIP_REASONS",
    "Connection", "FlowParams", "Flows", "PacketTrace", "cached_trace", "classify_frame",
    "generate", "ncdevmem_pattern",
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
_MAX_SNAPLEN = 262144   # libpcap's MAXIMUM_SNAPLEN: a larger record length is corruption
_TRACE_FORMAT = 1       # the .npz layout version written by PacketTrace.save()


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
    doff = (r.u8(r.p + r.ihl + 12) >> 4) * 4
    r.set(doff=doff)
    r.decide((doff < 20) | (doff > r.tot - r.ihl), _MALFORMED)
    r.code[r.rows] = _TCP4
    payload[r.rows] = r.tot - r.ihl - r.doff
    _put_offsets(r, l3, l4, r.ihl)


def _put_offsets(r, l3, l4, l4_rel):
    """Store the IP and TCP header offsets of the TCP rows ``r`` (``l4_rel`` past the IP's)."""
    if l3 is not None:
        l3[r.rows] = r.p
    if l4 is not None:
        l4[r.rows] = r.p + l4_rel


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
    doff = (r.u8(r.p + r.pos + 12) >> 4) * 4
    r.set(doff=doff)
    r.decide((doff < 20) | (doff > r.end - r.pos), _MALFORMED)
    r.code[r.rows] = _TCP6
    payload[r.rows] = r.end - r.pos - r.doff
    _put_offsets(r, l3, l4, r.pos)


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


def _gather_u32(arena, pos, little):
    """Unaligned 32-bit loads at ``pos`` (int64 array), as uint64."""
    b = [arena[pos + k].astype(np.uint64) for k in range(4)]
    if not little:
        b.reverse()
    return b[0] | b[1] << np.uint64(8) | b[2] << np.uint64(16) | b[3] << np.uint64(24)


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
# Capture file readers: pcap and pcapng over the file's bytes, no scapy.


def _read_pcap(data, arena, path):
    """Walk a pcap file: (data offsets, captured lengths, ns timestamps, linktypes, truncated)."""
    magic = data[:4]
    little, nano = {b"\xd4\xc3\xb2\xa1": (True, False), b"\x4d\x3c\xb2\xa1": (True, True),
                    b"\xa1\xb2\xc3\xd4": (False, False), b"\xa1\xb2\x3c\x4d": (False, True)}[magic]
    e = "<" if little else ">"
    if len(data) < 24:
        raise _err(errno.EINVAL, f"from_pcap: {path}: truncated pcap file header "
                                 f"({len(data)} of 24 bytes)")
    snaplen, network = struct.unpack_from(e + "II", data, 16)
    linktype = network & 0xFFFF  # the upper bits carry the FCS length
    limit = max(snaplen, _MAX_SNAPLEN)
    incl_at = struct.Struct(e + "I").unpack_from
    heads = []
    append = heads.append
    pos, end = 24, len(data)
    while pos + 16 <= end:
        incl = incl_at(data, pos + 8)[0]
        nxt = pos + 16 + incl
        if nxt > end:
            break
        append(pos)
        pos = nxt
    truncated = int(pos != end)
    if truncated and pos + 16 <= end and incl_at(data, pos + 8)[0] > limit:
        raise _err(errno.EINVAL, f"from_pcap: {path}: record {len(heads)} at byte {pos}: "
                                 f"captured length {incl_at(data, pos + 8)[0]} exceeds the "
                                 f"snapshot length {snaplen}")
    h = np.array(heads, np.int64)
    sec = _gather_u32(arena, h, little)
    frac = _gather_u32(arena, h + 4, little)
    incl = _gather_u32(arena, h + 8, little)
    over = np.flatnonzero(incl > limit)
    if len(over):
        i = int(over[0])
        raise _err(errno.EINVAL, f"from_pcap: {path}: record {i} at byte {int(h[i])}: captured "
                                 f"length {int(incl[i])} exceeds the snapshot length {snaplen}")
    ts = sec * np.uint64(1_000_000_000) + frac * np.uint64(1 if nano else 1000)
    lt = np.full(len(h), linktype, np.int64)
    return h + 16, incl, ts, lt, truncated


def _idb_options(data, e, pos, end):
    """(ns per tick as a (num, den) pair, ts offset in s) from an IDB's options."""
    num, den, tsoffset = 1000, 1, 0  # if_tsresol defaults to 10^-6 s
    while pos + 4 <= end:
        code, olen = struct.unpack_from(e + "HH", data, pos)
        if code == 0:
            break
        val = data[pos + 4:pos + 4 + olen]
        if code == 9 and olen >= 1:  # if_tsresol
            r = val[0]
            if r & 0x80:
                num, den = 1_000_000_000, 1 << (r & 0x7F)
            elif (r & 0x7F) <= 9:
                num, den = 10 ** (9 - (r & 0x7F)), 1
            else:
                num, den = 1, 10 ** ((r & 0x7F) - 9)
        elif code == 14 and olen >= 8:  # if_tsoffset, seconds
            tsoffset = struct.unpack_from(e + "q", val)[0]
        pos += 4 + olen + (-olen % 4)
    return num, den, tsoffset


def _read_pcapng(data, path):
    """Walk a pcapng file: (data offsets, captured lengths, ns timestamps, linktypes,
    truncated). Enhanced, simple and obsolete packet blocks; other blocks are skipped."""
    offs, lens, ticks, ifs = [], [], [], []
    interfaces = []  # every IDB of the file: (linktype, snaplen, num, den, tsoffset)
    section = []     # indices into interfaces of the current section's IDBs
    e = "<"
    pos, end = 0, len(data)
    truncated = 0
    while pos + 12 <= end:
        if data[pos:pos + 4] == b"\x0a\x0d\x0d\x0a":  # SHB: byte order from its magic
            bom = data[pos + 8:pos + 12]
            if bom == b"\x4d\x3c\x2b\x1a":
                e = "<"
            elif bom == b"\x1a\x2b\x3c\x4d":
                e = ">"
            else:
                raise _err(errno.EINVAL, f"from_pcap: {path}: section header at byte {pos}: bad "
                                         f"byte-order magic {bom.hex()}")
            section = []
        btype, blen = struct.unpack_from(e + "II", data, pos)
        if blen < 12 or blen % 4:
            raise _err(errno.EINVAL, f"from_pcap: {path}: block at byte {pos}: bad block length "
                                     f"{blen}")
        if pos + blen > end:
            truncated = 1
            break
        bend = pos + blen - 4
        if btype == 1:  # IDB
            if blen < 20:
                raise _err(errno.EINVAL, f"from_pcap: {path}: interface block at byte {pos} is "
                                         f"too short")
            lt, snap = struct.unpack_from(e + "H2xI", data, pos + 8)
            section.append(len(interfaces))
            interfaces.append((lt, snap, *_idb_options(data, e, pos + 16, bend)))
        elif btype in (6, 2):  # EPB, obsolete PB: same layout up to the data
            if btype == 6:
                ifid, hi, lo, cap = struct.unpack_from(e + "IIII", data, pos + 8)
            else:
                ifid, hi, lo, cap = struct.unpack_from(e + "H2xIII", data, pos + 8)
            if pos + 28 + cap > bend or ifid >= len(section):
                raise _err(errno.EINVAL, f"from_pcap: {path}: packet block at byte {pos}: "
                                         f"captured length {cap} or interface {ifid} invalid")
            offs.append(pos + 28)
            lens.append(cap)
            ticks.append(hi << 32 | lo)
            ifs.append(section[ifid])
        elif btype == 3:  # SPB: interface 0, no timestamp, length from the snaplen
            if not section:
                raise _err(errno.EINVAL, f"from_pcap: {path}: simple packet block at byte {pos} "
                                         f"before any interface")
            orig = struct.unpack_from(e + "I", data, pos + 8)[0]
            snap = interfaces[section[0]][1]
            cap = min(orig, snap or orig, bend - (pos + 12))
            offs.append(pos + 12)
            lens.append(cap)
            ticks.append(ticks[-1] if ticks else 0)
            ifs.append(section[0])
        pos += blen
    if pos < end:
        truncated = 1
    count = len(offs)
    ts = np.zeros(count, np.uint64)
    lt = np.zeros(count, np.int64)
    ifs_a = np.array(ifs, np.int64)
    ticks_a = np.array(ticks, np.uint64)
    for i, (linktype, _snap, num, den, tsoffset) in enumerate(interfaces):
        sel = ifs_a == i
        if not sel.any():
            continue
        lt[sel] = linktype
        t = ticks_a[sel]
        if den == 1:
            ns = t * np.uint64(num)
        else:  # exact: ticks * num // den without overflow for any realistic capture
            q, rem = np.divmod(t, np.uint64(den))
            ns = q * np.uint64(num) + rem * np.uint64(num) // np.uint64(den)
        shift = tsoffset * 1_000_000_000
        if shift >= 0:
            ts[sel] = ns + np.uint64(shift)
        else:  # a negative offset, clamped at the epoch
            back = np.uint64(-shift)
            ts[sel] = np.where(ns > back, ns - np.minimum(ns, back), 0)
    return np.array(offs, np.int64), np.array(lens, np.uint64), ts, lt, truncated


# --------------------------------------------------------------------------------------------
# PacketTrace.


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

    def tcp_streams(self):
        """The trace's TCP conversations numbered as tshark numbers ``tcp.stream``: in the
        order of their first frame. A list indexed by stream number of ``(node0, node1)``, each
        an ``(address string, port)`` pair, ``node0`` the side that sent the stream's first
        frame (the client when the SYN is in the trace), as ``tshark -z follow,tcp`` names them.

        Only the frames the classifier keeps are numbered: tshark also numbers TCP it finds in
        frames skipped here (IP fragments, frames cut by the snapshot length), which shifts its
        later indices. A 4-tuple that a later connection reuses stays one stream here, where
        tshark starts a new one on its SYN (port reuse)."""
        h = self._tcp_headers()
        if not len(h.rows):
            return []
        six, addrs, ports = h.six, h.addrs, h.ports
        ends = [np.column_stack([a.view(">u8").astype(np.uint64), p])
                for a, p in zip(addrs, ports, strict=True)]      # (hi, lo, port) per side
        src, dst = ends
        hi_lt = src[:, 0] < dst[:, 0]
        hi_eq = src[:, 0] == dst[:, 0]
        lo_lt = src[:, 1] < dst[:, 1]
        lo_eq = src[:, 1] == dst[:, 1]
        src_low = hi_lt | (hi_eq & (lo_lt | (lo_eq & (src[:, 2] <= dst[:, 2]))))
        low = np.where(src_low[:, None], src, dst)
        high = np.where(src_low[:, None], dst, src)
        key = np.column_stack([six.astype(np.uint64), low, high])
        _, first = np.unique(key, axis=0, return_index=True)
        return [(h.end(0, i), h.end(1, i)) for i in np.sort(first).tolist()]

    def _tcp_headers(self):
        """The TCP frames' headers, vectorised: ``rows`` (their frame indices), ``six``,
        ``addrs`` (source and destination, 16 bytes each, IPv4 in the last 4), ``ports``
        (source, destination), ``seq``, ``flags``, ``payload`` (TCP payload lengths)."""
        count = len(self)
        l3, l4 = np.zeros(count, np.int64), np.zeros(count, np.int64)
        code, payload = _classify_arena(self.arena, self.offsets, self.lengths, l3, l4)
        rows = np.flatnonzero(code <= _TCP6)
        arena = self.arena
        base = self.offsets[rows].astype(np.int64)
        six = code[rows] == _TCP6
        ip = base + l3[rows]
        tcp = base + l4[rows]
        addrs = []                                  # source, destination: 16 bytes each
        for v4_at, v6_at in ((12, 8), (16, 24)):
            a = np.zeros((len(rows), 16), np.uint8)
            a[~six, 12:] = arena[ip[~six, None] + v4_at + np.arange(4)]
            a[six] = arena[ip[six, None] + v6_at + np.arange(16)]
            addrs.append(a)
        ports = [arena[tcp + k].astype(np.uint64) << np.uint64(8) | arena[tcp + k + 1]
                 for k in (0, 2)]
        return _TcpHeaders(rows, six, addrs, ports, _gather_u32(arena, tcp + 4, False),
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
        direction add up.

        Departs from the receiver: the order of frames decides nothing but the start, so a
        hole filled after the stream's FIN, a RST (which ends the socket; a later segment opens
        another mid-flow) and a receive queue over ``sk_rcvbuf`` are not modelled here, and a
        new SYN counts as a new stream even before the old connection ended.

        :param deliver: bool per frame, the frames the receiver gets (default: all); a frame
            the NIC drops (longer than its MTU) is not delivered
        """
        h = self._tcp_headers()
        keep = ((h.flags & TCPHDR_RST) == 0) if deliver is None else \
            np.asarray(deliver, bool)[h.rows] & ((h.flags & TCPHDR_RST) == 0)
        at = np.flatnonzero(keep)           # a RST opens no socket and carries no data
        if not len(at):
            return {}
        key = np.column_stack([h.six[at], *(a[at].view(">u8") for a in h.addrs),
                               *(p[at] for p in h.ports)]).astype(np.uint64)
        _, first, direction = np.unique(key, axis=0, return_index=True, return_inverse=True)
        order = np.argsort(direction.reshape(-1), kind="stable")    # capture order in each
        inc, got = _stream_bytes(direction.reshape(-1)[order], h.seq[at][order].astype(np.int64),
                                 h.flags[at][order].astype(np.int64), h.payload[at][order])
        out = {}
        for d, n in zip(direction.reshape(-1)[order][inc].tolist(), got.tolist(), strict=True):
            i = int(at[first[d]])
            ends = (h.end(0, i), h.end(1, i))
            out[ends] = out.get(ends, 0) + n
        return out

    def l3_lengths(self):
        """Each frame's length as the NIC holds it against its MTU: the frame less its Ethernet
        header and the VLAN tags the device strips (up to two, 0x8100 or 0x88a8, as the model
        driver's parser counts them: ``nm_rx_frame()`` drops a frame longer than ``mtu +
        ETH_HLEN + tags * VLAN_HLEN`` as ``rx_length_errors``). Padding and the bytes past the
        IP header's total length count, as they do on the wire. A frame shorter than an
        Ethernet header gives 0 (the device drops it as a runt whatever the MTU). ``np.int64``,
        one per frame."""
        n = self.lengths.astype(np.int64)
        base = self.offsets.astype(np.int64)
        off = np.full(len(n), 12, np.int64)                 # the EtherType after the MACs
        runt = n < ETH_HLEN
        for _ in range(2):
            rows = np.flatnonzero(off + 6 <= n)             # room for a tag and what follows
            at = base[rows] + off[rows]
            et = self.arena[at].astype(np.int64) << 8 | self.arena[at + 1]
            off[rows[(et == ETH_P_8021Q) | (et == ETH_P_8021AD)]] += VLAN_HLEN
        return np.where(runt, 0, n - off - 2)

    def __repr__(self):
        skipped = ", ".join(f"{k}={v}" for k, v in self.skipped.items() if v)
        return (f"<PacketTrace {len(self)} frames, {int(self.lengths.sum(dtype=np.uint64))} "
                f"bytes, TCP payload {self.payload_bytes} bytes, linktype {self.linktype}"
                f"{', skipped ' + skipped if skipped else ''}>")

    # -- building ------------------------------------------------------------------------------

    @classmethod
    def _build(cls, arena, offsets, lengths, timestamps, linktypes, keep_all, truncated=0,
               bad=None):
        """Classify, count, drop (unless keep_all) and compact. ``linktypes`` per frame;
        non-Ethernet frames are converted first."""
        if len(linktypes) and (linktypes != DLT_EN10MB).any():
            arena, offsets, lengths, bad = _to_ethernet(arena, offsets, lengths, linktypes)
        code, payload = _classify_arena(arena, offsets, lengths)
        if bad is not None:
            code[bad] = _MALFORMED
        counts = np.bincount(code.astype(np.int64), minlength=len(_CLASSES))
        skipped = {r: int(counts[i + 2]) for i, r in enumerate(SKIP_REASONS)}
        skipped["truncated"] += truncated
        keep = slice(None) if keep_all else code <= _TCP6
        offsets, lengths = offsets[keep], lengths[keep]
        if int(lengths.sum(dtype=np.uint64)) < _COMPACT_BELOW * len(arena):
            arena, offsets = _compact(arena, offsets, lengths)
        trace = cls(arena, offsets, lengths, timestamps[keep], DLT_EN10MB, skipped,
                    int(payload[keep].sum(dtype=np.uint64)))
        trace.cut_short = bool(truncated)
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
    def from_pcap(cls, path, keep_all=False):
        """A trace of a pcap or pcapng capture (either byte order; pcap in µs or ns).

        Link types: Ethernet; raw IP (101, and 12, 14, 228, 229) and Linux cooked v1 (113) and
        v2 (276) converted to Ethernet; pcapng interfaces may mix them. Any other link type is
        ``EINVAL``. A capture cut short in its last record keeps the records before it and
        counts the cut one as ``truncated``. Timestamps are ns on the capture's clock
        (pcapng ``if_tsresol`` and ``if_tsoffset`` applied).

        Models what a capture replay needs, not libpcap: pcapng options other than the two above,
        and blocks other than interface and packet blocks, are skipped.
        """
        path = os.fspath(path)
        try:
            with open(path, "rb") as f:
                data = f.read()
        except FileNotFoundError:
            raise _err(errno.ENOENT, f"from_pcap: {path}: no such file") from None
        except IsADirectoryError:
            raise _err(errno.EISDIR, f"from_pcap: {path}: is a directory") from None
        if len(data) < 4:
            raise _err(errno.EINVAL, f"from_pcap: {path}: not a pcap or pcapng file "
                                     f"({len(data)} bytes)")
        arena = np.frombuffer(data, np.uint8)
        if data[:4] == b"\x0a\x0d\x0d\x0a":
            if len(data) < 28:
                raise _err(errno.EINVAL, f"from_pcap: {path}: truncated pcapng section header")
            offsets, lengths, ts, lts, truncated = _read_pcapng(data, path)
        elif data[:4] in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1", b"\xa1\xb2\xc3\xd4",
                          b"\xa1\xb2\x3c\x4d"):
            offsets, lengths, ts, lts, truncated = _read_pcap(data, arena, path)
        else:
            raise _err(errno.EINVAL, f"from_pcap: {path}: not a pcap or pcapng file (magic "
                                     f"{data[:4].hex()})")
        _check_linktypes(lts, "from_pcap")
        return cls._build(arena, offsets, lengths, ts, lts, keep_all, truncated)

    # -- files ---------------------------------------------------------------------------------

    def write_pcap(self, path, pcapng=False):
        """The frames to a pcap (or pcapng) file at ``path``, ns timestamps (needs scapy)."""
        _write_capture(self, path, pcapng)

    def save(self, path):
        """Write the trace to ``path`` (exactly that name) as an ``.npz`` (``np.savez``, no
        pickle)."""
        self._save(path, None)

    def _save(self, path, meta):
        with open(os.fspath(path), "wb") as f:
            np.savez(f, format=np.int64(_TRACE_FORMAT), arena=self.arena, offsets=self.offsets,
                     lengths=self.lengths, timestamps=self.timestamps,
                     linktype=np.int64(self.linktype),
                     skipped_reasons=np.array(list(self.skipped), dtype=np.str_),
                     skipped_counts=np.array(list(self.skipped.values()), np.int64),
                     payload_bytes=np.int64(self.payload_bytes),
                     cut_short=np.bool_(self.cut_short),
                     meta=np.str_(json.dumps(meta, sort_keys=True)))

    @classmethod
    def load(cls, path):
        """The trace ``save()`` wrote at ``path``."""
        return cls._load(path)[0]

    @classmethod
    def _load(cls, path):
        path = os.fspath(path)
        try:
            with np.load(path, allow_pickle=False) as z:
                if int(z["format"]) != _TRACE_FORMAT:
                    raise _err(errno.EINVAL, f"PacketTrace.load: {path}: format "
                                             f"{int(z['format'])}, expected {_TRACE_FORMAT}")
                skipped = dict(zip(z["skipped_reasons"].tolist(),
                                   z["skipped_counts"].tolist(), strict=True))
                trace = cls(z["arena"], z["offsets"], z["lengths"], z["timestamps"],
                            int(z["linktype"]), skipped, int(z["payload_bytes"]))
                trace.cut_short = "cut_short" in z.files and bool(z["cut_short"])
                meta = json.loads(str(z["meta"]))
        except FileNotFoundError:
            raise _err(errno.ENOENT, f"PacketTrace.load: {path}: no such file") from None
        except NetmemError:
            raise
        except (OSError, ValueError, KeyError, EOFError) as e:
            raise _err(errno.EINVAL, f"PacketTrace.load: {path}: not a saved PacketTrace "
                                     f"({e})") from None
        return trace, meta


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


_INT32 = 1 << 32
_BIG = 1 << 40          # stream positions above this (1 TiB) are clipped in _prefix()


def _serial(x):
    """``x`` as a signed 32-bit difference of sequence numbers (RFC 1982 arithmetic)."""
    return (x + (1 << 31)) % _INT32 - (1 << 31)


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


# --------------------------------------------------------------------------------------------
# The generator.

_SYN, _SYNACK, _ACK, _DATA, _FIN = range(5)
# include/net/tcp.h
TCPHDR_FIN, TCPHDR_SYN, TCPHDR_RST, TCPHDR_PSH, TCPHDR_ACK = 0x01, 0x02, 0x04, 0x08, 0x10
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
        ``cached_trace``)."""
        path = os.fspath(path)
        _write_capture(self.trace, path, pcapng)
        meta = _cache_key(self.params, pcapng, path)
        self.trace._save(path + ".npz", meta)


def cached_trace(path, pcapng=False, params=None, **kwargs):
    """The trace of ``path + ".npz"`` if ``Flows.write_pcap(path, pcapng)`` wrote it, and
    ``path`` beside it, for these parameters (``params``, or a ``FlowParams(**kwargs)``);
    None otherwise. So a second run with the same parameters reuses the capture and its trace
    instead of generating them again (``netmem-flows`` does); a capture replaced since (its
    size differs), a cache of other parameters or written with another numpy is not reused."""
    path = os.fspath(path)
    params = params if params is not None else FlowParams(**kwargs)
    if not (os.path.isfile(path) and os.path.isfile(path + ".npz")):
        return None
    try:
        trace, meta = PacketTrace._load(path + ".npz")
    except NetmemError:
        return None
    return trace if meta == _cache_key(params, pcapng, path) else None


def _cache_key(params, pcapng, path):
    # numpy's version: a release may change what Generator methods draw from the same seed.
    return {"params": params.key(), "pcapng": bool(pcapng), "numpy": np.__version__,
            "size": os.path.getsize(path)}


def _write_capture(trace, path, pcapng):
    """The frames of ``trace`` to ``path`` through scapy's raw writers (bytes, not packets)."""
    from scapy.utils import RawPcapNgWriter, RawPcapWriter

    class _NsPcapNgWriter(RawPcapNgWriter):
        """scapy's pcapng writer with ns timestamps: its one IDB carries ``if_tsresol`` = 9
        (scapy writes none, so µs)."""

        def __init__(self, filename):
            super().__init__(filename)
            self.tsresol = 1_000_000_000

        def _write_block_idb(self, linktype, ifname=None):
            opts = struct.pack("<HHB3x", 9, 1, 9) + struct.pack("<HH", 0, 0)
            body = struct.pack("<HHI", linktype, 0, _MAX_SNAPLEN)
            self.f.write(self.build_block(struct.pack("<I", 1), body, options=opts))

    w = _NsPcapNgWriter(path) if pcapng else RawPcapWriter(path, linktype=DLT_EN10MB, nano=True,
                                                            snaplen=_MAX_SNAPLEN)
    w.linktype = DLT_EN10MB
    try:
        w.write_header(None)
        arena = trace.arena
        for o, n, t in zip(trace.offsets.tolist(), trace.lengths.tolist(),
                           trace.timestamps.tolist(), strict=True):
            raw = arena[o:o + n].tobytes()
            if pcapng:  # seconds as a Decimal: exact in ns
                w.write_packet(raw, sec=Decimal(t) / 1_000_000_000)
            else:
                w.write_packet(raw, sec=t // 1_000_000_000, usec=t % 1_000_000_000)
    finally:
        w.close()


def ncdevmem_pattern(n, length, start=0):
    """ncdevmem's ``validate_buffer()`` expectation for ``-v n``, ``length`` bytes from stream
    byte ``start`` (``np.uint8``): its seed runs 1, 2, ..., N-1, 0 (an ``unsigned char``, so at
    most 256 values), and a seed of 0 is expected as ``'\\n'``."""
    period = n if n <= 256 else 256
    seeds = (np.arange(start, start + length, dtype=np.int64) + 1) % period
    return np.where(seeds == 0, 10, seeds).astype(np.uint8)


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
    p = params
    rng = np.random.default_rng(p.seed)
    nconn = p.connections
    fams = np.full(nconn, 6 if p.family == "ipv6" else 4, np.int64)
    if p.family == "both":
        fams[1::2] = 6
    isns = (rng.integers(0, 1 << 32, size=(nconn, 2), dtype=np.uint64) if p.isn is None
            else np.full((nconn, 2), p.isn, np.uint64))
    ipids = rng.integers(0, 1 << 16, size=(nconn, 2)).tolist()
    length = p.payload
    ndir = 2 if p.bidirectional else 1
    if p.validate is not None:
        one = ncdevmem_pattern(p.validate, length).tobytes()
        streams = [one] * (nconn * ndir)
    else:
        # The bit generator's raw 64-bit words: stable across numpy versions, and 17 times
        # faster than Generator.bytes().
        total = length * nconn * ndir
        words = rng.bit_generator.random_raw((total + 7) // 8).astype("<u8", copy=False)
        blob = words.view(np.uint8)[:total].tobytes()
        streams = [blob[i * length:(i + 1) * length] for i in range(nconn * ndir)]

    conns, raw_addrs, pk = [], [], []  # pk: per connection (dirs, kinds, starts, ends)
    for c in range(nconn):
        fam = int(fams[c])
        mss = p.mss_for(fam)
        host, port = 2 + c // _EPHEMERAL, 32768 + c % _EPHEMERAL
        caddr, craw = _address(fam, host)
        saddr, sraw = _address(fam, 1)
        raw_addrs.append((craw, sraw))
        to_client = streams[c * ndir + 1] if ndir == 2 else b""
        conns.append(Connection(c, fam, (caddr, port), (saddr, _SERVER_PORT), p.vlan,
                                int(isns[c, 0]), int(isns[c, 1]), streams[c * ndir], to_client))
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
    conn_of = np.repeat(np.arange(nconn), [len(x[0]) for x in pk])[order]
    dirs, kinds, starts, ends = (np.concatenate([x[i] for x in pk])[order] for i in range(4))
    trace = _build_frames(p, conns, raw_addrs, ipids, conn_of, dirs, kinds, starts, ends)
    return Flows(p, trace, conns)


def _build_frames(p, conns, raw_addrs, ipids, conn_of, dirs, kinds, starts, ends):
    """The frames of the packets described by the arrays, in their order, as a PacketTrace:
    headers and payload written per packet with ``struct`` into one arena (frames at even
    offsets), then every IPv4 and TCP checksum computed at once with numpy."""
    vlan_len = VLAN_HLEN if p.vlan is not None else 0
    fam6 = np.array([c.family == 6 for c in conns])[conn_of]
    l3 = ETH_HLEN + vlan_len
    iphl = np.where(fam6, 40, 20)
    opt = np.where(kinds <= _SYNACK, _TCPOLEN_MSS, 0)
    tcp_len = 20 + opt + (ends - starts) * (kinds == _DATA)
    flen = np.maximum(l3 + iphl + tcp_len, ETH_ZLEN)
    stride = flen + (flen & 1)  # even offsets: 16-bit words line up for the checksums
    offsets = np.zeros(len(flen), np.int64)
    np.cumsum(stride[:-1], out=offsets[1:])
    arena = np.zeros(int(stride.sum()) + 2, np.uint8)  # + 2: see _ones_sum
    mv = memoryview(arena)

    # Per (connection, direction): the header bytes that never change, and the pseudo-header.
    tmpl, pseudo, isn = {}, {}, {}
    for c, (caddr, saddr) in zip(conns, raw_addrs, strict=True):
        for d, (src, dst, smac, dmac, sport, dport) in enumerate((
                (caddr, saddr, _MAC_CLIENT, _MAC_SERVER, c.client[1], c.server[1]),
                (saddr, caddr, _MAC_SERVER, _MAC_CLIENT, c.server[1], c.client[1]))):
            eth = dmac + smac
            if p.vlan is not None:
                eth += struct.pack("!HH", ETH_P_8021Q, p.vlan)
            if c.family == 4:
                ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 0, 0, _IP_DF, _TTL, IPPROTO_TCP, 0,
                                 src, dst)
                eth += struct.pack("!H", ETH_P_IP)
            else:
                ip = struct.pack("!IHBB16s16s", 6 << 28, 0, IPPROTO_TCP, _TTL, src, dst)
                eth += struct.pack("!H", ETH_P_IPV6)
            tmpl[c.index, d] = eth + ip + struct.pack("!HH", sport, dport)
            pseudo[c.index, d] = _pseudo_sum(src, dst)
        isn[c.index, 0], isn[c.index, 1] = c.client_isn, c.server_isn

    streams = {(c.index, 0): memoryview(c.to_server) for c in conns}
    streams.update({(c.index, 1): memoryview(c.to_client) for c in conns})
    length = p.payload
    # (conn, dir) -> the peer's rcv_nxt for that direction, as a stream offset (+1 once the FIN
    # is in): the ACK number the peer sends. Out-of-order segments wait in a heap until the hole
    # before them fills, so nothing unseen is acknowledged.
    rcv_nxt, ooo = {}, {}
    mss_opt = {c.index: struct.pack("!BBH", 2, 4, p.mss_for(c.family)) for c in conns}
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
            flags = {_SYN: TCPHDR_SYN, _SYNACK: TCPHDR_SYN | TCPHDR_ACK, _ACK: TCPHDR_ACK}[kind]
        ack = 0 if kind == _SYN else (isn[c, 1 - d] + 1 + rcv_nxt.get((c, 1 - d), 0)) & mask
        if is6:
            pack_v6(arena, ip + 4, 20 + optlen + plen)
        else:
            pack_v4(arena, ip + 2, 40 + optlen + plen, ipids[c][d] & 0xFFFF)
            ipids[c][d] += 1
        pack_tcp(arena, tcp + 4, seq & mask, ack, (5 + optlen // 4) << 4, flags, _TCP_WINDOW)
        if optlen:
            mv[tcp + 20:tcp + 24] = mss_opt[c]
        if plen:
            mv[tcp + 20:tcp + 20 + plen] = streams[c, d][s:e]

    ip_off = offsets + l3
    tcp_off = ip_off + iphl
    psum = np.array([pseudo[k] for k in zip(conn_of.tolist(), dirs.tolist(), strict=True)],
                    np.uint64) + tcp_len.astype(np.uint64)
    _put_csum(arena, tcp_off + 16, _ones_sum(arena, tcp_off, tcp_len) + psum)
    v4 = ~fam6
    _put_csum(arena, ip_off[v4] + 10, _ones_sum(arena, ip_off[v4], np.full(v4.sum(), 20)))

    wire = np.ceil((flen + _WIRE_OVERHEAD) * 8 / p.link_gbps).astype(np.uint64)
    ts = np.zeros(len(flen), np.uint64)
    np.cumsum(wire[:-1], out=ts[1:])
    pay = int(((ends - starts) * (kinds == _DATA)).sum())
    return PacketTrace(arena[:-2], offsets, flen, ts, DLT_EN10MB, None, pay)


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
