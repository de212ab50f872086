"""queue-get and qstats-get in the netdev family's names."""
from rxutil_min import tcp_trace

from netmem.netdev import NetDevice
from netmem.netlink import qstats_get, queue_get


def test_queue_get_lists_live_rx_queues(machine):
    nic = NetDevice(machine, num_rx_queues=3)
    try:
        qs = queue_get(machine)
        assert [(q["id"], q["type"], q["ifindex"]) for q in qs] == \
            [(i, "rx", nic.ifindex) for i in range(3)]
        assert qs[1]["napi-id"] == nic.rx_queues[1].napi.napi_id
        nic.ethtool.set_rxfh(equal=2)
        nic.ethtool.set_channels(rx=2)
        assert len(queue_get(machine, ifindex=nic.ifindex)) == 2
        nic.rx_queues[0].attach_af_xdp()
        assert queue_get(machine, ifindex=nic.ifindex, id=0)["xsk"] == {}
        nic.rx_queues[0].detach_af_xdp()
    finally:
        nic.unregister()


def test_qstats_get_device_and_queue_scope(machine):
    nic = NetDevice(machine, num_rx_queues=2)
    try:
        trace = tcp_trace(nsegs=10)
        nic.receive(trace)
        dev = qstats_get(machine)[0]
        per_q = qstats_get(machine, scope="queue")
        assert dev["ifindex"] == nic.ifindex
        assert dev["rx-packets"] == len(trace.offsets) == sum(q["rx-packets"] for q in per_q)
        assert dev["rx-bytes"] == int(trace.lengths.sum())
        assert {"rx-alloc-fail", "rx-hw-drops", "rx-hw-drop-overruns"} <= set(dev)
    finally:
        for sk in machine.tcp.sockets():
            sk.close()
        nic.unregister()
