"""A forest-only refit: the model files stay byte for byte, the forest and the prior entry change, the manifest
says what was refitted and on what, and a bundle replaced in place is verified before it takes the old one's place."""

from __future__ import annotations

import numpy as np

from engines.bundle import read_manifest, verify_bundle
from engines.forest import SignalForest
from train.prior import APPEARANCE_INPUTS


def _bundle(tmp_path, corpus_root):
    """A tiny bundle over the v1-style signal keys, with a forest over every input (the starting point)."""
    import argparse

    from train.bundle import write_bundle
    from train.clip_features import Dataset
    from train.fit import build_rater
    from train.prior import fit_prior
    from train.refit_forest import extract

    keys = ("face.colorfulness", "face.edge_blur_px", "frame.colorfulness", "frame.edge_blur_px", "frame.mean_luma",
            "frame.noise_sigma", "frame.saturation")
    rater = build_rater("tiny", keys, 0, None, "cpu")
    clips = extract(rater, corpus_root, tmp_path / "cache")
    names = rater.spec.signal_names()
    data = {s: Dataset.from_clips(c, names) if c else None for s, c in clips.items()}
    args = argparse.Namespace(seed=0, fold_val=False, model_weight=0.5, forest_inputs="all")
    entry, _ = fit_prior(rater, data, args, log=lambda m: None)
    write_bundle(rater, tmp_path / "b", {"seed": 0}, {}, entry)
    return tmp_path / "b"


def test_refit_replaces_only_the_forest_and_says_so(tmp_path, dozen_corpus):
    from train.refit_forest import refit

    root, _ = dozen_corpus
    bundle = _bundle(tmp_path, root)
    before = read_manifest(bundle)
    old_forest = SignalForest.load(bundle / "forest.npz")
    assert any(any(p in n for p in APPEARANCE_INPUTS) for n in old_forest.inputs)

    out = tmp_path / "refitted"
    m = refit(bundle, root, out, "quality", cache=tmp_path / "cache", log=lambda msg: None)
    verify_bundle(out)
    new_forest = SignalForest.load(out / "forest.npz")
    assert new_forest.inputs and not any(any(p in n for p in APPEARANCE_INPUTS) for n in new_forest.inputs)
    assert set(new_forest.inputs) < set(old_forest.inputs)
    for name, entry in before["files"].items():  # the model, config and tokenizer byte for byte; the forest not
        assert (m["files"][name]["sha256"] == entry["sha256"]) == (name != "forest.npz"), name
    assert m["prior"]["input_set"] == "quality" and m["prior"]["inputs"] == len(new_forest.inputs)
    refit_note = m["prior"]["refit"]
    assert refit_note["previous"]["forest_file"] == before["files"]["forest.npz"]
    assert refit_note["previous"]["prior"]["input_set"] == "all" and refit_note["corpus"]["root"] == str(root)
    assert m["model"] == before["model"] and m["calibration"] == before["calibration"]
    assert m["format_version"] == before["format_version"]

    from engines.load import load_rater

    loaded = load_rater(out)
    assert loaded.prior.forest.inputs == new_forest.inputs
    assert loaded.prior.model_weight == m["prior"]["model_weight"]
    x = np.zeros((1, len(loaded.spec.signal_names())), np.float32)
    np.testing.assert_allclose(loaded.prior.forest.predict(x, loaded.spec.signal_names()),
                               new_forest.predict(x, loaded.spec.signal_names()))

    # in place: the old folder is swapped out only after the new one verifies; the cache makes it the same fit
    again = refit(out, root, out, "quality", cache=tmp_path / "cache", log=lambda msg: None)
    verify_bundle(out)
    assert again["files"]["forest.npz"]["sha256"] == m["files"]["forest.npz"]["sha256"]
    assert not (tmp_path / "refitted.refit-staging").exists() and not (tmp_path / "refitted.refit-old").exists()


def test_a_given_model_share_is_kept_and_the_forest_still_learns_from_val(tmp_path, dozen_corpus):
    """--model-weight keeps the share train.share chose (the live path then runs no model at 0) while the forest is
    refitted on train and val as when val chooses the share; the manifest says which rule set it."""
    from engines.load import load_rater
    from train.refit_forest import refit

    root, _ = dozen_corpus
    bundle = _bundle(tmp_path, root)
    m = refit(bundle, root, tmp_path / "kept", "quality", cache=tmp_path / "cache", log=lambda msg: None,
              model_weight=0.0)
    assert m["prior"]["model_weight"] == 0.0 and m["prior"]["model_weight_rule"].startswith("given")
    assert "--model-weight 0" in m["prior"]["refit"]["command"]
    assert load_rater(tmp_path / "kept").prior.model_weight == 0.0
