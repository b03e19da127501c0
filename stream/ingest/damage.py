"""Decoder damage: the error lines FFmpeg logs while it decodes one stream, captured on the stream's reader thread."""

from __future__ import annotations

import logging
import threading

import av
import av.logging

_setup = threading.Lock()
_ready = False


def route_decoder_errors() -> None:
    """Makes FFmpeg's error lines reach PyAV's per-thread captures, once per process: the error level on (PyAV
    leaves FFmpeg's log off), every line passed on rather than folding repeats into one (each counts), and lines
    from threads that capture nothing kept out of the log unless the operator configured the `libav` logger."""
    global _ready
    with _setup:
        if _ready:
            return
        if av.logging.get_level() is None:
            av.logging.set_level(av.logging.ERROR)
        av.logging.set_skip_repeated(False)
        libav = logging.getLogger("libav")
        if libav.level == logging.WARNING and not libav.handlers:  # PyAV's own default: nobody configured it
            libav.setLevel(logging.CRITICAL)  # the streams count their decoders' errors and log them, rate-limited
        _ready = True


class DecoderErrors:
    """Collects the error lines FFmpeg logs on this thread while a stream is read (a context manager; enter it on
    the reader thread). `take(names)` returns how many came from the named contexts (the decoder, the demuxer)
    since the last call, and the last one's text; lines from other contexts (the network, the scaler) are dropped."""

    def __init__(self) -> None:
        route_decoder_errors()
        self._capture = av.logging.Capture(local=True)
        self._logs: list = []

    def __enter__(self) -> DecoderErrors:
        self._logs = self._capture.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self._capture.__exit__(*exc)

    def take(self, names: frozenset[str]) -> tuple[int, str | None]:
        if not self._logs:
            return 0, None
        count, last = 0, None
        for level, name, message in self._logs:
            if level <= av.logging.ERROR and name in names:
                count += 1
                last = f"{name}: {message.strip()}"
        self._logs.clear()
        return count, last
