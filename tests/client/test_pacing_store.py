"""Pacing of IBKR's slow endpoints across processes: the machine-wide pacing file.

Two limiters (each with its own backend and store object, as two processes have) sharing one
directory play two processes on virtual time; the locking is checked with real processes and threads.
The end-to-end check, two real processes back to back against the simulator, is in
tests/client/test_pacing_restart.py.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from ibkr_tasks.client.clock import FakeClock
from ibkr_tasks.client.pacing_store import (
    DATA_FILE,
    PacingStore,
    default_directory,
    directory_from_setting,
    key_id,
    new_owner,
)
from ibkr_tasks.client.ratelimit import (
    GATEWAY_GLOBAL,
    InProcessBackend,
    RateLimiter,
    get_limiter,
    reset_limiters,
)
from ibkr_tasks.client.settings import IBKRSettings

TRADES = "/iserver/account/trades"
ACCOUNTS = "/portfolio/accounts"
PREFIX = "ibkr:localhost:*"

# IBKR's own limits: the suite's scaled-down pacing (IBKR_PACING_SCALE) is off in this module.
pytestmark = pytest.mark.usefixtures("ibkr_pacing")


@pytest.fixture
def clock_start() -> float:
    """This module's virtual time starts at a wall-clock-like epoch, not at 1000 s."""
    return 1_700_000_000.0


def process(directory: Path, clock: FakeClock) -> RateLimiter:
    """A limiter as a fresh process would build it: own backend, own store object, same directory."""
    return RateLimiter(
        GATEWAY_GLOBAL,
        key_prefix=PREFIX,
        clock=clock,
        sleep=clock.sleep,
        store=PacingStore(directory, wall=clock),
    )


async def send(limiter: RateLimiter, path: str, sent: dict[str, list[float]], clock: FakeClock) -> None:
    async with limiter.slot("GET", path):
        sent.setdefault(path, []).append(clock())


def gaps(times: list[float]) -> list[float]:
    return [b - a for a, b in itertools.pairwise(sorted(times))]


async def test_a_process_started_right_after_another_keeps_the_slow_spacing(
    tmp_path: Path, clock: FakeClock
) -> None:
    sent: dict[str, list[float]] = {}
    first = process(tmp_path, clock)
    await send(first, ACCOUNTS, sent, clock)
    await send(first, TRADES, sent, clock)
    clock.advance(0.5)  # the first process ends; the next one starts half a second later
    second = process(tmp_path, clock)
    await send(second, ACCOUNTS, sent, clock)
    await send(second, TRADES, sent, clock)
    for path in (ACCOUNTS, TRADES):
        assert len(sent[path]) == 2
        assert gaps(sent[path])[0] >= 5.0, (path, sent[path])
        assert gaps(sent[path])[0] <= 5.2 + 0.11  # the margin, and at most one global spacing more


async def test_concurrent_processes_share_one_schedule(tmp_path: Path, clock: FakeClock) -> None:
    sent: dict[str, list[float]] = {}
    procs = [process(tmp_path, clock) for _ in range(3)]
    await asyncio.gather(*(send(p, TRADES, sent, clock) for p in procs for _ in range(3)))
    assert len(sent[TRADES]) == 9
    assert min(gaps(sent[TRADES])) >= 5.0
    # Nine requests in 8 spacings: nobody waited for nothing.
    assert sent[TRADES][-1] - sent[TRADES][0] <= 8 * 5.0 * 1.05


async def test_a_process_is_not_slowed_by_its_own_reservations(tmp_path: Path, clock: FakeClock) -> None:
    sent: dict[str, list[float]] = {}
    limiter = process(tmp_path, clock)
    await asyncio.gather(*(send(limiter, TRADES, sent, clock) for _ in range(3)))
    assert all(5.0 <= g <= 5.2 + 0.11 for g in gaps(sent[TRADES])), sent  # no wait beyond its own


async def test_the_fast_path_never_touches_the_file(tmp_path: Path, clock: FakeClock) -> None:
    sent: dict[str, list[float]] = {}
    limiter = process(tmp_path, clock)
    paths = ["/iserver/marketdata/snapshot", "/portfolio/DU1234567/positions/0", "/iserver/accounts"]
    await asyncio.gather(*(send(limiter, p, sent, clock) for p in paths for _ in range(20)))
    assert limiter.store is not None and limiter.store.transactions == 0
    assert not (tmp_path / DATA_FILE).exists()
    await send(limiter, "/tickle", sent, clock)  # 1 req/s: slow enough to be shared
    assert limiter.store.transactions == 1 and (tmp_path / DATA_FILE).exists()


# ---------------------------------------------------------------- locking, with real processes and threads
_WORKER = """
import json, sys, time
from ibkr_tasks.client.pacing_store import PacingStore, new_owner
directory, start_at, n = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])
store, owner = PacingStore(directory), new_owner()
while time.time() < start_at:
    time.sleep(0.001)
times = [store.reserve([("k:trades", 5.0), ("k:orders", 5.0)], owner) for _ in range(n)]
print(json.dumps({"times": times, "problems": store.problems}), flush=True)
sys.stdin.read()  # alive until told: a reservation of a process that is gone is void (never sent)
"""


