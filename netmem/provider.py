"""Memory providers: pluggable backing for page_pool buffers.

Models include/net/page_pool/memory_provider.h. ``MemoryProvider`` has the six ops of
``struct memory_provider_ops``; the pool calls ``alloc_netmems`` only on its slow path (cache and
ring empty) and ``release_netmem`` when a buffer leaves the pool, as the kernel does. A provider
written in Python works as it is (the core calls it through the interpreter on those two paths
only); a built-in provider can hand the core a C-level fast variant of the two buffer ops.

Providers register under the entry-point group ``netmem.providers``; ``get_provider(name)`` loads
one by name, so a user's package plugs in the same way as the built-ins.
"""
from importlib import metadata

from netmem import _core
from netmem.errors import NetmemError

__all__ = ["MemoryProvider", "available_providers", "get_provider", "mp_destroy", "mp_init",
           "mp_nl_fill", "mp_uninstall", "net_mp_netmem_place_in_cache",
           "net_mp_niov_clear_page_pool", "net_mp_niov_set_dma_addr", "net_mp_niov_set_page_pool",
           "resolve_provider"]

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
    ``PP_FLAG_ALLOW_UNREADABLE_NETMEM`` takes one; the host-pages provider means none."""
    if provider is None or getattr(provider, "is_host", False):
        return None
    if not isinstance(provider, MemoryProvider):
        raise NetmemError(22, f"page_pool_init: {provider!r} is not a MemoryProvider")
    if not params.flags & _core.PP_FLAG_ALLOW_UNREADABLE_NETMEM_:
        raise NetmemError(22, "page_pool_init: a memory provider is only taken by a pool with "
                              "PP_FLAG_ALLOW_UNREADABLE_NETMEM")
    return provider
