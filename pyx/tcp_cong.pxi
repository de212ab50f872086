# TCP congestion control: struct tcp_congestion_ops with Reno and CUBIC, and the cwnd/ssthresh
# effects of entering recovery and loss (the closed loop's sender side, groundwork).
#
# Models net/ipv4/tcp_cong.c, net/ipv4/tcp_cubic.c and the parts of net/ipv4/tcp_input.c that
# call the ops, as of Linux 6.12, with HZ = 1000 (a jiffy is a millisecond of virtual time).
# Departures: sequence numbers count segments; no ECN, no pacing (so HyStart's ACK-train
# threshold is delay_min / 2 with hystart_ack_delay() = 0, as with sk_pacing_rate 0); no PRR in
# recovery (cwnd holds at what tcp_enter_recovery() leaves until the recovery ends).

DEF TCP_INFINITE_SSTHRESH = 0x7fffffff
DEF TCP_INIT_CWND = 10
DEF TCP_CA_Open = 0
DEF TCP_CA_Disorder = 1
DEF TCP_CA_CWR = 2
DEF TCP_CA_Recovery = 3
DEF TCP_CA_Loss = 4
DEF CA_EVENT_TX_START = 0
DEF CA_EVENT_LOSS = 5
DEF HZ = 1000

DEF BICTCP_BETA_SCALE = 1024
DEF BICTCP_HZ = 10
DEF CUBIC_BETA = 717               # beta: 717/1024
DEF CUBIC_BIC_SCALE = 41
DEF HYSTART_LOW_WINDOW = 16
DEF HYSTART_ACK_DELTA_US = 2000
DEF HYSTART_MIN_SAMPLES = 8
DEF HYSTART_DELAY_MIN = 4000
DEF HYSTART_DELAY_MAX = 16000
# cubictcp_register(): beta_scale, cube_rtt_scale and cube_factor (2^40 / (bic_scale * 10)).
DEF CUBIC_BETA_SCALE = 8 * (BICTCP_BETA_SCALE + CUBIC_BETA) // 3 // (BICTCP_BETA_SCALE - CUBIC_BETA)
DEF CUBE_RTT_SCALE = CUBIC_BIC_SCALE * 10
DEF CUBE_FACTOR = (1 << (10 + 3 * BICTCP_HZ)) // (CUBIC_BIC_SCALE * 10)


