"""A recording disk that turns read-only under the agent, as a failing SD card does.

A loop-mounted ext4 image with ``errors=remount-ro`` is the storage root. While
the real daemon records, ext4 is told it found an error
(``/sys/fs/ext4/<dev>/trigger_fs_error``, the kernel's own path for a
corrupt block): every write then fails with EROFS. The daemon must pause
recording with ``alarm.storage_readonly``, not reconnect the camera in a
loop, and catalogue nothing it could not write. After the operator's fix
(unmount, ``e2fsck``, mount again) recording resumes by itself.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from edge_agent.media import media
from tests.support.broker import Broker, Subscriber
from tests.support.daemon import ROOT, start, stop, wait_until, write_config
from tests.support.storage import events, files, rows

CAM = "cam-door"


def run(*cmd: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, check=False)


def mount_image(img: Path, mnt: Path) -> str:
    res = run("mount", "-o", "loop,errors=remount-ro", str(img), str(mnt))
    if res.returncode != 0:
        pytest.skip(f"cannot loop-mount an ext4 image here: {res.stderr.strip()}")
    return os.path.basename(run("findmnt", "-n", "-o", "SOURCE", str(mnt)).stdout.strip())


@pytest.fixture()
def ext4(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    if shutil.which("mkfs.ext4") is None or shutil.which("e2fsck") is None:
        pytest.skip("e2fsprogs not installed")
    img, mnt = tmp_path / "disk.img", tmp_path / "disk"
    with open(img, "wb") as fh:
        fh.truncate(64 * 1024 * 1024)
    assert run("mkfs.ext4", "-q", "-F", str(img)).returncode == 0
    mnt.mkdir()
    yield img, mnt
    for _ in range(3):
        if run("umount", str(mnt)).returncode != 0:
            run("umount", "-l", str(mnt))


def test_disk_turns_read_only_then_is_repaired(
    tmp_path: Path, ext4: tuple[Path, Path], broker: Broker
) -> None:
    img, disk = ext4
    dev = mount_image(img, disk)
    trigger = Path(f"/sys/fs/ext4/{dev}/trigger_fs_error")
    if not trigger.exists():
        pytest.skip(f"{trigger} is not available on this kernel")
    cfg = write_config(tmp_path, [CAM], broker=broker, root=disk)
    sub = Subscriber(broker, [f"{ROOT}/status", f"{ROOT}/events"], client_id="storage-ro")
    log = tmp_path / "agent.log"
    agent = start(cfg, log)
    try:
        sub.wait_for(f"{ROOT}/status", lambda g: any(p["state"] == "online" for p in g))
        wait_until(lambda: len(files(disk)) >= 2, what="two segments")

        trigger.write_text("edge-agent test: simulated corrupt block\n")
        got = sub.wait_for(
            f"{ROOT}/events",
            lambda g: any(e["type"] == "alarm.storage_readonly" for e in g),
            timeout=20,
        )
        alarm = next(e for e in got if e["type"] == "alarm.storage_readonly")
        assert "Read-only file system" in alarm["reason"], alarm
        status = sub.wait_for(
            f"{ROOT}/status",
            lambda g: any("storage read-only" in r for r in g[-1].get("reasons", [])),
            timeout=15,
        )[-1]
        assert status["state"] == "degraded"

        # No crash loop: the camera is not reconnected over and over, nothing restarts.
        connects = log.read_text().count("connected to")
        time.sleep(8)
        text = log.read_text()
        assert text.count("connected to") <= connects + 1, "the recorder keeps reconnecting"
        assert not events(sub, "alarm.component_failed")
        assert agent.poll() is None

        # The operator repairs the disk and mounts it again.
        if run("umount", str(disk)).returncode != 0:
            run("umount", "-l", str(disk))
        fsck = run("e2fsck", "-fy", str(img))
        assert fsck.returncode in (0, 1, 2), fsck.stdout + fsck.stderr
        mount_image(img, disk)
        # Seen as a remount (read-only cleared), or as gone and back if a tick fell
        # between unmount and mount: either way the last word is alarm.cleared.
        sub.wait_for(
            f"{ROOT}/events",
            lambda g: (
                [e["type"] for e in g if e["type"].startswith("alarm.")][-1] == "alarm.cleared"
            ),
            timeout=20,
        )
        before = len(files(disk))
        wait_until(lambda: len(files(disk)) >= before + 2, what="recording again")
        sub.wait_for(
            f"{ROOT}/status",
            lambda g: not any("storage" in r for r in g[-1].get("reasons", [])),
            timeout=15,
        )
        assert stop(agent) == 0
    finally:
        sub.close()
        if agent.poll() is None:
            agent.kill()
            agent.wait(5)

    # Nothing was catalogued that is not on the disk, whole.
    all_rows = rows(cfg)
    live = [r for r in all_rows if r["state"] == "active"]
    assert not [r for r in all_rows if r["state"] in ("deleted", "deleting")], all_rows
    for r in live:
        f = disk / r["path"]
        assert f.is_file() and f.stat().st_size == r["size"], r
        assert media.sha256_file(f) == r["sha256"], r
    types = [e["type"] for e in sub.payloads(f"{ROOT}/events")]
    assert "alarm.storage_readonly" in types
    print(json.dumps([t for t in types if t.startswith("alarm")]))
