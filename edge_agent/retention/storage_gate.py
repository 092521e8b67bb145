"""Is the storage root still the disk the agent started on, and can it be written?

The catalog checks the storage marker once, when it opens. A USB disk that is
pulled (or resets) while the agent runs leaves a bare mount point behind: a
folder on the system disk that would happily take new segments. So the
identity captured at start (the marker's storage id and the ``st_dev`` of the
root's filesystem) is checked again before every segment or adopted file is
opened and on every monitor tick (docs/storage.md).

Three parts:

- :func:`decide` (pure): what an :class:`Observation` of the root means
  against the expected :class:`Identity`;
- :func:`observe` (IO): a ``stat`` of the root, a ``statvfs`` for the
  read-only flag and a marker read cached by the marker's inode and mtime
  (about 10 µs on a warm cache; ``bench`` figures in docs/storage.md);
- :class:`StorageGate`: the thread-safe state the recorder, the intake, the
  janitor and the daemon consult. Writes stop the moment a check fails and
  start again only after the daemon has run its recovery (:meth:`release`).

A read-only filesystem or an I/O error on write is noticed by a write probe
(create, write, fsync, remove a small file) run when a write failed
(:meth:`StorageGate.suspect`) and then on a slow back-off
(:func:`retry_delay`) while it lasts.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import stat
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from edge_agent.store.catalog import STORAGE_MARKER

__all__ = [
    "PROBE_NAME",
    "Change",
    "Health",
    "Identity",
    "Observation",
    "StorageGate",
    "StorageUnavailable",
    "Verdict",
    "capture_identity",
    "classify_write_error",
    "decide",
    "mount_signature",
    "observe",
    "retry_delay",
    "write_probe",
]

PROBE_NAME = ".edge-agent-write-probe"
RETRY_BASE = 30.0
RETRY_CAP = 600.0
# A write probe that fails with one of these says the disk, not the data, is at fault.
_IO_ERRNOS = frozenset({errno.EIO, errno.ENXIO, errno.ENODEV, errno.ESTALE, errno.ENOTCONN})


class Health(StrEnum):
    OK = "ok"
    LOST = "lost"  # missing root, another disk, or no marker
    READONLY = "readonly"
    IO_ERROR = "io_error"


ALARMS = {
    Health.LOST: "alarm.storage_lost",
    Health.READONLY: "alarm.storage_readonly",
    Health.IO_ERROR: "alarm.storage_io_error",
}


@dataclass(frozen=True)
class Identity:
    storage_id: str
    dev: int


@dataclass(frozen=True)
class Observation:
    """What one look at the storage root found."""

    exists: bool
    is_dir: bool = False
    dev: int | None = None
    marker_id: str | None = None  # None: no marker file
    marker_problem: str | None = None  # a marker that cannot be read or parsed
    readonly: bool = False  # the filesystem's read-only flag
    error: str | None = None  # stat failed for another reason than "not there"


@dataclass(frozen=True)
class Verdict:
    health: Health
    reason: str | None = None
    moved: bool = False  # the right marker, on another filesystem than expected


def _devname(dev: int) -> str:
    return f"{os.major(dev)}:{os.minor(dev)}"


def decide(expected: Identity, obs: Observation, root: str) -> Verdict:
    """The verdict on an observation of ``root`` (pure)."""
    if obs.error is not None:
        return Verdict(Health.IO_ERROR, f"cannot look at storage root {root}: {obs.error}")
    if not obs.exists:
        return Verdict(
            Health.LOST, f"storage root {root} is missing (is the recording disk mounted?)"
        )
    if not obs.is_dir:
        return Verdict(Health.LOST, f"storage root {root} is not a directory")
    if obs.marker_problem is not None:
        return Verdict(Health.LOST, f"storage marker in {root}: {obs.marker_problem}")
    if obs.marker_id is None:
        return Verdict(
            Health.LOST,
            f"{root} has no storage marker ({STORAGE_MARKER}): not the recording disk "
            "(is it mounted?)",
        )
    if obs.marker_id != expected.storage_id:
        return Verdict(
            Health.LOST,
            f"{root} is storage {obs.marker_id}, not {expected.storage_id}: another disk",
        )
    if obs.dev != expected.dev:
        assert obs.dev is not None
        return Verdict(
            Health.LOST,
            f"storage root {root} is now on device {_devname(obs.dev)}, not "
            f"{_devname(expected.dev)} (the disk was unmounted or replaced)",
            moved=True,
        )
    if obs.readonly:
        return Verdict(Health.READONLY, f"the filesystem of {root} is read-only")
    return Verdict(Health.OK)


def classify_write_error(code: int | None) -> Health | None:
    """What a failed write says about the disk; None when it says nothing (ENOSPC...)."""
    if code == errno.EROFS:
        return Health.READONLY
    if code in _IO_ERRNOS:
        return Health.IO_ERROR
    return None


def retry_delay(failures: int, base: float = RETRY_BASE, cap: float = RETRY_CAP) -> float:
    """Seconds before the next write probe after ``failures`` failed ones (doubling)."""
    return float(min(cap, base * 2 ** max(0, min(failures - 1, 30))))


# -- IO ------------------------------------------------------------------------------


class _MarkerCache:
    """The marker's id, re-read only when its inode, size or mtime changes."""

    def __init__(self) -> None:
        self._key: tuple[int, int, int, int] | None = None
        self._value: tuple[str | None, str | None] = (None, None)
        self._lock = threading.Lock()

    def read(self, path: Path) -> tuple[str | None, str | None]:
        try:
            st = os.stat(path)
        except FileNotFoundError:
            return None, None
        key = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
        with self._lock:
            if key == self._key:
                return self._value
        value = _parse_marker(path)
        with self._lock:
            self._key, self._value = key, value
        return value


