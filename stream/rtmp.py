"""RTMP: the ffmpeg options that make the monitor an RTMP server a publisher (OBS, ffmpeg) pushes to."""

from __future__ import annotations

ACCEPT_TIMEOUT_S = 2


def listen_options(accept_timeout_s: int = ACCEPT_TIMEOUT_S) -> dict[str, str]:
    """Options for `av.open("rtmp://HOST:PORT/APP/KEY", options=...)` in listen mode.

    ffmpeg's RTMP protocol then accepts one publisher on that address; when it disconnects, the reader
    listens again. Each listen stream needs its own port (or app/key on its own port). Accept gives up after
    `accept_timeout_s` without a publisher and the reader listens again, so a stopped reader frees its port.
    """
    return {"listen": "1", "timeout": str(accept_timeout_s)}
