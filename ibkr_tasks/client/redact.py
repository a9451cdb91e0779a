"""Keeping secrets out of logs, exception messages and reprs.

Two layers: every secret the client handles (the static bearer, OAuth access and SSO tokens, sidecar
tokens) is *registered* here when it is obtained, and :func:`redact` replaces registered values as
well as anything that looks like a credential (``Bearer ...`` headers, JWTs, ``access_token`` JSON
fields, ``oauth_token=`` query parameters, the tickle ``session`` id) before text leaves the client.

The client's own messages and errors are redacted where they are made. The HTTP stack's log records
are not ours: httpx logs full URLs (a sidecar URL or a Flex request carries a token in its query) and
httpcore logs response headers at DEBUG. :func:`install_log_redaction` filters those loggers. Filters on
loggers are process-wide, so it is an explicit call made by whoever owns the process's logging: every
flow of this project and the tasks that build their own client call it first; a script using
:class:`~ibkr_tasks.client.api.IBKRClient` calls it once at start. Constructing a client never does.
"""

from __future__ import annotations

import logging
import re
import threading
from collections import OrderedDict

REDACTED = "***"

# Only values at least this long are registered: redacting "x" or "1" would mangle every message.
_MIN_SECRET_LEN = 6
_MAX_REMEMBERED = 128

_lock = threading.Lock()
_secrets: OrderedDict[str, None] = OrderedDict()

_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    # Authorization header values in any form we might render ("Bearer abc", "OAuth realm=...").
    (re.compile(r"(?i)\b(bearer|oauth)\s+[^\s\"',;]+"), r"\1 " + REDACTED),
    # JSON fields that carry credentials or session ids.
    (
        re.compile(
            r"(?i)(\"(?:access_token|refresh_token|id_token|token|client_assertion|session|credential)\"\s*:\s*\")[^\"]*(\")"
        ),
        r"\1" + REDACTED + r"\2",
    ),
    # Form or query parameters.
    (
        re.compile(r"(?i)\b((?:access_token|client_assertion|oauth_token|token)=)[^&\s\"']+"),
        r"\1" + REDACTED,
    ),
    # Anything shaped like a JWT (header.payload.signature, base64url).
    (re.compile(r"\beyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*"), REDACTED),
)


def register_secret(value: str | None) -> None:
    """Remember ``value`` so that :func:`redact` removes it from any text (newest kept, bounded)."""
    if not value or len(value) < _MIN_SECRET_LEN:
        return
    with _lock:
        _secrets[value] = None
        _secrets.move_to_end(value)
        while len(_secrets) > _MAX_REMEMBERED:
            _secrets.popitem(last=False)


def redact(text: object) -> str:
    """Return ``str(text)`` with every registered secret and credential-shaped substring replaced."""
    out = str(text)
    with _lock:
        known = list(_secrets)
    # Longest first so that a token containing another registered token is removed whole.
    for secret in sorted(known, key=len, reverse=True):
        if secret in out:
            out = out.replace(secret, REDACTED)
    for pattern, replacement in _PATTERNS:
        out = pattern.sub(replacement, out)
    return out


def snippet(text: str, limit: int = 300) -> str:
    """A redacted, single-line, length-bounded excerpt of a response body for error messages."""
    # Redact before cutting: a secret cut in half would no longer match.
    flat = redact(" ".join(text.split()))
    if len(flat) > limit:
        flat = flat[:limit] + "..."
    return flat


class RedactingFilter(logging.Filter):
    """A logging filter that passes every record through :func:`redact` (message and arguments)."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except (TypeError, ValueError):  # a malformed record: leave it to logging's own error path
            return True
        cleaned = redact(message)
        if cleaned != message or record.args:
            record.msg = cleaned
            record.args = None
        return True


# Loggers whose records may carry URLs or payloads: ours, and the HTTP stack's (logger filters are not
# inherited by child loggers, so httpcore's are listed one by one).
_REDACTED_LOGGERS = (
    "ibkr_tasks.client",
    "httpx",
    "httpcore.connection",
    "httpcore.http11",
    "httpcore.http2",
    "httpcore.proxy",
)
_installed = False


def install_log_redaction() -> None:
    """Attach :class:`RedactingFilter` to the client's and the HTTP stack's loggers.

    Idempotent: the first call installs the filters, later calls do nothing.
    """
    global _installed
    with _lock:
        if _installed:
            return
        _installed = True
    shared = RedactingFilter()
    for name in _REDACTED_LOGGERS:
        logging.getLogger(name).addFilter(shared)
