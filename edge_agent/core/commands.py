"""Commands to the device: envelopes, canonical JSON, Ed25519 signatures, validation.

Pure: no IO, no clock. ``now`` and the replay memory are passed in, so every
rejection reason is a plain function call in the tests.

An envelope is JSON::

    {"v": 1, "id": "<uuid>", "device": "gw-1", "name": "erase", "args": {...},
     "issued_at": "2026-11-02T10:00:00Z", "expires_at": "2026-11-02T10:10:00Z",
     "key_id": "<16 hex>", "sig": "<base64 Ed25519 signature>"}

The signature covers the canonical JSON of every field except ``sig`` (sorted
keys, no whitespace, UTF-8), so the device, the command id and the validity
window are all signed: a command cannot be redirected, replayed after expiry
or have its arguments changed.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, model_validator

from edge_agent.core.command_limits import MAX_DEPTH, MAX_PAYLOAD_BYTES, label, too_deep
from edge_agent.core.model import HoldKind, iso, parse_ts

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import (
        Ed25519PrivateKey,
        Ed25519PublicKey,
    )

# cryptography is imported inside the functions that need it: a device without
# trusted keys never loads it (about 6 MiB of resident memory).

ENVELOPE_VERSION = 1
COMMAND_NAMES = (
    "hold", "release", "erase", "restrict", "clock-confirm", "status", "reload", "anonymize",
)  # fmt: skip
# Destructive: change or remove footage, or what protects it (docs/mqtt.md); anonymize
# writes new footage that may outlive every retention limit, so it is signed too.
SIGNED_COMMANDS = frozenset({"hold", "release", "erase", "restrict", "clock-confirm", "anonymize"})
DEFAULT_SKEW = timedelta(seconds=60)
# Replay memory lasts until expiry, so the longest validity bounds its size.
MAX_TTL = timedelta(days=1)


class Reason(StrEnum):
    MALFORMED = "malformed"
    UNKNOWN_COMMAND = "unknown_command"
    UNSIGNED = "unsigned"
    UNKNOWN_KEY = "unknown_key"
    BAD_SIGNATURE = "bad_signature"
    WRONG_DEVICE = "wrong_device"
    EXPIRED = "expired"
    NOT_YET_VALID = "not_yet_valid"
    TTL_TOO_LONG = "ttl_too_long"
    REPLAYED = "replayed"
    BAD_ARGS = "bad_args"
    TOO_LARGE = "too_large"
    # Set by the dispatcher, not by validate(): unauthenticated traffic over its rate,
    # a queue that was full, or an internal error while recording the verdict.
    RATE_LIMITED = "rate_limited"
    BUSY = "busy"
    INTERNAL = "internal_error"


# Field bounds (docs/mqtt.md, "Limits"): every string in an envelope has one.
MAX_ID = 128
MAX_NAME = 32
MAX_DEVICE = 64
MAX_KEY_ID = 64
MAX_SIG = 128  # base64 of a 64-byte Ed25519 signature is 88
MAX_TS = 64
MAX_REASON = 500
MAX_REF = 128
MAX_LOCATION = 64
MAX_RECORDING_IDS = 256
MAX_DETAIL = 200


def canonical_json(doc: Any) -> bytes:
    """Sorted keys, no whitespace, UTF-8: the bytes that are signed."""
    return json.dumps(
        doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode("utf-8")


# -- keys ------------------------------------------------------------------


def key_id(public: Ed25519PublicKey) -> str:
    from cryptography.hazmat.primitives import serialization

    """Short fingerprint of a public key: the first 16 hex of SHA-256 of its raw bytes."""
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


@dataclass(frozen=True)
class TrustedKey:
    name: str  # e.g. the key file's stem, shown in audit entries
    public: Ed25519PublicKey

    @property
    def id(self) -> str:
        return key_id(self.public)


def load_public_key(pem: bytes, *, name: str) -> TrustedKey:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    key = serialization.load_pem_public_key(pem)
    if not isinstance(key, Ed25519PublicKey):
        raise ValueError(f"key {name!r} is not an Ed25519 public key (make one with keys generate)")
    return TrustedKey(name, key)


def load_private_key(pem: bytes, *, name: str) -> Ed25519PrivateKey:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = serialization.load_pem_private_key(pem, password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError(
            f"key {name!r} is not an Ed25519 private key (make one with keys generate)"
        )
    return key


def private_pem(key: Ed25519PrivateKey) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def public_pem(key: Ed25519PublicKey) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


# -- payload models ----------------------------------------------------------


def _utc_text(value: str) -> str:
    try:
        parse_ts(value)
    except ValueError:
        # The text itself is not repeated: it came from the network.
        raise ValueError("not an ISO 8601 time (e.g. 2026-11-02T10:00:00Z)") from None
    return value


UtcText = Annotated[str, Field(max_length=MAX_TS), AfterValidator(_utc_text)]
RecordingId = Annotated[str, Field(min_length=1, max_length=MAX_ID)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CommandEnvelope(_Model):
    """A command as it travels on ``cmd/{name}``."""

    v: Literal[1] = 1
    id: str = Field(min_length=1, max_length=MAX_ID, pattern=r"^[A-Za-z0-9._:-]+$")
    device: str = Field(min_length=1, max_length=MAX_DEVICE)
    name: str = Field(min_length=1, max_length=MAX_NAME)
    args: dict[str, Any] = Field(default_factory=dict)
    issued_at: UtcText
    expires_at: UtcText
    key_id: str | None = Field(default=None, max_length=MAX_KEY_ID)
    sig: str | None = Field(default=None, max_length=MAX_SIG)

    def signed_bytes(self) -> bytes:
        return canonical_json(self.model_dump(mode="json", exclude={"sig"}))


def _check_scope(
    recording_ids: tuple[str, ...], location: str | None, start: str | None, end: str | None
) -> None:
    """Recording ids, or a place and a window: one of the two, whole (holds, anonymize)."""
    window = (location, start, end)
    if recording_ids and any(v is not None for v in window):
        raise ValueError("give recording_ids or location+start+end, not both")
    if not recording_ids and any(v is None for v in window):
        raise ValueError("give recording_ids, or location with start and end")
    if start and end and parse_ts(end) < parse_ts(start):
        raise ValueError("end is before start")


class HoldArgs(_Model):
    kind: HoldKind
    reason: str = Field(min_length=1, max_length=MAX_REASON)
    recording_ids: tuple[RecordingId, ...] = Field(default=(), max_length=MAX_RECORDING_IDS)
    location: str | None = Field(default=None, min_length=1, max_length=MAX_LOCATION)
    start: UtcText | None = None
    end: UtcText | None = None
    until: UtcText | None = None

    @model_validator(mode="after")
    def _scope(self) -> HoldArgs:
        _check_scope(self.recording_ids, self.location, self.start, self.end)
        return self


class ReleaseArgs(_Model):
    hold_id: str = Field(min_length=1, max_length=MAX_ID)
    reason: str = Field(min_length=1, max_length=MAX_REASON)


class EraseArgs(_Model):
    ref: str = Field(min_length=1, max_length=MAX_REF)
    location: str = Field(min_length=1, max_length=MAX_LOCATION)
    start: UtcText
    end: UtcText
    dry_run: bool = False
    keep_derivatives: bool = False  # leave anonymized derivatives (docs/retention-policy.md)

    @model_validator(mode="after")
    def _window(self) -> EraseArgs:
        if parse_ts(self.end) < parse_ts(self.start):
            raise ValueError("end is before start")
        return self


class AnonymizeArgs(_Model):
    """Anonymized derivatives of recordings, by id or by place and time (docs/mqtt.md)."""

    recording_ids: tuple[RecordingId, ...] = Field(default=(), max_length=MAX_RECORDING_IDS)
    location: str | None = Field(default=None, min_length=1, max_length=MAX_LOCATION)
    start: UtcText | None = None
    end: UtcText | None = None
    dry_run: bool = False

    @model_validator(mode="after")
    def _scope(self) -> AnonymizeArgs:
        _check_scope(self.recording_ids, self.location, self.start, self.end)
        return self


class ClockConfirmArgs(_Model):
    """The fleet operator confirms the device's wall clock (docs/design/time.md)."""

    reason: str = Field(min_length=1, max_length=MAX_REASON)


