"""``IBKRClient``: the Client Portal Web API endpoints this project uses, typed and safe.

The client knows nothing of Prefect or SQL; it turns HTTP answers into models from
:mod:`ibkr_tasks.models` and applies these rules (the IBKR facts behind them: docs/ibkr-api.md):

- positions: pages of 100 from page 0 until a short or empty page (there is no total);
- fills: ``/iserver/account/trades?days=N`` answers for the selected account; the trades scope decides
  between one request for an FA master's sub-accounts and one per account (``accountId``); rows are
  grouped by account and another account's executions are never returned for an account;
- orders, prompts, cancels: see :mod:`ibkr_tasks.client.orders`;
- market data: see :mod:`ibkr_tasks.client.marketdata`; contracts: :mod:`ibkr_tasks.client.contracts`.

HTTP, auth, pacing and the ``/iserver/accounts`` / ``/portfolio/accounts`` pre-flights belong to the
transport (:class:`ibkr_tasks.client.transport.Transport`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from types import TracebackType
from typing import Any, get_args

from ibkr_tasks.accounts import validate_account_id
from ibkr_tasks.client.contracts import ContractBook, multipliers_of
from ibkr_tasks.client.marketdata import MarketData
from ibkr_tasks.client.orders import FoundOrder, OrderDesk, TransportLike
from ibkr_tasks.client.prompts import PromptPolicy
from ibkr_tasks.client.settings import TradesScope
from ibkr_tasks.errors import AccountMismatch, APIError, ConfigurationError, ParseError
from ibkr_tasks.models import (
    DEFAULT_SNAPSHOT_FIELDS,
    AccountInfo,
    CancelResult,
    ContractInfo,
    ContractSearchResult,
    EventContractPair,
    Fill,
    FillsByAccount,
    LiveOrder,
    OrderRequest,
    OrderResult,
    ParseResult,
    Position,
    RejectedRow,
    Snapshot,
    fill_account_id,
    parse_account,
    parse_fills,
    parse_positions,
)
from ibkr_tasks.models.multipliers import ONE_MULTIPLIER_SEC_TYPES, OPTION_SEC_TYPES, positive_or_none
from ibkr_tasks.models.numbers import parse_conid, parse_decimal

__all__ = [
    "MAX_POSITION_PAGES",
    "MAX_TRADE_DAYS",
    "POSITIONS_PAGE_SIZE",
    "TRADES_SCOPES",
    "IBKRClient",
    "ScopedFills",
    "TradesRequest",
]

logger = logging.getLogger(__name__)

POSITIONS_PAGE_SIZE = 100
MAX_POSITION_PAGES = 1000  # 100,000 positions: beyond that the server is ignoring the page index
MAX_TRADE_DAYS = 7


def _conid_or_none(row: Any) -> int | None:
    """The row's conid if the parser would accept it (a conid it rejects is never looked up)."""
    if not isinstance(row, Mapping):
        return None
    try:
        return parse_conid(row.get("conid"))
    except ValueError:
        return None


def _conids_of(rows: Iterable[Any]) -> list[int]:
    conids = [conid for conid in map(_conid_or_none, rows) if conid is not None]
    return list(dict.fromkeys(conids))


def _log_duplicates(what: str, result: ParseResult[Any]) -> None:
    if result.duplicates or result.conflicting:
        logger.warning(
            "%s: %d exact copy(ies) of a row counted once; %d row(s) sharing a key with different "
            "contents quarantined",
            what,
            result.duplicates,
            result.conflicting,
        )


def _error_of(data: Any) -> str | None:
    if isinstance(data, Mapping) and data.get("error") not in (None, ""):
        return str(data["error"])
    return None


TRADES_SCOPES: tuple[str, ...] = get_args(TradesScope)


@dataclass(frozen=True)
class TradesRequest:
    """One ``/iserver/account/trades`` request of a trades scope: ``account_id`` is sent as
    ``accountId`` (None: the whole login, as selected); ``accounts`` are the accounts it answers for;
    ``select`` is the account to select first (an FA master), if any."""

    account_id: str | None
    accounts: frozenset[str]
    select: str | None = None


class ScopedFills(FillsByAccount):
    """:class:`FillsByAccount` that also says which accounts a request without ``accountId`` served
    (``login_wide``): an empty answer for one of those may only mean the answer did not cover it."""

    def __init__(self) -> None:
        super().__init__()
        self.login_wide: set[str] = set()


