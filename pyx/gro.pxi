# GRO: generic receive offload per NAPI instance.
#
# Models net/core/gro.c (dev_gro_receive(), skb_gro_receive(), napi_gro_flush()), the IPv4 and
# IPv6 layers' gro_receive/complete (inet_gro_receive(), inet_gro_flush(), ipv6_gro_receive())
# and net/ipv4/tcp_offload.c (tcp_gro_receive()). Held skbs sit in GRO_HASH_BUCKETS lists by RSS
# hash, at most MAX_GRO_SKBS each; everything held is flushed at the end of each poll.
# Departs: no frag_list chaining: where the kernel would chain a segment on frag_list (frags
# would pass MAX_SKB_FRAGS), the held skb is flushed and the segment starts a new one.


cdef enum:
    GRO_HASH_BUCKETS = 8
    MAX_GRO_SKBS = 8
    TCPHDR_FIN = 0x01
    TCPHDR_SYN = 0x02
    TCPHDR_RST = 0x04
    TCPHDR_PSH = 0x08
    TCPHDR_ACK = 0x10
    TCPHDR_URG = 0x20
    TCPHDR_CWR = 0x80
    IP_DF = 0x4000

# include/uapi/linux/tcp.h: tcp_flag_word() is the header's fourth 32-bit word (doff, the
# reserved bits and AE, the flags byte, the window); its TCP_FLAG_* bits, here in host order
# over _be32(th + 12).
cdef enum:
    TCP_FLAG_AE = 0x01000000
    TCP_FLAG_CWR = 0x00800000
    TCP_FLAG_URG = 0x00200000
    TCP_FLAG_PSH = 0x00080000
    TCP_FLAG_RST = 0x00040000
    TCP_FLAG_SYN = 0x00020000
    TCP_FLAG_FIN = 0x00010000


cdef inline uint8_t *skb_network_header(nm_net *n, nm_skb *skb) noexcept nogil:
    return skb_head(n.m, skb_shinfo(n, skb)) + skb.network_header


cdef inline uint8_t *skb_transport_hdr(nm_net *n, nm_skb *skb) noexcept nogil:
    return skb_head(n.m, skb_shinfo(n, skb)) + skb.transport_header


cdef inline uint32_t __tcp_hdr_end(nm_net *n, nm_skb *skb) noexcept nogil:
    """Offset (from the head) of the end of the TCP header."""
    return skb.transport_header + (skb_transport_hdr(n, skb)[12] >> 4) * 4


cdef inline uint32_t skb_gro_len(nm_net *n, nm_skb *skb) noexcept nogil:
    """The TCP payload length of a GRO candidate."""
    return skb.len - (__tcp_hdr_end(n, skb) - skb.data)


cdef bint __gro_tcp_candidate(nm_net *n, nm_skb *skb) noexcept nogil:
    """Whether inet_gro_receive()/ipv6_gro_receive() and tcp4/6_gro_receive() take the skb:
    plain TCP over IPv4 without options or fragments, or over IPv6 behind nothing but
    destination options and routing headers (the INET6_PROTO_GSO_EXTHDR ones
    ``ipv6_gro_pull_exthdrs()`` walks; hop-by-hop has no offload), its headers in the head. An
    IP length that does not match the skb (Ethernet padding) sets NAPI_GRO_CB(skb)->flush."""
    cdef uint8_t *iph
    cdef uint32_t hl = skb_headlen(skb), need, off
    cdef uint8_t nh
    if skb.transport_header == 0 or skb.protocol == 0:
        return False
    if skb.transport_header + 20 > skb.data + hl:
        return False
    need = __tcp_hdr_end(n, skb)
    if (skb_transport_hdr(n, skb)[12] >> 4) < 5 or need > skb.data + hl:
        return False
    iph = skb_network_header(n, skb)
    if skb.protocol == 4:
        if iph[0] != 0x45 or iph[9] != IPPROTO_TCP or (_be16(iph + 6) & ~IP_DF) & 0xffff:
            return False
        skb.gro_flush = _be16(iph + 2) != skb.len
        return True
    nh = iph[6]
    off = 40
    while (nh == 43 or nh == 60) and skb.network_header + off < skb.transport_header:
        nh = iph[off]
        off += (iph[off + 1] + 1) * 8
    if nh != IPPROTO_TCP or skb.network_header + off != skb.transport_header:
        return False
    skb.gro_flush = _be16(iph + 4) + 40 != skb.len
    return True


