"""netmem-replay: a packet trace through a NIC, its page pools and a memory provider, and an
application that reads every socket, as ncdevmem does; then the figures and counters.

``netmem-replay [--pcap FILE] [--provider NAME] [options]`` builds a machine with a
NIC and a GPU behind one PCIe switch, binds the provider's memory to the NIC's queues (devmem TCP
for ``dmabuf``: header split on, the dma-buf bound with netlink ``bind-rx``, RSS spread over the
bound queues) and replays the trace ``--loops`` times in chunks: ``NetDevice.receive()`` runs a
chunk of frames through steering, NAPI, the device's DMA, GRO and TCP in C, then the application
(``netmem.tcp.Receiver``, in C too: pyx/receiver.pxi) reads every socket the chunk woke until
EAGAIN: ``recvmsg`` copies for host pages, ``recvmsg`` with ``MSG_SOCK_DEVMEM`` for devmem (the
payload read through the dma-buf at each cmsg's offset, each socket's tokens given back with
``SO_DEVMEM_DONTNEED`` in batches). Each of those loops is timed on its own clock, after
``--warmup`` untimed loops (hot caches, memory already faulted in); ``--runs N`` does all this N
times, each on a fresh machine. At the end of each loop the application closes every
socket, so the next loop opens them again on the trace's SYNs (the same sequence numbers never
meet old data). The default trace is a built-in workload: ``DEFAULT_WORKLOAD``, 64 connections of
64 KiB over IPv4 and IPv6 with light loss, reordering, duplication and overlap, carrying
ncdevmem's ``-v 7`` pattern (4 MiB of frames: it stays in the caches as it is replayed).
``run(Config(...))`` is the same without the command line; it returns a ``Report``.

Providers: ``--provider NAME`` is any class registered under the entry-point group
``netmem.providers`` (read at run time; ``--list-providers`` shows them): the built-ins ``host``,
``dmabuf`` and ``p2pdma``, or a user's, installed from its own package. The class's classmethod
``replay_setup(rig, **provider_args)`` binds it to the run's ``Rig`` (the ``--provider-arg``
values as keywords) and returns a ``netmem.provider.ReplayBinding``: the provider's memory as
``(offsets, phys, lengths)`` in the ``frag_offset`` space of its devmem cmsgs and the
``dmabuf_id`` they name (nothing for host pages, read by copy). ``MemoryProvider``'s default
builds ``cls(rig.machine, rig.nic, **provider_args)``, installs it on each bound queue with
``net_mp_open_rxq()`` and reads its net_iovs through its ``memory_map()``. Every provider but
``host`` (``is_host``) binds: header split on, ``--bind-queues``, the application reading with
``MSG_SOCK_DEVMEM``; the chunk shrinks to what its memory can hold. Departs: ``replay_setup``
is not a kernel interface (ncdevmem binds a dma-buf with netlink ``bind-rx``; the built-in
``dmabuf`` does that too).

The NIC's MTU: ``--mtu``; else, for a capture, the smallest that takes its largest frame
(frame length less the Ethernet header and VLAN tags, as the model driver measures it), at
least 1500 and at most 9000 (the driver's maximum: jumbo frames); 1500 for the built-in
workload. Frames longer than the MTU are dropped by the NIC (``rx_length_errors``); they are
counted from the trace beforehand, listed as skipped ``too_long``, and the report warns that
the streams stop at the first of them and the stream dumps are incomplete.

Validation: with the ncdevmem pattern (the built-in workload's, or ``--validate N`` for a
capture that carries it) every byte the application reads is compared with the pattern at its
stream offset; for the built-in workload every stream must also be complete (all its bytes, and
the end of the stream where its sender sent a FIN); for a capture, every direction's bytes read
(over every socket it opened) must be those the trace carries in order to a receiver, worked
out from its frames after the clock stops (``PacketTrace.in_order_bytes()``: from the SYN, or
the first segment of a flow caught mid-way, up to the first hole no frame fills or the FIN;
frames too long for the MTU do not count). It is ok only then and with bytes read: 0 bytes read
is skipped (nothing to read) or failed. Every loop is checked, warm-up ones too.

Figures: every counter of the report (page-pool-stats-get, qstats per queue and device, device
stats, TCP MIB, skb drop reasons, the recycle split, IOMMU stats and faults, the receiver's
devmem counters, validation bytes and resets) counts the timed loops only: they are read when
the first timed loop of a run starts and after each timed loop ends, outside the clocks,
subtracted, and summed over the runs; page-pool-get's ``inflight`` and ``inflight-mem`` are
gauges, the state after the last timed loop (``GAUGES``). The time figures (seconds per run,
Mpps, Gbit/s of payload, ns per frame) are each run's, reported as the median, min and max over
the runs with every run's loop seconds; they time this model on this CPU, not a kernel. No clock
covers output work: ``--dump-streams`` keeps its bytes, and ``--plot`` samples the pools, in one
loop more after the timed loops of the first run, which counts nothing. Ctrl-C prints the report
of the timed loops completed, marked interrupted. ``--compare A.json B.json ...`` replays nothing
and prints reports side by side (``Comparison``).

Stream files (``--dump-streams DIR``): for every TCP stream of the trace, ``stream-N-node0.bin``
and ``stream-N-node1.bin`` hold the bytes node 0 and node 1 sent, as the receiving socket
delivered them to the application in the untimed loop after the timed ones (for devmem, read
from the dma-buf). ``N``
and the nodes are tshark's: ``N`` is the ``tcp.stream`` index (conversations numbered in the
order of their first frame, see ``PacketTrace.tcp_streams()``), node 0 the side that sent the
stream's first frame, so ``tshark -r FILE -q -z follow,tcp,raw,N`` prints node 0's bytes on its
unindented lines and node 1's on the tab-indented ones. Where the capture has a gap (a segment
missing and never retransmitted), a stream stops at its first missing byte: what follows waits
in the out-of-order queue and is never delivered (tshark, when the other side acknowledged the
missing bytes, prints ``[N bytes missing in capture file]`` and carries on; a receiver does
not, and ``netmem.testing.tshark_follow`` stops there too). A stream
that only a frame this model skips shows (IP fragments, frames cut by the snapshot length) is
not numbered, and a 4-tuple reused within the capture is one stream (tshark numbers the reuse
anew), so tshark's indices can differ after such frames.

Exit codes: 0; 1 when validation fails or buffers are lost (inflight after teardown, leaks,
tokens not freed); 2 for bad input (a message on stderr names it, nothing is written),
including a provider that cannot be replayed (one line saying what it lacks); 130 when
interrupted (Ctrl-C).
"""
import argparse
import csv
import dataclasses
import errno
import functools
import importlib.metadata
import importlib.util
import io
import ipaddress
import json
import math
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from importlib import metadata

import numpy as np
import tqdm

from netmem import netlink
from netmem.errors import NetmemError
from netmem.flows import FlowParams, PacketTrace, generate
from netmem.machine import Machine
from netmem.netdev import ETH_MAX_MTU, ETH_MIN_MTU, RX_MAX_PENDING, NetDevice
from netmem.page_pool import PAGE_SIZE, PP_ALLOC_CACHE_SIZE, STATS_KEYS
from netmem.profile import STAGES, StageProfile
from netmem.provider import ENTRY_POINT_GROUP, ReplayBinding, get_provider, replay_args
from netmem.tcp import Receiver
from netmem.tools import Parser, size_arg, unwritable_dir

