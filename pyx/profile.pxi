# Where the time goes: the profile of ``netmem-replay --profile``, in C.
#
# Each stage boundary of the data plane reads the TSC and charges the cycles since the previous
# boundary to the stage that was running (``prof_enter()``), so the stages partition the profiled
# time and nothing is counted twice. Not a kernel mechanism: the model's own accounting, in the
# spirit of perf's per-symbol figures but by stage of the receive path.
#
# A boundary costs 7 to 25 ns on the machine netmem is measured on (a VM), as much as a quarter
# of a frame's whole path if every frame's stages were stamped. So the per-frame boundaries (DMA
# write, skb, GRO, TCP) are stamped in one NAPI poll of NM_PROF_SAMPLE at random; the other polls
# stamp only their start and end (their frames' time is NM_PROF_RX, split later in the sampled
# proportions). The coarse boundaries (steering, refill, frees, the application's calls) are
# stamped every time.
#
# Off costs nothing on the NAPI path: the poll, the driver and GRO are compiled three times
# through the fused type ``nm_prof_t`` (below), and ``nm_netdev_receive()`` picks one per poll.
# The application's boundaries (per recvmsg call, per socket, per 16 tokens) and the frees' test
# ``n.prof.on``, as a static key would.


cdef enum:
    NM_PROF_OUTSIDE = 0         # between calls into C: the replay loop in Python ("other")
    NM_PROF_STEER = 1           # the device's parser, ntuple and RSS (nm_netdev_receive())
    NM_PROF_DMA = 2             # the device's DMA writes into posted buffers (nm_rx_frame())
    NM_PROF_SKB = 3             # the driver: buffers off the ring, sync, the skb built
    NM_PROF_GRO = 4             # napi_gro_receive() and napi_gro_flush(), but what they pass up
    NM_PROF_TCP = 5             # netif_receive_skb(): IP, TCP, the socket's queues
    NM_PROF_RX = 6              # the frames of an unsampled poll: DMA to TCP, in one
    NM_PROF_REFILL = 7          # the rings refilled from the page pools at the end of a poll
    NM_PROF_RECVMSG = 8         # the application's recvmsg(): copy, or cmsgs and tokens
    NM_PROF_VALIDATE = 9        # the application's read of the bytes: the pattern check
    NM_PROF_DONTNEED = 10       # SO_DEVMEM_DONTNEED: the tokens erased
    NM_PROF_PUTS = 11           # skbs freed after the read, net_iovs put: page_pool recycling
    NM_PROF_NR = 12
    NM_PROF_SAMPLE = 16         # one NAPI poll in 16 stamps its frames' stages
    NM_LAT_BUCKETS = 496        # log2 octaves of 8 linear buckets: (63 - 2) * 8 + 8

cdef extern from *:
    """
    #define NM_TSTAMP_SET (1ULL << 63)  /* skb->tstamp holds a time (a replay's clock is 0 first) */
    """
    const uint64_t NM_TSTAMP_SET

# The NAPI path's three builds: ``nm_noprof`` (off: no boundary, no timestamp), ``nm_prof_rx``
# (an unsampled poll: its own boundaries, the skbs' timestamps) and ``nm_prof`` (a sampled poll:
# every frame's stages too). The last two point at the same nm_prof (``__prof()``).
ctypedef struct nm_noprof:
    uint8_t unused

ctypedef struct nm_prof_rx:
    nm_prof prof

ctypedef fused nm_prof_t:
    nm_noprof
    nm_prof_rx
    nm_prof


cdef inline nm_prof *__prof(nm_prof_t *pr) noexcept nogil:
    return <nm_prof *>pr


cdef inline uint32_t prof_enter(nm_prof *pr, uint32_t stage) noexcept nogil:
    """A boundary: the cycles since the last one go to the running stage, ``stage`` starts.
    Returns the stage that ran (for ``prof_stage()``)."""
    cdef uint64_t now = nm_tsc()
    cdef uint32_t prev = pr.stage
    pr.cyc[prev] += now - pr.last
    pr.marks[prev] += 1
    pr.last = now
    pr.stage = stage
    return prev


