"""The bundle format: a folder with manifest.json and the model files; how it is written, read and verified.

The one home of the format: train.fit writes training bundles and export writes exported ones through the
writers here, and every rater reads its manifest through the readers here (engines.load picks the rater).

Format versions:
- 1: a training bundle (`python -m train.fit`): rater_config.json, model.safetensors (LoRA merged),
  tokenizer.json, run by the torch FVQRater.
- 2: an exported bundle (`fvq export`): version 1's files plus ONNX graphs of the frame encoder and the
  rater at each precision, the runtimes and precisions they run on, their input shapes, the eval table
  and which runtime/precision the live path uses (`rater`).

Every file the manifest lists carries its sha256 and size; `verify_bundle` refuses a bundle whose files do
not match, or whose format version it does not know, naming the file or the version.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from engines.base import file_sha256

MANIFEST = "manifest.json"
MAX_MANIFEST_BYTES = 1 << 20  # a manifest is a few KB; a larger one is refused before it is parsed
MAX_MANIFEST_DEPTH = 16  # nesting of objects and lists
TRAINING_FORMAT = 1  # python -m train.fit: the torch rater's files
EXPORTED_FORMAT = 2  # fvq export: ONNX graphs (or merged torch weights) at precisions, with the runtime chosen
FORMAT_VERSION = EXPORTED_FORMAT  # what write_manifest writes
KNOWN_VERSIONS = (TRAINING_FORMAT, EXPORTED_FORMAT)
BUNDLE_ENV = "FVQ_BUNDLE"  # a bundle folder that replaces the shipped one when no --bundle (nor config `bundle`) is given


def shipped_bundle() -> Path:
    """The default bundle that ships inside the package (package data, engines/bundles/default): the one place
    that knows where it lies, so that it is found from any working directory and from an installed wheel."""
    return Path(__file__).resolve().parent / "bundles" / "default"


def default_bundle() -> Path:
    """The bundle `fvq serve` and `fvq score` load when neither --bundle nor the config's `bundle` names one:
    the folder in $FVQ_BUNDLE when it is set, else the shipped one."""
    override = os.environ.get(BUNDLE_ENV)
    return Path(override).expanduser() if override else shipped_bundle()


def bundle_to_load(configured: Path | None) -> Path | None:
    """The bundle folder to load: the one configured (--bundle, the config's `bundle`), else default_bundle().
    FileNotFoundError when a named folder has no manifest; None when the shipped one is absent (signals only)."""
    bundle = Path(configured) if configured is not None else default_bundle()
    if has_manifest(bundle):
        return bundle
    if configured is None and bundle == shipped_bundle():
        return None
    named = "" if configured is not None else f" (${BUNDLE_ENV})"
    raise FileNotFoundError(f"model bundle {bundle}{named} has no {MANIFEST}")


def bundle_label(configured: Path | None) -> str:
    """What fvq_build's `bundle` label says: the configured folder, else $FVQ_BUNDLE's, else "default"."""
    return str(configured or os.environ.get(BUNDLE_ENV) or "default")


DEFAULT_BUNDLE = shipped_bundle()  # kept for callers that read the constant; new code calls the functions above


class BundleError(ValueError):
    """A bundle that must not be used; the message says which file or field is wrong and what to do."""


def file_entry(path: Path) -> dict[str, Any]:
    """A manifest's record of one file: its sha256 and size."""
    path = Path(path)
    return {"sha256": file_sha256(path), "bytes": path.stat().st_size}


def file_entries(paths: list[Path]) -> dict[str, dict[str, Any]]:
    """The manifest's "files": each file's name (inside the bundle folder) -> its file_entry, in the order given."""
    return {Path(p).name: file_entry(p) for p in paths}


def has_manifest(bundle_dir: Path) -> bool:
    return (Path(bundle_dir) / MANIFEST).is_file()


def read_manifest(bundle_dir: Path) -> dict[str, Any]:
    path = Path(bundle_dir) / MANIFEST
    if not path.is_file():
        raise BundleError(f"{bundle_dir} is not a bundle: it has no {MANIFEST}")
    _inside(Path(bundle_dir), path, MANIFEST)
    size = path.stat().st_size
    if size > MAX_MANIFEST_BYTES:
        raise BundleError(f"{path} has {size} bytes, more than a manifest may ({MAX_MANIFEST_BYTES}): refused")
    try:
        manifest = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BundleError(f"{path} is not valid JSON ({exc}): the bundle is damaged, export or copy it again") from exc
    except RecursionError:
        raise BundleError(f"{path} is nested deeper than {MAX_MANIFEST_DEPTH} levels: refused") from None
    if not isinstance(manifest, dict):
        raise BundleError(f"{path} is not a JSON object")
    if _depth(manifest) > MAX_MANIFEST_DEPTH:
        raise BundleError(f"{path} is nested deeper than {MAX_MANIFEST_DEPTH} levels: refused")
    return manifest


def _depth(value: Any) -> int:
    """Nesting depth of a JSON value, without recursion."""
    deepest, todo = 0, [(value, 1)]
    while todo:
        item, depth = todo.pop()
        if isinstance(item, dict | list):
            deepest = max(deepest, depth)
            if depth <= MAX_MANIFEST_DEPTH:
                todo.extend((child, depth + 1) for child in (item.values() if isinstance(item, dict) else item))
    return deepest


def _inside(bundle_dir: Path, path: Path, name: str) -> None:
    """Refuses a bundle file that is (or goes through) a symlink leading out of the bundle folder."""
    root = bundle_dir.resolve()
    if not path.resolve().is_relative_to(root):
        raise BundleError(f"bundle file {name!r} in {bundle_dir} resolves to {path.resolve()}, outside the bundle "
                          "folder (a symlink?): refused")


def check_format(bundle_dir: Path, manifest: dict[str, Any]) -> int:
    """The manifest's format version; BundleError when this fvq-live does not know it."""
    version = manifest.get("format_version")
    if version not in KNOWN_VERSIONS:
        raise BundleError(
            f"{Path(bundle_dir) / MANIFEST}: unknown format_version {version!r}; this fvq-live reads "
            f"{', '.join(map(str, KNOWN_VERSIONS))} (upgrade fvq-live, or export the bundle again with this one)"
        )
    return version


def verify_bundle(bundle_dir: Path) -> dict[str, Any]:
    """The bundle's manifest, after checking its format version and every listed file's size and sha256.

    Raises BundleError naming the first problem: an unknown format version, a file that is missing, or one
    whose content differs from what the manifest recorded (a partial copy, a tampered or replaced file)."""
    bundle_dir = Path(bundle_dir)
    manifest = read_manifest(bundle_dir)
    version = check_format(bundle_dir, manifest)
    files = manifest.get("files")
    if not isinstance(files, dict) or not files:
        raise BundleError(f"{bundle_dir / MANIFEST} lists no files: it cannot be verified")
    for name, entry in files.items():
        path = bundle_dir / name
        if Path(name).is_absolute() or ".." in Path(name).parts:
            raise BundleError(f"{bundle_dir / MANIFEST}: file name {name!r} points outside the bundle")
        if not isinstance(entry, dict) or not isinstance(entry.get("sha256"), str) or not isinstance(
                entry.get("bytes", 0), int):
            raise BundleError(f"{bundle_dir / MANIFEST}: files[{name!r}] must be an object with a \"sha256\" "
                              f"string and a \"bytes\" integer, not {type(entry).__name__} {str(entry)[:40]!r}")
        if path.exists():
            _inside(bundle_dir, path, name)
        if not path.is_file():
            raise BundleError(f"bundle file {path} is missing (the manifest lists it)")
        size = path.stat().st_size
        if "bytes" in entry and size != entry["bytes"]:
            raise BundleError(f"bundle file {path} has {size} bytes, the manifest says {entry['bytes']}: "
                              "it was changed or copied partially")
        digest = file_sha256(path)
        if digest != entry.get("sha256"):
            raise BundleError(f"bundle file {path} does not match the manifest (sha256 {digest[:16]}..., "
                              f"expected {str(entry.get('sha256'))[:16]}...): it was changed after export")
    if version == EXPORTED_FORMAT:
        precisions = manifest.get("precisions", {})
        if not isinstance(precisions, dict) or not all(isinstance(g, dict) for g in precisions.values()):
            raise BundleError(f"{bundle_dir / MANIFEST}: \"precisions\" must map each precision to an object "
                              "of graph file names")
        for precision, graphs in precisions.items():
            for graph, name in graphs.items():
                if name not in files:
                    raise BundleError(f"{bundle_dir / MANIFEST}: precision {precision} names {name} for the "
                                      f"{graph} graph, which the files list does not hash")
    return manifest


def save_manifest(bundle_dir: Path, manifest: dict[str, Any]) -> dict[str, Any]:
    """Writes manifest.json as it is given (indented JSON), through a temporary file, so a reader never sees half
    of one; returns the manifest."""
    bundle_dir = Path(bundle_dir)
    tmp = bundle_dir / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=2) + "\n")
    tmp.replace(bundle_dir / MANIFEST)
    return manifest


