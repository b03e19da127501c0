"""RTMP: the ffmpeg options that make the monitor an RTMP server a publisher (OBS, ffmpeg) pushes to."""

from __future__ import annotations


def listen_options(accept_timeout_s: int = -1) -> dict[str, str]:
    """Options for `av.open("rtmp://HOST:PORT/APP/KEY", options=...)` in listen mode.

    ffmpeg's RTMP protocol then accepts one publisher on that address; when it disconnects, the reader
    listens again. Each listen stream needs its own port (or app/key on its own port).
    """
    return {"listen": "1", "timeout": str(accept_timeout_s)}
