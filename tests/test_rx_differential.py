"""Differential test of the RX path in C (the device's parser ``nm_parse()``, ``ip_rcv_core()``,
``ipv6_rcv()``, ``tcp_v4_rcv()``, ``__netif_receive_skb_core()``) against the reference
classifier ``netmem.flows.classify_frame()``, which decides what a replay skips and why.

Each frame, a valid one or one with a few bytes changed or cut short, goes alone through a
device; what the kernel's counters and drop reasons say happened to it must be what the
classifier says it is: delivered to TCP over IPv4 or IPv6, a fragment, truncated, malformed, or
not TCP. Hypothesis picks the frames, derandomized, so the run is the same every time.
"""
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.inet6 import (
    IPv6,
    IPv6ExtHdrDestOpt,
    IPv6ExtHdrFragment,
    IPv6ExtHdrHopByHop,
    IPv6ExtHdrRouting,
)
from scapy.layers.l2 import ARP, Dot1AD, Dot1Q, Ether
from scapy.packet import Raw

from netmem.flows import PacketTrace, classify_frame
from netmem.replay.rig import add_vlan_devices

ETH = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")
V4 = IP(src="10.0.0.1", dst="10.0.0.2")
V6 = IPv6(src="fd00::1", dst="fd00::2")
DATA = TCP(sport=40000, dport=5201, flags="PA") / Raw(b"x" * 40)

BASES = [bytes(f) for f in (
    ETH / V4 / DATA,
    ETH / V6 / DATA,
    ETH / V4 / TCP(flags="S", options=[("MSS", 1460), ("SAckOK", b""), ("NOP", None),
                                       ("WScale", 7)]),
    ETH / Dot1Q(vlan=5) / V4 / DATA,
    ETH / Dot1AD(vlan=7) / Dot1Q(vlan=5) / V6 / DATA,
    ETH / V6 / IPv6ExtHdrHopByHop() / IPv6ExtHdrDestOpt() / IPv6ExtHdrRouting() / DATA,
    ETH / V6 / IPv6ExtHdrFragment(m=1, id=3) / DATA,
    ETH / IP(src="10.0.0.1", dst="10.0.0.2", flags="MF") / DATA,
    ETH / V4 / UDP(sport=5, dport=53) / Raw(b"q" * 20),
    ETH / ARP(),
)]

# A frame: a base, up to three bytes changed (within the first 100: the headers), and maybe cut.
FRAMES = st.builds(
    lambda base, edits, cut: _edit(BASES[base], edits, cut),
    st.integers(0, len(BASES) - 1),
    st.lists(st.tuples(st.integers(0, 99), st.integers(0, 255)), max_size=3),
    st.none() | st.integers(0, 120))


def _edit(base, edits, cut):
    f = bytearray(base)
    for pos, val in edits:
        if pos < len(f):
            f[pos] = val
    return bytes(f if cut is None else f[:cut])


def _counters(m, nic):
    t = m.tcp
    return {"tcp": t.mib, "ip4": t.ip_mib, "ip6": t.ip6_mib, "drop": t.drop_reasons,
            "dev": nic.stats(), "l4": {**_prefixed("udp", t.udp_mib), **_prefixed(
                "udp6", t.udp6_mib), **_prefixed("icmp", t.icmp_mib),
                **_prefixed("icmp6", t.icmp6_mib)}}


def _prefixed(name, mib):
    return {f"{name}.{k}": v for k, v in mib.items()}


def _delta(before, after):
    return {k: {c: v - before[k].get(c, 0) for c, v in after[k].items()
                if v != before[k].get(c, 0)} for k in after}


def _what_happened(d):
    """The classifier's word for what the counters say the RX path did with one frame."""
    ip = {**d["ip4"], **d["ip6"]}
    if ip.get("ReasmFails"):
        return "ip_fragment"
    if ip.get("InTruncatedPkts"):
        return "truncated"
    if d["l4"]:                             # udp_rcv() or icmp_rcv() took it
        return "non_tcp"
    if (ip.get("InHdrErrors") or d["tcp"].get("InErrs") or d["dev"].get("rx_length_errors")
            or d["drop"].get("NOT_SPECIFIED")):
        return "malformed"
    if d["tcp"].get("InSegs"):
        return "tcp4" if d["ip4"].get("InDelivers") else "tcp6"
    if ip.get("InUnknownProtos") or d["dev"].get("rx_dropped"):
        return "non_tcp"
    return f"nothing counted: {d}"


@pytest.mark.parametrize("hds", [False, True], ids=["copybreak", "header-split"])
def test_the_rx_path_agrees_with_classify_frame(make_nic, m, hds):
    nic = make_nic(hds=hds)
    seen = set()

    @settings(derandomize=True, database=None, max_examples=400, deadline=None,
              suppress_health_check=[HealthCheck.too_slow])
    @given(FRAMES)
    def one_frame(frame):
        tr = PacketTrace.from_frames([frame], keep_all=True)
        add_vlan_devices(nic, tr.vlan_ids())    # as netmem-replay does
        before = _counters(m, nic)
        nic.receive(tr)
        d = _delta(before, _counters(m, nic))
        expected = classify_frame(frame)
        seen.add(expected)
        assert _what_happened(d) == expected, (frame.hex(), d)
        for sk in m.tcp.sockets():          # each frame meets the stack afresh
            sk.close()
        for vid in {k[0] for k in nic.vlan_devices}:
            nic.unregister_vlan_device(vid)

    one_frame()
    # The corpus reached every outcome the classifier has.
    assert seen == {"tcp4", "tcp6", "non_tcp", "malformed", "truncated", "ip_fragment"}
