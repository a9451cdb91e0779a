"""The nightly reconciliation's decisions: which accounts, which trades requests, the per-account
pipeline, the contract-info cache across nights and the run's verdict.

The flow (flows/nightly_reconciliation.py) composes these with the tasks and the reporting; scripts
and benches use the same functions, so they reconcile exactly as the flow does.

Per account, concurrently and inside IBKR's rate limits (:func:`reconcile_account`):

1. its run starts in the ledger (dead earlier runs are closed as abandoned);
2. its fills are asked for: by ``accountId``, or they come from the one trades request that serves an
   FA master's sub-accounts (:class:`SharedFills`, sent once before the accounts start);
3. its positions are fetched, all pages, IBKR's cache invalidated first, once the trades answer that
   covers the account has arrived: so they hold every fill of that answer (see
   :func:`snapshot_not_before`). They do not wait for that answer to be parsed and its contract info
   looked up: the positions of the first accounts are fetched meanwhile, inside IBKR's rate;
   when a login-wide answer held no row for the account although its positions moved since the last
   snapshot, its trades are asked for again by ``accountId``
   (:func:`ibkr_tasks.reconcile.fills_to_recheck`);
4. fills and commissions are ingested (idempotent): as soon as the login-wide answer is parsed when it
   held rows for the account (such an answer is never asked again, so they are booked while the
   positions are fetched), after the self-check otherwise; then the positions are reconciled against
   the ledger, which picks the snapshot's time under the account's lock, not before the newest fill
   (:func:`snapshot_not_before`).

A failure is caught and reported in the account's :class:`~ibkr_tasks.reporting.AccountOutcome`,
never raised: one account does not stop the others.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar

from prefect.states import State
from prefect.utilities.annotations import opaque

from ibkr_tasks.accounts import validate_account_id
from ibkr_tasks.client.background import BackgroundClient
from ibkr_tasks.client.settings import TradesScope
from ibkr_tasks.connect import run_logger
from ibkr_tasks.ledger import IngestResult, Ledger, ReconcileResult
from ibkr_tasks.models import AccountInfo, Fill, ParseResult, Position
from ibkr_tasks.models.statuses import OutcomeStatus, RunStatus
from ibkr_tasks.reconcile import fills_to_recheck
from ibkr_tasks.reporting import AccountOutcome, PositionBreak, Window
from ibkr_tasks.tasks import (
    collect_fills,
    fetch_positions,
    ingest_fills,
    quarantine_rows,
    reconcile_positions,
)
from ibkr_tasks.tasks.runs import start_account_run

__all__ = [
    "AccountSelection",
    "SharedFills",
    "SharedFillsFailed",
    "Verdict",
    "cancel_all",
    "keep_contracts",
    "prefetch_positions",
    "reconcilable_accounts",
    "reconcile_account",
    "reconcile_accounts",
    "remembered_contracts",
    "seed_contracts",
    "select_accounts",
    "shared_trades_accounts",
    "snapshot_not_before",
    "unknown_outcomes",
    "verdict",
]

R = TypeVar("R")
FillsByAccount = Mapping[str, ParseResult[Fill]]


# --------------------------------------------------------------------------- accounts


def reconcilable_accounts(infos: Iterable[AccountInfo]) -> list[str]:
    """The accounts that hold positions: every account of the login but an FA master's own entry."""
    return [a.account_id for a in infos if not (a.has_child_accounts or a.is_multiplex_parent)]


@dataclass(frozen=True)
class AccountSelection:
    """The accounts a run reconciles (``targets``) and the asked-for ids the login does not have."""

    targets: list[str]
    unknown: list[str]


def select_accounts(infos: Sequence[AccountInfo], accounts: Sequence[str] | None) -> AccountSelection:
    """``accounts`` (validated, in the order given) or, when None, every reconcilable account."""
    known = {a.account_id for a in infos}
    wanted = [validate_account_id(a) for a in accounts] if accounts else reconcilable_accounts(infos)
    return AccountSelection(
        targets=[a for a in wanted if a in known], unknown=[a for a in wanted if a not in known]
    )


