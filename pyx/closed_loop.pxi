# The closed loop: senders in C (pyx/tcp_output.pxi...) over a two-way link (link.pxi) into the
# NIC, the receive path and the application, on the machine's virtual clock (issue 18).
#
# Not a kernel object: a discrete-event simulation of two hosts and the wire between them. What
# happens in it is the kernel's (the senders' TCP, the receiver's NIC, NAPI, page_pool, GRO,
# TCP, devmem and the application's recvmsg and SO_DEVMEM_DONTNEED); what is the simulation's:
# - Frames on the forward link are real Ethernet/IPv4/TCP frames with checksums (the SYN with
#   MSS, SACK-permitted, timestamps and window scale; data with timestamps), built into a ring
#   of slots when the sender emits them and dropped there if the link drops them; their payload
#   is ncdevmem's pattern at the stream offset, which the application checks.
# - The NIC interrupts at the first frame's arrival plus ``rx_usecs`` (or when ``rx_frames``
#   frames are waiting, ethtool -C's rx-usecs / rx-frames), and one nm_netdev_receive() takes
#   every frame that has arrived by then at that time (the stack's clock is the poll's); then
#   the application, on its CPU in process context, reads every ready socket.
# - The receiver's ACKs (n.acks: delayed, SACK, window) cross the reverse link as records, not
#   frames (nothing on the sender's side parses them): 54 + 12 (timestamps) + 4 + 8 per SACK
#   block bytes each on the wire, leaving when the poll or the delayed-ACK timer sent them.
# - The model's receiver sends no SYN-ACK (a socket opens on the SYN): when the SYN reaches a
#   socket, a SYN-ACK of 74 bytes crosses the reverse link carrying that socket's MSS, window
#   scale and window (tcp_select_initial_window()'s), and the sender finishes its connect on it.
# - Events: the two links' deliveries (FIFOs, so in time order), the senders' retransmit
#   timers and SYN-ACKs (the event heap), the delayed-ACK timers (n.delack_next) and the
#   application's held tokens, earliest first; ties in that order.
# - The plot's samples (summed cwnd and packets in flight, page_pool_inflight() of the payload
#   pools) are taken after a NIC interrupt once per sampling interval.

cdef extern from *:
    """#define CL_NEVER UINT64_MAX"""
    const uint64_t CL_NEVER                 # no event of this kind

DEF NM_EV_SYNACK = 2               # a SYN-ACK reaches the sender (arg: conn)
DEF CL_SYNACK_LEN = 74             # 14 + 20 + 20 + 20 bytes of SYN options
DEF CL_ACK_LEN = 66                # 14 + 20 + 20 + 12 (timestamps)
DEF CL_SERVER_PORT = 5201          # ncdevmem's port, as netmem.flows
DEF CL_EPHEMERAL = 28232           # client ports per client address, as netmem.flows
DEF CL_WSCALE = 7                  # the senders' own window scale (they receive no data)
DEF CL_SAMPLES = 4096              # the plot's samples (halved, interval doubled, when full)


cdef struct nm_ack_wire:           # an ACK on the reverse link
    uint64_t t_ns                   # its delivery
    uint32_t conn
    uint32_t seq
    uint32_t ack
    uint32_t win
    uint32_t tsval
    uint32_t nsack
    uint32_t sack[8]


cdef struct nm_cl_sample:          # one point of the plot
    uint64_t t_ns
    uint32_t cwnd                   # summed over the connections
    uint32_t in_flight              # tcp_packets_in_flight(), summed
    int64_t pool_inflight           # buffers out of the payload pools (page_pool_inflight())


cdef dict _link_stats(nm_link *l):
    return {"enqueued": l.enqueued, "dropped_queue": l.dropped_queue,
            "dropped_loss": l.dropped_loss, "delivered": l.delivered, "bytes": l.bytes}


