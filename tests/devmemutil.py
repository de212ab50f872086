"""Helpers of the devmem TCP tests: a machine with a GPU and a NIC under one PCIe switch (as
tests/test_dmabuf.py's ``lab()``), a dma-buf of either kind bound to RX queues through the netdev
netlink family, and an ncdevmem-like reader that turns ``recvmsg(MSG_SOCK_DEVMEM)`` cmsgs back
into the byte stream by reading the dma-buf at each ``frag_offset``.
"""
import errno
from types import SimpleNamespace

import pytest
from netmem.providers.dmabuf import net_devmem_lookup_dmabuf

from netmem import Machine, NetmemError
from netmem.dmabuf import add_device_memory, export_device_memory, udmabuf_create
from netmem.netdev import NetDevice
from netmem.netlink import NetlinkSocket
from netmem.tcp import (
    MSG_SOCK_DEVMEM,
    SCM_DEVMEM_DMABUF,
    SCM_DEVMEM_LINEAR,
    SO_DEVMEM_DONTNEED,
    SOL_SOCKET,
)

PAGE = 4096
MiB = 1 << 20
CMSG = 40                               # CMSG_SPACE(sizeof(struct dmabuf_cmsg))
ETOOSMALL = 525


def rxq(*ids):
    """The ``queues`` attribute of bind-rx: ``[{"id": q, "type": "rx"}, ...]``."""
    return [{"id": q, "type": "rx"} for q in ids]


def raises(code, fn, *args, **kw):
    with pytest.raises(NetmemError) as e:
        fn(*args, **kw)
    assert e.value.errno == code, e.value
    return e.value


def lab(m):
    """A root port with a switch holding gpu0 (64 MiB of device memory) and eth1."""
    rp = m.pci.add_root_port(m.pci.host_bridges[0])
    sw = m.pci.add_switch(rp)
    gpu = m.pci.add_endpoint(sw, "gpu0", kind="gpu", bars={0: 64 * MiB})
    m.pci.add_endpoint(sw, "eth1", kind="nic")
    add_device_memory(gpu, 64 * MiB)
    return gpu


def make_dmabuf(m, kind, size, layout="contiguous", seed=0, hugetlb=False):
    """A udmabuf (``kind="udmabuf"``, the CPU reads it; over 2 MiB hugetlb folios with
    ``hugetlb``) or GPU device memory (``"gpu"``)."""
    if kind == "udmabuf":
        return udmabuf_create(m, size, layout, seed, hugetlb=hugetlb)
    return export_device_memory(m.pci["gpu0"], size, layout, seed)


def setup(m=None, queues=(0,), num_rx_queues=1, size=MiB, kind="udmabuf", layout="contiguous",
          seed=0, ring=64, iommu="none", rx_buf_size=None, max_rx_page_size=PAGE, mtu=1500,
          hugetlb=False):
    """A bound NIC: ``m``, ``gpu``, ``nic`` (eth1, header split on, ``ring`` buffers per
    queue, buffers up to ``max_rx_page_size``), ``buf`` (the dma-buf), ``nl`` (the netlink
    socket), ``id`` and ``binding`` (bind-rx with ``rx_buf_size``)."""
    if m is None:
        m = Machine(memory="256MiB", cpus=2, iommu=iommu)
    gpu = lab(m)
    nic = NetDevice(m, "eth1", num_rx_queues=num_rx_queues, mtu=mtu,
                    max_rx_page_size=max_rx_page_size)
    nic.ethtool.set_ringparam(tcp_data_split="on", rx_ring_size=ring)
    buf = make_dmabuf(m, kind, size, layout, seed, hugetlb)
    nl = NetlinkSocket(m)
    bid = nl.bind_rx(nic.ifindex, buf.fd, rxq(*queues), rx_buf_size) if queues else None
    return SimpleNamespace(m=m, gpu=gpu, nic=nic, buf=buf, nl=nl, id=bid,
                           binding=net_devmem_lookup_dmabuf(m, bid) if bid else None)


def teardown(d):
    """Close every socket and the netlink socket, unregister the NIC, close the dma-buf, let
    deferred work run: nothing may be left."""
    for sk in d.m.tcp.sockets():
        sk.close()
    d.nl.close()
    if d.nic.registered:
        d.nic.unregister()
    d.buf.close()
    d.m.quiesce()
    assert d.m.leak_report() == []


def frag_bytes(buf, c):
    """What the NIC wrote for one SCM_DEVMEM_DMABUF cmsg: through ``mmap()`` for a udmabuf
    (as ncdevmem reads), a device-to-host copy for device memory."""
    if buf.readable:
        with buf.mmap() as v:
            return bytes(v[c.frag_offset:c.frag_offset + c.frag_size])
    return buf.read_device(c.frag_offset, c.frag_size)


def stream_of(buf, data, anc):
    """The bytes one recvmsg() returned, in order: linear parts from ``data`` (one
    SCM_DEVMEM_LINEAR cmsg each), frags from the dma-buf; readable data has no cmsg."""
    if not anc:
        return data
    out, pos = bytearray(), 0
    for level, typ, c in anc:
        assert level == SOL_SOCKET
        if typ == SCM_DEVMEM_LINEAR:
            assert (c.frag_offset, c.frag_token, c.dmabuf_id) == (0, 0, 0)
            out += data[pos:pos + c.frag_size]
            pos += c.frag_size
        else:
            assert typ == SCM_DEVMEM_DMABUF
            out += frag_bytes(buf, c)
    assert pos == len(data)
    return bytes(out)


def described(data, anc):
    """recvmsg()'s return value: the bytes copied or described."""
    return len(data) + sum(c.frag_size for _, typ, c in anc if typ == SCM_DEVMEM_DMABUF)


def read_devmem(sk, buf, bufsize=1 << 20, ancbufsize=80000, dontneed=True):
    """Read to the end of the stream, or until nothing is queued, with MSG_SOCK_DEVMEM; give
    each token back at once (ncdevmem's ``{frag_token, 1}``) unless told not to. Returns
    (bytes, tokens still held, the cmsgs seen)."""
    out, held, seen = bytearray(), [], []
    while True:
        try:
            data, anc, _, _ = sk.recvmsg(bufsize, ancbufsize, MSG_SOCK_DEVMEM)
        except NetmemError as e:
            if e.errno == errno.EAGAIN:
                break
            raise
        if not data and not anc:
            break
        out += stream_of(buf, data, anc)
        seen += [c for _, typ, c in anc]
        for _, typ, c in anc:
            if typ != SCM_DEVMEM_DMABUF:
                continue
            if dontneed:
                assert sk.setsockopt(SOL_SOCKET, SO_DEVMEM_DONTNEED, [(c.frag_token, 1)]) == 1
            else:
                held.append(c.frag_token)
    return bytes(out), held, seen


def niov_of(binding, frag_offset):
    """The net_iov (netmem_ref) holding byte ``frag_offset`` of the dma-buf."""
    size = 1 << binding.niov_shift
    for o in binding.owners:
        if o.base_virtual <= frag_offset < o.base_virtual + o.num_niovs * size:
            return o.netmem((frag_offset - o.base_virtual) // size)
    raise AssertionError(f"offset {frag_offset} is in no chunk")


__all__ = ["CMSG", "ETOOSMALL", "MSG_SOCK_DEVMEM", "PAGE", "MiB", "described", "frag_bytes",
           "lab", "make_dmabuf", "niov_of", "raises", "read_devmem", "rxq", "setup",
           "stream_of", "teardown"]
