"""Colour: colourfulness at a clean contrast, saturation, the light's cast (grey-edge and grey pixels) and skin."""

from __future__ import annotations

import math

import cv2
import numpy as np

from engines.signals.colour_pipeline import agreed_off_locus, black_tint, range_signature, uniform_off_locus


def _color(rgb: np.ndarray) -> dict[str, float]:
    """Colourfulness (Hasler-Suesstrunk on luma-normalised opponents), saturation, grey-edge cast angle."""
    h, w = rgb.shape[:2]
    f = max(1, min(4, min(h, w) // 24))
    small = cv2.resize(rgb, (w // f, h // f), interpolation=cv2.INTER_AREA) if f > 1 else rgb
    r, g, b = (c.astype(np.float32) for c in cv2.split(small))  # per-channel planes: numpy reduces them fast
    mx = np.maximum(np.maximum(r, g), b)
    mn = np.minimum(np.minimum(r, g), b)
    s = r + g + b
    unclipped = mx < 250
    ok = (s > 3 * 16) & unclipped
    res = {"colorfulness": float("nan"), "saturation": float("nan"), "cast_deg": float("nan")}
    if int(np.count_nonzero(ok)) >= 16:
        ybar = s[ok] / 3.0
        rg = (r[ok] - g[ok]) / ybar
        yb = (0.5 * (r[ok] + g[ok]) - b[ok]) / ybar
        res["colorfulness"] = 100.0 * (
            math.sqrt(float(rg.var()) + float(yb.var())) + 0.3 * math.hypot(float(rg.mean()), float(yb.mean()))
        )
        res["saturation"] = float(np.mean((mx[ok] - mn[ok]) / mx[ok]))
    # grey-edge illuminant (van de Weijer 2007): per-channel mean gradient, skipping pairs with a clipped channel
    u = unclipped.astype(np.float32)
    wy, wx = u[1:] * u[:-1], u[:, 1:] * u[:, :-1]
    e = np.array(
        [float((np.abs(c[1:] - c[:-1]) * wy).sum() + (np.abs(c[:, 1:] - c[:, :-1]) * wx).sum()) for c in (r, g, b)]
    )
    norm = float(np.linalg.norm(e))
    if norm > 0:
        res["cast_deg"] = _angle_to_white(e)
        grey_light = _grey_pixel_light(r, g, b, ok, e)
        res["grey_cast_deg"] = _agreed_cast(e, grey_light)
        res["cast_excess_deg"] = max(0.0, res["grey_cast_deg"] - CAST_TOLERANCE_DEG)
        # version 3: the light's colour off the black-body locus, and what pipelines leave on blacks and channels
        res["light_off_locus"] = abs(agreed_off_locus(e / max(float(e.mean()), 1e-6), grey_light))
        if float(np.min(grey_light)) > 0:  # the light's colour, for a stream's colour against its own past
            res["light_log_rg"] = math.log(float(grey_light[0] / grey_light[1]))
            res["light_log_bg"] = math.log(float(grey_light[2] / grey_light[1]))
            if abs(res["light_log_bg"]) <= 1.0:  # a light so warm its blue is clipped (a candle) is not judged
                res["wb_off_locus"] = uniform_off_locus(small, unclipped)
    res.update(black_tint(small))
    step = max(1, max(h, w) // 160)  # every step-th pixel, not an average: the extremes are what it reads
    res.update(range_signature(rgb[::step, ::step]))
    return res


def _angle_to_white(e: np.ndarray) -> float:
    norm = float(np.linalg.norm(e))
    if norm <= 0:
        return float("nan")
    return math.degrees(math.acos(min(1.0, float(e.sum()) / (norm * math.sqrt(3.0)))))


# Clean scenes' grey surfaces sit up to ~5 degrees from white (a beige wall, a blue-grey backdrop, stage gels
# that mix to near white): only the excess over this is scored, so content alone raises no colour cause and a
# cast that first cancels a scene's own tint cannot lift the score much.
CAST_TOLERANCE_DEG = 5.0


GREY_SATURATION = 0.12  # a pixel this close to grey once the illuminant estimate is divided out is a grey surface


MIN_GREY_SHARE = 0.02  # fewer grey pixels than this share of the region: keep the grey-edge estimate


# How version 2's grey_cast_deg is estimated, part of the training feature cache's key (train/clip_features.py) beside
# SIGNALS_VERSION: no bundle read the grey-pixel-only cast, so version 2 changed in place and only caches move on.
CAST_ESTIMATE = "grey-edge and grey-pixel agreement"


# Colourfulness falls with contrast: a contrast cut (or haze, a flat grade) pulls every pixel towards the mean in
# RGB, so chroma shrinks with luma contrast, and the colour dimension read it as washed-out colour (the corpus's
# whole-frame cut to 28% lowered colour 35 points and luminance 29). Version 2's colour reads the colourfulness a
# region would have at a typical clean contrast: below CHROMA_CONTRAST_REF (the median luma std of the clean clips
# of the corpus's train and val splits, per region: a face crop is flatter than the frame) it is scaled up by
# reference / contrast, at most CHROMA_BOOST_MAX times, so the loss of a flat picture is the luminance dimension's
# to report. Desaturation keeps luma contrast and still lowers it. Part of the cache key like CAST_ESTIMATE.
CHROMA_CONTRAST_REF = {"frame": 67.0, "face": 49.0}


CHROMA_BOOST_MAX = 4.0  # the corpus's strongest contrast cut (to 28%) needs 3.6x


CHROMA_ESTIMATE = "colourfulness at clean contrast (frame 67, face 49; at most 4x)"


def colorfulness_at_contrast(raw: dict[str, float], region: str) -> float:
    """The region's colourfulness scaled to a typical clean contrast (CHROMA_CONTRAST_REF), never scaled down."""
    c, k = raw.get("colorfulness", float("nan")), raw.get("contrast", float("nan"))
    if not (math.isfinite(c) and math.isfinite(k)):
        return c
    return c * min(CHROMA_BOOST_MAX, max(1.0, CHROMA_CONTRAST_REF[region] / max(k, 1e-6)))


def _grey_pixel_light(r: np.ndarray, g: np.ndarray, b: np.ndarray, ok: np.ndarray, start: np.ndarray) -> np.ndarray:
    """The light's colour (an RGB vector) estimated from the scene's grey surfaces (walls, whites, shirts,
    windows): start from the grey-edge estimate, keep the pixels that are grey once it is divided out, and take
    their mean colour as the next estimate (three rounds). Strongly coloured content (an avatar's blue or green
    skin, a red wall, any skin tone) is never grey and so does not pull the estimate; with too few grey pixels,
    the grey-edge estimate stands."""
    n_ok = int(np.count_nonzero(ok))
    if n_ok < 16:
        return start
    rr, gg, bb = r[ok], g[ok], b[ok]
    e = start / max(float(start.mean()), 1e-6)
    for _ in range(3):
        cr, cg, cb = rr / e[0], gg / e[1], bb / e[2]
        mx = np.maximum(np.maximum(cr, cg), cb)
        mn = np.minimum(np.minimum(cr, cg), cb)
        grey = (mx - mn) < GREY_SATURATION * mx
        if int(np.count_nonzero(grey)) < max(16, MIN_GREY_SHARE * n_ok):
            break
        # the brighter half of the grey surfaces: whites (walls, windows, eyes, shirts) are the least tinted by
        # their own colour, a beige wall or a grey-brown shadow more
        lum = (cr + cg + cb)[grey]
        grey[grey] = lum >= np.median(lum)
        new = np.array([float(rr[grey].mean()), float(gg[grey].mean()), float(bb[grey].mean())])
        new /= max(float(new.mean()), 1e-6)
        if float(np.abs(new - e).max()) < 1e-3:
            e = new
            break
        e = new
    return e


_WHITE = np.full(3, 1.0 / math.sqrt(3.0))


def _agreed_cast(edge: np.ndarray, grey: np.ndarray) -> float:
    """The cast (degrees from white) that the grey-edge and the grey-pixel estimates of the light agree on: each
    estimate's offset from white (its unit vector less its white component, of length sin(angle)), the shorter
    length, times the cosine between the two offsets (nothing when they point apart). A global cast moves every
    surface and every edge of the scene alike, so both estimates see it in the same direction and it reads in
    full; a scene's own tinted surface (a blue-grey patterned wall behind a close-up, a stage gel) pulls one of
    them much more than the other, or the two in different directions, and reads only as far as both see it."""
    offsets = []
    for e in (edge, grey):
        norm = float(np.linalg.norm(e))
        if norm <= 0:
            return float("nan")
        u = e / norm
        offsets.append(u - float(u @ _WHITE) * _WHITE)
    la, lb = (float(np.linalg.norm(o)) for o in offsets)
    if la < 1e-9 or lb < 1e-9:
        return 0.0
    cos = float(offsets[0] @ offsets[1]) / (la * lb)
    return math.degrees(math.asin(min(1.0, min(la, lb) * max(0.0, cos))))


SKIN_HUES = (345.0, 50.0)  # degrees: human skin of every tone, under near-white light, has an orange hue


SKIN_SATURATION_MAX = 0.55  # median HSV saturation of natural skin: 0.28-0.52 on every face of the corpus


def _skin(face: np.ndarray) -> dict[str, float]:
    """The skin in the middle of a face box: its median hue and saturation, and `skin_excess`, how far the
    saturation is beyond natural skin's, only where the hue is a plausible skin hue (NaN otherwise: an avatar's
    blue skin, or a face under a coloured light, is not judged as skin)."""
    h, w = face.shape[:2]
    core = face[h // 4: 3 * h // 4, w // 4: 3 * w // 4]
    hsv = cv2.cvtColor(np.ascontiguousarray(core), cv2.COLOR_RGB2HSV)
    lit = hsv[..., 2] > 40
    if int(np.count_nonzero(lit)) < 16:
        return {"skin_hue_deg": float("nan"), "skin_saturation": float("nan"), "skin_excess": float("nan")}
    hue = 2.0 * hsv[..., 0][lit].astype(np.float32)
    # circular median of the hue around red: shift so that 180 (cyan) is the cut
    shifted = np.where(hue > 180.0, hue - 360.0, hue)
    med_hue = float(np.median(shifted)) % 360.0
    sat = float(np.median(hsv[..., 1][lit])) / 255.0
    plausible = med_hue >= SKIN_HUES[0] or med_hue <= SKIN_HUES[1]
    return {"skin_hue_deg": med_hue, "skin_saturation": sat,
            "skin_excess": max(0.0, sat - SKIN_SATURATION_MAX) if plausible else float("nan")}
