"""SIGKILL during adoption never loses footage and never leaves a row without its file."""

from __future__ import annotations

import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from edge_agent.media import media
from tests.support.mediagen import make_video

RUNS = 12
FILES = 6


@pytest.fixture(scope="module")
def templates(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    d = tmp_path_factory.mktemp("templates")
    out = []
    for i in range(FILES):
        kind = "mkv" if i % 2 else "mp4"
        out.append(
            make_video(
                d / f"cam_{i}.{kind}",
                container=kind,
                seconds=2 + i % 3,
                audio="aac",
                size=(320 + 16 * i, 240),
            )
        )
    return out


def _config(tmp: Path) -> Path:
    cfg = tmp / "config.toml"
    cfg.write_text(f"""
[device]
id = "gw-crash-01"
hw_profile = "generic-linux"

[storage]
root = "{tmp / "recordings"}"
catalog = "{tmp / "catalog.db"}"

[[locations]]
id = "gate"
kind = "premises"
signage = true
""")
    return cfg


def _check_invariants(tmp: Path, originals: dict[str, int]) -> None:
    root = tmp / "recordings"
    drop = tmp / "drop"
    # 1. Every original survives: still in the drop folder, or a finished tagged file holds it.
    in_drop = {media.sha256_file(p) for p in drop.iterdir()} if drop.exists() else set()
    finished: dict[str, Path] = {}
    for p in root.rglob("*"):
        if p.is_file() and p.suffix in {".mp4", ".mkv", ".mov"} and not p.name.startswith("."):
            sha = media.decode_source_sha256(media.probe(p).tags)
            assert sha is not None, f"{p} has no source hash tag"
            finished[sha] = p
    for sha, packets in originals.items():
        assert sha in in_drop or sha in finished, "an original was lost"
        if sha in finished:
            assert media.count_packets(finished[sha]) == packets
    # 2. Every catalog row points at a complete file.
    db = tmp / "catalog.db"
    if db.exists():
        con = sqlite3.connect(db)
        try:
            rows = con.execute("SELECT path, source_sha256 FROM recordings").fetchall()
        except sqlite3.OperationalError:
            rows = []  # killed before the first migration committed
        con.close()
        for rel, sha in rows:
            f = root / rel
            assert f.exists(), f"row without file: {rel}"
            assert media.count_packets(f) == originals[sha]


def test_sigkill_at_random_points_during_ingest(tmp_path: Path, templates: list[Path]) -> None:
    rng = random.Random(1234)
    originals = {media.sha256_file(t): media.count_packets(t) for t in templates}
    killed = 0
    full = None
    for run in range(RUNS):
        tmp = tmp_path / f"run{run}"
        drop = tmp / "drop"
        drop.mkdir(parents=True)
        for t in templates:
            shutil.copy(t, drop / t.name)
        cfg = _config(tmp)
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "edge_agent",
                "ingest",
                "--config",
                str(cfg),
                "--location",
                "gate",
                "--purpose",
                "security",
                *map(str, sorted(drop.iterdir())),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        if full is None:
            # First run uninterrupted: how long a whole batch takes sets the kill window.
            t0 = time.monotonic()
            proc.wait()
            full = time.monotonic() - t0
        time.sleep(rng.uniform(0.2, full * 0.9))
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            killed += 1
        proc.wait()
        _check_invariants(tmp, originals)
    assert killed >= RUNS // 2, f"the kills should mostly land mid-batch ({killed}, {full:.2f}s)"
