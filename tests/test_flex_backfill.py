"""Backfill: a date range is asked of the Flex Web Service in pieces it accepts (at most 365 days)."""

from __future__ import annotations

from datetime import date, timedelta
from itertools import pairwise

import pytest

from ibkr_tasks.tasks.flex import date_chunks


def test_three_years_are_asked_in_consecutive_pieces_of_at_most_365_days() -> None:
    start, end = date(2023, 1, 1), date(2025, 12, 31)  # 1,096 days
    chunks = date_chunks(start, end)
    assert len(chunks) == 4
    assert chunks[0][0] == start and chunks[-1][1] == end
    for (_, a_end), (b_start, _) in pairwise(chunks):
        assert b_start == a_end + timedelta(days=1)  # no day lost, none asked twice
    assert all((e - s).days + 1 <= 365 for s, e in chunks)
    assert sum((e - s).days + 1 for s, e in chunks) == (end - start).days + 1


def test_one_day_and_exactly_365_days_are_one_request() -> None:
    day = date(2026, 11, 27)
    assert date_chunks(day, day) == [(day, day)]
    assert date_chunks(day, day + timedelta(days=364)) == [(day, day + timedelta(days=364))]
    assert len(date_chunks(day, day + timedelta(days=365))) == 2


def test_a_range_that_ends_before_it_starts_is_refused() -> None:
    with pytest.raises(ValueError, match="before"):
        date_chunks(date(2026, 11, 27), date(2026, 11, 26))
