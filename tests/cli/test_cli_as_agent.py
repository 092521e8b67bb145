"""Writing commands run as root act as the agent (issue 12 item 8).

The tests run as root; the storage belongs to ``nobody`` (65534) as it would
to ``edge-agent`` on a device. Every command runs as a real subprocess under
umask 000, the worst an admin's shell can have.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from fractions import Fraction
from pathlib import Path

import pytest

from tests.support.mediagen import make_video

AGENT = 65534  # nobody:nogroup
REPO = Path(__file__).resolve().parents[2]


def _agent_python() -> tuple[list[str] | None, str]:
    """A Python the agent's user can read, running this checkout (or why there is none).

    The test's interpreter may live under root's home (pyenv), which the agent's
    user cannot read; the system's CPython of the same minor version can run the
    same packages, if the checkout and its packages are readable by that user
    (not in a 0700 folder such as one from ``mktemp -d``).
    """
    from edge_agent.cli._context import owner_of, unreadable_code

    if unreadable_code(owner_of(AGENT, AGENT)) is None:
        return [sys.executable], ""
    exe = Path(f"/usr/bin/python{sys.version_info.major}.{sys.version_info.minor}")
    if not exe.exists():
        return None, f"no {exe} for the agent's user"
    site_packages = next(p for p in sys.path if p.endswith("site-packages"))
    for needed in (REPO / "edge_agent" / "__init__.py", Path(site_packages) / "av"):
        if not _agent_reads(needed):
            why = f"the agent's user (nobody) cannot read {needed}"
            return None, f"{why}: the checkout or its venv lies in a folder only root may enter"
    return ["env", f"PYTHONPATH={REPO}:{site_packages}", str(exe)], ""


def _agent_reads(path: Path) -> bool:
    def become_agent() -> None:
        os.setgroups([])
        os.setgid(AGENT)
        os.setuid(AGENT)

    res = subprocess.run(["test", "-r", str(path)], preexec_fn=become_agent, check=False)
    return res.returncode == 0


PYTHON, NO_PYTHON = _agent_python() if os.geteuid() == 0 else (None, "not root")

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run commands as root")


@pytest.fixture
def site() -> Iterator[Path]:
    # Not under pytest's tmp_path: that is 0700 root, which nobody cannot traverse.
    base = Path(tempfile.mkdtemp(prefix="edge-as-agent-", dir="/tmp"))
    base.chmod(0o755)
    try:
        for name in ("rec", "state", "drop"):
            (base / name).mkdir(mode=0o750)
            os.chown(base / name, AGENT, AGENT)
        (base / "config.toml").write_text(
            f"""
[device]
id = "gw-as-agent"
hw_profile = "generic-linux"

[storage]
root = "{base / "rec"}"
catalog = "{base / "state" / "catalog.db"}"
quarantine = "{base / "quarantine"}"

