"""Tests of devmem TCP's socket side against Linux 6.18: where the payload lands (the dma-buf,
headers in the header pool), ``recvmsg(MSG_SOCK_DEVMEM)`` as tcp_recvmsg_locked() and
tcp_recvmsg_dmabuf() (net/ipv4/tcp.c) run it (SCM_DEVMEM_LINEAR and SCM_DEVMEM_DMABUF cmsgs,
tokens in sk->sk_user_frags from 1, a pp reference per token, 40 bytes of control buffer per
cmsg and ETOOSMALL, bufsize, one readability per call, EFAULT without the flag, EOF and RST),
``SO_DEVMEM_DONTNEED`` as sock_devmem_dontneed() (net/core/sock.c) runs it, close() releasing
every token (tcp_release_user_frags()), and ncdevmem's validation pattern read back through the
dma-buf for both exporters, with and without an IOMMU, over every layout.
"""
import errno
import struct

import pytest
from devmemutil import (
    CMSG,
    ETOOSMALL,
    PAGE,
    MiB,
    described,
    frag_bytes,
    niov_of,
    raises,
    read_devmem,
    setup,
    stream_of,
    teardown,
)
from rxutil import MSS, Flow, payload, receive

from netmem import (
    DMA_FROM_DEVICE,
    PP_FLAG_ALLOW_UNREADABLE_NETMEM,
    PP_FLAG_DMA_MAP,
    PP_FLAG_DMA_SYNC_DEV,
    PagePoolParams,
    page_pool_create,
)
from netmem.flows import generate
from netmem.skb import napi_alloc_skb, netif_receive_skb
from netmem.tcp import (
    MSG_SOCK_DEVMEM,
    SCM_DEVMEM_DMABUF,
    SCM_DEVMEM_LINEAR,
    SO_DEVMEM_DONTNEED,
    SOL_SOCKET,
    DmabufCmsg,
    DmabufToken,
)

DEVMEM = MSG_SOCK_DEVMEM
MAX_DONTNEED_TOKENS, MAX_DONTNEED_FRAGS = 128, 1024


def dontneed(sk, tokens):
    return sk.setsockopt(SOL_SOCKET, SO_DEVMEM_DONTNEED, tokens)


def tokens_of(anc):
    return [c.frag_token for _, typ, c in anc if typ == SCM_DEVMEM_DMABUF]


def one_socket(d, frames):
    receive(d.nic, frames)
    (sk,) = d.m.tcp.sockets()
    return sk


# ---- where the bytes land ---------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["udmabuf", "gpu"])
def test_payload_lands_in_the_dmabuf_and_headers_in_the_header_pool(kind):
    d = setup(kind=kind, ring=16)
    q = d.nic.rx_queues[0]
    f = Flow()
    data = payload(5 * MSS)
    sk = one_socket(d, [f.syn(), *f.segments(data, flags="PA")])
    # Every frame was split: headers into the header pool's buffers, payload into net_iovs.
    assert q.stats()["hds_split"] == 6
    # The skbs are unreadable: a plain read is EFAULT and consumes nothing.
    raises(errno.EFAULT, sk.recv, 1 << 20)
    raises(errno.EFAULT, sk.recvmsg, 1 << 20, 4000)
    assert sk.info()["copied_seq"] == f.isn + 1
    got, anc, msg_flags, addr = sk.recvmsg(1 << 20, 4000, DEVMEM)
    assert (got, msg_flags, addr) == (b"", 0, None)
    assert [typ for _, typ, _ in anc] == [SCM_DEVMEM_DMABUF] * 5
    # Each frag starts a net_iov: the dma-buf holds the payload and nothing of the headers.
    for i, (_, _, c) in enumerate(anc):
        assert c.frag_offset % PAGE == 0 and c.frag_size == MSS
        assert frag_bytes(d.buf, c) == data[i * MSS:(i + 1) * MSS]
    if kind == "udmabuf":
        with d.buf.mmap() as v:
            assert bytes(v[anc[0][2].frag_offset + MSS:anc[0][2].frag_offset + PAGE]) == \
                bytes(PAGE - MSS)
    else:
        raises(errno.EFAULT, d.buf.mmap)
    teardown(d)


