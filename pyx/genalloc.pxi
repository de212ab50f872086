# genalloc: the kernel's general-purpose allocator of special memory (device memory, SRAM, BARs).
#
# Models lib/genalloc.c and include/linux/genalloc.h (Linux 6.18): a pool of chunks searched
# newest first, one bitmap per chunk with one bit per 1 << min_alloc_order bytes, the five
# allocation algorithms over bitmap_find_next_zero_area_off() (lib/bitmap.c), avail counted in
# bytes. Every address the model hands out is the one the kernel's algorithm would.
#
# Departures:
# - Speed. Over each chunk's bitmap sit summary levels (bit i of level k set when word i of level
#   k - 1 is all ones), so find_next_zero_bit() skips full words in O(levels) instead of scanning
#   them, and a per-chunk hint (every bit below first_zero is set) starts the usual search at the
#   right word: first fit costs the same at 10% and 90% occupancy, with the kernel's result. The
#   algorithms therefore get the chunk where the kernel passes its bitmap (genpool_algo_t).
# - One CPU, no racers: bitmap_set_ll() cannot collide, so the kernel's retry loop is not needed.
# - Where the kernel would BUG() (a free outside every chunk, overrunning its chunk, or of bits
#   that are not set; gen_pool_destroy() with allocations out), the model returns -EINVAL or
#   -EBUSY and changes nothing.
# - gen_pool_add_owner() refuses (-EINVAL) an empty chunk, one at address 0 (an allocation there
#   would read as failure), one that wraps the address space or overlaps another chunk.
# - A request of more than UINT_MAX units fails (the kernel truncates nr to unsigned int and
#   would loop for ever in its retry).
# - nm_gen_pool_remove_chunk() is not in the kernel (its chunks stay until gen_pool_destroy()):
#   the p2pdma provider gives a BAR range back with it.


cdef enum:
    GENPOOL_MAX_LEVELS = 8          # 64 ** 8 = 2 ** 48 bits per chunk at most

cdef extern from *:
    """
    #define NM_GENPOOL_MAX_BITS (1ULL << 48)
    """
    const unsigned long NM_GENPOOL_MAX_BITS
    int __builtin_clzll(unsigned long long) noexcept nogil


cdef inline unsigned long BITMAP_FIRST_WORD_MASK(unsigned long start) noexcept nogil:
    return ~0UL << (start & 63)


cdef inline unsigned long BITMAP_LAST_WORD_MASK(unsigned long nbits) noexcept nogil:
    return ~0UL >> ((0UL - nbits) & 63)


cdef inline unsigned long __ffz(unsigned long word) noexcept nogil:
    """First zero bit of a word that has one."""
    return <unsigned long>__builtin_ctzll(~word)


cdef inline unsigned long __units(size_t size, int order) noexcept nogil:
    """``(size + (1UL << order) - 1) >> order``, without the wrap near 2 ** 64."""
    return (size >> order) + ((size & ((1UL << order) - 1)) != 0)


cdef inline size_t chunk_size(nm_gen_pool_chunk *chunk) noexcept nogil:
    return chunk.end_addr - chunk.start_addr + 1


# ---- the summary levels ----------------------------------------------------------------------

cdef inline void __genpool_word_filled(nm_gen_pool_chunk *chunk, unsigned long w) noexcept nogil:
    """Word ``w`` of the bitmap became all ones: mark it, and upwards while words fill."""
    cdef int k
    cdef unsigned long *p
    for k in range(1, chunk.nlevels):
        p = chunk.level[k] + (w >> 6)
        p[0] |= 1UL << (w & 63)
        if p[0] != ~0UL:
            return
        w >>= 6


cdef inline void __genpool_word_emptied(nm_gen_pool_chunk *chunk, unsigned long w) noexcept nogil:
    """Word ``w`` of the bitmap was all ones and lost a bit: unmark it, and upwards while the
    words above were full."""
    cdef int k
    cdef unsigned long *p
    cdef bint was_full
    for k in range(1, chunk.nlevels):
        p = chunk.level[k] + (w >> 6)
        was_full = p[0] == ~0UL
        p[0] &= ~(1UL << (w & 63))
        if not was_full:
            return
        w >>= 6


cdef void __genpool_set(nm_gen_pool_chunk *chunk, unsigned long start,
                        unsigned long nr) noexcept nogil:
    """``bitmap_set_ll()`` on a range known to be clear (``nr`` > 0), keeping the summary."""
    cdef unsigned long *map = chunk.level[0]
    cdef unsigned long end = start + nr
    cdef unsigned long w = start >> 6, last = (end - 1) >> 6
    cdef unsigned long mask = BITMAP_FIRST_WORD_MASK(start)
    if chunk.first_zero == start:
        chunk.first_zero = end
    while True:
        if w == last:
            mask &= BITMAP_LAST_WORD_MASK(end)
        map[w] |= mask
        if map[w] == ~0UL:
            __genpool_word_filled(chunk, w)
        if w == last:
            return
        mask = ~0UL
        w += 1


