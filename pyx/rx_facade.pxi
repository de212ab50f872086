# The Python boundary of the RX path: CoreNetDevice (the device, its queues and steering) and
# the machine-wide stack calls (sockets, MIBs, skbs for tests). netmem.netdev, netmem.tcp and
# netmem.skb build on these.

# A fixed default RSS key: netdev_rss_key_fill() draws a random one at boot; this one is the
# Microsoft verification key, so hashes are reproducible and checkable against the spec.
RSS_DEFAULT_KEY = bytes.fromhex(
    "6d5a56da255b0ec24167253d43a38fb0d0ca2bcbae7b30b477cb2da38030f20c6a42b73bbeac01fa")

TCP_MIB_KEYS = ("InSegs", "InErrs", "OutRsts", "PassiveOpens", "TCPOFOQueue", "TCPOFOMerge",
                "TCPOFODrop", "TCPRcvCoalesce", "TCPRcvQDrop", "DelayedACKLost",
                "TCPDSACKOldSent", "TCPDSACKOfoSent", "TCPAbortOnData", "TCPZeroWindowDrop",
                "TCPChallengeACK", "TCPSYNChallenge", "TCPAbortOnClose", "PFMemallocDrop",
                "TCPACKSkippedChallenge", "OutSegs", "DelayedACKs", "TCPWantZeroWindowAdv",
                "TCPToZeroWindowAdv", "TCPFromZeroWindowAdv", "PruneCalled", "RcvPruned",
                "OfoPruned", "TCPRcvCollapsed", "BeyondWindow", "TCPACKSkippedSeq")
IP_MIB_KEYS = ("InReceives", "InHdrErrors", "InTruncatedPkts", "InUnknownProtos", "InDelivers",
               "ReasmReqds", "ReasmFails")
DROP_REASONS = ("NOT_SPECIFIED", "NO_SOCKET", "PKT_TOO_SMALL", "TCP_OLD_DATA", "TCP_OFO_DROP",
                "TCP_OFOMERGE", "PROTO_MEM", "IP_INHDR", "UNHANDLED_PROTO", "TCP_RESET",
                "TCP_INVALID_SEQUENCE", "SOCKET_CLOSE", "IP_NOPROTO", "TCP_FLAGS",
                "FRAG_REASM_TIMEOUT", "TCP_CLOSE", "TCP_INVALID_SYN", "TCP_ABORT_ON_DATA",
                "PFMEMALLOC", "OTHERHOST", "TCP_OFO_QUEUE_PRUNE", "TCP_OLD_SEQUENCE",
                "TCP_INVALID_END_SEQUENCE", "TCP_ZEROWINDOW", "TCP_OVERWINDOW")
RXQ_STATS_KEYS = ("packets", "bytes", "alloc_fail", "hw_drops", "hw_drop_overruns",
                  "length_errors", "faults", "polls", "hds_split", "skb_alloc_fail")
GRO_STATS_KEYS = ("merged", "held", "normal", "flushes", "flush_e2big", "flush_toomanyrefs")
HDR_BUF_SIZE = NM_HDR_BUF_SIZE
HDS_THRESH_MAX = NM_HDS_THRESH_MAX
RX_BUF_SIZE = NM_RX_BUF_SIZE
MAX_SKB_FRAGS_ = MAX_SKB_FRAGS
NAPI_POLL_WEIGHT_ = NAPI_POLL_WEIGHT
INDIR_SIZE = NM_INDIR_SIZE
TCP_STATES = {NM_TCP_ESTABLISHED: "ESTABLISHED", NM_TCP_CLOSE_WAIT: "CLOSE_WAIT",
              NM_TCP_CLOSE: "CLOSE"}


cdef int _nd_reserve(nm_netdev *nd, uint32_t n) except -1:
    """Room for ``n`` frames per receive call: the parse and hash scratch arrays, and every
    queue's pending list."""
    cdef uint32_t i
    cdef void *p
    if nd.scratch_cap >= n:
        return 0
    p = realloc(nd.pkts, n * sizeof(nm_pkt))
    if p == NULL:
        raise MemoryError()
    nd.pkts = <nm_pkt *>p
    p = realloc(nd.hashes, n * sizeof(uint32_t))
    if p == NULL:
        raise MemoryError()
    nd.hashes = <uint32_t *>p
    for i in range(nd.max_rxq):
        p = realloc(nd.rxq[i].pending, n * sizeof(uint32_t))
        if p == NULL:
            raise MemoryError()
        nd.rxq[i].pending = <uint32_t *>p
    nd.scratch_cap = n
    return 0


cdef nm_pool *_pool_of(object pool) except? NULL:
    if pool is None:
        return NULL
    return (<CorePagePool?>pool).pool


