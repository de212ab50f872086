"""Tests of ``netmem.flows``: the frame classifier (crafted bad frames, and the vectorised twin
held to the reference on thousands of mutants), ``PacketTrace`` round trips (frames, scapy
packets, pcap and pcapng in both byte orders and resolutions, raw IP and Linux cooked link
types, npz), bad files, and the generator: frames checked against scapy, TCP reassembly by
tshark equal to the expected streams byte for byte under every impairment, determinism, the
ncdevmem pattern, the trace cache and ``netmem-flows``.

tshark is the oracle (``make tshark``); a test that needs it fails when it is missing.
"""
import errno
import os
import struct

import numpy as np
import pytest
from netmem.tools import flows as flows_tool
from rxutil import capture_with_holes
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.inet6 import (
    ICMPv6EchoRequest,
    IPv6,
    IPv6ExtHdrDestOpt,
    IPv6ExtHdrFragment,
    IPv6ExtHdrHopByHop,
    IPv6ExtHdrRouting,
)
from scapy.layers.l2 import ARP, LLC, Dot1AD, Dot1Q, Dot3, Ether
from scapy.packet import Raw
from scapy.utils import PcapNgWriter, RawPcapWriter, rdpcap, wrpcap

from netmem import NetmemError, flows, packet_trace, testing
from netmem.flows import FlowParams, PacketTrace, classify_frame, generate

C4, S4 = "192.0.2.2", "192.0.2.1"
C6, S6 = "2001:db8::2", "2001:db8::1"


def eth():
    return Ether(src="02:00:00:00:00:02", dst="02:00:00:00:00:01")


def tcp(data=b"x" * 100, **kw):
    return TCP(sport=40000, dport=5201, flags="A", seq=1000, ack=1, **kw) / Raw(data)


def v4(data=b"x" * 100, **kw):
    return bytes(eth() / IP(src=C4, dst=S4, **kw) / tcp(data))


def v6(*ext, data=b"x" * 100):
    p = IPv6(src=C6, dst=S6)
    for h in ext:
        p = p / h
    return bytes(eth() / p / tcp(data))


def patch(frame, at, value):
    b = bytearray(frame)
    b[at:at + len(value)] = value
    return bytes(b)


# -- the classifier --------------------------------------------------------------------------

GOOD = {
    "ipv4": (v4(), "tcp4"),
    "ipv4 options": (v4(options=[b"\x01" * 8]), "tcp4"),
    "ipv4 padded to 60": (v4(data=b""), "tcp4"),
    "ipv6": (v6(), "tcp6"),
    "vlan": (bytes(eth() / Dot1Q(vlan=5) / IP(src=C4, dst=S4) / tcp()), "tcp4"),
    "qinq": (bytes(eth() / Dot1AD(vlan=7) / Dot1Q(vlan=5) / IPv6(src=C6, dst=S6) / tcp()),
             "tcp6"),
    "double 802.1Q": (bytes(eth() / Dot1Q(vlan=7) / Dot1Q(vlan=5) / IP(src=C4, dst=S4) / tcp()),
                      "tcp4"),
    "ipv6 ext headers": (v6(IPv6ExtHdrHopByHop(), IPv6ExtHdrRouting(), IPv6ExtHdrDestOpt()),
                         "tcp6"),
    "tcp options": (bytes(eth() / IP(src=C4, dst=S4) / TCP(options=[("MSS", 1460), ("NOP", None),
                                                                     ("WScale", 7)])), "tcp4"),
}

