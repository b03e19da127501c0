"""`fvq serve --workers N`: real worker processes behind the front; kill -9 one, the others never stop publishing."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import Counter
from pathlib import Path

import aiohttp
import av
import numpy as np
import psutil
import pytest
import yaml
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from prometheus_client.parser import text_string_to_metric_families

from stream.config import ConfigError, MonitorConfig, default_workers, load_config
from stream.scale.front_metrics import merge_expositions
from tests.conftest import free_port, make_face_clip, need
from tests.stream.test_whip import FaceTrack

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def small_clip(media_dir: Path) -> Path:
    """4 s of the talking head at 320x180, 10 fps: light enough for several streams on two shared cores."""
    return make_face_clip(media_dir / "small10.mp4", seconds=4.0, size="320x180", fps=10,
                          codec_args=("-c:v", "libx264", "-preset", "veryfast", "-crf", "23", "-g", "10"))


class Served:
    """`python -m fvq serve` in a subprocess, on a free loopback port; stopped (and its workers) at exit."""

    def __init__(self, tmp: Path, config: dict, *args: str) -> None:
        self.port = free_port()
        cfg = tmp / "fvq.yaml"
        cfg.write_text(yaml.safe_dump(config))
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        self.log = open(tmp / "serve.log", "w+")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "fvq", "serve", "--config", str(cfg), "--port", str(self.port), *args],
            cwd=ROOT, env=env, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True,
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def get(self, path: str) -> tuple[int, bytes]:
        try:
            with urllib.request.urlopen(self.url + path, timeout=5) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()

    def samples(self) -> list[tuple[str, dict, float]]:
        status, body = self.get("/metrics")
        assert status == 200
        return [(s.name, s.labels, s.value) for fam in text_string_to_metric_families(body.decode())
                for s in fam.samples]

    def wait(self, predicate, what: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"fvq serve exited ({self.proc.returncode}):\n{self.tail()}"
            try:
                if predicate():
                    return
            except (OSError, urllib.error.URLError, AssertionError):
                pass
            time.sleep(0.25)
        raise AssertionError(f"timed out after {timeout}s waiting for {what}\n{self.tail()}")

    def tail(self) -> str:
        self.log.flush()
        self.log.seek(0)
        return "".join(self.log.readlines()[-40:])

    def worker_pids(self) -> dict[str, int]:
        out = {}
        for child in psutil.Process(self.proc.pid).children(recursive=True):
            try:
                cmd = child.cmdline()
            except psutil.Error:
                continue
            if "stream.scale.workers" in cmd:
                out[cmd[cmd.index("--id") + 1]] = child.pid
        return out

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        self.log.close()


def windows(samples, stream: str) -> float | None:
    values = [v for n, labels, v in samples if n == "fvq_windows_analysed_total" and labels.get("stream") == stream]
    return values[0] if values else None


def assert_each_series_once(samples) -> None:
    keys = Counter((n, tuple(sorted(labels.items()))) for n, labels, _ in samples)
    twice = [k for k, c in keys.items() if c > 1]
    assert not twice, f"series exposed more than once: {twice[:5]}"


def test_workers_option_and_config() -> None:
    gib = 1 << 30
    assert default_workers(1, 64 * gib) == 1 and default_workers(2, 64 * gib) == 2 and default_workers(16, 64 * gib) == 16
    assert default_workers(16, 6 * gib) == 6 and default_workers(4, gib // 2) == 1  # as many as the memory holds
    # with a warm spare beside them: 2 GiB holds one worker (the single process, which has no spare), 4 GiB three
    assert default_workers(2, 2 * gib, spares=1) == 1 and default_workers(8, 4 * gib, spares=1) == 3
    assert default_workers(2, 64 * gib, spares=1) == 2
    cfg = MonitorConfig()
    assert cfg.workers == "auto" and cfg.worker_count() == default_workers(spares=cfg.worker_spares)
    memory = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    cores = len(os.sched_getaffinity(0))
    assert default_workers() == max(1, min(cores, memory // gib))
    assert load_config(None, {"workers": 3}).worker_count() == 3
    with pytest.raises(ConfigError, match="workers must be 1-256"):
        load_config(None, {"workers": 0})
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-m", "fvq", "serve", "--workers", "two"], cwd=ROOT,
                         env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "--workers takes a number of workers or `auto`, not 'two'" in out.stderr
    # RTMP listen with workers: the front's nginx-rtmp; a port another process holds stops the start, said so
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        out = subprocess.run([sys.executable, "-m", "fvq", "serve", "--workers", "2", "--port",
                              str(free_port()), "--listen", f"cam=rtmp://127.0.0.1:{held.getsockname()[1]}/live/cam"],
                             cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and "is in use by another process" in out.stderr, out.stderr


def test_merge_keeps_a_stream_only_from_its_owner() -> None:
    a = 'fvq_windows_analysed_total{stream="x"} 5\nfvq_windows_analysed_total{stream="y"} 1\nfvq_streams_active 2\n'
    b = 'fvq_windows_analysed_total{stream="y"} 7\nfvq_streams_active 1\n'
    owner = {"x": "w0", "y": "w1"}  # y moved from w0 to w1 and still drains on w0
    fams = merge_expositions({"w0": a, "w1": b}, lambda s, w: owner.get(s) == w)
    got = {(s.name, tuple(sorted(s.labels.items()))): s.value for f in fams for s in f.samples}
    assert got == {
        ("fvq_windows_analysed_total", (("stream", "x"),)): 5,
        ("fvq_windows_analysed_total", (("stream", "y"),)): 7,
        ("fvq_streams_active", (("worker", "w0"),)): 2,
        ("fvq_streams_active", (("worker", "w1"),)): 1,
    }


def test_kill_9_one_worker_the_others_keep_publishing(tmp_path: Path, small_clip: Path) -> None:
    names = [f"s{i}" for i in range(4)]
    config = {
        "sources": [{"name": n, "url": str(small_clip), "loop": True} for n in names],
        "window": {"length_s": 2.0, "hop_s": 0.5},
        "no_model": True,
        "workers": 2,
        "worker_spares": 1,
    }
    served = Served(tmp_path, config)
    try:
        served.wait(lambda: all((windows(served.samples(), n) or 0) > 0 for n in names), "every stream's windows",
                    120)
        status, body = served.get("/streams")
        placed = {s["name"]: s["worker"] for s in json.loads(body)["streams"]}
        assert sorted(set(placed.values())) == ["w0", "w1"], placed  # spread over both workers
        served.wait(lambda: json.loads(served.get("/healthz")[1])["worker_spares_ready"] == 1, "the warm spare", 120)
        victim = "w1"
        dead = [n for n, w in placed.items() if w == victim]
        alive = [n for n, w in placed.items() if w != victim]
        before_pids = served.worker_pids()
        pid = before_pids[victim]
        before = {n: windows(served.samples(), n) for n in alive}
        killed = time.monotonic()
        os.kill(pid, signal.SIGKILL)

        back: dict[str, float] = {}
        last_seen = {n: (killed, before[n]) for n in alive}
        while time.monotonic() - killed < 12:
            samples = served.samples()
            assert_each_series_once(samples)
            now = time.monotonic()
            for n in alive:  # never stops: a new window at least every 2 s (hop 0.5 s)
                w = windows(samples, n)
                assert w is not None, f"stream {n} on the surviving worker vanished from /metrics"
                if w > last_seen[n][1]:
                    last_seen[n] = (now, w)
                assert now - last_seen[n][0] < 2.0, f"stream {n} stopped publishing after the kill"
            for n in dead:
                if n not in back and (windows(samples, n) or 0) > 0 and any(
                        name == "fvq_stream_up" and labels.get("stream") == n and v == 1
                        for name, labels, v in samples) and now - killed > 0.3:
                    back[n] = now - killed
            time.sleep(0.2)
        assert set(back) == set(dead), f"not back within 12 s: {set(dead) - set(back)}\n{served.tail()}"
        assert max(back.values()) < 5.0, f"the dead worker's streams published again only after {back}"
        samples = served.samples()
        assert_each_series_once(samples)
        value = {(n, tuple(sorted(lb.items()))): v for n, lb, v in samples}
        assert value[("fvq_worker_restarts_total", (("worker", victim),))] == 1
        assert value[("fvq_worker_restarts_total", (("worker", "w0"),))] == 0
        def lost() -> list[float]:
            return [v for n, lb, v in served.samples() if n == "fvq_worker_windows_lost_total" and lb["stream"] in dead]

        served.wait(lambda: len(lost()) == len(dead) and min(lost()) > 0, "the lost windows counted", 10)
        for n in dead:  # each stream is listed once, on its old worker
            assert sum(1 for name, lb, _ in samples if name == "fvq_stream_up" and lb.get("stream") == n) == 1
        status, body = served.get("/streams")
        assert {s["name"]: s["worker"] for s in json.loads(body)["streams"]} == placed  # stable placement
        pids = served.worker_pids()  # the spare took the slot (its command line still says "spare")
        assert pid not in pids.values() and pids["w0"] == before_pids["w0"], pids
        print(f"worker killed: its streams published again after {back} s")
    finally:
        served.stop()
    assert not [p for p in psutil.process_iter(["cmdline"]) if p.info["cmdline"] and "stream.scale.workers" in
                p.info["cmdline"] and str(tmp_path) in " ".join(p.info["cmdline"])]


def test_whip_is_routed_to_the_owner(tmp_path: Path, media_dir: Path) -> None:
    clip = make_face_clip(media_dir / "whip_small.mp4", seconds=2.0, size="320x240")
    with av.open(str(clip)) as c:
        frames: list[np.ndarray] = [f.to_ndarray(format="yuv420p") for f in c.decode(video=0)]
    config = {"window": {"length_s": 1.0, "hop_s": 0.5}, "no_model": True, "workers": 2, "worker_spares": 0,
              "server": {"whip_token": "sekret", "ice_allow_private": True}}  # loopback candidates
    served = Served(tmp_path, config)

    async def body() -> None:
        async with aiohttp.ClientSession() as http:
            pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
            track = FaceTrack(frames)
            pc.addTransceiver(track, direction="sendonly")
            await pc.setLocalDescription(await pc.createOffer())
            sdp = {"Content-Type": "application/sdp"}
            async with http.post(f"{served.url}/whip/cam", data=pc.localDescription.sdp, headers=sdp) as r:
                assert r.status == 401  # refused at the front (and by the worker, from the forwarded address)
            async with http.post(f"{served.url}/whip/cam", data=pc.localDescription.sdp,
                                 headers={**sdp, "Authorization": "Bearer sekret"}) as r:
                answer = await r.text()
                assert r.status == 201, answer
                location = r.headers["Location"]
            await pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
            await asyncio.get_running_loop().run_in_executor(None, lambda: served.wait(
                lambda: (windows(served.samples(), "cam") or 0) > 0, "windows of the WHIP stream", 30))
            status, raw = served.get("/streams/cam")
            assert status == 200 and json.loads(raw)["state"] == "up"
            async with http.delete(served.url + location, headers={"Authorization": "Bearer sekret"}) as r:
                assert r.status == 200
            await asyncio.get_running_loop().run_in_executor(None, lambda: served.wait(
                lambda: json.loads(served.get("/streams/cam")[1])["state"] == "ended", "the stream to end", 15))
            track.stop()
            await pc.close()

    if served.proc.poll() is None:
        served.wait(lambda: served.get("/healthz")[0] == 200, "the front", 120)
    try:
        asyncio.run(body())
        assert served.get("/streams/nope")[0] == 404
        status, raw = served.get("/api/v1/streams")  # the front serves the stream API too
        assert status == 200 and isinstance(json.loads(raw)["streams"], list)
    finally:
        served.stop()


def test_prometheus_finds_the_workers_through_http_sd(tmp_path: Path, small_clip: Path) -> None:
    """A real Prometheus: the workers through the front's http_sd endpoint, and the front's merged /metrics."""
    from tests.conftest import need
    from tests.ops.test_prometheus_e2e import wait_for

    config = {"sources": [{"name": n, "url": str(small_clip), "loop": True} for n in ("a", "b")],
              "window": {"length_s": 2.0, "hop_s": 0.5}, "no_model": True, "workers": 2, "worker_spares": 0}
    served = Served(tmp_path, config)
    prom_port = free_port()
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump({
        "global": {"scrape_interval": "1s"},
        "scrape_configs": [
            {"job_name": "fvq-workers", "http_sd_configs": [{"url": f"{served.url}/sd", "refresh_interval": "1s"}]},
            {"job_name": "fvq-front", "static_configs": [{"targets": [f"127.0.0.1:{served.port}"]}]},
        ],
    }))
    prom = subprocess.Popen([need("prometheus"), f"--config.file={tmp_path / 'prometheus.yml'}",
                             f"--storage.tsdb.path={tmp_path / 'tsdb'}", f"--web.listen-address=127.0.0.1:{prom_port}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def query(expr: str) -> list[dict]:
        url = f"http://127.0.0.1:{prom_port}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
        try:
            with urllib.request.urlopen(url, timeout=5) as r:
                return json.load(r)["data"]["result"]
        except OSError:
            return []

    try:
        served.wait(lambda: all((windows(served.samples(), n) or 0) > 0 for n in ("a", "b")), "windows", 120)
        up = wait_for(lambda: (r := query('up{job="fvq-workers"} == 1')) and len(r) == 2 and r, 60,
                      "both workers as http_sd targets")
        assert sorted(s["metric"]["worker"] for s in up) == ["w0", "w1"]  # the target group's labels
        streams = wait_for(lambda: (r := query('fvq_windows_analysed_total{job="fvq-front"} > 0')) and len(r) == 2
                           and r, 30, "both streams through the front")
        assert sorted(s["metric"]["stream"] for s in streams) == ["a", "b"]
        direct = query('fvq_windows_analysed_total{job="fvq-workers"}')
        assert sorted(s["metric"]["stream"] for s in direct) == ["a", "b"]  # each on exactly one worker
        assert len(query('fvq_worker_up{job="fvq-front"} == 1')) == 2
    finally:
        prom.terminate()
        prom.wait(10)
        served.stop()


def test_streams_are_placed_by_cost_not_count(tmp_path: Path, small_clip: Path, face_clip: Path) -> None:
    """One 640x360 25 fps stream costs as much as ~9 of the 320x180 10 fps ones: it gets a worker to itself."""
    config = {"sources": [{"name": "big", "url": str(face_clip), "loop": True}]
              + [{"name": f"t{i}", "url": str(small_clip), "loop": True} for i in range(3)],
              "no_model": True, "workers": 2, "worker_spares": 0}
    served = Served(tmp_path, config)
    try:
        served.wait(lambda: served.get("/healthz")[0] == 200 and len(json.loads(served.get("/streams")[1])["streams"])
                    == 4, "the four streams placed", 120)
        placed = {s["name"]: s["worker"] for s in json.loads(served.get("/streams")[1])["streams"]}
        assert placed["t0"] == placed["t1"] == placed["t2"] != placed["big"], placed

        def counts() -> tuple[float | None, float | None]:  # the gauge is set at the front's next tick, not at placing
            value = {(n, tuple(sorted(lb.items()))): v for n, lb, v in served.samples()}
            return tuple(value.get(("fvq_worker_streams", (("worker", placed[n]),))) for n in ("big", "t0"))

        served.wait(lambda: counts() == (1, 3), "fvq_worker_streams to count the placements", 30)
        assert counts() == (1, 3), counts()
    finally:
        served.stop()


def test_ray_option_without_ray_names_the_extra(tmp_path: Path) -> None:
    """With ray hidden from the interpreter, `--ray` fails at once with the extra to install."""
    shim = tmp_path / "noray"
    (shim / "ray").mkdir(parents=True)
    (shim / "ray" / "__init__.py").write_text("raise ImportError('hidden for this test')\n")
    env = {**os.environ, "PYTHONPATH": f"{shim}:{ROOT}"}
    out = subprocess.run([sys.executable, "-m", "fvq", "serve", "--ray", "auto"], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2, out.stderr
    assert "need Ray, which is not installed" in out.stderr and "pip install 'fvq-live[cluster]'" in out.stderr


def _call(served: Served, method: str, path: str, body: dict | None = None) -> tuple[int, dict | None]:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(served.url + path, data, {"Content-Type": "application/json"}, method=method)
    try:
        with urllib.request.urlopen(req, timeout=20) as r:
            raw, status = r.read(), r.status
    except urllib.error.HTTPError as e:
        raw, status = e.read(), e.code
    return status, (json.loads(raw) if raw.strip() else None)


def test_stream_api_hooks_and_reload_through_two_workers(tmp_path: Path, small_clip: Path) -> None:
    """The stream API, reload (POST and SIGHUP) and a hook, served by the front of 2 worker processes: streams
    are placed by cost, listed once, owned by one worker each, and `persist: true` is written by the front only."""
    base = {
        "window": {"length_s": 2.0, "hop_s": 0.5}, "no_model": True, "workers": 2, "worker_spares": 0,
        "hooks": {"pull_url": str(small_clip.parent) + "/{name}.mp4", "labels": {"app": "{app}"}},
    }
    config = {**base, "sources": [{"name": "a", "url": str(small_clip), "loop": True}]}
    served = Served(tmp_path, config)
    conf = tmp_path / "fvq.yaml"

    def names() -> dict[str, tuple[str, str]]:
        status, body = _call(served, "GET", "/api/v1/streams")
        assert status == 200, body
        listed = [s["name"] for s in body["streams"]]
        assert len(listed) == len(set(listed)), listed  # merged: each stream once
        return {s["name"]: (s["origin"], s["worker"]) for s in body["streams"]}

    try:
        served.wait(lambda: (windows(served.samples(), "a") or 0) > 0, "stream a's windows", 120)
        status, body = _call(served, "POST", "/api/v1/streams",
                             {"name": "b", "url": str(small_clip), "loop": True, "persist": True,
                              "labels": {"team": "x"}})
        assert status == 201, body
        assert body["origin"] == "api" and body["source"]["labels"] == {"team": "x"}
        listed = names()
        assert listed["a"][0] == "config" and listed["b"][0] == "api"
        assert {listed["a"][1], listed["b"][1]} == {"w0", "w1"}, listed  # placed by load: one per worker
        served.wait(lambda: (windows(served.samples(), "b") or 0) > 0, "stream b's windows (on its worker)", 60)
        assert_each_series_once(served.samples())
        # errors as the single process gives them
        assert _call(served, "POST", "/api/v1/streams", {"name": "b", "url": str(small_clip)})[0] == 409
        status, body = _call(served, "POST", "/api/v1/streams", {"name": "c", "url": str(small_clip), "lop": True})
        assert status == 400 and "lop" in body["error"]
        assert _call(served, "GET", "/api/v1/streams/nope")[0] == 404
        # PUT goes through the front: the new source, still placed once
        status, body = _call(served, "PUT", "/api/v1/streams/b",
                             {"url": str(small_clip), "loop": True, "persist": True, "labels": {"team": "y"}})
        assert status == 200 and body["source"]["labels"] == {"team": "y"}, body
        status, body = _call(served, "GET", "/api/v1/streams/b")
        assert status == 200 and body["worker"] in ("w0", "w1") and body["status"]["name"] == "b"
        # persist: one state file, the front's, holding b once
        state_files = list(tmp_path.glob("*.streams.json"))
        assert [p.name for p in state_files] == ["fvq.streams.json"]
        saved = json.loads(state_files[0].read_text())["streams"]
        assert [(s["name"], s["labels"]) for s in saved] == [("b", {"team": "y"})]
        # reload: a goes, c comes; b (the API's) untouched
        b_worker = names()["b"][1]
        conf.write_text(yaml.safe_dump({**base, "sources": [{"name": "c", "url": str(small_clip), "loop": True}]}))
        served.proc.send_signal(signal.SIGHUP)
        served.wait(lambda: set(names()) == {"b", "c"}, "SIGHUP to apply the config's difference", 30)
        assert names()["b"][1] == b_worker
        status, body = _call(served, "POST", "/api/v1/reload")
        assert status == 200 and body["unchanged"] == ["c"] and not body["added"] and not body["removed"], body
        # a hook (SRS's payload): the published stream is placed on a worker, answered with code 0
        status, body = _call(served, "POST", "/hooks/srs/on_publish",
                             {"action": "on_publish", "app": "live", "stream": small_clip.stem, "ip": "127.0.0.1",
                              "vhost": "__defaultVhost__"})
        assert status == 200 and body == {"code": 0}
        listed = names()
        assert listed[small_clip.stem][0] == "hook", listed
        served.wait(lambda: (windows(served.samples(), small_clip.stem) or 0) > 0, "the hook stream's windows", 60)
        hook_counts = {(labels["event"], labels["result"]): v for n, labels, v in served.samples()
                       if n == "fvq_hook_events_total"}
        assert hook_counts == {("publish", "added"): 1.0}, hook_counts
        status, body = _call(served, "POST", "/hooks/srs/on_unpublish",
                             {"action": "on_unpublish", "app": "live", "stream": small_clip.stem})
        assert status == 200 and body == {"code": 0}
        assert set(names()) == {"b", "c"}
        # a restart: the front places the persisted stream again, once
        served.stop()
        served = Served(tmp_path, {**base, "sources": [{"name": "c", "url": str(small_clip), "loop": True}]})
        served.wait(lambda: set(names()) == {"b", "c"}, "the persisted stream placed again after a restart", 120)
        assert names()["b"][0] == "api"
        served.wait(lambda: (windows(served.samples(), "b") or 0) > 0, "b's windows after the restart", 60)
        assert [s["name"] for s in json.loads(state_files[0].read_text())["streams"]] == ["b"]
        # DELETE: gone from its worker and from the state file
        assert _call(served, "DELETE", "/api/v1/streams/b")[0] == 204
        assert set(names()) == {"c"}
        assert json.loads(state_files[0].read_text())["streams"] == []
        served.wait(lambda: windows(served.samples(), "b") is None, "b's series to go", 20)
    finally:
        served.stop()


def test_rtmp_listen_through_two_workers(tmp_path: Path, small_clip: Path) -> None:
    """One nginx-rtmp, the front's, for a listen port; each published key becomes a pull placed on a worker."""
    from tests.stream.test_rtmp_listen import kill_all, publish

    flv = tmp_path / "small.flv"
    subprocess.run([need("ffmpeg"), "-nostdin", "-loglevel", "error", "-i", str(small_clip), "-c", "copy", "-f",
                    "flv", str(flv)], check=True)
    port = free_port()
    config = {
        "window": {"length_s": 2.0, "hop_s": 0.5}, "no_model": True, "workers": 2, "worker_spares": 0,
        "sources": [{"name": "live", "url": f"rtmp://127.0.0.1:{port}/live", "listen": True},
                    {"name": "cam", "url": f"rtmp://127.0.0.1:{port}/named/cam", "listen": True}],
    }
    served = Served(tmp_path, config)
    keys = ["k0", "k1", "k2"]
    pubs: list[subprocess.Popen] = []
    try:
        served.wait(lambda: served.get("/healthz")[0] == 200, "the front", 120)
        pubs = [publish(flv, f"rtmp://127.0.0.1:{port}/live/{k}") for k in keys]
        pubs.append(publish(flv, f"rtmp://127.0.0.1:{port}/named/cam"))
        served.wait(lambda: all((windows(served.samples(), k) or 0) > 0 for k in [*keys, "cam"]),
                    "a window of every publisher", 90)
        status, body = _call(served, "GET", "/api/v1/streams")
        listed = {s["name"]: s for s in body["streams"]}
        assert listed["live"]["status"] == {"state": "listening"} and listed["live"]["worker"] is None
        assert listed["cam"]["origin"] == "config" and listed["cam"]["source"]["kind"] == "rtmp_listen"
        assert all(listed[k]["origin"] == "rtmp" for k in keys), listed
        assert {listed[k]["worker"] for k in [*keys, "cam"]} == {"w0", "w1"}  # spread over both workers
        # one nginx-rtmp, the front's: none under a worker
        nginx_under = Counter()
        for child in psutil.Process(served.proc.pid).children(recursive=True):
            try:
                if "nginx" in child.name():
                    parent_cmd = child.parent().cmdline() if child.parent() else []
                    nginx_under["worker" if "stream.scale.workers" in parent_cmd else "front"] += 1
            except psutil.Error:
                continue
        assert nginx_under["front"] >= 1 and nginx_under["worker"] == 0, nginx_under
        assert_each_series_once(served.samples())
        # a publisher leaves: its stream (a key not expected) ends on its worker; the others go on
        pubs[0].kill()
        pubs[0].wait()
        served.wait(lambda: json.loads(served.get("/streams/k0")[1])["state"] == "ended", "k0's stream ended", 30)
        before = windows(served.samples(), "k1") or 0
        served.wait(lambda: (windows(served.samples(), "k1") or 0) > before, "k1 scored on", 30)
    finally:
        kill_all(pubs)
        served.stop()


