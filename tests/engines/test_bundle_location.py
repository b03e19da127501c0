"""Where the default bundle lies (inside the package, as package data) and what replaces it: --bundle, FVQ_BUNDLE."""

from __future__ import annotations

import fnmatch
import tomllib
from pathlib import Path

import pytest

import engines
from engines.bundle import (
    BUNDLE_ENV,
    bundle_label,
    bundle_to_load,
    default_bundle,
    read_manifest,
    shipped_bundle,
    verify_bundle,
)

ROOT = Path(__file__).resolve().parents[2]


def test_the_shipped_bundle_lies_inside_the_package_and_the_wheel_carries_every_file_it_lists():
    bundle = shipped_bundle()
    package = Path(engines.__file__).resolve().parent
    assert bundle.is_relative_to(package)
    verify_bundle(bundle)
    patterns = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["engines"]
    listed = ["manifest.json", *read_manifest(bundle)["files"]]
    for name in listed:
        rel = (bundle / name).relative_to(package).as_posix()
        assert any(fnmatch.fnmatch(rel, p) for p in patterns), f"{rel} would be left out of the wheel"


def test_fvq_bundle_replaces_the_default_and_a_named_folder_must_hold_a_bundle(monkeypatch, tmp_path):
    monkeypatch.delenv(BUNDLE_ENV, raising=False)
    assert default_bundle() == shipped_bundle() and bundle_to_load(None) == shipped_bundle()
    assert bundle_label(None) == "default"
    monkeypatch.setenv(BUNDLE_ENV, str(tmp_path))
    assert default_bundle() == tmp_path and bundle_label(None) == str(tmp_path)
    with pytest.raises(FileNotFoundError, match=rf"{tmp_path} \(\$FVQ_BUNDLE\) has no manifest.json"):
        bundle_to_load(None)
    # --bundle (or the config's `bundle`) wins over the environment
    assert bundle_to_load(shipped_bundle()) == shipped_bundle()
    with pytest.raises(FileNotFoundError, match=rf"model bundle {tmp_path / 'x'} has no manifest.json"):
        bundle_to_load(tmp_path / "x")
