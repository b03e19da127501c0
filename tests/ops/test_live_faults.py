"""Live faults on the real path: ffmpeg publishes a clip encoded as a live encoder does (640x360, 25 fps, x264
veryfast zerolatency, keyframe every 2 s, 2 Mbit/s) over RTMP to the monitor's bundled nginx-rtmp, clean, then a
fault, then clean again; the monitor must publish the fault's cause, soon after its onset and for as long as it
lasts, and raise nothing else. One publisher per test."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from stream.config import MonitorConfig
from stream.live.analysis import Analyzer
from tests.conftest import CARPHONE, free_port, need
from tests.harness import MonitorHarness

pytestmark = pytest.mark.slow

FPS = 25
LIVE_ENCODER = ("-c:v", "libx264", "-preset", "veryfast", "-tune", "zerolatency", "-g", "50", "-b:v", "2M",
                "-maxrate", "2M", "-bufsize", "1M", "-pix_fmt", "yuv420p", "-an")
SOURCE = f"scale=640:360:flags=bicubic,fps={FPS}"


def ffmpeg(*args: str) -> None:
    subprocess.run([need("ffmpeg"), "-nostdin", "-y", "-loglevel", "error", *args], check=True, timeout=120)


def encode(out: Path, seconds: float, vf: str = SOURCE, size_args: tuple[str, ...] = (), *extra: str) -> Path:
    ffmpeg("-stream_loop", "-1", "-i", str(CARPHONE), "-t", str(seconds), "-vf", vf, *LIVE_ENCODER, *size_args,
           *extra, "-f", "flv", str(out))
    return out


def concat(out: Path, parts: list[Path]) -> Path:
    listing = out.with_suffix(".txt")
    listing.write_text("".join(f"file '{p}'\n" for p in parts))
    ffmpeg("-f", "concat", "-safe", "0", "-i", str(listing), "-c", "copy", "-f", "flv", str(out))
    return out


def ffmpeg_errors(path: Path) -> int:
    """The error lines `ffmpeg -v error -i FILE -f null -` prints: what an operator compares the counter with."""
    r = subprocess.run([need("ffmpeg"), "-nostdin", "-v", "error", "-i", str(path), "-f", "null", "-"],
                       capture_output=True, text=True, timeout=120)
    return len([line for line in r.stderr.splitlines() if line.strip()])


@pytest.fixture(scope="module")
def face():
    from engines.face import FaceExtractor

    return FaceExtractor()


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("live_faults")


@dataclass
class Timeline:
    """What /streams said about one stream, every half second from its first frame."""

    samples: list[tuple[float, dict]] = field(default_factory=list)

    def raised(self) -> set[str]:
        return {c["cause"] for _, s in self.samples for c in ((s.get("recommendation") or {}).get("causes") or [])}

    def first_raised(self, cause: str) -> float | None:
        for t, s in self.samples:
            if any(c["cause"] == cause for c in ((s.get("recommendation") or {}).get("causes") or [])):
                return t
        return None

    def current(self, start: float, end: float) -> list[str | None]:
        return [(s.get("recommendation") or {}).get("cause") for t, s in self.samples if start <= t < end]

    def dimension(self, name: str, start: float, end: float) -> list[float]:
        return [((s.get("latest") or {}).get("dimensions") or {}).get("frame", {}).get(name, 100.0)
                for t, s in self.samples if start <= t < end and s.get("latest")]


def monitor_config(port: int, expect: dict | None = None, **alerts) -> MonitorConfig:
    return MonitorConfig.model_validate({
        "sources": [{"name": "cam", "url": f"rtmp://127.0.0.1:{port}/live/cam", "listen": True, "expect": expect}],
        "window": {"length_s": 2.0, "hop_s": 1.0},
        "analysis": {"stale_after_s": 2.0, "batch_interval_s": 0.05, "sample_fps": 2.0},
        "alerts": {"raise_after_s": 4, "clear_after_s": 30, **alerts},
        "no_model": True,
    })


def publish(clip: Path, url: str, loop: bool = False) -> subprocess.Popen:
    loop_args = ("-stream_loop", "-1") if loop else ()
    return subprocess.Popen([need("ffmpeg"), "-nostdin", "-loglevel", "error", "-re", *loop_args, "-i", str(clip),
                             "-c", "copy", "-f", "flv", url], stderr=subprocess.DEVNULL)


def watch(h: MonitorHarness, seconds: float, publisher: subprocess.Popen | None = None,
          at: dict[float, object] | None = None) -> Timeline:
    """Samples /streams for `seconds` from the stream's first frame (t = 0 is the clip's start, give or take the
    first frame's latency); `at` runs callables at those times."""
    h.wait_for(lambda: ((h.streams().get("cam") or {}).get("frames_received") or 0) > 0, 20, "the first frame")
    t0 = time.monotonic()
    timeline = Timeline()
    pending = sorted((at or {}).items())
    while (t := time.monotonic() - t0) < seconds:
        while pending and pending[0][0] <= t:
            pending.pop(0)[1]()
        timeline.samples.append((t, h.streams().get("cam") or {}))
        time.sleep(0.5)
    return timeline