class NoArgs(_Model):
    pass


ARG_MODELS: dict[str, type[_Model]] = {
    "hold": HoldArgs,
    "release": ReleaseArgs,
    "erase": EraseArgs,
    "restrict": EraseArgs,
    "clock-confirm": ClockConfirmArgs,
    "status": NoArgs,
    "reload": NoArgs,
    "anonymize": AnonymizeArgs,
}


class CommandResult(_Model):
    """What the device says on ``cmd-result/{cmd_id}``: first the verdict, then the result."""

    id: str
    name: str | None = None
    state: Literal["accepted", "rejected", "done", "failed"]
    reason: str | None = None  # a Reason for rejected, an error for failed
    detail: str | None = None
    result: dict[str, Any] | None = None
    ts: str


# -- signing -------------------------------------------------------------------


def sign(
    private: Ed25519PrivateKey,
    *,
    device: str,
    name: str,
    args: Mapping[str, Any],
    issued_at: datetime,
    ttl: timedelta,
    cmd_id: str | None = None,
) -> CommandEnvelope:
    unsigned = CommandEnvelope(
        id=cmd_id or str(uuid.uuid4()),
        device=device,
        name=name,
        args=dict(args),
        issued_at=iso(issued_at),
        expires_at=iso(issued_at + ttl),
        key_id=key_id(private.public_key()),
    )
    sig = private.sign(unsigned.signed_bytes())
    return unsigned.model_copy(update={"sig": base64.b64encode(sig).decode("ascii")})


