"""io_uring zero-copy receive (netmem.zcrx, netmem.providers.zcrx, pyx/zcrx.pxi).

Ports the scenarios of tools/testing/selftests/drivers/net/hw/iou-zcrx.py (with iou-zcrx.c as
the application: RECV_ZC, each completion's bytes read from the area at its offset and checked
against ``'a' + i % 26``, every buffer returned through the refill ring) and the errno table of
liburing's test/zcrx.c, on a NIC with header split, RSS over the other queues and an ntuple rule
to the last one, as the selftest sets up.
"""
import errno
from types import SimpleNamespace

import pytest
from rxutil import MSS, Flow, receive

from netmem import Machine, NetmemError
from netmem.dmabuf import udmabuf_create
from netmem.netdev import NetDevice
from netmem.netlink import page_pool_get, qstats_get, queue_get
from netmem.zcrx import (
    IORING_CQE_F_32,
    IORING_CQE_F_MORE,
    IORING_RECV_MULTISHOT,
    IORING_SETUP_CLAMP,
    IORING_SETUP_CQE32,
    IORING_SETUP_CQE_MIXED,
    IORING_SETUP_DEFER_TASKRUN,
    IORING_SETUP_SINGLE_ISSUER,
    IORING_ZCRX_AREA_DMABUF,
    IORING_ZCRX_AREA_MASK,
    PROT_READ,
    PROT_WRITE,
    ZCRX_CTRL_ARM_EVENT,
    ZCRX_CTRL_EXPORT,
    ZCRX_CTRL_FLUSH_RQ,
    ZCRX_EVENT_ALLOC_FAIL,
    ZCRX_EVENT_COPY,
    ZCRX_EVENT_DESC_FLAG_STATS,
    ZCRX_REG_IMPORT,
    ZCRX_REG_NODEV,
    IoUring,
    IoUringRegionDesc,
    IoUringZcrxAreaReg,
    IoUringZcrxIfqReg,
    ZcrxCtrl,
    ZcrxEventDesc,
    mmap_anonymous,
)

PAGE = 4096
FLAGS = IORING_SETUP_DEFER_TASKRUN | IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_CQE32
EV_UD = 0xE7E7
PORT = 9999


def pattern(n, start=0):
    """iou-zcrx.c's payload: byte i is ``'a' + i % 26``."""
    return bytes(97 + (i % 26) for i in range(start, start + n))


def raises(code, fn, *args, **kw):
    with pytest.raises(NetmemError) as e:
        fn(*args, **kw)
    assert e.value.errno == code, e.value
    return e.value


def rig(area_pages=256, rq_entries=4096, ring=64, flags=FLAGS, area="host", rx_buf_len=0,
        event_mask=0, stats=False, hugetlb=False, iommu="none", register=True,
        max_rx_page_size=PAGE):
    """iou-zcrx.py's setup: eth1 with 2 queues, header split, hds-thresh 0, ``ring`` RX
    descriptors, RSS over queue 0 only and an ntuple rule sending port 9999 to queue 1, where
    the zcrx ifq is registered over ``area_pages`` pages of user memory (or a udmabuf)."""
    m = Machine(memory="256MiB", cpus=2, iommu=iommu)
    m.pci.add_endpoint(m.pci.add_root_port(m.pci.host_bridges[0]), "eth1", kind="nic")
    nic = NetDevice(m, "eth1", num_rx_queues=2, max_rx_page_size=max_rx_page_size)
    nic.ethtool.set_ringparam(tcp_data_split="on", hds_thresh=0, rx_ring_size=ring)
    nic.ethtool.set_rxfh(equal=1)
    nic.ethtool.add_ntuple("tcp4", dst_port=PORT, queue=1)
    r = IoUring(m, 64, flags)
    d = SimpleNamespace(m=m, nic=nic, ring=r, mem=None, buf=None, ifq=None)
    if area == "host":
        d.mem = mmap_anonymous(m, area_pages * PAGE, hugetlb=hugetlb)
        d.area = IoUringZcrxAreaReg(addr=d.mem.addr, len=d.mem.length)
    else:
        d.buf = udmabuf_create(m, area_pages * PAGE)
        d.area = IoUringZcrxAreaReg(len=area_pages * PAGE, flags=IORING_ZCRX_AREA_DMABUF,
                                    dmabuf_fd=d.buf.fd)
    rq_bytes = 128 + 16 * (1 << (rq_entries - 1).bit_length())
    ev = ZcrxEventDesc(user_data=EV_UD, type_mask=event_mask,
                       flags=ZCRX_EVENT_DESC_FLAG_STATS if stats else 0,
                       stats_offset=rq_bytes if stats else 0)
    d.reg = IoUringZcrxIfqReg(if_idx=nic.ifindex, if_rxq=1, rq_entries=rq_entries, area=d.area,
                              region=IoUringRegionDesc(size=rq_bytes + 64), rx_buf_len=rx_buf_len,
                              event_desc=ev)
    if register:
        d.id = r.register_zcrx_ifq(d.reg)
        d.ifq = r.zcrx_ctxs[d.id]
    return d


