"""skbs: the socket buffer and its frags, for tests and debugging.

The data plane builds and frees skbs in C (pyx/skb.pxi); this module gives a test the kernel's
operations one by one, over the same C skbs: ``napi_alloc_skb`` / ``napi_build_skb``,
``skb_add_rx_frag_netmem``, ``skb_mark_for_recycle``, ``skb_frags_readable``,
``skb_try_coalesce``, ``skb_copy_bits``, ``skb_clone``, ``skb_pp_frag_ref``, ``kfree_skb`` and
``kfree_skb_partial`` (frags of a pp_recycle skb go home through ``napi_pp_put_page``),
``netif_receive_skb`` to hand a built frame to the stack, and ``napi_gro_receive`` /
``napi_gro_flush`` to hand it to a queue's GRO. An ``Skb`` is a handle: freeing it
(coalescing it away, or giving it to the stack) ends it.
"""
from netmem import _core
from netmem.errors import NetmemError

__all__ = ["MAX_SKB_FRAGS", "Skb", "kfree_skb", "napi_alloc_skb", "napi_build_skb",
           "napi_gro_flush", "napi_gro_receive", "netif_receive_skb", "skb_try_coalesce"]

MAX_SKB_FRAGS = _core.MAX_SKB_FRAGS_


class Skb:
    """A handle on one C skb: ``len``, ``data_len``, ``headlen``, ``truesize``, ``frags``
    (``(netmem, offset, len)``), ``pp_recycle``, ``unreadable``, ``cloned``."""

    def __init__(self, machine, index):
        self.machine = machine
        self.index = index
        self._freed = False

    def __repr__(self):
        if self._freed:
            return f"<Skb {self.index} freed>"
        i = self.info()
        return (f"<Skb {self.index} len={i['len']} frags={len(i['frags'])}"
                f"{' unreadable' if i['unreadable'] else ''}>")

    def _idx(self):
        if self._freed:
            raise NetmemError(22, f"skb {self.index} was freed")
        return self.index

    def info(self):
        return _core._skb_info(self.machine, self._idx())

    def __getattr__(self, name):
        if name in ("len", "data_len", "headlen", "truesize", "pp_recycle", "unreadable",
                    "cloned", "frags", "head_frag", "dataref"):
            return self.info()[name]
        raise AttributeError(name)

    @property
    def frags_readable(self):
        """Models ``skb_frags_readable()``."""
        return not self.info()["unreadable"]

    def add_rx_frag(self, netmem, offset, size, truesize):
        """Models ``skb_add_rx_frag_netmem()`` at the next frag slot."""
        _core._skb_add_rx_frag(self.machine, self._idx(), netmem, offset, size, truesize)

    def put(self, data):
        """Models ``skb_put_data()``: append to the linear part."""
        _core._skb_put(self.machine, self._idx(), bytes(data))

    def mark_for_recycle(self):
        """Models ``skb_mark_for_recycle()``."""
        _core._skb_mark_for_recycle(self.machine, self._idx())

    def clone(self):
        """Models ``skb_clone()``: a second skb over the same data (dataref + 1)."""
        return Skb(self.machine, _core._skb_clone(self.machine, self._idx()))

    def pp_frag_ref(self):
        """Models ``skb_pp_frag_ref()``: a pp reference on every frag; EINVAL without
        pp_recycle."""
        _core._skb_pp_frag_ref(self.machine, self._idx())

    def copy_bits(self, offset, n):
        """Models ``skb_copy_bits()``: bytes, or EFAULT (past the end, or past the head of an
        unreadable skb)."""
        return _core._skb_copy_bits(self.machine, self._idx(), offset, n)

    def free(self):
        """Models ``kfree_skb()``."""
        _core._skb_free(self.machine, self._idx(), False, False)
        self._freed = True

    def free_partial(self, head_stolen):
        """Models ``kfree_skb_partial()`` after a coalesce."""
        _core._skb_free(self.machine, self._idx(), True, head_stolen)
        self._freed = True


def napi_alloc_skb(machine, cpu=0):
    """Models ``napi_alloc_skb()``: an empty skb with a kmalloc'ed head (256 bytes)."""
    return Skb(machine, _core._skb_alloc(machine, cpu))


def napi_build_skb(machine, netmem, offset, frag_size, cpu=0):
    """Models ``napi_build_skb()``: the head is ``frag_size`` bytes of a page (head_frag)."""
    return Skb(machine, _core._skb_build(machine, netmem, offset, frag_size, cpu))


def skb_try_coalesce(to, frm):
    """Models ``skb_try_coalesce()``: ``(ok, fragstolen, delta_truesize)``; on success free
    ``frm`` with ``frm.free_partial(fragstolen)`` as the kernel's callers do."""
    return _core._skb_try_coalesce(to.machine, to._idx(), frm._idx())


def kfree_skb(skb):
    skb.free()


def netif_receive_skb(nic, skb):
    """Models a driver handing ``skb`` (a whole frame, its Ethernet header in the head) to the
    stack: ``eth_type_trans()`` then ``netif_receive_skb()`` on ``nic``, without GRO. For frames
    the model's driver never builds, such as payload bytes left in the head of an skb whose
    frags are net_iovs. The stack owns the skb afterwards."""
    nic._netif_receive_skb(skb._idx())
    skb._freed = True


def napi_gro_receive(nic, skb, queue=0, hash=0):
    """Models a driver handing ``skb`` (a whole frame, its headers in the head, no VLAN tag) to
    GRO on RX queue ``queue``: ``eth_type_trans()`` then ``napi_gro_receive()``, with ``hash``
    as the RSS hash (the GRO bucket and flow key). Segments GRO holds wait for
    ``napi_gro_flush()``, as within one NAPI poll. For skbs the model's driver never builds,
    such as one not marked for recycling. The stack owns the skb afterwards."""
    nic._napi_gro_receive(queue, skb._idx(), hash)
    skb._freed = True


def napi_gro_flush(nic, queue=0):
    """Models ``napi_gro_flush()`` at the end of a NAPI poll: every held packet goes up."""
    nic._napi_gro_flush(queue)
