"""benchmarks.origins' cause figures: each ladder rung and colour fault judged against its own clean clip."""

from __future__ import annotations

from benchmarks.origins import cause_figures

CLEAN = {"blur": 90.0, "noise": 90.0, "color": 95.0, "artifact": 98.0, "luminance": 85.0, "temporal": 95.0}


def row(kind: str, name: str, level: float, causes=(), **moved: float) -> dict:
    return {"source": "s", "kind": kind, "name": name, "level": level,
            "view": {"dims": {**CLEAN, **moved}, "causes": list(causes), "score": 80.0}}


def test_causes_by_origin_at_the_two_strongest_levels_and_false_causes_at_every_level():
    rows = [row("look", "none", 0), row("look", "candle", 0, color=80.0),
            row("blur-low-key", "blur", 0.0)]
    rows += [row("blur-low-key", "blur", s, ["source"], blur=90.0 - 20 * s) for s in (1.0, 2.0, 3.0)]
    # the strongest rung: luminance fell most (a wrong cause) and noise fell 20 points too (a false cause)
    rows.append(row("blur-low-key", "blur", 4.0, ["source"], blur=60.0, luminance=20.0, noise=70.0))
    rows += [row("noise-low-key", "noise", 0.0)] + [row("noise-low-key", "noise", s, ["camera"], noise=90.0 - 3 * s)
                                                     for s in (4.0, 8.0, 14.0, 20.0)]
    rows += [row("fault", "tint-green", 3, ["camera"], color=20.0), row("fault", "tint-green", 4, ["camera"], color=10.0),
             row("fault", "range-washed", 4, [], luminance=40.0, color=80.0),  # luminance fell most: colour missed
             row("fault", "tint-green", 1, ["camera"], color=70.0)]  # too mild to count for accuracy
    got = cause_figures(rows)
    assert got["cause_accuracy"] == {"blur": 0.5, "color": round(2 / 3, 3), "noise": 1.0}
    assert got["cause_accuracy_n"] == {"blur": 2, "color": 3, "noise": 2}
    # false causes: the strongest blur rung's noise and luminance (2) and the range fault's luminance (1), over
    # 5 other dimensions for each of the 4 + 4 rungs and 4 faults
    assert got["false_cause_rate"] == round(3 / (5 * 12), 4)


def test_a_colour_faults_monotonicity_runs_from_the_clean_clip_through_its_levels():
    from benchmarks.origins import score_figures

    def scored(kind: str, name: str, level: float, score: float) -> dict:
        return {**row(kind, name, level), "view": {"dims": CLEAN, "causes": [], "score": score}}

    rows = [scored("look", "none", 0, 90.0), scored("look", "candle", 0, 88.0),
            scored("fault", "tint-green", 3, 60.0), scored("fault", "tint-green", 4, 50.0),
            scored("fault", "oversaturate", 3, 91.0), scored("fault", "oversaturate", 4, 85.0),
            scored("fault", "swap-rb", 1, 89.0)]  # one level: no ladder to rank
    got = score_figures(rows)["colour_monotonicity"]
    assert got == {"s:tint-green": 1.0, "s:oversaturate": 0.5}
