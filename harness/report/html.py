"""An interactive, self-contained HTML report of every stored run.

    python -m harness report results/ [--output report.html]
    python -m harness report --store postgresql://... --output report.html

First on the page: the latest night's verdict table, one row per cell, sortable, with the
value, its baseline (or history median), the change, threshold, noise and verdict, and a
count line.  Then one chart per cell: samples/s, peak memory, accuracy and F1 over the
runs in order, with the history's 99% prediction band and the threshold drawn, change
points (``changes.py``) and accepted segments (``accept.py``) marked, and a hover that
names each run, its date, the harness commit and the library versions; filters by
checkpoint, padding, batch size, precision and hardware; zoom is plotly's.  Last: every
run's environment and what changed from the run before.

The page is one file that opens offline: plotly's JavaScript (shipped inside the plotly
package) is inlined once; each chart is drawn from a compact data block when it scrolls
into view, so a history of 54 cells x 120 nights opens at once.
"""

from __future__ import annotations

import html
import json
import math
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..judge.verdict import Finding
from ..measure.vocabulary import ACCURACY, F1, PEAK_MEMORY, THROUGHPUT, label_of
from ..results import CellResult, ResultsError
from ..store import is_url, open_store
from .history import COLUMNS, frame_of
from .tables import peak_memory

VERDICT_COLOURS = {"regression": "#c62828", "error": "#8e0000", "improvement": "#00897b", "pass": "#2e7d32",
                   "suspect": "#ef6c00", "disturbed": "#6a1b9a", "new": "#1565c0", "skipped": "#757575"}
AXES = ("checkpoint", "padding", "batch_size", "precision", "hardware_key")
# The series each chart draws, and the label of each (its panel's title).
SERIES = {"speed": label_of(THROUGHPUT), "memory": f"{label_of(PEAK_MEMORY)} MiB", "accuracy": label_of(ACCURACY),
          "f1": label_of(F1)}
BAND_RUNS = 20  # the gate's window


def _speed_finding(result: CellResult) -> Finding | None:
    return next((f for f in result.verdict.findings if f.metric == THROUGHPUT), None) if result.verdict is not None else None


def _num(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) else None


def _quality_value(result: CellResult, metric: str) -> float | None:
    if result.spec.weights == "random":
        return None  # chance level: no result
    return _num(result.metrics.get(metric))


def _band(values: Sequence[float]) -> tuple[float, float] | None:
    from ..judge.window import prediction_interval

    values = [v for v in values if v is not None]
    if len(values) < 5:
        return None
    interval = prediction_interval(values[-BAND_RUNS:], 0.99)
    return interval.low, interval.high


def verdict_rows(latest: list[CellResult], history: dict[str, list[CellResult]]) -> list[dict[str, Any]]:
    """The night's table: value, baseline (the verdict's, else the history's median), change,
    threshold, noise and verdict of samples/s, for the newest result of every cell."""
    rows = []
    for r in latest:
        finding = _speed_finding(r)
        value = _num(r.metrics.get(THROUGHPUT))
        baseline = _num(finding.baseline) if finding else None
        source = "baseline" if baseline is not None else ""
        if baseline is None:
            earlier = [_num(h.metrics.get(THROUGHPUT)) for h in history.get(r.id, []) if h.run_id < r.run_id and h.ok]
            earlier = [v for v in earlier if v is not None][-BAND_RUNS:]
            if earlier:
                baseline, source = statistics.median(earlier), "history median"
        change = _num(finding.change) if finding else None
        if change is None and value is not None and baseline:
            change = value / baseline - 1
        noise = _num(finding.noise) if finding else None
        if noise is None:
            noise = _num((r.samples.get("noise") or {}).get(THROUGHPUT))
        rows.append({
            "cell": r.id, "run": r.run_id, "verdict": r.verdict_word, "value": value, "baseline": baseline,
            "baseline_source": source, "change": change, "threshold": (finding.threshold if finding else None) or "",
            "noise": noise, "memory": peak_memory(r)[1], "accuracy": _quality_value(r, ACCURACY),
            "f1": _quality_value(r, F1), "note": (r.reason or (r.verdict.note if r.verdict is not None else ""))[:160],
            **{axis: _axis(r, axis) for axis in AXES},
        })
    return rows


