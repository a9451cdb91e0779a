"""Result containers shared by every parser: what parsed, and what did not (with the raw row)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ConfigDict

__all__ = ["ParseResult", "RejectedRow"]

T = TypeVar("T")


class RejectedRow(BaseModel):
    """A payload row that could not be turned into a model.

    Nothing received is dropped silently: the ledger stores these in its ``quarantine`` table.
    ``kind`` says what the row was meant to be (``"fill"``, ``"position"``, ...); ``account_id`` is
    whose it is when the row says so (``None`` when it does not); ``key`` identifies the row when it
    can (the execution id of a fill, the conid of a position); ``raw`` is the untouched payload row.
    """

    model_config = ConfigDict(frozen=True)

    kind: str
    account_id: str | None = None
    key: str | None = None
    reason: str
    raw: Any = None


@dataclass
class ParseResult(Generic[T]):
    """Parsed items plus the rows that were rejected, in payload order."""

    items: list[T] = field(default_factory=list)
    rejected: list[RejectedRow] = field(default_factory=list)
