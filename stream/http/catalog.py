"""Where a monitor's streams come from (config file, stream API, media-server hooks): reload and the state file."""

from __future__ import annotations

import json
import logging
import os
import tempfile
import threading
import weakref
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from stream.config import MonitorConfig, SourceConfig, SourceKind, load_config
from stream.live.monitor import Monitor
from stream.redact import redact_options

log = logging.getLogger(__name__)

STATE_VERSION = 1


class CatalogError(ValueError):
    """A change the catalog cannot make; the message says why (HTTP 400/404/409 in the API)."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


class Catalog:
    """The streams of one monitor by origin. Config streams follow the config file (SIGHUP, POST /api/v1/reload),
    API streams follow the API and, with `persist: true`, a state file next to the config; hook streams follow
    their media server's publish notifications."""

    def __init__(self, monitor: Monitor, config_path: Path | None = None, overrides: dict | None = None) -> None:
        self.monitor = monitor
        self.config_path = Path(config_path) if config_path else None
        self.overrides = overrides or {}
        self.origin: dict[str, str] = {s.name: "config" for s in monitor.config.sources}
        self.config_sources: dict[str, SourceConfig] = {s.name: s for s in monitor.config.sources}
        self.persisted: dict[str, SourceConfig] = {}
        self._lock = threading.RLock()
        self._adding: set[str] = set()  # names whose add is under way

    # the state file
    @property
    def state_path(self) -> Path | None:
        explicit = self.monitor.config.server.state_file
        if explicit is not None:
            return Path(explicit)
        if self.config_path is not None:
            return self.config_path.with_name(self.config_path.stem + ".streams.json")
        return None

    def load_state(self) -> list[str]:
        """Adds the persisted API streams; a missing file is nothing, a corrupt one is reported and ignored."""
        path = self.state_path
        if path is None or not path.exists():
            return []
        try:
            data = json.loads(path.read_text())
            if not isinstance(data, dict) or not isinstance(data.get("streams"), list):
                raise ValueError("expected {\"version\": 1, \"streams\": [...]}")
            sources = [SourceConfig.model_validate(s) for s in data["streams"]]
        except (OSError, ValueError, ValidationError) as exc:
            log.error("ignoring the stream state file %s: it is corrupt (%s)", path, str(exc).splitlines()[0])
            return []
        added = []
        for source in sources:
            if source.name in self.origin:
                log.warning("state file %s: stream %r is also in the config; the config's is kept", path, source.name)
                continue
            try:
                self.add(source, save=False)
                added.append(source.name)
            except Exception as exc:  # one bad entry never stops the others
                log.error("state file %s: stream %r not started: %s", path, source.name, exc)
        return added

    def _save(self) -> None:
        path = self.state_path
        if path is None:
            return
        body = json.dumps({"version": STATE_VERSION, "streams": [
            s.model_dump(mode="json", exclude_defaults=True) | {"name": s.name, "url": s.url, "persist": True}
            for s in self.persisted.values()
        ]}, indent=2)
        fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "w") as f:
                f.write(body + "\n")
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)  # atomic: a reader sees the old file or the new one, never half of one
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    # changes
    def _refuse_early(self, source: SourceConfig, origin: str) -> None:
        """What is wrong with the source itself, found before anything is changed."""
        from stream.admission import not_a_regular_file

        blocking = not_a_regular_file(source)
        if blocking is not None:
            raise CatalogError(blocking, 400)
        if source.kind == SourceKind.whip:
            raise CatalogError("WHIP streams are created by their publisher (POST /whip/{stream}), not by the API")
        if source.persist and origin == "api" and self.state_path is None:
            raise CatalogError("`persist: true` needs a config file (fvq serve --config) or server.state_file")

    def add(self, source: SourceConfig, origin: str = "api", save: bool = True) -> None:
        from stream.admission import StreamExistsError, StreamLimitError
        from stream.ingest.rtmp import RtmpListenError

        self._refuse_early(source, origin)
        with self._lock:  # the name is claimed here; starting it (a reader, a placement) runs beside other calls
            if source.name in self._adding:
                raise CatalogError(f"a stream named {source.name!r} is being added by another call", 409)
            self._adding.add(source.name)
        try:
            self.monitor.add_stream(source)
        except StreamExistsError as exc:
            raise CatalogError(str(exc), 409) from None
        except StreamLimitError as exc:
            raise CatalogError(str(exc), 429) from None
        except RtmpListenError as exc:
            raise CatalogError(str(exc), 409) from None
        finally:
            with self._lock:
                self._adding.discard(source.name)
        with self._lock:
            self.origin[source.name] = origin
            if origin == "api" and source.persist:
                self.persisted[source.name] = source
                if save:
                    self._save()

    def remove(self, name: str) -> bool:
        with self._lock:
            if not self.exists(name):
                return False
            self.monitor.remove_stream(name)
            self.origin.pop(name, None)
            if self.persisted.pop(name, None) is not None:
                self._save()
            return True

    def replace(self, source: SourceConfig) -> bool:
        """PUT: the stream becomes this source; an unchanged one is not touched. True when it was created."""
        with self._lock:
            old = self.source(source.name)
            if old is not None and old == source:
                return False
            origin = self.origin.get(source.name, "api")
            new_origin = "api" if origin == "config" else origin
            self._refuse_early(source, new_origin)  # a refused PUT leaves the stream as it was
            if old is not None:
                self.remove(source.name)
            try:
                self.add(source, new_origin)
            except Exception:
                if old is not None:  # the new source could not start: the old one comes back
                    try:
                        self.add(old, origin)
                    except Exception:
                        log.exception("stream %s: its old source could not be restored after a refused PUT",
                                      source.name)
                raise
            return old is None

    def exists(self, name: str) -> bool:
        return name in self.monitor.streams or name in self.monitor.rtmp.by_name

    def source(self, name: str) -> SourceConfig | None:
        stream = self.monitor.streams.get(name)
        if stream is not None:
            return stream.source
        return next((s for s in self.monitor.rtmp.sources() if s.name == name), None)

    def describe(self, name: str) -> dict[str, Any] | None:
        stream = self.monitor.streams.get(name)
        source = self.source(name)
        if source is None:
            return None
        origin = self.origin.get(name)
        if origin is None:  # streams the catalog did not add: a WHIP publisher's, an RTMP listen key's
            origin = "whip" if source.kind == SourceKind.whip else "rtmp"
        shown = source.model_dump(mode="json")
        # secrets stay out of the answer: the URL as /streams shows it, publish tokens masked
        shown["url"] = stream.state.url if stream is not None else source.url
        shown["publish_tokens"] = {k: "***" for k in source.publish_tokens}
        shown["options"] = redact_options(source.options)
        return {
            "name": name,
            "origin": origin,
            "source": shown,
            "status": _scrub(stream.state.to_json(), source.url, shown["url"]) if stream is not None
            else {"state": "listening"},
        }

    def list(self) -> list[dict[str, Any]]:
        names = list(self.monitor.streams) + [s.name for s in self.monitor.rtmp.sources()]
        return [d for d in (self.describe(n) for n in sorted(set(names))) if d is not None]

    def reload(self) -> dict[str, Any]:
        """Re-reads the config file and applies the difference in `sources`; unchanged streams are not touched."""
        if self.config_path is None:
            raise CatalogError("the monitor was started without --config: there is no file to reload")
        new: MonitorConfig = load_config(self.config_path, self.overrides)  # ConfigError: nothing changes
        summary: dict[str, Any] = {"added": [], "removed": [], "changed": [], "unchanged": [], "failed": {}}
        with self._lock:
            wanted = {s.name: s for s in new.sources}
            for name in list(self.config_sources):
                if name not in wanted and self.origin.get(name) == "config":
                    self.remove(name)
                    summary["removed"].append(name)
            for name, source in wanted.items():
                old = self.config_sources.get(name)
                if old is not None and old == source and self.exists(name):
                    summary["unchanged"].append(name)
                    continue
                try:
                    if self.exists(name):
                        self.remove(name)
                        summary["changed"].append(name)
                    else:
                        summary["added"].append(name)
                    self.add(source, "config")
                except Exception as exc:  # one bad stream never stops the others
                    summary["failed"][name] = str(exc)
                    log.error("reload: stream %r not started: %s", name, exc)
            self.config_sources = wanted
            restart = [k for k in MonitorConfig.model_fields if k != "sources"
                       and getattr(new, k) != getattr(self.monitor.config, k)]
            if restart:
                summary["restart_needed"] = restart
                log.warning("reload: changes to %s take effect at the next restart", ", ".join(restart))
        log.info("reload of %s: %s", self.config_path, {k: v for k, v in summary.items() if v})
        return summary


def _scrub(status: dict[str, Any], url: str, shown: str) -> dict[str, Any]:
    """The source's full URL (credentials, keys) replaced by its redacted form wherever the status quotes it."""
    if url == shown:
        return status
    return json.loads(json.dumps(status).replace(json.dumps(url)[1:-1], json.dumps(shown)[1:-1]))


_CATALOGS: weakref.WeakKeyDictionary[Monitor, Catalog] = weakref.WeakKeyDictionary()


def attach_catalog(monitor: Monitor, config_path: Path | None = None, overrides: dict | None = None) -> Catalog:
    """The command line's catalog: knows the config file to reload and where the state file lies."""
    _CATALOGS[monitor] = Catalog(monitor, config_path, overrides)
    return _CATALOGS[monitor]


def catalog_for(monitor: Monitor) -> Catalog:
    if monitor not in _CATALOGS:
        _CATALOGS[monitor] = Catalog(monitor)
    return _CATALOGS[monitor]