def teardown(d, *rings):
    for sk in d.m.tcp.sockets():
        sk.close()
    for r in (d.ring, *rings):
        r.close()
    if d.nic.registered:
        d.nic.unregister()
    d.m.quiesce()
    if d.mem is not None:
        d.mem.munmap()
    if d.buf is not None:
        d.buf.close()
    d.m.quiesce()
    assert d.m.leak_report() == []


def read_area(d, off, n):
    """The bytes of a zero-copy completion: the area at its offset (iou-zcrx.c reads
    ``area_ptr + (cqe->off & ~IORING_ZCRX_AREA_MASK)``)."""
    off &= ~IORING_ZCRX_AREA_MASK & (2**64 - 1)
    if d.mem is not None:
        return d.mem.read(d.mem.addr + off, n)
    with d.buf.mmap() as v:
        return bytes(v[off:off + n])


def refill(ifq, cqes, token=0):
    """iou-zcrx.c's return: ``rqe.off = (off & ~IORING_ZCRX_AREA_MASK) | token``, ``rqe.len =
    res``, then a store-release of the tail."""
    t = int(ifq.rq_tail[0])
    mask = ifq.rq_entries - 1
    for c in cqes:
        ifq.rqes[t & mask] = ((int(c["off"]) & ~IORING_ZCRX_AREA_MASK) | token, int(c["res"]), 0)
        t += 1
    ifq.rq_tail[0] = t & 0xffffffff


class App:
    """iou-zcrx.c's process_recvzc() loop: RECV_ZC armed on ``sk``, completions read and
    checked, each buffer returned at once through the refill ring (unless ``give_back`` is
    off). ``out`` the payload, ``final`` the terminal CQE's res, ``events`` the event CQEs."""

    def __init__(self, d, sk, ring=None, zid=None, length=0, user_data=1, give_back=True):
        self.d, self.sk, self.length, self.ud = d, sk, length, user_data
        self.ring = ring or d.ring
        self.zid = d.id if zid is None else zid
        self.ifq = self.ring.zcrx_ctxs[self.zid]
        self.give_back = give_back
        self.out, self.events, self.final = bytearray(), [], None
        self.armed = self.ring.prep_recv_zc(sk, self.zid, len=length, user_data=user_data)

    def step(self):
        """One io_uring_enter() and the CQEs it left; True once the request has ended."""
        self.ring.submit_and_wait()
        cqes = self.ring.completions()
        mine = cqes["user_data"] == self.ud
        data = cqes[mine & (cqes["flags"] & IORING_CQE_F_MORE > 0)]
        for c in data:
            self.out += read_area(self.d, int(c["off"]), int(c["res"]))
        self.events += [int(c["res"]) for c in cqes if c["user_data"] == EV_UD]
        if self.give_back:
            refill(self.ifq, data)
        done = cqes[mine & (cqes["flags"] & IORING_CQE_F_MORE == 0)]
        if len(done):
            self.final = int(done[-1]["res"])
        return self.final is not None or not self.armed


def app_loop(d, sk, rounds=50, **kw):
    """Run the application until its request ends: (payload, terminal res, events)."""
    app = App(d, sk, **kw)
    for _ in range(rounds):
        if app.step():
            break
    return bytes(app.out), app.final, app.events


def stream(d, data, port=PORT, sport=40000, batch=8, **kw):
    """A connection carrying ``data`` fed ``batch`` frames at a time, the application running
    between batches (the sender's window): (payload, terminal res, events)."""
    f = Flow(dport=port, sport=sport)
    frames = [f.syn(), *f.segments(data, flags="A"), f.fin()]
    before = set(d.m.tcp.sockets())
    receive(d.nic, frames[:1])
    (sk,) = set(d.m.tcp.sockets()) - before
    app = App(d, sk, **kw)
    for i in range(1, len(frames), batch):
        receive(d.nic, frames[i:i + batch])
        app.step()
    for _ in range(10):
        if app.step():
            break
    return bytes(app.out), app.final, app.events


def one_socket(d, data, port=PORT):
    """All of a connection to ``port`` carrying ``data`` received at once: its socket."""
    f = Flow(dport=port)
    receive(d.nic, [f.syn(), *f.segments(data, flags="A"), f.fin()])
    (sk,) = d.m.tcp.sockets()
    return sk


