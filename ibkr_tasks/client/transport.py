"""The async HTTP transport: auth header, session lifecycle, preflights, pacing, retries, logging.

Everything above it (``ibkr_tasks.client.api``) calls ``await transport.request(method, path, ...)``
with a path relative to the API base and gets decoded JSON back. The transport takes care of what
every Client Portal request needs (docs/ibkr-api.md#sessions, #preflights, #rate-limits):

- a pacing slot from the shared :class:`~ibkr_tasks.client.ratelimit.RateLimiter` before every request;
- 401 -> ``POST /iserver/auth/ssodh/init`` then one retry; a second 401 -> :class:`NotAuthenticated`;
- 400 "no bridge" -> ``ssodh/init`` then one retry;
- "Please query /accounts first" -> ``GET /iserver/accounts`` (or ``/portfolio/accounts``) then one retry;
- the ``/iserver/accounts`` preflight before the first trades / orders / reply / snapshot request and
  ``/portfolio/accounts`` before the first ``/portfolio/{accountId}/...`` request of a brokerage session;
- 429 -> back off (``Retry-After`` if given, else exponential with jitter), bounded -> :class:`RateLimited`;
- GETs retry on 5xx, timeouts and connection errors with capped exponential backoff and jitter; POSTs
  and DELETEs are never retried unless the caller says so (an order must never be sent twice).
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import logging
import random
import re
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import httpx

from ibkr_tasks.client.auth import AuthProvider, auth_from_settings
from ibkr_tasks.client.clock import Clock, Sleep
from ibkr_tasks.client.ratelimit import Grant, RateLimiter, get_limiter
from ibkr_tasks.client.redact import redact, snippet
from ibkr_tasks.client.settings import IBKRSettings
from ibkr_tasks.errors import (
    APIError,
    CompetingSession,
    IBKRError,
    NoBridge,
    NotAuthenticated,
    ParseError,
    PreflightRequired,
    RateLimited,
    RequestFailed,
    ServerError,
)

logger = logging.getLogger("ibkr_tasks.client")

USER_AGENT = "ibkr-tasks/0.1 (+httpx)"
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})

# Requests that need the /iserver/accounts preflight first (docs/ibkr-api.md#preflights): trades,
# live orders, order placement/modification/cancel, order status, reply confirmations, snapshots.
ISERVER_PREFLIGHT = re.compile(
    r"^/iserver/(?:account/(?:trades|orders|order/status/|[^/]+/orders?(?:/|$))|reply/|marketdata/snapshot)"
)
# Requests that need /portfolio/accounts first: every /portfolio/... (and /portfolio2/...) request except
# the account lists themselves.
PORTFOLIO_PREFLIGHT = re.compile(r"^/portfolio2?/(?!(?:sub)?accounts/?$)")

_ACCOUNTS_FIRST = "please query /accounts first"
_PREFLIGHT_PATHS = frozenset({"/iserver/accounts", "/portfolio/accounts"})
_NO_BRIDGE = "no bridge"
_SSODH_INIT = "/iserver/auth/ssodh/init"


def needs_iserver_preflight(path: str) -> bool:
    """True when ``path`` must be preceded by ``GET /iserver/accounts`` in a brokerage session."""
    return ISERVER_PREFLIGHT.match(path) is not None


def needs_portfolio_preflight(path: str) -> bool:
    """True when ``path`` must be preceded by ``GET /portfolio/accounts``."""
    return PORTFOLIO_PREFLIGHT.match(path) is not None


def run_logger() -> logging.Logger | logging.LoggerAdapter[logging.Logger]:
    """The Prefect run's logger inside a flow or task run (its lines reach the run's log in the UI),
    else this module's logger. Prefect is only consulted when something imported it already."""
    if "prefect.context" not in sys.modules:
        return logger
    from prefect.context import FlowRunContext, TaskRunContext
    from prefect.logging import get_run_logger

    if FlowRunContext.get() is None and TaskRunContext.get() is None:
        return logger
    return get_run_logger()