cdef inline bint __gro_same_flow(nm_net *n, nm_skb *p, nm_skb *skb) noexcept nogil:
    """``gro_list_prepare()`` (the RSS hash, the VLAN tag, ``compare_ether_header()``), then
    the IP layer's and ``tcp_gro_lookup()``'s checks. Departs: a priority tag (VLAN id 0,
    priority 0) reads as no tag. The held skb's headers are read only once its hash matches:
    most of a bucket's chain is other flows, and their shinfo lines are cold."""
    cdef uint8_t *a
    cdef uint8_t *b
    if p.hash != skb.hash or p.vlan_tci != skb.vlan_tci or p.protocol != skb.protocol:
        return False
    a = skb_network_header(n, p)
    b = skb_network_header(n, skb)
    if memcmp(skb_head(n.m, skb_shinfo(n, p)) + p.mac_header,
              skb_head(n.m, skb_shinfo(n, skb)) + skb.mac_header, ETH_HLEN) != 0:
        return False
    if skb.protocol == 4:
        if memcmp(a + 12, b + 12, 8) != 0:
            return False
    else:
        if (_be32(a) ^ _be32(b)) & <uint32_t>0xF00FFFFFU or memcmp(a + 8, b + 8, 32) != 0:
            return False
        # ipv6_gro_receive(): the next header, and the extension headers byte for byte.
        if a[6] != b[6] or p.transport_header - p.network_header != \
                skb.transport_header - skb.network_header:
            return False
        if memcmp(a + 40, b + 40, skb.transport_header - skb.network_header - 40) != 0:
            return False
    return memcmp(skb_transport_hdr(n, p), skb_transport_hdr(n, skb), 4) == 0


cdef int __gro_network_flush(nm_net *n, nm_skb *p, nm_skb *skb) noexcept nogil:
    """Models ``inet_gro_flush()`` (TTL, TOS, DF, and the IP ID: incrementing by the segment
    count, or fixed with DF) and the flush half of ``ipv6_gro_receive()`` (traffic class, hop
    limit)."""
    cdef uint8_t *iph = skb_network_header(n, skb)
    cdef uint8_t *iph2 = skb_network_header(n, p)
    cdef uint16_t ipid_offset
    cdef uint32_t df
    cdef int flush
    if skb.protocol == 6:
        return ((_be32(iph) ^ _be32(iph2)) & 0x0FF00000) != 0 or iph[7] != iph2[7]
    df = _be16(iph + 6) & IP_DF
    flush = (iph[8] != iph2[8]) or (iph[1] != iph2[1]) or (df != (_be16(iph2 + 6) & IP_DF))
    if flush:
        return flush
    ipid_offset = <uint16_t>(_be16(iph + 4) - _be16(iph2 + 4))
    if p.gso_segs == 1 and df and ipid_offset == 0:
        p._pad = 1                          # NAPI_GRO_CB(p)->ip_fixedid
    return (ipid_offset ^ (p.gso_segs * (not p._pad))) != 0


cdef int skb_gro_receive(nm_net *n, nm_skb *p, nm_skb *skb) noexcept nogil:
    """Models ``skb_gro_receive()``: move the segment's payload frags to ``p`` (or steal its
    page-frag head when the payload is in the head). In the kernel's order: -ETOOMANYREFS on a
    pp_recycle mismatch, then -E2BIG past gro_max_size or when NAPI_GRO_CB(skb)->flush is set
    (the IP layer's length check: Ethernet padding), then (departing) -E2BIG past
    MAX_SKB_FRAGS where the kernel chains the segment on ``frag_list`` (``merge:``,
    ``NAPI_GRO_CB(p)->last``) up to gro_max_size. The departure is on purpose, for now: an skb
    with a frag_list needs every consumer of its data to walk the list (``tcp_try_coalesce()``
    refuses it, the out-of-order queue's trims, ``skb_copy_datagram_iter()``, the devmem cmsg
    walk of ``tcp_recvmsg_dmabuf()``, kfree_skb), and the TCP receive queues are being
    rewritten for closed-loop TCP; so without header split a GRO packet holds 17 segments of
    1448 bytes (24.6 KB) where the kernel's reaches 45 (64 KB), and TCP may coalesce packets
    the kernel would keep apart."""
    cdef nm_shinfo *pinfo = skb_shinfo(n, p)
    cdef nm_shinfo *skbinfo = skb_shinfo(n, skb)
    cdef uint32_t len = skb_gro_len(n, skb)
    cdef uint32_t offset = __tcp_hdr_end(n, skb) - skb.data
    cdef uint32_t headlen = skb_headlen(skb), new_truesize, i
    cdef int delta_truesize
    if p.pp_recycle != skb.pp_recycle:
        return -ETOOMANYREFS
    if p.len + len >= GRO_LEGACY_MAX_SIZE or skb.gro_flush:
        return -E2BIG
    if headlen <= offset:
        if pinfo.nr_frags + skbinfo.nr_frags > MAX_SKB_FRAGS:
            return -E2BIG
        offset -= headlen
        for i in range(skbinfo.nr_frags):
            __skb_fill_netmem_desc(p, pinfo, pinfo.nr_frags + i, skbinfo.frags[i].netmem,
                                   skbinfo.frags[i].offset, skbinfo.frags[i].len)
        if skbinfo.nr_frags:
            pinfo.frags[pinfo.nr_frags].offset += offset
            pinfo.frags[pinfo.nr_frags].len -= offset
        pinfo.nr_frags += skbinfo.nr_frags
        skbinfo.nr_frags = 0
        new_truesize = SKB_TRUESIZE(skb_end_offset(skbinfo))
        delta_truesize = <int>skb.truesize - <int>new_truesize
        skb.truesize = new_truesize
        skb.len -= skb.data_len
        skb.data_len = 0
    elif skbinfo.head_frag:
        if pinfo.nr_frags + 1 + skbinfo.nr_frags > MAX_SKB_FRAGS:
            return -E2BIG
        __skb_fill_netmem_desc(p, pinfo, pinfo.nr_frags, skbinfo.head_netmem,
                               skbinfo.head_off + skb.data + offset, headlen - offset)
        for i in range(skbinfo.nr_frags):
            __skb_fill_netmem_desc(p, pinfo, pinfo.nr_frags + 1 + i, skbinfo.frags[i].netmem,
                                   skbinfo.frags[i].offset, skbinfo.frags[i].len)
        pinfo.nr_frags += 1 + skbinfo.nr_frags
        skbinfo.nr_frags = 0
        skbinfo.head_frag = 2               # NAPI_GRO_FREE_STOLEN_HEAD
        delta_truesize = <int>skb.truesize - SKB_DATA_ALIGN_SK_BUFF
    else:
        return -E2BIG                       # the kernel chains on frag_list here
    p.gso_segs += 1
    p.data_len += len
    p.truesize += delta_truesize
    p.len += len
    return 0


