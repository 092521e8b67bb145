"""Pure command validation: every rejection reason, and what is accepted."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edge_agent.core.command_limits import (
    MAX_DEPTH,
    MAX_PAYLOAD_BYTES,
    RejectionLimiter,
    check_reply_topic,
    default_reply_prefix,
    label,
    too_deep,
)
from edge_agent.core.commands import (
    MAX_DETAIL,
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


# -- issue 12: bounds, and no exception ever escapes ------------------------------------


def _unsigned(doc: dict[str, object]) -> bytes:
    base: dict[str, object] = {
        "v": 1,
        "id": "c-1",
        "device": "gw-1",
        "name": "status",
        "issued_at": "2026-11-02T09:59:00Z",
        "expires_at": "2026-11-02T10:05:00Z",
    }
    return json.dumps({**base, **doc}).encode()


@pytest.mark.parametrize(
    "payload",
    [
        b"[" * 10_000,
        b'{"a":' * 3000,
        b'{"v":1,"args":' + b'{"a":' * 2000 + b"1" + b"}" * 2001,
        b'{"x":"' + b"\\" * 5000,
    ],
)
def test_deep_or_broken_json_is_malformed_never_an_exception(payload: bytes) -> None:
    # json.loads raised RecursionError here, which escaped validation: the message
    # was never acked, audited or answered.
    v = _check(payload)
    assert v.reason is Reason.MALFORMED and v.envelope is None
    assert v.detail is not None and len(v.detail) <= MAX_DETAIL


def test_payload_size_is_checked_before_parsing() -> None:
    big = _unsigned({"pad": "x" * MAX_PAYLOAD_BYTES})
    v = _check(big, topic="status")
    assert v.reason is Reason.TOO_LARGE and v.detail == (
        f"payload of {len(big)} bytes (at most {MAX_PAYLOAD_BYTES})"
    )
    # Under the limit the same shape is parsed (and rejected for its extra field).
    assert _check(_unsigned({"pad": "x"}), topic="status").reason is Reason.MALFORMED


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("device", "g" * 65),
        ("name", "s" * 33),
        ("id", "i" * 129),
        ("key_id", "k" * 65),
        ("sig", "A" * 129),
        ("issued_at", "2026-11-02T09:59:00" + "0" * 60 + "Z"),
    ],
)
def test_every_envelope_field_is_bounded(field: str, value: str) -> None:
    v = _check(_unsigned({field: value}), topic="status")
    assert v.reason is Reason.MALFORMED, v
    assert value not in (v.detail or "")


@pytest.mark.parametrize(
    "args",
    [
        {**ERASE_ARGS, "ref": "r" * 129},
        {**ERASE_ARGS, "location": "l" * 65},
    ],
)
def test_erase_args_are_bounded(args: dict[str, object]) -> None:
    assert _check(_signed("erase", args)).reason is Reason.BAD_ARGS


def test_hold_args_are_bounded() -> None:
    many = {"kind": "incident", "reason": "r", "recording_ids": [f"r{i}" for i in range(257)]}
    assert _check(_signed("hold", many), topic="hold").reason is Reason.BAD_ARGS
    long_reason = {"kind": "incident", "reason": "r" * 501, "recording_ids": ["a"]}
    assert _check(_signed("hold", long_reason), topic="hold").reason is Reason.BAD_ARGS
    long_id = {"kind": "incident", "reason": "r", "recording_ids": ["a" * 129]}
    assert _check(_signed("hold", long_id), topic="hold").reason is Reason.BAD_ARGS
    release = {"hold_id": "h" * 129, "reason": "done"}
    assert _check(_signed("release", release), topic="release").reason is Reason.BAD_ARGS


def test_a_rejection_detail_never_echoes_the_senders_text() -> None:
    evil = "A" * 3000 + "\n\x1b[31m"
    for payload, topic in [
        (_unsigned({evil: 1}), "status"),
        (_unsigned({"name": "n\x1b" * 10}), "status"),
        (_unsigned({"device": "d\x1b" * 10}), "status"),
        (_signed("erase", {**ERASE_ARGS, "start": "2026-11-02T09:00:00Z\x1b" + "9" * 30}), "erase"),
        (_signed("erase", {**ERASE_ARGS, evil: 1}), "erase"),
        (_signed("status", {}), evil),
    ]:
        v = _check(payload, topic=topic)
        assert not v.accepted
        assert v.detail is not None and len(v.detail) <= MAX_DETAIL, v.detail
        assert "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA" not in v.detail
        assert "\x1b" not in v.detail and "\n" not in v.detail, v.detail


def test_a_failing_replay_memory_is_a_verdict_not_an_exception() -> None:
    def broken(_cmd_id: str) -> bool:
        raise OSError("disk I/O error")

    v = validate(
        _signed(), topic_name="erase", device_id="gw-1", trusted=TRUSTED, now=NOW, seen=broken
    )
    assert v.reason is Reason.INTERNAL and v.detail == "command not checked (OSError)"


def test_a_verified_signature_is_named_on_later_rejections() -> None:
    # The dispatcher keeps the command id in the audit only when a key vouches for it.
    assert _check(_signed(device="gw-9")).key is not None
    assert _check(_signed(), seen={"x"}).key is not None
    assert _check(_signed(key=OTHER)).key is None


def test_too_deep_skips_strings_and_is_linear() -> None:
    assert not too_deep(b'{"a": "[[[[[[[[[[[[[[[[[[[[[[[[[["}')
    assert not too_deep(b'{"a": "\\"[[[[[[[[[[[[[[[[[[[[[[[[[["}')
    assert too_deep(b'{"a": "\\\\"' + b"[" * 9)
    assert not too_deep(b"[" * MAX_DEPTH + b"]" * MAX_DEPTH)
    assert too_deep(b"[" * (MAX_DEPTH + 1))
    assert not too_deep(b"[]" * 8000)  # wide is fine


@pytest.mark.parametrize(
    ("topic", "problem"),
    [
        (None, None),
        ("edge/gw-1/reply/dash", None),
        ("edge/gw-1/reply/", "outside_reply_prefix"),
        ("edge/gw-1/events", "outside_reply_prefix"),
        ("edge/gw-1/reply/#", "wildcard"),
        ("edge/gw-1/reply/+/x", "wildcard"),
        ("edge/gw-1/reply/a\x00b", "nul"),
        ("edge/gw-1/reply/" + "x" * 300, "too_long"),
        ("", "empty"),
    ],
)
def test_reply_topics(topic: str | None, problem: str | None) -> None:
    assert check_reply_topic(topic, default_reply_prefix("edge/gw-1")) == problem


def test_rejection_limiter_writes_a_burst_then_one_summary_per_window() -> None:
    lim = RejectionLimiter(burst=3, window=60.0)
    admitted = [lim.admit(100.0 + i, "malformed", 10)[0] for i in range(10)]
    assert admitted == [True] * 3 + [False] * 7
    assert lim.count(110.0, "busy", 5) is None
    assert lim.next_due(110.0) == pytest.approx(50.0)
    assert lim.due(150.0) is None  # window still open
    ok, summary = lim.admit(161.0, "unsigned", 7)
    assert ok and summary is not None
    assert summary.as_dict() == {
        "window_seconds": 61.0,
        "counts": {"busy": 1, "malformed": 7},
        "total": 8,
        "payload_bytes": 75,
    }
    assert lim.due(300.0) is None  # nothing was only counted in the new window
    assert label("cmd/\x1b[31m" + "x" * 100) == "cmd???31m" + "x" * 23 + "~"


def test_command_limits_in_the_config() -> None:
    from pydantic import ValidationError

    from edge_agent.config.config import Commands

    c = Commands()
    assert (c.max_payload, c.queue_depth, c.workers) == (MAX_PAYLOAD_BYTES, 64, 2)
    assert c.reply_prefix_for("edge/gw-1") == "edge/gw-1/reply/"
    c = Commands(max_payload="32KiB", reply_prefix="dash/replies/")  # type: ignore[arg-type]
    assert c.max_payload == 32 * 1024 and c.reply_prefix_for("edge/gw-1") == "dash/replies/"
    for bad in ({"reply_prefix": "dash/#/"}, {"reply_prefix": "dash"}, {"max_payload": "2MiB"}):
        with pytest.raises(ValidationError):
            Commands(**bad)  # type: ignore[arg-type]