cdef class CoreNetDevice:
    """The compiled half of ``netmem.NetDevice``."""

    def __cinit__(self, CoreMachine machine, CoreDevice dma_dev, uint32_t ifindex, uint32_t mtu,
                  uint32_t max_rxq, *args, **kwargs):
        cdef nm_netdev *nd = <nm_netdev *>calloc(1, sizeof(nm_netdev))
        cdef uint32_t i
        if nd == NULL:
            raise MemoryError()
        self.nd = nd
        self.machine = machine
        self._keep = {"dev": dma_dev}
        nd.m = machine.m
        nd.dma_dev = &dma_dev.dev
        nd.ifindex = ifindex
        nd.mtu = mtu
        nd.max_rxq = max_rxq
        nd.num_rxq = max_rxq
        nd.rxq = <nm_rxq *>calloc(max_rxq, sizeof(nm_rxq))
        if nd.rxq == NULL:
            raise MemoryError()
        for i in range(max_rxq):
            nd.rxq[i].dev = nd
            nd.rxq[i].idx = i
            memset(nd.rxq[i].gro_head, 0xff, sizeof(nd.rxq[i].gro_head))
        self._set_rss([i % max_rxq for i in range(NM_INDIR_SIZE)], RSS_DEFAULT_KEY)

    def __dealloc__(self):
        cdef nm_netdev *nd = self.nd
        cdef uint32_t i
        if nd == NULL:
            return
        if nd.rxq != NULL:
            for i in range(nd.max_rxq):
                free(nd.rxq[i].ring.slots)
                free(nd.rxq[i].hdr_ring.slots)
                free(nd.rxq[i].pending)
            free(nd.rxq)
        free(nd.rules)
        free(nd.pkts)
        free(nd.hashes)
        free(nd)
        self.nd = NULL

    def _set_mtu(self, uint32_t mtu):
        self.nd.mtu = mtu

    def _set_num_rxq(self, uint32_t n):
        self.nd.num_rxq = n

    def _set_rss(self, indir, bytes key):
        """The indirection table (NM_INDIR_SIZE entries) and the 40-byte Toeplitz key."""
        cdef uint32_t i
        if len(indir) != NM_INDIR_SIZE or len(key) != NM_RSS_KEY_LEN:
            raise NetmemError(EINVAL, "set_rxfh: bad table or key size")
        for i in range(NM_INDIR_SIZE):
            self.nd.indir[i] = indir[i]
        self.nd.indir_size = NM_INDIR_SIZE
        memcpy(self.nd.key, <const char *>key, NM_RSS_KEY_LEN)
        netdev_rss_key_fill_toeplitz(self.nd)

    def _rss_hash(self, bytes frame):
        """(queue, hash) the device picks for one frame."""
        cdef nm_pkt p
        cdef uint32_t h = 0, q
        nm_parse(<const uint8_t *><const char *>frame, len(frame), &p)
        q = nm_steer(self.nd, <const uint8_t *><const char *>frame, &p, &h)
        return q, h

    def _set_rules(self, rules):
        """Ntuple rules, in match order: (loc, family, src, dst, sport, dport, queue), with
        None for a wildcard and addresses as packed bytes."""
        cdef nm_ntuple *r = <nm_ntuple *>calloc(max(len(rules), 1), sizeof(nm_ntuple))
        cdef uint32_t i
        if r == NULL:
            raise MemoryError()
        for i, (loc, family, src, dst, sport, dport, queue) in enumerate(rules):
            r[i].loc = loc
            r[i].family = family
            if src is not None:
                r[i].has_src = 1
                memcpy(r[i].src, <const char *>src, len(src))
            if dst is not None:
                r[i].has_dst = 1
                memcpy(r[i].dst, <const char *>dst, len(dst))
            if sport is not None:
                r[i].has_sport = 1
                r[i].sport = sport
            if dport is not None:
                r[i].has_dport = 1
                r[i].dport = dport
            r[i].queue = queue
        free(self.nd.rules)
        self.nd.rules = r
        self.nd.nr_rules = len(rules)

    def _rxq_start(self, uint32_t idx, int cpu, CoreNapi napi, hdr_pool, pool,
                   uint32_t ring_size, bint hds, uint32_t hds_thresh):
        """Models ``ndo_queue_start()``: rings posted from the new pools (with header split,
        payload buffers are whole buffers of the payload pool's order, the queue's
        ``rx_page_size``, and the payload ring is filled to ``ring_size`` divided by the
        buffer's pages, as ``bnxt_rx_agg_ring_fill_level()`` keeps the bytes posted the same
        whatever the buffer size). Returns the buffers posted (payload, header)."""
        cdef nm_rxq *q = &self.nd.rxq[idx]
        cdef uint32_t posted, hdr_posted = 0
        q.cpu = cpu
        q.napi = &napi.napi
        q.pool = _pool_of(pool)
        q.hdr_pool = _pool_of(hdr_pool)
        q.hds = hds
        q.hds_thresh = hds_thresh
        q.buf_size = (PAGE_SIZE << q.pool.order) if hds else NM_RX_BUF_SIZE   # rx_page_size
        q.ring.slots = <nm_rx_buf *>calloc(ring_size, sizeof(nm_rx_buf))
        q.ring.size = q.ring.nr_empty = max(ring_size >> q.pool.order, 1)     # fill level
        q.ring.head = q.ring.tail = 0
        if hds:
            q.hdr_ring.slots = <nm_rx_buf *>calloc(ring_size, sizeof(nm_rx_buf))
            q.hdr_ring.size = q.hdr_ring.nr_empty = ring_size
            q.hdr_ring.head = q.hdr_ring.tail = 0
        if q.ring.slots == NULL or (hds and q.hdr_ring.slots == NULL):
            raise MemoryError()
        self._keep[idx] = (napi, hdr_pool, pool)
        posted = nm_rx_ring_refill(q, &q.ring, q.pool, q.buf_size)
        if hds:
            hdr_posted = nm_rx_ring_refill(q, &q.hdr_ring, q.hdr_pool, NM_HDR_BUF_SIZE)
        q.started = 1
        return posted, hdr_posted

    def _rxq_stop(self, uint32_t idx):
        """Models ``ndo_queue_stop()`` + ``ndo_queue_mem_free()``: every posted buffer goes back
        to its pool."""
        cdef nm_rxq *q = &self.nd.rxq[idx]
        if not q.started:
            return
        q.started = 0
        nm_rx_ring_drain(&q.ring, q.pool)
        free(q.ring.slots)
        q.ring.slots = NULL
        if q.hdr_ring.slots != NULL:
            nm_rx_ring_drain(&q.hdr_ring, q.hdr_pool)
            free(q.hdr_ring.slots)
            q.hdr_ring.slots = NULL
        q.pool = q.hdr_pool = NULL
        q.napi = NULL
        self._keep.pop(idx, None)

    def _rxq_posted(self, uint32_t idx):
        cdef nm_rxq *q = &self.nd.rxq[idx]
        if not q.started:
            return 0, 0
        return (q.ring.size - q.ring.nr_empty,
                q.hdr_ring.size - q.hdr_ring.nr_empty if q.hds else 0)

    def _rxq_ring_netmems(self, uint32_t idx):
        """For tests: the netmem of every posted buffer of the queue (payload ring, then header
        ring)."""
        cdef nm_rxq *q = &self.nd.rxq[idx]
        cdef nm_rx_ring *r
        cdef int k
        out = []
        if not q.started:
            return out
        for k in range(2):
            r = &q.ring if k == 0 else &q.hdr_ring
            if r.slots != NULL:
                out += [r.slots[i].netmem for i in range(r.size) if r.slots[i].netmem]
        return out

    @property
    def ifindex(self):
        """The device's ifindex (``register_netdevice()`` gives it): in C for tracepoints."""
        return self.nd.ifindex

    @ifindex.setter
    def ifindex(self, uint32_t value):
        self.nd.ifindex = value

    def _receive(self, const uint8_t[::1] arena, const uint64_t[::1] offsets,
                 const uint32_t[::1] lengths, uint32_t start, uint32_t end,
                 const uint64_t[::1] timestamps=None, int64_t ts_base=0):
        """Frames [start, end) of a trace through the device, its NAPI polls, GRO and the
        stack (one call runs in C). With ``timestamps``, frame i arrives at virtual time
        ``ts_base + timestamps[i]`` (else at the clock): what a profile's skbs carry."""
        cdef nm_netdev *nd = self.nd
        cdef uint32_t i
        cdef uint64_t total = arena.shape[0]
        if end > offsets.shape[0] or end > lengths.shape[0] or start > end or (
                timestamps is not None and end > timestamps.shape[0]):
            raise NetmemError(EINVAL, "receive: frame range outside the trace")
        for i in range(start, end):
            if offsets[i] + lengths[i] > total:
                raise NetmemError(EINVAL, f"receive: frame {i} runs past the arena")
        if end == start:
            return
        _nd_reserve(nd, end - start)
        nd.ts = &timestamps[0] if timestamps is not None else NULL
        nd.ts_base = ts_base
        with nogil:
            nm_netdev_receive(self.machine.m.net, nd, &arena[0], &offsets[0], &lengths[0],
                              start, end)
        nd.ts = NULL

    def _netif_receive_skb(self, uint32_t si):
        """A frame built by a test as an skb (Ethernet header in its head) up the stack:
        ``eth_type_trans()``, then ``netif_receive_skb()``, bypassing GRO."""
        cdef CoreMachine machine = self.machine
        cdef nm_net *n = machine.m.net
        cdef nm_skb *skb = _skb(machine, si)
        cdef const uint8_t *eth
        cdef uint16_t et
        if skb_headlen(skb) < ETH_HLEN:
            raise NetmemError(EINVAL, "eth_type_trans: the Ethernet header is not in the head")
        eth = skb_head(machine.m, skb_shinfo(n, skb)) + skb.data
        et = _be16(eth + 12)
        skb.protocol = 4 if et == ETH_P_IP else 6 if et == ETH_P_IPV6 else 0
        skb.data += ETH_HLEN
        skb.len -= ETH_HLEN
        skb.network_header = <uint16_t>skb.data
        netif_receive_skb(n, self.nd, si)
        if machine.m.nr_warn:
            machine._flush_warnings()

    def _napi_gro_receive(self, uint32_t qidx, uint32_t si, uint32_t hash):
        """A frame built by a test as an skb (its headers in the head) given to a queue's GRO
        as its driver would: ``eth_type_trans()`` then ``napi_gro_receive()``, on the queue's
        CPU in softirq, with ``hash`` as the RSS hash. What GRO holds stays held until
        ``_napi_gro_flush()``. For skbs the model's driver never builds (one not marked for
        recycling)."""
        cdef CoreMachine machine = self.machine
        cdef nm_machine *m = machine.m
        cdef nm_net *n = m.net
        cdef nm_skb *skb = _skb(machine, si)
        cdef nm_rxq *q
        cdef nm_pkt pkt
        cdef int cpu = m.cpu, softirq = m.in_softirq
        if qidx >= self.nd.num_rxq or not self.nd.rxq[qidx].started:
            raise NetmemError(EINVAL, f"napi_gro_receive: queue {qidx} is not running")
        q = &self.nd.rxq[qidx]
        if skb_headlen(skb) < ETH_HLEN:
            raise NetmemError(EINVAL, "eth_type_trans: the Ethernet header is not in the head")
        nm_parse(skb_head(m, skb_shinfo(n, skb)) + skb.data, skb_headlen(skb), &pkt)
        if pkt.nr_vlans:
            raise NetmemError(EINVAL, "napi_gro_receive: a VLAN tag in the frame (the device "
                                      "strips them)")
        skb.protocol = 4 if pkt.ethertype == ETH_P_IP else 6 if pkt.ethertype == ETH_P_IPV6 else 0
        skb.mac_header = <uint16_t>skb.data
        skb.network_header = <uint16_t>(skb.data + pkt.l3_off)
        skb.transport_header = <uint16_t>(skb.data + pkt.l4_off) if pkt.l4_off else 0
        skb.hash = hash
        skb.napi_id = q.napi.napi_id
        skb.data += ETH_HLEN
        skb.len -= ETH_HLEN
        m.cpu = q.cpu
        m.in_softirq = 1
        napi_gro_receive(n, self.nd, q, si, <nm_noprof *>NULL)
        m.cpu = cpu
        m.in_softirq = softirq
        if m.nr_warn:
            machine._flush_warnings()

    def _napi_gro_flush(self, uint32_t qidx):
        """``napi_gro_flush()`` of a queue, on its CPU in softirq."""
        cdef CoreMachine machine = self.machine
        cdef nm_machine *m = machine.m
        cdef int cpu = m.cpu, softirq = m.in_softirq
        if qidx >= self.nd.num_rxq or not self.nd.rxq[qidx].started:
            raise NetmemError(EINVAL, f"napi_gro_flush: queue {qidx} is not running")
        m.cpu = self.nd.rxq[qidx].cpu
        m.in_softirq = 1
        napi_gro_flush(m.net, self.nd, &self.nd.rxq[qidx], <nm_noprof *>NULL)
        m.cpu = cpu
        m.in_softirq = softirq
        if m.nr_warn:
            machine._flush_warnings()

    def _rxq_stats(self, uint32_t idx):
        cdef nm_rxq_stats *s = &self.nd.rxq[idx].stats
        return dict(zip(RXQ_STATS_KEYS, (s.packets, s.bytes, s.alloc_fail, s.hw_drops,
                                         s.hw_drop_overruns, s.length_errors, s.faults, s.polls,
                                         s.hds_split, s.skb_alloc_fail)))

    def _gro_stats(self, uint32_t idx):
        cdef nm_gro_stats *g = &self.nd.rxq[idx].gro
        return dict(zip(GRO_STATS_KEYS, (g.merged, g.held, g.normal, g.flushes, g.flush_e2big,
                                         g.flush_toomanyrefs)))

    def _dev_stats(self):
        return {"rx_nohandler": self.nd.rx_nohandler, "rx_dropped": self.nd.rx_dropped,
                "rx_length_errors": self.nd.rx_length_errors,
                "rx_otherhost_dropped": self.nd.rx_otherhost_dropped}

    def _vlan_set(self, uint16_t vid, int inner, bint on):
        """Add (``on``) or remove the VLAN device ``vid`` (``inner`` -1), or ``inner`` over
        it. Returns False when there is nothing to do (present, absent, or no room)."""
        cdef nm_netdev *nd = self.nd
        cdef uint32_t i, key = (<uint32_t>vid << 16) | <uint16_t>inner
        if inner < 0:
            if __vlan_dev(nd, vid) == on:
                return False
            nd.vlan_devs[vid >> 6] ^= <uint64_t>1 << (vid & 63)
            return True
        for i in range(nd.nr_vlan_stacked):
            if nd.vlan_stacked[i] == key:
                if on:
                    return False
                nd.nr_vlan_stacked -= 1
                nd.vlan_stacked[i] = nd.vlan_stacked[nd.nr_vlan_stacked]
                return True
        if not on or nd.nr_vlan_stacked == 64:
            return False
        nd.vlan_stacked[nd.nr_vlan_stacked] = key
        nd.nr_vlan_stacked += 1
        return True


