"""Running a rebalance against IBKR and the ledger, without Prefect.

:func:`gather_inputs` reads what the plan needs (positions, net liquidation value, contract facts,
event-contract pairs, fresh snapshots). :func:`execute_plan` places the plan's orders one at a time:

1. the intent is written to the ledger's ``orders`` table (:meth:`Ledger.record_order`) BEFORE the
   request, under the order's deterministic cOID;
2. the order goes out through ``place`` (by default :meth:`IBKRClient.place_order`; the flow passes
   its ``place_order`` task): prompts are answered per the policy and recorded, "already registered"
   resolves to the existing order, a lost response is looked up by cOID and never resent;
3. the outcome (order id, status, prompts, error) is written back (:meth:`Ledger.update_order`).

The first failure stops the run: this run's still-working orders (matched by the cOIDs and order ids
recorded in this run, never anything else) are cancelled and the cancels recorded, then the error is
raised inside :class:`RebalanceFailed` with the report of what was done. Otherwise the fills are
awaited (paced polling of live orders, ``fill_timeout``), ingested into the ledger, and the positions
read again to report targets against what was achieved.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Protocol

from ibkr_tasks.accounts import validate_account_id
from ibkr_tasks.client.orders import FoundOrder, one_line, resolve_failed_placement
from ibkr_tasks.client.prompts import PromptPolicy
from ibkr_tasks.errors import (
    AccountMismatch,
    IBKRError,
    OrderError,
    OrderRejected,
    OrderStateUnknown,
    RebalanceRefused,
    TransportError,
    UnknownPrompt,
)
from ibkr_tasks.formatting import money, number
from ibkr_tasks.ledger import IngestResult
from ibkr_tasks.models import (
    AccountInfo,
    CancelResult,
    ContractInfo,
    EventContractPair,
    Fill,
    LiveOrder,
    OrderRequest,
    OrderResult,
    ParseResult,
    Position,
    PromptRecord,
    RejectedRow,
    Side,
    Snapshot,
)
from ibkr_tasks.models.multipliers import resolve_multiplier
from ibkr_tasks.rebalance.guards import check_working_orders
from ibkr_tasks.rebalance.params import RebalanceParams
from ibkr_tasks.rebalance.plan import (
    ContractFacts,
    PlanInputs,
    PlannedOrder,
    Quote,
    RebalancePlan,
    quote_from_snapshot,
)

__all__ = [
    "PLANNED",
    "AchievedRow",
    "ExecutionReport",
    "OrderLedger",
    "OrderOutcome",
    "PlaceFn",
    "RebalanceClient",
    "RebalanceFailed",
    "RefusedPrompt",
    "achieved_rows",
    "allow_prompts_hint",
    "cancel_own_orders",
    "execute_plan",
    "gather_inputs",
    "ledger_request",
    "record_plan",
]

logger = logging.getLogger(__name__)

PLANNED = "planned"
ZERO = Decimal(0)
_FILL_LOOKUPS = 3  # trades calls (IBKR allows one per 5 s) while this run's fills are not all in


class RebalanceClient(Protocol):
    """What a rebalance uses of the IBKR client (:class:`~ibkr_tasks.client.api.IBKRClient` is one)."""

    async def find_by_coid(self, account_id: str, coid: str) -> FoundOrder | None: ...

    async def list_accounts(self) -> list[AccountInfo]: ...

    async def positions(self, account_id: str, *, invalidate: bool = False) -> ParseResult[Position]: ...

    async def portfolio_summary(self, account_id: str) -> dict[str, Decimal]: ...

    async def contract_info(self, conid: int | str) -> ContractInfo: ...

    async def event_contract_pair(self, conid: int | str) -> EventContractPair: ...

    async def snapshot(self, conids: Iterable[int | str]) -> list[Snapshot]: ...

    async def live_orders(self, account_id: str) -> list[LiveOrder]: ...

    async def cancel_order(self, account_id: str, order_id: str | int) -> CancelResult: ...

    async def fills(
        self, account_ids: Sequence[str] | str, *, days: int = 1
    ) -> Mapping[str, ParseResult[Fill]]: ...

    async def place_order(
        self, account_id: str, order: OrderRequest, *, coid: str, policy: PromptPolicy | None = None
    ) -> OrderResult: ...


class OrderLedger(Protocol):
    """What a rebalance writes to the ledger (:class:`~ibkr_tasks.ledger.Ledger` is one)."""

    def record_order(self, account_id: str, coid: str, request: Any, run_id: str | None = None) -> object: ...

    def update_order(
        self,
        account_id: str,
        coid: str,
        *,
        order_id: str | None = None,
        status: str | None = None,
        prompts: Iterable[Any] | None = None,
        error: str | None = None,
    ) -> object: ...

    def ingest(
        self, account_id: str, fills: Iterable[Fill], run_id: str, rejected: Iterable[RejectedRow] = ()
    ) -> IngestResult: ...


class PlaceFn(Protocol):
    """How one order is placed: by default the client's ``place_order``; the flow passes one that
    runs its Prefect task (see :func:`ibkr_tasks.tasks.rebalance.placing_with`)."""

    def __call__(
        self, account_id: str, order: OrderRequest, coid: str, policy: PromptPolicy | None
    ) -> Awaitable[OrderResult]: ...


def _client_place(client: RebalanceClient) -> PlaceFn:
    def place(
        account_id: str, order: OrderRequest, coid: str, policy: PromptPolicy | None
    ) -> Awaitable[OrderResult]:
        return client.place_order(account_id, order, coid=coid, policy=policy)

    return place


# ------------------------------------------------------------------------------------------ inputs


def _facts_from_position(pos: Position) -> ContractFacts:
    return ContractFacts(
        conid=pos.conid,
        symbol=pos.symbol,
        multiplier=pos.multiplier,
        currency=pos.currency,
        sec_type=pos.asset_class,
        is_event_contract=pos.is_event_contract,
    )


def _facts_from_info(info: ContractInfo) -> ContractFacts:
    multiplier = resolve_multiplier(
        conid=info.conid,
        sec_type=info.sec_type,
        is_event_contract=info.is_event_contract,
        payload_multiplier=info.multiplier,
    )
    if multiplier is None:
        raise RebalanceRefused(
            f"multiplier of conid {info.conid} ({info.symbol}, {info.sec_type}) is unknown: contract info "
            "did not give one; nothing was sent",
            reason="invalid_target",
        )
    return ContractFacts(
        conid=info.conid,
        symbol=info.symbol,
        multiplier=multiplier,
        currency=info.currency,
        sec_type=info.sec_type,
        is_event_contract=info.is_event_contract,
    )


def _with_pair(facts: ContractFacts, pair: EventContractPair) -> ContractFacts:
    return ContractFacts(
        conid=facts.conid,
        symbol=facts.symbol,
        multiplier=facts.multiplier,
        currency=facts.currency,
        sec_type=facts.sec_type,
        is_event_contract=True,
        pair=pair,
    )


async def gather_inputs(
    client: RebalanceClient, params: RebalanceParams, *, now: Callable[[], datetime] | None = None
) -> tuple[PlanInputs, list[Position]]:
    """Positions, NLV, base currency, contract facts and fresh quotes for ``params``.

    Returns the plan inputs and the positions read (for the report). Raises AccountMismatch when the
    account is not one of the login's.
    """
    acct = params.account_id
    accounts = {a.account_id: a for a in await client.list_accounts()}
    if acct not in accounts:
        raise AccountMismatch(
            f"{acct} is not an account of this IBKR login ({', '.join(sorted(accounts)) or 'none'}); nothing was sent"
        )
    base_currency = accounts[acct].currency
    positions = (await client.positions(acct, invalidate=True)).items
    summary = await client.portfolio_summary(acct)
    nlv = summary.get("netliquidation")
    held = {p.conid: p.position for p in positions if p.position}
    contracts: dict[int, ContractFacts] = {p.conid: _facts_from_position(p) for p in positions}

    wanted: list[int] = list(params.targets)
    event_legs: list[int] = [c for c, s in params.targets.items() if s.side != Side.LONG]
    for order in params.orders or []:
        wanted.append(order.conid)
        if order.side != Side.LONG:
            event_legs.append(order.conid)
    for conid in wanted:
        if conid not in contracts:
            contracts[conid] = _facts_from_info(await client.contract_info(conid))
    # Event contracts: look up the YES/NO pair of every targeted one (and of held ones when
    # liquidating), so netting is planned on the pair and the opposite outcome can be priced.
    event_legs += [c for c in wanted if contracts[c].is_event_contract]
    if params.liquidate_unlisted:
        event_legs += [c for c in held if contracts.get(c) is not None and contracts[c].is_event_contract]
    for conid in dict.fromkeys(event_legs):
        facts = contracts.get(conid)
        if facts is not None and facts.pair is not None:
            continue
        pair = await client.event_contract_pair(conid)
        for leg in (pair.yes_conid, pair.no_conid):
            if leg not in contracts:
                contracts[leg] = _facts_from_info(await client.contract_info(leg))
            contracts[leg] = _with_pair(contracts[leg], pair)

    priced = set(wanted) | (set(held) if params.liquidate_unlisted else set())
    for facts in list(contracts.values()):
        if facts.pair is not None and {facts.pair.yes_conid, facts.pair.no_conid} & priced:
            priced |= {facts.pair.yes_conid, facts.pair.no_conid}
    quotes: dict[int, Quote] = {}
    if priced:
        for snap in await client.snapshot(sorted(priced)):
            quotes[snap.conid] = quote_from_snapshot(snap)
    inputs = PlanInputs(
        account_id=acct,
        net_liquidation=nlv,
        positions=held,
        contracts=contracts,
        quotes=quotes,
        base_currency=base_currency,
        as_of=(now or (lambda: datetime.now(UTC)))(),
    )
    return inputs, positions


# ------------------------------------------------------------------------------------------ ledger


def ledger_request(order: PlannedOrder) -> dict[str, Any]:
    """What the ledger keeps as the order's request: the planned order and the exact IBKR ticket."""
    return {
        "planned": order.as_dict(),
        "ticket": order.to_request().to_ibkr_order(order.account_id, order.coid),
    }


