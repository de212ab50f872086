"""A Hypothesis state machine over one closed-loop sender (``_core.CoreTcpSender``) and a
receiver modelled in Python (what arrived, its cumulative ACK and SACK blocks, D-SACK for a
duplicate): segments are delivered, dropped, reordered and time passes; after every step the
scoreboard agrees with the sender's counts (packets_out, sacked_out, lost_out, retrans_out as
``tcp_verify_left_out()`` and friends expect), the queue is contiguous from snd_una to snd_nxt,
nothing unreceived is acknowledged; at the end, with the losses stopped, the transfer completes.
"""
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test

from netmem._core import CoreTcpSender

US, MS = 1000, 1000000
MSS = 1448
PAYLOAD = 40 * MSS + 300
SACKED_ACKED, SACKED_RETRANS, LOST = 0x01, 0x02, 0x04
FIN = 0x01


class SenderMachine(RuleBasedStateMachine):
    def __init__(self):
        super().__init__()
        self.s = CoreTcpSender("cubic", payload=PAYLOAD)
        self.s.connect(0)
        self.s.out()
        self.now = 100 * US
        self.s.established(self.now, mss=1460, wscale=7, win=65535)
        self.wire = []              # (seq, end) in flight, in arrival order
        self.got = set()            # (seq, end) received
        self.dsack = None
        self._take()

    def _take(self):
        for seq, length, flags, _ in self.s.out():
            self.wire.append((seq, seq + length + (1 if flags & FIN else 0)))

    def _rcv_nxt(self):
        nxt = 1
        for seq, end in sorted(self.got):
            if seq <= nxt < end or (seq == nxt and end == nxt):
                nxt = max(nxt, end)
        return nxt

    def _sacks(self, nxt):
        """The out-of-order ranges above rcv_nxt, merged, the highest first (at most 3), after
        a D-SACK."""
        blocks = []
        for seq, end in sorted(s for s in self.got if s[0] >= nxt):
            if blocks and seq <= blocks[-1][1]:
                blocks[-1][1] = max(blocks[-1][1], end)
            else:
                blocks.append([seq, end])
        out = [tuple(b) for b in reversed(blocks)][:3]
        if self.dsack is not None:
            out = [self.dsack, *out]
            self.dsack = None
        return out

    def _ack(self):
        self.now += 10 * US
        nxt = self._rcv_nxt()
        self.s.ack(self.now, nxt, win=512, sacks=self._sacks(nxt))
        self._take()

    @rule(n=st.integers(1, 8), drops=st.lists(st.booleans(), min_size=8, max_size=8))
    def deliver(self, n, drops):
        for i in range(min(n, len(self.wire))):
            seg = self.wire.pop(0)
            if drops[i]:
                continue
            if seg in self.got or seg[1] <= self._rcv_nxt():
                self.dsack = seg
            self.got.add(seg)
            self._ack()

    @rule(i=st.integers(0, 7))
    def reorder(self, i):
        if i + 1 < len(self.wire):
            self.wire[i], self.wire[i + 1] = self.wire[i + 1], self.wire[i]

    @rule(dt=st.sampled_from([50 * US, 2 * MS, 5 * MS, 300 * MS]))
    def time_passes(self, dt):
        self.now += dt
        self.s.advance(self.now)
        self._take()

    @invariant()
    def scoreboard_agrees(self):
        st_ = self.s.state
        seq, end, sacked = self.s.scoreboard()
        assert st_["packets_out"] == len(seq)
        assert st_["sacked_out"] == int(((sacked & SACKED_ACKED) != 0).sum())
        assert st_["lost_out"] == int(((sacked & LOST) != 0).sum())
        assert st_["retrans_out"] == int(((sacked & SACKED_RETRANS) != 0).sum())
        assert not ((sacked & SACKED_ACKED) & ((sacked & LOST) >> 2)).any()
        if len(seq):
            assert seq[0] == st_["snd_una"] and end[-1] == st_["snd_nxt"]
            assert (seq[1:] == end[:-1]).all()
        assert st_["snd_cwnd"] >= 1
        assert st_["snd_una"] <= self._rcv_nxt()

    def teardown(self):
        """No more losses: deliver everything, let the timers run, until the FIN is acked."""
        for _ in range(2000):
            if self.s.state["done"]:
                break
            while self.wire:
                seg = self.wire.pop(0)
                self.got.add(seg)
                self._ack()
            if not self.s.state["done"]:
                self.now += 300 * MS
                self.s.advance(self.now)
                self._take()
        assert self.s.state["done"]
        assert self._rcv_nxt() == PAYLOAD + 2          # every byte and the FIN


def test_sender_state_machine():
    run_state_machine_as_test(SenderMachine, settings=settings(
        derandomize=True, database=None, max_examples=150, stateful_step_count=40,
        deadline=None, suppress_health_check=[HealthCheck.too_slow]))
