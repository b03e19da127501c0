"""The monitor's own causes and the shipped Prometheus rules agree at the dimension threshold, on both sides of it:
a dimension exactly at the threshold is no cause for either (the rules say `< 45`), a hair below is one for both.
Prometheus's side is judged by promtool's rule unit tests on the shipped rules file."""

from __future__ import annotations

import subprocess
from pathlib import Path

import yaml

from engines.families import FAMILIES
from engines.features import WindowResult
from stream.config import AlertConfig
from stream.ops.recommend import ALERTS, window_causes
from tests.conftest import need

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy" / "prometheus" / "fvq_alerts.yml"
CLEAN = 95.0


def _values(threshold: float) -> dict[str, float]:
    return {"below": threshold - 0.01, "at": threshold, "above": threshold + 0.01}


def _monitor_causes(dimension: str, value: float, cfg: AlertConfig) -> set[str]:
    dims = {d: CLEAN for d in (f.name for f in FAMILIES)} | {dimension: value}
    result = WindowResult("cam", 0.0, 4.0, {"face": dims, "frame": dims}, 1.0, 0.1, 0.9)
    return window_causes(result, True, cfg)  # low bitrate, as the series below say


def test_monitor_threshold_is_strictly_below():
    cfg = AlertConfig()
    t = cfg.dimension_threshold
    for family in FAMILIES:
        assert _monitor_causes(family.name, t, cfg) == set(), family.name
        assert _monitor_causes(family.name, t + 0.01, cfg) == set(), family.name
        # at a low bitrate a picture family's cause is compression only where the artifact score shows it
        # (stream.ops.recommend.STARVED_ARTIFACT): here it is clean, so the family's own cause
        assert _monitor_causes(family.name, t - 0.01, cfg) in ({family.cause_at(True).name}, {family.cause.name}), \
            family.name


def test_rules_and_monitor_raise_the_same_causes_at_the_boundary(tmp_path):
    cfg = AlertConfig()
    assert f"< {cfg.dimension_threshold:g} " in RULES.read_text()  # the shipped rules use the monitor's default
    series, expected = [], []
    for family in FAMILIES:
        for side, value in _values(cfg.dimension_threshold).items():
            stream = f"{family.name}-{side}"
            series += [
                {"series": f'fvq_dimension_score{{stream="{stream}",dimension="{d.name}",region="face"}}',
                 "values": f"{value if d.name == family.name else CLEAN}x20"} for d in FAMILIES]
            series += [{"series": f'fvq_face_presence_ratio{{stream="{stream}"}}', "values": "1x20"},
                       {"series": f'fvq_stream_up{{stream="{stream}"}}', "values": "1x20"},
                       {"series": f'fvq_stream_bitrate_bits_per_second{{stream="{stream}"}}', "values": "500000x20"}]
            for cause in sorted(_monitor_causes(family.name, value, cfg)):
                alert = next(a for a in ALERTS.values() if a.name == cause and family.name in _dimensions_of(a))
                expected.append(
                    {"labels": f'ALERTS{{alertname="{alert.alertname}",alertstate="firing",cause="{cause}",'
                               f'severity="{alert.severity}",stream="{stream}",dimension="{family.name}",'
                               f'region="face"}}', "value": 1})
    assert len(expected) == len(FAMILIES)  # one cause per family, below the threshold only
    tests = {"rule_files": [str(RULES)], "evaluation_interval": "15s",
             "tests": [{"interval": "15s", "input_series": series,
                        "promql_expr_test": [{"expr": 'ALERTS{alertstate="firing"}', "eval_time": "4m",
                                              "exp_samples": expected}]}]}
    path = tmp_path / "boundary_test.yml"
    path.write_text(yaml.safe_dump(tests, sort_keys=False))
    r = subprocess.run([need("promtool"), "test", "rules", str(path)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr


def _dimensions_of(alert) -> set[str]:
    """The dimensions an alert rule of the shipped file selects (its `dimension=~"a|b"` or `dimension="a"`)."""
    for group in yaml.safe_load(RULES.read_text())["groups"]:
        for rule in group["rules"]:
            if rule.get("alert") == alert.alertname:
                expr = rule["expr"]
                if 'dimension=~"' in expr:
                    return set(expr.split('dimension=~"', 1)[1].split('"', 1)[0].split("|"))
                if 'dimension="' in expr:
                    return {expr.split('dimension="', 1)[1].split('"', 1)[0]}
    return set()
