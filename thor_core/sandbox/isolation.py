"""The isolation layers a session's processes run under.

Two parts, used by two processes (the trusted side's handles on a session,
cgroups and process kills, are in ``resources``):

- ``prepare_plan`` (template, once): probes Landlock's ABI, opens the
  read-only paths (interpreter, libraries, a few devices) as O_PATH
  descriptors, compiles the seccomp filter to BPF, measures the template's address
  space. Forks inherit all of it, so a session's setup is cheap.
- ``enter_sandbox`` (a session's first state process, before any model code):
  joins the cgroups, unshares a mount (and optionally a network) namespace,
  mounts the private tmpfs work dir, hides directories other users cannot
  enter (``/root``) behind a tmpfs with only the interpreter bound back, sets
  rlimits, switches to the session's uid with no capabilities, restricts
  itself with Landlock and seccomp, closes every other descriptor, and
  returns the report: layer -> "active" | "missing: <why>".

Not covered: user namespaces for non-root users (without root there is no
mount or network namespace, no uid switch), filtering syscalls by
architecture beyond libseccomp's default (foreign-architecture syscalls kill
the caller).
"""

from __future__ import annotations

import ctypes
import errno
import os
import resource
import socket
import stat
import sys
import sysconfig
from dataclasses import dataclass

from thor_core.sandbox.config import LAYERS, SandboxConfig

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long

# ---------------------------------------------------------------- libc helpers

_CLONE_NEWNS, _CLONE_NEWNET = 0x00020000, 0x40000000
_MS_NOSUID, _MS_NODEV, _MS_BIND, _MS_REC, _MS_PRIVATE = 2, 4, 4096, 16384, 1 << 18
_PR_SET_DUMPABLE, _PR_CAPBSET_DROP, _PR_SET_NO_NEW_PRIVS, _PR_CAP_AMBIENT = 4, 24, 38, 47
_PR_CAP_AMBIENT_CLEAR_ALL = 4
_PR_SET_SECCOMP, _SECCOMP_MODE_FILTER = 22, 2


def _check(result: int, what: str) -> int:
    if result < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")
    return result


def prctl(option: int, arg: int = 0, arg3: int = 0) -> None:
    _check(
        _libc.prctl(option, ctypes.c_ulong(arg), ctypes.c_ulong(arg3), ctypes.c_ulong(0), ctypes.c_ulong(0)), "prctl"
    )


def _mount(source: str | None, target: str, fstype: str | None, flags: int, data: str | None) -> None:
    def enc(text: str | None) -> bytes | None:
        return None if text is None else text.encode()

    _check(_libc.mount(enc(source), enc(target), enc(fstype), ctypes.c_ulong(flags), enc(data)), f"mount {target}")


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]


def _write(path: str, value: str) -> None:
    with open(path, "w") as f:
        f.write(value)


def _clear_capabilities() -> None:
    header = _CapHeader(0x20080522, 0)  # _LINUX_CAPABILITY_VERSION_3
    data = (_CapData * 2)()
    _check(_libc.capset(ctypes.byref(header), data), "capset")


# ---------------------------------------------------------------- Landlock

_LANDLOCK_CREATE_RULESET, _LANDLOCK_ADD_RULE, _LANDLOCK_RESTRICT_SELF = 444, 445, 446
_LANDLOCK_RULE_PATH_BENEATH = 1
_FS_WRITE_FILE, _FS_READ_FILE, _FS_READ_DIR = 2, 4, 8  # EXECUTE (1) is never granted: nothing may be exec'd
_NET_BIND_TCP, _NET_CONNECT_TCP = 1, 2
_SCOPE_ABSTRACT_UNIX_SOCKET, _SCOPE_SIGNAL = 1, 2


class _RulesetAttr(ctypes.Structure):
    _fields_ = [
        ("handled_access_fs", ctypes.c_uint64),
        ("handled_access_net", ctypes.c_uint64),
        ("scoped", ctypes.c_uint64),
    ]


class _PathBeneathAttr(ctypes.Structure):
    _pack_ = 1
    _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


def landlock_abi() -> int:
    """Landlock's ABI version, or 0 when the kernel has none (or it is switched off)."""
    result = _libc.syscall(_LANDLOCK_CREATE_RULESET, None, ctypes.c_size_t(0), ctypes.c_uint32(1))
    return max(int(result), 0)


def _landlock_fs_rights(abi: int) -> int:
    """Every filesystem right the ABI knows (all are handled, so anything not granted is denied)."""
    return (1 << 16) - 1 if abi >= 5 else (1 << 15) - 1 if abi >= 3 else (1 << 14) - 1 if abi >= 2 else (1 << 13) - 1


