"""``REPORT_SCHEMA``: the JSON Schema of the ``--json`` document, which ``--compare`` checks
the reports it reads against. A new section of the document is described here too.
"""
from netmem import netlink
from netmem.netdev import ETH_MAX_MTU, ETH_MIN_MTU, RX_MAX_PENDING
from netmem.page_pool import PAGE_SIZE
from netmem.profile import STAGES
from netmem.replay.config import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, MAX_QUEUES
from netmem.replay.report import _POOL_STATS, TIME_FIGURES

_COUNT = {"type": "integer", "minimum": 0}
_COUNTS = {"type": "object", "additionalProperties": _COUNT}
_NUMBER = {"type": "number", "minimum": 0}
_POOL = {
    "type": "object",
    "required": ["id", "info", "inflight", "inflight-mem", *_POOL_STATS],
    "properties": {"id": _COUNT, "ifindex": _COUNT, "napi-id": _COUNT, "inflight": _COUNT,
                   "inflight-mem": _COUNT, "info": {"type": "object", "required": ["id"]},
                   **dict.fromkeys(_POOL_STATS, _COUNT)},
}
_SPLIT = {"type": "object", "required": ["cache", "ring", "released"],
          "additionalProperties": False, "properties": dict.fromkeys(("cache", "ring",
                                                                       "released"), _COUNT)}
_LATENCY = {"type": "object", "required": ["p50", "p90", "p99", "max"],
            "additionalProperties": False,
            "properties": dict.fromkeys(("p50", "p90", "p99", "max"), _COUNT)}
#: ``--profile`` (netmem.profile): ns per frame by stage, the rest, both totals, the latency.
_PROFILE = {
    "type": "object",
    "required": ["stages", "other", "total-ns-per-frame", "unprofiled-ns-per-frame",
                 "latency-ns", "sampled-frames", "boundary-ns"],
    "additionalProperties": False,
    "properties": {
        "stages": {"type": "object", "required": list(STAGES), "additionalProperties": False,
                   "properties": dict.fromkeys(STAGES, _NUMBER)},
        "other": {"type": "number"},
        "total-ns-per-frame": _NUMBER,
        "unprofiled-ns-per-frame": {"type": ["number", "null"], "minimum": 0},
        "latency-ns": {"oneOf": [{"type": "null"}, _LATENCY]},
        "sampled-frames": _COUNT,
        "boundary-ns": _NUMBER,
    },
}
_STRING_OR_NULL = {"type": ["string", "null"]}
_TIMES = {"type": "object", "required": list(TIME_FIGURES),
          "properties": dict.fromkeys(TIME_FIGURES, _NUMBER)}
_RUN = {"type": "object", "required": ["loops", "frames", *TIME_FIGURES, "loop-seconds"],
        "properties": {"loops": {"type": "integer", "minimum": 1}, "frames": _COUNT,
                       **_TIMES["properties"],
                       "loop-seconds": {"type": "array", "minItems": 1, "items": _NUMBER}}}
