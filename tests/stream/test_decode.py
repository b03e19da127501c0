import subprocess
import threading

import av
import numpy as np
import pytest

from stream.config import AnalysisConfig, DropPolicy, SourceConfig
from stream.ingest.decode import FrameConverter, SourceEvents, SourceReader, qp_map
from stream.ingest.queues import END, FrameQueue
from tests.conftest import make_face_clip


def decode_all(path, cfg: AnalysisConfig | None = None):
    conv = FrameConverter(cfg or AnalysisConfig())
    with av.open(str(path)) as c:
        return [conv.convert(f) for f in c.decode(video=0)]


def test_sampling_grid_thumbs_and_analysis_size(face_clip):
    recs = decode_all(face_clip, AnalysisConfig(width=320, sample_fps=2))
    assert len(recs) == 150
    sampled = [r for r in recs if r.sampled]
    assert len(sampled) == 12  # 6 s at 2 per second, on the 0.5 s grid
    assert all(r.image.shape == (180, 320, 3) and r.image.dtype == np.uint8 for r in sampled)
    assert all(r.thumb.shape == (36, 64) for r in recs)
    assert recs[0].source_size == (640, 360)
    # thumbnails carry the picture: a talking head is not flat
    assert recs[10].thumb.std() > 10


@pytest.mark.parametrize("size", ["640x360", "338x198"])
def test_qp_map_matches_pyav(media_dir, size):
    """The numpy read of the decoder's block array gives PyAV's own qp_map, macroblock for macroblock, on frames
    of every type (I, P, B) and on a size that is not a multiple of 16."""
    clip = make_face_clip(media_dir / f"qp{size}.mp4", seconds=2, size=size,
                          codec_args=("-c:v", "libx264", "-preset", "veryfast", "-crf", "30", "-bf", "2", "-g", "12"))
    compared = 0
    with av.open(str(clip)) as c:
        s = c.streams.video[0]
        s.codec_context.options = {"export_side_data": "venc_params"}
        for frame in c.decode(s):
            sides = [sd for sd in frame.side_data if sd.type == av.sidedata.sidedata.Type.VIDEO_ENC_PARAMS]
            assert sides, "libx264 output decoded without per-block quantisers"
            ours, theirs = qp_map(sides[0], frame.width, frame.height), sides[0].qp_map()
            assert ours.dtype == np.int32 and np.array_equal(ours, theirs)
            compared += 1
    assert compared == 50 and theirs.std() > 0  # the quantiser varies over the picture: the map is not one value


def test_odd_size_and_rotation(media_dir):
    odd = make_face_clip(media_dir / "odd.mp4", seconds=1, size="331x197",
                         codec_args=("-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv444p"))
    recs = decode_all(odd)
    assert recs[0].source_size == (331, 197)
    assert recs[0].image.shape[1] == 320 and recs[0].image.shape[0] % 2 == 0
    rotated = media_dir / "rot.mp4"
    subprocess.run(["ffmpeg", "-nostdin", "-y", "-loglevel", "error", "-i", str(odd), "-metadata:s:v:0", "rotate=90",
                    "-c", "copy", str(rotated)], check=True)
    recs = decode_all(rotated)
    assert recs[0].source_size == (197, 331)  # displayed portrait
    h, w = recs[0].image.shape[:2]
    assert h > w


def test_resolution_change_midstream(media_dir):
    a = make_face_clip(media_dir / "a.ts", seconds=1, size="640x360", extra=("-f", "mpegts"))
    b = make_face_clip(media_dir / "b.ts", seconds=1, size="320x240", extra=("-f", "mpegts"))
    joined = media_dir / "joined.ts"
    joined.write_bytes(a.read_bytes() + b.read_bytes())
    recs = decode_all(joined)
    sizes = {r.source_size for r in recs}
    assert sizes == {(640, 360), (320, 240)}
    pts = [r.pts for r in recs]
    assert all(b > a for a, b in zip(pts, pts[1:], strict=False))  # timestamps stay monotonic


def test_drop_oldest_counts_every_drop():
    drops = []
    q = FrameQueue(3, DropPolicy.drop_oldest, on_drop=drops.append)
    for i in range(10):
        q.put(i)  # type: ignore[arg-type]
    assert q.drain() == [7, 8, 9] and drops == ["queue_full"] * 7


def test_wait_policy_blocks_until_drained():
    q = FrameQueue(2, DropPolicy.wait)
    q.put(1)  # type: ignore[arg-type]
    q.put(2)  # type: ignore[arg-type]
    done = threading.Event()
    threading.Thread(target=lambda: (q.put(3), done.set()), daemon=True).start()  # type: ignore[arg-type]
    assert not done.wait(0.3)
    assert q.drain() == [1, 2]
    assert done.wait(2) and q.drain() == [3]


class Events(SourceEvents):
    def __init__(self):
        self.errors, self.reconnects, self.frames = [], 0, 0

    def error(self, kind, message):
        self.errors.append((kind, message))

    def reconnecting(self, delay):
        self.reconnects += 1

    def frame(self):
        self.frames += 1


def test_refused_pull_url_reconnects_with_backoff():
    from tests.conftest import free_port

    port = free_port()  # nothing listens there
    src = SourceConfig(name="gone", url=f"rtmp://127.0.0.1:{port}/live/x")
    q = FrameQueue(8, DropPolicy.drop_oldest)
    ev = Events()
    reader = SourceReader(src, AnalysisConfig(), q, ev, backoff=(0.05, 0.2))
    reader.start()
    import time

    time.sleep(1.0)
    reader.stop()
    reader.join(5)
    assert not reader.is_alive()
    assert ev.reconnects >= 3
    assert ev.errors and ev.errors[0][0] == "open" and str(port) in ev.errors[0][1]
    assert q.drain()[-1] is END


@pytest.mark.parametrize("loop", [False, True])
def test_file_reader_paces_and_loops(face_clip, loop):
    src = SourceConfig(name="f", url=str(face_clip), realtime=False, loop=loop)
    q = FrameQueue(1000, DropPolicy.wait)
    ev = Events()
    reader = SourceReader(src, AnalysisConfig(), q, ev)
    reader.start()
    if loop:
        import time

        items = []
        deadline = time.monotonic() + 20
        while len(items) < 200 and time.monotonic() < deadline:
            items += [i for i in q.drain() if i is not END]
            time.sleep(0.05)
        reader.stop()
        pts = [r.pts for r in items]
        assert len(items) >= 200 and all(b > a for a, b in zip(pts, pts[1:], strict=False))
    else:
        reader.join(20)
        items = q.drain()
        assert items[-1] is END and len(items) == 151
    reader.join(5)
