"""The rater interface the live path calls: frames -> cached features, a window -> WindowFeatures, a batch -> Ratings.

Everything that crosses this interface is numpy, batch in and batch out, so the rater can sit behind a
remote call (a rater service with dynamic batching) without changing the ingest side.
"""

from __future__ import annotations

import abc
import math
from dataclasses import dataclass, field

import cv2
import numpy as np

from engines.features import DIMENSIONS, LEVELS, Face, FrameRecord, Window, level_of
from engines.signals import LEGACY_REPEAT_MAD, SIGNALS_VERSION, measure_window, thumb_changes

EMBEDDING_DIM = 128  # SFace
INTERVAL_FEATURES = ("dt_ratio", "log_dt", "mad", "repeat")  # per consecutive frame pair, see interval_features()

# Window-level temporal and face statistics at the head of the signals vector, always present, in this order.
WINDOW_STAT_KEYS = (
    "window.fps_ratio",  # frames per second / nominal (or median-interval) rate
    "window.dt_cv",  # coefficient of variation of frame intervals
    "window.max_gap",  # longest interval / median interval
    "window.repeat_share",  # share of consecutive pairs that repeat the picture
    "window.mad_mean",  # mean |luma difference| of consecutive thumbs (0..1)
    "window.mad_std",
    "window.luma_mean",  # mean thumb luma (0..1)
    "window.luma_flicker",  # mean |second difference| of per-frame mean luma (0..1)
    "window.face_presence",  # share of sampled frames with a face
    "window.face_size",  # mean face area / frame area over frames with a face
    "window.face_jitter",  # std of the face centre's movement between sampled frames, in face widths
    "window.identity_stability",  # mean cosine similarity of consecutive embeddings (0 when unknown)
)
# The window's signal dimension scores (engines.signals.window_dimensions, 0..100; -1 where a region or a
# dimension could not be measured), after the stats above: calibrated, monotone summaries the signal forest
# ranks combined distortions better with (val SRCC 0.85 -> 0.87 on the synthetic corpus). Bundles record the
# window keys they were trained with (FeatureSpec.window_keys); ones that predate these have the list above.
LEGACY_WINDOW_STAT_KEYS = WINDOW_STAT_KEYS
WINDOW_DIMENSION_KEYS = tuple(f"window.{region}_{dim}" for region in ("frame", "face") for dim in DIMENSIONS)
WINDOW_STAT_KEYS = LEGACY_WINDOW_STAT_KEYS + WINDOW_DIMENSION_KEYS
# Per-frame signal measurements (record.signals[region][name]) come after, 3 values per key from the bundle's
# `signal_keys` ("region.name"): mean and std over the sampled frames where the value is present and finite,
# and the share of sampled frames where it is. A key absent from every frame gives (0, 0, 0).
SIGNAL_STATS = ("mean", "std", "presence")
# The window's dimension scores as published (this signals version), which the signal forest may read beside the
# model's vector (engines/forest.py): a bundle's model reads the version it was trained with (the default bundle's
# is 1, whose colour measurement took a light for damage), and retraining the model is not needed for its forest
# to read what the operator is shown. Carried in WindowFeatures.prior_signals, never given to the model.
def published_key(region: str, dim: str) -> str:
    """The name of a window's published dimension score in the forest's vector (one of PRIOR_WINDOW_KEYS)."""
    return f"window.v{SIGNALS_VERSION}.{region}_{dim}"


PRIOR_WINDOW_KEYS = tuple(published_key(region, dim) for region in ("frame", "face") for dim in DIMENSIONS)


