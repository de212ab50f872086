"""Memory providers: pluggable backing for page_pool buffers.

Models include/net/page_pool/memory_provider.h. ``MemoryProvider`` has the six ops of
``struct memory_provider_ops``; the pool calls ``alloc_netmems`` only on its slow path (cache and
ring empty) and ``release_netmem`` when a buffer leaves the pool, as the kernel does. A provider
written in Python works as it is (the core calls it through the interpreter on those two paths
only); a built-in provider can hand the core a C-level fast variant of the two buffer ops.

Providers register under the entry-point group ``netmem.providers``; ``get_provider(name)`` loads
one by name, so a user's package plugs in the same way as the built-ins. ``netmem-replay
--provider NAME`` binds the registered class with its ``replay_setup(rig, **provider_args)``
classmethod, which returns a ``ReplayBinding``: where the replay's application reads the payload.
"""
import dataclasses
import inspect
from errno import EINVAL, EOPNOTSUPP
from importlib import metadata

import numpy as np

from netmem import _core
from netmem.errors import NetmemError

__all__ = ["MemoryProvider", "ReplayBinding", "available_providers", "builtin_providers",
           "get_provider", "mp_destroy", "mp_init", "mp_nl_fill", "mp_uninstall",
           "net_devmem_id_alloc", "net_mp_netmem_place_in_cache",
           "net_mp_niov_clear_page_pool", "net_mp_niov_set_dma_addr", "net_mp_niov_set_page_pool",
           "replay_args", "resolve_provider"]

ENTRY_POINT_GROUP = "netmem.providers"


