"""The Grafana files load as they are: dashboard JSON shape, variables, provisioning; the example prometheus.yml."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import yaml

from tests.conftest import need

ROOT = Path(__file__).resolve().parents[2]
GRAFANA = ROOT / "deploy" / "grafana"
DASHBOARD = GRAFANA / "dashboards" / "fvq.json"


def dashboard_exprs(dash: dict) -> list[str]:
    return [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]


def test_dashboard_shape_and_variables():
    dash = json.loads(DASHBOARD.read_text())
    assert dash["uid"] == "fvq-live" and dash["schemaVersion"] >= 36
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    # the stream list follows the operator's labels (fvq_stream_info) chosen in the channel/region variables
    assert variables["stream"]["query"]["query"] == (
        'label_values(fvq_stream_info{channel=~"$channel", region=~"$site_region"}, stream)'
    )
    names = [v["name"] for v in dash["templating"]["list"]]
    assert names.index("channel") < names.index("stream") and names.index("site_region") < names.index("stream")
    for name, label in (("channel", "channel"), ("site_region", "region")):
        assert variables[name]["query"]["query"] == f"label_values(fvq_stream_info, {label})"
        assert variables[name]["includeAll"] and variables[name]["allValue"] == ".*"
    assert variables["stream"]["includeAll"] and variables["stream"]["allValue"] == ".*"
    rows = [p["title"] for p in dash["panels"] if p["type"] == "row"]
    assert rows == ["Fleet", "Stream detail: $stream", "Monitor health"]
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))
    taken = set()
    for p in dash["panels"]:
        g = p["gridPos"]
        assert g["x"] + g["w"] <= 24
        cells = {(x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])}
        assert not cells & taken, f"panel {p['title']!r} overlaps another"
        taken |= cells
        if p["type"] != "row":
            assert p["datasource"]["uid"] == "${datasource}" and p["targets"] and p["description"]
            assert all(t["datasource"]["uid"] == "${datasource}" for t in p["targets"])
    exprs = " ".join(dashboard_exprs(dash))
    for metric in ("fvq_quality_score", "fvq_quality_level", "fvq_dimension_score", "fvq_face_presence_ratio",
                   "fvq_stream_bitrate_bits_per_second", "fvq_stream_fps", "fvq_frames_dropped_total",
                   "fvq_windows_dropped_total", "fvq_window_publish_latency_seconds_bucket",
                   "fvq_stage_duration_seconds_bucket", "fvq_queue_depth_frames", "bottomk(",
                   "fvq_stream_recommendation", "fvq_analysis_shed_level", "fvq_analysis_backlog_seconds"):
        assert metric in exprs, metric


def test_stream_panels_link_to_the_stream_pages():
    dash = json.loads(DASHBOARD.read_text())
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    assert variables["fvq_url"]["type"] == "textbox" and variables["fvq_url"]["query"].startswith("http")
    assert dash["links"][0]["url"] == "${fvq_url}/"
    panels = {p["title"]: p for p in dash["panels"]}
    for title in ("Quality per stream", "Worst streams now", "Quality score"):
        (link,) = panels[title]["fieldConfig"]["defaults"]["links"]
        assert link["url"] == "${fvq_url}/streams/${__field.labels.stream}", title
    (override,) = panels["Current causes and actions"]["fieldConfig"]["overrides"]
    assert override["matcher"]["options"] == "stream"
    assert override["properties"][0]["value"][0]["url"] == "${fvq_url}/streams/${__value.raw}"


def test_provisioning_files():
    dashboards = yaml.safe_load((GRAFANA / "provisioning" / "dashboards" / "fvq.yaml").read_text())
    assert dashboards["apiVersion"] == 1
    (provider,) = dashboards["providers"]
    assert provider["type"] == "file" and provider["options"]["path"]
    sources = yaml.safe_load((GRAFANA / "provisioning" / "datasources" / "prometheus.yaml").read_text())
    (ds,) = sources["datasources"]
    assert ds["type"] == "prometheus" and ds["access"] == "proxy" and ds["url"].startswith("http")


def test_example_prometheus_config_is_valid_and_loads_the_rules():
    r = subprocess.run([need("promtool"), "check", "config", str(ROOT / "deploy" / "prometheus" / "prometheus.yml")],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "1 rule files found" in r.stdout and "23 rules found" in r.stdout
