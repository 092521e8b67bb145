"""The offline installer: wheelhouse, install.sh --root, staged CLI, upgrade, removal."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
PYVER = f"{sys.version_info[0]}.{sys.version_info[1]}"

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
    return _run(
        "bash", DEPLOY / "install.sh", "--root", root, "--wheelhouse", wheelhouse,
        "--python", sys.executable, *extra,
    )  # fmt: skip


def _fake_image(root: Path) -> Path:
    """An image root with this machine's interpreter at /usr/bin/python3.X: enough for
    ``--venv rewrite``, which only reads it (tests/e2e/test_boot.py boots a real one)."""
    ver = PYVER
    (root / "usr/bin").mkdir(parents=True)
    (root / f"usr/lib/python{ver}").mkdir(parents=True)
    shutil.copyfile(os.path.realpath(sys.executable), root / f"usr/bin/python{ver}")
    (root / f"usr/bin/python{ver}").chmod(0o755)
    (root / "usr/bin/python3").symlink_to(f"python{ver}")
    return root


def _in_image(root: Path, path: str) -> Path:
    """Where a path inside the image leads, symlinks followed inside the image."""
    here = root / path.lstrip("/")
    for _ in range(20):
        if not here.is_symlink():
            return here
        target = os.readlink(here)
        here = root / target.lstrip("/") if target.startswith("/") else here.parent / target
    raise AssertionError(f"symlink loop at {path}")


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
    root = _fake_image(tmp_path / "stage")
    res = _install(root, wheelhouse, "--venv", "rewrite")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "not creating user edge-agent (staging root)" in res.stderr
    assert "rewrote the virtualenv for /opt/edge-agent" in res.stdout

    # Layout.
    exe = root / "opt/edge-agent/bin/edge-agent"
    assert os.access(exe, os.X_OK)
    # The virtualenv names the image's paths, not the staging root's.
    assert exe.read_text().splitlines()[0] == "#!/opt/edge-agent/bin/python"
    ver = PYVER
    assert _in_image(root, "/opt/edge-agent/bin/python") == root / f"usr/bin/python{ver}"
    cfg = (root / "opt/edge-agent/pyvenv.cfg").read_text()
    assert "home = /usr/bin" in cfg and str(root) not in cfg
    for script in (root / "opt/edge-agent/bin").iterdir():
        if script.is_file() and not script.is_symlink():
            assert str(root).encode() not in script.read_bytes(), script
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
    # Owners are for the image's first boot (sysusers, tmpfiles), not chowned here.
    assert "u     edge-agent" in (root / "usr/lib/sysusers.d/edge-agent.conf").read_text()
    tmpfiles = (root / "usr/lib/tmpfiles.d/edge-agent.conf").read_text()
    assert "z     /etc/edge-agent/config.toml      0640 root       edge-agent" in tmpfiles
    assert config.stat().st_uid == os.getuid()
    assert (units / "edge-agent-background.slice").is_file()
    # Everything is in the default state dir: nothing to open up, but the unit
    # still waits for the recordings disk, which may be mounted there.
    dropin = (units / "edge-agent.service.d/10-paths.conf").read_text()
    assert "RequiresMountsFor=/var/lib/edge-agent/recordings" in dropin
    assert "ReadWritePaths" not in dropin

    # The staged program runs (here through its bin/python, whose link to
    # /usr/bin/python3 also exists on this machine) and accepts the config it
    # wrote (final, unstaged paths).
    py = root / "opt/edge-agent/bin/python"
    check = _run(py, "-m", "edge_agent", "config", "check", "--config", config)
    assert check.returncode == 0, check.stderr
    text = config.read_text()
    assert 'root = "/var/lib/edge-agent/recordings"' in text
    assert _run(py, "-m", "edge_agent", "--version").stdout.startswith("edge-agent ")

    # Upgrade: re-running keeps the config and the state, and moves recordings
    # off the state dir into a drop-in that opens them up.
    edited = text.replace(
        'root = "/var/lib/edge-agent/recordings"', 'root = "/srv/edge/recordings"'
    )
    config.write_text(edited + "# installer's note\n")
    (state / "catalog.db").write_bytes(b"not really a catalog")
    res = _install(root, wheelhouse, "--venv", "rewrite")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "kept the existing" in res.stdout
    assert config.read_text().endswith("# installer's note\n")
    assert (state / "catalog.db").read_bytes() == b"not really a catalog"
    dropin = (units / "edge-agent.service.d/10-paths.conf").read_text()
    assert "ReadWritePaths=-/srv/edge/recordings" in dropin
    assert "ReadWritePaths=-/srv/edge/quarantine" in dropin
    assert "RequiresMountsFor=/srv/edge/recordings" in dropin
    assert (units / "edge-agent-reconcile.service.d/10-paths.conf").read_text() == dropin
    assert _run(py, "-m", "edge_agent", "config", "check", "--config", config).returncode == 0

    # Uninstall keeps config, catalog and recordings.
    res = _run("bash", DEPLOY / "install.sh", "--root", root, "--uninstall")
    assert res.returncode == 0, res.stderr
    assert not (root / "opt/edge-agent").exists()
    assert not (units / "edge-agent.service").exists()
    assert not (units / "edge-agent.service.d").exists()
    assert not (root / "usr/lib/tmpfiles.d/edge-agent.conf").exists()
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


def test_root_without_python_is_refused(tmp_path: Path, wheelhouse: Path) -> None:
    """A venv built here would not run in the image: say what the image lacks."""
    res = _install(tmp_path / "empty", wheelhouse)
    assert res.returncode == 2
    assert "/usr/bin/python3 not found: install python3" in res.stderr
    assert not (tmp_path / "empty/opt/edge-agent").exists()


def test_rewrite_refuses_another_python_version(tmp_path: Path, wheelhouse: Path) -> None:
    root = _fake_image(tmp_path / "stage")
    ver = PYVER
    other = f"3.{sys.version_info[1] + 1}"
    (root / f"usr/bin/python{ver}").rename(root / f"usr/bin/python{other}")
    (root / f"usr/lib/python{ver}").rename(root / f"usr/lib/python{other}")
    (root / "usr/bin/python3").unlink()
    (root / "usr/bin/python3").symlink_to(f"python{other}")
    res = _install(root, wheelhouse, "--venv", "rewrite")
    assert res.returncode == 2
    assert f"the image has {other}" in res.stderr and "--venv chroot" in res.stderr


def test_rewrite_refuses_another_architecture(tmp_path: Path, wheelhouse: Path) -> None:
    root = _fake_image(tmp_path / "stage")
    ver = PYVER
    elf = root / f"usr/bin/python{ver}"
    data = bytearray(elf.read_bytes())
    data[18:20] = (0xB7 if data[18] != 0xB7 else 0x3E, 0)  # e_machine: aarch64 (or x86-64)
    elf.write_bytes(bytes(data))
    res = _install(root, wheelhouse, "--venv", "rewrite")
    assert res.returncode == 2
    assert "another architecture" in res.stderr and "qemu-user-static" in res.stderr


def test_bad_options_exit_2(tmp_path: Path) -> None:
    res = _run("bash", DEPLOY / "install.sh", "--root", tmp_path, "--purge")
    assert res.returncode == 2 and "--purge goes with --uninstall" in res.stderr
    res = _run("bash", DEPLOY / "install.sh", "--root", tmp_path)
    assert res.returncode == 2 and "--wheelhouse" in res.stderr


def test_agent_unit_sets_a_file_descriptor_limit() -> None:
    """Issue 12 item 6: the default 1024 let idle HTTP connections starve recording."""
    from edge_agent.liveview.liveview_gate import recording_fd_reserve

    unit = (Path(__file__).resolve().parents[2] / "systemd/edge-agent.service").read_text()
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