__all__ = ["DEFAULT_WORKLOAD", "GAUGES", "REPORT_SCHEMA", "TIME_FIGURES", "BadInput",
           "Comparison", "Config", "Report", "Rig", "main", "run"]

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT = 0, 1, 2
EXIT_INTERRUPTED = 130          # 128 + SIGINT, as a shell reports a command killed by Ctrl-C
MAX_QUEUES = 64                 # the model driver's queue limit (NetDevice)
ETH_DATA_LEN = 1500             # include/uapi/linux/if_ether.h: Ethernet's MTU (ether_setup())
MAX_CPUS = 64                   # NM_MAX_CPUS
NAPI_POLL_WEIGHT = 64           # the smallest chunk worth a drain: one NAPI budget
# Frames per receive() call before the application drains: it reads about as often as an
# application woken per NAPI round would. Bursts of 8192 frames overflow a 1024-entry
# ptr_ring (40% of the default workload's buffers then go back to the page allocator).
DEFAULT_CHUNK = 1024
# The application's recvmsg() buffer (ncdevmem reads 1 MiB at a time too): for devmem, the bytes
# described per call; the pattern check compares this much at once.
RECV_BUF = 1 << 20
# ncdevmem's control buffer, CMSG_SPACE(sizeof(struct iovec) * 10000): 4000 cmsgs of
# CMSG_SPACE(sizeof(struct dmabuf_cmsg)) = 40 bytes.
DEVMEM_ANCBUF = 16 + 16 * 10000
DEVMEM_CMSGS = DEVMEM_ANCBUF // 40
DEFAULT_WORKLOAD = FlowParams(connections=64, family="both", payload=1 << 16, validate=7,
                              loss=0.001, reorder=0.001, duplicate=0.001, overlap=0.0005)


class BadInput(NetmemError):
    """An option or input file netmem-replay cannot use (exit code 2)."""

    def __init__(self, msg, code=errno.EINVAL):
        super().__init__(code, msg)


# --------------------------------------------------------------------------------------------
# Configuration.


@dataclasses.dataclass
class Config:
    """What ``run()`` does; the command-line options one for one but ``--compare`` and
    ``--csv``, which compare reports instead (``None``: the default that depends on other
    options). ``runs`` repeats the timed part, each time on a fresh machine after its own
    ``warmup`` loops. ``connections``/``payload`` shape the built-in workload;
    ``validate`` is its ncdevmem pattern (``DEFAULT_WORKLOAD``'s unless given; 0: random
    bytes), or the pattern a ``pcap`` carries; ``header_split`` defaults to on for the devmem
    providers (which need it) and off for host pages; ``chunk`` is frames per receive call
    before the application drains (smaller with a dma-buf that cannot hold a whole chunk);
    ``mtu`` None fits the NIC to a ``pcap``'s largest frame (``_choose_mtu()``) and is
    ``ETH_DATA_LEN`` for the built-in workload; ``progress`` None shows the progress bar when
    stderr is a terminal; ``provider_args`` the keywords of the provider's ``replay_setup``
    (``--provider-arg KEY=VALUE``). From Python, ``provider`` may also be the provider's class
    itself, registered or not: a provider being written replays before it is packaged."""

    provider: str = "dmabuf"
    provider_args: dict = dataclasses.field(default_factory=dict)
    pcap: str | None = None
    connections: int | None = None
    payload: int | None = None
    validate: int | None = None
    queues: int = 2
    bind_queues: list | None = None
    header_split: str | None = None
    mtu: int | None = None
    iommu: str = "none"
    app_cpu: str = "other"
    pool_size: int = 1024
    dmabuf_size: int = 64 << 20
    dmabuf_layout: str = "contiguous"
    loops: int = 1
    warmup: int = 0
    runs: int = 1
    chunk: int = DEFAULT_CHUNK
    dump_streams: str | None = None
    json: str | None = None
    plot: str | None = None
    seed: int = 0
    progress: bool | None = None
    profile: bool = False

    @property
    def provider_name(self):
        """The provider as messages and the report name it: the registered name, or a class's
        ``module:qualname``."""
        return _qualname(self.provider) if isinstance(self.provider, type) else self.provider


def _check_config(cfg):
    """Refuse absurd options before anything is built (BadInput names the option). Returns
    the provider's class."""
    cls = _provider_class(cfg.provider, cfg.provider_args)
    binds = _binds(cls)
    if not 1 <= cfg.queues <= MAX_QUEUES:
        raise BadInput(f"--queues {cfg.queues}: a NIC has 1..{MAX_QUEUES} RX queues")
    if cfg.bind_queues is not None:
        if not binds:
            raise BadInput(f"--bind-queues: the {cfg.provider_name} provider binds no queues")
        if not cfg.bind_queues:
            raise BadInput("--bind-queues: no queue given")
        bad = [q for q in cfg.bind_queues if not 0 <= q < cfg.queues]
        if bad:
            raise BadInput(f"--bind-queues: queue {bad[0]} does not exist (the NIC has queues "
                           f"0..{cfg.queues - 1}, --queues {cfg.queues})", errno.ERANGE)
        if len(set(cfg.bind_queues)) != len(cfg.bind_queues):
            raise BadInput("--bind-queues: a queue is listed twice")
    if cfg.header_split not in (None, "on", "off"):
        raise BadInput(f"--header-split {cfg.header_split}: on or off")
    if binds and cfg.header_split == "off":
        raise BadInput(f"--header-split off: the {cfg.provider_name} provider needs header split "
                       "(net_mp_open_rxq() refuses a queue without tcp-data-split)")
    if cfg.mtu is not None and not ETH_MIN_MTU <= cfg.mtu <= ETH_MAX_MTU:
        raise BadInput(f"--mtu {cfg.mtu}: the NIC takes {ETH_MIN_MTU}..{ETH_MAX_MTU}")
    if cfg.iommu not in ("none", "passthrough", "dma-iommu"):
        raise BadInput(f"--iommu {cfg.iommu}: none, passthrough or dma-iommu")
    if cfg.app_cpu not in ("same", "other"):
        raise BadInput(f"--app-cpu {cfg.app_cpu}: same or other")
    if cfg.app_cpu == "other" and cfg.queues + 1 > MAX_CPUS:
        raise BadInput(f"--app-cpu other with {cfg.queues} queues: every queue has its own "
                       f"CPU and the application one more, and a machine has at most "
                       f"{MAX_CPUS} CPUs")
    if not 1 <= cfg.pool_size <= RX_MAX_PENDING:
        raise BadInput(f"--pool-size {cfg.pool_size}: the RX ring (and its page pool) holds "
                       f"1..{RX_MAX_PENDING} buffers")
    if cfg.dmabuf_size <= 0 or cfg.dmabuf_size % PAGE_SIZE:
        raise BadInput(f"--dmabuf-size {cfg.dmabuf_size}: a nonzero multiple of {PAGE_SIZE}")
    if cfg.dmabuf_layout not in ("contiguous", "pages", "random"):
        raise BadInput(f"--dmabuf-layout {cfg.dmabuf_layout}: contiguous, pages or random")
    for name in ("loops", "runs", "chunk"):
        if getattr(cfg, name) < 1:
            raise BadInput(f"--{name} {getattr(cfg, name)}: at least 1")
    if cfg.warmup < 0:
        raise BadInput(f"--warmup {cfg.warmup}: at least 0")
    if cfg.seed < 0:
        raise BadInput(f"--seed {cfg.seed}: at least 0")
    if cfg.validate is not None and cfg.validate != 0 and cfg.validate < 2:
        raise BadInput(f"--validate {cfg.validate}: ncdevmem's -v takes 2 or more (0: none)")
    if cfg.pcap is not None and (cfg.connections is not None or cfg.payload is not None):
        raise BadInput("--connections and --payload shape the built-in workload, not --pcap")
    return cls


