"""A bundle whose model share is 0 (the forest carries the whole score): the live path runs neither the frame
encoder nor the forward pass, and publishes exactly what running them would have published."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from engines.bundle import DEFAULT_BUNDLE, read_manifest, save_manifest

SAMPLE = Path(__file__).resolve().parents[2] / "samples" / "degraded.mp4"


def _with_share(out: Path, share: float) -> Path:
    shutil.copytree(DEFAULT_BUNDLE, out)
    manifest = read_manifest(out)
    manifest["prior"]["model_weight"] = share
    save_manifest(out, manifest)
    return out


@pytest.fixture(scope="module")
def share_zero_bundle(tmp_path_factory):
    return _with_share(tmp_path_factory.mktemp("bundle") / "b", 0.0)


def _analyse(bundle: Path, monkeypatch, force_model: bool):
    from stream.analysis import build_analyzer
    from stream.config import MonitorConfig
    from stream.offline import analyse_file

    cfg = MonitorConfig(bundle=bundle)
    analyzer = build_analyzer(cfg)
    rater = analyzer.rater
    calls = {"predict": 0, "encode": 0}
    predict, encode = rater.predict, rater.frame_features

    def counting_predict(arrays):
        calls["predict"] += 1
        return predict(arrays)

    def counting_encode(records):
        calls["encode"] += 1
        return encode(records)

    monkeypatch.setattr(rater, "predict", counting_predict)
    monkeypatch.setattr(rater, "frame_features", counting_encode)
    if force_model:  # the same bundle as if the model still counted: encoder and forward run, their outputs x 0
        monkeypatch.setattr(type(rater), "model_counts", property(lambda self: True))
    results = analyse_file(SAMPLE, cfg, analyzer).results
    monkeypatch.undo()
    return results, calls


def test_share_zero_skips_the_model_and_publishes_the_same(share_zero_bundle, monkeypatch, tmp_path):
    from engines.load import load_rater

    assert not load_rater(share_zero_bundle).model_counts
    assert load_rater(_with_share(tmp_path / "quarter", 0.25)).model_counts  # any share above 0: the model runs

    skipped, calls = _analyse(share_zero_bundle, monkeypatch, force_model=False)
    assert calls == {"predict": 0, "encode": 0}
    ran, forced_calls = _analyse(share_zero_bundle, monkeypatch, force_model=True)
    assert forced_calls["predict"] > 0 and forced_calls["encode"] > 0
    assert len(skipped) == len(ran) >= 3
    for a, b in zip(skipped, ran, strict=True):
        assert a.score is not None and a.score == b.score
        assert a.dimensions == b.dimensions
        assert a.level == b.level
    # and the score is the forest's, not a constant: the degraded sample's windows differ
    assert np.ptp([r.score for r in skipped]) > 0
