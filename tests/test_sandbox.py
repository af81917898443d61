"""The sandbox's behaviour: state from cell to cell, rollback, one-shot runs,
concurrency, batches, the success rule, strict mode, the isolation report,
degraded modes, and cleanup when the caller closes, exits or dies.

Attacks live in test_sandbox_adversarial.py, the HTTP front in
test_sandbox_server.py.
"""

import os
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from thor_core import tir
from thor_core.sandbox import LAYERS, Sandbox, SandboxConfig, SandboxError, SandboxUnavailable


@pytest.fixture(scope="module")
def sandbox():
    with Sandbox(SandboxConfig(timeout_s=5.0)) as sb:
        yield sb


def test_state_persists_across_cells(sandbox):
    with sandbox.session() as s:
        assert s.run("x = 2\nimport fractions\ndef double(v):\n    return 2 * v").exited_cleanly
        result = s.run("print(double(x), fractions.Fraction(1, 3))")
        assert result.success and result.stdout == "4 1/3\n" and result.observation == "4 1/3"


@pytest.mark.parametrize(
    "failing",
    [
        "x = 99\n1 / 0",
        "x = 99\nwhile True: pass",
        "x = 99\nimport os\nos._exit(0)",
        "x = 99\nimport sys\nsys.exit()",
        "x = 99\nb = bytearray(10**11)",
        "x = 99\nimport os\nos.kill(os.getpid(), 9)",
        "x = 99\ndef f(:",
    ],
)
def test_a_failed_cell_is_rolled_back(sandbox, failing):
    with sandbox.session() as s:
        s.run("x = 1")
        failed = s.run(failing, timeout_s=1.0)
        assert not failed.success and not failed.exited_cleanly
        after = s.run("print(x)")
        assert after.success and after.stdout == "1\n"


def test_files_persist_in_a_session_but_not_across_one_shot_runs(sandbox):
    with sandbox.session() as s:
        s.run("open('notes.txt', 'w').write('hi')")
        assert s.run("print(open('notes.txt').read())").stdout == "hi\n"
    assert sandbox.run("open('notes.txt', 'w').write('hi')\nprint('written')").success
    assert not sandbox.run("print(open('notes.txt').read())").success


def test_one_shot_runs_are_stateless(sandbox):
    assert sandbox.run("y = 5\nprint(y)").stdout == "5\n"
    result = sandbox.run("print(y)")
    assert not result.success and "NameError" in result.observation


def test_the_preload_is_already_imported(sandbox):
    result = sandbox.run("import sys\nprint(all(m in sys.modules for m in ('sympy', 'numpy', 'fractions')))")
    assert result.stdout == "True\n"
    sym = sandbox.run("import sympy as sp\nx = sp.symbols('x')\nprint(sp.solve(x**2 - 4, x))")
    assert sym.success and sym.observation == "[-2, 2]"


def test_the_spare_prefaults_sympy_without_touching_the_cell_namespace(sandbox):
    with sandbox.session() as s:
        s.run("x = 5")
        time.sleep(0.5)  # the spare has run the prefault lines
        result = s.run(
            "print(x, 'sp' in dir(), 'y' in dir())\nimport sympy\nprint(sympy.factor(sympy.Symbol('t')**2 - 1))"
        )
        assert result.stdout == "5 False False\n(t - 1)*(t + 1)\n"


@pytest.mark.parametrize("prefault", ["", "1 / 0\nimport os; os._exit(3)"])
def test_prefault_off_or_failing_leaves_cells_alone(prefault):
    with Sandbox(SandboxConfig(timeout_s=5.0, prefault=prefault)) as sb, sb.session() as s:
        assert s.run("x = 1").exited_cleanly
        assert s.run("print(x + 1)").stdout == "2\n"


def test_success_rule_and_observation_follow_tir(sandbox):
    silent = sandbox.run("x = 1")
    assert silent.exited_cleanly and not silent.success
    assert silent.observation == tir.ObservationFormat().silent_message
    error = sandbox.run("print('partial')\nraise ValueError('bad input')")
    assert not error.success and error.stdout == "partial\n" and error.observation == "ValueError: bad input"
    assert 'File "<cell' in error.stderr and "raise ValueError('bad input')" in error.stderr
    hidden = sandbox.run("import io, sys\nsys.stderr = io.StringIO()\n1 / 0")
    assert hidden.observation == "ZeroDivisionError: division by zero"
    long = sandbox.run("print('a' * 1000)")
    assert long.observation == tir.format_observation(True, "a" * 1000 + "\n", "")


def test_observation_format_is_configurable():
    fmt = tir.ObservationFormat(max_chars=10, head_chars=4, tail_chars=4, require_output=False)
    with Sandbox(SandboxConfig(observation=fmt, preload=())) as sb:
        assert sb.run("x = 1").success
        assert sb.run("print('0123456789abcdef')").observation == "0123...cdef"


def test_timeouts_default_and_per_call(sandbox):
    start = time.monotonic()
    result = sandbox.run("import time\nprint('before', flush=True)\ntime.sleep(30)", timeout_s=0.5)
    assert result.timed_out and result.killed and result.stdout == "before\n"
    assert time.monotonic() - start < 3
    assert 0.5 <= result.duration_s < 2


def test_back_to_serving_quickly_after_a_timeout(sandbox):
    with sandbox.session() as s:
        s.run("x = 1")
        s.run("while True: pass", timeout_s=0.3)
        start = time.monotonic()
        assert s.run("print(x)").success
        assert time.monotonic() - start < 1.0


def test_sessions_from_many_threads(sandbox):
    errors = []

    def trajectory(i):
        try:
            with sandbox.session() as s:
                s.run(f"acc = {i}")
                for _ in range(5):
                    s.run("acc += 1")
                assert s.run("print(acc)").stdout == f"{i + 5}\n"
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=trajectory, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors


