"""netmem-replay end to end: the CLI on small generated workloads for each provider (devmem ones
once their providers exist), ``--dump-streams`` byte for byte against tshark on captures with
impairments, non-TCP traffic and IPv6, the ``--json`` document against its schema, ``--plot``,
and bad input (exit code 2, a message naming the problem, nothing written).

``main()`` runs in-process for speed; one test runs the installed console script.
"""
import csv
import dataclasses
import importlib.util
import json
import os
import stat
import struct
import subprocess
import sys
import threading
import typing

import jsonschema
import numpy as np
import pytest
from rxutil import capture_with_holes
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.inet6 import ICMPv6EchoRequest, IPv6, IPv6ExtHdrDestOpt, IPv6ExtHdrFragment
from scapy.layers.l2 import ARP, Dot1AD, Dot1Q, Ether
from scapy.packet import Raw
from scapy.utils import wrpcap

from netmem import replay
from netmem.flows import PacketTrace, generate
from netmem.replay import (
    REPORT_SCHEMA,
    Config,
    app,
    cli,
    compare,
    main,
    output,
    report,
    rig,
    run,
    runner,
    workload,
)
from netmem.testing import tshark_follow_all

SMALL = ["--connections", "4", "--payload", "48KiB"]     # a few hundred frames


def has(module):
    return importlib.util.find_spec(module) is not None


DEVMEM = [pytest.param(p, marks=pytest.mark.skipif(not has(f"netmem.providers.{p}"),
                                                   reason=f"netmem.providers.{p} not built yet"))
          for p in ("dmabuf", "p2pdma")]


def replay_json(tmp_path, *argv):
    """main(argv + --json): (exit code, document)."""
    out = tmp_path / "r.json"
    code = main([*argv, "--json", str(out)])
    return code, json.loads(out.read_text())


def assert_clean(doc):
    jsonschema.validate(doc, REPORT_SCHEMA)
    assert doc["exit-code"] == 0 and doc["validation"]["result"] == "ok", doc["validation"]
    assert doc["inflight-after-teardown"] == 0 and doc["leaks"] == []
    assert doc["iommu"]["faults"] == 0 and doc["iommu"]["unmapped-accesses"] == 0


# ---- end to end, each provider ------------------------------------------------------------------

@pytest.mark.parametrize("extra", [
    [],
    ["--header-split", "on", "--iommu", "dma-iommu", "--queues", "3"],
    ["--app-cpu", "same", "--loops", "2", "--chunk", "100"],
], ids=["default", "split_iommu", "same_cpu_loops"])
def test_host_replays_validates_and_reports(tmp_path, capsys, extra):
    code, doc = replay_json(tmp_path, "--provider", "host", *SMALL, *extra)
    assert code == 0
    assert_clean(doc)
    loops = doc["config"]["loops"]
    assert doc["replay"]["frames"] == doc["trace"]["frames"] * loops
    assert doc["validation"]["bytes"] == 8 * 48 * 1024 // 2 * loops    # 4 streams of 48 KiB
    assert doc["qstats"]["rx-packets"] == doc["replay"]["frames"]
    assert len(doc["queues"]) == doc["config"]["queues"]
    split = doc["config"]["header-split"]
    assert all(("header-page-pool" in q) == split for q in doc["queues"])
    out = capsys.readouterr().out
    for line in ("Mpps", "ns per frame", "Gbit/s payload", "recycle path: cache",
                 "alloc-fast", "inflight after teardown: 0", "IOMMU faults: 0",
                 "DMA into unmapped memory: 0", "validation: ok"):
        assert line in out


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="VmHWM is Linux's")
def test_max_rss_is_the_replays_own_not_its_parents(tmp_path):
    """``max-rss`` is the replay's peak (VmHWM): run from a process holding 768 MiB, as
    ``netmem-bench`` runs it, it is not the parent's (``ru_maxrss`` carries a parent's peak
    across ``exec``)."""
    held = np.ones(768 << 20, np.uint8)
    out = tmp_path / "r.json"
    subprocess.run([sys.executable, "-m", "netmem.replay", "--provider", "host", *SMALL,
                    "--no-progress", "--json", str(out)], stdout=subprocess.DEVNULL, check=True)
    rss = json.loads(out.read_text())["max-rss"]
    assert 0 < rss < held.nbytes // 2


def test_the_app_cpu_decides_direct_or_ring_recycling(tmp_path):
    """On another CPU the application's frees are deferred to the NAPI CPU, whose next poll
    recycles them straight into the alloc cache; on the NAPI CPU itself they go to the ring."""
    share = {}
    for where in ("same", "other"):
        _, doc = replay_json(tmp_path, "--provider", "host", *SMALL, "--app-cpu", where,
                             "--chunk", "64")
        r = doc["recycle"]
        share[where] = r["cache"] / (r["cache"] + r["ring"] + r["released"])
    assert share["other"] > share["same"] + 0.2, share


@pytest.mark.parametrize("provider", DEVMEM)
def test_devmem_providers_replay_and_validate(tmp_path, provider):
    code, doc = replay_json(tmp_path, "--provider", provider, *SMALL, "--queues", "3",
                            "--bind-queues", "1-2", "--dmabuf-size", "32MiB", "--loops", "2")
    assert code == 0
    assert_clean(doc)
    assert [q["bound"] for q in doc["queues"]] == [False, True, True]
    assert doc["queues"][0]["qstats"]["rx-packets"] == 0     # RSS spreads over 1 and 2 only
    assert doc["qstats"]["rx-packets"] == doc["replay"]["frames"]
    assert doc["devmem"]["dmabuf-frags"] > 0
    assert doc["devmem"]["tokens-returned"] == doc["devmem"]["dmabuf-frags"]


@pytest.mark.parametrize("iommu", ["none", "dma-iommu"])
def test_dmabuf_rx_buf_size_replays_and_validates(tmp_path, iommu):
    """``--rx-buf-size 16KiB``: bind-rx with 16 KiB net_iovs on the bnxt-like NIC it implies;
    every byte validates, nothing is left in flight, and the pools are order 2 (inflight-mem
    is 16 KiB per buffer)."""
    code, doc = replay_json(tmp_path, "--provider", "dmabuf", *SMALL, "--rx-buf-size", "16KiB",
                            "--iommu", iommu)
    assert code == 0
    assert_clean(doc)
    assert doc["config"]["rx-buf-size"] == 16384
    assert doc["config"]["dmabuf-size"] == 256 << 20        # 64 MiB per 4 KiB by default
    pools = [q["page-pool"] for q in doc["queues"]]
    assert all(p["dmabuf"] and p["inflight-mem"] == 16384 * p["inflight"] > 0 for p in pools)
    assert doc["devmem"]["tokens-returned"] == doc["devmem"]["dmabuf-frags"] > 0