async def shared_trades_accounts(
    client: BackgroundClient, targets: Sequence[str], scope: TradesScope | None
) -> list[str]:
    """The accounts ONE trades request serves (an FA master's sub-accounts under ``auto``, every
    account under ``login``); every other account asks for its own trades by ``accountId``."""
    requests = await client.trades_requests(list(targets), scope)
    return [a for a in targets if any(r.account_id is None and a in r.accounts for r in requests)]


# --------------------------------------------------------------------------- contract info


async def remembered_contracts(client: BackgroundClient, ledger: Ledger) -> set[int]:
    """Seed the client's contract cache from the ledger (contract info kept on earlier nights: the
    trades answer then looks up only new instruments); the conids it knew."""
    logger = run_logger()
    try:
        known = await asyncio.to_thread(ledger.known_contracts)
    except Exception as exc:  # an optimisation only: without it every instrument is looked up
        logger.warning("stored contract info unavailable (%s: %s); looking all up", type(exc).__name__, exc)
        return set()
    client.contracts.remember(known.values())
    logger.info("contract info of %d instrument(s) known from earlier runs", len(known))
    return set(known)


async def seed_contracts(client: BackgroundClient, ledger: Awaitable[Ledger]) -> set[int]:
    """:func:`remembered_contracts` of ``ledger`` once it is open, with the client's contract lookups
    held until then (``ContractBook.remember_first``): the requests that need no contract info go out
    meanwhile. The lookups are released whatever happens (unknown instruments are then looked up)."""
    seeded = client.contracts.remember_first()
    try:
        try:
            opened = await ledger
        except Exception:  # the run reports the ledger's failure where it awaits it
            return set()
        return await remembered_contracts(client, opened)
    finally:
        seeded.set_result(None)


async def keep_contracts(client: BackgroundClient, ledger: Ledger, known: set[int]) -> set[int]:
    """Store the contract info the client looked up in this run and the ledger does not have
    (``known``), for the next nights; the conids stored (none when storing failed)."""
    learned = [info for conid, info in client.contracts.cached().items() if conid not in known]
    if not learned:
        return set()
    try:
        stored = await asyncio.to_thread(ledger.store_contracts, learned)
    except Exception as exc:
        run_logger().warning("could not keep contract info (%s: %s)", type(exc).__name__, exc)
        return set()
    run_logger().info("kept contract info of %d new instrument(s)", stored)
    return {info.conid for info in learned}


# --------------------------------------------------------------------------- fills


class SharedFillsFailed(RuntimeError):
    """The trades request that serves several accounts failed; each of them reports it."""


@dataclass
class SharedFills:
    """The one trades request that serves several accounts, collected once for all of them.

    :meth:`start` sends it in the background; every account it serves awaits :meth:`result` when its
    own positions are in. A failure is kept (``error``) and reported on each of those accounts.
    """

    accounts: list[str]
    fills: FillsByAccount = field(default_factory=dict)
    error: str | None = None
    quarantined: int = 0
    _done: asyncio.Future[None] | None = None

    def start(
        self,
        client: BackgroundClient,
        ledger: Ledger | Awaitable[Ledger],
        run_id: str,
        days: int,
        scope: TradesScope | None,
    ) -> None:
        """Send the request now; ``ledger`` (or the future of one still opening) takes the rows that
        name no account of ours."""

        async def collect() -> None:
            if not self.accounts or self.error is not None:
                return
            try:
                fills = await collect_fills(client, self.accounts, days=days, scope=scope)
                self.fills = fills
                unattributed = list(getattr(fills, "unattributed", ()))
                if unattributed:  # rows that name no account of ours: kept, never dropped
                    opened = ledger if isinstance(ledger, Ledger) else await ledger
                    self.quarantined = await quarantine_rows(opened, opaque(unattributed), run_id)
            except Exception as exc:
                self.error = f"{type(exc).__name__}: {exc}"
                run_logger().error("collecting fills failed: %s", self.error)

        self._done = asyncio.ensure_future(collect())

    def cancel(self) -> None:
        """Stop collecting (the run is ending early)."""
        if self._done is not None:
            self._done.cancel()

    def _failed(self) -> SharedFillsFailed:
        return SharedFillsFailed(f"collecting fills failed: {self.error}")

    async def result(self) -> FillsByAccount:
        """The fills once collected; raises when the collection failed."""
        if self._done is not None:
            await asyncio.shield(self._done)
        if self.error is not None:
            raise self._failed()
        return self.fills

    async def guard(self, fetch: Awaitable[R]) -> R:
        """``fetch`` (something that waits in the client for the trades answer), unless the collection
        fails first: then it is cancelled and :class:`SharedFillsFailed` raised (nothing more of the
        account is fetched)."""
        if self.error is not None:
            if inspect.iscoroutine(fetch):
                fetch.close()
            raise self._failed()
        running = asyncio.ensure_future(fetch)
        try:
            if self._done is not None and not self._done.done():
                either: set[asyncio.Future[Any]] = {running, self._done}
                await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
            if not running.done() and self.error is not None:
                raise self._failed()
            return await running
        finally:
            if not running.done():
                await cancel_all([running])

    async def wait(self) -> None:
        """Until the collection ended (successfully or not)."""
        if self._done is not None:
            await asyncio.shield(self._done)


