"""OAuth 2.0 as api.ibkr.com serves it: the token endpoint, SSO sessions and the bearer check.

With ``Scenario.oauth2`` set (docs/simulator.md#oauth2, docs/ibkr-api.md#oauth2):

- ``POST /oauth2/api/v1/token`` (form: ``grant_type=client_credentials``, ``client_assertion_type``,
  ``client_assertion``, ``scope``) verifies the RS256 client assertion with the registered public key
  (``kid`` header; ``iss`` = ``sub`` = client id, ``aud``, ``exp``) and answers an access token;
- ``POST /gw/api/v1/sso-sessions`` (``Authorization: Bearer <access token>``,
  ``Content-Type: application/jwt``, body an RS256 JWT with ``credential``, ``ip``, ``iss``, ``exp``)
  opens an SSO session and answers its bearer;
- every ``/v1/api`` request must carry an unexpired SSO bearer (else 401), and ``/iserver`` requests one
  whose SSO session opened its brokerage session with ``ssodh/init`` (else 400 "no bridge").

Refusals are IBKR's RFC 9457 problem details (``application/problem+json``) whose ``detail`` names
the claim or header at fault. Times (``exp``, bearer expiry) run on the wall clock, as the client's do:
``/sim/advance`` moves the market, not the tokens' clocks.
"""

from __future__ import annotations

import ipaddress
import json
import random
from typing import Any
from urllib.parse import parse_qs

import jwt
from cryptography.hazmat.primitives import serialization
from starlette.requests import Request
from starlette.responses import Response

from ibkr_tasks.sim.oauth2 import SSOSession
from ibkr_tasks.sim.scenario import OAuth2Scenario
from ibkr_tasks.sim.state import SimState

TOKEN_PATH = "/oauth2/api/v1/token"  # noqa: S105 (a path, not a password)
SSO_PATH = "/gw/api/v1/sso-sessions"
CLIENT_ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
SSO_SCOPE = "sso-sessions.write"


def problem(status: int, title: str, detail: str, instance: str) -> Response:
    """An RFC 9457 problem detail, the shape IBKR's OAuth 2.0 endpoints answer errors in."""
    body = {"type": "/simple", "title": title, "status": status, "detail": detail, "instance": instance}
    return Response(json.dumps(body), status_code=status, media_type="application/problem+json")


class Refused(Exception):
    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


_TITLES = {400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 405: "Method Not Allowed"}


def wall_seconds(st: SimState) -> float:
    """Epoch seconds of the wall clock the client signs with (the simulator clock minus /sim/advance)."""
    return st.clock.now().timestamp() - st.clock.offset.total_seconds()


def _config(st: SimState) -> OAuth2Scenario:
    cfg = st.scenario.oauth2
    assert cfg is not None
    return cfg


def _token(rng: random.Random, prefix: str) -> str:
    return prefix + f"{rng.getrandbits(192):048x}"


def _verify(cfg: OAuth2Scenario, token: str, what: str) -> dict[str, Any]:
    """Check the header and the signature of a client-signed JWT; return its claims (unchecked)."""
    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError:
        raise Refused(400, f"{what} is not a JWT") from None
    if header.get("alg") != "RS256":
        raise Refused(400, f"{what}: header 'alg' must be RS256, got {header.get('alg')!r}")
    kid = header.get("kid")
    if not kid:
        raise Refused(400, f"{what}: header 'kid' is missing (the key id of the registered public key)")
    if kid != cfg.key_id:
        raise Refused(400, f"{what}: header 'kid' {kid!r} names no public key registered for this client")
    key = serialization.load_pem_public_key(cfg.public_key_pem.encode())
    try:
        claims = jwt.decode(
            token,
            key,  # type: ignore[arg-type]
            algorithms=["RS256"],
            options={
                "verify_exp": False,
                "verify_aud": False,
                "verify_iat": False,
                "verify_nbf": False,
                "verify_iss": False,
                "verify_sub": False,
                "verify_jti": False,
            },
        )
    except jwt.InvalidSignatureError:
        raise Refused(400, f"{what}: signature does not verify with the registered public key") from None
    except jwt.PyJWTError as exc:
        raise Refused(400, f"{what} could not be decoded ({type(exc).__name__})") from None
    return claims


def _require(claims: dict[str, Any], name: str, what: str) -> Any:
    value = claims.get(name)
    if value is None or value == "":
        raise Refused(400, f"{what}: claim '{name}' is missing")
    return value


def _check_exp(claims: dict[str, Any], what: str, now: float, leeway: float) -> None:
    exp = _require(claims, "exp", what)
    if isinstance(exp, bool) or not isinstance(exp, int | float):
        raise Refused(400, f"{what}: claim 'exp' must be a number of seconds since the epoch")
    if exp + leeway < now:
        raise Refused(400, f"{what}: claim 'exp' is in the past (expired {now - exp:.0f} s ago)")


async def endpoint(st: SimState, request: Request, path: str) -> Response:
    """``/oauth2/...`` and ``/gw/...`` requests."""
    oauth = st.oauth2
    if st.scenario.oauth2 is None:
        return problem(404, "Not Found", "OAuth 2.0 is not enabled in this scenario (Scenario.oauth2)", path)
    if path not in (TOKEN_PATH, SSO_PATH):
        return problem(404, "Not Found", f"{path} is not simulated", path)
    kind = "token" if path == TOKEN_PATH else "sso"
    try:
        if request.method != "POST":
            raise Refused(405, f"{path} accepts POST only")
        if kind == "token":
            body = await _issue_token(st, request)
        else:
            body = await _open_sso_session(st, request)
    except Refused as refused:
        key = f"{kind} {refused.status}"
        oauth.refused[key] = oauth.refused.get(key, 0) + 1
        return problem(refused.status, _TITLES.get(refused.status, "Error"), refused.detail, path)
    return Response(json.dumps(body), media_type="application/json")