def run(clip: Path, face, seconds: float, loop: bool = False, at_s: dict | None = None, expect: dict | None = None,
        **alerts):
    port = free_port()
    url = f"rtmp://127.0.0.1:{port}/live/cam"
    with MonitorHarness(monitor_config(port, expect, **alerts), Analyzer(face, None, embed_every=0, sample_fps=2.0)) as h:
        from stream.ops.recommend import start_recommendations

        recommender = start_recommendations(h.monitor)
        pub = publish(clip, url, loop)
        try:
            at = {t: (lambda f=f: f(pub)) for t, f in (at_s or {}).items()}
            timeline = watch(h, seconds, pub, at)
            scrape = h.scrape()
        finally:
            recommender.stop()
            if pub.poll() is None:
                os.kill(pub.pid, signal.SIGCONT)
            pub.kill()
            pub.wait()
    return timeline, scrape


def sample(scrape: dict, name: str, **labels) -> float | None:
    return scrape.get((name, tuple(sorted({"stream": "cam", **labels}.items()))))


def report(fault: str, timeline: Timeline, onset: float, cause: str) -> float:
    seen = timeline.first_raised(cause)
    assert seen is not None, (fault, timeline.raised())
    print(f"{fault}: {cause!r} raised {seen - onset:.1f} s after the onset; raised overall: {timeline.raised()}")
    return seen - onset


def test_a_frozen_picture_reads_as_stalls_for_as_long_as_it_lasts(clips, face):
    # 4 s of a moving presenter, 8 s of one picture repeated at 25 fps (re-encoded: a stuck camera), 2 s moving
    clip = clips / "freeze.flv"
    ffmpeg("-stream_loop", "-1", "-i", str(CARPHONE), "-t", "14", "-filter_complex",
           f"[0:v]{SOURCE},split[a][b];[a][b]freezeframes=first=100:last=299:replace=100", *LIVE_ENCODER,
           "-f", "flv", str(clip))
    timeline, _ = run(clip, face, 14.5)
    delay = report("frozen picture", timeline, 4.0, "stalls")
    assert delay <= 9.0  # seen within ~3 s, raised after raise_after_s (4)
    assert timeline.raised() == {"stalls"}
    # the temporal dimension stays down while the picture is frozen: no recovery in the middle of the freeze
    frozen = timeline.dimension("temporal", 7.5, 12.0)
    assert frozen and max(frozen) < 45, frozen
    assert min(timeline.dimension("temporal", 1.5, 4.0), default=100) > 60


def test_a_still_presenter_is_not_a_freeze(clips, face):
    # a still picture with sensor noise that breathes (a few tenths of a level between pictures): no freeze
    clip = clips / "still.flv"
    photo = Path(__file__).resolve().parents[2] / "build" / "media" / "face_recognition" / "obama.jpg"
    if not photo.is_file():
        pytest.skip(f"{photo} is missing: run `make setup`")
    ffmpeg("-loop", "1", "-i", str(photo), "-t", "9", "-vf",
           "scale=-2:360,pad=640:360:(ow-iw)/2:0,fps=25,noise=alls=4:allf=t,"
           "rotate=0.003*sin(2*PI*t/4)", *LIVE_ENCODER, "-f", "flv", str(clip))
    timeline, _ = run(clip, face, 9.5)
    assert timeline.raised() == set(), timeline.raised()
    assert min(timeline.dimension("temporal", 3.0, 9.5)) > 60


