"""``python -m thor_core.evaluation``: one evaluation run (the code and ``--help``: ``thor_core/evaluation/runner.py``)."""

import sys

from thor_core.evaluation.runner import main

if __name__ == "__main__":  # spawned grading workers re-import this module (thor_core/grading.py)
    sys.exit(main())