def _parse_marker(path: Path) -> tuple[str | None, str | None]:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None, None
    except OSError as exc:
        return None, f"cannot read it ({exc.strerror or exc})"
    except ValueError:
        return None, "not valid JSON"
    if not isinstance(doc, dict) or not isinstance(doc.get("storage_id"), str):
        return None, "has no storage_id"
    return doc["storage_id"], None


def observe(root: Path, cache: _MarkerCache | None = None) -> Observation:
    """Look at ``root`` once: stat, statvfs and the (cached) marker. Blocking, cheap."""
    try:
        st = os.stat(root)
    except (FileNotFoundError, NotADirectoryError):
        return Observation(exists=False)
    except OSError as exc:
        return Observation(exists=False, error=exc.strerror or str(exc))
    if not stat.S_ISDIR(st.st_mode):
        return Observation(exists=True, is_dir=False, dev=st.st_dev)
    try:
        readonly = bool(os.statvfs(root).f_flag & os.ST_RDONLY)
        marker_id, problem = (cache or _MarkerCache()).read(root / STORAGE_MARKER)
    except OSError as exc:
        return Observation(exists=True, is_dir=True, dev=st.st_dev, error=exc.strerror or str(exc))
    return Observation(True, True, st.st_dev, marker_id, problem, readonly)


def mount_signature(root: Path, mountinfo: Path = Path("/proc/self/mountinfo")) -> str | None:
    """The mount id and options of the mount holding ``root``: a new mount, or a remount,
    changes it (ext4's error-time read-only state shows only here, not in statvfs)."""
    try:
        target = os.path.realpath(root)
        text = mountinfo.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    best: tuple[int, str] | None = None
    for line in text.splitlines():
        fields = line.split(" ")
        if len(fields) < 6:
            continue
        point = fields[4].replace("\\040", " ")
        inside = target == point or target.startswith(point.rstrip("/") + "/")
        # Later lines are mounts on top of earlier ones at the same point.
        if inside and (best is None or len(point) >= best[0]):
            tail = line.split(" - ", 1)[1] if " - " in line else ""
            best = (len(point), f"{fields[0]} {fields[5]} {tail}")
    return best[1] if best else None


def capture_identity(root: Path, storage_id: str) -> Identity:
    """The identity to hold the root to, taken when the daemon starts (catalog checked)."""
    return Identity(storage_id, os.stat(root).st_dev)


