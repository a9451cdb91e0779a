"""What a reconciliation run counts and what it finds broken, defined once.

:class:`RunCounts` is the set of counts a run stores in ``reconciliation_runs`` (one column each)
and reports (logs, the summary table, events); the ingest's result and the report's per-account
outcome are RunCounts. :class:`CommissionBreak` and :class:`PositionBreak` are the breaks the ledger
finds and the reports show.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from decimal import Decimal

__all__ = ["RUN_COUNTS", "CommissionBreak", "PositionBreak", "RunCounts"]


@dataclass(kw_only=True)
class RunCounts:
    """The counts of one account in one run; each is a column of ``reconciliation_runs``.

    ``fills_rederived`` is part of ``fills_updated``: fills rewritten because this version of the
    parser derives different fields from the same payload. ``breaks`` is what the run found broken;
    a result that holds its breaks counts them (here: none).
    """

    fills_new: int = 0
    fills_updated: int = 0
    fills_rederived: int = 0
    fills_superseded: int = 0
    commissions_finalised: int = 0
    commissions_changed: int = 0
    quarantined: int = 0

    @property
    def breaks(self) -> int:
        return 0

    def counts(self) -> dict[str, int]:
        """``{column: value}`` as ``Ledger.finish_run`` stores them in ``reconciliation_runs``."""
        return {name: getattr(self, name) for name in RUN_COUNTS}

    def add(self, other: RunCounts) -> None:
        """Add ``other``'s counts (not its breaks: those are counted from the breaks held)."""
        for name in _ADDED:
            setattr(self, name, getattr(self, name) + getattr(other, name))

    def labelled(self) -> dict[str, int]:
        """The counts under the names a person reads in a table: ``{"fills new": 2, ...}``."""
        return {name.replace("_", " "): value for name, value in self.counts().items() if name != "breaks"}

    def describe(self) -> str:
        """``fills 2 new, 1 updated (1 re-derived), 0 superseded; commissions 1 finalised, 0 changed;
        0 quarantined``."""
        return (
            f"fills {self.fills_new} new, {self.fills_updated} updated ({self.fills_rederived} re-derived), "
            f"{self.fills_superseded} superseded; commissions {self.commissions_finalised} finalised, "
            f"{self.commissions_changed} changed; {self.quarantined} quarantined"
        )


_ADDED = tuple(f.name for f in fields(RunCounts))
RUN_COUNTS = (*_ADDED, "breaks")
"""The count columns of ``reconciliation_runs``, in order."""


@dataclass(frozen=True)
class CommissionBreak:
    """A commission that changed after it was known: ``expected`` is what the ledger held, ``actual``
    what IBKR says now (None: pending), ``delta = actual - expected``."""

    execution_id: str
    expected: Decimal | None = None
    actual: Decimal | None = None
    currency: str | None = None
    conid: int | None = None

    @property
    def delta(self) -> Decimal | None:
        if self.expected is None or self.actual is None:
            return None
        return self.actual - self.expected


@dataclass(frozen=True, kw_only=True)
class PositionBreak:
    """A position the ledger and the broker disagree on: ``expected`` is the ledger's, ``actual``
    the broker's. ``price``/``currency`` (and ``multiplier``, else the ledger's) are the broker's
    when it holds the instrument, else unknown."""

    conid: int
    expected: Decimal
    actual: Decimal
    symbol: str | None = None
    multiplier: Decimal | None = None
    price: Decimal | None = None
    currency: str | None = None

    @property
    def delta(self) -> Decimal:
        return self.actual - self.expected

    @property
    def value(self) -> Decimal | None:
        """What the difference is worth: ``delta x price x multiplier`` (None without a price)."""
        if self.price is None:
            return None
        return self.delta * self.price * (self.multiplier if self.multiplier is not None else Decimal(1))

    def label(self) -> str:
        return f"{self.symbol} ({self.conid})" if self.symbol else f"conid {self.conid}"
