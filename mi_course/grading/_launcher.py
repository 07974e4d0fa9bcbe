"""Start a grading kernel inside limits: ``python _launcher.py SETTINGS -- <kernel command...>``.

Standalone on purpose (no ``mi_course`` import): it runs before the kernel, as
the kernel's parent. SETTINGS is JSON (see ``sandbox.Sandbox``):

- ``rlimits``: ``{"AS": bytes, "CPU": seconds, "FSIZE": bytes, "NOFILE": n}``;
- ``isolate``: enter new user, mount, network and PID namespaces, hide
  ``hide`` (folders replaced by empty read-only tmpfs), give fresh private
  tmpfs to ``scratch`` (``/tmp``, ``/dev/shm``...), make every other mount
  read-only except the folders in ``writable`` (the student's working folder,
  the kernel's connection/socket folder), which keep their paths;
- ``cwd``: the kernel's working folder; with ``isolate`` it is a fresh private
  tmpfs (nothing the kernel leaves there is ever seen by the grader);
- ``lifeline``: stdin is a pipe whose other end the grader holds: when it closes
  (the grader ended, however), the launcher kills the kernel and everything it
  started (the whole PID namespace) at once.

Who the kernel runs as: a root grader's kernel runs as ``nobody`` (uid 65534, no
supplementary groups, no capabilities, ``no_new_privs``); folders it needs below
folders ``nobody`` cannot enter (``/root/.cache/...``) are bound back under an
empty read-only tmpfs. Any other grader's kernel keeps the grader's uid (inside a
user namespace, without capabilities).

With no kernel command it only checks that the isolation works (exit 0).

Exit status 3 with a message on stderr when isolation was asked for and fails.
"""

from __future__ import annotations

import ctypes
import json
import os
import resource
import select
import signal
import sys

CLONE_NEWNS, CLONE_NEWUSER, CLONE_NEWPID, CLONE_NEWNET = 0x00020000, 0x10000000, 0x20000000, 0x40000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 32, 4096, 16384, 1 << 18
MS_NOATIME, MS_NODIRATIME, MS_RELATIME = 1024, 2048, 1 << 21
PR_SET_PDEATHSIG, PR_SET_NO_NEW_PRIVS = 1, 38
INSIDE_ID = 1000
NOBODY = 65534  # the host uid and gid of a root grader's kernel
# statvfs flag -> mount flag, for the flags a remount in a user namespace must keep.
_KEEP = {os.ST_NOSUID: MS_NOSUID, os.ST_NODEV: MS_NODEV, os.ST_NOEXEC: MS_NOEXEC,
         os.ST_NOATIME: MS_NOATIME, os.ST_NODIRATIME: MS_NODIRATIME, os.ST_RELATIME: MS_RELATIME}
# Kernel file systems left as they are (writes there need privileges, or are devices).
_SKIP = ("/proc", "/sys", "/dev")

_libc = ctypes.CDLL(None, use_errno=True)


