"""A Hypothesis state machine over devmem TCP: bind-rx (a fresh dma-buf each time) on either of
two queues, traffic from three senders (each resends from what its socket has received, so
segments the empty rings dropped come again), recvmsg(MSG_SOCK_DEVMEM) with small and large
buffers, SO_DEVMEM_DONTNEED, closing sockets, closing netlink sockets (unbind) and unregistering
the device, in any order, with and without an IOMMU and over every dma-buf layout.

After every step: what each socket has read is a prefix of what its sender sent (frags read back
through the dma-buf their cmsg names); each socket holds the tokens the test was given and not
yet gave back; each binding's reference count is its user's (until unbind) plus one per pool
that is not freed; and the bytes out of each genpool are the inflight of those pools. Teardown
closes everything and lets deferred work run: each genpool is whole when its binding is freed,
every pool is gone, nothing leaks.
"""
import errno

from devmemutil import PAGE, lab, rxq
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
from netmem.providers.dmabuf import net_devmem_lookup_dmabuf
from rxutil import MSS, Flow, receive

from netmem import Machine, NetmemError
from netmem.dmabuf import udmabuf_create
from netmem.genalloc import gen_pool_avail, gen_pool_size
from netmem.netdev import NetDevice
from netmem.netlink import NetlinkSocket
from netmem.tcp import MSG_SOCK_DEVMEM, SCM_DEVMEM_DMABUF, SO_DEVMEM_DONTNEED, SOL_SOCKET

SETTINGS = settings(derandomize=True, database=None, max_examples=100, stateful_step_count=50,
                    deadline=None, suppress_health_check=[HealthCheck.too_slow])
FLOWS = 3
STREAM = 64 * MSS                   # what each sender has to send


def stream(i):
    return bytes((k * 13 + i * 101 + (k >> 9)) & 0xff for k in range(STREAM))


STREAMS = [stream(i) for i in range(FLOWS)]


