"""What the live path hands the engines: frames as the analysis sees them, and windows of them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

# DIMENSIONS: one per distortion family (engines/families.py); the live path reads it from here too
from engines.families import DIMENSIONS as DIMENSIONS

REGIONS = ("frame", "face")
LEVELS = ("bad", "poor", "fair", "good", "excellent")


def level_of(score: float) -> str:
    """The level band a 0..100 score falls in, five equal bands: bad < 20 <= poor < 40 <= fair < 60 <= good < 80
    <= excellent."""
    return LEVELS[min(len(LEVELS) - 1, max(0, int(score // 20)))]


@dataclass(slots=True)
class Face:
    """One detected face at analysis resolution: box (x, y, w, h) in pixels, score, 5 landmarks (x, y)."""

    box: tuple[float, float, float, float]
    score: float
    landmarks: np.ndarray  # (5, 2) float32: right eye, left eye, nose tip, right mouth corner, left mouth corner


@dataclass(slots=True)
class FrameRecord:
    """One decoded frame: computed once, shared by every window that contains it.

    Every frame carries its timestamp and a tiny luma thumbnail (for freezes, stutter, flicker), and how much the
    thumbnail changed since the stream's previous frame (the window assembler measures it when the frame arrives).
    Sampled frames also carry an RGB image at the analysis resolution; the analysis loop fills the
    per-frame results (faces, embedding, signals, spatial features) once, and windows reuse them.
    """

    pts: float  # presentation time in seconds
    thumb: np.ndarray  # (th, tw) uint8 luma
    source_size: tuple[int, int]  # (width, height) as displayed, after rotation
    image: np.ndarray | None = None  # (h, w, 3) uint8 RGB at analysis resolution, sampled frames only
    arrived: float = 0.0  # time.monotonic() when the frame was decoded (lag of the analysis behind live)
    qp_map: np.ndarray | None = None  # (rows, cols) quantiser per macroblock from the H.264/HEVC decoder, sampled frames
    analysed: bool = False
    faces: list[Face] | None = None
    embedding: np.ndarray | None = None  # (128,) float32 SFace embedding of the main face
    signals: dict[str, dict[str, float]] | None = None  # region -> raw measurement name -> value
    extra: dict[str, np.ndarray] = field(default_factory=dict)  # model features (spatial, portrait, ...)
    seq: int = -1  # arrival order in its stream (the window assembler's count; -1: not from an assembler)
    change: float | None = None  # mean |luma difference| of the thumb from the frame seq - 1's (thumb_change)
    # a colour pipeline switch between the stream's previous sampled picture and this one (engines/signals/
    # colour_switch.py: "swap", "range_washed", "range_crushed" or None), read once when switch_read is set
    colour_switch: str | None = None
    switch_read: bool = False

    @property
    def sampled(self) -> bool:
        return self.image is not None

    @property
    def main_face(self) -> Face | None:
        if not self.faces:
            return None
        return max(self.faces, key=lambda f: f.box[2] * f.box[3])


@dataclass(slots=True)
class Window:
    """A span [start, end) of one stream's frames, closed when a later frame (or the end) arrived."""

    stream: str
    start: float
    end: float
    frames: list[FrameRecord]
    closed_at: float  # time.monotonic() when the window closed
    nominal_fps: float | None = None
    # its frames' results added up, once (engines.signals.measure_window): the analysis publishes them and the
    # rater reads them as window statistics; None until measured
    measures: WindowMeasures | None = None

    @property
    def sampled(self) -> list[FrameRecord]:
        return [f for f in self.frames if f.image is not None]


@dataclass(slots=True)
class WindowFaces:
    """The main face over a window's sampled frames, from their detections and embeddings (window_faces)."""

    presence: float  # share of sampled frames with a face (0 without sampled frames)
    size: float  # mean face area / frame area over frames with a face, each frame's share capped at 1 (0: none)
    size_uncapped: float  # the same without the cap: the rater's window statistic, as bundles were trained with it
    jitter: float  # std of the face centre's movement between sampled frames with a face, in face widths (<= 10)
    identity_stability: float | None  # mean cosine similarity of consecutive face embeddings; None below two


@dataclass(slots=True)
class WindowMeasures:
    """A window's per-frame results added up once, carried on the window for the analysis and the rater."""

    faces: WindowFaces
    dimensions: dict[int, dict[str, dict[str, float]]]  # signals version -> region -> dimension -> 0..100


@dataclass(slots=True)
class WindowResult:
    """What the engines say about one window."""

    stream: str
    start: float
    end: float
    dimensions: dict[str, dict[str, float]]  # region -> dimension -> 0..100 (higher is better)
    face_presence: float  # share of sampled frames with a face
    face_size: float  # mean face area / frame area over frames with a face
    identity_stability: float | None  # mean cosine similarity of consecutive face embeddings
    score: float | None = None  # 0..100, from the rater when a model is loaded
    level: str | None = None
    details: dict[str, Any] = field(default_factory=dict)  # numbers, and the colour switches ([pts, kind] each)


def window_faces(sampled: list[FrameRecord]) -> WindowFaces:
    """Face presence, size, movement and identity stability over a window's sampled frames."""
    with_face = [(r, f) for r in sampled if (f := r.main_face) is not None]
    shares = []
    for r, f in with_face:
        h, w = r.image.shape[:2]  # type: ignore[union-attr]
        shares.append(f.box[2] * f.box[3] / float(w * h))
    jitter = 0.0
    if len(with_face) >= 2:
        centres = np.array([[f.box[0] + f.box[2] / 2, f.box[1] + f.box[3] / 2] for _, f in with_face])
        widths = np.array([max(f.box[2], 1.0) for _, f in with_face])
        moves = np.linalg.norm(np.diff(centres, axis=0), axis=1) / widths[1:]
        jitter = min(float(moves.std()), 10.0)
    return WindowFaces(
        presence=len(with_face) / len(sampled) if sampled else 0.0,
        size=float(np.mean([min(1.0, a) for a in shares])) if shares else 0.0,
        size_uncapped=float(np.mean(shares)) if shares else 0.0,
        jitter=jitter,
        identity_stability=identity_stability([r.embedding for r in sampled if r.embedding is not None]),
    )


def identity_stability(embeddings: list[np.ndarray]) -> float | None:
    """Mean cosine similarity of consecutive face embeddings (1: the same person throughout); None below two."""
    if len(embeddings) < 2:
        return None
    e = np.stack(embeddings).astype(np.float64)
    e /= np.maximum(np.linalg.norm(e, axis=1, keepdims=True), 1e-8)
    return float((e[:-1] * e[1:]).sum(1).mean())
