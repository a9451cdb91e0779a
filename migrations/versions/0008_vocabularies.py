"""Status vocabularies the database enforces, and a history of rewritten fills.

- CHECK constraints list the allowed values of ``orders.status`` and of ``commission_history``'s
  ``status``/``previous_status``; those of ``commissions.status`` and ``reconciliation_runs.status``
  lose the values nothing writes (``provisional``, ``cancelled``).
- ``orders.status`` holds this project's words only; IBKR's word (``PreSubmitted``, ``Filled``, ...)
  moves to the new ``orders.ibkr_status``. Existing rows are translated.
- ``fill_history``: what a fill held before a re-ingest rewrote it (IBKR sent other content, or the
  parser now derives other fields from the same payload); ``reconciliation_runs.fills_rederived``
  counts the latter.

Downgrading puts IBKR's words back into ``orders.status`` and drops the history.

Revision ID: 0008_vocabularies
Revises: 0007_flex
Create Date: 2026-12-10
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from ibkr_tasks.ledger.types import UTCDateTime

revision: str = "0008_vocabularies"
down_revision: str | None = "0007_flex"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
JSON_DOC = sa.JSON(none_as_null=True).with_variant(postgresql.JSONB(none_as_null=True), "postgresql")

# The vocabularies as of this revision (ibkr_tasks.models.statuses may grow later; this stays).
COMMISSION = ("pending", "final")
COMMISSION_BEFORE = ("pending", "provisional", "final")
RUN = ("running", "succeeded", "failed", "abandoned")
RUN_BEFORE = ("running", "succeeded", "failed", "cancelled", "abandoned")
ORDER = (
    "intent",
    "planned",
    "submitted",
    "filled",
    "cancel_requested",
    "cancelled",
    "inactive",
    "rejected",
    "prompt_refused",
    "unknown",
    "error",
)
IBKR_ORDER = {
    "inactive": "inactive",
    "pendingsubmit": "submitted",
    "presubmitted": "submitted",
    "submitted": "submitted",
    "apipending": "submitted",
    "pendingcancel": "cancel_requested",
    "cancelled": "cancelled",
    "precancelled": "cancelled",
    "apicancelled": "cancelled",
    "filled": "filled",
    "warnstate": "submitted",
}


def _in(column: str, values: Sequence[str]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


def _replace_check(table: str, column: str, values: Sequence[str], *, old: bool = True) -> None:
    # Batch mode: SQLite cannot alter a constraint in place, so the table is copied (PostgreSQL alters).
    name = f"ck_{table}_{column}"
    with op.batch_alter_table(table) as batch_op:
        if old:
            batch_op.drop_constraint(op.f(name), type_="check")
        batch_op.create_check_constraint(op.f(name), _in(column, values))


def upgrade() -> None:
    op.execute(sa.text("UPDATE commissions SET status = 'final' WHERE status = 'provisional'"))
    _replace_check("commissions", "status", COMMISSION)
    for column in ("status", "previous_status"):
        op.execute(
            sa.text(f"UPDATE commission_history SET {column} = 'final' WHERE {column} = 'provisional'")
        )
    with op.batch_alter_table("commission_history") as batch_op:
        batch_op.create_check_constraint(op.f("ck_commission_history_status"), _in("status", COMMISSION))
        batch_op.create_check_constraint(
            op.f("ck_commission_history_previous_status"), _in("previous_status", COMMISSION)
        )

    op.execute(sa.text("UPDATE reconciliation_runs SET status = 'abandoned' WHERE status = 'cancelled'"))
    with op.batch_alter_table("reconciliation_runs") as batch_op:
        batch_op.add_column(sa.Column("fills_rederived", sa.Integer(), nullable=False, server_default="0"))
        batch_op.drop_constraint(op.f("ck_reconciliation_runs_status"), type_="check")
        batch_op.create_check_constraint(op.f("ck_reconciliation_runs_status"), _in("status", RUN))

    with op.batch_alter_table("orders") as batch_op:
        batch_op.add_column(sa.Column("ibkr_status", sa.String(32), nullable=True))
    # IBKR's words move to ibkr_status; status gets this project's word (unknown for an unknown word).
    squeezed = "lower(replace(replace(status, '_', ''), ' ', ''))"
    cases = " ".join(f"WHEN {squeezed} = '{word}' THEN '{ours}'" for word, ours in IBKR_ORDER.items())
    op.execute(
        sa.text(
            f"UPDATE orders SET ibkr_status = status, status = CASE {cases} ELSE 'unknown' END "
            f"WHERE NOT ({_in('status', ORDER)})"
        )
    )
    _replace_check("orders", "status", ORDER, old=False)

    op.create_table(
        "fill_history",
        sa.Column("id", ID, autoincrement=True, nullable=False),
        sa.Column("account_id", sa.String(length=32), nullable=False),
        sa.Column("execution_id", sa.String(length=64), nullable=False),
        sa.Column("change", sa.String(length=16), nullable=False),
        sa.Column("previous", JSON_DOC, nullable=False),
        sa.Column("previous_hash", sa.String(length=64), nullable=True),
        sa.Column("content_hash", sa.String(length=64), nullable=False),
        sa.Column("parser_version", sa.Integer(), nullable=False),
        sa.Column("run_id", sa.String(length=128), nullable=False),
        sa.Column("changed_at", UTCDateTime(), nullable=False),
        sa.CheckConstraint(_in("change", ("updated", "rederived")), name=op.f("ck_fill_history_change")),
        sa.ForeignKeyConstraint(
            ["account_id", "execution_id"],
            ["fills.account_id", "fills.execution_id"],
            name=op.f("fk_fill_history_account_id_execution_id_fills"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_fill_history")),
    )
    op.create_index(
        op.f("ix_fill_history_account_id_execution_id"), "fill_history", ["account_id", "execution_id"]
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_fill_history_account_id_execution_id"), table_name="fill_history")
    op.drop_table("fill_history")

    with op.batch_alter_table("orders") as batch_op:
        batch_op.drop_constraint(op.f("ck_orders_status"), type_="check")
    op.execute(sa.text("UPDATE orders SET status = ibkr_status WHERE ibkr_status IS NOT NULL"))
    with op.batch_alter_table("orders") as batch_op:
        batch_op.drop_column("ibkr_status")

    with op.batch_alter_table("reconciliation_runs") as batch_op:
        batch_op.drop_constraint(op.f("ck_reconciliation_runs_status"), type_="check")
        batch_op.create_check_constraint(op.f("ck_reconciliation_runs_status"), _in("status", RUN_BEFORE))
        batch_op.drop_column("fills_rederived")

    with op.batch_alter_table("commission_history") as batch_op:
        batch_op.drop_constraint(op.f("ck_commission_history_previous_status"), type_="check")
        batch_op.drop_constraint(op.f("ck_commission_history_status"), type_="check")
    _replace_check("commissions", "status", COMMISSION_BEFORE)
