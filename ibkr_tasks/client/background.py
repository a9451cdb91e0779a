"""Run an IBKR client on an event loop of its own, in a background thread.

The pacing's wake-ups end late when the loop that runs the client is busy with other work (an
orchestrator's task engine, large payloads being parsed), and a late wake-up gives its slot back.
:class:`BackgroundClient` keeps the client, its transport and its limiter on a dedicated loop that does
nothing but HTTP, and lets any other loop await its methods (docs/pacing.md, the I/O thread)::

    async with BackgroundClient(settings) as client:
        fills = await client.fills(["DU1234567"], days=1)      # runs on the I/O loop, awaited here
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import inspect
import sys
import threading
from collections.abc import Callable, Coroutine, Iterator
from concurrent.futures import Future
from typing import Any, TypeVar

from ibkr_tasks.client.api import IBKRClient
from ibkr_tasks.client.settings import IBKRSettings

T = TypeVar("T")

_switch_lock = threading.Lock()
_switch_users = 0
_switch_saved = 0.005

FAST_SWITCH_INTERVAL = 0.001
"""What the nightly flow asks for: the I/O thread gets the GIL within about 1 ms of its timer."""


@contextlib.contextmanager
def switch_interval(seconds: float = FAST_SWITCH_INTERVAL) -> Iterator[None]:
    """Let the interpreter switch threads at least every ``seconds`` (default 5 ms) inside the block.

    Why it exists: a pacing timer of the I/O thread fires on time, but the thread then needs the GIL.
    With the default interval, busy threads (an orchestrator's engine, JSON and SQL parameter work)
    can hold it past the pacing's tolerance, and the request gives its slot back (see docs/pacing.md).
    The interval is process-wide, so this is an explicit, scoped choice of whoever owns the process's
    run (a flow), never a side effect: overlapping blocks keep the shortest interval asked for, and the
    interval the process had before comes back when the last block exits.
    """
    global _switch_users, _switch_saved
    if seconds <= 0:
        raise ValueError("the switch interval must be positive")
    with _switch_lock:
        if _switch_users == 0:
            _switch_saved = sys.getswitchinterval()
        _switch_users += 1
        sys.setswitchinterval(min(sys.getswitchinterval(), seconds))
    try:
        yield
    finally:
        with _switch_lock:
            _switch_users -= 1
            if _switch_users == 0:
                sys.setswitchinterval(_switch_saved)


_freeze_lock = threading.Lock()
_freeze_users = 0
_freeze_ours = False
_thresholds: tuple[int, int, int] | None = None
FULL_COLLECTION_SPACING = 10
"""Inside :func:`gc_frozen`, full collections are considered this many times less often."""


@contextlib.contextmanager
def gc_frozen() -> Iterator[None]:
    """Keep the objects the process holds on entry out of the garbage collector's full collections
    inside the block (``gc.freeze()``), consider full collections :data:`FULL_COLLECTION_SPACING`
    times less often, and undo both (``gc.unfreeze()``, the thresholds the process had) when the last
    block exits.

    Why it exists: a full collection stops every thread, the I/O thread's pacing timers included, for
    as long as it takes to walk every object the process holds. In a Prefect flow that is the
    interpreter, Prefect and its server client: measured in ``bench/reconcile.py --gc``, 200-300 ms per
    full collection, three to five times a night, each costing the queue of IBKR requests that long.
    Frozen, a full collection walks only what the run made since, 100-160 ms a night later (the
    fills, positions and Prefect's records), so those are also made rarer: with both, no collection
    over 20 ms was left inside a night. Cyclic garbage the run makes may wait for the run's end to
    be freed. Like :func:`switch_interval` it is process-wide, so it is the explicit choice of
    whoever owns the run (the flows, through ``ibkr_tasks.connect.ibkr_client``); when the process
    froze objects itself before (a forked server), this leaves its choice alone and does nothing.
    """
    global _freeze_users, _freeze_ours, _thresholds
    with _freeze_lock:
        if _freeze_users == 0:
            _freeze_ours = gc.get_freeze_count() == 0
        _freeze_users += 1
        if _freeze_ours:
            gc.freeze()
            if _freeze_users == 1:
                _thresholds = gc.get_threshold()
                first, second, third = _thresholds
                gc.set_threshold(first, second, third * FULL_COLLECTION_SPACING)
    try:
        yield
    finally:
        with _freeze_lock:
            _freeze_users -= 1
            if _freeze_users == 0 and _freeze_ours:
                gc.unfreeze()  # back in the oldest generation: garbage among them is collected later
                _freeze_ours = False
                if _thresholds is not None:
                    gc.set_threshold(*_thresholds)
                    _thresholds = None


class BackgroundClient:
    """An :class:`IBKRClient` living on its own event loop thread; its coroutine methods can be awaited
    from any loop. Attributes that are not coroutine methods are read through as they are.

    ``switch_interval=seconds`` (opt-in; e.g. :data:`FAST_SWITCH_INTERVAL`) holds a
    :func:`switch_interval` block while the client is open, so the I/O thread gets the GIL soon after
    its pacing timers fire even when other threads are busy. By default the interpreter is left alone.
    """

    def __init__(
        self,
        settings: IBKRSettings | None = None,
        *,
        switch_interval: float | None = None,
        **client_kwargs: Any,
    ) -> None:
        self._settings = settings
        self._switch_interval = switch_interval
        self._switch: contextlib.ExitStack | None = None
        self._client_kwargs = client_kwargs
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="ibkr-io", daemon=True)
        self._client: IBKRClient | None = None

    # --- lifecycle ------------------------------------------------------------------------------

    async def __aenter__(self) -> BackgroundClient:
        if self._switch_interval is not None:
            self._switch = contextlib.ExitStack()
            self._switch.enter_context(switch_interval(self._switch_interval))
        self._thread.start()
        try:
            self._client = await self._run(self._open)
        except BaseException:
            await self.aclose()  # `async with` does not exit what failed to enter
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._client is not None:
            client, self._client = self._client, None
            await self._run(client.aclose)
        if self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            await asyncio.to_thread(self._thread.join, 10)
        if not self._loop.is_running():
            self._loop.close()
        switch, self._switch = self._switch, None
        if switch is not None:
            switch.close()

    async def _open(self) -> IBKRClient:
        # Entered on the I/O loop, so its background keep-alive runs there too.
        return await IBKRClient.from_settings(self._settings, **self._client_kwargs).__aenter__()

    # --- calls ----------------------------------------------------------------------------------

    async def _run(self, fn: Callable[..., Coroutine[Any, Any, T]], *args: Any, **kwargs: Any) -> T:
        future: Future[T] = asyncio.run_coroutine_threadsafe(fn(*args, **kwargs), self._loop)
        return await asyncio.wrap_future(future)

    @property
    def client(self) -> IBKRClient:
        if self._client is None:
            raise RuntimeError("BackgroundClient is not open: use `async with BackgroundClient(...)`")
        return self._client

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.client, name)
        if inspect.iscoroutinefunction(attr):

            async def call(*args: Any, **kwargs: Any) -> Any:
                return await self._run(attr, *args, **kwargs)

            call.__name__ = name
            call.__doc__ = attr.__doc__
            return call
        return attr