class MemoryProvider(_core.CoreMemoryProvider):
    """Base class of memory providers (``struct memory_provider_ops`` + ``mp_priv``).

    Each op must return what its C type in ``struct memory_provider_ops`` allows; anything else
    is the provider's mistake, refused with ``NetmemError(EINVAL)`` naming the provider (its
    ``name`` and class), the op, the value and what is due, e.g. ``memory provider 'stack'
    (StackProvider): alloc_netmems returned 'x' (str): it must return a netmem_ref (int) of this
    machine, or 0``. Integers may be Python or numpy integers, never bools or floats. The pool
    stays whole: an ``alloc_netmems`` or ``release_netmem`` error (or exception) is raised where
    the pool's call returns to Python (the allocation failed; the release went on, without
    ``put_page``), a ``destroy`` or ``uninstall`` one once the pool is freed or the device
    unregistered. A built-in provider's C fast ops are not checked."""

    name = "provider"
    #: True only for the host-pages path: the pool then has no ``mp_ops`` at all.
    is_host = False
    #: ``pp_memory_provider_params.rx_page_size`` (Linux 7.0): the payload buffer size in bytes
    #: the provider asks of the queue (0: not requested). ``netif_mp_open_rxq()`` copies it into
    #: the queue's ``mp_params``; the driver's rendered ``netdev_queue_config`` then sets the
    #: payload pool's order (log2(rx_page_size) - PAGE_SHIFT). A driver without
    #: ``QCFG_RX_PAGE_SIZE`` refuses a non-zero value with EOPNOTSUPP. Set it on the instance.
    rx_page_size = 0

    def alloc_netmems(self, pool):
        """Return one netmem attached to ``pool`` (``net_mp_niov_set_page_pool``), or 0; may
        place more in the alloc cache with ``net_mp_netmem_place_in_cache``. Anything but 0
        or a netmem_ref of the pool's machine (a negative, out-of-range or unknown ref, None,
        a str, a float, a bool) is EINVAL."""
        raise NotImplementedError

    def release_netmem(self, pool, netmem):
        """Take back a buffer leaving ``pool`` (clear its pp info); True only if the core
        should put_page it. The C type is ``bool``: anything but a bool (or the ints 0 and 1)
        is EINVAL, and the core does not put_page the buffer."""
        raise NotImplementedError

    def init(self, pool):
        """Called by ``page_pool_init()``; return 0 or a negative errno (an int: a positive
        value, None or a non-int is EINVAL and the pool is not made). May adjust the pool."""
        return 0

    def destroy(self, pool):
        """Called by ``__page_pool_destroy()``; returns nothing (``void``: a value is EINVAL,
        raised once the pool is freed)."""

    def nl_fill(self, rxq):
        """Netlink attributes of this provider (rxq is None for page-pool-get): a dict of
        attribute name (str) to value; anything else is EINVAL."""
        return {}

    def uninstall(self, rxq):
        """Called when the netdev under a bound queue unregisters; returns nothing (``void``:
        a value is EINVAL, raised once the device is unregistered)."""


    @classmethod
    def replay_setup(cls, rig, **provider_args):
        """Bind a provider of this class for one ``netmem-replay`` run (``rig``: a
        ``netmem.replay.Rig``) and return its ``ReplayBinding``. This default constructs
        ``cls(rig.machine, rig.nic, **provider_args)``, installs it on every queue of
        ``rig.queues`` with ``netif_mp_open_rxq()`` and spreads RSS over them. At teardown
        (``rig.on_teardown``) it closes those queues (``netif_mp_close_rxq()``), lets the machine
        quiesce (the old page pools go once their buffers are home) and calls the provider's
        ``close()``, if it has one: nothing holds the provider any more.

        The provider hands out net_iovs (a Python provider cannot hand out pages), which the
        application reads through ``memory_map()``: ``(offsets, phys, lengths)``, the
        provider's memory in the ``frag_offset`` space of its devmem cmsgs; the ``owner_id`` of
        the net_iov areas (``NetIovArea``) it made while it was built and bound (one id, from
        1: ``net_devmem_id_alloc()``) is the ``dmabuf_id`` those cmsgs name. Raises
        ``NetmemError``: EOPNOTSUPP without ``memory_map()`` (before anything is built), EINVAL
        when the constructor does not take ``(machine, nic, **provider_args)`` or the areas
        name no single id, and whatever construction and ``netif_mp_open_rxq()`` raise; what was
        set up is undone at teardown. Not a kernel op: the replay's hook (a kernel provider is
        bound by its own uAPI, devmem's by netlink ``bind-rx``)."""
        from netmem.netdev import netif_mp_close_rxq, netif_mp_open_rxq

        if not callable(getattr(cls, "memory_map", None)):
            raise NetmemError(EOPNOTSUPP, f"{cls.__qualname__} hands out net_iovs the "
                                          "application could not read: implement memory_map() "
                                          "returning (offsets, phys, lengths)")
        m, nic = rig.machine, rig.nic
        before = set(m._niov_areas)
        provider = _replay_construct(cls, m, nic, provider_args)
        opened = []

        def teardown():
            for q in reversed(opened):
                netif_mp_close_rxq(nic, q, provider)
            m.quiesce()
            if hasattr(provider, "close"):
                provider.close()

        rig.on_teardown(teardown)
        for q in rig.queues:
            netif_mp_open_rxq(nic, q, provider)
            opened.append(q)
        rig.steer_to_bound()
        return ReplayBinding(provider.memory_map(), _replay_owner_id(cls, m, before))


def mp_init(mp, pool):
    """``pool->mp_ops->init(pool)``: its return, 0 or a negative errno, checked."""
    err = mp.init(pool)
    if not _core._mp_is_int(err) or err > 0:
        raise _core._mp_bad_return(mp, "init", err, "0 or a negative errno (int)")
    return int(err)


def mp_destroy(mp, pool):
    """``pool->mp_ops->destroy(pool)``, which returns nothing."""
    _void(mp, "destroy", mp.destroy(pool))


