"""The Rater over an exported bundle: the frame encoder and the rater as ONNX graphs on a registry runtime.

No torch on this path: frames are resized with OpenCV exactly as engines.frame_encoders does, the encoder graph
turns uint8 frames and portrait crops into features, the rater graph turns stacked WindowFeatures into raw
scores and level logits, and the manifest's calibration maps raw scores to 0..100.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from engines.bundle import default_rater, learned_heads, precision_entry, rates_dimensions, verify_bundle
from engines.features import FrameRecord
from engines.forest import ScorePrior
from engines.rater import (
    FeatureSpec,
    Rater,
    WindowFeatures,
    portrait_crop,
    resize_frame,
)
from engines.registry import create_engine

ENCODER, RATER = "encoder", "rater"


def trt_profiles(manifest: dict[str, Any], max_batch: int = 64) -> dict[str, dict[str, list[list[int]]]]:
    """TensorRT optimization profiles (min, opt, max shapes) of both graphs from the manifest's input shapes."""
    sizes = manifest["graphs"][ENCODER]["sizes"]
    hs = [s[0] for s in sizes.values()]
    ws = [s[1] for s in sizes.values()]
    opt = sizes["spatial"]
    profiles: dict[str, dict[str, list[list[int]]]] = {
        ENCODER: {"images": [[1, min(hs), min(ws), 3], [8, opt[0], opt[1], 3], [max_batch, max(hs), max(ws), 3]]},
        RATER: {},
    }
    for name, shape in manifest["graphs"][RATER]["inputs"].items():
        rest = [int(d) for d in shape[1:]]
        profiles[RATER][name] = [[1, *rest], [8, *rest], [max_batch, *rest]]
    return profiles


class OnnxRater(Rater):
    """Runs an exported bundle's graphs on `runtime` (onnxruntime or tensorrt) at one of its precisions."""

    def __init__(self, bundle_dir: Path, manifest: dict[str, Any], runtime: str | None = None,
                 precision: str | None = None, engine_config: dict[str, Any] | None = None) -> None:
        self.bundle_dir = Path(bundle_dir)
        self.manifest = manifest
        default = default_rater(manifest)
        self.runtime = runtime or default.get("runtime", "onnxruntime")
        self.precision = precision or default.get("precision", "fp32")
        files = precision_entry(bundle_dir, manifest, self.precision)
        allowed = manifest.get("runtimes", {}).get(self.runtime)
        if allowed is not None and self.precision not in allowed:
            raise ValueError(f"bundle {bundle_dir}: precision {self.precision!r} does not run on {self.runtime} "
                             f"(it runs {', '.join(allowed)}); the dynamic int8 graphs are for onnxruntime on the CPU, "
                             "TensorRT builds int8 engines from int8_qdq")
        if self.runtime == "tensorrt":  # the engine's precision follows the graph's unless the config says
            engine_config = {"precision": "int8" if self.precision == "int8_qdq" else "fp16", **(engine_config or {})}
        self.files = files
        self.spec = FeatureSpec.from_dict(manifest["inputs"])
        sizes = manifest["graphs"][ENCODER]["sizes"]
        self.spatial_size = tuple(sizes["spatial"])
        self.portrait_size = tuple(sizes["portrait"])
        self.calibration = manifest["calibration"]
        self.rates_dimensions = rates_dimensions(manifest)
        self.dimension_heads = learned_heads(manifest)
        self.prior = ScorePrior.from_manifest(self.bundle_dir, manifest)
        self.engine = create_engine(self.runtime, engine_config)
        profiles = trt_profiles(manifest) if self.runtime == "tensorrt" else {}
        self.encoder = self._load(ENCODER, profiles.get(ENCODER))
        self.session = self._load(RATER, profiles.get(RATER))
        digest = manifest["files"][self.files[ENCODER]]["sha256"][:16]
        self._version = f"onnx-encoder/{digest}/s{list(self.spatial_size)}/p{list(self.portrait_size)}"

    def _load(self, graph: str, profile):
        path = self.bundle_dir / self.files[graph]
        if profile is not None:
            return self.engine.load(path, profile=profile)  # type: ignore[call-arg]
        return self.engine.load(path)

    @property
    def extractor_version(self) -> str:
        """Keys feature caches (train.clip_features.FeatureExtractor): the encoder file and the frame sizes."""
        return self._version

    def encode(self, images: list[np.ndarray]) -> np.ndarray:
        """Equal-size RGB uint8 images -> (N, D) float32 features."""
        return self.encoder.run({"images": np.ascontiguousarray(np.stack(images))})[0]

    def frame_features(self, records: list[FrameRecord]) -> None:
        todo = [r for r in records if r.image is not None and "spatial" not in r.extra]
        if not todo:
            return
        spatial = self.encode([resize_frame(r.image, self.spatial_size) for r in todo])  # type: ignore[arg-type]
        portrait = self.encode([resize_frame(portrait_crop(r), self.portrait_size) for r in todo])
        for r, s, p in zip(todo, spatial, portrait, strict=True):
            r.extra["spatial"] = s
            r.extra["portrait"] = p

    def predict(self, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Raw outputs (score before calibration, level logits, dimensions) for stacked feature arrays."""
        feeds = {name: np.ascontiguousarray(arrays[name]) for name in WindowFeatures.ARRAYS}
        score, logits, dims = self.session.run(feeds)
        return {"score": score, "level_logits": logits, "dimensions": dims}

    def calibrate(self, raw: np.ndarray) -> np.ndarray:
        return np.clip(self.calibration["a"] * raw + self.calibration["b"], 0.0, 100.0)


def load_exported_rater(bundle_dir: Path, manifest: dict[str, Any] | None = None, device: str = "cpu",
                        runtime: str | None = None, precision: str | None = None) -> OnnxRater:
    """The rater of an exported (format 2) bundle, after verifying its files against the manifest.

    `device="cuda"` prefers onnxruntime's CUDA execution provider where onnxruntime-gpu has it."""
    manifest = verify_bundle(bundle_dir) if manifest is None else manifest
    config = None
    chosen = runtime or default_rater(manifest).get("runtime", "onnxruntime")
    if chosen == "onnxruntime" and device == "cuda":
        config = {"providers": ["tensorrt", "cuda", "cpu"]}
    return OnnxRater(bundle_dir, manifest, runtime=chosen, precision=precision, engine_config=config)


__all__ = ["OnnxRater", "load_exported_rater", "resize_frame", "trt_profiles"]