cdef inline uint32_t tcp_sk_jiffies32(nm_tcp_cc_sock *tp) noexcept nogil:
    """``tcp_jiffies32`` on the sender's clock (its last tcp_mstamp)."""
    return <uint32_t>(tp.tcp_mstamp // (1000000 // HZ))


cdef inline bint tcp_in_slow_start(nm_tcp_cc_sock *tp) noexcept nogil:
    return tp.snd_cwnd < tp.snd_ssthresh


cdef inline bint tcp_is_cwnd_limited(nm_tcp_cc_sock *tp) noexcept nogil:
    """``tcp_is_cwnd_limited()``: in slow start, grow cwnd to twice what was in flight."""
    if tp.is_cwnd_limited:
        return True
    if tcp_in_slow_start(tp):
        return tp.snd_cwnd < 2 * tp.max_packets_out
    return False


# ---- Reno (net/ipv4/tcp_cong.c) ------------------------------------------------------------------

cdef uint32_t tcp_slow_start(nm_tcp_cc_sock *tp, uint32_t acked) noexcept nogil:
    """``tcp_slow_start()``: grow cwnd by the segments acked, up to ssthresh; return the rest."""
    cdef uint32_t cwnd = min(tp.snd_cwnd + acked, tp.snd_ssthresh)
    acked -= cwnd - tp.snd_cwnd
    tp.snd_cwnd = min(cwnd, tp.snd_cwnd_clamp)
    return acked


cdef void tcp_cong_avoid_ai(nm_tcp_cc_sock *tp, uint32_t w, uint32_t acked) noexcept nogil:
    """``tcp_cong_avoid_ai()``: one segment per w segments acked (snd_cwnd_cnt counts)."""
    cdef uint32_t delta
    if tp.snd_cwnd_cnt >= w:            # credits accumulated at a higher w: apply them now
        tp.snd_cwnd_cnt = 0
        tp.snd_cwnd += 1
    tp.snd_cwnd_cnt += acked
    if tp.snd_cwnd_cnt >= w:
        delta = tp.snd_cwnd_cnt // w
        tp.snd_cwnd_cnt -= delta * w
        tp.snd_cwnd += delta
    tp.snd_cwnd = min(tp.snd_cwnd, tp.snd_cwnd_clamp)


cdef void tcp_reno_cong_avoid(nm_tcp_cc_sock *tp, uint32_t ack, uint32_t acked) noexcept nogil:
    """``tcp_reno_cong_avoid()``: slow start below ssthresh, then additive increase."""
    if not tcp_is_cwnd_limited(tp):
        return
    if tcp_in_slow_start(tp):
        acked = tcp_slow_start(tp, acked)
        if not acked:
            return
    tcp_cong_avoid_ai(tp, tp.snd_cwnd, acked)


cdef uint32_t tcp_reno_ssthresh(nm_tcp_cc_sock *tp) noexcept nogil:
    """``tcp_reno_ssthresh()``: half of cwnd, at least 2."""
    return max(tp.snd_cwnd >> 1, 2)


cdef uint32_t tcp_reno_undo_cwnd(nm_tcp_cc_sock *tp) noexcept nogil:
    """``tcp_reno_undo_cwnd()``: back to the cwnd before the reduction."""
    return max(tp.snd_cwnd, tp.prior_cwnd)


# ---- CUBIC (net/ipv4/tcp_cubic.c) --------------------------------------------------------------

cdef const uint8_t *CUBIC_ROOT_V = [
    0, 54, 54, 54, 118, 118, 118, 118,
    123, 129, 134, 138, 143, 147, 151, 156,
    157, 161, 164, 168, 170, 173, 176, 179,
    181, 185, 187, 190, 192, 194, 197, 199,
    200, 202, 204, 206, 209, 211, 213, 215,
    217, 219, 221, 222, 224, 225, 227, 229,
    231, 232, 234, 236, 237, 239, 240, 242,
    244, 245, 246, 248, 250, 251, 252, 254]


cdef uint32_t cubic_root(uint64_t a) noexcept nogil:
    """``cubic_root()``: a table lookup then one Newton-Raphson step (rel. error < 0.2%)."""
    cdef uint32_t x, b, shift
    b = 0 if a == 0 else <uint32_t>(64 - __builtin_clzll(a))      # fls64()
    if b < 7:
        return (<uint32_t>CUBIC_ROOT_V[<uint32_t>a] + 35) >> 6
    b = ((b * 84) >> 8) - 1
    shift = <uint32_t>(a >> (b * 3))
    x = (<uint32_t>((<uint32_t>CUBIC_ROOT_V[shift] + 10) << b)) >> 6
    x = 2 * x + <uint32_t>(a // (<uint64_t>x * <uint64_t>(x - 1)))
    return (x * 341) >> 10


cdef inline void bictcp_reset(nm_bictcp *ca) noexcept nogil:
    """``bictcp_reset()``: zero everything up to the HyStart round state, and ``found``."""
    ca.cnt = ca.last_max_cwnd = ca.last_cwnd = ca.last_time = 0
    ca.bic_origin_point = ca.bic_K = ca.delay_min = ca.epoch_start = 0
    ca.ack_cnt = ca.tcp_cwnd = 0
    ca.sample_cnt = ca.found = 0


cdef void bictcp_hystart_reset(nm_tcp_cc_sock *tp) noexcept nogil:
    """``bictcp_hystart_reset()``: a new round starts at the next send."""
    tp.ca.round_start = tp.ca.last_ack = <uint32_t>tp.tcp_mstamp
    tp.ca.end_seq = tp.snd_nxt
    tp.ca.curr_rtt = 0xffffffff
    tp.ca.sample_cnt = 0


cdef void cubictcp_init(nm_tcp_cc_sock *tp) noexcept nogil:
    """``cubictcp_init()`` with hystart = 1 and initial_ssthresh = 0 (the defaults)."""
    bictcp_reset(&tp.ca)
    bictcp_hystart_reset(tp)


cdef void cubictcp_cwnd_event(nm_tcp_cc_sock *tp, int ev) noexcept nogil:
    """``cubictcp_cwnd_event()``: after an idle period, shift the epoch so the curve holds."""
    cdef uint32_t now = tcp_sk_jiffies32(tp)
    cdef int32_t delta
    if ev != CA_EVENT_TX_START:
        return
    delta = <int32_t>(now - tp.lsndtime)
    if tp.ca.epoch_start and delta > 0:
        tp.ca.epoch_start += delta
        if after(tp.ca.epoch_start, now):
            tp.ca.epoch_start = now


cdef void bictcp_update(nm_tcp_cc_sock *tp, uint32_t cwnd, uint32_t acked) noexcept nogil:
    """``bictcp_update()``: ca.cnt, the ACKs per cwnd increment, from the cubic curve and the
    Reno-friendly estimate (tcp_friendliness = 1)."""
    cdef nm_bictcp *ca = &tp.ca
    cdef uint32_t now = tcp_sk_jiffies32(tp), delta, bic_target, max_cnt
    cdef uint64_t offs, t
    ca.ack_cnt += acked
    if ca.last_cwnd == cwnd and <int32_t>(now - ca.last_time) <= HZ // 32:
        return
    if not (ca.epoch_start and now == ca.last_time):   # else: at most once a jiffy
        ca.last_cwnd = cwnd
        ca.last_time = now
        if ca.epoch_start == 0:
            ca.epoch_start = now
            ca.ack_cnt = acked
            ca.tcp_cwnd = cwnd
            if ca.last_max_cwnd <= cwnd:
                ca.bic_K = 0
                ca.bic_origin_point = cwnd
            else:
                ca.bic_K = cubic_root(<uint64_t>CUBE_FACTOR * (ca.last_max_cwnd - cwnd))
                ca.bic_origin_point = ca.last_max_cwnd
        # usecs_to_jiffies() rounds up.
        t = <uint64_t><int64_t><int32_t>(now - ca.epoch_start)
        t += (ca.delay_min + 1000000 // HZ - 1) // (1000000 // HZ)
        t = (t << BICTCP_HZ) // HZ
        offs = ca.bic_K - t if t < ca.bic_K else t - ca.bic_K
        delta = <uint32_t>((CUBE_RTT_SCALE * offs * offs * offs) >> (10 + 3 * BICTCP_HZ))
        bic_target = ca.bic_origin_point - delta if t < ca.bic_K else ca.bic_origin_point + delta
        ca.cnt = cwnd // (bic_target - cwnd) if bic_target > cwnd else 100 * cwnd
        if ca.last_max_cwnd == 0 and ca.cnt > 20:
            ca.cnt = 20                 # increase cwnd 5% per RTT while bandwidth is unknown
    delta = (cwnd * CUBIC_BETA_SCALE) >> 3      # tcp_friendliness
    while ca.ack_cnt > delta:
        ca.ack_cnt -= delta
        ca.tcp_cwnd += 1
    if ca.tcp_cwnd > cwnd:
        max_cnt = cwnd // (ca.tcp_cwnd - cwnd)
        if ca.cnt > max_cnt:
            ca.cnt = max_cnt
    ca.cnt = max(ca.cnt, 2)             # at most 1.5x per RTT


cdef void cubictcp_cong_avoid(nm_tcp_cc_sock *tp, uint32_t ack, uint32_t acked) noexcept nogil:
    """``cubictcp_cong_avoid()``: slow start, then one segment per ca.cnt acked."""
    if not tcp_is_cwnd_limited(tp):
        return
    if tcp_in_slow_start(tp):
        acked = tcp_slow_start(tp, acked)
        if not acked:
            return
    bictcp_update(tp, tp.snd_cwnd, acked)
    tcp_cong_avoid_ai(tp, tp.ca.cnt, acked)


cdef uint32_t cubictcp_recalc_ssthresh(nm_tcp_cc_sock *tp) noexcept nogil:
    """``cubictcp_recalc_ssthresh()``: end the epoch; W_max with fast convergence; beta cwnd."""
    tp.ca.epoch_start = 0
    if tp.snd_cwnd < tp.ca.last_max_cwnd:       # fast_convergence = 1
        tp.ca.last_max_cwnd = (tp.snd_cwnd * (BICTCP_BETA_SCALE + CUBIC_BETA)) \
            // (2 * BICTCP_BETA_SCALE)
    else:
        tp.ca.last_max_cwnd = tp.snd_cwnd
    return max((tp.snd_cwnd * CUBIC_BETA) // BICTCP_BETA_SCALE, 2)


cdef void cubictcp_state(nm_tcp_cc_sock *tp, uint8_t new_state) noexcept nogil:
    """``cubictcp_state()``: a loss (RTO) forgets the curve and restarts HyStart."""
    if new_state == TCP_CA_Loss:
        bictcp_reset(&tp.ca)
        bictcp_hystart_reset(tp)


cdef void hystart_update(nm_tcp_cc_sock *tp, uint32_t delay) noexcept nogil:
    """``hystart_update()`` (hystart_detect = ACK_TRAIN | DELAY): leave slow start when the
    ACK train of a round spans delay_min / 2, or a round's minimum RTT rises by
    clamp(delay_min / 8, 4 ms, 16 ms); either sets ssthresh to cwnd."""
    cdef nm_bictcp *ca = &tp.ca
    cdef uint32_t now = <uint32_t>tp.tcp_mstamp, threshold
    if after(tp.snd_una, ca.end_seq):
        bictcp_hystart_reset(tp)
    if <int32_t>(now - ca.last_ack) <= HYSTART_ACK_DELTA_US:
        ca.last_ack = now
        threshold = ca.delay_min >> 1       # SK_PACING_NONE, hystart_ack_delay() = 0
        if <uint32_t>(now - ca.round_start) > threshold:     # (s32) > u32: compares unsigned
            ca.found = 1
            tp.snd_ssthresh = tp.snd_cwnd
    if ca.curr_rtt > delay:
        ca.curr_rtt = delay
    if ca.sample_cnt < HYSTART_MIN_SAMPLES:
        ca.sample_cnt += 1
    elif ca.curr_rtt > ca.delay_min + min(max(ca.delay_min >> 3, HYSTART_DELAY_MIN),
                                          HYSTART_DELAY_MAX):
        ca.found = 1
        tp.snd_ssthresh = tp.snd_cwnd


cdef void cubictcp_acked(nm_tcp_cc_sock *tp, uint32_t pkts_acked, int64_t rtt_us) noexcept nogil:
    """``cubictcp_acked()``: track delay_min; run HyStart in slow start from cwnd 16."""
    cdef uint32_t delay
    if rtt_us < 0:
        return
    if tp.ca.epoch_start and <int32_t>(tcp_sk_jiffies32(tp) - tp.ca.epoch_start) < HZ:
        return                          # discard delay samples right after fast recovery
    delay = <uint32_t>rtt_us if rtt_us else 1
    if tp.ca.delay_min == 0 or tp.ca.delay_min > delay:
        tp.ca.delay_min = delay
    if not tp.ca.found and tcp_in_slow_start(tp) and tp.snd_cwnd >= HYSTART_LOW_WINDOW:
        hystart_update(tp, delay)


cdef nm_tcp_congestion_ops tcp_reno
tcp_reno.ssthresh = tcp_reno_ssthresh
tcp_reno.cong_avoid = tcp_reno_cong_avoid
tcp_reno.undo_cwnd = tcp_reno_undo_cwnd
tcp_reno.name = b"reno"

cdef nm_tcp_congestion_ops cubictcp
cubictcp.init = cubictcp_init
cubictcp.ssthresh = cubictcp_recalc_ssthresh
cubictcp.cong_avoid = cubictcp_cong_avoid
cubictcp.set_state = cubictcp_state
cubictcp.undo_cwnd = tcp_reno_undo_cwnd
cubictcp.cwnd_event = cubictcp_cwnd_event
cubictcp.pkts_acked = cubictcp_acked
cubictcp.name = b"cubic"


cdef const nm_tcp_congestion_ops *tcp_ca_find(const char *name) noexcept nogil:
    """``tcp_ca_find()`` over the two built-in ops; NULL for an unknown name."""
    if strcmp(name, tcp_reno.name) == 0:
        return &tcp_reno
    if strcmp(name, cubictcp.name) == 0:
        return &cubictcp
    return NULL


# ---- the state machine's cwnd effects (net/ipv4/tcp_input.c) -----------------------------------

cdef void tcp_set_ca_state(nm_tcp_cc_sock *tp, uint8_t ca_state) noexcept nogil:
    """``tcp_set_ca_state()``: the ops hear of the new state first."""
    if tp.icsk_ca_ops.set_state != NULL:
        tp.icsk_ca_ops.set_state(tp, ca_state)
    tp.icsk_ca_state = ca_state


cdef inline void tcp_ca_event(nm_tcp_cc_sock *tp, int ev) noexcept nogil:
    if tp.icsk_ca_ops.cwnd_event != NULL:
        tp.icsk_ca_ops.cwnd_event(tp, ev)


cdef inline bint tcp_in_cwnd_reduction(nm_tcp_cc_sock *tp) noexcept nogil:
    return tp.icsk_ca_state == TCP_CA_CWR or tp.icsk_ca_state == TCP_CA_Recovery


cdef uint32_t tcp_current_ssthresh(nm_tcp_cc_sock *tp) noexcept nogil:
    """``tcp_current_ssthresh()``: outside a reduction, at least 3/4 of cwnd."""
    if tcp_in_cwnd_reduction(tp):
        return tp.snd_ssthresh
    return max(tp.snd_ssthresh, (tp.snd_cwnd >> 1) + (tp.snd_cwnd >> 2))


cdef void tcp_init_cwnd_reduction(nm_tcp_cc_sock *tp) noexcept nogil:
    """``tcp_init_cwnd_reduction()``: remember cwnd, ask the ops for ssthresh."""
    tp.high_seq = tp.snd_nxt
    tp.snd_cwnd_cnt = 0
    tp.prior_cwnd = tp.snd_cwnd
    tp.prr_delivered = tp.prr_out = 0
    tp.snd_ssthresh = tp.icsk_ca_ops.ssthresh(tp)


cdef void tcp_enter_recovery(nm_tcp_cc_sock *tp) noexcept nogil:
    """``tcp_enter_recovery()`` (no ECE): fast retransmit starts a cwnd reduction unless one
    is under way. With ``tp.prr`` (the closed loop's senders) cwnd then follows
    ``tcp_cwnd_reduction()`` (PRR) ACK by ACK, as in Linux; without it (CoreCongestion, which
    has no packets in flight to count) cwnd drops to the new ssthresh at once."""
    tp.prior_ssthresh = 0
    if not tcp_in_cwnd_reduction(tp):
        tp.prior_ssthresh = tcp_current_ssthresh(tp)
        tcp_init_cwnd_reduction(tp)
        if not tp.prr:
            tp.snd_cwnd = tp.snd_ssthresh
    tcp_set_ca_state(tp, TCP_CA_Recovery)


cdef void tcp_end_cwnd_reduction(nm_tcp_cc_sock *tp) noexcept nogil:
    """``tcp_end_cwnd_reduction()`` then Open: recovery ends with cwnd = ssthresh."""
    if tp.snd_ssthresh < TCP_INFINITE_SSTHRESH and tcp_in_cwnd_reduction(tp):
        tp.snd_cwnd = tp.snd_ssthresh
    tcp_set_ca_state(tp, TCP_CA_Open)


cdef void tcp_enter_loss(nm_tcp_cc_sock *tp) noexcept nogil:
    """``tcp_enter_loss()`` on an RTO: every segment out is marked lost, so nothing is in
    flight and cwnd is 1; ssthresh is reduced once per window (the model keeps no
    icsk_retransmits: a second RTO in Loss within the window does not reduce it again)."""
    if tp.icsk_ca_state <= TCP_CA_Disorder or not after(tp.high_seq, tp.snd_una):
        tp.prior_ssthresh = tcp_current_ssthresh(tp)
        tp.prior_cwnd = tp.snd_cwnd
        tp.snd_ssthresh = tp.icsk_ca_ops.ssthresh(tp)
        tcp_ca_event(tp, CA_EVENT_LOSS)
    tp.snd_cwnd = 1
    tp.snd_cwnd_cnt = 0
    tcp_set_ca_state(tp, TCP_CA_Loss)
    tp.high_seq = tp.snd_nxt


cdef void tcp_undo_cwnd_reduction(nm_tcp_cc_sock *tp) noexcept nogil:
    """``tcp_undo_cwnd_reduction()`` (no ECN) then Open: a spurious reduction is undone."""
    if tp.prior_ssthresh:
        tp.snd_cwnd = tp.icsk_ca_ops.undo_cwnd(tp)
        if tp.prior_ssthresh > tp.snd_ssthresh:
            tp.snd_ssthresh = tp.prior_ssthresh
    tcp_set_ca_state(tp, TCP_CA_Open)


cdef void tcp_cong_init(nm_tcp_cc_sock *tp, const nm_tcp_congestion_ops *ops) noexcept nogil:
    """``tcp_init_sock()`` and ``tcp_init_congestion_control()``: cwnd 10, ssthresh infinite,
    RTO 1 s (mdev_us to match), then the ops' init."""
    memset(tp, 0, sizeof(nm_tcp_cc_sock))
    tp.snd_cwnd = TCP_INIT_CWND
    tp.snd_ssthresh = TCP_INFINITE_SSTHRESH
    tp.snd_cwnd_clamp = 0xffffffff
    tp.is_cwnd_limited = True
    tp.icsk_rto = TCP_TIMEOUT_INIT
    tp.mdev_us = TCP_TIMEOUT_INIT * (1000000 // HZ)
    tp.icsk_ca_ops = ops
    if ops.init != NULL:
        ops.init(tp)


cdef void tcp_cong_on_ack(nm_tcp_cc_sock *tp, uint32_t acked, int64_t rtt_us) noexcept nogil:
    """What ``tcp_ack()`` does with the congestion state for an ACK of ``acked`` new segments
    (at tp.tcp_mstamp): the RTT sample (``tcp_ack_update_rtt()``), ``pkts_acked``, then
    ``tcp_cong_control()``: cong_avoid unless in CWR/Recovery. The window stays full."""
    tp.snd_una += acked
    if rtt_us >= 0:
        tcp_ack_update_rtt(tp, rtt_us)
    if tp.icsk_ca_ops.pkts_acked != NULL:
        tp.icsk_ca_ops.pkts_acked(tp, acked, rtt_us)
    if not tcp_in_cwnd_reduction(tp):
        tp.icsk_ca_ops.cong_avoid(tp, tp.snd_una, acked)
    if before(tp.snd_nxt, tp.snd_una + tp.snd_cwnd):
        tp.snd_nxt = tp.snd_una + tp.snd_cwnd


# ---- the Python boundary (tests; the closed loop will call the C directly) ----------------------

DEF NM_CC_ACK = 0               # acked segments, an RTT sample (or -1)
DEF NM_CC_RECOVERY = 1          # fast retransmit: tcp_enter_recovery()
DEF NM_CC_RECOVERED = 2         # recovery or loss ends: tcp_end_cwnd_reduction(), Open
DEF NM_CC_RTO = 3               # tcp_retransmit_timer(): tcp_enter_loss() and the backoff
DEF NM_CC_UNDO = 4              # a spurious reduction: tcp_undo_cwnd_reduction()
DEF NM_CC_TX_START = 5          # sending again after idle: CA_EVENT_TX_START

CC_ACK, CC_RECOVERY, CC_RECOVERED, CC_RTO, CC_UNDO, CC_TX_START = range(6)


cdef void nm_cc_event(nm_tcp_cc_sock *tp, uint32_t kind, uint32_t acked, int64_t rtt_us,
                      uint64_t now_us) noexcept nogil:
    tp.tcp_mstamp = now_us
    if kind == NM_CC_ACK:
        tcp_cong_on_ack(tp, acked, rtt_us)
        tp.lsndtime = tcp_sk_jiffies32(tp)
    elif kind == NM_CC_RECOVERY:
        tcp_enter_recovery(tp)
    elif kind == NM_CC_RECOVERED:
        tcp_end_cwnd_reduction(tp)
    elif kind == NM_CC_RTO:
        tcp_enter_loss(tp)
        tcp_retransmit_timer_backoff(tp)
    elif kind == NM_CC_UNDO:
        tcp_undo_cwnd_reduction(tp)
    elif kind == NM_CC_TX_START:
        tcp_ca_event(tp, CA_EVENT_TX_START)
        tp.lsndtime = tcp_sk_jiffies32(tp)


cdef class CoreCongestion:
    """One sender's congestion state with the ops named ("reno" or "cubic"), driven by
    batches of events (``run()``); for the tests of the closed loop's sender side."""

    def __cinit__(self, name):
        cdef const nm_tcp_congestion_ops *ops = tcp_ca_find(name.encode())
        if ops == NULL:
            raise ValueError(f"unknown congestion control {name!r}")
        tcp_cong_init(&self.tp, ops)

    def run(self, kinds, acked, rtt_us, now_us):
        """Apply the events in order (now_us nondecreasing); after each: (snd_cwnd,
        snd_ssthresh, icsk_rto, icsk_ca_state), an (n, 4) uint32 array."""
        cdef const uint32_t[:] k = _np.ascontiguousarray(kinds, dtype=_np.uint32)
        cdef const uint32_t[:] a = _np.ascontiguousarray(acked, dtype=_np.uint32)
        cdef const int64_t[:] r = _np.ascontiguousarray(rtt_us, dtype=_np.int64)
        cdef const uint64_t[:] t = _np.ascontiguousarray(now_us, dtype=_np.uint64)
        cdef Py_ssize_t i, n = k.shape[0]
        if not (a.shape[0] == r.shape[0] == t.shape[0] == n):
            raise ValueError("event arrays differ in length")
        out = _np.empty((n, 4), dtype=_np.uint32)
        cdef uint32_t[:, :] o = out
        with nogil:
            for i in range(n):
                nm_cc_event(&self.tp, k[i], a[i], r[i], t[i])
                o[i, 0] = self.tp.snd_cwnd
                o[i, 1] = self.tp.snd_ssthresh
                o[i, 2] = self.tp.icsk_rto
                o[i, 3] = self.tp.icsk_ca_state
        return out

    def rto_backoff(self, uint64_t max_when=TCP_RTO_MAX):
        """``inet_csk_rto_backoff()``, in jiffies."""
        return inet_csk_rto_backoff(&self.tp, max_when)

    @property
    def name(self):
        return self.tp.icsk_ca_ops.name.decode()

    @property
    def state(self):
        """The sender's fields, by their kernel names."""
        cdef nm_tcp_cc_sock *tp = &self.tp
        return {"snd_cwnd": tp.snd_cwnd, "snd_cwnd_cnt": tp.snd_cwnd_cnt,
                "snd_ssthresh": tp.snd_ssthresh, "prior_cwnd": tp.prior_cwnd,
                "prior_ssthresh": tp.prior_ssthresh, "snd_una": tp.snd_una,
                "snd_nxt": tp.snd_nxt, "high_seq": tp.high_seq, "srtt_us": tp.srtt_us,
                "mdev_us": tp.mdev_us, "mdev_max_us": tp.mdev_max_us,
                "rttvar_us": tp.rttvar_us, "rtt_seq": tp.rtt_seq, "icsk_rto": tp.icsk_rto,
                "icsk_backoff": tp.icsk_backoff, "icsk_ca_state": tp.icsk_ca_state}

    @property
    def bictcp(self):
        return dict(self.tp.ca)


def _cubic_root(uint64_t a):
    """``cubic_root()``, for the tests."""
    return cubic_root(a)
