"""netmem-replay: a packet trace through a NIC, its page pools and a memory provider, and an
application that reads every socket, as ncdevmem does; then the figures and counters.

``netmem-replay [--pcap FILE] [--provider host|dmabuf|p2pdma] [options]`` builds a machine with a
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

Validation: with the ncdevmem pattern (the built-in workload's, or ``--validate N`` for a
capture that carries it) every byte the application reads is compared with the pattern at its
stream offset; for the built-in workload every stream must also be complete (all its bytes, and
the end of the stream where its sender sent a FIN).

Stream files (``--dump-streams DIR``): for every TCP stream of the trace, ``stream-N-node0.bin``
and ``stream-N-node1.bin`` hold the bytes node 0 and node 1 sent, as the receiving socket
delivered them to the application in the first loop (for devmem, read from the dma-buf). ``N``
and the nodes are tshark's: ``N`` is the ``tcp.stream`` index (conversations numbered in the
order of their first frame, see ``PacketTrace.tcp_streams()``), node 0 the side that sent the
stream's first frame, so ``tshark -r FILE -q -z follow,tcp,raw,N`` prints node 0's bytes on its
unindented lines and node 1's on the tab-indented ones. Where the capture has a gap (a segment
missing and never retransmitted), a stream stops at its first missing byte: what follows waits
in the out-of-order queue and is never delivered (tshark's reassembly stops there too). A stream
that only a frame this model skips shows (IP fragments, frames cut by the snapshot length) is
not numbered, and a 4-tuple reused within the capture is one stream (tshark numbers the reuse
anew), so tshark's indices can differ after such frames.

Exit codes: 0; 1 when validation fails or buffers are lost (inflight after teardown, leaks,
tokens not freed); 2 for bad input (a message on stderr names it, nothing is written).
"""
import argparse
import dataclasses
import errno
import functools
import importlib.util
import ipaddress
import json
import os
import resource
import shutil
import sys
import tempfile
import time

import numpy as np

from netmem import netlink
from netmem.errors import NetmemError
from netmem.flows import FlowParams, PacketTrace, generate
from netmem.machine import Machine
from netmem.netdev import ETH_MAX_MTU, ETH_MIN_MTU, RX_MAX_PENDING, NetDevice
from netmem.page_pool import PAGE_SIZE, PP_ALLOC_CACHE_SIZE, STATS_KEYS
from netmem.pci import PAGE_OFFSET
from netmem.profile import STAGES, StageProfile
from netmem.tcp import Receiver

