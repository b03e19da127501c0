"""Builds the synthetic face-video quality corpus in FVQ-20K format (python -m train.corpus --out DIR --seed 0).

Layout written (the FVQ-20K layout, plus per-clip metadata):

    DIR/{train,val,test}/labels.txt    one line per clip: "<file name> <MOS with 2 decimals>"
    DIR/{train,val,test}/videos/*.mp4  H.264 yuv420p, CRF 16: the only visible distortion is the intended one
    DIR/{train,val,test}/meta.jsonl    source, families, severities, region, resolution, fps, face boxes, ...
    DIR/corpus.json                    build settings, counts, the split of content groups, the MOS recipe

The split is by content, never by clip: every source belongs to a content group (train.face_sources.face_sources)
and SPLIT_OF_GROUP sends each group to exactly one split, so no content seen in training is tested on.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from train import distortions as D
from train import looks
from train import pseudo_mos as P
from train.face_sources import face_sources, source_by_name
from train.media import face_mask, read_mp4, render, render_cut, window_height, write_mp4

SPLITS = ("train", "val", "test")
# Content groups per split: a group is a medium (a photo, the carphone video) or a person's photo; a person
# ("macron" of "macron-2014") is in one split only, so no face the model trained on is validated or tested on.
# val holds two people (Biden; Obama, four photos) so settings are chosen on faces the model never saw: with
# Macron's 2014 photo in val and his 2025 one in train, val rewarded models that recognise people and chose
# settings that ranked unseen people worse. test holds two more (Ardern, two photos; Sunak).
SPLIT_OF_GROUP = {
    "astronaut": "train", "cameraman": "train", "carphone": "train", "t1": "train", "macron-2025": "train",
    "macron-2014": "train",
    "biden": "val", "obama": "val",
    "ardern-2018": "test", "ardern-2022": "test", "sunak": "test",
}
SPLIT_SHARE = {"train": 0.75, "val": 0.10, "test": 0.15}
RESOLUTIONS = ((256, 144), (320, 180), (480, 270), (640, 360))  # landscape; vertical clips use them upright
# A render may enlarge its source window at most this much. The pseudo-MOS is full-reference: a reference
# upscaled 2-4x is already soft, so the same blur costs it few points while it costs a sharp reference many,
# and a no-reference model cannot tell the two apart. Keeping every reference near its native sharpness keeps
# the labels consistent across sources (carphone, 176x144, renders at 256x144 only).
MAX_UPSCALE = 1.5
FRAME_RATES = (15, 25, 30)
DEFAULT_CLIPS = 1000
DEFAULT_DURATION = 4.0  # the live window's length (4 s, 1 s hop): every clip is at least one whole window
WRITE_CRF = 16
# Share of clips by kind of plan; the rest are single-family distortions.
PRISTINE_SHARE, PAIR_SHARE, COMBINED_SHARE = 0.06, 0.15, 0.26
# Share of (non-pair) clips with a hard scene cut to another source of the same split: a cut is a change of
# content, not a distortion; the label is computed against the cut reference, so the model learns that.
CUT_SHARE = 0.12
PAIR_FAMILIES = ("blur", "noise")


@dataclass
class ClipPlan:
    """Everything needed to build one clip, decided up front so the corpus is the same for a seed."""

    name: str
    split: str
    source: str
    width: int
    height: int
    fps: int
    duration: float
    seed: int
    distortions: list[dict] = field(default_factory=list)
    cut_to: str | None = None  # source shown after a hard cut at cut_at seconds
    cut_at: float | None = None
    pair_id: str | None = None
    pair_role: str | None = None  # "face" or "background"
    look: str = "none"  # the clean look it is shot in (train/looks.py): part of its reference, so labelled clean


def sources_by_split() -> dict[str, list[str]]:
    """Source names per split, from SPLIT_OF_GROUP; fails loudly if a source has no split."""
    out: dict[str, list[str]] = {s: [] for s in SPLITS}
    for src in face_sources():
        if src.group not in SPLIT_OF_GROUP:
            raise KeyError(f"content group {src.group!r} has no split in SPLIT_OF_GROUP")
        out[SPLIT_OF_GROUP[src.group]].append(src.name)
    return out


def _is_grey(source: str) -> bool:
    return source.startswith("cameraman")


# With looks in the clean class (--look-share), a white-balance shift along the lights' locus is a look, so the
# corpus's colour damage is drawn from what no light does: a tint in place of the warm/cool cast.
LOOK_COLOUR_KINDS = ("desaturate", "tint", "saturate")


def _random_distortion(rng: np.random.Generator, family: str, source: str, region: str | None = None,
                       looks_on: bool = False) -> D.Distortion:
    kinds = D.KINDS[family]
    if family == "color":
        kinds = LOOK_COLOUR_KINDS if looks_on else tuple(k for k in kinds if k != "tint")
        if _is_grey(source):
            kinds = ("tint",) if looks_on else ("cast",)  # desaturating a grey photo does nothing
    kind = kinds[int(rng.integers(len(kinds)))]
    level = int(rng.integers(1, 6))
    if family == "temporal":
        region = "full"
    elif region is None:
        region = str(rng.choice(D.REGIONS, p=[0.6, 0.2, 0.2]))
    return D.Distortion(family, kind, level, region)


def _split_counts(n: int) -> dict[str, int]:
    val = max(1, int(round(n * SPLIT_SHARE["val"]))) if n >= 3 else 0
    test = max(1, int(round(n * SPLIT_SHARE["test"]))) if n >= 2 else 0
    return {"train": n - val - test, "val": val, "test": test}


def plan_corpus(n_clips: int, seed: int = 0, duration: float = DEFAULT_DURATION,
                extra_train: int = 0, look_share: float = 0.0, look_twins: int = 0,
                clean_look_twins: bool = False) -> list[list[ClipPlan]]:
    """Jobs (one clip, or the two clips of a PSNR-matched pair) for a corpus of `n_clips` clips, then
    `extra_train` more training clips planned after val and test: the first `n_clips` are the same clips
    with or without them, so a larger training set leaves val and test (and their figures) as they were.
    Then `look_twins` training clips shot without a look are planned again in a look (look_twins_of), and with
    `clean_look_twins` every pristine training clip shot without a look is planned again in every look
    (clean_look_twins_of)."""
    rng = np.random.default_rng(seed)
    by_split = sources_by_split()
    jobs: list[list[ClipPlan]] = []
    index = 0
    counts = _split_counts(n_clips)
    for split, left in [(s, counts[s]) for s in SPLITS] + ([("train", extra_train)] if extra_train > 0 else []):
        k = 0
        while left > 0:
            source = by_split[split][k % len(by_split[split])]
            k += 1
            src = source_by_name(source)
            orientation = src.orientations[int(rng.integers(len(src.orientations)))]
            sizes = [(w, h) if orientation == "landscape" else (h, w) for w, h in RESOLUTIONS]
            sizes = [(w, h) for w, h in sizes if h <= MAX_UPSCALE * window_height(src, w, h)] or sizes[:1]
            width, height = sizes[int(rng.integers(len(sizes)))]
            fps = FRAME_RATES[int(rng.integers(len(FRAME_RATES)))]
            clip_seed = int(rng.integers(2**31))
            u = rng.random()
            cut_to = cut_at = None
            if rng.random() < CUT_SHARE:
                others = [n for n in by_split[split] if n != source and orientation in source_by_name(n).orientations]
                if others:
                    cut_to = others[int(rng.integers(len(others)))]
                    cut_at = round(float(rng.uniform(0.3, 0.7)) * duration, 3)

            base = ClipPlan("", split, source, width, height, fps, duration, clip_seed,
                            look=looks.look_for(clip_seed, look_share))
            cut = replace(base, cut_to=cut_to, cut_at=cut_at)

            def plan(ds: list[D.Distortion], tag: str, base: ClipPlan = base, **extra: str) -> ClipPlan:
                nonlocal index
                index += 1
                return replace(base, name=f"{index:05d}_{base.source}_{tag}.mp4",
                               distortions=[d.as_dict() for d in ds], **extra)

            if u < PAIR_SHARE and left >= 2:
                family = PAIR_FAMILIES[int(rng.integers(len(PAIR_FAMILIES)))]
                face = _random_distortion(rng, family, source, "face")
                face = D.Distortion(face.family, face.kind, max(2, face.level), "face")  # level 1 is near-invisible
                pair_id = f"pair{index + 1:05d}"
                bg = D.Distortion(face.family, face.kind, face.level, "background")
                jobs.append([plan([face], f"{family}-face", pair_id=pair_id, pair_role="face"),
                             plan([bg], f"{family}-bg", pair_id=pair_id, pair_role="background")])
                left -= 2
                continue
            if u < PAIR_SHARE + PRISTINE_SHARE:
                ds: list[D.Distortion] = []
            elif u < PAIR_SHARE + PRISTINE_SHARE + COMBINED_SHARE:
                fams = rng.choice(D.FAMILIES, size=2, replace=False)
                ds = [_random_distortion(rng, str(f), source, looks_on=look_share > 0) for f in fams]
            else:
                ds = [_random_distortion(rng, D.FAMILIES[int(rng.integers(len(D.FAMILIES)))], source,
                                         looks_on=look_share > 0)]
            ds.sort(key=lambda d: D.ORDER.index(d.family))
            tag = "-".join(d.family for d in ds) or "pristine"
            jobs.append([plan(ds, tag + ("-cut" if cut_to else ""), base=cut)])
            left -= 1
    twins = look_twins_of(jobs, look_twins, seed, index)
    clean = clean_look_twins_of(jobs, index + len(twins)) if clean_look_twins else []
    return jobs + twins + clean


def is_look_twin(meta: dict) -> bool:
    """Whether a corpus clip's meta is a look twin's (_twin names them after their plain clip and look)."""
    look = meta.get("look", "none")
    return look != "none" and str(meta.get("file", "")).endswith(f"-{look}.mp4")


def _twin(plain: ClipPlan, number: int, look: str) -> ClipPlan:
    """`plain` planned again in `look` as clip `number`, named after it and the look (what is_look_twin reads)."""
    tag = Path(plain.name).stem.split(f"_{plain.source}_", 1)[1]
    return replace(plain, name=f"{number:05d}_{plain.source}_{tag}-{look}.mp4", look=look)


def look_twins_of(jobs: Sequence[Sequence[ClipPlan]], n: int, seed: int, last_index: int) -> list[list[ClipPlan]]:
    """`n` training clips shot without a look, each planned again in one (the looks in turn), same source, camera,
    distortions and seeds: the damage is the same, its label is measured against the relit reference as any look
    clip's is. In a corpus whose looks fall on clips at random, a look's clips carry damage of other strengths and
    families than the plain ones by chance (tungsten's and candle's clips averaged MOS 60 against 67 without a look
    in the 1,800-clip corpus), and the forest learns that chance as the look's cost; a twin shows the same damage in
    both lights. Drawn from a generator of their own, after every other clip: those stay as they were."""
    if n <= 0:
        return []
    singles = [job[0] for job in jobs if len(job) == 1 and job[0].split == "train" and job[0].look == "none"]
    picks = sorted(np.random.default_rng([seed, 0x7A15]).permutation(len(singles))[:n].tolist())
    names = list(looks.LOOKS)
    return [[_twin(singles[i], last_index + k + 1, names[k % len(names)])] for k, i in enumerate(picks)]


def clean_look_twins_of(jobs: Sequence[Sequence[ClipPlan]], last_index: int) -> list[list[ClipPlan]]:
    """Every pristine training clip shot without a look, planned again in every look (same source, camera and
    seed), named after it like a look twin. Random looks leave few clean clips in each (6 % of the clips are
    pristine: in the 2,250-clip corpus, 6 clean low-key clips among 2,150 training ones), so the forest learns a
    look's clean picture mostly through damaged ones; these show it the same clean scene under each look. Not in
    the shipped forest's corpus (make looks-forest): with them the shipped corpus's test split fell from 0.906 /
    0.913 to 0.876 / 0.906 (0.895 / 0.908 with the grades' and keys' twins alone; BENCHMARKS.md, "Tried")."""
    plain = [job[0] for job in jobs if len(job) == 1 and job[0].split == "train" and job[0].look == "none"
             and not job[0].distortions]
    pairs = [(clip, look) for clip in plain for look in looks.LOOKS]
    return [[_twin(clip, last_index + i + 1, look)] for i, (clip, look) in enumerate(pairs)]


def match_background_strength(ref, masks: np.ndarray, face: D.Distortion, seed: int,
                              tol_db: float = 0.05, max_iter: int = 25) -> tuple[float, float]:
    """Background-only strength whose full-frame PSNR equals that of `face` (face-only at its ladder
    strength). A bracketing binary search on log(strength), PSNR falling as the strength grows; each step
    cuts at the false-position point of the bracket (Illinois variant), which on these near-linear curves
    lands within `tol_db` in a few steps instead of a dozen halvings. Returns (strength, target dB)."""
    target = P.psnr(ref.frames, D.apply(ref, [face], seed).frames)

    def gap(log_s: float) -> float:
        d = D.Distortion(face.family, face.kind, face.level, "background", strength=float(np.exp(log_s)))
        # capped: a strength too weak to change a pixel gives an infinite PSNR, which would poison the cut
        return min(P.psnr(ref.frames, D.apply(ref, [d], seed).frames) - target, 100.0)

    # Bracket: the background is larger than the face, so it needs a weaker strength than the face got.
    hi = float(np.log(face.value))
    g_hi = gap(hi)
    while g_hi > 0 and hi < np.log(face.value * 64):
        hi += np.log(2.0)
        g_hi = gap(hi)
    lo = hi - np.log(2.0)
    g_lo = gap(lo)
    while g_lo < 0 and lo > np.log(face.value / 256):
        hi, g_hi = lo, g_lo
        lo -= np.log(2.0)
        g_lo = gap(lo)
    best, g_best = (lo, g_lo) if abs(g_lo) < abs(g_hi) else (hi, g_hi)
    side = 0
    for _ in range(max_iter):
        if abs(g_best) < tol_db or g_lo < 0 or g_hi > 0 or hi - lo < 1e-4:
            break
        if g_hi == g_lo:
            break
        mid = (lo * g_hi - hi * g_lo) / (g_hi - g_lo)  # PSNR gap is positive at lo, negative at hi
        g_mid = gap(mid)
        best, g_best = mid, g_mid
        if g_mid > 0:
            lo, g_lo = mid, g_mid
            if side == -1:
                g_hi /= 2
            side = -1
        else:
            hi, g_hi = mid, g_mid
            if side == 1:
                g_lo /= 2
            side = 1
    return float(np.exp(best)), target


def _psnr_or_none(ref: np.ndarray, dist: np.ndarray) -> float | None:
    """Full-frame PSNR for meta; None when undefined (identical clips, or frames dropped by a stall)."""
    if len(ref) != len(dist):
        return None
    value = P.psnr(ref, dist)
    return round(value, 3) if np.isfinite(value) else None


def _boxes_json(boxes: np.ndarray) -> list[list[float]]:
    return [[round(float(v), 1) for v in b] for b in boxes]


def build_job(job: Sequence[ClipPlan], out: str) -> list[dict]:
    """Render, distort, score and write the clips of one job; returns their meta records."""
    first = job[0]
    if first.cut_to is None:
        ref = render(first.source, first.width, first.height, first.fps, first.duration, seed=first.seed)
    else:
        ref = render_cut(first.source, first.cut_to, first.cut_at, first.width, first.height, first.fps,
                         first.duration, seed=first.seed)
    ref = looks.relit(ref, first.look)
    masks = face_mask(ref.boxes, first.width, first.height)
    records = []
    background_strength = target_psnr = None
    if first.pair_id is not None:
        face = D.Distortion(**{k: v for k, v in first.distortions[0].items() if k != "strength"})
        background_strength, target_psnr = match_background_strength(ref, masks, face, first.seed)
    for plan in job:
        ds = []
        for d in plan.distortions:
            strength = background_strength if plan.pair_role == "background" else None
            ds.append(D.Distortion(d["family"], d["kind"], d["level"], d["region"], strength=strength))
        path = Path(out) / plan.split / "videos" / plan.name
        dist = write_clip(path, ref, ds, plan)
        score = P.pseudo_mos(ref, dist, masks)
        regions = {d.region for d in ds}
        record = {
            "file": plan.name,
            "mos": round(score.mos, 2),
            "split": plan.split,
            "source": plan.source,
            "group": ref.meta["group"],
            "cut_to": plan.cut_to,
            "cut_at": plan.cut_at,
            "families": [d.family for d in ds],
            "severities": {d.family: d.level for d in ds},
            "distortions": [d.as_dict() for d in ds],
            "region": "none" if not ds else (regions.pop() if len(regions) == 1 else "mixed"),
            "width": plan.width,
            "height": plan.height,
            "fps": plan.fps,
            "duration": plan.duration,
            "frames": int(len(dist.frames)),
            "pts": [round(float(t), 4) for t in dist.pts] if len(dist.pts) != len(ref.frames) else None,
            "face_boxes": _boxes_json(ref.boxes[dist.shown]),
            "pseudo_mos": score.as_dict(),
            "psnr": _psnr_or_none(ref.frames, dist.frames),
            "pair_id": plan.pair_id,
            "pair_role": plan.pair_role,
            "pair_target_psnr": None if target_psnr is None else round(target_psnr, 3),
            "seed": plan.seed,
            "look": plan.look,
        }
        records.append(record)
    return records


def write_clip(path: Path, ref, ds: list[D.Distortion], plan: ClipPlan) -> D.DistortedClip:
    """Writes the clip and returns what its file holds.

    A whole-frame compression distortion is the file's own encode, at that distortion's x264 setting: the
    file then carries the quantiser a starved live encoder would (the monitor reads it from the bitstream),
    and the label is computed from the decoded file. Everything else is written at WRITE_CRF, near-lossless.
    """
    full_artifact = [d for d in ds if d.family == "artifact" and d.region == "full"]
    if not full_artifact:
        dist = D.apply(ref, ds, plan.seed)
        write_mp4(path, dist.frames, plan.fps, pts=dist.pts, crf=WRITE_CRF, preset="veryfast")
        return dist
    art = full_artifact[0]
    rest = D.apply(ref, [d for d in ds if d is not art], plan.seed)
    h, w = rest.frames.shape[1:3]
    if art.kind == "crf":
        write_mp4(path, rest.frames, plan.fps, pts=rest.pts, crf=art.value, preset="veryfast")
    else:  # bits per pixel per frame
        write_mp4(path, rest.frames, plan.fps, pts=rest.pts, crf=None, preset="veryfast",
                  bitrate=max(1000, int(art.value * w * h * plan.fps)))
    frames, _ = read_mp4(path)
    return replace(rest, frames=frames, distortions=tuple(ds))


def _init_worker() -> None:
    import cv2

    cv2.setNumThreads(1)


def build_corpus(out: str | Path, seed: int = 0, clips: int = DEFAULT_CLIPS, duration: float = DEFAULT_DURATION,
                 workers: int = 2, progress: bool = True, extra_train: int = 0, look_share: float = 0.0,
                 look_twins: int = 0, clean_look_twins: bool = False) -> dict:
    """Build the whole corpus under `out`; returns the summary also written to `out/corpus.json`."""
    from tqdm import tqdm

    started = time.monotonic()
    out = Path(out)
    for split in SPLITS:
        (out / split / "videos").mkdir(parents=True, exist_ok=True)
    jobs = plan_corpus(clips, seed, duration, extra_train, look_share, look_twins, clean_look_twins)
    records: list[dict] = []
    bar = tqdm(total=sum(len(j) for j in jobs), desc="corpus", unit="clip", disable=not progress)
    # Each finished job leaves its meta records in out/.jobs/, so a rerun after a crash or Ctrl-C picks up
    # where it stopped (same seed, same plan: a finished job's clips are already there).
    done_dir = out / ".jobs"
    done_dir.mkdir(exist_ok=True)
    settings = f"{seed}-{clips}-{duration:g}" + (f"-looks{look_share:g}" if look_share else "")

    def done_path(job: Sequence[ClipPlan]) -> Path:
        return done_dir / f"{settings}-{Path(job[0].name).stem}.json"

    todo = []
    for job in jobs:
        path = done_path(job)
        if path.is_file() and all((out / p.split / "videos" / p.name).is_file() for p in job):
            records += json.loads(path.read_text())
            bar.update(len(job))
        else:
            todo.append(job)
    jobs = todo

    def finished(job: Sequence[ClipPlan], recs: list[dict]) -> None:
        records.extend(recs)
        done_path(job).write_text(json.dumps(recs))
        bar.update(len(job))

    if workers <= 1:
        _init_worker()
        for job in jobs:
            finished(job, build_job(job, str(out)))
    else:
        # spawn, not fork: a forked child of a process whose OpenCV/onnxruntime thread pools already ran
        # can deadlock on their locks (it did, in the test suite)
        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=workers, initializer=_init_worker, mp_context=ctx) as pool:
            futures = {pool.submit(build_job, job, str(out)): job for job in jobs}
            for fut in as_completed(futures):
                finished(futures[fut], fut.result())
    bar.close()
    counts = {}
    for split in SPLITS:
        rows = sorted((r for r in records if r["split"] == split), key=lambda r: r["file"])
        counts[split] = len(rows)
        with open(out / split / "labels.txt", "w") as f:
            f.writelines(f"{r['file']} {r['mos']:.2f}\n" for r in rows)
        with open(out / split / "meta.jsonl", "w") as f:
            f.writelines(json.dumps(r, separators=(",", ":")) + "\n" for r in rows)
    summary = {
        "format": "FVQ-20K",
        "seed": seed,
        "clips": counts,
        "extra_train": extra_train,
        "look_share": look_share,
        "look_twins": look_twins,
        "clean_look_twins": clean_look_twins,
        "duration": duration,
        "resolutions": [list(r) for r in RESOLUTIONS],
        "frame_rates": list(FRAME_RATES),
        "split_of_group": SPLIT_OF_GROUP,
        "sources": {s: v for s, v in sources_by_split().items()},
        "pseudo_mos": {k: getattr(P, k) for k in ("FACE_WEIGHT", "SSIM_WEIGHT", "CHROMA_SCALE", "FROZEN_SHARE_PENALTY",
                                                   "LONGEST_FREEZE_PENALTY", "LOGISTIC_CENTRE", "LOGISTIC_SCALE")},
        "ladder": {f"{f}/{k}": list(v) for (f, k), v in D.LADDER.items()},
        "build_seconds": round(time.monotonic() - started, 1),
    }
    (out / "corpus.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m train.corpus", description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="output folder (created; existing clips are overwritten)")
    parser.add_argument("--seed", type=int, default=0, help="corpus seed: same seed, same corpus")
    parser.add_argument("--clips", type=int, default=DEFAULT_CLIPS, help=f"number of clips (default {DEFAULT_CLIPS})")
    parser.add_argument("--extra-train", type=int, default=0,
                        help="this many more training clips, planned after val and test (which stay as without them)")
    parser.add_argument("--duration", type=float, default=DEFAULT_DURATION, help="clip length in seconds")
    parser.add_argument("--look-share", type=float, default=0.0,
                        help="share of clips shot in a clean look (train/looks.py: lights, grades, low/high key), "
                             "labelled clean, distortions on top (default 0: the shipped corpus)")
    parser.add_argument("--look-twins", type=int, default=0,
                        help="this many training clips without a look planned again in one, same damage "
                             "(look_twins_of; default 0)")
    parser.add_argument("--clean-look-twins", action="store_true",
                        help="also plan every pristine training clip without a look again in every look "
                             "(clean_look_twins_of)")
    parser.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1), help="process pool size")
    args = parser.parse_args(argv)
    if args.clips < 3:
        parser.error("--clips must be at least 3 (one clip per split)")
    if args.extra_train < 0:
        parser.error("--extra-train must be 0 or more")
    if args.duration <= 0.2:
        parser.error("--duration must be above 0.2 s")
    if not 0 <= args.look_share <= 1:
        parser.error("--look-share must be between 0 and 1")
    if args.look_twins < 0:
        parser.error("--look-twins must be 0 or more")
    summary = build_corpus(args.out, args.seed, args.clips, args.duration, args.workers, extra_train=args.extra_train,
                           look_share=args.look_share, look_twins=args.look_twins,
                           clean_look_twins=args.clean_look_twins)
    print(f"wrote {sum(summary['clips'].values())} clips {summary['clips']} to {args.out} "
          f"in {summary['build_seconds']} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
