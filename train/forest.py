"""Training the signal forest (engines/forest.py) with scikit-learn's ExtraTreesRegressor, and converting it to
the numpy arrays the bundle ships.

Settings (200 trees, at least 2 windows per leaf, every input considered at each split, one forest for the
MOS and the six dimension labels together) were chosen on the synthetic corpus's val split; BENCHMARKS.md has
the table. Dimension labels a corpus lacks (FVQ-20K rates only the MOS) are trained as 100, the forest's
dimension outputs are then meaningless and the bundle does not publish them.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from engines.forest import OUTPUTS, SignalForest, signal_transform

TREES = 200
MIN_SAMPLES_LEAF = 2


def _float32_at_most(t: np.ndarray) -> np.ndarray:
    """The largest float32 <= each float64 threshold: for float32 inputs x, x <= t32 exactly when x <= t."""
    t32 = t.astype(np.float32)
    over = t32.astype(np.float64) > t
    t32[over] = np.nextafter(t32[over], np.float32(-np.inf))
    return t32


def from_sklearn(model, inputs: Sequence[str]) -> SignalForest:
    """Flattens a fitted sklearn tree ensemble (regressor, 1..7 outputs) into a SignalForest."""
    feats, thr, left, right, vals, roots, depth = [], [], [], [], [], [], 0
    offset = 0
    for est in model.estimators_:
        t = est.tree_
        n = t.node_count
        leaf = t.children_left < 0
        idx = np.arange(n)
        feats.append(np.where(leaf, 0, t.feature))
        thr.append(_float32_at_most(np.where(leaf, 0.0, t.threshold)))
        left.append(np.where(leaf, idx, t.children_left) + offset)
        right.append(np.where(leaf, idx, t.children_right) + offset)
        v = t.value[:, :, 0]  # (n, outputs)
        vals.append(v)
        roots.append(offset)
        depth = max(depth, int(t.max_depth))
        offset += n
    value = np.concatenate(vals).astype(np.float32)
    outputs = OUTPUTS[: value.shape[1]]
    return SignalForest(inputs=tuple(inputs), outputs=outputs, feature=np.concatenate(feats).astype(np.int64),
                        threshold=np.concatenate(thr), left=np.concatenate(left).astype(np.int64),
                        right=np.concatenate(right).astype(np.int64), value=value,
                        roots=np.array(roots, np.int64), depth=depth)


def fit_forest(signals: np.ndarray, names: Sequence[str], mos: np.ndarray, dims: np.ndarray | None, seed: int,
               trees: int = TREES, min_samples_leaf: int = MIN_SAMPLES_LEAF) -> SignalForest:
    """Fits the forest on training windows: signals (N, len(names)) raw, mos (N,), dims (N, 6) or None."""
    try:
        from sklearn.ensemble import ExtraTreesRegressor
    except ImportError as exc:  # the live path never needs it; training does
        raise SystemExit("training the signal forest needs scikit-learn: pip install -e '.[train]'") from exc

    x = signal_transform(signals)
    labels = np.full((len(mos), len(OUTPUTS)), 100.0, np.float64)
    labels[:, 0] = mos
    if dims is not None:
        labels[:, 1:] = np.nan_to_num(dims, nan=100.0)
    model = ExtraTreesRegressor(n_estimators=trees, min_samples_leaf=min_samples_leaf, max_features=1.0,
                                random_state=seed, n_jobs=1)
    model.fit(x, labels)
    return from_sklearn(model, names)


__all__ = ["MIN_SAMPLES_LEAF", "TREES", "fit_forest", "from_sklearn"]
