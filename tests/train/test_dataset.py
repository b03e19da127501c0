"""The dataset loader's range check: a MOS outside 0-100 is refused with the file, the line and the fix, by the loader
and by train.fit's reader; the ends of the scale are accepted."""

from __future__ import annotations

import pytest

from train.clip_features import read_split
from train.dataset import DatasetError, load_split


def _folder(tmp_path, mos: str):
    (tmp_path / "train" / "videos").mkdir(parents=True)
    for name in ("a.mp4", "b.mp4"):
        (tmp_path / "train" / "videos" / name).write_bytes(b"")
    (tmp_path / "train" / "labels.txt").write_text(f"a.mp4 50.00\nb.mp4 {mos}\n")
    return tmp_path


@pytest.mark.parametrize("mos", ["150", "100.01", "-0.5", "-1", "nan", "inf", "1e3"])
def test_a_mos_off_the_scale_is_refused_with_its_line(tmp_path, mos):
    root = _folder(tmp_path, mos)
    with pytest.raises(DatasetError, match=r"train/labels\.txt:2: MOS .* is outside 0-100 \(FVQ-20K scores are 0-100; "
                                           r"rescale other scales first\)"):
        load_split(root, "train")
    with pytest.raises(DatasetError, match=r"labels\.txt:2: MOS"):  # train.fit reads through the same check
        read_split(root, "train")


def test_a_mos_of_150_is_named_in_the_error(tmp_path):
    with pytest.raises(DatasetError, match=r"MOS 150\.0 is outside 0-100"):
        load_split(_folder(tmp_path, "150"), "train")


@pytest.mark.parametrize("mos", ["0", "100", "100.0", "0.0", "99.99"])
def test_the_ends_of_the_scale_are_accepted(tmp_path, mos):
    clips = load_split(_folder(tmp_path, mos), "train")
    assert [c.mos for c in clips] == [50.0, float(mos)]
    assert [c.mos for c in read_split(tmp_path, "train")] == [50.0, float(mos)]


def test_the_feature_extractor_pins_glibcs_mmap_threshold():
    """On this Linux host (glibc) the threshold is set: without it one extraction process fragmented its heap to 19.5
    GB over the looks corpus (train/clip_features.pin_mmap_threshold); elsewhere the call says it did nothing."""
    import platform

    from train.clip_features import pin_mmap_threshold

    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        pytest.skip("glibc's mallopt is Linux/glibc only")
    assert pin_mmap_threshold() is True