@pytest.mark.parametrize("argv, message", [
    (["--rx-buf-size", "6KiB"], "--rx-buf-size 6144: rx_buf_size must be a power of 2"),
    (["--rx-buf-size", "2KiB"], "--rx-buf-size 2048: rx_buf_size must be a power of 2"),
    (["--provider", "host", "--rx-buf-size", "16KiB"], "of the dmabuf and zcrx providers only"),
    (["--rx-buf-size", "64KiB"], "ndo_validate_qcfg"),          # bnxt's maximum is 32 KiB
    (["--rx-buf-size", "16KiB", "--dmabuf-layout", "pages"], "not aligned to niov size"),
])
def test_dmabuf_rx_buf_size_bad_input(tmp_path, capsys, argv, message):
    assert main(["--provider", "dmabuf", *SMALL, *argv]) == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("provider", DEVMEM)
def test_devmem_dump_streams_equal_tshark(tmp_path, provider):
    pcap = impaired_capture(tmp_path)
    code = main(["--pcap", str(pcap), "--provider", provider, "--dump-streams",
                 str(tmp_path / "d")])
    assert code == 0
    assert_streams_equal_tshark(pcap, tmp_path / "d")


# ---- --dump-streams against tshark --------------------------------------------------------------

def impaired_capture(tmp_path, **kw):
    params = {"connections": 6, "family": "both", "payload": 30_000, "bidirectional": True,
              "interleave": "random", "loss": 0.03, "reorder": 0.05, "duplicate": 0.05,
              "overlap": 0.05, "seed": 7, **kw}
    path = tmp_path / "imp.pcap"
    generate(**params).write_pcap(path)
    return path


def assert_streams_equal_tshark(pcap, directory):
    follows = tshark_follow_all(pcap)
    names = set()
    for f in follows:
        for k, want in ((0, f.data0), (1, f.data1)):
            name = f"stream-{f.index}-node{k}.bin"
            names.add(name)
            assert (directory / name).read_bytes() == want, name
    assert set(os.listdir(directory)) == names


@pytest.mark.parametrize("extra", [["--header-split", "off"],
                                   ["--header-split", "on", "--chunk", "64", "--loops", "2"]],
                         ids=["no_split", "split_small_chunks_two_loops"])
def test_dump_streams_equal_tshark_on_impaired_captures(tmp_path, extra):
    pcap = impaired_capture(tmp_path, vlan=3)
    (tmp_path / "d").mkdir()                        # an existing directory is filled
    code = main(["--pcap", str(pcap), "--provider", "host", "--dump-streams",
                 str(tmp_path / "d"), *extra])
    assert code == 0
    assert_streams_equal_tshark(pcap, tmp_path / "d")
    assert [p for p in os.listdir(tmp_path) if p.startswith(".")] == []   # no temporaries


def test_capture_with_non_tcp_traffic_and_ipv6(tmp_path):
    """UDP, ICMP, ARP, ICMPv6 and an IPv6 fragment between the frames of IPv4 and IPv6
    connections (some behind extension headers): skipped and counted, the rest replayed."""
    f = generate(connections=4, family="both", payload=20_000, bidirectional=True, seed=2)
    frames = [Ether(f.trace.frame(i)) for i in range(len(f.trace))]
    c4, s4, c6, s6 = "192.0.2.9", "192.0.2.1", "2001:db8::9", "2001:db8::1"

    def eth():          # both addresses given: scapy would otherwise resolve one
        return Ether(src="02:00:00:00:00:09", dst="02:00:00:00:00:01")

    noise = [eth() / IP(src=c4, dst=s4) / UDP(dport=53) / Raw(b"q" * 30),
             eth() / ARP(), eth() / IP(src=c4, dst=s4) / ICMP(),
             eth() / IPv6(src=c6, dst=s6) / ICMPv6EchoRequest(),
             eth() / IPv6(src=c6, dst=s6) / IPv6ExtHdrFragment() / UDP() / Raw(b"f" * 8)]
    opts = [eth() / IPv6(src=c6, dst=s6) / IPv6ExtHdrDestOpt() /
            TCP(sport=40000, dport=5201, flags=flags, seq=seq, ack=1) / Raw(data)
            for flags, seq, data in (("S", 99, b""), ("A", 100, b"dest-opts "),
                                     ("PA", 110, b"payload"), ("FA", 117, b""))]
    for i, x in enumerate(noise + opts):
        frames.insert(5 * i + 2, x)
    wrpcap(str(tmp_path / "mix.pcap"), frames)
    code, doc = replay_json(tmp_path, "--pcap", str(tmp_path / "mix.pcap"), "--provider",
                            "host", "--dump-streams", str(tmp_path / "d"))
    assert code == 0
    jsonschema.validate(doc, REPORT_SCHEMA)
    assert doc["trace"]["skipped"] == {"non_tcp": 4, "malformed": 0, "truncated": 0,
                                       "ip_fragment": 1, "too_long": 0}
    assert doc["trace"]["frames"] == len(f.trace) + len(opts)
    assert doc["validation"]["result"] == "ok"          # every stream, as the capture has it
    assert doc["validation"]["bytes"] == 8 * 20_000 + len(b"dest-opts payload")
    assert_streams_equal_tshark(tmp_path / "mix.pcap", tmp_path / "d")
    assert (tmp_path / "d" / "stream-4-node0.bin").read_bytes() == b"dest-opts payload"


# ---- captures: their MTU, frames too long, validation ------------------------------------------

def jumbo_capture(tmp_path, **kw):
    params = {"connections": 4, "family": "both", "payload": 100_000, "bidirectional": True,
              "mtu": 9000, "interleave": "random", "loss": 0.02, "reorder": 0.02,
              "duplicate": 0.02, "overlap": 0.02, "seed": 5, **kw}
    path = tmp_path / "jumbo.pcap"
    generate(**params).write_pcap(path)
    return path


@pytest.mark.parametrize("provider", ["host", *DEVMEM])
def test_jumbo_capture_replays_whole_at_its_own_mtu(tmp_path, capsys, provider):
    """No --mtu: the NIC fits the capture's 9000-byte frames, nothing is lost, every stream is
    read whole and its dump equals tshark's."""
    pcap = jumbo_capture(tmp_path)
    code, doc = replay_json(tmp_path, "--pcap", str(pcap), "--provider", provider,
                            "--dump-streams", str(tmp_path / "d"))
    assert code == 0
    assert_clean(doc)
    assert (doc["config"]["mtu"], doc["config"]["mtu-from"]) == (9000, "capture")
    assert doc["trace"]["largest-l3-length"] == 9000
    assert doc["trace"]["skipped"]["too_long"] == 0 and doc["warnings"] == []
    assert doc["validation"]["bytes"] == 8 * 100_000
    assert "rx-length-errors" not in doc["drops"]["device"]
    assert ("MTU 9000 (fitted to the capture: the capture's largest TCP frame is 9000 bytes at "
            "L3)") in capsys.readouterr().out
    assert_streams_equal_tshark(pcap, tmp_path / "d")


