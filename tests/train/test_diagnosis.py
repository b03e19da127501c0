"""The diagnosis benchmark, and the verdicts it checks: each dimension moves for its own cause, on people and
content the corpus never shows (test-split people, relit scenes, animated avatars), through real H.264 files."""

from __future__ import annotations

import numpy as np
import pytest

from engines.bundle import shipped_bundle
from engines.features import DIMENSIONS
from train import distortions as D
from train.diagnosis import pairs
from train.diagnosis import verdict as G

HAVE_BUNDLE = (shipped_bundle() / "manifest.json").is_file()


def _clip(tmp_path, source: str, ds: list[D.Distortion], name: str, seconds: float = 4.0, frames=None):
    """A clip of `source` written as the corpus writes it (x264 CRF 16, or the distortion's own encode)."""
    from train.corpus import ClipPlan, write_clip
    from train.face_sources import source_by_name
    from train.media import render

    src = source_by_name(source)
    w, h = (320, 180) if "landscape" in src.orientations else (180, 320)
    ref = render(src, w, h, 25, seconds, seed=3)
    if frames is not None:
        ref.frames = frames(ref.frames)
    path = tmp_path / name
    write_clip(path, ref, ds, ClipPlan(name, "test", source, w, h, 25, seconds, 3))
    return path


@pytest.fixture(scope="module")
def signal_analyzer():
    """Faces and signal measurements, no model: what the published dimensions are made of."""
    from stream.config import MonitorConfig
    from stream.live.analysis import build_analyzer

    cfg = MonitorConfig(no_model=True)
    return cfg, build_analyzer(cfg)


def _dims(path, cfg, analyzer) -> dict[str, float]:
    from stream.live.offline import analyse_file, combine_dimensions

    return combine_dimensions(analyse_file(path, cfg, analyzer).results)


def test_compare_and_summary():
    ref = {"dims": dict.fromkeys(DIMENSIONS, 90.0), "causes": [], "score": 90.0, "low_bitrate": False}
    blur = {"dims": {**ref["dims"], "blur": 30.0, "temporal": 70.0}, "causes": ["source"], "score": 50.0,
            "low_bitrate": False}
    c = G.compare(ref, blur, ["blur"])
    assert c["fell_most"] == "blur" and c["cause_ok"] and c["alert_ok"]
    assert c["false"] == ["temporal"] and c["others"] == 5  # 20 points down on another dimension
    wrong = {**blur, "dims": {**ref["dims"], "blur": 80.0, "temporal": 20.0}, "causes": ["source", "stalls"]}
    w = G.compare(ref, wrong, ["blur"])
    assert w["fell_most"] == "temporal" and not w["cause_ok"] and not w["alert_ok"]
    rows = [{"families": ["blur"], "level": 5, "cmp": c}, {"families": ["blur"], "level": 4, "cmp": w},
            {"families": ["blur"], "level": 1, "cmp": w}]
    s = G.summarise(rows)
    assert s["clips"] == 2 and s["cause_accuracy"] == 0.5 and s["false_cause_rate"] == pytest.approx(2 / 10)
    assert s["confusion"]["blur"]["blur"] == 1 and s["confusion"]["blur"]["temporal"] == 1
    assert s["cross_talk"]["blur"]["temporal"] == pytest.approx(-45.0)
    assert G.by_level(rows)[1]["cause_accuracy"] == 0.0
    # a picture cause is "compression" when the bitrate is low and shows (the artifact score): the alert must
    # name that one; a low bitrate coded at a low quantiser leaves it "source"
    starved = {**blur, "low_bitrate": True, "dims": {**blur["dims"], "artifact": 60.0}}
    assert not G.compare(ref, starved, ["blur"])["alert_ok"]
    assert G.compare(ref, {**starved, "causes": ["compression"]}, ["blur"])["alert_ok"]
    assert G.compare(ref, {**blur, "low_bitrate": True}, ["blur"])["alert_ok"]


