"""OAuth 2.0 against the simulator: the token and SSO endpoints verify what IBKR verifies, refuse a
missing or wrong claim with a problem+json 400 naming it (and the client's error names it too), bearers
expire, and a renewed bearer opens its brokerage session before it is used."""

from __future__ import annotations

from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from ibkr_tasks.client.auth import OAuth2PrivateKeyJWT
from ibkr_tasks.client.clock import FakeClock
from ibkr_tasks.client.settings import IBKRSettings
from ibkr_tasks.client.transport import Transport
from ibkr_tasks.errors import NotAuthenticated
from ibkr_tasks.sim import Scenario, create_app
from ibkr_tasks.sim.asgi import SimApp
from ibkr_tasks.sim.scenario import OAuth2Scenario
from ibkr_tasks.sim.testing import FakeTime, sim_client

CLIENT_ID = "SIMCLIENT1"
KEY_ID = "main"
USERNAME = "simuser42"
SIM = "http://sim"


@pytest.fixture(scope="module")
def key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def other_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def public_pem(key: rsa.RSAPrivateKey) -> str:
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


def scenario(key: rsa.RSAPrivateKey, **oauth: Any) -> Scenario:
    return Scenario(
        seed=3,
        accounts=2,
        positions_per_account=3,
        fills_per_account_per_day=3,
        history_days=1,
        oauth2=OAuth2Scenario(
            client_id=CLIENT_ID, key_id=KEY_ID, public_key_pem=public_pem(key), credential=USERNAME, **oauth
        ),
    )


Patch = dict[str, Any]


