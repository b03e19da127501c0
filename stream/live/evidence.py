"""Evidence frames: each stream's latest analysed frame, the frame that shows each cause best, its last clean frame
and its timeline of score and dimensions, in memory, bounded, encoded as JPEG; never written to disk."""

from __future__ import annotations

import collections
import math
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from engines.families import BY_NAME, DIMENSIONS, FAMILIES, PICTURE
from engines.features import FrameRecord, Window, WindowResult
from stream.live.timeline import Timeline, preferred_region
from stream.ops.baseline import COLOUR_SWITCH, NewSwitches
from stream.ops.recommend import is_low_bitrate, window_causes

if TYPE_CHECKING:
    from stream.config import AlertConfig
    from stream.live.stream_state import StreamState

JPEG_QUALITY = 80
GREEN, RED, BLACK, WHITE = (60, 200, 60), (40, 40, 230), (0, 0, 0), (255, 255, 255)  # BGR, as cv2 draws


@dataclass
class Evidence:
    """The frame that shows one cause best over one episode of it (the windows in a row that show it)."""

    id: str
    cause: str
    family: str | None  # the distortion family whose low score is the cause (None: framing, low quality)
    region: str  # "face" or "frame": where the family was judged
    at: float  # wall time of the window that raised the cause, or of the later one that sharpened it
    window: tuple[float, float]  # that window's [start, end) in presentation time
    pts: float  # the chosen frame's presentation time
    value: float  # the window's own score of the family (lower: the cause shows more); the episode keeps its lowest
    score: float | None
    dimensions: dict[str, float]
    size: tuple[int, int]  # (width, height) of the JPEG
    jpeg: bytes
    clean_jpeg: bytes | None  # the stream's last clean frame when the cause was raised, for comparison
    raised_at: float = 0.0  # wall time of the window that opened the episode
    sharpened: int = 0  # times a later window of the episode replaced the frame

    def to_json(self, base: str) -> dict[str, Any]:
        return {
            "id": self.id, "cause": self.cause, "family": self.family, "region": self.region,
            "time": round(self.at, 3), "raised_at": round(self.raised_at, 3),
            "window": [round(self.window[0], 3), round(self.window[1], 3)], "pts": round(self.pts, 3),
            "value": round(self.value, 1), "score": None if self.score is None else round(self.score, 2),
            "dimensions": {k: round(v, 1) for k, v in self.dimensions.items()}, "sharpened": self.sharpened,
            "size": list(self.size), "url": f"{base}/evidence/{self.id}.jpg",
            "clean_url": f"{base}/evidence/{self.id}-clean.jpg" if self.clean_jpeg is not None else None,
        }


@dataclass
class _StreamFrames:
    owner: int  # id() of the StreamState this belongs to: a stream replaced under the same name starts afresh
    timeline: Timeline
    latest: bytes | None = None  # encoded when first asked for (most frames are never looked at)
    latest_frame: tuple[np.ndarray, Any] | None = None  # (image, face) it is encoded from, until then
    latest_at: float = 0.0
    latest_size: tuple[int, int] = (0, 0)
    clean: bytes | None = None
    clean_at: float = 0.0
    evidence: collections.OrderedDict[str, Evidence] = field(default_factory=collections.OrderedDict)
    episodes: dict[str, str] = field(default_factory=dict)  # cause shown by the last window -> its evidence id
    seq: int = 0
    switches: NewSwitches = field(default_factory=NewSwitches)  # the colour switches its windows reported