def test_no_visible_cause_is_scored_as_silence():
    """A clip where no dimension fell by the false-cause threshold: the top dimension is a chance pick, so the
    second definition scores silence as correct, and a wrong cause newly raised as wrong. The first definition's
    figures are kept unchanged beside it."""
    ref = {"dims": dict.fromkeys(DIMENSIONS, 90.0), "causes": [], "score": 90.0, "low_bitrate": False}
    faint = {**ref, "dims": {**ref["dims"], "blur": 89.0, "temporal": 80.0}, "causes": []}  # 10 points: not visible
    q = G.compare(ref, faint, ["blur"])
    assert not q["visible"] and not q["cause_ok"] and q["cause_ok_v2"] and q["alert_ok_v2"] and not q["alert_ok"]
    loud = G.compare(ref, {**faint, "causes": ["stalls"]}, ["blur"])  # silent dimensions, but a wrong cause fires
    assert not loud["visible"] and not loud["cause_ok_v2"] and not loud["alert_ok_v2"] and loud["wrong_new"] == ["stalls"]
    own = G.compare(ref, {**faint, "causes": ["source"]}, ["blur"])  # its own cause is not a wrong one
    assert own["cause_ok_v2"] and own["alert_ok_v2"]
    edge = G.compare(ref, {**faint, "dims": {**ref["dims"], "temporal": 74.0}}, ["blur"])  # 16 points: visible
    assert edge["visible"] and not edge["cause_ok_v2"]
    rows = [{"families": ["blur"], "level": 5, "cmp": c} for c in (q, loud, edge)]
    s = G.summarise(rows)
    assert s["cause_accuracy"] == 0.0 and s["cause_accuracy_v2"] == pytest.approx(1 / 3)
    assert s["silent_clips"] == 2 and s["silent_correct"] == 0.5 and s["visible_clips"] == 1
    assert s["per_family"]["blur"]["silent"] == 2
    text = G.format_summary("t", rows)
    assert "no visible cause" in text and "fell most) **0.000**" in text and "cause accuracy **0.333**" in text


def test_brighter_grade_of_a_dark_scene_is_scored_apart(tmp_path):
    """The ladder's strongest exposure gain on a low-key scene clips nothing and stays darker than a normal
    exposure: it is kept out of the second set of figures; on the stage-lit scene the same gain clips
    highlights and stays a distortion. The first figures count both."""
    dark = G.exposure_of(_clip(tmp_path, "sunak-dark", [D.Distortion("luminance", "over", 5)], "dark.mp4", 1.0))
    stage = G.exposure_of(_clip(tmp_path, "ardern-stage", [D.Distortion("luminance", "over", 5)], "stage.mp4", 1.0))
    assert not dark["over_visible"] and dark["clipped_share"] < G.OVER_CLIPPED_SHARE, dark
    assert stage["over_visible"] and stage["clipped_share"] > 0.1, stage
    ref = {"dims": dict.fromkeys(DIMENSIONS, 60.0), "causes": [], "score": 60.0, "low_bitrate": False}
    brighter = {**ref, "dims": {**ref["dims"], "luminance": 90.0}}  # luminance rose: nothing fell
    clipped = {**ref, "dims": {**ref["dims"], "luminance": 20.0}, "causes": ["camera"]}
    rows = [{"families": ["luminance"], "kind": "over", "region": "full", "level": 5, "exposure": dark,
             "cmp": G.compare(ref, brighter, ["luminance"])},
            {"families": ["luminance"], "kind": "over", "region": "full", "level": 5, "exposure": stage,
             "cmp": G.compare(ref, clipped, ["luminance"])}]
    s = G.summarise(rows)
    assert s["cause_accuracy"] == 0.5 and s["graded_clips"] == 1 and s["cause_accuracy_ex_graded"] == 1.0
    assert s["per_family"]["luminance"]["graded"] == 1 and s["per_family"]["luminance"]["cause_ex_graded"] == 1.0
    assert "brighter grade" in G.format_summary("t", rows)


@pytest.mark.parametrize("source", ["sunak-v0", "avatar-blue"])
def test_still_presenter_blurred_or_noisy_raises_no_temporal_cause(tmp_path, signal_analyzer, source):
    """A nearly still presenter: blur makes frame differences tiny and noise makes them large; neither is a
    change of timing. A real freeze of the same content still reads as one."""
    cfg, analyzer = signal_analyzer
    t = cfg.alerts.dimension_threshold
    temporal = {}
    for name, ds in [("clean", []), ("blur", [D.Distortion("blur", "gaussian", 5)]),
                     ("defocus", [D.Distortion("blur", "defocus", 5)]),
                     ("noise", [D.Distortion("noise", "sensor", 5)]),
                     ("freeze", [D.Distortion("temporal", "freeze", 4)])]:
        temporal[name] = _dims(_clip(tmp_path, source, ds, f"{name}.mp4"), cfg, analyzer)["temporal"]
    assert min(temporal[k] for k in ("clean", "blur", "defocus", "noise")) > t + 30, temporal
    # No false cause by the issue's own rule: temporal moves less than 15 points. (The clean clip reads 89.7-94.1 from
    # run to run because it is not the same file each time: PyAV's libx264 does not encode the same frames to the same
    # bytes every time within one process once other work has run in it (3 encodes of one clip, 3 different decoded
    # clips; with x264's mbtree off, 9 of 9 the same; a fresh process's first encode and the ffmpeg command line are
    # reproducible), and a near-still presenter's frame differences are that small. The blur bug this guards moved
    # temporal ~80 points.)
    assert max(abs(temporal[k] - temporal["clean"]) for k in ("blur", "defocus", "noise")) < 15, temporal
    assert temporal["freeze"] < t, temporal


