"""Steadiness in the diagnosis: a stream whose damage does not change, played in a loop; how far the published score
and the windows' own scores move between consecutive windows."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np


def steadiness(paths: Sequence[Path], out: Path, cfg, analyzer, loops: int = 3, progress: bool = True) -> dict:
    """Each file played `loops` times in a row (ffmpeg -stream_loop, stream copy: the same damage throughout);
    the moves between consecutive windows of the published score and of the windows' own scores."""
    import shutil
    import subprocess

    from tqdm import tqdm

    from stream.live.offline import analyse_file

    out.mkdir(parents=True, exist_ok=True)
    published: list[float] = []
    raw: list[float] = []
    per_file = {}
    for path in tqdm(paths, desc="steadiness", file=sys.stderr, disable=None if progress else True):
        looped = out / f"loop{loops}_{Path(path).name}"
        if not looped.is_file():
            subprocess.run([shutil.which("ffmpeg") or "ffmpeg", "-nostdin", "-y", "-loglevel", "error",
                            "-stream_loop", str(loops - 1), "-i", str(path), "-c", "copy", str(looped)], check=True)
        results = analyse_file(looped, cfg, analyzer).results
        pub = np.array([r.score for r in results if r.score is not None])
        win = np.array([r.details.get("window_score", r.score) for r in results if r.score is not None])
        if len(pub) >= 2:
            published += list(np.abs(np.diff(pub)))
            raw += list(np.abs(np.diff(win)))
            per_file[Path(path).name] = {"published_max": float(np.abs(np.diff(pub)).max()),
                                         "window_max": float(np.abs(np.diff(win)).max()), "windows": len(pub)}
    def p95(v: list[float]) -> float:
        return float(np.percentile(v, 95)) if v else float("nan")

    return {"files": len(per_file), "moves": len(published), "published_p95": p95(published),
            "published_max": max(published, default=float("nan")), "window_p95": p95(raw),
            "window_max": max(raw, default=float("nan")), "per_file": per_file}


def format_steadiness(st: dict) -> str:
    return (f"### Steadiness: {st['files']} files looped, {st['moves']} consecutive-window moves\n"
            f"published score: p95 {st['published_p95']:.1f}, max {st['published_max']:.1f} points; the windows' "
            f"own scores: p95 {st['window_p95']:.1f}, max {st['window_max']:.1f}")
