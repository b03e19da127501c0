"""Files (a path or file://): read to their end, paced as if live or as fast as they decode, looped or not."""

from stream.sources.base import SourceType

SOURCE = SourceType(kind="file", schemes=("", "file"), ends=True, open_timeout=None)
