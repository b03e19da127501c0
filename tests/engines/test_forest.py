"""The signal forest: numpy evaluation equal to scikit-learn's, its file, the blend, and bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest

from engines.forest import OUTPUTS, ScorePrior, SignalForest, signal_transform

NAMES = [f"sig{i}" for i in range(6)]


def training_data(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Signals on very different scales (like noise sigma vs shares); MOS and dims depend on a few of them."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, len(NAMES))) * np.array([0.01, 1, 10, 300, 0.5, 3]) + np.array([0, 0, 5, -100, 0, 0])
    mos = np.clip(60 + 30 * np.tanh(x[:, 2] / 10) - 20 * (x[:, 3] > -100) + rng.normal(0, 2, n), 0, 100)
    dims = np.clip(100 - np.abs(x[:, [0, 1, 2, 3, 4, 5]]) * np.array([1000, 10, 2, 0.1, 20, 5]), 0, 100)
    return x.astype(np.float32), mos, dims


@pytest.fixture(scope="module")
def fitted():
    from sklearn.ensemble import ExtraTreesRegressor

    from train.forest import from_sklearn

    x, mos, dims = training_data(300, 0)
    model = ExtraTreesRegressor(20, min_samples_leaf=2, max_features=1.0, random_state=0)
    model.fit(signal_transform(x), np.column_stack([mos, dims]))
    return model, from_sklearn(model, NAMES)


def test_numpy_walk_equals_scikit_learn_on_unseen_windows(fitted):
    model, forest = fitted
    x, _, _ = training_data(200, 1)
    expected = model.predict(signal_transform(x))
    got = forest.predict(x, NAMES)
    assert got.shape == (200, len(OUTPUTS)) and forest.outputs == OUTPUTS
    np.testing.assert_allclose(got, expected, atol=1e-3)  # float32 leaves; thresholds rounded so splits agree
    assert forest.trees == 20 and forest.depth >= 3


def test_fit_forest_splits_on_the_mos_and_its_leaves_carry_their_windows_dimension_means():
    from sklearn.ensemble import ExtraTreesRegressor

    from train.forest import MAX_FEATURES, MIN_SAMPLES_LEAF, fit_forest

    x, mos, dims = training_data(300, 0)
    forest = fit_forest(x, NAMES, mos, dims, seed=0, trees=20)
    assert forest.outputs == OUTPUTS
    settings = {"min_samples_leaf": MIN_SAMPLES_LEAF, "max_features": MAX_FEATURES, "random_state": 0}
    mos_only = ExtraTreesRegressor(20, **settings).fit(signal_transform(x), mos)
    unseen, unseen_mos, _ = training_data(200, 1)
    got = forest.predict(unseen, NAMES)
    np.testing.assert_allclose(got[:, 0], mos_only.predict(signal_transform(unseen)), atol=1e-3)
    # a window the forest trained on lands, in every tree, in a leaf whose dimension value is a mean of labels
    # that include its own; over 20 trees that tracks the labels (a forest of random leaves would not)
    on_train = forest.predict(x, NAMES)[:, 1:]
    assert np.corrcoef(on_train[:, 1], dims[:, 1])[0, 1] > 0.5
    assert np.all((on_train >= dims.min(0) - 1e-3) & (on_train <= dims.max(0) + 1e-3))
    # the MOS alone chose the splits: its fit on unseen windows is not worse than a forest splitting on all seven
    both = ExtraTreesRegressor(20, **settings).fit(signal_transform(x), np.column_stack([mos, dims]))
    err = lambda pred: float(np.mean(np.abs(pred - unseen_mos)))  # noqa: E731
    assert err(got[:, 0]) <= err(both.predict(signal_transform(unseen))[:, 0]) + 0.5


def test_the_forest_reads_its_inputs_by_name_wherever_they_sit(fitted):
    _, forest = fitted
    x, _, _ = training_data(10, 2)
    layout = ["window.extra", *reversed(NAMES), "other"]
    wide = np.zeros((10, len(layout)), np.float32)
    for j, n in enumerate(NAMES):
        wide[:, layout.index(n)] = x[:, j]
    np.testing.assert_array_equal(forest.predict(wide, layout), forest.predict(x, NAMES))
    with pytest.raises(ValueError, match="lacks: sig3"):
        forest.predict(x[:, :3], NAMES[:3] + ["a", "b", "c"])
    with pytest.raises(ValueError, match=r"expected \(N, 6\)"):
        forest.predict_features(x[:, :4])
    assert forest.predict(x[:0], NAMES).shape == (0, len(OUTPUTS))


def test_file_round_trip_and_refusals(fitted, tmp_path):
    _, forest = fitted
    x, _, _ = training_data(50, 3)
    path = forest.save(tmp_path / "forest.npz")
    loaded = SignalForest.load(path)
    assert loaded.inputs == tuple(NAMES) and loaded.nodes == forest.nodes
    np.testing.assert_allclose(loaded.predict(x, NAMES), forest.predict(x, NAMES), atol=0.05)  # float16 leaves
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="junk.npz is not a signal forest file"):
        SignalForest.load(tmp_path / "junk.npz")
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    np.savez(tmp_path / "future.npz", **{**arrays, "version": np.array(99)})
    with pytest.raises(ValueError, match="version 99"):
        SignalForest.load(tmp_path / "future.npz")
    bad = {**arrays, "left": np.full_like(arrays["left"], 10**6)}
    np.savez(tmp_path / "bad.npz", **bad)
    with pytest.raises(ValueError, match="child index points outside"):
        SignalForest.load(tmp_path / "bad.npz")


def test_blend_weights_and_the_manifest_entry(fitted, tmp_path):
    _, forest = fitted
    x, _, _ = training_data(8, 4)
    model = np.linspace(0, 100, 8)
    prior_mos = forest.predict(x, NAMES)[:, 0]
    np.testing.assert_allclose(ScorePrior(forest, 0.0).blend(model, x, NAMES), np.clip(prior_mos, 0, 100), atol=1e-4)
    np.testing.assert_allclose(ScorePrior(forest, 1.0).blend(model, x, NAMES), model)
    np.testing.assert_allclose(ScorePrior(forest, 0.25).blend(model, x, NAMES), 0.75 * prior_mos + 0.25 * model,
                               atol=1e-4)
    model_dims = np.full((8, 6), 50.0)
    scores, dims = ScorePrior(forest, 0.5).blend_outputs(model, model_dims, x, NAMES)
    np.testing.assert_allclose(dims, 0.5 * forest.predict(x, NAMES)[:, 1:] + 25.0, atol=1e-4)
    np.testing.assert_allclose(scores, 0.5 * prior_mos + 0.5 * model, atol=1e-4)
    with pytest.raises(ValueError, match="within 0..1"):
        ScorePrior(forest, 1.5)
    assert ScorePrior.from_manifest(tmp_path, {"model": {}}) is None
    with pytest.raises(FileNotFoundError, match="forest.npz, which is missing"):
        ScorePrior.from_manifest(tmp_path, {"prior": {"file": "forest.npz", "model_weight": 0.5}})
    forest.save(tmp_path / "forest.npz")
    prior = ScorePrior.from_manifest(tmp_path, json.loads('{"prior": {"file": "forest.npz", "model_weight": 0.5}}'))
    assert prior is not None and prior.model_weight == 0.5 and prior.forest.trees == forest.trees
