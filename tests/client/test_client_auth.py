"""Auth providers: OAuth 2.0 private_key_jwt (claims + signatures checked with the public key), refresh
before expiry, one shared refresh for concurrent callers, the sidecar and the static bearer."""

from __future__ import annotations

import asyncio
from urllib.parse import parse_qs

import httpx
import jwt
import pytest
import respx
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from pydantic import SecretStr

from ibkr_tasks.client.auth import (
    CLIENT_ASSERTION_TYPE,
    OAuth2PrivateKeyJWT,
    SidecarBearer,
    StaticBearer,
    auth_from_settings,
)
from ibkr_tasks.client.clock import FakeClock
from ibkr_tasks.client.settings import OAUTH2_SSO_URL, OAUTH2_TOKEN_URL, IBKRSettings
from ibkr_tasks.client.transport import Transport
from ibkr_tasks.errors import ConfigurationError, NotAuthenticated

CLIENT_ID = "TESTCLIENT"
KEY_ID = "main-key-1"
USERNAME = "jdoe123"


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def pem(rsa_key: rsa.RSAPrivateKey) -> str:
    return rsa_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


class OAuthServer:
    """respx routes for the token and sso-sessions endpoints that hand out numbered tokens."""

    def __init__(self, router: respx.MockRouter, *, expires_in: int | None = 600) -> None:
        self.issued = 0
        self.expires_in = expires_in
        self.token_route = router.post(OAUTH2_TOKEN_URL).mock(side_effect=self._token)
        self.sso_route = router.post(OAUTH2_SSO_URL).mock(side_effect=self._sso)

    def _token(self, request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            200,
            json={
                "access_token": f"access-token-{self.issued + 1}",
                "token_type": "Bearer",
                "expires_in": 86399,
            },
        )

    def _sso(self, request: httpx.Request) -> httpx.Response:
        self.issued += 1
        body: dict[str, object] = {"access_token": f"sso-bearer-{self.issued}", "active": True}
        if self.expires_in is not None:
            body["expires_in"] = self.expires_in
        return httpx.Response(200, json=body)


def provider(pem: str, clock: FakeClock, **kwargs: object) -> OAuth2PrivateKeyJWT:
    return OAuth2PrivateKeyJWT(
        client_id=CLIENT_ID,
        key_id=KEY_ID,
        private_key=SecretStr(pem),
        credential=USERNAME,
        ip="203.0.113.7",
        clock=clock,
        **kwargs,  # type: ignore[arg-type]
    )


async def test_oauth2_flow_sends_signed_assertions_and_returns_the_sso_bearer(
    rsa_key: rsa.RSAPrivateKey, pem: str
) -> None:
    clock = FakeClock(start=1_750_000_000.0)
    public = rsa_key.public_key()
    with respx.mock() as router:
        server = OAuthServer(router)
        async with httpx.AsyncClient() as http:
            header = await provider(pem, clock).authorization(http)
    assert header == "Bearer sso-bearer-1"

    # 1. token endpoint: client-credentials form with an RS256 client assertion.
    token_request = server.token_route.calls[0].request
    assert token_request.headers["content-type"].startswith("application/x-www-form-urlencoded")
    form = {k: v[0] for k, v in parse_qs(token_request.content.decode()).items()}
    assert form["grant_type"] == "client_credentials"
    assert form["client_assertion_type"] == CLIENT_ASSERTION_TYPE
    assert form["scope"] == "sso-sessions.write"
    assertion = form["client_assertion"]
    assert jwt.get_unverified_header(assertion) == {"alg": "RS256", "typ": "JWT", "kid": KEY_ID}
    claims = jwt.decode(
        assertion, public, algorithms=["RS256"], audience="/token", options={"verify_exp": False}
    )
    assert claims["iss"] == claims["sub"] == CLIENT_ID
    assert claims["aud"] == "/token"
    assert claims["iat"] <= clock() < claims["exp"] <= clock() + 600

    # 2. sso-sessions: bearer = access token, body = an RS256 JWT saying who and from where.
    sso_request = server.sso_route.calls[0].request
    assert sso_request.headers["authorization"] == "Bearer access-token-1"
    assert sso_request.headers["content-type"] == "application/jwt"
    body = sso_request.content.decode()
    assert jwt.get_unverified_header(body)["alg"] == "RS256"
    sso_claims = jwt.decode(body, public, algorithms=["RS256"], options={"verify_exp": False})
    assert sso_claims["credential"] == USERNAME
    assert sso_claims["iss"] == CLIENT_ID
    assert sso_claims["ip"] == "203.0.113.7"
    assert sso_claims["iat"] <= clock() < sso_claims["exp"]


