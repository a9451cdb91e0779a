"""From targets to orders: plain functions, no Prefect, no HTTP.

Inputs are what a planner needs to know, already fetched (:class:`PlanInputs`): the account's
positions, its net liquidation value, a fresh price per conid and the facts of each contract
(multiplier, currency, event-contract pair). :func:`build_plan` turns :class:`RebalanceParams` into a
:class:`RebalancePlan`: one row per conid (current, target, delta, price, notional, what will be
done) and the orders to send, each with a deterministic cOID (:func:`make_coid`).

Quantities are whole lots, rounded toward zero (never more than the target). Notional is
``quantity x price x multiplier`` (an option at 3.15 with multiplier 100 costs 315 per contract).

Event contracts (ForecastEx) are never sold: IBKR nets a YES holding against a NO purchase
(docs/ibkr-api.md#event-contracts), so a pair is planned as one net exposure ``YES - NO``. To go from
100 YES to 40 YES the plan buys 60 NO; to go from 50 NO to 20 YES it buys 70 YES.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import ROUND_CEILING, ROUND_DOWN, ROUND_FLOOR, Decimal
from typing import Any

from ibkr_tasks.errors import RebalanceRefused
from ibkr_tasks.formatting import money, number
from ibkr_tasks.models import EventContractPair, OrderRequest, OrderSide, OrderType, Side, Snapshot
from ibkr_tasks.rebalance.params import PricingMode, RebalanceParams, TargetSpec

__all__ = [
    "COID_MAX_LENGTH",
    "ContractFacts",
    "PlanInputs",
    "PlanRow",
    "PlannedOrder",
    "Quote",
    "RebalancePlan",
    "build_plan",
    "limit_price",
    "make_coid",
    "plan_from_orders",
    "quote_from_snapshot",
    "round_to_lot",
]

ZERO = Decimal(0)
BPS = Decimal(10000)
DEFAULT_TICK = Decimal("0.01")
# IBKR does not document a cOID length; ibind and TWS examples stay short. 40 characters keeps us
# well inside the ledger column (64) and any plausible gateway limit.
COID_MAX_LENGTH = 40


@dataclass(frozen=True)
class Quote:
    """The price the plan uses for one conid, and how trustworthy it is."""

    conid: int
    price: Decimal | None
    as_of: datetime | None
    prior_close: bool = False
    halted: bool = False


def quote_from_snapshot(snap: Snapshot) -> Quote:
    """Last price, else mark, else the bid/ask midpoint; with the snapshot's time and flags."""
    price = snap.last if snap.last is not None and snap.last > 0 else None
    prior_close = snap.last_is_prior_close if price is not None else False
    if price is None and snap.mark is not None and snap.mark > 0:
        price = snap.mark
    if price is None and snap.bid is not None and snap.ask is not None and snap.bid > 0 and snap.ask > 0:
        price = (snap.bid + snap.ask) / 2
    return Quote(
        conid=snap.conid, price=price, as_of=snap.updated, prior_close=prior_close, halted=snap.halted
    )


@dataclass(frozen=True)
class ContractFacts:
    """What the plan needs to know about a conid (from positions or contract info)."""

    conid: int
    symbol: str | None
    multiplier: Decimal
    currency: str | None = None
    sec_type: str | None = None
    is_event_contract: bool = False
    pair: EventContractPair | None = None

    @property
    def outcome(self) -> Side:
        """``Yes``/``No`` for an event contract leg, ``Long`` otherwise."""
        if self.pair is None:
            return Side.LONG
        return Side.YES if self.conid == self.pair.yes_conid else Side.NO


@dataclass(frozen=True)
class PlanInputs:
    """Everything fetched from IBKR that the plan is computed from."""

    account_id: str
    net_liquidation: Decimal | None
    positions: Mapping[int, Decimal]
    contracts: Mapping[int, ContractFacts]
    quotes: Mapping[int, Quote]
    base_currency: str | None = None
    as_of: datetime = field(default_factory=lambda: datetime.now(UTC))


