"""What the live path hands the engines: the level bands every layer names a score with."""

from __future__ import annotations

import pytest

from engines.features import LEVELS, level_of


@pytest.mark.parametrize(("score", "level"), [
    (-3.0, "bad"), (0.0, "bad"), (19.99, "bad"), (20.0, "poor"), (39.99, "poor"), (40.0, "fair"),
    (59.99, "fair"), (60.0, "good"), (79.99, "good"), (80.0, "excellent"), (100.0, "excellent"), (150.0, "excellent"),
])
def test_level_of_uses_five_equal_bands_and_clamps(score, level):
    assert level_of(score) == level


def test_the_rater_and_the_file_report_name_levels_with_the_same_function():
    import engines.rater
    import stream.live.analysis
    import stream.live.offline

    assert engines.rater.level_of is level_of and stream.live.offline.level_of is level_of
    assert stream.live.analysis.level_of is level_of and LEVELS[-1] == "excellent"