def test_nginx_on_publish_hooks_through_two_workers(tmp_path: Path, small_clip: Path) -> None:
    """A real nginx-rtmp's on_publish/on_publish_done to the front of 2 workers: each publisher's key is pulled
    by one worker, spread by load; an unpublish removes it; the publisher is never refused."""
    from tests.stream.test_hooks import notify_hooks, start_nginx, stop
    from tests.stream.test_rtmp_listen import kill_all, publish

    flv = tmp_path / "small.flv"
    subprocess.run([need("ffmpeg"), "-nostdin", "-loglevel", "error", "-i", str(small_clip), "-c", "copy", "-f",
                    "flv", str(flv)], check=True)
    nginx_port = free_port()
    config = {
        "window": {"length_s": 2.0, "hop_s": 0.5}, "no_model": True, "workers": 2, "worker_spares": 0,
        "hooks": {"pull_url": f"rtmp://127.0.0.1:{nginx_port}/{{app}}/{{name}}", "stream_name": "{app}-{name}"},
    }
    served = Served(tmp_path, config)
    nginx_dir = tmp_path / "nginx"
    nginx_dir.mkdir()
    nginx = None
    pubs: list[subprocess.Popen] = []
    try:
        served.wait(lambda: served.get("/healthz")[0] == 200, "the front", 120)
        nginx = start_nginx(nginx_dir, nginx_port, notify_hooks(served.port))
        keys = ["cam1", "cam2"]
        pubs = [publish(flv, f"rtmp://127.0.0.1:{nginx_port}/live/{k}") for k in keys]
        served.wait(lambda: all((windows(served.samples(), f"live-{k}") or 0) > 0 for k in keys),
                    "a window of each published key", 60)
        listed = {s["name"]: s for s in _call(served, "GET", "/api/v1/streams")[1]["streams"]}
        assert {listed[f"live-{k}"]["origin"] for k in keys} == {"hook"}
        assert {listed[f"live-{k}"]["worker"] for k in keys} == {"w0", "w1"}, listed
        added = [v for n, lb, v in served.samples() if n == "fvq_hook_events_total"
                 and lb == {"server": "nginx", "event": "publish", "result": "added"}]
        assert added == [2.0]
        pubs[0].terminate()
        pubs[0].wait()
        served.wait(lambda: "live-cam1" not in {s["name"] for s in _call(served, "GET", "/api/v1/streams")[1]
                                                ["streams"]}, "cam1 removed on its unpublish", 15)
        assert pubs[1].poll() is None  # the other publisher goes on
    finally:
        kill_all(pubs)
        if nginx is not None:
            stop(nginx)
        served.stop()


