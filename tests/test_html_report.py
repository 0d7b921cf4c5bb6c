"""The HTML report: built from result sets made here, and loaded in a real headless browser."""

import shutil
from pathlib import Path

import pytest

from harness.judge.verdict import Finding, Verdict
from harness.report.html import build_report, write_report
from harness.results import CellResult
from harness.spec import CellSpec
from harness.store.runs import RunWriter

ENV = {"hardware_key": "cpu-2x-test", "cpu_model": "test", "cpu_count": 2,
       "libraries": {"torch": "2.13.0", "transformers": "5.23.0"}}
CELLS = [CellSpec(padding="dynamic", batch_size=8, max_steps=30),
         CellSpec(padding="max_length", batch_size=8, max_steps=30),
         CellSpec(checkpoint="bert-base-uncased", weights="pretrained", label="finetune")]


def history(root, nights=4, partial_last=False):
    for night in range(nights):
        run_id = f"2026112{night}T020000Z-nightly"
        writer = RunWriter(root, run_id, matrix="nightly", planned=[c.id for c in CELLS], env=ENV)
        for spec in CELLS[: 2 if partial_last and night == nights - 1 else 3]:
            slow = night == nights - 1 and spec.padding == "max_length"
            quality = [Finding("eval_accuracy", "quality", "pass", 85.0, 84.56, threshold=">= 82.10", basis="band")]
            writer.add(CellResult(
                spec=spec, status="ok", run_id=run_id, env=ENV, finished_at=f"2026-11-2{night}T02:00:00Z",
                metrics={"train_samples_per_s": 80.0 if slow else 100.0 + night, "peak_rss_bytes": 1.5e9,
                         "padding_efficiency": 0.6 if spec.padding == "dynamic" else 0.4, "eval_accuracy": 0.85},
                verdict=Verdict(spec.id, "regression" if slow else "pass", quality if spec.label else []),
            ))
        writer.close(interrupted=partial_last and night == nights - 1)


def test_report_holds_verdicts_charts_and_marks_partial_runs(tmp_path):
    history(tmp_path, partial_last=True)
    page = build_report(tmp_path)
    assert "4 runs, 3 cells" in page and "regression" in page
    assert "id='partial'" in page and "Plotly.newPlot" in page and page.count("class='chart'") == 3
    assert "1 of 3 cells regressed" in page
    import re

    assert not re.search(r"""(src|href)\s*=\s*["'`]?(https?:)?//""", page), "the page must open offline: no remote src or href"


def test_accepted_changes_are_shown(tmp_path):
    from harness.judge.accept import accept

    history(tmp_path)
    run_id = sorted(p.name for p in (tmp_path / "runs").iterdir())[1]
    cell = next(p.stem for p in (tmp_path / "runs" / run_id).glob("*.json") if p.name != "run.json")
    accept(tmp_path, cell, run_id, "a faster tokenizer, accepted")
    page = build_report(tmp_path)
    assert "id='accepted'" in page and "a faster tokenizer, accepted" in page and run_id in page


def test_report_of_nothing_is_a_clear_error(tmp_path):
    from harness.results import ResultsError

    with pytest.raises(ResultsError, match="no stored run"):
        build_report(tmp_path)


def _browser():
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return shutil.which(name)
    return None


@pytest.mark.skipif(_browser() is None, reason="no headless browser here (apt-get install chromium)")
def test_report_draws_filters_and_sorts_in_a_real_browser(tmp_path):
    """Debian's chromium, driven by playwright: no console error, charts draw (with the run,
    commit and versions in their hover data), the filters hide cells, the table sorts."""
    sync_api = pytest.importorskip("playwright.sync_api")
    history(tmp_path)
    out = write_report(tmp_path, csv_path=tmp_path / "frame.csv")
    assert (tmp_path / "frame.csv").read_text().startswith("run_id,")
    errors: list[str] = []
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=_browser(), args=["--no-sandbox", "--disable-gpu"])
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 2400})
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(out.as_uri())
            page.wait_for_function("document.body.dataset.ready === '1'", timeout=30_000)
            page.wait_for_selector(".chart[data-drawn='1'] .main-svg", timeout=30_000)
            drawn = page.evaluate("document.querySelectorAll('.chart[data-drawn] .main-svg').length")
            assert drawn >= 3
            hover = page.evaluate("document.querySelector('.chart[data-drawn]').data[0].customdata[0]")
            assert hover[0].startswith("20261120T020000Z") and hover[3] == "2.13.0" and hover[4] == "5.23.0"
            assert page.inner_text("#shown") == "3 of 3 cells shown"
            page.select_option("#filters select[data-axis='padding']", "max_length")
            assert page.inner_text("#shown") == "1 of 3 cells shown"
            visible = page.evaluate(
                "[...document.querySelectorAll('#verdicts tbody tr')].filter(r => r.style.display !== 'none').length")
            assert visible == 1
            page.select_option("#filters select[data-axis='padding']", "")
            page.click("#verdicts th:nth-child(3)")  # samples/s, ascending
            first = page.evaluate("document.querySelector('#verdicts tbody tr td:nth-child(3)').dataset.sort")
            assert float(first) == 80.0, "the slowest cell first"
            page.screenshot(path=str(tmp_path / "report.png"), full_page=False)
        finally:
            browser.close()
    assert errors == [], errors
    assert (tmp_path / "report.png").stat().st_size > 10_000