class DevmemStateMachine(RuleBasedStateMachine):

    def __init__(self):
        super().__init__()
        self.bindings = {}          # id -> (binding, its dma-buf, its netlink socket or None)
        self.whole = {}             # id -> the genpool was whole when the binding was freed
        self.bufs = []              # every dma-buf made, bound or not
        self.flows = [Flow(dport=5201 + i) for i in range(FLOWS)]
        self.socks = [None] * FLOWS
        self.read = [b""] * FLOWS
        self.held = [set() for _ in range(FLOWS)]
        self.opened = FLOWS

    @initialize(iommu=st.sampled_from(("none", "dma-iommu")),
                layout=st.sampled_from(("contiguous", "pages", "random")))
    def start(self, iommu, layout):
        self.m = Machine(memory="64MiB", cpus=2, iommu=iommu)
        lab(self.m)
        self.layout = layout
        self.nics = []
        self._new_nic()
        self.bind(queue=1, pages=24)

    def _new_nic(self):
        self.nic = NetDevice(self.m, "eth1", num_rx_queues=2)
        self.nics.append(self.nic)
        self.nic.ethtool.set_ringparam(tcp_data_split="on", rx_ring_size=8)
        # Sender 0 to queue 0, sender 1 to queue 1, sender 2 where RSS puts it.
        for i in (0, 1):
            self.nic.ethtool.add_ntuple("tcp4", dst_port=5201 + i, queue=i)

    # -- the control plane ----------------------------------------------------------------------

    @precondition(lambda self: self.nic.registered and len(self.bufs) < 8)
    @rule(queue=st.integers(0, 1), pages=st.sampled_from((24, 64, 8)))
    def bind(self, queue, pages):
        buf = udmabuf_create(self.m, pages * PAGE, self.layout, seed=len(self.bufs))
        self.bufs.append(buf)
        nl = NetlinkSocket(self.m)
        bound = self.nic.rx_queues[queue].mp is not None
        try:
            bid = nl.bind_rx(self.nic.ifindex, buf.fd, rxq(queue))
        except NetmemError as e:
            assert bound and e.errno == errno.EEXIST
            return
        assert not bound
        b = net_devmem_lookup_dmabuf(self.m, bid)
        orig = b._free

        def free(b=b, orig=orig):
            self.whole[b.id] = gen_pool_avail(b.chunk_pool) == gen_pool_size(b.chunk_pool)
            orig()

        b._free = free
        self.bindings[bid] = (b, buf, nl)

    @precondition(lambda self: any(nl for _, _, nl in self.bindings.values()))
    @rule(k=st.integers(0, 1 << 16), later=st.booleans())
    def unbind(self, k, later):
        live = [bid for bid, (_, _, nl) in self.bindings.items() if nl]
        bid = live[k % len(live)]
        b, buf, nl = self.bindings[bid]
        nl.close()
        self.bindings[bid] = (b, buf, None)
        assert net_devmem_lookup_dmabuf(self.m, bid) is None
        if self.nic.registered:     # uninstall leaves mp_params be: the queues are gone
            assert b.provider not in [q.mp for q in self.nic.rx_queues]
        self._later(later)

    def _later(self, later):
        """A second passes: page pools waiting for buffers retry their release, a freed
        binding's work runs."""
        if later:
            self.m.advance(1)

    @precondition(lambda self: self._open() and any(q.mp for q in self.nic.rx_queues))
    @rule()
    def unregister(self):
        bound = [b for b, _, nl in self.bindings.values() if nl and b.bound_rxqs]
        self.nic.unregister()
        # mp_dmabuf_devmem_uninstall() for each queue that still has the provider; an unbound
        # binding keeps its dev (it is not looked at again).
        for b in bound:
            assert b.bound_rxqs == [] and b.dev is None

    @precondition(lambda self: not self.nic.registered)
    @rule()
    def register(self):
        """A new device on the same PCI function (the old sockets live on)."""
        self._new_nic()

    # -- traffic and the sockets ----------------------------------------------------------------

    @precondition(lambda self: self.nic.registered)
    @rule(i=st.integers(0, FLOWS - 1), segs=st.integers(1, 6))
    def traffic(self, i, segs):
        """The sender resends from what the socket has received (a retransmission after the
        device dropped segments its rings had no buffer for); a sender whose socket was closed
        starts a new connection from a new port."""
        f = self.flows[i]
        frames = []
        if self.socks[i] is None:
            frames.append(f.syn())
            start = 0
        else:
            start = self.socks[i].info()["rcv_nxt"] - f.isn - 1
        for n in range(segs):
            lo = start + n * MSS
            if lo >= STREAM:
                break
            frames.append(f.data(STREAMS[i][lo:lo + MSS], seq=f.isn + 1 + lo, flags="PA"))
        receive(self.nic, frames)
        if self.socks[i] is None:
            self.socks[i] = self.m.tcp.lookup(f.local, f.remote)

    def _open(self):
        return [i for i in range(FLOWS) if self.socks[i] is not None]

    @precondition(lambda self: self._open())
    @rule(k=st.integers(0, 1 << 16), bufsize=st.sampled_from((1 << 20, MSS, 1000, 1)),
          ncmsg=st.sampled_from((100, 2, 1, 0)))
    def recvmsg(self, k, bufsize, ncmsg):
        i = self._open()[k % len(self._open())]
        sk = self.socks[i]
        try:
            data, anc, _, _ = sk.recvmsg(bufsize, ncmsg * 40, MSG_SOCK_DEVMEM)
        except NetmemError as e:
            assert e.errno in (errno.EAGAIN, 525), e
            return
        got = bytearray()
        if not anc:
            got += data
        for _, typ, c in anc:
            assert typ == SCM_DEVMEM_DMABUF          # the model's driver leaves no linear part
            assert c.frag_token not in self.held[i]
            self.held[i].add(c.frag_token)
            got += self.bindings[c.dmabuf_id][1].read(c.frag_offset, c.frag_size)
        assert len(anc) <= ncmsg and len(got) <= bufsize
        self.read[i] += bytes(got)
        assert self.read[i] == STREAMS[i][:len(self.read[i])]

    @precondition(lambda self: any(self.held[i] for i in self._open()))
    @rule(k=st.integers(0, 1 << 16), n=st.integers(1, 8), junk=st.booleans(),
          later=st.booleans())
    def dontneed(self, k, n, junk, later):
        i = [i for i in self._open() if self.held[i]][k % len([
            i for i in self._open() if self.held[i]])]
        toks = sorted(self.held[i])[:n]
        ask = [(t, 1) for t in toks] + ([(0, 1), (1 << 30, 2)] if junk else [])
        assert self.socks[i].setsockopt(SOL_SOCKET, SO_DEVMEM_DONTNEED, ask) == len(toks)
        self.held[i] -= set(toks)
        self._later(later)

    @precondition(lambda self: self._open())
    @rule(k=st.integers(0, 1 << 16), later=st.booleans())
    def close_socket(self, k, later):
        i = self._open()[k % len(self._open())]
        self.socks[i].close()
        self.socks[i] = None
        self.held[i] = set()
        self.read[i] = b""
        self.flows[i] = Flow(sport=40000 + self.opened, dport=5201 + i)
        self.opened += 1
        self._later(later)

    # -- invariants -----------------------------------------------------------------------------

    @invariant()
    def tokens_are_the_ones_handed_out(self):
        for i in self._open():
            assert self.socks[i].info()["devmem_tokens"] == len(self.held[i])

    @invariant()
    def references_and_genpools_add_up(self):
        for b, _, nl in self.bindings.values():
            if b.freed:
                continue
            pools = [p for p in self.m.page_pools if p.provider is b.provider]
            assert b.refcount == (nl is not None) + len(pools)
            out = gen_pool_size(b.chunk_pool) - gen_pool_avail(b.chunk_pool)
            assert out == PAGE * sum(p.inflight for p in pools)
            for p in pools:
                p._check_invariants()

    def teardown(self):
        if not hasattr(self, "m"):
            return
        for i in self._open():
            self.socks[i].close()
        for _, _, nl in self.bindings.values():
            if nl is not None:
                nl.close()
        self.nic.unregister()
        for buf in self.bufs:
            buf.close()
        self.m.quiesce()
        assert all(b.freed for b, _, _ in self.bindings.values())
        assert self.whole == dict.fromkeys(self.bindings, True)
        assert self.m.page_pools == []
        assert self.m.leak_report() == []


def test_devmem_state_machine():
    run_state_machine_as_test(DevmemStateMachine, settings=SETTINGS)