def test_front_api_and_hooks_need_the_token(tmp_path: Path, small_clip: Path) -> None:
    """server.api_token on the front as on one process: the API refuses a missing or wrong bearer token; a hook
    with a wrong token is counted unauthorized, adds nothing, and is still answered success."""
    config = {"window": {"length_s": 2.0, "hop_s": 0.5}, "no_model": True, "workers": 2, "worker_spares": 0,
              "server": {"api_token": "s3cret"}, "hooks": {"pull_url": str(small_clip.parent) + "/{name}.mp4"}}
    served = Served(tmp_path, config)

    def call(method: str, path: str, body: dict | None = None, token: str | None = None) -> tuple[int, dict]:
        headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {token}"} if token else {})}
        req = urllib.request.Request(served.url + path, None if body is None else json.dumps(body).encode(),
                                     headers, method=method)
        try:
            with urllib.request.urlopen(req, timeout=20) as r:
                return r.status, json.loads(r.read() or b"null")
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"null")

    try:
        served.wait(lambda: served.get("/healthz")[0] == 200, "the front", 120)
        status, body = call("GET", "/api/v1/streams")
        assert status == 401 and "Authorization" in body["error"]
        assert call("GET", "/api/v1/streams", token="wrong")[0] == 401
        assert call("POST", "/api/v1/reload", token="wrong")[0] == 401
        source = {"name": "a", "url": str(small_clip), "loop": True}
        assert call("POST", "/api/v1/streams", source, token="wrong")[0] == 401
        assert call("GET", "/api/v1/streams", token="s3cret") == (200, {"streams": []})  # nothing was added
        hook = {"action": "on_publish", "app": "live", "stream": small_clip.stem}
        assert call("POST", "/hooks/srs/on_publish?token=wrong", hook) == (200, {"code": 0})
        assert call("GET", "/api/v1/streams", token="s3cret") == (200, {"streams": []})
        counted = {lb["result"]: v for n, lb, v in served.samples() if n == "fvq_hook_events_total"}
        assert counted == {"unauthorized": 1.0}, counted
        assert call("POST", "/hooks/srs/on_publish?token=s3cret", hook) == (200, {"code": 0})
        status, body = call("POST", "/api/v1/streams", source, token="s3cret")
        assert status == 201 and body["worker"] in ("w0", "w1")
        names = {s["name"] for s in call("GET", "/api/v1/streams", token="s3cret")[1]["streams"]}
        assert names == {"a", small_clip.stem}
    finally:
        served.stop()
