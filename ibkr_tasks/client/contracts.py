"""Contract lookups with a permanent cache (conids never change, docs/ibkr-api.md#contracts).

Used for the currency and multiplier the trades payload does not carry, and for the YES/NO conids of
event contracts.

Many conids at once (:meth:`ContractBook.infos`) are asked in bulk: ``GET /trsrv/secdef?conids=...``
answers up to :data:`SECDEF_BATCH` conids per request. Only the conids it leaves out, or answers
without what a fill needs (currency, asset class, and a multiplier unless the asset class is one whose
multiplier is 1 by definition), are asked one by one with ``GET /iserver/contract/{conid}/info``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
from collections.abc import Iterable, Mapping
from decimal import Decimal
from typing import Any

from ibkr_tasks.client.orders import TransportLike
from ibkr_tasks.errors import APIError, ParseError, TransportError
from ibkr_tasks.models import (
    ContractInfo,
    ContractSearchResult,
    EventContractPair,
    parse_contract_info,
)
from ibkr_tasks.models.multipliers import ONE_MULTIPLIER_SEC_TYPES

__all__ = ["SECDEF_BATCH", "ContractBook", "info_from_secdef", "multipliers_of"]

logger = logging.getLogger(__name__)

_LOOKUP_CONCURRENCY = 8
SECDEF_BATCH = 200
"""Most conids ``/trsrv/secdef`` answers in one request (docs/ibkr-api.md#contracts)."""
SECDEF_PATH = "/trsrv/secdef"


def multipliers_of(infos: Mapping[int, ContractInfo]) -> dict[int, Decimal]:
    """conid -> multiplier for the contracts whose info says it (event contracts: 1)."""
    found: dict[int, Decimal] = {}
    for conid, info in infos.items():
        if info.multiplier is not None:
            found[conid] = info.multiplier
        elif info.is_event_contract:
            found[conid] = Decimal(1)
    return found


def _int_or_none(value: Any) -> int | None:
    try:
        return None if value in (None, "") else int(str(value).strip())
    except ValueError:
        return None


def info_from_secdef(row: Mapping[str, Any]) -> ContractInfo:
    """A :class:`ContractInfo` from one element of ``/trsrv/secdef``'s ``secdef`` list.

    The answer is camelCase (``conid``, ``ticker``, ``assetClass``, ``listingExchange``, ``undConid``,
    ``putOrCall``, ``expiry``; ``multiplier`` a number, 0 or null for stocks). ``raw`` holds the same
    facts under the names of ``/iserver/contract/{conid}/info`` plus the untouched answer under
    ``"secdef"``, so that :func:`parse_contract_info` of a stored ``raw`` (the ledger's ``contracts``
    table) gives this info back.
    """
    conid = _int_or_none(row.get("conid"))
    if conid is None:
        raise ValueError("secdef row has no conid")
    sec_type = row.get("assetClass")
    raw: dict[str, Any] = {
        "con_id": conid,
        "symbol": row.get("ticker"),
        "instrument_type": sec_type.upper() if isinstance(sec_type, str) else None,
        "exchange": row.get("listingExchange"),
        "company_name": row.get("name"),
        "currency": row.get("currency"),
        "multiplier": row.get("multiplier"),
        "underlying_con_id": row.get("undConid"),
        "maturity_date": row.get("expiry"),
        "right": row.get("putOrCall"),
        "strike": row.get("strike"),
        "is_event_contract": row.get("isEventContract"),
        "secdef": dict(row),
    }
    return parse_contract_info(raw)


def _complete(info: ContractInfo) -> bool:
    """True when a secdef answer carries what fills need; otherwise the per-conid info is asked."""
    if not info.currency or not info.sec_type:
        return False
    return info.multiplier is not None or info.sec_type in ONE_MULTIPLIER_SEC_TYPES


class ContractBook:
    """Contract info, search and event-contract pairs, cached per process."""

    def __init__(self, transport: TransportLike) -> None:
        self.transport = transport
        self._info: dict[int, ContractInfo] = {}
        self._pairs: dict[int, EventContractPair] = {}
        self._lock = asyncio.Lock()
        self._seeding: concurrent.futures.Future[None] | None = None

    def remember(self, infos: Iterable[ContractInfo]) -> None:
        """Seed the cache with contract info known from elsewhere (e.g. the ledger's ``contracts``
        table), so that those conids are not looked up again."""
        for info in infos:
            self._info.setdefault(int(info.conid), info)

    def remember_first(self) -> concurrent.futures.Future[None]:
        """Hold every lookup of :meth:`infos` until the returned future is done: for a caller that will
        :meth:`remember` what it knows (read from a ledger that is still opening) while the requests
        that need no contract info are already on their way. A thread-safe future, so that any event
        loop or thread can resolve it; it must always be resolved (an exception counts as done:
        then everything unknown is looked up)."""
        self._seeding = concurrent.futures.Future()
        return self._seeding

    def cached(self) -> dict[int, ContractInfo]:
        """A copy of the contract info this book holds (looked up or remembered), by conid."""
        return dict(self._info)

    async def contract_info(self, conid: int) -> ContractInfo:
        """``GET /iserver/contract/{conid}/info`` (snake_case fields), cached forever."""
        conid = int(conid)
        cached = self._info.get(conid)
        if cached is not None:
            return cached
        await self.transport.ensure_iserver_accounts()
        data = await self.transport.request("GET", f"/iserver/contract/{conid}/info")
        if isinstance(data, Mapping) and data.get("error"):
            raise APIError(
                f"contract info for {conid}: {data['error']}", path=f"/iserver/contract/{conid}/info"
            )
        if not isinstance(data, Mapping):
            raise ParseError(f"contract info for {conid} is not an object: {str(data)[:200]}")
        info = parse_contract_info({"con_id": conid, **data})
        self._info[conid] = info
        return info

    async def secdef_info(
        self,
        conid: int,
        *,
        sec_type: str,
        month: str | None = None,
        exchange: str | None = None,
        strike: Decimal | str | None = None,
        right: str | None = None,
    ) -> list[ContractInfo]:
        """``GET /iserver/secdef/info`` (derivatives of an underlying; multiplier arrives as a string)."""
        params: dict[str, Any] = {"conid": int(conid), "sectype": sec_type}
        for key, value in (("month", month), ("exchange", exchange), ("strike", strike), ("right", right)):
            if value is not None:
                params[key] = str(value)
        data = await self.transport.request("GET", "/iserver/secdef/info", params=params)
        rows = data if isinstance(data, list) else [data] if isinstance(data, Mapping) else []
        result = []
        for row in rows:
            if isinstance(row, Mapping) and not row.get("error"):
                info = parse_contract_info(row)
                self._info.setdefault(info.conid, info)
                result.append(info)
        return result

    async def search(self, symbol: str, sec_type: str | None = None) -> list[ContractSearchResult]:
        """``GET /iserver/secdef/search?symbol=...[&secType=...]`` (its conids are strings; ints here)."""
        params: dict[str, Any] = {"symbol": symbol}
        if sec_type:
            params["secType"] = sec_type
        data = await self.transport.request("GET", "/iserver/secdef/search", params=params)
        if isinstance(data, Mapping) and data.get("error"):
            raise APIError(f"contract search for {symbol!r}: {data['error']}", path="/iserver/secdef/search")
        results = []
        for row in data if isinstance(data, list) else []:
            if not isinstance(row, Mapping):
                continue
            sections = row.get("sections") or []
            results.append(
                ContractSearchResult(
                    conid=_int_or_none(row.get("conid")),
                    symbol=row.get("symbol"),
                    company_name=row.get("companyName") or row.get("companyHeader"),
                    description=row.get("description"),
                    sec_types=[
                        str(s.get("secType")) for s in sections if isinstance(s, Mapping) and s.get("secType")
                    ],
                    raw=dict(row),
                )
            )
        return results

    async def infos(self, conids: Iterable[int]) -> dict[int, ContractInfo]:
        """Contract info of each of ``conids`` that can be looked up (failures are logged, left out).

        Unknown conids cost ``ceil(n / SECDEF_BATCH)`` ``/trsrv/secdef`` requests; only those it does
        not answer completely are looked up one by one (``/iserver/contract/{conid}/info``).
        """
        wanted = list(dict.fromkeys(int(c) for c in conids))
        if self._seeding is not None:
            with contextlib.suppress(Exception):  # seeding is an optimisation: without it, look all up
                await asyncio.wrap_future(self._seeding)
        missing = [c for c in wanted if c not in self._info]
        if missing:
            unanswered = await self._bulk(missing)
            if unanswered:
                logger.info(
                    "contract info: %d of %d conids not answered in bulk, asked one by one",
                    len(unanswered),
                    len(missing),
                )
                await self._one_by_one(unanswered)
        return {c: self._info[c] for c in wanted if c in self._info}

    async def _bulk(self, conids: list[int]) -> list[int]:
        """Ask ``/trsrv/secdef`` about ``conids`` in batches; cache complete answers and return the rest."""
        batches = [conids[i : i + SECDEF_BATCH] for i in range(0, len(conids), SECDEF_BATCH)]
        answered = await asyncio.gather(*(self._secdef_batch(batch) for batch in batches))
        found: dict[int, ContractInfo] = {}
        for part in answered:
            found.update(part)
        for conid, info in found.items():
            self._info.setdefault(conid, info)
        return [c for c in conids if c not in found]

    async def _secdef_batch(self, conids: list[int]) -> dict[int, ContractInfo]:
        """One ``/trsrv/secdef`` request: the complete answers among ``conids`` (a failure answers none)."""
        asked = set(conids)
        try:
            data = await self.transport.request(
                "GET", SECDEF_PATH, params={"conids": ",".join(str(c) for c in conids)}
            )
        except (APIError, TransportError, ParseError) as exc:
            logger.warning("bulk contract info for %d conids unavailable: %s", len(conids), exc)
            return {}
        rows = data.get("secdef") if isinstance(data, Mapping) else None
        if not isinstance(rows, list):
            error = data.get("error") if isinstance(data, Mapping) else None
            logger.warning(
                "bulk contract info for %d conids: unexpected answer %s",
                len(conids),
                error or str(data)[:200],
            )
            return {}
        found: dict[int, ContractInfo] = {}
        for row in rows:
            if not isinstance(row, Mapping):
                continue
            try:
                info = info_from_secdef(row)
            except ValueError as exc:
                logger.warning("secdef row does not parse (%s): %s", exc, str(row)[:200])
                continue
            if info.conid in asked and _complete(info):
                found[info.conid] = info
        return found

    async def _one_by_one(self, conids: list[int]) -> None:
        """``/iserver/contract/{conid}/info`` for each of ``conids``, a few at a time (the transport's
        rate limiter still paces them); failures are logged and left out."""
        gate = asyncio.Semaphore(_LOOKUP_CONCURRENCY)

        async def one(conid: int) -> None:
            async with gate:
                try:
                    await self.contract_info(conid)
                except (APIError, TransportError, ParseError, ValueError) as exc:
                    logger.warning("contract info for conid %s unavailable: %s", conid, exc)

        await asyncio.gather(*(one(c) for c in conids))

    async def multipliers(self, conids: Iterable[int]) -> dict[int, Decimal]:
        """Known multipliers of ``conids`` from contract info; conids whose lookup fails are left out."""
        return multipliers_of(await self.infos(conids))

    async def event_contract_pair(self, conid: int) -> EventContractPair:
        """YES (call) and NO (put) conids of the event contract that ``conid`` belongs to.

        Uses ``GET /forecast/contract/details?conid=`` whose answer carries ``conid_yes``/``conid_no``
        (docs/ibkr-api.md#event-contracts; only seen in a recorded fixture, so unverified: a missing pair
        raises :class:`ParseError` instead of guessing).
        """
        conid = int(conid)
        cached = self._pairs.get(conid)
        if cached is not None:
            return cached
        data = await self.transport.request("GET", "/forecast/contract/details", params={"conid": conid})
        yes = _int_or_none(data.get("conid_yes")) if isinstance(data, Mapping) else None
        no = _int_or_none(data.get("conid_no")) if isinstance(data, Mapping) else None
        if yes is None or no is None:
            raise ParseError(
                f"event contract details for {conid} have no conid_yes/conid_no; pass an EventContractPair "
                "built from contract search instead"
            )
        pair = EventContractPair(yes_conid=yes, no_conid=no)
        self._pairs[yes] = self._pairs[no] = self._pairs[conid] = pair
        return pair
