"""The application: ``_App`` around a ``netmem.tcp.Receiver`` that reads every socket the
receive path woke, as ncdevmem does, and the verdict on what it read once the clocks stop; the
streams it kept, by (remote, local) end and as ``--dump-streams`` files.
"""
import errno
import ipaddress

import numpy as np

from netmem.errors import NetmemError
from netmem.replay.config import DEVMEM_CMSGS, RECV_BUF, BadInput
from netmem.tcp import Receiver


class _App:
    """The application side: a ``netmem.tcp.Receiver`` (pyx/receiver.pxi) reads every socket the
    receive path woke, in C, as ncdevmem does (devmem: ``recvmsg(MSG_SOCK_DEVMEM)``, each
    dma-buf frag read through the provider's memory and checked against the pattern, the tokens
    given back with ``SO_DEVMEM_DONTNEED``); here are its state at the end of each loop and,
    after the clocks stop, the verdict: pattern, stream lengths and ends, the streams kept for
    ``--dump-streams`` (by the untimed loop ``_observe()`` replays, with ``rx.keep`` on).
    ``expected``: each stream's length by (sender, receiver) end: the built-in workload's, or
    with ``capture`` what a capture's trace carries in order (``PacketTrace.in_order_bytes()``,
    checked as the sum over every socket a direction opened)."""

    def __init__(self, rig, pattern, expected, capture=False):
        self.pattern = pattern
        b = rig.binding
        try:
            self.rx = Receiver(rig.machine, dmabuf=b.memory_map, dmabuf_id=b.dmabuf_id or 0,
                               bufsize=RECV_BUF, cmsgs=DEVMEM_CMSGS, validate=pattern or None,
                               zcrx=b.zcrx)
        except NetmemError as e:         # a memory map outside RAM and the BARs
            raise BadInput(f"--provider {rig.cfg.provider_name}: memory_map(): {e.strerror}",
                           e.errno) from None
        self.dmabuf_id = b.dmabuf_id
        self.expected = expected
        self.capture = capture
        self.passes = []            # the streams at the end of each loop
        self.kept = None            # the kept loop's (streams, data, slots, lengths)
        self.streams = {}
        self.failures = []
        self.nfail = 0
        self._resets = 0
        self._counted = 0           # passes whose resets are in _resets

    def drain(self):
        self.rx.drain()

    def end_pass(self):
        """The end of a loop: the streams' state, every socket closed; the bytes kept, if the
        receiver kept them in this loop."""
        cols = self.rx.close_all()
        if self.rx.keep:
            self.kept = (cols, *self.rx.kept())
            self.rx.keep = False
        self.passes.append(cols)

    def resets(self):
        """Streams reset by their peer (ECONNRESET at close) in the loops so far, counted
        outside the clocks (between loops, when the counters are read)."""
        for cols in self.passes[self._counted:]:
            self._resets += int((cols["err"] == errno.ECONNRESET).sum())
        self._counted = len(self.passes)
        return self._resets

    def fail(self, msg):
        self.nfail += 1
        if len(self.failures) < 10:
            self.failures.append(msg)

    def check(self):
        """After the clocks: every loop's streams (warm-up and untimed ones too) against the
        pattern and the expected lengths, the receiver's own counts, and the kept loop's bytes
        split into streams."""
        c = self.rx.counters
        if c["foreign-frags"]:
            self.fail(f"{c['foreign-frags']} cmsg(s) name dma-buf {c['foreign-id']}, not the "
                      f"bound {self.dmabuf_id}")
        if c["read-faults"]:
            self.fail(f"{c['read-faults']} dma-buf frag(s) outside the provider's memory")
        if c["linear-mismatch"]:
            self.fail(f"{c['linear-mismatch']} recvmsg(MSG_SOCK_DEVMEM) call(s) copied bytes "
                      "their SCM_DEVMEM_LINEAR cmsgs do not add up to")
        if c["dontneed-short"]:
            self.fail(f"{c['dontneed-short']} SO_DEVMEM_DONTNEED call(s) freed fewer frags "
                      "than given")
        for loop, cols in enumerate(self.passes):
            self._check_pass(loop, cols)
        if self.kept is not None:
            self.streams = _split_streams(*self.kept)

    def _check_pass(self, loop, cols):
        keys = _stream_keys(cols)
        for i in np.flatnonzero(cols["bad"] >= 0):
            self.fail(f"loop {loop}: {_name(keys[i])}: byte {int(cols['bad'][i])} differs "
                      f"from the ncdevmem -v {self.pattern} pattern")
        if self.expected is None:
            return
        if self.capture:
            self._check_capture_pass(loop, keys, cols)
            return
        seen = set()
        for i, key in enumerate(keys):
            want = self.expected.get(key)
            if want is None:
                continue
            seen.add(key)
            pos, eof = int(cols["pos"][i]), bool(cols["eof"][i])
            if pos != want or (want and not eof):
                self.fail(f"loop {loop}: {_name(key)}: {pos} of {want} bytes read"
                          f"{'' if eof else ', no end of stream'}")
        for key, want in self.expected.items():
            if want and key not in seen:
                self.fail(f"loop {loop}: {_name(key)}: no socket received its {want} bytes")

    def _check_capture_pass(self, loop, keys, cols):
        """A capture's loop: each direction's bytes read, over every socket it opened (a RST
        or a reused 4-tuple opens another), against what the trace carries in order."""
        got = {}
        for key, pos in zip(keys, cols["pos"].tolist(), strict=True):
            got[key] = got.get(key, 0) + pos
        for key in sorted(got.keys() | self.expected.keys()):
            want, read = self.expected.get(key, 0), got.get(key, 0)
            if read != want:
                self.fail(f"loop {loop}: {_name(key)}: {read} bytes read, the capture carries "
                          f"{want} in order")


def _stream_keys(cols):
    """(remote end, local end) of each socket in ``Receiver.close_all()`` columns."""
    out = []
    for fam, la, ra, lp, rp in zip(cols["family"].tolist(), cols["laddr"], cols["raddr"],
                                   cols["lport"].tolist(), cols["rport"].tolist(), strict=True):
        n = 4 if fam == 4 else 16
        out.append(((str(ipaddress.ip_address(ra[:n].tobytes())), rp),
                    (str(ipaddress.ip_address(la[:n].tobytes())), lp)))
    return out


def _name(key):
    (ra, rp), (la, lp) = key
    return f"{ra}:{rp} -> {la}:{lp}"


def _split_streams(cols, data, slots, lengths):
    """The kept bytes by (remote, local) end: each run goes to its slot's socket."""
    by_slot = dict(zip(cols["slot"].tolist(), _stream_keys(cols), strict=True))
    streams = {}
    ends = np.cumsum(lengths.astype(np.int64))
    for slot, end, n in zip(slots.tolist(), ends.tolist(), lengths.tolist(), strict=True):
        streams.setdefault(by_slot[slot], []).append(data[end - n:end].tobytes())
    return streams


def _stream_files(trace, streams):
    """File name -> bytes for ``--dump-streams``: both nodes of every stream of the trace."""
    out = {}
    for n, (node0, node1) in enumerate(trace.tcp_streams()):
        for k, (src, dst) in enumerate(((node0, node1), (node1, node0))):
            out[f"stream-{n}-node{k}.bin"] = b"".join(streams.get((src, dst), []))
    return out