# ---- the stack, machine-wide --------------------------------------------------------------------

cdef nm_net *_net(CoreMachine machine):
    return machine.m.net


def _tcp_mib(CoreMachine machine):
    cdef nm_tcp_mib *t = &_net(machine).tcp
    return dict(zip(TCP_MIB_KEYS, (t.InSegs, t.InErrs, t.OutRsts, t.PassiveOpens, t.TCPOFOQueue,
                                   t.TCPOFOMerge, t.TCPOFODrop, t.TCPRcvCoalesce, t.TCPRcvQDrop,
                                   t.DelayedACKLost, t.TCPDSACKOldSent, t.TCPDSACKOfoSent,
                                   t.TCPAbortOnData, t.TCPZeroWindowDrop, t.TCPChallengeACK,
                                   t.TCPSYNChallenge, t.TCPAbortOnClose, t.PFMemallocDrop,
                                   t.TCPACKSkippedChallenge, t.OutSegs, t.DelayedACKs,
                                   t.TCPWantZeroWindowAdv, t.TCPToZeroWindowAdv,
                                   t.TCPFromZeroWindowAdv, t.PruneCalled, t.RcvPruned,
                                   t.OfoPruned, t.TCPRcvCollapsed, t.BeyondWindow,
                                   t.TCPACKSkippedSeq)))


