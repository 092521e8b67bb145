"""The reorder buffer between a source and the segmenter: pure, no IO."""

from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge_agent.core.segmenter import BACKWARD_TOLERANCE
from edge_agent.recording.interleave import Interleaver

Item = tuple[str, float]


def run(inter: Interleaver[Item], arrivals: list[Item]) -> list[Item]:
    out: list[Item] = []
    for kind, ts in arrivals:
        out.extend(item for _, item in inter.push(kind, ts, (kind, ts)))
    out.extend(item for _, item in inter.drain())
    return out


@st.composite
def two_streams(draw: st.DrawFn) -> list[Item]:
    """Video at 25 fps and audio at ~47 packets/s, audio arriving up to 0.18 s off."""
    seconds = draw(st.floats(0.5, 4.0))
    video = [("video", round(i * 0.04, 6)) for i in range(int(seconds / 0.04))]
    audio = [("audio", round(i * 0.021333, 6)) for i in range(int(seconds / 0.021333))]
    skew = draw(st.floats(-0.15, 0.15))  # audio arrives this much later (negative: earlier)
    jitter = draw(st.lists(st.floats(0, 0.03), min_size=len(audio), max_size=len(audio)))
    timed = [(item[1], 0, item) for item in video]
    timed += [(item[1] + skew + j, 1, item) for item, j in zip(audio, jitter, strict=True)]
    # Arrival order; jitter must not reorder one stream, so keep each stream's order.
    timed.sort(key=lambda t: t[0])
    by_kind: dict[int, list[Item]] = {0: list(video), 1: list(audio)}
    return [by_kind[k].pop(0) for _, k, _ in timed]


@given(two_streams())
def test_skewed_streams_come_out_in_time_order_with_video_first_on_ties(
    arrivals: list[Item],
) -> None:
    out = run(Interleaver(["video", "audio"]), arrivals)
    assert Counter(out) == Counter(arrivals), "nothing lost, nothing doubled"
    assert out == sorted(out, key=lambda item: (item[1], item[0] != "video"))


@given(
    st.lists(
        st.tuples(st.sampled_from(["video", "audio"]), st.floats(-100, 100)),
        max_size=200,
    )
)
def test_any_arrivals_lose_nothing_and_keep_each_streams_order(arrivals: list[Item]) -> None:
    out = run(Interleaver(["video", "audio"]), arrivals)
    assert Counter(out) == Counter(arrivals)
    for kind in ("video", "audio"):
        assert [i for i in out if i[0] == kind] == [i for i in arrivals if i[0] == kind]


class Reference:
    """The release rule as the module docstring states it, searched in full at every
    push: Interleaver takes shortcuts (every packet of every camera goes through it)
    and must release exactly the same items in the same order."""

    def __init__(self, kinds: list[str], window: float) -> None:
        self.kinds, self.window = kinds, window
        self.queues: dict[str, list[tuple[float, Item]]] = {k: [] for k in kinds}

    def push(self, kind: str, ts: float, item: Item) -> list[Item]:
        queue, out = self.queues[kind], []
        if queue and ts < queue[-1][0] - BACKWARD_TOLERANCE:
            out += self.drain()
        queue.append((ts, item))
        while True:
            full = all(self.queues.values())
            ready = [
                k
                for k in self.kinds
                if self.queues[k]
                and (full or self.queues[k][-1][0] - self.queues[k][0][0] > self.window)
            ]
            if not ready:
                return out
            out.append(self._pop(ready))

    def drain(self) -> list[Item]:
        out = []
        while ready := [k for k in self.kinds if self.queues[k]]:
            out.append(self._pop(ready))
        return out

    def _pop(self, ready: list[str]) -> Item:
        # Smallest head; on a tie (or NaN) the first kind.
        kind = ready[0]
        for k in ready[1:]:
            if self.queues[k][0][0] < self.queues[kind][0][0]:
                kind = k
        return self.queues[kind].pop(0)[1]


# Steps of a stream's time: mostly a frame on, sometimes back a little (within the
# tolerance: no jump), past the window, a jump, or not a number.
steps = st.one_of(
    st.sampled_from([0.02, 0.04, 0.04, -0.1, -0.3, 0.3, 0.0]),
    st.floats(-0.45, 0.45),
    st.sampled_from([-0.55, 20.0, float("nan"), float("inf")]),
)


@settings(max_examples=300)
@given(
    st.sampled_from([["video", "audio"], ["video", "audio", "data"]]),
    st.sampled_from([0.1, 0.25]),
    st.lists(st.tuples(st.integers(0, 2), steps), max_size=200),
)
def test_release_order_is_the_rule_searched_in_full(
    kinds: list[str], window: float, steps: list[tuple[int, float]]
) -> None:
    inter: Interleaver[Item] = Interleaver(kinds, window=window)
    ref = Reference(kinds, window)
    clock = dict.fromkeys(kinds, 0.0)
    for i, step in steps:
        kind = kinds[i % len(kinds)]
        clock[kind] = ts = clock[kind] + step
        item = (kind, ts)
        assert [it for _, it in inter.push(kind, ts, item)] == ref.push(kind, ts, item)
    assert [it for _, it in inter.drain()] == ref.drain()


def test_audio_ahead_of_the_cutting_keyframe_waits_for_it() -> None:
    inter: Interleaver[str] = Interleaver(["video", "audio"])
    assert inter.push("video", 1.96, "v1.96") == []  # audio may still come earlier
    assert inter.push("audio", 1.98, "a1.98") == [("video", "v1.96")]
    assert inter.push("audio", 2.00, "a2.00") == []
    # The keyframe at 2.00 goes first: the audio from 2.00 on belongs to the next segment.
    assert inter.push("video", 2.00, "v2.00") == [("audio", "a1.98"), ("video", "v2.00")]
    assert inter.drain() == [("audio", "a2.00")]


def test_a_silent_stream_holds_the_other_back_for_at_most_the_window() -> None:
    inter: Interleaver[float] = Interleaver(["video", "audio"], window=0.25)
    released: list[float] = []
    for i in range(20):  # audio died: video alone, 25 fps
        released += [ts for _, ts in inter.push("video", i * 0.04, i * 0.04)]
    assert len(inter) <= 7 and released == sorted(released)
    assert released[-1] >= 19 * 0.04 - 0.25 - 0.04


def test_a_stream_jumping_back_releases_what_was_queued_first() -> None:
    inter: Interleaver[float] = Interleaver(["video", "audio"])
    assert inter.push("video", 100.0, 100.0) == []
    out = inter.push("video", 0.0, 0.0)  # the camera rebooted
    assert out == [("video", 100.0)] and len(inter) == 1


def test_one_stream_passes_straight_through() -> None:
    inter: Interleaver[int] = Interleaver(["video"])
    assert inter.push("video", 5.0, 1) == [("video", 1)]
    assert inter.push("video", 1.0, 2) == [("video", 2)]
    assert len(inter) == 0
    with pytest.raises(ValueError):
        Interleaver([])