def test_one_big_jumbo_flow_replays_whole_with_the_default_chunk(tmp_path):
    """A single 12 MB flow at MTU 9000: the default chunk carries as many bytes as 1024 frames
    at 1500 (170 jumbo frames), so the socket's 6 MiB receive buffer never overflows between
    two drains (1024 jumbo frames, 9 MB, did: PROTO_MEM drops and a stream cut short)."""
    pcap = jumbo_capture(tmp_path, connections=1, family="ipv4", payload=12_000_000,
                         bidirectional=False, loss=0, reorder=0, duplicate=0, overlap=0)
    code, doc = replay_json(tmp_path, "--pcap", str(pcap), "--provider", "host")
    assert code == 0, doc["validation"]
    assert doc["config"]["chunk"] == 170 and doc["validation"]["bytes"] == 12_000_000
    assert "PROTO_MEM" not in doc["drops"]["skb-drop-reasons"]


def two_mtus_capture(tmp_path):
    """IPv4 connections at MTU 1500 and IPv6 ones at 9000 in one capture."""
    small = generate(connections=2, payload=30_000, bidirectional=True, seed=1).trace
    big = generate(connections=2, family="ipv6", payload=30_000, bidirectional=True, mtu=9000,
                   seed=2).trace
    frames = [t.frame(i) for t in (small, big) for i in range(len(t))]
    path = tmp_path / "two.pcap"
    wrpcap(str(path), [Ether(f) for f in frames])
    return path, int((big.l3_lengths() > 1500).sum())


def test_a_smaller_mtu_lists_the_frames_too_long_and_warns(tmp_path, capsys):
    """--mtu 1500 on a capture with jumbo frames: they are counted from the trace as skipped
    too_long, just as many rx_length_errors follow, the report warns that the streams stop and
    the dumps are incomplete, and the validation holds what arrives to it (it used to say ok
    with every jumbo frame lost unseen)."""
    pcap, too_long = two_mtus_capture(tmp_path)
    code, doc = replay_json(tmp_path, "--pcap", str(pcap), "--provider", "host", "--mtu", "1500",
                            "--loops", "2")
    jsonschema.validate(doc, REPORT_SCHEMA)
    assert code == 0 and (doc["config"]["mtu"], doc["config"]["mtu-from"]) == (1500, "option")
    assert too_long > 0 and doc["trace"]["skipped"]["too_long"] == too_long
    assert doc["drops"]["device"]["rx-length-errors"] == 2 * too_long      # once per loop
    assert doc["validation"]["result"] == "ok"
    assert doc["validation"]["bytes"] == 2 * 4 * 30_000                   # the IPv4 streams
    [warning] = doc["warnings"]
    assert f"{too_long} frame(s)" in warning and "longer than MTU 1500" in warning
    assert "stream dumps are incomplete" in warning and "--mtu 9000 replays them" in warning
    out = capsys.readouterr().out
    assert f"frames skipped: {too_long} too_long" in out and f"warning: {warning}" in out
    code, doc = replay_json(tmp_path, "--pcap", str(pcap), "--provider", "host")
    assert code == 0 and doc["config"]["mtu"] == 9000 and doc["warnings"] == []
    assert doc["validation"]["bytes"] == 8 * 30_000


def test_a_jumbo_capture_at_mtu_1500_is_not_ok(tmp_path, capsys):
    """Every payload frame too long: nothing reaches a socket, and 0 bytes read is no ok."""
    pcap = jumbo_capture(tmp_path, loss=0, reorder=0, duplicate=0, overlap=0)
    code, doc = replay_json(tmp_path, "--pcap", str(pcap), "--provider", "host", "--mtu", "1500")
    assert code == 0 and doc["validation"]["result"] == "skipped", doc["validation"]
    assert doc["validation"]["bytes"] == 0 and "nothing to read" in doc["validation"]["detail"]
    assert doc["trace"]["skipped"]["too_long"] == doc["drops"]["device"]["rx-length-errors"] > 0
    assert doc["warnings"]


def test_vlan_tags_do_not_count_against_the_mtu(tmp_path):
    """The NIC drops a frame longer than the MTU at L3, whatever its tags (none, 802.1Q,
    QinQ): the count from the trace is the driver's."""
    frames = []
    for i, tags in enumerate(([], [Dot1Q(vlan=3)], [Dot1AD(vlan=4), Dot1Q(vlan=5)])):
        for extra in (0, 1):                    # an IPv4 datagram of 1500, then 1501 bytes
            p = Ether(src="02:00:00:00:00:02", dst="02:00:00:00:00:01")
            for t in tags:
                p = p / t
            frames.append(p / IP(src="192.0.2.2", dst="192.0.2.1") /
                          TCP(sport=40000 + 2 * i + extra, dport=5201, flags="A", seq=1) /
                          Raw(b"v" * (1460 + extra)))
    wrpcap(str(tmp_path / "tags.pcap"), frames)
    code, doc = replay_json(tmp_path, "--pcap", str(tmp_path / "tags.pcap"), "--provider",
                            "host", "--mtu", "1500")
    assert code == 0 and doc["trace"]["skipped"]["too_long"] == 3
    assert doc["drops"]["device"]["rx-length-errors"] == 3
    assert doc["validation"] == {**doc["validation"], "result": "ok", "bytes": 3 * 1460}


def test_a_frame_above_9000_caps_the_mtu_and_is_too_long(tmp_path, capsys):
    """A capture of GRO'd frames (a host's tcpdump): the MTU stops at the NIC's 9000."""
    eth = Ether(src="02:00:00:00:00:02", dst="02:00:00:00:00:01")
    frames = [eth / IP(src="192.0.2.2", dst="192.0.2.1") /
              TCP(sport=40000, dport=5201, flags="A", seq=1 + k * 1000) / Raw(b"g" * n)
              for k, n in ((0, 1000), (1, 9460))]
    wrpcap(str(tmp_path / "gro.pcap"), frames)
    code, doc = replay_json(tmp_path, "--pcap", str(tmp_path / "gro.pcap"), "--provider", "host")
    assert code == 0 and (doc["config"]["mtu"], doc["config"]["mtu-from"]) == (9000, "capture")
    assert doc["trace"]["largest-l3-length"] == 9500
    assert doc["trace"]["skipped"]["too_long"] == 1
    assert doc["validation"]["result"] == "ok" and doc["validation"]["bytes"] == 1000
    assert "the NIC takes at most 9000" in doc["warnings"][0]
    assert ("MTU 9000 (the most the NIC takes: the capture's largest TCP frame is 9500 bytes "
            "at L3)") in capsys.readouterr().out