def clone_history(root, cells: int, nights: int, *, seed: int = 0):
    """A real committed result cloned into ``cells`` cells x ``nights`` nights, with 3%
    noise and one 15% level shift in the last third: what a team's history looks like."""
    import random
    from dataclasses import replace

    from harness.results import read_result

    real = read_result(REAL)
    rng = random.Random(seed)
    specs = [replace(real.spec, checkpoint=c, padding=p, batch_size=b, precision=q)
             for c in ("bert-base-uncased", "distilbert-base-uncased", "roberta-base") for p in ("dynamic", "max_length")
             for b in (8, 16, 32) for q in ("fp32", "fp16", "bf16")][:cells]
    shift = 2 * nights // 3
    for night in range(nights):
        run_id = f"2026{1 + night // 28:02d}{1 + night % 28:02d}T020000Z-nightly"
        env = dict(real.env, harness_commit=f"{night:040x}")
        writer = RunWriter(root, run_id, matrix="nightly", planned=[s.id for s in specs], env=env)
        for spec in specs:
            level = real.metrics["train_samples_per_s"] * (0.85 if night >= shift else 1.0)
            metrics = dict(real.metrics, train_samples_per_s=level * (1 + rng.gauss(0, 0.03)))
            doc = replace(real, spec=spec, run_id=run_id, env=env, metrics=metrics,
                          finished_at=f"2026-{1 + night // 28:02d}-{1 + night % 28:02d}T02:30:00Z",
                          verdict=Verdict(spec.id, "pass"))
            writer.add(doc)
        writer.close()


REAL = Path(__file__).resolve().parents[1] / "results" / "runs" / "20261125T140250Z-smoke-cpu" / \
    "mrpc-all-MiniLM-L6-v2-dynamic-bs8-fp32.json"


def test_a_long_history_stays_one_offline_file_with_every_nights_commit(tmp_path):
    """54 cells x 20 nights (the 120-night figure is measured in docs/compare-and-report.md):
    under 8 MB, no remote src or href, every night's harness commit on the page."""
    import re

    clone_history(tmp_path, 54, 20)
    page = build_report(tmp_path)
    assert len(page.encode()) < 8 * 2**20
    assert not re.search(r"""(src|href)\s*=\s*["'`]?(https?:)?//""", page)
    assert page.count("<script") == 3  # plotly, the data, the page's own: all inline
    assert all(f"{night:040x}"[:12] in page for night in range(20))
    assert page.count("class='cellbox'") == 54 and "0 of 54 cells regressed" in page
    assert "change train samples per s" not in page  # drawn by the page's script from the data, not baked in
    assert '"changes":[[13,"train_samples_per_s"' in page, "the level shift is found and marked"


def chart_data_of(page: str) -> dict:
    import json
    import re

    block = re.search(r"<script type='application/json' id='chart-data'>(.*?)</script>", page, re.S).group(1)
    return json.loads(block.replace("<\\/", "</"))


def test_the_band_is_the_gates_window_with_the_matrix_settings(tmp_path):
    """A matrix with ``[gate] window = 8``: each chart's band is the prediction interval of
    the gate's window (``build_window``) over 8 runs at the matrix's confidence, its threshold
    line the window's mean moved by the cell's threshold; without the file, the defaults."""
    from harness.__main__ import main
    from harness.judge.window import prediction_interval

    results, matrices = tmp_path / "results", tmp_path / "benchmarks"
    matrices.mkdir()
    (matrices / "eight.toml").write_text("[gate]\nwindow = 8\nconfidence = 0.95\n[axes]\nbatch_size = [8]\n")
    spec, env = CELLS[0], dict(ENV, matrix_sha256="feedfacefeedface")
    speeds = [100.0 + (3 * night) % 7 for night in range(12)]
    for night, value in enumerate(speeds):
        run_id = f"202611{10 + night:02d}T020000Z-eight"
        writer = RunWriter(results, run_id, matrix="eight", planned=[spec.id], env=env)
        finding = Finding("train_samples_per_s", "speed", "pass", value, threshold="train_samples_per_s:-15%",
                          basis="history")
        writer.add(CellResult(spec=spec, status="ok", run_id=run_id, env=env, metrics={"train_samples_per_s": value},
                              finished_at=f"2026-11-{10 + night:02d}T02:00:00Z", verdict=Verdict(spec.id, "pass", [finding])))
        writer.close()

    page = build_report(results, matrices=matrices)
    cell = chart_data_of(page)["cells"][spec.id]
    window = speeds[-9:-1]  # the 8 good runs before the newest, which the gate judged it against
    expected = prediction_interval(window, 0.95)
    assert (cell["window"], cell["confidence"], cell["band_runs"], cell["band_from"]) == (8, 0.95, 8, 3)
    assert cell["band"] == pytest.approx([expected.low, expected.high])
    assert cell["threshold_line"] == pytest.approx(expected.mean * 0.85)
    assert cell["band_label"] == "95% band of the last 8 good runs"
    assert f"window 8 runs, confidence 95% ({matrices / 'eight.toml'})" in page
    assert "the file has changed since the runs (feedfacefeedface then" in page

    out = tmp_path / "report.html"
    assert main(["report", str(results), "--matrix", str(matrices / "eight.toml"), "--output", str(out)]) == 0
    assert chart_data_of(out.read_text())["cells"][spec.id]["band_runs"] == 8

    default = build_report(results, matrices=tmp_path / "nowhere")
    cell = chart_data_of(default)["cells"][spec.id]
    assert (cell["window"], cell["confidence"], cell["band_runs"], cell["band_from"]) == (20, 0.99, 11, 0)
    assert "window 20 runs, confidence 99% (the gate&#x27;s defaults); no " in default
