"""The gateway's session: read-only vs brokerage session, preflights, pending reply prompts.

One simulator = one gateway = one IBKR login. ``POST /iserver/auth/ssodh/init`` opens a new brokerage
session (a new *epoch*): preflight flags, snapshot subscriptions, prompt suppressions and pending reply
ids all start over, as they do at IBKR (docs/ibkr-api.md#sessions, #prompts, #market-data).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any


@dataclass
class PendingReply:
    """A reply-required prompt waiting for ``POST /iserver/reply/{id}``."""

    reply_id: str
    account_id: str
    ticket: dict[str, Any]
    quantity: Decimal
    remaining: list[str]  # message ids still to ask after this one
    state: str = "pending"  # pending | used | stale


@dataclass
class Session:
    """Authentication and per-brokerage-session state."""

    authenticated: bool = True  # the read-only session (401 when False)
    brokerage: bool = True  # /iserver bridge (400 "no bridge" when False)
    competing: bool = False
    epoch: int = 1
    requests_since_init: int = 0
    init_at: float = 0.0
    iserver_accounts_done: bool = False
    portfolio_accounts_done: bool = False
    orders_preflight_done: bool = False
    snapshot_fields: dict[int, list[str]] = field(default_factory=dict)
    suppressed: set[str] = field(default_factory=set)
    replies: dict[str, PendingReply] = field(default_factory=dict)
    current_reply: str | None = None
    selected_account: str | None = None
    session_hex: str = ""
    expiries: int = 0

    def open_brokerage(self, now: float) -> None:
        """A successful ssodh/init: a fresh brokerage session."""
        self.authenticated = True
        self.brokerage = True
        self.competing = False
        self.epoch += 1
        self.requests_since_init = 0
        self.init_at = now
        self.iserver_accounts_done = False
        self.orders_preflight_done = False
        self.selected_account = None  # a new brokerage session selects the login's default account
        self.snapshot_fields.clear()
        self.suppressed.clear()
        self.invalidate_reply()

    def expire(self) -> None:
        self.authenticated = False
        self.brokerage = False
        self.expiries += 1
        self.invalidate_reply()

    def invalidate_reply(self) -> None:
        if self.current_reply is not None:
            pending = self.replies.get(self.current_reply)
            if pending is not None and pending.state == "pending":
                pending.state = "stale"
            self.current_reply = None
