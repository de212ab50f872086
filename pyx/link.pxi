# A unidirectional link on virtual time (ns): rate, one-way propagation delay, a drop-tail FIFO
# of a byte limit and optional random loss (the closed loop's wire, groundwork).
#
# Not a kernel object: the model of what sits between two NICs (a bottleneck with a bfifo qdisc,
# as netem/tbf set up in tests). A frame is refused when the bytes queued or still serialising
# plus its own exceed queue_bytes (dropped_queue); an accepted frame is serialised after the one
# before it (len * 8 * 1e9 / rate ns, rounded up), then lost on the wire with the configured
# probability (dropped_loss, drawn from a seeded xorshift32 only when the probability is not 0),
# else delivered at its serialisation end plus the delay. A two-way link is two of these.

cdef extern from *:
    """#define NM_LINK_DROP UINT64_MAX"""
    const uint64_t NM_LINK_DROP             # the delivery time of a dropped frame


cdef int nm_link_init(nm_link *l, uint64_t rate_bps, uint64_t delay_ns, uint64_t queue_bytes,
                      uint32_t loss_thresh, uint32_t seed) noexcept nogil:
    memset(l, 0, sizeof(nm_link))
    l.rate_bps = rate_bps
    l.delay_ns = delay_ns
    l.queue_bytes = queue_bytes
    l.loss_thresh = loss_thresh
    l.rng = seed if seed else 0x9E3779B9           # xorshift32 must not start at 0
    l.cap = 64
    l.fin = <uint64_t *>malloc(l.cap * sizeof(uint64_t))
    l.len = <uint32_t *>malloc(l.cap * sizeof(uint32_t))
    return 0 if l.fin != NULL and l.len != NULL else -ENOMEM


cdef void nm_link_destroy(nm_link *l) noexcept nogil:
    free(l.fin)
    free(l.len)
    l.fin = NULL
    l.len = NULL


cdef int nm_link_grow(nm_link *l) noexcept nogil:
    """Double the FIFO's ring, unwrapping it."""
    cdef uint32_t cap = l.cap * 2, i, j
    cdef uint64_t *fin = <uint64_t *>malloc(cap * sizeof(uint64_t))
    cdef uint32_t *ln = <uint32_t *>malloc(cap * sizeof(uint32_t))
    if fin == NULL or ln == NULL:
        free(fin)
        free(ln)
        return -ENOMEM
    for i in range(l.count):
        j = (l.head + i) % l.cap
        fin[i] = l.fin[j]
        ln[i] = l.len[j]
    free(l.fin)
    free(l.len)
    l.fin, l.len, l.cap, l.head = fin, ln, cap, 0
    return 0


cdef inline void nm_link_drain(nm_link *l, uint64_t now) noexcept nogil:
    """Retire the frames whose serialisation ended by ``now`` from the FIFO."""
    while l.count and l.fin[l.head] <= now:
        l.backlog -= l.len[l.head]
        l.head = (l.head + 1) % l.cap
        l.count -= 1


cdef uint64_t nm_link_enqueue(nm_link *l, uint32_t length, uint64_t now) noexcept nogil:
    """Offer a frame of ``length`` bytes at ``now`` (ns, nondecreasing): its delivery time, or
    NM_LINK_DROP (queue full, or lost on the wire; see the counters)."""
    cdef uint64_t fin
    nm_link_drain(l, now)
    if l.backlog + length > l.queue_bytes or (l.count == l.cap and nm_link_grow(l)):
        l.dropped_queue += 1
        return NM_LINK_DROP
    fin = max(now, l.busy_until) + (
        <uint64_t>length * <uint64_t>8000000000 + l.rate_bps - 1) // l.rate_bps
    l.busy_until = fin
    l.fin[(l.head + l.count) % l.cap] = fin
    l.len[(l.head + l.count) % l.cap] = length
    l.count += 1
    l.backlog += length
    l.enqueued += 1
    if l.loss_thresh and nm_xorshift32(&l.rng) < l.loss_thresh:
        l.dropped_loss += 1
        return NM_LINK_DROP
    l.delivered += 1
    l.bytes += length
    return fin + l.delay_ns


cdef class CoreLink:
    """One direction of a link (tests, and the closed loop's Python side): ``CoreLink(rate_bps,
    delay_ns, queue_bytes, loss, seed)``; ``enqueue()`` takes arrays of frame lengths and times."""

    def __cinit__(self, uint64_t rate_bps, uint64_t delay_ns, uint64_t queue_bytes,
                  double loss=0.0, uint32_t seed=1):
        if rate_bps == 0 or not 0.0 <= loss <= 1.0:
            raise ValueError("rate_bps must be positive and loss in [0, 1]")
        cdef uint32_t thresh = <uint32_t>min(loss * 4294967296.0, 4294967295.0)
        if nm_link_init(&self.link, rate_bps, delay_ns, queue_bytes, thresh, seed):
            raise MemoryError()

    def __dealloc__(self):
        nm_link_destroy(&self.link)

    def enqueue(self, lengths, now_ns):
        """Offer frames in order (now_ns nondecreasing): their delivery times (ns), with
        2**64 - 1 for a dropped frame."""
        cdef const uint32_t[:] ln = _np.ascontiguousarray(lengths, dtype=_np.uint32)
        cdef const uint64_t[:] t = _np.ascontiguousarray(now_ns, dtype=_np.uint64)
        cdef Py_ssize_t i, n = ln.shape[0]
        if t.shape[0] != n:
            raise ValueError("lengths and now_ns differ in length")
        out = _np.empty(n, dtype=_np.uint64)
        cdef uint64_t[:] o = out
        with nogil:
            for i in range(n):
                o[i] = nm_link_enqueue(&self.link, ln[i], t[i])
        return out

    @property
    def stats(self):
        return {"enqueued": self.link.enqueued, "dropped_queue": self.link.dropped_queue,
                "dropped_loss": self.link.dropped_loss, "delivered": self.link.delivered,
                "bytes": self.link.bytes, "backlog": self.link.backlog}
