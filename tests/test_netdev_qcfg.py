"""The per-queue configuration of Linux 7.0 (net/core/netdev_config.c, the queue ops'
``ndo_default_qcfg``, ``ndo_validate_qcfg`` and ``supported_params``) and the provider's
``rx_page_size`` as ``__netif_mp_open_rxq()`` takes it: the rendered config, the payload pool's
order, the errno table (EOPNOTSUPP on a 4 KiB-only driver as mlx5 and fbnic, ERANGE from the
bnxt-like driver's ``bnxt_validate_qcfg()``, EINVAL for a value that is not a u32), the
``mp_params`` kept across restarts and zeroed on close.
"""
import errno

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test

from netmem import NetmemError
from netmem.netdev import (
    BNXT_MAX_RX_PAGE_SIZE,
    QCFG_RX_PAGE_SIZE,
    NetDevice,
    NetdevQueueConfig,
    netdev_queue_config,
    netif_mp_close_rxq,
    netif_mp_open_rxq,
)
from netmem.provider import MemoryProvider, net_mp_niov_clear_page_pool

PAGE = 4096


class SizedProvider(MemoryProvider):
    """A plain-Python provider that asks for ``rx_page_size`` and hands out nothing (the
    queue's ring stays empty): it records the order of each pool it is given."""

    name = "sized"

    def __init__(self, machine, rx_page_size):
        self.machine = machine
        self.rx_page_size = rx_page_size
        self.orders = []

    def init(self, pool):
        self.orders.append(pool.order)
        return 0

    def alloc_netmems(self, pool):
        return 0

    def release_netmem(self, pool, netmem):
        net_mp_niov_clear_page_pool(self.machine, netmem)
        return False


def raises(code, fn, *args, match=None):
    with pytest.raises(NetmemError, match=match) as e:
        fn(*args)
    assert e.value.errno == code, e.value
    return e.value


def test_default_driver_is_4k_only(make_nic):
    """mlx5/fbnic-like (the default): no QCFG_RX_PAGE_SIZE, no ndo_default_qcfg, so the
    rendered rx_page_size is 0 (the driver's default) and the payload pool is order 0."""
    nic = make_nic(hds=True)
    assert nic.supported_params == 0
    assert netdev_queue_config(nic, 0) == NetdevQueueConfig(0)
    assert nic.rx_queues[0].page_pool.order == 0


def test_bnxt_like_driver_defaults(make_nic):
    """bnxt-like: QCFG_RX_PAGE_SIZE and bnxt_queue_default_qcfg()'s PAGE_SIZE."""
    nic = make_nic(hds=True, max_rx_page_size=BNXT_MAX_RX_PAGE_SIZE)
    assert nic.supported_params == QCFG_RX_PAGE_SIZE
    assert nic.rx_queues[0].qcfg == NetdevQueueConfig(PAGE)
    assert nic.rx_queues[0].page_pool.order == 0


@pytest.mark.parametrize("size", [0, 3 * PAGE, 2 * PAGE - 1, 1 << 26, True])
def test_max_rx_page_size_checked(m, size):
    raises(errno.EINVAL, NetDevice, m, "eth9", 1, None, 1500, True, size,
           match="max_rx_page_size")


def test_rx_page_size_needs_qcfg_support(m, make_nic):
    """A provider's rx_page_size on a driver without QCFG_RX_PAGE_SIZE: EOPNOTSUPP from the
    queue open, the queue untouched (Kuba's "io_uring/zcrx: don't set rx_page_size when not
    requested", 3d17d76d1ffb, is why 0 must not trip it)."""
    nic = make_nic(hds=True)
    q = nic.rx_queues[0]
    pool = q.page_pool
    raises(errno.EOPNOTSUPP, netif_mp_open_rxq, nic, 0, SizedProvider(m, 4 * PAGE),
           match="device does not support: rx_page_size")
    assert q.mp is None and q.mp_params.rx_page_size == 0 and q.page_pool is pool
    p = SizedProvider(m, 0)                         # not requested: fine on any driver
    netif_mp_open_rxq(nic, 0, p)
    assert p.orders == [0]
    netif_mp_close_rxq(nic, 0, p)


