"""An interactive, self-contained HTML report of every stored run.

    python -m harness report results/ [--output report.html] [--matrix NAME_OR_PATH]
    python -m harness report --store postgresql://... --output report.html

First on the page: the latest night's verdict table, one row per cell, sortable, with the
value, its baseline (or its gate window's median), the change, threshold, noise and
verdict, and a count line.  Then one chart per cell: samples/s, peak memory, accuracy and F1
over the runs in order, with the band and threshold of the gate's window (``band.py``), change
points (``changes.py``) and accepted segments (``accept.py``) marked, and a hover that
names each run, its date, the harness commit and the library versions; filters by
checkpoint, padding, batch size, precision and hardware; zoom is plotly's.  Last: every
run's environment and what changed from the run before.

The page is one file that opens offline: plotly's JavaScript (shipped inside the plotly
package) is inlined once; each chart is drawn from a compact data block (``charts.py``)
when it scrolls into view, so a history of 54 cells x 120 nights opens at once.  The page's
own script and style are package files, ``static/report.js`` and ``static/report.css``.
"""

from __future__ import annotations

import functools
import html
import json
import statistics
from importlib import resources
from pathlib import Path
from typing import Any

from ..judge.causes import group_by_cause
from ..judge.reproduce import reproduce_lines
from ..judge.window import Window
from ..measure.vocabulary import (
    ACCURACY,
    F1,
    LOSS_DETERMINISM,
    LOSS_MEAN,
    PHASE_NAMES,
    PRECISION_DEVIATION,
    THROUGHPUT,
    TIME_TO_QUALITY,
)
from ..results import CellResult, ResultsError
from ..store import Store, is_url, open_store
from ..store.files import FolderStore
from .band import GateSettings, cell_window, gate_settings
from .charts import AXES, SERIES, VERDICT_COLOURS, axis_value, chart_data, finite, quality_value, speed_finding
from .history import COLUMNS, frame_of
from .tables import peak_memory


def verdict_rows(latest: list[CellResult], windows: dict[str, tuple[Window | None, GateSettings]]) -> list[dict[str, Any]]:
    """The night's table: value, baseline (the verdict's, else the history's median), change,
    threshold, noise and verdict of samples/s, for the newest result of every cell."""
    rows = []
    for r in latest:
        finding = speed_finding(r)
        value = finite(r.metrics.get(THROUGHPUT))
        baseline = finite(finding.baseline) if finding else None
        source = "baseline" if baseline is not None else ""
        if baseline is None:
            window = windows[r.id][0]
            earlier = window.values(THROUGHPUT) if window is not None else []
            if earlier:
                baseline, source = statistics.median(earlier), "history median"
        change = finite(finding.change) if finding else None
        if change is None and value is not None and baseline:
            change = value / baseline - 1
        noise = finite(finding.noise) if finding else None
        if noise is None:
            noise = finite((r.samples.get("noise") or {}).get(THROUGHPUT))
        rows.append({
            "cell": r.id, "run": r.run_id, "verdict": r.verdict_word, "value": value, "baseline": baseline,
            "baseline_source": source, "change": change, "threshold": (finding.threshold if finding else None) or "",
            "noise": noise, "memory": peak_memory(r)[1], "accuracy": quality_value(r, ACCURACY),
            "f1": quality_value(r, F1), "note": (r.reason or (r.verdict.note if r.verdict is not None else ""))[:160],
            "phases": phase_text(r.metrics), "loss": finite(r.metrics.get(LOSS_MEAN)),
            "determinism": finite(r.metrics.get(LOSS_DETERMINISM)),
            "vs_fp32": finite(r.metrics.get(PRECISION_DEVIATION)), "to_quality": finite(r.metrics.get(TIME_TO_QUALITY)),
            **{axis: axis_value(r, axis) for axis in AXES},
        })
    return rows


def phase_text(metrics: dict[str, Any]) -> str:
    """Each phase's ms per timed step, ``2.1 / 30.4 / 10.0 / 0.5``; "" where none was recorded."""
    values = [finite(metrics.get(f"phase_{name}_s")) for name in PHASE_NAMES]
    return "" if all(v is None for v in values) else " / ".join("-" if v is None else f"{v * 1000:.1f}" for v in values)


def _causes(latest: list[CellResult]) -> str:
    causes = group_by_cause(latest)
    if not causes:
        return ""
    gpu = any(r.env.get("gpu_name") for r in latest)
    again = [reproduce_lines(" or ".join(c.cells), None, gpu=gpu, env_changes=list(c.software))[0] for c in causes]
    items = "".join(f"<li>{html.escape(c.line())}<br><code>{html.escape(line)}</code></li>"
                    for c, line in zip(causes, again))
    return f"<h3>By cause</h3><ul id='causes'>{items}</ul>"