def test_processes_reserving_at_once_never_get_the_same_slot(tmp_path: Path) -> None:
    # Reservations lie in the future, so nobody sleeps: 4 processes x 25 reservations race for the file.
    # Each stays alive until all have reserved, as a process waiting for its slots does (the slots of a
    # process that has exited are freed; on a loaded machine one could otherwise finish before the next
    # one starts).
    start_at = time.time() + 3.0
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _WORKER, str(tmp_path), str(start_at), "25"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    lines = [p.stdout.readline() if p.stdout else "" for p in procs]
    times: list[float] = []
    for p, line in zip(procs, lines, strict=True):
        _out, err = p.communicate(timeout=60)  # closes its stdin: it may exit now
        assert p.returncode == 0, err
        result = json.loads(line)
        assert result["problems"] == 0
        times += result["times"]
    assert len(times) == 100
    assert min(gaps(times)) >= 5.0 - 1e-6  # every reservation of every process at least 5 s apart


def test_threads_reserving_at_once_never_get_the_same_slot(tmp_path: Path) -> None:
    store = PacingStore(tmp_path)
    times: list[float] = []
    barrier = threading.Barrier(6)

    def work() -> None:
        owner = new_owner()
        barrier.wait()
        got = [store.reserve([("k:trades", 5.0)], owner) for _ in range(15)]
        times.extend(got)

    threads = [threading.Thread(target=work) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(times) == 90
    assert min(gaps(times)) >= 5.0 - 1e-6


# ---------------------------------------------------------------- a bad file or directory is not fatal
@pytest.mark.parametrize(
    "content",
    [
        b"{not json",
        b"\xff\xfe\x00garbage",
        b"[]",
        b'{"format": 1, "slots": []}',
        b'{"format": 1}',
        b"",
    ],
    ids=["truncated", "binary", "list", "slots-not-object", "no-slots", "empty"],
)
async def test_a_corrupt_file_is_started_afresh(
    tmp_path: Path, clock: FakeClock, content: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / DATA_FILE).write_bytes(content)
    limiter = process(tmp_path, clock)
    sent: dict[str, list[float]] = {}
    with caplog.at_level(logging.WARNING, logger="ibkr_tasks.client"):
        await send(limiter, TRADES, sent, clock)
    assert sent[TRADES] == [clock()]  # sent at once, no error
    assert "pacing file" in caplog.text
    # The file was rewritten and holds the reservation: the next process keeps the spacing.
    data = json.loads((tmp_path / DATA_FILE).read_text())
    assert key_id(f"{PREFIX}:trades") in data["slots"]
    await send(process(tmp_path, clock), TRADES, sent, clock)
    assert gaps(sent[TRADES])[0] >= 5.0


async def test_bad_entries_are_skipped_and_good_ones_kept(tmp_path: Path, clock: FakeClock) -> None:
    key = key_id(f"{PREFIX}:trades")
    now = clock()
    good = [now, now + 5.2, new_owner(), now]
    junk = [["x", 1, "o", 2], [1.0, 2.0], [float("inf"), 1, "o", 1], "nope", [True, 1.0, "o", 1.0]]
    data = {"format": 1, "slots": {key: [*junk, good], "other": "not a list"}}
    (tmp_path / DATA_FILE).write_text(json.dumps(data))
    sent: dict[str, list[float]] = {}
    await send(process(tmp_path, clock), TRADES, sent, clock)
    assert sent[TRADES][0] >= now + 5.0  # the good entry was honoured


def test_a_missing_directory_is_created_private(tmp_path: Path) -> None:
    store = PacingStore(tmp_path / "a" / "b")
    t = store.reserve([("k", 5.0)], new_owner())
    assert abs(t - time.time()) < 1.0
    assert (tmp_path / "a" / "b" / DATA_FILE).is_file()
    assert (tmp_path / "a" / "b").stat().st_mode & 0o777 == 0o700
    assert (tmp_path / "a" / "b" / DATA_FILE).stat().st_mode & 0o077 == 0


async def test_an_unusable_directory_leaves_pacing_per_process(
    tmp_path: Path, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    limiter = process(blocker / "pacing", clock)
    sent: dict[str, list[float]] = {}
    with caplog.at_level(logging.WARNING, logger="ibkr_tasks.client"):
        await asyncio.gather(*(send(limiter, TRADES, sent, clock) for _ in range(2)))
    assert limiter.store is not None and limiter.store.problems >= 1
    assert "paced per process only" in caplog.text
    assert gaps(sent[TRADES])[0] >= 5.0  # this process still keeps the limit itself


# ---------------------------------------------------------------- what the file holds
def test_the_file_holds_no_username_or_token(tmp_path: Path) -> None:
    settings = IBKRSettings(
        api_url="https://localhost:5000/v1/api",
        access_token="tok-SECRET-4711",
        username="alice.trader",
        pacing_dir=str(tmp_path),
    )
    limiter = RateLimiter.for_settings(settings)
    assert limiter.store is not None and limiter.store.directory == tmp_path

    async def one() -> None:
        async with limiter.slot("GET", ACCOUNTS):
            pass

    asyncio.run(one())
    text = (tmp_path / DATA_FILE).read_text()
    assert "alice" not in text and "SECRET" not in text and "localhost" not in text
    assert key_id(f"{limiter.key_prefix}:portfolio_accounts") in json.loads(text)["slots"]


def test_stale_entries_are_dropped_and_live_ones_kept(tmp_path: Path) -> None:
    now = time.time()
    gone = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    dead_pid = int(gone.stdout)
    alive = f"{os.getppid()}-abc"  # the process that runs the tests' parent: alive
    slots = {
        "old": [[now - 60, now - 54.8, alive, now - 60]],  # can conflict with nothing any more
        "dead-future": [[now + 30, now + 35.2, f"{dead_pid}-abc", now]],  # its process is gone: never sent
        "dead-past": [[now - 1, now + 4.2, f"{dead_pid}-abc", now - 1]],  # maybe sent before it died: kept
        "live-future": [[now + 30, now + 35.2, alive, now]],
        "clock-set-back": [[now + 500, now + 505.2, alive, now + 500]],  # written "in the future"
    }
    (tmp_path / DATA_FILE).write_text(json.dumps({"format": 1, "slots": slots}))
    store = PacingStore(tmp_path)
    with store.transaction() as txn:
        seen = {k: txn._slots.get(k, []) for k in slots}
        txn.dirty = True  # write back what is left
    assert [bool(v) for v in seen.values()] == [False, False, True, True, False]
    written = json.loads((tmp_path / DATA_FILE).read_text())["slots"]
    assert sorted(written) == ["dead-past", "live-future"]


# ---------------------------------------------------------------- setting and composition
def test_the_setting_names_the_directory_or_turns_sharing_off(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    assert default_directory() == tmp_path / "state" / "ibkr-tasks" / "pacing"
    assert directory_from_setting(None) == default_directory()
    assert directory_from_setting("") == default_directory()
    assert directory_from_setting("OFF") is None
    assert directory_from_setting("~/p") == Path.home() / "p"
    base = {"api_url": "https://localhost:5000/v1/api"}
    assert RateLimiter.for_settings(IBKRSettings(**base, pacing_dir="off")).store is None
    # A limiter on virtual time never shares: the file holds real instants.
    fake = FakeClock()
    assert RateLimiter.for_settings(IBKRSettings(**base), clock=fake, sleep=fake.sleep).store is None
    monkeypatch.setenv("IBKR_PACING_DIR", str(tmp_path / "env"))
    reset_limiters()
    try:
        limiter = get_limiter(IBKRSettings(**base))
        assert limiter.store is not None and limiter.store.directory == tmp_path / "env"
        assert isinstance(limiter.backend, InProcessBackend) and limiter.backend.store is limiter.store
    finally:
        reset_limiters()


async def test_prefect_backed_and_local_processes_keep_the_spacing_between_them(
    tmp_path: Path, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    import prefect.concurrency.asyncio as prefect_concurrency

    from ibkr_tasks.prefect_limits import PrefectBackend

    granted: list[list[str]] = []

    async def rate_limit(names: list[str], **kwargs: object) -> None:  # the server grants at once
        granted.append(list(names))

    monkeypatch.setattr(prefect_concurrency, "rate_limit", rate_limit)
    sent: dict[str, list[float]] = {}
    local = process(tmp_path, clock)
    on_prefect = RateLimiter(
        GATEWAY_GLOBAL,
        key_prefix=PREFIX,
        clock=clock,
        sleep=clock.sleep,
        backend=PrefectBackend(store=PacingStore(tmp_path, wall=clock), sleep=clock.sleep),
    )
    await send(local, TRADES, sent, clock)
    await send(on_prefect, TRADES, sent, clock)  # granted by "the server", then waits for the local one
    await send(on_prefect, TRADES, sent, clock)  # its own earlier slot counts too (no local timeline)
    await send(local, TRADES, sent, clock)
    assert len(granted) == 2
    assert all(g >= 5.0 for g in gaps(sent[TRADES])), sent[TRADES]


async def test_choosing_a_backend_changes_no_limiter_and_both_share_the_store(tmp_path: Path) -> None:
    from ibkr_tasks.prefect_limits import PrefectBackend, pacing_limiter, prefect_limiter

    settings = IBKRSettings(api_url="https://localhost:5000/v1/api", pacing_dir=str(tmp_path))
    reset_limiters()
    try:
        local = get_limiter(settings)
        on_prefect = prefect_limiter(settings)
        assert on_prefect is not local and prefect_limiter(settings) is on_prefect
        assert isinstance(on_prefect.backend, PrefectBackend)
        assert await pacing_limiter(settings, "local") is local
        # asking for one backend never swaps the other's: both keep theirs
        assert isinstance(local.backend, InProcessBackend) and isinstance(on_prefect.backend, PrefectBackend)
        # both reserve the slow limits' instants in the same machine file
        assert local.store is not None and on_prefect.backend.store is not None
        assert on_prefect.backend.store.directory == local.store.directory == tmp_path
    finally:
        reset_limiters()
