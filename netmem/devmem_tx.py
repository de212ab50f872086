"""devmem TX: the netlink ``bind-tx`` and the binding lookup of ``sendmsg()``.

Models ``netdev_nl_bind_tx_doit()`` (net/core/netdev-genl.c) and ``net_devmem_get_binding()``
(net/core/devmem.c), Linux 6.16 and later: a dma-buf bound for transmit is mapped
``DMA_TO_DEVICE`` for the DMA device of the netdev's TX queue 0 and gets a ``tx_vec``; a send
names it by id in an ``SCM_DEVMEM_DMABUF`` cmsg (``netmem.tcp_tx``). The binding lives as long
as the netlink socket, and after that as long as a TX skb holds one of its net_iovs.

Departs: no netkit/virtual devices (``netdev_find_netmem_tx_dev()`` is the device itself,
``binding->vdev`` is never set); the route is the socket's device (``TxSocket.dst``), as with
``SO_BINDTODEVICE``, so ``-EHOSTUNREACH`` (no route) does not arise.
"""
from errno import EINVAL, ENODEV, EOPNOTSUPP

from netmem.errors import NetmemError
from netmem.page_pool import DMA_TO_DEVICE

__all__ = ["net_devmem_get_binding", "netdev_nl_bind_tx"]


def netdev_nl_bind_tx(priv, ifindex, fd):
    """Models ``netdev_nl_bind_tx_doit()``: EINVAL without ``ifindex`` or ``fd``
    (``GENL_REQ_ATTR_CHECK``), ENODEV without the device, EOPNOTSUPP when its driver does not
    support netmem TX (``netdev->netmem_tx``), then ``net_devmem_bind_dmabuf(netdev, dma_dev,
    DMA_TO_DEVICE, fd, priv)`` with the DMA device of TX queue 0 (its errors). Returns the id."""
    from netmem.providers.dmabuf import net_devmem_bind_dmabuf
    m = priv.machine
    if ifindex is None or fd is None:
        raise NetmemError(EINVAL, "bind-tx: ifindex and fd are required")
    dev = m.netdevs.get(ifindex)
    if dev is None or not dev.registered:
        raise NetmemError(ENODEV, f"bind-tx: no device with ifindex {ifindex}")
    if not dev.netmem_tx:
        raise NetmemError(EOPNOTSUPP, f"bind-tx: {dev.name}: Driver does not support netmem TX")
    return net_devmem_bind_dmabuf(dev, dev.txq.dma_dev, DMA_TO_DEVICE, fd, priv).id


def net_devmem_get_binding(sk, dmabuf_id):
    """Models ``net_devmem_get_binding()``: the TX binding with ``dmabuf_id`` (EINVAL for an
    unknown id, an unbound one or an RX binding: no ``tx_vec``), whose device must be the
    route's (``dst->dev``), else ENODEV: the binding's DMA addresses only work on its device."""
    from netmem.providers.dmabuf import net_devmem_lookup_dmabuf
    binding = net_devmem_lookup_dmabuf(sk.machine, dmabuf_id)
    if binding is None or binding.direction != DMA_TO_DEVICE:
        raise NetmemError(EINVAL, f"sendmsg: dmabuf id {dmabuf_id} is not a bound TX binding")
    if sk.dst is None or sk.dst is not binding.dev:
        raise NetmemError(ENODEV, f"sendmsg: binding {dmabuf_id} is bound to "
                                  f"{getattr(binding.dev, 'name', None)}, the route goes out "
                                  f"{getattr(sk.dst, 'name', None)}")
    return binding
