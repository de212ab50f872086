"""The closed loop (issue 18): TCP senders in C on virtual time, a two-way link, and the
receive path with its application, so that drops from an exhausted provider cost retransmits
and goodput as on a real machine.

``ClosedLoop(machine, nic, receiver, ...)`` puts ``connections`` senders of ``payload`` bytes
each (congestion control ``cc``: ``"reno"`` or ``"cubic"``; RACK-TLP, PRR, RTO with backoff;
pyx/tcp_output.pxi and the files it names) behind a link of ``link_gbps`` with ``rtt`` (two
one-way delays), a drop-tail queue of ``queue_bytes`` and random ``loss`` in both
directions, into ``nic``; the ``receiver`` (a ``netmem.tcp.Receiver`` checking ncdevmem's
``-v validate`` pattern) reads on CPU ``app_cpu`` after each NIC interrupt (``rx_usecs``,
``rx_frames``: ethtool -C), and with ``hold`` (seconds) gives its devmem tokens back that
much later. ``run()`` goes until every transfer is acknowledged, in slices of virtual time
between which the machine's own timers fire (``Machine.advance()``). Deterministic under
``seed``. IPv4 only.
"""
import math

from netmem import _core
from netmem.errors import NetmemError
from netmem.flows import ncdevmem_pattern

__all__ = ["CONGESTION_CONTROLS", "ClosedLoop"]

CONGESTION_CONTROLS = ("reno", "cubic")
_SLICE_NS = 10_000_000          # Python timers fire between 10 ms slices of virtual time
_PATTERN_SLACK = 1 << 16        # the senders copy up to an MSS from any offset of one period


class ClosedLoop:
    """See the module's docstring. ``mib`` is the senders' MIB by nstat name, ``links`` each
    direction's counters, ``senders()`` per-connection state, ``samples()`` the plot's
    (time, cwnd, in flight, pool inflight) points every ``sample`` seconds of virtual time."""

    def __init__(self, machine, nic, receiver, *, connections, payload, cc="cubic",
                 link_gbps=100.0, rtt=100e-6, loss=0.0, queue_bytes=None, seed=1,
                 validate=7, rx_usecs=8e-6, rx_frames=256, app_cpu=0, hold=0.0,
                 sample=0.0, limit=600.0):
        if cc not in CONGESTION_CONTROLS:
            raise NetmemError(22, f"closed loop: cc={cc!r} is not one of {CONGESTION_CONTROLS}")
        if not (isinstance(connections, int) and 1 <= connections <= 1 << 16):
            raise NetmemError(22, f"closed loop: connections={connections!r} is not in 1..65536")
        if not (isinstance(payload, int) and 0 <= payload < 1 << 31):
            raise NetmemError(22, f"closed loop: payload={payload!r} is not in 0..2 GiB")
        if not (link_gbps > 0 and rtt >= 0 and 0 <= loss < 1 and hold >= 0 and sample >= 0
                and rx_usecs >= 0 and limit > 0):
            raise NetmemError(22, "closed loop: link_gbps, rtt, loss (below 1), hold, sample, "
                                  "rx_usecs and limit must be in range")
        if not (isinstance(validate, int) and validate >= 1):
            raise NetmemError(22, f"closed loop: validate={validate!r} is not a positive integer")
        rate = int(link_gbps * 1e9)
        delay = round(rtt * 1e9 / 2)
        if queue_bytes is None:                 # one bandwidth-delay product, 64 frames at least
            queue_bytes = max(rate * 2 * delay // 8_000_000_000, 64 * 1514)
        period = min(validate, 256)
        receiver._rx.hold_ns = round(hold * 1e9)
        self.machine, self.payload, self.connections = machine, payload, connections
        self.limit_ns = int(limit * 1e9)
        self._core = _core.CoreClosedLoop(
            machine, nic, receiver._rx, connections, payload, cc.encode(), rate,
            delay, queue_bytes, float(loss), seed & 0xffffffff or 1,
            ncdevmem_pattern(validate, period + _PATTERN_SLACK), period,
            round(rx_usecs * 1e9), rx_frames, app_cpu, round(sample * 1e9))
        self.start_ns = None
        self.done = False

    def run(self):
        """Every sender connects now; events until every transfer is acknowledged, or ``limit``
        seconds of virtual time (then ``done`` stays False). Returns ``done``."""
        m = self.machine
        self.start_ns = m.clock_ns
        self._core.start()
        while not self.done and m.clock_ns - self.start_ns < self.limit_ns:
            until = m.clock_ns + _SLICE_NS
            self.done = self._core.run(until)
            # the machine's own timers (IOMMU flush queues...) due by then
            m.advance(0 if self.done else (until - m.clock_ns) / 1e9)
        return self.done

    @property
    def elapsed(self):
        """Virtual seconds from the first SYN to the last ACK (or to now, unfinished)."""
        end = self._core.end_ns if self.done else self.machine.clock_ns
        return (end - self.start_ns) / 1e9 if self.start_ns is not None else 0.0

    @property
    def goodput(self):
        """Payload bits per second of virtual time, over every connection."""
        t = self.elapsed
        return 8 * self.payload * self.connections / t if t > 0 and self.done else math.nan

    @property
    def mib(self):
        return self._core.mib

    @property
    def links(self):
        return self._core.links

    @property
    def frames(self):
        """Frames the senders sent, the NIC received, the receiver's ACKs and those the
        senders took."""
        c = self._core
        return {"sent": c.frames_sent, "received": c.frames_received, "acks-sent": c.acks_sent,
                "acks-received": c.acks_received}

    def senders(self):
        return self._core.senders()

    def samples(self):
        return self._core.samples()
