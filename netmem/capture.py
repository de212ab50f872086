"""Capture files: the pcap and pcapng readers behind ``PacketTrace.from_pcap`` and the read-only
mapping that lets a streamed ``PacketTrace`` replay a capture larger than memory.

A reader walks the records and returns the index of the capture: each frame's offset in the
file, captured length, timestamp (ns) and link type. Read whole (``bytes``), the file becomes
the trace's arena; streamed, the arena is a ``CaptureMap``, the file mapped read-only
(``mmap``), whose pages are given back (``madvise(MADV_DONTNEED)``) as each window of the file
is done with, so the resident memory stays bounded by the window whatever the file's size.
Nothing here models the kernel; scapy is not used.
"""
import array
import ctypes
import errno
import hashlib
import mmap
import os
import struct
import threading

import numpy as np

from netmem._core import pcap_heads
from netmem.errors import NetmemError

_MAX_SNAPLEN = 262144   # libpcap's MAXIMUM_SNAPLEN: a larger record length is corruption
_PCAPNG_MAGIC = b"\x0a\x0d\x0d\x0a"
_PCAP_MAGICS = {b"\xd4\xc3\xb2\xa1": (True, False), b"\x4d\x3c\xb2\xa1": (True, True),
                b"\xa1\xb2\xc3\xd4": (False, False), b"\xa1\xb2\x3c\x4d": (False, True)}
STREAM_WINDOW = 64 << 20   # bytes of a streamed capture resident at once: 64 MiB
_KEY_SPAN = 1 << 20        # bytes hashed at each end of a capture for its identity: 1 MiB
_MADV_POPULATE_READ = 22   # Linux 5.14+; an older kernel answers EINVAL and nothing is fetched
_madvise = ctypes.CDLL(None, use_errno=True).madvise    # ctypes drops the GIL for the call
_madvise.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
_HPAGE_SIZE = 2 << 20      # a transparent huge page (x86-64's PMD): 2 MiB


def _err(code, msg):
    return NetmemError(code, msg)


def huge_zeros(nbytes):
    """``nbytes`` zero bytes, a ``np.uint8`` array over anonymous memory that starts on a 2 MiB
    boundary and asks for transparent huge pages (``madvise(MADV_HUGEPAGE)``: THP is often
    enabled for ``madvise`` only). The arena of a trace that the replay reads frame by frame
    (the generated workload's, a capture read whole): with 4 KiB pages its reads miss the TLB
    (0.91x the time of an in-memory capture's replay with, docs/benchmarks.md). Committed as
    it is written, 2 MiB at a time; the advice is a hint (4 KiB pages where THP is off)."""
    # Whole huge pages, and one more: room to align the start. Private: shared anonymous
    # memory is shmem, whose THP setting is another (often never).
    mm = mmap.mmap(-1, nbytes + (-nbytes % _HPAGE_SIZE) + _HPAGE_SIZE, flags=mmap.MAP_PRIVATE)
    mm.madvise(mmap.MADV_HUGEPAGE)
    whole = np.frombuffer(mm, np.uint8)
    start = -whole.ctypes.data % _HPAGE_SIZE
    return whole[start:start + nbytes]


def _gather_u32(arena, pos, little):
    """Unaligned 32-bit loads at ``pos`` (int64 array), as uint64."""
    b = [arena[pos + k].astype(np.uint64) for k in range(4)]
    if not little:
        b.reverse()
    return b[0] | b[1] << np.uint64(8) | b[2] << np.uint64(16) | b[3] << np.uint64(24)


