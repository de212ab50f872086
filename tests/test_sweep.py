"""netmem-sweep: a 2 x 2 grid with ``--runs 3`` in child processes on local cores and on a Dask
``LocalCluster`` (in process, two workers), the TOML grid, a failing run as a row, Ctrl-C and
``--resume``, the plot, and bad input (exit 2, one line, nothing written).
"""
import csv
import json
import os
import subprocess

import pytest

from netmem.sweep import cli, execute, grid, main, plot, results

TINY = ["--param", "connections=4", "--param", "payload=4KiB"]
GRID = ["--param", "provider=host,dmabuf", "--param", "pool-size=256,1024", *TINY]


class _Spy:
    """``subprocess.Popen`` in ``netmem.sweep.execute``, recording every child's pid."""

    def __init__(self, monkeypatch):
        self.pids = []
        real = subprocess.Popen

        def popen(*args, **kwargs):
            proc = real(*args, **kwargs)
            self.pids.append(proc.pid)
            return proc

        monkeypatch.setattr(execute.subprocess, "Popen", popen)


def rows_of(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def check_grid_rows(rows):
    assert [(r["run"], r["provider"], r["pool-size"]) for r in rows] == [
        ("0", "host", "256"), ("1", "host", "1024"), ("2", "dmabuf", "256"),
        ("3", "dmabuf", "1024")]
    for r in rows:
        assert r["exit-code"] == "0" and r["error"] == "" and r["validation"] == "ok"
        lo, mid, hi = (float(r[f"replay.mpps{s}"]) for s in (".min", "", ".max"))
        assert 0 < lo <= mid <= hi
        assert int(r["qstats.rx-packets"]) > 0
    assert all(r["devmem.tokens-returned"] == "" for r in rows[:2])


def test_a_2x2_grid_runs_each_point_in_a_process_of_its_own(tmp_path, monkeypatch, capsys):
    spy = _Spy(monkeypatch)
    out, js, fig = tmp_path / "r.csv", tmp_path / "r.json", tmp_path / "r.png"
    code = main([*GRID, "--runs", "3", "--jobs", "2", "--out", str(out), "--json", str(js),
                 "--plot", str(fig)])
    assert code == 0
    check_grid_rows(rows_of(out))
    assert len(set(spy.pids)) == 4 and os.getpid() not in spy.pids
    doc = json.loads(js.read_text())
    assert doc["params"] == ["provider", "pool-size", "connections", "payload"]
    assert [r["run"] for r in doc["rows"]] == [0, 1, 2, 3]
    assert fig.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    table = capsys.readouterr().out.splitlines()
    assert table[0].split()[:3] == ["run", "provider", "pool-size"] and len(table) == 5


def test_the_same_grid_runs_on_a_dask_local_cluster(tmp_path, monkeypatch):
    distributed = pytest.importorskip("distributed")

    def no_local(*a, **k):
        raise AssertionError("ran locally, not on the cluster")

    monkeypatch.setattr(execute.Local, "run", no_local)
    out = tmp_path / "r.csv"
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=False,
                                  protocol="tcp", dashboard_address=None) as cluster:
        code = main([*GRID, "--runs", "3", "--out", str(out),
                     "--scheduler", cluster.scheduler_address])
    assert code == 0
    check_grid_rows(rows_of(out))


def test_a_toml_grid_is_the_same_grid(tmp_path):
    toml = tmp_path / "g.toml"
    toml.write_text('runs = 2\n[params]\nprovider = ["host", "dmabuf"]\n'
                    'pool-size = [256, 1024]\nconnections = 4\npayload = "4KiB"\n')
    args = cli._parser().parse_args(["--grid", str(toml), "--out", "x"])
    params, runs = cli._grid(args)
    assert runs == 2
    assert grid.points(params) == grid.points(cli._grid(cli._parser().parse_args(
        [*GRID, "--out", "x"]))[0])


