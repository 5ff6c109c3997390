"""A circuit breaker for the shared limiter backend: a dead Redis costs no timeouts."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

log = logging.getLogger("gateway.limits")


class CircuitBreaker:
    """Keeps a dead Redis from costing every request a timeout.

    Closed: every call goes out. After `threshold` consecutive failures it opens: calls
    fail at once, without touching the network, for `cooldown` seconds. Then one call at
    a time is let through as a probe (half-open); its success closes the breaker, its
    failure opens it for another cool-down. Nobody has to reset it by hand.
    """

    __slots__ = ("_clock", "_failures", "_open_until", "_probing", "cooldown", "threshold")

    def __init__(
        self,
        threshold: int = 3,
        cooldown: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.threshold = threshold
        self.cooldown = cooldown
        self._clock = clock
        self._failures = 0
        self._open_until = 0.0
        self._probing = False

    @property
    def state(self) -> str:
        if self._failures < self.threshold:
            return "closed"
        return "open" if self._probing or self._clock() < self._open_until else "half-open"

    def admit(self) -> bool:
        """May this call go to the network? In half-open, only the first caller may."""
        if self._failures < self.threshold:
            return True
        if self._probing or self._clock() < self._open_until:
            return False
        self._probing = True
        return True

    def success(self) -> None:
        if self._failures >= self.threshold:
            log.warning("limiter backend recovered, shared limits back in force")
        self._failures = 0
        self._probing = False

    def failure(self, reason: str) -> None:
        self._failures += 1
        self._probing = False
        if self._failures >= self.threshold:
            if self._failures == self.threshold:
                log.warning(
                    "limiter backend failing, circuit open",
                    extra={"detail": f"{reason}; retrying every {self.cooldown:g}s"},
                )
            self._open_until = self._clock() + self.cooldown

    def abandon(self) -> None:
        """A call was cancelled (client went away): neither a success nor a failure."""
        self._probing = False
