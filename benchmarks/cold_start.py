"""Start-up cost of installs side by side: `fvq serve --help`, and `fvq serve` from process start to its first window.

    python -m benchmarks.cold_start --runs 5 \\
        --install main=/work/main/.venv/bin/python --install base=/tmp/venv/bin/python@ --install dev=.venv/bin/python@.

Each `--install LABEL=PYTHON[@PYTHONPATH]` names an interpreter that runs `python -m fvq` (`@DIR` sets PYTHONPATH to
DIR; a bare `@` or none clears it, so the interpreter's own installed fvq-live runs). Every command runs from a
scratch folder outside any checkout, on the demo's two sample streams (paced in real time, looped, default workers),
with `--port 0` (and `--workers N` when given); the first window counts when /metrics shows `fvq_windows_analysed_total` above zero. Runs
alternate between installs so that a loaded host weighs on each alike; the plain decode of the clean sample
(PyAV, every frame, in this process) is timed in each round as the host-load reference.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import statistics
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = [ROOT / "samples" / "clean.mp4", ROOT / "samples" / "degraded.mp4"]
WINDOWS = re.compile(r"^fvq_windows_analysed_total\{[^}]*\} ([0-9.e+]+)$", re.M)


def _env(pythonpath: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    if pythonpath:
        env["PYTHONPATH"] = str(Path(pythonpath).resolve())
    return env


def help_seconds(python: str, pythonpath: str | None, cwd: Path) -> float:
    t0 = time.perf_counter()
    subprocess.run([python, "-m", "fvq", "serve", "--help"], cwd=cwd, env=_env(pythonpath), check=True,
                   capture_output=True, timeout=120)
    return time.perf_counter() - t0


def first_window_seconds(python: str, pythonpath: str | None, cwd: Path, workers: str | None = None,
                         timeout: float = 120.0) -> float:
    """From Popen to the first /metrics answer that counts an analysed window."""
    t0 = time.perf_counter()
    extra = ["--workers", workers] if workers else []
    proc = subprocess.Popen([python, "-m", "fvq", "serve", "--config", "demo.yaml", "--port", "0", *extra], cwd=cwd,
                            env=_env(pythonpath), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        url = None
        assert proc.stdout is not None
        for line in proc.stdout:  # the start-up lines: the address comes with the "serving" one
            m = re.search(r"serving (http://\S+)/metrics", line)
            if m:
                url = m.group(1)
                break
        if url is None:
            raise RuntimeError(f"{python} -m fvq serve exited ({proc.wait()}) without serving")
        while time.perf_counter() - t0 < timeout:
            try:
                text = urllib.request.urlopen(f"{url}/metrics", timeout=5).read().decode()
            except OSError:
                text = ""
            if any(float(v) > 0 for v in WINDOWS.findall(text)):
                return time.perf_counter() - t0
            time.sleep(0.02)
        raise RuntimeError(f"no window published within {timeout:.0f} s")
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def plain_decode_seconds(path: Path) -> float:
    import av

    t0 = time.perf_counter()
    with av.open(str(path)) as container:
        for _ in container.decode(video=0):
            pass
    return time.perf_counter() - t0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--install", action="append", required=True, metavar="LABEL=PYTHON[@PYTHONPATH]")
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--help-runs", type=int, default=5)
    p.add_argument("--workers", help="passed to `fvq serve` (default: the config's, `auto`)")
    args = p.parse_args()
    installs = []
    for spec in args.install:
        label, _, rest = spec.partition("=")
        python, _, pythonpath = rest.partition("@")
        installs.append((label, python, pythonpath or None))
    with tempfile.TemporaryDirectory(prefix="fvq-cold-start-") as tmp:
        cwd = Path(tmp)
        for s in SAMPLES:
            shutil.copy(s, cwd / s.name)
        (cwd / "demo.yaml").write_text("sources:\n  - {name: clean, url: clean.mp4, loop: true}\n"
                                       "  - {name: degraded, url: degraded.mp4, loop: true}\n")
        helps: dict[str, list[float]] = {label: [] for label, _, _ in installs}
        starts: dict[str, list[float]] = {label: [] for label, _, _ in installs}
        decodes: list[float] = []
        for _ in range(args.help_runs):
            for label, python, pythonpath in installs:
                helps[label].append(help_seconds(python, pythonpath, cwd))
        for r in range(args.runs):
            decodes.append(plain_decode_seconds(cwd / "clean.mp4"))
            for label, python, pythonpath in installs:
                starts[label].append(first_window_seconds(python, pythonpath, cwd, args.workers))
                print(f"run {r + 1}: {label} first window after {starts[label][-1]:.2f} s", flush=True)
    print(f"plain decode of clean.mp4 (PyAV, this process): median {statistics.median(decodes):.3f} s over "
          f"{len(decodes)} rounds")
    for label, python, pythonpath in installs:
        h, s = helps[label], starts[label]
        print(f"{label:>8}: `fvq serve --help` median {statistics.median(h):.3f} s (min {min(h):.3f}, n={len(h)}); "
              f"first window median {statistics.median(s):.2f} s (min {min(s):.2f}, max {max(s):.2f}, n={len(s)})"
              f"  [{python}{' PYTHONPATH=' + pythonpath if pythonpath else ''}]")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