def test_damaged_packets_are_counted_like_ffmpeg_and_named_transport_damage(clips, face):
    clean_head, damaged, clean_tail = (encode(clips / f"part{i}.flv", s) for i, s in enumerate((4, 6, 4)))
    noisy = clips / "noisy.flv"
    ffmpeg("-i", str(damaged), "-c", "copy", "-bsf:v", "noise=amount=20000", "-f", "flv", str(noisy))
    clip = concat(clips / "damaged.flv", [clean_head, noisy, clean_tail])
    expected = ffmpeg_errors(clip)
    assert expected > 20  # the damage is real: ffmpeg reports it
    assert ffmpeg_errors(clean_head) == 0
    timeline, scrape = run(clip, face, 14.5)
    counted = sample(scrape, "fvq_stream_errors_total", kind="decode")
    print(f"decoder errors: ffmpeg -v error {expected}, fvq_stream_errors_total{{kind=decode}} {counted:g}, "
          f"corrupt frames {sample(scrape, 'fvq_frames_corrupt_total'):g}")
    assert abs(counted - expected) <= 0.1 * expected
    assert sample(scrape, "fvq_frames_corrupt_total") > 0
    delay = report("bitstream damage", timeline, 4.0, "transport_damage")
    assert delay <= 5.0  # alerts.fault_raise_after_s is 3
    assert timeline.raised() == {"transport_damage"}
    assert all(c is None for c in timeline.current(0, 3.5))  # clean before


def test_a_black_picture_is_named_within_seconds(clips, face):
    clip = encode(clips / "black.flv", 13,
                  f"{SOURCE},drawbox=x=0:y=0:w=iw:h=ih:color=black:t=fill:enable='between(t,4,9)'")
    timeline, scrape = run(clip, face, 13.5)
    delay = report("black picture", timeline, 4.0, "black_picture")
    assert delay <= 5.0
    # named as its own fault, not as luminance or colour (camera), no face (framing) or a freeze (stalls)
    assert timeline.raised() == {"black_picture"}
    assert all(c == "black_picture" for c in timeline.current(4.0 + delay + 0.5, 13.5))


def test_a_rendition_down_switch_is_named(clips, face):
    # one stream whose coded size drops from 640x360 to 192x108 mid-stream (the headers repeated in-band, as a
    # switching encoder sends them)
    in_band = ("-x264-params", "repeat-headers=1")
    big = encode(clips / "r640.flv", 6, SOURCE, (), *in_band)
    small = encode(clips / "r192.flv", 7, f"scale=192:108,fps={FPS}", (), *in_band)
    clip = concat(clips / "switch.flv", [big, small])
    timeline, scrape = run(clip, face, 12.5)
    delay = report("rendition down-switch", timeline, 6.0, "rendition_down")
    assert delay <= 5.0
    assert timeline.raised() == {"rendition_down"}
    assert sample(scrape, "fvq_stream_format_changes_total", what="size") == 1
    assert sample(scrape, "fvq_stream_width_pixels") == 192
    assert sample(scrape, "fvq_stream_fault", fault="rendition_down") == 1
    assert sample(scrape, "fvq_stream_fault", fault="format_change") == 0


def test_a_stream_that_does_not_carry_what_its_source_expects(clips, face):
    # the channel should carry 640x360 at 50 fps; the publisher sends 640x360 at 25
    clip = encode(clips / "fps25.flv", 10)
    timeline, scrape = run(clip, face, 10.5, expect={"width": 640, "height": 360, "fps": 50})
    delay = report("frame rate against expect", timeline, 0.0, "format_change")
    assert delay <= 10.0  # the received rate settles for 5 s, then the fault holds 3 s
    assert timeline.raised() == {"format_change"}
    assert sample(scrape, "fvq_stream_fault", fault="format_change") == 1
    assert sample(scrape, "fvq_stream_fault", fault="rendition_down") == 0
    assert timeline.samples[-1][1]["decoded"]["format"]["width"] == 640


def test_a_stalled_publisher_reads_as_down(clips, face):
    clip = encode(clips / "loop.flv", 4)
    stop = lambda p: os.kill(p.pid, signal.SIGSTOP)  # noqa: E731 - the publisher hangs: no packet, no goodbye
    timeline, scrape = run(clip, face, 14.0, loop=True, at_s={4.0: stop})
    delay = report("publisher stall", timeline, 4.0, "down")
    assert delay <= 9.0  # stale after 2 s, raised after 4
    last = timeline.samples[-1][1]
    assert last["state"] in ("down", "error") and last["recommendation"]["cause"] == "down"
    assert sample(scrape, "fvq_stream_up") == 0
    assert timeline.raised() == {"down"}
