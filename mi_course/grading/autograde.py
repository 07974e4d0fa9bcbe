"""Grade a folder of submissions with nbgrader: bounded, isolated, tamper-aware, one row per student.

For each ``submissions/<student>/`` the grader reads the notebook defensively
(``tamper.read_submission``), restores the graded cells (``tamper.repair``),
lets nbgrader autograde it with ``sandbox.BoundedExecute`` (kernel in a
sandbox with limits) and writes nbgrader's HTML feedback. Every student gets a
row: ``status`` is ``graded``, ``graded (<what happened>)`` or ``error: <why>``.
The submissions folder is only read. With a persistent ``work_dir`` a result is
reused while the submitted bytes and the limits are unchanged, so a batch that
crashed resumes where it stopped and grading twice gives the same rows.
"""

from __future__ import annotations

import csv
import hashlib
import json
import shutil
import sys
import tempfile
import warnings
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import nbformat
from tqdm.auto import tqdm

from mi_course.course import course_root
from mi_course.grading import sandbox
from mi_course.grading.config import nbgrader_config
from mi_course.grading.tamper import Unreadable, is_test_cell, read_submission, repair, suspicious

GRADED = "graded"


def autograded_cells(lesson: str) -> dict[str, float]:
    """``grade_id -> points`` of the lesson's autograded test cells (graded, not a solution)."""
    nb = nbformat.read(course_root() / "solutions" / lesson / f"{lesson}.ipynb", as_version=4)
    return {cell.metadata.nbgrader["grade_id"]: float(cell.metadata.nbgrader.get("points", 0))
            for cell in nb.cells if is_test_cell(cell)}


@dataclass
class StudentResult:
    student: str
    status: str
    scores: dict[str, float] = field(default_factory=dict)
    feedback: str | None = None

    @property
    def total(self) -> float:
        return sum(self.scores.values())


def _find_notebook(folder: Path, lesson: str) -> Path | None:
    """The student's notebook: named like the lesson, else the only ``.ipynb`` in the folder."""
    exact = folder / f"{lesson}.ipynb"
    if exact.is_file() or exact.is_symlink():
        return exact
    candidates = sorted(p for p in folder.rglob("*.ipynb") if ".ipynb_checkpoints" not in p.parts)
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


def _config(work: Path, limits: sandbox.Limits):
    from nbconvert.preprocessors import ClearMetadataPreprocessor
    from nbgrader.preprocessors import (AssignLatePenalties, CheckCellMetadata, IgnorePattern, LimitOutput,
                                        SaveAutoGrades)

    config = nbgrader_config(work, work=work, release=work / "release")
    config.Execute.timeout = limits.cell_timeout
    config.BoundedExecute.wall_limit = float(limits.wall)
    config.BoundedExecute.max_output_bytes = limits.output
    config.Autograde.autograde_preprocessors = [
        sandbox.BoundedExecute, IgnorePattern, ClearMetadataPreprocessor, LimitOutput, SaveAutoGrades,
        AssignLatePenalties, CheckCellMetadata]
    return config


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _prepare_assignment(api, config, lesson: str, work: Path) -> Path:
    """Generate the assignment (gradebook + released notebook) unless this work folder has it already."""
    source = course_root() / "solutions" / lesson / f"{lesson}.ipynb"
    released = Path(config.CourseDirectory.release_directory) / lesson / f"{lesson}.ipynb"
    stamp = work / f"{lesson}.source.sha256"
    if released.is_file() and stamp.is_file() and stamp.read_text() == _sha256(source):
        return released
    generated = api.generate_assignment(lesson, force=True, create=True)
    if not generated["success"]:
        raise RuntimeError(f"nbgrader could not prepare {lesson} (a work folder graded with an older "
                           f"version of the lesson needs a fresh one):\n{generated['log']}")
    stamp.write_text(_sha256(source))
    (work / "results" / lesson).mkdir(parents=True, exist_ok=True)
    for old in (work / "results" / lesson).glob("*.json"):
        old.unlink()
    return released


def _grade_one(api, config, lesson: str, student: str, notebook: Path, released: Path,
               exercises: dict[str, float], limits: sandbox.Limits, box: sandbox.Sandbox,
               feedback_dir: Path | None) -> StudentResult:
    from nbgrader.api import Gradebook

    zero = dict.fromkeys(exercises, 0.0)
    try:
        submitted = read_submission(notebook.read_bytes(), limits.notebook)
        source = nbformat.read(course_root() / "solutions" / lesson / f"{lesson}.ipynb", as_version=4)
        reference = nbformat.read(released, as_version=4)
        inspection = repair(submitted, reference, lesson, source)
    except Unreadable as err:
        return StudentResult(student, f"error: {err}", zero)
    course = config.CourseDirectory
    target = Path(course.submitted_directory) / student / lesson
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True)
    nbformat.write(inspection.notebook, target / f"{lesson}.ipynb")
    cwd = Path(course.autograded_directory) / student / lesson
    sandbox.current = sandbox.Sandbox(**{**asdict(box), "cwd": str(cwd), "writable": [str(cwd)]})
    graded = api.autograde(lesson, student, force=True, create=True)
    notes = inspection.notes + suspicious(inspection.notebook, reference, source) + sandbox.BoundedExecute.incidents
    if not graded["success"]:
        last = [line for line in graded["log"].splitlines() if line.strip()][-1:]
        return StudentResult(student, f"error: nbgrader failed: {' '.join(last)[:300]}", zero)
    notes += _incidents(cwd / f"{lesson}.ipynb", limits)
    with Gradebook(course.db_url) as gradebook:
        submission = gradebook.find_submission_notebook(lesson, lesson, student)
        scores = {g.name: float(g.score) for g in submission.grades if g.name in exercises}
    missing = sorted(set(exercises) - set(scores))
    if missing:
        notes.append(f"not graded: {', '.join(missing)}")
    feedback = None
    if feedback_dir is not None and api.generate_feedback(lesson, student, force=True)["success"]:
        html = Path(course.feedback_directory) / student / lesson / f"{lesson}.html"
        if html.is_file():
            (feedback_dir / student).mkdir(parents=True, exist_ok=True)
            feedback = str(shutil.copy(html, feedback_dir / student / f"{lesson}.html"))
    status = GRADED if not notes else f"{GRADED} ({'; '.join(dict.fromkeys(notes))})"
    return StudentResult(student, status, {k: scores.get(k, 0.0) for k in exercises}, feedback)


