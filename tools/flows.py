"""netmem-flows: write a generated TCP capture (pcap or pcapng) and its PacketTrace cache.

``netmem-flows OUT.pcap -n 8 --family both --payload 4MiB --loss 0.01 --seed 7`` writes
``OUT.pcap`` and ``OUT.pcap.npz`` (the capture's index: ``PacketTrace.load`` streams the
capture through it). The capture is built and written a slice of frames at a time
(``flows.write_generated``), so it may be larger than memory.
A second run with the same parameters finds both, keyed by the parameters, and writes nothing
(``--force`` writes anyway). A name ending in ``.pcapng`` (or ``--pcapng``) writes pcapng.
See ``netmem.flows.FlowParams`` for what each option does.

Exit codes: 0; 1 when writing fails; 2 for bad input (an option ``FlowParams`` refuses, an
output it cannot write): one line on stderr names it, and nothing is written.
"""
import argparse
import dataclasses
import os
import sys
import time

from netmem.tools import Parser, size_arg, unwritable_dir

from netmem import flows
from netmem.errors import NetmemError

__all__ = ["main"]

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT = 0, 1, 2


def _rate(text):
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a rate: {text!r}") from None


def _parser():
    d = flows.FlowParams()
    ap = Parser(prog="netmem-flows", description=__doc__.split("\n\n")[0])
    ap.add_argument("out", help="capture file to write (.pcap or .pcapng)")
    ap.add_argument("-n", "--connections", type=int, default=d.connections)
    ap.add_argument("--family", choices=("ipv4", "ipv6", "both"), default=d.family)
    ap.add_argument("--vlan", type=int, default=d.vlan, help="802.1Q VLAN id on every frame")
    ap.add_argument("--mtu", type=int, default=d.mtu)
    ap.add_argument("--mss", type=int, default=d.mss, help="default: from the MTU")
    ap.add_argument("--payload", type=size_arg, default=d.payload,
                    help="bytes per connection and direction (e.g. 4MiB)")
    ap.add_argument("--bidirectional", action="store_true", help="the server sends data too")
    ap.add_argument("-v", "--validate", type=int, default=d.validate, metavar="N",
                    help="ncdevmem -v N validation pattern instead of random bytes")
    ap.add_argument("--interleave", choices=("round-robin", "random"), default=d.interleave)
    ap.add_argument("--seed", type=int, default=d.seed)
    for name in ("loss", "reorder", "duplicate", "overlap"):
        ap.add_argument(f"--{name}", type=_rate, default=0.0, metavar="RATE")
    ap.add_argument("--isn", type=int, default=d.isn,
                    help="every side's ISN (e.g. 4294966296 to wrap); default random")
    ap.add_argument("--link-gbps", type=float, default=d.link_gbps,
                    help="wire speed of the virtual timestamps")
    ap.add_argument("--pcapng", action="store_true", help="write pcapng (also for .pcapng)")
    ap.add_argument("--force", action="store_true", help="write even if the cache matches")
    return ap


def _bad_output(out):
    """Why ``out`` (and ``out.npz`` beside it) cannot be written, or None."""
    for path in (out, out + ".npz"):
        if os.path.isdir(path):
            return f"{path}: is a directory"
    why = unwritable_dir(os.path.dirname(os.path.abspath(out)))
    return None if why is None else f"{out}: {why[1]}"


def main(argv=None):
    """``netmem-flows``: returns the exit code (0 ok, 1 writing failed, 2 bad input)."""
    try:
        args = _parser().parse_args(argv)
    except SystemExit as e:            # the parser printed its one line
        return e.code
    pcapng = args.pcapng or args.out.endswith(".pcapng")
    fields = {f.name for f in dataclasses.fields(flows.FlowParams)}
    try:
        params = flows.FlowParams(**{k: v for k, v in vars(args).items() if k in fields})
    except NetmemError as e:
        print(f"netmem-flows: {e.strerror}", file=sys.stderr)
        return EXIT_BAD_INPUT
    bad = _bad_output(args.out)
    if bad is not None:
        print(f"netmem-flows: {bad}", file=sys.stderr)
        return EXIT_BAD_INPUT
    try:
        trace = None if args.force else flows.cached_trace(args.out, pcapng, params)
        if trace is not None:
            print(f"netmem-flows: {args.out} is up to date (cache {args.out}.npz): {trace}")
            return EXIT_OK
        t0 = time.perf_counter()
        trace = flows.write_generated(args.out, params, pcapng=pcapng)
        t1 = time.perf_counter()
    except (NetmemError, OSError) as e:
        print(f"netmem-flows: {e}", file=sys.stderr)
        return EXIT_FAILED
    print(f"netmem-flows: wrote {args.out} and {args.out}.npz: {trace} "
          f"(generated and written in {t1 - t0:.2f} s)")
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
