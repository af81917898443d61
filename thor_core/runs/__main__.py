"""``python -m thor_core.runs``: a notebook headless into its run folder, with a manifest (the code and ``--help``: ``thor_core/runs/notebooks.py``)."""

import sys

from thor_core.runs.notebooks import main

if __name__ == "__main__":  # spawned grading workers re-import this module (thor_core/grading.py)
    sys.exit(main())