cdef inline void __gro_free_merged(nm_net *n, uint32_t si) noexcept nogil:
    """``napi_skb_finish()`` of a merged segment: NAPI_GRO_FREE or _STOLEN_HEAD."""
    kfree_skb_partial(n, si, skb_shinfo(n, SKB(n, si)).head_frag == 2)


cdef inline void __gro_pass_up(nm_net *n, nm_netdev *nd, uint32_t si,
                               nm_prof_t *pr) noexcept nogil:
    """``netif_receive_skb()`` of what GRO passes up; in a sampled poll, the TCP stage."""
    if nm_prof_t is nm_prof:
        prof_enter(pr, NM_PROF_TCP)
    netif_receive_skb(n, nd, si)
    if nm_prof_t is nm_prof:
        prof_enter(pr, NM_PROF_GRO)


cdef void gro_complete(nm_net *n, nm_netdev *nd, uint32_t si, nm_prof_t *pr) noexcept nogil:
    """Models ``napi_gro_complete()``: fix the IP length of a merged skb (inet_gro_complete(),
    ipv6_gro_complete()) and pass it up."""
    cdef nm_skb *skb = SKB(n, si)
    cdef uint8_t *iph
    if skb.gso_segs > 1:
        iph = skb_network_header(n, skb)
        if skb.protocol == 4:
            iph[2] = <uint8_t>(skb.len >> 8)
            iph[3] = <uint8_t>skb.len
        else:
            iph[4] = <uint8_t>((skb.len - 40) >> 8)
            iph[5] = <uint8_t>(skb.len - 40)
    __gro_pass_up(n, nd, si, pr)


cdef inline void __gro_unlink(nm_net *n, nm_rxq *q, uint32_t b, uint32_t si) noexcept nogil:
    cdef nm_skb *skb = SKB(n, si)
    if skb.prev != NM_NIL:
        SKB(n, skb.prev).next = skb.next
    else:
        q.gro_head[b] = skb.next
    if skb.next != NM_NIL:
        SKB(n, skb.next).prev = skb.prev
    skb.next = skb.prev = NM_NIL
    q.gro_count[b] -= 1


cdef inline void __gro_flush_one(nm_net *n, nm_netdev *nd, nm_rxq *q, uint32_t b,
                                 uint32_t si, nm_prof_t *pr) noexcept nogil:
    __gro_unlink(n, q, b, si)
    q.gro.flushes += 1
    gro_complete(n, nd, si, pr)


cdef void __gro_hold(nm_net *n, nm_rxq *q, uint32_t b, uint32_t si) noexcept nogil:
    cdef uint32_t t = q.gro_head[b]
    cdef nm_skb *skb = SKB(n, si)
    skb.next = NM_NIL
    skb.prev = NM_NIL
    if t == NM_NIL:
        q.gro_head[b] = si
    else:
        while SKB(n, t).next != NM_NIL:
            t = SKB(n, t).next
        SKB(n, t).next = si
        skb.prev = t
    q.gro_count[b] += 1


