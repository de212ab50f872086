"""Running the points: ``run_point()`` replays one in a process of its own (``python -m
netmem.replay ... --json``, so each run has its own interpreter and ``Machine``, and a crash
is one failed row), on this machine's cores (``Local``, threads that each wait for one child)
or on a Dask distributed cluster (``Cluster``, the same function on its workers). Both yield
``(point, result)`` as runs finish, in any order.
"""
import concurrent.futures
import errno
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time

from netmem.replay.config import BadInput


def run_point(argv, runs, started=None):
    """One netmem-replay run of ``argv`` with ``--runs runs`` in a child process: a dict of its
    ``exit-code`` (a signal's as a shell reports it, 128 + the number), ``error`` (the last line
    it wrote on stderr when it failed, else ""), ``report`` (its ``--json`` document, or None)
    and ``wall-seconds``. ``started(proc)``, if given, is told the child (``Local`` ends the
    children it started on Ctrl-C)."""
    with tempfile.TemporaryDirectory(prefix="netmem-sweep-") as d:
        path = os.path.join(d, "report.json")
        cmd = [sys.executable, "-m", "netmem.replay", *argv, "--runs", str(runs), "--json", path,
               "--no-progress"]
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, start_new_session=True)
        if started is not None:
            started(proc)
        _, err = proc.communicate()
        wall = time.perf_counter() - t0
        code = proc.returncode if proc.returncode >= 0 else 128 - proc.returncode
        lines = [ln for ln in err.decode(errors="replace").splitlines() if ln.strip()]
        error = ""
        if proc.returncode < 0:
            error = f"killed by {signal.Signals(-proc.returncode).name}"
        elif code:
            error = lines[-1] if lines else f"netmem-replay exited {code}"
        report = None
        if os.path.exists(path):
            try:
                with open(path, "rb") as f:
                    report = json.load(f)
            except ValueError as e:
                error = error or f"its --json report is not JSON: {e}"
    return {"exit-code": code, "error": error, "report": report, "wall-seconds": wall}


class Local:
    """Runs on this machine, ``jobs`` at a time (each a child process; a thread waits for
    it). ``stop()`` kills the children still running (Ctrl-C): their rows are not kept."""

    def __init__(self, jobs):
        self.jobs = jobs
        self._procs = set()
        self._lock = threading.Lock()
        self._stopping = False

    def _started(self, proc):
        with self._lock:
            self._procs.add(proc)
            if self._stopping:
                proc.kill()

    def run(self, points, runs):
        with concurrent.futures.ThreadPoolExecutor(self.jobs) as pool:
            futures = {pool.submit(run_point, p.argv, runs, self._started): p for p in points}
            try:
                for fut in concurrent.futures.as_completed(futures):
                    yield futures[fut], fut.result()
            finally:
                for fut in futures:
                    fut.cancel()
                self.stop()

    def stop(self):
        with self._lock:
            self._stopping = True
            for proc in self._procs:
                if proc.poll() is None:
                    proc.kill()


class Cluster:
    """Runs on the Dask distributed cluster whose scheduler is at ``address`` (its workers need
    netmem installed: each runs ``run_point()``, which starts the child on the worker's
    machine). A task the cluster loses (a worker died) is a row with the error and no exit
    code. ``stop()`` cancels the tasks not finished (a child already running on a worker runs
    to its end)."""

    def __init__(self, address, timeout=10):
        try:
            import distributed
        except ImportError:
            raise BadInput("--scheduler needs Dask distributed (pip install "
                           "'netmem[cluster]')", errno.ENOENT) from None
        self._distributed = distributed
        try:
            self.client = distributed.Client(address, timeout=timeout)
        except (OSError, ValueError, TypeError) as e:
            raise BadInput(f"--scheduler {address}: cannot connect: {e}",
                           errno.ECONNREFUSED) from None
        self._futures = []

    def run(self, points, runs):
        by_key = {}
        for p in points:
            fut = self.client.submit(run_point, p.argv, runs, pure=False,
                                     key=f"netmem-sweep-run-{p.run}-{os.getpid()}-{id(self)}")
            by_key[fut.key] = p
            self._futures.append(fut)
        try:
            for fut in self._distributed.as_completed(self._futures):
                try:
                    result = fut.result()
                except Exception as e:          # the cluster lost the task
                    result = {"exit-code": None, "error": f"dask: {type(e).__name__}: {e}",
                              "report": None, "wall-seconds": None}
                yield by_key[fut.key], result
        finally:
            self.stop()

    def stop(self):
        if self._futures:
            self.client.cancel(self._futures)
            self._futures = []

    def close(self):
        self.client.close()
