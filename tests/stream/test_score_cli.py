"""`fvq score --json`: the output contract, and bad inputs that get an error line while the others are scored."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import make_face_clip


def fvq(*args: str, timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fvq", *args], capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture(scope="module")
def bad_inputs(media_dir: Path) -> dict[str, Path]:
    good = make_face_clip(media_dir / "short.mp4", seconds=5)
    truncated = media_dir / "truncated.mp4"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 3])
    noise = media_dir / "random.mp4"
    noise.write_bytes(bytes(range(256)) * 64)
    audio = media_dir / "audio_only.m4a"
    subprocess.run(["ffmpeg", "-nostdin", "-y", "-loglevel", "error", "-f", "lavfi", "-i", "sine=d=2",
                    "-c:a", "aac", str(audio)], check=True)
    ts_cut = media_dir / "cut.ts"
    make_face_clip(ts_cut, seconds=5, extra=("-f", "mpegts"))
    ts_cut.write_bytes(ts_cut.read_bytes()[: int(ts_cut.stat().st_size * 0.6)])
    return {"good": good, "truncated": truncated, "random": noise, "audio": audio, "missing": media_dir / "nope.mp4",
            "cut_ts": ts_cut}


def test_score_json_contract_and_bad_inputs(bad_inputs):
    order = ["good", "random", "audio", "missing", "cut_ts", "truncated"]
    out = fvq("score", "--json", "--no-model", *[str(bad_inputs[k]) for k in order])
    assert out.returncode == 1, out.stderr
    lines = [json.loads(line) for line in out.stdout.splitlines()]
    assert [line["path"] for line in lines] == [str(bad_inputs[k]) for k in order]
    good = lines[0]
    assert set(good) >= {"path", "dimensions", "face_presence", "windows"}
    assert "score" not in good  # no model loaded: absent, not invented
    assert set(good["dimensions"]) == {"blur", "noise", "color", "artifact", "luminance", "temporal"}
    assert all(0 <= v <= 100 for v in good["dimensions"].values())
    assert good["face_presence"] > 0.8
    assert len(good["windows"]) == 2 and good["windows"][0]["start"] == 0.0
    by = dict(zip(order, lines, strict=True))
    assert "not a video file" in by["random"]["error"]
    assert "no video stream" in by["audio"]["error"]
    assert "no such file" in by["missing"]["error"]
    # a stream cut short still scores what it had, with a warning or cleanly
    assert "error" not in by["cut_ts"] and by["cut_ts"]["windows"]
    assert "error" in by["truncated"] or by["truncated"]["windows"] is not None


def test_score_human_output(bad_inputs):
    out = fvq("score", "--no-model", str(bad_inputs["good"]))
    assert out.returncode == 0, out.stderr
    assert "blur" in out.stdout and "2 windows" in out.stdout


def test_bad_config_names_the_field(tmp_path):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("window:\n  lenght_s: 3\nsources: []\n")
    out = fvq("serve", "--config", str(cfg), "--no-model", "--duration", "1")
    assert out.returncode == 2
    assert "window.lenght_s" in out.stderr and "unknown key" in out.stderr
    cfg.write_text("sources:\n  - name: 'bad name!'\n    url: x.mp4\n")
    out = fvq("serve", "--config", str(cfg), "--no-model", "--duration", "1")
    assert out.returncode == 2 and "sources.0.name" in out.stderr


def test_score_names_a_colour_pipeline_that_switched_within_the_file(tmp_path):
    root = Path(__file__).resolve().parents[2]
    swapped = tmp_path / "swapped.mp4"
    subprocess.run(["ffmpeg", "-nostdin", "-y", "-loglevel", "error", "-i", str(root / "samples" / "clean.mp4"),
                    "-t", "8", "-vf", "shuffleplanes=0:2:1:enable='gte(t,4)'", "-c:v", "libx264", "-crf", "18",
                    "-preset", "veryfast", "-pix_fmt", "yuv420p", str(swapped)], check=True)
    out = fvq("score", "--json", "--no-model", str(swapped), str(root / "samples" / "clean.mp4"))
    assert out.returncode == 0, out.stderr
    got, clean = (json.loads(line) for line in out.stdout.splitlines())
    (switch,) = got["colour_switches"]
    assert switch["switch"] == "swap" and 4.0 <= switch["at"] <= 4.6, switch  # the first sampled picture after it
    assert "colour_switches" not in clean
    text = fvq("score", "--no-model", str(swapped)).stdout
    assert "colour pipeline switched: swap at 4." in text, text
