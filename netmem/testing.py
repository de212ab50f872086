"""The netmem pytest plugin (entry point ``pytest11``).

Every test gets a leak check: each Machine made during the test is quiesced at the end (its
deferred work runs, up to two virtual minutes) and must have no page pool left, no page missing
from the buddy allocator and no net_iov still attached; otherwise the test fails with the
machine's own report. Mark a test ``@pytest.mark.netmem_leaks_ok`` to skip the check.

Kernel WARNs fail tests: a ``NetmemWarning`` (the model's ``WARN_ON``) that reaches the top of a
test's setup, call or teardown (the leak check's quiesce included: deferred work can WARN) fails
that phase, naming each WARN with its message and the file and line it was raised from, whatever
the project's ``filterwarnings`` say (where they make it an error already, it raises where it is
met). Expect one with ``pytest.warns(NetmemWarning)``, which catches it first; mark a test
``@pytest.mark.netmem_warn_ok`` to leave its WARNs as warnings; a project that wants none of this
says ``filterwarnings = ignore::netmem.errors.NetmemWarning``.

Fixtures: ``machine`` (a small machine), ``make_pool``/``page_pool`` (page pools on it) and
``make_nic``/``nic`` (network devices on it, unregistered at teardown after every socket is closed;
``close_sockets(machine)`` does the closing). ``ProviderConformance`` is the memory-provider
conformance suite: a provider's author subclasses it to check their provider against the
``memory_provider_ops`` contract.

It also has the tshark oracle, plain functions for tests that check TCP reassembly:
``tshark_streams(pcap)``, ``tshark_follow(pcap, n)`` and ``tshark_follow_all(pcap)`` (``make
tshark`` installs tshark).
"""
import collections
import errno
import functools
import os
import re
import shutil
import subprocess
import warnings
from typing import NamedTuple

import pytest

from netmem.dma import Device
from netmem.errors import NetmemError, NetmemWarning
from netmem.flows import generate
from netmem.machine import Machine
from netmem.netdev import NetDevice, netif_mp_close_rxq, netif_mp_open_rxq
from netmem.netlink import page_pool_get, queue_get
from netmem.netmem import netmem_is_net_iov
from netmem.page_pool import (
    PAGE_SIZE,
    PP_ALLOC_CACHE_REFILL,
    PP_ALLOC_CACHE_SIZE,
    PP_FLAG_ALLOW_UNREADABLE_NETMEM,
    PP_FLAG_DMA_MAP,
    PP_FLAG_DMA_SYNC_DEV,
    STATS_KEYS,
    PagePoolParams,
    page_pool_create_percpu,
)
from netmem.tcp import Receiver

__all__ = ["ProviderConformance", "TsharkFollow", "TsharkStream", "close_sockets", "machine",
           "make_nic", "make_pool", "nic", "page_pool", "tshark_follow", "tshark_follow_all",
           "tshark_streams"]


class TsharkStream(NamedTuple):
    """A TCP stream as tshark numbers it; ``node0`` sent its first packet."""

    index: int
    node0: tuple
    node1: tuple


class TsharkFollow(NamedTuple):
    """A stream's two directions as tshark reassembles them: ``dataK`` is what ``nodeK`` sent,
    up to the first bytes the capture lacks (what a Linux receiver delivers); ``gaps`` is, per
    node, None or ``(at, missing)``: the first gap tshark reported in that node's data, at byte
    ``at`` of it (``len(dataK)``), ``missing`` bytes long. tshark reports a gap only when the
    other side acknowledged the bytes the capture lacks; it then prints a marker in their place
    and carries on (see ``tshark_follow``)."""

    index: int
    node0: tuple
    node1: tuple
    data0: bytes
    data1: bytes
    gaps: tuple = (None, None)


def pytest_configure(config):
    config.addinivalue_line("markers", "netmem_leaks_ok: skip the netmem leak check")
    config.addinivalue_line("markers", "netmem_warn_ok: let kernel WARNs (NetmemWarning) stay "
                                       "warnings in this test instead of failing it")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item):
    return (yield from _fail_on_kernel_warn(item, "setup"))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item):
    return (yield from _fail_on_kernel_warn(item, "call"))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item, nextitem):
    return (yield from _fail_on_kernel_warn(item, "teardown"))


def _fail_on_kernel_warn(item, when):
    """Run one phase of ``item`` recording the NetmemWarnings that reach the top (the ones no
    ``pytest.warns`` caught), then fail the phase naming each. Other warnings go on to pytest as
    they came, and so do the kernel's when the phase failed anyway. Where the filters already
    make NetmemWarning an error (``-W error``, a ``filterwarnings = error`` project) it raises
    where it is met, as before; a filter that ignores NetmemWarning by name is obeyed."""
    if item.get_closest_marker("netmem_warn_ok") or _netmem_warnings_handled():
        return (yield)
    failed = True
    try:
        with warnings.catch_warnings(record=True) as log:
            warnings.filterwarnings("always", category=NetmemWarning)
            res = yield
        failed = False
    finally:
        kernel = [w for w in log if not failed and issubclass(w.category, NetmemWarning)]
        for w in log:
            if not (kernel and w in kernel):
                warnings.warn_explicit(w.message, w.category, w.filename, w.lineno,
                                       source=w.source)
    if kernel:
        pytest.fail(f"kernel WARN during {when} (expect it with pytest.warns(NetmemWarning), "
                    "or mark the test netmem_warn_ok):\n  "
                    + "\n  ".join(f"{w.filename}:{w.lineno}: {w.message}" for w in kernel),
                    pytrace=False)
    return res


