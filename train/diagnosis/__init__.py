"""The diagnosis benchmark: does the dimension that falls, and the alert that fires, name the distortion that was applied?

Every distorted clip is compared with its own clean reference (same source, framing, camera motion and encode):
- corpus clips: the reference is rendered again from the clip's metadata (source, size, rate, seed, cut) and
  written the way the corpus writes clips (x264 CRF 16), so the two differ only by the distortion;
- ladders: each family at each level on sources the corpus never shows (train.face_sources.unseen_sources) or on the
  test split's people, written next to their clean clip.

Per clip: the published dimensions (what `fvq score` and the monitor show: the face weighted where one is
seen), the causes the monitor's recommendation raises (stream.ops.recommend.window_causes), and the score.

The room: verdict.py (one clip against its reference, the figures over many), pairs.py (the corpus's pairs and the
ladders), people.py (new people), steadiness.py (looped streams); this module runs them all and formats the report.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from train.diagnosis.pairs import corpus_rows, ladder_clips, ladder_rows
from train.diagnosis.people import format_people, people_rows
from train.diagnosis.steadiness import format_steadiness, steadiness
from train.diagnosis.verdict import format_summary


def run(root: str | Path | None, split: str = "test", bundle=None, ladder_sources: Sequence[str] | None = None,
        ladder_dir: Path | None = None, progress: bool = True, people: bool = True, steady: bool = True) -> dict:
    """The whole benchmark: corpus pairs of ROOT/split (when root is given), ladders on `ladder_sources` (default:
    the unseen content), and new people against trained ones (clean scores, face/background blur pairs)."""
    from stream.config import MonitorConfig
    from stream.live.analysis import build_analyzer
    from train.face_sources import unseen_sources

    cfg = MonitorConfig(bundle=Path(bundle)) if bundle else MonitorConfig()
    analyzer = build_analyzer(cfg)
    result: dict = {}
    if root is not None:
        result["corpus"] = corpus_rows(root, split, cfg, analyzer, progress)
    if ladder_sources is None:
        ladder_sources = [s.name for s in unseen_sources()]
    where = ladder_dir or (Path(root) / "diagnosis" if root is not None else Path("corpus/diagnosis"))
    if ladder_sources:
        result["ladders"] = ladder_rows(ladder_clips(ladder_sources, where), cfg, analyzer, progress)
    if root is not None and steady:
        metas = [json.loads(line) for line in (Path(root) / split / "meta.jsonl").read_text().splitlines() if line]
        paths = [Path(root) / split / "videos" / m["file"] for m in metas if len(m["families"]) <= 1]
        samples = Path(__file__).resolve().parents[2] / "samples"
        paths += [samples / "clean.mp4", samples / "degraded.mp4"]
        result["steadiness"] = steadiness(paths, where / "loops", cfg, analyzer, progress=progress)
    if people:
        from train.corpus import sources_by_split

        split_sources = sources_by_split()
        new = split_sources["test"] + [s.name for s in unseen_sources() if not s.name.startswith("avatar")]
        result["people"] = people_rows(split_sources["train"], new, where / "people", cfg, analyzer,
                                       progress=progress)
    return result


def format_result(result: dict, split: str = "test") -> str:
    parts = []
    if "corpus" in result:
        parts.append(format_summary(f"corpus {split} split against re-rendered references", result["corpus"]))
    if "ladders" in result:
        names = sorted({r["source"] for r in result["ladders"]})
        parts.append(format_summary(f"ladders on unseen content ({', '.join(names)})", result["ladders"]))
    if "people" in result:
        parts.append(format_people(result["people"]))
    if "steadiness" in result:
        parts.append(format_steadiness(result["steadiness"]))
    return "\n\n".join(parts)
