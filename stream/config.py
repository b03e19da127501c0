"""The monitor's configuration: one typed model, loaded in one place; unknown keys fail with their name."""

from __future__ import annotations

import re
from enum import StrEnum
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator


class ConfigError(ValueError):
    """A configuration that cannot run; the message names the field and what is wrong."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class DropPolicy(StrEnum):
    wait = "wait"  # the decoder waits for room (files: nothing is lost)
    drop_oldest = "drop_oldest"  # the oldest queued frame is dropped (live sources: stay current)
    latest_only = "latest_only"  # keep only the newest frame


class SourceKind(StrEnum):
    file = "file"
    rtmp_pull = "rtmp_pull"
    rtmp_listen = "rtmp_listen"
    pull = "pull"  # RTSP, HLS, SRT, HTTP: anything ffmpeg opens
    whip = "whip"


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

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return check_stream_name(v)

    @model_validator(mode="after")
    def _infer(self) -> SourceConfig:
        if self.kind is None:
            object.__setattr__(self, "kind", infer_kind(self.url, self.listen))
        if self.drop_policy is None:
            policy = DropPolicy.wait if self.kind == SourceKind.file else DropPolicy.drop_oldest
            object.__setattr__(self, "drop_policy", policy)
        return self


def infer_kind(url: str, listen: bool = False) -> SourceKind:
    scheme = urlparse(url).scheme.lower()
    if scheme in ("rtmp", "rtmps"):
        return SourceKind.rtmp_listen if listen else SourceKind.rtmp_pull
    if listen:
        from stream.redact import redact_url

        raise ValueError(f"`listen` is for rtmp:// URLs only, not {redact_url(url)!r}")
    if scheme in ("rtsp", "rtsps", "srt", "http", "https", "udp", "tcp"):
        return SourceKind.pull
    if scheme in ("", "file"):
        return SourceKind.file
    from stream.redact import redact_url

    raise ValueError(
        f"unsupported URL scheme {scheme!r} in {redact_url(url)!r}: use a file path, rtmp, rtsp, srt or http(s)"
    )


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
