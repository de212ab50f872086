"""Unit tests of GRO (pyx/gro.pxi) against net/core/gro.c (dev_gro_receive(), gro_list_prepare(),
skb_gro_receive()), net/ipv4/af_inet.c (inet_gro_receive(), inet_gro_flush()),
net/ipv6/ip6_offload.c (ipv6_gro_receive()) and net/ipv4/tcp_offload.c (tcp_gro_receive()):
which segments merge, what flushes a held packet, the 64 KiB and MAX_SKB_FRAGS limits, the IP ID
rules, padding, and the counters in ``rxq.stats()["gro"]`` (merged, held, normal, flushes, and
the model's flush_e2big). Every trace fits in one NAPI poll (at most 64 frames): all that is
still held is flushed at its end.

The ``pp_recycle`` mismatch of skb_gro_receive() (-ETOOMANYREFS) cannot be reached from the
wire: every skb the model driver builds is marked for recycling. Its tests build the skbs and
give them to GRO with ``netmem.skb.napi_gro_receive()``.
"""
import pytest
from rxutil import MSS, Flow, IPv6ExtHdrDestOpt, payload, receive
from scapy.layers.inet import IPOption_RR

from netmem.skb import napi_alloc_skb, napi_gro_flush, napi_gro_receive


def gro(nic, q=0):
    return nic.rx_queues[q].stats()["gro"]


def counts(**kw):
    return {"merged": 0, "held": 0, "normal": 0, "flushes": 0, "flush_e2big": 0,
            "flush_toomanyrefs": 0, **kw}


def segs(f, n, size=MSS, **kw):
    return [f.data(payload(size, seed=i), **kw) for i in range(n)]


def read(m, f):
    return m.tcp.lookup(f.local, f.remote).read_all()


def test_in_order_segments_merge_up_to_max_skb_frags(nic, m):
    f = Flow()
    receive(nic, [f.syn(), *segs(f, 40)])
    # Each segment brings one frag (its headers are copied to the head): a GRO packet holds
    # 17 (MAX_SKB_FRAGS); the 18th starts a new one (the model's -E2BIG, where the kernel
    # chains it on frag_list up to 64 KiB: a departure on purpose, see skb_gro_receive()).
    assert gro(nic) == counts(normal=1, held=3, merged=37, flushes=3, flush_e2big=2)
    sk = m.tcp.sockets()[0]
    assert sk.info()["rcv_queue_skbs"] == 3             # 17 + 17 + 6 frags: no coalescing
    assert m.tcp.mib["InSegs"] == 4 and m.tcp.mib["TCPRcvCoalesce"] == 0
    # tcp_segs_in() counts a GRO packet's segments (gso_segs), the MIB counts skbs.
    assert (sk.info()["segs_in"], sk.info()["data_segs_in"]) == (41, 40)
    assert sk.read_all() == b"".join(payload(MSS, seed=i) for i in range(40))


def test_gro_stops_at_64k(make_nic, m):
    nic = make_nic(mtu=9000)
    nic.ethtool.set_ringparam(tcp_data_split="on")
    f = Flow()
    receive(nic, [f.syn(), *segs(f, 20, size=4000)])
    # One page per segment; 40 + 16 * 4000 = 64040 bytes, and a 17th would reach 65536
    # (p->len + len >= gro_max_size): -E2BIG before the frags run out.
    assert gro(nic) == counts(normal=1, held=2, merged=18, flushes=2, flush_e2big=1)
    assert read(m, f) == b"".join(payload(4000, seed=i) for i in range(20))


def test_psh_fin_and_short_segments_end_a_packet(nic, m):
    f = Flow()
    frames = [f.syn(),
              *segs(f, 2), f.data(payload(MSS), flags="PA"),       # merged, then flushed
              *segs(f, 2), f.data(payload(1000)),                   # short: merged, flushed
              *segs(f, 2), f.data(payload(500), flags="FA"),        # FIN with data: same
              ]
    receive(nic, frames)
    assert gro(nic) == counts(normal=1, held=3, merged=6, flushes=3)
    sk = m.tcp.sockets()[0]
    assert sk.info()["state"] == "CLOSE_WAIT"
    assert len(sk.read_all()) == 7 * MSS + 1000 + 500


@pytest.mark.parametrize(("first", "second"), [
    ({}, {"window": 503}),                      # the advertised window moved
    ({}, {"flags": "AN"}),                      # AE (the flag scapy calls N)
    ({}, {"reserved": 1}),                      # a reserved bit
    ({"flags": "AC"}, {}),                      # CWR held, then without it
])
def test_any_change_in_the_flag_word_flushes(nic, m, first, second):
    f = Flow()
    data = [payload(MSS, seed=i) for i in range(3)]
    receive(nic, [f.syn(), f.data(data[0], **first), f.data(data[1], **second),
                  f.data(data[2], **second)])
    # tcp_gro_receive() compares tcp_flag_word() (doff, reserved and AE, flags, window) but
    # FIN and PSH: the second segment does not merge, the held packet goes up and the
    # second starts a new one, which the third joins.
    assert gro(nic) == counts(normal=1, held=2, merged=1, flushes=2)
    assert read(m, f) == b"".join(data)


