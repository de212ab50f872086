"""netmem-replay: a packet trace through a NIC, its page pools and a memory provider, and an
application that reads every socket, as ncdevmem does; then the figures and counters.

``netmem-replay [--pcap FILE] [--provider NAME] [options]`` builds a machine with a
NIC and a GPU behind one PCIe switch, binds the provider's memory to the NIC's queues (devmem TCP
for ``dmabuf``: header split on, the dma-buf bound with netlink ``bind-rx``, RSS spread over the
bound queues) and replays the trace ``--loops`` times in chunks: ``NetDevice.receive()`` runs a
chunk of frames through steering, NAPI, the device's DMA, GRO and TCP in C, then the application
(``netmem.tcp.Receiver``, in C too: pyx/receiver.pxi) reads every socket the chunk woke until
EAGAIN: ``recvmsg`` copies for host pages, ``recvmsg`` with ``MSG_SOCK_DEVMEM`` for devmem (the
payload read through the dma-buf at each cmsg's offset, each socket's tokens given back with
``SO_DEVMEM_DONTNEED`` in batches). Each of those loops is timed on its own clock, after
``--warmup`` untimed loops (hot caches, memory already faulted in); ``--runs N`` does all this N
times, each on a fresh machine. At the end of each loop the application closes every
socket, so the next loop opens them again on the trace's SYNs (the same sequence numbers never
meet old data). The default trace is a built-in workload: ``DEFAULT_WORKLOAD``, 64 connections of
64 KiB over IPv4 and IPv6 with light loss, reordering, duplication and overlap, carrying
ncdevmem's ``-v 7`` pattern (4 MiB of frames: it stays in the caches as it is replayed).
A ``--pcap`` capture of Ethernet frames is streamed from the file (``PacketTrace.from_pcap(...,
stream=True)``: resident memory stays bounded whatever its size, and each loop reads it again,
from the page cache while the kernel keeps it); ``--pcap-in-memory`` reads it whole.
``run(Config(...))`` is the same without the command line; it returns a ``Report``.

Providers: ``--provider NAME`` is any class registered under the entry-point group
``netmem.providers`` (read at run time; ``--list-providers`` shows them): the built-ins ``host``,
``dmabuf`` and ``p2pdma``, or a user's, installed from its own package. The class's classmethod
``replay_setup(rig, **provider_args)`` binds it to the run's ``Rig`` (the ``--provider-arg``
values as keywords) and returns a ``netmem.provider.ReplayBinding``: the provider's memory as
``(offsets, phys, lengths)`` in the ``frag_offset`` space of its devmem cmsgs and the
``dmabuf_id`` they name (nothing for host pages, read by copy). ``MemoryProvider``'s default
builds ``cls(rig.machine, rig.nic, **provider_args)``, installs it on each bound queue with
``netif_mp_open_rxq()`` and reads its net_iovs through its ``memory_map()``. Every provider but
``host`` (``is_host``) binds: header split on, ``--bind-queues``, the application reading with
``MSG_SOCK_DEVMEM``; the chunk shrinks to what its memory can hold. Departs: ``replay_setup``
is not a kernel interface (ncdevmem binds a dma-buf with netlink ``bind-rx``; the built-in
``dmabuf`` does that too).

The NIC's MTU: ``--mtu``; else, for a capture, the smallest that takes its largest frame
(frame length less the Ethernet header and VLAN tags, as the model driver measures it), at
least 1500 and at most 9000 (the driver's maximum: jumbo frames); 1500 for the built-in
workload. Frames longer than the MTU are dropped by the NIC (``rx_length_errors``); they are
counted from the trace beforehand, listed as skipped ``too_long``, and the report warns that
the streams stop at the first of them and the stream dumps are incomplete.

Validation: with the ncdevmem pattern (the built-in workload's, or ``--validate N`` for a
capture that carries it) every byte the application reads is compared with the pattern at its
stream offset; for the built-in workload every stream must also be complete (all its bytes, and
the end of the stream where its sender sent a FIN); for a capture, every direction's bytes read
(over every socket it opened) must be those the trace carries in order to a receiver, worked
out from its frames after the clock stops (``PacketTrace.in_order_bytes()``: from the SYN, or
the first segment of a flow caught mid-way, up to the first hole no frame fills or the FIN;
frames too long for the MTU do not count). It is ok only then and with bytes read: 0 bytes read
is skipped (nothing to read) or failed. Every loop is checked, warm-up ones too.

Figures: every counter of the report (page-pool-stats-get, qstats per queue and device, device
stats, TCP MIB, skb drop reasons, the recycle split, IOMMU stats and faults, the receiver's
devmem counters, validation bytes and resets) counts the timed loops only: they are read when
the first timed loop of a run starts and after each timed loop ends, outside the clocks,
subtracted, and summed over the runs; page-pool-get's ``inflight`` and ``inflight-mem`` are
gauges, the state after the last timed loop (``GAUGES``). The time figures (seconds per run,
Mpps, Gbit/s of payload, ns per frame) are each run's, reported as the median, min and max over
the runs with every run's loop seconds; they time this model on this CPU, not a kernel. No clock
covers output work: ``--dump-streams`` keeps its bytes, ``--plot`` samples the pools, and
``--trace-out`` records the tracepoints, in one loop more after the timed loops of the first
run, which counts nothing. Ctrl-C prints the report
of the timed loops completed, marked interrupted. ``--compare A.json B.json ...`` replays nothing
and prints reports side by side (``Comparison``).

Stream files (``--dump-streams DIR``): for every TCP stream of the trace, ``stream-N-node0.bin``
and ``stream-N-node1.bin`` hold the bytes node 0 and node 1 sent, as the receiving socket
delivered them to the application in the untimed loop after the timed ones (for devmem, read
from the dma-buf). ``N``
and the nodes are tshark's: ``N`` is the ``tcp.stream`` index (conversations numbered in the
order of their first frame, see ``PacketTrace.tcp_streams()``), node 0 the side that sent the
stream's first frame, so ``tshark -r FILE -q -z follow,tcp,raw,N`` prints node 0's bytes on its
unindented lines and node 1's on the tab-indented ones. Where the capture has a gap (a segment
missing and never retransmitted), a stream stops at its first missing byte: what follows waits
in the out-of-order queue and is never delivered (tshark, when the other side acknowledged the
missing bytes, prints ``[N bytes missing in capture file]`` and carries on; a receiver does
not, and ``netmem.testing.tshark_follow`` stops there too). A stream
that only a frame this model skips shows (IP fragments, frames cut by the snapshot length) is
not numbered, and a 4-tuple reused within the capture is one stream (tshark numbers the reuse
anew), so tshark's indices can differ after such frames.

Exit codes: 0; 1 when validation fails or buffers are lost (inflight after teardown, leaks,
tokens not freed); 2 for bad input (a message on stderr names it, nothing is written),
including a provider that cannot be replayed (one line saying what it lacks); 130 when
interrupted (Ctrl-C).

The package, one module a concern (each imports only those above it in this list):
``config`` (``Config``, ``BadInput``, the constants, the checks of the options, the provider
resolved and ``--provider-arg`` values read); ``output`` (outputs checked before the run,
written through a temporary file); ``workload`` (the trace: a capture or the built-in
workload, and the MTU); ``rig`` (``Rig``: the machine of one run); ``app`` (the application and
its verdict, the stream files); ``counters`` (the snapshots of the timed loops' counters,
``GAUGES``); ``plot`` (the timeline and its figure); ``traceout`` (``--trace-out``: the
tracepoints as Chrome trace-event JSON); ``report`` (the document, ``Report`` and
its text table, ``TIME_FIGURES``); ``schema`` (``REPORT_SCHEMA``); ``runner`` (``run()`` and
its loops; not ``run``, which names the function); ``compare`` (``Comparison``); ``cli``
(``main()``, the parser). A new option: a ``Config`` field and its check in ``config``, its flag
in ``cli._parser()``; a new section of the report: a key of ``report._document()`` and of
``schema.REPORT_SCHEMA``; a new row of the table: ``report.Report.format_table()``.
"""
from netmem.replay.cli import main
from netmem.replay.compare import Comparison
from netmem.replay.config import DEFAULT_WORKLOAD, BadInput, Config
from netmem.replay.counters import GAUGES
from netmem.replay.report import TIME_FIGURES, Report
from netmem.replay.rig import Rig
from netmem.replay.runner import run
from netmem.replay.schema import REPORT_SCHEMA

__all__ = ["DEFAULT_WORKLOAD", "GAUGES", "REPORT_SCHEMA", "TIME_FIGURES", "BadInput",
           "Comparison", "Config", "Report", "Rig", "main", "run"]