def record_plan(ledger: OrderLedger, plan: RebalancePlan) -> int:
    """Store a dry run's orders in the ledger's ``orders`` table with status ``planned`` (never sent)."""
    for order in plan.orders:
        ledger.record_order(plan.account_id, order.coid, ledger_request(order), run_id=plan.run_id)
        ledger.update_order(plan.account_id, order.coid, status=PLANNED)
    return len(plan.orders)


# ------------------------------------------------------------------------------------------ report


def _fmt(value: Decimal | None) -> str:
    return number(value)


_PROMPT_TEXT = 80  # characters of a prompt's text in the orders table


def prompt_summary(prompt: PromptRecord) -> str:
    """``o163 (confirmed): The following order exceeds the price percentage limit...``: which
    question IBKR asked, how it was answered, and the start of its text on one line."""
    ids = ", ".join(prompt.message_ids) or prompt.reply_id
    text = one_line(" ".join(prompt.messages))
    if len(text) > _PROMPT_TEXT:
        text = text[: _PROMPT_TEXT - 1].rstrip() + "\u2026"
    answer = "confirmed" if prompt.confirmed else "declined"
    return f"{ids} ({answer}): {text}" if text else f"{ids} ({answer})"


def allow_prompts_hint(message_ids: Sequence[str]) -> str:
    """How to let a rebalance confirm these prompts, naming the flow parameters and their values."""
    ids = ", ".join(f'"{mid}"' for mid in message_ids)
    entries = ", ".join(f'"{mid}": {{"allow": true}}' for mid in message_ids)
    return (
        f"To allow it for one run, run again with allow_prompts=[{ids}]; to allow it in every run, set "
        f"{entries} in a copy of ibkr_tasks/data/prompt_policy.json and pass that file's path as prompt_policy"
    )