def test_one_session_from_many_threads_is_serialised(sandbox):
    with sandbox.session() as s:
        s.run("n = 0")
        threads = [threading.Thread(target=s.run, args=("n += 1",)) for _ in range(10)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert s.run("print(n)").stdout == "10\n"


def test_run_batch_keeps_order_and_per_session_sequence(sandbox):
    a, b = sandbox.session(), sandbox.session()
    items = [
        (a, "v = 'a'"),
        (None, "print('one-shot')"),
        (b, "v = 'b'"),
        (a, "v += '1'"),
        (b, "print(v)"),
        (a, "print(v)"),
        (None, "print(2 + 2)", 2.0),
    ]
    results = sandbox.run_batch(items)
    assert [r.stdout for r in results] == ["", "one-shot\n", "", "", "b\n", "a1\n", "4\n"]
    a.close()
    b.close()


def test_sessions_open_in_the_background(sandbox):
    start = time.monotonic()
    s = sandbox.session()
    assert time.monotonic() - start < 0.05  # never blocks the caller (an event loop)
    s.run("pass")
    assert s.info["pid"] > 0
    s.close()
    with pytest.raises(SandboxError):
        s.run("print(1)")
    sandbox.session().close()  # closing a session that never ran a cell


def test_health_check_and_isolation_report(sandbox):
    report = sandbox.health_check()
    assert set(report) == set(LAYERS) and report == sandbox.isolation_report()
    assert report["network_namespace"].startswith("missing: not requested")


@pytest.mark.skipif(os.geteuid() != 0, reason="every layer is active only as root")
def test_every_layer_is_active_as_root():
    with Sandbox(SandboxConfig(network_namespace=True, strict=True, preload=())) as sb:
        assert sb.health_check() == {layer: "active" for layer in LAYERS}


def test_strict_mode_refuses_a_missing_required_layer():
    cfg = SandboxConfig(strict=True, required_layers=LAYERS, preload=())  # the network namespace is not on
    with Sandbox(cfg) as sb:
        with pytest.raises(SandboxUnavailable, match="network_namespace"):
            sb.health_check()
        with pytest.raises(SandboxUnavailable, match="strict mode"):
            sb.session().run("print(1)")


def test_unknown_layer_names_are_rejected():
    with pytest.raises(ValueError, match="unknown layer"):
        SandboxConfig(disable_layers=("seccom",))


def test_config_round_trips_through_json():
    cfg = SandboxConfig(
        preload=("math",),
        disable_layers=("seccomp",),
        observation=tir.ObservationFormat(max_chars=9, head_chars=4, tail_chars=4),
    )
    assert SandboxConfig.from_dict(cfg.to_dict()) == cfg


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to have the layers that are switched off here")
def test_degraded_without_cgroups_still_contains_fork_bombs_and_reports_it():
    cfg = SandboxConfig(disable_layers=("cgroup_pids", "cgroup_memory"), max_processes=16, timeout_s=1.5, preload=())
    with Sandbox(cfg) as sb:
        report = sb.isolation_report()
        assert report["cgroup_pids"] == report["cgroup_memory"] == "missing: disabled by config"
        assert report["unprivileged"] == "active"  # RLIMIT_NPROC counts for the session's own uid
        with sb.session() as s:
            s.run("marker = 1")
            bomb = s.run("import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass")
            assert bomb.killed
            assert s.run("print(marker)").stdout == "1\n"
            huge = s.run("b = bytearray(10**11)")
            assert huge.oom and not huge.success


def test_degraded_without_landlock_and_seccomp_reports_them():
    off = ("landlock_fs", "landlock_tcp", "landlock_signals", "seccomp")
    with Sandbox(SandboxConfig(disable_layers=off, preload=())) as sb:
        report = sb.isolation_report()
        assert all(report[layer] == "missing: disabled by config" for layer in off)
        assert sb.run("print(1)").success


def test_preload_failure_is_a_clear_error():
    with pytest.raises(SandboxUnavailable, match="no_such_module_xyz"):
        Sandbox(SandboxConfig(preload=("math", "no_such_module_xyz")))


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _wait_dead(pids, seconds=10.0) -> bool:
    deadline = time.monotonic() + seconds
    while any(_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    return not any(_alive(p) for p in pids)


def test_close_kills_everything(tmp_path):
    sb = Sandbox(SandboxConfig(preload=()))
    s = sb.session()
    s.run("import os, time\nif os.fork() == 0:\n    time.sleep(100)\nprint('x')")
    holder, template, workdir = s.info["pid"], sb.template_pid, s.info["workdir"]
    sb.close()
    assert _wait_dead([holder, template]) and not os.path.exists(workdir)


@pytest.mark.parametrize("ending", ["os._exit(0)", "os.kill(os.getpid(), 9)", "sys.exit(0)"])
def test_caller_death_or_exit_takes_the_sandbox_down(ending):
    """The template and holders watch the caller (pidfd): they clean up when it dies, even by SIGKILL."""
    script = textwrap.dedent(f"""
        import os, sys
        from thor_core.sandbox import Sandbox, SandboxConfig
        sb = Sandbox(SandboxConfig(preload=()))
        s = sb.session()
        s.run("import time\\nprint(1)")
        print(sb.template_pid, s.info["pid"], s.info["workdir"], flush=True)
        {ending}
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120).stdout.split()
    template, holder, workdir = int(out[0]), int(out[1]), out[2]
    assert _wait_dead([template, holder])
    deadline = time.monotonic() + 5
    while os.path.exists(workdir) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not os.path.exists(workdir)
