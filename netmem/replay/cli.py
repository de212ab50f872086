"""The command line: ``netmem-replay``'s parser (``_parser()``, its description the first
paragraph of the package's docstring), ``main()``, ``--list-providers``, the outputs written
after a run, and ``--compare``. A new option's flag goes into ``_parser()``; it reaches
``Config`` by its dest.
"""
import argparse
import sys
from importlib import metadata

from netmem.provider import ENTRY_POINT_GROUP
from netmem.replay.compare import Comparison, _load_report
from netmem.replay.config import (
    EXIT_BAD_INPUT,
    EXIT_INTERRUPTED,
    EXIT_OK,
    BadInput,
    Config,
    _check_config,
    _provider_arg,
    _qualname,
    _queue_list,
    time_arg,
)
from netmem.replay.output import _check_output, _check_outputs
from netmem.replay.runner import run
from netmem.tools import Parser, size_arg


class _ProviderArgs(argparse.Action):
    """Collects ``--provider-arg`` pairs into a dict; a key given twice is an error."""

    def __call__(self, parser, namespace, values, option_string=None):
        key, value = values
        args = dict(getattr(namespace, self.dest))
        if key in args:
            parser.error(f"argument --provider-arg: {key} given twice")
        args[key] = value
        setattr(namespace, self.dest, args)


def _provider_list():
    """``--list-providers``: per registered provider, its name, its class's module:qualname
    and the first sentence of its docstring (or why it does not load)."""
    rows = []
    for ep in sorted(set(metadata.entry_points(group=ENTRY_POINT_GROUP)), key=lambda e: e.name):
        try:
            obj = ep.load()
        except Exception as e:          # the provider's own module failed to import
            rows.append((ep.name, ep.value, f"cannot load: {type(e).__name__}: {e}"))
            continue
        first = " ".join((obj.__doc__ or "").strip().split("\n\n")[0].split())
        rows.append((ep.name, _qualname(obj), first.split(". ")[0].rstrip(".") + "."
                     if first else "(no docstring)"))
    w0 = max((len(r[0]) for r in rows), default=0)
    w1 = max((len(r[1]) for r in rows), default=0)
    return "\n".join(f"{n:<{w0}}  {q:<{w1}}  {d}" for n, q, d in rows)


