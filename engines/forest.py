"""The signal forest: a randomized tree ensemble over a window's signal vector, the quality prior of the rater.

Why it exists: on the synthetic corpus, every smooth learned function of the signals (the rater's projector
and LM, a plain MLP, ridge) ranks the windows of people it never saw much worse than the people it trained on
(test SRCC 0.66-0.77 against 0.87-0.89 on val), while an extremely randomized tree ensemble over the same
vector ranks both at ~0.89: trees do not extrapolate and spread their trust over many measurements, so a shift
in one measurement that depends on who is on screen (skin texture in the noise estimate, hair in the edge
width) moves the score less. The rater publishes a blend of the two, `score = (1 - w) * prior + w * model`,
with the model's share w chosen on the val split when the bundle is trained (train.fit; the manifest keeps
the val table of every candidate w).

The forest is trained with scikit-learn (train/forest.py) and stored as plain arrays (forest.npz, no pickle);
this module evaluates it with numpy only, so the live path needs no scikit-learn. Outputs: the overall MOS
and the six dimension labels (engines.features.DIMENSIONS), 0..100.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from engines.bundle import prior_entry
from engines.features import DIMENSIONS

FOREST_FILE = "forest.npz"
FOREST_VERSION = 1
OUTPUTS = ("mos", *DIMENSIONS)


def signal_transform(x: np.ndarray) -> np.ndarray:
    """sign(x) * log1p(|x|) in float32: the scale the forest splits on (the rater's projector uses it too)."""
    x = np.asarray(x, dtype=np.float64)
    return (np.sign(x) * np.log1p(np.abs(x))).astype(np.float32)


@dataclass
class SignalForest:
    """Trees flattened into node arrays. A leaf points to itself (left == right == its own index), so a fixed
    number of steps walks every tree to its leaf; `roots` are the trees' first nodes."""

    inputs: tuple[str, ...]  # signal names (engines.rater.FeatureSpec.signal_names) the features come from
    feature: np.ndarray  # (nodes,) int32: input column a split reads (0 at leaves)
    threshold: np.ndarray  # (nodes,) float32: go left when x <= threshold
    left: np.ndarray  # (nodes,) int32
    right: np.ndarray  # (nodes,) int32
    value: np.ndarray  # (nodes, outputs) float16 as stored (float32 when fitted): leaf predictions (unused at splits)
    roots: np.ndarray  # (trees,) int32
    depth: int  # longest root-to-leaf path
    outputs: tuple[str, ...] = OUTPUTS

    def __post_init__(self) -> None:
        n = len(self.feature)
        for name in ("threshold", "left", "right", "value"):
            if len(getattr(self, name)) != n:
                raise ValueError(f"signal forest: {name} has {len(getattr(self, name))} nodes, feature has {n}")
        if n and (self.left.min() < 0 or self.left.max() >= n or self.right.min() < 0 or self.right.max() >= n):
            raise ValueError("signal forest: a child index points outside the node arrays")
        if n and self.feature.max() >= len(self.inputs):
            raise ValueError(f"signal forest: a split reads input {int(self.feature.max())}, it has {len(self.inputs)}")
        if self.value.shape[1] != len(self.outputs):
            raise ValueError(f"signal forest: {self.value.shape[1]} outputs, names for {len(self.outputs)}")

    @property
    def trees(self) -> int:
        return len(self.roots)

    @property
    def nodes(self) -> int:
        return len(self.feature)

    def predict_features(self, x: np.ndarray) -> np.ndarray:
        """(N, len(inputs)) transformed features -> (N, outputs): the mean of the trees' leaves."""
        x = np.ascontiguousarray(x, dtype=np.float32)
        if x.ndim != 2 or x.shape[1] != len(self.inputs):
            raise ValueError(f"signal forest: expected (N, {len(self.inputs)}) features, got {x.shape}")
        if len(x) == 0:
            return np.zeros((0, len(self.outputs)), np.float32)
        rows = np.arange(len(x))[:, None]
        node = np.broadcast_to(self.roots, (len(x), self.trees)).copy()
        for _ in range(self.depth):
            nxt = np.where(x[rows, self.feature[node]] <= self.threshold[node], self.left[node], self.right[node])
            if np.array_equal(nxt, node):
                break
            node = nxt
        return self.value[node].astype(np.float64).mean(1).astype(np.float32)

    def predict(self, signals: np.ndarray, names: list[str] | tuple[str, ...]) -> np.ndarray:
        """(N, len(names)) raw signal vectors (a window's `signals`, laid out by `names`) -> (N, outputs)."""
        return self.predict_features(signal_transform(np.asarray(signals)[:, self.columns(names)]))

    def columns(self, names: list[str] | tuple[str, ...]) -> np.ndarray:
        """Where each forest input sits in a signal vector laid out by `names`; a missing one is an error."""
        index = {n: i for i, n in enumerate(names)}
        missing = [n for n in self.inputs if n not in index]
        if missing:
            raise ValueError(f"signal forest reads {len(missing)} signals the rater's vector lacks: "
                             f"{', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''} (bundle and code disagree)")
        return np.array([index[n] for n in self.inputs], np.int64)

    # -- file ----------------------------------------------------------------------------------------

    def save(self, path: Path) -> Path:
        """Writes the arrays (compressed .npz, no pickled objects)."""
        path = Path(path)
        with open(path, "wb") as f:
            np.savez_compressed(
                f, version=np.array(FOREST_VERSION), inputs=np.array(self.inputs), outputs=np.array(self.outputs),
                feature=self.feature.astype(np.int32), threshold=self.threshold.astype(np.float32),
                left=self.left.astype(np.int32), right=self.right.astype(np.int32),
                value=self.value.astype(np.float16), roots=self.roots.astype(np.int32), depth=np.array(self.depth))
        return path

    @classmethod
    def load(cls, path: Path) -> SignalForest:
        path = Path(path)
        try:
            z = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise ValueError(f"{path} is not a signal forest file ({exc})") from exc
        with z:
            version = int(z["version"]) if "version" in z else None
            if version != FOREST_VERSION:
                raise ValueError(f"{path}: signal forest version {version!r}, this fvq-live reads {FOREST_VERSION}")
            return cls(inputs=tuple(str(s) for s in z["inputs"]), outputs=tuple(str(s) for s in z["outputs"]),
                       # node indices widened to int64 (numpy indexes with them a third faster than with int32),
                       # leaves kept float16 as stored: a 400-tree forest of 570,000 nodes takes 23 MiB, not 30
                       feature=z["feature"].astype(np.int64), threshold=z["threshold"].astype(np.float32),
                       left=z["left"].astype(np.int64), right=z["right"].astype(np.int64),
                       value=z["value"].astype(np.float16), roots=z["roots"].astype(np.int64), depth=int(z["depth"]))


@dataclass
class ScorePrior:
    """The forest and the model's share of the published score (manifest "prior")."""

    forest: SignalForest
    model_weight: float  # w in score = (1 - w) * forest MOS + w * calibrated model score

    def __post_init__(self) -> None:
        if not 0.0 <= self.model_weight <= 1.0:
            raise ValueError(f"prior model_weight must be within 0..1, got {self.model_weight}")

    def blend(self, model_scores: np.ndarray, signals: np.ndarray, names: list[str] | tuple[str, ...]) -> np.ndarray:
        """Published scores: (1 - w) * the forest's MOS + w * the calibrated model scores, within 0..100."""
        return self.blend_outputs(model_scores, None, signals, names)[0]

    def blend_outputs(self, model_scores: np.ndarray, model_dims: np.ndarray | None, signals: np.ndarray,
                      names: list[str] | tuple[str, ...]) -> tuple[np.ndarray, np.ndarray | None]:
        """Scores and (N, 6) learned dimension scores, each the same blend of forest and model outputs."""
        prior = self.forest.predict(signals, names).astype(np.float64)
        w = self.model_weight
        scores = np.clip((1.0 - w) * prior[:, 0] + w * np.asarray(model_scores, np.float64), 0.0, 100.0)
        if model_dims is None or prior.shape[1] < 1 + len(DIMENSIONS):
            return scores, model_dims
        dims = np.clip((1.0 - w) * prior[:, 1:] + w * np.asarray(model_dims, np.float64), 0.0, 100.0)
        return scores, dims

    @classmethod
    def from_manifest(cls, bundle_dir: Path, manifest: dict | None) -> ScorePrior | None:
        """The bundle's prior when its manifest has one (bundles trained before it existed have none)."""
        entry = prior_entry(manifest)
        if not entry:
            return None
        path = Path(bundle_dir) / entry.get("file", FOREST_FILE)
        if not path.is_file():
            raise FileNotFoundError(f"bundle {bundle_dir}: the manifest's prior names {path.name}, which is missing")
        return cls(SignalForest.load(path), float(entry["model_weight"]))


__all__ = ["FOREST_FILE", "OUTPUTS", "ScorePrior", "SignalForest", "signal_transform"]
