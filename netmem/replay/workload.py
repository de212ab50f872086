"""What is replayed: the trace of a capture (``--pcap``) or of the built-in workload
(``DEFAULT_WORKLOAD``, generated once per parameters and kept), and the NIC's MTU for it
(``_choose_mtu()``) with the frames too long for it counted beforehand.
"""
import dataclasses
import errno
import functools
import ipaddress

import numpy as np

from netmem.errors import NetmemError
from netmem.flows import PacketTrace, generate
from netmem.netdev import ETH_MAX_MTU
from netmem.replay.config import DEFAULT_WORKLOAD, ETH_DATA_LEN, BadInput, default_chunk


def _load_trace(cfg):
    """(trace, workload FlowParams or None, expected stream lengths or None)."""
    if cfg.pcap is not None:
        try:
            trace = (PacketTrace.from_pcap(cfg.pcap) if cfg.pcap_in_memory else
                     _open_capture(cfg.pcap, cfg.pcap_keep))
        except NetmemError as e:
            raise BadInput(f"--pcap {e.strerror}", e.errno) from None
        if trace.cut_short:
            raise BadInput(f"--pcap from_pcap: {cfg.pcap}: truncated: the file ends in the "
                           f"middle of a record (after {len(trace)} TCP frames)")
        if len(trace) + sum(trace.skipped.values()) == 0:
            raise BadInput(f"--pcap from_pcap: {cfg.pcap}: holds no frames")
        trace.cache_index()     # bad input writes nothing
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


def _open_capture(path, keep=0):
    """The trace of a capture, streamed from the file (so a capture of any size replays in
    bounded memory; each loop reads it again, through the page cache, but its first ``keep``
    bytes), its index from the cache (``PacketTrace.from_index_cache()``); or read whole when
    its frames are not all Ethernet (raw IP and Linux cooked frames are converted in memory)."""
    try:
        return PacketTrace.from_index_cache(path, keep)
    except NetmemError as e:
        if e.errno != errno.EOPNOTSUPP:
            raise
    return PacketTrace.from_pcap(path)


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
    VLAN tags``). Without ``--chunk``, the chunk follows the MTU (``default_chunk()``)."""
    l3 = trace.l3_lengths()
    largest = int(l3.max()) if len(l3) else 0
    if cfg.mtu is not None:
        mtu, source = cfg.mtu, "option"
    elif cfg.pcap is None:
        mtu, source = ETH_DATA_LEN, "workload"
    else:
        mtu, source = min(max(largest, ETH_DATA_LEN), ETH_MAX_MTU), "capture"
    cfg = dataclasses.replace(cfg, mtu=mtu, chunk=cfg.chunk or default_chunk(mtu))
    return cfg, _Mtu(mtu, source, largest, l3 > mtu)