@dataclass(frozen=True)
class PlannedOrder:
    """One order of the plan. ``price`` is the limit (None for MKT); ``ref_price`` the snapshot price."""

    account_id: str
    conid: int
    symbol: str | None
    side: OrderSide
    quantity: Decimal
    price: Decimal | None
    ref_price: Decimal
    multiplier: Decimal
    order_type: OrderType
    tif: str
    coid: str
    target_conid: int
    is_event_contract: bool = False
    currency: str | None = None
    origin: str = "target"  # target | unlisted (liquidate_unlisted) | explicit (orders computed elsewhere)

    @property
    def notional(self) -> Decimal:
        """``quantity x (limit or snapshot price) x multiplier``."""
        return self.quantity * (self.price if self.price is not None else self.ref_price) * self.multiplier

    def to_request(self) -> OrderRequest:
        """The order for :meth:`IBKRClient.place_order` (the exact conid is resolved: side ``Long``)."""
        return OrderRequest(
            market_id=str(self.conid),
            order_side=self.side,
            size=self.quantity,
            price=self.price,
            order_type=self.order_type,
            tif=self.tif,
        )

    def as_dict(self) -> dict[str, Any]:
        """JSON-safe form (decimals as strings) for the ledger and artifacts."""
        return {
            "account_id": self.account_id,
            "conid": self.conid,
            "symbol": self.symbol,
            "side": self.side.value,
            "quantity": str(self.quantity),
            "price": None if self.price is None else str(self.price),
            "ref_price": str(self.ref_price),
            "multiplier": str(self.multiplier),
            "order_type": self.order_type.value,
            "tif": str(self.tif),
            "coid": self.coid,
            "target_conid": self.target_conid,
            "notional": str(self.notional),
            "origin": self.origin,
        }


@dataclass(frozen=True)
class PlanRow:
    """One line of the plan table: a target (or a held conid) and what the plan does about it."""

    conid: int
    symbol: str | None
    current: Decimal
    target: Decimal | None
    delta: Decimal
    price: Decimal | None
    notional: Decimal
    action: str
    order: PlannedOrder | None = None
    opposite_conid: int | None = None  # event contracts: the other outcome, netted against this one
    price_kind: str | None = None  # "limit" (the order's limit) or "snapshot" (the market price used)
    currency: str | None = None

    @property
    def short_action(self) -> tuple[str, str]:
        """(``buy 25`` / ``kept`` / ``none`` / ``skipped``, the reason) for the table's narrow column."""
        head, sep, reason = self.action.partition(": ")
        return (head, reason) if sep else (self.action, "")

    def as_dict(self) -> dict[str, Any]:
        """The artifact row: what is done and under which cOID first, the long reason last."""
        action, note = self.short_action
        order = self.order
        return {
            "conid": self.conid,
            "symbol": self.symbol or "",
            "action": action,
            "cOID": order.coid if order else "",
            "current": number(self.current),
            "target": number(self.target, missing="(not a target)"),
            "delta": number(self.delta),
            "type": order.order_type.value if order else "",
            "tif": str(order.tif) if order else "",
            "price": number(self.price),
            "price is": self.price_kind or "",
            "notional": money(self.notional, self.currency) if self.notional or order else "",
            "note": note,
        }


@dataclass
class RebalancePlan:
    """The rows, the orders (sells first, then buys) and what the plan was computed from."""

    run_id: str
    account_id: str
    rows: list[PlanRow]
    orders: list[PlannedOrder]
    net_liquidation: Decimal | None
    as_of: datetime
    warnings: list[str] = field(default_factory=list)
    base_currency: str | None = None

    @property
    def total_notional(self) -> Decimal:
        return sum((o.notional for o in self.orders), ZERO)

    def describe(self) -> str:
        """``2 order(s), 12,345.00 USD notional, NLV 2,336,647.47 USD``."""
        cur = self.base_currency
        return (
            f"{len(self.orders)} order(s), {money(self.total_notional, cur)} notional, "
            f"NLV {money(self.net_liquidation, cur)}"
        )

    def table(self) -> list[dict[str, Any]]:
        """Rows for the plan artifact."""
        return [row.as_dict() for row in self.rows]


def _text(value: Decimal) -> str:
    """A quantity in a message: plain and grouped (``1,250``)."""
    return number(value)