cdef bint __genpool_all_set(nm_gen_pool_chunk *chunk, unsigned long start,
                            unsigned long nr) noexcept nogil:
    """Whether every bit of the range (``nr`` > 0, inside the bitmap) is set: the test
    ``clear_bits_ll()`` makes word by word, made before anything is cleared."""
    cdef unsigned long *map = chunk.level[0]
    cdef unsigned long end = start + nr
    cdef unsigned long w = start >> 6, last = (end - 1) >> 6
    cdef unsigned long mask = BITMAP_FIRST_WORD_MASK(start)
    while True:
        if w == last:
            mask &= BITMAP_LAST_WORD_MASK(end)
        if (map[w] & mask) != mask:
            return False
        if w == last:
            return True
        mask = ~0UL
        w += 1


cdef void __genpool_clear(nm_gen_pool_chunk *chunk, unsigned long start,
                          unsigned long nr) noexcept nogil:
    """``bitmap_clear_ll()`` on a range known to be set (``nr`` > 0), keeping the summary."""
    cdef unsigned long *map = chunk.level[0]
    cdef unsigned long end = start + nr
    cdef unsigned long w = start >> 6, last = (end - 1) >> 6
    cdef unsigned long mask = BITMAP_FIRST_WORD_MASK(start)
    cdef bint was_full
    if start < chunk.first_zero:
        chunk.first_zero = start
    while True:
        if w == last:
            mask &= BITMAP_LAST_WORD_MASK(end)
        was_full = map[w] == ~0UL
        map[w] &= ~mask
        if was_full:
            __genpool_word_emptied(chunk, w)
        if w == last:
            return
        mask = ~0UL
        w += 1


# ---- bitmap search (lib/find_bit.c, lib/bitmap.c) ---------------------------------------------

cdef inline unsigned long find_next_zero_bit(nm_gen_pool_chunk *chunk, unsigned long size,
                                             unsigned long offset) noexcept nogil:
    """Models ``find_next_zero_bit(chunk->bits, size, offset)``. Departs in cost only: the
    search starts at the chunk's ``first_zero`` hint when that is further, and full words are
    skipped through the summary levels, O(levels) whatever the occupancy. A search from below
    the hint moves the hint up to what it found."""
    cdef unsigned long i
    if offset <= chunk.first_zero and size == chunk.nbits:
        i = __find_next_zero_bit(chunk, size, chunk.first_zero)
        chunk.first_zero = i
        return i
    return __find_next_zero_bit(chunk, size, offset)


cdef inline unsigned long __find_next_zero_bit(nm_gen_pool_chunk *chunk, unsigned long size,
                                               unsigned long offset) noexcept nogil:
    cdef unsigned long w, x, i
    cdef int k
    if offset >= size:
        return size
    w = offset >> 6
    x = ~chunk.level[0][w] & BITMAP_FIRST_WORD_MASK(offset)
    if likely(x != 0):
        i = (w << 6) + <unsigned long>__builtin_ctzll(x)
        return i if i < size else size
    # Climb: the first word after w (at each level, the first entry after it) that is not full.
    i = w + 1
    k = 1
    while k < chunk.nlevels:
        w = i >> 6
        if w >= chunk.nwords[k]:
            return size
        x = ~chunk.level[k][w] & BITMAP_FIRST_WORD_MASK(i)
        if x:
            i = (w << 6) + <unsigned long>__builtin_ctzll(x)
            # Descend: each level below has a zero bit in word i (it is not full).
            while k > 0:
                k -= 1
                i = (i << 6) + __ffz(chunk.level[k][i])
            return i if i < size else size
        i = w + 1
        k += 1
    return size


cdef inline unsigned long find_next_bit(nm_gen_pool_chunk *chunk, unsigned long size,
                                        unsigned long offset) noexcept nogil:
    """Models ``find_next_bit(chunk->bits, size, offset)``: a plain scan (callers bound it by
    the request, or, for best fit, by the free run they measure)."""
    cdef unsigned long *map = chunk.level[0]
    cdef unsigned long w, last, x, i
    if offset >= size:
        return size
    w = offset >> 6
    last = (size - 1) >> 6
    x = map[w] & BITMAP_FIRST_WORD_MASK(offset)
    while x == 0:
        w += 1
        if w > last:
            return size
        x = map[w]
    i = (w << 6) + <unsigned long>__builtin_ctzll(x)
    return i if i < size else size


