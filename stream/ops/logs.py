"""Log hygiene: every line redacted of secrets, and a message repeated within a minute logged once with a count."""

from __future__ import annotations

import collections
import logging
import threading
import time

from stream.redact import redact_text

REPEAT_WINDOW_S = 60.0
MAX_KEYS = 2048  # distinct messages remembered at most (the oldest is forgotten first)


class LogHygiene(logging.Filter):
    """A handler filter: redacts URLs in the message (and in a traceback's text), and lets the same message
    (same logger, level and text) through at most once per `window_s`; the next one that passes says how many
    were held back ("... [repeated 812 times in the last 60 s]")."""

    def __init__(self, window_s: float = REPEAT_WINDOW_S, clock=time.monotonic) -> None:
        super().__init__()
        self.window_s = window_s
        self._clock = clock
        self._seen: collections.OrderedDict[tuple, list] = collections.OrderedDict()  # key -> [passed_at, held]
        self._lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            text = redact_text(record.getMessage())
        except Exception:  # a bad format string: let logging report it as it would
            return True
        # an error's own cause is part of what repeats: a different exception (type, message, where it was raised)
        # is a new message with its traceback, the same one again is held back and counted
        key = (record.name, record.levelno, text, _exception_signature(record))
        now = self._clock()
        with self._lock:
            entry = self._seen.get(key)
            if entry is not None and now - entry[0] < self.window_s:
                entry[1] += 1
                return False
            held = entry[1] if entry is not None else 0
            self._seen[key] = [now, 0]
            self._seen.move_to_end(key)
            while len(self._seen) > MAX_KEYS:
                self._seen.popitem(last=False)
        if held:
            text += f" [repeated {held} more times in the last {self.window_s:g} s]"
        record.msg, record.args = text, None
        if record.exc_info and not record.exc_text:
            record.exc_text = redact_text(logging.Formatter().formatException(record.exc_info))
        elif record.exc_text:
            record.exc_text = redact_text(record.exc_text)
        return True


def _exception_signature(record: logging.LogRecord) -> tuple[str, ...]:
    if not record.exc_info or record.exc_info[1] is None:
        return ()
    exc = record.exc_info[1]
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    where = f"{tb.tb_frame.f_code.co_filename}:{tb.tb_lineno}" if tb is not None else ""
    return (type(exc).__name__, str(exc)[:200], where)


def configure(level: int, fmt: str) -> LogHygiene:
    """The command's own logging: `logging.basicConfig`, with one LogHygiene filter on the handler it adds. Handlers
    that were there before (an embedding program's, a test runner's) are left as they are: their owner decides what
    they keep, and a filter there would hold back their repeats across unrelated runs."""
    root = logging.getLogger()
    before = set(root.handlers)
    logging.basicConfig(level=level, format=fmt)
    hygiene = LogHygiene()
    for handler in root.handlers:
        if handler not in before:
            handler.addFilter(hygiene)
    return hygiene
