"""IBKR pacing limits as data, and the limiter that keeps every request inside them.

:class:`RateLimiter` paces one (host, username): ``async with limiter.slot(method, path)`` returns when
the request may be sent without any window of IBKR's limits holding more than allowed. The waiting is
done by its backend (:class:`InProcessBackend` here; a Prefect-backed one in
``ibkr_tasks.prefect_limits``), and the slow limits are shared with the machine's other processes
through a :class:`~ibkr_tasks.client.pacing_store.PacingStore`. The design (even spacing, reservations,
late wake-ups, priorities, the store, Prefect's limits) is described once, in docs/pacing.md.
"""

from __future__ import annotations

import asyncio
import bisect
import logging
import math
import re
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from ibkr_tasks.client.clock import Clock, Sleep
from ibkr_tasks.client.pacing_store import PacingStore, Transaction, new_owner, slack, store_for
from ibkr_tasks.client.settings import IBKRSettings

logger = logging.getLogger("ibkr_tasks.client")

DEFAULT_MARGIN = 0.04
"""Fraction by which every interval is stretched: 4 % keeps >= 0.96 of the allowed rate."""


MIN_SCALED_PERIOD = 1.0
"""The pacing scale shortens no period below this (seconds): limits of 1 s or less keep IBKR's own."""


def scaled_period(per: float, scale: float) -> float:
    """A limit's period at pacing scale ``scale``: ``per * scale``, but no shorter than 1 s (or ``per``).

    Network and scheduling delays do not shrink with the scale, and the margin absorbing them is a
    fraction of the period: at 1 s it is 40 ms, what the global limit has always had. So the fast limits
    (global, snapshot, tickle) are left alone and the slow ones (5 s, 60 s, 15 min) come down to 1 s at
    most. The simulator applies the same rule to its windows (``ibkr_tasks.sim.limits``).
    """
    if not 0 < scale <= 1:
        raise ValueError("pacing scale must be in (0, 1]")
    return max(per * scale, min(per, MIN_SCALED_PERIOD))


@dataclass(frozen=True)
class Limit:
    """At most ``requests`` requests in any ``per`` seconds."""

    name: str
    requests: int
    per: float

    @property
    def interval(self) -> float:
        """The exact minimum spacing between two requests under this limit."""
        return self.per / self.requests

    @property
    def rate(self) -> float:
        """Allowed requests per second."""
        return self.requests / self.per

    def scaled(self, scale: float) -> Limit:
        """This limit with its period multiplied by ``scale``, but never below :data:`MIN_SCALED_PERIOD`
        (simulators and tests only: docs/pacing.md#pacing-scale)."""
        per = scaled_period(self.per, scale)
        return self if per == self.per else Limit(self.name, self.requests, per)


@dataclass(frozen=True)
class EndpointRule:
    """Which requests an endpoint limit applies to (methods None = any method)."""

    pattern: re.Pattern[str]
    methods: frozenset[str] | None = None
    limit: Limit | None = None
    max_concurrent: int | None = None
    concurrency_name: str | None = None
    priority: bool = False

    def matches(self, method: str, path: str) -> bool:
        return (self.methods is None or method in self.methods) and self.pattern.match(path) is not None


def _rule(
    pattern: str,
    methods: str | None,
    limit: Limit | None = None,
    *,
    max_concurrent: int | None = None,
    concurrency_name: str | None = None,
    priority: bool = False,
) -> EndpointRule:
    return EndpointRule(
        pattern=re.compile(pattern),
        methods=frozenset(methods.split(",")) if methods else None,
        limit=limit,
        max_concurrent=max_concurrent,
        concurrency_name=concurrency_name,
        priority=priority,
    )


GATEWAY_GLOBAL = Limit("global", 10, 1.0)
"""10 req/s through a Client Portal Gateway, budgeted whatever the text (docs/ibkr-api.md#rate-limits)."""
HOSTED_GLOBAL = Limit("global", 50, 1.0)
"""50 req/s per username on api.ibkr.com (OAuth)."""

