"""A training corpus's clips as the live path sees them: labels read from a split, windows' features extracted once
per clip (cached) and stacked into datasets.

Clips become windows exactly as on the live path (stream.live.offline.analyse_file with the default monitor
config: decode, sampling, faces, embeddings, signals); every window of a clip is labelled with the clip's
MOS, and a clip's prediction is the mean of its windows' scores (what `fvq score` reports).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from engines.base import file_sha256
from engines.rater import PRIOR_WINDOW_KEYS, WindowFeatures, assemble_window_features, signal_keys_of

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
    """The clips of ROOT/split (labels.txt "<file> <MOS>", videos/), read and checked by train.dataset (a MOS
    outside 0-100, a missing video or a malformed line fails with the file and line)."""
    from train.dataset import load_split

    return [ClipLabel(Path(c.path), float(c.mos), dict(c.meta or {})) for c in load_split(root, split)]


@dataclass
class ClipFeatures:
    """A clip's windows: arrays with a leading window axis, plus the names of its signal values ("signals" holds
    every signal value measured, the model's and PRIOR_WINDOW_KEYS: Dataset.from_clips picks what it needs)."""

    path: str
    mos: float
    arrays: dict[str, np.ndarray]
    signal_names: list[str]
    dims: np.ndarray | None = None  # (6,) dimension labels 0..100 from the corpus meta (NaN: unknown)

    @property
    def windows(self) -> int:
        return len(self.arrays["signals"])


def measurement_code_digest() -> str:
    """A digest of the code that measures a clip (the signals, their curves and the face extractor): a cached clip is measured
    again after any change to it, not only after a SIGNALS_VERSION bump (a constant tuned within version 3)."""
    import engines.face
    import engines.families
    import engines.signals

    digest = hashlib.sha256()
    # engines/families.py holds the curves every signals version's dimension scores are read through
    for path in (sorted(Path(engines.signals.__file__).parent.glob("*.py"))
                 + [Path(engines.face.__file__), Path(engines.families.__file__)]):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter (malloc.h)
MMAP_THRESHOLD = 128 * 1024  # glibc's starting value, pinned


def pin_mmap_threshold(size: int = MMAP_THRESHOLD) -> bool:
    """Pins glibc's mmap threshold. glibc raises it each time a large block is freed, so later large blocks (decoded
    pictures of every size the corpus has) come from the heap, which then fragments: measuring train clips 875-2,150
    of the looks corpus in one process grew it 644 -> 1,399 MiB, the whole corpus to 19.5 GB (killed); pinned at
    128 KiB, 596 -> 690 MiB (the features kept). True when set (Linux with glibc), False elsewhere."""
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    if not name:
        return False
    try:
        libc = ctypes.CDLL(name)
        return bool(libc.mallopt(M_MMAP_THRESHOLD, size)) if hasattr(libc, "mallopt") else False
    except OSError:
        return False


class FeatureExtractor:
    """Runs the live path's analysis on a file and the rater's frame encoder; caches one .npz per clip."""

    def __init__(self, rater, cache_dir: Path, monitor_config=None) -> None:
        from stream.config import MonitorConfig
        from stream.live.analysis import build_analyzer

        pin_mmap_threshold()  # one process measures thousands of clips (train.refit_forest, train.fit)
        self.rater = rater
        self.cfg = monitor_config or MonitorConfig(no_model=True)
        self.analyzer = build_analyzer(self.cfg)  # faces, embeddings, signals; no rater
        self.cache_dir = Path(cache_dir)
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        from engines.rater import WINDOW_STAT_KEYS
        from engines.signals import CAST_ESTIMATE, CHROMA_ESTIMATE, SIGNALS_VERSION

        settings = {"rater": rater.extractor_version, "window_stats": list(WINDOW_STAT_KEYS),
                    "prior_stats": list(PRIOR_WINDOW_KEYS), "signals": SIGNALS_VERSION,
                    "cast": CAST_ESTIMATE, "chroma": CHROMA_ESTIMATE,
                    "window": self.cfg.window.model_dump(mode="json"),
                    "analysis": self.cfg.analysis.model_dump(mode="json"), "face": self.cfg.face.model_dump(mode="json"),
                    "face_extractor": self.analyzer.face.config.model_dump(mode="json") if self.analyzer.face else None,
                    "code": measurement_code_digest()}
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
            arrays["signals"] = np.concatenate([arrays["signals"], np.stack([f.prior_signals for f in feats])], 1)
            names = wide.prior_names()
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


def select_signals(clip: ClipFeatures, names: list[str], missing: float = 0.0) -> np.ndarray:
    """The clip's signals re-ordered to `names` (a value the clip lacks is `missing`)."""
    index = {n: i for i, n in enumerate(clip.signal_names)}
    src = clip.arrays["signals"]
    out = np.full((len(src), len(names)), missing, dtype=np.float32)
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
        """The clips' windows with `signals` laid out by `signal_names` and prior_signals by PRIOR_WINDOW_KEYS."""
        arrays: dict[str, list[np.ndarray]] = {k: [] for k in WindowFeatures.STORED}
        mos, clip_of, dims = [], [], []
        for i, c in enumerate(clips):
            for k in WindowFeatures.ARRAYS:
                arrays[k].append(select_signals(c, signal_names) if k == "signals" else c.arrays[k])
            arrays["prior_signals"].append(select_signals(c, list(PRIOR_WINDOW_KEYS), missing=-1.0))
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