class EvidenceStore:
    """Per stream: the latest analysed frame (face box drawn), the last clean frame, the evidence of its recent
    causes and its timeline. Written by the analysis thread (`observe`, before the monitor's listeners, so a cause
    raised by a window already has its evidence), read by HTTP; everything is bounded per stream."""

    MAX_EVIDENCE = 6  # evidence frames per stream: the oldest leave first
    CLEAN_EVERY_S = 10.0  # the clean frame is renewed at most this often (an encode each time)
    SHARPEN_BY = 2.0  # points the family's window score must fall below the episode's evidence to replace it

    def __init__(self, alerts: AlertConfig, hop_s: float = 1.0, timeline_s: float = 3600.0,
                 frames: bool = True) -> None:
        self.alerts = alerts
        self.frames = frames  # server.frames: false keeps the timelines only
        self.timeline_points = int(math.ceil(timeline_s / max(hop_s, 0.1))) + 8
        self._streams: dict[str, _StreamFrames] = {}
        self._lock = threading.Lock()

    # the analysis thread
    def observe(self, state: StreamState, window: Window | None, result: WindowResult) -> None:
        now = time.time()
        with self._lock:
            sf = self._streams.get(state.name)
            if sf is None or sf.owner != id(state):
                sf = self._streams[state.name] = _StreamFrames(id(state), Timeline(self.timeline_points))
        sf.timeline.add(now, result)
        frames = [f for f in window.frames if f.image is not None] if window is not None and self.frames else []
        if window is None or not frames:
            return
        low = is_low_bitrate(state.bitrate_bps, state.width, state.height, state.fps, self.alerts)
        causes = window_causes(result, low, self.alerts)
        last = frames[-1]
        clean_due = not causes and now - sf.clean_at >= self.CLEAN_EVERY_S
        clean_jpeg = encode_jpeg(annotate(last.image, last.main_face)) if clean_due else None
        new: dict[str, Evidence] = {}
        with self._lock:
            sf.latest, sf.latest_frame = clean_jpeg, (None if clean_jpeg else (last.image, last.main_face))
            sf.latest_at, sf.latest_size = now, _size(last.image)
            if clean_jpeg is not None:
                sf.clean, sf.clean_at = clean_jpeg, now
            for cause in list(sf.episodes):
                if cause not in causes:
                    del sf.episodes[cause]  # the episode is over: its evidence stays until evicted
            todo = [(c, sf.evidence.get(sf.episodes.get(c, ""))) for c in sorted(causes)]
            clean = sf.clean
        for cause, open_one in todo:
            ev = self._evidence(cause, low, window, frames, result, now, open_one, clean)
            if ev is not None:
                new[cause] = ev
        switch = self._switch_evidence(sf, window, result, now)
        if switch is not None:
            new[COLOUR_SWITCH] = switch
        if not new:
            return
        with self._lock:
            for cause, ev in new.items():
                old_id = sf.episodes.get(cause)
                if old_id is not None and old_id in sf.evidence:
                    sf.evidence[old_id] = ev  # sharpened: the same id, a better frame
                    continue
                sf.seq += 1
                ev.id = f"e{sf.seq}"
                sf.episodes[cause] = ev.id
                sf.evidence[ev.id] = ev
                while len(sf.evidence) > self.MAX_EVIDENCE:
                    gone, _ = sf.evidence.popitem(last=False)
                    for c in [c for c, i in sf.episodes.items() if i == gone]:
                        del sf.episodes[c]

    def _evidence(self, cause: str, low: bool, window: Window, frames: list[FrameRecord], result: WindowResult,
                  now: float, open_one: Evidence | None, clean: bytes | None) -> Evidence | None:
        """The evidence of `cause` in this window: a new one when no episode is open, a sharper one when this
        window shows the cause clearly more than the episode's evidence, else None."""
        region = preferred_region(result)
        published = result.dimensions.get(region, {})
        family = cause_family(cause, low, published, self.alerts.dimension_threshold)
        raw = _window_scores(window, region, published)
        value = raw.get(family, float("nan")) if family else (result.score if result.score is not None else 0.0)
        if not math.isfinite(value):
            value = published.get(family, 100.0) if family else 0.0
        if open_one is not None and not value < open_one.value - self.SHARPEN_BY:
            return None
        frame = best_frame(cause, family, region, window, frames)
        image = annotate(frame.image, frame.main_face, cause_box(frame, family, region),
                         f"{cause}: {family or 'score'} {value:.0f}  t={frame.pts:.1f}s")
        ev = Evidence(
            id="", cause=cause, family=family, region=region, at=now, window=(window.start, window.end),
            pts=frame.pts, value=float(value), score=result.score, dimensions=dict(published),
            size=_size(frame.image), jpeg=encode_jpeg(image),
            clean_jpeg=open_one.clean_jpeg if open_one is not None else clean, raised_at=now,
        )
        if open_one is not None:
            ev.id, ev.raised_at, ev.sharpened = open_one.id, open_one.raised_at, open_one.sharpened + 1
        return ev

    @staticmethod
    def _switch_evidence(sf: _StreamFrames, window: Window, result: WindowResult, now: float) -> Evidence | None:
        """A colour pipeline switch the window shows first (engines/signals/colour_switch.py): the picture after it,
        and as its clean frame the picture before it (the same scene through the pipeline as it was)."""
        switches, _ = sf.switches.read(result)
        sampled = [f for f in window.frames if f.image is not None]
        for pts, kind in reversed(switches):
            # the first window that reports a switch holds the pictures on both sides of it (it was read there)
            i = next((i for i, f in enumerate(sampled) if abs(f.pts - pts) < 1e-3), 0)
            if i == 0:
                continue
            after, before = sampled[i], sampled[i - 1]
            dims = dict(result.dimensions.get(preferred_region(result), {}))
            return Evidence(
                id="", cause=COLOUR_SWITCH, family="color", region="frame", at=now, window=(window.start, window.end),
                pts=after.pts, value=dims.get("color", 100.0), score=result.score, dimensions=dims,
                size=_size(after.image),
                jpeg=encode_jpeg(annotate(after.image, after.main_face, None, f"{COLOUR_SWITCH}: {kind}  t={pts:.1f}s")),
                clean_jpeg=encode_jpeg(annotate(before.image, before.main_face, None, f"before  t={before.pts:.1f}s")),
                raised_at=now)
        return None

    # HTTP reads
    def forget(self, name: str) -> None:
        with self._lock:
            self._streams.pop(name, None)

    def latest_jpeg(self, name: str) -> bytes | None:
        """The latest analysed frame with its face box, encoded once when first asked for."""
        with self._lock:
            sf = self._streams.get(name)
            if sf is None:
                return None
            if sf.latest is not None or sf.latest_frame is None:
                return sf.latest
            frame = sf.latest_frame
        jpeg = encode_jpeg(annotate(*frame))
        with self._lock:
            if sf.latest_frame is frame:  # no newer frame came meanwhile
                sf.latest, sf.latest_frame = jpeg, None
        return jpeg

    def clean_jpeg(self, name: str) -> bytes | None:
        sf = self._streams.get(name)
        return None if sf is None else sf.clean

    def evidence_jpeg(self, name: str, ident: str) -> bytes | None:
        """`e7` (an evidence frame), `e7-clean` (the clean frame beside it) or a cause's name (its newest)."""
        with self._lock:
            sf = self._streams.get(name)
            if sf is None:
                return None
            ident, _, part = ident.partition("-")
            ev = sf.evidence.get(ident) or self._newest(sf, ident)
            if ev is None or part not in ("", "clean"):
                return None
            return ev.clean_jpeg if part == "clean" else ev.jpeg

    @staticmethod
    def _newest(sf: _StreamFrames, cause: str) -> Evidence | None:
        return next((e for e in reversed(sf.evidence.values()) if e.cause == cause), None)

    def evidence_id(self, name: str, cause: str) -> str | None:
        """The id of the evidence of the stream's open (else newest) episode of `cause`."""
        with self._lock:
            sf = self._streams.get(name)
            if sf is None:
                return None
            if cause in sf.episodes:
                return sf.episodes[cause]
            ev = self._newest(sf, cause)
            return None if ev is None else ev.id

    def describe(self, name: str, base: str) -> dict[str, Any]:
        """What GET /streams/{name} adds: the frames' URLs and the evidence list, newest first."""
        with self._lock:
            sf = self._streams.get(name)
            if sf is None:
                return {"frames": None, "evidence": []}
            frames = {
                "latest": f"{base}/frame.jpg" if sf.latest or sf.latest_frame else None, "latest_at": round(sf.latest_at, 3),
                "size": list(sf.latest_size), "clean": f"{base}/clean.jpg" if sf.clean else None,
                "clean_at": round(sf.clean_at, 3) if sf.clean else None,
            }
            return {"frames": frames, "evidence": [e.to_json(base) for e in reversed(sf.evidence.values())]}

    def timeline(self, name: str, since_s: float = 3600.0, points: int = 0) -> dict[str, Any] | None:
        sf = self._streams.get(name)
        return None if sf is None else sf.timeline.to_json(since_s, points)

    def spark(self, name: str, since_s: float, points: int) -> list[float | None]:
        sf = self._streams.get(name)
        return [] if sf is None else sf.timeline.spark(since_s, points)

    def publish_memory(self, registry) -> None:
        """`fvq_status_frames_bytes` on the monitor's registry: what memory_bytes() says, at each scrape."""
        from prometheus_client import Gauge

        try:
            Gauge("fvq_status_frames_bytes", "Bytes the status pages' frames (latest, clean, evidence) and the "
                  "streams' timelines hold in memory.", registry=registry).set_function(self.memory_bytes)
        except ValueError:  # already there: a registry shared by another monitor in this process
            pass

    def memory_bytes(self) -> int:
        """The bytes the store holds: JPEGs (shared ones counted once) and timelines."""
        with self._lock:
            seen: dict[int, int] = {}
            total = 0
            for sf in self._streams.values():
                total += sf.timeline.nbytes
                if sf.latest is None and sf.latest_frame is not None:
                    total += sf.latest_frame[0].nbytes  # held until encoded
                blobs = [sf.latest, sf.clean] + [b for e in sf.evidence.values() for b in (e.jpeg, e.clean_jpeg)]
                for b in blobs:
                    if b is not None:
                        seen[id(b)] = len(b)
            return total + sum(seen.values())