def mp_nl_fill(mp, rxq):
    """``mp_ops->nl_fill()``: the provider's netlink attributes, checked to be a dict with str
    keys."""
    attrs = mp.nl_fill(rxq)
    if not isinstance(attrs, dict) or not all(isinstance(k, str) for k in attrs):
        raise _core._mp_bad_return(mp, "nl_fill", attrs,
                                   "a dict of netlink attribute name (str) to value")
    return attrs


def mp_uninstall(mp, rxq):
    """``mp_ops->uninstall(mp_priv, rxq)``, which returns nothing."""
    _void(mp, "uninstall", mp.uninstall(rxq))


def _void(mp, op, ret):
    if ret is not None:
        raise _core._mp_bad_return(mp, op, ret, "nothing (None): the op is void")


def _replay_construct(cls, machine, nic, provider_args):
    """``cls(machine, nic, **provider_args)``; a TypeError says what the constructor takes."""
    try:
        return cls(machine, nic, **provider_args)
    except TypeError as e:
        raise NetmemError(EINVAL, f"{cls.__qualname__}{_signature(cls) or ''} cannot be built "
                                  f"as cls(machine, nic, **provider_args) ({e}): take (machine, "
                                  "nic, ...) or give the class a replay_setup(rig, "
                                  "**provider_args) classmethod") from None


def _replay_owner_id(cls, machine, before):
    """The one ``owner_id`` (from 1) of the net_iov areas made since ``before`` (area ids)."""
    ids = {a.owner_id for k, a in machine._niov_areas.items() if k not in before}
    if len(ids) != 1 or 0 in ids:
        raise NetmemError(EINVAL, f"{cls.__qualname__}'s net_iov areas have owner_id "
                                  f"{', '.join(map(str, sorted(ids))) or '(no area)'}: its "
                                  "devmem cmsgs name one dmabuf_id, from 1 "
                                  "(net_devmem_id_alloc())")
    return ids.pop()


@dataclasses.dataclass(frozen=True)
class ReplayBinding:
    """What ``replay_setup()`` tells the replay's application. ``memory_map``: None for host
    pages (the application copies with ``recvmsg``); else the provider's memory as ``(offsets,
    phys, lengths)``, uint64 arrays of one length in ascending offset order, each entry
    ``lengths[i]`` bytes at physical address ``phys[i]`` (RAM or a PCI BAR) seen at
    ``offsets[i]`` of the ``frag_offset`` space of its devmem cmsgs; the application reads with
    ``recvmsg(MSG_SOCK_DEVMEM)`` and each SCM_DEVMEM_DMABUF frag through it
    (``netmem.tcp.Receiver(dmabuf=memory_map)``). ``dmabuf_id``: the id those cmsgs name (None
    without a map). ``zcrx``: for io_uring zcrx, ``(IoUring, IoZcrxIfq)``: the application
    reads with RECV_ZC instead, ``memory_map`` by area offset, and needs no id. EINVAL for a
    map of another shape or an id below 1."""

    memory_map: tuple | None = None
    dmabuf_id: int | None = None
    zcrx: tuple | None = None

    def __post_init__(self):
        if self.memory_map is None:
            return
        try:
            arrays = tuple(np.asarray(a) for a in self.memory_map)
        except TypeError:
            arrays = ()
        if (len(arrays) != 3 or any(a.dtype != np.uint64 or a.ndim != 1 for a in arrays)
                or len({len(a) for a in arrays}) != 1):
            raise NetmemError(EINVAL, "memory_map(): not (offsets, phys, lengths), three uint64 "
                                      "arrays of one length")
        if self.zcrx is None and not (isinstance(self.dmabuf_id, int) and self.dmabuf_id >= 1):
            raise NetmemError(EINVAL, f"ReplayBinding: dmabuf_id {self.dmabuf_id!r} is not an "
                                      "id from 1")
        object.__setattr__(self, "memory_map", arrays)

    @property
    def size(self):
        """Bytes of provider memory the map describes (0 without one)."""
        return 0 if self.memory_map is None else int(self.memory_map[2].sum())