def _axis(result: CellResult, axis: str) -> str:
    if axis == "hardware_key":
        return str(result.env.get("hardware_key") or "")
    if axis == "checkpoint":
        return result.spec.checkpoint_name
    return str(getattr(result.spec, axis))


def _fmt(value: float | None, spec: str) -> str:
    return "" if value is None else format(value, spec)


def _table(rows: list[dict[str, Any]]) -> str:
    head = [("cell", "s"), ("verdict", "s"), (SERIES["speed"], "n"), ("baseline", "n"), ("change", "n"),
            ("threshold", "s"), ("noise", "n"), (SERIES["memory"], "n"), (SERIES["accuracy"], "n"), (SERIES["f1"], "n"),
            ("run", "s"),
            ("note", "s")]
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


def chart_data(runs: list[tuple[dict[str, Any], list[CellResult]]], changes: list[Any],
               accepted: list[dict[str, Any]]) -> dict[str, Any]:
    """Everything the charts draw, compactly: runs once, then per cell the run indices and
    values, the band, the threshold line, change points and accepted runs."""
    run_index = {m["run_id"]: i for i, (m, _) in enumerate(runs)}
    run_rows = []
    for manifest, results in runs:
        env = manifest.get("env") or (results[0].env if results else {})
        libs = env.get("libraries") or {}
        run_rows.append([manifest["run_id"], str(manifest.get("finished_at") or manifest.get("started_at") or ""),
                         str(env.get("harness_commit") or "")[:12], str(libs.get("torch") or ""),
                         str(libs.get("transformers") or "")])
    cells: dict[str, dict[str, Any]] = {}
    for _, results in runs:
        for r in results:
            cell = cells.setdefault(r.id, {"x": [], "speed": [], "memory": [], "accuracy": [], "f1": [], "verdict": [],
                                           **{a: _axis(r, a) for a in AXES}})
            cell["x"].append(run_index[r.run_id])
            cell["speed"].append(_num(r.metrics.get(THROUGHPUT)))
            memory = peak_memory(r)[1]  # reserved on a GPU, RSS on a CPU
            cell["memory"].append(round(memory / 2**20, 1) if memory is not None else None)
            cell["accuracy"].append(_quality_value(r, ACCURACY))
            cell["f1"].append(_quality_value(r, F1))
            cell["verdict"].append(r.verdict_word)
            finding = _speed_finding(r)
            cell["threshold"] = (finding.threshold if finding else None) or cell.get("threshold")
    for cell_id, cell in cells.items():
        # The gate's window: good runs since the cell's last accepted change of level.
        since = max((run_index[e["from_run"]] for e in accepted
                     if e.get("cell") == cell_id and e.get("from_run") in run_index), default=-1)
        good_points = [(x, v) for x, v, verdict in zip(cell["x"], cell["speed"], cell["verdict"]) if v is not None
                       and x >= since and verdict not in ("regression", "error", "disturbed", "suspect")]
        good = [v for _, v in good_points]
        band = _band(good)  # None under 5 runs, as the gate
        cell["band"] = band
        cell["band_from"] = good_points[-BAND_RUNS:][0][0] if band else None
        threshold = _threshold_fraction(cell.get("threshold"))
        if good and threshold is not None:
            cell["threshold_line"] = statistics.median(good[-BAND_RUNS:]) * (1 + threshold)
        cell["changes"] = [[run_index.get(c.first_run), c.metric, round(c.change, 4)] for c in changes
                           if c.cell == cell_id and c.first_run in run_index]
        cell["accepted"] = [[run_index.get(e["from_run"]), e.get("why", "")] for e in accepted
                            if e.get("cell") == cell_id and e.get("from_run") in run_index]
        for key in ("memory", "accuracy", "f1"):
            if all(v is None for v in cell[key]):
                cell[key] = None
    return {"runs": run_rows, "labels": SERIES, "cells": cells}


