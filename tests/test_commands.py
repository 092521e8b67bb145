"""Pure command validation: every rejection reason, and what is accepted."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edge_agent.commands import (
    CommandEnvelope,
    EraseArgs,
    HoldArgs,
    Reason,
    TrustedKey,
    canonical_json,
    key_id,
    load_private_key,
    load_public_key,
    private_pem,
    public_pem,
    sign,
    validate,
)

NOW = datetime(2026, 11, 2, 10, 0, tzinfo=UTC)
KEY = Ed25519PrivateKey.generate()
OTHER = Ed25519PrivateKey.generate()
TRUSTED = {key_id(KEY.public_key()): TrustedKey("central", KEY.public_key())}
ERASE_ARGS = {
    "ref": "DSR-7",
    "location": "gate",
    "start": "2026-11-02T09:00:00Z",
    "end": "2026-11-02T09:05:00Z",
}


def _signed(
    name: str = "erase",
    args: dict[str, object] | None = None,
    *,
    key: Ed25519PrivateKey = KEY,
    device: str = "gw-1",
    issued: datetime = NOW,
    ttl: timedelta = timedelta(minutes=10),
    cmd_id: str | None = None,
) -> bytes:
    env = sign(
        key,
        device=device,
        name=name,
        args=ERASE_ARGS if args is None else args,
        issued_at=issued,
        ttl=ttl,
        cmd_id=cmd_id,
    )
    return json.dumps(env.model_dump(mode="json")).encode()


def _check(payload: bytes, *, topic: str | None = "erase", seen: set[str] | None = None):  # type: ignore[no-untyped-def]
    return validate(
        payload,
        topic_name=topic,
        device_id="gw-1",
        trusted=TRUSTED,
        now=NOW,
        seen=lambda i: i in (seen or set()),
    )


def test_canonical_json_sorted_compact_utf8() -> None:
    assert canonical_json({"b": 1, "a": "é"}) == '{"a":"é","b":1}'.encode()


def test_signed_erase_is_accepted_with_parsed_args() -> None:
    v = _check(_signed())
    assert v.accepted, v.detail
    assert isinstance(v.args, EraseArgs) and v.args.location == "gate"
    assert v.key is not None and v.key.name == "central"


def test_key_round_trip_through_pem() -> None:
    priv = load_private_key(private_pem(KEY), name="k")
    pub = load_public_key(public_pem(KEY.public_key()), name="k")
    assert key_id(priv.public_key()) == pub.id


def test_unsigned_destructive_command_rejected() -> None:
    env = json.loads(_signed())
    del env["sig"]
    assert _check(json.dumps(env).encode()).reason is Reason.UNSIGNED


def test_unsigned_status_is_fine() -> None:
    env = CommandEnvelope(
        id="s1", device="gw-1", name="status", issued_at="2026-11-02T10:00:00Z",
        expires_at="2026-11-02T10:10:00Z",
    )  # fmt: skip
    assert _check(env.model_dump_json().encode(), topic="status").accepted


def test_unknown_key() -> None:
    assert _check(_signed(key=OTHER)).reason is Reason.UNKNOWN_KEY


@pytest.mark.parametrize("field", ["args", "device", "expires_at", "id"])
def test_any_changed_field_breaks_the_signature(field: str) -> None:
    env = json.loads(_signed())
    env[field] = {
        "args": {**ERASE_ARGS, "location": "lab"},
        "device": "gw-2",
        "expires_at": "2026-11-02T12:00:00Z",
        "id": "other",
    }[field]
    assert _check(json.dumps(env).encode()).reason is Reason.BAD_SIGNATURE


def test_garbage_signature() -> None:
    env = json.loads(_signed())
    env["sig"] = "not base64!!"
    assert _check(json.dumps(env).encode()).reason is Reason.BAD_SIGNATURE
    env["sig"] = base64.b64encode(b"x" * 64).decode()
    assert _check(json.dumps(env).encode()).reason is Reason.BAD_SIGNATURE


def test_wrong_device() -> None:
    assert _check(_signed(device="gw-2")).reason is Reason.WRONG_DEVICE


def test_expired() -> None:
    v = _check(_signed(issued=NOW - timedelta(minutes=20)))
    assert v.reason is Reason.EXPIRED


def test_not_yet_valid_beyond_skew() -> None:
    assert _check(_signed(issued=NOW + timedelta(minutes=5))).reason is Reason.NOT_YET_VALID
    assert _check(_signed(issued=NOW + timedelta(seconds=30))).accepted


def test_ttl_too_long() -> None:
    assert _check(_signed(ttl=timedelta(days=2))).reason is Reason.TTL_TOO_LONG


def test_replayed() -> None:
    payload = _signed(cmd_id="c-1")
    assert _check(payload, seen={"c-1"}).reason is Reason.REPLAYED


@pytest.mark.parametrize(
    "args",
    [
        {"ref": "x"},
        {**ERASE_ARGS, "start": "yesterday"},
        {**ERASE_ARGS, "end": "2026-11-02T08:00:00Z"},
        {**ERASE_ARGS, "extra": 1},
    ],
)
def test_bad_args(args: dict[str, object]) -> None:
    v = _check(_signed(args=args))
    assert v.reason is Reason.BAD_ARGS, v
    assert v.detail


def test_hold_scope_rules() -> None:
    ok = {"kind": "incident", "reason": "case 1", "recording_ids": ["r1"]}
    assert isinstance(_check(_signed("hold", ok), topic="hold").args, HoldArgs)
    both = {**ok, "location": "gate", "start": NOW.isoformat(), "end": NOW.isoformat()}
    assert _check(_signed("hold", both), topic="hold").reason is Reason.BAD_ARGS
    assert _check(_signed("hold", {"kind": "incident", "reason": "x"}), topic="hold").reason is (
        Reason.BAD_ARGS
    )


def test_malformed_and_unknown_command() -> None:
    assert _check(b"\xff").reason is Reason.MALFORMED
    assert _check(b"[]").reason is Reason.MALFORMED
    assert _check(b'{"id": "x"}').reason is Reason.MALFORMED
    assert _check(_signed(), topic="hold").reason is Reason.UNKNOWN_COMMAND
    assert _check(_signed("format-disk", {}), topic="format-disk").reason is (
        Reason.UNKNOWN_COMMAND
    )


def test_signature_checked_before_device_and_time() -> None:
    # A forged command learns nothing about which other checks it would pass.
    assert _check(_signed(key=OTHER, device="gw-9")).reason is Reason.UNKNOWN_KEY
