"""The model's share of the published score, chosen by leaving each training person out (not on val's two people).

`python -m train.share --bundle engines/bundles/default --root corpus/synthetic [--out DIR] [--threads 1]`

The share w in `score = (1 - w) * forest + w * model` was chosen on val, which holds two people: val and the
test split's two people disagreed on it (BENCHMARKS.md in git as of 5ed058a, "Why a forest, and how the share was chosen"). Here every
person of the train split is left out in turn: a model is trained without them by the bundle's own recipe (the
stage settings, seed, stream dropout in its manifest; val picks the epoch and calibrates, as in train.fit) and a
forest is fitted on the same windows with the bundle's forest inputs; the person's clips are then scored by both.
Over the pooled left-out clips, each candidate share gets its SRCC and PLCC and its new-people gap: the left-out
person's clean clips against the clean clips of the people the fold trained on (scored in-sample, as a served
bundle scores the people it was trained on). The rule, fixed before any fold ran: the share with the best pooled
SRCC + PLCC among those whose mean gap is within GAP_LIMIT points (issue 12's target), the smaller on a tie; when
none is, the one with the smallest gap. `--out` writes the bundle with that share (model, forest and graphs byte
for byte; the manifest records every candidate and fold). The test split is never read.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from engines.rater import prior_vector

SHARES = tuple(round(0.05 * i, 2) for i in range(21))  # 0, 0.05, ..., 1
GAP_LIMIT = 5.0  # points: new people's clean clips within this of trained people's (issue 12)
# Groups of the corpus that are one person (a split is made per group; a person left out leaves all of them)
PERSON_OF_GROUP = {"macron-2014": "macron", "macron-2025": "macron", "ardern-2018": "ardern", "ardern-2022": "ardern"}


def person_of(meta: dict) -> str:
    """The person on screen in a corpus clip (its source's group, with one person's photo groups joined)."""
    from train.face_sources import source_by_name

    group = meta.get("group") or source_by_name(meta["source"]).group
    return PERSON_OF_GROUP.get(group, group)


def people_in(meta: dict) -> set[str]:
    """Everyone on screen in a clip: its source's person and, in a clip with a hard cut, the second source's."""
    out = {person_of(meta)}
    if meta.get("cut_to"):
        out.add(person_of({"source": meta["cut_to"]}))
    return out


def is_clean(meta: dict) -> bool:
    return not meta.get("distortions") and not meta.get("cut_to")


def _stage_settings(manifest: dict, stage: str):
    from train.stages import StageSettings

    known = StageSettings.__dataclass_fields__
    return StageSettings(**{k: v for k, v in manifest["training"][stage]["settings"].items() if k in known})


def _components(rater, forest, data, names: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Per clip: the calibrated model score and the forest's MOS, each the mean over the clip's windows (the
    published clip score is then their blend: both lie within 0..100, so the blend's clip never acts)."""
    from train.stages import predict_clips

    _, _, windows = predict_clips(rater, data)
    model = rater.calibrate(windows)
    prior = forest.predict(prior_vector(data.arrays), names)[:, 0]
    n = len(data.clip_mos)
    counts = np.bincount(data.clip_of, minlength=n).clip(min=1)
    return np.bincount(data.clip_of, model, n) / counts, np.bincount(data.clip_of, prior, n) / counts


def leave_out(bundle_rater, manifest: dict, clips: dict[str, list], metas: dict[str, list[dict]], person: str,
              seed: int, log=print) -> dict[str, Any]:
    """Trains the bundle's recipe without `person`; their clips' and the trained people's clean clips' parts."""
    from train.clip_features import Dataset
    from train.fit import build_rater
    from train.forest import fit_forest
    from train.stages import fit

    names = bundle_rater.spec.signal_names()
    keep = [i for i, m in enumerate(metas["train"]) if person not in people_in(m)]  # cuts to them left out too
    held = [i for i, m in enumerate(metas["train"]) if person_of(m) == person]

    def dataset(split: str, idx: list[int]) -> Dataset:
        return Dataset.from_clips([clips[split][i] for i in idx], names)

    train, val, out = dataset("train", keep), dataset("val", list(range(len(clips["val"])))), dataset("train", held)
    rater = build_rater("tiny", bundle_rater.spec.signal_keys, seed, None, "cpu")
    if rater.spec.signal_names() != names:
        raise ValueError("the fold's model reads other signal inputs than the bundle's")
    rater.model.config.stream_dropout = bundle_rater.model.config.stream_dropout
    rater.model.config.feature_dropout = bundle_rater.model.config.feature_dropout
    t0 = time.time()
    fit(rater, train, val, _stage_settings(manifest, "stage1"), _stage_settings(manifest, "stage2"), seed,
        log=lambda msg: None)
    inputs = list(bundle_rater.prior.forest.inputs)
    prior_names = bundle_rater.spec.prior_names()
    cols = [prior_names.index(n) for n in inputs]
    forest = fit_forest(prior_vector(train.arrays)[:, cols], inputs, train.mos, train.dims, seed)
    model_out, forest_out = _components(rater, forest, out, prior_names)
    model_in, forest_in = _components(rater, forest, train, prior_names)
    clean_out = np.array([is_clean(metas["train"][i]) for i in held])
    clean_in = np.array([is_clean(metas["train"][i]) for i in keep])
    log(f"left out {person}: {len(held)} clips ({clean_out.sum()} clean), trained on {len(keep)}, "
        f"{time.time() - t0:.0f} s")
    return {"person": person, "clips": len(held), "mos": out.clip_mos.tolist(), "model": model_out.tolist(),
            "forest": forest_out.tolist(), "clean": clean_out.tolist(),
            "trained_clean": {"model": model_in[clean_in].tolist(), "forest": forest_in[clean_in].tolist()}}