def _fmt(value: float | None, spec: str) -> str:
    return "" if value is None else format(value, spec)


def _table(rows: list[dict[str, Any]]) -> str:
    head = [("cell", "s"), ("verdict", "s"), (SERIES["speed"], "n"), ("baseline", "n"), ("change", "n"),
            ("threshold", "s"), ("noise", "n"), (SERIES["memory"], "n"), (SERIES["accuracy"], "n"),
            (SERIES["f1"], "n"), ("ms/step: data, fwd+bwd, optimizer, other", "s"), ("mean loss", "n"),
            ("loss spread of repeats", "n"), ("loss vs fp32", "n"), ("s to quality", "n"), ("run", "s"), ("note", "s")]
    out = ["<table id='verdicts' class='sortable'><thead><tr>"
           + "".join(f"<th data-kind='{k}' class='{k}' title='click to sort'>{h}</th>" for h, k in head)
           + "</tr></thead><tbody>"]
    for r in rows:
        attrs = " ".join(f"data-{a}='{html.escape(str(r[a]), quote=True)}'" for a in AXES)
        verdict = r["verdict"] or "-"
        cells = [
            (r["cell"], f"<a href='#cell-{html.escape(r['cell'])}'>{html.escape(r['cell'])}</a>"),
            (verdict, f"<span class='v v-{html.escape(verdict)}'>{html.escape(verdict)}</span>"),
            (r["value"], _fmt(r["value"], ".2f")),
            (r["baseline"], _fmt(r["baseline"], ".2f") + (f" <small>({r['baseline_source']})</small>"
                                                         if r["baseline_source"] == "history median" else "")),
            (r["change"], _fmt(r["change"], "+.1%")),
            (r["threshold"], html.escape(str(r["threshold"]))),
            (r["noise"], _fmt(r["noise"], ".1%")),
            (r["memory"], _fmt(r["memory"] / 2**20 if r["memory"] is not None else None, ".0f")),
            (r["accuracy"], _fmt(r["accuracy"], ".3f") if r["accuracy"] is not None else "chance" if r["value"] else ""),
            (r["f1"], _fmt(r["f1"], ".3f")),
            (r["phases"], html.escape(r["phases"])),
            (r["loss"], _fmt(r["loss"], ".4f")),
            (r["determinism"], _fmt(r["determinism"], ".2g")),
            (r["vs_fp32"], _fmt(r["vs_fp32"], ".1%")),
            (r["to_quality"], _fmt(r["to_quality"], ".0f")),
            (r["run"], html.escape(r["run"])),
            (r["note"], html.escape(r["note"])),
        ]
        out.append(f"<tr {attrs}>" + "".join(
            f"<td class='{kind}' data-sort='{html.escape('' if key is None else str(key), quote=True)}'>{text}</td>"
            for (key, text), (_, kind) in zip(cells, head)) + "</tr>")
    out.append("</tbody></table>")
    return "\n".join(out)


def count_line(rows: list[dict[str, Any]]) -> str:
    counts: dict[str, int] = {}
    for r in rows:
        counts[r["verdict"] or "not judged"] = counts.get(r["verdict"] or "not judged", 0) + 1
    regressed = counts.get("regression", 0)
    rest = ", ".join(f"{n} {v}" for v, n in sorted(counts.items()) if v != "regression")
    return f"{regressed} of {len(rows)} cells regressed" + (f"; {rest}" if rest else "")


def _env_table(runs: list[tuple[dict[str, Any], list[CellResult]]]) -> str:
    from ..judge.gate import env_changes

    out = ["<table id='environments'><thead><tr><th>run</th><th>finished</th><th>state</th><th>hardware</th>"
           "<th>torch</th><th>transformers</th><th>driver / CUDA</th><th>harness commit</th>"
           "<th>what changed from the run before</th></tr></thead><tbody>"]
    previous: dict[str, Any] | None = None
    for manifest, results in runs:
        env = manifest.get("env") or (results[0].env if results else {})
        libs = env.get("libraries") or {}
        changed = env_changes(previous, env) if previous and env else []
        shown = "; ".join(changed[:6]) + (f"; and {len(changed) - 6} more" if len(changed) > 6 else "")
        out.append("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in (
            manifest["run_id"], manifest.get("finished_at") or "", manifest.get("state") or "",
            env.get("hardware_key") or "", libs.get("torch") or "", libs.get("transformers") or "",
            " / ".join(str(x) for x in (env.get("gpu_driver"), env.get("cuda_version")) if x) or "-",
            str(env.get("harness_commit") or "")[:12], shown)) + "</tr>")
        if env:
            previous = env
    out.append("</tbody></table>")
    return "\n".join(out)


