"""The report: ``_document()`` puts everything the runs measured into one JSON-able dict in
the netdev family's names (the ``--json`` document, ``schema.REPORT_SCHEMA``): configuration,
environment, trace, time figures, counters, validation verdict, exit code; ``Report`` holds it
and prints it as text (``format_table()``) and writes it and the stream files. A new section is
a key of ``_document()`` (and of ``REPORT_SCHEMA``), a new table row a line of
``Report.format_table()`` (time figures: ``_TIME_ROWS``; page-pool stats: ``_pool_table()``).
"""
import importlib.metadata
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import tempfile

import numpy as np

from netmem.page_pool import STATS_KEYS
from netmem.profile import STAGES
from netmem.replay.config import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK
from netmem.replay.counters import _RECEIVER_COUNTERS, GAUGES, _recycle_split
from netmem.replay.output import _umask, _write_atomic
from netmem.replay.plot import write_closed_loop_plot, write_plot
from netmem.replay.traceout import write_trace
from netmem.replay.workload import _mtu_why

TIME_FIGURES = ("seconds", "mpps", "gbps", "ns-per-frame")
#: How the report prints each time figure: key, label, format.
_TIME_ROWS = (("seconds", "seconds per run", ".4g"), ("mpps", "Mpps", ".3f"),
              ("gbps", "Gbit/s payload", ".2f"), ("ns-per-frame", "ns per frame", ".1f"))


def _figures(frames, payload, seconds):
    """The time figures of ``frames`` frames carrying ``payload`` bytes in ``seconds``."""
    return {"seconds": seconds,
            "mpps": frames / seconds / 1e6 if seconds else 0.0,
            "gbps": payload * 8 / seconds / 1e9 if seconds else 0.0,
            "ns-per-frame": seconds * 1e9 / frames if frames else 0.0}


def _timed(cfg, trace, runs):
    """The ``replay`` section: frames and bytes of every counted timed loop; each run's time
    figures and loop seconds; the median, min and max of each figure over the runs that
    completed their loops (over the one cut short when none did)."""
    n, nbytes = len(trace), int(trace.lengths.sum(dtype=np.uint64))
    samples = []
    for r in runs:
        if not r.loop_seconds:
            continue
        loops = len(r.loop_seconds)
        samples.append({"loops": loops, "frames": n * loops,
                        **_figures(n * loops, trace.payload_bytes * loops, sum(r.loop_seconds)),
                        "loop-seconds": r.loop_seconds})
    loops = sum(s["loops"] for s in samples)
    whole = _spread_of(samples, cfg.loops)
    out = {"frames": n * loops, "bytes": nbytes * loops,
           "payload-bytes": trace.payload_bytes * loops}
    out.update({f: statistics.median(s[f] for s in whole) for f in TIME_FIGURES})
    out["min"] = {f: min(s[f] for s in whole) for f in TIME_FIGURES}
    out["max"] = {f: max(s[f] for s in whole) for f in TIME_FIGURES}
    out["runs"] = samples
    return out


def _spread_of(samples, loops):
    """The runs the time figures' median and spread are over: those that completed their
    ``loops`` (the one cut short, when none did)."""
    return [s for s in samples if s["loops"] == loops] or samples


