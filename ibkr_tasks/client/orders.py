"""Placing, listing and cancelling orders safely (docs/ibkr-api.md#orders).

The rules, each with a regression test in ``tests/test_api_orders.py``:

- one order per ``POST /iserver/account/{id}/orders``, serialised: IBKR says not to place another
  order before the previous one is acknowledged, and a pending reply prompt is invalidated by any
  other request on the brokerage session (docs/ibkr-api.md#orders, #prompts). The session is shared by every
  account of the login, so by default ONE lock covers all accounts (``lock_scope="session"``);
  ``lock_scope="account"`` serialises per account only. Requests made concurrently by other code on
  the same session (e.g. a snapshot poll) can still invalidate a prompt; the reply then fails (503)
  and the order is looked up by its cOID, never resent;
- never retried by the transport (``retry=False``): a resend can double an order;
- reply questions are answered at once with ``POST /iserver/reply/{id}``, at most ``MAX_REPLY_HOPS``
  times, ``{"confirmed": true}`` only for message ids the :class:`PromptPolicy` allows; anything else
  is answered ``{"confirmed": false}`` (the order is discarded) and raises :class:`UnknownPrompt`;
- a reply id is never returned as the order id: only an acknowledgement's ``order_id`` is;
- ``{"error": ...}`` with HTTP 200 and HTTP 4xx raise :class:`OrderRejected`; after an HTTP 5xx the
  order is first looked up by its cOID (a 502/504 can follow an accepted order) and returned if found;
  otherwise 500 (and 503 on a reply) raise :class:`OrderRejected`, other 5xx :class:`OrderStateUnknown`;
- "Local order ID=... is already registered" means the order exists: it is looked up by its cOID
  (``order_ref``) in live orders, then in today's trades, and returned with ``existing=True``;
- a transport failure after the request may have been sent is resolved the same way; if the order is
  not found, :class:`OrderStateUnknown` is raised. Nothing is ever resent.

"Did the order go through?" has one answer, here: :func:`may_have_reached_ibkr` says from the typed
error whether an order can be at IBKR after placing failed, and :func:`resolve_failed_placement` looks
such an order up by its cOID for a caller whose ``place`` raised (an error after the client returned,
e.g. a task runner losing the result, or one the client could not resolve). The client's own
lost-answer handling uses the same two.

Every prompt and its answer is recorded in ``OrderResult.prompts``; when placing fails, the raised
:class:`OrderError` carries the same list as ``exc.prompts`` (plus ``exc.coid``/``exc.account_id``) so
the ledger's order audit sees refused prompts too.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from ibkr_tasks.client.prompts import PromptPolicy
from ibkr_tasks.errors import (
    APIError,
    ConfigurationError,
    OrderError,
    OrderRejected,
    OrderStateUnknown,
    ParseError,
    RequestFailed,
    TransportError,
    UnknownPrompt,
)
from ibkr_tasks.models import (
    CancelResult,
    EventContractPair,
    Fill,
    LiveOrder,
    OrderRequest,
    OrderResult,
    PromptRecord,
)
from ibkr_tasks.models.numbers import parse_decimal

__all__ = [
    "MAX_REPLY_HOPS",
    "CoidLookup",
    "FoundOrder",
    "OrderDesk",
    "TransportLike",
    "may_have_reached_ibkr",
    "one_line",
    "parse_live_order",
    "resolve_failed_placement",
]

logger = logging.getLogger(__name__)

MAX_REPLY_HOPS = 5
_DUPLICATE_MARKER = "is already registered"
_LIVE_ORDERS_ATTEMPTS = 3


class TransportLike(Protocol):
    """The part of :class:`ibkr_tasks.client.transport.Transport` the endpoint layer uses."""

    async def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        json: Any = None,
        retry: bool | None = None,
    ) -> Any: ...

    async def ensure_session(self, allow_competing: bool = False) -> Any: ...

    async def ensure_iserver_accounts(self) -> dict[str, Any]: ...

    async def ensure_portfolio_accounts(self) -> list[dict[str, Any]]: ...


FillsLookup = Callable[[str], Awaitable[Sequence[Fill]]]
Sleep = Callable[[float], Awaitable[Any]]


@dataclass(frozen=True)
class FoundOrder:
    """An order found at IBKR by its cOID: its order id, status and where it was seen."""

    order_id: str | None
    status: str | None
    source: str  # "live orders" or "trades"


class CoidLookup(Protocol):
    """Finds an account's order by its cOID (:class:`OrderDesk` is one)."""

    async def find_by_coid(self, account_id: str, coid: str) -> FoundOrder | None: ...