@dataclass(frozen=True)
class RefusedPrompt:
    """A confirmation question the prompt policy did not allow: answered "no", the order not placed."""

    message_ids: list[str]
    text: str  # IBKR's text, line breaks kept
    reason: str  # the policy's word on each id: unknown, or known and not allowed (and what it means)

    def describe(self) -> str:
        """One line: which question, why refused, IBKR's text (once) and how to allow it."""
        return (
            f"IBKR asked {self.reason}; answered no, the order was NOT placed. IBKR's text: "
            f'"{one_line(self.text)}". {allow_prompts_hint(self.message_ids)}'
        )


@dataclass
class OrderOutcome:
    """What happened to one planned order in this run."""

    coid: str
    conid: int
    symbol: str | None
    side: str
    quantity: Decimal
    order_id: str | None = None
    status: str = "not sent"
    existing: bool = False
    prompts: int = 0
    filled: Decimal | None = None
    error: str | None = None
    avg_price: Decimal | None = None  # volume-weighted price of this run's fills of the order
    currency: str | None = None
    answered: list[str] = field(default_factory=list)  # prompt_summary() of each prompt
    refused_prompt: RefusedPrompt | None = None  # the question that stopped the order, if one did

    def as_dict(self) -> dict[str, Any]:
        return {
            "cOID": self.coid,
            "symbol": self.symbol or "",
            "side": self.side,
            "quantity": number(self.quantity),
            "status": self.status,
            "filled": number(self.filled),
            "avg price": money(self.avg_price, self.currency, missing=""),
            "order id": self.order_id or "",
            "prompts": "; ".join(self.answered) if self.answered else str(self.prompts or ""),
            "conid": self.conid,
            "existing": self.existing,
            "error": self.error or "",
        }

    def book(self, fills: Sequence[Fill]) -> None:
        """Filled quantity and average price from the executions booked under this order's cOID."""
        mine = [f for f in fills if f.order_ref == self.coid and f.side in ("B", "S")]
        if not mine:
            if self.status == "Filled" and self.filled is None:
                self.filled = self.quantity  # IBKR says Filled; the trades answer lags behind
            return
        quantity = sum((f.quantity for f in mine), ZERO)
        self.filled = max(self.filled or ZERO, quantity)  # live orders may know fills trades lack
        if quantity:
            self.avg_price = sum((f.quantity * f.price for f in mine), ZERO) / quantity


