"""A real Prometheus scrapes a running monitor while ffmpeg publishes a clean talking head, then a heavily
compressed one at 30 kb/s, then the clean one again: the artifact score (and with a bundle, the quality score)
falls, FvqCompression fires with the "raise the bitrate" action and resolves; every dashboard query has data."""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
import yaml

from engines.bundle import shipped_bundle
from stream.config import MonitorConfig
from stream.live.analysis import build_analyzer
from stream.ops.alert_rules import RuleSettings, render
from stream.ops.recommend import ALERTS, start_recommendations
from tests.conftest import free_port, make_face_clip, need
from tests.harness import MonitorHarness
from tests.ops.test_grafana import DASHBOARD, dashboard_exprs

pytestmark = pytest.mark.slow

HAVE_BUNDLE = (shipped_bundle() / "manifest.json").is_file()
ACTION = ALERTS["FvqCompression"].action
# x264 at 30 kb/s as any encoder would run it (deblocking on): the grid is smoothed away, but the decoder's
# quantiser, which the artifact score reads from the bitstream, shows how starved the encoder is.
STARVED = ("-c:v", "libx264", "-preset", "veryfast", "-b:v", "30k", "-maxrate", "30k", "-bufsize", "60k",
           "-g", "50")


class Prometheus:
    def __init__(self, tmp: Path, target_port: int) -> None:
        rules = tmp / "fvq_alerts.yml"
        rules.write_text(render(RuleSettings(
            sustain_for="3s", cause_for="3s", down_for="3s", sudden_for="2s", drops_for="3s",
            keep_firing_for="2s", drop_window="30s", rate_window="10s",
        )))
        config = tmp / "prometheus.yml"
        config.write_text(yaml.safe_dump({
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(rules)],
            "scrape_configs": [{"job_name": "fvq", "static_configs": [{"targets": [f"127.0.0.1:{target_port}"]}]}],
        }))
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = open(tmp / "prometheus.log", "wb")  # noqa: SIM115
        self.proc = subprocess.Popen([
            need("prometheus"), f"--config.file={config}", f"--storage.tsdb.path={tmp / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{self.port}", "--storage.tsdb.retention.time=1h",
        ], stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(self.url + "/-/ready", timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                time.sleep(0.2)
        self.close()
        pytest.fail(f"prometheus did not start: {(tmp / 'prometheus.log').read_text()[-2000:]}")

    def api(self, path: str, **params: str):
        url = f"{self.url}/api/v1/{path}" + ("?" + urllib.parse.urlencode(params) if params else "")
        with urllib.request.urlopen(url, timeout=10) as r:
            body = json.load(r)
        assert body["status"] == "success", body
        return body["data"]

    def query(self, expr: str) -> list[dict]:
        return self.api("query", query=expr)["result"]

    def value(self, expr: str) -> float | None:
        result = self.query(expr)
        return float(result[0]["value"][1]) if result else None

    def alerts(self, name: str, state: str = "firing") -> list[dict]:
        return [a for a in self.api("alerts")["alerts"] if a["labels"]["alertname"] == name and a["state"] == state]

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


def wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def publish(src: Path, url: str) -> subprocess.Popen:
    """ffmpeg publishing in a loop; started again while the monitor's listener is not back yet (refused)."""
    cmd = shlex.join([need("ffmpeg"), "-nostdin", "-loglevel", "fatal", "-re", "-stream_loop", "-1", "-i", str(src),
                      "-c", "copy", "-f", "flv", url])
    return subprocess.Popen(["bash", "-c", f"until {cmd}; do sleep 0.2; done"], start_new_session=True)


def stop(proc: subprocess.Popen) -> None:
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


@pytest.fixture(scope="module")
def starved_clip(media_dir):
    return make_face_clip(media_dir / "starved.flv", seconds=8.0, codec_args=STARVED, extra=("-f", "flv"))


def test_prometheus_sees_compression_alert_fire_and_resolve(face_clip_flv, starved_clip, tmp_path):
    rtmp = f"rtmp://127.0.0.1:{free_port()}/live/cam"
    cfg = MonitorConfig.model_validate({
        "sources": [{"name": "cam", "url": rtmp, "listen": True}],
        "window": {"length_s": 2.0, "hop_s": 1.0},
        "analysis": {"stale_after_s": 2.0, "embed_fps": 2.0},  # 2 s windows: embed every sampled face
        "alerts": {"raise_after_s": 3, "clear_after_s": 3},
        "no_model": not HAVE_BUNDLE,
    })
    artifact = 'fvq:dimension_score:preferred{stream="cam",dimension="artifact"}'
    with MonitorHarness(cfg, build_analyzer(cfg)) as h:
        recommender = start_recommendations(h.monitor)
        prom = Prometheus(tmp_path, h.port)
        pub = publish(face_clip_flv, rtmp)
        try:
            # clean: the artifact score is high and nothing fires
            wait_for(lambda: (prom.value('fvq_windows_analysed_total{stream="cam"}') or 0) >= 4, 40,
                     "clean windows in Prometheus")
            clean = wait_for(lambda: prom.value(artifact), 10, "artifact score")
            clean_score = prom.value('fvq_quality_score{stream="cam"}')
            assert clean > 80, clean
            assert prom.alerts("FvqCompression", "firing") == [] and prom.alerts("FvqCompression", "pending") == []

            # starved: artifacts at a low bitrate; the alert fires with its cause and action
            stop(pub)
            pub = publish(starved_clip, rtmp)
            (alert,) = wait_for(lambda: prom.alerts("FvqCompression"), 40, "FvqCompression firing")
            assert alert["labels"]["stream"] == "cam" and alert["labels"]["cause"] == "compression"
            assert alert["labels"]["severity"] == "warning"
            assert alert["annotations"]["action"] == "raise the bitrate (or use a slower encoder preset)"
            assert "bitrate is low" in alert["annotations"]["description"]
            degraded = prom.value(artifact)
            assert degraded < 45 < clean, (degraded, clean)
            assert prom.value('fvq_stream_bitrate_bits_per_second{stream="cam"}') < 200_000
            if HAVE_BUNDLE:
                score = prom.value('min_over_time(fvq_quality_score{stream="cam"}[5s])')
                assert score < clean_score - 10, (score, clean_score)
            # the monitor's own recommendation agrees, in /streams and in Prometheus
            wait_for(lambda: (h.streams()["cam"]["recommendation"] or {}).get("cause") == "compression", 20,
                     "recommendation in /streams")
            assert h.streams()["cam"]["recommendation"]["action"] == ACTION
            rec = wait_for(lambda: prom.query('fvq_stream_recommendation{stream="cam"} == 1'), 10,
                           "recommendation scraped")
            assert rec[0]["metric"]["cause"] == "compression" and rec[0]["metric"]["action"] == ACTION

            # every dashboard query returns data (quality ones only with a model bundle)
            variable = prom.api("label/stream/values", **{"match[]": "fvq_stream_up"})
            assert "cam" in variable
            empty = []
            for expr in dashboard_exprs(json.loads(DASHBOARD.read_text())):
                q = expr.replace("$stream", "cam").replace("$region", "face").replace("$__rate_interval", "10s")
                if not HAVE_BUNDLE and "fvq_quality_" in q:
                    continue
                if not prom.query(q):
                    empty.append(q)
            assert empty == [], empty

            # clean again: the alert resolves
            stop(pub)
            pub = publish(face_clip_flv, rtmp)
            wait_for(lambda: (prom.value(artifact) or 0) > 80, 40, "artifact score back up")
            wait_for(lambda: not prom.alerts("FvqCompression") and not prom.alerts("FvqCompression", "pending"), 30,
                     "FvqCompression resolved")
        finally:
            stop(pub)
            prom.close()
            recommender.stop()
