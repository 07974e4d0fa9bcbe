"""Grade a folder of submissions with nbgrader and export one CSV row per student."""

from __future__ import annotations

import csv
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import nbformat
from tqdm.auto import tqdm

from mi_course.course import course_root
from mi_course.grading.config import nbgrader_config


def autograded_cells(lesson: str) -> dict[str, float]:
    """``grade_id -> points`` of the lesson's autograded test cells (graded, not a solution)."""
    nb = nbformat.read(course_root() / "solutions" / lesson / f"{lesson}.ipynb", as_version=4)
    cells = {}
    for cell in nb.cells:
        meta = cell.get("metadata", {}).get("nbgrader", {})
        if meta.get("grade") and not meta.get("solution"):
            cells[meta["grade_id"]] = float(meta.get("points", 0))
    return cells


@dataclass
class StudentResult:
    student: str
    status: str
    scores: dict[str, float] = field(default_factory=dict)

    @property
    def total(self) -> float:
        return sum(self.scores.values())


def _find_notebook(folder: Path, lesson: str) -> Path | None:
    """The student's notebook: named like the lesson, else the only ``.ipynb`` in the folder."""
    exact = folder / f"{lesson}.ipynb"
    if exact.is_file():
        return exact
    candidates = sorted(p for p in folder.rglob("*.ipynb") if ".ipynb_checkpoints" not in p.parts)
    return candidates[0] if len(candidates) == 1 else None


def autograde(lesson: str, submissions: Path, csv_path: Path | None = None) -> list[StudentResult]:
    """Autograde every ``submissions/<student_id>/*.ipynb`` for ``lesson``.

    Runs in a throwaway nbgrader course folder (the checkout is not touched).
    Returns one result per student folder; writes ``csv_path`` if given, with a
    column per autograded exercise, the total and a status.
    """
    from nbgrader.api import Gradebook
    from nbgrader.apps import NbGraderAPI

    students = sorted(p for p in Path(submissions).iterdir() if p.is_dir() and not p.name.startswith("."))
    exercises = autograded_cells(lesson)
    results = []
    with tempfile.TemporaryDirectory(prefix="mi-course-autograde-") as tmp:
        tmp = Path(tmp)
        config = nbgrader_config(tmp, work=tmp / "work", release=tmp / "release")
        api = NbGraderAPI(config=config)
        generated = api.generate_assignment(lesson, force=True, create=True)
        if not generated["success"]:
            raise RuntimeError(f"nbgrader could not prepare {lesson}:\n{generated['log']}")
        for folder in tqdm(students, desc=f"autograde {lesson}", unit="student"):
            notebook = _find_notebook(folder, lesson)
            if notebook is None:
                results.append(StudentResult(folder.name, f"no single notebook found in {folder}"))
                continue
            target = Path(config.CourseDirectory.submitted_directory) / folder.name / lesson
            target.mkdir(parents=True, exist_ok=True)
            shutil.copy(notebook, target / f"{lesson}.ipynb")
            graded = api.autograde(lesson, folder.name, force=True, create=True)
            if not graded["success"]:
                last = [line for line in graded["log"].splitlines() if line.strip()][-1:]
                results.append(StudentResult(folder.name, f"error: {' '.join(last)}"))
                continue
            with Gradebook(config.CourseDirectory.db_url) as gradebook:
                submission = gradebook.find_submission_notebook(lesson, lesson, folder.name)
                scores = {g.name: float(g.score) for g in submission.grades if g.name in exercises}
            missing = sorted(set(exercises) - set(scores))
            status = "ok" if not missing else f"missing test cells: {', '.join(missing)}"
            results.append(StudentResult(folder.name, status, {k: scores.get(k, 0.0) for k in exercises}))
    if csv_path is not None:
        write_csv(results, list(exercises), Path(csv_path))
    return results


def write_csv(results: list[StudentResult], exercises: list[str], path: Path) -> None:
    """One row per student: ``student, <exercise>..., total, status``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["student", *exercises, "total", "status"])
        for r in results:
            writer.writerow([r.student, *(r.scores.get(e, 0.0) for e in exercises), r.total, r.status])
