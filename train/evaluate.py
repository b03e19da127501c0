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
