"""`mi-course report`: what a class got wrong, from a graded work folder (the mini lesson)."""

import re

import nbformat
import pytest

from mi_course.grading.autograde import autograde
from mi_course.grading.report import class_report, one_line, render_html, render_text, write_report

from minicourse import LESSON, mini_course


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    """Five students: two right, one whose ex1 raises a hostile message, one with ex2 wrong, one blank."""
    with mini_course(tmp_path_factory.mktemp("course")) as course:
        subs, work = course / "subs", course / "work"
        solution = nbformat.read(course / "solutions" / LESSON / f"{LESSON}.ipynb", 4)
        released = nbformat.read(course / "lessons" / LESSON / f"{LESSON}.ipynb", 4)

        def answer(nb, grade_id, source):
            nb = nbformat.from_dict(nbformat.from_dict(nb))
            next(c for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade_id") == grade_id).source = source
            return nb

        students = {
            "alice": solution, "bob": solution,
            "carol": answer(solution, "ex1_double",
                            'def double(x):\n    raise ValueError("bad\\x1b[31m <script>alert(1)</script>\\nfake line")'),
            "dave": answer(solution, "ex2_answer", "answer = 41"),
            "erin": released,
        }
        for student, nb in students.items():
            (subs / student).mkdir(parents=True)
            nbformat.write(nb, subs / student / f"{LESSON}.ipynb")
        autograde(LESSON, subs, work_dir=work, jobs=2)
        yield work


def test_counts_per_exercise_and_student(graded):
    report = class_report(graded, LESSON)
    by_name = {e.name: e for e in report.exercises}
    ex1, ex2, written = by_name["ex1_double_test"], by_name["ex2_answer_test"], by_name["q3_written"]
    assert (ex1.full, ex1.partial, ex1.zero) == (3, 0, 2)      # carol and erin
    assert (ex2.full, ex2.zero) == (3, 2)                      # dave and erin
    assert written.manual and written.pending == 4 and written.zero == 1   # erin's blank answer is a 0
    assert ex1.mean == pytest.approx(3 / 5)
    students = {s.student: s for s in report.students}
    assert students["alice"].total == 3 and students["alice"].pending_points == 1
    assert "needs manual grading" in students["alice"].status
    assert students["erin"].total == 0 and students["erin"].pending_points == 0
    failures = {f.message: f for f in ex1.failures}
    assert any(m.startswith("ValueError: bad") and f.example == "carol" for m, f in failures.items()), failures


def test_text_and_html_escape_what_students_wrote(graded, tmp_path):
    report = class_report(graded, LESSON)
    text = render_text(report)
    assert "\x1b" not in text and "fake line" not in text          # one line per failure, escapes shown
    assert "\\x1b[31m" in text
    page = render_html(report)
    assert "<script>alert(1)" not in page and "&lt;script&gt;alert(1)" in page
    assert not re.search(r"<script[^>]+src=", page) and "Plotly" in page   # plotly.js embedded: offline
    table, path = write_report(graded, LESSON, tmp_path / "report.html")
    assert table == text and "Students per outcome" in path.read_text()


def test_one_line():
    assert one_line("a\nb\tc\x1b") == "a\\nb\\tc\\x1b"
    assert len(one_line("x" * 500, 20)) == 20


def test_cli_report(graded, tmp_path, capsys):
    from mi_course.cli import main

    assert main(["report", LESSON, "--work", str(graded), "--html", str(tmp_path / "r.html")]) == 0
    out = capsys.readouterr().out
    assert "ex1_double_test" in out and "carol" in out and (tmp_path / "r.html").is_file()
    assert main(["report", LESSON, "--work", str(tmp_path / "nothing")]) == 2
