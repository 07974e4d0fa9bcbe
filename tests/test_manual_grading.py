"""After autograding (the mini lesson, its exercise 1 test with a fallback as the real lessons have):
written answers marked for any work folder (from a file, or in the formgrader), marks kept by
later runs, the run's summary, and feedback that explains itself (restored cells, fallbacks,
figures drawn offline, answers awaiting manual grading, students skipped)."""

import json
import os
import re
import shutil
import sys
import textwrap
import urllib.request
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell

from mi_course.grading.autograde import autograde
from mi_course.grading.release import generate
from mi_course.grading.sandbox import Limits
from mi_course.grading.summary import summary
from mi_course.grading.integrity import NOTE_KEY
from mi_course.grading.written import grade_written

from conftest import ROOT
from minicourse import LESSON, lesson_notebook, mini_course
from test_formgrader import _get, serving

LIMITS = Limits(cell_timeout=60, wall=180.0, cpu=120, memory=2 * 2**30)
CLI_LIMITS = ["--cell-timeout", "60", "--wall", "180", "--cpu", "120", "--memory", "2"]  # the same: results reused
# Exercise 1's test as the lessons write theirs: on failure, later cells get the reference `double`.
FALLBACK_TEST = textwrap.dedent("""
    from mi_course.checks import exercise
    with exercise(globals(), double=lambda: (lambda x: 2 * x)):
        _v = double(3)
        assert _v == 6, f"double(3) should be 6, got {_v}"
        ### BEGIN HIDDEN TESTS
        assert all(double(_x) == 2 * _x for _x in range(-5, 6))
        ### END HIDDEN TESTS
    """).strip()
FIGURE = "import plotly.graph_objects as go\ngo.Figure(go.Bar(x=['a', 'b'], y=[1, 3]), layout_title_text='MY-BARS')"