@dataclass
class AchievedRow:
    """One target against what the account holds after the run."""

    conid: int
    symbol: str | None
    before: Decimal
    target: Decimal | None
    achieved: Decimal

    @property
    def off_by(self) -> Decimal | None:
        return None if self.target is None else self.achieved - self.target

    def as_dict(self) -> dict[str, Any]:
        txt = _fmt
        return {
            "conid": self.conid,
            "symbol": self.symbol or "",
            "before": txt(self.before),
            "target": txt(self.target),
            "achieved": txt(self.achieved),
            "off by": txt(self.off_by),
        }


@dataclass
class ExecutionReport:
    """Everything an executed rebalance did, for artifacts and the flow's final state."""

    run_id: str
    account_id: str
    orders: list[OrderOutcome] = field(default_factory=list)
    cancelled: list[str] = field(default_factory=list)
    cancel_errors: list[str] = field(default_factory=list)
    fills_ingested: int = 0
    fills_new: int = 0
    achieved: list[AchievedRow] = field(default_factory=list)
    timed_out: bool = False
    error: str | None = None
    fills_missing: list[str] = field(default_factory=list)

    @property
    def placed(self) -> list[OrderOutcome]:
        return [o for o in self.orders if o.order_id is not None]

    def summary(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "account_id": self.account_id,
            "orders": [o.as_dict() for o in self.orders],
            "cancelled": list(self.cancelled),
            "cancel_errors": list(self.cancel_errors),
            "fills_ingested": self.fills_ingested,
            "fills_new": self.fills_new,
            "achieved": [a.as_dict() for a in self.achieved],
            "timed_out": self.timed_out,
            "fills_missing": list(self.fills_missing),
            "error": self.error,
        }


class RebalanceFailed(IBKRError):
    """Execution stopped after a failure; ``report`` says what was placed and what was cancelled."""

    def __init__(self, message: str, *, report: ExecutionReport, cause: BaseException) -> None:
        super().__init__(message)
        self.report = report
        self.cause = cause