def test_dmabuf_cmsg_fields_and_tokens_from_1():
    d = setup(ring=16)
    f = Flow()
    data = payload(3 * MSS)
    sk = one_socket(d, [f.syn(), *f.segments(data, flags="PA")])
    got, anc, _, _ = sk.recvmsg(1 << 20, 4000, DEVMEM)
    assert got == b""
    offs = [c.frag_offset for _, _, c in anc]
    assert [a[:2] for a in anc] == [(SOL_SOCKET, SCM_DEVMEM_DMABUF)] * 3
    assert [c for _, _, c in anc] == [DmabufCmsg(off, MSS, i + 1, d.id, 0)
                                      for i, off in enumerate(offs)]
    assert described(got, anc) == 3 * MSS
    assert sk.info()["devmem_tokens"] == 3
    teardown(d)


def test_linear_bytes_come_with_an_scm_devmem_linear_cmsg():
    """A driver that leaves payload bytes in the head of an skb whose frags are net_iovs (the
    model's driver never does; the skb is built by hand): tcp_recvmsg_dmabuf() copies them into
    the iov and says how many in an SCM_DEVMEM_LINEAR cmsg, whose other fields are 0."""
    d = setup(ring=16)
    m, b = d.m, d.binding
    pool = page_pool_create(m, PagePoolParams(
        pool_size=16, dev=d.nic.pcidev, dma_dir=DMA_FROM_DEVICE, max_len=PAGE,
        flags=PP_FLAG_ALLOW_UNREADABLE_NETMEM | PP_FLAG_DMA_MAP | PP_FLAG_DMA_SYNC_DEV),
        provider=b.provider)
    f = Flow()
    sk = one_socket(d, [f.syn(), f.data(payload(MSS), flags="PA")])

    def linear_skb(n_linear, n_frag):
        """One segment: headers and ``n_linear`` payload bytes in the head, ``n_frag`` in a
        net_iov of the binding."""
        data = payload(n_linear + n_frag, seed=f.seq)
        frame = f.data(data, flags="PA")
        hdr = len(frame) - len(data) + n_linear
        ref = pool.alloc_netmem()
        owner = next(o for o in b.owners if o._base <= ref >> 1 < o._base + o.num_niovs)
        d.buf.write_device(owner.net_iov_virtual_addr(ref), frame[hdr:])
        skb = napi_alloc_skb(m)
        skb.put(frame[:hdr])
        skb.add_rx_frag(ref, 0, n_frag, PAGE)
        skb.mark_for_recycle()
        assert skb.unreadable
        netif_receive_skb(d.nic, skb)
        return data

    second = linear_skb(100, 1000)
    assert sk.info()["rcv_queue_skbs"] == 2     # a kmalloc'ed head is never stolen
    # The first skb takes the only cmsg the buffer holds; the second one's linear bytes are
    # copied, then their cmsg does not fit: the call returns what the first described, and
    # the copied bytes are not part of it.
    got, anc, _, _ = sk.recvmsg(1 << 20, CMSG, DEVMEM)
    assert got == b"" and described(got, anc) == MSS and tokens_of(anc) == [1]
    raises(ETOOSMALL, sk.recvmsg, 1 << 20, CMSG - 1, DEVMEM)
    # Without the flag the linear part is no more readable than the frags.
    raises(errno.EFAULT, sk.recv, 50)
    got, anc, _, _ = sk.recvmsg(1 << 20, CMSG, DEVMEM)
    assert got == second[:100]
    assert anc == [(SOL_SOCKET, SCM_DEVMEM_LINEAR, DmabufCmsg(frag_size=100))]
    got, anc, _, _ = sk.recvmsg(1 << 20, CMSG, DEVMEM)
    assert got == b"" and stream_of(d.buf, got, anc) == second[100:]
    # Both parts in one call; bufsize cuts inside the linear part.
    third = linear_skb(200, 500)
    got, anc, _, _ = sk.recvmsg(150, 4 * CMSG, DEVMEM)
    assert got == third[:150] and [c.frag_size for _, _, c in anc] == [150]
    got, anc, _, _ = sk.recvmsg(1 << 20, 4 * CMSG, DEVMEM)
    assert [(typ, c.frag_size) for _, typ, c in anc] == [(SCM_DEVMEM_LINEAR, 50),
                                                         (SCM_DEVMEM_DMABUF, 500)]
    assert stream_of(d.buf, got, anc) == third[150:]
    sk.close()
    m.quiesce()
    pool.destroy()
    teardown(d)


