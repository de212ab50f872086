"""``--compare``: ``--json`` reports read back, checked against ``REPORT_SCHEMA``, and put
side by side (``Comparison``), as text or as CSV rows (``--csv``).
"""
import csv
import errno
import io
import json

from netmem.replay.config import BadInput
from netmem.replay.output import _write_atomic
from netmem.replay.report import _TIME_ROWS, _report_counters, _spread_of
from netmem.replay.schema import REPORT_SCHEMA


def _load_report(path):
    """The ``--json`` report at ``path``, checked against ``REPORT_SCHEMA`` (BadInput naming
    the file and the check that failed)."""
    try:
        import jsonschema
    except ImportError:
        raise BadInput("--compare needs jsonschema to check the reports (pip install "
                       "'netmem[compare]')", errno.ENOENT) from None
    try:
        with open(path, "rb") as f:
            doc = json.load(f)
    except OSError as e:
        raise BadInput(f"--compare {path}: {e.strerror}", e.errno) from None
    except ValueError as e:                 # not JSON, or not UTF-8
        raise BadInput(f"--compare {path}: not JSON ({e})") from None
    error = jsonschema.exceptions.best_match(
        jsonschema.Draft202012Validator(REPORT_SCHEMA).iter_errors(doc))
    if error is not None:
        where = "/".join(map(str, error.absolute_path)) or "the top level"
        msg = " ".join(error.message.split())
        raise BadInput(f"--compare {path}: not a netmem-replay report (REPORT_SCHEMA, at "
                       f"{where}: {msg[:120]}{'...' if len(msg) > 120 else ''})")
    return doc


def _change(value, base):
    """``delta`` and ``delta-percent`` of ``value`` from ``base`` (None where undefined)."""
    if value is None or base is None:
        return {"delta": None, "delta-percent": None}
    return {"delta": value - base, "delta-percent": 100 * (value - base) / base if base else None}


def _beyond(doc, base, f):
    """Whether figure ``f`` of ``doc`` and ``base`` differ by more than their spread (the
    [min, max] ranges do not overlap); None when either has fewer than two runs."""
    if min(len(_spread_of(d["replay"]["runs"], d["config"]["loops"])) for d in (doc, base)) < 2:
        return None
    a, b = doc["replay"], base["replay"]
    return a["max"][f] < b["min"][f] or a["min"][f] > b["max"][f]


def _describe_report(doc):
    c, e = doc["config"], doc["environment"]
    w, cl = c["workload"], doc.get("closed-loop")
    src = (f"closed loop {cl['connections']} x {cl['payload']} bytes, {cl['cc']}, seed "
           f"{c['seed']}" if cl is not None else c["pcap"] or
           f"workload {w['connections']} x {w['payload']} bytes, seed {w['seed']}")
    git = f" git {e['git-commit'][:12]}{'+' if e['git-dirty'] else ''}" if e["git-commit"] else ""
    return (f"{c['provider']}, {c['queues']} queue(s), header split "
            f"{'on' if c['header-split'] else 'off'}, MTU {c['mtu']}, iommu {c['iommu']}, "
            f"app-cpu {c['app-cpu']}; {src}; {len(doc['replay']['runs'])} run(s) of "
            f"{c['loops']} loop(s) after {c['warmup']} warm-up; netmem {e['netmem']}{git}, "
            f"{e['cpu-model'] or 'CPU model unknown'}"
            + ("; INTERRUPTED" if doc["interrupted"] else ""))