def _cell(nb, grade_id):
    return next(c for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade_id") == grade_id)


def _gradebook_marks(work, student):
    from nbgrader.api import Gradebook

    with Gradebook(f"sqlite:///{work / 'gradebook.db'}") as gradebook:
        grade = gradebook.find_grade("q3_written", LESSON, LESSON, student)
        comment = gradebook.find_comment("q3_written", LESSON, LESSON, student)
        return grade.manual_score, comment.manual_comment


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    """alice: right, a figure, her exercise-1 test edited; carol: exercise 1 wrong, her exercise-2
    answer cell deleted, a forged grader note; erin: an empty file. Both written answers pending."""
    with mini_course(tmp_path_factory.mktemp("course")) as course:
        source = lesson_notebook()
        _cell(source, "ex1_double_test").source = FALLBACK_TEST
        nbformat.write(source, course / "solutions" / LESSON / f"{LESSON}.ipynb")
        generate(LESSON, release_dir=course / "lessons", update_header=False)
        solution = lambda: nbformat.read(course / "solutions" / LESSON / f"{LESSON}.ipynb", 4)  # noqa: E731
        subs, base = course / "subs", tmp_path_factory.mktemp("grading")
        alice = solution()
        alice.cells.append(new_code_cell(FIGURE))
        _cell(alice, "ex1_double_test").source = "pass"
        carol = solution()
        _cell(carol, "ex1_double").source = "def double(x):\n    return 0"
        carol.cells.remove(_cell(carol, "ex2_answer"))
        carol.cells[0].metadata[NOTE_KEY] = "FORGED note"
        for student, nb in {"alice": alice, "carol": carol}.items():
            (subs / student).mkdir(parents=True)
            nbformat.write(nb, subs / student / f"{LESSON}.ipynb")
        (subs / "erin").mkdir()
        (subs / "erin" / f"{LESSON}.ipynb").write_bytes(b"")
        results = autograde(LESSON, subs, work_dir=base / "work", feedback_dir=base / "feedback", limits=LIMITS,
                            jobs=2)
        yield {"course": course, "subs": subs, "work": base / "work", "base": base,
               "results": {r.student: r for r in results}}


def _page(graded, student):
    return Path(graded["results"][student].feedback).read_text()


def test_grades(graded):
    results = graded["results"]
    assert (results["alice"].status, results["alice"].total) == (
        "graded (edited test cell ex1_double_test (source; restored))", 3.0)
    assert results["carol"].scores == {"ex1_double_test": 0.0, "ex2_answer_test": 0.0}, results["carol"].status
    assert results["erin"].status == "error: empty file"


def test_feedback_notes_restored_cells_at_the_cell(graded):
    """Item 6: a note right before each cell the grader restored; a note a submission wrote itself is dropped."""
    alice, carol = _page(graded, "alice"), _page(graded, "carol")
    note = alice.index("Note from the grader:</b> This test cell was changed in your submission (source)")
    assert note < alice.index('<a name="ex1_double_test">') < note + 800
    note = carol.index("Note from the grader:</b> Your submission had no answer cell here")
    assert carol.index('<a name="ex1_double_test">') < note < carol.index("YOUR CODE HERE", note) < note + 1000
    assert "FORGED" not in carol and alice.count("Note from the grader") == 1


def test_feedback_shows_the_fallback(graded):
    """A failed exercise's fallback, printed by the test cell, reaches the feedback (with the failure)."""
    page = _page(graded, "carol")
    assert "This exercise failed, so later cells use the course" in page and "`double`" in page
    assert "double(3) should be 6, got 0" in page
    assert "BEGIN HIDDEN TESTS" not in page and "range(-5, 6)" not in page


def test_feedback_draws_figures_offline(graded):
    """Issue 18: the figure is drawn by plotly.js inlined once in the page; no script is fetched at all
    (not even MathJax: formulas stay as the TeX written)."""
    page = _page(graded, "alice")
    assert page.count('class="plotly-graph-div"') == 1 and "MY-BARS" in page
    assert page.count("* plotly.js v") == 1 and len(page) > 3_000_000    # plotly.js itself, inlined once
    sources = re.findall(r"<script[^>]*\bsrc=[\"']?([^\"' >]+)", page)
    assert sources == [], sources
    assert not re.search(r"src=[\"']?https?://cdn\.plot\.ly", page) and "application/vnd.plotly" not in page
    assert "plotly-graph-div" not in _page(graded, "carol")               # no figure, no plotly.js
    assert len(_page(graded, "carol")) < 1_000_000


def test_feedback_says_awaiting_manual_grading(graded):
    """Issue 18: an answer no one marked yet reads "awaiting manual grading", not a score of 0."""
    page = _page(graded, "alice")
    assert '<a href="#q3_written">Written response</a> (awaiting manual grading: 1 point)' in page
    heading = page[page.index('<a name="q3_written">'):][:400]
    assert "Awaiting manual grading (1 point)" in heading and "Score:" not in heading
    assert "(Score: 3.0 / 4.0; 1 point awaiting manual grading)" in page


def test_summary_of_a_run(graded, capsys):
    """Item 5: what was graded now or reused, errors by reason, who waits for manual grading."""
    from mi_course.cli import main

    first = summary(list(graded["results"].values()), graded["work"], LESSON)
    assert f"3 student(s): 3 graded in this run, 0 reused from {graded['work']}" in first
    assert "in error: 1" in first and "  empty file: 1 (erin)" in first
    assert "waiting for manual grading: 2 student(s), 2 answer(s) (alice, carol)" in first
    assert main(["autograde", LESSON, str(graded["subs"]), "--work", str(graded["work"]), *CLI_LIMITS,
                 "--feedback", str(graded["base"] / "feedback")]) == 0
    out, err = capsys.readouterr()
    assert "reusing 3 graded submission(s)" in err
    assert "3 student(s): 0 graded in this run, 3 reused" in out and "empty file: 1 (erin)" in out


def _marks(tmp_path, text):
    path = tmp_path / "marks.csv"
    path.write_text(textwrap.dedent(text).lstrip())
    return path


def test_grade_written_refuses_a_bad_file_whole(graded, tmp_path, capsys):
    from mi_course.cli import main

    work = graded["work"]
    bad = _marks(tmp_path, """
        student,cell,score,comment
        alice,q3_written,1,fine
        mallory,q3_written,1,
        alice,ex1_double_test,1,
        carol,q3_written,2,
        carol,q3_written,x,
        erin,q3_written,0,
        """)
    with pytest.raises(ValueError) as err:
        grade_written(LESSON, work, bad)
    message = str(err.value)
    for words in ("line 3: no graded submission of 01_mini for student 'mallory'",
                  "line 4: 'ex1_double_test' is not a written answer of 01_mini (those are: q3_written)",
                  "line 5: score 2 for q3_written is outside 0..1", "line 6: score 'x' is not a number",
                  "line 6: carol q3_written is marked on line 5 already",
                  "line 7: no graded submission of 01_mini for student 'erin'"):
        assert words in message, message
    assert "line 2" not in message
    assert _gradebook_marks(work, "alice") == (None, None)        # nothing written, not even the good row
    assert main(["grade-written", LESSON, "--work", str(work), "--from", str(bad)]) == 2
    assert "nothing written" in capsys.readouterr().err
    with pytest.raises(ValueError, match="first line must name the columns"):
        grade_written(LESSON, work, _marks(tmp_path, "name,points\nalice,1\n"))


def test_marks_survive_regrading_and_reach_the_feedback(graded, tmp_path, capsys):
    """Item 2: marks imported into a --work folder; feedback shows them; a re-run, --force included, keeps them;
    `feedback` names the student it skipped and why."""
    from mi_course.cli import main

    work = tmp_path / "work"
    shutil.copytree(graded["work"], work)
    marks = _marks(tmp_path, """
        student,cell,score,comment
        alice,q3_written,0.5,Half right: say why.
        """)
    assert main(["grade-written", LESSON, "--work", str(work), "--from", str(marks)]) == 0
    assert "stored 1 mark(s) for 1 student(s)" in capsys.readouterr().out
    assert _gradebook_marks(work, "alice") == (0.5, "Half right: say why.")
    only_alice = tmp_path / "subs"
    shutil.copytree(graded["subs"] / "alice", only_alice / "alice")
    (forced,) = autograde(LESSON, only_alice, work_dir=work, feedback_dir=tmp_path / "fb", limits=LIMITS,
                          force=True)
    assert (forced.reused, forced.total) == (False, 3.0)
    assert _gradebook_marks(work, "alice") == (0.5, "Half right: say why.")
    assert main(["feedback", LESSON, "--work", str(work), "--to", str(tmp_path / "lms")]) == 0
    out = capsys.readouterr().out
    assert re.search(r"erin +skipped: error: empty file", out) and "1 skipped (in error" in out
    page = (tmp_path / "lms" / "alice" / f"{LESSON}.html").read_text()
    assert "(Score: 3.5 / 4.0)" in page and "Half right: say why." in page and "awaiting manual" not in page
    assert "awaiting manual grading: 1 point" in (tmp_path / "lms" / "carol" / f"{LESSON}.html").read_text()
    assert not (tmp_path / "lms" / "erin").exists()


def test_formgrader_marks_a_work_folder(graded, tmp_path):
    """Item 2: `mi-course formgrader --work W` (JupyterLab in the checkout with MI_COURSE_WORK=W, which the
    root nbgrader_config.py reads): the formgrader lists the submissions graded into W and stores a mark there."""
    from nbgrader.api import Gradebook

    course, work = graded["course"], tmp_path / "work"
    shutil.copytree(graded["work"], work)
    shutil.copy(ROOT / "nbgrader_config.py", course / "nbgrader_config.py")
    token = "formgrader-work-test"
    env = dict(os.environ, JUPYTER_TOKEN=token, PATH="/usr/bin:/bin",  # as a user's shell: no venv on PATH
               JUPYTER_CONFIG_DIR=str(tmp_path / "jcfg"), JUPYTER_DATA_DIR=str(tmp_path / "jdata"),
               JUPYTER_RUNTIME_DIR=str(tmp_path / "jrun"), IPYTHONDIR=str(tmp_path / "ipy"))
    command = [sys.executable, "-m", "mi_course.cli", "formgrader", "--work", str(work), "--port={port}",
               "--no-browser"]
    with serving(command, tmp_path, env, token) as base:
        status, body = _get(f"{base}/formgrader/api/submitted_notebooks/{LESSON}/{LESSON}?token={token}")
        assert status == 200, body[-2000:]
        listed = {s["student"]: s for s in json.loads(body)}
        assert {"alice", "carol"} <= set(listed) and listed["carol"]["needs_manual_grade"]
        status, body = _get(f"{base}/formgrader/api/grades?submission_id={listed['carol']['id']}&token={token}")
        grade = next(g for g in json.loads(body) if g["name"] == "q3_written")
        request = urllib.request.Request(f"{base}/formgrader/api/grade/{grade['id']}", method="PUT",
                                         data=json.dumps({"manual_score": 1.0}).encode(),
                                         headers={"Authorization": f"token {token}"})
        with urllib.request.urlopen(request, timeout=30) as response:
            assert response.status == 200
        status, body = _get(f"{base}/formgrader/submissions/{listed['carol']['id']}/?token={token}")
        assert status == 200 and "q3_written" in body, body[-2000:]
    with Gradebook(f"sqlite:///{work / 'gradebook.db'}") as gradebook:
        assert gradebook.find_grade("q3_written", LESSON, LESSON, "carol").manual_score == 1.0
    assert not (course / ".nbgrader").exists()