cdef inline void napi_gro_receive(nm_net *n, nm_netdev *nd, nm_rxq *q, uint32_t si,
                                  nm_prof_t *pr) noexcept nogil:
    """Models ``napi_gro_receive()`` / ``dev_gro_receive()`` with ``tcp_gro_receive()``.
    ``tcp_gro_receive()`` compares the whole ``tcp_flag_word()`` of the two headers (doff,
    the reserved bits and AE, the flags and the window) but FIN and PSH: mainline's mask
    since the AccECN GRO change (earlier kernels masked CWR too, ``~(CWR | FIN | PSH)``, so
    a held packet with CWR took segments without it); a segment carrying CWR flushes either
    way. Inline: with three builds of the driver the compiler stopped inlining it into
    ``nm_rx_frame()`` by itself, as it did with one."""
    cdef nm_skb *skb = SKB(n, si)
    cdef nm_skb *ps
    cdef uint32_t b, p = NM_NIL, len, mss = 1, thlen, i
    cdef uint8_t *th
    cdef uint8_t *th2
    cdef uint32_t flags
    cdef int flush = 1
    if not __gro_tcp_candidate(n, skb):
        q.gro.normal += 1
        __gro_pass_up(n, nd, si, pr)
        return
    b = skb.hash & (GRO_HASH_BUCKETS - 1)
    th = skb_transport_hdr(n, skb)
    thlen = (th[12] >> 4) * 4
    flags = _be32(th + 12)              # tcp_flag_word(th)
    len = skb_gro_len(n, skb)
    skb.gso_segs = 1
    p = q.gro_head[b]
    while p != NM_NIL and not __gro_same_flow(n, SKB(n, p), skb):
        p = SKB(n, p).next
    if p != NM_NIL:
        ps = SKB(n, p)
        th2 = skb_transport_hdr(n, ps)
        # NAPI_GRO_CB(skb)->flush (skb.gro_flush) is not part of this flush: a segment that
        # passes the header checks reaches skb_gro_receive(), which refuses it.
        flush = (flags & TCP_FLAG_CWR) != 0
        # The whole word: a changed doff, AE or window flushes as a changed flag does.
        flush |= ((flags ^ _be32(th2 + 12)) & ~(<uint32_t>(TCP_FLAG_FIN | TCP_FLAG_PSH))) != 0
        flush |= _be32(th + 8) != _be32(th2 + 8)
        i = 20
        while not flush and i < thlen:
            flush |= _be32(th + i) != _be32(th2 + i)
            i += 4
        flush |= __gro_network_flush(n, ps, skb)
        mss = ps.gso_size
        flush |= (len - 1) >= mss          # unsigned, as the kernel's: len 0 flushes
        flush |= (_be32(th2 + 4) + skb_gro_len(n, ps)) != _be32(th + 4)
        if flush:
            mss = 1
        else:
            i = skb_gro_receive(n, ps, skb)
            if i != 0:
                mss = 1
                if <int>i == -ETOOMANYREFS:
                    q.gro.flush_toomanyrefs += 1
                else:
                    q.gro.flush_e2big += 1
                flush = 1
            else:
                th2[13] |= (flags & (TCP_FLAG_FIN | TCP_FLAG_PSH)) >> 16
                flush = 0
                # out_check_final, merged: a short or flagged segment ends the packet.
                if len < mss or flags & (TCP_FLAG_URG | TCP_FLAG_PSH | TCP_FLAG_RST |
                                         TCP_FLAG_SYN | TCP_FLAG_FIN):
                    __gro_flush_one(n, nd, q, b, p, pr)
                q.gro.merged += 1
                __gro_free_merged(n, si)
                return
        # Not merged: the held packet goes up.
        __gro_flush_one(n, nd, q, b, p, pr)
    # out_check_final for an unmerged segment.
    flush = len < mss or (flags & (TCP_FLAG_URG | TCP_FLAG_PSH | TCP_FLAG_RST |
                                   TCP_FLAG_SYN | TCP_FLAG_FIN)) != 0
    if flush or skb.gro_flush:
        q.gro.normal += 1
        __gro_pass_up(n, nd, si, pr)
        return
    if q.gro_count[b] >= MAX_GRO_SKBS:
        __gro_flush_one(n, nd, q, b, q.gro_head[b], pr)     # gro_flush_oldest()
    skb.gso_size = <uint16_t>len
    skb._pad = 0
    q.gro.held += 1
    __gro_hold(n, q, b, si)


cdef void napi_gro_flush(nm_net *n, nm_netdev *nd, nm_rxq *q, nm_prof_t *pr) noexcept nogil:
    """Models ``napi_gro_flush()``: every held skb goes up, oldest first per bucket."""
    cdef uint32_t b
    for b in range(GRO_HASH_BUCKETS):
        while q.gro_head[b] != NM_NIL:
            __gro_flush_one(n, nd, q, b, q.gro_head[b], pr)
