# The device and driver side of receive: the device's parser, RSS (Toeplitz and the indirection
# table) and ntuple steering, RX descriptor rings refilled from page pools, the device's DMA
# writes (header split), and the NAPI poll that builds skbs and hands them to GRO.
#
# The model driver is shaped after the drivers that support devmem (bnxt, gve, mlx5): without
# header split, payload buffers are half-page page_pool frags and the driver copies the headers
# into a small linear skb (napi_alloc_skb + eth_get_headlen, as mlx5's non-linear path); with
# header split, the device writes the L2-L4 headers into a header buffer (a frag of the header
# pool, which napi_build_skb() turns into the head) and the payload into whole buffers of the
# payload pool, which is where a memory provider's net_iovs come from.


cdef enum:
    ETH_HLEN = 14
    VLAN_HLEN = 4
    ETH_P_IP = 0x0800
    ETH_P_IPV6 = 0x86DD
    ETH_P_8021Q = 0x8100
    ETH_P_8021AD = 0x88A8
    IPPROTO_TCP = 6
    VLAN_VID_MASK = 0x0fff
    PACKET_HOST = 0
    PACKET_OTHERHOST = 3
    NAPI_POLL_WEIGHT = 64           # the NAPI budget
    NM_INDIR_SIZE = 128             # RSS indirection table entries
    NM_RSS_KEY_LEN = 40             # NETDEV_RSS_KEY_LEN
    # The device's parser prefetches the headers of the frame NM_PARSE_AHEAD frames on (its
    # first NM_PARSE_REACH bytes: Ethernet, VLAN, IPv6 and TCP up to its options): a capture
    # larger than the caches comes from DRAM, and nm_parse()'s first loads of each frame
    # took 12% of its replay (0.93x with, docs/benchmarks.md). Not a kernel mechanism.
    NM_PARSE_AHEAD = 8
    NM_PARSE_REACH = 128
    # The poll prefetches the rest of the frame NM_RX_FRAME_AHEAD on in its queue, for the
    # DMA write's loads (0.96x a capture's replay with; the default workload's trace is in
    # the caches: 1.00x, docs/benchmarks.md), half before a frame goes up and half after:
    # prefetched at once, its lines filled the line-fill buffers, and the frame's own misses
    # waited behind them (0.93x the capture's time split). Not a kernel mechanism.
    NM_RX_FRAME_AHEAD = 2

    # What the device's parser found (nm_pkt.status).
    NM_PKT_OK = 0                   # Ethernet frame (IP or not)
    NM_PKT_RUNT = 1                 # shorter than an Ethernet header
    NM_SKB_PROTO_VLAN_CUT = 0x81    # skb.protocol of a frame that ends inside a VLAN tag


cdef inline uint16_t _be16(const uint8_t *p) noexcept nogil:
    return (<uint16_t>p[0] << 8) | p[1]


cdef inline uint32_t _be32(const uint8_t *p) noexcept nogil:
    return (<uint32_t>p[0] << 24) | (<uint32_t>p[1] << 16) | (<uint32_t>p[2] << 8) | p[3]


cdef inline bint ipv6_ext_hdr(uint8_t nexthdr) noexcept nogil:
    """Hop-by-hop, routing and destination options: the headers the parser walks."""
    return nexthdr == 0 or nexthdr == 43 or nexthdr == 60


