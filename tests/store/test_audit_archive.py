"""Sealing old audit entries and tombstones into archives (docs/storage.md).

Real catalog, real gzip files, and the real command line for verify, export and seal.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from edge_agent.store.audit import AuditLog
from edge_agent.store.audit_archive import (
    SEALED_ACTION,
    AuditArchiver,
    archive_dir,
    list_archives,
    sealed_point,
)
from edge_agent.store.catalog import Catalog
from tests.support.cli import CliRunner

T0 = datetime(2024, 3, 1, 0, 0, 0, tzinfo=UTC)
HOURS = 40


def add_tombstone(cat: Catalog, n: int, deleted_at: datetime) -> None:
    # Plain SQL: the tombstone is a recordings row in state 'deleted', whatever
    # API the catalog offers for adding recordings.
    start = (deleted_at - timedelta(days=1)).timestamp()
    cat.execute(
        "INSERT INTO recordings (id, path, location, purpose, site, audio, anonymized, "
        'start, "end", start_iso, time_source, device, policy_version, size, sha256, '
        "state, added_at, deleted_at, delete_reason, updated_at) VALUES "
        "(?, ?, 'gate', 'security', 'premises', 0, 0, ?, ?, '', 'recorder', 'gw-test', "
        "'1', 1000, ?, 'deleted', ?, ?, 'retention', ?)",
        (
            f"t{n}",
            f"gate/{n}.mp4",
            start,
            start + 60,
            f"{n:064x}",
            start,
            deleted_at.timestamp(),
            deleted_at.timestamp(),
        ),
    )


def fill(cat: Catalog, hours: range) -> None:
    log = AuditLog(cat)
    for h in hours:
        at = T0 + timedelta(hours=h)
        add_tombstone(cat, h, at)
        log.append("recording.deleted", actor="janitor", subject=f"t{h}", data={"h": h}, ts=at)


@pytest.fixture
def cat(tmp_path: Path) -> Iterator[Catalog]:
    c = Catalog.open(tmp_path / "catalog.db", device_id="gw-test", storage_root=tmp_path / "rec")
    fill(c, range(HOURS))
    yield c
    c.close()


def live_seqs(cat: Catalog) -> list[int]:
    return [int(r[0]) for r in cat.query("SELECT seq FROM audit ORDER BY seq")]


def tombstones(cat: Catalog) -> list[str]:
    return [r[0] for r in cat.query("SELECT id FROM recordings WHERE state='deleted' ORDER BY id")]


def seal(cat: Catalog, hours: int) -> Any:
    cutoff = T0 + timedelta(hours=hours)
    return AuditArchiver(cat).seal(cutoff + timedelta(days=30), cutoff)


def test_seal_moves_old_entries_and_tombstones(cat: Catalog) -> None:
    before = list(AuditLog(cat).export())
    res = seal(cat, 10)
    assert (res.archives, res.entries, res.tombstones) == (1, 10, 10)
    # The live chain starts after the sealed prefix and a seal entry anchors the file.
    assert live_seqs(cat) == list(range(11, HOURS + 2))
    assert sealed_point(cat) == (10, before[9]["hash"])
    assert len(tombstones(cat)) == HOURS - 10
    [(first, last, path)] = list_archives(archive_dir(cat.path))
    assert (first, last, path.name) == (1, 10, "audit-000000000001-000000000010.jsonl.gz")
    # Export reads both, unchanged, in one sequence.
    after = list(AuditLog(cat).export())
    assert after[:HOURS] == before
    assert after[-1]["action"] == SEALED_ACTION
    assert after[-1]["data"]["file"] == path.name
    assert AuditLog(cat).verify().ok
    assert AuditLog(cat).verify().entries == HOURS + 1
    # since= filters across archive and live rows alike.
    since = [e["seq"] for e in AuditLog(cat).export(T0 + timedelta(hours=5))]
    assert since[0] == 6
    # Nothing old left to seal: a second pass is a no-op.
    assert seal(cat, 10).archives == 0


def test_several_archives_and_live_chain_verify(cat: Catalog) -> None:
    archiver = AuditArchiver(cat, max_entries=7)
    cutoff = T0 + timedelta(hours=30)
    res = archiver.seal(cutoff, cutoff)
    assert res.archives == 5 and res.entries == 30
    assert len(list_archives(archive_dir(cat.path))) == 5
    fill(cat, range(HOURS, HOURS + 5))
    v = AuditLog(cat).verify()
    assert v.ok, v.reason
    assert v.entries == HOURS + 5 + 5
    # The quick check reads the newest archive only, and still sees it altered.
    v = AuditLog(cat).verify(newest_archive_only=True)
    assert v.ok and v.entries == HOURS + 5 + 5, v.reason
    files = list_archives(archive_dir(cat.path))
    files[0][2].write_bytes(b"junk")
    assert AuditLog(cat).verify(newest_archive_only=True).ok
    assert not AuditLog(cat).verify().ok
    newest = files[-1][2]
    newest.write_bytes(gzip.compress(gzip.decompress(newest.read_bytes()), compresslevel=1))
    v = AuditLog(cat).verify(newest_archive_only=True)
    assert not v.ok and "SHA-256" in (v.reason or "")


def test_freed_pages_reused_or_given_back_once_converted(cat: Catalog) -> None:
    # Without incremental vacuum the daemon leaves the freed pages for reuse ...
    assert seal(cat, 20).archives == 1
    assert int(cat.query("PRAGMA auto_vacuum")[0][0]) == 0
    # ... until asked to convert (audit seal --vacuum): then they go back to the disk.
    pages = int(cat.query("PRAGMA page_count")[0][0])
    res = AuditArchiver(cat).seal(T0 + timedelta(days=30), T0 + timedelta(hours=35), convert=True)
    assert res.archives == 1 and int(cat.query("PRAGMA auto_vacuum")[0][0]) == 2
    assert int(cat.query("PRAGMA page_count")[0][0]) < pages
    assert AuditLog(cat).verify().ok


def test_one_flipped_byte_in_an_archive_is_found(cat: Catalog) -> None:
    seal(cat, 20)
    [(_, _, path)] = list_archives(archive_dir(cat.path))
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    v = AuditLog(cat).verify()
    assert not v.ok
    assert path.name in (v.reason or "")


def test_recompressed_edit_of_a_tombstone_is_found(cat: Catalog) -> None:
    # A careful forger edits a tombstone and re-compresses: every entry hash still
    # holds, but the file's SHA-256 in the audit.sealed entry does not.
    seal(cat, 20)
    [(_, _, path)] = list_archives(archive_dir(cat.path))
    text = gzip.decompress(path.read_bytes()).decode()
    path.write_bytes(gzip.compress(text.replace('"retention"', '"consent"', 1).encode()))
    v = AuditLog(cat).verify()
    assert not v.ok
    assert "SHA-256" in (v.reason or "")


def test_removed_archive_is_found(cat: Catalog) -> None:
    AuditArchiver(cat, max_entries=5).seal(T0, T0 + timedelta(hours=15))
    files = list_archives(archive_dir(cat.path))
    assert len(files) == 3
    files[1][2].unlink()
    v = AuditLog(cat).verify()
    assert not v.ok and v.first_bad_seq == 6
    files[0][2].unlink()
    files[2][2].unlink()
    v = AuditLog(cat).verify()
    assert not v.ok and "no archive holds them" in (v.reason or "")


def test_crash_between_archive_and_delete_loses_nothing(
    cat: Catalog, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = list(AuditLog(cat).export())
    tombs = tombstones(cat)

    def crash(*_: object, **__: object) -> None:
        raise OSError("power cut")

    monkeypatch.setattr(AuditArchiver, "_apply", crash)
    with pytest.raises(OSError):
        seal(cat, 10)
    monkeypatch.undo()
    # The file is there, the rows are too, and the log reads as before.
    assert len(list_archives(archive_dir(cat.path))) == 1
    assert live_seqs(cat) == list(range(1, HOURS + 1))
    assert tombstones(cat) == tombs
    assert list(AuditLog(cat).export()) == before
    assert AuditLog(cat).verify().ok
    # The next seal completes the interrupted one from the file.
    res = seal(cat, 10)
    assert res.completed_pending == 1 and res.archives == 0
    assert live_seqs(cat)[0] == 11
    v = AuditLog(cat).verify()
    assert v.ok, v.reason
    assert list(AuditLog(cat).export())[:HOURS] == before


def test_pending_archive_that_does_not_fit_is_set_aside(
    cat: Catalog, monkeypatch: pytest.MonkeyPatch
) -> None:
    def crash(*_: object, **__: object) -> None:
        raise OSError("power cut")

    monkeypatch.setattr(AuditArchiver, "_apply", crash)
    with pytest.raises(OSError):
        seal(cat, 10)
    monkeypatch.undo()
    [(_, _, path)] = list_archives(archive_dir(cat.path))
    path.write_bytes(b"not gzip")
    res = seal(cat, 10)
    assert res.completed_pending == 0 and res.archives == 1
    assert path.with_name(path.name + ".rejected").exists()
    assert AuditLog(cat).verify().ok


def write_config(tmp_path: Path) -> Path:
    cfg = tmp_path / "config.toml"
    cfg.write_text(
        f"""
