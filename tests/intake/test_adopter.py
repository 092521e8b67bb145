"""Watched folders: complete files are adopted, files still being written are not."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from edge_agent.core.model import NOTICE_PERIODS, Purpose, Site
from edge_agent.core.stability import is_stable, observe
from edge_agent.intake.adopter import FolderAdopter, WatchSpec
from edge_agent.intake.intake import Intake, IntakeSettings, Origin, Outcome
from edge_agent.intake.stability import open_for_writing
from edge_agent.store.catalog import Catalog
from tests.support.mediagen import make_video, write_garbage

GATE = Origin(
    location="gate", site=Site.PREMISES, audio_room=False, signage=True, purpose=Purpose.SECURITY
)


def test_stability_rule() -> None:
    o = observe(None, 100, 1, now=10.0)
    assert not is_stable(o, 12.0, 5.0)
    assert is_stable(o, 15.0, 5.0)
    grown = observe(o, 200, 2, now=14.0)
    assert grown.stable_since == 14.0
    assert not is_stable(grown, 15.0, 5.0)
    assert observe(grown, 200, 2, now=30.0) is grown
    empty = observe(None, 0, 1, now=0.0)
    assert not is_stable(empty, 6.0, 5.0)


def test_open_for_writing_sees_our_own_writer(tmp_path: Path) -> None:
    f = tmp_path / "w.bin"
    with open(f, "wb") as fh:
        fh.write(b"x")
        assert open_for_writing(f)
    assert not open_for_writing(f)
    with open(f, "rb"):
        assert not open_for_writing(f)


@pytest.fixture()
def setup(tmp_path: Path):
    root = tmp_path / "recordings"
    root.mkdir()
    drop = tmp_path / "drop"
    drop.mkdir()
    cat = Catalog.open(tmp_path / "catalog.db", device_id="gw-test-01", storage_root=root)
    intake = Intake(
        cat,
        IntakeSettings(
            device_id="gw-test-01",
            storage_root=root,
            quarantine_dir=tmp_path / "q",
            periods=NOTICE_PERIODS,
        ),
    )
    yield intake, cat, drop, tmp_path
    cat.close()


@pytest.mark.parametrize("use_inotify", [True, False])
async def test_adopts_complete_files_and_skips_open_ones(setup, use_inotify: bool) -> None:
    intake, cat, drop, tmp = setup
    results = []
    adopter = FolderAdopter(
        WatchSpec(drop, GATE, stable_seconds=0.3, poll_seconds=0.2, use_inotify=use_inotify),
        intake,
        now=lambda: datetime.now(UTC),
        on_result=results.append,
    )
    task = asyncio.create_task(adopter.run())
    try:
        # A file still open for writing is left alone however long it is quiet.
        writing = drop / "in-progress.mkv"
        staged = make_video(tmp / "staged.mkv", container="mkv", seconds=1)
        fh = open(writing, "wb")  # noqa: SIM115, ASYNC230 - held open on purpose
        fh.write(staged.read_bytes())
        fh.flush()
        done = make_video(tmp / "done.mp4", container="mp4", seconds=1, audio="aac")
        os.rename(done, drop / "done.mp4")
        write_garbage(drop / "junk.mp4", 4096, seed=1)
        for _ in range(100):
            if len(results) >= 2:
                break
            await asyncio.sleep(0.1)
        outcomes = sorted(str(r.outcome) for r in results)
        assert outcomes == ["adopted", "quarantined"]
        assert writing.exists()
        fh.close()
        for _ in range(100):
            if len(results) >= 3:
                break
            await asyncio.sleep(0.1)
        assert len(results) == 3
        assert results[-1].outcome is Outcome.ADOPTED
        assert not writing.exists()
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert len(cat.recordings.list()) == 2
    assert adopter.stats.adopted == 2 and adopter.stats.quarantined == 1


async def test_files_present_at_start_are_adopted(setup) -> None:
    intake, cat, drop, _tmp = setup
    make_video(drop / "left-while-down.mkv", container="mkv", seconds=1)
    adopter = FolderAdopter(
        WatchSpec(drop, GATE, stable_seconds=5), intake, now=lambda: datetime.now(UTC)
    )
    first = await adopter.pass_once(force=True)
    assert [r.outcome for r in first] == [Outcome.ADOPTED]
    assert len(cat.recordings.list()) == 1


async def test_a_backlog_is_read_ahead_and_filed_in_order(setup) -> None:
    # The next file is read while this one is filed (adopter.py); every file still
    # gets exactly one verdict, a bad one in the middle included.
    intake, cat, drop, tmp = setup
    for i in range(6):
        make_video(tmp / f"f{i}.mkv", container="mkv", seconds=1, metadata={"title": str(i)})
        os.rename(tmp / f"f{i}.mkv", drop / f"f{i}.mkv")
    write_garbage(drop / "f3-junk.mp4", 4096, seed=2)
    adopter = FolderAdopter(
        WatchSpec(drop, GATE, stable_seconds=5), intake, now=lambda: datetime.now(UTC)
    )
    got = await adopter.pass_once(force=True)
    assert sorted(str(r.outcome) for r in got) == ["adopted"] * 6 + ["quarantined"]
    assert len(cat.recordings.list()) == 6
    assert list(drop.iterdir()) == []


def _open_files() -> set[str]:
    out = set()
    for n in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):  # the listing's own descriptor is gone
            out.add(os.readlink(f"/proc/self/fd/{n}"))
    return out


async def test_cancelled_pass_closes_the_read_in_flight(setup) -> None:
    intake, cat, drop, _tmp = setup
    for i in range(3):
        make_video(drop / f"c{i}.mkv", container="mkv", seconds=1, metadata={"title": str(i)})
    first = asyncio.Event()
    adopter = FolderAdopter(
        WatchSpec(drop, GATE, stable_seconds=5),
        intake,
        now=lambda: datetime.now(UTC),
        on_result=lambda _r: first.set(),
    )
    before = _open_files()
    task = asyncio.create_task(adopter.pass_once(force=True))
    await first.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    # No source descriptor left open by the read that was ahead.
    after = _open_files()
    assert not [p for p in after - before if p.endswith(".mkv")], after - before
    rest = await adopter.pass_once(force=True)
    assert len(cat.recordings.list()) == 3, rest


def _write_config(tmp: Path) -> Path:
    cfg = tmp / "config.toml"
    cfg.write_text(f"""