# ---- recvmsg rules ------------------------------------------------------------------------------

def test_a_zero_length_recvmsg_still_visits_the_first_skb():
    """tcp_recvmsg_locked()'s loop is a do-while: a 0-byte recvmsg() still reaches
    tcp_recvmsg_dmabuf(), which puts a cmsg for 0 bytes and takes a token (and a pp reference)
    for it. An empty queue is EAGAIN; the end of the stream 0."""
    d = setup(ring=16)
    m = d.m
    f = Flow()
    sk = one_socket(d, [f.syn()])
    raises(errno.EAGAIN, sk.recvmsg, 0, CMSG, DEVMEM)
    data = payload(MSS)
    receive(d.nic, [f.data(data, flags="PA"), f.fin()])
    raises(ETOOSMALL, sk.recvmsg, 0, 0, DEVMEM)
    got, anc, _, _ = sk.recvmsg(0, CMSG, DEVMEM)
    assert got == b"" and len(anc) == 1
    c = anc[0][2]
    assert (c.frag_size, c.frag_token, c.dmabuf_id) == (0, 1, d.id)
    assert m.netmem(niov_of(d.binding, c.frag_offset)).pp_ref_count == 2
    assert (sk.info()["copied_seq"], sk.info()["devmem_tokens"]) == (f.isn + 1, 1)
    assert dontneed(sk, [(1, 1)]) == 1
    got, anc, _, _ = sk.recvmsg(1 << 20, CMSG, DEVMEM)
    assert stream_of(d.buf, got, anc) == data and tokens_of(anc) == [1]
    assert sk.recvmsg(0, CMSG, DEVMEM)[:2] == (b"", [])
    teardown(d)


def test_tokens_reuse_the_lowest_free_after_dontneed():
    d = setup(ring=16)
    f = Flow()
    sk = one_socket(d, [f.syn(), *f.segments(payload(5 * MSS), flags="PA")])
    _, anc, _, _ = sk.recvmsg(1 << 20, 4000, DEVMEM)
    assert tokens_of(anc) == [1, 2, 3, 4, 5]
    assert dontneed(sk, [DmabufToken(2, 1), DmabufToken(4, 1)]) == 2
    receive(d.nic, f.segments(payload(3 * MSS), flags="PA"))
    _, anc, _, _ = sk.recvmsg(1 << 20, 4000, DEVMEM)
    assert tokens_of(anc) == [2, 4, 6]              # xa_alloc(): the lowest free index
    assert sk.info()["devmem_tokens"] == 6
    teardown(d)