#: ``--closed-loop``'s section (netmem/replay/closedloop.py): the run's link and senders,
#: goodput in virtual time, frames, retransmits, RTOs, loss probes, the senders' MIB, and what
#: the receiving sockets hold when the loop ends (``receiver-held``).
_CLOSED_LOOP = {
    "type": "object",
    "required": ["connections", "payload", "link-gbps", "rtt", "loss", "cc", "hold-tokens",
                 "completed", "virtual-seconds", "goodput-gbps", "frames", "retransmits",
                 "rtos", "loss-probes", "sender-mib", "links", "cwnd", "srtt-us",
                 "receiver-held"],
    "properties": {
        "connections": {"type": "integer", "minimum": 1}, "payload": _COUNT,
        "link-gbps": _NUMBER, "rtt": _NUMBER, "loss": _NUMBER, "cc": {"enum": ["reno", "cubic"]},
        "hold-tokens": _NUMBER, "completed": {"type": "boolean"}, "virtual-seconds": _NUMBER,
        "goodput-gbps": _NUMBER,
        "frames": {**_COUNTS, "required": ["sent", "received", "acks-sent", "acks-received"]},
        "retransmits": _COUNT, "rtos": _COUNT, "loss-probes": _COUNT, "sender-mib": _COUNTS,
        "links": {"type": "object", "required": ["forward", "reverse"],
                  "additionalProperties": _COUNTS},
        "cwnd": _COUNTS, "srtt-us": _COUNTS,
        "receiver-held": {**_COUNTS, "required": ["ofo-sockets", "ofo-skbs", "rmem-alloc"]},
    },
}
#: The JSON Schema (2020-12) of the ``--json`` document. Stats carry the netdev netlink
#: family's attribute names (``page-pool-get``, ``page-pool-stats-get``, ``qstats-get``);
#: every count is the timed loops' own (``counters.scope``), ``counters.gauges`` names what is
#: state instead; ``replay`` holds each run's time figures and their median, min and max.
REPORT_SCHEMA = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "netmem-replay report",
    "type": "object",
    "required": ["tool", "config", "environment", "trace", "replay", "counters", "drops",
                 "qstats", "queues", "recycle", "tcp-mib", "iommu", "devmem", "validation",
                 "warnings", "max-rss", "inflight-after-teardown", "leaks", "interrupted",
                 "exit-code", "profile"],
    "additionalProperties": False,
    "properties": {
        "tool": {"const": "netmem-replay"},
        "config": {
            "type": "object",
            "required": ["provider", "provider-args", "queues", "bind-queues", "header-split",
                         "mtu", "mtu-from", "iommu", "app-cpu", "pool-size", "dmabuf-size",
                         "dmabuf-layout", "loops", "warmup", "runs", "chunk", "seed", "pcap",
                         "workload"],
            "properties": {
                "provider": {"type": "string", "minLength": 1},
                "provider-args": {"type": "object", "additionalProperties": {
                    "type": ["integer", "number", "string"]}},
                "queues": {"type": "integer", "minimum": 1, "maximum": MAX_QUEUES},
                "bind-queues": {"type": "array", "items": _COUNT},
                "header-split": {"type": "boolean"},
                "mtu": {"type": "integer", "minimum": ETH_MIN_MTU, "maximum": ETH_MAX_MTU},
                "mtu-from": {"enum": ["option", "capture", "workload"]},
                "iommu": {"enum": ["none", "passthrough", "dma-iommu"]},
                "app-cpu": {"enum": ["same", "other"]},
                "pool-size": {"type": "integer", "minimum": 1, "maximum": RX_MAX_PENDING},
                "dmabuf-size": {"type": ["integer", "null"], "minimum": PAGE_SIZE},
                "dmabuf-layout": {"enum": ["contiguous", "pages", "random", None]},
                "rx-buf-size": {"type": ["integer", "null"], "minimum": PAGE_SIZE},
                "loops": {"type": "integer", "minimum": 1},
                "warmup": _COUNT,
                "runs": {"type": "integer", "minimum": 1},
                "chunk": {"type": "integer", "minimum": 1},
                "seed": _COUNT,
                "pcap": {"type": ["string", "null"]},
                "workload": {"type": ["object", "null"]},
            },
        },
        "trace": {"type": "object", "required": ["frames", "bytes", "payload-bytes",
                                                 "largest-l3-length", "skipped", "streamed",
                                                 "keep"],
                  "properties": {"frames": _COUNT, "bytes": _COUNT, "payload-bytes": _COUNT,
                                 "largest-l3-length": _COUNT, "streamed": {"type": "boolean"},
                                 "keep": {"type": ["integer", "null"], "minimum": 0},
                                 "skipped": {**_COUNTS, "required": ["too_long"]}}},
        "environment": {
            "type": "object",
            "required": ["netmem", "git-commit", "git-dirty", "cpu-model", "cpus", "python",
                         "numpy"],
            "properties": {"netmem": _STRING_OR_NULL, "git-commit": _STRING_OR_NULL,
                           "git-dirty": {"type": ["boolean", "null"]},
                           "cpu-model": _STRING_OR_NULL,
                           "cpus": {"type": ["array", "null"], "items": _COUNT},
                           "python": {"type": "string"}, "numpy": {"type": "string"}}},
        "replay": {"type": "object",
                   "required": ["frames", "bytes", "payload-bytes", *TIME_FIGURES, "min", "max",
                                "runs"],
                   "properties": {"frames": _COUNT, "bytes": _COUNT, "payload-bytes": _COUNT,
                                  **_TIMES["properties"], "min": _TIMES, "max": _TIMES,
                                  "runs": {"type": "array", "minItems": 1, "items": _RUN}}},
        "counters": {"type": "object", "required": ["scope", "runs", "loops", "gauges"],
                     "additionalProperties": False,
                     "properties": {"scope": {"const": "timed-loops"},
                                    "runs": {"type": "integer", "minimum": 1},
                                    "loops": {"type": "integer", "minimum": 1},
                                    "gauges": {"type": "array", "items": {"type": "string"}}}},
        "drops": {"type": "object", "required": ["skb-drop-reasons", "device", "queues"],
                  "additionalProperties": _COUNTS},
        "qstats": {"type": "object", "required": ["ifindex", *(k for k, _ in netlink.QSTATS)],
                   "additionalProperties": _COUNT},
        "queues": {"type": "array", "minItems": 1, "items": {
            "type": "object",
            "required": ["id", "napi-id", "bound", "qstats", "page-pool", "recycle"],
            "properties": {"id": _COUNT, "napi-id": _COUNT, "bound": {"type": "boolean"},
                           "qstats": _COUNTS,
                           "page-pool": _POOL, "header-page-pool": _POOL,
                           "recycle": _SPLIT}}},
        "recycle": _SPLIT,
        "tcp-mib": _COUNTS,
        "iommu": {"type": "object", "required": ["mode", "faults", "unmapped-accesses", "stats"],
                  "properties": {"mode": {"enum": ["none", "passthrough", "dma-iommu"]},
                                 "faults": _COUNT, "unmapped-accesses": _COUNT,
                                 "stats": _COUNTS}},
        "devmem": {"oneOf": [{"type": "null"}, _COUNTS]},
        "validation": {"type": "object",
                       "required": ["result", "detail", "pattern", "bytes", "resets"],
                       "properties": {"result": {"enum": ["ok", "failed", "skipped"]},
                                      "detail": {"type": "string"},
                                      "pattern": {"type": ["integer", "null"], "minimum": 2},
                                      "bytes": _COUNT, "resets": _COUNT}},
        "warnings": {"type": "array", "items": {"type": "string"}},
        "max-rss": _COUNT,
        "inflight-after-teardown": _COUNT,
        "leaks": {"type": "array", "items": {"type": "string"}},
        "interrupted": {"type": "boolean"},
        "exit-code": {"enum": [EXIT_OK, EXIT_FAILED, EXIT_INTERRUPTED]},
        "profile": {"oneOf": [{"type": "null"}, _PROFILE]},
        "closed-loop": _CLOSED_LOOP,
    },
}
