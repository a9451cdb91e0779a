"""How requests are authorised: a static bearer, OAuth 2.0 private_key_jwt, or a sidecar.

All providers implement :class:`AuthProvider`: ``authorization(http)`` returns the value of the
``Authorization`` header (or None to send none, e.g. a local gateway that needs no header), refreshing
the token first when it is close to expiry; ``invalidate()`` forgets a token the server rejected.
Every token obtained is registered with :mod:`ibkr_tasks.client.redact` so it never reaches a log.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import time
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import httpx
import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey
from pydantic import SecretStr

from ibkr_tasks.client.clock import Clock
from ibkr_tasks.client.redact import register_secret, snippet
from ibkr_tasks.client.settings import (
    OAUTH2_IP_ECHO_URL,
    OAUTH2_SSO_URL,
    OAUTH2_TOKEN_URL,
    IBKRSettings,
)
from ibkr_tasks.errors import ConfigurationError, NotAuthenticated

logger = logging.getLogger("ibkr_tasks.client")

CLIENT_ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


@runtime_checkable
class AuthProvider(Protocol):
    """Supplies the ``Authorization`` header for Client Portal Web API requests."""

    async def authorization(self, http: httpx.AsyncClient) -> str | None:
        """The header value (``"Bearer ..."``), or None to send no header. May refresh first."""
        ...

    async def invalidate(self) -> None:
        """Forget the current token (the server answered 401); the next call fetches a new one."""
        ...


def _secret(value: SecretStr | str | None) -> str | None:
    if value is None:
        return None
    raw = value.get_secret_value() if isinstance(value, SecretStr) else value
    return raw or None


class StaticBearer:
    """A fixed bearer token (``IBKR_ACCESS_TOKEN``), or no header at all when there is none.

    A local Client Portal Gateway authenticates by its own browser login and accepts any placeholder
    (or no header); api.ibkr.com needs a real token.
    """

    def __init__(self, token: SecretStr | str | None = None) -> None:
        self._token = _secret(token)
        register_secret(self._token)

    def __repr__(self) -> str:
        return f"StaticBearer(token={'set' if self._token else 'none'})"

    async def authorization(self, http: httpx.AsyncClient) -> str | None:
        return f"Bearer {self._token}" if self._token else None

    async def invalidate(self) -> None:
        """A static token cannot be renewed; the transport reports NotAuthenticated if it keeps failing."""


class _CachedToken:
    """A token with its expiry and one shared refresh (concurrent callers wait for the same refresh)."""

    def __init__(self, clock: Clock, margin: float) -> None:
        self.clock = clock
        self.margin = margin
        self.value: str | None = None
        self.expires_at: float | None = None  # None = no known expiry
        self.lock = asyncio.Lock()

    def fresh(self) -> bool:
        if self.value is None:
            return False
        return self.expires_at is None or self.clock() < self.expires_at - self.margin

    def usable(self, header: str | None, within: float) -> bool:
        """Whether ``header`` carries the current token and it is still valid ``within`` seconds from now."""
        if self.value is None or header != f"Bearer {self.value}":
            return False
        return self.expires_at is None or self.clock() + within < self.expires_at

    def set(self, value: str, expires_at: float | None) -> None:
        register_secret(value)
        self.value = value
        self.expires_at = expires_at

    def clear(self) -> None:
        self.value = None
        self.expires_at = None


def _load_private_key(
    pem: SecretStr | str | bytes | RSAPrivateKey | None, path: Path | None
) -> RSAPrivateKey:
    if isinstance(pem, RSAPrivateKey):
        return pem
    if pem is None and path is None:
        raise ConfigurationError(
            "OAuth2 needs a private key: set IBKR_OAUTH2_PRIVATE_KEY or IBKR_OAUTH2_PRIVATE_KEY_PATH"
        )
    try:
        if pem is not None:
            data = pem.get_secret_value().encode() if isinstance(pem, SecretStr) else pem
            data = data.encode() if isinstance(data, str) else data
        else:
            assert path is not None
            data = path.read_bytes()
        key = serialization.load_pem_private_key(data, password=None)
    except (OSError, ValueError, TypeError) as exc:
        # Never include the key material: name the source only.
        source = f"file {path}" if pem is None else "IBKR_OAUTH2_PRIVATE_KEY"
        raise ConfigurationError(
            f"could not load the OAuth2 RSA private key from {source} ({type(exc).__name__}); "
            "it must be an unencrypted PEM RSA private key"
        ) from None
    if not isinstance(key, RSAPrivateKey):
        raise ConfigurationError("the OAuth2 private key must be an RSA key (IBKR signs with RS256)")
    return key


class OAuth2PrivateKeyJWT:
    """OAuth 2.0 client credentials with ``private_key_jwt`` (RFC 7523), then an SSO session.

    Flow (docs/ibkr-api.md#oauth2):
    1. POST the token endpoint (form): ``grant_type=client_credentials``, ``client_assertion`` = an RS256
       JWT (header ``alg, typ, kid``; claims ``iss = sub = client_id``, ``aud = "/token"``, ``iat``,
       ``exp``), ``client_assertion_type``, ``scope=sso-sessions.write`` -> ``access_token``.
    2. POST the sso-sessions endpoint with ``Authorization: Bearer <access_token>``,
       ``Content-Type: application/jwt`` and an RS256 JWT body (``credential``, ``ip``, ``iss``, ``iat``,
       ``exp``) -> ``access_token``: the bearer for ``/v1/api``.
    ``ip`` is always sent: the configured address, else the one an address-echo service (``ip_echo_url``)
    answers; with neither, :class:`ConfigurationError` says what to set.
    The bearer is renewed ``margin`` seconds before it expires; concurrent callers share one renewal.
    ``sso_sessions`` counts the SSO sessions opened: a transport that sees it change opens the brokerage
    session of the new one (``/iserver/auth/ssodh/init``) before using the new bearer.
    """

    def __init__(
        self,
        *,
        client_id: str,
        key_id: str,
        private_key: SecretStr | str | bytes | RSAPrivateKey | None = None,
        private_key_path: Path | None = None,
        credential: str,
        ip: str | None = None,
        ip_echo_url: str | None = OAUTH2_IP_ECHO_URL,
        token_url: str = OAUTH2_TOKEN_URL,
        sso_url: str = OAUTH2_SSO_URL,
        scope: str = "sso-sessions.write",
        audience: str = "/token",
        margin: float = 120.0,
        assertion_lifetime: float = 60.0,
        sso_lifetime: float = 86_400.0,
        clock: Clock = time.time,
    ) -> None:
        self.client_id = client_id
        self.key_id = key_id
        self._key = _load_private_key(private_key, private_key_path)
        self.credential = credential
        self.ip = _valid_ip(ip) if ip else None
        self.ip_echo_url = ip_echo_url or None
        if self.ip is None and self.ip_echo_url is None:
            raise ConfigurationError(
                "OAuth2 needs the caller's public IP for the SSO session (IBKR requires the 'ip' claim): set "
                "IBKR_OAUTH2_IP, or IBKR_OAUTH2_IP_ECHO_URL to a service that answers it"
            )
        self.token_url = token_url
        self.sso_url = sso_url
        self.scope = scope
        self.audience = audience
        self.assertion_lifetime = assertion_lifetime
        self.sso_lifetime = sso_lifetime
        self.clock = clock
        self.sso_sessions = 0
        self._bearer = _CachedToken(clock, margin)

    def __repr__(self) -> str:
        return f"OAuth2PrivateKeyJWT(client_id={self.client_id!r}, key_id={self.key_id!r}, credential={self.credential!r})"

    def _sign(self, claims: dict[str, Any]) -> str:
        token = jwt.encode(claims, self._key, algorithm="RS256", headers={"kid": self.key_id, "typ": "JWT"})
        register_secret(token)
        return token

    def client_assertion_claims(self) -> dict[str, Any]:
        """The claims of the client assertion (who is asking, for which audience, until when)."""
        now = int(self.clock())
        return {
            "iss": self.client_id,
            "sub": self.client_id,
            "aud": self.audience,
            # A few seconds back-dated so a slightly fast server clock accepts it.
            "iat": now - 10,
            "exp": now + int(self.assertion_lifetime),
        }

    def client_assertion(self) -> str:
        """The RS256 client-assertion JWT for the token endpoint."""
        return self._sign(self.client_assertion_claims())

    def sso_claims(self, ip: str) -> dict[str, Any]:
        """The claims of the SSO-session JWT: who the session is for, from which public IP."""
        now = int(self.clock())
        return {
            "credential": self.credential,
            "ip": ip,
            "iss": self.client_id,
            "iat": now,
            "exp": now + int(self.sso_lifetime),
        }

    def sso_assertion(self, ip: str | None = None) -> str:
        """The RS256 JWT posted to sso-sessions (``ip`` defaults to the configured address)."""
        address = ip or self.ip
        if address is None:
            raise ConfigurationError("sso_assertion() needs the public IP: pass ip= or configure it")
        return self._sign(self.sso_claims(address))

    async def public_ip(self, http: httpx.AsyncClient) -> str:
        """The configured IP, else the address the echo service sees this machine's requests come from."""
        if self.ip:
            return self.ip
        url = self.ip_echo_url
        assert url is not None
        hint = "set IBKR_OAUTH2_IP to the public IP address IBKR sees your requests come from"
        try:
            response = await http.get(url, headers={"Accept": "text/plain, application/json"})
        except httpx.HTTPError as exc:
            raise ConfigurationError(
                f"could not look up the public IP at {url} ({type(exc).__name__}); {hint}"
            ) from None
        if response.status_code >= 400:
            raise ConfigurationError(
                f"the IP echo service {url} answered HTTP {response.status_code}; {hint}"
            )
        text = response.text.strip()
        try:
            body = response.json()
        except ValueError:
            body = None
        if isinstance(body, dict):
            text = str(body.get("ip", "")).strip()
        try:
            address = _valid_ip(text)
        except ConfigurationError:
            raise ConfigurationError(
                f"the IP echo service {url} did not answer an IP address ({snippet(text, 60)!r}); {hint}"
            ) from None
        logger.info("public IP for the OAuth2 SSO session, from %s: %s", url, address)
        return address

    async def authorization(self, http: httpx.AsyncClient) -> str | None:
        if not self._bearer.fresh():
            async with self._bearer.lock:
                if not self._bearer.fresh():  # another caller may have refreshed meanwhile
                    await self._refresh(http)
        assert self._bearer.value is not None
        return f"Bearer {self._bearer.value}"

    async def invalidate(self) -> None:
        async with self._bearer.lock:
            self._bearer.clear()

    def still_valid(self, header: str | None, within: float = 0.0) -> bool:
        """Whether ``header`` (from :meth:`authorization`) is the current bearer, unexpired for ``within`` s."""
        return self._bearer.usable(header, within)

    async def _refresh(self, http: httpx.AsyncClient) -> None:
        ip = await self.public_ip(http)
        started = self.clock()
        token = await self._post(
            http,
            self.token_url,
            data={
                "grant_type": "client_credentials",
                "client_assertion": self.client_assertion(),
                "client_assertion_type": CLIENT_ASSERTION_TYPE,
                "scope": self.scope,
            },
            what="OAuth2 access token",
            hint="check IBKR_OAUTH2_CLIENT_ID, IBKR_OAUTH2_KEY_ID and that the private key matches the public "
            "key registered with IBKR",
        )
        access = token.get("access_token")
        if not isinstance(access, str) or not access:
            raise NotAuthenticated(
                f"the OAuth2 token endpoint {self.token_url} answered without an access_token; "
                "check IBKR_OAUTH2_CLIENT_ID, IBKR_OAUTH2_KEY_ID and the registered public key",
                path=self.token_url,
            )
        register_secret(access)
        access_expiry = _expiry(token, started)
        sso = await self._post(
            http,
            self.sso_url,
            content=self.sso_assertion(ip).encode(),
            headers={"Authorization": f"Bearer {access}", "Content-Type": "application/jwt"},
            what="SSO session",
            hint="check IBKR_OAUTH2_CREDENTIAL (the IBKR username) and IBKR_OAUTH2_IP (your public IP)",
        )
        bearer = sso.get("access_token")
        if not isinstance(bearer, str) or not bearer:
            raise NotAuthenticated(
                f"{self.sso_url} answered without an access_token; check IBKR_OAUTH2_CREDENTIAL (the IBKR "
                "username) and IBKR_OAUTH2_IP (your public IP)",
                path=self.sso_url,
            )
        # The SSO bearer's lifetime is not documented (docs/ibkr-api.md#oauth2): take expires_in if given,
        # else the JWT's own exp, else the shorter of the access token's and the session we asked for.
        expires_at = _expiry(sso, started) or _jwt_exp(bearer)
        if expires_at is None:
            candidates = [started + self.sso_lifetime] + ([access_expiry] if access_expiry else [])
            expires_at = min(candidates)
        self._bearer.set(bearer, expires_at)
        self.sso_sessions += 1
        logger.info(
            "opened OAuth2 SSO session %d for %s (bearer valid %.0f s)",
            self.sso_sessions,
            self.client_id,
            expires_at - started,
        )

    async def _post(
        self, http: httpx.AsyncClient, url: str, *, what: str, hint: str, **kwargs: Any
    ) -> dict[str, Any]:
        try:
            response = await http.post(url, **kwargs)
        except httpx.HTTPError as exc:
            raise NotAuthenticated(
                f"could not reach {url} for the {what} ({type(exc).__name__}); check the network", path=url
            ) from None
        if response.status_code >= 400:
            raise NotAuthenticated(
                f"{what} request to {url} was refused with HTTP {response.status_code}: "
                f"{_problem(response)}; {hint}",
                status_code=response.status_code,
                path=url,
            )
        try:
            body = response.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):
            raise NotAuthenticated(f"{what} response from {url} is not a JSON object", path=url)
        return body