ACK_DTYPE = _np.dtype([("t_ns", "<u8"), ("slot", "<u4"), ("seq", "<u4"), ("ack", "<u4"),
                      ("win", "<u2"), ("flags", "u1"), ("nr_sack", "u1"), ("tsval", "<u4"),
                      ("tsecr", "<u4"), ("sack", "<u4", (4, 2))])


def _tcp_acks(CoreMachine machine, uint64_t max_n):
    """Drain up to ``max_n`` ACK records (oldest first) as an ACK_DTYPE array, after firing
    the delayed-ACK timers due by the machine's clock; and the ring's drop count."""
    cdef nm_net *n = _net(machine)
    cdef uint64_t k, i
    tcp_delack_run(n)
    k = min(n.ack_head - n.ack_tail, max_n)
    out = _np.zeros(k, dtype=ACK_DTYPE)
    cdef uint8_t[::1] raw = out.view(_np.uint8)
    cdef nm_ack_rec *dst = <nm_ack_rec *>&raw[0] if k else NULL
    for i in range(k):
        dst[i] = n.acks[(n.ack_tail + i) & (n.ack_cap - 1)]
    n.ack_tail += k
    return out, n.ack_dropped


def _udp_mib(CoreMachine machine, bint v6):
    cdef nm_udp_mib *s = &_net(machine).udp6 if v6 else &_net(machine).udp
    return {"InDatagrams": s.InDatagrams, "NoPorts": s.NoPorts, "InErrors": s.InErrors}


def _icmp_mib(CoreMachine machine, bint v6):
    """InMsgs, InErrors and, per message type seen, IcmpMsg's InType<N>."""
    cdef nm_icmp_mib *s = &_net(machine).icmp6 if v6 else &_net(machine).icmp
    out = {"InMsgs": s.InMsgs, "InErrors": s.InErrors}
    out.update({f"InType{t}": s.InType[t] for t in range(256) if s.InType[t]})
    return out


