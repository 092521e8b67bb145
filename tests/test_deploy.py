"""The offline installer: wheelhouse, install.sh --root, staged CLI, upgrade, removal."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
DEPLOY = REPO / "deploy"

pytestmark = pytest.mark.skipif(shutil.which("sha256sum") is None, reason="needs coreutils")


def _run(*args: str | Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(a) for a in args],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        env=env,
    )


@pytest.fixture(scope="session")
def wheelhouse(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """This machine's wheels, built once per test session (needs the package index)."""
    out = tmp_path_factory.mktemp("wheelhouse")
    res = _run("bash", DEPLOY / "build-wheelhouse.sh", out)
    assert res.returncode == 0, res.stdout + res.stderr
    return out


def _install(root: Path, wheelhouse: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return _run("bash", DEPLOY / "install.sh", "--root", root, "--wheelhouse", wheelhouse, *extra)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_wheelhouse_has_a_manifest_with_hashes(wheelhouse: Path) -> None:
    wheels = sorted(p.name for p in wheelhouse.glob("*.whl"))
    assert any(w.startswith("edge_agent-") for w in wheels)
    for dep in ("aiortc-", "av-", "paho_mqtt-", "pydantic-", "cryptography-"):
        assert any(w.startswith(dep) for w in wheels), dep
    assert all(p.suffix == ".whl" for p in wheelhouse.iterdir() if p.name[0].islower())
    sums = (wheelhouse / "SHA256SUMS").read_text().splitlines()
    assert sorted(line.split()[1] for line in sums) == wheels
    check = subprocess.run(
        ["sha256sum", "-c", "--quiet", "SHA256SUMS"], cwd=wheelhouse, capture_output=True
    )
    assert check.returncode == 0
    assert "target: cp3" in (wheelhouse / "MANIFEST.txt").read_text()


def test_install_upgrade_uninstall_purge(tmp_path: Path, wheelhouse: Path) -> None:
    root = tmp_path / "stage"
    res = _install(root, wheelhouse)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "not creating user edge-agent (staging root)" in res.stderr

    # Layout.
    exe = root / "opt/edge-agent/bin/edge-agent"
    assert os.access(exe, os.X_OK)
    config = root / "etc/edge-agent/config.toml"
    assert _mode(config) == 0o640 and _mode(config.parent) == 0o750
    state = root / "var/lib/edge-agent"
    assert _mode(state) == 0o750 and (state / "recordings").is_dir()
    assert (root / "var/log/edge-agent").is_dir()
    units = root / "etc/systemd/system"
    for unit in (
        "edge-agent.service",
        "edge-agent-reconcile.service",
        "edge-agent-reconcile.timer",
    ):
        assert (units / unit).read_bytes() == (REPO / "systemd" / unit).read_bytes()
    assert "u edge-agent" in (root / "usr/lib/sysusers.d/edge-agent.conf").read_text()
    # Everything is in the default state dir: no drop-in needed.
    assert not (units / "edge-agent.service.d").exists()

    # The staged program works and accepts the config it wrote (final, unstaged paths).
    check = _run(exe, "config", "check", "--config", config)
    assert check.returncode == 0, check.stderr
    text = config.read_text()
    assert 'root = "/var/lib/edge-agent/recordings"' in text
    assert _run(exe, "--version").stdout.startswith("edge-agent ")

    # Upgrade: re-running keeps the config and the state, and moves recordings
    # off the state dir into a drop-in that opens them up.
    edited = text.replace(
        'root = "/var/lib/edge-agent/recordings"', 'root = "/srv/edge/recordings"'
    )
    config.write_text(edited + "# installer's note\n")
    (state / "catalog.db").write_bytes(b"not really a catalog")
    res = _install(root, wheelhouse)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "kept the existing" in res.stdout
    assert config.read_text().endswith("# installer's note\n")
    assert (state / "catalog.db").read_bytes() == b"not really a catalog"
    dropin = (units / "edge-agent.service.d/10-paths.conf").read_text()
    assert "ReadWritePaths=-/srv/edge/recordings" in dropin
    assert "ReadWritePaths=-/srv/edge/quarantine" in dropin
    assert "RequiresMountsFor=/srv/edge/recordings" in dropin
    assert (units / "edge-agent-reconcile.service.d/10-paths.conf").read_text() == dropin
    assert _run(exe, "config", "check", "--config", config).returncode == 0

    # Uninstall keeps config, catalog and recordings.
    res = _run("bash", DEPLOY / "install.sh", "--root", root, "--uninstall")
    assert res.returncode == 0, res.stderr
    assert not (root / "opt/edge-agent").exists()
    assert not (units / "edge-agent.service").exists()
    assert not (units / "edge-agent.service.d").exists()
    assert (state / "catalog.db").exists() and (state / "recordings").is_dir()
    assert config.exists()

    # Purge removes them too.
    res = _run("bash", DEPLOY / "install.sh", "--root", root, "--uninstall", "--purge")
    assert res.returncode == 0, res.stderr
    assert not state.exists() and not config.parent.exists()


def test_damaged_wheelhouse_is_refused(tmp_path: Path, wheelhouse: Path) -> None:
    copy = tmp_path / "wh"
    shutil.copytree(wheelhouse, copy)
    victim = next(copy.glob("paho_mqtt-*.whl"))
    victim.write_bytes(victim.read_bytes() + b"x")
    res = _install(tmp_path / "stage", copy)
    assert res.returncode == 2
    assert "checksums differ" in res.stderr
    assert not (tmp_path / "stage/opt/edge-agent").exists()


def test_bad_options_exit_2(tmp_path: Path) -> None:
    res = _run("bash", DEPLOY / "install.sh", "--root", tmp_path, "--purge")
    assert res.returncode == 2 and "--purge goes with --uninstall" in res.stderr
    res = _run("bash", DEPLOY / "install.sh", "--root", tmp_path)
    assert res.returncode == 2 and "--wheelhouse" in res.stderr


def test_agent_unit_sets_a_file_descriptor_limit() -> None:
    """Issue 12 item 6: the default 1024 let idle HTTP connections starve recording."""
    from edge_agent.liveview_gate import recording_fd_reserve

    unit = (Path(__file__).parent.parent / "systemd/edge-agent.service").read_text()
    values = [
        line.split("=", 1)[1] for line in unit.splitlines() if line.startswith("LimitNOFILE=")
    ]
    assert len(values) == 1, values
    limit = int(values[0])
    # The reserve for 32 cameras plus the largest liveview.max_connections still fit.
    assert limit >= 4096 >= recording_fd_reserve(32) + 1024


def test_run_raises_a_low_soft_fd_limit() -> None:
    """Started by hand (soft limit 1024), the daemon gets the unit's 4096 if allowed."""
    import sys

    code = (
        "import resource; resource.setrlimit(resource.RLIMIT_NOFILE, (256, 8192));"
        "from edge_agent.cli import prepare; prepare('run');"
        "print(resource.getrlimit(resource.RLIMIT_NOFILE)[0])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "4096"