@pytest.mark.parametrize("duplicate", [0.0, 0.05], ids=["tshark", "duplicates"])
def test_capture_validation_counts_each_stream_to_its_first_hole(tmp_path, duplicate):
    """A capture missing frames for good: each stream is read up to its first hole, which is
    ok; without duplicates (see test_flows) the dumps equal tshark's, holes and all."""
    f = generate(connections=6, family="both", payload=40_000, bidirectional=True,
                 interleave="random", loss=0.03, reorder=0.05, duplicate=duplicate,
                 overlap=duplicate, seed=8)
    pcap = tmp_path / "holes.pcap"
    trace = capture_with_holes(f, pcap)
    code, doc = replay_json(tmp_path, "--pcap", str(pcap), "--provider", "host",
                            "--dump-streams", str(tmp_path / "d"), "--loops", "2")
    assert code == 0
    assert_clean(doc)
    expected = trace.in_order_bytes()
    assert 0 < doc["validation"]["bytes"] == 2 * sum(expected.values()) < 2 * 12 * 40_000
    assert "each up to its first hole" in doc["validation"]["detail"]
    if not duplicate:
        assert_streams_equal_tshark(pcap, tmp_path / "d")


def test_capture_validation_fails_when_a_stream_is_short(tmp_path, monkeypatch, capsys):
    """The check can fail: a direction expected one byte longer than it is read."""
    pcap = impaired_capture(tmp_path)
    real = PacketTrace.in_order_bytes

    def one_more(self, deliver=None):
        out = real(self, deliver)
        key = min(out)
        return {**out, key: out[key] + 1}

    monkeypatch.setattr(PacketTrace, "in_order_bytes", one_more)
    code, doc = replay_json(tmp_path, "--pcap", str(pcap), "--provider", "host")
    assert code == 1 and doc["validation"]["result"] == "failed"
    assert "bytes read, the capture carries" in doc["validation"]["detail"]


def test_capture_validation_follows_the_receiver_s_rules(tmp_path):
    """A SYN's data, a segment without ACK and a RST's data are not delivered, a FIN ends the
    stream, an accepted RST closes the socket and the next segment opens another mid-flow, a
    new ISN reuses the 4-tuple: the model reads what in_order_bytes() expects."""
    eth = Ether(src="02:00:00:00:00:02", dst="02:00:00:00:00:01")

    def seg(flags, seq, data=b"", sport=40000):
        return eth / IP(src="192.0.2.2", dst="192.0.2.1") / TCP(
            sport=sport, dport=5201, flags=flags, seq=seq, ack=1) / Raw(data)

    frames = [seg("S", 99, b"syn data"), seg("A", 100, b"abc"), seg("P", 103, b"no ACK"),
              seg("RA", 103, b"RST data"), seg("A", 103, b"de"), seg("FA", 105, b"f"),
              seg("A", 106, b"after the FIN"), seg("S", 5000), seg("A", 5001, b"again"),
              seg("A", 7000, b"mid", sport=41000), seg("A", 6998, b"-flow", sport=41000),
              seg("A", 7010, b"hole", sport=41000)]
    wrpcap(str(tmp_path / "rules.pcap"), frames)
    code, doc = replay_json(tmp_path, "--pcap", str(tmp_path / "rules.pcap"), "--provider",
                            "host")
    assert code == 0 and doc["validation"]["result"] == "ok", doc["validation"]
    assert doc["validation"]["bytes"] == len(b"abcdef" + b"again" + b"mid")
    assert doc["validation"]["resets"] == 1


def test_dump_streams_into_a_directory_it_cannot_write(tmp_path, monkeypatch, capsys):
    """An existing --dump-streams directory without write permission is bad input before any
    work (it used to fail after the replay, writing the files); access(2) stands in for the
    permission bits, which stop no root."""
    d = tmp_path / "ro"
    d.mkdir()
    real = os.access
    monkeypatch.setattr(output.os, "access", lambda p, mode: os.fspath(p) != str(d) and
                        real(p, mode))
    monkeypatch.setattr(cli, "run", lambda cfg: pytest.fail("ran"))
    assert main(["--provider", "host", *SMALL, "--dump-streams", str(d)]) == 2
    assert capsys.readouterr().err == f"netmem-replay: --dump-streams {d}: cannot write in {d}\n"
    assert os.listdir(d) == []


# ---- --json and --plot --------------------------------------------------------------------------

def test_json_matches_its_schema_and_names_stats_as_netlink(tmp_path):
    _, doc = replay_json(tmp_path, "--provider", "host", *SMALL, "--header-split", "on")
    jsonschema.validate(doc, REPORT_SCHEMA)
    pool = doc["queues"][0]["page-pool"]
    for key in ("alloc-fast", "alloc-slow", "recycle-cached", "recycle-ring",
                "recycle-ring-full", "recycle-released-refcnt", "inflight", "inflight-mem"):
        assert key in pool
    assert set(doc["qstats"]) >= {"rx-packets", "rx-bytes", "rx-alloc-fail", "rx-hw-drops"}
    bad = dict(doc, replay={**doc["replay"], "mpps": -1})
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, REPORT_SCHEMA)


def test_plot_of_a_capture_without_tcp(tmp_path):
    """Nothing to replay, no sample: the figure is drawn empty (the samples' array used to fail
    to take its shape)."""
    pytest.importorskip("matplotlib")
    eth = Ether(src="02:00:00:00:00:02", dst="02:00:00:00:00:01")
    wrpcap(str(tmp_path / "udp.pcap"), [eth / IP() / UDP() / Raw(b"u")])
    png = tmp_path / "p.png"
    code = main(["--pcap", str(tmp_path / "udp.pcap"), "--provider", "host", "--plot", str(png)])
    assert code == 0 and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_json_into_a_pipe_writes_through_it(tmp_path):
    """An output that is no regular file (/dev/stdout, a FIFO) is written, not replaced."""
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    got = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_text()))
    reader.start()
    assert main(["--provider", "host", *SMALL, "--json", str(fifo)]) == 0
    reader.join()
    assert json.loads(got[0])["exit-code"] == 0
    assert stat.S_ISFIFO(os.stat(fifo).st_mode)


