"""The analysis of frames and windows: faces, embeddings, signal measurements, the rater, batched across streams."""

from __future__ import annotations

import contextlib
import logging
import math
import sys
import time
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

import numpy as np

from engines.families import score_ceiling
from engines.features import FrameRecord, Window, WindowResult, level_of

if TYPE_CHECKING:
    from engines.face import FaceExtractor
    from engines.rater import Rater
    from stream.ops.metrics import Metrics

log = logging.getLogger(__name__)


class Analyzer:
    """Runs the extractors on the sampled frames of every stream at once, then scores closed windows.

    Per-frame work (faces, embedding, signals, model features) is done once per frame and stored on the
    FrameRecord, so the overlapping windows that share a frame reuse it.
    """

    def __init__(
        self,
        face: FaceExtractor | None,
        rater: Rater | None = None,
        metrics: Metrics | None = None,
        embed_every: int = 1,
        sample_fps: float = 2.0,
        model_every: int = 1,
    ) -> None:
        self.face = face
        self.rater = rater
        self.metrics = metrics
        self.embed_every = embed_every  # embed the face of every n-th sampled frame (0: never); SFace is costly
        self.sample_fps = sample_fps
        self.model_every = model_every  # the rater's frame encoder on every n-th sampled frame (analysis.model_fps)
        # Load shedding (set by the live monitor when its analysis falls behind; offline scoring never sheds):
        # 1 halves the face embeddings, 2 also the model's frame encodings, 3 also analyses only every other
        # sampled frame (the rest keep their thumbnail, as unsampled frames do). Each level thins the same
        # presentation-time grid, so every window still sees evenly spread frames.
        self.shed_level = 0
        self._recent: dict[str, tuple[float, list[tuple[float, WindowResult]]]] = {}  # stream -> (seen, windows)

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            if self.metrics is not None:
                self.metrics.stage_duration.labels(name).observe(time.perf_counter() - t0)

    FRAME_BATCH = 16  # frames per call into the extractors: bounds the memory of one batch
    # Published scores and dimensions are the median of the stream's windows that started in the last SMOOTH_S
    # seconds of presentation time (5 windows at the default 1 s hop): a window that happens to miss a
    # recurring problem (a freeze every few seconds) or one odd encoder frame does not swing what the
    # operator sees; a lasting change shows after half of them. The raw window values stay in details.
    SMOOTH_S = 4.0
    SMOOTH_FORGET_S = 60.0  # a stream that published nothing for this long (wall clock) starts afresh

    def analyse_frames(self, records: Sequence[FrameRecord]) -> None:
        todo = [r for r in records if r.image is not None and not r.analysed]
        if self.shed_level >= 3:
            todo = [r for r in todo if self._keeps_under_shedding(r)]
        for i in range(0, len(todo), self.FRAME_BATCH):
            self._analyse_batch(todo[i:i + self.FRAME_BATCH])

    def _keeps_under_shedding(self, r: FrameRecord) -> bool:
        """Level 3: only the even points of the sampling grid are analysed; an odd one loses its image."""
        if round(r.pts * self.sample_fps) % 2 == 0:
            return True
        r.image = None
        r.qp_map = None
        self._count_shed("frame")
        return False

    def _count_shed(self, work: str) -> None:
        if self.metrics is not None:
            self.metrics.frames_shed.labels(work).inc()

    def _analyse_batch(self, todo: Sequence[FrameRecord]) -> None:
        from engines.signals import analyse_frame_signals

        if not todo:
            return
        if self.face is not None:
            with self.stage("face_detect"):
                found = self.face.detect([r.image for r in todo])
            for r, faces in zip(todo, found, strict=True):
                r.faces = faces
            with_face = [r for r in todo if r.faces and self._embeds(r)]
            if with_face:
                with self.stage("face_embed"):
                    emb = self.face.embed([r.image for r in with_face], [r.main_face for r in with_face])
                for r, e in zip(with_face, emb, strict=True):
                    r.embedding = e
        with self.stage("signals"):
            for r in todo:
                analyse_frame_signals(r)
        if self.rater is not None and self.rater.model_counts:  # model share 0: its inputs are never read
            encode = self.model_frames(todo)
            if encode:
                with self.stage("frame_features"):
                    self.rater.frame_features(encode)
        for r in todo:
            r.analysed = True

    def _embeds(self, r: FrameRecord) -> bool:
        """Embedding frames follow the sampling grid, so every window sees the same ones."""
        return self._on_grid(r, self.embed_every, "embed", self.shed_level >= 1)

    def model_frames(self, records: Sequence[FrameRecord]) -> list[FrameRecord]:
        """The sampled frames the rater's frame encoder runs on: a sparser grid of presentation time, like the
        embeddings, so every window sees the same ones (training picks them with this too)."""
        return [r for r in records if r.image is not None
                and self._on_grid(r, self.model_every, "model", self.shed_level >= 2)]

    def _on_grid(self, r: FrameRecord, every: int, work: str, shed: bool) -> bool:
        if every <= 0:
            return False
        index = round(r.pts * self.sample_fps)
        if index % every:
            return False
        if shed and index % (2 * every):
            self._count_shed(work)
            return False
        return True

    def rate_windows(self, windows: Sequence[Window]) -> list[WindowResult]:
        from engines.signals import SIGNALS_VERSION, measure_window

        if not windows:
            return []
        results = []
        # published: the current measurements; the rater reads the version its bundle was trained on
        versions = (SIGNALS_VERSION, self.rater.spec.signals_version) if self.rater is not None else (SIGNALS_VERSION,)
        with self.stage("window_signals"):
            for w in windows:
                measure_window(w, versions)  # carried on the window: the rater reads the same measures
                results.append(summarise_window(w))
        if self.rater is not None:
            with self.stage("rater"):
                ratings = self.rater.rate([self.rater.window_features(w) for w in windows])
            for res, rating in zip(results, ratings, strict=True):
                res.score = float(rating.score)
                res.level = rating.level
                ceiling = score_ceiling(res.dimensions)  # a broken colour pipeline bounds the score (families.py)
                if ceiling < res.score:
                    res.details["rater_score"] = res.score
                    res.score, res.level = ceiling, level_of(ceiling)
                if rating.dimensions:
                    # The learned dimension outputs are details only: the published dimensions are the signal
                    # measurements, each of which moves only for its own family. The heads did not: a freeze
                    # moved learned noise and colour by ~5 points, blur and compression lifted learned noise by
                    # 7-9 (the diagnosis benchmark's cross-talk, BENCHMARKS.md), so an operator would be sent
                    # after the wrong cause.
                    res.details.update({f"model_{k}": float(v) for k, v in rating.dimensions.items()})
        for res in results:
            self._smooth(res)
        return results

    def _smooth(self, res: WindowResult) -> None:
        """Publishes the median of this stream's recent windows (SMOOTH_S) in place of the window's own values."""
        now = time.monotonic()
        for name in [k for k, (seen, _) in self._recent.items() if now - seen > self.SMOOTH_FORGET_S]:
            del self._recent[name]
        _, recent = self._recent.get(res.stream, (now, []))
        if recent and res.start <= recent[-1][0]:
            recent = []  # the stream started over (a new file, a restarted source)
        raw = WindowResult(res.stream, res.start, res.end, {r: dict(d) for r, d in res.dimensions.items()},
                           res.face_presence, res.face_size, res.identity_stability, res.score, res.level)
        recent = [(t, r) for t, r in recent if t > res.start - self.SMOOTH_S] + [(res.start, raw)]
        self._recent[res.stream] = (now, recent)
        if len(recent) < 2:
            return
        if res.score is not None:
            scores = [r.score for _, r in recent if r.score is not None]
            res.details["window_score"] = float(res.score)
            res.score = float(np.median(scores))
            res.level = level_of(res.score)
        for region, dims in res.dimensions.items():
            for dim in list(dims):
                values = [r.dimensions[region][dim] for _, r in recent if dim in r.dimensions.get(region, {})]
                dims[dim] = round(float(np.median(values)), 2)