# Per-endpoint limits: IBKR's pacing table (docs/ibkr-api.md#rate-limits). Endpoints listed together
# in one row of IBKR's table share one limit here (the conservative reading).
SNAPSHOT = Limit("snapshot", 10, 1.0)
TRADES = Limit("trades", 1, 5.0)
LIVE_ORDERS = Limit("live_orders", 1, 5.0)
PNL = Limit("pnl_partitioned", 1, 5.0)
PORTFOLIO_ACCOUNTS = Limit("portfolio_accounts", 1, 5.0)
SCANNER_PARAMS = Limit("scanner_params", 1, 900.0)
SCANNER_RUN = Limit("scanner_run", 1, 1.0)
PA = Limit("pa", 1, 900.0)
FYI = Limit("fyi", 1, 1.0)
TICKLE = Limit("tickle", 1, 1.0)
SSO_VALIDATE = Limit("sso_validate", 1, 60.0)
HISTORY_MAX_CONCURRENT = 5

ENDPOINT_RULES: tuple[EndpointRule, ...] = (
    _rule(r"^/iserver/marketdata/snapshot/?$", "GET", SNAPSHOT),
    _rule(
        r"^/(iserver/marketdata|hmds)/history/?$",
        "GET",
        max_concurrent=HISTORY_MAX_CONCURRENT,
        concurrency_name="history",
    ),
    _rule(r"^/iserver/scanner/params/?$", "GET", SCANNER_PARAMS),
    _rule(r"^/iserver/scanner/run/?$", "POST", SCANNER_RUN),
    # IBKR's table says /iserver/trades and /iserver/orders; the real paths are under /iserver/account.
    _rule(r"^/iserver/account/trades/?$", "GET", TRADES),
    _rule(r"^/iserver/account/orders/?$", "GET", LIVE_ORDERS),
    _rule(r"^/iserver/account/pnl/partitioned/?$", "GET", PNL),
    _rule(r"^/portfolio/(sub)?accounts/?$", "GET", PORTFOLIO_ACCOUNTS),
    _rule(r"^/pa/(performance|summary|transactions)/?$", None, PA),
    _rule(r"^/fyi/", None, FYI),
    _rule(r"^/tickle/?$", None, TICKLE),
    _rule(r"^/sso/validate/?$", "GET", SSO_VALIDATE),
    # Not limits but priorities: order placement, modification, cancels and replies to order prompts
    # go before waiting ordinary requests (a prompt must be answered at once, docs/ibkr-api.md#prompts).
    _rule(r"^/iserver/account/[^/]+/orders?(/(?!whatif)[^/]+)?/?$", "POST,DELETE", priority=True),
    _rule(r"^/iserver/reply/[^/]+/?$", "POST", priority=True),
)


def _scaled_rule(rule: EndpointRule, scale: float) -> EndpointRule:
    if rule.limit is None or scale == 1:
        return rule
    return replace(rule, limit=rule.limit.scaled(scale))


def global_limit_for(settings: IBKRSettings) -> Limit:
    """50 req/s on api.ibkr.com, 10 req/s through any gateway."""
    return HOSTED_GLOBAL if settings.is_ibkr_hosted else GATEWAY_GLOBAL


def rules_for(method: str, path: str, rules: Sequence[EndpointRule] = ENDPOINT_RULES) -> list[EndpointRule]:
    """The endpoint rules a request falls under (path relative to the API base, without query)."""
    method = method.upper()
    path = "/" + path.split("?", 1)[0].lstrip("/")
    return [rule for rule in rules if rule.matches(method, path)]


@dataclass(frozen=True)
class BoundLimit:
    """A limit applied to one key (host, user and limit name), as the backend sees it."""

    key: str
    limit: Limit
    margin: float = DEFAULT_MARGIN
    priority: bool = False  # order placement/replies/cancels: served before waiting ordinary requests

    @property
    def spacing(self) -> float:
        """The spacing the limiter keeps: the exact interval stretched by the safety margin."""
        return self.limit.interval * (1.0 + self.margin)


