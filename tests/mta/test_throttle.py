"""The sliding-second cap and AIMD, driven with explicit time."""

from __future__ import annotations

import random
from collections import deque

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mta.throttle import Aimd, RateLimiter, SmscWindow


def max_in_any_second(grants: list[tuple[float, int]]) -> int:
    """The largest number of grants within any half-open one-second span (t - 1, t]."""
    window: deque[tuple[float, int]] = deque()
    total = best = 0
    for stamp, count in grants:
        window.append((stamp, count))
        total += count
        while window[0][0] + 1.0 <= stamp:
            total -= window.popleft()[1]
        best = max(best, total)
    return best


def drive(
    limiter: RateLimiter, seconds: float, step: float, wanted: int
) -> list[tuple[float, int]]:
    grants, now = [], 0.0
    while now < seconds:
        granted = limiter.acquire(wanted, now)
        if granted:
            grants.append((now, granted))
        now = round(now + step, 9)
    return grants


@pytest.mark.parametrize("rate", [1, 7, 200, 10_000])
@pytest.mark.parametrize("step", [0.0005, 0.013, 0.25])
def test_no_sliding_second_above_the_cap_and_close_to_it(rate: int, step: float) -> None:
    limiter = RateLimiter(rate)
    grants = drive(limiter, 10.0, step, wanted=10**6)
    assert max_in_any_second(grants) <= rate
    total = sum(count for _, count in grants)
    # the ceiling: rate per span (1 s + jitter); a caller polling every `step` gets at most
    # a bucketful (a tenth of the rate, at least 1) per poll, and waits up to a step more
    # for each token when the bucket holds only one
    bucket = max(1.0, rate * 0.1)
    per_second = min(rate / limiter.span, bucket / step)
    if bucket == 1.0:
        per_second = min(per_second, 1 / (limiter.span / rate + step))
    assert total >= 0.95 * per_second * 10 - bucket - 1


def test_grants_are_spread_over_the_second() -> None:
    limiter = RateLimiter(1000)
    grants = drive(limiter, 3.0, 0.001, wanted=10**6)
    first_tenth = sum(c for t, c in grants if 1.0 < t <= 1.1)
    assert first_tenth <= 101  # a tenth of the cap, not the whole cap at once


@settings(max_examples=200, deadline=None)
@given(
    rate=st.floats(min_value=0.5, max_value=5000),
    steps=st.lists(
        st.tuples(st.floats(min_value=0, max_value=0.3), st.integers(1, 500)),
        min_size=1,
        max_size=300,
    ),
    changes=st.lists(st.floats(min_value=0.5, max_value=5000), max_size=3),
)
def test_cap_holds_for_any_demand_even_when_lowered(
    rate: float, steps: list[tuple[float, int]], changes: list[float]
) -> None:
    limiter = RateLimiter(rate)
    now, grants, cap = 0.0, [], rate
    change_points = {len(steps) * (i + 1) // (len(changes) + 1): c for i, c in enumerate(changes)}
    for index, (delay, wanted) in enumerate(steps):
        now += delay
        if index in change_points:
            new = change_points[index]
            limiter.set_rate(new, now)
            # lowering is safe at once; check against the highest cap of the last second
            cap = max(cap, new) if new > cap else cap
        granted = limiter.acquire(wanted, now)
        assert 0 <= granted <= wanted
        if granted:
            grants.append((now, granted))
    assert max_in_any_second(grants) <= max(1, int(cap))


def test_next_grant_at_is_exact() -> None:
    limiter = RateLimiter(10)
    now, rng = 0.0, random.Random(1)
    for _ in range(500):
        at = limiter.next_grant_at(now)
        assert at >= now
        if at > now:
            assert limiter.acquire(1, now) == 0
            if at - now > 1e-3:
                assert limiter.acquire(1, at - 1e-3) == 0
            now = at
        assert limiter.acquire(1, now) == 1
        now += rng.random() * 0.05


def test_unlimited_grants_everything() -> None:
    limiter = RateLimiter(0)
    assert limiter.acquire(10**6, 0.0) == 10**6
    assert limiter.next_grant_at(0.0) == 0.0


def test_aimd_halves_on_repeated_throttling_and_climbs_back_linearly() -> None:
    aimd = Aimd(100.0, threshold=3, cooldown=1.0, recovery_seconds=20.0)
    assert not aimd.on_throttled(0.0, 100.0)
    assert not aimd.on_throttled(0.1, 100.0)
    assert aimd.on_throttled(0.2, 100.0)
    assert aimd.rate == 50.0
    for _ in range(3):  # within the cooldown: no second halving
        assert not aimd.on_throttled(0.5, 50.0)
    assert aimd.rate == 50.0
    aimd.on_clean(1.2)
    aimd.on_clean(6.2)  # +5 s at 100/20 per second
    assert aimd.rate == pytest.approx(75.0)
    aimd.on_clean(30.0)
    assert aimd.rate == 100.0  # never above the cap
    assert aimd.decreases == 1


def test_aimd_without_a_cap_uses_the_observed_rate_and_lifts_the_limit() -> None:
    aimd = Aimd(None, threshold=1, cooldown=1.0, recovery_seconds=10.0)
    assert aimd.rate is None
    assert aimd.on_throttled(0.0, 400.0)
    assert aimd.rate == 200.0
    aimd.on_clean(1.0)
    aimd.on_clean(6.0)
    assert aimd.rate == pytest.approx(400.0)
    aimd.on_clean(20.0)
    assert aimd.rate is None


def test_aimd_never_goes_below_the_floor() -> None:
    aimd = Aimd(4.0, threshold=1, cooldown=0.0, floor=1.0)
    for i in range(10):
        aimd.on_throttled(float(i), 4.0)
    assert aimd.rate == 1.0


def test_smsc_window_shrinks_to_the_first_occupancy_the_smsc_throttled() -> None:
    window = SmscWindow(50, probe_after=10.0)
    for unanswered in range(10):
        window.on_accepted(unanswered)
    # the burst beyond the SMSC's 10: every answer blames the window, the limit is 10
    assert all(window.on_throttled(unanswered, 1.0) for unanswered in range(10, 50))
    assert window.limit == 10
    # a throttle at an occupancy the SMSC accepted before is its rate, not the window
    assert not window.on_throttled(5, 2.0)
    assert window.limit == 10


def test_smsc_window_probes_one_more_after_a_quiet_while_never_above_the_setting() -> None:
    window = SmscWindow(12, probe_after=10.0)
    window.on_throttled(10, 0.0)
    assert window.limit == 10
    assert not window.tick(9.9)
    assert window.tick(10.0) and window.limit == 11
    assert window.tick(20.0) and window.limit == 12
    assert not window.tick(40.0) and window.limit == 12
    # the probe overfilled it: back to what the SMSC holds
    window.on_accepted(9)
    assert window.on_throttled(10, 41.0) and window.limit == 10


def test_a_throttled_part_alone_on_its_bind_is_the_rate() -> None:
    window = SmscWindow(10)
    assert not window.on_throttled(0, 0.0)
    assert window.limit == 10
    assert window.on_throttled(1, 0.0) and window.limit == 1