def test_plot_draws_pool_occupancy_over_trace_time(tmp_path, monkeypatch):
    """The figure's title holds the configuration; its x axis is the trace's own time (the
    frames' timestamps at the end of each chunk of the untimed loop), not the wall clock."""
    plt = pytest.importorskip("matplotlib.pyplot")
    figures = []
    close = plt.close
    monkeypatch.setattr(plt, "close", lambda fig: (figures.append(fig), close(fig)))
    png = tmp_path / "p.png"
    assert main(["--provider", "host", *SMALL, "--chunk", "128", "--loops", "2", "--iommu",
                 "dma-iommu", "--plot", str(png)]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    [fig] = figures
    assert fig._suptitle.get_text() == ("netmem-replay: built-in workload (4 connections); "
                                        "host provider, 2 queue(s), MTU 1500, iommu "
                                        "dma-iommu; 2 loop(s) after 0 warm-up")
    assert fig.axes[-1].get_xlabel() == "trace time (ms)"
    r = run(Config(provider="host", connections=4, payload=48 << 10, chunk=128, loops=2,
                   plot=str(png)))
    ts = workload._workload(dataclasses.replace(replay.DEFAULT_WORKLOAD, connections=4,
                                                payload=48 << 10, mtu=1500, seed=0))[0].timestamps
    t, _ = r.timeline.arrays()
    n = len(ts)
    ends = [min(k + 128, n) - 1 for k in range(0, n, 128)]
    assert np.allclose(t, (ts[ends] - ts[0]) / 1e9)


def test_validation_failure_is_exit_code_1(tmp_path, capsys):
    """A capture of random bytes checked against ncdevmem's pattern fails validation."""
    pcap = tmp_path / "random.pcap"
    generate(connections=2, payload=5000, seed=1).write_pcap(pcap)
    code, doc = replay_json(tmp_path, "--pcap", str(pcap), "--provider", "host",
                            "--validate", "7")
    assert code == 1 and doc["exit-code"] == 1
    assert doc["validation"]["result"] == "failed"
    assert "differs from the ncdevmem -v 7 pattern" in capsys.readouterr().out


@pytest.mark.netmem_leaks_ok
def test_buffers_lost_is_exit_code_1(tmp_path, monkeypatch):
    """A NIC left registered keeps its pools: inflight after teardown, a leak, exit code 1."""
    monkeypatch.setattr(rig.NetDevice, "unregister", lambda self: None)
    code, doc = replay_json(tmp_path, "--provider", "host", *SMALL)
    assert code == 1
    assert doc["inflight-after-teardown"] > 0 and doc["leaks"]


@pytest.mark.netmem_leaks_ok
def test_dma_into_unmapped_memory_is_exit_code_1(tmp_path, capsys, monkeypatch):
    """A p2pdma provider that hands out the bus address of its BAR range without mapping it
    (as it did before issue 13): every payload lands and validates, and the report counts
    the NIC's writes into memory no mapping covers: exit code 1."""
    from netmem.providers.p2pdma import P2PDMAProvider

    def map_nothing(self, dev):
        self._dma = (dev, self.bus_addr, None)
        return 0

    monkeypatch.setattr(P2PDMAProvider, "_map", map_nothing)
    monkeypatch.setattr(P2PDMAProvider, "_unmap", lambda self: setattr(self, "_dma", None))
    code, doc = replay_json(tmp_path, "--provider", "p2pdma", *SMALL)
    jsonschema.validate(doc, REPORT_SCHEMA)
    n = doc["iommu"]["unmapped-accesses"]
    assert code == 1 and n > 0 and doc["validation"]["result"] == "ok"
    assert doc["iommu"]["faults"] == 0 and doc["iommu"]["stats"]["unmapped_accesses"] == n
    assert doc["leaks"][0].startswith(f"{n} DMA accesses to memory no live mapping covers")
    assert f"DMA into unmapped memory: {n}\n" in capsys.readouterr().out


def test_progress_bar_draws_and_clears(capsys):
    """tqdm's bar, drawn here without its half-second delay and tenth-of-a-second interval
    (no test waits on a clock), then cleared; disabled, it writes nothing."""
    p = runner._Progress(200, True)
    p.bar.delay = p.bar.mininterval = 0
    p.update(50)
    p.close()
    err = capsys.readouterr().err
    assert "netmem-replay:  25%" in err and "50.0/200 [" in err and "frames/s" in err, err
    assert err.endswith("\r") and "\n" not in err                   # cleared, not left
    quiet = runner._Progress(200, False)
    quiet.update(50)
    quiet.close()
    assert capsys.readouterr().err == ""


def test_run_is_importable_and_returns_a_report():
    r = run(Config(provider="host", connections=2, payload=4096, validate=0))
    assert r.exit_code == 0 and r.streams is None and r.timeline is None
    assert r.doc["validation"]["detail"].startswith("ok")   # every stream complete
    assert "validation: ok" in r.format_table()


def test_console_script(tmp_path):
    exe = os.path.join(os.path.dirname(sys.executable), "netmem-replay")
    proc = subprocess.run([exe, "--provider", "host", *SMALL], capture_output=True, text=True,
                          check=False)
    assert proc.returncode == 0, proc.stderr
    assert "validation: ok" in proc.stdout and proc.stderr == ""


# ---- bad input ----------------------------------------------------------------------------------

def _pcap_header(linktype=1):
    return struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, linktype)


def _record(frame):
    return struct.pack("<IIII", 0, 0, len(frame), len(frame)) + frame


def _cut(path):
    data = path.read_bytes()
    return data[:-10]


