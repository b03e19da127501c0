"""Hostile HTTP clients on loopback (real sockets): slowloris headers and bodies, idle and over-cap connections,
oversized headers; the server closes or refuses them, counts each, and /metrics keeps answering meanwhile."""

from __future__ import annotations

import logging
import socket
import time

from stream.config import MonitorConfig
from stream.live.analysis import Analyzer
from tests.harness import MonitorHarness

HOSTILE = "127.0.0.2"  # the attacker's address (all of 127/8 is loopback on Linux); the scraper is 127.0.0.1


def harness(**server) -> MonitorHarness:
    cfg = MonitorConfig.model_validate({"no_model": True, "server": server})
    return MonitorHarness(cfg, Analyzer(face=None, rater=None))


def connect(port: int, source: str = HOSTILE) -> socket.socket:
    s = socket.socket()
    s.bind((source, 0))
    s.settimeout(5)
    s.connect(("127.0.0.1", port))
    return s


def closed_by_server(s: socket.socket) -> bytes | None:
    """What the server sent before closing (b"" for a bare close), or None when it is still open."""
    s.settimeout(0.05)
    data = b""
    try:
        while chunk := s.recv(4096):
            data += chunk
    except TimeoutError:
        return None
    except ConnectionResetError:
        pass
    return data


def timed_get(h: MonitorHarness, path: str) -> float:
    t0 = time.monotonic()
    status, body = h.get(path)
    assert status == 200, body
    return time.monotonic() - t0


def test_slowloris_idle_and_over_cap_connections_are_closed_while_metrics_answer(caplog) -> None:
    caplog.set_level(logging.INFO)
    with harness(header_timeout_s=1.0, body_timeout_s=1.0, max_connections_per_client=50,
                 keepalive_max_requests=2) as h:
        idle = [connect(h.port) for _ in range(20)]
        slow_headers = [connect(h.port) for _ in range(20)]
        for s in slow_headers:
            s.sendall(b"GET /streams HTTP/1.1\r\n")
        slow_bodies = [connect(h.port) for _ in range(10)]
        for s in slow_bodies:  # headers complete, a chunked body that never ends
            s.sendall(b"POST /whip/cam HTTP/1.1\r\nHost: x\r\nContent-Type: application/sdp\r\n"
                      b"Transfer-Encoding: chunked\r\n\r\n4\r\nv=0\n\r\n")
        over = [connect(h.port) for _ in range(30)]  # past the per-client cap: 503 at once, nothing read
        for s in over:
            s.settimeout(5)
            answer = s.recv(4096)
            assert answer.startswith(b"HTTP/1.1 503") and b"max_connections_per_client" in answer, answer

        latencies = []
        deadline = time.monotonic() + 3.0
        while time.monotonic() < deadline:  # trickle header bytes and scrape from another address meanwhile
            for s in slow_headers:
                try:
                    s.send(b"X-Slow: 1\r\n")
                except OSError:
                    pass
            latencies.append(timed_get(h, "/metrics"))
            latencies.append(timed_get(h, "/healthz"))
            time.sleep(0.2)
        assert max(latencies) < 1.0, latencies

        for s in idle + slow_headers:
            assert closed_by_server(s) is not None, "a slow or idle connection is still open after 3 s"
        for s in slow_bodies:
            answer = closed_by_server(s)
            assert answer is not None and (answer == b"" or answer.startswith(b"HTTP/1.1 408")), answer
        for s in idle + slow_headers + slow_bodies + over:
            s.close()

        # 10 KB of header: a 431 and one log line, no traceback
        s = connect(h.port)
        s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 10_000 + b"\r\n\r\n")
        answer = s.recv(4096)
        s.close()
        assert answer.startswith(b"HTTP/1.1 431") or answer.startswith(b"HTTP/1.0 431"), answer
        assert b"max_header_bytes" in answer

        # keep-alive: at most keepalive_max_requests requests on one connection
        s = connect(h.port, "127.0.0.1")
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        first = s.recv(4096)
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        time.sleep(0.3)
        second = closed_by_server(s)
        s.close()
        assert b"200 OK" in first and b"Connection: close" not in first
        assert second is not None and b"200 OK" in second and b"Connection: close" in second

        rejected = {reason: h.value("fvq_http_rejected_total", reason=reason)
                    for reason in ("client_connections", "header_timeout", "body_timeout", "header_too_large")}
        assert rejected == {"client_connections": 30, "header_timeout": 40, "body_timeout": 10,
                            "header_too_large": 1}, rejected
        assert not [r for r in caplog.records if r.exc_info], "a hostile client logged a traceback"
        http_lines = [r for r in caplog.records if r.getMessage().startswith("HTTP: refused")]
        assert 1 <= len(http_lines) <= 4, [r.getMessage() for r in http_lines]  # one line per reason, not per client


def test_the_overall_cap_refuses_everyone_but_exempt_scrapers() -> None:
    with harness(max_connections=5, header_timeout_s=5.0, limit_exempt_clients=["127.0.0.1/32"]) as h:
        held = [connect(h.port, f"127.0.0.{3 + i}") for i in range(5)]  # five addresses, one each
        time.sleep(0.2)
        refused = connect(h.port, "127.0.0.9")
        answer = refused.recv(4096)
        refused.close()
        assert answer.startswith(b"HTTP/1.1 503") and b"server.max_connections" in answer, answer
        assert timed_get(h, "/metrics") < 1.0  # Prometheus, exempt, still scrapes
        assert h.value("fvq_http_rejected_total", reason="connections") == 1
        for s in held:
            s.close()
        time.sleep(0.2)
        s = connect(h.port, "127.0.0.9")  # slots freed: admitted again
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert b"200 OK" in s.recv(4096)
        s.close()


def test_a_body_that_cannot_be_decoded_is_a_400_not_a_500(caplog) -> None:
    """gzip claimed on a body that is not gzip (aiohttp raises while reading it): refused, counted, no traceback."""
    caplog.set_level(logging.INFO)
    with harness() as h:
        s = connect(h.port)
        body = b'{"name": "cam", "url": "clip.mp4"}'
        s.sendall(b"POST /api/v1/streams HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  b"Content-Encoding: gzip\r\nConnection: close\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
        s.settimeout(5)
        answer = b""
        while chunk := s.recv(4096):
            answer += chunk
        s.close()
        assert answer.startswith(b"HTTP/1.1 400") and b"Content-Encoding" in answer, answer
        assert h.value("fvq_http_rejected_total", reason="bad_body") == 1
        assert timed_get(h, "/healthz") < 1.0
    assert "Traceback" not in caplog.text and "Unhandled exception" not in caplog.text
