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
``SO_DEVMEM_DONTNEED`` in batches). Only that loop is timed, after ``--warmup`` untimed loops
(hot caches, memory already faulted in). At the end of each loop the application closes every
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
is skipped (nothing to read) or failed.

Stream files (``--dump-streams DIR``): for every TCP stream of the trace, ``stream-N-node0.bin``
and ``stream-N-node1.bin`` hold the bytes node 0 and node 1 sent, as the receiving socket
delivered them to the application in the first loop (for devmem, read from the dma-buf). ``N``
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
including a provider that cannot be replayed (one line saying what it lacks).
"""
import argparse
import dataclasses
import errno
import functools
import importlib.util
import ipaddress
import json
import math
import os
import resource
import shutil
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
from netmem.provider import ENTRY_POINT_GROUP, ReplayBinding, get_provider, replay_args
from netmem.tcp import Receiver
from netmem.tools import Parser, size_arg, unwritable_dir

__all__ = ["DEFAULT_WORKLOAD", "REPORT_SCHEMA", "BadInput", "Config", "Report", "Rig", "main",
           "run"]

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT = 0, 1, 2
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
    """What ``run()`` does; the command-line options one for one (``None``: the default that
    depends on other options). ``connections``/``payload`` shape the built-in workload;
    ``validate`` is its ncdevmem pattern (``DEFAULT_WORKLOAD``'s unless given; 0: random
    bytes), or the pattern a ``pcap`` carries; ``header_split`` defaults to on for the devmem
    providers (which need it) and off for host pages; ``chunk`` is frames per receive call
    before the application drains (smaller with a dma-buf that cannot hold a whole chunk);
    ``mtu`` None fits the NIC to a ``pcap``'s largest frame (``_choose_mtu()``) and is
    ``ETH_DATA_LEN`` for the built-in workload; ``progress`` None shows the progress bar when
    stderr is a terminal; ``provider_args`` the keywords of the provider's ``replay_setup``
    (``--provider-arg KEY=VALUE``)."""

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
    chunk: int = DEFAULT_CHUNK
    dump_streams: str | None = None
    json: str | None = None
    plot: str | None = None
    seed: int = 0
    progress: bool | None = None


def _check_config(cfg):
    """Refuse absurd options before anything is built (BadInput names the option). Returns
    the provider's class."""
    cls = _provider_class(cfg.provider, cfg.provider_args)
    binds = _binds(cls)
    if not 1 <= cfg.queues <= MAX_QUEUES:
        raise BadInput(f"--queues {cfg.queues}: a NIC has 1..{MAX_QUEUES} RX queues")
    if cfg.bind_queues is not None:
        if not binds:
            raise BadInput(f"--bind-queues: the {cfg.provider} provider binds no queues")
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
        raise BadInput(f"--header-split off: the {cfg.provider} provider needs header split "
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
    for name in ("loops", "chunk"):
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


def _provider_class(name, args):
    """The class registered as ``--provider name``, read from the entry points now, whose
    ``replay_setup`` takes ``args``. BadInput when none is, it does not load, it has no
    ``replay_setup``, or the args do not fit it."""
    try:
        cls = get_provider(name)
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
        raise BadInput(f"--provider {cfg.provider}: its memory, {size} bytes (--dmabuf-size for "
                       f"dmabuf and p2pdma), is too small for the traffic: the page pools of "
                       f"{nbind} bound queue(s) may hold {pools} buffers of {PAGE_SIZE} bytes "
                       f"(twice --pool-size {cfg.pool_size} plus {PP_ALLOC_CACHE_SIZE} cached, "
                       f"each) besides the frames in flight; use at least {need} bytes",
                       errno.ENOSPC)
    return min(cfg.chunk, frames)


def _check_outputs(cfg):
    """Every output must be writable before the run starts: nothing is written on bad input."""
    for opt, path in (("--json", cfg.json), ("--plot", cfg.plot)):
        if path is None:
            continue
        parent = os.path.dirname(os.path.abspath(path))
        if os.path.isdir(path):
            raise BadInput(f"{opt} {path}: is a directory", errno.EISDIR)
        if os.path.exists(path) and not os.path.isfile(path):      # a device or a pipe
            if not os.access(path, os.W_OK):
                raise BadInput(f"{opt} {path}: cannot write it", errno.EACCES)
        else:
            _check_writable_dir(opt, path, parent)
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
            raise BadInput(f"--provider {cfg.provider}: {e.strerror}", e.errno) from None
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
    after the clock stops, the verdict: pattern, stream lengths and ends, the streams kept for
    ``--dump-streams``. ``expected``: the built-in workload's stream lengths; ``capture``: a
    capture's trace and the frames the NIC takes (bool per frame), whose streams are checked
    against what the trace carries in order (``PacketTrace.in_order_bytes()``)."""

    def __init__(self, rig, pattern, expected, keep_streams, capture=None):
        self.pattern = pattern
        b = rig.binding
        try:
            self.rx = Receiver(rig.machine, dmabuf=b.memory_map, dmabuf_id=b.dmabuf_id or 0,
                               bufsize=RECV_BUF, cmsgs=DEVMEM_CMSGS, validate=pattern or None,
                               keep=keep_streams)
        except NetmemError as e:         # a memory map outside RAM and the BARs
            raise BadInput(f"--provider {rig.cfg.provider}: memory_map(): {e.strerror}",
                           e.errno) from None
        self.dmabuf_id = b.dmabuf_id
        self.expected = expected
        self.capture = capture
        self.keep = keep_streams
        self.passes = []            # the streams at the end of each loop
        self.kept = None            # the first loop's bytes: (data, slots, lengths)
        self.streams = {}
        self.failures = []
        self.nfail = 0
        self.bytes = 0
        self.resets = 0

    def drain(self):
        self.rx.drain()

    def end_pass(self):
        """The end of a loop (timed): the streams' state, every socket closed."""
        if self.keep:
            self.kept = self.rx.kept()
            self.rx.keep = self.keep = False
        self.passes.append(self.rx.close_all())

    @property
    def devmem(self):
        c = self.rx.counters
        return {k: c[k] for k in ("recvmsg-calls", "dmabuf-frags", "linear-frags",
                                  "tokens-returned", "dontneed-calls")}

    def fail(self, msg):
        self.nfail += 1
        if len(self.failures) < 10:
            self.failures.append(msg)

    def check(self):
        """After the clock: each loop's streams against the pattern and the expected lengths,
        the receiver's own counts, and the first loop's bytes split into streams."""
        c = self.rx.counters
        self.bytes = c["bytes"]
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
        if self.capture is not None:
            self.expected = self.capture[0].in_order_bytes(self.capture[1])
        for loop, cols in enumerate(self.passes):
            self._check_pass(loop, cols)
        if self.kept is not None and self.passes:
            self.streams = _split_streams(self.passes[0], *self.kept)

    def _check_pass(self, loop, cols):
        keys = _stream_keys(cols)
        self.resets += int((cols["err"] == errno.ECONNRESET).sum())
        for i in np.flatnonzero(cols["bad"] >= 0):
            self.fail(f"loop {loop}: {_name(keys[i])}: byte {int(cols['bad'][i])} differs "
                      f"from the ncdevmem -v {self.pattern} pattern")
        if self.expected is None:
            return
        if self.capture is not None:
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
    """Samples of every queue's payload pool after each chunk, for ``--plot``: the frames
    replayed so far, cache and ring occupancy, buffers out of the pool, and the recycle
    counters. Time is the trace's own (its frames' capture timestamps, from the first frame;
    each loop after the last frame plus one mean gap), worked out after the clock stops."""

    FIELDS = ("cache", "ring", "out", "recycle-cache", "recycle-ring", "released")

    def __init__(self, rig, trace):
        self.queues = list(range(rig.cfg.queues))
        self.timestamps = trace.timestamps
        self.done = []
        self.rows = []

    def sample(self, rig, done):
        """The pools after ``done`` frames (counted over every loop, warm-up ones included)."""
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
        n = len(self.timestamps)
        if not self.done:                   # no TCP frame to replay: no chunk, no sample
            return np.zeros(0), {f: data[:, :, i] for i, f in enumerate(self.FIELDS)}
        rel = (self.timestamps - self.timestamps[0]).astype(np.float64) / 1e9
        span = rel[-1] * n / (n - 1) if n > 1 else 0.0
        last = np.array(self.done, np.int64) - 1
        t = last // n * span + rel[last % n]
        return t, {f: data[:, :, i] for i, f in enumerate(self.FIELDS)}


def _recycle_split(stats):
    """(cache, ring, released) of page_pool's recycle counters: ``recycle_cached``,
    ``recycle_ring``, and what left the pool (``recycle_ring_full`` + ``recycle_released_refcnt``;
    a ``recycle_cache_full`` buffer went on to the ring and counts there)."""
    return (stats["recycle_cached"], stats["recycle_ring"],
            stats["recycle_ring_full"] + stats["recycle_released_refcnt"])


def run(cfg):
    """Replay as ``cfg`` says and return the ``Report``. Raises ``BadInput`` for options or
    input it cannot use, before anything is replayed."""
    cls = _check_config(cfg)
    trace, params, expected = _load_trace(cfg)
    cfg, mtu = _choose_mtu(cfg, trace)
    pattern = (params.validate if params is not None else cfg.validate) or None
    try:
        rig = Rig(cfg, _binds(cls))
    except NetmemError as e:
        raise BadInput(str(e), e.errno) from None
    try:
        rig.bind(cls)
        app = _App(rig, pattern, expected, cfg.dump_streams is not None,
                   None if params is not None else (trace, ~mtu.too_long))
        timeline = _Timeline(rig, trace) if cfg.plot else None
        elapsed = _replay(rig, app, trace, timeline)
        app.check()
        doc = _document(cfg, rig, trace, params, app, elapsed, mtu)
    finally:
        rig.teardown()
    doc["inflight-after-teardown"] = sum(p.inflight for p in rig.machine.page_pools)
    doc["leaks"] = rig.machine.leak_report()
    doc["exit-code"] = EXIT_FAILED if (doc["validation"]["result"] == "failed" or
                                       doc["inflight-after-teardown"] or doc["leaks"]) \
        else EXIT_OK
    streams = _stream_files(trace, app.streams) if cfg.dump_streams is not None else None
    return Report(doc, streams, timeline)


def _replay(rig, app, trace, timeline):
    """The loops: chunks through the NIC, the application's drain after each, and at the end
    of each loop its streams' state and every socket closed. Returns the seconds of the timed
    loops (those after the warm-up ones)."""
    cfg, m, nic = rig.cfg, rig.machine, rig.nic
    n = len(trace)
    total = cfg.warmup + cfg.loops
    progress = _Progress(n * total, sys.stderr.isatty() if cfg.progress is None
                         else cfg.progress)
    t0 = time.perf_counter()
    try:
        for loop in range(total):
            if loop == cfg.warmup:
                t0 = time.perf_counter()
            for start in range(0, n, rig.chunk):
                nic.receive(trace, start, rig.chunk)
                with m.on_cpu(rig.app_cpu, softirq=False):
                    app.drain()
                if timeline is not None:
                    timeline.sample(rig, loop * n + min(start + rig.chunk, n))
                progress.update(loop * n + min(start + rig.chunk, n))
            with m.on_cpu(rig.app_cpu, softirq=False):
                app.end_pass()
    finally:
        progress.close()
    return time.perf_counter() - t0


# --------------------------------------------------------------------------------------------
# The report.


def _document(cfg, rig, trace, params, app, elapsed, mtu):
    """Everything the run measured, as one JSON-able dict in the netdev family's names."""
    m, nic = rig.machine, rig.nic
    frames = len(trace) * cfg.loops
    nbytes = int(trace.lengths.sum(dtype=np.uint64)) * cfg.loops
    payload = trace.payload_bytes * cfg.loops
    stats = {s["info"]["id"]: s for s in netlink.page_pool_stats_get(m)}
    per_queue = {r["queue-id"]: r for r in netlink.qstats_get(m, nic.ifindex, scope="queue")}
    queues = []
    totals = dict.fromkeys(("cache", "ring", "released"), 0)
    for q in nic.rx_queues[:nic.real_num_rx_queues]:
        entry = {"id": q.idx, "napi-id": q.napi.napi_id, "bound": q.idx in rig.queues,
                 "qstats": {k: v for k, v in per_queue[q.idx].items()
                            if k not in ("ifindex", "queue-type", "queue-id")}}
        for role, pool in (("page-pool", q.page_pool), ("header-page-pool", q.header_pool)):
            if pool is None:
                continue
            entry[role] = {**netlink.page_pool_get(m, pool.id), **stats[pool.id]}
        split = dict(zip(totals, _recycle_split(q.page_pool.stats), strict=True))
        entry["recycle"] = split
        for k, v in split.items():
            totals[k] += v
        queues.append(entry)
    qstats = netlink.qstats_get(m, nic.ifindex)[0]
    dev = nic.stats()
    validation = _validation(app)
    return {
        "tool": "netmem-replay",
        "config": {
            "provider": cfg.provider, "provider-args": dict(cfg.provider_args),
            "queues": cfg.queues, "bind-queues": rig.queues,
            "header-split": rig.header_split, "mtu": cfg.mtu, "mtu-from": mtu.source,
            "iommu": cfg.iommu,
            "app-cpu": cfg.app_cpu, "pool-size": cfg.pool_size,
            "dmabuf-size": rig.binding.size or None,
            "dmabuf-layout": cfg.dmabuf_layout if rig.binds else None,
            "loops": cfg.loops, "warmup": cfg.warmup, "chunk": rig.chunk, "seed": cfg.seed,
            "pcap": cfg.pcap,
            "workload": params.key() if params is not None else None,
        },
        "trace": _trace_doc(trace, nbytes // cfg.loops, mtu),
        "replay": {
            "frames": frames, "bytes": nbytes, "payload-bytes": payload,
            "seconds": elapsed,
            "mpps": frames / elapsed / 1e6 if elapsed else 0.0,
            "gbps": payload * 8 / elapsed / 1e9 if elapsed else 0.0,
            "ns-per-frame": elapsed * 1e9 / frames if frames else 0.0,
        },
        "drops": {
            "skb-drop-reasons": m.tcp.drop_reasons,
            "device": {k.replace("_", "-"): v for k, v in dev.items() if v},
            "queues": {k: qstats[k] for k in ("rx-alloc-fail", "rx-hw-drops",
                                              "rx-hw-drop-overruns") if qstats[k]},
        },
        "qstats": qstats,
        "queues": queues,
        "recycle": totals,
        "tcp-mib": {k: v for k, v in m.tcp.mib.items() if v},
        "iommu": {"mode": cfg.iommu, "faults": len(m.iommu.faults), "stats": m.iommu.stats},
        "devmem": app.devmem if rig.binds else None,
        "validation": validation,
        "warnings": [w for w in (mtu.warning(),) if w],
        "max-rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
    }


def _trace_doc(trace, nbytes, mtu):
    """The report's ``trace``: its frames (those the NIC drops for the MTU included: they are
    replayed), bytes and TCP payload, the largest frame at L3, and the frames skipped by
    reason: the classifier's (``PacketTrace.skipped``, not replayed) and ``too_long``, the
    frames longer than the MTU at L3, which the NIC drops as ``rx_length_errors`` (counted
    from the trace before the replay; once per loop in ``drops``)."""
    return {"frames": len(trace), "bytes": nbytes, "payload-bytes": trace.payload_bytes,
            "largest-l3-length": mtu.largest,
            "skipped": {**trace.skipped, "too_long": int(mtu.too_long.sum())}}


def _validation(app):
    """The verdict: failed (the first failures); skipped when there was nothing to read (no
    TCP payload reaches a socket in order: 0 bytes read is never ok); else ok: every stream's
    bytes read, as many as the trace carries in order (all of the built-in workload's, with
    their ends; a capture's up to each stream's first hole), and each equal to the ncdevmem
    pattern if there is one."""
    if app.nfail:
        result = "failed"
        detail = "; ".join(app.failures) + (f"; and {app.nfail - len(app.failures)} more"
                                            if app.nfail > len(app.failures) else "")
    elif not app.bytes:
        result = "skipped"
        detail = ("skipped: nothing to read (no TCP payload of the trace reaches a socket in "
                  "order)")
    else:
        result = "ok"
        what = ["every stream complete" if app.capture is None else
                f"every stream as the capture carries it in order "
                f"({sum(1 for v in app.expected.values() if v)} direction(s) with data, each "
                "up to its first hole)"]
        if app.pattern:
            what.append(f"the ncdevmem -v {app.pattern} pattern")
        detail = f"ok: {app.bytes} bytes read, {' and '.join(what)}"
    return {"result": result, "detail": detail, "pattern": app.pattern,
            "bytes": app.bytes, "resets": app.resets}


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
        """Over trace time, per queue: its payload pool's occupancy (alloc cache, ptr_ring,
        buffers out of the pool) and where each interval's recycled buffers went; the run's
        configuration in the title."""
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
        c, r, tr = d["config"], d["replay"], d["trace"]
        lines = []
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
        rows = [("loops", c["loops"]), ("frames", r["frames"]), ("bytes", r["bytes"]),
                ("payload bytes", r["payload-bytes"]), ("seconds", f"{r['seconds']:.3f}"),
                ("Mpps", f"{r['mpps']:.3f}"), ("Gbit/s payload", f"{r['gbps']:.2f}"),
                ("ns per frame", f"{r['ns-per-frame']:.1f}")]
        lines += [f"  {k:<28}{v:>16}" for k, v in rows]
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
        lines.append(f"IOMMU faults: {d['iommu']['faults']}")
        if d["devmem"] is not None:
            lines.append("devmem: " + ", ".join(f"{k} {v}" for k, v in d["devmem"].items()))
        lines.append(f"validation: {d['validation']['detail']}")
        return "\n".join(lines)

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
#: The JSON Schema (2020-12) of the ``--json`` document. Stats carry the netdev netlink
#: family's attribute names (``page-pool-get``, ``page-pool-stats-get``, ``qstats-get``).
REPORT_SCHEMA = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "netmem-replay report",
    "type": "object",
    "required": ["tool", "config", "trace", "replay", "drops", "qstats", "queues", "recycle",
                 "tcp-mib", "iommu", "devmem", "validation", "warnings", "max-rss",
                 "inflight-after-teardown", "leaks", "exit-code"],
    "additionalProperties": False,
    "properties": {
        "tool": {"const": "netmem-replay"},
        "config": {
            "type": "object",
            "required": ["provider", "provider-args", "queues", "bind-queues", "header-split",
                         "mtu", "mtu-from", "iommu", "app-cpu", "pool-size", "dmabuf-size",
                         "dmabuf-layout", "loops", "warmup", "chunk", "seed", "pcap",
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
        "replay": {"type": "object",
                   "required": ["frames", "bytes", "payload-bytes", "seconds", "mpps", "gbps",
                                "ns-per-frame"],
                   "properties": {"frames": _COUNT, "bytes": _COUNT, "payload-bytes": _COUNT,
                                  "seconds": _NUMBER, "mpps": _NUMBER, "gbps": _NUMBER,
                                  "ns-per-frame": _NUMBER}},
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
        "iommu": {"type": "object", "required": ["mode", "faults", "stats"],
                  "properties": {"mode": {"enum": ["none", "passthrough", "dma-iommu"]},
                                 "faults": _COUNT, "stats": _COUNTS}},
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
        "exit-code": {"enum": [EXIT_OK, EXIT_FAILED]},
    },
}


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
    ap.add_argument("--loops", type=int, default=d.loops, help="replay the trace K times")
    ap.add_argument("--warmup", type=int, default=d.warmup, metavar="K",
                    help="replay it K times more first, untimed (default %(default)s)")
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
                         "sent, as delivered")
    ap.add_argument("--json", metavar="FILE", help="write the report as one JSON document")
    ap.add_argument("--plot", metavar="FILE.png", help="plot pool occupancy and recycling")
    ap.add_argument("--seed", type=int, default=d.seed)
    ap.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                    help="progress bar on stderr (default: when it is a terminal)")
    return ap


def main(argv=None):
    """``netmem-replay``: returns the exit code (0 ok, 1 validation failed or buffers lost,
    2 bad input)."""
    try:
        args = _parser().parse_args(argv)
    except SystemExit as e:            # argparse printed its message
        return e.code
    if args.list_providers:
        print(_provider_list())
        return EXIT_OK
    del args.list_providers
    cfg = Config(**vars(args))
    try:
        _check_config(cfg)
        _check_outputs(cfg)
        report = run(cfg)
    except BadInput as e:
        print(f"netmem-replay: {e.strerror}", file=sys.stderr)
        return EXIT_BAD_INPUT
    print(report.format_table())
    if cfg.dump_streams is not None:
        report.write_streams(cfg.dump_streams)
    if cfg.json is not None:
        report.write_json(cfg.json)
    if cfg.plot is not None:
        report.write_plot(cfg.plot)
    return report.exit_code


if __name__ == "__main__":
    sys.exit(main())