BAD = {
    "short": (b"\x00" * 13, "malformed"),
    "vlan tag cut": (bytes(eth() / Dot1Q(vlan=5))[:16], "malformed"),
    "three tags": (bytes(eth() / Dot1Q() / Dot1Q() / Dot1Q() / IP(src=C4, dst=S4) / tcp()),
                   "non_tcp"),
    "arp": (bytes(eth() / ARP()), "non_tcp"),
    "802.3 length": (bytes(Dot3() / LLC() / Raw(b"x" * 50)), "non_tcp"),
    "unknown ethertype": (patch(v4(), 12, b"\x88\xb5"), "non_tcp"),
    "udp": (bytes(eth() / IP(src=C4, dst=S4) / UDP() / Raw(b"x")), "non_tcp"),
    "icmp": (bytes(eth() / IP(src=C4, dst=S4) / ICMP()), "non_tcp"),
    "ipv6 udp": (bytes(eth() / IPv6(src=C6, dst=S6) / UDP()), "non_tcp"),
    "ipv6 no next header": (bytes(eth() / IPv6(src=C6, dst=S6, nh=59)), "non_tcp"),
    "ipv4 header cut": (v4()[:14 + 19], "malformed"),
    "ipv4 version 5": (patch(v4(), 14, b"\x55"), "malformed"),
    "ipv4 ihl 4": (patch(v4(), 14, b"\x44"), "malformed"),
    "ipv4 options past the frame": (patch(v4(data=b"")[:14 + 24], 14, b"\x4f"), "malformed"),
    "ipv4 total length < ihl": (patch(v4(), 16, b"\x00\x10"), "malformed"),
    "ipv4 no room for tcp": (patch(v4(), 16, b"\x00\x24"), "malformed"),
    "ipv4 truncated": (v4()[:100], "truncated"),
    "ipv4 mf": (v4(flags="MF"), "ip_fragment"),
    "ipv4 offset": (v4(frag=100), "ip_fragment"),
    "udp fragment": (bytes(eth() / IP(src=C4, dst=S4, frag=3) / UDP()), "ip_fragment"),
    "tcp data offset 4": (patch(v4(), 14 + 20 + 12, b"\x40"), "malformed"),
    "tcp data offset past the frame": (patch(v4(data=b"ab"), 14 + 20 + 12, b"\xf0"),
                                       "malformed"),
    "ipv6 header cut": (v6()[:14 + 39], "malformed"),
    "ipv6 version 4": (patch(v6(), 14, b"\x40"), "malformed"),
    "ipv6 truncated": (v6()[:120], "truncated"),
    "ipv6 fragment": (v6(IPv6ExtHdrFragment()), "ip_fragment"),
    "ipv6 fragment after options": (v6(IPv6ExtHdrHopByHop(), IPv6ExtHdrFragment(m=1)),
                                    "ip_fragment"),
    "ipv6 ext header past the payload": (patch(v6(IPv6ExtHdrDestOpt(), data=b""), 14 + 41,
                                               b"\xff"), "malformed"),
    "ipv6 no room for tcp": (patch(v6(data=b""), 14 + 4, b"\x00\x10"), "malformed"),
    "ipv6 tcp data offset past": (patch(v6(data=b""), 14 + 40 + 12, b"\x60"), "malformed"),
    "ipv6 jumbogram": (patch(v6(IPv6ExtHdrHopByHop()), 14 + 4, b"\x00\x00"), "malformed"),
}


@pytest.mark.parametrize("name", sorted(GOOD) + sorted(BAD))
def test_classify_frame(name):
    frame, want = {**GOOD, **BAD}[name]
    assert classify_frame(frame) == want
    # The vectorised classifier of the loads agrees, and so does the trace's tally.
    trace = PacketTrace.from_frames([frame], keep_all=True)
    assert packet_trace._CLASSES[packet_trace._classify_arena(trace.arena, trace.offsets,
                                                trace.lengths)[0][0]] == want
    if want.startswith("tcp"):
        assert sum(trace.skipped.values()) == 0
    else:
        assert trace.skipped[want] == 1


def test_classify_payload_lengths():
    assert packet_trace._classify(v4(data=b"y" * 333)) == (packet_trace._TCP4, 333)
    assert packet_trace._classify(v4(data=b"")) == (packet_trace._TCP4, 0)  # padding is not payload
    assert packet_trace._classify(v6(IPv6ExtHdrHopByHop(), data=b"z" * 77)) == \
        (packet_trace._TCP6, 77)


def test_vectorised_classifier_matches_the_reference_on_mutants():
    rng = np.random.default_rng(1)
    seeds = [f for f, _ in GOOD.values()] + [f for f, _ in BAD.values()]
    frames = []
    for f in seeds:
        frames.append(f)
        for _ in range(60):
            b = bytearray(f)
            # Cut it, or flip bytes in the headers (lengths, versions, tags, next headers).
            if rng.random() < 0.3:
                b = b[:rng.integers(0, len(b) + 1)]
            for _ in range(rng.integers(1, 4)):
                if len(b):
                    b[rng.integers(0, min(len(b), 90))] = rng.integers(0, 256)
            frames.append(bytes(b))
    trace = PacketTrace.from_frames(frames, keep_all=True)
    code, payload = packet_trace._classify_arena(trace.arena, trace.offsets, trace.lengths)
    ref = [packet_trace._classify(f) for f in frames]
    assert code.tolist() == [c for c, _ in ref]
    assert payload.tolist() == [p for _, p in ref]
    assert len(set(code.tolist())) == 6  # every outcome met


# -- PacketTrace -----------------------------------------------------------------------------

