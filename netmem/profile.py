"""Where the time goes: ns per frame by stage of the receive path, for ``netmem-replay --profile``.

The counting is in C (pyx/profile.pxi): every stage boundary of the data plane reads the TSC and
charges the cycles since the last boundary to the stage that ran, so the stages and the time
outside them (``other``) add up to the profiled time exactly. TSC cycles become ns by the ratio
of ``time.perf_counter_ns()`` to the cycles over the same spans. Not a kernel mechanism.

Three corrections, each documented in docs/benchmarks.md:

- each stamped interval carries one boundary's cost (a TSC read and the stores, calibrated back
  to back when the profile is reset); it is taken off every stage and left in ``other``;
- the per-frame stages (DMA write, skb build, GRO, TCP) are stamped in one NAPI poll in 16 (the
  first one always); the other polls' frames are timed as one block, which is split in the
  proportions the sampled polls measured, so their sum is the unsampled polls' time per frame;
- the profile runs on half the timed loops, in the order profiled, unprofiled, unprofiled,
  profiled, then again (ABBA: a steady drift of the machine over the run weighs on both halves
  alike); the unprofiled loops' time is ``unprofiled-ns-per-frame``. The first quarter of the
  timed loops, at most 3, is left out of both halves: after one warm-up loop they still speed
  up loop by loop (1.9x, 1.4x, 1.2x the later ones), which no order spreads evenly.

The latency is the machine's virtual time from an skb's DMA write (its first frame's arrival on
the trace's clock) to the ``recvmsg()`` that finishes reading it, per skb read, in a histogram of
log2 octaves of 8 buckets: a percentile is the upper end of its bucket (at most 1/8 above the
value it stands for, and never above the exact maximum).
"""
import time

from netmem import _core

__all__ = ["STAGES", "StageProfile"]

#: The stages of the report, in path order (the JSON keys), and what the text table calls them.
STAGES = {
    "steer": "steering and parse",
    "dma-write": "device DMA write",
    "skb-build": "skb build (driver)",
    "gro": "GRO",
    "tcp": "IP and TCP receive",
    "refill": "RX ring refill",
    "recvmsg": "recvmsg (copy or gather)",
    "validate": "read and pattern check",
    "dontneed": "token return (DONTNEED)",
    "puts": "puts (frees, recycling)",
}
_SAMPLED = ("dma-write", "skb-build", "gro", "tcp")     # split of the unsampled polls' "rx"
_LAT_SUB = 8                                            # linear buckets per octave (C)


class StageProfile:
    """The profile of the ``loops`` timed loops of one replay on ``machine`` (``frames`` per
    loop): ``loop(k)`` at the start of each loop (``k`` < 0 for a warm-up one), ``end()`` after
    the last; then ``result()``."""

    def __init__(self, machine, frames, loops):
        self.machine = machine
        self.frames = frames
        self.skip = min(3, loops // 4)          # timed loops left out: still warming up
        self.boundary_cycles = _core._prof_reset(machine)
        self.ns = [0, 0]                # wall ns of the unprofiled and the profiled loops
        self.loops = [0, 0]
        self._running = None            # (profiled, perf_counter_ns at its start)

    def loop(self, k):
        """Loop ``k`` of the timed ones starts (the previous one ends): past the skipped ones,
        profiled when its place is 0 or 3 modulo 4."""
        self.end()
        if k < self.skip:
            return
        profiled = (k - self.skip) % 4 in (0, 3)
        if profiled:
            _core._prof_start(self.machine)
        self._running = (profiled, time.perf_counter_ns())

    def end(self):
        if self._running is None:
            return
        profiled, t0 = self._running
        if profiled:
            _core._prof_stop(self.machine)
        self.ns[profiled] += time.perf_counter_ns() - t0
        self.loops[profiled] += 1
        self._running = None

    def result(self):
        """The ``profile`` object of the report: ``stages`` (ns per frame each), ``other``,
        ``total-ns-per-frame`` (the profiled loops), ``unprofiled-ns-per-frame`` (None with one
        timed loop), ``latency-ns`` (p50, p90, p99, max; None when no skb was read),
        ``sampled-frames`` (whose stages were stamped one by one) and ``boundary-ns``."""
        raw = _core._prof_read(self.machine)
        cyc = dict(zip(_core._PROF_STAGES, raw["cycles"], strict=True))
        marks = dict(zip(_core._PROF_STAGES, raw["marks"], strict=True))
        frames = self.loops[1] * self.frames
        total = sum(cyc.values())
        ns_per_cycle = self.ns[1] / total if total else 0.0
        net = {k: max(cyc[k] - marks[k] * self.boundary_cycles, 0) for k in cyc}
        stages = {k: net[k] for k in STAGES}
        stages.update(_split_rx(net, *raw["frames"]))
        per_frame = ns_per_cycle / frames if frames else 0.0
        out = {k: v * per_frame for k, v in stages.items()}
        unprof = self.loops[0] * self.frames
        return {
            "stages": out,
            "other": (total - sum(stages.values())) * per_frame,
            "total-ns-per-frame": self.ns[1] / frames if frames else 0.0,
            "unprofiled-ns-per-frame": self.ns[0] / unprof if unprof else None,
            "latency-ns": _percentiles(raw["latency-hist"], raw["latency-max"]),
            "sampled-frames": raw["frames"][1],
            "boundary-ns": self.boundary_cycles * ns_per_cycle,
        }


def _split_rx(net, unsampled, sampled):
    """The per-frame stages over every frame: the sampled polls' proportions of the unsampled
    polls' time per frame (the sampled ones' own time, carrying their boundaries, is left out
    but for their proportions)."""
    measured = sum(net[k] for k in _SAMPLED)
    if not unsampled or not measured:
        return {k: net[k] for k in _SAMPLED}
    block = net["rx"] * (unsampled + sampled) / unsampled
    return {k: block * net[k] / measured for k in _SAMPLED}


def _percentiles(hist, vmax):
    """p50, p90, p99 (upper ends of their buckets, at most ``max``) and max, in ns."""
    counts = hist.tolist()
    n = sum(counts)
    if not n:
        return None
    out = {}
    for name, q in (("p50", 0.50), ("p90", 0.90), ("p99", 0.99)):
        want, seen = q * n, 0
        for i, c in enumerate(counts):
            seen += c
            if c and seen >= want:
                out[name] = min(_bucket_top(i), int(vmax))
                break
    out["max"] = int(vmax)
    return out


def _bucket_top(i):
    """The largest value bucket ``i`` holds (the inverse of pyx/profile.pxi's __lat_bucket)."""
    if i < _LAT_SUB:
        return i
    shift = (i >> 3) + 2 - 3
    return ((_LAT_SUB + (i & 7) + 1) << shift) - 1