def _provider_class(provider, args):
    """The class registered as ``--provider provider``, read from the entry points now (or
    ``provider`` itself, a class given from Python), whose ``replay_setup`` takes ``args``.
    BadInput when none is, it does not load, it has no ``replay_setup``, or the args do not
    fit it."""
    name = _qualname(provider) if isinstance(provider, type) else provider
    try:
        cls = provider if isinstance(provider, type) else get_provider(provider)
    except NetmemError as e:
        raise BadInput(f"--provider {name}: {e.strerror}; see --list-providers", e.errno) \
            from None
    except Exception as e:          # the provider's own module failed to import
        raise BadInput(f"--provider {name}: cannot load it: {type(e).__name__}: {e}",
                       errno.ENOENT) from None
    if not callable(getattr(cls, "replay_setup", None)):
        raise BadInput(f"--provider {name}: {_qualname(cls)} is not a netmem.provider."
                       "MemoryProvider and has no replay_setup(rig, **provider_args) "
                       "classmethod: subclass MemoryProvider or implement replay_setup",
                       errno.EOPNOTSUPP)
    sig = replay_args(cls)
    if sig is not None:
        try:
            sig.bind(**args)
        except TypeError as e:
            raise BadInput(f"--provider-arg: the {name} provider takes {_arg_list(sig)}: {e}") \
                from None
    return cls


def _binds(cls):
    """Whether the provider binds queues (header split, ``--bind-queues``, MSG_SOCK_DEVMEM):
    every one but the host-pages path."""
    return not getattr(cls, "is_host", False)


def _qualname(obj):
    return f"{getattr(obj, '__module__', '?')}:{getattr(obj, '__qualname__', repr(obj))}"


def _arg_list(sig):
    return ", ".join(str(p) for p in sig.parameters.values()) or "no --provider-arg"


