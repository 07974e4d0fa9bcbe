"""Marks for written answers from a file, into the gradebook of a graded work folder:
``mi-course grade-written LESSON --work W --from marks.csv``.

The CSV has a header row ``student,cell,score`` and optionally ``comment``; one row
per answer marked: the student's id, the answer's cell (its nbgrader ``grade_id``,
e.g. ``q1_break_written``), the points (0 up to the cell's maximum) and a comment
the student sees in the feedback. Every row is checked before anything is written:
a mistake anywhere (an unknown student or cell, a cell that is not a written
answer, a score that is not a number or above the maximum, a repeated row) is an
error listing every bad row, and the gradebook stays as it was. Marks are stored
as nbgrader's formgrader stores them (``manual_score``, ``manual_comment``), so a
later ``autograde`` run, ``--force`` included, keeps them.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path

from mi_course.grading.autograde import printable
from mi_course.grading.config import graded_work
from mi_course.grading.sandbox import GradebookLock

COLUMNS = ("student", "cell", "score", "comment")


@dataclass
class Mark:
    line: int
    student: str
    cell: str
    score: float
    comment: str | None


def read_marks(path: Path) -> tuple[list[Mark], list[str]]:
    """The rows of ``path`` and the problems found in the file itself (header, numbers, repeats)."""
    problems, marks, seen = [], [], {}
    with open(path, newline="", encoding="utf-8-sig") as f:
        rows = csv.DictReader(f)
        header = [h.strip() for h in rows.fieldnames or []]
        if not set(COLUMNS[:3]) <= set(header) <= set(COLUMNS):
            return [], [f"{path}: the first line must name the columns student,cell,score[,comment]; it is "
                        f"'{printable(','.join(header))}'"]
        rows.fieldnames = header
        for line, row in enumerate(rows, start=2):
            student, cell = (row.get("student") or "").strip(), (row.get("cell") or "").strip()
            try:
                score = float(row.get("score") or "")
            except ValueError:
                score = math.nan
            if not math.isfinite(score):
                problems.append(f"line {line}: score '{printable(row.get('score'))}' is not a number")
            if (student, cell) in seen:
                problems.append(f"line {line}: {printable(student)} {printable(cell)} is marked on line "
                                f"{seen[student, cell]} already")
            seen.setdefault((student, cell), line)
            marks.append(Mark(line, student, cell, score, (row.get("comment") or "").strip() or None))
    return marks, problems


def grade_written(lesson: str, work: Path, path: Path) -> list[Mark]:
    """Store every mark of ``path`` for ``lesson`` in ``work``'s gradebook, or none (ValueError listing
    every problem). Returns the marks stored."""
    from nbgrader.api import Gradebook, MissingEntry

    work = graded_work(work)
    marks, problems = read_marks(Path(path))
    if not marks and not problems:
        problems.append(f"{path}: no marks in the file")
    with GradebookLock(work / "gradebook.lock"), Gradebook(f"sqlite:///{work / 'gradebook.db'}") as gradebook:
        try:
            assignment = gradebook.find_assignment(lesson)
        except MissingEntry:
            raise ValueError(f"lesson {lesson} is not in the gradebook of {work}: grade it first") from None
        notebook = assignment.notebooks[0]
        answers = {c.name for c in notebook.solution_cells}
        written = {c.name: float(c.max_score) for c in notebook.grade_cells if c.name in answers}
        submitted = {s.student.id for s in assignment.submissions}
        for mark in marks:
            where = f"line {mark.line}: "
            if mark.student not in submitted:
                problems.append(f"{where}no graded submission of {lesson} for student '{printable(mark.student)}'")
            if mark.cell not in written:
                problems.append(f"{where}'{printable(mark.cell)}' is not a written answer of {lesson} "
                                f"(those are: {', '.join(sorted(written))})")
            elif math.isfinite(mark.score) and not 0 <= mark.score <= written[mark.cell]:
                problems.append(f"{where}score {mark.score:g} for {mark.cell} is outside 0..{written[mark.cell]:g}")
        if problems:
            raise ValueError(f"nothing written; fix {path}:\n" + "\n".join(problems))
        for mark in marks:
            grade = gradebook.find_grade(mark.cell, notebook.name, lesson, mark.student)
            grade.manual_score, grade.needs_manual_grade = mark.score, False
            if mark.comment is not None:
                gradebook.find_comment(mark.cell, notebook.name, lesson, mark.student).manual_comment = mark.comment
        gradebook.db.commit()
    return marks
