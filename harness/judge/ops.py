"""Which operators grew: two profiles' tables (``measure/profile.py``) side by side.

Each table's times are per profiled step; an operator is held by its self time on the device
where the profile has one (a GPU's kernels), else on the CPU.  The operators whose time per
step grew most are named with their growth and their share of the new step:
``aten::addmm +3.2 ms/step (+40%, now 22% of the step)``.
"""

from __future__ import annotations

from typing import Any

TOP = 5
MIN_GROWTH_US = 50.0  # per step: smaller moves are the profiler's own noise


def per_step(table: dict[str, Any]) -> dict[str, float]:
    """Each operator's self time per profiled step, in microseconds."""
    key = "self_device_us" if table.get("device") == "cuda" else "self_cpu_us"
    steps = max(int(table.get("steps") or 1), 1)
    return {row["name"]: float(row.get(key) or 0.0) / steps for row in table.get("ops") or []}


def ops_that_grew(old: dict[str, Any], new: dict[str, Any], top: int = TOP) -> list[str]:
    """The ``top`` operators whose time per step grew most from ``old`` to ``new``, largest first."""
    before, after = per_step(old), per_step(new)
    step_us = float(new.get("seconds") or 0.0) * 1e6 / max(int(new.get("steps") or 1), 1)
    grown = sorted(((name, now - before.get(name, 0.0)) for name, now in after.items()), key=lambda r: -r[1])
    out = []
    for name, delta in grown[:top]:
        if delta < MIN_GROWTH_US:
            break
        then = before.get(name, 0.0)
        moved = f"{delta / then:+.0%}" if then > 0 else "new"
        share = f", now {after[name] / step_us:.0%} of the step" if step_us else ""
        out.append(f"{name} {delta / 1000:+.1f} ms/step ({moved}{share})")
    return out


def profile_line(old: dict[str, Any] | None, new: dict[str, Any] | None, other: str) -> str:
    """One line for a message: the operators that grew against ``other``'s profile, or why none can be named."""
    if not new:
        return ""
    if not old:
        return (f"profiled ({new.get('steps')} steps); {other} has no profile to hold it against "
                "(measure one with --profile --update-baselines)")
    grown = ops_that_grew(old, new)
    return (f"operators that grew against {other}'s profile: " + "; ".join(grown)) if grown else (
        f"no operator grew by {MIN_GROWTH_US / 1000:g} ms/step or more against {other}'s profile")
