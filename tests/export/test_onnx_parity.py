"""Exported ONNX graphs versus PyTorch on real face frames (astronaut, carphone), at fp32 and int8."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from engines.load import load_rater
from engines.onnx_rater import OnnxRater, load_exported_rater, resize_frame
from engines.rater import WindowFeatures
from export.merge import load_checkpoint
from export.parity import real_face_frames, window_arrays

# Bounds asserted below (fp32 graphs compute the same functions; int8 only has to stay near).
ENCODER_ATOL = 1e-3
RAW_SCORE_ATOL = 1e-3
CALIBRATED_SCORE_ATOL = 0.01  # points on 0..100
LOGIT_ATOL = 1e-3
INT8_SCORE_ATOL = 5.0  # points on 0..100, untrained model


@pytest.fixture(scope="module")
def frames():
    return real_face_frames(12)


@pytest.fixture(scope="module")
def torch_rater(checkpoint):
    torch.set_num_threads(1)
    return load_checkpoint(checkpoint)


def windows(rater, frames) -> dict[str, np.ndarray]:
    cfg = rater.config
    return window_arrays(rater.encoder.encode, rater.spec, frames, cfg.spatial_size, cfg.portrait_size)


def test_encoder_graph_matches_pytorch_on_real_frames_at_both_sizes_and_batches(exported, torch_rater, frames):
    onnx = load_exported_rater(exported, precision="fp32")
    cfg = torch_rater.config
    for size in (cfg.spatial_size, cfg.portrait_size):
        for n in (1, 5):
            images = [resize_frame(f, tuple(size)) for f in frames[:n]]
            got, want = onnx.encode(images), torch_rater.encoder.encode(images)
            assert got.shape == want.shape == (n, torch_rater.spec.spatial_shape[0])
            assert np.abs(got - want).max() < ENCODER_ATOL


def test_rater_graph_matches_pytorch_scores_and_levels(exported, torch_rater, frames):
    onnx = load_exported_rater(exported, precision="fp32")
    arrays = windows(torch_rater, frames)
    for n in (1, 3):
        part = {k: v[:n] for k, v in arrays.items()}
        want, got = torch_rater.predict(part), onnx.predict(part)
        assert np.abs(got["score"] - want["score"]).max() < RAW_SCORE_ATOL
        assert np.abs(got["level_logits"] - want["level_logits"]).max() < LOGIT_ATOL
        assert np.abs(onnx.calibrate(got["score"]) - torch_rater.calibrate(want["score"])).max() < CALIBRATED_SCORE_ATOL
    feats = [WindowFeatures("s", 0.0, 1.0, **{k: v[i] for k, v in arrays.items()}) for i in range(3)]
    a, b = torch_rater.rate(feats), onnx.rate(feats)
    assert [r.level for r in a] == [r.level for r in b]
    assert max(abs(x.score - y.score) for x, y in zip(a, b, strict=True)) < CALIBRATED_SCORE_ATOL


def test_int8_graphs_stay_near_pytorch(exported, torch_rater, frames):
    arrays = windows(torch_rater, frames)
    want = torch_rater.calibrate(torch_rater.predict(arrays)["score"])
    for precision in ("int8", "int8_rater", "int8_qdq"):
        onnx = load_exported_rater(exported, precision=precision)
        cfg = torch_rater.config
        int8_arrays = window_arrays(onnx.encode, onnx.spec, frames, cfg.spatial_size, cfg.portrait_size)
        got = onnx.calibrate(onnx.predict(int8_arrays)["score"])
        assert np.isfinite(got).all()
        assert np.abs(got - want).max() < INT8_SCORE_ATOL, precision


def test_load_rater_dispatches_exported_bundles_and_manifest_records_parity(exported):
    rater = load_rater(exported)
    assert isinstance(rater, OnnxRater) and rater.runtime == "onnxruntime"
    parity = rater.manifest["parity"]
    assert parity["encoder_max_abs"] < ENCODER_ATOL and parity["score_max_abs"] < RAW_SCORE_ATOL
    assert set(rater.manifest["precisions"]) >= {"fp32", "int8"}


def test_frame_features_of_real_records_match_pytorch(exported, torch_rater, frames):
    """The ONNX rater's own preprocessing (resize, portrait crop around a face) gives PyTorch's features."""
    from engines.features import Face, FrameRecord

    def records():
        out = []
        for i, f in enumerate(frames[:4]):
            h, w = f.shape[:2]
            face = Face((w * 0.3, h * 0.2, w * 0.3, h * 0.35), 0.9, np.zeros((5, 2), np.float32)) if i % 2 else None
            out.append(FrameRecord(pts=i * 0.5, thumb=np.zeros((36, 64), np.uint8), source_size=(w, h), image=f,
                                   faces=[face] if face else []))
        return out

    a, b = records(), records()
    torch_rater.frame_features(a)
    load_exported_rater(exported, precision="fp32").frame_features(b)
    for x, y in zip(a, b, strict=True):
        assert np.abs(x.extra["spatial"] - y.extra["spatial"]).max() < ENCODER_ATOL
        assert np.abs(x.extra["portrait"] - y.extra["portrait"]).max() < ENCODER_ATOL


def test_dynamic_int8_graphs_are_refused_on_tensorrt(exported):
    from engines.bundle import verify_bundle

    with pytest.raises(ValueError, match="does not run on tensorrt"):
        OnnxRater(exported, verify_bundle(exported), runtime="tensorrt", precision="int8")


def test_export_carries_the_signal_forest_prior_and_both_runtimes_publish_the_same_blend(checkpoint, frames,
                                                                                         tmp_path):
    import json
    import shutil

    from sklearn.ensemble import ExtraTreesRegressor

    from engines.bundle import verify_bundle
    from engines.forest import signal_transform
    from export.cli import run_export
    from train.forest import from_sklearn

    source = tmp_path / "checkpoint"
    shutil.copytree(checkpoint, source)
    rater = load_checkpoint(source)
    names = rater.spec.signal_names()
    rng = np.random.default_rng(0)
    x = rng.random((64, len(names))).astype(np.float32)
    model = ExtraTreesRegressor(5, min_samples_leaf=2, random_state=0).fit(signal_transform(x), 100 * x[:, :7])
    from_sklearn(model, names).save(source / "forest.npz")
    (source / "manifest.json").write_text(json.dumps({"prior": {"file": "forest.npz", "model_weight": 0.5}}))

    out = tmp_path / "exported"
    run_export(source, out, log=lambda s: None)
    manifest = verify_bundle(out)
    assert "forest.npz" in manifest["files"] and manifest["prior"]["model_weight"] == 0.5
    onnx, torch_rater = load_exported_rater(out, precision="fp32"), load_checkpoint(source)
    assert onnx.prior is not None and onnx.prior.model_weight == 0.5
    arrays = windows(torch_rater, frames)
    arrays["signals"] = x[: len(arrays["signals"])]
    feats = [WindowFeatures("s", 0.0, 1.0, **{k: v[i] for k, v in arrays.items()}) for i in range(3)]
    a, b = torch_rater.rate(feats), onnx.rate(feats)
    model_only = torch_rater.calibrate(torch_rater.predict({k: v[:3] for k, v in arrays.items()})["score"])
    prior = torch_rater.prior.forest.predict(arrays["signals"][:3], names)[:, 0]
    np.testing.assert_allclose([r.score for r in a], np.clip(0.5 * prior + 0.5 * model_only, 0, 100), atol=1e-3)
    assert max(abs(p.score - q.score) for p, q in zip(a, b, strict=True)) < CALIBRATED_SCORE_ATOL
    (out / "forest.npz").write_bytes(b"changed")
    with pytest.raises(Exception, match="forest.npz"):
        load_rater(out)