def test_from_frames_keeps_tcp_and_counts_the_rest():
    frames = [v4(data=b"a" * 10), bytes(eth() / ARP()), v6(data=b"b" * 20), v4()[:60],
              v4(flags="MF"), b"\x01"]
    trace = PacketTrace.from_frames(frames, timestamps=[5, 6, 7, 8, 9, 10])
    assert len(trace) == 2
    assert trace.frame(0) == frames[0] and trace.frame(-1) == frames[2]
    assert trace.timestamps.tolist() == [5, 7]
    assert trace.skipped == {"non_tcp": 1, "malformed": 1, "truncated": 1, "ip_fragment": 1}
    assert trace.payload_bytes == 30
    assert trace.linktype == flows.DLT_EN10MB
    assert trace.offsets.dtype == np.uint64 and trace.lengths.dtype == np.uint32
    assert trace.timestamps.dtype == np.uint64 and trace.arena.dtype == np.uint8
    assert "2 frames" in repr(trace) and "non_tcp=1" in repr(trace)
    with pytest.raises(IndexError):
        trace.frame(2)
    with pytest.raises(ValueError):
        trace.arena[0] = 1  # a trace is read-only

    everything = PacketTrace.from_frames(frames, keep_all=True)
    assert [everything.frame(i) for i in range(len(frames))] == frames
    assert everything.skipped == trace.skipped and everything.payload_bytes == 30
    assert everything.timestamps.tolist() == [0] * 6


def test_from_frames_bad_input():
    with pytest.raises(NetmemError) as e:
        PacketTrace.from_frames([v4()], timestamps=[1, 2])
    assert e.value.errno == errno.EINVAL
    for bad in ([1.5], ["x"], [-1]):
        with pytest.raises(NetmemError):
            PacketTrace.from_frames([v4()], timestamps=bad)
    with pytest.raises(NetmemError):
        PacketTrace.from_frames([v4(), 42])
    with pytest.raises(NetmemError):
        PacketTrace(np.zeros(10, np.uint8), [-1], [7], [0])
    empty = PacketTrace.from_frames([])
    assert len(empty) == 0 and empty.payload_bytes == 0
    with pytest.raises(NetmemError):
        PacketTrace(np.zeros(10, np.uint8), [4], [7], [0])  # past the arena


def test_from_packets_converts_l3_and_keeps_time():
    p1 = eth() / IP(src=C4, dst=S4) / tcp(b"q" * 5)
    p1.time = 1.5
    p2 = IPv6(src=C6, dst=S6) / tcp(b"r" * 7)  # no link layer: LINKTYPE_IPV6
    p2.time = 2
    trace = PacketTrace.from_packets([p1, p2])
    assert trace.frame(0) == bytes(p1)
    assert trace.frame(1) == b"\x00" * 12 + b"\x86\xdd" + bytes(p2)
    assert trace.timestamps.tolist() == [1_500_000_000, 2_000_000_000]
    assert trace.payload_bytes == 12
    with pytest.raises(NetmemError, match="no link type"):
        PacketTrace.from_packets([TCP()])


def small_flows(**kw):
    return generate(connections=3, payload=4000, family="both", seed=2, **kw)


@pytest.mark.parametrize("pcapng", [False, True])
def test_pcap_round_trip_with_ns_timestamps(tmp_path, pcapng):
    f = small_flows(vlan=9, bidirectional=True)
    path = tmp_path / ("t.pcapng" if pcapng else "t.pcap")
    f.write_pcap(path, pcapng=pcapng)
    trace = PacketTrace.from_pcap(path)
    assert len(trace) == len(f.trace)
    assert all(trace.frame(i) == f.trace.frame(i) for i in range(len(trace)))
    assert np.array_equal(trace.timestamps, f.trace.timestamps)
    assert trace.payload_bytes == f.trace.payload_bytes == 3 * 2 * 4000
    assert sum(trace.skipped.values()) == 0
    assert PacketTrace.from_pcap(str(path)).payload_bytes == trace.payload_bytes


def test_scapy_written_captures_in_us_and_both_byte_orders(tmp_path):
    pkts = [eth() / IP(src=C4, dst=S4) / tcp(b"a" * 10), eth() / ARP(),
            eth() / IPv6(src=C6, dst=S6) / tcp(b"b" * 20)]
    for i, p in enumerate(pkts):
        p.time = 1_700_000_000 + i + 0.25
    wrpcap(str(tmp_path / "le.pcap"), pkts)
    with RawPcapWriter(str(tmp_path / "be.pcap"), linktype=1, endianness=">") as w:
        w.write_header(None)
        for p in pkts:
            w.write_packet(bytes(p), sec=int(p.time), usec=250000)
    with PcapNgWriter(str(tmp_path / "us.pcapng")) as w:
        for p in pkts:
            w.write(p)
    for name in ("le.pcap", "be.pcap", "us.pcapng"):
        trace = PacketTrace.from_pcap(tmp_path / name)
        assert len(trace) == 2 and trace.skipped["non_tcp"] == 1, name
        assert trace.frame(1) == bytes(pkts[2]), name
        assert trace.timestamps.tolist() == [1_700_000_000_250_000_000,
                                             1_700_000_002_250_000_000], name
        everything = PacketTrace.from_pcap(tmp_path / name, keep_all=True)
        assert everything.frame(1) == bytes(pkts[1])
        # Our reader and scapy's agree.
        by_scapy = PacketTrace.from_packets(rdpcap(str(tmp_path / name)), keep_all=True)
        for field in ("lengths", "timestamps"):
            assert np.array_equal(getattr(by_scapy, field), getattr(everything, field))
        assert [by_scapy.frame(i) for i in range(3)] == [everything.frame(i) for i in range(3)]