class Tampered(OAuth2PrivateKeyJWT):
    """The real provider with one claim or header changed (a value of None removes it)."""

    def __init__(
        self,
        *,
        token: Patch | None = None,
        sso: Patch | None = None,
        token_header: Patch | None = None,
        signing_key: rsa.RSAPrivateKey | None = None,
        sso_signing_key: rsa.RSAPrivateKey | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.patches = (token or {}, sso or {}, token_header or {})
        self.keys = (signing_key, sso_signing_key)

    @staticmethod
    def _apply(claims: dict[str, Any], patch: Patch) -> dict[str, Any]:
        for name, value in patch.items():
            if value is None:
                claims.pop(name, None)
            else:
                claims[name] = value(claims) if callable(value) else value
        return claims

    def client_assertion(self) -> str:
        header = self._apply({"kid": self.key_id, "typ": "JWT"}, self.patches[2])
        claims = self._apply(self.client_assertion_claims(), self.patches[0])
        return jwt.encode(claims, self.keys[0] or self._key, algorithm="RS256", headers=header)

    def sso_assertion(self, ip: str | None = None) -> str:
        claims = self._apply(self.sso_claims(ip or "127.0.0.1"), self.patches[1])
        return jwt.encode(claims, self.keys[1] or self._key, algorithm="RS256", headers={"kid": self.key_id})


def provider(key: rsa.RSAPrivateKey, time: FakeTime, cls: type = OAuth2PrivateKeyJWT, **kwargs: Any) -> Any:
    return cls(
        client_id=CLIENT_ID,
        key_id=KEY_ID,
        private_key=key,
        credential=USERNAME,
        ip_echo_url=f"{SIM}/sim/ip",
        token_url=f"{SIM}/oauth2/api/v1/token",
        sso_url=f"{SIM}/gw/api/v1/sso-sessions",
        clock=lambda: time.wall().timestamp(),
        **kwargs,
    )


def transport(app: SimApp, auth: OAuth2PrivateKeyJWT, clock: FakeClock) -> Transport:
    return Transport(
        IBKRSettings(api_url=f"{SIM}/v1/api", username=USERNAME),
        auth=auth,
        http_transport=httpx.ASGITransport(app=app),
        clock=clock,
        sleep=clock.sleep,
        keep_alive_interval=0,
    )


async def stats(app: SimApp) -> dict[str, Any]:
    async with sim_client(app) as c:
        return (await c.get("/sim/stats")).json()


async def test_renewed_bearer_opens_its_brokerage_session_before_it_is_used(key: rsa.RSAPrivateKey) -> None:
    time = FakeTime()
    app = create_app(scenario(key, bearer_seconds=600), **time.kwargs())
    auth = provider(key, time, margin=120)
    async with transport(app, auth, FakeClock()) as t:
        assert await t.request("GET", "/iserver/account/trades") is not None
        time.tick(500)  # 100 s left < 120 s margin: the next request renews first
        assert await t.request("GET", "/iserver/account/trades") is not None
        time.tick(500)
        await t.request("GET", "/portfolio/accounts")
    s = await stats(app)
    assert s["oauth2"]["sso_sessions"] == 3 and s["oauth2"]["renewals"] == 2
    # every SSO session opened its brokerage session at once: nothing was refused, nothing retried
    assert s["requests"]["POST /iserver/auth/ssodh/init"] == 3
    assert s["oauth2"]["sso_sessions_bridged"] == 3
    assert s["statuses"] == {"200": s["requests_total"]}
    assert s["oauth2"]["refused"] == {}


async def test_api_requests_need_an_unexpired_sso_bearer(key: rsa.RSAPrivateKey) -> None:
    time = FakeTime()
    app = create_app(scenario(key, bearer_seconds=300), **time.kwargs())
    auth = provider(key, time)
    async with sim_client(app) as c:
        assert (await c.get("/v1/api/portfolio/accounts")).status_code == 401
        bearer = (await auth.authorization(c)).split()[1]
        headers = {"Authorization": f"Bearer {bearer}"}
        assert (await c.get("/v1/api/portfolio/accounts", headers=headers)).status_code == 200
        # a new SSO session has no brokerage session until ssodh/init
        no_bridge = await c.get("/v1/api/iserver/accounts", headers=headers)
        assert no_bridge.status_code == 400 and "no bridge" in no_bridge.text
        init = await c.post("/v1/api/iserver/auth/ssodh/init", json={"publish": True}, headers=headers)
        assert init.status_code == 200
        assert (await c.get("/v1/api/iserver/accounts", headers=headers)).status_code == 200
        time.tick(301)
        expired = await c.get("/v1/api/portfolio/accounts", headers=headers)
        assert expired.status_code == 401 and "expired" in expired.text
        wrong = {"Authorization": "Bearer not-a-bearer-the-simulator-issued"}
        assert (await c.get("/v1/api/tickle", headers=wrong)).status_code == 401


async def test_ip_echo_answers_the_callers_address(key: rsa.RSAPrivateKey) -> None:
    app = create_app(scenario(key))
    async with sim_client(app) as c:
        response = await c.get("/sim/ip")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    assert response.text == "127.0.0.1"


def _past(claims: dict[str, Any]) -> int:
    return int(claims["iat"]) - 3600


# (stage, how the request is changed, what the refusal must name)
CASES: list[tuple[str, dict[str, Any], str]] = [
    ("token", {"token": {"iss": None}}, "'iss'"),
    ("token", {"token": {"iss": "SOMEONEELSE"}}, "'iss'"),
    ("token", {"token": {"sub": None}}, "'sub'"),
    ("token", {"token": {"sub": "SOMEONEELSE"}}, "'sub'"),
    ("token", {"token": {"aud": None}}, "'aud'"),
    ("token", {"token": {"aud": "/elsewhere"}}, "'aud'"),
    ("token", {"token": {"exp": None}}, "'exp'"),
    ("token", {"token": {"exp": _past}}, "'exp'"),
    ("token", {"token_header": {"kid": None}}, "'kid'"),
    ("token", {"token_header": {"kid": "retired-key"}}, "'kid'"),
    ("token", {"signing_key": "other"}, "signature"),
    ("sso", {"sso": {"credential": None}}, "'credential'"),
    ("sso", {"sso": {"credential": "someone_else"}}, "'credential'"),
    ("sso", {"sso": {"ip": None}}, "'ip'"),
    ("sso", {"sso": {"ip": "my-laptop"}}, "'ip'"),
    ("sso", {"sso": {"iss": None}}, "'iss'"),
    ("sso", {"sso": {"iss": "SOMEONEELSE"}}, "'iss'"),
    ("sso", {"sso": {"exp": None}}, "'exp'"),
    ("sso", {"sso": {"exp": _past}}, "'exp'"),
    ("sso", {"sso_signing_key": "other"}, "signature"),
]


@pytest.mark.parametrize(
    ("stage", "change", "named"), CASES, ids=[f"{c[0]}-{c[2]}-{i}" for i, c in enumerate(CASES)]
)
async def test_missing_or_wrong_claim_is_refused_with_a_400_naming_it(
    key: rsa.RSAPrivateKey, other_key: rsa.RSAPrivateKey, stage: str, change: dict[str, Any], named: str
) -> None:
    time = FakeTime()
    app = create_app(scenario(key), **time.kwargs())
    change = {k: (other_key if v == "other" else v) for k, v in change.items()}
    auth = provider(key, time, Tampered, **change)
    async with sim_client(app) as c:
        with pytest.raises(NotAuthenticated) as err:
            await auth.authorization(c)
    message = str(err.value)
    assert err.value.status_code == 400
    assert named in message
    assert ("token request" in message) == (stage == "token")
    assert ("SSO session request" in message) == (stage == "sso")
    s = await stats(app)
    assert s["oauth2"]["refused"] == {f"{stage} 400": 1}
    assert s["oauth2"]["sso_sessions"] == 0


async def test_refusals_are_problem_json(key: rsa.RSAPrivateKey) -> None:
    app = create_app(scenario(key))
    async with sim_client(app) as c:
        response = await c.post(
            "/oauth2/api/v1/token", data={"grant_type": "password", "client_assertion": "x"}
        )
        sso = await c.post(
            "/gw/api/v1/sso-sessions", content=b"x", headers={"Content-Type": "application/jwt"}
        )
    assert response.status_code == 400
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert body["status"] == 400 and body["title"] == "Bad Request" and "grant_type" in body["detail"]
    assert sso.status_code == 401 and "Authorization" in sso.json()["detail"]


def test_scenario_refuses_a_public_key_that_is_not_rsa_pem() -> None:
    with pytest.raises(ValueError, match="public_key_pem"):
        OAuth2Scenario(client_id="c", key_id="k", public_key_pem="not a key")
