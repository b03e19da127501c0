"""The Prometheus metrics of the monitor, built by one function on a registry the caller owns."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info
from prometheus_client.metrics_core import Metric

from stream import __version__

STAGE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.15, 0.2, 0.25, 0.35, 0.5, 1.0, 2.0, 5.0)


@dataclass
class Metrics:
    registry: CollectorRegistry
    build_info: Info
    stream_up: Gauge
    stream_fps: Gauge
    stream_bitrate: Gauge
    stream_width: Gauge
    stream_height: Gauge
    frames_received: Counter
    frames_dropped: Counter
    windows_analysed: Counter
    windows_dropped: Counter
    queue_depth: Gauge
    reconnects: Counter
    stream_errors: Counter
    frames_corrupt: Counter
    format_changes: Counter
    stream_fault: Gauge
    streams_active: Gauge
    streams_refused: Counter
    quality_score: Gauge
    quality_level: Gauge
    dimension_score: Gauge
    picture_light: Gauge
    colour_switched: Gauge
    face_presence: Gauge
    face_size: Gauge
    face_stability: Gauge
    recommendation: Gauge
    stage_duration: Histogram
    publish_latency: Histogram
    shed_level: Gauge
    backlog: Gauge
    frames_shed: Counter
    http_rejected: Counter
    whip_sessions_ended: Counter
    rtmp_rejected: Counter
    hook_events: Counter
    stream_info: StreamInfo = field(default_factory=lambda: StreamInfo())

    def forget_stream(self, stream: str) -> None:
        """Removes every series of a stream that is gone, so label sets stay bounded."""
        self.stream_info.forget(stream)
        for metric in (
            self.stream_up, self.stream_fps, self.stream_bitrate, self.stream_width, self.stream_height,
            self.frames_received, self.frames_dropped, self.windows_analysed, self.windows_dropped,
            self.queue_depth, self.reconnects, self.stream_errors, self.frames_corrupt, self.format_changes,
            self.stream_fault, self.quality_score, self.quality_level,
            self.dimension_score, self.face_presence, self.face_size, self.face_stability, self.recommendation,
            self.picture_light, self.colour_switched,
        ):
            with metric._lock:  # prometheus_client has no public "remove all children matching"
                for labels in list(metric._metrics):
                    if labels and labels[0] == stream:
                        del metric._metrics[labels]


class StreamInfo:
    """`fvq_stream_info{stream=..., <the operator's labels>} 1`: each stream's own label set (an info metric,
    joined in PromQL with `* on(stream) group_left(channel) fvq_stream_info`)."""

    NAME = "fvq_stream_info"

    def __init__(self) -> None:
        self._labels: dict[str, dict[str, str]] = {}
        self._lock = threading.Lock()

    def set(self, stream: str, labels: dict[str, str]) -> None:
        with self._lock:
            self._labels[stream] = dict(labels)

    def forget(self, stream: str) -> None:
        with self._lock:
            self._labels.pop(stream, None)

    def collect(self):
        m = Metric(self.NAME, "1 for every stream, labelled with the operator's labels of its source.", "gauge")
        with self._lock:
            for stream, labels in sorted(self._labels.items()):
                m.add_sample(self.NAME, {**labels, "stream": stream}, 1.0)
        yield m


def build_metrics(registry: CollectorRegistry | None = None, bundle: str = "none") -> Metrics:
    r = registry if registry is not None else CollectorRegistry()
    s = ["stream"]
    m = Metrics(
        registry=r,
        build_info=Info("fvq_build", "Version of the monitor and the model bundle it runs.", registry=r),
        stream_up=Gauge("fvq_stream_up", "1 while the stream delivers frames, 0 while it is down.", s, registry=r),
        stream_fps=Gauge("fvq_stream_fps", "Frames per second received, over the last window.", s, registry=r),
        stream_bitrate=Gauge(
            "fvq_stream_bitrate_bits_per_second", "Video bitrate received, over the last window.", s, registry=r
        ),
        stream_width=Gauge("fvq_stream_width_pixels", "Width of the decoded video.", s, registry=r),
        stream_height=Gauge("fvq_stream_height_pixels", "Height of the decoded video.", s, registry=r),
        frames_received=Counter("fvq_frames_received_total", "Frames decoded.", s, registry=r),
        frames_dropped=Counter(
            "fvq_frames_dropped_total", "Frames dropped before analysis, by reason.", s + ["reason"], registry=r
        ),
        windows_analysed=Counter("fvq_windows_analysed_total", "Windows scored and published.", s, registry=r),
        windows_dropped=Counter(
            "fvq_windows_dropped_total", "Windows not analysed, by reason.", s + ["reason"], registry=r
        ),
        queue_depth=Gauge("fvq_queue_depth_frames", "Frames waiting between decode and analysis.", s, registry=r),
        reconnects=Counter("fvq_stream_reconnects_total", "Times a source was reopened.", s, registry=r),
        stream_errors=Counter(
            "fvq_stream_errors_total",
            "Source errors, by kind (open; decode: each error line the decoder or demuxer logs, as `ffmpeg -v error` "
            "prints them; eof).", s + ["kind"], registry=r,
        ),
        frames_corrupt=Counter(
            "fvq_frames_corrupt_total",
            "Frames the decoder flagged corrupt (errors concealed, references missing): transport damage.", s,
            registry=r,
        ),
        format_changes=Counter(
            "fvq_stream_format_changes_total",
            "Changes of the decoded format against the frames before, by what changed (size, pixel_format, "
            "colour_space, frame_rate: the rate the container declares at a reconnect).", s + ["what"], registry=r,
        ),
        stream_fault=Gauge(
            "fvq_stream_fault",
            "1 while the decoder's facts show the fault (black_picture, transport_damage, rendition_down, "
            "format_change: against the stream's recent past or its source's expect), else 0.",
            s + ["fault"], registry=r,
        ),
        streams_active=Gauge("fvq_streams_active", "Streams live now (ended ones waiting out their retention not counted).", registry=r),
        streams_refused=Counter(
            "fvq_streams_refused_total", "Streams refused, by reason (limit: the stream cap).", ["reason"], registry=r
        ),
        quality_score=Gauge(
            "fvq_quality_score", "Overall quality of the last window, 0-100 (MOS scale).", s, registry=r
        ),
        quality_level=Gauge(
            "fvq_quality_level", "Quality level of the last window: 1 bad, 2 poor, 3 fair, 4 good, 5 excellent.",
            s, registry=r,
        ),
        dimension_score=Gauge(
            "fvq_dimension_score",
            "Per-distortion quality of the last window, 0-100, higher is better.",
            s + ["dimension", "region"], registry=r,
        ),
        picture_light=Gauge(
            "fvq_picture_light_log_ratio",
            "The scene light's colour in the last window (grey surfaces): log of red/green or blue/green; a jump "
            "away from the stream's own recent values is a white balance or pipeline change.",
            s + ["ratio"], registry=r,
        ),
        colour_switched=Gauge(
            "fvq_picture_colour_switched",
            "1 while the stream's colour pipeline is switched from what it showed before (`switch`: swap, chroma "
            "planes or channels swapped; range_washed or range_crushed, a limited/full range conversion changed), "
            "until it switches back.",
            s + ["switch"], registry=r,
        ),
        face_presence=Gauge(
            "fvq_face_presence_ratio", "Share of sampled frames in the last window with a face.", s, registry=r
        ),
        face_size=Gauge(
            "fvq_face_size_ratio", "Mean share of the frame the main face covers, last window.", s, registry=r
        ),
        face_stability=Gauge(
            "fvq_face_identity_stability",
            "Mean cosine similarity of consecutive face embeddings in the last window (1: same person throughout).",
            s, registry=r,
        ),
        recommendation=Gauge(
            "fvq_stream_recommendation",
            "1 for the stream's current probable cause of bad quality and the action to take.",
            s + ["cause", "action"], registry=r,
        ),
        stage_duration=Histogram(
            "fvq_stage_duration_seconds", "Time spent per pipeline stage call.", ["stage"],
            buckets=STAGE_BUCKETS, registry=r,
        ),
        publish_latency=Histogram(
            "fvq_window_publish_latency_seconds", "From a window's close to its metrics being published.",
            buckets=LATENCY_BUCKETS, registry=r,
        ),
        shed_level=Gauge(
            "fvq_analysis_shed_level",
            "Load shedding of the analysis: 0 none, 1 half the face embeddings, 2 also half the model frame "
            "encodings, 3 also half the sampled frames. Raised while the analysis falls behind live streams.",
            registry=r,
        ),
        backlog=Gauge(
            "fvq_analysis_backlog_seconds",
            "Age of the oldest live-stream frame waiting for analysis, at the end of the last analysis pass.",
            registry=r,
        ),
        frames_shed=Counter(
            "fvq_analysis_shed_total",
            "Per-frame work skipped by load shedding, by kind (embed, model, frame).", ["work"], registry=r,
        ),
        rtmp_rejected=Counter(
            "fvq_rtmp_rejected_total",
            "RTMP connections refused at the listen port, by reason (handshake_timeout: no complete handshake in "
            "rtmp.handshake_timeout_s, key: not allowed, token: missing or wrong, limit: the stream cap, exists: "
            "the name is taken, start: the stream could not start).",
            ["reason"], registry=r,
        ),
        hook_events=Counter(
            "fvq_hook_events_total",
            "Media-server publish notifications, by server (nginx, srs), event (publish, unpublish) and result "
            "(added, removed, ignored, refused, unauthorized, error).",
            ["server", "event", "result"], registry=r,
        ),
        http_rejected=Counter(
            "fvq_http_rejected_total",
            "HTTP connections or requests refused, by reason (connections, client_connections, header_timeout, "
            "body_timeout, body_too_large, header_too_large, bad_request).", ["reason"], registry=r,
        ),
        whip_sessions_ended=Counter(
            "fvq_whip_sessions_ended_total",
            "WHIP sessions ended, by reason (deleted, disconnected, never_connected, silent, undecodable, "
            "track_ended, negotiation_failed, shutdown).", ["reason"], registry=r,
        ),
    )
    r.register(m.stream_info)
    for reason in ("handshake_timeout", "key", "token", "limit", "exists", "start"):
        m.rtmp_rejected.labels(reason)
    for work in ("embed", "model", "frame"):
        m.frames_shed.labels(work)
    m.build_info.info({"version": __version__, "bundle": bundle})
    return m