def write_linktype(path, linktype, frames):
    with RawPcapWriter(str(path), linktype=linktype) as w:
        w.write_header(None)
        for i, f in enumerate(frames):
            w.write_packet(f, sec=i, usec=0)


def test_raw_ip_and_cooked_captures_become_ethernet(tmp_path):
    from scapy.layers.l2 import CookedLinux, CookedLinuxV2

    ip4 = bytes(IP(src=C4, dst=S4) / tcp(b"c" * 30))
    ip6 = bytes(IPv6(src=C6, dst=S6) / tcp(b"d" * 40))
    mac = bytes.fromhex("0200000000aa")
    for lt in (101, 12, 14, 228, 229):
        write_linktype(tmp_path / "raw.pcap", lt, [ip4, ip6, b""])
        trace = PacketTrace.from_pcap(tmp_path / "raw.pcap")
        assert [trace.frame(0), trace.frame(1)] == [b"\x00" * 12 + b"\x08\x00" + ip4,
                                                    b"\x00" * 12 + b"\x86\xdd" + ip6], lt
        assert trace.skipped["malformed"] == 1 and trace.payload_bytes == 70
        assert trace.timestamps.tolist() == [0, 1_000_000_000]

    sll = [bytes(CookedLinux(pkttype=0, lladdrtype=1, lladdrlen=6, src=mac + b"\x00\x00",
                             proto=0x0800) / IP(src=C4, dst=S4) / tcp(b"e" * 3)),
           bytes(CookedLinux(lladdrlen=0, proto=0x86DD) / IPv6(src=C6, dst=S6) / tcp()),
           bytes(CookedLinux(proto=0x0806) / ARP()), b"\x00" * 10]
    write_linktype(tmp_path / "sll.pcap", 113, sll)
    trace = PacketTrace.from_pcap(tmp_path / "sll.pcap", keep_all=True)
    assert trace.frame(0) == b"\x00" * 6 + mac + b"\x08\x00" + sll[0][16:]
    assert trace.frame(1) == b"\x00" * 12 + b"\x86\xdd" + sll[1][16:]
    assert trace.frame(2)[12:14] == b"\x08\x06" and trace.frame(3) == b"\x00" * 14
    assert trace.skipped == {"non_tcp": 1, "malformed": 1, "truncated": 0, "ip_fragment": 0}

    sll2 = [bytes(CookedLinuxV2(proto=0x0800, ifindex=3, lladdrlen=6, src=mac + b"\x00\x00") /
                  IP(src=C4, dst=S4) / tcp(b"f" * 9))]
    write_linktype(tmp_path / "sll2.pcap", 276, sll2)
    trace = PacketTrace.from_pcap(tmp_path / "sll2.pcap")
    assert trace.frame(0) == b"\x00" * 6 + mac + b"\x08\x00" + sll2[0][20:]
    assert trace.payload_bytes == 9


def test_bad_capture_files(tmp_path):
    def err(data, name="bad.pcap"):
        path = tmp_path / name
        path.write_bytes(data)
        with pytest.raises(NetmemError) as e:
            PacketTrace.from_pcap(path)
        return e.value

    with pytest.raises(NetmemError) as e:
        PacketTrace.from_pcap(tmp_path / "missing.pcap")
    assert e.value.errno == errno.ENOENT and "missing.pcap" in str(e.value)
    assert err(b"").errno == errno.EINVAL
    assert "not a pcap or pcapng file" in str(err(b"GIF89a, not a capture"))
    assert "truncated pcap file header" in str(err(b"\xd4\xc3\xb2\xa1\x02\x00"))
    assert "truncated pcapng section header" in str(err(b"\x0a\x0d\x0d\x0a\x1c\x00"))
    write_linktype(tmp_path / "wifi.pcap", 105, [b"\x00" * 30])
    e = err((tmp_path / "wifi.pcap").read_bytes())
    assert e.errno == errno.EINVAL and str(e).endswith("from_pcap: unknown link type 105")
    hdr = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)
    e = err(hdr + struct.pack("<IIII", 0, 0, 1 << 30, 1 << 30) + b"\x00" * 64)
    assert "exceeds the snapshot length" in str(e)


@pytest.mark.parametrize("pcapng", [False, True])
def test_capture_cut_mid_record_keeps_the_records_before(tmp_path, pcapng):
    f = small_flows()
    path = tmp_path / "t.cap"
    f.write_pcap(path, pcapng=pcapng)
    data = path.read_bytes()
    for cut in (len(data) - 7, len(data) - 30, len(data) - 60):
        path.write_bytes(data[:cut])
        trace = PacketTrace.from_pcap(path)
        assert len(trace) == len(f.trace) - 1
        assert trace.skipped["truncated"] == 1 and trace.cut_short
        assert trace.frame(-1) == f.trace.frame(len(f.trace) - 2)
    path.write_bytes(data)
    assert not PacketTrace.from_pcap(path).cut_short


