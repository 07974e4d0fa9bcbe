"""Every lesson, with no per-lesson code: the released notebook is what nbgrader makes
of the solution, the solution earns full marks on every autograded cell, and the
untouched released notebook earns zero on every one."""

import json

import nbformat
import pytest

from mi_course.course import HEADER_TAG, header_cells, lesson_names
from mi_course.grading.autograde import autograde, autograded_cells, is_test_cell
from mi_course.grading.release import generate

from conftest import ROOT
from submissions import (AFTER_WRONG, OWN_WORK_FAILURES, RETEST, SUITE, answer_ids, answers, errors,
                         with_reference_retests, wrong_answer_ids, wrong_notebook)

LESSONS = lesson_names(ROOT)


def _comparable(path):
    """Cells as nbgrader writes them, minus what is volatile (outputs, execution counts)."""
    nb = nbformat.read(path, as_version=4)
    cells = []
    for cell in nb.cells:
        cell = dict(cell)
        cell.pop("outputs", None)
        cell.pop("execution_count", None)
        cell["metadata"] = {k: v for k, v in cell["metadata"].items() if k not in ("execution", "collapsed", "scrolled")}
        cells.append(json.dumps(cell, sort_keys=True))
    return cells


def test_there_are_lessons():
    assert LESSONS and LESSONS[0] == "01_tokens_and_logits"


@pytest.mark.parametrize("lesson", LESSONS)
def test_header_is_current(lesson):
    nb = nbformat.read(ROOT / "solutions" / lesson / f"{lesson}.ipynb", as_version=4)
    header = [c for c in nb.cells if HEADER_TAG in c.metadata.get("tags", [])]
    expected = header_cells(lesson)
    assert [(c.cell_type, c.source) for c in header] == [(c["cell_type"], c["source"]) for c in expected], (
        f"{lesson}: header cells are stale; run `mi-course release {lesson}`"
    )
    assert nb.cells[: len(header)] == header, "header cells must come first"


@pytest.mark.parametrize("lesson", LESSONS)
def test_released_notebook_is_generated_from_solution(lesson, tmp_path):
    fresh = generate(lesson, release_dir=tmp_path, update_header=False)
    committed = ROOT / "lessons" / lesson / f"{lesson}.ipynb"
    assert committed.is_file(), f"lessons/{lesson} is missing: run `mi-course release {lesson}`"
    assert _comparable(committed) == _comparable(fresh), (
        f"lessons/{lesson} differs from what solutions/ produce: run `mi-course release {lesson}` "
        "(never edit lessons/ by hand)"
    )


def _plans(lesson: str) -> dict[str, dict[str, str]]:
    """Submissions graded per lesson besides the release, as ``name -> {test grade_id: how it is
    answered}``: odd exercises wrong and the even ones right, and the reverse (wrong answers raise
    and return wrong values in turn)."""
    tests = list(autograded_cells(lesson))
    odd, even = tests[0::2], tests[1::2]
    return {
        "odd_wrong": {t: ("raise", "value")[i % 2] for i, t in enumerate(odd)},
        "even_wrong": {t: ("value", "raise")[i % 2] for i, t in enumerate(even)},
    }


def test_every_answer_cell_has_a_by_reference_answer():
    missing = {lesson: sorted(set(answer_ids(lesson)) - set(answers(lesson)[0])) for lesson in LESSONS}
    assert not any(missing.values()), f"tests/answers/<lesson>.py lacks BY_REFERENCE answers for: {missing}"


