"""Bundles are refused at start-up when a file does not match the manifest or the format version is unknown."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from engines.bundle import BundleError, verify_bundle, write_manifest


def small_bundle(tmp_path: Path) -> Path:
    d = tmp_path / "bundle"
    d.mkdir()
    (d / "rater.onnx").write_bytes(b"graph" * 100)
    (d / "encoder.onnx").write_bytes(b"encoder" * 100)
    write_manifest(d, {"precisions": {"fp32": {"encoder": "encoder.onnx", "rater": "rater.onnx"}}},
                   ["encoder.onnx", "rater.onnx"])
    return d


def test_a_matching_bundle_verifies(tmp_path):
    manifest = verify_bundle(small_bundle(tmp_path))
    assert manifest["format_version"] == 2 and set(manifest["files"]) == {"encoder.onnx", "rater.onnx"}


def test_a_tampered_file_is_refused_naming_the_file(tmp_path):
    d = small_bundle(tmp_path)
    data = bytearray((d / "rater.onnx").read_bytes())
    data[10] ^= 1  # same size, different content
    (d / "rater.onnx").write_bytes(bytes(data))
    with pytest.raises(BundleError, match=r"rater\.onnx does not match the manifest"):
        verify_bundle(d)


def test_a_missing_or_truncated_file_is_refused(tmp_path):
    d = small_bundle(tmp_path)
    (d / "encoder.onnx").write_bytes(b"short")
    with pytest.raises(BundleError, match=r"encoder\.onnx has 5 bytes"):
        verify_bundle(d)
    (d / "encoder.onnx").unlink()
    with pytest.raises(BundleError, match=r"encoder\.onnx is missing"):
        verify_bundle(d)


def test_an_unknown_format_version_is_refused(tmp_path):
    d = small_bundle(tmp_path)
    manifest = json.loads((d / "manifest.json").read_text())
    manifest["format_version"] = 99
    (d / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="unknown format_version 99"):
        verify_bundle(d)


def test_fvq_score_refuses_a_tampered_exported_bundle_with_the_reason(exported, tmp_path, capsys):
    from fvq.cli import main

    d = tmp_path / "tampered"
    shutil.copytree(exported, d)
    with open(d / "rater.int8.onnx", "ab") as f:
        f.write(b"\0")
    rc = main(["score", "--bundle", str(d), "/nonexistent.mp4"])
    assert rc == 2
    err = capsys.readouterr().err
    assert "refusing the model bundle" in err and "rater.int8.onnx" in err
