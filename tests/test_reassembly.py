"""TCP reassembly through the RX path, byte for byte against tshark's (``follow,tcp,raw``).

Generated captures with loss, reordering, duplication, overlapping retransmits, sequence
wrap-around, IPv6 and VLAN tags go through ``NetDevice.receive`` (steering, NAPI, DMA, skbs,
GRO, TCP); every socket's stream must equal what tshark reassembles for that direction.
"""
import ipaddress

import pytest

from netmem.flows import PacketTrace, generate
from netmem.replay.rig import add_vlan_devices
from netmem.testing import tshark_follow_all

CASES = {
    "clean_v4": {"connections": 3},
    "loss": {"connections": 4, "loss": 0.05},
    "reorder": {"connections": 4, "reorder": 0.1},
    "duplicate": {"connections": 4, "duplicate": 0.1},
    "overlap": {"connections": 4, "overlap": 0.1},
    "wrap": {"connections": 2, "isn": 2**32 - 5000},
    "ipv6_vlan": {"connections": 4, "family": "both", "vlan": 42},
    "everything": {"connections": 6, "family": "both", "loss": 0.03, "reorder": 0.05,
                   "duplicate": 0.05, "overlap": 0.05, "bidirectional": True,
                   "interleave": "random"},
}


def _end(addr, port):
    return str(ipaddress.ip_address(addr)), int(port)


@pytest.mark.parametrize("hds", [False, True], ids=["no_split", "header_split"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_streams_equal_tshark(m, make_nic, tmp_path, case, hds):
    flows = generate(payload=40_000, seed=7, **CASES[case])
    pcap = tmp_path / "f.pcap"
    flows.write_pcap(pcap)
    trace = PacketTrace.from_pcap(pcap)
    nic = make_nic(num_rx_queues=2)
    add_vlan_devices(nic, trace.vlan_ids())         # eth0.42 for the tagged case
    if hds:
        nic.ethtool.set_ringparam(tcp_data_split="on")
    nic.receive(trace)
    got = {(sk.remote, sk.local): sk.read_all() for sk in m.tcp.sockets()}
    for f in tshark_follow_all(pcap):
        n0, n1 = _end(*f.node0), _end(*f.node1)
        assert got.get((n0, n1), b"") == f.data0, f"{n0} -> {n1}"
        assert got.get((n1, n0), b"") == f.data1, f"{n1} -> {n0}"
        assert f.data0 or f.data1
