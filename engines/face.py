"""The face extractor: YuNet detection (5 landmarks) and SFace 128-d embeddings of aligned crops, batched."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import cv2
import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator

from engines.base import Engine, Session
from engines.face_models import FaceModelPaths, prepare_face_models
from engines.features import Face
from engines.registry import create_engine, engine_keys

EMBEDDING_DIM = 128
ALIGNED_SIZE = 112
# Where SFace (like ArcFace) expects the five landmarks in its 112x112 crop: eyes, nose tip, mouth corners.
SFACE_TEMPLATE = np.array(
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]],
    dtype=np.float32,
)
DETECT_STRIDES = (8, 16, 32)
_DIVISOR = 32  # YuNet's input sides must be multiples of its coarsest stride
# Most images (faces) per session call. Bigger batches cost more per item on CPU (their activations leave the
# caches): at 320x180, one thread, YuNet took 1.6 ms per frame in batches of 1-4 and 1.8-2.0 in batches of 16,
# SFace (the PRelu-free graph, engines/face_models.py) 16.7-17.1 ms per face in batches of 1-2 and 24.9-27.0 in
# batches of 8-16 (benchmarks.live's 8 streams hand it 8).
# Each item's outputs are the same whatever batch it ran in (tests/engines/test_face.py).
DETECT_BATCH = 4
EMBED_BATCH = 2


class FaceExtractorConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    runtime: str = Field(
        default="onnxruntime",
        description="Inference runtime (a key of the engine registry) that runs YuNet and SFace.",
    )
    detect_size: int = Field(
        default=320,
        ge=32,
        le=4096,
        description="Each image is resized so its longer side has this many pixels, then padded at the bottom "
        "and right to multiples of 32, before detection; boxes come back in the image's own pixels.",
    )
    score_threshold: float = Field(
        default=0.6,
        gt=0.0,
        le=1.0,
        description="Smallest detection score (geometric mean of YuNet's class and objectness) kept.",
    )
    nms_threshold: float = Field(
        default=0.3,
        gt=0.0,
        le=1.0,
        description="Boxes overlapping a better one by more than this IoU are dropped.",
    )
    max_faces: int = Field(default=8, ge=1, description="Most faces kept per image, best score first.")
    retry: tuple[tuple[float, str], ...] = Field(
        default=((1.5, "rgb"), (1.5, "brg"), (1.0, "bgr")),
        description="An image with no face is searched again in each of these passes until one finds a face: "
        "(scale of detect_size, channel order). YuNet learnt photographed faces: it misses most pictures of a drawn "
        "face at 320 px, more with blue or green skin, and finds them at 1.5x or with the channels reordered (a "
        "photographed face is found in the first pass, swapped channels or not). A faceless picture pays every "
        "pass (~3.6 ms each at 1.5x of 320x180, 1.6 at 1x).",
    )

    @field_validator("retry")
    @classmethod
    def _retry_passes(cls, value: tuple[tuple[float, str], ...]) -> tuple[tuple[float, str], ...]:
        for scale, order in value:
            if sorted(order) != ["b", "g", "r"]:
                raise ValueError(f"channel order {order!r} is not an ordering of the letters r, g and b")
            if not 0.25 <= scale <= 4.0:
                raise ValueError(f"retry scale {scale} is outside 0.25-4 (of detect_size)")
        return value

    @field_validator("runtime")
    @classmethod
    def _known_runtime(cls, value: str) -> str:
        if value not in engine_keys():
            raise ValueError(f"unknown runtime {value!r}; valid runtimes: {', '.join(engine_keys())}")
        return value


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """The 2x3 rotation + uniform scale + translation mapping `src` points onto `dst` in least squares.

    All five landmarks take part (as in OpenCV's FaceRecognizerSF.alignCrop); a RANSAC fit such as
    cv2.estimateAffinePartial2D's default can drop landmarks on a tilted face.
    """
    src = np.asarray(src, dtype=np.float64).reshape(-1, 2)
    dst = np.asarray(dst, dtype=np.float64).reshape(-1, 2)
    n = len(src)
    a = np.zeros((2 * n, 4))
    a[0::2] = np.column_stack([src[:, 0], -src[:, 1], np.ones(n), np.zeros(n)])
    a[1::2] = np.column_stack([src[:, 1], src[:, 0], np.zeros(n), np.ones(n)])
    (p, q, tx, ty), *_ = np.linalg.lstsq(a, dst.reshape(-1), rcond=None)
    return np.array([[p, -q, tx], [q, p, ty]], dtype=np.float64)


def align_face(image: np.ndarray, face: Face) -> np.ndarray:
    """The 112x112 crop (same channel order as `image`) with the face's landmarks on SFace's template."""
    matrix = similarity_transform(face.landmarks, SFACE_TEMPLATE)
    return cv2.warpAffine(
        image, matrix, (ALIGNED_SIZE, ALIGNED_SIZE), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT
    )


def _check_image(image: np.ndarray, index: int) -> None:
    if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        desc = f"{image.dtype} {image.shape}" if isinstance(image, np.ndarray) else type(image).__name__
        raise ValueError(f"image {index}: expected an RGB uint8 array of shape (h, w, 3), got {desc}")
    if image.shape[0] < 1 or image.shape[1] < 1:
        raise ValueError(f"image {index} is empty: shape {image.shape}")


def _round_up(n: int) -> int:
    return -(-n // _DIVISOR) * _DIVISOR


class FaceExtractor:
    """Finds faces (box, score, landmarks) and embeds them, on any runtime from the engine registry.

    `detect` puts images whose network input has the same size (after resizing to `detect_size` and
    padding to multiples of 32) into one session call, DETECT_BATCH at most; `embed` runs the aligned crops
    EMBED_BATCH per call.
    """

    def __init__(
        self,
        config: FaceExtractorConfig | dict[str, Any] | None = None,
        *,
        engine: Engine | None = None,
        models: FaceModelPaths | None = None,
        cache_dir: Path | None = None,
    ) -> None:
        if config is None:
            config = FaceExtractorConfig()
        elif isinstance(config, dict):
            config = FaceExtractorConfig.model_validate(config)
        self.config = config
        self.engine = engine if engine is not None else create_engine(config.runtime)
        self.models = models if models is not None else prepare_face_models(cache_dir)
        self._detector: Session = self.engine.load(self.models.detector)
        self._recognizer: Session = self.engine.load(self.models.recognizer)
        expected = {f"{kind}_{s}" for kind in ("cls", "obj", "bbox", "kps") for s in DETECT_STRIDES}
        missing = expected - set(self._detector.output_names)
        if missing:
            raise ValueError(
                f"{self.models.detector} is not a YuNet model: outputs {sorted(missing)} are missing"
            )
        self._priors: dict[tuple[int, int], list[tuple[np.ndarray, np.ndarray, int]]] = {}

    # -- detection ---------------------------------------------------------------------------------

    def detect(self, images: list[np.ndarray]) -> list[list[Face]]:
        """Faces in each RGB uint8 image, best score first, in that image's pixel coordinates; an image with none
        is searched again in each of the `retry` passes until one finds a face."""
        prepared: list[tuple[np.ndarray, float, float]] = []
        for i, image in enumerate(images):
            _check_image(image, i)
            prepared.append(self._resize(image, self.config.detect_size))
        results = self._detect_prepared(prepared)
        # each picture resized once per scale, however many channel orders the passes try at it
        scaled: dict[tuple[float, int], tuple[np.ndarray, float, float]] = {}
        for scale, order in self.config.retry:
            missing = [i for i, faces in enumerate(results) if not faces]
            if not missing:
                break
            perm = ["rgb".index(c) for c in order]
            again = []
            for i in missing:
                if scale == 1.0:
                    resized, sx, sy = prepared[i]
                else:
                    if (scale, i) not in scaled:
                        scaled[scale, i] = self._resize(images[i], round(scale * self.config.detect_size))
                    resized, sx, sy = scaled[scale, i]
                again.append((np.ascontiguousarray(resized[:, :, perm]) if order != "rgb" else resized, sx, sy))
            for i, faces in zip(missing, self._detect_prepared(again), strict=True):
                results[i] = faces
        return results

    def _detect_prepared(self, prepared: list[tuple[np.ndarray, float, float]]) -> list[list[Face]]:
        """YuNet on resized images (with their scales back to the originals), same-sized ones batched."""
        groups: dict[tuple[int, int], list[int]] = {}
        for i, (resized, _, _) in enumerate(prepared):
            groups.setdefault((_round_up(resized.shape[0]), _round_up(resized.shape[1])), []).append(i)
        results: list[list[Face]] = [[] for _ in prepared]
        chunks = [(size, ids[k:k + DETECT_BATCH]) for size, ids in groups.items() for k in range(0, len(ids), DETECT_BATCH)]
        for (pad_h, pad_w), indices in chunks:
            batch = np.zeros((len(indices), 3, pad_h, pad_w), dtype=np.float32)
            for j, i in enumerate(indices):
                resized = prepared[i][0]
                # YuNet takes BGR in 0..255, padded with zeros at the bottom and right.
                batch[j, :, : resized.shape[0], : resized.shape[1]] = resized[:, :, ::-1].transpose(2, 0, 1)
            outputs = self._detector.run({self._detector.input_names[0]: batch})
            named = dict(zip(self._detector.output_names, outputs, strict=True))
            for j, i in enumerate(indices):
                results[i] = self._decode(named, j, pad_h, pad_w, prepared[i][1], prepared[i][2])
        return results

    def _resize(self, image: np.ndarray, size: int) -> tuple[np.ndarray, float, float]:
        h, w = image.shape[:2]
        scale = size / max(h, w)
        new_w, new_h = max(1, round(w * scale)), max(1, round(h * scale))
        if (new_w, new_h) == (w, h):
            return image, 1.0, 1.0
        interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
        return cv2.resize(image, (new_w, new_h), interpolation=interpolation), new_w / w, new_h / h

    def _grid(self, pad_h: int, pad_w: int) -> list[tuple[np.ndarray, np.ndarray, int]]:
        """Per stride: the column and row of every anchor cell, in YuNet's row-major output order."""
        key = (pad_h, pad_w)
        if key not in self._priors:
            levels = []
            for stride in DETECT_STRIDES:
                rows, cols = pad_h // stride, pad_w // stride
                r, c = np.divmod(np.arange(rows * cols, dtype=np.float32), cols)
                levels.append((c, r, stride))
            self._priors[key] = levels
        return self._priors[key]

    def _decode(
        self, named: dict[str, np.ndarray], j: int, pad_h: int, pad_w: int, sx: float, sy: float
    ) -> list[Face]:
        cfg = self.config
        boxes, scores, landmarks = [], [], []
        for c, r, stride in self._grid(pad_h, pad_w):
            cls = np.clip(named[f"cls_{stride}"][j, :, 0], 0.0, 1.0)
            obj = np.clip(named[f"obj_{stride}"][j, :, 0], 0.0, 1.0)
            if len(cls) != len(c):
                raise ValueError(f"YuNet gave {len(cls)} anchors at stride {stride}, expected {len(c)}")
            score = np.sqrt(cls * obj)
            keep = np.nonzero(score >= cfg.score_threshold)[0]
            if keep.size == 0:
                continue
            bbox = named[f"bbox_{stride}"][j, keep]
            kps = named[f"kps_{stride}"][j, keep].reshape(-1, 5, 2)
            ck, rk = c[keep], r[keep]
            cx, cy = (ck + bbox[:, 0]) * stride, (rk + bbox[:, 1]) * stride
            w, h = np.exp(bbox[:, 2]) * stride, np.exp(bbox[:, 3]) * stride
            boxes.append(np.column_stack([cx - w / 2, cy - h / 2, w, h]))
            scores.append(score[keep])
            landmarks.append(
                np.stack([(kps[:, :, 0] + ck[:, None]) * stride, (kps[:, :, 1] + rk[:, None]) * stride], -1)
            )
        if not boxes:
            return []
        all_boxes, all_scores, all_landmarks = (
            np.concatenate(boxes),
            np.concatenate(scores),
            np.concatenate(landmarks),
        )
        kept = cv2.dnn.NMSBoxes(
            all_boxes.tolist(), all_scores.tolist(), cfg.score_threshold, cfg.nms_threshold
        )
        order = sorted(np.asarray(kept, dtype=np.int64).reshape(-1).tolist(), key=lambda k: -all_scores[k])
        faces = []
        for k in order[: cfg.max_faces]:
            x, y, w, h = all_boxes[k]
            faces.append(
                Face(
                    box=(float(x / sx), float(y / sy), float(w / sx), float(h / sy)),
                    score=float(all_scores[k]),
                    landmarks=(all_landmarks[k] / np.array([sx, sy])).astype(np.float32),
                )
            )
        return faces

    # -- embeddings --------------------------------------------------------------------------------

    @staticmethod
    def align(image: np.ndarray, face: Face) -> np.ndarray:
        """The 112x112 RGB crop SFace embeds: the face's landmarks moved onto SFace's template."""
        return align_face(image, face)

    def embed(self, images: list[np.ndarray], faces: list[Face]) -> np.ndarray:
        """(N, 128) float32 L2-normalised SFace embeddings of faces[i] found in images[i] (EMBED_BATCH per call)."""
        if len(images) != len(faces):
            raise ValueError(
                f"embed needs one face per image, got {len(images)} images and {len(faces)} faces"
            )
        if not faces:
            return np.zeros((0, EMBEDDING_DIM), dtype=np.float32)
        for i, image in enumerate(images):
            _check_image(image, i)
        # SFace takes RGB in 0..255 (it normalises inside the graph).
        crops = np.stack([align_face(image, face) for image, face in zip(images, faces, strict=True)])
        batch = np.ascontiguousarray(crops.transpose(0, 3, 1, 2), dtype=np.float32)
        name = self._recognizer.input_names[0]
        vectors = np.concatenate([self._recognizer.run({name: batch[k:k + EMBED_BATCH]})[0]
                                  for k in range(0, len(batch), EMBED_BATCH)]).astype(np.float32)
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        return vectors / np.maximum(norms, 1e-12)
