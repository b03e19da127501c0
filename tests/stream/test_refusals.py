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
from tests.stream.test_whip import face_frames as face_frames  # noqa: F401 - the fixture

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


def test_nat64_and_6to4_forms_of_private_addresses_are_dropped() -> None:
    from stream.ingest.whip import filter_candidates

    def cand(i: int, addr: str) -> str:
        return f"a=candidate:{i} 1 udp 2122260223 {addr} 5000{i} typ host\r\n"

    private = ["64:ff9b::a00:1", "64:ff9b::7f00:1", "64:ff9b::a9fe:a9fe", "2002:c0a8:101::1", "2002:7f00:1::1",
               "64:ff9b:1::a00:1", "::ffff:192.168.1.1"]
    public = ["64:ff9b::808:808", "2002:808:808::1", "2606:4700::1111"]
    sdp = "v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\n" + "".join(
        cand(i, a) for i, a in enumerate(private + public))
    filtered, kept, dropped = filter_candidates(sdp, allow_private=False, max_candidates=16)
    assert (kept, dropped) == (len(public), len(private)), filtered
    assert all(a not in filtered for a in private) and all(a in filtered for a in public)


def test_bound_beyond_loopback_without_exempt_clients_warns() -> None:
    from stream.cli import ingest_notice
    from stream.config import MonitorConfig

    assert "warning" not in ingest_notice(MonitorConfig.model_validate({"server": {"host": "127.0.0.1"}}))
    text = ingest_notice(MonitorConfig.model_validate({"server": {"host": "0.0.0.0"}}))
    assert "warning" in text and "limit_exempt_clients" in text
    assert "warning" not in ingest_notice(MonitorConfig.model_validate(
        {"server": {"host": "0.0.0.0", "limit_exempt_clients": ["10.0.0.5/32"]}}))


def test_a_whip_session_is_ended_only_by_its_own_publisher(face_frames) -> None:  # noqa: F811
    import aiohttp

    from tests.stream.test_whip import Client, harness, run

    with harness() as h:

        async def body(c: Client) -> None:
            pub = await c.publish("mine", face_frames)
            try:
                await c.wait_flowing("mine")
                # another client (another loopback address) with the same right to publish cannot end it
                conn = aiohttp.TCPConnector(local_addr=("127.0.0.2", 0))
                async with aiohttp.ClientSession(connector=conn) as other, \
                        other.delete(h.url + pub.location) as r:
                    assert r.status == 403, await r.text()
                streams = {s["name"]: s for s in h.monitor.snapshot()}
                assert streams["mine"]["state"] == "up"
                status, _, _ = await c.request("DELETE", pub.location)
                assert status == 200
            finally:
                await pub.close()

        run(h, body)


def test_a_control_lane_refuses_unrun_never_late() -> None:
    import asyncio
    import threading

    from stream.http.control import ControlLane, LaneBusyError

    refused: list[str] = []
    ran: list[str] = []
    release = threading.Event()

    def slow() -> str:
        release.wait(5)
        ran.append("slow")
        return "slow"

    def quick(name: str) -> str:
        ran.append(name)
        return name

    async def main() -> None:
        lane = ControlLane("test", threads=1, max_queued=3, start_within_s=0.3, on_refused=refused.append)
        first = asyncio.ensure_future(lane.run(slow))
        await asyncio.sleep(0.05)
        waiting = [asyncio.ensure_future(lane.run(quick, f"q{i}")) for i in range(2)]
        with_full_queue = asyncio.ensure_future(lane.run(quick, "over"))
        results = await asyncio.gather(*waiting, with_full_queue, return_exceptions=True)
        statuses = [r.status if isinstance(r, LaneBusyError) else r for r in results]
        assert statuses == [503, 503, 429], statuses  # not started in time: taken back; past the cap: at once
        release.set()
        assert await first == "slow"
        await asyncio.sleep(0.2)
        assert ran == ["slow"], ran  # nothing refused ran later
        assert await lane.run(quick, "after") == "after"  # the queue is free again
        lane.close()

    asyncio.run(main())
    assert sorted(refused) == ["busy", "timeout", "timeout"]
