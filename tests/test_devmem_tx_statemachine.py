"""A Hypothesis state machine over devmem TX: sends from random iovecs of a TX binding (some past
the end of the dma-buf), ACKs of random amounts with the window opened or shut, the wire
received by another NIC, the error queue read, and an unbind with sends in flight, in any order,
with and without an IOMMU.
After every step: the binding's reference count is its user's (until unbind) plus one per
queued frag; what the receiver read is a prefix of what the sends queued; the notifications read
so far cover send ids 0, 1, ... in order, without a gap or overlap. Teardown acks everything:
the receiver has every byte, the notifications cover every send, the binding is freed and
nothing leaks.
"""
import errno

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from test_devmem_tx import Rig, put

from netmem import NetmemError

SETTINGS = settings(derandomize=True, database=None, max_examples=40, stateful_step_count=30,
                    deadline=None, suppress_health_check=[HealthCheck.too_slow])
SIZE = 1 << 20
PATTERN = bytes((k * 7 + (k >> 8)) & 0xff for k in range(1 << 17))
IOV = st.tuples(st.one_of(st.integers(0, len(PATTERN) - 6000), st.integers(SIZE - 8, SIZE + 8)),
                st.integers(1, 6000))


class DevmemTxStateMachine(RuleBasedStateMachine):

    @initialize(iommu=st.sampled_from(["none", "dma-iommu"]), wnd=st.sampled_from([0, 20000,
                                                                                    1 << 20]))
    def setup(self, iommu, wnd):
        self.r = Rig(iommu=iommu, wnd=wnd)
        put(self.r, 0, PATTERN)
        self.queued = b""           # every byte the sends queued, in order
        self.read = b""             # what the receiver read
        self.next_id = 0            # the notification id of the next send
        self.notified = 0           # notifications read cover ids [0, notified)
        self.bound = True

    def _expected(self, iov):
        """The bytes of ``iov`` up to the first one past the dma-buf."""
        out = b""
        for off, n in iov:
            if off + n > SIZE:
                return out, True
            out += PATTERN[off:off + n] if off + n <= len(PATTERN) else bytes(n)
        return out, False

    @rule(iov=st.lists(IOV, min_size=1, max_size=4))
    def send(self, iov):
        want, faults = self._expected(iov)
        try:
            n = self.r.send(iov)
        except NetmemError as e:
            assert e.errno == (errno.EFAULT if self.bound else errno.EINVAL)
            assert not self.bound or faults
            return
        assert self.bound and 0 < n <= len(want)
        assert n == len(want) or faults
        self.queued += want[:n]
        self.next_id += 1

    @rule(frac=st.floats(0, 1), wnd=st.sampled_from([None, 0, 20000, 1 << 20]))
    def ack(self, frac, wnd):
        i = self.r.sk.info()
        self.r.sk.ack(i["snd_una"] + int(frac * ((i["snd_nxt"] - i["snd_una"]) & 0xffffffff)),
                      wnd)

    @rule()
    def deliver(self):
        self.read += self.r.deliver()

    @rule()
    def read_errqueue(self):
        while True:
            try:
                e = self.r.sk.recvmsg_errqueue()
            except NetmemError as err:
                assert err.errno == errno.EAGAIN
                return
            assert e.ee_info == self.notified and e.ee_info <= e.ee_data < self.next_id
            self.notified = e.ee_data + 1

    @precondition(lambda self: self.bound)
    @rule()
    def unbind(self):
        self.r.nl.close()
        self.bound = False

    @invariant()
    def references(self):
        assert self.r.binding.refcount == int(self.bound) + self.r.sk.info()["frags"]

    @invariant()
    def prefix(self):
        assert self.queued.startswith(self.read)

    def teardown(self):
        r = self.r
        r.sk.ack(r.sk.info()["snd_una"], 1 << 30)
        r.ack_all()
        self.deliver()
        self.read_errqueue()
        assert self.read == self.queued and self.notified == self.next_id
        r.teardown()


def test_devmem_tx_state_machine():
    run_state_machine_as_test(DevmemTxStateMachine, settings=SETTINGS)