class CaptureMap:
    """A capture file mapped read-only, as a ``np.uint8`` arena (``arena``) over the mapping.

    ``release(lo, hi)`` gives back the whole pages below ``hi`` from ``lo`` (or from the end of
    the previous release, when this one follows it), so a reader that walks the file forward
    keeps at most its window resident. The pages are the page cache's: a later read of them
    faults them back in (from the cache, or the disk if the kernel dropped them): about 0.7 us
    per 4 KiB page where it was measured, 0.4 of the replay's own work on those frames. So the
    first ``keep`` bytes of the file are never given back: a replay that loops over a capture
    that fits reads it once, and one that does not rereads only what lies past ``keep`` (for a
    scan in a loop, keeping the head is the best use of the memory: any page given back is
    read again before a kept one would be).

    So that the reader does not take those faults itself, each release also has a thread fault
    in (``madvise(MADV_POPULATE_READ)``, without the GIL) the next ``ahead`` bytes past it,
    while the reader works on what it has (``NetDevice.receive()`` runs in C without the GIL):
    about ``ahead`` bytes more are resident. ``ahead`` 0: no prefetch.

    The mapping asks for huge pages (``MADV_HUGEPAGE``): what the page cache reads of the file
    comes in 2 MiB folios, each mapped by one fault and one TLB entry; giving it back and
    faulting it in again then costs a twentieth of what 4 KiB pages do. A file already cached
    in small folios stays so: ``netmem-flows`` writes its captures in 2 MiB pieces, which the
    page cache holds in 2 MiB folios (docs/benchmarks.md)."""

    def __init__(self, path, who, keep=0, ahead=0):
        try:
            with open(path, "rb") as f:
                st = os.fstat(f.fileno())
                self.key = _file_key(f, st)
                self.mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) if st.st_size \
                    else None
        except FileNotFoundError:
            raise _err(errno.ENOENT, f"{who}: {path}: no such file") from None
        except IsADirectoryError:
            raise _err(errno.EISDIR, f"{who}: {path}: is a directory") from None
        if self.mm is not None:
            self.mm.madvise(mmap.MADV_HUGEPAGE)
        self.path = os.path.abspath(path)
        self.size = st.st_size
        self.arena = np.frombuffer(self.mm, np.uint8) if self.mm is not None else \
            np.zeros(0, np.uint8)
        self.keep = keep - keep % mmap.PAGESIZE     # bytes at the head never given back
        self._end = 0   # the end of the last release, page aligned
        self.ahead = ahead
        self.cached = False     # the index came from the cache (index_cache_path())
        self._fetched = 0       # the end of the bytes handed to the prefetch thread
        self._fetching = None   # that thread, and where its bytes start

    def release(self, lo, hi):
        """Give back the pages of ``[lo, hi)``: the whole 2 MiB below ``hi``, so that where the
        page cache holds the file in 2 MiB folios each goes back with its one mapping (part of
        one would split it into 4 KiB entries, and the page table left behind would have later
        faults map it 64 KiB at a time; 0.98x the streamed replay's time, docs/benchmarks.md).
        At most 2 MiB more than the window stays resident."""
        start = max(self._end if self._end <= lo else lo - lo % _HPAGE_SIZE, self.keep)
        stop = min(hi, self.size) // _HPAGE_SIZE * _HPAGE_SIZE
        if stop > start:
            self._wait_below(stop)
            self.mm.madvise(mmap.MADV_DONTNEED, start, stop - start)
        self._end = max(stop, start)
        self._fetch(stop)

    def _wait_below(self, stop):
        """Wait for a prefetch that reaches below ``stop`` (it would fault in again what is
        being given back)."""
        if self._fetching is not None and self._fetching[1] < stop:
            self._fetching[0].join()
            self._fetching = None

    def _fetch(self, stop):
        """Have the thread fault in ``[stop, stop + ahead)`` but what it has, when less than
        half of it is left and no fetch is running."""
        if stop < self._fetched - self.ahead:       # a new pass over the file
            self._fetched = 0
        lo, hi = max(stop, self._fetched), min(stop + self.ahead, self.size)
        if hi - lo < self.ahead // 2 or lo >= hi or \
                (self._fetching is not None and self._fetching[0].is_alive()):
            return
        lo -= lo % mmap.PAGESIZE
        t = threading.Thread(target=_madvise, daemon=True,
                             args=(self.arena.ctypes.data + lo, hi - lo, _MADV_POPULATE_READ))
        t.start()
        self._fetching, self._fetched = (t, lo), hi