cdef inline uint32_t prof_push(nm_net *n, uint32_t stage) noexcept nogil:
    """``prof_enter()`` when profiling (the caller goes back with ``prof_stage()``)."""
    if unlikely(n.prof.on):
        return prof_enter(&n.prof, stage)
    return NM_PROF_OUTSIDE


cdef inline void prof_stage(nm_net *n, uint32_t stage) noexcept nogil:
    if unlikely(n.prof.on):
        prof_enter(&n.prof, stage)


cdef inline bint prof_sample_poll(nm_prof *pr) noexcept nogil:
    """Whether the next NAPI poll stamps its frames' stages: every one until a poll with frames
    was, then one in NM_PROF_SAMPLE, from a xorshift32 (Marsaglia) so that no period of the
    replay (chunks, queues) lines up with it."""
    if pr.frames[1] == 0:
        return True
    return nm_xorshift32(&pr.rng) % NM_PROF_SAMPLE == 0


cdef inline uint32_t __lat_bucket(uint64_t v) noexcept nogil:
    """Log2 octaves of 8 linear buckets: exact below 8, within 1/8 above."""
    cdef uint32_t e
    if v < 8:
        return <uint32_t>v
    e = 63 - __builtin_clzll(v)
    return ((e - 2) << 3) | <uint32_t>((v >> (e - 3)) & 7)


cdef void prof_rx_latency(nm_net *n, uint32_t si) noexcept nogil:
    """The application has read an skb: the virtual time since its DMA write into the
    histogram (skb->tstamp: a GRO packet's first segment's, a coalesced skb's last one's).
    Not inline: called on a cold branch, it keeps ``tcp_eat_recv_skb()`` small enough to be
    inlined into recvmsg as before."""
    cdef uint64_t now = n.m.clock_ns, t = n.skb_tstamp[si]
    if not t or n.skbs[si].len == 0:
        return
    t &= ~NM_TSTAMP_SET
    t = now - t if now > t else 0
    n.prof.lat_hist[__lat_bucket(t)] += 1
    if t > n.prof.lat_max:
        n.prof.lat_max = t


_PROF_STAGES = ("outside", "steer", "dma-write", "skb-build", "gro", "tcp", "rx", "refill",
                "recvmsg", "validate", "dontneed", "puts")      # NM_PROF_* order


cdef void nm_prof_reset(nm_net *n) noexcept nogil:
    """Every counter cleared (stamping off), and every skb's timestamp (those set by an earlier
    profile: an skb allocated while stamping was off keeps what its slot held)."""
    memset(&n.prof, 0, sizeof(nm_prof))
    memset(n.skb_tstamp, 0, <size_t>n.skb_next * sizeof(uint64_t))
    n.prof.rng = 0x9E3779B9


cdef void nm_prof_start(nm_net *n) noexcept nogil:
    """Stamping on, the counters kept: the time from here is OUTSIDE until a stage starts."""
    n.prof.stage = NM_PROF_OUTSIDE
    n.prof.last = nm_tsc()
    n.prof.on = 1


cdef void nm_prof_stop(nm_net *n) noexcept nogil:
    """The running stage closed, stamping off (counters kept for the reader)."""
    if n.prof.on:
        prof_enter(&n.prof, NM_PROF_OUTSIDE)
        n.prof.on = 0


cdef uint64_t nm_prof_boundary_cost() noexcept nogil:
    """The cycles one boundary costs, back to back (the fastest of 64 runs of 32): what each
    stamped interval carries beyond its work, which the reader takes off."""
    cdef nm_prof scratch
    cdef uint64_t best = <uint64_t>-1, t
    cdef int run, i
    memset(&scratch, 0, sizeof(nm_prof))
    for run in range(64):
        scratch.last = nm_tsc()
        t = scratch.last
        for i in range(32):
            prof_enter(&scratch, NM_PROF_OUTSIDE)
        best = min(best, (scratch.last - t) // 32)
    return best