def update_manifest(bundle_dir: Path, **entries: Any) -> dict[str, Any]:
    """Sets top-level entries of a bundle's manifest (a training run's later findings: dimension heads, the eval
    table) and writes it back; returns the manifest."""
    manifest = read_manifest(bundle_dir)
    manifest.update(entries)
    return save_manifest(bundle_dir, manifest)


def write_manifest(bundle_dir: Path, manifest: dict[str, Any], file_names: list[str]) -> dict[str, Any]:
    """Hashes `file_names` into manifest["files"] and writes manifest.json (last, so a bundle with a manifest is
    complete)."""
    bundle_dir = Path(bundle_dir)
    manifest = dict(manifest)
    manifest["format_version"] = FORMAT_VERSION
    manifest["files"] = {name: file_entry(bundle_dir / name) for name in sorted(file_names)}
    return save_manifest(bundle_dir, manifest)


def publish_staged(staging: Path, out: Path, manifest: dict[str, Any], file_names) -> None:
    """Writes the staged bundle's manifest, verifies it, and only then puts it in place of `out` (the old folder is
    kept aside until the new one is there), so a failed export never leaves a half-written bundle at `out`."""
    write_manifest(staging, manifest, file_names)
    verify_bundle(staging)
    if staging != out:
        swap_in(staging, out, ".export-old")