__all__ = ["DEFAULT_WORKLOAD", "PROVIDERS", "REPORT_SCHEMA", "BadInput", "Config", "Report",
           "main", "run"]

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT = 0, 1, 2
MAX_QUEUES = 64                 # the model driver's queue limit (NetDevice)
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
    ``progress`` None shows the progress bar when stderr is a terminal."""

    provider: str = "dmabuf"
    pcap: str | None = None
    connections: int | None = None
    payload: int | None = None
    validate: int | None = None
    queues: int = 2
    bind_queues: list | None = None
    header_split: str | None = None
    mtu: int = 1500
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
    profile: bool = False


def _check_config(cfg):
    """Refuse absurd options before anything is built (BadInput names the option)."""
    prov = PROVIDERS.get(cfg.provider)
    if prov is None:
        raise BadInput(f"--provider {cfg.provider}: not one of {', '.join(PROVIDERS)}")
    if not 1 <= cfg.queues <= MAX_QUEUES:
        raise BadInput(f"--queues {cfg.queues}: a NIC has 1..{MAX_QUEUES} RX queues")
    if cfg.bind_queues is not None:
        if not prov.binds:
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
    if prov.binds and cfg.header_split == "off":
        raise BadInput(f"--header-split off: the {cfg.provider} provider needs header split "
                       "(net_mp_open_rxq() refuses a queue without tcp-data-split)")
    if not ETH_MIN_MTU <= cfg.mtu <= ETH_MAX_MTU:
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
    if prov.binds:
        _provider_chunk(cfg, cfg.queues if cfg.bind_queues is None else len(cfg.bind_queues))
    if not prov.available():
        raise BadInput(f"--provider {cfg.provider}: {prov.module} is not installed (this "
                       f"netmem has no {cfg.provider} provider; --provider host works without "
                       "one)", errno.EOPNOTSUPP)


def _provider_chunk(cfg, nbind):
    """The chunk for provider memory of ``--dmabuf-size``: small enough that the payload
    buffers of a chunk (twice over, for the out-of-order queues) fit beside everything the
    pools of ``nbind`` bound queues may hold (ring, ptr_ring and alloc cache each). BadInput
    when not even one NAPI budget of frames fits: the dma-buf is too small for the traffic."""
    per_frame = -(-max(cfg.mtu - 40, 1) // PAGE_SIZE)
    pools = nbind * (2 * cfg.pool_size + PP_ALLOC_CACHE_SIZE)
    frames = (cfg.dmabuf_size // PAGE_SIZE - pools) // (2 * per_frame)
    if frames < NAPI_POLL_WEIGHT:
        need = (pools + 2 * per_frame * NAPI_POLL_WEIGHT) * PAGE_SIZE
        raise BadInput(f"--dmabuf-size {cfg.dmabuf_size}: too small for the traffic: the page "
                       f"pools of {nbind} bound queue(s) may hold {pools} buffers of {PAGE_SIZE} "
                       f"bytes (twice --pool-size {cfg.pool_size} plus {PP_ALLOC_CACHE_SIZE} "
                       f"cached, each) besides the frames in flight; use at least {need} bytes",
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
        elif not os.path.isdir(parent) or not os.access(parent, os.W_OK):
            raise BadInput(f"{opt} {path}: cannot write in {parent}", errno.ENOENT)
    if cfg.plot is not None and importlib.util.find_spec("matplotlib") is None:
        raise BadInput("--plot needs matplotlib (pip install 'netmem[plot]')", errno.ENOENT)
    if cfg.dump_streams is not None:
        d = cfg.dump_streams
        parent = os.path.dirname(os.path.abspath(d))
        if os.path.exists(d) and not os.path.isdir(d):
            raise BadInput(f"--dump-streams {d}: exists and is not a directory", errno.ENOTDIR)
        if not os.path.isdir(parent) or not os.access(parent, os.W_OK):
            raise BadInput(f"--dump-streams {d}: cannot write in {parent}", errno.ENOENT)


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
    fields = {"mtu": cfg.mtu, "seed": cfg.seed}
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


# --------------------------------------------------------------------------------------------
# The machine: one NIC and one GPU behind a PCIe switch, as devmem TCP setups put them.


class _Rig:
    """The simulated system of one run: ``m``, ``nic``, ``gpu``, the bound queues, the app's
    CPU, the chunk size, and what a binding provider set up (``dmabuf_map``: its memory as
    (offset, physical address, length) arrays, ``dmabuf_id``: what the cmsgs must name,
    ``undo``: its teardown steps)."""

    def __init__(self, cfg, prov):
        self.cfg = cfg
        self.prov = prov
        split = cfg.header_split == "on" or (cfg.header_split is None and prov.binds)
        self.header_split = split
        self.bind = (list(cfg.bind_queues) if cfg.bind_queues is not None else
                     list(range(cfg.queues))) if prov.binds else []
        cpus = 1 if cfg.app_cpu == "same" else cfg.queues + 1
        self.app_cpu = 0 if cfg.app_cpu == "same" else cfg.queues
        self.m = Machine(memory=_memory_for(cfg, split), cpus=cpus, iommu=cfg.iommu,
                         seed=cfg.seed)
        self.m.tcp.open_on_data = True      # a capture may start in the middle of a flow
        pci = self.m.pci
        sw = pci.add_switch(pci.add_root_port(pci.host_bridges[0]))
        bars = {0: _pow2(cfg.dmabuf_size)} if cfg.provider == "p2pdma" else None
        self.gpu = pci.add_endpoint(sw, "gpu0", kind="gpu", bars=bars)
        nic_ep = pci.add_endpoint(sw, "eth1", kind="nic")
        self.nic = NetDevice(self.m, "eth1", num_rx_queues=cfg.queues, pcidev=nic_ep,
                             mtu=cfg.mtu)
        try:
            self.nic.ethtool.set_ringparam(tcp_data_split="on" if split else "off",
                                           rx_ring_size=cfg.pool_size)
        except NetmemError:
            self.nic.unregister()
            raise
        self.chunk = _provider_chunk(cfg, len(self.bind)) if prov.binds else cfg.chunk
        self.dmabuf_map = None
        self.dmabuf_id = None
        self.undo = []

    def steer_to_bound(self):
        """RSS over the bound queues only: the indirection table lists them in turn."""
        size = len(self.nic.ethtool.get_rxfh()["indir"])
        self.nic.ethtool.set_rxfh(indir=[self.bind[i % len(self.bind)] for i in range(size)])

    def teardown(self):
        """Undo the provider's setup, unregister the NIC, let deferred work run."""
        with self.m.on_cpu(self.app_cpu, softirq=False):
            for sk in self.m.tcp.sockets():
                sk.close()
        for step in reversed(self.undo):
            step()
        self.undo = []
        self.nic.unregister()
        self.m.quiesce()


