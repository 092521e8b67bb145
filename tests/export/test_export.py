"""``edge-agent export`` and ``export verify`` over real media, a real catalog, the real CLI."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest

from edge_agent.core.model import Purpose, RecState, Site
from edge_agent.export.writer import ExportError, ExportWriter
from edge_agent.intake.intake import Intake, Origin
from edge_agent.store.audit import AuditLog
from edge_agent.store.exports import count_exports
from tests.support.cli import CliRunner
from tests.support.cli import run_cli as run
from tests.support.exportenv import NOW, REPO, T0, Device, at, make_device
from tests.support.mediagen import make_video
from tests.support.tmpfs import mounted_tmpfs

HD = (1280, 720)  # ~1.2 MB a second: big enough to fill a 1 MiB disk and to be killed
WINDOW = ("--from", at(-1), "--to", at(60))


def export(
    dev: Device, out: Path, *extra: str, location: str = "gate"
) -> subprocess.CompletedProcess[str]:
    return run(
        "export", "--config", str(dev.config), "--location", location, *WINDOW,
        "--request-ref", "DSR-7", "--reason", "subject access request",
        "--out", str(out), *extra,
    )  # fmt: skip


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def flip_byte(path: Path, offset: int) -> None:
    with path.open("r+b") as fh:
        fh.seek(offset)
        b = fh.read(1)
        fh.seek(offset)
        fh.write(bytes([b[0] ^ 0x01]))


@pytest.fixture
def dev(tmp_path: Path) -> Device:
    d = make_device(tmp_path / "dev")
    d.adopt("a", minute=0)
    d.adopt("b", minute=5)
    d.adopt("m", minute=10, purpose=Purpose.MARKETING)
    d.adopt("anon", minute=15, purpose=Purpose.MARKETING, anonymized=True)
    return d


@pytest.mark.parametrize("name", ["out", "out.tar"])
def test_exported_bytes_match_the_catalog_and_verify(
    dev: Device, tmp_path: Path, name: str, cli: CliRunner
) -> None:
    out = tmp_path / name
    res = export(dev, out, "--json")
    assert res.returncode == 0, res.stderr
    receipt = json.loads(res.stdout)
    assert receipt["status"] == "done" and receipt["file_count"] == 3
    assert receipt["left_out"] == {"marketing_original": 1}

    cat = dev.open()
    try:
        catalogued = {r.id: r for r in cat.recordings.list(location="gate")}
        entries = AuditLog(cat).export()
        audits = [e for e in entries if e["action"] == "export.created"]
        events = cat.query("SELECT payload FROM outbox WHERE type = 'export.created'")
        assert AuditLog(cat).verify().ok
        # Telemetry counts exports (comms/telemetry.py reads this).
        assert count_exports(cat) == 1
    finally:
        cat.close()

    if name.endswith(".tar"):
        with tarfile.open(out) as tar:
            tar.extractall(tmp_path / "x", filter="data")
        tree = tmp_path / "x"
    else:
        tree = out
    manifest = json.loads((tree / "manifest.json").read_text())
    assert manifest["device"] == "gw-test" and manifest["request_ref"] == "DSR-7"
    assert manifest["reason"] == "subject access request"
    assert manifest["run_by"]["uid"] == os.getuid()
    for entry in manifest["files"]:
        rec = catalogued[entry["id"]]
        assert sha256(tree / entry["name"]) == rec.sha256 == entry["sha256"]
        assert (tree / entry["name"]).stat().st_size == rec.size == entry["size"]
        # The deadline travels with the footage (anonymized material has none by default).
        assert (entry["deadline"] is None) == rec.tags.anonymized
        assert entry["tags"]["location"] == "gate"
    assert {e["id"] for e in manifest["files"]} == {
        r.id for r in catalogued.values() if r.tags.anonymized or r.tags.purpose != "marketing"
    }

    assert len(audits) == 1 and len(events) == 1
    assert audits[0]["data"]["manifest_sha256"] == sha256(tree / "manifest.json")
    assert audits[0]["data"]["manifest_sha256"] == receipt["manifest_sha256"]
    event = json.loads(events[0][0])
    assert event["manifest_sha256"] == receipt["manifest_sha256"]
    assert "reason" not in event and "out" not in event

    ok = cli("export", "verify", str(out), "--json")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert json.loads(ok.stdout)["files"] == 3
    pinned = cli("export", "verify", str(out), "--key", str(dev.root / "state/device-signing.pub"))
    assert pinned.returncode == 0, pinned.stdout


def test_verify_fails_after_one_byte_changes(dev: Device, tmp_path: Path, cli: CliRunner) -> None:
    out = tmp_path / "out"
    assert export(dev, out).returncode == 0
    media = sorted((out / "files").iterdir())[0]
    flip_byte(media, media.stat().st_size // 2)
    bad = cli("export", "verify", str(out))
    assert bad.returncode == 1 and "SHA-256" in bad.stdout, bad.stdout
    flip_byte(media, media.stat().st_size // 2)
    assert cli("export", "verify", str(out)).returncode == 0

    manifest = out / "manifest.json"
    text = manifest.read_text()
    manifest.write_text(text.replace('"subject access request"', '"subject access requesT"'))
    bad = cli("export", "verify", str(out))
    assert bad.returncode == 1 and "does not match manifest.json" in bad.stdout, bad.stdout
    manifest.write_text(text)

    (out / "files" / "extra.mkv").write_bytes(b"x")
    bad = cli("export", "verify", str(out))
    assert bad.returncode == 1 and "not in the manifest" in bad.stdout
    (out / "files" / "extra.mkv").unlink()

    other = tmp_path / "other"
    assert cli("keys", "generate", "--out", str(other), "--name", "k").returncode == 0
    bad = cli("export", "verify", str(out), "--key", str(other / "k.pub"))
    assert bad.returncode == 1 and "not by --key" in bad.stdout

    assert cli("export", "verify", str(tmp_path / "nothing")).returncode == 2
    (tmp_path / "junk.tar").write_bytes(b"not a tar" * 100)
    assert cli("export", "verify", str(tmp_path / "junk.tar")).returncode == 2


def test_a_changed_byte_inside_a_tar_fails(dev: Device, tmp_path: Path, cli: CliRunner) -> None:
    out = tmp_path / "out.tar"
    assert export(dev, out).returncode == 0
    with tarfile.open(out) as tar:
        member = next(m for m in tar.getmembers() if m.name.startswith("files/"))
        manifest = tar.getmember("manifest.json")
    flip_byte(out, member.offset_data + 100)
    bad = cli("export", "verify", str(out))
    assert bad.returncode == 1 and member.name in bad.stdout
    flip_byte(out, member.offset_data + 100)
    flip_byte(out, manifest.offset_data + 40)
    assert cli("export", "verify", str(out)).returncode == 1


def test_restricted_recordings_never_appear(dev: Device, tmp_path: Path, cli: CliRunner) -> None:
    restricted = cli(
        "erase", "--config", str(dev.config), "--location", "gate",
        "--from", at(4), "--to", at(6), "--request-ref", "DSR-1", "--restrict",
    )  # fmt: skip
    assert restricted.returncode == 0, restricted.stderr
    cat = dev.open()
    gone = {r.id for r in cat.recordings.list(states=(RecState.RESTRICTED,))}
    cat.close()
    assert len(gone) == 1
    out = tmp_path / "out.tar"
    res = export(dev, out, "--json")
    assert res.returncode == 0, res.stderr
    receipt = json.loads(res.stdout)
    assert receipt["left_out"]["restricted"] == 1
    with tarfile.open(out) as tar:
        names = " ".join(tar.getnames())
        manifest = tar.extractfile("manifest.json").read().decode()  # type: ignore[union-attr]
    for rid in gone:
        assert rid not in names and rid not in manifest and rid not in res.stdout


def test_marketing_without_derivatives_exports_nothing_and_says_why(tmp_path: Path) -> None:
    dev = make_device(tmp_path / "dev")
    dev.adopt("m", minute=0, purpose=Purpose.MARKETING)
    out = tmp_path / "out"
    res = export(dev, out, "--purpose", "marketing")
    assert res.returncode == 1
    assert "anonymized derivatives only" in res.stdout and "nothing was written" in res.stdout
    assert not out.exists() and not [p for p in tmp_path.iterdir() if "partial" in p.name]
    cat = dev.open()
    assert not [e for e in AuditLog(cat).export() if e["action"] == "export.created"]
    cat.close()
    # The config may allow originals.
    allowed = make_device(tmp_path / "dev2", marketing_originals=True)
    allowed.adopt("m", minute=0, purpose=Purpose.MARKETING)
    assert export(allowed, tmp_path / "out2", "--purpose", "marketing").returncode == 0


def test_dry_run_writes_nothing_and_existing_target_is_refused(dev: Device, tmp_path: Path) -> None:
    out = tmp_path / "out"
    res = export(dev, out, "--dry-run", "--json")
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["status"] == "dry_run" and not out.exists()
    out.mkdir()
    res = export(dev, out)
    assert res.returncode == 1 and "already exists" in res.stderr
    assert list(out.iterdir()) == []


def test_audio_outside_an_audio_room_is_refused(tmp_path: Path) -> None:
    dev = make_device(tmp_path / "dev")
    src = tmp_path / "lab.mov"
    make_video(src, container="mov", seconds=0.5, audio="aac", creation_time=T0)
    cat = dev.open()
    origin = Origin("lab", Site.PREMISES, True, True, Purpose.RND)
    res = Intake(cat, dev.settings()).adopt(src, origin, NOW)
    cat.close()
    assert res.recording is not None and res.recording.tags.audio
    out = tmp_path / "out"
    ok = export(dev, out, location="lab")
    assert ok.returncode == 0, ok.stderr
    # The room loses its audio flag: its footage with sound may no longer leave.
    text = dev.config.read_text().replace("audio_room = true\nsignage = true\n", "")
    dev.config.write_text(text)
    refused = export(dev, tmp_path / "out2", location="lab")
    assert refused.returncode == 1 and "audio" in refused.stderr, refused.stderr
    assert not (tmp_path / "out2").exists()


def test_sigkill_during_an_export_leaves_no_complete_looking_export(
    tmp_path: Path, cli: CliRunner
) -> None:
    dev = make_device(tmp_path / "dev")
    for i in range(6):
        dev.adopt(f"big{i}", minute=i, seconds=2.0, bit_rate=20_000_000, size=HD)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    outcomes = []
    for n, delay in enumerate((0.0, 0.002, 0.01, 0.03, 0.08)):
        out = tmp_path / f"out{n}.tar" if n % 2 else tmp_path / f"out{n}"
        proc = subprocess.Popen(
            [sys.executable, "-m", "edge_agent", "export", "--config", str(dev.config),
             "--location", "gate", *WINDOW, "--request-ref", "K", "--reason", "kill test",
             "--out", str(out)],
            env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        partial = tmp_path / f".{out.name}.partial-{proc.pid}"
        deadline = time.monotonic() + 60
        while not partial.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.0005)
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        if out.exists():
            # Finished before the kill: then it is whole.
            assert cli("export", "verify", str(out)).returncode == 0
            outcomes.append(("complete", out))
            continue
        outcomes.append(("partial", out))
        # What is left has a partial name, and nothing at the real name.
        assert not out.exists()
        leftovers = [p.name for p in tmp_path.iterdir() if p.name.startswith(f".{out.name}.")]
        assert all(".partial-" in name for name in leftovers)
    killed = [out for what, out in outcomes if what == "partial"]
    assert killed, outcomes
    # A later export to the same name is not fooled by what a killed one left.
    res = export(dev, killed[0])
    assert res.returncode == 0, res.stderr
    assert cli("export", "verify", str(killed[0])).returncode == 0


def test_a_1mib_tmpfs_target_fails_cleanly(tmp_path: Path) -> None:
    big = make_device(tmp_path / "big")
    for i in range(3):
        big.adopt(f"b{i}", minute=i, seconds=1.0, bit_rate=20_000_000, size=HD)
    with mounted_tmpfs(tmp_path / "usb", "1m") as usb:
        res = export(big, usb / "out.tar")
        assert res.returncode == 1
        assert "not enough space" in res.stderr and "nothing was written" in res.stderr
        assert list(usb.iterdir()) == []
        # Past the up-front check (a disk filling meanwhile): ENOSPC mid-copy.
        cat = big.open()
        recs = cat.recordings.list(location="gate")
        cat.close()
        for name in ("out", "out.tar"):
            w = ExportWriter(usb / name)
            w.begin(0)
            items = [(f"files/{i}.mkv", big.storage / r.path, r.size) for i, r in enumerate(recs)]
            with pytest.raises(ExportError, match="not enough space"):
                w.add_files(items, lambda n: None)
            assert list(usb.iterdir()) == []


def test_provisioning_makes_the_signing_key_once(tmp_path: Path, cli: CliRunner) -> None:
    state = tmp_path / "state"
    state.mkdir()
    flags = [
        "provision", "--profile", "generic-linux", "--device-id", "gw-key",
        "--location", "gate:premises:signage", "--storage-root", str(tmp_path / "rec"),
        "--catalog", str(state / "catalog.db"), "--out", str(tmp_path / "config.toml"),
    ]  # fmt: skip
    first = cli(*flags)
    assert first.returncode == 0, first.stderr
    key = state / "device-signing.key"
    assert "wrote a new signing key" in first.stdout
    assert key.stat().st_mode & 0o777 == 0o600
    assert (state / "device-signing.pub").is_file()
    before = key.read_bytes()
    again = cli(*flags, "--force")
    assert again.returncode == 0 and "kept the existing signing key" in again.stdout
    assert key.read_bytes() == before
    assert "PRIVATE" not in first.stdout + first.stderr + again.stdout + again.stderr


def test_progress_is_shown_on_a_terminal_only(dev: Device, tmp_path: Path) -> None:
    import pty

    master, slave = pty.openpty()
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "edge_agent", "export", "--config", str(dev.config),
             "--location", "gate", *WINDOW, "--request-ref", "P", "--reason", "progress",
             "--out", str(tmp_path / "tty")],
            env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=slave, timeout=120, check=False,
        )  # fmt: skip
        os.close(slave)
        shown = b""
        while True:
            try:
                chunk = os.read(master, 4096)
            except OSError:
                break
            if not chunk:
                break
            shown += chunk
    finally:
        os.close(master)
    assert proc.returncode == 0
    assert b"export: 3 files" in shown and b"(100%)" in shown
    piped = export(dev, tmp_path / "piped")
    assert piped.returncode == 0 and piped.stderr == ""