def _landlock_restrict(abi: int, rules: list[tuple[int, int]], fs: bool, tcp: bool, signals: bool) -> None:
    """Restrict this process: files (all rights of ``abi`` but ``rules``), TCP bind/connect, signal scope."""
    handled_fs = _landlock_fs_rights(abi) if fs else 0
    attr = _RulesetAttr(
        handled_fs,
        _NET_BIND_TCP | _NET_CONNECT_TCP if tcp else 0,
        _SCOPE_ABSTRACT_UNIX_SOCKET | _SCOPE_SIGNAL if signals else 0,
    )
    size = 8 if abi < 4 else 16 if abi < 6 else 24
    ruleset = _check(
        _libc.syscall(_LANDLOCK_CREATE_RULESET, ctypes.byref(attr), ctypes.c_size_t(size), ctypes.c_uint32(0)),
        "landlock_create_ruleset",
    )
    try:
        for fd, rights in rules if fs else ():
            rule = _PathBeneathAttr(rights & handled_fs, fd)
            _check(
                _libc.syscall(
                    _LANDLOCK_ADD_RULE,
                    ctypes.c_int(ruleset),
                    ctypes.c_int(_LANDLOCK_RULE_PATH_BENEATH),
                    ctypes.byref(rule),
                    ctypes.c_uint32(0),
                ),
                "landlock_add_rule",
            )
        _check(
            _libc.syscall(_LANDLOCK_RESTRICT_SELF, ctypes.c_int(ruleset), ctypes.c_uint32(0)), "landlock_restrict_self"
        )
    finally:
        os.close(ruleset)


# ---------------------------------------------------------------- seccomp

# Refused with EPERM. socket: every family (TCP, UDP, raw, netlink, and Unix
# sockets that could reach a daemon); the code gets its channels ready-made.
# Signals by pid: the cell could otherwise kill its own session state.
_DENIED_SYSCALLS = tuple(
    """socket kill tkill tgkill rt_sigqueueinfo rt_tgsigqueueinfo pidfd_send_signal pidfd_getfd ptrace
    process_vm_readv process_vm_writev process_madvise kcmp unshare setns mount umount2 pivot_root chroot
    open_tree move_mount fsopen fsconfig fsmount fspick mount_setattr keyctl add_key request_key bpf
    perf_event_open userfaultfd kexec_load kexec_file_load reboot init_module finit_module delete_module
    swapon swapoff acct quotactl io_uring_setup io_uring_enter io_uring_register ioprio_set migrate_pages
    move_pages name_to_handle_at open_by_handle_at""".split()
)
# Refused when argument 0 (a pid) is not 0, i.e. aimed at another process.
_SELF_ONLY_SYSCALLS = ("prlimit64", "sched_setaffinity", "sched_setscheduler", "sched_setparam", "sched_setattr")
_NAMESPACE_FLAGS = (0x00020000, 0x02000000, 0x04000000, 0x08000000, 0x10000000, 0x20000000, 0x40000000)


