"""Hostile and careless input to the intake (issue 12, items 4, 5, 8, 9, 10).

Real files, real SQLite, real FIFOs and symlinks; failures of the catalog are
injected with an SQLite trigger, not a mock.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import stat
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from edge_agent.core.model import NOTICE_PERIODS, Purpose, RecState, Site, TimeSource
from edge_agent.intake.adopter import FolderAdopter, WatchSpec
from edge_agent.intake.intake import Intake, IntakeSettings, Origin, Outcome
from edge_agent.intake.intake_source import display_name
from edge_agent.media import media
from edge_agent.store.audit import AuditLog
from edge_agent.store.catalog import STORAGE_MARKER, Catalog
from tests.support.mediagen import make_video, write_garbage

NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
GATE = Origin(
    location="gate", site=Site.PREMISES, audio_room=False, signage=True, purpose=Purpose.SECURITY
)


@pytest.fixture()
def env(tmp_path: Path) -> Iterator[tuple[Intake, Catalog, Path, Path, Path]]:
    root = tmp_path / "recordings"
    root.mkdir()
    drop = tmp_path / "drop"
    drop.mkdir()
    cat = Catalog.open(tmp_path / "catalog.db", device_id="gw-test-01", storage_root=root)
    settings = IntakeSettings(
        device_id="gw-test-01",
        storage_root=root,
        quarantine_dir=tmp_path / "quarantine",
        periods=NOTICE_PERIODS,
        fsync=False,
    )
    yield Intake(cat, settings), cat, drop, root, tmp_path
    cat.close()


def stored_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file() and p.name != STORAGE_MARKER)


def adopter(intake: Intake, folder: Path) -> FolderAdopter:
    spec = WatchSpec(folder, GATE, stable_seconds=0.1, poll_seconds=0.1, use_inotify=False)
    return FolderAdopter(spec, intake, now=lambda: NOW)


def fail_inserts(cat: Catalog) -> None:
    """Make the real catalog refuse every new recording row."""
    cat.execute(
        "CREATE TRIGGER refuse_rows BEFORE INSERT ON recordings "
        "BEGIN SELECT RAISE(ABORT, 'injected catalog failure'); END"
    )


# -- item 4: implausible times, bounded retries, the shared lock --------------------------


def test_year_one_name_and_tag_is_adopted_with_the_next_candidate(env) -> None:
    intake, _cat, drop, _root, tmp = env
    made = make_video(
        tmp / "x.mp4",
        container="mp4",
        seconds=1,
        metadata={"creation_time": "0001-01-01T00:00:00+01:00"},
    )
    # MP4 keeps the text verbatim (Matroska would rewrite it).
    assert media.probe(made).tags["creation_time"] == "0001-01-01T00:00:00+01:00"
    src = drop / "cam_00010101T000000+0100.mp4"
    os.rename(made, src)
    mtime = datetime(2026, 11, 29, 11, 0, tzinfo=UTC).timestamp()
    os.utime(src, (mtime, mtime))
    results = asyncio.run(adopter(intake, drop).pass_once(force=True))
    assert [r.outcome for r in results] == [Outcome.ADOPTED]
    rec = results[0].recording
    assert rec is not None and rec.tags.time_source is TimeSource.MTIME
    assert rec.tags.start.timestamp() == pytest.approx(mtime)


def test_file_whose_adoption_keeps_failing_is_quarantined_after_three_tries(env) -> None:
    intake, cat, drop, root, tmp = env
    fail_inserts(cat)
    src = make_video(drop / "cam.mkv", container="mkv", seconds=1)
    clock = [100.0]
    ad = FolderAdopter(
        WatchSpec(drop, GATE, use_inotify=False, retry_seconds=10.0),
        intake,
        now=lambda: NOW,
        monotonic=lambda: clock[0],
    )

    async def passes() -> list[list[Outcome]]:
        seen = []
        for step in (0.0, 1.0, 10.0, 5.0, 20.0):  # waits of 10 s, then 20 s
            clock[0] += step
            seen.append([r.outcome for r in await ad.pass_once(force=True)])
            # Whatever failed after the copy existed, no copy is left behind.
            assert stored_files(root) == []
        return seen

    outcomes = asyncio.run(passes())
    # Attempt 1 fails; 1 s later it is not retried (back-off), at +11 s attempt 2
    # fails; at +16 s it waits again (20 s); at +36 s attempt 3 fails: quarantined.
    assert outcomes == [[], [], [], [], [Outcome.QUARANTINED]]
    assert ad.stats.errors == 3 and ad.stats.quarantined == 1
    assert not src.exists()
    reasons = list((tmp / "quarantine").glob("*.reason.json"))
    assert len(reasons) == 1
    assert "adoption_failed: 3 tries" in reasons[0].read_text()
    assert "injected catalog failure" in reasons[0].read_text()
    entries = [e for e in AuditLog(cat).export() if e["action"] == "recording.quarantined"]
    assert len(entries) == 1 and "adoption_failed" in entries[0]["data"]["reason"]


def test_reading_a_file_does_not_take_the_lock_all_folders_share(env) -> None:
    intake, _cat, drop, _root, _tmp = env
    write_garbage(drop / "junk.mp4", 256 * 1024, seed=7)

    async def run() -> list[Outcome]:
        lock = asyncio.Lock()
        ad = FolderAdopter(
            WatchSpec(drop, GATE, use_inotify=False), intake, now=lambda: NOW, lock=lock
        )
        async with lock:  # another folder is busy adopting
            results = await asyncio.wait_for(ad.pass_once(force=True), timeout=20)
        return [r.outcome for r in results]

    # Hashing and probing found it is not media without waiting for the lock.
    assert asyncio.run(run()) == [Outcome.QUARANTINED]


# -- item 5: open once, by descriptor ----------------------------------------------------------


class SwapAfterCheck(Intake):
    """Swaps the checked file for something else right after the name-based check."""

    swap: object = None

    def check_path(self, path: Path, *, within: Path | None = None) -> str | None:
        verdict = super().check_path(path, within=within)
        if callable(self.swap):
            self.swap(path)
        return verdict


def _swapping(intake: Intake, swap: object) -> SwapAfterCheck:
    out = SwapAfterCheck(intake.catalog, intake.settings)
    out.swap = swap
    return out


def test_symlink_swapped_in_after_the_check_is_not_followed(env) -> None:
    intake, cat, drop, root, tmp = env
    (tmp / "secret").mkdir()
    outside = make_video(tmp / "secret" / "outside.mkv", container="mkv", seconds=1)
    outside_sha = media.sha256_file(outside)
    make_video(drop / "cam.mkv", container="mkv", seconds=1)

    def to_symlink(path: Path) -> None:
        path.unlink()
        path.symlink_to(outside)

    swapping = _swapping(intake, to_symlink)
    results = asyncio.run(adopter(swapping, drop).pass_once(force=True))
    assert [r.outcome for r in results] == [Outcome.REFUSED]
    assert results[0].reason is not None and results[0].reason.startswith("symlink")
    assert cat.recordings.find_by_source_sha256(outside_sha) is None
    assert cat.recordings.list(states=None) == []
    assert outside.exists() and stored_files(root) == []


def test_fifo_swapped_in_does_not_block_other_folders(env) -> None:
    intake, _cat, drop, _root, tmp = env
    other = tmp / "other"
    other.mkdir()
    make_video(drop / "a.mkv", container="mkv", seconds=1)
    make_video(other / "b.mkv", container="mkv", seconds=1)
    fifo = drop / "a.mkv"

    def to_fifo(path: Path) -> None:
        if path == fifo and path.is_file():
            path.unlink()
            os.mkfifo(path)

    swapping = _swapping(intake, to_fifo)

    async def run() -> tuple[list[Outcome], list[Outcome]]:
        lock = asyncio.Lock()
        a = FolderAdopter(
            WatchSpec(drop, GATE, use_inotify=False), swapping, now=lambda: NOW, lock=lock
        )
        b = FolderAdopter(
            WatchSpec(other, GATE, use_inotify=False), intake, now=lambda: NOW, lock=lock
        )
        ra = await a.pass_once(force=True)  # first, so a blocking open would hold the lock
        rb = await b.pass_once(force=True)
        return [r.outcome for r in ra], [r.outcome for r in rb]

    def unblock() -> None:
        # Releases a reader stuck in open() (the old code) so the test ends either way.
        with contextlib.suppress(OSError):
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))

    rescue = threading.Timer(20.0, unblock)
    rescue.start()
    t0 = time.monotonic()
    try:
        ra, rb = asyncio.run(asyncio.wait_for(run(), timeout=15))
    finally:
        rescue.cancel()
    assert time.monotonic() - t0 < 15
    assert ra == [Outcome.REFUSED] and rb == [Outcome.ADOPTED]
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)  # refused in place


def test_file_replaced_after_it_became_stable_is_watched_afresh(env) -> None:
    intake, cat, drop, _root, tmp = env
    src = make_video(drop / "cam.mkv", container="mkv", seconds=1)
    ad = adopter(intake, drop)
    ident = asyncio.run(asyncio.to_thread(ad._ready, src, True))
    assert ident is not None
    replacement = make_video(tmp / "other.mkv", container="mkv", seconds=2)
    os.replace(replacement, src)  # a new inode under the watched name
    assert asyncio.run(ad._adopt(src, ident)) is None
    assert cat.recordings.list(states=None) == [] and src.exists()


# -- item 9: truncated files -------------------------------------------------------------------


def test_truncated_matroska_ends_at_its_last_packet_and_is_flagged(env) -> None:
    intake, cat, drop, _root, tmp = env
    whole = make_video(tmp / "whole.mkv", container="mkv", seconds=4)
    cut = drop / "cut.mkv"
    cut.write_bytes(whole.read_bytes()[: 20 * 1024])
    assert media.probe(cut).duration == pytest.approx(4.0, abs=0.1)  # the header's claim

    result = intake.adopt(cut, GATE, NOW)
    assert result.outcome is Outcome.ADOPTED
    rec = result.recording
    assert rec is not None
    seconds = (rec.end - rec.start).total_seconds()
    assert 0 < seconds < 2.0
    assert cat.recordings.is_truncated(rec.id)
    tags = media.probe(intake.settings.storage_root / rec.path).tags
    assert tags[media.TRUNCATED_TAG] == "true"
    added = [e for e in AuditLog(cat).export() if e["action"] == "recording.added"]
    assert added[-1]["data"]["truncated"] is True

    full = intake.adopt(shutil.copy(whole, drop / "whole.mkv"), GATE, NOW)
    assert full.recording is not None and not cat.recordings.is_truncated(full.recording.id)
    assert (full.recording.end - full.recording.start).total_seconds() == pytest.approx(4.0, 0.05)


# -- item 10: names that are not UTF-8, no orphan copies ---------------------------------------


def test_latin1_name_is_adopted_once_with_one_copy(env) -> None:
    intake, cat, drop, root, tmp = env
    made = make_video(tmp / "x.mkv", container="mkv", seconds=1)
    raw = os.path.join(os.fsencode(drop), b"cam\xe9_2026.mkv")
    os.rename(made, raw)
    ad = adopter(intake, drop)

    async def passes() -> list[Outcome]:
        out = []
        for _ in range(3):
            out += [r.outcome for r in await ad.pass_once(force=True)]
        return out

    assert asyncio.run(passes()) == [Outcome.ADOPTED]
    assert not os.path.exists(raw)
    assert len(cat.recordings.list()) == 1
    assert len(stored_files(root)) == 1
    assert AuditLog(cat).verify().ok
    added = [e for e in AuditLog(cat).export() if e["action"] == "recording.added"]
    assert added[0]["data"]["from"].endswith("cam\\xe9_2026.mkv")


def test_display_name_is_bounded_escaped_text() -> None:
    assert display_name(os.fsdecode(b"cam\xe9\n.mp4")) == "cam\\xe9\\n.mp4"
    long = display_name("x" * 5000)
    assert len(long) < 260 and long.endswith("(+4800 chars)")
    display_name(os.fsdecode(b"\xff" * 300)).encode("utf-8")


def test_catalog_failure_after_the_copy_leaves_no_orphan(env) -> None:
    intake, cat, drop, root, _tmp = env
    src = make_video(drop / "cam.mkv", container="mkv", seconds=1)
    fail_inserts(cat)
    with pytest.raises(Exception, match="injected catalog failure"):
        intake.adopt(src, GATE, NOW)
    assert src.exists()
    assert stored_files(root) == []
    cat.execute("DROP TRIGGER refuse_rows")
    assert intake.adopt(src, GATE, NOW).outcome is Outcome.ADOPTED
    assert len(stored_files(root)) == 1
    assert [r.state for r in cat.recordings.list(states=None)] == [RecState.ACTIVE]


# -- item 8 (intake part): modes whatever the umask --------------------------------------------


@pytest.mark.parametrize("umask", [0o077, 0o022])
def test_folders_and_files_get_their_modes_whatever_the_umask(env, umask: int) -> None:
    intake, _cat, drop, root, tmp = env
    good = make_video(drop / "cam.mkv", container="mkv", seconds=1)
    junk = write_garbage(drop / "junk.mp4", 4096, seed=2)
    os.chmod(junk, 0o666)
    old = os.umask(umask)
    try:
        assert intake.adopt(good, GATE, NOW).outcome is Outcome.ADOPTED
        assert intake.adopt(junk, GATE, NOW).outcome is Outcome.QUARANTINED
    finally:
        os.umask(old)
    made = [p for p in root.rglob("*") if p.name != STORAGE_MARKER]
    dirs = [p for p in made if p.is_dir()] + [tmp / "quarantine"]
    files = [p for p in made if p.is_file()] + list((tmp / "quarantine").iterdir())
    assert len(dirs) == 5 and len(files) == 3
    assert {oct(stat.S_IMODE(p.stat().st_mode)) for p in dirs} == {"0o750"}
    assert {oct(stat.S_IMODE(p.stat().st_mode)) for p in files} == {"0o640"}


def test_outside_times_become_absent_or_a_clean_value_error() -> None:
    from edge_agent.core.timesource import recording_end, start_candidates, time_from_epoch

    for bad in (1e20, -1e20, float("nan"), float("inf"), 253402300800.0):
        assert time_from_epoch(bad) is None
    cands = start_candidates("cam_00010101T000000+0100.mp4", None, None, 1e20)
    assert [value for _, value in cands] == [None, None, None]
    for seconds in (float("nan"), -1.0, 1e12, float("inf")):
        with pytest.raises(ValueError):
            recording_end(NOW, seconds)
    assert recording_end(NOW, 4.0) == NOW.replace(second=4)


@pytest.mark.parametrize("free", [0, 1])
def test_running_out_of_descriptors_is_a_retry_not_a_verdict(env, free: int) -> None:
    import resource

    from edge_agent.intake.intake import IntakeIOError

    intake, _cat, drop, _root, tmp = env
    src = make_video(drop / "cam.mkv", container="mkv", seconds=1)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    held: list[int] = []
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(soft, 512), hard))
        with contextlib.suppress(OSError):
            while True:
                held.append(os.open(os.devnull, os.O_RDONLY))
        for _ in range(free):
            os.close(held.pop())
        with pytest.raises(IntakeIOError):
            intake.adopt(src, GATE, NOW)
    finally:
        for fd in held:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert src.exists() and not (tmp / "quarantine").exists()
    assert intake.adopt(src, GATE, NOW).outcome is Outcome.ADOPTED