[device]
id = "gw-test-01"
hw_profile = "generic-linux"

[storage]
root = "{tmp / "recordings"}"
catalog = "{tmp / "catalog.db"}"

[[locations]]
id = "gate"
kind = "premises"
signage = true

[[locations]]
id = "lab-audio-1"
kind = "premises"
audio_room = true
signage = true
""")
    return cfg


def test_ingest_cli(tmp_path: Path) -> None:
    cfg = _write_config(tmp_path)
    a = make_video(tmp_path / "a.mp4", container="mp4", seconds=1, audio="aac")
    b = make_video(tmp_path / "b.mkv", container="mkv", seconds=1, audio="opus")
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "edge_agent",
            "ingest",
            "--config",
            str(cfg),
            "--location",
            "gate",
            "--purpose",
            "security",
            "--json",
            str(a),
            str(b),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert [r["outcome"] for r in doc["results"]] == ["adopted", "adopted"]
    assert all(r["audio_removed"] for r in doc["results"])
    assert all(r["recording"]["audio"] is False for r in doc["results"])

    listed = subprocess.run(
        [sys.executable, "-m", "edge_agent", "recordings", "list", "--config", str(cfg), "--json"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert len(json.loads(listed.stdout)) == 2

    bad = subprocess.run(
        [
            sys.executable,
            "-m",
            "edge_agent",
            "ingest",
            "--config",
            str(cfg),
            "--location",
            "lab-3",
            "--purpose",
            "rnd",
            str(a),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert bad.returncode == 2
    assert "unknown location 'lab-3'" in bad.stderr

    junk = write_garbage(tmp_path / "junk.mp4", 1000, seed=2)
    q = subprocess.run(
        [
            sys.executable,
            "-m",
            "edge_agent",
            "ingest",
            "--config",
            str(cfg),
            "--location",
            "gate",
            "--purpose",
            "security",
            str(junk),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert q.returncode == 1
    assert "quarantined" in q.stdout


async def test_backlog_through_every_stage_with_bad_files_between(setup) -> None:
    # Files in every stage at once (read, write, seal, commit, release): a bad file
    # or a duplicate between good ones changes nothing for the others, and a pass
    # cancelled with files in flight leaves no copy and no open source behind.
    intake, cat, drop, _tmp = setup
    names = []
    for i in range(10):
        names.append(f"cam{i:02d}.mp4")
        make_video(drop / names[-1], seconds=1, audio="aac", metadata={"title": str(i)})
    write_garbage(drop / "cam03b.mp4", 8192, seed=3)
    (drop / "cam05b.mp4").write_bytes((drop / "cam05.mp4").read_bytes())  # same content
    root = intake.settings.storage_root
    seen: list[Outcome] = []
    cancel_after = asyncio.Event()

    def record(result) -> None:
        seen.append(result.outcome)
        if len(seen) == 3:
            cancel_after.set()

    adopter = FolderAdopter(
        WatchSpec(drop, GATE, stable_seconds=5), intake, now=lambda: datetime.now(UTC),
        on_result=record,
    )  # fmt: skip
    before = _open_files()
    task = asyncio.create_task(adopter.pass_once(force=True))
    await cancel_after.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not [p for p in _open_files() - before if p.endswith(".mp4")]
    assert not list(root.rglob(".partial-*"))
    await adopter.pass_once(force=True)
    # A file whose commit finished as the pass was cancelled kept its source (the
    # release never ran): the next pass finds it catalogued and drops it as a duplicate.
    adopted, dupes = seen.count(Outcome.ADOPTED), seen.count(Outcome.DUPLICATE)
    assert (adopted, dupes) in ((10, 1), (9, 2)), seen
    assert seen.count(Outcome.QUARANTINED) == 1
    assert len(cat.recordings.list()) == 10 and list(drop.iterdir()) == []
    assert not list(root.rglob(".partial-*"))
    verdict = intake.audit.verify()
    assert verdict.ok, verdict


def test_a_stage_whose_bookkeeping_fails_lives_on(setup) -> None:
    # The stage threads hand files over by bounded queues: one that died would
    # leave the stage before it waiting for ever. Bookkeeping that fails for one
    # file is logged and the rest of the pass goes through.
    from edge_agent.intake.pipeline import Hooks, Pipeline

    intake, cat, drop, _tmp = setup
    paths = [
        make_video(drop / f"c{i}.mkv", container="mkv", seconds=1, metadata={"title": str(i)})
        for i in range(4)
    ]
    seen: list[Path] = []

    def finished(path: Path, _result) -> None:
        seen.append(path)
        if path.name in ("c0.mkv", "c2.mkv"):
            raise RuntimeError("bookkeeping failed")

    def ready(path: Path):
        st = path.stat()
        return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)

    hooks = Hooks(
        ready=ready,
        examine=lambda p, ident: intake.examine(p, GATE, datetime.now(UTC), expect=ident[:2]),
        failed=lambda p, ident, exc: None,
        finished=finished,
        locked=lambda fn: fn(),
        now=lambda: datetime.now(UTC),
    )
    done = Pipeline(intake, hooks, paths).run()
    assert sorted(p.name for p in seen) == [f"c{i}.mkv" for i in range(4)]
    assert [r.outcome for r in done] == [Outcome.ADOPTED] * 2  # c1 and c3 were counted
    assert len(cat.recordings.list()) == 4 and list(drop.iterdir()) == []
