"""Full-jitter backoff: every delay within its ceiling, ceilings doubling up to the cap."""

from __future__ import annotations

import random

import pytest

from tickmesh import Backoff, full_jitter


def test_every_delay_is_within_its_ceiling() -> None:
    rng = random.Random(7)
    for attempt in range(40):
        ceiling = min(30.0, 0.5 * 2**attempt)
        for _ in range(200):
            delay = full_jitter(attempt, 0.5, 30.0, rng.random())
            assert 0.0 <= delay <= ceiling


def test_the_delays_are_spread_over_the_whole_ceiling() -> None:
    rng = random.Random(11)
    delays = [full_jitter(3, 0.5, 30.0, rng.random()) for _ in range(2000)]
    # Clients cut off together spread over [0, 4 s): none come back in a lump.
    assert min(delays) < 0.2 and max(delays) > 3.8
    assert 1.8 < sum(delays) / len(delays) < 2.2


def test_ceilings_double_up_to_the_cap_and_reset_after_a_session() -> None:
    b = Backoff(0.5, 4.0, random=lambda: 0.999999)
    assert [round(b.next_delay(), 3) for _ in range(6)] == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    b.reset()
    assert round(b.next_delay(), 3) == 0.5


def test_after_a_rate_limit_close_the_delay_is_in_the_upper_half_of_the_cap() -> None:
    for r in (0.0, 0.3, 0.999):
        b = Backoff(0.5, 30.0, random=lambda r=r: r)
        assert 15.0 <= b.slow_delay() <= 30.0
        assert b.attempt == 1


def test_a_base_above_the_cap_is_refused() -> None:
    with pytest.raises(ValueError):
        Backoff(10.0, 1.0, random=random.random)
