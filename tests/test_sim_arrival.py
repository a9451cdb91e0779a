"""The simulator counts a request when it reached the machine, however busy its event loop was then."""

from __future__ import annotations

import socket
import sys
import threading
import time
from typing import Any

import httpx
import pytest
import uvicorn

from ibkr_tasks.sim.arrival import ArrivalH11Protocol, listening_socket
from ibkr_tasks.sim.asgi import ARRIVED_SCOPE_KEY

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="SO_TIMESTAMP is Linux's")


def test_the_socket_keeps_the_kernels_receive_time_not_the_read_time() -> None:
    server = listening_socket("127.0.0.1", 0)
    server.listen()
    with server, socket.create_connection(server.getsockname()) as client:
        conn, _ = server.accept()
        with conn:
            sent = time.time()
            client.sendall(b"GET / HTTP/1.1\r\n\r\n")
            time.sleep(0.3)  # the server reads it late
            assert conn.recv(1024).startswith(b"GET /")
            assert conn.last_arrival is not None  # type: ignore[attr-defined]
            assert abs(conn.last_arrival - sent) < 0.1  # type: ignore[attr-defined]


def test_a_request_arriving_while_the_loop_is_blocked_is_stamped_when_it_arrived() -> None:
    seen: dict[str, float] = {}

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        if scope["path"] == "/block":
            time.sleep(0.4)  # a handler hogging the event loop (a large answer being rendered)
        else:
            seen["stamped"], seen["seen"] = scope[ARRIVED_SCOPE_KEY], time.time()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    sock = listening_socket("127.0.0.1", 0)
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, log_level="warning", lifespan="off", http=ArrivalH11Protocol)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not server.started:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        blocker = threading.Thread(target=httpx.get, args=(f"http://127.0.0.1:{port}/block",))
        blocker.start()
        with httpx.Client(timeout=5) as client:  # built first: making one (TLS context) takes time
            time.sleep(0.1)  # the loop is blocked now
            sent = time.time()
            assert client.get(f"http://127.0.0.1:{port}/stamp").status_code == 200
        blocker.join()
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()
    assert seen["seen"] - sent > 0.2  # the app saw it only once the loop was free again
    # but it is counted when it arrived: well before the app could see it
    assert 0 <= seen["stamped"] - sent < min(0.1, (seen["seen"] - sent) / 2)