def peak_rss():
    """This process's peak resident memory in bytes: ``VmHWM`` of ``/proc/self/status``, the
    peak of its own address space. ``ru_maxrss`` (the fallback where there is no ``/proc``)
    keeps the peak of the process it was forked from across ``exec``: run from a Python
    process holding 1.5 GB (``subprocess``), a default replay reported 1526 MiB, not its 95."""
    try:
        with open("/proc/self/status") as f:
            status = dict(line.split(":", 1) for line in f if ":" in line)
        return int(status["VmHWM"].split()[0]) * 1024
    except (OSError, KeyError, ValueError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _document(cfg, trace, params, mtu, runs, counters, validation):
    """Everything the runs measured, as one JSON-able dict in the netdev family's names. Every
    counter is the timed loops' own (``counters``, see ``_counted()``); pool attributes
    (``GAUGES``) are the last counted loop's state."""
    counted = [r for r in runs if r.loop_seconds]
    last = counted[-1]
    layout = last.layout
    queues = []
    totals = dict.fromkeys(("cache", "ring", "released"), 0)
    for q in layout["queues"]:
        entry = {"id": q["id"], "napi-id": q["napi-id"], "bound": q["bound"],
                 "qstats": counters["qstats"][q["id"]]}
        for role, pid in q["pools"].items():
            entry[role] = {**last.pools[pid], "info": {"id": pid, "ifindex": layout["ifindex"]},
                           **{k.replace("_", "-"): v
                              for k, v in counters["page-pool"][pid].items()}}
        split = dict(zip(totals, _recycle_split(counters["page-pool"][q["pools"]["page-pool"]]),
                         strict=True))
        entry["recycle"] = split
        for k, v in split.items():
            totals[k] += v
        queues.append(entry)
    qstats = {"ifindex": layout["ifindex"], **counters["qstats-device"]}
    inflight = sum(r.inflight for r in runs)
    leaks = [leak for r in runs for leak in r.leaks]
    # Model-only: the bytes landed and validate, but a provider that DMAs into nothing fails.
    unmapped = sum(r.unmapped for r in runs)
    interrupted = any(r.interrupted for r in runs)
    return {
        "tool": "netmem-replay",
        "config": {
            "provider": cfg.provider_name, "provider-args": dict(cfg.provider_args),
            "queues": cfg.queues, "bind-queues": layout["bind"],
            "header-split": layout["header-split"], "mtu": cfg.mtu, "mtu-from": mtu.source,
            "iommu": cfg.iommu, "app-cpu": cfg.app_cpu, "pool-size": cfg.pool_size,
            "dmabuf-size": layout["memory"],
            "dmabuf-layout": cfg.dmabuf_layout if layout["binds"] else None,
            "rx-buf-size": cfg.rx_buf_size,
            "loops": cfg.loops, "warmup": cfg.warmup, "runs": cfg.runs, "chunk": layout["chunk"],
            "seed": cfg.seed, "pcap": cfg.pcap,
            "workload": params.key() if params is not None else None,
        },
        "environment": _environment(),
        "trace": _trace_doc(trace, mtu),
        "replay": _timed(cfg, trace, runs),
        "counters": {"scope": "timed-loops", "runs": len(counted),
                     "loops": sum(len(r.loop_seconds) for r in counted), "gauges": list(GAUGES)},
        "drops": {
            "skb-drop-reasons": {k: v for k, v in counters["skb-drop-reasons"].items() if v},
            "device": {k.replace("_", "-"): v for k, v in counters["device"].items() if v},
            "queues": {k: qstats[k] for k in ("rx-alloc-fail", "rx-hw-drops",
                                              "rx-hw-drop-overruns") if qstats[k]},
        },
        "qstats": qstats,
        "queues": queues,
        "recycle": totals,
        "tcp-mib": {k: v for k, v in counters["tcp-mib"].items() if v},
        "iommu": {"mode": cfg.iommu, "faults": counters["iommu-faults"],
                  "unmapped-accesses": unmapped, "stats": counters["iommu"]},
        "devmem": ({k: counters["receiver"][k] for k in _RECEIVER_COUNTERS}
                   if layout["binds"] else None),
        "validation": validation,
        "profile": runs[0].profile,
        "warnings": [w for w in (mtu.warning(),) if w],
        "max-rss": peak_rss(),
        "inflight-after-teardown": inflight,
        "leaks": leaks,
        "interrupted": interrupted,
        "exit-code": (EXIT_INTERRUPTED if interrupted else
                      EXIT_FAILED if validation["result"] == "failed" or inflight or leaks
                      or unmapped else EXIT_OK),
    }


def _trace_doc(trace, mtu):
    """The report's ``trace``: its frames (those the NIC drops for the MTU included: they are
    replayed), bytes and TCP payload, the largest frame at L3, and the frames skipped by
    reason: the classifier's (``PacketTrace.skipped``, not replayed) and ``too_long``, the
    frames longer than the MTU at L3, which the NIC drops as ``rx_length_errors`` (counted
    from the trace before the replay; once per loop in ``drops``); ``streamed``: the frames
    were read from the capture file as the replay went (``PacketTrace.streamed``), all but the
    first ``keep`` bytes again in each loop (None: read whole)."""
    return {"frames": len(trace), "bytes": int(trace.lengths.sum(dtype=np.uint64)),
            "payload-bytes": trace.payload_bytes, "largest-l3-length": mtu.largest,
            "skipped": {**trace.skipped, "too_long": int(mtu.too_long.sum())},
            "streamed": trace.streamed, "keep": trace.keep}


def _streamed(tr):
    """How the text report's trace line says the capture was read."""
    if not tr["streamed"]:
        return ""
    return (", streamed from the file" +
            (f" (its first {tr['keep']} bytes kept resident)" if tr["keep"] else ""))


def _validation(cfg, runs, pattern, expected, capture, counters):
    """The verdict over every loop of every run (warm-up and untimed ones too): failed (the
    first failures); skipped when a run was interrupted before its checks, or when there was
    nothing to read (no TCP payload reaches a socket in order: 0 bytes read is never ok); else
    ok: every stream's bytes read, as many as the trace carries in order (``expected``: all of
    the built-in workload's, with their ends; with ``capture``, a capture's up to each
    stream's first hole), and each equal to the ncdevmem pattern if there is one. ``bytes``
    and ``resets`` count the timed loops, as every counter does."""
    nbytes, resets = counters["receiver"]["bytes"], counters["resets"]
    nfail = sum(r.nfail for r in runs)
    failures = [f"run {i + 1}: {f}" if cfg.runs > 1 else f
                for i, r in enumerate(runs) for f in r.failures][:10]
    unchecked = [str(i + 1) for i, r in enumerate(runs) if r.loop_seconds and not r.checked]
    if nfail:
        result = "failed"
        detail = "; ".join(failures) + (f"; and {nfail - len(failures)} more"
                                        if nfail > len(failures) else "")
    elif unchecked:
        result = "skipped"
        detail = (f"skipped: interrupted before the checks of run {', '.join(unchecked)}: its "
                  "loops were not checked")
    elif not nbytes:
        result = "skipped"
        detail = ("skipped: nothing to read (no TCP payload of the trace reaches a socket in "
                  "order)")
    else:
        result = "ok"
        what = ["every stream complete" if not capture else
                f"every stream as the capture carries it in order "
                f"({sum(1 for v in expected.values() if v)} direction(s) with data, each "
                "up to its first hole)"]
        if pattern:
            what.append(f"the ncdevmem -v {pattern} pattern")
        detail = (f"ok: {nbytes} bytes read in the timed loops; {' and '.join(what)} in every "
                  "loop")
    return {"result": result, "detail": detail, "pattern": pattern,
            "bytes": nbytes, "resets": resets}


def _environment():
    """What the times were measured with: they time this model on this CPU, not a kernel."""
    try:
        version = importlib.metadata.version("netmem")
    except importlib.metadata.PackageNotFoundError:       # run from a tree never installed
        version = None
    return {"netmem": version, **_git(), "cpu-model": _cpu_model(),
            "cpus": sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
            else None,
            "python": platform.python_version(), "numpy": np.__version__}


def _git():
    """``git-commit``: HEAD of the source tree when netmem runs from a git checkout, and
    ``git-dirty``: whether tracked files differ from it; both None when it is no checkout or
    git is missing or fails."""
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    unknown = {"git-commit": None, "git-dirty": None}
    if not os.path.exists(os.path.join(root, ".git")):      # a directory, or a worktree's file
        return unknown
    git = ["git", "--no-optional-locks", "-C", root]
    try:
        head = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True,
                              check=True, timeout=10).stdout.strip()
        status = subprocess.run([*git, "status", "--porcelain", "--untracked-files=no"],
                                capture_output=True, text=True, check=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return unknown
    return {"git-commit": head, "git-dirty": bool(status)}


def _cpu_model():
    """/proc/cpuinfo's first ``model name``; None where there is none."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() == "model name":
                    return value.strip()
    except OSError:
        pass
    return None


def _report_counters(doc):
    """Every count of a report by its place in the document (``queues[0].page-pool.alloc-fast``):
    not the gauges, identities or settings; ``drops.queues`` is left out (qstats has it)."""
    out = {}

    def put(prefix, counts):
        out.update((f"{prefix}.{k}", v) for k, v in counts.items())

    put("qstats", {k: v for k, v in doc["qstats"].items() if k != "ifindex"})
    for q in doc["queues"]:
        put(f"queues[{q['id']}].qstats", q["qstats"])
        for role in ("page-pool", "header-page-pool"):
            if role in q:
                put(f"queues[{q['id']}].{role}", {k: q[role][k] for k in _POOL_STATS})
        put(f"queues[{q['id']}].recycle", q["recycle"])
    put("recycle", doc["recycle"])
    put("drops.skb-drop-reasons", doc["drops"]["skb-drop-reasons"])
    put("drops.device", doc["drops"]["device"])
    put("tcp-mib", doc["tcp-mib"])
    out["iommu.faults"] = doc["iommu"]["faults"]
    put("iommu.stats", doc["iommu"]["stats"])
    put("devmem", doc["devmem"] or {})
    put("validation", {k: doc["validation"][k] for k in ("bytes", "resets")})
    return out


#: page-pool-stats-get's names of ``STATS_KEYS``.
_POOL_STATS = [k.replace("_", "-") for k in STATS_KEYS]


class Report:
    """What ``run()`` measured: ``doc`` (the ``--json`` document), ``streams`` (file name ->
    bytes, with ``--dump-streams``), ``timeline`` (with ``--plot``); ``exit_code``; the
    writers of each output, all through a temporary file renamed at the end."""

    def __init__(self, doc, streams=None, timeline=None, trace=None):
        self.doc = doc
        self.streams = streams
        self.timeline = timeline
        self.trace = trace

    @property
    def exit_code(self):
        return self.doc["exit-code"]

    def write_json(self, path):
        _write_atomic(path, lambda f: f.write((json.dumps(self.doc, indent=2) + "\n").encode()))

    def write_streams(self, directory):
        """The stream files into ``directory`` (made if missing): written into a new
        directory beside it, which is renamed to ``directory`` or whose files are moved in."""
        parent = os.path.dirname(os.path.abspath(directory))
        tmp = tempfile.mkdtemp(prefix=".netmem-replay-", dir=parent)
        os.chmod(tmp, 0o777 & ~_umask())
        try:
            for name, data in self.streams.items():
                with open(os.path.join(tmp, name), "wb") as f:
                    f.write(data)
            if not os.path.exists(directory):
                os.rename(tmp, directory)
                return
            for name in self.streams:
                os.replace(os.path.join(tmp, name), os.path.join(directory, name))
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def write_plot(self, path):
        """``--plot``: the figure of the timeline (``plot.write_plot()``), the configuration in
        its title."""
        if "closed-loop" in self.doc:
            write_closed_loop_plot(path, self.timeline, self.doc)
        else:
            write_plot(path, self.timeline, self.doc["config"])

    def write_trace(self, path):
        """``--trace-out``: the Chrome trace-event document (``traceout._TraceOut``)."""
        write_trace(path, self.trace)

    def format_table(self):
        """The report as text, the form ``netmem-replay`` prints."""
        d = self.doc
        c, tr = d["config"], d["trace"]
        lines = []
        if d["interrupted"]:
            lines.append(f"INTERRUPTED (Ctrl-C): the report covers the {d['counters']['loops']} "
                         f"timed loop(s) completed, of {c['runs'] * c['loops']}")
        bound = f", bound {','.join(map(str, c['bind-queues']))}" if c["bind-queues"] else ""
        lines.append(f"netmem-replay: {c['provider']} provider, eth1 with {c['queues']} "
                     f"queue(s){bound}, header split {'on' if c['header-split'] else 'off'}, "
                     f"MTU {c['mtu']} ({_mtu_why(c['mtu-from'], tr['largest-l3-length'])}), "
                     f"iommu {c['iommu']}, application on "
                     f"{'the NAPI CPU' if c['app-cpu'] == 'same' else 'another CPU'}")
        cl = d.get("closed-loop")
        src = ("closed-loop senders" if cl is not None else
               c["pcap"] or _describe_workload(c["workload"]))
        lines.append(f"trace: {src}: {tr['frames']} frames, {tr['bytes']} bytes, TCP payload "
                     f"{tr['payload-bytes']} bytes"
                     f"{_streamed(tr)}")
        skipped = {k: v for k, v in tr["skipped"].items() if v}
        lines.append("frames skipped: " + (", ".join(f"{v} {k}" for k, v in skipped.items())
                                           if skipped else "none"))
        lines += [f"warning: {w}" for w in d["warnings"]]
        if cl is not None:
            lines += _closed_loop_lines(cl)
        lines.append("")
        lines += self._timed_table()
        lines.append("")
        drops = [(k, v) for group in d["drops"].values() for k, v in group.items()]
        lines.append("drops (skb drop reasons, device, qstats):" + ("" if drops else " none"))
        lines += [f"  {k:<28}{v:>16}" for k, v in drops]
        lines.append("")
        lines += self._pool_table()
        t = d["recycle"]
        total = sum(t.values()) or 1
        lines.append("recycle path: " + ", ".join(f"{k} {v} ({100 * v / total:.1f}%)"
                                                  for k, v in t.items()))
        lines.append(f"inflight after teardown: {d['inflight-after-teardown']}"
                     + ("" if not d["leaks"] else "; leaks: " + "; ".join(d["leaks"])))
        lines.append(f"DMA into unmapped memory: {d['iommu']['unmapped-accesses']}")
        lines.append(f"IOMMU faults: {d['iommu']['faults']}")
        if d["devmem"] is not None:
            lines.append("devmem: " + ", ".join(f"{k} {v}" for k, v in d["devmem"].items()))
        lines.append(f"validation: {d['validation']['detail']}")
        if d["profile"] is not None:
            lines += _profile_table(d["profile"])
        return "\n".join(lines)

    def _timed_table(self):
        d = self.doc
        c, r, e = d["config"], d["replay"], d["environment"]
        git = (f", git {e['git-commit'][:12]}{' (modified)' if e['git-dirty'] else ''}"
               if e["git-commit"] else "")
        cpus = ",".join(map(str, e["cpus"])) if e["cpus"] is not None else "?"
        out = [(f"timed: {c['runs']} run(s), each on a fresh machine: {c['warmup']} warm-up "
                f"loop(s), untimed, then {c['loops']} timed"),
               (f"measured: netmem {e['netmem']}{git}, Python {e['python']}, numpy "
                f"{e['numpy']}, {e['cpu-model'] or 'CPU model unknown'}, CPU(s) {cpus}: the "
                "times are this model's on this CPU, not a kernel's"), ""]
        out += [f"  {k:<28}{v:>16}" for k, v in (
            ("frames (timed loops)", r["frames"]), ("bytes", r["bytes"]),
            ("payload bytes", r["payload-bytes"]))]
        whole = len(_spread_of(r["runs"], c["loops"]))
        out.append(f"  {'':<28}{'median':>16}  [min-max] of {whole} run(s)")
        for f, label, fmt in _TIME_ROWS:
            lo, hi = r["min"][f], r["max"][f]
            out.append(f"  {label:<28}{r[f]:>16{fmt}}  [{lo:{fmt}}-{hi:{fmt}}]")
        out += ["", (f"counters: the timed loops' own ({d['counters']['loops']} loop(s), "
                     "warm-up and untimed loops not counted); inflight, inflight-mem: at the "
                     "end of the last")]
        return out

    def _pool_table(self):
        queues = self.doc["queues"]
        names = {"page-pool": "pool", "header-page-pool": "hdr"}
        cols = [(f"q{q['id']} {names[role]} {q[role]['id']}", q[role]) for q in queues
                for role in names if role in q]
        keys = [k for k, v in cols[0][1].items() if isinstance(v, int) and
                k not in ("id", "ifindex", "napi-id", "detach-time")]
        w = max(14, *(len(h) + 2 for h, _ in cols))
        out = ["page pools (page-pool-get, page-pool-stats-get):",
               f"  {'':<26}" + "".join(f"{h:>{w}}" for h, _ in cols)]
        out += [f"  {k:<26}" + "".join(f"{p.get(k, ''):>{w}}" for _, p in cols) for k in keys]
        return out


def _profile_table(p):
    """``--profile``: where the time goes, ns per frame by stage, and the latency."""
    total = p["total-ns-per-frame"] or 1.0
    out = ["", "where the time goes (--profile: ns per frame of the profiled loops):",
           f"  {'stage':<34}{'ns/frame':>10}{'share':>9}"]
    rows = [(STAGES[k], v) for k, v in p["stages"].items()]
    rows += [("other (Python loop, profiler)", p["other"]),
             ("total (profiled loops)", p["total-ns-per-frame"])]
    out += [f"  {name:<34}{v:>10.1f}{100 * v / total:>8.1f}%" for name, v in rows]
    unprof = p["unprofiled-ns-per-frame"]
    out.append(f"  {'unprofiled loops':<34}" + (f"{unprof:>10.1f}{100 * unprof / total:>8.1f}%"
                                                 if unprof is not None else f"{'-':>10}"))
    out.append(f"  ({p['sampled-frames']} frames in sampled NAPI polls; one stage boundary "
               f"{p['boundary-ns']:.1f} ns, taken off each interval)")
    lat = p["latency-ns"]
    out.append("latency, DMA write to recvmsg() (virtual ns, per skb read): " +
               (", ".join(f"{k} {v}" for k, v in lat.items()) if lat else "no skb read"))
    return out


def _describe_workload(w):
    family = {"ipv4": "IPv4", "ipv6": "IPv6", "both": "IPv4 and IPv6"}[w["family"]]
    return (f"built-in workload, {w['connections']} connection(s) ({family}), "
            f"{w['payload']} bytes each, loss {w['loss']}, reorder {w['reorder']}, duplicate "
            f"{w['duplicate']}, overlap {w['overlap']}"
            + (f", ncdevmem -v {w['validate']}" if w["validate"] else "")
            + f", seed {w['seed']}")


def _closed_loop_lines(c):
    """The text report's lines of the ``closed-loop`` section."""
    link = (f"{c['link-gbps']:g} Gbit/s, RTT {c['rtt'] * 1e6:g} us, loss {c['loss']:g}, "
            f"{c['cc']}" + (f", tokens held {c['hold-tokens'] * 1e3:g} ms"
                           if c["hold-tokens"] else ""))
    f = c["frames"]
    out = [f"closed loop: {c['connections']} connection(s) x {c['payload']} bytes over {link}",
           (f"  {'completed' if c['completed'] else 'NOT completed'} in "
            f"{c['virtual-seconds'] * 1e3:.3f} ms of virtual time: goodput "
            f"{c['goodput-gbps']:.3f} Gbit/s"),
           (f"  frames sent {f['sent']}, received by the NIC {f['received']}, ACKs sent "
            f"{f['acks-sent']}, taken {f['acks-received']}"),
           (f"  retransmits {c['retransmits']}, RTOs {c['rtos']}, loss probes "
            f"{c['loss-probes']}; link drops: forward {c['links']['forward']['dropped_queue']} "
            f"queue + {c['links']['forward']['dropped_loss']} loss, reverse "
            f"{c['links']['reverse']['dropped_queue']} + {c['links']['reverse']['dropped_loss']}"),
           "  senders: " + ", ".join(f"{k} {v}" for k, v in c["sender-mib"].items() if v)]
    h = c["receiver-held"]
    if h["rmem-alloc"]:
        out.append(f"  at the end the receiving sockets held {h['rmem-alloc']} bytes of truesize,"
                   f" {h['ofo-skbs']} out-of-order skb(s) in {h['ofo-sockets']} socket(s)")
    return out
