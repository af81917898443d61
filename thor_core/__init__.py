"""thor_core: the performance-critical parts of the THOR kit.

Modules (one job each): ``tir`` (text format), ``record`` (the trajectory
record), ``models`` (embedded and hub models), ``grading`` (answer
equivalence), ``sandbox`` (code execution), ``engine`` (rollouts), ``data``
(benchmarks and generated problems), ``evaluation``, ``runs`` (params,
notebooks, manifests).
"""

__version__ = "0.1.0"
