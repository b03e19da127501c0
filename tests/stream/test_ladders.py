"""Severity ladders through the whole file path (decode, windows, signals): real x264 at falling bitrates."""

from __future__ import annotations

import pytest

from stream.config import MonitorConfig
from stream.live.analysis import Analyzer
from stream.live.offline import analyse_file, combine_dimensions
from tests.conftest import make_face_clip


@pytest.fixture(scope="module")
def bitrate_ladder(media_dir):
    clips = {}
    for kbps in (1500, 300, 80, 30):
        codec = ("-c:v", "libx264", "-preset", "veryfast", "-b:v", f"{kbps}k", "-maxrate", f"{kbps}k",
                 "-bufsize", f"{2 * kbps}k")
        clips[kbps] = make_face_clip(media_dir / f"ladder_{kbps}.mp4", seconds=5, codec_args=codec)
    return clips


def test_compression_ladder_lowers_artifact_and_spares_other_families(bitrate_ladder):
    cfg = MonitorConfig()
    dims = {}
    for kbps, clip in bitrate_ladder.items():
        analysis = analyse_file(clip, cfg, Analyzer(face=None, rater=None))
        dims[kbps] = combine_dimensions(analysis.results)
    artifact = [dims[k]["artifact"] for k in (1500, 300, 80, 30)]
    # x264's deblocking hides the block grid; the decoder's quantiser still shows how starved the encoder is
    assert all(a > b for a, b in zip(artifact, artifact[1:], strict=False)), artifact
    assert artifact[0] > 85 and artifact[-1] < 40
    for family in ("luminance", "color"):
        assert abs(dims[30][family] - dims[1500][family]) < 15, (family, dims)
    # (at 30 kbit/s x264 repeats whole frames as skip blocks: the temporal score rightly drops there too)
    assert abs(dims[300]["temporal"] - dims[1500]["temporal"]) < 15
