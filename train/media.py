"""Face sources rendered as pristine clips (camera motion, lighting drift, face boxes that follow the picture), their
soft face masks, and H.264 mp4 files written and read back."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import numpy as np

from train.face_sources import (
    CARPHONE_BAND,
    CARPHONE_FACE_TRACK,
    CARPHONE_FPS,
    VERTICAL_CROP_SCALE,
    FaceSource,
    source_by_name,
)


@dataclass
class RenderedClip:
    """A pristine clip: frames (T, H, W, 3) RGB uint8 at `fps`, face boxes (T, 4) as x, y, w, h."""

    source: str
    frames: np.ndarray
    fps: float
    boxes: np.ndarray
    meta: dict = field(default_factory=dict)

    @property
    def size(self) -> tuple[int, int]:
        return int(self.frames.shape[2]), int(self.frames.shape[1])


def _trajectory(rng: np.random.Generator, t: np.ndarray, period: float | None, amp: float,
                freqs: tuple[float, float], n: int) -> np.ndarray:
    """Smooth random path: a sum of `n` sinusoids with random phases, frequencies in `freqs` (Hz).
    With `period`, frequencies are whole cycles per period so the path loops seamlessly."""
    out = np.zeros_like(t)
    for _ in range(n):
        f = rng.uniform(*freqs)
        if period:
            f = max(1, round(f * period)) / period
        out += rng.uniform(0.5, 1.0) * np.sin(2 * np.pi * f * t + rng.uniform(0, 2 * np.pi))
    return amp * out / n


def window_height(src: FaceSource, width: int, height: int) -> float:
    """Height in source pixels of the window a `width`x`height` render shows (before the camera's zoom)."""
    if src.kind == "video":
        return float(CARPHONE_BAND[3])
    ih, iw = src.loader().shape[:2]
    wanted = src.crop_height if width >= height else (src.crop_height_v or VERTICAL_CROP_SCALE * src.crop_height)
    return float(min(wanted, ih, iw * height / width))


def _render_still(src: FaceSource, width: int, height: int, fps: float, n: int, seed: int,
                  loop: bool) -> tuple[np.ndarray, np.ndarray]:
    import cv2

    img = src.loader()
    ih, iw = img.shape[:2]
    crop_h = window_height(src, width, height)
    fx, fy, fw, fh = src.face
    # warpAffine's cubic kernel does not low-pass: shrinking a photo 2-3x through it aliases fine texture
    # (hair, fabric) into what every noise measure reads as grain, so the "pristine" reference would be
    # noisy. Shrink with area averaging first, to just above the output scale (the zoom stays a resample).
    k = 1.15 * height / crop_h
    if k < 1.0:
        img = cv2.resize(img, (max(1, round(iw * k)), max(1, round(ih * k))), interpolation=cv2.INTER_AREA)
        k_y, k_x = img.shape[0] / ih, img.shape[1] / iw
        ih, iw = img.shape[:2]
        fx, fy, fw, fh = fx * k_x, fy * k_y, fw * k_x, fh * k_y
        crop_h *= k_y
    crop_w = crop_h * width / height
    # Window centre so that the face centre lands at `face_at`, then kept inside the photo.
    cx = fx + fw / 2 + (0.5 - src.face_at[0]) * crop_w
    cy = fy + fh / 2 + (0.5 - src.face_at[1]) * crop_h
    cx = float(np.clip(cx, crop_w / 2, iw - crop_w / 2))
    cy = float(np.clip(cy, crop_h / 2, ih - crop_h / 2))

    rng = np.random.default_rng([src.motion_seed, seed])
    t = np.arange(n) / fps
    period = n / fps if loop else None
    # Slow pan (a few % of the window), slow zoom (up to ~6 %), tiny roll, and a hand-held shake.
    pan_x = _trajectory(rng, t, period, 0.05 * crop_w, (0.05, 0.3), 3)
    pan_y = _trajectory(rng, t, period, 0.035 * crop_h, (0.05, 0.3), 3)
    zoom = 1.03 + _trajectory(rng, t, period, 0.03, (0.05, 0.25), 2)
    roll = _trajectory(rng, t, period, math.radians(1.2), (0.05, 0.3), 2)
    shake_x = _trajectory(rng, t, period, 0.004 * crop_w, (2.0, 5.0), 4)
    shake_y = _trajectory(rng, t, period, 0.004 * crop_h, (2.0, 5.0), 4)
    # Lighting drift: a slow exposure change of about 3 % and a slight white-balance wander.
    gain = 1.0 + _trajectory(rng, t, period, 0.03, (0.05, 0.2), 2)
    tint = np.stack([_trajectory(rng, t, period, 0.012, (0.05, 0.2), 2) for _ in range(3)], axis=1)

    corners = np.array([[fx, fy, 1], [fx + fw, fy, 1], [fx, fy + fh, 1], [fx + fw, fy + fh, 1]], np.float64)
    frames = np.empty((n, height, width, 3), np.uint8)
    boxes = np.empty((n, 4), np.float64)
    for i in range(n):
        scale = width / crop_w * zoom[i]
        c, s = math.cos(roll[i]) * scale, math.sin(roll[i]) * scale
        px, py = cx + pan_x[i] + shake_x[i], cy + pan_y[i] + shake_y[i]
        # dst = scale * R * (src - p) + centre of the output
        m = np.array([[c, -s, width / 2 - (c * px - s * py)], [s, c, height / 2 - (s * px + c * py)]])
        warped = cv2.warpAffine(img, m, (width, height), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT101)
        lit = warped.astype(np.float32) * (gain[i] * (1.0 + tint[i])).astype(np.float32)
        frames[i] = np.clip(lit + 0.5, 0, 255).astype(np.uint8)
        pts = corners @ m.T
        x0, y0 = pts.min(axis=0)
        x1, y1 = pts.max(axis=0)
        boxes[i] = (x0, y0, x1 - x0, y1 - y0)
    return frames, boxes


def _carphone_box(index: float) -> np.ndarray:
    track = CARPHONE_FACE_TRACK
    return np.array([np.interp(index, track[:, 0], track[:, k]) for k in range(1, 5)])


def _render_video(src: FaceSource, width: int, height: int, fps: float, n: int) -> tuple[np.ndarray, np.ndarray]:
    import cv2

    video = src.loader()
    start, end = src.segment
    length = end - start
    bx, by, bw, bh = CARPHONE_BAND
    sx, sy = width / bw, height / bh
    frames = np.empty((n, height, width, 3), np.uint8)
    boxes = np.empty((n, 4), np.float64)
    for i in range(n):
        # Time-resample to `fps`; past the segment's end play it backwards (ping-pong), so any duration works.
        pos = int(i / fps * CARPHONE_FPS) % (2 * length - 2)
        idx = start + (pos if pos < length else 2 * length - 2 - pos)
        band = video[idx, by:by + bh, bx:bx + bw]
        x, y, w, h = _carphone_box(idx)
        x -= bx
        y -= by
        if src.mirror:
            band = band[:, ::-1]
            x = bw - x - w
        frames[i] = cv2.resize(band, (width, height), interpolation=cv2.INTER_CUBIC)
        boxes[i] = (x * sx, y * sy, w * sx, h * sy)
    return frames, boxes


def render(source: FaceSource | str, width: int, height: int, fps: float, duration: float, seed: int = 0,
           loop: bool = False) -> RenderedClip:
    """Render `duration` seconds of a source at `width`x`height` and `fps` as a pristine clip.

    Stills get camera motion from smooth random trajectories seeded by (source, seed); with `loop` the
    motion is periodic over the clip so it can be played in a loop. Face boxes follow the motion exactly
    (the measured box is pushed through each frame's affine warp)."""
    src = source_by_name(source) if isinstance(source, str) else source
    n = max(2, int(round(duration * fps)))
    if src.kind == "still":
        frames, boxes = _render_still(src, width, height, fps, n, seed, loop)
    else:
        frames, boxes = _render_video(src, width, height, fps, n)
    meta = {"source": src.name, "group": src.group, "width": width, "height": height, "fps": fps}
    return RenderedClip(src.name, frames, float(fps), boxes, meta)


def render_cut(first: FaceSource | str, second: FaceSource | str, at: float, width: int, height: int, fps: float,
               duration: float, seed: int = 0) -> RenderedClip:
    """A clip with a hard scene cut: `first` until `at` seconds, then `second` (same size and rate; its camera
    motion seeded one higher, so two framings of one photo do not move in lockstep across the cut)."""
    a = render(first, width, height, fps, duration, seed)
    b = render(second, width, height, fps, duration, seed + 1)
    k = min(len(a.frames) - 1, max(1, int(round(at * fps))))
    frames = np.concatenate([a.frames[:k], b.frames[k:]])
    boxes = np.concatenate([a.boxes[:k], b.boxes[k:]])
    meta = dict(a.meta, cut_to=b.source, cut_at=k / fps)
    return RenderedClip(a.source, frames, float(fps), boxes, meta)


def face_mask(boxes: np.ndarray, width: int, height: int) -> np.ndarray:
    """Soft face masks (T, H, W) float32 in [0, 1]: an ellipse a little larger than the face box (to take
    hair and chin), 1 inside, feathered to 0 over the outer ~30 % of its radius."""
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    masks = np.empty((len(boxes), height, width), np.float32)
    for i, (x, y, w, h) in enumerate(boxes):
        cx, cy = x + w / 2, y + h / 2
        ax, ay = max(w * 0.65, 1.0), max(h * 0.72, 1.0)
        r = np.sqrt(((xs - cx) / ax) ** 2 + ((ys - cy) / ay) ** 2)
        z = np.clip((1.15 - r) / 0.3, 0.0, 1.0)
        masks[i] = z * z * (3 - 2 * z)
    return masks


def write_mp4(path: str | Path, frames: np.ndarray | Sequence[np.ndarray], fps: float,
              pts: Sequence[float] | None = None, crf: float | None = 14, bitrate: int | None = None,
              preset: str = "medium") -> None:
    """Write RGB frames as H.264 yuv420p mp4. `pts` (seconds) makes it variable frame rate, so gaps in
    the timestamps survive in the file; by default frames are 1/fps apart. Either `crf` or `bitrate`
    (bits/s) sets the quality."""
    import av

    frames = list(frames)
    height, width = frames[0].shape[:2]
    rate = Fraction(fps).limit_denominator(1001)
    tb = Fraction(1, 90000)
    times = [i / fps for i in range(len(frames))] if pts is None else list(pts)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=rate)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.codec_context.time_base = tb
        stream.codec_context.thread_count = 1
        options = {"preset": preset}
        if bitrate:
            stream.codec_context.bit_rate = int(bitrate)
            options["x264-params"] = f"vbv-maxrate={int(bitrate) // 1000}:vbv-bufsize={int(bitrate) // 1000}"
        else:
            options["crf"] = str(crf)
        stream.options = options
        for frame, t in zip(frames, times, strict=True):
            vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
            vf.pts, vf.time_base = int(round(t / tb)), tb
            for packet in stream.encode(vf):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def read_mp4(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Decode a video into RGB frames (T, H, W, 3) and presentation times in seconds (T,)."""
    import av

    frames, times = [], []
    with av.open(str(path)) as container:
        for frame in container.decode(video=0):
            frames.append(frame.to_ndarray(format="rgb24"))
            times.append(float(frame.pts * frame.time_base) if frame.pts is not None else float("nan"))
    return np.stack(frames), np.array(times)
