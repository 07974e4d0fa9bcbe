"""What a student's feedback shows, on top of nbgrader's: no hidden tests, the grader's notes,
figures, written answers no one has graded yet, a held submission said to be held; nothing a
student's code produced can run in the page, and nothing is fetched from the network.

nbgrader renders feedback from the autograded notebook, where every test cell
holds its hidden tests (restored from the gradebook) and failures carry full
tracebacks that quote the failing line. Its ``GenerateFeedback`` runs, on a copy
(``autograder/nbgrader_config.py``): ``HideTests`` (a test cell's ``### BEGIN
HIDDEN TESTS`` ... ``### END HIDDEN TESTS`` block becomes one comment line, each
error output of a test cell keeps only ``<exception>: <message>``), nbgrader's
``GetGrades``, ``GraderNotes`` (what the grader restored, at that cell),
``SafeOutputs`` (what the student's kernel displayed, made inert: ``safe_html``),
``PlotlyFigures`` (plotly figures drawn from their JSON by the grader, plotly.js
inlined once per page) and renders with ``FeedbackExporter``, which sanitizes
every markdown cell too, loads no MathJax (``NO_CDN``: formulas show as TeX),
writes "awaiting manual grading" where nbgrader would print a score of 0 for an
answer no one graded yet, and says at the top of a submission held for manual
review that it is held, why, and that its scores are provisional. The autograded
notebook itself (the instructor's record, in the formgrader) is not changed.
"""

from __future__ import annotations

import html
import re

from jinja2 import DictLoader, pass_context
from nbconvert.exporters import HTMLExporter
from nbformat.v4 import new_markdown_cell
from nbgrader.preprocessors import NbGraderPreprocessor
from traitlets import default

from mi_course.grading.safe_html import Sanitizer, inert_svg
from mi_course.grading.sandbox import HELD as HELD_ENAME
from mi_course.grading.integrity import NOTE_KEY, is_test_cell

HIDDEN = re.compile(r"^[ \t]*#+[ \t]*BEGIN HIDDEN TESTS.*?(^[ \t]*#+[ \t]*END HIDDEN TESTS[^\n]*$|\Z)",
                    re.MULTILINE | re.DOTALL)
PLACEHOLDER = "# (hidden tests: not shown)"
PLOTLY = "application/vnd.plotly.v1+json"
AWAITING = "awaiting manual grading"
# What a page shows of a kernel's outputs (text, HTML and markdown sanitized, images, plotly JSON); the rest
# (javascript, widgets, anything unknown) is dropped.
SHOWN = {"text/plain", "text/html", "text/markdown", "text/latex", "image/png", "image/jpeg", "image/svg+xml", PLOTLY}
# Templates that shadow nbconvert's: its MathJax macro loads MathJax from a CDN; offline, nothing (TeX as written).
NO_CDN = DictLoader({"mathjax.html.j2": "{%- macro mathjax(url='') -%}{%- endmacro %}"})


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
    """Before each cell the grader restored or stopped grading (``integrity.NOTE_KEY``), a note saying so."""

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


class SafeOutputs(NbGraderPreprocessor):
    """A code cell's outputs as a page may show them (a student's code made them): only ``SHOWN`` types,
    HTML through ``safe_html``, SVG as an image (plotly JSON is drawn by ``PlotlyFigures``, not by the kernel)."""

    def preprocess(self, nb, resources):
        self.safe_html = Sanitizer()  # one budget per page
        return super().preprocess(nb, resources)

    def preprocess_cell(self, cell, resources, index):
        for output in cell.get("outputs", []) if cell.cell_type == "code" else []:
            data = output.get("data")
            if not isinstance(data, dict):
                continue  # a stream or an error: text, escaped by the template
            for key in [k for k in data if k not in SHOWN]:
                del data[key]
            if "text/html" in data:
                data["text/html"] = self.safe_html(_text(data["text/html"]))
            if "image/svg+xml" in data:
                svg = _text(data.pop("image/svg+xml"))
                data.setdefault("text/html", inert_svg(svg))
        return cell, resources


def _text(value) -> str:
    return "".join(value) if isinstance(value, list) else str(value)


