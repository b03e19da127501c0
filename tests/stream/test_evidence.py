"""Evidence frames: for each family, the frame kept is the one of the raising window that shows the cause most;
episodes, sharpening, bounds and the timeline, on real face frames from the demo's clean sample."""

from __future__ import annotations

import copy
from pathlib import Path

import cv2
import numpy as np
import pytest

from engines.signals import analyse_frame_signals
from stream.config import AlertConfig, MonitorConfig
from stream.live.analysis import Analyzer, summarise_window
from stream.live.evidence import EvidenceStore, _window_scores
from stream.live.offline import analyse_file
from stream.live.stream_state import StreamState
from stream.ops.metrics import build_metrics

ROOT = Path(__file__).resolve().parents[2]
CLEAN = ROOT / "samples" / "clean.mp4"


@pytest.fixture(scope="module")
def clean_windows():
    from engines.face import FaceExtractor

    analysis = analyse_file(CLEAN, MonitorConfig(), Analyzer(FaceExtractor(), None), keep_windows=True)
    return analysis.windows


def state(name: str = "cam") -> StreamState:
    st = StreamState(name, "file", "x.mp4", build_metrics())
    st.bitrate_bps, st.width, st.height, st.fps = 4e6, 640, 360, 25.0  # not a low bitrate
    return st


