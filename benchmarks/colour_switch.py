"""Colour pipelines switching mid-stream, by origin: is the switch named (colour_switch), and does a light, a grade or
another colour fault switched on mid-stream stay silent?

Each source of benchmarks.origins (real portraits of four archives, a video, the drawn avatars) is rendered for
8 s; at 4.2 s its pictures go through a pipeline switch (swap-uv, swap-rb, range-washed, range-crushed at their
strongest) or, as controls, a look (every one of train.looks.LOOKS), a colour fault read from the picture itself
(tints, an offset, white balance off the locus, desaturation, oversaturation) or nothing. Written as the corpus writes
clips (x264), analysed as `fvq score` does (stream.live.offline) and each window read by the stream's baseline
(stream/ops/baseline.py) as the monitor's recommendations read it.
    python -m benchmarks.colour_switch [--json F]
    python -m benchmarks.colour_switch --sources obama-v0,ardern-2018-v0    # other sources of train.face_sources
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

SECONDS, SWITCH_AT = 8.0, 4.2
SWITCHES = ("swap-uv", "swap-rb", "range-washed", "range-crushed")
CONTROL_FAULTS = ("tint-magenta", "tint-green", "chroma-offset", "wb-off-locus", "desaturate", "oversaturate")


def run(out: Path, progress: bool = True, names: list[str] | None = None) -> dict:
    from benchmarks.origins import FPS, origins
    from stream.config import MonitorConfig
    from stream.live.analysis import build_analyzer
    from stream.live.offline import analyse_file
    from stream.ops.baseline import COLOUR_SWITCH, StreamBaseline
    from train import looks
    from train.corpus import WRITE_CRF
    from train.face_sources import source_by_name
    from train.media import render, write_mp4

    cfg = MonitorConfig()
    analyzer = build_analyzer(cfg)
    rows = []
    groups = {f"other:{n}": [n] for n in names} if names else origins()
    for origin, sources in groups.items():
        for name in sources:
            src = source_by_name(name) if isinstance(name, str) else name
            w, h = (320, 180) if "landscape" in src.orientations else (180, 320)
            clip = render(src, w, h, FPS, SECONDS, seed=0)
            at = int(round(SWITCH_AT * FPS))
            cases = [("switch", f, lambda x, f=f: looks.apply_fault(x, f, 4)) for f in SWITCHES]
            cases += [("control", "none", lambda x: x)]
            cases += [("control", lk, lambda x, lk=lk: looks.apply_look(x, lk)) for lk in looks.LOOKS]
            cases += [("control", f, lambda x, f=f: looks.apply_fault(x, f, 4)) for f in CONTROL_FAULTS]
            for kind, case, apply in cases:
                frames = clip.frames.copy()
                frames[at:] = apply(clip.frames[at:])
                path = out / f"{src.name}_{case}.mp4"
                write_mp4(path, frames, FPS, crf=WRITE_CRF, preset="veryfast")
                results = analyse_file(path, cfg, analyzer).results
                base = StreamBaseline()
                raised = [r.end for r in results if COLOUR_SWITCH in base.observe(r, cfg.alerts, now=r.end)]
                rows.append({"origin": origin, "source": src.name, "kind": kind, "case": case,
                             "raised_from": min(raised) if raised else None, "windows_raised": len(raised),
                             "windows_after": sum(r.end > SWITCH_AT for r in results),
                             "switches": sorted(k for k in base.switched)})
                if progress:
                    print(f"{origin:18s} {src.name:16s} {kind:8s} {case:14s} raised from "
                          f"{rows[-1]['raised_from']} ({len(raised)} windows), held {rows[-1]['switches']}",
                          file=sys.stderr)
    return {"rows": rows, "summary": summarise(rows)}


def summarise(rows: list[dict]) -> dict:
    per = {}
    for origin in sorted({r["origin"] for r in rows}):
        rs = [r for r in rows if r["origin"] == origin]
        sw = [r for r in rs if r["kind"] == "switch"]
        ctl = [r for r in rs if r["kind"] == "control"]
        named = [r for r in sw if r["raised_from"] is not None]
        per[origin] = {
            "switches_named": f"{len(named)}/{len(sw)}",
            "named_by_switch": {s: f"{sum(r['raised_from'] is not None for r in sw if r['case'] == s)}/"
                                   f"{sum(r['case'] == s for r in sw)}" for s in SWITCHES},
            "seconds_to_name_max": max((r["raised_from"] - SWITCH_AT for r in named), default=None),
            "controls_raising": [f"{r['source']}:{r['case']}" for r in ctl if r["raised_from"] is not None],
            "controls": len(ctl),
        }
    sw = [r for r in rows if r["kind"] == "switch"]
    ctl = [r for r in rows if r["kind"] == "control"]
    return {"per_origin": per,
            "switches_named": round(sum(r["raised_from"] is not None for r in sw) / max(1, len(sw)), 3),
            "controls_raising": f"{sum(r['raised_from'] is not None for r in ctl)}/{len(ctl)}"}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--json", type=Path, help="write every row and the summary here")
    p.add_argument("--sources", help="comma-separated train.face_sources names in place of benchmarks.origins'")
    args = p.parse_args(argv)
    t0 = time.time()
    with tempfile.TemporaryDirectory(prefix="fvq-switch-") as tmp:
        result = run(Path(tmp), names=args.sources.split(",") if args.sources else None)
    result["seconds"] = round(time.time() - t0)
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    print(json.dumps(result["summary"], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
