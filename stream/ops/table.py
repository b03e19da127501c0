"""The live terminal table `fvq serve --table` prints: one line per stream, redrawn every second."""

from __future__ import annotations

from typing import Any

from engines.families import FAMILIES

DIM_SHORT = tuple((f.name, f.short) for f in FAMILIES)  # (dimension, its column heading)


def render_table(streams: list[dict[str, Any]]) -> str:
    head = f"{'stream':<14}{'state':<8}{'fps':>6}{'kbit/s':>8}{'score':>7} {'level':<10}{'face':>5} " + " ".join(
        f"{s:>4}" for _, s in DIM_SHORT
    )
    lines = ["\x1b[H\x1b[2J" + head, "-" * len(head)]
    for s in streams:
        latest = s.get("latest") or {}
        dims = (latest.get("dimensions") or {}).get("frame", {})
        score = latest.get("score")
        lines.append(
            f"{s['name'][:13]:<14}{s['state']:<8}{s['fps']:>6.1f}{s['bitrate_bps'] / 1000:>8.0f}"
            f"{'' if score is None else f'{score:.1f}':>7} {latest.get('level') or '':<10}"
            f"{latest.get('face_presence', 0):>5.0%} "
            + " ".join(f"{dims[k]:>4.0f}" if k in dims else f"{'':>4}" for k, _ in DIM_SHORT)
        )
        rec = s.get("recommendation")
        if rec:
            lines.append(f"    -> {rec.get('cause')}: {rec.get('action')}")
    return "\n".join(lines) + "\n"
