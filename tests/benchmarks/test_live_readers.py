"""benchmarks.live --readers: the decode-path breakdown runs every mode on a real clip, and its paced modes keep to
real time (a reader that did not wait would measure the unpaced cost under a paced label)."""

from __future__ import annotations

import time
from pathlib import Path

from benchmarks.live import READER_MODES, _reader_cost, reader_costs

CLIP = Path(__file__).resolve().parents[2] / "samples" / "clean.mp4"


def test_every_mode_measures_a_cost():
    costs = reader_costs(CLIP, readers=2, seconds=0.5)
    assert [label for label, _ in costs] == [f"2 readers, {label}" for label, _, _ in READER_MODES]
    assert all(0 < cost < 10 for _, cost in costs), costs


def test_paced_reading_takes_real_time_and_unpaced_does_not():
    t0 = time.monotonic()
    _reader_cost(CLIP, paced=True, work="convert", seconds=1.0)
    paced = time.monotonic() - t0
    t0 = time.monotonic()
    _reader_cost(CLIP, paced=False, work=None, seconds=1.0)
    unpaced = time.monotonic() - t0
    assert paced >= 0.95, paced
    assert unpaced < paced, (unpaced, paced)
