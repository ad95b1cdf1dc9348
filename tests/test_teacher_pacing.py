"""Rate limits, Retry-After parsing and backoff: the waits between a teacher's tries."""

from __future__ import annotations

import asyncio
import random
import time
from email.utils import formatdate

import pytest

from cotforge.teachers.pacing import TokenBucket, backoff_seconds, retry_after_seconds


def _timed(*steps: tuple[str, float], per_minute: float) -> float:
    """Seconds that ``steps`` (("take" | "give_back", amount)) take on a fresh bucket."""

    async def main() -> float:
        bucket = TokenBucket(per_minute)
        started = time.monotonic()
        for action, amount in steps:
            if action == "take":
                await bucket.take(amount)
            else:
                bucket.give_back(amount)
        return time.monotonic() - started

    return asyncio.run(main())


def test_bucket_allows_one_seconds_burst_then_paces():
    # 6,000/min = 100/s, burst 100: 150 units need about 0.5 s.
    assert 0.45 <= _timed(*[("take", 1)] * 150, per_minute=6000) < 1.0
    assert _timed(*[("take", 1)] * 100, per_minute=6000) < 0.1


def test_a_take_larger_than_the_bucket_goes_out_and_leaves_debt():
    # 600,000/min = 10,000/s: 15,000 at once is allowed, then 0.5 s of debt is paid off.
    assert _timed(("take", 15_000), per_minute=600_000) < 0.1
    assert 0.45 <= _timed(("take", 15_000), ("take", 1), per_minute=600_000) < 1.0


def test_give_back_corrects_an_estimate_both_ways():
    refunded = _timed(("take", 10_000), ("give_back", 10_000), ("take", 10_000), per_minute=600_000)
    assert refunded < 0.1
    charged = _timed(("take", 10_000), ("give_back", -5_000), ("take", 1), per_minute=600_000)
    assert 0.45 <= charged < 1.0


def test_bucket_refuses_a_non_positive_rate():
    with pytest.raises(ValueError, match="per_minute must be positive, got 0"):
        TokenBucket(0)


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"retry-after": "7"}, 7.0),
        ({"Retry-After": "0.5"}, 0.5),
        ({"Retry-After-Ms": "250"}, 0.25),
        ({"Retry-After": "-3"}, None),
        ({"Retry-After": "inf"}, None),
        ({"Retry-After": ""}, None),
        ({}, None),
        ({"Retry-After": formatdate(0, usegmt=True)}, 0.0),  # a date in the past: now
    ],
)
def test_retry_after_forms(headers, expected):
    assert retry_after_seconds(headers) == expected


def test_retry_after_date_in_the_future():
    header = {"Retry-After": formatdate(time.time() + 30, usegmt=True)}
    assert 28 <= retry_after_seconds(header) <= 30


def test_full_jitter_fills_a_doubling_window():
    rng = random.Random(1)
    for attempt, window in [(0, 0.5), (1, 1.0), (2, 2.0), (6, 10.0), (1000, 10.0)]:
        draws = [backoff_seconds(attempt, base_s=0.5, max_s=10.0, rng=rng) for _ in range(300)]
        assert all(0 <= d <= window for d in draws)
        assert max(draws) > 0.9 * window
        assert min(draws) < 0.1 * window


def test_retry_after_is_waited_with_a_little_spread_and_capped():
    rng = random.Random(2)
    draws = [backoff_seconds(0, base_s=1, max_s=60, retry_after_s=10, rng=rng) for _ in range(200)]
    assert all(10 <= d <= 11 for d in draws)
    assert max(draws) - min(draws) > 0.5
    capped = backoff_seconds(5, base_s=1, max_s=60, retry_after_s=3600, retry_after_max_s=2)
    assert 2 <= capped <= 2.2