[device]
id = "gw-test"
hw_profile = "generic-linux"

[storage]
root = "{tmp_path / "rec"}"
catalog = "{tmp_path / "catalog.db"}"

[retention]
accountability_period = "30d"
""",
        encoding="utf-8",
    )
    return cfg


def test_cli_seal_verify_export(tmp_path: Path, cat: Catalog, cli: CliRunner) -> None:
    # T0 is long past, so everything but nothing newer than 30 days is sealed.
    before = list(AuditLog(cat).export())
    cfg = write_config(tmp_path)
    r = cli("audit", "seal", "--config", str(cfg), "--json", "--vacuum")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["entries"] == HOURS
    assert tombstones(cat) == []
    for quick in ([], ["--quick"]):
        r = cli("audit", "verify", "--config", str(cfg), "--json", *quick)
        assert r.returncode == 0, r.stdout + r.stderr
        assert json.loads(r.stdout)["entries"] == HOURS + 1
    r = cli("audit", "export", "--config", str(cfg))
    assert r.returncode == 0, r.stderr
    exported = [json.loads(line) for line in r.stdout.splitlines()]
    assert exported[:HOURS] == before
    [(_, _, path)] = list_archives(archive_dir(cat.path))
    path.write_bytes(path.read_bytes()[:-9])  # cut off the gzip trailer
    r = cli("audit", "verify", "--config", str(cfg))
    assert r.returncode == 1
    assert "audit FAILED" in r.stdout
    r = cli("audit", "export", "--config", str(cfg))
    assert r.returncode == 1
    assert "damaged" in r.stderr


def test_sealer_waits_for_a_trusted_clock_and_a_period(cat: Catalog) -> None:
    from edge_agent.core.model import Period
    from edge_agent.retention.audit_sealing import AuditSealer

    now = T0 + timedelta(days=31, hours=10)
    trusted = False
    sealer = AuditSealer(
        cat, Period.parse("31d"), now=lambda: now, clock_trusted=lambda: trusted, interval=0.01
    )
    assert sealer.seal_once() is None
    assert live_seqs(cat)[0] == 1
    trusted = True
    res = sealer.seal_once()
    assert res is not None and res.entries == 10  # hours 0..9 are older than 31 days
    assert AuditSealer(cat, None, now=lambda: now, clock_trusted=lambda: True).seal_once() is None


def test_accountability_period_config(tmp_path: Path) -> None:
    from edge_agent.config.config import load_config

    cfg = load_config(write_config(tmp_path))
    assert str(cfg.retention.accountability_period) == "30d"