def _pow2(n):
    return 1 << max(n - 1, 1).bit_length()


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
    ``--dump-streams``."""

    def __init__(self, rig, pattern, expected, keep_streams):
        self.pattern = pattern
        self.rx = Receiver(rig.m, dmabuf=rig.dmabuf_map if rig.prov.binds else None,
                           dmabuf_id=rig.dmabuf_id or 0, bufsize=RECV_BUF, cmsgs=DEVMEM_CMSGS,
                           validate=pattern or None, keep=keep_streams)
        self.dmabuf_id = rig.dmabuf_id
        self.expected = expected
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
# Providers: how each binds its memory, and how the application reads what it receives.


def _setup_host(rig):
    """Host pages: no provider (``pool->mp_ops`` NULL), RSS over every queue."""


def _setup_dmabuf(rig):
    """devmem TCP: a dma-buf of the GPU's device memory bound to the queues with netlink
    ``bind-rx`` (header split is on), RSS over the bound queues."""
    from netmem.dmabuf import export_device_memory
    from netmem.netlink import NetlinkSocket

    cfg = rig.cfg
    buf = export_device_memory(rig.gpu, cfg.dmabuf_size, layout=cfg.dmabuf_layout,
                               seed=cfg.seed)
    rig.undo.append(buf.close)
    nl = NetlinkSocket(rig.m)
    rig.undo.append(nl.close)                       # unbinds
    rig.dmabuf_id = nl.bind_rx(rig.nic.ifindex, buf.fd,
                               queues=[{"id": q, "type": "rx"} for q in rig.bind])
    rig.dmabuf_map = buf.scatterlist
    rig.steer_to_bound()


def _setup_p2pdma(rig):
    """p2pdma: ``--dmabuf-size`` bytes of the GPU's BAR memory as a memory provider on each
    bound queue (``net_mp_open_rxq()``), RSS over them; ``remove()`` hands it back. Its cmsgs
    name the provider's id; the payload is read from its memory (one physically contiguous
    range, offset 0 at ``virt``)."""
    from netmem.netdev import net_mp_open_rxq
    from netmem.providers.p2pdma import P2PDMAProvider

    prov = P2PDMAProvider(rig.gpu, size=rig.cfg.dmabuf_size)
    rig.undo.append(prov.remove)                    # closes the queues it is bound to
    for q in rig.bind:
        net_mp_open_rxq(rig.nic, q, prov)
    rig.dmabuf_id = prov.id
    rig.dmabuf_map = tuple(np.array([v], np.uint64) for v in (0, prov.virt - PAGE_OFFSET,
                                                              prov.size))
    rig.steer_to_bound()


@dataclasses.dataclass(frozen=True)
class Provider:
    """A ``--provider``: ``module`` must be importable for it to be available (None: always
    is); ``binds``: it takes queues (``--bind-queues``) and needs header split; ``setup(rig)``
    binds it (and, for the devmem providers, says where the application reads the payload:
    ``rig.dmabuf_map``, ``rig.dmabuf_id``). The application reads with ``MSG_SOCK_DEVMEM``
    when the provider binds."""

    name: str
    module: str | None
    binds: bool
    setup: object

    def available(self):
        """Whether this netmem has the provider (its module can be imported)."""
        return self.module is None or importlib.util.find_spec(self.module) is not None


PROVIDERS = {
    "host": Provider("host", None, False, _setup_host),
    "dmabuf": Provider("dmabuf", "netmem.providers.dmabuf", True, _setup_dmabuf),
    "p2pdma": Provider("p2pdma", "netmem.providers.p2pdma", True, _setup_p2pdma),
}


# --------------------------------------------------------------------------------------------
# The run.


class _Progress:
    """A progress bar on stderr for runs longer than half a second, redrawn at most ten times
    a second with ``\\r``; nothing when disabled."""

    def __init__(self, total, enabled):
        self.total = total
        self.enabled = enabled
        self.t0 = time.perf_counter()
        self.next = self.t0 + 0.5
        self.width = 0                  # of the line on screen

    def update(self, done):
        now = time.perf_counter()
        if not self.enabled or now < self.next:
            return
        self.next = now + 0.1
        frac = done / self.total if self.total else 1.0
        bar = "#" * int(30 * frac)
        line = (f"netmem-replay [{bar:<30}] {100 * frac:5.1f}% {done}/{self.total} frames, "
                f"{done / (now - self.t0) / 1e6:.2f} Mpps")
        sys.stderr.write(f"\r{line:<{self.width}}")
        sys.stderr.flush()
        self.width = max(self.width, len(line))

    def close(self):
        if self.width:
            sys.stderr.write("\r" + " " * self.width + "\r")
            sys.stderr.flush()


class _Timeline:
    """Samples of every queue's payload pool after each chunk, for ``--plot``: wall time,
    cache and ring occupancy, buffers out of the pool, and the recycle counters."""

    FIELDS = ("cache", "ring", "out", "recycle-cache", "recycle-ring", "released")

    def __init__(self, rig):
        self.queues = list(range(rig.cfg.queues))
        self.t = []
        self.rows = []

    def sample(self, rig, t):
        row = []
        for q in self.queues:
            pool = rig.nic.rx_queues[q].page_pool
            s = pool.stats
            row.append((pool.alloc_count, pool.ring_count,
                        pool.inflight - pool.alloc_count - pool.ring_count, *_recycle_split(s)))
        self.t.append(t)
        self.rows.append(row)

    def arrays(self):
        """``t`` (seconds) and, per field, an array (samples, queues)."""
        data = np.array(self.rows, np.int64).reshape(len(self.t), len(self.queues), -1)
        return np.array(self.t), {f: data[:, :, i] for i, f in enumerate(self.FIELDS)}


def _recycle_split(stats):
    """(cache, ring, released) of page_pool's recycle counters: ``recycle_cached``,
    ``recycle_ring``, and what left the pool (``recycle_ring_full`` + ``recycle_released_refcnt``;
    a ``recycle_cache_full`` buffer went on to the ring and counts there)."""
    return (stats["recycle_cached"], stats["recycle_ring"],
            stats["recycle_ring_full"] + stats["recycle_released_refcnt"])


def run(cfg):
    """Replay as ``cfg`` says and return the ``Report``. Raises ``BadInput`` for options or
    input it cannot use, before anything is replayed."""
    _check_config(cfg)
    prov = PROVIDERS[cfg.provider]
    trace, params, expected = _load_trace(cfg)
    pattern = (params.validate if params is not None else cfg.validate) or None
    try:
        rig = _Rig(cfg, prov)
    except NetmemError as e:
        raise BadInput(str(e), e.errno) from None
    try:
        try:
            prov.setup(rig)
        except NetmemError as e:
            raise BadInput(f"--provider {cfg.provider}: {e.strerror}", e.errno) from None
        app = _App(rig, pattern, expected, cfg.dump_streams is not None)
        timeline = _Timeline(rig) if cfg.plot else None
        profile = StageProfile(rig.m, len(trace), cfg.loops) if cfg.profile else None
        elapsed = _replay(rig, app, trace, timeline, profile)
        app.check()
        doc = _document(cfg, rig, trace, params, app, elapsed)
        doc["profile"] = profile.result() if profile is not None else None
    finally:
        rig.teardown()
    doc["inflight-after-teardown"] = sum(p.inflight for p in rig.m.page_pools)
    doc["leaks"] = rig.m.leak_report()
    doc["exit-code"] = EXIT_FAILED if (doc["validation"]["result"] == "failed" or
                                       doc["inflight-after-teardown"] or doc["leaks"]) \
        else EXIT_OK
    streams = _stream_files(trace, app.streams) if cfg.dump_streams is not None else None
    return Report(doc, streams, timeline)


def _replay(rig, app, trace, timeline, profile=None):
    """The loops: chunks through the NIC, the application's drain after each, and at the end
    of each loop its streams' state and every socket closed. Returns the seconds of the timed
    loops (those after the warm-up ones). A ``StageProfile`` is told where each loop starts
    (it profiles half the timed ones) and where the last ends."""
    cfg, m, nic = rig.cfg, rig.m, rig.nic
    n = len(trace)
    total = cfg.warmup + cfg.loops
    progress = _Progress(n * total, sys.stderr.isatty() if cfg.progress is None
                         else cfg.progress)
    start_time = t0 = time.perf_counter()
    try:
        for loop in range(total):
            if loop == cfg.warmup:
                t0 = time.perf_counter()
            if profile is not None:
                profile.loop(loop - cfg.warmup)
            for start in range(0, n, rig.chunk):
                nic.receive(trace, start, rig.chunk)
                with m.on_cpu(rig.app_cpu, softirq=False):
                    app.drain()
                if timeline is not None:
                    timeline.sample(rig, time.perf_counter() - start_time)
                progress.update(loop * n + min(start + rig.chunk, n))
            with m.on_cpu(rig.app_cpu, softirq=False):
                app.end_pass()
        if profile is not None:
            profile.end()
    finally:
        progress.close()
    return time.perf_counter() - t0


# --------------------------------------------------------------------------------------------
# The report.


def _document(cfg, rig, trace, params, app, elapsed):
    """Everything the run measured, as one JSON-able dict in the netdev family's names."""
    m, nic = rig.m, rig.nic
    frames = len(trace) * cfg.loops
    nbytes = int(trace.lengths.sum(dtype=np.uint64)) * cfg.loops
    payload = trace.payload_bytes * cfg.loops
    stats = {s["info"]["id"]: s for s in netlink.page_pool_stats_get(m)}
    per_queue = {r["queue-id"]: r for r in netlink.qstats_get(m, nic.ifindex, scope="queue")}
    queues = []
    totals = dict.fromkeys(("cache", "ring", "released"), 0)
    for q in nic.rx_queues[:nic.real_num_rx_queues]:
        entry = {"id": q.idx, "napi-id": q.napi.napi_id, "bound": q.idx in rig.bind,
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
            "provider": cfg.provider, "queues": cfg.queues, "bind-queues": rig.bind,
            "header-split": rig.header_split, "mtu": cfg.mtu, "iommu": cfg.iommu,
            "app-cpu": cfg.app_cpu, "pool-size": cfg.pool_size,
            "dmabuf-size": cfg.dmabuf_size if rig.prov.binds else None,
            "dmabuf-layout": cfg.dmabuf_layout if rig.prov.binds else None,
            "loops": cfg.loops, "warmup": cfg.warmup, "chunk": rig.chunk, "seed": cfg.seed,
            "pcap": cfg.pcap,
            "workload": params.key() if params is not None else None,
        },
        "trace": {"frames": len(trace), "bytes": nbytes // cfg.loops,
                  "payload-bytes": trace.payload_bytes, "skipped": dict(trace.skipped)},
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
        "devmem": app.devmem if rig.prov.binds else None,
        "validation": validation,
        "max-rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
    }


