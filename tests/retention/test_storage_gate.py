"""The storage gate: the pure verdict, the state machine, and a real tmpfs made read-only."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import threading
import time
from pathlib import Path

import pytest

from edge_agent.config.profiles import SpaceFloor
from edge_agent.config.storage_checks import NOTHING_DELETABLE, floor_problem, full_reason
from edge_agent.core.pressure import PAUSE_REASON
from edge_agent.retention.storage_gate import (
    Health,
    Identity,
    Observation,
    StorageGate,
    StorageUnavailable,
    capture_identity,
    classify_write_error,
    decide,
    observe,
    retry_delay,
)
from edge_agent.store.catalog import STORAGE_MARKER
from tests.support.tmpfs import mounted_tmpfs

ID = Identity("abc", os.makedev(8, 17))
GOOD = Observation(True, True, ID.dev, "abc")


# -- the pure verdict --------------------------------------------------------------


def test_the_right_disk_is_ok() -> None:
    assert decide(ID, GOOD, "/srv/rec").health is Health.OK


@pytest.mark.parametrize(
    ("obs", "words"),
    [
        (Observation(False), "is missing"),
        (Observation(True, False, ID.dev), "not a directory"),
        (Observation(True, True, os.makedev(179, 2)), "no storage marker"),
        (Observation(True, True, ID.dev, "other"), "storage other, not abc"),
        (Observation(True, True, ID.dev, None, "not valid JSON"), "not valid JSON"),
        (Observation(True, True, os.makedev(8, 33), "abc"), "now on device 8:33, not 8:17"),
    ],
)
def test_a_lost_disk_says_why(obs: Observation, words: str) -> None:
    v = decide(ID, obs, "/srv/rec")
    assert v.health is Health.LOST and v.reason is not None and words in v.reason


def test_read_only_and_unreadable_roots() -> None:
    ro = decide(ID, Observation(True, True, ID.dev, "abc", readonly=True), "/r")
    assert ro.health is Health.READONLY and "read-only" in (ro.reason or "")
    io = decide(ID, Observation(False, error="Input/output error"), "/r")
    assert io.health is Health.IO_ERROR and "Input/output error" in (io.reason or "")


def test_write_errors_and_backoff() -> None:
    assert classify_write_error(errno.EROFS) is Health.READONLY
    assert classify_write_error(errno.EIO) is Health.IO_ERROR
    assert classify_write_error(errno.ENOSPC) is None  # disk pressure's business
    assert classify_write_error(None) is None
    assert [retry_delay(n) for n in (1, 2, 3, 5, 6, 50)] == [30, 60, 120, 480, 600, 600]


def test_pause_reasons_say_what_is_true() -> None:
    assert full_reason(held=3, floor=10, total=100) == PAUSE_REASON
    assert full_reason(held=0, floor=10, total=100) == NOTHING_DELETABLE
    big = full_reason(held=0, floor=2 * 1024**3, total=200 * 1024**2)
    assert "larger than the whole disk" in big and "held" not in big
    line = floor_problem(SpaceFloor(bytes=2 * 1024**3), 200 * 1024**2, Path("/mnt/usb"))
    assert line is not None and line.startswith("storage.free_space_floor: '2GiB'")
    assert 'free_space_floor = "10%"' in line
    assert floor_problem(SpaceFloor(percent=10), 200 * 1024**2, Path("/m")) is None


# -- the state machine, with a write probe that says what a disk would ----------------


class Disk:
    """A storage root in a temporary folder; the write probe answers with ``fail``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(exist_ok=True)
        (root / STORAGE_MARKER).write_text(json.dumps({"storage_id": "abc"}))
        self.fail: int | None = None
        self.probes = 0
        self.mono = 0.0

    def probe(self, _root: Path) -> int | None:
        self.probes += 1
        return self.fail

    def gate(self) -> StorageGate:
        return StorageGate(
            self.root,
            capture_identity(self.root, "abc"),
            probe=self.probe,
            monotonic=lambda: self.mono,
        )


def test_missing_root_blocks_at_once_and_recovery_needs_release(tmp_path: Path) -> None:
    d = Disk(tmp_path / "rec")
    gate = d.gate()
    gate.check()  # fine
    assert d.probes == 0  # no write probe while nothing failed
    (d.root / STORAGE_MARKER).rename(tmp_path / "marker")
    with pytest.raises(StorageUnavailable) as err:
        gate.check()
    assert err.value.errno == errno.ENODEV and "no storage marker" in str(err.value.strerror)
    changes = gate.take_changes()
    assert [(c.old, c.new) for c in changes] == [(Health.OK, Health.LOST)]
    assert gate.poll() == []  # same problem: no new change
    (tmp_path / "marker").rename(d.root / STORAGE_MARKER)
    [back] = gate.poll()
    assert back.recover and back.new is Health.OK and d.probes == 1
    assert gate.blocked() is not None  # recovery runs before writes resume
    with pytest.raises(StorageUnavailable):
        gate.check()
    gate.release()
    assert gate.blocked() is None
    gate.check()


