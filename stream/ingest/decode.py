"""Decoding: PyAV sources read in a thread, each frame scaled down once into a FrameRecord."""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable

import av
import cv2
import numpy as np
from av.sidedata.encparams import VideoEncParamsType
from av.video.reformatter import VideoReformatter

from engines.features import FrameRecord
from stream.config import AnalysisConfig, SourceConfig
from stream.ingest.damage import DecoderErrors
from stream.ingest.queues import END, FrameQueue
from stream.ingest.relay import Relay, needs_relay
from stream.ingest.video_facts import FrameFacts, VideoFormat
from stream.sources import source_type

log = logging.getLogger(__name__)

THUMB_HEIGHT_RATIO = 9 / 16
LIVE_PROBE_OPTIONS = {"analyzeduration": "500000", "probesize": "500000"}
# Decoders that export their quantiser per macroblock (a direct measure of how hard the encoder compressed).
QP_CODECS = ("h264", "hevc")
_ENC_PARAMS = av.sidedata.sidedata.Type.VIDEO_ENC_PARAMS


class FrameConverter:
    """Turns decoded frames into FrameRecords: every frame gets a luma thumbnail, sampled frames an RGB image.

    Sampling follows a grid of presentation time (multiples of 1/sample_fps), so the frames analysed are
    the same whichever window looks at them. Timestamps are made monotonic across loops and restarts.
    """

    def __init__(self, cfg: AnalysisConfig) -> None:
        self.cfg = cfg
        self.thumb_size = (cfg.thumb_width, max(8, round(cfg.thumb_width * THUMB_HEIGHT_RATIO)))
        self._next_sample = -math.inf
        self._offset = 0.0
        self._last_pts: float | None = None
        self._last_interval = 1 / 30
        self._last_raw: float | None = None
        self._last_thumb: np.ndarray | None = None
        self.repeated_pts = 0  # frames whose presentation time repeated the previous frame's
        # one scaler for the stream, on the calling thread: frame.reformat() makes a new one per frame, which
        # in PyAV >= 15 starts a pool of slice threads (threads=0: one per core) that lives as long as the frame
        self._scaler = VideoReformatter()

    def timestamp(self, frame: av.VideoFrame) -> float:
        raw, self._repeat = frame.time, False
        if raw is None:  # no timestamp: continue at the last interval
            pts = (self._last_pts if self._last_pts is not None else -self._last_interval) + self._last_interval
        elif raw == self._last_raw and self._last_pts is not None:
            # the previous frame's presentation time again (a stuck encoder clock): a player shows only one of them,
            # so the picture holds; the timeline goes on at the frame interval and convert() repeats the thumbnail
            pts, self._repeat = self._last_pts + self._last_interval, True
            self.repeated_pts += 1
        else:
            pts = float(raw) + self._offset
            if self._last_pts is not None and pts <= self._last_pts - 0.5:
                # a jump backwards (file loop, publisher restart): continue the timeline after the last frame
                self._offset += self._last_pts + self._last_interval - pts
                pts = self._last_pts + self._last_interval
            elif self._last_pts is not None and pts <= self._last_pts:
                pts = self._last_pts + 1e-3  # duplicate or slightly reordered timestamp
        if self._last_pts is not None and 0 < pts - self._last_pts < 1.0:
            self._last_interval = 0.8 * self._last_interval + 0.2 * (pts - self._last_pts)
        self._last_pts, self._last_raw = pts, raw
        return pts

    _repeat = False

    def convert(self, frame: av.VideoFrame) -> FrameRecord:
        pts = self.timestamp(frame)
        rotation = int(getattr(frame, "rotation", 0) or 0) % 360
        thumb = self._thumb(frame)
        if self._repeat and self._last_thumb is not None and self._last_thumb.shape == thumb.shape:
            thumb = self._last_thumb  # shown at the same time as the frame before: the viewer sees that picture held
        self._last_thumb = thumb
        width, height = frame.width, frame.height
        if rotation in (90, 270):
            width, height = height, width
        image = qp_map = None
        if pts >= self._next_sample - 1e-6:
            step = 1.0 / self.cfg.sample_fps
            self._next_sample = (math.floor(pts / step + 1e-6) + 1) * step
            image = self._image(frame, rotation)
            qp_map = self._qp_map(frame, rotation)
        if rotation:
            thumb = np.ascontiguousarray(np.rot90(thumb, k=rotation // 90))
            thumb = cv2.resize(thumb, self.thumb_size, interpolation=cv2.INTER_AREA)
        return FrameRecord(
            pts=pts, thumb=thumb, source_size=(width, height), image=image, qp_map=qp_map, arrived=time.monotonic()
        )

    def _thumb(self, frame: av.VideoFrame) -> np.ndarray:
        tw, th = self.thumb_size
        if frame.format.name in ("yuv420p", "yuvj420p", "yuv422p", "yuvj422p", "yuv444p", "yuvj444p", "nv12", "gray"):
            plane = frame.planes[0]
            y = np.frombuffer(plane, np.uint8).reshape(-1, plane.line_size)[: frame.height, : frame.width]
            # strided pick first (cheap), then an exact area resize of the small result
            sy, sx = max(1, frame.height // (2 * th)), max(1, frame.width // (2 * tw))
            return cv2.resize(y[::sy, ::sx], (tw, th), interpolation=cv2.INTER_AREA)
        return self._scaler.reformat(frame, width=tw, height=th, format="gray", threads=1).to_ndarray()

    def _image(self, frame: av.VideoFrame, rotation: int) -> np.ndarray:
        w, h = frame.width, frame.height
        if rotation in (90, 270):
            w, h = h, w
        out_w = min(self.cfg.width, w - w % 2) or 2
        out_h = max(2, round(out_w * h / w / 2) * 2)
        if rotation in (90, 270):
            rgb = self._scaler.reformat(frame, width=out_h, height=out_w, format="rgb24", threads=1).to_ndarray()
        else:
            rgb = self._scaler.reformat(frame, width=out_w, height=out_h, format="rgb24", threads=1).to_ndarray()
        if rotation:
            # display matrix rotation is counter-clockwise
            rgb = np.ascontiguousarray(np.rot90(rgb, k=rotation // 90))
        return rgb

    @staticmethod
    def _qp_map(frame: av.VideoFrame, rotation: int) -> np.ndarray | None:
        """The decoder's per-macroblock quantiser (H.264/HEVC export it when asked, see QP_CODECS)."""
        for side in frame.side_data:
            if side.type == _ENC_PARAMS:
                qp = qp_map(side, frame.width, frame.height)
                if qp is None or qp.size == 0:
                    return None
                return np.ascontiguousarray(np.rot90(qp, k=rotation // 90)) if rotation else qp.astype(np.float32)
        return None


# AVVideoBlockParams starts with int32 src_x, src_y, w, h, delta_qp (libavutil/video_enc_params.h)
_BLOCK_FIELDS = 5
_QP_TYPES = (VideoEncParamsType.H264, VideoEncParamsType.MPEG2)  # the types whose block delta_qp is per macroblock


def qp_map(side, width: int, height: int) -> np.ndarray | None:
    """The quantiser of every 16x16 macroblock, (rows, cols) int32, read from the side data's block array in
    one numpy pass: the same map as PyAV's VideoEncParams.qp_map(), which makes a Python object per block
    (1.2 ms for a 720p frame against 0.12 ms). None when the blocks do not cover the frame's macroblocks."""
    if side.codec_type not in _QP_TYPES:
        return None
    mb_h, mb_w = (height + 15) // 16, (width + 15) // 16
    n, offset, size = side.nb_blocks, side.blocks_offset, side.block_size
    if n == 0:
        return np.zeros((0, 0), np.int32)
    if n != mb_h * mb_w or size < 4 * _BLOCK_FIELDS:
        return None
    raw = np.frombuffer(memoryview(side), np.uint8)[offset: offset + n * size]
    if raw.size != n * size:
        return None
    blocks = np.ascontiguousarray(raw.reshape(n, size)[:, : 4 * _BLOCK_FIELDS]).view(np.int32)
    out = np.empty((mb_h, mb_w), np.int32)
    out[blocks[:, 1] // 16, blocks[:, 0] // 16] = side.qp + blocks[:, 4]
    return out


class SourceEvents:
    """What a reader reports about its source; the monitor's stream state implements it."""

    def opened(self, width: int, height: int, fps: float | None, codec: str) -> None: ...
    def packet(self, size: int) -> None: ...
    def frame(self) -> None: ...
    def error(self, kind: str, message: str) -> None: ...
    def decode_damage(self, errors: int, corrupt_frames: int, message: str | None) -> None:
        """The decoder logged `errors` error lines and flagged `corrupt_frames` frames (concealed errors, missing
        references) while decoding one packet."""
    def video_format(self, fmt: VideoFormat) -> None:
        """The decoded frames' coded format, at the first frame and whenever it changes."""
    def picture(self, blank_level: int | None) -> None:
        """The picture turned blank (its median luma) or stopped being blank (None)."""
    def reconnecting(self, delay: float) -> None: ...
    def ended(self) -> None: ...


class SourceReader(threading.Thread):
    """Reads one source with PyAV in its own thread: files (paced or not, looped or not), RTMP pull and
    listen, RTSP/HLS/SRT pull. Pull and listen sources reconnect with exponential backoff.

    How it opens the source and what it does at the end or on an error follow the source's type
    (stream/sources/). `url` is what to open when it is not the source's own URL (an RTMP listen source is
    played from the monitor's nginx-rtmp).
    """

    def __init__(
        self,
        source: SourceConfig,
        analysis: AnalysisConfig,
        queue: FrameQueue,
        events: SourceEvents,
        backoff: tuple[float, float] = (0.5, 10.0),
        clock: Callable[[], float] = time.monotonic,
        url: str | None = None,
    ) -> None:
        super().__init__(name=f"decode-{source.name}", daemon=True)
        self.source = source
        self.facts = source_type(source.kind)
        self.url = url or source.url
        self.converter = FrameConverter(analysis)
        self.queue = queue
        self.events = events
        self.backoff = backoff
        self._halt = threading.Event()
        self._clock = clock

    def stop(self) -> None:
        self._halt.set()

    @property
    def stopping(self) -> bool:
        return self._halt.is_set()

    def run(self) -> None:
        delay = self.backoff[0]
        facts = self.facts
        try:
            while not self._halt.is_set():
                started = self._clock()
                failed = True
                try:
                    finished = self.read_once()
                    failed = False
                except av.error.ExitError:
                    finished = False  # interrupted by stop()
                except (av.error.FFmpegError, OSError, NoVideoError) as exc:
                    if facts.waits_for_publisher and self._opening and not isinstance(exc, NoVideoError):
                        if self._halt.wait(0.2):  # no publisher within the wait: ask again (stop() is seen)
                            break
                        continue
                    self.events.error("open" if self._opening else "decode", _describe(exc, self.source.url))
                    finished = facts.ends and not self.source.loop
                except Exception as exc:  # a bug must not take other streams down
                    log.exception("source %s failed", self.source.name)
                    self.events.error("internal", f"{type(exc).__name__}: {exc}")
                    finished = facts.ends
                if self._halt.is_set() or finished:
                    break
                if facts.ends and self.source.loop and not failed:
                    delay = self.backoff[0]
                    continue  # the end of a looped file: start again at once
                # a looped file that failed to reopen (EMFILE, removed) backs off like a live source
                if self._clock() - started > 5 * self.backoff[0] and not self._opening:
                    delay = self.backoff[0]  # it ran for a while: start the backoff afresh
                if facts.waits_for_publisher and not self._opening:
                    delay = self.backoff[0]  # a publisher left: listen again at once
                self.events.reconnecting(delay)
                if self._halt.wait(delay):
                    break
                delay = min(delay * 2, self.backoff[1])
        finally:
            self.events.ended()
            self.queue.put(END)

    _opening = True

    def _open(self):
        src, facts = self.source, self.facts
        # an RTMP listen source is played from the monitor's nginx-rtmp on loopback (self.url), waiting for a
        # publisher up to the open timeout, then again (stop() is seen in between)
        timeout = facts.open_timeout
        url = self.url[len("file://") :] if self.url.startswith("file://") else self.url
        options = {**facts.input_options(src.url), **src.options}
        if not facts.ends:
            # probe briefly: ffmpeg's default (5 s) would buffer seconds of a live stream before the first frame
            options = {**LIVE_PROBE_OPTIONS, **options}
        if needs_relay(url):
            self._relay = Relay(url)
            try:
                return av.open(self._relay.stdout, mode="r", format="mpegts", options=LIVE_PROBE_OPTIONS)
            except av.error.FFmpegError as exc:
                self._relay.close()
                raise OSError(f"{url}: {self._relay.error()}") from exc
        return av.open(url, mode="r", options=options, timeout=timeout) if timeout else av.open(
            url, mode="r", options=options
        )

    _relay: Relay | None = None

    def read_once(self) -> bool:
        """Opens the source and reads it to its end (or until stop()), once. Returns True when the stream is
        finished for good. Raises what opening or demuxing raised (NoVideoError: no video stream)."""
        with DecoderErrors() as self._errors:
            return self._read_once()

    def _read_once(self) -> bool:
        self._opening = True
        container = self._open()
        try:
            if not container.streams.video:
                raise NoVideoError(f"{self.source.url}: the input has no video stream")
            vstream = container.streams.video[0]
            vstream.thread_type = "SLICE"
            vstream.codec_context.thread_count = 1
            if vstream.codec_context.name in QP_CODECS:
                vstream.codec_context.options = {"export_side_data": "venc_params"}
            fps = float(vstream.average_rate) if vstream.average_rate else None
            self.events.opened(vstream.codec_context.width, vstream.codec_context.height, fps, vstream.codec_context.name)
            self._opening = False
            pace_start: float | None = None
            first_pts: float | None = None
            # FFmpeg's error lines on this thread: the decoder's and the demuxer's count as decoder damage
            damage_from = frozenset({vstream.codec_context.name, *container.format.name.split(",")})
            keyed = False  # damage before the first keyframe is joining a stream mid-picture, not damage
            facts = FrameFacts(self.events)
            for packet in container.demux(vstream):
                if self._halt.is_set():
                    return True
                if packet.size:
                    self.events.packet(packet.size)
                    keyed = keyed or packet.is_keyframe
                try:
                    frames = packet.decode()
                except av.error.InvalidDataError as exc:
                    errors, _ = self._errors.take(damage_from)
                    if keyed:
                        self.events.decode_damage(max(errors, 1), 0, _describe(exc, self.source.url))
                    continue
                errors, message = self._errors.take(damage_from)
                corrupt = 0
                for frame in frames:
                    if frame.is_corrupt:
                        corrupt += 1
                    record = self.converter.convert(frame)
                    self.events.frame()
                    facts.observe(frame, record.thumb)
                    if self.facts.ends and self.source.realtime:
                        if pace_start is None:
                            pace_start, first_pts = self._clock(), record.pts
                        ahead = (record.pts - first_pts) - (self._clock() - pace_start)
                        if ahead > 0 and self._halt.wait(ahead):
                            return True
                    if not self.queue.put(record):
                        return True
                if keyed and (errors or corrupt):
                    self.events.decode_damage(errors, corrupt, message)
            if self.facts.ends:
                return not self.source.loop
            self.events.error("eof", f"{self.source.url}: the stream ended")
            return False
        finally:
            container.close()
            if self._relay is not None:
                self._relay.close()
                self._relay = None


class NoVideoError(Exception):
    """The input opened but holds no video stream."""


def _describe(exc: BaseException, url: str) -> str:
    text = str(exc)
    return text if url in text else f"{url}: {text}"
