"""The run: ``run(cfg)`` checks the options, loads the trace, and replays it ``cfg.runs``
times, each on a fresh ``Rig`` (``_run_once()``): ``--warmup`` untimed loops, ``--loops`` timed
ones each on its own clock with the counters read between them, the untimed loop for the outputs,
the checks, the teardown; then the ``Report``. Also the progress bar.
"""
import dataclasses
import sys
import time

import tqdm

from netmem.errors import NetmemError
from netmem.profile import StageProfile
from netmem.replay.app import _App, _stream_files
from netmem.replay.closedloop import run_closed_loop
from netmem.replay.config import BadInput, _binds, _check_config, default_dmabuf_size
from netmem.replay.counters import _counted, _layout, _snapshot
from netmem.replay.plot import _Timeline
from netmem.replay.report import Report, _document, _validation
from netmem.replay.rig import Rig
from netmem.replay.traceout import _TraceOut
from netmem.replay.workload import _choose_mtu, _load_trace


class _Progress:
    """The progress bar on stderr: tqdm's, shown once a run has taken half a second, redrawn at
    most ten times a second; with ``enabled`` false, tqdm's disabled bar (``update()`` returns
    at once). The timed loop only hands it the frames done after each chunk."""

    def __init__(self, total, enabled):
        self.bar = tqdm.tqdm(total=total, disable=not enabled, desc="netmem-replay",
                             unit=" frames", unit_scale=True, mininterval=0.1, delay=0.5,
                             leave=False, file=sys.stderr)

    def update(self, done):
        self.bar.update(done - self.bar.n)

    def close(self):
        self.bar.close()


@dataclasses.dataclass
class _Run:
    """One run, filled in as it goes (so a run cut short by Ctrl-C keeps what it completed):
    the seconds of each timed loop; ``start``, the counters when the first timed loop started,
    and ``end``, ``pools``, the counters and pool state after the last one completed (see
    ``_snapshot()``); ``layout``, its machine (``_layout()``); the streams and timeline of the
    untimed loop (first run only); the verdict of its checks (``checked``: they ran) and what
    its teardown left behind, with the device accesses to memory no DMA mapping covered over
    the whole run (``unmapped``: warm-up and untimed loops too, as leaks)."""

    loop_seconds: list = dataclasses.field(default_factory=list)
    start: dict | None = None
    end: dict | None = None
    pools: dict | None = None
    layout: dict | None = None
    streams: dict | None = None
    timeline: _Timeline | None = None
    trace: dict | None = None
    nfail: int = 0
    failures: list = dataclasses.field(default_factory=list)
    inflight: int = 0
    leaks: list = dataclasses.field(default_factory=list)
    unmapped: int = 0
    interrupted: bool = False
    checked: bool = False
    profile: dict | None = None


def run(cfg):
    """Replay as ``cfg`` says and return the ``Report``. Raises ``BadInput`` for options or
    input it cannot use, before anything is replayed.

    ``cfg.runs`` runs, each on a fresh machine (so the spread of the times covers what differs
    between two invocations: the machine's memory layout, its pools' placement), each
    ``cfg.warmup`` untimed loops then ``cfg.loops`` timed ones. The first run then replays one
    loop more, neither timed nor counted, when ``--dump-streams`` or ``--plot`` needs it. On
    Ctrl-C (KeyboardInterrupt) the report covers the timed loops completed and says it was
    interrupted; with none completed, KeyboardInterrupt goes on (after teardown).
    ``--closed-loop`` runs ``closedloop.run_closed_loop()`` instead."""
    if cfg.closed_loop:
        return run_closed_loop(cfg, _Run())
    cls = _check_config(cfg)
    trace, params, expected = _load_trace(cfg)
    cfg, mtu = _choose_mtu(cfg, trace)
    cfg = dataclasses.replace(cfg, dmabuf_size=cfg.dmabuf_size
                              or default_dmabuf_size(cfg.rx_buf_size))
    pattern = (params.validate if params is not None else cfg.validate) or None
    capture = params is None
    if capture:         # what the capture carries in order: outside every clock
        expected = trace.in_order_bytes(~mtu.too_long)
    observe = _observes(cfg)
    progress = _Progress(len(trace) * (cfg.runs * (cfg.warmup + cfg.loops) + observe),
                         sys.stderr.isatty() if cfg.progress is None else cfg.progress)
    done = 0

    def tick(frames):
        nonlocal done
        done += frames
        progress.update(done)

    runs = []
    try:
        for i in range(cfg.runs):
            runs.append(_Run())
            _run_once(cfg, cls, trace, pattern, expected, capture, runs[-1], tick,
                      first=i == 0)
            if runs[-1].interrupted:
                break
    except KeyboardInterrupt:                   # outside the loops: setup, checks, teardown
        runs[-1].interrupted = True
    finally:
        progress.close()
    if not any(r.loop_seconds for r in runs):   # interrupted before a timed loop completed
        raise KeyboardInterrupt
    counters = _counted(runs)
    validation = _validation(cfg, runs, pattern, expected, capture, counters)
    doc = _document(cfg, trace, params, mtu, runs, counters, validation)
    first = runs[0]
    streams = (_stream_files(trace, first.streams) if cfg.dump_streams is not None and
               first.streams is not None else None)
    return Report(doc, streams, first.timeline, first.trace)


