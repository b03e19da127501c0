"""Scoring files start to end through the same decode, windows and analysis as the live path."""

from __future__ import annotations

import math
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import av

from engines.features import DIMENSIONS, FrameRecord, Window, WindowResult, level_of
from stream.config import MonitorConfig, SourceConfig, SourceKind
from stream.ingest.decode import NoVideoError, SourceEvents, SourceReader
from stream.ingest.queues import END
from stream.live.analysis import Analyzer
from stream.live.scoring import assemble, rate
from stream.live.windows import WindowAssembler

# How the face region and the whole frame combine into one figure per dimension when a face is seen.
FACE_WEIGHT = 0.6


class InputError(ValueError):
    """A file that cannot be scored; the message says what is wrong with it."""


@dataclass
class FileAnalysis:
    path: str
    windows: list[Window]
    results: list[WindowResult]
    errors: list[str] = field(default_factory=list)
    nominal_fps: float | None = None
    window_s: float | None = None  # the configured window length: shorter windows are flagged partial


class _Events(SourceEvents):
    def __init__(self) -> None:
        self.errors: list[str] = []
        self.frames = 0
        self.fps: float | None = None

    def opened(self, width: int, height: int, fps: float | None, codec: str) -> None:
        self.fps = fps

    def frame(self) -> None:
        self.frames += 1

    def error(self, kind: str, message: str) -> None:
        self.errors.append(message)

    def decode_damage(self, errors: int, corrupt_frames: int, message: str | None) -> None:
        if message and len(self.errors) < 20:  # the report shows the first few
            self.errors.append(message)


class _SyncSink:
    """Stands where the live path has its queue: each frame goes through the analysis loop's steps
    (stream/live/scoring.py) as it arrives, so a window is rated as soon as it closes."""

    def __init__(self, name: str, cfg: MonitorConfig, analyzer: Analyzer, keep_windows: bool, events: _Events) -> None:
        self.assembler = WindowAssembler(name, cfg.window)
        self.analyzer = analyzer
        self.keep = keep_windows
        self.events = events
        self.windows: list[Window] = []
        self.results: list[WindowResult] = []

    def put(self, item: FrameRecord | object | None) -> bool:
        if item is None or item is END:  # the reader's END: finish() closes the last windows after it
            return True
        closed, _ = assemble(self.assembler, item)
        if closed:
            self._flush(closed)
        return True

    def finish(self) -> None:
        self._flush(assemble(self.assembler, END)[0])

    def _flush(self, closed: list[Window]) -> None:
        for w in closed:
            w.nominal_fps = self.events.fps
        self.results.extend(rate(self.analyzer, closed))
        if self.keep:
            self.windows.extend(closed)


def analyse_file(path: str | Path, cfg: MonitorConfig, analyzer: Analyzer, keep_windows: bool = False) -> FileAnalysis:
    """Decodes the whole file as fast as possible and returns its windows' results (and windows if asked).

    Raises InputError for a file that does not exist, is not a video, or holds no decodable frame.
    """
    p = Path(path)
    if not p.exists():
        raise InputError(f"{path}: no such file")
    if p.is_dir():
        raise InputError(f"{path}: is a directory, not a video file")
    if not stat.S_ISREG(p.stat().st_mode):  # a FIFO with no writer would block forever, a device never end
        raise InputError(f"{path}: not a regular file (a FIFO, socket or device): refused")
    source = SourceConfig(name="file", url=str(p), kind=SourceKind.file, realtime=False)
    events = _Events()
    sink = _SyncSink("file", cfg, analyzer, keep_windows, events)
    reader = SourceReader(source, cfg.analysis, sink, events)  # type: ignore[arg-type]
    try:
        reader.read_once()
    except NoVideoError as exc:
        raise InputError(f"{path}: the file has no video stream") from exc
    except av.error.FFmpegError as exc:
        if events.frames == 0:
            raise InputError(f"{path}: not a video file ffmpeg can read ({exc.strerror or exc})") from exc
        events.errors.append(f"{path}: {exc}")
    if events.frames == 0:
        raise InputError(f"{path}: no decodable video frame" + (f" ({events.errors[0]})" if events.errors else ""))
    sink.finish()
    return FileAnalysis(str(path), sink.windows, sink.results, events.errors, events.fps, cfg.window.length_s)


def combine_dimensions(results: list[WindowResult]) -> dict[str, float]:
    """One 0-100 figure per dimension for a file: windows averaged, the face weighted where one was seen."""
    out: dict[str, float] = {}
    for dim in DIMENSIONS:
        values = []
        for r in results:
            frame = r.dimensions.get("frame", {}).get(dim)
            face = r.dimensions.get("face", {}).get(dim)
            if frame is None:
                continue
            values.append(frame if face is None else FACE_WEIGHT * face + (1 - FACE_WEIGHT) * frame)
        if values:
            out[dim] = sum(values) / len(values)
    return out


def file_report(analysis: FileAnalysis) -> dict[str, Any]:
    """The `fvq score --json` object for one file (DESIGN.md's contract)."""
    results = analysis.results
    report: dict[str, Any] = {"path": analysis.path}
    scores = [r.score for r in results if r.score is not None]
    if scores:
        score = sum(scores) / len(scores)
        report["score"] = round(score, 2)
        report["level"] = level_of(score)
    report["dimensions"] = {k: round(v, 1) for k, v in combine_dimensions(results).items()}
    report["face_presence"] = round(sum(r.face_presence for r in results) / len(results), 3) if results else 0.0
    length = analysis.window_s
    short = [r for r in results if length is not None and r.end - r.start < length - 1e-6]
    short_ids = {id(r) for r in short}
    report["windows"] = [
        {"start": round(r.start, 3), "end": round(r.end, 3), **({"score": round(r.score, 2)} if r.score is not None else {}),
         **({"partial": True} if id(r) in short_ids else {})}
        for r in results
    ]
    # a colour pipeline switching within the file (engines/signals/colour_switch.py): overlapping windows repeat it
    switches = sorted({(pts, kind) for r in results for pts, kind in r.details.get("colour_switches", ())})
    if switches:
        report["colour_switches"] = [{"at": pts, "switch": kind} for pts, kind in switches]
    if analysis.errors:
        report["warnings"] = analysis.errors[:5]
    if short:
        report["partial"] = True
        span = min(r.end - r.start for r in short)
        report.setdefault("warnings", []).append(
            f"{len(short)} of {len(results)} windows are shorter than the {length:g} s window length (the "
            f"shortest covers {span:.3g} s): their scores rest on less video than a full window"
        )
    if not results or any(math.isnan(v) for v in report["dimensions"].values()):
        report.setdefault("warnings", []).append("no complete window")
    return report
