"""Tests of ``netmem.genalloc`` against lib/genalloc.c and lib/bitmap.c.

Scripted sequences with the exact address each algorithm returns, worked out by hand from the
kernel: chunks searched newest first and skipped on ``avail``, ``bitmap_find_next_zero_area()``
with its align mask and offset (``gen_pool_first_fit_align`` counts the chunk's start address,
``gen_pool_first_fit_order_align`` aligns to ``roundup_pow_of_two(nr)`` units), best fit's
smallest fitting run, fixed offsets; owners, ``virt_to_phys``, ``has_addr``, ``avail``/``size``
with a partial last unit; bad frees and a busy destroy that raise and change nothing. Then a
differential test against the pure-Python reference model (``reference/genalloc_model.py``) over
seeded random sequences with several ``min_alloc_order`` values and chunk layouts, and a
Hypothesis test that allocations never overlap and that ``avail + allocated == size``.
"""
import errno
import itertools
import random

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from reference.genalloc_model import ALGOS, RefGenPool

from netmem import NetmemError, NetmemWarning
from netmem.genalloc import (
    gen_pool_add,
    gen_pool_add_owner,
    gen_pool_add_virt,
    gen_pool_alloc,
    gen_pool_alloc_algo,
    gen_pool_alloc_algo_owner,
    gen_pool_alloc_owner,
    gen_pool_avail,
    gen_pool_best_fit,
    gen_pool_create,
    gen_pool_destroy,
    gen_pool_first_fit,
    gen_pool_first_fit_align,
    gen_pool_first_fit_order_align,
    gen_pool_fixed_alloc,
    gen_pool_for_each_chunk,
    gen_pool_free,
    gen_pool_free_owner,
    gen_pool_has_addr,
    gen_pool_remove_chunk,
    gen_pool_set_algo,
    gen_pool_size,
    gen_pool_virt_to_phys,
    genpool_data_align,
    genpool_data_fixed,
)

KiB = 1 << 10
MiB = 1 << 20
U = 4096                                # the unit of the order-12 pools below
BASE = 0x100000


def pool_with(order=12, chunks=((BASE, 16 * U),)):
    """A pool with chunks added in order (so the last one is searched first)."""
    pool = gen_pool_create(order)
    for virt, size in chunks:
        assert gen_pool_add(pool, virt, size) == 0
    return pool


def chunks_of(pool):
    out = []
    gen_pool_for_each_chunk(pool, lambda p, c, data: data.append(c), out)
    return out


def state(pool):
    """Everything a refused call must leave as it was."""
    return (gen_pool_avail(pool), gen_pool_size(pool),
            [(c.start_addr, c.avail, c.bits.tobytes()) for c in chunks_of(pool)])


def bits_of(pool, i=0):
    """The allocated units of chunk ``i`` (newest first) as a string of 0/1, unit 0 first."""
    c = chunks_of(pool)[i]
    return "".join(str((int(c.bits[b >> 6]) >> (b & 63)) & 1) for b in range(c.nbits))


# ---- first fit, chunks, avail ------------------------------------------------------------------

def test_first_fit_takes_the_first_hole_that_fits():
    pool = pool_with()
    assert gen_pool_alloc(pool, U) == BASE
    assert gen_pool_alloc(pool, 2 * U) == BASE + U
    assert gen_pool_alloc(pool, 1) == BASE + 3 * U        # rounded up to one unit
    gen_pool_free(pool, BASE + U, 2 * U)
    assert gen_pool_alloc(pool, U) == BASE + U            # the hole at unit 1
    assert gen_pool_alloc(pool, 3 * U) == BASE + 4 * U    # unit 2 alone is too small
    assert gen_pool_alloc(pool, U) == BASE + 2 * U
    assert bits_of(pool) == "1111111" + "0" * 9
    assert gen_pool_avail(pool) == 9 * U and gen_pool_size(pool) == 16 * U
    pool._check_summary()


