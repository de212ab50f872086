"""A pure-Python reference model of the sender's congestion state, the oracle of the
differential tests of pyx/tcp_cong.pxi and pyx/tcp_rtt.pxi.

Written from the kernel (Linux 6.12, HZ = 1000), not from netmem's C core: tcp_slow_start(),
tcp_cong_avoid_ai(), tcp_reno_cong_avoid/ssthresh/undo_cwnd() (net/ipv4/tcp_cong.c); struct
bictcp, cubic_root(), bictcp_update(), cubictcp_cong_avoid/recalc_ssthresh/state/acked/
cwnd_event() and hystart_update() (net/ipv4/tcp_cubic.c, default module parameters);
tcp_rtt_estimator(), tcp_set_rto(), tcp_enter_recovery(), tcp_enter_loss(),
tcp_end_cwnd_reduction(), tcp_undo_cwnd_reduction() (net/ipv4/tcp_input.c), and the backoff of
tcp_retransmit_timer(). Arithmetic is on Python ints masked to the kernel's widths. The model's
departures are the C core's (see pyx/tcp_cong.pxi): segments for sequence numbers, no PRR,
no pacing, the window always full.
"""
U32 = 0xFFFFFFFF
U64 = (1 << 64) - 1
HZ = 1000
TCP_INFINITE_SSTHRESH = 0x7FFFFFFF
TCP_RTO_MIN_US = 200_000
TCP_RTO_MAX = 120_000
TCP_TIMEOUT_INIT = 1000
CA_OPEN, CA_DISORDER, CA_CWR, CA_RECOVERY, CA_LOSS = range(5)
ACK, RECOVERY, RECOVERED, RTO, UNDO, TX_START = range(6)

BETA, BETA_SCALE, BIC_SCALE, BICTCP_HZ = 717, 1024, 41, 10
CUBIC_BETA_SCALE = 8 * (BETA_SCALE + BETA) // 3 // (BETA_SCALE - BETA)
CUBE_RTT_SCALE = BIC_SCALE * 10
CUBE_FACTOR = (1 << (10 + 3 * BICTCP_HZ)) // (BIC_SCALE * 10)
ROOT_V = [0, 54, 54, 54, 118, 118, 118, 118, 123, 129, 134, 138, 143, 147, 151, 156,
          157, 161, 164, 168, 170, 173, 176, 179, 181, 185, 187, 190, 192, 194, 197, 199,
          200, 202, 204, 206, 209, 211, 213, 215, 217, 219, 221, 222, 224, 225, 227, 229,
          231, 232, 234, 236, 237, 239, 240, 242, 244, 245, 246, 248, 250, 251, 252, 254]


def s32(x):
    x &= U32
    return x - (1 << 32) if x & 0x80000000 else x


def after(a, b):
    return s32(b - a) < 0


