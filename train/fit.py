"""FVQ-Rater training: features once per clip (cached), Stage I (level CE) then Stage II (MOS L1, LoRA), a bundle.

    python -m train.fit --root CORPUS --out BUNDLE_DIR --seed 0 [--size tiny]

Clips become windows exactly as on the live path (stream.live.offline.analyse_file with the default monitor
config: decode, sampling, faces, embeddings, signals); every window of a clip is labelled with the clip's
MOS, and a clip's prediction is the mean of its windows' scores (what `fvq score` reports).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import random
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from engines.base import file_sha256
from engines.rater import WindowFeatures, assemble_window_features, level_index, signal_keys_of
from train.bundle import add_eval_table, choose_dimension_heads, write_bundle
from train.evaluate import evaluate_predictions

SPLITS = ("train", "val", "test")


# ---------------------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------------------


@dataclass
class ClipLabel:
    path: Path
    mos: float
    meta: dict = field(default_factory=dict)


def read_split(root: Path, split: str) -> list[ClipLabel]:
    """The clips of ROOT/split (labels.txt "<file> <MOS>", videos/), via train.dataset when it exists."""
    try:
        from train.dataset import load_split  # type: ignore[import-not-found]
    except ImportError:
        load_split = None
    if load_split is not None:
        return [ClipLabel(Path(c.path), float(c.mos), dict(getattr(c, "meta", {}) or {})) for c in load_split(root, split)]
    labels = Path(root) / split / "labels.txt"
    if not labels.is_file():
        raise FileNotFoundError(f"{labels} is missing: --root must be an FVQ-20K-format folder with {split}/labels.txt")
    clips = []
    for n, line in enumerate(labels.read_text().splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) < 2:
            raise ValueError(f"{labels}:{n}: expected '<file> <MOS>', got {line!r}")
        clips.append(ClipLabel(Path(root) / split / "videos" / parts[0], float(parts[1])))
    return clips


@dataclass
class ClipFeatures:
    """A clip's windows: arrays with a leading window axis, plus the names of its signal values."""

    path: str
    mos: float
    arrays: dict[str, np.ndarray]
    signal_names: list[str]
    dims: np.ndarray | None = None  # (6,) dimension labels 0..100 from the corpus meta (NaN: unknown)

    @property
    def windows(self) -> int:
        return len(self.arrays["signals"])


class FeatureExtractor:
    """Runs the live path's analysis on a file and the rater's frame encoder; caches one .npz per clip."""

    def __init__(self, rater, cache_dir: Path, monitor_config=None) -> None:
        from stream.config import MonitorConfig
        from stream.live.analysis import build_analyzer

        self.rater = rater
        self.cfg = monitor_config or MonitorConfig(no_model=True)
        self.analyzer = build_analyzer(self.cfg)  # faces, embeddings, signals; no rater
        self.cache_dir = Path(cache_dir)
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        from engines.rater import WINDOW_STAT_KEYS
        from engines.signals import CAST_ESTIMATE, CHROMA_ESTIMATE, SIGNALS_VERSION

        settings = {"rater": rater.extractor_version, "window_stats": list(WINDOW_STAT_KEYS), "signals": SIGNALS_VERSION,
                    "cast": CAST_ESTIMATE, "chroma": CHROMA_ESTIMATE,
                    "window": self.cfg.window.model_dump(mode="json"),
                    "analysis": self.cfg.analysis.model_dump(mode="json"), "face": self.cfg.face.model_dump(mode="json")}
        self.version = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:12]

    def __call__(self, clip: ClipLabel) -> ClipFeatures | None:
        key = self.cache_dir / f"{file_sha256(clip.path)[:24]}-{self.version}.npz"
        if key.is_file():
            with np.load(key) as z:
                arrays = {k: z[k] for k in WindowFeatures.ARRAYS}
                names = [str(s) for s in z["signal_names"]]
        else:
            from stream.live.offline import analyse_file

            analysis = analyse_file(clip.path, self.cfg, self.analyzer, keep_windows=True)
            if not analysis.windows:
                return None
            sampled = list({id(r): r for w in analysis.windows for r in w.sampled}.values())
            self.rater.frame_features(self.analyzer.model_frames(sampled))  # the live path's grid
            spec = self.rater.spec
            from dataclasses import replace

            wide = replace(spec, signal_keys=tuple(sorted(signal_keys_of(sampled))))
            feats = [assemble_window_features(w, wide) for w in analysis.windows]
            arrays = {k: np.stack([getattr(f, k) for f in feats]) for k in WindowFeatures.ARRAYS}
            names = wide.signal_names()
            tmp = key.with_suffix(".tmp.npz")
            np.savez(tmp, signal_names=np.array(names), **arrays)
            tmp.replace(key)
        return ClipFeatures(str(clip.path), clip.mos, arrays, names, dimension_labels(clip.meta))


