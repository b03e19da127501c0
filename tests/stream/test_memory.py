"""Memory of a long-running server: model batches and backlogs give their memory back; no thread pool per frame."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import av
import numpy as np
import pytest

from engines.features import FrameRecord
from stream.config import AnalysisConfig, MonitorConfig
from stream.ingest.decode import FrameConverter
from stream.live.analysis import Analyzer
from stream.live.memory import AllocatorTrimmer, malloc_trim_function
from tests.harness import MonitorHarness

pytestmark = pytest.mark.skipif(malloc_trim_function() is None, reason="needs glibc's malloc_trim")


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS in /proc/self/status")


def threads() -> int:
    return len(os.listdir("/proc/self/task"))


def test_a_backlog_batch_gives_its_memory_back(face_clip: Path) -> None:
    """The analysis runs at most 16 frames a batch; a backlog makes such batches. With onnxruntime's CPU arena
    the face models kept ~270 MiB after one (a step in RSS that never came back); now the memory returns to
    the C allocator and malloc_trim gives it to the system."""
    from stream.live.analysis import build_analyzer

    analyzer = build_analyzer(MonitorConfig(no_model=True))
    with av.open(str(face_clip)) as c:
        images = [f.to_ndarray(format="rgb24") for i, f in zip(range(80), c.decode(video=0), strict=False) if i % 5 == 0]
    pts = iter(range(10**6))

    def batch(n: int) -> None:
        analyzer.analyse_frames([
            FrameRecord(pts=float(next(pts)), thumb=np.zeros((36, 64), np.uint8), source_size=(640, 360),
                        image=images[i % len(images)], qp_map=None, arrived=time.monotonic())
            for i in range(n)])

    for _ in range(5):
        batch(1)  # steady state: one frame a batch
    trimmer = AllocatorTrimmer(every_s=0)
    trimmer.trim()
    small = rss_mib()
    for _ in range(3):
        batch(16)  # a backlog's batches
    peak = rss_mib()
    batch(1)
    trimmer.trim()
    after = rss_mib()
    assert after - small < 60, f"RSS {small:.0f} -> {peak:.0f} (16-frame batches) -> {after:.0f} MiB after trim"


def test_frame_conversion_starts_no_threads(face_clip: Path) -> None:
    """PyAV's frame.reformat() made a scaler per frame whose slice threads (one per core) lived as long as the
    frame: up to 300 threads in the soak. The converter keeps one single-threaded scaler per stream."""
    converter = FrameConverter(AnalysisConfig(sample_fps=25))
    before = threads()
    frames, records = [], []
    with av.open(str(face_clip)) as c:
        for frame, _ in zip(c.decode(video=0), range(20), strict=False):
            records.append(converter.convert(frame))
            frames.append(frame)  # a frame keeps its own reformatter (and its threads) alive
    assert sum(r.image is not None for r in records) == 20
    assert threads() <= before + 1, f"threads {before} -> {threads()} while 20 converted frames are alive"


def trim_threads() -> int:
    return sum(t.name == "malloc-trim" for t in threading.enumerate())


def test_trimmer_runs_on_its_period_and_can_be_off() -> None:
    trimmer = AllocatorTrimmer(every_s=0.05).start()
    try:
        deadline = time.monotonic() + 10
        while trimmer.trims < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert trimmer.trims >= 3
    finally:
        trimmer.stop()
    off = AllocatorTrimmer(every_s=0).start()
    time.sleep(0.2)
    assert off.trims == 0 and trim_threads() == 0


@pytest.mark.parametrize("every_s", [0.5, 0.0])
def test_the_server_trims_while_it_runs(every_s: float) -> None:
    """limits.memory_trim_every_s: the HTTP server's process runs the trimmer from start to shutdown (0: none)."""
    cfg = MonitorConfig.model_validate({"no_model": True, "limits": {"memory_trim_every_s": every_s}})
    before = trim_threads()
    with MonitorHarness(cfg, Analyzer(face=None, rater=None)) as h:
        assert h.get("/healthz")[0] == 200
        assert trim_threads() == before + (1 if every_s else 0)
    assert trim_threads() == before


ARENAS_PROBE = r"""
import ctypes, sys, tempfile, threading
from stream.live.memory import limit_arenas
if sys.argv[1] != "0":
    assert limit_arenas(int(sys.argv[1]))
libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
libc.fopen.restype = ctypes.c_void_p
barrier = threading.Barrier(12)
def work():
    blocks = [libc.malloc(1000) for _ in range(100)]  # each thread takes an arena on its first malloc
    barrier.wait()
    for b in blocks:
        libc.free(ctypes.c_void_p(b))
threads = [threading.Thread(target=work) for _ in range(12)]
for t in threads: t.start()
for t in threads: t.join()
with tempfile.NamedTemporaryFile(suffix=".xml") as f:
    out = libc.fopen(f.name.encode(), b"w")
    libc.malloc_info(0, ctypes.c_void_p(out))
    libc.fclose(ctypes.c_void_p(out))
    print(open(f.name).read().count("<heap nr="))
"""


def test_the_arena_limit_holds_for_the_threads_started_after_it() -> None:
    """limits.malloc_arenas: with the limit, 12 threads allocating at once share 2 arenas; without, they get
    one each (glibc allows 8 per core)."""
    import subprocess
    import sys

    def arenas(limit: int) -> int:
        out = subprocess.run([sys.executable, "-c", ARENAS_PROBE, str(limit)], capture_output=True, text=True,
                             timeout=60, cwd=Path(__file__).parents[2])
        assert out.returncode == 0, out.stderr
        return int(out.stdout)

    assert arenas(2) <= 2
    assert arenas(0) > 2
