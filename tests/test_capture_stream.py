"""Streamed captures (``PacketTrace.from_pcap(path, stream=True)``, netmem/capture.py): the same
trace and the same replay as a capture read whole, window by window, in bounded memory; the
index-only trace cache and its key."""
import errno
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from memutil import THP, vma_of

from netmem import flows, packet_trace
from netmem.capture import huge_zeros
from netmem.errors import NetmemError
from netmem.flows import PacketTrace, generate
from netmem.replay import main
from netmem.replay import workload as replay_workload

# Loss, reordering, duplicates, overlaps, both families, both directions: every path of
# in_order_bytes() and tcp_streams(), on a capture small enough to replay in a second.
IMPAIRED = {"connections": 6, "family": "both", "payload": 30_000, "bidirectional": True,
            "interleave": "random", "loss": 0.03, "reorder": 0.05, "duplicate": 0.05,
            "overlap": 0.05, "seed": 11}
# Windows in bytes: one frame each, a few frames with edges anywhere in a page, and whole.
WINDOWS = (1, 777, 4097, 1 << 30)


@pytest.fixture(scope="module", params=["pcap", "pcapng"])
def capture(request, tmp_path_factory):
    path = tmp_path_factory.mktemp("stream") / f"imp.{request.param}"
    f = generate(**IMPAIRED)
    f.write_pcap(path, pcapng=request.param == "pcapng")
    return path


def summary(trace, deliver):
    return {"len": len(trace), "skipped": trace.skipped, "payload": trace.payload_bytes,
            "cut_short": trace.cut_short, "lengths": trace.lengths.tolist(),
            "timestamps": trace.timestamps.tolist(),
            "frames": [trace.frame(i) for i in range(len(trace))],
            "l3": trace.l3_lengths().tolist(), "streams": trace.tcp_streams(),
            "in_order": trace.in_order_bytes(), "delivered": trace.in_order_bytes(deliver)}


@pytest.mark.parametrize("window", WINDOWS)
def test_streamed_trace_is_the_trace_in_memory(capture, window):
    whole = PacketTrace.from_pcap(capture)
    streamed = PacketTrace.from_pcap(capture, stream=True, window=window)
    assert streamed.streamed and not whole.streamed
    deliver = np.arange(len(whole)) % 5 != 3            # as frames an MTU drops
    assert summary(streamed, deliver) == summary(whole, deliver)


def test_in_order_bytes_block_by_block(capture, monkeypatch):
    """Streams worked out a few directions at a time add up to the whole at once."""
    trace = PacketTrace.from_pcap(capture, stream=True, window=4097)
    whole = trace.in_order_bytes()
    monkeypatch.setattr(packet_trace, "_BLOCK", 7)
    assert trace.in_order_bytes() == whole


def test_unique_rows_is_numpy_unique_of_rows():
    """``in_order_bytes()`` and ``tcp_streams()`` number directions by ``_unique_rows()``: the
    same rows in the same order as ``np.unique(axis=0)``, so the same ids and output order."""
    rng = np.random.default_rng(4)
    for n in (0, 1, 3000):
        key = rng.integers(0, 4, (n, 5)).astype(np.uint64) << np.uint64(62)
        key[:, 2] = rng.integers(0, 3, n)
        _, first, inverse = np.unique(key, axis=0, return_index=True, return_inverse=True)
        got = packet_trace._unique_rows(key)
        assert (got[0] == first).all() and (got[1] == inverse.reshape(-1)).all()


def test_streamed_keep_all_counts_what_it_skips(tmp_path):
    f = generate(connections=2, payload=5000, seed=3)
    arp = bytes(12) + b"\x08\x06" + bytes(46)
    frames = [f.trace.frame(i) for i in range(len(f.trace))]
    mixed = PacketTrace.from_frames([arp, *frames[:5], arp, *frames[5:]], keep_all=True)
    path = tmp_path / "mixed.pcap"
    flows._write_capture(mixed, str(path), False)
    for keep_all in (False, True):
        whole = PacketTrace.from_pcap(path, keep_all=keep_all)
        streamed = PacketTrace.from_pcap(path, keep_all=keep_all, stream=True, window=200)
        assert streamed.skipped == whole.skipped == {**whole.skipped, "non_tcp": 2}
        assert len(streamed) == len(whole) == len(frames) + 2 * keep_all
        assert [streamed.frame(i) for i in range(len(streamed))] == \
            [whole.frame(i) for i in range(len(whole))]


