"""Recommendations: each stream's probable cause of bad quality and the action to take, with hysteresis."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from engines.families import BY_NAME, EXPLAINS, FAMILIES, FAMILY_CAUSES, FAULT_CAUSES, Cause
from engines.features import WindowResult
from stream.ops.baseline import BELOW_BASELINE, COLOUR_SHIFT, COLOUR_SWITCH, StreamBaseline
from stream.ops.cause_model import SharpnessBaseline, side_effects

if TYPE_CHECKING:
    from stream.config import AlertConfig
    from stream.live.monitor import Monitor, StreamState
    from stream.ops.metrics import Metrics

log = logging.getLogger(__name__)


_OVERLOADED = "give the monitor more CPU, fewer streams per instance, or lower analysis.sample_fps"

# The one catalogue of alerts, causes and actions: the monitor's recommendations, the webhook, the Prometheus
# rules (stream/ops/alert_rules.py) and the operator docs all read it. The causes a low dimension points to come from
# the distortion-family catalogue (engines/families.py); the others are the stream's and the monitor's own.
ALERTS: dict[str, Cause] = {c.alertname: c for c in (
    Cause("down", "FvqStreamDown", "critical", "the stream delivers no frames",
          "check the publisher: encoder running, its network, the stream URL and key"),
    *FAULT_CAUSES,
    *FAMILY_CAUSES,
    Cause("framing", "FvqNoFace", "warning", "no face in the picture",
          "framing: put the face in the frame (camera angle, distance, crop)"),
    # Against the stream's own recent past (stream/ops/baseline.py): beside the absolute floors above.
    Cause(BELOW_BASELINE, "FvqBelowBaseline", "warning", "a dimension fell well below the stream's own recent level",
          "look at what changed on the publisher (camera, lighting, encoder, a pipeline step); the dimension says what"),
    Cause(COLOUR_SHIFT, "FvqColourShift", "warning", "the picture's colour changed suddenly",
          "check the camera's white balance (auto white balance, a preset switched) and any colour conversion "
          "upstream (a pipeline or transcoder switched)"),
    Cause(COLOUR_SWITCH, "FvqColourSwitch", "warning",
          "the picture's colour pipeline switched: chroma planes or channels swapped, or a range conversion changed",
          "check the pixel format and colour range each step hands on (NV12/NV21, RGB/BGR, limited/full range): a "
          "pipeline, transcoder or capture setting switched; the switch label of fvq_picture_colour_switched names it"),
    Cause("low_quality", "FvqQualityLow", "warning", "quality is low",
          "see the stream's cause alerts and its dimension scores on the dashboard; if none, check it by eye"),
    # Prometheus only: these need history or the monitor's own counters, not one window.
    Cause("quality_drop", "FvqQualityDrop", "warning", "quality fell suddenly",
          "look at what changed on the publisher (encoder settings, network, scene); the cause alerts say which"),
    Cause("monitor_overloaded", "FvqFramesDropped", "warning", "the monitor drops frames: analysis falls behind",
          _OVERLOADED),
    Cause("monitor_overloaded", "FvqWindowsDropped", "warning", "the monitor drops windows: analysis falls behind",
          _OVERLOADED),
    Cause("monitor_overloaded", "FvqLoadShedding", "warning",
          "the monitor sheds analysis work: it holds more streams than its CPU analyses in full", _OVERLOADED),
    Cause("monitor_down", "FvqMonitorDown", "critical", "Prometheus cannot scrape the monitor",
          "check that `fvq serve` runs and that its port is reachable from Prometheus"),
)}

# Causes the monitor raises itself, in priority order: when a stream has several at once, the first raised
# is its current recommendation.
# The faults read from the decoder (engines/families.FAULT_CAUSES) name what broke: those that explain the
# picture's causes come before them, a format change after. A colour pipeline switch names what broke too (the
# colour family's cause, camera, reads its result on a photographed face), so it comes before them.
MONITOR_CAUSES = ("down", "black_picture", "transport_damage", "rendition_down", COLOUR_SWITCH,
                  *(c.name for c in FAMILY_CAUSES), "format_change", "framing", BELOW_BASELINE, COLOUR_SHIFT,
                  "low_quality")
FAULTS = frozenset(c.name for c in FAULT_CAUSES)
CAUSES: dict[str, Cause] = {c.name: c for c in ALERTS.values() if c.name in MONITOR_CAUSES}


def is_low_bitrate(bitrate_bps: float, width: int, height: int, fps: float, cfg: AlertConfig) -> bool:
    """Low: below `low_bitrate_bps`, or below `low_bits_per_pixel` for the stream's resolution and frame rate.
    An unknown bitrate (0) counts as low: starved encoders are the common case."""
    if bitrate_bps <= 0 or bitrate_bps < cfg.low_bitrate_bps:
        return True
    pixels_per_s = width * height * fps
    return pixels_per_s > 0 and bitrate_bps / pixels_per_s < cfg.low_bits_per_pixel


# The cause a rendition down-switch seen from the picture raises: the catalogue's own when it has one (the
# coded-size check names it), else blur's ("source": "check ... any upscaling upstream").
DOWN_SWITCH = "rendition_down"
STARVED_ARTIFACT = 80.0  # artifact score below which a low bitrate shows in the picture (QP above ~30, or blocks)
WHOLE_PICTURE = ("noise",)  # families judged on the lower of the face's and the whole frame's score


def window_causes(result: WindowResult, low_bitrate: bool, cfg: AlertConfig,
                  explained_dims: frozenset[str] = frozenset()) -> set[str]:
    """The causes one window shows, from its dimension scores (the face region when there is one; WHOLE_PICTURE
    families also from the frame). `explained_dims`: dimensions another cause explains (a colour pipeline switch
    held: colour), which raise nothing, and then neither does a low score alone."""
    region = "face" if result.dimensions.get("face") else "frame"
    dims = dict(result.dimensions.get(region, {}))
    frame = result.dimensions.get("frame", {})
    for name in WHOLE_PICTURE:  # the camera's noise shows on the whole picture (grain between pictures: frame only)
        if name in frame and frame[name] < dims.get(name, 100.0):
            dims[name] = frame[name]
    t = cfg.dimension_threshold
    # a dimension another fault pulled down (a dark picture's colour, grain's compression cost) is not a cause
    explained = side_effects(dims, t) | set(explained_dims)
    # a low bitrate blames compression only when the encoder shows it (a high quantiser or blocks: the artifact score
    # below STARVED_ARTIFACT); a soft picture coded at a low quantiser was soft before the encoder (a defocused
    # camera's simple picture needs few bits)
    starved = low_bitrate and dims.get("artifact", 100.0) < STARVED_ARTIFACT
    causes = {f.cause_at(starved).name for f in FAMILIES if dims.get(f.name, 100.0) < t and f.name not in explained}
    dark = frame.get("luminance", 100.0) < t
    if result.face_presence < cfg.no_face_ratio and not dark:  # in the dark the face detector fails: darkness says it
        causes.add("framing")
    if not causes and not explained_dims and result.score is not None and result.score < cfg.low_quality_threshold:
        causes.add("low_quality")
    return causes


@dataclass
class _Track:
    """One cause of one stream: seen since when, raised since when, gone since when."""

    seen_since: float | None = None
    raised_at: float | None = None
    gone_since: float | None = None


@dataclass
class _StreamRecommendation:
    window_causes: set[str] = field(default_factory=set)
    faults: set[str] = field(default_factory=set)  # from the decoder's facts (StreamState.live_faults)
    down: bool = False
    tracks: dict[str, _Track] = field(default_factory=dict)
    current: tuple[str, str] | None = None  # (cause, action) exported as the metric
    baseline: StreamBaseline = field(default_factory=StreamBaseline)  # the stream's own recent past
    sharpness: SharpnessBaseline = field(default_factory=SharpnessBaseline)
    published_switches: set[str] = field(default_factory=set)  # the colour switches exported as the metric


Notice = Callable[[str, str, "Cause", float, float | None], None]  # (status, stream, cause, starts_at, ends_at)


class Recommender:
    """Turns windows (and streams going down) into one current cause and action per stream.

    A cause must hold `raise_after_s` to be raised and be gone `clear_after_s` to clear, so the recommendation
    does not flap. Feeds `StreamState.recommendation` (/streams), `fvq_stream_recommendation{stream,cause,action}`,
    and `notify` callbacks (status "firing" or "resolved") for every cause raised or cleared.
    """

    def __init__(self, config: AlertConfig, metrics: Metrics, clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self.metrics = metrics
        self.clock = clock
        self.notify: list[Notice] = []
        self.on_stop: list[Callable[[], None]] = []
        self._streams: dict[str, _StreamRecommendation] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # inputs
    def observe(self, state: StreamState, result: WindowResult) -> None:
        """A Monitor listener: called from the analysis thread after each window is published."""
        low = is_low_bitrate(state.bitrate_bps, state.width, state.height, state.fps, self.config)
        with self._lock:
            rec = self._streams.setdefault(state.name, _StreamRecommendation())
            now = self.clock()
            baseline = rec.baseline.observe(result, self.config, now)
            # a colour pipeline switch held explains the colour it leaves (camera, on a photographed face): named
            # once, as what broke, and nothing of it lingers once it switches back
            explained = frozenset({"color"}) if rec.baseline.switched else frozenset()
            causes = window_causes(result, low, self.config, explained)
            region = "face" if result.dimensions.get("face") else "frame"
            blur = result.dimensions.get(region, {}).get("blur")
            # the windows lag the decoder by seconds: a fault seen now, or raised and not yet cleared, taints them
            faults = state.live_faults()
            tainted = bool(FAULTS & (faults | rec.faults | set(rec.tracks)))
            if rec.sharpness.fell(result.end, blur, region, learn=not tainted) and blur is not None \
                    and blur >= self.config.dimension_threshold:
                # softer than the stream's own norm, not blurred outright (that is blur's own cause): a down-switch
                causes.add(DOWN_SWITCH if DOWN_SWITCH in CAUSES else BY_NAME["blur"].cause_at(low).name)
            rec.window_causes = causes | baseline
            self._publish_switches(state.name, rec)
            rec.faults = faults
            rec.down = False
            self._update(state, rec, now)

    def tick(self, states: list[StreamState]) -> None:
        """Streams that publish no windows: down ones raise "down", and every cause keeps its clock running.
        Streams no longer listed are forgotten."""
        now = self.clock()
        with self._lock:
            for state in states:
                rec = self._streams.setdefault(state.name, _StreamRecommendation())
                rec.down = state.state in ("down", "error")
                if state.state in ("down", "error", "ended"):
                    rec.window_causes = set()  # a picture that is not there has no causes
                rec.faults = state.live_faults()
                self._update(state, rec, now)
            names = {s.name for s in states}
            for name in [n for n in self._streams if n not in names]:
                self._forget(name)

    # the loop for a running monitor
    def attach(self, monitor: Monitor, interval_s: float = 1.0) -> None:
        """Listens to the monitor's windows and ticks over its streams every `interval_s` in a thread."""
        monitor.listeners.append(self.observe)

        def loop() -> None:
            while not self._stop.wait(interval_s):
                try:
                    self.tick([s.state for s in list(monitor.streams.values())])
                except Exception:
                    log.exception("recommendation tick failed")

        self._thread = threading.Thread(target=loop, name="recommend", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        for callback in self.on_stop:
            callback()

    # state
    def _update(self, state: StreamState, rec: _StreamRecommendation, now: float) -> None:
        active = {"down"} if rec.down else rec.window_causes | rec.faults
        # a fault explains the picture's causes it brings while it is seen or raised (the windows lag behind it)
        for fault in FAULTS & (rec.faults | set(rec.tracks)):
            active = active - set(EXPLAINS[fault])
        cfg = self.config
        for name in MONITOR_CAUSES:
            track = rec.tracks.get(name)
            if name in active:
                if track is None:
                    track = rec.tracks[name] = _Track(seen_since=now)
                track.gone_since = None
                # what the transport and decoder say (no frames, damage, a new format) needs no window to settle
                hold = cfg.fault_raise_after_s if name in FAULTS or name == "down" else cfg.raise_after_s
                if track.raised_at is None and now - (track.seen_since or now) >= hold:
                    track.raised_at = now
                    self._emit("firing", state.name, name, track.raised_at, None)
            elif track is not None:
                if track.raised_at is None:
                    del rec.tracks[name]  # it did not hold long enough: forget it
                    continue
                if track.gone_since is None:
                    track.gone_since = now
                if now - track.gone_since >= cfg.clear_after_s:
                    del rec.tracks[name]
                    self._emit("resolved", state.name, name, track.raised_at, now)
        raised = [n for n in MONITOR_CAUSES if n in rec.tracks and rec.tracks[n].raised_at is not None]
        self._publish(state, rec, raised)

    def _publish(self, state: StreamState, rec: _StreamRecommendation, raised: list[str]) -> None:
        current = (raised[0], CAUSES[raised[0]].action) if raised else None
        if current != rec.current and rec.current is not None:
            self._remove_series(state.name, *rec.current)
        if current is not None:  # set every time: a stream replaced under the same name lost its series
            self.metrics.recommendation.labels(state.name, *current).set(1)
        rec.current = current
        state.recommendation = recommendation_json(raised, rec.tracks) if raised else None

    def _publish_switches(self, stream: str, rec: _StreamRecommendation) -> None:
        """fvq_picture_colour_switched{stream,switch}: 1 for each switch the stream's baseline holds."""
        held = set(rec.baseline.switched)
        for kind in rec.published_switches - held:
            try:
                self.metrics.colour_switched.remove(stream, kind)
            except KeyError:  # already gone with the stream (Metrics.forget_stream)
                pass
        for kind in held:
            self.metrics.colour_switched.labels(stream, kind).set(1)
        rec.published_switches = held

    def _remove_series(self, stream: str, cause: str, action: str) -> None:
        try:
            self.metrics.recommendation.remove(stream, cause, action)
        except KeyError:  # already gone with the stream (Metrics.forget_stream)
            pass

    def _forget(self, name: str) -> None:
        rec = self._streams.pop(name)
        if rec.current is not None:
            self._remove_series(name, *rec.current)
        for cause, track in rec.tracks.items():
            if track.raised_at is not None:
                self._emit("resolved", name, cause, track.raised_at, self.clock())

    def _emit(self, status: str, stream: str, cause: str, starts_at: float, ends_at: float | None) -> None:
        log.info("stream %s: %s %s (%s)", stream, cause, status, CAUSES[cause].action)
        for callback in self.notify:
            try:
                callback(status, stream, CAUSES[cause], starts_at, ends_at)
            except Exception:
                log.exception("recommendation notice failed")


def recommendation_json(raised: list[str], tracks: dict[str, _Track]) -> dict[str, Any]:
    """What /streams shows: the current cause first, every raised cause after."""
    head = CAUSES[raised[0]]
    return {
        "cause": head.name,
        "action": head.action,
        "summary": head.summary,
        "severity": head.severity,
        "alertname": head.alertname,
        "since": tracks[head.name].raised_at,
        "causes": [
            {"cause": n, "action": CAUSES[n].action, "since": tracks[n].raised_at} for n in raised
        ],
    }


def start_recommendations(monitor: Monitor, external_url: str = "") -> Recommender:
    """Recommendations for a running monitor, and its webhook when `alerts.webhook_url` is set; `stop()` ends both."""
    recommender = Recommender(monitor.config.alerts, monitor.metrics)
    if monitor.config.alerts.webhook_url:
        from stream.ops.webhook import WebhookNotifier

        # notices link the stream's page and the cause's evidence frame, at server.public_url when it is set
        hook = WebhookNotifier(monitor.config.alerts, monitor.metrics.registry,
                               monitor.config.server.public_url or external_url,
                               evidence=monitor.evidence.evidence_id if monitor.config.server.frames else None).start()
        recommender.notify.append(hook.notice)
        recommender.on_stop.append(hook.stop)
    recommender.attach(monitor)
    return recommender