def test_psh_alone_does_not_stop_a_merge(nic, m):
    f = Flow()
    data = [payload(MSS, seed=i) for i in range(3)]
    receive(nic, [f.syn(), f.data(data[0]), f.data(data[1], flags="PA"), f.data(data[2])])
    # PSH is masked from the comparison: the segment merges, then ends the packet
    # (out_check_final); the third starts a new one.
    assert gro(nic) == counts(normal=1, held=2, merged=1, flushes=2)
    assert read(m, f) == b"".join(data)


def test_a_bare_fin_or_ack_is_not_merged(nic):
    f = Flow()
    receive(nic, [f.syn(), *segs(f, 2), f.data(b""), f.fin()])
    # A pure ACK (len 0: (len - 1) >= mss) flushes the held packet and goes up alone; so does
    # the FIN after it.
    assert gro(nic) == counts(normal=3, held=1, merged=1, flushes=1)


def test_a_larger_segment_after_a_small_one_flushes(nic):
    f = Flow()
    receive(nic, [f.syn(), f.data(payload(1000)), f.data(payload(MSS)), f.data(payload(MSS))])
    # The first packet's gso_size is 1000: a 1448-byte segment cannot join it.
    assert gro(nic) == counts(normal=1, held=2, merged=1, flushes=2)


def test_tcp_options_and_ack_must_match(nic):
    f = Flow(tsopt=True)
    frames = [f.syn(),
              f.data(payload(MSS), tsval=1), f.data(payload(MSS), tsval=1),
              f.data(payload(MSS), tsval=2),                        # other options: flush
              f.data(payload(MSS), tsval=2, ack=2),                 # other ack_seq: flush
              f.data(payload(MSS), tsval=2, ack=2)]
    receive(nic, frames)
    assert gro(nic) == counts(normal=1, held=3, merged=2, flushes=3)


def test_different_header_length_flushes(nic):
    f = Flow()
    frames = [f.syn(), f.data(payload(MSS - 12)),
              f.frame("A", f.seq, payload(MSS - 12), tsval=5)]    # doff 8 after doff 5
    f.seq += MSS - 12
    receive(nic, frames)
    assert gro(nic) == counts(normal=1, held=2, flushes=2)


@pytest.mark.parametrize(("ids", "df", "merged"), [
    ([7, 8, 9, 10], True, 3),               # incrementing, DF: merges
    ([7, 8, 9, 10], False, 3),              # incrementing without DF: merges too
    ([7, 7, 7, 7], True, 3),                # fixed with DF (atomic datagrams): ip_fixedid
    ([7, 7, 7, 7], False, 0),               # fixed without DF: every one flushes
    ([7, 7, 9, 9], True, 2),                # fixed, then a jump: flush, then fixed again
    ([7, 8, 8, 9], True, 2),                # the ID is checked against the packet's first
                                            # header + its count: a repeat flushes
])
def test_ip_id_rules(nic, ids, df, merged):
    f = Flow()
    frames = [f.syn()] + [f.data(payload(MSS), ip_id=i, df=df) for i in ids]
    receive(nic, frames)
    held = len(ids) - merged
    assert gro(nic) == counts(normal=1, held=held, merged=merged, flushes=held)


def test_ttl_tos_and_df_must_match(nic):
    f = Flow()
    frames = [f.syn(), f.data(payload(MSS)),
              f.data(payload(MSS), ttl=63),                  # flush
              f.data(payload(MSS), ttl=63, tos=4),           # flush
              f.data(payload(MSS), ttl=63, tos=4, df=False)]  # flush
    receive(nic, frames)
    assert gro(nic) == counts(normal=1, held=4, flushes=4)


MSS6 = 1500 - 40 - 20                  # IPv6 without TCP options


def test_ipv6_flow_label_traffic_class_and_hop_limit(nic):
    f = Flow(src="fd00::1", dst="fd00::2")
    frames = [f.syn(),
              f.data(payload(MSS6)), f.data(payload(MSS6)),            # merged
              f.data(payload(MSS6), ttl=63),                          # hop limit: flush
              f.data(payload(MSS6), ttl=63, tos=8),                   # traffic class: flush
              f.data(payload(MSS6), ttl=63, tos=8, flowlabel=5)]      # another flow
    receive(nic, frames)
    # The flow label is part of the flow: the last segment is held beside the packet of the
    # same 4-tuple, not merged into it, and does not flush it either.
    assert gro(nic) == counts(normal=1, held=4, merged=1, flushes=4)


def test_ipv6_extension_headers_merge_when_equal(nic, m):
    f = Flow(src="fd00::1", dst="fd00::2")
    opt = IPv6ExtHdrDestOpt()
    data = [payload(MSS6 - 8, seed=i) for i in range(3)]
    receive(nic, [f.syn(), *[f.data(d, ext=opt) for d in data]])
    # ipv6_gro_receive() pulls destination options and routing headers
    # (INET6_PROTO_GSO_EXTHDR) and compares them between the packets.
    assert gro(nic) == counts(normal=1, held=1, merged=2, flushes=1)
    assert read(m, f) == b"".join(data)


