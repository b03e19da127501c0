"""The clean and distorted clips the diagnosis compares: the corpus's clips against references re-rendered from their
metadata, and ladders (each family at each level) on content the corpus never shows."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path

from train.diagnosis.verdict import FAMILIES, clip_view, compare, exposure_of


def reference_path(root: Path, split: str, meta: dict) -> Path:
    """The clean reference of a corpus clip, rendered again from its metadata into ROOT/split/references/."""
    from train.corpus import WRITE_CRF
    from train.media import render, render_cut, write_mp4

    path = root / split / "references" / f"ref_{meta['file']}"
    if path.is_file():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    w, h, fps, dur, seed = meta["width"], meta["height"], meta["fps"], meta["duration"], meta["seed"]
    if meta.get("cut_to"):
        ref = render_cut(meta["source"], meta["cut_to"], meta["cut_at"], w, h, fps, dur, seed=seed)
    else:
        ref = render(meta["source"], w, h, fps, dur, seed=seed)
    tmp = path.with_suffix(".part.mp4")
    write_mp4(tmp, ref.frames, fps, crf=WRITE_CRF, preset="veryfast")
    tmp.replace(path)
    return path


def corpus_rows(root: str | Path, split: str, cfg, analyzer, progress: bool = True) -> list[dict]:
    """Every single- and two-family clip of ROOT/split against its re-rendered reference."""
    from tqdm import tqdm

    root = Path(root)
    metas = [json.loads(line) for line in (root / split / "meta.jsonl").read_text().splitlines() if line.strip()]
    metas = [m for m in metas if m["families"] and len(m["families"]) <= 2]
    rows = []
    for m in tqdm(metas, desc=f"diagnosis {split}", file=sys.stderr, disable=None if progress else True):
        ref = clip_view(reference_path(root, split, m), cfg, analyzer)
        dist = clip_view(root / split / "videos" / m["file"], cfg, analyzer)
        fams = sorted(m["families"], key=FAMILIES.index)
        kinds = [d.get("kind") for d in m.get("distortions", [])]
        path = root / split / "videos" / m["file"]
        row = {"file": m["file"], "source": m["source"], "families": fams, "region": m["region"],
               "kind": kinds[0] if len(kinds) == 1 else None, "level": max(m["severities"].values()),
               "pair_role": m.get("pair_role"), "cmp": compare(ref, dist, fams)}
        if row["kind"] == "over":
            row["exposure"] = exposure_of(path)
        rows.append(row)
    return rows



LADDER_KINDS = {"blur": ("gaussian", "defocus"), "noise": ("gaussian", "sensor"), "color": ("cast", "desaturate"),
                "artifact": ("crf", "bitrate"), "luminance": ("under", "over"), "temporal": ("freeze", "stall")}
# Kinds laddered at every level besides the alternating pair: a contrast cut around the mean shrinks chroma with
# luma, so it is the luminance distortion most likely to read as a colour one (the corpus's two misses of
# 2026-11-30 were contrast cuts) and the ladders must show it.
LADDER_EXTRA = {"luminance": ("contrast",)}


def ladder_clips(sources: Sequence[str], out: Path, levels: Sequence[int] = (1, 2, 3, 4, 5), seed: int = 0,
                 fps: int = 25, duration: float = 4.0) -> list[dict]:
    """Writes each source's clean clip and each family x level (the kind alternating by level, plus LADDER_EXTRA's
    kinds at every level) under `out`; returns one record per distorted clip with its reference's path. Existing
    files are reused."""
    from train import distortions as D
    from train.corpus import WRITE_CRF, ClipPlan, write_clip
    from train.face_sources import source_by_name
    from train.media import render, write_mp4

    out.mkdir(parents=True, exist_ok=True)
    records = []
    for name in sources:
        src = source_by_name(name)
        w, h = (320, 180) if "landscape" in src.orientations else (180, 320)
        ref = None
        ref_path = out / f"{name}_clean.mp4"
        if not ref_path.is_file():
            ref = render(src, w, h, fps, duration, seed=seed)
            write_mp4(ref_path, ref.frames, fps, crf=WRITE_CRF, preset="veryfast")
        for family in FAMILIES:
            for level in levels:
                for kind in (LADDER_KINDS[family][level % 2], *LADDER_EXTRA.get(family, ())):
                    path = out / f"{name}_{family}-{kind}-{level}.mp4"
                    if not path.is_file():
                        ref = ref if ref is not None else render(src, w, h, fps, duration, seed=seed)
                        plan = ClipPlan(path.name, "test", name, w, h, fps, duration, seed)
                        write_clip(path, ref, [D.Distortion(family, kind, level)], plan)
                    records.append({"file": path.name, "path": path, "ref": ref_path, "source": name,
                                    "families": [family], "kind": kind, "level": level, "region": "full"})
    return records


def ladder_rows(records: list[dict], cfg, analyzer, progress: bool = True) -> list[dict]:
    from tqdm import tqdm

    refs: dict[Path, dict] = {}
    rows = []
    for r in tqdm(records, desc="diagnosis ladders", file=sys.stderr, disable=None if progress else True):
        if r["ref"] not in refs:
            refs[r["ref"]] = clip_view(r["ref"], cfg, analyzer)
        dist = clip_view(r["path"], cfg, analyzer)
        extra = {"exposure": exposure_of(r["path"])} if r.get("kind") == "over" else {}
        rows.append({k: v for k, v in r.items() if k not in ("path", "ref")} | extra
                    | {"cmp": compare(refs[r["ref"]], dist, r["families"])})
    return rows