def achieved_rows(plan: RebalancePlan, positions: Sequence[Position]) -> list[AchievedRow]:
    """Each plan row's target next to the holding now (event contracts as net exposure)."""
    now = {p.conid: p.position for p in positions}
    rows: list[AchievedRow] = []
    for row in plan.rows:
        achieved = now.get(row.conid, ZERO)
        if row.opposite_conid is not None:
            achieved -= now.get(row.opposite_conid, ZERO)
        rows.append(
            AchievedRow(
                conid=row.conid, symbol=row.symbol, before=row.current, target=row.target, achieved=achieved
            )
        )
    return rows


# ------------------------------------------------------------------------------------------ execute


async def cancel_own_orders(
    client: RebalanceClient, ledger: OrderLedger, report: ExecutionReport, *, reason: str
) -> None:
    """Cancel this run's still-working orders (matched by cOID or order id of this run), and record it."""
    coids = {o.coid for o in report.orders}
    order_ids = {o.order_id for o in report.orders if o.order_id}
    try:
        live = await client.live_orders(report.account_id)
    except IBKRError as exc:
        report.cancel_errors.append(f"could not list live orders to cancel this run's orders: {exc}")
        return
    for order in live:
        ours = order.order_ref in coids or order.order_id in order_ids
        if not ours or not order.is_active or order.account_id != report.account_id:
            continue
        try:
            await client.cancel_order(report.account_id, order.order_id)
        except IBKRError as exc:
            report.cancel_errors.append(f"cancel of order {order.order_id} failed: {exc}")
            continue
        report.cancelled.append(order.order_id)
        coid = (
            order.order_ref
            if order.order_ref in coids
            else next((o.coid for o in report.orders if o.order_id == order.order_id), None)
        )
        if coid is not None:
            await asyncio.to_thread(
                ledger.update_order, report.account_id, coid, status="cancel_requested", error=reason
            )
            for outcome in report.orders:
                if outcome.coid == coid:
                    outcome.status = "cancel_requested"


def _status_of(exc: BaseException) -> str:
    """The ledger status of an order whose placement raised ``exc`` and that was not found at IBKR."""
    if isinstance(exc, UnknownPrompt):
        return "prompt_refused"
    if isinstance(exc, OrderRejected):
        return "rejected"
    if isinstance(exc, OrderStateUnknown) or not isinstance(exc, Exception):
        return "unknown"  # may be at IBKR (a cancelled request too): never resent, looked up next run
    return "error"


def _prompts_of(exc: BaseException) -> list[PromptRecord]:
    return list(exc.prompts) if isinstance(exc, OrderError) else []


async def _place_one(
    client: RebalanceClient,
    ledger: OrderLedger,
    order: PlannedOrder,
    outcome: OrderOutcome,
    place: PlaceFn,
    policy: PromptPolicy | None,
    run_id: str,
) -> None:
    """Record the intent, place the order once, record what happened; raise when it was not placed.

    Whether a failed placement went through anyway is decided by
    :func:`ibkr_tasks.client.orders.resolve_failed_placement`; the order is never sent again here.
    """
    acct = order.account_id
    try:
        await asyncio.to_thread(ledger.record_order, acct, order.coid, ledger_request(order), run_id)
    except Exception as exc:  # e.g. a resumed run whose cOID now carries another request: not sent
        outcome.error = f"{type(exc).__name__}: {exc}"
        raise
    try:
        result = await place(acct, order.to_request(), order.coid, policy)
    except BaseException as exc:
        prompts = _prompts_of(exc)
        outcome.prompts = len(prompts)
        outcome.answered = [prompt_summary(p) for p in prompts]
        dumped = [p.model_dump(mode="json") for p in prompts]
        # a cancelled placement is not looked up (awaiting in a cancelled task is not reliable)
        found = (
            await resolve_failed_placement(client, acct, order.coid, exc)
            if isinstance(exc, Exception)
            else None
        )
        if found is not None:
            outcome.order_id, outcome.status, outcome.existing = (
                found.order_id,
                found.status or "submitted",
                True,
            )
            await asyncio.to_thread(
                ledger.update_order,
                acct,
                order.coid,
                order_id=found.order_id,
                status=outcome.status,
                prompts=dumped,
                error=f"placing reported {type(exc).__name__}: {exc}; the order was found by its cOID "
                f"in {found.source}",
            )
            return
        outcome.status = _status_of(exc)
        outcome.error = f"{type(exc).__name__}: {exc}"
        if isinstance(exc, UnknownPrompt):
            outcome.refused_prompt = RefusedPrompt(
                message_ids=list(exc.message_ids),
                text=exc.text,
                reason=(policy or PromptPolicy.default()).describe(exc.message_ids),
            )
            outcome.error = outcome.refused_prompt.describe()
        elif isinstance(exc, Exception) and not isinstance(exc, OrderError | TransportError):
            outcome.error += (
                "; it may have reached IBKR but is not in live orders or trades under its cOID yet: "
                "run again with the same run_id (the same cOID is never placed twice)"
            )
        await asyncio.to_thread(
            ledger.update_order, acct, order.coid, status=outcome.status, prompts=dumped, error=outcome.error
        )
        raise
    outcome.order_id = result.order_id
    outcome.status = result.status or "submitted"
    outcome.existing = result.existing
    outcome.prompts = len(result.prompts)
    outcome.answered = [prompt_summary(p) for p in result.prompts]
    await asyncio.to_thread(
        ledger.update_order,
        acct,
        order.coid,
        order_id=result.order_id,
        status=outcome.status,
        prompts=[p.model_dump(mode="json") for p in result.prompts],
    )


