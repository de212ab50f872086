"""``--closed-loop``: instead of a trace, ``--connections`` TCP senders in C of ``--payload``
bytes each (``netmem.closed_loop``) over a link of ``--link-gbps``, ``--rtt`` and ``--loss``
into the run's NIC, with the provider bound as for a replay; the application (the same
``_App``) reads and checks every byte, holding devmem tokens ``--hold-tokens`` before giving
them back. One run of one timed loop: the wall clock covers the simulation (senders, links,
NIC, stack, application), the counters are read before and after it; the report is the
replay's document (the ``trace`` section describes the frames the senders sent, ``replay``'s
frames count sent + received + ACKed frames) with a ``closed-loop`` section: goodput in
virtual time, frames, retransmits, RTOs, loss probes, the senders' MIB, the links.
"""
import dataclasses
import time

import numpy as np

from netmem.closed_loop import ClosedLoop
from netmem.errors import NetmemError
from netmem.replay.app import _App
from netmem.replay.config import (
    CLOSED_LOOP_DEFAULTS,
    DEFAULT_CHUNK,
    ETH_DATA_LEN,
    BadInput,
    _binds,
    _check_config,
    default_dmabuf_size,
)
from netmem.replay.counters import _counted, _layout, _snapshot
from netmem.replay.report import Report, _document, _validation
from netmem.replay.rig import Rig
from netmem.replay.workload import _Mtu
from netmem.tcp import KERNEL_TCP_RMEM

#: The plot's first sampling interval in virtual time (doubled each time 4096 samples fill).
_SAMPLE_S = 100e-6
#: Virtual time after which an unfinished closed loop is given up (validation fails).
_LIMIT_S = 600.0


class _SentTrace:
    """What the report's ``trace`` section reads, for the frames the senders sent: their
    number, their bytes on the forward link and the payload (model-only: no trace exists)."""

    def __init__(self, loop):
        self._frames = loop.frames["sent"]
        self.lengths = np.array([loop.links["forward"]["bytes"]], np.uint64)
        self.payload_bytes = loop.payload * loop.connections
        self.skipped, self.streamed, self.keep = {}, False, None

    def __len__(self):
        return self._frames


def run_closed_loop(cfg, run):
    """One closed-loop run into ``run`` (a ``runner._Run``), and its ``Report``."""
    cls = _check_config(cfg)
    mtu_from = "option" if cfg.mtu is not None else "workload"
    fill = {k: v for k, v in CLOSED_LOOP_DEFAULTS.items() if getattr(cfg, k) is None}
    cfg = dataclasses.replace(cfg, **fill, mtu=cfg.mtu or ETH_DATA_LEN,
                              chunk=cfg.chunk or DEFAULT_CHUNK,
                              dmabuf_size=cfg.dmabuf_size or default_dmabuf_size(cfg.rx_buf_size))
    try:
        rig = Rig(cfg, _binds(cls))
    except NetmemError as e:
        raise BadInput(str(e), e.errno) from None
    try:
        rig.machine.tcp.rmem = KERNEL_TCP_RMEM     # a closed loop sees the window: autotune
        rig.bind(cls)
        if cfg.hold_tokens and (rig.binding.memory_map is None or rig.binding.zcrx):
            raise BadInput(f"--hold-tokens: the {cfg.provider_name} provider has no devmem "
                           "tokens to hold")
        app = _App(rig, cfg.validate, None)
        run.layout = _layout(rig)
        loop = ClosedLoop(rig.machine, rig.nic, app.rx, connections=cfg.connections,
                          payload=cfg.payload, cc=cfg.cc, link_gbps=cfg.link_gbps, rtt=cfg.rtt,
                          loss=cfg.loss, seed=cfg.seed, validate=cfg.validate,
                          app_cpu=rig.app_cpu, hold=cfg.hold_tokens,
                          sample=_SAMPLE_S if cfg.plot is not None else 0.0, limit=_LIMIT_S)
        run.start, _ = _snapshot(rig, app)
        t0 = time.perf_counter()
        done = loop.run()
        seconds = time.perf_counter() - t0
        held = _receiver_held(rig.machine)
        run.end, run.pools = _snapshot(rig, app)
        run.loop_seconds = [seconds]
        with rig.machine.on_cpu(rig.app_cpu, softirq=False):
            app.end_pass()
        _check_streams(app, loop, done)
        app.check()
        run.nfail, run.failures, run.checked = app.nfail, app.failures, True
    finally:
        rig.teardown()
    run.inflight = sum(p.inflight for p in rig.machine.page_pools)
    run.leaks = rig.machine.leak_report()
    run.unmapped = rig.machine.iommu.stats["unmapped_accesses"]
    counters = _counted([run])
    validation = _validation(cfg, [run], cfg.validate, None, False, counters)
    mtu = _Mtu(cfg.mtu, mtu_from, cfg.mtu, np.zeros(0, bool))
    doc = _document(cfg, _SentTrace(loop), None, mtu, [run], counters, validation)
    # replay's frames: every frame the loop moved (sent, received by the NIC, ACKs taken)
    f = loop.frames
    moved = f["sent"] + f["received"] + f["acks-received"]
    doc["replay"]["frames"] = moved
    for d in (doc["replay"], doc["replay"]["min"], doc["replay"]["max"],
              *doc["replay"]["runs"]):
        d["mpps"] = moved / seconds / 1e6 if seconds else 0.0
        d["ns-per-frame"] = seconds * 1e9 / moved if moved else 0.0
    doc["replay"]["runs"][0]["frames"] = moved
    doc["closed-loop"] = _section(cfg, loop, done, held)
    return Report(doc, timeline=loop.samples() if cfg.plot is not None else None)


