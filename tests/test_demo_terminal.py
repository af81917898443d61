"""The demo's quiet terminal: a stage's streams without known third-party noise, everything papermill saw in the
stage's run.log (the demo's run of a stage end to end: tests/test_demo.py)."""

from __future__ import annotations

import io
import logging

from thor_core import demo

# what notebooks streamed on the smoke and cpu profiles (2026-12-07/08), papermill's chunks as they came
RECORDED_STDERR = [
    "W1207 20:37:30.238000 8681 torch/_library/triton.py:53] Triton not available, find_triton_kernels = []\n",
    "/x/.venv/lib/python3.11/site-packages/vllm/triton_utils/dispatcher.py:138: FutureWarning: `torch.distributed."
    'reduce_op` is deprecated, please use `torch.distributed.ReduceOp` instead\n  if hasattr(value, "__dict__"):\n/x/'
    ".venv/lib/python3.11/site-packages/vllm/triton_utils/dispatcher.py:139: FutureWarning: `torch.distributed.reduce_"
    'op` is deprecated, please use `torch.distributed.ReduceOp` instead\n  wrapper = lookup(vars(value).get("kernel"))\n',
    "\rLoading safetensors checkpoint shards:   0% Completed | 0/1 [00:00<?, ?it/s]\n",
    "\rLoading safetensors checkpoint shards: 100% Completed | 1/1 [00:17<00:00, 17.99s/it]\n",
    "\n",
    # notebook 03 loads the start model and saves final/ (the cpu demo, 2026-12-08)
    "Loading weights:   0%|          | 0/291 [00:00<?, ?it/s]\rLoading weights: 100%|##########| 291/291 [00:00<00:00,"
    " 36581.52it/s]\n",
    "Writing model shards: 100%|##########| 1/1 [00:06<00:00,  6.54s/it]\n",
    "/x/thor_core/rl/trainer.py:88: UserWarning: a warning of the kit's own\n  warnings.warn(",
    "'a warning of the kit's own')\n",
]
RECORDED_STDOUT = [
    "actor: embedded:qwen2.5-coder-0.5b-instruct (vllm); critic: embedded:qwen2.5-coder-0.5b-instruct (vllm)\n",
    "rollouts (vllm): 0/8 (0%) elapsed 0s eta ?\nrollouts (vllm): 1/8 (12%) ",
    "elapsed 40s eta 4m40s\n",
]


def test_known_noise_stays_out_of_the_terminal_and_the_rest_comes_as_whole_lines():
    out = io.StringIO()
    stderr, stdout = demo.TerminalLines(out), demo.TerminalLines(out)
    for chunk in RECORDED_STDERR:
        stderr.write(chunk)
    for chunk in RECORDED_STDOUT:
        stdout.write(chunk)
    assert out.getvalue().splitlines() == [
        "/x/thor_core/rl/trainer.py:88: UserWarning: a warning of the kit's own",  # a warning that is not known noise
        "  warnings.warn('a warning of the kit's own')",
        RECORDED_STDOUT[0].strip(),
        "rollouts (vllm): 0/8 (0%) elapsed 0s eta ?",
        "rollouts (vllm): 1/8 (12%) elapsed 40s eta 4m40s",
    ]
    assert all(why for _, why in demo.KNOWN_NOISE)  # each filter says why


def test_cell_results_and_papermills_lines_go_to_run_log_only(tmp_path, monkeypatch, capsys):
    papermill_log = logging.getLogger("papermill")
    monkeypatch.setattr(papermill_log, "propagate", False)  # as demo.main sets it
    monkeypatch.setattr(papermill_log, "level", logging.INFO)
    with demo.stage_log(tmp_path / "stage" / "run.log"):
        papermill_log.info("Input Notebook:  notebooks/01_tirgen.ipynb\n")
        papermill_log.info("TIRGenParams(actor_model='embedded:qwen2.5-coder-0.5b-instruct', k=2)")
        papermill_log.warning("\n")
    papermill_log.info("after the stage: in no run.log")
    log = (tmp_path / "stage" / "run.log").read_text()
    assert "Input Notebook:" in log and "TIRGenParams(" in log and "after the stage" not in log
    assert len(log.splitlines()) == 2  # one line a record, no empty ones
    captured = capsys.readouterr()
    assert "Params(" not in captured.out + captured.err