async def _own_fills(
    client: BackgroundClient, ledger: Ledger, account_id: str, days: int, run_id: str, outcome: AccountOutcome
) -> FillsByAccount:
    fills = await collect_fills(client, [account_id], days=days, scope="account")
    unattributed = list(getattr(fills, "unattributed", ()))
    if unattributed:  # rows that name no account: kept, never dropped
        outcome.quarantined += await quarantine_rows(ledger, opaque(unattributed), run_id)
    return fills


def snapshot_not_before(fills: Iterable[Fill]) -> datetime | None:
    """The earliest time the account's position snapshot may carry: its newest fill's trade time (a
    snapshot older than a fill it reflects would make the fill look late)."""
    return max((f.trade_time for f in fills), default=None)


# --------------------------------------------------------------------------- per account


def _apply_ingest(outcome: AccountOutcome, result: IngestResult) -> None:
    outcome.add(result)  # the run counts, defined once (models/runs.py)
    outcome.commission_breaks = list(result.commission_breaks)


def _apply_reconcile(outcome: AccountOutcome, result: ReconcileResult, positions: Sequence[Position]) -> None:
    held = {p.conid: p for p in positions}  # the broker's mark price, multiplier and currency
    outcome.position_breaks = []
    for b in result.breaks:
        pos = held.get(b.conid)
        outcome.position_breaks.append(
            PositionBreak(
                conid=b.conid,
                symbol=b.symbol or (pos.symbol if pos else None),
                expected=b.expected,
                actual=b.actual,
                price=pos.mkt_price if pos else None,
                multiplier=pos.multiplier if pos else b.multiplier,
                currency=pos.currency if pos else None,
            )
        )
    outcome.resolved = result.resolved
    outcome.as_of = result.taken_at


async def _result_of(value: R | State[R]) -> R:
    """A task's result, whether it returned it or its (Completed) state."""
    if isinstance(value, State):
        result: R = await value.aresult()
        return result
    return value


def prefetch_positions(
    client: BackgroundClient, shared: SharedFills, slots: asyncio.Semaphore
) -> dict[str, asyncio.Future[ParseResult[Position]]]:
    """Ask for the positions of every account ``shared`` serves, each once the trades answer has
    arrived, inside ``slots``: started as soon as the trades request is sent, so they wait for nothing
    else of the run (the ledger opening, its writes). :func:`reconcile_account` takes each one over;
    :func:`cancel_all` stops what is left when the run ends early."""
    return {
        a: asyncio.ensure_future(_positions_once_answered(client, shared, a, slots)) for a in shared.accounts
    }


