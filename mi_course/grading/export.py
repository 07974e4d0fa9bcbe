"""Grades out of nbgrader's gradebook, as a CSV for a spreadsheet (``plain``) or for Canvas (``canvas``).

``plain``: a ``Points Possible`` row per lesson (the maximum of every column), then one row per
student and lesson: ``student``, ``lms_id`` (the LMS's user id, where ``collect`` found one),
``lesson``, a column per graded cell, ``total`` (the points graded so far), ``pending_manual``
(the points still to be graded by hand) and ``status``. A cell is empty where nothing was graded:
every score of a submission the grader could not grade (``error: ...``), an answer waiting for
manual grading, the tests of a submission held for review until a human grades them. A written
answer left as the released stub scores 0: nbgrader marks an unchanged answer cell itself.

An nbgrader export plugin, so it also runs as
``nbgrader export --exporter=mi_course.grading.export.ExerciseCsvExport`` (from the
checkout, where nbgrader's gradebook is the default work folder ``.nbgrader/``). ``status``
comes from the autograder's results (``<work>/results/<lesson>/<student>.json``); a student
graded only by nbgrader itself says so.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

from nbgrader.api import Gradebook, MissingEntry
from nbgrader.plugins import ExportPlugin
from traitlets import Dict, Enum, List, Unicode

from mi_course.grading.autograde import GRADED, HELD
from mi_course.grading.collect import lms_ids
from mi_course.grading.config import graded_work

BY_NBGRADER = "graded by nbgrader (not by mi-course autograde)"
NEEDS_MANUAL = "needs manual grading"
POINTS_POSSIBLE = "Points Possible"
# Canvas's gradebook import (instructure/canvas-lms, app/models/gradebook_importer.rb, read 2026-12):
# the header starts "Student", "ID"; with "SIS User ID", "SIS Login ID" next, the student columns
# end with "Section"; a student is found by ID (the Canvas user id), else SIS User ID, else SIS
# Login ID, else by name. A column "<title> (<assignment id>)" fills that assignment, another
# the assignment of that title, else a new one; a row whose first cell contains "Points Possible"
# gives the points of each assignment; an empty cell changes nothing.
CANVAS_STUDENT_COLUMNS = ["Student", "ID", "SIS User ID", "SIS Login ID", "Section"]


def safe_cell(value):
    """A CSV cell that a spreadsheet shows as text: one line (control characters written as
    escapes) and a leading ``=``, ``+``, ``-``, ``@``, tab or carriage return made inert with ``'``
    (numbers stay numbers)."""
    if not isinstance(value, str):
        return value
    text = "".join(c if c.isprintable() else ascii(c)[1:-1] for c in value)
    return "'" + text if value[:1] in ("=", "+", "-", "@", "\t", "\r") else text


@dataclass
class Row:
    """One student's grades for one lesson; ``""`` where nothing was graded."""
    student: str
    scores: dict[str, float | str]
    total: float | str
    pending: float | str  # points waiting for a human
    status: str

    @property
    def final(self) -> float | str:
        """The total once nothing is left to grade, else ``""``."""
        return self.total if self.pending == 0 else ""


@dataclass
class Lesson:
    name: str
    points: dict[str, float]  # graded cell -> its maximum
    rows: list[Row]


def _autograder_results(folder: Path, lesson: str) -> dict[str, dict]:
    """``student -> {"status", "scores", ...}`` as the autograder stored them."""
    return {(saved := json.loads(p.read_text()))["student"]: saved for p in sorted((folder / lesson).glob("*.json"))}


def _lesson(gradebook: Gradebook, lesson: str, results: Path, students: list[str]) -> Lesson:
    try:
        notebook = gradebook.find_assignment(lesson).notebooks[0]
    except (MissingEntry, IndexError):
        raise ValueError(f"lesson {lesson} is not in the gradebook: grade it first") from None
    points = {c.name: float(c.max_score) for c in notebook.grade_cells}
    stored = _autograder_results(results, lesson)
    in_gradebook = {s.student.id for s in gradebook.find_assignment(lesson).submissions}
    everyone = set(stored) | in_gradebook
    rows = []
    for student in sorted(everyone & set(students) if students else everyone):
        status = stored.get(student, {}).get("status", BY_NBGRADER)
        if status.startswith("error") or student not in in_gradebook:
            rows.append(Row(student, dict.fromkeys(points, ""), "", "", status))
            continue
        held = status.startswith(HELD)  # nothing counts until a human has graded it
        scores, pending = dict.fromkeys(points, ""), 0.0
        for grade in gradebook.find_submission_notebook(notebook.name, lesson, student).grades:
            if grade.manual_score is None and (grade.needs_manual_grade or held):
                pending += points.get(grade.name, 0.0)
            elif grade.name in points:
                scores[grade.name] = float(grade.score)
        if pending and not held:
            status = NEEDS_MANUAL if status == GRADED else f"{status}; {NEEDS_MANUAL}"
        graded = [v for v in scores.values() if v != ""]
        rows.append(Row(student, scores, sum(graded) if graded else "", pending, status))
    return Lesson(lesson, points, rows)


