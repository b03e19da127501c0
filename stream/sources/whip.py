"""WHIP (WebRTC ingest, stream/ingest/whip.py): frames are pushed in by a peer; never inferred from a URL."""

from stream.sources.base import SourceType

SOURCE = SourceType(kind="whip", pushed=True)
