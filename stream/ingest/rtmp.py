"""RTMP listen: a bundled nginx-rtmp the monitor configures and starts, one per port, many publishers on each.

ffmpeg's own `listen=1` takes one publisher per port and is held by any idle TCP client, so the monitor runs
nginx-rtmp (Debian's nginx + libnginx-mod-rtmp) in a folder of its own instead: it listens on the requested
address, closes connections that do not finish their handshake within `rtmp.handshake_timeout_s`, drops idle
publishers, holds many pending connections at once, and asks the monitor through `on_publish` whether to take
each publisher (allow-list, `?token=`, the stream cap). The monitor then pulls the key from nginx on loopback as
its own stream, and removes it on `on_publish_done`. A named listen source (`rtmp://HOST:PORT/APP/KEY`) is a
stream from the start that accepts only its key; an app without a key (`rtmp://HOST:PORT/APP`) accepts any key.
The nginx process itself (its config, start, reload, stop) is stream/ingest/nginx_rtmp.py.
"""

from __future__ import annotations

import fnmatch
import hmac
import http.server
import logging
import re
import secrets
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING
from urllib.parse import parse_qs, urlparse

from stream.config import SourceConfig, SourceKind
from stream.ingest.nginx_rtmp import NginxRtmp, RtmpListenError, _url_host, listen_address, pull_host

if TYPE_CHECKING:
    from stream.live.monitor import Monitor

log = logging.getLogger(__name__)

__all__ = ["NginxRtmp", "RtmpListenError", "RtmpListeners", "internal_url", "key_stream_name", "listen_address",
           "publish_token", "pull_host"]


@dataclass
class _App:
    """What one application on a port accepts: one named key (a named listen source) or any key."""

    source: SourceConfig
    key: str | None  # None: any key (rtmp_server)
    streams: set[str] = field(default_factory=set)  # streams added for its publishers (rtmp_server)


def key_stream_name(key: str) -> str:
    """A stream key as a stream name: characters a name may not hold become '_'."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", key)[:64].lstrip("_.-") or "stream"


def internal_url(url: str) -> str:
    """The URL the monitor pulls a named listen source's key from its own nginx-rtmp."""
    host, port, app, key = listen_address(url)
    return f"rtmp://{_url_host(pull_host(host))}:{port}/{app}/{key}"


def publish_token(form: dict[str, str]) -> str | None:
    """The `?token=` of a publish: in the key's query (nginx passes it as a field), the key itself, or tcUrl."""
    if form.get("token"):
        return form["token"]
    for text in (form.get("name", ""), form.get("tcurl", ""), form.get("args", "")):
        query = text.split("?", 1)[1] if "?" in text else (text if "=" in text else "")
        values = parse_qs(query).get("token")
        if values:
            return values[0]
    return None


