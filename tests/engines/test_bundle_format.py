"""The bundle format's one home (engines/bundle.py): which rater a manifest needs, and manifests written through it."""

from __future__ import annotations

import json

import pytest

from engines.bundle import (
    MANIFEST,
    BundleError,
    file_entries,
    learned_heads,
    precision_entry,
    rater_kind,
    read_manifest,
    save_manifest,
    update_manifest,
    verify_bundle,
)
from engines.load import load_rater


def test_each_format_names_its_rater(tmp_path):
    assert rater_kind(tmp_path, {"format_version": 1}) == "torch"  # a training bundle
    assert rater_kind(tmp_path, {"format_version": 2, "rater": {"runtime": "onnxruntime"}}) == "onnx"
    assert rater_kind(tmp_path, {"format_version": 2, "rater": {"runtime": "tensorrt"}}) == "onnx"
    assert rater_kind(tmp_path, {"format_version": 2, "rater": {"runtime": "torch"}}) == "torch"  # exported full
    with pytest.raises(ValueError, match="unsupported format_version 3"):
        rater_kind(tmp_path, {"format_version": 3})


def test_load_rater_refuses_a_folder_without_a_manifest_or_with_an_unknown_version(tmp_path):
    with pytest.raises(FileNotFoundError, match=f"no {MANIFEST}"):
        load_rater(tmp_path)
    (tmp_path / MANIFEST).write_text(json.dumps({"format_version": 7}))
    with pytest.raises(ValueError, match="unsupported format_version 7"):
        load_rater(tmp_path)


def test_manifest_readers_name_what_is_missing():
    manifest = {"precisions": {"fp32": {"rater": "rater.onnx"}}, "dimensions": {"learned_heads": ["blur"]}}
    assert precision_entry("b", manifest, "fp32") == {"rater": "rater.onnx"}
    with pytest.raises(ValueError, match="has no precision 'int8'; it has fp32"):
        precision_entry("b", manifest, "int8")
    assert learned_heads(manifest) == ("blur",) and learned_heads({}) == () and learned_heads(None) == ()


def test_a_training_manifest_and_its_later_updates_keep_the_files_verified(tmp_path):
    (tmp_path / "model.safetensors").write_bytes(b"weights" * 10)
    (tmp_path / "forest.npz").write_bytes(b"forest")
    written = save_manifest(tmp_path, {"format_version": 1, "inputs": {},
                                       "files": file_entries([tmp_path / "model.safetensors", tmp_path / "forest.npz"])})
    assert (tmp_path / MANIFEST).read_text() == json.dumps(written, indent=2) + "\n"  # the bytes train.fit wrote
    assert not (tmp_path / (MANIFEST + ".tmp")).exists()
    update_manifest(tmp_path, eval={"table": {"srcc": 0.9}})
    after = verify_bundle(tmp_path)
    assert after["eval"] == {"table": {"srcc": 0.9}} and list(after)[:3] == ["format_version", "inputs", "files"]
    (tmp_path / "forest.npz").write_bytes(b"FOREST")  # a replaced forest must be re-hashed, or the bundle is refused
    with pytest.raises(BundleError, match="forest.npz does not match"):
        verify_bundle(tmp_path)
    update_manifest(tmp_path, files={**read_manifest(tmp_path)["files"], **file_entries([tmp_path / "forest.npz"])})
    verify_bundle(tmp_path)