def make_coid(run_id: str, account_id: str, conid: int, side: OrderSide | str, quantity: Decimal) -> str:
    """Deterministic cOID: ``rb-<8 hex>-<conid>-<B|S>-<qty>`` (at most :data:`COID_MAX_LENGTH`).

    The hash covers the rebalance run, account, conid, side and quantity, so a retried task sends the
    same cOID (IBKR then answers "already registered" and the client finds the existing order) while
    a different order, run or account never collides. The readable tail is cut when too long; the
    hash still covers everything.
    """
    letter = "B" if str(getattr(side, "value", side)).upper().startswith("B") else "S"
    qty = number(quantity, group=False)  # machine text: never grouped; unchanged since the first cOID
    digest = hashlib.sha256(f"{run_id}|{account_id.upper()}|{conid}|{letter}|{qty}".encode()).hexdigest()[:8]
    return f"rb-{digest}-{conid}-{letter}-{qty}"[:COID_MAX_LENGTH]


def round_to_lot(quantity: Decimal, lot: Decimal = Decimal(1)) -> Decimal:
    """Whole lots toward zero: 10.7 -> 10, -10.7 -> -10; lot 100: 250 -> 200."""
    lots = (quantity / lot).to_integral_value(rounding=ROUND_DOWN)
    return (lots * lot).normalize() if lots else ZERO


def limit_price(ref: Decimal, side: OrderSide, offset_bps: Decimal, tick: Decimal = DEFAULT_TICK) -> Decimal:
    """The limit: ``ref`` moved ``offset_bps`` toward the other side, on the tick grid.

    A buy rounds down and a sell rounds up, so rounding never makes an order more aggressive than
    the offset asked for.
    """
    if side == OrderSide.BUY:
        raw = ref * (1 + offset_bps / BPS)
        price = (raw / tick).to_integral_value(rounding=ROUND_FLOOR) * tick
    else:
        raw = ref * (1 - offset_bps / BPS)
        price = (raw / tick).to_integral_value(rounding=ROUND_CEILING) * tick
    if price <= 0:
        price = tick
    return price.normalize() if price == price.to_integral_value() else price


def _quote(inputs: PlanInputs, conid: int, params: RebalanceParams, what: str) -> Decimal:
    """The price of ``conid``, or RebalanceRefused (missing, stale, halted, yesterday's close)."""
    quote = inputs.quotes.get(conid)
    if quote is None or quote.price is None:
        raise RebalanceRefused(
            f"no price for conid {conid} ({what}): the snapshot returned none. Check market data "
            "permissions for it, or retry when it trades; nothing was sent",
            reason="missing_price",
        )
    if quote.halted:
        raise RebalanceRefused(f"conid {conid} ({what}) is halted; nothing was sent", reason="stale_price")
    if quote.prior_close and not params.allow_prior_close:
        raise RebalanceRefused(
            f"the price of conid {conid} ({what}) is the prior close (market closed). Run during trading "
            "hours, or pass allow_prior_close=true to price from it; nothing was sent",
            reason="stale_price",
        )
    if quote.as_of is None:
        raise RebalanceRefused(
            f"the price of conid {conid} ({what}) has no timestamp, so its age is unknown; nothing was sent",
            reason="stale_price",
        )
    age = (inputs.as_of - quote.as_of).total_seconds()
    max_age = params.price_max_age
    if age > max_age:
        raise RebalanceRefused(
            f"the price of conid {conid} ({what}) is {age:.0f} s old, more than price_max_age={max_age:g} s; "
            "nothing was sent",
            reason="stale_price",
        )
    return quote.price


def _facts(inputs: PlanInputs, conid: int) -> ContractFacts:
    facts = inputs.contracts.get(conid)
    if facts is None:
        raise RebalanceRefused(
            f"no contract details for conid {conid}: cannot know its multiplier; nothing was sent",
            reason="invalid_target",
        )
    return facts


@dataclass
class _Draft:
    """An intended trade before pricing: trade ``quantity`` of ``conid`` on ``side``."""

    row_conid: int
    symbol: str | None
    current: Decimal
    target: Decimal | None
    delta: Decimal
    trade_conid: int | None
    side: OrderSide | None
    quantity: Decimal
    action: str
    tick: Decimal | None = None
    origin: str = "target"
    opposite: int | None = None


