"""The bounded queue between a decoder thread and the analysis loop, with a named drop policy."""

from __future__ import annotations

import collections
import threading
from collections.abc import Callable

from engines.features import FrameRecord
from stream.config import DropPolicy

END = None  # put on the queue when a source ends; the windows of its stream are then flushed


class FrameQueue:
    """Frames from one stream. `wait` blocks the producer; `drop_oldest`/`latest_only` never block it.

    Every frame dropped is reported through `on_drop(reason)` so it can be counted.
    """

    def __init__(self, maxlen: int, policy: DropPolicy, on_drop: Callable[[str], None] | None = None) -> None:
        self.maxlen = 1 if policy == DropPolicy.latest_only else maxlen
        self.policy = policy
        self._items: collections.deque[FrameRecord | None] = collections.deque()
        self._cond = threading.Condition()
        self._closed = False
        self._on_drop = on_drop or (lambda reason: None)

    def put(self, item: FrameRecord | None, timeout: float | None = None) -> bool:
        """Queues a frame (or END). Returns False when the queue was closed by the consumer."""
        with self._cond:
            if self._closed:
                return False
            if item is END:
                self._items.append(item)
                self._cond.notify_all()
                return True
            if self.policy == DropPolicy.wait:
                while len(self._items) >= self.maxlen and not self._closed:
                    if not self._cond.wait(timeout=0.5 if timeout is None else timeout) and timeout is not None:
                        self._on_drop("queue_timeout")
                        return True
                if self._closed:
                    return False
            else:
                while len(self._items) >= self.maxlen:
                    dropped = self._items.popleft()
                    if dropped is END:  # never lose an end marker: keep it, drop the new frame instead
                        self._items.appendleft(dropped)
                        self._on_drop("queue_full")
                        return True
                    self._on_drop("queue_full")
            self._items.append(item)
            self._cond.notify_all()
            return True

    def drain(self) -> list[FrameRecord | None]:
        """Everything queued now, oldest first (END included where a source ended)."""
        with self._cond:
            items = list(self._items)
            self._items.clear()
            self._cond.notify_all()
            return items

    def __len__(self) -> int:
        return len(self._items)

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._items.clear()
            self._cond.notify_all()