def warn_if_tls_unverified(settings: IBKRSettings) -> bool:
    """Warn (in the run's log when inside a run) that an https API's certificate goes unchecked.

    Plain http has no certificate to check, so it gets no warning. Returns whether it warned.
    """
    if settings.verify_tls or urlsplit(settings.api_url).scheme != "https":
        return False
    run_logger().warning(
        "TLS certificate verification is OFF for %s (IBKR_VERIFY_TLS=false / the block's 'Verify TLS "
        "certificate'). Only do this for a local Client Portal Gateway with a self-signed certificate; "
        "prefer IBKR_CA_BUNDLE=<its certificate>.",
        settings.host,
    )
    return True


def _body_text(response: httpx.Response) -> str:
    # Only short bodies can be error messages; never scan a large payload.
    return response.text if len(response.content) <= 4096 else ""


def _is_no_bridge(response: httpx.Response) -> bool:
    return response.status_code == 400 and _NO_BRIDGE in _body_text(response).lower()


def _needs_accounts_first(response: httpx.Response) -> bool:
    return _ACCOUNTS_FIRST in _body_text(response).lower()


def _retry_after(response: httpx.Response) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds or HTTP date), if present and valid."""
    value = response.headers.get("retry-after")
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


class Transport:
    """Async Client Portal Web API transport (one ``httpx.AsyncClient``, one brokerage session).

    ``Transport(settings)`` reads auth and TLS options from :class:`IBKRSettings`; pass
    ``http_transport=httpx.ASGITransport(app=...)`` to run against an in-process simulator, and
    ``clock``/``sleep`` to run pacing and backoff on virtual time in tests.
    """

    def __init__(
        self,
        settings: IBKRSettings | None = None,
        *,
        auth: AuthProvider | None = None,
        limiter: RateLimiter | None = None,
        http_transport: httpx.AsyncBaseTransport | None = None,
        sleep: Sleep = asyncio.sleep,
        clock: Clock = time.monotonic,
        max_retries: int = 3,
        max_rate_limit_retries: int = 4,
        backoff_base: float | None = None,
        backoff_cap: float | None = None,
        rate_limit_backoff_base: float | None = None,
        max_retry_after: float = 120.0,
        jitter: Callable[[], float] = random.random,
        session_ready_checks: int = 5,
        keep_alive_interval: float | None = None,
    ) -> None:
        self.settings = settings if settings is not None else IBKRSettings()
        self.auth: AuthProvider = auth if auth is not None else auth_from_settings(self.settings)
        if limiter is None:
            if sleep is asyncio.sleep and clock is time.monotonic:
                limiter = get_limiter(self.settings)
            else:
                # Injected time (tests, simulations): a private limiter on the same time.
                limiter = RateLimiter.for_settings(self.settings, clock=clock, sleep=sleep)
        self.limiter = limiter
        self.sleep = sleep
        self.clock = clock
        self.max_retries = max_retries
        self.max_rate_limit_retries = max_rate_limit_retries
        # Unset: IBKR_RETRY_BACKOFF, IBKR_RETRY_BACKOFF_CAP, IBKR_RATE_LIMIT_BACKOFF (0.5, 10, 2 s).
        s = self.settings
        self.backoff_base = s.retry_backoff if backoff_base is None else backoff_base
        self.backoff_cap = s.retry_backoff_cap if backoff_cap is None else backoff_cap
        self.rate_limit_backoff_base = (
            s.rate_limit_backoff if rate_limit_backoff_base is None else rate_limit_backoff_base
        )
        self.max_retry_after = max_retry_after
        self.jitter = jitter
        self.session_ready_checks = session_ready_checks
        # Seconds between the tickles of the background keep-alive (0 = none); IBKR asks for ~60 s.
        self.keep_alive_interval = (
            self.settings.keep_alive_interval if keep_alive_interval is None else keep_alive_interval
        )
        self._keep_alive_task: asyncio.Task[None] | None = None
        # A bearer is only sent if it stays valid this much longer (network time, clock skew).
        self.bearer_safety = 1.0
        warn_if_tls_unverified(self.settings)
        self._http = httpx.AsyncClient(
            base_url=self.settings.api_url + "/",
            timeout=self.settings.timeout,
            verify=self.settings.tls_verify(),
            transport=http_transport,
            headers={"User-Agent": USER_AGENT, "Accept": "application/json"},
        )
        # Brokerage-session state: the generation increases with every ssodh/init; preflights are
        # cached per generation.
        self._generation = 0
        self._session_lock = asyncio.Lock()
        self._preflight_lock = asyncio.Lock()
        self._iserver_accounts: dict[str, Any] | None = None
        self._iserver_generation = -1
        self._portfolio_accounts: list[dict[str, Any]] | None = None
        self._portfolio_generation = -1
        # How many SSO sessions of the auth provider (OAuth 2.0) already have their brokerage session.
        self._sso_opened = 0

    # --- lifecycle ------------------------------------------------------------------------------

    def __repr__(self) -> str:
        return f"Transport(api_url={self.settings.api_url!r}, auth={self.auth!r})"

    async def __aenter__(self) -> Transport:
        await self.open()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def open(self) -> None:
        """Start the background keep-alive: ``/tickle`` every ``keep_alive_interval`` seconds while open.

        Unattended runs (a flow waiting for fills, a long nightly run, market-data polling) then keep
        their session without anyone calling :meth:`tickle`. Idempotent; ``async with`` calls it.
        """
        if self.keep_alive_interval <= 0:
            return
        if self._keep_alive_task is None or self._keep_alive_task.done():
            self._keep_alive_task = asyncio.create_task(
                self._keep_alive_loop(self.keep_alive_interval), name="ibkr-keep-alive"
            )

    async def aclose(self) -> None:
        """Stop the keep-alive and close the HTTP connections (the brokerage session stays open)."""
        task, self._keep_alive_task = self._keep_alive_task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self._http.aclose()

    @property
    def origin(self) -> str:
        """Scheme, host and port of the API (where a user logs in to a gateway)."""
        url = httpx.URL(self.settings.api_url)
        port = f":{url.port}" if url.port else ""
        return f"{url.scheme}://{url.host}{port}"

    # --- public API -----------------------------------------------------------------------------

    async def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        json: Any = None,
        retry: bool | None = None,
    ) -> Any:
        """Send one API request and return its decoded JSON body (None for an empty body).

        ``path`` is relative to the API base (``"/portfolio/accounts"``). HTTP-200 bodies such as
        ``{"error": ...}`` are returned as they are. ``retry=None``: GETs retry on 5xx, timeouts and
        connection errors, other methods never do; ``True``/``False`` force it either way.
        Raises NotAuthenticated, NoBridge, PreflightRequired, RateLimited, ServerError, APIError
        (other 4xx), RequestFailed (no answer; see ``maybe_sent``) or ParseError (non-JSON body).
        """
        method = method.upper()
        path = "/" + path.lstrip("/")
        # A bearer renewed now opens its brokerage session before the preflight and the request.
        await self._authorization(path)
        await self._preflight_for(path)
        return await self._call(method, path, params=params, json=json, retry=retry)

    async def ensure_session(self, allow_competing: bool = False) -> dict[str, Any]:
        """Make sure a brokerage session is open and ready for /iserver requests; return its auth status.

        ``POST /iserver/auth/status``; if not authenticated/connected (or "no bridge"):
        ``POST /iserver/auth/ssodh/init`` ``{"publish": true, "compete": true}``; then the
        ``/iserver/accounts`` preflight. A competing session (another login of this username holds the
        brokerage session) raises CompetingSession unless ``allow_competing`` (then it is taken over).
        """
        status = await self.auth_status()
        if status.get("competing") and not allow_competing:
            raise self._competing_error()
        if not self._session_ok(status):
            logger.info(
                "brokerage session not ready (%s); opening it with ssodh/init", _status_summary(status)
            )
            init = await self._reinit(self._generation)
            status = init if "authenticated" in init else status
            for _ in range(self.session_ready_checks):
                if self._session_ok(status):
                    break
                await self.sleep(1.0)
                status = await self.auth_status()
            if status.get("competing") and not allow_competing:
                raise self._competing_error()
            if not status.get("authenticated"):
                raise NotAuthenticated(
                    "the brokerage session did not open after /iserver/auth/ssodh/init "
                    f"({_status_summary(status)}). {self._login_hint()}",
                    path="/iserver/auth/ssodh/init",
                )
        await self.ensure_iserver_accounts()
        return status

    async def auth_status(self) -> dict[str, Any]:
        """``POST /iserver/auth/status`` (authenticated / connected / competing flags)."""
        body = await self._call("POST", "/iserver/auth/status", json={}, retry=True)
        return body if isinstance(body, dict) else {}

    async def ensure_iserver_accounts(self, *, force: bool = False) -> dict[str, Any]:
        """The ``GET /iserver/accounts`` preflight, made once per brokerage session (cached)."""
        if not force and self._iserver_generation == self._generation and self._iserver_accounts is not None:
            return self._iserver_accounts
        async with self._preflight_lock:
            if (
                not force
                and self._iserver_generation == self._generation
                and self._iserver_accounts is not None
            ):
                return self._iserver_accounts
            body = await self._call("GET", "/iserver/accounts", params=None, json=None, retry=None)
            self._iserver_accounts = body if isinstance(body, dict) else {}
            self._iserver_generation = self._generation
            return self._iserver_accounts

    async def ensure_portfolio_accounts(self, *, force: bool = False) -> list[dict[str, Any]]:
        """The ``GET /portfolio/accounts`` preflight, made once per brokerage session (cached)."""
        if (
            not force
            and self._portfolio_generation == self._generation
            and self._portfolio_accounts is not None
        ):
            return self._portfolio_accounts
        async with self._preflight_lock:
            if (
                not force
                and self._portfolio_generation == self._generation
                and self._portfolio_accounts is not None
            ):
                return self._portfolio_accounts
            body = await self._call("GET", "/portfolio/accounts", params=None, json=None, retry=None)
            self._portfolio_accounts = (
                [row for row in body if isinstance(row, dict)] if isinstance(body, list) else []
            )
            self._portfolio_generation = self._generation
            return self._portfolio_accounts

    async def tickle(self) -> dict[str, Any]:
        """``POST /tickle``: keeps the session alive; returns the session / auth-status body."""
        body = await self._call("POST", "/tickle", json={}, retry=True)
        return body if isinstance(body, dict) else {}

    @contextlib.asynccontextmanager
    async def keep_alive(self, interval: float = 60.0) -> AsyncIterator[None]:
        """Tickle every ``interval`` seconds while the block runs (IBKR: about every 60 s).

        If a tickle reports the brokerage session as no longer authenticated, it is re-opened with
        ssodh/init. Failures are logged, never raised into the block. The transport's own background
        keep-alive (:meth:`open`) pauses meanwhile, so the session is never tickled twice as often.
        """
        background, self._keep_alive_task = self._keep_alive_task, None
        if background is not None:
            background.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await background
        task = asyncio.create_task(self._keep_alive_loop(interval))
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            if background is not None and not self._http.is_closed:
                await self.open()

    # --- internals --------------------------------------------------------------------------------

    async def _preflight_for(self, path: str) -> None:
        """Make the preflight ``path`` needs in this brokerage session (cached; no-op for other paths)."""
        if needs_iserver_preflight(path):
            await self.ensure_iserver_accounts()
        elif needs_portfolio_preflight(path):
            await self.ensure_portfolio_accounts()

    async def _keep_alive_loop(self, interval: float) -> None:
        while True:
            await self.sleep(interval)
            try:
                body = await self.tickle()
                auth = (
                    (body.get("iserver") or {}).get("authStatus")
                    if isinstance(body.get("iserver"), dict)
                    else None
                )
                if isinstance(auth, dict) and auth.get("authenticated") is False:
                    logger.warning("keep-alive: brokerage session lost; re-opening it with ssodh/init")
                    await self._reinit(self._generation)
            except IBKRError as exc:
                logger.warning("keep-alive tickle failed: %s", exc)
            except Exception as exc:  # the keep-alive must outlive any failure; the next tickle retries
                logger.warning("keep-alive tickle failed: %s", redact(f"{type(exc).__name__}: {exc}"))

    @staticmethod
    def _session_ok(status: Mapping[str, Any]) -> bool:
        text = str(status.get("fail", "")) + str(status.get("message", ""))
        return (
            bool(status.get("authenticated"))
            and status.get("connected", True) is not False
            and (_NO_BRIDGE not in text.lower())
            and not status.get("competing")
        )

    def _competing_error(self) -> CompetingSession:
        return CompetingSession(
            "another login of this IBKR username (TWS, IBKR Mobile or Client Portal) holds the brokerage "
            "session (competing=true). Log out there, or call ensure_session(allow_competing=True) to take "
            "the session over."
        )

    def _login_hint(self) -> str:
        if self.settings.is_ibkr_hosted:
            return (
                f"Check the credentials for {self.settings.host}: the bearer token (IBKR_ACCESS_TOKEN, or the "
                "OAuth2 / sidecar settings) may have expired or been revoked."
            )
        return (
            f"Log in to the Client Portal Gateway at {self.origin} in a browser (it needs a fresh login at "
            "least once a day), then retry; also check IBKR_API_URL."
        )

    def _not_authenticated(self, method: str, path: str, response: httpx.Response) -> NotAuthenticated:
        return NotAuthenticated(
            f"{method} {path}: IBKR answered 401 Unauthorized even after re-opening the brokerage session "
            f"(/iserver/auth/ssodh/init): {snippet(response.text, 120)}. {self._login_hint()}",
            status_code=401,
            path=path,
        )

    async def _reinit(self, seen_generation: int) -> dict[str, Any]:
        """``POST /iserver/auth/ssodh/init`` unless another caller already did since ``seen_generation``."""
        async with self._session_lock:
            if self._generation != seen_generation:
                return {}
            return await self._init_locked()

    async def _init_locked(self) -> dict[str, Any]:
        """``POST /iserver/auth/ssodh/init`` (the caller holds the session lock); resets the preflights."""
        body = await self._call(
            "POST",
            _SSODH_INIT,
            json={"publish": True, "compete": True},
            retry=True,
            recover=False,
        )
        self._generation += 1
        self._iserver_accounts = None
        self._portfolio_accounts = None
        # ssodh/init was sent with the newest bearer: its SSO session has its brokerage session now.
        self._sso_opened = self._auth_sso_sessions() or 0
        return body if isinstance(body, dict) else {}

    def _still_valid(self, authorization: str | None) -> bool:
        """Whether ``authorization`` is still the provider's bearer, good for ``bearer_safety`` seconds."""
        check = getattr(self.auth, "still_valid", None)
        return True if check is None else bool(check(authorization, self.bearer_safety))

    def _auth_sso_sessions(self) -> int | None:
        count = getattr(self.auth, "sso_sessions", None)
        return count if isinstance(count, int) else None

    async def _authorization(self, path: str) -> str | None:
        """The Authorization header; after the provider opened a new SSO session (a renewed OAuth 2.0
        bearer), first open that session's brokerage session with ssodh/init (as IBKR's own sample does):
        requests with the new bearer then never meet a stale or missing brokerage session."""
        header = await self.auth.authorization(self._http)
        count = self._auth_sso_sessions()
        if count is not None and count != self._sso_opened and path != _SSODH_INIT:
            async with self._session_lock:
                if self._auth_sso_sessions() != self._sso_opened:
                    logger.info("new SSO session: opening its brokerage session (ssodh/init)")
                    await self._init_locked()
            header = await self.auth.authorization(self._http)
        return header

    async def _call(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        json: Any = None,
        retry: bool | None,
        recover: bool = True,
    ) -> Any:
        """One request with session recovery (401, no bridge, accounts-first) and error mapping."""
        reinitialised = preflighted = False
        while True:
            generation = self._generation
            response = await self._send(method, path, params=params, json=json, retry=retry)
            status = response.status_code
            if status == 401:
                if not recover or reinitialised:
                    raise self._not_authenticated(method, path, response)
                logger.warning("%s %s -> 401; re-opening the brokerage session (ssodh/init)", method, path)
                reinitialised = True
                await self.auth.invalidate()
                await self._reinit(generation)
                await self._preflight_for(path)
                continue
            if _is_no_bridge(response):
                if not recover or reinitialised:
                    raise NoBridge(
                        f"{method} {path}: IBKR answered 'no bridge' (no brokerage session) even after "
                        f"/iserver/auth/ssodh/init: {snippet(response.text, 120)}. {self._login_hint()}",
                        status_code=status,
                        path=path,
                    )
                logger.warning(
                    "%s %s -> 400 no bridge; opening the brokerage session (ssodh/init)", method, path
                )
                reinitialised = True
                await self._reinit(generation)
                await self._preflight_for(path)
                continue
            if _needs_accounts_first(response) and path not in _PREFLIGHT_PATHS:
                if not recover or preflighted:
                    raise PreflightRequired(
                        f"{method} {path}: IBKR still asks to 'query /accounts first' after the preflight: "
                        f"{snippet(response.text, 120)}",
                        status_code=status,
                        path=path,
                    )
                logger.info("%s %s asked for the accounts preflight; calling it", method, path)
                preflighted = True
                if path.startswith("/portfolio"):
                    await self.ensure_portfolio_accounts(force=True)
                else:
                    await self.ensure_iserver_accounts(force=True)
                continue
            if status == 429:
                raise self._rate_limited(method, path, response)
            if status >= 500:
                raise ServerError(
                    f"{method} {path}: IBKR answered HTTP {status}: {snippet(response.text, 200)}"
                    + (
                        " (after retries)"
                        if self._retries(method, retry)
                        else " (not retried: not idempotent)"
                    ),
                    status_code=status,
                    path=path,
                )
            if status >= 400:
                raise APIError(
                    f"{method} {path}: IBKR answered HTTP {status}: {snippet(response.text, 200)}",
                    status_code=status,
                    path=path,
                )
            return self._decode(method, path, response)

    def _rate_limited(self, method: str, path: str, response: httpx.Response) -> RateLimited:
        retry_after = _retry_after(response)
        error = RateLimited(
            f"{method} {path}: IBKR answered 429 Too Many Requests"
            + (f" (Retry-After {retry_after:.0f} s)" if retry_after is not None else "")
            + ". Wait before retrying (IBKR's penalty box lasts 10-15 minutes for the whole IP) and lower "
            "the request rate or concurrency.",
            status_code=429,
            path=path,
        )
        error.retry_after = retry_after  # type: ignore[attr-defined]  # RateLimited (errors.py) declares no retry_after
        return error

    @staticmethod
    def _retries(method: str, retry: bool | None) -> bool:
        return method in IDEMPOTENT_METHODS if retry is None else retry

    def _backoff(self, attempt: int, base: float) -> float:
        """Capped exponential backoff with jitter: between half and all of ``base * 2**(attempt-1)``."""
        ceiling = min(self.backoff_cap, base * 2 ** (attempt - 1))
        return ceiling / 2 + self.jitter() * ceiling / 2

    async def _send(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None,
        json: Any,
        retry: bool | None,
    ) -> httpx.Response:
        """Send with pacing; retry transient failures (where allowed) and 429s; return the last response."""
        retries = self._retries(method, retry)
        failures = 0
        limited = 0
        renewed_after_wait = False
        while True:
            # The header is fetched before taking a pacing slot: a token refresh must not delay a
            # request past its reserved instant.
            authorization = await self._authorization(path)
            headers = {"Authorization": authorization} if authorization else None
            started = self.clock()
            error: httpx.HTTPError | None = None
            response: httpx.Response | None = None
            expired = False
            async with self.limiter.slot(method, path) as grant:
                sent_at = self.clock()
                # A long pacing wait (5 s for /portfolio/accounts, minutes for /pa) can outlast the bearer
                # fetched before it: then the slot goes unused (nothing is sent, so no window is crowded)
                # and the request renews and waits again -- once; a second time it is sent as it is.
                expired = not renewed_after_wait and not self._still_valid(authorization)
                if not expired:
                    try:
                        response = await self._http.request(
                            method,
                            path,
                            params=params,
                            json=json,
                            headers=headers,
                            extensions={"trace": _confirm_at_write(grant)},
                        )
                    except (httpx.TimeoutException, httpx.TransportError) as exc:
                        error = exc
            if expired:
                renewed_after_wait = True
                logger.info("%s %s: the bearer expired while waiting for pacing; renewing it", method, path)
                continue
            latency_ms = (self.clock() - sent_at) * 1000
            waited_ms = (sent_at - started) * 1000

            if error is not None:
                maybe_sent = not isinstance(
                    error, httpx.ConnectError | httpx.ConnectTimeout | httpx.PoolTimeout
                )
                logger.warning(
                    "%s %s failed after %.0f ms: %s%s",
                    method,
                    path,
                    latency_ms,
                    type(error).__name__,
                    " (may have been sent)" if maybe_sent else "",
                )
                if retries and failures < self.max_retries:
                    failures += 1
                    await self.sleep(self._backoff(failures, self.backoff_base))
                    continue
                raise RequestFailed(
                    f"{method} {path}: no answer from {self.origin} ({type(error).__name__})"
                    + (f" after {failures + 1} attempts" if retries else "")
                    + (
                        "; the request may have reached IBKR: check its effect (for an order, look it up by "
                        "its cOID) before sending it again"
                        if maybe_sent
                        else "; the request was not sent (could not connect): check that the gateway/API is reachable"
                    ),
                    method=method,
                    path=path,
                    maybe_sent=maybe_sent,
                ) from None

            assert response is not None
            status = response.status_code
            level = logging.DEBUG if status < 400 else logging.WARNING
            logger.log(
                level, "%s %s -> %d in %.0f ms (paced %.0f ms)", method, path, status, latency_ms, waited_ms
            )

            if status == 429:
                retry_after = _retry_after(response)
                if retry_after is not None and retry_after > self.max_retry_after:
                    self.limiter.pause(retry_after)
                    return response
                delay = (
                    retry_after * (1 + 0.1 * self.jitter())
                    if retry_after is not None
                    else self._backoff(limited + 1, self.rate_limit_backoff_base)
                )
                # Everyone sharing this limiter backs off, not only this caller.
                self.limiter.pause(delay)
                if retries and limited < self.max_rate_limit_retries:
                    limited += 1
                    await self.sleep(delay)
                    continue
                return response
            if (
                status >= 500
                and retries
                and failures < self.max_retries
                and not _needs_accounts_first(response)
            ):
                failures += 1
                retry_after = _retry_after(response)
                delay = (
                    min(retry_after, self.max_retry_after)
                    if retry_after is not None
                    else self._backoff(failures, self.backoff_base)
                )
                await self.sleep(delay)
                continue
            return response

    @staticmethod
    def _decode(method: str, path: str, response: httpx.Response) -> Any:
        if not response.content:
            return None
        try:
            return response.json()
        except ValueError:
            raise ParseError(
                f"{method} {path}: expected JSON, got {response.headers.get('content-type', 'no content type')}: "
                f"{snippet(response.text, 120)}"
            ) from None


WRITE_EVENTS = frozenset({"http11.send_request_headers.started", "http2.send_request_headers.started"})
"""httpcore's trace events that come right before a request's first byte is written to the socket."""


def _confirm_at_write(grant: Grant) -> Callable[[str, dict[str, Any]], Awaitable[None]]:
    """An httpcore ``trace`` extension that confirms the pacing grant just before the request is
    written: connecting, waiting for a pooled connection or a busy event loop may have come between the
    grant and the write, and IBKR counts the request when it arrives (docs/pacing.md#the-write)."""

    async def trace(event: str, info: dict[str, Any]) -> None:
        if event in WRITE_EVENTS:
            await grant.confirm()

    return trace


def _status_summary(status: Mapping[str, Any]) -> str:
    keys = ("authenticated", "connected", "competing", "fail", "message")
    return ", ".join(f"{k}={status.get(k)!r}" for k in keys if k in status) or "no status"