def _cast(strength: float, warm: bool):
    def apply(frames):
        sign = 1.0 if warm else -1.0
        gains = np.array([1 + sign * strength, 1 + 0.15 * sign * strength, 1 - sign * strength], np.float32)
        return np.clip(frames.astype(np.float32) * gains + 0.5, 0, 255).astype(np.uint8)
    return apply


def _tint(fault: str, level: int):
    from train.looks import apply_fault

    return lambda frames: np.stack([apply_fault(f, fault, level) for f in frames]) if level else frames


@pytest.mark.parametrize(("source", "warm"), [("avatar-blue", True), ("avatar-green", False), ("sunak-v0", True),
                                              ("ardern-2018-v0", False), ("ardern-stage", True),
                                              ("ardern-2022-v1", True)])
def test_a_light_is_a_look_and_a_tint_is_colour_damage(tmp_path, signal_analyzer, source, warm):
    """A warm or cool white balance of up to 20% (red and blue gains apart, as a tungsten or shade light
    does: colour version 3 reads a light's colour as a look) keeps colour on the clean side of the alert threshold;
    a magenta or green tint that grows (each channel offset, as a wrong chroma offset or range conversion does)
    never lifts colour by more than 3 points and ends below the threshold. Neither lowers another dimension by more
    than 10 points. The content on its own (blue or green painted skin, two coloured stage gels) raises nothing."""
    cfg, analyzer = signal_analyzer
    t = cfg.alerts.dimension_threshold
    light = [_dims(_clip(tmp_path, source, [], f"cast{k}.mp4", seconds=2.0, frames=_cast(v, warm)), cfg, analyzer)
             for k, v in enumerate((0.0, 0.12, 0.2))]
    assert all(d["color"] > t + 10 for d in light), [d["color"] for d in light]
    fault = "tint-magenta" if warm else "tint-green"
    ladder = [light[0]] + [_dims(_clip(tmp_path, source, [], f"tint{lv}.mp4", seconds=2.0, frames=_tint(fault, lv)),
                                 cfg, analyzer) for lv in (1, 2, 3, 4)]
    colour = [d["color"] for d in ladder]
    assert all(b < a + 3 for a, b in zip(colour, colour[1:], strict=False)), colour
    assert colour[-1] < t and colour[-1] < colour[0] - 30, colour
    for dim in DIMENSIONS:  # no other dimension falls (a rise is no false cause)
        if dim != "color":
            falls = [ladder[0][dim] - d[dim] for d in ladder[1:] + light[1:]]
            assert max(falls) < 10, (dim, [round(d[dim]) for d in ladder + light])


@pytest.mark.parametrize("source", ["ardern-stage", "sunak-v0", "avatar-blue"])
def test_contrast_cut_lowers_luminance_not_colour(tmp_path, signal_analyzer, source):
    """A contrast cut around the mean (the corpus's "contrast" kind) shrinks chroma with luma: the colour dimension
    reads the colourfulness at a typical clean contrast, so it stays within 10 points while luminance falls by
    more than 15 at the strongest cut, the most of any dimension; desaturating the same clip still lowers colour."""
    cfg, analyzer = signal_analyzer
    clean = _dims(_clip(tmp_path, source, [], "clean.mp4", seconds=2.0), cfg, analyzer)
    cut = _dims(_clip(tmp_path, source, [D.Distortion("luminance", "contrast", 5)], "cut.mp4", seconds=2.0), cfg,
                analyzer)
    grey = _dims(_clip(tmp_path, source, [D.Distortion("color", "desaturate", 5)], "grey.mp4", seconds=2.0), cfg,
                 analyzer)
    assert cut["luminance"] < clean["luminance"] - 15, (clean, cut)
    assert min(DIMENSIONS, key=lambda d: cut[d] - clean[d]) == "luminance", (clean, cut)
    assert abs(cut["color"] - clean["color"]) < 10, (clean, cut)
    assert grey["color"] < clean["color"] - 30 and abs(grey["luminance"] - clean["luminance"]) < 10, (clean, grey)


