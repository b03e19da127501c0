"""The monitor's configuration: one typed model, loaded in one place; unknown keys fail with their name."""

from __future__ import annotations

import re
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlparse

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

# The kinds of source and their facts (stream/sources/: one module per kind); SourceKind and infer_kind are
# imported from here by the rest of the code.
from stream.sources import SourceKind, infer_kind, source_type


class ConfigError(ValueError):
    """A configuration that cannot run; the message names the field and what is wrong."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class DropPolicy(StrEnum):
    wait = "wait"  # the decoder waits for room (files: nothing is lost)
    drop_oldest = "drop_oldest"  # the oldest queued frame is dropped (live sources: stay current)
    latest_only = "latest_only"  # keep only the newest frame


_STREAM_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def check_stream_name(name: str) -> str:
    if not _STREAM_NAME.match(name):
        raise ValueError(
            f"stream name {name!r} is invalid: use 1-64 letters, digits, '_', '.', '-', starting with a letter or digit"
        )
    return name


class SourceConfig(_Strict):
    name: str = Field(description="Stream name: the `stream` label of every metric.")
    url: str = Field(description="A file path, or rtmp://, rtsp://, srt://, http(s):// (HLS) URL.")
    kind: SourceKind | None = Field(
        None, description="Source kind; inferred from the URL when left out (rtmp_listen needs `listen: true`)."
    )
    listen: bool = Field(False, description="For rtmp:// URLs: accept a publisher on this address instead of pulling.")
    realtime: bool = Field(True, description="Files only: pace frames by their timestamps as if live.")
    loop: bool = Field(False, description="Files only: start again at the end (demos).")
    drop_policy: DropPolicy | None = Field(
        None, description="Queue policy when analysis falls behind; files default to wait, live sources to drop_oldest."
    )
    queue_frames: int = Field(256, ge=2, le=10000, description="Frames held between decode and analysis.")
    options: dict[str, str] = Field(default_factory=dict, description="Extra ffmpeg/PyAV input options.")
    labels: dict[str, str] = Field(
        default_factory=dict,
        description="The operator's own labels (channel, region, customer...), published once as "
        "fvq_stream_info{stream=..., <labels>} 1. Names follow Prometheus's rules; stream, job, instance, le, "
        "quantile and names starting with __ are reserved.",
    )
    persist: bool = Field(
        False, description="Streams added through the stream API: keep them across restarts (in the state file)."
    )
    allow_keys: list[str] = Field(
        default_factory=list,
        description="rtmp_server listen sources: stream keys accepted (shell patterns such as cam-*); empty: any key.",
    )
    publish_tokens: dict[str, str] = Field(
        default_factory=dict,
        description="rtmp_server listen sources: key (or pattern, * for all) -> token the publisher must send as "
        "?token= in the URL or key; a key that matches no entry needs no token.",
    )

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return check_stream_name(v)

    @field_validator("labels")
    @classmethod
    def _labels(cls, v: dict[str, str]) -> dict[str, str]:
        for key, value in v.items():
            check_label_name(key)
            if len(value) > 256:
                raise ValueError(f"label {key!r}: values are limited to 256 characters")
        if len(v) > 16:
            raise ValueError(f"at most 16 labels per stream, not {len(v)}")
        return v

    @model_validator(mode="after")
    def _infer(self) -> SourceConfig:
        if self.kind is None:
            object.__setattr__(self, "kind", infer_kind(self.url, self.listen))
        facts = source_type(self.kind)
        if self.drop_policy is None:
            policy = DropPolicy.wait if facts.ends else DropPolicy.drop_oldest
            object.__setattr__(self, "drop_policy", policy)
        if self.allow_keys and not facts.takes_allow_keys:
            raise ValueError("allow_keys is for RTMP listen sources without a key (rtmp://HOST:PORT/APP, listen: true)")
        if self.publish_tokens and not facts.takes_publish_tokens:
            raise ValueError("publish_tokens is for RTMP listen sources (listen: true)")
        return self


_LABEL_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
RESERVED_LABELS = frozenset({"stream", "job", "instance", "le", "quantile"})


def check_label_name(name: str) -> str:
    """A label name Prometheus accepts and that clashes with no label the monitor or Prometheus sets itself."""
    if not _LABEL_NAME.match(name):
        raise ValueError(f"label name {name!r} is invalid: Prometheus label names match [a-zA-Z_][a-zA-Z0-9_]*")
    if name.startswith("__"):
        raise ValueError(f"label name {name!r} is invalid: names starting with __ are reserved by Prometheus")
    if name in RESERVED_LABELS:
        raise ValueError(f"label name {name!r} is reserved (stream, job, instance, le and quantile are set elsewhere)")
    return name


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
    low_bitrate_bps: float = Field(1_500_000, ge=0, description="Below this bitrate, artifacts mean: raise bitrate.")
    low_bits_per_pixel: float = Field(
        0.05, ge=0, description="Also a low bitrate: below this many bits per pixel (bitrate / (width x height x fps))."
    )
    no_face_ratio: float = Field(
        0.2, ge=0, le=1, description="Face presence below this share of sampled frames means: no face (framing)."
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


HOOK_FIELDS = ("app", "name", "addr", "vhost")


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


class MonitorConfig(_Strict):
    sources: list[SourceConfig] = Field(default_factory=list, description="Streams to watch from the start.")
    window: WindowConfig = Field(default_factory=WindowConfig)
    analysis: AnalysisConfig = Field(default_factory=AnalysisConfig)
    face: EngineChoice = Field(default_factory=EngineChoice, description="Runtime for YuNet and SFace.")
    bundle: Path | None = Field(None, description="Model bundle folder; the shipped default when left out.")
    no_model: bool = Field(False, description="Run without the quality model: signal measurements only.")
    server: ServerConfig = Field(default_factory=ServerConfig)
    limits: LimitsConfig = Field(default_factory=LimitsConfig)
    alerts: AlertConfig = Field(default_factory=AlertConfig)
    hooks: HooksConfig = Field(
        default_factory=HooksConfig, description="Media-server publish hooks (nginx-rtmp, SRS): what to pull."
    )
    rtmp: RtmpConfig = Field(default_factory=RtmpConfig, description="RTMP listen (the bundled nginx-rtmp).")
    workers: int | Literal["auto"] = Field(
        "auto", description="Worker processes on this machine, each owning a share of the streams with its own "
        "decode and analysis, behind one front serving HTTP (the stream API, hooks, reload and RTMP listen "
        "included). `auto` (the default): one per usable core, as many as the memory holds (WORKER_MEMORY_BYTES "
        "each, `worker_spares` counted), at least one; so 1 on a 1-core machine, 2 on a 2-core one. 1: the "
        "single-process monitor (no front).",
    )
    worker_spares: int = Field(
        1, ge=0, le=8, description="With several workers: started idle workers (models loaded) that take over a dead "
        "worker's streams at once instead of after a cold start (each costs a worker's memory).",
    )
    cluster: ClusterConfig | None = Field(
        None, description="Run the workers as Ray actors across a Ray cluster's nodes (`fvq serve --ray`)."
    )

    @field_validator("workers")
    @classmethod
    def _workers(cls, v: int | str) -> int | str:
        if isinstance(v, int) and not 1 <= v <= 256:
            raise ValueError(f"workers must be 1-256 or `auto`, not {v}")
        return v

    def worker_count(self) -> int:
        """`workers` with `auto` resolved for this machine."""
        return default_workers(spares=self.worker_spares) if self.workers == "auto" else int(self.workers)

    @model_validator(mode="after")
    def _unique(self) -> MonitorConfig:
        seen: set[str] = set()
        for s in self.sources:
            if s.name in seen:
                raise ValueError(f"stream name {s.name!r} is used twice in `sources`")
            seen.add(s.name)
        if len(self.sources) > self.limits.max_streams:
            raise ValueError(
                f"`sources` lists {len(self.sources)} streams but limits.max_streams is {self.limits.max_streams}: "
                "raise the limit or watch fewer sources"
            )
        return self


# What one worker process may take at its peak: its models, ONNX Runtime and PyAV (~0.65 GiB at start) and the
# frames of its share of the streams (two workers of 8 streams of 720p30 and the front peaked at 1.7 GiB, BENCHMARKS.md).
WORKER_MEMORY_BYTES = 1 << 30


def default_workers(cores: int | None = None, memory_bytes: int | None = None, spares: int = 0) -> int:
    """Workers for `workers: auto`: one per usable core, no more than the machine's memory holds beside `spares`
    warm spare workers (which take a worker's memory each when there are several workers), at least one.

    Not fewer: one process's analysis thread shares its GIL with every decode thread of the process, and waits for
    it after each numpy, OpenCV and ONNX Runtime call (43% of its time with 12 streams on 2 cores, while it used
    0.03 CPU-s per stream-second), so one process fell behind at 12-16 streams on 2 cores where two workers kept
    up with 12 and 14 (and 16 in 2 runs of 4) at the same CPU per stream-second (BENCHMARKS.md, "Scaling")."""
    import os

    if cores is None:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if memory_bytes is None:
        try:
            memory_bytes = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):  # not POSIX: do not cap
            memory_bytes = cores * WORKER_MEMORY_BYTES
    workers = min(cores, memory_bytes // WORKER_MEMORY_BYTES)
    if workers > 1:
        workers = min(workers, memory_bytes // WORKER_MEMORY_BYTES - spares)
    return max(1, workers)


def _format_error(exc: ValidationError, origin: str) -> str:
    lines = [f"invalid configuration in {origin}:"]
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "(top level)"
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown key (check its spelling)"
        lines.append(f"  {loc}: {msg}")
    return "\n".join(lines)


def load_config(path: Path | None = None, overrides: dict[str, Any] | None = None) -> MonitorConfig:
    """Reads the YAML file (if any), applies command-line overrides, validates once."""
    data: dict[str, Any] = {}
    origin = "command line"
    if path is not None:
        origin = str(path)
        try:
            loaded = yaml.safe_load(Path(path).read_text())
        except FileNotFoundError as exc:
            raise ConfigError(f"config file not found: {path}") from exc
        except yaml.YAMLError as exc:
            raise ConfigError(f"config file {path} is not valid YAML: {exc}") from exc
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"config file {path} must hold a mapping at the top level")
        data = loaded
    for key, value in (overrides or {}).items():
        if key == "sources":
            data["sources"] = list(data.get("sources") or []) + list(value)
        elif isinstance(value, dict):
            data[key] = {**(data.get(key) or {}), **value}
        else:
            data[key] = value
    try:
        return MonitorConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_format_error(exc, origin)) from None


def parse_source_arg(arg: str, listen: bool = False) -> dict[str, Any]:
    """`NAME=URL` or a bare URL/path (its file stem or last path segment becomes the name)."""
    if "=" in arg and not arg.split("=", 1)[0].count("/") and "://" not in arg.split("=", 1)[0]:
        name, url = arg.split("=", 1)
    else:
        url = arg
        parsed = urlparse(url)
        tail = (parsed.path.rstrip("/").rsplit("/", 1)[-1] or parsed.netloc or "stream").rsplit(".", 1)[0]
        name = re.sub(r"[^A-Za-z0-9_.-]", "_", tail)[:64] or "stream"
    entry: dict[str, Any] = {"name": name, "url": url}
    if listen:
        entry["listen"] = True
    return entry