def _netmem_warnings_handled():
    """True when the warning filters in force make every NetmemWarning an exception, or
    ignore NetmemWarning by its name (a broader ignore, of UserWarning, does not count)."""
    for action, message, category, module, _ in warnings.filters:
        if issubclass(NetmemWarning, category) and message is None and module is None:
            return action == "error" or (action == "ignore" and category is NetmemWarning)
    return False


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
# The memory-provider conformance suite.

_MP_FLAGS = PP_FLAG_DMA_MAP | PP_FLAG_DMA_SYNC_DEV | PP_FLAG_ALLOW_UNREADABLE_NETMEM
_ALLOCS = 2 * PP_ALLOC_CACHE_REFILL + 8     # allocations per round: past a whole cache refill
_FLOWS = {"connections": 2, "payload": 16384, "seed": 1}   # about 24 payload buffers
# The cycling test: 3,000 allocations (47 rounds of a 64-buffer provider) in rounds of 40, up
# to 8 of each round (a quarter, for a small provider) kept out into the next, through a 4-entry
# ring, so that most puts overflow the ring to release_netmem and most allocations come from
# alloc_netmems.
_CYCLES, _ROUND, _KEEP, _SMALL_RING = 3000, 40, 8, 4
# The DMA scenario: ncdevmem's -v 7 pattern over two connections of 24 KiB (about 34 payload
# buffers, all held by the sockets until the end), fed 8 frames per NAPI run into a ring of 16
# descriptors, which an ethtool ring change halves half-way.
_VALIDATE = 7
_DMA_FLOWS = {"connections": 2, "payload": 24576, "validate": _VALIDATE, "seed": 1}
_RING, _CHUNK = 16, 8

# The rules of the contract, as failures name them: what the provider must do, and the kernel
# functions behind it.
_RULE_OPS = ("rule: a memory_provider_ops op returns what the contract says and never raises "
             "(the kernel's ops are C functions: alloc_netmems returns a netmem_ref of this "
             "machine attached with net_mp_niov_set_page_pool(), or 0; release_netmem a bool; "
             "init 0 or a negative errno; nl_fill netlink attributes)")
_RULE_CLEAR = ("rule: release_netmem must clear the net_iov's pp info "
               "(net_mp_niov_clear_page_pool(), as io_pp_zc_release_netmem() and "
               "mp_dmabuf_devmem_release_page() do)")
_RULE_ONCE = ("rule: alloc_netmems hands out a net_iov only while no pool holds it: a buffer "
              "leaves the provider's free list once per release (net_mp_niov_set_page_pool(); "
              "mp_dmabuf_devmem_alloc_netmems(), io_pp_zc_alloc_netmems())")
_RULE_BALANCE = ("rule: every buffer comes back, one release per hold, and init and destroy "
                 "run once each (page_pool_release() reaches inflight 0; mp_ops->init() from "
                 "page_pool_init(), mp_ops->destroy() from __page_pool_destroy())")
_RULE_CLEAN = ("rule: once the device and the provider are gone, the machine is as it started: "
               "no page pool left, every page and net_iov home, no DMA where nothing was "
               "mapped (page_pool_release(), machine.leak_report())")
_RULE_CACHE = ("rule: alloc_netmems places at most what the alloc cache holds "
               "(net_mp_netmem_place_in_cache(), PP_ALLOC_CACHE_SIZE), and the pool hands those "
               "out first (alloc_fast)")
_RULE_SLOW = ("rule: the pool calls alloc_netmems only when its alloc cache and ptr_ring are "
              "empty (page_pool_alloc_netmems() -> __page_pool_alloc_netmems_slow())")
_RULE_HIGH_ORDER = ("rule: init must refuse a pool of order > 0 with a negative errno (its "
                    "net_iovs are 4 KiB: mp_dmabuf_devmem_init() returns -E2BIG, "
                    "io_pp_zc_init() -EINVAL)")
_RULE_CORE_REFUSES = ("rule: page_pool_init() gives a provider only to a pool with "
                      "PP_FLAG_ALLOW_UNREADABLE_NETMEM (any other pool ignores it and runs on "
                      "host pages) and refuses one without PP_FLAG_DMA_MAP and "
                      "PP_FLAG_DMA_SYNC_DEV (EOPNOTSUPP), before it calls mp_ops->init()")
_RULE_NO_MP_DRIVER = ("rule: a queue whose driver ignores providers refuses the install "
                      "(page_pool_check_memory_provider(): ENODATA) and keeps its pages")
_RULE_NO_PUT = ("rule: release_netmem returns false for a net_iov, so that the core never "
                "put_page()s one (page_pool_return_netmem(); io_pp_zc_release_netmem() and "
                "mp_dmabuf_devmem_release_page() return false)")
_RULE_UNBIND = ("rule: unbinding a queue restarts it on pages, and its old pool lives until the "
                "sockets give its buffers back (__netif_mp_close_rxq(), page_pool_destroy())")
_RULE_UNINSTALL = ("rule: unregistering the device calls the provider's uninstall op once per "
                   "bound queue (dev_memory_provider_uninstall() -> mp_ops->uninstall())")
_RULE_NL = ("rule: nl_fill gives a dict of netlink attributes, for page-pool-get (rxq None) "
            "and for queue-get, and the replies carry them (page_pool_nl_fill(), "
            "netdev_nl_queue_fill_one() -> mp_ops->nl_fill())")
_RULE_RESTART = ("rule: a queue restart makes a new pool that takes the provider while the "
                 "sockets hold the old pool's buffers (netdev_rx_queue_restart(): "
                 "ndo_queue_mem_alloc(), page_pool_check_memory_provider())")
_RULE_DMA_ADDR = ("rule: every net_iov a NIC's pool hands out carries the DMA address of "
                  "memory mapped for the pool's device (net_mp_niov_set_dma_addr(), as "
                  "net_devmem_bind_dmabuf() and io_zcrx_map_area() set it)")
