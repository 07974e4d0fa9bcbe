"""Grade a folder of submissions with nbgrader: bounded, isolated, tamper-aware, one row per student.

For each ``submissions/<student>/`` the grader reads the notebook defensively
(``integrity.read_submission``), restores the graded cells (``integrity.repair``),
lets nbgrader autograde it with ``sandbox.BoundedExecute`` (kernel in a
sandbox with limits) and writes nbgrader's HTML feedback. Every student gets a
row: ``status`` is ``graded``, ``graded (<what happened>)`` or ``error: <why>``.
The submissions folder is only read. With a persistent ``work_dir`` a result is
reused while the submitted bytes and the limits are unchanged, so a batch that
crashed resumes where it stopped and grading twice gives the same rows.
``jobs=N`` grades N submissions at once in worker processes that share one
gradebook: each holds ``sandbox.GradebookLock`` except while its kernel runs.

A run goes in stages, each a function: ``_plan`` (limits, the kernel's sandbox,
the assignment), ``_sort_out`` (the rows settled before anything runs, and
what to grade), ``_graded`` (each submission graded by ``_grade`` with its own
``sandbox.Run``), then the CSV. No module holds state between submissions.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import multiprocessing
import os
import re
import signal
import stat
import shutil
import sys
import tempfile
import warnings
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import nbformat
from tqdm.auto import tqdm
from traitlets.config import Config

from mi_course.course import course_root, solution_notebook
from mi_course.grading import sandbox
from mi_course.grading.config import nbgrader_config
from mi_course.grading.integrity import HOLD_NOTE, Unreadable, is_test_cell, read_submission, repair, suspicious

GRADED = "graded"
# Status prefix of a submission that changed how later cells run (or read the interpreter's internals):
# it earns nothing automatically (every test cell scores 0 in the gradebook) until a human grades it.
HELD = "held for manual review"
# Status prefix of failures of the grader itself, not of the submission: never reused from the cache.
RETRY = "error: grader failure: "


def autograded_cells(lesson: str) -> dict[str, float]:
    """``grade_id -> points`` of the lesson's autograded test cells (graded, not a solution)."""
    nb = nbformat.read(solution_notebook(lesson), as_version=4)
    return {cell.metadata.nbgrader["grade_id"]: float(cell.metadata.nbgrader.get("points", 0))
            for cell in nb.cells if is_test_cell(cell)}


@dataclass
class StudentResult:
    student: str
    status: str
    scores: dict[str, float] = field(default_factory=dict)
    feedback: str | None = None
    # Taken from the work folder (the submission is unchanged since it was graded); not stored.
    reused: bool = field(default=False, compare=False)

    @property
    def total(self) -> float:
        return sum(self.scores.values())


# A student id is a folder name that nbgrader (globs) and a shell read as itself: letters, digits,
# "_" first, then also ".", "@", "+", "-"; no "..", at most 100 characters.
STUDENT_ID = re.compile(r"(?!.*\.\.)\w[\w.@+-]{0,99}", re.ASCII)


def refused_id(student: str) -> str | None:
    """Why ``student`` cannot be a student id (None: it can)."""
    if STUDENT_ID.fullmatch(student):
        return None
    bad = sorted({c for c in student if not (c.isascii() and (c.isalnum() or c in "_.@+-"))})
    if bad:
        return f"student id refused: it contains {', '.join(printable(c) for c in bad[:8])}"
    return "student id refused: it must start with a letter, a digit or _ and contain no '..'"


def printable(text: str) -> str:
    """``text`` on one line, control and escape characters written as escapes (for a terminal or a CSV)."""
    return "".join(c if c.isprintable() else ascii(c)[1:-1] for c in str(text))


class NotPlain(ValueError):
    """The path to a submission has a symbolic link, or the notebook is not a plain file."""