async def _issue_token(st: SimState, request: Request) -> dict[str, Any]:
    cfg = _config(st)
    ctype = request.headers.get("content-type", "")
    if not ctype.startswith("application/x-www-form-urlencoded"):
        raise Refused(400, "the token request must be application/x-www-form-urlencoded")
    form = {k: v[0] for k, v in parse_qs((await request.body()).decode("utf-8", "replace")).items()}
    if form.get("grant_type") != "client_credentials":
        raise Refused(400, f"grant_type must be client_credentials, got {form.get('grant_type')!r}")
    if form.get("client_assertion_type") != CLIENT_ASSERTION_TYPE:
        raise Refused(400, f"client_assertion_type must be {CLIENT_ASSERTION_TYPE}")
    assertion = form.get("client_assertion")
    if not assertion:
        raise Refused(400, "client_assertion is missing")
    what = "client_assertion"
    claims = _verify(cfg, assertion, what)
    for name in ("iss", "sub"):
        value = _require(claims, name, what)
        if value != cfg.client_id:
            raise Refused(400, f"{what}: claim '{name}' must be the registered client id")
    aud = _require(claims, "aud", what)
    audiences = aud if isinstance(aud, list) else [aud]
    if cfg.audience not in audiences:
        raise Refused(400, f"{what}: claim 'aud' must be {cfg.audience!r}")
    _check_exp(claims, what, wall_seconds(st), cfg.leeway_seconds)
    scopes = (form.get("scope") or SSO_SCOPE).split()
    if SSO_SCOPE not in scopes:
        raise Refused(400, f"scope must include {SSO_SCOPE}")
    oauth = st.oauth2
    token = _token(oauth.rng, "simacc-")
    oauth.access_tokens[token] = wall_seconds(st) + cfg.access_token_seconds
    oauth.tokens_issued += 1
    return {
        "access_token": token,
        "token_type": "Bearer",
        "scope": SSO_SCOPE,
        "expires_in": int(cfg.access_token_seconds),
    }


async def _open_sso_session(st: SimState, request: Request) -> dict[str, Any]:
    cfg = _config(st)
    oauth = st.oauth2
    now = wall_seconds(st)
    auth = request.headers.get("authorization", "")
    if not auth.lower().startswith("bearer "):
        raise Refused(401, "the Authorization header must be 'Bearer <access token>'")
    expiry = oauth.access_tokens.get(auth[7:].strip())
    if expiry is None:
        raise Refused(401, "the access token is not one the token endpoint issued")
    if expiry <= now:
        raise Refused(401, "the access token has expired; request a new one")
    if request.headers.get("content-type", "").split(";")[0].strip() != "application/jwt":
        raise Refused(400, "the SSO session request must be Content-Type application/jwt")
    what = "SSO session JWT"
    claims = _verify(cfg, (await request.body()).decode("utf-8", "replace").strip(), what)
    credential = _require(claims, "credential", what)
    if cfg.credential is not None and credential != cfg.credential:
        raise Refused(400, f"{what}: claim 'credential' names no username this client may open sessions for")
    ip = _require(claims, "ip", what)
    try:
        ipaddress.ip_address(str(ip))
    except ValueError:
        raise Refused(400, f"{what}: claim 'ip' must be the caller's public IP address") from None
    if _require(claims, "iss", what) != cfg.client_id:
        raise Refused(400, f"{what}: claim 'iss' must be the registered client id")
    _check_exp(claims, what, now, cfg.leeway_seconds)
    oauth.sso_sessions += 1
    expires_at = now + cfg.bearer_seconds
    # The bearer is a JWT whose exp says when it stops working (signed with a key of the simulator's).
    bearer = jwt.encode(
        {
            "sub": str(credential),
            "sid": oauth.sso_sessions,
            "iat": int(now),
            "exp": int(expires_at),
            "jti": _token(oauth.rng, ""),
        },
        "simulator-sso-signing-key-" + cfg.client_id,
        algorithm="HS256",
    )
    oauth.sessions[bearer] = SSOSession(number=oauth.sso_sessions, expires_at=int(expires_at))
    return {"active": True, "access_token": bearer}


def bearer_session(st: SimState, request: Request) -> tuple[SSOSession | None, Response | None]:
    """The SSO session of the request's bearer, or the 401 an absent, unknown or expired one gets."""
    oauth = st.oauth2
    auth = request.headers.get("authorization", "")
    session = oauth.sessions.get(auth[7:].strip()) if auth.lower().startswith("bearer ") else None
    if session is None or session.expires_at <= wall_seconds(st):
        why = "expired" if session is not None else "missing or unknown"
        oauth.refused[f"api 401 {why}"] = oauth.refused.get(f"api 401 {why}", 0) + 1
        body = {"error": f"not authenticated: SSO bearer {why}", "statusCode": 401}
        return None, Response(json.dumps(body), status_code=401, media_type="application/json")
    return session, None


def ip_echo(request: Request) -> Response:
    """``GET /sim/ip``: the caller's address as plain text, like a public address-echo service."""
    host = request.client.host if request.client else "127.0.0.1"
    try:
        ipaddress.ip_address(host)
    except ValueError:
        host = "127.0.0.1"  # an in-process client has no socket address
    return Response(host, media_type="text/plain")
