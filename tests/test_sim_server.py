"""The simulator as a real server: ``python -m ibkr_tasks.sim`` on a free loopback port."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from ibkr_tasks.sim.__main__ import build_parser, main, scenario_from_args


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def server(tmp_path: Path) -> Iterator[str]:
    """A simulator process with a scenario that drops every order response after 3 s."""
    scenario = tmp_path / "scenario.yaml"
    scenario.write_text("accounts: 2\nquirks:\n  drop_order_response: 1.0\n  drop_delay_seconds: 3\n")
    port = _free_port()
    cmd = [
        sys.executable,
        "-m",
        "ibkr_tasks.sim",
        "--port",
        str(port),
        "--seed",
        "7",
        "--scenario",
        str(scenario),
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                httpx.post(f"{base}/v1/api/iserver/auth/status", timeout=1)
                break
            except httpx.TransportError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    out = proc.stdout.read().decode() if proc.stdout else ""
                    pytest.fail(f"the simulator did not start on {base}: {out}")
                time.sleep(0.1)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


def test_real_server_answers_and_a_dropped_order_response_is_a_client_timeout(server: str) -> None:
    status = httpx.post(f"{server}/v1/api/iserver/auth/status", timeout=5)
    assert status.status_code == 200 and status.json()["authenticated"] is True
    accounts = httpx.get(f"{server}/v1/api/iserver/accounts", timeout=5).json()["accounts"]
    assert len(accounts) == 2 and all(a.startswith("DU") for a in accounts)
    ticket = {
        "orders": [{"conid": 265598, "side": "BUY", "orderType": "MKT", "quantity": 1, "cOID": "sock-1"}]
    }
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(f"{server}/v1/api/iserver/account/{accounts[0]}/orders", json=ticket, timeout=0.5)
    truth = httpx.get(f"{server}/sim/truth/{accounts[0]}", timeout=5).json()
    assert [o["cOID"] for o in truth["orders"]] == ["sock-1"]  # the order exists all the same


def test_cli_arguments_build_the_scenario(tmp_path: Path) -> None:
    args = build_parser().parse_args(["--port", "5001", "--seed", "9", "--accounts", "4", "--demo"])
    sc = scenario_from_args(args)
    assert (args.port, sc.seed, sc.accounts, sc.fa) == (5001, 9, 4, True)
    bad = tmp_path / "bad.yaml"
    bad.write_text("accounts: -3\n")
    assert main(["--scenario", str(bad)]) == 2


def test_auto_detects_a_real_server_for_dropped_responses() -> None:
    """Served by uvicorn without ``served=True`` (as an embedding app would), a dropped order response
    still reaches the client as a read timeout, not as a 500."""
    import threading

    import uvicorn

    from ibkr_tasks.sim import Scenario, create_app

    app = create_app(Scenario(accounts=1, quirks={"drop_order_response": 1.0, "drop_delay_seconds": 2}))
    port = _free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not server.started:
            assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.02)
        acct = next(iter(app.sim.book.accounts))
        ticket = {"orders": [{"conid": 265598, "side": "BUY", "orderType": "MKT", "quantity": 1}]}
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(
                f"http://127.0.0.1:{port}/v1/api/iserver/account/{acct}/orders", json=ticket, timeout=0.5
            )
        assert len(app.sim.orders) == 1
    finally:
        server.should_exit = True
        thread.join(timeout=10)
