# ptr_ring: the page_pool's recycle ring.
#
# Models include/linux/ptr_ring.h: a NULL slot is free; the consumer invalidates consumed slots in
# batches (__ptr_ring_discard_one), so a ring with unflushed consumed slots can refuse a producer
# before it holds `size` entries, exactly as the kernel's does. The producer lock is a no-op here
# (one thread runs the model); the lock's context (softirq or _bh) has no visible effect.


cdef int ptr_ring_init(ptr_ring *r, int size) noexcept nogil:
    r.queue = <netmem_ref *>calloc(size if size > 0 else 1, sizeof(netmem_ref))
    if r.queue == NULL:
        return -ENOMEM
    r.producer = 0
    r.consumer_head = 0
    r.consumer_tail = 0
    # __ptr_ring_set_size(): two cache lines of pointers per batch, at most half the ring.
    r.size = size
    r.batch = SMP_CACHE_BYTES * 2 // sizeof(netmem_ref)
    if r.batch > size // 2 or r.batch == 0:
        r.batch = 1
    return 0


cdef void ptr_ring_cleanup(ptr_ring *r) noexcept nogil:
    free(r.queue)
    r.queue = NULL
    r.size = 0


cdef inline bint __ptr_ring_empty(ptr_ring *r) noexcept nogil:
    if likely(r.size):
        return r.queue[r.consumer_head] == 0
    return True


cdef inline int __ptr_ring_produce(ptr_ring *r, netmem_ref ptr) noexcept nogil:
    if unlikely(not r.size) or r.queue[r.producer]:
        return -ENOSPC
    r.queue[r.producer] = ptr
    r.producer += 1
    if unlikely(r.producer >= r.size):
        r.producer = 0
    return 0


cdef inline void __ptr_ring_discard_one(ptr_ring *r) noexcept nogil:
    cdef int consumer_head = r.consumer_head
    cdef int head = consumer_head
    consumer_head += 1
    if unlikely(consumer_head - r.consumer_tail >= r.batch or consumer_head >= r.size):
        while head >= r.consumer_tail:
            r.queue[head] = 0
            head -= 1
        r.consumer_tail = consumer_head
    if unlikely(consumer_head >= r.size):
        consumer_head = 0
        r.consumer_tail = 0
    r.consumer_head = consumer_head


cdef inline netmem_ref __ptr_ring_consume(ptr_ring *r) noexcept nogil:
    cdef netmem_ref ptr = 0
    if likely(r.size):
        ptr = r.queue[r.consumer_head]
    if ptr:
        __ptr_ring_discard_one(r)
    return ptr


cdef int ptr_ring_count(ptr_ring *r) noexcept nogil:
    """Entries waiting in the ring (a model helper: the kernel has no O(1) count either)."""
    cdef int n = 0
    cdef int i
    for i in range(r.size):
        if r.queue[i]:
            n += 1
    # Consumed but not yet invalidated slots still hold their pointer.
    i = r.consumer_tail
    while i < r.consumer_head:
        if r.queue[i]:
            n -= 1
        i += 1
    return n
