"""``python -m harness submit --shards N --executor slurm|local -- PYTEST_ARGS``.

One job per shard through submitit (SLURM on a cluster; real local processes for a
try-out), each running ``pytest ... --shard I/N --night NIGHT``: an ordinary run that
writes its run folder (a shared file system on a cluster) and, with ``--store``, the
database.  When every job has ended the night is merged into one verdict table
(``cli/merge.py``).  The scheduler is submitit's, not ours: retries, queues and
cancellation are SLURM's.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ..launch import boot
from ..project import results_dir
from .merge import main_merge

NAME = "submit"
HELP = "run a night in N shards as jobs (submitit: SLURM, or local processes), then merge"


def setup_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--shards", type=int, required=True, help="how many parts (jobs)")
    parser.add_argument("--executor", choices=("local", "slurm"), default="local")
    parser.add_argument("--folder", type=Path, default=results_dir() / "submitit", help="job logs")
    parser.add_argument("--night", help="default: a UTC time stamp")
    parser.add_argument("--timeout-min", type=int, default=360)
    parser.add_argument("--slurm-partition")
    parser.add_argument("--gpus-per-node", type=int)
    parser.add_argument("--slurm-arg", action="append", default=[], metavar="KEY=VALUE",
                        help="any other submitit slurm_* parameter, e.g. account=ml (repeatable)")
    parser.add_argument("pytest_args", nargs=argparse.REMAINDER, help="-- then the pytest arguments of every shard")


def run(args: argparse.Namespace) -> int:
    return submit(args.shards, args.pytest_args, executor=args.executor, folder=args.folder, night=args.night,
                  timeout_min=args.timeout_min, partition=args.slurm_partition, gpus_per_node=args.gpus_per_node,
                  slurm_args=args.slurm_arg)


@dataclass
class ShardJob:
    """What one job runs: picklable, so submitit can hand it to a SLURM node."""

    command: list[str]
    cwd: str
    env: dict[str, str]

    def __call__(self) -> tuple[int, str]:
        done = subprocess.run(self.command, cwd=self.cwd, env={**os.environ, **self.env},
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        sys.stdout.write(done.stdout)  # the job's log keeps pytest's whole output
        return done.returncode, done.stdout[-4000:]


def shard_command(index: int, count: int, night: str, pytest_args: Sequence[str]) -> list[str]:
    return boot.command(sys.executable, "pytest", *pytest_args, "--shard", f"{index}/{count}", "--night", night)


def submit(count: int, pytest_args: Sequence[str], *, executor: str = "local", folder: Path = Path("results/submitit"),
           night: str | None = None, timeout_min: int = 360, partition: str | None = None,
           gpus_per_node: int | None = None, slurm_args: Sequence[str] = (), results_dir: Path | None = None) -> int:
    import submitit

    if count < 1:
        raise ValueError(f"--shards {count}: at least 1")
    args = list(pytest_args)
    if args[:1] == ["--"]:
        args = args[1:]
    if not any(a.endswith(".py") or a.rstrip("/").endswith("benchmarks") for a in args):
        args = ["benchmarks/", *args]
    night = night or time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    results = results_dir or _results_dir(args)
    cluster = "local" if executor == "local" else "slurm"
    ex = submitit.AutoExecutor(folder=str(folder / night / "%j"), cluster=cluster)
    params: dict = {"timeout_min": timeout_min, "name": f"trainer-bench-{night}"}
    if cluster == "slurm":
        if partition:
            params["slurm_partition"] = partition
        if gpus_per_node:
            params["gpus_per_node"] = gpus_per_node
        for item in slurm_args:
            key, _, value = item.partition("=")
            params[f"slurm_{key}"] = value
    ex.update_parameters(**params)
    jobs = []
    with ex.batch():
        for index in range(1, count + 1):
            jobs.append(ex.submit(ShardJob(shard_command(index, count, night, args), os.getcwd(), {})))
    print(f"night {night}: {count} shards submitted ({executor}): " + ", ".join(str(j.job_id) for j in jobs))
    for index, job in enumerate(jobs, 1):
        try:
            code, tail = job.result()
            print(f"shard {index}/{count} (job {job.job_id}): pytest exit {code}")
        except Exception as exc:  # the job itself died: the merge names its missing cells
            print(f"shard {index}/{count} (job {job.job_id}): the job failed: {str(exc).strip().splitlines()[-1:]}")
    store = _option(args, "--store") or os.environ.get("HARNESS_STORE")
    return main_merge([], into=results, night=night, store_url=store)


def _option(args: Sequence[str], name: str) -> str | None:
    for i, arg in enumerate(args):
        if arg == name and i + 1 < len(args):
            return args[i + 1]
        if arg.startswith(name + "="):
            return arg.split("=", 1)[1]
    return None


def _results_dir(args: Sequence[str]) -> Path:
    given = _option(args, "--results-dir")
    return Path(given) if given else results_dir()
