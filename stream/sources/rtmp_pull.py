"""RTMP pull (rtmp://, rtmps://): the monitor plays a stream from an RTMP server and reconnects when it drops."""

from stream.sources.base import SourceType

SOURCE = SourceType(kind="rtmp_pull", schemes=("rtmp", "rtmps"))
