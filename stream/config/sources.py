"""The configuration of one source (a stream to watch), its name and labels, and the base of every section."""

from __future__ import annotations

import re
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from stream.sources import SourceKind, infer_kind, source_type

_LABEL_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
RESERVED_LABELS = frozenset({"stream", "job", "instance", "le", "quantile"})


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


class ExpectedFormat(_Strict):
    """What the channel should carry: a decoded picture that differs is a fault (format_change, or rendition_down when
    the coded size is smaller)."""

    width: int | None = Field(None, ge=16, le=16384, description="Coded width in pixels the stream should carry.")
    height: int | None = Field(None, ge=16, le=16384, description="Coded height in pixels the stream should carry.")
    fps: float | None = Field(
        None, gt=0, le=480, description="Frame rate the stream should carry (frames received; 15% off is a change)."
    )
    pixel_format: str | None = Field(None, description="Decoded pixel format it should carry (yuv420p, nv12, ...).")


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
    expect: ExpectedFormat | None = Field(
        None, description="What the channel should carry ({width, height, fps, pixel_format}): a decoded stream that "
        "differs raises format_change (rendition_down when its coded size is smaller). Without it, a stream is "
        "compared with its own recent past.",
    )
    persist: bool = Field(
        False, description="Streams added through the stream API: keep them across restarts (in the state file)."
    )
    expected: bool = Field(
        False,
        description="The stream should always be live: when its publisher vanishes it stays listed with "
        "state `down` and fvq_stream_up 0 (FvqStreamDown fires) until it comes back or is deleted, instead of "
        "ending. On an RTMP listen app for many publishers (rtmp_server): every key published there.",
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

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        return check_source_url(v)

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


MAX_URL_CHARS = 4096
NETWORK_SCHEMES = ("rtmp", "rtmps", "rtsp", "rtsps", "srt", "http", "https", "udp", "tcp")


def check_source_url(url: str) -> str:
    """What no reader could ever open is refused when the source is added (a path or address that may appear later,
    a server that is down now, is the reader's to report: the stream reads `error` and retries)."""
    from urllib.parse import urlparse

    from stream.redact import redact_url

    if not url.strip():
        raise ValueError("the URL is empty: give a file path or a stream URL")
    if len(url) > MAX_URL_CHARS:
        raise ValueError(f"the URL is {len(url)} characters long; at most {MAX_URL_CHARS}")
    if any(ord(c) < 32 or ord(c) == 127 for c in url):
        raise ValueError(f"the URL {redact_url(url)!r} holds a control character (a NUL, a line break)")
    parsed = urlparse(url)
    if parsed.scheme.lower() in NETWORK_SCHEMES:
        try:
            _ = parsed.port  # raises on a port that is not a number in 0-65535
            host = parsed.hostname
        except ValueError as exc:
            raise ValueError(f"the URL {redact_url(url)!r} has a bad address: {exc}") from None
        if not host:
            raise ValueError(f"the URL {redact_url(url)!r} names no host")
    elif not parsed.scheme or parsed.scheme.lower() == "file":
        import os

        path = parsed.path if parsed.scheme else url
        if os.path.isdir(path):
            raise ValueError(f"{path}: is a folder, not a video file")
    return url


def check_label_name(name: str) -> str:
    """A label name Prometheus accepts and that clashes with no label the monitor or Prometheus sets itself."""
    if not _LABEL_NAME.match(name):
        raise ValueError(f"label name {name!r} is invalid: Prometheus label names match [a-zA-Z_][a-zA-Z0-9_]*")
    if name.startswith("__"):
        raise ValueError(f"label name {name!r} is invalid: names starting with __ are reserved by Prometheus")
    if name in RESERVED_LABELS:
        raise ValueError(f"label name {name!r} is reserved (stream, job, instance, le and quantile are set elsewhere)")
    return name
