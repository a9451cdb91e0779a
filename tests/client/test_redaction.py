"""Secrets never reach logs, exception messages or reprs.

The main test runs a full session against a real HTTP server on 127.0.0.1 (so httpx and httpcore log
as they do in production) with every logger at DEBUG, and the server even echoes the token back in
error bodies.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Iterator
from urllib.parse import parse_qs

import httpx
import pytest
import respx
import uvicorn
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from ibkr_tasks.client.auth import OAuth2PrivateKeyJWT
from ibkr_tasks.client.redact import install_log_redaction, redact, register_secret, snippet
from ibkr_tasks.client.settings import OAUTH2_SSO_URL, OAUTH2_TOKEN_URL, IBKRSettings
from ibkr_tasks.client.transport import Transport
from ibkr_tasks.errors import APIError, IBKRError, NotAuthenticated

TOKEN = "KNOWN-secret-token-7d41c0ffee"
SESSION_ID = "9f8e7d6c5b4a39281706f5e4d3c2b1a0"


@pytest.fixture(autouse=True)
def _logging_owner_installs_redaction() -> None:
    """These tests own the process's logging, as a flow or a script does: they install the filters
    (a transport never does it on its own; test_run_log_redaction.py checks the flows do)."""
    install_log_redaction()


def _gateway_app() -> Starlette:
    state = {"authenticated": False, "trades": 0, "search": 0}

    def echo_auth(request: Request) -> str:
        return request.headers.get("authorization", "")

    async def status(request: Request) -> JSONResponse:
        return JSONResponse({"authenticated": state["authenticated"], "competing": False, "connected": True})

    async def init(request: Request) -> JSONResponse:
        state["authenticated"] = True
        return JSONResponse({"authenticated": True, "competing": False, "connected": True})

    async def accounts(request: Request) -> JSONResponse:
        return JSONResponse({"accounts": ["DU1234567"], "sessionId": SESSION_ID})

    async def trades(request: Request) -> JSONResponse:
        state["trades"] += 1
        if state["trades"] == 1:  # an expired session that echoes the header it got
            return JSONResponse({"error": f"not authenticated with {echo_auth(request)}"}, status_code=401)
        return JSONResponse([])

    async def search(request: Request) -> JSONResponse:
        state["search"] += 1
        if state["search"] == 1:
            return JSONResponse({"error": "Too many requests"}, status_code=429, headers={"Retry-After": "0"})
        return JSONResponse([{"conid": "265598"}])

    async def tickle(request: Request) -> JSONResponse:
        return JSONResponse({"session": SESSION_ID, "iserver": {"authStatus": {"authenticated": True}}})

    async def forbidden(request: Request) -> JSONResponse:
        return JSONResponse({"error": f"token {TOKEN} not allowed ({echo_auth(request)})"}, status_code=403)

    async def locked_out(request: Request) -> JSONResponse:
        return JSONResponse({"error": f"bad credentials: {echo_auth(request)}"}, status_code=401)

    return Starlette(
        routes=[
            Route("/v1/api/iserver/auth/status", status, methods=["POST"]),
            Route("/v1/api/iserver/auth/ssodh/init", init, methods=["POST"]),
            Route("/v1/api/iserver/accounts", accounts),
            Route("/v1/api/iserver/account/trades", trades),
            Route("/v1/api/iserver/secdef/search", search),
            Route("/v1/api/tickle", tickle, methods=["POST"]),
            Route("/v1/api/iserver/contract/1/info", forbidden),
            Route("/v1/api/iserver/contract/2/info", locked_out),
        ]
    )


@pytest.fixture(scope="module")
def gateway_url() -> Iterator[str]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(_gateway_app(), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline:
            raise RuntimeError("stub gateway did not start")
        time.sleep(0.02)
    yield f"http://127.0.0.1:{port}/v1/api"
    server.should_exit = True
    thread.join(timeout=5)


async def test_full_session_never_logs_or_raises_the_token(
    gateway_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)  # root logger: ibkr_tasks, httpx, httpcore, asyncio, everything
    settings = IBKRSettings(api_url=gateway_url, access_token=TOKEN, account_id="DU1234567")
    errors: list[BaseException] = []
    transport = Transport(settings)
    async with transport as t:
        await t.ensure_session()
        assert await t.request("GET", "/iserver/account/trades") == []  # 401 -> ssodh/init -> retry
        assert await t.request("GET", "/iserver/secdef/search", params={"symbol": "AAPL"})  # 429 -> retry
        await t.tickle()
        for path in ("/iserver/contract/1/info", "/iserver/contract/2/info"):
            with pytest.raises(IBKRError) as err:
                await t.request("GET", path)
            errors.append(err.value)

    # The capture really saw the HTTP stack's own debug output and our request log...
    assert "HTTP Request: GET" in caplog.text  # httpx
    assert "send_request_headers" in caplog.text  # httpcore at DEBUG
    assert "/iserver/account/trades -> 401" in caplog.text  # ours
    # ... and the token is nowhere in it.
    assert TOKEN not in caplog.text
    for record in caplog.records:
        assert TOKEN not in record.getMessage()
        assert TOKEN not in repr(record.args)

    assert isinstance(errors[0], APIError) and errors[0].status_code == 403
    assert isinstance(errors[1], NotAuthenticated)
    for error in errors:
        assert TOKEN not in str(error) and TOKEN not in repr(error) and TOKEN not in repr(error.args)
        assert "Bearer ***" in str(error) or "***" in str(error)
    for obj in (transport, settings, transport.auth, transport.limiter):
        assert TOKEN not in repr(obj) and TOKEN not in str(obj)


async def test_oauth2_tokens_are_not_logged(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    access, bearer = "oauth-access-Zq81x0y7", "sso-bearer-Pw55k2m9"
    base = "https://api.ibkr.com/v1/api"
    sent: dict[str, str] = {}

    def token(request: httpx.Request) -> httpx.Response:
        sent["assertion"] = parse_qs(request.content.decode())["client_assertion"][0]
        return httpx.Response(200, json={"access_token": access, "expires_in": 86399})

    def sso(request: httpx.Request) -> httpx.Response:
        sent["sso"] = request.content.decode()
        return httpx.Response(200, json={"access_token": bearer, "active": True})

    with respx.mock() as router:
        router.get("https://echo.example/ip").respond(200, text="198.51.100.4")
        router.post(OAUTH2_TOKEN_URL).mock(side_effect=token)
        router.post(OAUTH2_SSO_URL).mock(side_effect=sso)
        router.post(f"{base}/iserver/auth/ssodh/init").respond(200, json={"authenticated": True})
        router.get(f"{base}/iserver/contract/9/info").respond(
            500, json={"error": f"upstream said: access_token={access} bearer {bearer} jwt {sent.get('sso')}"}
        )
        auth = OAuth2PrivateKeyJWT(
            client_id="C1",
            key_id="k1",
            private_key=pem,
            credential="user1",
            ip_echo_url="https://echo.example/ip",
        )
        settings = IBKRSettings(api_url=base, username="user1")
        async with Transport(settings, auth=auth, max_retries=0) as t:
            with pytest.raises(IBKRError) as err:
                await t.request("GET", "/iserver/contract/9/info")
    assert "opened OAuth2 SSO session" in caplog.text  # the renewal path did log
    for secret in (access, bearer, sent["assertion"], sent["sso"]):
        assert secret not in caplog.text
        assert secret not in str(err.value)
    assert "BEGIN PRIVATE KEY" not in caplog.text and "BEGIN PRIVATE KEY" not in repr(auth)


async def test_oauth2_refusal_echoing_secrets_does_not_leak_them(caplog: pytest.LogCaptureFixture) -> None:
    """IBKR's problem+json detail is shown in the error, with any echoed token or assertion removed."""
    caplog.set_level(logging.DEBUG)
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    access = "oauth-access-Kq22m4n8"

    def sso(request: httpx.Request) -> httpx.Response:
        detail = (
            f"SSO session JWT: claim 'ip' must be the caller's public IP address "
            f"(got {request.content.decode()} with {request.headers['authorization']})"
        )
        return httpx.Response(
            400,
            json={"type": "/simple", "title": "Bad Request", "status": 400, "detail": detail},
            headers={"content-type": "application/problem+json"},
        )

    with respx.mock() as router:
        router.post(OAUTH2_TOKEN_URL).respond(200, json={"access_token": access, "expires_in": 60})
        sso_route = router.post(OAUTH2_SSO_URL).mock(side_effect=sso)
        auth = OAuth2PrivateKeyJWT(
            client_id="C1", key_id="k1", private_key=key, credential="u1", ip="192.0.2.1"
        )
        async with httpx.AsyncClient() as http:
            with pytest.raises(NotAuthenticated) as err:
                await auth.authorization(http)
    assertion = sso_route.calls[0].request.content.decode()
    message = str(err.value)
    assert "'ip'" in message and "HTTP 400" in message  # the claim IBKR named reaches the user
    for secret in (access, assertion):
        assert secret not in message and secret not in repr(err.value.args)
        assert secret not in caplog.text


