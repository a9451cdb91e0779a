"""IBKR statements in the ledger: cash transactions, statement positions, and what a statement said
about each fill (its tradeID, the date of the statement that confirmed it, cancelled).

``cash_transactions`` is keyed by IBKR's transaction id (``transaction_key``: the ``transactionID``,
or a digest of a row printed without one), ``statement_positions`` by account, date and conid, so
booking a statement twice writes nothing new. Existing fills are neither confirmed nor cancelled.

Revision ID: 0007_flex
Revises: 0006_quarantine_raw_text
Create Date: 2026-12-08
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from ibkr_tasks.ledger.types import Amount, UTCDateTime

revision: str = "0007_flex"
down_revision: str | None = "0006_quarantine_raw_text"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Column types as in 0001: exact decimals, aware UTC timestamps, JSON(B) documents.
ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
AMOUNT = Amount()
UTC_DATETIME = UTCDateTime()
JSON_DOC = sa.JSON(none_as_null=True).with_variant(postgresql.JSONB(none_as_null=True), "postgresql")


def upgrade() -> None:
    with op.batch_alter_table("fills") as batch_op:
        batch_op.add_column(sa.Column("trade_id", sa.String(32), nullable=True))
        batch_op.add_column(sa.Column("statement_date", sa.Date(), nullable=True))
        batch_op.add_column(sa.Column("cancelled", sa.Boolean(), nullable=False, server_default=sa.false()))
        batch_op.add_column(sa.Column("cancelled_at", UTC_DATETIME, nullable=True))
        batch_op.create_index("ix_fills_account_id_trade_id", ["account_id", "trade_id"])

    op.create_table(
        "cash_transactions",
        sa.Column("id", ID, primary_key=True, autoincrement=True),
        sa.Column("account_id", sa.String(32), sa.ForeignKey("accounts.account_id"), nullable=False),
        sa.Column("transaction_key", sa.String(64), nullable=False),
        sa.Column("transaction_id", sa.String(32), nullable=True),
        sa.Column("type", sa.String(64), nullable=False),
        sa.Column("amount", AMOUNT, nullable=False),
        sa.Column("currency", sa.String(8), nullable=False),
        sa.Column("date", sa.Date(), nullable=False),
        sa.Column("occurred_at", UTC_DATETIME, nullable=True),
        sa.Column("report_date", sa.Date(), nullable=True),
        sa.Column("settle_date", sa.Date(), nullable=True),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("conid", sa.BigInteger(), nullable=True),
        sa.Column("symbol", sa.String(128), nullable=True),
        sa.Column("raw", JSON_DOC, nullable=False),
        sa.Column("first_seen_run", sa.String(128), nullable=False),
        sa.Column("last_changed_run", sa.String(128), nullable=False),
        sa.Column("first_seen_at", UTC_DATETIME, nullable=False),
        sa.Column("last_changed_at", UTC_DATETIME, nullable=False),
        sa.UniqueConstraint(
            "account_id", "transaction_key", name="uq_cash_transactions_account_id_transaction_key"
        ),
    )
    op.create_index("ix_cash_transactions_account_id_date", "cash_transactions", ["account_id", "date"])

    op.create_table(
        "statement_positions",
        sa.Column("account_id", sa.String(32), sa.ForeignKey("accounts.account_id"), nullable=False),
        sa.Column("report_date", sa.Date(), nullable=False),
        sa.Column("conid", sa.BigInteger(), nullable=False, autoincrement=False),
        sa.Column("quantity", AMOUNT, nullable=False),
        sa.Column("multiplier", AMOUNT, nullable=True),
        sa.Column("mark_price", AMOUNT, nullable=True),
        sa.Column("position_value", AMOUNT, nullable=True),
        sa.Column("cost_basis_money", AMOUNT, nullable=True),
        sa.Column("currency", sa.String(8), nullable=True),
        sa.Column("symbol", sa.String(128), nullable=True),
        sa.Column("sec_type", sa.String(16), nullable=True),
        sa.Column("raw", JSON_DOC, nullable=False),
        sa.Column("run_id", sa.String(128), nullable=False),
        sa.Column("stored_at", UTC_DATETIME, nullable=False),
        sa.PrimaryKeyConstraint("account_id", "report_date", "conid", name="pk_statement_positions"),
    )


def downgrade() -> None:
    op.drop_table("statement_positions")
    op.drop_index("ix_cash_transactions_account_id_date", table_name="cash_transactions")
    op.drop_table("cash_transactions")
    with op.batch_alter_table("fills") as batch_op:
        batch_op.drop_index("ix_fills_account_id_trade_id")
        batch_op.drop_column("cancelled_at")
        batch_op.drop_column("cancelled")
        batch_op.drop_column("statement_date")
        batch_op.drop_column("trade_id")
