"""A fresh venv with ``pip install .`` gets a working ``edge-agent`` and its profiles."""

from __future__ import annotations

import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_fresh_install_runs_help_and_config_check(tmp_path: Path) -> None:
    src = tmp_path / "src"
    shutil.copytree(
        REPO,
        src,
        ignore=shutil.ignore_patterns(".git", ".venv", "*.egg-info", "build", "__pycache__"),
    )
    # Build a normal (non-editable) wheel with this interpreter's setuptools: no network.
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(tmp_path / "dist"),
            str(src),
        ],
        check=True,
        cwd=tmp_path,
    )
    wheel = next((tmp_path / "dist").glob("edge_agent-*.whl"))
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    vpy = venv / "bin" / "python"
    subprocess.run([str(vpy), "-m", "pip", "install", "-q", "--no-deps", str(wheel)], check=True)
    # Dependencies come from this environment (appended after the venv's own site-packages).
    site_dir = subprocess.run(
        [str(vpy), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    deps = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    Path(site_dir, "zz-test-deps.pth").write_text("\n".join(sorted(deps)) + "\n")

    exe = venv / "bin" / "edge-agent"
    help_out = subprocess.run([str(exe), "--help"], capture_output=True, text=True, cwd=tmp_path)
    assert help_out.returncode == 0, help_out.stderr
    check = subprocess.run(
        [str(exe), "config", "check", "--config", str(REPO / "examples" / "config.toml")],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert check.returncode == 0, check.stderr
    profiles = subprocess.run(
        [str(exe), "profile", "list", "--json"], capture_output=True, text=True, cwd=tmp_path
    )
    assert profiles.returncode == 0, profiles.stderr
    assert "rpi5-nvme" in profiles.stdout and "sd-recorder" in profiles.stdout
    where = subprocess.run(
        [str(vpy), "-c", "import edge_agent; print(edge_agent.__file__)"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        check=True,
    )
    assert where.stdout.startswith(str(venv)), "the installed package must not come from the tree"