def test_each_token_takes_a_pp_reference():
    """A frag read in two calls gets two tokens on one net_iov: page_pool_ref_netmem() per
    token; the net_iov goes home with the last of them."""
    d = setup(ring=16)
    m = d.m
    m.tcp.skb_defer_max = 0                         # consumed skbs are freed at once
    pool = d.nic.rx_queues[0].page_pool
    f = Flow()
    sk = one_socket(d, [f.syn(), f.data(payload(MSS), flags="PA")])
    _, anc1, _, _ = sk.recvmsg(1000, CMSG, DEVMEM)
    ref = niov_of(d.binding, anc1[0][2].frag_offset)
    assert m.netmem(ref).pp_ref_count == 2          # the skb's and the token's
    _, anc2, _, _ = sk.recvmsg(1000, CMSG, DEVMEM)
    c1, c2 = anc1[0][2], anc2[0][2]
    assert (c1.frag_size, c2.frag_size, c2.frag_offset) == (1000, MSS - 1000,
                                                           c1.frag_offset + 1000)
    assert niov_of(d.binding, c2.frag_offset) == ref
    assert m.netmem(ref).pp_ref_count == 2          # the skb is gone: two tokens
    before = pool.stats
    inflight = pool.inflight
    assert dontneed(sk, [(c1.frag_token, 1)]) == 1
    assert m.netmem(ref).pp_ref_count == 1 and pool.stats == before
    assert dontneed(sk, [(c2.frag_token, 1)]) == 1
    assert pool.stats["recycle_ring"] == before["recycle_ring"] + 1
    assert pool.inflight == inflight                # back in the pool, still the pool's
    teardown(d)


def test_recv_without_msg_sock_devmem_is_efault_and_consumes_nothing():
    d = setup(ring=16)
    f = Flow()
    data = payload(2 * MSS)
    sk = one_socket(d, [f.syn(), *f.segments(data, flags="PA")])
    for _ in range(2):
        raises(errno.EFAULT, sk.recv, 100)
        raises(errno.EFAULT, sk.recvmsg, 100, 4000, 0)
    assert (sk.info()["copied_seq"], sk.info()["devmem_tokens"]) == (f.isn + 1, 0)
    assert read_devmem(sk, d.buf)[0] == data
    teardown(d)


def test_one_call_never_mixes_readable_and_unreadable_skbs():
    """tcp_recvmsg_locked() stops where skb_frags_readable() changes. An ntuple rule moves the
    flow to the bound queue and back (ncdevmem steers the same way); the stream then holds host
    pages, net_iovs, host pages."""
    d = setup(num_rx_queues=2, queues=(1,), ring=16)
    et = d.nic.ethtool
    et.set_rxfh(equal=1)                            # RSS: everything to queue 0
    f = Flow()
    data = payload(6 * MSS)
    sk = one_socket(d, [f.syn(), *f.segments(data[:2 * MSS], flags="PA")])
    rule = et.add_ntuple("tcp4", dst_ip=f.dst, dst_port=f.dport, queue=1)
    receive(d.nic, f.segments(data[2 * MSS:4 * MSS], flags="PA"))
    et.del_ntuple(rule)
    receive(d.nic, f.segments(data[4 * MSS:], flags="PA"))
    assert [q.stats()["packets"] for q in d.nic.rx_queues] == [5, 2]
    # Readable data comes with no cmsg at all (data from an unbound queue).
    assert sk.recvmsg(1 << 20, 4000, DEVMEM)[:2] == (data[:2 * MSS], [])
    got, anc, _, _ = sk.recvmsg(1 << 20, 4000, DEVMEM)
    assert got == b"" and len(anc) == 2 and stream_of(d.buf, got, anc) == data[2 * MSS:4 * MSS]
    assert sk.recvmsg(1 << 20, 4000, DEVMEM)[:2] == (data[4 * MSS:], [])
    # Without the flag: the readable part, then EFAULT at the unreadable skb.
    receive(d.nic, f.segments(data[:MSS], flags="PA"))
    et.add_ntuple("tcp4", dst_ip=f.dst, dst_port=f.dport, queue=1)
    receive(d.nic, f.segments(data[MSS:2 * MSS], flags="PA"))
    assert sk.recv(1 << 20) == data[:MSS]
    raises(errno.EFAULT, sk.recv, 1 << 20)
    teardown(d)


