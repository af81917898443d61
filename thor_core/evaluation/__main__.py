"""``python -m thor_core.evaluation``: one evaluation run (the code and ``--help``: ``thor_core/evaluation/runner.py``);
``python -m thor_core.evaluation judge RUN_DIR --base-url URL --model NAME``: re-grade a finished run's answers with an
LLM judge (``thor_core/evaluation/judge.py``)."""

import sys

from thor_core.evaluation import judge, runner

if __name__ == "__main__":  # spawned grading workers re-import this module (thor_core/grading.py)
    if sys.argv[1:2] == ["judge"]:
        sys.exit(judge.main(sys.argv[2:]))
    if sys.argv[1:2] in (["-h"], ["--help"]):
        print("(or: python -m thor_core.evaluation judge RUN_DIR --base-url URL --model NAME; judge --help)\n")
    sys.exit(runner.main())