def test_stream_refuses_what_it_cannot_stream(tmp_path):
    raw = tmp_path / "raw.pcap"
    from scapy.layers.inet import IP, TCP
    from scapy.utils import wrpcap
    wrpcap(str(raw), [IP(dst="192.0.2.1") / TCP()])
    with pytest.raises(NetmemError) as e:
        PacketTrace.from_pcap(raw, stream=True)
    assert e.value.errno == errno.EOPNOTSUPP and "link type 228" in str(e.value)
    assert len(PacketTrace.from_pcap(raw)) == 1             # converted in memory
    with pytest.raises(NetmemError) as e:
        PacketTrace.from_pcap(raw, stream=True, window=0)
    assert e.value.errno == errno.EINVAL and "window 0" in str(e.value)
    with pytest.raises(NetmemError) as e:
        PacketTrace.from_pcap(tmp_path / "none.pcap", stream=True)
    assert e.value.errno == errno.ENOENT
    (tmp_path / "empty.pcap").write_bytes(b"")
    with pytest.raises(NetmemError) as e:
        PacketTrace.from_pcap(tmp_path / "empty.pcap", stream=True)
    assert e.value.errno == errno.EINVAL and "0 bytes" in str(e.value)


def replay_doc(tmp_path, monkeypatch, pcap, opener, name):
    """netmem-replay's report: streamed by ``opener``, or with ``--pcap-in-memory`` (None)."""
    if opener is not None:
        monkeypatch.setattr(replay_workload, "_open_capture", opener)
    out = tmp_path / f"{name}.json"
    code = main(["--pcap", str(pcap), "--provider", "dmabuf", "--loops", "2", "--warmup", "1",
                 "--chunk", "100", "--json", str(out), *(["--pcap-in-memory"] * (not opener))])
    doc = json.loads(out.read_text())
    assert code == 0 and doc["validation"]["result"] == "ok", doc["validation"]
    return doc


def test_streamed_replay_is_the_replay_in_memory(tmp_path, monkeypatch, capture):
    """The differential test: a window of 3000 bytes (two frames) forces a window per call
    into C and pages given back mid-frame; counters and the bytes read must be the same."""
    streamed = replay_doc(tmp_path, monkeypatch, capture, lambda p, keep: PacketTrace.from_pcap(
        p, stream=True, window=3000, keep=5 * 4096), "s")
    whole = replay_doc(tmp_path, monkeypatch, capture, None, "m")
    assert streamed["trace"].pop("streamed") and not whole["trace"].pop("streamed")
    assert streamed["trace"].pop("keep") == 5 * 4096 and whole["trace"].pop("keep") is None
    for key in ("trace", "counters", "drops", "qstats", "queues", "recycle", "tcp-mib", "iommu",
                "devmem", "validation"):
        assert streamed[key] == whole[key], key


def test_pcap_in_memory_needs_a_pcap(capsys):
    assert main(["--pcap-in-memory"]) == 2
    assert "--pcap-in-memory reads a --pcap capture whole" in capsys.readouterr().err
    assert main(["--pcap-keep", "1MiB"]) == 2
    assert "--pcap-keep keeps the head of a streamed --pcap" in capsys.readouterr().err


def rss_file():
    with open("/proc/self/status") as f:
        status = dict(line.split(":", 1) for line in f)
    return int(status["RssFile"].split()[0]) * 1024


def test_keep_holds_the_head_of_the_capture_resident(tmp_path):
    """Streamed with a 1 MiB window, a pass over an 8 MiB capture leaves about nothing of it
    resident; with ``keep`` 6 MiB, its first 6 MiB stay (a later loop does not read them)."""
    path = tmp_path / "k.pcap"
    generate(connections=2, payload=4 << 20, seed=2).write_pcap(path)
    grew = {}
    for keep in (0, 6 << 20):
        before = rss_file()
        trace = PacketTrace.from_pcap(path, stream=True, window=1 << 20, keep=keep)
        trace.l3_lengths()
        grew[keep] = rss_file() - before
        assert trace.keep == keep
        del trace
    assert grew[0] < 2 << 20 and grew[6 << 20] > 5 << 20, grew
    with pytest.raises(NetmemError) as e:
        PacketTrace.from_pcap(path, stream=True, keep=-1)
    assert e.value.errno == errno.EINVAL and "keep -1" in str(e.value)


