"""Signed commands through a real broker: every rejection reason, and an erase end to end."""

from __future__ import annotations

import hashlib
import json
import subprocess
import time
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import paho.mqtt.client as paho
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from edge_agent.cli import main as cli_main
from edge_agent.config.config import load_config
from edge_agent.core.commands import load_private_key, sign
from edge_agent.core.model import Purpose, RecState, iso, utcnow
from edge_agent.intake.intake import Intake
from edge_agent.intake.runtime import intake_settings, origin_for
from edge_agent.store.audit import AuditLog
from edge_agent.store.catalog import Catalog
from tests.support.broker import Broker, Subscriber, start_agent, write_agent_config
from tests.support.commands import ROOT, _publish
from tests.support.mediagen import make_video


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("cmd")
    broker = Broker(tmp / "broker")
    broker.start()
    assert cli_main(["keys", "generate", "--out", str(tmp / "keys"), "--name", "central"]) == 0
    assert (tmp / "keys" / "central.key").stat().st_mode & 0o777 == 0o600
    cfg_path = write_agent_config(tmp, broker, trusted_keys=(tmp / "keys" / "central.pub",))
    cfg = load_config(cfg_path)
    cat = Catalog.open(cfg.storage.catalog, device_id="gw-1", storage_root=cfg.storage.root)
    clip = make_video(tmp / "drop.mp4", seconds=1.0)
    result = Intake(cat, intake_settings(cfg)).adopt(
        clip, origin_for(cfg, "gate", Purpose.SECURITY), utcnow()
    )
    assert result.recording is not None, result
    cat.close()
    agent = start_agent(cfg_path, tmp / "agent.log")
    sub = Subscriber(broker, [f"{ROOT}/cmd-result/#", f"{ROOT}/status", f"{ROOT}/events"])
    sub.wait_for(f"{ROOT}/status", lambda g: any(p["state"] != "offline" for p in g))
    key = load_private_key((tmp / "keys" / "central.key").read_bytes(), name="central")
    yield {
        "tmp": tmp,
        "broker": broker,
        "cfg": cfg,
        "key": key,
        "sub": sub,
        "recording": result.recording,
        "agent": agent,
    }
    sub.close()
    agent.terminate()
    try:
        agent.wait(15)
    except subprocess.TimeoutExpired:
        agent.kill()
    broker.stop()


def _signed(key: Ed25519PrivateKey, name: str, args: dict[str, Any], **kw: Any) -> str:
    env = sign(
        key,
        device=kw.get("device", "gw-1"),
        name=name,
        args=args,
        issued_at=kw.get("issued", utcnow()),
        ttl=kw.get("ttl", timedelta(minutes=10)),
        cmd_id=kw.get("cmd_id"),
    )
    return json.dumps(env.model_dump(mode="json"))


def _results(sub: Subscriber, cmd_id: str, final: tuple[str, ...]) -> list[dict[str, Any]]:
    return sub.wait_for(
        f"{ROOT}/cmd-result/{cmd_id}", lambda g: any(r["state"] in final for r in g)
    )


def test_every_rejection_reason_is_answered_and_audited(setup: dict[str, Any]) -> None:
    key, sub, broker = setup["key"], setup["sub"], setup["broker"]
    rid = setup["recording"].id
    hold = {"kind": "incident", "reason": "case 1", "recording_ids": [rid]}
    stranger = Ed25519PrivateKey.generate()
    unsigned = json.loads(_signed(key, "hold", hold, cmd_id="r-unsigned"))
    del unsigned["sig"]
    forged = json.loads(_signed(key, "hold", hold, cmd_id="r-bad-sig"))
    forged["args"]["reason"] = "changed"
    cases = {
        "r-unsigned": ("unsigned", json.dumps(unsigned)),
        "r-bad-sig": ("bad_signature", json.dumps(forged)),
        "r-unknown-key": ("unknown_key", _signed(stranger, "hold", hold, cmd_id="r-unknown-key")),
        "r-expired": (
            "expired",
            _signed(key, "hold", hold, cmd_id="r-expired", issued=utcnow() - timedelta(hours=1)),
        ),
        "r-future": (
            "not_yet_valid",
            _signed(key, "hold", hold, cmd_id="r-future", issued=utcnow() + timedelta(hours=1)),
        ),
        "r-device": ("wrong_device", _signed(key, "hold", hold, cmd_id="r-device", device="gw-2")),
        "r-args": ("bad_args", _signed(key, "hold", {"kind": "incident"}, cmd_id="r-args")),
    }
    for _cmd_id, (_, payload) in cases.items():
        _publish(broker, "hold", payload)
    for cmd_id, (reason, _) in cases.items():
        got = _results(sub, cmd_id, ("rejected",))
        assert [(r["state"], r["reason"]) for r in got] == [("rejected", reason)], got
    # Replay: the first copy is accepted and runs, the second is rejected.
    once = _signed(key, "hold", hold, cmd_id="r-replay")
    _publish(broker, "hold", once)
    assert _results(sub, "r-replay", ("done", "failed"))[-1]["state"] == "done"
    _publish(broker, "hold", once)
    got = _results(sub, "r-replay", ("rejected",))
    assert [r["state"] for r in got] == ["accepted", "done", "rejected"]
    assert got[-1]["reason"] == "replayed"

    cat = Catalog.open(
        setup["cfg"].storage.catalog, device_id="gw-1", storage_root=setup["cfg"].storage.root
    )
    try:
        audit = list(AuditLog(cat).export())
        entries = [e for e in audit if e["action"] == "command.rejected"]
        # The id is kept only when a trusted signature vouches for it; the rest are
        # known by the hash of their payload, with no text of theirs in the record.
        unauthenticated = ("r-unsigned", "r-bad-sig", "r-unknown-key")
        rejected = {e["subject"]: e["data"]["reason"] for e in entries if e["subject"]}
        assert rejected == {
            **{c: reason for c, (reason, _) in cases.items() if c not in unauthenticated},
            "r-replay": "replayed",
        }
        by_hash = {e["data"]["payload_sha256"]: e["data"]["reason"] for e in entries}
        for c in unauthenticated:
            reason, payload = cases[c]
            assert by_hash[hashlib.sha256(payload.encode()).hexdigest()] == reason
        for e in entries:
            assert set(e["data"]) == {
                "reason", "size", "payload_sha256", "topic", "name", "key", "reply_topic"
            }  # fmt: skip
        # Only the accepted copy placed a hold: rejected commands changed nothing.
        holds = cat.holds.list()
        assert len(holds) == 1 and holds[0].placed_by == "key:central"
        release = _signed(key, "release", {"hold_id": holds[0].id, "reason": "closed"})
        _publish(broker, "release", release)
        rel_id = json.loads(release)["id"]
        assert _results(sub, rel_id, ("done", "failed"))[-1]["state"] == "done"
        assert cat.holds.list() == []
        assert AuditLog(cat).verify().ok
    finally:
        cat.close()