PCAP = ["--provider", "host", "--pcap"]
BAD = {
    "missing pcap": ([*PCAP, "{d}/nothing.pcap"], "no such file"),
    "empty pcap": ([*PCAP, "{d}/empty.pcap"], "not a pcap or pcapng file (0 bytes)"),
    "not a pcap": ([*PCAP, "{d}/text.pcap"], "not a pcap or pcapng file (magic"),
    "truncated pcap": ([*PCAP, "{d}/cut.pcap"], "truncated"),
    "truncated header": ([*PCAP, "{d}/short.pcap"], "truncated pcap file header"),
    "no frames": ([*PCAP, "{d}/header.pcap"], "holds no frames"),
    "unknown link type": ([*PCAP, "{d}/wifi.pcap"], "unknown link type 105"),
    "zero queues": (["--queues", "0"], "--queues 0"),
    "too many queues": (["--queues", "65"], "--queues 65"),
    "bind a queue that does not exist": (["--queues", "2", "--bind-queues", "0,3"],
                                         "queue 3 does not exist"),
    "bind with host pages": (["--provider", "host", "--bind-queues", "0"], "binds no queues"),
    "dma-buf too small": (["--dmabuf-size", "1MiB"], "too small for the traffic"),
    "dma-buf not in pages": (["--dmabuf-size", "1000"], "multiple of 4096"),
    "header split off for devmem": (["--header-split", "off"], "needs header split"),
    "zero pool": (["--provider", "host", "--pool-size", "0"], "--pool-size 0"),
    "zero loops": (["--provider", "host", "--loops", "0"], "--loops 0"),
    "mtu": (["--provider", "host", "--mtu", "20"], "--mtu 20"),
    "workload mtu": (["--provider", "host", "--mtu", "1000"], "mtu 1000 not in 1280"),
    "app cpu with 64 queues": (["--provider", "host", "--queues", "64"], "at most 64 CPUs"),
    "workload options with a pcap": ([*PCAP, "{d}/ok.pcap", "--connections", "3"],
                                     "not --pcap"),
    "json in a missing directory": (["--provider", "host", "--json", "{d}/no/r.json"],
                                    "/no does not exist"),
    "json under a regular file": (["--provider", "host", "--json", "{d}/ok.pcap/r.json"],
                                  "ok.pcap is not a directory"),
    # A path through a regular file stops root too (permission bits do not).
    "dump under a regular file": (["--provider", "host", "--dump-streams", "{d}/ok.pcap/s/t"],
                                  "--dump-streams {d}/ok.pcap/s/t: {d}/ok.pcap is not a dir"),
    "dump onto a file": (["--provider", "host", "--dump-streams", "{d}/ok.pcap"],
                         "not a directory"),
    "unknown provider": (["--provider", "rdma"], "--provider rdma: no memory provider 'rdma'"),
    "bad queue list": (["--bind-queues", "one"], "cannot read queue list"),
}


@pytest.mark.parametrize("name", sorted(BAD))
def test_bad_input_is_exit_code_2_and_writes_nothing(tmp_path, capsys, name):
    argv, message = BAD[name]
    d = tmp_path / "in"
    d.mkdir()
    (d / "empty.pcap").write_bytes(b"")
    (d / "text.pcap").write_text("this is not a capture\n")
    (d / "short.pcap").write_bytes(_pcap_header()[:20])
    (d / "header.pcap").write_bytes(_pcap_header())
    (d / "wifi.pcap").write_bytes(_pcap_header(105) + _record(b"\x00" * 40))
    generate(connections=1, payload=3000).write_pcap(d / "ok.pcap")
    (d / "cut.pcap").write_bytes(_cut(d / "ok.pcap"))
    before = sorted(os.listdir(d))
    out = tmp_path / "out"
    out.mkdir()
    argv = [a.format(d=d) for a in argv]
    code = main([*argv, "--json", str(out / "r.json"), "--dump-streams", str(out / "s")]
                if "--dump-streams" not in argv and "--json" not in argv else argv)
    assert code == 2
    err = capsys.readouterr().err
    assert message.format(d=d) in err.strip().splitlines()[-1], err   # one line names it
    assert sorted(os.listdir(d)) == before and os.listdir(out) == []


# ---- the figures: counters of the timed loops, runs, nothing extra in the clock ------------------

TINY = ["--connections", "4", "--payload", "64KiB"]
# Counters that legitimately differ between a timed loop after warm-up loops and the first loop
# of a machine: the page pools' and the recycle split, which depend on the state a loop
# inherits, and the IOMMU's, which follow the pools' slow path. A cold pool holds no recycled
# buffers in its cache or ring, so its first loop allocates on the slow path (alloc-slow,
# alloc-empty, and for a provider its alloc_netmems(), which no counter counts, in place of
# alloc-fast) and maps fresh pages (IOMMU maps, IOTLB syncs, IOVA rcache hits); it has no page
# part-split into frags yet (page_pool_alloc_frag(): one page more); how often the cache
# refills from the ring or overflows into it (alloc-refill, recycle-cache-full) follows how
# full it starts; and what a loop frees at its end (the sockets it closes; with the
# application on another CPU, frees deferred to the NAPI CPU) is recycled in the next loop.
# Everything else (qstats, device stats, TCP MIB, drop reasons, the receiver's counters,
# validation) depends on the trace alone and must be equal.
WARM_STATE = ("page-pool.", "recycle.", "iommu.stats.")


def warm_state(name):
    return any(part in name for part in WARM_STATE)


def counters_of(doc):
    return report._report_counters(doc)


@pytest.mark.parametrize("extra", [
    ["--provider", "host"],
    ["--provider", "host", "--app-cpu", "same", "--chunk", "64"],
    pytest.param(["--provider", "dmabuf", "--queues", "3", "--iommu", "dma-iommu",
                  "--dmabuf-size", "32MiB"], marks=DEVMEM[0].marks),
], ids=["host", "host_same_cpu", "dmabuf_iommu"])
def test_warmup_loops_are_not_counted(tmp_path, extra):
    """``--warmup 3 --loops 1`` counts what ``--warmup 0 --loops 1`` counts: exactly, but for
    the counters of state carried across loops (WARM_STATE), and those match in total."""
    _, cold = replay_json(tmp_path, *TINY, *extra, "--warmup", "0")
    _, warm = replay_json(tmp_path, *TINY, *extra, "--warmup", "3")
    for doc in (cold, warm):
        assert_clean(doc)
        assert doc["counters"] == {"scope": "timed-loops", "runs": 1, "loops": 1,
                                   "gauges": list(replay.GAUGES)}
    a, b = counters_of(cold), counters_of(warm)
    assert a.keys() == b.keys()
    differ = {k for k in a if a[k] != b[k]}
    assert all(warm_state(k) for k in differ), sorted(differ)
    same = {k: a[k] for k in a if not warm_state(k)}
    assert same == {k: b[k] for k in b if not warm_state(k)}
    assert same["qstats.rx-packets"] == cold["trace"]["frames"]
    assert same["validation.bytes"] == 8 * 64 * 1024 // 2
    # a warm loop serves every allocation from the cache: none on the slow path; a host-page
    # pool serves as many pages in either, from its cache or its slow path, but for the page
    # being split into frags (page_pool_alloc_frag()) that a warm loop inherits
    pools = [q[r] for q in warm["queues"] for r in ("page-pool", "header-page-pool") if r in q]
    assert all(p["alloc-slow"] == 0 for p in pools)

    def served(doc):
        return [q[r]["alloc-fast"] + q[r]["alloc-slow"] for q in doc["queues"]
                for r in ("page-pool", "header-page-pool")
                if r in q and not (r == "page-pool" and q["bound"])]
    assert all(0 <= c - w <= 1 for c, w in zip(served(cold), served(warm), strict=True))