class Grant(Protocol):
    """A granted slot, held until the request's bytes are written."""

    async def confirm(self) -> None:
        """Called just before the request's first byte is written: returns at once when the request is
        still on time, else waits for an instant that keeps every limit (the slot's grant is not the
        send: connecting, a busy event loop or a pause of the interpreter can come between them)."""
        ...


class _OnTime:
    """The grant of a backend that cannot check the write (Prefect's server): nothing to confirm."""

    async def confirm(self) -> None:
        return None


ON_TIME: Grant = _OnTime()


class LimiterBackend(Protocol):
    """Where waiting for a slot happens: in this process, or on a shared server (Prefect)."""

    async def acquire(self, limits: Sequence[BoundLimit]) -> Grant | None:
        """Return when one request may be sent now under every one of ``limits`` (it counts against all);
        a :class:`Grant` to confirm at the write, or None when the backend cannot check it."""
        ...

    def concurrency(self, key: str, max_concurrent: int) -> AbstractAsyncContextManager[None]:
        """Hold one of ``max_concurrent`` slots of ``key`` while the request is in flight."""
        ...


@dataclass(eq=False)
class _Reservation:
    """One request's reserved instant on the timelines of all its limits."""

    t: float
    limits: tuple[BoundLimit, ...]
    priority: bool
    committed: bool = False  # the owner has woken and is sending: it can no longer move
    displaced: bool = False  # a priority request took this instant: the owner must reserve again

    @property
    def movable(self) -> bool:
        return not (self.priority or self.committed)


@dataclass
class _Timeline:
    """Reservations of one limit sorted by time (only those that can still conflict are kept)."""

    times: list[float] = field(default_factory=list)
    entries: list[_Reservation] = field(default_factory=list)

    def prune(self, before: float) -> None:
        cut = bisect.bisect_left(self.times, before)
        if cut:
            del self.times[:cut]
            del self.entries[:cut]

    def near(self, t: float, spacing: float) -> list[_Reservation]:
        """Every reservation less than ``spacing`` away from ``t`` (they would conflict with it)."""
        found: list[_Reservation] = []
        reach = spacing - slack(t)
        i = bisect.bisect_left(self.times, t)
        j = i - 1
        while j >= 0 and t - self.times[j] < reach:
            found.append(self.entries[j])
            j -= 1
        j = i
        while j < len(self.times) and self.times[j] - t < reach:
            found.append(self.entries[j])
            j += 1
        return found

    def add(self, entry: _Reservation) -> None:
        i = bisect.bisect_right(self.times, entry.t)
        self.times.insert(i, entry.t)
        self.entries.insert(i, entry)

    def remove(self, entry: _Reservation) -> None:
        i = bisect.bisect_left(self.times, entry.t)
        while i < len(self.times) and self.times[i] == entry.t:
            if self.entries[i] is entry:
                del self.times[i]
                del self.entries[i]
                return
            i += 1


class _Waiter:
    __slots__ = ("future", "loop")

    def __init__(self, loop: asyncio.AbstractEventLoop, future: asyncio.Future[None]) -> None:
        self.loop = loop
        self.future = future


