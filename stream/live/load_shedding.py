"""Load shedding: how much analysis to skip, from how far the analysis loop is behind the live streams."""

from __future__ import annotations

SHED_LEVELS = ("none", "half the face embeddings", "half the embeddings and model frame encodings",
               "half the embeddings and model frame encodings, half the sampled frames")


class LoadShedder:
    """The load-shedding level from the analysis backlog: up a level while the backlog is over `backlog_s`
    and has not fallen since the last change (given `backlog_s` to act), down a level once it has stayed
    under a quarter of `backlog_s` for `recover_s`."""

    def __init__(self, backlog_s: float, recover_s: float, max_level: int = len(SHED_LEVELS) - 1) -> None:
        self.backlog_s, self.recover_s, self.max_level = backlog_s, recover_s, max_level
        self.level = 0
        self._changed = -float("inf")  # when the level last changed, and the backlog then
        self._changed_backlog = 0.0
        self._calm_since: float | None = None

    def update(self, backlog: float, now: float) -> int:
        if backlog > self.backlog_s:
            self._calm_since = None
            if (self.level < self.max_level and now - self._changed >= self.backlog_s
                    and backlog >= self._changed_backlog):
                self._set(self.level + 1, backlog, now)
        elif backlog < self.backlog_s / 4:
            if self._calm_since is None:
                self._calm_since = now
            if self.level > 0 and now - max(self._calm_since, self._changed) >= self.recover_s:
                self._set(self.level - 1, backlog, now)
        else:
            self._calm_since = None
        return self.level

    def _set(self, level: int, backlog: float, now: float) -> None:
        self.level, self._changed, self._changed_backlog = level, now, backlog
