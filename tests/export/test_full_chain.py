"""The `full` rater end to end per family: a tiny base model saved like a hub download (bf16 or fp32, sharded
safetensors, BPE tokenizer with a chat template, preprocessor_config) -> train.fit --size full (Stage I + II,
LoRA on the LLM and the vision tower) -> fvq export (merge, int8/int4/bf16/fp32, manifest) -> fvq score on a clip
-> fvq serve --bundle on a live file stream (realtime) with /metrics scraped."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from safetensors import safe_open

from tests.conftest import free_port
from tests.export.base_folders import save_base_folder

ROOT = Path(__file__).resolve().parents[2]
CHAINS = [("qwen2_vl", "bfloat16"), ("qwen2_5_vl", "float32"), ("internvl", "bfloat16")]  # both dtypes, every family
SIZES = {"qwen2_vl": ([28, 84], [56, 56]), "qwen2_5_vl": ([28, 84], [56, 56]), "internvl": ([28, 28], [28, 28])}
# A vision-tower weight: its name in the rater (transformers' module names) and in the checkpoint (the hub layout
# save_pretrained writes back).
VISION_WEIGHT = {"qwen2_vl": ("model.visual.blocks.0.attn.qkv.weight", "visual.blocks.0.attn.qkv.weight"),
                 "qwen2_5_vl": ("model.visual.blocks.0.attn.qkv.weight", "visual.blocks.0.attn.qkv.weight"),
                 "internvl": ("model.vision_tower.encoder.layer.0.attention.q_proj.weight",
                              "vision_tower.encoder.layer.0.attention.q_proj.weight")}


def run(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    assert out.returncode == 0, f"{args[:3]} failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
    return out


@pytest.fixture(scope="session")
def chain_corpus(tmp_path_factory) -> Path:
    """Twelve one-and-a-half-second clips of the synthetic corpus, shared by every chain."""
    from train.corpus import build_corpus

    root = tmp_path_factory.mktemp("full_corpus")
    build_corpus(root, seed=0, clips=12, duration=1.5, workers=1, progress=False)
    return root


def stored_dtypes(path: Path) -> set[str]:
    with safe_open(str(path), "pt") as f:
        return {str(f.get_slice(k).get_dtype()) for k in f.keys()}


def scrape_score(port: int, stream: str, deadline: float) -> tuple[float | None, str]:
    text = ""
    while time.monotonic() < deadline:
        try:
            text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2).read().decode()
        except OSError:
            time.sleep(0.5)
            continue
        for line in text.splitlines():
            if line.startswith(f'fvq_quality_score{{stream="{stream}"}}'):
                return float(line.rsplit(" ", 1)[1]), text
        time.sleep(0.5)
    return None, text


@pytest.mark.slow
@pytest.mark.parametrize("family,dtype", CHAINS, ids=[f"{f}-{d}" for f, d in CHAINS])
def test_base_folder_to_trained_exported_scored_and_served(family, dtype, chain_corpus, tmp_path):
    base = save_base_folder(tmp_path / "base", family, dtype)
    assert len(list(base.glob("model-*-of-*.safetensors"))) > 1  # sharded, as real checkpoints are

    # train.fit --size full: Stage I (level words) then Stage II (MOS), LoRA on the LLM and the vision tower
    bundle = tmp_path / "trained"
    run("-m", "train.fit", "--root", str(chain_corpus), "--out", str(bundle), "--size", "full", "--base-model",
        str(base), "--epochs1", "2", "--epochs2", "2", "--threads", "1", "--no-eval", "--cache", str(tmp_path / "cache"))
    manifest = json.loads((bundle / "manifest.json").read_text())
    model = manifest["model"]
    assert model["family"] == family and model["size"] == "full" and model["dtype"] == dtype
    assert stored_dtypes(bundle / "model.safetensors") == {"BF16" if dtype == "bfloat16" else "F32"}  # one dtype
    assert len(manifest["training"]["stage1"]["history"]) == 2 and len(manifest["training"]["stage2"]["history"]) == 2
    # the base tokenizer's own splits: " excellent" is several BPE tokens and scores by its first
    assert model["base"]["level_words"]["excellent"][0] == "Ġexcel" and len(model["base"]["level_words"]["excellent"]) > 1
    assert "<|im_start|>assistant" in model["base"]["prompt_text"]  # its chat template
    streams = manifest["extractors"][0]["streams"]
    assert [streams["spatial"]["size_hw"], streams["portrait"]["size_hw"]] == list(SIZES[family])
    assert streams["spatial"]["encoder"].endswith("(+ LoRA)") and streams["temporal"]["tokens"] >= 2
    with safe_open(str(bundle / "model.safetensors"), "pt") as f:  # the vision LoRA was trained and merged in
        trained = f.get_tensor("hf." + VISION_WEIGHT[family][0]).float()
    index = json.loads((base / "model.safetensors.index.json").read_text())["weight_map"]
    with safe_open(str(base / index[VISION_WEIGHT[family][1]]), "pt") as f:
        original = f.get_tensor(VISION_WEIGHT[family][1]).float()
    assert (trained - original).abs().max() > 0

    # fvq export: merged weights once, every precision checked on real frames and measured on the test split
    exported = tmp_path / "exported"
    run("-m", "fvq", "export", str(bundle), "--out", str(exported), "--eval-root", str(chain_corpus))
    em = json.loads((exported / "manifest.json").read_text())
    assert em["format_version"] == 2 and em["rater"]["runtime"] == "torch"
    assert {"fp32", "bf16", "int8", "int4"} <= set(em["precisions"]) and em["rater"]["precision"] in em["precisions"]
    assert em["parity"]["max_abs"]["int8"]["score"] < 2.0 and em["parity"]["max_abs"]["int4"]["score"] < 5.0
    stored = "bf16" if dtype == "bfloat16" else "fp32"
    assert em["model"]["dtype"] == dtype and em["rater"]["reason"]
    assert em["parity"]["max_abs"][stored]["score"] < 1e-3
    for precision, row in em["eval"]["table"].items():
        assert row["clips"] >= 1 and row["rater_ms_per_window"] > 0 and row["model_bytes"] > 0, precision
        assert 0.0 <= row[f"clip_score_max_abs_vs_{stored}"] < 10.0, precision  # the accuracy change, measured
    assert em["eval"]["table"][stored][f"clip_score_max_abs_vs_{stored}"] == 0.0
    assert em["model_bytes"]["bf16"] < em["model_bytes"]["fp32"]

    # fvq score on a clip, at the precision the export chose
    clip = next((chain_corpus / "test" / "videos").glob("*.mp4"))
    report = json.loads(run("-m", "fvq", "score", "--bundle", str(exported), "--json", str(clip))
                        .stdout.strip().splitlines()[-1])
    assert "error" not in report, report
    assert 0.0 <= report["score"] <= 100.0 and report["windows"]

    # fvq serve --bundle on a live stream: the file read in real time, looped; /metrics publishes its score
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    served = subprocess.Popen([sys.executable, "-m", "fvq", "serve", "--workers", "1", "--bundle", str(exported), "--port",
                               str(port), "--loop", "--duration", "40", f"cam={clip}"], cwd=ROOT, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        score, text = scrape_score(port, "cam", time.monotonic() + 40)
    finally:
        served.terminate()
        out, _ = served.communicate(timeout=20)
    assert score is not None, f"no fvq_quality_score for cam:\n{text[-1500:]}\n{out[-2000:]}"
    assert 0.0 <= score <= 100.0 and np.isfinite(score)
    assert 'fvq_windows_analysed_total{stream="cam"}' in text