# ---- iou-zcrx.py ------------------------------------------------------------------------------

@pytest.mark.parametrize("area", ["host", "dmabuf"])
def test_zcrx(area):
    """``test_zcrx``: the whole stream in zero-copy CQEs (res = length, F_MORE, the zcrx CQE's
    offset in the area), checked byte for byte, then EOF (res 0, no F_MORE); a small area
    (64 buffers) is only enough because each buffer comes back through the refill ring."""
    d = rig(area_pages=64, area=area, ring=16)
    data = pattern(200 * MSS)
    got, final, _ = stream(d, data)
    assert got == data and final == 0
    assert d.ring.cq_overflow == 0
    assert d.nic.rx_queues[1].stats()["hw_drops"] == 0
    teardown(d)


def test_zcrx_cqe_fields():
    """Each data CQE: ``res`` its length, ``IORING_CQE_F_MORE``, and ``off`` the area token
    (0) with the byte offset of the payload in the area: one MSS at the start of a buffer."""
    d = rig(ring=16)
    sk = one_socket(d, pattern(3 * MSS))
    assert d.ring.prep_recv_zc(sk, d.id, user_data=9)
    cqes = d.ring.completions()
    data = cqes[cqes["flags"] & IORING_CQE_F_MORE > 0]
    assert list(data["res"]) == [MSS] * 3 and set(data["user_data"]) == {9}
    assert all(int(o) % PAGE == 0 and int(o) < d.mem.length for o in data["off"])
    assert list(data["__pad"]) == [0] * 3
    d.ring.submit_and_wait()
    (eof,) = d.ring.completions()
    assert (eof["user_data"], eof["res"], eof["flags"]) == (9, 0, 0)
    assert d.ifq.user_refs.sum() == 3
    teardown(d)


def test_zcrx_cqe_mixed_ring_marks_big_cqes():
    """On an IORING_SETUP_CQE_MIXED ring each zcrx CQE carries IORING_CQE_F_32."""
    d = rig(flags=IORING_SETUP_DEFER_TASKRUN | IORING_SETUP_SINGLE_ISSUER |
            IORING_SETUP_CQE_MIXED, ring=16)
    sk = one_socket(d, pattern(MSS))
    d.ring.prep_recv_zc(sk, d.id)
    c = d.ring.completions()[0]
    assert c["flags"] == IORING_CQE_F_MORE | IORING_CQE_F_32
    teardown(d)


def test_zcrx_oneshot():
    """``test_zcrx_oneshot`` (``-o 4``): RECV_ZC with ``len`` 4096 completes (res 0, no F_MORE)
    once 4096 bytes are in; the application re-arms it until the stream ends."""
    d = rig(ring=16)
    data = pattern(12 * MSS)
    sk = one_socket(d, data)
    out, shots = b"", 0
    while True:
        got, final, _ = app_loop(d, sk, length=PAGE, user_data=3)
        out += got
        shots += 1
        assert final == 0
        if len(got) < PAGE:
            break
        assert len(got) == PAGE
    assert out == data and shots == len(data) // PAGE + 1
    teardown(d)


def test_zcrx_large_chunks():
    """``test_zcrx_large_chunks`` (``-x 2``): rx_buf_len of two pages over hugetlb memory;
    the queue's page pool is order 1 and each CQE offset falls in an 8 KiB buffer, on a
    bnxt-like NIC (``QCFG_RX_PAGE_SIZE``); a 4 KiB-only NIC (mlx5, fbnic) refuses the ifq with
    EOPNOTSUPP and leaves nothing behind."""
    d = rig(area_pages=1024, rx_buf_len=2 * PAGE, hugetlb=True, register=False)
    with pytest.raises(NetmemError) as e:
        d.ring.register_zcrx_ifq(d.reg)
    assert e.value.errno == errno.EOPNOTSUPP and not d.ring.zcrx_ctxs
    teardown(d)
    d = rig(area_pages=1024, rx_buf_len=2 * PAGE, hugetlb=True, max_rx_page_size=8 * PAGE)
    assert d.reg.rx_buf_len == 2 * PAGE and d.ifq.provider.rx_page_size == 2 * PAGE
    assert d.nic.rx_queues[1].page_pool.order == 1
    data = pattern(100 * MSS)
    got, final, _ = stream(d, data)
    assert got == data and final == 0
    teardown(d)


