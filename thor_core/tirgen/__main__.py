"""``python -m thor_core.tirgen``: one TIRGen run (or shard, or the merge of shards) (the code and ``--help``: ``thor_core/tirgen/steps.py``)."""

import sys

from thor_core.tirgen.steps import main

if __name__ == "__main__":  # spawned grading workers re-import this module (thor_core/grading.py)
    sys.exit(main())
