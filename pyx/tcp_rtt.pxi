# The RTT estimator and the retransmission timeout (RFC 6298 as Linux does it).
#
# Models tcp_rtt_estimator(), tcp_ack_update_rtt(), __tcp_set_rto(), tcp_set_rto() and
# tcp_bound_rto() of net/ipv4/tcp_input.c and include/net/tcp.h, and inet_csk_rto_backoff() and
# the backoff of tcp_retransmit_timer() (net/ipv4/tcp_timer.c), Linux 6.12, HZ = 1000: icsk_rto
# is in jiffies (ms). Departures: no per-route rto_min (TCP_RTO_MIN always); the sequence
# numbers of rtt_seq are segment counts.

DEF TCP_RTO_MIN = 200              # jiffies: 200 ms
DEF TCP_RTO_MAX = 120000           # 120 s
DEF TCP_TIMEOUT_INIT = 1000        # 1 s
DEF TCP_RTO_MIN_US = 200000


cdef inline uint32_t usecs_to_jiffies(uint64_t us) noexcept nogil:
    """``usecs_to_jiffies()`` at HZ = 1000: rounds up."""
    return <uint32_t>((us + 999) // 1000)


cdef void tcp_rtt_estimator(nm_tcp_cc_sock *tp, int64_t mrtt_us) noexcept nogil:
    """``tcp_rtt_estimator()``: Jacobson's srtt (<< 3) and mdev (<< 2) with Linux's twist:
    rttvar_us follows mdev_max_us, the largest mdev in the last RTT (one window, rtt_seq),
    rises at once and decays by a quarter per RTT; never below TCP_RTO_MIN."""
    cdef int64_t m = mrtt_us
    cdef uint32_t srtt = tp.srtt_us
    if srtt != 0:
        m -= srtt >> 3                  # m is now the error in the estimate
        srtt += <uint32_t>m             # srtt = 7/8 srtt + 1/8 new
        if m < 0:
            m = -m - (tp.mdev_us >> 2)  # a falling RTT raises mdev eight times slower
            if m > 0:
                m >>= 3
        else:
            m -= tp.mdev_us >> 2
        tp.mdev_us += <uint32_t>m       # mdev = 3/4 mdev + 1/4 new
        if tp.mdev_us > tp.mdev_max_us:
            tp.mdev_max_us = tp.mdev_us
            if tp.mdev_max_us > tp.rttvar_us:
                tp.rttvar_us = tp.mdev_max_us
        if after(tp.snd_una, tp.rtt_seq):         # an RTT ended
            if tp.mdev_max_us < tp.rttvar_us:
                tp.rttvar_us -= (tp.rttvar_us - tp.mdev_max_us) >> 2
            tp.rtt_seq = tp.snd_nxt
            tp.mdev_max_us = TCP_RTO_MIN_US
    else:
        srtt = <uint32_t>(m << 3)       # the first measurement: rto = 3 * rtt
        tp.mdev_us = <uint32_t>(m << 1)
        tp.rttvar_us = max(tp.mdev_us, TCP_RTO_MIN_US)
        tp.mdev_max_us = tp.rttvar_us
        tp.rtt_seq = tp.snd_nxt
    tp.srtt_us = max(1, srtt)


cdef void tcp_set_rto(nm_tcp_cc_sock *tp) noexcept nogil:
    """``tcp_set_rto()``: ``__tcp_set_rto()`` (srtt + rttvar, to jiffies) bounded by
    ``tcp_bound_rto()`` to TCP_RTO_MAX."""
    tp.icsk_rto = usecs_to_jiffies((tp.srtt_us >> 3) + tp.rttvar_us)
    if tp.icsk_rto > TCP_RTO_MAX:
        tp.icsk_rto = TCP_RTO_MAX


cdef void tcp_ack_update_rtt(nm_tcp_cc_sock *tp, int64_t seq_rtt_us) noexcept nogil:
    """``tcp_ack_update_rtt()``: a valid sample updates the estimate, the RTO, and (RFC 6298)
    resets the backoff."""
    tcp_rtt_estimator(tp, seq_rtt_us)
    tcp_set_rto(tp)
    tp.icsk_backoff = 0


cdef inline uint64_t inet_csk_rto_backoff(nm_tcp_cc_sock *tp, uint64_t max_when) noexcept nogil:
    """``inet_csk_rto_backoff()``: icsk_rto << icsk_backoff, at most max_when."""
    return min((<uint64_t>tp.icsk_rto) << tp.icsk_backoff, max_when)


cdef void tcp_retransmit_timer_backoff(nm_tcp_cc_sock *tp) noexcept nogil:
    """The backoff of ``tcp_retransmit_timer()`` on an established connection: icsk_backoff
    counts, icsk_rto doubles up to TCP_RTO_MAX (the timer is rearmed with it)."""
    tp.icsk_backoff += 1
    tp.icsk_rto = min(tp.icsk_rto << 1, TCP_RTO_MAX)