def test_open_rxq_check_order(m, make_nic):
    """__netif_mp_open_rxq()'s order: tcp-data-split (EINVAL) and XDP (EEXIST) come before
    rx_page_size (EOPNOTSUPP), which comes before a bound queue (EEXIST)."""
    nic = make_nic()
    big = SizedProvider(m, 4 * PAGE)
    raises(errno.EINVAL, netif_mp_open_rxq, nic, 0, big, match="tcp-data-split")
    nic.ethtool.set_ringparam(tcp_data_split="on")
    nic.attach_xdp(frags=True)
    raises(errno.EEXIST, netif_mp_open_rxq, nic, 0, big, match="XDP")
    nic.detach_xdp()
    first = SizedProvider(m, 0)
    netif_mp_open_rxq(nic, 0, first)
    raises(errno.EOPNOTSUPP, netif_mp_open_rxq, nic, 0, big)
    raises(errno.EEXIST, netif_mp_open_rxq, nic, 0, SizedProvider(m, 0))
    netif_mp_close_rxq(nic, 0, first)


@pytest.mark.parametrize("size", [2 * BNXT_MAX_RX_PAGE_SIZE, 3 * PAGE, PAGE // 2])
def test_bnxt_validate_qcfg_erange(m, make_nic, size):
    """bnxt_validate_qcfg(): not a power of two, or outside PAGE_SIZE..32 KiB, is ERANGE; the
    queue keeps its pool and its mp_params are zeroed again (err_clear_mp)."""
    nic = make_nic(hds=True, max_rx_page_size=BNXT_MAX_RX_PAGE_SIZE)
    q = nic.rx_queues[0]
    pool = q.page_pool
    raises(errno.ERANGE, netif_mp_open_rxq, nic, 0, SizedProvider(m, size),
           match="ndo_validate_qcfg")
    assert q.mp is None and q.mp_params.rx_page_size == 0 and q.page_pool is pool


@pytest.mark.parametrize("size", [-1, 1 << 32, "16K", 4.0 * PAGE, True])
def test_rx_page_size_must_be_u32(m, make_nic, size):
    nic = make_nic(hds=True, max_rx_page_size=BNXT_MAX_RX_PAGE_SIZE)
    raises(errno.EINVAL, netif_mp_open_rxq, nic, 0, SizedProvider(m, size), match="not a u32")
    assert nic.rx_queues[0].mp is None


def test_rx_page_size_sets_pool_order_and_survives_restarts(m, make_nic):
    """The provider's rx_page_size is copied into rxq->mp_params: the rendered config and the
    payload pool's order follow it, through a restart (an ethtool ring change), until
    netif_mp_close_rxq() zeroes mp_params (7073bb4b696f)."""
    nic = make_nic(hds=True, max_rx_page_size=BNXT_MAX_RX_PAGE_SIZE)
    q = nic.rx_queues[0]
    p = SizedProvider(m, 16384)
    netif_mp_open_rxq(nic, 0, p)
    p.rx_page_size = PAGE                           # later changes are not seen: it was copied
    assert q.mp_params.rx_page_size == 16384 and q.qcfg == NetdevQueueConfig(16384)
    assert q.page_pool.order == 2 and p.orders == [2]
    assert q.header_pool.order == 0
    nic.ethtool.set_ringparam(rx_ring_size=32)
    assert q.page_pool.order == 2 and p.orders == [2, 2]
    netif_mp_close_rxq(nic, 0, p)
    assert q.mp is None and q.mp_params.rx_page_size == 0
    assert q.qcfg == NetdevQueueConfig(PAGE) and q.page_pool.order == 0


def test_large_host_page_buffers_carry_frames(m, make_nic):
    """A queue rendered with 16 KiB buffers posts order-2 host pages and the device fills
    them: an 8900-byte payload takes one payload buffer (with 4 KiB buffers, three: the ring's
    refill allocates that many after the first posting), and reads back whole. The ring is
    filled to 16 / 4 buffers of 16 KiB (bnxt_rx_agg_ring_fill_level()).
    (rx_page_size is set in mp_params directly, as a provider's would be: host pages need no
    provider.)"""
    from rxutil import Flow, close_all, payload, receive

    def held_buffers(rx_page_size):
        nic = make_nic(hds=True, mtu=9000, max_rx_page_size=BNXT_MAX_RX_PAGE_SIZE)
        q = nic.rx_queues[0]
        q.mp_params.rx_page_size = rx_page_size
        nic.ethtool.set_ringparam(rx_ring_size=16)
        f, data = Flow(), payload(8900)
        posted = q.posted[0]
        assert posted == 16 * PAGE // max(rx_page_size, PAGE)      # the fill level
        receive(nic, [f.syn(), f.data(data)])
        st = q.page_pool.stats
        held = st["alloc_fast"] + st["alloc_slow"] + st["alloc_slow_high_order"] - posted
        assert m.tcp.sockets()[0].recv(1 << 16) == data
        close_all(m)
        q.mp_params.rx_page_size = 0
        nic.unregister()
        return held

    assert held_buffers(0) == 3
    assert held_buffers(16384) == 1


# ---- the lifecycle, as a state machine ------------------------------------------------------

SIZES = [0, PAGE, 2 * PAGE, 3 * PAGE, 4 * PAGE, 8 * PAGE, 16 * PAGE]


class QcfgMachine(RuleBasedStateMachine):
    """Providers asking for any of SIZES open and close on two queues of a 4 KiB-only and a
    bnxt-like (16 KiB maximum here) device, among ring changes (restarts). A pure-Python
    reference of __netif_mp_open_rxq()'s rx_page_size rules says what each open must do; after
    every step each queue's mp_params, rendered config and payload pool order agree with it."""

    def __init__(self):
        super().__init__()
        from netmem import Machine
        self.m = Machine(memory="64MiB", cpus=2)
        self.devs = [NetDevice(self.m, f"eth{i}", num_rx_queues=2, max_rx_page_size=mx)
                     for i, mx in enumerate((PAGE, 4 * PAGE))]
        for d in self.devs:
            d.ethtool.set_ringparam(tcp_data_split="on", rx_ring_size=8)
        self.bound = {}             # (dev, queue) -> the provider's rx_page_size

    @staticmethod
    def expect(dev, size, bound):
        """The errno of opening a provider of ``size`` on a queue of ``dev`` (0: it binds), in
        __netif_mp_open_rxq()'s order: rx_page_size support, a bound queue, the driver's
        validation."""
        if size and not dev.supported_params:
            return errno.EOPNOTSUPP
        if bound:
            return errno.EEXIST
        if size and (size & (size - 1) or not PAGE <= size <= dev.max_rx_page_size):
            return errno.ERANGE
        return 0

    @rule(d=st.integers(0, 1), q=st.integers(0, 1), size=st.sampled_from(SIZES))
    def open(self, d, q, size):
        dev = self.devs[d]
        want = self.expect(dev, size, (d, q) in self.bound)
        p = SizedProvider(self.m, size)
        if want:
            with pytest.raises(NetmemError) as e:
                netif_mp_open_rxq(dev, q, p)
            assert e.value.errno == want
        else:
            netif_mp_open_rxq(dev, q, p)
            self.bound[(d, q)] = (p, size)

    @rule(d=st.integers(0, 1), q=st.integers(0, 1))
    def close(self, d, q):
        if (d, q) in self.bound:
            netif_mp_close_rxq(self.devs[d], q, self.bound.pop((d, q))[0])

    @rule(d=st.integers(0, 1), ring=st.sampled_from([4, 8, 16]))
    def restart(self, d, ring):
        self.devs[d].ethtool.set_ringparam(rx_ring_size=ring)

    @invariant()
    def configs_agree(self):
        for d, dev in enumerate(self.devs):
            for q in dev.rx_queues:
                size = self.bound.get((d, q.idx), (None, 0))[1]
                assert q.mp_params.rx_page_size == size
                rendered = size or (PAGE if dev.supported_params else 0)
                assert q.qcfg == NetdevQueueConfig(rendered)
                assert q.page_pool.order == max(rendered, PAGE).bit_length() - 13
                # SizedProvider hands out nothing; host pages fill the ring to its fill level
                assert q.posted[0] == (0 if (d, q.idx) in self.bound
                                       else dev.rx_ring_size >> q.page_pool.order)

    def teardown(self):
        for (d, q), (p, _) in list(self.bound.items()):
            netif_mp_close_rxq(self.devs[d], q, p)
        for dev in self.devs:
            dev.unregister()
        self.m.quiesce()
        assert self.m.leak_report() == []


def test_qcfg_state_machine():
    run_state_machine_as_test(QcfgMachine, settings=settings(
        derandomize=True, database=None, max_examples=40, stateful_step_count=25,
        deadline=None, suppress_health_check=[HealthCheck.too_slow]))
