"""``--plot``: one figure of the rows against one parameter, a line for each combination of
the other parameters, with the runs' [min, max] as error bars where the rows have them
(matplotlib, imported only to draw).
"""
from netmem.replay.output import _write_atomic


def _number(text):
    try:
        return float(text)
    except ValueError:
        return None


def series(names, rows, x, y):
    """``{label: [(x value, y, lo, hi)]}``: the rows with figure ``y``, grouped by the values
    of the other parameters that vary (label ``a=1, b=2``; "" when none does)."""
    out = {}
    rows = [r for r in sorted(rows, key=lambda r: r["run"]) if r.get(y) is not None]
    vary = [n for n in names if n != x and len({r[n] for r in rows}) > 1]
    for r in rows:
        label = ", ".join(f"{n}={r[n]}" for n in vary)
        out.setdefault(label, []).append((r[x], r[y], r.get(f"{y}.min"), r.get(f"{y}.max")))
    return out


def write_plot(path, names, rows, x, y):
    """The figure into ``path`` (PNG). Numeric parameter values on a numeric axis, others as
    categories in the grid's order. Returns False when no row has figure ``y``."""
    lines = series(names, rows, x, y)
    if not lines:
        return False
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    xs = list(dict.fromkeys(p[0] for pts in lines.values() for p in pts))
    numeric = all(_number(v) is not None for v in xs)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for label, pts in lines.items():
        at = [_number(p[0]) if numeric else xs.index(p[0]) for p in pts]
        ys = [p[1] for p in pts]
        if all(p[2] is not None for p in pts):
            err = [[v - p[2] for v, p in zip(ys, pts, strict=True)],
                   [p[3] - v for v, p in zip(ys, pts, strict=True)]]
            ax.errorbar(at, ys, yerr=err, marker="o", capsize=3, label=label or None)
        else:
            ax.plot(at, ys, marker="o", label=label or None)
    if not numeric:
        ax.set_xticks(range(len(xs)), xs)
    ax.set_xlabel(x)
    ax.set_ylabel(y)
    ax.set_title(f"netmem-sweep: {y} against {x}", fontsize="medium")
    if any(lines):
        ax.legend(fontsize="small")
    fig.tight_layout()
    try:
        _write_atomic(path, lambda f: fig.savefig(f, format="png"))
    finally:
        plt.close(fig)
    return True
