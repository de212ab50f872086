"""The netmem pytest plugin (entry point ``pytest11``).

Every test gets a leak check: each Machine made during the test is quiesced at the end (its
deferred work runs, up to two virtual minutes) and must have no page pool left, no page missing
from the buddy allocator and no net_iov still attached; otherwise the test fails with the
machine's own report. Mark a test ``@pytest.mark.netmem_leaks_ok`` to skip the check.

Fixtures: ``machine`` (a small machine), ``make_pool``/``page_pool`` (page pools on it) and
``make_nic``/``nic`` (network devices on it, unregistered at teardown after every socket is closed;
``close_sockets(machine)`` does the closing).

It also has the tshark oracle, plain functions for tests that check TCP reassembly:
``tshark_streams(pcap)``, ``tshark_follow(pcap, n)`` and ``tshark_follow_all(pcap)`` (``make
tshark`` installs tshark).
"""
import errno
import os
import shutil
import subprocess
from typing import NamedTuple

import pytest

from netmem.dma import Device
from netmem.errors import NetmemError
from netmem.machine import Machine
from netmem.netdev import NetDevice
from netmem.page_pool import (
    PAGE_SIZE,
    PP_FLAG_DMA_MAP,
    PP_FLAG_DMA_SYNC_DEV,
    PagePoolParams,
    page_pool_create_percpu,
)

__all__ = ["TsharkFollow", "TsharkStream", "close_sockets", "machine", "make_nic", "make_pool",
           "nic", "page_pool", "tshark_follow", "tshark_follow_all", "tshark_streams"]


class TsharkStream(NamedTuple):
    """A TCP stream as tshark numbers it; ``node0`` sent its first packet."""

    index: int
    node0: tuple
    node1: tuple


class TsharkFollow(NamedTuple):
    """A stream's two directions as tshark reassembles them: ``dataK`` is what ``nodeK`` sent."""

    index: int
    node0: tuple
    node1: tuple
    data0: bytes
    data1: bytes


def pytest_configure(config):
    config.addinivalue_line("markers", "netmem_leaks_ok: skip the netmem leak check")


@pytest.fixture(autouse=True)
def _netmem_leak_check(request, monkeypatch):
    made = []
    init = Machine.__init__

    def tracking_init(self, *args, **kwargs):
        init(self, *args, **kwargs)
        made.append(self)

    monkeypatch.setattr(Machine, "__init__", tracking_init)
    yield
    if request.node.get_closest_marker("netmem_leaks_ok"):
        return
    problems = []
    for i, m in enumerate(made):
        m.quiesce()
        problems += [f"machine {i}: {line}" for line in m.leak_report()]
    if problems:
        pytest.fail("netmem leak check:\n  " + "\n  ".join(problems), pytrace=False)


@pytest.fixture
def machine():
    """A small machine: 64 MiB, one node, two CPUs."""
    return Machine(memory="64MiB", numa_nodes=1, cpus=2)


@pytest.fixture
def make_pool(machine):
    """``make_pool(cpuid=-1, provider=None, m=None, **params)``: a page pool on the test's
    machine (or ``m``) from ``PagePoolParams(**params)``; pools the test did not destroy are
    destroyed at teardown (the leak check then quiesces the machine)."""
    made = []

    def make(cpuid=-1, provider=None, m=None, **params):
        pool = page_pool_create_percpu(m or machine, PagePoolParams(**params), cpuid, provider)
        made.append(pool)
        return pool

    yield make
    for pool in made:
        if pool.user_cnt:
            pool.destroy()


@pytest.fixture
def page_pool(machine, make_pool):
    """An order-0 pool as a driver makes one for RX: a 256-entry ring, its pages DMA-mapped for a
    device of the machine (``pool.params.dev``) and synced for it over a whole page."""
    return make_pool(pool_size=256, dev=Device(machine), max_len=PAGE_SIZE,
                     flags=PP_FLAG_DMA_MAP | PP_FLAG_DMA_SYNC_DEV)


def close_sockets(machine):
    """Close every socket of ``machine``, as an application's exit does."""
    for sk in machine.tcp.sockets():
        sk.close()


@pytest.fixture
def make_nic(machine):
    """``make_nic(machine=None, hds=False, **kw)``: a ``NetDevice`` on the test's machine (or
    ``machine``) from ``NetDevice(machine, **kw)``, with one RX queue unless ``num_rx_queues``
    says otherwise. ``hds=True`` turns header split on (``tcp_data_split="on"``), which
    installing a memory provider needs; without it the device is as it comes up (``"auto"``,
    which the model driver runs as off). At teardown every socket of the device's machine is
    closed and the device unregistered."""
    made = []
    default = machine

    def make(machine=None, hds=False, **kw):
        kw.setdefault("num_rx_queues", 1)
        nic = NetDevice(machine or default, **kw)
        made.append(nic)
        if hds:
            nic.ethtool.set_ringparam(tcp_data_split="on")
        return nic

    yield make
    for nic in made:
        close_sockets(nic.machine)
        nic.unregister()


