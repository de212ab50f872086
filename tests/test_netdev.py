"""Unit tests of ``netmem.netdev`` and the device half of the RX path (pyx/napi.pxi): the Toeplitz
hash against Microsoft's RSS verification suite, the indirection table and ntuple rules with the
errno of every ethtool call (net/ethtool/rings.c, channels.c, ioctl.c), RX rings and their refill
at the end of each NAPI poll, allocation failures and ring overruns, MTU and VLAN handling,
header split, multi-buffer frames, queue restarts while sockets hold buffers,
``netif_mp_open_rxq()``/``netif_mp_close_rxq()`` (and their old names) with every errno of
net/core/netdev_rx_queue.c and a provider whose net_iovs make the skbs unreadable, and where
consumed skbs are freed (``skb_attempt_defer_free()``) as the page_pool stats show it.
"""
import errno
import random

import pytest
from rxutil import MSS, Dot1Q, Ether, Flow, Trace, close_all, payload, receive
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.inet6 import IPv6
from scapy.packet import Raw

from netmem import DMA_FROM_DEVICE, Machine, NetIovArea, NetmemError, NetmemWarning
from netmem.dma import dma_map_page, dma_unmap_page
from netmem.netdev import netdev_rx_queue_restart, netif_mp_close_rxq, netif_mp_open_rxq
from netmem.page_pool import STATS_KEYS
from netmem.provider import (
    MemoryProvider,
    net_mp_niov_clear_page_pool,
    net_mp_niov_set_dma_addr,
    net_mp_niov_set_page_pool,
)

ENODEV = 19
INDIR_SIZE = 128
RING = 1024                         # the model driver's default rx ring


def pool_stats(pool, **nonzero):
    return {**dict.fromkeys(STATS_KEYS, 0), **nonzero}


def raises(code, fn, *args, **kw):
    with pytest.raises(NetmemError) as e:
        fn(*args, **kw)
    assert e.value.errno == code, e.value
    return e.value


# -- RSS: the Toeplitz hash ----------------------------------------------------------------------

# Microsoft's "Verifying the RSS Hash Calculation" suite over the default key: (destination,
# destination port, source, source port, hash over the addresses, hash over addresses + ports).
RSS_IPV4 = [
    ("161.142.100.80", 1766, "66.9.149.187", 2794, 0x323e8fc2, 0x51ccc178),
    ("65.69.140.83", 4739, "199.92.111.2", 14230, 0xd718262a, 0xc626b0ea),
    ("12.22.207.184", 38024, "24.19.198.95", 12898, 0xd2d0a5de, 0x5c2b394a),
    ("209.142.163.6", 2217, "38.27.205.30", 48228, 0x82989176, 0xafc7327f),
    ("202.188.127.2", 1303, "153.39.163.191", 44251, 0x5d1809c5, 0x10e828a2),
]
RSS_IPV6 = [
    ("3ffe:2501:200:3::1", 1766, "3ffe:2501:200:1fff::7", 2794, 0x2cc18cd5, 0x40207d3d),
    ("ff02::1", 4739, "3ffe:501:8::260:97ff:fe40:efab", 14230, 0x0f0c461c, 0xdde51bbf),
    ("fe80::200:f8ff:fe21:67cf", 38024, "3ffe:1900:4545:3:200:f8ff:fe21:67cf", 44251,
     0x4b61e985, 0x02d1feef),
]


@pytest.mark.parametrize(("dst", "dport", "src", "sport", "h_ip", "h_tcp"), RSS_IPV4 + RSS_IPV6)
def test_toeplitz_matches_the_microsoft_vectors(nic, dst, dport, src, sport, h_ip, h_tcp):
    l3 = IPv6(src=src, dst=dst) if ":" in src else IP(src=src, dst=dst)
    eth = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")
    assert nic._rss_hash(bytes(eth / l3 / TCP(sport=sport, dport=dport)))[1] == h_tcp
    # Without ports (not TCP, or a fragment): the hash over the two addresses.
    assert nic._rss_hash(bytes(eth / l3 / UDP(sport=sport, dport=dport)))[1] == h_ip
    if ":" not in src:
        frag = IP(src=src, dst=dst, flags="MF") / TCP(sport=sport, dport=dport)
        assert nic._rss_hash(bytes(eth / frag))[1] == h_ip


def test_frames_without_ip_hash_to_zero_and_land_on_indir0(make_nic):
    nic = make_nic(num_rx_queues=4)
    nic.ethtool.set_rxfh(indir=[3] + [0] * (INDIR_SIZE - 1))
    arp = bytes(Ether(dst="ff:ff:ff:ff:ff:ff", type=0x0806) / Raw(b"\0" * 28))
    assert nic._rss_hash(arp) == (3, 0)
    assert nic._rss_hash(b"\x01" * 10) == (3, 0)       # a runt: nothing to parse