def may_have_reached_ibkr(error: BaseException) -> bool:
    """Whether an order may be at IBKR although placing it raised ``error``.

    False only when the typed error says the order is not there: a prompt the policy declined
    (:class:`UnknownPrompt`), IBKR's own refusal (:class:`OrderRejected`; after a 5xx the client
    looked the cOID up before raising it) and a request that never left the client
    (:class:`RequestFailed` with ``maybe_sent=False``). Everything else may have come after IBKR
    accepted the order: :class:`OrderStateUnknown`, other transport failures, an answer that fails to
    parse, an error outside the client (a task runner losing the result), a cancelled request.
    Such an order is looked up by its cOID; it is never sent again under another cOID.
    """
    if isinstance(error, UnknownPrompt | OrderRejected):
        return False
    if isinstance(error, RequestFailed):
        return error.maybe_sent
    return True


async def resolve_failed_placement(
    lookup: CoidLookup, account_id: str, coid: str, error: BaseException
) -> FoundOrder | None:
    """After placing the order ``coid`` raised ``error``: the order if IBKR has it after all, else None.

    Looks it up (live orders, then today's trades) only when :func:`may_have_reached_ibkr`; a failed
    lookup is logged and answers None, since the error being handled is the one to report. None means
    "not found now", not "never placed" when the error may have come after sending: record the order
    as unknown and keep its cOID (a retry with the same cOID is answered "already registered").
    """
    if not may_have_reached_ibkr(error):
        return None
    try:
        found = await lookup.find_by_coid(account_id, coid)
    except Exception as exc:  # the original error is the one to report
        logger.warning("looking up order %s of %s by cOID failed: %s", coid, account_id, exc)
        return None
    if found is not None:
        logger.warning(
            "order %s of %s was placed after all (%s: %s): found in %s",
            coid,
            account_id,
            type(error).__name__,
            error,
            found.source,
        )
    return found


def _text(value: Any) -> str | None:
    if value in (None, ""):
        return None
    return str(value).strip() or None


def _decimal_or_none(value: Any) -> Any:
    if value in (None, ""):
        return None
    try:
        return parse_decimal(value)
    except ValueError:
        return None


def parse_live_order(row: Mapping[str, Any]) -> LiveOrder | None:
    """One ``/iserver/account/orders`` row -> LiveOrder, or None when it has no order id or account."""
    order_id = _text(row.get("orderId", row.get("order_id")))
    account_id = _text(row.get("acct") or row.get("account"))
    if order_id is None or account_id is None:
        return None
    conid = row.get("conid")
    try:
        conid_int = int(str(conid)) if conid not in (None, "") else None
    except ValueError:
        conid_int = None
    return LiveOrder(
        order_id=order_id,
        account_id=account_id.upper(),
        conid=conid_int,
        symbol=_text(row.get("ticker") or row.get("symbol")),
        side=_text(row.get("side")),
        status=_text(row.get("status")),
        order_ref=_text(row.get("order_ref")),
        order_type=_text(row.get("origOrderType") or row.get("orderType")),
        total_size=_decimal_or_none(row.get("totalSize")),
        filled_quantity=_decimal_or_none(row.get("filledQuantity")),
        remaining_quantity=_decimal_or_none(row.get("remainingQuantity")),
        price=_decimal_or_none(row.get("price")),
        tif=_text(row.get("timeInForce")),
        raw=dict(row),
    )


def _error_text(answer: Any) -> str | None:
    if isinstance(answer, Mapping) and answer.get("error") not in (None, ""):
        return str(answer["error"])
    if isinstance(answer, Mapping) and answer.get("text") and ("messageId" in answer or "prompt" in answer):
        return str(answer["text"])  # "prompt-style reject" in IBKR's OpenAPI spec, docs/ibkr-api.md#orders
    if isinstance(answer, list) and answer and isinstance(answer[0], Mapping) and answer[0].get("error"):
        return str(answer[0]["error"])
    return None


def _question(answer: Any) -> Mapping[str, Any] | None:
    if isinstance(answer, list) and answer and isinstance(answer[0], Mapping):
        first = answer[0]
        if "id" in first and ("message" in first or "messageIds" in first) and "order_id" not in first:
            return first
    return None


