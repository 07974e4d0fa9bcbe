"""Grades out of nbgrader's gradebook: one row per student and lesson, a column per graded cell.

An nbgrader export plugin, so it also runs as
``nbgrader export --exporter=mi_course.grading.export.ExerciseCsvExport`` (from the
checkout, where nbgrader's gradebook is the default work folder ``.nbgrader/``).
Scores come from the gradebook: autograded tests, and written answers once
graded by hand in the formgrader (empty until then). ``status`` comes from the
autograder's results (``<work>/results/<lesson>/<student>.json``): a student
the grader could not grade (empty file, no notebook) has a row with zeros and
the reason; one graded only by nbgrader itself says so.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

from nbgrader.api import Gradebook, MissingEntry
from nbgrader.plugins import ExportPlugin
from traitlets import Unicode

from mi_course.grading.config import graded_work

BY_NBGRADER = "graded by nbgrader (not by mi-course autograde)"


def safe_cell(value):
    """A CSV cell that a spreadsheet shows as text: one line (control characters written as
    escapes) and a leading ``=``, ``+``, ``-``, ``@``, tab or carriage return made inert with ``'``
    (numbers stay numbers)."""
    if not isinstance(value, str):
        return value
    text = "".join(c if c.isprintable() else ascii(c)[1:-1] for c in value)
    return "'" + text if value[:1] in ("=", "+", "-", "@", "\t", "\r") else text


def _autograder_results(folder: Path, lesson: str) -> dict[str, dict]:
    """``student -> {"status", "scores", ...}`` as the autograder stored them."""
    return {(saved := json.loads(p.read_text()))["student"]: saved for p in sorted((folder / lesson).glob("*.json"))}


class ExerciseCsvExport(ExportPlugin):
    """``student, lesson, <grade cell>..., total, status`` for every lesson (``assignment``)
    and student (``student``; default: all) in the gradebook, written to ``to``."""

    results = Unicode("", help="the autograder's results folder (default: results/ next to the gradebook)"
                      ).tag(config=True)

    def export(self, gradebook: Gradebook) -> None:
        lessons = self.assignment or sorted(a.name for a in gradebook.assignments)
        results = Path(self.results or Path(gradebook.engine.url.database).parent / "results")
        columns, rows = [], []  # with several lessons a column is "<lesson>:<cell>"
        for lesson in lessons:
            try:
                notebook = gradebook.find_assignment(lesson).notebooks[0]
            except (MissingEntry, IndexError):
                raise ValueError(f"lesson {lesson} is not in the gradebook: grade it first") from None
            cells = [c.name for c in notebook.grade_cells]
            prefix = "" if len(lessons) == 1 else f"{lesson}:"
            columns += [prefix + c for c in cells]
            stored = _autograder_results(results, lesson)
            in_gradebook = {s.student.id for s in gradebook.find_assignment(lesson).submissions}
            everyone = set(stored) | in_gradebook
            for student in sorted(everyone & set(self.student) if self.student else everyone):
                status = stored.get(student, {}).get("status", BY_NBGRADER)
                if status.startswith("error") or student not in in_gradebook:
                    scores = {c: stored.get(student, {}).get("scores", {}).get(c, "") for c in cells}
                else:
                    graded = gradebook.find_submission_notebook(notebook.name, lesson, student)
                    scores = {g.name: ("" if g.score is None or g.needs_manual_grade and g.manual_score is None
                                       else float(g.score)) for g in graded.grades}
                total = sum(v for v in scores.values() if v != "")
                rows.append({"student": student, "lesson": lesson, **{prefix + c: scores.get(c, "") for c in cells},
                             "total": total, "status": status})
        path = Path(self.to or "grades.csv")
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "w", newline="") as f:
            writer = csv.DictWriter(f, ["student", "lesson", *columns, "total", "status"], restval="")
            writer.writeheader()
            writer.writerows({k: safe_cell(v) for k, v in row.items()} for row in rows)
        self.log.info("Exported %d row(s) to %s", len(rows), path)


def export_csv(work: Path, to: Path, lessons: list[str] | None = None, students: list[str] | None = None) -> Path:
    """Write the grades of ``work`` (an autograde ``--work`` folder) to the CSV ``to``."""
    work = graded_work(work)
    plugin = ExerciseCsvExport(to=str(to), assignment=lessons or [], student=students or [])
    with Gradebook(f"sqlite:///{work / 'gradebook.db'}") as gradebook:
        plugin.export(gradebook)
    return Path(to)