async def test_signature_does_not_verify_with_another_key(pem: str) -> None:
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key()
    assertion = provider(pem, FakeClock(start=1_750_000_000.0)).client_assertion()
    with pytest.raises(jwt.InvalidSignatureError):
        jwt.decode(assertion, other, algorithms=["RS256"], audience="/token", options={"verify_exp": False})


async def test_bearer_is_refreshed_before_it_expires(pem: str) -> None:
    clock = FakeClock(start=1_750_000_000.0)
    with respx.mock() as router:
        server = OAuthServer(router, expires_in=600)
        auth = provider(pem, clock, margin=120)
        async with httpx.AsyncClient() as http:
            assert await auth.authorization(http) == "Bearer sso-bearer-1"
            clock.advance(470)  # 130 s left: still fresh
            assert await auth.authorization(http) == "Bearer sso-bearer-1"
            clock.advance(20)  # 110 s left: inside the margin -> renewed before any request can fail
            assert await auth.authorization(http) == "Bearer sso-bearer-2"
    assert server.token_route.call_count == 2


async def test_concurrent_callers_share_one_refresh(pem: str) -> None:
    clock = FakeClock(start=1_750_000_000.0)
    with respx.mock() as router:
        server = OAuthServer(router)
        auth = provider(pem, clock)
        async with httpx.AsyncClient() as http:
            headers = await asyncio.gather(*(auth.authorization(http) for _ in range(20)))
    assert set(headers) == {"Bearer sso-bearer-1"}
    assert server.token_route.call_count == 1
    assert server.sso_route.call_count == 1


async def test_sso_expiry_falls_back_to_the_tokens_own_exp(rsa_key: rsa.RSAPrivateKey, pem: str) -> None:
    clock = FakeClock(start=1_750_000_000.0)
    sso_jwt = jwt.encode({"exp": int(clock()) + 300}, rsa_key, algorithm="RS256")
    with respx.mock() as router:
        router.post(OAUTH2_TOKEN_URL).respond(200, json={"access_token": "acc-xyz-123", "expires_in": 86399})
        sso = router.post(OAUTH2_SSO_URL).respond(200, json={"access_token": sso_jwt})
        auth = provider(pem, clock, margin=60)
        async with httpx.AsyncClient() as http:
            await auth.authorization(http)
            clock.advance(250)  # 50 s left < 60 s margin
            await auth.authorization(http)
    assert sso.call_count == 2


async def test_token_endpoint_error_is_not_authenticated_without_secrets(pem: str) -> None:
    with respx.mock() as router:
        router.post(OAUTH2_TOKEN_URL).respond(
            400,
            json={"type": "/simple", "title": "Bad Request", "status": 400},
            headers={"content-type": "application/problem+json"},
        )
        async with httpx.AsyncClient() as http:
            with pytest.raises(NotAuthenticated, match="HTTP 400") as err:
                await provider(pem, FakeClock()).authorization(http)
    assert "PRIVATE KEY" not in str(err.value)


async def test_transport_renews_oauth2_bearer_after_a_401(pem: str) -> None:
    clock = FakeClock(start=1_750_000_000.0)
    base = "https://api.ibkr.com/v1/api"
    with respx.mock() as router:
        server = OAuthServer(router, expires_in=3600)
        router.post(f"{base}/iserver/auth/ssodh/init").respond(200, json={"authenticated": True})
        seen: list[str] = []

        def accounts(request: httpx.Request) -> httpx.Response:
            seen.append(request.headers["authorization"])
            if len(seen) == 1:
                return httpx.Response(401, json={"error": "not authenticated"})
            return httpx.Response(200, json=[])

        router.get(f"{base}/portfolio/accounts").mock(side_effect=accounts)
        settings = IBKRSettings(api_url=base, username=USERNAME)
        async with Transport(settings, auth=provider(pem, clock), clock=clock, sleep=clock.sleep) as t:
            await t.request("GET", "/portfolio/accounts")
    assert seen == ["Bearer sso-bearer-1", "Bearer sso-bearer-2"]
    assert server.issued == 2


async def test_sidecar_json_token_is_cached_until_expiry() -> None:
    clock = FakeClock(start=1_750_000_000.0)
    with respx.mock() as router:
        n = {"count": 0}

        def hand_out(request: httpx.Request) -> httpx.Response:
            n["count"] += 1
            assert request.headers["authorization"] == "Bearer sidecar-access-secret"
            return httpx.Response(200, json={"access_token": f"lst-token-{n['count']}", "expires_in": 300})

        router.get("http://127.0.0.1:8111/token").mock(side_effect=hand_out)
        auth = SidecarBearer(
            "http://127.0.0.1:8111/token", token=SecretStr("sidecar-access-secret"), margin=60, clock=clock
        )
        async with httpx.AsyncClient() as http:
            assert await auth.authorization(http) == "Bearer lst-token-1"
            clock.advance(200)
            assert await auth.authorization(http) == "Bearer lst-token-1"
            clock.advance(50)  # 50 s left < margin
            assert await auth.authorization(http) == "Bearer lst-token-2"
            await auth.invalidate()
            assert await auth.authorization(http) == "Bearer lst-token-3"


