"""The monitor: the streams it holds, the analysis loop over all of them, and what it publishes."""

from __future__ import annotations

import collections
import logging
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import av

from engines.features import DIMENSIONS, LEVELS, FrameRecord, Window, WindowResult
from stream.admission import StreamExistsError, StreamLimitError
from stream.config import DropPolicy, MonitorConfig, SourceConfig
from stream.ingest.decode import FrameConverter, SourceReader
from stream.ingest.queues import END, FrameQueue
from stream.ingest.rtmp import RtmpListeners, internal_url
from stream.ingest.video_facts import FrameFacts
from stream.live.analysis import Analyzer
from stream.live.evidence import EvidenceStore
from stream.live.load_shedding import SHED_LEVELS, LoadShedder
from stream.live.scoring import assemble, rate
from stream.live.stream_state import StreamState
from stream.live.windows import WindowAssembler
from stream.ops.metrics import Metrics, build_metrics
from stream.redact import redact_url
from stream.sources import source_type

log = logging.getLogger(__name__)

LEVEL_INDEX = {name: i + 1 for i, name in enumerate(LEVELS)}


class Stream:
    """One watched stream: its queue, window assembler, state, and (for pulled/listened/file sources) reader."""

    def __init__(self, source: SourceConfig, monitor: Monitor) -> None:
        self.source = source
        self.facts = source_type(source.kind)
        self.name = source.name
        m = monitor.metrics
        self.state = StreamState(source.name, source.kind.value, redact_url(source.url), m, expect=source.expect,
                                 expected=source.expected)
        policy = source.drop_policy or DropPolicy.drop_oldest
        self.queue = FrameQueue(
            source.queue_frames, policy, on_drop=lambda reason: m.frames_dropped.labels(self.name, reason).inc()
        )
        self.assembler = WindowAssembler(source.name, monitor.config.window)
        self.reader: SourceReader | None = None
        self.converter: FrameConverter | None = None
        if self.facts.pushed:
            self.converter = FrameConverter(monitor.config.analysis)
            self.frame_facts = FrameFacts(self.state)  # format and blank pictures (decoder errors: not captured)
        else:
            # a source the monitor's nginx-rtmp takes is played from there, on loopback
            url = internal_url(source.url) if self.facts.rtmp_listener else None
            self.reader = SourceReader(source, monitor.config.analysis, self.queue, self.state, url=url)
        self.finished = False
        self.rated_at = 0.0  # monotonic time a window of this stream was last rated (0: never)
        m.stream_info.set(self.name, source.labels)
        # make the series exist from the start, so a scrape sees the stream even before its first window
        m.stream_up.labels(self.name).set(0)
        m.frames_received.labels(self.name)
        m.windows_analysed.labels(self.name)
        for reason in ("queue_full",):
            m.frames_dropped.labels(self.name, reason)
        m.windows_dropped.labels(self.name, "late")

    @property
    def live(self) -> bool:
        """Frames come at the pace of real time (not a file read as fast as it decodes): the analysis must
        keep up, by skipping late windows and shedding load."""
        return not self.facts.ends or self.source.realtime

    @property
    def active(self) -> bool:
        """Holds a slot under the stream cap: not ended (an ended stream's name can be taken again)."""
        return not self.finished and self.state.state != "ended" and self.state.ended_at is None

    @property
    def holds_slot(self) -> bool:
        """Counts under limits.max_streams: live, or expected and waiting `down` for its publisher to come back."""
        return self.active or (self.state.expected and self.state.ended_at is None)

    def push(self, frame: av.VideoFrame) -> None:
        """For pushed sources (WHIP): convert a decoded frame and queue it. Call from a worker thread."""
        assert self.converter is not None, "push() is for pushed sources"
        record = self.converter.convert(frame)
        self.state.frame()
        self.frame_facts.observe(frame, record.thumb)
        self.queue.put(record)

    def end(self, reason: str | None = None) -> None:
        """A pushed source ended (publisher left)."""
        self.state.ended(reason)
        self.queue.put(END)