def test_control_buffer_holds_40_bytes_per_cmsg():
    """put_cmsg_notrunc(): a cmsg that does not fit whole is ETOOSMALL (525); with nothing
    described that is the call's error, else the call returns the partial count."""
    d = setup(ring=16)
    f = Flow()
    data = payload(3 * MSS)
    # No PSH until the last segment: GRO makes one skb with three frags.
    sk = one_socket(d, [f.syn(), *f.segments(data, last_flags="PA")])
    assert sk.info()["rcv_queue_skbs"] == 1
    for anc in (0, CMSG - 1):
        raises(ETOOSMALL, sk.recvmsg, 1 << 20, anc, DEVMEM)
    assert (sk.info()["copied_seq"], sk.info()["devmem_tokens"]) == (f.isn + 1, 0)
    got, anc, _, _ = sk.recvmsg(1 << 20, 2 * CMSG, DEVMEM)
    assert described(got, anc) == 2 * MSS and tokens_of(anc) == [1, 2]
    assert sk.info()["copied_seq"] == f.isn + 1 + 2 * MSS
    got, anc, _, _ = sk.recvmsg(1 << 20, 2 * CMSG - 1, DEVMEM)     # room for one only
    assert described(got, anc) == MSS and tokens_of(anc) == [3]
    teardown(d)


def test_bufsize_limits_the_bytes_described():
    d = setup(ring=16)
    f = Flow()
    data = payload(3 * MSS)
    sk = one_socket(d, [f.syn(), *f.segments(data, last_flags="PA")])
    got, anc, _, _ = sk.recvmsg(1000, 4000, DEVMEM)
    assert [c.frag_size for _, _, c in anc] == [1000]
    first = anc[0][2]
    got, anc, _, _ = sk.recvmsg(1000, 4000, DEVMEM)
    # The rest of frag 0, then the start of frag 1: frag bytes do not fill the iov, but count.
    assert [c.frag_size for _, _, c in anc] == [MSS - 1000, 1000 - (MSS - 1000)]
    assert anc[0][2].frag_offset == first.frag_offset + 1000
    assert stream_of(d.buf, got, anc) == data[1000:2000]
    assert read_devmem(sk, d.buf, bufsize=1)[0] == data[2000:]
    teardown(d)


def test_eof_rst_and_eagain():
    d = setup(ring=16)
    f = Flow()
    sk = one_socket(d, [f.syn()])
    raises(errno.EAGAIN, sk.recvmsg, 1 << 20, 4000, DEVMEM)
    data = payload(2 * MSS)
    receive(d.nic, [*f.segments(data, flags="PA"), f.fin()])
    got, _, seen = read_devmem(sk, d.buf)
    assert got == data and len(seen) == 2
    assert sk.recvmsg(1 << 20, 4000, DEVMEM)[:2] == (b"", [])     # EOF, again
    g = Flow(sport=40001)
    receive(d.nic, [g.syn(), *g.segments(data, flags="PA")])
    receive(d.nic, [g.rst()])
    sk2 = d.m.tcp.lookup(g.local, g.remote)
    got, anc, _, _ = sk2.recvmsg(1 << 20, 4000, DEVMEM)
    assert stream_of(d.buf, got, anc) == data
    raises(errno.ECONNRESET, sk2.recvmsg, 1 << 20, 4000, DEVMEM)
    assert sk2.recvmsg(1 << 20, 4000, DEVMEM)[:2] == (b"", [])
    # The tokens outlive the connection.
    assert dontneed(sk2, [(1, 2)]) == 2
    teardown(d)


# ---- SO_DEVMEM_DONTNEED -------------------------------------------------------------------------

