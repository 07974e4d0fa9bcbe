"""What a student's feedback shows, on top of nbgrader's: no hidden tests, the grader's notes,
figures, and written answers no one has graded yet.

nbgrader renders feedback from the autograded notebook, where every test cell
holds its hidden tests (restored from the gradebook) and failures carry full
tracebacks that quote the failing line. Its ``GenerateFeedback`` runs, on a copy
(``autograder/nbgrader_config.py``): ``HideTests`` (a test cell's ``### BEGIN
HIDDEN TESTS`` ... ``### END HIDDEN TESTS`` block becomes one comment line, each
error output of a test cell keeps only ``<exception>: <message>``), nbgrader's
``GetGrades``, ``GraderNotes`` (what the grader restored, at that cell),
``PlotlyFigures`` (plotly figures as HTML, plotly.js inlined once per page: the
page works offline) and renders with ``FeedbackExporter``, which writes "awaiting
manual grading" where nbgrader would print a score of 0 for an answer no one
graded yet. The autograded notebook itself (the instructor's record, in the
formgrader) is not changed.
"""

from __future__ import annotations

import html
import re

from nbconvert.exporters import HTMLExporter
from nbformat.v4 import new_markdown_cell
from nbgrader.preprocessors import NbGraderPreprocessor

from mi_course.grading.tamper import NOTE_KEY, is_test_cell

HIDDEN = re.compile(r"^[ \t]*#+[ \t]*BEGIN HIDDEN TESTS.*?(^[ \t]*#+[ \t]*END HIDDEN TESTS[^\n]*$|\Z)",
                    re.MULTILINE | re.DOTALL)
PLACEHOLDER = "# (hidden tests: not shown)"
PLOTLY = "application/vnd.plotly.v1+json"
AWAITING = "awaiting manual grading"


class HideTests(NbGraderPreprocessor):
    """Hidden test code out of the feedback; test failures as their one-line message."""

    def preprocess_cell(self, cell, resources, index):
        if cell.cell_type == "code" and is_test_cell(cell):
            cell.source = HIDDEN.sub(PLACEHOLDER, cell.source)
            for output in cell.get("outputs", []):
                if output.get("output_type") == "error":
                    output["traceback"] = [f"{output.get('ename', 'Error')}: {output.get('evalue', '')}"]
        return cell, resources


class GraderNotes(NbGraderPreprocessor):
    """Before each cell the grader restored or stopped grading (``tamper.NOTE_KEY``), a note saying so."""

    def preprocess(self, nb, resources):
        cells = []
        for cell in nb.cells:
            note = cell.metadata.get(NOTE_KEY)
            if isinstance(note, str):
                cells.append(new_markdown_cell(f'<div class="alert alert-warning"><b>Note from the grader:</b> '
                                               f"{html.escape(note)}</div>"))
            cells.append(cell)
        nb.cells = cells
        return nb, resources


def figure_html(figure, first: bool) -> str:
    """A plotly figure (its JSON) as HTML that draws it; plotly.js inlined if ``first``, never fetched."""
    import plotly.io

    try:
        return plotly.io.to_html(figure, include_plotlyjs=first, full_html=False, validate=False,
                                 default_height=525)
    except Exception as err:  # a figure the kernel made up: say so instead of failing the page
        return f"<pre>(a figure that could not be drawn: {html.escape(type(err).__name__)})</pre>"


class PlotlyFigures(NbGraderPreprocessor):
    """Every plotly figure drawn from its own JSON (nbconvert cannot show ``application/vnd.plotly.v1+json``);
    an HTML version the kernel sent with it is replaced (it could load plotly.js from a CDN)."""

    def preprocess(self, nb, resources):
        first = True
        for cell in nb.cells:
            for output in cell.get("outputs", []) if cell.cell_type == "code" else []:
                data = output.get("data", {})
                if PLOTLY in data:
                    data["text/html"] = figure_html(data.pop(PLOTLY), first)
                    first = False
        return nb, resources


def awaiting_manual_grade(grade) -> bool:
    """An nbgrader grade that needs a human and has not had one (a written answer not marked yet)."""
    return bool(grade.needs_manual_grade) and grade.manual_score is None


def _pending(resources) -> dict[str, float]:
    """``grade_id -> points`` of the answers in this feedback awaiting manual grading."""
    from nbgrader.api import Gradebook

    ids = resources["nbgrader"]
    with Gradebook(ids["db_url"]) as gradebook:
        notebook = gradebook.find_submission_notebook(ids["notebook"], ids["assignment"], ids["student"])
        return {g.name: float(g.max_score) for g in notebook.grades if awaiting_manual_grade(g)}


def _points(points: float) -> str:
    return f"{points:g} point{'s' * (points != 1)}"


def mark_pending(page: str, pending: dict[str, float]) -> str:
    """nbgrader's page with "awaiting manual grading" instead of the score of every ``pending`` answer
    (table of contents, the answer's heading) and the points still to grade in the title."""
    for grade_id, points in pending.items():
        gid = re.escape(grade_id)
        page = re.sub(rf'(<li><a href="#{gid}">[^<]*</a> )\(Score: [^)<]*\)',
                      lambda m: f"{m.group(1)}({AWAITING}: {_points(points)})", page, count=1)
        page = re.sub(rf'(<a name="{gid}"></a><div class="panel-heading">(?:(?!</div>).)*?)Score: [\d.]+ / [\d.]+',
                      lambda m: f"{m.group(1)}Awaiting manual grading ({_points(points)})", page, count=1,
                      flags=re.DOTALL)
    if pending:
        page = re.sub(r"(<h4>[^<]*\(Score: [\d.]+ / [\d.]+)\)",
                      lambda m: f"{m.group(1)}; {_points(sum(pending.values()))} {AWAITING})", page, count=1)
    return page


class FeedbackExporter(HTMLExporter):
    """nbgrader's feedback page (its ``feedback`` template), with answers not graded yet marked as such."""

    def from_notebook_node(self, nb, resources=None, **kw):
        page, resources = super().from_notebook_node(nb, resources, **kw)
        return mark_pending(page, _pending(resources)), resources
