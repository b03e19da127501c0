"""Firing and resolved notices to a webhook in Alertmanager's JSON format, sent from a thread that never blocks."""

from __future__ import annotations

import base64
import json
import logging
import queue
import threading
import urllib.error
import urllib.request
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

from prometheus_client import CollectorRegistry, Counter

from engines.families import Cause
from stream import __version__
from stream.config import AlertConfig
from stream.redact import redact_text, redact_url, url_credentials

log = logging.getLogger(__name__)

ZERO_TIME = "0001-01-01T00:00:00Z"  # Alertmanager's endsAt of an alert that is still firing
MAX_BACKOFF_S = 30.0
RECEIVER = "fvq"


def rfc3339(t: float | None) -> str:
    if t is None:
        return ZERO_TIME
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def fingerprint(labels: dict[str, str]) -> str:
    """16 hex digits of FNV-1a 64 over the sorted labels, as Alertmanager shows an alert's identity."""
    h = 0xCBF29CE484222325
    for k in sorted(labels):
        for byte in f"{k}\xff{labels[k]}\xff".encode():
            h = ((h ^ byte) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return f"{h:016x}"


def stream_url(external_url: str, stream: str) -> str:
    """The stream's page on the monitor (`/streams/{name}`, HTML in a browser)."""
    return f"{external_url}/streams/{quote(stream, safe='')}"


def alert_json(status: str, stream: str, cause: Cause, starts_at: float, ends_at: float | None,
               external_url: str, evidence_id: str | None = None) -> dict[str, Any]:
    labels = {"alertname": cause.alertname, "stream": stream, "severity": cause.severity, "cause": cause.name}
    annotations = {
        "summary": f"{stream}: {cause.summary}",
        "description": f"The monitor {'raised' if status == 'firing' else 'cleared'} cause {cause.name!r} "
                       f"for stream {stream!r}.",
        "action": cause.action,
        "stream_url": stream_url(external_url, stream),
    }
    if evidence_id is not None:  # the frame that shows the cause, from the window that raised it
        annotations["evidence_url"] = f"{stream_url(external_url, stream)}/evidence/{evidence_id}.jpg"
    return {
        "status": status,
        "labels": labels,
        "annotations": annotations,
        "startsAt": rfc3339(starts_at),
        "endsAt": rfc3339(ends_at) if status == "resolved" else ZERO_TIME,
        "generatorURL": stream_url(external_url, stream),
        "fingerprint": fingerprint(labels),
    }


def notification(alert: dict[str, Any], external_url: str) -> dict[str, Any]:
    """One Alertmanager webhook message (version 4), grouped by alertname and stream."""
    group = {"alertname": alert["labels"]["alertname"], "stream": alert["labels"]["stream"]}
    return {
        "version": "4",
        "groupKey": "{}:{" + ", ".join(f'{k}="{v}"' for k, v in group.items()) + "}",
        "truncatedAlerts": 0,
        "status": alert["status"],
        "receiver": RECEIVER,
        "groupLabels": group,
        "commonLabels": dict(alert["labels"]),
        "commonAnnotations": dict(alert["annotations"]),
        "externalURL": external_url,
        "alerts": [alert],
    }


class WebhookNotifier:
    """Queues notices (a Recommender `notify` callback) and posts them from its own thread.

    The queue is bounded (`webhook_queue_size`): when the receiver falls behind, the oldest notice is dropped.
    Each post has a timeout; 5xx, 429 and network errors are retried with exponential backoff, other 4xx are not.
    Outcomes are counted in `fvq_webhook_notifications_total{outcome="sent|failed|dropped"}`.
    """

    def __init__(self, config: AlertConfig, registry: CollectorRegistry | None, external_url: str = "",
                 evidence: Callable[[str, str], str | None] | None = None) -> None:
        if not config.webhook_url:
            raise ValueError("alerts.webhook_url is not set")
        # credentials in the URL travel as Basic auth (urllib would put them in the host name) and are never logged
        self._post_url, credentials = url_credentials(config.webhook_url)
        self._auth = None if credentials is None else "Basic " + base64.b64encode(
            f"{credentials[0]}:{credentials[1]}".encode()).decode()
        self.url = redact_url(config.webhook_url)  # what logs and errors show
        self.config = config
        self.external_url = external_url.rstrip("/")
        self.evidence = evidence  # (stream, cause) -> the id of the evidence frame of that cause, if one was kept
        self._queue: queue.Queue[dict[str, Any]] = queue.Queue(maxsize=config.webhook_queue_size)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="webhook", daemon=True)
        self.outcomes = Counter(
            "fvq_webhook_notifications_total", "Webhook notices by outcome: sent, failed (after retries), dropped "
            "(queue full).", ["outcome"], registry=registry,
        )
        for outcome in ("sent", "failed", "dropped"):
            self.outcomes.labels(outcome)

    def start(self) -> WebhookNotifier:
        self._thread.start()
        return self

    def stop(self, timeout: float = 2.0) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    # called from the analysis thread: must never wait
    def notice(self, status: str, stream: str, cause: Cause, starts_at: float, ends_at: float | None) -> None:
        evidence_id = self.evidence(stream, cause.name) if self.evidence is not None else None
        message = notification(alert_json(status, stream, cause, starts_at, ends_at, self.external_url, evidence_id),
                               self.external_url)
        while True:
            try:
                self._queue.put_nowait(message)
                return
            except queue.Full:
                try:
                    self._queue.get_nowait()
                    self.outcomes.labels("dropped").inc()
                    log.warning("webhook queue full: dropped the oldest notice")
                except queue.Empty:
                    pass

    # the sender thread
    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                message = self._queue.get(timeout=0.2)
            except queue.Empty:
                continue
            self.outcomes.labels("sent" if self._deliver(message) else "failed").inc()

    def _deliver(self, message: dict[str, Any]) -> bool:
        body = json.dumps(message).encode()
        delay = self.config.webhook_backoff_s
        for attempt in range(self.config.webhook_retries + 1):
            retry, reason = self._post(body)
            if reason is None:
                return True
            if not retry or attempt == self.config.webhook_retries:
                log.warning("webhook %s: giving up on a %s notice after %d attempts: %s",
                            self.url, message["status"], attempt + 1, reason)
                return False
            log.info("webhook %s: %s; retrying in %.1f s", self.url, reason, delay)
            if self._stop.wait(delay):
                return False
            delay = min(delay * 2, MAX_BACKOFF_S)
        return False

    def _post(self, body: bytes) -> tuple[bool, str | None]:
        """(worth retrying, what went wrong or None)."""
        headers = {"Content-Type": "application/json", "User-Agent": f"fvq-live/{__version__}"}
        if self._auth is not None:
            headers["Authorization"] = self._auth
        request = urllib.request.Request(self._post_url, data=body, method="POST", headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=self.config.webhook_timeout_s) as response:
                response.read()
            return False, None
        except urllib.error.HTTPError as exc:
            return exc.code >= 500 or exc.code == 429, f"HTTP {exc.code}"
        except (urllib.error.URLError, TimeoutError, OSError) as exc:
            return True, redact_text(f"{type(exc).__name__}: {getattr(exc, 'reason', exc)}")