def _ip_mib(CoreMachine machine, bint v6):
    cdef nm_ip_mib *s = &_net(machine).ip6 if v6 else &_net(machine).ip
    return dict(zip(IP_MIB_KEYS, (s.InReceives, s.InHdrErrors, s.InTruncatedPkts,
                                  s.InUnknownProtos, s.InDelivers, s.ReasmReqds, s.ReasmFails)))


def _prof_reset(CoreMachine machine):
    """Clear the profile (pyx/profile.pxi). Returns the TSC cycles one stage boundary costs,
    back to back."""
    nm_prof_reset(_net(machine))
    return nm_prof_boundary_cost()


def _prof_start(CoreMachine machine):
    nm_prof_start(_net(machine))


def _prof_stop(CoreMachine machine):
    nm_prof_stop(_net(machine))


def _prof_read(CoreMachine machine):
    """The profile's counters: ``cycles`` and ``marks`` (intervals) by stage (NM_PROF_*
    order), ``frames`` of (unsampled, sampled) polls, the latency histogram (``np.uint64``,
    NM_LAT_BUCKETS) and its maximum."""
    cdef nm_prof *pr = &_net(machine).prof
    hist = _np.empty(NM_LAT_BUCKETS, _np.uint64)
    memcpy(cnp.PyArray_DATA(hist), pr.lat_hist, NM_LAT_BUCKETS * sizeof(uint64_t))
    return {"cycles": [pr.cyc[i] for i in range(NM_PROF_NR)],
            "marks": [pr.marks[i] for i in range(NM_PROF_NR)],
            "frames": (pr.frames[0], pr.frames[1]), "latency-hist": hist,
            "latency-max": pr.lat_max}


def _drop_reasons(CoreMachine machine):
    cdef nm_net *n = _net(machine)
    return {DROP_REASONS[i]: n.drop_reasons[i] for i in range(NM_DROP_REASONS)
            if n.drop_reasons[i]}


def _net_config(CoreMachine machine, open_on_data=None, rcvbuf=None, defer_max=None,
                invalid_ratelimit=None, challenge_ack_limit=None, seed=None, rmem=None,
                moderate_rcvbuf=None, rcvbuf_low_rtt=None):
    cdef nm_net *n = _net(machine)
    if rmem is not None:
        n.tcp_rmem[0], n.tcp_rmem[1], n.tcp_rmem[2] = rmem
    if moderate_rcvbuf is not None:
        n.moderate_rcvbuf = bool(moderate_rcvbuf)
    if rcvbuf_low_rtt is not None:
        n.rcvbuf_low_rtt = rcvbuf_low_rtt
    if invalid_ratelimit is not None:
        n.invalid_ratelimit = invalid_ratelimit
    if challenge_ack_limit is not None:
        n.challenge_ack_limit = challenge_ack_limit
    if seed is not None:
        n.challenge_rng = seed or 1     # xorshift32 never leaves 0
    if open_on_data is not None:
        n.open_on_data = bool(open_on_data)
    if rcvbuf is not None:
        n.rcvbuf = rcvbuf
        n.rcvbuf_lock = 1               # as setsockopt(SO_RCVBUF): SOCK_RCVBUF_LOCK
    if defer_max is not None:
        n.defer_max = defer_max
    return {"open_on_data": bool(n.open_on_data), "rcvbuf": n.rcvbuf,
            "rcvbuf_lock": bool(n.rcvbuf_lock),
            "rmem": (n.tcp_rmem[0], n.tcp_rmem[1], n.tcp_rmem[2]),
            "moderate_rcvbuf": bool(n.moderate_rcvbuf), "rcvbuf_low_rtt": n.rcvbuf_low_rtt,
            "defer_max": n.defer_max, "defer_kicks": n.defer_kicks,
            "invalid_ratelimit": n.invalid_ratelimit,
            "challenge_ack_limit": n.challenge_ack_limit,
            "skbs_live": n.skbs_live,
            "skbs_deferred": sum(n.defer_count[i] for i in range(machine.m.nr_cpus))}


def _sockets(CoreMachine machine, bint readable=False):
    """Every socket in use: (index, family, laddr, raddr, lport, rport); with ``readable``,
    only those holding something recv() has not returned: queued skbs (data or a FIN) or an
    error."""
    cdef nm_net *n = _net(machine)
    cdef uint32_t i
    cdef nm_sock *sk
    out = []
    for i in range(n.nr_socks):
        sk = &n.socks[i]
        if sk.used and (not readable or sk.rq_head != NM_NIL or sk.err):
            alen = 4 if sk.family == 4 else 16
            out.append((i, sk.family, bytes(sk.laddr[:alen]), bytes(sk.raddr[:alen]),
                        sk.lport, sk.rport))
    return out


def _sk_lookup(CoreMachine machine, uint8_t family, bytes laddr, bytes raddr, uint16_t lport,
               uint16_t rport):
    """The slot of the open socket with this 4-tuple, or -1: ``__inet_lookup_established()``
    for a hashed socket, else a walk for one that ``tcp_done()`` unhashed but that is still
    open (readable until closed)."""
    cdef nm_net *n = _net(machine)
    cdef int alen = 4 if family == 4 else 16
    cdef uint32_t i
    if len(laddr) != alen or len(raddr) != alen:
        raise NetmemError(EINVAL, f"_sk_lookup: IPv{family} addresses are {alen} bytes")
    i = __inet_lookup(n, family, laddr, raddr, lport, rport)
    if i != NM_NIL:
        return i
    for i in range(n.nr_socks):
        if n.socks[i].used and __sk_match(&n.socks[i], family, laddr, raddr, lport, rport):
            return i
    return -1


