"""RTMP listen for an app (rtmp://HOST:PORT/APP, `listen: true`): every key published to it becomes a stream."""

from stream.sources.base import SourceType
from stream.sources.rtmp_listen import _app_only

SOURCE = SourceType(kind="rtmp_server", schemes=("rtmp",), listen=True, claims=_app_only, rtmp_listener=True,
                    stream_per_key=True, takes_allow_keys=True, takes_publish_tokens=True)
