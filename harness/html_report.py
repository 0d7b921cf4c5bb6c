"""A self-contained HTML report of every stored run: verdicts, trends, padding, memory, quality.

    python -m harness report results/

Charts are matplotlib PNGs embedded as data URIs, so the page opens offline, attached to
a CI run or mailed around.
"""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path

import pandas as pd

from .baselines import load_baseline
from .history import COLUMNS, load_frame
from .results import ResultsError
from .store import is_url, open_store

VERDICT_COLOURS = {"regression": "#c62828", "error": "#c62828", "improvement": "#00897b", "pass": "#2e7d32",
                   "suspect": "#ef6c00", "disturbed": "#6a1b9a", "new": "#1565c0", "skipped": "#757575"}


def _png(fig) -> str:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _figure(width: float, height: float):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(figsize=(width, height))


def trend_chart(frame: pd.DataFrame, cell_id: str, baseline: float | None) -> str:
    fig, ax = _figure(6.5, 2.6)
    rows = frame[(frame.cell_id == cell_id) & frame.train_samples_per_s.notna()]
    ax.plot(rows.finished_at, rows.train_samples_per_s, marker="o", color="#1565c0", label="train samples/s")
    bad = rows[rows.verdict == "regression"]
    if len(bad):
        ax.scatter(bad.finished_at, bad.train_samples_per_s, marker="x", s=90, color="#c62828", zorder=3, label="regression")
    if baseline is not None:
        ax.axhline(baseline, color="#555", linestyle="--", linewidth=1, label="baseline")
    ax.set_title(cell_id, fontsize=9)
    ax.set_ylabel("samples/s")
    ax.tick_params(axis="x", labelrotation=20, labelsize=7)
    ax.legend(fontsize=7, loc="lower left")
    ax.grid(alpha=0.3)
    return _png(fig)


def bar_chart(latest: pd.DataFrame, column: str, title: str, scale: float = 1.0, unit: str = "") -> str | None:
    rows = latest[latest[column].notna()]
    if rows.empty:
        return None
    fig, ax = _figure(7.5, 0.35 * len(rows) + 1.2)
    ax.barh(rows.cell_id, rows[column] / scale, color="#5c6bc0")
    for y, value in enumerate(rows[column] / scale):
        ax.text(value, y, f" {value:.2f}{unit}", va="center", fontsize=7)
    ax.set_title(title, fontsize=10)
    ax.tick_params(axis="y", labelsize=7)
    ax.invert_yaxis()
    ax.grid(axis="x", alpha=0.3)
    return _png(fig)


def quality_chart(latest: pd.DataFrame) -> str | None:
    rows = latest[latest.eval_accuracy.notna() & latest.quality_reference.notna()]
    if rows.empty:
        return None
    fig, ax = _figure(7.5, 0.5 * len(rows) + 1.4)
    for y, (_, row) in enumerate(rows.iterrows()):
        ax.plot([row.quality_lower, row.quality_reference], [y, y], color="#9e9e9e", linewidth=8, alpha=0.5,
                label="band (lower edge to reference)" if y == 0 else None)
        ax.plot(row.quality_reference, y, marker="|", markersize=16, color="#424242", label="reference" if y == 0 else None)
        colour = VERDICT_COLOURS["regression"] if row.eval_accuracy * 100 < row.quality_lower else VERDICT_COLOURS["pass"]
        ax.plot(row.eval_accuracy * 100, y, marker="o", color=colour, label="measured accuracy" if y == 0 else None)
    ax.set_yticks(range(len(rows)), rows.cell_id, fontsize=7)
    ax.set_xlabel("validation accuracy, points")
    ax.set_title("Accuracy against reference and band", fontsize=10)
    ax.legend(fontsize=7)
    ax.grid(axis="x", alpha=0.3)
    return _png(fig)


def _table(latest: pd.DataFrame) -> str:
    head = ["cell", "run", "verdict", "samples/s", "real tok/s", "pad eff", "peak mem MiB", "acc", "f1"]
    out = ["<table><tr>" + "".join(f"<th>{h}</th>" for h in head) + "</tr>"]
    for _, r in latest.iterrows():
        verdict = r.verdict or r.status
        mem = r.peak_mem_reserved_bytes if pd.notna(r.peak_mem_reserved_bytes) else r.peak_rss_bytes
        cells = [
            html.escape(r.cell_id),
            html.escape(r.run_id),
            f'<span style="color:{VERDICT_COLOURS.get(verdict, "#000")};font-weight:bold">{html.escape(verdict)}</span>',
            _n(r.train_samples_per_s, ".1f"), _n(r.real_tokens_per_s, ".0f"), _n(r.padding_efficiency, ".1%"),
            _n(mem / 2**20 if pd.notna(mem) else None, ".0f"),
            *(["chance", "chance"] if r.weights == "random" and pd.notna(r.eval_accuracy)
              else [_n(r.eval_accuracy, ".3f"), _n(r.eval_f1, ".3f")]),
        ]
        out.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    out.append("</table>")
    return "\n".join(out)


