# The receiving application of netmem-replay, in C: ncdevmem's do_server() over every socket.
#
# tools/testing/selftests/drivers/net/hw/ncdevmem.c reads one socket: recvmsg(MSG_SOCK_DEVMEM),
# the bytes of each SCM_DEVMEM_DMABUF cmsg read through the dma-buf at its frag_offset (and
# checked against the -v pattern), the tokens handed back with SO_DEVMEM_DONTNEED. CoreReceiver
# does that for every socket its epoll instance reports ready (EPOLLIN | EPOLLET: each read until
# EAGAIN), or plain recvmsg() copies on host memory, so a replay's application costs no Python
# step per socket, call or frag. It is user space: it calls the modelled syscalls
# (tcp_recvmsg_devmem(), tcp_recvmsg_copy(), sock_devmem_dontneed()) and nothing below them.

cdef struct nm_rcv_stream:      # what the application knows of the socket in one slot
    uint64_t pos                # bytes read
    uint64_t bad                # 1 + the first byte that differs from the pattern; 0: none
    int32_t err                 # the errno a read ended the stream with (0: its end)
    uint8_t eof                 # the stream has ended: read to its end, or an error


cdef enum:                      # CoreReceiver.c[]: one counter each, as _RCV_COUNTERS
    RCV_CALLS
    RCV_BYTES
    RCV_DMABUF_FRAGS
    RCV_LINEAR_FRAGS
    RCV_TOKENS
    RCV_DONTNEED_CALLS
    RCV_DONTNEED_SHORT
    RCV_FOREIGN_FRAGS
    RCV_FOREIGN_ID
    RCV_READ_FAULTS
    RCV_LINEAR_MISMATCH
    RCV_ZCRX_CQES
    RCV_REFILL_ENTRIES
    RCV_NR_COUNTERS

_RCV_COUNTERS = ("recvmsg-calls", "bytes", "dmabuf-frags", "linear-frags", "tokens-returned",
                 "dontneed-calls", "dontneed-short", "foreign-frags", "foreign-id",
                 "read-faults", "linear-mismatch", "zcrx-cqes", "refill-entries")


cdef struct nm_held_token:      # a token the application holds (CoreReceiver.hold_ns)
    uint64_t due                # virtual ns of its SO_DEVMEM_DONTNEED
    uint32_t slot
    uint32_t token


cdef int _cmp_u32(const void *a, const void *b) noexcept nogil:
    cdef uint32_t x = (<const uint32_t *>a)[0], y = (<const uint32_t *>b)[0]
    return (x > y) - (x < y)


