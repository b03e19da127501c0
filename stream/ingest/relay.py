"""Relay: protocols the bundled FFmpeg of PyAV lacks (SRT) are pulled by the system ffmpeg onto a pipe."""

from __future__ import annotations

import shutil
import subprocess
import threading
from urllib.parse import urlparse

# PyAV's wheels carry an FFmpeg built without libsrt; Debian's ffmpeg has it.
RELAYED_SCHEMES = ("srt",)


def needs_relay(url: str) -> bool:
    return urlparse(url).scheme.lower() in RELAYED_SCHEMES


class Relay:
    """`ffmpeg -i URL -map 0:v:0 -c copy -f mpegts pipe:1`: the video, untouched, as MPEG-TS on stdout.

    Copying costs next to nothing; PyAV then decodes the pipe exactly like any other source. ffmpeg's
    own messages are kept so a failure reaches the stream's last_error.
    """

    def __init__(self, url: str, timeout_s: float = 10.0) -> None:
        ffmpeg = shutil.which("ffmpeg")
        if ffmpeg is None:
            raise OSError(f"{url}: pulling {urlparse(url).scheme}:// needs the ffmpeg program (apt-get install ffmpeg)")
        self.url = url
        sep = "&" if "?" in url else "?"
        # SRT's own timeout option is in microseconds
        full = url if "timeout=" in url else f"{url}{sep}timeout={int(timeout_s * 1e6)}"
        self.proc = subprocess.Popen(
            [ffmpeg, "-nostdin", "-loglevel", "error", "-i", full, "-map", "0:v:0", "-c", "copy", "-f", "mpegts",
             "pipe:1"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, bufsize=0,
        )
        self.stderr: list[str] = []
        self._drain = threading.Thread(target=self._read_stderr, daemon=True)
        self._drain.start()

    def _read_stderr(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.stderr.append(line.decode(errors="replace").strip())
            del self.stderr[:-20]

    @property
    def stdout(self):
        return self.proc.stdout

    def error(self) -> str:
        return "; ".join(self.stderr[-3:]) or f"ffmpeg exited with {self.proc.poll()}"

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(5)
