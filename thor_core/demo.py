"""``python -m thor_core.demo --profile cpu``: the kit's demo (what ``make demo`` runs).

Runs notebook 04 (correction and inference) headless on a parameter profile
through ``thor_core.runs.run_notebook``, into ``outputs/<profile>/04_correction_inference/``
(resumed when it exists, so an interrupted demo continues; ``--fresh`` starts a
new time-stamped folder), then prints where the executed notebook, the report
and the figures are, and the comparison table.

Not covered: the other notebooks (run them with ``python -m thor_core.runs``).
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime
from pathlib import Path

from thor_core import evaluation
from thor_core.runs import OUTPUTS, NotebookError, ParamsError, run_notebook

NOTEBOOK = "04_correction_inference"


def report(executed: str | Path) -> str:
    """What the demo prints about a finished run: paths, figures, and the comparison table."""
    run_dir = Path(executed).parent
    summaries = list(json.loads((run_dir / "summary.json").read_text()).values())
    figures = "".join(f"  {p}\n" for p in sorted(run_dir.glob("*.png")))
    return (
        f"executed notebook: {executed}\n"
        f"report:            {run_dir / 'summary.md'}\n"
        f"records:           {run_dir}/records-*.jsonl\n"
        f"figures:\n{figures}\n"
        f"{evaluation.comparison_table(summaries)}"
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m thor_core.demo", description=__doc__.splitlines()[0])
    ap.add_argument("--profile", default="cpu", help="params/<profile>/04_correction_inference.yaml (default: cpu)")
    ap.add_argument("--out-dir", help="run folder (default: outputs/<profile>/04_correction_inference)")
    ap.add_argument("--fresh", action="store_true", help="start a new time-stamped run folder instead of resuming")
    args = ap.parse_args(argv)
    out_dir = Path(args.out_dir) if args.out_dir else OUTPUTS / args.profile / NOTEBOOK
    if args.fresh:
        out_dir = out_dir.with_name(f"{out_dir.name}-{datetime.now(UTC):%Y%m%d-%H%M%S}")
    print(f"running notebooks/{NOTEBOOK}.ipynb with profile {args.profile!r} into {out_dir} ...", flush=True)
    try:
        executed = run_notebook(
            NOTEBOOK, profile=args.profile, out_dir=out_dir, resume=True, progress_bar=sys.stderr.isatty()
        )
    except (ParamsError, FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except NotebookError as e:
        print(f"error: {e}\n(if the parameters changed since the last run, add --fresh)", file=sys.stderr)
        return 1
    print(report(executed))
    return 0


if __name__ == "__main__":
    sys.exit(main())
