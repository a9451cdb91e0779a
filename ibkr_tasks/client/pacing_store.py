"""Pacing across processes on one machine: reserved instants of IBKR's slow endpoints in a small file.

Every limit of one request per second or slower (:data:`MIN_SHARED_INTERVAL`) is also paced through
``pacing.json`` in ``IBKR_PACING_DIR``, under an exclusive ``flock``: a process reads the instants the
others reserved for the same limit, takes the earliest instant at least the spacing away, and writes
its own back. The fast limits never touch it. What the file holds (hashed keys, times, writer ids; no
secret), how stale or corrupt files are handled and why: docs/pacing.md (the pacing store).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows has no flock
    fcntl = None  # type: ignore[assignment]

logger = logging.getLogger("ibkr_tasks.client")

MIN_SHARED_INTERVAL = 1.0
"""Limits allowing one request per this many seconds or fewer are paced across processes."""
DATA_FILE = "pacing.json"
LOCK_FILE = "pacing.lock"
FORMAT = 1
CLOCK_STEP_TOLERANCE = 5.0
"""An entry written more than this many seconds in the future means the wall clock was set back: ignored."""
OFF_VALUES = frozenset({"off", "none", "false", "0", "no"})

WallClock = Callable[[], float]


def slack(t: float) -> float:
    """How much closer than the spacing two instants near ``t`` may be and still count as spaced.

    ``t = earlier + spacing`` is rounded to the float grid at ``t``'s magnitude: on wall-clock instants
    (~1.7e9 s) that grid is 2.4e-7 s, so a fixed 1e-9 could call that result still too close, and
    moving it past the conflict would land on the same instant again, forever.
    """
    return 1e-9 + 4 * math.ulp(t)


def default_directory() -> Path:
    """``$XDG_STATE_HOME/ibkr-tasks/pacing``, i.e. ``~/.local/state/ibkr-tasks/pacing`` by default."""
    state = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(state) / "ibkr-tasks" / "pacing"


def directory_from_setting(value: str | None) -> Path | None:
    """The directory ``IBKR_PACING_DIR`` names: unset or empty = the default, ``off`` = no sharing."""
    if value is None or not value.strip():
        return default_directory()
    if value.strip().lower() in OFF_VALUES:
        return None
    return Path(value.strip()).expanduser()


def key_id(key: str) -> str:
    """What the file calls a limiter key (host, username, limit): a hash, so no username is written."""
    return hashlib.sha256(key.encode()).hexdigest()[:32]


def new_owner() -> str:
    """A writer id: this process's id (to recognise entries of processes that are gone) and a nonce."""
    return f"{os.getpid()}-{uuid.uuid4().hex[:12]}"


def _pid_of(owner: str) -> int | None:
    head = owner.split("-", 1)[0]
    return int(head) if head.isdigit() else None


def _process_gone(pid: int) -> bool:
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:  # exists but belongs to someone else, or cannot tell: assume alive
        return False
    return False


@dataclass(frozen=True)
class Slot:
    """One reserved instant of one limit (wall-clock seconds)."""

    t: float
    until: float  # t + the writer's spacing: after this the entry can conflict with nothing
    owner: str
    at: float  # when it was written

    def to_json(self) -> list[Any]:
        return [round(self.t, 6), round(self.until, 6), self.owner, round(self.at, 6)]

    @classmethod
    def from_json(cls, raw: Any) -> Slot | None:
        if not isinstance(raw, list) or len(raw) != 4 or not isinstance(raw[2], str):
            return None
        t, until, owner, at = raw
        numbers = (t, until, at)
        if not all(
            isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x) for x in numbers
        ):
            return None
        return cls(float(t), float(until), owner, float(at))


class Transaction:
    """The file's content while this process holds the lock: read the others' slots, add its own."""

    def __init__(self, store: PacingStore, slots: dict[str, list[Slot]], now: float, shared: bool) -> None:
        self.store = store
        self.now = now
        self.shared = shared  # False when the file could not be used: reads nothing, writes nothing
        self._slots = slots
        self.dirty = False

    def times(self, key: str, *, exclude_owner: str | None = None) -> list[float]:
        """Wall-clock instants reserved for ``key`` (by writers other than ``exclude_owner``), sorted."""
        return sorted(s.t for s in self._slots.get(key_id(key), ()) if s.owner != exclude_owner)

    def add(self, key: str, t: float, spacing: float, owner: str) -> None:
        if not self.shared:
            return
        slot = Slot(t, t + spacing, owner, self.now)
        self._slots.setdefault(key_id(key), []).append(slot)
        self.dirty = True

    def earliest(
        self, limits: Sequence[tuple[str, float]], not_before: float, *, exclude_owner: str | None = None
    ) -> float:
        """The earliest instant >= ``not_before`` at least ``spacing`` away from every slot of each key."""
        taken = {key: self.times(key, exclude_owner=exclude_owner) for key, _ in limits}
        t = not_before
        moved = True
        while moved:
            moved = False
            for key, spacing in limits:
                near = [s for s in taken[key] if abs(s - t) < spacing - slack(t)]
                if near:
                    t = max(near) + spacing
                    moved = True
        return t

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "slots": {k: [s.to_json() for s in v] for k, v in sorted(self._slots.items()) if v},
        }


