"""The grid: sweep parameters, each a netmem-replay long option with its values (``--param
NAME=V1,V2`` or a TOML file's ``[params]`` table), checked against netmem-replay's own parser
(``netmem.replay.cli._parser()``), and their cartesian product as the points of the sweep,
each the argv of one netmem-replay run.
"""
import argparse
import dataclasses
import errno
import itertools

from netmem.replay.cli import _parser
from netmem.replay.config import BadInput

#: netmem-replay options a sweep owns or that are not a replay's: the sweep writes each run's
#: ``--json`` itself, passes its own ``--runs``, and shows its own progress.
RESERVED = ("json", "plot", "trace-out", "dump-streams", "compare", "csv", "list-providers", "runs",
            "progress", "no-progress", "help")


@dataclasses.dataclass(frozen=True)
class Point:
    """One run of the sweep: its index in the grid (``run``), its parameters' values by name (in
    the grid's order) and the netmem-replay argv they make."""

    run: int
    values: tuple
    argv: tuple

    @property
    def key(self):
        """What ``--resume`` knows a finished row by: the run index and the values."""
        return (self.run, self.values)


def parse_param(text):
    """``NAME=V1,V2`` -> (name, [values]); argparse type of ``--param``."""
    name, eq, values = text.partition("=")
    name = name.strip().removeprefix("--")
    if not eq or not name or not values:
        raise argparse.ArgumentTypeError(f"cannot read {text!r}: NAME=V1,V2,... with NAME a "
                                         "netmem-replay long option")
    return name, [v.strip() for v in values.split(",")]


def load_toml(path):
    """A grid file: its ``[params]`` table (a name -> a value or a list of values) and its
    optional top-level ``runs``, as ``(params, runs)``."""
    try:
        import tomllib
    except ImportError:                 # Python 3.10
        raise BadInput("--grid needs Python 3.11 or later (tomllib)", errno.ENOENT) from None
    try:
        with open(path, "rb") as f:
            doc = tomllib.load(f)
    except OSError as e:
        raise BadInput(f"--grid {path}: {e.strerror}", e.errno) from None
    except tomllib.TOMLDecodeError as e:
        raise BadInput(f"--grid {path}: not TOML ({e})") from None
    unknown = sorted(set(doc) - {"params", "runs"})
    if unknown:
        raise BadInput(f"--grid {path}: unknown key {unknown[0]!r} (a grid file has [params] "
                       "and runs)")
    table = doc.get("params", {})
    if not isinstance(table, dict) or not table:
        raise BadInput(f"--grid {path}: no [params] table")
    runs = doc.get("runs")
    if runs is not None and (not isinstance(runs, int) or isinstance(runs, bool)):
        raise BadInput(f"--grid {path}: runs = {runs!r}: an integer")
    params = []
    for name, values in table.items():
        values = values if isinstance(values, list) else [values]
        if not values or any(isinstance(v, dict | list) for v in values):
            raise BadInput(f"--grid {path}: params.{name}: a value or a list of values")
        params.append((name, [_text(v) for v in values]))
    return params, runs


def _text(value):
    return ("true" if value else "false") if isinstance(value, bool) else str(value)


def points(params):
    """The cartesian product of ``params`` (``[(name, [values])]``, the first varying
    slowest) as ``Point`` s, each checked by netmem-replay's parser (BadInput naming the option
    and value it refuses). A name given twice, reserved or unknown is BadInput too."""
    ap = _parser()
    names = [n for n, _ in params]
    for n in names:
        if names.count(n) > 1:
            raise BadInput(f"--param {n}: given twice")
        if n in RESERVED:
            raise BadInput(f"--param {n}: netmem-sweep sets --{n} itself" if n in (
                "json", "runs", "progress", "no-progress") else
                f"--param {n}: not an option of one replay")
        if f"--{n}" not in ap._option_string_actions:
            raise BadInput(f"--param {n}: netmem-replay has no option --{n}")
    for n, values in params:
        if len(set(values)) != len(values):
            raise BadInput(f"--param {n}: a value is listed twice")
    out = []
    for i, values in enumerate(itertools.product(*(v for _, v in params))):
        argv = _argv(ap, names, values)
        _check_argv(ap, names, values, argv)
        out.append(Point(i, tuple(values), tuple(argv)))
    return out


def _argv(ap, names, values):
    argv = []
    for n, v in zip(names, values, strict=True):
        if ap._option_string_actions[f"--{n}"].nargs == 0:      # a flag: true or false
            if v not in ("true", "false"):
                raise BadInput(f"--param {n}={v}: --{n} is a flag: true or false")
            argv += [f"--{n}"] if v == "true" else []
        else:
            argv += [f"--{n}", v]
    return argv


def _check_argv(ap, names, values, argv):
    """netmem-replay's parser reads ``argv`` (its messages raised as BadInput, not printed)."""
    point = ", ".join(f"{n}={v}" for n, v in zip(names, values, strict=True))

    def error(message):
        raise BadInput(f"--param {point}: netmem-replay: {message}", errno.EINVAL)

    ap.error = error
    ap.parse_args(argv)
