"""Bounded, isolated execution of one submission's kernel during autograding.

``BoundedExecute`` replaces nbgrader's ``Execute`` preprocessor: it starts the
kernel through ``_launcher.py`` (rlimits, and on Linux new user/mount/net/PID
namespaces, see ``Sandbox``), kills it when the submission's wall-time budget
is spent, caps the output it keeps, and when the kernel dies marks every cell
that did not run with an error output, so a test that never ran scores 0.

What the isolation protects against (Linux with unprivileged user namespaces):
reading the course's ``solutions/``, ``autograder/``, ``.git``, the grader's work
folder (gradebook with the hidden tests, other students' copies and feedback)
and the submissions folder; writing anywhere but the student's own working
folder and a private ``/tmp``; unmounting that hiding (the kernel runs as a
non-root uid without capabilities, even for a root grader); the network (empty
network namespace); signalling or inspecting the grader's processes (PID
namespace with its own ``/proc``); running forever or exhausting memory
(wall-time kill, per-cell timeout, RLIMIT_CPU, RLIMIT_AS, RLIMIT_FSIZE, capped
output). What it does not protect against: reading other files the grader's
user can read (its home folder, other projects); many processes (no
RLIMIT_NPROC, which root ignores anyway: memory and the wall time still bound
them); kernel exploits; lying objects inside the lesson's own checks (the checks
convert values with ``mi_course.checks``); a submission that games a visible
check the hidden tests don't cover. Where namespaces are unavailable (macOS,
hardened distributions) only the limits apply, with a loud warning.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path

from jupyter_client.manager import AsyncKernelManager
from nbclient.exceptions import CellTimeoutError, DeadKernelError
from nbformat import NotebookNode
from traitlets import Float, Integer

from nbgrader.preprocessors import Execute

LAUNCHER = Path(__file__).with_name("_launcher.py")
# The ename of the error output written into cells that never ran or were cut short.
NOT_RUN = "NotRunByGrader"
TRUNCATED = "[mi-course: output truncated here: the submission printed more than the grader keeps]"


@dataclass
class Limits:
    """Per-submission limits. ``cell_timeout`` and ``wall`` in seconds, sizes in bytes."""

    cell_timeout: int = 600
    wall: float = 1800.0
    cpu: int = 1800
    memory: int = 8 * 2**30
    file_size: int = 512 * 2**20
    output: int = 10 * 2**20
    notebook: int = 50 * 2**20

    def rlimits(self) -> dict:
        return {"AS": self.memory, "CPU": self.cpu, "FSIZE": self.file_size, "CORE": 0}


def kernel_needs() -> list[str]:
    """What a lesson's kernel reads: Python, the packages (``mi_course`` included), the model cache."""
    import site

    from mi_course import models

    paths = [Path(sys.prefix), Path(sys.base_prefix), Path(models.__file__).parent, models.cache_dir(),
             *map(Path, site.getsitepackages())]
    return [str(p.resolve()) for p in paths if p.exists()]


@dataclass
class Sandbox:
    """What one kernel may see: ``hide`` becomes empty, only ``writable`` (plus a private
    ``/tmp`` and ``/dev/shm``) can be written, no network. ``isolate`` False: rlimits only."""

    isolate: bool
    cwd: str = ""
    hide: list[str] = field(default_factory=list)
    writable: list[str] = field(default_factory=list)
    visible: list[str] = field(default_factory=kernel_needs)  # kept even below a scratch folder
    scratch: list[str] = field(default_factory=lambda: ["/tmp", "/var/tmp", "/dev/shm"])
    rlimits: dict = field(default_factory=dict)


# The settings of the kernel being started: the grader grades one submission at a time.
current: Sandbox = Sandbox(isolate=False)
# Connection folders of the kernels started, removed once their notebook is done.
_run_dirs: list[Path] = []


class GradebookLock:
    """One writer at a time on a gradebook shared by parallel graders (``flock`` on ``path``).

    A grader holds it while nbgrader reads and writes the gradebook;
    ``BoundedExecute`` lets go of it while the student's kernel runs, so several
    graders execute side by side and never write the SQLite file together (rendering
    feedback, which only reads it, runs without the lock).
    """

    def __init__(self, path: Path):
        self.path, self._fd = Path(path), None

    def __enter__(self):
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc):
        fd, self._fd = self._fd, None
        os.close(fd)  # closing releases the lock

    @contextlib.contextmanager
    def released(self):
        """Let go for the duration of the block (no-op unless held)."""
        if self._fd is None:
            yield
            return
        self.__exit__()
        try:
            yield
        finally:
            self.__enter__()


# The lock of this grader process (set by the grader; None: nothing to share).
gradebook_lock: GradebookLock | None = None


