"""The rows of a sweep: one per run, its parameters, its exit code and error, and every figure
of its netmem-replay report (the time figures' median, min and max over ``--runs`` as
netmem-replay reports them; each counter of the timed loops by its place in the report, as
``--compare`` flattens them: ``report._report_counters()``); written as CSV (and JSON) after
each row, through a temporary file, so a stop keeps every finished row; read back by
``--resume``; and the summary table.
"""
import csv
import errno
import io
import json
import os

from netmem.replay.config import BadInput, _parsed
from netmem.replay.output import _write_atomic
from netmem.replay.report import _TIME_ROWS, TIME_FIGURES, _report_counters

#: The columns before the parameters' and after them, before the figures.
HEAD = ("run",)
STATUS = ("exit-code", "error", "validation", "inflight-after-teardown", "wall-seconds")


def figures(doc, runs):
    """Every figure of report ``doc``: ``replay.F`` for each time figure (the median over the
    runs), with ``replay.F.min`` and ``replay.F.max`` when ``runs`` > 1, then the counters."""
    r = doc["replay"]
    out = {}
    for f in TIME_FIGURES:
        out[f"replay.{f}"] = r[f]
        if runs > 1:
            out[f"replay.{f}.min"] = r["min"][f]
            out[f"replay.{f}.max"] = r["max"][f]
    out.update(_report_counters(doc))
    return out


def make_row(names, point, result, runs):
    """The row of ``point`` (its values under ``names``) from ``run_point()``'s ``result``."""
    doc = result["report"]
    row = {"run": point.run, **dict(zip(names, point.values, strict=True)),
           "exit-code": result["exit-code"], "error": result["error"],
           "validation": doc["validation"]["result"] if doc else None,
           "inflight-after-teardown": doc["inflight-after-teardown"] if doc else None,
           "wall-seconds": result["wall-seconds"]}
    if doc is not None:
        row.update(figures(doc, runs))
    return row


class Results:
    """The rows so far, written to ``out`` (CSV) and ``json_path`` (if given) after each
    ``add()``; the columns the union of every row's, the figures in the order first seen."""

    def __init__(self, names, out, json_path=None, rows=()):
        self.names = list(names)
        self.out = out
        self.json_path = json_path
        self.rows = list(rows)

    def keys(self):
        """The (run, values) of every row: what ``--resume`` skips."""
        return {(r["run"], tuple(r[n] for n in self.names)) for r in self.rows}

    def add(self, row):
        self.rows.append(row)
        self.write()

    def columns(self):
        cols = dict.fromkeys((*HEAD, *self.names, *STATUS))
        for r in self.rows:
            cols.update(dict.fromkeys(r))
        return list(cols)

    def write(self):
        rows = sorted(self.rows, key=lambda r: r["run"])
        buf = io.StringIO()
        w = csv.DictWriter(buf, self.columns(), lineterminator="\n")
        w.writeheader()
        w.writerows({k: "" if v is None else v for k, v in r.items()} for r in rows)
        _write_atomic(self.out, lambda f: f.write(buf.getvalue().encode()))
        if self.json_path is not None:
            doc = {"tool": "netmem-sweep", "params": self.names, "rows": rows}
            _write_atomic(self.json_path,
                          lambda f: f.write((json.dumps(doc, indent=2) + "\n").encode()))


def read_rows(path, names):
    """The rows of a sweep's CSV, for ``--resume`` (none when it does not exist); BadInput when
    it is no sweep's output or its parameters are not ``names``."""
    if not os.path.exists(path):
        return []
    try:
        with open(path, newline="") as f:
            reader = csv.DictReader(f)
            rows = list(reader)
            fields = reader.fieldnames or []
    except OSError as e:
        raise BadInput(f"--resume {path}: {e.strerror}", e.errno) from None
    except (UnicodeDecodeError, csv.Error) as e:
        raise BadInput(f"--resume {path}: not CSV ({e})") from None
    want = [*HEAD, *names, *STATUS]
    if fields[:len(want)] != want:
        raise BadInput(f"--resume {path}: its columns begin {','.join(fields[:len(want)])}, "
                       f"not {','.join(want)}: the output of another grid", errno.EINVAL)
    skip = set(names)
    return [{k: v if k in skip else _value(v) for k, v in r.items()} for r in rows]


def _value(text):
    """A CSV cell back as it was written: None, an int, a float or the text."""
    if text == "":
        return None
    for parse in (int, float):
        value = _parsed(parse, text)
        if value is not None:
            return value
    return text


def summary(names, rows):
    """The summary table: per run its parameters, exit code, validation and time figures
    (median [min-max] where the rows have a spread)."""
    head = ["run", *names, "exit", "validation", *(label for _, label, _ in _TIME_ROWS)]
    table = [head]
    for r in sorted(rows, key=lambda r: r["run"]):
        cells = [str(r["run"]), *(str(r[n]) for n in names), _cell(r["exit-code"]),
                 _cell(r["validation"])]
        for f, _, fmt in _TIME_ROWS:
            v, lo, hi = (r.get(f"replay.{f}{s}") for s in ("", ".min", ".max"))
            cells.append("-" if v is None else f"{v:{fmt}}" + (
                f" [{lo:{fmt}}-{hi:{fmt}}]" if lo is not None else ""))
        table.append(cells)
    widths = [max(len(row[i]) for row in table) for i in range(len(head))]
    lines = ["  ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)) for row in table]
    failed = [r for r in rows if r["exit-code"] != 0]
    lines += [f"run {r['run']}: exit {_cell(r['exit-code'])}: {r['error']}"
              for r in sorted(failed, key=lambda r: r["run"]) if r["error"]]
    return "\n".join(lines)


def _cell(v):
    return "-" if v is None else str(v)