def _threshold_fraction(text: str | None) -> float | None:
    """The signed relative limit of a threshold expression (-0.15 for ``...:-15%``)."""
    from ..judge.thresholds import Threshold, ThresholdError

    try:
        threshold = Threshold.parse(text) if text else None
    except ThresholdError:
        return None
    return threshold.bad_direction * threshold.limit if threshold is not None and threshold.relative else None


def _filters(rows: list[dict[str, Any]]) -> str:
    out = ["<div id='filters'>Filter: "]
    for axis in AXES:
        values = sorted({str(r[axis]) for r in rows}, key=lambda v: (len(v), v))
        options = "".join(f"<option>{html.escape(v)}</option>" for v in values)
        out.append(f"<label>{axis.replace('_key', '')} <select data-axis='{axis}'><option value=''>all</option>"
                   f"{options}</select></label> ")
    out.append("<span id='shown'></span></div>")
    return "".join(out)


SCRIPT = r"""
const DATA = JSON.parse(document.getElementById('chart-data').textContent);
const COLOURS = __COLOURS__;
function hover(cell) {
  return cell.x.map(i => { const r = DATA.runs[i]; return [r[0], r[1], r[2], r[3], r[4]]; });
}
function draw(div) {
  const cell = DATA.cells[div.dataset.cell];
  const rows = Object.entries(DATA.labels).filter(([key]) => key === 'speed' || cell[key]);
  const n = rows.length, gap = 0.04, h = (1 - gap * (n - 1)) / n;
  const custom = hover(cell);
  const tpl = '%{y}<br>run %{customdata[0]}<br>%{customdata[1]}<br>harness %{customdata[2]}' +
              '<br>torch %{customdata[3]}, transformers %{customdata[4]}<extra></extra>';
  const traces = [], shapes = [], annotations = [];
  const layout = {height: 140 + 150 * n, margin: {l: 60, r: 10, t: 30, b: 40}, showlegend: false,
                  hovermode: 'closest', title: {text: div.dataset.cell, font: {size: 13}}};
  rows.forEach(([key, label], k) => {
    const axis = k === 0 ? '' : String(k + 1);
    const top = 1 - k * (h + gap);
    layout['yaxis' + axis] = {domain: [top - h, top], title: {text: label, font: {size: 11}}};
    const every = Math.max(1, Math.ceil(cell.x.length / 12)), ticks = cell.x.filter((_, j) => j % every === 0);
    layout['xaxis' + axis] = {anchor: 'y' + axis, matches: k === 0 ? undefined : 'x', showticklabels: k === n - 1,
                              tickvals: ticks, ticktext: ticks.map(i => DATA.runs[i][0].slice(0, 15)),
                              tickangle: -30, tickfont: {size: 9}};
    traces.push({x: cell.x, y: cell[key], xaxis: 'x' + axis, yaxis: 'y' + axis, mode: 'lines+markers',
                 type: 'scatter', customdata: custom, hovertemplate: tpl,
                 marker: {size: 6, color: cell.verdict.map(v => COLOURS[v] || '#1565c0')}, line: {color: '#90a4ae'}});
    const last = cell.x[cell.x.length - 1] + 0.5, from = (cell.band_from ?? cell.x[0]) - 0.5;
    if (k === 0 && cell.band) {
      shapes.push({type: 'rect', xref: 'x', yref: 'y', x0: from, x1: last,
                   y0: cell.band[0], y1: cell.band[1], fillcolor: 'rgba(21,101,192,0.10)', line: {width: 0}});
      annotations.push({xref: 'x', yref: 'y', x: from, y: cell.band[1], text: '99% band of the last 20 good runs',
                        showarrow: false, xanchor: 'left', yanchor: 'bottom', font: {size: 9, color: '#1565c0'}});
    }
    if (k === 0 && cell.threshold_line) {
      shapes.push({type: 'line', xref: 'x', yref: 'y', x0: from, x1: last, y0: cell.threshold_line,
                   y1: cell.threshold_line, line: {color: '#c62828', dash: 'dot', width: 1}});
      annotations.push({xref: 'x', yref: 'y', x: last, y: cell.threshold_line, text: 'threshold ' + cell.threshold,
                        showarrow: false, xanchor: 'right', yanchor: 'top', font: {size: 9, color: '#c62828'}});
    }
  });
  cell.changes.forEach(([i, metric, change]) => {
    shapes.push({type: 'line', xref: 'x', yref: 'paper', x0: i - 0.5, x1: i - 0.5, y0: 0, y1: 1,
                 line: {color: '#ef6c00', dash: 'dash', width: 1.5}});
    annotations.push({xref: 'x', yref: 'paper', x: i - 0.5, y: 1, text: 'change ' + metric.replace(/_/g, ' ') + ' ' +
                      (change * 100).toFixed(1) + '%', showarrow: false, yanchor: 'bottom', font: {size: 9, color: '#ef6c00'}});
  });
  cell.accepted.forEach(([i, why]) => {
    shapes.push({type: 'line', xref: 'x', yref: 'paper', x0: i - 0.5, x1: i - 0.5, y0: 0, y1: 1,
                 line: {color: '#2e7d32', width: 2}});
    annotations.push({xref: 'x', yref: 'paper', x: i - 0.5, y: 0, text: 'accepted', hovertext: why,
                      showarrow: false, yanchor: 'top', font: {size: 9, color: '#2e7d32'}});
  });
  layout.shapes = shapes; layout.annotations = annotations;
  Plotly.newPlot(div, traces, layout, {displaylogo: false, responsive: true});
  div.dataset.drawn = '1';
}
const seen = new IntersectionObserver(entries => entries.forEach(e => {
  if (e.isIntersecting && !e.target.dataset.drawn) { draw(e.target); seen.unobserve(e.target); }
}), {rootMargin: '400px'});
document.querySelectorAll('.chart').forEach(div => seen.observe(div));
function applyFilters() {
  const wanted = {};
  document.querySelectorAll('#filters select').forEach(s => { if (s.value) wanted[s.dataset.axis] = s.value; });
  const match = el => Object.entries(wanted).every(([a, v]) => el.getAttribute('data-' + a) === v);
  let shown = 0;
  document.querySelectorAll('#verdicts tbody tr').forEach(tr => { tr.style.display = match(tr) ? '' : 'none'; });
  document.querySelectorAll('.cellbox').forEach(box => {
    const ok = match(box); box.style.display = ok ? '' : 'none'; if (ok) shown++;
    const div = box.querySelector('.chart');
    if (ok && !div.dataset.drawn && box.getBoundingClientRect().top < innerHeight) draw(div);
  });
  document.getElementById('shown').textContent = shown + ' of ' + document.querySelectorAll('.cellbox').length + ' cells shown';
}
document.querySelectorAll('#filters select').forEach(s => s.addEventListener('change', applyFilters));
document.querySelectorAll('table.sortable th').forEach((th, col) => th.addEventListener('click', () => {
  const body = th.closest('table').tBodies[0], rows = [...body.rows];
  const dir = th.dataset.dir === 'asc' ? -1 : 1; th.dataset.dir = dir === 1 ? 'asc' : 'desc';
  const key = r => r.cells[col].dataset.sort;
  rows.sort((a, b) => th.dataset.kind === 'n'
    ? dir * ((parseFloat(key(a)) || -Infinity) - (parseFloat(key(b)) || -Infinity))
    : dir * key(a).localeCompare(key(b)));
  rows.forEach(r => body.appendChild(r));
}));
applyFilters();
document.body.dataset.ready = '1';
"""