def test_zcrx_rx_page_size_only_when_requested():
    """The provider asks the queue for ``rx_buf_len`` (``rx_page_size``) only when userspace
    asked for more than PAGE_SIZE ("io_uring/zcrx: don't set rx_page_size when not
    requested"); ``io_pp_zc_init()`` refuses a pool whose buffers are not the ifq's
    (``order + PAGE_SHIFT != niov_shift``: EINVAL) and takes no ifq reference then."""
    from netmem.providers.zcrx import IoUringPpZcProvider

    from netmem.page_pool import (
        PP_FLAG_ALLOW_UNREADABLE_NETMEM,
        PP_FLAG_DMA_MAP,
        PP_FLAG_DMA_SYNC_DEV,
        PagePoolParams,
        page_pool_create,
    )

    for shift, asked, want in ((13, True, 8192), (12, True, 0), (12, False, 0)):
        ifq = SimpleNamespace(niov_shift=shift, rx_buf_len_requested=asked)
        assert IoUringPpZcProvider(ifq).rx_page_size == want
    d = rig(rx_buf_len=PAGE)
    assert d.ifq.provider.rx_page_size == 0 and d.reg.rx_buf_len == PAGE
    refs = d.ifq.refs
    raises(errno.EINVAL, page_pool_create, d.m, PagePoolParams(
        order=1, pool_size=64, dev=d.nic.pcidev, max_len=2 * PAGE, dma_dir=2,
        flags=PP_FLAG_DMA_MAP | PP_FLAG_DMA_SYNC_DEV | PP_FLAG_ALLOW_UNREADABLE_NETMEM),
        provider=d.ifq.provider)
    assert d.ifq.refs == refs
    teardown(d)