cdef void nm_parse(const uint8_t *f, uint32_t len, nm_pkt *p) noexcept nogil:
    """The device's parser (and the flow dissector's ``eth_get_headlen()``): Ethernet, up to two
    VLAN tags, IPv4/IPv6 (walking IPv6 extension headers 0/43/60) and TCP. ``hdr_len`` is where
    header split cuts and how many bytes a driver copies into the linear part: as
    ``__skb_get_poff()``, the TCP header's offset plus ``max(20, doff * 4)`` when its first 20
    bytes are in the frame (at most the frame), a UDP, ICMP or ICMPv6 header's plus 8, else as
    far as the parse got (the IP header included)."""
    cdef uint32_t off, ihl, doff, l4
    cdef uint16_t et
    cdef uint8_t nh
    memset(p, 0, sizeof(nm_pkt))
    p.len = len
    if len < ETH_HLEN:
        p.status = NM_PKT_RUNT
        p.hdr_len = <uint16_t>len
        return
    off = 12
    et = _be16(f + off)
    while (et == ETH_P_8021Q or et == ETH_P_8021AD) and p.nr_vlans < 2 and off + 6 <= len:
        if p.nr_vlans == 0:
            p.vlan_off = <uint16_t>off
            p.vlan_tci = _be16(f + off + 2)
        else:
            p.vlan_tci2 = _be16(f + off + 2)
        p.nr_vlans += 1
        off += VLAN_HLEN
        et = _be16(f + off)
    off += 2
    p.ethertype = et
    p.l3_off = <uint16_t>off
    p.hdr_len = <uint16_t>off
    if et == ETH_P_IP:
        if off + 20 > len or f[off] >> 4 != 4:
            return
        ihl = (f[off] & 0xf) * 4
        if ihl < 20 or off + ihl > len:
            return
        p.family = 4
        p.ip_proto = f[off + 9]
        l4 = off + ihl
        p.hdr_len = <uint16_t>l4
        if _be16(f + off + 6) & 0x3fff:     # a fragment: no L4 header to find
            p.ip_proto = 0
            return
    elif et == ETH_P_IPV6:
        if off + 40 > len:
            return
        p.hdr_len = <uint16_t>(off + 40)    # the flow dissector takes it, whatever the version
        if f[off] >> 4 != 6:
            return
        p.family = 6
        nh = f[off + 6]
        l4 = off + 40
        while ipv6_ext_hdr(nh) and l4 + 8 <= len:
            nh, l4 = f[l4], l4 + (f[l4 + 1] + 1) * 8
        if l4 > len:
            return
        p.ip_proto = nh
        p.hdr_len = <uint16_t>l4
    else:
        return
    p.l4_off = <uint16_t>l4
    if p.ip_proto == IPPROTO_TCP and l4 + 20 <= len:
        doff = max((f[l4 + 12] >> 4) * 4, 20)
        p.hdr_len = <uint16_t>min(l4 + doff, len)
    elif p.ip_proto == IPPROTO_UDP or p.ip_proto == IPPROTO_ICMP or p.ip_proto == IPPROTO_ICMPV6:
        p.hdr_len = <uint16_t>min(l4 + 8, len)     # __skb_get_poff(): the 8-byte header


# ---- RSS and ntuple -----------------------------------------------------------------------------

cdef void netdev_rss_key_fill_toeplitz(nm_netdev *nd) noexcept nogil:
    """Precompute, for each of the 36 input byte positions and each byte value, its Toeplitz
    contribution: the hash is then one table lookup per input byte."""
    cdef int pos, bit, v
    cdef uint32_t h, win
    for pos in range(36):
        for v in range(256):
            h = 0
            for bit in range(8):
                if v & (0x80 >> bit):
                    # The 32 key bits starting at input bit pos * 8 + bit.
                    win = _be32(nd.key + pos) << bit
                    if bit:
                        win |= <uint32_t>nd.key[pos + 4] >> (8 - bit)
                    h ^= win
            nd.toeplitz[pos * 256 + v] = h


cdef inline uint32_t toeplitz_hash(nm_netdev *nd, const uint8_t *in1, int n1, const uint8_t *in2,
                                   int n2, const uint8_t *ports) noexcept nogil:
    """The Toeplitz hash of (source address, destination address[, ports]) as the device
    computes it for RSS."""
    cdef uint32_t h = 0
    cdef int i, pos = 0
    for i in range(n1):
        h ^= nd.toeplitz[(pos + i) * 256 + in1[i]]
    pos += n1
    for i in range(n2):
        h ^= nd.toeplitz[(pos + i) * 256 + in2[i]]
    pos += n2
    if ports != NULL:
        for i in range(4):
            h ^= nd.toeplitz[(pos + i) * 256 + ports[i]]
    return h


cdef inline bint __ntuple_match(nm_ntuple *r, const uint8_t *f, nm_pkt *p) noexcept nogil:
    cdef int alen = 4 if p.family == 4 else 16
    cdef const uint8_t *src
    cdef const uint8_t *dst
    if r.family != p.family or p.ip_proto != IPPROTO_TCP or p.l4_off == 0:
        return False
    if p.l4_off + 4 > p.len:
        return False
    src = f + p.l3_off + (12 if p.family == 4 else 8)
    dst = src + alen
    if r.has_src and memcmp(r.src, src, alen) != 0:
        return False
    if r.has_dst and memcmp(r.dst, dst, alen) != 0:
        return False
    if r.has_sport and r.sport != _be16(f + p.l4_off):
        return False
    if r.has_dport and r.dport != _be16(f + p.l4_off + 2):
        return False
    return True