def test_indirection_table_picks_the_queue(make_nic):
    nic = make_nic(num_rx_queues=4)
    frames = [Flow(sport=1000 + i).syn() for i in range(16)]
    hashes = [nic._rss_hash(f)[1] for f in frames]
    # The default table spreads entries i % 4, as ethtool_rxfh_indir_default() does.
    assert nic.ethtool.get_rxfh()["indir"] == [i % 4 for i in range(INDIR_SIZE)]
    assert [nic._rss_hash(f)[0] for f in frames] == [h % INDIR_SIZE % 4 for h in hashes]
    nic.ethtool.set_rxfh(equal=2)
    assert nic.ethtool.get_rxfh()["indir"] == [i % 2 for i in range(INDIR_SIZE)]
    assert [nic._rss_hash(f)[0] for f in frames] == [h % INDIR_SIZE % 2 for h in hashes]
    table = [(i * 3) % 4 for i in range(INDIR_SIZE)]
    nic.ethtool.set_rxfh(indir=table)
    assert [nic._rss_hash(f)[0] for f in frames] == [table[h % INDIR_SIZE] for h in hashes]
    # A new key changes every hash; an all-zero key hashes everything to 0.
    nic.ethtool.set_rxfh(key=bytes(40))
    assert {nic._rss_hash(f) for f in frames} == {(table[0], 0)}
    # Frames arrive on the queue the table names.
    receive(nic, frames)
    counts = [q.stats()["packets"] for q in nic.rx_queues]
    assert counts == [16 if i == table[0] else 0 for i in range(4)]


def test_set_rxfh_errors(make_nic):
    nic = make_nic(num_rx_queues=4)
    before = nic.ethtool.get_rxfh()
    raises(errno.EINVAL, nic.ethtool.set_rxfh, equal=2, indir=[0] * INDIR_SIZE)
    raises(errno.EINVAL, nic.ethtool.set_rxfh, equal=0)
    raises(errno.EINVAL, nic.ethtool.set_rxfh, equal=5)
    raises(errno.EINVAL, nic.ethtool.set_rxfh, indir=[0] * (INDIR_SIZE - 1))
    raises(errno.EINVAL, nic.ethtool.set_rxfh, indir=[4] * INDIR_SIZE)
    raises(errno.EINVAL, nic.ethtool.set_rxfh, indir=[-1] * INDIR_SIZE)
    raises(errno.EINVAL, nic.ethtool.set_rxfh, key=bytes(39))
    raises(errno.EINVAL, nic.ethtool.set_rxfh, equal=2, key=bytes(41))
    assert nic.ethtool.get_rxfh() == before            # a refused call changes nothing


# -- ntuple rules ---------------------------------------------------------------------------------

def test_ntuple_rules_match_by_location_before_rss(make_nic):
    nic = make_nic(num_rx_queues=4)
    et = nic.ethtool
    a = Flow(src="10.0.0.1", sport=1111, dport=80)
    b = Flow(src="10.0.0.9", sport=2222, dport=80)
    c = Flow(src="10.0.0.1", sport=3333, dport=443)
    six = Flow(src="fd00::1", dst="fd00::2", sport=4444, dport=80)
    assert et.add_ntuple("tcp4", dst_port=80, queue=3) == 0             # wildcard addresses
    assert et.add_ntuple("tcp4", src_ip="10.0.0.1", dst_port=80, queue=2) == 1
    assert et.add_ntuple("tcp6", src_ip="fd00::1", queue=1) == 2
    q = [nic._rss_hash(f.syn())[0] for f in (a, b, c, six)]
    # Rule 0 matches a and b before rule 1 is looked at; c misses both (RSS); six takes rule 2.
    assert q[:2] == [3, 3] and q[3] == 1
    assert nic._rss_hash(c.syn())[1] != 0               # RSS hashed it; rules report hash 0
    assert nic._rss_hash(a.syn())[1] == 0
    et.del_ntuple(0)
    assert nic._rss_hash(a.syn())[0] == 2               # now rule 1
    assert nic._rss_hash(b.syn())[1] != 0               # b goes by RSS now
    assert et.add_ntuple("tcp4", src_port=2222, queue=0) == 0           # the lowest free id
    assert nic._rss_hash(b.syn()) == (0, 0)
    assert et.get_ntuple() == {0: {"flow_type": "tcp4", "queue": 0},
                               1: {"flow_type": "tcp4", "queue": 2},
                               2: {"flow_type": "tcp6", "queue": 1}}
    # A tcp4 rule never matches IPv6 (and the reverse), nor non-TCP traffic.
    udp = bytes(Ether() / IP(src="10.0.0.9", dst="10.0.0.2") / UDP(sport=2222, dport=80))
    assert nic._rss_hash(udp)[1] != 0
    receive(nic, [a.syn(), b.syn(), six.syn()])
    assert [q.stats()["packets"] for q in nic.rx_queues] == [1, 1, 1, 0]
    assert nic.ethtool.get_ntuple()[2]["queue"] == 1


def test_ntuple_errors(make_nic):
    nic = make_nic(num_rx_queues=2)
    et = nic.ethtool
    raises(errno.EINVAL, et.add_ntuple, "udp4", queue=0)
    raises(errno.EINVAL, et.add_ntuple, "tcp4", src_ip="fd00::1")
    raises(errno.EINVAL, et.add_ntuple, "tcp6", dst_ip="10.0.0.1")
    raises(errno.EINVAL, et.add_ntuple, "tcp4", dst_ip="10.0.0.300")
    raises(errno.EINVAL, et.add_ntuple, "tcp4", src_port=65536)
    raises(errno.EINVAL, et.add_ntuple, "tcp4", dst_port=-1)
    raises(errno.EINVAL, et.add_ntuple, "tcp4", queue=2)
    raises(errno.ENOENT, et.del_ntuple, 0)
    assert et.get_ntuple() == {}


# -- ethtool rings and channels -------------------------------------------------------------------