def test_size_zero_allocates_nothing():
    pool = pool_with()
    assert gen_pool_alloc(pool, 0) == 0
    assert gen_pool_avail(pool) == 16 * U


def test_newest_chunk_is_searched_first():
    a, b = 0x100000, 0x200000
    pool = pool_with(chunks=((a, 4 * U), (b, 4 * U)))
    assert [c.start_addr for c in chunks_of(pool)] == [b, a]
    assert [gen_pool_alloc(pool, U) for _ in range(5)] == [b, b + U, b + 2 * U, b + 3 * U, a]


def test_chunk_with_too_little_avail_is_skipped_unsearched():
    a, b = 0x100000, 0x200000
    pool = pool_with(chunks=((a, 8 * U), (b, 4 * U)))
    assert gen_pool_alloc(pool, 3 * U) == b
    assert gen_pool_alloc(pool, 2 * U) == a               # b has 1 unit (4 KiB) avail
    assert gen_pool_alloc(pool, U) == b + 3 * U


def test_a_partial_last_unit_counts_in_size_and_avail_but_is_never_handed_out():
    pool = pool_with(chunks=((BASE, U + 904),))           # 5000 bytes: one unit
    c = chunks_of(pool)[0]
    assert (c.nbits, c.size, c.end_addr) == (1, 5000, BASE + 4999)
    assert gen_pool_size(pool) == gen_pool_avail(pool) == 5000
    assert gen_pool_alloc(pool, U) == BASE
    assert gen_pool_avail(pool) == 904
    assert gen_pool_alloc(pool, 100) == 0                 # 100 <= avail, but no unit is free
    with pytest.raises(NetmemError) as e:
        gen_pool_free(pool, BASE + U, 100)                # inside the chunk, past its bitmap
    assert e.value.errno == errno.EINVAL
    gen_pool_free(pool, BASE, U)
    assert gen_pool_avail(pool) == 5000


def test_a_chunk_smaller_than_a_unit_holds_nothing():
    pool = pool_with(chunks=((BASE, 100),))
    assert chunks_of(pool)[0].nbits == 0
    assert gen_pool_alloc(pool, 50) == 0
    assert gen_pool_avail(pool) == 100


def test_order_zero_units_are_bytes():
    pool = pool_with(order=0, chunks=((0x1000, 256),))
    assert gen_pool_alloc(pool, 10) == 0x1000
    assert gen_pool_alloc(pool, 100) == 0x100a
    assert gen_pool_alloc(pool, 147) == 0                 # 146 bytes left
    assert gen_pool_alloc(pool, 146) == 0x106e
    assert gen_pool_alloc(pool, 1) == 0
    gen_pool_free(pool, 0x1000, 10)
    assert gen_pool_alloc(pool, 11) == 0
    assert gen_pool_alloc(pool, 10) == 0x1000


def test_free_rounds_up_to_whole_units_and_may_split_an_allocation():
    pool = pool_with()
    assert gen_pool_alloc(pool, 8 * U) == BASE
    gen_pool_free(pool, BASE + 2 * U + 100, U + 1)        # units 2 and 3 (start floors)
    assert bits_of(pool) == "11001111" + "0" * 8
    assert gen_pool_avail(pool) == 10 * U
    assert gen_pool_alloc(pool, 2 * U) == BASE + 2 * U


