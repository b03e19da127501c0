"""The configuration's sections: window, analysis, engine, server, limits, alerts, hooks, RTMP listen, cluster."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlparse

from pydantic import Field, field_validator, model_validator

from stream.config.sources import ConfigError, DropPolicy, _Strict, check_label_name  # noqa: F401

HOOK_FIELDS = ("app", "name", "addr", "vhost")


class WindowConfig(_Strict):
    length_s: float = Field(4.0, gt=0.2, le=60, description="Window length in seconds of presentation time.")
    hop_s: float = Field(1.0, gt=0.05, le=60, description="Seconds between window starts (a window per hop).")

    @model_validator(mode="after")
    def _hop(self) -> WindowConfig:
        if self.hop_s > self.length_s:
            raise ValueError(f"hop_s ({self.hop_s}) must not exceed length_s ({self.length_s})")
        return self


class AnalysisConfig(_Strict):
    width: int = Field(320, ge=64, le=1920, description="Analysis frames are scaled once to this width.")
    sample_fps: float = Field(2.0, gt=0, le=30, description="Frames per second analysed in full (faces, signals).")
    thumb_width: int = Field(64, ge=16, le=256, description="Width of the luma thumbnail kept for every frame.")
    embed_faces: bool = Field(True, description="Compute SFace embeddings (identity stability, model input).")
    embed_fps: float = Field(
        0.5, gt=0, le=30, description="Face embeddings per second (SFace costs ~17 ms a face on one core)."
    )
    model_fps: float = Field(
        1.0, gt=0, le=30,
        description="Frames per second the rater's frame encoder runs on, on the sampling grid (~9 ms a frame on one core).",
    )
    batch_interval_s: float = Field(
        0.05, gt=0, le=1, description="How often the analysis loop gathers work from all streams."
    )
    stale_after_s: float = Field(5.0, gt=0, description="A stream with no frame for this long is marked down.")
    max_lag_s: float = Field(
        3.0, gt=0,
        description="Live streams: a window whose last frame arrived this long ago is skipped (counted as "
        "fvq_windows_dropped_total{reason=\"late\"}) so a backlogged analysis catches up instead of lagging.",
    )
    shed_load: bool = Field(
        True,
        description="When the analysis falls behind live streams, do less per frame instead of losing windows: "
        "level 1 halves the face embeddings, 2 also the model's frame encodings, 3 also the sampled frames "
        "(fvq_analysis_shed_level). Scores then rest on fewer frames; offline scoring never sheds.",
    )
    shed_backlog_s: float = Field(
        1.0, gt=0,
        description="Backlog (age of the oldest live frame waiting for analysis) above which shedding goes up a "
        "level, while it keeps growing; it goes down a level after shed_recover_s below a quarter of this.",
    )
    shed_recover_s: float = Field(30.0, gt=0, description="Calm time before load shedding goes down a level.")


class EngineChoice(_Strict):
    runtime: str = Field("onnxruntime", description="Runtime from the engine registry (onnxruntime, torch, tensorrt).")
    config: dict[str, Any] = Field(default_factory=dict, description="The runtime's own options.")


class ServerConfig(_Strict):
    host: str = Field("127.0.0.1", description="HTTP listen address.")
    port: int = Field(9108, ge=0, le=65535, description="HTTP port for /metrics, /healthz, /streams and WHIP.")
    whip_token: str | None = Field(None, description="If set, WHIP requests need `Authorization: Bearer <token>`.")
    whip_max_body_bytes: int = Field(64 * 1024, ge=1024, description="Largest SDP offer accepted.")
    api_token: str | None = Field(
        None, description="The stream API (/api/v1) and media-server hooks (/hooks) need `Authorization: Bearer "
        "<token>` (hooks may send `?token=` instead); without one they answer loopback clients only."
    )
    state_file: Path | None = Field(
        None, description="Where streams added through the API with `persist: true` are kept; default: "
        "<config file>.streams.json next to the config file."
    )
    allow_anonymous_ingest: bool = Field(
        False,
        description="Let clients off loopback publish over WHIP without a token. By default a WHIP request from "
        "another address needs `server.whip_token`; loopback clients never do.",
    )
    cors_origins: list[str] = Field(
        default_factory=list,
        description="Browser origins (e.g. https://studio.example.com, or '*') allowed to call WHIP across origins; "
        "none by default.",
    )
    header_timeout_s: float = Field(
        10.0, gt=0, le=300, description="A request's line and headers must arrive within this time, or the "
        "connection is closed (slowloris).",
    )
    body_timeout_s: float = Field(10.0, gt=0, le=300, description="A request's body must arrive within this time.")
    keepalive_timeout_s: float = Field(15.0, gt=0, le=3600, description="An idle keep-alive connection is closed "
                                       "after this long.")
    keepalive_max_requests: int = Field(1000, ge=1, description="Requests served on one connection before it "
                                        "is closed.")
    max_header_bytes: int = Field(8190, ge=1024, le=65536, description="Longest request line or header field.")
    max_connections: int = Field(
        1024, ge=1, le=100_000,
        description="Open HTTP connections at most; more are answered 503 and closed at once (keep it well "
        "under the process's open-file limit).",
    )
    max_connections_per_client: int = Field(
        64, ge=1, le=100_000, description="Open HTTP connections at most from one client address (503 beyond)."
    )
    limit_exempt_clients: list[str] = Field(
        default_factory=list,
        description="Client networks (CIDR, e.g. your Prometheus at 10.0.0.5/32) that the per-client connection "
        "cap does not apply to.",
    )
    whip_max_sessions_per_client: int = Field(
        4, ge=1, le=10_000, description="WHIP sessions at most at a time from one client address (429 beyond)."
    )
    whip_idle_timeout_s: float = Field(
        15.0, gt=0, le=3600,
        description="A connected WHIP session that delivers no decodable frame for this long is ended "
        "(reason silent, or undecodable when media still arrives) and frees its slot.",
    )
    ice_allow_private: bool = Field(
        False,
        description="Accept loopback, private, link-local and unresolved (mDNS) ICE candidates in WHIP offers. "
        "Off by default, so an offer cannot make the server send STUN to internal addresses.",
    )
    ice_max_candidates: int = Field(16, ge=1, le=256, description="ICE candidates used from one offer at most.")
    frames: bool = Field(
        True, description="Keep each stream's latest analysed frame, its evidence frames and its last clean frame "
        "in memory (bounded, never on disk) and show them on the status pages (/ and /streams/{name}); false "
        "turns the frame routes off and leaves the pages without pictures.",
    )
    public_url: str | None = Field(
        None, description="The monitor's address as operators reach it (e.g. https://fvq.example.com): alert "
        "annotations and webhook notices link to its stream pages and evidence frames; default: the address "
        "it serves on.",
    )
    viewer_token: str | None = Field(
        None, description="A read-only token for the status pages and frames (`Authorization: Bearer <token>`, or "
        "`?token=` once in a browser, kept in a cookie): it opens the pages, never the stream API. The API token "
        "opens them too; with neither set, only loopback clients see them.",
    )

    @field_validator("public_url")
    @classmethod
    def _public_url(cls, v: str | None) -> str | None:
        if v is None:
            return v
        u = urlparse(v)
        if u.scheme not in ("http", "https") or not u.netloc:
            raise ValueError(f"{v!r} is not an http(s) URL (e.g. https://fvq.example.com)")
        return v.rstrip("/")

    @field_validator("limit_exempt_clients")
    @classmethod
    def _networks(cls, v: list[str]) -> list[str]:
        import ipaddress

        for net in v:
            try:
                ipaddress.ip_network(net, strict=False)
            except ValueError as exc:
                raise ValueError(f"{net!r} is not a network (CIDR like 10.0.0.5/32): {exc}") from None
        return v


class LimitsConfig(_Strict):
    max_streams: int = Field(64, ge=1, le=10000, description="Cap on concurrent streams (and `stream` label values).")
    ended_retention_s: float = Field(
        180.0, ge=0, le=86400,
        description="An ended stream (WHIP session closed, publisher gone, file finished) stays in /streams and "
        "/metrics this long, then its entry and series are removed.",
    )
    memory_trim_every_s: float = Field(
        15.0, ge=0, le=3600,
        description="Every this many seconds the C allocator gives its free memory back to the system (glibc's "
        "malloc_trim), so RSS falls again after a backlog or a flood of connections; 0 turns it off.",
    )
    malloc_arenas: int = Field(
        2, ge=0, le=1024,
        description="The serving process's threads share at most this many glibc malloc arenas (0: glibc's "
        "default, up to 8 per core): fewer arenas keep less freed memory apart.",
    )


class AlertConfig(_Strict):
    webhook_url: str | None = Field(None, description="Alertmanager-format webhook for firing/resolved notices.")
    low_quality_threshold: float = Field(40.0, ge=0, le=100, description="Score below which quality is low.")
    dimension_threshold: float = Field(45.0, ge=0, le=100, description="Dimension score below which it is a cause.")
    raise_after_s: float = Field(10.0, ge=0, description="A cause must hold this long before it is raised.")
    clear_after_s: float = Field(20.0, ge=0, description="A raised cause must be gone this long before it clears.")
    fault_raise_after_s: float = Field(
        3.0, ge=0, description="A fault read from the transport, the bitstream and the decoder (a stream down, "
        "black picture, transport damage, rendition down-switch, format change) must hold this long before it is "
        "raised.",
    )
    low_bitrate_bps: float = Field(1_500_000, ge=0, description="Below this bitrate, artifacts mean: raise bitrate.")
    low_bits_per_pixel: float = Field(
        0.05, ge=0, description="Also a low bitrate: below this many bits per pixel (bitrate / (width x height x fps))."
    )
    no_face_ratio: float = Field(
        0.2, ge=0, le=1, description="Face presence below this share of sampled frames means: no face (framing)."
    )
    baseline_window_s: float = Field(
        1800.0, gt=0, description="A stream's own baseline: the median of each dimension over this many seconds."
    )
    baseline_drop_points: float = Field(
        30.0, gt=0, le=100, description="A dimension this many points below the stream's baseline is a cause "
        "(below_baseline), whatever the absolute floor says."
    )
    baseline_min_history_s: float = Field(
        300.0, ge=0, description="The baseline judges a stream once it has this much history."
    )
    colour_shift: float = Field(
        0.12, gt=0, description="The scene light's colour moving this far (log R/G, log B/G) from the stream's "
        "baseline is a cause (colour_shift): a camera's white balance jumping, a pipeline switching."
    )
    webhook_timeout_s: float = Field(5.0, gt=0, le=60, description="Timeout of one webhook request.")
    webhook_retries: int = Field(4, ge=0, le=20, description="Retries of a failed webhook request, with backoff.")
    webhook_backoff_s: float = Field(
        0.5, gt=0, le=60, description="First retry delay; doubled on every retry (capped at 30 s)."
    )
    webhook_queue_size: int = Field(
        256, ge=1, le=100_000, description="Notifications waiting for the webhook; when full the oldest is dropped."
    )

    @field_validator("webhook_url")
    @classmethod
    def _webhook_url(cls, v: str | None) -> str | None:
        if v is not None and urlparse(v).scheme not in ("http", "https"):
            from stream.redact import redact_url

            raise ValueError(f"webhook_url must be an http:// or https:// URL, not {redact_url(v)!r}")
        return v


class HooksConfig(_Strict):
    pull_url: str = Field(
        "rtmp://127.0.0.1:1935/{app}/{name}",
        description="Template of the URL the monitor pulls when a media server reports a publish; {app}, {name}, "
        "{addr} and (SRS) {vhost} are filled in from the notification.",
    )
    stream_name: str = Field("{name}", description="Template of the stream's name (invalid characters become _).")
    labels: dict[str, str] = Field(
        default_factory=dict, description="Templates of the stream's labels, e.g. {app: \"{app}\"}."
    )
    apps: list[str] = Field(
        default_factory=list, description="Only publishes to these apps are followed; empty: every app."
    )
    expected: bool = Field(
        False, description="Streams that hooks add are expected (see the source field `expected`): an unpublish "
        "leaves them listed as `down` (fvq_stream_up 0) until the publisher comes back, instead of removing them.",
    )

    @field_validator("labels")
    @classmethod
    def _labels(cls, v: dict[str, str]) -> dict[str, str]:
        for key, template in v.items():
            check_label_name(key)
            _check_template(template)
        return v

    @field_validator("pull_url", "stream_name")
    @classmethod
    def _templates(cls, v: str) -> str:
        return _check_template(v)


def _check_template(template: str) -> str:
    import string

    try:
        fields = [f for _, f, _, _ in string.Formatter().parse(template) if f is not None]
    except ValueError as exc:
        raise ValueError(f"template {template!r}: {exc}") from None
    for f in fields:
        if f not in HOOK_FIELDS:
            raise ValueError(f"template {template!r}: unknown field {{{f}}}; use {', '.join(HOOK_FIELDS)}")
    return template


class RtmpConfig(_Strict):
    handshake_timeout_s: float = Field(
        5.0, ge=1, le=120,
        description="RTMP listen: a connection that has not completed its handshake and first packets in this "
        "long is closed (nginx-rtmp `timeout`), so an idle client never holds the port.",
    )
    idle_publisher_s: float = Field(
        10.0, ge=1, le=600, description="RTMP listen: a publisher that sends nothing for this long is dropped."
    )
    max_connections: int = Field(1024, ge=16, le=65536, description="RTMP listen: connections held at once.")


class ClusterConfig(_Strict):
    address: str = Field(
        "auto", description="Ray cluster to join: `auto` (the one started on this machine with `ray start`) or "
        "HOST:PORT of its head (`ray://HOST:10001` for Ray Client). Needs `pip install fvq-live[cluster]`.",
    )
    workers_per_node: int = Field(1, ge=1, le=256, description="Worker actors placed on every node that takes workers.")
    num_cpus: float = Field(
        1.0, ge=0, le=1024,
        description="CPUs each worker actor reserves (set explicitly: Ray then never waits for CPUs a node lacks).",
    )
    resource: str | None = Field(
        None, description="Only nodes offering this custom resource (`ray start --resources '{\"fvq\": 1}'`) take "
        "workers; every alive node when left out.",
    )
    failover_after_s: float = Field(
        4.0, gt=0, le=300,
        description="A worker that has not answered the front for this long is treated as lost: its streams are "
        "placed on the other workers (Ray restarts the actor, which then takes new streams).",
    )
    rater: Literal["local", "serve"] = Field(
        "local", description="local: every worker rates its windows in process (the default); serve: a Ray Serve "
        "deployment batches every worker's windows (on GPU nodes with rater_num_gpus), local when it fails.",
    )
    rater_num_gpus: float = Field(0.0, ge=0, le=64, description="GPUs per Serve rater replica.")
    rater_num_cpus: float = Field(1.0, ge=0, le=64, description="CPUs per Serve rater replica.")
    rater_replicas: int = Field(1, ge=1, le=256, description="Serve rater replicas.")
    rater_max_batch: int = Field(64, ge=1, le=1024, description="Most windows a Serve rater call batches.")