def _filters(rows: list[dict[str, Any]]) -> str:
    out = ["<div id='filters'>Filter: "]
    for axis in AXES:
        values = sorted({str(r[axis]) for r in rows}, key=lambda v: (len(v), v))
        options = "".join(f"<option>{html.escape(v)}</option>" for v in values)
        out.append(f"<label>{axis.replace('_key', '')} <select data-axis='{axis}'><option value=''>all</option>"
                   f"{options}</select></label> ")
    out.append("<span id='shown'></span></div>")
    return "".join(out)


@functools.cache
def static_text(name: str) -> str:
    """A file of ``harness/report/static``, read once: the page's own script and style."""
    return resources.files(__package__).joinpath("static", name).read_text(encoding="utf-8")


def build_report(source: Store | str | Path, *, results_dir: str | Path | None = None, matrix: str | Path | None = None,
                 matrices: Path | None = None) -> str:
    """The report of every run in ``source``, a results folder or a database URL.  Accepted
    changes come from ``results_dir`` (the folder itself when ``source`` is one); the gate's
    window settings from ``matrix`` (a file, or NAME in ``matrices``), else from the matrix
    file each run names in ``matrices`` (``band.py``)."""
    from plotly.offline import get_plotlyjs

    from ..judge.changes import find_changes

    store = source if isinstance(source, Store) else open_store(source)
    if results_dir is None and isinstance(store, FolderStore):
        results_dir = store.results_dir
    runs = store.runs()
    frame = frame_of(runs)
    if frame.empty and store.unreadable:
        raise ResultsError(f"{store.location}: no readable stored run to report on; {store.skipped_line()}")
    if frame.empty:
        raise ResultsError(f"{store.location}: no stored run to report on (expected runs/<run-id>/run.json)")
    results = [r for _, rs in runs for r in rs]
    history: dict[str, list[CellResult]] = {}
    for r in results:
        history.setdefault(r.id, []).append(r)
    latest = sorted((cell[-1] for cell in history.values()), key=lambda r: r.id)
    accepted = _read_accepted(results_dir)
    settings = gate_settings(runs, matrix, matrices)
    matrix_of = {m["run_id"]: m.get("matrix") for m, _ in runs}
    windows = {}
    for cell_id, cell in history.items():
        gate = settings[matrix_of[cell[-1].run_id]]
        windows[cell_id] = (cell_window(cell, gate, accepted if isinstance(accepted, list) else []), gate)
    rows = verdict_rows(latest, windows)
    data = chart_data(runs, find_changes(results), accepted if isinstance(accepted, list) else [], windows)
    latest_run, latest_results = next(((m, rs) for m, rs in reversed(runs) if rs), runs[-1])
    env = latest_run.get("env") or (latest_results[0].env if latest_results else {})
    libs = env.get("libraries") or {}
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>trainer-bench report</title>",
        f"<style>{static_text('report.css')}"
        + "".join(f".v-{v}{{background:{c}}}" for v, c in VERDICT_COLOURS.items()) + "</style>",
        f"<script>{offline_js(get_plotlyjs())}</script></head><body>",
        "<h1>trainer-bench report</h1>",
        f"<p>{len(runs)} runs, {len(history)} cells, from {html.escape(store.location)}. Latest run: "
        f"<b>{html.escape(latest_run['run_id'])}</b> ({html.escape(str(env.get('hardware_key')))}, torch "
        f"{html.escape(str(libs.get('torch')))}, transformers {html.escape(str(libs.get('transformers')))}, harness "
        f"{html.escape(str(env.get('harness_commit'))[:12])}).</p>",
    ]
    if latest_run.get("state") != "complete":
        parts.append(f"<p class='partial' id='partial'>The latest run is <b>{html.escape(str(latest_run.get('state')))}"
                     "</b>: it was interrupted or is still running; the cells below are the ones that finished.</p>")
    if store.unreadable:
        parts.append(f"<p class='partial' id='unreadable'>{len(store.unreadable)} stored results could not be read "
                     "and are left out: " + html.escape("; ".join(store.unreadable[:5])) + "</p>")
    parts += ["<h2>Latest verdicts</h2>", f"<p class='count' id='count'>{html.escape(count_line(rows))}</p>",
              "<p>The newest result of every cell (samples/s against its baseline or, where it has none, the median "
              "of its gate window), and the run it came from. Click a column to sort.</p>",
              _causes(latest), _filters(rows), _table(rows)]
    if isinstance(accepted, str):
        parts.append(f"<p class='partial'>{html.escape(accepted)}</p>")
    elif accepted:
        parts.append(_accepted_table(accepted))
    parts.append("<h2>History of every cell</h2><p>Runs in order; hover a point for its run, date, harness commit "
                 "and library versions. Shaded: the prediction band of the gate's window, the good runs the newest "
                 "result was judged against (drawn from 5 runs on, as the gate judges by history); dotted red: the "
                 "threshold from the window's mean; dashed orange: a change point; green: an accepted change. "
                 "Drag to zoom, double-click to reset.</p>")
    parts.append("<p id='gate-window'>The gate's window: " + html.escape("; ".join(
        f"matrix {name or '(none named)'}: {gate.describe()}" for name, gate in settings.items())) + ".</p>")
    for cell_id, cell in sorted(data["cells"].items()):
        attrs = " ".join(f"data-{a}='{html.escape(str(cell[a]), quote=True)}'" for a in AXES)
        panels = 1 + sum(cell[k] is not None for k in ("memory", "accuracy", "f1"))
        parts.append(f"<div class='cellbox' id='cell-{html.escape(cell_id)}' {attrs}>"
                     f"<div class='chart' style='min-height:{140 + 150 * panels}px' "
                     f"data-cell='{html.escape(cell_id, quote=True)}'></div></div>")
    parts += ["<h2 id='env'>Environments</h2>", _env_table(runs)]
    parts.append("<h2>Columns of the data</h2><ul>")
    parts += [f"<li><code>{name}</code>: {html.escape(text)}</li>" for name, text in COLUMNS.items()]
    parts.append("</ul>")
    parts.append(f"<script type='application/json' id='chart-data'>{_json(data)}</script>")
    parts.append(f"<script>{static_text('report.js')}</script></body></html>")
    return "\n".join(parts)


