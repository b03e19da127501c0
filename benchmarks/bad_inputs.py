"""The bad-input benchmark: a real `fvq serve` (workers: auto) fed a list of hostile and malformed inputs on loopback.

It starts the monitor as an operator would run it (three looping file streams, an RTMP listen app with an allow-list
and a publish token, WHIP and API tokens, a webhook with a password), then sends each input of the list below, one
at a time, over a fresh connection with `Connection: close`, and records what came back: an HTTP status, the
connection closed without an answer, or nothing within the case's time (a hang). Then it checks that the monitor is
still whole: the process alive, /healthz 200, every file stream still publishing windows, a real RTMP publisher
with the right key and token still taken, and no secret in any answer or in the log.

    python -m benchmarks.bad_inputs            # prints a table per family and the targets: 0 hangs, 0 HTTP 500s
    python -m benchmarks.bad_inputs --json out.json

Loopback only, bounded (one pass over the list, each case at most its own timeout), stops by itself.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks.soak import free_port, make_clip, samples, scrape

SECRETS = {"api": "bad-input-api-tok-5d1e", "whip": "bad-input-whip-tok-88af", "publish": "bad-input-pub-tok-3c07",
           "webhook": "bad-input-hook-pw-e41b"}
CASE_TIMEOUT_S = 10.0
SLOW_TIMEOUT_S = 20.0  # cases that hold a request open: the server's header/body timeouts close them first


@dataclass
class Case:
    family: str
    name: str
    raw: bytes | None = None  # the bytes sent; None: `send` builds them
    method: str = "GET"
    path: str = "/"
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    port: str = "http"  # "http" or "rtmp"
    timeout: float = CASE_TIMEOUT_S
    # what came back
    outcome: str = ""  # an HTTP status ("404"), "closed" (no answer), "hang"
    seconds: float = 0.0
    answer: str = ""

    def request(self) -> bytes:
        if self.raw is not None:
            return self.raw
        head = {"Host": "127.0.0.1", "Connection": "close", **self.headers}
        if self.body or self.method in ("POST", "PUT", "PATCH"):
            head.setdefault("Content-Length", str(len(self.body)))
        lines = [f"{self.method} {self.path} HTTP/1.1"] + [f"{k}: {v}" for k, v in head.items()]
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + self.body


def send(case: Case, ports: dict[str, int]) -> None:
    t0 = time.monotonic()
    data = b""
    try:
        with socket.create_connection(("127.0.0.1", ports[case.port]), timeout=case.timeout) as sock:
            try:
                sock.sendall(case.request())
            except OSError:
                pass  # the server may close before it read everything: what it answered is still read below
            while time.monotonic() - t0 < case.timeout:
                sock.settimeout(max(0.1, case.timeout - (time.monotonic() - t0)))
                chunk = sock.recv(65536)
                if not chunk:
                    break
                data += chunk
            else:
                case.outcome = "hang" if not data else ""
    except TimeoutError:
        case.outcome = "hang" if not data else case.outcome
    except (ConnectionResetError, BrokenPipeError):
        pass
    case.seconds = round(time.monotonic() - t0, 3)
    if case.outcome != "hang":
        first = data.split(b"\r\n", 1)[0].decode("latin-1", "replace")
        parts = first.split()
        case.outcome = parts[1] if case.port == "http" and len(parts) > 1 and parts[0].startswith("HTTP/") \
            else ("closed" if not data else "bytes")
    case.answer = data.decode("utf-8", "replace")


def json_case(family: str, name: str, method: str, path: str, body: object, token: bool = True,
              **headers: str) -> Case:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    head = {"Content-Type": "application/json", **headers}
    if token:
        head["Authorization"] = f"Bearer {SECRETS['api']}"
    return Case(family, name, method=method, path=path, headers=head, body=raw)


def the_list(work: Path, clip: Path) -> list[Case]:
    """About 175 inputs, by family. Paths on disk are made here (a FIFO, a folder)."""
    fifo = work / "fifo"
    if not fifo.exists():
        os.mkfifo(fifo)
    folder = work / "a-folder"
    folder.mkdir(exist_ok=True)
    api, streams = "/api/v1", "/api/v1/streams"
    cases: list[Case] = []

    # the stream API: bodies
    def post(name: str, body: object, **kw) -> None:
        cases.append(json_case("api body", name, "POST", streams, body, **kw))

    post("not JSON", b"{name: cam")
    post("empty body", b"")
    post("a JSON array", [1, 2, 3])
    post("a JSON number", 42)
    post("JSON null", None)
    post("a JSON string", "cam")
    post("nested 10000 deep", b"[" * 10000 + b"]" * 10000)
    post("nested 200 deep in a field", b'{"name":"deep","url":"x","labels":' + b'{"a":' * 200 + b"1" + b"}" * 201)
    post("a 5 MB body", {"name": "big", "url": "x" * 5_000_000})
    post("no name", {"url": str(clip)})
    post("no url", {"name": "nourl"})
    post("empty name", {"name": "", "url": str(clip)})
    post("a 10000-character name", {"name": "n" * 10000, "url": str(clip)})
    for label, name in [("slash", "a/b"), ("dot-dot", ".."), ("newline", "a\nb"), ("NUL", "a\x00b"),
                        ("quote", 'a"b'), ("space", "a b"), ("unicode", "caméra-直播"), ("emoji", "cam-\U0001f4f7"),
                        ("leading dash", "-cam"), ("percent", "a%2Fb"), ("braces", "{cam}"), ("backslash", "a\\b")]:
        post(f"name with {label}", {"name": name, "url": str(clip), "loop": True})
    for label, url in [("empty", ""), ("gopher scheme", "gopher://127.0.0.1/"), ("javascript", "javascript:alert(1)"),
                       ("data URL", "data:video/mp4;base64,AAAA"), ("missing file", str(work / "nope.mp4")),
                       ("a folder", str(folder)), ("a FIFO", str(fifo)), ("/dev/zero", "/dev/zero"),
                       ("/dev/urandom", "/dev/urandom"), ("/etc/passwd", "/etc/passwd"), ("NUL in path", "a\x00b.mp4"),
                       ("10000 characters", "/" + "x" * 10000), ("rtmp without host", "rtmp:///live/x"),
                       ("rtmp bad port", "rtmp://127.0.0.1:99999/live/x"), ("rtsp to a closed port",
                                                                          "rtsp://127.0.0.1:1/x"),
                       ("http to a closed port", "http://127.0.0.1:1/x.m3u8"), ("srt junk", "srt://::::"),
                       ("with credentials", "rtsp://user:pw@127.0.0.1:1/x"), ("udp", "udp://127.0.0.1:1"),
                       ("concat protocol", "concat:/etc/passwd|/etc/passwd"), ("subfile", "subfile:,,start,0,end,0,,:/etc/passwd")]:
        post(f"url {label}", {"name": f"u-{len(cases)}", "url": url})
    post("loop as a string", {"name": "l1", "url": str(clip), "loop": "yes please"})
    post("loop as an object", {"name": "l2", "url": str(clip), "loop": {}})
    post("an unknown field", {"name": "f1", "url": str(clip), "lopo": True})
    post("options as a list", {"name": "o1", "url": str(clip), "options": ["a"]})
    post("options with a huge value", {"name": "o2", "url": str(clip), "options": {"probesize": "9" * 100000}})
    post("options: protocol_whitelist", {"name": "o3", "url": str(clip), "options": {"protocol_whitelist": "file,http"}})
    post("labels with a bad name", {"name": "lb1", "url": str(clip), "labels": {"1bad name": "x"}})
    post("labels: a reserved name", {"name": "lb2", "url": str(clip), "labels": {"stream": "x"}})
    post("labels: 1000 of them", {"name": "lb3", "url": str(clip), "labels": {f"l{i}": "x" for i in range(1000)}})
    post("expect: a negative width", {"name": "e1", "url": str(clip), "expect": {"width": -5}})
    post("expect: fps as text", {"name": "e2", "url": str(clip), "expect": {"fps": "fast"}})
    post("queue_frames 0", {"name": "q1", "url": str(clip), "queue_frames": 0})
    post("queue_frames 10^9", {"name": "q2", "url": str(clip), "queue_frames": 10 ** 9})
    post("kind unknown", {"name": "k1", "url": str(clip), "kind": "telepathy"})
    post("listen on a file", {"name": "k2", "url": str(clip), "listen": True})
    post("listen on port 1", {"name": "k3", "url": "rtmp://127.0.0.1:1/live", "listen": True})
    post("listen on a foreign address", {"name": "k4", "url": "rtmp://192.0.2.1:1935/live", "listen": True})
    post("the name of a configured stream", {"name": "file0", "url": str(clip), "loop": True})
    post("a float as name", {"name": 1.5, "url": str(clip)})
    post("a 2^70 integer", {"name": "big-int", "url": str(clip), "queue_frames": 2 ** 70})
    post("NaN", b'{"name":"nan","url":"x","queue_frames":NaN}')
    post("duplicate keys", b'{"name":"dup","name":"dup2","url":"x"}')
    post("a BOM", b"\xef\xbb\xbf" + json.dumps({"name": "bom", "url": "x"}).encode())
    post("UTF-16", json.dumps({"name": "u16", "url": "x"}).encode("utf-16"))
    post("invalid UTF-8", b'{"name":"\xff\xfe","url":"x"}')
    post("text/plain", {"name": "tp", "url": str(clip)}, **{"Content-Type": "text/plain"})
    post("form-encoded", b"name=form&url=x", **{"Content-Type": "application/x-www-form-urlencoded"})
    post("multipart junk", b"--x\r\n\r\n--x--", **{"Content-Type": "multipart/form-data; boundary=x"})
    post("gzip claimed, not gzip", {"name": "gz", "url": "x"}, **{"Content-Encoding": "gzip"})
    post("a Content-Length short of the body", b'{"name":"short","url":"x"}', **{"Content-Length": "5"})

    # the stream API: the other calls, auth
    def call(family: str, name: str, method: str, path: str, body: object = b"", **kw) -> None:
        cases.append(json_case(family, name, method, path, body, **kw))

    call("api auth", "no token", "POST", streams, {"name": "a1", "url": str(clip)}, token=False)
    call("api auth", "a wrong token", "POST", streams, {"name": "a2", "url": str(clip)}, token=False,
         Authorization="Bearer wrong")
    call("api auth", "Basic instead of Bearer", "POST", streams, {"name": "a3", "url": str(clip)}, token=False,
         Authorization="Basic " + "YWRtaW46YWRtaW4=")
    call("api auth", "an 8 kB Authorization", "POST", streams, {"name": "a4", "url": str(clip)}, token=False,
         Authorization="Bearer " + "t" * 8000)
    call("api auth", "the token in the query", "DELETE", f"{streams}/nosuch?token={SECRETS['api']}", token=False)
    call("api auth", "an empty Bearer", "GET", streams, token=False, Authorization="Bearer ")
    for label, name in [("unknown", "nosuch"), ("dot-dot", "%2e%2e"), ("encoded slash", "a%2Fb"), ("NUL", "a%00b"),
                        ("4000 characters", "n" * 4000), ("unicode", urllib.parse.quote("直播"))]:
        call("api calls", f"GET a stream: {label}", "GET", f"{streams}/{name}")
        call("api calls", f"DELETE a stream: {label}", "DELETE", f"{streams}/{name}")
    call("api calls", "PUT with another name in the body", "PUT", f"{streams}/x1", {"name": "x2", "url": str(clip)})
    call("api calls", "PUT not JSON", "PUT", f"{streams}/x1", b"nope")
    call("api calls", "PUT over a configured stream with a FIFO", "PUT", f"{streams}/file0",
         {"name": "file0", "url": str(fifo)})
    call("api calls", "PATCH a stream (no such verb)", "PATCH", f"{streams}/file0", {"loop": False})
    call("api calls", "POST to one stream", "POST", f"{streams}/file0", {})
    call("api calls", "reload with a body", "POST", f"{api}/reload", {"sources": "all"})
    call("api calls", "reload without a token", "POST", f"{api}/reload", token=False)
    call("api calls", "an unknown API path", "GET", f"{api}/nothing")
    call("api calls", "API v2", "GET", "/api/v2/streams")

    # media-server hooks
    def hook(name: str, path: str, body: bytes, ctype: str = "application/x-www-form-urlencoded", **kw) -> None:
        cases.append(Case("hooks", name, method="POST", path=path, body=body, headers={"Content-Type": ctype, **kw}))

    hook("nginx: unknown event", "/hooks/nginx/explode", b"app=live&name=cam1")
    hook("nginx: publish, no fields", "/hooks/nginx/publish", b"")
    hook("nginx: publish, junk form", "/hooks/nginx/publish", b"%%%&&&===")
    hook("nginx: publish, a 2 MB form", "/hooks/nginx/publish", b"app=live&name=" + b"k" * 2_000_000)
    hook("nginx: publish, a key outside the allow-list", "/hooks/nginx/publish",
         f"app=live&name=intruder&token={SECRETS['publish']}".encode())
    hook("nginx: publish, a wrong token", "/hooks/nginx/publish", b"app=live&name=cam7&token=wrong")
    hook("nginx: publish, no token", "/hooks/nginx/publish", b"app=live&name=cam7")
    hook("nginx: publish, an unknown app", "/hooks/nginx/publish", b"app=nosuch&name=cam7")
    hook("nginx: publish, dot-dot key", "/hooks/nginx/publish", f"app=live&name=../../x&token={SECRETS['publish']}".encode())
    hook("nginx: publish_done of a stream never published", "/hooks/nginx/publish_done", b"app=live&name=cam404")
    hook("nginx: publish, JSON body", "/hooks/nginx/publish", b'{"app":"live"}', "application/json")
    hook("nginx: publish, invalid UTF-8", "/hooks/nginx/publish", b"app=live&name=\xff\xfe")
    hook("srs: not JSON", "/hooks/srs/on_publish", b"{", "application/json")
    hook("srs: a JSON list", "/hooks/srs/on_publish", b"[]", "application/json")
    hook("srs: nested deep", "/hooks/srs/on_publish", b"[" * 5000 + b"]" * 5000, "application/json")
    hook("srs: unknown event", "/hooks/srs/on_dance", b"{}", "application/json")
    hook("srs: fields of the wrong type", "/hooks/srs/on_publish", b'{"app":1,"stream":[],"param":{}}',
         "application/json")
    hook("nms: not JSON", "/hooks/nms", b"nope", "application/json")
    hook("nms: an unknown action", "/hooks/nms", b'{"action":"explode","streamPath":"/live/x"}', "application/json")
    hook("nms: streamPath without app", "/hooks/nms", b'{"action":"postPublish","streamPath":"x"}',
         "application/json")
    hook("nms: streamPath 100 kB", "/hooks/nms",
         json.dumps({"action": "postPublish", "streamPath": "/live/" + "x" * 100000}).encode(), "application/json")
    hook("GET on a hook", "/hooks/nginx/publish", b"")
    cases[-1].method = "GET"

    # WHIP
    sdp = {"Content-Type": "application/sdp"}
    auth = {"Authorization": f"Bearer {SECRETS['whip']}"}

    def whip(name: str, path: str, body: bytes, method: str = "POST", **headers: str) -> None:
        cases.append(Case("whip", name, method=method, path=path, body=body, headers=headers))

    whip("no token", "/whip/w1", b"v=0\r\n", **sdp)
    whip("a wrong token", "/whip/w1", b"v=0\r\n", **sdp, Authorization="Bearer no")
    whip("JSON instead of SDP", "/whip/w1", b"{}", **auth, **{"Content-Type": "application/json"})
    whip("an empty offer", "/whip/w1", b"", **auth, **sdp)
    whip("a garbage offer", "/whip/w1", os.urandom(2000), **auth, **sdp)
    whip("an offer over the size limit", "/whip/w1", b"v=0\r\n" + b"a=x\r\n" * 40000, **auth, **sdp)
    whip("an offer without video", "/whip/w1",
         b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\n"
         b"c=IN IP4 0.0.0.0\r\na=rtpmap:111 opus/48000/2\r\n", **auth, **sdp)
    whip("an offer with 1000 candidates", "/whip/w1",
         b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\nc=IN IP4 0.0.0.0\r\n"
         b"a=rtpmap:96 VP8/90000\r\na=setup:actpass\r\na=ice-ufrag:x\r\na=ice-pwd:yyyyyyyyyyyyyyyyyyyyyy\r\n"
         + b"".join(f"a=candidate:{i} 1 udp 1 127.0.0.1 {1000 + i} typ host\r\n".encode() for i in range(1000)),
         **auth, **sdp)
    whip("an offer to a foreign candidate", "/whip/w1",
         b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\nc=IN IP4 0.0.0.0\r\n"
         b"a=rtpmap:96 VP8/90000\r\na=candidate:1 1 udp 1 192.0.2.1 9 typ host\r\n", **auth, **sdp)
    whip("a stream name with dot-dot", "/whip/%2e%2e", b"v=0\r\n", **auth, **sdp)
    whip("a 4000-character stream name", "/whip/" + "w" * 4000, b"v=0\r\n", **auth, **sdp)
    whip("the name of a file stream", "/whip/file0", b"v=0\r\n", **auth, **sdp)
    whip("DELETE an unknown session", "/whip/w1/nosuch", b"", "DELETE", **auth)
    whip("PATCH an unknown session", "/whip/w1/nosuch", b"a=candidate:1 1 udp 1 127.0.0.1 9 typ host\r\n", "PATCH",
         **auth, **{"Content-Type": "application/trickle-ice-sdpfrag"})
    whip("PATCH junk", "/whip/w1/nosuch", os.urandom(500), "PATCH", **auth)
    whip("OPTIONS", "/whip/w1", b"", "OPTIONS")
    whip("GET on WHIP", "/whip/w1", b"", "GET")

    # the status pages and evidence frames
    for path in ["/streams/nosuch", "/streams/nosuch/timeline", "/streams/nosuch/frame.jpg",
                 "/streams/file0/evidence/..%2F..%2Fetc%2Fpasswd.jpg", "/streams/file0/evidence/-1.jpg",
                 "/streams/file0/evidence/99999999999999999999.jpg", "/streams/file0/evidence/abc.jpg",
                 "/streams/file0/timeline?since=abc", "/streams/file0/timeline?since=-1e308",
                 "/streams/file0/timeline?since=nan", "/streams/%00", "/sparklines?stream=" + "x" * 4000,
                 "/?" + "&".join(f"a{i}=b" for i in range(2000)), "/streams/file0/clean.jpg?size=99999"]:
        cases.append(Case("pages", f"GET {path[:60]}", path=path))
    cases.append(Case("pages", "POST to the overview", method="POST", path="/", body=b"x"))
    cases.append(Case("pages", "GET /metrics with a strange Accept", path="/metrics",
                      headers={"Accept": "application/openmetrics-text; version=99"}))
    cases.append(Case("pages", "GET /metrics?name[]=fvq_stream_up", path="/metrics?name[]=fvq_stream_up"))
    cases.append(Case("pages", "POST /healthz", method="POST", path="/healthz"))
    cases.append(Case("pages", "GET /sd with junk", path="/sd?%%%"))

    # HTTP itself
    def raw(name: str, data: bytes, timeout: float = CASE_TIMEOUT_S) -> None:
        cases.append(Case("http", name, raw=data, timeout=timeout))

    raw("a garbage request line", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + os.urandom(200))
    raw("HTTP/0.9", b"GET /\r\n\r\n")
    raw("HTTP/9.9", b"GET / HTTP/9.9\r\nHost: x\r\n\r\n")
    raw("an unknown method", b"BREW /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    raw("TRACE", b"TRACE / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    raw("CONNECT", b"CONNECT 127.0.0.1:22 HTTP/1.1\r\nHost: x\r\n\r\n")
    raw("an absolute-form URL", b"GET http://example.com/metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    raw("a 20 kB path", b"GET /" + b"a" * 20000 + b" HTTP/1.1\r\nHost: x\r\n\r\n")
    raw("a 20 kB header", b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"b" * 20000 + b"\r\n\r\n")
    raw("500 headers", b"GET / HTTP/1.1\r\nHost: x\r\n" + b"".join(b"X-%d: y\r\n" % i for i in range(500)) + b"\r\n")
    raw("a header without a colon", b"GET / HTTP/1.1\r\nHost: x\r\nnocolon\r\n\r\n")
    raw("a NUL in a header", b"GET / HTTP/1.1\r\nHost: x\r\nX-A: a\x00b\r\nConnection: close\r\n\r\n")
    raw("bare LF line ends", b"GET /healthz HTTP/1.1\nHost: x\nConnection: close\n\n")
    raw("a non-ASCII path", "GET /stréams HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
    raw("a negative Content-Length", b"POST /api/v1/streams HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n")
    raw("two Content-Lengths", b"POST /api/v1/streams HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n"
        b"Content-Length: 9\r\n\r\n{}")
    raw("Content-Length and chunked", b"POST /api/v1/streams HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n")
    raw("chunked junk", b"POST /api/v1/streams HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nxx\r\n")
    raw("an unknown Transfer-Encoding", b"POST /api/v1/streams HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: magic\r\n\r\n")
    raw("a body promised and never sent", b"POST /api/v1/streams HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n"
        b"Authorization: Bearer " + SECRETS["api"].encode() + b"\r\nContent-Type: application/json\r\n\r\n{",
        SLOW_TIMEOUT_S)
    raw("headers never finished", b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: a", SLOW_TIMEOUT_S)
    raw("a connection that sends nothing", b"", SLOW_TIMEOUT_S)
    raw("Expect: 100-continue for 1 GB", b"POST /api/v1/streams HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000000\r\n"
        b"Expect: 100-continue\r\nConnection: close\r\n\r\n", SLOW_TIMEOUT_S)
    raw("pipelined junk after a good request", b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n\x00\x01\x02garbage\r\n\r\n")
    raw("WebSocket upgrade", b"GET /metrics HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: x\r\nSec-WebSocket-Version: 13\r\n\r\n")
    raw("h2c upgrade", b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: h2c\r\nConnection: Upgrade, HTTP2-Settings, close\r\n"
        b"HTTP2-Settings: AAMAAABkAAQAAP__\r\n\r\n")
    raw("an HTTP/2 preface", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")

    # the RTMP port (nginx-rtmp)
    def rtmp(name: str, data: bytes, timeout: float = SLOW_TIMEOUT_S) -> None:
        cases.append(Case("rtmp", name, raw=data, port="rtmp", timeout=timeout))

    rtmp("HTTP on the RTMP port", b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    rtmp("random bytes", os.urandom(4096))
    rtmp("a wrong RTMP version", b"\x09" + os.urandom(1536))
    rtmp("a half handshake", b"\x03" + os.urandom(700))
    rtmp("a handshake then junk", b"\x03" + bytes(1536) + os.urandom(1536) + os.urandom(3000))
    rtmp("nothing at all", b"")
    rtmp("10 MB of zeros", bytes(10_000_000))
    return cases


def publish_ok(clip: Path, rtmp_port: int, base: str) -> bool:
    """A real publisher with an allowed key and the right token is still taken after the list."""
    url = f"rtmp://127.0.0.1:{rtmp_port}/live/cam-check?token={SECRETS['publish']}"
    pub = subprocess.Popen(["ffmpeg", "-nostdin", "-loglevel", "quiet", "-re", "-stream_loop", "-1", "-i", str(clip),
                            "-c", "copy", "-f", "flv", url])
    try:
        deadline = time.monotonic() + 40
        while time.monotonic() < deadline:
            _, text = scrape(base + "/metrics")
            if samples(text).get('fvq_windows_analysed_total{stream="cam-check"}', 0) > 0:
                return True
            time.sleep(1)
        return False
    finally:
        pub.terminate()
        pub.wait(10)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.bad_inputs", description=__doc__.splitlines()[0])
    p.add_argument("--files", type=int, default=3, help="looping file streams beside the list")
    p.add_argument("--json", type=Path, help="also write the cases and figures here")
    args = p.parse_args(argv)

    work = Path(tempfile.mkdtemp(prefix="fvq-bad-inputs-"))
    clip = make_clip(work / "face.mp4", 10, "320x180")
    port, rtmp_port, hook_port = free_port(), free_port(), free_port()
    sources = "".join(f"  - {{name: file{i}, url: '{clip}', loop: true}}\n" for i in range(args.files))
    sources += (f"  - {{name: live, url: 'rtmp://127.0.0.1:{rtmp_port}/live', listen: true, allow_keys: ['cam*'], "
                f"publish_tokens: {{'cam*': {SECRETS['publish']}}}}}\n")
    cfg = work / "serve.yaml"
    cfg.write_text(
        f"sources:\n{sources}no_model: true\n"
        f"server: {{port: {port}, api_token: {SECRETS['api']}, whip_token: {SECRETS['whip']}, "
        f"limit_exempt_clients: [127.0.0.1/32]}}\n"
        f"alerts: {{webhook_url: 'http://fvq:{SECRETS['webhook']}@127.0.0.1:{hook_port}/hook'}}\n")
    log_path = work / "serve.log"
    with open(log_path, "w") as log_file:
        server = subprocess.Popen([sys.executable, "-m", "stream.cli", "serve", "--config", str(cfg)],
                                  stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    figures: dict = {}
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                _, text = scrape(base + "/metrics", 3)
                if all(samples(text).get(f'fvq_windows_analysed_total{{stream="file{i}"}}', 0) > 0
                       for i in range(args.files)):
                    break
            except OSError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"fvq serve did not start: {log_path.read_text()[-3000:]}")
            time.sleep(1)
        _, text = scrape(base + "/metrics")
        before = samples(text)
        cases = the_list(work, clip)
        ports = {"http": port, "rtmp": rtmp_port}
        t0 = time.monotonic()
        for case in cases:
            send(case, ports)
            if server.poll() is not None:
                case.answer += f"\n[fvq serve exited with {server.returncode}]"
                break
        took = time.monotonic() - t0
        alive = server.poll() is None
        time.sleep(3)
        healthz = None
        if alive:
            with urllib.request.urlopen(base + "/healthz", timeout=10) as r:
                healthz = r.status
        _, text = scrape(base + "/metrics") if alive else (0, "")
        after = samples(text)
        scoring = {f"file{i}": after.get(f'fvq_windows_analysed_total{{stream="file{i}"}}', 0)
                   - before.get(f'fvq_windows_analysed_total{{stream="file{i}"}}', 0) for i in range(args.files)}
        publisher = publish_ok(clip, rtmp_port, base) if alive else False
        log_text = log_path.read_text()
        answers = "\n".join(c.answer for c in cases)
        leaks = sorted({f"{k} secret in {where}" for k, v in SECRETS.items() for where, text_ in
                        (("answers", answers), ("log", log_text)) if v in text_})
        hangs = [c for c in cases if c.outcome == "hang"]
        errors_500 = [c for c in cases if c.outcome == "500"]
        print(f"\n{len(cases)} bad inputs in {took:.0f} s against fvq serve (workers: auto) on 127.0.0.1\n")
        by_family: dict[str, Counter] = {}
        for c in cases:
            by_family.setdefault(c.family, Counter())[c.outcome] += 1
        print(f"{'family':12} {'cases':>5}  outcomes")
        for fam, count in by_family.items():
            print(f"{fam:12} {sum(count.values()):5d}  " + ", ".join(f"{k} x{v}" for k, v in sorted(count.items())))
        for c in hangs + errors_500:
            print(f"  {c.outcome:6} {c.family}: {c.name} ({c.seconds} s) {c.answer[:200]!r}")
        slowest = sorted(cases, key=lambda c: c.seconds)[-5:]
        print("slowest: " + "; ".join(f"{c.name} {c.outcome} {c.seconds} s" for c in reversed(slowest)))
        tracebacks = log_text.count("Traceback")
        print(f"\nafter the list: fvq serve alive {alive}, /healthz {healthz}, windows published meanwhile "
              f"{scoring}, an allowed RTMP publisher taken {publisher}, tracebacks in the log {tracebacks}, "
              f"secrets leaked {leaks or 'none'}")
        print(f"targets: 0 hangs ({len(hangs)}), 0 HTTP 500s ({len(errors_500)})")
        figures = {"cases": len(cases), "seconds": round(took, 1), "by_family": {k: dict(v) for k, v in
                                                                                   by_family.items()},
                   "hangs": [c.name for c in hangs], "http_500": [c.name for c in errors_500], "alive": alive,
                   "healthz": healthz, "windows_meanwhile": scoring, "publisher_taken": publisher,
                   "tracebacks_in_log": tracebacks, "leaks": leaks,
                   "list": [{"family": c.family, "name": c.name, "outcome": c.outcome, "seconds": c.seconds,
                             "answer": c.answer[-300:]} for c in cases]}
        if args.json:
            args.json.write_text(json.dumps(figures, indent=1))
            print(f"wrote {args.json}")
        ok = alive and not hangs and not errors_500 and all(v > 0 for v in scoring.values()) and publisher and not leaks
        return 0 if ok else 1
    finally:
        if server.poll() is None:
            os.killpg(server.pid, 15)
            try:
                server.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(server.pid, 9)


if __name__ == "__main__":
    sys.exit(main())
