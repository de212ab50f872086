"""Pure-Python reference models of the closed loop's link and event queue, the oracles of the
differential tests of pyx/link.pxi and pyx/event_heap.pxi.

Written from the link's definition (docs/design.md, "closed loop, sender side"), not from the C:
a frame is refused when the bytes of the frames not yet fully serialised plus its own exceed
the limit; an accepted frame starts when the wire is free, takes ceil(len * 8e9 / rate) ns, is
lost when a xorshift32 draw (only when loss > 0) falls below loss * 2^32, else arrives after the
delay. The event queue is ``heapq`` on (time, push order).
"""
import heapq
from collections import deque

DROP = (1 << 64) - 1


def xorshift32(x):
    x ^= (x << 13) & 0xFFFFFFFF
    x ^= x >> 17
    x ^= (x << 5) & 0xFFFFFFFF
    return x


class RefLink:
    def __init__(self, rate_bps, delay_ns, queue_bytes, loss=0.0, seed=1):
        self.rate, self.delay, self.limit = rate_bps, delay_ns, queue_bytes
        self.thresh = int(min(loss * 2**32, 2**32 - 1))
        self.rng = seed or 0x9E3779B9
        self.fifo = deque()             # (serialisation end, length)
        self.busy_until = 0
        self.stats = dict.fromkeys(("enqueued", "dropped_queue", "dropped_loss", "delivered",
                                    "bytes"), 0)

    def enqueue(self, length, now):
        while self.fifo and self.fifo[0][0] <= now:
            self.fifo.popleft()
        if sum(n for _, n in self.fifo) + length > self.limit:
            self.stats["dropped_queue"] += 1
            return DROP
        end = max(now, self.busy_until) + -(-length * 8_000_000_000 // self.rate)
        self.busy_until = end
        self.fifo.append((end, length))
        self.stats["enqueued"] += 1
        if self.thresh:
            self.rng = xorshift32(self.rng)
            if self.rng < self.thresh:
                self.stats["dropped_loss"] += 1
                return DROP
        self.stats["delivered"] += 1
        self.stats["bytes"] += length
        return end + self.delay


class RefEventHeap:
    def __init__(self):
        self.h, self.seq = [], 0

    def push(self, time, kind, arg):
        heapq.heappush(self.h, (time, self.seq, kind, arg))
        self.seq += 1

    def pop(self):
        return heapq.heappop(self.h)