class RtmpListeners:
    """Every RTMP listen address of a monitor: one nginx-rtmp per port, one hook server for all of them."""

    def __init__(self, monitor: Monitor) -> None:
        self.monitor = monitor
        self.servers: dict[tuple[str, int], NginxRtmp] = {}
        self.apps: dict[tuple[int, str], _App] = {}
        self.by_name: dict[str, tuple[int, str]] = {}  # listen source name -> its app
        self._lock = threading.RLock()
        self._hooks: http.server.ThreadingHTTPServer | None = None
        self._closed = threading.Event()
        self._watcher: threading.Thread | None = None
        self._secret = secrets.token_hex(16)  # the hook path, known to the nginx configs only

    WATCH_INTERVAL_S = 1.0

    def _watch(self) -> None:
        """Counts handshake timeouts and restarts an nginx that died, until close()."""
        while not self._closed.wait(self.WATCH_INTERVAL_S):
            with self._lock:
                servers = list(self.servers.values())
            for server in servers:
                timeouts = server.count_timeouts()
                if timeouts:
                    self.monitor.metrics.rtmp_rejected.labels("handshake_timeout").inc(timeouts)
                if not server.alive and not self._closed.is_set():
                    log.error("nginx-rtmp on port %d exited (%s); starting it again", server.port,
                              server.proc.returncode if server.proc else "?")
                    with self._lock:  # its publishers are gone, and no on_publish_done will say so
                        orphans = [(n, a.source.expected) for (p, _), a in self.apps.items() if p == server.port
                                   for n in a.streams]
                    for name, expected in orphans:
                        self.monitor.publisher_left(name, expected)
                    try:
                        with self._lock:
                            server.start()
                    except RtmpListenError as exc:
                        log.error("nginx-rtmp on port %d could not start again: %s", server.port, exc)

    # sources
    def attach(self, source: SourceConfig) -> None:
        """Starts (or reconfigures) the nginx-rtmp of the source's port for its app and key."""
        host, port, app, key = listen_address(source.url)
        if source.kind == SourceKind.rtmp_server and key is not None:
            raise RtmpListenError(f"{source.url}: a listen source for many publishers names an app, not a key")
        with self._lock:
            other = self.apps.get((port, app))
            if other is not None and (other.key is None or key is None or other.key == key):
                raise RtmpListenError(
                    f"{source.url}: app {app!r} on port {port} is already served for stream {other.source.name!r}"
                )
            if other is not None:  # a second named key on the same app: one app entry per key
                app_key = (port, f"{app}/{key}")
            else:
                app_key = (port, app)
            server = self.servers.get((host, port))
            if server is None and any(p == port for _, p in self.servers):
                raise RtmpListenError(f"{source.url}: port {port} is already served on another address")
            self.apps[app_key] = _App(source, key)
            self.by_name[source.name] = app_key
            try:
                if server is None:
                    server = NginxRtmp(host, port, self._hook_url(), self.monitor.config.rtmp)
                    server.apps.add(app)
                    try:
                        server.start()
                    except Exception:
                        server.stop()
                        raise
                    self.servers[(host, port)] = server
                    log.info("RTMP listen on rtmp://%s:%d/%s (nginx-rtmp)", host, port, app)
                    if self._watcher is None:
                        self._watcher = threading.Thread(target=self._watch, name="rtmp-watch", daemon=True)
                        self._watcher.start()
                elif app not in server.apps:
                    server.apps.add(app)
                    server.reload()
            except Exception:
                del self.apps[app_key]
                del self.by_name[source.name]
                raise

    def detach(self, name: str) -> bool:
        """Stops listening for a source; the streams of its publishers are removed. False if it is not one."""
        with self._lock:
            app_key = self.by_name.pop(name, None)
            if app_key is None:
                return False
            entry = self.apps.pop(app_key)
            port, app = app_key[0], app_key[1].split("/", 1)[0]
            streams = set(entry.streams)
            still = any(p == port and a.split("/", 1)[0] == app for p, a in self.apps)
            server = next((s for (h, p), s in self.servers.items() if p == port), None)
            if server is not None and not any(p == port for p, _ in self.apps):
                server.stop()
                del self.servers[(server.host, port)]
            elif server is not None and not still:
                server.apps.discard(app)
                server.reload()
        for stream in streams:
            self.monitor.remove_stream(stream)
        return True

    def sources(self) -> list[SourceConfig]:
        with self._lock:
            return [a.source for a in self.apps.values() if a.key is None]

    def close(self) -> None:
        self._closed.set()
        with self._lock:
            servers = list(self.servers.values())
            self.servers.clear()
            hooks, self._hooks = self._hooks, None
        for server in servers:
            server.stop()
        if hooks is not None:
            hooks.shutdown()
            hooks.server_close()

    # the hook server nginx calls
    def _hook_url(self) -> str:
        if self._hooks is None:
            listeners = self

            class Handler(http.server.BaseHTTPRequestHandler):
                def do_POST(self) -> None:  # noqa: N802 - the stdlib's name
                    prefix, _, call = self.path.rpartition("/")
                    if not hmac.compare_digest(prefix.encode(), f"/{listeners._secret}".encode()):
                        self.send_error(404)  # only our nginx knows the path: other local processes add nothing
                        return
                    length = min(int(self.headers.get("Content-Length") or 0), 64 * 1024)
                    form = {k: v[0] for k, v in parse_qs(self.rfile.read(length).decode(errors="replace")).items()}
                    try:
                        status, text = listeners.notify(call, form)
                    except Exception as exc:  # a bug refuses this publisher only
                        log.exception("RTMP publish hook failed")
                        status, text = 500, f"{type(exc).__name__}: {exc}"
                    body = (text + "\n").encode()
                    try:
                        self.send_response(status)
                        self.send_header("Content-Type", "text/plain")
                        self.send_header("Content-Length", str(len(body)))
                        self.end_headers()
                        self.wfile.write(body)
                    except OSError:  # nginx dropped the call (its publisher left meanwhile)
                        pass

                def log_message(self, *args) -> None:
                    pass

            self._hooks = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
            self._hooks.daemon_threads = True
            threading.Thread(target=self._hooks.serve_forever, name="rtmp-hooks", daemon=True).start()
        return f"http://127.0.0.1:{self._hooks.server_address[1]}/{self._secret}"

    def _port_of(self, form: dict[str, str]) -> int | None:
        tcurl = urlparse(form.get("tcurl", ""))
        try:
            return (tcurl.port or 1935) if tcurl.scheme else None
        except ValueError:
            return None

    def _find(self, form: dict[str, str]) -> tuple[tuple[int, str], _App, str] | None:
        app = form.get("app", "").split("?", 1)[0]
        key = form.get("name", "").split("?", 1)[0]
        port = self._port_of(form)
        for app_key, entry in self.apps.items():
            p, a = app_key
            if a.split("/", 1)[0] != app or (port is not None and p != port and len(self.servers) > 1):
                continue
            if entry.key is None or entry.key == key:
                return app_key, entry, key
        return None

    def notify(self, call: str, form: dict[str, str]) -> tuple[int, str]:
        """nginx-rtmp's on_publish/on_publish_done: 2xx takes the publisher, anything else refuses it."""
        metrics = self.monitor.metrics
        with self._lock:
            found = self._find(form)
        if call == "publish_done":
            if found is not None and found[1].key is None:
                stream = key_stream_name(found[2])
                with self._lock:
                    ours = stream in found[1].streams
                if ours:  # `down` if the app's keys are expected, else `ended`: it leaves after the retention
                    self.monitor.publisher_left(stream, found[1].source.expected)
            return 200, "ok"
        if found is None:
            metrics.rtmp_rejected.labels("key").inc()
            return 403, "stream key not accepted here"
        (port, _), entry, key = found
        src = entry.source
        if src.allow_keys and not any(fnmatch.fnmatchcase(key, pat) for pat in src.allow_keys):
            metrics.rtmp_rejected.labels("key").inc()
            log.warning("RTMP publisher for key %r refused: not in allow_keys of %s", key, src.name)
            return 403, "stream key not allowed"
        expected = next((t for pat, t in src.publish_tokens.items() if fnmatch.fnmatchcase(key, pat)), None)
        if expected is not None:
            given = publish_token(form) or ""
            if not hmac.compare_digest(given.encode(), expected.encode()):
                metrics.rtmp_rejected.labels("token").inc()
                log.warning("RTMP publisher for key %r refused: %s token", key, "wrong" if given else "no")
                return 403, "token missing or wrong"
        if entry.key is not None:
            return 200, "ok"  # a named listen source: its stream exists and pulls the key already
        return self._add_key_stream(entry, port, form.get("app", "").split("?", 1)[0], key)

    def _add_key_stream(self, entry: _App, port: int, app: str, key: str) -> tuple[int, str]:
        from stream.admission import StreamExistsError, StreamLimitError

        metrics = self.monitor.metrics
        name = key_stream_name(key)
        host = next(h for (h, p) in self.servers if p == port)
        src = entry.source
        source = SourceConfig(
            name=name, url=f"rtmp://{_url_host(pull_host(host))}:{port}/{app}/{key}", kind=SourceKind.rtmp_pull,
            queue_frames=src.queue_frames, options=src.options, labels=src.labels, expect=src.expect,
            expected=src.expected,
        )
        with self._lock:
            returning = name in entry.streams
        if returning:  # its publisher is back: the `down` (or `ended`) stream it left starts afresh
            self.monitor.remove_stream(name)
        try:
            self.monitor.add_stream(source)
        except StreamLimitError as exc:
            metrics.rtmp_rejected.labels("limit").inc()
            log.warning("RTMP publisher for key %r refused: %s", key, exc)
            return 403, str(exc)
        except StreamExistsError as exc:
            metrics.rtmp_rejected.labels("exists").inc()
            log.warning("RTMP publisher for key %r refused: %s", key, exc)
            return 409, str(exc)
        except Exception as exc:
            metrics.rtmp_rejected.labels("start").inc()
            log.warning("RTMP publisher for key %r refused: %s", key, exc)
            return 500, str(exc)
        with self._lock:
            entry.streams.add(name)
        log.info("RTMP publisher on rtmp://%s:%d/%s/<key> -> stream %s", host, port, app, name)
        return 200, "ok"