def cause_family(cause: str, low: bool, dims: dict[str, float], threshold: float) -> str | None:
    """The family whose low score raised `cause` (the lowest, when several do); for low quality, the lowest family."""
    fams = [f.name for f in FAMILIES if dims.get(f.name, 100.0) < threshold and f.cause_at(low).name == cause]
    if not fams and cause == "low_quality":
        fams = [d for d in DIMENSIONS if d in dims]
    return min(fams, key=lambda d: dims[d]) if fams else None


def _window_scores(window: Window, region: str, published: dict[str, float]) -> dict[str, float]:
    """The window's own dimension scores (before the published median over recent windows)."""
    from engines.signals import SIGNALS_VERSION

    m = window.measures
    if m is None or SIGNALS_VERSION not in m.dimensions:
        return dict(published)
    dims = m.dimensions[SIGNALS_VERSION]
    return dict(dims.get(region) or dims.get("frame") or published)


def frame_family_score(frame: FrameRecord, family: str, region: str) -> float:
    """One sampled frame's score of a picture family (NaN when it has no such measurement)."""
    from engines.signals import colorfulness_at_contrast, dimension_score

    sig = frame.signals or {}
    raw = sig.get(region) or sig.get("frame")
    if raw is None:
        return float("nan")
    if family == "color":
        raw = {**raw, "colorfulness_at_contrast": colorfulness_at_contrast(raw, region)}
    return dimension_score(family, raw)