def _acknowledgement(answer: Any) -> Mapping[str, Any] | None:
    if isinstance(answer, list) and answer and isinstance(answer[0], Mapping) and answer[0].get("order_id"):
        return answer[0]
    if isinstance(answer, Mapping) and answer.get("order_id") and not answer.get("error"):
        return answer
    return None


def one_line(text: str) -> str:
    """A prompt's text on one line (IBKR breaks its questions with newlines)."""
    return " ".join(text.split())


def _quoted(message_ids: Sequence[str]) -> str:
    return ", ".join(f'"{mid}"' for mid in message_ids)


def _as_list(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    return [str(v) for v in value]


class OrderDesk:
    """Order placement, live orders and cancels on top of a transport."""

    def __init__(
        self,
        transport: TransportLike,
        *,
        policy: PromptPolicy | None = None,
        fills_lookup: FillsLookup | None = None,
        sleep: Sleep = asyncio.sleep,
        preflight_pause: float = 1.0,
        lookup_attempts: int = 2,
        lookup_pause: float = 2.0,
        lock_scope: Literal["session", "account"] = "session",
    ) -> None:
        self.transport = transport
        self.policy = policy or PromptPolicy.default()
        self._fills_lookup = fills_lookup
        self._sleep = sleep
        self._preflight_pause = preflight_pause
        self._lookup_attempts = max(1, lookup_attempts)
        self._lookup_pause = lookup_pause
        self._lock_scope = lock_scope
        self._locks: dict[str, asyncio.Lock] = {}

    def _lock(self, account_id: str) -> asyncio.Lock:
        key = account_id if self._lock_scope == "account" else "*"
        return self._locks.setdefault(key, asyncio.Lock())

    # ------------------------------------------------------------------ placing
    async def place(
        self,
        account_id: str,
        order: OrderRequest,
        *,
        coid: str,
        policy: PromptPolicy | None = None,
        pair: EventContractPair | None = None,
    ) -> OrderResult:
        """Place ONE order for ``account_id`` with client order id ``coid``; see the module docstring."""
        policy = policy or self.policy
        ticket = order.to_ibkr_order(account_id, coid, pair)
        prompts: list[PromptRecord] = []
        async with self._lock(account_id):
            try:
                return await self._place_locked(account_id, coid, ticket, policy, prompts)
            except OrderError as exc:
                exc.prompts, exc.coid, exc.account_id = prompts, coid, account_id
                raise

    async def _place_locked(
        self,
        account_id: str,
        coid: str,
        ticket: dict[str, Any],
        policy: PromptPolicy,
        prompts: list[PromptRecord],
    ) -> OrderResult:
        await self.transport.ensure_iserver_accounts()
        path = f"/iserver/account/{account_id}/orders"
        answer = await self._send(account_id, coid, ticket, prompts, "POST", path, {"orders": [ticket]})
        if isinstance(answer, OrderResult):
            return answer
        reply_ids: set[str] = set()
        for hop in range(MAX_REPLY_HOPS + 1):
            error = _error_text(answer)
            if error is not None:
                if _DUPLICATE_MARKER in error:
                    return await self._existing(account_id, coid, ticket, prompts, answer, reason=error)
                raise OrderRejected(f"IBKR rejected order {coid} for {account_id}: {error}")
            ack = _acknowledgement(answer)
            if ack is not None:
                order_id = str(ack["order_id"])
                if order_id in reply_ids:  # never hand out a reply id as the order id
                    raise OrderStateUnknown(
                        f"IBKR acknowledged order {coid} with id {order_id}, which is a reply id; "
                        "look the order up by its cOID before doing anything else"
                    )
                return OrderResult(
                    account_id=account_id,
                    coid=coid,
                    order_id=order_id,
                    status=_text(ack.get("order_status")),
                    prompts=prompts,
                    request=ticket,
                    raw=answer,
                )
            question = _question(answer)
            if question is None:
                return await self._existing(
                    account_id,
                    coid,
                    ticket,
                    prompts,
                    answer,
                    reason=f"unrecognised answer to order {coid}: {str(answer)[:200]}",
                )
            reply_id = str(question["id"])
            reply_ids.add(reply_id)
            message_ids = _as_list(question.get("messageIds"))
            messages = _as_list(question.get("message"))
            allowed = policy.allows(message_ids) and hop < MAX_REPLY_HOPS
            record = PromptRecord(
                reply_id=reply_id,
                message_ids=message_ids,
                messages=messages,
                confirmed=allowed,
                allowed_by_policy=policy.allows(message_ids),
            )
            prompts.append(record)
            if not allowed:
                await self._decline(reply_id)
                text = "\n".join(messages)
                if hop >= MAX_REPLY_HOPS:
                    raise OrderRejected(
                        f"order {coid} for {account_id} asked more than {MAX_REPLY_HOPS} confirmation "
                        f"questions; declined the last one ({', '.join(message_ids)}): {one_line(text)}"
                    )
                raise UnknownPrompt(
                    f"order {coid} for {account_id} was NOT placed: IBKR asked "
                    f'{policy.describe(message_ids)}, answered no. IBKR\'s text: "{one_line(text)}". '
                    f"To allow it, pass policy=PromptPolicy.default().with_allowed({_quoted(message_ids)}) "
                    "to place_order, or allow it in a prompt policy file (see ibkr_tasks/data/prompt_policy.json)",
                    message_ids=message_ids,
                    text=text,
                )
            answer = await self._send(
                account_id,
                coid,
                ticket,
                prompts,
                "POST",
                f"/iserver/reply/{reply_id}",
                {"confirmed": True},
            )
            if isinstance(answer, OrderResult):
                return answer
        raise AssertionError("unreachable: the loop returns or raises")  # pragma: no cover

    async def _send(
        self,
        account_id: str,
        coid: str,
        ticket: dict[str, Any],
        prompts: list[PromptRecord],
        method: str,
        path: str,
        body: Any,
    ) -> Any:
        """One order/reply POST; lost responses and duplicates resolve to the existing order."""
        try:
            return await self.transport.request(method, path, json=body, retry=False)
        except TransportError as exc:
            if not may_have_reached_ibkr(exc):
                raise  # nothing left the client: the caller may retry with the same cOID
            return await self._existing(
                account_id, coid, ticket, prompts, None, reason=f"no answer from IBKR ({exc})", lost=True
            )
        except APIError as exc:
            if _DUPLICATE_MARKER in str(exc):
                return await self._existing(account_id, coid, ticket, prompts, None, reason=str(exc))
            status = exc.status_code or 0
            if status >= 500:
                # A 5xx may come after IBKR accepted the order (a gateway timeout, 502/504): look it up.
                # 500 ("invalid request content") and 503 on a reply ("reply timed out") are IBKR's
                # documented refusals, so not finding the order then means it was not placed.
                definite = status == 500 or (status == 503 and path.startswith("/iserver/reply/"))
                try:
                    return await self._existing(
                        account_id, coid, ticket, prompts, None, reason=str(exc), lost=not definite
                    )
                except OrderStateUnknown:
                    if not definite:
                        raise
                raise OrderRejected(
                    f"IBKR refused order {coid} for {account_id} at {path} and it is not in live orders "
                    f"or trades: {exc}"
                ) from exc
            raise OrderRejected(f"IBKR refused order {coid} for {account_id} at {path}: {exc}") from exc

    async def _decline(self, reply_id: str) -> None:
        """Answer a refused prompt with confirmed=false so IBKR discards the order at once."""
        try:
            await self.transport.request(
                "POST", f"/iserver/reply/{reply_id}", json={"confirmed": False}, retry=False
            )
        except (APIError, TransportError) as exc:
            # The order is not placed either way: an unanswered reply expires on IBKR's side.
            logger.warning("declining reply %s failed (%s); IBKR discards unanswered prompts", reply_id, exc)

    async def _existing(
        self,
        account_id: str,
        coid: str,
        ticket: dict[str, Any],
        prompts: list[PromptRecord],
        raw: Any,
        *,
        reason: str,
        lost: bool = False,
    ) -> OrderResult:
        """Find the order with ``coid`` in live orders, then trades; raise when it cannot be found."""
        lookup_error: Exception | None = None
        for attempt in range(self._lookup_attempts):
            if attempt:
                await self._sleep(self._lookup_pause)
            try:
                found = await self.find_by_coid(account_id, coid)
            except (APIError, TransportError, ParseError) as exc:
                lookup_error = exc
                logger.warning("looking up order %s for %s by cOID failed: %s", coid, account_id, exc)
                continue
            if found is not None:
                logger.info("order %s for %s resolved from %s (%s)", coid, account_id, found.source, reason)
                return OrderResult(
                    account_id=account_id,
                    coid=coid,
                    order_id=found.order_id,
                    status=found.status,
                    existing=True,
                    prompts=prompts,
                    request=ticket,
                    raw=raw,
                )
        if lookup_error is not None:
            reason = f"{reason}; looking it up by cOID failed too: {lookup_error}"
        if lost:
            raise OrderStateUnknown(
                f"order {coid} for {account_id} may or may not have reached IBKR ({reason}) and it is "
                "not in live orders or trades yet. Do NOT resend: look it up by cOID later "
                "(live_orders / fills order_ref)"
            )
        raise OrderStateUnknown(
            f"IBKR says order {coid} for {account_id} exists ({reason}) but it is not in live orders "
            "or trades; do not resend with a new cOID until it is found"
        )

    async def find_by_coid(self, account_id: str, coid: str) -> FoundOrder | None:
        """This account's order whose order_ref is ``coid`` (live orders, then trades), or None."""
        for live in await self.live_orders(account_id):
            if live.order_ref == coid:
                return FoundOrder(live.order_id, live.status, "live orders")
        if self._fills_lookup is not None:
            for fill in await self._fills_lookup(account_id):
                if fill.order_ref == coid and fill.account_id == account_id:
                    return FoundOrder(fill.order_id, "Filled", "trades")
        return None

    # ------------------------------------------------------------------ live orders / cancel
    async def live_orders(self, account_id: str) -> list[LiveOrder]:
        """This account's orders from ``GET /iserver/account/orders`` (working + this session's).

        The first call of a session is a pre-flight answering ``{"orders": [], "snapshot": false}``:
        it is called again after ``preflight_pause`` seconds (up to 3 calls). Rows of other accounts,
        and rows that do not say whose they are, are never returned.
        """
        await self.transport.ensure_iserver_accounts()
        orders: list[Any] = []
        for attempt in range(_LIVE_ORDERS_ATTEMPTS):
            data = await self.transport.request(
                "GET", "/iserver/account/orders", params={"accountId": account_id}
            )
            if isinstance(data, Mapping):
                if data.get("error"):
                    raise APIError(
                        f"live orders for {account_id}: {data['error']}", path="/iserver/account/orders"
                    )
                orders = list(data.get("orders") or [])
                complete = bool(orders) or data.get("snapshot") is True
            else:
                orders = list(data or [])
                complete = True
            if complete:
                break
            if attempt < _LIVE_ORDERS_ATTEMPTS - 1:
                await self._sleep(self._preflight_pause)
        result: list[LiveOrder] = []
        for row in orders:
            live = parse_live_order(row) if isinstance(row, Mapping) else None
            if live is None:
                logger.warning("live order row without order id or account ignored: %r", row)
            elif live.account_id == account_id.upper():
                result.append(live)
        return result

    async def cancel(self, account_id: str, order_id: str) -> CancelResult:
        """Ask IBKR to cancel one order of ``account_id``. Raises :class:`OrderError` if refused."""
        order_text = str(order_id).strip()
        if not order_text.isdigit():
            raise ConfigurationError(
                f"order id {order_id!r} is not an IBKR order id (digits); -1 ('cancel all') is never sent"
            )
        answer = await self.transport.request(
            "DELETE", f"/iserver/account/{account_id}/order/{order_text}", retry=False
        )
        error = _error_text(answer)
        if error is not None:
            raise OrderError(f"IBKR refused to cancel order {order_text} of {account_id}: {error}")
        message = _text(answer.get("msg")) if isinstance(answer, Mapping) else None
        return CancelResult(
            account_id=account_id, order_id=order_text, accepted=True, message=message, raw=answer
        )

    async def cancel_all(self, account_id: str) -> list[CancelResult]:
        """Cancel every active order of ``account_id`` (and only of that account), one by one."""
        results: list[CancelResult] = []
        for live in await self.live_orders(account_id):
            if live.account_id != account_id.upper() or not live.is_active:
                continue
            try:
                results.append(await self.cancel(account_id, live.order_id))
            except (OrderError, APIError) as exc:
                results.append(
                    CancelResult(
                        account_id=account_id, order_id=live.order_id, accepted=False, message=str(exc)
                    )
                )
        return results
