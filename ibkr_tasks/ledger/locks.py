"""Serialising writers of the same account.

PostgreSQL: a transaction-scoped advisory lock per account, taken at the start of every ledger write
transaction; a second run for the same account waits until the first commits or rolls back (so it
then sees the first run's rows instead of inserting duplicates), and different accounts do not wait
for each other. SQLite has one writer at a time anyway; the ledger starts its write transactions with
``BEGIN IMMEDIATE`` (see :mod:`ibkr_tasks.ledger.engine`).
"""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.orm import Session

# First key of the two-key advisory lock: keeps our locks apart from other users of the database.
LOCK_NAMESPACE = 0x1B4B


def lock_account(session: Session, account_id: str) -> None:
    """Hold the account's write lock until the current transaction ends (no-op on SQLite)."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(
            text("SELECT pg_advisory_xact_lock(:namespace, hashtext(:account_id))"),
            {"namespace": LOCK_NAMESPACE, "account_id": account_id},
        )
