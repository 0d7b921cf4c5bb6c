"""Faults injected from outside the harness, into the child processes that train.

Put this folder on PYTHONPATH and set ``HARNESS_TEST_FAULT=KIND:STEP`` (KIND: abort, hang,
sigkill, raise, exit, fill, nan, nudge), or ``HARNESS_TEST_FAULT_BY_BATCH=2=abort:2,3=hang:2`` for a fault
per cell of a night (chosen by the cell's batch size; other cells train untouched).  When
``transformers.trainer`` is imported, ``Trainer.training_step``
is wrapped: its STEP-th call faults.  ``fill`` writes the file ``HARNESS_TEST_FILL`` until
its file system is full (ENOSPC), then trains on: the disk fills while a cell trains.
``HARNESS_TEST_SLOW=PHASE:SECONDS`` plants a slowdown instead: a sleep before every optimizer
step (``optimizer``: ``torch.optim.AdamW.step``) or every forward pass (``forward``: before each
``Trainer.training_step``).  With ``HARNESS_TEST_FAULT_ONCE=FILE`` only the first process that reaches that step faults
(it creates FILE); later ones train normally, so "the first Trainer of the run" fails and
the rest of the run is untouched.  With ``HARNESS_TEST_FAULT_FIRED=DIR`` each process that
faults first creates ``DIR/<its pid>``: a test outside knows the fault has been reached.
"""

import importlib.abc
import importlib.util
import os
import signal
import sys
import time

_FAULT = os.environ.get("HARNESS_TEST_FAULT")
_SLOW = os.environ.get("HARNESS_TEST_SLOW")
_BY_BATCH = dict(part.split("=", 1) for part in os.environ.get("HARNESS_TEST_FAULT_BY_BATCH", "").split(",") if part)


def _armed() -> bool:
    once = os.environ.get("HARNESS_TEST_FAULT_ONCE")
    if not once:
        return True
    try:
        os.close(os.open(once, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        return False
    return True


def _fault(kind: str) -> None:
    sys.stderr.write(f"injected fault: {kind}\n")
    sys.stderr.flush()
    fired = os.environ.get("HARNESS_TEST_FAULT_FIRED")
    if fired:
        open(os.path.join(fired, str(os.getpid())), "w").close()
    if kind == "abort":
        os.abort()
    if kind == "hang":
        while True:
            time.sleep(3600)
    if kind == "sigkill":
        os.kill(os.getpid(), signal.SIGKILL)
    if kind == "exit":
        os._exit(3)
    if kind == "fill":
        _fill(os.environ["HARNESS_TEST_FILL"])
        return
    raise RuntimeError("injected fault: an exception in a training step")


def _fill(path: str) -> None:
    chunk = b"\0" * 4096
    with open(path, "ab", buffering=0) as handle:
        try:
            while True:
                handle.write(chunk)
        except OSError as exc:
            sys.stderr.write(f"injected fault: {path} filled its file system ({exc.strerror})\n")


def _slow(module) -> None:
    phase, seconds = _SLOW.split(":")
    if phase == "optimizer":
        import torch

        step = torch.optim.AdamW.step

        def slow_step(self, *args, **kwargs):
            time.sleep(float(seconds))
            return step(self, *args, **kwargs)

        torch.optim.AdamW.step = slow_step
    elif phase == "forward":
        original = module.Trainer.training_step

        def slow_training_step(self, *args, **kwargs):
            time.sleep(float(seconds))
            return original(self, *args, **kwargs)

        module.Trainer.training_step = slow_training_step


def _perturb(model, kind: str) -> None:
    """``nan``: one weight becomes NaN (the loss is NaN from this step on); ``nudge``: every
    weight moves by 5% of its own size at random (training goes on, its curve departs)."""
    import torch

    sys.stderr.write(f"injected fault: {kind}\n")
    with torch.no_grad():
        for parameter in model.parameters():
            if kind == "nan":
                parameter.view(-1)[0] = float("nan")
                return
            parameter.add_(torch.randn_like(parameter) * parameter.abs() * 0.05)


def _patch(module) -> None:
    if _SLOW:
        _slow(module)
    if not (_FAULT or _BY_BATCH):
        return
    original = module.Trainer.training_step
    calls = {"n": 0}

    def training_step(self, *args, **kwargs):
        calls["n"] += 1
        fault = _BY_BATCH.get(str(self.args.per_device_train_batch_size)) if _BY_BATCH else _FAULT
        if fault:
            kind, step = fault.split(":")
            if calls["n"] == int(step) and _armed():
                if kind in ("nan", "nudge"):
                    _perturb(self.model, kind)
                else:
                    _fault(kind)
        return original(self, *args, **kwargs)

    module.Trainer.training_step = training_step


class _Finder(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name != "transformers.trainer":
            return None
        sys.meta_path.remove(self)
        try:
            spec = importlib.util.find_spec(name)
        finally:
            sys.meta_path.insert(0, self)
        if spec is None or spec.loader is None:
            return None
        exec_module = spec.loader.exec_module

        def exec_and_patch(module):
            exec_module(module)
            _patch(module)

        spec.loader.exec_module = exec_and_patch
        return spec


if _FAULT or _BY_BATCH or _SLOW:
    sys.meta_path.insert(0, _Finder())