def _plain(lessons: list[Lesson], ids: dict[str, str]) -> tuple[list[str], list[dict]]:
    """Header and rows of the plain CSV (with several lessons a cell's column is ``<lesson>:<cell>``)."""
    prefix = {x.name: "" if len(lessons) == 1 else f"{x.name}:" for x in lessons}
    columns = [prefix[x.name] + c for x in lessons for c in x.points]
    rows = [{"student": POINTS_POSSIBLE, "lesson": x.name, **{prefix[x.name] + c: p for c, p in x.points.items()},
             "total": sum(x.points.values())} for x in lessons]
    rows += [{"student": r.student, "lms_id": ids.get(r.student, ""), "lesson": x.name,
              **{prefix[x.name] + c: v for c, v in r.scores.items()},
              "total": r.total, "pending_manual": r.pending, "status": r.status} for x in lessons for r in x.rows]
    return ["student", "lms_id", "lesson", *columns, "total", "pending_manual", "status"], rows


def _canvas(lessons: list[Lesson], ids: dict[str, str], assignments: dict[str, str]) -> tuple[list[str], list[dict]]:
    """Header and rows for Canvas: a column per lesson holding the lesson's total, only where
    nothing is left to grade (an empty cell leaves Canvas's grade as it is). A student without a
    known Canvas id is looked up by SIS Login ID = student id (e.g. a JupyterHub user name)."""
    for lesson, number in assignments.items():
        if not number.isdigit():
            raise ValueError(f"the Canvas assignment id of {lesson} must be a number, got {number!r}")
    titles = {x.name: f"{x.name} ({assignments[x.name]})" if x.name in assignments else x.name for x in lessons}
    students: dict[str, dict] = {}
    for x in lessons:
        for r in x.rows:
            row = students.setdefault(r.student, {"Student": r.student, "ID": ids.get(r.student, ""),
                                                  "SIS Login ID": "" if r.student in ids else r.student})
            row[titles[x.name]] = r.final
    points = {"Student": POINTS_POSSIBLE, **{titles[x.name]: sum(x.points.values()) for x in lessons}}
    return [*CANVAS_STUDENT_COLUMNS, *titles.values()], [points, *(students[s] for s in sorted(students))]


class ExerciseCsvExport(ExportPlugin):
    """Grades of every lesson (``assignment``) and student (``student``; default: all) in the
    gradebook, written to ``to`` as ``format`` (see the module's docstring)."""

    results = Unicode("", help="the autograder's results folder (default: results/ next to the gradebook)"
                      ).tag(config=True)
    format = Enum(["plain", "canvas"], "plain", help="plain: a column per graded cell; canvas: Canvas's "
                  "gradebook import").tag(config=True)
    submissions = List(Unicode(), help="collect's folders: their lms-ids.json give the LMS user ids").tag(config=True)
    canvas_assignments = Dict(value_trait=Unicode(), help="lesson -> Canvas assignment id (the column "
                              "'<lesson> (<id>)'; default: the assignment titled like the lesson)").tag(config=True)

    def export(self, gradebook: Gradebook) -> None:
        lessons = self.assignment or sorted(a.name for a in gradebook.assignments)
        results = Path(self.results or Path(gradebook.engine.url.database).parent / "results")
        graded = [_lesson(gradebook, lesson, results, self.student) for lesson in lessons]
        ids = lms_ids([Path(p) for p in self.submissions])
        header, rows = (_canvas(graded, ids, self.canvas_assignments) if self.format == "canvas"
                        else _plain(graded, ids))
        path = Path(self.to or "grades.csv")
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "w", newline="") as f:
            writer = csv.DictWriter(f, header, restval="")
            writer.writerow({k: safe_cell(k) for k in header})
            writer.writerows({k: safe_cell(v) for k, v in row.items()} for row in rows)
        self.log.info("Exported %d row(s) to %s", len(rows), path)


def export_csv(work: Path, to: Path, lessons: list[str] | None = None, students: list[str] | None = None, *,
               fmt: str = "plain", submissions: list[Path] = (), canvas_assignments: dict[str, str] | None = None
               ) -> Path:
    """Write the grades of ``work`` (an autograde ``--work`` folder) to the CSV ``to``."""
    work = graded_work(work)
    plugin = ExerciseCsvExport(to=str(to), assignment=lessons or [], student=students or [], format=fmt,
                               submissions=[str(p) for p in submissions], canvas_assignments=canvas_assignments or {})
    with Gradebook(f"sqlite:///{work / 'gradebook.db'}") as gradebook:
        plugin.export(gradebook)
    return Path(to)
