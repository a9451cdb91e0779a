"""Add fills.content_hash: a digest of each fill's content, so a re-ingest reads one short column.

Existing rows get NULL, which the ingest reads as "changed": the next ingest of such a fill rewrites
it once (and counts it as updated) and stores its digest.

Revision ID: 0003_fill_content_hash
Revises: 0002_quotes
Create Date: 2026-11-25
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003_fill_content_hash"
down_revision: str | None = "0002_quotes"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("fills", sa.Column("content_hash", sa.String(length=64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("fills") as batch_op:
        batch_op.drop_column("content_hash")
