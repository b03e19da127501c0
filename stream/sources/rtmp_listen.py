"""RTMP listen for one key (rtmp://HOST:PORT/APP/KEY, `listen: true`): a publisher pushes to the monitor."""

from urllib.parse import ParseResult

from stream.sources.base import SourceType
from stream.sources.rtmp_server import is_app_url

LISTEN_WAIT_S = 3.0  # a listen source waits this long for its publisher per attempt, then asks again


def _has_key(url: ParseResult) -> bool:
    return not is_app_url(url)  # an app without a key is the rtmp_server kind


SOURCE = SourceType(kind="rtmp_listen", schemes=("rtmp", "rtmps"), listen=True, claims=_has_key,
                    rtmp_listener=True, waits_for_publisher=True, open_timeout=(LISTEN_WAIT_S, 10.0),
                    takes_publish_tokens=True)
