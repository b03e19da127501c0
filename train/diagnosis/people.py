"""New people in the diagnosis: clean clips of trained and new people, and face-only against background-only blur at
equal full-frame PSNR."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from train.diagnosis.verdict import clip_view

PAIR_BLURS = (("gaussian", 3), ("gaussian", 4), ("defocus", 4))


def _size(name: str) -> tuple[int, int]:
    from train.face_sources import source_by_name

    return (320, 180) if "landscape" in source_by_name(name).orientations else (180, 320)


def people_rows(trained: Sequence[str], new: Sequence[str], out: Path, cfg, analyzer, seed: int = 11,
                progress: bool = True) -> dict:
    """Scores of clean clips of trained and new people, and face-only / background-only blur pairs at equal
    full-frame PSNR (the corpus's matching) on the new people."""
    from tqdm import tqdm

    from train import distortions as D
    from train.corpus import WRITE_CRF, ClipPlan, match_background_strength, write_clip
    from train.media import face_mask, render, write_mp4

    out.mkdir(parents=True, exist_ok=True)
    clean: dict[str, float] = {}
    for name in tqdm([*trained, *new], desc="clean people", file=sys.stderr, disable=None if progress else True):
        w, h = _size(name)
        path = out / f"{name}_clean_s{seed}.mp4"
        if not path.is_file():
            write_mp4(path, render(name, w, h, 25, 4.0, seed=seed).frames, 25, crf=WRITE_CRF, preset="veryfast")
        clean[name] = clip_view(path, cfg, analyzer)["score"]
    pairs = []
    for name in tqdm(new, desc="face/background pairs", file=sys.stderr, disable=None if progress else True):
        w, h = _size(name)
        ref = None
        for kind, level in PAIR_BLURS:
            scores = {}
            for role in ("face", "background"):
                path = out / f"{name}_{kind}{level}-{role}_s{seed}.mp4"
                if not path.is_file():
                    ref = ref if ref is not None else render(name, w, h, 25, 4.0, seed=seed)
                    face = D.Distortion("blur", kind, level, "face")
                    d = face
                    if role == "background":
                        strength, _ = match_background_strength(ref, face_mask(ref.boxes, w, h), face, seed)
                        d = D.Distortion("blur", kind, level, "background", strength=strength)
                    write_clip(path, ref, [d], ClipPlan(path.name, "test", name, w, h, 25, 4.0, seed))
                scores[role] = clip_view(path, cfg, analyzer)["score"]
            pairs.append({"source": name, "blur": f"{kind} {level}", **scores})
    return {"clean": clean, "trained": list(trained), "new": list(new), "pairs": pairs}


def format_people(p: dict) -> str:
    from train.face_sources import unseen_sources

    relit = {u.name for u in unseen_sources()}
    trained = [p["clean"][n] for n in p["trained"] if p["clean"].get(n) is not None]
    new = [p["clean"][n] for n in p["new"] if p["clean"].get(n) is not None and n not in relit]
    scenes = [p["clean"][n] for n in p["new"] if p["clean"].get(n) is not None and n in relit]
    pairs = [q for q in p["pairs"] if q.get("face") is not None and q.get("background") is not None]
    lower = sum(q["face"] < q["background"] for q in pairs)
    lines = ["### New people",
             f"clean clips: trained people {np.mean(trained):.1f} (n={len(trained)}), new people (the test split's) "
             f"{np.mean(new):.1f} (n={len(new)}): {np.mean(new) - np.mean(trained):+.1f} points; relit scenes of them "
             f"{np.mean(scenes) if scenes else float('nan'):.1f} (n={len(scenes)})",
             f"face-only blur below background-only blur at equal PSNR: {lower}/{len(pairs)}"
             + (f" ({100 * lower / len(pairs):.0f}%)" if pairs else ""), "",
             "| source | clean | " + " | ".join(f"{k} {lv}: face / background" for k, lv in PAIR_BLURS) + " |",
             "|---|---:|" + "---:|" * len(PAIR_BLURS)]
    for name in p["new"]:
        row = [q for q in pairs if q["source"] == name]
        lines.append(f"| {name} | {p['clean'].get(name) or float('nan'):.1f} | "
                     + " | ".join(f"{q['face']:.1f} / {q['background']:.1f}" for q in row) + " |")
    return "\n".join(lines)