def test_set_ringparam_errors(make_nic):
    nic = make_nic(num_rx_queues=2)
    et = nic.ethtool
    before = et.get_ringparam()
    assert before == {"rx_pending": RING, "rx_max_pending": 8192, "tcp_data_split": "auto",
                      "hds_thresh": 0, "hds_thresh_max": 512}
    raises(errno.EINVAL, et.set_ringparam, tcp_data_split="maybe")
    raises(errno.EINVAL, et.set_ringparam, hds_thresh=513)
    raises(errno.EINVAL, et.set_ringparam, rx_ring_size=0)
    raises(errno.EINVAL, et.set_ringparam, rx_ring_size=8193)
    nic.attach_xdp()
    raises(errno.EINVAL, et.set_ringparam, tcp_data_split="on")
    nic.detach_xdp()
    assert et.get_ringparam() == before
    pools = [q.page_pool for q in nic.rx_queues]
    et.set_ringparam(rx_ring_size=RING)                 # no change: no restart
    assert [q.page_pool for q in nic.rx_queues] == pools
    et.set_ringparam(rx_ring_size=256)
    assert [q.posted for q in nic.rx_queues] == [(256, 0)] * 2
    assert all(p.destroy_cnt and p.freed for p in pools)


def test_set_ringparam_refusals_with_a_memory_provider(make_nic, provider_factory):
    nic = make_nic(num_rx_queues=2)
    nic.ethtool.set_ringparam(tcp_data_split="on")
    netif_mp_open_rxq(nic, 1, provider_factory(nic))
    raises(errno.EINVAL, nic.ethtool.set_ringparam, tcp_data_split="off")
    raises(errno.EINVAL, nic.ethtool.set_ringparam, tcp_data_split="auto")
    raises(errno.EINVAL, nic.ethtool.set_ringparam, hds_thresh=64)
    raises(errno.EBUSY, nic.attach_xdp)
    raises(errno.EBUSY, nic.rx_queues[1].attach_af_xdp)
    nic.ethtool.set_ringparam(rx_ring_size=64)          # the provider stays with its queue
    assert nic.rx_queues[1].page_pool.provider is nic.rx_queues[1].mp


def test_set_channels_errors_and_resizing(make_nic, provider_factory):
    nic = make_nic(num_rx_queues=4)
    et = nic.ethtool
    raises(errno.EINVAL, et.set_channels, 0)
    raises(errno.EINVAL, et.set_channels, 5)
    # A user-set table naming queue 3 holds the channels up; so does a rule.
    et.set_rxfh(indir=[3] * INDIR_SIZE)
    raises(errno.EINVAL, et.set_channels, 3)
    et.set_rxfh(equal=2)
    rule = et.add_ntuple("tcp4", dst_port=80, queue=2)
    raises(errno.EINVAL, et.set_channels, 2)
    et.del_ntuple(rule)
    nic.ethtool.set_ringparam(tcp_data_split="on")
    netif_mp_open_rxq(nic, 2, provider_factory(nic))
    raises(errno.EINVAL, et.set_channels, 2)
    netif_mp_close_rxq(nic, 2, nic.rx_queues[2].mp)
    old = [q.page_pool for q in nic.rx_queues]
    et.set_channels(2)
    assert et.get_channels() == {"rx": 2, "max_rx": 4}
    assert [q.page_pool is not None for q in nic.rx_queues] == [True, True, False, False]
    assert [p.freed for p in old] == [False, False, True, True]
    assert [q.posted for q in nic.rx_queues] == [(RING, RING)] * 2 + [(0, 0)] * 2
    raises(errno.ERANGE, netif_mp_open_rxq, nic, 2, provider_factory(nic))
    et.set_channels(4)
    assert [q.posted for q in nic.rx_queues] == [(RING, RING)] * 4
    assert [q.page_pool is old[i] for i, q in enumerate(nic.rx_queues)] == [True, True, False,
                                                                             False]
    # The table was set by the user (equal 2): the new queues get no traffic from RSS.
    receive(nic, [Flow(sport=1000 + i).syn() for i in range(32)])
    assert [q.stats()["packets"] for q in nic.rx_queues][2:] == [0, 0]


def test_set_channels_respreads_a_default_table(make_nic):
    """ethtool_get_max_rxfh_channel() only holds the count up for a table the user configured
    (IFF_RXFH_CONFIGURED); drivers re-spread the default one (ethtool_rxfh_indir_default())."""
    nic = make_nic(num_rx_queues=4)
    nic.ethtool.set_channels(2)
    assert nic.ethtool.get_rxfh()["indir"] == [i % 2 for i in range(INDIR_SIZE)]
    nic.ethtool.set_channels(3)
    assert nic.ethtool.get_rxfh()["indir"] == [i % 3 for i in range(INDIR_SIZE)]
    frames = [Flow(sport=1000 + i).syn() for i in range(64)]
    receive(nic, frames)
    assert sum(q.stats()["packets"] for q in nic.rx_queues) == 64
    assert nic.stats()["rx_dropped"] == 0


def test_unregistered_device_refuses_everything(m, make_nic):
    nic = make_nic(num_rx_queues=2)
    pools = [q.page_pool for q in nic.rx_queues]
    ifindex = nic.ifindex
    nic.unregister()
    assert ifindex not in m.netdevs and all(p.freed for p in pools)
    assert [q.posted for q in nic.rx_queues] == [(0, 0), (0, 0)]
    raises(ENODEV, nic.receive, Trace([Flow().syn()]))
    raises(ENODEV, nic.ethtool.set_ringparam, rx_ring_size=64)
    raises(ENODEV, nic.ethtool.set_channels, 1)
    raises(ENODEV, netdev_rx_queue_restart, nic, 0)
    nic.unregister()                                    # twice is nothing


# -- RX rings -------------------------------------------------------------------------------------

