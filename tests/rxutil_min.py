"""A minimal trace builder for tests that need a few TCP frames (scapy)."""
import numpy as np
from scapy.all import IP, TCP, Ether, Raw


class Trace:
    def __init__(self, frames):
        lens = [len(f) for f in frames]
        self.arena = np.frombuffer(b"".join(frames), dtype=np.uint8)
        self.lengths = np.array(lens, dtype=np.uint32)
        self.offsets = np.concatenate([[0], np.cumsum(lens)[:-1]]).astype(np.uint64)
        self.timestamps = np.arange(len(frames), dtype=np.uint64) * 1000


def tcp_trace(nsegs=10, mss=1448, src="10.0.0.1", dst="10.0.0.2", sport=1234, dport=80):
    """SYN, ``nsegs`` full segments, FIN: one flow, Linux-like IP IDs with DF."""
    e = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")

    def seg(i, flags, seq, payload=b""):
        return bytes(e / IP(src=src, dst=dst, flags="DF", id=i) /
                     TCP(sport=sport, dport=dport, flags=flags, seq=seq, ack=1) / Raw(payload))

    frames = [seg(0, "S", 999)]
    frames += [seg(i + 1, "A", 1000 + i * mss, bytes([i & 0xff]) * mss) for i in range(nsegs)]
    frames.append(seg(nsegs + 1, "FA", 1000 + nsegs * mss))
    return Trace(frames)
