"""From a stream's frames to rated windows: the steps the monitor's analysis loop and `fvq score` both take."""

from __future__ import annotations

from collections.abc import Sequence

from engines.features import FrameRecord, Window, WindowResult
from stream.ingest.queues import END
from stream.live.analysis import Analyzer
from stream.live.windows import WindowAssembler


def assemble(assembler: WindowAssembler, item: FrameRecord | object,
             sampled: list[FrameRecord] | None = None) -> tuple[list[Window], bool]:
    """Gives one queued item (a frame, or END) to its stream's window assembler. Returns the windows that
    closed and whether the stream ended; a sampled frame (one with an image) is also added to `sampled`."""
    if item is END:
        return assembler.finish(), True
    assert isinstance(item, FrameRecord)
    if sampled is not None and item.image is not None:
        sampled.append(item)
    return assembler.add(item), False


def rate(analyzer: Analyzer, windows: Sequence[Window]) -> list[WindowResult]:
    """Analyses the sampled frames these windows hold that are not analysed yet (in the order they came),
    then rates the windows together."""
    needed = {id(f): f for w in windows for f in w.frames if f.image is not None and not f.analysed}
    analyzer.analyse_frames(list(needed.values()))
    return analyzer.rate_windows(list(windows))