def _columns(rows):
    """Rows of cells as aligned lines: the first column to the left, the others right."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return ["  " + "  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                             for i, (c, w) in enumerate(zip(r, widths, strict=True))).rstrip()
            for r in rows]


class Comparison:
    """``--json`` reports side by side, the first the baseline. ``rows``: one per figure and
    report (``figure``, ``unit``, ``file``, ``value``, ``min``, ``max``, ``delta``,
    ``delta-percent``, ``beyond-spread``): each time figure as its median with min and max over
    the report's runs, beyond the spread when its range and the baseline's do not overlap
    (None with fewer than two runs: no spread); each counter per 1,000 frames of the timed
    loops (counters zero in every report left out)."""

    CSV_FIELDS = ("figure", "unit", "file", "value", "min", "max", "delta", "delta-percent",
                  "beyond-spread")

    def __init__(self, paths, docs):
        self.paths = list(paths)
        self.docs = docs
        self.rows = self._time_rows() + self._counter_rows()

    def _time_rows(self):
        base = self.docs[0]
        rows = []
        for f, label, _ in _TIME_ROWS:
            for i, (path, doc) in enumerate(zip(self.paths, self.docs, strict=True)):
                r = doc["replay"]
                rows.append({"figure": f"replay.{f}", "unit": label, "file": path,
                             "value": r[f], "min": r["min"][f], "max": r["max"][f],
                             **_change(r[f] if i else None, base["replay"][f]),
                             "beyond-spread": _beyond(doc, base, f) if i else None})
        return rows

    def _counter_rows(self):
        flat = [_report_counters(d) for d in self.docs]
        frames = [d["replay"]["frames"] for d in self.docs]
        rows = []
        for name in dict.fromkeys(k for f in flat for k in f):
            if not any(f.get(name) for f in flat):
                continue
            values = [f.get(name, 0) * 1000 / n if n else None
                      for f, n in zip(flat, frames, strict=True)]
            rows += [{"figure": name, "unit": "per 1000 frames", "file": path, "value": v,
                      "min": None, "max": None, **_change(v if i else None, values[0]),
                      "beyond-spread": None}
                     for i, (path, v) in enumerate(zip(self.paths, values, strict=True))]
        return rows

    def format_table(self):
        """The comparison as text, the form ``netmem-replay --compare`` prints."""
        names = [chr(ord("A") + i) if i < 26 else f"R{i}" for i in range(len(self.docs))]
        lines = [f"netmem-replay --compare: {len(self.docs)} reports, {names[0]} the baseline"]
        lines += [f"  {n}  {p}: {_describe_report(d)}"
                  for n, p, d in zip(names, self.paths, self.docs, strict=True)]
        head = ["", names[0]] + [c for n in names[1:] for c in (n, f"{n} vs {names[0]}")]
        k = len(self.docs)
        lines += ["", ("time figures: median [min-max] over each report's runs; beyond: the "
                       "ranges do not overlap (within: they do)")]
        time = [self.rows[i:i + k] for i in range(0, len(_TIME_ROWS) * k, k)]
        fmts = [fmt for _, _, fmt in _TIME_ROWS]
        lines += _columns([head] + [_cells(group, _time_cell(fmt), _time_change)
                                    for group, fmt in zip(time, fmts, strict=True)])
        lines += ["", ("counters per 1,000 frames of the timed loops (zero in every report: "
                       "left out):")]
        rest = self.rows[len(_TIME_ROWS) * k:]
        lines += _columns([head] + [_cells(rest[i:i + k], _count_cell, _count_change)
                                    for i in range(0, len(rest), k)])
        return "\n".join(lines)

    def write_csv(self, path):
        """The rows as CSV, one line per figure and report (empty fields for None)."""
        out = io.StringIO()
        w = csv.DictWriter(out, self.CSV_FIELDS, lineterminator="\n")
        w.writeheader()
        for row in self.rows:
            b = row["beyond-spread"]
            w.writerow({**{k: "" if v is None else v for k, v in row.items()},
                        "beyond-spread": "" if b is None else ("yes" if b else "no")})
        _write_atomic(path, lambda f: f.write(out.getvalue().encode()))


def _cells(group, cell, change):
    """One figure's text cells: its label, the baseline's value, then each other report's
    value and its change from the baseline."""
    out = [group[0]["figure"] if group[0]["unit"] == "per 1000 frames" else group[0]["unit"],
           cell(group[0])]
    for row in group[1:]:
        out += [cell(row), change(row)]
    return out


def _time_cell(fmt):
    return lambda r: f"{r['value']:{fmt}} [{r['min']:{fmt}}-{r['max']:{fmt}}]"


def _time_change(r):
    pct = "n/a" if r["delta-percent"] is None else f"{r['delta-percent']:+.1f}%"
    spread = {None: "(1 run: no spread)", True: "beyond", False: "within"}
    return f"{pct} {spread[r['beyond-spread']]}"


def _count_cell(r):
    return "-" if r["value"] is None else f"{r['value']:.2f}"


def _count_change(r):
    if r["delta"] is None:
        return "-"
    if not r["delta"]:
        return "="
    if r["delta-percent"] is None:
        return f"{r['delta']:+.2f} (new)"
    return f"{r['delta']:+.2f} ({r['delta-percent']:+.1f}%)"
