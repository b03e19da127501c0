"""The GPU benchmark of the accelerated torch path (benchmarks/cuda.py), run on the CPU with a tiny Qwen2-VL."""

from __future__ import annotations

import json


def test_the_gpu_benchmark_runs_its_variants_and_records_their_error_against_fp32(tmp_path):
    from benchmarks.cuda import main

    out = tmp_path / "rows.json"
    assert main(["--shape", "tiny-vl", "--device", "cpu", "--batches", "1", "2", "--variants", "fp32", "bf16",
                 "--repeats", "1", "--json", str(out)]) == 0
    rows = {r["variant"]: r for r in json.loads(out.read_text())["rows"]}
    assert "error" not in rows["fp32"] and "error" not in rows["bf16"], rows
    assert rows["fp32"]["b2"]["max_abs_diff_vs_fp32"] == 0.0
    assert 0.0 < rows["bf16"]["b2"]["max_abs_diff_vs_fp32"] < 1.0  # bf16 moves raw 0..100 scores, a little
    assert rows["bf16"]["windows_per_s"] > 0