def share_table(folds: list[dict]) -> dict[str, dict[str, float]]:
    """Every candidate share over the left-out clips: pooled SRCC / PLCC, the mean of each person's, and the new-
    people gap (each fold's left-out clean clips minus its trained people's clean clips, averaged over folds)."""
    from train.evaluate import evaluate_predictions

    mos = np.concatenate([f["mos"] for f in folds])
    table = {}
    for w in SHARES:
        blend = [(1 - w) * np.asarray(f["forest"]) + w * np.asarray(f["model"]) for f in folds]
        pooled = evaluate_predictions(np.concatenate(blend), mos)
        per = [evaluate_predictions(b, f["mos"]) for b, f in zip(blend, folds, strict=True)]
        gaps = []
        for b, f in zip(blend, folds, strict=True):
            clean = np.asarray(f["clean"], bool)
            trained = (1 - w) * np.asarray(f["trained_clean"]["forest"]) + w * np.asarray(f["trained_clean"]["model"])
            if clean.any() and len(trained):
                gaps.append(float(b[clean].mean() - trained.mean()))
        table[f"{w:g}"] = {"srcc": pooled["srcc"], "plcc": pooled["plcc"],
                           "srcc_per_person": float(np.mean([p["srcc"] for p in per])),
                           "plcc_per_person": float(np.mean([p["plcc"] for p in per])),
                           "gap": float(np.mean(gaps)) if gaps else float("nan"),
                           "gaps": dict(zip([f["person"] for f in folds if np.asarray(f["clean"]).any()], gaps,
                                            strict=True))}
    return table


def choose_share(table: dict[str, dict[str, float]], gap_limit: float = GAP_LIMIT) -> tuple[float, str]:
    """The rule (module docstring): best pooled SRCC + PLCC among shares whose |gap| <= gap_limit, smaller on a
    tie; else the smallest |gap|. Returns the share and the rule as applied."""
    within = [w for w in SHARES if abs(table[f"{w:g}"]["gap"]) <= gap_limit]
    if within:
        best = max(within, key=lambda w: (round(table[f"{w:g}"]["srcc"] + table[f"{w:g}"]["plcc"], 3), -w))
        return best, (f"best pooled leave-one-person-out SRCC + PLCC (to 3 decimals, the smaller share on a tie) among "
                      f"the shares whose new-people gap is within {gap_limit:g} points")
    best = min(SHARES, key=lambda w: (abs(table[f"{w:g}"]["gap"]), w))
    return best, f"no share keeps the new-people gap within {gap_limit:g} points: the one with the smallest gap"


def run(bundle: Path, root: Path, seed: int | None = None, cache: Path | None = None,
        people: Sequence[str] | None = None, log=print) -> dict[str, Any]:
    from engines.bundle import read_manifest, verify_bundle
    from engines.fvq_rater import FVQRater
    from train.clip_features import read_split
    from train.refit_forest import extract

    verify_bundle(bundle)
    manifest = read_manifest(bundle)
    rater = FVQRater.load(bundle, manifest=manifest)
    if rater.prior is None or rater.config.size != "tiny":
        raise SystemExit(f"{bundle}: train.share needs a tiny bundle with a signal forest (manifest 'prior')")
    seed = manifest["training"]["seed"] if seed is None else seed
    splits = ("train", "val")  # test is never read: the share is chosen without it
    clips = extract(rater, root, cache or root / ".cache" / "features", splits)
    metas = {}
    for split in splits:
        meta_of = {str(label.path): label.meta for label in read_split(root, split)}
        metas[split] = [meta_of[c.path] for c in clips[split]]
    if not metas["train"] or "source" not in metas["train"][0]:
        raise SystemExit(f"{root}/train has no meta.jsonl with sources: the corpus must come from train.corpus")
    persons = list(dict.fromkeys(person_of(m) for m in metas["train"]))
    if people:
        unknown = sorted(set(people) - set(persons))
        if unknown:
            raise SystemExit(f"not people of {root}/train: {', '.join(unknown)} (it has {', '.join(persons)})")
        persons = [p for p in persons if p in people]
    folds = [leave_out(rater, manifest, clips, metas, p, seed, log) for p in persons]
    table = share_table(folds)
    share, rule = choose_share(table)
    log("shares (pooled SRCC / PLCC, gap): " + ", ".join(
        f"{k}: {v['srcc']:.3f} / {v['plcc']:.3f}, {v['gap']:+.1f}" for k, v in table.items()) + f" -> {share:g}")
    return {"share": share, "rule": rule, "previous": manifest["prior"].get("model_weight"), "seed": seed,
            "people": persons, "gap_limit": GAP_LIMIT, "table": table, "folds": folds}