def _valid_ip(value: str) -> str:
    try:
        return str(ipaddress.ip_address(value.strip()))
    except ValueError:
        raise ConfigurationError(f"{snippet(value, 60)!r} is not an IP address") from None


def _problem(response: httpx.Response) -> str:
    """An error answer in a sentence: IBKR's problem+json ``title: detail``, else a redacted snippet."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and ("title" in body or "detail" in body):
        parts = [str(body[k]) for k in ("title", "detail") if body.get(k) not in (None, "")]
        return snippet(": ".join(parts), 300)
    return snippet(response.text)


def _expiry(body: dict[str, Any], started: float) -> float | None:
    value = body.get("expires_in")
    try:
        return started + float(value) if value is not None else None
    except (TypeError, ValueError):
        return None


def _jwt_exp(token: str) -> float | None:
    """The ``exp`` claim of a JWT we cannot verify (only used to schedule a refresh, never to trust it)."""
    try:
        claims = jwt.decode(token, options={"verify_signature": False})
    except jwt.PyJWTError:
        return None
    exp = claims.get("exp")
    return float(exp) if isinstance(exp, int | float) else None


class SidecarBearer:
    """Fetches the bearer from a sidecar URL (e.g. a process that does the OAuth 1.0a signing).

    The sidecar answers ``GET <url>`` with JSON ``{"access_token": "...", "expires_in": seconds}``
    (``token`` and ``expires_at`` epoch seconds are accepted too) or with the bare token as text.
    The token is cached until ``margin`` seconds before expiry, or until a 401 invalidates it.
    """

    def __init__(
        self,
        url: str,
        *,
        token: SecretStr | str | None = None,
        margin: float = 120.0,
        clock: Clock = time.time,
    ) -> None:
        self.url = url
        self._sidecar_token = _secret(token)
        register_secret(self._sidecar_token)
        self.clock = clock
        self._bearer = _CachedToken(clock, margin)

    def __repr__(self) -> str:
        return f"SidecarBearer(url={self.url!r})"

    async def authorization(self, http: httpx.AsyncClient) -> str | None:
        if not self._bearer.fresh():
            async with self._bearer.lock:
                if not self._bearer.fresh():
                    await self._refresh(http)
        assert self._bearer.value is not None
        return f"Bearer {self._bearer.value}"

    async def invalidate(self) -> None:
        async with self._bearer.lock:
            self._bearer.clear()

    async def _refresh(self, http: httpx.AsyncClient) -> None:
        started = self.clock()
        headers = {"Authorization": f"Bearer {self._sidecar_token}"} if self._sidecar_token else {}
        try:
            response = await http.get(self.url, headers=headers)
        except httpx.HTTPError as exc:
            raise NotAuthenticated(
                f"could not reach the token sidecar at {self.url} ({type(exc).__name__}); is it running?",
                path=self.url,
            ) from None
        if response.status_code >= 400:
            raise NotAuthenticated(
                f"the token sidecar at {self.url} answered HTTP {response.status_code}: {snippet(response.text)}",
                status_code=response.status_code,
                path=self.url,
            )
        value, expires_at = _parse_sidecar(response, started)
        if not value:
            raise NotAuthenticated(f"the token sidecar at {self.url} returned no token", path=self.url)
        self._bearer.set(value, expires_at)


def _parse_sidecar(response: httpx.Response, started: float) -> tuple[str | None, float | None]:
    text = response.text.strip()
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict):
        value = body.get("access_token") or body.get("token")
        expires_at = _expiry(body, started)
        if expires_at is None and isinstance(body.get("expires_at"), int | float):
            expires_at = float(body["expires_at"])
        return (value if isinstance(value, str) else None), expires_at
    if isinstance(body, str):
        return body or None, None
    return text or None, None


def auth_from_settings(settings: IBKRSettings) -> AuthProvider:
    """The provider ``settings.auth_mode`` asks for, configured from the settings."""
    if settings.auth_mode == "oauth2":
        assert settings.oauth2_client_id and settings.oauth2_key_id and settings.oauth2_credential
        return OAuth2PrivateKeyJWT(
            client_id=settings.oauth2_client_id,
            key_id=settings.oauth2_key_id,
            private_key=settings.oauth2_private_key,
            private_key_path=settings.oauth2_private_key_path,
            credential=settings.oauth2_credential,
            ip=settings.oauth2_ip,
            ip_echo_url=settings.oauth2_ip_echo_url,
            token_url=settings.oauth2_token_url,
            sso_url=settings.oauth2_sso_url,
            scope=settings.oauth2_scope,
            margin=settings.refresh_margin,
        )
    if settings.auth_mode == "sidecar":
        assert settings.sidecar_url
        return SidecarBearer(
            settings.sidecar_url, token=settings.sidecar_token, margin=settings.refresh_margin
        )
    if settings.access_token is None and settings.is_ibkr_hosted:
        raise ConfigurationError(
            f"{settings.host} needs a bearer token: set IBKR_ACCESS_TOKEN, or IBKR_AUTH_MODE=oauth2 / sidecar "
            "(a local Client Portal Gateway needs none)"
        )
    return StaticBearer(settings.access_token)
