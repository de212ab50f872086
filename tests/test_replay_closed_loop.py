"""``netmem-replay --closed-loop`` (netmem/replay/closedloop.py): every provider completes and
validates, the report (text, ``--json`` against ``REPORT_SCHEMA``, ``--plot``, ``--compare``)
carries goodput, retransmits, RTOs and the drops, a dma-buf smaller than the traffic is taken,
and the options are refused where they make no sense (exit 2).
"""
import json

import jsonschema
import pytest

from netmem.replay import REPORT_SCHEMA, main

SMALL = ["--closed-loop", "--connections", "4", "--payload", "256KiB"]


def run_json(tmp_path, *args, name="r.json", rc=0):
    path = tmp_path / name
    assert main([*SMALL, *args, "--json", str(path)]) == rc
    doc = json.loads(path.read_text())
    jsonschema.validate(doc, REPORT_SCHEMA)
    return doc


@pytest.mark.parametrize("provider", ["host", "dmabuf", "p2pdma", "zcrx"])
def test_every_provider_completes_over_a_lossy_link(tmp_path, provider):
    doc = run_json(tmp_path, "--provider", provider, "--loss", "0.01", "--seed", "3")
    cl = doc["closed-loop"]
    assert cl["completed"] and cl["retransmits"] > 0 and cl["goodput-gbps"] > 0
    assert cl["links"]["forward"]["dropped_loss"] > 0
    assert doc["validation"]["result"] == "ok" and doc["inflight-after-teardown"] == 0
    assert doc["validation"]["bytes"] == 4 * (256 << 10)
    f = cl["frames"]
    assert doc["replay"]["frames"] == f["sent"] + f["received"] + f["acks-received"]
    assert doc["trace"]["frames"] == f["sent"]


def test_a_small_dmabuf_with_held_tokens_drops_at_the_nic_and_retransmits(tmp_path, capsys):
    """1 MiB of dma-buf (256 net_iovs), rings of 64, tokens held 1 ms: the page pool cannot
    refill (rx-alloc-fail), the NIC drops (rx-hw-drop-overruns), each drop is retransmitted;
    the report says so, and the plot draws cwnd and the pools over virtual time."""
    png = tmp_path / "cl.png"
    doc = run_json(tmp_path, "--dmabuf-size", "1MiB", "--pool-size", "64", "--hold-tokens",
                   "1ms", "--connections", "16", "--plot", str(png))
    cl = doc["closed-loop"]
    assert cl["completed"] and cl["hold-tokens"] == pytest.approx(1e-3)
    drops = doc["drops"]["queues"]
    assert drops["rx-alloc-fail"] > 0 and drops["rx-hw-drop-overruns"] > 0
    assert cl["retransmits"] == drops["rx-hw-drop-overruns"]       # no loss on the wire
    assert doc["validation"]["result"] == "ok" and doc["inflight-after-teardown"] == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    out = capsys.readouterr().out
    assert "closed loop: 16 connection(s) x 262144 bytes" in out and "retransmits" in out


def test_a_stalled_run_says_where_the_buffers_are(tmp_path, capsys):
    """Tokens returned at once over 1 MiB (the README's stall): the run does not complete,
    validation fails (exit 1), and ``receiver-held`` shows the out-of-order queues holding
    about the whole binding (256 net_iovs of 4 KiB)."""
    doc = run_json(tmp_path, "--dmabuf-size", "1MiB", "--pool-size", "64", "--payload", "4MiB",
                   "--connections", "16", rc=1)
    cl, held = doc["closed-loop"], doc["closed-loop"]["receiver-held"]
    assert not cl["completed"] and doc["validation"]["result"] != "ok"
    assert held["ofo-skbs"] > 0 and held["rmem-alloc"] >= 256 * 4096
    assert doc["inflight-after-teardown"] == 0
    assert "out-of-order skb(s)" in capsys.readouterr().out


def test_compare_reads_closed_loop_reports(tmp_path, capsys):
    a = tmp_path / "a.json"
    b = tmp_path / "b.json"
    assert main([*SMALL, "--provider", "host", "--json", str(a)]) == 0
    assert main([*SMALL, "--provider", "host", "--cc", "reno", "--json", str(b)]) == 0
    capsys.readouterr()
    assert main(["--compare", str(a), str(b)]) == 0
    assert "Mpps" in capsys.readouterr().out


@pytest.mark.parametrize("args, why", [
    (["--link-gbps", "10"], "--link-gbps: only with --closed-loop"),
    ([*SMALL, "--loss", "1"], "--loss 1.0: a probability below 1"),
    ([*SMALL, "--provider", "host", "--hold-tokens", "1ms"], "no devmem tokens to hold"),
    ([*SMALL, "--loops", "2"], "one run of one loop"),
    ([*SMALL, "--validate", "0"], "the senders send ncdevmem's pattern"),
    ([*SMALL, "--mtu", "9000"], "at most 1500"),
])
def test_bad_options_exit_2(capsys, args, why):
    assert main(args) == 2
    assert why in capsys.readouterr().err


def test_a_binding_smaller_than_the_rings_starves_the_second_queue(tmp_path):
    """1 MiB (256 net_iovs) bound to two queues with the default rings of 1024: the first
    queue's page pool takes every net_iov and recycles them to itself, the second's never gets
    one, so its connections cannot complete, as on a NIC whose rings exceed its binding; the
    report says so with the counters (rx-alloc-fail, validation failed, exit 1) and nothing
    is left after teardown."""
    path = tmp_path / "r.json"
    assert main([*SMALL, "--connections", "16", "--dmabuf-size", "1MiB", "--json",
                 str(path)]) == 1
    doc = json.loads(path.read_text())
    jsonschema.validate(doc, REPORT_SCHEMA)
    assert not doc["closed-loop"]["completed"]
    assert doc["drops"]["queues"]["rx-alloc-fail"] > 0
    assert doc["validation"]["result"] == "failed"
    assert "did not complete" in doc["validation"]["detail"]
    assert doc["inflight-after-teardown"] == 0 and doc["leaks"] == []
    pools = {q["id"]: q["page-pool"]["inflight"] for q in doc["queues"]}
    assert pools == {0: 256, 1: 0}