def _compile_seccomp_filter() -> bytes:
    """The filter as a BPF program (libseccomp compiles it once, in the template)."""
    import tempfile

    import pyseccomp as sc

    deny = sc.ERRNO(errno.EPERM)
    rules = [(deny, name, ()) for name in _DENIED_SYSCALLS]
    rules += [(deny, name, (sc.Arg(0, sc.NE, 0),)) for name in _SELF_ONLY_SYSCALLS]
    rules += [(deny, "setpriority", (sc.Arg(1, sc.NE, 0),))]
    rules += [(deny, "socketpair", (sc.Arg(0, sc.NE, socket.AF_UNIX),))]
    rules += [(deny, "clone", (sc.Arg(0, sc.MASKED_EQ, flag, flag),)) for flag in _NAMESPACE_FLAGS]
    rules += [(sc.ERRNO(errno.ENOSYS), "clone3", ())]  # glibc then falls back to clone, whose flags we can see
    filt = sc.SyscallFilter(sc.ALLOW)
    for action, name, args in rules:
        try:
            filt.add_rule(action, name, *args)
        except (OSError, ValueError, RuntimeError):  # a syscall this libseccomp does not know
            pass
    with tempfile.TemporaryFile() as program:
        filt.export_bpf(program)
        program.seek(0)
        return program.read()


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def _load_seccomp(program: bytes) -> None:
    """Install a compiled BPF filter on this process (needs no_new_privs); about 20 us, no libseccomp call."""
    buffer = ctypes.create_string_buffer(program, len(program))
    fprog = _SockFprog(len(program) // 8, ctypes.addressof(buffer))
    prctl(_PR_SET_SECCOMP, _SECCOMP_MODE_FILTER, ctypes.addressof(fprog))


# ---------------------------------------------------------------- the plan (template)


@dataclass
class IsolationPlan:
    """What the template prepares once for every session (inherited by fork)."""

    landlock_abi: int
    landlock_rules: list[tuple[int, int]]  # (O_PATH fd, rights), read-only paths and devices
    hidden_dirs: dict[str, list[str]]  # dir others cannot enter -> the children on the way to read-only paths
    uid_switch_problem: str  # "" when a non-root uid can reach every read-only path
    seccomp_program: bytes  # compiled BPF; empty when seccomp is off or unavailable
    seccomp_problem: str
    address_space_base: int  # the template's mapped bytes: RLIMIT_AS = this + memory_mb
    cap_last_cap: int
    devnull_fd: int


def _library_paths() -> list[str]:
    """Interpreter, standard library, site-packages, and the directories of every loaded shared library."""
    paths: set[str] = set()
    for scheme in (
        sysconfig.get_paths(),
        sysconfig.get_paths(vars={"base": sys.base_prefix, "platbase": sys.base_exec_prefix}),
    ):
        paths.update(scheme[key] for key in ("stdlib", "platstdlib", "purelib", "platlib"))
    paths.update(p for p in sys.path if p and os.path.isdir(p))
    paths.add(os.path.realpath(sys.executable))
    with open("/proc/self/maps") as maps:
        for line in maps:
            parts = line.split(maxsplit=5)
            if len(parts) == 6 and ".so" in parts[5]:
                paths.add(os.path.dirname(parts[5].strip()))
    paths.update(("/lib", "/lib64", "/usr/lib", "/usr/lib64", "/usr/local/lib", "/etc/ld.so.cache"))
    real = {os.path.realpath(p) for p in paths if os.path.exists(p)}
    # Drop paths inside another kept directory (one rule covers its subtree).
    dirs = sorted(p for p in real if os.path.isdir(p))
    return sorted(p for p in real if not any(p != d and p.startswith(d.rstrip("/") + "/") for d in dirs))


def _closed_ancestors(path: str) -> list[tuple[str, str]]:
    """Each directory on the way to ``path`` that other users cannot enter, with its next component."""
    closed, current = [], "/"
    for part in path.strip("/").split("/"):
        if not os.stat(current).st_mode & stat.S_IXOTH:
            closed.append((current, part))
        current = os.path.join(current, part)
    return closed


def prepare_plan(cfg: SandboxConfig) -> IsolationPlan:
    """Probe and open everything sessions need; called once in the template after the preload."""
    off = set(cfg.disable_layers)
    abi = 0 if off >= {"landlock_fs", "landlock_tcp", "landlock_signals"} else landlock_abi()
    read_only = _library_paths()
    rules = [
        (os.open(p, os.O_PATH | os.O_CLOEXEC), _FS_READ_FILE | (_FS_READ_DIR if os.path.isdir(p) else 0))
        for p in read_only
    ]
    for device, rights in (
        ("/dev/null", _FS_READ_FILE | _FS_WRITE_FILE),
        ("/dev/zero", _FS_READ_FILE),
        ("/dev/urandom", _FS_READ_FILE),
        ("/dev/random", _FS_READ_FILE),
    ):
        if os.path.exists(device):
            rules.append((os.open(device, os.O_PATH | os.O_CLOEXEC), rights))
    hidden: dict[str, list[str]] = {}
    problem = ""
    for path in read_only:
        closed = _closed_ancestors(path)
        if len(closed) > 1:
            problem = f"{closed[1][0]} (on the way to {path}) is closed to other users"
        elif closed and closed[0][1] not in hidden.setdefault(closed[0][0], []):
            hidden[closed[0][0]].append(closed[0][1])
    seccomp_program, seccomp_problem = b"", ""
    if "seccomp" not in off:
        try:
            seccomp_program = _compile_seccomp_filter()
        except (ImportError, RuntimeError, OSError) as exc:
            seccomp_problem = (
                f"pyseccomp/libseccomp unavailable ({exc}); pip install pyseccomp and apt install libseccomp2"
            )
    with open("/proc/self/status") as status:
        vm_size = next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmSize:"))
    with open("/proc/sys/kernel/cap_last_cap") as f:
        cap_last = int(f.read())
    return IsolationPlan(
        landlock_abi=abi,
        landlock_rules=rules,
        hidden_dirs=hidden,
        uid_switch_problem=problem,
        seccomp_program=seccomp_program,
        seccomp_problem=seccomp_problem,
        address_space_base=vm_size,
        cap_last_cap=cap_last,
        devnull_fd=os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC),
    )