def test_zcrx_rx_buf_len_checks():
    """rx_buf_len: not a power of two or below PAGE_SIZE is EINVAL; larger than the area's
    contiguous pieces (4 KiB pages of small-page memory) is ERANGE."""
    d = rig(register=False)
    for bad in (3 * PAGE, PAGE // 2):
        d.reg.rx_buf_len = bad
        raises(errno.EINVAL, d.ring.register_zcrx_ifq, d.reg)
    d.reg.rx_buf_len = 1 << 21
    raises(errno.ERANGE, d.ring.register_zcrx_ifq, d.reg)
    assert d.nic.rx_queues[1].mp is None
    teardown(d)


def test_zcrx_copy_fallback_event_and_stats():
    """``test_zcrx_notif_copy_fallback`` (``-n``): with no flow rule the stream lands on a
    queue without the provider; RECV_ZC copies it into area buffers (the copy fallback), the
    COPY event posts one CQE (res = ZCRX_EVENT_COPY, the descriptor's user_data) until it is
    re-armed, and zcrx_stats in the refill region counts the copies."""
    d = rig(event_mask=1 << ZCRX_EVENT_COPY, stats=True, ring=16)
    data = pattern(6 * MSS)
    sk = one_socket(d, data, port=PORT + 1)           # RSS: queue 0, no provider
    got, final, events = app_loop(d, sk)
    assert got == data and final == 0
    assert events == [ZCRX_EVENT_COPY]
    assert d.ifq.stats == {"copy_count": 6, "copy_bytes": len(data)}
    sk2 = one_socket_more(d, pattern(MSS), sport=40002, port=PORT + 1)
    _, _, events = app_loop(d, sk2, user_data=4)     # fired, not re-armed: no CQE
    assert events == [] and d.ifq.stats["copy_count"] == 7
    d.ring.register_zcrx_ctrl(ZcrxCtrl(zcrx_id=d.id, op=ZCRX_CTRL_ARM_EVENT,
                                       event_type=ZCRX_EVENT_COPY))
    raises(errno.EINVAL, d.ring.register_zcrx_ctrl,
           ZcrxCtrl(zcrx_id=d.id, op=ZCRX_CTRL_ARM_EVENT, event_type=ZCRX_EVENT_COPY))
    sk2 = one_socket_more(d, pattern(MSS), sport=40001, port=PORT + 1)
    _, _, events = app_loop(d, sk2, user_data=2)
    assert events == [ZCRX_EVENT_COPY]
    teardown(d)


def one_socket_more(d, data, sport, port=PORT):
    f = Flow(dport=port, sport=sport)
    before = set(d.m.tcp.sockets())
    receive(d.nic, [f.syn(), *f.segments(data, flags="A"), f.fin()])
    (sk,) = set(d.m.tcp.sockets()) - before
    return sk


def test_zcrx_copy_fallback_dmabuf_area_is_enomem():
    """The copy fallback needs an area the kernel can read: with a dma-buf area it has no
    buffer (``io_alloc_fallback_niov()`` returns NULL) and RECV_ZC fails with -ENOMEM; nothing
    is consumed."""
    d = rig(area="dmabuf", event_mask=1 << ZCRX_EVENT_COPY, ring=16)
    sk = one_socket(d, pattern(MSS), port=PORT + 1)
    _, final, events = app_loop(d, sk)
    assert final == -errno.ENOMEM and events == []
    teardown(d)


def test_zcrx_no_buffers_event():
    """``test_zcrx_notif_no_buffers`` (``-b``, no refill): once the area is used up the page
    pool's refills fail (rx-alloc-fail) and ALLOC_FAIL posts one event CQE, however often
    they fail after."""
    d = rig(area_pages=32, ring=16, event_mask=1 << ZCRX_EVENT_ALLOC_FAIL)
    data = pattern(60 * MSS)
    got, final, events = stream(d, data, give_back=False)
    assert events == [ZCRX_EVENT_ALLOC_FAIL] and final is None
    assert qstats_get(d.m, d.nic.ifindex)[0]["rx-alloc-fail"] > 0
    assert d.ifq.free_count == 0 and len(got) < len(data)
    teardown(d)


# ---- liburing test/zcrx.c: registration errors -------------------------------------------------

def _set(d, **kw):
    for k, v in kw.items():
        obj = d.area if k.startswith("area_") else d.reg
        setattr(obj, k.removeprefix("area_"), v)


@pytest.mark.parametrize("change, code", [
    ({"if_idx": 99}, errno.ENODEV),                     # test_invalid_if
    ({"if_rxq": -1}, errno.EINVAL),                     # test_invalid_ifq_idx
    ({"if_rxq": 7}, errno.EINVAL),
    ({"rq_entries": 0}, errno.EINVAL),                  # test_rq_setup
    ({"rq_entries": 0xFFFFFFFF}, errno.EINVAL),
    ({"area": None}, errno.EFAULT),                     # test_null_area_reg_struct
    ({"region": None}, errno.EFAULT),
    ({"area_addr": 0}, errno.EFAULT),                   # test_null_area
    ({"area_addr": "+1"}, errno.EINVAL),                # test_misaligned_area
    ({"area_len": "+1"}, errno.EINVAL),
    ({"area_len": "x2"}, errno.EFAULT),                 # test_larger_than_alloc_area
    ({"area_len": 0}, errno.EFAULT),
    ({"area_len": 2 << 30}, errno.EFAULT),
    ({"area_flags": 2}, errno.EINVAL),
    ({"area_rq_area_token": 1}, errno.EINVAL),
    ({"area_resv2": (0, 1)}, errno.EINVAL),
    ({"area_dmabuf_fd": 5}, errno.EINVAL),
    ({"flags": 4}, errno.EINVAL),
    ({"zcrx_id": 1}, errno.EINVAL),
    ({"resv": (1, 0)}, errno.EINVAL),
    ({"event_desc": ZcrxEventDesc(type_mask=1 << 2)}, errno.EINVAL),
    ({"event_desc": ZcrxEventDesc(flags=2)}, errno.EINVAL),
    ({"event_desc": ZcrxEventDesc(stats_offset=256)}, errno.EINVAL),
    ({"event_desc": ZcrxEventDesc(resv2=(1,) + (0,) * 8)}, errno.EINVAL),
    ({"event_desc": ZcrxEventDesc(flags=1, stats_offset=4)}, errno.EINVAL),
    ({"event_desc": ZcrxEventDesc(flags=1, stats_offset=128)}, errno.ERANGE),
    ({"event_desc": ZcrxEventDesc(flags=1, stats_offset=1 << 20)}, errno.ERANGE),
    ({"region": IoUringRegionDesc(size=1024)}, errno.EINVAL),
])
def test_registration_errno(change, code):
    """Each refused registration leaves nothing behind: no ifq, no provider on the queue, the
    area's pages unpinned (the leak check)."""
    d = rig(register=False)
    for k, v in change.items():
        if v == "+1":
            v = getattr(d.area, k.removeprefix("area_")) + 1
        elif v == "x2":
            v = d.area.len * 2
        _set(d, **{k: v})
    raises(code, d.ring.register_zcrx_ifq, d.reg)
    assert d.ring.zcrx_ctxs == {} and d.nic.rx_queues[1].mp is None
    assert not d.m._zcrx_ifqs
    teardown(d)


@pytest.mark.parametrize("prot", [PROT_READ, PROT_WRITE])
def test_registration_area_access(prot):
    """test_area_access: an area that is not readable and writable cannot be pinned: EFAULT."""
    d = rig(register=False)
    d.mem.munmap()
    d.mem = mmap_anonymous(d.m, 16 * PAGE, prot=prot)
    d.area.addr, d.area.len = d.mem.addr, d.mem.length
    raises(errno.EFAULT, d.ring.register_zcrx_ifq, d.reg)
    teardown(d)


@pytest.mark.parametrize("flags, code", [
    (IORING_SETUP_CQE32 | IORING_SETUP_SINGLE_ISSUER, errno.EINVAL),   # no DEFER_TASKRUN
    (IORING_SETUP_DEFER_TASKRUN | IORING_SETUP_SINGLE_ISSUER, errno.EINVAL),   # 16-byte CQEs
])
def test_registration_ring_setup_flags(flags, code):
    d = rig(register=False, flags=flags)
    raises(code, d.ring.register_zcrx_ifq, d.reg)
    teardown(d)


def test_registration_needs_cap_net_admin():
    d = rig(register=False)
    d.ring.cap_net_admin = False
    raises(errno.EPERM, d.ring.register_zcrx_ifq, d.reg)
    teardown(d)


def test_rq_entries_round_up_and_clamp():
    """A count that is not a power of two is rounded up; above 32768 it is EINVAL, or clamped
    on an IORING_SETUP_CLAMP ring."""
    d = rig(rq_entries=100)
    assert d.reg.rq_entries == 128 and len(d.ifq.rqes) == 128
    assert d.reg.offsets == {"head": 0, "tail": 64, "rqes": 128}
    r2 = IoUring(d.m, 64, FLAGS | IORING_SETUP_CLAMP)
    mem = mmap_anonymous(d.m, 16 * PAGE)
    reg = IoUringZcrxIfqReg(if_idx=d.nic.ifindex, if_rxq=0, rq_entries=40000,
                            area=IoUringZcrxAreaReg(addr=mem.addr, len=mem.length),
                            region=IoUringRegionDesc(size=128 + 16 * 32768))
    r2.register_zcrx_ifq(reg)
    assert reg.rq_entries == 32768
    r2.close()
    mem.munmap()
    teardown(d)


def test_second_registration_of_a_bound_queue_fails():
    """The queue already has a provider: another ifq on it fails (EEXIST), from this ring or
    another, and leaves the first alone."""
    d = rig()
    r2 = IoUring(d.m, 64, FLAGS)
    for r in (d.ring, r2):
        mem = mmap_anonymous(d.m, 16 * PAGE)
        reg = IoUringZcrxIfqReg(if_idx=d.nic.ifindex, if_rxq=1, rq_entries=64,
                                area=IoUringZcrxAreaReg(addr=mem.addr, len=mem.length),
                                region=IoUringRegionDesc(size=4096))
        raises(errno.EEXIST, r.register_zcrx_ifq, reg)
        mem.munmap()
    assert d.nic.rx_queues[1].mp is d.ifq.provider
    teardown(d, r2)


def test_recv_zc_errors():
    """RECV_ZC on something that is not a socket: -ENOTSOCK; an unknown ifq index, no
    MULTISHOT, msg_flags: -EINVAL; none sets F_MORE."""
    d = rig()
    r = d.ring
    assert not r.prep_recv_zc(object(), d.id, user_data=1)
    sk = one_socket(d, pattern(MSS))
    assert not r.prep_recv_zc(sk, d.id + 5, user_data=2)
    assert not r.prep_recv_zc(sk, d.id, user_data=3, ioprio=0)
    assert not r.prep_recv_zc(sk, d.id, user_data=4, msg_flags=1)
    cqes = r.completions()
    assert [(int(c["user_data"]), int(c["res"]), int(c["flags"])) for c in cqes] == [
        (1, -errno.ENOTSOCK, 0), (2, -errno.EINVAL, 0), (3, -errno.EINVAL, 0),
        (4, -errno.EINVAL, 0)]
    assert r.prep_recv_zc(sk, d.id, user_data=5, ioprio=IORING_RECV_MULTISHOT)
    teardown(d)


def test_refill_garbage_is_ignored():
    """Refill entries naming another area, an offset past the area, or a nonzero __pad, and
    entries for buffers the user does not hold, are taken off the ring and change nothing
    (``io_parse_rqe()``, the user-ref check); the good ones give the buffers back through the
    page pool's next refill."""
    d = rig(area_pages=20, ring=16)
    sk = one_socket(d, pattern(4 * MSS))
    d.ring.prep_recv_zc(sk, d.id)
    cqes = d.ring.completions()
    good = cqes[cqes["flags"] & IORING_CQE_F_MORE > 0]
    t = int(d.ifq.rq_tail[0])
    bad = [(1 << 48 | int(good[0]["off"]), 0, 0), (d.mem.length, 0, 0),
           (int(good[0]["off"]), 0, 1), (19 * PAGE, 0, 0)]
    for i, e in enumerate(bad):
        d.ifq.rqes[t + i] = e
    d.ifq.rq_tail[0] = t + len(bad)
    assert d.ring.register_zcrx_ctrl(ZcrxCtrl(zcrx_id=d.id, op=ZCRX_CTRL_FLUSH_RQ)) == 4
    assert d.ifq.user_refs.sum() == 4 and int(d.ifq.rq_head[0]) == t + 4
    refill(d.ifq, good)
    f = Flow(dport=PORT, sport=40002)       # the cache is empty: the next refill reads the ring
    receive(d.nic, [f.syn(), *f.segments(pattern(MSS), flags="A")])
    assert d.ifq.user_refs.sum() == 0
    assert d.ifq.cached_rq_head == int(d.ifq.rq_tail[0]) == int(d.ifq.rq_head[0])
    teardown(d)


# ---- NODEV, FLUSH_RQ, EXPORT/IMPORT (liburing's 2026 rewrite) ----------------------------------

def test_nodev_copy_only_and_flush_rq():
    """ZCRX_REG_NODEV: no device; every byte goes through the copy fallback; nothing consumes
    the refill ring until ZCRX_CTRL_FLUSH_RQ, which returns the buffers to the freelist."""
    d = rig(register=False)
    d.reg.flags, d.reg.if_idx, d.reg.if_rxq = ZCRX_REG_NODEV, 0, 0
    zid = d.ring.register_zcrx_ifq(d.reg)
    ifq = d.ring.zcrx_ctxs[zid]
    assert ifq.netdev is None and ifq.provider is None and ifq.free_count == 256
    data = pattern(3 * MSS)
    sk = one_socket(d, data, port=PORT + 1)
    d.id = zid
    got, final, _ = app_loop(d, sk)
    assert got == data and final == 0
    assert ifq.free_count == 256 - 3 and int(ifq.rq_head[0]) == 0
    assert d.ring.register_zcrx_ctrl(ZcrxCtrl(zcrx_id=zid, op=ZCRX_CTRL_FLUSH_RQ)) == 3
    assert ifq.free_count == 256 and ifq.user_refs.sum() == 0
    assert int(ifq.rq_head[0]) == 3
    teardown(d)


def test_nodev_takes_page_size_buffers_only():
    d = rig(register=False)
    d.reg.flags, d.reg.rx_buf_len = ZCRX_REG_NODEV, 2 * PAGE
    raises(errno.EINVAL, d.ring.register_zcrx_ifq, d.reg)
    teardown(d)


def test_ctrl_errors():
    d = rig()
    raises(errno.ENXIO, d.ring.register_zcrx_ctrl, ZcrxCtrl(zcrx_id=7))
    raises(errno.EINVAL, d.ring.register_zcrx_ctrl, ZcrxCtrl(zcrx_id=d.id, resv=(0, 1)))
    raises(errno.EINVAL, d.ring.register_zcrx_ctrl,
           ZcrxCtrl(zcrx_id=d.id, op=ZCRX_CTRL_EXPORT, zcrx_fd=3))
    raises(errno.EOPNOTSUPP, d.ring.register_zcrx_ctrl, ZcrxCtrl(zcrx_id=d.id, op=9))
    raises(errno.EINVAL, d.ring.register_zcrx_ctrl,     # not fired yet
           ZcrxCtrl(zcrx_id=d.id, op=ZCRX_CTRL_ARM_EVENT, event_type=ZCRX_EVENT_COPY))
    raises(errno.EINVAL, d.ring.register_zcrx_ctrl,
           ZcrxCtrl(zcrx_id=d.id, op=ZCRX_CTRL_ARM_EVENT, event_type=5))
    teardown(d)


def test_export_and_import_share_the_ifq():
    """ZCRX_CTRL_EXPORT gives an fd; a second ring registers it with ZCRX_REG_IMPORT
    (if_rxq, rq_entries, area and region must be 0) and receives through the same ifq and
    refill ring; the ifq lives until its last ring and its fd are gone."""
    d = rig(area_pages=64, ring=16)
    ctrl = ZcrxCtrl(zcrx_id=d.id, op=ZCRX_CTRL_EXPORT)
    fd = d.ring.register_zcrx_ctrl(ctrl)
    assert ctrl.zcrx_fd == fd
    r2 = IoUring(d.m, 64, FLAGS)
    bad = IoUringZcrxIfqReg(if_idx=fd, flags=ZCRX_REG_IMPORT, rq_entries=64)
    raises(errno.EINVAL, r2.register_zcrx_ifq, bad)
    raises(errno.EBADF, r2.register_zcrx_ifq,
           IoUringZcrxIfqReg(if_idx=999, flags=ZCRX_REG_IMPORT))
    zid2 = r2.register_zcrx_ifq(IoUringZcrxIfqReg(if_idx=fd, flags=ZCRX_REG_IMPORT))
    assert r2.zcrx_ctxs[zid2] is d.ifq
    d.ring.close()                          # the first ring goes; the ifq stays
    d.ring.close_fd(fd)
    assert d.nic.rx_queues[1].mp is d.ifq.provider
    data = pattern(150 * MSS)
    got, final, _ = stream(d, data, ring=r2, zid=zid2)
    assert got == data and final == 0
    teardown(d, r2)
    assert d.ifq.freed


def test_scrub_at_teardown_takes_back_user_buffers():
    """Buffers the application never returned are taken back when the ring goes
    (``io_zcrx_scrub()``): zero-copy and copy-fallback ones alike, nothing leaks."""
    d = rig(ring=16)
    sk = one_socket(d, pattern(5 * MSS))
    sk2 = one_socket_more(d, pattern(2 * MSS), sport=40001, port=PORT + 1)
    d.ring.prep_recv_zc(sk, d.id)
    d.ring.prep_recv_zc(sk2, d.id, user_data=2)
    assert d.ifq.user_refs.sum() == 7
    teardown(d)


def test_netlink_shows_io_uring():
    """``io_pp_nl_fill()``: queue-get and page-pool-get show an ``io-uring`` nest on the bound
    queue and its pool, and not after the ring is gone."""
    d = rig()
    assert queue_get(d.m, d.nic.ifindex, 1)["io-uring"] == {}
    assert "io-uring" not in queue_get(d.m, d.nic.ifindex, 0)
    pool = d.nic.rx_queues[1].page_pool
    assert page_pool_get(d.m, pool.id)["io-uring"] == {}
    d.ring.close()
    assert "io-uring" not in queue_get(d.m, d.nic.ifindex, 1)
    teardown(d)


def test_iommu_zero_copy_through_the_area_mapping():
    """Under dma-iommu the NIC writes the payload through the area's IOVA mapping: no fault,
    no unmapped access, the bytes in user memory."""
    d = rig(area_pages=64, ring=16, iommu="dma-iommu")
    data = pattern(80 * MSS)
    got, final, _ = stream(d, data)
    assert got == data and final == 0
    assert d.m.iommu.faults == [] and d.m.iommu.unmapped_accesses == []
    teardown(d)


def test_queue_restart_returns_old_pool_buffers_to_their_pool():
    """A ring resize restarts the bound queue: buffers the user held from the old pool, when
    refilled, go back to that pool (``io_zcrx_return_niov()``), which then goes away."""
    d = rig(area_pages=64, ring=16)
    sk = one_socket(d, pattern(4 * MSS))
    d.ring.prep_recv_zc(sk, d.id)
    cqes = d.ring.completions()
    old = d.nic.rx_queues[1].page_pool
    d.nic.ethtool.set_ringparam(rx_ring_size=32)
    assert d.nic.rx_queues[1].page_pool is not old
    refill(d.ifq, cqes[cqes["flags"] & IORING_CQE_F_MORE > 0])
    receive(d.nic, [Flow(dport=PORT, sport=40003).syn()])
    d.m.quiesce()
    assert old not in d.m.page_pools and d.ifq.user_refs.sum() == 0
    teardown(d)



# ---- netmem-replay --provider zcrx -------------------------------------------------------------

@pytest.mark.parametrize("area", ["host", "dmabuf"])
def test_replay_zcrx(area):
    """``netmem-replay --provider zcrx --provider-arg zcrx_area=AREA``: iou-zcrx.c's loop in C
    reads every stream through RECV_ZC, checks the pattern, returns every buffer through the
    refill ring; validation passes and nothing is in flight after teardown."""
    from netmem.replay import Config, run

    r = run(Config(provider="zcrx", provider_args={"zcrx_area": area}, connections=4,
                   payload=64 << 10, progress=False))
    assert r.exit_code == 0, r.doc["validation"]
    assert r.doc["validation"]["result"] == "ok"
    assert r.doc["inflight-after-teardown"] == 0 and r.doc["leaks"] == []
    c = r.doc["devmem"]
    assert c["zcrx-cqes"] > 0 and c["zcrx-cqes"] == c["refill-entries"]
    assert c["dmabuf-frags"] == 0 and c["tokens-returned"] == 0


@pytest.mark.parametrize("area", ["host", "dmabuf"])
def test_replay_zcrx_large_buffers(area):
    """``--rx-buf-len 16KiB`` on hugetlb memory or a udmabuf, on the bnxt-like NIC it
    implies."""
    from netmem.replay import Config, run

    r = run(Config(provider="zcrx", rx_buf_size=16384, provider_args={"zcrx_area": area},
                   connections=4,
                   payload=64 << 10, progress=False))
    assert r.exit_code == 0, r.doc["validation"]
