"""Cheap signal measurements per distortion family (engines/families.py), each family's mapped to a 0-100 dimension.

One module per family's measurement (blur_noise, blockiness, colour, luminance, temporal) and the curves they
share (common); this module runs them over a frame's regions and a window's frames and turns the raw
measurements into dimension scores. docs/signals.md explains every constant and how it was chosen.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from engines.families import DIMENSIONS, FAMILIES, PICTURE, TIMING
from engines.features import FrameRecord, Window, WindowMeasures, window_faces
from engines.signals.blockiness import BLOCK, BLOCK_STEP_CLIP, _blockiness, add_quantiser
from engines.signals.blur_noise import (
    COARSE_SIGMA,
    FINE_SIGMA,
    GRAIN_MIN_PX,
    MIN_EDGES,
    _grain_sigma,
    _noise_and_blur,
    _robust_sigma,
    temporal_grain,
)
from engines.signals.colour import (
    CAST_ESTIMATE,
    CAST_TOLERANCE_DEG,
    CHROMA_BOOST_MAX,
    CHROMA_CONTRAST_REF,
    CHROMA_ESTIMATE,
    GREY_SATURATION,
    MIN_GREY_SHARE,
    SKIN_HUES,
    SKIN_SATURATION_MAX,
    _agreed_cast,
    _angle_to_white,
    _color,
    _grey_pixel_light,
    _skin,
    colorfulness_at_contrast,
)
from engines.signals.colour_pipeline import (
    skin_chroma,
    skin_plausibility,
    skin_saturation_under_light,
)
from engines.signals.colour_switch import colour_switch
from engines.signals.common import (
    BRIGHT_LEVEL,
    CURVES,
    DARK_LEVEL,
    LEGACY_CURVES,
    TIMING_MEASUREMENTS,
    V2_CURVES,
    _falling,
    _luma,
    _percentile,
    _rising,
)
from engines.signals.luminance import MID_GREY, _luminance, judge_exposure_on_face, key_luma
from engines.signals.temporal import (
    CATCH_UP,
    FREEZE_MIN_INTERVALS,
    HELD_GAP_S,
    HELD_MAD,
    HELD_MIN_S,
    LEGACY_REPEAT,
    LEGACY_REPEAT_MAD,
    REPEAT_MAD,
    REPEAT_SHARE,
    STALL_FACTOR,
    STARVED_QP,
    STILL_MOTION,
    thumb_change,
    thumb_changes,
    thumb_signals,
)

__all__ = [  # the measurements' names, read from here by the rest of the project and the tests
    "BLOCK", "BLOCK_STEP_CLIP", "BRIGHT_LEVEL", "CAST_ESTIMATE", "CAST_TOLERANCE_DEG", "CATCH_UP", "CHROMA_BOOST_MAX",
    "CHROMA_CONTRAST_REF", "CHROMA_ESTIMATE", "COARSE_SIGMA", "CURVES", "DARK_LEVEL", "FINE_SIGMA",
    "FREEZE_MIN_INTERVALS", "GRAIN_MIN_PX", "GREY_SATURATION", "HELD_GAP_S", "HELD_MAD", "HELD_MIN_S", "LEGACY_CURVES", "LEGACY_REPEAT", "LEGACY_REPEAT_MAD",
    "MID_GREY", "MIN_EDGES", "MIN_GREY_SHARE", "REPEAT_MAD", "REPEAT_SHARE", "SIGNALS_VERSION", "SKIN_HUES",
    "SKIN_SATURATION_MAX", "STALL_FACTOR", "STARVED_QP", "STILL_MOTION", "TIMING_MEASUREMENTS", "V2_CURVES",
    "_agreed_cast", "_angle_to_white", "_blockiness", "_color", "_falling", "_grain_sigma", "_grey_pixel_light",
    "_luma", "_luminance", "_noise_and_blur", "_percentile", "_rising", "_robust_sigma", "_skin",
    "add_quantiser", "analyse_frame_signals", "colorfulness_at_contrast", "dimension_score", "dimensions_by_version",
    "frame_signals", "measure_window", "photographed_in_most", "spatial_scores", "temporal_grain", "thumb_change", "thumb_changes", "thumb_signals",
    "window_dimensions",
]


# Part of the training feature cache's key (train/clip_features.py): bump it whenever a measurement changes or is added,
# or cached features computed before would be read as current. 3: a held picture is a freeze in any scene
# (temporal.HELD_MAD), a light's colour is a look (engines/signals/colour_pipeline.py), the blur curve calibrated on
# live-encoded faults at the analysed size and grain read between pictures (blur_noise.temporal_grain); bundles
# trained on 1 or 2 read the measurements of their version (the shipped one: 1).
SIGNALS_VERSION = 3


def _region_signals(rgb: np.ndarray, face: bool = False) -> dict[str, float]:
    y = _luma(rgb)
    out = _noise_and_blur(y)
    out["grain_sigma"] = _grain_sigma(y)
    out["blockiness"] = _blockiness(y)
    out.update(_color(rgb))
    lum = _luminance(y)
    lum["clipped_share"] = lum["dark_share"] + lum["bright_share"]
    if face:  # the face's key, on which its exposure is judged (luminance.judge_exposure_on_face)
        lum["key_luma"] = key_luma(y)
    out.update(lum)
    return out


def _crop(image: np.ndarray, box: tuple[float, float, float, float]) -> np.ndarray | None:
    h, w = image.shape[:2]
    x, y, bw, bh = box
    x0, y0 = max(0, int(round(x))), max(0, int(round(y)))
    x1, y1 = min(w, int(round(x + bw))), min(h, int(round(y + bh)))
    if x1 - x0 < 16 or y1 - y0 < 16:
        return None
    return image[y0:y1, x0:x1]


def frame_signals(
    image: np.ndarray, face_box: tuple[float, float, float, float] | None
) -> dict[str, dict[str, float]]:
    """Raw spatial measurements of one RGB uint8 frame: {"frame": {...}, "face": {...} when a box (x, y, w, h) is given}.

    A face box smaller than 16x16 px after clipping to the frame gives no "face" region.
    """
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"frame_signals wants an (h, w, 3) uint8 RGB image, got {image.dtype} {image.shape}")
    out = {"frame": _region_signals(image)}
    if face_box is not None:
        crop = _crop(image, face_box)
        if crop is not None:
            face = out["face"] = _region_signals(np.ascontiguousarray(crop), face=True)
            face.update(_skin(crop))
            face.update(skin_plausibility(crop, face.get("edge_blur_px", 0.0), face.get("noise_sigma", 0.0)))
            frame = out["frame"]
            light_rg, light_bg = frame.get("light_log_rg", math.nan), frame.get("light_log_bg", math.nan)
            luma_range = frame.get("range_white", math.nan) - frame.get("range_black", math.nan)
            face.update(skin_chroma(crop, light_rg, light_bg, luma_range))
            if math.isfinite(face.get("skin_hue_off", math.nan)):  # a photographed face
                face.update(skin_saturation_under_light(crop, light_rg, light_bg))
    return out


def analyse_frame_signals(record: FrameRecord) -> dict[str, dict[str, float]] | None:
    """Fills `record.signals` from its image and main face (once; later calls reuse it). None for unsampled frames."""
    if record.signals is None and record.image is not None:
        face = record.main_face
        box = face.box if face is not None else None
        record.signals = frame_signals(record.image, box)
        if record.qp_map is not None:
            add_quantiser(record.signals, record.qp_map, record.image.shape[:2], box)
    return record.signals


def dimension_score(dimension: str, raw: dict[str, float], version: int = SIGNALS_VERSION) -> float:
    """0..100 (higher is better) for one dimension from its raw measurements (NaN when none are known)."""
    factors = []
    curves = CURVES if version >= 3 else V2_CURVES if version == 2 else LEGACY_CURVES
    for name, (kind, x50, p) in curves[dimension].items():
        x = raw.get(name, float("nan"))
        v = (_falling if kind == "falling" else _rising)(x, x50, p)
        if math.isfinite(v):
            factors.append(v)
    if not factors:
        return float("nan")
    return 100.0 * float(np.prod(factors))


def spatial_scores(raw: dict[str, float], version: int = SIGNALS_VERSION) -> dict[str, float]:
    """The picture dimensions' 0..100 scores of one region's raw measurements (NaN where unknown)."""
    return {f.name: dimension_score(f.name, raw, version) for f in FAMILIES if f.measured_from == PICTURE}


def _aggregate(rows: list[dict[str, float]]) -> dict[str, float]:
    keys = {k for r in rows for k in r}
    out = {}
    for k in keys:
        v = np.array([r.get(k, np.nan) for r in rows], dtype=np.float64)
        v = v[np.isfinite(v)]
        out[k] = float(np.median(v)) if v.size else float("nan")
    return out


def window_dimensions(frames: Sequence[FrameRecord], nominal_fps: float | None = None,
                      version: int = SIGNALS_VERSION) -> dict[str, dict[str, float]]:
    """Region ("frame", and "face" when a sampled frame had one) -> dimension -> 0..100, higher is better.

    Spatial dimensions use the median of the sampled frames' raw signals (computed here if the analysis loop
    has not), temporal uses every frame's thumbnail and timestamp and is the same for both regions. A
    dimension that cannot be measured (no sampled frame; no edges at all for blur) is left out.

    `version` 1 gives the first measurements (what bundles trained before version 2 read as features): a
    repeat was any pair under 0.35 levels, and the face's colour cast was read from the face crop, where a skin
    tone (or an avatar's painted skin) looks like a cast. Version 2 judges repeats against the
    stream's own motion (see thumb_signals) and reads the cast of both regions from the whole scene. Version 3
    (published) also reads a held picture as a freeze in any scene, with no catch-up (temporal.HELD_MAD), reads a
    light's colour as a look, and colour damage from what no light does: chroma on the blacks and implausible skin
    on a photographed face (engines/signals/colour_pipeline.py).
    """
    return dimensions_by_version(frames, nominal_fps, (version,))[version]


def dimensions_by_version(frames: Sequence[FrameRecord], nominal_fps: float | None,
                          versions: Sequence[int]) -> dict[int, dict[str, dict[str, float]]]:
    """window_dimensions in each of `versions`, reading the frames' signals and thumbnail changes once for all."""
    rows: dict[str, list[dict[str, float]]] = {"frame": [], "face": []}
    previous: FrameRecord | None = None
    for f in frames:
        sig = analyse_frame_signals(f)
        if sig and "temporal_grain" not in sig["frame"] and previous is not None:
            # against the previous sampled picture (kept on the record: overlapping windows share it)
            sig["frame"]["temporal_grain"] = temporal_grain(_luma(previous.image), _luma(f.image))  # type: ignore[arg-type]
        if sig and previous is not None and not f.switch_read:
            thumbs = [r.thumb for r in frames if previous.pts <= r.pts <= f.pts]
            f.colour_switch = colour_switch(previous.image, f.image, thumbs)  # type: ignore[arg-type]
            f.switch_read = True
        if sig:
            previous = f
            for region, raw in sig.items():
                rows[region].append(raw)
    aggregated = {region: _aggregate(rows[region]) for region in ("frame", "face") if rows[region]}
    changes = thumb_changes(frames)
    return {v: _dimensions(frames, nominal_fps, v, rows, aggregated, changes) for v in dict.fromkeys(versions)}


def _dimensions(frames: Sequence[FrameRecord], nominal_fps: float | None, version: int,
                rows: dict[str, list[dict[str, float]]], aggregated: dict[str, dict[str, float]],
                changes: np.ndarray) -> dict[str, dict[str, float]]:
    timing: dict[str, float] = {}  # the TIMING families' scores, the same for both regions
    if frames:
        repeat: dict[str, float] = LEGACY_REPEAT if version < 2 else {"held_mad": HELD_MAD if version >= 3 else 0.0}
        qps = [r["qp"] for r in rows["frame"] if math.isfinite(r.get("qp", float("nan")))]
        if version >= 2 and qps and float(np.median(qps)) >= STARVED_QP:
            # a starved encoder skips blocks and holds pictures, then catches up: its repeats are compression
            # (the artifact score reads the quantiser), so only the timestamps judge the timing here
            repeat = {"still_motion": float("inf")}
        thumbs = thumb_signals([f.thumb for f in frames], np.array([f.pts for f in frames]), nominal_fps, **repeat,
                               changes=changes)
        timing = {f.name: dimension_score(f.name, thumbs) for f in FAMILIES if f.measured_from == TIMING}
    raw = {region: dict(values) for region, values in aggregated.items()}  # each version edits its own copy
    if version >= 2:
        for region, values in raw.items():
            values["colorfulness_at_contrast"] = colorfulness_at_contrast(values, region)
    if version >= 2 and "face" in raw and "frame" in raw:
        # A cast is a property of the light on the whole scene: a face crop's own hue is its skin (any human
        # tone, or an avatar's blue), which the crop alone cannot tell from a white-balance error.
        for key in ("grey_cast_deg", "cast_excess_deg"):
            raw["face"][key] = raw["frame"].get(key, float("nan"))
        # oversaturated skin is judged on the face and counts for the whole picture's colour
        raw["frame"]["skin_excess"] = raw["face"].get("skin_excess", float("nan"))
    if version >= 3 and "face" in raw:
        # exposure is judged on the face: a dim skin or a key light is not under-exposure, nor a dark background
        judge_exposure_on_face(raw["face"], raw.get("frame"))
        # skin is judged on a face photographed in most of the window's pictures: the median of the pictures that
        # judged it would let one picture of a drawn face (a key light's fall-off or the encoder's noise breaking
        # its flat patch) judge its green or blue fill as a human's skin
        if not photographed_in_most(rows["face"]):
            for key in ("skin_hue_off", "skin_excess_lit"):
                raw["face"][key] = float("nan")
    if version >= 3 and "face" in raw and "frame" in raw:
        # blacks are the picture's (a face crop's darkest pixels are hair and eyes); implausible skin, judged on
        # the face, counts for the whole picture's colour
        for key in ("black_tint", "range_washed", "wb_off_locus"):
            raw["face"][key] = raw["frame"].get(key, float("nan"))
        for key in ("skin_hue_off", "skin_excess_lit", "skin_chroma_short"):
            raw["frame"][key] = raw["face"].get(key, float("nan"))
    out: dict[str, dict[str, float]] = {}
    for region in ("frame", "face"):
        if region == "face" and not rows["face"]:
            continue
        scores = spatial_scores(raw[region], version) if region in raw else {}
        scores.update(timing)
        out[region] = {d: round(v, 2) for d in DIMENSIONS if math.isfinite(v := scores.get(d, float("nan")))}
    return out


def photographed_in_most(face_rows: list[dict[str, float]]) -> bool:
    """Whether skin was judged (skin_plausibility found a photographed face, sharp enough) in at least half of the
    pictures where the window saw a face."""
    judged = sum(math.isfinite(r.get("skin_hue_off", math.nan)) for r in face_rows)
    return 2 * judged >= len(face_rows) > 0


def measure_window(window: Window, versions: Sequence[int] = (SIGNALS_VERSION,)) -> WindowMeasures:
    """Adds up the window's per-frame results once and carries them on it (window.measures): its faces, and its
    dimension scores in each signals version asked for; a later call computes only the versions still missing."""
    m = window.measures
    if m is None:
        m = window.measures = WindowMeasures(window_faces(window.sampled), {})
    missing = [v for v in dict.fromkeys(versions) if v not in m.dimensions]
    if missing:
        m.dimensions.update(dimensions_by_version(window.frames, window.nominal_fps, missing))
    return m
