"""Account id rules shared by every layer.

Paper accounts are those whose id starts with ``DU``; letters may follow (``DUO873728``,
``DUP656969``), so paper ids must not be validated with ``^DU\\d+$``. Live individual accounts
start with ``U``; FA masters with ``F`` (live) or ``DF`` (paper, a third-party convention).
The API host is the same for paper and live: nothing here changes where requests go.
"""

from __future__ import annotations

import re

from ibkr_tasks.errors import ConfigurationError

# An IBKR account id: letters then digits, optionally a trailing letter (sub-account keys such as
# "DUO873728C" appear in some payloads). Kept permissive on purpose.
_ACCOUNT_ID = re.compile(r"^[A-Z]{1,4}[0-9]{3,12}[A-Z]?$")


def is_paper_account(account_id: str) -> bool:
    """True for paper accounts (``DU...`` and paper FA masters ``DF...``)."""
    return account_id.upper().startswith(("DU", "DF"))


def validate_account_id(account_id: str) -> str:
    """Return the account id upper-cased, or raise ConfigurationError when it cannot be one."""
    value = account_id.strip().upper()
    if not _ACCOUNT_ID.match(value):
        raise ConfigurationError(
            f"{account_id!r} is not an IBKR account id (expected e.g. U1234567, DU1234567 or DUO873728)"
        )
    return value
