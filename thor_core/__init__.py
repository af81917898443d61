"""thor_core: the performance-critical parts of the THOR kit.

Modules (one job each): ``tir`` (text format), ``record`` (the trajectory
record), ``models`` (embedded and hub models), ``grading`` (answer
equivalence), ``sandbox`` (code execution), ``backends`` + ``rollout`` (the
engine), ``selection`` (best-of-N), ``data`` (benchmarks), ``problems``
(generated training problems), ``evaluation``, ``plots``, ``runs`` (params,
notebooks, manifests), ``demo`` (what ``make demo`` runs).
"""

__version__ = "0.1.0"
