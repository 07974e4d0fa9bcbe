"""What a feedback page and a static HTML export show, from an already-executed notebook (no grading run,
no kernel, no network): figures drawn offline, nothing loaded from a CDN, a student's own HTML made inert,
a held submission said to be held (issue 18)."""

import base64
import copy
import html
import json
import re
from pathlib import Path

import nbformat
import nbgrader
import plotly.graph_objects as go
import pytest
from bs4 import BeautifulSoup
from nbformat.v4 import new_code_cell, new_markdown_cell, new_output
from traitlets.config import Config
from traitlets.config.loader import PyFileConfigLoader
from traitlets.utils.importstring import import_item

from mi_course.cli import main
from mi_course.grading.feedback import PLOTLY, FeedbackExporter, held_reason
from mi_course.grading.safe_html import Sanitizer, safe_html
from mi_course.grading.sandbox import HELD
from mi_course.html_export import notebook_html, remote_references

from conftest import ROOT
from minicourse import LESSON, lesson_notebook

PWNED = "PWNED"  # every hostile payload below would run code naming this, or fetch an address with it
HOSTILE_HTML = [
    f"<script>alert('{PWNED}-script')</script>",
    f"<img src=x onerror=\"alert('{PWNED}-onerror')\">",
    f"<a href=\"javascript:alert('{PWNED}-link')\">click me</a>",
    f"<a href=\" JaVa&#x09;ScRiPt:alert('{PWNED}-entity')\">and me</a>",
    f"<a href=\"data:text/html,<script>alert('{PWNED}-data')</script>\">data link</a>",
    f"<div onmouseover=\"alert('{PWNED}-handler')\" style=\"position: fixed; top: 0\">hover</div>",
    f"<iframe src=\"https://evil.example/{PWNED}\"></iframe>",
    f"<object data=\"https://evil.example/{PWNED}.swf\"></object><embed src=\"https://evil.example/{PWNED}\">",
    f"<svg onload=\"alert('{PWNED}-svg-inline')\"><script>alert('{PWNED}-svg-script')</script></svg>",
    f"<img src=\"https://evil.example/{PWNED}-tracking.png\" alt=\"tracking pixel\">",
    f"<form action=\"https://evil.example/{PWNED}\"><button>submit</button></form>",
    f"<style>body {{ display: none }} /* {PWNED}-style */</style>",
    f"<scr<script>ipt>alert('{PWNED}-split')</script>",
    f"<math><mi xlink:href=\"javascript:alert('{PWNED}-math')\">x</mi></math>",
    f"<base href=\"https://evil.example/{PWNED}/\"><link rel=stylesheet href=\"https://evil.example/{PWNED}.css\">",
    f"<div class=\"navbar-fixed-top alert alert-success\">Reviewed by hand: full marks {PWNED}</div>",
]
HOSTILE_SVG = (f'<svg xmlns="http://www.w3.org/2000/svg" onload="alert(\'{PWNED}-svg\')"><script>alert(\'{PWNED}-svg2\')'
               '</script><circle r="5"/></svg>')
REASON = "ex1_double_test: reads the interpreter's internals (<b>sys._getframe</b> & co)"


