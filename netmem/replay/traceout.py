"""``--trace-out``: the tracepoints of the first run as Chrome trace-event JSON (Perfetto):
the queue restarts of the provider's binding, then every tracepoint through the untimed loop
after the timed ones and the teardown, so no clock covers the recording.
"""
import json

from netmem.replay.output import _write_atomic
from netmem.trace import chrome_trace


class _TraceOut:
    """What ``--trace-out`` records of one run (the first): ``bind()`` around the provider's
    binding (``netmem:netdev_rx_queue_restart`` only), ``observe()`` before the untimed loop
    (every tracepoint, on until teardown ends), ``document()`` after teardown."""

    def __init__(self, rig):
        self.trace = rig.machine.trace
        self.queues = {q.idx: (rig.nic.name, q.napi.napi_id) for q in rig.nic.rx_queues}
        self.observed = False

    def bind(self, fn):
        self.trace.enable("netmem:netdev_rx_queue_restart")
        try:
            return fn()
        finally:
            self.trace.disable("netmem:netdev_rx_queue_restart")

    def observe(self):
        self.trace.enable("*")
        self.observed = True

    def document(self, cfg):
        """The trace-event document (None when the untimed loop never started)."""
        if not self.observed:
            return None
        return chrome_trace(self.trace.events, self.trace.dropped, self.queues,
                            {"tool": "netmem-replay", "provider": cfg.provider_name,
                             "scope": "the first run's binding, its untimed loop after the "
                                      "timed ones, and its teardown"})


def write_trace(path, doc):
    _write_atomic(path, lambda f: f.write(json.dumps(doc, separators=(",", ":")).encode()))