class IBKRClient:
    """Async client for the Client Portal Web API. Use ``async with IBKRClient.from_settings() as c``."""

    def __init__(
        self,
        transport: TransportLike,
        *,
        policy: PromptPolicy | None = None,
        sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
        clock: Callable[[], float] = time.monotonic,
        preflight_pause: float = 0.5,
        trades_scope: TradesScope | None = None,
    ) -> None:
        self.transport = transport
        settings = getattr(transport, "settings", None)
        self.trades_scope: TradesScope = trades_scope or getattr(settings, "trades_scope", None) or "auto"
        self._selected: tuple[Any, str] | None = None
        self._answered: dict[str, asyncio.Event] = {}
        self._requested: dict[str, asyncio.Event] = {}
        self.contracts = ContractBook(transport)
        self.market_data = MarketData(transport, sleep=sleep, clock=clock, preflight_pause=preflight_pause)
        self.orders = OrderDesk(
            transport,
            policy=policy,
            fills_lookup=self._fills_of,
            sleep=sleep,
            preflight_pause=max(preflight_pause, 1.0),
        )

    @classmethod
    def from_settings(
        cls, settings: Any = None, *, policy: PromptPolicy | None = None, **transport_kwargs: Any
    ) -> IBKRClient:
        """Build the client on the real :class:`Transport` (settings from ``IBKR_*`` env when None).

        ``transport_kwargs`` go to ``Transport`` (``http_transport=``, ``clock=``, ``sleep=``...); the
        client uses the same ``clock``/``sleep`` for its own pauses.
        """
        from ibkr_tasks.client.transport import Transport

        timing = {k: transport_kwargs[k] for k in ("clock", "sleep") if k in transport_kwargs}
        return cls(Transport(settings, **transport_kwargs), policy=policy, **timing)

    async def __aenter__(self) -> IBKRClient:
        # Starts the transport's background keep-alive (a /tickle about once a minute while open).
        opener = getattr(self.transport, "open", None)
        if opener is not None:
            await opener()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the transport (its keep-alive and HTTP connections)."""
        close = getattr(self.transport, "aclose", None)
        if close is not None:
            await close()

    # ------------------------------------------------------------------ session & accounts
    async def ensure_session(self, allow_competing: bool = False) -> Any:
        """Make sure a brokerage session is open (delegates to the transport)."""
        return await self.transport.ensure_session(allow_competing=allow_competing)

    async def list_accounts(self) -> list[AccountInfo]:
        """Accounts of the login: ``/portfolio/accounts`` joined with ``/iserver/accounts``."""
        rows = await self.transport.ensure_portfolio_accounts()
        iserver = await self.transport.ensure_iserver_accounts()
        accounts = []
        for row in rows or []:
            try:
                accounts.append(parse_account(row, iserver))
            except ValueError as exc:
                raise ParseError(
                    f"/portfolio/accounts row not understood ({exc}): {str(row)[:200]}"
                ) from None
        return accounts

    # ------------------------------------------------------------------ positions
    async def positions(
        self, account_id: str, *, invalidate: bool = False, after_trades: bool = False
    ) -> ParseResult[Position]:
        """Every position of ``account_id``, walking pages of 100 from page 0.

        ``invalidate=True`` first clears IBKR's server-side positions cache. Rows that cannot be parsed
        are in ``rejected``. A row that names another account raises :class:`AccountMismatch`: if the
        server mixed accounts, none of the rows of that answer can be trusted for reconciliation.

        ``after_trades=True`` first waits, in this client, until a trades answer covering the account
        has arrived (:meth:`trades_answered`): the positions then hold every fill of that answer, and
        the first request goes out as soon as it has arrived. Only for a caller with a :meth:`fills`
        call covering the account under way; it waits as long as none has answered.
        """
        acct = validate_account_id(account_id)
        if after_trades:
            await self.trades_answered(acct)
        await self.transport.ensure_portfolio_accounts()
        if invalidate:
            # Idempotent (it only clears a cache), so a transient failure may be retried.
            await self.transport.request("POST", f"/portfolio/{acct}/positions/invalidate", retry=True)
        rows: list[Any] = []
        previous: list[Any] | None = None
        for page in range(MAX_POSITION_PAGES):
            path = f"/portfolio/{acct}/positions/{page}"
            data = await self.transport.request("GET", path)
            error = _error_of(data)
            if error is not None:
                raise APIError(f"positions of {acct} page {page}: {error}", path=path)
            if not isinstance(data, list):
                raise ParseError(f"positions of {acct} page {page} is not a list: {str(data)[:200]}")
            if data and data == previous:
                raise APIError(
                    f"positions of {acct}: page {page} repeats page {page - 1}; the server ignores the page "
                    "index, so the positions cannot be trusted",
                    path=path,
                )
            rows.extend(data)
            if len(data) < POSITIONS_PAGE_SIZE:
                break
            previous = data
        else:
            raise APIError(f"positions of {acct}: more than {MAX_POSITION_PAGES} full pages", path=path)
        multipliers = await self._multipliers_needed(rows, sec_type_keys=("assetClass", "secType"))
        # Off the event loop, as the trades rows are: other requests' pacing wake-ups wait on it.
        result = await asyncio.to_thread(parse_positions, rows, acct, multipliers=multipliers)
        _log_duplicates(f"positions of {acct}", result)
        foreign = sorted({r.account_id for r in result.rejected if r.account_id and r.account_id != acct})
        if foreign:
            raise AccountMismatch(
                f"positions of {acct} contained rows of {', '.join(foreign)}; refusing the whole answer. "
                "Check that the account id is not an FA group/master and retry with invalidate=True"
            )
        return result

    # ------------------------------------------------------------------ fills
    async def fills(
        self,
        account_ids: Sequence[str] | str,
        *,
        days: int = 1,
        resolve_contracts: bool = True,
        scope: TradesScope | None = None,
    ) -> ScopedFills:
        """Executions of the last ``days`` days (1..7) for each of ``account_ids``.

        Returns ``{account_id: ParseResult[Fill]}`` (a :class:`ScopedFills`, also carrying
        ``unattributed`` rejected rows, ``other_accounts`` counts and ``login_wide``: the accounts
        served by a request without ``accountId``). The days are always sent explicitly because IBKR
        documents two different defaults.

        IBKR answers ``/iserver/account/trades`` for the *selected* account; ``scope`` (default: the
        client's ``trades_scope``, ``IBKR_TRADES_SCOPE``) says how the accounts are covered:

        - ``login``: one request without ``accountId``; right only when that answer covers every
          account asked for;
        - ``account``: one request per account with ``accountId`` (IBKR paces them at 1 per 5 s);
        - ``auto``: one request for the sub-accounts of an FA master (the master is selected first if
          it is not), one per account for everything else, as ``/iserver/accounts`` describes the login.

        IBKR's trades rows carry neither currency nor multiplier. With ``resolve_contracts`` (default)
        the contract info of every distinct conid not yet known to this client is looked up in bulk
        (``/trsrv/secdef``, 200 conids per request; one by one only for what it does not answer;
        cached: conids are permanent) to fill ``currency``/``commission_currency`` and the
        multiplier; without it only contracts whose multiplier cannot be inferred (futures...) are
        looked up.
        """
        if isinstance(days, bool) or not isinstance(days, int) or not 1 <= days <= MAX_TRADE_DAYS:
            raise ConfigurationError(
                f"days must be an integer from 1 to {MAX_TRADE_DAYS} (IBKR keeps 7 days of executions; "
                f"use Flex statements for older ones), got {days!r}"
            )
        if isinstance(account_ids, str):
            account_ids = [account_ids]
        wanted = list(dict.fromkeys(validate_account_id(a) for a in account_ids))
        if not wanted:
            raise ConfigurationError("fills() needs at least one account id")
        plan = await self.trades_requests(wanted, scope)
        await self.transport.ensure_iserver_accounts()
        grouped = ScopedFills()
        # Each account's rows are parsed on their own, so that its result counts its own duplicates.
        rows_of: dict[str | None, list[Any]] = {acct: [] for acct in wanted}
        rows_of[None] = []  # rows that do not say whose they are: rejected, to be quarantined
        ours: list[Any] = []
        for n, request in enumerate(plan, 1):
            account_id, covered = request.account_id, request.accounts
            if request.select is not None and self._selected_account() != request.select:
                await self.select_account(request.select)
            for acct in covered:
                self._requested_event(acct).set()
            data = await self._trades_request(account_id, days)
            for acct in covered:
                self._answered_event(acct).set()
            if account_id is None:
                grouped.login_wide.update(covered)

            def split(data: list[Any] = data, covered: frozenset[str] = covered) -> int:
                kept = 0
                for row in data:
                    owner = fill_account_id(row) if isinstance(row, Mapping) else None
                    if owner is None or owner in covered:
                        rows_of[owner].append(row)
                        ours.append(row)
                        kept += 1
                    else:
                        grouped.other_accounts[owner] = grouped.other_accounts.get(owner, 0) + 1
                return kept

            # Off the event loop (thousands of rows), which first lets whatever waited for this answer
            # (the accounts' positions, :meth:`trades_answered`) send its requests.
            kept = await asyncio.to_thread(split)
            if len(plan) > 1:
                logger.info("trades %d/%d (%s): %d row(s)", n, len(plan), account_id or "whole login", kept)
        if resolve_contracts:
            infos = await self.contracts.infos(_conids_of(ours))
            multipliers = multipliers_of(infos)
            currencies = {conid: info.currency for conid, info in infos.items() if info.currency}
        else:
            multipliers = await self._multipliers_needed(ours, sec_type_keys=("sec_type", "secType"))
            currencies = {}

        def parse_all() -> None:
            for owner, rows in rows_of.items():
                parsed = parse_fills(rows, multipliers=multipliers, currencies=currencies)
                _log_duplicates(f"trades of {owner or 'no account'}", parsed)
                if owner is not None:
                    grouped[owner] = ParseResult(
                        items=parsed.items, duplicates=parsed.duplicates, conflicting=parsed.conflicting
                    )
                else:
                    grouped.unattributed_duplicates = parsed.duplicates
                for rejected in parsed.rejected:
                    self._route_rejected(grouped, rejected)

        # Off the event loop: thousands of rows would hold up the pacing's wake-ups of the requests
        # other callers (the accounts' positions) have waiting on it.
        await asyncio.to_thread(parse_all)
        if grouped.other_accounts:
            logger.info("trades: ignored rows of accounts not asked for: %s", grouped.other_accounts)
        return grouped

    def _answered_event(self, account_id: str) -> asyncio.Event:
        return self._answered.setdefault(account_id, asyncio.Event())

    def _requested_event(self, account_id: str) -> asyncio.Event:
        return self._requested.setdefault(account_id, asyncio.Event())

    async def trades_requested(self, account_id: str) -> None:
        """Return once a trades request covering ``account_id`` is on its way (its pacing slot may
        still be ahead): what waits for its answer can get ready meanwhile."""
        await self._requested_event(validate_account_id(account_id)).wait()

    async def trades_answered(self, account_id: str) -> None:
        """Return once a trades answer covering ``account_id`` has arrived in this client (it may
        still be parsed and its contract info looked up). What is fetched after it -- the account's
        positions -- reflects every fill that answer holds."""
        await self._answered_event(validate_account_id(account_id)).wait()

    async def trades_requests(
        self, account_ids: Sequence[str] | str, scope: TradesScope | None = None
    ) -> list[TradesRequest]:
        """The trades requests :meth:`fills` would make for ``account_ids`` under ``scope`` (default:
        the client's ``trades_scope``), in order; nothing is sent but the account discovery."""
        if isinstance(account_ids, str):
            account_ids = [account_ids]
        wanted = list(dict.fromkeys(validate_account_id(a) for a in account_ids))
        scope = scope or self.trades_scope
        if scope not in TRADES_SCOPES:
            raise ConfigurationError(f"trades scope must be one of {', '.join(TRADES_SCOPES)}, got {scope!r}")
        if scope == "login":
            return [TradesRequest(None, frozenset(wanted))]
        per_account = [TradesRequest(a, frozenset([a])) for a in wanted]
        if scope == "account":
            return per_account
        await self.transport.ensure_iserver_accounts()
        master, children = await self._fa_master()
        shared = [a for a in wanted if a in children]
        if master is None or len(shared) < 2:  # one request per account costs no more
            return per_account
        rest = [TradesRequest(a, frozenset([a])) for a in wanted if a not in children]
        return [TradesRequest(None, frozenset(shared), select=master), *rest]

    async def _fa_master(self) -> tuple[str | None, frozenset[str]]:
        """The login's FA master (``hasChildAccounts`` in ``/iserver/accounts``) and its sub-accounts."""
        infos = await self.list_accounts()
        master = next((a.account_id for a in infos if a.has_child_accounts or a.is_multiplex_parent), None)
        if master is None:
            return None, frozenset()
        children = frozenset(
            a.account_id
            for a in infos
            if a.account_id != master and (a.parent_account_id == master or a.is_fa_client)
        )
        return master, children

    def _selected_account(self) -> str | None:
        """The account the brokerage session has selected, as far as this client knows."""
        answer = getattr(self.transport, "_iserver_accounts", None)
        if self._selected is not None and self._selected[0] is answer:
            return self._selected[1]
        if isinstance(answer, Mapping) and answer.get("selectedAccount"):
            return str(answer["selectedAccount"]).upper()
        return None

    def _note_selected(self, account_id: str) -> None:
        self._selected = (getattr(self.transport, "_iserver_accounts", None), account_id)

    async def select_account(self, account_id: str) -> None:
        """Select ``account_id`` for the brokerage session (``POST /iserver/account``)."""
        acct = validate_account_id(account_id)
        await self.transport.ensure_iserver_accounts()
        path = "/iserver/account"
        data = await self.transport.request("POST", path, json={"acctId": acct}, retry=True)
        error = _error_of(data)
        if error is not None:
            raise APIError(f"selecting account {acct}: {error}", path=path)
        self._note_selected(acct)

    async def _trades_request(self, account_id: str | None, days: int) -> list[Any]:
        path = "/iserver/account/trades"
        params: dict[str, Any] = {"days": days}
        if account_id is not None:
            params["accountId"] = account_id
        data = await self.transport.request("GET", path, params=params)
        if account_id is not None:
            self._note_selected(account_id)  # an accountId selects the account, as at IBKR
        error = _error_of(data)
        if error is not None:
            raise APIError(f"trades{' of ' + account_id if account_id else ''}: {error}", path=path)
        if not isinstance(data, list):
            raise ParseError(f"trades answer is not a list: {str(data)[:200]}")
        return data

    @staticmethod
    def _route_rejected(grouped: FillsByAccount, rejected: RejectedRow) -> None:
        if rejected.account_id is not None and rejected.account_id in grouped:
            grouped[rejected.account_id].rejected.append(rejected)
        else:
            grouped.unattributed.append(rejected)

    async def _fills_of(self, account_id: str) -> list[Fill]:
        """Today's fills of one account (used to find an order by cOID)."""
        fills = await self.fills([account_id], days=1, resolve_contracts=False, scope="account")
        return fills[account_id.upper()].items

    async def _multipliers_needed(
        self, rows: Iterable[Any], *, sec_type_keys: tuple[str, ...]
    ) -> dict[int, Decimal]:
        """Contract-info multipliers for rows whose multiplier cannot be inferred from the row."""
        conids: list[int] = []
        for row in rows:
            if not isinstance(row, Mapping) or positive_or_none(row.get("multiplier")) is not None:
                continue
            sec_type = next((str(row[k]).upper() for k in sec_type_keys if row.get(k)), "")
            if not sec_type or sec_type in ONE_MULTIPLIER_SEC_TYPES or sec_type in OPTION_SEC_TYPES:
                continue
            conid = _conid_or_none(row)
            if conid is not None:
                conids.append(conid)
        if not conids:
            return {}
        return await self.contracts.multipliers(conids)

    # ------------------------------------------------------------------ orders
    async def place_order(
        self,
        account_id: str,
        order: OrderRequest,
        *,
        coid: str,
        policy: PromptPolicy | None = None,
        pair: EventContractPair | None = None,
    ) -> OrderResult:
        """Place ONE order (see :mod:`ibkr_tasks.client.orders` for every rule it follows)."""
        acct = validate_account_id(account_id)
        if order.side.value != "Long" and pair is None:
            pair = await self.contracts.event_contract_pair(order.conid)
        if order.manual_indicator is None:
            order = await self._with_manual_indicator(order, pair)
        return await self.orders.place(acct, order, coid=coid, policy=policy, pair=pair)

    async def _with_manual_indicator(
        self, order: OrderRequest, pair: EventContractPair | None
    ) -> OrderRequest:
        """Mark FUT/FOP orders as automated (``manualIndicator: false``), which IBKR requires for them."""
        try:
            info = await self.contracts.contract_info(order.resolve_conid(pair))
        except (APIError, ParseError, ValueError) as exc:
            logger.warning(
                "contract info for %s unavailable (%s); manualIndicator not set", order.market_id, exc
            )
            return order
        if info.sec_type in {"FUT", "FOP"}:
            return order.model_copy(update={"manual_indicator": False})
        return order

    async def live_orders(self, account_id: str) -> list[LiveOrder]:
        """This account's working and recent orders (never another account's)."""
        return await self.orders.live_orders(validate_account_id(account_id))

    async def find_by_coid(self, account_id: str, coid: str) -> FoundOrder | None:
        """This account's order placed under ``coid`` (live orders, then today's trades), or None."""
        return await self.orders.find_by_coid(validate_account_id(account_id), coid)

    async def cancel_order(self, account_id: str, order_id: str | int) -> CancelResult:
        """Ask IBKR to cancel one order of ``account_id``."""
        return await self.orders.cancel(validate_account_id(account_id), str(order_id))

    async def cancel_all(self, account_id: str) -> list[CancelResult]:
        """Cancel every active order of ``account_id`` only (never IBKR's ``-1`` 'cancel all')."""
        return await self.orders.cancel_all(validate_account_id(account_id))

    # ------------------------------------------------------------------ market data
    async def snapshot(
        self, conids: Iterable[int | str], fields: Iterable[str | int] = DEFAULT_SNAPSHOT_FIELDS
    ) -> list[Snapshot]:
        """Typed snapshots, pre-flight and chunking handled."""
        return await self.market_data.snapshot(conids, fields)

    def poll_snapshots(
        self,
        conids: Iterable[int | str],
        *,
        interval: float = 5.0,
        count: int | None = None,
        duration: float | None = None,
        fields: Iterable[str | int] = DEFAULT_SNAPSHOT_FIELDS,
    ) -> AsyncIterator[list[Snapshot]]:
        """``async for snaps in client.poll_snapshots([265598], interval=5, count=3): ...``"""
        return self.market_data.poll(conids, interval=interval, count=count, duration=duration, fields=fields)

    # ------------------------------------------------------------------ contracts
    async def contract_info(self, conid: int | str) -> ContractInfo:
        """Contract details (cached forever: conids are permanent)."""
        return await self.contracts.contract_info(int(conid))

    async def secdef_info(
        self,
        conid: int | str,
        *,
        sec_type: str,
        month: str | None = None,
        exchange: str | None = None,
        strike: Decimal | str | None = None,
        right: str | None = None,
    ) -> list[ContractInfo]:
        """Derivative contracts of an underlying (``/iserver/secdef/info``; multiplier is a string there)."""
        return await self.contracts.secdef_info(
            int(conid), sec_type=sec_type, month=month, exchange=exchange, strike=strike, right=right
        )

    async def search(self, symbol: str, sec_type: str | None = None) -> list[ContractSearchResult]:
        """Find contracts by symbol (``/iserver/secdef/search``)."""
        return await self.contracts.search(symbol, sec_type)

    async def event_contract_pair(self, conid: int | str) -> EventContractPair:
        """YES/NO conids of an event contract (for ``Side.YES``/``Side.NO`` orders)."""
        return await self.contracts.event_contract_pair(int(conid))

    # ------------------------------------------------------------------ summary
    async def portfolio_summary(self, account_id: str) -> dict[str, Decimal]:
        """``/portfolio/{id}/summary`` amounts as Decimals (``netliquidation``, ``totalcashvalue``...).

        Entries flagged ``isNull`` or without an amount are left out rather than reported as 0.
        """
        acct = validate_account_id(account_id)
        await self.transport.ensure_portfolio_accounts()
        path = f"/portfolio/{acct}/summary"
        data = await self.transport.request("GET", path)
        error = _error_of(data)
        if error is not None:
            raise APIError(f"summary of {acct}: {error}", path=path)
        if not isinstance(data, Mapping):
            raise ParseError(f"summary of {acct} is not an object: {str(data)[:200]}")
        summary: dict[str, Decimal] = {}
        for key, entry in data.items():
            if not isinstance(entry, Mapping) or entry.get("isNull") is True:
                continue
            try:
                summary[key] = parse_decimal(entry.get("amount"))
            except ValueError:
                continue
        return summary
