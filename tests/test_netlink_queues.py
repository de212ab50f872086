"""queue-get and qstats-get in the netdev family's names."""
from rxutil import Flow, payload, receive

from netmem.netlink import qstats_get, queue_get


def test_queue_get_lists_live_rx_queues(m, make_nic):
    nic = make_nic(num_rx_queues=3)
    qs = queue_get(m)
    assert [(q["id"], q["type"], q["ifindex"]) for q in qs] == \
        [(i, "rx", nic.ifindex) for i in range(3)]
    assert qs[1]["napi-id"] == nic.rx_queues[1].napi.napi_id
    nic.ethtool.set_channels(rx=2)
    assert len(queue_get(m, ifindex=nic.ifindex)) == 2
    nic.rx_queues[0].attach_af_xdp()
    assert queue_get(m, ifindex=nic.ifindex, id=0)["xsk"] == {}
    nic.rx_queues[0].detach_af_xdp()


def test_qstats_get_device_and_queue_scope(m, make_nic):
    nic = make_nic(num_rx_queues=2)
    f = Flow()
    trace = receive(nic, [f.syn(), *f.segments(payload(10 * 1448)), f.fin()])
    dev = qstats_get(m)[0]
    per_q = qstats_get(m, scope="queue")
    assert dev["ifindex"] == nic.ifindex
    assert dev["rx-packets"] == len(trace) == sum(q["rx-packets"] for q in per_q)
    assert dev["rx-bytes"] == int(trace.lengths.sum())
    assert {"rx-alloc-fail", "rx-hw-drops", "rx-hw-drop-overruns"} <= set(dev)
