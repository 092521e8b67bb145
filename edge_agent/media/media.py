"""The media layer: probe, tag, strip audio, verify (docs/retention-policy.md). PyAV only.

This module is the one to import; it re-exports :mod:`edge_agent.media.media_probe`
and :mod:`edge_agent.media.media_remux` and owns the mapping between
:class:`~edge_agent.core.model.Tags` and container metadata.

Tags are written as global container tags named ``edge_agent.<field>``. Both
target containers keep the dotted names (checked with ``ffprobe -show_format``):
MP4 stores them as ``mdta`` keys (needs ``movflags=use_metadata_tags``, which
:func:`remux` sets), Matroska as SimpleTags that read back upper-cased
(``EDGE_AGENT.LOCATION``), which is why every lookup here is case-insensitive.
MPEG-TS has no place for them at all, so TS input is remuxed to Matroska.

Damaged input, as measured on this stack (PyAV 18, libavformat 62):

- a plain MP4 cut off mid-write has no ``moov`` index and cannot be opened:
  ``probe`` raises ``MediaError("truncated")``;
- a cut-off Matroska file still opens: ``probe`` succeeds (its duration is the
  one in the header, i.e. the intended length, so do not trust it), and
  ``count_packets``/``remux`` see the packets before the cut;
- a cut-off fragmented MP4 is readable up to its last complete fragment.

All functions are blocking; async callers use ``asyncio.to_thread``.
"""

from __future__ import annotations

from collections.abc import Mapping

from edge_agent.core.model import POLICY_VERSION, Purpose, Site, Tags, TimeSource, iso, parse_ts
from edge_agent.host.fsutil import sha256_file
from edge_agent.media.media_probe import (
    DEFAULT_MAX_STREAMS,
    MAX_TAG_VALUE_BYTES,
    MAX_TAGS,
    TAG_PREFIX,
    MediaError,
    PacketScan,
    ProbeResult,
    Reason,
    StreamInfo,
    count_packets,
    probe,
    probe_and_scan,
    scan_packets,
)
from edge_agent.media.media_remux import (
    RemuxResult,
    can_keep_audio,
    output_container_for,
    output_format,
    remux,
    verify,
)

__all__ = [
    "DEFAULT_MAX_STREAMS",
    "ID_TAG",
    "MAX_TAGS",
    "MAX_TAG_VALUE_BYTES",
    "SOURCE_SHA256_TAG",
    "TAG_PREFIX",
    "TRUNCATED_TAG",
    "MediaError",
    "PacketScan",
    "ProbeResult",
    "Reason",
    "RemuxResult",
    "StreamInfo",
    "can_keep_audio",
    "count_packets",
    "decode_recording_id",
    "decode_source_sha256",
    "decode_tags",
    "encode_tags",
    "output_container_for",
    "output_format",
    "probe",
    "probe_and_scan",
    "remux",
    "scan_packets",
    "sha256_file",
    "verify",
]

ID_TAG = TAG_PREFIX + "id"
SOURCE_SHA256_TAG = TAG_PREFIX + "source_sha256"
# Set (to "true") on a file whose header promised more than its packets hold.
TRUNCATED_TAG = TAG_PREFIX + "truncated"

_FIELDS = (
    "location",
    "purpose",
    "site",
    "audio",
    "anonymized",
    "start",
    "end",
    "time_source",
    "device",
    "policy_version",
)


def _bool(value: bool) -> str:
    return "true" if value else "false"


def encode_tags(
    tags: Tags, *, recording_id: str | None = None, source_sha256: str | None = None
) -> dict[str, str]:
    """Container tags for ``tags``, plus the catalog id and the hash of the file as
    it arrived, so a catalog rebuilt from disk keeps ids and re-adoption checks."""
    out = {
        TAG_PREFIX + "location": tags.location,
        TAG_PREFIX + "purpose": tags.purpose.value,
        TAG_PREFIX + "site": tags.site.value,
        TAG_PREFIX + "audio": _bool(tags.audio),
        TAG_PREFIX + "anonymized": _bool(tags.anonymized),
        TAG_PREFIX + "start": iso(tags.start),
        TAG_PREFIX + "end": iso(tags.end),
        TAG_PREFIX + "time_source": tags.time_source.value,
        TAG_PREFIX + "device": tags.device,
        TAG_PREFIX + "policy_version": tags.policy_version,
    }
    if recording_id is not None:
        out[ID_TAG] = recording_id
    if source_sha256 is not None:
        out[SOURCE_SHA256_TAG] = source_sha256
    return out


def _ours(probe_tags: Mapping[str, str]) -> dict[str, str]:
    return {
        k.lower()[len(TAG_PREFIX) :]: v
        for k, v in probe_tags.items()
        if k.lower().startswith(TAG_PREFIX)
    }


def _parse_bool(name: str, value: str) -> bool:
    low = value.strip().lower()
    if low in ("true", "1", "yes"):
        return True
    if low in ("false", "0", "no"):
        return False
    raise ValueError(f"{TAG_PREFIX}{name}={value!r} is not true/false")


def decode_tags(probe_tags: Mapping[str, str]) -> Tags | None:
    """Tags read back from a container (any key case), or None if we never tagged it.

    Raises MediaError("bad_tags") when our tags are present but incomplete or
    malformed: a file that claims to be ours but cannot say what it is must be
    looked at, not silently re-adopted with guessed tags.
    """
    ours = _ours(probe_tags)
    if not any(f in ours for f in _FIELDS):
        return None
    missing = [TAG_PREFIX + f for f in _FIELDS if f not in ours and f != "policy_version"]
    if missing:
        raise MediaError(Reason.BAD_TAGS, f"missing tags: {', '.join(missing)}")
    try:
        return Tags(
            location=ours["location"],
            purpose=Purpose(ours["purpose"]),
            site=Site(ours["site"]),
            audio=_parse_bool("audio", ours["audio"]),
            anonymized=_parse_bool("anonymized", ours["anonymized"]),
            start=parse_ts(ours["start"]),
            end=parse_ts(ours["end"]),
            time_source=TimeSource(ours["time_source"]),
            device=ours["device"],
            policy_version=ours.get("policy_version", POLICY_VERSION),
        )
    except ValueError as exc:
        raise MediaError(Reason.BAD_TAGS, f"malformed tag: {exc}") from exc


def decode_recording_id(probe_tags: Mapping[str, str]) -> str | None:
    """The catalog id embedded by :func:`encode_tags`, if any."""
    return _ours(probe_tags).get("id") or None


def decode_source_sha256(probe_tags: Mapping[str, str]) -> str | None:
    """The pre-adoption file hash embedded by :func:`encode_tags`, if any."""
    return _ours(probe_tags).get("source_sha256") or None
