"""The synthetic FVQ-20K-format corpus: building, labels, content split, pseudo-MOS behaviour, the reader."""

from __future__ import annotations

import json

import av
import numpy as np
import pytest

from train import distortions as D
from train.corpus import SPLITS, match_background_strength
from train.dataset import DatasetError, load_split
from train.media import face_mask, render, write_mp4
from train.pseudo_mos import pseudo_mos, psnr


@pytest.fixture(scope="module")
def corpus(dozen_corpus):
    return dozen_corpus


@pytest.fixture(scope="module")
def small_clip():
    return render("astronaut-c1", 320, 180, 10, 1.2, seed=0)


def test_dozen_clip_corpus_builds_with_parsable_labels(corpus):
    root, summary = corpus
    clips = {split: load_split(root, split) for split in SPLITS}
    assert sum(len(c) for c in clips.values()) == 12
    assert all(clips[s] for s in SPLITS)
    for split, rows in clips.items():
        for line in (root / split / "labels.txt").read_text().splitlines():
            name, mos = line.split(" ")
            assert name.endswith(".mp4") and len(mos.split(".")[1]) == 2
        for clip in rows:
            assert 0 <= clip.mos <= 100
            assert clip.meta is not None and clip.meta["split"] == split
            assert clip.meta["mos"] == clip.mos
            with av.open(str(clip.path)) as container:
                stream = container.streams.video[0]
                assert stream.codec_context.name == "h264"
                assert stream.codec_context.pix_fmt == "yuv420p"
                assert (stream.width, stream.height) == (clip.meta["width"], clip.meta["height"])
            assert len(clip.meta["face_boxes"]) == clip.meta["frames"]
    assert json.loads((root / "corpus.json").read_text())["clips"] == summary["clips"]


def test_splits_are_disjoint_by_content(corpus):
    root, _ = corpus
    groups = {s: {c.meta["group"] for c in load_split(root, s)} for s in SPLITS}
    sources = {s: {c.meta["source"] for c in load_split(root, s)} for s in SPLITS}
    for a in SPLITS:
        for b in SPLITS:
            if a < b:
                assert not groups[a] & groups[b], (a, b)
                assert not sources[a] & sources[b], (a, b)


def test_plan_splits_people_and_media_and_mixes_orientations_and_cuts():
    from train.corpus import MAX_UPSCALE, RESOLUTIONS, plan_corpus
    from train.face_sources import face_sources, source_by_name
    from train.media import window_height

    plans = [p for job in plan_corpus(400, seed=3) for p in job]
    group_split: dict[str, str] = {}
    for p in plans:
        for name in filter(None, (p.source, p.cut_to)):
            group = source_by_name(name).group
            assert group_split.setdefault(group, p.split) == p.split, f"{group} in two splits"
    # the test split is people no other split shows
    assert {g for g, s in group_split.items() if s == "test"} == {"ardern-2018", "ardern-2022", "sunak"}
    assert len({g for g, s in group_split.items() if s == "val"}) >= 2
    person_split: dict[str, str] = {}  # "macron-2014" and "macron-2025" are one person: one split
    for group, split in group_split.items():
        assert person_split.setdefault(group.split("-")[0], split) == split, f"{group}'s person in two splits"
    vertical = [p for p in plans if p.height > p.width]
    assert vertical and len(vertical) < len(plans)
    for p in plans:
        assert {(p.width, p.height), (p.height, p.width)} & set(RESOLUTIONS)
        src = source_by_name(p.source)
        assert ("vertical" if p.height > p.width else "landscape") in src.orientations
        assert p.height <= MAX_UPSCALE * window_height(src, p.width, p.height) or (p.width, p.height) == (256, 144)
    cuts = [p for p in plans if p.cut_to]
    assert cuts and all(0 < p.cut_at < p.duration and p.cut_to != p.source for p in cuts)
    assert len({s.name for s in face_sources()}) == len(face_sources())


def test_extra_training_clips_leave_val_and_test_as_they_were():
    from train.corpus import plan_corpus

    base = plan_corpus(60, seed=5)
    more = plan_corpus(60, seed=5, extra_train=20)
    assert more[:len(base)] == base  # the same clips, names and seeds included
    extra = [p for job in more[len(base):] for p in job]
    assert len(extra) == 20 and {p.split for p in extra} == {"train"}
    names = [p.name for job in more for p in job]
    assert len(set(names)) == len(names)


def test_cut_clip_switches_content_and_face_box_at_the_cut():
    from train.media import render, render_cut

    clip = render_cut("astronaut-c0", "t1-f2", 0.5, 320, 180, 10, 1.0, seed=1)
    a = render("astronaut-c0", 320, 180, 10, 1.0, seed=1)
    b = render("t1-f2", 320, 180, 10, 1.0, seed=2)
    assert len(clip.frames) == 10 and clip.meta["cut_to"] == "t1-f2" and clip.meta["cut_at"] == 0.5
    np.testing.assert_array_equal(clip.frames[:5], a.frames[:5])
    np.testing.assert_array_equal(clip.frames[5:], b.frames[5:])
    np.testing.assert_allclose(clip.boxes[5:], b.boxes[5:])


def test_vertical_render_of_a_fetched_portrait_keeps_the_face_in_frame():
    from train.media import render

    clip = render("sunak-v0", 180, 320, 10, 1.0, seed=0)
    assert clip.frames.shape == (10, 320, 180, 3)
    x, y, w, h = clip.boxes.mean(axis=0)
    assert 0 <= x and x + w <= 180 and 0 <= y and y + h <= 320
    assert 0.3 < h / 320 < 0.6  # a head-and-shoulders framing, not all face


