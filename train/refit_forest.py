"""Refits only a bundle's signal forest (forest.npz and the manifest's prior entry): same model and graphs.

`python -m train.refit_forest --bundle engines/bundles/default --root corpus/synthetic --out DIR [--forest-inputs quality]`

The model, its merged ONNX graphs, the calibration and the tokenizer stay byte for byte; the features are the
ones train.fit extracts (train.clip_features) (the live path's analysis with the bundle's own frame encoder and signals version, cached
under ROOT/.cache/features), and the forest and the model's share are chosen as train.fit chooses them
(train.prior.fit_prior: the forest of the train windows, the share with the best val SRCC + PLCC, then the forest
refitted on train + val). The manifest says what was refitted, on what, and keeps the figures of the previous
forest beside the new ones; `--eval` adds the test split through the live path (`fvq eval`'s numbers). DIR may
be the bundle itself: the new folder is verified (engines.bundle) before it takes the old one's place.
"""

from __future__ import annotations

import argparse
import datetime
import json
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from tqdm import tqdm

from train.prior import FOREST_INPUT_SETS


def extract(rater, root: Path, cache: Path, splits: Sequence[str] | None = None) -> dict[str, list]:
    """The clip features of every split (or of `splits`) through train.fit's extractor (cached: a second run reads
    them back)."""
    from train.clip_features import FeatureExtractor, read_split
    from train.dataset import SPLITS

    extractor = FeatureExtractor(rater, cache)
    clips: dict[str, list] = {}
    for split in splits or SPLITS:
        clips[split] = []
        for clip in tqdm(read_split(root, split), desc=f"features {split}", file=sys.stderr, disable=None):
            cf = extractor(clip)
            if cf is not None:
                clips[split].append(cf)
    return clips


