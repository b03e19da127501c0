"""FVQ-Rater training: features once per clip (cached), Stage I (level CE) then Stage II (MOS L1, LoRA), a bundle.

    python -m train.fit --root CORPUS --out BUNDLE_DIR --seed 0 [--size tiny]

Clips become windows exactly as on the live path (train/clip_features.py); the stages are train/stages.py, the
signal-forest prior and the model's share train/prior.py; this module is the command that runs them and writes
the bundle.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from train.bundle import add_eval_table, choose_dimension_heads, write_bundle
from train.clip_features import SPLITS, ClipFeatures, Dataset, FeatureExtractor, read_split
from train.prior import FOREST_INPUT_SETS, MODEL_WEIGHTS, evaluate_dataset, fit_prior
from train.stages import StageSettings, blind_face_projector, fit, seed_everything


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
                        "like (train.prior APPEARANCE_INPUTS), published reads the dimension scores as published in "
                        "place of the model's signals version's, quality+published both, no-identity leaves out only "
                        "the face statistics that tell people apart (IDENTITY_INPUTS), all reads every signal")
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