def _file_key(f, st):
    """What identifies a capture file's contents without reading it whole: its size, its
    modification time (ns) and a BLAKE2b digest of its first and last MiB. A capture edited in
    place, replaced or cut since gives another key. ``f`` is the file open for reading, ``st``
    its ``os.fstat()``."""
    h = hashlib.blake2b(digest_size=16)
    h.update(os.pread(f.fileno(), _KEY_SPAN, 0))
    if st.st_size > _KEY_SPAN:
        h.update(os.pread(f.fileno(), _KEY_SPAN, max(_KEY_SPAN, st.st_size - _KEY_SPAN)))
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "digest": h.hexdigest()}


def index_cache_path(path):
    """Where ``netmem-replay`` caches the index of the capture at ``path``: in
    ``$NETMEM_CACHE_DIR`` when set; else next to the capture (``path + ".npz"``, where
    ``netmem-flows`` writes it) when its directory is writable; else in the user's cache
    directory (``$XDG_CACHE_HOME/netmem``, by default ``~/.cache/netmem``), named after the
    capture and a digest of its absolute path."""
    path = os.path.abspath(path)
    where = os.environ.get("NETMEM_CACHE_DIR")
    if not where and os.access(os.path.dirname(path), os.W_OK):
        return path + ".npz"
    if not where:
        where = os.path.join(os.environ.get("XDG_CACHE_HOME") or
                             os.path.join(os.path.expanduser("~"), ".cache"), "netmem")
    tag = hashlib.blake2b(path.encode(), digest_size=8).hexdigest()
    return os.path.join(where, f"{os.path.basename(path)}-{tag}.npz")


def read_capture(path, who, stream=False, window=STREAM_WINDOW, keep=0):
    """Open and index a pcap or pcapng capture: (arena, offsets, lengths, ns timestamps,
    linktypes, truncated, the ``CaptureMap`` or None). Read whole unless ``stream``; streamed,
    the walk gives back each ``window`` of the file once past it (but the first ``keep``
    bytes)."""
    cmap = None
    if stream:
        cmap = CaptureMap(path, who, keep, window)
        data, arena = cmap.mm if cmap.mm is not None else b"", cmap.arena
    else:
        try:
            with open(path, "rb") as f:
                arena = _read_whole(f)
        except FileNotFoundError:
            raise _err(errno.ENOENT, f"{who}: {path}: no such file") from None
        except IsADirectoryError:
            raise _err(errno.EISDIR, f"{who}: {path}: is a directory") from None
        data = arena.data.toreadonly()
    if len(data) < 4:
        raise _err(errno.EINVAL, f"{who}: {path}: not a pcap or pcapng file ({len(data)} bytes)")
    release = (lambda lo, hi: cmap.release(lo, hi)) if cmap is not None else None
    magic = bytes(data[:4])
    if magic == _PCAPNG_MAGIC:
        if len(data) < 28:
            raise _err(errno.EINVAL, f"{who}: {path}: truncated pcapng section header")
        index = _read_pcapng(data, path, release, window)
    elif magic in _PCAP_MAGICS:
        index = _read_pcap(data, arena, path, release, window)
    else:
        raise _err(errno.EINVAL, f"{who}: {path}: not a pcap or pcapng file (magic "
                                 f"{magic.hex()})")
    if cmap is not None:
        cmap.release(0, len(data))
    return (arena, *index, cmap)


def _read_whole(f):
    """The file ``f`` (open for reading) whole, into a ``huge_zeros()`` arena: what it holds
    when read to its end (a file that grows or shrinks meanwhile gives what was read)."""
    arena = huge_zeros(os.fstat(f.fileno()).st_size)
    got = 0
    while got < len(arena):
        n = f.readinto(arena[got:])
        if not n:
            return arena[:got]
        got += n
    rest = f.read()
    return np.concatenate([arena, np.frombuffer(rest, np.uint8)]) if rest else arena


