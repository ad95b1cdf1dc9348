"""How long a teacher client waits: rate limits, ``Retry-After``, backoff between tries.

Servers shed load with 429s and 5xx; a client that retries at once, or all at the same moment,
makes the overload worse and pays for it in failed tries. These helpers keep a client under its
configured request and token rates (:class:`TokenBucket`), wait what a server asks for
(:func:`retry_after_seconds`), and otherwise back off exponentially with full jitter
(:func:`backoff_seconds`), which spreads retries of many requests evenly over the wait window.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Mapping
from email.utils import parsedate_to_datetime


class TokenBucket:
    """A rate limit of ``per_minute`` units (requests or tokens), refilled continuously.

    The bucket holds at most one second's worth of units (at least one unit), so a run never
    bursts past what a server allows in a second, even at its start. A :meth:`take` larger than
    that waits for a full bucket and leaves it in debt, so big requests still go out and the
    rate over a minute stays right. :meth:`give_back` corrects an estimate once the real cost is
    known (a negative amount charges more). Use from one event loop.
    """

    def __init__(self, per_minute: float) -> None:
        if per_minute <= 0:
            msg = f"per_minute must be positive, got {per_minute}"
            raise ValueError(msg)
        self.rate = per_minute / 60.0
        self.capacity = max(self.rate, 1.0)
        self.level = self.capacity
        self._updated = time.monotonic()
        self._lock = asyncio.Lock()

    async def take(self, amount: float) -> None:
        """Wait until ``amount`` may be spent, then spend it; callers are served in order."""
        async with self._lock:
            self._refill()
            needed = min(amount, self.capacity)
            if self.level < needed:
                await asyncio.sleep((needed - self.level) / self.rate)
                self._refill()
            self.level -= amount

    def give_back(self, amount: float) -> None:
        """Return ``amount`` that was over-estimated (or charge ``-amount`` under-estimated)."""
        self._refill()
        self.level = min(self.capacity, self.level + amount)

    def _refill(self) -> None:
        now = time.monotonic()
        self.level = min(self.capacity, self.level + (now - self._updated) * self.rate)
        self._updated = now


def retry_after_seconds(headers: Mapping[str, str], *, now: float | None = None) -> float | None:
    """The wait a server asked for: ``retry-after-ms`` (OpenAI), else ``Retry-After`` in
    seconds or as an HTTP date; None when absent or unreadable. ``now`` is a Unix time (tests).

    >>> retry_after_seconds({"Retry-After": "2"})
    2.0
    >>> retry_after_seconds({"Retry-After": "Thu, 01 Jan 1970 00:00:30 GMT"}, now=10.0)
    20.0
    >>> retry_after_seconds({"retry-after-ms": "1500", "Retry-After": "2"})
    1.5
    >>> retry_after_seconds({"Retry-After": "soon"}) is None
    True
    """
    lowered = {key.lower(): value for key, value in headers.items()}
    milliseconds = _number(lowered.get("retry-after-ms"))
    if milliseconds is not None:
        return milliseconds / 1000.0
    value = lowered.get("retry-after")
    if value is None:
        return None
    seconds = _number(value)
    if seconds is not None:
        return seconds
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def _number(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        number = float(value)
    except ValueError:
        return None
    return number if number >= 0 and number != float("inf") else None


def backoff_seconds(
    attempt: int,
    *,
    base_s: float,
    max_s: float,
    retry_after_s: float | None = None,
    retry_after_max_s: float = 120.0,
    rng: random.Random | None = None,
) -> float:
    """The wait before try ``attempt + 1`` (``attempt`` counts failed tries from 0).

    With a ``Retry-After`` the server knows best: wait that (capped at ``retry_after_max_s``)
    plus up to 10% more, so requests told the same time do not return all at once. Without
    one, full jitter: uniform in ``[0, min(max_s, base_s * 2**attempt)]``.

    >>> backoff_seconds(3, base_s=1.0, max_s=4.0, rng=random.Random(0)) <= 4.0
    True
    >>> 10.0 <= backoff_seconds(0, base_s=1.0, max_s=60.0, retry_after_s=10.0) <= 11.0
    True
    >>> backoff_seconds(0, base_s=1.0, max_s=60.0, retry_after_s=3600, retry_after_max_s=5) <= 5.5
    True
    """
    draw = (rng or random).uniform
    if retry_after_s is not None:
        wait = min(retry_after_s, retry_after_max_s)
        return wait + draw(0.0, wait * 0.1)
    return draw(0.0, min(max_s, base_s * 2.0 ** min(attempt, 60)))