def test_release_prefetches_the_next_window(tmp_path):
    """A release has a thread fault in the next window of the capture (``MADV_POPULATE_READ``),
    so the reader does not take those faults; no more than that window."""
    path = tmp_path / "p.pcap"
    generate(connections=2, payload=4 << 20, seed=2).write_pcap(path)
    trace = PacketTrace.from_pcap(path, stream=True, window=2 << 20)
    before = rss_file()
    trace.release(0, 1)
    trace._map._fetching[0].join()
    assert (2 << 20) - 8192 <= rss_file() - before <= (2 << 20) + 8192, rss_file() - before


def test_replay_streams_an_ethernet_capture(tmp_path, capture):
    out = tmp_path / "r.json"
    assert main(["--pcap", str(capture), "--provider", "host", "--json", str(out)]) == 0
    doc = json.loads(out.read_text())
    assert doc["trace"]["streamed"] and doc["validation"]["result"] == "ok"


# The RSS checks run in a child, which reads the peak of its own memory (VmHWM): ru_maxrss would
# carry the peak of the pytest process it was forked from across exec.
_RSS_CHILD = """
import json, sys
import scapy.utils
from netmem.flows import PacketTrace, write_generated
from netmem.replay import main, workload
from netmem.replay.report import peak_rss as peak

mode, path = sys.argv[1], sys.argv[2]
before = peak()
if mode == "write":
    write_generated(path, connections=4, payload=12 << 20, seed=5, slice_frames=1024,
                    window=1 << 20)
    code = 0
else:
    workload._open_capture = lambda p, keep: PacketTrace.from_pcap(p, stream=True,
                                                                   window=1 << 20)
    code = main(["--pcap", path, "--provider", "host", "--loops", "1", "--warmup", "0",
                 "--json", sys.argv[3], *(["--pcap-in-memory"] * (mode == "memory"))])
print(json.dumps({"code": code, "before": before, "peak": peak()}))
"""


def rss_child(*argv):
    res = subprocess.run([sys.executable, "-c", _RSS_CHILD, *map(str, argv)],
                         capture_output=True, text=True, check=True)
    got = json.loads(res.stdout.strip().splitlines()[-1])
    assert got["code"] == 0
    return got


def test_captures_of_any_size_in_bounded_memory(tmp_path):
    """A 50 MiB capture, written a slice at a time (``write_generated``: a few MiB) and
    replayed: read whole it costs its size in resident memory, streamed with a 1 MiB window a
    few MiB (pages given back as the replay goes)."""
    path = tmp_path / "big.pcap"
    wrote = rss_child("write", path)
    size = os.path.getsize(path)
    assert size > 48 << 20 and wrote["peak"] - wrote["before"] < size / 2, (wrote, size)
    peaks = {}
    for mode in ("memory", "stream"):
        peaks[mode] = rss_child(mode, path, tmp_path / f"{mode}.json")["peak"]
        assert json.loads((tmp_path / f"{mode}.json").read_text())["validation"]["result"] == \
            "ok"
    assert peaks["memory"] - peaks["stream"] > 0.75 * size, (peaks, size)


@pytest.mark.parametrize("pcapng", [False, True])
def test_write_generated_writes_what_generate_writes(tmp_path, pcapng):
    """Slices of one packet, of a few (edges anywhere in a connection's stream) and of all:
    the same file, byte for byte, as generate().write_pcap(), random payload and pattern."""
    for kw in (IMPAIRED, {"connections": 2, "payload": 7777, "validate": 7, "seed": 3}):
        generate(**kw).write_pcap(tmp_path / "a.pcap", pcapng=pcapng)
        want = (tmp_path / "a.pcap").read_bytes()
        for slice_frames in (1, 7, 1 << 20):
            trace = flows.write_generated(tmp_path / "b.pcap", pcapng=pcapng,
                                          slice_frames=slice_frames, **kw)
            assert (tmp_path / "b.pcap").read_bytes() == want
            assert trace.streamed and flows.cached_trace(tmp_path / "b.pcap", pcapng,
                                                         **kw) is not None