def _sk_hash_check(CoreMachine machine):
    """What is wrong with the established hash, as a list of messages (empty when sound):
    every chain holds only open, hashed sockets of its own bucket, without a cycle, and every
    hashed socket is on exactly one chain."""
    cdef nm_net *n = _net(machine)
    cdef uint32_t b, i, steps
    cdef nm_sock *sk
    out = []
    if n.sk_hash == NULL:
        return out
    seen = bytearray(n.nr_socks)
    for b in range(n.sk_hash_mask + 1):
        i, steps = n.sk_hash[b], 0
        while i != NM_NIL and steps <= n.nr_socks:
            sk = &n.socks[i]
            if (i >= n.nr_socks or not sk.used or
                    __sk_hashfn(sk.family, sk.laddr, sk.raddr, sk.lport, sk.rport)
                    & n.sk_hash_mask != b):
                out.append(f"bucket {b}: slot {i} does not belong on its chain")
                break
            seen[i] += 1
            i, steps = sk.hnext, steps + 1
        if i != NM_NIL and steps > n.nr_socks:
            out.append(f"bucket {b}: the chain has a cycle")
    for i in range(n.nr_socks):
        if n.socks[i].used and n.socks[i].hnext != NM_NIL - 1 and seen[i] != 1:
            out.append(f"slot {i} is on {seen[i]} chains, not 1")
    return out


cdef nm_sock *_sock(CoreMachine machine, uint32_t ski) except NULL:
    cdef nm_net *n = _net(machine)
    if ski >= n.nr_socks or not n.socks[ski].used:
        raise NetmemError(EBADF, f"socket {ski} is closed")
    return &n.socks[ski]


def _sk_info(CoreMachine machine, uint32_t ski):
    cdef nm_sock *sk = _sock(machine, ski)
    cdef uint32_t si
    cdef uint64_t queued = 0, truesize = 0
    cdef uint32_t ack[8]
    cdef int nr_ack = tcp_ack_sack_blocks(sk, ack)
    si = sk.rq_head
    while si != NM_NIL:
        queued += 1
        truesize += SKB(machine.m.net, si).truesize
        si = SKB(machine.m.net, si).next
    si = sk.ofo_head
    while si != NM_NIL:
        truesize += SKB(machine.m.net, si).truesize
        si = SKB(machine.m.net, si).next
    return {"state": TCP_STATES[sk.state], "rcv_nxt": sk.rcv_nxt, "copied_seq": sk.copied_seq,
            "rmem_alloc": sk.rmem_alloc, "rcvbuf": sk.rcvbuf, "queued_truesize": truesize,
            "rcv_wnd": sk.rcv_wnd, "rcv_wup": sk.rcv_wup, "rcv_ssthresh": sk.rcv_ssthresh,
            "window_clamp": sk.window_clamp, "rcv_rtt_us": sk.rcv_rtt_us >> 3,
            "rcvq_space": sk.rcvq_space,
            "bytes_received": sk.bytes_received, "segs_in": sk.segs_in,
            "data_segs_in": sk.data_segs_in, "rcv_queue_skbs": queued, "ofo_skbs": sk.ofo_len,
            "sack_ok": bool(sk.sack_ok), "err": sk.err, "hashed": sk.hnext != NM_NIL - 1,
            "devmem_tokens": sk.uf_count,
            "sack_blocks": [(sk.selective_acks[2 * i], sk.selective_acks[2 * i + 1])
                            for i in range(sk.num_sacks)],
            "dsack_block": ((sk.duplicate_sack[0], sk.duplicate_sack[1]) if sk.dsack
                            else None),
            "ack_sack_blocks": [(ack[2 * i], ack[2 * i + 1]) for i in range(nr_ack)]}


def _sk_netmems(CoreMachine machine, uint32_t ski):
    """For tests: the netmems the socket's queues hold (each skb's frags and page-frag head),
    the receive queue first."""
    cdef nm_net *n = _net(machine)
    cdef nm_sock *sk = _sock(machine, ski)
    cdef nm_shinfo *sh
    cdef uint32_t si
    out = []
    for si in (sk.rq_head, sk.ofo_head):
        while si != NM_NIL:
            sh = skb_shinfo(n, SKB(n, si))
            out += [sh.frags[i].netmem for i in range(sh.nr_frags)]
            if sh.head_frag:
                out.append(sh.head_netmem)
            si = SKB(n, si).next
    return out


def _sk_ofo_tree(CoreMachine machine, uint32_t ski):
    """The out-of-order rbtree for tests: ``(root, nodes, order)`` where ``nodes`` maps an skb
    index to ``(seq, end_seq, parent, left, right, color)`` (None for NULL links; color 0 red,
    1 black) and ``order`` lists the skb indices of the seq-ordered list."""
    cdef nm_net *n = _net(machine)
    cdef nm_sock *sk = _sock(machine, ski)
    cdef nm_rb_node *t = n.skb_rb
    cdef uint32_t si = sk.ofo_head

    def link(uint32_t i):
        return None if i == NM_NIL else i

    nodes, order = {}, []
    while si != NM_NIL:
        order.append(si)
        nodes[si] = (SKB(n, si).seq, SKB(n, si).end_seq, link(t[si].parent),
                     link(t[si].rb_left), link(t[si].rb_right), t[si].color)
        si = SKB(n, si).next
    return link(sk.ofo_root), nodes, order


cdef inline uint64_t _unread(nm_sock *sk, uint64_t bufsize) noexcept:
    """Room a read of ``bufsize`` can fill: no more than the socket has in order (so a large
    ``bufsize`` costs no large allocation)."""
    return min(bufsize, <uint64_t><uint32_t>(sk.rcv_nxt - sk.copied_seq))


