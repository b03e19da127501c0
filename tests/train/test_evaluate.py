"""`fvq eval`: BRISQUE/NIQE baselines, and train -> bundle -> eval table on the dozen-clip corpus."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from train import baselines
from train.media import render


@pytest.fixture(scope="module")
def frames():
    clip = render("astronaut-c0", 640, 360, 10, 0.2, seed=1)
    clean = cv2.cvtColor(clip.frames[0], cv2.COLOR_RGB2GRAY)
    blurred = cv2.GaussianBlur(clean, (0, 0), 4.0)
    noisy = np.clip(clean + np.random.default_rng(0).normal(0, 15, clean.shape), 0, 255).astype(np.uint8)
    return clean, blurred, noisy


@pytest.mark.skipif(not baselines.BRISQUE_MODEL.is_file(), reason="needs Debian's opencv-data (make setup)")
def test_brisque_reads_opencvs_model_and_scores_degradation_worse(frames):
    svm, rng = baselines._brisque_model()
    assert svm.support.shape == (774, 36) and rng.shape == (2, 36)
    clean, blurred, noisy = frames
    scores = [baselines.brisque(f) for f in frames]
    assert all(0 <= s <= 100 for s in scores)
    assert scores[1] > scores[0] + 15 and scores[2] > scores[0] + 5, scores


def test_niqe_uses_scikit_videos_parameters_and_small_frames(frames):
    clean, blurred, _ = frames
    mu, cov = baselines._niqe_params()
    assert mu.shape == (36,) and cov.shape == (36, 36)
    assert np.isfinite(baselines.niqe(clean))
    assert np.isfinite(baselines.niqe(cv2.resize(clean, (320, 180))))  # upscaled to fit 2 x 96-px patches


def test_train_then_eval_on_a_dozen_clips(dozen_corpus, tmp_path, capsys):
    from fvq.cli import main as fvq
    from train.fit import main as fit

    root, _ = dozen_corpus
    bundle = tmp_path / "bundle"
    assert fit(["--root", str(root), "--out", str(bundle), "--seed", "0", "--epochs1", "1", "--epochs2", "1"]) == 0
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["training"]["corpus"]["command"].startswith("python -m train.corpus")
    assert manifest["training"]["features"]["analysis"]["model_fps"] > 0
    prior = manifest["prior"]  # the signal forest ships in the bundle; its model share is recorded with its rule
    assert "forest.npz" in manifest["files"] and 0.0 <= prior["model_weight"] <= 1.0 and prior["model_weight_rule"]
    table = manifest["eval"]["table"]
    assert set(table) == {"fvq-rater", "brisque", "niqe", "signal-mean"}
    assert all(set(m) >= {"srcc", "plcc", "krcc"} for m in table.values())
    assert set(manifest["dimensions"]["learned_heads"]) <= set(manifest["eval"]["dimensions"]["signals"])
    from engines.forest import SignalForest
    from train.bundle import choose_dimension_heads
    from train.evaluate import evaluate_folder

    # heads judged with another forest (train.fit passes the one that has not seen val): a verified copy of the
    # bundle carries it, the bundle itself keeps its own forest and gets the choice
    shipped = (bundle / "forest.npz").read_bytes()
    other = SignalForest.load(bundle / "forest.npz")
    other.value = 100.0 - other.value
    heads = choose_dimension_heads(bundle, root, "test", forest=other)
    assert (bundle / "forest.npz").read_bytes() == shipped
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["dimensions"]["learned_heads"] == heads

    before = evaluate_folder(root, "test", bundle, progress=False)
    manifest["dimensions"]["learned_heads"] = ["blur", "noise", "color", "artifact", "luminance", "temporal"]
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    after = evaluate_folder(root, "test", bundle, progress=False)  # the baseline is the measurements, not heads
    assert [r["signal-mean"] for r in after["rows"]] == [r["signal-mean"] for r in before["rows"]]
    capsys.readouterr()
    assert fvq(["eval", str(root), "--split", "test", "--bundle", str(bundle)]) == 0
    out = capsys.readouterr().out
    assert "| FVQ-Rater (this bundle) |" in out and "SRCC | PLCC | KRCC" in out