def refit(bundle: Path, root: Path, out: Path, forest_inputs: str = "quality", seed: int = 0,
          cache: Path | None = None, run_eval: bool = False, log=print,
          model_weight: float | None = None) -> dict[str, Any]:
    """Writes the bundle with a refitted forest to `out` (replacing it when it exists) and returns its manifest."""
    from engines.bundle import file_entry, read_manifest, save_manifest, swap_in, verify_bundle
    from engines.forest import FOREST_FILE
    from engines.fvq_rater import FVQRater
    from train.clip_features import Dataset
    from train.prior import evaluate_dataset, fit_prior

    bundle, out = Path(bundle), Path(out)
    verify_bundle(bundle)
    manifest = read_manifest(bundle)
    rater = FVQRater.load(bundle, manifest=manifest)
    old_prior, old_metrics = manifest.get("prior"), manifest.get("metrics")
    old_forest = (manifest.get("files") or {}).get(FOREST_FILE)
    clips = extract(rater, root, cache or root / ".cache" / "features")
    names = rater.spec.signal_names()
    data = {s: Dataset.from_clips(c, names) if c else None for s, c in clips.items()}
    args = SimpleNamespace(seed=seed, fold_val=False, model_weight=None, forest_inputs=forest_inputs,
                           no_forest_refit=False)
    entry, _ = fit_prior(rater, data, args, log)
    if model_weight is not None:
        # the share is kept as given (train.share chose it on people left out; val only records the candidates),
        # the forest still learns from train and val as when the share is chosen on val
        from engines.forest import ScorePrior

        entry["model_weight_rule"] = (f"given (--model-weight {model_weight:g}); val's choice would have been "
                                      f"{entry['model_weight']:g}")
        entry["model_weight"] = float(model_weight)
        rater.prior = ScorePrior(rater.prior.forest, float(model_weight))
    metrics = {s: evaluate_dataset(rater, d) for s, d in data.items() if d is not None}
    log("published score after the refit: " + ", ".join(f"{s} SRCC {m['srcc']:.3f} PLCC {m['plcc']:.3f}"
                                                        for s, m in metrics.items()))
    corpus = json.loads((root / "corpus.json").read_text()) if (root / "corpus.json").is_file() else {}
    entry["refit"] = {
        "what": "forest.npz and this prior entry only: the model, its graphs, calibration and tokenizer are the "
                "bundle's as they were",
        "command": f"python -m train.refit_forest --bundle {bundle} --root {root} --out {out} "
                   f"--forest-inputs {forest_inputs} --seed {seed}"
                   + (f" --model-weight {model_weight:g}" if model_weight is not None else ""),
        "date": datetime.date.today().isoformat(),
        "corpus": {"root": str(root), "command": f"python -m train.corpus --out {root} --seed {corpus.get('seed', 0)}"
                   + (f" --look-share {corpus['look_share']:g}" if corpus.get("look_share") else "")
                   + (f" --extra-train {corpus['extra_train']}" if corpus.get("extra_train") else "")
                   + (f" --look-twins {corpus['look_twins']}" if corpus.get("look_twins") else ""),
                   "clips": {s: len(c) for s, c in clips.items()}},
        "features": "train.clip_features.FeatureExtractor with the bundle's own frame encoder and signals version "
                    f"{rater.spec.signals_version}",
        "previous": {"forest_file": old_forest, "prior": {k: v for k, v in (old_prior or {}).items()
                                                          if k in ("inputs", "input_set", "model_weight", "trained_on",
                                                                   "val", "test_report")},
                     "metrics": old_metrics},
    }
    staging = out.parent / (out.name + ".refit-staging")
    if staging.exists():
        shutil.rmtree(staging)
    shutil.copytree(bundle, staging)
    forest = rater.prior.forest
    forest.save(staging / FOREST_FILE)
    manifest["prior"] = entry
    manifest["metrics"] = metrics
    manifest.pop("refit_eval", None)  # the previous forest's live-path figures; --eval measures this one's
    if manifest.get("eval"):
        manifest["eval"] = {**manifest["eval"], "forest": "the previous forest (refit.previous): these runtime rows "
                                                          "were measured before the refit"}
    # the bundle's own format version stays (engines.bundle.publish_staged would stamp an exported one's)
    manifest["files"] = {name: file_entry(staging / name) for name in sorted(manifest.get("files") or {})}
    save_manifest(staging, manifest)
    verify_bundle(staging)
    swap_in(staging, out, ".refit-old")  # the old folder goes aside only once the new one verified
    manifest = read_manifest(out)
    if run_eval:
        from engines.bundle import update_manifest
        from train.evaluate import evaluate_folder

        result = evaluate_folder(root, "test", out, baselines=False)
        live = {k: v for k, v in result["table"].items() if k not in ("brisque", "niqe")}
        manifest = update_manifest(out, refit_eval={
            "command": f"fvq eval {root} --split test --bundle {out}", "table": live, "pairs": result["pairs"],
            "pairs_unmatched": result["pairs_unmatched"],
            "note": "the test split through the live path with the refitted forest (the bundle's chosen runtime)"})
        log("test through the live path: " + json.dumps(live) + f"; pairs {result['pairs']}")
    assert file_entry(out / FOREST_FILE)["sha256"] == manifest["files"][FOREST_FILE]["sha256"]
    return manifest


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m train.refit_forest", description=__doc__.splitlines()[0])
    p.add_argument("--bundle", type=Path, required=True, help="the bundle whose forest is refitted")
    p.add_argument("--root", type=Path, required=True, help="FVQ-20K-format corpus (train, val, test)")
    p.add_argument("--out", type=Path, required=True, help="where the new bundle goes (may be --bundle itself)")
    p.add_argument("--forest-inputs", choices=FOREST_INPUT_SETS, default="quality",
                   help="quality: the model's signals but what the person and scene look like (train.prior "
                        "APPEARANCE_INPUTS); published: those with the dimension scores as published in place of "
                        "the model's signals version's; quality+published: both; no-identity: every signal but the "
                        "face statistics that tell people apart (IDENTITY_INPUTS); all: every signal")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cache", type=Path, help="feature cache folder (default ROOT/.cache/features)")
    p.add_argument("--eval", action="store_true", help="also score the test split through the live path")
    p.add_argument("--model-weight", type=float, help="keep the model's share at this value (default: chosen on val)")
    args = p.parse_args(argv)
    log = lambda msg: print(msg, file=sys.stderr)  # noqa: E731
    if args.model_weight is not None and not 0.0 <= args.model_weight <= 1.0:
        p.error("--model-weight must be within 0..1")
    manifest = refit(args.bundle, args.root, args.out, args.forest_inputs, args.seed, args.cache, args.eval, log,
                     model_weight=args.model_weight)
    print(json.dumps({"out": str(args.out), "prior": {k: manifest["prior"][k] for k in
                                                       ("inputs", "input_set", "model_weight", "val", "test_report")},
                      "metrics": manifest["metrics"], "refit_eval": manifest.get("refit_eval")}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
