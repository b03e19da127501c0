"""Accuracy and speed of each deployable variant of a rater on an eval split, as the live path runs it.

Each clip is decoded and analysed once (faces, embeddings, signals; stream.live.offline.analyse_file with the
default monitor config, as training does); then every variant encodes the same frames with its own frame
encoder, assembles the same windows and rates them. A clip's score is the mean of its windows' calibrated
raw scores (what `fvq score` and train.fit report), compared with the MOS by SRCC/PLCC/KRCC.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from engines.features import FrameRecord, Window


@dataclass
class AnalysedClip:
    path: str
    mos: float
    windows: list[Window]
    encode: list[FrameRecord]  # the sampled frames the frame encoder runs on (the live path's grid)


def analyse_split(root: Path, split: str = "test", max_clips: int | None = None) -> list[AnalysedClip]:
    from stream.config import MonitorConfig
    from stream.live.analysis import build_analyzer
    from stream.live.offline import analyse_file
    from train.clip_features import read_split

    cfg = MonitorConfig(no_model=True)
    analyzer = build_analyzer(cfg)
    labels = read_split(Path(root), split)[: max_clips or None]
    clips = []
    for clip in tqdm(labels, desc=f"analyse {split}", file=sys.stderr, disable=None, leave=False):
        analysis = analyse_file(clip.path, cfg, analyzer, keep_windows=True)
        if not analysis.windows:
            continue
        sampled = list({id(r): r for w in analysis.windows for r in w.sampled}.values())
        pick = getattr(analyzer, "model_frames", None)
        clips.append(AnalysedClip(str(clip.path), clip.mos, analysis.windows, pick(sampled) if pick else sampled))
    return clips


def evaluate_variant(rater, clips: Sequence[AnalysedClip], name: str = "", keep_predictions: bool = False) -> dict[str, Any]:
    """SRCC/PLCC/KRCC of `rater` (FVQRater or OnnxRater) on analysed clips, with its encoder time per frame and its
    rater time per window (batches of one clip's windows; the forward pass plus the signal-forest prior)."""
    from engines.rater import assemble_window_features, prior_vector, stack_features
    from train.evaluate import evaluate_predictions

    preds, mos = [], []
    encode_s = rate_s = 0.0
    frames = windows = 0
    for clip in tqdm(clips, desc=f"rate {name}", file=sys.stderr, disable=None, leave=False):
        for r in clip.encode:
            r.extra.pop("spatial", None)
            r.extra.pop("portrait", None)
        t0 = time.perf_counter()
        rater.frame_features(clip.encode)
        encode_s += time.perf_counter() - t0
        frames += len(clip.encode)
        arrays = stack_features([assemble_window_features(w, rater.spec) for w in clip.windows])
        t0 = time.perf_counter()
        scores = rater.publish(rater.predict(arrays), prior_vector(arrays))[0]
        rate_s += time.perf_counter() - t0  # the forward pass and the signal-forest prior, as rate() runs them
        windows += len(scores)
        preds.append(float(np.mean(scores)))
        mos.append(clip.mos)
    metrics = evaluate_predictions(preds, mos)
    return {**metrics, "clips": len(preds), "windows": windows,
            "encoder_ms_per_frame": 1000 * encode_s / max(frames, 1),
            "rater_ms_per_window": 1000 * rate_s / max(windows, 1),
            **({"predictions": preds} if keep_predictions else {})}


__all__ = ["AnalysedClip", "analyse_split", "evaluate_variant"]
