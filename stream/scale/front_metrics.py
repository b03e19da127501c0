"""The front's metrics: its own fvq_worker_* series, and the workers' expositions merged into one /metrics."""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.core import Metric
from prometheus_client.parser import text_string_to_metric_families


class FrontMetrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        w = ["worker"]
        self.up = Gauge("fvq_worker_up", "1 while the worker answers the front.", w, registry=r)
        self.restarts = Counter("fvq_worker_restarts_total", "Times the worker's process or actor was restarted.", w,
                                registry=r)
        self.streams = Gauge("fvq_worker_streams", "Streams placed on the worker.", w, registry=r)
        self.load = Gauge("fvq_worker_load_cpu", "Estimated CPU-s per second of the streams placed on the worker "
                          "(measured from its CPU time, shared by pixel rate).", w, registry=r)
        self.cpu = Gauge("fvq_worker_cpu_cores", "CPU-s per second the worker's process used, last interval.", w,
                         registry=r)
        self.placement = Gauge("fvq_stream_worker", "1 for the worker a stream is placed on.", ["stream", "worker"],
                               registry=r)
        self.moves = Counter("fvq_worker_stream_moves_total", "Streams moved to another worker, by reason "
                             "(lost: the worker stopped answering; rebalance: a worker joined).", ["reason"],
                             registry=r)
        self.lost = Counter("fvq_worker_windows_lost_total", "Windows a stream did not publish while its worker was "
                            "restarted or it moved (the gap over the hop, less one).", ["stream"], registry=r)
        self.scrape_errors = Counter("fvq_worker_scrape_errors_total", "Worker requests that failed.", w,
                                     registry=r)
        self.hook_events = Counter(
            "fvq_hook_events_total", "Media-server publish notifications, by server (nginx, srs, nms), event "
            "(publish, unpublish) and result (added, removed, ignored, refused, unauthorized, error).",
            ["server", "event", "result"], registry=r)
        self.rtmp_rejected = Counter(
            "fvq_rtmp_rejected_total", "RTMP connections refused at the front's listen ports, by reason "
            "(handshake_timeout, key, token, limit, exists, start).", ["reason"], registry=r)
        self.http_rejected = Counter(  # the front's public HTTP (stream.http.server.ConnectionLimits counts here)
            "fvq_http_rejected_total", "HTTP connections or requests refused, by reason (connections, "
            "client_connections, header_timeout, body_timeout, body_too_large, header_too_large, bad_request).",
            ["reason"], registry=r)
        self.streams_refused = Counter(  # the front's own refusals; the workers' are added in front_exposition
            "fvq_streams_refused_total", "Streams refused, by reason (limit: the stream cap; busy, timeout: the "
            "stream API's queue was full or did not reach the call in time).", ["reason"], registry=r)
        for reason in ("lost", "rebalance"):
            self.moves.labels(reason)

    def forget_worker(self, wid: str) -> None:
        for metric in (self.up, self.restarts, self.streams, self.load, self.cpu, self.scrape_errors):
            try:
                metric.remove(wid)
            except KeyError:
                pass

    def forget_stream(self, name: str) -> None:
        for metric in (self.placement, self.lost):
            with metric._lock:
                for labels in list(metric._metrics):
                    if labels[0] == name:
                        del metric._metrics[labels]


SUMMED = {"fvq_streams_active"}  # one series over all workers: what is live now, wherever it runs


def _summed(fam: Metric) -> Metric:
    out = Metric(fam.name, fam.documentation, fam.type, fam.unit)
    out.add_sample(fam.name, {}, sum(s.value for s in fam.samples if s.name == fam.name))
    return out


class _Families:
    """A collector that yields already-built metric families (the merged worker expositions)."""

    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def collect(self) -> Iterable[Metric]:
        return self.families


def merge_expositions(texts: dict[str, str], owned_by) -> list[Metric]:
    """Merges worker expositions into one set of families: a sample with a `stream` label is kept only from the
    worker that owns the stream (a stream still draining on its old worker never shows twice); every other sample
    gets a `worker` label. A series already taken is skipped, so the result never holds one twice."""
    merged: dict[str, Metric] = {}
    seen: set[tuple[str, tuple]] = set()
    for wid in sorted(texts):
        for fam in text_string_to_metric_families(texts[wid]):
            out = merged.get(fam.name)
            if out is None:
                out = merged[fam.name] = Metric(fam.name, fam.documentation, fam.type, fam.unit)
            for s in fam.samples:
                labels = dict(s.labels)
                if "stream" in labels:
                    if not owned_by(labels["stream"], wid):
                        continue
                else:
                    labels["worker"] = wid
                key = (s.name, tuple(sorted(labels.items())))
                if key in seen:
                    continue
                seen.add(key)
                out.add_sample(s.name, labels, s.value, s.timestamp, s.exemplar)
    return list(merged.values())


ADDED = {"fvq_streams_refused"}  # counted where the refusal happens, front or worker: one series per reason, summed


def _added(own: Metric, workers: Metric | None) -> Metric:
    out = Metric(own.name, own.documentation, own.type, own.unit)
    totals: dict[tuple, float] = {}
    for fam in (own, workers):
        for s in fam.samples if fam is not None else ():
            if s.name.endswith("_total"):
                key = tuple(sorted((k, v) for k, v in s.labels.items() if k != "worker"))
                totals[key] = totals.get(key, 0.0) + s.value
    for key, value in sorted(totals.items()):
        out.add_sample(own.name + "_total", dict(key), value)
    return out


def front_exposition(metrics: FrontMetrics, texts: dict[str, str], owned_by) -> bytes:
    """The front's /metrics body: its own series, then the workers' merged (streams_active summed over them,
    refusals added to the front's own)."""
    own = list(metrics.registry.collect())  # hooks and RTMP listen are counted by the front
    own_names = {m.name for m in own}
    merged = merge_expositions(texts, owned_by)
    by_name = {f.name: f for f in merged}
    families = [_added(f, by_name.get(f.name)) if f.name in ADDED else f for f in own]
    families += [_summed(f) if f.name in SUMMED else f for f in merged if f.name not in own_names]
    registry = CollectorRegistry()
    registry.register(_Families(families))
    return generate_latest(registry)