async def _wait_for_fills(
    client: RebalanceClient,
    report: ExecutionReport,
    params: RebalanceParams,
    sleep: Callable[[float], Awaitable[Any]],
    clock: Callable[[], float],
) -> list[LiveOrder]:
    """Poll live orders (IBKR paces them at 1 per 5 s) until none of this run's is working."""
    coids = {o.coid for o in report.placed}
    if all(o.status == "Filled" for o in report.placed):
        return []
    deadline = clock() + params.fill_timeout
    mine: list[LiveOrder] = []
    while True:
        live = await client.live_orders(report.account_id)
        mine = [o for o in live if o.order_ref in coids]
        by_coid = {o.order_ref: o for o in mine}
        for outcome in report.placed:
            seen = by_coid.get(outcome.coid)
            if seen is not None:
                outcome.status = seen.status or outcome.status
                outcome.filled = seen.filled_quantity
        if not any(o.is_active for o in mine):  # an order no longer listed is not working either
            return mine
        if clock() >= deadline:
            report.timed_out = True
            return mine
        await sleep(min(params.fill_poll_interval, max(deadline - clock(), 0.0)))


def _missing_fills(report: ExecutionReport, fills: Sequence[Fill]) -> list[str]:
    """cOIDs of this run whose filled quantity is not (yet) all in the trades answer."""
    booked: dict[str, Decimal] = {}
    for fill in fills:
        if fill.order_ref and fill.side in ("B", "S"):
            booked[fill.order_ref] = booked.get(fill.order_ref, ZERO) + fill.quantity
    missing = []
    for outcome in report.placed:
        expected = (
            outcome.filled
            if outcome.filled is not None
            else (outcome.quantity if outcome.status == "Filled" else ZERO)
        )
        if booked.get(outcome.coid, ZERO) < expected:
            missing.append(outcome.coid)
    return missing


async def _collect_fills(
    client: RebalanceClient,
    report: ExecutionReport,
    params: RebalanceParams,
    sleep: Callable[[float], Awaitable[Any]],
) -> ParseResult[Fill]:
    """Today's executions of the account; asked again (paced) while this run's fills are not all in.

    IBKR's trades endpoint can lag behind the order status (docs/ibkr-api.md#trades); what is still
    missing after the attempts is reported and picked up by the next reconciliation.
    """
    acct = report.account_id
    fills = (await client.fills([acct], days=1))[acct]
    for _attempt in range(_FILL_LOOKUPS - 1):
        if not _missing_fills(report, fills.items):
            break
        await sleep(params.fill_poll_interval)
        fills = (await client.fills([acct], days=1))[acct]
    report.fills_missing = _missing_fills(report, fills.items)
    return fills


