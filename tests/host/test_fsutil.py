"""fsutil.syncfs: the one flush a "batched" wave of recorder segments gets."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest

from edge_agent.host.fsutil import syncfs


def test_syncfs_flushes_the_filesystem_of_a_folder(tmp_path: Path) -> None:
    (tmp_path / "segment.mkv").write_bytes(b"x" * 4096)
    syncfs(tmp_path)  # returns once the kernel says it is on disk


def test_syncfs_of_a_missing_folder_says_why(tmp_path: Path) -> None:
    with pytest.raises(OSError) as err:
        syncfs(tmp_path / "gone")
    assert err.value.errno == errno.ENOENT
