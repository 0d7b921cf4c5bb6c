"""``python -m harness ingest RESULTS_DIR --store URL``: run folders into a database.

Every manifest and cell document is upserted on its key, so ingesting the same folders
twice changes nothing, and ingesting after a run whose store went away catches the
database up with what the run folder kept.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from .files import FolderStore
from .sql import SqlStore


@dataclass
class Ingested:
    runs: int = 0
    cells: int = 0
    unreadable: list[str] = field(default_factory=list)

    def line(self, store: SqlStore) -> str:
        text = f"ingested {self.runs} runs and {self.cells} cell results into {store.location}"
        if self.unreadable:
            text += f"; {len(self.unreadable)} files left out as unreadable: " + "; ".join(self.unreadable[:5])
        return text


def ingest(results_dir: str | Path, store: SqlStore, run_ids: Iterable[str] | None = None) -> Ingested:
    folder = FolderStore(Path(results_dir))
    wanted = list(run_ids) if run_ids is not None else None
    done = Ingested()
    for manifest in folder.manifests(wanted):
        store.put_run(manifest)
        done.runs += 1
    for result in folder.results(run_ids=wanted):
        store.put_cell(result)
        done.cells += 1
    done.unreadable = folder.unreadable
    return done
