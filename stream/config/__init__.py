"""The monitor's configuration: one typed model, loaded in one place; unknown keys fail with their name.

`MonitorConfig` and `load_config` live here; a source's model is in sources.py, every other section in
sections.py. The rest of the code imports every name from `stream.config`.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlparse

import yaml
from pydantic import Field, ValidationError, field_validator, model_validator

# The kinds of source and their facts (stream/sources/: one module per kind); SourceKind and infer_kind are
# imported from here by the rest of the code.
from stream.config.sections import (
    AlertConfig,
    AnalysisConfig,
    ClusterConfig,
    EngineChoice,
    HooksConfig,
    LimitsConfig,
    RtmpConfig,
    ServerConfig,
    WindowConfig,
)
from stream.config.sources import (
    ConfigError,
    DropPolicy,
    ExpectedFormat,
    SourceConfig,
    _Strict,
    check_label_name,
    check_stream_name,
)
from stream.sources import SourceKind, infer_kind, source_type

__all__ = [
    "AlertConfig", "AnalysisConfig", "ClusterConfig", "ConfigError", "DropPolicy", "EngineChoice", "ExpectedFormat", "HooksConfig",
    "LimitsConfig", "MonitorConfig", "RtmpConfig", "ServerConfig", "SourceConfig", "SourceKind", "WindowConfig",
    "check_label_name", "check_stream_name", "default_workers", "infer_kind", "load_config", "parse_source_arg",
    "source_type",
]


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
    up with 12 and 14 (and 16 in 2 runs of 4) at the same CPU per stream-second (BENCHMARKS.md, "How many streams live on this host?")."""
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
