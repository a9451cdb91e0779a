"""Result containers shared by every parser: what parsed, and what did not (with the raw row)."""

from __future__ import annotations

import json
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

__all__ = ["ParseResult", "RejectedRow", "is_copy", "reason_of", "sort_out_duplicates"]

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
    """Parsed items plus the rows that were rejected, in payload order.

    ``duplicates`` counts rows that were exact copies of another row of the same answer (same key,
    same content): they are left out of ``items`` and ``rejected``, so that every row received is
    in exactly one of ``items``, ``rejected`` or ``duplicates``. Rows that share a key but differ
    are all in ``rejected`` (``conflicting`` counts them): the answer contradicts itself, so none
    of them is booked.
    """

    items: list[T] = field(default_factory=list)
    rejected: list[RejectedRow] = field(default_factory=list)
    duplicates: int = 0
    conflicting: int = 0


def reason_of(exc: BaseException) -> str:
    """A one-line reason for a rejected row (a model's validation errors as ``field: message``)."""
    if isinstance(exc, ValidationError):
        parts = []
        for error in exc.errors(include_url=False, include_input=False):
            where = ".".join(str(p) for p in error["loc"])
            message = str(error["msg"]).removeprefix("Value error, ")
            parts.append(f"{where}: {message}" if where else message)
        return "; ".join(parts)
    if isinstance(exc, ValueError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


def _content(row: Any) -> str | None:
    """The row's content as canonical JSON text (key order ignored; ``1`` and ``1.0`` differ)."""
    try:
        return json.dumps(row, sort_keys=True, separators=(",", ":"), default=repr)
    except (TypeError, ValueError, RecursionError):
        return None  # cannot be compared: treated as different from every other row


def sort_out_duplicates(
    rows: Iterable[Any], key_of: Callable[[Any], Hashable | None]
) -> tuple[list[Any], dict[int, int], int]:
    """Find rows of one answer that share a key (an execution id, a conid).

    Returns ``(rows, conflicts, duplicates)``: the rows as a list in which every exact copy of an
    earlier row with the same key is replaced by a place-holder (:func:`is_copy`: the caller skips
    it); ``{index: versions}`` for the first row of each distinct content of a key that arrives with
    more than one content (the caller rejects each of them); and how many copies were replaced.
    """
    rows = list(rows)
    groups: dict[Hashable, list[int]] = {}
    for index, row in enumerate(rows):
        key = key_of(row)
        if key is not None:
            groups.setdefault(key, []).append(index)
    conflicts: dict[int, int] = {}
    copies: set[int] = set()
    for indexes in groups.values():
        if len(indexes) < 2:
            continue
        first_of: dict[str | int, int] = {}
        for index in indexes:
            content = _content(rows[index])
            marker: str | int = index if content is None else content
            if marker in first_of:
                copies.add(index)
            else:
                first_of[marker] = index
        if len(first_of) > 1:
            for index in first_of.values():
                conflicts[index] = len(first_of)
    return [row if i not in copies else _COPY for i, row in enumerate(rows)], conflicts, len(copies)


_COPY: Any = object()
"""Stands in (in the list :func:`sort_out_duplicates` returns) for a row that copies an earlier one."""


def is_copy(row: Any) -> bool:
    """True for the place-holder of an exact copy (see :func:`sort_out_duplicates`)."""
    return row is _COPY