class InProcessBackend:
    """Pacing inside one process, safe across tasks, threads and event loops.

    Reservations are computed under a ``threading.Lock`` and the wait is a plain sleep, so nothing is
    bound to one event loop. A caller that wakes up later than the tolerance (a busy loop) gives its
    instant back and takes the one it would have had had it woken within the tolerance, behind what was
    already sent, so lateness never squeezes two requests closer than the spacing minus the tolerance.
    It keeps its place in line: the waiters behind it are pushed back by its lateness beyond the
    tolerance, not by a whole slot.

    Priority requests (order placement, replies to order prompts, cancels: IBKR wants prompt replies at
    once) take the earliest instant that no other priority or already-sending request holds; a waiting
    ordinary request they displace reserves again when it wakes.

    With a ``store``, a request under a slow limit (see :meth:`PacingStore.shares`) also keeps that
    limit's spacing from the instants other processes reserved in the store, and records its own
    there; they are obstacles nothing can move. ``store.wall`` and ``clock`` are read together to
    translate between the file's wall-clock instants and this backend's clock.
    """

    def __init__(
        self, *, clock: Clock = time.monotonic, sleep: Sleep = asyncio.sleep, store: PacingStore | None = None
    ) -> None:
        self.clock = clock
        self.sleep = sleep
        self.store = store
        self.owner = new_owner()
        """This backend's writer id in the store (its own entries are on its timelines already)."""
        self._lock = threading.Lock()
        self._timelines: dict[str, _Timeline] = {}
        self._slots: dict[str, int] = {}
        self._waiters: dict[str, deque[_Waiter]] = {}
        self.late_wakeups = 0
        """How often a caller woke too late to use its instant (a busy event loop or CPU) and re-reserved."""
        self.late_seconds = 0.0
        """How late, in all, those wake-ups were (the queue behind them lost this less the tolerances)."""
        self.late_writes = 0
        """How often a granted request reached its write too late (see :meth:`_confirm`) and re-reserved."""
        self.late_write_seconds = 0.0
        """How late, in all, those writes were."""
        self.displacements = 0
        """How often a waiting request was pushed back by a priority (or late) one."""

    def _reserve(
        self, limits: Sequence[BoundLimit], not_before: float, urgent: bool = False, back: float = 0.0
    ) -> _Reservation:
        store = self.store
        shared = [b for b in limits if store is not None and store.shares(b.limit.interval)]
        if store is None or not shared:
            return self._reserve_here(limits, not_before, urgent, None, (), back)
        # The file lock is taken before the thread lock, and only by requests under a slow limit. The
        # file forgets an entry once its spacing has passed, so a reservation shared with it never
        # starts in the past (``back``).
        with store.transaction() as txn:
            return self._reserve_here(limits, not_before, urgent, txn, shared, 0.0)

    def _reserve_here(
        self,
        limits: Sequence[BoundLimit],
        not_before: float,
        urgent: bool,
        txn: Transaction | None,
        shared: Sequence[BoundLimit],
        back: float,
    ) -> _Reservation:
        # A caller that already waited for its turn (it woke late, or was displaced) keeps its place
        # in line: it jumps the queue like a priority request, and the waiters it lands on reserve again
        # when they wake. It stays movable itself (by a priority request, or by a late caller that was
        # ahead of it), so a late caller lands right behind what was already sent.
        priority = any(bound.priority for bound in limits)
        jump = urgent or priority
        with self._lock:
            now = self.clock()
            # Other processes' reservations of the slow limits, on this backend's clock.
            offset = 0.0
            foreign: dict[str, list[float]] = {}
            if txn is not None and txn.shared:
                offset = txn.store.wall() - now
                for bound in shared:
                    foreign[bound.key] = [w - offset for w in txn.times(bound.key, exclude_owner=self.owner)]
            # ``back``: a late caller reserves the instant it would have had if it had woken within the
            # tolerance, so it may start up to that far in the past.
            start = t = max(now - back, not_before)
            for bound in limits:
                self._timelines.setdefault(bound.key, _Timeline()).prune(start - bound.spacing)
            # Move t forward past every conflicting reservation until it fits all limits: to exactly one
            # spacing after the latest one it conflicts with. Requests that wait therefore line up one
            # global spacing apart, in step with the request before them (not with a fixed grid: a queue
            # that was pushed back by a late wake-up stays packed). Endpoint spacings are whole multiples
            # of the global one, so a request placed by a slow limit is put in step with the global
            # reservations before it, leaving no unusable sliver between them. A priority request only
            # has to avoid reservations that cannot move.
            tightest = min(limits, key=lambda bound: bound.spacing)
            grid = tightest.spacing
            moved = True
            while moved:
                moved = False
                for bound in limits:
                    blocking = [
                        r.t
                        for r in self._timelines[bound.key].near(t, bound.spacing)
                        if not (jump and r.movable)
                    ]
                    blocking += [
                        f for f in foreign.get(bound.key, ()) if abs(f - t) < bound.spacing - slack(t)
                    ]
                    if blocking:
                        t = max(blocking) + bound.spacing
                        if bound.spacing > grid + 1e-9:
                            t = self._in_step(t, self._timelines[tightest.key], grid)
                        moved = True
            entry = _Reservation(t, tuple(limits), priority)
            if jump:
                for bound in limits:
                    for other in self._timelines[bound.key].near(t, bound.spacing):
                        self._displace(other)
            for bound in limits:
                self._timelines[bound.key].add(entry)
            if txn is not None:
                for bound in shared:
                    txn.add(bound.key, t + offset, bound.spacing, self.owner)
            if t <= now:
                entry.committed = True  # due already: the caller sends at once
            return entry

    @staticmethod
    def _in_step(t: float, timeline: _Timeline, grid: float) -> float:
        """The first instant from ``t`` on that is a whole number of ``grid`` after the latest
        reservation of ``timeline`` before it (``t`` itself when there is none)."""
        i = bisect.bisect_right(timeline.times, t) - 1
        if i < 0:
            return t
        before = timeline.times[i]
        return max(t, before + math.ceil((t - before) / grid - 1e-6) * grid)

    def _displace(self, entry: _Reservation) -> None:
        self.displacements += 1
        self._remove(entry)

    def _remove(self, entry: _Reservation) -> None:
        entry.displaced = True  # no longer on any timeline
        for bound in entry.limits:
            timeline = self._timelines.get(bound.key)
            if timeline is not None:
                timeline.remove(entry)

    def _release(self, entry: _Reservation) -> None:
        with self._lock:
            if not entry.displaced:
                self._remove(entry)

    def _commit(self, entry: _Reservation, tolerance: float) -> float | None:
        """Under the lock: None when the owner may send now, else how late it woke (0.0: it was displaced)
        and must reserve again."""
        with self._lock:
            if entry.displaced:
                return 0.0
            late = self.clock() - entry.t
            if late > tolerance:
                logger.debug("rate limiter woke %.3f s late; re-reserving", late)
                self.late_wakeups += 1
                self.late_seconds += late
                self._remove(entry)
                return late
            entry.committed = True
            return None

    async def acquire(self, limits: Sequence[BoundLimit]) -> _InProcessGrant | None:
        if not limits:
            return None
        # A quarter of the margin of the tightest window is what a late wake-up may eat, another quarter
        # what may pass between the wake-up and the write (see :meth:`_confirm`); the other half covers
        # what happens after it (network and server-side delays). With even spacing, one request
        # arriving ``margin * per`` late is what it takes to crowd a window.
        tolerance = min(b.limit.per * b.margin for b in limits) / 4
        entry = await self._wait(limits, tolerance, urgent=False, back=0.0)
        return _InProcessGrant(self, tuple(limits), tolerance, entry)

    async def _wait(
        self, limits: Sequence[BoundLimit], tolerance: float, *, urgent: bool, back: float
    ) -> _Reservation:
        """Reserve and sleep until the instant; the committed reservation."""
        while True:
            entry = self._reserve(limits, 0.0, urgent, back)
            if entry.committed:
                return entry
            try:
                delay = entry.t - self.clock()
                if delay > 0:
                    await self.sleep(delay)
            except BaseException:
                self._release(entry)
                raise
            late = self._commit(entry, tolerance)
            if late is None:
                return entry
            # Reserve again at once, keeping the place in line. A late caller takes the instant it would
            # have had had it woken within the tolerance (``tolerance`` ago, when nothing that cannot
            # move is in the way) and sends at once: the waiters behind it are pushed back by how late
            # it was beyond the tolerance, not by a whole slot.
            urgent = True
            back = tolerance if late else 0.0

    async def _confirm(self, grant: _InProcessGrant) -> None:
        """Just before the write: a request may be written up to twice the tolerance after its instant
        (one for the wake-up, one for the way to the socket). Later, it gives its instant back and
        reserves again as a late wake-up does (keeping its place in line), once: what follows the
        second wake-up is a few lines of code, not another trip through the event loop."""
        with self._lock:
            late = self.clock() - grant.entry.t
            if late <= 2 * grant.tolerance:
                return
            logger.debug("request reached its write %.3f s after its instant; re-reserving", late)
            self.late_writes += 1
            self.late_write_seconds += late
            if not grant.entry.displaced:
                self._remove(grant.entry)
        grant.entry = await self._wait(grant.limits, grant.tolerance, urgent=True, back=grant.tolerance)

    @asynccontextmanager
    async def concurrency(self, key: str, max_concurrent: int) -> AsyncIterator[None]:
        await self._enter(key, max_concurrent)
        try:
            yield
        finally:
            self._leave(key)

    async def _enter(self, key: str, max_concurrent: int) -> None:
        loop = asyncio.get_running_loop()
        with self._lock:
            queue = self._waiters.setdefault(key, deque())
            if self._slots.get(key, 0) < max_concurrent and not queue:
                self._slots[key] = self._slots.get(key, 0) + 1
                return
            waiter = _Waiter(loop, loop.create_future())
            queue.append(waiter)
        try:
            await waiter.future
        except BaseException:
            with self._lock:
                if waiter in queue:
                    queue.remove(waiter)
                    raise
            # The slot was handed to us just as we were cancelled: pass it on.
            self._leave(key)
            raise

    def _leave(self, key: str) -> None:
        with self._lock:
            queue = self._waiters.get(key)
            while queue:
                waiter = queue.popleft()
                # Hand the slot over directly (the count stays the same).
                if not waiter.future.done():
                    waiter.loop.call_soon_threadsafe(_resolve, waiter.future)
                    return
            self._slots[key] = self._slots.get(key, 1) - 1


