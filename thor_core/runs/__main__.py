"""``python -m thor_core.runs``: a notebook headless into its run folder, with a manifest (the code and ``--help``:
``thor_core/runs/notebooks.py``); ``python -m thor_core.runs plan --profile P``: a profile's compute plan
(``thor_core/runs/plan.py``); ``python -m thor_core.runs study --params-file F``: the thor vs episode study
(``thor_core/runs/study.py``)."""

import sys

from thor_core.runs import notebooks, plan

if __name__ == "__main__":  # spawned grading workers re-import this module (thor_core/grading.py)
    if sys.argv[1:2] == ["study"]:
        from thor_core.runs import study  # torch and the trainer: only for the study, not in every grading worker

        sys.exit(study.main(sys.argv[2:]))
    sys.exit(plan.main(sys.argv[2:]) if sys.argv[1:2] == ["plan"] else notebooks.main())
