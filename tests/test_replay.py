"""netmem-replay end to end: the CLI on small generated workloads for each provider (devmem ones
once their providers exist), ``--dump-streams`` byte for byte against tshark on captures with
impairments, non-TCP traffic and IPv6, the ``--json`` document against its schema, ``--plot``,
and bad input (exit code 2, a message naming the problem, nothing written).

``main()`` runs in-process for speed; one test runs the installed console script.
"""
import importlib.util
import json
import os
import stat
import struct
import subprocess
import sys
import threading

import jsonschema
import pytest
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.inet6 import ICMPv6EchoRequest, IPv6, IPv6ExtHdrDestOpt, IPv6ExtHdrFragment
from scapy.layers.l2 import ARP, Ether
from scapy.packet import Raw
from scapy.utils import wrpcap

from netmem import replay
from netmem.flows import generate
from netmem.replay import REPORT_SCHEMA, Config, main, run
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
                                       "ip_fragment": 1}
    assert doc["trace"]["frames"] == len(f.trace) + len(opts)
    assert doc["validation"]["result"] == "skipped"
    assert_streams_equal_tshark(tmp_path / "mix.pcap", tmp_path / "d")
    assert (tmp_path / "d" / "stream-4-node0.bin").read_bytes() == b"dest-opts payload"


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


def test_plot_draws_pool_occupancy(tmp_path):
    pytest.importorskip("matplotlib")
    png = tmp_path / "p.png"
    assert main(["--provider", "host", *SMALL, "--chunk", "128", "--plot", str(png)]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


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
    monkeypatch.setattr(replay.NetDevice, "unregister", lambda self: None)
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
    p = replay._Progress(200, True)
    p.next = 0
    p.update(50)
    p.close()
    err = capsys.readouterr().err
    assert "25.0% 50/200 frames" in err and err.endswith("\r")
    quiet = replay._Progress(200, False)
    quiet.next = 0
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
                                    "cannot write in"),
    "dump onto a file": (["--provider", "host", "--dump-streams", "{d}/ok.pcap"],
                         "not a directory"),
    "unknown provider": (["--provider", "rdma"], "invalid choice"),
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
    assert message in err.strip().splitlines()[-1], err     # one line names the problem
    assert sorted(os.listdir(d)) == before and os.listdir(out) == []


def test_a_provider_not_built_is_bad_input(capsys, monkeypatch):
    gone = replay.Provider("dmabuf", "netmem.providers.nothing", True, None)
    monkeypatch.setitem(replay.PROVIDERS, "dmabuf", gone)
    assert main(["--provider", "dmabuf", *SMALL]) == 2
    assert "netmem.providers.nothing is not installed" in capsys.readouterr().err