def summarise_window(window: Window) -> WindowResult:
    """What is published of a window before the rater: its dimension scores in the current signals version, face
    presence, size and identity stability, from what it carries (engines.signals.measure_window)."""
    from engines.signals import SIGNALS_VERSION, measure_window

    m = measure_window(window)
    light = {}
    for key in ("light_log_rg", "light_log_bg"):  # the scene light's colour: a stream's own baseline reads it
        values = [v for f in window.sampled if f.signals and math.isfinite(v := f.signals["frame"].get(key, math.nan))]
        if values:
            light[key] = float(np.median(values))
    # a colour pipeline switching between two of its pictures (engines/signals/colour_switch.py): [pts, kind] each;
    # the stream's baseline holds it until the switch back (stream/ops/baseline.py)
    switches = [[round(f.pts, 3), f.colour_switch] for f in window.sampled if f.colour_switch]
    if switches:
        light["colour_switches"] = switches
    return WindowResult(
        stream=window.stream,
        start=window.start,
        end=window.end,
        # a copy: smoothing replaces the published values, the window keeps what it measured
        dimensions={region: dict(d) for region, d in m.dimensions[SIGNALS_VERSION].items()},
        face_presence=m.faces.presence,
        face_size=m.faces.size,
        identity_stability=m.faces.identity_stability,
        details=light,
    )


from engines.bundle import DEFAULT_BUNDLE  # noqa: E402,F401  (kept for callers; new code calls engines.bundle.default_bundle)


def build_analyzer(cfg, metrics: Metrics | None = None) -> Analyzer:  # cfg: stream.config.MonitorConfig
    """The face extractor on its configured runtime, and the rater from the bundle (unless no_model)."""
    from engines.face import FaceExtractor, FaceExtractorConfig
    from engines.registry import create_engine

    face = FaceExtractor(
        FaceExtractorConfig(runtime=cfg.face.runtime),
        engine=create_engine(cfg.face.runtime, cfg.face.config),
    )
    rater = None
    if not cfg.no_model:
        from engines.bundle import bundle_to_load, verify_bundle
        from engines.load import load_rater

        bundle = bundle_to_load(cfg.bundle)  # --bundle, the config's `bundle`, $FVQ_BUNDLE, the shipped one
        if bundle is None:
            log.warning("no shipped bundle in this checkout: scoring with signal measurements only")
        else:
            verify_bundle(bundle)  # refuses a bundle whose files changed or whose format is unknown, with the reason
            rater = load_rater(bundle)
            torch = sys.modules.get("torch")  # only a torch rater imports it: the ONNX path never does
            if torch is not None:
                torch.set_num_threads(1)  # the analysis loop is one thread; decode threads need the other cores
    model_every = max(1, round(cfg.analysis.sample_fps / cfg.analysis.model_fps))
    embed_every = max(1, round(cfg.analysis.sample_fps / cfg.analysis.embed_fps)) if cfg.analysis.embed_faces else 0
    return Analyzer(face, rater, metrics, embed_every=embed_every, sample_fps=cfg.analysis.sample_fps,
                    model_every=model_every)