# How much of a family's severity a dimension label takes when the distortion covers only part of the picture
# (the pseudo-MOS weighs the face 0.7 and the background 0.3).
REGION_WEIGHT = {"full": 1.0, "face": 0.7, "background": 0.3, "mixed": 1.0}


def dimension_labels(meta: dict | None) -> np.ndarray:
    """Per-dimension labels of a synthetic clip: 100 - 20 x severity x region weight for each distorted family,
    100 for the others; NaN everywhere when the clip has no meta (FVQ-20K proper rates no dimensions)."""
    from engines.features import DIMENSIONS

    out = np.full(len(DIMENSIONS), np.nan, np.float32)
    if not meta or "severities" not in meta:
        return out
    out[:] = 100.0
    regions = {d["family"]: d.get("region", "full") for d in meta.get("distortions", [])}
    for family, level in meta["severities"].items():
        if family in DIMENSIONS:
            out[DIMENSIONS.index(family)] = 100.0 - 20.0 * float(level) * REGION_WEIGHT.get(regions.get(family, "full"), 1.0)
    return out


def select_signals(clip: ClipFeatures, names: list[str]) -> np.ndarray:
    """The clip's signals re-ordered to `names` (a value the clip lacks is 0)."""
    index = {n: i for i, n in enumerate(clip.signal_names)}
    src = clip.arrays["signals"]
    out = np.zeros((len(src), len(names)), dtype=np.float32)
    for j, n in enumerate(names):
        if n in index:
            out[:, j] = src[:, index[n]]
    return out


@dataclass
class Dataset:
    """Windows stacked over clips: arrays (N, ...), window MOS (N,), clip of each window (N,), clip MOS (C,)."""

    arrays: dict[str, np.ndarray]
    mos: np.ndarray
    clip_of: np.ndarray
    clip_mos: np.ndarray
    dims: np.ndarray | None = None  # (N, 6) window dimension labels, NaN where unknown

    def __len__(self) -> int:
        return len(self.mos)

    @classmethod
    def from_clips(cls, clips: list[ClipFeatures], signal_names: list[str]) -> Dataset:
        arrays: dict[str, list[np.ndarray]] = {k: [] for k in WindowFeatures.ARRAYS}
        mos, clip_of, dims = [], [], []
        for i, c in enumerate(clips):
            for k in WindowFeatures.ARRAYS:
                arrays[k].append(select_signals(c, signal_names) if k == "signals" else c.arrays[k])
            mos += [c.mos] * c.windows
            clip_of += [i] * c.windows
            d = c.dims if c.dims is not None else np.full(6, np.nan, np.float32)
            dims += [d] * c.windows
        dims_arr = np.asarray(dims, np.float32).reshape(-1, 6)
        return cls({k: np.concatenate(v) for k, v in arrays.items()}, np.asarray(mos, np.float32),
                   np.asarray(clip_of, np.int64), np.asarray([c.mos for c in clips], np.float32),
                   dims_arr if np.isfinite(dims_arr).any() else None)

    def batch(self, idx: np.ndarray) -> dict[str, np.ndarray]:
        return {k: v[idx] for k, v in self.arrays.items()}


# ---------------------------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------------------------


