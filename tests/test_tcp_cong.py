"""The closed loop's sender side (groundwork): congestion control (Reno, CUBIC with HyStart),
the RTT estimator and the RTO, from pyx/tcp_cong.pxi and pyx/tcp_rtt.pxi.

Scripted values are worked out from the kernel (Linux 6.12) and RFC 6298; the differential
tests drive ``_core.CoreCongestion`` and ``tests/reference/tcp_cong_model.py`` with the same
Hypothesis event sequences and compare (snd_cwnd, snd_ssthresh, icsk_rto, ca_state) after every
event, and the estimator's fields at the end.
"""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from reference.tcp_cong_model import (
    ACK,
    CA_LOSS,
    CA_OPEN,
    CA_RECOVERY,
    RECOVERED,
    RECOVERY,
    RTO,
    TCP_INFINITE_SSTHRESH,
    TX_START,
    UNDO,
    RefSender,
    cubic_root,
)

from netmem import _core


def run(cc, events):
    """events: (kind, acked, rtt_us, now_us) tuples -> the (n, 4) array of CoreCongestion.run."""
    k, a, r, t = (np.array(c) for c in zip(*events, strict=True))
    return cc.run(k.astype(np.uint32), a.astype(np.uint32), r.astype(np.int64),
                  t.astype(np.uint64))


def acks(n, acked=1, rtt_us=-1, start_us=0, step_us=100):
    return [(ACK, acked, rtt_us, start_us + i * step_us) for i in range(n)]


def test_unknown_name():
    with pytest.raises(ValueError):
        _core.CoreCongestion("vegas")


def test_reno_slow_start_then_additive_increase():
    cc = _core.CoreCongestion("reno")
    out = run(cc, acks(5))
    assert list(out[:, 0]) == [11, 12, 13, 14, 15]       # one segment per segment acked
    assert out[0, 1] == TCP_INFINITE_SSTHRESH and out[0, 2] == 1000   # TCP_TIMEOUT_INIT
    out = run(cc, [(RECOVERY, 0, -1, 1000)])
    assert tuple(out[0]) == (7, 7, 1000, CA_RECOVERY)    # tcp_reno_ssthresh: 15 >> 1
    out = run(cc, acks(3, start_us=2000))                # no growth in recovery (no PRR)
    assert list(out[:, 0]) == [7, 7, 7]
    run(cc, [(RECOVERED, 0, -1, 3000)])
    # cwnd 7 >= ssthresh 7: congestion avoidance, +1 per 7 acked (tcp_cong_avoid_ai).
    out = run(cc, acks(14, start_us=4000))
    assert list(out[:, 0]) == [7] * 6 + [8] * 8
    assert cc.state["snd_cwnd_cnt"] == 7                 # 7 of the 8 the next needs


def test_reno_slow_start_stops_at_ssthresh():
    cc = _core.CoreCongestion("reno")
    run(cc, acks(10))                                    # cwnd 20
    run(cc, [(RTO, 0, -1, 2000)])                        # ssthresh 10, cwnd 1
    assert (cc.state["snd_cwnd"], cc.state["snd_ssthresh"]) == (1, 10)
    out = run(cc, acks(2, acked=6, start_us=3000))       # 1 -> 7, then 7 + 3 to 10, 3 left
    assert list(out[:, 0]) == [7, 10] and cc.state["snd_cwnd_cnt"] == 3


def test_recovery_from_loss_reduces_again():
    """Loss is not a cwnd reduction (tcp_in_cwnd_reduction(): CWR and Recovery only), so a
    fast retransmit after the RTO's slow start halves cwnd again."""
    cc = _core.CoreCongestion("reno")
    run(cc, [*acks(10), (RTO, 0, -1, 2000), *acks(1, acked=9, start_us=3000)])
    assert (cc.state["snd_cwnd"], cc.state["snd_ssthresh"]) == (10, 10)
    out = run(cc, [(RECOVERY, 0, -1, 4000)])
    assert tuple(out[0, [0, 1, 3]]) == (5, 5, CA_RECOVERY)
    assert cc.state["prior_ssthresh"] == 10              # tcp_current_ssthresh(): max(10, 7)