@pytest.mark.parametrize("lesson", LESSONS)
def test_each_exercise_is_graded_on_its_own(lesson, tmp_path):
    """Every exercise's solution earns full marks and the released notebook zero; an exercise
    answered wrongly (raising, or returning a wrong value) earns zero and costs no other exercise:
    with the odd exercises wrong the even ones earn full marks (the solution's), and the reverse.
    Answered by calling the course's own reference, every exercise's test fails on the check of
    the student's own work (each test cell run again on that answer, in the release's kernel
    after the test itself). No cell the lesson runs for its prose (its claims are asserted there)
    fails, except those that run a wrong answer. Three submissions, graded in one batch with two
    workers; the executed setup cell shows no widget."""
    exercises = autograded_cells(lesson)
    assert exercises, f"{lesson} has no autograded test cells"
    plans = _plans(lesson)
    notebooks = {"released": with_reference_retests(lesson)}
    notebooks |= {student: wrong_notebook(lesson, plan) for student, plan in plans.items()}
    for student, nb in notebooks.items():
        (tmp_path / student).mkdir()
        nbformat.write(nb, tmp_path / student / f"{lesson}.ipynb")
    work = tmp_path / ".work"  # a dot: not a student folder
    # no CSV, so no feedback pages: they cost time and are tested on the mini lesson
    results = {r.student: r for r in autograde(lesson, tmp_path, work_dir=work, jobs=2)}

    expected = {"released": {k: 0.0 for k in exercises}}
    expected |= {student: {k: 0.0 if k in plan else points for k, points in exercises.items()}
                 for student, plan in plans.items()}
    assert all(expected["odd_wrong"][k] or expected["even_wrong"][k] for k in exercises)  # each right once
    wrong = {}
    for student, want in expected.items():
        result = results[student]
        assert result.status == "graded", (student, result.status)
        got = {k: result.scores.get(k) for k in exercises}
        diff = {k: (got[k], want[k], plans.get(student, {}).get(k, "solution")) for k in exercises if got[k] != want[k]}
        if diff:
            wrong[student] = diff
    assert not wrong, f"{lesson}: exercises scored (got, expected, how answered) where they should not: {wrong}"

    graded = {student: nbformat.read(work / "autograded" / student / lesson / f"{lesson}.ipynb", as_version=4)
              for student in notebooks}
    retests = {c.metadata[SUITE][len(RETEST):]: errors(c) for c in graded["released"].cells
               if c.metadata.get(SUITE, "").startswith(RETEST)}
    assert set(retests) == set(exercises), f"{lesson}: retests missing from the graded release: {set(exercises) - set(retests)}"
    escaped = {k: e or "passed" for k, e in retests.items() if not any(m in line for m in OWN_WORK_FAILURES for line in e)}
    assert not escaped, f"{lesson}: answered by the course's own reference, these tests did not fail on own work: {escaped}"
    answered_wrong = {student: set(wrong_answer_ids(lesson, plan)) for student, plan in plans.items()}
    failing = {student: [(i, errors(c)) for i, c in enumerate(nb.cells) if c.cell_type == "code" and errors(c)
                         and not is_test_cell(c) and c.metadata.get(SUITE) != AFTER_WRONG
                         and c.metadata.get("nbgrader", {}).get("grade_id") not in answered_wrong[student]]
               for student, nb in graded.items() if student in plans}
    assert not any(failing.values()), f"{lesson}: cells failed that should not (cell index, errors): {failing}"
    _assert_setup_cell_has_no_widget(work / "autograded" / "released" / lesson / f"{lesson}.ipynb")


WIDGET = "application/vnd.jupyter.widget-view+json"


