import random

from capture.backoff import JITTER, Backoff


def delays(backoff: Backoff, count: int) -> list[float]:
    return [backoff.next_delay() for _ in range(count)]


def test_delays_double_from_1s_and_cap_at_60s_within_jitter():
    got = delays(Backoff(rng=random.Random(1)), 10)
    for delay, base in zip(got, [1, 2, 4, 8, 16, 32, 60, 60, 60, 60], strict=True):
        assert base * (1 - JITTER) <= delay <= base * (1 + JITTER)


def test_jitter_spreads_connections_apart():
    a = delays(Backoff(rng=random.Random(1)), 3)
    b = delays(Backoff(rng=random.Random(2)), 3)
    assert a != b


def test_reset_after_a_healthy_minute():
    backoff = Backoff(rng=random.Random(1))
    delays(backoff, 5)
    backoff.connected(100.0)
    backoff.disconnected(161.0)
    assert backoff.next_delay() <= 1 + JITTER


def test_no_reset_after_a_short_session():
    backoff = Backoff(rng=random.Random(1))
    delays(backoff, 5)
    backoff.connected(100.0)
    backoff.disconnected(110.0)
    assert backoff.next_delay() >= 32 * (1 - JITTER)