def _open_plain(base: Path, parts: tuple[str, ...]) -> int:
    """A read-only descriptor of ``base/parts...``, opened one component at a time without
    following any symbolic link (a link anywhere on the way raises ``NotPlain``)."""
    fd = os.open(base, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            flags = os.O_RDONLY | os.O_NOFOLLOW | (0 if last else os.O_DIRECTORY)
            try:
                nxt = os.open(part, flags | os.O_NONBLOCK, dir_fd=fd)
            except OSError as err:
                if err.errno in (errno.ELOOP, errno.ENOTDIR):
                    raise NotPlain(f"{'/'.join(parts[:i + 1])} is a symbolic link") from None
                raise
            os.close(fd)
            fd = nxt
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise NotPlain(f"{'/'.join(parts)} is not a plain file")
        if st.st_nlink > 1:
            raise NotPlain(f"{'/'.join(parts)} has other hard links")
        return fd
    except BaseException:
        os.close(fd)
        raise


def read_plain(base: Path, parts: tuple[str, ...], max_bytes: int | None = None) -> bytes:
    """The bytes of ``base/parts...`` (see ``_open_plain``), at most ``max_bytes + 1``."""
    fd = _open_plain(base, parts)
    with os.fdopen(fd, "rb") as f:
        return f.read() if max_bytes is None else f.read(max_bytes + 1)


def _find_notebook(submissions: Path, student: str, lesson: str) -> tuple[str, ...] | None:
    """The student's notebook, as path components below ``submissions``: named like the lesson (in
    the folder, or in ``<lesson>/`` as nbgrader's exchange collects it), else the only ``.ipynb`` in
    the folder. Links are not followed (``_open_plain`` then refuses them)."""
    folder = submissions / student
    for parts in ((student, f"{lesson}.ipynb"), (student, lesson, f"{lesson}.ipynb")):
        if os.path.lexists(submissions.joinpath(*parts)):
            return parts
    candidates = []
    for root, dirs, files in os.walk(folder, followlinks=False):
        dirs[:] = sorted(d for d in dirs if d != ".ipynb_checkpoints")
        rel = Path(root).relative_to(submissions).parts
        candidates += [(*rel, f) for f in sorted(files) if f.endswith(".ipynb")]
        candidates += [(*rel, d) for d in dirs if d.endswith(".ipynb")]
        if any(os.path.islink(os.path.join(root, d)) for d in dirs):
            candidates += [(*rel, d) for d in dirs if os.path.islink(os.path.join(root, d))]
    return candidates[0] if len(candidates) == 1 else None


def _hideable(paths: list[Path], needed: list[Path]) -> list[str]:
    """The folders among ``paths`` to hide from the kernel. A folder holding something the
    kernel needs (Python, the packages, the model cache) is replaced by its other entries."""
    hide = []
    for path in paths:
        path = path.resolve()
        if not path.is_dir() or any(path.is_relative_to(n) for n in needed):
            continue
        if any(n.is_relative_to(path) for n in needed):
            hide += _hideable([p for p in path.iterdir() if p.is_dir()], needed)
        else:
            hide.append(str(path))
    return hide


def _prepare_model() -> None:
    """The sandbox's file system is read-only: the embedded model must be prepared beforehand."""
    from mi_course import models

    if not models.embedded_is_prepared():
        try:
            models.prepare_embedded()
        except Exception as err:  # lessons without a model still grade
            warnings.warn(f"could not prepare the embedded model before grading: {err}", stacklevel=3)
    if os.geteuid() == 0:  # a root grader's kernel runs as nobody: public weights, readable by all
        _readable_by_all(models.cache_dir())


def _readable_by_all(folder: Path) -> None:
    """Let every user read ``folder`` (and enter its folders): the model cache, public weights
    that a root grader prepared with private permissions (a kernel runs as nobody)."""
    if not folder.is_dir():
        return
    for root, dirs, files in os.walk(folder):
        for name in [*dirs, *files]:
            path = os.path.join(root, name)
            st = os.lstat(path)
            if stat.S_ISLNK(st.st_mode):
                continue
            extra = stat.S_IROTH | (stat.S_IXOTH if stat.S_ISDIR(st.st_mode) else 0)
            if st.st_mode & extra != extra:
                os.chmod(path, stat.S_IMODE(st.st_mode) | extra)
    os.chmod(folder, stat.S_IMODE(folder.stat().st_mode) | stat.S_IROTH | stat.S_IXOTH)


def _cuda_visible() -> bool:
    import torch

    return torch.cuda.is_available()


def _use_isolation(isolation: str) -> bool:
    if isolation == "off":
        return False
    ok, why = sandbox.isolation_available()
    if ok:
        return True
    message = (f"KERNEL ISOLATION UNAVAILABLE ({why}): student code will run with the grader's rights "
               "(it can read the hidden tests and the gradebook); only resource limits apply.")
    if isolation == "required":
        raise RuntimeError(message)
    warnings.warn(message, stacklevel=3)
    print(f"WARNING: {message}", file=sys.stderr)
    return False


def _incidents(notebook: Path, limits: sandbox.Limits) -> list[str]:
    """Time-outs and memory errors, read from the executed notebook's error outputs (cells counted from 1)."""
    found = []
    try:
        nb = nbformat.read(notebook, as_version=4)
    except Exception:
        return ["the executed notebook could not be read back"]
    for index, cell in enumerate(nb.cells, start=1):
        for out in cell.get("outputs", []) if cell.cell_type == "code" else []:
            if out.get("output_type") != "error":
                continue
            text = f"{out.get('ename')}: {out.get('evalue')}"
            if out.get("ename") == "CellTimeoutError":
                found.append(f"cell {index} timed out after {limits.cell_timeout} s")
            elif out.get("ename") == "MemoryError" or "can't allocate memory" in text:
                found.append(f"memory limit hit in cell {index}")
    return found


def _config(work: Path, limits: sandbox.Limits, run: sandbox.Run | None = None):
    from nbconvert.preprocessors import ClearMetadataPreprocessor
    from nbgrader.preprocessors import (AssignLatePenalties, CheckCellMetadata, IgnorePattern, LimitOutput,
                                        SaveAutoGrades)

    config = nbgrader_config(work, work=work, release=work / "release")
    config.Execute.timeout = limits.cell_timeout
    config.BoundedExecute.wall_limit = float(limits.wall)
    config.BoundedExecute.max_output_bytes = limits.output
    config.BoundedExecute.interrupt_grace = float(limits.interrupt_grace)
    if run is not None:
        config.BoundedExecute.run = run
    config.Autograde.autograde_preprocessors = [
        sandbox.BoundedExecute, IgnorePattern, ClearMetadataPreprocessor, LimitOutput, SaveAutoGrades,
        AssignLatePenalties, CheckCellMetadata]
    return config


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _prepare_assignment(api, config, lesson: str, work: Path) -> Path:
    """Generate the assignment (gradebook + released notebook) unless this work folder has it already."""
    source = solution_notebook(lesson)
    released = Path(config.CourseDirectory.release_directory) / lesson / f"{lesson}.ipynb"
    stamp = work / f"{lesson}.source.sha256"
    if released.is_file() and stamp.is_file() and stamp.read_text() == _sha256(source):
        return released
    generated = api.generate_assignment(lesson, force=True, create=True)
    if not generated["success"]:
        raise RuntimeError(f"nbgrader could not prepare {lesson} (a work folder graded with an older "
                           f"version of the lesson needs a fresh one):\n{generated['log']}")
    (work / "results" / lesson).mkdir(parents=True, exist_ok=True)
    for old in (work / "results" / lesson).glob("*.json"):
        old.unlink()
    stamp.write_text(_sha256(source))
    return released


@dataclass
class _Batch:
    """What any grader process needs to grade any submission of the batch (the plan)."""

    lesson: str
    work: Path
    released: Path
    exercises: dict[str, float]
    limits: sandbox.Limits
    box: sandbox.Sandbox
    feedback_dir: Path | None
    submissions: Path
    key: str  # the settings a stored result was graded with: limits, isolation, feedback or not
    course: Config  # nbgrader's CourseDirectory as planned: the work folder's submitted/autograded/feedback folders, gradebook


def _start_worker() -> None:
    """A worker process ends with the grader, however the grader ends (the pool's initializer)."""
    import ctypes

    ctypes.CDLL(None).prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG
    if multiprocessing.parent_process().pid != os.getppid():
        os._exit(1)


def _grade(batch: _Batch, student: str, notebook: tuple[str, ...]) -> StudentResult:
    """Grade one submission in this process; never raises (a failure is the student's status).

    Its ``sandbox.Run`` holds the gradebook lock (let go while the kernel runs, so parallel
    graders' kernels run side by side) and collects what happened while it ran."""
    from nbgrader.apps import NbGraderAPI

    run = sandbox.Run(batch.box, sandbox.GradebookLock(batch.work / "gradebook.lock"))
    try:
        with warnings.catch_warnings():
            # nbgrader's own harmless SQLAlchemy session warnings: a screenful per student otherwise.
            warnings.filterwarnings("ignore", message=r"Object of type <Submitted\w+> not in session")
            api = NbGraderAPI(config=_config(batch.work, batch.limits, run))
            with run.lock:
                result = _grade_one(api, run, batch, student, notebook)
            if result.status.startswith((GRADED, HELD)):
                result.feedback = _feedback(api, batch, student)
        return result
    except Exception as err:  # one submission never stops the batch
        return StudentResult(student, f"{RETRY}{type(err).__name__}: {err}"[:300],
                             dict.fromkeys(batch.exercises, 0.0))


def _graded(batch: _Batch, todo: list[tuple[str, tuple[str, ...]]], jobs: int):
    """Run: ``(student, result)`` for each of ``todo`` as they finish, ``jobs`` submissions at a time."""
    if jobs == 1:
        for student, notebook in todo:
            yield student, _grade(batch, student, notebook)
        return
    # spawn: fresh workers, not forks of a process that may hold torch's threads
    pool = ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn"), initializer=_start_worker)
    try:
        futures = {pool.submit(_grade, batch, student, notebook): student for student, notebook in todo}
        for future in as_completed(futures):
            student = futures[future]
            try:
                yield student, future.result()
            except Exception as err:  # the worker itself died (not cached: graded again next run)
                yield student, StudentResult(student, f"{RETRY}grader process failed ({type(err).__name__})",
                                             dict.fromkeys(batch.exercises, 0.0))
    except BaseException:  # Ctrl-C or a failure here: stop now, kernels included (their lifelines close)
        for process in list(getattr(pool, "_processes", {}).values()):
            process.kill()
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown()


# Files nbgrader's exchange puts next to a submitted notebook: kept, so that feedback can be
# released back to the exchange and late submissions are recognised.
EXCHANGE_FILES = ("timestamp.txt", "submission_secret.txt")


def _exchange_file(submissions: Path, parts: tuple[str, ...], name: str) -> bytes | None:
    """A small plain file nbgrader's exchange left next to the notebook (None: none, or not plain)."""
    try:
        data = read_plain(submissions, (*parts[:-1], name), 1024)
    except (NotPlain, OSError):
        return None
    return data if len(data) <= 1024 else None


def _grade_one(api, run: sandbox.Run, batch: _Batch, student: str, notebook: tuple[str, ...]) -> StudentResult:
    from nbgrader.api import Gradebook

    lesson, exercises, limits = batch.lesson, batch.exercises, batch.limits
    zero = dict.fromkeys(exercises, 0.0)
    try:
        try:
            data = read_plain(batch.submissions, notebook, limits.notebook)
        except (NotPlain, OSError) as err:
            raise Unreadable(f"the submission is not a plain file ({printable(err)})") from None
        submitted = read_submission(data, limits.notebook)
        source = nbformat.read(solution_notebook(lesson), as_version=4)
        reference = nbformat.read(batch.released, as_version=4)
        inspection = repair(submitted, reference, lesson, source)
    except Unreadable as err:
        _forget(api.coursedir, lesson, student)
        return StudentResult(student, f"error: {err}", zero)
    course = api.coursedir
    target = Path(course.submitted_directory) / student / lesson
    shutil.rmtree(target, ignore_errors=True)  # a regrade keeps the gradebook: hand-graded answers stay
    target.mkdir(parents=True)
    nbformat.write(inspection.notebook, target / f"{lesson}.ipynb")
    for name in EXCHANGE_FILES:
        extra = _exchange_file(batch.submissions, notebook, name)
        if extra is not None:
            (target / name).write_bytes(extra)
    # The kernel works in a throw-away folder of its own (sandbox.SandboxKernelManager): nbgrader
    # writes the executed notebook into the autograded folder, which no kernel can reach.
    scanned = suspicious(inspection.notebook, reference, source)
    run.held_before = [n for n in scanned if n.startswith(HOLD_NOTE)]
    graded = api.autograde(lesson, student, force=True, create=True)
    held = [n for n in run.held if not n.startswith(HOLD_NOTE)]
    notes = inspection.notes + scanned + run.incidents
    if not graded["success"]:
        last = [line for line in graded["log"].splitlines() if line.strip()][-1:]
        return StudentResult(student, f"error: nbgrader failed: {printable(' '.join(last))[:300]}", zero)
    notes += _incidents(Path(course.autograded_directory) / student / lesson / f"{lesson}.ipynb", limits)
    held = held + [n for n in notes if n.startswith(HOLD_NOTE)]
    with Gradebook(course.db_url) as gradebook:
        submission = gradebook.find_submission_notebook(lesson, lesson, student)
        scores = {g.name: float(g.score) for g in submission.grades if g.name in exercises}
    missing = sorted(set(exercises) - set(scores))
    if missing:
        notes.append(f"not graded: {', '.join(missing)}")
    notes = [printable(n) for n in dict.fromkeys(notes)]
    if held:
        status = f"{HELD}: {printable('; '.join(dict.fromkeys(held)))}"[:1000]
        rest = [n for n in notes if not n.startswith(HOLD_NOTE)]
        status += f" ({'; '.join(rest)})" if rest else ""
    else:
        status = GRADED if not notes else f"{GRADED} ({'; '.join(notes)})"
    return StudentResult(student, status, {k: scores.get(k, 0.0) for k in exercises})


def _forget(course, lesson: str, student: str) -> None:
    """Remove a student's earlier grading of ``lesson`` (copies, feedback, gradebook rows): an
    ungradable resubmission must not leave the old grade in the formgrader or the feedback."""
    from nbgrader.api import Gradebook, MissingEntry

    for folder in (course.submitted_directory, course.autograded_directory, course.feedback_directory):
        shutil.rmtree(Path(folder) / student / lesson, ignore_errors=True)
    with Gradebook(course.db_url) as gradebook:
        try:
            gradebook.remove_submission(lesson, student)
        except MissingEntry:
            pass


def _feedback(api, batch: _Batch, student: str) -> str | None:
    """nbgrader's HTML feedback for a graded student, copied to ``batch.feedback_dir`` (only reads
    the gradebook: runs without the lock)."""
    lesson = batch.lesson
    if batch.feedback_dir is None or not api.generate_feedback(lesson, student, force=True)["success"]:
        return None
    html = Path(api.coursedir.feedback_directory) / student / lesson / f"{lesson}.html"
    if not html.is_file():
        return None
    (batch.feedback_dir / student).mkdir(parents=True, exist_ok=True)
    return str(shutil.copy(html, batch.feedback_dir / student / f"{lesson}.html"))


def autograde(lesson: str, submissions: Path, csv_path: Path | None = None, *, work_dir: Path | None = None,
              feedback_dir: Path | None = None, limits: sandbox.Limits | None = None,
              isolation: str = "auto", force: bool = False, jobs: int = 1) -> list[StudentResult]:
    """Autograde every ``submissions/<student_id>/`` notebook for ``lesson``; one result per student folder.

    ``work_dir``: nbgrader's gradebook, copies and results (default: a temporary
    folder); reusing it resumes an interrupted batch (``force`` regrades all).
    ``feedback_dir``: where ``<student>/<lesson>.html`` go (default: next to
    ``csv_path``, under ``feedback/``). ``limits``: per-submission limits.
    ``isolation``: ``auto`` (sandbox if the system allows it, else a loud
    warning), ``required`` (error if unavailable) or ``off``. ``jobs``:
    submissions graded at once (processes; the kernels run side by side, the
    gradebook is written by one at a time). Writes ``csv_path`` if given: see
    ``export.ExerciseCsvExport``.
    """
    from mi_course.grading.export import export_csv

    if jobs < 1:
        raise ValueError(f"--jobs must be at least 1, got {jobs}")
    submissions = Path(submissions).resolve()
    if not submissions.is_dir():
        raise FileNotFoundError(f"no submissions folder {submissions}")
    students = sorted(p.name for p in submissions.iterdir() if p.is_dir() and not p.name.startswith("."))
    if feedback_dir is None and csv_path is not None:
        feedback_dir = Path(csv_path).parent / "feedback"
    with tempfile.TemporaryDirectory(prefix="mi-course-autograde-") as tmp:
        batch = _plan(lesson, submissions, Path(work_dir or tmp), feedback_dir, limits or sandbox.Limits(), isolation)
        results, todo, digests = _sort_out(batch, students, force)
        with tqdm(total=len(students), initial=len(results), desc=f"autograde {lesson} (jobs={jobs})",
                  unit="student") as bar:
            # closed however the loop ends: a Ctrl-C that lands while a result is being saved stops the
            # workers now, rather than at exit, where the pool would first wait for their kernels
            with contextlib.closing(_graded(batch, todo, jobs)) as graded:
                for student, result in graded:
                    _save(batch.work, lesson, result, "" if result.status.startswith(RETRY) else digests[student])
                    results[student] = result
                    bar.update(1)
        if csv_path is not None:
            export_csv(batch.work, Path(csv_path), [lesson], students, submissions=[submissions])
    return [results[student] for student in students]


def _plan(lesson: str, submissions: Path, work: Path, feedback_dir: Path | None, limits: sandbox.Limits,
          isolation: str) -> _Batch:
    """Plan the batch: the limits that apply here, the kernel's sandbox (what it must not see), the
    assignment generated in the work folder, the model prepared."""
    from nbgrader.apps import NbGraderAPI

    if limits.memory and _cuda_visible():
        warnings.warn("CUDA is visible: no address-space limit on kernels (CUDA reserves far more address "
                      "space than it uses); memory bombs are bounded only by the machine.", stacklevel=3)
        limits = replace(limits, memory=0)
    if feedback_dir is not None:
        feedback_dir = Path(feedback_dir).resolve()
        feedback_dir.mkdir(parents=True, exist_ok=True)  # exists now, so it is hidden from every kernel
    isolate = _use_isolation(isolation)
    if isolate:
        _prepare_model()
    work = work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    config = _config(work, limits)
    released = _prepare_assignment(NbGraderAPI(config=config), config, lesson, work)
    checkout = course_root()
    secret = [work, submissions, checkout / "solutions", checkout / "autograder", checkout / ".git",
              checkout / ".nbgrader", *([feedback_dir] if feedback_dir else [])]
    box = sandbox.Sandbox(isolate=isolate, hide=_hideable(secret, [Path(p) for p in sandbox.kernel_needs()]),
                          rlimits=limits.rlimits(), writable=[])
    key = json.dumps([asdict(limits), isolate, feedback_dir is not None])
    return _Batch(lesson, work, released, autograded_cells(lesson), limits, box, feedback_dir, submissions, key,
                  config.CourseDirectory)


def _sort_out(batch: _Batch, students: list[str], force: bool):
    """Sort the students out before anything runs: ``(results, todo, digests)``. ``results`` holds
    the rows settled already (a refused id, no notebook, a link, a stored result for the very same
    bytes and settings), stored at once; ``todo`` the ``(student, notebook path parts)`` to grade;
    ``digests`` what each readable submission's stored result will be keyed by."""
    lesson, work, submissions = batch.lesson, batch.work, batch.submissions
    results: dict[str, StudentResult] = {}
    todo, digests = [], {}
    zero = dict.fromkeys(batch.exercises, 0.0)
    for student in students:
        why = refused_id(student)
        if why:  # before anything reaches nbgrader (which reads ids as glob patterns)
            results[student] = StudentResult(student, f"error: {why}", dict(zero))
            continue
        parts = _find_notebook(submissions, student, lesson)
        if parts is None:
            results[student] = StudentResult(student, "error: no single notebook found in the student's folder",
                                             dict(zero))
            continue
        try:
            data = read_plain(submissions, parts, batch.limits.notebook)
            extras = b"".join(_exchange_file(submissions, parts, name) or b"" for name in EXCHANGE_FILES)
        except (NotPlain, OSError) as err:
            # A link could point at the instructor's solution or another student's work.
            results[student] = StudentResult(student, f"error: the submission is not a plain file "
                                             f"({printable(err)})", dict(zero))
            continue
        digests[student] = hashlib.sha256(data + extras + batch.key.encode()).hexdigest()
        cache = _cache(work, lesson, student)
        saved = json.loads(cache.read_text()) if cache.is_file() and not force else {}
        if saved.pop("digest", None) == digests[student]:
            results[student] = StudentResult(**saved, reused=True)
        else:
            todo.append((student, parts))
    for student, result in results.items():  # export reports them too; no earlier grade stays
        if student not in digests and not refused_id(student):
            _forget(batch.course, lesson, student)
        _save(work, lesson, result, digests.get(student, ""))
    reused = sum(r.reused for r in results.values())
    if reused:
        print(f"reusing {reused} graded submission(s) from {work} (unchanged since graded; --force regrades "
              "them)", file=sys.stderr)
    return results, todo, digests


def _cache(work: Path, lesson: str, student: str) -> Path:
    return work / "results" / lesson / f"{student}.json"


def stored_results(work: Path, lesson: str) -> list[StudentResult]:
    """The results of ``lesson`` stored in the work folder ``work``, by student."""
    found = []
    for path in sorted((Path(work) / "results" / lesson).glob("*.json")):
        saved = json.loads(path.read_text())
        saved.pop("digest", None)
        found.append(StudentResult(**saved))
    return found


def _save(work: Path, lesson: str, result: StudentResult, digest: str) -> None:
    """Store one result atomically (a crash never leaves half a file): the batch resumes from these."""
    cache = _cache(work, lesson, result.student)
    cache.parent.mkdir(parents=True, exist_ok=True)
    saved = {k: v for k, v in asdict(result).items() if k != "reused"}
    cache.with_suffix(".tmp").write_text(json.dumps({**saved, "digest": digest}))
    cache.with_suffix(".tmp").replace(cache)
