"""``python -m thor_core.demo --profile cpu``: the whole method, notebooks 01 to 05 (what ``make demo`` runs).

Each stage's notebook runs headless through ``thor_core.runs.notebooks.run_notebook``
on ``params/<profile>/<stage>.yaml`` into ``outputs/<profile>/<stage>/``
(executed notebook, manifest, outputs); the stages ``03_rl-episode`` and
``03_rl-cot`` (the ladder's T4 and T2 rungs) are notebook 03 on their own
files, and a stage without a file in the profile is listed as such. A stage whose manifest says ``ok`` is
skipped unless ``--force`` names it (or ``all``); an interrupted stage is
resumed (every stage's work is resumable). The terminal gets one line per
stage and the notebooks' own progress lines (plain text with an ETA), not
kernel noise. At the end ``outputs/<profile>/REPORT.md`` lists each stage's
status, time, executed notebook, manifest and viewer files, and notebook 05's
ladder table and key figures where it ran.

Not covered: several machines (run a stage's module under ``accelerate
launch``, then its notebook with the same folder: it finds the work done).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path

from thor_core.files import OUTPUTS, REPO_ROOT
from thor_core.params import ParamsError
from thor_core.runs.notebooks import NotebookError, run_notebook

STAGES = (
    "01_tirgen", "02_sft",
    "03_rl",  # T5: thor mode from the SFT checkpoint
    "03_rl-episode", "03_rl-cot",  # T4, T2: notebook 03 on params/<profile>/03_rl-<mode>.yaml, where the profile has one
    "04_correction_inference", "05_analysis_figures",
)  # fmt: skip


KEY_FIGURES = ("ladder", "training_curves", "best_of_n", "tirgen_funnel")  # notebook 05's PNGs, shown in REPORT.md


class _CellOutputOnly(logging.Filter):
    """papermill's streamed cell output without its "Executing Cell 12-----" / "Ending Cell 12-----" markers
    (the notebooks' own progress lines say more), without the "<IPython.core.display.HTML object>" stand-ins
    of rich outputs (they are in the executed notebook), without the blank line after every streamed line, and
    with "Input Notebook:" once (papermill logs it when it reads the parameters and again when it executes)."""

    _DROP = ("Executing Cell", "Ending Cell", "<IPython.core.display.")

    def __init__(self) -> None:
        super().__init__()
        self._last = ""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = record.msg.rstrip("\n")
            repeated = record.msg.startswith("Input Notebook:") and record.msg == self._last
            self._last = record.msg
            if repeated or record.msg.lstrip().startswith(self._DROP) or not record.msg.strip():
                return False
        return True


def _quiet_kernel_logs() -> None:
    """Keep papermill's streamed cell output; drop jupyter_client's and traitlets' warnings (e.g. TCP without
    encryption, which is about a loopback kernel the demo starts itself)."""
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout, force=True)
    for name in ("traitlets", "jupyter_client", "nbclient", "asyncio"):
        logging.getLogger(name).setLevel(logging.ERROR)
    logging.getLogger("papermill").setLevel(logging.INFO)
    logging.getLogger("papermill").addFilter(_CellOutputOnly())
    # the kernels inherit these: vLLM's start-up warnings (eager mode, no tcmalloc, ...) and c10's C++ warnings
    # (NUMA binding) are the same at every engine start and say nothing to a demo user; a set value wins
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "ERROR")
    os.environ.setdefault("TORCH_CPP_LOG_LEVEL", "ERROR")


def status(run_dir: Path) -> dict:
    try:
        return json.loads((run_dir / "manifest.json").read_text())
    except (OSError, ValueError):
        return {}


def run_stage(stage: str, profile: str, root: Path, force: bool) -> dict:
    """One stage; ``03_rl-episode`` is notebook ``03_rl`` on ``params/<profile>/03_rl-episode.yaml``."""
    run_dir = root / profile / stage
    params_file = REPO_ROOT / "params" / profile / f"{stage}.yaml"
    if not params_file.exists():
        return {"stage": stage, "status": "no profile", "run_dir": str(run_dir)}
    before = status(run_dir)
    if before.get("status") == "ok" and not force:
        return {
            "stage": stage,
            "status": "done before",
            "run_dir": str(run_dir),
            "duration_s": before.get("duration_s"),
        }
    t0 = time.monotonic()
    notebook = stage.split("-")[0]
    executed = run_notebook(notebook, params_file=params_file, out_dir=run_dir, resume=True, log_output=True)
    return {"stage": stage, "status": "ok", "run_dir": str(run_dir), "executed": str(executed),
            "duration_s": round(time.monotonic() - t0, 1)}  # fmt: skip


def write_report(profile: str, root: Path, results: list[dict]) -> Path:
    """``REPORT.md``: stages, times, files, and the ladder table of notebook 05 when it wrote one."""
    lines = [f"# THOR demo report: profile `{profile}`", "", "| stage | status | time | folder |", "|---|---|---|---|"]
    for r in results:
        t = f"{r['duration_s']:.0f} s" if r.get("duration_s") else "-"
        lines.append(f"| {r['stage']} | {r['status']} | {t} | `{r['run_dir']}` |")
    base = root / profile
    for r in results:
        folder = Path(r["run_dir"])
        files = sorted(p for p in folder.glob("*") if p.suffix in (".html", ".png", ".md", ".ipynb", ".json"))
        if files:  # relative links, as for the figures below
            lines += ["", f"## {r['stage']}", ""] + [f"- [{p.name}]({os.path.relpath(p, base)})" for p in files]
    figures_dir = base / "05_analysis_figures"
    ladder = figures_dir / "ladder.md"
    if ladder.exists():
        lines += ["", "## The ladder (notebook 05)", "", ladder.read_text()]
    figures = [f for f in KEY_FIGURES if (figures_dir / f"{f}.png").exists()]
    if figures:  # relative links: the report opens in place (JupyterLab, a Markdown viewer) and moves with its folder
        lines += ["", "## Key figures", ""] + [f"![{f}](05_analysis_figures/{f}.png)" for f in figures]
    path = base / "REPORT.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m thor_core.demo", description=__doc__.splitlines()[0])
    ap.add_argument("--profile", default="cpu", help="params/<profile>/ (smoke, cpu, cpu-full, gpu-*; default cpu)")
    ap.add_argument("--stages", nargs="+", default=list(STAGES), choices=STAGES, help="stages to run (default: all)")
    ap.add_argument("--force", nargs="*", default=[], help="stages to redo even if done ('all' for every stage)")
    args = ap.parse_args(argv)
    _quiet_kernel_logs()
    results, t0 = [], time.monotonic()
    for i, stage in enumerate(args.stages, 1):
        print(f"[{i}/{len(args.stages)}] {stage} (profile {args.profile}) ...", flush=True)
        try:
            result = run_stage(stage, args.profile, OUTPUTS, "all" in args.force or stage in args.force)
        except (ParamsError, FileNotFoundError, ValueError) as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        except NotebookError as e:
            print(f"error in {stage}: {e}", file=sys.stderr)
            results.append({"stage": stage, "status": "failed", "run_dir": str(OUTPUTS / args.profile / stage)})
            write_report(args.profile, OUTPUTS, results)
            return 1
        results.append(result)
        print(f"[{i}/{len(args.stages)}] {stage}: {result['status']}  (demo elapsed {time.monotonic() - t0:.0f} s)",
              flush=True)  # fmt: skip
    print(f"report: {write_report(args.profile, OUTPUTS, results)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