def test_undo_restores_cwnd_and_ssthresh():
    cc = _core.CoreCongestion("reno")
    run(cc, [*acks(10), (RECOVERY, 0, -1, 5000), (UNDO, 0, -1, 6000)])
    s = cc.state
    # prior_ssthresh = tcp_current_ssthresh() = max(inf, 3/4 cwnd).
    assert (s["snd_cwnd"], s["snd_ssthresh"], s["icsk_ca_state"]) == (
        20, TCP_INFINITE_SSTHRESH, CA_OPEN)


def test_rto_backoff_doubles_to_max():
    """tcp_retransmit_timer(): icsk_rto doubles per timeout up to TCP_RTO_MAX (120 s)."""
    cc = _core.CoreCongestion("reno")
    out = run(cc, [(RTO, 0, -1, i) for i in range(9)])
    assert list(out[:, 2]) == [2000, 4000, 8000, 16000, 32000, 64000, 120000, 120000, 120000]
    assert cc.state["icsk_backoff"] == 9 and out[-1, 3] == CA_LOSS
    assert cc.rto_backoff() == 120000                    # inet_csk_rto_backoff(), capped
    assert cc.rto_backoff(1 << 40) == 120000 << 9
    run(cc, acks(1, rtt_us=100_000, start_us=10))        # a valid sample resets the backoff
    assert cc.state["icsk_backoff"] == 0 and cc.state["icsk_rto"] == 300


@pytest.mark.parametrize("rtt_ms, rto_ms", [(500, 1500), (100, 300), (50, 250), (1, 201)])
def test_rto_first_sample_rfc6298(rtt_ms, rto_ms):
    """RFC 6298 2.2: SRTT = R, RTTVAR = R/2, RTO = SRTT + 4 RTTVAR = 3R; Linux floors the
    4 RTTVAR term (rttvar_us) at TCP_RTO_MIN."""
    cc = _core.CoreCongestion("reno")
    run(cc, acks(1, rtt_us=rtt_ms * 1000))
    s = cc.state
    assert s["srtt_us"] == rtt_ms * 1000 << 3 and s["mdev_us"] == rtt_ms * 1000 << 1
    assert s["icsk_rto"] == rto_ms


def test_rto_steady_rtt_decays_to_srtt_plus_min():
    """A constant RTT: mdev decays, rttvar_us follows mdev_max_us down a quarter per RTT to
    the 200 ms floor once per RTT (rtt_seq), so RTO falls from 3R towards R + TCP_RTO_MIN."""
    cc = _core.CoreCongestion("reno")
    out = run(cc, acks(3000, acked=1, rtt_us=300_000, step_us=30_000))
    assert out[0, 2] == 900 and 500 <= out[-1, 2] < 550
    assert all(np.diff(out[:, 2].astype(int)) <= 0)


def test_cubic_root():
    for a in [0, 1, 7, 8, 63, 64, 1000, 10**6, 2**40, 10**15, 2**63]:
        assert _core._cubic_root(a) == cubic_root(a)
        assert abs(cubic_root(a) - round(a ** (1 / 3))) <= max(1, 0.002 * a ** (1 / 3))


def test_cubic_beta_and_fast_convergence():
    cc = _core.CoreCongestion("cubic")
    run(cc, acks(90))                                    # cwnd 100 (HyStart needs RTT samples)
    out = run(cc, [(RECOVERY, 0, -1, 10_000)])
    assert out[0, 1] == 100 * 717 // 1024 == 70 and cc.bictcp["last_max_cwnd"] == 100
    run(cc, [(RECOVERED, 0, -1, 11_000), (RECOVERY, 0, -1, 12_000)])
    # Fast convergence: a loss below the last W_max remembers W_max = cwnd * (1 + beta) / 2.
    assert cc.bictcp["last_max_cwnd"] == 70 * (1024 + 717) // 2048 == 59
    assert cc.state["snd_ssthresh"] == 70 * 717 // 1024 == 49


