"""netmem-sweep: netmem-replay over the cartesian product of its options, each run in a process
of its own, on this machine's cores or on a Dask distributed cluster; one row per run.

``netmem-sweep --param provider=host,dmabuf --param pool-size=256,1024 --runs 3 --out
results.csv [--json results.json] [--plot FIGURE.png]``, or the same grid from a TOML file
(``--grid FILE.toml``: a ``[params]`` table, ``provider = ["host", "dmabuf"]``, and
optionally ``runs = 3``). A parameter is a netmem-replay long option (a flag takes ``true``
or ``false``); each point is checked by netmem-replay's own parser before anything runs
(exit 2 naming it). ``--runs N`` is netmem-replay's: each run replays on N fresh machines
and reports the median, min and max of each time figure. Each run is ``python -m
netmem.replay ... --json``, a child process with its own ``Machine``; ``--jobs`` of them at a
time (default: every usable core), or on the cluster at ``--scheduler tcp://HOST:8786``
(``pip install 'netmem[cluster]'``; the workers need netmem installed, and each starts its
runs' children on its own machine).

Output: ``--out`` (CSV; ``--json`` the same rows as JSON) has one row per run, rewritten
through a temporary file as each finishes: ``run`` (the point's index in the grid, the first
parameter varying slowest), every parameter, ``exit-code`` (netmem-replay's: 0 ok, 1
validation failed or buffers lost, 2 bad input; 128 + N killed by signal N; empty when the
cluster lost the task), ``error`` (the last line the run wrote on stderr when it failed),
``validation``, ``inflight-after-teardown``, ``wall-seconds``, then every figure of its
report: ``replay.F`` for each time figure (the median over the runs; with ``--runs`` > 1
``replay.F.min`` and ``replay.F.max`` too) and each counter of the timed loops by its place in
the report (``queues[0].page-pool.alloc-fast``, as ``netmem-replay --compare`` names them).
A failing run is a row with its error and exit code. Then a summary table on stdout, and with
``--plot`` one figure (``--plot-y``, default ``replay.mpps``) against one parameter
(``--plot-x``), a line for each combination of the others. Ctrl-C stops the runs, kills those
running (a local one; on a cluster a run already started runs to its end) and keeps the
rows finished; ``--resume`` keeps the rows ``--out`` has (a failed row too: the runs are
deterministic) and runs the others, known by run index and parameters.

Exit codes: 0 every run ok; 1 a run failed; 2 bad input (nothing run); 130 interrupted.

The package: ``grid`` (the parameters, the TOML file, the points); ``execute`` (one run in a
child process, ``Local`` and ``Cluster``); ``results`` (rows, CSV and JSON, ``--resume``, the
summary); ``plot``; ``cli`` (``main()``).
"""
from netmem.sweep.cli import main

__all__ = ["main"]
