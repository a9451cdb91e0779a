"""Add the contracts table: contract info kept across runs, so each night looks up only new instruments.

Revision ID: 0004_contracts
Revises: 0003_fill_content_hash
Create Date: 2026-11-25
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from ibkr_tasks.ledger.types import Amount, UTCDateTime

JSON_DOC = sa.JSON(none_as_null=True).with_variant(postgresql.JSONB(none_as_null=True), "postgresql")

revision: str = "0004_contracts"
down_revision: str | None = "0003_fill_content_hash"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "contracts",
        sa.Column("conid", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("symbol", sa.String(length=128), nullable=True),
        sa.Column("sec_type", sa.String(length=16), nullable=True),
        sa.Column("currency", sa.String(length=8), nullable=True),
        sa.Column("multiplier", Amount(), nullable=True),
        sa.Column("is_event_contract", sa.Boolean(), nullable=False),
        sa.Column("raw", JSON_DOC, nullable=False),
        sa.Column("fetched_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("conid", name=op.f("pk_contracts")),
    )


def downgrade() -> None:
    op.drop_table("contracts")