cdef unsigned long bitmap_find_next_zero_area_off(nm_gen_pool_chunk *chunk, unsigned long size,
                                                  unsigned long start, unsigned int nr,
                                                  unsigned long align_mask,
                                                  unsigned long align_offset) noexcept nogil:
    """Models ``bitmap_find_next_zero_area_off()``: the first index from ``start`` where
    ``index + align_offset`` is a multiple of ``align_mask + 1`` and ``nr`` bits are clear;
    a value above ``size`` when there is none."""
    cdef unsigned long index, end, i
    while True:
        index = find_next_zero_bit(chunk, size, start)
        # __ALIGN_MASK(index + align_offset, align_mask) - align_offset
        index = ((index + align_offset + align_mask) & ~align_mask) - align_offset
        end = index + nr
        if end > size:
            return end
        i = find_next_bit(chunk, end, index)
        if i < end:
            start = i + 1
            continue
        return index


cdef inline unsigned long bitmap_find_next_zero_area(nm_gen_pool_chunk *chunk,
                                                     unsigned long size, unsigned long start,
                                                     unsigned int nr,
                                                     unsigned long align_mask) noexcept nogil:
    return bitmap_find_next_zero_area_off(chunk, size, start, nr, align_mask, 0)


# ---- the allocation algorithms (genpool_algo_t) -----------------------------------------------

cdef unsigned long gen_pool_first_fit(nm_gen_pool_chunk *chunk, unsigned long size,
                                      unsigned long start, unsigned int nr, void *data,
                                      nm_gen_pool *pool,
                                      unsigned long start_addr) noexcept nogil:
    """Models ``gen_pool_first_fit()``: the first free region, no alignment."""
    return bitmap_find_next_zero_area(chunk, size, start, nr, 0)


cdef unsigned long gen_pool_first_fit_align(nm_gen_pool_chunk *chunk, unsigned long size,
                                            unsigned long start, unsigned int nr, void *data,
                                            nm_gen_pool *pool,
                                            unsigned long start_addr) noexcept nogil:
    """Models ``gen_pool_first_fit_align()``: the first free region whose address is aligned to
    ``genpool_data_align.align`` bytes (the chunk's own start address counted)."""
    cdef genpool_data_align *alignment = <genpool_data_align *>data
    cdef int order = pool.min_alloc_order
    cdef unsigned long align = <unsigned long>alignment.align
    cdef unsigned long align_mask = ((align + (1UL << order) - 1) >> order) - 1
    cdef unsigned long align_off = (start_addr & (align - 1)) >> order
    return bitmap_find_next_zero_area_off(chunk, size, start, nr, align_mask, align_off)


cdef unsigned long gen_pool_fixed_alloc(nm_gen_pool_chunk *chunk, unsigned long size,
                                        unsigned long start, unsigned int nr, void *data,
                                        nm_gen_pool *pool,
                                        unsigned long start_addr) noexcept nogil:
    """Models ``gen_pool_fixed_alloc()``: exactly ``genpool_data_fixed.offset`` bytes into the
    chunk, or nothing. An offset that is not a whole number of units is the kernel's WARN_ON
    (counted here, raised at the Python boundary) and fails."""
    cdef genpool_data_fixed *fixed_data = <genpool_data_fixed *>data
    cdef int order = pool.min_alloc_order
    cdef unsigned long offset_bit = fixed_data.offset >> order
    cdef unsigned long start_bit
    if unlikely(fixed_data.offset & ((1UL << order) - 1)):
        pool.nr_warn_fixed += 1
        return size
    start_bit = bitmap_find_next_zero_area(chunk, size, start + offset_bit, nr, 0)
    if start_bit != offset_bit:
        start_bit = size
    return start_bit


cdef unsigned long gen_pool_first_fit_order_align(nm_gen_pool_chunk *chunk, unsigned long size,
                                                  unsigned long start, unsigned int nr,
                                                  void *data, nm_gen_pool *pool,
                                                  unsigned long start_addr) noexcept nogil:
    """Models ``gen_pool_first_fit_order_align()``: aligned to ``roundup_pow_of_two(nr)``
    units, counted from the chunk's start."""
    cdef unsigned long align_mask = roundup_pow_of_two(nr) - 1
    return bitmap_find_next_zero_area(chunk, size, start, nr, align_mask)


