"""Add the run status ``abandoned``: a run that can no longer be running was closed by a later one.

A run killed mid-way (``kill -9``, a lost machine) never records its end. The next run of the
account closes it as ``abandoned``, and its positions snapshot no longer counts as a reconciliation.
Downgrading turns ``abandoned`` rows into ``failed`` ones (the older schema knows no other end).

Revision ID: 0005_abandoned_runs
Revises: 0004_contracts
Create Date: 2026-11-26
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005_abandoned_runs"
down_revision: str | None = "0004_contracts"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_CONSTRAINT = "ck_reconciliation_runs_status"
_BEFORE = ("running", "succeeded", "failed", "cancelled")
_AFTER = (*_BEFORE, "abandoned")


def _in(values: tuple[str, ...]) -> str:
    return f"status IN ({', '.join(repr(v) for v in values)})"


def _replace_status_check(values: tuple[str, ...]) -> None:
    # Batch mode: SQLite cannot alter a constraint in place, so the table is copied (PostgreSQL alters).
    with op.batch_alter_table("reconciliation_runs") as batch_op:
        batch_op.drop_constraint(op.f(_CONSTRAINT), type_="check")
        batch_op.create_check_constraint(op.f(_CONSTRAINT), _in(values))


def upgrade() -> None:
    _replace_status_check(_AFTER)


def downgrade() -> None:
    op.execute(sa.text("UPDATE reconciliation_runs SET status = 'failed' WHERE status = 'abandoned'"))
    _replace_status_check(_BEFORE)