def test_write_generated_refuses_bad_input(tmp_path):
    with pytest.raises(NetmemError) as e:
        flows.write_generated(tmp_path / "x.pcap", slice_frames=0)
    assert e.value.errno == errno.EINVAL and "slice_frames 0" in str(e.value)
    with pytest.raises(NetmemError) as e:
        flows.write_generated(tmp_path / "x.pcap", flows.FlowParams(), seed=1)
    assert e.value.errno == errno.EINVAL and "not both" in str(e.value)
    assert not (tmp_path / "x.pcap").exists()


def test_trace_cache_is_an_index(tmp_path):
    kw = dict(connections=2, payload=300_000, seed=1)
    path = str(tmp_path / "c.pcap")
    f = generate(**kw)
    f.write_pcap(path)
    assert os.path.getsize(path + ".npz") < os.path.getsize(path) / 20     # no frames in it
    cached = flows.cached_trace(path, **kw)
    assert cached.streamed and len(cached) == len(f.trace)
    assert all(cached.frame(i) == f.trace.frame(i) for i in range(0, len(f.trace), 7))
    os.rename(tmp_path, tmp_path.with_name(tmp_path.name + "-moved"))   # the pair moves along
    moved = str(tmp_path.with_name(tmp_path.name + "-moved") / "c.pcap")
    assert PacketTrace.load(moved + ".npz").frame(3) == f.trace.frame(3)
    os.rename(tmp_path.with_name(tmp_path.name + "-moved"), tmp_path)


@pytest.mark.parametrize("edit", ["head", "tail", "mtime", "size"])
def test_trace_cache_key_sees_an_edited_capture(tmp_path, edit):
    kw = dict(connections=2, payload=3_000_000, seed=1)     # over 2 MiB: head and tail apart
    path = str(tmp_path / "c.pcap")
    generate(**kw).write_pcap(path)
    st = os.stat(path)
    with open(path, "r+b") as f:
        if edit == "head":          # a byte of a frame, same size, same mtime
            f.seek(200)
            b = f.read(1)
            f.seek(200)
            f.write(bytes([b[0] ^ 1]))
        elif edit == "tail":
            f.seek(st.st_size - 10)
            b = f.read(1)
            f.seek(st.st_size - 10)
            f.write(bytes([b[0] ^ 1]))
        elif edit == "size":
            f.truncate(st.st_size - 1)
    if edit != "size":
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + (edit == "mtime")))
    assert flows.cached_trace(path, **kw) is None
    with pytest.raises(NetmemError) as e:
        PacketTrace.load(path + ".npz")
    assert e.value.errno == errno.ESTALE and "changed since it was indexed" in str(e.value)


def test_replay_indexes_a_capture_once(tmp_path, monkeypatch):
    """``netmem-replay --pcap`` walks a capture once: later runs load its index from the cache
    (next to it, its directory being writable), an edited capture is walked again; a capture in
    a directory it cannot write is cached under ``$XDG_CACHE_HOME/netmem``."""
    walks = []
    read = packet_trace.read_capture
    monkeypatch.setattr(packet_trace, "read_capture", lambda *a: walks.append(a[0]) or read(*a))
    monkeypatch.delenv("NETMEM_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    path = tmp_path / "c.pcap"
    generate(connections=2, payload=100_000, seed=3).trace.write_pcap(str(path))
    runs = [main(["--pcap", str(path), "--provider", "host", "--loops", "1", "--warmup", "0"])
            for _ in range(2)]
    assert runs == [0, 0] and len(walks) == 1 and os.path.isfile(f"{path}.npz")
    st = os.stat(path)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1))         # edited: walked again
    replay_workload._open_capture(str(path)).cache_index()
    replay_workload._open_capture(str(path)).cache_index()
    assert len(walks) == 2
    access = os.access
    monkeypatch.setattr(os, "access", lambda p, m: p != str(tmp_path) and access(p, m))
    os.unlink(f"{path}.npz")
    for _ in range(2):
        replay_workload._open_capture(str(path)).cache_index()
    cached = os.listdir(tmp_path / "xdg" / "netmem")
    assert len(walks) == 3 and not os.path.exists(f"{path}.npz"), walks
    assert len(cached) == 1 and cached[0].startswith("c.pcap-"), cached
    monkeypatch.setenv("NETMEM_CACHE_DIR", str(tmp_path / "mine"))
    replay_workload._open_capture(str(path)).cache_index()
    assert len(walks) == 4 and len(os.listdir(tmp_path / "mine")) == 1