async def execute_plan(
    client: RebalanceClient,
    ledger: OrderLedger,
    plan: RebalancePlan,
    params: RebalanceParams,
    *,
    place: PlaceFn | None = None,
    policy: PromptPolicy | None = None,
    sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> ExecutionReport:
    """Place the plan's orders one at a time, wait for fills, ingest them, report achieved.

    Raises :class:`RebalanceFailed` (after cancelling this run's working orders) when an order cannot
    be placed; the original error is ``exc.cause`` and the report ``exc.report``.
    """
    acct = validate_account_id(plan.account_id)
    report = ExecutionReport(run_id=plan.run_id, account_id=acct)
    report.orders = [
        OrderOutcome(
            coid=o.coid,
            conid=o.conid,
            symbol=o.symbol,
            side=o.side.value,
            quantity=o.quantity,
            currency=o.currency,
        )
        for o in plan.orders
    ]
    if not plan.orders:
        return report
    place_fn: PlaceFn = place or _client_place(client)
    if params.allow_prompts:
        policy = (policy or PromptPolicy.default()).with_allowed(*params.allow_prompts)
    check_working_orders(await client.live_orders(acct), plan, own_coids=[o.coid for o in plan.orders])
    for order, outcome in zip(plan.orders, report.orders, strict=True):
        try:
            await _place_one(client, ledger, order, outcome, place_fn, policy, plan.run_id)
        except Exception as exc:  # any failure stops the run; this run's working orders are cancelled
            report.error = outcome.error or f"{type(exc).__name__}: {exc}"
            await cancel_own_orders(
                client, ledger, report, reason=f"run {plan.run_id} stopped: {report.error}"
            )
            placed = len(report.placed)
            raise RebalanceFailed(
                f"order {outcome.coid} ({outcome.side} {_fmt(outcome.quantity)} {outcome.symbol or outcome.conid}) "
                f"failed: {report.error}. {placed} order(s) of this run had been placed; cancel requested "
                f"for {len(report.cancelled)}"
                + (f"; {len(report.cancel_errors)} cancel error(s)" if report.cancel_errors else ""),
                report=report,
                cause=exc,
            ) from exc
    try:
        await _after_placing(client, ledger, plan, params, report, sleep, clock)
    except Exception as exc:  # orders are out: this run's working ones are cancelled, then it fails
        report.error = f"{type(exc).__name__}: {exc}"
        await cancel_own_orders(client, ledger, report, reason=f"run {plan.run_id} stopped: {report.error}")
        raise RebalanceFailed(
            f"all {len(report.placed)} order(s) were placed, then waiting for fills or booking them failed: "
            f"{report.error}; cancel requested for {len(report.cancelled)} working order(s) of this run",
            report=report,
            cause=exc,
        ) from exc
    return report


async def _after_placing(
    client: RebalanceClient,
    ledger: OrderLedger,
    plan: RebalancePlan,
    params: RebalanceParams,
    report: ExecutionReport,
    sleep: Callable[[float], Awaitable[Any]],
    clock: Callable[[], float],
) -> None:
    """Wait for fills, cancel what did not fill in time, ingest the fills, read the positions again."""
    acct = report.account_id
    final = await _wait_for_fills(client, report, params, sleep, clock)
    for live in final:
        outcome = next((o for o in report.orders if o.coid == live.order_ref), None)
        if outcome is not None and live.status:
            await asyncio.to_thread(ledger.update_order, acct, outcome.coid, status=live.status)
    if report.timed_out:
        await cancel_own_orders(
            client, ledger, report, reason=f"not filled within fill_timeout={params.fill_timeout:g} s"
        )
    fills = await _collect_fills(client, report, params, sleep)
    for outcome in report.placed:
        outcome.book(fills.items)
    ingested = await asyncio.to_thread(ledger.ingest, acct, fills.items, plan.run_id, rejected=fills.rejected)
    report.fills_ingested = ingested.fills_seen
    report.fills_new = ingested.fills_new
    positions = (await client.positions(acct, invalidate=True)).items
    report.achieved = achieved_rows(plan, positions)