def test_signed_erase_end_to_end_with_response_topic(
    setup: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    rec = setup["recording"]
    sub, broker, tmp = setup["sub"], setup["broker"], setup["tmp"]
    args = [
        "ref=DSR-7",
        "location=gate",
        f"start={iso(rec.start - timedelta(seconds=1))}",
        f"end={iso(rec.end + timedelta(seconds=1))}",
    ]
    code = cli_main(
        ["command", "sign", "--key", str(tmp / "keys" / "central.key"), "--device", "gw-1",
         "--name", "erase", "--ttl", "10m", "--args", *args]
    )  # fmt: skip
    assert code == 0
    payload = capsys.readouterr().out.strip()
    cmd_id = json.loads(payload)["id"]
    props = Properties(PacketTypes.PUBLISH)
    props.ResponseTopic = f"{ROOT}/reply/backend"
    props.CorrelationData = b"corr-42"
    replies: list[paho.MQTTMessage] = []
    backend = paho.Client(CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5)
    backend.on_message = lambda _c, _u, m: replies.append(m)
    backend.connect("127.0.0.1", broker.port)
    backend.subscribe(f"{ROOT}/reply/backend", 1)
    backend.loop_start()
    try:
        time.sleep(0.2)
        backend.publish(f"{ROOT}/cmd/erase", payload, qos=1, properties=props).wait_for_publish(5)
        got = _results(sub, cmd_id, ("done", "failed"))
        assert [r["state"] for r in got] == ["accepted", "done"], got
        receipt = got[-1]["result"]
        assert receipt["status"] == "done" and receipt["touched_count"] == 1
        deadline = time.monotonic() + 5
        while len(replies) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert [json.loads(m.payload)["state"] for m in replies] == ["accepted", "done"]
        assert all(m.properties.CorrelationData == b"corr-42" for m in replies)
    finally:
        backend.loop_stop()
        backend.disconnect()
    assert not (setup["cfg"].storage.root / rec.path).exists()
    cat = Catalog.open(
        setup["cfg"].storage.catalog, device_id="gw-1", storage_root=setup["cfg"].storage.root
    )
    try:
        row = cat.recordings.get(rec.id)
        assert row is not None and row.state is RecState.DELETED
        actions = [e["action"] for e in AuditLog(cat).export()]
        assert "command.accepted" in actions
    finally:
        cat.close()
    # The deletion was also reported as an event, through the outbox.
    sub.wait_for(
        f"{ROOT}/events",
        lambda g: any(e["type"] == "recording.deleted" and e.get("id") for e in g),
    )


def test_an_unsigned_status_cannot_burn_the_id_of_a_signed_command(setup: dict[str, Any]) -> None:
    """Issue 12, item 11a: only authenticated commands enter the replay memory."""
    key, sub, broker = setup["key"], setup["sub"], setup["broker"]
    unsigned = json.loads(_signed(key, "status", {}, cmd_id="predictable-1"))
    del unsigned["sig"], unsigned["key_id"]
    _publish(broker, "status", json.dumps(unsigned))
    assert _results(sub, "predictable-1", ("done",))[-1]["state"] == "done"
    _publish(broker, "status", _signed(key, "status", {}, cmd_id="predictable-1"))
    got = sub.wait_for(
        f"{ROOT}/cmd-result/predictable-1",
        lambda g: [r["state"] for r in g].count("done") >= 2 or "rejected" in str(g),
    )
    assert [r["state"] for r in got] == ["accepted", "done", "accepted", "done"], got


def test_a_response_topic_outside_the_reply_prefix_is_refused(setup: dict[str, Any]) -> None:
    """Issue 12, item 3: replies cannot be steered onto the device's own topics."""
    key, sub, broker = setup["key"], setup["sub"], setup["broker"]
    for i, topic in enumerate([f"{ROOT}/events", "foo/#", f"{ROOT}/reply/" + "x" * 300]):
        props = Properties(PacketTypes.PUBLISH)
        props.ResponseTopic = topic
        props.CorrelationData = b"c"
        _publish(broker, "status", _signed(key, "status", {}, cmd_id=f"steer-{i}"), props)
        got = _results(sub, f"steer-{i}", ("done",))
        assert [r["state"] for r in got] == ["accepted", "done"]
        assert got[0]["detail"].startswith("response topic refused"), got[0]
    assert not [
        e for e in sub.payloads(f"{ROOT}/events") if str(e.get("id", "")).startswith("steer")
    ]
    assert not [e for e in sub.payloads(f"{ROOT}/events") if e.get("state") in ("accepted", "done")]


def test_poison_messages_never_block_the_signed_channel(setup: dict[str, Any]) -> None:
    """Issue 12, item 2: 40 messages that once escaped validation (deep nesting, huge,
    not UTF-8), more than the broker's in-flight window; a signed command still
    gets its answer, and the audit gains a bounded number of entries."""
    key, sub, broker = setup["key"], setup["sub"], setup["broker"]
    cfg = setup["cfg"]
    cat = Catalog.open(cfg.storage.catalog, device_id="gw-1", storage_root=cfg.storage.root)
    try:
        before = AuditLog(cat).head()[0]
    finally:
        cat.close()
    deep = [b"[" * 10_000, b'{"a":' * 3000, b'[{"a":' * 2000]
    poison = [*deep, b"\xff" * 100, *deep, b"x" * 200_000]
    c = paho.Client(CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5)
    c.connect("127.0.0.1", broker.port)
    c.loop_start()
    try:
        for i in range(40):
            c.publish(f"{ROOT}/cmd/erase", poison[i % len(poison)], qos=1)
        c.publish(f"{ROOT}/cmd/x", b"[" * 10_000, qos=1).wait_for_publish(10)
    finally:
        c.loop_stop()
        c.disconnect()
    _publish(broker, "status", _signed(key, "status", {}, cmd_id="after-poison"))
    assert _results(sub, "after-poison", ("done",))[-1]["state"] == "done"
    cat = Catalog.open(cfg.storage.catalog, device_id="gw-1", storage_root=cfg.storage.root)
    try:
        new = [e for e in AuditLog(cat).export() if e["seq"] > before]
    finally:
        cat.close()
    rejected = [e for e in new if e["action"] == "command.rejected"]
    # At most the window's burst gets a record each; the rest are counted for a summary.
    assert 1 <= len(rejected) <= 20, len(rejected)
    assert {e["data"]["reason"] for e in rejected} <= {"malformed", "too_large"}
    assert all(len(json.dumps(e["data"])) < 400 for e in rejected)
    assert setup["agent"].poll() is None


def test_signed_erase_of_a_location_removed_from_the_config(setup: dict[str, Any]) -> None:
    """Footage of a decommissioned room can still be erased by place and time."""
    cfg, key, sub, broker = setup["cfg"], setup["key"], setup["sub"], setup["broker"]
    from edge_agent.core.model import Site
    from edge_agent.intake.intake import Origin

    cat = Catalog.open(cfg.storage.catalog, device_id="gw-1", storage_root=cfg.storage.root)
    try:
        clip = make_video(setup["tmp"] / "old-lab.mp4", seconds=0.5)
        origin = Origin("old-lab", Site.PREMISES, False, True, Purpose.RND)
        res = Intake(cat, intake_settings(cfg)).adopt(clip, origin, utcnow())
        assert res.recording is not None, res
    finally:
        cat.close()
    args = {
        "ref": "DSR-old-lab",
        "location": "old-lab",
        "start": iso(utcnow() - timedelta(hours=1)),
        "end": iso(utcnow() + timedelta(minutes=1)),
        "dry_run": True,
    }
    _publish(broker, "erase", _signed(key, "erase", args, cmd_id="e-old-lab"))
    final = _results(sub, "e-old-lab", ("done", "failed"))[-1]
    assert final["state"] == "done", final
    assert [m["id"] for m in final["result"]["matched"]] == [res.recording.id]
    args["location"] = "never-configured"
    _publish(broker, "erase", _signed(key, "erase", args, cmd_id="e-nowhere"))
    final = _results(sub, "e-nowhere", ("done", "failed"))[-1]
    assert final["state"] == "failed" and "unknown location" in final["reason"]
