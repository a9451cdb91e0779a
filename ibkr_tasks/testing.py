"""Helpers for testing flows against the built-in gateway simulator.

``running_simulator(scenario)`` serves the simulator on a free loopback port for the duration of a
``with`` block, so a flow under test reaches it over real HTTP exactly as it would reach a Client
Portal Gateway::

    from ibkr_tasks.sim import Scenario
    from ibkr_tasks.testing import running_simulator

    with running_simulator(Scenario.demo()) as sim:   # its own process, on a free port
        os.environ["IBKR_API_URL"] = sim.api_url
        ...  # run your flow, then compare with sim.truth("DU...")
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import Any

import httpx


@dataclass
class SimulatorHandle:
    """A simulator served on loopback: its URLs and direct access to its ground truth."""

    base_url: str
    app: Any

    @property
    def api_url(self) -> str:
        """The value for ``IBKR_API_URL``."""
        return f"{self.base_url}/v1/api"

    def truth(self, account_id: str) -> dict[str, Any]:
        """Everything the simulator knows about one account (``GET /sim/truth/{accountId}``)."""
        response = httpx.get(f"{self.base_url}/sim/truth/{account_id}", timeout=30)
        response.raise_for_status()
        return response.json()

    def stats(self) -> dict[str, Any]:
        response = httpx.get(f"{self.base_url}/sim/stats", timeout=30)
        response.raise_for_status()
        return response.json()

    def advance(self, **period: float) -> dict[str, Any]:
        """Move the simulated market forward (``days=1`` or ``seconds=N``), generating activity."""
        response = httpx.post(f"{self.base_url}/sim/advance", json=period, timeout=60)
        response.raise_for_status()
        return response.json()

    def faults(self, **switches: Any) -> dict[str, Any]:
        response = httpx.post(f"{self.base_url}/sim/faults", json=switches, timeout=30)
        response.raise_for_status()
        return response.json()


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


@contextmanager
def running_simulator(
    scenario: Any = None, *, host: str = "127.0.0.1", port: int | None = None, process: bool = True
) -> Iterator[SimulatorHandle]:
    """Serve the simulator on loopback until the block ends.

    By default in its own process (``python -m ibkr_tasks.sim``), like a real gateway: the flow under
    test and the simulator then never compete for one interpreter, so the arrival times the simulator
    checks IBKR's rate limits against are not skewed by our own process being busy. ``process=False``
    serves it from a thread of this process instead (``handle.app`` is then the live app).
    """
    serve = _simulator_process if process else _simulator_thread
    if port is not None:
        with serve(scenario, host, port) as handle:
            yield handle
        return
    # A free port can be taken by another process (e.g. a parallel test worker) between the moment it
    # is picked and the moment the simulator binds it: then pick another.
    for attempt in range(1, _PORT_ATTEMPTS + 1):
        with ExitStack() as stack:
            try:
                handle = stack.enter_context(serve(scenario, host, free_port(host)))
            except _PortTaken:
                if attempt == _PORT_ATTEMPTS:
                    raise
                continue
            yield handle
            return


_PORT_ATTEMPTS = 5


class _PortTaken(RuntimeError):
    """The simulator could not bind its port: something else took it first."""


@contextmanager
def _simulator_process(scenario: Any, host: str, port: int) -> Iterator[SimulatorHandle]:
    import subprocess
    import sys
    import tempfile
    from pathlib import Path

    import yaml

    from ibkr_tasks.sim import Scenario

    scenario = scenario or Scenario()
    with tempfile.TemporaryDirectory(prefix="ibkr-sim-") as tmp:
        spec = Path(tmp) / "scenario.yaml"
        spec.write_text(yaml.safe_dump(scenario.model_dump(mode="json")), encoding="utf-8")
        log = Path(tmp) / "sim.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(  # noqa: S603 - our own interpreter and module
                [
                    sys.executable,
                    "-m",
                    "ibkr_tasks.sim",
                    "--host",
                    host,
                    "--port",
                    str(port),
                    "--scenario",
                    str(spec),
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
            )
            base_url = f"http://{host}:{port}"
            try:
                deadline = time.monotonic() + 60
                while True:
                    if proc.poll() is not None:
                        output = log.read_text()[-2000:]
                        taken = "address already in use" in output.lower()
                        raise (_PortTaken if taken else RuntimeError)(
                            f"the simulator exited ({proc.returncode}): {output}"
                        )
                    try:
                        if httpx.get(f"{base_url}/sim/stats", timeout=2).status_code == 200:
                            break
                    except httpx.TransportError:
                        pass
                    if time.monotonic() > deadline:
                        raise RuntimeError(
                            f"the simulator did not start on {host}:{port}: {log.read_text()[-2000:]}"
                        )
                    time.sleep(0.05)
                yield SimulatorHandle(base_url=base_url, app=None)
            finally:
                proc.terminate()
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout=10)


@contextmanager
def _simulator_thread(scenario: Any, host: str, port: int) -> Iterator[SimulatorHandle]:
    import uvicorn

    from ibkr_tasks.sim import create_app

    app = create_app(scenario)
    config = uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False, lifespan="off")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="ibkr-sim", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive():  # uvicorn exits its thread when it cannot bind
            raise _PortTaken(f"the simulator did not start on {host}:{port}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"the simulator did not start on {host}:{port}")
        time.sleep(0.02)
    try:
        yield SimulatorHandle(base_url=f"http://{host}:{port}", app=app)
    finally:
        server.should_exit = True
        thread.join(timeout=10)
