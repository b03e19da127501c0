"""Loads the rater a bundle folder describes: the one place that picks a Rater implementation from a manifest."""

from __future__ import annotations

from pathlib import Path

from engines.bundle import MANIFEST, has_manifest, is_exported, rater_kind, read_manifest
from engines.rater import Rater


def load_rater(bundle_dir: Path, device: str = "cpu") -> Rater:
    """Loads the rater a bundle folder describes (manifest.json names the model size and files): the torch
    FVQRater for a training bundle or an exported `full` one (merged weights applied at a precision), the ONNX
    rater for exported graphs."""
    bundle_dir = Path(bundle_dir)
    if not has_manifest(bundle_dir):
        raise FileNotFoundError(
            f"{bundle_dir} is not a rater bundle: it has no {MANIFEST} (train one with `python -m train.fit`)"
        )
    manifest = read_manifest(bundle_dir)
    kind = rater_kind(bundle_dir, manifest)
    if kind == "onnx":
        from engines.onnx_rater import load_exported_rater

        return load_exported_rater(bundle_dir, device=device)
    from engines.fvq_rater import FVQRater, load_torch_bundle

    if is_exported(manifest):
        return load_torch_bundle(bundle_dir, manifest, device=device)
    return FVQRater.load(bundle_dir, manifest=manifest, device=device)


def check_rater_importable(bundle_dir: Path) -> None:
    """Before workers start: ModuleNotFoundError (named) when the bundle's rater needs a module this install lacks
    (torch, for a training bundle or a torch-runtime one: the train extra), without importing anything heavy."""
    import importlib.util

    bundle_dir = Path(bundle_dir)
    if rater_kind(bundle_dir, read_manifest(bundle_dir)) == "torch" and importlib.util.find_spec("torch") is None:
        raise ModuleNotFoundError(f"the rater of {bundle_dir} runs on torch, which is not installed", name="torch")


__all__ = ["check_rater_importable", "load_rater"]