def test_runs_repeat_on_fresh_machines(tmp_path, capsys):
    """``--runs 3``: three samples of every time figure, their median, min and max; the
    counters are the three runs' sum, three times one run's (each run a fresh machine)."""
    _, one = replay_json(tmp_path, "--provider", "host", *TINY, "--loops", "1", "--warmup", "1")
    code, doc = replay_json(tmp_path, "--provider", "host", *TINY, "--runs", "3", "--loops", "1",
                            "--warmup", "1")
    assert code == 0
    assert_clean(doc)
    r = doc["replay"]
    assert len(r["runs"]) == 3 and doc["counters"]["runs"] == 3
    assert [len(s["loop-seconds"]) for s in r["runs"]] == [1, 1, 1]
    for f in replay.TIME_FIGURES:
        values = sorted(s[f] for s in r["runs"])
        assert (r["min"][f], r[f], r["max"][f]) == (values[0], values[1], values[2])
    for s in r["runs"]:
        assert s["seconds"] == sum(s["loop-seconds"])
        assert s["ns-per-frame"] == pytest.approx(s["seconds"] * 1e9 / s["frames"])
    assert r["frames"] == 3 * doc["trace"]["frames"]
    a = counters_of(one)
    assert counters_of(doc) == {k: 3 * v for k, v in a.items()}
    out = capsys.readouterr().out
    assert "[min-max] of 3 run(s)" in out and "not a kernel's" in out


def test_the_report_names_what_it_was_measured_with(tmp_path, monkeypatch):
    from importlib.metadata import version
    _, doc = replay_json(tmp_path, "--provider", "host", *TINY)
    e = doc["environment"]
    assert e["netmem"] == version("netmem")
    assert e["cpus"] == sorted(os.sched_getaffinity(0))
    assert e["python"] == sys.version.split()[0]
    checkout = os.path.exists(os.path.join(os.path.dirname(replay.__file__), "..", "..", ".git"))
    assert (e["git-commit"] is not None) == checkout
    if checkout:
        assert len(e["git-commit"]) == 40 and isinstance(e["git-dirty"], bool)
    monkeypatch.setenv("PATH", str(tmp_path))           # no git: no commit, no failure
    assert report._git() == {"git-commit": None, "git-dirty": None}


class KeepRecorder(app.Receiver):
    """A Receiver that records, at each close_all() (the end of a loop), whether it kept the
    bytes it read in that loop."""

    log: typing.ClassVar[list] = []

    def close_all(self):
        KeepRecorder.log.append(self.keep)
        return super().close_all()


def test_outputs_are_made_in_an_untimed_loop_after_the_timed_ones(tmp_path, monkeypatch):
    """--dump-streams' copies and --plot's samples happen in one loop more, after the timed
    loops, which counts nothing: the counters are those of a run without outputs."""
    pytest.importorskip("matplotlib")
    KeepRecorder.log = []
    monkeypatch.setattr(app, "Receiver", KeepRecorder)
    argv = ["--provider", "host", *TINY, "--warmup", "1", "--loops", "2", "--chunk", "64"]
    _, plain = replay_json(tmp_path, *argv)
    assert KeepRecorder.log == [False] * 3
    KeepRecorder.log = []
    code, doc = replay_json(tmp_path, *argv, "--dump-streams", str(tmp_path / "d"),
                            "--plot", str(tmp_path / "p.png"))
    assert code == 0
    assert KeepRecorder.log == [False, False, False, True]     # warm-up, 2 timed, the kept one
    assert len(doc["replay"]["runs"][0]["loop-seconds"]) == 2
    assert counters_of(doc) == counters_of(plain)
    assert len(os.listdir(tmp_path / "d")) == 8 and (tmp_path / "p.png").exists()


def test_the_timeline_samples_one_untimed_loop():
    r = run(Config(provider="host", connections=4, payload=64 << 10, chunk=64, loops=2,
                   plot="unused.png"))
    t, data = r.timeline.arrays()
    n = r.doc["trace"]["frames"]
    ts = r.timeline.timestamps
    rel = (ts - ts[0]) / 1e9                # trace time of each sample's last frame
    assert t.tolist() == [rel[min(k, n) - 1] for k in range(64, n + 64, 64)]
    assert data["cache"].shape == (len(t), 2)


# ---- Ctrl-C --------------------------------------------------------------------------------------

def interrupt_at(monkeypatch, call):
    """KeyboardInterrupt right after the ``call``-th NetDevice.receive() (1-based) returns,
    as a Ctrl-C that lands when the C receive path hands back to Python."""
    calls = [0]
    receive = rig.NetDevice.receive

    def wrapped(self, *a, **kw):
        out = receive(self, *a, **kw)
        calls[0] += 1
        if calls[0] == call:
            raise KeyboardInterrupt
        return out

    monkeypatch.setattr(rig.NetDevice, "receive", wrapped)


def test_ctrl_c_reports_the_loops_completed(tmp_path, monkeypatch, capsys):
    """Cut in the second timed loop (its frames received, not read): the report covers the
    first one, counts what a one-loop run counts, says it was interrupted; exit code 130."""
    _, one = replay_json(tmp_path, "--provider", "host", *TINY, "--warmup", "1")
    capsys.readouterr()
    interrupt_at(monkeypatch, 3)                 # one receive per loop: warm-up, timed, timed
    code, doc = replay_json(tmp_path, "--provider", "host", *TINY, "--warmup", "1", "--loops",
                            "3", "--dump-streams", str(tmp_path / "d"))
    assert code == 130 and doc["exit-code"] == 130 and doc["interrupted"] is True
    jsonschema.validate(doc, REPORT_SCHEMA)
    assert doc["inflight-after-teardown"] == 0 and doc["leaks"] == []
    assert doc["counters"]["loops"] == 1 and len(doc["replay"]["runs"][0]["loop-seconds"]) == 1
    assert counters_of(doc) == counters_of(one)
    assert doc["validation"]["result"] == "ok"
    out, err = capsys.readouterr()
    assert "INTERRUPTED (Ctrl-C): the report covers the 1 timed loop(s) completed, of 3" in out
    assert "--dump-streams" in err and not (tmp_path / "d").exists()


def test_ctrl_c_in_a_later_run_keeps_the_runs_completed(tmp_path, monkeypatch):
    interrupt_at(monkeypatch, 4)                 # run 2's second loop
    code, doc = replay_json(tmp_path, "--provider", "host", *TINY, "--loops", "2", "--runs", "3")
    assert code == 130
    assert [len(s["loop-seconds"]) for s in doc["replay"]["runs"]] == [2, 1]
    # the median and spread are over the runs that completed their loops
    whole = doc["replay"]["runs"][0]
    assert doc["replay"]["seconds"] == doc["replay"]["min"]["seconds"] == whole["seconds"]
    assert doc["counters"] == {"scope": "timed-loops", "runs": 2, "loops": 3,
                               "gauges": list(replay.GAUGES)}
    assert doc["qstats"]["rx-packets"] == doc["replay"]["frames"] == 3 * doc["trace"]["frames"]


