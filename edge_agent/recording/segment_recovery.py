"""Segments a recorder left behind under the ``.partial-`` prefix (a crash, a SIGKILL).

Matroska stays readable up to its last closed cluster, so such a segment is
kept: its tags (with the recording id) were written when it was opened, and
its real end is measured from the packets that survived.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path

import av
import av.error

from edge_agent.core.model import Recording
from edge_agent.intake.intake import PARTIAL_PREFIX, Intake, Origin
from edge_agent.media import media
from edge_agent.media.sources import packet_seconds

log = logging.getLogger(__name__)

SOURCE_ID_TAG = media.TAG_PREFIX + "source_id"
CONTAINER = "mkv"


def _measured_seconds(path: Path) -> tuple[float, int]:
    """Stream time covered by the readable packets of ``path`` and their video count."""
    first: float | None = None
    last = 0.0
    videos = 0
    with av.open(str(path)) as inp:
        streams = [s for s in inp.streams if s.type in ("video", "audio")]
        try:
            for packet in inp.demux(streams):
                sec = packet_seconds(packet)
                if sec is None:
                    continue
                if packet.stream.type == "video":
                    videos += 1
                first = sec if first is None else min(first, sec)
                dur = float((packet.duration or 0) * packet.time_base)
                last = max(last, sec + dur)
        except (av.error.FFmpegError, OSError):
            pass  # cut off mid-cluster: what came before counts
    return (0.0 if first is None else max(0.0, last - first)), videos


def adopt_partial(path: Path, intake: Intake, now: datetime) -> Recording | None:
    """Register one ``.partial-`` segment the recorder left behind; None if not ours.

    Readable segments are always kept: their tags (with the id) were written
    at open, the real end comes from the packets found. An unreadable one is
    quarantined with the reason. A partial the intake itself left (it carries
    a ``source_sha256`` tag) is not the recorder's and is left to reconcile.
    """
    try:
        info = media.probe(path)
        seconds, videos = _measured_seconds(path)
    except (media.MediaError, av.error.FFmpegError, OSError) as exc:
        intake.quarantine(path, f"unreadable recorder segment: {exc}", now)
        return None
    if SOURCE_ID_TAG not in info.tags or media.decode_source_sha256(info.tags):
        return None
    try:
        tags = media.decode_tags(info.tags)
    except media.MediaError as exc:
        intake.quarantine(path, f"bad_tags: {exc}", now)
        return None
    rec_id = media.decode_recording_id(info.tags)
    if tags is None or rec_id is None:
        intake.quarantine(path, "bad_tags: recorder segment without tags", now)
        return None
    if videos == 0:
        intake.quarantine(path, "empty: recorder segment without a video packet", now)
        return None
    if intake.catalog.recordings.get(rec_id) is not None:
        log.warning("%s: recording %s is already catalogued; left for reconcile", path, rec_id)
        return None
    tags = replace(tags, end=tags.start + timedelta(seconds=seconds))
    if not info.has_audio and tags.audio:
        tags = replace(tags, audio=False)
    origin = Origin(
        location=tags.location,
        site=tags.site,
        audio_room=tags.audio,
        signage=True,
        purpose=tags.purpose,
        anonymized=tags.anonymized,
        source_id=info.tags[SOURCE_ID_TAG],
    )
    rec = intake.register_segment(path, tags, rec_id, origin, now)
    log.info("adopted segment %s left by a crash (%.1fs)", path.name, seconds)
    return rec


def find_partials(root: Path) -> Iterator[Path]:
    for dirpath, _dirs, files in os.walk(root):
        for name in sorted(files):
            if name.startswith(PARTIAL_PREFIX) and name.endswith("." + CONTAINER):
                yield Path(dirpath) / name


def recover_partials(root: Path, intake: Intake, now: datetime) -> list[Recording]:
    """Adopt every readable recorder segment left under ``root`` by a crash (blocking).

    Run at start-up before recording starts, so no live segment is mistaken
    for a leftover.
    """
    found: list[Recording] = []
    for path in find_partials(root):
        try:
            rec = adopt_partial(path, intake, now)
        except OSError as exc:
            log.error("cannot adopt %s: %s (left in place, retried at next start)", path, exc)
            continue
        if rec is not None:
            found.append(rec)
    return found
