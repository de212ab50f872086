"""``netmem-replay --profile`` (netmem.profile, pyx/profile.pxi): the structure of the profile,
never its figures (no test times anything). Every stage is there and the rows add up to the
profiled total; a stage the run never enters is exactly 0; nothing is counted while off; the
latency's percentiles are ordered and its histogram buckets read back as the C side fills them.
"""
import itertools
import json
import math

import jsonschema
import numpy as np
import pytest

from netmem import _core
from netmem.profile import STAGES, _bucket_top, _percentiles
from netmem.replay import REPORT_SCHEMA, Config, main, run

SMALL = {"connections": 4, "payload": 48 << 10}


def profiled(provider, loops=2, **kw):
    report = run(Config(provider=provider, loops=loops, warmup=1, profile=True, **SMALL, **kw))
    assert report.exit_code == 0, report.doc["validation"]
    jsonschema.validate(report.doc, REPORT_SCHEMA)
    return report.doc["profile"]


@pytest.mark.parametrize("provider", ["dmabuf", "host"])
def test_every_stage_is_there_and_the_rows_add_up_to_the_total(provider):
    p = profiled(provider)
    assert list(p["stages"]) == list(STAGES)
    assert all(v >= 0 for v in p["stages"].values())
    assert math.isclose(sum(p["stages"].values()) + p["other"], p["total-ns-per-frame"],
                        rel_tol=1e-9)
    assert p["total-ns-per-frame"] > 0 and p["unprofiled-ns-per-frame"] > 0
    assert p["sampled-frames"] > 0 and p["boundary-ns"] > 0
    for stage in ("steer", "dma-write", "skb-build", "tcp", "recvmsg", "validate", "puts"):
        assert p["stages"][stage] > 0, stage
    lat = p["latency-ns"]
    assert list(lat) == ["p50", "p90", "p99", "max"]
    assert lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["max"]


def test_host_pages_return_no_tokens():
    """No MSG_SOCK_DEVMEM, no SO_DEVMEM_DONTNEED: that stage is never entered."""
    assert profiled("host")["stages"]["dontneed"] == 0


def test_devmem_returns_tokens():
    assert profiled("dmabuf")["stages"]["dontneed"] > 0


def test_one_timed_loop_is_all_profiled():
    p = profiled("dmabuf", loops=1)
    assert p["unprofiled-ns-per-frame"] is None and p["total-ns-per-frame"] > 0


def test_off_by_default_and_nothing_counted():
    report = run(Config(provider="dmabuf", loops=1, **SMALL))
    assert report.doc["profile"] is None
    jsonschema.validate(report.doc, REPORT_SCHEMA)


def test_nothing_is_counted_while_off(machine, make_nic):
    """A machine that never profiled reads all zeros after traffic (the counters live in its
    nm_net)."""
    from netmem.flows import generate

    make_nic().receive(generate(connections=2, payload=16384).trace)
    raw = _core._prof_read(machine)
    assert not any(raw["cycles"]) and not any(raw["marks"])
    assert raw["frames"] == (0, 0) and not raw["latency-hist"].any()


def test_the_text_report_has_the_table(tmp_path, capsys):
    out = tmp_path / "r.json"
    assert main(["--provider", "host", "--connections", "4", "--payload", "48KiB", "--loops",
                 "2", "--profile", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "where the time goes" in text
    for label in STAGES.values():
        assert label in text
    assert json.loads(out.read_text())["profile"]["stages"].keys() == STAGES.keys()


def test_a_schema_without_a_stage_is_refused():
    p = profiled("host", loops=1)
    del p["stages"]["gro"]
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(p, REPORT_SCHEMA["properties"]["profile"]["oneOf"][1])


def test_buckets_are_exact_below_8_and_within_an_eighth_above():
    tops = [_bucket_top(i) for i in range(496)]
    assert tops[:9] == list(range(9))
    assert all(a < b for a, b in itertools.pairwise(tops))
    for i in range(9, 496):
        lo = tops[i - 1] + 1
        assert tops[i] - lo + 1 <= max(1, lo // 8), i
    assert tops[-1] == (1 << 64) - 1


def test_percentiles_are_bucket_tops_capped_at_the_max():
    hist = np.zeros(496, np.uint64)
    hist[3] = 50          # 50 skbs waited 3 ns
    hist[8 * 8] = 49      # 49 in [1024, 1151]
    hist[8 * 9 + 7] = 1   # one in [3840, 4095]
    assert _percentiles(hist, 4000) == {"p50": 3, "p90": 1151, "p99": 1151, "max": 4000}
    assert _percentiles(hist, 1100)["p99"] == 1100
    assert _percentiles(np.zeros(496, np.uint64), 0) is None


def test_the_first_quarter_is_left_out_and_the_rest_run_abba():
    from netmem.machine import Machine
    from netmem.profile import StageProfile

    prof = StageProfile(Machine(), frames=1, loops=20)
    kinds = []
    for k in range(-1, 20):
        prof.loop(k)
        kinds.append(None if prof._running is None else prof._running[0])
    prof.end()
    assert kinds == [None] * 4 + [True, False, False, True] * 4 + [True]
    assert prof.loops == [8, 9]


def test_with_runs_the_first_run_is_profiled(monkeypatch):
    """``--runs 3 --profile``: one StageProfile, on the first run's machine; the others run
    unprofiled (their C counters stay zero) and the report is valid."""
    from netmem import profile as profile_mod
    made = []
    real = profile_mod.StageProfile

    def spy(machine, *a):
        made.append(machine)
        return real(machine, *a)

    monkeypatch.setattr("netmem.replay.runner.StageProfile", spy)
    report = run(Config(provider="host", loops=2, runs=3, profile=True, **SMALL))
    assert report.exit_code == 0 and len(report.doc["replay"]["runs"]) == 3
    jsonschema.validate(report.doc, REPORT_SCHEMA)
    assert len(made) == 1 and report.doc["profile"]["stages"]["steer"] > 0