def _sk_recv(CoreMachine machine, uint32_t ski, uint64_t bufsize):
    """Models ``tcp_recvmsg()`` (non-blocking): bytes, b"" at the end of the stream; raises
    EAGAIN with nothing to read and the socket's error after the queued data."""
    cdef int64_t rc
    cdef bytearray out
    if bufsize == 0:
        _sock(machine, ski)
        return b""
    out = bytearray(_unread(_sock(machine, ski), bufsize))
    rc = tcp_recvmsg_copy(machine.m.net, ski, <uint8_t *><char *>out, bufsize)
    if machine.m.nr_warn:
        machine._flush_warnings()
    if rc < 0:
        raise NetmemError(-rc, f"recvmsg: {_errname(-rc)}")
    del out[rc:]
    return bytes(out)


def _sk_recv_into(CoreMachine machine, uint32_t ski, uint8_t[::1] buf):
    """``_sk_recv`` into the caller's buffer (all of it): the bytes copied, 0 at the end of the
    stream; raises as ``_sk_recv``. No allocation, so an application reading many sockets pays
    one copy per byte."""
    cdef int64_t rc
    _sock(machine, ski)
    if buf.shape[0] == 0:
        return 0
    rc = tcp_recvmsg_copy(machine.m.net, ski, &buf[0], <uint64_t>buf.shape[0])
    if machine.m.nr_warn:
        machine._flush_warnings()
    if rc < 0:
        raise NetmemError(-rc, f"recvmsg: {_errname(-rc)}")
    return rc


#: struct dmabuf_cmsg with its cmsg type in front, as ``recvmsg_devmem`` returns them.
DMABUF_CMSG_DTYPE = _np.dtype([("cmsg_type", "<u4"), ("frag_size", "<u4"),
                              ("frag_offset", "<u8"), ("frag_token", "<u4"),
                              ("dmabuf_id", "<u4")])


cdef int _cm_reserve(nm_net *n, uint64_t want) except -1:
    cdef void *p
    if want <= n.cm_cap:
        return 0
    p = realloc(n.cm_scratch, want * sizeof(nm_dmabuf_cmsg))
    if p == NULL:
        raise MemoryError()
    n.cm_scratch = <nm_dmabuf_cmsg *>p
    n.cm_cap = <uint32_t>want
    return 0


