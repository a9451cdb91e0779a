"""The simulator's clock: the wall clock plus whatever ``POST /sim/advance`` added.

Rule (docs/simulator.md): the simulator clock is never behind the wall clock (it only ever adds a
non-negative offset), and no trade time is ever later than the simulator's ``now()``. Both the wall
clock and the monotonic clock are injectable so tests can run on fake time and get byte-identical
payloads for the same seed.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta


def _wall() -> datetime:
    return datetime.now(UTC)


class SimClock:
    """Aware-UTC ``now()`` and a monotonic ``mono()`` (for pacing), both advanced together."""

    def __init__(
        self,
        wall: Callable[[], datetime] | None = None,
        monotonic: Callable[[], float] | None = None,
    ) -> None:
        self._wall = wall or _wall
        self._mono = monotonic or time.monotonic
        self._offset = timedelta(0)
        self.started = self.now().replace(microsecond=0)

    @property
    def offset(self) -> timedelta:
        """How far ahead of the wall clock the simulation runs."""
        return self._offset

    def now(self) -> datetime:
        """Current simulator time (aware UTC), never behind the wall clock."""
        return self._wall().astimezone(UTC) + self._offset

    def mono(self) -> float:
        """Monotonic seconds for rate limits and session expiry, including advanced time."""
        return self._mono() + self._offset.total_seconds()

    def advance(self, seconds: float) -> None:
        """Move the simulation forward; the clock never goes back."""
        if seconds < 0:
            raise ValueError("the simulator clock only moves forward")
        self._offset += timedelta(seconds=seconds)
