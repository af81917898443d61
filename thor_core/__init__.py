"""thor_core: the performance-critical parts of the THOR kit.

Modules (one job each): ``tir`` (text format), ``record`` (the trajectory
record), ``models`` (embedded and hub models), ``grading`` (answer
equivalence), ``sandbox`` (code execution), ``backends`` + ``rollout`` (the
engine), ``selection`` (best-of-N), ``data`` (benchmarks), ``problems``
(generated training problems), ``evaluation`` + ``eval_report``, ``plots``,
``runs`` (params, run folders, manifests), ``notebook_runs`` (headless
notebooks), ``progress`` (progress bars), ``viewer`` (trajectories as HTML),
``demo`` (what ``make demo`` runs). Stages: TIRGen (``tirgen``,
``actor_critic``, ``critic``, ``tirgen_filters``, ``tirgen_report``,
``sft_data``), SFT (``sft``, ``sft_run``, ``sft_eval``), hierarchical RL
(``rl/``), evaluation of every stage (``rungs``), the ladder (``ladder``,
``stats``).
"""

__version__ = "0.1.0"