# -- validation ------------------------------------------------------------------


@dataclass(frozen=True)
class Verdict:
    """``accepted`` with parsed ``args``, or a ``reason`` and a human ``detail``.

    ``key`` is the trusted key whose signature verified (None for unsigned
    ``status``/``reload`` and for anything rejected before the signature).
    """

    envelope: CommandEnvelope | None
    reason: Reason | None = None
    detail: str | None = None
    args: _Model | None = None
    key: TrustedKey | None = None

    @property
    def accepted(self) -> bool:
        return self.reason is None

    @property
    def cmd_id(self) -> str | None:
        return self.envelope.id if self.envelope else None


def parse_envelope(
    payload: bytes, *, max_payload: int = MAX_PAYLOAD_BYTES
) -> CommandEnvelope | tuple[Reason, str]:
    """The envelope, or why it cannot be read: sizes and depth first, then JSON."""
    if len(payload) > max_payload:
        return Reason.TOO_LARGE, f"payload of {len(payload)} bytes (at most {max_payload})"
    if too_deep(payload):
        return Reason.MALFORMED, f"JSON nested deeper than {MAX_DEPTH} levels"
    try:
        doc = json.loads(payload.decode("utf-8"))
    except UnicodeDecodeError:
        return Reason.MALFORMED, "payload is not UTF-8"
    except (ValueError, RecursionError):
        # json's own message quotes no input, but keep only its kind anyway.
        return Reason.MALFORMED, "payload is not JSON"
    if not isinstance(doc, dict):
        return Reason.MALFORMED, "payload is not a JSON object"
    try:
        return CommandEnvelope.model_validate(doc)
    except ValidationError as exc:
        return Reason.MALFORMED, _first_error(exc)


def _first_error(exc: ValidationError) -> str:
    # A location may hold a key the sender made up: shown bounded and escaped.
    err = exc.errors(include_url=False, include_context=False, include_input=False)[0]
    where = ".".join(label(str(p), 24) for p in err["loc"][:4]) or "(envelope)"
    return _bounded(f"{where}: {err['msg']}")