def test_rings_are_posted_and_refilled_at_the_end_of_each_poll(nic):
    q = nic.rx_queues[0]
    pool = q.page_pool
    # 1024 half-page buffers: 512 pages, 8 refills of the alloc cache (64 pages each).
    assert q.posted == (RING, 0)
    assert (pool.stats, pool.inflight) == (pool_stats(pool, alloc_slow=8, alloc_empty=8,
                                                      alloc_fast=504), 512)
    f = Flow()
    frames = [f.syn(), *f.segments(payload(100 * MSS), flags="PA")]     # 101 frames, no GRO
    receive(nic, frames)
    s = q.stats()
    assert (s["packets"], s["polls"], s["hw_drops"], s["alloc_fail"]) == (101, 2, 0, 0)
    assert s["bytes"] == sum(len(fr) for fr in frames)
    assert q.posted == (RING, 0)                        # refilled after each poll
    sk = nic.machine.tcp.sockets()[0]
    # PSH ends each GRO packet; TCP coalesces the skbs into the tail up to 17 frags each.
    assert sk.info()["rcv_queue_skbs"] == 6
    assert nic.machine.tcp.mib["TCPRcvCoalesce"] == 94
    assert sk.read_all() == payload(100 * MSS)
    sk.close()
    # 101 frags were taken and posted again: 51 more pages (the last one half used).
    assert pool.stats["alloc_fast"] + pool.stats["alloc_slow"] == 512 + 51


def _round_robin_polls(queues, nq, budget=64):
    """The NAPI polls of one receive() call as the model defines them, a pure-Python
    reference: every frame steered first (``queues``: each frame's queue), then the queues
    polled round robin, each poll taking the next ``budget`` frames of its queue. A list of
    (queue, work)."""
    pending = [sum(1 for q in queues if q == k) for k in range(nq)]
    polls = []
    while any(pending):
        for k in range(nq):
            if pending[k]:
                work = min(budget, pending[k])
                pending[k] -= work
                polls.append((k, work))
    return polls


def test_polls_are_those_of_steering_every_frame_first(make_nic, m):
    """The device steers a queue's frames only as its poll needs them
    (``__steer_until()``); the polls are still those of steering the whole call first.
    Uneven queues: 300 frames for queue 2 come first, then flows for queues 0 and 1 (by
    ntuple rules) and eight more (by RSS), mixed; the napi_poll tracepoint gives each poll's
    queue and work."""
    nic = make_nic(num_rx_queues=3)
    rng = random.Random(7)
    lines = []
    for sport, queue, segs in ((1999, 2, 299), (2000, 0, 199), (2001, 1, 129)):
        nic.ethtool.add_ntuple("tcp4", src_port=sport, queue=queue)
        f = Flow(sport=sport)
        lines.append([f.syn(), *f.segments(payload(segs * MSS), flags="PA")])
    frames = lines.pop(0)
    lines += [[f.syn(), *f.segments(payload(rng.randrange(5, 60) * MSS), flags="PA")]
              for f in (Flow(sport=3000 + i) for i in range(8))]
    while any(lines):
        frames.append(rng.choice([ln for ln in lines if ln]).pop(0))
    queues = [nic._rss_hash(fr)[0] for fr in frames]
    assert queues[:300] == [2] * 300 and len(set(queues[300:])) == 3
    m.trace.enable("napi:napi_poll")
    receive(nic, frames)
    polls = [(e["queue"], e["work"]) for e in m.trace.events if e["event"] == "napi:napi_poll"]
    assert polls == _round_robin_polls(queues, 3)
    assert [q.stats()["packets"] for q in nic.rx_queues] == [queues.count(k) for k in range(3)]
    close_all(m)


def _exhaust(m, keep):
    """Take every free page but ``keep`` of them; returns what to give back."""
    taken = []
    for order in range(10, -1, -1):
        while m.nr_free_pages() - (1 << order) >= keep:
            ref = m.alloc_pages(order)
            if not ref:
                break
            taken.append(ref)
    return taken


def test_alloc_failure_then_ring_overrun(make_nic):
    m = Machine(memory="32MiB", cpus=2)
    taken = _exhaust(m, keep=16)
    nic = make_nic(machine=m)
    q = nic.rx_queues[0]
    # 16 pages: 32 half-page buffers posted, then the refill stops at the first failure.
    assert q.posted == (32, 0)
    assert q.stats()["alloc_fail"] == 1
    f = Flow()
    frames = [f.syn(), *f.segments(payload(50 * MSS), flags="PA")]
    receive(nic, frames)
    s = q.stats()
    # 32 frames found a buffer; the 19 after them in the same poll found none.
    assert (s["packets"], s["hw_drop_overruns"], s["hw_drops"]) == (32, 19, 19)
    assert s["alloc_fail"] == 2                         # the end-of-poll refill failed again
    sk = m.tcp.sockets()[0]
    assert sk.info()["rcv_nxt"] == f.isn + 1 + 31 * MSS
    sk.close()
    nic.unregister()
    for ref in taken:
        m.put_page(ref)