async def cancel_all(futures: Iterable[asyncio.Future[Any]]) -> None:
    """Cancel ``futures`` and wait for them (their outcome no longer matters)."""
    pending = list(futures)
    for future in pending:
        future.cancel()
    await asyncio.gather(*pending, return_exceptions=True)


async def _positions_once_answered(
    client: BackgroundClient, shared: SharedFills, account_id: str, slots: asyncio.Semaphore | None
) -> ParseResult[Position]:
    """The account's positions, fetched once the trades answer covering it has arrived."""
    async with slots or contextlib.nullcontext():
        if not hasattr(client, "trades_answered"):  # a client that cannot wait for the answer: all of it
            await shared.result()
            return await fetch_positions(client, account_id)
        # Once the trades request is on its way (starting a task here before would hold up the one
        # that sends it), the positions task starts and waits for the answer in the client, on its
        # own loop: its first request goes out the moment the answer has arrived, however busy this
        # loop is then (every account starting its run in the ledger).
        await shared.guard(client.trades_requested(account_id))
        return await shared.guard(fetch_positions(client, account_id, after_trades=True))


async def _book_fills(
    outcome: AccountOutcome, ledger: Ledger, account_id: str, fills: ParseResult[Fill], run_id: str
) -> None:
    """Ingest the account's fills and commissions (idempotent) and count them in ``outcome``."""
    outcome.fills_seen = len(fills.items)
    outcome.commissions_pending = sum(1 for f in fills.items if f.commission is None)
    # opaque(): Prefect would otherwise walk every field of every fill (and every payload key)
    # twice per task call to look for futures; at 200 fills x 16 accounts that stalls the run.
    ingested = await ingest_fills(
        ledger, account_id, opaque(fills.items), run_id, rejected=opaque(fills.rejected), as_state=True
    )
    _apply_ingest(outcome, await _result_of(ingested))


async def reconcile_account(
    client: BackgroundClient,
    ledger: Ledger,
    account_id: str,
    shared: SharedFills | None,
    run_id: str,
    flow_run_id: str | None,
    days: int,
    slots: asyncio.Semaphore | None = None,
    positions_fetch: asyncio.Future[ParseResult[Position]] | None = None,
) -> AccountOutcome:
    """(positions, fills) -> (self-check) -> ingest -> reconcile for one account (ingest as soon as a
    login-wide answer with rows for it is parsed, see the module's docstring); failures are caught
    and reported, not raised. ``shared``: the trades request that serves this account; None: its
    trades are asked for here, by ``accountId``. ``slots``: held while the account's trades and
    positions are fetched, not while the ledger writes them (writes to one ledger queue up; an account
    waiting for its turn there must not keep another from fetching its positions).
    ``positions_fetch``: the account's positions, already asked for by :func:`prefetch_positions`."""
    logger = run_logger()
    outcome = AccountOutcome(account_id=account_id)
    outcome.last_success = await asyncio.to_thread(ledger.last_reconciled_at, account_id)
    await start_account_run(ledger, account_id, run_id, flow_run_id)  # closes dead runs (abandoned)
    try:
        fills_by_account: FillsByAccount
        booked = False
        if shared is None:
            async with slots or contextlib.nullcontext():
                # Trades first: the account's turn in IBKR's 1 trades request per 5 s is what the run
                # waits for; its positions are fetched while the next account waits for its turn.
                fills_by_account = await _own_fills(client, ledger, account_id, days, run_id, outcome)
                positions = await fetch_positions(client, account_id)
        else:
            fetching = positions_fetch or asyncio.ensure_future(
                _positions_once_answered(client, shared, account_id, slots)
            )
            try:
                fills_by_account = await shared.result()
                early = fills_by_account.get(account_id)
                if early is not None and (early.items or early.rejected):
                    # An answer with rows for the account is never asked again (fills_to_recheck), so
                    # its fills are booked now, while its positions are fetched: the ledger's writes
                    # then spread over the night instead of queueing up behind its last requests.
                    await _book_fills(outcome, ledger, account_id, early, run_id)
                    booked = True
                positions = await fetching
            except BaseException:
                await cancel_all([fetching])
                raise
        outcome.positions = len(positions.items)
        fills = fills_by_account.get(account_id)
        if fills is None:
            raise RuntimeError(f"fills for {account_id} could not be collected")
        if not booked:
            reason = await asyncio.to_thread(
                fills_to_recheck, ledger, account_id, fills_by_account, positions.items
            )
            if reason:
                logger.warning("%s: %s; asking for its trades by account id", account_id, reason)
                own = await collect_fills(client, [account_id], days=days, scope="account")
                fills = own[account_id]
            await _book_fills(outcome, ledger, account_id, fills, run_id)
        if positions.rejected:
            quarantined = await ingest_fills(
                ledger, account_id, [], run_id, rejected=opaque(positions.rejected)
            )
            outcome.quarantined += (await _result_of(quarantined)).quarantined
        reconciled = await reconcile_positions(
            ledger,
            account_id,
            opaque(positions.items),
            run_id,
            not_before=snapshot_not_before(fills.items),
            as_state=True,
        )
        _apply_reconcile(outcome, await _result_of(reconciled), positions.items)
        outcome.status = OutcomeStatus.BREAKS if outcome.breaks else OutcomeStatus.COMPLETED
    except Exception as exc:  # one account's failure must not stop the others
        outcome.status = OutcomeStatus.FAILED
        outcome.error = str(exc) if isinstance(exc, SharedFillsFailed) else f"{type(exc).__name__}: {exc}"
        logger.error("%s: reconciliation failed: %s", account_id, outcome.error)
    run_status = RunStatus.FAILED if outcome.status == OutcomeStatus.FAILED else RunStatus.SUCCEEDED
    await asyncio.to_thread(
        ledger.finish_run, account_id, run_id, run_status, outcome.counts(), error=outcome.error
    )
    return outcome