STYLE = """
body{font-family:system-ui,sans-serif;margin:1.5em;max-width:1200px}
table{border-collapse:collapse;font-size:12px;margin:.5em 0}
td,th{border:1px solid #ddd;padding:3px 7px;text-align:left;vertical-align:top}
td.n,th.n{text-align:right;font-variant-numeric:tabular-nums}
th{background:#f5f5f5;cursor:pointer}
.v{font-weight:bold;padding:1px 5px;border-radius:3px;color:#fff}
.partial{background:#fff3e0;border:1px solid #fb8c00;padding:8px}
.count{font-size:15px;font-weight:bold}
#filters{position:sticky;top:0;background:#fff;padding:6px 0;border-bottom:1px solid #ddd;z-index:5}
.cellbox{border-top:1px solid #eee;padding-top:4px}
"""


def build_report(source: str | Path, *, results_dir: str | Path | None = None) -> str:
    """The report of every run in ``source``, a results folder or a database URL.  Accepted
    changes come from ``results_dir`` (the folder itself when ``source`` is one)."""
    from plotly.offline import get_plotlyjs

    from ..judge.changes import find_changes

    store = open_store(source)
    if results_dir is None and not is_url(source):
        results_dir = Path(source)
    runs = store.runs()
    frame = frame_of(runs)
    if frame.empty:
        raise ResultsError(f"{store.location}: no stored run to report on (expected runs/<run-id>/run.json)")
    results = [r for _, rs in runs for r in rs]
    history: dict[str, list[CellResult]] = {}
    for r in results:
        history.setdefault(r.id, []).append(r)
    latest = sorted((cell[-1] for cell in history.values()), key=lambda r: r.id)
    rows = verdict_rows(latest, history)
    accepted = _read_accepted(results_dir)
    data = chart_data(runs, find_changes(results), accepted if isinstance(accepted, list) else [])
    latest_run, latest_results = next(((m, rs) for m, rs in reversed(runs) if rs), runs[-1])
    env = latest_run.get("env") or (latest_results[0].env if latest_results else {})
    libs = env.get("libraries") or {}
    colours = {v: c for v, c in VERDICT_COLOURS.items()}
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>trainer-bench report</title>",
        f"<style>{STYLE}" + "".join(f".v-{v}{{background:{c}}}" for v, c in VERDICT_COLOURS.items()) + "</style>",
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
              "<p>The newest result of every cell (samples/s against its baseline or, where it was judged against "
              "its history, the history's median), and the run it came from. Click a column to sort.</p>",
              _filters(rows), _table(rows)]
    if isinstance(accepted, str):
        parts.append(f"<p class='partial'>{html.escape(accepted)}</p>")
    elif accepted:
        parts.append(_accepted_table(accepted))
    parts.append("<h2>History of every cell</h2><p>Runs in order; hover a point for its run, date, harness commit "
                 "and library versions. Shaded: the 99% prediction band of the last 20 good runs; dotted red: the "
                 "threshold below the history's median; dashed orange: a change point; green: an accepted change. "
                 "Drag to zoom, double-click to reset.</p>")
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
    parts.append("<script>" + SCRIPT.replace("__COLOURS__", json.dumps(colours)) + "</script></body></html>")
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


def write_report(source: str | Path, output: str | Path | None = None, *, csv_path: str | Path | None = None,
                 results_dir: str | Path | None = None) -> Path:
    """Write the report of ``source`` (a results folder or a database URL): to ``output``,
    by default ``report.html`` in the results folder."""
    if output is None:
        if is_url(source):
            raise ResultsError(f"{source}: say where the report goes (--output FILE) when it is built from a database")
        output = Path(source) / "report.html"
    output = Path(output)
    output.write_text(build_report(source, results_dir=results_dir), encoding="utf-8")
    if csv_path:
        from .history import load_frame

        load_frame(source).to_csv(csv_path, index=False)
    return output