def _check_streams(app, loop, done):
    """Every connection's stream read whole, to its end, on one socket each."""
    cols = app.passes[-1]
    if not done:
        app.fail(f"the transfers did not complete in {_LIMIT_S:.0f} s of virtual time")
    n = int((cols["pos"] == loop.payload).sum())
    if len(cols["pos"]) != loop.connections or n != loop.connections or not cols["eof"].all():
        app.fail(f"{n} of {loop.connections} stream(s) read whole to their end "
                 f"({len(cols['pos'])} socket(s))")


def _receiver_held(machine):
    """What the receiving sockets hold when the loop ends, before the application's last
    reads and the close: the sockets with out-of-order data, their skbs, and the truesize
    charged to every socket (``sk_rmem_alloc``). A run that stalled shows here where its
    buffers went."""
    info = [sk.info() for sk in machine.tcp.sockets()]
    return {"ofo-sockets": sum(1 for i in info if i["ofo_skbs"]),
            "ofo-skbs": sum(i["ofo_skbs"] for i in info),
            "rmem-alloc": sum(i["rmem_alloc"] for i in info)}


def _section(cfg, loop, done, held):
    """The report's ``closed-loop`` section."""
    mib = loop.mib
    s = loop.senders()
    return {
        "connections": cfg.connections, "payload": cfg.payload, "link-gbps": cfg.link_gbps,
        "rtt": cfg.rtt, "loss": cfg.loss, "cc": cfg.cc, "hold-tokens": cfg.hold_tokens,
        "completed": bool(done), "virtual-seconds": loop.elapsed,
        "goodput-gbps": loop.goodput / 1e9 if done else 0.0,
        "frames": loop.frames,
        "retransmits": mib["RetransSegs"],
        "rtos": mib["TCPTimeouts"],                  # 7.x: every RTO, SYN's too
        "loss-probes": mib["TCPLossProbes"],
        "sender-mib": mib,
        "links": loop.links,
        "cwnd": {"min": int(s["snd_cwnd"].min()), "max": int(s["snd_cwnd"].max())},
        "srtt-us": {"min": int(s["srtt_us"].min()), "max": int(s["srtt_us"].max())},
        "receiver-held": held,
    }