def test_dontneed_returns_the_frags_freed_and_skips_unknown_tokens():
    d = setup(ring=16)
    f = Flow()
    sk = one_socket(d, [f.syn(), *f.segments(payload(4 * MSS), flags="PA")])
    _, anc, _, _ = sk.recvmsg(1 << 20, 4000, DEVMEM)
    assert tokens_of(anc) == [1, 2, 3, 4]
    assert dontneed(sk, []) == 0
    assert dontneed(sk, [(1, 0)]) == 0              # token_count 0
    assert dontneed(sk, [(0, 1), (5, 100), (1 << 31, 1)]) == 0
    assert dontneed(sk, [(0, 3)]) == 2              # 0 is never a token: 1 and 2
    assert dontneed(sk, [(1, 1), (2, 1)]) == 0      # gone already
    # The option's bytes: struct dmabuf_token[], optlen a multiple of 8.
    raises(errno.EINVAL, dontneed, sk, struct.pack("<III", 3, 1, 0))
    raises(errno.EINVAL, dontneed, sk, [3, 1, 4])
    assert dontneed(sk, struct.pack("<II", 3, 2)) == 2
    assert sk.info()["devmem_tokens"] == 0
    teardown(d)


def test_dontneed_limits():
    """MAX_DONTNEED_TOKENS (128) entries per call, else EINVAL; MAX_DONTNEED_FRAGS (1024)
    tokens looked at per call, counting the unknown ones: the rest of the call is ignored."""
    d = setup(ring=16)
    f = Flow()
    sk = one_socket(d, [f.syn(), f.data(payload(MSS), flags="PA")])
    for _ in range(1100):                           # one byte per call: 1100 tokens, 1 net_iov
        _, anc, _, _ = sk.recvmsg(1, CMSG, DEVMEM)
    assert tokens_of(anc) == [1100]
    raises(errno.EINVAL, dontneed, sk, [(1, 1)] * (MAX_DONTNEED_TOKENS + 1))
    raises(errno.EINVAL, dontneed, sk, bytes(8 * (MAX_DONTNEED_TOKENS + 1)))
    assert sk.info()["devmem_tokens"] == 1100
    # 128 entries of 9: 1152 tokens asked for, the first 1024 looked at.
    assert dontneed(sk, [(1 + 9 * i, 9) for i in range(MAX_DONTNEED_TOKENS)]) == 1024
    assert sk.info()["devmem_tokens"] == 76
    # Unknown tokens count against the limit too.
    assert dontneed(sk, [(1, 1024), (1025, 76)]) == 0
    assert dontneed(sk, [(1025, 76)]) == 76
    teardown(d)


def test_dontneed_recycles_through_the_ring():
    """napi_pp_put_page() -> page_pool_napi_local(): direct recycling needs softirq on the CPU
    of the pool's cpuid (-1 for a driver's pool) or of the NAPI that is polling right now
    (list_owner, set only inside a poll). setsockopt() runs in process context, so the kernel
    always uses the ptr_ring; even a caller in softirq on the queue's CPU, outside a poll,
    finds the NAPI idle and uses the ring too."""
    d = setup(ring=16)
    m = d.m
    m.tcp.skb_defer_max = 0
    pool = d.nic.rx_queues[0].page_pool
    f = Flow()
    sk = one_socket(d, [f.syn(), *f.segments(payload(4 * MSS), flags="PA")])
    _, anc, _, _ = sk.recvmsg(1 << 20, 4000, DEVMEM)
    assert tokens_of(anc) == [1, 2, 3, 4]
    before = pool.stats
    assert dontneed(sk, [(1, 2)]) == 2
    with m.on_cpu(d.nic.rx_queues[0].cpu, softirq=True):
        assert dontneed(sk, [(3, 2)]) == 2
    after = pool.stats
    assert after["recycle_ring"] - before["recycle_ring"] == 4
    assert after["recycle_cached"] == before["recycle_cached"]
    teardown(d)