def write_probe(root: Path) -> int | None:
    """Create, write, fsync and remove a small file in ``root``: None, or the errno."""
    path = root / PROBE_NAME
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            os.write(fd, b"edge-agent write probe\n")
            os.fsync(fd)
        finally:
            os.close(fd)
        os.unlink(path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(path)
        return exc.errno if exc.errno is not None else errno.EIO
    return None


# -- the gate --------------------------------------------------------------------------


class StorageUnavailable(OSError):
    """Raised before a write to storage that is lost, read-only or failing.

    An ``OSError`` so that the recorder's existing "the output side failed"
    path ends its session without writing anything.
    """


@dataclass(frozen=True)
class Change:
    """A transition the daemon acts on (alarms, pausing, recovery)."""

    old: Health
    new: Health
    reason: str | None
    recover: bool = False  # the disk is back: run recovery, then release()


_ERRNO = {Health.LOST: errno.ENODEV, Health.READONLY: errno.EROFS, Health.IO_ERROR: errno.EIO}


class StorageGate:
    """Whether writes to the storage root are allowed now; safe to use from any thread."""

    def __init__(
        self,
        root: Path,
        expected: Identity,
        *,
        retry_base: float = RETRY_BASE,
        retry_cap: float = RETRY_CAP,
        probe: Callable[[Path], int | None] = write_probe,
        monotonic: Callable[[], float] = time.monotonic,
        signature: Callable[[Path], str | None] = mount_signature,
    ) -> None:
        self.root = Path(root)
        self.expected = expected
        self.retry_base, self.retry_cap = retry_base, retry_cap
        self._probe = probe
        self._mono = monotonic
        self._signature = signature
        self._failed_on: str | None = None  # the mount's signature when writes failed
        self._cache = _MarkerCache()
        self._lock = threading.RLock()
        # One look at a time, so a stale look never overrides a newer one; apart from
        # the state lock, so that blocked() never waits behind a hung stat.
        self._looking = threading.Lock()
        self.health = Health.OK
        self.reason: str | None = None
        self.recovering = False  # the disk is back; recovery runs before writes resume
        self._suspect = False
        self._failures = 0
        self._retry_at = 0.0
        self._pending: list[Change] = []
        self._recent: list[Change] = []  # the changes of the poll under way

    # -- for writers (any thread) ------------------------------------------------------

    def blocked(self) -> str | None:
        """Why writes are not allowed now (no IO), or None."""
        with self._lock:
            if self.health is not Health.OK:
                return self.reason or str(self.health)
            if self.recovering:
                return "storage is back; recovering before writes resume"
            return None

    def check(self) -> None:
        """Before a segment or adopted file is opened: look again; raise if not writable."""
        self.poll()
        why = self.blocked()
        if why is not None:
            with self._lock:
                code = _ERRNO.get(self.health, errno.ENODEV)
            raise StorageUnavailable(code, why)

    def suspect(self) -> None:
        """A write failed: probe with a real write at the next look."""
        with self._lock:
            self._suspect = True

    # -- for the monitor ---------------------------------------------------------------

    def poll(self) -> list[Change]:
        """Look at the root (and probe writing when due); queue and return the changes."""
        with self._looking:
            obs = observe(self.root, self._cache)
            failing = self.health in (Health.READONLY, Health.IO_ERROR)
            sig = self._signature(self.root) if failing else None
            with self._lock:
                self._recent = []
                if failing and sig != self._failed_on:
                    self._retry_at = 0.0  # remounted (repaired?): try a write now
                if not self._step(decide(self.expected, obs, str(self.root)), obs):
                    return self._recent
            # Outside the state lock: a write to a hanging disk must not make blocked()
            # (asked from the event loop) wait.
            code = self._probe(self.root)
            sig = self._signature(self.root) if code is not None else None
            with self._lock:
                self._failed_on = sig
                self._probed(code)
                return self._recent

    def stalled(self, seconds: float) -> None:
        """A look at the root has not returned for ``seconds``: the disk hangs."""
        with self._lock:
            self._failures, self._retry_at = 0, 0.0
            self._set(
                Health.IO_ERROR,
                f"storage root {self.root} does not answer "
                f"(a stat or write has hung for over {seconds:.0f} s)",
            )

    def take_changes(self) -> list[Change]:
        with self._lock:
            out, self._pending = self._pending, []
            return out

    def release(self) -> None:
        """Recovery is done: writes may resume."""
        with self._lock:
            if self.health is Health.OK:
                self.recovering = False

    # -- the state machine (under the lock) ----------------------------------------------

    def _set(self, health: Health, reason: str | None, *, recover: bool = False) -> None:
        if health is self.health and reason == self.reason and not recover:
            return
        old = self.health
        self.health, self.reason = health, reason
        if health is not Health.OK:
            self.recovering = False
        change = Change(old, health, reason, recover)
        self._pending.append(change)
        self._recent.append(change)

    def _step(self, v: Verdict, obs: Observation) -> bool:
        """Apply a verdict; True when a write probe must decide."""
        if v.health is Health.LOST and v.moved and self.health is not Health.OK:
            # The right marker on a filesystem mounted anew: the disk is back.
            assert obs.dev is not None
            self.expected = Identity(self.expected.storage_id, obs.dev)
            v = Verdict(Health.READONLY, v.reason) if obs.readonly else Verdict(Health.OK)
        if v.health is not Health.OK:
            # Seen without writing: a probe is due as soon as the root looks right again.
            self._failures, self._retry_at = 0, 0.0
            self._set(v.health, v.reason)
            return False
        # The root looks right. A write probe decides after a write failed, and while
        # writes failed, on a slow back-off; otherwise the root is fine as it is.
        if self.health is Health.OK and not self._suspect:
            return False
        if not self._suspect and self._mono() < self._retry_at:
            return False
        self._suspect = False
        return True

    def _probed(self, code: int | None) -> None:
        bad = classify_write_error(code)
        if bad is None:
            self._failures = 0
            if self.health is not Health.OK:
                self._set(Health.OK, None, recover=True)
                self.recovering = True
            return
        self._failures += 1
        self._retry_at = self._mono() + retry_delay(self._failures, self.retry_base, self.retry_cap)
        what = "read-only" if bad is Health.READONLY else "failing"
        self._set(
            bad,
            f"writing to {self.root} fails ({os.strerror(code or errno.EIO)}): "
            f"the filesystem is {what}",
        )

    def retry_in(self) -> float | None:
        with self._lock:
            if self.health is not Health.IO_ERROR:
                return None
            return max(0.0, self._retry_at - self._mono())