def _observes(cfg):
    """Whether an output needs the untimed loop after the timed ones."""
    return cfg.dump_streams is not None or cfg.plot is not None or cfg.trace_out is not None


def _run_once(cfg, cls, trace, pattern, expected, capture, one, tick, first):
    """One run into ``one``: a fresh machine and provider ``cls`` bound to it, the loops, the
    checks, the teardown. The ``first`` run is the one ``--profile`` profiles and the one that
    replays the untimed loop for the outputs after the timed ones."""
    observe = first and _observes(cfg)
    try:
        rig = Rig(cfg, _binds(cls))
    except NetmemError as e:
        raise BadInput(str(e), e.errno) from None
    tracer = _TraceOut(rig) if first and cfg.trace_out is not None else None
    try:
        try:
            rig.add_vlan_devices(trace.vlan_ids())
        except NetmemError as e:
            raise BadInput(str(e), e.errno) from None
        if tracer is not None:
            tracer.bind(lambda: rig.bind(cls))
        else:
            rig.bind(cls)
        app = _App(rig, pattern, expected, capture)
        one.layout = _layout(rig)
        try:
            profile = (StageProfile(rig.machine, len(trace), cfg.loops)
                       if first and cfg.profile else None)
            _replay(rig, app, trace, one, tick, profile)
            if observe:
                timeline = _Timeline(rig, trace) if cfg.plot is not None else None
                if tracer is not None:
                    tracer.observe()
                _observe(rig, app, trace, tick, timeline)
                one.timeline = timeline
        except KeyboardInterrupt:
            one.interrupted = True
        app.check()
        one.streams = app.streams if app.kept is not None else None
        one.nfail, one.failures, one.checked = app.nfail, app.failures, True
    finally:
        rig.teardown()
    if tracer is not None:
        one.trace = tracer.document(cfg)
    one.inflight = sum(p.inflight for p in rig.machine.page_pools)
    one.leaks = rig.machine.leak_report()
    one.unmapped = rig.machine.iommu.stats["unmapped_accesses"]


def _replay(rig, app, trace, one, tick, profile=None):
    """The loops of one run: ``--warmup`` untimed, then ``--loops`` timed, each under its own
    clock (its chunks, the application's drains, every socket closed at its end). The counters
    are read when the first timed loop starts and after each timed loop ends, outside the
    clocks, so a run cut short counts the loops it completed. A ``StageProfile`` is told where
    each loop starts (it profiles half the timed ones) and where the last ends; its result
    goes to ``one.profile``."""
    cfg = rig.cfg
    for k in range(cfg.warmup):
        if profile is not None:
            profile.loop(k - cfg.warmup)
        _loop(rig, app, trace, tick)
    one.start, _ = _snapshot(rig, app)
    for k in range(cfg.loops):
        if profile is not None:
            profile.loop(k)
        t0 = time.perf_counter()
        _loop(rig, app, trace, tick)
        seconds = time.perf_counter() - t0
        end, pools = _snapshot(rig, app)
        # no call from here to the end of the loop: a Ctrl-C lands before or after all three
        one.end, one.pools, one.loop_seconds = end, pools, [*one.loop_seconds, seconds]
    if profile is not None:
        profile.end()
        one.profile = profile.result()


def _loop(rig, app, trace, tick, timeline=None):
    """The trace once: chunks through the NIC, the application's drain after each (and the
    pools sampled, with a timeline), every socket closed at the end."""
    m, nic, n = rig.machine, rig.nic, len(trace)
    for start in range(0, n, rig.chunk):
        nic.receive(trace, start, rig.chunk)
        with m.on_cpu(rig.app_cpu, softirq=False):
            app.drain()
        done = min(start + rig.chunk, n)
        if timeline is not None:
            timeline.sample(rig, done)
        tick(done - start)
    with m.on_cpu(rig.app_cpu, softirq=False):
        app.end_pass()


def _observe(rig, app, trace, tick, timeline):
    """One loop more after the timed ones, neither timed nor counted, for the outputs: the
    receiver keeps every byte it reads (``--dump-streams``) and ``timeline`` samples the pools
    after each chunk (``--plot``), so no clock covers the copies or the sampling."""
    app.rx.keep = rig.cfg.dump_streams is not None
    _loop(rig, app, trace, tick, timeline)