@dataclass
class StageSettings:
    epochs: int = 30
    lr: float = 1e-3
    batch_size: int = 32
    weight_decay: float = 0.01
    warmup_steps: int = 20
    patience: int = 6  # epochs without a better val SRCC before stopping
    max_steps_per_epoch: int | None = None
    rank_weight: float = 0.0  # Stage II: weight of a pairwise ranking hinge (in MOS points) next to the L1
    keep_last: bool = False  # keep the last epoch's weights, not the best-monitored one (no held-out split)


DIMS_WEIGHT = 0.5  # the dimension head's L1 next to the MOS L1 in Stage II (when the corpus labels dimensions)


def rank_loss(score: torch.Tensor, mos: torch.Tensor, margin: float = 1.0) -> torch.Tensor:
    """Pairwise hinge over a batch: every pair whose MOS differs by more than `margin` should be ordered the same
    way by the score, by at least the MOS gap (capped at 10 points). The L1 alone barely ranks the crowded top of
    the MOS scale (many mildly distorted clips sit at 90-97)."""
    ds = score[:, None] - score[None, :]
    dm = mos[:, None].float() - mos[None, :].float()
    valid = (dm > margin).float()
    hinge = torch.relu(dm.clamp(max=10.0) - ds) * valid
    return hinge.sum() / valid.sum().clamp(min=1)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def predict_clips(rater, data: Dataset, batch_size: int = 64) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(clip raw scores, clip expected levels, window raw scores): window outputs averaged per clip."""
    rater.model.eval()
    scores, expected = [], []
    centres = torch.tensor([10.0, 30.0, 50.0, 70.0, 90.0])
    for s in range(0, len(data), batch_size):
        out = rater.predict(data.batch(np.arange(s, min(len(data), s + batch_size))))
        scores.append(out["score"])
        expected.append((torch.from_numpy(out["level_logits"]).softmax(-1) * centres).sum(-1).numpy())
    w_scores, w_expected = np.concatenate(scores), np.concatenate(expected)
    n = len(data.clip_mos)
    counts = np.bincount(data.clip_of, minlength=n).clip(min=1)
    return (np.bincount(data.clip_of, w_scores, n) / counts, np.bincount(data.clip_of, w_expected, n) / counts, w_scores)


def train_stage(rater, stage: int, train: Dataset, val: Dataset | None, settings: StageSettings, seed: int,
                log=print) -> dict[str, Any]:
    """Trains one stage; keeps the weights of the epoch with the best val SRCC (early stopping)."""
    from train.model import stage1_loss, stage2_loss

    model = rater.model
    model.set_stage(stage)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=settings.lr, weight_decay=settings.weight_decay)
    steps_per_epoch = math.ceil(len(train) / settings.batch_size)
    if settings.max_steps_per_epoch:
        steps_per_epoch = min(steps_per_epoch, settings.max_steps_per_epoch)
    total = max(1, steps_per_epoch * settings.epochs)

    def lr_at(step: int) -> float:  # linear warm-up, then cosine to 5%
        if step < settings.warmup_steps:
            return (step + 1) / settings.warmup_steps
        t = (step - settings.warmup_steps) / max(1, total - settings.warmup_steps)
        return 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(1.0, t)))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_at)
    levels = torch.tensor([level_index(float(m)) for m in train.mos])
    rng = np.random.default_rng(seed + stage)
    best: dict[str, Any] = {"srcc": -math.inf, "epoch": -1}
    best_state = None
    history = []
    for epoch in range(settings.epochs):
        model.train()
        order = rng.permutation(len(train))
        losses = []
        bar = tqdm(range(steps_per_epoch), desc=f"stage {stage} epoch {epoch + 1}/{settings.epochs}",
                   leave=False, file=sys.stderr, disable=None)
        for step in bar:
            idx = order[step * settings.batch_size:(step + 1) * settings.batch_size]
            if len(idx) == 0:
                break
            out = model(rater.tensors(train.batch(idx)))
            if stage == 1:
                loss = stage1_loss(out, levels[idx])
            elif train.dims is not None:
                d = train.dims[idx]
                loss = stage2_loss(out, torch.from_numpy(train.mos[idx]), torch.from_numpy(np.nan_to_num(d)),
                                   torch.from_numpy(np.isfinite(d)), dims_weight=DIMS_WEIGHT)
            else:
                loss = stage2_loss(out, torch.from_numpy(train.mos[idx]))
            if stage == 2 and settings.rank_weight > 0:
                loss = loss + settings.rank_weight * rank_loss(out["score"], torch.from_numpy(train.mos[idx]))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            sched.step()
            losses.append(loss.item())
            bar.set_postfix(loss=f"{np.mean(losses):.3f}")
        row: dict[str, Any] = {"epoch": epoch + 1, "loss": float(np.mean(losses)) if losses else 0.0}
        monitor = val if val is not None and len(val.clip_mos) >= 3 else train
        raw, expected, _ = predict_clips(rater, monitor)
        metrics = evaluate_predictions(expected if stage == 1 else raw, monitor.clip_mos)
        row.update({f"{'val' if monitor is val else 'train'}_{k}": v for k, v in metrics.items() if k != "n"})
        history.append(row)
        log(f"stage {stage} epoch {epoch + 1}: " + ", ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}"
                                                             for k, v in row.items() if k != "epoch"))
        if metrics["srcc"] > best["srcc"]:
            best = {"srcc": metrics["srcc"], "epoch": epoch + 1}
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        elif epoch + 1 - best["epoch"] >= settings.patience:
            log(f"stage {stage}: early stop, best val SRCC {best['srcc']:.4f} at epoch {best['epoch']}")
            break
    if best_state is not None and not settings.keep_last:
        model.load_state_dict(best_state)
    return {"best_epoch": best["epoch"], "best_srcc": best["srcc"], "history": history,
            "settings": settings.__dict__}


def signal_stats(data: Dataset) -> tuple[np.ndarray, np.ndarray]:
    s = data.arrays["signals"].astype(np.float64)
    s = np.sign(s) * np.log1p(np.abs(s))
    return s.mean(0), s.std(0)


def linear_calibration(raw: np.ndarray, mos: np.ndarray) -> dict[str, float]:
    """Least-squares a, b with MOS ~ a * raw + b; identity unless it is well defined and increasing."""
    if len(raw) >= 3 and np.ptp(raw) > 1e-6:
        a, b = np.polyfit(raw.astype(np.float64), mos.astype(np.float64), 1)
        if a > 0:
            return {"a": float(a), "b": float(b)}
    return {"a": 1.0, "b": 0.0}


def fit(rater, train: Dataset, val: Dataset | None, stage1: StageSettings, stage2: StageSettings, seed: int,
        log=print) -> dict[str, Any]:
    """Stage I then Stage II on prepared datasets; sets the score calibration on val. Returns the training log."""
    seed_everything(seed)
    rater.model.set_signal_stats(*signal_stats(train))
    rater.config.rates_dimensions = train.dims is not None
    report = {"stage1": train_stage(rater, 1, train, val, stage1, seed, log),
              "stage2": train_stage(rater, 2, train, val, stage2, seed, log)}
    calib_set = val if val is not None and len(val.clip_mos) >= 3 else train
    raw, _, _ = predict_clips(rater, calib_set)
    rater.config.calibration = linear_calibration(raw, calib_set.clip_mos)
    return report


def blind_face_projector(rater) -> None:
    """Makes the face projector's output independent of the embedding: its LayerNorm gain goes to 0, so any
    input gives the LayerNorm's bias, which is exactly what the zeroed training embeddings gave. The live path
    feeds real embeddings; the model then reads the same face token it trained with (face or no face only)."""
    norm = rater.model.face_proj.net[0]
    with torch.no_grad():
        norm.weight.zero_()


def clip_scores(rater, data: Dataset, prior=None) -> np.ndarray:
    """Each clip's published score (the mean over its windows, as `fvq score` reports): calibrated model scores,
    blended with `prior` (default: the rater's own) where there is one."""
    _, _, windows = predict_clips(rater, data)
    scores = rater.calibrate(windows)
    prior = rater.prior if prior is None else prior
    if prior is not None:
        scores = prior.blend(scores, data.arrays["signals"], rater.spec.signal_names())
    n = len(data.clip_mos)
    return np.bincount(data.clip_of, scores, n) / np.bincount(data.clip_of, minlength=n).clip(min=1)


def evaluate_dataset(rater, data: Dataset) -> dict[str, float]:
    return evaluate_predictions(clip_scores(rater, data), data.clip_mos)


MODEL_WEIGHTS = (0.0, 0.25, 0.5, 0.75, 1.0)  # candidate model shares of the published score


def weight_table(rater, forest, data: Dataset) -> dict[str, dict[str, float]]:
    """Clip SRCC and PLCC of every candidate blend on `data`."""
    from engines.forest import ScorePrior

    table = {}
    for w in MODEL_WEIGHTS:
        m = evaluate_predictions(clip_scores(rater, data, ScorePrior(forest, w)), data.clip_mos)
        table[f"{w:g}"] = {"srcc": m["srcc"], "plcc": m["plcc"]}
    return table


def choose_model_weight(rater, forest, val: Dataset) -> tuple[float, dict[str, dict[str, float]]]:
    """The model's share w of score = (1 - w) * forest + w * model with the best val SRCC + PLCC (the smaller
    share on a tie: the forest generalised better to unseen people on the synthetic corpus); with every
    candidate's val figures."""
    table = weight_table(rater, forest, val)
    best = max(MODEL_WEIGHTS, key=lambda w: (round(table[f"{w:g}"]["srcc"] + table[f"{w:g}"]["plcc"], 4), -w))
    return best, table


# Signal inputs the forest does not read by default (--forest-inputs quality): measurements of what the person and
# the scene look like rather than of damage (skin hue and saturation, colourfulness, saturation and mean level of
# the picture and the face, the face's size on screen, its movement, and how alike consecutive face embeddings
# are). Trees can recognise a training person by them and remember how good that person's clips were. Left out,
# on the synthetic corpus (forest alone, seed 0, scikit-learn's forest used directly): val SRCC / PLCC
# 0.884 / 0.896 -> 0.907 / 0.908, leaving each train/val person group out 0.808 -> 0.810 (mean per group), and
# the clean clips of people the forest never saw 11.7 -> 8.9 points below trained people's (val), 14.4 -> 13.3
# (left out). The test split, a report only, ranked the other way (0.861 -> 0.853 with the model's share 0.25);
# BENCHMARKS.md, "Retrained on version-2 signal inputs".
APPEARANCE_INPUTS = ("skin_hue", "skin_saturation", ".saturation.", ".colorfulness.", ".mean_luma.",
                     "window.face_size", "window.identity_stability", "window.face_jitter")


# The narrower set (--forest-inputs no-identity): only the window statistics of the face that can tell one person
# from another (its size on screen, its movement, how alike consecutive embeddings are); the picture's colour and
# level measurements stay, since colour and exposure damage is read through them.
IDENTITY_INPUTS = ("window.face_size", "window.identity_stability", "window.face_jitter")
FOREST_INPUT_SETS = ("quality", "no-identity", "all")


def forest_inputs(names: Sequence[str], which: str = "quality") -> list[str]:
    """The signal names the forest is trained on: all of them, all but IDENTITY_INPUTS (no-identity), or
    (quality) all but APPEARANCE_INPUTS."""
    if which == "all":
        return list(names)
    if which == "no-identity":
        return [n for n in names if n not in IDENTITY_INPUTS]
    if which != "quality":
        raise ValueError(f"forest inputs {which!r}: one of {', '.join(FOREST_INPUT_SETS)}")
    return [n for n in names if not any(p in n for p in APPEARANCE_INPUTS)]


def fit_prior(rater, data: dict[str, Dataset | None], args, log=print) -> tuple[dict[str, Any], Any]:
    """Fits the signal forest on the training windows, sets rater.prior with the model share chosen on val (or
    given); returns the manifest's "prior" entry and the forest that has not seen val (for choices made on
    val after this one: the shipped forest is refitted on train + val)."""
    from engines.forest import FOREST_FILE, ScorePrior
    from train.forest import MIN_SAMPLES_LEAF, fit_forest

    train, val = data["train"], data["val"]
    assert train is not None
    t0 = time.time()
    all_names = rater.spec.signal_names()
    names = forest_inputs(all_names, getattr(args, "forest_inputs", "all"))
    cols = [all_names.index(n) for n in names]
    forest = fit_forest(train.arrays["signals"][:, cols], names, train.mos, train.dims, args.seed)
    entry: dict[str, Any] = {
        "file": FOREST_FILE, "kind": "extra-trees regressor over the signal vector (engines/forest.py)",
        "trees": forest.trees, "nodes": forest.nodes, "depth": forest.depth, "min_samples_leaf": MIN_SAMPLES_LEAF,
        "inputs": len(forest.inputs), "outputs": list(forest.outputs), "trained_on": "the train windows" +
        (" and val (--fold-val)" if args.fold_val else ""), "seed": args.seed, "seconds": round(time.time() - t0, 1),
        "blend": "score = clip((1 - model_weight) * forest MOS + model_weight * calibrated model score, 0, 100)",
        "input_set": getattr(args, "forest_inputs", "all"),
    }
    if args.model_weight is not None or val is None or len(val.clip_mos) < 3:
        weight = 1.0 if args.model_weight is None else args.model_weight
        entry["model_weight_rule"] = "given (--model-weight)" if args.model_weight is not None else \
            "no val split to choose on: the model's score alone"
    else:
        weight, table = choose_model_weight(rater, forest, val)
        entry["model_weight_rule"] = ("the share with the best val SRCC + PLCC among " +
                                      ", ".join(f"{w:g}" for w in MODEL_WEIGHTS) + " (the smaller on a tie)")
        entry["val"] = table
        log("model weight on val: " + ", ".join(f"{w}: SRCC {m['srcc']:.3f} PLCC {m['plcc']:.3f}"
                                                for w, m in table.items()) + f" -> {weight:g}")
    unseen_val = forest
    if "val" in entry and val is not None and not getattr(args, "no_forest_refit", False):
        # the share is chosen; the shipped forest then learns from every person outside test (two more: it ranks
        # unseen people better the more it has seen), the usual last step after model selection
        forest = fit_forest(np.concatenate([train.arrays["signals"], val.arrays["signals"]])[:, cols],
                            names, np.concatenate([train.mos, val.mos]),
                            None if train.dims is None or val.dims is None else np.concatenate([train.dims, val.dims]),
                            args.seed)
        entry.update(trees=forest.trees, nodes=forest.nodes, depth=forest.depth,
                     trained_on="the train and val windows, refitted after the model weight was chosen on val with "
                                "a forest of the train windows only (the val table)")
    entry["model_weight"] = weight
    test = data.get("test")
    if test is not None and len(test.clip_mos) >= 3:  # reported beside the choice, never used for it
        entry["test_report"] = {"note": "every candidate on the test split, for the record: not used to choose",
                                **weight_table(rater, forest, test)}
    rater.prior = ScorePrior(forest, weight)
    return entry, unseen_val


# ---------------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------------


def build_rater(size: str, signal_keys: Sequence[str], seed: int, base_model: Path | None, device: str,
                dtype: str = "auto"):
    from engines import fvq_rater
    from train.model import build_from_base, build_tiny, load_base_model

    if size == "tiny":
        model = build_tiny(signal_keys, seed=seed)
    else:
        if base_model is None:
            raise SystemExit("--size full needs --base-model DIR (a local Qwen2-VL / Qwen2.5-VL / InternVL folder)")
        from engines.base_model import BaseModelError

        try:  # the folder, family, weights, tokenizer and memory are checked before anything heavy
            base = load_base_model(base_model, dtype=dtype, device=device, training=True)
        except BaseModelError as exc:
            raise SystemExit(f"train.fit: {exc}") from exc
        model = build_from_base(base, signal_keys, seed=seed)
    return fvq_rater.FVQRater(model, device=device)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m train.fit", description=__doc__.splitlines()[0])
    p.add_argument("--root", type=Path, required=True, help="FVQ-20K-format folder ({train,val,test}/labels.txt)")
    p.add_argument("--out", type=Path, required=True, help="bundle folder to write")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--size", choices=("tiny", "full"), default="tiny")
    p.add_argument("--base-model", type=Path, help="local base VLM folder (--size full)")
    p.add_argument("--dtype", choices=("auto", "float32", "bfloat16", "float16"), default="auto",
                   help="--size full: the rater's one dtype (auto: the base checkpoint's own)")
    p.add_argument("--cache", type=Path, help="feature cache folder (default ROOT/.cache/features)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--epochs1", type=int, default=20)
    p.add_argument("--epochs2", type=int, default=60)
    p.add_argument("--lr1", type=float, default=1e-3)
    p.add_argument("--lr2", type=float, default=1e-3)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--patience", type=int, default=1000,
                   help="epochs without a better val SRCC before stopping (the synthetic val split is 40 clips of "
                        "one source: too noisy to stop on, so by default every epoch runs and the best is kept)")
    p.add_argument("--rank-weight", type=float, default=1.0, help="Stage II pairwise ranking hinge weight")
    p.add_argument("--stream-dropout", type=float, default=0.0,
                   help="chance a training window loses its spatial, portrait or face tokens (content robustness)")
    p.add_argument("--feature-dropout", type=float, default=0.0, help="dropout on frame and face features in training")
    p.add_argument("--no-face-identity", action="store_true",
                   help="the model does not read who is on screen: face embeddings are zeroed in training and the face "
                        "projector made constant (its LayerNorm gain 0), so the face token says only whether a face "
                        "is there; embeddings still feed face presence and identity stability")
    p.add_argument("--fold-val", action="store_true",
                   help="after settings were chosen on val: train on train + val for the fixed epoch counts, keeping "
                        "the last epoch (more people seen; the test split stays held out)")
    p.add_argument("--model-weight", type=float,
                   help="the model's share of the published score next to the signal-forest prior (0..1; default: "
                        "chosen on val from " + ", ".join(f"{w:g}" for w in MODEL_WEIGHTS) + "; needed with --fold-val)")
    p.add_argument("--no-prior", action="store_true", help="no signal forest: the score is the model's alone")
    p.add_argument("--forest-inputs", choices=FOREST_INPUT_SETS, default="quality",
                   help="the signals the forest reads: quality (default) leaves out what the person and scene look "
                        "like (train.fit APPEARANCE_INPUTS), no-identity only the face statistics that tell people "
                        "apart (IDENTITY_INPUTS), all reads every signal")
    p.add_argument("--no-forest-refit", action="store_true",
                   help="ship the forest of the train windows (default: refit it on train + val once the model "
                        "weight is chosen)")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument("--no-eval", action="store_true",
                   help="skip the eval table (the test split through `fvq score`'s path, with BRISQUE and NIQE)")
    args = p.parse_args(argv)
    if args.model_weight is not None and not 0.0 <= args.model_weight <= 1.0:
        p.error(f"--model-weight must be within 0..1, got {args.model_weight}")
    if args.fold_val and args.model_weight is None and not args.no_prior:
        p.error("--fold-val leaves no val split to choose the model weight on: pass --model-weight "
                "(the value a run with val chose)")
    if args.threads:
        torch.set_num_threads(args.threads)
    seed_everything(args.seed)
    t0 = time.time()

    splits = {s: read_split(args.root, s) for s in SPLITS}
    if not splits["train"]:
        raise SystemExit(f"{args.root}/train/labels.txt lists no clips")
    # Features do not depend on the signal key list: extract with a provisional rater, then build the real one.
    probe = build_rater(args.size, (), args.seed, args.base_model, args.device, args.dtype)
    extractor = FeatureExtractor(probe, args.cache or args.root / ".cache" / "features")
    clips: dict[str, list[ClipFeatures]] = {}
    skipped: list[str] = []
    for split, labels in splits.items():
        clips[split] = []
        for clip in tqdm(labels, desc=f"features {split}", file=sys.stderr, disable=None):
            try:
                cf = extractor(clip)
            except Exception as exc:  # one unreadable clip must not end a long run: it is listed in the manifest
                print(f"skipping {clip.path}: {exc}", file=sys.stderr)
                cf = None
            if cf is None:
                skipped.append(str(clip.path))
            else:
                clips[split].append(cf)
    from engines.rater import WINDOW_STAT_KEYS

    keys = sorted({n.rsplit(".", 1)[0] for c in clips["train"] for n in c.signal_names if n not in WINDOW_STAT_KEYS})
    encoder, extractor.rater = probe.encoder, None
    del probe  # a `full` probe holds a whole base model: free it before loading the one that trains
    rater = build_rater(args.size, keys, args.seed, args.base_model, args.device, args.dtype)
    rater.encoder = encoder
    rater.model.config.stream_dropout = args.stream_dropout
    rater.model.config.feature_dropout = args.feature_dropout
    names = rater.spec.signal_names()
    if args.fold_val:
        clips["train"] = clips["train"] + clips["val"]
        clips["val"] = []
    data = {s: Dataset.from_clips(c, names) if c else None for s, c in clips.items()}
    if args.no_face_identity:
        for d in data.values():
            if d is not None:
                d.arrays["face"] = np.zeros_like(d.arrays["face"])
    print("windows: " + ", ".join(f"{s}={len(d) if d else 0}" for s, d in data.items()), file=sys.stderr)

    s1 = StageSettings(epochs=args.epochs1, lr=args.lr1, batch_size=args.batch_size, patience=args.patience,
                       keep_last=args.fold_val)
    s2 = StageSettings(epochs=args.epochs2, lr=args.lr2, batch_size=args.batch_size, patience=args.patience,
                       rank_weight=args.rank_weight, keep_last=args.fold_val)
    log = lambda msg: print(msg, file=sys.stderr)  # noqa: E731
    report = fit(rater, data["train"], data["val"], s1, s2, args.seed, log)  # type: ignore[arg-type]
    if args.no_face_identity:
        blind_face_projector(rater)
    prior_entry, unseen_val = (None, None) if args.no_prior else fit_prior(rater, data, args, log)
    metrics = {s: evaluate_dataset(rater, d) for s, d in data.items() if d is not None}
    corpus_json = args.root / "corpus.json"
    training = {
        "root": str(args.root), "seed": args.seed, "size": args.size,
        "corpus": corpus_recipe(args.root) if corpus_json.is_file() else None,
        "features": {"how": "stream.live.offline.analyse_file with the default monitor config (the live path)",
                     "window": extractor.cfg.window.model_dump(mode="json"),
                     "analysis": extractor.cfg.analysis.model_dump(mode="json")},
        "val_folded_into_train": args.fold_val,
        "face_identity": not args.no_face_identity,
        "clips": {s: len(c) for s, c in clips.items()}, "windows": {s: len(d) if d else 0 for s, d in data.items()},
        "skipped": skipped, "labels": "window label = clip MOS; clip prediction = mean of window scores",
        "stage1": report["stage1"], "stage2": report["stage2"],
        "metrics_note": "metrics: clip SRCC/PLCC of the published score (the prior blend when there is one); "
                        "val is in-sample for the forest when prior.trained_on says it was refitted on val",
        "seconds": round(time.time() - t0, 1), "torch": torch.__version__,
    }
    manifest = write_bundle(rater, args.out, training, metrics, prior_entry)
    if not args.no_eval and clips["test"]:
        add_eval_table(args.out, args.root)
        choose_dimension_heads(args.out, args.root, "val" if clips["val"] or args.fold_val else "test",
                               forest=unseen_val)
    print(json.dumps({"out": str(args.out), "metrics": metrics, "files": manifest["files"]}, indent=2))
    return 0


def corpus_recipe(root: Path) -> dict[str, Any]:
    """How the training data was made: the corpus build summary (seed, counts, sizes, rates, content split,
    distortion ladder, pseudo-MOS constants), the command that rebuilds it and the pseudo-MOS recipe."""
    import train.pseudo_mos

    summary = json.loads((Path(root) / "corpus.json").read_text())
    return {"command": f"python -m train.corpus --out {root} --seed {summary.get('seed', 0)}",
            "summary": summary, "pseudo_mos_recipe": (train.pseudo_mos.__doc__ or "").strip()}


if __name__ == "__main__":
    raise SystemExit(main())


__all__ = ["Dataset", "FeatureExtractor", "StageSettings", "fit", "main", "read_split", "write_bundle"]