class _Planner:
    def __init__(self, params: RebalanceParams, inputs: PlanInputs, run_id: str) -> None:
        self.params = params
        self.inputs = inputs
        self.run_id = run_id
        self.warnings: list[str] = []

    def held(self, conid: int) -> Decimal:
        return Decimal(self.inputs.positions.get(conid, ZERO))

    def target_quantity(self, spec: TargetSpec, facts: ContractFacts, price_conid: int) -> Decimal:
        if spec.quantity is not None:
            return round_to_lot(spec.quantity, spec.lot_size)
        assert spec.weight is not None
        nlv = self.inputs.net_liquidation
        if nlv is None or nlv <= 0:
            raise RebalanceRefused(
                f"net liquidation value of {self.inputs.account_id} is {nlv}: weights cannot be turned into "
                "quantities; use quantity targets",
                reason="invalid_target",
            )
        self.check_currency(facts, "a weight target")
        price = _quote(self.inputs, price_conid, self.params, "weight target")
        units = spec.weight * nlv / (price * facts.multiplier)
        quantity = round_to_lot(units, spec.lot_size)
        if spec.weight > 0 and quantity == 0:
            one = price * facts.multiplier * spec.lot_size
            self.warnings.append(
                f"target {spec.conid} ({facts.symbol}): weight {_text(spec.weight)} of NLV {money(nlv, self.inputs.base_currency)} "
                f"is less than one lot ({money(one, facts.currency)}): target 0"
            )
        return quantity

    def check_currency(self, facts: ContractFacts, what: str) -> None:
        base = self.inputs.base_currency
        if base and facts.currency and facts.currency.upper() != base.upper():
            raise RebalanceRefused(
                f"conid {facts.conid} ({facts.symbol}) trades in {facts.currency}, the account's base currency "
                f"is {base}: {what} and the notional limits would need an FX rate, which this planner does "
                "not apply. Leave it out of the targets",
                reason="currency",
            )

    def plain(self, spec: TargetSpec | None, conid: int) -> _Draft:
        facts = _facts(self.inputs, conid)
        current = self.held(conid)
        target = ZERO if spec is None else self.target_quantity(spec, facts, conid)
        delta = target - current
        trade = round_to_lot(delta, spec.lot_size if spec else Decimal(1))  # whole lots, toward zero
        side = OrderSide.BUY if trade > 0 else OrderSide.SELL
        return _Draft(
            row_conid=conid,
            symbol=facts.symbol,
            current=current,
            target=target,
            delta=delta,
            trade_conid=conid if trade else None,
            side=side if trade else None,
            quantity=abs(trade),
            action="" if trade or not delta else "none: less than one lot from the target",
            tick=spec.tick_size if spec else None,
        )

    def event(self, spec: TargetSpec | None, conid: int, outcome: Side) -> _Draft:
        facts = _facts(self.inputs, conid)
        pair = facts.pair
        if pair is None:
            raise RebalanceRefused(
                f"conid {conid} is an event contract but its YES/NO pair is unknown; nothing was sent",
                reason="invalid_target",
            )
        leg = pair.yes_conid if outcome == Side.YES else pair.no_conid
        other = pair.no_conid if outcome == Side.YES else pair.yes_conid
        leg_facts = self.inputs.contracts.get(leg, facts)
        current = self.held(leg) - self.held(other)  # net exposure in this outcome's terms
        target = ZERO if spec is None else self.target_quantity(spec, leg_facts, leg)
        delta = target - current
        units = round_to_lot(delta, spec.lot_size if spec else Decimal(1))  # whole lots, toward zero
        trade = leg if units > 0 else other  # never sell: buy the opposite outcome to reduce
        return _Draft(
            row_conid=leg,
            symbol=_event_symbol(leg_facts, outcome),
            current=current,
            target=target,
            delta=delta,
            trade_conid=trade if units else None,
            side=OrderSide.BUY if units else None,
            quantity=abs(units),
            action="" if units or not delta else "none: less than one lot from the target",
            tick=spec.tick_size if spec else None,
            opposite=other,
        )

    def drafts(self) -> list[_Draft]:
        drafts: list[_Draft] = []
        covered: set[int] = set()
        for conid, spec in self.params.targets.items():
            facts = _facts(self.inputs, conid)
            if facts.is_event_contract or spec.side != Side.LONG:
                outcome = spec.side if spec.side != Side.LONG else facts.outcome
                if facts.pair is None:
                    raise RebalanceRefused(
                        f"target {conid} is an event contract ({spec.side.value}) without a known YES/NO pair",
                        reason="invalid_target",
                    )
                legs = {facts.pair.yes_conid, facts.pair.no_conid}
                if legs & covered:
                    raise RebalanceRefused(
                        f"event contract {facts.pair.yes_conid}/{facts.pair.no_conid} is targeted twice "
                        "(YES and NO of one strike net against each other): give one target per strike",
                        reason="invalid_target",
                    )
                covered |= legs
                drafts.append(self.event(spec, conid, outcome))
            else:
                covered.add(conid)
                drafts.append(self.plain(spec, conid))
        for conid, quantity in sorted(self.inputs.positions.items()):
            if conid in covered or not quantity:
                continue
            held = self.inputs.contracts.get(conid)  # a position not targeted
            if not self.params.liquidate_unlisted:
                drafts.append(
                    _Draft(
                        row_conid=conid,
                        symbol=held.symbol if held else None,
                        current=Decimal(quantity),
                        target=None,
                        delta=ZERO,
                        trade_conid=None,
                        side=None,
                        quantity=ZERO,
                        action="kept: not in targets (liquidate_unlisted=false)",
                    )
                )
                covered.add(conid)
                continue
            if held is not None and held.is_event_contract and held.pair is not None:
                covered |= {held.pair.yes_conid, held.pair.no_conid}
                draft = self.event(None, conid, held.outcome)
            else:
                covered.add(conid)
                draft = self.plain(None, conid)
            draft.origin = "unlisted"
            drafts.append(draft)
        return drafts

    def price(self, draft: _Draft) -> PlanRow:
        if draft.trade_conid is None or draft.side is None:
            return PlanRow(
                conid=draft.row_conid,
                symbol=draft.symbol,
                current=draft.current,
                target=draft.target,
                delta=draft.delta,
                price=None,
                notional=ZERO,
                action=draft.action or "none: at target",
                opposite_conid=draft.opposite,
            )
        facts = _facts(self.inputs, draft.trade_conid)
        self.check_currency(facts, "an order")
        ref = _quote(self.inputs, draft.trade_conid, self.params, "order")
        p = self.params
        if p.pricing == PricingMode.MARKET:
            order_type, limit = OrderType.MARKET, None
        else:
            order_type = OrderType.LIMIT
            limit = limit_price(ref, draft.side, p.limit_offset_bps, draft.tick or DEFAULT_TICK)
        order = PlannedOrder(
            account_id=self.inputs.account_id,
            conid=draft.trade_conid,
            symbol=_event_symbol(facts, facts.outcome) if facts.pair is not None else facts.symbol,
            side=draft.side,
            quantity=draft.quantity,
            price=limit,
            ref_price=ref,
            multiplier=facts.multiplier,
            order_type=order_type,
            tif=p.tif.value,
            coid=make_coid(
                self.run_id, self.inputs.account_id, draft.trade_conid, draft.side, draft.quantity
            ),
            target_conid=draft.row_conid,
            is_event_contract=facts.is_event_contract,
            currency=facts.currency,
            origin=draft.origin,
        )
        notional = order.notional
        if notional < p.min_trade_value:
            return PlanRow(
                conid=draft.row_conid,
                symbol=draft.symbol,
                current=draft.current,
                target=draft.target,
                delta=draft.delta,
                price=limit if limit is not None else ref,
                notional=notional,
                action=f"skipped: notional {money(notional, facts.currency)} below min_trade_value "
                f"{money(p.min_trade_value, facts.currency)}",
                opposite_conid=draft.opposite,
                price_kind="limit" if limit is not None else "snapshot",
                currency=facts.currency,
            )
        verb = "buy" if draft.side == OrderSide.BUY else "sell"
        what = f"{verb} {_text(draft.quantity)}"
        if draft.trade_conid != draft.row_conid:
            what += f" of {draft.trade_conid} ({order.symbol or 'opposite outcome'})"
        return PlanRow(
            conid=draft.row_conid,
            symbol=draft.symbol,
            current=draft.current,
            target=draft.target,
            delta=draft.delta,
            price=limit if limit is not None else ref,
            notional=notional,
            action=what,
            order=order,
            opposite_conid=draft.opposite,
            price_kind="limit" if limit is not None else "snapshot",
            currency=facts.currency,
        )


