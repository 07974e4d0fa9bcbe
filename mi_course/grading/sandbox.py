"""Bounded, isolated execution of one submission's kernel during autograding.

``BoundedExecute`` replaces nbgrader's ``Execute`` preprocessor: it starts the
kernel through ``_launcher.py`` (rlimits, and on Linux new user/mount/net/PID
namespaces, see ``Sandbox``), kills it when the submission's wall-time budget
is spent, caps the output it keeps, and when the kernel dies marks every cell
that did not run with an error output, so a test that never ran scores 0.

What the isolation protects against (Linux with user namespaces): reading the
course's ``solutions/``, ``autograder/``, ``.git``, the grader's work folder
(gradebook with the hidden tests, other students' copies and feedback) and the
submissions folder; writing anywhere but a private working folder (a tmpfs the
grader never reads: the executed notebook comes back as messages), a private
``/tmp`` and its socket folder; unmounting that hiding (no capabilities); the
host's root: a root grader's kernel runs as ``nobody`` (uid 65534, no groups);
the network (empty network namespace); signalling or inspecting the grader's
processes (PID namespace with its own ``/proc``); outliving the grader (its
launcher kills the namespace when the grader's end of its stdin pipe closes);
running forever (wall-time kill, per-cell timeout then a kill when the
interrupt is ignored, RLIMIT_CPU) or exhausting memory (RLIMIT_AS, RLIMIT_FSIZE,
output capped over every channel). Hidden tests run through ``_guard.py``.
What it does not protect against: reading world-readable files outside the
hidden folders (and, for a grader that is not root, what the grader can read);
many processes (no RLIMIT_NPROC); files written into its socket folder (each
bounded by RLIMIT_FSIZE); kernel exploits; code that reads the interpreter's
internals by routes the guard does not see (it can forge the guard's verdict);
lying objects inside the lesson's own checks; a submission that games a
visible check the hidden tests don't cover. Where namespaces are unavailable
(macOS, hardened distributions) only the limits apply, with a loud warning.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import fcntl
import hashlib
import hmac
import json
import os
import re
import secrets
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
from jupyter_core.utils import run_sync
from nbclient.exceptions import CellTimeoutError, DeadKernelError
from nbformat import NotebookNode
from traitlets import Float, Instance, Integer

from nbgrader.preprocessors import Execute

from mi_course.grading.integrity import is_test_cell

LAUNCHER = Path(__file__).with_name("_launcher.py")
# The ename of the error output written into cells that never ran or were cut short.
NOT_RUN = "NotRunByGrader"
# The ename of the error output written into every test cell of a submission held for review.
HELD = "HeldForReview"
NOBODY = 65534  # a root grader's kernel runs as this uid and gid (see _launcher.py)
GUARD_SOURCE = Path(__file__).with_name("_guard.py").read_text()
GUARD_LINE = re.compile(r"\n?MI-GUARD (\S+) (pass|fail|held) (\S*) ([0-9a-f]{64})\n?")
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
    interrupt_grace: float = 10.0  # seconds a timed-out cell has to stop once interrupted

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
    lifeline: bool = False  # stdin is the grader's pipe: the kernel ends when it closes


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


class Run:
    """One submission's execution, shared by the grader and ``BoundedExecute``: what the kernel
    may do (``box``; None: limits only), the gradebook lock to let go of while it runs, reasons
    to hold the submission found before it runs, and what happened (``incidents``, ``held``).

    It reaches ``BoundedExecute`` through nbgrader's configuration, which deep-copies its
    values: a copy is this same object, so what the executor records, the grader reads."""

    def __init__(self, box: Sandbox | None = None, lock: GradebookLock | None = None,
                 held_before: list[str] = ()):
        self.box, self.lock, self.held_before = box, lock, list(held_before)
        self.incidents: list[str] = []
        self.held: list[str] = []
        # Connection folders of the kernels started and the grader's ends of their lifelines
        # (closing one ends its kernel): removed and closed once the notebook is done.
        self.run_dirs: list[Path] = []
        self.lifelines: list[int] = []

    def __deepcopy__(self, memo):
        return self


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
    network namespaces, and live in a folder of their own that the kernel can see. The kernel
    works in ``run_dir/work`` (a private tmpfs when isolated: whatever it leaves there is never
    seen by the grader), and its launcher's stdin is a pipe the grader holds (``lifeline``):
    when the grader ends, however it ends, the launcher kills the kernel."""

    run = Instance(Run, args=(), help="The submission's run: its sandbox (none: limits only), where "
                   "lifelines and folders are recorded.")

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.run_dir = Path(tempfile.mkdtemp(prefix="mi-k-"))
        self.work_dir = self.run_dir / "work"
        self.work_dir.mkdir()
        # A root grader's isolated kernel runs as nobody: it must reach its sockets and connection file.
        self._nobody = bool(self.run.box and self.run.box.isolate) and os.geteuid() == 0
        if self._nobody:
            for path in (self.run_dir, self.work_dir):
                os.chown(path, NOBODY, NOBODY)
        self.transport = "ipc"
        self.ip = str(self.run_dir / "k")
        self.connection_file = str(self.run_dir / f"kernel-{uuid.uuid4().hex[:8]}.json")
        self.run.run_dirs.append(self.run_dir)

    def write_connection_file(self, **kwargs):
        super().write_connection_file(**kwargs)
        if self._nobody and os.path.isfile(self.connection_file):
            os.chown(self.connection_file, NOBODY, NOBODY)

    async def _async_launch_kernel(self, kernel_cmd, **kw):
        read, write = os.pipe()  # the lifeline: not inherited by anything else (close-on-exec)
        self.run.lifelines.append(write)
        kw["stdin"] = read
        try:
            await super()._async_launch_kernel(kernel_cmd, **kw)
        finally:
            os.close(read)

    def format_kernel_cmd(self, extra_arguments=None) -> list[str]:
        command = super().format_kernel_cmd(extra_arguments)
        box = self.run.box or Sandbox(isolate=False)
        settings = Sandbox(**{**asdict(box), "cwd": str(self.work_dir), "lifeline": True,
                              "writable": [*box.writable, str(self.run_dir)]})
        return [sys.executable, str(LAUNCHER), json.dumps(asdict(settings)), "--", *command]