def _read_pcap(data, arena, path, release=None, window=STREAM_WINDOW):
    """Walk a pcap file: (data offsets, captured lengths, ns timestamps, linktypes, truncated).
    With ``release``, the pages are given back every ``window`` bytes of the walk."""
    little, nano = _PCAP_MAGICS[bytes(data[:4])]
    e = "<" if little else ">"
    if len(data) < 24:
        raise _err(errno.EINVAL, f"from_pcap: {path}: truncated pcap file header "
                                 f"({len(data)} of 24 bytes)")
    snaplen, network = struct.unpack_from(e + "II", data, 16)
    linktype = network & 0xFFFF  # the upper bits carry the FCS length
    limit = max(snaplen, _MAX_SNAPLEN)
    incl_at = struct.Struct(e + "I").unpack_from
    parts = []
    pos, end = 24, len(data)
    while True:     # a window of the file at a time: its records' offsets, in C
        out = np.empty(min(window, end) // 16 + 1, np.int64)
        n, nxt = pcap_heads(arena, pos, pos + window, little, out)
        parts.append(out[:n].copy())
        if release is not None and n:
            release(pos, nxt)
        if not n:
            break
        pos = nxt
    truncated = int(pos != end)
    if truncated and pos + 16 <= end and incl_at(data, pos + 8)[0] > limit:
        raise _err(errno.EINVAL, f"from_pcap: {path}: record {sum(map(len, parts))} at byte "
                                 f"{pos}: "
                                 f"captured length {incl_at(data, pos + 8)[0]} exceeds the "
                                 f"snapshot length {snaplen}")
    h = np.concatenate(parts)
    cols = [np.zeros(len(h), np.uint64) for _ in range(3)]     # sec, frac, incl
    a = 0
    while a < len(h):       # the record headers, a window of the file at a time
        b = len(h) if release is None else \
            max(a + 1, int(np.searchsorted(h, h[a] + window)))
        for k, col in enumerate(cols):
            col[a:b] = _gather_u32(arena, h[a:b] + 4 * k, little)
        if release is not None:
            release(int(h[a]), int(h[b - 1]) + 16)
        a = b
    sec, frac, incl = cols
    over = np.flatnonzero(incl > limit)
    if len(over):
        i = int(over[0])
        raise _err(errno.EINVAL, f"from_pcap: {path}: record {i} at byte {int(h[i])}: captured "
                                 f"length {int(incl[i])} exceeds the snapshot length {snaplen}")
    ts = sec * np.uint64(1_000_000_000) + frac * np.uint64(1 if nano else 1000)
    lt = np.full(len(h), linktype, np.int64)
    return h + 16, incl, ts, lt, truncated


def _idb_options(data, e, pos, end):
    """(ns per tick as a (num, den) pair, ts offset in s) from an IDB's options."""
    num, den, tsoffset = 1000, 1, 0  # if_tsresol defaults to 10^-6 s
    while pos + 4 <= end:
        code, olen = struct.unpack_from(e + "HH", data, pos)
        if code == 0:
            break
        val = data[pos + 4:pos + 4 + olen]
        if code == 9 and olen >= 1:  # if_tsresol
            r = val[0]
            if r & 0x80:
                num, den = 1_000_000_000, 1 << (r & 0x7F)
            elif (r & 0x7F) <= 9:
                num, den = 10 ** (9 - (r & 0x7F)), 1
            else:
                num, den = 1, 10 ** ((r & 0x7F) - 9)
        elif code == 14 and olen >= 8:  # if_tsoffset, seconds
            tsoffset = struct.unpack_from(e + "q", val)[0]
        pos += 4 + olen + (-olen % 4)
    return num, den, tsoffset


def _read_pcapng(data, path, release=None, window=STREAM_WINDOW):
    """Walk a pcapng file: (data offsets, captured lengths, ns timestamps, linktypes,
    truncated). Enhanced, simple and obsolete packet blocks; other blocks are skipped. With
    ``release``, the pages are given back every ``window`` bytes of the walk."""
    offs, lens, ticks, ifs = (array.array(t) for t in "qQQq")
    interfaces = []  # every IDB of the file: (linktype, snaplen, num, den, tsoffset)
    section = []     # indices into interfaces of the current section's IDBs
    e = "<"
    pos, end = 0, len(data)
    mark = window if release is not None else end + 1
    truncated = 0
    while pos + 12 <= end:
        if data[pos:pos + 4] == _PCAPNG_MAGIC:  # SHB: byte order from its magic
            bom = data[pos + 8:pos + 12]
            if bom == b"\x4d\x3c\x2b\x1a":
                e = "<"
            elif bom == b"\x1a\x2b\x3c\x4d":
                e = ">"
            else:
                raise _err(errno.EINVAL, f"from_pcap: {path}: section header at byte {pos}: bad "
                                         f"byte-order magic {bom.hex()}")
            section = []
        btype, blen = struct.unpack_from(e + "II", data, pos)
        if blen < 12 or blen % 4:
            raise _err(errno.EINVAL, f"from_pcap: {path}: block at byte {pos}: bad block length "
                                     f"{blen}")
        if pos + blen > end:
            truncated = 1
            break
        bend = pos + blen - 4
        if btype == 1:  # IDB
            if blen < 20:
                raise _err(errno.EINVAL, f"from_pcap: {path}: interface block at byte {pos} is "
                                         f"too short")
            lt, snap = struct.unpack_from(e + "H2xI", data, pos + 8)
            section.append(len(interfaces))
            interfaces.append((lt, snap, *_idb_options(data, e, pos + 16, bend)))
        elif btype in (6, 2):  # EPB, obsolete PB: same layout up to the data
            if btype == 6:
                ifid, hi, lo, cap = struct.unpack_from(e + "IIII", data, pos + 8)
            else:
                ifid, hi, lo, cap = struct.unpack_from(e + "H2xIII", data, pos + 8)
            if pos + 28 + cap > bend or ifid >= len(section):
                raise _err(errno.EINVAL, f"from_pcap: {path}: packet block at byte {pos}: "
                                         f"captured length {cap} or interface {ifid} invalid")
            offs.append(pos + 28)
            lens.append(cap)
            ticks.append(hi << 32 | lo)
            ifs.append(section[ifid])
        elif btype == 3:  # SPB: interface 0, no timestamp, length from the snaplen
            if not section:
                raise _err(errno.EINVAL, f"from_pcap: {path}: simple packet block at byte {pos} "
                                         f"before any interface")
            orig = struct.unpack_from(e + "I", data, pos + 8)[0]
            snap = interfaces[section[0]][1]
            cap = min(orig, snap or orig, bend - (pos + 12))
            offs.append(pos + 12)
            lens.append(cap)
            ticks.append(ticks[-1] if ticks else 0)
            ifs.append(section[0])
        pos += blen
        if pos >= mark:
            release(mark - window, pos)
            mark = pos + window
    if pos < end:
        truncated = 1
    count = len(offs)
    ts = np.zeros(count, np.uint64)
    lt = np.zeros(count, np.int64)
    ifs_a = np.array(ifs, np.int64)
    ticks_a = np.array(ticks, np.uint64)
    for i, (linktype, _snap, num, den, tsoffset) in enumerate(interfaces):
        sel = ifs_a == i
        if not sel.any():
            continue
        lt[sel] = linktype
        t = ticks_a[sel]
        if den == 1:
            ns = t * np.uint64(num)
        else:  # exact: ticks * num // den without overflow for any realistic capture
            q, rem = np.divmod(t, np.uint64(den))
            ns = q * np.uint64(num) + rem * np.uint64(num) // np.uint64(den)
        shift = tsoffset * 1_000_000_000
        if shift >= 0:
            ts[sel] = ns + np.uint64(shift)
        else:  # a negative offset, clamped at the epoch
            back = np.uint64(-shift)
            ts[sel] = np.where(ns > back, ns - np.minimum(ns, back), 0)
    return np.array(offs, np.int64), np.array(lens, np.uint64), ts, lt, truncated