@pytest.fixture
def nic(make_nic):
    """A device as it comes up (``make_nic()``): one RX queue, no header split, so no memory
    provider can be installed on it; use ``make_nic(hds=True)`` for that."""
    return make_nic()


# --------------------------------------------------------------------------------------------
# tshark, the oracle for TCP reassembly: plain functions a test calls on a capture file.

def _tshark(who, args):
    """Run tshark (stdout as text); a missing tshark is an error that says how to get it, so a
    test that needs it fails rather than skips."""
    exe = shutil.which("tshark")
    if exe is None:
        raise NetmemError(errno.ENOENT, f"{who}: tshark not found on PATH: run `make tshark` "
                                        f"(Debian's tshark package)")
    proc = subprocess.run([exe, *args], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise NetmemError(errno.EIO, f"{who}: tshark {' '.join(args)} exited with "
                                     f"{proc.returncode}: {proc.stderr.strip()}")
    return proc.stdout


def _endpoint(text):
    """``192.0.2.1:5201`` or ``[2001:db8::1]:5201`` -> ("192.0.2.1", 5201); ``:0`` (no such
    stream) -> ("", 0)."""
    host, _, port = text.strip().rpartition(":")
    return host.strip("[]"), int(port)


def tshark_streams(pcap):
    """The TCP streams tshark sees in ``pcap``, in its stream index order: a list of
    ``TsharkStream(index, node0, node1)`` where each node is (address, port) and ``node0`` is
    the side that sent the stream's first packet (as in ``tshark_follow``)."""
    out = _tshark("tshark_streams", ["-r", os.fspath(pcap), "-Y", "tcp", "-T", "fields",
                                     "-e", "tcp.stream", "-e", "ip.src", "-e", "ipv6.src",
                                     "-e", "tcp.srcport", "-e", "ip.dst", "-e", "ipv6.dst",
                                     "-e", "tcp.dstport"])
    streams = {}
    for line in out.splitlines():
        # A field of a packet with two headers of a kind (an ICMP error quoting the segment,
        # a tunnel) holds both values: the outer one comes first.
        idx, s4, s6, sport, d4, d6, dport = (f.split(",")[0] for f in line.split("\t"))
        if int(idx) not in streams:
            streams[int(idx)] = TsharkStream(int(idx), (s4 or s6, int(sport)),
                                             (d4 or d6, int(dport)))
    return [streams[i] for i in sorted(streams)]


def tshark_follow(pcap, n):
    """Stream ``n`` of ``pcap`` as tshark reassembles it (``tshark -r F -q -z
    follow,tcp,raw,N``): ``TsharkFollow(index, node0, node1, data0, data1)``, each node
    (address, port) and each data the bytes that node sent, in sequence order, retransmitted
    and overlapping bytes once.

    Which side is node 0: the one that sent the first packet tshark saw of the stream (usually
    the SYN, so the client), even when that packet carries no data. In the raw output node 1's
    chunks are the lines indented with a tab.

    tshark drops a segment it takes for a spurious retransmission (all of it below an ACK the
    other side already sent), so the oracle is only as good as the capture's ACK numbers: a
    capture that ACKs bytes it never carried loses them here."""
    follows = _follow(pcap, [n], "tshark_follow")
    if not follows:
        raise NetmemError(errno.ENOENT, f"tshark_follow: {pcap} has no TCP stream {n}")
    return follows[0]


def tshark_follow_all(pcap):
    """``tshark_follow`` for every stream of ``pcap`` (two tshark runs in all), in stream
    order."""
    return _follow(pcap, [s.index for s in tshark_streams(pcap)], "tshark_follow_all")


def _follow(pcap, indices, who):
    if not indices:
        return []
    args = ["-r", os.fspath(pcap), "-q"]
    for n in indices:
        args += ["-z", f"follow,tcp,raw,{int(n)}"]
    out = _tshark(who, args)
    follows, nodes, data, index = [], {}, ([], []), None
    for line in out.splitlines():
        if line.startswith("Filter: tcp.stream eq "):
            index, nodes, data = int(line.rsplit(" ", 1)[1]), {}, ([], [])
        elif line.startswith(("Node 0:", "Node 1:")):
            nodes[int(line[5])] = _endpoint(line[8:])
        elif line.startswith("====="):
            if index is not None and len(nodes) == 2 and nodes[0][0]:  # "Node 0: :0": none
                follows.append(TsharkFollow(index, nodes[0], nodes[1], b"".join(data[0]),
                                            b"".join(data[1])))
            index = None
        elif index is not None and len(nodes) == 2 and line.strip():
            data[1 if line.startswith("\t") else 0].append(bytes.fromhex(line.strip()))
    return sorted(follows)  # tshark prints the last -z first
