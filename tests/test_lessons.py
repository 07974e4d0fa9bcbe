"""Every lesson, with no per-lesson code: the released notebook is what nbgrader makes
of the solution, the solution earns full marks on every autograded cell, and the
untouched released notebook earns zero on every one."""

import json
import shutil

import nbformat
import pytest

from mi_course.course import HEADER_TAG, header_cells, lesson_names
from mi_course.grading.autograde import autograde, autograded_cells
from mi_course.grading.release import generate

from conftest import ROOT

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


@pytest.mark.parametrize("lesson", LESSONS)
def test_solution_earns_full_marks_and_released_notebook_zero(lesson, tmp_path):
    exercises = autograded_cells(lesson)
    assert exercises, f"{lesson} has no autograded test cells"
    for student, folder in (("solution", "solutions"), ("released", "lessons")):
        (tmp_path / student).mkdir()
        shutil.copy(ROOT / folder / lesson / f"{lesson}.ipynb", tmp_path / student / f"{lesson}.ipynb")
    results = {r.student: r for r in autograde(lesson, tmp_path, tmp_path / "grades.csv")}

    solution, released = results["solution"], results["released"]
    assert solution.status == "graded", solution.status
    short = {k: (solution.scores[k], points) for k, points in exercises.items() if solution.scores[k] != points}
    assert not short, f"{lesson}: the reference solution loses marks on (score, points): {short}"
    assert released.status == "graded", released.status
    earned = {k: v for k, v in released.scores.items() if v != 0}
    assert not earned, f"{lesson}: the untouched student notebook earns marks (a check that cannot fail): {earned}"
    assert (tmp_path / "grades.csv").read_text().count("\n") == 3