@pytest.mark.skipif(not THP, reason="the kernel has no transparent huge pages")
@pytest.mark.parametrize("nbytes", [1, (2 << 20) + 3])
def test_huge_zeros_is_a_private_huge_page_arena(nbytes):
    # The arena starts on a 2 MiB boundary, in private memory advised MADV_HUGEPAGE (shared
    # anonymous memory is shmem, whose THP setting is another).
    a = huge_zeros(nbytes)
    assert len(a) == nbytes and a.dtype == np.uint8 and not a.any()
    assert a.ctypes.data % (2 << 20) == 0
    perms, flags = vma_of(a.ctypes.data)
    assert perms == "rw-p" and "hg" in flags
    a[-1] = 1


@pytest.mark.skipif(not THP, reason="the kernel has no transparent huge pages")
def test_traces_replayed_from_memory_are_huge_page_arenas(tmp_path):
    # What the replay reads frame by frame: the generated trace, and a capture read whole.
    flows_ = generate(connections=2, payload=200_000)
    path = tmp_path / "c.pcap"
    flows_.write_pcap(path)
    whole = PacketTrace.from_pcap(path)
    assert len(whole) == len(flows_.trace)
    for arena in (flows_.trace.arena, whole.arena):
        perms, flags = vma_of(arena.ctypes.data)
        assert perms == "rw-p" and "hg" in flags


@pytest.mark.parametrize("pcapng", [False, True])
def test_captures_are_written_in_aligned_huge_pieces(tmp_path, monkeypatch, pcapng):
    # Every write to the file but the last is whole 2 MiB pieces at a 2 MiB offset, so that
    # the page cache holds the capture in 2 MiB folios; the bytes are scapy's, unchanged.
    piece, pieces = flows._HugeChunkFile.PIECE, []
    write = flows._HugeChunkFile._write

    def record(self, view):
        pieces.append((self.f.tell(), len(view)))
        write(self, view)

    monkeypatch.setattr(flows._HugeChunkFile, "_write", record)
    kw = {"connections": 2, "payload": 3 << 20, "validate": 7}
    trace = flows.write_generated(tmp_path / "b.pcap", pcapng=pcapng, slice_frames=999, **kw)
    assert len(pieces) >= 2 and sum(n for _, n in pieces) == os.path.getsize(tmp_path / "b.pcap")
    assert all(at % piece == 0 and n % piece == 0 for at, n in pieces[:-1])
    assert trace.frame(len(trace) - 1) == generate(**kw).trace.frame(len(trace) - 1)


@pytest.mark.skipif(not THP, reason="the kernel has no transparent huge pages")
def test_streamed_capture_mapping_asks_for_huge_pages(capture):
    # A capture the page cache reads again (readahead) comes back in 2 MiB folios.
    trace = PacketTrace.from_pcap(capture, stream=True)
    perms, flags = vma_of(trace._map.arena.ctypes.data)
    assert perms == "r--s" and "hg" in flags


def test_release_gives_back_whole_huge_pages(tmp_path):
    # A 2 MiB folio goes back whole or not at all: a part would split its mapping for good.
    path = tmp_path / "h.pcap"
    generate(connections=2, payload=4 << 20, seed=2).write_pcap(path)
    cmap = PacketTrace.from_pcap(path, stream=True, window=1 << 20)._map
    cmap.release(0, (3 << 20) + 5)
    assert cmap._end == 2 << 20
    cmap.release((3 << 20) + 5, (6 << 20) + 4097)
    assert cmap._end == 6 << 20