cdef uint32_t nm_steer(nm_netdev *nd, const uint8_t *f, nm_pkt *p, uint32_t *hash) noexcept nogil:
    """The queue a frame lands on: the first matching ntuple rule (by location), else RSS over
    the TCP 4-tuple (or the IP pair for other IP traffic) through the indirection table; frames
    with no hash go to indir[0]."""
    cdef uint32_t i, h = 0
    cdef const uint8_t *src
    cdef int alen
    for i in range(nd.nr_rules):
        if nd.rules[i].loc >= 0 and __ntuple_match(&nd.rules[i], f, p):
            hash[0] = 0
            return nd.rules[i].queue
    if p.family:
        alen = 4 if p.family == 4 else 16
        src = f + p.l3_off + (12 if p.family == 4 else 8)
        if p.ip_proto == IPPROTO_TCP and p.l4_off and p.l4_off + 4 <= p.len:
            h = toeplitz_hash(nd, src, alen, src + alen, alen, f + p.l4_off)
        else:
            h = toeplitz_hash(nd, src, alen, src + alen, alen, NULL)
    hash[0] = h
    return nd.indir[h % nd.indir_size]


# ---- RX rings -----------------------------------------------------------------------------------

cdef inline netmem_ref __rx_alloc(nm_pool *pool, uint32_t size, uint32_t *offset) noexcept nogil:
    if size >= PAGE_SIZE:
        offset[0] = 0
        return page_pool_alloc_netmems(pool)
    return page_pool_alloc_frag_netmem(pool, offset, size)


cdef uint32_t nm_rx_ring_refill(nm_rxq *q, nm_rx_ring *r, nm_pool *pool,
                                uint32_t size) noexcept nogil:
    """Post buffers into the empty slots (the driver's refill at the end of a poll). Stops at
    the first allocation failure, counted as rx-alloc-fail. Returns the buffers posted."""
    cdef uint32_t done = 0, offset
    cdef netmem_ref netmem
    cdef nm_rx_buf *s
    while r.nr_empty:
        netmem = __rx_alloc(pool, size, &offset)
        if unlikely(not netmem):
            q.stats.alloc_fail += 1
            break
        s = &r.slots[r.tail]
        s.netmem = netmem
        s.offset = offset
        s.size = size
        s.dma = __netmem_desc(pool.m, netmem).dma_addr + offset + pool.offset
        r.tail = r.tail + 1 if r.tail + 1 < r.size else 0
        r.nr_empty -= 1
        done += 1
    return done


cdef void nm_rx_ring_drain(nm_rx_ring *r, nm_pool *pool) noexcept nogil:
    """Return every posted buffer to its pool (the queue is stopping)."""
    cdef uint32_t i
    for i in range(r.size):
        if r.slots[i].netmem:
            page_pool_put_netmem(pool, r.slots[i].netmem, <uint32_t>-1, False)
            r.slots[i].netmem = 0
    r.head = r.tail = 0
    r.nr_empty = r.size


cdef inline bint __ring_has(nm_rx_ring *r, uint32_t n) noexcept nogil:
    """Whether ``n`` consecutive posted buffers wait at the head."""
    cdef uint32_t i, s = r.head
    for i in range(n):
        if not r.slots[s].netmem:
            return False
        s = s + 1 if s + 1 < r.size else 0
    return True


cdef inline nm_rx_buf *__ring_take(nm_rx_ring *r, nm_rx_buf *out) noexcept nogil:
    cdef nm_rx_buf *s = &r.slots[r.head]
    out[0] = s[0]
    s.netmem = 0
    r.head = r.head + 1 if r.head + 1 < r.size else 0
    r.nr_empty += 1
    return out


# ---- the device's DMA write ---------------------------------------------------------------------

cdef int __dev_write_stripped(nm_device *dev, uint64_t dma, const uint8_t *f, nm_pkt *p,
                              uint32_t start, uint32_t n) noexcept nogil:
    """Write bytes [start, start + n) of the frame as the device delivers it (VLAN tags
    stripped into the descriptor) at ``dma``."""
    cdef uint32_t strip = p.nr_vlans * VLAN_HLEN, cut = p.vlan_off, k
    cdef int rc
    if strip == 0 or start >= cut:
        return nm_dev_write(dev, dma, <const char *>(f + start + strip), n)
    k = min(n, cut - start)
    rc = nm_dev_write(dev, dma, <const char *>(f + start), k)
    if rc == 0 and n > k:
        rc = nm_dev_write(dev, dma + k, <const char *>(f + cut + strip), n - k)
    return rc