@dataclass(eq=False)
class _InProcessGrant:
    backend: InProcessBackend
    limits: tuple[BoundLimit, ...]
    tolerance: float
    entry: _Reservation

    async def confirm(self) -> None:
        await self.backend._confirm(self)


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class RateLimiter:
    """The pacing of one (host, user): global limit, endpoint limits, concurrency caps, 429 pauses.

    ``async with limiter.slot(method, path):`` waits for a slot and holds any concurrency slot while the
    request is in flight.
    """

    def __init__(
        self,
        global_limit: Limit = GATEWAY_GLOBAL,
        *,
        key_prefix: str = "ibkr",
        backend: LimiterBackend | None = None,
        rules: Sequence[EndpointRule] = ENDPOINT_RULES,
        margin: float = DEFAULT_MARGIN,
        clock: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
        store: PacingStore | None = None,
        scale: float = 1.0,
    ) -> None:
        if not 0 <= margin < 1:
            raise ValueError("margin must be in [0, 1)")
        if not 0 < scale <= 1:
            raise ValueError("scale must be in (0, 1]")
        self.scale = scale
        """Every limit's period is this fraction of IBKR's (1: IBKR's own; less only against a simulator)."""
        global_limit = global_limit.scaled(scale)
        rules = [_scaled_rule(r, scale) for r in rules]
        self.global_limit = global_limit
        self.key_prefix = key_prefix
        self.store = store
        """Where the slow limits are shared with other processes of the machine (None: this process only)."""
        self.backend: LimiterBackend = backend or InProcessBackend(clock=clock, sleep=sleep, store=store)
        self.rules = tuple(rules)
        self.margin = margin
        self.clock = clock
        self.sleep = sleep
        self._paused_until = 0.0

    @classmethod
    def for_settings(cls, settings: IBKRSettings, **kwargs: Any) -> RateLimiter:
        """A limiter with the global limit and key that ``settings`` call for (not registered).

        On real time it shares the slow limits through ``IBKR_PACING_DIR`` (unless given ``store=``);
        a limiter on an injected clock (virtual time) does not: the file holds real instants. Every
        period is scaled by ``IBKR_PACING_SCALE`` (1, IBKR's own limits, unless a test says otherwise).
        """
        kwargs.setdefault("margin", settings.rate_margin)
        kwargs.setdefault("scale", settings.pacing_scale)
        if "store" not in kwargs and kwargs.get("clock", time.monotonic) is time.monotonic:
            kwargs["store"] = store_for(settings.pacing_dir)
        return cls(
            global_limit_for(settings),
            key_prefix=f"ibkr:{settings.host}:{settings.limiter_user}",
            **kwargs,
        )

    def __repr__(self) -> str:
        scaled = f", scale={self.scale:g}" if self.scale != 1 else ""
        return (
            f"RateLimiter({self.key_prefix!r}, global={self.global_limit.requests}/{self.global_limit.per:g}s"
            f"{scaled})"
        )

    def limits_for(self, method: str, path: str) -> list[BoundLimit]:
        """Every rate limit a request counts against, bound to this limiter's keys."""
        rules = rules_for(method, path, self.rules)
        limits = [self.global_limit] + [r.limit for r in rules if r.limit]
        priority = any(r.priority for r in rules)
        return [BoundLimit(f"{self.key_prefix}:{lim.name}", lim, self.margin, priority) for lim in limits]

    def pause(self, seconds: float) -> None:
        """Hold every new request of this (host, user) for ``seconds`` (after a 429 with Retry-After)."""
        self._paused_until = max(self._paused_until, self.clock() + seconds)

    @asynccontextmanager
    async def slot(self, method: str, path: str) -> AsyncIterator[Grant]:
        """Wait until the request may be sent; hold its concurrency slot (if any) until the block exits.

        The block gets the :class:`Grant`: ``await grant.confirm()`` just before the request's bytes are
        written (the transport does it from httpcore's trace hook) keeps the request inside the limits
        even when something stalled it between the grant and the write.
        """
        caps = [r for r in rules_for(method, path, self.rules) if r.max_concurrent]
        async with _hold_all(self.backend, [(f"{self.key_prefix}:{r.concurrency_name}", r) for r in caps]):
            while (wait := self._paused_until - self.clock()) > 0:
                await self.sleep(wait)
            grant = await self.backend.acquire(self.limits_for(method, path))
            yield grant if grant is not None else ON_TIME