def _guard_line(key: str, nonce: str, verdict: str, sha: str, detail: str) -> str:
    return hmac.new(bytes.fromhex(key), f"{nonce} {verdict} {sha} {detail}".encode(), hashlib.sha256).hexdigest()


def _size(content) -> int:
    return len(json.dumps(content, default=str))


class BoundedExecute(Execute):
    """nbgrader's Execute with a wall-time budget, an output cap, honest dead-kernel handling,
    a kill when an interrupted cell does not stop, and hidden tests run through ``_guard``."""

    wall_limit = Float(1800.0, help="Seconds for the whole notebook; then the kernel is killed.").tag(config=True)
    max_output_bytes = Integer(10 * 2**20, help="Output bytes kept per notebook.").tag(config=True)
    interrupt_grace = Float(10.0, help="Seconds a timed-out cell has to stop after the interrupt; then "
                            "the kernel is killed and the rest is not run.").tag(config=True)

    run = Instance(Run, args=(), help="The submission's run: sandbox, gradebook lock, and where what "
                   "happened is recorded.").tag(config=True)

    def __init__(self, **kwargs):
        kwargs.setdefault("kernel_manager_class", SandboxKernelManager)
        kwargs.setdefault("store_widget_state", False)  # widget state would be one more uncapped channel
        super().__init__(**kwargs)
        self.kernel_name = "python3"
        self._key = None

    def create_kernel_manager(self):
        self.km = self.kernel_manager_class(kernel_name=self.kernel_name, config=self.config, run=self.run)
        return self.km

    # -- the hidden tests' guard -------------------------------------------------------------
    async def async_start_new_kernel_client(self):
        kc = await super().async_start_new_kernel_client()
        self._key = secrets.token_hex(32)
        source = GUARD_SOURCE + f"\ninstall({self._key!r})\n"
        code = f"exec(compile({source!r}, '<mi-course grader>', 'exec'), {{}})"
        msg_id = kc.execute(code, silent=True, store_history=False)
        reply = await self.async_wait_for_reply(msg_id)
        if not reply or reply["content"].get("status") != "ok":
            why = (reply or {}).get("content", {})
            raise RuntimeError(f"the grader's check could not be installed: {why.get('ename')}: {why.get('evalue')}")
        return kc

    async def async_execute_cell(self, cell, cell_index, execution_count=None, store_history=True):
        self._index = cell_index
        guarded = self._key is not None and cell.cell_type == "code" and is_test_cell(cell) and cell.source.strip()
        self._verdicts, nonce, original = [], secrets.token_hex(8), cell.source
        if guarded:
            encoded = base64.b64encode(original.encode()).decode()
            cell.source = f'__import__("sys").modules["_mi_grader_guard"].run({nonce!r}, {encoded!r})'
        self._busy = cell_index
        try:
            result = await super().async_execute_cell(cell, cell_index, execution_count, store_history)
        finally:
            self._busy = None
            cell.source = original
            if self._stuck is not None:
                self._stuck.cancel()
                self._stuck = None
        if guarded:
            if not self._judge(cell, nonce, hashlib.sha256(original.encode()).hexdigest()):
                await self._diagnose()
        return result

    async def _diagnose(self) -> None:
        """The guard did not report: ask it what changed, outside any cell (user expressions run
        no transformer). Only words for the human who reviews the submission."""
        expression = '__import__("sys").modules["_mi_grader_guard"].diagnose()'
        try:
            msg_id = self.kc.execute("", silent=True, store_history=False, user_expressions={"why": expression})
            reply = await asyncio.wait_for(self.async_wait_for_reply(msg_id), 30)
            why = reply["content"]["user_expressions"]["why"]
            text = why.get("data", {}).get("text/plain", "") if why.get("status") == "ok" else why.get("ename", "")
        except Exception:  # noqa: BLE001  a kernel that does not answer: no words to add
            return
        self.run.held[-1] += f" [the kernel says: {text.strip(chr(39) + chr(34))[:300]}]"

    # nbclient binds its sync entry points to its own coroutines: bind them to these.
    start_new_kernel_client = run_sync(async_start_new_kernel_client)
    execute_cell = run_sync(async_execute_cell)

    def _judge(self, cell, nonce: str, sha: str) -> bool:
        """The test cell's verdict from the guard's line: pass, fail (an error output is ensured)
        or held; no valid line (or a forged one) is held too. False: the guard did not report."""
        name = cell.metadata.get("nbgrader", {}).get("grade_id", f"cell {self._index + 1}")
        valid, forged = [], 0
        for got_nonce, verdict, detail, mac in self._verdicts:
            if got_nonce == nonce and hmac.compare_digest(mac, _guard_line(self._key, nonce, verdict, sha, detail)):
                valid.append((verdict, base64.b64decode(detail).decode("utf-8", "replace")))
            else:
                forged += 1
        if forged:
            self.run.held.append(f"{name}: {forged} check line(s) the grader did not write")
        elif len(valid) != 1:
            if not any(o.get("ename") == "CellTimeoutError" for o in cell.outputs):
                self.run.held.append(f"{name}: the grader's check did not report (how cells run was changed)")
                return False
        elif valid[0][0] == "held":
            self.run.held.append(f"{name}: {valid[0][1]}")
        elif valid[0][0] == "fail" and not any(o.output_type == "error" for o in cell.outputs):
            ename, _, evalue = valid[0][1].partition(": ")
            cell.outputs.append(NotebookNode(output_type="error", ename=ename, evalue=evalue,
                                             traceback=[f"{ename}: {evalue}"]))
        return True

    # -- output: every channel counted, the guard's lines taken out ---------------------------
    def _over(self, size: int) -> bool:
        self._output_bytes += size
        if self._output_bytes <= self.max_output_bytes:
            return False
        if not self._truncated:
            self._truncated = True
            self.run.incidents.append(f"output over {self.max_output_bytes // 1024} KiB truncated")
        return True

    def process_message(self, msg, cell, cell_index):
        msg_type = msg["msg_type"]
        if msg_type.startswith("comm"):
            return None  # widgets: neither their state nor their outputs are kept
        transient = msg["content"].get("transient") or {}
        display_id = transient.get("display_id") if isinstance(transient, dict) else None
        if display_id and msg_type in ("execute_result", "display_data", "update_display_data"):
            # an update rewrites every output sharing the id: each copy counts
            shared = sum(len(v) for v in self._display_id_map.get(display_id, {}).values())
            if shared and self._over(_size(msg["content"]) * shared):
                if msg_type == "update_display_data":
                    return None
                msg["content"]["transient"] = {}  # appended below (counted there), never updated again
        return super().process_message(msg, cell, cell_index)

    def output(self, outs, msg, display_id, cell_index):
        content = msg.get("content", {})
        if msg["msg_type"] == "stream" and "MI-GUARD" in content.get("text", ""):
            self._verdicts += GUARD_LINE.findall(content["text"])
            content["text"] = GUARD_LINE.sub("", content["text"])
            if not content["text"]:
                return None
        if msg["msg_type"] == "error":  # always kept (a failed test must score 0), but bounded
            content["evalue"] = str(content.get("evalue", ""))[:4096]
            content["traceback"] = [str(line)[:4096] for line in content.get("traceback", [])[-40:]]
            return super().output(outs, msg, display_id, cell_index)
        if self._over(_size(content)):
            if self._truncated and not self._truncation_shown:
                self._truncation_shown = True
                outs.append(NotebookNode(output_type="stream", name="stdout", text=TRUNCATED + "\n"))
            return None
        return super().output(outs, msg, display_id, cell_index)

    # -- time: the whole notebook, and a timed-out cell that ignores the interrupt -----------
    async def _async_handle_timeout(self, timeout, cell=None):
        if self.interrupt_on_timeout and self._stuck is None and self._busy is not None:
            stuck_cell = self._busy
            self._stuck = threading.Timer(self.interrupt_grace, self._kill_stuck, args=(stuck_cell,))
            self._stuck.daemon = True
            self._stuck.start()
        return await super()._async_handle_timeout(timeout, cell)

    def _kill_stuck(self, index: int) -> None:
        if self._busy == index:
            self._stuck_killed = index
            self._kill()

    def _kill(self) -> None:
        self._dead = True
        process = getattr(getattr(self.km, "provisioner", None), "process", None)
        if process is not None:
            try:
                os.killpg(process.pid, signal.SIGKILL)  # the launcher's session: it and the kernel
            except OSError:
                pass

    def _wall(self) -> None:
        self._wall_hit = True
        self._kill()

    def preprocess(self, nb, resources=None, km=None):
        self.run.incidents, self.run.held = [], list(self.run.held_before)
        self._index, self._output_bytes, self._truncated, self._wall_hit = -1, 0, False, False
        self._truncation_shown, self._busy, self._stuck, self._stuck_killed, self._dead = False, None, None, None, False
        self._key, self._verdicts = None, []
        timer = threading.Timer(self.wall_limit, self._wall)
        timer.daemon = True
        timer.start()
        try:
            with self.run.lock.released() if self.run.lock else contextlib.nullcontext():
                nb, resources = super().preprocess(nb, resources, km)
        except (DeadKernelError, CellTimeoutError, RuntimeError) as err:
            # CellTimeoutError: the kernel ignored the interrupt (it is shut down on the way out).
            # RuntimeError: the kernel did not start (e.g. the sandbox refused) or died on start-up.
            self._dead = True
            if self._stuck_killed is not None or isinstance(err, CellTimeoutError):
                reason = (f"timed out after {self.timeout} s and did not stop when interrupted: kernel killed, "
                          "the rest not run")
            elif self._wall_hit:
                reason = f"wall-time limit of {self.wall_limit:.0f} s for the notebook reached: kernel killed"
            elif isinstance(err, DeadKernelError):
                reason = "the kernel died (crash, os._exit, CPU or memory limit)"
            else:
                reason = f"the kernel could not start ({str(err).splitlines()[0][:200] if str(err) else err!r})"
            where = self._index
            self.run.incidents.append(f"{reason} in cell {where + 1}" if where >= 0 else reason)
            for index, cell in enumerate(nb.cells):
                if cell.cell_type == "code" and index >= max(where, 0):
                    cell.setdefault("outputs", []).append(NotebookNode(
                        output_type="error", ename=NOT_RUN, evalue=reason, traceback=[f"{NOT_RUN}: {reason}"]))
        finally:
            timer.cancel()
            if self._stuck is not None:
                self._stuck.cancel()
            while self.run.lifelines:
                with contextlib.suppress(OSError):
                    os.close(self.run.lifelines.pop())
            while self.run.run_dirs:
                shutil.rmtree(self.run.run_dirs.pop(), ignore_errors=True)
        if self.run.held:
            reason = "; ".join(dict.fromkeys(self.run.held))[:600]
            for cell in nb.cells:
                if cell.cell_type == "code" and is_test_cell(cell):
                    cell.setdefault("outputs", []).append(NotebookNode(
                        output_type="error", ename=HELD, evalue=reason, traceback=[f"{HELD}: {reason}"]))
        return nb, resources