def test_ctrl_c_in_the_untimed_loop_writes_no_partial_outputs(tmp_path, monkeypatch, capsys):
    """Cut in the loop after the timed ones: the timed figures are whole, but neither the
    stream files nor a plot of half a loop are written."""
    pytest.importorskip("matplotlib")
    interrupt_at(monkeypatch, 9)                 # 4 chunks a loop: 2 timed, the untimed one
    code, doc = replay_json(tmp_path, "--provider", "host", *TINY, "--loops", "2",
                            "--dump-streams", str(tmp_path / "d"), "--plot",
                            str(tmp_path / "p.png"), "--chunk", "64")
    assert code == 130 and doc["interrupted"] and doc["counters"]["loops"] == 2
    err = capsys.readouterr().err
    assert "--dump-streams" in err and "--plot" in err
    assert sorted(os.listdir(tmp_path)) == ["r.json"]


def test_ctrl_c_during_the_checks_is_no_ok(tmp_path, monkeypatch):
    """Cut after the loops, in the checks: the loops are reported, their validation is not
    "ok" (nothing was checked), the machine is still torn down."""
    def check(self):
        raise KeyboardInterrupt
    monkeypatch.setattr(app._App, "check", check)
    code, doc = replay_json(tmp_path, "--provider", "host", *TINY, "--loops", "2")
    assert code == 130 and doc["counters"]["loops"] == 2
    assert doc["validation"]["result"] == "skipped", doc["validation"]
    assert "interrupted before the checks of run 1" in doc["validation"]["detail"]
    assert doc["inflight-after-teardown"] == 0 and doc["leaks"] == []


def test_ctrl_c_before_a_timed_loop_reports_nothing(tmp_path, monkeypatch, capsys):
    interrupt_at(monkeypatch, 1)
    code = main(["--provider", "host", *TINY, "--warmup", "1", "--json", str(tmp_path / "r")])
    assert code == 130
    assert "nothing to report" in capsys.readouterr().err
    assert os.listdir(tmp_path) == []


# ---- --compare ----------------------------------------------------------------------------------

def two_reports(tmp_path):
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    for path, extra in ((a, []), (b, ["--app-cpu", "same"])):
        assert main(["--provider", "host", *TINY, "--runs", "3", *extra, "--json", str(path)]) \
            == 0
    return a, b


def test_compare_prints_side_by_side_and_writes_csv(tmp_path, capsys):
    a, b = two_reports(tmp_path)
    capsys.readouterr()
    csv_path = tmp_path / "c.csv"
    assert main(["--compare", str(a), str(b), "--csv", str(csv_path)]) == 0
    out = capsys.readouterr().out
    assert f"A  {a}: host, 2 queue(s)" in out and "app-cpu same" in out
    assert "B vs A" in out and "qstats.rx-packets" in out
    assert any(w in out for w in ("beyond", "within"))
    rows = list(csv.DictReader(csv_path.read_text().splitlines()))
    assert set(rows[0]) == set(replay.Comparison.CSV_FIELDS)
    by = {(r["figure"], r["file"]): r for r in rows}
    docs = [json.loads(p.read_text()) for p in (a, b)]
    for path, doc in zip((a, b), docs, strict=True):
        assert float(by["qstats.rx-packets", str(path)]["value"]) == 1000.0
        t = by["replay.mpps", str(path)]
        assert (float(t["value"]), float(t["min"]), float(t["max"])) == (
            doc["replay"]["mpps"], doc["replay"]["min"]["mpps"], doc["replay"]["max"]["mpps"])
    cached = [d["recycle"]["cache"] * 1000 / d["replay"]["frames"] for d in docs]
    row = by["recycle.cache", str(b)]
    assert float(row["delta"]) == pytest.approx(cached[1] - cached[0])
    assert by["replay.mpps", str(a)]["beyond-spread"] == ""
    assert by["replay.mpps", str(b)]["beyond-spread"] in ("yes", "no")


def test_compare_says_beyond_the_spread_only_when_ranges_do_not_overlap(tmp_path):
    a, _ = two_reports(tmp_path)
    base = json.loads(a.read_text())

    def shifted(lo, hi, runs=3):
        d = json.loads(a.read_text())
        d["replay"]["runs"] = d["replay"]["runs"][:runs]
        d["replay"]["min"]["mpps"], d["replay"]["max"]["mpps"] = lo, hi
        return d

    lo, hi = base["replay"]["min"]["mpps"], base["replay"]["max"]["mpps"]
    assert compare._beyond(shifted(hi * 1.01, hi * 2), base, "mpps") is True
    assert compare._beyond(shifted(0, lo * 0.99), base, "mpps") is True
    assert compare._beyond(shifted(hi, hi * 2), base, "mpps") is False       # they touch
    assert compare._beyond(shifted(hi * 2, hi * 3, runs=1), base, "mpps") is None


def test_compare_bad_input_is_exit_code_2(tmp_path, capsys, monkeypatch):
    a, _ = two_reports(tmp_path)
    (tmp_path / "text.json").write_text("not json\n")
    old = json.loads(a.read_text())
    del old["counters"]                                 # a report counting the warm-up too
    (tmp_path / "old.json").write_text(json.dumps(old))
    out = tmp_path / "out.csv"
    cases = [
        ([str(a), str(tmp_path / "none.json")], "none.json: No such file or directory"),
        ([str(a), str(tmp_path / "text.json")], "text.json: not JSON"),
        ([str(a), str(tmp_path / "old.json")],
         ("not a netmem-replay report (REPORT_SCHEMA, at the top level: 'counters' is a "
          "required property)")),
        ([str(a)], "give two reports or more"),
        ([str(a), str(a), "--loops", "3"], "--loops is an option of a replay"),
        ([str(a), str(a), "--csv", str(tmp_path / "no" / "c.csv")], "--csv"),
    ]
    for argv, message in cases:
        assert main(["--compare", *argv, "--csv", str(out)] if "--csv" not in argv
                    else ["--compare", *argv]) == 2, argv
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0], err
        assert not out.exists()
    assert main(["--provider", "host", "--csv", str(out)]) == 2
    assert "--csv: only with --compare" in capsys.readouterr().err
    monkeypatch.setitem(sys.modules, "jsonschema", None)     # not installed
    assert main(["--compare", str(a), str(a)]) == 2
    assert "--compare needs jsonschema" in capsys.readouterr().err
