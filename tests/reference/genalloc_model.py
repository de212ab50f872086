"""A pure-Python reference model of the kernel's genalloc, the oracle of the differential tests.

Written from what lib/genalloc.c and lib/bitmap.c promise, not from netmem's C: each chunk keeps
one byte per unit (0 free, 1 allocated) and every search is a plain linear scan of those bytes
(``bytes.find`` for a run of free units, a regular expression for best fit's free runs). What it
models: chunks searched newest first, skipped when their ``avail`` (bytes, a partial last unit
included) is below the request; the request rounded up to whole units; the five algorithms by
their definitions, in particular the kernel's alignment arithmetic (``first_fit_align`` aligns
``unit index + phase`` to ``ceil(align / unit)`` units, the phase taken from the chunk's start
address, so a chunk that starts inside a unit is aligned as the kernel does it); frees checked
as the kernel's BUG()s would check them; destroy only when nothing is allocated. It departs from
the kernel where netmem does on purpose, raising ``NetmemError`` instead of BUG(), refusing empty,
zero-address, wrapping and overlapping chunks.
"""
import errno
import re

import numpy as np

from netmem.errors import NetmemError

FIRST_FIT = "gen_pool_first_fit"
FIRST_FIT_ALIGN = "gen_pool_first_fit_align"
ORDER_ALIGN = "gen_pool_first_fit_order_align"
BEST_FIT = "gen_pool_best_fit"
FIXED = "gen_pool_fixed_alloc"
ALGOS = (FIRST_FIT, FIRST_FIT_ALIGN, ORDER_ALIGN, BEST_FIT, FIXED)

_FREE_RUNS = re.compile(rb"\x00+")
_USED_RUNS = re.compile(rb"\x01+")


class RefChunk:
    def __init__(self, virt, phys, size, unit, owner):
        self.start = virt
        self.end = virt + size - 1             # inclusive, as the kernel keeps it
        self.phys = phys
        self.owner = owner
        self.nunits = size // unit             # a partial last unit is never handed out
        self.avail = size
        self.used = bytearray(self.nunits)

    def first_free_run(self, nr, pos=0, step=1, phase=0):
        """The lowest unit index ``p >= pos`` with ``(p + phase) % step == 0`` that starts
        ``nr`` free units, or None."""
        want = bytes(nr)
        while True:
            p = self.used.find(want, pos)
            if p < 0:
                return None
            q = p + (-(p + phase)) % step      # the first aligned index at or after p
            if q == p or self.used.find(want, q, q + nr) == q:
                return q
            pos = q + 1

    def free_runs(self):
        return [(m.start(), m.end() - m.start()) for m in _FREE_RUNS.finditer(self.used)]

    def used_runs(self):
        return [(m.start(), m.end() - m.start()) for m in _USED_RUNS.finditer(self.used)]

    def words(self):
        """The bitmap as the kernel's unsigned long words (uint64)."""
        bits = np.frombuffer(bytes(self.used), dtype=np.uint8)
        packed = np.packbits(bits, bitorder="little").tobytes()
        packed += bytes(-len(packed) % 8)
        return np.frombuffer(packed, dtype=np.uint64)


class RefGenPool:
    """The reference of one ``struct gen_pool``; methods mirror ``netmem.genalloc``'s."""

    def __init__(self, min_alloc_order):
        self.order = min_alloc_order
        self.unit = 1 << min_alloc_order
        self.chunks = []                       # newest first
        self.nr_warn_fixed = 0

    def add_owner(self, virt, phys, size, owner=None):
        end = virt + size - 1
        if size == 0 or virt == 0 or end >= 1 << 64 or any(
                virt <= c.end and c.start <= end for c in self.chunks):
            raise NetmemError(errno.EINVAL, "chunk refused")
        self.chunks.insert(0, RefChunk(virt, phys, size, self.unit, owner))

    def _units(self, size):
        return -(-size // self.unit)

    def _find(self, chunk, nr, algo, data):
        if algo == FIRST_FIT:
            return chunk.first_free_run(nr)
        if algo == FIRST_FIT_ALIGN:
            step = max(1, -(-data.align // self.unit))
            phase = (chunk.start % data.align) // self.unit
            return chunk.first_free_run(nr, step=step, phase=phase)
        if algo == ORDER_ALIGN:
            return chunk.first_free_run(nr, step=1 << (nr - 1).bit_length())
        if algo == BEST_FIT:
            fits = [(length, p) for p, length in chunk.free_runs() if length >= nr]
            return min(fits)[1] if fits else None
        if algo == FIXED:
            if data.offset % self.unit:
                self.nr_warn_fixed += 1
                return None
            p = data.offset // self.unit
            return p if chunk.used[p:p + nr] == bytes(nr) and p + nr <= chunk.nunits else None
        raise ValueError(algo)

    def alloc(self, size, algo=FIRST_FIT, data=None):
        """``(address, owner)``, or ``(0, None)``."""
        if size == 0:
            return 0, None
        nr = self._units(size)
        for c in self.chunks:
            if size > c.avail:
                continue
            p = self._find(c, nr, algo, data)
            if p is None:
                continue
            c.used[p:p + nr] = b"\x01" * nr
            c.avail -= nr * self.unit
            return c.start + p * self.unit, c.owner
        return 0, None

    def free(self, addr, size):
        """The chunk's owner; NetmemError(EINVAL), nothing changed, for a bad free."""
        c = next((c for c in self.chunks if c.start <= addr <= c.end), None)
        if c is None or addr + size - 1 > c.end:
            raise NetmemError(errno.EINVAL, "bad free")
        first, nr = (addr - c.start) // self.unit, self._units(size)
        if nr:
            if first + nr > c.nunits or c.used[first:first + nr] != b"\x01" * nr:
                raise NetmemError(errno.EINVAL, "bad free")
            c.used[first:first + nr] = bytes(nr)
            c.avail += nr * self.unit
        return c.owner

    def virt_to_phys(self, addr):
        c = next((c for c in self.chunks if c.start <= addr <= c.end), None)
        return -1 if c is None else (c.phys + addr - c.start) % (1 << 64)

    def has_addr(self, start, size):
        return any(c.start <= start <= c.end and start + size - 1 <= c.end for c in self.chunks)

    def avail(self):
        return sum(c.avail for c in self.chunks)

    def size(self):
        return sum(c.end - c.start + 1 for c in self.chunks)

    def allocated_runs(self):
        """``(address, bytes)`` of each maximal allocated run, chunk by chunk (newest first)."""
        return [(c.start + p * self.unit, n * self.unit)
                for c in self.chunks for p, n in c.used_runs()]

    def destroy(self):
        if any(1 in c.used for c in self.chunks):
            raise NetmemError(errno.EBUSY, "allocations outstanding")
        self.chunks = []