def test_io_errors_retry_on_a_slow_backoff(tmp_path: Path) -> None:
    d = Disk(tmp_path / "rec")
    gate = d.gate()
    d.fail = errno.EIO
    gate.suspect()
    [c] = gate.poll()
    assert c.new is Health.IO_ERROR and "Input/output error" in (c.reason or "")
    assert gate.retry_in() == 30
    for _ in range(5):
        gate.poll()  # ticks inside the back-off: no write attempted
    assert d.probes == 1
    d.mono = 30.0
    gate.poll()
    assert d.probes == 2 and gate.retry_in() == 60  # doubled
    d.mono, d.fail = 90.0, None
    [ok] = gate.poll()
    assert ok.recover and d.probes == 3
    gate.release()
    gate.check()


def test_erofs_on_write_is_read_only(tmp_path: Path) -> None:
    d = Disk(tmp_path / "rec")
    gate = d.gate()
    d.fail = errno.EROFS
    gate.suspect()
    with pytest.raises(StorageUnavailable) as err:
        gate.check()
    assert err.value.errno == errno.EROFS and gate.health is Health.READONLY


def test_checks_from_many_threads_agree(tmp_path: Path) -> None:
    d = Disk(tmp_path / "rec")
    gate = d.gate()
    errors: list[BaseException] = []
    done = threading.Event()

    def writer() -> None:
        while not done.is_set():
            try:
                gate.check()
            except StorageUnavailable:
                pass
            except BaseException as exc:  # pragma: no cover - the failure being tested
                errors.append(exc)

    threads = [threading.Thread(target=writer) for _ in range(4)]
    for t in threads:
        t.start()
    time.sleep(0.05)
    (d.root / STORAGE_MARKER).unlink()
    time.sleep(0.05)
    done.set()
    for t in threads:
        t.join()
    assert not errors
    assert [c.new for c in gate.take_changes()] == [Health.LOST]


def test_the_look_is_cheap(tmp_path: Path) -> None:
    d = Disk(tmp_path / "rec")
    gate = d.gate()
    n = 2000
    t0 = time.perf_counter()
    for _ in range(n):
        gate.poll()
    per = (time.perf_counter() - t0) / n
    assert per < 0.001, f"{per * 1e6:.0f} µs per look"


# -- a real filesystem remounted read-only -----------------------------------------


def _mount(*args: str) -> None:
    subprocess.run(["mount", *args], check=True, capture_output=True)


def test_a_real_tmpfs_remounted_read_only_and_back(tmp_path: Path) -> None:
    with mounted_tmpfs(tmp_path / "disk", "4m") as mnt:
        (mnt / STORAGE_MARKER).write_text(json.dumps({"storage_id": "abc"}))
        gate = StorageGate(mnt, capture_identity(mnt, "abc"))
        assert observe(mnt).marker_id == "abc"
        gate.check()
        _mount("-o", "remount,ro", str(mnt))
        try:
            with pytest.raises(StorageUnavailable) as err:
                gate.check()
            assert err.value.errno == errno.EROFS
        finally:
            _mount("-o", "remount,rw", str(mnt))
        [ro] = gate.take_changes()
        assert ro.new is Health.READONLY
        # The flag cleared: a real write probe confirms at once.
        changes = gate.poll()
        assert [c.recover for c in changes] == [True]
        gate.release()
        gate.check()
        assert not list(mnt.glob(".edge-agent-write-probe*"))


# -- the intake and the janitor stand still while the disk is gone ---------------------


