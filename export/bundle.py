"""The bundle format's old import path: the format lives in engines/bundle.py (serving reads it, export writes it).

Kept only for stream/cli.py, which imports BundleError from here; new code imports engines.bundle.
"""

from engines.bundle import (
    BundleError,
    file_entry,
    publish_staged,
    read_manifest,
    verify_bundle,
    write_manifest,
)

__all__ = ["BundleError", "file_entry", "publish_staged", "read_manifest", "verify_bundle", "write_manifest"]
