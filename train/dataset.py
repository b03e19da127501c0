"""Reads FVQ-20K-format folders (the real FVQ-20K or the synthetic corpus) into lists of labelled clips."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

SPLITS = ("train", "val", "test")
MOS_RANGE = (0.0, 100.0)


class DatasetError(ValueError):
    """An FVQ-20K-format folder is not as expected; the message names the file (and line) to fix."""


@dataclass(frozen=True)
class Clip:
    """One labelled video: its path, its MOS (0-100) and, for the synthetic corpus, its meta record."""

    path: Path
    mos: float
    meta: dict | None = None


def _parse_label(line: str, labels: Path, lineno: int) -> tuple[str, float]:
    # "<file name> <MOS>"; a comma or tab between the two is accepted too, and the file name may hold spaces.
    text = line.strip().replace("\t", " ")
    name, sep, mos_text = text.rpartition(",") if "," in text else text.rpartition(" ")
    name = name.strip()
    expected = "expected '<video file name> <MOS 0-100>', e.g. 'clip_0001.mp4 63.21'"
    if not sep or not name:
        raise DatasetError(f"{labels}:{lineno}: cannot parse label line {line.rstrip()!r}: {expected}")
    try:
        mos = float(mos_text)
    except ValueError:
        raise DatasetError(f"{labels}:{lineno}: MOS {mos_text.strip()!r} is not a number in "
                           f"{line.rstrip()!r}: {expected}") from None
    if not math.isfinite(mos) or not MOS_RANGE[0] <= mos <= MOS_RANGE[1]:
        raise DatasetError(f"{labels}:{lineno}: MOS {mos} is outside {MOS_RANGE[0]:g}-{MOS_RANGE[1]:g} "
                           f"(FVQ-20K scores are 0-100; rescale other scales first)")
    return name, mos


def _read_meta(path: Path) -> dict[str, dict]:
    records: dict[str, dict] = {}
    if not path.exists():
        return records
    with open(path) as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                records[record["file"]] = record
            except (json.JSONDecodeError, KeyError, TypeError) as exc:
                raise DatasetError(f"{path}:{lineno}: not a JSON object with a 'file' field: {exc}") from None
    return records


def load_split(root: str | Path, split: str) -> list[Clip]:
    """Clips of one split of an FVQ-20K-format folder, in labels.txt order.

    Reads `root/split/labels.txt` and checks that every listed video exists in `root/split/videos/`;
    attaches `root/split/meta.jsonl` records when that file exists (the synthetic corpus writes it).
    Blank lines and lines starting with '#' are skipped."""
    if split not in SPLITS:
        raise DatasetError(f"unknown split {split!r}; splits are {', '.join(SPLITS)}")
    folder = Path(root) / split
    labels = folder / "labels.txt"
    if not labels.is_file():
        raise DatasetError(f"{labels} not found: an FVQ-20K-format folder has ROOT/{split}/labels.txt "
                           f"(one '<video file name> <MOS>' per line) and ROOT/{split}/videos/")
    meta = _read_meta(folder / "meta.jsonl")
    clips: list[Clip] = []
    seen: dict[str, int] = {}
    with open(labels, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            name, mos = _parse_label(line, labels, lineno)
            if name in seen:
                raise DatasetError(f"{labels}:{lineno}: {name!r} is listed twice (first on line {seen[name]})")
            seen[name] = lineno
            path = folder / "videos" / name
            if not path.is_file():
                raise DatasetError(f"{labels}:{lineno}: video {name!r} is listed but {path} does not exist")
            clips.append(Clip(path, mos, meta.get(name)))
    if not clips:
        raise DatasetError(f"{labels} lists no videos")
    return clips