def test_mtu_and_vlan_lengths(make_nic):
    nic = make_nic(mtu=1500)
    q = nic.rx_queues[0]
    f = Flow()
    ok = f.data(b"x" * (1500 - 40), seq=2000)          # 1514 bytes: MTU + 14
    big = f.data(b"x" * (1500 - 39), seq=2000)         # 1515
    v = Flow(vlan=0)
    vok = v.data(b"x" * (1500 - 40), seq=2000)          # 1518 with its tag
    vbig = v.data(b"x" * (1500 - 39), seq=2000)
    qinq = bytes(Ether(src="02:00:00:00:00:01", type=0x88a8) / Dot1Q(vlan=5, type=0x8100)
                 / Dot1Q(vlan=0) / IP(src="10.0.0.1", dst="10.0.0.2") / TCP() / Raw(b"y" * 1460))
    assert (len(ok), len(big), len(vok), len(vbig), len(qinq)) == (1514, 1515, 1518, 1519, 1522)
    receive(nic, [ok, big, vok, vbig, qinq, b"\x02" * 13])
    s = q.stats()
    assert (s["packets"], s["length_errors"], s["hw_drops"]) == (3, 3, 3)
    assert nic.stats()["rx_length_errors"] == 3
    assert s["bytes"] == 3 * 1514                       # VLAN tags stripped by the device


def test_vlan_tag_is_stripped_before_the_stack(nic, m):
    f = Flow(vlan=0)                                    # priority tag: VID 0 reaches IP
    data = payload(3000)
    receive(nic, [f.syn(), *f.segments(data), f.fin()])
    sk = m.tcp.sockets()[0]
    assert sk.read_all() == data
    assert m.tcp.ip_mib["InReceives"] == 3
    # Bytes as the device delivers them: the 4-byte tag is stripped into the descriptor.
    assert nic.rx_queues[0].stats()["bytes"] == sum(
        len(x) - 4 for x in Flow(vlan=0).segments(data)) + (62 - 4) + (58 - 4)


def test_vlan_frames_without_a_vlan_device_are_otherhost(nic, m):
    """__netif_receive_skb_core(): vlan_do_receive() finds no VLAN device for id 100, so the
    frame is PACKET_OTHERHOST, and ip_rcv_core() drops it before Ip counts it (reason
    OTHERHOST, the device's rx_otherhost_dropped). IPv6 the same."""
    f = Flow(vlan=100)
    f6 = Flow(src="fd00::1", dst="fd00::2", vlan=7)
    receive(nic, [f.syn(), f6.syn()])
    assert m.tcp.ip_mib["InReceives"] == m.tcp.ip6_mib["InReceives"] == 0
    assert m.tcp.drop_reasons == {"OTHERHOST": 2}
    assert nic.stats()["rx_otherhost_dropped"] == 2
    assert m.tcp.sockets() == []


def test_vlan_devices_take_their_frames(nic, m):
    """With ``ip link add link eth0 type vlan id 100`` (register_vlan_device()) the frames of
    id 100 reach TCP; other ids stay OTHERHOST. Two tags: a priority tag (id 0) lets the inner
    tag decide (skb_vlan_untag(), then vlan_do_receive() again), and behind a VLAN device
    the inner id needs a VLAN device stacked on it."""
    data = payload(3000)

    def run(flow, expect):
        before = m.tcp.drop_reasons.get("OTHERHOST", 0)
        receive(nic, [flow.syn(), *flow.segments(data)])
        sk = m.tcp.lookup(flow.local, flow.remote)
        if expect:
            assert sk.read_all() == data
        else:
            assert sk is None and m.tcp.drop_reasons["OTHERHOST"] == before + 2  # SYN, GRO packet

    nic.register_vlan_device(100)
    run(Flow(vlan=100), True)
    run(Flow(vlan=101, sport=40001), False)
    run(Flow(vlan=(0, 100), sport=40002), True)        # priority tag, then 100
    run(Flow(vlan=(0, 5), sport=40003), False)
    run(Flow(vlan=(100, 5), sport=40004), False)       # eth0.100 has no eth0.100.5
    nic.register_vlan_device(100, 5)
    run(Flow(vlan=(100, 5), sport=40005), True)
    run(Flow(vlan=(100, 0), sport=40006), True)        # a priority tag inside eth0.100
    with pytest.raises(NetmemError) as e:
        nic.register_vlan_device(100)
    assert e.value.errno == errno.EEXIST
    with pytest.raises(NetmemError) as e:
        nic.register_vlan_device(4095)
    assert e.value.errno == errno.EINVAL
    with pytest.raises(NetmemError) as e:
        nic.register_vlan_device(7, 5)
    assert e.value.errno == errno.ENODEV
    nic.unregister_vlan_device(100)                     # and eth0.100.5 with it
    assert nic.vlan_devices == set()
    run(Flow(vlan=100, sport=40007), False)


def test_jumbo_frames_take_several_buffers(make_nic, m):
    nic = make_nic(mtu=9000)
    q = nic.rx_queues[0]
    f = Flow()
    data = payload(3 * 8948)
    receive(nic, [f.syn(), *f.segments(data, mss=8948, flags="PA")])
    assert q.stats()["packets"] == 4
    # 9014-byte frames: the 66 header bytes are copied to the head, 8948 bytes of payload
    # land in five 2048-byte buffers (the first one from byte 66 on); TCP coalesces the three
    # skbs into one (skb_try_coalesce() adds the frags' truesize only).
    sk = m.tcp.sockets()[0]
    assert sk.info()["rcv_queue_skbs"] == 1
    assert sk.info()["rmem_alloc"] == (256 + 256 + 320) + 3 * 5 * 2048
    assert sk.read_all() == data
    nic.ethtool.set_ringparam(tcp_data_split="on")
    f2 = Flow(sport=40001)
    receive(nic, [f2.syn(), *f2.segments(data, mss=8948, flags="PA")])
    sk2 = m.tcp.lookup(f2.local, f2.remote)
    # With header split the payload takes three full pages; the head is a header buffer of
    # 1024 bytes, SKB_TRUESIZE(1024 - 320) for napi_build_skb().
    assert sk2.info()["rmem_alloc"] == (256 + 704 + 320) + 3 * 3 * 4096
    assert sk2.read_all() == data
    assert q.stats()["hds_split"] == 4