def metrics_at(bundle: Path, root: Path, share: float, cache: Path | None = None) -> dict[str, dict[str, float]]:
    """The bundle's clip SRCC / PLCC on every split with the model's share set to `share` (train.fit's metrics)."""
    from engines.bundle import read_manifest
    from engines.forest import ScorePrior
    from engines.fvq_rater import FVQRater
    from train.clip_features import Dataset
    from train.prior import evaluate_dataset
    from train.refit_forest import extract

    rater = FVQRater.load(bundle, manifest=read_manifest(bundle))
    rater.prior = ScorePrior(rater.prior.forest, share)
    clips = extract(rater, root, cache or root / ".cache" / "features")
    names = rater.spec.signal_names()
    return {s: evaluate_dataset(rater, Dataset.from_clips(c, names)) for s, c in clips.items() if c}


def write_bundle(bundle: Path, out: Path, result: dict[str, Any], command: str,
                 metrics: dict[str, dict[str, float]] | None = None) -> dict:
    """`bundle` with the chosen share in its manifest, to `out` (verified before it replaces an existing one)."""
    from engines.bundle import read_manifest, save_manifest, swap_in, verify_bundle

    staging = out.parent / (out.name + ".share-staging")
    if staging.exists():
        shutil.rmtree(staging)
    shutil.copytree(bundle, staging)
    manifest = read_manifest(staging)
    prior = manifest["prior"]
    prior["share_choice"] = {
        "command": command, "rule": result["rule"], "previous_model_weight": prior.get("model_weight"),
        "previous_rule": prior.get("model_weight_rule"), "people_left_out": result["people"], "seed": result["seed"],
        "table": {k: {m: v[m] for m in ("srcc", "plcc", "srcc_per_person", "plcc_per_person", "gap", "gaps")}
                  for k, v in result["table"].items()},
        "note": "every train person left out in turn (train.share): the fold's model by the bundle's recipe, the "
                "forest on the same windows; the test split was not read"}
    prior["model_weight"] = result["share"]
    prior["model_weight_rule"] = "train.share: " + result["rule"]
    if metrics is not None:
        prior["share_choice"]["previous_metrics"] = manifest.get("metrics")
        manifest["metrics"] = metrics
    if manifest.get("eval"):
        manifest["eval"] = {**manifest["eval"], "share": f"these rows were measured at the previous model share, "
                                                         f"{prior['share_choice']['previous_model_weight']}"}
    save_manifest(staging, manifest)
    verify_bundle(staging)
    swap_in(staging, out, ".share-old")  # the old folder goes aside only once the new one verified
    return read_manifest(out)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m train.share", description=__doc__.splitlines()[0])
    p.add_argument("--bundle", type=Path, required=True, help="a tiny bundle with a signal forest")
    p.add_argument("--root", type=Path, required=True, help="the corpus it was trained on (train.corpus's folder)")
    p.add_argument("--out", type=Path, help="write the bundle with the chosen share here (may be --bundle itself)")
    p.add_argument("--people", nargs="+", help="leave out only these train people (default: each in turn)")
    p.add_argument("--seed", type=int, help="training seed (default: the bundle's)")
    p.add_argument("--cache", type=Path, help="feature cache folder (default ROOT/.cache/features)")
    p.add_argument("--json", type=Path, help="also write every fold's clip scores here")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    args = p.parse_args(argv)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    log = lambda msg: print(msg, file=sys.stderr)  # noqa: E731
    result = run(args.bundle, args.root, args.seed, args.cache, args.people, log)
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    if args.out:
        command = f"python -m train.share --bundle {args.bundle} --root {args.root} --out {args.out}"
        write_bundle(args.bundle, args.out, result, command,
                     metrics_at(args.bundle, args.root, result["share"], args.cache))
    print(json.dumps({k: result[k] for k in ("share", "previous", "rule", "people")} |
                     {"table": {k: {m: round(v[m], 4) for m in ("srcc", "plcc", "gap")} for k, v in
                                result["table"].items()}}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
