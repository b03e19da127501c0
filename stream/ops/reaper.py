"""The folder reaper: a small process of its own that removes this process's temporary folders when it exits,
however it exits (kill -9 included).

The monitor's only folders are nginx-rtmp's (its config, pid file and log: nginx needs them on disk). A clean
exit removes them itself; the reaper is there for the exit that cannot: it reads folder paths from a pipe, one a
line, and when the pipe closes (the process that held it is gone, for whatever reason) it removes every folder it
was given that is still there. It runs in a session of its own, so a signal to the monitor's process group does
not take it along.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import threading

_lock = threading.Lock()
_reaper: subprocess.Popen | None = None


def _tmp_root() -> str:
    return os.path.realpath(tempfile.gettempdir())


def reap_on_exit(path: str) -> None:
    """Removes `path` (a folder under the temporary folder) when this process exits, cleanly or not."""
    global _reaper
    with _lock:
        if _reaper is None or _reaper.poll() is not None:
            _reaper = subprocess.Popen(
                [sys.executable, "-m", "stream.ops.reaper"], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL, start_new_session=True, text=True, close_fds=True,
            )
        try:
            assert _reaper.stdin is not None
            _reaper.stdin.write(path + "\n")
            _reaper.stdin.flush()
        except OSError:  # the reaper died: the clean exit still removes the folder
            pass


def main() -> int:
    """Reads folders from stdin until it closes, then removes those still there (only under the temp folder)."""
    root = _tmp_root()
    folders = []
    for line in sys.stdin:
        path = line.rstrip("\n")
        if path and os.path.realpath(path).startswith(root + os.sep):
            folders.append(path)
    for path in folders:
        shutil.rmtree(path, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