cdef class CoreClosedLoop:
    """N senders of ``payload`` bytes each into ``nic`` through a two-way link, the application
    ``rx`` reading; ``run(until_ns)`` advances the virtual clock until every transfer is done
    or ``until_ns``. See the file's header for what is modelled and what is the simulation."""

    cdef CoreMachine machine
    cdef CoreNetDevice nic
    cdef CoreReceiver rx
    cdef nm_tcp_sender *snd
    cdef uint32_t nconn, done
    cdef nm_link fwd, rev
    cdef nm_event_heap heap
    cdef nm_snd_ctx ctx
    cdef nm_tcp_snd_mib mib
    cdef uint8_t *arena             # forward frames in flight: a ring of slots
    cdef uint64_t *f_due
    cdef uint32_t *f_len
    cdef uint32_t *f_conn
    cdef uint8_t *f_syn
    cdef uint64_t f_head, f_tail
    cdef uint32_t f_cap, slot_size
    cdef uint64_t *offs             # one receive call's frames
    cdef uint32_t *lens
    cdef nm_ack_wire *acks          # the reverse link's ACKs in flight (a FIFO)
    cdef uint64_t a_head, a_tail, a_cap
    cdef uint32_t *slot_conn
    cdef uint32_t slot_cap
    cdef const uint8_t *pattern
    cdef object _pattern
    cdef uint64_t period, payload
    cdef uint64_t rx_usecs_ns
    cdef uint32_t rx_frames
    cdef int app_cpu
    cdef nm_cl_sample smp[CL_SAMPLES]
    cdef uint64_t nsamples, sample_ns, next_sample
    cdef public uint64_t frames_sent, frames_received, acks_sent, acks_received
    cdef public uint64_t end_ns

    def __cinit__(self, CoreMachine machine, CoreNetDevice nic, CoreReceiver rx, uint32_t nconn,
                  uint64_t payload, bytes cc, uint64_t rate_bps, uint64_t delay_ns,
                  uint64_t queue_bytes, double loss, uint32_t seed, object pattern,
                  uint64_t period, uint64_t rx_usecs_ns, uint32_t rx_frames, int app_cpu,
                  uint64_t sample_ns):
        cdef const nm_tcp_congestion_ops *ops = tcp_ca_find(cc)
        cdef uint32_t thresh = <uint32_t>min(loss * 4294967296.0, 4294967295.0), c
        if ops == NULL:
            raise NetmemError(EINVAL, f"closed loop: unknown congestion control {cc!r}")
        if nconn == 0 or rate_bps == 0 or rx_frames == 0 or period == 0:
            raise NetmemError(EINVAL, "closed loop: connections, rate, rx_frames and the "
                                      "pattern's period must be positive")
        self.machine, self.nic, self.rx = machine, nic, rx
        self._pattern = _np.ascontiguousarray(pattern, _np.uint8)
        if <uint64_t>len(self._pattern) < period + 65536:
            raise NetmemError(EINVAL, "closed loop: the pattern is shorter than period + 64 KiB")
        self.pattern = <const uint8_t *>cnp.PyArray_DATA(self._pattern)
        self.period, self.payload = period, payload
        self.nconn = nconn
        self.rx_usecs_ns, self.rx_frames, self.app_cpu = rx_usecs_ns, rx_frames, app_cpu
        self.sample_ns = sample_ns
        self.slot_size = (nic.nd.mtu + 14 + 63) & ~63u
        self.snd = <nm_tcp_sender *>calloc(nconn, sizeof(nm_tcp_sender))
        self.offs = <uint64_t *>malloc(rx_frames * sizeof(uint64_t))
        self.lens = <uint32_t *>malloc(rx_frames * sizeof(uint32_t))
        if self.snd == NULL or self.offs == NULL or self.lens == NULL:
            raise MemoryError()
        if (nm_link_init(&self.fwd, rate_bps, delay_ns, queue_bytes, thresh, seed)
                or nm_link_init(&self.rev, rate_bps, delay_ns, queue_bytes, thresh,
                                seed ^ 0x5bd1e995)):
            raise MemoryError()
        self._grow_frames()
        _nd_reserve(nic.nd, rx_frames)
        rng = _np.random.default_rng(seed)
        isns = rng.integers(0, 1 << 32, size=nconn, dtype=_np.uint64)
        for c in range(nconn):
            tcp_sender_init(&self.snd[c], ops, <uint32_t>isns[c], payload,
                            <uint16_t>(32768 + c % CL_EPHEMERAL), True)
        self.ctx.mib = &self.mib
        self.ctx.timers = &self.heap

    def __dealloc__(self):
        cdef uint32_t c
        if self.snd != NULL:
            for c in range(self.nconn):
                free(self.snd[c].q)
        free(self.snd)
        free(self.offs)
        free(self.lens)
        free(self.arena)
        free(self.f_due)
        free(self.f_len)
        free(self.f_conn)
        free(self.f_syn)
        free(self.acks)
        free(self.slot_conn)
        free(self.ctx.out)
        free(self.heap.ev)
        nm_link_destroy(&self.fwd)
        nm_link_destroy(&self.rev)

    cdef int _grow_frames(self) noexcept nogil:
        """Double the forward ring (its frames unwrapped to the front): 0 or -ENOMEM."""
        cdef uint32_t cap = self.f_cap * 2 if self.f_cap else 1024, i, j
        cdef uint64_t n = self.f_tail - self.f_head
        cdef uint8_t *arena = <uint8_t *>malloc(<uint64_t>cap * self.slot_size)
        cdef uint64_t *due = <uint64_t *>malloc(cap * sizeof(uint64_t))
        cdef uint32_t *ln = <uint32_t *>malloc(cap * sizeof(uint32_t))
        cdef uint32_t *cn = <uint32_t *>malloc(cap * sizeof(uint32_t))
        cdef uint8_t *syn = <uint8_t *>malloc(cap)
        if arena == NULL or due == NULL or ln == NULL or cn == NULL or syn == NULL:
            free(arena)
            free(due)
            free(ln)
            free(cn)
            free(syn)
            return -ENOMEM
        for i in range(n):
            j = (self.f_head + i) & (self.f_cap - 1)
            memcpy(arena + <uint64_t>i * self.slot_size, self.arena + <uint64_t>j * self.slot_size,
                   self.f_len[j])
            due[i], ln[i] = self.f_due[j], self.f_len[j]
            cn[i], syn[i] = self.f_conn[j], self.f_syn[j]
        free(self.arena)
        free(self.f_due)
        free(self.f_len)
        free(self.f_conn)
        free(self.f_syn)
        self.arena, self.f_due, self.f_len, self.f_conn, self.f_syn = arena, due, ln, cn, syn
        self.f_cap, self.f_head, self.f_tail = cap, 0, n
        return 0

    # ---- the sender's side of the wire ------------------------------------------------------

    cdef void _build(self, uint8_t *f, nm_snd_xmit *x, uint32_t len,
                     uint32_t optlen) noexcept nogil:
        """The frame of one transmission: Ethernet, IPv4 (DF, TTL 64), TCP with its options and
        the pattern's bytes at the stream offset; IPv4 and TCP checksums (``__csum_add()``)."""
        cdef nm_tcp_sender *s = &self.snd[x.conn]
        cdef uint8_t *ip = f + 14
        cdef uint8_t *th = f + 34
        cdef uint8_t *o = th + 20
        cdef uint32_t host = 2 + x.conn // CL_EPHEMERAL
        cdef uint32_t tsval = <uint32_t>(self.ctx.now_ns // 1000000)
        cdef uint64_t off, sum
        memcpy(f, b"\x02\x00\x00\x00\x00\x01\x02\x00\x00\x00\x00\x02\x08\x00", 14)
        memcpy(ip, b"\x45\x00\x00\x00\x00\x00\x40\x00\x40\x06\x00\x00", 12)
        memcpy(ip + 12, b"\xc0\x00\x02\x00\xc0\x00\x02\x01", 8)   # 192.0.2.host > .1
        __put16(ip + 2, len - 14)
        __put16(ip + 4, s.ip_id)
        s.ip_id += 1
        ip[15] = <uint8_t>host
        __put16(ip + 10, __csum_fold(__csum_add(0, ip, 20)))
        __put16(th, s.sport)
        __put16(th + 2, CL_SERVER_PORT)
        __put32(th + 4, x.seq)
        __put32(th + 8, 1 if x.flags & TCPHDR_ACK else 0)    # the receiver's ISS is 0
        th[12] = <uint8_t>(((20 + optlen) // 4) << 4)
        th[13] = x.flags
        __put16(th + 14, 65535 if x.flags & TCPHDR_SYN else 65535 >> CL_WSCALE)
        th[16] = th[17] = th[18] = th[19] = 0
        if x.flags & TCPHDR_SYN:        # tcp_options_write(): MSS, SACK_PERM, TS, NOP, WS
            memcpy(o, b"\x02\x04\x00\x00\x04\x02\x08\x0a", 8)
            __put16(o + 2, self.nic.nd.mtu - 40)
            __put32(o + 8, tsval)
            __put32(o + 12, 0)
            memcpy(o + 16, b"\x01\x03\x03\x07", 4)
        else:                           # NOP, NOP, TS
            memcpy(o, b"\x01\x01\x08\x0a", 4)
            __put32(o + 4, tsval)
            __put32(o + 8, s.ts_recent)
        if x.len:
            off = <uint32_t>(x.seq - s.iss - 1)
            memcpy(o + optlen, self.pattern + off % self.period, x.len)
        sum = __csum_add(0, ip + 12, 8) + 6 + (len - 34)          # pseudo header
        __put16(th + 16, __csum_fold(__csum_add(sum, th, len - 34)))

    cdef void _flush_out(self) noexcept nogil:
        """Every transmission the senders made at this time onto the forward link: built into
        the ring when the link takes it."""
        cdef uint64_t i, due
        cdef nm_snd_xmit *x
        cdef uint32_t optlen, len, slot
        for i in range(self.ctx.nout):
            x = &self.ctx.out[i]
            optlen = 20 if x.flags & TCPHDR_SYN else 12
            len = 54 + optlen + x.len
            self.frames_sent += 1
            due = nm_link_enqueue(&self.fwd, len, self.ctx.now_ns)
            if due == NM_LINK_DROP:
                continue
            if self.f_tail - self.f_head == self.f_cap and self._grow_frames() < 0:
                self.ctx.err = -ENOMEM
                continue
            slot = <uint32_t>(self.f_tail & (self.f_cap - 1))
            self._build(self.arena + <uint64_t>slot * self.slot_size, x, len, optlen)
            self.f_due[slot], self.f_len[slot], self.f_conn[slot] = due, len, x.conn
            self.f_syn[slot] = (x.flags & TCPHDR_SYN) != 0
            self.f_tail += 1
        self.ctx.nout = 0

    # ---- the receiver's side -------------------------------------------------------------------

    cdef void _collect_acks(self) noexcept nogil:
        """The ACKs the receiver sent since the last look onto the reverse link."""
        cdef nm_net *n = self.machine.m.net
        cdef nm_ack_rec *r
        cdef nm_ack_wire *w
        cdef uint64_t due, now = self.machine.m.clock_ns
        cdef uint32_t conn
        while n.ack_tail != n.ack_head:
            r = &n.acks[n.ack_tail & (n.ack_cap - 1)]
            n.ack_tail += 1
            self.acks_sent += 1
            if r.slot >= self.slot_cap or self.slot_conn[r.slot] == NM_NIL:
                continue
            conn = self.slot_conn[r.slot]
            due = nm_link_enqueue(&self.rev, CL_ACK_LEN + (4 + 8 * r.nr_sack if r.nr_sack else 0),
                                  now)
            if due == NM_LINK_DROP:
                continue
            if __grow(<void **>&self.acks, &self.a_cap, self.a_tail - self.a_head + 1,
                      sizeof(nm_ack_wire)) < 0:
                self.ctx.err = -ENOMEM
                continue
            if self.a_tail == self.a_cap:
                memmove(self.acks, self.acks + self.a_head,
                        (self.a_tail - self.a_head) * sizeof(nm_ack_wire))
                self.a_tail -= self.a_head
                self.a_head = 0
            w = &self.acks[self.a_tail]
            self.a_tail += 1
            w.t_ns, w.conn, w.seq, w.ack, w.win = due, conn, r.seq, r.ack, r.win
            w.tsval, w.nsack = r.tsval, r.nr_sack
            memcpy(w.sack, r.sack, sizeof(w.sack))

    cdef void _synack(self, uint32_t conn) noexcept nogil:
        """A SYN reached the NIC: if it opened (or found) the connection's socket, its SYN-ACK
        goes back over the reverse link."""
        cdef uint64_t due
        if self.snd[conn].state != NM_SND_SYN_SENT or self._lookup(conn) == NM_NIL:
            return
        due = nm_link_enqueue(&self.rev, CL_SYNACK_LEN, self.machine.m.clock_ns)
        if due != NM_LINK_DROP and nm_event_push(&self.heap, due, NM_EV_SYNACK, conn) < 0:
            self.ctx.err = -ENOMEM

    cdef uint32_t _lookup(self, uint32_t conn) noexcept nogil:
        cdef uint8_t laddr[16]
        cdef uint8_t raddr[16]
        memset(laddr, 0, 16)
        memset(raddr, 0, 16)
        memcpy(laddr, b"\xc0\x00\x02\x01", 4)
        memcpy(raddr, b"\xc0\x00\x02\x00", 4)
        raddr[3] = <uint8_t>(2 + conn // CL_EPHEMERAL)
        return __inet_lookup(self.machine.m.net, 4, laddr, raddr, CL_SERVER_PORT,
                             self.snd[conn].sport)

    cdef void _established(self, uint32_t conn) noexcept nogil:
        """The SYN-ACK arrives: the sender takes the receiving socket's MSS, window scale and
        window (``tcp_finish_connect()``)."""
        cdef nm_tcp_sender *s = &self.snd[conn]
        cdef uint32_t slot = self._lookup(conn), cap
        cdef nm_sock *sk
        cdef void *p
        if s.state != NM_SND_SYN_SENT or slot == NM_NIL:
            return
        if slot >= self.slot_cap:
            cap = max(slot + 1, self.slot_cap * 2, 64)
            p = realloc(self.slot_conn, cap * sizeof(uint32_t))
            if p == NULL:
                self.ctx.err = -ENOMEM
                return
            self.slot_conn = <uint32_t *>p
            memset(self.slot_conn + self.slot_cap, 0xff, (cap - self.slot_cap) * sizeof(uint32_t))
            self.slot_cap = cap
        self.slot_conn[slot] = conn
        s.slot = slot
        sk = &self.machine.m.net.socks[slot]
        tcp_finish_connect(s, &self.ctx, conn, sk.advmss, sk.rcv_wscale, sk.rcv_wnd,
                           <uint32_t>(self.ctx.now_ns // 1000000))

    cdef void _irq(self) noexcept nogil:
        """The NIC's interrupt: every frame arrived by now through ``nm_netdev_receive()``, the
        SYNs among them answered, the application's reads, the ACKs onto the wire."""
        cdef nm_machine *m = self.machine.m
        cdef uint32_t k = 0, slot, i
        cdef int cpu = m.cpu, softirq = m.in_softirq
        while (self.f_head + k < self.f_tail and k < self.rx_frames
               and self.f_due[(self.f_head + k) & (self.f_cap - 1)] <= m.clock_ns):
            slot = <uint32_t>((self.f_head + k) & (self.f_cap - 1))
            self.offs[k] = <uint64_t>slot * self.slot_size
            self.lens[k] = self.f_len[slot]
            k += 1
        nm_netdev_receive(m.net, self.nic.nd, self.arena, self.offs, self.lens, 0, k)
        self.frames_received += k
        for i in range(k):
            slot = <uint32_t>((self.f_head + i) & (self.f_cap - 1))
            if self.f_syn[slot]:
                self._synack(self.f_conn[slot])
        self.f_head += k
        self._app()
        m.cpu = cpu
        m.in_softirq = softirq
        self._collect_acks()

    cdef void _app(self) noexcept nogil:
        """The application on its CPU in process context: every ready socket read."""
        cdef nm_machine *m = self.machine.m
        m.cpu = self.app_cpu
        m.in_softirq = 0
        if self.rx._st_reserve() < 0:
            self.ctx.err = -ENOMEM
            return
        self.rx._drain()

    cdef void _sample(self) noexcept nogil:
        """One point of the plot. When the array is full every other point goes and the
        interval doubles, so the points cover the whole run."""
        cdef nm_cl_sample *p
        cdef nm_netdev *nd = self.nic.nd
        cdef uint32_t c, q
        if self.nsamples == CL_SAMPLES:
            for c in range(CL_SAMPLES // 2):
                self.smp[c] = self.smp[2 * c]
            self.nsamples = CL_SAMPLES // 2
            self.sample_ns *= 2
        p = &self.smp[self.nsamples]
        p.t_ns = self.machine.m.clock_ns
        p.cwnd = p.in_flight = 0
        p.pool_inflight = 0
        for c in range(self.nconn):
            if self.snd[c].state == NM_SND_ESTABLISHED:
                p.cwnd += self.snd[c].tp.snd_cwnd
                p.in_flight += tcp_packets_in_flight(&self.snd[c])
        for q in range(nd.num_rxq):
            if nd.rxq[q].started and nd.rxq[q].pool != NULL:
                p.pool_inflight += page_pool_inflight(nd.rxq[q].pool, False)
        self.nsamples += 1
        self.next_sample = p.t_ns + self.sample_ns

    # ---- the event loop ------------------------------------------------------------------------

    cdef uint64_t _irq_time(self) noexcept nogil:
        cdef uint64_t t
        if self.f_head == self.f_tail:
            return CL_NEVER
        t = self.f_due[self.f_head & (self.f_cap - 1)] + self.rx_usecs_ns
        if self.f_tail - self.f_head >= self.rx_frames:
            t = min(t, self.f_due[(self.f_head + self.rx_frames - 1) & (self.f_cap - 1)])
        return t

    cdef int _run(self, uint64_t until) noexcept nogil:
        """Events in time order until every sender is done or the next one is past ``until``:
        0, 1 when done, or -ENOMEM."""
        cdef nm_machine *m = self.machine.m
        cdef nm_net *n = m.net
        cdef uint64_t t_irq, t_ack, t_ev, t_del, t_hold, t
        cdef nm_event ev
        cdef nm_ack_wire *w
        cdef nm_tcp_sender *s
        while self.done < self.nconn and not self.ctx.err:
            t_irq = self._irq_time()
            t_ack = self.acks[self.a_head].t_ns if self.a_head < self.a_tail else CL_NEVER
            t_ev = self.heap.ev[0].time if self.heap.n else CL_NEVER
            t_del = n.delack_next if n.delack_next else CL_NEVER
            t_hold = self.rx._held_next()
            if t_hold == 0:
                t_hold = CL_NEVER
            t = min(t_irq, t_ack, t_ev, t_del, t_hold)
            if t == CL_NEVER or t > until:
                return 0
            if t > m.clock_ns:
                m.clock_ns = t
            self.ctx.now_ns = m.clock_ns
            if t == t_irq:
                self._irq()
                if self.sample_ns and m.clock_ns >= self.next_sample:
                    self._sample()
            elif t == t_ack:
                w = &self.acks[self.a_head]
                self.a_head += 1
                self.acks_received += 1
                s = &self.snd[w.conn]
                tcp_ack(s, &self.ctx, w.conn, w.ack, w.seq, w.win, w.sack, w.nsack, w.tsval)
                if s.state == NM_SND_DONE:
                    self.done += 1
            elif t == t_ev:
                nm_event_pop(&self.heap, &ev)
                if ev.kind == NM_EV_SYNACK:
                    self._established(<uint32_t>ev.arg)
                else:
                    tcp_write_timer(&self.snd[ev.arg], &self.ctx, <uint32_t>ev.arg)
            elif t == t_del:
                tcp_delack_run(n)
                self._collect_acks()
            else:
                m.cpu = self.app_cpu
                m.in_softirq = 0
                self.rx._release_held(m.clock_ns)
            self._flush_out()
        self.end_ns = m.clock_ns
        return -ENOMEM if self.ctx.err else 1

    def start(self):
        """Every sender connects (its SYN) at the current time."""
        cdef uint32_t c
        self.ctx.now_ns = self.machine.m.clock_ns
        self.next_sample = self.ctx.now_ns
        for c in range(self.nconn):
            tcp_connect(&self.snd[c], &self.ctx, c)
        self._flush_out()

    def run(self, uint64_t until_ns):
        """Run to ``until_ns`` of virtual time or the end: True once every transfer is done.
        The held tokens of the application go back at the end."""
        cdef int rc
        with nogil:
            rc = self._run(until_ns)
            if rc == 1:
                self.rx._release_held(CL_NEVER)
        if self.machine.m.nr_warn:
            self.machine._flush_warnings()
        if rc < 0:
            raise MemoryError("closed loop: out of memory")
        return rc == 1

    @property
    def clock_ns(self):
        return self.machine.m.clock_ns

    @property
    def mib(self):
        """The senders' MIB (nstat names), summed over the connections."""
        return dict(self.mib)

    @property
    def links(self):
        """Each direction's counters (``CoreLink.stats``' names)."""
        return {"forward": _link_stats(&self.fwd), "reverse": _link_stats(&self.rev)}

    def senders(self):
        """Per connection: state, snd_una - iss, snd_cwnd, snd_ssthresh, srtt_us, icsk_rto,
        retransmits, the receiver's socket slot (columns)."""
        cdef uint32_t c
        cdef nm_tcp_sender *s
        cols = {k: _np.empty(self.nconn, _np.uint64) for k in
                ("state", "acked", "snd_cwnd", "snd_ssthresh", "srtt_us", "icsk_rto",
                 "retrans", "slot")}
        for c in range(self.nconn):
            s = &self.snd[c]
            cols["state"][c] = s.state
            cols["acked"][c] = <uint32_t>(s.tp.snd_una - s.iss)
            cols["snd_cwnd"][c] = s.tp.snd_cwnd
            cols["snd_ssthresh"][c] = s.tp.snd_ssthresh
            cols["srtt_us"][c] = s.tp.srtt_us >> 3
            cols["icsk_rto"][c] = s.tp.icsk_rto
            cols["retrans"][c] = s.retrans
            cols["slot"][c] = s.slot
        return cols

    def samples(self):
        """The plot's samples in time order: (t_ns, cwnd, in_flight, pool_inflight) rows."""
        cdef uint64_t i
        out = _np.empty((4, self.nsamples), _np.int64)
        for i in range(self.nsamples):
            out[0, i] = self.smp[i].t_ns
            out[1, i] = self.smp[i].cwnd
            out[2, i] = self.smp[i].in_flight
            out[3, i] = self.smp[i].pool_inflight
        return out
