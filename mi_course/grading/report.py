"""What a class got wrong: per exercise and per student, from a graded work folder.

Reads nbgrader's gradebook, the autograder's stored results and the autograded
notebooks (for the failure messages) of ``mi-course autograde --work W``; changes
nothing. Everything a submission wrote (failure messages, ids) is treated as
hostile: escaped for the terminal and for HTML, and cut to one line.
"""

from __future__ import annotations

import html
import json
import os
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from mi_course.grading.config import graded_work

MAX_NOTEBOOK_BYTES = 50 * 2**20
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?(?:e[-+]?\d+)?")


@dataclass
class Failure:
    """One kind of failure of an exercise: its first line (numbers kept from the first example)."""
    message: str
    count: int
    example: str


@dataclass
class ExerciseSummary:
    name: str
    points: float
    manual: bool
    full: int = 0
    partial: int = 0
    zero: int = 0
    pending: int = 0
    scores: list[float] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)

    @property
    def mean(self) -> float | None:
        return sum(self.scores) / len(self.scores) if self.scores else None


@dataclass
class StudentSummary:
    student: str
    total: float
    pending_points: float
    status: str


@dataclass
class ClassReport:
    lesson: str
    max_points: float
    exercises: list[ExerciseSummary]
    students: list[StudentSummary]


def one_line(text: str, limit: int = 160) -> str:
    """``text`` safe for one terminal line: control characters escaped, cut to ``limit``."""
    text = "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in str(text))
    return text if len(text) <= limit else text[: limit - 1] + "…"


