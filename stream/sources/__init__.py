"""The registry of source types, keyed by kind: a new source type is one module here and one entry in KINDS.

Each module states its kind's facts in a `SOURCE` (stream/sources/base.py): the URL schemes it is inferred
from, how it is opened, and whether it ends, loops, reconnects or is pushed. The config (`kind`, inference,
which fields apply), the decoder and the monitor look these up instead of testing kinds one by one.
"""

from __future__ import annotations

from enum import StrEnum
from importlib import import_module
from urllib.parse import urlparse

from stream.sources.base import SourceType

# The built-in kinds, in the order the config lists them; each is the module stream/sources/<kind>.py.
KINDS = ("file", "rtmp_pull", "rtmp_listen", "pull", "whip", "rtmp_server")

_TYPES: dict[str, SourceType] = {}


def register_source(source: SourceType) -> None:
    """Adds a source type; a kind can be registered once."""
    if source.kind in _TYPES:
        raise ValueError(f"source kind {source.kind!r} is already registered")
    _TYPES[source.kind] = source


for _kind in KINDS:
    register_source(import_module(f"{__name__}.{_kind}").SOURCE)

SourceKind = StrEnum("SourceKind", [(kind, kind) for kind in _TYPES], module=__name__, qualname="SourceKind")


def source_type(kind: str) -> SourceType:
    """The facts of a source kind (a SourceKind or its name)."""
    try:
        return _TYPES[str(kind)]
    except KeyError:
        raise ValueError(f"unknown source kind {kind!r}; valid kinds: {', '.join(_TYPES)}") from None


def infer_kind(url: str, listen: bool = False) -> SourceKind:
    """The kind of a source whose config names none, from its URL's scheme (and `listen`)."""
    parsed = urlparse(url)
    for t in _TYPES.values():
        if t.takes(parsed, listen):
            return SourceKind(t.kind)
    from stream.redact import redact_url

    if listen:
        raise ValueError(f"`listen` is for rtmp:// URLs only, not {redact_url(url)!r}")
    raise ValueError(
        f"unsupported URL scheme {parsed.scheme.lower()!r} in {redact_url(url)!r}: use a file path, rtmp, rtsp, srt "
        "or http(s)"
    )
