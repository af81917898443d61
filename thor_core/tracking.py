"""Experiment tracking: one ``report_to`` setting for SFT and RL, TRL's convention.

``report_to`` is ``"none"``, one backend name or a list of them, as ``report_to`` of
``transformers.TrainingArguments``: ``tensorboard``, ``trackio`` (local-first: a SQLite file, no network unless
a Space or server is asked for) and ``wandb`` (when installed; not in the kit's requirements).

Covered:

- :func:`problems`: an unknown name, ``none`` mixed with a backend, or a backend whose package is missing, each
  named with the pip command; the params classes (``SFTParams``, ``RLParams``) report them before anything runs.
- :func:`run_folder_env`: every backend writes into the run folder, not the home directory:
  ``<out>/tb`` (TensorBoard), ``<out>/trackio`` (trackio's database), ``<out>/wandb``. A variable the user set
  (``TENSORBOARD_LOGGING_DIR``, ``TRACKIO_DIR``, ``WANDB_DIR``, ``WANDB_PROJECT``) wins. SFT wraps TRL's trainer in
  it and passes ``report_to`` straight through (TRL's callbacks do the logging).
- :class:`Tracker`: RL has its own loop, so this logs the dict of numbers that goes to ``metrics.jsonl`` to each
  backend, at the same step; a resumed run's TensorBoard events past its checkpoint are purged (``purge_step``),
  as ``metrics.jsonl`` drops their lines.

SFT's ``overwrite`` deletes these folders with the rest of the run (``thor_core.sft.folder.clear``); RL's deletes
the whole run folder.

Not covered: ``"all"`` (TRL's every-installed-backend), backends other than these three, and trackio runs that
resume (a resumed RL run logs its steps again into the same trackio run, without removing the undone ones). SFT
with trackio inside a notebook kernel: TRL's callback leaves trackio's ``embed`` on, so trackio starts its local
dashboard in the kernel (RL's :class:`Tracker` does not: ``trackio show`` opens it).
"""

from __future__ import annotations

import importlib.util
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

ReportTo = Literal["none", "tensorboard", "trackio", "wandb"]
BACKENDS = ("tensorboard", "trackio", "wandb")
PROJECT = "thor"  # trackio's and wandb's project name for every stage
FOLDERS = ("tb", "trackio", "wandb")  # what the backends write into a run folder (in BACKENDS' order)
HELP = (
    "where metrics also go, TRL's report_to: none, tensorboard (<output_dir>/tb), trackio (<output_dir>/trackio, "
    "offline), wandb (if installed), or a list"
)


def names(report_to: str | list[str] | None) -> list[str]:
    """The backends ``report_to`` names, in order, without repeats (``"none"``/``None``: none)."""
    given = [report_to] if isinstance(report_to, str) else list(report_to or [])
    return [n for i, n in enumerate(given) if n != "none" and n not in given[:i]]


def problems(report_to: str | list[str] | None) -> list[str]:
    """What is wrong with ``report_to``: unknown names, ``none`` beside a backend, missing packages."""
    given = [report_to] if isinstance(report_to, str) else list(report_to or [])
    out = [f"report_to: unknown backend {n!r} (choose from none, {', '.join(BACKENDS)})" for n in given
           if n not in BACKENDS and n != "none"]  # fmt: skip
    if "none" in given and len(given) > 1:
        out.append(f"report_to: 'none' cannot be combined with other backends, got {given}")
    for n in names(report_to):
        if n in BACKENDS and importlib.util.find_spec(n) is None:
            out.append(f"report_to {n!r} needs the {n} package: pip install {n} (or drop it from report_to)")
    return out


@contextmanager
def run_folder_env(report_to: str | list[str] | None, out: str | os.PathLike) -> Iterator[None]:
    """While open, the chosen backends' environment variables point into ``out`` (the user's own settings win).

    trackio reads ``TRACKIO_DIR`` once, when first imported: a process that imported it for another folder is
    refused, with what to do, rather than writing this run into that folder.
    """
    out, chosen = Path(out), names(report_to)
    tb, trackio, _ = (out / f for f in FOLDERS)
    wanted = {
        "tensorboard": {"TENSORBOARD_LOGGING_DIR": tb},
        "trackio": {"TRACKIO_DIR": trackio},
        "wandb": {"WANDB_DIR": out, "WANDB_PROJECT": PROJECT},  # wandb adds the wandb/ folder itself
    }
    env = {k: str(v) for n in chosen for k, v in wanted[n].items() if k not in os.environ}
    if "trackio" in chosen and (imported := sys.modules.get("trackio.utils")) is not None:
        where = Path(env.get("TRACKIO_DIR", os.environ.get("TRACKIO_DIR", "")))
        if Path(imported.TRACKIO_DIR) != where:
            raise RuntimeError(
                f"trackio was imported in this process with its store at {imported.TRACKIO_DIR}, not {where} "
                "(it reads TRACKIO_DIR once): run this stage in a new process or kernel, or set TRACKIO_DIR first"
            )
    os.environ.update(env)
    try:
        yield
    finally:
        for k in env:
            os.environ.pop(k, None)


class Tracker:
    """One dict of numbers per step to each backend of ``report_to`` (RL's loop; SFT's goes through TRL).

    ``start``: the step a resumed run continues after (0: a new run); ``run_name``: trackio's and wandb's.
    """

    def __init__(
        self, report_to: str | list[str] | None, out: str | os.PathLike, run_name: str, start: int = 0,
        config: dict[str, Any] | None = None,
    ) -> None:  # fmt: skip
        if wrong := problems(report_to):
            raise ValueError("; ".join(wrong))
        self.out, self.runs = Path(out), []
        with run_folder_env(report_to, self.out):
            for n in names(report_to):
                self.runs.append(getattr(self, f"_open_{n}")(run_name, start, config))

    def _open_tensorboard(self, run_name: str, start: int, config: dict[str, Any] | None):
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(os.environ["TENSORBOARD_LOGGING_DIR"], purge_step=start + 1 if start else None)

        def log(step: int, metrics: dict[str, float]) -> None:
            for k, v in metrics.items():
                writer.add_scalar(k, v, step)

        return log, writer.close

    def _open_trackio(self, run_name: str, start: int, config: dict[str, Any] | None):
        import trackio

        # embed=False: no dashboard server started inside a notebook kernel; `trackio show` opens it
        run = trackio.init(project=PROJECT, name=run_name, resume="allow", config=config, embed=False)
        return (lambda step, metrics: run.log(metrics, step=step)), run.finish

    def _open_wandb(self, run_name: str, start: int, config: dict[str, Any] | None):
        import wandb

        run = wandb.init(project=os.environ["WANDB_PROJECT"], name=run_name, dir=os.environ["WANDB_DIR"], config=config)
        return (lambda step, metrics: run.log(metrics, step=step)), run.finish

    def log(self, step: int, metrics: dict[str, Any]) -> None:
        """Log the numbers of ``metrics`` (other values are skipped) at ``step``."""
        numbers = {k: v for k, v in metrics.items() if isinstance(v, (int, float))}
        for log, _ in self.runs:
            log(step, numbers)

    def close(self) -> None:
        for _, close in self.runs:
            close()
        self.runs = []
