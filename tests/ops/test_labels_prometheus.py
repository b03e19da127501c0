"""The operator's labels through a real Prometheus: fvq_stream_info joins onto every stream's series, the dashboard's
stream variable filters by them, and a stream deleted through the API leaves Prometheus's answers."""

from __future__ import annotations

import json
import urllib.parse
import urllib.request

import pytest

from stream.config import MonitorConfig
from stream.live.analysis import Analyzer
from tests.harness import MonitorHarness
from tests.ops.test_grafana import DASHBOARD
from tests.ops.test_prometheus_e2e import Prometheus, wait_for

pytestmark = pytest.mark.slow


def test_labels_join_filter_and_leave(face_clip, tmp_path):
    from engines.face import FaceExtractor

    def src(name: str, labels: dict) -> dict:
        return {"name": name, "url": str(face_clip), "loop": True, "labels": labels}

    cfg = MonitorConfig.model_validate({
        "sources": [src("a", {"channel": "news", "region": "eu"}), src("b", {"channel": "sport", "region": "us"}),
                    src("c", {})],
        "window": {"length_s": 2.0, "hop_s": 1.0}, "analysis": {"sample_fps": 1.0}, "no_model": True,
    })
    with MonitorHarness(cfg, Analyzer(FaceExtractor(), None, embed_every=0, sample_fps=1.0)) as h:
        prom = Prometheus(tmp_path, h.port)
        try:
            joined = "fvq_stream_up * on(stream) group_left(channel, region) fvq_stream_info"
            result = wait_for(lambda: len(prom.query(joined)) == 3 and prom.query(joined), 30, "the join")
            by_stream = {r["metric"]["stream"]: r["metric"] for r in prom.query(joined)}
            assert by_stream["a"]["channel"] == "news" and by_stream["b"]["region"] == "us"
            assert "channel" not in by_stream["c"] and len(result) == 3

            # the dashboard's stream variable, with its channel/region variables set as Grafana would
            variables = {v["name"]: v for v in json.loads(DASHBOARD.read_text())["templating"]["list"]}
            template = variables["stream"]["query"]["query"]
            match = template.split("(", 1)[1].rsplit(",", 1)[0]  # label_values(<selector>, stream)

            def streams_for(channel: str, region: str) -> list[str]:
                selector = match.replace("$channel", channel).replace("$site_region", region)
                url = f"{prom.url}/api/v1/label/stream/values?" + urllib.parse.urlencode({"match[]": selector})
                with urllib.request.urlopen(url, timeout=10) as r:
                    return sorted(json.load(r)["data"])

            assert streams_for(".*", ".*") == ["a", "b", "c"]  # All: streams without the labels too
            assert streams_for("news", ".*") == ["a"]
            assert streams_for("(news|sport)", "us") == ["b"]

            req = urllib.request.Request(h.url + "/api/v1/streams/b", method="DELETE")
            with urllib.request.urlopen(req, timeout=10) as r:
                assert r.status == 204
            wait_for(lambda: not prom.query('fvq_stream_info{stream="b"}'), 10, "b's info gone from Prometheus")
            assert len(prom.query(joined)) == 2
        finally:
            prom.close()