def test_header_split_puts_payload_in_whole_pages(make_nic, m):
    nic = make_nic()
    nic.ethtool.set_ringparam(tcp_data_split="on")
    q = nic.rx_queues[0]
    assert q.posted == (RING, RING)
    hdr_pool, pool = q.header_pool, q.page_pool
    assert (hdr_pool.inflight, pool.inflight) == (256, RING)    # 4 header buffers a page
    f = Flow()
    data = payload(2 * MSS)
    arp = bytes(Ether(dst="ff:ff:ff:ff:ff:ff", type=0x0806) / Raw(b"\0" * 46))
    receive(nic, [f.syn(), *f.segments(data, flags="PA"), arp])
    s = q.stats()
    # TCP frames are split at the end of the TCP header (the SYN has no payload: all of it
    # is in the header buffer); the ARP frame is not split and takes a payload page.
    assert (s["packets"], s["hds_split"]) == (4, 3)
    assert pool.stats["alloc_fast"] + pool.stats["alloc_slow"] == RING + 3
    assert hdr_pool.stats["alloc_fast"] + hdr_pool.stats["alloc_slow"] == RING // 4 + 1
    assert nic.stats()["rx_dropped"] == 1               # ARP: no handler for 0x0806
    sk = m.tcp.sockets()[0]
    assert sk.read_all() == data


def test_hds_thresh_keeps_small_frames_whole(make_nic, m):
    nic = make_nic()
    nic.ethtool.set_ringparam(tcp_data_split="on", hds_thresh=200)
    q = nic.rx_queues[0]
    f = Flow()
    small, large = payload(100), payload(1000)
    receive(nic, [f.syn(), f.data(small, flags="PA"), f.data(large, flags="PA")])
    sk = m.tcp.sockets()[0]
    # The 62- and 166-byte frames stay whole in a header buffer (skbs with no frag, no page
    # used); the 1066-byte one is split.
    assert q.page_pool.stats["alloc_fast"] + q.page_pool.stats["alloc_slow"] == RING + 1
    assert q.stats()["hds_split"] == 3
    assert sk.read_all() == small + large


# -- queue restarts and buffers held by sockets ---------------------------------------------------

def test_restart_while_sockets_hold_buffers(make_nic, m):
    nic = make_nic(num_rx_queues=2)
    flows = [Flow(sport=1000 + i) for i in range(8)]
    data = payload(20 * MSS)
    frames = []
    for f in flows:
        frames += [f.syn(), *f.segments(data)]
    receive(nic, frames)
    old = [p for q in nic.rx_queues for p in (q.page_pool,)]
    held = sum(p.inflight for p in old)
    nic.ethtool.set_ringparam(tcp_data_split="on")      # every queue restarts
    new = [q.page_pool for q in nic.rx_queues]
    assert all(p.destroy_cnt for p in old) and not any(p.freed for p in old)
    # The old pools keep only what the sockets hold: the ring buffers went home.
    assert sum(p.inflight for p in old) < held
    assert set(m.page_pools) >= set(old) | set(new)
    m.advance(5)
    assert not any(p.freed for p in old)
    for f in flows:
        sk = m.tcp.lookup(f.local, f.remote)
        assert sk.read_all() == data
        sk.close()
    m.advance(2)
    # Queue 0's skbs were built on CPU 0, where the reader runs: freed at once. Queue 1's went
    # on CPU 1's defer list (skb_attempt_defer_free()), which only CPU 1's next softirq empties.
    assert (old[0].freed, old[1].freed, old[1].inflight) == (True, False, 42)
    m.quiesce()
    assert all(p.freed for p in old) and old[1] not in m.page_pools


# -- memory providers -----------------------------------------------------------------------------

class NiovProvider(MemoryProvider):
    """net_iovs over host pages the NIC has mapped (a stand-in for a dma-buf binding): the
    device can write into them, the CPU cannot read them through an skb."""

    name = "test-niov"

    def __init__(self, nic, num_niovs=256):
        m = nic.machine
        self.machine = m
        self.nic = nic
        self.dev = nic.pcidev
        self.area = NetIovArea(m, num_niovs)
        self.free = self.area.niovs.tolist()[::-1]
        self.pages = []
        for ref in self.free:
            page = m.alloc_pages()
            addr = dma_map_page(self.dev, page, 0, 4096, DMA_FROM_DEVICE)
            net_mp_niov_set_dma_addr(m, ref, addr)
            self.pages.append((page, addr))
        self.uninstalled = []

    def alloc_netmems(self, pool):
        if not self.free:
            return 0
        ref = self.free.pop()
        net_mp_niov_set_page_pool(pool, ref)
        return ref

    def release_netmem(self, pool, netmem):
        net_mp_niov_clear_page_pool(self.machine, netmem)
        self.free.append(netmem)
        return False

    def uninstall(self, rxq):
        self.uninstalled.append(rxq.idx)

    def teardown(self):
        assert len(self.free) == self.area.num_niovs, "net_iovs still out"
        for page, addr in self.pages:
            dma_unmap_page(self.dev, addr, 4096, DMA_FROM_DEVICE)
            self.machine.put_page(page)


@pytest.fixture
def provider_factory():
    made = []

    def make(nic, **kw):
        p = NiovProvider(nic, **kw)
        made.append(p)
        return p

    yield make
    for p in made:
        close_all(p.machine)
        p.nic.unregister()
        p.machine.quiesce()
        p.teardown()


