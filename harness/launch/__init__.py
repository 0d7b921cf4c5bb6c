"""How a cell is started, and the watch over the machine while it runs.

``process.launch_cell`` is the one way a measured execution starts: a fresh child process
(under torchrun for ``nproc > 1``) with a timeout, progress, and the machine watched.
"""

from .childio import ChildOutcome
from .process import launch_cell, run_child
from .timeouts import cell_timeout_s, default_timeout_s

__all__ = ["ChildOutcome", "cell_timeout_s", "default_timeout_s", "launch_cell", "run_child"]
