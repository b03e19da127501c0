"""One distorted clip against its clean reference: what an operator sees of each (published dimensions, raised causes,
score), whether the dimension that fell and the alert name the family applied, and the figures over many clips."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from engines.features import DIMENSIONS

FAMILIES = DIMENSIONS  # the six distortion families are the six dimensions
FALSE_CAUSE_POINTS = 15.0  # another dimension falling more than this below its clean value is a false cause
STRONG_LEVELS = (4, 5)
# The monitor's cause for each family; blur and artifact are "compression" when the bitrate is low, else "source".
FAMILY_CAUSE = {"temporal": "stalls", "noise": "camera", "color": "camera", "luminance": "camera"}
PICTURE_CAUSES = ("compression", "source")
GENERIC_CAUSES = ("low_quality",)  # says nothing about the cause: neither right nor wrong
# An exposure gain ("over") is over-exposure to a viewer when it clips highlights or lifts the picture past a normal
# exposure; a gain on a dark (low-key) scene that does neither is a brighter grade of the scene, not a distortion
# (BENCHMARKS.md in git as of 5ed058a, "Over-exposure of the low-key scenes"). Luma levels of the decoded picture (BT.601, 0-255).
OVER_CLIPPED_LUMA = 245.0
OVER_CLIPPED_SHARE = 0.01  # share of the frame at or above OVER_CLIPPED_LUMA
OVER_MEAN_LUMA = 150.0  # mean luma above which a picture is brighter than a normal exposure, clipped or not


def exposure_of(path: str | Path, every: int = 10) -> dict:
    """The decoded picture's clipped-highlight share (luma >= OVER_CLIPPED_LUMA) and mean luma, every `every`th
    frame, and whether an exposure gain on it reads as over-exposure (`over_visible`)."""
    import av

    clipped, mean = [], []
    with av.open(str(path)) as c:
        for i, frame in enumerate(c.decode(video=0)):
            if i % every == 0:
                y = frame.to_ndarray(format="gray").astype(np.float32)
                clipped.append(float((y >= OVER_CLIPPED_LUMA).mean()))
                mean.append(float(y.mean()))
    share, luma = float(np.mean(clipped)) if clipped else 0.0, float(np.mean(mean)) if mean else 0.0
    return {"clipped_share": round(share, 4), "mean_luma": round(luma, 1),
            "over_visible": share >= OVER_CLIPPED_SHARE or luma > OVER_MEAN_LUMA}


def is_grade(row: dict) -> bool:
    """A whole-frame exposure gain that leaves the picture neither clipped nor brighter than a normal exposure:
    a brighter grade of a dark scene, which no viewer calls over-exposed. Scored apart (both figures reported)."""
    return row.get("kind") == "over" and row.get("region", "full") == "full" and \
        not (row.get("exposure") or {}).get("over_visible", True)


def clip_view(path: str | Path, cfg, analyzer) -> dict:
    """What an operator sees for one file: published dimensions, score, window scores and the raised causes."""
    from stream.live.offline import analyse_file, combine_dimensions
    from stream.ops.recommend import is_low_bitrate, window_causes

    analysis = analyse_file(path, cfg, analyzer)
    results = analysis.results
    dims = combine_dimensions(results)
    scores = [r.score for r in results if r.score is not None]
    size = Path(path).stat().st_size
    duration = max((r.end for r in results), default=0.0) - min((r.start for r in results), default=0.0)
    width = height = 0
    fps = analysis.nominal_fps or 25.0
    try:
        import av

        with av.open(str(path)) as c:
            s = c.streams.video[0]
            width, height = s.width, s.height
            duration = float(c.duration / 1e6) if c.duration else duration
    except Exception:  # noqa: BLE001 - the bitrate is a hint only
        pass
    bitrate = 8.0 * size / duration if duration > 0 else 0.0
    low = is_low_bitrate(bitrate, width, height, fps, cfg.alerts)
    votes: dict[str, int] = {}
    for r in results:
        for c in window_causes(r, low, cfg.alerts):
            votes[c] = votes.get(c, 0) + 1
    causes = sorted(c for c, n in votes.items() if n * 2 >= len(results))  # raised in half the windows or more
    return {"dims": {k: round(v, 2) for k, v in dims.items()}, "score": float(np.mean(scores)) if scores else None,
            "window_scores": [round(float(s), 2) for s in scores], "causes": causes, "low_bitrate": low,
            "window_dims": [r.dimensions.get("face") or r.dimensions.get("frame", {}) for r in results]}


def expected_cause(family: str, low_bitrate: bool, artifact: float = 0.0) -> str:
    """The cause the monitor should name: a picture family's is compression at a low bitrate that shows in the
    picture (the artifact score under stream.ops.recommend.STARVED_ARTIFACT), else source."""
    from stream.ops.recommend import STARVED_ARTIFACT

    if family in FAMILY_CAUSE:
        return FAMILY_CAUSE[family]
    return PICTURE_CAUSES[0] if low_bitrate and artifact < STARVED_ARTIFACT else PICTURE_CAUSES[1]


def compare(ref: dict, dist: dict, families: Sequence[str]) -> dict:
    """One distorted clip against its reference: each dimension's move, the one that fell most, the false causes,
    and whether the raised alert names the family."""
    move = {d: dist["dims"][d] - ref["dims"][d] for d in DIMENSIONS if d in ref["dims"] and d in dist["dims"]}
    top = sorted(move, key=lambda d: move[d])[:len(families)]  # the len(families) dimensions that fell most
    others = [d for d in move if d not in families]
    false = [d for d in others if move[d] < -FALSE_CAUSE_POINTS]
    wanted = {expected_cause(f, dist["low_bitrate"], dist["dims"].get("artifact", 100.0)) for f in families}
    raised = set(dist["causes"]) - set(GENERIC_CAUSES)
    new = raised - set(ref["causes"])
    alert_ok = wanted <= raised and not (new - wanted)
    # No visible cause: no dimension fell by the false-cause threshold, so the top dimension is a chance pick.
    # Silence is then the right verdict, and counts as correct only if no wrong cause was newly raised.
    visible = any(v < -FALSE_CAUSE_POINTS for v in move.values())
    wrong_new = sorted(new - wanted)
    cause_ok = set(top) == set(families)
    return {"move": {d: round(v, 2) for d, v in move.items()}, "fell_most": top[0] if top else None,
            "top": top, "cause_ok": cause_ok, "false": false, "others": len(others),
            "visible": visible, "wrong_new": wrong_new,
            "cause_ok_v2": cause_ok if visible else not wrong_new,
            "alert_ok_v2": alert_ok if visible else not wrong_new,
            "alert_ok": alert_ok, "alert_raised": sorted(raised), "alert_new": sorted(new), "alert_wanted": sorted(wanted),
            "score_ref": ref["score"], "score": dist["score"]}


def summarise(rows: list[dict], levels: Sequence[int] | None = STRONG_LEVELS) -> dict:
    """Cause accuracy (overall and per family), the confusion matrix, the false-cause rate, the alert accuracy and
    the cross-talk matrix (mean move of each dimension under each family) over single-family rows at `levels`."""
    single = [r for r in rows if len(r["families"]) == 1 and (levels is None or r["level"] in levels)]
    out: dict = {"clips": len(single)}
    if not single:
        return out
    out["cause_accuracy"] = float(np.mean([r["cmp"]["cause_ok"] for r in single]))
    out["alert_accuracy"] = float(np.mean([r["cmp"]["alert_ok"] for r in single]))
    out["false_cause_rate"] = sum(len(r["cmp"]["false"]) for r in single) / max(1, sum(r["cmp"]["others"] for r in single))
    out.update(_visibility(single))
    graded = [r for r in single if is_grade(r)]
    out["graded_clips"] = len(graded)
    scored = [r for r in single if not is_grade(r)]
    if scored:  # the same figures with brighter grades of dark scenes left out (they are not distortions)
        out["cause_accuracy_ex_graded"] = float(np.mean([r["cmp"]["cause_ok"] for r in scored]))
        out["alert_accuracy_ex_graded"] = float(np.mean([r["cmp"]["alert_ok"] for r in scored]))
        out["false_cause_rate_ex_graded"] = (sum(len(r["cmp"]["false"]) for r in scored)
                                             / max(1, sum(r["cmp"]["others"] for r in scored)))
    per, confusion, cross = {}, {}, {}
    for f in FAMILIES:
        fr = [r for r in single if r["families"][0] == f]
        if not fr:
            continue
        v2 = _visibility(fr)
        per[f] = {"n": len(fr), "cause": float(np.mean([r["cmp"]["cause_ok"] for r in fr])),
                  "alert": float(np.mean([r["cmp"]["alert_ok"] for r in fr])),
                  "cause_v2": v2["cause_accuracy_v2"], "alert_v2": v2["alert_accuracy_v2"],
                  "silent": v2["silent_clips"], "graded": sum(is_grade(r) for r in fr),
                  "cause_ex_graded": float(np.mean([r["cmp"]["cause_ok"] for r in fr if not is_grade(r)]))
                  if any(not is_grade(r) for r in fr) else float("nan"),
                  "false": sum(len(r["cmp"]["false"]) for r in fr) / max(1, sum(r["cmp"]["others"] for r in fr))}
        confusion[f] = {d: sum(1 for r in fr if r["cmp"]["fell_most"] == d) for d in DIMENSIONS}
        cross[f] = {d: round(float(np.mean([r["cmp"]["move"].get(d, np.nan) for r in fr])), 1) for d in DIMENSIONS}
    out.update(per_family=per, confusion=confusion, cross_talk=cross)
    return out


def _visibility(single: list[dict]) -> dict:
    """The second definition (BENCHMARKS.md, "How accurate is the cause?", "with silence"): a clip where no dimension fell by FALSE_CAUSE_POINTS has no visible
    cause; it is scored correct when no wrong cause was newly raised (silence, or its own cause), wrong otherwise.
    Clips with a visible fall are scored as in the first definition."""
    vis = [r for r in single if r["cmp"].get("visible", True)]
    silent = [r for r in single if not r["cmp"].get("visible", True)]
    out = {"visible_clips": len(vis), "silent_clips": len(silent),
           "cause_accuracy_v2": float(np.mean([r["cmp"].get("cause_ok_v2", r["cmp"]["cause_ok"]) for r in single])),
           "alert_accuracy_v2": float(np.mean([r["cmp"].get("alert_ok_v2", r["cmp"]["alert_ok"]) for r in single]))}
    if vis:
        out["cause_accuracy_visible"] = float(np.mean([r["cmp"]["cause_ok"] for r in vis]))
        out["alert_accuracy_visible"] = float(np.mean([r["cmp"]["alert_ok"] for r in vis]))
    if silent:
        out["silent_correct"] = float(np.mean([not r["cmp"].get("wrong_new") for r in silent]))
    return out


def by_level(rows: list[dict]) -> dict[int, dict]:
    return {lv: {k: v for k, v in summarise(rows, (lv,)).items() if k in ("clips", "cause_accuracy", "alert_accuracy",
                                                                          "false_cause_rate", "cause_accuracy_v2",
                                                                          "alert_accuracy_v2", "silent_clips")}
            for lv in sorted({r["level"] for r in rows if len(r["families"]) == 1})}


def combined_summary(rows: list[dict]) -> dict:
    """Clips with two families: share where the two dimensions that fell most are those two; false-cause rate."""
    two = [r for r in rows if len(r["families"]) == 2]
    if not two:
        return {"clips": 0}
    return {"clips": len(two), "both_found": float(np.mean([r["cmp"]["cause_ok"] for r in two])),
            "false_cause_rate": sum(len(r["cmp"]["false"]) for r in two) / max(1, sum(r["cmp"]["others"] for r in two))}


def format_summary(title: str, rows: list[dict]) -> str:
    s = summarise(rows)
    lines = [f"### {title}: {s.get('clips', 0)} single-family clips at levels {STRONG_LEVELS[0]}-{STRONG_LEVELS[1]}"]
    if not s.get("clips"):
        return "\n".join(lines)
    lines += ["", f"cause accuracy (the dimension that fell most) **{s['cause_accuracy']:.3f}**, alert accuracy "
              f"(the raised cause, nothing else new) **{s['alert_accuracy']:.3f}**, false causes "
              f"(another dimension > {FALSE_CAUSE_POINTS:g} points down) **{100 * s['false_cause_rate']:.1f}%**", "",
              f"with no visible cause scored as silence ({s['silent_clips']} clips where no dimension fell "
              f"{FALSE_CAUSE_POINTS:g} points; correct when no wrong cause was newly raised: "
              f"{s.get('silent_correct', float('nan')):.2f}): cause accuracy **{s['cause_accuracy_v2']:.3f}**, "
              f"alert accuracy **{s['alert_accuracy_v2']:.3f}**; on the {s['visible_clips']} clips with a visible "
              f"fall: cause {s.get('cause_accuracy_visible', float('nan')):.3f}, alert "
              f"{s.get('alert_accuracy_visible', float('nan')):.3f}", "",
              "| family | n | cause acc. | alert acc. | no visible cause | cause / alert acc. with silence | false causes | "
              + " | ".join(f"fell most: {d}" for d in DIMENSIONS)
              + " |", "|---|---:|---:|---:|---:|---:|---:|" + "---:|" * len(DIMENSIONS)]
    for f, p in s["per_family"].items():
        conf = s["confusion"][f]
        lines.append(f"| {f} | {p['n']} | {p['cause']:.2f} | {p['alert']:.2f} | {p['silent']} | "
                     f"{p['cause_v2']:.2f} / {p['alert_v2']:.2f} | {100 * p['false']:.0f}% | "
                     + " | ".join(str(conf[d]) for d in DIMENSIONS) + " |")
    if s.get("graded_clips"):
        lines += ["", f"{s['graded_clips']} whole-frame exposure gains left the picture unclipped (< "
                  f"{100 * OVER_CLIPPED_SHARE:g}% at luma >= {OVER_CLIPPED_LUMA:g}) and no brighter than a normal "
                  f"exposure (mean luma <= {OVER_MEAN_LUMA:g}): a brighter grade of a dark scene, not over-exposure. "
                  f"Without them: cause accuracy **{s['cause_accuracy_ex_graded']:.3f}**, alert accuracy "
                  f"{s['alert_accuracy_ex_graded']:.3f}, false causes {100 * s['false_cause_rate_ex_graded']:.1f}%; "
                  "per family: " + ", ".join(f"{f} {p['cause_ex_graded']:.2f} (n={p['n'] - p['graded']})"
                                             for f, p in s["per_family"].items())]
    lines += ["", "Cross-talk: mean move (points) of each dimension (columns) under each family (rows):", "",
              "| family | " + " | ".join(DIMENSIONS) + " |", "|---|" + "---:|" * len(DIMENSIONS)]
    for f, c in s["cross_talk"].items():
        lines.append(f"| {f} | " + " | ".join(f"{c[d]:+.0f}" for d in DIMENSIONS) + " |")
    lv = by_level(rows)
    lines += ["", "Per level (single-family clips): " + "; ".join(
        f"L{k}: n={v['clips']} cause {v.get('cause_accuracy', float('nan')):.2f} alert "
        f"{v.get('alert_accuracy', float('nan')):.2f} false {100 * v.get('false_cause_rate', 0):.1f}% (with silence: "
        f"{v.get('silent_clips', 0)} silent, cause {v.get('cause_accuracy_v2', float('nan')):.2f} alert "
        f"{v.get('alert_accuracy_v2', float('nan')):.2f})"
        for k, v in lv.items())]
    regions = sorted({r.get("region", "full") for r in rows if len(r["families"]) == 1})
    if len(regions) > 1:
        parts = []
        for region in regions:
            sub = summarise([r for r in rows if r.get("region", "full") == region])
            if sub.get("clips"):
                parts.append(f"{region}: n={sub['clips']} cause {sub['cause_accuracy']:.2f} alert "
                             f"{sub['alert_accuracy']:.2f} false {100 * sub['false_cause_rate']:.1f}%; with silence "
                             f"({sub['silent_clips']} silent, {sub.get('silent_correct', 1.0):.2f} of them "
                             f"correct): cause {sub['cause_accuracy_v2']:.2f} alert {sub['alert_accuracy_v2']:.2f}")
        lines.append("By region distorted (levels 4-5): " + "; ".join(parts))
    comb = combined_summary(rows)
    if comb["clips"]:
        lines.append(f"Two families: n={comb['clips']}, both fell most {comb['both_found']:.2f}, "
                     f"false causes {100 * comb['false_cause_rate']:.1f}%")
    return "\n".join(lines)