def test_summary_levels_make_a_prefix_cheap_and_stay_exact():
    # 2**20 units of 1 byte: 16384 words, then 256, 4 and 1 summary words.
    pool = pool_with(order=0, chunks=((BASE, MiB),))
    for i in range(300_000 // 4096):
        assert gen_pool_alloc(pool, 4096) == BASE + i * 4096
    n = 300_000 // 4096 * 4096
    assert gen_pool_alloc(pool, 1) == BASE + n
    gen_pool_free(pool, BASE + 12345, 1)
    assert gen_pool_alloc(pool, 1) == BASE + 12345
    assert gen_pool_alloc(pool, 2) == BASE + n + 1
    assert gen_pool_alloc(pool, MiB - n - 3) == BASE + n + 3
    assert gen_pool_avail(pool) == 0 and gen_pool_alloc(pool, 1) == 0
    pool._check_summary()
    gen_pool_free(pool, BASE, MiB)
    assert gen_pool_avail(pool) == MiB
    pool._check_summary()
    gen_pool_destroy(pool)


# ---- the other algorithms ----------------------------------------------------------------------

def test_first_fit_align_counts_the_chunk_start():
    start = 0x101000                                      # 4 KiB past a 16 KiB boundary
    pool = pool_with(chunks=((start, 16 * U),))
    assert gen_pool_alloc(pool, U) == start
    a16 = genpool_data_align(0x4000)
    # align_mask 3, align_off (0x101000 & 0x3fff) >> 12 = 1: units 3, 7, ...
    assert gen_pool_alloc_algo(pool, U, gen_pool_first_fit_align, a16) == 0x104000
    assert gen_pool_alloc_algo(pool, 2 * U, gen_pool_first_fit_align, a16) == 0x108000
    assert gen_pool_alloc_algo(pool, U, gen_pool_first_fit, None) == 0x102000
    # Alignment below the unit is plain first fit.
    assert gen_pool_alloc_algo(pool, U, gen_pool_first_fit_align,
                               genpool_data_align(0x100)) == 0x103000


def test_first_fit_align_in_a_chunk_starting_inside_a_unit():
    # The kernel's align_off floors (0x100800 & 0x1fff) >> 12 to 0: the address it returns is
    # 0x100800, not 8 KiB aligned.
    start = 0x100800
    pool = pool_with(chunks=((start, 8 * U),))
    a8 = genpool_data_align(0x2000)
    assert gen_pool_alloc_algo(pool, U, gen_pool_first_fit_align, a8) == start
    assert gen_pool_alloc_algo(pool, U, gen_pool_first_fit_align, a8) == start + 2 * U


def test_first_fit_order_align_aligns_to_the_rounded_up_power_of_two():
    pool = pool_with()
    assert gen_pool_alloc(pool, U) == BASE
    gen_pool_set_algo(pool, gen_pool_first_fit_order_align)
    assert gen_pool_alloc(pool, 3 * U) == BASE + 4 * U    # 4-unit aligned
    assert gen_pool_alloc(pool, 2 * U) == BASE + 2 * U    # 2-unit aligned
    assert gen_pool_alloc(pool, U) == BASE + U
    assert gen_pool_alloc(pool, 5 * U) == BASE + 8 * U    # 8-unit aligned
    assert bits_of(pool) == "1111111" + "0" + "11111" + "000"
    assert gen_pool_alloc(pool, 3 * U) == 0               # 13..15 are free, but 12 is taken
    assert gen_pool_alloc(pool, 2 * U) == BASE + 14 * U
    assert gen_pool_alloc(pool, U) == BASE + 7 * U


def test_best_fit_takes_the_smallest_run_that_fits_the_first_of_equals():
    pool = pool_with()
    for i in range(16):
        assert gen_pool_alloc(pool, U) == BASE + i * U
    for first, n in ((1, 3), (5, 2), (8, 4), (13, 2)):   # free runs of 3, 2, 4 and 2 units
        gen_pool_free(pool, BASE + first * U, n * U)
    gen_pool_set_algo(pool, gen_pool_best_fit)
    assert gen_pool_alloc(pool, 2 * U) == BASE + 5 * U    # exact fit, the first of two
    assert gen_pool_alloc(pool, U) == BASE + 13 * U       # smallest run left: 2 units at 13
    assert gen_pool_alloc(pool, 3 * U) == BASE + U        # exact fit at 1
    assert gen_pool_alloc(pool, U) == BASE + 14 * U       # the 1-unit rest at 14
    assert gen_pool_alloc(pool, 2 * U) == BASE + 8 * U    # only the 4-unit run is left
    assert gen_pool_alloc(pool, 3 * U) == 0
    assert gen_pool_alloc_algo(pool, U, gen_pool_first_fit) == BASE + 10 * U


def test_fixed_alloc_takes_exactly_the_offset_in_each_chunk_newest_first():
    a, b = 0x100000, 0x200000
    pool = pool_with(chunks=((a, 8 * U), (b, 8 * U)))
    at3 = genpool_data_fixed(3 * U)
    assert gen_pool_alloc_algo(pool, U, gen_pool_fixed_alloc, at3) == b + 3 * U
    assert gen_pool_alloc_algo(pool, 2 * U, gen_pool_fixed_alloc, at3) == a + 3 * U
    assert gen_pool_alloc_algo(pool, U, gen_pool_fixed_alloc, at3) == 0
    at7 = genpool_data_fixed(7 * U)
    assert gen_pool_alloc_algo(pool, 2 * U, gen_pool_fixed_alloc, at7) == 0   # past the end
    assert gen_pool_alloc_algo(pool, U, gen_pool_fixed_alloc, at7) == b + 7 * U
    far = genpool_data_fixed(1 << 40)
    assert gen_pool_alloc_algo(pool, U, gen_pool_fixed_alloc, far) == 0


def test_fixed_alloc_at_an_unaligned_offset_warns_and_fails():
    pool = pool_with()
    with pytest.warns(NetmemWarning, match="WARN_ON.*offset 0x800"):
        assert gen_pool_alloc_algo(pool, U, gen_pool_fixed_alloc,
                                   genpool_data_fixed(0x800)) == 0
    assert gen_pool_avail(pool) == 16 * U


def test_set_algo_keeps_its_data_and_none_means_first_fit():
    pool = pool_with()
    gen_pool_set_algo(pool, gen_pool_fixed_alloc, genpool_data_fixed(5 * U))
    assert pool.algo is gen_pool_fixed_alloc and pool.data.offset == 5 * U
    assert gen_pool_alloc(pool, U) == BASE + 5 * U
    assert gen_pool_alloc(pool, U) == 0
    gen_pool_set_algo(pool, None)
    assert pool.algo is gen_pool_first_fit and pool.data is None
    assert gen_pool_alloc(pool, U) == BASE


def test_algorithms_refuse_missing_or_wrong_data():
    pool = pool_with()
    before = state(pool)
    for algo, data in ((gen_pool_first_fit_align, None),
                       (gen_pool_first_fit_align, genpool_data_fixed(0)),
                       (gen_pool_fixed_alloc, genpool_data_align(8)),
                       ("gen_pool_first_fit", None), (len, None)):
        with pytest.raises(NetmemError) as e:
            gen_pool_alloc_algo(pool, U, algo, data)
        assert e.value.errno == errno.EINVAL
        with pytest.raises(NetmemError):
            gen_pool_set_algo(pool, algo, data)
    assert pool.algo is gen_pool_first_fit and state(pool) == before
    for bad in (0, -4, 3, 0x3000, 1 << 31, 1.5):
        with pytest.raises(NetmemError):
            genpool_data_align(bad)
    with pytest.raises(NetmemError):
        genpool_data_fixed(-1)


# ---- owners, addresses -------------------------------------------------------------------------

def test_owners_come_back_from_alloc_and_free():
    a, b = object(), {"bar": 2}
    pool = gen_pool_create(12)
    gen_pool_add_owner(pool, 0x100000, 0xf0000000, 4 * U, -1, a)
    gen_pool_add_owner(pool, 0x200000, 0xf8000000, 4 * U, 0, b)
    gen_pool_add_virt(pool, 0x300000, 0xfc000000, U)
    assert gen_pool_alloc_owner(pool, U) == (0x300000, None)
    assert gen_pool_alloc_owner(pool, 2 * U) == (0x200000, b)
    assert gen_pool_alloc_algo_owner(pool, 3 * U, gen_pool_first_fit) == (0x100000, a)
    assert gen_pool_alloc_owner(pool, 3 * U) == (0, None)
    assert gen_pool_free_owner(pool, 0x100000, 3 * U) is a
    assert gen_pool_free_owner(pool, 0x200000 + U, U) is b
    assert gen_pool_free_owner(pool, 0x300000, U) is None
    assert [c.owner for c in chunks_of(pool)] == [None, b, a]


def test_virt_to_phys_and_has_addr():
    pool = gen_pool_create(12)
    gen_pool_add_virt(pool, 0x100000, 0xf0000000, 4 * U)
    gen_pool_add_virt(pool, 0x104000, 0xe0000000, 4 * U)  # adjacent, not contiguous in phys
    gen_pool_add(pool, 0x200000, 2 * U)                   # phys (phys_addr_t)-1
    assert gen_pool_virt_to_phys(pool, 0x100000) == 0xf0000000
    assert gen_pool_virt_to_phys(pool, 0x103fff) == 0xf0003fff
    assert gen_pool_virt_to_phys(pool, 0x104010) == 0xe0000010
    assert gen_pool_virt_to_phys(pool, 0x108000) == -1
    assert gen_pool_virt_to_phys(pool, 0x200000) == -1    # -1 + 0: the kernel's own -1
    assert gen_pool_virt_to_phys(pool, 0x201000) == 0xfff # -1 + 0x1000 wraps, as in the kernel
    assert gen_pool_has_addr(pool, 0x100000, 4 * U)
    assert gen_pool_has_addr(pool, 0x105000, 3 * U)
    assert not gen_pool_has_addr(pool, 0x103000, 2 * U)   # spans two chunks
    assert not gen_pool_has_addr(pool, 0xff000, 2 * U)
    assert not gen_pool_has_addr(pool, 0x202000, 1)


# ---- refusals ----------------------------------------------------------------------------------

@pytest.mark.parametrize(("virt", "size"), [
    (BASE, 0),                              # empty
    (0, 16 * U),                            # address 0 would read as failure
    ((1 << 64) - U, 2 * U),                 # wraps the address space
    (BASE + 15 * U, U),                     # overlaps the existing chunk's last unit
    (BASE - U, 2 * U),                      # overlaps its first unit
    (-U, U),
])
def test_add_refuses_bad_chunks(virt, size):
    pool = pool_with()
    before = state(pool)
    with pytest.raises(NetmemError) as e:
        gen_pool_add(pool, virt, size)
    assert e.value.errno == errno.EINVAL
    assert state(pool) == before and pool.nr_chunks == 1


def test_bad_frees_raise_einval_and_change_nothing():
    a, b = 0x100000, 0x200000
    pool = pool_with(chunks=((a, 8 * U), (b, 8 * U)))
    assert gen_pool_alloc(pool, 4 * U) == b
    assert gen_pool_alloc(pool, 8 * U) == a
    gen_pool_free(pool, b + U, U)
    before = state(pool)
    for addr, size in ((0x300000, U),             # outside every chunk
                       (a - 1, 2),                # just before a chunk
                       (b + 7 * U, 2 * U),        # overruns the chunk
                       (a, 9 * U),
                       (b + U, U),                # already free (double free)
                       (b, 2 * U),                # half of it free
                       (b + 4 * U, U),            # never allocated
                       (b + 2 * U, 1 << 63)):     # absurd size
        with pytest.raises(NetmemError) as e:
            gen_pool_free(pool, addr, size)
        assert e.value.errno == errno.EINVAL, (hex(addr), size)
        assert state(pool) == before
    pool._check_summary()


def test_free_of_zero_bytes_inside_a_chunk_is_a_no_op():
    pool = pool_with()
    gen_pool_free(pool, BASE + 3 * U, 0)
    assert gen_pool_avail(pool) == 16 * U


def test_negative_or_huge_arguments_are_einval():
    pool = pool_with()
    for call in (lambda: gen_pool_alloc(pool, -1), lambda: gen_pool_free(pool, -1, U),
                 lambda: gen_pool_free(pool, BASE, 1 << 64),
                 lambda: gen_pool_has_addr(pool, BASE, -1), lambda: gen_pool_alloc(pool, "4k")):
        with pytest.raises(NetmemError) as e:
            call()
        assert e.value.errno == errno.EINVAL
    assert gen_pool_alloc(pool, (1 << 64) - 1) == 0
    assert gen_pool_alloc(pool, np.uint64(U)) == BASE
    with pytest.raises(NetmemError):
        gen_pool_create(-1)
    with pytest.raises(NetmemError):
        gen_pool_create(63)


def test_destroy_with_allocations_out_raises_and_keeps_the_pool():
    pool = pool_with(chunks=((0x100000, 4 * U), (0x200000, 4 * U)))
    addr = gen_pool_alloc_algo(pool, U, gen_pool_fixed_alloc, genpool_data_fixed(3 * U))
    assert addr == 0x200000 + 3 * U
    before = state(pool)
    with pytest.raises(NetmemError) as e:
        gen_pool_destroy(pool)
    assert e.value.errno == errno.EBUSY
    assert state(pool) == before and gen_pool_alloc(pool, U) == 0x200000
    gen_pool_free(pool, 0x200000, U)
    gen_pool_free(pool, addr, U)
    gen_pool_destroy(pool)
    assert pool.destroyed and "destroyed" in repr(pool)
    for call in (lambda: gen_pool_alloc(pool, U), lambda: gen_pool_avail(pool),
                 lambda: gen_pool_add(pool, BASE, U), lambda: gen_pool_destroy(pool)):
        with pytest.raises(NetmemError) as e:
            call()
        assert e.value.errno == errno.EINVAL


def test_remove_chunk_gives_a_range_back_only_when_it_is_all_free():
    """Not a kernel call: the p2pdma provider's resource removal needs it."""
    owner = object()
    pool = gen_pool_create(12)
    gen_pool_add_owner(pool, 0x100000, 0xf0000000, 4 * U, -1, owner)
    gen_pool_add(pool, 0x200000, 4 * U)
    addr = gen_pool_alloc_algo(pool, U, gen_pool_fixed_alloc, genpool_data_fixed(0))
    assert addr == 0x200000
    before = state(pool)
    for virt, code in ((0x100000 + U, errno.ENOENT), (0x200000, errno.EBUSY)):
        with pytest.raises(NetmemError) as e:
            gen_pool_remove_chunk(pool, virt)
        assert e.value.errno == code
    assert state(pool) == before
    assert gen_pool_remove_chunk(pool, 0x100000) is owner
    assert (pool.nr_chunks, gen_pool_size(pool), gen_pool_virt_to_phys(pool, 0x100000)) == \
        (1, 4 * U, -1)
    gen_pool_add(pool, 0x100000, 8 * U)                 # the range can be added again
    gen_pool_free(pool, addr, U)
    assert gen_pool_remove_chunk(pool, 0x200000) is None
    assert [c.start_addr for c in chunks_of(pool)] == [0x100000]
    gen_pool_destroy(pool)


def test_repr_and_chunk_snapshot():
    pool = pool_with(chunks=((BASE, 70 * U),))
    gen_pool_alloc(pool, 65 * U)
    assert repr(pool) == ("<GenPool order 12, 1 chunk(s), 20480/286720 bytes free, "
                          "gen_pool_first_fit>")
    (c,) = chunks_of(pool)
    assert c.bits.dtype == np.uint64 and list(c.bits) == [2**64 - 1, 1]
    assert (c.nbits, c.avail, c.phys_addr) == (70, 5 * U, 2**64 - 1)


# ---- differential: the C core against the reference model --------------------------------------

LAYOUTS = {
    # name: (min_alloc_order, [(virt, size) in the order they are added])
    "one_chunk_bytes": (0, [(0x1000, 777)]),
    "order3_three_chunks": (3, [(0x10000, 1000 * 8), (0x30000, 64 * 8), (0x20000, 130 * 8 + 5)]),
    "order5_unaligned_starts": (5, [(0x40010, 300 * 32 + 7), (0x50000 + 48, 4097 * 32)]),
    "pages_multi_level": (12, [(1 << 40, 5000 * U), (1 << 41, 70 * U + 100)]),
    "order6_big": (6, [(0x7000_0000, 300_000 * 64)]),
}
UNITS = {"one_chunk_bytes": 1, "order3_three_chunks": 8, "order5_unaligned_starts": 32,
         "pages_multi_level": U, "order6_big": 64}


class DiffRun:
    def __init__(self, layout, seed):
        order, chunks = LAYOUTS[layout]
        self.rng = random.Random(seed)
        self.unit = 1 << order
        self.pool = gen_pool_create(order)
        self.ref = RefGenPool(order)
        self.owners = []
        for virt, size in chunks:
            owner = object()
            self.owners.append(owner)
            assert gen_pool_add_owner(self.pool, virt, virt ^ 0xabc000, size, -1, owner) == 0
            self.ref.add_owner(virt, virt ^ 0xabc000, size, owner)
        self.total = sum(c.nunits for c in self.ref.chunks)
        self.events = {"alloc_ok": 0, "alloc_fail": 0, "free_ok": 0, "bad_free": 0}

    def random_size(self):
        r = self.rng.random()
        units = 1 if r < 0.35 else self.rng.randint(1, 8) if r < 0.8 else \
            self.rng.randint(1, max(1, self.total // 6))
        return units * self.unit - self.rng.randrange(self.unit)

    def random_data(self, algo):
        if algo == "gen_pool_first_fit_align":
            return genpool_data_align(1 << self.rng.randint(0, 18))
        if algo == "gen_pool_fixed_alloc":
            c = self.rng.choice(self.ref.chunks)
            return genpool_data_fixed(self.rng.randrange(max(1, c.nunits)) * self.unit)
        return None

    def alloc(self):
        name = self.rng.choice(ALGOS)
        algo = {"gen_pool_first_fit": gen_pool_first_fit,
                "gen_pool_first_fit_align": gen_pool_first_fit_align,
                "gen_pool_first_fit_order_align": gen_pool_first_fit_order_align,
                "gen_pool_best_fit": gen_pool_best_fit,
                "gen_pool_fixed_alloc": gen_pool_fixed_alloc}[name]
        data, size = self.random_data(name), self.random_size()
        got = gen_pool_alloc_algo_owner(self.pool, size, algo, data)
        want = self.ref.alloc(size, name, data)
        assert got[0] == want[0] and got[1] is want[1], (name, data, size, got, want)
        self.events["alloc_ok" if got[0] else "alloc_fail"] += 1

    def free(self):
        runs = self.ref.allocated_runs()
        if not runs:
            return
        addr, length = self.rng.choice(runs)
        first = self.rng.randrange(length // self.unit)
        n = self.rng.randint(1, length // self.unit - first)
        size = n * self.unit - self.rng.randrange(self.unit)
        assert gen_pool_free_owner(self.pool, addr + first * self.unit, size) is \
            self.ref.free(addr + first * self.unit, size)
        self.events["free_ok"] += 1

    def bad_free(self):
        c = self.rng.choice(self.ref.chunks)
        addr = c.start + self.rng.randrange(-self.unit, c.end - c.start + 2 * self.unit)
        size = self.rng.randint(0, 4 * self.unit)
        try:
            want = ("ok", self.ref.free(addr, size))
        except NetmemError as e:
            want = ("err", e.errno)
        try:
            got = ("ok", gen_pool_free_owner(self.pool, addr, size))
        except NetmemError as e:
            got = ("err", e.errno)
        assert got[0] == want[0] and (got[1] is want[1] or got[1] == want[1]), (addr, size)
        self.events["bad_free" if got[0] == "err" else "free_ok"] += 1

    def compare(self, bitmaps):
        assert gen_pool_avail(self.pool) == self.ref.avail()
        assert gen_pool_size(self.pool) == self.ref.size()
        if bitmaps:
            chunks = chunks_of(self.pool)
            assert [c.start_addr for c in chunks] == [c.start for c in self.ref.chunks]
            for c, rc in zip(chunks, self.ref.chunks, strict=True):
                assert c.avail == rc.avail and c.nbits == rc.nunits
                assert np.array_equal(c.bits, rc.words())
            self.pool._check_summary()

    def queries(self):
        c = self.rng.choice(self.ref.chunks)
        addr = c.start + self.rng.randrange(-8, c.end - c.start + 8)
        size = self.rng.randint(1, 3 * self.unit)
        assert gen_pool_virt_to_phys(self.pool, addr) == self.ref.virt_to_phys(addr)
        assert gen_pool_has_addr(self.pool, addr, size) == self.ref.has_addr(addr, size)


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
@pytest.mark.parametrize("seed", range(6))
def test_differential_against_reference(layout, seed):
    run = DiffRun(layout, seed * 7919 + len(layout))
    nr_ops = 300 if layout != "order6_big" else 120
    for i in range(nr_ops):
        op = run.rng.choices(("alloc", "free", "bad_free", "queries"), (6, 4, 1, 1))[0]
        getattr(run, op)()
        run.compare(bitmaps=i % 25 == 0)
    run.compare(bitmaps=True)
    assert run.events["alloc_ok"] and run.events["alloc_fail"] and run.events["free_ok"] \
        and run.events["bad_free"], run.events
    for addr, length in run.ref.allocated_runs():
        gen_pool_free(run.pool, addr, length)
        run.ref.free(addr, length)
    run.compare(bitmaps=True)
    gen_pool_destroy(run.pool)
    run.ref.destroy()


# ---- Hypothesis: no overlap, accounting --------------------------------------------------------

ALGO_CHOICES = (gen_pool_first_fit, gen_pool_first_fit_align, gen_pool_first_fit_order_align,
                gen_pool_best_fit, gen_pool_fixed_alloc)

op_strategy = st.one_of(
    st.tuples(st.just("alloc"), st.integers(0, 4), st.integers(1, 40 * 64),
              st.integers(0, 12), st.integers(0, 80)),
    st.tuples(st.just("free"), st.integers(0, 1000)),
)


@settings(max_examples=150, deadline=None)
@given(order=st.integers(0, 6), sizes=st.lists(st.integers(1, 3000), min_size=1, max_size=4),
       ops=st.lists(op_strategy, max_size=60))
def test_allocations_never_overlap_and_avail_plus_allocated_is_size(order, sizes, ops):
    unit = 1 << order
    pool = gen_pool_create(order)
    virt = 0x10000
    for n in sizes:
        gen_pool_add(pool, virt, n * unit + n % 3)
        virt += (n + 7) * unit
    live = {}                                             # addr -> rounded bytes
    for op in ops:
        if op[0] == "alloc":
            _, ai, nbytes, align_log, fixed_unit = op
            algo = ALGO_CHOICES[ai]
            data = (genpool_data_align(1 << align_log) if algo is gen_pool_first_fit_align
                    else genpool_data_fixed(fixed_unit * unit) if algo is gen_pool_fixed_alloc
                    else None)
            addr = gen_pool_alloc_algo(pool, nbytes, algo, data)
            if addr:
                assert addr not in live
                live[addr] = -(-nbytes // unit) * unit
        elif live:
            addr = sorted(live)[op[1] % len(live)]
            gen_pool_free(pool, addr, live.pop(addr))
        spans = sorted(live.items())
        for (a, n), (b, _) in itertools.pairwise(spans):
            assert a + n <= b, "allocations overlap"
        assert all(gen_pool_has_addr(pool, a, n) for a, n in spans)
        assert gen_pool_avail(pool) + sum(live.values()) == gen_pool_size(pool)
    pool._check_summary()
    for addr, n in live.items():
        gen_pool_free(pool, addr, n)
    gen_pool_destroy(pool)