cdef class CoreReceiver:
    """The application of ``netmem-replay``: ``drain()`` reads every socket the receive path
    woke (``ep_poll_callback()``) until EAGAIN with ``recvmsg`` of ``bufsize`` bytes, with
    MSG_SOCK_DEVMEM and ``cmsgs`` cmsgs of control buffer when ``devmem``. Each dma-buf frag is
    read through ``dmabuf_map`` (the dma-buf's scatterlist: offsets, physical addresses,
    lengths, in offset order), as a GPU copy to the host would; each socket's tokens go back
    with SO_DEVMEM_DONTNEED once it is drained, sorted, consecutive ones merged, at most
    MAX_DONTNEED_TOKENS entries and MAX_DONTNEED_FRAGS frags per call. With ``pattern`` (the
    ncdevmem ``-v`` bytes from every rotation, longer than ``bufsize`` by ``period``), every
    byte read is checked; with ``keep``, every byte is kept for ``take_kept()``.

    Departs from ncdevmem: one process reads every socket, with one epoll instance that watches
    all of them (from the first segment: no accept()); tokens are returned per socket per
    drain, not per recvmsg call; a slot's stream state lasts until ``end_pass()``, which closes
    every socket (the process's exit)."""

    cdef CoreMachine machine
    cdef nm_net *n
    cdef bint devmem, nomem, zcrx
    cdef CoreIoUring zring              # io_uring zcrx: the ring RECV_ZC posts to, and the ifq
    cdef CoreZcrxIfq zifq
    cdef public bint keep               # keep every byte read, for take_kept()
    cdef uint8_t *buf                   # the iov of one recvmsg
    cdef uint8_t *bounce                # where a dma-buf frag is read to when nothing checks it
    cdef uint64_t bufsize
    cdef nm_dmabuf_cmsg *cm
    cdef uint32_t cm_max
    cdef const uint8_t *ring            # the pattern (NULL: no check)
    cdef object _ring
    cdef uint64_t period
    cdef uint64_t *map_start            # the dma-buf's scatterlist, offset -> CPU pointer
    cdef uint64_t *map_len
    cdef char **map_ptr
    cdef uint32_t nmap
    cdef uint32_t dmabuf_id
    cdef nm_rcv_stream *st
    cdef uint32_t st_cap
    cdef uint32_t *tok                  # the tokens of the socket being read
    cdef uint64_t tok_len, tok_cap
    cdef uint32_t runs[2 * MAX_DONTNEED_TOKENS]
    cdef uint8_t *out                   # kept bytes, and their (slot, length) runs
    cdef uint64_t out_len, out_cap
    cdef uint32_t *rec_slot
    cdef uint64_t *rec_len
    cdef uint64_t nrec, rec_cap
    cdef uint64_t c[RCV_NR_COUNTERS]
    # The closed loop's "application holding tokens longer": each drained socket's tokens wait
    # hold_ns of virtual time before SO_DEVMEM_DONTNEED (a FIFO of (due, slot, token)).
    cdef public uint64_t hold_ns
    cdef nm_held_token *held
    cdef uint64_t held_head, held_tail, held_cap

    def __cinit__(self, CoreMachine machine, bint devmem, uint64_t bufsize, uint32_t cmsgs=1,
                  object dmabuf_map=None, uint32_t dmabuf_id=0, object pattern=None,
                  uint64_t period=0, bint keep=False):
        if bufsize == 0 or cmsgs == 0:
            raise NetmemError(EINVAL, "receiver: bufsize and cmsgs must be at least 1")
        self.machine = machine
        self.n = machine.m.net
        self.devmem = devmem
        self.keep = keep
        self.bufsize = bufsize
        self.cm_max = cmsgs
        self.dmabuf_id = dmabuf_id
        self.buf = <uint8_t *>malloc(bufsize)
        self.bounce = <uint8_t *>malloc(bufsize)
        self.cm = <nm_dmabuf_cmsg *>malloc(cmsgs * sizeof(nm_dmabuf_cmsg))
        self.tok_cap = 1024
        self.tok = <uint32_t *>malloc(self.tok_cap * sizeof(uint32_t))
        if self.buf == NULL or self.bounce == NULL or self.cm == NULL or self.tok == NULL:
            raise MemoryError()
        if pattern is not None:
            self._ring = _np.ascontiguousarray(pattern, _np.uint8)
            if period == 0 or <uint64_t>len(self._ring) < bufsize + period:
                raise NetmemError(EINVAL, f"receiver: a pattern of {len(self._ring)} bytes is "
                                          f"shorter than bufsize + period")
            self.ring = <const uint8_t *>cnp.PyArray_DATA(self._ring)
            self.period = period
        if dmabuf_map is not None:
            self._set_map(*dmabuf_map)

    def _set_map(self, starts, phys, lengths):
        cdef uint32_t i, k = len(starts)
        self.map_start = <uint64_t *>malloc(max(k, 1) * sizeof(uint64_t))
        self.map_len = <uint64_t *>malloc(max(k, 1) * sizeof(uint64_t))
        self.map_ptr = <char **>malloc(max(k, 1) * sizeof(char *))
        if self.map_start == NULL or self.map_len == NULL or self.map_ptr == NULL:
            raise MemoryError()
        for i in range(k):
            self.map_start[i], self.map_len[i] = int(starts[i]), int(lengths[i])
            self.map_ptr[i] = nm_phys_to_ptr(self.machine.m, int(phys[i]), self.map_len[i])
            if self.map_ptr[i] == NULL or (i and self.map_start[i] < self.map_start[i - 1]):
                raise NetmemError(EINVAL, f"receiver: dma-buf entry {i} ({int(phys[i]):#x}, "
                                          f"+{self.map_len[i]:#x}) is not in RAM or one BAR, "
                                          f"or out of offset order")
        self.nmap = k

    def __dealloc__(self):
        free(self.buf)
        free(self.bounce)
        free(self.cm)
        free(self.tok)
        free(self.map_start)
        free(self.map_len)
        free(self.map_ptr)
        free(self.st)
        free(self.out)
        free(self.rec_slot)
        free(self.rec_len)
        free(self.held)

    # ---- the drain ---------------------------------------------------------------------------

    def drain(self):
        """``epoll_wait()`` and the reads of every ready socket (in the order they woke), in the
        caller's context (``m.on_cpu()``: process context on the application's CPU). Returns
        the sockets read."""
        cdef uint32_t visited
        if self._st_reserve() < 0:
            raise MemoryError()
        with nogil:
            visited = self._drain()
        if self.machine.m.nr_warn:
            self.machine._flush_warnings()
        if self.nomem:
            self.nomem = False
            raise MemoryError("receiver: out of memory for tokens or kept bytes")
        return visited

    cdef int _st_reserve(self) noexcept nogil:
        """A stream state for every socket slot: 0 or -ENOMEM."""
        cdef uint32_t cap = self.n.cap_socks
        cdef void *p
        if cap > self.st_cap:
            p = realloc(self.st, cap * sizeof(nm_rcv_stream))
            if p == NULL:
                return -ENOMEM
            self.st = <nm_rcv_stream *>p
            memset(self.st + self.st_cap, 0, (cap - self.st_cap) * sizeof(nm_rcv_stream))
            self.st_cap = cap
        return 0

    cdef uint32_t _drain(self) noexcept nogil:
        """The reads; while profiling, recvmsg(), the read of the bytes and SO_DEVMEM_DONTNEED
        are stages (per call)."""
        cdef nm_net *n = self.n
        cdef uint32_t i = 0, slot, visited = 0
        while i < n.rdl_len:
            slot = n.rdllist[i]
            i += 1
            n.socks[slot].on_rdllist = 0
            if not n.socks[slot].used or self.st[slot].eof:
                continue
            visited += 1
            if self.zcrx:
                self._read_zcrx(slot)
            elif self.devmem:
                self._read_devmem(slot)
            else:
                self._read_copy(slot)
        n.rdl_len = 0
        prof_stage(n, NM_PROF_OUTSIDE)
        return visited

    cdef inline bint _ended(self, uint32_t slot, int64_t rc) noexcept nogil:
        """After a read: whether the socket is drained (EAGAIN) or its stream ended (0, an
        error)."""
        if rc > 0:
            return False
        if rc != -EAGAIN:
            self.st[slot].eof = 1
            self.st[slot].err = <int32_t>-rc
        return True

    cdef void _read_copy(self, uint32_t slot) noexcept nogil:
        cdef int64_t rc
        while True:
            prof_stage(self.n, NM_PROF_RECVMSG)
            rc = tcp_recvmsg_copy(self.n, slot, self.buf, self.bufsize)
            self.c[RCV_CALLS] += 1
            if self._ended(slot, rc):
                return
            prof_stage(self.n, NM_PROF_VALIDATE)
            self._deliver(slot, self.buf, <uint64_t>rc)

    cdef void _read_devmem(self, uint32_t slot) noexcept nogil:
        cdef nm_devmem_rx rx
        cdef int64_t rc
        cdef uint64_t lin
        cdef uint32_t i
        cdef nm_dmabuf_cmsg *c
        self.tok_len = 0
        while True:
            rx.buf = self.buf
            rx.buf_used = 0
            rx.cm = self.cm
            rx.cm_max = self.cm_max
            rx.ncm = 0
            prof_stage(self.n, NM_PROF_RECVMSG)
            rc = tcp_recvmsg_devmem(self.n, slot, &rx, self.bufsize)
            self.c[RCV_CALLS] += 1
            if rc > 0:
                prof_stage(self.n, NM_PROF_VALIDATE)
            if rc > 0 and rx.ncm == 0:
                self._deliver(slot, self.buf, rx.buf_used)        # readable bytes
                continue
            lin = 0
            for i in range(rx.ncm):
                c = &self.cm[i]
                if i + 1 < rx.ncm:
                    self._prefetch_frag(&self.cm[i + 1])
                if c.cmsg_type == SCM_DEVMEM_LINEAR:
                    self.c[RCV_LINEAR_FRAGS] += 1
                    if lin + c.frag_size <= rx.buf_used:
                        self._deliver(slot, self.buf + lin, c.frag_size)
                    lin += c.frag_size
                else:
                    self.c[RCV_DMABUF_FRAGS] += 1
                    self._read_frag(slot, c)
                    self._take_token(c.frag_token)
            if lin != rx.buf_used:
                self.c[RCV_LINEAR_MISMATCH] += 1
            if self._ended(slot, rc):
                break
        if self.hold_ns:
            self._hold(slot)
        else:
            self._dontneed(slot)

    def _set_zcrx(self, CoreIoUring ring, CoreZcrxIfq ifq):
        """Read with io_uring zcrx (iou-zcrx.c): RECV_ZC on ``ring`` through ``ifq``, each
        completion read through the memory map at its area offset, each buffer returned through
        the ifq's refill ring."""
        self.zring, self.zifq, self.zcrx = ring, ifq, True

    cdef void _read_zcrx(self, uint32_t slot) noexcept nogil:
        """iou-zcrx.c's loop for one socket: RECV_ZC (``io_zcrx_recv()``, the socket slot as
        user_data) until EAGAIN or the end; after each issue every CQE's bytes are read from the
        area at ``off & ~IORING_ZCRX_AREA_MASK`` and checked, the buffer returned (``rqe.off``
        that offset with the area token, 0; ``rqe.len`` the length) and the tail stored. The
        refill ring has an entry per net_iov at least (the replay sizes it so), so it never
        fills."""
        cdef nm_io_cq *cq = &self.zring.cq
        cdef nm_zcrx_ifq *ifq = &self.zifq.ifq
        cdef uint32_t length, head, tail, rqt, rq_mask = ifq.rq_entries - 1
        cdef nm_dmabuf_cmsg c
        cdef nm_io_cqe *e
        cdef uint64_t *rqe
        cdef int64_t rc
        c.dmabuf_id = self.dmabuf_id
        while True:
            length = 0
            prof_stage(self.n, NM_PROF_RECVMSG)
            rc = io_zcrx_recv(self.n, ifq, cq, slot, slot, &length)
            self.c[RCV_CALLS] += 1
            head, tail, rqt = cq.khead[0], cq.ktail[0], ifq.rq_tail[0]
            if head != tail:
                prof_stage(self.n, NM_PROF_VALIDATE)
            while head != tail:
                e = &cq.cqes[head & cq.mask]
                head += 1
                c.frag_offset = e.zcrx_off & ((1ULL << IORING_ZCRX_AREA_SHIFT) - 1)
                c.frag_size = <uint32_t>e.res
                self._read_frag(slot, &c)
                rqe = &ifq.rqes[2 * (rqt & rq_mask)]
                rqe[0] = c.frag_offset
                rqe[1] = c.frag_size
                rqt += 1
            self.c[RCV_ZCRX_CQES] += rqt - ifq.rq_tail[0]
            self.c[RCV_REFILL_ENTRIES] += rqt - ifq.rq_tail[0]
            cq.khead[0] = head
            ifq.rq_tail[0] = rqt
            if self._ended(slot, rc):
                return
    cdef inline bint _map_find(self, uint64_t off, uint32_t *entry) noexcept nogil:
        """The scatterlist entry holding dma-buf offset ``off`` (the last one starting at or
        below it): whether there is one."""
        cdef uint32_t lo = 0, hi = self.nmap, mid
        while hi - lo > 1:
            mid = (lo + hi) >> 1
            if self.map_start[mid] <= off:
                lo = mid
            else:
                hi = mid
        entry[0] = lo
        return (self.nmap != 0 and off >= self.map_start[lo]
                and off - self.map_start[lo] < self.map_len[lo])

    cdef void _prefetch_frag(self, nm_dmabuf_cmsg *c) noexcept nogil:
        """Warm the lines of the dma-buf frag read next (its part in the first entry): the
        device wrote them a chunk ago. Not ncdevmem's; the model's own speed."""
        cdef uint32_t k
        cdef uint64_t at
        if c.cmsg_type == SCM_DEVMEM_DMABUF and self._map_find(c.frag_offset, &k):
            at = c.frag_offset - self.map_start[k]
            prefetch_range(self.map_ptr[k] + at, min(c.frag_size, self.map_len[k] - at), False)
        barrier()

    cdef void _read_frag(self, uint32_t slot, nm_dmabuf_cmsg *c) noexcept nogil:
        """The bytes of one SCM_DEVMEM_DMABUF cmsg, read through the dma-buf's scatterlist (a
        frag may cross entries). A frag outside it is a read fault: its bytes count as bad."""
        cdef uint64_t off = c.frag_offset, left = c.frag_size, piece
        cdef uint32_t lo
        if c.dmabuf_id != self.dmabuf_id:
            if not self.c[RCV_FOREIGN_FRAGS]:
                self.c[RCV_FOREIGN_ID] = c.dmabuf_id
            self.c[RCV_FOREIGN_FRAGS] += 1
        while left:
            if not self._map_find(off, &lo):
                self.c[RCV_READ_FAULTS] += 1
                if not self.st[slot].bad:
                    self.st[slot].bad = self.st[slot].pos + 1
                self.st[slot].pos += left
                self.c[RCV_BYTES] += left
                return
            piece = min(left, self.map_len[lo] - (off - self.map_start[lo]))
            self._deliver_device(slot, <uint8_t *>self.map_ptr[lo] + (off - self.map_start[lo]),
                                 piece)
            off += piece
            left -= piece

    cdef inline void _deliver_device(self, uint32_t slot, const uint8_t *p,
                                     uint64_t len) noexcept nogil:
        """Device memory: when neither the check nor the dump reads it, the application still
        copies it to the host (ncdevmem's memcpy from the mmap'd dma-buf)."""
        cdef uint64_t a, piece
        if self.ring == NULL and not self.keep:
            a = 0
            while a < len:
                piece = min(len - a, self.bufsize)
                memcpy(self.bounce, p + a, piece)
                a += piece
        self._deliver(slot, p, len)

    cdef void _deliver(self, uint32_t slot, const uint8_t *p, uint64_t len) noexcept nogil:
        """The next ``len`` bytes of ``slot``'s stream: check them against the pattern, keep
        them."""
        cdef nm_rcv_stream *s = &self.st[slot]
        cdef uint64_t a = 0, piece, j
        cdef const uint8_t *want
        if self.ring != NULL and not s.bad:
            while a < len:
                piece = min(len - a, self.bufsize)
                want = self.ring + (s.pos + a) % self.period
                if memcmp(p + a, want, piece):
                    j = 0
                    while p[a + j] == want[j]:
                        j += 1
                    s.bad = s.pos + a + j + 1
                    break
                a += piece
        if self.keep:
            self._keep(slot, p, len)
        s.pos += len
        self.c[RCV_BYTES] += len

    cdef void _keep(self, uint32_t slot, const uint8_t *p, uint64_t len) noexcept nogil:
        cdef void *q
        cdef uint64_t cap
        if self.out_len + len > self.out_cap:
            cap = max(self.out_cap * 2, self.out_len + len, 1 << 20)
            q = realloc(self.out, cap)
            if q == NULL:
                self.nomem = True
                return
            self.out, self.out_cap = <uint8_t *>q, cap
        if not self.nrec or self.rec_slot[self.nrec - 1] != slot:
            if self.nrec == self.rec_cap:
                cap = max(self.rec_cap * 2, 1024)
                q = realloc(self.rec_slot, cap * sizeof(uint32_t))
                if q == NULL:
                    self.nomem = True
                    return
                self.rec_slot = <uint32_t *>q
                q = realloc(self.rec_len, cap * sizeof(uint64_t))
                if q == NULL:
                    self.nomem = True
                    return
                self.rec_len, self.rec_cap = <uint64_t *>q, cap
            self.rec_slot[self.nrec] = slot
            self.rec_len[self.nrec] = 0
            self.nrec += 1
        memcpy(self.out + self.out_len, p, len)
        self.out_len += len
        self.rec_len[self.nrec - 1] += len

    # ---- SO_DEVMEM_DONTNEED --------------------------------------------------------------------

    cdef inline void _take_token(self, uint32_t token) noexcept nogil:
        cdef void *q
        if self.tok_len == self.tok_cap:
            q = realloc(self.tok, self.tok_cap * 2 * sizeof(uint32_t))
            if q == NULL:
                self.nomem = True           # the token stays with the socket, freed at close
                return
            self.tok, self.tok_cap = <uint32_t *>q, self.tok_cap * 2
        self.tok[self.tok_len] = token
        self.tok_len += 1

    cdef void _dontneed(self, uint32_t slot) noexcept nogil:
        """``setsockopt(SO_DEVMEM_DONTNEED)`` of the socket's tokens: sorted, runs of
        consecutive tokens one entry each, calls within the kernel's limits."""
        cdef uint64_t i = 0, j
        cdef uint32_t nent, nfrags, count
        cdef int64_t freed
        prof_stage(self.n, NM_PROF_DONTNEED)
        for j in range(1, self.tok_len):
            if self.tok[j] < self.tok[j - 1]:
                qsort(self.tok, self.tok_len, sizeof(uint32_t), _cmp_u32)
                break
        while i < self.tok_len:
            nent = nfrags = 0
            while i < self.tok_len and nent < MAX_DONTNEED_TOKENS and nfrags < MAX_DONTNEED_FRAGS:
                count = 1
                while (i + count < self.tok_len and nfrags + count < MAX_DONTNEED_FRAGS
                       and self.tok[i + count] == self.tok[i] + count):
                    count += 1
                self.runs[2 * nent] = self.tok[i]
                self.runs[2 * nent + 1] = count
                nent += 1
                nfrags += count
                i += count
            freed = sock_devmem_dontneed(self.n, &self.n.socks[slot], self.runs, nent)
            self.c[RCV_DONTNEED_CALLS] += 1
            self.c[RCV_TOKENS] += <uint64_t>freed
            if freed != nfrags:
                self.c[RCV_DONTNEED_SHORT] += 1
        self.tok_len = 0

    cdef void _hold(self, uint32_t slot) noexcept nogil:
        """Keep the socket's tokens for ``hold_ns`` (the closed loop's application holding
        them longer); ``_release_held()`` gives them back when due."""
        cdef uint64_t i, due = self.n.m.clock_ns + self.hold_ns
        cdef nm_held_token *h
        if self.held_head == self.held_tail:
            self.held_head = self.held_tail = 0
        if __grow(<void **>&self.held, &self.held_cap, self.held_tail + self.tok_len,
                  sizeof(nm_held_token)) < 0:
            self.nomem = True
            self._dontneed(slot)                # cannot hold them: give them back now
            return
        for i in range(self.tok_len):
            h = &self.held[self.held_tail + i]
            h.due, h.slot, h.token = due, slot, self.tok[i]
        self.held_tail += self.tok_len
        self.tok_len = 0

    cdef uint64_t _held_next(self) noexcept nogil:
        """When the oldest held token is due (0: none held)."""
        return self.held[self.held_head].due if self.held_head < self.held_tail else 0

    cdef void _release_held(self, uint64_t now) noexcept nogil:
        """SO_DEVMEM_DONTNEED of the held tokens due by ``now``, a socket's run per call."""
        cdef uint32_t slot
        while self.held_head < self.held_tail and self.held[self.held_head].due <= now:
            slot = self.held[self.held_head].slot
            self.tok_len = 0
            while (self.held_head < self.held_tail and self.held[self.held_head].slot == slot
                   and self.held[self.held_head].due <= now):
                self._take_token(self.held[self.held_head].token)
                self.held_head += 1
            self._dontneed(slot)

    # ---- results -------------------------------------------------------------------------------

    def counters(self):
        """The application's counts: recvmsg calls, bytes, frags by kind, tokens returned and
        SO_DEVMEM_DONTNEED calls (and those that freed fewer than given), cmsgs naming another
        dma-buf (and the first id they named), frags outside the dma-buf, calls whose linear
        cmsgs did not add up to the bytes copied."""
        return {name: self.c[i] for i, name in enumerate(_RCV_COUNTERS)}

    def end_pass(self):
        """Every open socket's stream, as columns (slot order): ``slot``, ``family``,
        ``laddr``/``raddr`` (16 bytes each, an IPv4 address in the first 4), ``lport``,
        ``rport``, ``pos``, ``bad`` (-1: none), ``eof``, ``err``; then every socket closed, as
        the process's exit closes its fds (``tcp_close()``), and the streams forgotten."""
        cdef nm_net *n = self.n
        cdef uint32_t i, k = 0, cap = n.nr_socks
        cdef nm_sock *sk
        cdef nm_rcv_stream *s
        cdef nm_rcv_stream none
        cols = {"slot": _np.empty(cap, _np.uint32), "family": _np.empty(cap, _np.uint8),
                "laddr": _np.zeros((cap, 16), _np.uint8),
                "raddr": _np.zeros((cap, 16), _np.uint8),
                "lport": _np.empty(cap, _np.uint16), "rport": _np.empty(cap, _np.uint16),
                "pos": _np.empty(cap, _np.uint64), "bad": _np.empty(cap, _np.int64),
                "eof": _np.empty(cap, _np.bool_), "err": _np.empty(cap, _np.int32)}
        cdef uint32_t[::1] slot = cols["slot"]
        cdef uint8_t[::1] family = cols["family"]
        cdef uint8_t[:, ::1] laddr = cols["laddr"]
        cdef uint8_t[:, ::1] raddr = cols["raddr"]
        cdef uint16_t[::1] lport = cols["lport"], rport = cols["rport"]
        cdef uint64_t[::1] pos = cols["pos"]
        cdef int64_t[::1] bad = cols["bad"]
        cdef uint8_t[::1] eof = cols["eof"].view(_np.uint8)
        cdef int32_t[::1] err = cols["err"]
        memset(&none, 0, sizeof(none))
        with nogil:                     # one walk over the sockets: read, then closed
            for i in range(cap):
                sk = &n.socks[i]
                if not sk.used:
                    continue
                s = &self.st[i] if i < self.st_cap else &none
                slot[k], family[k], lport[k], rport[k] = i, sk.family, sk.lport, sk.rport
                memcpy(&laddr[k, 0], sk.laddr, 4 if sk.family == 4 else 16)
                memcpy(&raddr[k, 0], sk.raddr, 4 if sk.family == 4 else 16)
                pos[k], bad[k], eof[k], err[k] = s.pos, <int64_t>s.bad - 1, s.eof, s.err
                k += 1
                tcp_close_rx(n, i)
        if self.st_cap:
            memset(self.st, 0, self.st_cap * sizeof(nm_rcv_stream))
        if self.machine.m.nr_warn:
            self.machine._flush_warnings()
        return {name: col[:k] for name, col in cols.items()}

    def take_kept(self):
        """The kept bytes (``np.uint8``) and their runs: ``(slot, length)`` arrays, in the
        order read; then forgotten."""
        data = _np.empty(self.out_len, _np.uint8)
        slots = _np.empty(self.nrec, _np.uint32)
        lengths = _np.empty(self.nrec, _np.uint64)
        if self.out_len:
            memcpy(cnp.PyArray_DATA(data), self.out, self.out_len)
        if self.nrec:
            memcpy(cnp.PyArray_DATA(slots), self.rec_slot, self.nrec * sizeof(uint32_t))
            memcpy(cnp.PyArray_DATA(lengths), self.rec_len, self.nrec * sizeof(uint64_t))
        self.out_len = self.nrec = 0
        return data, slots, lengths
