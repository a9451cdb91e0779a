"""IBKR's pacing limits (docs/ibkr-api.md#rate-limits) with a penalty box, as the simulator enforces them.

Global: ``Quirks.global_rate_per_second`` (10 req/s through the CP Gateway). Per endpoint: the table in
that section. A request over any limit is a *violation*: it is answered 429 and the client's IP goes into the
penalty box for ``Quirks.penalty_box_seconds``, during which every API request is answered 429 too
(counted separately as ``requests_while_boxed``). Windows are sliding and count only accepted requests.

``Quirks.pacing_scale`` (tests only) shortens the windows and the penalty box: each window of more than
1 s becomes ``window * scale`` but no shorter than 1 s, the rule the client's ``IBKR_PACING_SCALE``
follows (``ibkr_tasks.client.ratelimit.scaled_period``), so a client and a simulator at one scale keep
the relation they have at IBKR's own limits.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

# endpoint key (method-less path template) -> (requests, per seconds)
ENDPOINT_LIMITS: dict[str, tuple[int, float]] = {
    "/iserver/marketdata/snapshot": (10, 1.0),
    "/iserver/account/trades": (1, 5.0),
    "/iserver/account/orders": (1, 5.0),
    "/iserver/account/pnl/partitioned": (1, 5.0),
    "/portfolio/accounts": (1, 5.0),
    "/portfolio/subaccounts": (1, 5.0),
    "/tickle": (1, 1.0),
    "/sso/validate": (1, 60.0),
}
MIN_SCALED_WINDOW = 1.0
"""The pacing scale shortens no window below this (seconds); windows of 1 s or less are never scaled."""


def scaled_window(window: float, scale: float) -> float:
    """A window of IBKR's at pacing scale ``scale`` (the client's ``scaled_period`` rule)."""
    if not 0 < scale <= 1:
        raise ValueError("pacing scale must be in (0, 1]")
    return max(window * scale, min(window, MIN_SCALED_WINDOW))


# Only GET requests of these paths are limited (the table's methods); /tickle counts both GET and POST.
_LIMITED_METHODS = {"/tickle": {"GET", "POST"}}


@dataclass
class RateLimiter:
    """Sliding windows per endpoint plus a global window, and a per-IP penalty box."""

    global_per_second: int = 10
    penalty_seconds: float = 600.0
    scale: float = 1.0  # Quirks.pacing_scale: windows and penalty box shortened (tests only)
    _global: deque[float] = field(default_factory=deque)
    _endpoints: dict[str, deque[float]] = field(default_factory=dict)
    _boxed_until: dict[str, float] = field(default_factory=dict)
    violations: int = 0
    violations_by_endpoint: dict[str, int] = field(default_factory=dict)
    requests_while_boxed: int = 0
    penalty_boxes_entered: int = 0

    def check(self, ip: str, method: str, path_key: str, now: float) -> str | None:
        """Return None when the request may proceed, else the reason it is answered 429."""
        until = self._boxed_until.get(ip)
        if until is not None:
            if now < until:
                self.requests_while_boxed += 1
                return f"penalty box: {until - now:.1f} s left"
            del self._boxed_until[ip]
        _trim(self._global, now, 1.0)
        if len(self._global) >= self.global_per_second:
            return self._violate(ip, "global", now, f"global limit {self.global_per_second} req/s")
        limit = ENDPOINT_LIMITS.get(path_key)
        if limit is not None and method in _LIMITED_METHODS.get(path_key, {"GET"}):
            count, window = limit[0], scaled_window(limit[1], self.scale)
            q = self._endpoints.setdefault(path_key, deque())
            _trim(q, now, window)
            if len(q) >= count:
                return self._violate(ip, path_key, now, f"{path_key} limit {count} per {window:g} s")
            q.append(now)
        self._global.append(now)
        return None

    def _violate(self, ip: str, key: str, now: float, why: str) -> str:
        self.violations += 1
        self.violations_by_endpoint[key] = self.violations_by_endpoint.get(key, 0) + 1
        if self.penalty_seconds > 0:
            self._boxed_until[ip] = now + self.penalty_seconds * self.scale
            self.penalty_boxes_entered += 1
        return why

    def box_state(self, now: float) -> dict[str, object]:
        active = {ip: round(until - now, 3) for ip, until in self._boxed_until.items() if until > now}
        return {
            "active": bool(active),
            "remaining_seconds": active,
            "entered": self.penalty_boxes_entered,
            "requests_while_boxed": self.requests_while_boxed,
            "penalty_seconds": self.penalty_seconds * self.scale,
            "pacing_scale": self.scale,
        }

    def release(self) -> None:
        """Empty the penalty box (control endpoint)."""
        self._boxed_until.clear()


def _trim(q: deque[float], now: float, window: float) -> None:
    while q and q[0] <= now - window:
        q.popleft()
