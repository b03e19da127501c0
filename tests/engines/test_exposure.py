"""Exposure judged on the face (engines/signals/luminance.py): a low-key look, a dark background behind a lit
presenter or a dim face with its highlights kept read as exposed, and an exposure gain still reads under-exposed, on
real faces and on a drawn one."""

from __future__ import annotations

import math

import numpy as np
import pytest

from engines.signals import SIGNALS_VERSION, window_dimensions
from engines.signals.luminance import FACE_KEY_LUMA, MID_GREY, judge_exposure_on_face
from stream.config import AlertConfig
from tests.engines.test_colour_looks import clip, records
from train import distortions as D
from train import looks

THRESHOLD = AlertConfig().dimension_threshold
SOURCES = ("carphone-s0", "astronaut-c0", "avatar-blue")


def luminance(frames: np.ndarray, boxes: np.ndarray) -> dict[str, float]:
    dims = window_dimensions(records(frames, boxes), 10.0, SIGNALS_VERSION)
    return {region: d["luminance"] for region, d in dims.items()}


def under(frames: np.ndarray, level: int) -> np.ndarray:
    """The corpus's under-exposure (an exposure gain on linear light) at `level` (1-5)."""
    return D._luminance(frames, "under", D.LADDER[("luminance", "under")][level - 1])


def test_a_dim_face_with_its_highlights_reads_exposed_and_a_darkened_one_does_not():
    # a darker skin or a face half in a key light's shade: mean 80, its brightest 1 % at the key
    face = {"mean_luma": 80.0, "key_luma": FACE_KEY_LUMA, "dark_share": 0.0}
    judge_exposure_on_face(face, None)
    assert face["exposure_stops"] == 0.0
    # the same face with an exposure gain of 0.5: mean and highlights fall together
    face = {"mean_luma": 80.0 * 0.5, "key_luma": FACE_KEY_LUMA * 0.5, "dark_share": 0.0}
    judge_exposure_on_face(face, None)
    assert face["exposure_stops"] == pytest.approx(1.0)  # its key's stop, under its mean's 1.56
    assert math.log2(MID_GREY / 40.0) > 1.5
    # a bright face is read on its mean, over-exposure included
    face = {"mean_luma": 236.0, "key_luma": 255.0, "dark_share": 0.0}
    judge_exposure_on_face(face, None)
    assert face["exposure_stops"] == pytest.approx(1.0)


def test_a_background_darker_than_the_face_takes_the_faces_reading_and_keeps_its_blown_whites():
    face = {"mean_luma": MID_GREY, "key_luma": 200.0, "dark_share": 0.0, "exposure_stops": 0.0}
    frame = {"mean_luma": 40.0, "exposure_stops": 1.56, "dark_share": 0.3, "bright_share": 0.05, "clipped_share": 0.35}
    judge_exposure_on_face(face, frame)
    assert frame["exposure_stops"] == 0.0
    assert frame["clipped_share"] == pytest.approx(0.05)  # crushed shadows are the look, blown whites are not
    # a frame brighter than its face (a window behind a backlit presenter) is read on its own
    frame = {"mean_luma": 200.0, "exposure_stops": 0.76, "dark_share": 0.0, "bright_share": 0.3, "clipped_share": 0.3}
    judge_exposure_on_face(dict(face), frame)
    assert frame["exposure_stops"] == 0.76 and frame["clipped_share"] == 0.3


@pytest.mark.parametrize("source", SOURCES)
def test_a_low_key_look_reads_as_exposed_as_the_clean_clip(source):
    frames, boxes = clip(source)
    clean, low = luminance(frames, boxes), luminance(looks.apply_look(frames, "low-key"), boxes)
    for region in clean:
        assert low[region] > THRESHOLD + 20, (region, clean, low)
        assert low[region] > clean[region] - 12, (region, clean, low)


@pytest.mark.parametrize("source", SOURCES)
def test_under_exposure_still_falls_with_its_gain(source):
    """Levels 3-5 (gains 0.43, 0.3, 0.2): the face's luminance falls at each, the strongest at least 25 points
    under the clean clip's. (A face brighter than mid-grey reads better at the two mildest gains, as it did before
    exposure was judged on the face: its mean comes nearer mid-grey.)"""
    frames, boxes = clip(source)
    clean = luminance(frames, boxes)["face"]
    got = [luminance(under(frames, lv), boxes)["face"] for lv in (3, 4, 5)]
    assert got[0] > got[1] > got[2], got
    assert got[2] < clean - 25, (clean, got)


def test_a_low_key_look_moves_a_dim_portraits_score_by_at_most_10_points(tmp_path):
    """Biden's tight portrait (a val person: the forest never trained on him), clean and under the low-key look, through
    `fvq score`'s path. The look darkens his face 0.4 stops and crushes his dark suit; with exposure read on the face's
    mean alone it scored 70 against 89 clean."""
    from stream.config import MonitorConfig
    from stream.live.analysis import build_analyzer
    from stream.live.offline import analyse_file
    from train.face_sources import source_by_name
    from train.media import render, write_mp4

    cfg = MonitorConfig()
    analyzer = build_analyzer(cfg)
    src = source_by_name("biden-v0")
    w, h = (320, 180) if "landscape" in src.orientations else (180, 320)
    c = render(src, w, h, 10, 4.0)
    scores = {}
    for look in ("none", "low-key"):
        path = tmp_path / f"{look}.mp4"
        write_mp4(path, looks.apply_look(c.frames, look), 10, crf=16, preset="veryfast")
        scores[look] = float(np.mean([r.score for r in analyse_file(path, cfg, analyzer).results]))
    assert abs(scores["low-key"] - scores["none"]) <= 10, scores
