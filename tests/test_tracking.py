"""``report_to`` (thor_core.tracking): RL's step metrics reach TensorBoard and trackio as they reach metrics.jsonl,
read back from each backend's own files, offline; SFT's TRL run writes its TensorBoard events into the run folder;
bad values and missing packages are refused before a run starts."""

from __future__ import annotations

import math
import sys

import pytest

from thor_core import tracking
from thor_core.params import ParamsError
from thor_core.rl.config import load_params as rl_params
from thor_core.rl.run import MetricsLog, read_metrics
from thor_core.sft.config import SFTParams


def fake_step(i: int) -> dict[str, float]:
    """What the trainer hands ``MetricsLog.write`` for one step (sums ``finalize_metrics`` turns into means)."""
    m = {
        "reward": 0.25 * i, "tool_success": 1 / (i + 2), "step_pass_rate": 0.5, "rows": 8 + i, "loss": -0.1 * i + 1e-7,
        "time/step_s": 2.5 + i, "trained_tokens": 100.0 * i, "entropy_sum": 37.0 * i, "optimizer_steps": 1,
    }  # fmt: skip
    if i > 1:  # step 1 has no engine log-probs: its logprob_diff_abs is NaN in metrics.jsonl
        m.update(logprob_diff_n=i, logprob_diff_abs_sum=0.003 * i)
    return m


def same(a: float | None, b: float) -> bool:
    if b != b:  # NaN in metrics.jsonl; a backend may keep it or store nothing
        return a is None or a != a
    return a == pytest.approx(b, rel=1e-6, abs=1e-6)


@pytest.fixture
def offline_trackio(monkeypatch):
    """No Space, no server: trackio keeps to its local SQLite file."""
    for var in ("TRACKIO_SPACE_ID", "TRACKIO_SERVER_URL", "TRACKIO_DIR", "TENSORBOARD_LOGGING_DIR"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    # trackio reads TRACKIO_DIR once, at import; TRL imports it as a side effect (trl.extras.profiling), so an
    # earlier test in this process may have imported it for the default folder: these tests get a fresh import,
    # as a stage's own process or kernel does (and the old modules come back afterwards)
    for name in [m for m in sys.modules if m == "trackio" or m.startswith("trackio.")]:
        monkeypatch.delitem(sys.modules, name)


def tensorboard_scalars(folder) -> dict[str, dict[int, float]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(folder))
    acc.Reload()
    return {tag: {e.step: e.value for e in acc.Scalars(tag)} for tag in acc.Tags()["scalars"]}


def test_rl_metrics_reach_tensorboard_and_trackio_as_they_reach_metrics_jsonl(tmp_path, offline_trackio):
    out = tmp_path / "03_rl"
    out.mkdir()
    log = MetricsLog(out, True, ["tensorboard", "trackio"], total=3, start=0)
    for i in (1, 2, 3):
        log.write(i, fake_step(i), lines=True)
    log.close()
    rows = read_metrics(out)
    assert [r["step"] for r in rows] == [1, 2, 3] and math.isnan(rows[0]["logprob_diff_abs"])
    keys = [k for k in rows[0] if k != "step"]
    assert all(list(r) == list(rows[0]) for r in rows)

    tb = tensorboard_scalars(out / "tb")
    assert set(tb) == set(keys)
    for r in rows:
        assert all(same(tb[k][r["step"]], r[k]) for k in keys), r

    from trackio.sqlite_storage import SQLiteStorage

    assert (out / "trackio" / SQLiteStorage.get_project_db_filename(tracking.PROJECT)).exists()  # in the run folder
    logged = {e["step"]: e for e in SQLiteStorage.get_logs(tracking.PROJECT, "03_rl")}
    assert sorted(logged) == [1, 2, 3]
    for r in rows:
        assert all(same(logged[r["step"]].get(k), r[k]) for k in keys), (r, logged[r["step"]])


def test_a_resumed_rl_run_purges_the_tensorboard_steps_a_kill_undid(tmp_path, offline_trackio):
    log = MetricsLog(tmp_path, True, "tensorboard", total=3, start=0)
    for i in (1, 2, 3):
        log.write(i, fake_step(i), lines=True)
    log.close()
    log = MetricsLog(tmp_path, True, "tensorboard", total=3, start=1)  # resumed from the step-1 checkpoint
    for i in (2, 3):
        log.write(i, dict(fake_step(i), reward=9.0), lines=True)
    log.close()
    assert tensorboard_scalars(tmp_path / "tb")["reward"] == {1: 0.25, 2: 9.0, 3: 9.0}
    assert [r["reward"] for r in read_metrics(tmp_path)] == [0.25, 9.0, 9.0]


def test_bad_report_to_is_refused_with_what_to_do(monkeypatch):
    with pytest.raises(ParamsError, match="report_to.*did you mean 'tensorboard'"):
        rl_params(None, {"report_to": "tensorbord"})
    with pytest.raises(ValueError, match="'none' cannot be combined"):
        SFTParams(report_to=["none", "trackio"])
    with pytest.raises(ValueError, match="unknown backend 'mlflow'"):
        SFTParams(report_to=["mlflow"])
    real = tracking.importlib.util.find_spec
    monkeypatch.setattr(tracking.importlib.util, "find_spec", lambda n: None if n == "trackio" else real(n))
    with pytest.raises(ValueError, match="report_to 'trackio' needs the trackio package: pip install trackio"):
        SFTParams(report_to=["tensorboard", "trackio"])
    assert tracking.names("none") == [] and tracking.names(["trackio", "tensorboard", "trackio"]) == [
        "trackio",
        "tensorboard",
    ]