@dataclass(frozen=True)
class FeatureSpec:
    """Shapes of a window's features; fixed by the bundle so training and the live path agree."""

    frames: int = 8  # K: sampled frames per window (resampled uniformly, repeated when fewer)
    temporal_len: int = 16  # T: luma thumbs per window (uniform over all frames)
    thumb_size: tuple[int, int] = (36, 64)  # (h, w) thumbs are resized to
    interval_len: int = 32  # frame-pair interval features, resampled to this length
    signal_keys: tuple[str, ...] = ()  # "region.name" keys of record.signals, in order
    spatial_shape: tuple[int, ...] = (1584,)  # one frame's spatial features: (Ds,) or (H, W, 3) uint8 pixels
    portrait_shape: tuple[int, ...] = (1584,)
    window_keys: tuple[str, ...] = WINDOW_STAT_KEYS  # the window statistics at the head of the signals vector
    # the version of engines.signals' measurements the window's dimension scores were computed with in training
    # (bundles from before it was recorded read version 1); the live path gives the rater that version
    signals_version: int = SIGNALS_VERSION

    def __post_init__(self) -> None:
        unknown = [k for k in self.window_keys if k not in WINDOW_STAT_KEYS]
        if unknown:
            raise ValueError(f"feature spec: unknown window statistics {', '.join(unknown)} (a newer fvq-live's "
                             f"bundle?); this one computes {', '.join(WINDOW_STAT_KEYS)}")

    @property
    def signals_dim(self) -> int:
        return len(self.window_keys) + len(SIGNAL_STATS) * len(self.signal_keys)

    def signal_names(self) -> list[str]:
        """The model's signal vector (WindowFeatures.signals), in order."""
        return list(self.window_keys) + [f"{k}.{s}" for k in self.signal_keys for s in SIGNAL_STATS]

    def prior_names(self) -> list[str]:
        """The vector the signal forest may read (prior_vector): the model's signals, then PRIOR_WINDOW_KEYS."""
        return self.signal_names() + list(PRIOR_WINDOW_KEYS)

    def to_dict(self) -> dict:
        return {
            "frames": self.frames,
            "temporal_len": self.temporal_len,
            "thumb_size": list(self.thumb_size),
            "interval_len": self.interval_len,
            "signal_keys": list(self.signal_keys),
            "spatial_shape": list(self.spatial_shape),
            "portrait_shape": list(self.portrait_shape),
            "window_keys": list(self.window_keys),
            "signals_version": self.signals_version,
        }

    @classmethod
    def from_dict(cls, d: dict) -> FeatureSpec:
        return cls(
            frames=int(d["frames"]),
            temporal_len=int(d["temporal_len"]),
            thumb_size=(int(d["thumb_size"][0]), int(d["thumb_size"][1])),
            interval_len=int(d["interval_len"]),
            signal_keys=tuple(d["signal_keys"]),
            spatial_shape=tuple(int(v) for v in d["spatial_shape"]),
            portrait_shape=tuple(int(v) for v in d["portrait_shape"]),
            window_keys=tuple(d.get("window_keys", LEGACY_WINDOW_STAT_KEYS)),  # bundles from before the list
            signals_version=int(d.get("signals_version", 1)),  # bundles from before the record
        )

    def zeros(self, shape: tuple[int, ...]) -> np.ndarray:
        """K frames of an absent input: zero features, or black pixels."""
        return np.zeros((self.frames, *shape), dtype=np.uint8 if len(shape) == 3 else np.float32)


@dataclass
class WindowFeatures:
    """One window's model inputs, numpy only.

    spatial/portrait: (K, Ds) float32 pooled features of a frozen encoder (tiny), or (K, H, W, 3) uint8
    frames and crops when the vision tower runs inside the rater (full).
    """

    stream: str
    start: float
    end: float
    spatial: np.ndarray
    portrait: np.ndarray
    face: np.ndarray  # (K, 128) float32 SFace embeddings, zeros where no face
    face_mask: np.ndarray  # (K,) float32, 1 where a face embedding exists
    thumbs: np.ndarray  # (T, h, w) uint8 luma
    intervals: np.ndarray  # (Ti, len(INTERVAL_FEATURES)) float32
    signals: np.ndarray  # (FeatureSpec.signals_dim,) float32, see WINDOW_STAT_KEYS and SIGNAL_STATS
    # (len(PRIOR_WINDOW_KEYS),) float32: the published dimension scores, for the signal forest only
    prior_signals: np.ndarray = field(default_factory=lambda: np.full(len(PRIOR_WINDOW_KEYS), -1.0, np.float32))

    ARRAYS = ("spatial", "portrait", "face", "face_mask", "thumbs", "intervals", "signals")  # the model's inputs
    STORED = (*ARRAYS, "prior_signals")  # what stack_features stacks and training keeps


