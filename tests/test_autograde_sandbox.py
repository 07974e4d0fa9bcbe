"""The kernel launcher on its own: resource limits, and what an isolated process can see and do."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from mi_course.grading import autograde, sandbox
from mi_course.grading.sandbox import LAUNCHER, Sandbox, isolation_available

from conftest import ROOT

ISOLATED = isolation_available()[0]


def _launch(settings: Sandbox, code: str, cwd, timeout=60):
    """Run ``code`` through the launcher; the script lives in ``cwd``, the process works in
    ``cwd/run`` (a private tmpfs when isolated)."""
    script = cwd / "probe.py"
    script.write_text(textwrap.dedent(code))
    script.chmod(0o644)
    (cwd / "run").mkdir(exist_ok=True)
    settings.cwd = str(cwd / "run")
    return subprocess.run([sys.executable, str(LAUNCHER), json.dumps(settings.__dict__), "--", sys.executable,
                           str(script)], capture_output=True, text=True, timeout=timeout, cwd=cwd)


def test_cpu_limit_stops_a_busy_loop(tmp_path):
    done = _launch(Sandbox(isolate=False, rlimits={"CPU": 1}), "while True:\n    pass\n", tmp_path, timeout=30)
    assert done.returncode != 0


def test_memory_limit_turns_a_bomb_into_memory_error(tmp_path):
    done = _launch(Sandbox(isolate=False, rlimits={"AS": 512 * 2**20}), "x = bytearray(2 * 2**30)\n", tmp_path)
    assert "MemoryError" in done.stderr


def test_file_size_limit(tmp_path):
    code = "import signal\nsignal.signal(signal.SIGXFSZ, signal.SIG_IGN)\nopen('big', 'wb').write(b'x' * 10**6)\n"
    done = _launch(Sandbox(isolate=False, rlimits={"FSIZE": 10**5}), code, tmp_path)
    assert "File too large" in done.stderr


@pytest.mark.skipif(not ISOLATED, reason="user namespaces unavailable here")
def test_isolated_process_sees_only_its_folder(tmp_path):
    secret, work, elsewhere = tmp_path / "secret", tmp_path / "work", tmp_path / "elsewhere"
    for folder in (secret, work, elsewhere):
        folder.mkdir()
    (secret / "hidden_tests.txt").write_text("the answer is 42")
    outside = Path(sys.prefix) / f"probe-{tmp_path.name}.txt"  # the Python install: visible, read-only
    # Files only root (or root's group) may read, where the kernel can see them.
    root_only, group_only = Path(sys.prefix) / f"root-{tmp_path.name}", Path(sys.prefix) / f"group-{tmp_path.name}"
    for path, mode in ((root_only, 0o600), (group_only, 0o640)):
        path.write_text("secret")
        path.chmod(mode)
    devices = sorted(str(p) for p in Path("/dev").iterdir() if p.is_block_device())[:1]
    code = f"""
        import ctypes, os, socket

        def listing(path):
            try:
                return os.listdir(path)
            except OSError:
                return []

        found = {{"secret": listing({str(secret)!r}), "solutions": listing({str(ROOT / "solutions")!r})}}
        found["umount"] = ctypes.CDLL(None).umount2({str(secret)!r}.encode(), 2)
        found["secret_after_umount"] = listing({str(secret)!r})
        for name, path in (("own", "mine.txt"), ("elsewhere", {str(elsewhere / "x.txt")!r}),
                           ("outside", {str(outside)!r})):
            try:
                os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
                open(path, "w").write("x")
                found[name] = "written"
            except OSError as err:
                found[name] = err.strerror
        try:
            socket.create_connection(("1.1.1.1", 53), timeout=2)
            found["network"] = "reached"
        except OSError:
            found["network"] = "none"
        found["pids"] = sorted(int(p) for p in os.listdir("/proc") if p.isdigit())
        found["uid"] = os.getuid()
        status = open("/proc/self/status").read()
        found["caps"] = [l.split()[1] for l in status.splitlines() if l.startswith("CapEff")]
        found["groups"] = os.getgroups()
        found["uid_map"] = open("/proc/self/uid_map").read().split()
        found["readable"] = []
        for path in [{str(root_only)!r}, {str(group_only)!r}, *{devices!r}]:
            try:
                open(path, "rb").read(1)
                found["readable"].append(path)
            except OSError:
                pass
        print(repr(found))
        """
    box = Sandbox(isolate=True, hide=[str(secret), str(ROOT / "solutions")], writable=[str(work)])
    try:
        done = _launch(box, code, work)
        assert done.returncode == 0, done.stderr
        found = eval(done.stdout)
        assert found["secret"] == [] and found["secret_after_umount"] == [] and found["umount"] != 0
        assert found["solutions"] == [] and any((ROOT / "solutions").iterdir())
        # its working folder is private: nothing it leaves there reaches the host
        assert found["own"] == "written" and not (work / "run" / "mine.txt").exists()
        assert found["outside"] == "Read-only file system"
        # /tmp is private: what the process writes there is gone afterwards
        assert not (elsewhere / "x.txt").exists()
        assert found["network"] == "none"
        assert found["pids"] == [1] and found["uid"] != 0
        assert found["caps"] == ["0000000000000000"] and found["groups"] == []
        assert found["readable"] == [], found["readable"]
        if os.getuid() == 0:  # a root grader: the kernel is nobody on the host, not root
            assert found["uid_map"] == ["0", "0", "1", "1000", "65534", "1"], found["uid_map"]
            assert found["uid"] == 1000
    finally:
        for path in (outside, root_only, group_only):
            path.unlink(missing_ok=True)


def test_unavailable_isolation_is_loud_or_fatal(monkeypatch):
    monkeypatch.setattr(sandbox, "isolation_available", lambda: (False, "no namespaces on this system"))
    with pytest.warns(UserWarning, match="KERNEL ISOLATION UNAVAILABLE"):
        assert autograde._use_isolation("auto") is False
    with pytest.raises(RuntimeError, match="no namespaces"):
        autograde._use_isolation("required")
    assert autograde._use_isolation("off") is False


@pytest.mark.parametrize("isolate", [False, True])
def test_launcher_ends_its_kernel_when_the_grader_goes(tmp_path, isolate):
    """Issue 15, item 9 at the launcher: its stdin is the grader's pipe (the lifeline); when the
    grader's end closes, the launcher kills the kernel, and a child the kernel started, at once."""
    import signal
    import time

    if isolate and not ISOLATED:
        pytest.skip("user namespaces unavailable here")
    (tmp_path / "run").mkdir()
    tmp_path.chmod(0o755)  # a root grader's kernel is nobody: it must reach its script
    code = "import subprocess, sys, time\nsubprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)'])\n" \
           "print('ready', flush=True)\ntime.sleep(600)\n"
    (tmp_path / "probe.py").write_text(code)
    (tmp_path / "probe.py").chmod(0o644)
    box = Sandbox(isolate=isolate, cwd=str(tmp_path / "run"), writable=[str(tmp_path)], lifeline=True)
    read, write = os.pipe()
    launcher = subprocess.Popen([sys.executable, str(LAUNCHER), json.dumps(box.__dict__), "--", sys.executable,
                                 str(tmp_path / "probe.py")], stdin=read, stdout=subprocess.PIPE,
                                start_new_session=True)  # as jupyter_client starts it
    os.close(read)
    try:
        family = []
        deadline = time.monotonic() + 120  # against a hang only
        while len(family) < 3 and time.monotonic() < deadline:  # launcher -> kernel -> its child
            family = [launcher.pid]
            for _ in range(3):
                family += [int(p) for p in Path(f"/proc/{family[-1]}/task/{family[-1]}/children").read_text().split()
                           if p][:1] if Path(f"/proc/{family[-1]}").exists() else []
            time.sleep(0.2)
        assert len(family) >= 3, family
        os.close(write)  # the grader is gone
        launcher.wait(timeout=60)
        time.sleep(1)
        alive = [p for p in family if Path(f"/proc/{p}").exists()
                 and Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"]
        assert alive == []
    finally:
        launcher.kill()
        for pid in family:
            with __import__("contextlib").suppress(OSError):
                os.kill(pid, signal.SIGKILL)