def isolation_available() -> tuple[bool, str]:
    """Whether the launcher can isolate a kernel here, and if not why (its error)."""
    if not sys.platform.startswith("linux"):
        return False, f"namespaces are Linux-only (this is {sys.platform})"
    probe = Sandbox(isolate=True)
    try:
        done = subprocess.run([sys.executable, str(LAUNCHER), json.dumps(asdict(probe)), "--"],
                              capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as err:
        return False, str(err)
    return done.returncode == 0, done.stderr.strip()


class SandboxKernelManager(AsyncKernelManager):
    """A kernel started through the launcher, on Unix sockets (``ipc``): they work across
    network namespaces, and live in a folder of their own that the kernel can see."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.run_dir = Path(tempfile.mkdtemp(prefix="mi-k-"))
        self.transport = "ipc"
        self.ip = str(self.run_dir / "k")
        self.connection_file = str(self.run_dir / f"kernel-{uuid.uuid4().hex[:8]}.json")
        _run_dirs.append(self.run_dir)

    def format_kernel_cmd(self, extra_arguments=None) -> list[str]:
        command = super().format_kernel_cmd(extra_arguments)
        settings = Sandbox(**{**asdict(current), "writable": [*current.writable, str(self.run_dir)]})
        return [sys.executable, str(LAUNCHER), json.dumps(asdict(settings)), "--", *command]


class BoundedExecute(Execute):
    """nbgrader's Execute with a wall-time budget, an output cap and honest dead-kernel handling."""

    wall_limit = Float(1800.0, help="Seconds for the whole notebook; then the kernel is killed.").tag(config=True)
    max_output_bytes = Integer(10 * 2**20, help="Output bytes kept per notebook.").tag(config=True)

    # What happened to the last notebook, for the grader's report (one submission at a time).
    incidents: list[str] = []

    def __init__(self, **kwargs):
        kwargs.setdefault("kernel_manager_class", SandboxKernelManager)
        super().__init__(**kwargs)
        self.kernel_name = "python3"

    def preprocess_cell(self, cell, resources, index):
        self._index = index
        return super().preprocess_cell(cell, resources, index)

    def output(self, outs, msg, display_id, cell_index):
        size = len(json.dumps(msg.get("content", {}), default=str))
        self._output_bytes += size
        if self._output_bytes > self.max_output_bytes:
            if not self._truncated:
                self._truncated = True
                BoundedExecute.incidents.append(f"output over {self.max_output_bytes // 1024} KiB truncated")
                outs.append(NotebookNode(output_type="stream", name="stderr", text=TRUNCATED + "\n"))
            return None
        return super().output(outs, msg, display_id, cell_index)

    def _kill(self) -> None:
        self._wall_hit = True
        process = getattr(getattr(self.km, "provisioner", None), "process", None)
        if process is not None:
            try:
                os.killpg(process.pid, signal.SIGKILL)  # the kernel runs in a session of its own
            except OSError:
                pass

    def preprocess(self, nb, resources=None, km=None):
        BoundedExecute.incidents = []
        self._index, self._output_bytes, self._truncated, self._wall_hit = -1, 0, False, False
        timer = threading.Timer(self.wall_limit, self._kill)
        timer.daemon = True
        timer.start()
        try:
            with gradebook_lock.released() if gradebook_lock else contextlib.nullcontext():
                return super().preprocess(nb, resources, km)
        except (DeadKernelError, CellTimeoutError, RuntimeError) as err:
            # CellTimeoutError: the kernel ignored the interrupt (it is shut down on the way out).
            # RuntimeError: the kernel did not start (e.g. the sandbox refused) or died on start-up.
            if isinstance(err, CellTimeoutError):
                reason = f"timed out after {self.timeout} s and ignored the interrupt: kernel stopped"
            elif self._wall_hit:
                reason = f"wall-time limit of {self.wall_limit:.0f} s for the notebook reached: kernel killed"
            elif isinstance(err, DeadKernelError):
                reason = "the kernel died (crash, os._exit, CPU or memory limit)"
            else:
                reason = f"the kernel could not start ({str(err).splitlines()[0][:200] if str(err) else err!r})"
            where = self._index
            BoundedExecute.incidents.append(f"{reason} in cell {where + 1}" if where >= 0 else reason)
            for index, cell in enumerate(nb.cells):
                if cell.cell_type == "code" and index >= max(where, 0):
                    cell.setdefault("outputs", []).append(NotebookNode(
                        output_type="error", ename=NOT_RUN, evalue=reason, traceback=[f"{NOT_RUN}: {reason}"]))
            return nb, resources
        finally:
            timer.cancel()
            while _run_dirs:
                shutil.rmtree(_run_dirs.pop(), ignore_errors=True)