def test_colourfulness_is_read_at_a_clean_contrast():
    from engines.signals import CHROMA_BOOST_MAX, CHROMA_CONTRAST_REF, colorfulness_at_contrast

    ref = CHROMA_CONTRAST_REF["frame"]
    assert colorfulness_at_contrast({"colorfulness": 30.0, "contrast": 2 * ref}, "frame") == 30.0  # never lowered
    assert colorfulness_at_contrast({"colorfulness": 10.0, "contrast": ref / 2}, "frame") == pytest.approx(20.0)
    assert colorfulness_at_contrast({"colorfulness": 10.0, "contrast": 1.0}, "frame") == 10.0 * CHROMA_BOOST_MAX
    face = CHROMA_CONTRAST_REF["face"]
    assert colorfulness_at_contrast({"colorfulness": 10.0, "contrast": face}, "face") == 10.0
    assert np.isnan(colorfulness_at_contrast({"colorfulness": float("nan"), "contrast": 5.0}, "face"))


def test_cast_is_read_only_as_far_as_grey_edge_and_grey_pixels_agree():
    """Two estimates of the light that point the same way: the cast is the smaller one; pointing apart: none.
    (A global cast moves both alike; a scene's own tinted wall pulls the grey pixels much more than the edges.)"""
    from engines.signals import _agreed_cast, _angle_to_white

    def light(deg: float, towards: np.ndarray) -> np.ndarray:  # a light `deg` degrees from white, towards a hue
        white = np.full(3, 1.0) / np.sqrt(3.0)
        t = towards - (towards @ white) * white
        return np.cos(np.radians(deg)) * white + np.sin(np.radians(deg)) * t / np.linalg.norm(t)

    blue, yellow = np.array([0.0, 0.0, 1.0]), np.array([1.0, 1.0, 0.0])
    assert _angle_to_white(light(8.0, blue)) == pytest.approx(8.0)
    assert _agreed_cast(light(4.3, blue), light(8.0, blue)) == pytest.approx(4.3)  # the close-up's wall: 8 vs 4.3
    assert _agreed_cast(light(8.0, blue), light(4.3, blue)) == pytest.approx(4.3)
    assert _agreed_cast(light(15.0, blue), light(14.0, blue)) == pytest.approx(14.0)  # a real cast reads in full
    assert _agreed_cast(light(6.0, blue), light(6.0, yellow)) == 0.0  # opposite: no agreed cast
    assert _agreed_cast(light(6.0, blue), np.full(3, 2.0)) == 0.0  # one estimate sees white light
    assert 0.0 < _agreed_cast(light(10.0, blue), light(10.0, np.array([0.0, 1.0, 1.0]))) < 10.0  # partly apart


def test_close_up_before_a_tinted_wall_reads_no_colour_cast(tmp_path, signal_analyzer):
    """The test split's close-up (ardern-2022-v1) in front of a blue-grey patterned wall, clean: the wall is the
    frame's largest near-grey surface, so the grey pixels alone read it as a blue light of 7-8 degrees (colour
    57-71 on clean clips before); the grey-edge estimate sees about 4 and the cast is read only as far as both
    agree. The cast ladder above checks that a real cast on the same close-up still reads."""
    cfg, analyzer = signal_analyzer
    dims = _dims(_clip(tmp_path, "ardern-2022-v1", [], "clean.mp4", seconds=2.0), cfg, analyzer)
    assert dims["color"] > 85, dims


@pytest.mark.skipif(not HAVE_BUNDLE, reason="needs the shipped bundle (engines/bundles/default)")
def test_face_only_blur_scores_below_background_only_blur_on_people_outside_training(tmp_path):
    """Pairs at equal full-frame PSNR (the corpus's own matching) on the test split's people: blurring the face
    costs more than blurring the background."""
    from stream.config import MonitorConfig
    from stream.live.analysis import build_analyzer
    from stream.live.offline import analyse_file, file_report
    from train.corpus import ClipPlan, match_background_strength, write_clip
    from train.face_sources import source_by_name
    from train.media import face_mask, render

    cfg = MonitorConfig()
    analyzer = build_analyzer(cfg)
    lower = []
    for source in ("sunak-v1", "ardern-2022-v0", "ardern-2018-v1"):
        src = source_by_name(source)
        ref = render(src, 180, 320, 25, 4.0, seed=5)
        face = D.Distortion("blur", "gaussian", 4, "face")
        strength, _ = match_background_strength(ref, face_mask(ref.boxes, 180, 320), face, 5)
        bg = D.Distortion("blur", "gaussian", 4, "background", strength=strength)
        scores = {}
        for role, d in (("face", face), ("background", bg)):
            path = tmp_path / f"{source}-{role}.mp4"
            write_clip(path, ref, [d], ClipPlan(path.name, "test", source, 180, 320, 25, 4.0, 5))
            scores[role] = file_report(analyse_file(path, cfg, analyzer))["score"]
        lower.append(scores["face"] < scores["background"])
    assert all(lower), lower


