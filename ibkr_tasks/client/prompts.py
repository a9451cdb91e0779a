"""Which order confirmation prompts may be answered "yes" automatically.

IBKR answers an order with questions (``messageIds`` such as ``o163``, ``o354``) that must be confirmed
with ``POST /iserver/reply/{id}`` before the order is transmitted (docs/ibkr-api.md#prompts). Blindly answering
"yes" to everything is how an unattended client ends up with an order distributed over several FA
accounts or priced by an algorithm it never chose. The policy is a data file
(``ibkr_tasks/data/prompt_policy.json``) that lists known ids and whether each is allowed; anything
unknown fails closed.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from ibkr_tasks.errors import ConfigurationError

__all__ = ["PromptPolicy"]


@dataclass(frozen=True)
class PromptPolicy:
    """A set of allowed and known prompt message ids (``allowed`` is a subset of ``known``)."""

    allowed: frozenset[str]
    known: frozenset[str] = field(default_factory=frozenset)
    meanings: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def default(cls) -> PromptPolicy:
        """The policy shipped in ``ibkr_tasks/data/prompt_policy.json``."""
        text = resources.files("ibkr_tasks").joinpath("data", "prompt_policy.json").read_text("utf-8")
        return cls.from_json(text, source="ibkr_tasks/data/prompt_policy.json")

    @classmethod
    def load(cls, path: str | Path) -> PromptPolicy:
        """Read a policy file with the same layout as the shipped one."""
        return cls.from_json(Path(path).read_text("utf-8"), source=str(path))

    @classmethod
    def from_json(cls, text: str, *, source: str = "<json>") -> PromptPolicy:
        try:
            data = json.loads(text)
            prompts = data["prompts"]
            allowed = {mid for mid, entry in prompts.items() if entry.get("allow") is True}
            meanings = {mid: str(entry.get("meaning", "")) for mid, entry in prompts.items()}
        except (ValueError, KeyError, AttributeError, TypeError) as exc:
            raise ConfigurationError(
                f"prompt policy {source} is not valid: {exc}; expected "
                '{"prompts": {"o163": {"allow": true, "meaning": "..."}}}'
            ) from None
        return cls(allowed=frozenset(allowed), known=frozenset(prompts), meanings=meanings)

    @classmethod
    def allowing(cls, message_ids: Iterable[str]) -> PromptPolicy:
        """A policy that allows exactly ``message_ids`` (handy in tests and scripts)."""
        ids = frozenset(message_ids)
        return cls(allowed=ids, known=ids)

    def with_allowed(self, *message_ids: str) -> PromptPolicy:
        """A copy of this policy that also allows ``message_ids`` (e.g. ``"o383"`` size-limit warnings)."""
        ids = frozenset(message_ids)
        return PromptPolicy(allowed=self.allowed | ids, known=self.known | ids, meanings=dict(self.meanings))

    def allows(self, message_ids: Iterable[str]) -> bool:
        """True only when there is at least one id and every id is allowed."""
        ids = list(message_ids)
        return bool(ids) and all(mid in self.allowed for mid in ids)

    def describe(self, message_ids: Iterable[str]) -> str:
        """Why the ids are refused, for error messages: unknown vs known-but-not-allowed."""
        parts = []
        for mid in message_ids:
            if mid not in self.known:
                parts.append(f"{mid} (unknown to the prompt policy)")
            elif mid not in self.allowed:
                parts.append(f"{mid} (not allowed by the prompt policy: {self.meanings.get(mid, '')})")
        return ", ".join(parts) or "no message id given"