def test_a_failing_run_is_a_row_with_its_error_and_exit_code(tmp_path, capsys):
    out = tmp_path / "r.csv"
    code = main(["--param", "provider=host", "--param", "pool-size=256,99999", *TINY,
                 "--out", str(out), "--jobs", "1"])
    assert code == 1
    ok, bad = rows_of(out)
    assert ok["exit-code"] == "0" and ok["validation"] == "ok"
    assert bad["exit-code"] == "2" and bad["replay.mpps"] == "" and bad["validation"] == ""
    assert bad["error"].startswith("netmem-replay: --pool-size 99999:")
    assert "run 1: exit 2: netmem-replay: --pool-size 99999" in capsys.readouterr().out


def test_a_run_killed_by_a_signal_says_which(tmp_path):
    r = execute.run_point(("--provider", "host", "--connections", "4"), 1,
                          started=lambda proc: proc.kill())
    assert r["exit-code"] == 128 + 9 and r["error"] == "killed by SIGKILL"
    assert r["report"] is None


def test_ctrl_c_keeps_the_finished_rows_and_resume_runs_the_others(tmp_path, monkeypatch):
    out = tmp_path / "r.csv"
    argv = ["--param", "provider=host", "--param", "pool-size=256,512,1024", *TINY,
            "--out", str(out), "--jobs", "1"]
    real = results.make_row
    made = []

    def interrupt_after_one(*args):
        if made:
            raise KeyboardInterrupt
        made.append(real(*args))
        return made[-1]

    monkeypatch.setattr(cli, "make_row", interrupt_after_one)
    assert main(argv) == 130
    assert [r["run"] for r in rows_of(out)] == ["0"]
    monkeypatch.setattr(cli, "make_row", real)
    spy = _Spy(monkeypatch)
    assert main([*argv, "--resume"]) == 0
    assert len(spy.pids) == 2
    rows = rows_of(out)
    assert [(r["run"], r["pool-size"]) for r in rows] == [("0", "256"), ("1", "512"),
                                                         ("2", "1024")]
    assert rows[0]["replay.mpps"] == str(made[0]["replay.mpps"])


@pytest.mark.parametrize(("argv", "message"), [
    (["--param", "nosuch=1,2"], "--param nosuch: netmem-replay has no option --nosuch"),
    (["--param", "json=a.json"], "--param json: netmem-sweep sets --json itself"),
    (["--param", "pool-size=256,abc"],
     "--param pool-size=abc: netmem-replay: argument --pool-size: invalid int value: 'abc'"),
    (["--param", "pool-size=256,256"], "--param pool-size: a value is listed twice"),
    (["--param", "profile=yes"], "--param profile=yes: --profile is a flag: true or false"),
    (["--param", "queues=2", "--plot-x", "mtu"],
     "--plot-x mtu: not a parameter of the grid (queues)"),
    ([], "no parameter: give --param NAME=V1,V2 or --grid FILE.toml"),
])
def test_bad_input_exits_2_with_one_line_and_writes_nothing(tmp_path, capsys, argv, message):
    out = tmp_path / "r.csv"
    assert main([*argv, "--out", str(out)]) == 2
    assert capsys.readouterr().err == f"netmem-sweep: {message}\n"
    assert not out.exists()


def test_resume_refuses_another_grids_output(tmp_path, capsys):
    out = tmp_path / "r.csv"
    out.write_text("run,mtu,exit-code\n0,1500,0\n")
    assert main(["--param", "queues=1,2", "--out", str(out), "--resume"]) == 2
    assert "the output of another grid" in capsys.readouterr().err
    assert out.read_text() == "run,mtu,exit-code\n0,1500,0\n"


def test_the_plots_lines_are_named_by_the_parameters_that_vary():
    rows = [{"run": i, "provider": p, "pool-size": s, "connections": "4", "replay.mpps": 1.0 + i,
             "replay.mpps.min": 0.5 + i, "replay.mpps.max": 1.5 + i}
            for i, (p, s) in enumerate([("host", "256"), ("host", "1024"), ("dmabuf", "256"),
                                        ("dmabuf", "1024")])]
    names = ["provider", "pool-size", "connections"]
    assert plot.series(names, rows, "provider", "replay.mpps") == {
        "pool-size=256": [("host", 1.0, 0.5, 1.5), ("dmabuf", 3.0, 2.5, 3.5)],
        "pool-size=1024": [("host", 2.0, 1.5, 2.5), ("dmabuf", 4.0, 3.5, 4.5)]}
    assert plot.series(names, rows, "provider", "replay.gbps") == {}
