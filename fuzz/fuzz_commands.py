"""The command envelope parser fed arbitrary payloads: ``validate`` always returns a
Verdict (with a bounded detail) and never raises.

Three shapes per input: raw bytes; an envelope built from fuzzed fields and
signed with a real trusted key (so the argument models and the time checks
are reached, not only the signature check); and a valid signed payload with
fuzzed bytes spliced in. The reply-topic check and the nesting scan get the
same text.
"""

from __future__ import annotations

import base64
import json
import sys
from datetime import UTC, datetime, timedelta
from typing import Any

import atheris

with atheris.instrument_imports():
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from edge_agent.core.command_limits import check_reply_topic, label, too_deep
    from edge_agent.core.commands import (
        COMMAND_NAMES,
        MAX_DETAIL,
        CommandEnvelope,
        TrustedKey,
        Verdict,
        sign,
        validate,
    )

NOW = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)
KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
TRUSTED_KEY = TrustedKey("central", KEY.public_key())
TRUSTED = {TRUSTED_KEY.id: TRUSTED_KEY}
NAMES = (*COMMAND_NAMES, "format-disk", "")
ARG_KEYS = (
    "kind", "reason", "recording_ids", "location", "start", "end", "until", "hold_id",
    "ref", "dry_run", "extra",
)  # fmt: skip
TIMES = (
    "2026-12-04T11:59:00Z",
    "2026-12-04T12:05:00Z",
    "2026-12-05T12:05:00+01:00",
    "0001-01-01T00:00:00+01:00",
    "9999-12-31T23:59:59-01:00",
)
VALID = sign(
    KEY,
    device="gw-1",
    name="erase",
    args={
        "ref": "R",
        "location": "gate",
        "start": "2026-12-04T10:00:00Z",
        "end": "2026-12-04T11:00:00Z",
    },
    issued_at=NOW,
    ttl=timedelta(minutes=10),
    cmd_id="c-1",
)
VALID_BYTES = json.dumps(VALID.model_dump(mode="json")).encode()


def _time(fdp: atheris.FuzzedDataProvider) -> str:
    pick = fdp.ConsumeIntInRange(0, len(TIMES))
    return TIMES[pick] if pick < len(TIMES) else fdp.ConsumeUnicodeNoSurrogates(32)


def _value(fdp: atheris.FuzzedDataProvider) -> Any:
    kind = fdp.ConsumeIntInRange(0, 6)
    if kind == 6:
        return _time(fdp)
    if kind == 0:
        return fdp.ConsumeUnicodeNoSurrogates(40)
    if kind == 1:
        return fdp.ConsumeInt(8)
    if kind == 2:
        return fdp.ConsumeBool()
    if kind == 3:
        return [fdp.ConsumeUnicodeNoSurrogates(10) for _ in range(fdp.ConsumeIntInRange(0, 4))]
    if kind == 4:
        return None
    return fdp.ConsumeFloat()


def _signed_from_fields(fdp: atheris.FuzzedDataProvider) -> bytes | None:
    args = {
        ARG_KEYS[fdp.ConsumeIntInRange(0, len(ARG_KEYS) - 1)]: _value(fdp)
        for _ in range(fdp.ConsumeIntInRange(0, 6))
    }
    try:
        env = CommandEnvelope(
            id=fdp.ConsumeUnicodeNoSurrogates(20) if fdp.ConsumeBool() else "c-1",
            device="gw-1" if fdp.ConsumeBool() else fdp.ConsumeUnicodeNoSurrogates(8),
            name=NAMES[fdp.ConsumeIntInRange(0, len(NAMES) - 1)] or "x",
            args=args,
            issued_at=_time(fdp),
            expires_at=_time(fdp),
            key_id=TRUSTED_KEY.id,
        )
    except ValueError:  # pydantic's ValidationError: not an envelope at all
        return None
    sig = KEY.sign(env.signed_bytes())
    doc = env.model_copy(update={"sig": base64.b64encode(sig).decode()}).model_dump(mode="json")
    return json.dumps(doc).encode()


def test_one(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    shape = fdp.ConsumeIntInRange(0, 2)
    topic = NAMES[fdp.ConsumeIntInRange(0, len(NAMES) - 1)] or None
    payload: bytes | None
    if shape == 1:
        payload = _signed_from_fields(fdp)
    elif shape == 2:
        at = fdp.ConsumeIntInRange(0, len(VALID_BYTES))
        payload = VALID_BYTES[:at] + fdp.ConsumeBytes(64) + VALID_BYTES[at + 1 :]
    else:
        payload = None
    if payload is None:
        payload = fdp.ConsumeBytes(fdp.remaining_bytes())
    seen_ids = {"c-1"} if fdp.ConsumeBool() else set()
    v = validate(
        payload,
        topic_name=topic,
        device_id="gw-1",
        trusted=TRUSTED,
        now=NOW,
        seen=lambda i: i in seen_ids,
    )
    assert isinstance(v, Verdict)
    assert v.accepted == (v.reason is None)
    assert v.detail is None or len(v.detail) <= MAX_DETAIL, v.detail
    if v.accepted:
        assert v.envelope is not None and v.args is not None
    text = payload.decode("utf-8", "replace")
    check_reply_topic(text, "edge/gw-1/reply/")
    too_deep(payload)
    assert len(label(text)) <= 33


if __name__ == "__main__":
    atheris.Setup(sys.argv, test_one)
    atheris.Fuzz()
