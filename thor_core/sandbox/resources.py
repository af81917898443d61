"""The trusted side's handles on a session: its cgroups, its work dir, its processes.

Used by the holder (and, for leftovers, by the template and the caller),
never by sandboxed code. Covered: a v1 pids and memory cgroup per session,
created under this process's own cgroups, with the memory cgroup's OOM
killer switched off and its OOM events delivered to an eventfd, so the
trusted side, not the kernel, decides what dies (the state never does);
listing a session's live processes (its cgroup, else a /proc scan of the
holder's descendants: the holder is their subreaper) and killing them; work
dirs; and cleaning up after sandboxes whose template died.

Not covered: cgroup v2 (reported missing by ``SessionCgroups.problems``; the
uid and rlimit layers remain).
"""

from __future__ import annotations

import errno
import os
import shutil
import signal
import tempfile
import time

from thor_core.sandbox.config import SandboxConfig

CGROUP_GROUP = "thor_sandbox"  # parent cgroup of all sessions, per controller
WORKDIR_PREFIX = "thor-sandbox-"


# ---------------------------------------------------------------- cgroups


def _v1_controller_dir(controller: str) -> str | None:
    """This process's cgroup directory for a v1 controller, or None where there is none."""
    mount = None
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            sep = fields.index("-")
            if fields[sep + 1] == "cgroup" and controller in fields[sep + 3].split(","):
                mount = fields[4]
                break
    if mount is None:
        return None
    with open("/proc/self/cgroup") as f:
        for line in f:
            _, controllers, path = line.rstrip("\n").split(":", 2)
            if controller in controllers.split(","):
                return os.path.join(mount, path.lstrip("/"))
    return None


def _write(path: str, value: str) -> None:
    with open(path, "w") as f:
        f.write(value)


class SessionCgroups:
    """The v1 pids and memory cgroups of one session (created by its holder, which stays outside them)."""

    def __init__(self, name: str, cfg: SandboxConfig):
        self.dirs: dict[str, str] = {}
        self.problems: dict[str, str] = {}
        self.oom_eventfd: int | None = None
        self._oom_control_fd: int | None = None
        limits = {
            "pids": {"pids.max": str(cfg.max_processes)},
            "memory": {"memory.limit_in_bytes": str((cfg.memory_mb + cfg.disk_mb) << 20), "memory.oom_control": "1"},
        }
        for controller, settings in limits.items():
            layer = f"cgroup_{controller}"
            if layer in cfg.disable_layers:
                self.problems[layer] = "disabled by config"
                continue
            base = _v1_controller_dir(controller)
            if base is None:
                self.problems[layer] = f"no cgroup v1 '{controller}' hierarchy (cgroup v2 is not supported yet)"
                continue
            path = os.path.join(base, CGROUP_GROUP, name)
            try:
                os.makedirs(path, exist_ok=True)
                for key, value in settings.items():
                    _write(os.path.join(path, key), value)
            except OSError as exc:
                self.problems[layer] = f"cannot create {path}: {exc.strerror} (needs root or a delegated cgroup)"
                self._rmdir(path)
                continue
            self.dirs[controller] = path
        if "memory" in self.dirs:
            self._watch_oom(self.dirs["memory"])

    def _watch_oom(self, path: str) -> None:
        memsw = os.path.join(path, "memory.memsw.limit_in_bytes")
        if os.path.exists(memsw):  # no swapping around the limit
            _write(memsw, open(os.path.join(path, "memory.limit_in_bytes")).read().strip())
        self.oom_eventfd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self._oom_control_fd = os.open(os.path.join(path, "memory.oom_control"), os.O_RDONLY | os.O_CLOEXEC)
        _write(os.path.join(path, "cgroup.event_control"), f"{self.oom_eventfd} {self._oom_control_fd}")

    def procs_files(self) -> dict[str, str]:
        """Layer name -> the cgroup.procs file a process writes its pid to, to join."""
        return {f"cgroup_{controller}": os.path.join(path, "cgroup.procs") for controller, path in self.dirs.items()}

    def pids(self) -> list[int] | None:
        """Live processes of the session (zombies excluded), or None without a cgroup."""
        for path in self.dirs.values():
            with open(os.path.join(path, "cgroup.procs")) as f:
                return [int(p) for p in f.read().split()]
        return None

    def under_oom(self) -> bool:
        if "memory" not in self.dirs:
            return False
        with open(os.path.join(self.dirs["memory"], "memory.oom_control")) as f:
            return any(line.split() == ["under_oom", "1"] for line in f)

    def clear_oom_event(self) -> None:
        if self.oom_eventfd is not None:
            try:
                os.eventfd_read(self.oom_eventfd)
            except BlockingIOError:
                pass

    def remove(self) -> None:
        for fd in (self.oom_eventfd, self._oom_control_fd):
            if fd is not None:
                os.close(fd)
        self.oom_eventfd = self._oom_control_fd = None
        for path in self.dirs.values():
            self._rmdir(path)
        self.dirs.clear()

    @staticmethod
    def _rmdir(path: str) -> None:
        for _ in range(200):  # a killed process leaves its cgroup a moment after the signal
            try:
                os.rmdir(path)
                return
            except FileNotFoundError:
                return
            except OSError as exc:
                if exc.errno != errno.EBUSY:
                    return
                time.sleep(0.005)