def distort(family: str, image: np.ndarray, strong: bool) -> np.ndarray:
    """A clear case of the family on most frames, a stronger one on one frame."""
    if family == "blur":
        return cv2.GaussianBlur(image, (0, 0), 7.0 if strong else 3.5)
    if family == "noise":
        rng = np.random.default_rng(1)
        return np.clip(image + rng.normal(0, 45 if strong else 25, image.shape), 0, 255).astype(np.uint8)
    if family == "artifact":
        bgr = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
        ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, 2 if strong else 6])
        return cv2.cvtColor(cv2.imdecode(buf, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    if family == "luminance":
        return (image * (0.03 if strong else 0.1)).astype(np.uint8)
    if family == "color":
        grey = cv2.cvtColor(cv2.cvtColor(image, cv2.COLOR_RGB2GRAY), cv2.COLOR_GRAY2RGB).astype(np.float32)
        keep = 0.0 if strong else 0.12
        return (grey + keep * (image.astype(np.float32) - grey)).astype(np.uint8)
    raise ValueError(family)


def remeasure(window):
    for f in window.frames:
        if f.image is not None:
            f.signals = None
            analyse_frame_signals(f)
    window.measures = None
    return summarise_window(window)


def degraded_copy(window, family: str, strongest: int):
    """A deep copy of the window with every sampled frame distorted, frame `strongest` the most."""
    w = copy.deepcopy(window)
    for i, f in enumerate(w.sampled):
        f.image = distort(family, f.image, i == strongest)
    return w, remeasure(w)


def frozen_copy(window, start: int, stop: int):
    """The window with frames [start, stop) repeating frame start's picture (a stuck encoder)."""
    w = copy.deepcopy(window)
    still = w.frames[start]
    picture = next(f.image for f in w.frames[start:] if f.image is not None)
    for f in w.frames[start + 1:stop]:
        f.thumb, f.change = still.thumb.copy(), 0.0
        if f.image is not None:
            f.image = picture.copy()
    return w, remeasure(w)


CAUSE = {"blur": "source", "noise": "camera", "artifact": "source", "luminance": "camera", "color": "camera"}


@pytest.mark.parametrize("family", ["blur", "noise", "artifact", "luminance", "color"])
def test_the_evidence_is_the_raising_windows_frame_that_shows_the_family_most(clean_windows, family):
    store = EvidenceStore(AlertConfig())
    st = state()
    before, bad = clean_windows[2], clean_windows[3]
    store.observe(st, before, summarise_window(before))
    assert store.clean_jpeg("cam") is not None and store.describe("cam", "/s")["evidence"] == []
    strongest = 2
    w, result = degraded_copy(bad, family, strongest)
    region = "face" if result.dimensions.get("face") else "frame"
    assert result.dimensions[region][family] < 45, result.dimensions
    store.observe(st, w, result)
    (ev,) = [e for e in store.describe("cam", "/s")["evidence"] if e["cause"] == CAUSE[family]]
    assert ev["family"] == family and ev["window"] == [round(w.start, 3), round(w.end, 3)]
    assert ev["pts"] == round(w.sampled[strongest].pts, 3)  # not the first, not the last: the worst one
    assert ev["value"] == round(_window_scores(w, region, {})[family], 1)
    jpeg = store.evidence_jpeg("cam", ev["id"])
    image = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    assert image.shape[:2] == w.sampled[strongest].image.shape[:2] == (ev["size"][1], ev["size"][0])
    # the region is drawn in red on the frame (the face box, or the worst tile)
    red = (image[..., 2] > 180) & (image[..., 1] < 90) & (image[..., 0] < 90)
    assert red.sum() > 50
    assert store.evidence_jpeg("cam", ev["id"] + "-clean") == store.clean_jpeg("cam")
    assert store.evidence_jpeg("cam", CAUSE[family]) == jpeg  # the cause's name: its newest evidence


def test_temporal_evidence_is_the_frame_that_ends_the_freeze(clean_windows):
    store = EvidenceStore(AlertConfig())
    st = state()
    bad = clean_windows[4]
    n = len(bad.frames)
    start, stop = n // 8, 5 * n // 8  # frozen from an eighth of the way in to five eighths
    w, result = frozen_copy(bad, start, stop)
    assert result.dimensions["frame"]["temporal"] < 45, result.dimensions
    store.observe(st, w, result)
    (ev,) = [e for e in store.describe("cam", "/s")["evidence"] if e["cause"] == "stalls"]
    assert ev["family"] == "temporal" and ev["window"] == [round(w.start, 3), round(w.end, 3)]
    # the last sampled frame of the freeze: the longest time without a change, not the window's last frame
    expected = [f for f in w.frames[start:stop] if f.image is not None][-1]
    assert expected is not w.sampled[-1] and ev["pts"] == round(expected.pts, 3)


def test_episodes_sharpen_in_place_and_are_bounded(clean_windows):
    store = EvidenceStore(AlertConfig())
    st = state()
    w0, r0 = clean_windows[1], summarise_window(clean_windows[1])
    mild_w = copy.deepcopy(clean_windows[3])
    for f in mild_w.sampled:
        f.image = cv2.GaussianBlur(f.image, (0, 0), 3.0)
    mild = remeasure(mild_w)
    worse_w, worse = degraded_copy(clean_windows[4], "blur", 0)
    store.observe(st, w0, r0)
    store.observe(st, mild_w, mild)
    (first,) = store.describe("cam", "/s")["evidence"]
    assert first["id"] == "e1" and store.evidence_id("cam", "source") == "e1"
    store.observe(st, worse_w, worse)  # sharper: the same evidence, the worse window's frame
    (sharp,) = store.describe("cam", "/s")["evidence"]
    assert sharp["id"] == "e1" and sharp["sharpened"] == 1 and sharp["value"] < first["value"]
    assert sharp["window"] == [round(worse_w.start, 3), round(worse_w.end, 3)]
    assert sharp["raised_at"] == first["raised_at"]
    store.observe(st, mild_w, mild)  # milder again: the sharper frame stays
    assert store.describe("cam", "/s")["evidence"][0]["window"] == sharp["window"]
    store.observe(st, w0, r0)  # the cause is gone: the episode ends, its evidence stays
    store.observe(st, mild_w, mild)  # a new episode: a new evidence frame
    assert [e["id"] for e in store.describe("cam", "/s")["evidence"]] == ["e2", "e1"]
    for _ in range(EvidenceStore.MAX_EVIDENCE + 2):
        store.observe(st, w0, r0)
        store.observe(st, mild_w, mild)
    ids = [e["id"] for e in store.describe("cam", "/s")["evidence"]]
    assert len(ids) == EvidenceStore.MAX_EVIDENCE and "e1" not in ids and store.evidence_jpeg("cam", "e1") is None
    assert store.evidence_id("cam", "source") == ids[0]
    held = store.memory_bytes()
    assert 0 < held < 1_000_000
    # a stream replaced under the same name starts afresh; a removed one holds nothing
    store.observe(state(), w0, r0)
    assert store.describe("cam", "/s")["evidence"] == []
    store.forget("cam")
    assert store.latest_jpeg("cam") is None and store.timeline("cam") is None


def test_frames_off_keeps_the_timeline_only(clean_windows):
    store = EvidenceStore(AlertConfig(), frames=False)
    st = state()
    w, result = degraded_copy(clean_windows[3], "blur", 0)
    store.observe(st, w, result)
    assert store.latest_jpeg("cam") is None and store.describe("cam", "/s")["evidence"] == []
    tl = store.timeline("cam")
    assert len(tl["t"]) == 1 and tl["blur"] == [round(result.dimensions["face"]["blur"], 1)]


def test_timeline_is_a_ring_of_the_last_hour(clean_windows):
    store = EvidenceStore(AlertConfig(), hop_s=1.0, timeline_s=10.0)  # 10 s: 18 points with the spare
    st = state()
    w, r = clean_windows[1], summarise_window(clean_windows[1])
    r.score = 50.0
    for _ in range(30):
        store.observe(st, w, r)
    tl = store.timeline("cam", since_s=3600)
    assert len(tl["t"]) == store.timeline_points and tl["t"] == sorted(tl["t"])
    assert set(tl["score"]) == {50.0}
    assert store.timeline("cam", since_s=3600, points=4)["score"][-1] == 50.0


def test_a_colour_switch_keeps_the_pictures_before_and_after_it(clean_windows):
    from train import looks

    store = EvidenceStore(AlertConfig())
    st = state()
    w = copy.deepcopy(clean_windows[4])
    sampled = w.sampled
    k = len(sampled) // 2
    for f in w.frames:  # the pipeline swaps its chroma planes at the k-th sampled picture
        f.colour_switch, f.switch_read = None, False
    for f in sampled[k:]:
        f.image = looks.apply_fault(f.image[None], "swap-uv", 4)[0]
    result = remeasure(w)
    assert result.details["colour_switches"] == [[round(sampled[k].pts, 3), "swap"]]
    store.observe(st, w, result)
    (ev,) = [e for e in store.describe("cam", "/s")["evidence"] if e["cause"] == "colour_switch"]
    assert ev["pts"] == round(sampled[k].pts, 3) and ev["clean_url"] == f"/s/evidence/{ev['id']}-clean.jpg"
    after = cv2.imdecode(np.frombuffer(store.evidence_jpeg("cam", ev["id"]), np.uint8), cv2.IMREAD_COLOR)
    before = cv2.imdecode(np.frombuffer(store.evidence_jpeg("cam", f"{ev['id']}-clean"), np.uint8), cv2.IMREAD_COLOR)
    assert after.shape == before.shape == (*sampled[k].image.shape[:2], 3)
    assert store.evidence_jpeg("cam", "colour_switch") == store.evidence_jpeg("cam", ev["id"])  # the alert links it
    # the same switch reported again by the next window is not new evidence
    store.observe(st, w, result)
    assert [e["cause"] for e in store.describe("cam", "/s")["evidence"]].count("colour_switch") == 1