def _validation(app):
    """The verdict: failed (the first failures), skipped (nothing to check against), or ok."""
    if app.nfail:
        result = "failed"
        detail = "; ".join(app.failures) + (f"; and {app.nfail - len(app.failures)} more"
                                            if app.nfail > len(app.failures) else "")
    elif app.pattern is None and app.expected is None:
        result = "skipped"
        detail = ("skipped (no validation pattern: --validate N if the capture carries "
                  "ncdevmem's -v N)")
    else:
        result = "ok"
        what = [f"ncdevmem -v {app.pattern} pattern"] if app.pattern else []
        if app.expected is not None:
            what.append("every stream complete")
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
        """Over replay time, per queue: its payload pool's occupancy (alloc cache, ptr_ring,
        buffers out of the pool) and where each interval's recycled buffers went."""
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        t, data = self.timeline.arrays()
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
            bottom.set_xlabel("replay time (s)")
        axes[0, 0].legend(fontsize="small")
        axes[1, 0].legend(fontsize="small")
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
                     f"MTU {c['mtu']}, iommu {c['iommu']}, application on "
                     f"{'the NAPI CPU' if c['app-cpu'] == 'same' else 'another CPU'}")
        src = c["pcap"] or _describe_workload(c["workload"])
        lines.append(f"trace: {src}: {tr['frames']} frames, {tr['bytes']} bytes, TCP payload "
                     f"{tr['payload-bytes']} bytes")
        skipped = {k: v for k, v in tr["skipped"].items() if v}
        lines.append("frames skipped: " + (", ".join(f"{v} {k}" for k, v in skipped.items())
                                           if skipped else "none"))
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
        if d["profile"] is not None:
            lines += _profile_table(d["profile"])
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
#: The JSON Schema (2020-12) of the ``--json`` document. Stats carry the netdev netlink
#: family's attribute names (``page-pool-get``, ``page-pool-stats-get``, ``qstats-get``).
REPORT_SCHEMA = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "netmem-replay report",
    "type": "object",
    "required": ["tool", "config", "trace", "replay", "drops", "qstats", "queues", "recycle",
                 "tcp-mib", "iommu", "devmem", "validation", "max-rss",
                 "inflight-after-teardown", "leaks", "exit-code", "profile"],
    "additionalProperties": False,
    "properties": {
        "tool": {"const": "netmem-replay"},
        "config": {
            "type": "object",
            "required": ["provider", "queues", "bind-queues", "header-split", "mtu", "iommu",
                         "app-cpu", "pool-size", "dmabuf-size", "dmabuf-layout", "loops",
                         "warmup", "chunk", "seed", "pcap", "workload"],
            "properties": {
                "provider": {"enum": list(PROVIDERS)},
                "queues": {"type": "integer", "minimum": 1, "maximum": MAX_QUEUES},
                "bind-queues": {"type": "array", "items": _COUNT},
                "header-split": {"type": "boolean"},
                "mtu": {"type": "integer", "minimum": ETH_MIN_MTU, "maximum": ETH_MAX_MTU},
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
        "trace": {"type": "object", "required": ["frames", "bytes", "payload-bytes", "skipped"],
                  "properties": {"frames": _COUNT, "bytes": _COUNT, "payload-bytes": _COUNT,
                                 "skipped": _COUNTS}},
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
        "max-rss": _COUNT,
        "inflight-after-teardown": _COUNT,
        "leaks": {"type": "array", "items": {"type": "string"}},
        "exit-code": {"enum": [EXIT_OK, EXIT_FAILED]},
        "profile": {"oneOf": [{"type": "null"}, _PROFILE]},
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


def _parser():
    from netmem.tools import size_arg

    d = Config()
    ap = argparse.ArgumentParser(prog="netmem-replay", description=__doc__.split("\n\n")[0])
    ap.add_argument("--pcap", metavar="FILE", help="a pcap or pcapng capture (default: the "
                    "built-in workload)")
    ap.add_argument("--provider", choices=list(PROVIDERS), default=d.provider,
                    help="memory behind the RX queues (default: %(default)s, devmem TCP)")
    ap.add_argument("--queues", type=int, default=d.queues, help="RX queues (%(default)s)")
    ap.add_argument("--bind-queues", type=_queue_list, metavar="LIST",
                    help="queues the provider binds, e.g. 0,2-3 (default: all)")
    ap.add_argument("--header-split", choices=("on", "off"),
                    help="tcp-data-split (default: on with a provider, off for host)")
    ap.add_argument("--mtu", type=int, default=d.mtu)
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
    ap.add_argument("--profile", action="store_true",
                    help="where the time goes: ns per frame by stage of the data plane, and "
                         "the latency from DMA write to recvmsg (half the timed loops run "
                         "profiled)")
    return ap


def main(argv=None):
    """``netmem-replay``: returns the exit code (0 ok, 1 validation failed or buffers lost,
    2 bad input)."""
    try:
        args = _parser().parse_args(argv)
    except SystemExit as e:            # argparse printed its message
        return e.code
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
