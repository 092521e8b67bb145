"""PyAV work on files from outside, in a child process (media/media_worker.py).

Real child processes, real files; crashes and hangs are made by signalling the
real child and by a time bound too short for a real remux.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import signal
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from edge_agent.core.model import NOTICE_PERIODS, Purpose, Site
from edge_agent.intake.adopter import FolderAdopter, WatchSpec
from edge_agent.intake.intake import Intake, IntakeSettings, Origin
from edge_agent.media import media
from edge_agent.media.media_worker import MediaWorker, MediaWorkerError
from edge_agent.store.audit import AuditLog
from edge_agent.store.catalog import Catalog
from tests.support.mediagen import make_video, truncate, write_garbage


@pytest.fixture()
def worker() -> Iterator[MediaWorker]:
    w = MediaWorker()
    yield w
    w.close()


def _fd(path: Path) -> int:
    return os.open(path, os.O_RDONLY | os.O_CLOEXEC)


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize(
    ("container", "audio"), [("mp4", "aac"), ("mkv", "opus"), ("ts", "aac"), ("mov", "alaw")]
)
def test_answers_as_the_calls_in_this_process(
    tmp_path: Path, worker: MediaWorker, container: str, audio: str
) -> None:
    src = make_video(tmp_path / f"in.{container}", container=container, audio=audio)  # type: ignore[arg-type]
    fd = _fd(src)
    try:
        for predict in (True, False):
            assert worker.probe_and_scan(fd, src, predict=predict) == media.probe_and_scan(
                src, predict=predict
            )
        for drop in (True, False):
            tags = {"edge_agent.location": "gate", "edge_agent.note": "café ✓"}
            there = worker.remux(fd, tmp_path / f"w-{drop}", tags=tags, drop_audio=drop, scan=True)
            here = media.remux(src, tmp_path / f"h-{drop}", tags=tags, drop_audio=drop, scan=True)
            assert there == media.RemuxResult(**{**here.__dict__, "dst": there.dst})
            if there.muxer == "matroska":  # a random segment id in every file
                assert media.probe(there.dst).tags == media.probe(here.dst).tags
                assert there.dst.stat().st_size == here.dst.stat().st_size
            else:
                assert _digest(there.dst) == _digest(here.dst)
    finally:
        os.close(fd)
    assert worker.started == 1, "one child served every call"


def test_a_probe_does_not_wait_behind_a_remux(tmp_path: Path, worker: MediaWorker) -> None:
    clip = make_video(tmp_path / "clip.mp4", seconds=3, audio="aac")
    short = make_video(tmp_path / "short.mkv", container="mkv")
    fd_clip, fd_short = _fd(clip), _fd(short)
    try:
        worker.probe_and_scan(fd_short, short, predict=True)
        first = worker.pid
        assert first is not None
        # Stopped, the first child holds the remux for as long as the test wants.
        os.kill(first, signal.SIGSTOP)
        remuxed: list[media.RemuxResult] = []
        t = threading.Thread(
            target=lambda: remuxed.append(
                worker.remux(fd_clip, tmp_path / "o.mp4", tags={}, drop_audio=True)
            )
        )
        t.start()
        try:
            while not any(c.busy for c in worker._children):
                time.sleep(0.001)
            probed = [worker.probe_and_scan(fd_short, short, predict=False) for _ in range(3)]
            assert t.is_alive(), "the probes did not wait for the remux"
        finally:
            os.kill(first, signal.SIGCONT)
        t.join(30)
        assert probed[0] == media.probe_and_scan(short, predict=False)
        assert remuxed[0].video_packets == media.count_packets(clip)
        assert worker.started == 2 and len(worker.pids) == 2
    finally:
        os.close(fd_clip)
        os.close(fd_short)


def test_file_verdicts_cross_over(tmp_path: Path, worker: MediaWorker) -> None:
    junk = write_garbage(tmp_path / "junk.mp4", 64 * 1024, seed=3)
    cut = truncate(make_video(tmp_path / "cut.mp4", seconds=2), 0.5)
    for path, reason in ((junk, media.Reason.NOT_MEDIA), (cut, media.Reason.TRUNCATED)):
        fd = _fd(path)
        try:
            with pytest.raises(media.MediaError) as got:
                worker.probe_and_scan(fd, path, predict=True)
            with pytest.raises(media.MediaError) as here:
                media.probe_and_scan(path, predict=True)
            assert got.value.reason == here.value.reason == reason
        finally:
            os.close(fd)
    assert worker.started == 1 and worker.failures == 0, "a bad file is not a dead worker"


def _kill_during_calls(worker: MediaWorker, sig: signal.Signals, calls) -> MediaWorkerError:
    """Signal the child while ``calls`` keeps it busy; the error the call got."""
    stop = threading.Event()

    def killer() -> None:
        while not stop.is_set():
            pid = worker.pid
            if pid is not None:
                time.sleep(0.05)
                os.kill(pid, sig)
                return
            time.sleep(0.005)

    t = threading.Thread(target=killer)
    t.start()
    try:
        with pytest.raises(MediaWorkerError) as got:
            for _ in range(400):
                calls()
    finally:
        stop.set()
        t.join()
    return got.value


@pytest.mark.parametrize("sig", [signal.SIGSEGV, signal.SIGKILL])
def test_a_crash_is_a_verdict_and_the_next_call_gets_a_new_child(
    tmp_path: Path, worker: MediaWorker, sig: signal.Signals
) -> None:
    src = make_video(tmp_path / "in.mp4", seconds=4, size=(640, 360), audio="aac")
    dst = tmp_path / "out.mp4"
    fd = _fd(src)
    try:
        err = _kill_during_calls(
            worker, sig, lambda: worker.remux(fd, dst, tags={}, drop_audio=True)
        )
        assert "died during remux" in str(err) and sig.name in str(err)
        assert not dst.exists(), "no half-written copy is left"
        made = worker.remux(fd, dst, tags={}, drop_audio=True)
        assert made.video_packets == media.count_packets(src)
        assert worker.started == 2 and worker.failures == 1
    finally:
        os.close(fd)


def test_a_call_past_its_bound_is_stopped(tmp_path: Path) -> None:
    src = make_video(tmp_path / "in.mp4", seconds=4, size=(640, 360))
    dst = tmp_path / "out.mp4"
    fd = _fd(src)
    w = MediaWorker(remux_bound=(0.0, 1e-12))  # no real remux is that fast
    try:
        w.probe_and_scan(fd, src, predict=True)  # the child is up: the bound is the remux's
        first = w.pid
        t0 = time.monotonic()
        with pytest.raises(MediaWorkerError, match="took more than"):
            w.remux(fd, dst, tags={}, drop_audio=True)
        assert time.monotonic() - t0 < 5
        assert first is not None and not _alive(first), "the hung child is killed"
        assert not dst.exists()
        w.remux_bound = (60.0, 0.0)
        assert w.remux(fd, dst, tags={}, drop_audio=True).video_packets == 100
    finally:
        os.close(fd)
        w.close()


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_idle_child_is_stopped_and_comes_back(tmp_path: Path) -> None:
    src = make_video(tmp_path / "in.mkv", container="mkv")
    fd = _fd(src)
    w = MediaWorker(idle_seconds=0.2)
    try:
        assert w.pid is None and not w.stop_if_idle(), "nothing started before the first call"
        w.probe_and_scan(fd, src, predict=False)
        pid = w.pid
        assert pid is not None and not w.stop_if_idle(), "just used"
        time.sleep(0.3)
        assert w.stop_if_idle() and w.pid is None and not _alive(pid)
        w.probe_and_scan(fd, src, predict=False)
        assert w.started == 2
    finally:
        os.close(fd)
        w.close()
    assert w.pid is None


def test_child_killed_while_idle_is_replaced_without_a_failure(
    tmp_path: Path, worker: MediaWorker
) -> None:
    src = make_video(tmp_path / "in.mkv", container="mkv")
    fd = _fd(src)
    try:
        worker.probe_and_scan(fd, src, predict=False)
        pid = worker.pid
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        while _alive(pid):
            time.sleep(0.01)
        worker.probe_and_scan(fd, src, predict=False)
        assert worker.failures == 0 and worker.started == 2
    finally:
        os.close(fd)


def test_replies_that_break_the_protocol_are_refused(worker: MediaWorker) -> None:
    for reply in (b"what\n{}", b"media\nnot json", b"media\n{}", b"media\n[1]"):
        with pytest.raises(MediaWorkerError):
            worker._unwrap("probe", reply, worker._children[0])
    with pytest.raises(MediaWorkerError, match="RuntimeError: boom"):
        worker._unwrap("remux", b"error\nRuntimeError: boom", worker._children[0])


# -- through the adopter ------------------------------------------------------------------

NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
GATE = Origin(
    location="gate", site=Site.PREMISES, audio_room=False, signage=True, purpose=Purpose.SECURITY
)


def test_adoption_survives_the_child_dying_and_loses_nothing(tmp_path: Path) -> None:
    root, drop = tmp_path / "recordings", tmp_path / "drop"
    root.mkdir()
    drop.mkdir()
    cat = Catalog.open(tmp_path / "catalog.db", device_id="gw-test-01", storage_root=root)
    intake = Intake(
        cat,
        IntakeSettings(
            device_id="gw-test-01", storage_root=root, quarantine_dir=tmp_path / "q",
            periods=NOTICE_PERIODS, fsync=False,
        ),
    )  # fmt: skip
    intake.media_worker = worker = MediaWorker()
    for i in range(6):
        make_video(drop / f"cam_{i}.mp4", seconds=3, size=(640, 360), audio="aac",
                   metadata={"title": f"clip {i}"})  # fmt: skip
    clock = [0.0]
    ad = FolderAdopter(
        WatchSpec(drop, GATE, use_inotify=False, retry_seconds=1.0),
        intake,
        now=lambda: NOW,
        monotonic=lambda: clock[0],
    )

    async def run() -> None:
        killed = False
        for _ in range(20):
            task = asyncio.create_task(ad.pass_once(force=True))
            if not killed:
                # The pid appears in a worker thread: nothing to wait on but time.
                while worker.pid is None and not task.done():  # noqa: ASYNC110
                    await asyncio.sleep(0.001)
                if worker.pid is not None:
                    os.kill(worker.pid, signal.SIGKILL)
                    killed = True
            await task
            clock[0] += 2.0  # past the back-off
            if ad.stats.adopted == 6:
                return

    try:
        asyncio.run(run())
    finally:
        worker.close()
    assert ad.stats.adopted == 6 and ad.stats.quarantined == 0
    assert ad.stats.errors >= 1 and worker.failures >= 1, "the kill was seen"
    assert list(drop.iterdir()) == [], "every source adopted and removed"
    recs = cat.recordings.list()
    assert len(recs) == 6 and all(not r.tags.audio for r in recs)
    assert not [p for p in root.rglob(".partial-*")], "no half-written copy is left"
    assert AuditLog(cat).verify().ok
    cat.close()
