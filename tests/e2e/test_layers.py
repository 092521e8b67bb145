"""The layer contract in pyproject.toml holds, and it catches a layer breach."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
LINT = Path(sys.executable).with_name("lint-imports")


def _lint(root: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(root)}
    return subprocess.run(
        [str(LINT), "--no-cache", "--config", str(root / "pyproject.toml")],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_package_keeps_its_layers() -> None:
    out = _lint(REPO)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "0 broken" in out.stdout


def test_core_importing_the_store_breaks_the_contract(tmp_path: Path) -> None:
    shutil.copytree(REPO / "edge_agent", tmp_path / "edge_agent", symlinks=True)
    shutil.copy(REPO / "pyproject.toml", tmp_path / "pyproject.toml")
    policy = tmp_path / "edge_agent" / "core" / "policy.py"
    policy.write_text(policy.read_text() + "\nfrom edge_agent.store import catalog as _catalog\n")
    out = _lint(tmp_path)
    assert out.returncode != 0
    assert "edge_agent.core is not allowed to import edge_agent.store" in out.stdout


def test_pure_clock_and_supervisor_load_no_io_layers() -> None:
    # The contract's two former breaches: core.clock loaded libc (ctypes), and
    # the supervisor took its backoff from the recorder manager.
    code = (
        "import sys\n"
        "import edge_agent.core.clock\n"
        "assert 'ctypes' not in sys.modules, 'core.clock loads ctypes'\n"
        "from edge_agent.app import supervisor\n"
        "from edge_agent.core.backoff import backoff_delay\n"
        "assert supervisor.backoff_delay is backoff_delay\n"
        "assert 'edge_agent.recording.recorder_manager' not in sys.modules\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "ok"