def best_frame(cause: str, family: str | None, region: str, window: Window, frames: list[FrameRecord]) -> FrameRecord:
    """The sampled frame that shows the cause best: the lowest frame score of a picture family (the blurriest, the
    most blocky, the darkest...), the end of the longest stretch without change for a timing one, a frame without
    a face (or with the smallest) for framing, and the frame lowest over all families for low quality."""
    if cause == "framing":
        return min(frames, key=lambda f: 0.0 if f.main_face is None else f.main_face.box[2] * f.main_face.box[3])
    if family is not None and BY_NAME[family].measured_from != PICTURE:
        stuck = _stuck_time(window.frames)
        return max(frames, key=lambda f: stuck.get(id(f), 0.0))
    names = [family] if family is not None else [f.name for f in FAMILIES if f.measured_from == PICTURE]

    def worst(f: FrameRecord) -> float:
        values = [v for n in names if math.isfinite(v := frame_family_score(f, n, region))]
        return min(values) if values else float("inf")

    return min(frames, key=worst)


STILL_CHANGE = 0.5  # mean |luma difference| of thumbnails below which a frame repeats the one before


def _stuck_time(frames: list[FrameRecord]) -> dict[int, float]:
    """At each frame, how long the picture had not changed before it: the run of repeats it ends, or the
    timestamp gap (a stall) before it."""
    out: dict[int, float] = {}
    changed_at = frames[0].pts if frames else 0.0
    prev = None
    for f in frames:
        stuck = 0.0
        if prev is not None:
            if f.change is not None and f.change < STILL_CHANGE:
                stuck = f.pts - changed_at
            else:
                stuck, changed_at = f.pts - prev.pts, f.pts
        out[id(f)] = stuck
        prev = f
    return out


