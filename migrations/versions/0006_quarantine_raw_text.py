"""Keep quarantined rows exactly: quarantine.raw becomes JSON text (TEXT) instead of a JSON column.

A rejected row may hold what a JSON column refuses or changes: PostgreSQL's JSONB refuses NaN,
Infinity and NUL characters (so one such row failed its account's whole ingest), and SQLite's JSON
column turned a bare number into a float. As text, the row reads back to exactly what was received.
Existing rows keep their content (PostgreSQL writes its JSONB as text; SQLite's values are kept).

Downgrading turns the text back into JSON; on PostgreSQL that fails while the quarantine holds a row
JSONB cannot (NaN, Infinity, NUL): delete those rows first.

Revision ID: 0006_quarantine_raw_text
Revises: 0005_abandoned_runs
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0006_quarantine_raw_text"
down_revision: str | None = "0005_abandoned_runs"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON_DOC = sa.JSON(none_as_null=True).with_variant(postgresql.JSONB(none_as_null=True), "postgresql")


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.alter_column("quarantine", "raw", type_=sa.Text(), postgresql_using="raw::text")
        return
    with op.batch_alter_table("quarantine") as batch_op:
        batch_op.alter_column("raw", type_=sa.Text(), existing_type=sa.JSON(), existing_nullable=True)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.alter_column("quarantine", "raw", type_=postgresql.JSONB(), postgresql_using="raw::jsonb")
        return
    with op.batch_alter_table("quarantine") as batch_op:
        batch_op.alter_column("raw", type_=JSON_DOC, existing_type=sa.Text(), existing_nullable=True)