def _sk_recvmsg_devmem(CoreMachine machine, uint32_t ski, uint64_t bufsize,
                       uint64_t ancbufsize):
    """Models ``tcp_recvmsg()`` with MSG_SOCK_DEVMEM (non-blocking): (copied bytes, the cmsgs
    as a DMABUF_CMSG_DTYPE array); (b"", empty) at the end of the stream; raises the errno."""
    cdef nm_net *n = machine.m.net
    cdef nm_devmem_rx rx
    cdef bytearray out
    cdef int64_t rc
    cdef cnp.ndarray cms
    cdef nm_sock *sk = _sock(machine, ski)
    # Each cmsg describes at least one byte (or the one of a 0-byte read): no more than
    # bufsize of them can be needed.
    rx.cm_max = <uint32_t>min(ancbufsize // DMABUF_CMSG_SPACE, max(bufsize, 1), 1 << 24)
    _cm_reserve(n, rx.cm_max)
    out = bytearray(_unread(sk, bufsize))     # what can be copied: readable or linear bytes
    rx.buf = <uint8_t *><char *>out
    rx.buf_used = 0
    rx.cm = n.cm_scratch
    rx.ncm = 0
    rc = tcp_recvmsg_devmem(n, ski, &rx, bufsize)
    if machine.m.nr_warn:
        machine._flush_warnings()
    if rc < 0:
        raise NetmemError(-rc, f"recvmsg(MSG_SOCK_DEVMEM): {_errname(-rc)}")
    del out[rx.buf_used:]
    cms = _np.empty(rx.ncm, DMABUF_CMSG_DTYPE)
    if rx.ncm:
        memcpy(cms.data, rx.cm, rx.ncm * sizeof(nm_dmabuf_cmsg))
    return bytes(out), cms, rc


def _sk_dontneed(CoreMachine machine, uint32_t ski, object tokens):
    """Models ``sock_devmem_dontneed()``: ``tokens`` is a (n, 2) uint32 array of (token_start,
    token_count); the frags freed."""
    cdef cnp.ndarray[cnp.uint32_t, ndim=2] t = _np.ascontiguousarray(tokens, _np.uint32)
    cdef int64_t rc
    cdef nm_sock *sk = _sock(machine, ski)
    if t.shape[1] != 2:
        raise NetmemError(EINVAL, "SO_DEVMEM_DONTNEED: optlen % sizeof(struct dmabuf_token)")
    if t.shape[0] > MAX_DONTNEED_TOKENS:
        raise NetmemError(EINVAL, f"SO_DEVMEM_DONTNEED: {t.shape[0]} tokens, more than "
                                  f"MAX_DONTNEED_TOKENS ({MAX_DONTNEED_TOKENS})")
    rc = sock_devmem_dontneed(machine.m.net, sk, <uint32_t *>t.data, <uint32_t>t.shape[0])
    if machine.m.nr_warn:
        machine._flush_warnings()
    return rc


def _sk_close(CoreMachine machine, uint32_t ski):
    _sock(machine, ski)
    tcp_close_rx(machine.m.net, ski)
    if machine.m.nr_warn:
        machine._flush_warnings()


def _defer_flush_all(CoreMachine machine):
    """Run every CPU's deferred skb frees (their softirqs ran): used when the machine goes
    quiet."""
    cdef int cpu
    for cpu in range(machine.m.nr_cpus):
        if machine.m.net.defer_head[cpu] != NM_NIL:
            __free_softirq_flush(machine.m.net, cpu)


cdef str _errname(int e):
    import errno as _errno
    return _errno.errorcode.get(e, str(e))


# ---- skbs for tests and debugging (netmem.skb) --------------------------------------------------

cdef nm_skb *_skb(CoreMachine machine, uint32_t si) except NULL:
    if si >= machine.m.net.skb_next:
        raise NetmemError(EINVAL, f"no skb {si}")
    return SKB(machine.m.net, si)


def _skb_alloc(CoreMachine machine, int cpu):
    cdef uint32_t si = napi_alloc_skb(machine.m.net, cpu)
    if si == NM_NIL:
        raise NetmemError(ENOMEM, "napi_alloc_skb: the skb table is full")
    return si


def _skb_build(CoreMachine machine, object ref, uint32_t offset, uint32_t frag_size, int cpu):
    cdef netmem_ref netmem = _ref(ref)
    cdef uint32_t si
    machine._check_page(netmem, "napi_build_skb")
    if frag_size <= SKB_DATA_ALIGN_SHINFO or frag_size > NM_HDR_BUF_SIZE \
            or offset + frag_size > PAGE_SIZE:
        raise NetmemError(EINVAL, f"napi_build_skb: frag_size {frag_size} must be in "
                                  f"({SKB_DATA_ALIGN_SHINFO}, {NM_HDR_BUF_SIZE}] within the page")
    si = napi_build_skb(machine.m.net, netmem, offset, frag_size, cpu)
    if si == NM_NIL:
        raise NetmemError(ENOMEM, "napi_build_skb: the skb table is full")
    return si


def _skb_info(CoreMachine machine, uint32_t si):
    cdef nm_skb *skb = _skb(machine, si)
    cdef nm_shinfo *sh = skb_shinfo(machine.m.net, skb)
    return {"len": skb.len, "data_len": skb.data_len, "headlen": skb_headlen(skb),
            "truesize": skb.truesize, "pp_recycle": bool(skb.pp_recycle),
            "unreadable": bool(skb.unreadable), "cloned": bool(skb.cloned),
            "head_frag": bool(sh.head_frag), "dataref": sh.dataref,
            "frags": [(sh.frags[i].netmem, sh.frags[i].offset, sh.frags[i].len)
                      for i in range(sh.nr_frags)],
            "seq": skb.seq, "end_seq": skb.end_seq, "tcp_flags": skb.tcp_flags,
            "gso_segs": skb.gso_segs, "hash": skb.hash, "napi_id": skb.napi_id,
            "alloc_cpu": skb.alloc_cpu}


def _skb_add_rx_frag(CoreMachine machine, uint32_t si, object ref, uint32_t offset,
                     uint32_t size, uint32_t truesize):
    cdef nm_skb *skb = _skb(machine, si)
    cdef netmem_ref netmem = _ref(ref)
    cdef uint8_t nr = skb_shinfo(machine.m.net, skb).nr_frags
    if not netmem_valid(machine.m, netmem):
        raise NetmemError(EINVAL, f"skb_add_rx_frag_netmem: {netmem:#x} is not a netmem")
    if nr >= MAX_SKB_FRAGS:
        raise NetmemError(EINVAL, f"skb_add_rx_frag_netmem: the skb has MAX_SKB_FRAGS "
                                  f"({MAX_SKB_FRAGS}) frags")
    if <uint64_t>offset + size > __netmem_buf_size(machine.m, netmem):
        raise NetmemError(EINVAL, "skb_add_rx_frag_netmem: the frag runs past its buffer")
    skb_add_rx_frag_netmem(machine.m.net, skb, nr, netmem, offset, size, truesize)


def _skb_put(CoreMachine machine, uint32_t si, bytes data):
    """``skb_put_data()`` into the head."""
    cdef nm_skb *skb = _skb(machine, si)
    cdef nm_shinfo *sh = skb_shinfo(machine.m.net, skb)
    cdef uint32_t tail = skb.data + skb_headlen(skb)
    if skb.data_len or tail + len(data) > skb_end_offset(sh):
        raise NetmemError(EINVAL, "skb_put: no tailroom (skb_over_panic)")
    memcpy(skb_head(machine.m, sh) + tail, <const char *>data, len(data))
    skb.len += len(data)


def _skb_mark_for_recycle(CoreMachine machine, uint32_t si):
    _skb(machine, si).pp_recycle = 1


def _skb_clone(CoreMachine machine, uint32_t si):
    _skb(machine, si)
    cdef uint32_t c = skb_clone(machine.m.net, si)
    if c == NM_NIL:
        raise NetmemError(ENOMEM, "skb_clone: the skb table is full")
    return c


def _skb_pp_frag_ref(CoreMachine machine, uint32_t si):
    cdef int rc = skb_pp_frag_ref(machine.m.net, _skb(machine, si))
    if rc:
        raise NetmemError(-rc, "skb_pp_frag_ref: the skb is not pp_recycle")


def _skb_try_coalesce(CoreMachine machine, uint32_t to, uint32_t frm):
    cdef bint stolen = False
    cdef int delta = 0
    cdef bint ok = skb_try_coalesce(machine.m.net, _skb(machine, to), _skb(machine, frm),
                                    &stolen, &delta)
    return ok, stolen, delta


def _skb_copy_bits(CoreMachine machine, uint32_t si, uint32_t offset, uint32_t n):
    cdef bytearray out = bytearray(n)
    cdef int rc = skb_copy_bits(machine.m.net, _skb(machine, si), offset,
                                <uint8_t *><char *>out, n)
    if rc:
        raise NetmemError(-rc, "skb_copy_bits: range past the data or unreadable frags")
    return bytes(out)


def _skb_free(CoreMachine machine, uint32_t si, bint partial, bint stolen):
    _skb(machine, si)
    if partial:
        kfree_skb_partial(machine.m.net, si, stolen)
    else:
        __kfree_skb(machine.m.net, si)
    if machine.m.nr_warn:
        machine._flush_warnings()