def cause_box(frame: FrameRecord, family: str | None, region: str) -> tuple[int, int, int, int] | None:
    """Where the cause shows: the face box when it was judged on the face, else the worst tile of a 3x3 grid of
    the frame (aligned to 8 px, as compression blocks are) for a picture family; None for the whole frame."""
    face = frame.main_face
    if region == "face" and face is not None:
        return tuple(int(round(v)) for v in face.box)  # type: ignore[return-value]
    if family is None or BY_NAME[family].measured_from != PICTURE or frame.image is None:
        return None
    from engines.signals import frame_signals

    h, w = frame.image.shape[:2]
    xs = [0, (w // 3) // 8 * 8, (2 * w // 3) // 8 * 8, w]
    ys = [0, (h // 3) // 8 * 8, (2 * h // 3) // 8 * 8, h]
    best, box = float("inf"), None
    for i in range(3):
        for j in range(3):
            tile = np.ascontiguousarray(frame.image[ys[j]:ys[j + 1], xs[i]:xs[i + 1]])
            if min(tile.shape[:2]) < 16:
                continue
            tile_frame = FrameRecord(frame.pts, frame.thumb, frame.source_size, signals=frame_signals(tile, None))
            v = frame_family_score(tile_frame, family, "frame")
            if math.isfinite(v) and v < best:
                best, box = v, (xs[i], ys[j], xs[i + 1] - xs[i], ys[j + 1] - ys[j])
    return box


def annotate(image: np.ndarray, face=None, box: tuple[int, int, int, int] | None = None,
             label: str | None = None) -> np.ndarray:
    """A BGR copy of an RGB frame with the face box (green), the cause's region (red; the frame's border when it
    is the whole frame) and a label strip drawn."""
    import cv2

    out = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    h, w = out.shape[:2]
    if face is not None:
        x, y, bw, bh = (int(round(v)) for v in face.box)
        cv2.rectangle(out, (x, y), (x + bw, y + bh), GREEN, 1)
    if label is not None:
        if box is None:
            cv2.rectangle(out, (0, 0), (w - 1, h - 1), RED, 2)
        else:
            x, y, bw, bh = box
            cv2.rectangle(out, (x + 1, y + 1), (x + bw - 2, y + bh - 2), RED, 2)
        cv2.rectangle(out, (0, h - 14), (w, h), BLACK, -1)
        cv2.putText(out, label, (3, h - 4), cv2.FONT_HERSHEY_SIMPLEX, 0.33, WHITE, 1, cv2.LINE_AA)
    return out


def encode_jpeg(bgr: np.ndarray) -> bytes:
    import cv2

    ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    if not ok:
        raise ValueError(f"cannot encode a {bgr.shape} frame as JPEG")
    return buf.tobytes()


def _size(image: np.ndarray | None) -> tuple[int, int]:
    return (0, 0) if image is None else (int(image.shape[1]), int(image.shape[0]))
