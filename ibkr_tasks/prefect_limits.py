"""IBKR's pacing limits on Prefect global concurrency limits, shared by every worker of a server.

``ibkr-tasks limits show|create`` lists or creates them (capacity 1, a decay of
``requests / per / (1 + margin)`` per second; the history cap as a concurrency limit of 5).
:func:`pacing_limiter` returns the limiter a run passes to its client: the Prefect-backed one when the
limits exist (``IBKR_RATE_LIMIT_BACKEND=auto``, the default), else the in-process one. How it fits with
the in-process limiter and the machine's pacing store: docs/pacing.md.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Literal

from ibkr_tasks.client.clock import Sleep
from ibkr_tasks.client.pacing_store import PacingStore, new_owner
from ibkr_tasks.client.ratelimit import ENDPOINT_RULES, BoundLimit, RateLimiter, get_limiter
from ibkr_tasks.client.settings import IBKRSettings
from ibkr_tasks.errors import ConfigurationError

logger = logging.getLogger("ibkr_tasks.prefect")

BackendMode = Literal["auto", "prefect", "local"]


def gcl_name(key: str) -> str:
    """Prefect-friendly name of a limiter key (``ibkr:localhost:default:trades`` -> ``ibkr-localhost-default-trades``)."""
    return re.sub(r"-{2,}", "-", re.sub(r"[^a-z0-9-]", "-", key.lower())).strip("-")


@dataclass(frozen=True)
class LimitSpec:
    """One Prefect global concurrency limit the pacing needs."""

    name: str
    limit: int
    slot_decay_per_second: float | None

    def cli(self) -> str:
        decay = (
            f" --slot-decay-per-second {self.slot_decay_per_second:.6g}" if self.slot_decay_per_second else ""
        )
        return f"prefect gcl create {self.name} --limit {self.limit}{decay}"


def limit_specs(limiter: RateLimiter) -> list[LimitSpec]:
    """Every GCL the limiter's limits map to: rate limits with decay, and concurrency caps."""
    specs: dict[str, LimitSpec] = {}
    bound = [
        BoundLimit(f"{limiter.key_prefix}:{limiter.global_limit.name}", limiter.global_limit, limiter.margin)
    ]
    bound += [
        BoundLimit(f"{limiter.key_prefix}:{rule.limit.name}", rule.limit, limiter.margin)
        for rule in limiter.rules
        if rule.limit is not None
    ]
    for b in bound:
        name = gcl_name(b.key)
        specs[name] = LimitSpec(name, 1, 1.0 / b.spacing)
    for rule in ENDPOINT_RULES:
        if rule.max_concurrent and rule.concurrency_name:
            name = gcl_name(f"{limiter.key_prefix}:{rule.concurrency_name}")
            specs[name] = LimitSpec(name, rule.max_concurrent, None)
    return list(specs.values())


