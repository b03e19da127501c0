"""The bundled nginx-rtmp process: its listen address, its configuration in a folder of its own, start, reload, stop."""

from __future__ import annotations

import ctypes
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from urllib.parse import urlparse

from stream.config import RtmpConfig
from stream.ops.reaper import reap_on_exit

NGINX_MODULE = "/usr/lib/nginx/modules/ngx_rtmp_module.so"
START_TIMEOUT_S = 10.0
_APP = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


class RtmpListenError(RuntimeError):
    """An RTMP listen address cannot be served (port held by another process, nginx-rtmp missing, bad URL)."""


def listen_address(url: str) -> tuple[str, int, str, str | None]:
    """`rtmp://HOST:PORT/APP[/KEY]` -> (host, port, app, key or None)."""
    p = urlparse(url)
    parts = [s for s in p.path.split("/") if s]
    if p.scheme != "rtmp" or not p.hostname or not parts or len(parts) > 2:
        raise RtmpListenError(f"an RTMP listen address is rtmp://HOST:PORT/APP or rtmp://HOST:PORT/APP/KEY, not {url!r}")
    if not _APP.match(parts[0]):
        raise RtmpListenError(f"RTMP app {parts[0]!r} in {url!r}: use letters, digits, '_', '.', '-'")
    return p.hostname, p.port or 1935, parts[0], (parts[1] if len(parts) == 2 else None)


def pull_host(host: str) -> str:
    """Where the monitor reaches its own nginx: loopback when it listens on every address."""
    if host in ("0.0.0.0", ""):
        return "127.0.0.1"
    if host == "::":
        return "::1"
    return host


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


class NginxRtmp:
    """One nginx-rtmp process serving one listen address, configured in its own temporary folder."""

    def __init__(self, host: str, port: int, hook_url: str, cfg: RtmpConfig) -> None:
        self.host, self.port, self.hook_url, self.cfg = host, port, hook_url, cfg
        self.apps: set[str] = set()
        self.dir = tempfile.mkdtemp(prefix=f"fvq-rtmp-{port}-")
        reap_on_exit(self.dir)  # removed even when the monitor is killed (stop() removes it otherwise)
        os.makedirs(os.path.join(self.dir, "logs"))
        self.proc: subprocess.Popen | None = None

    def conf(self) -> str:
        listen = f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"
        c = self.cfg
        apps = "\n".join(
            f"""    application {app} {{
      live on; record off; idle_streams on;
      drop_idle_publisher {int(c.idle_publisher_s)}s;
      on_publish {self.hook_url}/publish;
      on_publish_done {self.hook_url}/publish_done;
      notify_method post;
    }}""" for app in sorted(self.apps)
        )
        return f"""load_module {NGINX_MODULE};
daemon off;
master_process on;
worker_processes 1;
pid {self.dir}/nginx.pid;
error_log {self.dir}/logs/error.log info;
events {{ worker_connections {c.max_connections}; }}
rtmp {{
  server {{
    listen {listen};
    timeout {int(c.handshake_timeout_s)}s;
    ping 30s;
    notify_method post;
{apps}
  }}
}}
"""

    HANDSHAKE_TIMEOUT = re.compile(rb"handshake: .*timed out")
    LOG_KEEP_BYTES = 256 * 1024

    def count_timeouts(self) -> int:
        """Connections nginx closed for not finishing the handshake in time, since the last call (from its log,
        which is emptied as it is read, so it stays small)."""
        path = os.path.join(self.dir, "logs", "error.log")
        try:
            with open(path, "rb") as f:
                f.seek(self._log_offset)
                data = f.read()
        except OSError:
            return 0
        end = data.rfind(b"\n") + 1  # only whole lines; the rest is read next time
        self._log_offset += end
        if self._log_offset > self.LOG_KEEP_BYTES:
            try:
                os.truncate(path, 0)  # nginx appends (O_APPEND): it goes on at the new end
            except OSError:
                pass
            self._log_offset = 0
        return len(self.HANDSHAKE_TIMEOUT.findall(data[:end]))

    _log_offset = 0

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def _kill_group(self) -> None:
        """Workers outlive a master that was killed: they go with its process group."""
        if self.proc is not None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except OSError:
                pass

    def start(self) -> None:
        self._kill_group()  # what is left of an earlier run
        if self.proc is not None and self.proc.stderr is not None:
            self.proc.stderr.close()
        nginx = shutil.which("nginx") or ("/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx") else None)
        if nginx is None or not os.path.exists(NGINX_MODULE):
            raise RtmpListenError("RTMP listen needs nginx and libnginx-mod-rtmp (Debian packages; `make setup`)")
        self._check_free()
        path = os.path.join(self.dir, "nginx.conf")
        with open(path, "w") as f:
            f.write(self.conf())
        log_path = os.path.join(self.dir, "logs", "error.log")
        self.proc = subprocess.Popen(
            [nginx, "-p", self.dir, "-c", path, "-e", log_path], stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, preexec_fn=_die_with_parent, start_new_session=True,
        )
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                err = (self.proc.stderr.read() or b"").decode(errors="replace").strip() if self.proc.stderr else ""
                err = err or _tail(log_path)
                if "Address already in use" in err:
                    raise RtmpListenError(f"RTMP port {self.port} on {self.host} is in use by another process")
                raise RtmpListenError(f"nginx-rtmp for rtmp://{self.host}:{self.port} did not start: {err[-500:]}")
            try:
                socket.create_connection((pull_host(self.host), self.port), 0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RtmpListenError(f"nginx-rtmp did not listen on rtmp://{self.host}:{self.port} within {START_TIMEOUT_S} s")

    def _check_free(self) -> None:
        """Exclusive binding: refuse a port another process listens on (nginx would only log it per worker)."""
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as s:
            # as nginx binds: connections of an earlier run in TIME_WAIT are no reason to refuse, a listener is
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind((self.host, self.port))
            except OSError as exc:
                raise RtmpListenError(
                    f"RTMP port {self.port} on {self.host} is in use by another process ({exc.strerror})"
                ) from None

    def reload(self) -> None:
        """Applies a changed set of applications; connected publishers stay with the old worker until they leave."""
        with open(os.path.join(self.dir, "nginx.conf"), "w") as f:
            f.write(self.conf())
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGHUP)
            time.sleep(0.3)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)  # fast shutdown: drops connections
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._kill_group()
        if self.proc is not None and self.proc.stderr is not None:
            self.proc.stderr.close()
        shutil.rmtree(self.dir, ignore_errors=True)


def _die_with_parent() -> None:  # pragma: no cover - runs in the child
    try:
        ctypes.CDLL("libc.so.6").prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG: no nginx outlives its monitor
    except OSError:
        pass


def _tail(path: str) -> str:
    try:
        with open(path, errors="replace") as f:
            return f.read()[-2000:]
    except OSError:
        return ""