def _accepted(results_dir: Path) -> list[str]:
    """The accepted changes of level (``python -m harness accept``): where each window restarts."""
    from .accept import read_accepted

    try:
        entries = read_accepted(results_dir)
    except ResultsError as exc:
        return [f"<p class='partial'>{html.escape(str(exc))}</p>"]
    if not entries:
        return []
    rows = "".join(
        f"<tr><td>{html.escape(e['cell'])}</td><td>{html.escape(e['from_run'])}</td><td>{html.escape(e.get('why', ''))}</td>"
        f"<td>{html.escape(str(e.get('at', '')))}</td><td>{html.escape(str(e.get('by', '')))}</td></tr>"
        for e in entries
    )
    return ["<h2 id='accepted'>Accepted changes</h2>",
            "<p>Each cell's history window starts again at the first run of its accepted new level.</p>",
            "<table><tr><th>cell</th><th>from run</th><th>why</th><th>accepted at</th><th>by</th></tr>"
            + rows + "</table>"]


def _n(value, spec: str) -> str:
    return "-" if value is None or pd.isna(value) else format(value, spec)


def build_report(source: str | Path, *, results_dir: str | Path | None = None) -> str:
    """The report of every run in ``source``, a results folder or a database URL.  The
    committed baselines and accepted changes come from ``results_dir`` (the folder itself
    when ``source`` is one; none for a database alone)."""
    store = open_store(source)
    if results_dir is None and not is_url(source):
        results_dir = Path(source)
    frame = load_frame(store)
    if frame.empty:
        raise ResultsError(f"{store.location}: no stored run to report on (expected runs/<run-id>/run.json)")
    latest_run = frame.run_id.iloc[-1]
    state = frame[frame.run_id == latest_run].run_state.iloc[0]
    # The newest result of every cell: a cell left out of the latest run still shows.
    latest = frame.groupby("cell_id", sort=False).tail(1).sort_values("cell_id").reset_index(drop=True)
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>trainer-bench report</title>",
        "<style>body{font-family:sans-serif;margin:2em;max-width:1100px}table{border-collapse:collapse;font-size:13px}"
        "td,th{border:1px solid #ddd;padding:3px 8px;text-align:right}td:first-child{text-align:left}"
        ".partial{background:#fff3e0;border:1px solid #fb8c00;padding:8px}img{max-width:100%}</style></head><body>",
        "<h1>trainer-bench report</h1>",
        f"<p>{len(frame.run_id.unique())} runs, {len(frame.cell_id.unique())} cells, from {html.escape(store.location)}."
        f" Latest run: <b>{html.escape(latest_run)}</b> ({html.escape(str(latest.hardware_key.iloc[0]))},"
        f" torch {html.escape(str(latest.torch.iloc[0]))}, transformers {html.escape(str(latest.transformers.iloc[0]))}).</p>",
    ]
    if state != "complete":
        parts.append(f"<p class='partial' id='partial'>The latest run is <b>{html.escape(str(state))}</b>: it was "
                     "interrupted or is still running; the cells below are the ones that finished.</p>")
    parts += ["<h2>Latest verdicts</h2>", "<p>The newest result of every cell, and the run it came from.</p>",
              _table(latest)]
    if store.unreadable:
        parts.append(f"<p class='partial' id='unreadable'>{len(store.unreadable)} stored results could not be read "
                     "and are left out: " + html.escape("; ".join(store.unreadable[:5])) + "</p>")
    parts += _accepted(Path(results_dir)) if results_dir is not None else []
    parts.append("<h2>Throughput over the nightly history</h2>")
    for cell_id in latest.cell_id:
        hardware = latest[latest.cell_id == cell_id].hardware_key.iloc[0]
        try:
            baseline = load_baseline(Path(results_dir) / "baselines", str(hardware), cell_id)[0] if results_dir else None
        except ResultsError:
            baseline = None
        base = baseline.metrics.get("train_samples_per_s") if baseline is not None else None
        if frame[(frame.cell_id == cell_id)].train_samples_per_s.notna().any():
            parts.append(f"<img alt='trend {html.escape(cell_id)}' src='{trend_chart(frame, cell_id, base)}'>")
    for chart in (
        bar_chart(latest, "padding_efficiency", "Padding efficiency (real / padded tokens), latest run"),
        bar_chart(latest, "peak_mem_reserved_bytes", "Peak reserved GPU memory, latest run", 2**30, " GiB"),
        bar_chart(latest, "peak_rss_bytes", "Peak process RSS (CPU runs), latest run", 2**30, " GiB"),
        quality_chart(latest),
    ):
        if chart:
            parts.append(f"<img alt='chart' src='{chart}'>")
    parts.append("<h2>Columns of the data</h2><ul>")
    parts += [f"<li><code>{name}</code>: {html.escape(text)}</li>" for name, text in COLUMNS.items()]
    parts.append("</ul></body></html>")
    return "\n".join(parts)


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
        load_frame(source).to_csv(csv_path, index=False)
    return output
