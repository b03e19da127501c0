"""Looks in the corpus's clean class: a clip shot in a look is labelled clean, distortions are judged on top of it."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from train import looks
from train.corpus import ClipPlan, build_job, is_look_twin, plan_corpus


def test_no_look_share_leaves_the_plan_as_it_was_and_a_share_changes_only_the_looks():
    base = [p for job in plan_corpus(60, seed=5) for p in job]
    assert {p.look for p in base} == {"none"}
    every = [p for job in plan_corpus(60, seed=5, look_share=1.0) for p in job]
    assert all(p.look in looks.LOOKS for p in every)
    assert len({p.look for p in every}) >= 5  # drawn from all the looks, not one
    # the looks come from a generator of their own: sources, sizes, seeds and distortions are the same clips, but
    # for the colour damage: with looks on, a warm or cool cast is a look, so a tint takes the cast's place
    def as_without_looks(p):
        ds = [{**d, "kind": "cast", "strength": None} if d["kind"] == "tint" else d for d in p.distortions]
        return dataclasses.replace(p, look="none", distortions=ds)

    def strengthless(p):
        return dataclasses.replace(p, distortions=[{**d, "strength": None} if d["kind"] == "cast" else d
                                                   for d in p.distortions])

    assert [as_without_looks(p) for p in every] == [strengthless(p) for p in base]
    assert {d["kind"] for p in every for d in p.distortions if d["family"] == "color"} <= {"desaturate", "tint",
                                                                                           "saturate"}
    assert "cast" in {d["kind"] for p in base for d in p.distortions if d["family"] == "color"}
    some = [p.look != "none" for job in plan_corpus(200, seed=5, look_share=0.3) for p in job]
    assert 0.2 < np.mean(some) < 0.4


def test_look_twins_repeat_plain_training_clips_in_each_look_and_change_nothing_else():
    base = plan_corpus(60, seed=5, extra_train=20, look_share=0.4)
    with_twins = plan_corpus(60, seed=5, extra_train=20, look_share=0.4, look_twins=18)
    assert with_twins[:len(base)] == base  # planned after every other clip
    twins = [job[0] for job in with_twins[len(base):]]
    assert len(twins) == 18 and all(len(job) == 1 for job in with_twins[len(base):])
    planned = [p for job in base for p in job]
    assert sorted({p.look for p in twins}) == sorted(looks.LOOKS)  # every look, in turn: two each
    names = {p.name for job in with_twins for p in job}
    assert len(names) == sum(len(job) for job in with_twins)  # no name twice
    for twin in twins:
        plain_key = twin.name.split("_", 1)[1].removesuffix(f"-{twin.look}.mp4") + ".mp4"
        matches = [p for p in planned if p.name.split("_", 1)[1] == plain_key and p.look == "none"
                   and p.distortions == twin.distortions and p.seed == twin.seed]
        assert twin.split == "train" and twin.look != "none" and len(matches) == 1, twin.name
        assert dataclasses.replace(matches[0], name=twin.name, look=twin.look) == twin
        assert is_look_twin({"file": twin.name, "look": twin.look})
    assert not any(is_look_twin({"file": p.name, "look": p.look}) for p in planned)


def test_clean_look_twins_shoot_every_pristine_plain_training_clip_in_every_look():
    base = plan_corpus(200, seed=5, extra_train=20, look_share=0.4, look_twins=18)
    with_clean = plan_corpus(200, seed=5, extra_train=20, look_share=0.4, look_twins=18, clean_look_twins=True)
    assert with_clean[:len(base)] == base  # planned after every other clip, the look twins included
    clean = [job[0] for job in with_clean[len(base):]]
    pristine = [job[0] for job in base if len(job) == 1 and job[0].split == "train" and job[0].look == "none"
                and not job[0].distortions]
    assert pristine and len(clean) == len(pristine) * len(looks.LOOKS)
    assert {(p.source, p.seed, p.look) for p in clean} == {(p.source, p.seed, look) for p in pristine
                                                           for look in looks.LOOKS}
    assert all(p.split == "train" and not p.distortions and is_look_twin({"file": p.name, "look": p.look})
               for p in clean)
    assert len({p.name for job in with_clean for p in job}) == sum(len(job) for job in with_clean)


@pytest.mark.parametrize("look", ["candle", "teal-orange", "low-key"])
def test_a_clip_in_a_look_is_labelled_clean_and_a_distortion_on_top_is_not(tmp_path, look):
    (tmp_path / "train" / "videos").mkdir(parents=True)
    plan = ClipPlan("plain.mp4", "train", "carphone-s0", 320, 180, 10, 1.0, 7)
    plain = build_job([plan], str(tmp_path))[0]
    shot = build_job([dataclasses.replace(plan, name="look.mp4", look=look)], str(tmp_path))[0]
    assert shot["look"] == look and plain["look"] == "none"
    assert shot["mos"] == pytest.approx(plain["mos"], abs=0.5) and shot["families"] == []
    blurred = dataclasses.replace(plan, name="look-blur.mp4", look=look,
                                  distortions=[{"family": "blur", "kind": "gaussian", "level": 4, "region": "full"}])
    hit = build_job([blurred], str(tmp_path))[0]
    # measured: 79 (candle), 84 (teal-orange), 88 (low-key; 92 with the darker low-key before 2026-12-06) against
    # 97.5 clean: the pseudo-MOS's SSIM sees less of a blur on a dark picture, which a retrain on looks inherits
    assert hit["mos"] < shot["mos"] - 5
    assert (tmp_path / "train" / "videos" / "look.mp4").is_file()


def test_an_unknown_look_is_refused_by_name():
    with pytest.raises(ValueError, match="unknown look 'sepia'; looks: none, tungsten"):
        looks.apply_look(np.zeros((1, 4, 4, 3), np.uint8), "sepia")