def _check(result: int, what: str) -> None:
    if result != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def _mount(source: str | None, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    enc = lambda s: None if s is None else s.encode()  # noqa: E731
    _check(_libc.mount(enc(source), enc(target), enc(fstype), ctypes.c_ulong(flags), enc(data)),
           f"mount {source or ''} on {target}")


def _write(path: str, text: str) -> None:
    with open(path, "w") as f:
        f.write(text)


def _mountpoints() -> list[str]:
    """Mount points of this mount namespace (field 5 of mountinfo, octal escapes decoded)."""
    with open("/proc/self/mountinfo") as f:
        points = [line.split()[4] for line in f]
    return [p.encode().decode("unicode_escape") for p in points]


def _readonly_everywhere(keep: list[str]) -> None:
    """Remount every mount read-only except ``keep`` and kernel file systems."""
    for point in _mountpoints():
        if point in keep or any(point == s or point.startswith(s + "/") for s in _SKIP):
            continue
        try:
            st = os.statvfs(point)
        except OSError:
            continue  # hidden under another mount
        flags = MS_REMOUNT | MS_BIND | MS_RDONLY
        flags |= sum(m for s, m in _KEEP.items() if st.f_flag & s)
        _mount(None, point, None, flags)


def isolate(settings: dict) -> None:
    """Enter the namespaces and arrange the mounts; the caller then forks (PID namespace).

    A root grader: a helper outside writes the maps (``0 -> root`` to set up the mounts,
    ``INSIDE_ID -> nobody`` for the kernel, which drops to it before it execs). Anyone
    else: the grader's own uid, mapped to itself."""
    uid, gid = os.getuid(), os.getgid()
    flags = CLONE_NEWUSER | CLONE_NEWNS | CLONE_NEWNET | CLONE_NEWPID
    if uid == 0:
        go, done = os.pipe()
        me = os.getpid()
        helper = os.fork()
        if helper == 0:
            os.close(done)
            os.read(go, 1)
            try:
                _write(f"/proc/{me}/uid_map", f"0 0 1\n{INSIDE_ID} {NOBODY} 1\n")
                _write(f"/proc/{me}/gid_map", f"0 0 1\n{INSIDE_ID} {NOBODY} 1\n")
            except OSError:
                os._exit(1)
            os._exit(0)
        os.close(go)
        try:
            _check(_libc.unshare(flags), "unshare")
        finally:
            os.close(done)  # the helper goes on (and fails if unshare did)
        _, status = os.waitpid(helper, 0)
        if status != 0:
            raise OSError(1, "could not map the kernel's user to nobody")
    else:
        _check(_libc.unshare(flags), "unshare")
        # The grader's uid inside: the kernel loses every capability when it execs, so it
        # cannot unmount what hides the secrets.
        _write("/proc/self/setgroups", "deny")
        _write("/proc/self/uid_map", f"{uid or INSIDE_ID} {uid} 1")
        _write("/proc/self/gid_map", f"{gid or INSIDE_ID} {gid} 1")
    _mount(None, "/", None, MS_REC | MS_PRIVATE)


def _unreachable_by_nobody(path: str) -> str | None:
    """The highest folder above ``path`` (or itself) that ``nobody`` cannot enter, if any."""
    parts = path.strip("/").split("/")
    for i in range(1, len(parts) + 1):
        folder = "/" + "/".join(parts[:i])
        try:
            st = os.stat(folder)
        except OSError:
            return None
        if not st.st_mode & 0o001:
            return folder
    return None


def drop_privileges() -> None:
    """Become ``INSIDE_ID`` (nobody on the host for a root grader): no groups, no capabilities."""
    if os.getuid() != 0:
        return
    os.setgroups([])
    os.setresgid(INSIDE_ID, INSIDE_ID, INSIDE_ID)
    os.setresuid(INSIDE_ID, INSIDE_ID, INSIDE_ID)  # uid 0 -> non-zero: every capability is dropped
    if os.getuid() != INSIDE_ID or os.getgroups():
        raise OSError(1, "could not drop privileges")


def arrange_mounts(settings: dict) -> None:
    """Inside the new PID namespace: fresh /proc, scratch tmpfs (with what the kernel needs
    from below it bound back), hidden folders, writable folders, read-only rest."""
    writable = [os.path.realpath(p) for p in settings.get("writable", [])]
    scratch = [os.path.realpath(p) for p in settings.get("scratch", [])]
    hide = [os.path.realpath(p) for p in settings.get("hide", [])]
    # What the kernel needs (Python, packages, model cache) may live below a scratch folder
    # (a checkout in /tmp): keep it reachable through a descriptor, bind it back after.
    visible = [os.path.realpath(p) for p in settings.get("visible", []) if os.path.isdir(p)]
    # A root grader's kernel runs as nobody: folders it needs below one nobody cannot enter
    # (/root/.cache/mi-course) come back under an empty read-only tmpfs there.
    covers = sorted({c for p in visible if (c := _unreachable_by_nobody(p))}) if os.getuid() == 0 else []
    covers = [c for c in covers if not any(c.startswith(o.rstrip("/") + "/") for o in covers if o != c)]
    visible = [p for p in visible if any(p.startswith(s.rstrip("/") + "/") for s in scratch + covers)]
    # Keep the writable folders reachable through descriptors while their parents get hidden.
    fds = [os.open(p, os.O_PATH | os.O_DIRECTORY) for p in writable]
    visible_fds = [os.open(p, os.O_PATH | os.O_DIRECTORY) for p in visible]
    _mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    mounted = []
    for path in sorted(set(scratch), key=len):
        if os.path.isdir(path):
            _mount("tmpfs", path, "tmpfs", MS_NOSUID | MS_NODEV, "size=256m,mode=1777")
            mounted.append(path)
    for path in covers:
        _mount("tmpfs", path, "tmpfs", MS_NOSUID | MS_NODEV, "size=1m,mode=755")
        mounted.append(path)
    for path, fd in zip(visible, visible_fds):
        os.makedirs(path, exist_ok=True)
        _mount(f"/proc/self/fd/{fd}", path, None, MS_BIND | MS_REC)
        os.close(fd)
    for path in sorted(set(hide) - set(scratch), key=len):
        if not os.path.isdir(path):
            continue  # absent, or already under a hidden parent
        _mount("tmpfs", path, "tmpfs", MS_NOSUID | MS_NODEV, "size=1m,mode=755")
        mounted.append(path)
    for path, fd in zip(writable, fds):
        os.makedirs(path, exist_ok=True)
        _mount(f"/proc/self/fd/{fd}", path, None, MS_BIND)
        os.close(fd)
    hide += covers  # read-only at the end, like the hidden folders
    cwd = os.path.realpath(settings["cwd"]) if settings.get("cwd") else None
    if cwd:  # a private working folder: the grader never sees (nor follows) what is left in it
        os.makedirs(cwd, exist_ok=True)
        _mount("tmpfs", cwd, "tmpfs", MS_NOSUID | MS_NODEV,
               f"size=256m,mode=700,uid={INSIDE_ID if os.getuid() == 0 else os.getuid()},"
               f"gid={INSIDE_ID if os.getuid() == 0 else os.getgid()}")
        mounted.append(cwd)
    # Hidden folders: read-only once the writable folders below them have their mount points.
    for path in mounted:
        if path in hide:
            _mount(None, path, None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV)
    _readonly_everywhere(keep=writable + [p for p in mounted if p in scratch] + ([cwd] if cwd else []))


def set_limits(limits: dict) -> None:
    for name, value in limits.items():
        if value:
            which = getattr(resource, f"RLIMIT_{name}")
            hard = value + 5 if name == "CPU" else value  # SIGXCPU first, SIGKILL 5 s later
            resource.setrlimit(which, (int(value), int(hard)))


def _exec(command: list[str], settings: dict) -> None:
    set_limits(settings.get("rlimits", {}))
    if settings.get("cwd"):
        os.chdir(settings["cwd"])
    null = os.open(os.devnull, os.O_RDWR)
    # The lifeline stays with the launcher. The kernel's own stdout/stderr (start-up messages,
    # raw writes before ipykernel captures them) never reach the grader's terminal: what a
    # cell writes to fd 1 or 2 comes back through ipykernel as capped stream output.
    for fd in (0, 1, 2) if settings.get("lifeline") else (0,):
        os.dup2(null, fd)
    os.close(null)
    os.execvp(command[0], command)


def _supervise(child: int, settings: dict) -> int:
    """Wait for the kernel; kill it (and its namespace) when the grader's lifeline closes."""
    # The kernel gets SIGINT from jupyter_client through the process group: don't die of it.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    for number in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(number, lambda *_: os.kill(child, signal.SIGKILL))
    # No thread here (none can be started after unshare(CLONE_NEWPID)): poll the child's pidfd
    # and the lifeline together.
    pidfd = os.pidfd_open(child)
    poller = select.poll()
    poller.register(pidfd, select.POLLIN)
    if settings.get("lifeline"):
        poller.register(0, select.POLLIN | select.POLLHUP)
    while True:
        try:
            ready = dict(poller.poll())
        except InterruptedError:
            continue
        if pidfd in ready:
            break
        if 0 in ready:
            try:
                more = os.read(0, 4096)
            except OSError:
                more = b""
            if not more:  # the grader is gone: end the kernel (its whole namespace) now
                os.kill(child, signal.SIGKILL)
                if os.getpgrp() == os.getpid():  # and, unisolated, what it started in our group
                    signal.signal(signal.SIGTERM, signal.SIG_DFL)
                    os.killpg(0, signal.SIGKILL)
                poller.unregister(0)
    while True:
        try:
            _, status = os.waitpid(child, 0)
            return os.waitstatus_to_exitcode(status) % 256
        except InterruptedError:
            continue


def main(argv: list[str]) -> int:
    split = argv.index("--") if "--" in argv else len(argv)
    settings = json.loads(argv[1]) if split > 1 else {}
    command = argv[split + 1:]
    # No parent-death signal here: the lifeline ends this launcher, which first kills its kernel
    # (and, unisolated, its process group); the kernel has one, tied to this launcher.
    if not settings.get("isolate"):
        if not command:
            return 0
        child = os.fork()
        if child == 0:
            _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
            _exec(command, settings)
        return _supervise(child, settings)
    try:
        isolate(settings)
    except (OSError, AttributeError) as err:
        print(f"mi-course sandbox: cannot isolate the kernel: {err}", file=sys.stderr)
        return 3
    read, write = os.pipe()
    child = os.fork()
    if child == 0:  # PID 1 of the new namespace
        os.close(read)
        _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        try:
            arrange_mounts(settings)
            drop_privileges()
            # changing credentials cleared the parent-death signal: set it again
            _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
            _check(_libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "no_new_privs")
        except OSError as err:
            os.write(write, f"mi-course sandbox: cannot arrange mounts: {err}".encode())
            os._exit(3)
        if not command:
            os.close(write)
            os._exit(0)
        # Home-folder state goes to the private /tmp (the home folder is read-only).
        for name, folder in (("IPYTHONDIR", "ipython"), ("MPLCONFIGDIR", "matplotlib"), ("XDG_CONFIG_HOME", "config"),
                             ("HF_HOME", "huggingface")):
            os.environ[name] = f"/tmp/{folder}"
        os.close(write)
        _exec(command, settings)
    os.close(write)
    error = os.read(read, 4096).decode()
    if error:
        print(error, file=sys.stderr)
        os.waitpid(child, 0)
        return 3
    return _supervise(child, settings)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