async def test_sidecar_plain_text_token() -> None:
    with respx.mock() as router:
        router.get("http://sidecar.local/bearer").respond(200, text="plain-token-abcdef\n")
        async with httpx.AsyncClient() as http:
            assert (
                await SidecarBearer("http://sidecar.local/bearer").authorization(http)
                == "Bearer plain-token-abcdef"
            )


async def test_sidecar_down_is_not_authenticated() -> None:
    with respx.mock() as router:
        router.get("http://sidecar.local/bearer").mock(side_effect=httpx.ConnectError("refused"))
        async with httpx.AsyncClient() as http:
            with pytest.raises(NotAuthenticated, match="sidecar"):
                await SidecarBearer("http://sidecar.local/bearer").authorization(http)


async def test_static_bearer_and_no_header() -> None:
    async with httpx.AsyncClient() as http:
        assert (
            await StaticBearer(SecretStr("abc-placeholder")).authorization(http) == "Bearer abc-placeholder"
        )
        assert await StaticBearer(None).authorization(http) is None
        assert await StaticBearer("").authorization(http) is None


async def test_gateway_without_token_sends_no_authorization_header() -> None:
    base = "https://localhost:5000/v1/api"
    with respx.mock() as router:
        route = router.get(f"{base}/portfolio/accounts").respond(200, json=[])
        async with Transport(IBKRSettings(api_url=base)) as t:
            await t.request("GET", "/portfolio/accounts")
    assert "authorization" not in route.calls[0].request.headers


def test_auth_from_settings_picks_the_provider(pem: str, tmp_path) -> None:
    key_file = tmp_path / "key.pem"
    key_file.write_text(pem)
    oauth = auth_from_settings(
        IBKRSettings(
            auth_mode="oauth2",
            oauth2_client_id=CLIENT_ID,
            oauth2_key_id=KEY_ID,
            oauth2_private_key_path=key_file,
            oauth2_credential=USERNAME,
        )
    )
    assert isinstance(oauth, OAuth2PrivateKeyJWT)
    sidecar = auth_from_settings(IBKRSettings(auth_mode="sidecar", sidecar_url="http://127.0.0.1:9/t"))
    assert isinstance(sidecar, SidecarBearer)
    gateway = auth_from_settings(IBKRSettings(api_url="https://localhost:5000/v1/api"))
    assert isinstance(gateway, StaticBearer)


def test_hosted_api_without_a_token_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="IBKR_ACCESS_TOKEN"):
        auth_from_settings(IBKRSettings(api_url="https://api.ibkr.com/v1/api"))


def test_bad_private_key_error_does_not_echo_the_key() -> None:
    with pytest.raises(ConfigurationError) as err:
        OAuth2PrivateKeyJWT(
            client_id=CLIENT_ID,
            key_id=KEY_ID,
            private_key="-----BEGIN PRIVATE KEY-----\nnot-a-key-zzz",
            credential="u",
        )
    assert "not-a-key-zzz" not in str(err.value)


async def test_sso_request_always_carries_the_ip_discovered_from_the_echo_service(
    pem: str, rsa_key: rsa.RSAPrivateKey
) -> None:
    """Without IBKR_OAUTH2_IP the 'ip' claim holds the address the echo service answers (IBKR requires it)."""
    echo = "https://echo.example/ip"
    with respx.mock() as router:
        server = OAuthServer(router)
        router.get(echo).respond(200, text="198.51.100.23\n")
        auth = OAuth2PrivateKeyJWT(
            client_id=CLIENT_ID, key_id=KEY_ID, private_key=pem, credential=USERNAME, ip_echo_url=echo
        )
        async with httpx.AsyncClient() as http:
            await auth.authorization(http)
    body = server.sso_route.calls[0].request.content.decode()
    claims = jwt.decode(body, rsa_key.public_key(), algorithms=["RS256"], options={"verify_exp": False})
    assert claims["ip"] == "198.51.100.23"
    assert claims["credential"] == USERNAME


