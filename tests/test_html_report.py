"""The HTML report: built from result sets made here, and loaded in a real headless browser."""

import shutil
import subprocess

import pytest

from harness.html_report import build_report, write_report
from harness.results import CellResult, RunWriter
from harness.spec import CellSpec

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
            quality = [{"kind": "quality", "metric": "eval_accuracy", "baseline": 84.56, "threshold": ">= 82.10"}]
            writer.add(CellResult(
                spec=spec, status="ok", run_id=run_id, env=ENV, finished_at=f"2026-11-2{night}T02:00:00Z",
                metrics={"train_samples_per_s": 80.0 if slow else 100.0 + night, "peak_rss_bytes": 1.5e9,
                         "padding_efficiency": 0.6 if spec.padding == "dynamic" else 0.4, "eval_accuracy": 0.85},
                verdict={"verdict": "regression" if slow else "pass", "findings": quality if spec.label else []},
            ))
        writer.close(interrupted=partial_last and night == nights - 1)


def test_report_holds_verdicts_charts_and_marks_partial_runs(tmp_path):
    history(tmp_path, partial_last=True)
    page = build_report(tmp_path)
    assert "4 runs, 3 cells" in page and "regression" in page
    assert page.count("data:image/png;base64,") >= 4
    assert "id='partial'" in page
    assert "http://" not in page and "https://" not in page, "the page must open offline"


def test_accepted_changes_are_shown(tmp_path):
    from harness.accept import accept

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
def test_report_renders_in_a_headless_browser(tmp_path):
    history(tmp_path)
    out = write_report(tmp_path, csv_path=tmp_path / "frame.csv")
    assert (tmp_path / "frame.csv").read_text().startswith("run_id,")
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={tmp_path / 'profile'}"]
    # Every image must decode: count those with a natural width, from inside the page.
    probe = tmp_path / "probe.html"
    probe.write_text(out.read_text().replace(
        "</body>",
        "<script>window.onload=()=>{const imgs=[...document.images];"
        "document.title='loaded '+imgs.filter(i=>i.naturalWidth>0).length+' of '+imgs.length;}</script></body>"))
    dom = subprocess.run([_browser(), *flags, "--virtual-time-budget=5000", "--dump-dom", probe.as_uri()],
                         capture_output=True, text=True, timeout=120)
    assert dom.returncode == 0, dom.stderr[-2000:]
    title = dom.stdout.split("<title>")[1].split("</title>")[0]
    loaded, total = int(title.split()[1]), int(title.split()[3])
    assert total >= 4 and loaded == total, title
    shot = tmp_path / "report.png"
    subprocess.run([_browser(), *flags, "--window-size=1200,2400", f"--screenshot={shot}", out.as_uri()],
                   capture_output=True, text=True, timeout=120, check=True)
    assert shot.stat().st_size > 10_000