def _parser():
    d = Config()
    ap = Parser(prog="netmem-replay",
                description=sys.modules[__package__].__doc__.split("\n\n")[0])
    ap.add_argument("--pcap", metavar="FILE", help="a pcap or pcapng capture (default: the "
                    "built-in workload)")
    ap.add_argument("--pcap-in-memory", action="store_true",
                    help="read the capture whole into memory (default: stream it from the "
                         "file, a window at a time, reading it again each loop)")
    ap.add_argument("--pcap-keep", type=size_arg, default=d.pcap_keep, metavar="SIZE",
                    help="keep the first SIZE bytes of a streamed capture resident once read, "
                         "so later loops do not read them again (default: 0; a capture that "
                         "fits is read once)")
    ap.add_argument("--provider", default=d.provider, metavar="NAME",
                    help="memory behind the RX queues: a provider registered under the "
                         "netmem.providers entry points (default: %(default)s, devmem TCP)")
    ap.add_argument("--provider-arg", dest="provider_args", type=_provider_arg,
                    action=_ProviderArgs, default={}, metavar="KEY=VALUE",
                    help="a keyword of the provider's replay_setup (repeatable): an int, a "
                         "float, a size (16MiB), else a string")
    ap.add_argument("--list-providers", action="store_true",
                    help="list the installed providers and exit")
    ap.add_argument("--queues", type=int, default=d.queues, help="RX queues (%(default)s)")
    ap.add_argument("--bind-queues", type=_queue_list, metavar="LIST",
                    help="queues the provider binds, e.g. 0,2-3 (default: all)")
    ap.add_argument("--header-split", choices=("on", "off"),
                    help="tcp-data-split (default: on with a provider, off for host)")
    ap.add_argument("--mtu", type=int, default=d.mtu,
                    help="the NIC's MTU (default: for --pcap, the smallest that takes the "
                         "capture's largest frame, 1500..9000; else 1500)")
    ap.add_argument("--iommu", choices=("none", "passthrough", "dma-iommu"), default=d.iommu)
    ap.add_argument("--app-cpu", choices=("same", "other"), default=d.app_cpu,
                    help="the application on the NAPI CPU (same: ring recycling) or another "
                         "(other: direct recycling of deferred frees); default %(default)s")
    ap.add_argument("--pool-size", type=int, default=d.pool_size,
                    help="RX ring and page pool size (%(default)s)")
    ap.add_argument("--dmabuf-size", type=size_arg, default=d.dmabuf_size, metavar="SIZE",
                    help="dma-buf (or p2pdma) memory, e.g. 16GiB (default 64MiB per 4KiB of "
                         "--rx-buf-size)")
    ap.add_argument("--rx-buf-size", "--rx-buf-len", type=size_arg, default=d.rx_buf_size,
                    metavar="SIZE",
                    help="the net_iov size, e.g. 16KiB: bind-rx's rx-buf-size for dmabuf, "
                         "the ifq's rx_buf_len for zcrx (a power of 2 from 4KiB; the NIC is "
                         "then bnxt-like, up to 32KiB; default: not given, 4KiB)")
    ap.add_argument("--dmabuf-layout", choices=("contiguous", "pages", "random"),
                    default=d.dmabuf_layout, help="the exporter's scatterlist")
    ap.add_argument("--loops", type=int, default=d.loops, metavar="K",
                    help="replay the trace K times, each loop timed on its own clock; every "
                         "counter counts these loops only (default %(default)s)")
    ap.add_argument("--warmup", type=int, default=d.warmup, metavar="K",
                    help="replay it K times more first, untimed and not counted (default "
                         "%(default)s)")
    ap.add_argument("--runs", type=int, default=d.runs, metavar="N",
                    help="repeat the run N times, each on a fresh machine with its own "
                         "warm-up: the time figures are the median, min and max over the "
                         "runs, the counters the sum of every run's timed loops (default "
                         "%(default)s)")
    ap.add_argument("--chunk", type=int, default=d.chunk,
                    help="frames per receive before the application drains (default: 1024 "
                         "at MTU 1500, as many bytes at a larger MTU: 170 at 9000)")
    ap.add_argument("--connections", type=int,
                    help="built-in workload (or closed loop): connections (64; 16)")
    ap.add_argument("--payload", type=size_arg, metavar="SIZE",
                    help="built-in workload (or closed loop): bytes per connection (64KiB; "
                         "4MiB)")
    ap.add_argument("--validate", type=int, metavar="N",
                    help="ncdevmem -v N pattern: the built-in workload's (7; 0 for random "
                         "bytes) or the one the capture carries")
    ap.add_argument("--dump-streams", metavar="DIR",
                    help="write stream-N-nodeK.bin: the bytes node K of tshark's stream N "
                         "sent, as delivered in one loop more after the timed ones (untimed, "
                         "not counted)")
    ap.add_argument("--json", metavar="FILE", help="write the report as one JSON document")
    ap.add_argument("--plot", metavar="FILE.png", help="plot pool occupancy and recycling "
                    "over that same untimed loop")
    ap.add_argument("--trace-out", metavar="FILE.json",
                    help="the tracepoints (page_pool, napi_poll, kfree_skb, netif_receive_skb, "
                         "devmem token returns, queue restarts) of that same untimed loop as "
                         "Chrome trace-event JSON, for the Perfetto UI")
    ap.add_argument("--seed", type=int, default=d.seed)
    ap.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                    help="progress bar on stderr (default: when it is a terminal)")
    ap.add_argument("--compare", nargs="+", metavar="REPORT.json",
                    help="replay nothing: print these --json reports side by side, the first "
                         "the baseline (time figures as median [min-max], counters per 1,000 "
                         "frames)")
    ap.add_argument("--csv", metavar="FILE", help="with --compare: the comparison as CSV")
    cl = ap.add_argument_group("closed loop (senders in C on virtual time instead of a trace)")
    cl.add_argument("--closed-loop", action="store_true",
                    help="--connections senders of --payload bytes each over a link into the "
                         "NIC; the receiver's ACKs go back; a --dmabuf-size smaller than the "
                         "traffic is allowed")
    cl.add_argument("--link-gbps", type=float, metavar="GBPS", help="link rate (100)")
    cl.add_argument("--rtt", type=time_arg, metavar="TIME",
                    help="round-trip time, two one-way delays (100us)")
    cl.add_argument("--loss", type=float, metavar="P",
                    help="random loss on the wire, each direction (0)")
    cl.add_argument("--cc", choices=("reno", "cubic"), help="congestion control (cubic)")
    cl.add_argument("--hold-tokens", type=time_arg, metavar="TIME",
                    help="devmem: the application gives its tokens back this long after "
                         "reading (0)")
    ap.add_argument("--profile", action="store_true",
                    help="where the time goes: ns per frame by stage of the data plane, and "
                         "the latency from DMA write to recvmsg (half the timed loops of the "
                         "first run run profiled)")
    return ap