def test_fetch_media_reports_missing_and_tampered_files(tmp_path):
    from train.fetch_media import media_dir, missing

    assert not missing(media_dir()), "make setup fetches the face photos"
    assert "insightface/t1.jpg" in missing(tmp_path)
    (tmp_path / "insightface").mkdir()
    (tmp_path / "insightface" / "t1.jpg").write_bytes(b"not the photo")
    assert "insightface/t1.jpg" in missing(tmp_path)


def test_missing_photo_names_the_fix(tmp_path, monkeypatch):
    from train import face_sources, media

    monkeypatch.setenv("FVQ_MEDIA", str(tmp_path))
    face_sources.load_photo.cache_clear()
    try:
        with pytest.raises(FileNotFoundError, match="make setup"):
            media.render("obama-v0", 180, 320, 10, 0.5)
    finally:
        face_sources.load_photo.cache_clear()


def test_corpus_pairs_share_full_frame_psnr(corpus):
    root, _ = corpus
    pairs: dict[str, dict[str, dict]] = {}
    for split in SPLITS:
        for clip in load_split(root, split):
            if clip.meta["pair_id"]:
                pairs.setdefault(clip.meta["pair_id"], {})[clip.meta["pair_role"]] = clip.meta
    assert pairs, "the dozen-clip corpus should hold at least one face/background pair"
    for pair in pairs.values():
        assert abs(pair["face"]["psnr"] - pair["background"]["psnr"]) < 0.1


@pytest.mark.parametrize("family,kind", [k for k in D.LADDER])
def test_pseudo_mos_falls_along_the_severity_ladder(small_clip, family, kind):
    masks = face_mask(small_clip.boxes, *small_clip.size)
    pristine = pseudo_mos(small_clip, D.apply(small_clip, [], seed=1), masks).mos
    scores = [pseudo_mos(small_clip, D.apply(small_clip, [D.Distortion(family, kind, lvl)], seed=1), masks).mos
              for lvl in D.LEVELS]
    assert pristine > scores[0]
    assert all(a > b for a, b in zip(scores, scores[1:], strict=False)), scores


@pytest.mark.parametrize("family,kind", [("noise", "gaussian"), ("blur", "gaussian")])
def test_face_only_scores_below_background_only_at_equal_psnr(small_clip, family, kind):
    masks = face_mask(small_clip.boxes, *small_clip.size)
    face = D.Distortion(family, kind, 4, "face")
    strength, target = match_background_strength(small_clip, masks, face, seed=3)
    background = D.Distortion(family, kind, 4, "background", strength=strength)
    face_clip, bg_clip = D.apply(small_clip, [face], 3), D.apply(small_clip, [background], 3)
    assert psnr(small_clip.frames, face_clip.frames) == pytest.approx(target)
    assert psnr(small_clip.frames, bg_clip.frames) == pytest.approx(target, abs=0.1)
    assert pseudo_mos(small_clip, face_clip, masks).mos < pseudo_mos(small_clip, bg_clip, masks).mos - 5


def test_stall_clip_carries_a_timestamp_gap(small_clip, tmp_path):
    stalled = D.apply(small_clip, [D.Distortion("temporal", "stall", 3)], seed=0)
    assert len(stalled.frames) < len(small_clip.frames)
    path = tmp_path / "stall.mp4"
    write_mp4(path, stalled.frames, small_clip.fps, pts=stalled.pts)
    with av.open(str(path)) as container:
        pts = sorted(float(f.pts * f.time_base) for f in container.decode(video=0))
    steps = np.diff(pts)
    assert steps.min() == pytest.approx(1 / small_clip.fps, abs=1e-3)
    assert steps.max() >= 3 / small_clip.fps
    assert pts[-1] == pytest.approx((len(small_clip.frames) - 1) / small_clip.fps, abs=1e-3)
    frozen = pseudo_mos(small_clip, stalled)
    assert frozen.frozen_share > 0.1 and frozen.longest_freeze_s >= 2 / small_clip.fps


def _folder(tmp_path, labels: str, videos=("a.mp4",)):
    (tmp_path / "train" / "videos").mkdir(parents=True)
    for name in videos:
        (tmp_path / "train" / "videos" / name).write_bytes(b"")
    (tmp_path / "train" / "labels.txt").write_text(labels)
    return tmp_path


def test_reader_names_missing_labels_file(tmp_path):
    with pytest.raises(DatasetError, match=r"test/labels\.txt not found"):
        load_split(tmp_path, "test")


def test_reader_names_file_and_line_of_a_bad_label(tmp_path):
    root = _folder(tmp_path, "a.mp4 50.00\n\nb.mp4 fifty\n", videos=("a.mp4", "b.mp4"))
    with pytest.raises(DatasetError, match=r"train/labels\.txt:3: MOS 'fifty' is not a number"):
        load_split(root, "train")
    (root / "train" / "labels.txt").write_text("a.mp4\n")
    with pytest.raises(DatasetError, match=r"train/labels\.txt:1: cannot parse"):
        load_split(root, "train")


def test_reader_names_a_listed_but_missing_video(tmp_path):
    root = _folder(tmp_path, "a.mp4 50.00\nghost.mp4 12.5\n")
    with pytest.raises(DatasetError, match=r"labels\.txt:2: video 'ghost\.mp4' is listed but .*ghost\.mp4 does not exist"):
        load_split(root, "train")


def test_reader_accepts_plain_fvq20k_labels(tmp_path):
    root = _folder(tmp_path, "a.mp4 83.19\n")
    [clip] = load_split(root, "train")
    assert clip.mos == 83.19 and clip.meta is None and clip.path.name == "a.mp4"