cdef unsigned long gen_pool_best_fit(nm_gen_pool_chunk *chunk, unsigned long size,
                                     unsigned long start, unsigned int nr, void *data,
                                     nm_gen_pool *pool,
                                     unsigned long start_addr) noexcept nogil:
    """Models ``gen_pool_best_fit()``: the smallest free run that fits (the first of those),
    stopping early at an exact fit."""
    cdef unsigned long start_bit = size
    cdef unsigned long best_len = size + 1
    cdef unsigned long index, next_bit
    index = bitmap_find_next_zero_area(chunk, size, start, nr, 0)
    while index < size:
        next_bit = find_next_bit(chunk, size, index + nr)
        if next_bit - index < best_len:
            best_len = next_bit - index
            start_bit = index
            if best_len == nr:
                return start_bit
        index = bitmap_find_next_zero_area(chunk, size, next_bit + 1, nr, 0)
    return start_bit


# ---- pool and chunks ---------------------------------------------------------------------------

cdef nm_gen_pool *nm_gen_pool_create(int min_alloc_order, int nid) noexcept nogil:
    """Models ``gen_pool_create()``: an empty pool with first fit; NULL when out of memory."""
    cdef nm_gen_pool *pool = <nm_gen_pool *>calloc(1, sizeof(nm_gen_pool))
    if pool == NULL:
        return NULL
    pool.min_alloc_order = min_alloc_order
    pool.nid = nid
    pool.algo = gen_pool_first_fit
    pool.data = NULL
    return pool


cdef int nm_gen_pool_add_owner(nm_gen_pool *pool, unsigned long virt, uint64_t phys, size_t size,
                               int nid, void *owner) noexcept nogil:
    """Models ``gen_pool_add_owner()``: a chunk of ``size`` bytes at ``virt`` (``phys``), one bit
    per unit (a partial last unit is not allocatable but counts in size and avail), added at the
    head of the list. Returns 0, -ENOMEM, or -EINVAL for the chunks the model refuses (empty, at
    address 0, wrapping, overlapping another)."""
    cdef nm_gen_pool_chunk *chunk
    cdef nm_gen_pool_chunk *c
    cdef unsigned long nbits = size >> pool.min_alloc_order
    cdef unsigned long n, total = 0
    cdef unsigned long *words
    cdef int k
    if size == 0 or virt == 0 or virt + (size - 1) < virt or nbits > NM_GENPOOL_MAX_BITS:
        return -EINVAL
    c = pool.chunks
    while c != NULL:
        if virt <= c.end_addr and c.start_addr <= virt + (size - 1):
            return -EINVAL
        c = c.next_chunk
    chunk = <nm_gen_pool_chunk *>calloc(1, sizeof(nm_gen_pool_chunk))
    if chunk == NULL:
        return -ENOMEM
    # Level sizes: the bitmap (at least one word), then one bit per word below, up to one word.
    n = (nbits + 63) >> 6 if nbits else 1
    k = 0
    while True:
        chunk.nwords[k] = n
        total += n
        k += 1
        if n == 1:
            break
        n = (n + 63) >> 6
    chunk.nlevels = k
    words = <unsigned long *>calloc(total, sizeof(unsigned long))
    if words == NULL:
        free(chunk)
        return -ENOMEM
    # Keep the bits past the end of every level set: the last word is full when its real bits are.
    for k in range(chunk.nlevels):
        chunk.level[k] = words
        n = nbits if k == 0 else chunk.nwords[k - 1]
        if n & 63 or n == 0:
            words[chunk.nwords[k] - 1] = ~BITMAP_LAST_WORD_MASK(n) if n else ~0UL
        words += chunk.nwords[k]
    chunk.phys_addr = phys
    chunk.start_addr = virt
    chunk.end_addr = virt + size - 1
    chunk.owner = owner
    chunk.nid = nid
    chunk.nbits = nbits
    chunk.avail = <int64_t>size
    chunk.next_chunk = pool.chunks
    pool.chunks = chunk
    pool.nr_chunks += 1
    return 0


cdef unsigned long nm_gen_pool_alloc_algo_owner(nm_gen_pool *pool, size_t size,
                                                genpool_algo_t algo, void *data,
                                                void **owner) noexcept nogil:
    """Models ``gen_pool_alloc_algo_owner()``: the first chunk, newest first, with ``size``
    bytes available and a region the algorithm finds. Returns its address (and the chunk's
    owner), or 0."""
    cdef nm_gen_pool_chunk *chunk = pool.chunks
    cdef int order = pool.min_alloc_order
    cdef unsigned long nbits, start_bit, end_bit
    if owner != NULL:
        owner[0] = NULL
    if size == 0:
        return 0
    nbits = __units(size, order)
    if unlikely(nbits > 0xffffffffUL):
        return 0
    while chunk != NULL:
        if size > <size_t>chunk.avail:
            chunk = chunk.next_chunk
            continue
        end_bit = chunk.nbits
        start_bit = algo(chunk, end_bit, 0, <unsigned int>nbits, data, pool, chunk.start_addr)
        if start_bit >= end_bit:
            chunk = chunk.next_chunk
            continue
        __genpool_set(chunk, start_bit, nbits)
        chunk.avail -= <int64_t>(nbits << order)
        if owner != NULL:
            owner[0] = chunk.owner
        return chunk.start_addr + (start_bit << order)
    return 0