def offline_js(source: str) -> str:
    """plotly.js with the remote links it carries for map attributions and its logo (never
    shown here: no map, no logo) written with an escaped first letter, ``"\\x68ttps://"``:
    the same string when the script runs, and no ``href="https://...`` in the file, which
    opens offline and holds no remote ``src`` or ``href``."""
    import re

    return re.sub(r"""((?:src|href)\s*=\s*\\?["'`]?)h(ttps?:)""", lambda m: m.group(1) + "\\x68" + m.group(2), source)


def _json(data: Any) -> str:
    return json.dumps(data, separators=(",", ":"), allow_nan=False).replace("</", "<\\/")


def _read_accepted(results_dir: str | Path | None) -> list[dict[str, Any]] | str:
    from ..judge.accept import read_accepted

    if results_dir is None:
        return []
    try:
        return read_accepted(results_dir)
    except ResultsError as exc:
        return str(exc)


def _accepted_table(entries: list[dict[str, Any]]) -> str:
    rows = "".join(
        f"<tr><td>{html.escape(e['cell'])}</td><td>{html.escape(e['from_run'])}</td><td>{html.escape(e.get('why', ''))}"
        f"</td><td>{html.escape(str(e.get('at', '')))}</td><td>{html.escape(str(e.get('by', '')))}</td></tr>"
        for e in entries)
    return (f"<details id='accepted'><summary>Accepted changes ({len(entries)}): each cell's history window starts "
            "again at the first run of its accepted new level</summary><table><tr><th>cell</th><th>from run</th>"
            f"<th>why</th><th>accepted at</th><th>by</th></tr>{rows}</table></details>")


def write_report(source: Store | str | Path, output: str | Path | None = None, *, csv_path: str | Path | None = None,
                 results_dir: str | Path | None = None, matrix: str | Path | None = None,
                 matrices: Path | None = None) -> Path:
    """Write the report of ``source`` (a results folder, a database URL, or either opened as
    a ``Store``, whose ``unreadable`` then says what was left out): to ``output``, by
    default ``report.html`` in the results folder."""
    if output is None:
        if isinstance(source, FolderStore):
            output = source.results_dir / "report.html"
        elif isinstance(source, Store) or is_url(source):
            where = source.location if isinstance(source, Store) else source
            raise ResultsError(f"{where}: say where the report goes (--output FILE) when it is built from a database")
        else:
            output = Path(source) / "report.html"
    output = Path(output)
    output.write_text(build_report(source, results_dir=results_dir, matrix=matrix, matrices=matrices), encoding="utf-8")
    if csv_path:
        from .history import load_frame

        load_frame(source).to_csv(csv_path, index=False)
    return output
