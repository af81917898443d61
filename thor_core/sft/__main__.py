"""``python -m thor_core.sft``: one SFT run (the code and ``--help``: ``thor_core/sft/train.py``)."""

import sys

from thor_core.sft.train import main

if __name__ == "__main__":  # spawned grading workers re-import this module (thor_core/grading.py)
    sys.exit(main())