cdef unsigned long nm_gen_pool_alloc_owner(nm_gen_pool *pool, size_t size,
                                           void **owner) noexcept nogil:
    """Models ``gen_pool_alloc_owner()``: with the pool's algorithm and data."""
    return nm_gen_pool_alloc_algo_owner(pool, size, pool.algo, pool.data, owner)


cdef int nm_gen_pool_free_owner(nm_gen_pool *pool, unsigned long addr, size_t size,
                                void **owner) noexcept nogil:
    """Models ``gen_pool_free_owner()``: clear the units of ``[addr, addr + size)`` in the chunk
    holding ``addr`` and hand back its owner. Returns 0, or -EINVAL with nothing changed where
    the kernel would BUG(): no chunk holds ``addr``, the range overruns the chunk, or a unit in
    it is not allocated."""
    cdef nm_gen_pool_chunk *chunk = pool.chunks
    cdef int order = pool.min_alloc_order
    cdef unsigned long start_bit, nbits
    if owner != NULL:
        owner[0] = NULL
    while chunk != NULL:
        if addr >= chunk.start_addr and addr <= chunk.end_addr:
            break
        chunk = chunk.next_chunk
    if chunk == NULL:
        return -EINVAL
    if size > chunk.end_addr - addr + 1:            # BUG_ON(addr + size - 1 > end_addr)
        return -EINVAL
    start_bit = (addr - chunk.start_addr) >> order
    nbits = __units(size, order)
    if nbits:
        if start_bit + nbits > chunk.nbits or not __genpool_all_set(chunk, start_bit, nbits):
            return -EINVAL                          # BUG_ON(remain)
        __genpool_clear(chunk, start_bit, nbits)
        chunk.avail += <int64_t>(nbits << order)
    if owner != NULL:
        owner[0] = chunk.owner
    return 0


cdef uint64_t nm_gen_pool_virt_to_phys(nm_gen_pool *pool, unsigned long addr) noexcept nogil:
    """Models ``gen_pool_virt_to_phys()``: ``(phys_addr_t)-1`` when no chunk holds ``addr``."""
    cdef nm_gen_pool_chunk *chunk = pool.chunks
    while chunk != NULL:
        if addr >= chunk.start_addr and addr <= chunk.end_addr:
            return chunk.phys_addr + (addr - chunk.start_addr)
        chunk = chunk.next_chunk
    return <uint64_t>-1


cdef bint nm_gen_pool_has_addr(nm_gen_pool *pool, unsigned long start, size_t size) noexcept nogil:
    """Models ``gen_pool_has_addr()``: the whole range inside one chunk."""
    cdef nm_gen_pool_chunk *chunk = pool.chunks
    cdef unsigned long end = start + size - 1
    while chunk != NULL:
        if start >= chunk.start_addr and start <= chunk.end_addr:
            if end <= chunk.end_addr:
                return True
        chunk = chunk.next_chunk
    return False


cdef size_t nm_gen_pool_avail(nm_gen_pool *pool) noexcept nogil:
    cdef nm_gen_pool_chunk *chunk = pool.chunks
    cdef size_t avail = 0
    while chunk != NULL:
        avail += <size_t>chunk.avail
        chunk = chunk.next_chunk
    return avail


cdef size_t nm_gen_pool_size(nm_gen_pool *pool) noexcept nogil:
    cdef nm_gen_pool_chunk *chunk = pool.chunks
    cdef size_t size = 0
    while chunk != NULL:
        size += chunk_size(chunk)
        chunk = chunk.next_chunk
    return size


cdef unsigned long __genpool_first_set(nm_gen_pool_chunk *chunk) noexcept nogil:
    """``find_first_bit(chunk->bits, end_bit)``: the bits past the end are not counted."""
    return find_next_bit(chunk, chunk.nbits, 0)


cdef void __genpool_free_chunks(nm_gen_pool *pool) noexcept nogil:
    cdef nm_gen_pool_chunk *chunk = pool.chunks
    cdef nm_gen_pool_chunk *next_chunk
    while chunk != NULL:
        next_chunk = chunk.next_chunk
        free(chunk.level[0])
        free(chunk)
        chunk = next_chunk
    pool.chunks = NULL
    pool.nr_chunks = 0