def autograde(lesson: str, submissions: Path, csv_path: Path | None = None, *, work_dir: Path | None = None,
              feedback_dir: Path | None = None, limits: sandbox.Limits | None = None,
              isolation: str = "auto", force: bool = False) -> list[StudentResult]:
    """Autograde every ``submissions/<student_id>/*.ipynb`` for ``lesson``; one result per student folder.

    ``work_dir``: nbgrader's gradebook, copies and results (default: a temporary
    folder); reusing it resumes an interrupted batch (``force`` regrades all).
    ``feedback_dir``: where ``<student>/<lesson>.html`` go (default: next to
    ``csv_path``, under ``feedback/``). ``limits``: per-submission limits.
    ``isolation``: ``auto`` (sandbox if the system allows it, else a loud
    warning), ``required`` (error if unavailable) or ``off``. Writes ``csv_path``
    if given: a column per autograded exercise, the total and a status.
    """
    from nbgrader.apps import NbGraderAPI

    submissions = Path(submissions).resolve()
    students = sorted(p for p in submissions.iterdir() if p.is_dir() and not p.name.startswith("."))
    exercises = autograded_cells(lesson)
    limits = limits or sandbox.Limits()
    if limits.memory and _cuda_visible():
        warnings.warn("CUDA is visible: no address-space limit on kernels (CUDA reserves far more address "
                      "space than it uses); memory bombs are bounded only by the machine.", stacklevel=2)
        limits = replace(limits, memory=0)
    if feedback_dir is None and csv_path is not None:
        feedback_dir = Path(csv_path).parent / "feedback"
    if feedback_dir is not None:
        feedback_dir = Path(feedback_dir).resolve()
        feedback_dir.mkdir(parents=True, exist_ok=True)  # exists now, so it is hidden from every kernel
    isolate = _use_isolation(isolation)
    if isolate:
        _prepare_model()
    results = []
    with tempfile.TemporaryDirectory(prefix="mi-course-autograde-") as tmp:
        work = Path(work_dir or tmp).resolve()
        work.mkdir(parents=True, exist_ok=True)
        config = _config(work, limits)
        api = NbGraderAPI(config=config)
        released = _prepare_assignment(api, config, lesson, work)
        checkout = course_root()
        secret = [work, submissions, checkout / "solutions", checkout / "autograder", checkout / ".git",
                  checkout / ".nbgrader", *([feedback_dir] if feedback_dir else [])]
        box = sandbox.Sandbox(isolate=isolate, hide=_hideable(secret, [Path(p) for p in sandbox.kernel_needs()]),
                              rlimits=limits.rlimits())
        key = json.dumps([asdict(limits), isolate])
        for folder in tqdm(students, desc=f"autograde {lesson}", unit="student"):
            cache = work / "results" / lesson / f"{folder.name}.json"
            notebook = _find_notebook(folder, lesson)
            if folder.is_symlink() or notebook is not None and notebook.is_symlink():
                # A link could point at the instructor's solution: only plain files are graded.
                results.append(StudentResult(folder.name, "error: the submission is a symbolic link",
                                             dict.fromkeys(exercises, 0.0)))
                continue
            if notebook is None:
                results.append(StudentResult(folder.name, f"error: no single notebook found in {folder.name}/",
                                             dict.fromkeys(exercises, 0.0)))
                continue
            digest = hashlib.sha256(notebook.read_bytes() + key.encode()).hexdigest()
            if cache.is_file() and not force:
                saved = json.loads(cache.read_text())
                if saved.pop("digest") == digest:
                    results.append(StudentResult(**saved))
                    continue
            try:
                result = _grade_one(api, config, lesson, folder.name, notebook, released, exercises, limits,
                                    box, feedback_dir)
            except Exception as err:  # one submission never stops the batch
                result = StudentResult(folder.name, f"error: grader failure ({type(err).__name__}: {err})"[:300],
                                       dict.fromkeys(exercises, 0.0))
            cache.parent.mkdir(parents=True, exist_ok=True)
            cache.with_suffix(".tmp").write_text(json.dumps({**asdict(result), "digest": digest}))
            cache.with_suffix(".tmp").replace(cache)
            results.append(result)
    if csv_path is not None:
        write_csv(results, lesson, list(exercises), Path(csv_path))
    return results


def write_csv(results: list[StudentResult], lesson: str, exercises: list[str], path: Path) -> None:
    """One row per student: ``student, lesson, <exercise>..., total, status``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["student", "lesson", *exercises, "total", "status"])
        for r in results:
            writer.writerow([r.student, lesson, *(r.scores.get(e, 0.0) for e in exercises), r.total, r.status])
