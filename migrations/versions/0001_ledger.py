"""Create the ledger tables: accounts, fills, commissions (+ history), position_snapshots,
reconciliation_runs, breaks, orders and quarantine.

Revision ID: 0001_ledger
Revises:
Create Date: 2026-11-25
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from ibkr_tasks.ledger.types import Amount, UTCDateTime

# Column types, spelled once. Amount: NUMERIC(28, 10) on PostgreSQL, exact decimal text on SQLite.
AMOUNT = Amount()
UTC_TIMESTAMP = UTCDateTime()
JSON_DOC = sa.JSON(none_as_null=True).with_variant(postgresql.JSONB(none_as_null=True), "postgresql")
SURROGATE_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

revision: str = "0001_ledger"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "accounts",
        sa.Column("account_id", sa.String(length=32), nullable=False),
        sa.Column("is_paper", sa.Boolean(), nullable=False),
        sa.Column("base_currency", sa.String(length=8), nullable=True),
        sa.Column("description", sa.String(length=256), nullable=True),
        sa.Column("opening_snapshot_at", UTC_TIMESTAMP, nullable=True),
        sa.Column("opening_run_id", sa.String(length=128), nullable=True),
        sa.Column("last_reconciled_at", UTC_TIMESTAMP, nullable=True),
        sa.Column("created_at", UTC_TIMESTAMP, nullable=False),
        sa.PrimaryKeyConstraint("account_id", name=op.f("pk_accounts")),
    )
    op.create_table(
        "quarantine",
        sa.Column("id", SURROGATE_ID, autoincrement=True, nullable=False),
        sa.Column("row_hash", sa.String(length=64), nullable=False),
        sa.Column("account_id", sa.String(length=32), nullable=True),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("key", sa.String(length=128), nullable=True),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("raw", JSON_DOC, nullable=True),
        sa.Column("first_seen_run", sa.String(length=128), nullable=True),
        sa.Column("first_seen_at", UTC_TIMESTAMP, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_quarantine")),
        sa.UniqueConstraint("row_hash", name=op.f("uq_quarantine_row_hash")),
    )
    op.create_index(op.f("ix_quarantine_account_id"), "quarantine", ["account_id"])
    op.create_table(
        "breaks",
        sa.Column("id", SURROGATE_ID, autoincrement=True, nullable=False),
        sa.Column("account_id", sa.String(length=32), nullable=False),
        sa.Column("run_id", sa.String(length=128), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("subject", sa.String(length=128), nullable=False),
        sa.Column("conid", sa.BigInteger(), nullable=True),
        sa.Column("execution_id", sa.String(length=64), nullable=True),
        sa.Column("expected", AMOUNT, nullable=True),
        sa.Column("actual", AMOUNT, nullable=True),
        sa.Column("delta", AMOUNT, nullable=True),
        sa.Column("currency", sa.String(length=8), nullable=True),
        sa.Column("detail", JSON_DOC, nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("detected_at", UTC_TIMESTAMP, nullable=False),
        sa.Column("resolved_at", UTC_TIMESTAMP, nullable=True),
        sa.Column("resolved_run", sa.String(length=128), nullable=True),
        sa.CheckConstraint("status IN ('open', 'resolved', 'superseded')", name=op.f("ck_breaks_status")),
        sa.ForeignKeyConstraint(
            ["account_id"], ["accounts.account_id"], name=op.f("fk_breaks_account_id_accounts")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_breaks")),
        sa.UniqueConstraint(
            "account_id", "run_id", "kind", "subject", name=op.f("uq_breaks_account_id_run_id_kind_subject")
        ),
    )
    op.create_index(op.f("ix_breaks_account_id_status"), "breaks", ["account_id", "status"])
    op.create_table(
        "fills",
        sa.Column("account_id", sa.String(length=32), nullable=False),
        sa.Column("execution_id", sa.String(length=64), nullable=False),
        sa.Column("execution_family", sa.String(length=64), nullable=False),
        sa.Column("revision", sa.Integer(), nullable=False),
        sa.Column("superseded", sa.Boolean(), nullable=False),
        sa.Column("conid", sa.BigInteger(), nullable=False),
        sa.Column("symbol", sa.String(length=64), nullable=True),
        sa.Column("sec_type", sa.String(length=16), nullable=True),
        sa.Column("side", sa.String(length=1), nullable=False),
        sa.Column("quantity", AMOUNT, nullable=False),
        sa.Column("price", AMOUNT, nullable=False),
        sa.Column("multiplier", AMOUNT, nullable=False),
        sa.Column("net_amount", AMOUNT, nullable=True),
        sa.Column("currency", sa.String(length=8), nullable=True),
        sa.Column("trade_time", UTC_TIMESTAMP, nullable=False),
        sa.Column("order_ref", sa.String(length=64), nullable=True),
        sa.Column("order_id", sa.String(length=64), nullable=True),
        sa.Column("exchange", sa.String(length=32), nullable=True),
        sa.Column("is_event_contract", sa.Boolean(), nullable=False),
        sa.Column("source", sa.String(length=32), nullable=False),
        sa.Column("raw", JSON_DOC, nullable=False),
        sa.Column("first_seen_run", sa.String(length=128), nullable=False),
        sa.Column("last_changed_run", sa.String(length=128), nullable=False),
        sa.Column("first_seen_at", UTC_TIMESTAMP, nullable=False),
        sa.Column("last_changed_at", UTC_TIMESTAMP, nullable=False),
        sa.CheckConstraint("side IN ('B', 'S', 'X', 'N')", name=op.f("ck_fills_side")),
        sa.CheckConstraint("revision >= 0", name=op.f("ck_fills_revision")),
        sa.ForeignKeyConstraint(
            ["account_id"], ["accounts.account_id"], name=op.f("fk_fills_account_id_accounts")
        ),
        sa.PrimaryKeyConstraint("account_id", "execution_id", name=op.f("pk_fills")),
    )
    op.create_index(op.f("ix_fills_account_id_conid"), "fills", ["account_id", "conid"])
    op.create_index(op.f("ix_fills_account_id_execution_family"), "fills", ["account_id", "execution_family"])
    op.create_index(op.f("ix_fills_account_id_trade_time"), "fills", ["account_id", "trade_time"])
    op.create_table(
        "orders",
        sa.Column("id", SURROGATE_ID, autoincrement=True, nullable=False),
        sa.Column("account_id", sa.String(length=32), nullable=False),
        sa.Column("coid", sa.String(length=64), nullable=False),
        sa.Column("order_id", sa.String(length=64), nullable=True),
        sa.Column("run_id", sa.String(length=128), nullable=True),
        sa.Column("request", JSON_DOC, nullable=False),
        sa.Column("prompts", JSON_DOC, nullable=False),
        sa.Column("status", sa.String(length=32), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("created_at", UTC_TIMESTAMP, nullable=False),
        sa.Column("updated_at", UTC_TIMESTAMP, nullable=False),
        sa.ForeignKeyConstraint(
            ["account_id"], ["accounts.account_id"], name=op.f("fk_orders_account_id_accounts")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_orders")),
        sa.UniqueConstraint("account_id", "coid", name=op.f("uq_orders_account_id_coid")),
    )
    op.create_index(op.f("ix_orders_order_id"), "orders", ["order_id"])
    op.create_table(
        "position_snapshots",
        sa.Column("id", SURROGATE_ID, autoincrement=True, nullable=False),
        sa.Column("account_id", sa.String(length=32), nullable=False),
        sa.Column("run_id", sa.String(length=128), nullable=False),
        sa.Column("taken_at", UTC_TIMESTAMP, nullable=False),
        sa.Column("conid", sa.BigInteger(), nullable=False),
        sa.Column("position", AMOUNT, nullable=False),
        sa.Column("avg_cost", AMOUNT, nullable=True),
        sa.Column("avg_price", AMOUNT, nullable=True),
        sa.Column("mkt_price", AMOUNT, nullable=True),
        sa.Column("mkt_value", AMOUNT, nullable=True),
        sa.Column("currency", sa.String(length=8), nullable=True),
        sa.Column("multiplier", AMOUNT, nullable=False),
        sa.Column("asset_class", sa.String(length=16), nullable=True),
        sa.Column("symbol", sa.String(length=128), nullable=True),
        sa.Column("is_event_contract", sa.Boolean(), nullable=False),
        sa.Column("raw", JSON_DOC, nullable=False),
        sa.ForeignKeyConstraint(
            ["account_id"], ["accounts.account_id"], name=op.f("fk_position_snapshots_account_id_accounts")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_position_snapshots")),
        sa.UniqueConstraint(
            "account_id", "taken_at", "conid", name=op.f("uq_position_snapshots_account_id_taken_at_conid")
        ),
    )
    op.create_table(
        "reconciliation_runs",
        sa.Column("account_id", sa.String(length=32), nullable=False),
        sa.Column("run_id", sa.String(length=128), nullable=False),
        sa.Column("flow_run_id", sa.String(length=64), nullable=True),
        sa.Column("started_at", UTC_TIMESTAMP, nullable=False),
        sa.Column("finished_at", UTC_TIMESTAMP, nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("fills_new", sa.Integer(), nullable=False),
        sa.Column("fills_updated", sa.Integer(), nullable=False),
        sa.Column("fills_superseded", sa.Integer(), nullable=False),
        sa.Column("commissions_finalised", sa.Integer(), nullable=False),
        sa.Column("commissions_changed", sa.Integer(), nullable=False),
        sa.Column("quarantined", sa.Integer(), nullable=False),
        sa.Column("breaks", sa.Integer(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.CheckConstraint(
            "status IN ('running', 'succeeded', 'failed', 'cancelled')",
            name=op.f("ck_reconciliation_runs_status"),
        ),
        sa.ForeignKeyConstraint(
            ["account_id"], ["accounts.account_id"], name=op.f("fk_reconciliation_runs_account_id_accounts")
        ),
        sa.PrimaryKeyConstraint("account_id", "run_id", name=op.f("pk_reconciliation_runs")),
    )
    op.create_index(op.f("ix_reconciliation_runs_started_at"), "reconciliation_runs", ["started_at"])
    op.create_table(
        "commission_history",
        sa.Column("id", SURROGATE_ID, autoincrement=True, nullable=False),
        sa.Column("account_id", sa.String(length=32), nullable=False),
        sa.Column("execution_id", sa.String(length=64), nullable=False),
        sa.Column("previous_amount", AMOUNT, nullable=True),
        sa.Column("previous_currency", sa.String(length=8), nullable=True),
        sa.Column("previous_status", sa.String(length=16), nullable=False),
        sa.Column("amount", AMOUNT, nullable=True),
        sa.Column("currency", sa.String(length=8), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("source", sa.String(length=32), nullable=False),
        sa.Column("run_id", sa.String(length=128), nullable=False),
        sa.Column("changed_at", UTC_TIMESTAMP, nullable=False),
        sa.ForeignKeyConstraint(
            ["account_id", "execution_id"],
            ["fills.account_id", "fills.execution_id"],
            name=op.f("fk_commission_history_account_id_execution_id_fills"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_commission_history")),
    )
    op.create_index(
        op.f("ix_commission_history_account_id_execution_id"),
        "commission_history",
        ["account_id", "execution_id"],
    )
    op.create_table(
        "commissions",
        sa.Column("account_id", sa.String(length=32), nullable=False),
        sa.Column("execution_id", sa.String(length=64), nullable=False),
        sa.Column("amount", AMOUNT, nullable=True),
        sa.Column("currency", sa.String(length=8), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("source", sa.String(length=32), nullable=False),
        sa.Column("first_seen_run", sa.String(length=128), nullable=False),
        sa.Column("last_changed_run", sa.String(length=128), nullable=False),
        sa.Column("updated_at", UTC_TIMESTAMP, nullable=False),
        sa.CheckConstraint(
            "(amount IS NULL AND status = 'pending') OR (amount IS NOT NULL AND status <> 'pending')",
            name=op.f("ck_commissions_pending_means_null"),
        ),
        sa.CheckConstraint(
            "status IN ('pending', 'provisional', 'final')", name=op.f("ck_commissions_status")
        ),
        sa.ForeignKeyConstraint(
            ["account_id", "execution_id"],
            ["fills.account_id", "fills.execution_id"],
            name=op.f("fk_commissions_account_id_execution_id_fills"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("account_id", "execution_id", name=op.f("pk_commissions")),
    )


def downgrade() -> None:
    op.drop_table("commissions")
    op.drop_index(op.f("ix_commission_history_account_id_execution_id"), table_name="commission_history")
    op.drop_table("commission_history")
    op.drop_index(op.f("ix_reconciliation_runs_started_at"), table_name="reconciliation_runs")
    op.drop_table("reconciliation_runs")
    op.drop_table("position_snapshots")
    op.drop_index(op.f("ix_orders_order_id"), table_name="orders")
    op.drop_table("orders")
    op.drop_index(op.f("ix_fills_account_id_trade_time"), table_name="fills")
    op.drop_index(op.f("ix_fills_account_id_execution_family"), table_name="fills")
    op.drop_index(op.f("ix_fills_account_id_conid"), table_name="fills")
    op.drop_table("fills")
    op.drop_index(op.f("ix_breaks_account_id_status"), table_name="breaks")
    op.drop_table("breaks")
    op.drop_index(op.f("ix_quarantine_account_id"), table_name="quarantine")
    op.drop_table("quarantine")
    op.drop_table("accounts")
