"""The media layer on real files: generated with PyAV, checked with the ffprobe CLI."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from edge_agent.core.model import Purpose, Site, Tags, TimeSource
from edge_agent.host.fsutil import atomic_write_bytes, fsync_dir, fsync_file
from edge_agent.media import media
from edge_agent.media.media import MediaError, Reason
from tests.support.mediagen import (
    ffprobe,
    make_audio_only,
    make_many_streams,
    make_video,
    truncate,
    write_garbage,
)

CREATED = datetime(2024, 5, 1, 10, 0, 0, tzinfo=UTC)
SECONDS = 2.0
FPS = 25

TAGS = Tags(
    location="gate",
    purpose=Purpose.SECURITY,
    site=Site.PREMISES,
    audio=False,
    anonymized=False,
    start=CREATED,
    end=datetime(2024, 5, 1, 10, 0, 2, tzinfo=UTC),
    time_source=TimeSource.CREATION_TIME,
    device="gw-test-01",
)

# (container, audio codec, file suffix)
CASES = [
    ("mp4", "aac", ".mp4"),
    ("mp4", None, ".mp4"),
    ("mkv", "aac", ".mkv"),
    ("mkv", None, ".mkv"),
    ("mkv", "opus", ".mkv"),
    ("ts", "aac", ".ts"),
    ("fmp4", "aac", ".mp4"),
]


def ff_packets(info: dict[str, Any], codec_type: str) -> int:
    return sum(int(s["nb_read_packets"]) for s in info["streams"] if s["codec_type"] == codec_type)


def ff_types(info: dict[str, Any]) -> list[str]:
    return [str(s["codec_type"]) for s in info["streams"]]


@pytest.fixture(scope="module")
def sources(tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[str, str | None], Path]:
    root = tmp_path_factory.mktemp("src")
    made = {}
    for container, audio, suffix in CASES:
        path = root / f"{container}-{audio}{suffix}"
        make_video(path, container=container, seconds=SECONDS, audio=audio, creation_time=CREATED)  # type: ignore[arg-type]
        made[(container, audio)] = path
    return made


# --- probe -----------------------------------------------------------------


def test_probe_mp4_with_audio(sources: dict[tuple[str, str | None], Path]) -> None:
    p = media.probe(sources[("mp4", "aac")])
    assert p.family == "mp4"
    assert p.has_video and p.has_audio
    assert [s.codec for s in p.streams] == ["h264", "aac"]
    assert p.video_streams[0].width == 320 and p.video_streams[0].height == 240
    assert p.audio_streams[0].sample_rate == 48000
    assert p.duration == pytest.approx(SECONDS, abs=0.1)
    assert p.creation_time == CREATED
    assert p.size == sources[("mp4", "aac")].stat().st_size
    assert p.bit_rate and p.bit_rate > 0


def test_probe_matroska_reads_upper_cased_tags_lower_cased(tmp_path: Path) -> None:
    path = make_video(tmp_path / "t.mkv", container="mkv", seconds=0.5, metadata={"Site_Ref": "x"})
    assert "SITE_REF" in ffprobe(path)["format"]["tags"]  # what Matroska really stores
    p = media.probe(path)
    assert p.tags["site_ref"] == "x"
    assert p.creation_time is None


def test_probe_mpegts_has_no_tags(sources: dict[tuple[str, str | None], Path]) -> None:
    p = media.probe(sources[("ts", "aac")])
    assert p.family == "mpegts" and p.has_audio
    assert p.creation_time is None


def test_count_packets_matches_ffprobe(sources: dict[tuple[str, str | None], Path]) -> None:
    for path in sources.values():
        ff = ffprobe(path)
        assert media.count_packets(path, "video") == ff_packets(ff, "video") == SECONDS * FPS
        assert media.count_packets(path, "audio") == ff_packets(ff, "audio")


# --- bad input -------------------------------------------------------------


def _reason(path: Path, **kw: Any) -> str:
    with pytest.raises(MediaError) as info:
        media.probe(path, **kw)
    assert str(path) in str(info.value)
    return info.value.reason


def test_bad_inputs_have_reasons(tmp_path: Path) -> None:
    (tmp_path / "empty.mp4").write_bytes(b"")
    assert _reason(tmp_path / "empty.mp4") == Reason.EMPTY
    assert _reason(write_garbage(tmp_path / "random.mp4", 256 * 1024, seed=7)) == Reason.NOT_MEDIA
    (tmp_path / "notes.mp4").write_text("meeting notes, not a video\n" * 200)
    assert _reason(tmp_path / "notes.mp4") == Reason.NOT_MEDIA
    assert _reason(tmp_path / "missing.mp4") == Reason.NOT_FOUND
    assert _reason(tmp_path) == Reason.UNREADABLE  # a directory
    assert _reason(make_audio_only(tmp_path / "voice.m4a")) == Reason.NO_VIDEO


def test_truncated_plain_mp4_is_truncated(tmp_path: Path) -> None:
    path = make_video(tmp_path / "cut.mp4", container="mp4", seconds=SECONDS, audio="aac")
    truncate(path, 0.5)
    assert _reason(path) == Reason.TRUNCATED
    with pytest.raises(MediaError) as info:
        media.count_packets(path)
    assert info.value.reason == Reason.TRUNCATED


def test_too_many_streams(tmp_path: Path) -> None:
    path = make_many_streams(tmp_path / "many.mkv", 20)
    assert len(ffprobe(path)["streams"]) == 20
    assert _reason(path) == Reason.TOO_MANY_STREAMS
    assert media.probe(path, max_streams=32).has_audio


@pytest.mark.parametrize("container", ["mkv", "mp4"])
def test_absurd_metadata(tmp_path: Path, container: str) -> None:
    big = make_video(
        tmp_path / f"big.{container}",
        container=container,  # type: ignore[arg-type]
        seconds=0.2,
        metadata={"comment": "x" * 100 * 1024},
    )
    assert _reason(big) == Reason.ABSURD_METADATA
    many = make_video(
        tmp_path / f"many.{container}",
        container=container,  # type: ignore[arg-type]
        seconds=0.2,
        metadata={f"k{i}": "v" for i in range(300)},
    )
    assert _reason(many) == Reason.ABSURD_METADATA


def test_truncated_matroska_stays_readable(tmp_path: Path) -> None:
    """Matroska cut mid-write keeps its header: probe works (the duration is the
    one written at the start, i.e. stale) and the packets before the cut remux."""
    path = make_video(tmp_path / "cut.mkv", container="mkv", seconds=SECONDS, audio="aac")
    truncate(path, 0.5)
    p = media.probe(path)
    kept = media.count_packets(path)
    assert 0 < kept < SECONDS * FPS
    assert kept == ff_packets(ffprobe(path), "video")
    out = tmp_path / "out.mkv"
    result = media.remux(path, out, tags={"edge_agent.x": "1"}, drop_audio=True)
    assert result.video_packets == kept
    media.verify(p, kept, out, expect_audio=False, tags={"edge_agent.x": "1"})


def test_truncated_fragmented_mp4_stays_readable(tmp_path: Path) -> None:
    path = make_video(tmp_path / "cut.mp4", container="fmp4", seconds=4, audio=None)
    truncate(path, 0.8)
    assert 0 < media.count_packets(path) < 4 * FPS


# --- tags ------------------------------------------------------------------


def test_tags_round_trip() -> None:
    encoded = media.encode_tags(TAGS, recording_id="rec-42", source_sha256="ab" * 32)
    assert all(k.startswith(media.TAG_PREFIX) for k in encoded)
    assert encoded["edge_agent.start"] == "2024-05-01T10:00:00Z"
    upper = {k.upper(): v for k, v in encoded.items()}  # as Matroska returns them
    assert media.decode_tags(upper) == TAGS
    assert media.decode_recording_id(upper) == "rec-42"
    assert media.decode_source_sha256(upper) == "ab" * 32
    assert media.decode_tags({"title": "holiday", "creation_time": "2024"}) is None
    assert media.decode_recording_id({}) is None


def test_decode_tags_refuses_partial_or_malformed() -> None:
    encoded = media.encode_tags(TAGS)
    partial = {k: v for k, v in encoded.items() if not k.endswith(".purpose")}
    with pytest.raises(MediaError) as info:
        media.decode_tags(partial)
    assert info.value.reason == Reason.BAD_TAGS and "edge_agent.purpose" in info.value.message
    with pytest.raises(MediaError) as info:
        media.decode_tags({**encoded, "edge_agent.purpose": "surveillance"})
    assert info.value.reason == Reason.BAD_TAGS and "surveillance" in info.value.message
    with pytest.raises(MediaError):
        media.decode_tags({**encoded, "edge_agent.audio": "maybe"})


# --- remux -----------------------------------------------------------------


@pytest.mark.parametrize(("container", "audio", "suffix"), CASES)
@pytest.mark.parametrize("drop_audio", [True, False])
def test_remux(
    sources: dict[tuple[str, str | None], Path],
    tmp_path: Path,
    container: str,
    audio: str | None,
    suffix: str,
    drop_audio: bool,
) -> None:
    src = sources[(container, audio)]
    src_ff = ffprobe(src)
    src_probe = media.probe(src)
    src_video = media.count_packets(src)
    tags = media.encode_tags(TAGS, recording_id="rec-1")
    dst = tmp_path / "out.tmp"

    result = media.remux(src, dst, tags=tags, drop_audio=drop_audio)

    keep_audio = audio is not None and not drop_audio
    media.verify(src_probe, src_video, dst, expect_audio=keep_audio, tags=tags)
    ff = ffprobe(dst)
    assert ff_packets(ff, "video") == ff_packets(src_ff, "video") == result.video_packets
    if keep_audio:
        assert ff_types(ff) == ["video", "audio"]
        assert ff_packets(ff, "audio") == ff_packets(src_ff, "audio") == result.audio_packets
    else:
        assert ff_types(ff) == ["video"]
    assert result.audio_removed == (audio is not None and drop_audio)
    # MPEG-TS cannot carry tags, so it becomes Matroska; others keep their family.
    assert result.container_changed == (container == "ts")
    assert result.suffix == (".mkv" if container == "ts" else suffix)
    assert ff["format"]["format_name"] == (
        "matroska,webm" if result.suffix == ".mkv" else "mov,mp4,m4a,3gp,3g2,mj2"
    )
    ff_tags = {k.lower(): v for k, v in ff["format"].get("tags", {}).items()}
    for key, value in tags.items():
        assert ff_tags[key] == value
    got = media.probe(dst)
    assert media.decode_tags(got.tags) == TAGS
    assert media.decode_recording_id(got.tags) == "rec-1"
    if container != "ts":
        assert got.creation_time == CREATED
    assert got.duration == pytest.approx(src_probe.duration, abs=0.1)
    assert result.size == dst.stat().st_size


@pytest.mark.parametrize("container", ["mp4", "ts"])
def test_remux_keeps_reordered_timestamps(tmp_path: Path, container: str) -> None:
    """With B-frames pts != dts; a stream copy must carry both over unchanged."""
    src = make_video(
        tmp_path / f"bf.{container}",
        container=container,  # type: ignore[arg-type]
        seconds=SECONDS,
        audio="aac",
        bframes=2,
    )
    dst = tmp_path / "out.tmp"
    media.remux(src, dst, tags={"edge_agent.x": "1"}, drop_audio=True)

    def times(path: Path) -> list[tuple[float, float | None]]:
        cmd = ["ffprobe", "-v", "error", "-select_streams", "v", "-show_entries"]
        cmd += ["packet=pts_time,dts_time", "-of", "json", str(path)]
        out = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)
        return [
            (float(p["pts_time"]), float(p["dts_time"]) if "dts_time" in p else None)
            for p in out["packets"]
        ]

    before, after = times(src), times(dst)
    assert len(after) == len(before) == SECONDS * FPS
    assert any(p != d for p, d in before)  # really reordered
    # Matroska stores pts only; its demuxer cannot give a dts for the first
    # reordered frames, so dts is compared where the container reports one.
    for (p0, d0), (p1, d1) in zip(before, after, strict=True):
        assert p1 == pytest.approx(p0, abs=0.002)
        if d1 is not None:
            assert d1 == pytest.approx(d0, abs=0.002)


def test_remux_replaces_old_agent_tags_and_keeps_others(tmp_path: Path) -> None:
    src = make_video(
        tmp_path / "in.mp4",
        seconds=0.5,
        creation_time=CREATED,
        metadata={"edge_agent.location": "old", "edge_agent.stale": "1", "title": "cam 3"},
    )
    dst = tmp_path / "out.mp4"
    media.remux(src, dst, tags=media.encode_tags(TAGS), drop_audio=True)
    tags = ffprobe(dst)["format"]["tags"]
    assert tags["edge_agent.location"] == "gate"
    assert "edge_agent.stale" not in tags
    assert tags["title"] == "cam 3"


def test_remux_to_forced_container(
    sources: dict[tuple[str, str | None], Path], tmp_path: Path
) -> None:
    src = sources[("mp4", "aac")]
    dst = tmp_path / "out.bin"
    result = media.remux(src, dst, tags={"edge_agent.x": "1"}, drop_audio=False, container="mkv")
    assert result.muxer == "matroska" and result.container_changed
    assert ffprobe(dst)["format"]["tags"]["EDGE_AGENT.X"] == "1"
    with pytest.raises(MediaError) as info:
        media.remux(src, tmp_path / "x.ts", tags={}, drop_audio=False, container="mpegts")
    assert info.value.reason == Reason.UNSUPPORTED


def test_remux_g711_falls_back_to_quicktime(tmp_path: Path) -> None:
    """MP4 and Matroska muxers refuse G.711; QuickTime takes it, tags included."""
    src = make_video(tmp_path / "cam.mov", container="mov", seconds=1, audio="alaw")
    dst = tmp_path / "out.tmp"
    result = media.remux(src, dst, tags={"edge_agent.x": "1"}, drop_audio=False)
    assert (result.muxer, result.suffix, result.audio_packets > 0) == ("mov", ".mov", True)
    ff = ffprobe(dst)
    assert [s["codec_name"] for s in ff["streams"]] == ["h264", "pcm_alaw"]
    assert ff["format"]["tags"]["edge_agent.x"] == "1"
    stripped = media.remux(src, dst, tags={"edge_agent.x": "1"}, drop_audio=True)
    assert (stripped.muxer, stripped.dropped_streams) == ("mp4", ("1:audio:pcm_alaw",))
    # Forced into MP4, G.711 no longer makes the remux fail: it is decoded to PCM.
    forced = media.remux(src, tmp_path / "f.mp4", tags={}, drop_audio=False, container="mp4")
    assert forced.audio_conversion == ("pcm_alaw->pcm_s16le",) and forced.audio_packets > 0
    assert [s["codec_name"] for s in ffprobe(tmp_path / "f.mp4")["streams"]] == [
        "h264",
        "pcm_s16le",
    ]


def test_output_container_for(sources: dict[tuple[str, str | None], Path], tmp_path: Path) -> None:
    def pick(path: Path, drop_audio: bool = False) -> str:
        return media.output_container_for(media.probe(path), drop_audio=drop_audio)

    assert pick(sources[("mp4", "aac")]) == "mp4"
    assert pick(sources[("fmp4", "aac")]) == "mp4"
    assert pick(sources[("mkv", "opus")]) == "mkv"
    assert pick(sources[("ts", "aac")]) == "mkv"
    g711 = make_video(tmp_path / "cam.mov", container="mov", seconds=0.5, audio="alaw")
    assert pick(g711) == "mov"
    assert pick(g711, drop_audio=True) == "mp4"
    # What it names is what remux() writes when asked for it.
    for src, drop in [(g711, False), (sources[("ts", "aac")], False)]:
        name = pick(src, drop)
        result = media.remux(src, tmp_path / f"o.{name}", tags={}, drop_audio=drop, container=name)
        assert result.suffix == f".{name}"


def test_remux_disk_full_is_write_failed(
    sources: dict[tuple[str, str | None], Path], tmp_path: Path
) -> None:
    """ENOSPC is the destination's problem, not the input's: a distinct reason."""
    full = tmp_path / "full.mkv"
    full.symlink_to("/dev/full")
    with pytest.raises(MediaError) as info:
        media.remux(sources[("mkv", "aac")], full, tags={}, drop_audio=True)
    assert info.value.reason == Reason.WRITE_FAILED
    assert "No space left" in info.value.message
    assert not full.is_symlink() and Path("/dev/full").exists()


def test_remux_refuses_to_overwrite_its_source(tmp_path: Path) -> None:
    src = make_video(tmp_path / "a.mkv", container="mkv", seconds=0.2)
    before = src.read_bytes()
    with pytest.raises(MediaError):
        media.remux(src, src, tags={}, drop_audio=True)
    assert src.read_bytes() == before


def test_remux_bad_input_raises_and_writes_nothing(tmp_path: Path) -> None:
    src = write_garbage(tmp_path / "junk.mkv", 4096, seed=1)
    dst = tmp_path / "out.mkv"
    with pytest.raises(MediaError) as info:
        media.remux(src, dst, tags={}, drop_audio=True)
    assert info.value.reason == Reason.NOT_MEDIA
    assert not dst.exists()


# --- verify ----------------------------------------------------------------


def test_verify_names_each_problem(
    sources: dict[tuple[str, str | None], Path], tmp_path: Path
) -> None:
    src = sources[("mkv", "aac")]
    p = media.probe(src)
    n = media.count_packets(src)
    dst = tmp_path / "out.mkv"
    media.remux(src, dst, tags={"edge_agent.a": "1"}, drop_audio=False)

    def problem(**kw: Any) -> str:
        args: dict[str, Any] = {"expect_audio": True, "tags": {"edge_agent.a": "1"}} | kw
        packets = args.pop("packets", n)
        with pytest.raises(MediaError) as info:
            media.verify(p, packets, dst, **args)
        assert info.value.reason == Reason.VERIFY_FAILED
        return info.value.message

    media.verify(p, n, dst, expect_audio=True, tags={"edge_agent.a": "1"})
    assert "video packets" in problem(packets=n + 1)
    assert "audio stream present" in problem(expect_audio=False)
    assert "edge_agent.b" in problem(tags={"edge_agent.b": "2"})
    nothing = tmp_path / "nothing.mkv"
    nothing.write_bytes(b"")
    with pytest.raises(MediaError) as info:
        media.verify(p, n, nothing, expect_audio=False, tags={})
    assert info.value.reason == Reason.VERIFY_FAILED and "empty" in info.value.message

    silent = tmp_path / "silent.mkv"
    media.remux(src, silent, tags={}, drop_audio=True)
    with pytest.raises(MediaError, match="audio stream missing"):
        media.verify(p, n, silent, expect_audio=True, tags={})


# --- files -----------------------------------------------------------------


def test_sha256_and_fsync_helpers(
    sources: dict[tuple[str, str | None], Path], tmp_path: Path
) -> None:
    src = sources[("mp4", "aac")]
    assert media.sha256_file(src) == hashlib.sha256(src.read_bytes()).hexdigest()
    copy = tmp_path / "copy.mp4"
    shutil.copy(src, copy)
    fsync_file(copy)
    fsync_dir(tmp_path)
    target = tmp_path / "state.json"
    atomic_write_bytes(target, b"one")
    atomic_write_bytes(target, b"two")
    assert target.read_bytes() == b"two"
    assert oct(target.stat().st_mode & 0o777) == oct(0o640)
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []
