"""A Hypothesis state machine over one connection's receive side (pyx/tcp_rx.pxi,
tcp_ack.pxi, tcp_rmem.pxi): segments and GRO packets arriving in order, out of order, again
(duplicates and overlaps) and past the window, application reads of any size, time passing
(delayed ACKs, the RTT autotuning sees), under a tight locked ``sk_rcvbuf`` (memory pressure:
collapsing and pruning) or the autotuned default, with and without SACK.

After every step: ``sk_rmem_alloc`` is the truesize of the skbs queued; every page the pool
has out is in its cache or ring, posted on the device's ring, or held by the socket's queues
(so pruned and collapsed skbs gave theirs back); ``rcv_nxt`` and ``copied_seq`` never go back;
what the application read is the sender's stream, in order. Teardown closes the socket and the
device: nothing leaks.
"""
import errno

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    rule,
    run_state_machine_as_test,
)
from rxutil import Drill, payload

from netmem import Machine, NetmemError, _core
from netmem.netdev import NetDevice
from netmem.netmem import netmem_get_pp

SETTINGS = settings(derandomize=True, database=None, max_examples=60, stateful_step_count=40,
                    deadline=None, suppress_health_check=[HealthCheck.too_slow])
SEGS = 120                          # the sender's stream, in segments


class ReceiverStateMachine(RuleBasedStateMachine):

    @initialize(rcvbuf=st.sampled_from([None, 8000, 20000, 60000]),
                size=st.sampled_from([300, 1000, 1448]), sack=st.booleans())
    def open(self, rcvbuf, size, sack):
        self.m = Machine(seed=1)
        self.nic = NetDevice(self.m, num_rx_queues=1)
        if rcvbuf:
            self.m.tcp.rcvbuf = rcvbuf
        self.d = Drill(self.m, self.nic, size=size, sack=sack)
        self.sk = self.d.syn()
        self.stream = b"".join(payload(size, seed=k) for k in range(SEGS))
        self.read = 0
        self.t = 1.0
        self.last = (0, 0)

    def _tick(self, ms=0.1):
        self.t += ms
        return self.t

    @rule(first=st.integers(0, SEGS - 1), count=st.integers(1, 8))
    def segments(self, first, count):
        """Segments ``first`` .. in one poll (GRO merges what is in order among them)."""
        self.d.burst(self._tick(), first, min(count, SEGS - first))

    @rule(first=st.integers(0, SEGS - 1))
    def next_in_order(self, first):
        """The segment at rcv_nxt, or one a little past it (a hole)."""
        nxt = (self.sk.info()["rcv_nxt"] - self.d.base) // self.d.size
        if nxt + first % 4 < SEGS:
            self.d.seg(self._tick(), nxt + first % 4, flags="A")

    @rule(past=st.integers(1, 1000))
    def past_the_window(self, past):
        info = self.sk.info()
        seq = info["rcv_nxt"] + info["rcv_wnd"] + past
        self.d.at(self._tick(), [self.d.f.data(b"x" * 100, flags="A", seq=seq)])

    @rule(nbytes=st.sampled_from([1, 700, 5000, 1 << 20]))
    def read_some(self, nbytes):
        try:
            got = self.sk.recv(nbytes)
        except NetmemError as e:
            assert e.errno == errno.EAGAIN
            return
        assert got == self.stream[self.read:self.read + len(got)]
        self.read += len(got)

    @rule(ms=st.sampled_from([5, 50, 300]))
    def wait(self, ms):
        self.d.acks(self._tick(ms))

    @invariant()
    def accounting(self):
        if not hasattr(self, "sk"):
            return
        info = self.sk.info()
        assert info["rmem_alloc"] == info["queued_truesize"]
        _core._defer_flush_all(self.m)
        pool = self.nic.rx_queues[0].page_pool
        held = {r for r in _core._sk_netmems(self.m, self.sk._slot)
                if netmem_get_pp(self.m, r) is not None}
        pages = set(self.nic._rxq_ring_netmems(0)) | held
        assert pool.inflight == pool.alloc_count + pool.ring_count + len(pages)
        now = (info["rcv_nxt"] - self.d.base, info["copied_seq"] - self.d.base)
        assert now[0] >= self.last[0] and now[1] >= self.last[1] and now[0] >= now[1]
        self.last = now

    def teardown(self):
        if not hasattr(self, "m"):
            return
        self.d.acks()
        self.sk.close()
        self.nic.unregister()
        self.m.quiesce()
        assert self.m.leak_report() == []


def test_receiver_state_machine():
    run_state_machine_as_test(ReceiverStateMachine, settings=SETTINGS)