def net_mp_niov_set_page_pool(pool, netmem):
    """Models ``net_mp_niov_set_page_pool()``: pp info, hold count, trace."""
    pool._niov_set_page_pool(netmem)


def net_mp_niov_clear_page_pool(machine, netmem):
    """Models ``net_mp_niov_clear_page_pool()`` (takes the machine: a ref alone names none)."""
    machine._niov_clear_page_pool(netmem)


def net_mp_netmem_place_in_cache(pool, netmem):
    """Models ``net_mp_netmem_place_in_cache()``: the caller makes sure there is room."""
    pool._place_in_cache(netmem)


def net_mp_niov_set_dma_addr(machine, netmem, addr):
    """Models ``net_mp_niov_set_dma_addr()``."""
    machine._niov_set_dma_addr(netmem, addr)


def replay_args(cls):
    """The ``inspect.Signature`` of the provider args (``netmem-replay --provider-arg``) that
    registered class ``cls`` takes: its ``replay_setup``'s after ``rig`` when it has its own,
    else its constructor's after ``(machine, nic)``; None when Python cannot read it (a C
    constructor)."""
    own = getattr(cls.replay_setup, "__func__", None) is not MemoryProvider.replay_setup.__func__
    sig = _signature(cls.replay_setup if own else cls)
    if sig is None:
        return None
    return sig.replace(parameters=list(sig.parameters.values())[1 if own else 2:])


def _signature(fn):
    try:
        return inspect.signature(fn)
    except (TypeError, ValueError):
        return None


def net_devmem_id_alloc(machine):
    """An id from the machine's devmem binding ids (the kernel's ``xa_alloc_cyclic()`` on
    ``net_devmem_dmabuf_bindings``, from 1): what a provider's net_iov areas take as
    ``owner_id`` so that the ``dmabuf_id`` of a devmem cmsg names one binding or provider."""
    machine._devmem_next_id += 1
    return machine._devmem_next_id


def builtin_providers():
    """Names of the providers netmem itself registers (its own distribution's entry points:
    dmabuf, host, p2pdma), sorted; a user's package adds to ``available_providers()`` only."""
    return sorted(ep.name for ep in metadata.distribution("netmem").entry_points
                  if ep.group == ENTRY_POINT_GROUP)


def available_providers():
    """Names of the registered providers."""
    return sorted(ep.name for ep in metadata.entry_points(group=ENTRY_POINT_GROUP))


def get_provider(name):
    """The provider class registered as ``name``."""
    for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
        if ep.name == name:
            return ep.load()
    raise NetmemError(95, f"no memory provider {name!r} (registered: "
                          f"{', '.join(available_providers()) or 'none'})")


def resolve_provider(params, provider):
    """The provider a new pool will use, as ``page_pool_init()`` finds it: only a pool with
    ``PP_FLAG_ALLOW_UNREADABLE_NETMEM`` reads the RX queue's ``mp_params``; any other pool
    ignores the queue's provider and is an ordinary host-page pool (no error: if the queue is
    being bound, ``page_pool_check_memory_provider()`` later fails the restart with ENODATA).
    The host-pages provider means none. Checked in net/core/page_pool.c of 6.12 to 7.x (the
    flag test around ``__netif_get_rx_queue(pool->slow.netdev, ...)->mp_params``).
    Departs: ``provider`` stands for the queue's ``mp_params`` (a pool is not always made by
    an RX queue here), and an object that is not a ``MemoryProvider`` is EINVAL."""
    if provider is None or getattr(provider, "is_host", False):
        return None
    if not isinstance(provider, MemoryProvider):
        raise NetmemError(22, f"page_pool_init: {provider!r} is not a MemoryProvider")
    if not params.flags & _core.PP_FLAG_ALLOW_UNREADABLE_NETMEM_:
        return None
    return provider