@pytest.fixture
def split_nic(make_nic, provider_factory):
    nic = make_nic(num_rx_queues=2)
    nic.ethtool.set_ringparam(tcp_data_split="on")
    return nic


def test_netif_mp_open_rxq_errno(make_nic, provider_factory):
    nic = make_nic(num_rx_queues=2)
    p = provider_factory(nic)
    raises(errno.ERANGE, netif_mp_open_rxq, nic, 2, p)
    raises(errno.EINVAL, netif_mp_open_rxq, nic, 0, p)    # tcp-data-split is "auto"
    nic.ethtool.set_ringparam(tcp_data_split="on", hds_thresh=64)
    raises(errno.EINVAL, netif_mp_open_rxq, nic, 0, p)    # hds-thresh
    nic.ethtool.set_ringparam(hds_thresh=0)
    nic.xdp_prog = True                                 # a multi-buffer program, say
    raises(errno.EEXIST, netif_mp_open_rxq, nic, 0, p)
    nic.xdp_prog = False
    nic.rx_queues[0].attach_af_xdp()
    raises(errno.EBUSY, netif_mp_open_rxq, nic, 0, p)
    nic.rx_queues[0].detach_af_xdp()
    nic.queue_mgmt_ops = False
    raises(errno.EOPNOTSUPP, netif_mp_open_rxq, nic, 0, p)
    nic.queue_mgmt_ops = True
    assert [q.mp for q in nic.rx_queues] == [None, None]
    netif_mp_open_rxq(nic, 0, p)
    raises(errno.EEXIST, netif_mp_open_rxq, nic, 0, provider_factory(nic))
    assert nic.rx_queues[0].page_pool.provider is p
    assert nic.rx_queues[1].page_pool.provider is None
    assert nic.rx_queues[0].header_pool.provider is None


def test_netif_mp_open_rxq_enodata_when_the_driver_ignores_providers(make_nic, provider_factory):
    nic = make_nic(mp_aware=False)
    nic.ethtool.set_ringparam(tcp_data_split="on")
    pools_before = set(nic.machine.page_pools)
    old = nic.rx_queues[0].page_pool
    p = provider_factory(nic)
    raises(errno.ENODATA, netif_mp_open_rxq, nic, 0, p)
    q = nic.rx_queues[0]
    assert (q.mp, q.page_pool) == (None, old)           # the queue kept running on its pools
    nic.machine.advance(1)
    assert set(nic.machine.page_pools) == pools_before  # the new pools are gone


def test_payload_lands_in_net_iovs_and_is_unreadable(split_nic, provider_factory, m):
    nic = split_nic
    p = provider_factory(nic)
    nic.ethtool.add_ntuple("tcp4", dst_port=5201, queue=1)
    netif_mp_open_rxq(nic, 1, p)
    q = nic.rx_queues[1]
    assert q.posted == (256, RING)                      # every net_iov posted, then a failure
    assert q.stats()["alloc_fail"] == 1
    f = Flow()
    data = payload(4 * MSS)
    receive(nic, [f.syn(), *f.segments(data, flags="PA")])
    assert q.stats()["hds_split"] == 5
    sk = m.tcp.sockets()[0]
    # Unreadable skbs still coalesce (skb_try_coalesce() only refuses a readability mismatch):
    # their frags move, nothing is copied.
    assert sk.info()["rcv_queue_skbs"] == 1
    assert len(p.free) == 0
    raises(errno.EFAULT, sk.recv, 100)
    raises(errno.EFAULT, sk.recv, 100)                  # nothing was consumed
    sk.close()
    m.quiesce()
    # The closed socket's net_iovs went back to the page pool, which keeps them: the provider
    # sees them only when the pool goes.
    assert (len(p.free), q.page_pool.inflight) == (0, 256)
    netif_mp_close_rxq(nic, 1, p)
    assert (q.mp, q.page_pool.provider) == (None, None)
    m.quiesce()
    assert len(p.free) == 256


def test_netif_mp_close_rxq_warns_on_misuse(split_nic, provider_factory):
    nic = split_nic
    p, other = provider_factory(nic), provider_factory(nic)
    netif_mp_open_rxq(nic, 0, p)
    with pytest.warns(NetmemWarning, match="out of range"):
        netif_mp_close_rxq(nic, 2, p)
    with pytest.warns(NetmemWarning, match="another provider"):
        netif_mp_close_rxq(nic, 0, other)
    assert nic.rx_queues[0].mp is p
    netif_mp_close_rxq(nic, 0, p)


def test_unregister_calls_uninstall(split_nic, provider_factory, m):
    nic = split_nic
    p = provider_factory(nic)
    netif_mp_open_rxq(nic, 1, p)
    nic.unregister()
    assert p.uninstalled == [1]
    netif_mp_close_rxq(nic, 1, p)                         # after unregister: quietly nothing
    m.quiesce()
    assert len(p.free) == 256


# -- where consumed skbs are freed ----------------------------------------------------------------

def _flow_frames(n_segs, sport=40000):
    f = Flow(sport=sport)
    return f, [f.syn(), *f.segments(payload(n_segs * MSS), flags="PA")]


