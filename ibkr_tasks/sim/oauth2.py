"""OAuth 2.0 state of the simulator: the access tokens it issued and the SSO sessions it opened.

The endpoints that issue them and the bearer check are in :mod:`ibkr_tasks.sim.api_oauth2`.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any


@dataclass
class SSOSession:
    """One SSO session: its bearer's expiry and whether ssodh/init opened its brokerage session."""

    number: int
    expires_at: float
    bridged: bool = False


@dataclass
class OAuth2State:
    """Issued tokens and the counters ``/sim/stats`` reports under ``oauth2``."""

    access_tokens: dict[str, float] = field(default_factory=dict)  # token -> expiry (epoch s)
    sessions: dict[str, SSOSession] = field(default_factory=dict)  # bearer -> session
    tokens_issued: int = 0
    sso_sessions: int = 0
    refused: dict[str, int] = field(default_factory=dict)  # "token 400", "sso 401", "api 401", ...
    rng: random.Random = field(default_factory=random.Random)

    def stats(self) -> dict[str, Any]:
        bridged = sum(1 for s in self.sessions.values() if s.bridged)
        return {
            "tokens_issued": self.tokens_issued,
            "sso_sessions": self.sso_sessions,
            "renewals": max(0, self.sso_sessions - 1),
            "sso_sessions_bridged": bridged,
            "refused": dict(sorted(self.refused.items())),
        }


def new_state(seed: int) -> OAuth2State:
    return OAuth2State(rng=random.Random(f"{seed}|oauth2"))
