"""Token buckets: a rate in requests per second with a burst, one bucket per key."""

from __future__ import annotations

import math


class TokenBucket:
    """``burst`` tokens at most, refilled at ``rate`` a second; each request takes one.

    Times are the caller's monotonic clock in seconds; the bucket starts full."""

    __slots__ = ("burst", "rate", "_tokens", "_at")

    def __init__(self, rate: float, burst: int, now: float) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("a token bucket needs a positive rate and a burst of at least 1")
        self.rate = rate
        self.burst = burst
        self._tokens = float(burst)
        self._at = now

    def take(self, now: float) -> float:
        """Take a token: 0.0 if there was one, else the seconds until there is (nothing is taken then)."""
        if now > self._at:
            self._tokens = min(float(self.burst), self._tokens + (now - self._at) * self.rate)
            self._at = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return 0.0
        return (1.0 - self._tokens) / self.rate


def retry_after(wait_s: float) -> int:
    """``Retry-After`` in whole seconds, at least 1."""
    return max(1, math.ceil(wait_s))


def default_burst(rate: float) -> int:
    """The burst of a rate given without one: one second's worth, at least 1."""
    return max(1, math.ceil(rate))