cdef inline void __sync_for_cpu(nm_pool *pool, nm_rx_buf *b, uint32_t len) noexcept nogil:
    """Models ``page_pool_dma_sync_netmem_for_cpu()`` on a received buffer, in
    ``page_pool_get_dma_dir()``."""
    if pool.dma_sync_for_cpu and pool.dma_map:
        pool.nr_sync_for_cpu += 1
        nm_dma_sync_for_cpu(pool.dev, b.dma, len, pool.dma_dir)


# ---- NAPI poll ----------------------------------------------------------------------------------

cdef void __rx_drop_bufs(nm_rxq *q, nm_rx_buf *hdr, nm_rx_buf *bufs, uint32_t n) noexcept nogil:
    cdef uint32_t i
    if hdr != NULL and hdr.netmem:
        page_pool_put_netmem(q.hdr_pool, hdr.netmem, <uint32_t>-1, True)
    for i in range(n):
        page_pool_put_netmem(q.pool, bufs[i].netmem, <uint32_t>-1, True)


cdef uint32_t __rx_build_skb(nm_net *n, nm_rxq *q, nm_pkt *p, uint32_t split, nm_rx_buf *hdr,
                             nm_rx_buf *bufs, uint32_t nbufs, uint32_t dlen) noexcept nogil:
    """Build the skb of a received frame: with header split, the header buffer is the head;
    otherwise the driver copies the headers (``eth_get_headlen()``) into a linear head from the
    first buffer, when that buffer is readable."""
    cdef nm_machine *m = n.m
    cdef uint32_t si, i, hl = 0, first_off = 0, left = dlen - split, chunk
    cdef uint32_t nr = 0, data_len = 0, truesize
    cdef nm_skb *skb
    cdef nm_shinfo *sh
    if split:
        si = napi_build_skb(n, hdr.netmem, hdr.offset, NM_HDR_BUF_SIZE, q.cpu)
        if si == NM_NIL:
            return NM_NIL
        skb = SKB(n, si)
        hl = split
    else:
        si = napi_alloc_skb(n, q.cpu)
        if si == NM_NIL:
            return NM_NIL
        skb = SKB(n, si)
        if nbufs and not (bufs[0].netmem & NET_IOV):
            hl = min(<uint32_t>p.hdr_len - p.nr_vlans * VLAN_HLEN, dlen)
            hl = min(hl, <uint32_t>NM_SKB_LINEAR)
            memcpy(skb_shinfo(n, skb).linear,
                   nm_phys_to_virt(m, netmem_phys(m, bufs[0].netmem) + bufs[0].offset), hl)
            first_off = hl
            left -= hl
    # skb_add_rx_frag_netmem() per buffer, the lengths summed in registers and stored once, as
    # drivers that build multi-buffer skbs do (xdp_update_skb_shared_info()): reading back
    # skb->len right after the stores that set it cannot be forwarded from them, and waits
    # for every older store, the DMA write's included, to reach the cache.
    sh = skb_shinfo(n, skb)
    truesize = skb.truesize
    for i in range(nbufs):
        chunk = min(left, bufs[i].size - first_off)
        if chunk == 0:
            # The headers took the whole buffer: it goes home.
            page_pool_put_netmem(q.pool, bufs[i].netmem, <uint32_t>-1, True)
        else:
            __skb_fill_netmem_desc(skb, sh, nr, bufs[i].netmem, bufs[i].offset + first_off, chunk)
            skb_propagate_pfmemalloc(m, bufs[i].netmem, skb)
            nr += 1
            data_len += chunk
            truesize += bufs[i].size
        left -= chunk
        first_off = 0
    sh.nr_frags = nr
    skb.len = hl + data_len
    skb.data_len = data_len
    skb.truesize = truesize
    skb.pp_recycle = 1                  # skb_mark_for_recycle()
    skb.network_header = <uint16_t>(p.l3_off - p.nr_vlans * VLAN_HLEN)
    skb.transport_header = <uint16_t>(p.l4_off - p.nr_vlans * VLAN_HLEN) if p.l4_off else 0
    skb.vlan_tci = p.vlan_tci
    if p.ethertype == ETH_P_IP or p.ethertype == ETH_P_IPV6:
        skb.protocol = 4 if p.ethertype == ETH_P_IP else 6
    elif (p.ethertype == ETH_P_8021Q or p.ethertype == ETH_P_8021AD) and p.nr_vlans < 2:
        skb.protocol = NM_SKB_PROTO_VLAN_CUT    # a tag the frame ends inside
    else:
        skb.protocol = 0
    skb.napi_id = q.napi.napi_id
    return si