def _assert_setup_cell_has_no_widget(executed):
    """The setup cell, as a kernel ran it (here: the grader's, an ipykernel like Jupyter's), shows no
    widget: a saved notebook keeps a widget's reference but not its state, so reopening it reads
    "Error displaying widget: model not found" (transformers' tqdm bar from ``load_model`` did)."""
    nb = nbformat.read(executed, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code" and HEADER_TAG not in c.metadata.get("tags", [])]
    assert any(c.get("outputs") for c in code), f"{executed}: no outputs at all, so nothing was checked"
    widgets = [o.data.get("text/plain", "")[:80] for o in code[0].outputs if WIDGET in o.get("data", {})]
    assert not widgets, f"{executed.name}: the setup cell shows widgets, blank once the notebook is reopened: {widgets}"


@pytest.mark.parametrize("lesson", LESSONS)
def test_no_reference_implementation_in_a_visible_cell(lesson):
    """A released test cell checks, it does not implement: no function, lambda or class in its
    visible code (a reference there would be a one-line answer), except the fallbacks given to
    ``checks.exercise`` (which call the course's references); the hidden block is stripped."""
    import ast

    nb = nbformat.read(ROOT / "lessons" / lesson / f"{lesson}.ipynb", as_version=4)
    found = []
    for cell in nb.cells:
        if cell.cell_type != "code" or not cell.metadata.get("nbgrader", {}).get("grade"):
            continue
        assert "BEGIN HIDDEN TESTS" not in cell.source, f"{lesson}: a released cell shows its hidden tests"
        tree = ast.parse(cell.source)
        fallbacks = {id(n) for node in ast.walk(tree) if isinstance(node, ast.Call)
                     and getattr(node.func, "id", getattr(node.func, "attr", None)) == "exercise"
                     for k in node.keywords for n in ast.walk(k.value)}
        for node in ast.walk(tree):
            if id(node) in fallbacks:     # checks.exercise(globals(), name=lambda: <course reference>)
                continue
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef)):
                found.append((cell.metadata.nbgrader["grade_id"], getattr(node, "name", "lambda"), node.lineno))
    assert not found, f"{lesson}: visible test cells define code a student could call as the answer: {found}"


@pytest.mark.parametrize("lesson", LESSONS)
def test_no_traced_block_in_a_test_cell(lesson):
    """The grader runs a test cell as code without a source file; nnsight cannot read a traced
    ``with`` block from it (the exercise would score 0 for everyone): references come from course
    functions or torch hooks."""
    import re

    nb = nbformat.read(ROOT / "solutions" / lesson / f"{lesson}.ipynb", as_version=4)
    traced = [cell.metadata.nbgrader["grade_id"] for cell in nb.cells
              if cell.cell_type == "code" and cell.metadata.get("nbgrader", {}).get("grade")
              and re.search(r"^\s*with\b[^\n]*\.(trace|session|generate|backward)\(", cell.source, re.M)]
    assert not traced, f"{lesson}: test cells with a traced `with` block: {traced}"


@pytest.mark.parametrize("lesson", LESSONS)
def test_every_written_question_is_stated_above_its_answer(lesson):
    """A graded written (manual) cell holds the reference answer, which the release replaces with
    "YOUR ANSWER HERE": its question, and what a full answer contains, live in the markdown cell
    above it, under a heading that says it is written and graded by hand, with the length expected
    ("in 3-6 sentences") and the question itself (a "?", a which/what/how ... list, or a task such
    as "describe ...")."""
    import re

    nb = nbformat.read(ROOT / "solutions" / lesson / f"{lesson}.ipynb", as_version=4)
    missing = []
    for i, cell in enumerate(nb.cells):
        grading = cell.metadata.get("nbgrader", {})
        if not (cell.cell_type == "markdown" and grading.get("grade") and grading.get("solution")):
            continue
        above = nb.cells[i - 1] if i else None
        if above is None or above.cell_type != "markdown" or above.metadata.get("nbgrader", {}).get("solution"):
            missing.append(f"{grading['grade_id']}: no markdown cell above it")
            continue
        section = re.split(r"^#+ ", above.source, flags=re.M)[-1]    # from the last heading on
        heading = section.split("\n", 1)[0].lower()
        problems = [what for what, ok in [
            ("a heading", re.search(r"^#+ ", above.source, re.M)),
            ("'written' or 'question' in the heading", re.search(r"written|question|graded by hand", heading)),
            ("the expected length ('in N sentences')", re.search(r"\bsentences\b", section)),
            ("a question ('?', which/what/how/why ...) or a task (describe, explain ...)",
             re.search(r"\?|\b(which|what|how|why|where|when|describe|explain|report|discuss)\b", section, re.I)),
        ] if not ok]
        if problems:
            missing.append(f"{grading['grade_id']}: the markdown above lacks {', '.join(problems)}")
    assert not missing, f"{lesson}: written questions not stated above their answer cells: {missing}"