cdef int nm_gen_pool_destroy(nm_gen_pool *pool) noexcept nogil:
    """Models ``gen_pool_destroy()``: free every chunk and the pool. Returns -EBUSY with nothing
    changed while any unit is allocated (the kernel's BUG_ON)."""
    cdef nm_gen_pool_chunk *chunk = pool.chunks
    while chunk != NULL:
        if __genpool_first_set(chunk) < chunk.nbits:
            return -EBUSY
        chunk = chunk.next_chunk
    __genpool_free_chunks(pool)
    free(pool)
    return 0


cdef int nm_gen_pool_remove_chunk(nm_gen_pool *pool, unsigned long virt,
                                  void **owner) noexcept nogil:
    """Not in the kernel (genalloc never gives a chunk back before ``gen_pool_destroy()``):
    unlink and free the chunk that starts at ``virt``, handing back its owner. -ENOENT when no
    chunk starts there, -EBUSY with nothing changed while any of its units is allocated."""
    cdef nm_gen_pool_chunk **link = &pool.chunks
    cdef nm_gen_pool_chunk *chunk
    while link[0] != NULL and link[0].start_addr != virt:
        link = &link[0].next_chunk
    chunk = link[0]
    if chunk == NULL:
        return -ENOENT
    if __genpool_first_set(chunk) < chunk.nbits:
        return -EBUSY
    link[0] = chunk.next_chunk
    pool.nr_chunks -= 1
    owner[0] = chunk.owner
    free(chunk.level[0])
    free(chunk)
    return 0


# ---- the Python-facing half (netmem.genalloc is the facade) ------------------------------------

cdef class GenPoolAlgo:
    """One of the kernel's allocation algorithms (``genpool_algo_t``), as a handle for
    ``gen_pool_set_algo()`` and ``gen_pool_alloc_algo()``."""

    def __repr__(self):
        return f"<genpool algorithm {self.name}>"


cdef GenPoolAlgo _genpool_algo(genpool_algo_t fn, str name, int data_kind):
    cdef GenPoolAlgo a = GenPoolAlgo.__new__(GenPoolAlgo)
    a.fn = fn
    a.name = name
    a.data_kind = data_kind
    return a


GENPOOL_ALGOS = {
    "gen_pool_first_fit": _genpool_algo(gen_pool_first_fit, "gen_pool_first_fit", 0),
    "gen_pool_first_fit_align": _genpool_algo(gen_pool_first_fit_align,
                                              "gen_pool_first_fit_align", 1),
    "gen_pool_fixed_alloc": _genpool_algo(gen_pool_fixed_alloc, "gen_pool_fixed_alloc", 2),
    "gen_pool_first_fit_order_align": _genpool_algo(gen_pool_first_fit_order_align,
                                                    "gen_pool_first_fit_order_align", 0),
    "gen_pool_best_fit": _genpool_algo(gen_pool_best_fit, "gen_pool_best_fit", 0),
}


cdef class GenPoolDataAlign:
    """``struct genpool_data_align``: ``align``, the alignment in bytes of the start address.
    Departs: it must be a power of two from 1 to 2 ** 30 (the kernel takes any int and computes
    a mask that is not one)."""

    def __cinit__(self, align):
        if not isinstance(align, int) or align <= 0 or align > (1 << 30) \
                or align & (align - 1):
            raise NetmemError(EINVAL, f"genpool_data_align: align {align!r} is not a power of "
                                      "two from 1 to 2**30")
        self.d.align = align

    @property
    def align(self):
        return self.d.align

    def __repr__(self):
        return f"genpool_data_align(align={self.d.align:#x})"


cdef class GenPoolDataFixed:
    """``struct genpool_data_fixed``: ``offset``, in bytes, of the region inside a chunk."""

    def __cinit__(self, offset):
        if not isinstance(offset, int) or offset < 0 or offset >= 1 << 64:
            raise NetmemError(EINVAL, f"genpool_data_fixed: offset {offset!r} is not an "
                                      "unsigned long")
        self.d.offset = offset

    @property
    def offset(self):
        return self.d.offset

    def __repr__(self):
        return f"genpool_data_fixed(offset={self.d.offset:#x})"


cdef void *_genpool_algo_data(GenPoolAlgo algo, object data) except? NULL:
    """The C data pointer for ``algo``; EINVAL when the algorithm needs data of another kind
    (the kernel would dereference whatever it is given)."""
    if algo.data_kind == 1:
        if not isinstance(data, GenPoolDataAlign):
            raise NetmemError(EINVAL, f"{algo.name} needs a genpool_data_align, not {data!r}")
        return &(<GenPoolDataAlign>data).d
    if algo.data_kind == 2:
        if not isinstance(data, GenPoolDataFixed):
            raise NetmemError(EINVAL, f"{algo.name} needs a genpool_data_fixed, not {data!r}")
        return &(<GenPoolDataFixed>data).d
    return NULL