async def reconcile_accounts(
    targets: Sequence[str],
    one: Callable[[str, asyncio.Semaphore], Awaitable[AccountOutcome]],
    slots: asyncio.Semaphore,
) -> list[AccountOutcome]:
    """``one(account, slots)`` for every target, in the targets' order; ``slots`` (a semaphore of the
    run's ``max_concurrency``) lets that many accounts fetch from IBKR at once (see
    :func:`reconcile_account`)."""
    return list(await asyncio.gather(*(one(a, slots) for a in targets)))


# --------------------------------------------------------------------------- verdict


def unknown_outcomes(unknown: Iterable[str]) -> list[AccountOutcome]:
    """A failed outcome for every asked-for account the login does not have."""
    return [
        AccountOutcome(account_id=a, status=OutcomeStatus.FAILED, error="not an account of this IBKR login")
        for a in unknown
    ]


@dataclass(frozen=True)
class Verdict:
    """How the run ends: ``failed`` or not, and the message its final state carries."""

    failed: bool
    message: str


def verdict(outcomes: Sequence[AccountOutcome], window: Window, *, fail_on_breaks: bool) -> Verdict:
    """Failed when an account failed (or had breaks, with ``fail_on_breaks``), naming them; otherwise
    a message with the breaks, or that there were none."""
    failed = [o.account_id for o in outcomes if o.status == OutcomeStatus.FAILED]
    with_breaks = [o.account_id for o in outcomes if o.breaks]
    problems = []
    if failed:
        problems.append(f"{len(failed)} account(s) failed: {', '.join(failed)}")
    if fail_on_breaks and with_breaks:
        problems.append(f"{len(with_breaks)} account(s) with breaks: {', '.join(with_breaks)}")
    breaks_text = "; ".join(o.headline() for o in outcomes if o.breaks)
    if problems:
        return Verdict(True, "; ".join(problems + ([breaks_text] if breaks_text else [])))
    clean = len(outcomes) - len(with_breaks)
    if with_breaks:
        return Verdict(
            False,
            f"{breaks_text}; {clean} of {len(outcomes)} account(s) without breaks ({window.describe()})",
        )
    return Verdict(False, f"{len(outcomes)} account(s) reconciled, no breaks ({window.describe()})")
