"""A model-free lesson built like lesson 1, in a temporary course: the grader's and the
exchange's tests run on it in seconds (tests/test_lessons.py grades every real lesson)."""

import contextlib
import os
import shutil
import textwrap

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from conftest import ROOT
from mi_course.grading.release import generate

LESSON = "01_mini"


def _meta(grade_id, *, solution=False, grade=False, points=0):
    meta = {"grade": grade, "grade_id": grade_id, "locked": not solution, "schema_version": 3,
            "solution": solution}
    if grade:
        meta["points"] = points
    return {"nbgrader": meta}


def lesson_notebook() -> nbformat.NotebookNode:
    """Lesson-1-like source notebook: two autograded exercises (1 and 2 points), one written question."""
    lesson1 = nbformat.read(ROOT / "solutions" / "01_tokens_and_logits" / "01_tokens_and_logits.ipynb", 4)
    header = [c for c in lesson1.cells if "mi-course-header" in c.metadata.get("tags", [])]
    code = lambda src, **m: new_code_cell(textwrap.dedent(src).strip(), metadata=_meta(**m) if m else {})  # noqa: E731
    cells = header + [
        new_markdown_cell("# Mini lesson\nA model-free lesson for the grader's tests."),
        code("SECRET_FREE = 1"),
        new_markdown_cell("### Exercise 1 — double"),
        code("""
            def double(x):
                ### BEGIN SOLUTION
                return 2 * x
                ### END SOLUTION
            """, grade_id="ex1_double", solution=True),
        code("""
            _v = double(3)
            assert type(_v) is int, f"double(3) must be an int, got {type(_v).__name__}"
            assert _v == 6, f"double(3) should be 6, got {_v}"
            ### BEGIN HIDDEN TESTS
            for _x in range(-5, 6):
                assert type(double(_x)) is int and double(_x) == 2 * _x
            ### END HIDDEN TESTS
            """, grade_id="ex1_double_test", grade=True, points=1),
        new_markdown_cell("### Exercise 2 — the answer"),
        code("""
            ### BEGIN SOLUTION
            answer = 42
            ### END SOLUTION
            """, grade_id="ex2_answer", solution=True),
        code("""
            assert type(answer) is int, f"answer must be an int, got {type(answer).__name__}"
            ### BEGIN HIDDEN TESTS
            assert int(answer) == 42
            ### END HIDDEN TESTS
            """, grade_id="ex2_answer_test", grade=True, points=2),
        new_markdown_cell("### Question 3 (written)"),
        new_markdown_cell("Because.", metadata=_meta("q3_written", solution=True, grade=True, points=1)),
    ]
    nb = new_notebook(cells=cells, metadata={"kernelspec": lesson1.metadata.kernelspec})
    for i, cell in enumerate(nb.cells):
        cell.id = cell.get("id") or f"cell-{i}"
    return nb


@contextlib.contextmanager
def mini_course(root):
    """A course at ``root`` with the mini lesson and its released notebook; MI_COURSE_ROOT points at it."""
    shutil.copytree(ROOT / "autograder", root / "autograder")
    (root / "solutions" / LESSON).mkdir(parents=True)
    nbformat.write(lesson_notebook(), root / "solutions" / LESSON / f"{LESSON}.ipynb")
    old = os.environ["MI_COURSE_ROOT"]
    os.environ["MI_COURSE_ROOT"] = str(root)
    try:
        generate(LESSON, release_dir=root / "lessons", update_header=False)
        yield root
    finally:
        os.environ["MI_COURSE_ROOT"] = old