class PrefectBackend:
    """A :class:`~ibkr_tasks.client.ratelimit.LimiterBackend` that waits on Prefect's server.

    With a ``store`` (the limiter's :class:`~ibkr_tasks.client.pacing_store.PacingStore`), a request
    under a slow limit then also takes its instant in the machine's pacing file, after the server
    granted the slot: so a process of this machine pacing without Prefect (a script run by hand, a
    deployment with ``IBKR_RATE_LIMIT_BACKEND=local``) and this one still keep the spacing between them.
    """

    def __init__(
        self,
        *,
        timeout_seconds: float | None = 600,
        store: PacingStore | None = None,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self.timeout_seconds = timeout_seconds
        self.store = store
        self.sleep = sleep
        self.owner = new_owner()

    async def acquire(self, limits: Sequence[BoundLimit]) -> None:
        from prefect.concurrency.asyncio import rate_limit

        # strict=True: a missing limit is a configuration error, never a silent unthrottled run.
        await rate_limit(
            [gcl_name(b.key) for b in limits], occupy=1, timeout_seconds=self.timeout_seconds, strict=True
        )
        store = self.store
        if store is not None:
            shared = [(b.key, b.spacing) for b in limits if store.shares(b.limit.interval)]
            if shared:
                t = store.reserve(shared, self.owner)
                if (delay := t - store.wall()) > 0:
                    await self.sleep(delay)

    @asynccontextmanager
    async def concurrency(self, key: str, max_concurrent: int) -> AsyncIterator[None]:
        from prefect.concurrency.asyncio import concurrency

        async with concurrency(gcl_name(key), occupy=1, timeout_seconds=self.timeout_seconds, strict=True):
            yield


async def create_limits(settings: IBKRSettings) -> list[LimitSpec]:
    """Create (or update) the GCLs for ``settings``' login on the configured Prefect server."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate, GlobalConcurrencyLimitUpdate
    from prefect.exceptions import ObjectNotFound

    specs = limit_specs(RateLimiter.for_settings(settings))
    async with get_client() as client:
        for spec in specs:
            # 0: a plain concurrency limit (the server refuses a null decay)
            decay = spec.slot_decay_per_second or 0.0
            try:
                existing = await client.read_global_concurrency_limit_by_name(spec.name)
            except ObjectNotFound:
                await client.create_global_concurrency_limit(
                    GlobalConcurrencyLimitCreate(
                        name=spec.name, limit=spec.limit, slot_decay_per_second=decay
                    )
                )
                continue
            if existing.limit == spec.limit and (existing.slot_decay_per_second or 0.0) == decay:
                continue  # already as wanted
            # the server refuses to set a decay of 0 on an existing limit: leave the field unset then
            update = (
                GlobalConcurrencyLimitUpdate(limit=spec.limit, slot_decay_per_second=decay)
                if decay
                else GlobalConcurrencyLimitUpdate(limit=spec.limit)
            )
            await client.update_global_concurrency_limit(spec.name, update)
    return specs


async def _limits_exist(specs: list[LimitSpec]) -> bool:
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    async with get_client() as client:
        try:
            for spec in specs:
                await client.read_global_concurrency_limit_by_name(spec.name)
        except ObjectNotFound:
            return False
    return True


def prefect_limiter(settings: IBKRSettings) -> RateLimiter:
    """The process-wide limiter of ``settings``' login that waits on Prefect's global concurrency limits.

    It is a limiter of its own next to the in-process one (:func:`get_limiter`), made once with its
    :class:`PrefectBackend`: nobody's limiter changes backend. Both take the slow limits' instants in
    the machine's pacing store, so they keep IBKR's spacing between them too.
    """
    return get_limiter(settings, kind="prefect", backend=lambda store: PrefectBackend(store=store))


def backend_kind(limiter: RateLimiter) -> Literal["prefect", "local"]:
    """``"prefect"`` when ``limiter`` waits on Prefect's global concurrency limits, else ``"local"``."""
    return "prefect" if isinstance(limiter.backend, PrefectBackend) else "local"


async def pacing_limiter(settings: IBKRSettings, mode: BackendMode | None = None) -> RateLimiter:
    """The limiter a run should pace ``settings``' requests on: pass it to the client (``limiter=``).

    ``mode`` (default ``IBKR_RATE_LIMIT_BACKEND``, else ``auto``): ``auto`` picks Prefect's limits when
    a server is configured (``PREFECT_API_URL``) and they exist on it, else in-process; ``prefect``
    requires them (a missing limit is a ConfigurationError listing the commands that create them);
    ``local`` never uses them. Nothing process-wide changes: the choice is the limiter returned.
    """
    chosen = mode or os.environ.get("IBKR_RATE_LIMIT_BACKEND", "auto")
    if chosen not in ("auto", "prefect", "local"):
        raise ConfigurationError(f"IBKR_RATE_LIMIT_BACKEND must be auto, prefect or local, not {chosen!r}")
    local = get_limiter(settings)
    if chosen == "local":
        return local
    specs = limit_specs(local)
    from prefect.settings import PREFECT_API_URL

    if not PREFECT_API_URL.value():
        if chosen == "prefect":
            raise ConfigurationError(
                "IBKR_RATE_LIMIT_BACKEND=prefect needs a Prefect server (PREFECT_API_URL)"
            )
        return local
    if not await _limits_exist(specs):
        if chosen == "prefect":
            missing = "\n".join(s.cli() for s in specs)
            raise ConfigurationError(
                f"the Prefect rate limits for this login do not exist; create them:\n{missing}"
            )
        logger.info("Prefect rate limits for %s not found; pacing in-process", local.key_prefix)
        return local
    logger.info("pacing IBKR requests on Prefect global concurrency limits (%s)", local.key_prefix)
    return prefect_limiter(settings)


def main(argv: list[str]) -> int:
    """``ibkr-tasks limits {show,create}``: the GCLs that pace this login."""
    settings = IBKRSettings()
    command = argv[0] if argv else "show"
    if command == "show":
        for spec in limit_specs(RateLimiter.for_settings(settings)):
            print(spec.cli())
        return 0
    if command == "create":
        for spec in asyncio.run(create_limits(settings)):
            print(f"ok  {spec.name}")
        return 0
    print("usage: ibkr-tasks limits {show,create}")
    return 2