cdef inline bint __vlan_dev(const nm_netdev *nd, uint16_t vid) noexcept nogil:
    """``vlan_find_dev()`` on the real device: a VLAN device with this id."""
    return (nd.vlan_devs[vid >> 6] >> (vid & 63)) & 1


cdef inline bint __vlan_dev_stacked(const nm_netdev *nd, uint16_t outer,
                                    uint16_t inner) noexcept nogil:
    """``vlan_find_dev()`` on VLAN device ``outer``: a VLAN device with id ``inner`` over it."""
    cdef uint32_t i, key = (<uint32_t>outer << 16) | inner
    for i in range(nd.nr_vlan_stacked):
        if nd.vlan_stacked[i] == key:
            return True
    return False


cdef uint8_t vlan_pkt_type(const nm_netdev *nd, const nm_pkt *p) noexcept nogil:
    """skb->pkt_type as ``__netif_receive_skb_core()`` leaves it for a tagged frame (6.12 to
    7.x): ``vlan_do_receive()`` hands the frame to the VLAN device of its id, whose round takes
    the inner tag the same way; where no VLAN device has the id, a VLAN id other than 0 makes
    the frame PACKET_OTHERHOST (which ``ip_rcv_core()`` drops), and behind a priority tag (id 0)
    the inner tag is untagged (``skb_vlan_untag()``) and decides as the outer one would.
    Departs: decided here, where the model's device strips both tags (a NIC strips the outer
    one and the stack the inner), since the skb keeps only the outer TCI; VLAN devices match
    by id only (not by 802.1Q/802.1AD protocol), and the frame stays on the real device."""
    cdef uint16_t v1 = p.vlan_tci & VLAN_VID_MASK, v2 = p.vlan_tci2 & VLAN_VID_MASK
    if p.nr_vlans == 0:
        return PACKET_HOST
    if __vlan_dev(nd, v1):
        if p.nr_vlans == 2 and v2 and not __vlan_dev_stacked(nd, v1, v2):
            return PACKET_OTHERHOST
        return PACKET_HOST
    if v1:
        return PACKET_OTHERHOST
    if p.nr_vlans == 2 and v2 and not __vlan_dev(nd, v2):
        return PACKET_OTHERHOST
    return PACKET_HOST