[[locations]]
id = "gate"
kind = "premises"
signage = true
"""
        )
        yield base
    finally:
        shutil.rmtree(base)


def cli(
    site: Path, *args: str, python: list[str] | None = None
) -> subprocess.CompletedProcess[str]:
    if python is None:
        if PYTHON is None:
            pytest.skip(f"no Python that the agent's user can run this checkout with: {NO_PYTHON}")
        python = PYTHON
    return subprocess.run(
        [*python, "-m", "edge_agent", *args, "--config", str(site / "config.toml")],
        capture_output=True,
        text=True,
        timeout=60,
        preexec_fn=lambda: os.umask(0),
        check=False,
    )


def _media(site: Path, name: str) -> Path:
    start = datetime.now(UTC) - timedelta(hours=1)
    path = make_video(site / "drop" / name, seconds=1.0, creation_time=start)
    os.chown(path, AGENT, AGENT)
    return path


def assert_agent_owned(site: Path) -> None:
    """Everything under the agent's folders is nobody's, 0640/0750, nothing for others."""
    seen = 0
    for top in ("rec", "state", "quarantine"):
        for dirpath, dirnames, filenames in os.walk(site / top):
            for name in [*dirnames, *filenames, "."]:
                p = Path(dirpath) / name
                st = p.lstat()
                mode = stat.S_IMODE(st.st_mode)
                assert (st.st_uid, st.st_gid) == (AGENT, AGENT), (p, st.st_uid, st.st_gid)
                assert mode & 0o007 == 0, (p, oct(mode))
                if name != "." and stat.S_ISREG(st.st_mode):
                    assert mode == 0o640, (p, oct(mode))
                    seen += 1
                elif name != "." or Path(dirpath) != site / top:
                    assert mode == 0o750, (p, oct(mode))
    assert seen >= 3


def test_writing_commands_as_root_leave_agent_owned_state(site: Path) -> None:
    first = _media(site, "a.mp4")
    out = cli(site, "ingest", "--location", "gate", "--purpose", "security", str(first))
    assert out.returncode == 0, out.stderr
    catalog = site / "state" / "catalog.db"
    for p in (catalog, site / "state" / "catalog.db.audit-head", site / "rec"):
        assert p.exists(), p
    assert_agent_owned(site)

    now = datetime.now(UTC)
    old = [
        "--from",
        (now - timedelta(days=3)).isoformat(),
        "--to",
        (now - timedelta(days=2)).isoformat(),
    ]
    window = ["--from", (now - timedelta(days=1)).isoformat(), "--to", now.isoformat()]
    hold = ["--kind", "incident", "--reason", "test", "--by", "alice"]
    steps = [
        ["hold", "add", "--location", "gate", *old, *hold],
        ["ingest", "--location", "gate", "--purpose", "security", str(_media(site, "b.mp4"))],
        ["erase", "--location", "gate", *window, "--request-ref", "DSR-1"],
        ["ingest", "--location", "gate", "--purpose", "security", str(_media(site, "c.mp4"))],
        ["retention", "sweep"],
        ["reconcile"],
        ["catalog", "rebuild"],
    ]
    for argv in steps:
        out = cli(site, *argv)
        assert out.returncode == 0, (argv, out.stdout, out.stderr)
        assert "Permission denied" not in out.stderr, (argv, out.stderr)
        assert_agent_owned(site)
    # The catalog and its WAL are not world-readable, although umask was 000.
    for p in site.joinpath("state").iterdir():
        assert stat.S_IMODE(p.stat().st_mode) & 0o077 == stat.S_IMODE(p.stat().st_mode) & 0o070


def test_root_owned_leftovers_are_refused_with_the_fix(site: Path) -> None:
    catalog = site / "state" / "catalog.db"
    catalog.write_bytes(b"")  # as an earlier `sudo` run under the old code left it
    out = cli(site, "retention", "sweep")
    assert out.returncode == 1
    assert f"chown nobody: {catalog}" in out.stderr, out.stderr
    assert (catalog.stat().st_uid, catalog.stat().st_size) == (0, 0)


def test_missing_storage_is_refused_with_the_fix(site: Path) -> None:
    for name in ("rec", "state"):
        shutil.rmtree(site / name)
    out = cli(site, "ingest", "--location", "gate", "--purpose", "security", "/nonexistent.mp4")
    assert out.returncode == 1
    assert "install -d -o edge-agent -g edge-agent -m 0750" in out.stderr, out.stderr
    assert not (site / "rec").exists() and not (site / "state").exists()


def test_ingest_of_a_file_the_agent_cannot_consume_is_refused(site: Path) -> None:
    private = site / "private"
    private.mkdir(mode=0o700)
    path = make_video(private / "c.mp4", seconds=1.0)
    out = cli(site, "ingest", "--location", "gate", "--purpose", "security", str(path))
    assert out.returncode == 1
    assert "nobody, who runs the agent, cannot read it" in out.stderr, out.stderr
    assert path.exists()


def test_agent_files_are_private_whatever_the_umask(tmp_path: Path) -> None:
    """Catalog, WAL, shm, marker, audit head and a partial segment under umask 000."""
    import av

    from edge_agent.recording.segment_writer import SegmentWriter
    from edge_agent.store.audit import AuditLog
    from edge_agent.store.catalog import STORAGE_MARKER, Catalog

    old = os.umask(0)
    try:
        cat = Catalog.open(
            tmp_path / "state" / "catalog.db", device_id="gw-1", storage_root=tmp_path / "rec"
        )
        try:
            AuditLog(cat).append("test", actor="t", subject="s", ts=datetime.now(UTC))
            files = [
                tmp_path / "state" / name
                for name in ("catalog.db", "catalog.db-wal", "catalog.db-shm")
            ]
            files += [
                tmp_path / "state" / "catalog.db.audit-head",
                tmp_path / "rec" / STORAGE_MARKER,
            ]
            for p in files:
                assert stat.S_IMODE(p.stat().st_mode) == 0o640, p
            for d in (tmp_path / "state", tmp_path / "rec"):
                assert stat.S_IMODE(d.stat().st_mode) == 0o750, d
        finally:
            cat.close()
        src = make_video(tmp_path / "src.mp4", seconds=0.2)
        with av.open(str(src)) as inp:
            partial = tmp_path / "rec" / ".partial-seg.mkv"
            writer = SegmentWriter(partial, {}, inp.streams.video[0], None, Fraction(0))
            assert stat.S_IMODE(partial.stat().st_mode) == 0o640
            writer.close()
    finally:
        os.umask(old)


def test_a_python_the_agent_cannot_read_is_refused(site: Path) -> None:
    from edge_agent.cli._context import owner_of, unreadable_code

    blocked = unreadable_code(owner_of(AGENT, AGENT))
    if blocked is None:
        pytest.skip("this interpreter is readable by the agent's user")
    _media(site, "a.mp4")
    out = cli(site, "retention", "sweep", python=[sys.executable])
    assert out.returncode == 1
    assert f"nobody, who owns {site / 'rec'} and runs the agent, cannot read {blocked}" in (
        out.stderr
    )
    assert list((site / "state").iterdir()) == []


def test_a_catalog_folder_the_agent_cannot_write_is_refused(site: Path) -> None:
    os.chown(site / "state", 0, 0)
    out = cli(site, "hold", "list")
    assert out.returncode == 1
    assert f"cannot write in {site / 'state'}" in out.stderr, out.stderr
    assert f"chown nobody: {site / 'state'}" in out.stderr