# ---------------------------------------------------------------- entering the sandbox (first state process)


@dataclass
class SessionSpec:
    """What one session's holder tells its first state process."""

    cgroup_procs: dict[str, str]  # layer -> its cgroup.procs file
    cgroup_problems: dict[str, str]
    workdir: str
    uid: int


def enter_sandbox(
    plan: IsolationPlan, cfg: SandboxConfig, spec: SessionSpec, keep_fds: tuple[int, ...]
) -> dict[str, str]:
    """Apply every layer to this process (it then forks the session's cells) and report each one.

    Runs as the holder's child before any model code; a layer that fails is
    reported missing and the rest still apply. Strict mode is judged by the
    holder from the report.
    """
    off = set(cfg.disable_layers)
    report: dict[str, str] = {}

    def attempt(layer: str, action, problem: str = "") -> None:
        if layer in off:
            report[layer] = "missing: disabled by config"
        elif problem:
            report[layer] = f"missing: {problem}"
        else:
            try:
                action()
                report[layer] = "active"
            except OSError as exc:
                report[layer] = f"missing: {exc}"

    os.setsid()
    for layer in ("cgroup_pids", "cgroup_memory"):
        procs = spec.cgroup_procs.get(layer, "")
        attempt(
            layer,
            lambda procs=procs: _write(procs, str(os.getpid())),
            spec.cgroup_problems.get(layer, "" if procs else "no cgroup"),
        )

    is_root = os.geteuid() == 0
    flags = (_CLONE_NEWNS if is_root and "private_tmpfs" not in off else 0) | (
        _CLONE_NEWNET if cfg.network_namespace and "network_namespace" not in off else 0
    )
    ns_problem = "" if is_root else "namespaces need root"
    if flags:
        try:
            _check(_libc.unshare(flags), "unshare")
            if flags & _CLONE_NEWNS:
                _mount(None, "/", None, _MS_REC | _MS_PRIVATE, None)
        except OSError as exc:
            flags, ns_problem = 0, str(exc)
    private_mounts = bool(flags & _CLONE_NEWNS)
    if cfg.network_namespace:
        attempt("network_namespace", lambda: None, "" if flags & _CLONE_NEWNET else ns_problem or "unshare failed")
    else:
        report["network_namespace"] = "missing: not requested (network_namespace=False)"

    uid_problem = plan.uid_switch_problem or (
        "" if private_mounts or not plan.hidden_dirs else f"{', '.join(plan.hidden_dirs)} is closed to other users"
    )
    switch_uid = is_root and not uid_problem and "unprivileged" not in off
    if switch_uid and private_mounts:
        try:
            _hide_closed_dirs(plan)
        except OSError as exc:
            switch_uid, uid_problem = False, f"cannot hide {', '.join(plan.hidden_dirs)}: {exc}"
    uid = spec.uid if switch_uid else os.getuid()

    def mount_tmpfs() -> None:
        options = f"size={cfg.disk_mb}m,nr_inodes=16384,mode=0700,uid={uid},gid={uid}"
        _mount("tmpfs", spec.workdir, "tmpfs", _MS_NOSUID | _MS_NODEV, options)

    attempt("private_tmpfs", mount_tmpfs, "" if private_mounts else ns_problem or "no mount namespace")
    if report["private_tmpfs"] != "active" and uid != os.getuid():
        os.chown(spec.workdir, uid, uid)
    os.chdir(spec.workdir)
    os.environ.update(HOME=spec.workdir, TMPDIR=spec.workdir)

    attempt("rlimits", lambda: _set_rlimits(plan, cfg, own_uid=switch_uid))
    attempt(
        "unprivileged",
        lambda: _drop_privileges(plan, uid),
        "" if switch_uid or not is_root else f"uid 0 (capabilities dropped): {uid_problem}",
    )
    if is_root and not switch_uid and "unprivileged" not in off:
        _drop_privileges(plan, 0)
    prctl(_PR_SET_NO_NEW_PRIVS, 1)

    landlock = {"landlock_fs": 1, "landlock_tcp": 4, "landlock_signals": 6}  # layer -> ABI it needs
    wanted = [layer for layer, need in landlock.items() if layer not in off and plan.landlock_abi >= need]
    landlock_problem = "" if plan.landlock_abi else "the kernel has no Landlock (needs Linux >= 5.13 with lsm=landlock)"
    if wanted:
        workdir_rule = (os.open(spec.workdir, os.O_PATH | os.O_CLOEXEC), _landlock_fs_rights(plan.landlock_abi))
        try:
            _landlock_restrict(
                plan.landlock_abi, plan.landlock_rules + [workdir_rule], *(n in wanted for n in landlock)
            )
        except OSError as exc:
            landlock_problem = str(exc)
    for layer, need in landlock.items():
        too_old = f"Landlock ABI {plan.landlock_abi} < {need}" if plan.landlock_abi else ""
        attempt(layer, lambda: None, landlock_problem or (too_old if plan.landlock_abi < need else ""))

    attempt("seccomp", lambda: _load_seccomp(plan.seccomp_program), plan.seccomp_problem)

    for fd in (0, 1, 2):
        os.dup2(plan.devnull_fd, fd)
    keep = sorted(set(keep_fds) | {0, 1, 2, plan.devnull_fd})
    for low, high in zip(keep, keep[1:] + [1 << 20]):
        os.closerange(low + 1, high)
    extra = set(os.environ) - set(clean_environment(cfg)) - {"HOME", "TMPDIR"}
    attempt("clean_env", lambda: None, f"inherited {sorted(extra)}" if extra else "")
    return {layer: report[layer] for layer in LAYERS}


