"""A bundle whose model share is 0 (the forest carries the whole score): the live path runs neither the frame
encoder nor the forward pass, and publishes exactly what running them would have published."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.harness import bundle_with_share

SAMPLE = Path(__file__).resolve().parents[2] / "samples" / "degraded.mp4"


@pytest.fixture(scope="module")
def share_zero_bundle(tmp_path_factory):
    return bundle_with_share(tmp_path_factory.mktemp("bundle") / "b", 0.0)


def _analyse(bundle: Path, monkeypatch, force_model: bool):
    from stream.config import MonitorConfig
    from stream.live.analysis import build_analyzer
    from stream.live.offline import analyse_file

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
    assert load_rater(bundle_with_share(tmp_path / "quarter", 0.25)).model_counts  # any share above 0: the model runs

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


def test_a_serve_rater_hands_nothing_over_when_the_model_share_is_0(share_zero_bundle):
    """Ray Serve batches the model's forward pass; with share 0 there is none, so the worker rates in process
    (the handle is never called: here there is none to call, which would count as a fallback)."""
    from stream.config import MonitorConfig
    from stream.live.analysis import build_analyzer
    from stream.live.offline import analyse_file
    from stream.scale.serve_rater import ServeRater

    cfg = MonitorConfig(bundle=share_zero_bundle)
    analyzer = build_analyzer(cfg)
    captured = []
    rate = analyzer.rater.rate
    analyzer.rater.rate = lambda features: captured.extend(features) or rate(features)
    analyse_file(SAMPLE, cfg, analyzer)
    analyzer.rater.rate = rate
    remote = ServeRater(analyzer.rater, handle=None)
    got = remote.rate(captured)
    assert [r.score for r in got] == [r.score for r in rate(captured)] and len(got) >= 3
    assert remote.remote_windows == 0 and remote.fallbacks == 0