cdef class CoreGenPool:
    """The compiled half of ``netmem.genalloc.GenPool``: one ``nm_gen_pool``. Chunk owners are
    Python objects here; the C chunks point at them and this object keeps them alive."""

    def __cinit__(self, int min_alloc_order, int nid=-1, *args, **kwargs):
        if min_alloc_order < 0 or min_alloc_order > 62:
            raise NetmemError(EINVAL, f"gen_pool_create: min_alloc_order {min_alloc_order} "
                                      "outside 0..62")
        self.pool = nm_gen_pool_create(min_alloc_order, nid)
        if self.pool == NULL:
            raise NetmemError(ENOMEM, "gen_pool_create: out of memory")
        self._owners = []
        self.algo = GENPOOL_ALGOS["gen_pool_first_fit"]
        self.data = None

    def __dealloc__(self):
        if self.pool != NULL:
            __genpool_free_chunks(self.pool)
            free(self.pool)
            self.pool = NULL

    cdef int _check_alive(self) except -1:
        if self.pool == NULL:
            raise NetmemError(EINVAL, "gen_pool: the pool was destroyed")
        return 0

    @property
    def min_alloc_order(self):
        self._check_alive()
        return self.pool.min_alloc_order

    @property
    def nid(self):
        self._check_alive()
        return self.pool.nid

    @property
    def nr_chunks(self):
        return self.pool.nr_chunks if self.pool != NULL else 0

    @property
    def destroyed(self):
        return self.pool == NULL

    def _add_owner(self, virt, phys, size, int nid, object owner):
        cdef int ret
        cdef unsigned long v = _ulong(virt, "gen_pool_add_owner: virt")
        cdef uint64_t p = _ulong(phys, "gen_pool_add_owner: phys")
        cdef size_t s = _ulong(size, "gen_pool_add_owner: size")
        self._check_alive()
        ret = nm_gen_pool_add_owner(self.pool, v, p, s, nid,
                                    <void *>owner if owner is not None else NULL)
        if ret == -ENOMEM:
            raise NetmemError(ENOMEM, f"gen_pool_add_owner: no memory for a chunk of {s} bytes")
        if ret:
            raise NetmemError(EINVAL, f"gen_pool_add_owner: chunk {v:#x}+{s:#x} is empty, at "
                                      "address 0, wraps, or overlaps a chunk of the pool")
        if owner is not None:
            self._owners.append(owner)
        return 0

    def _set_algo(self, object algo, object data):
        self._check_alive()
        if algo is None:
            algo = GENPOOL_ALGOS["gen_pool_first_fit"]
        if not isinstance(algo, GenPoolAlgo):
            raise NetmemError(EINVAL, f"gen_pool_set_algo: {algo!r} is not a genpool algorithm "
                                      "(the model runs the kernel's five, in C)")
        self.pool.data = _genpool_algo_data(algo, data)
        self.pool.algo = (<GenPoolAlgo>algo).fn
        self.algo = algo
        self.data = data

    def _alloc(self, size, object algo=None, object data=None):
        """(address or 0, owner or None, kernel WARNs seen) of one allocation, with ``algo``
        and ``data``, or the pool's when ``algo`` is None."""
        cdef size_t s = _ulong(size, "gen_pool_alloc: size")
        cdef genpool_algo_t fn
        cdef void *d
        cdef void *owner = NULL
        cdef unsigned long addr
        cdef uint64_t warned
        self._check_alive()
        if algo is None:
            fn = self.pool.algo
            d = self.pool.data
        else:
            if not isinstance(algo, GenPoolAlgo):
                raise NetmemError(EINVAL, f"gen_pool_alloc_algo: {algo!r} is not a genpool "
                                          "algorithm")
            d = _genpool_algo_data(algo, data)
            fn = (<GenPoolAlgo>algo).fn
        warned = self.pool.nr_warn_fixed
        addr = nm_gen_pool_alloc_algo_owner(self.pool, s, fn, d, &owner)
        return (addr, <object>owner if owner != NULL else None,
                self.pool.nr_warn_fixed - warned)

    def _free(self, addr, size):
        """The chunk's owner; EINVAL (nothing changed) where the kernel would BUG()."""
        cdef unsigned long a = _ulong(addr, "gen_pool_free: addr")
        cdef size_t s = _ulong(size, "gen_pool_free: size")
        cdef void *owner = NULL
        self._check_alive()
        if nm_gen_pool_free_owner(self.pool, a, s, &owner):
            raise NetmemError(EINVAL, f"gen_pool_free: [{a:#x}, +{s:#x}) is not allocated from "
                                      "one chunk of this pool (the kernel would BUG())")
        return <object>owner if owner != NULL else None

    def _virt_to_phys(self, addr):
        cdef unsigned long a = _ulong(addr, "gen_pool_virt_to_phys: addr")
        self._check_alive()
        return nm_gen_pool_virt_to_phys(self.pool, a)

    def _has_addr(self, start, size):
        cdef unsigned long a = _ulong(start, "gen_pool_has_addr: start")
        cdef size_t s = _ulong(size, "gen_pool_has_addr: size")
        self._check_alive()
        return nm_gen_pool_has_addr(self.pool, a, s)

    def _avail(self):
        self._check_alive()
        return nm_gen_pool_avail(self.pool)

    def _size(self):
        self._check_alive()
        return nm_gen_pool_size(self.pool)

    def _chunks(self):
        """(start_addr, end_addr, phys_addr, owner, avail, nbits, bits) per chunk, newest first;
        ``bits`` is a copy of the bitmap as uint64 words (the bits past the end cleared)."""
        cdef nm_gen_pool_chunk *chunk
        cdef cnp.ndarray bits
        cdef uint64_t *dst
        cdef unsigned long i, n
        self._check_alive()
        out = []
        chunk = self.pool.chunks
        while chunk != NULL:
            n = (chunk.nbits + 63) >> 6
            bits = _np.zeros(n, dtype=_np.uint64)
            dst = <uint64_t *>cnp.PyArray_DATA(bits)
            for i in range(n):
                dst[i] = chunk.level[0][i]
            if chunk.nbits & 63:
                dst[n - 1] &= BITMAP_LAST_WORD_MASK(chunk.nbits)
            out.append((chunk.start_addr, chunk.end_addr, chunk.phys_addr,
                        <object>chunk.owner if chunk.owner != NULL else None,
                        chunk.avail, chunk.nbits, bits))
            chunk = chunk.next_chunk
        return out

    def _remove_chunk(self, virt):
        """The removed chunk's owner; ENOENT or EBUSY (nothing changed) as the C call says."""
        cdef unsigned long v = _ulong(virt, "gen_pool_remove_chunk: virt")
        cdef void *owner = NULL
        cdef int ret
        self._check_alive()
        ret = nm_gen_pool_remove_chunk(self.pool, v, &owner)
        if ret == -ENOENT:
            raise NetmemError(ENOENT, f"gen_pool_remove_chunk: no chunk starts at {v:#x}")
        if ret:
            raise NetmemError(EBUSY, f"gen_pool_remove_chunk: the chunk at {v:#x} has "
                                     "allocations out")
        if owner == NULL:
            return None
        found = <object>owner
        del self._owners[next(i for i, o in enumerate(self._owners) if o is found)]
        return found

    def _destroy(self):
        self._check_alive()
        if nm_gen_pool_destroy(self.pool):
            raise NetmemError(EBUSY, "gen_pool_destroy: allocations are outstanding (the kernel "
                                     "would BUG_ON)")
        self.pool = NULL
        self._owners = []
        self.data = None

    def _check_summary(self):
        """Debug check: every summary bit matches the level below, and the bits past the end of
        every level are set (the search relies on both never to leave a level)."""
        cdef nm_gen_pool_chunk *chunk
        cdef unsigned long w, want, got, n, pad
        cdef int k
        self._check_alive()
        chunk = self.pool.chunks
        while chunk != NULL:
            if chunk.first_zero > chunk.nbits:
                raise AssertionError(f"genalloc first_zero {chunk.first_zero} > {chunk.nbits}")
            for w in range(chunk.first_zero):
                if not (chunk.level[0][w >> 6] >> (w & 63)) & 1:
                    raise AssertionError(f"genalloc first_zero {chunk.first_zero}: bit {w} is "
                                         "clear")
            for k in range(chunk.nlevels):
                n = chunk.nbits if k == 0 else chunk.nwords[k - 1]
                pad = ~BITMAP_LAST_WORD_MASK(n) if n & 63 else (0 if n else ~0UL)
                if (chunk.level[k][chunk.nwords[k] - 1] & pad) != pad:
                    raise AssertionError(f"genalloc level {k}: bits past the end are not set")
            for k in range(1, chunk.nlevels):
                for w in range(chunk.nwords[k - 1]):
                    want = chunk.level[k - 1][w] == ~0UL
                    got = (chunk.level[k][w >> 6] >> (w & 63)) & 1
                    if want != got:
                        raise AssertionError(f"genalloc summary level {k} bit {w}: {got}, "
                                             f"want {want}")
            chunk = chunk.next_chunk