def _hide_closed_dirs(plan: IsolationPlan) -> None:
    """Cover each directory other users cannot enter with an empty tmpfs, binding back only what the code needs.

    Runs in the private mount namespace; the children are opened there first
    (a bind source must be in the same namespace), then re-bound through
    their descriptors once the tmpfs hides the rest.
    """
    for parent, children in plan.hidden_dirs.items():
        fds = {child: os.open(os.path.join(parent, child), os.O_PATH | os.O_CLOEXEC) for child in children}
        _mount("tmpfs", parent, "tmpfs", _MS_NOSUID | _MS_NODEV, "size=64k,mode=0755")
        for child, fd in fds.items():
            target = os.path.join(parent, child)
            if stat.S_ISDIR(os.fstat(fd).st_mode):
                os.mkdir(target)
            else:
                open(target, "w").close()
            _mount(f"/proc/self/fd/{fd}", target, None, _MS_BIND | _MS_REC, None)
            os.close(fd)


def _set_rlimits(plan: IsolationPlan, cfg: SandboxConfig, own_uid: bool) -> None:
    """Address space, file size, open files, no core files, a CPU backstop; processes when the uid is the session's own.

    RLIMIT_NPROC counts every process of the real uid: exact for a per-session
    uid, ignored for root, and wrong for a shared non-root user (left alone).
    """
    limits = {
        resource.RLIMIT_AS: plan.address_space_base + (cfg.memory_mb << 20),
        resource.RLIMIT_FSIZE: cfg.disk_mb << 20,
        resource.RLIMIT_NOFILE: cfg.max_open_files,
        resource.RLIMIT_CORE: 0,
        resource.RLIMIT_CPU: 3600,  # backstop if every trusted process died; each cell lowers its soft limit
    }
    if own_uid:
        limits[resource.RLIMIT_NPROC] = cfg.max_processes
    for kind, value in limits.items():
        _, hard = resource.getrlimit(kind)
        value = value if hard == resource.RLIM_INFINITY else min(value, hard)
        resource.setrlimit(kind, (value, value))


def _drop_privileges(plan: IsolationPlan, uid: int) -> None:
    if os.geteuid() == 0:
        for cap in range(plan.cap_last_cap + 1):
            prctl(_PR_CAPBSET_DROP, cap)
        prctl(_PR_CAP_AMBIENT, _PR_CAP_AMBIENT_CLEAR_ALL)
        os.setgroups([])
        os.setresgid(uid, uid, uid)
        os.setresuid(uid, uid, uid)
        _clear_capabilities()
    prctl(_PR_SET_DUMPABLE, 0)


def clean_environment(cfg: SandboxConfig) -> dict[str, str]:
    """The whole environment the template (and so every cell) gets: nothing of the caller's."""
    env = {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "LANG": "C.UTF-8",
        "USER": "sandbox",
        "LOGNAME": "sandbox",
        "OPENBLAS_NUM_THREADS": "1",
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
        "NUMEXPR_NUM_THREADS": "1",
        "MALLOC_ARENA_MAX": "2",
        "MPLBACKEND": "Agg",
    }
    env.update(cfg.env)
    return env