def _bounded(detail: str) -> str:
    return detail if len(detail) <= MAX_DETAIL else detail[: MAX_DETAIL - 1] + "~"


def validate(
    payload: bytes,
    *,
    topic_name: str | None,
    device_id: str,
    trusted: Mapping[str, TrustedKey],
    now: datetime,
    seen: Callable[[str], bool],
    skew: timedelta = DEFAULT_SKEW,
    max_payload: int = MAX_PAYLOAD_BYTES,
) -> Verdict:
    """Decide whether a received command may run; never raises.

    ``trusted`` maps key id to key; ``seen(cmd_id)`` says whether the id was
    already received (the replay memory). The signature is checked before
    anything else in the envelope is believed. A verdict's ``detail`` is at
    most ``MAX_DETAIL`` characters and repeats sender text only bounded and
    escaped; ``key`` is set whenever the signature verified.
    """
    try:
        return _validate(payload, topic_name, device_id, trusted, now, seen, skew, max_payload)
    except Exception as exc:  # any surprise is a rejection, never an escape
        return Verdict(None, Reason.INTERNAL, f"command not checked ({type(exc).__name__})")


def _validate(
    payload: bytes,
    topic_name: str | None,
    device_id: str,
    trusted: Mapping[str, TrustedKey],
    now: datetime,
    seen: Callable[[str], bool],
    skew: timedelta,
    max_payload: int,
) -> Verdict:
    parsed = parse_envelope(payload, max_payload=max_payload)
    if isinstance(parsed, tuple):
        return Verdict(None, *parsed)
    env = parsed
    if env.name not in COMMAND_NAMES or (topic_name is not None and topic_name != env.name):
        return Verdict(
            env,
            Reason.UNKNOWN_COMMAND,
            _bounded(
                f"command {label(env.name)!r} on topic cmd/{label(topic_name)} "
                f"(known: {', '.join(COMMAND_NAMES)}; name and topic must agree)"
            ),
        )
    key: TrustedKey | None = None
    if env.sig is None or env.key_id is None:
        if env.name in SIGNED_COMMANDS:
            return Verdict(env, Reason.UNSIGNED, f"{env.name!r} must be signed by a trusted key")
    else:
        key = trusted.get(env.key_id)
        if key is None:
            return Verdict(env, Reason.UNKNOWN_KEY, f"key {label(env.key_id)!r} is not trusted")
        from cryptography.exceptions import InvalidSignature

        try:
            sig = base64.b64decode(env.sig, validate=True)
            key.public.verify(sig, env.signed_bytes())
        except (InvalidSignature, binascii.Error, ValueError):
            return Verdict(env, Reason.BAD_SIGNATURE, f"signature does not verify with {key.name}")
    if env.device != device_id:
        return Verdict(
            env,
            Reason.WRONG_DEVICE,
            f"addressed to {label(env.device, MAX_DEVICE)!r}, not {device_id!r}",
            key=key,
        )
    issued, expires = parse_ts(env.issued_at), parse_ts(env.expires_at)
    if expires - issued > MAX_TTL:
        return Verdict(env, Reason.TTL_TOO_LONG, f"valid for more than {MAX_TTL}", key=key)
    if now >= expires:
        return Verdict(env, Reason.EXPIRED, f"expired at {iso(expires)} (now {iso(now)})", key=key)
    if now + skew < issued:
        return Verdict(
            env, Reason.NOT_YET_VALID, f"issued at {iso(issued)} (now {iso(now)})", key=key
        )
    if seen(env.id):
        return Verdict(env, Reason.REPLAYED, f"command id {env.id!r} was already received", key=key)
    try:
        args = ARG_MODELS[env.name].model_validate(env.args)
    except ValidationError as exc:
        return Verdict(env, Reason.BAD_ARGS, _first_error(exc), key=key)
    return Verdict(env, None, None, args, key)


def expiry_of(env: CommandEnvelope) -> datetime:
    return parse_ts(env.expires_at)