def test_reading_on_the_napi_cpu_frees_to_the_ring(nic, m):
    """Same CPU: skb_attempt_defer_free() frees at once with BHs off (kfree_skb_napi_cache());
    the NAPI is idle (list_owner -1), so page_pool_napi_local() is false: the ring."""
    pool = nic.rx_queues[0].page_pool
    base = pool.stats
    _, frames = _flow_frames(4)
    receive(nic, frames)
    sk = m.tcp.sockets()[0]
    with m.on_cpu(0, softirq=False):
        assert len(sk.read_all()) == 4 * MSS
    st = pool.stats
    # 5 frags on 3 pages; the SYN's frag went home in the poll (its page was shared). The 4 data
    # skbs free 4 frags: pages 1 and 2 complete and go to the ring.
    assert (st["recycle_ring"] - base["recycle_ring"], st["recycle_cached"]) == (2, 0)
    assert m.tcp.mib["InSegs"] == 5


def test_reading_on_another_cpu_defers_to_the_napi_cpu(nic, m):
    """Another CPU: the skbs go on CPU 0's defer list; its next net_rx_action() frees them
    with the NAPI scheduled (list_owner 0): direct recycling into the alloc cache."""
    pool = nic.rx_queues[0].page_pool
    f, frames = _flow_frames(4)
    receive(nic, frames)
    sk = m.tcp.sockets()[0]
    before = pool.stats
    with m.on_cpu(1, softirq=False):
        assert len(sk.read_all()) == 4 * MSS
    assert pool.stats == before                         # nothing freed yet
    # The next poll on CPU 0 flushes the defer list first.
    receive(nic, [f.data(b"z", flags="PA")])
    st = pool.stats
    assert st["recycle_cached"] - before["recycle_cached"] == 2
    assert st["recycle_ring"] == before["recycle_ring"]
    with m.on_cpu(1, softirq=False):
        assert sk.recv(10) == b"z"
    m.quiesce()                                         # the CPUs' softirqs run


def test_leak_report_counts_deferred_skb_frees(nic, m):
    """Skbs read on another CPU wait on the NAPI CPU's defer list: once the device is gone,
    their buffers keep its pool waiting. The report counts them and marks the lines they hold
    up; quiesce() (the CPUs' softirqs) frees them and the report is empty."""
    _, frames = _flow_frames(4)
    receive(nic, frames)
    with m.on_cpu(1, softirq=False):
        assert len(m.tcp.sockets()[0].read_all()) == 4 * MSS
    close_all(m)
    nic.unregister()
    may_clear = " (may clear on m.quiesce())"
    assert m.leak_report() == [
        ("pending deferred work: 1 timer(s) (next at +1000 ms: page_pool_release_retry() of "
         "page_pool 1), 1 deferred skb free(s): call m.quiesce() before judging leaks"),
        "1 skbs alive outside any socket" + may_clear,
        "page_pool 1 destroyed, waiting: inflight 3 (cache 0, ring 0)" + may_clear,
        "3 pages missing from the buddy allocator (page_pool buffers: 3 owned)" + may_clear]
    m.quiesce()
    assert m.leak_report() == []


def test_defer_list_kick_at_half_of_skb_defer_max(nic, m):
    """skb_attempt_defer_free() kicks the CPU when the list already had defer_max / 2 skbs (at
    the 33rd with the default 64); the kicked softirq runs no NAPI poll, so its frees use the
    ring. Forty sockets with one skb each give forty separate frees."""
    pool = nic.rx_queues[0].page_pool
    assert m.tcp.skb_defer_max == 64
    flows = [Flow(sport=2000 + i) for i in range(40)]
    frames = []
    for f in flows:
        frames += [f.syn(), f.data(payload(MSS), flags="PA")]
    receive(nic, frames)
    socks = [m.tcp.lookup(f.local, f.remote) for f in flows]
    before = pool.stats
    with m.on_cpu(1, softirq=False):
        for sk in socks[:32]:
            assert len(sk.recv(2 * MSS)) == MSS
        assert pool.stats == before                     # 32 deferred
        socks[32].recv(MSS)                             # the 33rd kicks CPU 0
        # Each data frag shares its page with its SYN's, which went home in the poll: 33
        # pages complete, freed in softirq on CPU 0 with its NAPI idle -> ring.
        assert pool.stats["recycle_ring"] - before["recycle_ring"] == 33
        assert pool.stats["recycle_cached"] == before["recycle_cached"]
        for sk in socks[33:]:
            sk.recv(MSS)
    assert pool.stats["recycle_ring"] - before["recycle_ring"] == 33
    m.quiesce()                                         # CPU 0's softirq: the other 7
    assert pool.stats["recycle_ring"] - before["recycle_ring"] == 40
    m.tcp.skb_defer_max = 0                             # no deferral at all
    f2 = Flow(sport=3000)
    receive(nic, [f2.syn(), f2.data(payload(MSS), flags="PA")])
    mid = pool.stats
    with m.on_cpu(1, softirq=False):
        m.tcp.lookup(f2.local, f2.remote).recv(MSS)
    assert pool.stats["recycle_ring"] - mid["recycle_ring"] == 1     # freed at once on CPU 1


def test_the_names_before_mainline_renamed_them_still_work():
    """Mainline renamed ``net_mp_open_rxq()``/``net_mp_close_rxq()`` to ``netif_mp_*``; code
    written against the old names runs unchanged (the same functions, from both modules)."""
    import netmem
    from netmem import netdev

    assert netdev.net_mp_open_rxq is netdev.netif_mp_open_rxq
    assert netdev.net_mp_close_rxq is netdev.netif_mp_close_rxq
    assert (netmem.net_mp_open_rxq, netmem.net_mp_close_rxq) == (netdev.netif_mp_open_rxq,
                                                                 netdev.netif_mp_close_rxq)