def test_redact_removes_credential_shaped_text() -> None:
    jwt_like = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl"
    text = (
        f'Authorization: Bearer abc.def-ghi {{"access_token": "tok123456", "session": "{SESSION_ID}"}} '
        f"client_assertion={jwt_like}&scope=x oauth_token=zzz999"
    )
    out = redact(text)
    for secret in ("abc.def-ghi", "tok123456", SESSION_ID, jwt_like, "zzz999"):
        assert secret not in out
    assert "scope=x" in out


def test_registered_secrets_are_redacted_anywhere_and_snippets_never_cut_one_in_half() -> None:
    secret = "plain-registered-value-123"
    register_secret(secret)
    assert secret not in redact(f"prefix{secret}suffix")
    long_body = "x" * 290 + secret
    out = snippet(long_body, limit=300)
    assert "plain-reg" not in out


async def test_http_stack_log_lines_are_redacted_too(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    sidecar = "http://127.0.0.1:8111/bearer?token=QUERY-secret-55aa"
    with respx.mock() as router:
        router.get(sidecar).respond(200, json={"access_token": "from-sidecar-9c1d2e", "expires_in": 600})
        router.get("https://localhost:5000/v1/api/iserver/contract/5/info").respond(200, json={})
        settings = IBKRSettings(
            api_url="https://localhost:5000/v1/api", auth_mode="sidecar", sidecar_url=sidecar
        )
        async with Transport(settings) as t:
            await t.request("GET", "/iserver/contract/5/info")
    assert "HTTP Request: GET http://127.0.0.1:8111/bearer" in caplog.text  # httpx did log the URL ...
    assert "QUERY-secret-55aa" not in caplog.text  # ... without the token in its query
    assert "from-sidecar-9c1d2e" not in caplog.text