def _event_symbol(facts: ContractFacts, outcome: Side) -> str:
    base = facts.symbol or str(facts.conid)
    tag = outcome.value.upper()
    return base if base.upper().endswith(tag) else f"{base} {tag}"


def _order_key(order: PlannedOrder) -> tuple[int, int]:
    return (0 if order.side == OrderSide.SELL else 1, order.conid)


def build_plan(params: RebalanceParams, inputs: PlanInputs, run_id: str) -> RebalancePlan:
    """Targets -> rows and orders. Raises :class:`RebalanceRefused` when a price is missing or stale,
    a contract is unknown, or a target cannot be expressed; the limit/scope guards run afterwards
    (:func:`ibkr_tasks.rebalance.guards.check_plan`)."""
    planner = _Planner(params, inputs, run_id)
    rows = [planner.price(draft) for draft in planner.drafts()]
    orders = sorted((r.order for r in rows if r.order is not None), key=_order_key)
    return RebalancePlan(
        run_id=run_id,
        account_id=inputs.account_id,
        rows=rows,
        orders=orders,
        net_liquidation=inputs.net_liquidation,
        as_of=inputs.as_of,
        warnings=planner.warnings,
        base_currency=inputs.base_currency,
    )


def plan_from_orders(
    params: RebalanceParams, inputs: PlanInputs, run_id: str, orders: Sequence[OrderRequest]
) -> RebalancePlan:
    """A plan from explicit (Horizon-style) orders computed elsewhere.

    Each order's conid must be resolved already (``Yes``/``No`` orders: the caller looks the pair up
    and passes ``inputs.contracts`` with it). Market orders are valued at the snapshot price; limit
    orders at their own price.
    """
    rows: list[PlanRow] = []
    planned: list[PlannedOrder] = []
    for request in orders:
        conid = request.conid
        facts = _facts(inputs, conid)
        if request.side != Side.LONG:
            if facts.pair is None:
                raise RebalanceRefused(
                    f"order on {conid} is a {request.side.value} order but the event pair is unknown",
                    reason="invalid_target",
                )
            conid = request.resolve_conid(facts.pair)
            facts = _facts(inputs, conid)
        if request.order_type == OrderType.MARKET or request.price is None:
            ref = _quote(inputs, conid, params, "explicit order")
        else:
            ref = request.price
        order = PlannedOrder(
            account_id=inputs.account_id,
            conid=conid,
            symbol=facts.symbol,
            side=request.order_side,
            quantity=request.size,
            price=request.price,
            ref_price=ref,
            multiplier=facts.multiplier,
            order_type=request.order_type,
            tif=request.tif.value,
            coid=make_coid(run_id, inputs.account_id, conid, request.order_side, request.size),
            target_conid=conid,
            is_event_contract=facts.is_event_contract,
            currency=facts.currency,
            origin="explicit",
        )
        current = Decimal(inputs.positions.get(conid, ZERO))
        signed = request.size if request.order_side == OrderSide.BUY else -request.size
        planned.append(order)
        rows.append(
            PlanRow(
                conid=conid,
                symbol=facts.symbol,
                current=current,
                target=current + signed,
                delta=signed,
                price=request.price if request.price is not None else ref,
                notional=order.notional,
                action=f"{request.order_side.value.lower()} {_text(request.size)} (explicit order)",
                order=order,
                price_kind="limit" if request.price is not None else "snapshot",
                currency=facts.currency,
            )
        )
    coids = [o.coid for o in planned]
    if len(set(coids)) != len(coids):
        raise RebalanceRefused(
            "two explicit orders are identical (same conid, side and size): they would share one cOID; "
            "merge them into one order",
            reason="invalid_target",
        )
    return RebalancePlan(
        run_id=run_id,
        account_id=inputs.account_id,
        rows=rows,
        orders=planned,
        net_liquidation=inputs.net_liquidation,
        as_of=inputs.as_of,
        base_currency=inputs.base_currency,
    )