def main(argv=None):
    """``netmem-replay``: returns the exit code (0 ok, 1 validation failed, buffers lost or
    DMA into unmapped memory, 2 bad input, 130 interrupted)."""
    try:
        args = _parser().parse_args(argv)
    except SystemExit as e:            # argparse printed its message
        return e.code
    if args.list_providers:
        print(_provider_list())
        return EXIT_OK
    try:
        if args.compare is not None or args.csv is not None:
            return _main_compare(args)
        cfg = Config(**{k: v for k, v in vars(args).items()
                        if k not in ("compare", "csv", "list_providers")})
        _check_config(cfg)
        _check_outputs(cfg)
        report = run(cfg)
    except BadInput as e:
        print(f"netmem-replay: {e.strerror}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("netmem-replay: interrupted before a timed loop completed: nothing to report",
              file=sys.stderr)
        return EXIT_INTERRUPTED
    print(report.format_table())
    _write_outputs(cfg, report)
    return report.exit_code


def _write_outputs(cfg, report):
    """The outputs ``cfg`` asks for; after Ctrl-C, those whose untimed loop did not complete
    are named on stderr instead."""
    if cfg.json is not None:
        report.write_json(cfg.json)
    for option, path, done, write, loop in (
            ("--dump-streams", cfg.dump_streams, report.streams, report.write_streams,
             "the stream files' loop"),
            ("--plot", cfg.plot, report.timeline, report.write_plot, "the timeline's loop"),
            ("--trace-out", cfg.trace_out, report.trace, report.write_trace, "the untimed loop")):
        if path is None:
            continue
        if done is None:
            print(f"netmem-replay: interrupted before {loop}: {option} {path} not written",
                  file=sys.stderr)
        else:
            write(path)


def _main_compare(args):
    """``--compare A.json B.json ...`` (and ``--csv FILE``): every file checked before
    anything is printed or written."""
    if args.compare is None:
        raise BadInput("--csv: only with --compare")
    defaults = vars(_parser().parse_args([]))
    other = [k for k, v in vars(args).items() if k not in ("compare", "csv") and
             v != defaults[k]]
    if other:
        raise BadInput(f"--compare: --{other[0].replace('_', '-')} is an option of a replay, "
                       "not of a comparison")
    if len(args.compare) < 2:
        raise BadInput("--compare: give two reports or more (the first is the baseline)")
    if args.csv is not None:
        _check_output("--csv", args.csv)
    cmp = Comparison(args.compare, [_load_report(p) for p in args.compare])
    print(cmp.format_table())
    if args.csv is not None:
        cmp.write_csv(args.csv)
    return EXIT_OK