def _descendants(root_pid: int) -> list[int]:
    """Every live descendant of ``root_pid`` (a /proc scan: the fallback when there is no cgroup)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                after_name = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if after_name[0] != "Z":
            children.setdefault(int(after_name[1]), []).append(int(entry))
    found, todo = [], [root_pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def session_processes(cgroups: SessionCgroups, holder_pid: int) -> list[int]:
    """Live processes of a session: its cgroup, else the holder's descendants (the holder is their subreaper)."""
    pids = cgroups.pids()
    return pids if pids is not None else _descendants(holder_pid)


def kill_session_processes(cgroups: SessionCgroups, holder_pid: int, keep: int | None, wait: bool = True) -> None:
    """SIGKILL every process of the session but ``keep``; with ``wait``, until none is left alive.

    Rounds repeat because a process may fork between the listing and its
    kill; the pids limit bounds how many rounds that takes.
    """
    deadline = time.monotonic() + 5.0
    while True:
        victims = [p for p in session_processes(cgroups, holder_pid) if p not in (keep, holder_pid)]
        for pid in victims:
            _kill(pid)
        if not wait or not victims:
            return
        reap_children()
        if time.monotonic() > deadline:
            return
        time.sleep(0.0002)


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def reap_children() -> None:
    """Collect every child that has exited (the holder is the session's subreaper)."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


# ---------------------------------------------------------------- work dirs and stale sessions


def work_root(cfg: SandboxConfig) -> str:
    return cfg.work_root or tempfile.gettempdir()


def make_workdir(cfg: SandboxConfig, name: str) -> str:
    """An empty private dir (the first state process mounts the session's tmpfs on it, or chowns it)."""
    return tempfile.mkdtemp(prefix=f"{WORKDIR_PREFIX}{name}-", dir=work_root(cfg))


def remove_workdir(path: str) -> None:
    def make_writable(func, target, _exc):
        os.chmod(os.path.dirname(target), 0o700)
        func(target)

    if os.path.isdir(path):
        shutil.rmtree(path, onerror=make_writable)


def clear_workdir(path: str) -> None:
    """Empty a work dir (one-shot runs start from an empty one). ``path`` may be reached via /proc/PID/root."""
    for entry in os.listdir(path):
        target = os.path.join(path, entry)
        if os.path.isdir(target) and not os.path.islink(target):
            remove_workdir(target)
        else:
            os.unlink(target)


def _holder_alive(owner_pid: int) -> bool:
    try:
        with open(f"/proc/{owner_pid}/cmdline", "rb") as f:
            return b"thor_core.sandbox" in f.read()
    except OSError:
        return False


def remove_session_leftovers(name: str, cfg: SandboxConfig) -> None:
    """Kill what is left in session ``name``'s cgroups and remove them and its work dir (a holder died)."""
    for controller in ("pids", "memory"):
        base = _v1_controller_dir(controller)
        path = os.path.join(base, CGROUP_GROUP, name) if base else ""
        if not path or not os.path.isdir(path):
            continue
        for _ in range(100):
            try:
                with open(os.path.join(path, "cgroup.procs")) as f:
                    pids = [int(p) for p in f.read().split()]
            except OSError:  # its holder finished cleaning up meanwhile
                break
            if not pids:
                break
            for pid in pids:
                _kill(pid)
            time.sleep(0.005)
        SessionCgroups._rmdir(path)
    root = work_root(cfg)
    for entry in os.listdir(root) if os.path.isdir(root) else ():
        if entry.startswith(f"{WORKDIR_PREFIX}{name}-"):
            remove_workdir(os.path.join(root, entry))


def remove_stale(cfg: SandboxConfig) -> int:
    """Clean up after session holders that died without cleaning up; returns how many sessions were removed.

    A session is named after its holder's pid, so only leftovers of dead
    holders are touched, never a live session's (a pid reused by another
    program does not count as alive).
    """
    names: set[str] = set()
    for controller in ("pids", "memory"):
        base = _v1_controller_dir(controller)
        group = os.path.join(base, CGROUP_GROUP) if base else ""
        if group and os.path.isdir(group):
            names.update(os.listdir(group))
    root = work_root(cfg)
    for entry in os.listdir(root) if os.path.isdir(root) else ():
        if entry.startswith(WORKDIR_PREFIX):
            names.add(entry[len(WORKDIR_PREFIX) :].split("-")[0])
    stale = [n for n in names if n.isdigit() and not _holder_alive(int(n))]
    for name in stale:
        remove_session_leftovers(name, cfg)
    return len(stale)
