"""The command line: ``netmem-sweep``'s parser, ``main()``: the grid read and checked, every
output checked before a run starts, the runs (local or on a Dask cluster) with a progress bar,
each row written as it finishes, then the summary table and the plot.
"""
import errno
import importlib.util
import os
import sys

import tqdm

from netmem.replay.config import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, BadInput
from netmem.replay.output import _check_output
from netmem.sweep.execute import Cluster, Local
from netmem.sweep.grid import load_toml, parse_param, points
from netmem.sweep.plot import write_plot
from netmem.sweep.results import Results, make_row, read_rows, summary
from netmem.tools import Parser


def _parser():
    ap = Parser(prog="netmem-sweep",
                description=sys.modules[__package__].__doc__.split("\n\n")[0])
    ap.add_argument("--param", dest="params", type=parse_param, action="append", default=[],
                    metavar="NAME=V1,V2",
                    help="a netmem-replay long option and its values (repeatable); the runs "
                         "are the cartesian product of every --param")
    ap.add_argument("--grid", metavar="FILE.toml",
                    help="the grid from a TOML file: a [params] table (NAME = [V1, V2] or "
                         "NAME = V) and optionally runs = N; --param adds to it")
    ap.add_argument("--runs", type=int, metavar="N",
                    help="netmem-replay --runs of every run: N fresh machines, the time "
                         "figures their median, min and max (default: the grid file's, or 1)")
    ap.add_argument("--out", required=True, metavar="FILE.csv",
                    help="the rows as CSV, rewritten as each run finishes")
    ap.add_argument("--json", metavar="FILE", help="the rows as JSON too")
    ap.add_argument("--plot", metavar="FILE.png",
                    help="plot --plot-y against --plot-x (needs matplotlib)")
    ap.add_argument("--plot-x", metavar="PARAM", help="the parameter on the x axis (default: "
                    "the first with more than one value)")
    ap.add_argument("--plot-y", default="replay.mpps", metavar="FIGURE",
                    help="the figure plotted, a column of --out (default %(default)s)")
    ap.add_argument("--jobs", type=int, metavar="N",
                    help="runs at a time on this machine (default: every usable core)")
    ap.add_argument("--scheduler", metavar="ADDRESS",
                    help="run on the Dask distributed cluster at ADDRESS "
                         "(tcp://HOST:8786), not on this machine")
    ap.add_argument("--resume", action="store_true",
                    help="keep the rows --out already has and run only the others")
    ap.add_argument("--progress", action="store_true", default=None,
                    help="progress bar on stderr (default: when it is a terminal)")
    return ap


def _grid(args):
    """The parameters (a grid file's, then --param's) and --runs."""
    params, runs = [], None
    if args.grid is not None:
        params, runs = load_toml(args.grid)
    params += args.params
    if not params:
        raise BadInput("no parameter: give --param NAME=V1,V2 or --grid FILE.toml")
    runs = args.runs if args.runs is not None else runs if runs is not None else 1
    if runs < 1:
        raise BadInput(f"--runs {runs}: at least 1")
    return params, runs


def _check(args, names):
    """Every output writable, the plot's axis a parameter, the executor's options sane."""
    for opt, path in (("--out", args.out), ("--json", args.json), ("--plot", args.plot)):
        if path is not None:
            _check_output(opt, path)
    if args.json is not None and os.path.abspath(args.json) == os.path.abspath(args.out):
        raise BadInput(f"--json {args.json}: the same file as --out")
    if args.plot is not None and importlib.util.find_spec("matplotlib") is None:
        raise BadInput("--plot needs matplotlib (pip install 'netmem[plot]')", errno.ENOENT)
    if args.plot_x is not None and args.plot_x not in names:
        raise BadInput(f"--plot-x {args.plot_x}: not a parameter of the grid "
                       f"({', '.join(names)})")
    if args.jobs is not None and args.jobs < 1:
        raise BadInput(f"--jobs {args.jobs}: at least 1")
    if args.jobs is not None and args.scheduler is not None:
        raise BadInput("--jobs: the cluster's workers decide how many run at a time, not "
                       "--jobs (with --scheduler)")


def _plot_x(params):
    return next((n for n, v in params if len(v) > 1), params[0][0])


def main(argv=None):
    """``netmem-sweep``: returns the exit code (0 every run ok, 1 a run failed, 2 bad input,
    130 interrupted: the rows finished are kept)."""
    try:
        args = _parser().parse_args(argv)
    except SystemExit as e:
        return e.code
    try:
        params, runs = _grid(args)
        names = [n for n, _ in params]
        grid = points(params)
        _check(args, names)
        done = read_rows(args.out, names) if args.resume else []
        results = Results(names, args.out, args.json, done)
        todo = [p for p in grid if p.key not in results.keys()]
        executor = (Cluster(args.scheduler) if args.scheduler is not None else
                    Local(args.jobs or len(os.sched_getaffinity(0))))
    except BadInput as e:
        print(f"netmem-sweep: {e.strerror}", file=sys.stderr)
        return EXIT_BAD_INPUT
    interrupted = _run(executor, todo, runs, names, results, args.progress)
    print(summary(names, results.rows))
    if interrupted:
        print(f"netmem-sweep: interrupted: {len(results.rows)} of {len(grid)} rows in "
              f"{args.out}; --resume runs the others", file=sys.stderr)
        return EXIT_INTERRUPTED
    if args.plot is not None:
        x = args.plot_x or _plot_x(params)
        if not write_plot(args.plot, names, results.rows, x, args.plot_y):
            print(f"netmem-sweep: --plot-y {args.plot_y}: no row has that figure: "
                  f"--plot {args.plot} not written", file=sys.stderr)
            return EXIT_BAD_INPUT
    return EXIT_OK if all(r["exit-code"] == 0 for r in results.rows) else EXIT_FAILED


def _run(executor, todo, runs, names, results, progress):
    """The runs, each row written as it finishes; True when Ctrl-C stopped them (a row of a run
    that was interrupted, exit 130, is not kept)."""
    bar = tqdm.tqdm(total=len(todo), desc="netmem-sweep", unit=" runs", leave=False,
                    file=sys.stderr, disable=not (sys.stderr.isatty() if progress is None
                                                  else progress))
    interrupted = False
    try:
        for point, result in executor.run(todo, runs):
            if result["exit-code"] == EXIT_INTERRUPTED:      # its replay got the SIGINT
                interrupted = True
                continue
            results.add(make_row(names, point, result, runs))
            bar.update()
    except KeyboardInterrupt:
        interrupted = True
    finally:
        bar.close()
        if isinstance(executor, Cluster):
            executor.close()
    return interrupted