async def test_echo_service_answering_json_or_garbage(pem: str) -> None:
    echo = "https://echo.example/ip"
    auth = OAuth2PrivateKeyJWT(
        client_id=CLIENT_ID, key_id=KEY_ID, private_key=pem, credential=USERNAME, ip_echo_url=echo
    )
    with respx.mock() as router:
        route = router.get(echo)
        async with httpx.AsyncClient() as http:
            route.respond(200, json={"ip": "2001:db8::7"})
            assert await auth.public_ip(http) == "2001:db8::7"
            route.respond(200, text="<html>captive portal</html>")
            with pytest.raises(ConfigurationError, match="IBKR_OAUTH2_IP"):
                await auth.public_ip(http)
            route.mock(side_effect=httpx.ConnectError("offline"))
            with pytest.raises(ConfigurationError, match="set IBKR_OAUTH2_IP"):
                await auth.public_ip(http)


def test_no_ip_and_no_echo_service_is_a_configuration_error(pem: str) -> None:
    with pytest.raises(ConfigurationError, match="IBKR_OAUTH2_IP"):
        OAuth2PrivateKeyJWT(
            client_id=CLIENT_ID, key_id=KEY_ID, private_key=pem, credential=USERNAME, ip_echo_url=None
        )
    with pytest.raises(ConfigurationError, match=r"IBKR_OAUTH2_IP .*or IBKR_OAUTH2_IP_ECHO_URL"):
        IBKRSettings(
            auth_mode="oauth2",
            oauth2_client_id=CLIENT_ID,
            oauth2_key_id=KEY_ID,
            oauth2_private_key=pem,
            oauth2_credential=USERNAME,
            oauth2_ip_echo_url="off",
        )
    with pytest.raises(ConfigurationError, match="oauth2_ip"):
        IBKRSettings(oauth2_ip="my-laptop")


def test_configured_ip_is_used_without_a_lookup(pem: str, rsa_key: rsa.RSAPrivateKey) -> None:
    settings = IBKRSettings(
        auth_mode="oauth2",
        oauth2_client_id=CLIENT_ID,
        oauth2_key_id=KEY_ID,
        oauth2_private_key=pem,
        oauth2_credential=USERNAME,
        oauth2_ip=" 203.0.113.9 ",
        oauth2_ip_echo_url="off",
    )
    auth = auth_from_settings(settings)
    assert isinstance(auth, OAuth2PrivateKeyJWT)
    claims = jwt.decode(auth.sso_assertion(), rsa_key.public_key(), algorithms=["RS256"])
    assert claims["ip"] == "203.0.113.9"
    assert claims["credential"] == USERNAME


@pytest.mark.usefixtures("ibkr_pacing")  # its times follow IBKR's own 1-per-5-s /portfolio/accounts limit
async def test_bearer_that_expires_during_a_pacing_wait_is_renewed_before_sending(pem: str) -> None:
    """/portfolio/accounts is paced to one request per 5 s; a request queued behind another can wait
    longer than its bearer has left. It then gives up its slot, renews and waits again, rather than
    send a bearer the server refuses."""
    clock = FakeClock(start=1_750_000_000.0)
    base = "https://api.ibkr.com/v1/api"
    expiry: dict[str, float] = {}
    arrivals: list[tuple[float, str]] = []

    def sso(request: httpx.Request) -> httpx.Response:
        bearer = f"sso-bearer-{len(expiry) + 1}"
        expiry[bearer] = clock() + 10
        return httpx.Response(200, json={"access_token": bearer, "expires_in": 10})

    def accounts(request: httpx.Request) -> httpx.Response:
        bearer = request.headers["authorization"].split()[1]
        arrivals.append((clock(), bearer))
        if clock() >= expiry[bearer]:
            return httpx.Response(401, json={"error": "bearer expired"})
        return httpx.Response(200, json=[])

    with respx.mock() as router:
        router.post(OAUTH2_TOKEN_URL).respond(200, json={"access_token": "access-x1", "expires_in": 86399})
        router.post(OAUTH2_SSO_URL).mock(side_effect=sso)
        init = router.post(f"{base}/iserver/auth/ssodh/init").respond(200, json={"authenticated": True})
        router.get(f"{base}/portfolio/accounts").mock(side_effect=accounts)
        settings = IBKRSettings(api_url=base, username=USERNAME)
        auth = provider(pem, clock, margin=2)
        async with Transport(settings, auth=auth, clock=clock, sleep=clock.sleep, keep_alive_interval=0) as t:
            await t.request("GET", "/portfolio/accounts")  # t=0, bearer 1 valid until t=10
            await clock.sleep(4.5)
            # bearer 1 is fresh (5.5 s left); the second request's slot is at t=10, when it has expired
            await asyncio.gather(*(t.request("GET", "/portfolio/accounts") for _ in range(2)))
    assert all(when < expiry[bearer] for when, bearer in arrivals), arrivals
    assert [b for _, b in arrivals] == ["sso-bearer-1", "sso-bearer-1", "sso-bearer-2"]
    assert init.call_count == 2  # the renewed SSO session opened its brokerage session too
