"""Why a stream is refused when it is added: its name taken, the stream cap reached, no worker to take it."""

from __future__ import annotations


class StreamLimitError(RuntimeError):
    """The monitor holds as many streams as `limits.max_streams` allows."""


class StreamExistsError(RuntimeError):
    """A stream of that name is already being watched."""


class NoWorkerError(RuntimeError):
    """No worker answers: nothing can take a stream now."""


class StreamPlacedError(RuntimeError):
    """A stream of that name is already placed."""


class WorkerRefusedError(RuntimeError):
    """The worker refused the stream's source; the message is its reason."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


class StreamCapError(RuntimeError):
    """`limits.max_streams` streams are placed already."""


def not_a_regular_file(source) -> str | None:
    """Why a file source's path cannot be opened without blocking (a FIFO, a device, a socket), else None. A
    missing path or a URL is not judged here: the reader reports those."""
    import os
    import stat

    from stream.sources import source_type

    if not source_type(source.kind).ends:
        return None
    path = source.url[len("file:"):] if source.url.startswith("file:") else source.url
    if "://" in path and not path.startswith("///"):
        return None
    path = path[2:] if path.startswith("///") else path
    try:
        mode = os.stat(path).st_mode
    except (OSError, ValueError):
        return None
    if stat.S_ISREG(mode) or stat.S_ISDIR(mode):
        return None
    what = "a FIFO" if stat.S_ISFIFO(mode) else "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else \
        "a socket" if stat.S_ISSOCK(mode) else "not a regular file"
    return f"{source.url}: is {what}, not a regular file (opening it would block); give a file or a stream URL"