def prior_vector(arrays: dict[str, np.ndarray]) -> np.ndarray:
    """Stacked features' (stack_features) vector laid out by FeatureSpec.prior_names(): what the forest reads."""
    return np.concatenate([arrays["signals"], arrays["prior_signals"]], axis=-1)


@dataclass
class Rating:
    score: float  # 0..100, calibrated
    level: str  # one of LEVELS, the level band the score falls in
    level_probs: np.ndarray  # (5,) the Stage I head's distribution over LEVELS
    dimensions: dict[str, float] | None = field(default=None)  # DIMENSIONS -> 0..100 when the bundle rates them


def level_index(mos: float) -> int:
    return LEVELS.index(level_of(mos))


class Rater(abc.ABC):
    """Turns windows into ratings: one rating implementation, each runtime supplies only its forward (`predict`).

    Implementations: engines.fvq_rater.FVQRater (torch, tiny and full), engines.onnx_rater.OnnxRater (ONNX
    Runtime or TensorRT over an exported bundle), engines.cuda_rater.AcceleratedRater (torch on CUDA); a bundle
    names which (engines.load.load_rater).

    `rate` returns one Rating per window: the published score (calibrated, blended with the bundle's signal-forest
    prior when it has one), its level band, the Stage I level distribution, and, when the bundle trained the
    dimension head (`rates_dimensions`), the six learned dimension scores. `dimension_heads` names the dimensions
    whose learned head the bundle found to rank better than the signal measurement (manifest "dimensions");
    the live path publishes signal measurements and carries the learned scores as details (stream/live/analysis.py).
    """

    spec: FeatureSpec
    prior = None  # engines.forest.ScorePrior when the bundle has one: the published score blends it in
    rates_dimensions: bool = False  # the bundle trained the dimension head: ratings carry `dimensions`
    dimension_heads: tuple[str, ...] = ()  # dimensions whose learned head ranks better (the bundle's manifest)

    def calibrate(self, raw: np.ndarray) -> np.ndarray:
        """Raw model scores -> 0..100 (the bundle's calibration)."""
        raise NotImplementedError

    def publish(self, out: dict[str, np.ndarray], signals: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The scores and learned dimension scores a batch's ratings publish: the calibrated model outputs, blended
        with the bundle's signal-forest prior when it has one (engines/forest.py), which reads `signals`, the
        batch's prior_vector."""
        scores = np.asarray(self.calibrate(out["score"]), np.float64)
        dims = np.clip(np.asarray(out["dimensions"], np.float64), 0.0, 100.0)
        if self.prior is not None:
            scores, dims = self.prior.blend_outputs(scores, dims, signals, self.spec.prior_names())
        return scores, dims

    @property
    def model_counts(self) -> bool:
        """Whether the model's outputs reach what is published: not when the bundle's forest carries the whole
        score (model share 0, as train.share may choose), whose blend multiplies every model output by 0. The live
        path then runs neither the frame encoder nor the forward pass (`rate` gives the same ratings without them)."""
        return self.prior is None or self.prior.model_weight > 0

    @abc.abstractmethod
    def frame_features(self, records: list[FrameRecord]) -> None:
        """Fills record.extra["spatial"] and ["portrait"] for sampled records that lack them, batched across
        all records given (they may come from many streams); windows that overlap reuse the results."""

    def window_features(self, window: Window) -> WindowFeatures:
        """Assembles a window's inputs from its frames (frame_features must have run on its sampled frames)."""
        return assemble_window_features(window, self.spec)

    @abc.abstractmethod
    def predict(self, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The forward pass on stacked feature arrays (stack_features): raw "score" (B,) before calibration,
        "level_logits" (B, 5) over LEVELS and "dimensions" (B, 6) over DIMENSIONS."""

    def rate(self, features: list[WindowFeatures]) -> list[Rating]:
        """Rates a batch of windows in one forward pass (no text generation)."""
        if not features:
            return []
        arrays = stack_features(features)
        out = self.predict(arrays) if self.model_counts else idle_outputs(len(features))
        return ratings_from_outputs(self, out, prior_vector(arrays), self.rates_dimensions)


def idle_outputs(n: int) -> dict[str, np.ndarray]:
    """What stands for the forward pass when the model's share is 0: outputs the blend multiplies by 0 (the
    published scores and dimensions are the forest's, to the bit); uniform level logits."""
    return {"score": np.zeros(n, np.float32), "level_logits": np.zeros((n, len(LEVELS)), np.float32),
            "dimensions": np.zeros((n, len(DIMENSIONS)), np.float32)}


def ratings_from_outputs(rater: Rater, out: dict[str, np.ndarray], signals: np.ndarray,
                         rates_dimensions: bool = False) -> list[Rating]:
    """Ratings from a forward pass's outputs: scores and dimensions as rater.publish makes them, the Stage I
    head's level distribution; the level is the band the published score falls in."""
    scores, dims = rater.publish(out, signals)
    logits = np.asarray(out["level_logits"], np.float64)
    probs = np.exp(logits - logits.max(1, keepdims=True))
    probs /= probs.sum(1, keepdims=True)
    return [Rating(score=float(s), level=level_of(float(s)), level_probs=probs[i].astype(np.float32),
                   dimensions=dict(zip(DIMENSIONS, map(float, dims[i]), strict=True)) if rates_dimensions else None)
            for i, s in enumerate(scores)]


# ---------------------------------------------------------------------------------------------
# Window assembly (shared by the live path and training)
# ---------------------------------------------------------------------------------------------


def portrait_box(face: Face | None, width: int, height: int) -> tuple[int, int, int, int]:
    """A square head-and-shoulders crop (x0, y0, x1, y1) around a face, kept inside the frame.

    The side is 2.6 face heights and the centre sits 0.35 face heights below the face's centre, so the
    crop reaches the shoulders. No face: the centred square of the frame's shorter side.
    """
    if face is None:
        side = min(width, height)
        cx, cy = width / 2, height / 2
    else:
        x, y, w, h = face.box
        side = min(min(width, height), max(16.0, 2.6 * max(w, h)))
        cx, cy = x + w / 2, y + h / 2 + 0.35 * h
    side = int(round(side))
    x0 = int(round(min(max(cx - side / 2, 0), width - side)))
    y0 = int(round(min(max(cy - side / 2, 0), height - side)))
    return x0, y0, x0 + side, y0 + side


def portrait_crop(record: FrameRecord) -> np.ndarray:
    image = record.image
    assert image is not None
    h, w = image.shape[:2]
    x0, y0, x1, y1 = portrait_box(record.main_face, w, h)
    return image[y0:y1, x0:x1]


def resize_frame(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(h, w) resize for the frame encoder, the same for every runtime: area averaging when shrinking,
    bilinear when enlarging."""
    h, w = size
    if image.shape[:2] == (h, w):
        return image
    interp = cv2.INTER_AREA if image.shape[0] > h else cv2.INTER_LINEAR
    return cv2.resize(image, (w, h), interpolation=interp)


def uniform_indices(n: int, k: int) -> np.ndarray:
    """k indices spread evenly over range(n) (repeating when n < k); n must be > 0."""
    return np.minimum((np.arange(k) + 0.5) * n / k, n - 1).astype(np.int64)


def _resample_rows(x: np.ndarray, length: int) -> np.ndarray:
    if len(x) == 0:
        return np.zeros((length, *x.shape[1:]), dtype=np.float32)
    return x[uniform_indices(len(x), length)].astype(np.float32)


def interval_features(pts: np.ndarray, thumbs: list[np.ndarray], nominal_fps: float | None,
                      changes: np.ndarray | None = None) -> np.ndarray:
    """(N-1, 4) per consecutive pair: dt / expected interval, log(dt / expected), mean |luma diff| / 255, repeat flag.

    `changes`: each pair's mean |luma diff| when the caller has them (engines.signals.thumb_changes)."""
    if len(pts) < 2:
        return np.zeros((0, len(INTERVAL_FEATURES)), dtype=np.float32)
    dt = np.diff(pts).astype(np.float64)
    positive = dt[dt > 0]
    expected = 1.0 / nominal_fps if nominal_fps else (float(np.median(positive)) if len(positive) else 1 / 30)
    ratio = np.clip(dt / expected, 0.0, 20.0)
    if changes is not None:
        mad = np.asarray(changes, dtype=np.float64)
    else:
        mad = np.array(
            [np.abs(a.astype(np.int16) - b.astype(np.int16)).mean() if a.shape == b.shape else 255.0
             for a, b in zip(thumbs[:-1], thumbs[1:], strict=True)]
        )
    repeat = (mad < LEGACY_REPEAT_MAD).astype(np.float64)  # the interval features keep version 1's repeat test
    out = np.stack([ratio, np.log(np.maximum(ratio, 1e-2)), mad / 255.0, repeat], axis=1)
    return out.astype(np.float32)


def _window_stats(window: Window, thumbs: list[np.ndarray], intervals: np.ndarray,
                  signals_version: int = SIGNALS_VERSION) -> dict[str, float]:
    """The window statistics (WINDOW_STAT_KEYS, then PRIOR_WINDOW_KEYS): timing from the frames, dimension scores and faces from what the
    window carries (window.measures, measured here in the bundle's signals version if the analysis has not)."""
    frames = window.frames
    pts = np.array([f.pts for f in frames], dtype=np.float64)
    stats = dict.fromkeys(WINDOW_STAT_KEYS + PRIOR_WINDOW_KEYS, 0.0)
    measures = measure_window(window, (signals_version, SIGNALS_VERSION))
    model_dims, shown_dims = measures.dimensions[signals_version], measures.dimensions[SIGNALS_VERSION]
    for region in ("frame", "face"):
        for dim in DIMENSIONS:
            stats[f"window.{region}_{dim}"] = float(model_dims.get(region, {}).get(dim, -1.0))
            stats[published_key(region, dim)] = float(shown_dims.get(region, {}).get(dim, -1.0))
    if len(frames) >= 2:
        dt = np.diff(pts)
        med = float(np.median(dt[dt > 0])) if (dt > 0).any() else 0.0
        span = float(pts[-1] - pts[0])
        if span > 0:
            fps = (len(frames) - 1) / span
            nominal = window.nominal_fps or (1.0 / med if med > 0 else fps)
            stats["window.fps_ratio"] = min(fps / nominal, 4.0)
        if dt.mean() > 0:
            stats["window.dt_cv"] = min(float(dt.std() / dt.mean()), 10.0)
        if med > 0:
            stats["window.max_gap"] = min(float(dt.max() / med), 20.0)
        stats["window.repeat_share"] = float(intervals[:, 3].mean())
        stats["window.mad_mean"] = float(intervals[:, 2].mean())
        stats["window.mad_std"] = float(intervals[:, 2].std())
    if thumbs:
        luma = np.array([t.mean() / 255.0 for t in thumbs])
        stats["window.luma_mean"] = float(luma.mean())
        if len(luma) >= 3:
            stats["window.luma_flicker"] = float(np.abs(np.diff(luma, 2)).mean())
    faces = measures.faces
    stats["window.face_presence"] = faces.presence
    stats["window.face_size"] = faces.size_uncapped
    stats["window.face_jitter"] = faces.jitter
    if faces.identity_stability is not None:
        stats["window.identity_stability"] = faces.identity_stability
    return stats


def _signal_stats(sampled: list[FrameRecord], keys: tuple[str, ...]) -> list[float]:
    out: list[float] = []
    for key in keys:
        region, _, name = key.partition(".")
        values = []
        for r in sampled:
            v = (r.signals or {}).get(region, {}).get(name)
            if v is not None and math.isfinite(v):
                values.append(float(v))
        if values:
            out += [float(np.mean(values)), float(np.std(values)), len(values) / len(sampled)]
        else:
            out += [0.0, 0.0, 0.0]
    return out


def signal_keys_of(records: list[FrameRecord]) -> set[str]:
    """Every "region.name" key present in the records' signals (training collects the bundle's list with it)."""
    keys: set[str] = set()
    for r in records:
        for region, values in (r.signals or {}).items():
            keys.update(f"{region}.{name}" for name in values)
    return keys


def assemble_window_features(window: Window, spec: FeatureSpec) -> WindowFeatures:
    """A window's model inputs. Spatial/portrait come from the sampled frames that carry encoder features (the
    live path encodes a sparse grid of them, analysis.model_fps), faces from those that carry an embedding
    (analysis.embed_fps); each is spread uniformly over K slots, repeating when there are fewer."""
    sampled = window.sampled
    k = spec.frames
    encoded = [r for r in sampled if "spatial" in r.extra and "portrait" in r.extra]
    if encoded:
        picks = [encoded[i] for i in uniform_indices(len(encoded), k)]
        spatial = np.stack([r.extra["spatial"] for r in picks])
        portrait = np.stack([r.extra["portrait"] for r in picks])
    else:  # no encoded frame at all: the model sees zeros (encoder outputs are never all zero)
        spatial, portrait = spec.zeros(spec.spatial_shape), spec.zeros(spec.portrait_shape)
    face = np.zeros((k, EMBEDDING_DIM), dtype=np.float32)
    face_mask = np.zeros((k,), dtype=np.float32)
    embedded = [r for r in sampled if r.embedding is not None]
    if embedded:
        for j, i in enumerate(uniform_indices(len(embedded), k)):
            face[j] = embedded[i].embedding
            face_mask[j] = 1.0

    th, tw = spec.thumb_size
    all_thumbs = [f.thumb for f in window.frames]
    if all_thumbs:
        chosen = [all_thumbs[i] for i in uniform_indices(len(all_thumbs), spec.temporal_len)]
        thumbs = np.stack([
            t if t.shape == (th, tw) else cv2.resize(t, (tw, th), interpolation=cv2.INTER_AREA) for t in chosen
        ]).astype(np.uint8)
    else:
        thumbs = np.zeros((spec.temporal_len, th, tw), dtype=np.uint8)
    pts = np.array([f.pts for f in window.frames], dtype=np.float64)
    pairs = interval_features(pts, all_thumbs, window.nominal_fps, thumb_changes(window.frames))
    stats = _window_stats(window, all_thumbs, pairs, spec.signals_version)
    signals = [stats[k] for k in spec.window_keys] + _signal_stats(sampled, spec.signal_keys)
    return WindowFeatures(
        stream=window.stream,
        start=window.start,
        end=window.end,
        spatial=spatial,
        portrait=portrait,
        face=face,
        face_mask=face_mask,
        thumbs=thumbs,
        intervals=_resample_rows(pairs, spec.interval_len),
        signals=np.asarray(signals, dtype=np.float32),
        prior_signals=np.asarray([stats[k] for k in PRIOR_WINDOW_KEYS], dtype=np.float32),
    )


def stack_features(features: list[WindowFeatures]) -> dict[str, np.ndarray]:
    """A batch of WindowFeatures as arrays with a leading batch axis (the model's inputs and prior_signals)."""
    return {name: np.stack([getattr(f, name) for f in features]) for name in WindowFeatures.STORED}


__all__ = [
    "DIMENSIONS",
    "LEVELS",
    "PRIOR_WINDOW_KEYS",
    "FeatureSpec",
    "Rater",
    "Rating",
    "WindowFeatures",
    "assemble_window_features",
    "level_of",
    "portrait_box",
    "prior_vector",
    "stack_features",
]