def _offline(figure):
    """``figure`` without layout images from other servers (they would be fetched by whoever opens the page)."""
    layout = figure.get("layout") if isinstance(figure, dict) else None
    if isinstance(layout, dict) and isinstance(layout.get("images"), list):
        layout["images"] = [im for im in layout["images"]
                            if isinstance(im, dict) and str(im.get("source", "")).startswith("data:image/")]
    return figure


def figure_html(figure, first: bool) -> str:
    """A plotly figure (its JSON) as HTML that draws it; plotly.js inlined if ``first``, never fetched."""
    import plotly.io

    try:
        figure = _offline(figure)
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


def held_reason(nb) -> str | None:
    """Why the grader held this autograded notebook for manual review (None: not held), from the error
    output ``sandbox.BoundedExecute`` wrote into its test cells (``HELD_ENAME: <reason>``, one line)."""
    for cell in nb.cells:
        if cell.cell_type == "code" and is_test_cell(cell):
            for output in cell.get("outputs", []):
                if (output.get("output_type") == "error" and output.get("ename") == HELD_ENAME
                        and output.get("traceback") == [f"{HELD_ENAME}: {output.get('evalue', '')}"]):
                    return str(output.get("evalue", ""))
    return None


def mark_held(page: str, reason: str, reviewed: bool) -> str:
    """nbgrader's page with, at the top, that the submission was held for manual review, why (``reason``,
    escaped) and whether its scores are provisional or an instructor's (``reviewed``: every test graded by hand)."""
    why = html.escape(reason) or "no reason recorded"
    if reviewed:
        box = ('<div class="alert alert-info"><b>Reviewed by hand.</b> The grader held this submission for manual '
               f"review ({why}); an instructor has since graded its tests by hand: the scores below are theirs.</div>")
    else:
        box = ('<div class="alert alert-danger"><b>Held for manual review.</b> The grader did not score this '
               f"submission automatically because of what its code does: {why}. The scores below are provisional "
               "(every test counts 0 until then): an instructor will look at the submission and grade it by "
               "hand.</div>")
        page = re.sub(r"(<h4>[^<]*\(Score: [^)<]*)\)", lambda m: f"{m.group(1)}; provisional: held for manual review)",
                      page, count=1)
    return re.sub(r"(<h4>.*?</h4>)", lambda m: m.group(1) + box, page, count=1, flags=re.DOTALL)


class FeedbackExporter(HTMLExporter):
    """nbgrader's feedback page (its ``feedback`` template): markdown sanitized, no MathJax from a CDN, answers
    not graded yet marked as such, a held submission said to be held."""

    @default("extra_loaders")
    def _no_cdn(self):
        return [NO_CDN]

    @pass_context
    def markdown2html(self, context, source):
        """Markdown (a student's cells, the grader's notes, comments) to HTML with only inert markup left."""
        return self.safe_html(super().markdown2html(context, source))

    def from_notebook_node(self, nb, resources=None, **kw):
        self.safe_html = Sanitizer()  # one budget per page
        reason = held_reason(nb)
        tests = {c.metadata.nbgrader["grade_id"] for c in nb.cells if is_test_cell(c)}
        page, resources = super().from_notebook_node(nb, resources, **kw)
        pending, by_hand = self.gradebook(resources, tests)
        page = mark_pending(page, pending)
        return (page if reason is None else mark_held(page, reason, by_hand)), resources

    def gradebook(self, resources, tests: set[str]) -> tuple[dict[str, float], bool]:
        """From the gradebook, for the submission in ``resources``: ``grade_id -> points`` of the answers
        awaiting manual grading, and whether every one of the ``tests`` (grade ids) was graded by hand."""
        from nbgrader.api import Gradebook

        ids = resources["nbgrader"]
        with Gradebook(ids["db_url"]) as gradebook:
            notebook = gradebook.find_submission_notebook(ids["notebook"], ids["assignment"], ids["student"])
            pending = {g.name: float(g.max_score) for g in notebook.grades if awaiting_manual_grade(g)}
            by_hand = [g.manual_score is not None for g in notebook.grades if g.name in tests]
            return pending, bool(by_hand) and all(by_hand)
