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