def cubic_root(a):
    b = a.bit_length()
    if b < 7:
        return (ROOT_V[a] + 35) >> 6
    b = ((b * 84) >> 8) - 1
    x = (((ROOT_V[a >> (b * 3)] + 10) << b) & U32) >> 6
    x = (2 * x + (a // (x * (x - 1)) & U32)) & U32
    return ((x * 341) & U32) >> 10


class RefSender:
    """The fields of tcp_sock/inet_connection_sock/bictcp the C core keeps, as attributes."""

    def __init__(self, name):
        assert name in ("reno", "cubic")
        self.cubic = name == "cubic"
        self.snd_cwnd, self.snd_cwnd_cnt, self.snd_cwnd_clamp = 10, 0, U32
        self.snd_ssthresh = TCP_INFINITE_SSTHRESH
        self.prior_cwnd = self.prior_ssthresh = 0
        self.snd_una = self.snd_nxt = self.high_seq = 0
        self.lsndtime = self.now_us = 0
        self.srtt_us = self.mdev_max_us = self.rttvar_us = self.rtt_seq = 0
        self.mdev_us = TCP_TIMEOUT_INIT * 1000         # tcp_init_sock(): jiffies_to_usecs()
        self.icsk_rto, self.icsk_backoff, self.ca_state = TCP_TIMEOUT_INIT, 0, CA_OPEN
        if self.cubic:
            self.bictcp_reset()
            self.hystart_reset()

    @property
    def jiffies(self):
        return (self.now_us // 1000) & U32

    # -- tcp_cong.c
    def slow_start(self, acked):
        cwnd = min(self.snd_cwnd + acked, self.snd_ssthresh)
        acked -= cwnd - self.snd_cwnd
        self.snd_cwnd = min(cwnd, self.snd_cwnd_clamp)
        return acked

    def cong_avoid_ai(self, w, acked):
        if self.snd_cwnd_cnt >= w:
            self.snd_cwnd_cnt = 0
            self.snd_cwnd += 1
        self.snd_cwnd_cnt += acked
        if self.snd_cwnd_cnt >= w:
            delta = self.snd_cwnd_cnt // w
            self.snd_cwnd_cnt -= delta * w
            self.snd_cwnd += delta
        self.snd_cwnd = min(self.snd_cwnd, self.snd_cwnd_clamp)

    def cong_avoid(self, acked):
        if self.snd_cwnd < self.snd_ssthresh:
            acked = self.slow_start(acked)
            if not acked:
                return
        if self.cubic:
            self.bictcp_update(self.snd_cwnd, acked)
            self.cong_avoid_ai(self.cnt, acked)
        else:
            self.cong_avoid_ai(self.snd_cwnd, acked)

    def ssthresh(self):
        cwnd = self.snd_cwnd
        if not self.cubic:
            return max(cwnd >> 1, 2)
        self.epoch_start = 0
        if cwnd < self.last_max_cwnd:
            self.last_max_cwnd = (cwnd * (BETA_SCALE + BETA)) // (2 * BETA_SCALE)
        else:
            self.last_max_cwnd = cwnd
        return max(cwnd * BETA // BETA_SCALE, 2)

    # -- tcp_cubic.c
    def bictcp_reset(self):
        self.cnt = self.last_max_cwnd = self.last_cwnd = self.last_time = 0
        self.bic_origin_point = self.bic_K = self.delay_min = self.epoch_start = 0
        self.ack_cnt = self.tcp_cwnd = self.sample_cnt = self.found = 0

    def hystart_reset(self):
        self.round_start = self.last_ack = self.now_us & U32
        self.end_seq = self.snd_nxt
        self.curr_rtt = U32
        self.sample_cnt = 0

    def bictcp_update(self, cwnd, acked):
        now = self.jiffies
        self.ack_cnt = (self.ack_cnt + acked) & U32
        if self.last_cwnd == cwnd and s32(now - self.last_time) <= HZ // 32:
            return
        if not (self.epoch_start and now == self.last_time):
            self.last_cwnd, self.last_time = cwnd, now
            if self.epoch_start == 0:
                self.epoch_start, self.ack_cnt, self.tcp_cwnd = now, acked, cwnd
                if self.last_max_cwnd <= cwnd:
                    self.bic_K, self.bic_origin_point = 0, cwnd
                else:
                    self.bic_K = cubic_root(CUBE_FACTOR * (self.last_max_cwnd - cwnd) & U64)
                    self.bic_origin_point = self.last_max_cwnd
            t = s32(now - self.epoch_start) & U64
            t += -(-self.delay_min // 1000)
            t = (t << BICTCP_HZ) // HZ
            offs = abs(self.bic_K - t)
            delta = ((CUBE_RTT_SCALE * offs ** 3) & U64) >> 40 & U32
            if t < self.bic_K:
                target = (self.bic_origin_point - delta) & U32
            else:
                target = (self.bic_origin_point + delta) & U32
            self.cnt = cwnd // (target - cwnd) if target > cwnd else 100 * cwnd
            if self.last_max_cwnd == 0 and self.cnt > 20:
                self.cnt = 20
        delta = (cwnd * CUBIC_BETA_SCALE) >> 3
        while self.ack_cnt > delta:
            self.ack_cnt -= delta
            self.tcp_cwnd += 1
        if self.tcp_cwnd > cwnd:
            self.cnt = min(self.cnt, cwnd // (self.tcp_cwnd - cwnd))
        self.cnt = max(self.cnt, 2)

    def hystart_update(self, delay):
        now = self.now_us & U32
        if after(self.snd_una, self.end_seq):
            self.hystart_reset()
        if s32(now - self.last_ack) <= 2000:
            self.last_ack = now
            if (now - self.round_start) & U32 > self.delay_min >> 1:
                self.found = 1
                self.snd_ssthresh = self.snd_cwnd
        self.curr_rtt = min(self.curr_rtt, delay)
        if self.sample_cnt < 8:
            self.sample_cnt += 1
        elif self.curr_rtt > self.delay_min + min(max(self.delay_min >> 3, 4000), 16000):
            self.found = 1
            self.snd_ssthresh = self.snd_cwnd

    def cubic_acked(self, rtt_us):
        if rtt_us < 0:
            return
        if self.epoch_start and s32(self.jiffies - self.epoch_start) < HZ:
            return
        delay = rtt_us or 1
        if self.delay_min == 0 or self.delay_min > delay:
            self.delay_min = delay
        if not self.found and self.snd_cwnd < self.snd_ssthresh and self.snd_cwnd >= 16:
            self.hystart_update(delay)

    # -- tcp_input.c / tcp_timer.c
    def rtt_estimator(self, m):
        srtt = self.srtt_us
        if srtt:
            m -= srtt >> 3
            srtt = (srtt + m) & U32
            if m < 0:
                m = -m - (self.mdev_us >> 2)
                if m > 0:
                    m >>= 3
            else:
                m -= self.mdev_us >> 2
            self.mdev_us = (self.mdev_us + m) & U32
            if self.mdev_us > self.mdev_max_us:
                self.mdev_max_us = self.mdev_us
                self.rttvar_us = max(self.rttvar_us, self.mdev_max_us)
            if after(self.snd_una, self.rtt_seq):
                if self.mdev_max_us < self.rttvar_us:
                    self.rttvar_us -= (self.rttvar_us - self.mdev_max_us) >> 2
                self.rtt_seq = self.snd_nxt
                self.mdev_max_us = TCP_RTO_MIN_US
        else:
            srtt = m << 3
            self.mdev_us = m << 1
            self.rttvar_us = self.mdev_max_us = max(self.mdev_us, TCP_RTO_MIN_US)
            self.rtt_seq = self.snd_nxt
        self.srtt_us = max(1, srtt)
        self.icsk_rto = min(-(-((self.srtt_us >> 3) + self.rttvar_us) // 1000), TCP_RTO_MAX)
        self.icsk_backoff = 0

    def set_state(self, state):
        if self.cubic and state == CA_LOSS:
            self.bictcp_reset()
            self.hystart_reset()
        self.ca_state = state

    def current_ssthresh(self):
        if self.ca_state in (CA_CWR, CA_RECOVERY):
            return self.snd_ssthresh
        return max(self.snd_ssthresh, (self.snd_cwnd >> 1) + (self.snd_cwnd >> 2))

    def event(self, kind, acked, rtt_us, now_us):
        self.now_us = now_us
        if kind == ACK:
            self.snd_una = (self.snd_una + acked) & U32
            if rtt_us >= 0:
                self.rtt_estimator(rtt_us)
            if self.cubic:
                self.cubic_acked(rtt_us)
            if self.ca_state not in (CA_CWR, CA_RECOVERY):
                self.cong_avoid(acked)
            if after((self.snd_una + self.snd_cwnd) & U32, self.snd_nxt):
                self.snd_nxt = (self.snd_una + self.snd_cwnd) & U32
            self.lsndtime = self.jiffies
        elif kind == RECOVERY:
            self.prior_ssthresh = 0
            if self.ca_state not in (CA_CWR, CA_RECOVERY):       # !tcp_in_cwnd_reduction()
                self.prior_ssthresh = self.current_ssthresh()
                self.high_seq, self.snd_cwnd_cnt = self.snd_nxt, 0
                self.prior_cwnd = self.snd_cwnd
                self.snd_ssthresh = self.ssthresh()
                self.snd_cwnd = self.snd_ssthresh
            self.set_state(CA_RECOVERY)
        elif kind == RECOVERED:
            if self.snd_ssthresh < TCP_INFINITE_SSTHRESH and self.ca_state in (CA_CWR,
                                                                               CA_RECOVERY):
                self.snd_cwnd = self.snd_ssthresh
            self.set_state(CA_OPEN)
        elif kind == RTO:
            if self.ca_state <= CA_DISORDER or not after(self.high_seq, self.snd_una):
                self.prior_ssthresh = self.current_ssthresh()
                self.prior_cwnd = self.snd_cwnd
                self.snd_ssthresh = self.ssthresh()
            self.snd_cwnd, self.snd_cwnd_cnt = 1, 0
            self.set_state(CA_LOSS)
            self.high_seq = self.snd_nxt
            self.icsk_backoff += 1
            self.icsk_rto = min(self.icsk_rto * 2, TCP_RTO_MAX)
        elif kind == UNDO:
            if self.prior_ssthresh:
                self.snd_cwnd = max(self.snd_cwnd, self.prior_cwnd)
                self.snd_ssthresh = max(self.snd_ssthresh, self.prior_ssthresh)
            self.set_state(CA_OPEN)
        elif kind == TX_START and self.cubic:
            delta = s32(self.jiffies - self.lsndtime)
            if self.epoch_start and delta > 0:
                self.epoch_start = (self.epoch_start + delta) & U32
                if after(self.epoch_start, self.jiffies):
                    self.epoch_start = self.jiffies
        if kind == TX_START:
            self.lsndtime = self.jiffies
        return self.snd_cwnd, self.snd_ssthresh, self.icsk_rto, self.ca_state