def test_npz_round_trip_and_bad_files(tmp_path):
    f = small_flows(vlan=3)
    trace = PacketTrace.from_frames([v4(), bytes(eth() / ARP())])
    for t in (f.trace, trace):
        t.save(tmp_path / "t.trace")
        back = PacketTrace.load(tmp_path / "t.trace")
        for name in ("arena", "offsets", "lengths", "timestamps"):
            assert np.array_equal(getattr(back, name), getattr(t, name))
            assert getattr(back, name).dtype == getattr(t, name).dtype
        assert (back.skipped, back.payload_bytes, back.linktype) == (t.skipped, t.payload_bytes,
                                                                     t.linktype)
    trace.cut_short = True
    trace.save(tmp_path / "t.trace")
    assert PacketTrace.load(tmp_path / "t.trace").cut_short
    with pytest.raises(NetmemError) as e:
        PacketTrace.load(tmp_path / "nothing.npz")
    assert e.value.errno == errno.ENOENT
    (tmp_path / "junk.npz").write_bytes(b"junk")
    with pytest.raises(NetmemError) as e:
        PacketTrace.load(tmp_path / "junk.npz")
    assert e.value.errno == errno.EINVAL and "not a saved PacketTrace" in str(e.value)
    np.savez(tmp_path / "other.npz", x=np.zeros(3))
    with pytest.raises(NetmemError):
        PacketTrace.load(tmp_path / "other.npz")


# -- the generator ---------------------------------------------------------------------------

def test_frames_match_scapy_with_correct_checksums():
    f = generate(connections=4, payload=3000, family="both", vlan=12, bidirectional=True,
                 overlap=0.3, seed=5)
    kinds = set()
    for i in range(len(f.trace)):
        frame = f.trace.frame(i)
        p = Ether(frame)
        assert p[Dot1Q].vlan == 12
        if IP in p:
            del p[IP].chksum
            assert p[IP].flags == "DF" and p[IP].ttl == 64
        del p[TCP].chksum
        assert bytes(p.__class__(bytes(p))) == frame  # scapy's checksums are ours
        kinds.add(str(p[TCP].flags))
        if p[TCP].flags.S:
            assert p[TCP].options == [("MSS", 1460 if IP in p else 1440)]
        else:
            assert p[TCP].options == []
        assert len(frame) >= 60
    assert kinds == {"S", "SA", "A", "PA", "FA"}


def test_generator_shape():
    f = generate(connections=2, payload=10_000, mtu=1280, family="ipv6", seed=1)
    t = f.trace
    assert len(f.connections) == 2
    c = f.connections[1]
    assert (c.index, c.family, c.client, c.server) == (1, 6, (C6, 32769), (S6, 5201))
    assert c.to_client == b"" and len(c.to_server) == 10_000
    assert t.timestamps[0] == 0 and (np.diff(t.timestamps.astype(np.int64)) > 0).all()
    assert int(t.lengths.max()) == 1280 + 14
    assert t.payload_bytes == 20_000
    # PSH only on each stream's last segment; one FIN per sender.
    flags = [Ether(t.frame(i))[TCP].flags for i in range(len(t))]
    assert sum(fl.P for fl in flags) == 2 and sum(fl.F for fl in flags) == 2
    assert flows.generate(connections=1, payload=0).trace.payload_bytes == 0


