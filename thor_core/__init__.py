"""thor_core: the performance-critical parts of the THOR kit.

Modules (one job each): ``tir`` (text format), ``record`` (the trajectory
record), ``models`` (embedded and hub models), ``grading`` (answer
equivalence), ``sandbox`` (code execution), ``backends`` + ``rollout`` (the
engine), ``selection`` (best-of-N), ``data`` (benchmarks), ``problems``
(generated training problems), ``evaluation``, ``plots``, ``runs`` (params,
notebooks, manifests), ``progress`` (progress bars), ``demo`` (what ``make demo``
runs).
"""

from thor_core import progress as _progress

__version__ = "0.1.0"

_progress.steer_tqdm_auto()  # headless kernels: no tqdm widgets from libraries either (progress.py)