def swap_in(staging: Path, out: Path, aside: str) -> None:
    """Puts a verified staged bundle folder in place of `out`: an existing `out` goes aside (its name + `aside`)
    until the new one is there, then is removed, so a reader never finds a half-written bundle at `out`."""
    if out.exists():
        backup = out.parent / (out.name + aside)
        out.rename(backup)
        staging.rename(out)
        shutil.rmtree(backup)
    else:
        staging.rename(out)


# ---------------------------------------------------------------------------------------------
# Reading: what a rater takes from a manifest
# ---------------------------------------------------------------------------------------------


def rater_kind(bundle_dir: Path, manifest: dict[str, Any]) -> str:
    """Which rater runs the bundle: "torch" (a training bundle, or an exported `full` one with merged weights
    applied at a precision) or "onnx" (exported graphs on a registry runtime)."""
    version = manifest.get("format_version")
    if version == EXPORTED_FORMAT:
        return "torch" if (manifest.get("rater") or {}).get("runtime") == "torch" else "onnx"
    if version != TRAINING_FORMAT:
        raise ValueError(f"{Path(bundle_dir) / MANIFEST}: unsupported format_version {version!r} (expected 1)")
    return "torch"


def is_exported(manifest: dict[str, Any] | None) -> bool:
    return bool(manifest) and manifest.get("format_version") == EXPORTED_FORMAT  # type: ignore[union-attr]


def default_rater(manifest: dict[str, Any]) -> dict[str, Any]:
    """The runtime and precision an exported bundle serves with (manifest "rater"); {} when it names none."""
    return manifest.get("rater") or {}


def precision_entry(bundle_dir: Path, manifest: dict[str, Any], precision: str) -> Any:
    """What an exported bundle records for one of its precisions (the graph files, for ONNX); ValueError naming
    the precisions it has when it lacks this one."""
    known = manifest.get("precisions", {})
    if precision not in known:
        raise ValueError(f"bundle {bundle_dir} has no precision {precision!r}; it has {', '.join(sorted(known))}")
    return known[precision]


def learned_heads(manifest: dict[str, Any] | None) -> tuple[str, ...]:
    """Dimensions whose published score is the learned head's (manifest "dimensions", decided in training)."""
    return tuple(((manifest or {}).get("dimensions") or {}).get("learned_heads", ()))


def rates_dimensions(manifest: dict[str, Any] | None) -> bool:
    return bool(((manifest or {}).get("model") or {}).get("rates_dimensions", False))


def model_family(manifest: dict[str, Any] | None) -> str | None:
    """The base model family the manifest records, or None (manifests that predate the record)."""
    return ((manifest or {}).get("model") or {}).get("family") or None


def prior_entry(manifest: dict[str, Any] | None) -> dict[str, Any] | None:
    """The signal-forest prior's entry (file, model_weight), or None when the bundle has none."""
    return (manifest or {}).get("prior") or None


__all__ = ["BUNDLE_ENV", "DEFAULT_BUNDLE", "EXPORTED_FORMAT", "FORMAT_VERSION", "KNOWN_VERSIONS", "MANIFEST", "TRAINING_FORMAT",
           "BundleError", "bundle_label", "bundle_to_load", "check_format", "default_bundle", "default_rater", "file_entries", "file_entry", "file_sha256", "has_manifest",
           "is_exported", "learned_heads", "model_family", "precision_entry", "prior_entry", "publish_staged", "rater_kind", "swap_in",
           "rates_dimensions", "read_manifest", "save_manifest", "shipped_bundle", "update_manifest", "verify_bundle",
           "write_manifest"]