@asynccontextmanager
async def _hold_all(backend: LimiterBackend, caps: list[tuple[str, EndpointRule]]) -> AsyncIterator[None]:
    if not caps:
        yield
        return
    (key, rule), rest = caps[0], caps[1:]
    assert rule.max_concurrent is not None
    async with backend.concurrency(key, rule.max_concurrent), _hold_all(backend, rest):
        yield


_registry: dict[tuple[str, str, str], RateLimiter] = {}
_registry_lock = threading.Lock()

BackendFactory = Callable[[PacingStore | None], LimiterBackend]
"""Builds a limiter's backend from the machine's pacing store (``None``: sharing is off)."""


def get_limiter(
    settings: IBKRSettings, *, kind: str = "local", backend: BackendFactory | None = None
) -> RateLimiter:
    """The process-wide limiter of ``settings``' (host, user) that waits in ``kind`` of backend.

    ``kind="local"`` (the default, what every Transport uses unless given a limiter) paces in-process.
    Another kind (``"prefect"``: :func:`ibkr_tasks.prefect_limits.prefect_limiter`) names a limiter of its
    own, created once with the backend ``backend`` builds: a limiter's backend is fixed when it is made,
    so choosing Prefect for one run never changes the limiter other runs of the process are using.
    """
    key = (settings.host, settings.limiter_user, kind)
    with _registry_lock:
        limiter = _registry.get(key)
        if limiter is None:
            if kind != "local" and backend is None:
                raise ValueError(f"a {kind!r} limiter needs its backend factory")
            store = store_for(settings.pacing_dir)
            limiter = RateLimiter.for_settings(
                settings, store=store, backend=backend(store) if backend is not None else None
            )
            _registry[key] = limiter
        return limiter


def reset_limiters() -> None:
    """Forget every registered limiter (tests)."""
    with _registry_lock:
        _registry.clear()
