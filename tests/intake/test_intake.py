"""Adoption through Intake: real media in, checked with the ffprobe CLI."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from edge_agent.core.model import NOTICE_PERIODS, Purpose, RecState, Site, TimeSource
from edge_agent.intake.intake import Intake, IntakeSettings, Origin, Outcome
from edge_agent.media import media
from edge_agent.media.media_worker import MediaWorker
from edge_agent.store.audit import AuditLog
from edge_agent.store.catalog import Catalog
from edge_agent.store.outbox_store import Outbox
from tests.support.mediagen import (
    ffprobe,
    make_audio_only,
    make_many_streams,
    make_video,
    truncate,
    write_garbage,
)
from tests.support.tmpfs import mounted_tmpfs

NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
CREATED = datetime(2026, 11, 28, 9, 30, tzinfo=UTC)

GATE = Origin(
    location="gate", site=Site.PREMISES, audio_room=False, signage=True, purpose=Purpose.SECURITY
)
LAB = Origin(
    location="lab-audio-1", site=Site.PREMISES, audio_room=True, signage=True, purpose=Purpose.RND
)


def streams_of(doc: dict[str, object], kind: str) -> list[dict[str, object]]:
    streams = doc["streams"]
    assert isinstance(streams, list)
    return [s for s in streams if s["codec_type"] == kind]


@pytest.fixture()
def env(tmp_path: Path):
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
    )
    yield Intake(cat, settings), cat, drop, root, tmp_path / "quarantine"
    cat.close()


@pytest.mark.parametrize(
    ("container", "audio"),
    [
        ("mp4", "aac"),
        ("mkv", "aac"),
        ("ts", "aac"),
        ("mkv", "opus"),
        ("mp4", None),
        ("fmp4", "aac"),
    ],
)
def test_non_audio_room_strips_audio_keeps_video(env, container, audio) -> None:
    intake, cat, drop, root, _ = env
    src = make_video(
        drop / f"clip.{'mp4' if container == 'fmp4' else container}",
        container=container,
        seconds=3,
        audio=audio,
        creation_time=CREATED,
    )
    before = ffprobe(src)
    video_packets = int(streams_of(before, "video")[0]["nb_read_packets"])

    result = intake.adopt(src, GATE, NOW)

    assert result.outcome is Outcome.ADOPTED, result.reason
    rec = result.recording
    assert rec is not None
    out = root / rec.path
    after = ffprobe(out)
    assert streams_of(after, "audio") == []
    assert int(streams_of(after, "video")[0]["nb_read_packets"]) == video_packets
    fmt_tags = {k.lower(): v for k, v in after["format"]["tags"].items()}
    assert fmt_tags["edge_agent.location"] == "gate"
    assert fmt_tags["edge_agent.purpose"] == "security"
    assert fmt_tags["edge_agent.audio"] == "false"
    assert fmt_tags["edge_agent.id"] == rec.id
    assert result.audio_removed == (audio is not None)
    assert rec.tags.audio is False
    assert not src.exists(), "the original is consumed"
    assert oct(out.stat().st_mode & 0o777) == oct(0o640)
    assert cat.recordings.get(rec.id) == rec


@pytest.mark.parametrize(("container", "audio"), [("mp4", "aac"), ("mkv", "opus")])
def test_audio_room_keeps_audio(env, container, audio) -> None:
    intake, _cat, drop, root, _ = env
    src = make_video(drop / f"lab.{container}", container=container, seconds=2, audio=audio)
    result = intake.adopt(src, LAB, NOW)
    assert result.outcome is Outcome.ADOPTED, result.reason
    assert result.recording is not None
    after = ffprobe(root / result.recording.path)
    assert len(streams_of(after, "audio")) == 1
    assert result.recording.tags.audio is True
    assert not result.audio_removed


def test_catalog_row_audit_and_events(env) -> None:
    intake, cat, drop, root, _ = env
    src = make_video(drop / "a.mp4", container="mp4", seconds=2, audio="aac", creation_time=CREATED)
    result = intake.adopt(src, GATE, NOW)
    rec = result.recording
    assert rec is not None
    assert rec.tags.time_source is TimeSource.CREATION_TIME
    assert abs((rec.tags.start - CREATED).total_seconds()) < 1
    assert rec.deadline == rec.tags.start + timedelta(days=3)
    assert rec.state is RecState.ACTIVE
    types = [e.type for e in Outbox(cat).peek(10)]
    assert types == ["recording.added", "recording.audio_removed"]
    actions = [e["action"] for e in AuditLog(cat).export()]
    assert actions == ["recording.added"]
    assert AuditLog(cat).verify().ok
    # Tags inside the file are enough to rebuild the row.
    tags = media.decode_tags(media.probe(root / rec.path).tags)
    assert tags is not None
    assert tags.location == "gate" and tags.purpose is Purpose.SECURITY
    assert tags.time_source is TimeSource.CREATION_TIME


def test_recorder_name_wins_over_creation_time(env) -> None:
    intake, _cat, drop, _root, _ = env
    src = make_video(
        drop / "cam-gate_20261127-080000.mp4", container="mp4", seconds=1, creation_time=CREATED
    )
    rec = intake.adopt(src, GATE, NOW).recording
    assert rec is not None
    assert rec.tags.time_source is TimeSource.RECORDER
    assert rec.tags.start == datetime(2026, 11, 27, 8, 0, tzinfo=UTC)


def test_camera_clock_in_1970_falls_back_to_mtime(env) -> None:
    intake, _cat, drop, _root, _ = env
    src = make_video(
        drop / "x.mp4", container="mp4", seconds=1, creation_time=datetime(1970, 1, 1, tzinfo=UTC)
    )
    mtime = datetime(2026, 11, 29, 11, 0, tzinfo=UTC).timestamp()
    os.utime(src, (mtime, mtime))
    rec = intake.adopt(src, GATE, NOW).recording
    assert rec is not None
    assert rec.tags.time_source is TimeSource.MTIME
    assert rec.tags.start == datetime(2026, 11, 29, 11, 0, tzinfo=UTC)


def test_duplicate_content_is_not_adopted_twice(env) -> None:
    intake, cat, drop, _root, _ = env
    src = make_video(drop / "d.mkv", container="mkv", seconds=1)
    copy = drop / "d-copy.mkv"
    copy.write_bytes(src.read_bytes())
    first = intake.adopt(src, GATE, NOW)
    second = intake.adopt(copy, GATE, NOW)
    assert first.outcome is Outcome.ADOPTED
    assert second.outcome is Outcome.DUPLICATE
    assert second.recording is not None and first.recording is not None
    assert second.recording.id == first.recording.id
    assert len(cat.recordings.list()) == 1


def _bad_inputs(drop: Path) -> dict[str, Path]:
    (drop / "empty.mp4").write_bytes(b"")
    (drop / "notes.mp4").write_text("this is not a video\n")
    good = make_video(drop / "long.mp4", container="mp4", seconds=3)
    truncated = drop / "truncated.mp4"
    truncated.write_bytes(good.read_bytes())
    good.unlink()
    truncate(truncated, 0.5)
    return {
        "empty": drop / "empty.mp4",
        "not_media": drop / "notes.mp4",
        "garbage": write_garbage(drop / "random.mkv", 32 * 1024, seed=3),
        "truncated": truncated,
        "no_video": make_audio_only(drop / "voice.m4a"),
        "too_many_streams": make_many_streams(drop / "many.mkv", 20),
        "absurd": make_video(
            drop / "absurd.mkv", container="mkv", seconds=1, metadata={"comment": "x" * 100_000}
        ),
        "weird name": make_video(drop / "sp ace\nnewline é.mkv", container="mkv", seconds=1),
    }


def test_bad_input_is_quarantined_and_good_file_in_batch_adopted(env) -> None:
    intake, cat, drop, _root, quarantine = env
    bad = _bad_inputs(drop)
    good = make_video(drop / "good.mp4", container="mp4", seconds=1, audio="aac")
    outcomes = {}
    for name, path in bad.items():
        outcomes[name] = intake.adopt(path, GATE, NOW)
    good_result = intake.adopt(good, GATE, NOW)

    assert good_result.outcome is Outcome.ADOPTED
    assert outcomes.pop("weird name").outcome is Outcome.ADOPTED
    for name, result in outcomes.items():
        assert result.outcome is Outcome.QUARANTINED, (name, result)
        assert result.reason
        assert not Path(result.source).exists()
    reasons = sorted(quarantine.glob("*.reason.json"))
    assert len(reasons) == len(outcomes)
    for reason_file in reasons:
        doc = json.loads(reason_file.read_text())
        assert doc["reason"] and doc["source"]
        assert reason_file.with_name(reason_file.name.removesuffix(".reason.json")).exists()
    assert outcomes["empty"].reason.startswith("empty")
    assert outcomes["no_video"].reason.startswith("no_video")
    assert outcomes["too_many_streams"].reason.startswith("too_many_streams")
    actions = [e["action"] for e in AuditLog(cat).export()]
    assert actions.count("recording.quarantined") == len(outcomes)
    assert len(cat.recordings.list()) == 2


def test_symlink_and_dotdot_are_refused_in_place(env, tmp_path: Path) -> None:
    intake, cat, drop, _root, quarantine = env
    outside = make_video(tmp_path / "outside.mp4", container="mp4", seconds=1)
    link = drop / "link.mp4"
    link.symlink_to(outside)
    res = intake.adopt(link, GATE, NOW, within=drop)
    assert res.outcome is Outcome.REFUSED and res.reason.startswith("symlink")
    assert link.is_symlink() and outside.exists()
    res2 = intake.adopt(drop / ".." / "outside.mp4", GATE, NOW, within=drop)
    assert res2.outcome is Outcome.REFUSED and res2.reason.startswith("path_escape")
    assert outside.exists()
    assert cat.recordings.list() == []
    assert not quarantine.exists() or not any(quarantine.iterdir())
    assert AuditLog(cat).verify().ok


def test_full_disk_leaves_the_original(env, monkeypatch) -> None:
    intake, cat, drop, root, _ = env
    src = make_video(drop / "f.mp4", container="mp4", seconds=1)

    def full(*_a: object, **_k: object) -> None:
        raise media.MediaError("write_failed", "No space left on device")

    monkeypatch.setattr(media, "remux", full)
    from edge_agent.intake.intake import IntakeIOError

    with pytest.raises(IntakeIOError):
        intake.adopt(src, GATE, NOW)
    assert src.exists()
    assert cat.recordings.list() == []
    assert not [p for p in root.rglob("*") if p.is_file() and p.name != ".edge-agent-storage"]


def test_fifo_and_directory_are_refused_without_blocking(env) -> None:
    intake, cat, drop, _root, _ = env
    fifo = drop / "pipe.mp4"
    os.mkfifo(fifo)
    folder = drop / "folder.mp4"
    folder.mkdir()
    # Opening a FIFO for reading would block forever: it must be refused from lstat alone.
    for path in (fifo, folder):
        res = intake.adopt(path, GATE, NOW)
        assert res.outcome is Outcome.REFUSED
        assert res.reason is not None and res.reason.startswith("not_regular")
        assert path.exists()
    assert cat.recordings.list() == []


@pytest.fixture()
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    """A real 1 MiB filesystem for the storage root."""
    with mounted_tmpfs(tmp_path / "tiny", "1m") as mnt:
        yield mnt


@pytest.mark.parametrize("in_child", [False, True], ids=["in_process", "media_child"])
def test_real_full_disk_keeps_the_original_and_leaves_nothing_half_written(
    tmp_path: Path, tiny_disk: Path, in_child: bool
) -> None:
    # In the daemon the remux runs in the media child: its ENOSPC must come back as
    # the same storage failure (retried, never quarantined), not as a bad file.
    root = tiny_disk / "recordings"
    root.mkdir()
    drop = tmp_path / "drop"
    drop.mkdir()
    cat = Catalog.open(tmp_path / "catalog.db", device_id="gw-test-01", storage_root=root)
    intake = Intake(
        cat,
        IntakeSettings(
            device_id="gw-test-01",
            storage_root=root,
            quarantine_dir=tmp_path / "quarantine",
            periods=NOTICE_PERIODS,
        ),
    )
    if in_child:
        intake.media_worker = MediaWorker()
    big = make_video(
        drop / "big.mkv", container="mkv", seconds=8, size=(640, 480), bit_rate=4_000_000
    )
    assert big.stat().st_size > 2 * 1024 * 1024
    digest = media.sha256_file(big)
    from edge_agent.intake.intake import IntakeIOError

    with pytest.raises(IntakeIOError):
        intake.adopt(big, GATE, NOW)
    assert big.exists() and media.sha256_file(big) == digest, "the original is untouched"
    assert not [p for p in root.rglob("*") if p.is_file() and p.name.startswith(".partial-")]
    assert cat.recordings.list() == []
    assert not (tmp_path / "quarantine").exists(), "a good file is not quarantined"
    # Space came back with the partial file: a small clip still fits.
    small = make_video(drop / "small.mkv", container="mkv", seconds=1)
    assert intake.adopt(small, GATE, NOW).outcome is Outcome.ADOPTED
    assert AuditLog(cat).verify().ok
    if intake.media_worker is not None:
        assert intake.media_worker.failures == 0, "a full disk is not a dead worker"
        intake.media_worker.close()
    cat.close()


def test_index_that_promises_more_than_the_packets_hold(env, tmp_path: Path, caplog) -> None:
    # A faststart MP4 (index first) cut off mid-data: its index tells 6 s, its
    # packets hold about 3. The tags written from the index are rewritten from
    # what the remux read; the copy holds exactly the packets that are there.
    intake, _cat, drop, root, _ = env
    whole = make_video(tmp_path / "whole.mp4", seconds=6, audio="aac", creation_time=CREATED)
    src = drop / "cut.mp4"
    subprocess.run(
        [
            "ffmpeg",
            "-v",
            "error",
            "-i",
            str(whole),
            "-c",
            "copy",
            "-movflags",
            "faststart",
            str(src),
        ],
        check=True,
    )
    truncate(src, 0.6)
    read = media.scan_packets(src)
    with caplog.at_level("INFO", logger="edge_agent.intake.intake"):
        res = intake.adopt(src, GATE, NOW)
    assert res.outcome is Outcome.ADOPTED and "truncated" in res.notes
    rec = res.recording
    assert rec is not None
    assert rec.tags.end == rec.tags.start + timedelta(seconds=read.seconds)
    out = root / rec.path
    tags = media.decode_tags(media.probe(out).tags)
    assert tags is not None and tags.end == rec.tags.end
    assert media.count_packets(out) == read.video_packets
    assert any("differ from the index" in r.getMessage() for r in caplog.records)
    assert not list(out.parent.glob(".partial-*"))


def test_index_agreeing_with_the_packets_reads_the_source_once(env, monkeypatch) -> None:
    intake, _cat, drop, _root, _ = env
    src = make_video(drop / "cam.mp4", seconds=2, audio="aac", creation_time=CREATED)
    scans: list[object] = []
    real = media.scan_packets
    read = real(src)  # audio included: the copy loses it, the length does not
    monkeypatch.setattr(media, "scan_packets", lambda p: scans.append(p) or real(p))
    res = intake.adopt(src, GATE, NOW)
    assert res.outcome is Outcome.ADOPTED and res.notes == ()
    assert scans == []  # neither a scan pass of its own nor a second remux
    rec = res.recording
    assert rec is not None
    assert rec.tags.end - rec.tags.start == timedelta(seconds=read.seconds)
