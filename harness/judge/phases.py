"""Where the time went: the phase of the step that grew, for a speed regression's message.

Each cell records its steps' phases (``measure/steps.py``: data, forward+backward, optimizer,
other; mean seconds per timed step).  Against the baseline's or the history window's, the
phases that grew are named, largest growth first, with their share of the step:
``optimizer +12.1 ms/step (+305%, now 24% of the step)``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from ..measure.vocabulary import PHASE_LABELS, PHASE_NAMES

GREW = 0.05  # a phase that moved less than this (relative) is not named


def _value(metrics: Mapping[str, Any], name: str) -> float | None:
    value = metrics.get(f"phase_{name}_s")
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None


def phase_changes(current: Mapping[str, Any], reference: Mapping[str, Any]) -> list[tuple[str, float, float, float]]:
    """(phase, seconds now, seconds then, share of the step now) for every phase both record."""
    now = {name: _value(current, name) for name in PHASE_NAMES}
    then = {name: _value(reference, name) for name in PHASE_NAMES}
    step = sum(v for v in now.values() if v is not None)
    return [(name, now[name], then[name], now[name] / step if step else 0.0)
            for name in PHASE_NAMES if now[name] is not None and then[name] is not None]


def _grown(current: Mapping[str, Any], reference: Mapping[str, Any]) -> list[tuple[str, float, float, float]]:
    rows = [(name, now, then, share) for name, now, then, share in phase_changes(current, reference)
            if now > then and (then <= 0 or (now - then) / then > GREW)]
    return sorted(rows, key=lambda row: row[1] - row[2], reverse=True)


def grown_phases(current: Mapping[str, Any], reference: Mapping[str, Any]) -> tuple[str, ...]:
    """The names of the phases that grew, largest growth first."""
    return tuple(row[0] for row in _grown(current, reference))


def where_it_grew(current: Mapping[str, Any], reference: Mapping[str, Any]) -> str:
    """The phases that grew, largest first; "" when neither side recorded phases or none grew."""
    rows = _grown(current, reference)
    parts = [f"{PHASE_LABELS[name]} {(now - then) * 1000:+.1f} ms/step "
             f"({'+inf' if then <= 0 else f'{(now - then) / then:+.0%}'}, now {share:.0%} of the step)"
             for name, now, then, share in rows]
    return ("grew: " + "; ".join(parts)) if parts else ""


def window_phases(runs: list[Any]) -> dict[str, float]:
    """The history window's mean of each phase, as a reference."""
    out = {}
    for name in PHASE_NAMES:
        values = [v for r in runs if (v := _value(r.metrics, name)) is not None]
        if values:
            out[f"phase_{name}_s"] = sum(values) / len(values)
    return out


def side_by_side(old: Mapping[str, Any], new: Mapping[str, Any]) -> str:
    """Both sides' phases in ms per step, ``old -> new``, the relative change where past
    ``GREW``: ``data 2.0 -> 2.1, fwd+bwd 30.1 -> 30.4, optimizer 10.0 -> 25.0 (+150%), other 0.5 -> 0.5``."""
    parts = []
    for name, now, then, _ in phase_changes(new, old):
        moved = (now - then) / then if then > 0 else 0.0
        parts.append(f"{PHASE_LABELS[name]} {then * 1000:.1f} -> {now * 1000:.1f}"
                     + (f" ({moved:+.0%})" if abs(moved) > GREW else ""))
    return ", ".join(parts)