def test_cubic_epoch_k_matches_cubic_root():
    cc = _core.CoreCongestion("cubic")
    run(cc, [*acks(90), (RECOVERY, 0, -1, 10000), (RECOVERED, 0, -1, 11000)])
    run(cc, acks(1, start_us=20_000))                    # starts the epoch at cwnd 70
    ca = cc.bictcp
    cube_factor = (1 << 40) // 410
    assert ca["bic_K"] == cubic_root(cube_factor * (100 - 70)) and ca["bic_origin_point"] == 100


def test_hystart_delay_exits_slow_start():
    """hystart_update(): after 8 samples of a round, an RTT above delay_min + 4 ms (the clamp
    floor) sets ssthresh to cwnd; Reno would carry on doubling."""
    ev = acks(6, rtt_us=10_000, step_us=3000) + acks(10, rtt_us=20_000, start_us=30_000,
                                                     step_us=3000)
    cubic, reno = _core.CoreCongestion("cubic"), _core.CoreCongestion("reno")
    run(cubic, ev)
    run(reno, ev)
    assert cubic.bictcp["found"] == 1 and cubic.bictcp["delay_min"] == 10_000
    assert cubic.state["snd_ssthresh"] < TCP_INFINITE_SSTHRESH
    assert reno.state["snd_ssthresh"] == TCP_INFINITE_SSTHRESH


def test_hystart_ack_train_exits_slow_start():
    """ACKs closer than 2 ms apart spanning delay_min / 2 since the round began: found."""
    cc = _core.CoreCongestion("cubic")
    out = run(cc, acks(60, rtt_us=40_000, step_us=1000))
    assert cc.bictcp["found"] == 1 and cc.state["snd_ssthresh"] < TCP_INFINITE_SSTHRESH
    assert cc.bictcp["curr_rtt"] == 40_000              # not the delay test: RTT is flat
    found = int(np.argmax(out[:, 1] < TCP_INFINITE_SSTHRESH))
    assert out[found, 1] == out[found - 1, 0]            # ssthresh = the cwnd HyStart saw


EVENT = st.one_of(
    st.tuples(st.just(ACK), st.integers(1, 64), st.integers(-1, 400_000), st.integers(0, 40_000)),
    st.tuples(st.sampled_from([RECOVERY, RECOVERED, RTO, UNDO, TX_START]), st.just(0),
              st.just(-1), st.integers(0, 2_000_000)),
)


@settings(max_examples=150, deadline=None, derandomize=True, database=None)
@given(name=st.sampled_from(["reno", "cubic"]),
       events=st.lists(st.one_of(EVENT, EVENT, EVENT, st.tuples(
           st.just(ACK), st.integers(1, 4), st.integers(5_000, 60_000), st.integers(0, 3000))),
           min_size=1, max_size=300))
def test_differential_against_reference(name, events):
    now, evs = 0, []
    for kind, acked, rtt, dt in events:
        now += dt
        evs.append((kind, acked, rtt, now))
    cc, ref = _core.CoreCongestion(name), RefSender(name)
    out = run(cc, evs)
    for i, e in enumerate(evs):
        assert tuple(out[i]) == ref.event(*e), (i, e)
    s = cc.state
    for f in ("srtt_us", "mdev_us", "mdev_max_us", "rttvar_us", "rtt_seq", "snd_una",
              "snd_nxt", "icsk_backoff", "snd_cwnd_cnt", "prior_cwnd", "prior_ssthresh"):
        assert s[f] == getattr(ref, f), f
    if name == "cubic":
        for f, v in cc.bictcp.items():
            assert v == getattr(ref, f), f
