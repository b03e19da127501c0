"""The shipped Prometheus rules: valid for promtool, unit-tested per alert, and the generator's default output."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml

from stream.ops.alert_rules import RuleSettings, render
from stream.ops.recommend import ALERTS
from tests.conftest import need

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy" / "prometheus" / "fvq_alerts.yml"
RULE_TESTS = ROOT / "deploy" / "prometheus" / "fvq_alerts_test.yml"


def promtool(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([need("promtool"), *args], capture_output=True, text=True, timeout=60)


def test_promtool_checks_the_rules():
    r = promtool("check", "rules", str(RULES))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "SUCCESS: 23 rules found" in r.stdout


def test_promtool_unit_tests_pass():
    r = promtool("test", "rules", str(RULE_TESTS))
    assert r.returncode == 0, r.stdout + r.stderr


def test_every_alert_is_unit_tested_firing_and_silent():
    shipped = {rule["alert"] for g in yaml.safe_load(RULES.read_text())["groups"] for rule in g["rules"]
               if "alert" in rule}
    assert shipped == set(ALERTS)
    fired, silent = set(), set()
    for case in yaml.safe_load(RULE_TESTS.read_text())["tests"]:
        for t in case.get("alert_rule_test", []):
            (fired if t["exp_alerts"] else silent).add(t["alertname"])
            for a in t["exp_alerts"]:
                cause = ALERTS[t["alertname"]]
                assert a["exp_labels"]["cause"] == cause.name and a["exp_labels"]["severity"] == cause.severity
                assert a["exp_annotations"]["action"] == cause.action
    assert fired == shipped
    assert silent == shipped


def test_shipped_file_is_the_generators_default_output():
    assert RULES.read_text() == render(RuleSettings())
    out = subprocess.run([sys.executable, "-m", "stream.ops.alert_rules"], capture_output=True, text=True, cwd=ROOT,
                         check=True).stdout
    assert out == RULES.read_text()


def test_generator_options_and_monitor_config(tmp_path):
    cfg = tmp_path / "fvq.yaml"
    cfg.write_text("alerts:\n  low_quality_threshold: 55\n  dimension_threshold: 30\n  baseline_drop_points: 20\n"
                   "server:\n  public_url: https://fvq.example.com/\n")
    out = tmp_path / "rules.yml"
    r = subprocess.run([sys.executable, "-m", "stream.ops.alert_rules", "--config", str(cfg), "--all-for", "5s",
                        "--keep-firing-for", "3s", "--low-bitrate", "800000", "--job", "fvq-edge",
                        "--baseline-window", "1h", "--colour-shift", "0.2", "--out", str(out)],
                       capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    rules = {x.get("alert") or x["record"]: x for g in yaml.safe_load(out.read_text())["groups"] for x in g["rules"]}
    assert rules["FvqQualityLow"]["expr"].startswith("fvq_quality_score < 55 ")
    assert rules["FvqQualityLow"]["for"] == "5s" and rules["FvqStalls"]["keep_firing_for"] == "3s"
    assert "< 30 " in rules["FvqCompression"]["expr"]
    assert "< 800000 " in rules["fvq:stream_bitrate_bits_per_second:low"]["expr"]
    assert rules["FvqMonitorDown"]["expr"] == 'up{job="fvq-edge"} == 0'
    # the stream's own baseline: its window, how far below it, and the colour shift, from the config and options
    assert "[1h])" in rules["fvq:dimension_score:baseline"]["expr"]
    assert rules["FvqBelowBaseline"]["expr"].startswith("fvq:dimension_score:baseline - fvq:dimension_score:preferred > 20 ")
    assert rules["FvqColourShift"]["expr"].startswith("fvq:picture_light:shift > 0.2 ")
    # the stream's page and the cause's evidence frame, at the config's server.public_url
    notes = rules["FvqCompression"]["annotations"]
    assert notes["stream_url"] == "https://fvq.example.com/streams/{{ $labels.stream }}"
    assert notes["evidence_url"] == "https://fvq.example.com/streams/{{ $labels.stream }}/evidence/compression.jpg"
    assert "evidence_url" not in rules["FvqStreamDown"]["annotations"]  # no picture to show
    assert "stream_url" not in rules["FvqMonitorDown"]["annotations"]  # not a stream's alert
    check = promtool("check", "rules", str(out))
    assert check.returncode == 0, check.stdout + check.stderr


def test_generator_refuses_a_bad_duration():
    r = subprocess.run([sys.executable, "-m", "stream.ops.alert_rules", "--for", "2 minutes"], capture_output=True,
                       text=True, cwd=ROOT)
    assert r.returncode == 2 and "--for '2 minutes' is not a Prometheus duration" in r.stderr