class Monitor:
    """Holds the streams and runs the analysis loop in its own thread; never blocks an asyncio loop."""

    def __init__(
        self,
        config: MonitorConfig,
        analyzer: Analyzer,
        metrics: Metrics | None = None,
    ) -> None:
        self.config = config
        self.metrics = metrics or build_metrics()
        self.analyzer = analyzer
        if analyzer.metrics is None:
            analyzer.metrics = self.metrics
        self.streams: dict[str, Stream] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="analysis", daemon=True)
        self.listeners: list[Callable[[StreamState, WindowResult], None]] = []
        self.loop_heartbeat = time.monotonic()
        self.loop_error: str | None = None
        self._pending: collections.deque[tuple[bool, FrameRecord]] = collections.deque()  # (live, frame) not analysed yet
        a = config.analysis
        self.shedder = LoadShedder(a.shed_backlog_s, a.shed_recover_s)
        self.rtmp = RtmpListeners(self)  # the bundled nginx-rtmp of RTMP listen sources, started when one is added
        # each stream's timeline, and (server.frames) its latest, clean and evidence frames: the status pages'
        self.evidence = EvidenceStore(config.alerts, config.window.hop_s, frames=config.server.frames)
        self.evidence.publish_memory(self.metrics.registry)

    # streams
    def add_stream(self, source: SourceConfig) -> Stream | None:
        """Starts watching a source. An RTMP listen app for many publishers holds no stream of its own: each
        publisher's key becomes a stream when it publishes (None is returned)."""
        facts = source_type(source.kind)
        if facts.stream_per_key:
            if source.name in self.streams or source.name in self.rtmp.by_name:
                raise StreamExistsError(f"a stream named {source.name!r} is already being watched")
            self.rtmp.attach(source)
            return None
        with self._lock:
            old = self.streams.get(source.name)
            if old is not None and old.active:
                raise StreamExistsError(f"a stream named {source.name!r} is already being watched")
            active = sum(1 for s in self.streams.values() if s.holds_slot and s is not old)
            if active >= self.config.limits.max_streams:
                self.metrics.streams_refused.labels("limit").inc()
                raise StreamLimitError(
                    f"the monitor already holds {active} streams (limits.max_streams={self.config.limits.max_streams})"
                )
            if old is not None:
                self.metrics.forget_stream(source.name)
            if facts.rtmp_listener:
                self.rtmp.attach(source)  # takes the publisher of its key; the reader plays it from there
            stream = Stream(source, self)
            self.streams[source.name] = stream
            self.metrics.streams_active.set(sum(1 for s in self.streams.values() if s.active))
            self._evict_ended()
        if stream.reader is not None:
            stream.reader.start()
        return stream

    def remove_stream(self, name: str, only: Stream | None = None) -> None:
        """Stops and forgets a stream, its /streams entry and its series (when `only` is given: if it is
        still that stream, not a newer one of the same name)."""
        if self.rtmp.detach(name) and name not in self.streams:
            return
        with self._lock:
            if only is not None and self.streams.get(name) is not only:
                return
            stream = self.streams.pop(name, None)
            self.metrics.streams_active.set(sum(1 for s in self.streams.values() if s.active))
        if stream is None:
            return
        stream.state.detached = True  # the reader may still report while it stops: its series stay gone
        if stream.reader is not None:
            stream.reader.stop()
        stream.queue.close()
        self.metrics.forget_stream(name)
        self.evidence.forget(name)

    def publisher_left(self, name: str, expected: bool | None = None) -> None:
        """A media server says the publisher of a stream it fed left (RTMP listen, hooks): the stream stops pulling
        and reads `down` if it is expected (it stays until the publisher comes back or it is deleted), else
        `ended` (it leaves after limits.ended_retention_s). Either way fvq_stream_up reads 0 and its slot is free."""
        stream = self.streams.get(name)
        if stream is None:
            return
        if expected is not None:
            stream.state.expected = expected
        stream.state.ended("publisher_left")
        if stream.reader is not None:
            stream.reader.stop()
        stream.queue.put(END)
        with self._lock:
            self.metrics.streams_active.set(sum(1 for s in self.streams.values() if s.active))

    # lifecycle
    # The analysis thread shares the GIL with one decode thread per stream and gives it up at every native call
    # (numpy, ONNX Runtime); a waiting thread takes it back only after the switch interval (5 ms by default).
    # A shorter one helped a little at 19 x 720p30 here: 669-946 windows of 1140 in four runs at 0.5 ms against
    # 418 and 772 in two at 5 ms (runs vary widely), no extra CPU measured at 16 streams (BENCHMARKS.md in git as of 5ed058a, "Overload").
    GIL_SWITCH_INTERVAL_S = 0.0005

    def start(self) -> None:
        sys.setswitchinterval(min(sys.getswitchinterval(), self.GIL_SWITCH_INTERVAL_S))
        self._thread.start()
        for source in self.config.sources:
            self.add_stream(source)

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self.rtmp.close()
        for stream in list(self.streams.values()):
            if stream.reader is not None:
                stream.reader.stop()
        for stream in list(self.streams.values()):
            stream.queue.close()
            if stream.reader is not None:
                stream.reader.join(timeout)
        if self._thread.is_alive():
            self._thread.join(timeout)

    @property
    def healthy(self) -> bool:
        return self._thread.is_alive() and time.monotonic() - self.loop_heartbeat < 10.0

    def snapshot(self) -> list[dict[str, Any]]:
        return [s.state.to_json() for s in list(self.streams.values())]

    def _evict_ended(self) -> None:
        """Bounds what ended streams hold: past max_streams ended ones, the oldest leave before their
        retention is over (call with the lock held)."""
        ended = sorted((s for s in self.streams.values() if not s.active and s.state.ended_at is not None),
                       key=lambda s: s.state.ended_at or 0.0)
        for stream in ended[: max(0, len(ended) - self.config.limits.max_streams)]:
            self._forget(stream)

    def _forget(self, stream: Stream) -> None:
        self.streams.pop(stream.name, None)
        stream.state.detached = True
        stream.queue.close()
        self.metrics.forget_stream(stream.name)
        self.evidence.forget(stream.name)

    def retire_ended(self, now: float | None = None) -> list[str]:
        """Removes the streams that ended more than limits.ended_retention_s ago (and whose last frames were
        analysed); updates fvq_streams_active to what is live now. Returns the names removed."""
        now = time.monotonic() if now is None else now
        retention = self.config.limits.ended_retention_s
        gone = []
        with self._lock:
            for stream in list(self.streams.values()):
                ended_at = stream.state.ended_at
                done = stream.finished or stream.reader is None or not stream.reader.is_alive()
                if ended_at is not None and done and now - ended_at >= retention and not stream.active:
                    self._forget(stream)
                    gone.append(stream.name)
            self.metrics.streams_active.set(sum(1 for s in self.streams.values() if s.active))
        for name in gone:
            log.info("stream %s: removed from /streams and /metrics (ended %g s ago)", name, retention)
        return gone

    # the analysis loop
    def _loop(self) -> None:
        interval = self.config.analysis.batch_interval_s
        while not self._stop.is_set():
            t0 = time.monotonic()
            self.loop_heartbeat = t0
            try:
                self.step()
            except Exception as exc:  # keep the loop alive; a bad frame must not stop every stream
                log.exception("analysis step failed")
                self.loop_error = f"{type(exc).__name__}: {exc}"
            self._stop.wait(max(0.0, interval - (time.monotonic() - t0)))

    def step(self) -> list[WindowResult]:
        """One pass over every stream: drain, assemble windows, analyse, publish. Returns what it published."""
        records = []
        windows = []
        now = time.monotonic()
        for stream in list(self.streams.values()):
            items = stream.queue.drain()
            self.metrics.queue_depth.labels(stream.name).set(len(stream.queue))
            live = stream.live
            for item in items:
                sampled: list[FrameRecord] = []
                closed, ended = assemble(stream.assembler, item, sampled)
                records.extend((live, f) for f in sampled)
                windows.extend(closed)
                stream.finished = stream.finished or ended
            st = stream.state
            st.refresh_rates(now)
            if (
                st.state == "up"
                and st.last_frame_at is not None
                and now - st.last_frame_at > self.config.analysis.stale_after_s
            ):
                st.mark_down("down")
        self.retire_ended(now)
        windows = self.least_recently_rated_first(self._drop_late(windows, now))
        for w in windows:
            s = self.streams.get(w.stream)
            if s is not None:
                w.nominal_fps = s.state.expected_fps()
        # Windows first: they need only their own frames, which earlier passes analysed already (the frame
        # that closes a window lies past its end). They go in batches; a batch reached too late (the analysis
        # is behind) is skipped and counted rather than analysed, so one slow pass cannot snowball. The streams
        # rated longest ago go first, so the skipping falls on each stream in turn, not always on the same ones.
        results = []
        for i in range(0, len(windows), self.WINDOW_BATCH):
            batch = windows[i:i + self.WINDOW_BATCH]
            if i:
                batch = self._drop_late(batch, time.monotonic())
            rated = rate(self.analyzer, batch)
            rated_at = time.monotonic()
            for w, result in zip(batch, rated, strict=True):
                self._publish(w.closed_at, result, w)
                s = self.streams.get(w.stream)
                if s is not None:
                    s.rated_at = rated_at
            results.extend(rated)
        # The newest frames of every stream, oldest first, in batches across streams, for at most a time
        # budget: a window that closes meanwhile waits for no other stream's frames, only for its own.
        self._pending.extend(records)
        while len(self._pending) > self.MAX_PENDING:  # far behind: these are analysed when a window needs them
            self._pending.popleft()
        deadline = time.monotonic() + self.config.analysis.batch_interval_s
        while self._pending and time.monotonic() < deadline:
            batch = [self._pending.popleft()[1] for _ in range(min(self.FRAME_BATCH, len(self._pending)))]
            self.analyzer.analyse_frames([f for f in batch if not f.analysed])
        self._adapt_load(now)
        return results

    FRAME_BATCH = 16  # sampled frames analysed per call (from any streams)
    WINDOW_BATCH = 8  # windows rated per forward pass when several close at once
    MAX_PENDING = 4096

    def _backlog(self, now: float) -> float:
        """Seconds the analysis is behind the live streams: the age of the oldest live frame still waiting.
        Frames too old for any window that can still be published on time are dropped from the wait."""
        cfg = self.config
        useless = cfg.analysis.max_lag_s + cfg.window.length_s
        pending = self._pending
        while pending:
            live, f = pending[0]
            if f.analysed or f.image is None:
                pending.popleft()
            elif live and now - f.arrived > useless:  # every window it belongs to will be skipped as late
                pending.popleft()
            else:
                break
        oldest = next((f.arrived for live, f in pending if live), None)
        return 0.0 if oldest is None else max(0.0, now - oldest)

    def _adapt_load(self, step_started: float) -> None:
        now = time.monotonic()
        backlog = max(self._backlog(now), now - step_started)  # a pass this long is a backlog too
        self.metrics.backlog.set(backlog)
        if self.config.analysis.shed_load:
            level = self.shedder.update(backlog, now)
            if level != self.analyzer.shed_level:
                log.log(logging.WARNING if level > self.analyzer.shed_level else logging.INFO,
                        "analysis backlog %.1f s: load shedding level %d -> %d (%s)", backlog,
                        self.analyzer.shed_level, level, SHED_LEVELS[level])
                self.analyzer.shed_level = level
                self.metrics.shed_level.set(level)

    def least_recently_rated_first(self, windows: list[Window]) -> list[Window]:
        """`windows` with those of the streams rated longest ago first, each stream's in their order. Under overload
        the later batches of a pass are skipped as late; in the streams' fixed order that was always the same
        streams (one key of twenty read 30 s stale while the others were scored, in CI on 2026-12-06)."""
        return sorted(windows, key=lambda w: s.rated_at if (s := self.streams.get(w.stream)) is not None else 0.0)

    def _drop_late(self, windows: list[Window], now: float) -> list[Window]:
        """Live streams only: windows the analysis reaches too late are skipped, and counted, to catch up."""
        kept = []
        max_lag = self.config.analysis.max_lag_s
        for w in windows:
            stream = self.streams.get(w.stream)
            live = stream is not None and stream.live
            if live and w.frames and w.frames[-1].arrived and now - w.frames[-1].arrived > max_lag:
                self.metrics.windows_dropped.labels(w.stream, "late").inc()
                continue
            kept.append(w)
        return kept

    def _publish(self, closed_at: float, r: WindowResult, window: Window | None = None) -> None:
        stream = self.streams.get(r.stream)
        if stream is None:
            return
        m, name = self.metrics, r.stream
        for region, dims in r.dimensions.items():
            for dim in DIMENSIONS:
                if dim in dims:
                    m.dimension_score.labels(name, dim, region).set(dims[dim])
        for key, ratio in (("light_log_rg", "red_green"), ("light_log_bg", "blue_green")):
            if key in r.details:
                m.picture_light.labels(name, ratio).set(r.details[key])
        m.face_presence.labels(name).set(r.face_presence)
        m.face_size.labels(name).set(r.face_size)
        if r.identity_stability is not None:
            m.face_stability.labels(name).set(r.identity_stability)
        if r.score is not None:
            m.quality_score.labels(name).set(r.score)
        if r.level is not None:
            m.quality_level.labels(name).set(LEVEL_INDEX[r.level])
        m.windows_analysed.labels(name).inc()
        stream.state.latest = r
        try:  # before the listeners: a cause the recommendations raise on this window has its evidence already
            with self.analyzer.stage("evidence"):
                self.evidence.observe(stream.state, window, r)
        except Exception:
            log.exception("evidence frames failed for stream %s", name)
        r.details["publish_latency_s"] = time.monotonic() - closed_at
        for listener in self.listeners:
            try:
                listener(stream.state, r)
            except Exception:
                log.exception("listener failed for stream %s", name)
        m.publish_latency.observe(r.details["publish_latency_s"])