cdef void nm_rx_frame(nm_net *n, nm_netdev *nd, nm_rxq *q, const uint8_t *f, nm_pkt *p,
                      uint32_t hash, uint64_t tstamp, nm_prof_t *pr) noexcept nogil:
    """One frame through the device and the driver: DMA into posted buffers, build the skb,
    give it to GRO. ``p`` is the parse steering made of the frame. Drops are counted; no
    buffer is lost. Profiled, the skb carries ``tstamp`` (its DMA write's virtual time) and a
    sampled poll's stages are stamped."""
    cdef uint32_t len = p.len
    cdef nm_rx_buf hdr
    cdef nm_rx_buf bufs[64]
    cdef uint32_t dlen, split = 0, nbufs, i, done, chunk, si
    cdef nm_skb *skb
    cdef nm_device *dev = nd.dma_dev
    cdef int rc = 0
    cdef char *pf = NULL
    cdef uint32_t pfn = 0
    if nm_prof_t is nm_prof:
        prof_enter(pr, NM_PROF_DMA)
    hdr.netmem = 0
    if p.status == NM_PKT_RUNT or len > nd.mtu + ETH_HLEN + p.nr_vlans * VLAN_HLEN:
        q.stats.length_errors += 1
        q.stats.hw_drops += 1
        nd.rx_length_errors += 1
        return
    dlen = len - p.nr_vlans * VLAN_HLEN
    if q.hds:
        if q.hds_thresh and dlen <= q.hds_thresh:
            split = dlen
        elif p.hdr_len and p.l4_off and p.ip_proto == IPPROTO_TCP:
            split = p.hdr_len - p.nr_vlans * VLAN_HLEN
        if split > NM_HDR_BUF_SIZE - SKB_DATA_ALIGN_SHINFO:
            split = 0
    nbufs = (dlen - split + q.buf_size - 1) // q.buf_size
    if (split and not __ring_has(&q.hdr_ring, 1)) or not __ring_has(&q.ring, nbufs):
        q.stats.hw_drop_overruns += 1
        q.stats.hw_drops += 1
        return
    # The device writes the frame; a fault aborts it and the buffers stay posted.
    if split:
        rc = __dev_write_stripped(dev, q.hdr_ring.slots[q.hdr_ring.head].dma, f, p, 0, split)
    done = split
    i = q.ring.head
    while rc == 0 and done < dlen:
        chunk = min(dlen - done, q.buf_size)
        rc = __dev_write_stripped(dev, q.ring.slots[i].dma, f, p, done, chunk)
        done += chunk
        i = i + 1 if i + 1 < q.ring.size else 0
    if rc != 0:
        q.stats.faults += 1
        q.stats.hw_drops += 1
        return
    # The buffer the next frame's payload goes to: its lines warm while this frame goes up,
    # half now and half after GRO (at once, they stalled the skb build: 0.95x split).
    if q.ring.slots[i].netmem:
        pfn = min(q.buf_size, nd.mtu + ETH_HLEN)
        pf = nm_dev_prefetchw(dev, q.ring.slots[i].dma, pfn, pfn // 2)
    if nm_prof_t is nm_prof:
        prof_enter(pr, NM_PROF_SKB)
    if split:
        __ring_take(&q.hdr_ring, &hdr)
        __sync_for_cpu(q.hdr_pool, &hdr, split)
        q.stats.hds_split += 1
    done = split
    for i in range(nbufs):
        __ring_take(&q.ring, &bufs[i])
        chunk = min(dlen - done, q.buf_size)
        __sync_for_cpu(q.pool, &bufs[i], chunk)
        done += chunk
    si = __rx_build_skb(n, q, p, split, &hdr, bufs, nbufs, dlen)
    if si == NM_NIL:
        q.stats.skb_alloc_fail += 1
        __rx_drop_bufs(q, &hdr if split else NULL, bufs, nbufs)
        return
    q.stats.packets += 1
    q.stats.bytes += dlen
    skb = SKB(n, si)
    skb.hash = hash
    skb.pkt_type = vlan_pkt_type(nd, p)
    if nm_prof_t is not nm_noprof:
        n.skb_tstamp[si] = tstamp | NM_TSTAMP_SET
    if skb_headlen(skb) < ETH_HLEN:
        # eth_type_trans() needs the Ethernet header in the head; an unsplit frame over an
        # unreadable buffer has none.
        nd.rx_dropped += 1
        __kfree_skb(n, si)
        return
    skb.data = ETH_HLEN                 # eth_type_trans()
    skb.len -= ETH_HLEN
    if nm_prof_t is nm_prof:
        prof_enter(pr, NM_PROF_GRO)
    napi_gro_receive(n, nd, q, si, pr)
    if pf != NULL:
        prefetch_range(pf + pfn // 2, pfn - pfn // 2, True)
        barrier()


cdef uint32_t nm_napi_poll(nm_net *n, nm_netdev *nd, nm_rxq *q, const uint8_t *arena,
                           const uint64_t *offs, uint32_t start, nm_prof_t *pr) noexcept nogil:
    """One NAPI poll of a queue, budget 64, on its CPU in softirq: flush the CPU's deferred skbs
    (``net_rx_action()``), take up to 64 frames, flush GRO, refill the rings. Returns the work
    done. The caller sets the CPU context. Profiled, each step is a stage (in a sampled poll,
    ``nm_prof``, each frame's too) and each skb carries its frame's arrival."""
    cdef uint32_t work = 0, fi, nfi, left = 0
    cdef const char *rest
    cdef uint64_t tstamp = 0, traced = 0
    if nm_prof_t is not nm_noprof:
        prof_enter(__prof(pr), NM_PROF_PUTS)
    if unlikely(n.m.trace_mask):
        traced = __trace_poll_begin(n, nd, q)
    q.napi.list_owner = q.cpu           # ____napi_schedule()
    skb_defer_free_flush(n, q.cpu)
    if nm_prof_t is nm_prof:
        prof_enter(pr, NM_PROF_TCP)         # the socket prefetch
    elif nm_prof_t is nm_prof_rx:
        prof_enter(__prof(pr), NM_PROF_RX)
    if n.nr_socks >= NM_SK_PREFETCH_MIN:
        __sk_prefetch_batch(n, arena, offs, nd.pkts, q.pending + q.pending_pos,
                            min(<uint32_t>NAPI_POLL_WEIGHT, q.npending - q.pending_pos), start)
    while work < NAPI_POLL_WEIGHT and q.pending_pos < q.npending:
        fi = q.pending[q.pending_pos]
        q.pending_pos += 1
        # The stack's clock: polls run round robin, so it keeps to the latest arrival.
        n.now_ns = max(n.now_ns, __rx_arrival(n, nd, fi))
        if unlikely(n.delack_next != 0):
            tcp_delack_run(n)               # the delayed-ACK timers due by this arrival
        if nm_prof_t is not nm_noprof:
            tstamp = __rx_arrival(n, nd, fi)
        if unlikely(traced):
            __trace_frame(n, nd, q, fi)
        rest = NULL
        if q.pending_pos + NM_RX_FRAME_AHEAD - 1 < q.npending:     # see NM_RX_FRAME_AHEAD
            nfi = q.pending[q.pending_pos + NM_RX_FRAME_AHEAD - 1]
            if nd.pkts[nfi - start].len > NM_PARSE_REACH:       # the headers: the parser's
                rest = <const char *>arena + offs[nfi] + NM_PARSE_REACH
                left = nd.pkts[nfi - start].len - NM_PARSE_REACH
                prefetch_range(rest, left // 2, False)
        nm_rx_frame(n, nd, q, arena + offs[fi], &nd.pkts[fi - start], nd.hashes[fi - start],
                    tstamp, pr)
        if rest != NULL:
            prefetch_range(rest + left // 2, left - left // 2, False)
            barrier()
        work += 1
    if nm_prof_t is nm_prof:
        pr.frames[1] += work
        prof_enter(pr, NM_PROF_GRO)
    elif nm_prof_t is nm_prof_rx:
        __prof(pr).frames[0] += work
    napi_gro_flush(n, nd, q, pr)
    if nm_prof_t is not nm_noprof:
        prof_enter(__prof(pr), NM_PROF_REFILL)
    if q.hds:
        nm_rx_ring_refill(q, &q.hdr_ring, q.hdr_pool, NM_HDR_BUF_SIZE)
    nm_rx_ring_refill(q, &q.ring, q.pool, q.buf_size)
    q.stats.polls += 1
    if work < NAPI_POLL_WEIGHT:
        q.napi.list_owner = -1          # napi_complete_done()
    if unlikely(traced):
        __trace_poll_end(n, nd, q, work, traced)
    return work


# ---- tracing a poll: virtual time inside receive() ----------------------------------------------
# The clock stands still through one receive() call; a traced poll's events take its frames'
# arrival times instead (trace_ts), never earlier than the queue's last traced event, so the
# polls of one queue follow each other and each one's events lie within it.

cdef uint64_t __trace_poll_begin(nm_net *n, nm_netdev *nd, nm_rxq *q) noexcept nogil:
    """A traced poll starts at its first frame's arrival: returns that time (never 0)."""
    if q.pending_pos < q.npending:
        __trace_frame(n, nd, q, q.pending[q.pending_pos])
    else:
        q.trace_ts = max(q.trace_ts, n.m.clock_ns)
        n.m.trace_ts = q.trace_ts
    n.m.trace_queue = <int32_t>q.idx
    return max(q.trace_ts, 1)


cdef inline void __trace_frame(nm_net *n, nm_netdev *nd, nm_rxq *q, uint32_t fi) noexcept nogil:
    q.trace_ts = max(q.trace_ts, __rx_arrival(n, nd, fi))
    n.m.trace_ts = q.trace_ts


cdef void __trace_poll_end(nm_net *n, nm_netdev *nd, nm_rxq *q, uint32_t work,
                           uint64_t start) noexcept nogil:
    """``trace_napi_poll(napi, work, budget)`` at the poll's end (napi_poll()): its start in
    ``c``, so a reader draws the poll as a span; then time is the clock's again."""
    nm_trace(n.m, TP_NAPI_POLL, q.napi.napi_id if q.napi != NULL else 0, nd.ifindex, work,
             NAPI_POLL_WEIGHT, <int64_t>start)
    n.m.trace_ts = 0
    n.m.trace_queue = -1


cdef inline uint64_t __rx_arrival(nm_net *n, nm_netdev *nd, uint32_t fi) noexcept nogil:
    """The virtual time frame ``fi`` arrives and the device writes it: its timestamp on the
    machine's clock while ``receive()`` follows the trace, else the clock."""
    if nd.ts != NULL:
        return <uint64_t>(nd.ts_base + <int64_t>nd.ts[fi])
    return n.m.clock_ns


cdef uint32_t __steer_until(nm_net *n, nm_netdev *nd, nm_rxq *q, const uint8_t *arena,
                            const uint64_t *offs, const uint32_t *lens, uint32_t fi,
                            uint32_t start, uint32_t end) noexcept nogil:
    """The device's parser and steering, frame by frame from ``fi``, until queue ``q`` has a
    NAPI budget of frames waiting (``q`` NULL: until the end); returns the next frame. A frame
    for a queue that is not running is dropped."""
    cdef uint32_t qi
    cdef nm_pkt *p
    cdef nm_rxq *to
    if unlikely(n.prof.on) and fi < end:
        prof_enter(&n.prof, NM_PROF_STEER)
    while fi < end and (q == NULL or q.npending - q.pending_pos < NAPI_POLL_WEIGHT):
        p = &nd.pkts[fi - start]
        if fi + NM_PARSE_AHEAD < end:     # the model's own speed: see NM_PARSE_AHEAD
            prefetch_range(<const char *>arena + offs[fi + NM_PARSE_AHEAD], NM_PARSE_REACH,
                           False)
        nm_parse(arena + offs[fi], lens[fi], p)
        qi = nm_steer(nd, arena + offs[fi], p, &nd.hashes[fi - start])
        if qi >= nd.num_rxq or not nd.rxq[qi].started:
            # A rule (or table) naming a queue that is not running: the device drops.
            nd.rx_dropped += 1
        else:
            to = &nd.rxq[qi]
            to.pending[to.npending] = fi
            to.npending += 1
        fi += 1
    return fi


cdef void nm_netdev_receive(nm_net *n, nm_netdev *nd, const uint8_t *arena, const uint64_t *offs,
                            const uint32_t *lens, uint32_t start, uint32_t end) noexcept nogil:
    """Frames [start, end) arrive: the device parses and steers each to a queue, then every
    queue's NAPI polls (budget 64 each, round robin over the queues) until all are taken. The
    caller makes ``end - start`` at most ``nd.scratch_cap`` (``_nd_reserve()``). While
    profiling, the profiled build of the poll runs (one in NM_PROF_SAMPLE a sample).

    The polls are those of steering every frame first, but the model steers a queue's frames
    only as its poll needs them (``__steer_until()``: a poll takes its queue's next 64, so the
    frames steered beyond them change nothing): the device's parser reads a frame shortly
    before the poll's DMA write reads it again, while its lines are in the caches, not a
    whole chunk earlier (docs/benchmarks.md)."""
    cdef nm_machine *m = n.m
    cdef uint32_t fi = start, qi, busy
    cdef nm_rxq *q
    cdef int cpu = m.cpu, softirq = m.in_softirq
    for qi in range(nd.num_rxq):
        nd.rxq[qi].npending = 0
        nd.rxq[qi].pending_pos = 0
    busy = 1
    while busy:
        busy = 0
        for qi in range(nd.num_rxq):
            q = &nd.rxq[qi]
            if q.started:
                fi = __steer_until(n, nd, q, arena, offs, lens, fi, start, end)
            if q.pending_pos < q.npending:
                m.cpu = q.cpu
                m.in_softirq = 1
                if likely(not n.prof.on):
                    nm_napi_poll(n, nd, q, arena, offs, start, <nm_noprof *>NULL)
                elif prof_sample_poll(&n.prof):
                    nm_napi_poll(n, nd, q, arena, offs, start, &n.prof)
                else:
                    nm_napi_poll(n, nd, q, arena, offs, start, <nm_prof_rx *>&n.prof)
                busy = 1
    # With no queue running, nothing was steered: every frame is dropped.
    __steer_until(n, nd, NULL, arena, offs, lens, fi, start, end)
    for qi in range(nd.num_rxq):
        if nd.rxq[qi].napi != NULL:
            nd.rxq[qi].napi.list_owner = -1
    tcp_delack_run(n)
    n.now_ns = 0
    tcp_delack_run(n)                       # and those due by the machine's clock
    m.cpu = cpu
    m.in_softirq = softirq
    if unlikely(n.prof.on):
        prof_enter(&n.prof, NM_PROF_OUTSIDE)
