"""Cause selection: when one fault pulls several dimensions down, the dimension that moved first names it.

A dark picture also loses its colourfulness and costs the encoder bits; grain costs the encoder bits too, so
the artifact score falls with it. Each dimension below the alert threshold is weighed against the others: when
another low dimension's fault is known to pull it down that far, it is that fault's side effect and raises no
cause of its own. The table is how far each fault moved the other dimensions on the live-fault ladders
(benchmarks/live_faults.py's clips through a live encoder, read by the offline analysis path): the drop of the
other dimension per point of the primary's drop (a drop is 100 - score), the largest seen over the sources,
rounded up.
"""

from __future__ import annotations

from collections.abc import Mapping

# primary dimension -> {other dimension: its drop per point of the primary's drop}. Measured (drops, primary ->
# others, on the samples / carphone / t1 sources; the issue's own run where it differs):
#   low light (luma ~18, grainy): luminance 100 -> colour 81 / 0 / 99 (100 in the run), artifact 3 / 3 / 4
#     (58 in the run), noise unmeasured (no unclipped flat pixels); the face is lost (no "framing" then:
#     recommend.window_causes)
#   over-exposure washes colour out the same way (the corpus's "over" kind)
#   strong sensor grain through x264 at 2 Mbit/s: noise 77-95 -> artifact 21-40 (QP 12-15 -> 30-34); the issue's
#     stronger grain took artifact below the threshold while v2's noise score barely moved
#   a starved encoder (60 kbit/s): artifact 67-85 -> temporal 14-26 (its skips and holds), blur 0-6, noise none
#     (it smooths grain away: the noise score rises)
#   blur, colour and timing faults moved no other dimension by more than 6 points
PULL: dict[str, dict[str, float]] = {
    "luminance": {"color": 1.0, "artifact": 0.7, "noise": 0.7, "blur": 0.3},
    "noise": {"artifact": 1.0},
    "artifact": {"temporal": 0.3, "blur": 0.3},
}
MARGIN = 10.0  # points a side effect may exceed the table by and still be explained


def side_effects(dims: Mapping[str, float], threshold: float) -> set[str]:
    """The dimensions below `threshold` that another dimension below it explains (see PULL)."""
    drops = {d: 100.0 - s for d, s in dims.items() if s < threshold}
    out = set()
    for other, drop in drops.items():
        for primary, primary_drop in drops.items():
            if primary == other:
                continue
            pull = PULL.get(primary, {}).get(other, 0.0)
            if pull > 0 and drop <= pull * primary_drop + MARGIN:
                out.add(other)
                break
    return out


# A rendition down-switch (or a camera losing focus) is a sudden fall of the stream's sharpness against its own recent
# past: an upscale from a much smaller picture has no energy above the small picture's cut-off, which the blur
# measurement reads as soft edges (192x108 upscaled to 640x360: the face's blur score fell 18-29 points on the
# ladders' sources, to 64-77). A stream that is soft all along (a QCIF camera upscaled, the carphone clip) is how
# the stream looks and keeps its own baseline; the absolute threshold still judges it.
SHARPNESS_SPAN_S = 60.0  # the baseline: the 90th percentile of the blur score over this much of the stream's past
SHARPNESS_MIN_HISTORY_S = 15.0  # no baseline before the stream has been seen this long
SHARPNESS_DROP = 12.0  # points below the baseline that count as a fall
SHARPNESS_CEILING = 85.0  # ...and only when the score is below this (a sharp picture that got a little softer is fine)


class SharpnessBaseline:
    """One stream's recent blur scores: says when the current one fell suddenly below the stream's own norm. Each
    region (face, frame) keeps its own past: a face lost for a while publishes the frame's blur, which reads on
    another scale. Windows taken while a decoder fault is seen (damaged packets smear and block the picture, which
    reads sharper) are judged but not learnt: they are not how the stream looks."""

    def __init__(self) -> None:
        self.history: list[tuple[float, str, float]] = []  # (window end, region, published blur score)

    def fell(self, t: float, blur: float | None, region: str = "frame", learn: bool = True) -> bool:
        if blur is None:
            return False
        if self.history and t <= max(s for s, _, _ in self.history):
            self.history = []  # the stream started over
        self.history = [h for h in self.history if h[0] > t - SHARPNESS_SPAN_S]
        if learn:
            self.history.append((t, region, blur))
        mine = [(s, v) for s, r, v in self.history if r == region]
        if not mine or t - mine[0][0] < SHARPNESS_MIN_HISTORY_S:
            return False
        values = sorted(v for _, v in mine)
        baseline = values[min(len(values) - 1, int(0.9 * len(values)))]
        return blur < SHARPNESS_CEILING and baseline - blur >= SHARPNESS_DROP