@pytest.mark.skipif(not HAVE_BUNDLE, reason="needs the shipped bundle (engines/bundles/default)")
def test_published_score_is_steady_on_a_steady_stream():
    """The demo's degraded sample repeats the same damage every 5 s (blur, noise, a starved encoder, a 1 s freeze);
    one window in five misses the freeze. Its raw window scores jump; the published ones stay within 5 points."""
    from pathlib import Path

    from stream.config import MonitorConfig
    from stream.live.analysis import build_analyzer
    from stream.live.offline import analyse_file

    cfg = MonitorConfig()
    results = analyse_file(Path(__file__).parents[2] / "samples" / "degraded.mp4", cfg, build_analyzer(cfg)).results
    published = np.array([r.score for r in results])
    raw = np.array([r.details.get("window_score", r.score) for r in results])
    assert np.abs(np.diff(raw)).max() > 15, raw  # the windows themselves differ: the smoothing is what holds
    assert np.percentile(np.abs(np.diff(published)), 95) <= 5, published


@pytest.mark.xfail(strict=False, reason=(
    "known weakness of colour version 3 (issue 25): the corpus's strongest sensor noise on the green avatar sometimes "
    "lets the face detector find its drawn face (not found when clean) and spreads its fill's luma (shading 10-12 "
    "after a 5x5 median, drawn faces read 0-5), so its green skin is judged as a human's (skin_hue_off 69) and "
    "colour falls most; the noise is unseeded, so it happens in some runs"))
def test_diagnosis_ladder_on_unseen_content(tmp_path):
    """End to end on one unseen source at the strongest level: every family's own dimension falls most."""
    from stream.config import MonitorConfig
    from stream.live.analysis import build_analyzer

    cfg = MonitorConfig(no_model=True)
    records = pairs.ladder_clips(["avatar-green"], tmp_path, levels=(5,), duration=2.0)
    assert len(records) == len(G.FAMILIES) + 1 and (tmp_path / "avatar-green_clean.mp4").is_file()
    assert {r["kind"] for r in records if r["families"] == ["luminance"]} == {"over", "contrast"}
    rows = pairs.ladder_rows(records, cfg, build_analyzer(cfg), progress=False)
    s = G.summarise(rows)
    assert s["clips"] == 7 and s["cause_accuracy"] == 1.0, {r["file"]: r["cmp"]["fell_most"] for r in rows}
    assert s["false_cause_rate"] <= 0.1
    assert "cause accuracy" in G.format_summary("t", rows)


@pytest.mark.parametrize("source", ["ardern-2018-v0", "ardern-2022-v1"])
def test_oversaturated_skin_lowers_colour_and_only_colour(tmp_path, signal_analyzer, source):
    """Saturation pushed up (the corpus's "saturate" kind) shows on skin, judged where the face's hue is a skin
    hue: colour falls below the alert threshold at the strongest level, the other dimensions stay. (On the
    darker, less saturated skin of the test split's other person the absolute limit is reached only at level 5
    and colour stays above the threshold: docs/signals.md, known weaknesses.)"""
    cfg, analyzer = signal_analyzer
    t = cfg.alerts.dimension_threshold
    ladder = [_dims(_clip(tmp_path, source, [D.Distortion("color", "saturate", lv)] if lv else [], f"sat{lv}.mp4",
                          seconds=2.0), cfg, analyzer) for lv in (0, 3, 5)]
    colour = [d["color"] for d in ladder]
    # colour version 3 judges skin with the scene light divided out: level 3 (a vivid grade, nothing clipped) may
    # read as a look; the strongest level, channels clipping, is damage
    assert colour[0] > t and colour[2] < t and colour[2] < colour[0] - 30, colour
    for dim in DIMENSIONS:
        if dim != "color":
            assert max(abs(d[dim] - ladder[0][dim]) for d in ladder[1:]) < 10, (dim, [round(d[dim]) for d in ladder])
