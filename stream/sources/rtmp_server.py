"""RTMP listen for an app (rtmp://HOST:PORT/APP, `listen: true`): every key published to it becomes a stream."""

from urllib.parse import ParseResult

from stream.sources.base import SourceType


def is_app_url(url: ParseResult) -> bool:
    """rtmp://HOST:PORT/APP (no key): an app that takes any number of publishers."""
    return url.scheme.lower() == "rtmp" and len([p for p in url.path.split("/") if p]) == 1


SOURCE = SourceType(kind="rtmp_server", schemes=("rtmp",), listen=True, claims=is_app_url, rtmp_listener=True,
                    stream_per_key=True, takes_allow_keys=True, takes_publish_tokens=True)
