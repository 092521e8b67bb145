"""Adopting files whose audio no taggable container holds (G.726, AAC-LATM)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest

from edge_agent.core.model import NOTICE_PERIODS, Purpose, Site
from edge_agent.intake.intake import Intake, IntakeSettings, Origin, Outcome
from edge_agent.media.media_probe import probe
from edge_agent.media.media_remux import audio_plan, can_keep_audio
from edge_agent.store.catalog import Catalog
from tests.support.audioclip import camera_file
from tests.support.mediagen import ffprobe, make_video

LAB = Origin(location="lab", site=Site.PREMISES, audio_room=True, signage=True, purpose=Purpose.RND)
GATE = Origin(
    location="gate", site=Site.PREMISES, audio_room=False, signage=True, purpose=Purpose.SECURITY
)


@pytest.fixture
def intake(tmp_path: Path) -> Iterator[Intake]:
    root = tmp_path / "rec"
    root.mkdir()
    cat = Catalog.open(tmp_path / "catalog.db", device_id="gw-a", storage_root=root)
    yield Intake(
        cat,
        IntakeSettings(
            device_id="gw-a",
            storage_root=root,
            quarantine_dir=tmp_path / "q",
            periods=NOTICE_PERIODS,
        ),
    )
    cat.close()


def test_the_remux_plan_per_codec() -> None:
    assert audio_plan("g726", 8000, 1, "mp4").conversion == "adpcm_g726->pcm_s16le"
    assert audio_plan("aac_latm", 48000, 1, "matroska").conversion == "aac_latm->opus"
    assert audio_plan("aac", 48000, 1, "mp4").conversion is None  # copied
    assert not audio_plan("g726", 8000, 0, "matroska").keeps_audio


@pytest.mark.parametrize(
    ("name", "fmt", "codec", "rate", "opts", "want", "conversion"),
    [
        ("dvr.avi", "avi", "g726", 8000, {}, "pcm_s16le", "adpcm_g726->pcm_s16le"),
        ("dvr.ts", "mpegts", "aac", 48000, {"mpegts_flags": "latm"}, "opus", "aac_latm->opus"),
    ],
)
def test_audio_no_container_holds_is_converted_in_audio_rooms(
    tmp_path: Path,
    intake: Intake,
    name: str,
    fmt: str,
    codec: str,
    rate: int,
    opts: dict[str, str],
    want: str,
    conversion: str,
) -> None:
    src = camera_file(tmp_path / name, fmt, codec, rate, **opts)
    result = intake.adopt(src, LAB, datetime.now(UTC))
    assert result.outcome is Outcome.ADOPTED, result
    rec = result.recording
    assert rec is not None and rec.tags.audio
    path = intake.settings.storage_root / rec.path
    doc = ffprobe(path)
    assert [s["codec_type"] for s in doc["streams"]] == ["video", "audio"]
    assert doc["streams"][1]["codec_name"] == want
    assert abs(float(doc["streams"][1].get("duration") or doc["format"]["duration"]) - 2.0) < 0.2
    tags = {k.lower(): v for k, v in doc["format"]["tags"].items()}
    assert tags["edge_agent.audio_conversion"] == conversion
    # Outside an audio room the same file is adopted without audio, as before.
    other = camera_file(tmp_path / f"gate-{name}", fmt, codec, rate, shade=100, **opts)
    gate = intake.adopt(other, GATE, datetime.now(UTC))
    assert gate.outcome is Outcome.ADOPTED and gate.recording is not None, gate
    gdoc = ffprobe(intake.settings.storage_root / gate.recording.path)
    assert [s["codec_type"] for s in gdoc["streams"]] == ["video"]


def test_audio_that_cannot_be_converted_is_left_out_not_the_file(tmp_path: Path) -> None:
    # G.726 without its channel count (a DVR that wrote an incomplete header):
    # the intake is told beforehand, so it adopts the video without audio.
    src = camera_file(tmp_path / "dvr.avi", "avi", "g726", 8000)
    info = probe(src)
    assert can_keep_audio(info)
    (audio,) = info.audio_streams
    blind = replace(info, streams=(*info.video_streams, replace(audio, channels=0)))
    assert not can_keep_audio(blind)


def test_g711_still_goes_to_quicktime_as_is(tmp_path: Path, intake: Intake) -> None:
    src = make_video(tmp_path / "g711.mov", container="mov", seconds=1, size=(64, 48),
                     audio="alaw")  # fmt: skip
    result = intake.adopt(src, LAB, datetime.now(UTC))
    assert result.outcome is Outcome.ADOPTED and result.recording is not None
    doc = ffprobe(intake.settings.storage_root / result.recording.path)
    assert doc["streams"][1]["codec_name"] == "pcm_alaw"