_RULE_FAULTS = ("rule: the device's writes land in memory mapped for it: no IOMMU fault (the "
                "provider's DMA addresses are IOVAs of its memory, from dma_map_sgtable() or "
                "dma_map_page_attrs())")
_RULE_UNMAPPED = ("rule: the device writes only where a mapping is: no DMA to an address "
                  "nothing mapped, which dma-direct cannot fault (the addresses come from "
                  "dma_map_sgtable() or dma_map_page_attrs(), never 0)")
_RULE_PAYLOAD = ("rule: the payload is in the provider's memory where its cmsgs say: "
                 "memory_map() at each cmsg's frag_offset holds the bytes sent "
                 "(tcp_recvmsg_dmabuf(): frag_offset = net_iov_virtual_addr() + frag offset)")


def _driving(test):
    """Run a conformance test with the core's kernel WARNs (``NetmemWarning``) as errors, and
    turn an error out of the model, which a provider op raised or caused, into a failure that
    names the rule."""
    @functools.wraps(test)
    def run(*args, **kwargs):
        with warnings.catch_warnings():
            warnings.simplefilter("error", NetmemWarning)
            try:
                return test(*args, **kwargs)
            except AssertionError:
                raise
            except Exception as e:
                pytest.fail(f"{_rule_of_error(e)}: {type(e).__name__}: {e}")
    return run


def _rule_of_error(e):
    """The rule an error out of the model says was broken: net_mp_niov_set_page_pool()'s
    EEXIST is a net_iov handed out while a pool holds it (or one never cleared on release)."""
    if isinstance(e, NetmemError) and e.errno == errno.EEXIST and \
            "net_mp_niov_set_page_pool" in str(e):
        return f"{_RULE_ONCE}; or {_RULE_CLEAR}"
    return _RULE_OPS


class _Ledger:
    """Who owns each buffer, from the ``page_pool_state_hold``/``_release`` tracepoints in the
    order they fired: a hold of a buffer another pool owns breaks ``_RULE_ONCE``; a net_iov
    whose last event is a release must have the pp field and ``pp_magic`` of its descriptor
    clear (``_RULE_CLEAR``), read raw, so a stale pool pointer is seen after the pool is gone.
    ``holds``/``releases``: Counters of netmems per pool id; ``net_iovs``: every net_iov held."""

    def __init__(self, machine):
        self.machine = machine
        self.owner = {}
        self.holds = collections.defaultdict(collections.Counter)
        self.releases = collections.defaultdict(collections.Counter)
        self.net_iovs = set()
        machine.trace.clear()
        machine.trace.enable("page_pool:page_pool_state_*")

    def check(self):
        """Take the events fired since the last check and assert the two rules."""
        for e in self.machine.trace.events:
            ref, pool = e["netmem"], e["pool"]
            if e["event"].endswith("_hold"):
                assert not self.owner.get(ref), (
                    f"{_RULE_ONCE}: netmem {ref:#x} went to page_pool {pool} while page_pool "
                    f"{self.owner[ref]} held it")
                self.owner[ref] = pool
                self.holds[pool][ref] += 1
                if netmem_is_net_iov(ref):
                    self.net_iovs.add(ref)
            else:
                self.owner[ref] = 0
                self.releases[pool][ref] += 1
        self.machine.trace.clear()
        stale = [(ref, self.machine.netmem(ref)) for ref, pool in self.owner.items()
                 if not pool and netmem_is_net_iov(ref)]
        stale = [(ref, v.pp_id, v.pp_magic) for ref, v in stale if v.pp_id or v.pp_magic]
        assert not stale, (
            f"{_RULE_CLEAR}: {len(stale)} net_iov(s) released with their pp info set, e.g. "
            f"{stale[0][0]:#x} (pp = page_pool {stale[0][1]}, pp_magic {stale[0][2]:#x})")

    def close(self):
        self.check()
        self.machine.trace.disable("page_pool:page_pool_state_*")


class ProviderConformance:
    """The ``struct memory_provider_ops`` contract as tests, for a provider's author to run
    against their provider. Subclass it in a test module under a ``Test*`` name (pytest
    collects only those, so this base never runs by itself) and give ``make_provider``::

        class TestMyProviderConformance(ProviderConformance):
            def make_provider(self, machine, nic):
                return MyProvider(machine, nic)

    What it checks, each failure naming the rule and the kernel functions behind it:

    - every buffer comes back once per hold at a pool's teardown, ``init`` and ``destroy``
      once each, and ``release_netmem`` leaves each net_iov's descriptor clear: its ``pp``
      field and ``pp_magic`` read raw (``NetmemView.pp_id``), so a pool pointer left behind
      (a missing ``net_mp_niov_clear_page_pool()``) is seen even once the pool is gone;
    - no buffer is handed out twice: 3,000 allocations through two pools on the provider, the
      second made while the first's buffers are out (as a queue restart makes it), with a
      4-entry ring that overflows to ``release_netmem``; every netmem handed out is tracked
      until put back, and the pool tracepoints show no buffer taken while a pool holds it;
    - what ``alloc_netmems`` places in the alloc cache is served first and never overfills it;
      the pool calls it only on an empty cache and ring;
    - ``init`` refuses order > 0 (``refuses_high_order``); pools the core refuses never reach
      ``init``; a driver that ignores providers refuses the install (ENODATA);
    - net_iovs never go to ``put_page`` (``expects_net_iovs``: ``release_netmem`` returns
      False); unbinding a queue while sockets hold its buffers; ``uninstall`` on unregister;
      ``nl_fill`` gives a dict the netdev family's replies carry;
    - the device's writes land in the provider's memory, once with ``iommu="none"`` and once
      with ``"dma-iommu"``: generated TCP traffic with ncdevmem's ``-v 7`` pattern goes through
      a bound queue that an ethtool ring change restarts half-way (a new pool takes the
      provider while the sockets hold the old one's buffers); every net_iov handed out has a
      DMA address, there is no IOMMU fault and no DMA to an address nothing mapped
      (``machine.iommu.unmapped_accesses``), and, where the provider has ``memory_map()``,
      every payload byte the sockets got is read through it at its cmsg's ``frag_offset``
      (``netmem.tcp.Receiver``) and compared with what was sent. The scenario holds about 40
      of the provider's 4 KiB buffers at once. The other tests that carry traffic (unbind,
      unregister) check the DMA rules and the tracepoint ledger too, on the ``machine``
      fixture.

    Any error out of the model while the provider is driven (an op that raises or returns the
    wrong type, a refused ref) and any kernel WARN (``NetmemWarning``) fails the test.

    Every test makes a device with header split on and ``num_rx_queues`` queues, and a fresh
    provider for it, and ends with everything back: sockets closed, the device unregistered,
    deferred work run, ``assert_provider_whole``, ``free_provider``, deferred work run again,
    and ``machine.leak_report() == []``. The DMA tests run on ``make_machine(iommu)``, the
    others on the ``machine`` fixture, which a subclass may override in its class body.

    Hooks: ``make_provider`` (required); ``install``/``uninstall``, how the tests bind the
    provider to RX queue ``rx_queue`` and unbind it (``netif_mp_open_rxq``/``netif_mp_close_rxq``
    by default; a devmem provider binds its dma-buf with bind-rx instead). The ``uninstall``
    hook is the user's unbind, not the provider's ``uninstall`` op, which
    ``NetDevice.unregister`` calls. ``assert_provider_whole`` checks the provider's own
    accounting, ``free_provider`` frees what ``make_provider`` made, ``make_machine`` makes the
    DMA tests' machine. Attributes say which rules apply: ``refuses_high_order``,
    ``expects_net_iovs``; a provider with ``is_host`` (the host-pages path, which is no
    provider: its pools get no ``mp_ops``) runs only ``test_every_buffer_comes_back`` and the
    DMA tests, on the queue's own pages.

    The tests read the pool's counters and the ``page_pool_state_hold``/``_release``
    tracepoints, so a provider whose buffer ops run in C is checked like one in Python; the
    return value of ``release_netmem`` is seen only where the pool calls it through Python.
    """

    #: ``init`` refuses a pool of order > 0 with a negative errno (the kernel's providers do:
    #: their net_iovs are 4 KiB; devmem returns -E2BIG, io_uring zcrx -EINVAL).
    refuses_high_order = True
    #: Every buffer the provider hands out is a net_iov (``release_netmem`` then returns False).
    expects_net_iovs = True
    #: The RX queue the tests bind, of a device with ``num_rx_queues`` queues.
    rx_queue = 0
    num_rx_queues = 1

    # -- hooks -----------------------------------------------------------------------------------

    def make_provider(self, machine, nic):
        """A fresh provider for ``nic`` on ``machine``."""
        raise NotImplementedError(f"{type(self).__name__}: give make_provider(machine, nic)")

    def install(self, nic, queue, provider):
        """Bind ``provider`` to RX queue ``queue`` of ``nic`` (default: ``netif_mp_open_rxq``)."""
        netif_mp_open_rxq(nic, queue, provider)

    def uninstall(self, nic, queue, provider):
        """Unbind ``provider`` from the queue ``install`` bound (default: ``netif_mp_close_rxq``,
        which restarts the queue on pages; the old pool lives while its buffers are out). Also
        called after the device is unregistered, where it must be harmless."""
        netif_mp_close_rxq(nic, queue, provider)

    def assert_provider_whole(self, provider):
        """Assert the provider's own accounting is whole: every buffer it handed out is back
        (called once no pool holds any). Default: nothing to check."""

    def free_provider(self, provider):
        """Free what ``make_provider`` made (called once the provider is whole). Default:
        nothing to free."""

    def make_machine(self, iommu):
        """The machine of the DMA tests, in IOMMU mode ``iommu`` (``"none"``, then
        ``"dma-iommu"``): by default the ``machine`` fixture's size, 64 MiB, one node, two
        CPUs."""
        return Machine(memory="64MiB", numa_nodes=1, cpus=2, iommu=iommu)

    @pytest.fixture(params=["none", "dma-iommu"])
    def dma_machine(self, request):
        """``make_machine(iommu)`` once per IOMMU mode."""
        return self.make_machine(request.param)

    # -- the rules -------------------------------------------------------------------------------

    @_driving
    def test_every_buffer_comes_back(self, machine, make_nic, make_pool, monkeypatch):
        """After a pool's traffic and teardown every buffer came back: one release
        (``release_netmem`` for a provider) per hold of each buffer, each descriptor's pp field
        and ``pp_magic`` clear, the pool freed with inflight 0, ``init`` and ``destroy`` called
        once each."""
        nic, provider = self._setup(machine, make_nic, ops=False)
        log = self._spy(monkeypatch, provider, "init", "destroy")
        pool = self._pool(make_pool, nic, provider)
        holds, releases = self._pool_life(machine, pool)
        assert holds and releases == holds, (
            f"{_RULE_BALANCE}: holds and releases differ: "
            f"{sorted((holds - releases) + (releases - holds))[:4]}")
        held = [(ref, machine.netmem(ref)) for ref in holds]
        held = [(ref, v.pp_id, v.pp_magic) for ref, v in held if v.pp_id or v.pp_magic]
        assert not held, (f"{_RULE_CLEAR}: netmem {held[0][0]:#x} is back with pp = "
                          f"page_pool {held[0][1]}, pp_magic {held[0][2]:#x}")
        assert (pool.freed, pool.inflight, pool.hold_cnt) == (True, 0, pool.release_cnt), \
            f"{_RULE_BALANCE}: {pool!r}"
        assert [(op, args) for op, args, _ in log] == \
            ([] if provider.is_host else [("init", (pool,)), ("destroy", (pool,))]), \
            f"{_RULE_BALANCE}: the calls were {[op for op, _, _ in log]}"
        self._finish(machine, nic, provider)

    @_driving
    def test_no_buffer_is_handed_out_twice(self, machine, make_nic, make_pool):
        """Two pools on the provider, as a queue restart makes them: the second is created
        while the first's buffers are out, and the first destroyed (deferred) meanwhile. Each
        runs half of ``_CYCLES`` allocations in rounds through a 4-entry ring that overflows to
        ``release_netmem``; no netmem comes out of a pool while handed out, no pool takes a
        buffer another holds, and every net_iov back with the provider is clear."""
        nic, provider = self._setup(machine, make_nic)
        ledger, out = _Ledger(machine), {}
        first = self._pool(make_pool, nic, provider, pool_size=_SMALL_RING)
        kept = self._cycle(first, out, ledger)
        second = self._pool(make_pool, nic, provider, pool_size=_SMALL_RING)
        first.destroy()                         # ndo_queue_mem_free(): deferred, buffers out
        kept2 = self._cycle(second, out, ledger)
        self._put_all(first, kept)
        self._put_all(second, kept2)
        second.destroy()
        machine.quiesce()
        ledger.close()
        assert first.freed and second.freed, f"{_RULE_BALANCE}: {first!r}, {second!r}"
        self._finish(machine, nic, provider)

    @_driving
    def test_placed_buffers_are_served_from_the_alloc_cache(self, machine, make_nic, make_pool):
        """What ``alloc_netmems`` places with ``net_mp_netmem_place_in_cache`` is handed out by
        the alloc cache (``alloc_fast``), and never more than the cache holds."""
        nic, provider = self._setup(machine, make_nic)
        pool = self._pool(make_pool, nic, provider)
        held, log = self._alloc(pool, _ALLOCS)
        calls = [(entry, after) for entry, bumped, after in log if bumped == ["alloc_empty"]]
        assert calls, f"{_RULE_SLOW}: the pool never called alloc_netmems"
        assert max(after for _, after in calls) <= PP_ALLOC_CACHE_SIZE, _RULE_CACHE
        placed = sum(after - cache for (cache, _), after in calls)
        served = [bumped for (cache, _), bumped, _ in log if cache]
        assert served == [["alloc_fast"]] * (placed - pool.alloc_count), _RULE_CACHE
        self._put_all(pool, held)
        pool.destroy()
        self._finish(machine, nic, provider)

    @_driving
    def test_alloc_netmems_runs_only_on_an_empty_cache_and_ring(self, machine, make_nic,
                                                                make_pool):
        """The pool calls ``alloc_netmems`` (counting ``alloc_empty``) only when its alloc cache
        and ptr_ring are both empty: buffers back through the ring are handed out first."""
        nic, provider = self._setup(machine, make_nic)
        pool = self._pool(make_pool, nic, provider)
        held, log = self._alloc(pool, _ALLOCS)
        half = len(held) // 2
        self._put_all(pool, held[:half])        # into the ptr_ring: not NAPI-local here
        assert pool.ring_count == half, f"{_RULE_SLOW}: {half} puts, ring {pool.ring_count}"
        more, log2 = self._alloc(pool, _ALLOCS)
        entries = [entry for entry, bumped, _ in log + log2 if "alloc_empty" in bumped]
        assert entries and set(entries) == {(0, 0)}, f"{_RULE_SLOW}: (cache, ring) {entries}"
        assert (["alloc_refill"] in [bumped for _, bumped, _ in log2]) == (half > 0), _RULE_SLOW
        self._put_all(pool, held[half:] + more)
        pool.destroy()
        self._finish(machine, nic, provider)

    @_driving
    def test_init_refuses_high_order(self, machine, make_nic, make_pool, monkeypatch):
        """``init`` refuses a pool of order 1 with a negative errno, which the pool's creation
        raises; no pool is left listed and ``destroy`` is not called."""
        if not self.refuses_high_order:
            pytest.skip("refuses_high_order is False: the provider takes high-order pools")
        nic, provider = self._setup(machine, make_nic)
        log = self._spy(monkeypatch, provider, "init", "destroy")
        pools = list(machine.page_pools)
        try:
            pool = self._pool(make_pool, nic, provider, order=1)
        except NetmemError as e:
            err = log[0][2] if log else None
            assert [op for op, _, _ in log] == ["init"] and err < 0 and e.errno == -err, \
                f"{_RULE_HIGH_ORDER}: calls {log}, raised {e!r}"
        else:
            pool.destroy()
            pytest.fail(f"{_RULE_HIGH_ORDER}: init took a pool of order 1 (returned "
                        f"{log[0][2] if log else None!r})")
        assert machine.page_pools == pools, f"{_RULE_HIGH_ORDER}: a refused pool is listed"
        self._finish(machine, nic, provider)

    @_driving
    def test_pools_the_core_refuses_never_reach_init(self, machine, make_nic, make_pool,
                                                     monkeypatch):
        """A pool without ``PP_FLAG_ALLOW_UNREADABLE_NETMEM`` ignores the provider (it is an
        ordinary host-page pool), and one without ``PP_FLAG_DMA_MAP`` and
        ``PP_FLAG_DMA_SYNC_DEV`` is refused (EOPNOTSUPP, which ``page_pool_init()`` checks
        before ``init``): either way the provider is not called."""
        nic, provider = self._setup(machine, make_nic)
        log = self._spy(monkeypatch, provider, "init", "destroy", "alloc_netmems")
        pools = list(machine.page_pools)
        plain = self._pool(make_pool, nic, provider, flags=PP_FLAG_DMA_MAP | PP_FLAG_DMA_SYNC_DEV)
        ref = plain.alloc_netmem()
        assert plain.provider is None and not netmem_is_net_iov(ref), \
            f"{_RULE_CORE_REFUSES}: a pool without the flag took the provider"
        plain.put_netmem(ref)
        plain.destroy()
        with pytest.raises(NetmemError) as e:
            self._pool(make_pool, nic, provider, flags=PP_FLAG_ALLOW_UNREADABLE_NETMEM)
        assert e.value.errno == errno.EOPNOTSUPP, f"{_RULE_CORE_REFUSES}: {e.value}"
        assert (log, machine.page_pools) == ([], pools), f"{_RULE_CORE_REFUSES}: calls {log}"
        self._finish(machine, nic, provider)

    @_driving
    def test_install_fails_where_the_driver_ignores_providers(self, machine, make_nic):
        """A driver whose pools lack ``PP_FLAG_ALLOW_UNREADABLE_NETMEM`` never takes the
        provider: ``install`` fails with ENODATA (``page_pool_check_memory_provider()``) and
        the queue keeps running on its pages."""
        nic, provider = self._setup(machine, make_nic, mp_aware=False)
        q = nic.rx_queues[self.rx_queue]
        pool = q.page_pool
        with pytest.raises(NetmemError) as e:
            self.install(nic, q.idx, provider)
        assert e.value.errno == errno.ENODATA, f"{_RULE_NO_MP_DRIVER}: {e.value}"
        assert (q.mp, q.page_pool) == (None, pool), _RULE_NO_MP_DRIVER
        self._finish(machine, nic, provider)

    @_driving
    def test_net_iovs_never_go_through_put_page(self, machine, make_nic, make_pool, monkeypatch):
        """Every buffer the provider hands out is a net_iov, and ``release_netmem`` returns
        False for each: the core must never put_page one."""
        if not self.expects_net_iovs:
            pytest.skip("expects_net_iovs is False: the provider hands out pages")
        nic, provider = self._setup(machine, make_nic)
        log = self._spy(monkeypatch, provider, "release_netmem")
        pool = self._pool(make_pool, nic, provider)
        holds, _ = self._pool_life(machine, pool)
        pages = [ref for ref in holds if not netmem_is_net_iov(ref)]
        assert holds and not pages, f"{_RULE_NO_PUT}: pages handed out, e.g. {pages[:1]}"
        put = [(args[1], out) for _, args, out in log if out is not False]
        assert not put, (f"{_RULE_NO_PUT}: release_netmem returned {put[0][1]!r} for net_iov "
                         f"{put[0][0]:#x}")
        self._finish(machine, nic, provider)

    @_driving
    def test_unbind_with_buffers_in_flight(self, machine, make_nic):
        """Unbinding a queue whose buffers sockets still hold: the queue restarts on pages, the
        old pool lives until the sockets let go of its buffers, then goes; nothing is lost."""
        nic, provider = self._setup(machine, make_nic)
        q = nic.rx_queues[self.rx_queue]
        self.install(nic, q.idx, provider)
        old = q.page_pool
        assert (q.mp, old.provider) == (provider, provider), \
            f"{_RULE_RESTART}: the queue's pool has provider {old.provider!r}"
        self._receive(nic, q)
        self.uninstall(nic, q.idx, provider)
        assert (q.mp, q.page_pool.provider) == (None, None), _RULE_UNBIND
        assert old.destroy_cnt and not old.freed and old.inflight > 0, \
            f"{_RULE_UNBIND}: the sockets hold none of the provider's buffers ({old!r})"
        close_sockets(machine)
        machine.quiesce()
        assert old.freed, f"{_RULE_UNBIND}: {old!r}"
        self._finish(machine, nic, provider)

    @_driving
    def test_netdev_unregister_calls_uninstall(self, machine, make_nic, monkeypatch):
        """Unregistering the device (sockets still holding buffers) calls the provider's
        ``uninstall`` op once for its queue; the user's unbind after that is harmless."""
        nic, provider = self._setup(machine, make_nic)
        q = nic.rx_queues[self.rx_queue]
        self.install(nic, q.idx, provider)
        self._receive(nic, q)
        log = self._spy(monkeypatch, provider, "uninstall")
        nic.unregister()
        assert log == [("uninstall", (q,), None)], f"{_RULE_UNINSTALL}: calls {log}"
        self.uninstall(nic, q.idx, provider)
        self._finish(machine, nic, provider)

    @_driving
    def test_nl_fill_returns_a_dict(self, machine, make_nic):
        """``nl_fill`` gives a dict of netlink attributes for page-pool-get (rxq None) and for
        queue-get, and the netdev family's replies carry them."""
        nic, provider = self._setup(machine, make_nic)
        q = nic.rx_queues[self.rx_queue]
        self.install(nic, q.idx, provider)
        for rxq in (None, q):
            attrs = provider.nl_fill(rxq)
            assert isinstance(attrs, dict) and all(isinstance(k, str) for k in attrs), \
                f"{_RULE_NL}: nl_fill({rxq!r}) returned {attrs!r}"
        assert queue_get(machine, nic.ifindex, q.idx).items() >= provider.nl_fill(q).items(), \
            _RULE_NL
        assert page_pool_get(machine, q.page_pool.id).items() >= \
            provider.nl_fill(None).items(), _RULE_NL
        self.uninstall(nic, q.idx, provider)
        self._finish(machine, nic, provider)

    @_driving
    def test_device_writes_land_in_provider_memory(self, dma_machine, make_nic):
        """TCP traffic with ncdevmem's pattern through a queue bound to the provider, which an
        ethtool ring change restarts half-way (a new pool takes the provider while the sockets
        hold the old pool's buffers): every net_iov handed out has a DMA address, no write
        faulted or went where nothing is mapped, no pool took a buffer another holds, and every
        payload byte read back (through ``memory_map()`` for a provider that has it) is the
        byte sent."""
        m = dma_machine
        nic, provider = self._setup(m, make_nic, ops=False)
        nic.ethtool.set_ringparam(rx_ring_size=_RING)
        q = nic.rx_queues[self.rx_queue]
        ledger = _Ledger(m)
        if not provider.is_host:
            self.install(nic, q.idx, provider)
        flows = generate(**_DMA_FLOWS)
        rx = self._receiver(m, provider)
        nic.ethtool.add_ntuple("tcp4", dst_port=flows.connections[0].server[1], queue=q.idx)
        half = len(flows.trace) // 2
        self._feed(nic, flows.trace, 0, half)
        ledger.check()
        self._assert_dma_landed(m, ledger)
        old = q.page_pool
        nic.ethtool.set_ringparam(rx_ring_size=_RING // 2)
        assert q.page_pool is not old and q.page_pool.provider is old.provider and \
            old.destroy_cnt and not old.freed, \
            f"{_RULE_RESTART}: old {old!r}, new {q.page_pool!r}"
        self._feed(nic, flows.trace, half, len(flows.trace))
        ledger.close()
        self._assert_dma_landed(m, ledger)
        if rx is not None:
            self._assert_payload(rx, flows)
        if not provider.is_host:
            self.uninstall(nic, q.idx, provider)
        self._finish(m, nic, provider)

    # -- helpers ---------------------------------------------------------------------------------

    def _setup(self, machine, make_nic, ops=True, **nic_kw):
        """A device with header split and a fresh provider for it. A test of the ops (``ops``)
        is skipped for the host-pages provider."""
        nic = make_nic(machine=machine, hds=True, num_rx_queues=self.num_rx_queues, **nic_kw)
        provider = self.make_provider(machine, nic)
        if ops and provider.is_host:
            self.free_provider(provider)
            pytest.skip("the host-pages provider is no provider: its pools get no mp_ops")
        return nic, provider

    def _finish(self, machine, nic, provider):
        """Everything back: sockets closed, the device unregistered, deferred work run, the
        provider whole and freed, the machine clean."""
        close_sockets(machine)
        nic.unregister()
        machine.quiesce()
        self.assert_provider_whole(provider)
        self.free_provider(provider)
        machine.quiesce()
        assert machine.leak_report() == [], f"{_RULE_CLEAN}: {machine.leak_report()}"

    def _pool(self, make_pool, nic, provider, **params):
        """A pool over ``provider`` as the driver makes one for queue ``rx_queue``: order 0, on
        the device's DMA function, mapped and synced, taking unreadable netmem."""
        return make_pool(provider=provider, m=nic.machine, **{
            "pool_size": 256, "dev": nic.pcidev, "max_len": PAGE_SIZE, "flags": _MP_FLAGS,
            "netdev": nic, "queue_idx": self.rx_queue, **params})

    @staticmethod
    def _spy(monkeypatch, provider, *ops):
        """Log every call of the provider's ``ops`` as (op, args, result), by shadowing them on
        the instance (the model calls a provider's Python ops through its attributes)."""
        log = []

        def spy(op, real):
            def call(*args):
                out = real(*args)
                log.append((op, args, out))
                return out
            return call

        for op in ops:
            monkeypatch.setattr(provider, op, spy(op, getattr(provider, op)))
        return log

    @staticmethod
    def _alloc(pool, n):
        """``n`` allocations one by one, as a driver refilling its ring makes them. Returns the
        buffers got and a log: per allocation, (cache, ring) before it, the alloc counters it
        bumped and the cache after it."""
        held, log = [], []
        for _ in range(n):
            entry, before = (pool.alloc_count, pool.ring_count), pool.stats
            ref = pool.alloc_netmem()
            after = pool.stats
            log.append((entry, [k for k in STATS_KEYS if after[k] != before[k]],
                        pool.alloc_count))
            if ref:
                held.append(ref)
        return held, log

    @staticmethod
    def _put_all(pool, refs):
        for ref in refs:
            pool.put_netmem(ref)

    @staticmethod
    def _cycle(pool, out, ledger):
        """Half of ``_CYCLES`` allocations from ``pool`` in rounds of ``_ROUND``, each netmem
        recorded in ``out`` (netmem -> pool id) while handed out; after each round all but the
        newest ``_KEEP`` (a quarter, if fewer) go back through the ring (not NAPI-local) and
        ``ledger`` is checked.
        Returns the buffers still out."""
        mine = []
        for _ in range(_CYCLES // 2 // _ROUND):
            for _ in range(_ROUND):
                ref = pool.alloc_netmem()
                if not ref:
                    break
                assert ref not in out, (
                    f"{_RULE_ONCE}: netmem {ref:#x} came out of page_pool {pool.id} while "
                    f"handed out by page_pool {out[ref]}")
                out[ref] = pool.id
                mine.append(ref)
            keep = len(mine) - min(_KEEP, len(mine) // 4)
            back, mine = mine[:keep], mine[keep:]
            for ref in back:
                del out[ref]
                pool.put_netmem(ref)
            ledger.check()
        return mine

    def _pool_life(self, machine, pool):
        """A pool's life, traced: two frags of a buffer, a round of allocations, half of them
        recycled into the alloc cache and half through the ptr_ring, another round, then
        ``destroy`` with all that out (deferred) and the buffers back after it. Returns
        Counters of the pool's ``page_pool_state_hold`` and ``_release`` events by netmem."""
        ledger = _Ledger(machine)
        frags = [pool.alloc_frag(PAGE_SIZE // 4)[0] for _ in range(2)]
        held, _ = self._alloc(pool, _ALLOCS)
        for ref in held[::2]:
            pool.recycle_direct(ref)
        self._put_all(pool, held[1::2])
        held = pool.alloc_netmems_bulk(_ALLOCS).tolist()
        pool.destroy()
        self._put_all(pool, [ref for ref in frags if ref] + held)
        machine.quiesce()
        ledger.close()
        return ledger.holds[pool.id], ledger.releases[pool.id]

    def _receive(self, nic, q):
        """Generated TCP traffic, steered to queue ``q`` by an ntuple rule on the server port
        (as ncdevmem steers it) and left unread in the sockets, whose skbs hold its payload
        buffers; then the ledger's and the DMA rules."""
        ledger = _Ledger(nic.machine)
        flows = generate(**_FLOWS)
        nic.ethtool.add_ntuple("tcp4", dst_port=flows.connections[0].server[1], queue=q.idx)
        nic.receive(flows.trace)
        assert q.stats()["hds_split"] > 0
        ledger.close()
        self._assert_dma_landed(nic.machine, ledger)

    @staticmethod
    def _feed(nic, trace, start, stop):
        """Frames ``[start, stop)`` of ``trace``, ``_CHUNK`` per NAPI run, so that the ring
        (refilled after each run) never overruns."""
        for i in range(start, stop, _CHUNK):
            nic.receive(trace, i, min(_CHUNK, stop - i))

    @staticmethod
    def _receiver(machine, provider):
        """The application that reads the payload back: plain ``recvmsg`` on host pages,
        ``MSG_SOCK_DEVMEM`` through ``memory_map()`` for a provider that has it (its cmsgs'
        ``dmabuf_id`` is not checked), None for one that has none."""
        if provider.is_host:
            return Receiver(machine, validate=_VALIDATE)
        memory_map = getattr(provider, "memory_map", None)
        if memory_map is None:
            return None
        return Receiver(machine, dmabuf=memory_map(), dmabuf_id=1, validate=_VALIDATE)

    @staticmethod
    def _assert_dma_landed(machine, ledger):
        """The three DMA rules, every broken one named."""
        broken = []
        zero = sorted(ref for ref in ledger.net_iovs if not machine.netmem(ref).dma_addr)
        if zero:
            broken.append(f"{_RULE_DMA_ADDR}: {len(zero)} net_iov(s) handed out with DMA "
                          f"address 0, e.g. {zero[0]:#x}")
        faults = machine.iommu.faults
        if faults:
            broken.append(f"{_RULE_FAULTS}: {len(faults)} fault(s), the first {faults[0]}")
        unmapped = machine.iommu.unmapped_accesses
        if unmapped:
            broken.append(f"{_RULE_UNMAPPED}: {len(unmapped)} access(es) to unmapped "
                          f"addresses, the first {unmapped[0]}")
        assert not broken, "\n".join(broken)

    @staticmethod
    def _assert_payload(rx, flows):
        """Every socket read; every byte must be the pattern's, and all of it there."""
        rx.drain()
        counters, streams = rx.counters, rx.close_all()
        sent = sum(len(c.to_server) for c in flows.connections)
        bad = streams["bad"][streams["bad"] >= 0]
        got = int(streams["pos"].sum())
        assert (counters["read-faults"], len(bad), got) == (0, 0, sent), (
            f"{_RULE_PAYLOAD}: {got} of {sent} bytes read, {counters['read-faults']} frag(s) "
            f"outside memory_map(), first bad byte of each stream {streams['bad'].tolist()}")


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

    Gaps: where the capture lacks bytes that the other side acknowledged, tshark 4.0 prints in
    their place a chunk of its own, the text ``[N bytes missing in capture file]`` and a NUL
    (hex-encoded like the data in raw mode), and carries on with the bytes after them. A Linux
    receiver never gets past such a hole, so here a node's data stops at its first gap, which
    ``gaps`` records (``TsharkFollow``). Where nothing acknowledged the missing bytes, tshark
    prints no marker and stops at the hole itself (its reassembly waits for them).

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
    follows, nodes, data, gaps, index = [], {}, ([], []), [None, None], None
    for line in out.splitlines():
        if line.startswith("Filter: tcp.stream eq "):
            index, nodes, data, gaps = int(line.rsplit(" ", 1)[1]), {}, ([], []), [None, None]
        elif line.startswith(("Node 0:", "Node 1:")):
            nodes[int(line[5])] = _endpoint(line[8:])
        elif line.startswith("====="):
            if index is not None and len(nodes) == 2 and nodes[0][0]:  # "Node 0: :0": none
                follows.append(TsharkFollow(index, nodes[0], nodes[1], b"".join(data[0]),
                                            b"".join(data[1]), tuple(gaps)))
            index = None
        elif index is not None and len(nodes) == 2 and line.strip():
            k = 1 if line.startswith("\t") else 0
            chunk = bytes.fromhex(line.strip())
            if gaps[k] is not None:
                continue                    # past the node's first gap: never delivered
            missing = _MISSING.fullmatch(chunk)
            if missing:
                gaps[k] = (sum(map(len, data[k])), int(missing[1]))
            else:
                data[k].append(chunk)
    return sorted(follows, key=lambda f: f.index)  # tshark prints the last -z first


# What tshark's TCP follow prints, as one chunk, for bytes the capture lacks but the peer
# acknowledged: Wireshark 4.0 writes the string and its NUL (seen in raw mode as hex ending 00).
_MISSING = re.compile(rb"\[(\d+) bytes? missing in capture file\]\x00?")
