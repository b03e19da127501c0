"""Errors that keep their cause: request errors keep their traceback in the log (repeats held and counted, a new
error always written), and a front that cannot take its RTMP port exits with one clear line, no traceback."""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
from pathlib import Path

from stream.ops.logs import LogHygiene
from tests.conftest import free_port

ROOT = Path(__file__).resolve().parents[2]


def _raise(exc: Exception) -> None:
    raise exc


def test_repeated_request_errors_keep_their_traceback() -> None:
    records: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(self.format(record))

    handler = Keep()
    handler.setFormatter(logging.Formatter("%(message)s"))
    handler.addFilter(LogHygiene(window_s=60))
    log = logging.getLogger("test.refusals.aiohttp")
    log.propagate = False
    log.addHandler(handler)
    try:
        for exc in (RecursionError("maximum recursion depth exceeded"), KeyError("stream"),
                    RecursionError("maximum recursion depth exceeded"), ValueError("bad")):
            try:
                _raise(exc)
            except Exception:
                log.exception("Error handling request")
    finally:
        log.removeHandler(handler)
    # the same message with a different error: each written with its traceback; the exact repeat held back
    assert len(records) == 3, records
    assert all("Traceback (most recent call last)" in r for r in records), records
    assert ["RecursionError" in records[0], "KeyError" in records[1], "ValueError" in records[2]] == [True] * 3


def test_front_exits_cleanly_when_its_rtmp_port_is_taken(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        for _ in range(2):  # it showed in one run of two
            cli = subprocess.run(
                [sys.executable, "-m", "fvq", "serve", "--workers", "2", "--no-model", "--port", str(free_port()),
                 "--listen", f"rtmp://127.0.0.1:{port}/live"], env=env, capture_output=True, text=True, timeout=120,
                cwd=tmp_path,
            )
            assert cli.returncode == 2 and f"RTMP port {port}" in cli.stderr, cli.stderr
            assert "Traceback" not in cli.stderr and "BrokenPipe" not in cli.stderr, cli.stderr