def _provider_chunk(cfg, nbind, size):
    """The chunk for ``size`` bytes of provider memory: small enough that the payload buffers
    of a chunk (twice over, for the out-of-order queues) fit beside everything the pools of
    ``nbind`` bound queues may hold (ring, ptr_ring and alloc cache each). BadInput when not
    even one NAPI budget of frames fits: the memory is too small for the traffic."""
    per_frame = -(-max(cfg.mtu - 40, 1) // PAGE_SIZE)
    pools = nbind * (2 * cfg.pool_size + PP_ALLOC_CACHE_SIZE)
    frames = (size // PAGE_SIZE - pools) // (2 * per_frame)
    if frames < NAPI_POLL_WEIGHT:
        need = (pools + 2 * per_frame * NAPI_POLL_WEIGHT) * PAGE_SIZE
        raise BadInput(f"--provider {cfg.provider_name}: its memory, {size} bytes (--dmabuf-size "
                       f"for dmabuf and p2pdma), is too small for the traffic: the page pools of "
                       f"{nbind} bound queue(s) may hold {pools} buffers of {PAGE_SIZE} bytes "
                       f"(twice --pool-size {cfg.pool_size} plus {PP_ALLOC_CACHE_SIZE} cached, "
                       f"each) besides the frames in flight; use at least {need} bytes",
                       errno.ENOSPC)
    return min(cfg.chunk, frames)


def _check_outputs(cfg):
    """Every output must be writable before the run starts: nothing is written on bad input."""
    for opt, path in (("--json", cfg.json), ("--plot", cfg.plot)):
        if path is not None:
            _check_output(opt, path)
    if cfg.plot is not None and importlib.util.find_spec("matplotlib") is None:
        raise BadInput("--plot needs matplotlib (pip install 'netmem[plot]')", errno.ENOENT)
    if cfg.dump_streams is not None:
        d = cfg.dump_streams
        if os.path.exists(d) and not os.path.isdir(d):
            raise BadInput(f"--dump-streams {d}: exists and is not a directory", errno.ENOTDIR)
        # Report.write_streams(): a new directory beside it, its files moved into it
        _check_writable_dir("--dump-streams", d, os.path.dirname(os.path.abspath(d)))
        if os.path.isdir(d):
            _check_writable_dir("--dump-streams", d, d)


def _check_writable_dir(opt, path, d):
    """BadInput naming ``opt`` unless this process may create files in directory ``d``."""
    why = unwritable_dir(d)
    if why is not None:
        raise BadInput(f"{opt} {path}: {why[1]}", why[0])


def _check_output(opt, path):
    """``path`` of option ``opt`` can be written (BadInput otherwise)."""
    parent = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        raise BadInput(f"{opt} {path}: is a directory", errno.EISDIR)
    if os.path.exists(path) and not os.path.isfile(path):      # a device or a pipe
        if not os.access(path, os.W_OK):
            raise BadInput(f"{opt} {path}: cannot write it", errno.EACCES)
    else:
        _check_writable_dir(opt, path, parent)


# --------------------------------------------------------------------------------------------
# The trace.


def _load_trace(cfg):
    """(trace, workload FlowParams or None, expected stream lengths or None)."""
    if cfg.pcap is not None:
        try:
            trace = PacketTrace.from_pcap(cfg.pcap)
        except NetmemError as e:
            raise BadInput(f"--pcap {e.strerror}", e.errno) from None
        if trace.cut_short:
            raise BadInput(f"--pcap from_pcap: {cfg.pcap}: truncated: the file ends in the "
                           f"middle of a record (after {len(trace)} TCP frames)")
        if len(trace) + sum(trace.skipped.values()) == 0:
            raise BadInput(f"--pcap from_pcap: {cfg.pcap}: holds no frames")
        return trace, None, None
    fields = {"mtu": ETH_DATA_LEN if cfg.mtu is None else cfg.mtu, "seed": cfg.seed}
    if cfg.connections is not None:
        fields["connections"] = cfg.connections
    if cfg.payload is not None:
        fields["payload"] = cfg.payload
    if cfg.validate is not None:
        fields["validate"] = cfg.validate or None
    try:
        params = dataclasses.replace(DEFAULT_WORKLOAD, **fields)
    except NetmemError as e:
        raise BadInput(f"workload: {e.strerror}", e.errno) from None
    trace, expected = _workload(params)
    return trace, params, expected


@functools.lru_cache(maxsize=2)
def _workload(params):
    """The built-in workload's trace and each stream's length, by (sender, receiver) end;
    kept for the next run with the same parameters (a benchmark runs it again and again, and
    a trace is read-only)."""
    flows = generate(params)
    expected = {}
    for c in flows.connections:
        client, server = _end(*c.client), _end(*c.server)
        expected[client, server] = len(c.to_server)
        expected[server, client] = len(c.to_client)
    return flows.trace, expected


def _end(addr, port):
    return str(ipaddress.ip_address(addr)), int(port)


@dataclasses.dataclass(frozen=True)
class _Mtu:
    """The NIC's MTU for a run and why (``source``: ``option``, from ``--mtu``; ``capture``,
    fitted to the capture; ``workload``, the built-in workload's ``ETH_DATA_LEN``), the trace's
    largest frame as the NIC measures it (``largest``: bytes at L3, ``PacketTrace.l3_lengths()``)
    and the frames longer than the MTU (``too_long``: bool per frame), which the NIC drops as
    ``rx_length_errors``."""

    mtu: int
    source: str
    largest: int
    too_long: np.ndarray

    def warning(self):
        """What the frames too long for the MTU cost, or None."""
        n = int(self.too_long.sum())
        if not n:
            return None
        hint = (f"; --mtu {self.largest} replays them" if self.largest <= ETH_MAX_MTU else
                f"; the NIC takes at most {ETH_MAX_MTU}")
        return (f"{n} frame(s) of the trace, up to {self.largest} bytes at L3, are longer than "
                f"MTU {self.mtu}: the NIC drops them (rx_length_errors), so every stream stops "
                f"at its first frame lost and the stream dumps are incomplete{hint}")


def _mtu_why(source, largest):
    """Why the NIC has its MTU, for the report's first line (``_Mtu``'s source and largest)."""
    if source == "option":
        return "--mtu"
    if source == "workload":
        return "Ethernet's, for the built-in workload"
    what = f"the capture's largest TCP frame is {largest} bytes at L3"
    if largest > ETH_MAX_MTU:
        return f"the most the NIC takes: {what}"
    return f"Ethernet's: {what}" if largest <= ETH_DATA_LEN else f"fitted to the capture: {what}"


def _choose_mtu(cfg, trace):
    """(``cfg`` with its MTU, ``_Mtu``). ``--mtu`` wins; else a capture gets the smallest MTU
    that takes its largest frame, at least ``ETH_DATA_LEN`` and at most ``ETH_MAX_MTU`` (the
    model driver's range: jumbo frames up to 9000), and the built-in workload
    ``ETH_DATA_LEN``. The frames longer than the MTU are counted here, before the replay, with
    the arithmetic of the driver's drop (``nm_rx_frame()``: longer than ``mtu + ETH_HLEN +
    VLAN tags``)."""
    l3 = trace.l3_lengths()
    largest = int(l3.max()) if len(l3) else 0
    if cfg.mtu is not None:
        mtu, source = cfg.mtu, "option"
    elif cfg.pcap is None:
        mtu, source = ETH_DATA_LEN, "workload"
    else:
        mtu, source = min(max(largest, ETH_DATA_LEN), ETH_MAX_MTU), "capture"
    cfg = dataclasses.replace(cfg, mtu=mtu)
    return cfg, _Mtu(mtu, source, largest, l3 > mtu)


# --------------------------------------------------------------------------------------------
# The machine: one NIC and one GPU behind a PCIe switch, as devmem TCP setups put them.


class Rig:
    """The simulated system of one run, which the provider's ``replay_setup(rig,
    **provider_args)`` binds to. Public, for providers:

    - ``machine``: the ``Machine``; ``nic``: its ``NetDevice`` ``eth1`` (``cfg.queues`` RX
      queues, header split on for a binding provider); ``gpu``: the ``PciEndpoint`` ``gpu0``
      behind the same PCIe switch (no BAR until a provider gives it one).
    - ``queues``: the indices of the RX queues the provider binds, in the order given
      (``--bind-queues``; every queue by default; none for host pages).
    - ``cfg``: the run's ``Config``; ``seed``: ``cfg.seed``, for the provider's randomness.
    - ``on_teardown(fn)``: ``fn()`` runs at teardown, after every socket is closed and before
      the NIC unregisters; the steps run in reverse order of registration, also when setup
      failed half way.
    - ``steer_to_bound()``: RSS over ``queues`` only.

    The replay's own: ``binds``, ``header_split``, ``app_cpu``, ``chunk``, ``binding`` (what
    ``replay_setup`` returned), and ``bind(cls)`` and ``teardown()``, which ``run()`` calls."""

    def __init__(self, cfg, binds):
        self.cfg = cfg
        self.seed = cfg.seed
        self.binds = binds
        split = cfg.header_split == "on" or (cfg.header_split is None and binds)
        self.header_split = split
        self.queues = (list(cfg.bind_queues) if cfg.bind_queues is not None else
                       list(range(cfg.queues))) if binds else []
        cpus = 1 if cfg.app_cpu == "same" else cfg.queues + 1
        self.app_cpu = 0 if cfg.app_cpu == "same" else cfg.queues
        self.machine = Machine(memory=_memory_for(cfg, split), cpus=cpus, iommu=cfg.iommu,
                               seed=cfg.seed)
        self.machine.tcp.open_on_data = True    # a capture may start in the middle of a flow
        pci = self.machine.pci
        sw = pci.add_switch(pci.add_root_port(pci.host_bridges[0]))
        self.gpu = pci.add_endpoint(sw, "gpu0", kind="gpu")
        nic_ep = pci.add_endpoint(sw, "eth1", kind="nic")
        self.nic = NetDevice(self.machine, "eth1", num_rx_queues=cfg.queues, pcidev=nic_ep,
                             mtu=cfg.mtu)
        try:
            self.nic.ethtool.set_ringparam(tcp_data_split="on" if split else "off",
                                           rx_ring_size=cfg.pool_size)
        except NetmemError:
            self.nic.unregister()
            raise
        self.chunk = cfg.chunk
        self.binding = ReplayBinding()
        self._undo = []

    def on_teardown(self, fn):
        """Run ``fn()`` at teardown (the last registered first)."""
        self._undo.append(fn)

    def steer_to_bound(self):
        """RSS over the bound queues only: the indirection table lists them in turn."""
        size = len(self.nic.ethtool.get_rxfh()["indir"])
        self.nic.ethtool.set_rxfh(indir=[self.queues[i % len(self.queues)]
                                         for i in range(size)])

    def bind(self, cls):
        """Bind the provider with ``cls.replay_setup(self, **cfg.provider_args)``, keep its
        ``ReplayBinding`` and size the chunk for its memory. BadInput for what setup refuses
        (what it did is undone at teardown)."""
        cfg = self.cfg
        try:
            binding = cls.replay_setup(self, **cfg.provider_args)
            if not isinstance(binding, ReplayBinding):
                raise NetmemError(errno.EINVAL, f"replay_setup() returned {binding!r}, not a "
                                                "netmem.provider.ReplayBinding")
        except NetmemError as e:
            raise BadInput(f"--provider {cfg.provider_name}: {e.strerror}", e.errno) from None
        self.binding = binding
        if binding.memory_map is not None:
            self.chunk = _provider_chunk(cfg, len(self.queues), binding.size)

    def teardown(self):
        """Close every socket, run the ``on_teardown`` steps, unregister the NIC, let deferred
        work run."""
        with self.machine.on_cpu(self.app_cpu, softirq=False):
            for sk in self.machine.tcp.sockets():
                sk.close()
        while self._undo:
            self._undo.pop()()
        self.nic.unregister()
        self.machine.quiesce()


def _memory_for(cfg, split):
    """Host memory for the pools of every queue (ring, ptr_ring, alloc cache; header pools
    too with header split) and the frames of a few chunks held by sockets, at least 1 GiB
    (lazily committed: only touched pages cost)."""
    per_pool = 2 * cfg.pool_size + PP_ALLOC_CACHE_SIZE
    pages = cfg.queues * per_pool * (2 if split else 1) + 4 * cfg.chunk
    return max(1 << 30, -(-pages * PAGE_SIZE * 2 // (1 << 30)) << 30)


# --------------------------------------------------------------------------------------------
# The application.


class _App:
    """The application side: a ``netmem.tcp.Receiver`` (pyx/receiver.pxi) reads every socket the
    receive path woke, in C, as ncdevmem does (devmem: ``recvmsg(MSG_SOCK_DEVMEM)``, each
    dma-buf frag read through the provider's memory and checked against the pattern, the tokens
    given back with ``SO_DEVMEM_DONTNEED``); here are its state at the end of each loop and,
    after the clocks stop, the verdict: pattern, stream lengths and ends, the streams kept for
    ``--dump-streams`` (by the untimed loop ``_observe()`` replays, with ``rx.keep`` on).
    ``expected``: each stream's length by (sender, receiver) end: the built-in workload's, or
    with ``capture`` what a capture's trace carries in order (``PacketTrace.in_order_bytes()``,
    checked as the sum over every socket a direction opened)."""

    def __init__(self, rig, pattern, expected, capture=False):
        self.pattern = pattern
        b = rig.binding
        try:
            self.rx = Receiver(rig.machine, dmabuf=b.memory_map, dmabuf_id=b.dmabuf_id or 0,
                               bufsize=RECV_BUF, cmsgs=DEVMEM_CMSGS, validate=pattern or None)
        except NetmemError as e:         # a memory map outside RAM and the BARs
            raise BadInput(f"--provider {rig.cfg.provider_name}: memory_map(): {e.strerror}",
                           e.errno) from None
        self.dmabuf_id = b.dmabuf_id
        self.expected = expected
        self.capture = capture
        self.passes = []            # the streams at the end of each loop
        self.kept = None            # the kept loop's (streams, data, slots, lengths)
        self.streams = {}
        self.failures = []
        self.nfail = 0
        self._resets = 0
        self._counted = 0           # passes whose resets are in _resets

    def drain(self):
        self.rx.drain()

    def end_pass(self):
        """The end of a loop: the streams' state, every socket closed; the bytes kept, if the
        receiver kept them in this loop."""
        cols = self.rx.close_all()
        if self.rx.keep:
            self.kept = (cols, *self.rx.kept())
            self.rx.keep = False
        self.passes.append(cols)

    def resets(self):
        """Streams reset by their peer (ECONNRESET at close) in the loops so far, counted
        outside the clocks (between loops, when the counters are read)."""
        for cols in self.passes[self._counted:]:
            self._resets += int((cols["err"] == errno.ECONNRESET).sum())
        self._counted = len(self.passes)
        return self._resets

    def fail(self, msg):
        self.nfail += 1
        if len(self.failures) < 10:
            self.failures.append(msg)

    def check(self):
        """After the clocks: every loop's streams (warm-up and untimed ones too) against the
        pattern and the expected lengths, the receiver's own counts, and the kept loop's bytes
        split into streams."""
        c = self.rx.counters
        if c["foreign-frags"]:
            self.fail(f"{c['foreign-frags']} cmsg(s) name dma-buf {c['foreign-id']}, not the "
                      f"bound {self.dmabuf_id}")
        if c["read-faults"]:
            self.fail(f"{c['read-faults']} dma-buf frag(s) outside the provider's memory")
        if c["linear-mismatch"]:
            self.fail(f"{c['linear-mismatch']} recvmsg(MSG_SOCK_DEVMEM) call(s) copied bytes "
                      "their SCM_DEVMEM_LINEAR cmsgs do not add up to")
        if c["dontneed-short"]:
            self.fail(f"{c['dontneed-short']} SO_DEVMEM_DONTNEED call(s) freed fewer frags "
                      "than given")
        for loop, cols in enumerate(self.passes):
            self._check_pass(loop, cols)
        if self.kept is not None:
            self.streams = _split_streams(*self.kept)

    def _check_pass(self, loop, cols):
        keys = _stream_keys(cols)
        for i in np.flatnonzero(cols["bad"] >= 0):
            self.fail(f"loop {loop}: {_name(keys[i])}: byte {int(cols['bad'][i])} differs "
                      f"from the ncdevmem -v {self.pattern} pattern")
        if self.expected is None:
            return
        if self.capture:
            self._check_capture_pass(loop, keys, cols)
            return
        seen = set()
        for i, key in enumerate(keys):
            want = self.expected.get(key)
            if want is None:
                continue
            seen.add(key)
            pos, eof = int(cols["pos"][i]), bool(cols["eof"][i])
            if pos != want or (want and not eof):
                self.fail(f"loop {loop}: {_name(key)}: {pos} of {want} bytes read"
                          f"{'' if eof else ', no end of stream'}")
        for key, want in self.expected.items():
            if want and key not in seen:
                self.fail(f"loop {loop}: {_name(key)}: no socket received its {want} bytes")

    def _check_capture_pass(self, loop, keys, cols):
        """A capture's loop: each direction's bytes read, over every socket it opened (a RST
        or a reused 4-tuple opens another), against what the trace carries in order."""
        got = {}
        for key, pos in zip(keys, cols["pos"].tolist(), strict=True):
            got[key] = got.get(key, 0) + pos
        for key in sorted(got.keys() | self.expected.keys()):
            want, read = self.expected.get(key, 0), got.get(key, 0)
            if read != want:
                self.fail(f"loop {loop}: {_name(key)}: {read} bytes read, the capture carries "
                          f"{want} in order")


def _stream_keys(cols):
    """(remote end, local end) of each socket in ``Receiver.close_all()`` columns."""
    out = []
    for fam, la, ra, lp, rp in zip(cols["family"].tolist(), cols["laddr"], cols["raddr"],
                                   cols["lport"].tolist(), cols["rport"].tolist(), strict=True):
        n = 4 if fam == 4 else 16
        out.append(((str(ipaddress.ip_address(ra[:n].tobytes())), rp),
                    (str(ipaddress.ip_address(la[:n].tobytes())), lp)))
    return out


def _name(key):
    (ra, rp), (la, lp) = key
    return f"{ra}:{rp} -> {la}:{lp}"


def _split_streams(cols, data, slots, lengths):
    """The kept bytes by (remote, local) end: each run goes to its slot's socket."""
    by_slot = dict(zip(cols["slot"].tolist(), _stream_keys(cols), strict=True))
    streams = {}
    ends = np.cumsum(lengths.astype(np.int64))
    for slot, end, n in zip(slots.tolist(), ends.tolist(), lengths.tolist(), strict=True):
        streams.setdefault(by_slot[slot], []).append(data[end - n:end].tobytes())
    return streams


# --------------------------------------------------------------------------------------------
# The run.


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


def _recycle_split(stats):
    """(cache, ring, released) of page_pool's recycle counters: ``recycle_cached``,
    ``recycle_ring``, and what left the pool (``recycle_ring_full`` + ``recycle_released_refcnt``;
    a ``recycle_cache_full`` buffer went on to the ring and counts there)."""
    return (stats["recycle_cached"], stats["recycle_ring"],
            stats["recycle_ring_full"] + stats["recycle_released_refcnt"])


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
    interrupted; with none completed, KeyboardInterrupt goes on (after teardown)."""
    cls = _check_config(cfg)
    trace, params, expected = _load_trace(cfg)
    cfg, mtu = _choose_mtu(cfg, trace)
    pattern = (params.validate if params is not None else cfg.validate) or None
    capture = params is None
    if capture:         # what the capture carries in order: outside every clock
        expected = trace.in_order_bytes(~mtu.too_long)
    observe = cfg.dump_streams is not None or cfg.plot is not None
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
    return Report(doc, streams, first.timeline)


def _run_once(cfg, cls, trace, pattern, expected, capture, one, tick, first):
    """One run into ``one``: a fresh machine and provider ``cls`` bound to it, the loops, the
    checks, the teardown. The ``first`` run is the one ``--profile`` profiles and the one that
    replays the untimed loop for the outputs after the timed ones."""
    observe = first and (cfg.dump_streams is not None or cfg.plot is not None)
    try:
        rig = Rig(cfg, _binds(cls))
    except NetmemError as e:
        raise BadInput(str(e), e.errno) from None
    try:
        rig.bind(cls)
        app = _App(rig, pattern, expected, capture)
        one.layout = _layout(rig)
        try:
            profile = (StageProfile(rig.machine, len(trace), cfg.loops)
                       if first and cfg.profile else None)
            _replay(rig, app, trace, one, tick, profile)
            if observe:
                timeline = _Timeline(rig, trace) if cfg.plot is not None else None
                _observe(rig, app, trace, tick, timeline)
                one.timeline = timeline
        except KeyboardInterrupt:
            one.interrupted = True
        app.check()
        one.streams = app.streams if app.kept is not None else None
        one.nfail, one.failures, one.checked = app.nfail, app.failures, True
    finally:
        rig.teardown()
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


# --------------------------------------------------------------------------------------------
# The counters of the timed loops.


#: The receiver's counters the report shows (``devmem``, and ``bytes`` for the validation).
_RECEIVER_COUNTERS = ("recvmsg-calls", "dmabuf-frags", "linear-frags", "tokens-returned",
                      "dontneed-calls")
#: What the report shows that is state at the end of the last counted timed loop, not a count.
GAUGES = ("queues[].page-pool.inflight", "queues[].page-pool.inflight-mem",
          "queues[].header-page-pool.inflight", "queues[].header-page-pool.inflight-mem")


def _snapshot(rig, app):
    """What the report counts, as it stands: ``(counters, pools)``. ``counters`` nests dicts
    of ints, each a count since the machine started, so two snapshots subtract into what
    happened between them (``_delta``); ``pools`` is page-pool-get of each pool of the NIC:
    identity and the gauges ``inflight``, ``inflight-mem``."""
    m, nic = rig.machine, rig.nic
    pools = [p for q in nic.rx_queues[:nic.real_num_rx_queues]
             for p in (q.page_pool, q.header_pool) if p is not None]
    rx = app.rx.counters
    counters = {
        "page-pool": {p.id: p.stats for p in pools},
        "qstats": {r["queue-id"]: {k: r[k] for k, _ in netlink.QSTATS}
                   for r in netlink.qstats_get(m, nic.ifindex, scope="queue")},
        "qstats-device": {k: v for k, v in netlink.qstats_get(m, nic.ifindex)[0].items()
                          if k != "ifindex"},
        "device": nic.stats(),
        "skb-drop-reasons": m.tcp.drop_reasons,
        "tcp-mib": m.tcp.mib,
        "iommu": m.iommu.stats,
        "iommu-faults": len(m.iommu.faults),
        "receiver": {k: rx[k] for k in ("bytes", *_RECEIVER_COUNTERS)},
        "resets": app.resets(),
    }
    ids = {p.id for p in pools}
    return counters, {p["id"]: p for p in netlink.page_pool_get(m) if p["id"] in ids}


def _counted(runs):
    """The timed loops' counters: each run's after its last completed timed loop minus those
    when its first started, summed over the runs that completed one or more."""
    return functools.reduce(_combine, (_delta(r.end, r.start) for r in runs if r.loop_seconds))


def _delta(now, then):
    """``now - then`` over nested dicts of counters (a key ``then`` lacks counts 0)."""
    return _combine(now, then, -1)


def _combine(a, b, sign=1):
    """``a + sign * b`` over nested dicts of counters, over the keys of both."""
    if isinstance(a, dict) or isinstance(b, dict):
        a, b = a or {}, b or {}
        return {k: _combine(a.get(k), b.get(k), sign) for k in {**a, **b}}
    return (a or 0) + sign * (b or 0)


def _layout(rig):
    """What the report says of the machine: the NIC's ifindex, the bound queues, header split,
    the chunk; each queue's id, NAPI id, whether it is bound, and its pools' ids by role."""
    nic = rig.nic
    queues = [{"id": q.idx, "napi-id": q.napi.napi_id, "bound": q.idx in rig.queues,
               "pools": {role: pool.id for role, pool in (("page-pool", q.page_pool),
                                                          ("header-page-pool", q.header_pool))
                         if pool is not None}}
              for q in nic.rx_queues[:nic.real_num_rx_queues]]
    return {"ifindex": nic.ifindex, "bind": rig.queues, "header-split": rig.header_split,
            "chunk": rig.chunk, "binds": rig.binds, "memory": rig.binding.size or None,
            "queues": queues}


# --------------------------------------------------------------------------------------------
# The report.


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
        "max-rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
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
    from the trace before the replay; once per loop in ``drops``)."""
    return {"frames": len(trace), "bytes": int(trace.lengths.sum(dtype=np.uint64)),
            "payload-bytes": trace.payload_bytes, "largest-l3-length": mtu.largest,
            "skipped": {**trace.skipped, "too_long": int(mtu.too_long.sum())}}


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
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
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


def _stream_files(trace, streams):
    """File name -> bytes for ``--dump-streams``: both nodes of every stream of the trace."""
    out = {}
    for n, (node0, node1) in enumerate(trace.tcp_streams()):
        for k, (src, dst) in enumerate(((node0, node1), (node1, node0))):
            out[f"stream-{n}-node{k}.bin"] = b"".join(streams.get((src, dst), []))
    return out


class Report:
    """What ``run()`` measured: ``doc`` (the ``--json`` document), ``streams`` (file name ->
    bytes, with ``--dump-streams``), ``timeline`` (with ``--plot``); ``exit_code``; the
    writers of each output, all through a temporary file renamed at the end."""

    def __init__(self, doc, streams=None, timeline=None):
        self.doc = doc
        self.streams = streams
        self.timeline = timeline

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
        """Over trace time, per queue, in the untimed loop after the timed ones (``_observe()``):
        its payload pool's occupancy (alloc cache, ptr_ring, buffers out of the pool) and where
        each interval's recycled buffers went; the run's configuration in the title."""
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        t, data = self.timeline.arrays()
        unit = "s" if len(t) and t[-1] >= 1 else "ms"
        t = t if unit == "s" else t * 1e3
        nq = len(self.timeline.queues)
        fig, axes = plt.subplots(2, nq, figsize=(4 * nq + 1, 6), squeeze=False, sharex=True)
        for i, q in enumerate(self.timeline.queues):
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
        fig.suptitle(_plot_title(self.doc["config"]), fontsize="medium")
        fig.tight_layout()
        try:
            _write_atomic(path, lambda f: fig.savefig(f, format="png"))
        finally:
            plt.close(fig)

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
        src = c["pcap"] or _describe_workload(c["workload"])
        lines.append(f"trace: {src}: {tr['frames']} frames, {tr['bytes']} bytes, TCP payload "
                     f"{tr['payload-bytes']} bytes")
        skipped = {k: v for k, v in tr["skipped"].items() if v}
        lines.append("frames skipped: " + (", ".join(f"{v} {k}" for k, v in skipped.items())
                                           if skipped else "none"))
        lines += [f"warning: {w}" for w in d["warnings"]]
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


def _plot_title(c):
    """The configuration a ``--plot`` figure shows in its title."""
    trace = (os.path.basename(c["pcap"]) if c["pcap"] else
             f"built-in workload ({c['workload']['connections']} connections)")
    return (f"netmem-replay: {trace}; {c['provider']} provider, {c['queues']} queue(s), MTU "
            f"{c['mtu']}, iommu {c['iommu']}; {c['loops']} loop(s) after {c['warmup']} "
            "warm-up")


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


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _write_atomic(path, write):
    """``write(f)`` into a temporary file beside ``path`` (binary), renamed to ``path`` once
    complete, with the permissions a new file gets. A ``path`` that exists and is no regular
    file (``/dev/stdout``, a pipe) is written in place: a rename would replace the device."""
    if os.path.exists(path) and not os.path.isfile(path):
        with open(path, "wb") as f:
            write(f)
        return
    fd, tmp = tempfile.mkstemp(prefix=".netmem-replay-", dir=os.path.dirname(
        os.path.abspath(path)))
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


_COUNT = {"type": "integer", "minimum": 0}
_COUNTS = {"type": "object", "additionalProperties": _COUNT}
_NUMBER = {"type": "number", "minimum": 0}
_POOL_STATS = [k.replace("_", "-") for k in STATS_KEYS]
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
                                                 "largest-l3-length", "skipped"],
                  "properties": {"frames": _COUNT, "bytes": _COUNT, "payload-bytes": _COUNT,
                                 "largest-l3-length": _COUNT,
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
    },
}


# --------------------------------------------------------------------------------------------
# Comparing reports.


def _load_report(path):
    """The ``--json`` report at ``path``, checked against ``REPORT_SCHEMA`` (BadInput naming
    the file and the check that failed)."""
    try:
        import jsonschema
    except ImportError:
        raise BadInput("--compare needs jsonschema to check the reports (pip install "
                       "'netmem[compare]')", errno.ENOENT) from None
    try:
        with open(path, "rb") as f:
            doc = json.load(f)
    except OSError as e:
        raise BadInput(f"--compare {path}: {e.strerror}", e.errno) from None
    except ValueError as e:                 # not JSON, or not UTF-8
        raise BadInput(f"--compare {path}: not JSON ({e})") from None
    error = jsonschema.exceptions.best_match(
        jsonschema.Draft202012Validator(REPORT_SCHEMA).iter_errors(doc))
    if error is not None:
        where = "/".join(map(str, error.absolute_path)) or "the top level"
        msg = " ".join(error.message.split())
        raise BadInput(f"--compare {path}: not a netmem-replay report (REPORT_SCHEMA, at "
                       f"{where}: {msg[:120]}{'...' if len(msg) > 120 else ''})")
    return doc


def _change(value, base):
    """``delta`` and ``delta-percent`` of ``value`` from ``base`` (None where undefined)."""
    if value is None or base is None:
        return {"delta": None, "delta-percent": None}
    return {"delta": value - base, "delta-percent": 100 * (value - base) / base if base else None}


def _beyond(doc, base, f):
    """Whether figure ``f`` of ``doc`` and ``base`` differ by more than their spread (the
    [min, max] ranges do not overlap); None when either has fewer than two runs."""
    if min(len(_spread_of(d["replay"]["runs"], d["config"]["loops"])) for d in (doc, base)) < 2:
        return None
    a, b = doc["replay"], base["replay"]
    return a["max"][f] < b["min"][f] or a["min"][f] > b["max"][f]


def _describe_report(doc):
    c, e = doc["config"], doc["environment"]
    w = c["workload"]
    src = c["pcap"] or f"workload {w['connections']} x {w['payload']} bytes, seed {w['seed']}"
    git = f" git {e['git-commit'][:12]}{'+' if e['git-dirty'] else ''}" if e["git-commit"] else ""
    return (f"{c['provider']}, {c['queues']} queue(s), header split "
            f"{'on' if c['header-split'] else 'off'}, MTU {c['mtu']}, iommu {c['iommu']}, "
            f"app-cpu {c['app-cpu']}; {src}; {len(doc['replay']['runs'])} run(s) of "
            f"{c['loops']} loop(s) after {c['warmup']} warm-up; netmem {e['netmem']}{git}, "
            f"{e['cpu-model'] or 'CPU model unknown'}"
            + ("; INTERRUPTED" if doc["interrupted"] else ""))


def _columns(rows):
    """Rows of cells as aligned lines: the first column to the left, the others right."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return ["  " + "  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                             for i, (c, w) in enumerate(zip(r, widths, strict=True))).rstrip()
            for r in rows]


class Comparison:
    """``--json`` reports side by side, the first the baseline. ``rows``: one per figure and
    report (``figure``, ``unit``, ``file``, ``value``, ``min``, ``max``, ``delta``,
    ``delta-percent``, ``beyond-spread``): each time figure as its median with min and max over
    the report's runs, beyond the spread when its range and the baseline's do not overlap
    (None with fewer than two runs: no spread); each counter per 1,000 frames of the timed
    loops (counters zero in every report left out)."""

    CSV_FIELDS = ("figure", "unit", "file", "value", "min", "max", "delta", "delta-percent",
                  "beyond-spread")

    def __init__(self, paths, docs):
        self.paths = list(paths)
        self.docs = docs
        self.rows = self._time_rows() + self._counter_rows()

    def _time_rows(self):
        base = self.docs[0]
        rows = []
        for f, label, _ in _TIME_ROWS:
            for i, (path, doc) in enumerate(zip(self.paths, self.docs, strict=True)):
                r = doc["replay"]
                rows.append({"figure": f"replay.{f}", "unit": label, "file": path,
                             "value": r[f], "min": r["min"][f], "max": r["max"][f],
                             **_change(r[f] if i else None, base["replay"][f]),
                             "beyond-spread": _beyond(doc, base, f) if i else None})
        return rows

    def _counter_rows(self):
        flat = [_report_counters(d) for d in self.docs]
        frames = [d["replay"]["frames"] for d in self.docs]
        rows = []
        for name in dict.fromkeys(k for f in flat for k in f):
            if not any(f.get(name) for f in flat):
                continue
            values = [f.get(name, 0) * 1000 / n if n else None
                      for f, n in zip(flat, frames, strict=True)]
            rows += [{"figure": name, "unit": "per 1000 frames", "file": path, "value": v,
                      "min": None, "max": None, **_change(v if i else None, values[0]),
                      "beyond-spread": None}
                     for i, (path, v) in enumerate(zip(self.paths, values, strict=True))]
        return rows

    def format_table(self):
        """The comparison as text, the form ``netmem-replay --compare`` prints."""
        names = [chr(ord("A") + i) if i < 26 else f"R{i}" for i in range(len(self.docs))]
        lines = [f"netmem-replay --compare: {len(self.docs)} reports, {names[0]} the baseline"]
        lines += [f"  {n}  {p}: {_describe_report(d)}"
                  for n, p, d in zip(names, self.paths, self.docs, strict=True)]
        head = ["", names[0]] + [c for n in names[1:] for c in (n, f"{n} vs {names[0]}")]
        k = len(self.docs)
        lines += ["", ("time figures: median [min-max] over each report's runs; beyond: the "
                       "ranges do not overlap (within: they do)")]
        time = [self.rows[i:i + k] for i in range(0, len(_TIME_ROWS) * k, k)]
        fmts = [fmt for _, _, fmt in _TIME_ROWS]
        lines += _columns([head] + [_cells(group, _time_cell(fmt), _time_change)
                                    for group, fmt in zip(time, fmts, strict=True)])
        lines += ["", ("counters per 1,000 frames of the timed loops (zero in every report: "
                       "left out):")]
        rest = self.rows[len(_TIME_ROWS) * k:]
        lines += _columns([head] + [_cells(rest[i:i + k], _count_cell, _count_change)
                                    for i in range(0, len(rest), k)])
        return "\n".join(lines)

    def write_csv(self, path):
        """The rows as CSV, one line per figure and report (empty fields for None)."""
        out = io.StringIO()
        w = csv.DictWriter(out, self.CSV_FIELDS, lineterminator="\n")
        w.writeheader()
        for row in self.rows:
            b = row["beyond-spread"]
            w.writerow({**{k: "" if v is None else v for k, v in row.items()},
                        "beyond-spread": "" if b is None else ("yes" if b else "no")})
        _write_atomic(path, lambda f: f.write(out.getvalue().encode()))


def _cells(group, cell, change):
    """One figure's text cells: its label, the baseline's value, then each other report's
    value and its change from the baseline."""
    out = [group[0]["figure"] if group[0]["unit"] == "per 1000 frames" else group[0]["unit"],
           cell(group[0])]
    for row in group[1:]:
        out += [cell(row), change(row)]
    return out


def _time_cell(fmt):
    return lambda r: f"{r['value']:{fmt}} [{r['min']:{fmt}}-{r['max']:{fmt}}]"


def _time_change(r):
    pct = "n/a" if r["delta-percent"] is None else f"{r['delta-percent']:+.1f}%"
    spread = {None: "(1 run: no spread)", True: "beyond", False: "within"}
    return f"{pct} {spread[r['beyond-spread']]}"


def _count_cell(r):
    return "-" if r["value"] is None else f"{r['value']:.2f}"


def _count_change(r):
    if r["delta"] is None:
        return "-"
    if not r["delta"]:
        return "="
    if r["delta-percent"] is None:
        return f"{r['delta']:+.2f} (new)"
    return f"{r['delta']:+.2f} ({r['delta-percent']:+.1f}%)"


# --------------------------------------------------------------------------------------------
# The command line.


def _queue_list(text):
    """``0,2-3`` -> [0, 2, 3]."""
    out = []
    try:
        for part in text.split(","):
            lo, _, hi = part.strip().partition("-")
            out += list(range(int(lo), int(hi or lo) + 1))
    except ValueError:
        raise argparse.ArgumentTypeError(f"cannot read queue list {text!r} (use e.g. 0,2-3)") \
            from None
    return out


def _provider_arg(text):
    """``KEY=VALUE`` -> (key, value): the value an int (``4096``, ``0x200000``), a finite
    float, a size (``16MiB``), else the string (``nan`` stays one: JSON has no NaN)."""
    key, eq, value = text.partition("=")
    if not eq or not key.isidentifier():
        raise argparse.ArgumentTypeError(f"cannot read {text!r}: KEY=VALUE, KEY a Python "
                                         "identifier")
    for parse in (int, functools.partial(int, base=0), _finite_float, size_arg):
        parsed = _parsed(parse, value)
        if parsed is not None:
            return key, parsed
    return key, value


def _finite_float(text):
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(text)
    return value


def _parsed(parse, text):
    try:
        return parse(text)
    except (ValueError, argparse.ArgumentTypeError):
        return None


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
    ap = Parser(prog="netmem-replay", description=__doc__.split("\n\n")[0])
    ap.add_argument("--pcap", metavar="FILE", help="a pcap or pcapng capture (default: the "
                    "built-in workload)")
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
                    help="dma-buf (or p2pdma) memory, e.g. 16GiB (default 64MiB)")
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
                    help="frames per receive before the application drains (%(default)s)")
    ap.add_argument("--connections", type=int, help="built-in workload: connections (64)")
    ap.add_argument("--payload", type=size_arg, metavar="SIZE",
                    help="built-in workload: bytes per connection (64KiB)")
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
    ap.add_argument("--seed", type=int, default=d.seed)
    ap.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                    help="progress bar on stderr (default: when it is a terminal)")
    ap.add_argument("--compare", nargs="+", metavar="REPORT.json",
                    help="replay nothing: print these --json reports side by side, the first "
                         "the baseline (time figures as median [min-max], counters per 1,000 "
                         "frames)")
    ap.add_argument("--csv", metavar="FILE", help="with --compare: the comparison as CSV")
    ap.add_argument("--profile", action="store_true",
                    help="where the time goes: ns per frame by stage of the data plane, and "
                         "the latency from DMA write to recvmsg (half the timed loops run "
                         "profiled)")
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
    if cfg.dump_streams is not None:
        if report.streams is None:
            print(f"netmem-replay: interrupted before the stream files' loop: "
                  f"--dump-streams {cfg.dump_streams} not written", file=sys.stderr)
        else:
            report.write_streams(cfg.dump_streams)
    if cfg.json is not None:
        report.write_json(cfg.json)
    if cfg.plot is not None:
        if report.timeline is None:
            print(f"netmem-replay: interrupted before the timeline's loop: --plot {cfg.plot} "
                  "not written", file=sys.stderr)
        else:
            report.write_plot(cfg.plot)


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


if __name__ == "__main__":
    sys.exit(main())
