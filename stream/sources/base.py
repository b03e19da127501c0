"""What a source type states about itself: the URLs it takes, how it is opened, and how it lives and ends."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import ParseResult

OPEN_TIMEOUT_S = (10.0, 10.0)  # (open, read) seconds for a network source


@dataclass(frozen=True)
class SourceType:
    """One kind of source. The config, the decoder and the monitor read these facts instead of testing kinds."""

    kind: str
    schemes: tuple[str, ...] = ()  # URL schemes inferred as this kind (none: only when `kind` names it)
    listen: bool = False  # inferred for sources with `listen: true` (else for those without)
    claims: Callable[[ParseResult], bool] | None = None  # a further test on a URL whose scheme fits
    ends: bool = False  # the input has an end (a file): it finishes there or loops; others are live and reconnect
    pushed: bool = False  # frames are pushed in (WHIP): no reader pulls them
    rtmp_listener: bool = False  # the monitor's own nginx-rtmp takes the publisher; the stream is played from it
    stream_per_key: bool = False  # holds no stream of its own: every key published to it becomes one
    waits_for_publisher: bool = False  # opening waits a while for a publisher, then asks again (not an error)
    open_timeout: tuple[float, float] | None = OPEN_TIMEOUT_S  # PyAV's (open, read) timeouts; None: no timeout
    scheme_options: dict[str, dict[str, str]] = field(default_factory=dict)  # URL prefix -> default ffmpeg options
    takes_allow_keys: bool = False  # `allow_keys` applies
    takes_publish_tokens: bool = False  # `publish_tokens` applies

    def takes(self, url: ParseResult, listen: bool) -> bool:
        """Whether a source with this URL (and `listen` flag) is of this kind when its config names no kind."""
        if url.scheme.lower() not in self.schemes or listen != self.listen:
            return False
        return self.claims is None or self.claims(url)

    def input_options(self, url: str) -> dict[str, str]:
        """The ffmpeg options this kind opens `url` with before the source's own `options`."""
        for prefix, options in self.scheme_options.items():
            if url.startswith(prefix):
                return dict(options)
        return {}