def read_notebook(path: Path) -> dict | None:
    """The autograded notebook as JSON, never through a link and never too big; None if unreadable."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return None
    with os.fdopen(fd, "rb") as f:
        data = f.read(MAX_NOTEBOOK_BYTES + 1)
    try:
        return json.loads(data) if len(data) <= MAX_NOTEBOOK_BYTES else None
    except ValueError:
        return None


def failure_lines(notebook: dict | None) -> dict[str, str]:
    """``grade_id -> first line of the error`` of every test cell that raised."""
    found = {}
    for cell in (notebook or {}).get("cells", []) if isinstance(notebook, dict) else []:
        grade_id = (cell.get("metadata", {}).get("nbgrader") or {}).get("grade_id") if isinstance(cell, dict) else None
        for out in cell.get("outputs", []) if isinstance(grade_id, str) else []:
            if isinstance(out, dict) and out.get("output_type") == "error":
                text = str(out.get("evalue") or "").strip().splitlines()
                found[grade_id] = f"{out.get('ename', 'Error')}: {text[0]}" if text else str(out.get("ename", "Error"))
    return found


def class_report(work: Path, lesson: str) -> ClassReport:
    """Per exercise: full / partial / zero / pending counts, mean, most common failures;
    per student: total, points awaiting manual grading, status."""
    from nbgrader.api import Gradebook, MissingEntry

    work = graded_work(work)
    stored = {}
    for path in sorted((work / "results" / lesson).glob("*.json")):
        saved = json.loads(path.read_text())
        stored[saved["student"]] = saved
    with Gradebook(f"sqlite:///{work / 'gradebook.db'}") as gradebook:
        try:
            notebook = gradebook.find_assignment(lesson).notebooks[0]
        except (MissingEntry, IndexError):
            raise ValueError(f"lesson {lesson} is not in the gradebook of {work}: grade it first") from None
        exercises = {c.name: ExerciseSummary(c.name, float(c.max_score), c.cell_type == "markdown")
                     for c in notebook.grade_cells}
        graded = {s.student.id: {g.name: (g.score, g.needs_manual_grade and g.manual_score is None)
                                 for g in gradebook.find_submission_notebook(notebook.name, lesson, s.student.id).grades}
                  for s in gradebook.find_assignment(lesson).submissions}
    messages: dict[str, Counter] = {name: Counter() for name in exercises}
    examples: dict[tuple[str, str], tuple[str, str]] = {}
    students = []
    for student in sorted(set(stored) | set(graded)):
        status = stored.get(student, {}).get("status", "graded by nbgrader")
        if student not in graded or status.startswith("error"):
            students.append(StudentSummary(student, 0.0, 0.0, status))
            continue
        failures = failure_lines(read_notebook(work / "autograded" / student / lesson / f"{lesson}.ipynb"))
        total = pending_points = 0.0
        for name, summary in exercises.items():
            score, pending = graded[student].get(name, (None, False))
            if pending:
                summary.pending += 1
                pending_points += summary.points
                continue
            score = float(score or 0.0)
            total += score
            summary.scores.append(score)
            if score >= summary.points:
                summary.full += 1
            elif score > 0:
                summary.partial += 1
            else:
                summary.zero += 1
            if score < summary.points and name in failures:
                key = _NUMBER.sub("#", failures[name])
                messages[name][key] += 1
                examples.setdefault((name, key), (failures[name], student))
        if pending_points:
            status = "needs manual grading" if status == "graded" else f"{status}; needs manual grading"
        students.append(StudentSummary(student, total, pending_points, status))
    for name, counter in messages.items():
        exercises[name].failures = [Failure(examples[(name, key)][0], n, examples[(name, key)][1])
                                    for key, n in counter.most_common(5)]
    return ClassReport(lesson, sum(e.points for e in exercises.values()), list(exercises.values()), students)


def render_text(report: ClassReport) -> str:
    """The report as a terminal table: exercises, their most common failures, then students."""
    n = len(report.students)
    lines = [f"{report.lesson}: {n} student(s), {report.max_points:g} points", "",
             f"{'exercise':<32} {'points':>6} {'full':>5} {'part':>5} {'zero':>5} {'pend':>5} {'mean':>6}"]
    for e in report.exercises:
        mean = "" if e.mean is None else f"{e.mean:.2f}"
        lines.append(f"{one_line(e.name, 32):<32} {e.points:>6g} {e.full:>5} {e.partial:>5} {e.zero:>5} "
                     f"{e.pending:>5} {mean:>6}")
        for f in e.failures:
            lines.append(f"    {f.count:>3} x {one_line(f.message, 100)}  (e.g. {one_line(f.example, 40)})")
    lines += ["", f"{'student':<32} {'total':>7} {'pending':>8}  status"]
    for s in report.students:
        lines.append(f"{one_line(s.student, 32):<32} {s.total:>7g} {s.pending_points:>8g}  {one_line(s.status, 80)}")
    return "\n".join(lines)


def _figures(report: ClassReport) -> list:
    import plotly.graph_objects as go

    names = [e.name for e in report.exercises]
    rates = go.Figure([go.Bar(name=label, x=names, y=[getattr(e, attr) for e in report.exercises])
                       for label, attr in (("full marks", "full"), ("partial", "partial"), ("zero", "zero"),
                                           ("awaiting manual grading", "pending"))])
    rates.update_layout(barmode="stack", title="Students per outcome, by exercise", yaxis_title="students")
    totals = go.Figure(go.Histogram(x=[s.total for s in report.students if not s.status.startswith("error")],
                                    xbins=dict(start=-0.5, end=report.max_points + 0.5, size=1)))
    totals.update_layout(title=f"Totals graded so far, autograded and hand-marked (out of {report.max_points:g})",
                         xaxis_title="points", yaxis_title="students")
    return [rates, totals]


def render_html(report: ClassReport) -> str:
    """One self-contained page (plotly.js embedded, readable offline)."""
    esc = html.escape
    figures = _figures(report)
    plots = "".join(fig.to_html(full_html=False, include_plotlyjs=(i == 0)) for i, fig in enumerate(figures))
    rows = []
    for e in report.exercises:
        mean = "" if e.mean is None else f"{e.mean:.2f}"
        failures = "".join(f"<li>{f.count} × <code>{esc(one_line(f.message, 300))}</code> "
                           f"(e.g. {esc(one_line(f.example, 60))})</li>" for f in e.failures)
        rows.append(f"<tr><td>{esc(e.name)}</td><td>{e.points:g}</td><td>{e.full}</td><td>{e.partial}</td>"
                    f"<td>{e.zero}</td><td>{e.pending}</td><td>{mean}</td><td><ul>{failures}</ul></td></tr>")
    students = "".join(f"<tr><td>{esc(one_line(s.student, 60))}</td><td>{s.total:g}</td><td>{s.pending_points:g}</td>"
                       f"<td>{esc(one_line(s.status, 200))}</td></tr>" for s in report.students)
    return f"""<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>{esc(report.lesson)}: class report</title>
<style>body{{font-family:sans-serif;margin:2em}} table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:4px 8px;vertical-align:top}} ul{{margin:0;padding-left:1.2em}}</style></head>
<body><h1>{esc(report.lesson)}: {len(report.students)} student(s), {report.max_points:g} points</h1>
{plots}
<h2>Exercises</h2>
<table><tr><th>exercise</th><th>points</th><th>full</th><th>partial</th><th>zero</th><th>awaiting manual</th>
<th>mean</th><th>most common failures</th></tr>{''.join(rows)}</table>
<h2>Students</h2>
<table><tr><th>student</th><th>total graded so far</th><th>points awaiting manual grading</th><th>status</th></tr>
{students}</table></body></html>
"""


def write_report(work: Path, lesson: str, html_path: Path | None = None) -> tuple[str, Path | None]:
    """The terminal table, and the HTML page written to ``html_path`` (if given)."""
    report = class_report(work, lesson)
    if html_path is not None:
        html_path = Path(html_path)
        html_path.parent.mkdir(parents=True, exist_ok=True)
        html_path.write_text(render_html(report))
    return render_text(report), html_path