def test_adoption_and_janitor_stand_still_while_the_disk_is_gone(tmp_path: Path) -> None:
    from datetime import UTC, datetime, timedelta

    from edge_agent.core.clock import FakeClock
    from edge_agent.core.model import NOTICE_PERIODS, Purpose, RecState, Site
    from edge_agent.intake.intake import Intake, IntakeIOError, IntakeSettings, Origin
    from edge_agent.retention.clockguard import ClockGuard, ClockGuardSettings
    from edge_agent.retention.janitor import Janitor
    from edge_agent.store.catalog import Catalog
    from tests.support.mediagen import make_video

    now = datetime.now(UTC).replace(microsecond=0)
    root, drop = tmp_path / "recordings", tmp_path / "drop"
    drop.mkdir()
    cat = Catalog.open(tmp_path / "catalog.db", device_id="gw-1", storage_root=root)
    storage_id = str(cat.get_meta("storage_root_id"))
    settings = IntakeSettings("gw-1", root, tmp_path / "quarantine", NOTICE_PERIODS, fsync=False)
    intake = Intake(cat, settings)
    gate = StorageGate(root, capture_identity(root, storage_id))
    intake.gate = gate
    origin = Origin("gate", Site.PREMISES, False, True, Purpose.SECURITY)
    # An old recording, due for deletion long ago.
    old = make_video(drop / "old.mp4", seconds=1.0, creation_time=now - timedelta(days=30))
    rec = intake.adopt(old, origin, now).recording
    assert rec is not None and rec.deadline is not None and rec.deadline < now

    # The disk goes away: the root is an empty folder of another filesystem now.
    (root / STORAGE_MARKER).rename(tmp_path / "marker")
    clip = make_video(drop / "new.mp4", seconds=1.0, creation_time=now)
    before = sorted(p.name for p in root.rglob("*"))
    with pytest.raises(IntakeIOError, match="storage unavailable"):
        intake.adopt(clip, origin, now)
    assert clip.exists()  # the original waits for the disk
    assert sorted(p.name for p in root.rglob("*")) == before  # not even a folder

    guard = ClockGuard(
        cat, FakeClock(now, synced=True), ClockGuardSettings(release_date=now - timedelta(days=99))
    )
    janitor = Janitor(cat, root, periods=NOTICE_PERIODS, guard=guard, fsync=False)
    janitor.gate = gate
    (root / rec.path).unlink()  # its file went away with the disk, too
    res = janitor.sweep_once(now)
    assert res.storage_unavailable and not res.deleted
    got = cat.recordings.get(rec.id)
    assert got is not None and got.state is RecState.ACTIVE  # neither deleted nor missing

    (tmp_path / "marker").rename(root / STORAGE_MARKER)
    gate.poll()
    gate.release()
    assert intake.adopt(clip, origin, now).recording is not None
    cat.close()


def test_a_hanging_write_probe_does_not_hold_up_blocked(tmp_path: Path) -> None:
    d = Disk(tmp_path / "rec")
    release = threading.Event()

    def hanging(_root: Path) -> int | None:
        release.wait(10)
        return errno.EIO

    gate = StorageGate(d.root, capture_identity(d.root, "abc"), probe=hanging)
    gate.suspect()
    t = threading.Thread(target=gate.poll)
    t.start()
    time.sleep(0.1)
    t0 = time.perf_counter()
    assert gate.blocked() is None  # answered at once, from the last known state
    assert time.perf_counter() - t0 < 0.05
    release.set()
    t.join()
    assert gate.health is Health.IO_ERROR


def test_a_remount_is_tried_at_once_not_after_the_backoff(tmp_path: Path) -> None:
    d = Disk(tmp_path / "rec")
    mount = ["7 rw - ext4 /dev/loop0 rw,emergency_ro"]
    gate = StorageGate(
        d.root,
        capture_identity(d.root, "abc"),
        probe=d.probe,
        monotonic=lambda: d.mono,
        signature=lambda _root: mount[0],
    )
    d.fail = errno.EROFS
    gate.suspect()
    assert [c.new for c in gate.poll()] == [Health.READONLY]
    gate.poll()
    assert d.probes == 1  # waits for the back-off while the mount is the same
    mount[0], d.fail = "9 rw - ext4 /dev/loop0 rw", None  # unmounted, repaired, mounted
    [back] = gate.poll()
    assert back.recover and d.probes == 2


def test_mount_signature_reads_mountinfo(tmp_path: Path) -> None:
    from edge_agent.retention.storage_gate import mount_signature

    info = tmp_path / "mountinfo"
    info.write_text(
        "22 1 0:21 / / rw,relatime - ext4 /dev/vda rw\n"
        "40 22 7:0 / /mnt/usb rw - ext4 /dev/loop0 rw,errors=remount-ro\n"
        "41 22 0:50 / /mnt/usb\\040disk rw - tmpfs tmpfs rw\n"
        "42 40 7:0 / /mnt/usb ro - ext4 /dev/loop0 ro\n"
    )
    assert mount_signature(Path("/mnt/usb/rec"), info) == "42 ro ext4 /dev/loop0 ro"
    assert mount_signature(Path("/mnt/usb disk/x"), info) == "41 rw tmpfs tmpfs rw"
    assert mount_signature(Path("/srv"), info) == "22 rw,relatime ext4 /dev/vda rw"
