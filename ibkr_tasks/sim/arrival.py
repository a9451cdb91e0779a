"""When a request reached the simulator's socket, as a gateway on its own machine would count it.

IBKR counts a request when it arrives. The simulator's event loop can be busy when one comes in (a large
trades answer being rendered), or its process can be waiting for a CPU on a loaded machine; a time taken
when the app first sees the request is then late, and requests that arrived a spacing apart can be
counted closer together than they were sent (a limit "crossed" that the client kept). The kernel stamps
every packet it receives (``SO_TIMESTAMP``): :class:`StampingSocket` reads that stamp with each read, and
:class:`ArrivalH11Protocol` hands it to the app in the request's scope (:data:`ARRIVED_SCOPE_KEY`,
wall-clock seconds). Where the platform has no such stamp nothing is put there, and the app takes the
time itself (:mod:`ibkr_tasks.sim.asgi`).
"""

from __future__ import annotations

import asyncio
import socket
import struct
import sys
from typing import Any

from uvicorn.protocols.http.h11_impl import H11Protocol

from ibkr_tasks.sim.asgi import ARRIVED_SCOPE_KEY

SO_TIMESTAMP: int | None = getattr(socket, "SO_TIMESTAMP", 29 if sys.platform.startswith("linux") else None)
_TIMEVAL = struct.Struct("@ll")  # struct timeval: seconds, microseconds
_ANCILLARY = socket.CMSG_SPACE(_TIMEVAL.size) if hasattr(socket, "CMSG_SPACE") else 0


class StampingSocket(socket.socket):
    """A TCP socket that remembers the kernel's receive time of the data it last read."""

    last_arrival: float | None = None

    def accept(self) -> tuple[socket.socket, Any]:
        fd, addr = self._accept()  # type: ignore[attr-defined]  # socket.socket's own primitive
        conn = StampingSocket(self.family, self.type, self.proto, fileno=fd)
        if socket.getdefaulttimeout() is None and self.gettimeout():
            conn.setblocking(True)  # as socket.accept does
        if SO_TIMESTAMP is not None:
            try:
                conn.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMP, 1)
            except OSError:
                pass  # no stamps: the app takes the time itself
        return conn, addr

    def recv(self, bufsize: int, flags: int = 0) -> bytes:
        if not _ANCILLARY:
            return super().recv(bufsize, flags)
        data, ancillary, _, _ = self.recvmsg(bufsize, _ANCILLARY, flags)
        self.last_arrival = None  # never a stamp of earlier data (the app then takes the time itself)
        for level, kind, payload in ancillary:
            if level == socket.SOL_SOCKET and kind == SO_TIMESTAMP and len(payload) >= _TIMEVAL.size:
                seconds, micros = _TIMEVAL.unpack_from(payload)
                self.last_arrival = seconds + micros / 1_000_000
        return data


def listening_socket(host: str, port: int) -> StampingSocket:
    """A bound :class:`StampingSocket` for ``host``:``port`` (the server puts it in listening mode)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = StampingSocket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if SO_TIMESTAMP is not None:
            # Stamping on from the start: a connection's first request may arrive before it is accepted.
            sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMP, 1)
        sock.bind((host, port))
    except BaseException:
        sock.close()
        raise
    return sock


class ArrivalH11Protocol(H11Protocol):
    """uvicorn's HTTP/1.1 protocol, putting the kernel's receive time of a request into its scope."""

    def data_received(self, data: bytes) -> None:
        arrived = _arrival_of(self.transport)
        super().data_received(data)
        scope: Any = self.scope  # the request these bytes belong to (None before the first one)
        if arrived is not None and scope is not None:
            scope.setdefault(ARRIVED_SCOPE_KEY, arrived)


def _arrival_of(transport: asyncio.BaseTransport | None) -> float | None:
    if transport is None:
        return None
    sock = transport.get_extra_info("socket")
    sock = getattr(sock, "_sock", sock)  # asyncio hands out a TransportSocket wrapping the real one
    return sock.last_arrival if isinstance(sock, StampingSocket) else None
