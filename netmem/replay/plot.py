"""``--plot``: the timeline of every queue's payload pool, sampled after each chunk of the
untimed loop, and the figure drawn from it (matplotlib, imported only to draw).
"""
import os

import numpy as np

from netmem.replay.counters import _recycle_split
from netmem.replay.output import _write_atomic


class _Timeline:
    """Samples of every queue's payload pool after each chunk of the untimed loop
    ``_observe()`` replays, for ``--plot``: the frames received so far in that loop, cache and
    ring occupancy, buffers out of the pool, and the recycle counters. Time is the trace's own
    (the capture timestamp of each sample's last frame, from the first frame), worked out after
    the clock stops."""

    FIELDS = ("cache", "ring", "out", "recycle-cache", "recycle-ring", "released")

    def __init__(self, rig, trace):
        self.queues = list(range(rig.cfg.queues))
        self.timestamps = trace.timestamps
        self.done = []
        self.rows = []

    def sample(self, rig, done):
        """The pools after ``done`` frames (of the loop it samples)."""
        row = []
        for q in self.queues:
            pool = rig.nic.rx_queues[q].page_pool
            s = pool.stats
            row.append((pool.alloc_count, pool.ring_count,
                        pool.inflight - pool.alloc_count - pool.ring_count, *_recycle_split(s)))
        self.done.append(done)
        self.rows.append(row)

    def arrays(self):
        """``t`` (seconds of trace time at each sample's last frame) and, per field, an array
        (samples, queues)."""
        data = np.array(self.rows, np.int64).reshape(len(self.done), len(self.queues),
                                                     len(self.FIELDS))
        if not self.done:                   # no TCP frame to replay: no chunk, no sample
            return np.zeros(0), {f: data[:, :, i] for i, f in enumerate(self.FIELDS)}
        rel = (self.timestamps - self.timestamps[0]).astype(np.float64) / 1e9
        return rel[np.array(self.done, np.int64) - 1], \
            {f: data[:, :, i] for i, f in enumerate(self.FIELDS)}


def write_plot(path, timeline, config):
    """Over trace time, per queue, in the untimed loop after the timed ones (``_observe()``):
    its payload pool's occupancy (alloc cache, ptr_ring, buffers out of the pool) and where
    each interval's recycled buffers went; the run's configuration in the title."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t, data = timeline.arrays()
    unit = "s" if len(t) and t[-1] >= 1 else "ms"
    t = t if unit == "s" else t * 1e3
    nq = len(timeline.queues)
    fig, axes = plt.subplots(2, nq, figsize=(4 * nq + 1, 6), squeeze=False, sharex=True)
    for i, q in enumerate(timeline.queues):
        top, bottom = axes[0, i], axes[1, i]
        for f, label in (("cache", "alloc cache"), ("ring", "ptr_ring"),
                         ("out", "in flight (device, stack, app)")):
            top.plot(t, data[f][:, i], label=label)
        top.set_title(f"queue {q}: payload pool")
        top.set_ylabel("buffers")
        steps = [np.diff(data[f][:, i], prepend=0) for f in
                 ("recycle-cache", "recycle-ring", "released")]
        bottom.stackplot(t, *steps, labels=("direct (cache)", "ring", "released"))
        bottom.set_ylabel("recycled per chunk")
        bottom.set_xlabel(f"trace time ({unit})")
    axes[0, 0].legend(fontsize="small")
    axes[1, 0].legend(fontsize="small")
    fig.suptitle(_plot_title(config), fontsize="medium")
    fig.tight_layout()
    try:
        _write_atomic(path, lambda f: fig.savefig(f, format="png"))
    finally:
        plt.close(fig)


def _plot_title(c):
    """The configuration a ``--plot`` figure shows in its title."""
    trace = (os.path.basename(c["pcap"]) if c["pcap"] else
             f"built-in workload ({c['workload']['connections']} connections)")
    return (f"netmem-replay: {trace}; {c['provider']} provider, {c['queues']} queue(s), MTU "
            f"{c['mtu']}, iommu {c['iommu']}; {c['loops']} loop(s) after {c['warmup']} "
            "warm-up")


def write_closed_loop_plot(path, samples, doc):
    """``--closed-loop --plot``: over virtual time, the senders' cwnd and packets in flight
    (summed over the connections) and the buffers out of the payload pools
    (``page_pool_inflight()``: posted on the ring, in the stack, held by the application), as
    steps: a sample holds until the next (none is taken while no frame arrives)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t_ns, cwnd, in_flight, pool = samples
    t = (t_ns - (t_ns[0] if len(t_ns) else 0)) / 1e6
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(10, 6), sharex=True)
    top.plot(t, cwnd, label="cwnd (sum)", drawstyle="steps-post")
    top.plot(t, in_flight, label="packets in flight (sum)", drawstyle="steps-post")
    top.set_ylabel("segments")
    top.legend(fontsize="small")
    bottom.plot(t, pool, label="payload pools' buffers in flight", color="tab:red",
                drawstyle="steps-post")
    bottom.set_ylabel("buffers")
    bottom.set_xlabel("virtual time (ms)")
    bottom.legend(fontsize="small")
    c, cl = doc["config"], doc["closed-loop"]
    fig.suptitle(f"netmem-replay --closed-loop: {cl['connections']} x {cl['payload']} bytes, "
                 f"{c['provider']} provider ({c['dmabuf-size']} bytes), {cl['link-gbps']:g} "
                 f"Gbit/s, RTT {cl['rtt'] * 1e6:g} us, {cl['cc']}", fontsize="medium")
    fig.tight_layout()
    try:
        _write_atomic(path, lambda f: fig.savefig(f, format="png"))
    finally:
        plt.close(fig)