def testncdevmem_pattern():
    f = generate(connections=2, payload=5000, validate=7, bidirectional=True, seed=3)
    want = (bytes(range(1, 7)) + b"\n") * (5000 // 7) + bytes(range(1, 5000 % 7 + 1))
    for c in f.connections:
        assert c.to_server == want and c.to_client == want
    long = generate(payload=600, validate=300).connections[0].to_server
    assert long[:256] == bytes(range(1, 256)) + b"\n" and long[256:512] == long[:256]
    assert flows.ncdevmem_pattern(7, 9, start=5).tobytes() == b"\x06\n\x01\x02\x03\x04\x05\x06\n"


def test_same_seed_same_bytes():
    kw = dict(connections=3, payload=20_000, family="both", bidirectional=True, loss=0.05,
              reorder=0.05, duplicate=0.05, overlap=0.05, interleave="random")
    a, b = generate(seed=11, **kw), generate(seed=11, **kw)
    assert np.array_equal(a.trace.arena, b.trace.arena)
    assert np.array_equal(a.trace.timestamps, b.trace.timestamps)
    assert a.connections == b.connections
    c = generate(seed=12, **kw)
    assert not np.array_equal(a.trace.arena[:len(c.trace.arena)],
                              c.trace.arena[:len(a.trace.arena)])


@pytest.mark.parametrize("kw", [
    dict(connections=0), dict(family="ipx"), dict(vlan=4095), dict(mtu=67),
    dict(family="ipv6", mtu=1279), dict(mss=1461), dict(family="both", mss=1441),
    dict(payload=-1), dict(validate=1), dict(interleave="zigzag"), dict(loss=1.0),
    dict(overlap=-0.1), dict(isn=1 << 32), dict(seed=-1), dict(link_gbps=0),
])
def test_generator_bad_parameters(kw):
    with pytest.raises(NetmemError) as e:
        generate(**kw)
    assert e.value.errno == errno.EINVAL and "generate: " in str(e.value)


def reassembled_by_tshark(f, tmp_path, pcapng=False):
    """Write the flows, have tshark follow every stream, and compare with the expectation."""
    path = tmp_path / ("f.pcapng" if pcapng else "f.pcap")
    f.write_pcap(path, pcapng=pcapng)
    follows = testing.tshark_follow_all(path)
    assert len(follows) == len(f.connections)
    by_client = {c.client: c for c in f.connections}
    for fl in follows:
        c = by_client[fl.node0]  # node 0 sent the SYN
        assert fl.node1 == c.server
        assert fl.data0 == c.to_server, f"connection {c.index}: client -> server differs"
        assert fl.data1 == c.to_client, f"connection {c.index}: server -> client differs"
    return follows


@pytest.mark.parametrize("name, kw", [
    ("ipv4", dict()),
    ("ipv6", dict(family="ipv6")),
    ("vlan", dict(vlan=100, family="both")),
    ("wrap-around", dict(isn=(1 << 32) - 3000, bidirectional=True)),
    ("loss", dict(loss=0.1)),
    ("reorder", dict(reorder=0.1)),
    ("duplicate", dict(duplicate=0.1)),
    ("overlap", dict(overlap=0.3)),
    ("all, random, both ways", dict(family="both", vlan=7, bidirectional=True, loss=0.05,
                                    reorder=0.05, duplicate=0.05, overlap=0.1,
                                    isn=(1 << 32) - 20_000, interleave="random")),
])
def test_tshark_reassembles_the_expected_streams(tmp_path, name, kw):
    f = generate(connections=3, payload=40_000, seed=4, **kw)
    reassembled_by_tshark(f, tmp_path, pcapng=name == "ipv6")


def test_impairments_are_there():
    base = generate(connections=1, payload=200_000, seed=9)
    n = len(base.trace)
    for rate in ("duplicate", "overlap"):  # extra segments
        t = generate(connections=1, payload=200_000, seed=9, **{rate: 0.2}).trace
        assert len(t) > n and t.payload_bytes > base.trace.payload_bytes, rate
    for rate in ("loss", "reorder"):  # the same segments (a lost one is seen once: resent)
        t = generate(connections=1, payload=200_000, seed=9, **{rate: 0.2}).trace
        seqs = [Ether(t.frame(i))[TCP].seq for i in range(3, len(t) - 1)]
        assert len(t) == n and seqs != sorted(seqs), rate
        assert t.payload_bytes == base.trace.payload_bytes
    w = generate(connections=1, payload=10_000, isn=(1 << 32) - 100).trace
    assert Ether(w.frame(4))[TCP].seq == (1 << 32) - 99 + 1460 - (1 << 32)


def test_tshark_node0_is_the_first_sender(tmp_path):
    """Node 0 is whoever sent the stream's first packet, even an empty ACK from the server."""
    pk = [eth() / IP(src=S4, dst=C4) / TCP(sport=5201, dport=40000, flags="A", seq=900,
                                           ack=100),
          eth() / IP(src=C4, dst=S4) / TCP(sport=40000, dport=5201, flags="PA", seq=100,
                                           ack=900) / Raw(b"data")]
    wrpcap(str(tmp_path / "s.pcap"), pk)
    fl = testing.tshark_follow(tmp_path / "s.pcap", 0)
    assert (fl.node0, fl.node1, fl.data0, fl.data1) == ((S4, 5201), (C4, 40000), b"", b"data")
    assert testing.tshark_streams(tmp_path / "s.pcap") == [testing.TsharkStream(0, (S4, 5201),
                                                                                (C4, 40000))]
    with pytest.raises(NetmemError) as e:
        testing.tshark_follow(tmp_path / "s.pcap", 1)
    assert e.value.errno == errno.ENOENT


def test_tcp_streams_are_numbered_as_tshark_numbers_them(tmp_path):
    """First appearance of a conversation, either direction, over IPv4 and IPv6 (extension
    headers, VLAN tags), with non-TCP frames between; node 0 sent the first frame."""
    f = generate(connections=5, family="both", payload=3000, bidirectional=True,
                 interleave="random", seed=4)
    frames = [f.trace.frame(i) for i in range(len(f.trace))]
    extra = [bytes(eth() / IP(src=C4, dst=S4) / UDP() / Raw(b"u")), bytes(eth() / ARP()),
             v6(IPv6ExtHdrHopByHop(), IPv6ExtHdrDestOpt()),
             bytes(eth() / Dot1Q(vlan=9) / IP(src=S4, dst="192.0.2.9") /
                   TCP(sport=5201, dport=41000, flags="A") / Raw(b"v")),
             v4(), bytes(eth() / IPv6(src=C6, dst=S6) / ICMPv6EchoRequest())]
    for i, x in enumerate(extra):
        frames.insert(7 * i + 3, x)
    wrpcap(str(tmp_path / "s.pcap"), [Ether(x) for x in frames])
    trace = PacketTrace.from_pcap(tmp_path / "s.pcap")
    want = [(s.node0, s.node1) for s in testing.tshark_streams(tmp_path / "s.pcap")]
    assert trace.tcp_streams() == want and len(want) == 8
    assert PacketTrace.from_frames([bytes(eth() / ARP())]).tcp_streams() == []


def test_l3_lengths_as_the_nic_measures_frames():
    """Frame less Ethernet header and up to two tags (0x88a8 outer, 0x8100), padding and all;
    a runt is 0."""
    body = IP(src=C4, dst=S4) / tcp(b"y" * 300)
    frames = [bytes(eth() / body), bytes(eth() / Dot1Q(vlan=5) / body),
              bytes(eth() / Dot1AD(vlan=6) / Dot1Q(vlan=7) / body), v4(data=b"")[:50] + b"",
              b"\x02" * 10]
    t = PacketTrace.from_frames(frames, keep_all=True)
    ip = len(bytes(body))
    assert t.l3_lengths().tolist() == [ip, ip, ip, 50 - 14, 0]
    assert PacketTrace.from_frames([]).l3_lengths().tolist() == []


def tshark_lengths(follows):
    """{(sender, receiver): bytes} of tshark's streams."""
    out = {}
    for fl in follows:
        out[fl.node0, fl.node1] = len(fl.data0)
        out[fl.node1, fl.node0] = len(fl.data1)
    return out


@pytest.mark.parametrize("mtu", [1500, 9000])
def test_in_order_bytes_equal_tshark_on_captures_with_holes(tmp_path, mtu):
    """What each direction carries in order, from the frames, against tshark's reassembly of
    a capture with holes never filled (jumbo frames at 9000), sequence numbers wrapping, late
    and reordered segments: the same lengths, and tshark's bytes are the streams' first ones.
    No duplicates here: where a hole's bytes come again after an ACK covered them, tshark takes
    the copy for a spurious retransmission and drops it, where a receiver fills the hole."""
    f = generate(connections=6, family="both", payload=60_000, bidirectional=True, mtu=mtu,
                 interleave="random", loss=0.03, reorder=0.05, isn=(1 << 32) - 30_000, seed=11)
    trace = capture_with_holes(f, tmp_path / "h.pcap")
    follows = testing.tshark_follow_all(tmp_path / "h.pcap")
    assert trace.in_order_bytes() == tshark_lengths(follows)
    assert sum(tshark_lengths(follows).values()) < 12 * 60_000         # holes cost bytes
    assert any(fl.gaps != (None, None) for fl in follows)               # tshark saw them
    by_client = {c.client: c for c in f.connections}
    for fl in follows:
        c = by_client[fl.node0]
        assert c.to_server.startswith(fl.data0) and c.to_client.startswith(fl.data1)
    assert trace.in_order_bytes(np.zeros(len(trace), bool)) == {}


def test_tshark_follow_stops_at_its_missing_bytes_marker(tmp_path):
    """Where a capture lacks bytes the peer acknowledged, tshark prints ``[N bytes missing in
    capture file]`` (and a NUL) in their place and carries on: the oracle stops the node's
    data there and reports the gap (it used to count the marker, and all after it, as
    payload)."""
    f = generate(connections=1, payload=30_000, bidirectional=True, seed=2)
    path = tmp_path / "h.pcap"
    capture_with_holes(f, path, every=9)
    raw = testing._tshark("test", ["-r", str(path), "-q", "-z", "follow,tcp,raw,0"])
    assert b"bytes missing in capture file]\x00".hex() in raw
    fl = testing.tshark_follow(path, 0)
    c = f.connections[0]
    for k, (data, sent) in enumerate(((fl.data0, c.to_server), (fl.data1, c.to_client))):
        assert b"missing in capture" not in data
        assert sent.startswith(data) and len(data) < len(sent)
        assert fl.gaps[k] is not None and fl.gaps[k][0] == len(data) and fl.gaps[k][1] > 0


def test_in_order_bytes_by_the_receiver_s_rules():
    """A SYN's data is not taken, a segment without ACK is discarded, a RST carries none, a
    FIN ends the stream; a capture that starts mid-flow starts at its first segment; a SYN
    with another ISN is a new connection on the 4-tuple, whose bytes add up."""
    def seg(flags, seq, data=b"", sport=40000):
        return bytes(eth() / IP(src=C4, dst=S4) / TCP(sport=sport, dport=5201, flags=flags,
                                                      seq=seq, ack=1) / Raw(data))

    frames = [seg("S", 99, b"syn data"), seg("A", 100, b"abc"), seg("P", 103, b"no ACK"),
              seg("RA", 103, b"RST data"), seg("A", 103, b"de"), seg("FA", 105, b"f"),
              seg("A", 106, b"after the FIN"),
              seg("S", 5000), seg("A", 5001, b"again"),                  # the 4-tuple reused
              seg("A", 7000, b"mid", sport=41000), seg("A", 6998, b"-flow", sport=41000),
              seg("A", 7010, b"hole", sport=41000)]
    got = PacketTrace.from_frames(frames).in_order_bytes()
    assert got == {((C4, 40000), (S4, 5201)): len(b"abcdef") + len(b"again"),
                   ((C4, 41000), (S4, 5201)): len(b"mid")}


def test_missing_tshark_is_an_error_not_a_skip(tmp_path, monkeypatch):
    monkeypatch.setattr(testing.shutil, "which", lambda name: None)
    with pytest.raises(NetmemError) as e:
        testing.tshark_streams(tmp_path / "x.pcap")
    assert e.value.errno == errno.ENOENT and "make tshark" in str(e.value)


def test_trace_cache(tmp_path):
    kw = dict(connections=2, payload=3000, seed=1)
    path = str(tmp_path / "c.pcap")
    assert flows.cached_trace(path, **kw) is None
    f = generate(**kw)
    f.write_pcap(path)
    cached = flows.cached_trace(path, **kw)
    assert cached is not None and cached.streamed
    assert [cached.frame(i) for i in range(len(cached))] == \
        [f.trace.frame(i) for i in range(len(f.trace))]
    assert flows.cached_trace(path, params=FlowParams(**kw)) is not None
    assert flows.cached_trace(path, seed=2, connections=2, payload=3000) is None
    assert flows.cached_trace(path, pcapng=True, **kw) is None
    with open(path, "ab") as out:  # the capture changed since
        out.write(b"\x00")
    assert flows.cached_trace(path, **kw) is None


def test_netmem_flows_tool(tmp_path, capsys):
    out = str(tmp_path / "t.pcapng")
    argv = [out, "-n", "2", "--family", "both", "--payload", "8KiB", "--loss", "0.1", "-v", "7"]
    assert flows_tool.main(argv) == 0
    assert "wrote" in capsys.readouterr().out
    assert os.path.exists(out + ".npz")
    with open(out, "rb") as capture:
        assert capture.read(4) == b"\x0a\x0d\x0d\x0a"
    mtime = os.path.getmtime(out)
    assert flows_tool.main(argv) == 0
    assert "up to date" in capsys.readouterr().out and os.path.getmtime(out) == mtime
    trace = PacketTrace.from_pcap(out)
    assert trace.payload_bytes == PacketTrace.load(out + ".npz").payload_bytes
    follows = testing.tshark_follow_all(out)
    assert all(fl.data0 == (bytes(range(1, 7)) + b"\n") * 1170 + b"\x01\x02" for fl in follows)


FLOWS_BAD = {
    "mtu": (["{d}/t.pcap", "--mtu", "10"], "netmem-flows: generate: mtu 10 not in 68..65535"),
    "size": (["{d}/t.pcap", "--payload", "lots"], "cannot read size 'lots'"),
    "rate": (["{d}/t.pcap", "--loss", "1.5"], "generate: loss rate 1.5 not in [0, 1)"),
    "choice": (["{d}/t.pcap", "--family", "ipx"], "invalid choice: 'ipx'"),
    "out is a directory": (["{d}/sub"], "{d}/sub: is a directory"),
    "out in a missing directory": (["{d}/none/t.pcap"], "{d}/none does not exist"),
    # a path through a regular file stops root too (permission bits do not)
    "out under a regular file": (["{d}/file/t.pcap"], "{d}/file is not a directory"),
}


@pytest.mark.parametrize("name", sorted(FLOWS_BAD))
def test_netmem_flows_bad_input_is_exit_code_2_one_line(tmp_path, capsys, name):
    """As netmem-replay: exit code 2, one line on stderr naming the option or file and the
    check that failed, nothing written."""
    (tmp_path / "sub").mkdir()
    (tmp_path / "file").write_text("a regular file\n")
    argv, message = FLOWS_BAD[name]
    before = sorted(os.listdir(tmp_path))
    assert flows_tool.main([a.format(d=tmp_path) for a in argv]) == 2
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    assert len(lines) == 1 and message.format(d=tmp_path) in lines[0], captured.err
    assert captured.out == "" and sorted(os.listdir(tmp_path)) == before
