"""The distortion-family catalogue: every layer reads it, and a new family reaches every layer from one entry."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from engines import families as F
from engines import signals
from engines.bundle import shipped_bundle
from stream.config import AlertConfig
from stream.ops.alert_rules import RuleSettings, build_rules
from stream.ops.recommend import ALERTS, MONITOR_CAUSES, window_causes
from train import distortions as D

ROOT = Path(__file__).resolve().parents[2]


def test_dimension_order_is_the_trained_bundles_slot_order():
    # the learned dimension head has one output per family in catalogue order (engines.rater.ratings_from_outputs):
    # a reordered catalogue would make every trained bundle's heads read the wrong slots
    assert F.DIMENSIONS == ("blur", "noise", "color", "artifact", "luminance", "temporal")
    manifest = json.loads((shipped_bundle() / "manifest.json").read_text())
    assert set(manifest["dimensions"]["learned_heads"]) <= set(F.DIMENSIONS)
    assert F.family("noise") is F.FAMILIES[1]


def test_signals_score_each_family_with_its_catalogue_curves():
    for fam in F.FAMILIES:
        assert signals.CURVES[fam.name] == dict(fam.curves)
        # every curve of the family pulls its dimension: a raw value at a falling curve's x50 halves the score
        for name, (kind, x50, _) in fam.curves.items():
            if kind == "falling":
                assert signals.dimension_score(fam.name, {name: x50}) == 50.0, (fam.name, name)
    timing = [k for fam in F.FAMILIES if fam.measured_from == F.TIMING for k in fam.curves]
    assert list(signals.thumb_signals([], [], None)) == timing


def test_each_low_family_raises_its_catalogue_cause():
    cfg = AlertConfig()
    from engines.features import WindowResult

    for fam in F.FAMILIES:
        dims = {"frame": {**dict.fromkeys(F.DIMENSIONS, 95.0), fam.name: 10.0}}
        r = WindowResult("cam", 0, 4, dims, 1.0, 0.1, 0.9)
        assert window_causes(r, False, cfg) == {fam.cause.name}, fam.name
        # at a low bitrate that shows in the picture (artifact under STARVED_ARTIFACT): the low-bitrate cause
        starved = {"frame": {**dims["frame"], "artifact": min(dims["frame"]["artifact"], 60.0)}}
        causes = window_causes(WindowResult("cam", 0, 4, starved, 1.0, 0.1, 0.9), True, cfg)
        assert (fam.low_bitrate_cause or fam.cause).name in causes, fam.name
    # every family cause is one of the monitor's, and has its alert in the one alert catalogue
    for cause in F.FAMILY_CAUSES:
        assert cause.name in MONITOR_CAUSES and ALERTS[cause.alertname] is cause


def test_each_family_feeds_exactly_its_causes_alerts():
    rules = {r["alert"]: r for g in build_rules(RuleSettings())["groups"] for r in g["rules"] if "alert" in r}
    for fam in F.FAMILIES:
        feeds = {c.alertname for c in (fam.cause, fam.low_bitrate_cause) if c is not None}
        for cause in F.FAMILY_CAUSES:
            expr = rules[cause.alertname]["expr"]
            selector = expr[expr.index("{") + 1:expr.index("}")]
            listed = selector.split('"')[1].split("|")
            assert (fam.name in listed) == (cause.alertname in feeds), (fam.name, cause.alertname, expr)


def test_the_corpus_produces_every_family_with_its_catalogue_kinds():
    assert D.FAMILIES == F.DIMENSIONS
    assert set(D.ORDER) == set(F.DIMENSIONS)
    for fam in F.FAMILIES:
        assert D.KINDS[fam.name] == fam.corpus
        for kind in fam.corpus:
            assert D.Distortion(fam.name, kind, 3).value == D.LADDER[(fam.name, kind)][2]


SEVENTH = """
import dataclasses, json
import numpy as np
from engines import families as F
ringing = F.Family("ringing", "ring", "halos around edges", F.PICTURE, {"ringing": ("falling", 1.0, 2.0)},
                   F.CAMERA, None, ("halo",), "engines.signals.blur_noise")
F.FAMILIES = (*F.FAMILIES, ringing)
F.BY_NAME["ringing"] = ringing
F.DIMENSIONS = tuple(f.name for f in F.FAMILIES)
from engines.features import FrameRecord, WindowResult
from engines.signals import window_dimensions
from stream.ops.alert_rules import RuleSettings, render
from stream.config import AlertConfig
from stream.ops.recommend import window_causes
rng = np.random.default_rng(0)
yy, xx = np.mgrid[0:180, 0:320]
squares = np.where((yy // 30 + xx // 30) % 2, 190.0, 70.0)[..., None].repeat(3, axis=2)
image = np.clip(squares + rng.normal(0, 3, squares.shape), 0, 255).astype(np.uint8)
frames = [FrameRecord(pts=i / 10, thumb=image[::5, ::5, 0].copy(), source_size=(320, 180), image=image)
          for i in range(10)]
dims = window_dimensions(frames, 10.0)
r = WindowResult("cam", 0, 1, {"frame": {"ringing": 5.0}}, 1.0, 0.1, None)
rules = render(RuleSettings())
print(json.dumps({"dims": sorted(dims["frame"]), "causes": sorted(window_causes(r, False, AlertConfig())),
                  "camera_rule": [l for l in rules.splitlines() if "color|luminance" in l]}))
try:
    import train.distortions
except ValueError as exc:
    print("corpus:", exc)
"""


def test_a_seventh_family_is_one_catalogue_entry():
    # a family that reads an existing raw measurement reaches the dimensions, the causes and the alert rules
    # from its entry alone; the corpus refuses to import until its distortions are implemented, naming them
    out = subprocess.run([sys.executable, "-c", SEVENTH], capture_output=True, text=True, cwd=ROOT,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    report = json.loads(lines[0])
    assert "ringing" in report["dims"] and "blur" in report["dims"]
    assert report["causes"] == ["camera"]
    assert len(report["camera_rule"]) == 1 and 'dimension=~"noise|color|luminance|ringing"' in report["camera_rule"][0]
    assert lines[1] == "corpus: train/distortions.py: no LADDER entry for ringing kinds halo"



def test_each_family_names_the_module_that_measures_it():
    # a family whose catalogue entry points at a missing module, or at one outside engines/signals/, fails here
    import importlib

    for fam in F.FAMILIES:
        assert fam.measured_in.startswith("engines.signals."), fam.name
        module = importlib.import_module(fam.measured_in)
        assert module.__doc__ and fam.name[:4] in module.__doc__.lower(), (fam.name, fam.measured_in)
