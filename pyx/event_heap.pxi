# The closed loop's event queue: a binary min-heap of (time, seq, kind, arg) on virtual time.
#
# Not a kernel object (the kernel's timers are a timer wheel and hrtimers; the closed loop only
# needs "the next thing to happen"). seq is the push order, so events at the same time pop in
# the order they were pushed: runs are deterministic.


cdef inline bint nm_event_less(const nm_event *a, const nm_event *b) noexcept nogil:
    return a.time < b.time or (a.time == b.time and a.seq < b.seq)


cdef int nm_event_push(nm_event_heap *h, uint64_t time, uint32_t kind, uint64_t arg) noexcept nogil:
    """Push an event (sift up); -ENOMEM if the heap cannot grow."""
    cdef uint64_t i, parent
    cdef nm_event *ev
    cdef nm_event e
    if h.n == h.cap:
        ev = <nm_event *>realloc(h.ev, (h.cap * 2 if h.cap else 64) * sizeof(nm_event))
        if ev == NULL:
            return -ENOMEM
        h.ev = ev
        h.cap = h.cap * 2 if h.cap else 64
    e.time, e.seq, e.kind, e.arg = time, h.next_seq, kind, arg
    h.next_seq += 1
    i = h.n
    h.n += 1
    while i:
        parent = (i - 1) >> 1
        if not nm_event_less(&e, &h.ev[parent]):
            break
        h.ev[i] = h.ev[parent]
        i = parent
    h.ev[i] = e
    return 0


cdef bint nm_event_pop(nm_event_heap *h, nm_event *out) noexcept nogil:
    """Pop the earliest event into ``out`` (sift down); False when the heap is empty."""
    cdef uint64_t i = 0, c
    cdef nm_event last
    if h.n == 0:
        return False
    out[0] = h.ev[0]
    h.n -= 1
    last = h.ev[h.n]
    while True:
        c = 2 * i + 1
        if c >= h.n:
            break
        if c + 1 < h.n and nm_event_less(&h.ev[c + 1], &h.ev[c]):
            c += 1
        if not nm_event_less(&h.ev[c], &last):
            break
        h.ev[i] = h.ev[c]
        i = c
    h.ev[i] = last
    return True


cdef class CoreEventHeap:
    """The event queue, for tests: ``push()`` arrays, ``pop(n)`` up to n events in order."""

    def __dealloc__(self):
        free(self.h.ev)

    def __len__(self):
        return self.h.n

    def push(self, times, kinds, args):
        cdef const uint64_t[:] t = _np.ascontiguousarray(times, dtype=_np.uint64)
        cdef const uint32_t[:] k = _np.ascontiguousarray(kinds, dtype=_np.uint32)
        cdef const uint64_t[:] a = _np.ascontiguousarray(args, dtype=_np.uint64)
        cdef Py_ssize_t i, n = t.shape[0]
        cdef int err = 0
        if not (k.shape[0] == a.shape[0] == n):
            raise ValueError("event arrays differ in length")
        with nogil:
            for i in range(n):
                err = nm_event_push(&self.h, t[i], k[i], a[i])
                if err:
                    break
        if err:
            raise MemoryError()

    def pop(self, Py_ssize_t n):
        """Up to n earliest events: (time, seq, kind, arg) arrays."""
        n = min(n, <Py_ssize_t>self.h.n)
        times = _np.empty(n, dtype=_np.uint64)
        seqs = _np.empty(n, dtype=_np.uint64)
        kinds = _np.empty(n, dtype=_np.uint32)
        args = _np.empty(n, dtype=_np.uint64)
        cdef uint64_t[:] ot = times, os = seqs, oa = args
        cdef uint32_t[:] ok = kinds
        cdef nm_event e
        cdef Py_ssize_t i
        with nogil:
            for i in range(n):
                nm_event_pop(&self.h, &e)
                ot[i], os[i], ok[i], oa[i] = e.time, e.seq, e.kind, e.arg
        return times, seqs, kinds, args