class PacingStore:
    """The file shared by every process of the machine (see the module documentation).

    ``wall`` is the clock the file's instants are in: real time (``time.time``) in production, since
    processes must agree on it; a test may give it a virtual clock shared by the "processes" it plays.
    """

    def __init__(
        self, directory: Path | str, *, wall: WallClock = time.time, min_interval: float = MIN_SHARED_INTERVAL
    ) -> None:
        self.directory = Path(directory)
        self.wall = wall
        self.min_interval = min_interval
        self.transactions = 0
        """How many times the file was locked (the fast path never does)."""
        self.busy_seconds = 0.0
        """Time spent waiting for, reading and writing the file, in all (a measure of its cost)."""
        self.problems = 0
        """How many times the file or its directory could not be used (each logged)."""
        self._disabled_reason: str | None = None

    def __repr__(self) -> str:
        return f"PacingStore({str(self.directory)!r})"

    @property
    def path(self) -> Path:
        return self.directory / DATA_FILE

    def shares(self, interval: float) -> bool:
        """True when a limit of this interval (seconds per request) is paced across processes."""
        return interval >= self.min_interval - 1e-9

    def reserve(
        self, limits: Sequence[tuple[str, float]], owner: str, not_before: float | None = None
    ) -> float:
        """Reserve the earliest instant (wall clock) that keeps every ``(key, spacing)``; counts every writer."""
        with self.transaction() as txn:
            start = txn.now if not_before is None else max(not_before, txn.now)
            t = txn.earliest(limits, start)
            for key, spacing in limits:
                txn.add(key, t, spacing, owner)
            return t

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Transaction]:
        """Hold the file's lock; yield its (pruned) content; write it back if something was added."""
        self.transactions += 1
        started = time.perf_counter()
        fd = self._lock()
        try:
            now = self.wall()
            if fd is None:
                yield Transaction(self, {}, now, shared=False)
                return
            txn = Transaction(self, self._load(now), now, shared=True)
            yield txn
            if txn.dirty:
                self._save(txn)
        finally:
            if fd is not None:
                os.close(fd)  # releases the flock
            self.busy_seconds += time.perf_counter() - started

    # ------------------------------------------------------------------ file handling
    def _problem(self, what: str, exc: BaseException | None = None) -> None:
        self.problems += 1
        detail = f": {type(exc).__name__}: {exc}" if exc is not None else ""
        logger.warning("pacing file %s: %s%s", self.path, what, detail)

    def _lock(self) -> int | None:
        if fcntl is None:
            if self._disabled_reason is None:
                self._disabled_reason = "no flock on this platform"
                self._problem("cannot lock files here; slow endpoints are paced per process only")
            return None
        fd = None
        try:
            self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd = os.open(self.directory / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
            fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError as exc:
            if fd is not None:
                os.close(fd)
            self._problem("cannot use the directory; slow endpoints are paced per process only", exc)
            return None
        return fd

    def _load(self, now: float) -> dict[str, list[Slot]]:
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return {}
        except (OSError, UnicodeDecodeError) as exc:
            self._problem("unreadable, starting afresh", exc)
            return {}
        try:
            data = json.loads(text)
            raw_slots = data["slots"]
            if not isinstance(raw_slots, dict):
                raise TypeError("'slots' is not an object")
        except (ValueError, TypeError, KeyError) as exc:
            self._problem("not a pacing file (corrupt?), starting afresh", exc)
            return {}
        slots: dict[str, list[Slot]] = {}
        for key, entries in raw_slots.items():
            if not isinstance(entries, list):
                continue
            kept = [
                s
                for s in (Slot.from_json(e) for e in entries)
                if s is not None and self._still_relevant(s, now)
            ]
            if kept:
                slots[str(key)] = kept
        return slots

    @staticmethod
    def _still_relevant(slot: Slot, now: float) -> bool:
        if slot.until <= now:
            return False  # old enough to conflict with nothing
        if slot.at > now + CLOCK_STEP_TOLERANCE:
            return False  # written "in the future": the wall clock was set back since
        if slot.t > now + 0.1:
            # A reservation not yet due whose process is gone was never sent.
            pid = _pid_of(slot.owner)
            if pid is not None and _process_gone(pid):
                return False
        return True

    def _save(self, txn: Transaction) -> None:
        tmp = None
        try:
            fd, tmp = tempfile.mkstemp(prefix=".pacing-", suffix=".tmp", dir=self.directory)
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                json.dump(txn.to_json(), fh, separators=(",", ":"))
            os.replace(tmp, self.path)
            tmp = None
        except OSError as exc:
            self._problem("cannot write; this reservation is not shared with other processes", exc)
        finally:
            if tmp is not None:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)


def store_for(pacing_dir: str | None) -> PacingStore | None:
    """The store of an ``IBKR_PACING_DIR`` value (None when it says ``off``)."""
    directory = directory_from_setting(pacing_dir)
    return PacingStore(directory) if directory is not None else None
