import numpy as np
import pytest

from engines.features import FrameRecord
from stream.config import WindowConfig
from stream.live.windows import WindowAssembler


def rec(pts: float) -> FrameRecord:
    return FrameRecord(pts=pts, thumb=np.zeros((36, 64), np.uint8), source_size=(64, 36))


def feed(asm: WindowAssembler, pts_list):
    out = []
    for p in pts_list:
        out.extend(asm.add(rec(p)))
    return out


def test_windows_follow_length_and_hop_by_timestamp():
    asm = WindowAssembler("s", WindowConfig(length_s=4, hop_s=1))
    wins = feed(asm, np.arange(0, 10, 1 / 30))
    assert [(w.start, w.end) for w in wins] == [(float(k), float(k + 4)) for k in range(6)]
    assert all(119 <= len(w.frames) <= 121 for w in wins)
    # overlapping windows share the very same frame objects: per-frame work is done once
    assert wins[0].frames[31] is wins[1].frames[1]


def test_variable_frame_rate_and_stall_gap():
    asm = WindowAssembler("s", WindowConfig(length_s=2, hop_s=1))
    pts = list(np.arange(0, 3, 1 / 15)) + list(np.arange(3, 4, 1 / 60)) + list(np.arange(7, 10, 1 / 30))
    wins = feed(asm, pts)
    starts = [w.start for w in wins]
    assert starts == sorted(starts)
    # windows falling inside the 4-7 s gap hold no frame and are not emitted; the ones touching it are short
    assert all(w.frames for w in wins)
    assert not [w for w in wins if 4 <= w.start and w.end <= 7]
    (after_gap,) = [w for w in wins if w.start == 6]
    assert after_gap.frames[0].pts >= 7 and len(after_gap.frames) == 30


def test_short_stream_gets_one_window_at_the_end():
    asm = WindowAssembler("s", WindowConfig(length_s=4, hop_s=1))
    assert feed(asm, np.arange(0, 1.5, 1 / 25)) == []
    (w,) = asm.finish()
    assert len(w.frames) == 38 and w.start == 0


def test_hop_longer_than_length_is_rejected():
    with pytest.raises(ValueError, match="hop_s"):
        WindowConfig(length_s=1, hop_s=2)


def test_each_frame_carries_its_change_from_the_previous_one_measured_once():
    from engines.signals import thumb_change, thumb_changes

    rng = np.random.default_rng(3)
    asm = WindowAssembler("s", WindowConfig(length_s=1, hop_s=0.5))
    records = [FrameRecord(pts=i / 10, thumb=rng.integers(0, 255, (36, 64), dtype=np.uint8), source_size=(64, 36))
               for i in range(30)]
    wins = [w for r in records for w in asm.add(r)] + asm.finish()
    assert records[0].change is None and [r.seq for r in records] == list(range(30))
    for before, r in zip(records, records[1:], strict=False):
        assert r.change == thumb_change(before.thumb, r.thumb) > 0
    w = wins[1]
    assert w.frames[0].seq > 0  # a window that starts mid-stream: its first frame's change is not one of its pairs
    assert thumb_changes(w.frames).tolist() == [f.change for f in w.frames[1:]]
    # what windows read is the carried value (measured once per frame, not once per window)...
    w.frames[2].change = 99.0
    assert thumb_changes(w.frames)[1] == 99.0
    # ...only where the frames follow each other; a window of frames that do not is measured afresh
    skipped = [w.frames[0], w.frames[2]]
    assert thumb_changes(skipped)[0] == thumb_change(w.frames[0].thumb, w.frames[2].thumb) != 99.0