def _cell(nb, grade_id):
    return next(c for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade_id") == grade_id)


def _figure() -> dict:
    """A plotly figure's output data as the kernel sends it (its JSON); a label a student could have chosen."""
    fig = go.Figure(go.Bar(x=["a", "b"], y=[1, 31337]), layout_title_text=f"MY-BARS <script>{PWNED}</script>")
    return json.loads(fig.to_json())


@pytest.fixture(scope="module")
def executed():
    """The mini lesson as the grader leaves it after running a hostile submission: the course's figure, the
    student's own HTML, SVG, javascript and markdown, a written answer with HTML in it, TeX in a markdown cell."""
    nb = lesson_notebook()
    answer = _cell(nb, "ex1_double")
    answer.outputs = [new_output("display_data", data={PLOTLY: _figure(), "text/plain": "Figure"})]
    outputs = [new_output("display_data", data={"text/html": h, "text/plain": "<html>"}) for h in HOSTILE_HTML]
    outputs += [new_output("display_data", data={"application/javascript": f"alert('{PWNED}-js')",
                                                 "text/plain": "<js>"}),
                new_output("display_data", data={"image/svg+xml": HOSTILE_SVG, "text/plain": "<svg>"}),
                new_output("display_data", data={"text/markdown": f"**bold** <script>alert('{PWNED}-md')</script>",
                                                 "text/plain": "<md>"}),
                new_output("display_data", data={"application/vnd.jupyter.widget-view+json": {"model_id": "x"},
                                                 "text/plain": "widget"}),
                new_output("display_data", data={"text/html": "<table class='dataframe'><tr><th>col</th></tr>"
                                                 "<tr><td>KEPT-TABLE</td></tr></table>", "text/plain": "df"})]
    student = new_code_cell("display(...)  # the student's own outputs", outputs=outputs)
    markdown = new_markdown_cell("My notes: $\\frac{a}{b} < 1$ and <script>alert('" + PWNED + "-cell')</script>"
                                 "<img src=x onerror=\"alert('" + PWNED + "-cell-img')\">")
    nb.cells[nb.cells.index(answer) + 1:nb.cells.index(answer) + 1] = [student, markdown]
    _cell(nb, "q3_written").source = f"Because <img src=x onerror=\"alert('{PWNED}-written')\"> of this."
    for cell in nb.cells:
        meta = cell.metadata.get("nbgrader", {})
        if meta.get("grade"):
            meta["score"], meta["points"] = 0.0, meta.get("points", 0)
    return nb


def _held(nb, reason=REASON):
    nb = copy.deepcopy(nb)
    for cell in nb.cells:
        if cell.metadata.get("nbgrader", {}).get("grade") and not cell.metadata.nbgrader.get("solution"):
            cell.outputs.append(new_output("error", ename=HELD, evalue=reason, traceback=[f"{HELD}: {reason}"]))
    return nb


def render(nb, pending=None, by_hand=False) -> str:
    """The feedback page of ``nb`` as nbgrader's GenerateFeedback makes it with the course's configuration,
    the gradebook's part given (``pending`` answers, tests graded ``by_hand``) and scores already in ``nb``."""
    course = PyFileConfigLoader("nbgrader_config.py", path=str(ROOT / "autograder")).load_config()

    class Exporter(import_item(course.GenerateFeedback.exporter_class)):
        def gradebook(self, resources, tests):
            return pending or {}, by_hand

    templates = Path(nbgrader.__file__).parent / "server_extensions" / "formgrader"
    exporter = Exporter(config=Config({"HTMLExporter": {
        "template_name": "feedback", "extra_template_basedirs": [str(templates / "templates")],
        "extra_template_paths": [str(templates / "static" / "node_modules" / "bootstrap" / "dist" / "css")]}}))
    for name in course.GenerateFeedback.preprocessors:
        if name != "nbgrader.preprocessors.GetGrades":  # reads the gradebook: the scores are in ``nb`` already
            exporter.register_preprocessor(import_item(name)(), enabled=True)
    resources = {"nbgrader": {"notebook": LESSON, "assignment": LESSON, "student": "alice", "score": 0.0,
                              "max_score": 4.0, "late_penalty": 0}}
    page, _ = exporter.from_notebook_node(copy.deepcopy(nb), resources)
    return page


def assert_inert(page: str) -> None:
    """No script from elsewhere, no student-made script, handler, javascript link, frame or remote fetch."""
    soup = BeautifulSoup(page, "html.parser")
    assert remote_references(page) == []
    for script in soup.find_all("script"):
        assert not script.get("src"), script.get("src")
        text = script.string or ""
        if PWNED in text:  # only inside a figure's JSON, where plotly writes every "<" as \u003c
            assert "Plotly.newPlot" in text and "<script" not in text and "\\u003cscript" in text
    for tag in soup.find_all(True):
        assert tag.name not in ("iframe", "object", "embed", "form", "base", "svg", "math"), tag.name
        for name, value in tag.attrs.items():
            assert not name.lower().startswith("on"), (tag.name, name)
            if name in ("href", "src", "action", "data"):
                url = re.sub(r"\s", "", str(value)).lower()
                assert not url.startswith(("javascript:", "data:text", "http", "//")) or tag.name == "a" \
                    and url.startswith("http"), (tag.name, value)
            if name == "style":
                assert "position" not in value, value
            if name == "class" and PWNED in tag.get_text():
                assert not re.search("fixed|modal|navbar", " ".join(value)), value
    assert "text/x-mathjax-config" not in page and "mathjax" not in " ".join(
        str(s.get("src")) for s in soup.find_all("script")).lower()


@pytest.mark.parametrize("hostile", HOSTILE_HTML)
def test_safe_html_leaves_nothing_that_runs(hostile):
    cleaned = safe_html(hostile)
    assert_inert(f"<html><body>{cleaned}</body></html>")
    assert "alert(" not in re.sub(r">[^<]*<", "><", f">{cleaned}<"), cleaned   # not in any tag or attribute


def test_safe_html_keeps_what_notebooks_show():
    kept = ['<table border="1" class="dataframe"><tbody><tr><th style="text-align: right;">x</th></tr></tbody></table>',
            "<details><summary>Hint</summary>use <code>x</code></details>",
            '<img alt="ok" src="data:image/png;base64,iVBORw0KGgo=">',
            '<a href="https://example.org/paper">the paper</a>', "<b>bold</b> <em>it</em> <sub>2</sub>"]
    for fragment in kept:
        assert safe_html(fragment) == fragment
    assert safe_html('<a href="https://c.example"><img src="https://c.example/badge.svg" alt="Open In Colab"></a>') \
        == '<a href="https://c.example">[Open In Colab]</a>'   # a remote image: its alt text, nothing fetched


def test_too_much_html_is_shown_as_text():
    """Sanitizing is slow (quadratic in nesting): a fragment with too many tags, or past the page's budget,
    is shown as escaped text at once."""
    sanitize = Sanitizer(budget=1_000)
    deep = sanitize("<div onclick='alert(1)'>" * 50_000)
    assert deep.startswith("<pre>(HTML too large to show here: 1,200,000 characters; as text)")
    assert "<div" not in deep and "[... 1,180,000 more]</pre>" in deep
    nested = Sanitizer()
    assert nested("<i>" * 101).startswith("<pre>(HTML too large") and nested("<i>" * 99) == "<i>" * 99 + "</i>" * 99
    assert sanitize("<b>x</b>" * 100) == "<b>x</b>" * 100                # 800 characters: within the budget
    assert sanitize("<b>x</b>" * 100).startswith("<pre>(HTML too large")  # the page's budget is spent


def test_feedback_page_is_inert_and_offline(executed):
    """The student's outputs, markdown and written answer can run nothing; the course's figure is drawn by
    plotly.js inlined once; no script is loaded from anywhere (no MathJax: formulas read as TeX)."""
    page = render(executed)
    assert_inert(page)
    assert page.count('class="plotly-graph-div"') == 1 and "31337" in page and "MY-BARS" in page
    assert page.count("* plotly.js v") == 1 and PLOTLY not in page
    assert "KEPT-TABLE" in page and "<strong>bold</strong>" in page and "click me" in page
    assert "$\\frac{a}{b} &lt; 1$" in page                           # TeX left readable
    svg = re.search(r'<img alt="SVG figure" src="data:image/svg\+xml;base64,([^"]+)"', page)
    assert svg and base64.b64decode(svg.group(1)).decode() == HOSTILE_SVG  # drawn as an image: scripts never run
    assert "application/javascript" not in page and "widget-view" not in page
    assert "Held for manual review" not in page and "provisional" not in page


def test_feedback_of_a_held_submission_says_so(executed):
    """Issue 18: a held submission's page says at the top that it is held, why (escaped), and that its
    scores are provisional; once an instructor graded every test by hand, that they are theirs."""
    page = render(_held(executed))
    assert_inert(page)
    top = page[page.index("<h4>"):page.index('<div id="toc">')]
    assert "(Score: 0.0 / 4.0; provisional: held for manual review)" in top
    assert "<b>Held for manual review.</b>" in top and "The scores below are provisional" in top
    assert html.escape(REASON) in top and "<b>sys._getframe</b>" not in page
    reviewed = render(_held(executed), by_hand=True)
    top = reviewed[reviewed.index("<h4>"):reviewed.index('<div id="toc">')]
    assert "Reviewed by hand." in top and "provisional" not in top and html.escape(REASON) in top
    pending = render(_held(executed), pending={"q3_written": 1.0})
    assert "(Score: 0.0 / 4.0; 1 point awaiting manual grading; provisional: held for manual review)" in pending


def test_only_the_graders_mark_counts_as_held(executed):
    """A student's own exception named like the grader's (a full traceback) does not make a page say "held"."""
    assert held_reason(_held(executed)) == REASON and held_reason(executed) is None
    forged = copy.deepcopy(executed)
    _cell(forged, "ex1_double_test").outputs = [new_output(
        "error", ename=HELD, evalue="fake", traceback=["Traceback (most recent call last):", f"{HELD}: fake"])]
    assert held_reason(forged) is None
    assert "Held for manual review" not in render(forged)


def test_static_export_draws_figures_offline(executed, tmp_path, capsys):
    """Issue 18: `mi-course html` writes an executed notebook as one page: the figure's data and plotly.js
    inline, no <script src=...> (no require.js, MathJax or widgets from a CDN)."""
    page = notebook_html(executed)
    soup = BeautifulSoup(page, "html.parser")
    assert [s.get("src") for s in soup.find_all("script") if s.get("src")] == []
    assert page.count('class="plotly-graph-div"') == 1 and "31337" in page and page.count("* plotly.js v") == 1
    assert "require.min.js" not in page and "text/x-mathjax-config" not in page
    nbformat.write(executed, tmp_path / "lesson.ipynb")
    assert main(["html", str(tmp_path / "lesson.ipynb"), "--to", str(tmp_path / "out.html")]) == 0
    said = capsys.readouterr()
    assert "31337" in (tmp_path / "out.html").read_text() and "wrote" in said.out
    # What the notebook's own outputs load from elsewhere is named (it needs the network), not hidden.
    assert f"note: the page loads https://evil.example/{PWNED}-tracking.png" in said.err
    blank = nbformat.v4.new_notebook(cells=[new_code_cell("1 + 1")])
    nbformat.write(blank, tmp_path / "blank.ipynb")
    assert main(["html", str(tmp_path / "blank.ipynb")]) == 2
    assert "no outputs: run it first" in capsys.readouterr().err
