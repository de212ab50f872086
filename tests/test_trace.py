"""Tracepoints beyond page_pool's (their own tests are in test_page_pool.py): the bounded ring
and its count of dropped records, and ``netmem-replay --trace-out``: the default workload's
Chrome trace-event JSON checked against the JSON Object Format of the Trace Event Format (a
JSON Schema, with jsonschema), its durations nesting per track, its events on virtual time.
"""
import json

import jsonschema
import pytest

from netmem import trace as nmtrace
from netmem.flows import generate
from netmem.replay import DEFAULT_WORKLOAD, Config, main, run

# The Trace Event Format's JSON Object Format (docs.google.com/document/d/1CvAClvFfyA5R-PhYUmn5OO
# QtYMH4h6I0nSsKchNAySU): the phases netmem writes (X complete, i instant, M metadata); ts and
# dur in microseconds; pid and tid integers; metadata names a process or a thread.
_EVENT = {
    "type": "object",
    "required": ["name", "ph", "pid", "tid"],
    "properties": {"name": {"type": "string"}, "cat": {"type": "string"},
                   "ph": {"enum": ["X", "i", "M"]}, "pid": {"type": "integer", "minimum": 0},
                   "tid": {"type": "integer", "minimum": 0}, "ts": {"type": "number",
                                                                    "minimum": 0},
                   "args": {"type": "object"}},
    "allOf": [
        {"if": {"properties": {"ph": {"const": "X"}}},
         "then": {"required": ["ts", "dur"], "properties": {"dur": {"type": "number",
                                                                    "minimum": 0}}}},
        {"if": {"properties": {"ph": {"const": "i"}}},
         "then": {"required": ["ts", "s"], "properties": {"s": {"enum": ["g", "p", "t"]}}}},
        {"if": {"properties": {"ph": {"const": "M"}}},
         "then": {"required": ["args"], "properties": {
             "name": {"enum": ["process_name", "thread_name", "process_sort_index",
                               "thread_sort_index"]}}}},
    ],
}
TRACE_EVENT_SCHEMA = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "required": ["traceEvents"],
    "properties": {"traceEvents": {"type": "array", "items": _EVENT},
                   "displayTimeUnit": {"enum": ["ms", "ns"]},
                   "otherData": {"type": "object"}},
}


def check_nesting(events):
    """Per track (pid, tid): complete events are disjoint or nested; every instant on a NAPI
    track (tid > 0) lies within one of its polls. Times compared in whole ns, as a reader takes
    them (``ts + dur`` in float microseconds may be off by an ulp)."""
    tracks = {}
    for e in events:
        if e["ph"] != "M":
            tracks.setdefault((e["pid"], e["tid"]), []).append(e)
    for (_, tid), evs in tracks.items():
        spans = sorted(((round(e["ts"] * 1000), round((e["ts"] + e["dur"]) * 1000))
                        for e in evs if e["ph"] == "X"),
                       key=lambda s: (s[0], -s[1]))
        stack = []
        for lo, hi in spans:
            while stack and stack[-1] <= lo:     # ends are exclusive: touching is no nesting
                stack.pop()
            assert not stack or hi <= stack[-1], f"span [{lo}, {hi}] crosses its parent's end"
            stack.append(hi)
        if tid:
            for e in evs:
                if e["ph"] == "i":
                    at = round(e["ts"] * 1000)
                    assert any(lo <= at <= hi for lo, hi in spans), e


@pytest.fixture(scope="module")
def perfetto(tmp_path_factory):
    path = tmp_path_factory.mktemp("trace") / "trace.json"
    report = run(Config(trace_out=str(path), progress=False))
    report.write_trace(str(path))
    return json.loads(path.read_text()), report


def test_the_default_workloads_trace_is_valid_trace_event_json(perfetto):
    doc, _ = perfetto
    jsonschema.validate(doc, TRACE_EVENT_SCHEMA)
    events = doc["traceEvents"]
    check_nesting(events)
    names = {(e["pid"], e["tid"]): e["args"]["name"] for e in events
             if e["name"] == "thread_name"}
    procs = {e["pid"]: e["args"]["name"] for e in events if e["name"] == "process_name"}
    used = {(e["pid"], e["tid"]) for e in events if e["ph"] != "M"}
    assert used <= names.keys() and {p for p, _ in used} <= procs.keys()
    # the replay's layout: queue q polls on CPU q, the application on CPU 2
    assert names[(0, 1)].startswith("eth1 rx-0 NAPI ") and names[(1, 2)].startswith("eth1 rx-1")
    assert procs == {0: "CPU 0", 1: "CPU 1", 2: "CPU 2"}
    seen = {e["cat"] + ":" + e["name"] for e in events if e["ph"] != "M"}
    assert seen == {"page_pool:page_pool_state_hold", "page_pool:page_pool_state_release",
                    "page_pool:page_pool_release", "napi:napi_poll", "skb:kfree_skb",
                    "net:netif_receive_skb", "netmem:sock_devmem_dontneed",
                    "netmem:netdev_rx_queue_restart"}
    assert doc["otherData"]["dropped-records"] == 0


def test_the_trace_is_on_virtual_time_in_microseconds(perfetto):
    doc, report = perfetto
    polls = [e for e in doc["traceEvents"] if e["name"] == "napi_poll"]
    assert {e["args"]["budget"] for e in polls} == {64}
    assert sum(e["args"]["work"] for e in polls) == report.doc["trace"]["frames"]
    # the polls span the untimed loop's frames, from the first polled to the last: about the
    # workload's own duration (its first and last frames may not be polled), in microseconds
    ts = generate(DEFAULT_WORKLOAD).trace.timestamps
    span = max(e["ts"] + e["dur"] for e in polls) - min(e["ts"] for e in polls)
    assert 0.9 <= span / ((int(ts[-1]) - int(ts[0])) / 1000) <= 1
    drops = [e for e in doc["traceEvents"] if e["name"] == "kfree_skb"]
    assert {e["args"]["reason"] for e in drops} == {
        f"SKB_DROP_REASON_{k}" for k in report.doc["drops"]["skb-drop-reasons"]}


def test_a_full_ring_drops_the_newest_records_and_counts_them(machine, make_pool):
    machine.trace.resize(100)
    machine.trace.enable("page_pool:page_pool_state_*")
    pool = make_pool()
    ref = pool.alloc_netmem()                   # 64 holds
    pool.put_netmem(ref)
    pool.destroy()                              # 64 releases
    events = machine.trace.events
    assert len(events) == 100 and machine.trace.dropped == 28
    assert [e["event"] for e in events[:64]] == ["page_pool:page_pool_state_hold"] * 64
    machine.trace.clear()
    assert machine.trace.dropped == 0 and machine.trace.events == []
    with pytest.raises(OSError, match="at least one record"):
        machine.trace.resize(0)


def test_the_ring_is_bounded_by_default(machine):
    machine.trace.enable("*")
    assert nmtrace.TRACE_RING == 1 << 18
    assert machine.trace.enabled == sorted(nmtrace._core.TRACEPOINTS)


def test_trace_out_into_a_missing_directory_is_bad_input(tmp_path, capsys):
    path = tmp_path / "nodir" / "t.json"
    assert main(["--provider", "host", "--connections", "4", "--trace-out", str(path)]) == 2
    assert capsys.readouterr().err == (f"netmem-replay: --trace-out {path}: "
                                       f"{path.parent} does not exist\n")
    assert not path.parent.exists()
