"""A window's way: per-frame results measured once, added up once per window, carried on it for the analysis and the rater."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from engines import signals
from engines.features import Face, FrameRecord, Window, window_faces
from engines.rater import FeatureSpec, assemble_window_features, interval_features
from engines.signals import measure_window, thumb_changes, thumb_signals, window_dimensions
from stream.config import WindowConfig
from stream.live.analysis import summarise_window
from stream.live.windows import WindowAssembler

FPS = 25.0


def face(x: float, w: float, h: float) -> Face:
    return Face((x, 10.0, w, h), 0.9, np.zeros((5, 2), np.float32))


def creeping_window() -> Window:
    """A presenter who barely moves: every pair of thumbs differs by ~0.2 levels, a repeat for version 1's test
    (any pair under 0.35) and motion for version 2's, so the two versions' temporal scores differ."""
    rng = np.random.default_rng(7)
    thumb = rng.integers(40, 200, (36, 64)).astype(np.int16)
    asm = WindowAssembler("cam", WindowConfig(length_s=2, hop_s=1))
    windows = []
    for i in range(100):
        idx = rng.choice(thumb.size, 230, replace=False)
        thumb.flat[idx] += rng.choice([-2, 2], 230)
        r = FrameRecord(pts=i / FPS, thumb=np.clip(thumb, 0, 255).astype(np.uint8), source_size=(160, 90))
        if i % 5 == 0:
            r.image = rng.integers(0, 255, (90, 160, 3), dtype=np.uint8)
            if i % 10 == 0:
                r.faces = [face(20.0 + i, 40.0, 50.0)]
                r.embedding = rng.standard_normal(128).astype(np.float32)
        windows += asm.add(r)
    for w in windows:
        w.nominal_fps = FPS
    return windows[1]


def test_window_faces_counts_presence_size_movement_and_identity():
    frames = []
    for i, f in enumerate([face(10, 40, 40), None, face(30, 40, 40), face(0, 200, 100)]):
        r = FrameRecord(pts=i / 2, thumb=np.zeros((9, 16), np.uint8), source_size=(160, 90),
                        image=np.zeros((90, 160, 3), np.uint8))
        r.faces = [f] if f else []
        r.embedding = np.ones(128, np.float32) * (i + 1) if f else None
        frames.append(r)
    faces = window_faces(frames)
    assert faces.presence == 0.75
    # the last box is bigger than the frame (200x100 on 160x90): published capped at 1, the rater's uncapped
    shares = [1600 / 14400, 1600 / 14400, 20000 / 14400]
    assert faces.size == pytest.approx((shares[0] + shares[1] + 1.0) / 3)
    assert faces.size_uncapped == pytest.approx(np.mean(shares)) and faces.size_uncapped > faces.size
    assert faces.identity_stability == pytest.approx(1.0)  # embeddings all point the same way
    assert faces.jitter > 0
    empty = window_faces([])
    assert (empty.presence, empty.size, empty.jitter, empty.identity_stability) == (0.0, 0.0, 0.0, None)


def test_carried_changes_give_the_very_same_temporal_measurements():
    w = creeping_window()
    thumbs, pts = [f.thumb for f in w.frames], np.array([f.pts for f in w.frames])
    carried = thumb_changes(w.frames)
    assert all(f.change is not None for f in w.frames[1:])
    for repeat in ({}, signals.LEGACY_REPEAT):
        assert thumb_signals(thumbs, pts, FPS, **repeat, changes=carried) == thumb_signals(thumbs, pts, FPS, **repeat)
    assert np.array_equal(interval_features(pts, thumbs, FPS, carried), interval_features(pts, thumbs, FPS))
    with pytest.raises(ValueError, match="changes"):
        thumb_signals(thumbs, pts, FPS, changes=carried[:-1])


def test_the_rater_reads_what_the_window_carries_in_its_bundles_version(monkeypatch):
    w = creeping_window()
    cur = signals.SIGNALS_VERSION  # what the monitor publishes (3 since the live-fault curves)
    v1, v2 = window_dimensions(w.frames, FPS, version=1), window_dimensions(w.frames, FPS, version=2)
    assert v1["frame"]["temporal"] < v2["frame"]["temporal"] - 20  # the window tells the versions apart
    published_version = window_dimensions(w.frames, FPS, version=cur)

    calls = []
    real = signals.dimensions_by_version
    monkeypatch.setattr(signals, "dimensions_by_version", lambda *a: calls.append(a[2]) or real(*a))
    published = summarise_window(w)  # the analysis: current version only
    assert published.dimensions == published_version and calls == [[cur]]
    spec = FeatureSpec(frames=4, temporal_len=8, thumb_size=(16, 16), interval_len=8, spatial_shape=(7,),
                       portrait_shape=(7,), signals_version=1)
    stats = dict(zip(spec.signal_names(), assemble_window_features(w, spec).signals.tolist(), strict=True))
    # a version-1 bundle reads version 1's scores, measured once more for it only, never the published version
    assert calls == [[cur], [1]] and sorted(w.measures.dimensions) == [1, cur]
    assert stats["window.frame_temporal"] == pytest.approx(v1["frame"]["temporal"])
    # faces are counted once for both: what the rater reads is what the analysis published
    assert stats["window.face_presence"] == pytest.approx(published.face_presence) == 0.5
    assert stats["window.identity_stability"] == pytest.approx(published.identity_stability)
    assemble_window_features(w, dataclasses.replace(spec, signals_version=cur))
    measure_window(w, (1, cur))
    assert calls == [[cur], [1]]  # nothing measured twice
    published.dimensions["frame"]["temporal"] = 0.0  # smoothing edits what is published, not what the window holds
    assert w.measures.dimensions[cur]["frame"]["temporal"] == published_version["frame"]["temporal"]
