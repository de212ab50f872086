"""The command-line tools and the package's import guard: they run and report what they should
(no timing is asserted here; figures belong to ``netmem-bench``)."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from netmem.tools import bench

from netmem import _core


def test_bench_pool_reports_every_figure():
    res = bench.run_pool(runs=5, scale=0.001)
    assert set(res) == set(bench.POOL_FIGURES)
    for r in res.values():
        assert r["runs"] == 5 and r["min"] <= r["median"] <= r["max"]
    assert res["floor_lifo_ns"]["ratio_to_floor"] == 1.0


def test_bench_iova_reports_every_figure():
    res = bench.run_iova(runs=5, scale=0.001)
    assert set(res) == set(bench.IOVA_FIGURES)
    for r in res.values():
        assert r["runs"] == 5 and r["min"] <= r["median"] <= r["max"]


def test_bench_dma_and_iova_suites_report_every_figure():
    for suite, figures in (("dma", bench.DMA_FIGURES), ("iova", bench.IOVA_FIGURES)):
        res = bench.SUITES[suite](runs=5, scale=0.001)
        assert set(res) == set(figures)
        assert all(r["median"] > 0 for r in res.values())
def test_bench_genalloc_reports_every_figure_and_frees_its_pools():
    res = bench.run_genalloc(runs=5, scale=0.001)
    assert set(res) == set(bench.GENALLOC_FIGURES)
    for name in ("genalloc_first_fit_10pct_ns", "genalloc_first_fit_90pct_ns",
                 "genalloc_hole_90pct_ns"):
        assert res[name]["runs"] == 5 and res[name]["median"] > 0
    table = bench.format_table("genalloc", res)
    assert "genalloc_first_fit_90pct_ns" in table and "x genalloc_first_fit_10pct_ns" in table


def test_bench_replay_times_every_provider_it_has_beside_memcpy():
    from netmem.provider import builtin_providers
    res = bench.run_replay(runs=5, scale=0.01, variants=False)      # variants: seconds each
    have = builtin_providers()
    assert have == ["dmabuf", "host", "p2pdma", "zcrx"]
    assert set(res) == {"memcpy_1500_ns", "replay_peak_rss_mib", "replay_bytes_floor_ns",
                        *(f"replay_{f}_{p}" for p in have for f in ("ns_per_pkt", "mpps"))}
    assert set(bench.TARGETS) >= {f"replay_ns_per_pkt_dmabuf_{v}"
                                  for v in bench.REPLAY_VARIANTS if v != "10conns"}
    host = res["replay_ns_per_pkt_host"]
    assert host["runs"] == 5 and host["median"] > 0
    assert res["replay_mpps_host"]["ratio_to_floor"] is None          # not a time
    assert res["memcpy_1500_ns"]["ratio_to_floor"] == 1.0
    assert res["replay_bytes_floor_ns"]["median"] > 0
    assert "replay_mpps_host" in bench.format_table("replay", res)


def test_bytes_floor_moves_and_checks_every_byte():
    """``bench_bytes_floor()``: frames longer than a buffer span several, the ring of buffers
    wraps between chunks, the last chunk is short, a frame may be empty; what it reads back is
    checked against the trace (a wrong read-back raises RuntimeError). Bad arguments are
    ValueError, a ring too small for a chunk among them (it would overwrite what is not read
    yet)."""
    rng = np.random.default_rng(3)
    lens = np.array([1, 7, 8, 9, 1500, 3000, 4096, 64, 0, 777] * 3, np.uint32)
    offs = np.concatenate(([0], np.cumsum(lens[:-1], dtype=np.uint64) + 3)).astype(np.uint64)
    arena = rng.integers(0, 256, int(offs[-1] + lens[-1]), dtype=np.uint8)
    assert _core.bench_bytes_floor(arena, offs, lens, 2, 11, 1024, 3) > 0
    assert _core.bench_bytes_floor(arena, offs, lens, 1024, 2048, 4096, 1) > 0
    with pytest.raises(ValueError, match="runs past the arena"):
        _core.bench_bytes_floor(arena[:-1], offs, lens, 2, 11, 1024, 1)
    with pytest.raises(ValueError, match="needs more than the 4 buffers"):
        _core.bench_bytes_floor(arena, offs, lens, 2, 4, 1024, 1)
    with pytest.raises(ValueError):
        _core.bench_bytes_floor(arena, offs, lens, 0, 5, 1024, 1)


def test_bench_closed_loop_figure():
    """The closed loop's figure (in the replay suite with its variants): its frames are
    those sent, received and ACKed, and the run validated (else it raises)."""
    r = bench._closed_loop(0.02)
    assert r["mpps"] > 0 and r["frames"] > 0
    assert bench.TARGETS["closed_loop_ns_per_frame"] == (1000.0, "ns")


def test_bench_capture_builds_once_and_replays_it_in_a_process_of_its_own(tmp_path):
    path = str(tmp_path / "cap.pcap")
    args = ("-n", "2", "--payload", "64KiB")
    first = bench._capture(5, path, args)["replay"]["runs"]
    stamp = os.path.getmtime(path)
    assert len(first) == 5 and all(r["ns-per-frame"] > 0 and r["mpps"] > 0 for r in first)
    again = bench._capture(1, path, args, warmup=0)          # as the 4 GiB capture's RSS run
    assert len(again["replay"]["runs"]) == 1 and again["max-rss"] > 0
    assert again["trace"]["streamed"]
    assert os.path.getmtime(path) == stamp                  # reused, not written again
    assert bench.capture_path().endswith(bench.CAPTURE_NAME)
    assert bench.capture_path(bench.CAPTURE_4G_NAME).endswith("flows-4GiB.pcap")
    assert bench.TARGETS["replay_peak_rss_mib_4GiB_capture"] == (1024.0, "MiB")
    floor = bench._capture_floor(2, path)
    assert len(floor) == 2 and all(x > 0 for x in floor)


def test_bench_json_and_markdown(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(bench, "pin_cpu", lambda: None)
    out = tmp_path / "BENCH.md"
    assert bench.main(["pool", "--json", "--scale", "0.001", "--markdown", str(out)]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert set(doc) == {"environment", "pool"}
    assert "pool_fast_ns" in doc["pool"]
    text = out.read_text()
    assert "| `pool_slow_ns` |" in text and "netmem-bench pool --runs 5" in text


def test_import_without_the_core_says_make_compile():
    code = "import sys; sys.modules['netmem._core'] = None; import netmem"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode != 0
    assert "make compile" in proc.stderr


def test_devmem_bench_suite_runs_and_loses_nothing():
    res = bench.run_devmem(runs=5, scale=0.002)
    assert set(res) >= {"genalloc_alloc_free_1pct_ns", "genalloc_alloc_free_99pct_ns",
                        "rx_devmem_ns_per_pkt", "tx_devmem_ns_per_pkt"}
    assert all(r["median"] > 0 for r in res.values())
