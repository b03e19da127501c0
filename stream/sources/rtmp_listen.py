"""RTMP listen for one key (rtmp://HOST:PORT/APP/KEY, `listen: true`): a publisher pushes to the monitor."""

from urllib.parse import ParseResult

from stream.sources.base import SourceType

LISTEN_WAIT_S = 3.0  # a listen source waits this long for its publisher per attempt, then asks again


def _not_an_app(url: ParseResult) -> bool:
    return not _app_only(url)


def _app_only(url: ParseResult) -> bool:
    """rtmp://HOST:PORT/APP (no key): an app that takes any number of publishers (the rtmp_server kind)."""
    return url.scheme.lower() == "rtmp" and len([p for p in url.path.split("/") if p]) == 1


SOURCE = SourceType(kind="rtmp_listen", schemes=("rtmp", "rtmps"), listen=True, claims=_not_an_app,
                    rtmp_listener=True, waits_for_publisher=True, open_timeout=(LISTEN_WAIT_S, 10.0),
                    takes_publish_tokens=True)
