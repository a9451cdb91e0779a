"""Add the quotes table (market-data snapshots stored by the market-data flow).

Revision ID: 0002_quotes
Revises: 0001_ledger
Create Date: 2026-11-25
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from ibkr_tasks.ledger.types import Amount, UTCDateTime

AMOUNT = Amount()
UTC_TIMESTAMP = UTCDateTime()
JSON_DOC = sa.JSON(none_as_null=True).with_variant(postgresql.JSONB(none_as_null=True), "postgresql")
SURROGATE_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

revision: str = "0002_quotes"
down_revision: str | None = "0001_ledger"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_PRICES = (
    "last",
    "bid",
    "ask",
    "bid_size",
    "ask_size",
    "last_size",
    "volume",
    "high",
    "low",
    "open",
    "close",
    "prior_close",
    "mark",
    "change",
    "change_pct",
)


def upgrade() -> None:
    columns = [
        sa.Column("id", SURROGATE_ID, autoincrement=True, nullable=False),
        sa.Column("run_id", sa.String(length=128), nullable=True),
        sa.Column("conid", sa.BigInteger(), nullable=False),
        sa.Column("symbol", sa.String(length=128), nullable=True),
        sa.Column("received_at", UTC_TIMESTAMP, nullable=False),
        sa.Column("updated", UTC_TIMESTAMP, nullable=True),
    ]
    for name in _PRICES[:1]:
        columns.append(sa.Column(name, AMOUNT, nullable=True))
    columns += [
        sa.Column("last_is_prior_close", sa.Boolean(), nullable=False),
        sa.Column("halted", sa.Boolean(), nullable=False),
    ]
    for name in _PRICES[1:]:
        columns.append(sa.Column(name, AMOUNT, nullable=True))
    columns += [
        sa.Column("availability", sa.String(length=16), nullable=True),
        sa.Column("raw", JSON_DOC, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_quotes")),
    ]
    op.create_table("quotes", *columns)
    op.create_index(op.f("ix_quotes_conid_received_at"), "quotes", ["conid", "received_at"])


def downgrade() -> None:
    op.drop_index(op.f("ix_quotes_conid_received_at"), table_name="quotes")
    op.drop_table("quotes")