def test_close_releases_every_token():
    d = setup(ring=16)
    m = d.m
    q = d.nic.rx_queues[0]
    pool = q.page_pool
    f = Flow()
    sk = one_socket(d, [f.syn(), *f.segments(payload(6 * MSS), flags="PA")])
    read_devmem(sk, d.buf, bufsize=2 * MSS, dontneed=False)
    assert sk.info()["devmem_tokens"] == 6
    assert pool.inflight == 16 + 6
    sk.close()                                      # tcp_release_user_frags()
    m.quiesce()
    assert sk._closed and m.tcp.sockets() == []
    # The six came home to the pool's ring; the pool still counts them as its own.
    assert (pool.ring_count, pool.inflight, q.posted[0]) == (6, 22, 16)
    d.nl.close()
    assert pool.freed and pool.inflight == 0
    teardown(d)


def test_close_releases_the_tokens_before_purging_the_ofo_queue():
    """tcp_v4_destroy_sock() runs tcp_release_user_frags() first and skb_rbtree_purge() of
    the out-of-order queue later, so the tokens' net_iovs enter the pool's ptr_ring before the
    out-of-order skb's. The next refill takes the ring in that order into the alloc cache, and
    allocations pop the cache from its end: the out-of-order net_iov comes back first."""
    d = setup(ring=16)
    m = d.m
    pool = d.nic.rx_queues[0].page_pool
    f = Flow()
    at = [f.data(payload(MSS, seed=i), flags="PA", seq=f.isn + 1 + i * MSS) for i in range(4)]
    sk = one_socket(d, [f.syn(), at[0], at[1], at[3]])          # a hole at segment 2
    _, held, seen = read_devmem(sk, d.buf, dontneed=False)
    assert held == [1, 2] and sk.info()["ofo_skbs"] == 1
    token_niovs = [niov_of(d.binding, c.frag_offset) for c in seen]
    sk.close()
    m.quiesce()
    assert pool.ring_count == 3
    cached = [pool.alloc_netmem() for _ in range(pool.alloc_count)]
    got = [pool.alloc_netmem() for _ in range(3)]
    # The ring was [token 1, token 2, ofo]; the cache hands it back from the end.
    assert got[1:] == token_niovs[::-1]
    assert got[0] not in token_niovs
    for ref in cached + got:
        pool.put_netmem(ref)
    teardown(d)


# ---- ncdevmem ----------------------------------------------------------------------------------

@pytest.mark.parametrize("layout", ["contiguous", "pages", "random"])
@pytest.mark.parametrize("iommu", ["none", "dma-iommu"])
@pytest.mark.parametrize("kind", ["udmabuf", "gpu"])
def test_ncdevmem_validation(kind, iommu, layout):
    """ncdevmem's server: the last of two queues bound, ``ethtool -X equal 1`` and an ntuple
    rule steering the flow to it; recvmsg() with an 80000-byte control buffer; each frag
    copied out of the dma-buf at frag_offset (udmabuf: mmap; device memory: a device-to-host
    copy) and its token given back at once. ``-v 7``: bytes 01..06 then 0A, repeating,
    continuous across frags."""
    d = setup(num_rx_queues=2, queues=(1,), size=2 * MiB, kind=kind, layout=layout, seed=3,
              iommu=iommu)
    flows = generate(validate=7, payload=256 << 10, seed=1)
    (conn,) = flows.connections
    d.nic.ethtool.set_rxfh(equal=1)
    d.nic.ethtool.add_ntuple("tcp4", dst_ip=conn.server[0], dst_port=conn.server[1], queue=1)
    d.nic.receive(flows.trace)
    sk = d.m.tcp.lookup(conn.server, conn.client)
    got, _, seen = read_devmem(sk, d.buf, bufsize=800 << 10)
    assert all(c.dmabuf_id == d.id for c in seen)   # else ncdevmem: "flow steering error"
    assert len(got) == 256 << 10
    expect = bytes((i % 7 + 1) if i % 7 != 6 else 0x0A for i in range(len(got)))
    assert got == expect == conn.to_server
    assert {c.frag_offset // PAGE for c in seen} <= set(range(2 * MiB // PAGE))
    assert d.nic.rx_queues[0].stats()["packets"] == 1       # the SYN-ACK, by RSS
    teardown(d)