def test_ipv4_options_and_fragments_are_not_merged(nic):
    f = Flow()
    opts = [IPOption_RR()]
    frames = [f.syn(), *[f.data(payload(MSS - 40), ip_options=opts) for _ in range(3)]]
    receive(nic, frames)
    assert gro(nic) == counts(normal=4)                 # inet_gro_receive(): *iph != 0x45


def test_padded_segments_are_not_held(nic, m):
    f = Flow()
    frames = [f.syn(), *segs(f, 2), f.data(b"abc", pad_to=60), f.data(b"de", pad_to=60)]
    receive(nic, frames)
    # A tot_len short of the frame sets NAPI_GRO_CB(skb)->flush (inet_gro_receive()), which
    # tcp_gro_receive() does not read: the segment passes its checks and skb_gro_receive()
    # refuses it (-E2BIG). The held packet goes up and the padded segment with it;
    # ip_rcv_core() then trims the padding.
    assert gro(nic) == counts(normal=3, held=1, merged=1, flushes=1, flush_e2big=1)
    assert read(m, f) == payload(MSS, seed=0) + payload(MSS, seed=1) + b"abcde"


def test_mac_header_and_vlan_tag_are_part_of_the_flow(nic):
    f = Flow()
    frames = [f.syn(), f.data(payload(MSS)),
              f.data(payload(MSS), mac_src="02:00:00:00:00:09")]   # another sender MAC
    receive(nic, frames)
    # gro_list_prepare(): compare_ether_header() differs, not the same flow: both are held.
    assert gro(nic) == counts(normal=1, held=2, flushes=2)


def test_interleaved_flows_merge_separately(nic, m):
    a, b = Flow(sport=1), Flow(sport=2)
    frames = [a.syn(), b.syn()]
    for i in range(6):
        frames += [a.data(payload(MSS, seed=i)), b.data(payload(MSS, seed=10 + i))]
    receive(nic, frames)
    assert gro(nic) == counts(normal=2, held=2, merged=10, flushes=2)
    assert read(m, a) == b"".join(payload(MSS, seed=i) for i in range(6))
    assert read(m, b) == b"".join(payload(MSS, seed=10 + i) for i in range(6))


def test_at_most_eight_packets_per_bucket(nic):
    # Nine flows whose RSS hashes share a GRO bucket (hash & 7).
    flows, port = [], 1000
    while len(flows) < 9:
        f = Flow(sport=port)
        if nic._rss_hash(f.syn())[1] & 7 == 0:
            flows.append(Flow(sport=port))
        port += 1
    frames = [f.syn() for f in flows] + [f.data(payload(MSS)) for f in flows]
    receive(nic, frames)
    # The ninth finds eight held: gro_flush_oldest() sends the first one up.
    assert gro(nic) == counts(normal=9, held=9, flushes=9)


HDRS = 14 + 20 + 20                     # Ethernet, IPv4 and TCP without options


@pytest.mark.parametrize("second", ["padded", "past_64k"])
def test_pp_recycle_mismatch_is_tested_first(nic, m, make_pool, second):
    """skb_gro_receive() refuses a pp_recycle mismatch (-ETOOMANYREFS) before it tests the
    size and NAPI_GRO_CB(skb)->flush (-E2BIG): a segment that fails both is counted as the
    former."""
    f = Flow()
    pool = make_pool(pool_size=64)
    held = napi_alloc_skb(m)
    if second == "padded":
        held.put(f.data(payload(100)))      # all in the head
        held.mark_for_recycle()
        nxt = napi_alloc_skb(m)
        # A tot_len short of the frame: inet_gro_receive() sets NAPI_GRO_CB(skb)->flush.
        nxt.put(f.data(b"abc", pad_to=60))
    else:
        # 62000 bytes of payload in page-pool frags: the next 4000 pass 64 KiB.
        held.put(f.data(payload(62000))[:HDRS])
        for left in (4000,) * 15 + (2000,):
            held.add_rx_frag(pool.alloc_netmem(), 0, left, 4096)
        held.mark_for_recycle()
        nxt = napi_alloc_skb(m)
        nxt.put(f.data(payload(4000))[:HDRS])
        nxt.add_rx_frag(m.alloc_pages(), 0, 4000, 4096)     # a plain page: not pp_recycle
    napi_gro_receive(nic, held)
    napi_gro_receive(nic, nxt)
    napi_gro_flush(nic)
    # The held packet goes up when the segment cannot join it; the segment goes up alone
    # (padded: NAPI_GRO_CB(skb)->flush) or is held and flushed at the end.
    assert gro(nic) == (counts(held=1, normal=1, flushes=1, flush_toomanyrefs=1)
                        if second == "padded" else
                        counts(held=2, flushes=2, flush_toomanyrefs=1))
