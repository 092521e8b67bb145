"""``recordings list`` and ``audit verify|export`` through the real command line."""

from __future__ import annotations

import json
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from edge_agent.core.model import Purpose, Recording, RecState, Site, Tags, TimeSource
from edge_agent.store.audit import AuditLog
from edge_agent.store.catalog import Catalog
from tests.support.cli import CliRunner

T0 = datetime(2024, 3, 1, 12, 0, 0, tzinfo=UTC)


def write_config(tmp_path: Path, device: str = "gw-test") -> Path:
    cfg = tmp_path / "config.toml"
    cfg.write_text(
        f"""
[device]
id = "{device}"
hw_profile = "generic-linux"

[storage]
root = "{tmp_path / "rec"}"
catalog = "{tmp_path / "catalog.db"}"
""",
        encoding="utf-8",
    )
    return cfg


def open_cat(tmp_path: Path) -> Catalog:
    return Catalog.open(tmp_path / "catalog.db", device_id="gw-test", storage_root=tmp_path / "rec")


def rec(n: int, *, location: str, purpose: Purpose, state: RecState = RecState.ACTIVE) -> Recording:
    start = T0 + timedelta(hours=n)
    return Recording(
        id=f"id{n}",
        path=f"{location}/{n}.mp4",
        tags=Tags(
            location,
            purpose,
            Site.PREMISES,
            False,
            False,
            start,
            start + timedelta(seconds=60),
            TimeSource.RECORDER,
            "gw-test",
        ),
        size=2048,
        sha256=f"{n:064x}",
        state=state,
        deadline=start + timedelta(days=3),
    )


@pytest.fixture
def empty(tmp_path: Path) -> Path:
    cfg = write_config(tmp_path)
    open_cat(tmp_path).close()
    return cfg


def test_empty_catalog_list_json_and_verify(empty: Path, cli: CliRunner) -> None:
    out = cli("recordings", "list", "--config", str(empty), "--json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == []
    out = cli("audit", "verify", "--config", str(empty))
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "audit OK: 0 entries"


def test_list_filters_and_restricted(tmp_path: Path, empty: Path, cli: CliRunner) -> None:
    cat = open_cat(tmp_path)
    cat.recordings.add_many(
        [
            rec(1, location="gate", purpose=Purpose.SECURITY),
            rec(2, location="lab", purpose=Purpose.RND),
            rec(3, location="gate", purpose=Purpose.SECURITY, state=RecState.RESTRICTED),
            rec(4, location="gate", purpose=Purpose.SECURITY, state=RecState.DELETED),
        ]
    )
    cat.close()

    def ids(*extra: str) -> list[str]:
        out = cli("recordings", "list", "--config", str(empty), "--json", *extra)
        assert out.returncode == 0, out.stderr
        return [d["id"] for d in json.loads(out.stdout)]

    assert ids() == ["id1", "id2"]
    assert ids("--include-restricted") == ["id1", "id2", "id3"]
    assert ids("--location", "gate", "--include-restricted") == ["id1", "id3"]
    assert ids("--purpose", "rnd") == ["id2"]
    assert ids("--state", "deleted", "--state", "restricted") == ["id3", "id4"]
    assert ids("--since", "2024-03-01T13:30:00Z") == ["id2"]
    assert ids("--until", "2024-03-01T13:00:30Z") == ["id1"]

    out = cli("recordings", "list", "--config", str(empty), "--json", "--purpose", "rnd")
    doc = json.loads(out.stdout)[0]
    assert doc["start"] == "2024-03-01T14:00:00Z"
    assert doc["deadline"] == "2024-03-04T14:00:00Z"
    assert doc["purpose"] == "rnd" and doc["audio"] is False and doc["size"] == 2048

    table = cli("recordings", "list", "--config", str(empty))
    assert table.returncode == 0
    assert "LOCATION" in table.stdout and "lab/2.mp4" in table.stdout
    assert "2 recording(s)" in table.stdout


def test_bad_input_exits_2(tmp_path: Path, empty: Path, cli: CliRunner) -> None:
    out = cli("recordings", "list", "--config", str(empty), "--since", "yesterday")
    assert out.returncode == 2
    assert "not an ISO 8601 time" in out.stderr
    out = cli(
        "recordings", "list", "--config", str(empty),
        "--since", "2024-03-02T00:00:00Z", "--until", "2024-03-01T00:00:00Z",
    )  # fmt: skip
    assert out.returncode == 2 and "swap them" in out.stderr
    bad = tmp_path / "bad.toml"
    bad.write_text('[device]\nid = "Bad Id"\nhw_profile = "generic-linux"\n')
    out = cli("audit", "verify", "--config", str(bad))
    assert out.returncode == 2
    assert out.stdout == ""
    assert "device.id" in out.stderr


def test_missing_catalog_and_wrong_disk_exit_1(tmp_path: Path, cli: CliRunner) -> None:
    cfg = write_config(tmp_path)
    out = cli("recordings", "list", "--config", str(cfg), "--json")
    assert out.returncode == 1 and "no catalog at" in out.stderr and out.stdout == ""
    assert not (tmp_path / "catalog.db").exists()
    cat = open_cat(tmp_path)
    cat.recordings.add(rec(1, location="gate", purpose=Purpose.SECURITY))
    cat.close()
    (tmp_path / "rec" / ".edge-agent-storage").unlink()
    out = cli("recordings", "list", "--config", str(cfg))
    assert out.returncode == 1 and "not mounted" in out.stderr


def test_audit_verify_names_bad_entry_and_export(
    tmp_path: Path, empty: Path, cli: CliRunner
) -> None:
    cat = open_cat(tmp_path)
    log = AuditLog(cat)
    for i in range(1, 6):
        log.append(
            "hold.placed",
            actor="cli-test",
            subject=f"h{i}",
            data={"i": i},
            ts=T0 + timedelta(days=i),
        )
    cat.close()

    out = cli("audit", "export", "--config", str(empty), "--since", "2024-03-04T00:00:00Z")
    assert out.returncode == 0, out.stderr
    lines = [json.loads(line) for line in out.stdout.splitlines()]
    assert [e["seq"] for e in lines] == [3, 4, 5]
    assert set(lines[0]) == {"seq", "ts", "actor", "action", "subject", "data", "prev_hash", "hash"}

    assert cli("audit", "verify", "--config", str(empty)).stdout.strip() == "audit OK: 5 entries"
    conn = sqlite3.connect(str(tmp_path / "catalog.db"))
    conn.execute("UPDATE audit SET subject = 'forged' WHERE seq = 3")
    conn.commit()
    conn.close()
    out = cli("audit", "verify", "--config", str(empty))
    assert out.returncode == 1
    assert "audit FAILED at entry 3" in out.stdout
    out = cli("audit", "verify", "--config", str(empty), "--json")
    assert out.returncode == 1
    doc = json.loads(out.stdout)
    assert doc["ok"] is False and doc["first_bad_seq"] == 3 and doc["entries"] == 2
