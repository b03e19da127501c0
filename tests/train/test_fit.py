"""Stage I/II training on synthetic windows, the bundle it writes, and the evaluation metrics."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from engines import fvq_rater
from engines.features import LEVELS
from engines.load import load_rater
from engines.rater import FeatureSpec, WindowFeatures, prior_vector
from train import evaluate
from train.bundle import write_bundle
from train.clip_features import ClipFeatures, Dataset, read_split
from train.model import build_tiny
from train.stages import StageSettings, fit

SPEC = FeatureSpec(frames=2, temporal_len=4, thumb_size=(16, 16), interval_len=4)


def synthetic_clips(n: int, seed: int, spec: FeatureSpec) -> list[ClipFeatures]:
    """Clips whose spatial features carry the MOS (plus noise), two windows each."""
    rng = np.random.default_rng(seed)
    names = spec.signal_names()
    clips = []
    for i in range(n):
        mos = float(rng.uniform(5, 95))
        w = 2
        spatial = rng.standard_normal((w, spec.frames, spec.spatial_shape[0])).astype(np.float32)
        spatial[..., :8] += (mos - 50) / 15
        arrays = {
            "spatial": spatial,
            "portrait": rng.standard_normal((w, spec.frames, spec.portrait_shape[0])).astype(np.float32),
            "face": rng.standard_normal((w, spec.frames, 128)).astype(np.float32),
            "face_mask": np.ones((w, spec.frames), np.float32),
            "thumbs": rng.integers(0, 255, (w, spec.temporal_len, *spec.thumb_size), dtype=np.uint8),
            "intervals": rng.random((w, spec.interval_len, 4)).astype(np.float32),
            "signals": rng.random((w, len(names))).astype(np.float32),
        }
        assert set(arrays) == set(WindowFeatures.ARRAYS)
        clips.append(ClipFeatures(f"clip{i}.mp4", mos, arrays, names))
    return clips


def test_stage1_then_stage2_learn_and_the_bundle_loads(tmp_path):
    model = build_tiny(hidden=32, layers=1, heads=2, spec=SPEC, projector_hidden=32, lora_dropout=0.0)
    spec = model.config.feature_spec
    rater = fvq_rater.FVQRater(model)
    names = spec.signal_names()
    train = Dataset.from_clips(synthetic_clips(48, 0, spec), names)
    val = Dataset.from_clips(synthetic_clips(12, 1, spec), names)
    settings = StageSettings(epochs=6, lr=3e-3, batch_size=16, warmup_steps=2, patience=6)
    report = fit(rater, train, val, settings, settings, seed=0, log=lambda m: None)
    assert report["stage1"]["best_srcc"] > 0.5 and report["stage2"]["best_srcc"] > 0.5
    from train.prior import evaluate_dataset

    metrics = evaluate_dataset(rater, val)
    assert metrics["srcc"] > 0.5

    before = rater.predict(val.batch(np.arange(4)))
    manifest = write_bundle(rater, tmp_path / "bundle", {"seed": 0}, {"val": metrics})
    on_disk = json.loads((tmp_path / "bundle" / "manifest.json").read_text())
    assert on_disk["format_version"] == 1 and on_disk["model"]["size"] == "tiny"
    assert set(on_disk["files"]) == {"rater_config.json", "model.safetensors", "tokenizer.json"}
    assert manifest["extractors"][0]["name"] == "mobilenet_v2"
    assert sum(f["bytes"] for f in on_disk["files"].values()) < 25e6

    loaded = load_rater(tmp_path / "bundle")
    after = loaded.predict(val.batch(np.arange(4)))
    np.testing.assert_allclose(after["score"], before["score"], rtol=1e-4, atol=1e-3)
    feats = [WindowFeatures("s", 0.0, 4.0, **{k: v[i] for k, v in val.batch(np.arange(2)).items()}) for i in range(2)]
    ratings = loaded.rate(feats)
    assert all(0 <= r.score <= 100 and r.level in LEVELS for r in ratings)


def test_read_split(tmp_path):
    (tmp_path / "train" / "videos").mkdir(parents=True)
    (tmp_path / "train" / "labels.txt").write_text("a.mp4 71.25\n\nb.mp4 12.00\n")
    for name in ("a.mp4", "b.mp4"):
        (tmp_path / "train" / "videos" / name).write_bytes(b"")
    clips = read_split(tmp_path, "train")
    assert [c.mos for c in clips] == [71.25, 12.0]
    assert clips[0].path == tmp_path / "train" / "videos" / "a.mp4"
    with pytest.raises((FileNotFoundError, ValueError), match="labels.txt"):
        read_split(tmp_path, "val")


def test_metrics():
    rng = np.random.default_rng(0)
    mos = rng.uniform(0, 100, 200)
    pred = 1 / (1 + np.exp(-(mos - 50) / 10)) + rng.normal(0, 0.01, 200)  # monotone, non-linear
    m = evaluate.evaluate_predictions(pred, mos)
    assert m["srcc"] > 0.95 and m["krcc"] > 0.8 and m["n"] == 200
    assert m["plcc"] > 0.95  # the logistic fit undoes the non-linearity
    assert evaluate.evaluate_predictions([1, 2], [3, 4])["srcc"] == 0.0
    assert evaluate.srcc(-pred, mos) < -0.95


def test_keep_last_keeps_the_final_epoch_not_the_best_monitored_one():
    from train.stages import train_stage

    model = build_tiny(hidden=32, layers=1, heads=2, spec=SPEC, projector_hidden=32, lora_dropout=0.0)
    rater = fvq_rater.FVQRater(model)
    names = model.config.feature_spec.signal_names()
    train = Dataset.from_clips(synthetic_clips(32, 0, model.config.feature_spec), names)
    for keep_last in (True, False):
        snapshots = []  # the weights after each epoch (the log line comes after the epoch's update)
        settings = StageSettings(epochs=4, lr=3e-2, batch_size=16, warmup_steps=1, patience=10, keep_last=keep_last)
        report = train_stage(rater, 1, train, None, settings, seed=0,
                             log=lambda m, into=snapshots: into.append({k: v.clone() for k, v in model.state_dict().items()}))
        kept = snapshots[-1] if keep_last else snapshots[report["best_epoch"] - 1]
        for k, v in model.state_dict().items():
            assert torch.equal(v, kept[k]), k


def test_signal_forest_prior_is_fitted_chosen_on_val_saved_and_blended_by_the_loaded_bundle(tmp_path):
    import argparse

    from engines.forest import ScorePrior
    from train.prior import MODEL_WEIGHTS, clip_scores, fit_prior

    model = build_tiny(("frame.noise_sigma",), hidden=32, layers=1, heads=2, spec=SPEC, projector_hidden=32)
    rater = fvq_rater.FVQRater(model)
    spec = model.config.feature_spec
    names = spec.signal_names()
    col = names.index("frame.noise_sigma.mean")
    data = {}
    for split, (n, seed) in {"train": (60, 0), "val": (20, 1)}.items():
        clips = synthetic_clips(n, seed, spec)
        for c in clips:  # the forest's signal: a noise estimate that falls as the MOS rises
            c.arrays["signals"][:, col] = (100 - c.mos) / 10 + np.random.default_rng(seed).normal(0, 0.3, c.windows)
        data[split] = Dataset.from_clips(clips, names)
    args = argparse.Namespace(seed=0, fold_val=False, model_weight=None, no_forest_refit=True)
    entry, unseen = fit_prior(rater, data, args, log=lambda m: None)  # the model is untrained: the forest must win on val
    assert entry["model_weight"] == 0.0 and set(entry["val"]) == {f"{w:g}" for w in MODEL_WEIGHTS}
    train_only = rater.prior.forest
    assert unseen is train_only
    refit, unseen = fit_prior(rater, data, argparse.Namespace(seed=0, fold_val=False, model_weight=None),
                              log=lambda m: None)
    assert refit["model_weight"] == 0.0 and refit["val"] == entry["val"] and "and val" in refit["trained_on"]
    assert rater.prior.forest.nodes > unseen.nodes  # 80 clips' windows instead of 60: val is in the shipped one
    assert entry["val"]["0"]["srcc"] > 0.9 > entry["val"]["1"]["srcc"]
    assert evaluate.srcc(clip_scores(rater, data["val"]), data["val"].clip_mos) > 0.9

    write_bundle(rater, tmp_path / "b", {"seed": 0}, {}, entry)
    on_disk = json.loads((tmp_path / "b" / "manifest.json").read_text())
    assert "forest.npz" in on_disk["files"] and on_disk["prior"]["model_weight"] == 0.0
    loaded = load_rater(tmp_path / "b")
    assert isinstance(loaded.prior, ScorePrior) and loaded.prior.model_weight == 0.0
    batch = data["val"].batch(np.arange(3))
    feats = [WindowFeatures("s", 0.0, 4.0, **{k: v[i] for k, v in batch.items()}) for i in range(3)]
    expected = loaded.prior.blend(loaded.calibrate(loaded.predict(batch)["score"]), prior_vector(batch),
                                  spec.prior_names())
    np.testing.assert_allclose([r.score for r in loaded.rate(feats)], expected, rtol=1e-5)
    with pytest.raises(ValueError, match="within 0..1"):
        fit_prior(rater, data, argparse.Namespace(seed=0, fold_val=False, model_weight=2.0), log=lambda m: None)


def test_feature_cache_key_changes_with_the_signal_measurements(tmp_path, monkeypatch):
    import engines.signals
    from train.clip_features import FeatureExtractor
    from train.fit import build_rater

    probe = build_rater("tiny", (), 0, None, "cpu")
    before = FeatureExtractor(probe, tmp_path).version
    assert FeatureExtractor(probe, tmp_path).version == before
    monkeypatch.setattr(engines.signals, "SIGNALS_VERSION", engines.signals.SIGNALS_VERSION + 1)
    assert FeatureExtractor(probe, tmp_path).version != before  # features cached before are not read as current


def test_no_face_identity_makes_the_score_independent_of_who_is_on_screen():
    """--no-face-identity: trained on zeroed embeddings, then the face projector's LayerNorm gain is set to 0: any
    real embedding the live path feeds gives the face token training saw, so swapping the person's embedding
    moves nothing, while a window without a face still reads differently."""
    from train.stages import blind_face_projector

    model = build_tiny(hidden=32, layers=1, heads=2, spec=SPEC, projector_hidden=32, lora_dropout=0.0)
    rater = fvq_rater.FVQRater(model)
    spec = model.config.feature_spec
    data = Dataset.from_clips(synthetic_clips(6, 2, spec), spec.signal_names())
    batch = data.batch(np.arange(4))
    zeroed = {**batch, "face": np.zeros_like(batch["face"])}
    other = {**batch, "face": np.random.default_rng(5).standard_normal(batch["face"].shape).astype(np.float32)}
    assert np.abs(rater.predict(batch)["score"] - rater.predict(other)["score"]).max() > 1e-3  # identity read before
    trained_view = rater.predict(zeroed)["score"]
    blind_face_projector(rater)
    for b in (batch, other, zeroed):
        np.testing.assert_allclose(rater.predict(b)["score"], trained_view, rtol=0, atol=1e-4)
    no_face = {**batch, "face_mask": np.zeros_like(batch["face_mask"])}
    assert np.abs(rater.predict(no_face)["score"] - trained_view).max() > 1e-4  # presence still reaches the model


def test_forest_input_sets():
    from engines.rater import PRIOR_WINDOW_KEYS
    from train.prior import APPEARANCE_INPUTS, IDENTITY_INPUTS, forest_inputs

    names = ["window.face_size", "window.identity_stability", "window.face_jitter", "window.frame_color",
             "frame.saturation.mean", "face.colorfulness.std", "frame.mean_luma.mean", "frame.noise_sigma.mean"]
    assert forest_inputs(names, "all") == names
    assert forest_inputs(names, "no-identity") == [n for n in names if n not in IDENTITY_INPUTS]
    assert forest_inputs(names, "quality") == ["window.frame_color", "frame.noise_sigma.mean"]
    shown = next(k for k in PRIOR_WINDOW_KEYS if k.endswith(".frame_color"))  # the published frame colour
    published = names + [shown]
    assert forest_inputs(published, "quality") == ["window.frame_color", "frame.noise_sigma.mean"]
    assert forest_inputs(published, "published") == ["frame.noise_sigma.mean", shown]
    assert forest_inputs(published, "quality+published") == ["window.frame_color", "frame.noise_sigma.mean", shown]
    assert not any(p in n for n in forest_inputs(names, "quality") for p in APPEARANCE_INPUTS)
    with pytest.raises(ValueError, match="no-identity"):
        forest_inputs(names, "nothing")


def test_feature_cache_key_changes_with_the_cast_estimator(tmp_path, monkeypatch):
    import engines.signals
    from train.clip_features import FeatureExtractor
    from train.fit import build_rater

    probe = build_rater("tiny", (), 0, None, "cpu")
    before = FeatureExtractor(probe, tmp_path).version
    monkeypatch.setattr(engines.signals, "CAST_ESTIMATE", "grey pixels alone")
    assert FeatureExtractor(probe, tmp_path).version != before  # the cast changed in place within version 2
