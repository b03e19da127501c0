"""Benchmark of the face extractor on one CPU thread: ms per detect and per embedding, batch 1 and 8."""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from functools import partial

import cv2
import numpy as np

from engines.face import FaceExtractor, FaceExtractorConfig
from engines.registry import create_engine


def _ms_per_item(fn: Callable[[], object], items: int, repeats: int) -> float:
    fn()  # warm-up: first-run allocations and kernel selection
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        for _ in range(repeats):
            fn()
        best = min(best, (time.perf_counter() - start) / repeats)
    return best * 1000 / items


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--width", type=int, default=320, help="analysis frame width")
    parser.add_argument("--height", type=int, default=180, help="analysis frame height")
    parser.add_argument("--repeats", type=int, default=20, help="timed calls per measurement")
    args = parser.parse_args(argv)

    from skimage import data  # a real face; scikit-image is a dev/train dependency

    cv2.setNumThreads(1)
    engine = create_engine("onnxruntime", {"intra_op_threads": 1, "inter_op_threads": 1})
    config = FaceExtractorConfig(detect_size=max(args.width, args.height))
    extractor = FaceExtractor(config, engine=engine)

    # The astronaut photo letterboxed into a 16:9 analysis frame, so detection decodes one real face.
    portrait = cv2.resize(data.astronaut(), (args.height, args.height), interpolation=cv2.INTER_AREA)
    frame = np.zeros((args.height, args.width, 3), np.uint8)
    left = (args.width - args.height) // 2
    frame[:, left : left + args.height] = portrait
    (faces,) = extractor.detect([frame])
    if not faces:
        raise SystemExit("no face found in the benchmark frame; the detector is not working")
    face = faces[0]

    print(f"face extractor, onnxruntime, 1 thread, frames {args.width}x{args.height}")
    for batch in (1, 8):
        frames = [frame.copy() for _ in range(batch)]
        ms = _ms_per_item(partial(extractor.detect, frames), batch, args.repeats)
        print(f"detect  batch {batch}: {ms:6.2f} ms per frame")
    for batch in (1, 8):
        frames, crops = [frame] * batch, [face] * batch
        ms = _ms_per_item(partial(extractor.embed, frames, crops), batch, args.repeats)
        print(f"embed   batch {batch}: {ms:6.2f} ms per face (alignment included)")


if __name__ == "__main__":
    main()
