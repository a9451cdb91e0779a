"""Market-data snapshots with the pre-flight handled, and a polling helper (docs/ibkr-api.md#market-data).

- at most 100 conids and 50 fields per request: larger requests are split and merged per conid;
- the first request for a conid only starts the stream and answers ``{"conid", "conidEx"}``: conids
  that came back without any requested field are asked again after a short pause (up to
  ``attempts`` calls in all); what is still missing then is returned as a Snapshot with ``None``s
  and ``has_data == False``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any

from ibkr_tasks.client.orders import TransportLike
from ibkr_tasks.errors import APIError
from ibkr_tasks.models import DEFAULT_SNAPSHOT_FIELDS, Snapshot, parse_snapshot

__all__ = ["MAX_CONIDS_PER_CALL", "MAX_FIELDS_PER_CALL", "MarketData"]

MAX_CONIDS_PER_CALL = 100
MAX_FIELDS_PER_CALL = 50
_MARKERS = frozenset({"6119", "6509"})


def _chunks(items: Sequence[Any], size: int) -> list[Sequence[Any]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def _conid_of(row: Mapping[str, Any]) -> int | None:
    value = row.get("conid")
    if value in (None, ""):
        value = str(row.get("conidEx", "")).split("@", 1)[0]
    try:
        return int(str(value))
    except ValueError:
        return None


class MarketData:
    """Snapshot requests over a transport; ``sleep``/``clock`` are injectable for tests."""

    def __init__(
        self,
        transport: TransportLike,
        *,
        sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
        clock: Callable[[], float] = time.monotonic,
        preflight_pause: float = 0.5,
        attempts: int = 3,
    ) -> None:
        self.transport = transport
        self._sleep = sleep
        self._clock = clock
        self._pause = preflight_pause
        self._attempts = max(1, attempts)

    async def snapshot(
        self, conids: Iterable[int | str], fields: Iterable[str | int] = DEFAULT_SNAPSHOT_FIELDS
    ) -> list[Snapshot]:
        """One Snapshot per distinct conid, in the order given."""
        wanted = list(dict.fromkeys(int(c) for c in conids))
        field_ids = list(dict.fromkeys(str(f) for f in fields))
        if not wanted:
            return []
        if not field_ids:
            raise ValueError("snapshot needs at least one field id (e.g. '31' last price)")
        await self.transport.ensure_iserver_accounts()
        merged: dict[int, dict[str, Any]] = {c: {"conid": c} for c in wanted}
        for conid_chunk in _chunks(wanted, MAX_CONIDS_PER_CALL):
            for field_chunk in _chunks(field_ids, MAX_FIELDS_PER_CALL):
                await self._fill(conid_chunk, field_chunk, merged)
        return [parse_snapshot(merged[c]) for c in wanted]

    async def _fill(
        self, conids: Sequence[int], fields: Sequence[str], merged: dict[int, dict[str, Any]]
    ) -> None:
        pending = list(conids)
        # 6119 (server id) and 6509 (availability) can come with an answer that has no values yet.
        value_fields = [f for f in fields if f not in _MARKERS] or list(fields)
        for attempt in range(self._attempts):
            if attempt:
                await self._sleep(self._pause)
            params = {"conids": ",".join(str(c) for c in pending), "fields": ",".join(fields)}
            data = await self.transport.request("GET", "/iserver/marketdata/snapshot", params=params)
            if isinstance(data, Mapping) and data.get("error"):
                raise APIError(f"market data snapshot: {data['error']}", path="/iserver/marketdata/snapshot")
            for row in data if isinstance(data, list) else []:
                conid = _conid_of(row) if isinstance(row, Mapping) else None
                if conid in merged:
                    merged[conid].update(row)
            pending = [c for c in pending if not any(f in merged[c] for f in value_fields)]
            if not pending:
                return

    async def poll(
        self,
        conids: Iterable[int | str],
        *,
        interval: float = 5.0,
        count: int | None = None,
        duration: float | None = None,
        fields: Iterable[str | int] = DEFAULT_SNAPSHOT_FIELDS,
    ) -> AsyncIterator[list[Snapshot]]:
        """Yield a list of snapshots every ``interval`` seconds, ``count`` times and/or for ``duration``.

        With neither limit it polls until the consumer stops iterating. Ticks are scheduled from the
        start time, so a slow request does not make the polling drift.
        """
        if interval <= 0:
            raise ValueError("interval must be positive (seconds between snapshots)")
        wanted = list(conids)
        field_ids = list(fields)
        start = self._clock()
        done = 0
        while count is None or done < count:
            if duration is not None and self._clock() - start >= duration:
                return
            yield await self.snapshot(wanted, field_ids)
            done += 1
            if count is not None and done >= count:
                return
            delay = start + done * interval - self._clock()
            if duration is not None and self._clock() + max(delay, 0) - start >= duration:
                return
            await self._sleep(max(delay, 0.0))
